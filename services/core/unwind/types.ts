// The unwind result (DESIGN §3.3): ordered frames, how the walk ended, and the reliability claim.
import type { FrameKind, Regs } from '../dump/sample.ts';
import type { StackType } from '../stack/layout.ts';
import type { EntryType } from '../symbols/entry-types.ts';
import type { Reason } from '../check/reasons.ts';
import type { StackSpace } from './space.ts';

export const STRATEGIES = ['fp', 'kernel_entry', 'section', 'encoded_fp'] as const;
export type StrategyName = (typeof STRATEGIES)[number] | 'orc';

export interface Frame {
  ip: bigint;
  /** Signed form of ip (exact for kernel text), for fast comparison. */
  ipS: number;
  /** start: the sampled ip; call: a return address; regs: the ip an entry interrupted. */
  kind: FrameKind;
  stack: StackType;
  /** Address of the stack word this ip was read from (absent for the start frame). */
  slot?: bigint;
  /** For regs frames: the entry crossed, where pt_regs sat, and what they held. */
  entry?: EntryType;
  regsAt?: bigint;
  regs?: Regs;
  /** ORC: pt_regs decoded from the hardware iret frame only (REGS_PARTIAL); the other fields are stale. */
  partial?: boolean;
}

/** user: reached user-mode pt_regs; kthread: kernel-mode regs at the task stack's top (ret_from_fork, idle);
 *  end_of_stack: an ORC end-of-stack entry anywhere else (entry code, retpoline thunks). */
export const OUTCOMES = ['user', 'kthread', 'task_top', 'error', 'depth_limit', 'end_of_stack'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/**
 * Why the walk read a stack word: a saved frame pointer, a return address, a stack's link word, a
 * pt_regs word (cs, ip or bp of the regs being entered or left).
 */
export type WordRole = 'bp' | 'ret' | 'link' | 'regs';

/** One stack word a walk read to decide its next step (UnwindOptions.trail). */
export interface WordRead {
  addr: bigint;
  role: WordRole;
}

export interface UnwindResult {
  strategy: StrategyName;
  frames: Frame[];
  outcome: Outcome;
  /** Why the walk stopped, when outcome is error or depth_limit. */
  reason?: Reason;
  /** The kernel-style message for the stop, e.g. "kernel stack frame pointer at ... has bad value ...". */
  message?: string;
  /** Livepatch rules (reference §4): the strategy's own claim that the trace is complete. */
  reliable: boolean;
  /** Stack types in the order the walk visited them. */
  stacks: StackType[];
  /** The walk stopped at a saved bp with bit 0 set that this strategy does not decode (the kernel would have). */
  stoppedAtEncodedBp?: boolean;
  /** ORC: where the full user-mode pt_regs that ended the trace sit (they produce no frame). */
  userRegsAt?: bigint;
  /**
   * With UnwindOptions.trail: every stack word the walk read, in order (a word outside the captured
   * window included, when that is where it stopped). The path a picture of the stack draws.
   */
  reads?: WordRead[];
}

export interface UnwindOptions {
  /** At most this many frames (start frame included). Default 128. */
  maxFrames?: number;
  /** The sample's stacks, already indexed: checkSample builds this once for all strategies. */
  space?: StackSpace;
  /** Record the words read (UnwindResult.reads). Off on the checking hot path; the trace view turns it on. */
  trail?: boolean;
}
