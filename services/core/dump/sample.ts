// The sample model ("perf-style dump"): what one NMI-style sample of one CPU carries.
// Every input format (stacksanity text and JSON dumps, perf script, later perf.data and kernel logs)
// is normalised into this shape. See docs/dump-format.md.
import type { PtRegsField, StackType } from '../stack/layout.ts';

/** Sampled registers. ip and sp are required for unwinding; the rest as captured. */
export type Regs = Partial<Record<PtRegsField, bigint>>;

export interface StackWindow {
  /** Address of bytes[0]. */
  start: bigint;
  /** Raw stack memory, in address order (little-endian words). */
  bytes: Uint8Array;
}

export interface SampleStack {
  type: StackType;
  /** [begin, end): the whole stack's bounds, whether or not all of it was captured. */
  begin: bigint;
  end: bigint;
  windows: StackWindow[];
}

/** Things about a host callchain entry that are kept and flagged, never silently dropped. */
export const CALLCHAIN_FLAGS = [
  'unknown_symbol', // perf printed [unknown] for the symbol
  'zero', // a 0 address: the end of an FP chain as perf stores it
  'all_ones', // ffffffffffffffff terminator
  'non_canonical', // not a canonical x86-64 address: stack data misread as a return address
  'absurd_offset', // symbol offset over 1 MiB: resolved against the wrong base
  'section_marker', // symbol is a section marker aliasing a function
  // The two below describe how the host reported the entry, not its address, so no codec computes
  // them: they are carried as given (the text form writes them with `.flags i`).
  'unreliable', // a kernel log's "? " entry: a text address found on the stack that the unwinder did not use
  'no_address', // printed without an address (a log's `func+0x12/0x40` only): addr is a placeholder 0
] as const;
export type CallchainFlag = (typeof CALLCHAIN_FLAGS)[number];

export interface CallchainEntry {
  addr: bigint;
  /** As printed: name with optional +0xoff, '[unknown]', or absent. */
  sym?: string;
  /** As printed between the parentheses, e.g. '[kernel.kallsyms]'. */
  dso?: string;
  flags: CallchainFlag[];
}

export const TRUTH_KINDS = ['start', 'call', 'regs'] as const;
/** start: the sampled ip; call: a return address; regs: an ip taken from pt_regs at an entry. */
export type FrameKind = (typeof TRUTH_KINDS)[number];

/** Why a correct frame-pointer unwinder may miss a frame at this instant (documented limits). */
export const TOLERANCES = ['prologue', 'epilogue', 'leaf', 'entry_code'] as const;
export type Tolerance = (typeof TOLERANCES)[number];

export interface TruthFrame {
  ip: bigint;
  kind: FrameKind;
  /** For kind 'regs': the entry through which this frame was interrupted (e.g. 'page_fault'). */
  entry?: string;
  /** Set when no correct frame-pointer unwinder can recover this frame at this instant. */
  tolerated?: Tolerance;
}

export interface GroundTruth {
  frames: TruthFrame[];
}

export interface SourceRef {
  file: string;
  line: number;
}

export interface Sample {
  comm?: string;
  pid?: number;
  tid?: number;
  cpu?: number;
  /** As printed by perf (seconds with a fraction), kept as text to stay exact. */
  time?: string;
  period?: bigint;
  /** What took the sample: the perf event name, or nmi, timer, single-step, sched. */
  trigger: string;
  host?: string;
  /** Kernel build id, keying the kernel profile. */
  kernel?: string;
  regs?: Regs;
  stacks: SampleStack[];
  callchain?: CallchainEntry[];
  truth?: GroundTruth;
  /** Where the sample came from, for error messages. */
  source?: SourceRef;
}

/** Registers to start an unwind from and captured stack memory (sp itself may lie off every stack). */
export function hasFullState(s: Sample): boolean {
  return s.regs?.ip !== undefined && s.regs.sp !== undefined && s.stacks.length > 0;
}
