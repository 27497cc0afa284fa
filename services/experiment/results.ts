// The shape of one run of the 2016 experiment (issue 18): three x86-64 entry designs built from one
// source, each sampled at random stops and single-stepped through its entry paths, judged against
// the stepper's own truth. `stacksanity experiment` writes it as JSON beside the markdown report; the
// web explorer's /experiment page and the report are both rendered from it, so they cannot disagree.
// Plain data only (addresses as hex strings), so the file is the whole record of the run.

export const DESIGNS = ['encoded', 'section', 'kernel_entry'] as const;
export type DesignName = (typeof DESIGNS)[number];

/** The project's strategy that reads each design's entries (the others are reported beside it). */
export const DESIGN_STRATEGY: Record<DesignName, 'encoded_fp' | 'section' | 'kernel_entry'> = {
  encoded: 'encoded_fp', section: 'section', kernel_entry: 'kernel_entry',
};

export type SweepOutcome = 'exact' | 'window' | 'stopped' | 'not_decoded' | 'wrong';

export interface ExperimentResults {
  version: 1;
  /** ISO time the run finished. */
  generatedAt: string;
  /** The command line that produced it (the report prints it so it can be regenerated). */
  command: string;
  /** A reduced run (CI): one entry path per design, few random samples. */
  reduced: boolean;
  /** "linux-source-6.1 6.1.192-1" */
  source: string;
  /** "2 × AMD EPYC 7B13, QEMU 7.2 TCG" */
  machine: string;
  designs: DesignResult[];
  /** The emulator's sweep of the same three layouts, for the comparison section. */
  emulator: EmulatorPath[];
  /** Differences between the real and the emulated sweeps, each with its explanation. */
  differences: Difference[];
}

export interface KernelRef {
  variant: string;
  unwinder: 'stock' | 'patched';
  buildId: string;
  image: string;
}

export interface DesignResult {
  design: DesignName;
  strategy: 'encoded_fp' | 'section' | 'kernel_entry';
  kernels: KernelRef[];
  paths: PathResult[];
  random?: RandomResult;
  /** The kernel's own printed trace held against the project's unwind of the same instant. */
  instants: InstantResult[];
}

export interface PathResult {
  /** "timer from kernel", "page_fault from user", … */
  path: string;
  entry: string;
  from: 'user' | 'kernel';
  /** Set when the path could not be swept on this machine; the reason, in a sentence. */
  skipped?: string;
  steps: number;
  /** The interrupted instruction ran again within the step limit. */
  returned: boolean;
  /**
   * Instructions the entry path ran in entry code (.entry.text) on the way in, up to the C
   * handler's first instruction, and on the way out, from the handler's return to the iret.
   */
  entryCost?: { in: number; out: number };
  totals: Record<string, Record<SweepOutcome, number>>;
  blindSpots: BlindSpot[];
  /** The design's own strategy's windows in C code, summed by what is lost (their rows are not kept). */
  windowTotals?: Record<string, { runs: number; insns: number }>;
  /** The functions the path ran through (to tell which random samples landed on it). */
  pathFns?: string[];
}

/** A run of consecutive instructions where a strategy is not exact, with what it loses there. */
export interface BlindSpot {
  strategy: string;
  /** "error_entry+0x1a..+0x2f" */
  where: string;
  fn: string;
  steps: number;
  outcome: SweepOutcome;
  verdict: string;
  reason?: string;
  lost: string[];
  /** The finding this blind spot raises (core/check/findings.ts id and title), when it fails. */
  findingId?: string;
  findingTitle?: string;
  /** 0-based index of the first random sample that raised the same finding; null: not seen. */
  firstRandomSample?: number | null;
  /** Random samples expected before the first hit, from the share of time spent in the spot. */
  expectedRandomSamples?: number;
}

export interface RandomResult {
  samples: number;
  /** Per strategy: samples per verdict. */
  verdicts: Record<string, Record<string, number>>;
  findings: { id: string; title: string; strategy: string; count: number; firstSample: number }[];
}

export interface InstantResult {
  variant: string;
  /** What was captured: "sysrq t from the 8250 interrupt while dd runs in clear_user". */
  what: string;
  /** The functions the kernel printed, reliable ones plain, guesses prefixed with "? ". */
  kernelTrace: string[];
  /** The kernel printed the interrupted context's RIP block. */
  kernelRipBlock: boolean;
  kernelWarnings: string[];
  /** The project's unwind of the same instant with the design's strategy, function names. */
  projectTrace: string[];
  /** One sentence: where the two agree and where they part. */
  verdict: string;
  skipped?: string;
}

export interface EmulatorPath {
  layout: DesignName;
  scenario: string;
  /** The real sweep's path this scenario corresponds to ("timer from kernel"), when one does. */
  path?: string;
  steps: number;
  totals: Record<string, Record<SweepOutcome, number>>;
  blindSpots: BlindSpot[];
  /** The functions the emulated path ran through (the comparison looks only at those both ran). */
  pathFns?: string[];
  /** The emulated entry's instructions in its stub, in and out (the emulator folds error_entry into one step). */
  entryCost?: { in: number; out: number };
}

export interface Difference {
  design: DesignName;
  path: string;
  what: string;
  why: string;
  /** Which side is wrong, when one is: the emulator was fixed (commit) or the difference is a model choice. */
  resolution: string;
}
