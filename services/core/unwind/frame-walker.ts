// The frame-pointer walk shared by fp, kernel_entry, section and encoded_fp: it owns the kernel's
// rules (arch/x86/kernel/unwind_frame.c update_stack_state and get_stack_info): every frame lies
// wholly on a known stack, stacks are entered only along their link chain and each at most once,
// frames only move up, return addresses are kernel text, and the walk ends at the task stack's
// top. A strategy only decides how an entry boundary is recognised and where pt_regs are.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { EntryType } from '../symbols/entry-types.ts';
import type { Reason } from '../check/reasons.ts';
import { FRAME_HEADER_SIZE, PT_REGS_FIELDS, PT_REGS_OFFSET, PT_REGS_SIZE, type StackType } from '../stack/layout.ts';
import type { FrameKind, Regs } from '../dump/sample.ts';
import { bigFromHalves, bigFromSigned, formatHex64, signedOf } from '../u64.ts';
import { StackSpace, type SpaceStack } from './space.ts';
import type { Frame, Outcome, StrategyName, UnwindOptions, UnwindResult, WordRead, WordRole } from './types.ts';
import { DEFAULT_MAX_FRAMES, type Unwinder } from './unwinder.ts';

const OFF_BP = PT_REGS_OFFSET.bp;
const OFF_IP = PT_REGS_OFFSET.ip;
const OFF_CS = PT_REGS_OFFSET.cs;
/** GCC stack realignment (DRAP) pushes a duplicate return address: the last frame sits one word lower. */
const GCC_REALIGN_WORDS = 1;

/** What a strategy makes of the frame the walk just reached, given its return address. */
export type FrameAction =
  | { kind: 'call' } // an ordinary return address
  | { kind: 'call_then_regs'; regs: number } // report it, then pt_regs at this linear position
  | { kind: 'regs'; regs: number } // this frame is an entry marker: pt_regs here, nothing reported
  | { kind: 'stop'; reason: Reason; message: string };

/** The common answer, shared: onFrame runs once per frame and the walk only reads actions. */
export const CALL: FrameAction = Object.freeze({ kind: 'call' });

export abstract class FrameWalker implements Unwinder {
  abstract readonly name: StrategyName;
  /** encoded_fp: a saved bp with bit 0 set is &pt_regs | 1. */
  protected decodesEncodedBp = false;
  /** Whether meeting an entry this strategy cannot decode stops the walk (all but the fp baseline). */
  protected tripwires = true;

  protected readonly space: StackSpace;
  protected readonly frames: Frame[] = [];
  protected cur!: SpaceStack;
  private visited = 0;
  private readonly order: StackType[] = [];
  /** Linear position of the current frame header, or -1 when the current frame is pt_regs. */
  protected bp = -1;
  protected regs = -1;
  private regsUser = false;
  private prevEnd = -1;
  /** pt_regs a strategy located from the last frame, to be entered on the next step. */
  private nextRegs = -1;
  /** Signed value of the last return address reported, and whether it returned into an entry stub. */
  protected lastRetS = NaN;
  protected lastRetStub = false;
  private kernelRegsCrossed = false;
  /** The walk met a bit-0 bp it does not decode (set before the stop it causes). */
  private stoppedAtEncoded = false;
  private ended = false;
  private outcome: Outcome = 'error';
  private reason: Reason | undefined;
  private message: string | undefined;
  private readonly maxFrames: number;
  /** The words read, when the caller asked for the trail (UnwindOptions.trail). */
  private readonly trail: WordRead[] | undefined;

  constructor(
    protected readonly sample: Sample,
    protected readonly profile: KernelProfile,
    opts: UnwindOptions = {},
  ) {
    this.space = opts.space ?? new StackSpace(sample);
    this.maxFrames = opts.maxFrames ?? DEFAULT_MAX_FRAMES;
    this.trail = opts.trail ? [] : undefined;
  }

  /** Hook: the walk reached the frame at this.bp whose return address is (hi, lo) = retS. */
  protected abstract onFrame(retS: number): FrameAction;

  /** Hook, before following a saved bp: a chance to refuse an entry this strategy cannot decode. */
  protected beforeFollow(_hi: number, _lo: number): FrameAction | undefined {
    return undefined;
  }

  /** Hook: a precondition on the profile (the section strategy needs the entry-section markers). */
  protected precondition(): string | undefined {
    return undefined;
  }

  done(): boolean {
    return this.ended;
  }

  start(): void {
    const r = this.sample.regs;
    const pre = this.precondition();
    if (r?.ip === undefined || r.sp === undefined) {
      this.fail('no_regs', 'the sample carries no registers to unwind');
      return;
    }
    const space = this.space;
    space.sampledRegs(r);
    const spLin = space.regSpLin;
    if (space.regUser) {
      // user_mode(regs): the sample was taken in user space; there is no kernel stack to walk.
      this.push({ ip: r.ip, ipS: space.regIpS, kind: 'start', stack: spLin >= 0 ? space.stackAt(spLin).type : 'task' });
      this.end('user');
      return;
    }
    if (spLin < 0) {
      // Kernel mode on no captured stack: e.g. the first instruction of entry_SYSCALL_64, which
      // still runs on the user's rsp (seen on the real 6.1 FP kernel, issue 13). The kernel's
      // unwinder starts from bp, not sp, finds it on no stack and ends without a word
      // (__unwind_start); the walk reports the sampled ip and stops as a frame off every stack, so
      // that the silent-stop rules judge the place (entry code) like any other stop.
      this.push({ ip: r.ip, ipS: space.regIpS, kind: 'start', stack: 'task' });
      this.fail('frame_out_of_bounds', `sp ${formatHex64(r.sp)} lies on none of the sample's stacks`);
      return;
    }
    this.cur = space.stackAt(spLin);
    this.visit(this.cur);
    this.push({ ip: r.ip, ipS: space.regIpS, kind: 'start', stack: this.cur.type });
    if (pre !== undefined) {
      this.fail('pt_regs_not_decoded', pre);
      return;
    }
    // Hardware-sampled regs are an interrupt's pt_regs: on a frame-pointer kernel a trace through
    // kernel-mode regs is never reliable (arch_stack_walk_reliable). A 'sched' sample is a task
    // stopped at a call site, as livepatch sees it.
    if (this.sample.trigger !== 'sched') this.kernelRegsCrossed = true;
    if (r.bp === undefined) {
      this.fail('no_regs', 'the sample has no bp register');
      return;
    }
    if (!this.follow(space.regBpHi, space.regBpLo)) return;
    // Frames below the sampled sp are stale (the kernel's first_frame rule in __unwind_start).
    const spStack = space.stackAt(spLin);
    while (!this.ended && this.bp >= 0 && space.stackAt(this.bp) === spStack && this.bp < spLin) {
      if (!this.move()) return;
    }
    this.emit();
  }

  next(): boolean {
    if (this.ended) return false;
    // Move first: a trace of exactly maxFrames frames that ends here is complete, not cut.
    if (!this.move()) return false;
    if (this.frames.length >= this.maxFrames) {
      this.stop('depth_limit', `more than ${this.maxFrames} frames`, 'depth_limit');
      return false;
    }
    this.emit();
    return !this.ended;
  }

  result(): UnwindResult {
    const out: UnwindResult = {
      strategy: this.name,
      frames: this.frames,
      outcome: this.outcome,
      reliable: this.ended && (this.outcome === 'user' || this.outcome === 'kthread' || this.outcome === 'task_top') && !this.kernelRegsCrossed,
      stacks: this.order,
    };
    if (this.reason !== undefined) out.reason = this.reason;
    if (this.message !== undefined) out.message = this.message;
    if (this.stoppedAtEncoded) out.stoppedAtEncodedBp = true;
    if (this.trail) out.reads = this.trail;
    return out;
  }

  // --- the walk -------------------------------------------------------------------------------

  /** unwind_next_frame without reporting: moves to the next frame or pt_regs. False once ended. */
  private move(): boolean {
    if (this.regs >= 0 && this.regsUser) return this.end('user');
    if (this.bp >= 0 && this.isLastTaskFrame()) return this.lastTaskFrame();
    if (this.nextRegs >= 0) {
      const at = this.nextRegs;
      this.nextRegs = -1;
      return this.enterRegs(at);
    }
    const from = this.regs >= 0 ? this.regs + OFF_BP : this.bp;
    this.note(from, this.regs >= 0 ? 'regs' : 'bp');
    if (!this.space.read(from)) return this.notCaptured(from, this.regs >= 0 ? "regs->bp" : 'saved bp');
    return this.follow(this.space.hi, this.space.lo);
  }

  /** update_stack_state(next_bp): the saved bp (or regs->bp) given as halves. */
  private follow(hi: number, lo: number): boolean {
    // A bit-0 bp: whatever follows, the kernel's own unwinder would have decoded it (§9 rule 11).
    // Set before a strategy's own refusal (beforeFollow) so that every stop here carries it.
    if ((lo & 1) !== 0) this.stoppedAtEncoded = !this.decodesEncodedBp;
    const refused = this.beforeFollow(hi, lo);
    if (refused) return this.act(refused);
    if (hi === 0 && lo === 0) {
      return this.stop('did_not_reach_end', `${this.badBp(0, 0)}: the frame chain ends before the bottom of the task stack`);
    }
    if ((lo & 1) !== 0) {
      if (this.decodesEncodedBp) {
        const at = this.chainLocate(hi, lo & ~1, PT_REGS_SIZE, hi, lo);
        return at >= 0 && this.enterRegs(at);
      }
      if (this.tripwires) {
        return this.stop('pt_regs_not_decoded', `saved bp ${formatHex64(bigFromHalves(hi, lo))} has bit 0 set: this kernel encodes &pt_regs in the frame pointer at entries, which the ${this.name} strategy does not decode`);
      }
    }
    if ((lo & 7) !== 0 && this.space.locate(hi, lo, 1) >= 0) {
      // On a stack but not word aligned: the kernel does not check this, but no frame is there.
      return this.stop('bad_frame_pointer', `${this.badBp(hi, lo)} (not 8-byte aligned)`);
    }
    const at = this.chainLocate(hi, lo, FRAME_HEADER_SIZE, hi, lo);
    if (at < 0) return false;
    if (!this.ascending(at)) return false;
    this.bp = at;
    this.regs = -1;
    this.prevEnd = at + FRAME_HEADER_SIZE;
    return true;
  }

  /** Enters pt_regs found at a linear position (already located on a stack of the chain). */
  private enterRegs(at: number): boolean {
    if (!this.space.fits(at, PT_REGS_SIZE)) {
      return this.stop('frame_out_of_bounds', `pt_regs at ${formatHex64(this.space.addressOf(at))} run past the end of the ${this.space.stackAt(at).type} stack`);
    }
    const s = this.space.stackAt(at);
    if (s !== this.cur) {
      // Reached through a saved pointer (indirect stub layout): the same chain rule applies.
      const a = this.space.addressOf(at);
      const lin = this.chainLocate(Number(a >> 32n), Number(a & 0xffffffffn), PT_REGS_SIZE, -1, 0);
      if (lin < 0) return false;
    }
    if (!this.ascending(at)) return false;
    this.note(at + OFF_CS, 'regs');
    if (!this.space.captured(at, PT_REGS_SIZE)) return this.notCaptured(at, 'pt_regs');
    this.regs = at;
    this.bp = -1;
    this.prevEnd = at + PT_REGS_SIZE;
    this.space.read(at + OFF_CS);
    if (this.space.hi !== 0 || this.space.lo > 0xffff) {
      // The CPU pushes a 16-bit selector zero-extended; anything wider means these are not pt_regs.
      return this.stop('pt_regs_not_decoded', `the pt_regs located at ${formatHex64(this.space.addressOf(at))} hold cs ${formatHex64(bigFromHalves(this.space.hi, this.space.lo))}, which no CPU pushes: the ${this.name} strategy found no pt_regs there`);
    }
    this.regsUser = (this.space.lo & 3) !== 0;
    if (!this.regsUser) {
      this.kernelRegsCrossed = true;
      // A kthread's partial regs from copy_thread() at task_pt_regs (reached through its encoded
      // frame pointer, §9 rule 16): unwind_next_frame ends there ("don't have any useful information").
      if (s.type === 'task' && at === s.base + s.size - PT_REGS_SIZE) return this.end('kthread');
    }
    return true;
  }

  /** Reports the frame the walk stands on. */
  private emit(): void {
    if (this.ended) return;
    if (this.regs >= 0) {
      if (this.regsUser) return; // user-mode regs end the kernel trace; next() ends it
      this.pushRegsFrame();
      return;
    }
    if (this.bp < 0) return;
    const slot = this.bp + 8;
    this.note(slot, 'ret');
    if (!this.space.read(slot)) {
      this.notCaptured(slot, 'return address');
      return;
    }
    const hi = this.space.hi;
    const lo = this.space.lo;
    const retS = signedOf(hi, lo);
    const action = this.onFrame(retS);
    if (action.kind === 'stop') {
      this.stop(action.reason, action.message);
      return;
    }
    if (action.kind === 'regs') {
      // User-mode pt_regs behind a kernel_entry frame end the trace like any user regs.
      if (this.enterRegs(action.regs) && !this.regsUser) this.pushRegsFrame();
      return;
    }
    if (!this.profile.isTextS(retS)) {
      this.stop('non_text_return_address', `unrecognized kernel stack return address ${formatHex64(bigFromHalves(hi, lo))} at ${formatHex64(this.space.addressOf(slot))}`);
      return;
    }
    // The stack the return address was read from: an indirect stub's onFrame may already have
    // followed the link to the stack its pt_regs pointer leads to.
    this.push(new WalkFrame(this.space, retS, 'call', this.space.stackAt(slot).type, slot, -1, undefined));
    this.lastRetS = retS;
    this.lastRetStub = this.isStubReturn(retS);
    if (action.kind === 'call_then_regs') this.nextRegs = action.regs;
  }

  private pushRegsFrame(): void {
    const at = this.regs;
    this.note(at + OFF_IP, 'regs');
    this.space.read(at + OFF_IP);
    const hi = this.space.hi;
    const lo = this.space.lo;
    const ipS = signedOf(hi, lo);
    if (!this.profile.isTextS(ipS)) {
      // __kernel_text_address() applies to regs->ip as to any return address (reference §9 rule 9).
      this.stop('non_text_return_address', `kernel-mode regs at ${formatHex64(this.space.addressOf(at))} hold ip ${formatHex64(bigFromHalves(hi, lo))}, which is not kernel text`);
      return;
    }
    const entry: EntryType = Number.isNaN(this.lastRetS) ? 'unknown' : this.profile.entryTypeAtS(this.lastRetS);
    this.push(new WalkFrame(this.space, ipS, 'regs', this.space.stackAt(at).type, at + OFF_IP, at, entry));
    this.lastRetS = NaN;
    this.lastRetStub = false;
  }

  /**
   * Where [addr, addr+len) lies, following the link chain from the current stack as the kernel
   * does (on_stack, then get_stack_info(info->next_sp)); -1 after stopping with a reason.
   */
  protected chainLocate(hi: number, lo: number, len: number, valueHi: number, valueLo: number): number {

    const lin = this.space.locate(hi, lo >>> 0, len);
    if (lin < 0) {
      if (this.space.locate(hi, lo >>> 0, 1) >= 0) {
        this.stop('frame_out_of_bounds', `${this.whatAt(hi, lo, valueHi, valueLo)}: the ${len}-byte ${len === FRAME_HEADER_SIZE ? 'frame' : 'pt_regs'} runs past the end of its stack`);
      } else {
        this.stop('bad_frame_pointer', `${this.whatAt(hi, lo, valueHi, valueLo)} (on none of the sample's stacks)`);
      }
      return -1;
    }
    const target = this.space.stackAt(lin);
    while (target !== this.cur) {
      const slot = this.space.linkSlot(this.cur);
      if (slot < 0) {
        this.stop('bad_frame_pointer', `${this.whatAt(hi, lo, valueHi, valueLo)} (on the ${target.type} stack, which the ${this.cur.type} stack does not link to)`);
        return -1;
      }
      this.note(slot, 'link');
      if (!this.space.read(slot)) {
        this.notCaptured(slot, `link word of the ${this.cur.type} stack`);
        return -1;
      }
      // get_stack_info(next_sp): the linked sp must lie on a stack, begin <= sp < end (in_task_stack,
      // in_irq_stack, in_exception_stack; reference §9 rules 1-3). An sp equal to a stack's end is
      // one past its last byte: the kernel finds no stack there.
      const link = this.space.locate(this.space.hi, this.space.lo, 1);
      if (link < 0) {
        const atEnd = this.space.locate(this.space.hi, this.space.lo, 0) >= 0;
        this.stop('bad_stack_link', `the ${this.cur.type} stack links to ${formatHex64(bigFromHalves(this.space.hi, this.space.lo))}, which is on no known stack${atEnd ? ' (it is the end of one, one past its last byte)' : ''}`);
        return -1;
      }
      const next = this.space.stackAt(link);
      if ((this.visited & next.typeBit) !== 0) {
        this.stop('stack_recursion', `stack recursion on stack type ${next.type}`);
        return -1;
      }
      this.visit(next);
      this.cur = next;
      // A new stack: the "only moves up" rule restarts there.
      this.prevEnd = -1;
    }
    return lin;
  }

  private ascending(at: number): boolean {
    if (this.prevEnd >= 0 && this.space.stackAt(at) === this.space.stackAt(this.prevEnd - 1) && at < this.prevEnd) {
      this.stop('frame_not_ascending', `frame at ${formatHex64(this.space.addressOf(at))} is below the end of the previous frame (${formatHex64(this.space.addressOf(this.prevEnd))}): the chain does not move up the stack`);
      return false;
    }
    return true;
  }

  /** is_last_task_frame(): the frame of the first C function, right under task_pt_regs. */
  private isLastTaskFrame(): boolean {
    if (this.cur.type !== 'task' || this.space.stackAt(this.bp) !== this.cur) return false;
    const regsAt = this.cur.base + this.cur.size - PT_REGS_SIZE;
    const last = regsAt - FRAME_HEADER_SIZE;
    if (this.bp === last) return true;
    if (this.bp === last - 8 * GCC_REALIGN_WORDS) {
      const a = this.space.readBig(this.bp + 8);
      const b = this.space.readBig(last + 8);
      return a !== undefined && a === b;
    }
    return false;
  }

  private lastTaskFrame(): boolean {
    const regsAt = this.cur.base + this.cur.size - PT_REGS_SIZE;
    this.note(regsAt + OFF_CS, 'regs');
    if (!this.space.read(regsAt + OFF_CS)) return this.end('task_top');
    // Syscall regs are user mode; a kthread's (and the idle task's) are zeroed kernel regs.
    return this.end((this.space.lo & 3) !== 0 ? 'user' : 'kthread');
  }

  /** A return into the section whose stubs build pt_regs (irqentry, else all entry text). */
  protected isStubReturn(retS: number): boolean {
    const sec = this.profile.sections;
    const r = sec.irqentry ?? sec.entry;
    return r !== undefined && retS >= r.startS && retS < r.endS;
  }

  // --- bookkeeping ----------------------------------------------------------------------------

  private act(a: FrameAction): boolean {
    if (a.kind === 'stop') return this.stop(a.reason, a.message);
    return true;
  }

  /** Records a word read for the trail; a no-op on the checking hot path. */
  protected note(lin: number, role: WordRole): void {
    if (this.trail !== undefined) this.trail.push({ addr: this.space.addressOf(lin), role });
  }

  private visit(s: SpaceStack): void {
    this.visited |= s.typeBit;
    this.order.push(s.type);
  }

  private push(f: Frame): void {
    this.frames.push(f);
  }

  /**
   * What failed to locate, for a message: a saved bp (valueHi >= 0) or a pt_regs pointer. Messages
   * are built only when the walk stops; the hot path makes no closure per step (tsx's keepNames
   * turns each into a defineProperty call).
   */
  private whatAt(hi: number, lo: number, valueHi: number, valueLo: number): string {
    return valueHi < 0 ? `pt_regs pointer ${formatHex64(bigFromHalves(hi, lo))}` : this.badBp(valueHi, valueLo);
  }

  /** The kernel's two warnings (unwind_frame.c), for a saved bp given as halves. */
  private badBp(hi: number, lo: number): string {
    const v = formatHex64(bigFromHalves(hi, lo));
    return this.regs >= 0 ? `kernel stack regs at ${this.here()} has bad 'bp' value ${v}` : `kernel stack frame pointer at ${this.here()} has bad value ${v}`;
  }

  private here(): string {
    const at = this.regs >= 0 ? this.regs : this.bp;
    return at >= 0 ? formatHex64(this.space.addressOf(at)) : 'regs';
  }

  private notCaptured(lin: number, what: string): false {
    return this.stop('not_captured', `${what} at ${formatHex64(this.space.addressOf(lin))} lies outside the captured window of the ${this.space.stackAt(lin).type} stack`);
  }

  protected stop(reason: Reason, message: string, outcome: Outcome = 'error'): false {
    this.ended = true;
    this.outcome = outcome;
    this.reason = reason;
    this.message = message;
    return false;
  }

  private fail(reason: Reason, message: string): void {
    this.stop(reason, message);
  }

  private end(outcome: Outcome): false {
    this.ended = true;
    this.outcome = outcome;
    return false;
  }
}

/**
 * A reported frame. The walk keeps only numbers; the bigint addresses and the decoded pt_regs are
 * made when someone reads them (rendering, JSON), not for every frame of every sample.
 */
class WalkFrame implements Frame {
  constructor(
    private readonly space: StackSpace,
    readonly ipS: number,
    readonly kind: FrameKind,
    readonly stack: StackType,
    private readonly slotLin: number,
    private readonly regsLin: number,
    readonly entry: EntryType | undefined,
  ) {}

  /** Exact: only text addresses (which the signed form holds exactly) become call and regs frames. */
  get ip(): bigint {
    return bigFromSigned(this.ipS);
  }

  get slot(): bigint {
    return this.space.addressOf(this.slotLin);
  }

  get regsAt(): bigint | undefined {
    return this.regsLin >= 0 ? this.space.addressOf(this.regsLin) : undefined;
  }

  get regs(): Regs | undefined {
    if (this.regsLin < 0) return undefined;
    const r: Regs = {};
    for (const f of PT_REGS_FIELDS) {
      const v = this.space.readBig(this.regsLin + PT_REGS_OFFSET[f]);
      if (v !== undefined) r[f] = v;
    }
    return r;
  }
}
