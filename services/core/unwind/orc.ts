// orc: the table-driven unwinder of kernels built without frame pointers, as
// arch/x86/kernel/unwind_orc.c does it (reference/kernel-unwinders.md §1.3). Each step looks up the
// ORC entry of the current ip (ip - 1 for a call frame, ip itself after pt_regs: "signal" frames),
// computes the caller's stack pointer (CFA) from it, and reads either a return address (CALL),
// full pt_regs (REGS) or the hardware iret frame (REGS_PARTIAL) there. Unlike the frame-pointer
// walk it may move to any valid stack, each at most once (stack_access_ok / get_stack_info), and
// kernel-mode pt_regs do not make a trace unreliable (arch_stack_walk_reliable on ORC).
import type { Regs, Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { EntryType } from '../symbols/entry-types.ts';
import type { Reason } from '../check/reasons.ts';
import { IRET_FRAME_OFFSET, IRET_FRAME_SIZE, PT_REGS_FIELDS, PT_REGS_OFFSET, PT_REGS_SIZE, userMode, type PtRegsField, type StackType } from '../stack/layout.ts';
import { bigFromHalves, formatHex64, signedFromBig } from '../u64.ts';
import { StackSpace, type SpaceStack } from './space.ts';
import { ORC_REG, ORC_TYPE, ORC_TYPE_NAME, type OrcEntry } from './orc-table.ts';
import type { Frame, Outcome, StrategyName, UnwindOptions, UnwindResult, WordRead, WordRole } from './types.ts';
import { DEFAULT_MAX_FRAMES, type Strategy, type Unwinder } from './unwinder.ts';

const U64 = (1n << 64n) - 1n;
/** No regs in the state / the sampled registers (full regs that live in the sample, not on a stack). */
const NO_REGS = -1;
const SAMPLE_REGS = -2;

/** orc_fp_entry: the guess used where the tables have no data (generated code); the rest is unreliable. */
const ORC_FP_ENTRY: OrcEntry = { spReg: ORC_REG.BP, spOffset: 16, bpReg: ORC_REG.PREV_SP, bpOffset: -16, type: ORC_TYPE.CALL, signal: false };
/** null_orc_entry: ip 0 means a call through a NULL pointer; the return address is at sp. */
const NULL_ORC_ENTRY: OrcEntry = { spReg: ORC_REG.SP, spOffset: 8, bpReg: ORC_REG.UNDEFINED, bpOffset: 0, type: ORC_TYPE.CALL, signal: false };

const GET_REG_FIELD: Partial<Record<number, PtRegsField>> = { [ORC_REG.R10]: 'r10', [ORC_REG.R13]: 'r13', [ORC_REG.DI]: 'di', [ORC_REG.DX]: 'dx' };
const REG_NAME: Record<number, string> = { [ORC_REG.R10]: 'R10', [ORC_REG.R13]: 'R13', [ORC_REG.DI]: 'DI', [ORC_REG.DX]: 'DX' };

export class OrcUnwinder implements Unwinder {
  readonly name: StrategyName = 'orc';
  private readonly space: StackSpace;
  private readonly frames: Frame[] = [];
  private readonly order: StackType[] = [];
  private readonly maxFrames: number;
  /** The words read, when the caller asked for the trail (UnwindOptions.trail). */
  private readonly trail: WordRead[] | undefined;
  private visited = 0;
  private cur: SpaceStack | undefined;

  private ip = 0n;
  private sp = 0n;
  private bp = 0n;
  private signal = true;
  /** Where the state's pt_regs are: NO_REGS, SAMPLE_REGS, or a linear stack position. */
  private regs = NO_REGS;
  private fullRegs = false;
  private prevRegs = NO_REGS;
  private lastCallIpS = NaN;
  private userRegsAt: bigint | undefined;

  /** state->error: a guess was used or the start was off-stack; the trace may continue but is unreliable. */
  private error = false;
  private ended = false;
  private outcome: Outcome = 'error';
  private reason: Reason | undefined;
  private message: string | undefined;

  constructor(
    private readonly sample: Sample,
    private readonly profile: KernelProfile,
    opts: UnwindOptions = {},
  ) {
    this.space = opts.space ?? new StackSpace(sample);
    this.maxFrames = opts.maxFrames ?? DEFAULT_MAX_FRAMES;
    this.trail = opts.trail ? [] : undefined;
  }

  done(): boolean {
    return this.ended;
  }

  /** __unwind_start from regs: the state is the sampled registers (full, a signal frame). */
  start(): void {
    const r = this.sample.regs;
    if (r?.ip === undefined || r.sp === undefined) {
      this.stop('no_regs', 'the sample carries no registers to unwind');
      return;
    }
    if (!this.profile.orc) {
      this.stop('no_regs', 'the kernel profile has no ORC tables (.orc_unwind/.orc_unwind_ip of the vmlinux): the orc strategy cannot run');
      return;
    }
    this.ip = r.ip;
    this.sp = r.sp;
    this.bp = r.bp ?? 0n;
    this.regs = SAMPLE_REGS;
    this.fullRegs = true;
    this.signal = true;
    const spLin = this.space.locateBig(r.sp, 0);
    if (spLin >= 0) this.enter(this.space.stackAt(spLin));
    const startStack: StackType = this.cur?.type ?? 'task';
    this.frames.push({ ip: r.ip, ipS: signedFromBig(r.ip), kind: 'start', stack: startStack });
    if (r.cs !== undefined && userMode(r.cs)) {
      this.finish('user');
      return;
    }
    // Off every known stack (the first instruction of entry_SYSCALL_64 still runs on the user
    // stack): the kernel sets state->error and can go on only where the ORC data needs no memory.
    if (spLin < 0) this.error = true;
    this.step();
  }

  next(): boolean {
    if (this.ended) return false;
    if (this.frames.length >= this.maxFrames) {
      this.stop('depth_limit', `more than ${this.maxFrames} frames`, 'depth_limit');
      return false;
    }
    this.step();
    return !this.ended;
  }

  result(): UnwindResult {
    const good = this.outcome === 'user' || this.outcome === 'kthread' || this.outcome === 'end_of_stack';
    const out: UnwindResult = {
      strategy: this.name,
      frames: this.frames,
      outcome: this.outcome,
      reliable: this.ended && good && !this.error,
      stacks: this.order,
    };
    if (this.reason !== undefined) out.reason = this.reason;
    if (this.message !== undefined) out.message = this.message;
    if (this.userRegsAt !== undefined) out.userRegsAt = this.userRegsAt;
    if (this.trail) out.reads = this.trail;
    return out;
  }

  // --- unwind_next_frame ----------------------------------------------------------------------

  private step(): void {
    // End-of-stack check for user tasks: user-mode pt_regs end the kernel trace.
    if (this.regs !== NO_REGS && this.regsUser()) {
      this.finish('user');
      return;
    }
    const origIp = this.ip;
    const orc = this.lookup();
    if (orc === undefined) return;
    if (orc.type === ORC_TYPE.UNDEFINED) {
      this.stop('orc_undefined', `the ORC entry for ${this.at(origIp)} is undefined: the kernel stops with an error here (no valid unwind state)`);
      return;
    }
    if (orc.type === ORC_TYPE.END_OF_STACK) {
      this.endOfStack(origIp);
      return;
    }

    // The previous frame's stack pointer (CFA).
    let sp: bigint;
    let indirect = false;
    switch (orc.spReg) {
      case ORC_REG.SP:
        sp = this.sp + BigInt(orc.spOffset);
        break;
      case ORC_REG.BP:
        sp = this.bp + BigInt(orc.spOffset);
        break;
      case ORC_REG.SP_INDIRECT:
        sp = this.sp;
        indirect = true;
        break;
      case ORC_REG.BP_INDIRECT:
        sp = this.bp + BigInt(orc.spOffset);
        indirect = true;
        break;
      case ORC_REG.R10:
      case ORC_REG.R13:
      case ORC_REG.DI:
      case ORC_REG.DX: {
        const v = this.getReg(GET_REG_FIELD[orc.spReg]!);
        if (v === undefined) {
          this.stop('orc_bad_entry', `missing ${REG_NAME[orc.spReg]} value at ${this.at(origIp)}`);
          return;
        }
        sp = v;
        break;
      }
      default:
        this.stop('orc_bad_entry', `unknown SP base reg ${orc.spReg} at ${this.at(origIp)}`);
        return;
    }
    sp &= U64;
    if (indirect) {
      const v = this.deref(sp, 'the indirect CFA', 'link');
      if (v === undefined) return;
      sp = orc.spReg === ORC_REG.SP_INDIRECT ? (v + BigInt(orc.spOffset)) & U64 : v;
    }

    const prevSp = this.sp;
    const prevStack = this.cur;
    let frame: Frame | undefined;
    switch (orc.type) {
      case ORC_TYPE.CALL: {
        const slot = (sp - 8n) & U64;
        const ret = this.deref(slot, 'the return address', 'ret');
        if (ret === undefined) return;
        this.ip = ret;
        this.sp = sp;
        this.regs = NO_REGS;
        this.prevRegs = NO_REGS;
        this.signal = false;
        frame = { ip: ret, ipS: signedFromBig(ret), kind: 'call', stack: this.cur!.type, slot };
        break;
      }
      case ORC_TYPE.REGS: {
        this.note((sp + BigInt(PT_REGS_OFFSET.ip)) & U64, 'regs');
        const at = this.access(sp, PT_REGS_SIZE, 'pt_regs');
        if (at < 0) return;
        this.ip = this.space.readBig(at + PT_REGS_OFFSET.ip)!;
        this.sp = this.space.readBig(at + PT_REGS_OFFSET.sp)!;
        this.regs = at;
        this.prevRegs = NO_REGS;
        this.fullRegs = true;
        this.signal = true;
        if (!this.regsUser()) frame = this.regsFrame(at, sp, false);
        else this.userRegsAt = sp;
        break;
      }
      case ORC_TYPE.REGS_PARTIAL: {
        this.note(sp, 'regs');
        const at = this.access(sp, IRET_FRAME_SIZE, 'the iret frame');
        if (at < 0) return;
        this.ip = this.space.readBig(at)!;
        this.sp = this.space.readBig(at + 24)!;
        if (this.fullRegs) this.prevRegs = this.regs;
        this.regs = at - IRET_FRAME_OFFSET;
        this.fullRegs = false;
        this.signal = true;
        if (!this.regsUser()) frame = this.regsFrame(this.regs, (sp - BigInt(IRET_FRAME_OFFSET)) & U64, true);
        break;
      }
      default:
        this.stop('orc_bad_entry', `unknown .orc_unwind entry type ${ORC_TYPE_NAME[orc.type] ?? orc.type} at ${this.at(origIp)}`);
        return;
    }

    // The caller's bp.
    switch (orc.bpReg) {
      case ORC_REG.UNDEFINED: {
        const v = this.getReg('bp');
        if (v !== undefined) this.bp = v;
        break;
      }
      case ORC_REG.PREV_SP: {
        const v = this.deref((sp + BigInt(orc.bpOffset)) & U64, 'the saved bp', 'bp');
        if (v === undefined) return;
        this.bp = v;
        break;
      }
      case ORC_REG.BP: {
        const v = this.deref((this.bp + BigInt(orc.bpOffset)) & U64, 'the saved bp', 'bp');
        if (v === undefined) return;
        this.bp = v;
        break;
      }
      default:
        this.stop('orc_bad_entry', `unknown BP base reg ${orc.bpReg} for ip ${this.at(origIp)}`);
        return;
    }

    // Prevent a recursive loop due to bad ORC data: on the same stack, sp must move up.
    if (this.cur === prevStack && this.cur !== undefined && this.space.locateBig(this.sp, 8) >= 0
      && this.space.stackAt(this.space.locateBig(this.sp, 8)) === this.cur && this.sp <= prevSp) {
      this.stop('frame_not_ascending', `stack going in the wrong direction? at ${this.at(origIp)} (sp ${formatHex64(prevSp)} -> ${formatHex64(this.sp)})`);
      return;
    }

    if (frame === undefined) return; // user-mode regs: the next step ends the trace
    if (!this.profile.isTextS(frame.ipS)) {
      this.stop('non_text_return_address', frame.kind === 'call'
        ? `unrecognized kernel stack return address ${formatHex64(frame.ip)} at ${formatHex64(frame.slot!)}`
        : `kernel-mode regs at ${formatHex64(frame.regsAt!)} hold ip ${formatHex64(frame.ip)}, which is not kernel text`);
      return;
    }
    this.frames.push(frame);
    this.lastCallIpS = frame.kind === 'call' ? frame.ipS : NaN;
  }

  /** orc_find(): the entry for the ip (ip - 1 after a call), with the kernel's fallbacks. */
  private lookup(): OrcEntry | undefined {
    if (this.ip === 0n) return NULL_ORC_ENTRY;
    const table = this.profile.orc!;
    const ipS = signedFromBig(this.ip) - (this.signal ? 0 : 1);
    const sec = this.profile.sections;
    const covered = (sec.text !== undefined && ipS >= sec.text.startS && ipS < sec.text.endS)
      || (sec.inittext !== undefined && ipS >= sec.inittext.startS && ipS < sec.inittext.endS)
      || (sec.text === undefined && table.length > 0 && ipS >= table.ips[0]!);
    const i = covered ? table.find(ipS) : -1;
    if (i < 0) {
      // No ORC data (module or generated code): guess a frame-pointer frame; no longer reliable.
      this.error = true;
      return ORC_FP_ENTRY;
    }
    return table.entry(i);
  }

  /** The entry boundary the walk just crossed, as a regs frame. */
  private regsFrame(at: number, regsAddr: bigint, partial: boolean): Frame {
    const entry: EntryType = Number.isNaN(this.lastCallIpS) ? 'unknown' : this.profile.entryTypeAtS(this.lastCallIpS);
    const f: Frame = { ip: this.ip, ipS: signedFromBig(this.ip), kind: 'regs', stack: this.cur!.type, slot: (regsAddr + BigInt(PT_REGS_OFFSET.ip)) & U64, entry, regsAt: regsAddr, regs: this.readRegs(at, partial) };
    if (partial) f.partial = true;
    return f;
  }

  private readRegs(at: number, partial: boolean): Regs {
    const r: Regs = {};
    for (const f of PT_REGS_FIELDS) {
      const off = PT_REGS_OFFSET[f];
      if (partial && off < IRET_FRAME_OFFSET) continue;
      const v = this.space.readBig(at + off);
      if (v !== undefined) r[f] = v;
    }
    return r;
  }

  /** get_reg(): a register from full regs, or from the previous full regs when these are partial. */
  private getReg(f: PtRegsField): bigint | undefined {
    const src = this.fullRegs ? this.regs : this.prevRegs;
    if (src === NO_REGS) return undefined;
    if (src === SAMPLE_REGS) return this.sample.regs?.[f];
    return this.space.readBig(src + PT_REGS_OFFSET[f]);
  }

  private regsUser(): boolean {
    if (this.regs === SAMPLE_REGS) return this.sample.regs?.cs !== undefined && userMode(this.sample.regs.cs);
    if (this.regs === NO_REGS) return false;
    const cs = this.space.readBig(this.regs + PT_REGS_OFFSET.cs);
    return cs !== undefined && userMode(cs);
  }

  /**
   * An end-of-stack entry. At task_pt_regs it is a kthread's (or the idle task's) bottom:
   * ret_from_fork. Off every stack (entry_SYSCALL_64 before the switch to the kernel stack), on
   * the entry trampoline stack, or inside the pt_regs area at the task stack's top
   * (entry_SYSCALL_64_after_hwframe pushing pt_regs), nothing of the kernel lies above. On a task, IRQ or exception stack
   * with sp below its pt_regs, the stack goes on above an entry-code hint or a retpoline thunk
   * (UNWIND_HINT_EMPTY): the kernel's unwinder stops here too, and the trace is truncated.
   */
  private endOfStack(ip: bigint): void {
    const lin = this.space.locateBig(this.sp, 0);
    const s = lin >= 0 ? this.space.stackAt(lin) : undefined;
    if (s !== undefined && s.type === 'task' && lin === s.base + s.size - PT_REGS_SIZE) {
      this.finish('kthread');
      return;
    }
    this.finish('end_of_stack');
    // Within the pt_regs area at the task stack's top, entry code is still building (or has
    // unwound) the user pt_regs: nothing of the kernel lies above.
    const inTopRegs = s !== undefined && s.type === 'task' && lin > s.base + s.size - PT_REGS_SIZE;
    if (s !== undefined && s.type !== 'entry' && !inTopRegs) {
      this.reason = 'orc_end_hint';
      this.message = `the ORC entry for ${this.at(ip)} says end of stack, but sp ${formatHex64(this.sp)} is ${formatHex64(s.end - this.sp)} bytes below the top of the ${s.type} stack: the frames above are not reached`;
    }
  }

  /**
   * stack_access_ok(): [addr, addr+len) on the current stack, or on another known stack not yet
   * visited (which becomes current). Returns the linear position, or -1 after stopping.
   */
  private access(addr: bigint, len: number, what: string): number {
    const lin = this.space.locateBig(addr, len);
    if (lin < 0) {
      this.stop('orc_off_stack', `can't access ${what} at ${formatHex64(addr)} (${len} bytes) for ${this.at(this.ip)}: on none of the sample's stacks`);
      return -1;
    }
    const s = this.space.stackAt(lin);
    if (s !== this.cur) {
      if ((this.visited & s.typeBit) !== 0) {
        this.stop('stack_recursion', `stack recursion on stack type ${s.type}`);
        return -1;
      }
      this.enter(s);
    }
    if (!this.space.captured(lin, len)) {
      this.stop('not_captured', `${what} at ${formatHex64(addr)} lies outside the captured window of the ${s.type} stack`);
      return -1;
    }
    return lin;
  }

  private deref(addr: bigint, what: string, role: WordRole): bigint | undefined {
    this.note(addr, role);
    const lin = this.access(addr, 8, what);
    if (lin < 0) return undefined;
    this.space.read(lin);
    return bigFromHalves(this.space.hi, this.space.lo);
  }

  /** Records a word read for the trail (UnwindOptions.trail); nothing on the checking hot path. */
  private note(addr: bigint, role: WordRole): void {
    if (this.trail !== undefined) this.trail.push({ addr, role });
  }

  private enter(s: SpaceStack): void {
    this.visited |= s.typeBit;
    this.cur = s;
    this.order.push(s.type);
  }

  private at(ip: bigint): string {
    return this.profile.symbols.format(ip) + ` (${formatHex64(ip)})`;
  }

  private finish(outcome: Outcome): void {
    this.ended = true;
    this.outcome = outcome;
  }

  private stop(reason: Reason, message: string, outcome: Outcome = 'error'): void {
    this.ended = true;
    this.outcome = outcome;
    this.reason = reason;
    this.message = message;
  }
}

export const orcStrategy: Strategy = {
  name: 'orc',
  summary: 'the kernel ORC unwinder over the vmlinux .orc_unwind tables (kernels without frame pointers)',
  create: (s, p, o) => new OrcUnwinder(s, p, o),
};

/** How one entry boundary of an ORC trace compares with the section strategy's reading of it. */
export interface EntryCrossing {
  /** Index of the regs frame (or of the call frame after which ORC found no pt_regs). */
  frame: number;
  result: 'agree' | 'entry_code' | 'mismatch';
  entry: EntryType;
  message: string;
}

/**
 * The section cross-check (issue 7): at every entry boundary the ORC walk crosses, the section
 * strategy's reading — a return address in __irqentry_text/__entry_text means the caller was an
 * entry stub, pt_regs sit at the stub's offset above that return slot, the stub names the entry —
 * must agree with the pt_regs ORC decoded from the tables.
 * - full pt_regs (REGS) after a return into the entry section: same address, or a mismatch;
 * - only the iret frame (REGS_PARTIAL) after such a return: the stub called a helper (error_entry,
 *   paranoid_entry) before pt_regs were complete — the entry-code window in which the section
 *   strategy is blind by design; reported as entry_code, not compared;
 * - full pt_regs after a return address outside the entry section: an entry the section strategy
 *   would not see (mismatch);
 * - a return into __irqentry_text followed by an ordinary caller: the section strategy would
 *   decode pt_regs where ORC says there are none (mismatch).
 */
/** The word just above slot, when it is a return address into the IDT stubs' section. */
function stubReturnAbove(space: StackSpace, slot: bigint, irq: { startS: number; endS: number }): { ret: bigint; retS: number } | undefined {
  const lin = space.locateBig((slot + 8n) & U64, 8);
  if (lin < 0) return undefined;
  const v = space.readBig(lin);
  if (v === undefined) return undefined;
  const retS = Number(BigInt.asIntN(64, v));
  return retS >= irq.startS && retS < irq.endS ? { ret: v, retS } : undefined;
}

/**
 * The same check with another walk as the reference: on a frame-pointer kernel (no ORC tables)
 * encoded_fp's walk, whose pt_regs come from the bit-0 saved bp (issue 13); `by` names it in the
 * messages.
 */
export function crossCheckEntries(profile: KernelProfile, u: Pick<UnwindResult, 'frames' | 'userRegsAt'>, space: StackSpace, by = 'ORC'): EntryCrossing[] {
  const out: EntryCrossing[] = [];
  // User-mode pt_regs end the trace without a frame; the boundary into them is checked all the same.
  const frames: readonly Frame[] = u.userRegsAt === undefined ? u.frames
    : [...u.frames, { ip: 0n, ipS: 0, kind: 'regs', stack: 'task', regsAt: u.userRegsAt }];
  const irq = profile.sections.irqentry;
  for (let i = 1; i < frames.length; i++) {
    const f = frames[i]!;
    const prev = frames[i - 1]!;
    const prevIsCall = prev.kind === 'call' && prev.slot !== undefined;
    const inSection = prevIsCall && profile.inEntrySectionS(prev.ipS);
    if (f.kind === 'regs') {
      if (!prevIsCall) continue; // reached from the sampled regs: no return address to read
      const stubName = profile.symbols.format(prev.ip, true);
      if (!inSection) {
        if (f.partial) continue;
        out.push({ frame: i, result: 'mismatch', entry: f.entry ?? 'unknown', message: `${by} decoded pt_regs at ${formatHex64(f.regsAt!)} after the return address ${stubName}, which is outside the entry section: the section strategy would not see this entry` });
        continue;
      }
      const stub = profile.stubAtS(prev.ipS);
      if (f.partial) {
        out.push({ frame: i, result: 'entry_code', entry: stub.entry, message: `${stubName} called a helper before pt_regs were complete (ORC: iret frame only)` });
        continue;
      }
      let expected: bigint | undefined = (prev.slot! + BigInt(stub.offset)) & U64;
      if (stub.indirect) {
        const lin = space.locateBig(expected, 8);
        expected = lin >= 0 ? space.readBig(lin) : undefined;
      }
      if (expected !== undefined && expected === f.regsAt) {
        out.push({ frame: i, result: 'agree', entry: stub.entry, message: `${stub.entry} at ${stubName}: pt_regs at ${formatHex64(expected)}` });
        continue;
      }
      // An entry helper the stub called (error_entry, paranoid_entry: entry text, not an IDT stub)
      // re-pushes the stub's return address just below pt_regs (PUSH_AND_CLEAR_REGS save_ret=1),
      // so the word above the helper's return address is the stub's: the section strategy reads
      // pt_regs from that one.
      const via = irq !== undefined ? stubReturnAbove(space, prev.slot!, irq) : undefined;
      if (via !== undefined) {
        const vstub = profile.stubAtS(via.retS);
        const vexpected = (prev.slot! + 8n + BigInt(vstub.offset)) & U64;
        if (!vstub.indirect && vexpected === f.regsAt) {
          out.push({ frame: i, result: 'agree', entry: vstub.entry, message: `${vstub.entry} at ${profile.symbols.format(via.ret, true)} (through ${stubName}): pt_regs at ${formatHex64(vexpected)}` });
          continue;
        }
      }
      out.push({ frame: i, result: 'mismatch', entry: stub.entry, message: `${stubName}: the section strategy reads pt_regs at ${expected === undefined ? '(uncaptured pointer)' : formatHex64(expected)}, ${by} decoded them at ${formatHex64(f.regsAt!)}` });
      continue;
    }
    if (f.kind === 'call' && prev.kind === 'call' && irq !== undefined && prev.ipS >= irq.startS && prev.ipS < irq.endS) {
      out.push({ frame: i - 1, result: 'mismatch', entry: profile.stubAtS(prev.ipS).entry, message: `return address ${profile.symbols.format(prev.ip, true)} is in __irqentry_text, so the section strategy reads pt_regs above it, but ${by} unwound it as an ordinary call frame` });
    }
  }
  return out;
}
