// Hand-made kernel images for the vmlinux tests: a minimal ELF64 writer (section headers only, as
// the reader needs: ELF spec, "Section Header") and builders for the pieces a vmlinux carries — the
// "Linux version" banner, a CONFIG_IKCONFIG blob, a GNU build-id note, ORC sections, and text
// whose functions open with or without a frame.
import { gzipSync } from 'node:zlib';
import { encodeOrcEntry, ORC_ENTRY_SIZE, ORC_REG, ORC_TYPE, type OrcEntry, type OrcLayout } from '../../services/core/unwind/orc-table.ts';

export interface ElfSectionSpec {
  name: string;
  /** SHT_PROGBITS 1 unless given (SHT_NOTE 7). */
  type?: number;
  addr: bigint;
  bytes: Uint8Array;
}

const SHT_PROGBITS = 1;
const SHT_STRTAB = 3;
export const SHT_NOTE = 7;

export function writeElf(sections: readonly ElfSectionSpec[]): Uint8Array {
  const names = ['', ...sections.map((s) => s.name), '.shstrtab'];
  const nameOff: number[] = [];
  let strtab = '';
  for (const n of names) {
    nameOff.push(strtab.length);
    strtab += n + '\0';
  }
  const all = [...sections.map((s) => ({ ...s, type: s.type ?? SHT_PROGBITS })), { name: '.shstrtab', type: SHT_STRTAB, addr: 0n, bytes: new TextEncoder().encode(strtab) }];
  const offsets: number[] = [];
  let at = 64;
  for (const s of all) {
    at = (at + 7) & ~7;
    offsets.push(at);
    at += s.bytes.length;
  }
  const shoff = (at + 7) & ~7;
  const shnum = all.length + 1;
  const out = new Uint8Array(shoff + shnum * 64);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // ELF64, little-endian, version 1
  dv.setUint16(0x10, 2, true); // ET_EXEC
  dv.setUint16(0x12, 62, true); // EM_X86_64
  dv.setBigUint64(0x28, BigInt(shoff), true);
  dv.setUint16(0x34, 64, true);
  dv.setUint16(0x3a, 64, true);
  dv.setUint16(0x3c, shnum, true);
  dv.setUint16(0x3e, shnum - 1, true);
  all.forEach((s, i) => {
    out.set(s.bytes, offsets[i]!);
    const o = shoff + (i + 1) * 64;
    dv.setUint32(o, nameOff[i + 1]!, true);
    dv.setUint32(o + 4, s.type, true);
    dv.setBigUint64(o + 0x10, s.addr, true);
    dv.setBigUint64(o + 0x18, BigInt(offsets[i]!), true);
    dv.setBigUint64(o + 0x20, BigInt(s.bytes.length), true);
  });
  return out;
}

export function buildIdNote(hex: string): Uint8Array {
  const desc = Buffer.from(hex, 'hex');
  const b = new Uint8Array(16 + ((desc.length + 3) & ~3));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 4, true);
  dv.setUint32(4, desc.length, true);
  dv.setUint32(8, 3, true); // NT_GNU_BUILD_ID
  b.set([0x47, 0x4e, 0x55, 0], 12);
  b.set(desc, 16);
  return b;
}

/** kernel/configs.c's layout: "IKCFG_ST", the gzip'd .config, "IKCFG_ED". */
export function ikconfigBlob(config: string): Uint8Array {
  return Buffer.concat([Buffer.from('IKCFG_ST'), gzipSync(config), Buffer.from('IKCFG_ED')]);
}

export function orcSections(layout: OrcLayout, rows: readonly (readonly [bigint, OrcEntry])[], ipSectionAddr: bigint): { ip: Uint8Array; unwind: Uint8Array } {
  const ip = new Uint8Array(rows.length * 4);
  const unwind = new Uint8Array(rows.length * ORC_ENTRY_SIZE);
  const dv = new DataView(ip.buffer);
  rows.forEach(([a, e], i) => {
    dv.setInt32(i * 4, Number(a - (ipSectionAddr + BigInt(i * 4))), true);
    unwind.set(encodeOrcEntry(e, layout), i * ORC_ENTRY_SIZE);
  });
  return { ip, unwind };
}

export const TEXT_BASE = 0xffffffff81000000n;
export const FN_SIZE = 0x40;

function row(spReg: number, spOffset: number, bp?: number): OrcEntry {
  return { spOffset, bpOffset: bp ?? 0, spReg, bpReg: bp === undefined ? ORC_REG.UNDEFINED : ORC_REG.PREV_SP, type: ORC_TYPE.CALL, signal: false };
}

/**
 * One function's code and the ORC rows objtool derives from it (CFA rules of orc_types.h: CFA =
 * sp_reg + sp_offset; bp saved at CFA + bp_offset when bp_reg = PREV_SP).
 *  framed:   call __fentry__; push %rbp; mov %rsp,%rbp; push %rbx; ... pop %rbx; pop %rbp; ret
 *            rows +0 sp+8 | +6 sp+16, bp@-16 | +9 bp+16, bp@-16 (the push %rbx moves no row) | epilogue sp+8
 *  unframed: call __fentry__; push %r12; push %rbx; ... pop %rbx; pop %r12; ret
 *            rows +0 sp+8 | +7 sp+16 | +8 sp+24 | epilogue sp+16 | sp+8
 */
export function fnCode(framed: boolean, endbr = false): { bytes: Uint8Array; rows: [number, OrcEntry][] } {
  const b = new Uint8Array(FN_SIZE).fill(0xcc); // int3 padding
  const pre = endbr ? [0xf3, 0x0f, 0x1e, 0xfa] : [];
  const fentry = [0xe8, 0, 0, 0, 0];
  const p = pre.length + 5;
  if (framed) {
    b.set([...pre, ...fentry, 0x55, 0x48, 0x89, 0xe5, 0x53, 0x90, 0x5b, 0x5d, 0xc3]);
    return { bytes: b, rows: [[0, row(ORC_REG.SP, 8)], [p + 1, row(ORC_REG.SP, 16, -16)], [p + 4, row(ORC_REG.BP, 16, -16)], [p + 8, row(ORC_REG.SP, 8)]] };
  }
  b.set([...pre, ...fentry, 0x41, 0x54, 0x53, 0x90, 0x5b, 0x41, 0x5c, 0xc3]);
  return { bytes: b, rows: [[0, row(ORC_REG.SP, 8)], [p + 2, row(ORC_REG.SP, 16)], [p + 3, row(ORC_REG.SP, 24)], [p + 5, row(ORC_REG.SP, 16)], [p + 7, row(ORC_REG.SP, 8)]] };
}

export interface KernelImageSpec {
  /** Functions in .text: true for framed. */
  functions: readonly boolean[];
  banner?: string;
  config?: string;
  orc?: OrcLayout | false;
  buildId?: string;
  endbr?: boolean;
  /** Extra ORC rows (e.g. orc-kernel.ts's), replacing the generated ones. */
  orcRows?: readonly (readonly [bigint, OrcEntry])[];
}

export const ORC_IP_ADDR = 0xffffffff82c00000n;

/** A vmlinux with the given pieces, and the kallsyms that name its functions (slid by `slide`). */
export function kernelImage(spec: KernelImageSpec): { elf: Uint8Array; kallsyms: (slide?: bigint) => string } {
  const text = new Uint8Array(FN_SIZE * (spec.functions.length + 1)).fill(0xcc);
  const rows: [bigint, OrcEntry][] = [];
  spec.functions.forEach((framed, i) => {
    const at = FN_SIZE * (i + 1);
    const f = fnCode(framed, spec.endbr);
    text.set(f.bytes, at);
    for (const [off, e] of f.rows) rows.push([TEXT_BASE + BigInt(at + off), e]);
  });
  const rodata: Uint8Array[] = [new TextEncoder().encode('\0Linux version %s\0')];
  if (spec.banner) rodata.push(new TextEncoder().encode(`${spec.banner}\0`));
  if (spec.config !== undefined) rodata.push(ikconfigBlob(spec.config));
  const sections: ElfSectionSpec[] = [
    { name: '.text', addr: TEXT_BASE, bytes: text },
    { name: '.rodata', addr: 0xffffffff82000000n, bytes: Buffer.concat(rodata) },
    { name: '.notes', type: SHT_NOTE, addr: 0xffffffff82100000n, bytes: buildIdNote(spec.buildId ?? '00112233445566778899aabbccddeeff00112233') },
  ];
  if (spec.orc !== false) {
    const o = orcSections(spec.orc ?? 'type2', spec.orcRows ?? rows, ORC_IP_ADDR);
    sections.push({ name: '.orc_unwind_ip', addr: ORC_IP_ADDR, bytes: o.ip }, { name: '.orc_unwind', addr: 0xffffffff82e00000n, bytes: o.unwind });
  }
  const kallsyms = (slide = 0n): string => {
    const hex = (a: bigint): string => (a + slide).toString(16);
    const lines = [`${hex(TEXT_BASE)} T _text`, `${hex(TEXT_BASE)} T _stext`];
    spec.functions.forEach((_f, i) => lines.push(`${hex(TEXT_BASE + BigInt(FN_SIZE * (i + 1)))} t fn_${i}`));
    lines.push(`${hex(TEXT_BASE + BigInt(text.length))} T _etext`);
    return lines.join('\n') + '\n';
  };
  return { elf: writeElf(sections), kallsyms };
}
