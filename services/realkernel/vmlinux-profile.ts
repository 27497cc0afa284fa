// What `check --vmlinux` learns from a kernel image beyond its symbols: the build id, the ORC
// tables in the right entry layout, and whether the build keeps frame pointers (with the evidence
// it was decided on). docs/real-kernel.md, "What --vmlinux learns", is the user's view of this.
import { isTextType } from '../core/symbols/kallsyms.ts';
import { isSectionMarker, type KernelSymbol } from '../core/symbols/table.ts';
import type { ProfileOptions, ProfileProvenance } from '../core/symbols/profile.ts';
import {
  decideFramePointers, framePointersFromCode, framePointersFromConfig, framePointersFromOrc, type FramePointerEvidence,
} from '../core/symbols/frame-pointer-evidence.ts';
import { guessOrcLayout, orcLayoutForRelease, OrcTable, ORC_LAYOUT_CHOICES, type OrcLayout } from '../core/unwind/orc-table.ts';
import { embeddedConfig } from './ikconfig.ts';
import { buildId, elfSections, extractVmlinux, isBzImage, kernelRelease, sectionBytes, SHT_NOBITS, type ElfSection } from './vmlinux.ts';

export interface VmlinuxProfileOptions {
  /** --orc-layout: the entry layout for an image whose banner does not name its release (or to override it). */
  orcLayout?: OrcLayout;
  /** The kernel's symbols (kallsyms): they locate functions for the code evidence. */
  symbols?: readonly KernelSymbol[];
}

export interface VmlinuxProfile {
  options: ProfileOptions;
  /** One line each, for stderr: what was learned and from what. */
  notes: string[];
}

/** A vmlinux that cannot be used as asked; the message says what to do. */
export class VmlinuxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmlinuxError';
  }
}

/** Functions sampled for the code evidence: enough for a tight share, few enough to cost nothing. */
const CODE_SAMPLE = 4000;
const PROLOGUE_BYTES = 16;

export function vmlinuxProfile(image: Uint8Array, o: VmlinuxProfileOptions = {}): VmlinuxProfile {
  const elf = isBzImage(image) ? extractVmlinux(image) : image;
  const sections = elfSections(elf);
  const notes: string[] = [];
  const provenance: ProfileProvenance = {};
  const options: ProfileOptions = { provenance };
  const id = buildId(elf, sections);
  if (id) options.buildId = id;

  const release = kernelRelease(elf);
  const ipSec = sections.find((s) => s.name === '.orc_unwind_ip');
  const unSec = sections.find((s) => s.name === '.orc_unwind');
  if (ipSec && unSec) {
    const unwind = sectionBytes(elf, unSec);
    const layout = orcLayoutOf(release, o.orcLayout, unwind, notes);
    let orc: OrcTable;
    try {
      orc = OrcTable.fromSections({ layout, ipSectionAddr: ipSec.addr, ipSection: sectionBytes(elf, ipSec), unwindSection: unwind });
    } catch (e) {
      throw new VmlinuxError(`its ORC sections are unusable: ${(e as Error).message}`);
    }
    options.orc = orc;
    provenance.orc = { layout, layoutSource: o.orcLayout ? 'flag' : 'banner', ...(release ? { release } : {}), entries: orc.length };
    notes.push(`ORC: ${orc.length} entries, layout ${layout} (${o.orcLayout ? '--orc-layout' : `the banner's release ${release}`})`);
  } else {
    notes.push('no .orc_unwind/.orc_unwind_ip sections (a kernel built without CONFIG_UNWINDER_ORC): the orc strategy does not run');
  }

  const evidence = frameEvidence(elf, sections, options.orc, o.symbols, notes);
  provenance.evidence = evidence;
  const d = decideFramePointers(evidence);
  if (d.used && d.framePointers !== undefined) {
    options.framePointers = d.framePointers;
    provenance.framePointers = { source: d.used.source, detail: d.used.detail };
    notes.push(`frame pointers: ${d.framePointers ? 'yes' : 'no'}, from the ${SOURCE_NAME[d.used.source]}: ${d.used.detail}${d.framePointers ? '' : '; the frame-pointer strategies answer not_applicable'}`);
    for (const x of d.disagreeing) notes.push(`warning: the evidence from the ${SOURCE_NAME[x.source]} says the opposite: ${x.detail}`);
  } else {
    notes.push(`frame pointers: cannot tell (${evidence.map((e) => e.detail).join('; ') || 'no config, ORC table or symbols to look at'}); the frame-pointer strategies run. If the kernel has none, pass --profile FILE with {"framePointers": false}`);
  }
  return { options, notes };
}

const SOURCE_NAME = { config: 'embedded config', orc: 'ORC table', code: 'function prologues' } as const;

/** The flag wins over the banner; with neither, a layout cannot be assumed: a wrong one misreads every entry. */
function orcLayoutOf(release: string | undefined, flag: OrcLayout | undefined, unwind: Uint8Array, notes: string[]): OrcLayout {
  const fromBanner = release ? orcLayoutForRelease(release) : undefined;
  if (flag) {
    if (fromBanner && fromBanner !== flag) notes.push(`warning: the banner's release ${release} uses ORC layout ${fromBanner}; reading ${flag} as --orc-layout asks`);
    else {
      const guess = guessOrcLayout(unwind);
      if (guess && guess !== flag) notes.push(`warning: the entries look like ${guess}, not ${flag}: a wrong --orc-layout misreads every row`);
    }
    return flag;
  }
  if (fromBanner) return fromBanner;
  const guess = guessOrcLayout(unwind);
  const why = release ? `its banner names release ${release}, which has no ORC layout (ORC arrived in v4.14)` : 'it has no "Linux version" banner to tell its release';
  throw new VmlinuxError(`cannot tell the ORC entry layout: ${why}. Pass --orc-layout ${ORC_LAYOUT_CHOICES}${guess ? `; the entries look like ${guess}` : ''}`);
}

function frameEvidence(elf: Uint8Array, sections: ElfSection[], orc: OrcTable | undefined, symbols: readonly KernelSymbol[] | undefined, notes: string[]): FramePointerEvidence[] {
  const out: FramePointerEvidence[] = [];
  try {
    const cfg = embeddedConfig(elf);
    if (cfg) out.push(framePointersFromConfig(cfg.text));
  } catch (e) {
    notes.push(`warning: ${(e as Error).message}; deciding without it`);
  }
  if (orc) out.push(framePointersFromOrc(orc));
  const text = sections.find((s) => s.name === '.text');
  if (symbols && text && text.type !== SHT_NOBITS) {
    const starts = functionStarts(elf, text, symbols);
    if (starts.length > 0) out.push(framePointersFromCode(starts));
  }
  return out;
}

/**
 * The first bytes of up to CODE_SAMPLE text functions, evenly spread over the sorted symbols.
 * kallsyms addresses are runtime ones: KASLR slides them by the distance between kallsyms' _text
 * and the .text section's link address. Entry code (assembly, never framed) and the padding
 * symbols of 6.2+ (__pfx_, __cfi_) are left out.
 */
function functionStarts(elf: Uint8Array, text: ElfSection, symbols: readonly KernelSymbol[]): Uint8Array[] {
  const core = symbols.filter((s) => s.module === undefined);
  const addrOf = (name: string): bigint | undefined => core.find((s) => s.name === name)?.address;
  const anchor = addrOf('_text') ?? addrOf('_stext');
  if (anchor === undefined || anchor === 0n) return [];
  const slide = anchor - text.addr;
  const entryStart = addrOf('__entry_text_start');
  const entryEnd = addrOf('__entry_text_end');
  const end = text.addr + BigInt(text.size - PROLOGUE_BYTES);
  const seen = new Set<bigint>();
  const fns: bigint[] = [];
  for (const s of core) {
    if (!isTextType(s.type) || isSectionMarker(s.name) || s.name.startsWith('__pfx_') || s.name.startsWith('__cfi_')) continue;
    if (entryStart !== undefined && entryEnd !== undefined && s.address >= entryStart && s.address < entryEnd) continue;
    const link = s.address - slide;
    if (link < text.addr || link > end || seen.has(link)) continue;
    seen.add(link);
    fns.push(link);
  }
  fns.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const step = Math.max(1, fns.length / CODE_SAMPLE);
  const out: Uint8Array[] = [];
  for (let k = 0; k < fns.length; k += step) {
    const off = text.offset + Number(fns[Math.floor(k)]! - text.addr);
    out.push(elf.subarray(off, off + PROLOGUE_BYTES));
  }
  return out;
}
