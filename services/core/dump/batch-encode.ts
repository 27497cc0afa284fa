// The binary batch form's encoder (layout: batch-form.ts, docs/dump-format.md): parsed Samples
// (from any reader) into a batch. The text transcoder (batch-transcode.ts) writes through the same
// Out buffer and record framing, and falls back to encodeParsed for what its fast path cannot prove.
import { Buffer } from 'node:buffer';
import type { ParseResult } from './errors.ts';
import { hasFullState, type CallchainEntry, type Sample, type TruthFrame } from './sample.ts';
import type { PtRegsField } from '../stack/layout.ts';
import {
  BATCH_HEADER, BATCH_VERSION, FLAG_INDEX, HAS_A, HAS_B, KIND_INDEX, MAGIC0, MAGIC1, MAGIC2, MAGIC3, OTHER,
  RECORD_HEAD, REG_INDEX, REG_UNDEF, STACK_INDEX, T_CALLCHAIN, T_COMM, T_CPU, T_FRAME, T_HOST, T_KERNEL,
  T_PERIOD, T_PID, T_REGS, T_SOURCE, T_STACK, T_TID, T_TIME, T_TRIGGER, T_TRUTH, T_UNDEF, T_WINDOW, TOL_INDEX,
  TWO32, UNDEF_A, UNDEF_B, type BatchSampleInfo, type EncodedBatch,
} from './batch-form.ts';

// ---------------------------------------------------------------------------------------------
// Writer: a growable little-endian byte buffer

export class Out {
  buf: Uint8Array;
  dv: DataView;
  n = 0;

  constructor(cap: number) {
    this.buf = new Uint8Array(Math.max(64, cap));
    this.dv = new DataView(this.buf.buffer);
  }

  /** Room for k more bytes. */
  room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.n + k) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.n));
    this.buf = nb;
    this.dv = new DataView(nb.buffer);
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.n++] = v;
  }
  u32(v: number): void {
    this.room(4);
    this.dv.setUint32(this.n, v, true);
    this.n += 4;
  }
  f64(v: number): void {
    this.room(8);
    this.dv.setFloat64(this.n, v, true);
    this.n += 8;
  }
  /** A u64 given as halves: low word first. */
  halves(hi: number, lo: number): void {
    this.room(8);
    this.dv.setUint32(this.n, lo, true);
    this.dv.setUint32(this.n + 4, hi, true);
    this.n += 8;
  }
  u64(v: bigint, what: string): void {
    if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) throw new RangeError(`${what} ${String(v)} is not an unsigned 64-bit value`);
    this.halves(Number(v >> 32n), Number(v & 0xffffffffn));
  }
  /** t[from, to) as a string: u32 (units << 1 | wide), then 1 byte a unit, or 2 (LE) when any unit is over 0xff. */
  str(t: string, from: number, to: number): void {
    const units = to - from;
    let wide = 0;
    for (let i = from; i < to; i++) if (t.charCodeAt(i) > 0xff) { wide = 1; break; }
    this.room(4 + units * (1 + wide));
    this.dv.setUint32(this.n, units * 2 + wide, true);
    let p = this.n + 4;
    const b = this.buf;
    if (wide === 0) {
      for (let i = from; i < to; i++) b[p++] = t.charCodeAt(i);
    } else {
      for (let i = from; i < to; i++) {
        const c = t.charCodeAt(i);
        b[p++] = c & 0xff;
        b[p++] = c >>> 8;
      }
    }
    this.n = p;
  }
  /** An enum value as its index in names, or OTHER and the string. */
  named(v: string, index: ReadonlyMap<string, number>): void {
    const k = index.get(v);
    if (k !== undefined) this.u8(k);
    else {
      this.u8(OTHER);
      this.str(String(v), 0, String(v).length);
    }
  }

  /** The bytes written, as a buffer of their own. */
  take(): Uint8Array {
    // An ArrayBuffer that is not zero-filled first (every byte is written by the copy), as a plain
    // Uint8Array over all of it: the copy of a batch-sized buffer costs less than half as much.
    const n = this.n;
    const out = new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
    out.set(this.buf.subarray(0, n));
    return out;
  }
}

export function writeBatchHeader(o: Out, count: number): void {
  o.room(BATCH_HEADER);
  const b = o.buf;
  b[0] = MAGIC0; b[1] = MAGIC1; b[2] = MAGIC2; b[3] = MAGIC3;
  b[4] = BATCH_VERSION; b[5] = 0; b[6] = 0; b[7] = 0;
  o.dv.setUint32(8, count, true);
  o.n = BATCH_HEADER;
}

/** Opens a record; returns where its length goes (patched by endRecord). */
export function beginRecord(o: Out, index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= TWO32) throw new RangeError(`sample index ${index} is not a u32`);
  const at = o.n;
  o.room(RECORD_HEAD);
  o.dv.setUint32(at + 5, index, true);
  o.buf[at + 4] = BATCH_VERSION;
  o.n = at + RECORD_HEAD;
  return at;
}
export function endRecord(o: Out, at: number): void {
  o.dv.setUint32(at, o.n - at - 4, true);
}

function has(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

/** One Sample as tagged fields (encodeSamples and encodeParsed: the general, BigInt path). */
function writeSample(o: Out, s: Sample): void {
  const optStr = (tag: number, k: 'comm' | 'time' | 'host' | 'kernel'): void => {
    const v = s[k];
    if (v !== undefined) {
      o.u8(tag);
      o.str(v, 0, v.length);
    } else if (has(s, k)) o.u8(T_UNDEF), o.u8(tag);
  };
  const optNum = (tag: number, k: 'pid' | 'tid' | 'cpu'): void => {
    const v = s[k];
    if (v !== undefined) {
      o.u8(tag);
      o.f64(v);
    } else if (has(s, k)) o.u8(T_UNDEF), o.u8(tag);
  };
  o.u8(T_TRIGGER);
  o.str(s.trigger, 0, s.trigger.length);
  optStr(T_COMM, 'comm');
  optNum(T_PID, 'pid');
  optNum(T_TID, 'tid');
  optNum(T_CPU, 'cpu');
  optStr(T_TIME, 'time');
  if (s.period !== undefined) {
    o.u8(T_PERIOD);
    o.u64(s.period, 'period');
  } else if (has(s, 'period')) o.u8(T_UNDEF), o.u8(T_PERIOD);
  optStr(T_HOST, 'host');
  optStr(T_KERNEL, 'kernel');
  if (s.regs !== undefined) {
    const keys = Object.keys(s.regs);
    if (keys.length > 0x7f) throw new RangeError(`regs has ${keys.length} fields`);
    o.u8(T_REGS);
    o.u8(keys.length);
    for (const k of keys) {
      const f = REG_INDEX.get(k);
      if (f === undefined) throw new RangeError(`regs.${k} is not a pt_regs field`);
      const v = s.regs[k as PtRegsField];
      if (v === undefined) o.u8(f | REG_UNDEF);
      else {
        o.u8(f);
        o.u64(v, `regs.${k}`);
      }
    }
  } else if (has(s, 'regs')) o.u8(T_UNDEF), o.u8(T_REGS);
  for (const st of s.stacks) {
    o.u8(T_STACK);
    o.named(st.type, STACK_INDEX);
    o.u64(st.begin, 'stack.begin');
    o.u64(st.end, 'stack.end');
    for (const w of st.windows) {
      o.u8(T_WINDOW);
      o.u64(w.start, 'window.start');
      const n = w.bytes.length;
      o.u32(n);
      o.room(n);
      o.buf.set(w.bytes, o.n);
      o.n += n;
    }
  }
  if (s.callchain !== undefined) {
    o.u8(T_CALLCHAIN);
    o.u32(s.callchain.length);
    for (const e of s.callchain) writeEntry(o, e);
  } else if (has(s, 'callchain')) o.u8(T_UNDEF), o.u8(T_CALLCHAIN);
  if (s.truth !== undefined) {
    o.u8(T_TRUTH);
    for (const f of s.truth.frames) writeFrame(o, f);
  } else if (has(s, 'truth')) o.u8(T_UNDEF), o.u8(T_TRUTH);
  if (s.source !== undefined) {
    o.u8(T_SOURCE);
    o.str(s.source.file, 0, s.source.file.length);
    o.f64(s.source.line);
  } else if (has(s, 'source')) o.u8(T_UNDEF), o.u8(T_SOURCE);
}

function writeEntry(o: Out, e: CallchainEntry): void {
  o.u64(e.addr, 'callchain.addr');
  let bits = 0;
  if (e.sym !== undefined) bits |= HAS_A;
  else if (has(e, 'sym')) bits |= UNDEF_A;
  if (e.dso !== undefined) bits |= HAS_B;
  else if (has(e, 'dso')) bits |= UNDEF_B;
  o.u8(bits);
  if (e.sym !== undefined) o.str(e.sym, 0, e.sym.length);
  if (e.dso !== undefined) o.str(e.dso, 0, e.dso.length);
  o.u32(e.flags.length);
  for (const f of e.flags) o.named(f, FLAG_INDEX);
}

function writeFrame(o: Out, f: TruthFrame): void {
  o.u8(T_FRAME);
  o.u64(f.ip, 'truth.ip');
  o.named(f.kind, KIND_INDEX);
  let bits = 0;
  if (f.entry !== undefined) bits |= HAS_A;
  else if (has(f, 'entry')) bits |= UNDEF_A;
  if (f.tolerated !== undefined) bits |= HAS_B;
  else if (has(f, 'tolerated')) bits |= UNDEF_B;
  o.u8(bits);
  if (f.entry !== undefined) o.str(f.entry, 0, f.entry.length);
  if (f.tolerated !== undefined) o.named(f.tolerated, TOL_INDEX);
}

/** Binary form of parsed samples; indices[i] is samples[i]'s index in its input (counting rejected ones). */
export function encodeSamples(samples: readonly Sample[], indices: readonly number[]): Uint8Array {
  if (indices.length !== samples.length) throw new RangeError(`${samples.length} samples but ${indices.length} indices`);
  const o = new Out(BATCH_HEADER + samples.length * 1024);
  writeBatchHeader(o, samples.length);
  for (let i = 0; i < samples.length; i++) {
    const at = beginRecord(o, indices[i]!);
    writeSample(o, samples[i]!);
    endRecord(o, at);
  }
  return o.take();
}

/** Input indices of a parser's accepted samples: the ones no rejection names, in order. */
function acceptedIndices(parsed: ParseResult<Sample>): number[] {
  const rejected = new Set<number>();
  for (const r of parsed.rejected) rejected.add(r.sampleIndex);
  const out: number[] = new Array(parsed.samples.length);
  let index = 0;
  for (let i = 0; i < parsed.samples.length; i++) {
    while (rejected.has(index)) index++;
    out[i] = index++;
  }
  return out;
}

/** For JSON/NDJSON uploads and fallbacks: a ParseResult (from parseJsonDump/parseTextDump) as an EncodedBatch. */
export function encodeParsed(parsed: ParseResult<Sample>): EncodedBatch {
  const indices = acceptedIndices(parsed);
  const samples: BatchSampleInfo[] = new Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const s = parsed.samples[i]!;
    samples[i] = { index: indices[i]!, line: s.source?.line ?? 0, kernel: s.kernel, fullState: hasFullState(s) };
  }
  return { bytes: encodeSamples(parsed.samples, indices), samples, rejected: parsed.rejected, fast: false };
}
