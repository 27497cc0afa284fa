// A hand-written builder of byte-exact x86-64 kernel stack images, for the verdict tests.
//
// It plays the part of hardware and entry code, one instruction-level step at a time: `call`
// pushes a return address, `frame()` is `push %rbp; mov %rsp,%rbp`, an exception pushes the
// hardware frame (after aligning RSP to 16) and the stub completes pt_regs, an IRQ handler switches
// to the IRQ stack after writing the link word at its top, an NMI runs on its IST stack. While
// building it keeps the logical call chain, from which the ground truth of a sample is read off —
// never from any unwinder. Rules used: reference/kernel-unwinders.md §1.2, §2.1, §2.3–2.7, §7.
//
// Independence: this file imports layout constants, the Sample model, u64 helpers and the symbol
// parser only. It must not import services/core/unwind or services/core/check.
import {
  EFLAGS_FIXED,
  EFLAGS_IF,
  KERNEL_CS,
  KERNEL_DS,
  PT_REGS_FIELDS,
  PT_REGS_SIZE,
  USER_CS,
  USER_DS,
  WORD,
  stackSize,
  type PtRegsField,
  type StackType,
} from '../../services/core/stack/layout.ts';
import type { Regs, Sample, SampleStack, Tolerance, TruthFrame } from '../../services/core/dump/sample.ts';
import { KernelProfile, type EntryLayout } from '../../services/core/symbols/profile.ts';
import { U64_MASK, formatHex64 } from '../../services/core/u64.ts';

export type { EntryLayout };

// ---------------------------------------------------------------------------------------------
// The synthetic kernel: a handful of functions with sizes, laid out like a real x86-64 vmlinux
// (core text from 0xffffffff81000000, .entry.text further up with the IDT stubs bracketed by the
// __irqentry_text markers, a data symbol past _etext).
// ---------------------------------------------------------------------------------------------

export interface KernelFunction {
  name: string;
  start: bigint;
  size: number;
  section: 'text' | 'entry' | 'irqentry';
}

const CORE_TEXT: [string, number][] = [
  ['do_syscall_64', 0x110],
  ['__x64_sys_read', 0x40],
  ['ksys_read', 0xd0],
  ['vfs_read', 0x1a0],
  ['seq_read', 0x1e0],
  ['proc_single_show', 0x90],
  ['nofp_asm_helper', 0x50],
  ['copy_user_generic', 0x40],
  ['__schedule', 0x900],
  ['schedule', 0xa0],
  ['io_schedule', 0x40],
  ['folio_wait_bit_common', 0x330],
  ['exc_page_fault', 0x1b0],
  ['handle_mm_fault', 0x2a0],
  ['common_interrupt', 0xc0],
  ['__common_interrupt', 0x110],
  ['handle_irq_event', 0x80],
  ['sysvec_apic_timer_interrupt', 0xa0],
  ['hrtimer_interrupt', 0x230],
  ['exc_nmi', 0x140],
  ['perf_event_nmi_handler', 0x60],
  ['ret_from_fork', 0x70],
  ['kthread', 0x100],
  ['worker_thread', 0x3a0],
];
/** .entry.text before the IDT stubs. */
const ENTRY_TEXT: [string, number][] = [
  ['entry_SYSCALL_64', 0xc0],
  ['ret_from_fork_asm', 0x30],
  ['__switch_to_asm', 0x50],
];
/** Between __irqentry_text_start and __irqentry_text_end (v5.8+: all IDT stubs). */
const IRQENTRY_TEXT: [string, number][] = [
  ['asm_exc_page_fault', 0x30],
  ['asm_common_interrupt', 0x30],
  ['asm_sysvec_apic_timer_interrupt', 0x20],
  ['asm_exc_nmi', 0x1a0],
];

/** The entry each stub stands for, as the kernel's traces name it by the stub symbol. */
export const STUB_ENTRY: Readonly<Record<string, string>> = {
  asm_exc_page_fault: 'page_fault',
  asm_common_interrupt: 'irq',
  asm_sysvec_apic_timer_interrupt: 'timer',
  asm_exc_nmi: 'nmi',
};

export const TEXT_BASE = 0xffffffff81000000n;
export const ENTRY_TEXT_BASE = 0xffffffff81e00000n;
export const ETEXT = 0xffffffff81e01000n;
/** A data symbol past _etext: a "return address" here is not kernel text. */
export const DATA_SYMBOL = 'jiffies';
export const DATA_ADDRESS = 0xffffffff82a05000n;

export interface KernelOptions {
  /** Include the dummy `kernel_entry` function of the 2016 proposal (a). */
  kernelEntry?: boolean;
  /** Include __entry_text_* / __irqentry_text_* (default true). */
  entryMarkers?: boolean;
}

export class SyntheticKernel {
  readonly functions = new Map<string, KernelFunction>();
  readonly kallsyms: string;

  constructor(readonly opts: KernelOptions = {}) {
    const lines: [bigint, string, string][] = [];
    let addr = TEXT_BASE;
    const place = (list: [string, number][], section: KernelFunction['section']): void => {
      for (const [name, size] of list) {
        this.functions.set(name, { name, start: addr, size, section });
        lines.push([addr, name.startsWith('__') && section === 'text' ? 't' : 'T', name]);
        addr += BigInt(size);
        addr = (addr + 15n) & ~15n;
      }
    };
    lines.push([TEXT_BASE, 'T', '_stext']);
    place(opts.kernelEntry ? [...CORE_TEXT, ['kernel_entry', 0x10]] : CORE_TEXT, 'text');
    const markers = opts.entryMarkers ?? true;
    addr = ENTRY_TEXT_BASE;
    if (markers) lines.push([addr, 'T', '__entry_text_start']);
    place(ENTRY_TEXT, 'entry');
    if (markers) lines.push([addr, 'T', '__irqentry_text_start']);
    place(IRQENTRY_TEXT, 'irqentry');
    if (markers) {
      lines.push([addr, 'T', '__irqentry_text_end']);
      lines.push([addr, 'T', '__entry_text_end']);
    }
    if (addr > ETEXT) throw new Error('synthetic entry text overflows _etext');
    lines.push([ETEXT, 'T', '_etext']);
    lines.push([DATA_ADDRESS, 'D', DATA_SYMBOL]);
    lines.push([DATA_ADDRESS + 0x40n, 'd', 'init_task_ptr']);
    lines.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.kallsyms = lines.map(([a, t, n]) => `${formatHex64(a)} ${t} ${n}\n`).join('');
  }

  fn(name: string): KernelFunction {
    const f = this.functions.get(name);
    if (!f) throw new Error(`synthetic kernel has no function ${name}`);
    return f;
  }

  sym(name: string): bigint {
    return this.fn(name).start;
  }

  /** name+off, checked to lie inside the function. */
  at(name: string, off: number): bigint {
    const f = this.fn(name);
    if (off < 0 || off >= f.size) throw new Error(`${name}+0x${off.toString(16)} is outside ${name} (size 0x${f.size.toString(16)})`);
    return f.start + BigInt(off);
  }

  /** The function containing addr (a plain containment test on the layout above). */
  nameAt(addr: bigint): string | undefined {
    for (const f of this.functions.values()) if (addr >= f.start && addr < f.start + BigInt(f.size)) return f.name;
    return undefined;
  }

  profile(layouts: EntryLayout[]): KernelProfile {
    return KernelProfile.fromKallsyms(this.kallsyms, { layouts, file: 'synthetic.kallsyms' });
  }
}

export function syntheticKernel(opts: KernelOptions = {}): SyntheticKernel {
  return new SyntheticKernel(opts);
}

// ---------------------------------------------------------------------------------------------
// Stacks
// ---------------------------------------------------------------------------------------------

/** Where this builder puts each stack by default (task: 16 KiB aligned; IST stacks in the CEA). */
export const STACK_BASE: Readonly<Record<StackType, bigint>> = {
  task: 0xffffc90000630000n,
  irq: 0xffffc90000008000n,
  nmi: 0xfffffe000000d000n,
  db: 0xfffffe000000f000n,
  mce: 0xfffffe0000011000n,
  df: 0xfffffe0000009000n,
  entry: 0xfffffe0000003000n,
};

export class StackImage {
  readonly end: bigint;
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  /** Lowest address written so far. */
  low: bigint;

  constructor(
    readonly type: StackType,
    readonly begin: bigint,
    size = stackSize(type),
  ) {
    this.end = begin + BigInt(size);
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.low = this.end;
  }

  contains(addr: bigint, len = WORD): boolean {
    return addr >= this.begin && addr + BigInt(len) <= this.end;
  }

  write(addr: bigint, value: bigint): void {
    if (!this.contains(addr)) throw new Error(`write at ${formatHex64(addr)} is outside the ${this.type} stack`);
    if (addr % 8n !== 0n) throw new Error(`unaligned stack write at ${formatHex64(addr)}`);
    this.view.setBigUint64(Number(addr - this.begin), value & U64_MASK, true);
    if (addr < this.low) this.low = addr;
  }

  read(addr: bigint): bigint {
    if (!this.contains(addr)) throw new Error(`read at ${formatHex64(addr)} is outside the ${this.type} stack`);
    return this.view.getBigUint64(Number(addr - this.begin), true);
  }
}

// ---------------------------------------------------------------------------------------------
// The machine: one CPU's rsp/rbp over a set of stacks, and the logical chain of activations.
// ---------------------------------------------------------------------------------------------

type ActivationState = 'prologue' | 'body' | 'epilogue' | 'frameless' | 'entry';

export interface Activation {
  kind: 'act';
  fn: string;
  /** Return address pushed by the call that created this activation (into the caller). */
  ret?: bigint;
  retSlot?: bigint;
  retStack?: StackType;
  /** Where `push %rbp` stored the caller's rbp; the frame address once `mov %rsp,%rbp` ran. */
  bp?: bigint;
  state: ActivationState;
}

interface EntryRecord {
  kind: 'entry';
  entry: string;
  /** The interrupted ip. */
  ip: bigint;
  regsAt: bigint;
  stack: StackType;
}

interface BottomRecord {
  kind: 'bottom';
  end: 'user' | 'kthread';
}

type ChainRecord = Activation | EntryRecord | BottomRecord;

/** One truth frame plus where its value lives in the image (for byte-exact assertions). */
export interface ExpectedFrame extends TruthFrame {
  /** Function name (for call frames: the function containing ret-1, i.e. the caller). */
  fn: string;
  stack: StackType;
  slot?: bigint;
  regsAt?: bigint;
}

export interface BuiltSample {
  sample: Sample;
  expected: ExpectedFrame[];
  /** The bottom the chain ends in. */
  end: 'user' | 'kthread';
}

export interface SampleOptions {
  /** Offset in the current function of the sampled ip. */
  at: number;
  trigger?: string;
  /** Per stack: capture only [from, to) instead of [lowest written word, end). */
  capture?: Partial<Record<StackType, { from: bigint; to: bigint }>>;
  /** Extra or replaced sampled registers. */
  regs?: Regs;
}

export const KERNEL_FLAGS = EFLAGS_FIXED | EFLAGS_IF | 0x44n; // 0x246: IF, ZF, PF
export const USER_IP = 0x00007f3a1c2e4a5dn;
export const USER_SP = 0x00007ffd4c1e3a10n;

export class Machine {
  readonly stacks = new Map<StackType, StackImage>();
  cur!: StackImage;
  rsp = 0n;
  rbp = 0n;
  readonly chain: ChainRecord[] = [];

  constructor(
    readonly kernel: SyntheticKernel,
    readonly layout: EntryLayout,
  ) {}

  stack(type: StackType, begin: bigint = STACK_BASE[type]): StackImage {
    if (this.stacks.has(type)) throw new Error(`stack ${type} allocated twice`);
    const s = new StackImage(type, begin);
    this.stacks.set(type, s);
    return s;
  }

  get(type: StackType): StackImage {
    const s = this.stacks.get(type);
    if (!s) throw new Error(`no ${type} stack`);
    return s;
  }

  /** The innermost activation (the code that is running). */
  get running(): Activation {
    const r = this.chain[this.chain.length - 1];
    if (!r || r.kind !== 'act') throw new Error('nothing is running');
    return r;
  }

  /** The innermost activation of fn. */
  act(fn: string): Activation {
    for (let i = this.chain.length - 1; i >= 0; i--) {
      const r = this.chain[i]!;
      if (r.kind === 'act' && r.fn === fn) return r;
    }
    throw new Error(`no activation of ${fn}`);
  }

  /** Write any word of any stack (corruption). */
  poke(addr: bigint, value: bigint): void {
    for (const s of this.stacks.values()) {
      if (s.contains(addr)) return s.write(addr, value);
    }
    throw new Error(`${formatHex64(addr)} is on no stack`);
  }

  peek(addr: bigint): bigint {
    for (const s of this.stacks.values()) if (s.contains(addr)) return s.read(addr);
    throw new Error(`${formatHex64(addr)} is on no stack`);
  }

  push(v: bigint): bigint {
    this.rsp -= 8n;
    if (this.rsp < this.cur.begin) throw new Error(`${this.cur.type} stack overflow`);
    this.cur.write(this.rsp, v);
    return this.rsp;
  }

  pop(): bigint {
    const v = this.cur.read(this.rsp);
    this.rsp += 8n;
    return v;
  }

  // --- bottoms of the task stack -------------------------------------------------------------

  /**
   * entry_SYSCALL_64: switch to the task stack top, push the user iret frame and the GPRs
   * (pt_regs at task_pt_regs = top - 168). PUSH_AND_CLEAR_REGS zeroes rbp, and syscall entry
   * does not encode it (§2.3 "Entry code doesn't encode the regs pointer for syscalls").
   */
  syscall(opts: { nr?: bigint; userIp?: bigint; userSp?: bigint; userBp?: bigint } = {}): bigint {
    const task = this.stacks.get('task') ?? this.stack('task');
    this.cur = task;
    this.rsp = task.end;
    const ip = opts.userIp ?? USER_IP;
    const regs: Partial<Record<PtRegsField, bigint>> = {
      ss: USER_DS, sp: opts.userSp ?? USER_SP, flags: KERNEL_FLAGS, cs: USER_CS, ip,
      orig_ax: opts.nr ?? 0n, ax: 0xffffffffffffffdan /* -ENOSYS */, cx: ip, r11: KERNEL_FLAGS,
      bp: opts.userBp ?? 0x00007ffd4c1e3a80n,
    };
    const p = this.pushPtRegs(regs);
    this.rbp = 0n;
    this.chain.push({ kind: 'bottom', end: 'user' });
    this.chain.push({ kind: 'act', fn: 'entry_SYSCALL_64', state: 'entry' });
    return p;
  }

  /**
   * A kthread as copy_thread() leaves it and ret_from_fork_asm runs it: zeroed (kernel-mode,
   * cs = 0) pt_regs at the top; __switch_to_asm popped the inactive_task_frame, so rsp =
   * task_pt_regs and rbp = frame->bp (encode_frame_pointer(childregs) on encoded-fp kernels, 0 on
   * the 2016 kernels).
   */
  kthread(): bigint {
    const task = this.stacks.get('task') ?? this.stack('task');
    this.cur = task;
    this.rsp = task.end;
    const p = this.pushPtRegs({});
    this.rbp = this.layout === 'encoded_fp' ? p | 1n : 0n;
    this.chain.push({ kind: 'bottom', end: 'kthread' });
    this.chain.push({ kind: 'act', fn: 'ret_from_fork_asm', state: 'entry' });
    return p;
  }

  // --- calls and frames ------------------------------------------------------------------------

  /** The running function calls fn; execution would resume at running+returnTo. */
  call(fn: string, opts: { returnTo: number }): Activation {
    const caller = this.running;
    const ret = this.kernel.at(caller.fn, opts.returnTo);
    this.kernel.fn(fn);
    const slot = this.push(ret);
    const a: Activation = { kind: 'act', fn, ret, retSlot: slot, retStack: this.cur.type, state: 'prologue' };
    this.chain.push(a);
    return a;
  }

  /** push %rbp (first prologue instruction). */
  pushRbp(): void {
    const a = this.running;
    if (a.state !== 'prologue' || a.bp !== undefined) throw new Error(`${a.fn}: push %rbp out of order`);
    a.bp = this.push(this.rbp);
  }

  /** mov %rsp,%rbp (second prologue instruction). */
  movRbp(): void {
    const a = this.running;
    if (a.state !== 'prologue' || a.bp !== this.rsp) throw new Error(`${a.fn}: mov %rsp,%rbp out of order`);
    this.rbp = this.rsp;
    a.state = 'body';
  }

  /** push %rbp; mov %rsp,%rbp; then locals. */
  frame(locals = 0): void {
    this.pushRbp();
    this.movRbp();
    this.locals(locals);
  }

  /** sub $n,%rsp */
  locals(n: number): void {
    if (n % 8 !== 0) throw new Error('locals must be whole words');
    this.rsp -= BigInt(n);
    if (this.rsp < this.cur.begin) throw new Error(`${this.cur.type} stack overflow`);
    if (n > 0) this.cur.write(this.rsp, 0n);
  }

  /** call fn; push %rbp; mov %rsp,%rbp; sub $locals,%rsp. */
  enter(fn: string, returnTo: number, locals = 0x10): Activation {
    const a = this.call(fn, { returnTo });
    this.frame(locals);
    return a;
  }

  /** The running function never sets up a frame (asm leaf, or objtool-violating asm). */
  noFrame(pushes: bigint[] = [], locals = 0): void {
    const a = this.running;
    if (a.state !== 'prologue' || a.bp !== undefined) throw new Error(`${a.fn}: noFrame after prologue`);
    for (const v of pushes) this.push(v);
    this.locals(locals);
    a.state = 'frameless';
  }

  /** Epilogue: `leave` (mov %rbp,%rsp; pop %rbp) — rsp now points at the return address. */
  leave(): void {
    const a = this.running;
    if (a.state !== 'body' || a.bp === undefined) throw new Error(`${a.fn}: leave without a frame`);
    this.rsp = a.bp;
    this.rbp = this.pop();
    a.state = 'epilogue';
  }

  // --- entries ---------------------------------------------------------------------------------

  /**
   * An IDT entry taken in kernel mode while the running function is at +at: the CPU aligns RSP to
   * 16 (or loads the IST pointer), pushes SS, RSP, RFLAGS, CS, RIP (+ error code); the stub pushes
   * the rest of pt_regs; then the layout-specific part (§0, §2.3):
   * - encoded_fp: rbp = &pt_regs | 1 (ENCODE_FRAME_POINTER);
   * - section: rbp left as interrupted;
   * - kernel_entry: push &kernel_entry; push %rbp; mov %rsp,%rbp.
   * The caller then makes the stub call its C handler with call(handler, {returnTo}).
   */
  interrupt(stub: string, opts: { at: number; errorCode?: bigint; ist?: StackImage }): bigint {
    const entry = STUB_ENTRY[stub];
    if (!entry) throw new Error(`${stub} is not a stub of the synthetic kernel`);
    const interrupted = this.running;
    const ip = this.kernel.at(interrupted.fn, opts.at);
    const oldRsp = this.rsp;
    if (opts.ist) {
      this.cur = opts.ist;
      this.rsp = opts.ist.end;
    } else {
      this.rsp &= ~15n;
    }
    // Hardware frame.
    this.push(KERNEL_DS);
    this.push(oldRsp);
    this.push(KERNEL_FLAGS);
    this.push(KERNEL_CS);
    this.push(ip);
    if (stub === 'asm_exc_nmi') {
      // Kernel-mode NMI (§2.5): temp rdx, "NMI executing", the "iret" and "outermost" copies of
      // the hardware frame; pt_regs->ip..ss is the lowest copy, so pt_regs = top - 264.
      this.push(0n);
      this.push(1n);
      for (let copy = 0; copy < 2; copy++) {
        this.push(KERNEL_DS);
        this.push(oldRsp);
        this.push(KERNEL_FLAGS);
        this.push(KERNEL_CS);
        this.push(ip);
      }
    }
    // The hardware frame (or its copy) is pt_regs->ip..ss; complete pt_regs below it.
    this.rsp += 5n * 8n;
    const p = this.pushPtRegs({
      ss: KERNEL_DS, sp: oldRsp, flags: KERNEL_FLAGS, cs: KERNEL_CS, ip,
      orig_ax: opts.errorCode ?? U64_MASK, bp: this.rbp, bx: 0xffff888003c1e400n,
    });
    this.chain.push({ kind: 'entry', entry, ip, regsAt: p, stack: this.cur.type });
    this.chain.push({ kind: 'act', fn: stub, state: 'entry' });
    switch (this.layout) {
      case 'encoded_fp':
        this.rbp = p | 1n;
        break;
      case 'section':
        break;
      case 'kernel_entry': {
        const ke = this.kernel.functions.get('kernel_entry');
        if (!ke) throw new Error('the kernel_entry layout needs a kernel built with kernelEntry');
        this.push(ke.start);
        this.push(this.rbp);
        this.rbp = this.rsp;
        break;
      }
    }
    return p;
  }

  /**
   * call_on_irqstack(): write the current rsp into the word at the IRQ stack top (the link the
   * unwinders follow back), switch rsp to top - 8; the next call pushes its return address at
   * top - 16 (§2.4).
   */
  switchToIrqStack(irq: StackImage = this.stacks.get('irq') ?? this.stack('irq')): bigint {
    const link = irq.end - 8n;
    irq.write(link, this.rsp);
    this.cur = irq;
    this.rsp = link;
    return link;
  }

  // --- the pt_regs writer ----------------------------------------------------------------------

  /** Writes a struct pt_regs (field order of layout.ts) right below rsp; returns its address. */
  private pushPtRegs(fields: Partial<Record<PtRegsField, bigint>>): bigint {
    const p = this.rsp - BigInt(PT_REGS_SIZE);
    if (p < this.cur.begin) throw new Error(`${this.cur.type} stack overflow`);
    PT_REGS_FIELDS.forEach((f, i) => this.cur.write(p + BigInt(i * 8), fields[f] ?? 0n));
    this.rsp = p;
    return p;
  }

  // --- the sample ------------------------------------------------------------------------------

  /** The ground truth of the current instant, leaf first, with where each value lives. */
  truth(at: number): { frames: ExpectedFrame[]; end: 'user' | 'kthread' } {
    const running = this.running;
    const frames: ExpectedFrame[] = [
      { ip: this.kernel.at(running.fn, at), kind: 'start', fn: running.fn, stack: this.stackOfRsp() },
    ];
    let end: 'user' | 'kthread' | undefined;
    for (let i = this.chain.length - 1; i >= 0 && end === undefined; i--) {
      const r = this.chain[i]!;
      if (r.kind === 'bottom') {
        end = r.end;
      } else if (r.kind === 'entry') {
        frames.push({ ip: r.ip, kind: 'regs', entry: r.entry, fn: this.kernel.nameAt(r.ip)!, stack: r.stack, regsAt: r.regsAt });
      } else if (r.ret !== undefined) {
        const f: ExpectedFrame = { ip: r.ret, kind: 'call', fn: this.kernel.nameAt(r.ret - 1n)!, stack: r.retStack!, slot: r.retSlot! };
        const tol = this.tolerance(i);
        if (tol) f.tolerated = tol;
        frames.push(f);
      }
    }
    if (end === undefined) throw new Error('the chain has no bottom (call syscall() or kthread() first)');
    return { frames, end };
  }

  /**
   * §7 / §9 rule 18: a return address is off the bp chain exactly when the activation that holds
   * it has no frame. That is a documented window (prologue, epilogue, frameless leaf) when the
   * activation was stopped by the sample or an interrupt; when it was stopped because it called
   * another function without a frame, it is an objtool violation (not tolerated).
   */
  private tolerance(i: number): Tolerance | undefined {
    const a = this.chain[i] as Activation;
    if (a.state === 'body' || a.state === 'entry') return undefined;
    const next = this.chain[i + 1];
    const calledOut = next !== undefined && next.kind === 'act' && next.ret !== undefined;
    if (calledOut) return undefined;
    return a.state === 'frameless' ? 'leaf' : a.state;
  }

  private stackOfRsp(): StackType {
    return this.cur.type;
  }

  sample(opts: SampleOptions): BuiltSample {
    const { frames, end } = this.truth(opts.at);
    const regs: Regs = {
      ip: frames[0]!.ip, sp: this.rsp, bp: this.rbp, cs: KERNEL_CS, ss: KERNEL_DS, flags: KERNEL_FLAGS,
      ...opts.regs,
    };
    const stacks: SampleStack[] = [];
    for (const s of this.stacks.values()) {
      if (s.low === s.end && !opts.capture?.[s.type]) continue;
      const want = opts.capture?.[s.type];
      let from = want ? want.from : (s.low < this.rsp || s.type !== this.cur.type ? s.low : this.rsp) & ~63n;
      let to = want ? want.to : s.end;
      if (from < s.begin) from = s.begin;
      if (to > s.end) to = s.end;
      const bytes = s.bytes.slice(Number(from - s.begin), Number(to - s.begin));
      stacks.push({ type: s.type, begin: s.begin, end: s.end, windows: to > from ? [{ start: from, bytes }] : [] });
    }
    const truth: TruthFrame[] = frames.map(({ ip, kind, entry, tolerated }) => {
      const t: TruthFrame = { ip, kind };
      if (entry !== undefined) t.entry = entry;
      if (tolerated !== undefined) t.tolerated = tolerated;
      return t;
    });
    const sample: Sample = { trigger: opts.trigger ?? 'nmi', comm: 'cat', pid: 4242, tid: 4242, cpu: 0, regs, stacks, truth: { frames: truth } };
    return { sample, expected: frames, end };
  }
}

/** Task top, task_pt_regs and the FP "last frame" for a task stack (§1.2, §2.7). */
export function taskGeometry(task: StackImage): { top: bigint; ptRegs: bigint; lastFrame: bigint } {
  const ptRegs = task.end - BigInt(PT_REGS_SIZE);
  return { top: task.end, ptRegs, lastFrame: ptRegs - 16n };
}

/** A deep copy of a sample (so one test can corrupt bytes without touching another's). */
export function cloneSample(s: Sample): Sample {
  return {
    ...s,
    regs: s.regs ? { ...s.regs } : undefined,
    stacks: s.stacks.map((st) => ({ ...st, windows: st.windows.map((w) => ({ start: w.start, bytes: w.bytes.slice() })) })),
    truth: s.truth ? { frames: s.truth.frames.map((f) => ({ ...f })) } : undefined,
  } as Sample;
}
