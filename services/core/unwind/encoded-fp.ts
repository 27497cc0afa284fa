// encoded_fp: what Linux adopted (v4.10, ENCODE_FRAME_POINTER in arch/x86/include/asm/frame.h):
// entry code sets rbp = &pt_regs | 1 before calling the C handler, so the handler's saved bp has
// bit 0 set and points at pt_regs (decode_frame_pointer in unwind_frame.c).
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { StrategyName, UnwindOptions } from './types.ts';
import { CALL, FrameWalker, type FrameAction } from './frame-walker.ts';
import type { Strategy } from './unwinder.ts';

class EncodedFpWalker extends FrameWalker {
  readonly name: StrategyName = 'encoded_fp';
  constructor(sample: Sample, profile: KernelProfile, opts?: UnwindOptions) {
    super(sample, profile, opts);
    this.decodesEncodedBp = true;
  }

  protected onFrame(retS: number): FrameAction {
    if (this.profile.kernelEntry !== undefined && retS === this.profile.kernelEntry) {
      return notDecoded('the return address is the dummy kernel_entry: this kernel marks entries with a fake frame, which encoded_fp does not decode');
    }
    return CALL;
  }

  /** A handler called from an entry stub must have saved an encoded bp; a plain one means this kernel does not encode. */
  protected override beforeFollow(_hi: number, lo: number): FrameAction | undefined {
    if (this.regs < 0 && this.lastRetStub && (lo & 1) === 0) {
      return notDecoded('the handler called from an entry stub saved a bp without bit 0 set: this kernel does not encode &pt_regs in the frame pointer');
    }
    return undefined;
  }
}

function notDecoded(message: string): FrameAction {
  return { kind: 'stop', reason: 'pt_regs_not_decoded', message };
}

export const encodedFpStrategy: Strategy = {
  name: 'encoded_fp',
  summary: 'saved bp with bit 0 set points to pt_regs (Linux since v4.10)',
  create: (s, p, o) => new EncodedFpWalker(s, p, o),
};
