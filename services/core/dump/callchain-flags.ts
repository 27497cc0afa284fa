// Flags for host callchain entries. A host's unwinder reports garbage in recognisable ways (see
// reference/peers-and-formats.md §2.4): perf keeps every such frame, and so do we — it is evidence
// about the host's unwinder, so an entry is flagged, never dropped. The flags are a pure function
// of the address and the symbol text, so every codec (text, JSON, perf.data, kernel logs) computes
// the same ones.
import type { CallchainFlag } from './sample.ts';

/** An offset beyond this means the symbol was resolved against the wrong base (KASLR mismatch). */
export const ABSURD_OFFSET = 0x100000; // 1 MiB: larger than any kernel or user function

/**
 * Text section markers of vmlinux (include/asm-generic/vmlinux.lds.h, arch/x86/kernel/vmlinux.lds.S).
 * They share their address with the first function of the section, so perf may print the marker
 * instead of the function (`__softirqentry_text_start+0xe0` for `__do_softirq+0xe0`).
 */
const SECTION_MARKERS: ReadonlySet<string> = new Set([
  '_text', '_stext', '_etext', '_sinittext', '_einittext',
  '__indirect_thunk_start', '__indirect_thunk_end',
]);

/** `__<section>_text_start` / `__<section>_text_end`: entry, irqentry, softirqentry, sched, lock, ... */
function isTextRangeMarker(name: string): boolean {
  if (!name.startsWith('__')) return false;
  let stem: string;
  if (name.endsWith('_text_start')) stem = name.slice(2, -'_text_start'.length);
  else if (name.endsWith('_text_end')) stem = name.slice(2, -'_text_end'.length);
  else return false;
  if (stem.length === 0) return false;
  for (let i = 0; i < stem.length; i++) {
    const c = stem.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x5f; // [a-z0-9_]
    if (!ok) return false;
  }
  return true;
}

export function isSectionMarker(name: string): boolean {
  return SECTION_MARKERS.has(name) || isTextRangeMarker(name);
}

function isHexDigits(s: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
    if (!ok) return false;
  }
  return true;
}

export interface SymbolParts {
  /** The symbol name without its offset. */
  name: string;
  /** The `+0x...` offset as hex digits (no 0x), when the symbol carries one. */
  offsetHex?: string;
}

/**
 * Splits `name+0xoff` (perf's symoff, on by default since Linux 4.8) and the kernel's
 * `name+0xoff/0xsize`. Only an all-hex suffix counts, as in inferno: `foo+0xbar` is a name.
 */
export function splitSymbolOffset(sym: string): SymbolParts {
  const plus = sym.lastIndexOf('+0x');
  if (plus <= 0) return { name: sym };
  const from = plus + 3;
  let to = sym.length;
  const slash = sym.indexOf('/0x', from);
  if (slash >= 0) {
    if (!isHexDigits(sym, slash + 3, sym.length)) return { name: sym };
    to = slash;
  }
  if (!isHexDigits(sym, from, to)) return { name: sym };
  return { name: sym.slice(0, plus), offsetHex: sym.slice(from, to) };
}

function offsetIsAbsurd(hex: string): boolean {
  let i = 0;
  while (i < hex.length - 1 && hex.charCodeAt(i) === 0x30) i++;
  const digits = hex.length - i;
  // Compare by length first: a 16-digit offset would not fit a JS number exactly.
  if (digits > 6) return true;
  return parseInt(hex.slice(i), 16) > ABSURD_OFFSET;
}

const ALL_ONES = 0xffffffffffffffffn;

/** x86-64 canonical with 48-bit virtual addresses: bits 63..47 all equal (perf hosts are 4-level). */
function isCanonical48Addr(addr: bigint): boolean {
  const top = addr >> 47n;
  return top === 0n || top === 0x1ffffn;
}

/**
 * The flags of one callchain entry, in CALLCHAIN_FLAGS order.
 * zero and all_ones are the terminators perf stores at the end of an FP chain; both are canonical,
 * so they never also carry non_canonical.
 */
export function callchainFlags(addr: bigint, sym?: string): CallchainFlag[] {
  const flags: CallchainFlag[] = [];
  if (sym === '[unknown]') flags.push('unknown_symbol');
  if (addr === 0n) flags.push('zero');
  else if (addr === ALL_ONES) flags.push('all_ones');
  else if (!isCanonical48Addr(addr)) flags.push('non_canonical');
  if (sym !== undefined && sym.length > 0) {
    const parts = splitSymbolOffset(sym);
    if (parts.offsetHex !== undefined && offsetIsAbsurd(parts.offsetHex)) flags.push('absurd_offset');
    if (isSectionMarker(parts.name)) flags.push('section_marker');
  }
  return flags;
}
