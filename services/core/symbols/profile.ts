// The kernel profile (DESIGN §3.1): everything about one kernel build that an unwinder may use
// besides the sample itself — text symbols, section ranges from the marker symbols, which entry
// layouts the build's entry code produces, the section strategy's pt_regs offsets, stack geometry.
import { DumpError } from '../dump/errors.ts';
import { signedFromBig } from '../u64.ts';
import { parseKallsyms, isTextType } from './kallsyms.ts';
import { SymbolTable, isEndMarker, type KernelSymbol } from './table.ts';
import { entryTypeOfStub, isEntryType, type EntryType } from './entry-types.ts';
import type { OrcLayout, OrcTable } from '../unwind/orc-table.ts';
import type { FramePointerEvidence, FramePointerSource } from './frame-pointer-evidence.ts';

export const ENTRY_LAYOUTS = ['kernel_entry', 'section', 'encoded_fp'] as const;
export type EntryLayout = (typeof ENTRY_LAYOUTS)[number];

export const SECTION_NAMES = ['text', 'inittext', 'entry', 'irqentry', 'softirqentry'] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

const SECTION_MARKERS: Record<SectionName, [string, string]> = {
  text: ['_stext', '_etext'],
  inittext: ['_sinittext', '_einittext'],
  entry: ['__entry_text_start', '__entry_text_end'],
  irqentry: ['__irqentry_text_start', '__irqentry_text_end'],
  softirqentry: ['__softirqentry_text_start', '__softirqentry_text_end'],
};

export interface SectionRange {
  start: bigint;
  end: bigint;
  /** Signed forms for the hot path (exact: text lives in the top 2 GiB). */
  startS: number;
  endS: number;
}

/**
 * Where the section strategy finds pt_regs from an entry stub's return-address slot in the
 * handler's frame: at slot + offset, or (indirect) at the address stored there. Modern IDT stubs
 * call the C handler with rsp == &pt_regs, so pt_regs = slot + 8.
 */
export interface StubLayout {
  entry: EntryType;
  offset: number;
  indirect: boolean;
}

export interface StubOverride {
  entry?: EntryType;
  offset?: number;
  indirect?: boolean;
}

export interface ProfileOptions {
  buildId?: string;
  /** Entry layouts the build's entry code produces; inferred from the symbols when absent. */
  layouts?: EntryLayout[];
  /** Per-stub-symbol overrides of entry type and pt_regs offset. */
  stubs?: Record<string, StubOverride>;
  kasan?: boolean;
  /** The vmlinux ORC tables (.orc_unwind_ip/.orc_unwind), read by an adapter; the orc strategy needs them. */
  orc?: OrcTable;
  /** false: built without frame pointers (no CONFIG_FRAME_POINTER), so the frame-pointer strategies do not apply. */
  framePointers?: boolean;
  /** Where the build facts came from, when an adapter learned them from the image (reported, never used to unwind). */
  provenance?: ProfileProvenance;
}

export interface ProfileProvenance {
  /** framePointers: from the user's profile file, or the evidence it was decided on. */
  framePointers?: { source: 'profile' | FramePointerSource; detail: string };
  /** Every piece of frame-pointer evidence the image offered, conclusive or not. */
  evidence?: FramePointerEvidence[];
  /** The ORC table's entry layout and what named it: the image's banner or the --orc-layout flag. */
  orc?: { layout: OrcLayout; layoutSource: 'banner' | 'flag'; release?: string; entries: number };
}

export const DEFAULT_STUB_OFFSET = 8;

export class KernelProfile {
  readonly buildId: string | undefined;
  readonly symbols: SymbolTable;
  readonly sections: Partial<Record<SectionName, SectionRange>>;
  readonly layouts: ReadonlySet<EntryLayout>;
  readonly kasan: boolean;
  readonly orc: OrcTable | undefined;
  readonly framePointers: boolean | undefined;
  readonly provenance: ProfileProvenance | undefined;
  /** Signed address of the dummy kernel_entry function, when the build has one. */
  readonly kernelEntry: number | undefined;
  private readonly stubOverrides: Map<string, StubOverride>;
  private readonly stubCache = new Map<number, StubLayout>();
  private readonly moduleRanges: { startS: number; endS: number }[];

  constructor(all: KernelSymbol[], opts: ProfileOptions = {}) {
    this.buildId = opts.buildId;
    this.kasan = opts.kasan ?? false;
    this.orc = opts.orc;
    this.framePointers = opts.framePointers;
    this.provenance = opts.provenance;
    const byName = new Map<string, bigint>();
    for (const s of all) if (!byName.has(s.name) && s.module === undefined) byName.set(s.name, s.address);
    const sections: Partial<Record<SectionName, SectionRange>> = {};
    for (const name of SECTION_NAMES) {
      const [a, b] = SECTION_MARKERS[name];
      const start = byName.get(a);
      const end = byName.get(b);
      if (start !== undefined && end !== undefined && end > start) {
        sections[name] = { start, end, startS: signedFromBig(start), endS: signedFromBig(end) };
      }
    }
    this.sections = sections;
    // End markers stay in the table (as gaps) so that the symbol before them ends there.
    const text = all.filter((s) => isTextType(s.type) || isEndMarker(s.name));
    this.symbols = new SymbolTable(text, sections.text?.end);
    const ke = byName.get('kernel_entry');
    this.kernelEntry = ke !== undefined ? signedFromBig(ke) : undefined;
    this.stubOverrides = new Map(Object.entries(opts.stubs ?? {}));
    this.layouts = new Set(opts.layouts ?? this.inferLayouts());
    this.moduleRanges = moduleExtents(this.symbols);
  }

  static fromKallsyms(text: string, opts: ProfileOptions & { file?: string } = {}): KernelProfile {
    const { symbols } = parseKallsyms(text, opts.file);
    return new KernelProfile(symbols, opts);
  }

  /** A build with the dummy function uses kernel_entry; entry markers make the section strategy possible. */
  private inferLayouts(): EntryLayout[] {
    const out: EntryLayout[] = [];
    if (this.kernelEntry !== undefined) out.push('kernel_entry');
    if (this.sections.entry || this.sections.irqentry) out.push('section', 'encoded_fp');
    return out;
  }

  /** __kernel_text_address(): core text, init text, entry text, or a module's text. */
  isTextS(s: number): boolean {
    const sec = this.sections;
    if (sec.text) {
      if (s >= sec.text.startS && s < sec.text.endS) return true;
      if (sec.inittext && s >= sec.inittext.startS && s < sec.inittext.endS) return true;
      if (sec.entry && s >= sec.entry.startS && s < sec.entry.endS) return true;
      for (const m of this.moduleRanges) if (s >= m.startS && s < m.endS) return true;
      return false;
    }
    // Without _stext/_etext the best evidence is a text symbol that contains the address.
    return this.symbols.indexOfSigned(s) >= 0;
  }

  /** True when s lies in a section whose return addresses mean "the caller was an entry stub". */
  inEntrySectionS(s: number): boolean {
    const sec = this.sections;
    if (sec.irqentry && s >= sec.irqentry.startS && s < sec.irqentry.endS) return true;
    if (sec.entry && s >= sec.entry.startS && s < sec.entry.endS) return true;
    return false;
  }

  hasEntrySection(): boolean {
    return this.sections.irqentry !== undefined || this.sections.entry !== undefined;
  }

  /** The stub layout for an address inside the entry section (by the symbol that contains it). */
  stubAtS(s: number): StubLayout {
    const i = this.symbols.indexOfSigned(s);
    const cached = this.stubCache.get(i);
    if (cached) return cached;
    const name = i >= 0 ? this.symbols.names[i]! : '';
    const o = this.stubOverrides.get(name);
    const layout: StubLayout = {
      entry: o?.entry ?? (name ? entryTypeOfStub(name) : 'unknown'),
      offset: o?.offset ?? DEFAULT_STUB_OFFSET,
      indirect: o?.indirect ?? false,
    };
    this.stubCache.set(i, layout);
    return layout;
  }

  /** Entry type named by the stub a return address points into; 'unknown' outside the entry section. */
  entryTypeAtS(s: number): EntryType {
    return this.inEntrySectionS(s) ? this.stubAtS(s).entry : 'unknown';
  }
}

function moduleExtents(t: SymbolTable): { startS: number; endS: number }[] {
  const out: { startS: number; endS: number }[] = [];
  let cur: { mod: string; startS: number; endS: number } | undefined;
  for (let i = 0; i < t.length; i++) {
    const m = t.modules[i];
    if (m === undefined) continue;
    const end = Math.max(t.ends[i]!, t.starts[i]! + 1);
    if (cur && cur.mod === m) cur.endS = end;
    else {
      if (cur) out.push({ startS: cur.startS, endS: cur.endS });
      cur = { mod: m, startS: t.starts[i]!, endS: end };
    }
  }
  if (cur) out.push({ startS: cur.startS, endS: cur.endS });
  return out;
}

/** Parses a profile options JSON document (the file form of DESIGN §3.1 beyond the symbols). */
export function parseProfileOptions(json: unknown, file = 'profile'): ProfileOptions {
  if (typeof json !== 'object' || json === null) throw new DumpError('bad_json', 'profile must be a JSON object', { file });
  const o = json as Record<string, unknown>;
  const out: ProfileOptions = {};
  if (o.buildId !== undefined) out.buildId = String(o.buildId);
  if (o.kasan !== undefined) out.kasan = o.kasan === true;
  if (o.framePointers !== undefined) out.framePointers = o.framePointers === true;
  if (o.layouts !== undefined) {
    if (!Array.isArray(o.layouts)) throw new DumpError('bad_field', 'layouts must be an array', { file, field: 'layouts' });
    out.layouts = o.layouts.map((l, i) => {
      if (!(ENTRY_LAYOUTS as readonly unknown[]).includes(l)) {
        throw new DumpError('bad_field', `unknown entry layout '${String(l)}' (known: ${ENTRY_LAYOUTS.join(', ')})`, { file, field: `layouts[${i}]` });
      }
      return l as EntryLayout;
    });
  }
  if (o.stubs !== undefined) {
    if (typeof o.stubs !== 'object' || o.stubs === null) throw new DumpError('bad_field', 'stubs must be an object', { file, field: 'stubs' });
    out.stubs = {};
    for (const [name, v] of Object.entries(o.stubs as Record<string, unknown>)) {
      const sv = v as Record<string, unknown>;
      const so: StubOverride = {};
      if (sv.entry !== undefined) {
        if (typeof sv.entry !== 'string' || !isEntryType(sv.entry)) throw new DumpError('bad_field', `unknown entry type '${String(sv.entry)}'`, { file, field: `stubs.${name}.entry` });
        so.entry = sv.entry;
      }
      if (sv.offset !== undefined) {
        if (typeof sv.offset !== 'number' || !Number.isInteger(sv.offset) || sv.offset % 8 !== 0) throw new DumpError('bad_field', 'offset must be a multiple of 8', { file, field: `stubs.${name}.offset` });
        so.offset = sv.offset;
      }
      if (sv.indirect !== undefined) so.indirect = sv.indirect === true;
      out.stubs[name] = so;
    }
  }
  return out;
}
