// A client for QEMU's gdbstub: the GDB remote serial protocol (RSP) over TCP, without gdb.
// Packets are `$data#cc` (cc = sum of data bytes mod 256, two hex digits), acknowledged with `+`
// (QEMU 7.2 offers no QStartNoAckMode, so acks stay on); replies may be run-length encoded
// (`X*n`: n - 29 more copies of X) and binary replies escape with `}` (next byte xor 0x20).
// A raw 0x03 byte stops the VM; the stop reply is `T02thread:...;`. Measured quirks of QEMU 7.2
// (reference/real-kernel.md §5): connecting pauses the VM and may send an unsolicited T02; one `m`
// returns at most 2048 bytes (PacketSize=0x1000 hex digits); the register layout comes from
// target.xml, whose i386-64bit.xml keeps ss_base/ds_base/es_base inside an XML comment.
import { connect, type Socket } from 'node:net';

export function checksum(data: string): number {
  let s = 0;
  for (let i = 0; i < data.length; i++) s = (s + data.charCodeAt(i)) & 0xff;
  return s;
}

export function encodePacket(data: string): string {
  return `$${data}#${checksum(data).toString(16).padStart(2, '0')}`;
}

/** Undoes the `}` escapes and the `*` run-length encoding of a packet body. */
export function decodeBody(raw: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '}' && i + 1 < raw.length) {
      out += String.fromCharCode(raw.charCodeAt(++i) ^ 0x20);
    } else if (c === '*' && i + 1 < raw.length && out.length > 0) {
      const n = raw.charCodeAt(++i) - 29;
      out += out[out.length - 1]!.repeat(Math.max(0, n));
    } else out += c;
  }
  return out;
}

export interface ParsedPacket {
  body: string;
  ok: boolean;
}

/**
 * Splits a byte stream into packets. Returns the packets found and the unconsumed rest. Acks
 * (`+`, `-`) and noise between packets are skipped; a packet whose checksum fails has ok=false.
 */
export function splitPackets(buf: string): { packets: ParsedPacket[]; rest: string } {
  const packets: ParsedPacket[] = [];
  let i = 0;
  for (;;) {
    const start = buf.indexOf('$', i);
    if (start < 0) return { packets, rest: '' };
    const hash = buf.indexOf('#', start + 1);
    if (hash < 0 || hash + 2 >= buf.length) return { packets, rest: buf.slice(start) };
    const raw = buf.slice(start + 1, hash);
    const cc = parseInt(buf.slice(hash + 1, hash + 3), 16);
    packets.push({ body: decodeBody(raw), ok: cc === checksum(raw) });
    i = hash + 3;
  }
}

export interface RegDesc {
  name: string;
  bits: number;
  regnum: number;
}

/** The registers of a target description, in `g` packet order (comments stripped first). */
export function parseTargetXml(docs: string[]): RegDesc[] {
  const regs: RegDesc[] = [];
  let next = 0;
  for (const doc of docs) {
    const clean = doc.replace(/<!--[\s\S]*?-->/g, '');
    for (const m of clean.matchAll(/<reg\b([^>]*)\/?>/g)) {
      const attrs = new Map<string, string>();
      for (const a of m[1]!.matchAll(/([\w:-]+)\s*=\s*"([^"]*)"/g)) attrs.set(a[1]!, a[2]!);
      const name = attrs.get('name');
      const bits = Number(attrs.get('bitsize'));
      if (!name || !Number.isInteger(bits)) continue;
      const rn = attrs.has('regnum') ? Number(attrs.get('regnum')) : next;
      regs.push({ name, bits, regnum: rn });
      next = rn + 1;
    }
  }
  return regs.sort((a, b) => a.regnum - b.regnum);
}

/** The xi:include targets of a target description, in order. */
export function xmlIncludes(doc: string): string[] {
  const clean = doc.replace(/<!--[\s\S]*?-->/g, '');
  return [...clean.matchAll(/<xi:include\s+href="([^"]+)"/g)].map((m) => m[1]!);
}

/** Decodes a `g` reply into named little-endian values (registers wider than 64 bits are skipped). */
export function decodeRegisters(hex: string, layout: RegDesc[]): Map<string, bigint> {
  const out = new Map<string, bigint>();
  let o = 0;
  for (const r of layout) {
    const n = (r.bits / 8) * 2;
    if (o + n > hex.length) break;
    if (r.bits <= 64) {
      const field = hex.slice(o, o + n);
      if (!field.includes('x')) {
        let v = 0n;
        for (let i = n - 2; i >= 0; i -= 2) v = (v << 8n) | BigInt(parseInt(field.slice(i, i + 2), 16));
        out.set(r.name, v);
      }
    }
    o += n;
  }
  return out;
}

export const QEMU_MAX_READ = 2048;

export class GdbStub {
  private sock!: Socket;
  private buf = '';
  private readonly queue: string[] = [];
  private waiter: ((p: string) => void) | undefined;
  private closed: Error | undefined;
  private layout: RegDesc[] = [];
  private lastSent = '';

  static async connect(host: string, port: number, timeoutMs = 10_000): Promise<GdbStub> {
    const g = new GdbStub();
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gdbstub ${host}:${port}: connect timed out`)), timeoutMs);
      g.sock = connect({ host, port }, () => {
        clearTimeout(t);
        resolve();
      });
      g.sock.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    g.sock.setNoDelay(true);
    g.sock.setEncoding('latin1');
    g.sock.on('data', (d: string) => g.onData(d));
    g.sock.on('close', () => {
      g.closed = new Error('gdbstub connection closed');
      g.waiter?.('');
    });
    g.sock.on('error', (e) => {
      g.closed = e;
    });
    return g;
  }

  private onData(d: string): void {
    if (this.buf === '' && d[0] === '-') {
      // A NAK for our last packet (outside any packet being received): send it again.
      this.sock.write(this.lastSent);
    }
    this.buf += d;
    const { packets, rest } = splitPackets(this.buf);
    this.buf = rest;
    for (const p of packets) {
      this.sock.write(p.ok ? '+' : '-');
      if (!p.ok) continue;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(p.body);
      } else this.queue.push(p.body);
    }
  }

  private nextPacket(timeoutMs: number): Promise<string> {
    const q = this.queue.shift();
    if (q !== undefined) return Promise.resolve(q);
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`gdbstub: no reply within ${timeoutMs} ms (last sent ${this.lastSent.slice(0, 40)})`));
      }, timeoutMs);
      this.waiter = (p) => {
        clearTimeout(t);
        if (this.closed && p === '') reject(this.closed);
        else resolve(p);
      };
    });
  }

  private send(data: string): void {
    this.lastSent = encodePacket(data);
    this.sock.write(this.lastSent);
  }

  /** Sends a command and returns the first reply that is not a stop reply or console output. */
  async request(data: string, timeoutMs = 5000): Promise<string> {
    this.send(data);
    for (;;) {
      const p = await this.nextPacket(timeoutMs);
      if (/^[TS][0-9a-f]{2}/.test(p) || (p.startsWith('O') && p !== 'OK')) continue;
      return p;
    }
  }

  /** Drops packets that arrived unasked (the T02 QEMU may send on connect). */
  async drain(waitMs: number): Promise<void> {
    await new Promise((r) => setTimeout(r, waitMs));
    this.queue.length = 0;
  }

  /** Stops the VM: 0x03, then the stop reply. */
  async interrupt(timeoutMs = 5000): Promise<string> {
    this.sock.write('\x03');
    for (;;) {
      const p = await this.nextPacket(timeoutMs);
      if (/^[TS][0-9a-f]{2}/.test(p)) return p;
    }
  }

  /** The next stop reply (`T05` after a step or a breakpoint), skipping console output and other replies. */
  async waitStop(timeoutMs = 5000): Promise<string> {
    for (;;) {
      const p = await this.nextPacket(timeoutMs);
      if (/^[TS][0-9a-f]{2}/.test(p)) return p;
    }
  }

  /** Executes one instruction (with QEMU's default sstep flags: interrupts and timers masked). */
  async step(timeoutMs = 5000): Promise<string> {
    this.send('s');
    return this.waitStop(timeoutMs);
  }

  /** Inserts (`Z1`) or removes (`z1`) a hardware breakpoint. */
  async hwBreakpoint(addr: bigint, on: boolean): Promise<void> {
    const p = await this.request(`${on ? 'Z' : 'z'}1,${addr.toString(16)},1`);
    if (p !== 'OK') throw new Error(`${on ? 'Z1' : 'z1'} at ${addr.toString(16)}: ${p || 'not supported'}`);
  }

  /** Resumes the VM; its stop reply arrives after the next interrupt. */
  cont(): void {
    this.send('c');
  }

  async handshake(): Promise<string> {
    const features = await this.request('qSupported:xmlRegisters=i386');
    this.layout = await this.readTargetDescription();
    return features;
  }

  private async readXfer(annex: string): Promise<string> {
    let out = '';
    for (;;) {
      const p = await this.request(`qXfer:features:read:${annex}:${out.length.toString(16)},ffb`);
      if (p.startsWith('E') || p === '') throw new Error(`qXfer ${annex}: ${p || 'not supported'}`);
      out += p.slice(1);
      if (p[0] === 'l') return out;
    }
  }

  async readTargetDescription(): Promise<RegDesc[]> {
    const top = await this.readXfer('target.xml');
    const docs = [top];
    for (const inc of xmlIncludes(top)) docs.push(await this.readXfer(inc));
    return parseTargetXml(docs);
  }

  get registerLayout(): RegDesc[] {
    return this.layout;
  }

  async readRegisters(): Promise<Map<string, bigint>> {
    const p = await this.request('g');
    if (p.startsWith('E')) throw new Error(`g: ${p}`);
    return decodeRegisters(p, this.layout);
  }

  /**
   * Reads [addr, addr+len) in packets of at most 2048 bytes split at page boundaries; stops at the
   * first error (E14: unmapped, e.g. the guard page above a vmap'd stack) and returns what it got.
   */
  async readMemory(addr: bigint, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = addr + BigInt(done);
      const toPage = 4096 - Number(a & 0xfffn);
      const n = Math.min(len - done, QEMU_MAX_READ, toPage);
      const p = await this.request(`m${a.toString(16)},${n.toString(16)}`);
      if (p.startsWith('E') || p.length < 2) break;
      const got = Math.min(n, p.length >> 1);
      for (let i = 0; i < got; i++) out[done + i] = parseInt(p.slice(i * 2, i * 2 + 2), 16);
      done += got;
      if (got < n) break;
    }
    return out.subarray(0, done);
  }

  async readU64(addr: bigint): Promise<bigint | undefined> {
    const b = await this.readMemory(addr, 8);
    if (b.length < 8) return undefined;
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  }

  /** An HMP monitor command through qRcmd (e.g. "singlestep on"); returns its console output. */
  async monitor(cmd: string): Promise<string> {
    this.send('qRcmd,' + Buffer.from(cmd, 'latin1').toString('hex'));
    let text = '';
    for (;;) {
      const p = await this.nextPacket(5000);
      if (p.startsWith('O') && p !== 'OK') text += Buffer.from(p.slice(1), 'hex').toString('latin1');
      else if (/^[TS][0-9a-f]{2}/.test(p)) continue;
      else if (p === 'OK') return text;
      else throw new Error(`qRcmd ${cmd}: ${p}`);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
