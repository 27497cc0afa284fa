// The interface every strategy implements, shaped like the kernel's unwind_start /
// unwind_next_frame / unwind_done (arch/x86/include/asm/unwind.h): a caller writes a plain loop,
// and a new strategy (ORC) is one more module.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { StrategyName, UnwindOptions, UnwindResult } from './types.ts';

export interface Unwinder {
  /** Positions the walk at the sample's registers and reports the first frame. */
  start(): void;
  /** Moves to the next frame; false once the walk has ended (successfully or not). */
  next(): boolean;
  done(): boolean;
  result(): UnwindResult;
}

export interface Strategy {
  readonly name: StrategyName;
  /** One line for --help and docs. */
  readonly summary: string;
  create(sample: Sample, profile: KernelProfile, opts?: UnwindOptions): Unwinder;
}

export const DEFAULT_MAX_FRAMES = 128;
