// kernel_entry: the 2016 proposal. Entry code builds pt_regs, pushes the address of a dummy
// function kernel_entry as a fake return address, then `push %rbp; mov %rsp,%rbp` and calls the
// handler. A frame whose return address is kernel_entry therefore has pt_regs right above it.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { FRAME_HEADER_SIZE } from '../stack/layout.ts';
import type { StrategyName, UnwindOptions } from './types.ts';
import { CALL, FrameWalker, type FrameAction } from './frame-walker.ts';
import type { Strategy } from './unwinder.ts';

class KernelEntryWalker extends FrameWalker {
  readonly name: StrategyName = 'kernel_entry';
  constructor(sample: Sample, profile: KernelProfile, opts?: UnwindOptions) {
    super(sample, profile, opts);
  }

  protected onFrame(retS: number): FrameAction {
    const ke = this.profile.kernelEntry;
    if (ke !== undefined && retS === ke) return { kind: 'regs', regs: this.bp + FRAME_HEADER_SIZE };
    if (this.lastRetStub) {
      return {
        kind: 'stop', reason: 'pt_regs_not_decoded',
        message: ke === undefined
          ? 'an entry stub called this handler, but the kernel has no kernel_entry function to mark where pt_regs are'
          : 'an entry stub called this handler, but the next frame is not the kernel_entry marker frame',
      };
    }
    return CALL;
  }
}

export const kernelEntryStrategy: Strategy = {
  name: 'kernel_entry',
  summary: 'a fake return address to the dummy kernel_entry function marks pt_regs right above its frame',
  create: (s, p, o) => new KernelEntryWalker(s, p, o),
};
