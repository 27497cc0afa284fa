// The CPU model: one CPU executing the image's instructions on byte-addressed stack memory, with
// per-task stacks, the per-CPU IRQ stack, the IST stacks (NMI, #DB, #MC, #DF) and the entry stack,
// switched and linked as Linux does (reference kernel-unwinders.md §2.4–2.7). Next to the bytes it
// keeps the logical chain of activations and entries, from which the ground truth is read — never
// from the bytes, and never through any unwinder.
//
// Addresses are kept in signed form (the 64-bit value as an int64, as a double): every kernel
// address — text, vmalloc'd stacks, the cpu_entry_area — is within 2^53 of the top of the address
// space, so the form is exact and frame arithmetic is plain addition. Bigints are made only when a
// sample is emitted.
import {
  KERNEL_CS, KERNEL_DS, PT_REGS_FIELDS, PT_REGS_SIZE, USER_CS, USER_DS, stackSize, type StackType,
} from '../core/stack/layout.ts';
import type { Regs, Sample, SampleStack, Tolerance, TruthFrame } from '../core/dump/sample.ts';
import { OPS, type Func, type KernelImage } from './image.ts';

const {
  ADD_RSP, CALL, CLEAR_RBP, ENCODE, IRET, IRQ_LINK, IRQ_SWITCH, LEAVE, MOV_RBP, POP_GPR, POP_RBP, POP_REG, POP_RSP,
  PUSH_GPR, PUSH_HW_COPY, PUSH_IMM, PUSH_KE, PUSH_REG, PUSH_RBP, PUSH_USER, RET, SUB_RSP, SWITCH_TASK, SYSRET, SYNC_REGS,
} = OPS;
const TWO32 = 4294967296;
const KCS = Number(KERNEL_CS);
const KDS = Number(KERNEL_DS);
const FIELD_BP = (PT_REGS_FIELDS as readonly string[]).indexOf('bp');
const KFLAGS = 0x246;
export const USER_IP = 0x7f3a1c2e4a5d;
export const USER_SP = 0x7ffd4c1e3a10;
const USER_BP = 0x7ffd4c1e3a80;

/** Where each stack lives (signed form). Task stacks are THREAD_SIZE-aligned vmalloc areas with a gap. */
const TASK_BASE = -0x370000000000; // 0xffffc90000000000
const IRQ_BASE = -0x36ffc0000000; // 0xffffc90040000000
const CEA_BASE = -0x20000000000; // 0xfffffe0000000000 (cpu_entry_area)
const CEA_STRIDE = 0x40000;
/** Offsets in a CPU's cpu_entry_area: each IST stack behind a guard page (cea_exception_stacks). */
const CEA_OFF: Partial<Record<StackType, number>> = { entry: 0x1000, df: 0x3000, nmi: 0x5000, db: 0x7000, mce: 0x9000 };

export class MStack {
  readonly size: number;
  readonly end: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  begin = 0;
  /** Bigint bounds, cached per placement. */
  beginBig = 0n;
  endBig = 0n;
  constructor(readonly type: StackType) {
    this.size = stackSize(type);
    this.bytes = new Uint8Array(this.size);
    this.view = new DataView(this.bytes.buffer);
    this.end = 0;
  }

  /** Places the stack; `slot` keys a cache of bigint bounds (task stacks move with every pid). */
  place(begin: number, slot = 0): void {
    if (begin === this.begin && this.beginBig !== 0n) return;
    this.begin = begin;
    (this as { end: number }).end = begin + this.size;
    let b = this.boundCache.get(slot);
    if (b === undefined || b[0] !== begin) {
      b = [begin, BigInt.asUintN(64, BigInt(begin)), BigInt.asUintN(64, BigInt(begin + this.size))];
      this.boundCache.set(slot, b);
    }
    this.beginBig = b[1];
    this.endBig = b[2];
  }

  private readonly boundCache = new Map<number, [number, bigint, bigint]>();

  /** The bigint address of a 64-byte aligned offset into the stack. */
  windowStart(off: number): bigint {
    return this.beginBig + OFF_BIG[off >> 6]!;
  }

  has(addr: number, len = 8): boolean {
    return addr >= this.begin && addr + len <= this.end;
  }

  write(addr: number, v: number): void {
    const off = addr - this.begin;
    const hi = Math.floor(v / TWO32);
    this.view.setUint32(off, v - hi * TWO32, true);
    this.view.setUint32(off + 4, hi >>> 0, true);
  }

  read(addr: number): number {
    const off = addr - this.begin;
    return this.view.getUint32(off, true) + (this.view.getInt32(off + 4, true)) * TWO32;
  }
}

export const ACT = 0;
export const ENTRY = 1;
export const BOTTOM = 2;
export const STOP_NONE = 0;
export const STOP_CALL = 1;
export const STOP_ENTRY = 2;

export interface Act {
  kind: 0;
  fn: Func;
  /** Index of the next instruction to execute. */
  pc: number;
  /** Return address pushed by the call that created it (NaN for code entered otherwise). */
  ret: number;
  retSlot: number;
  stack: MStack;
  /** rbp when this activation stopped running (called out or was interrupted). */
  rbpStop: number;
  stoppedBy: number;
  /** For stubs: the entry they handle. */
  entry: EntryRec | null;
  /** The stack call_on_irqstack switched from (IRQ_SWITCH), if it did. */
  switchedFrom: MStack | null;
}

export interface EntryRec {
  kind: 1;
  type: string;
  /** The interrupted ip (what pt_regs->ip holds). */
  ip: number;
  regsAt: number;
  stack: MStack;
  from: MStack;
  fromSp: number;
  user: boolean;
  stub: Act | null;
}

export interface BottomRec {
  kind: 2;
  end: 'user' | 'kthread';
}

export type Rec = Act | EntryRec | BottomRec;

/** Where a sample stops: which code, which instruction boundary. */
export interface Where {
  fn: string;
  insn: number;
  offset: number;
}

export class Machine {
  readonly stacks: Record<StackType, MStack>;
  cur: MStack;
  rsp = 0;
  rbp = 0;
  chain: Rec[] = [];
  cpu = 0;
  /** A deterministic pseudo value for registers the model does not track. */
  private junk = 0x11;
  /** Set when rsp went below the current stack (an overflow into the guard page). */
  overflowed = false;

  constructor(public k: KernelImage) {
    this.stacks = {
      task: new MStack('task'), irq: new MStack('irq'), nmi: new MStack('nmi'), db: new MStack('db'),
      mce: new MStack('mce'), df: new MStack('df'), entry: new MStack('entry'),
    };
    this.cur = this.stacks.task;
  }

  /** A fresh CPU state for a task (pid) on a CPU: stacks placed, chain empty. Memory keeps stale bytes. */
  reset(cpu: number, pid: number): void {
    this.cpu = cpu;
    const s = this.stacks;
    s.task.place(TASK_BASE + (pid % 8192) * 0x8000, pid % 8192);
    s.irq.place(IRQ_BASE + cpu * 0x8000);
    const cea = CEA_BASE + cpu * CEA_STRIDE;
    for (const t of ['entry', 'df', 'nmi', 'db', 'mce'] as const) s[t].place(cea + CEA_OFF[t]!);
    this.chain.length = 0;
    this.cur = s.task;
    this.rsp = s.task.end;
    this.rbp = 0;
    this.overflowed = false;
  }

  get top(): Rec {
    return this.chain[this.chain.length - 1]!;
  }

  running(): Act {
    const r = this.chain[this.chain.length - 1];
    if (!r || r.kind !== ACT) throw new Error('nothing is running');
    return r;
  }

  private nextJunk(): number {
    this.junk = (Math.imul(this.junk, 1103515245) + 12345) >>> 0;
    return -0x777800000000 + this.junk * 8; // a direct-map address (0xffff888...)
  }

  push(v: number): void {
    this.rsp -= 8;
    if (this.rsp < this.cur.begin) {
      this.overflowed = true;
      return; // the write lands in the guard page
    }
    this.cur.write(this.rsp, v);
  }

  pop(): number {
    const v = this.cur.has(this.rsp) ? this.cur.read(this.rsp) : 0;
    this.rsp += 8;
    return v;
  }

  private act(fn: Func, ret: number, retSlot: number, entry: EntryRec | null): Act {
    return { kind: ACT, fn, pc: 0, ret, retSlot, stack: this.cur, rbpStop: 0, stoppedBy: STOP_NONE, entry, switchedFrom: null };
  }

  // --- bottoms -----------------------------------------------------------------------------------

  /** A syscall from user mode: entry_SYSCALL_64 starts with the user's rsp and rbp. */
  syscall(): Act {
    this.chain.push({ kind: BOTTOM, end: 'user' });
    this.rsp = USER_SP;
    this.rbp = USER_BP;
    const a = this.act(this.k.fn('entry_SYSCALL_64'), NaN, NaN, null);
    this.chain.push(a);
    return a;
  }

  /**
   * A new kthread as copy_thread() leaves it: zeroed kernel-mode pt_regs at the top; after
   * __switch_to_asm popped the inactive_task_frame, rsp = task_pt_regs and rbp = frame->bp, which
   * is encode_frame_pointer(childregs) on encoded-fp kernels and 0 before (§2.7).
   */
  kthread(): Act {
    this.chain.push({ kind: BOTTOM, end: 'kthread' });
    const t = this.stacks.task;
    const p = t.end - PT_REGS_SIZE;
    for (let a = p; a < t.end; a += 8) t.write(a, 0);
    this.rsp = p;
    this.rbp = this.k.layout === 'encoded_fp' ? p + 1 : 0;
    const a = this.act(this.k.fn('ret_from_fork_asm'), NaN, NaN, null);
    this.chain.push(a);
    return a;
  }

  /** The idle task: head code calls start_secondary with rsp = task_pt_regs (zeroed) and no frame. */
  idle(): Act {
    this.chain.push({ kind: BOTTOM, end: 'kthread' });
    const t = this.stacks.task;
    const p = t.end - PT_REGS_SIZE;
    for (let a = p; a < t.end; a += 8) t.write(a, 0);
    this.rsp = p;
    this.rbp = 0;
    const a = this.act(this.k.fn('secondary_startup_64'), NaN, NaN, null);
    this.chain.push(a);
    return a;
  }

  // --- execution -----------------------------------------------------------------------------------

  /** Executes one instruction of the running activation (entering callees). */
  step(): void {
    const a = this.running();
    const f = a.fn;
    const pc = a.pc;
    const op = f.ops[pc]!;
    a.pc = pc + 1;
    switch (op) {
      case PUSH_RBP: this.push(this.rbp); break;
      case MOV_RBP: this.rbp = this.rsp; break;
      case SUB_RSP:
        this.rsp -= f.args[pc]!;
        if (this.rsp < this.cur.begin) this.overflowed = true;
        break;
      case ADD_RSP: this.rsp += f.args[pc]!; break;
      case PUSH_REG: this.push(this.nextJunk()); break;
      case POP_REG: this.rsp += 8; break;
      case LEAVE: this.rsp = this.rbp; this.rbp = this.pop(); break;
      case POP_RBP: this.rbp = this.pop(); break;
      case RET: {
        this.pop();
        this.chain.pop();
        const c = this.chain[this.chain.length - 1];
        if (c && c.kind === ACT) c.stoppedBy = STOP_NONE;
        break;
      }
      case CALL: {
        const ret = f.addr + f.offs[pc]! + f.lens[pc]!;
        a.rbpStop = this.rbp;
        a.stoppedBy = STOP_CALL;
        this.push(ret);
        this.chain.push(this.act(f.targets[pc]!, ret, this.rsp, null));
        break;
      }
      case PUSH_IMM: this.push(f.args[pc]!); break;
      case PUSH_GPR: this.push(f.args[pc] === FIELD_BP ? this.rbp : this.nextJunk()); break;
      case ENCODE: this.rbp = this.rsp + 1; break;
      case PUSH_KE: this.push(this.k.kernelEntry); break;
      case POP_GPR: {
        const v = this.pop();
        if (f.args[pc] === FIELD_BP) this.rbp = v;
        break;
      }
      case PUSH_HW_COPY: this.push(this.cur.read(this.cur.end - 40 + f.args[pc]! * 8)); break;
      case IRQ_LINK:
        // call_on_irqstack_cond: on the IRQ stack already (nested), or entered from user mode
        // (the task stack is empty), no switch and no link.
        if (this.cur !== this.stacks.irq && !this.fromUser()) this.stacks.irq.write(this.stacks.irq.end - 8, this.rsp);
        break;
      case IRQ_SWITCH:
        if (this.cur !== this.stacks.irq && !this.fromUser()) {
          a.switchedFrom = this.cur;
          this.cur = this.stacks.irq;
          this.rsp = this.cur.end - 8;
        }
        break;
      case POP_RSP:
        if (a.switchedFrom) {
          this.rsp = this.cur.read(this.rsp);
          this.cur = a.switchedFrom;
          a.switchedFrom = null;
        }
        break;
      case SWITCH_TASK:
        this.cur = this.stacks.task;
        this.rsp = this.cur.end;
        break;
      case PUSH_USER: this.push(userField(PT_REGS_FIELDS[f.args[pc]!]!)); break;
      case CLEAR_RBP: this.rbp = 0; break;
      case SYNC_REGS: {
        const e = a.entry;
        if (e && e.user && this.cur !== this.stacks.task) {
          const t = this.stacks.task;
          const p = t.end - PT_REGS_SIZE;
          for (let o = 0; o < PT_REGS_SIZE; o += 8) t.write(p + o, this.cur.read(this.rsp + o));
          e.regsAt = p;
          e.stack = t;
          this.cur = t;
          this.rsp = p;
        }
        break;
      }
      case IRET: {
        const e = a.entry!;
        const sp = this.cur.read(this.rsp + 24);
        this.chain.pop();
        this.chain.pop();
        this.cur = e.from;
        this.rsp = sp;
        const c = this.chain[this.chain.length - 1];
        if (c && c.kind === ACT) c.stoppedBy = STOP_NONE;
        break;
      }
      case SYSRET:
        this.chain.length = 0;
        break;
      default:
        break; // bodies, jmp, swapgs: no stack effect
    }
  }

  /**
   * Runs the running activation up to instruction boundary k. A call on the way is stepped over:
   * the callee ran and returned, leaving its frame below rsp as stale bytes (as real stacks do).
   */
  runTo(k: number): void {
    const a = this.running();
    const f = a.fn;
    while (a.pc < k) {
      if (f.ops[a.pc] === CALL) {
        const pc = a.pc;
        if (this.rsp - 16 >= this.cur.begin) {
          this.cur.write(this.rsp - 8, f.addr + f.offs[pc]! + f.lens[pc]!);
          this.cur.write(this.rsp - 16, this.rbp);
        }
        a.pc = pc + 1;
      } else this.step();
    }
  }

  /** Runs to the call at index c and makes it: the callee becomes the running activation. */
  callAt(c: number): Act {
    this.runTo(c);
    this.step();
    return this.running();
  }

  /**
   * The CPU takes an exception or interrupt at the running activation's current boundary (or a
   * page fault raised by the instruction there): switch to the IST stack or align rsp to 16
   * (Intel SDM §6.14.2), push SS, RSP, RFLAGS, CS, RIP and the error code, and start the stub.
   */
  interrupt(stubName: string, errorCode = 0): Act {
    const a = this.running();
    const stub = this.k.fn(stubName);
    const info = stub.stub!;
    a.rbpStop = this.rbp;
    a.stoppedBy = STOP_ENTRY;
    const ip = a.fn.addr + a.fn.offs[a.pc]!;
    const from = this.cur;
    const fromSp = this.rsp;
    if (info.ist) {
      this.cur = this.stacks[info.ist];
      this.rsp = this.cur.end;
    } else {
      this.rsp -= ((this.rsp % 16) + 16) % 16;
    }
    this.push(KDS);
    this.push(fromSp);
    this.push(KFLAGS);
    this.push(KCS);
    this.push(ip);
    const ipSlot = this.rsp;
    if (info.errorCode) this.push(errorCode);
    const e: EntryRec = {
      kind: ENTRY, type: info.entry, ip, stack: this.cur, from, fromSp, user: false, stub: null,
      // pt_regs->ip is the hardware frame's rip, or on the NMI stack the "outermost" copy 96 bytes lower.
      regsAt: ipSlot - 128 - (info.entry === 'nmi' ? 96 : 0),
    };
    const s = this.act(stub, NaN, NaN, e);
    e.stub = s;
    this.chain.push(e, s);
    return s;
  }

  /** Whether the innermost entry came from user mode. */
  fromUser(): boolean {
    for (let i = this.chain.length - 1; i >= 0; i--) {
      const r = this.chain[i]!;
      if (r.kind === ENTRY) return r.user;
    }
    return false;
  }

  /**
   * An interrupt while the task runs in user mode: the CPU loads TSS.sp0 — the entry (trampoline)
   * stack under PTI — and pushes the user frame there; the stub moves pt_regs to the task stack.
   */
  userInterrupt(stubName: string): Act {
    const stub = this.k.fn(stubName);
    this.chain.push({ kind: BOTTOM, end: 'user' });
    const es = this.stacks.entry;
    this.cur = es;
    this.rsp = es.end;
    this.rbp = USER_BP;
    this.push(Number(USER_DS));
    this.push(USER_SP);
    this.push(KFLAGS);
    this.push(Number(USER_CS));
    this.push(USER_IP);
    const e: EntryRec = { kind: ENTRY, type: stub.stub!.entry, ip: USER_IP, regsAt: es.end - PT_REGS_SIZE, stack: es, from: this.stacks.task, fromSp: USER_SP, user: true, stub: null };
    const s = this.act(stub, NaN, NaN, e);
    e.stub = s;
    this.chain.push(e, s);
    return s;
  }

  /** Where the running code is. */
  where(): Where {
    const a = this.running();
    return { fn: a.fn.name, insn: a.pc, offset: a.fn.offs[a.pc] ?? a.fn.size };
  }

  ip(): number {
    const a = this.running();
    return a.fn.addr + a.fn.offs[a.pc]!;
  }

  // --- ground truth --------------------------------------------------------------------------------

  /** Whether activation i has a complete frame at the moment it stopped (rbp = its frame). */
  private framed(i: number): boolean {
    const a = this.chain[i] as Act;
    const rbp = i === this.chain.length - 1 ? this.rbp : a.rbpStop;
    return a.fn.framed && rbp === a.retSlot - 8;
  }

  /**
   * §7 / §9 rule 18: a return address is off the bp chain exactly when the activation holding it
   * has no frame at that instant. That is a documented window when the activation stopped because
   * of the sample or an interrupt (prologue, epilogue, frameless leaf); when it stopped because it
   * called out without a frame it is an objtool violation, not a window.
   */
  private callTolerance(i: number): Tolerance | undefined {
    if (this.framed(i)) return undefined;
    const a = this.chain[i] as Act;
    if (i !== this.chain.length - 1 && a.stoppedBy === STOP_CALL) return undefined;
    if (!a.fn.framed) return 'leaf';
    if (a.pc < a.fn.frameFrom) return 'prologue';
    if (a.pc > a.fn.frameTo) return 'epilogue';
    return undefined;
  }

  /**
   * Whether the interrupted ip of entry e can be recovered at this instant by an unwinder of this
   * kernel's layout: encoded_fp and kernel_entry need the marker in place (rbp = &pt_regs|1, or the
   * fake frame as the current frame); section needs the handler's frame, whose return address into
   * the stub is what it recognises. Otherwise the entry is still (or again) in its entry-code window,
   * where the kernel documents FP unwinds as lossy (§7, §9 rule 17).
   */
  private entryTolerance(ei: number): Tolerance | undefined {
    const e = this.chain[ei] as EntryRec;
    const s = e.stub!;
    const info = s.fn.stub!;
    if (info.markFrom >= 0) return s.pc >= info.markFrom && s.pc <= info.markTo ? undefined : 'entry_code';
    const hi = ei + 2;
    const h = this.chain[hi];
    if (h && h.kind === ACT && !Number.isNaN(h.ret) && this.framed(hi)) return undefined;
    return 'entry_code';
  }

  /**
   * Activations below the running one that called out without a frame of their own (objtool rule
   * 3): each one's return address is off the bp chain and not in any documented window, so a walk
   * that follows the chain to the bottom of the stack misses it without noticing.
   */
  hiddenCallers(): number {
    let n = 0;
    for (let i = 0; i < this.chain.length - 1; i++) {
      const r = this.chain[i]!;
      if (r.kind === ACT && !Number.isNaN(r.ret) && !this.framed(i) && r.stoppedBy === STOP_CALL) n++;
    }
    return n;
  }

  /**
   * Whether an encoded frame pointer (&pt_regs|1) is a live rbp value in this chain: rbp itself
   * now, or the rbp an entry interrupted (saved as that entry's regs->bp). A walk meets these
   * values as bps to follow, not as saved bps behind a stub's return address.
   */
  encodedRbpLive(): boolean {
    if ((this.rbp & 1) !== 0) return true;
    for (let i = 1; i < this.chain.length; i++) {
      const r = this.chain[i]!;
      const below = this.chain[i - 1]!;
      if (r.kind === ENTRY && !r.user && below.kind === ACT && (below.rbpStop & 1) !== 0) return true;
    }
    return false;
  }

  truth(): TruthFrame[] {
    const ch = this.chain;
    const frames: TruthFrame[] = [{ ip: big(this.ip()), kind: 'start' }];
    for (let i = ch.length - 1; i >= 0; i--) {
      const r = ch[i]!;
      if (r.kind === ACT) {
        if (Number.isNaN(r.ret)) continue;
        const f: TruthFrame = { ip: big(r.ret), kind: 'call' };
        const t = this.callTolerance(i);
        if (t) f.tolerated = t;
        frames.push(f);
      } else if (r.kind === ENTRY) {
        if (r.user) break;
        const f: TruthFrame = { ip: big(r.ip), kind: 'regs', entry: r.type };
        const t = this.entryTolerance(i);
        if (t) f.tolerated = t;
        frames.push(f);
      } else break;
    }
    return frames;
  }

  private readonly live: { s: MStack; low: number }[] = [];
  private liveN = 0;

  private note(s: MStack, a: number): void {
    const out = this.live;
    for (let i = 0; i < this.liveN; i++) {
      const o = out[i]!;
      if (o.s === s) {
        if (a < o.low) o.low = a;
        return;
      }
    }
    if (this.liveN < out.length) {
      const o = out[this.liveN]!;
      o.s = s;
      o.low = a;
    } else out.push({ s, low: a });
    this.liveN++;
  }

  /** Stacks the chain uses, innermost first, each with the lowest address that holds live data. */
  liveStacks(): { s: MStack; low: number }[] {
    this.liveN = 0;
    this.note(this.cur, this.rsp);
    for (let i = this.chain.length - 1; i >= 0; i--) {
      const r = this.chain[i]!;
      if (r.kind === ACT) {
        if (!Number.isNaN(r.ret)) this.note(r.stack, r.retSlot - 8);
        if (r.switchedFrom) this.note(this.stacks.irq, this.stacks.irq.end - 8);
      } else if (r.kind === ENTRY) {
        this.note(r.stack, r.regsAt);
        if (!r.user) this.note(r.from, r.fromSp);
      }
    }
    return this.live.slice(0, this.liveN);
  }

  /** The sample of this instant: registers, the live part of every stack in use (plus stale bytes just below), truth. */
  capture(meta: Omit<Sample, 'stacks' | 'regs' | 'truth'>, slack = 64): Sample {
    const stacks: SampleStack[] = [];
    const live = this.liveStacks();
    for (let i = 0; i < live.length; i++) {
      const { s, low } = live[i]!;
      let from = Math.floor((low - slack) / 64) * 64;
      if (from < s.begin) from = s.begin;
      if (from >= s.end) from = s.end - 64;
      const off = from - s.begin;
      stacks.push({ type: s.type, begin: s.beginBig, end: s.endBig, windows: [{ start: s.windowStart(off), bytes: copyOut(s.bytes, off, s.size) }] });
    }
    const regs: Regs = { ip: big(this.ip()), sp: BigInt.asUintN(64, BigInt(this.rsp)), bp: big(this.rbp), cs: KCS_BIG, ss: KDS_BIG, flags: KFLAGS_BIG };
    const out = meta as Sample;
    out.regs = regs;
    out.stacks = stacks;
    out.truth = { frames: this.truth() };
    return out;
  }
}

const KCS_BIG = BigInt(KCS);
const KDS_BIG = BigInt(KDS);
const KFLAGS_BIG = BigInt(KFLAGS);

// Captured windows are copied into shared slabs: one ArrayBuffer per 256 KiB of samples instead of
// one per window (allocation and GC of small ArrayBuffers dominated emission otherwise). A slab
// stays alive while any sample that points into it does.
const SLAB = 256 * 1024;
let slab = new Uint8Array(SLAB);
let slabAt = 0;
function copyOut(src: Uint8Array, from: number, to: number): Uint8Array {
  const n = to - from;
  if (n > SLAB) return src.slice(from, to);
  if (slabAt + n > SLAB) {
    slab = new Uint8Array(SLAB);
    slabAt = 0;
  }
  const out = slab.subarray(slabAt, slabAt + n);
  out.set(src.subarray(from, to));
  slabAt += (n + 7) & ~7;
  return out;
}

/** BigInt(k * 64) for every 64-byte offset of the largest stack. */
const OFF_BIG: bigint[] = Array.from({ length: 1024 }, (_, k) => BigInt(k * 64));

function userField(f: string): number {
  switch (f) {
    case 'ss': return Number(USER_DS);
    case 'sp': return USER_SP;
    case 'cs': return Number(USER_CS);
    case 'ip': return USER_IP;
    case 'flags': return KFLAGS;
    default: return 0;
  }
}

const BIG_CACHE = new Map<number, bigint>();
/** Signed form → u64 bigint; text addresses repeat, so they are cached. */
export function big(s: number): bigint {
  let b = BIG_CACHE.get(s);
  if (b === undefined) {
    b = BigInt.asUintN(64, BigInt(s));
    // Only text repeats (the top 2 GiB); stack addresses are new every time.
    if (s >= -2147483648 && BIG_CACHE.size < 100000) BIG_CACHE.set(s, b);
  }
  return b;
}
