// A sampling run on the live guest: take samples (optionally after switching QEMU to
// single-stepping), check each with every strategy the build supports (ORC when the vmlinux has
// tables; the frame-pointer strategies answer not_applicable on a kernel without frame pointers),
// cross-check every entry boundary with the section strategy's reading — against ORC's pt_regs,
// or on a frame-pointer kernel without ORC against encoded_fp's — and time each step. Used by `stacksanity host qemu`, the integration test and the benchmark.
import { checkSample, type SampleCheck } from '../core/check/checker.ts';
import type { Sample } from '../core/dump/sample.ts';
import { crossCheckEntries, type EntryCrossing } from '../core/unwind/orc.ts';
import { StackSpace } from '../core/unwind/space.ts';
import { STRATEGIES, type StrategyName } from '../core/unwind/types.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import type { UnwindResult } from '../core/unwind/types.ts';
import { PT_REGS_SIZE } from '../core/stack/layout.ts';
import type { RealHostSession } from './session.ts';
import type { StepTimes, TakenSample } from './sampler.ts';

export interface CheckedSample extends TakenSample {
  check: SampleCheck;
  crossings: EntryCrossing[];
  /** ms to unwind and judge it (all strategies). */
  unwindMs: number;
  singleStep: boolean;
}

export interface RunOptions {
  samples?: number;
  durationMs?: number;
  singleStep?: boolean;
  strategies?: readonly StrategyName[];
  onSample?: (c: CheckedSample, i: number) => void;
}

export const HOST_STRATEGIES: readonly StrategyName[] = [...STRATEGIES, 'orc'];

/** The strategies a build can be judged with: orc only where the vmlinux gave tables. */
export function strategiesFor(profile: KernelProfile): readonly StrategyName[] {
  return profile.orc ? HOST_STRATEGIES : STRATEGIES;
}

/**
 * The walk whose entry boundaries the section strategy is held against: ORC where there are tables
 * (its pt_regs come from objtool's hints, not from the stack's shape); else encoded_fp on a
 * frame-pointer kernel (its pt_regs come from the bit-0 bp the entry code wrote, not from where a
 * return address lies).
 */
export function crossReferenceOf(profile: KernelProfile): 'orc' | 'encoded_fp' | undefined {
  if (profile.orc) return 'orc';
  return profile.framePointers !== false && profile.hasEntrySection() ? 'encoded_fp' : undefined;
}

export async function runSampling(session: RealHostSession, o: RunOptions): Promise<CheckedSample[]> {
  if (o.singleStep) await session.singleStep(true);
  const out: CheckedSample[] = [];
  const t0 = performance.now();
  const max = o.samples ?? (o.durationMs !== undefined ? Infinity : 100);
  while (out.length < max && (o.durationMs === undefined || performance.now() - t0 < o.durationMs)) {
    const taken = await session.take();
    taken.sample.host = o.singleStep ? 'qemu-tcg-singlestep' : 'qemu-tcg';
    const t = performance.now();
    const space = new StackSpace(taken.sample);
    const check = checkSample(taken.sample, session.profile, o.strategies ?? strategiesFor(session.profile), { space });
    const refName = crossReferenceOf(session.profile);
    const ref = check.results.find((r) => r.strategy === refName);
    const crossings = ref ? crossCheckEntries(session.profile, refName === 'orc' ? ref.unwind : withSyscallRegs(ref.unwind, taken.sample, session.profile), space, refName === 'orc' ? 'ORC' : refName) : [];
    const c: CheckedSample = { ...taken, check, crossings, unwindMs: performance.now() - t, singleStep: o.singleStep ?? false };
    out.push(c);
    o.onSample?.(c, out.length - 1);
  }
  if (o.singleStep) await session.singleStep(false);
  return out;
}

/**
 * A frame-pointer walk that ended at user mode crossed one more boundary than it reports: the
 * syscall (or exception) from user mode, whose pt_regs the entry code never encodes. The kernel's
 * unwinder takes them to be task_pt_regs() once bp reaches the last task frame (unwind_frame.c,
 * "Entry code doesn't encode the regs pointer for syscalls"); so does this, from the sampled task
 * stack's top, so that the section cross-check sees the syscall boundary too. Only when the last
 * return address is in the entry text: a new task's first return to user mode comes from
 * ret_from_fork, which 6.1 keeps in .text, over the pt_regs copy_thread() wrote — no entry
 * happened on that stack, so there is no boundary to hold the section strategy to.
 */
export function withSyscallRegs(u: UnwindResult, sample: Sample, profile: KernelProfile): Pick<UnwindResult, 'frames' | 'userRegsAt'> {
  const last = u.frames[u.frames.length - 1];
  if (u.outcome !== 'user' || u.userRegsAt !== undefined || last?.kind !== 'call' || last.stack !== 'task') return u;
  if (!profile.inEntrySectionS(last.ipS)) return u;
  const task = sample.stacks.find((s) => s.type === 'task');
  return task ? { frames: u.frames, userRegsAt: task.end - BigInt(PT_REGS_SIZE) } : u;
}

export interface StepStats {
  n: number;
  median: number;
  p90: number;
  max: number;
}

function stats(xs: number[]): StepStats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
  return { n: s.length, median: q(0.5), p90: q(0.9), max: s[s.length - 1] ?? NaN };
}

export interface RunSummary {
  samples: number;
  where: Record<string, number>;
  orcVerdicts: Record<string, number>;
  orcOutcomes: Record<string, number>;
  /** Per strategy: verdict(/reason) → count (not_applicable ones left out). */
  verdicts: Partial<Record<StrategyName, Record<string, number>>>;
  crossings: Record<string, number>;
  steps: Record<keyof StepTimes | 'unwind' | 'total', StepStats>;
}

export function summarize(run: CheckedSample[]): RunSummary {
  const count = (m: Record<string, number>, k: string): void => {
    m[k] = (m[k] ?? 0) + 1;
  };
  const where: Record<string, number> = {};
  const orcVerdicts: Record<string, number> = {};
  const orcOutcomes: Record<string, number> = {};
  const crossings: Record<string, number> = {};
  const verdicts: Partial<Record<StrategyName, Record<string, number>>> = {};
  for (const c of run) {
    count(where, c.where);
    for (const r of c.check.results) {
      if (r.verdict === 'not_applicable' && r.reason === 'no_frame_pointers') continue;
      count((verdicts[r.strategy] ??= {}), r.reason ? `${r.verdict}/${r.reason}` : r.verdict);
    }
    const orc = c.check.results.find((r) => r.strategy === 'orc');
    if (orc) {
      count(orcVerdicts, orc.reason ? `${orc.verdict}/${orc.reason}` : orc.verdict);
      count(orcOutcomes, orc.unwind.outcome);
    }
    for (const x of c.crossings) count(crossings, `${x.result} ${x.entry}`);
  }
  return {
    samples: run.length, where, orcVerdicts, orcOutcomes, verdicts, crossings,
    steps: {
      stop: stats(run.map((c) => c.times.stop)),
      regs: stats(run.map((c) => c.times.regs)),
      memory: stats(run.map((c) => c.times.memory)),
      unwind: stats(run.map((c) => c.unwindMs)),
      total: stats(run.map((c) => c.times.stop + c.times.regs + c.times.memory + c.unwindMs)),
    },
  };
}

export function samplesOf(run: CheckedSample[]): Sample[] {
  return run.map((c) => c.sample);
}
