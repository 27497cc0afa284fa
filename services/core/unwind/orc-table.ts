// The vmlinux ORC tables (.orc_unwind_ip / .orc_unwind), decoded into one version-independent form.
// Sources: arch/x86/include/asm/orc_types.h, arch/x86/kernel/unwind_orc.c (orc_find, orc_sort_cmp).
// Pure: the adapter reads the ELF and hands the two sections in as bytes.

/** ORC_REG_*: the base register of the previous frame's SP (CFA) or of the saved BP. Unchanged since v4.14. */
export const ORC_REG = {
  UNDEFINED: 0, PREV_SP: 1, DX: 2, DI: 3, BP: 4, SP: 5, R10: 6, R13: 7, BP_INDIRECT: 8, SP_INDIRECT: 9,
} as const;

/**
 * Entry types after normalisation. The two layouts encode them differently:
 * - v4.14–v6.3 ('type2'): type:2 is CALL 0 / REGS 1 / REGS_PARTIAL (was REGS_IRET) 2, plus an end:1 bit;
 *   sp_reg == UNDEFINED means end of stack when end is set, else an undefined (weak) entry; the
 *   signal flag is implied by the type (REGS and REGS_PARTIAL are signal frames).
 * - v6.4+ ('type3'): type:3 is UNDEFINED 0 / END_OF_STACK 1 / CALL 2 / REGS 3 / REGS_PARTIAL 4, signal:1.
 */
export const ORC_TYPE = { UNDEFINED: 0, END_OF_STACK: 1, CALL: 2, REGS: 3, REGS_PARTIAL: 4, BAD: 5 } as const;
export type OrcTypeCode = (typeof ORC_TYPE)[keyof typeof ORC_TYPE];
export const ORC_TYPE_NAME = ['undefined', 'end_of_stack', 'call', 'regs', 'regs_partial', 'bad'] as const;

/** struct orc_entry layouts by kernel version (both are 6 packed bytes, little-endian bitfields). */
export const ORC_LAYOUTS = ['type2', 'type3'] as const;
export type OrcLayout = (typeof ORC_LAYOUTS)[number];
export const ORC_ENTRY_SIZE = 6;

/** The layout a kernel release uses: the type:3/signal:1 form arrived in v6.4. */
export function orcLayoutForRelease(release: string): OrcLayout | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return undefined;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major < 4 || (major === 4 && minor < 14)) return undefined; // no ORC before v4.14
  return major > 6 || (major === 6 && minor >= 4) ? 'type3' : 'type2';
}

/** The accepted values of an option that names a layout, for usage and error messages. */
export const ORC_LAYOUT_CHOICES = 'type2 (v4.14–v6.3), type3 (v6.4+), or a kernel release such as 6.1 or 6.4';

/**
 * A layout named by the user: one of ORC_LAYOUTS, or a kernel release (v4.14 or later) whose
 * layout orcLayoutForRelease gives. Undefined for anything else.
 */
export function orcLayoutFromName(name: string): OrcLayout | undefined {
  if ((ORC_LAYOUTS as readonly string[]).includes(name)) return name as OrcLayout;
  return /^\d+\.\d+(?:[.-]\S*)?$/.test(name) ? orcLayoutForRelease(name) : undefined;
}

/**
 * Which layout raw .orc_unwind bytes look like, for a hint when nothing names it. Ordinary code
 * is almost all CALL rows: flags byte type bits 0 in type2 (type:2 CALL = 0), 2 in type3 (CALL = 2).
 * Rows with sp_reg UNDEFINED (terminators, end hints) are left out. Undefined when neither wins clearly.
 */
export function guessOrcLayout(unwindSection: Uint8Array): OrcLayout | undefined {
  let zero = 0;
  let two = 0;
  let rows = 0;
  for (let at = 0; at + ORC_ENTRY_SIZE <= unwindSection.length; at += ORC_ENTRY_SIZE) {
    if ((unwindSection[at + 4]! & 0xf) === ORC_REG.UNDEFINED) continue;
    rows++;
    const t = unwindSection[at + 5]! & 7;
    if (t === 0) zero++;
    else if (t === 2) two++;
  }
  if (rows === 0) return undefined;
  if (zero >= 0.8 * rows) return 'type2';
  if (two >= 0.8 * rows) return 'type3';
  return undefined;
}

export interface OrcEntry {
  spOffset: number;
  bpOffset: number;
  spReg: number;
  bpReg: number;
  type: OrcTypeCode;
  signal: boolean;
}

/** What the adapter hands in: the raw sections and where .orc_unwind_ip is loaded. */
export interface OrcSections {
  layout: OrcLayout;
  /** Load address of .orc_unwind_ip (its s32 entries are relative to their own address). */
  ipSectionAddr: bigint;
  ipSection: Uint8Array;
  unwindSection: Uint8Array;
}

/** Decodes one 6-byte entry (exported for tests and for building tables by hand). */
export function decodeOrcEntry(b: Uint8Array, at: number, layout: OrcLayout): OrcEntry {
  const dv = new DataView(b.buffer, b.byteOffset + at, ORC_ENTRY_SIZE);
  const spOffset = dv.getInt16(0, true);
  const bpOffset = dv.getInt16(2, true);
  const regs = dv.getUint8(4);
  const flags = dv.getUint8(5);
  const spReg = regs & 0xf;
  const bpReg = regs >> 4;
  if (layout === 'type3') {
    const t = flags & 7;
    return { spOffset, bpOffset, spReg, bpReg, type: (t <= 4 ? t : ORC_TYPE.BAD) as OrcTypeCode, signal: (flags & 8) !== 0 };
  }
  const t = flags & 3;
  const end = (flags & 4) !== 0;
  let type: OrcTypeCode;
  if (spReg === ORC_REG.UNDEFINED) type = end ? ORC_TYPE.END_OF_STACK : ORC_TYPE.UNDEFINED;
  else type = t === 0 ? ORC_TYPE.CALL : t === 1 ? ORC_TYPE.REGS : t === 2 ? ORC_TYPE.REGS_PARTIAL : ORC_TYPE.BAD;
  return { spOffset, bpOffset, spReg, bpReg, type, signal: type === ORC_TYPE.REGS || type === ORC_TYPE.REGS_PARTIAL };
}

/** Encodes an entry (the inverse of decodeOrcEntry), for hand-built tables in tests and docs. */
export function encodeOrcEntry(e: { spOffset: number; bpOffset: number; spReg: number; bpReg: number; type: OrcTypeCode; signal?: boolean }, layout: OrcLayout): Uint8Array {
  const b = new Uint8Array(ORC_ENTRY_SIZE);
  const dv = new DataView(b.buffer);
  dv.setInt16(0, e.spOffset, true);
  dv.setInt16(2, e.bpOffset, true);
  b[4] = (e.spReg & 0xf) | ((e.bpReg & 0xf) << 4);
  if (layout === 'type3') {
    b[5] = (e.type & 7) | (e.signal ? 8 : 0);
  } else {
    const t = e.type === ORC_TYPE.REGS ? 1 : e.type === ORC_TYPE.REGS_PARTIAL ? 2 : 0;
    b[5] = t | (e.type === ORC_TYPE.END_OF_STACK ? 4 : 0);
  }
  return b;
}

/**
 * The sorted table. Addresses are kept in the signed form (exact for kernel text, see u64.ts);
 * entries as parallel typed arrays so that 400k of them cost a few MB and no objects.
 */
export class OrcTable {
  readonly layout: OrcLayout;
  readonly ips: Float64Array;
  readonly spOffset: Int16Array;
  readonly bpOffset: Int16Array;
  readonly spReg: Uint8Array;
  readonly bpReg: Uint8Array;
  readonly type: Uint8Array;
  readonly signal: Uint8Array;

  private constructor(layout: OrcLayout, n: number) {
    this.layout = layout;
    this.ips = new Float64Array(n);
    this.spOffset = new Int16Array(n);
    this.bpOffset = new Int16Array(n);
    this.spReg = new Uint8Array(n);
    this.bpReg = new Uint8Array(n);
    this.type = new Uint8Array(n);
    this.signal = new Uint8Array(n);
  }

  get length(): number {
    return this.ips.length;
  }

  /**
   * Builds the table from the two sections. Throws RangeError when they do not describe the same
   * number of entries (a corrupt table: the kernel then disables its unwinder).
   */
  static fromSections(s: OrcSections): OrcTable {
    if (s.ipSection.length % 4 !== 0) throw new RangeError(`.orc_unwind_ip size ${s.ipSection.length} is not a multiple of 4`);
    const n = s.ipSection.length / 4;
    if (s.unwindSection.length !== n * ORC_ENTRY_SIZE) {
      throw new RangeError(`.orc_unwind has ${s.unwindSection.length} bytes, expected ${n} entries of ${ORC_ENTRY_SIZE} (= ${n * ORC_ENTRY_SIZE}) to match .orc_unwind_ip`);
    }
    const base = Number(BigInt.asIntN(64, s.ipSectionAddr));
    const ipv = new DataView(s.ipSection.buffer, s.ipSection.byteOffset, s.ipSection.byteLength);
    const raw = new Float64Array(n);
    // orc_ip(p) = (unsigned long)p + *p: each s32 is relative to its own slot.
    for (let i = 0; i < n; i++) raw[i] = base + i * 4 + ipv.getInt32(i * 4, true);
    const decoded: OrcEntry[] = new Array(n);
    for (let i = 0; i < n; i++) decoded[i] = decodeOrcEntry(s.unwindSection, i * ORC_ENTRY_SIZE, s.layout);
    return OrcTable.fromEntries(s.layout, raw, decoded);
  }

  /** Builds a table from (ip, entry) pairs in any order; sorted like the kernel's orc_sort_cmp. */
  static fromEntries(layout: OrcLayout, ips: ArrayLike<number>, entries: readonly OrcEntry[]): OrcTable {
    const n = ips.length;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    let sorted = true;
    for (let i = 1; i < n && sorted; i++) {
      if (ips[i]! < ips[i - 1]! || (ips[i] === ips[i - 1] && isWeak(entries[i]!) && !isWeak(entries[i - 1]!))) sorted = false;
    }
    // Tables are sorted at build time on recent kernels; sort only when they are not. At equal
    // addresses the "weak" section terminators (undefined entries) go first so that the
    // rightmost match, which orc_find returns, is a real entry.
    if (!sorted) {
      order.sort((a, b) => ips[a]! - ips[b]! || (isWeak(entries[b]!) ? 1 : 0) - (isWeak(entries[a]!) ? 1 : 0) || a - b);
    }
    const t = new OrcTable(layout, n);
    for (let k = 0; k < n; k++) {
      const i = order[k]!;
      const e = entries[i]!;
      t.ips[k] = ips[i]!;
      t.spOffset[k] = e.spOffset;
      t.bpOffset[k] = e.bpOffset;
      t.spReg[k] = e.spReg;
      t.bpReg[k] = e.bpReg;
      t.type[k] = e.type;
      t.signal[k] = e.signal ? 1 : 0;
    }
    return t;
  }

  /**
   * __orc_find(): the rightmost entry whose ip is <= ipS, or -1 when ipS lies before the first
   * entry. The caller decides whether ipS is in the range the table covers (core text).
   */
  find(ipS: number): number {
    const ips = this.ips;
    let lo = 0;
    let hi = ips.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (ips[mid]! <= ipS) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  entry(i: number): OrcEntry {
    return {
      spOffset: this.spOffset[i]!, bpOffset: this.bpOffset[i]!, spReg: this.spReg[i]!, bpReg: this.bpReg[i]!,
      type: this.type[i]! as OrcTypeCode, signal: this.signal[i] === 1,
    };
  }
}

function isWeak(e: OrcEntry): boolean {
  return e.type === ORC_TYPE.UNDEFINED;
}

const REG_BY_NAME: Record<string, number> = {
  undefined: ORC_REG.UNDEFINED, prevsp: ORC_REG.PREV_SP, dx: ORC_REG.DX, di: ORC_REG.DI, bp: ORC_REG.BP, sp: ORC_REG.SP,
  r10: ORC_REG.R10, r13: ORC_REG.R13, bp_indirect: ORC_REG.BP_INDIRECT, sp_indirect: ORC_REG.SP_INDIRECT,
};
const TYPE_BY_NAME: Record<string, OrcTypeCode> = {
  undefined: ORC_TYPE.UNDEFINED, end: ORC_TYPE.END_OF_STACK, call: ORC_TYPE.CALL, regs: ORC_TYPE.REGS, regs_partial: ORC_TYPE.REGS_PARTIAL,
};

/**
 * A small text form of an ORC table, one row per line, for documentation and hand-written tests
 * (objtool's `orc dump` prints the same facts in its own words):
 *   <ip hex> <call|regs|regs_partial|end|undefined> [sp=<reg>(+|-)<offset>] [bp=<reg>(+|-)<offset>]
 * with reg one of sp bp prevsp dx di r10 r13 sp_indirect bp_indirect; '#' starts a comment. A
 * missing sp= or bp= leaves that register undefined (bp undefined: "bp unchanged").
 */
export function parseOrcText(text: string, layout: OrcLayout = 'type2'): OrcTable {
  const ips: number[] = [];
  const entries: OrcEntry[] = [];
  text.split('\n').forEach((raw, n) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [ip, type, ...rest] = line.split(/\s+/);
    const t = TYPE_BY_NAME[type ?? ''];
    if (!/^[0-9a-f]{1,16}$/i.test(ip ?? '') || t === undefined) throw new SyntaxError(`orc line ${n + 1}: '${raw}' is not "<ip> <type> [sp=..] [bp=..]"`);
    const e: OrcEntry = { spOffset: 0, bpOffset: 0, spReg: ORC_REG.UNDEFINED, bpReg: ORC_REG.UNDEFINED, type: t, signal: t === ORC_TYPE.REGS || t === ORC_TYPE.REGS_PARTIAL };
    for (const r of rest) {
      const m = /^(sp|bp)=([a-z0-9_]+)(?:([+-])(0x[0-9a-f]+|\d+))?$/i.exec(r);
      const reg = m ? REG_BY_NAME[m[2]!] : undefined;
      if (!m || reg === undefined) throw new SyntaxError(`orc line ${n + 1}: bad register rule '${r}'`);
      const off = m[4] ? Number(m[4]) * (m[3] === '-' ? -1 : 1) : 0;
      if (m[1] === 'sp') {
        e.spReg = reg;
        e.spOffset = off;
      } else {
        e.bpReg = reg;
        e.bpOffset = off;
      }
    }
    ips.push(Number(BigInt.asIntN(64, BigInt('0x' + ip))));
    entries.push(e);
  });
  return OrcTable.fromEntries(layout, ips, entries);
}

// ---------------------------------------------------------------------------------------------
// The upload form of a table (PUT /v1/kernels/{buildId}/orc): the two sections exactly as the
// vmlinux holds them, behind a 24-byte header that says how to read them. Sending the raw
// sections (10 bytes per entry; ~3.9 MB for a 385k-entry distribution kernel, ~1 MB gzip) keeps
// the sender trivial and lets the receiver rebuild the table with the same code as the vmlinux
// reader, so there is no second encoding of entries to get wrong.
//
//   0  8  magic "SSORC\x001\x00" (format version 1)
//   8  1  layout: 2 = type2 (v4.14–v6.3), 3 = type3 (v6.4+)
//   9  3  zero
//  12  4  n, the number of entries (u32 LE)
//  16  8  load address of .orc_unwind_ip (u64 LE; its s32 entries are self-relative)
//  24 4n  .orc_unwind_ip
//  .. 6n  .orc_unwind
// ---------------------------------------------------------------------------------------------

export const ORC_UPLOAD_MAGIC = Uint8Array.from([0x53, 0x53, 0x4f, 0x52, 0x43, 0x00, 0x31, 0x00]);
export const ORC_UPLOAD_HEADER = 24;

/** A malformed upload: `field` names the part of the body that is wrong. */
export class OrcFormatError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = 'OrcFormatError';
  }
}

export function encodeOrcUpload(s: OrcSections): Uint8Array {
  const n = s.ipSection.length / 4;
  const out = new Uint8Array(ORC_UPLOAD_HEADER + s.ipSection.length + s.unwindSection.length);
  const dv = new DataView(out.buffer);
  out.set(ORC_UPLOAD_MAGIC, 0);
  out[8] = s.layout === 'type3' ? 3 : 2;
  dv.setUint32(12, n, true);
  dv.setBigUint64(16, BigInt.asUintN(64, s.ipSectionAddr), true);
  out.set(s.ipSection, ORC_UPLOAD_HEADER);
  out.set(s.unwindSection, ORC_UPLOAD_HEADER + s.ipSection.length);
  return out;
}

/**
 * Reads the upload form back into sections (views into `b`, no copy). Checks everything that
 * can be checked without the kernel's symbols: magic, layout, the count against the length, and
 * that every entry's address lies in the top 2 GiB (kernel text; self-relative offsets that point
 * elsewhere mean a wrong load address). OrcTable.fromSections then builds the table.
 */
export function decodeOrcUpload(b: Uint8Array, maxEntries = 4_000_000): OrcSections {
  if (b.length < ORC_UPLOAD_HEADER) throw new OrcFormatError('header', `the body is ${b.length} bytes; an ORC upload starts with a ${ORC_UPLOAD_HEADER}-byte header`);
  for (let i = 0; i < ORC_UPLOAD_MAGIC.length; i++) {
    if (b[i] !== ORC_UPLOAD_MAGIC[i]) throw new OrcFormatError('magic', 'the body does not start with the ORC upload magic "SSORC\\0" "1\\0" (docs/api.md)');
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const lv = b[8];
  const layout: OrcLayout | undefined = lv === 2 ? 'type2' : lv === 3 ? 'type3' : undefined;
  if (!layout) throw new OrcFormatError('layout', `entry layout ${lv} is not known (2: v4.14–v6.3, 3: v6.4+)`);
  if (b[9] !== 0 || b[10] !== 0 || b[11] !== 0) throw new OrcFormatError('header', 'header bytes 9–11 must be zero');
  const n = dv.getUint32(12, true);
  if (n === 0) throw new OrcFormatError('entries', 'the table has no entries');
  if (n > maxEntries) throw new OrcFormatError('entries', `${n} entries is over the limit of ${maxEntries}`);
  const want = ORC_UPLOAD_HEADER + n * (4 + ORC_ENTRY_SIZE);
  if (b.length !== want) {
    throw new OrcFormatError('entries', `${n} entries need ${want} bytes (header + ${n} × 4 ip + ${n} × ${ORC_ENTRY_SIZE} entry), the body has ${b.length}${b.length < want ? ': truncated?' : ''}`);
  }
  const ipSectionAddr = dv.getBigUint64(16, true);
  const base = Number(BigInt.asIntN(64, ipSectionAddr));
  const ipSection = b.subarray(ORC_UPLOAD_HEADER, ORC_UPLOAD_HEADER + 4 * n);
  const unwindSection = b.subarray(ORC_UPLOAD_HEADER + 4 * n, want);
  const TOP_2G = -(2 ** 31);
  for (let i = 0; i < n; i++) {
    const ip = base + i * 4 + dv.getInt32(ORC_UPLOAD_HEADER + i * 4, true);
    if (!(ip >= TOP_2G && ip < 0)) {
      throw new OrcFormatError('ip_section_addr', `entry ${i} resolves to ${ip < 0 ? '-' : ''}0x${Math.abs(ip).toString(16)}, outside kernel text (the top 2 GiB): wrong .orc_unwind_ip load address 0x${ipSectionAddr.toString(16)}?`);
    }
  }
  return { layout, ipSectionAddr, ipSection, unwindSection };
}
