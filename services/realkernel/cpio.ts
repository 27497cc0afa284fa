// A newc ("070701") cpio archive, the format the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header per
// entry, name and data each padded to 4 bytes, ended by "TRAILER!!!". Written here because the
// machine has no cpio binary (reference/real-kernel.md: the first attempt silently made 20 bytes).

export interface CpioEntry {
  name: string;
  /** st_mode: file type bits | permissions, e.g. 0o100755 for an executable, 0o040755 for a dir. */
  mode: number;
  data?: Uint8Array;
  /** For a symlink: its target (mode 0o120777). */
  target?: string;
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

export function cpioNewc(entries: CpioEntry[], mtime = 0): Uint8Array {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  let ino = 1;
  let total = 0;
  const push = (b: Uint8Array): void => {
    parts.push(b);
    total += b.length;
  };
  const add = (name: string, mode: number, data: Uint8Array, rdev = 0): void => {
    const nameBytes = enc.encode(name + '\0');
    const header = '070701' + hex8(ino++) + hex8(mode) + hex8(0) + hex8(0) + hex8(1) + hex8(mtime) + hex8(data.length)
      + hex8(0) + hex8(0) + hex8(rdev >> 8) + hex8(rdev & 0xff) + hex8(nameBytes.length) + hex8(0);
    push(enc.encode(header));
    push(nameBytes);
    push(new Uint8Array(pad4(110 + nameBytes.length)));
    push(data);
    push(new Uint8Array(pad4(data.length)));
  };
  for (const e of entries) {
    const data = e.target !== undefined ? enc.encode(e.target) : e.data ?? new Uint8Array(0);
    add(e.name, e.mode, data);
  }
  add('TRAILER!!!', 0, new Uint8Array(0));
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Reads a newc archive back (for tests): names, modes and data. */
export function readCpioNewc(b: Uint8Array): CpioEntry[] {
  const dec = new TextDecoder();
  const out: CpioEntry[] = [];
  let o = 0;
  for (;;) {
    const h = dec.decode(b.subarray(o, o + 110));
    if (!h.startsWith('070701')) throw new Error(`bad cpio magic at ${o}`);
    const field = (i: number): number => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const namesize = field(11);
    const name = dec.decode(b.subarray(o + 110, o + 110 + namesize - 1));
    o += 110 + namesize;
    o += pad4(o);
    const data = b.slice(o, o + size);
    o += size + pad4(size);
    if (name === 'TRAILER!!!') return out;
    out.push({ name, mode, data });
  }
}
