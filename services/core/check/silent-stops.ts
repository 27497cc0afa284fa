// Where the kernel's own frame-pointer unwinder stops without a word (unwind_frame.c, the
// `bad_address:` path of unwind_next_frame; reference/kernel-unwinders.md §9 rule 17). A walk that
// reported every frame and then stopped in one of these windows did what the kernel does: the
// verdict is tolerated with the window as its reason, in check, the workers, the metrics and the
// sweep alike (they all go through judge()).
//
// The windows, each from the kernel source:
// - stopped_in_entry_code: `state->got_irq && in_entry_code(state->ip)`. A sample always starts
//   from registers (perf passes the NMI's regs), so got_irq holds; state->ip is the ip of the frame
//   the walk was leaving when it failed: the last frame it reported. in_entry_code is
//   [__entry_text_start, __entry_text_end), which since v5.8 also brackets the IDT stubs.
// - stopped_before_first_frame: `state->regs && regs->sp >= last_aligned_frame(state) &&
//   regs->sp < task_pt_regs(task)`: the interrupted code ran at the very bottom of the task stack,
//   before the first C function's frame existed.
// - stopped_in_head_code: the boot and CPU bring-up code of head_64.S, whose ORC data marks the end
//   of the stack (UNWIND_HINT_END_OF_STACK, UNWIND_HINT_EMPTY before v6.4): the bottom of an idle
//   task's stack, which the frame-pointer walk cannot recognise because head code sets up no frame.
//
// Only the frame-pointer family is judged by these: the ORC unwinder has hints for entry code, and
// where its data says stop, the table says so (orc_end_hint), which is a finding, not a silence.
import type { KernelProfile } from '../symbols/profile.ts';
import { FRAME_HEADER_SIZE, PT_REGS_SIZE, WORD } from '../stack/layout.ts';
import type { Regs, Sample } from '../dump/sample.ts';
import type { UnwindResult } from '../unwind/types.ts';
import type { Reason } from './reasons.ts';

export const SILENT_STOP_REASONS = ['stopped_in_entry_code', 'stopped_before_first_frame', 'stopped_in_head_code'] as const;
export type SilentStopReason = (typeof SILENT_STOP_REASONS)[number];

/** head_64.S functions that begin a CPU's stack (their ORC entries are end-of-stack hints). */
export const HEAD_CODE_FUNCTIONS: ReadonlySet<string> = new Set([
  'startup_64', 'secondary_startup_64', 'secondary_startup_64_no_verify', 'common_startup_64', 'start_cpu0',
]);

/** GCC_REALIGN_WORDS on x86-64: a realigned first frame sits one word lower (last_aligned_frame). */
const REALIGN_WORDS = 1;

/**
 * The window the kernel is silent in when this walk stopped, or undefined when the stop is one the
 * kernel would warn about (or the walk did not stop in error at all). Only the place of the stop
 * is looked at: whether the trace was complete up to there is the caller's judgement.
 */
export function silentStop(profile: KernelProfile, sample: Sample, u: UnwindResult): SilentStopReason | undefined {
  // A bit-0 bp is no stop for the kernel's unwinder (it decodes it): a strategy that cannot is
  // not in the kernel's silent window, whatever the ip.
  if (u.outcome !== 'error' || u.strategy === 'orc' || u.stoppedAtEncodedBp || !FP_STOPS.has(u.reason!)) return undefined;
  const frames = u.frames;
  const last = frames[frames.length - 1];
  if (last === undefined) return undefined;
  const entry = profile.sections.entry;
  if (entry !== undefined && last.ipS >= entry.startS && last.ipS < entry.endS) return 'stopped_in_entry_code';
  const i = profile.symbols.indexOfSigned(last.kind === 'call' ? last.ipS - 1 : last.ipS);
  if (i >= 0 && HEAD_CODE_FUNCTIONS.has(profile.symbols.names[i]!)) return 'stopped_in_head_code';
  if (belowFirstFrame(sample, lastRegs(sample, u))) return 'stopped_before_first_frame';
  return undefined;
}

/** The stops update_stack_state() makes (bad_address); the others are not this path of the kernel. */
const FP_STOPS: ReadonlySet<Reason> = new Set(['bad_frame_pointer', 'did_not_reach_end', 'frame_out_of_bounds', 'frame_not_ascending', 'bad_stack_link', 'stack_recursion']);

/** state->regs when the walk failed: the last decoded pt_regs, else the sample's own registers. */
function lastRegs(sample: Sample, u: UnwindResult): Regs | undefined {
  const last = u.frames[u.frames.length - 1]!;
  if (last.kind === 'regs') return last.regs;
  if (last.kind === 'start') return sample.regs;
  return undefined;
}

function belowFirstFrame(sample: Sample, regs: Regs | undefined): boolean {
  const sp = regs?.sp;
  if (sp === undefined) return false;
  for (const st of sample.stacks) {
    if (st.type !== 'task' || sp < st.begin || sp >= st.end) continue;
    const taskPtRegs = st.end - BigInt(PT_REGS_SIZE);
    const lastAlignedFrame = taskPtRegs - BigInt(FRAME_HEADER_SIZE + WORD * REALIGN_WORDS);
    return sp >= lastAlignedFrame && sp < taskPtRegs;
  }
  return false;
}
