// The ground truth of a single-step sweep, built from what the stepper saw the CPU do — never
// from reading the stack the way an unwinder does. Every executed call pushes an activation (its
// return address is the call's ip + length), every executed ret pops one; the frame state of each
// activation comes from its own push %rbp / mov %rsp,%rbp / pop %rbp / leave and from register
// values (rbp at each call), not from stack memory. Below the activations sits the entry itself:
// the interrupted ip the CPU pushed in the hardware frame, and the interrupted context's chain,
// taken once at the breakpoint where every strategy agreed.
import type { TruthFrame, Tolerance } from '../core/dump/sample.ts';
import type { EntryType } from '../core/symbols/entry-types.ts';
import type { Insn } from '../core/x86/insn.ts';

export interface CpuState {
  ip: bigint;
  sp: bigint;
  bp: bigint;
}

export interface Activation {
  /** The return address the call pushed. */
  ret: bigint;
  /** rsp right after the call: where the CPU wrote the return address. */
  slot: bigint;
  /** ip of the call instruction. */
  callSite: bigint;
  /** rbp when this activation called the one above it (undefined while it is the innermost). */
  rbpAtCall?: bigint;
  /** The rbp value its own push %rbp stored at slot - 8 (a register value, seen before the push). */
  savedBp?: bigint;
  /** Between its push %rbp and its pop %rbp / leave. */
  pushed: boolean;
  /** It has already taken its frame down again (epilogue). */
  epilogue: boolean;
}

export interface EntryContext {
  type: EntryType;
  /** The interrupted ip and rsp: where the CPU goes back to when the entry is over. */
  ip: bigint;
  sp: bigint;
  user: boolean;
  /** Where this entry's pt_regs live (the stack it arrived on; after sync_regs the task stack): rbp = P|1 is its marker. */
  ptRegs: bigint[];
  /** rbp when the entry began (the interrupted code's): the chain below the entry hangs from it. */
  bp?: bigint;
  /** The interrupted context's frames below its ip (kind 'call', or 'regs' for an entry it interrupted in turn). */
  base: TruthFrame[];
}

export interface ShadowOptions {
  /**
   * Which rules mark truth frames tolerated: 'encoded_fp' — the frame-pointer family's documented
   * windows (prologue, epilogue, leaf, entry code before the &pt_regs|1 marker is reachable);
   * 'orc' — only return addresses held by entry code: its ORC data describes the stack through
   * UNWIND_HINT_IRET_REGS/REGS, not through calls (error_entry even overwrites its own return address:
   * "We just clobbered the return address - use the IRET frame for unwinding", entry/calling.h), so
   * the kernel's ORC unwinder goes from there to the entry's pt_regs by design.
   */
  tolerance: 'encoded_fp' | 'orc';
  /**
   * With the frame-pointer rules: how this kernel's entry code marks pt_regs (issue 18), and so when
   * the interrupted frame becomes recoverable — encoded (default): rbp reaches &pt_regs|1; section:
   * rbp reaches the frame of the function the stub called with rsp at pt_regs (its return address
   * is in entry text, its frame at pt_regs − 16); kernel_entry: rbp reaches the fake frame
   * {pt_regs->bp, kernel_entry} the stub pushed at pt_regs − 16. The fake frame is not a caller:
   * it is pushed without a call, so it is no frame of the truth (as in the emulator's layout).
   */
  design?: 'encoded' | 'section' | 'kernel_entry';
  /** The kernel_entry design's dummy function: the value its stubs push as a fake return address. */
  kernelEntry?: bigint;
  /** Whether an ip lies in the kernel's entry code (__entry_text_start..__entry_text_end). */
  inEntryCode: (ip: bigint) => boolean;
}

/** A return that did not go where its call said: only the retpoline thunks rewrite their return address. */
export interface ReplacedReturn {
  at: bigint;
  expected: bigint;
  went: bigint;
}

export class ShadowStack {
  readonly frames: Activation[] = [];
  readonly replaced: ReplacedReturn[] = [];
  calls = 0;
  rets = 0;
  /** kernel_entry design: the base of the fake frame the stub pushed (pt_regs − 16), while it is on the stack. */
  private fake: bigint | undefined;

  constructor(readonly entry: EntryContext, private readonly o: ShadowOptions) {}

  get depth(): number {
    return this.frames.length;
  }

  /** One executed instruction: the state before it, what it was, the state after it. */
  advance(before: CpuState, insn: Insn, after: CpuState): void {
    const top = this.frames[this.frames.length - 1];
    // The fake frame is gone once rsp is back above its return slot (add $0x10,%rsp).
    if (this.fake !== undefined && after.sp > this.fake + 8n) this.fake = undefined;
    switch (insn.kind) {
      case 'push_imm': {
        // push $kernel_entry with rsp landing right below pt_regs: the fake frame's return slot.
        const ke = this.o.kernelEntry;
        if (ke !== undefined && insn.value === ke && after.sp === before.sp - 8n && this.entry.ptRegs.includes(after.sp + 8n)) this.fake = after.sp - 8n;
        return;
      }
      case 'call': {
        if (after.sp !== before.sp - 8n) throw new Error(`call at ${hex(before.ip)}: rsp went ${hex(before.sp)} → ${hex(after.sp)}, not down by 8`);
        if (top) top.rbpAtCall = before.bp;
        this.frames.push({ ret: before.ip + BigInt(insn.len!), slot: after.sp, callSite: before.ip, pushed: false, epilogue: false });
        this.calls++;
        return;
      }
      case 'ret': {
        if (!top) throw new Error(`ret at ${hex(before.ip)} with an empty shadow stack (to ${hex(after.ip)})`);
        this.frames.pop();
        this.rets++;
        if (after.ip !== top.ret) this.replaced.push({ at: before.ip, expected: top.ret, went: after.ip });
        const caller = this.frames[this.frames.length - 1];
        if (caller) delete caller.rbpAtCall;
        return;
      }
      case 'push_rbp':
        if (top && before.sp === top.slot) {
          top.pushed = true;
          top.savedBp = before.bp;
        }
        return;
      case 'pop_rbp':
      case 'leave':
        if (top && top.pushed && after.sp === top.slot) {
          top.pushed = false;
          top.epilogue = true;
        }
        return;
      default:
        return;
    }
  }

  /** Whether activation i has its frame at this instant: rbp (now, or when it called out) is its frame. */
  private framed(i: number, cur: CpuState): boolean {
    const a = this.frames[i]!;
    const bp = i === this.frames.length - 1 ? cur.bp : a.rbpAtCall;
    return a.pushed && bp === a.slot - 8n;
  }

  /**
   * Whether following rbp through the frames the activations built reaches this entry's marker,
   * the design's way (ShadowOptions.design): &pt_regs|1; the stub-called frame at pt_regs − 16;
   * or the fake kernel_entry frame there, once both its words are pushed.
   */
  markerReachable(cur: CpuState): boolean {
    const regs = this.entry.ptRegs;
    switch (this.o.design ?? 'encoded') {
      case 'encoded':
        return this.reaches(cur, (b) => (b & 1n) === 1n && regs.includes(b - 1n));
      case 'section':
        return this.reaches(cur, (b) => regs.includes(b + 16n) && this.frames.some((f) => f.slot === b + 8n && f.pushed));
      case 'kernel_entry': {
        const fake = this.fake;
        return fake !== undefined && cur.sp <= fake && this.reaches(cur, (b) => b === fake);
      }
    }
  }

  /** Whether following rbp through the activations' frames meets a value `hit` accepts. */
  private reaches(cur: CpuState, hit: (b: bigint) => boolean): boolean {
    let b = cur.bp;
    for (let n = 0; n <= this.frames.length; n++) {
      if (hit(b)) return true;
      const a = this.frames.find((f) => f.pushed && f.savedBp !== undefined && f.slot - 8n === b);
      if (!a) return false;
      b = a.savedBp!;
    }
    return false;
  }

  /**
   * The truth at this instant, innermost first: the ip, every activation's return address, then
   * (for an entry from kernel mode) the interrupted ip and the interrupted context's chain.
   * `atPush`: the instruction at cur.ip is a push %rbp (the innermost is in its prologue).
   */
  truth(cur: CpuState, atPush: boolean): TruthFrame[] {
    const out: TruthFrame[] = [{ ip: cur.ip, kind: 'start' }];
    const fpRules = this.o.tolerance === 'encoded_fp';
    for (let i = this.frames.length - 1; i >= 0; i--) {
      const a = this.frames[i]!;
      const f: TruthFrame = { ip: a.ret, kind: 'call' };
      if (fpRules && !this.framed(i, cur)) {
        const t = this.callTolerance(i, cur, atPush);
        if (t) f.tolerated = t;
      } else if (!fpRules && this.o.inEntryCode(this.codeOf(i, cur))) f.tolerated = 'entry_code';
      out.push(f);
    }
    if (this.entry.user) return out;
    const regs: TruthFrame = { ip: this.entry.ip, kind: 'regs', entry: this.entry.type };
    const marked = !fpRules || this.markerReachable(cur);
    if (!marked) regs.tolerated = 'entry_code';
    out.push(regs);
    // Entry code that has cleared rbp (PUSH_AND_CLEAR_REGS: `xor %ebp,%ebp`, before the marker is
    // set) leaves no way from rbp to the interrupted chain either: the walk stops in entry code,
    // where the kernel's unwinder is silent (§9 rule 17). Tolerated only there.
    const cut = !marked && this.entry.bp !== undefined && this.o.inEntryCode(cur.ip) && !this.reaches(cur, (b) => b === this.entry.bp);
    for (const b of this.entry.base) out.push(cut && b.tolerated === undefined ? { ...b, tolerated: 'entry_code' } : b);
    return out;
  }

  /** Where activation i is executing: the current ip for the innermost, else its call into the next. */
  private codeOf(i: number, cur: CpuState): bigint {
    return i === this.frames.length - 1 ? cur.ip : this.frames[i + 1]!.callSite;
  }

  /**
   * §7 / §9 rule 18, as in the emulator: an unframed innermost activation is a documented window
   * (prologue, epilogue, frameless leaf); an unframed activation that called out is an objtool
   * violation — unless it is entry code, which builds no frames and is documented as lossy (rule 17).
   */
  private callTolerance(i: number, cur: CpuState, atPush: boolean): Tolerance | undefined {
    const a = this.frames[i]!;
    if (i === this.frames.length - 1) {
      if (this.o.inEntryCode(cur.ip)) return 'entry_code';
      if (a.epilogue) return 'epilogue';
      if (a.pushed || atPush) return 'prologue';
      return 'leaf';
    }
    const at = this.frames[i + 1]!.callSite;
    return this.o.inEntryCode(at) ? 'entry_code' : undefined;
  }
}

function hex(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16);
}
