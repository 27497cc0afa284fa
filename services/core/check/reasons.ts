// The closed list of reasons an unwind failed or a verdict is not exact. Each mirrors a check the
// kernel makes (reference/kernel-unwinders.md §9) or names the way a trace differs from the truth.
// docs/verdicts.md documents every one with an example and the kernel rule or warning it mirrors.

export const REASONS = [
  // The walk stopped: the kernel's own rules (update_stack_state, get_stack_info, __kernel_text_address)
  'bad_frame_pointer', // next bp (or regs->bp) lies on no stack reachable from here, or is misaligned
  'frame_out_of_bounds', // a frame header or pt_regs straddles the end of its stack
  'bad_stack_link', // the word linking this stack to the one it interrupted points nowhere known
  'stack_recursion', // the chain leads back to a stack type already visited
  'frame_not_ascending', // a frame lies below the end of the previous one on the same stack (a loop)
  'non_text_return_address', // a return address that is not kernel text
  'pt_regs_not_decoded', // an entry was crossed that this strategy cannot decode on this kernel
  'did_not_reach_end', // a null frame pointer before the bottom of the task stack
  'depth_limit', // more frames than the limit (perf stores at most 127)
  'not_captured', // the walk needs stack bytes the sample did not capture
  'no_regs', // the sample has no registers or no stack memory to unwind
  'orc_undefined', // ORC: the entry for the ip is undefined (unwind_orc.c: goto err)
  'orc_bad_entry', // ORC: an entry that cannot be applied: unknown register or type, or a needed register not saved ("missing R10 value")
  'orc_off_stack', // ORC: the CFA, return slot or pt_regs it computed lie on no known stack ("can't access registers")
  'orc_end_hint', // ORC: an end-of-stack entry in the middle of a stack that goes on (entry code, retpoline thunks)
  'section_mismatch', // ORC and the section strategy read an entry boundary differently (issue 7 cross-check)
  'no_frame_pointers', // a frame-pointer strategy on a kernel built without frame pointers: not applicable
  'encoded_entry_window', // section on a build that also encodes rbp, at an instant where rbp itself is &pt_regs|1: encoded_fp's to read (not applicable)
  // The walk ended but the trace differs from the reference (ground truth or host callchain)
  'missing_interrupted_frame', // the function an entry interrupted (regs->ip) is missing
  'missing_caller', // a caller is missing outside any tolerated window
  'extra_frame', // a frame that is not in the reference
  'wrong_frame', // frames both missing and extra: the trace went a different way
  // The walk reported every frame, then stopped where the kernel's own unwinder is silent (verdict
  // tolerated; check/silent-stops.ts has the kernel source of each window)
  'stopped_in_entry_code', // the ip it stopped at is in .entry.text (unwind_frame.c: got_irq && in_entry_code)
  'stopped_before_first_frame', // the interrupted code ran below the first frame at the task stack's bottom
  'stopped_in_head_code', // boot or CPU bring-up code (head_64.S), the bottom of an idle task's stack
  'stopped_in_lossy_window', // every frame lost lies in a window the reference documents as lossy (prologue, epilogue, leaf, entry code), and the stop follows from it
] as const;
export type Reason = (typeof REASONS)[number];

/** Reasons after which a strategy produced no meaningful trace at all. */
export const ERROR_REASONS: ReadonlySet<Reason> = new Set(['pt_regs_not_decoded', 'no_regs']);

export const VERDICTS = [
  'exact', // equals the reference
  'tolerated', // differs only in frames the kernel documents as lossy at this instant (prologue, ...)
  'consistent', // no reference to compare with, and every invariant held to a valid end
  'missing_frames',
  'extra_frames',
  'wrong_frames',
  'truncated', // a correct prefix, then the walk stopped (reason says why)
  'error', // the strategy could not unwind this sample (reason says why)
  'entry_mismatch', // the ORC trace ended validly but an entry boundary disagrees with the section strategy's reading
  'not_applicable', // the strategy does not apply to this kernel (reason says why); not a failure
] as const;
export type Verdict = (typeof VERDICTS)[number];

export const GOOD_VERDICTS: ReadonlySet<Verdict> = new Set(['exact', 'tolerated', 'consistent', 'not_applicable']);
