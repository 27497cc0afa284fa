// fp: the plain frame-pointer walk with no knowledge of entries — the baseline that shows what is
// lost without one (the v4.9 unwinder). At an entry it silently walks on into the interrupted
// frame's caller, losing the interrupted function, which only pt_regs holds.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { StrategyName, UnwindOptions } from './types.ts';
import { CALL, FrameWalker, type FrameAction } from './frame-walker.ts';
import type { Strategy } from './unwinder.ts';

class FpWalker extends FrameWalker {
  readonly name: StrategyName = 'fp';
  constructor(sample: Sample, profile: KernelProfile, opts?: UnwindOptions) {
    super(sample, profile, opts);
    this.tripwires = false;
  }
  protected onFrame(): FrameAction {
    return CALL;
  }
}

export const fpStrategy: Strategy = {
  name: 'fp',
  summary: 'plain frame-pointer walk (baseline): loses the interrupted function at every entry',
  create: (s, p, o) => new FpWalker(s, p, o),
};
