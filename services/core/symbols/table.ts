// The kernel's text symbols, sorted, for address -> func+0xoff/0xsize in O(log n).
// Lookups run in the unwinders' hot path, so the table keeps starts as doubles in the "signed"
// form (see u64.ts): exact for all kernel and module text, which lives in the top 2 GiB.
import { formatHex, signedFromBig, bigFromSigned } from '../u64.ts';

export interface KernelSymbol {
  name: string;
  address: bigint;
  /** nm type letter as printed (T t W w ...). */
  type: string;
  module?: string;
}

/** Marker symbols bracket sections; they alias real functions and must not name them. */
export const SECTION_MARKER_RE =
  /^(?:_stext|_etext|_text|_sinittext|_einittext|__(?:entry|irqentry|softirqentry|noinstr|sched|lock|cpuidle|kprobes|static_call|indirect_thunk|alt_instr|ftrace|hyp|idmap)_text_(?:start|end)|__start_[a-z_]+|__stop_[a-z_]+)$/;

export function isSectionMarker(name: string): boolean {
  return SECTION_MARKER_RE.test(name);
}

/** A marker that ends a section: the bytes from it on belong to no symbol before it. */
export function isEndMarker(name: string): boolean {
  return isSectionMarker(name) && (name.endsWith('_end') || name === '_etext' || name === '_einittext' || name.startsWith('__stop_'));
}

export interface SymbolHit {
  index: number;
  name: string;
  module: string | undefined;
  start: bigint;
  /** Distance to the next symbol: what the kernel prints as /0xsize. 0 when unknown (last symbol). */
  size: number;
  offset: number;
}

export class SymbolTable {
  /** Sorted, one entry per distinct address (aliases resolved). */
  readonly names: string[];
  readonly modules: (string | undefined)[];
  readonly starts: Float64Array;
  /** Exclusive end of each symbol: next symbol's start, or the section end for the last one. */
  readonly ends: Float64Array;
  /** Entries that only mark where a section ends; they name no byte. */
  readonly gaps: Uint8Array;

  constructor(symbols: KernelSymbol[], textEnd?: bigint) {
    // Sorted in the signed form the lookups search in: a real kallsyms also lists per-CPU and
    // absolute symbols at small addresses (__per_cpu_end), which sort after kernel text as int64.
    const sorted = [...symbols].sort((a, b) => { const x = BigInt.asIntN(64, a.address), y = BigInt.asIntN(64, b.address); return x < y ? -1 : x > y ? 1 : 0; });
    const names: string[] = [];
    const modules: (string | undefined)[] = [];
    const starts: number[] = [];
    for (let i = 0; i < sorted.length; ) {
      let j = i;
      const addr = sorted[i]!.address;
      while (j < sorted.length && sorted[j]!.address === addr) j++;
      const best = pickAlias(sorted.slice(i, j));
      const s = signedFromBig(addr);
      if (Number.isSafeInteger(s)) {
        names.push(best.name);
        modules.push(best.module);
        starts.push(s);
      }
      i = j;
    }
    this.names = names;
    this.modules = modules;
    this.starts = Float64Array.from(starts);
    this.ends = new Float64Array(starts.length);
    this.gaps = Uint8Array.from(names, (n) => (isEndMarker(n) ? 1 : 0));
    const endS = textEnd !== undefined ? signedFromBig(textEnd) : NaN;
    for (let i = 0; i < starts.length; i++) {
      const next = starts[i + 1];
      // A module's last symbol does not extend into the next module or the core kernel.
      if (next !== undefined && modules[i + 1] === modules[i]) this.ends[i] = next;
      else if (modules[i] === undefined && Number.isFinite(endS) && endS > starts[i]!) this.ends[i] = endS;
      else this.ends[i] = starts[i]!;
    }
  }

  get length(): number {
    return this.starts.length;
  }

  /** Index of the symbol containing the signed address s, or -1. */
  indexOfSigned(s: number): number {
    const st = this.starts;
    let lo = 0;
    let hi = st.length - 1;
    if (hi < 0 || !(s >= st[0]!)) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (st[mid]! <= s) lo = mid;
      else hi = mid - 1;
    }
    if (this.gaps[lo] === 1) return -1;
    // Past the last known byte of the symbol: not inside it. A symbol of unknown size (the last
    // one, with no end marker) only matches its own address.
    const end = this.ends[lo]!;
    if (end === st[lo]! ? s !== end : s >= end) return -1;
    return lo;
  }

  lookup(addr: bigint): SymbolHit | undefined {
    const s = signedFromBig(addr);
    if (!Number.isSafeInteger(s)) return undefined;
    const i = this.indexOfSigned(s);
    if (i < 0) return undefined;
    return this.hit(i, s);
  }

  hit(i: number, s: number): SymbolHit {
    return {
      index: i,
      name: this.names[i]!,
      module: this.modules[i],
      start: bigFromSigned(this.starts[i]!),
      size: this.ends[i]! - this.starts[i]!,
      offset: s - this.starts[i]!,
    };
  }

  /** The symbol address of a name (first match), for markers resolved separately use sections. */
  addressOf(name: string): bigint | undefined {
    const i = this.names.indexOf(name);
    return i < 0 ? undefined : bigFromSigned(this.starts[i]!);
  }

  /**
   * func+0xoff/0xsize [module], as the kernel's %pS prints it. For a return address (%pB) pass
   * returnAddress: the lookup uses addr-1 so a call to a noreturn function at the very end of a
   * function still names the caller, while the printed offset stays addr - start.
   */
  format(addr: bigint, returnAddress = false): string {
    const s = signedFromBig(addr);
    if (!Number.isSafeInteger(s)) return formatHex(addr);
    const i = this.indexOfSigned(returnAddress ? s - 1 : s);
    if (i < 0) return formatHex(addr);
    return this.formatHit(i, s);
  }

  formatHit(i: number, s: number): string {
    const off = s - this.starts[i]!;
    const size = this.ends[i]! - this.starts[i]!;
    const mod = this.modules[i];
    return `${this.names[i]}+${formatHex(off)}/${formatHex(size)}${mod ? ` [${mod}]` : ''}`;
  }
}

/** Several names at one address: a real function over a section marker; a global over a local. */
function pickAlias(group: KernelSymbol[]): KernelSymbol {
  let best = group[0]!;
  for (const s of group) {
    if (rank(s) > rank(best)) best = s;
  }
  return best;
}

function rank(s: KernelSymbol): number {
  let r = 0;
  if (!isSectionMarker(s.name)) r += 4;
  if (s.type === 'T') r += 2;
  else if (s.type === 't' || s.type === 'W' || s.type === 'w') r += 1;
  return r;
}
