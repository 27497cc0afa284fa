// section: the 2016 proposal's other form. Entry stubs that call the C handlers live in their own
// text section (__irqentry_text on v5.8+, else __entry_text), so a return address there means the
// caller was a stub and pt_regs sit at a fixed, per-entry-type offset from that return slot; the
// stub's symbol names the entry ("page fault, RIP=...").
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { PT_REGS_SIZE } from '../stack/layout.ts';
import { signedOf } from '../u64.ts';
import type { StrategyName, UnwindOptions } from './types.ts';
import { CALL, FrameWalker, type FrameAction } from './frame-walker.ts';
import type { Strategy } from './unwinder.ts';

class SectionWalker extends FrameWalker {
  readonly name: StrategyName = 'section';
  constructor(sample: Sample, profile: KernelProfile, opts?: UnwindOptions) {
    super(sample, profile, opts);
  }

  protected override precondition(): string | undefined {
    return this.profile.hasEntrySection()
      ? undefined
      : 'the kernel profile has no __entry_text/__irqentry_text markers, so the section strategy cannot recognise entries';
  }

  protected onFrame(retS: number): FrameAction {
    const ke = this.profile.kernelEntry;
    if (ke !== undefined && retS === ke) {
      return { kind: 'stop', reason: 'pt_regs_not_decoded', message: 'the return address is the dummy kernel_entry: this entry stub is not in the entry section' };
    }
    if (!this.isStubReturn(retS) && !this.inEnclosingEntryText(retS)) return CALL;
    const stub = this.profile.stubAtS(retS);
    const slot = this.bp + 8;
    // On a kernel_entry kernel the stub's caller frame is the fake kernel_entry frame, not pt_regs:
    // its return slot (two words above ours) holds the dummy function's address.
    if (ke !== undefined) this.note(slot + 16, 'ret');
    if (ke !== undefined && this.space.read(slot + 16) && signedOf(this.space.hi, this.space.lo) === ke) {
      return { kind: 'stop', reason: 'pt_regs_not_decoded', message: 'this stub built a kernel_entry marker frame, not pt_regs at a fixed offset: the section strategy cannot decode this kernel\'s entries' };
    }
    if (!stub.indirect) return { kind: 'call_then_regs', regs: slot + stub.offset };
    // Indirect: the word there is a pointer to pt_regs (the 2016 IRQ path pushed the old rsp).
    this.note(slot + stub.offset, 'link');
    if (!this.space.read(slot + stub.offset)) {
      return { kind: 'stop', reason: 'not_captured', message: 'the pt_regs pointer next to the stub return address was not captured' };
    }
    const at = this.chainLocate(this.space.hi, this.space.lo, PT_REGS_SIZE, -1, 0);
    if (at < 0) return { kind: 'stop', reason: 'pt_regs_not_decoded', message: 'the pt_regs pointer saved by the entry stub points nowhere on the sample\'s stacks' };
    return { kind: 'call_then_regs', regs: at };
  }

  /**
   * Where __irqentry_text lies inside .entry.text (6.1: the idtentry stubs), the stubs outside it
   * call their C handlers the same way, rsp at pt_regs: asm_exc_nmi (exc_nmi, from
   * end_repeat_nmi and the user-mode path), the paranoid #DB/#MC/#DF paths, entry_SYSCALL_64 and
   * ret_from_fork. The section design's unwinder (patches/kernel/section/2-unwinder.patch) takes
   * any return address in .entry.text; with __irqentry_text alone a kernel-mode NMI is not decoded.
   */
  private inEnclosingEntryText(retS: number): boolean {
    const { entry, irqentry } = this.profile.sections;
    if (!entry || !irqentry || irqentry.startS < entry.startS || irqentry.endS > entry.endS) return false;
    return retS >= entry.startS && retS < entry.endS;
  }

  /** An encoded bp outside a stub frame is an entry this strategy cannot see: its stub is outside the section. */
  protected override beforeFollow(_hi: number, lo: number): FrameAction | undefined {
    if ((lo & 1) !== 0) {
      return { kind: 'stop', reason: 'pt_regs_not_decoded', message: 'a saved bp with bit 0 set marks an entry whose stub is not in the entry section' };
    }
    return undefined;
  }
}

export const sectionStrategy: Strategy = {
  name: 'section',
  summary: 'a return address inside the entry section means pt_regs at a known offset; names the entry',
  create: (s, p, o) => new SectionWalker(s, p, o),
};
