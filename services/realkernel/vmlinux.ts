// The ELF vmlinux inside a bzImage, and what stacksanity reads from it: the build id and the ORC
// tables. The bzImage's setup header (Documentation/arch/x86/boot.rst) points at the compressed
// payload; Debian builds it with CONFIG_KERNEL_XZ. Node's zlib has no XZ decoder, so the payload
// goes through the `xz` binary (Debian's xz-utils, installed by scripts/realkernel-setup.sh).
import { spawnSync } from 'node:child_process';
import { orcLayoutForRelease, OrcTable, type OrcLayout } from '../core/unwind/orc-table.ts';

const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

export interface BzImagePayload {
  setupSects: number;
  payloadOffset: number;
  payloadLength: number;
  /** The compressed payload, sliced exactly (so xz sees no trailing bytes). */
  payload: Uint8Array;
}

/** Reads the setup header: setup_sects at 0x1f1, "HdrS" at 0x202, payload_offset/length at 0x248/0x24c. */
export function bzImagePayload(img: Uint8Array): BzImagePayload {
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  if (img.length < 0x260 || dv.getUint32(0x202, true) !== 0x53726448) throw new Error('not a bzImage: no "HdrS" setup header at 0x202');
  const version = dv.getUint16(0x206, true);
  if (version < 0x208) throw new Error(`boot protocol ${version.toString(16)} has no payload_offset (needs 2.08+)`);
  const setupSects = img[0x1f1] || 4; // 0 means 4 (boot.rst)
  const payloadOffset = dv.getUint32(0x248, true);
  const payloadLength = dv.getUint32(0x24c, true);
  const start = (setupSects + 1) * 512 + payloadOffset;
  if (start + payloadLength > img.length) throw new Error(`payload [${start}, +${payloadLength}) runs past the end of the image (${img.length} B)`);
  return { setupSects, payloadOffset, payloadLength, payload: img.subarray(start, start + payloadLength) };
}

export function extractVmlinux(img: Uint8Array): Uint8Array {
  const p = bzImagePayload(img);
  if (!XZ_MAGIC.every((b, i) => p.payload[i] === b)) {
    throw new Error('the bzImage payload is not XZ (only CONFIG_KERNEL_XZ kernels are supported: Debian\'s)');
  }
  // --single-stream: the payload ends with the 4-byte uncompressed size (size_append), not XZ data.
  const r = spawnSync('xz', ['-dc', '--single-stream'], { input: Buffer.from(p.payload), maxBuffer: 1 << 30 });
  if (r.error) throw new Error(`cannot run xz (install xz-utils): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`xz failed (${r.status}): ${r.stderr.toString().trim()}`);
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

export interface ElfSection {
  name: string;
  type: number;
  addr: bigint;
  offset: number;
  size: number;
}

/** Section headers of an ELF64 little-endian file. */
export function elfSections(elf: Uint8Array): ElfSection[] {
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46) throw new Error('not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a 64-bit little-endian ELF');
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shoff + shnum * shentsize > elf.length) throw new Error('ELF section headers run past the end of the file');
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    raw.push({
      nameOff: dv.getUint32(o, true), type: dv.getUint32(o + 4, true), addr: dv.getBigUint64(o + 0x10, true),
      offset: Number(dv.getBigUint64(o + 0x18, true)), size: Number(dv.getBigUint64(o + 0x20, true)),
    });
  }
  const strtab = raw[shstrndx];
  const name = (off: number): string => {
    if (!strtab) return '';
    let e = strtab.offset + off;
    while (e < elf.length && elf[e] !== 0) e++;
    return Buffer.from(elf.subarray(strtab.offset + off, e)).toString('latin1');
  };
  return raw.map((r) => ({ name: name(r.nameOff), type: r.type, addr: r.addr, offset: r.offset, size: r.size }));
}

export const SHT_NOBITS = 8;
const NT_GNU_BUILD_ID = 3;

export function sectionBytes(elf: Uint8Array, s: ElfSection): Uint8Array {
  if (s.type === SHT_NOBITS) throw new Error(`section ${s.name} has no bytes in the file (NOBITS)`);
  if (s.offset + s.size > elf.length) throw new Error(`section ${s.name} runs past the end of the file`);
  return elf.subarray(s.offset, s.offset + s.size);
}

/** The GNU build id (hex), from any note section that carries NT_GNU_BUILD_ID with owner "GNU". */
export function buildId(elf: Uint8Array, sections: ElfSection[]): string | undefined {
  for (const s of sections) {
    if (!s.name.startsWith('.note') || s.type === SHT_NOBITS) continue;
    const b = sectionBytes(elf, s);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let o = 0; o + 12 <= b.length; ) {
      const namesz = dv.getUint32(o, true);
      const descsz = dv.getUint32(o + 4, true);
      const type = dv.getUint32(o + 8, true);
      const nameAt = o + 12;
      const descAt = nameAt + ((namesz + 3) & ~3);
      if (descAt + descsz > b.length) break;
      const owner = Buffer.from(b.subarray(nameAt, nameAt + Math.max(0, namesz - 1))).toString('latin1');
      if (type === NT_GNU_BUILD_ID && owner === 'GNU') return Buffer.from(b.subarray(descAt, descAt + descsz)).toString('hex');
      o = descAt + ((descsz + 3) & ~3);
    }
  }
  return undefined;
}

const BANNER = Buffer.from('Linux version ', 'latin1');

/**
 * The release in the image's banner (init/version.c: "Linux version 6.1.0-57-amd64 (...)"), or
 * undefined when the image has none. Searched as bytes: a 60 MB vmlinux is not turned into a string.
 */
export function kernelRelease(elf: Uint8Array): string | undefined {
  const b = Buffer.from(elf.buffer, elf.byteOffset, elf.byteLength);
  for (let at = b.indexOf(BANNER); at >= 0; at = b.indexOf(BANNER, at + 1)) {
    const m = /^(\d+\.\d+[^\s\0]*)/.exec(b.subarray(at + BANNER.length, at + BANNER.length + 80).toString('latin1'));
    if (m) return m[1];
  }
  return undefined;
}

export function isBzImage(img: Uint8Array): boolean {
  return img.length > 0x206 && img[0x202] === 0x48 && img[0x203] === 0x64 && img[0x204] === 0x72 && img[0x205] === 0x53;
}

export interface VmlinuxFacts {
  buildId: string | undefined;
  sections: ElfSection[];
  orc: OrcTable | undefined;
}

/** Build id, section headers and the ORC table (in the layout of the given kernel release). */
export function readVmlinux(elf: Uint8Array, release: string, layout?: OrcLayout): VmlinuxFacts {
  const sections = elfSections(elf);
  const ip = sections.find((s) => s.name === '.orc_unwind_ip');
  const un = sections.find((s) => s.name === '.orc_unwind');
  let orc: OrcTable | undefined;
  const l = layout ?? orcLayoutForRelease(release);
  if (ip && un && l) {
    orc = OrcTable.fromSections({ layout: l, ipSectionAddr: ip.addr, ipSection: sectionBytes(elf, ip), unwindSection: sectionBytes(elf, un) });
  }
  return { buildId: buildId(elf, sections), sections, orc };
}
