import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { encodedFpStrategy } from './encoded-fp.ts';
import { fpStrategy } from './fp.ts';
import { kernelEntryStrategy } from './kernel-entry.ts';
import { orcStrategy } from './orc.ts';
import { sectionStrategy } from './section.ts';
import type { StrategyName, UnwindOptions, UnwindResult } from './types.ts';
import type { Strategy } from './unwinder.ts';

export const strategies: ReadonlyMap<StrategyName, Strategy> = new Map<StrategyName, Strategy>([
  ['fp', fpStrategy],
  ['kernel_entry', kernelEntryStrategy],
  ['section', sectionStrategy],
  ['encoded_fp', encodedFpStrategy],
  ['orc', orcStrategy],
]);

export function strategyByName(name: string): Strategy | undefined {
  return strategies.get(name as StrategyName);
}

/** The plain loop over unwind_start / unwind_next_frame / unwind_done. */
export function unwind(sample: Sample, profile: KernelProfile, strategy: StrategyName | Strategy, opts?: UnwindOptions): UnwindResult {
  const s = typeof strategy === 'string' ? strategies.get(strategy) : strategy;
  if (!s) throw new Error(`unknown strategy '${String(strategy)}' (known: ${[...strategies.keys()].join(', ')})`);
  const u = s.create(sample, profile, opts);
  u.start();
  while (!u.done()) u.next();
  return u.result();
}

export type { UnwindResult, Frame, StrategyName } from './types.ts';
