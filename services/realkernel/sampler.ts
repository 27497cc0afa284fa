// The gdbstub sampler: stops the guest at random (seeded) instants like an NMI would, reads the
// registers and the used part of the current stack up to its top — and, on the IRQ stack, the
// interrupted task stack it links to — and makes a full-state Sample of it.
// Stack bounds come from the guest's own per-CPU data (arch/x86: cpu_current_top_of_stack,
// hardirq_stack_ptr = IRQ stack top - 8, cpu_tss_rw.x86_tss.sp0 = entry trampoline stack top),
// never from an unwinder.
import type { Regs, Sample, SampleStack } from '../core/dump/sample.ts';
import type { StackType } from '../core/stack/layout.ts';
import { stackSize, PAGE_SIZE } from '../core/stack/layout.ts';
import type { GdbStub } from './gdbstub.ts';

/** Per-CPU and data symbols the sampler reads. */
export const SAMPLER_SYMBOLS = ['__per_cpu_offset', 'cpu_current_top_of_stack', 'hardirq_stack_ptr', 'current_task', 'cpu_tss_rw', 'init_task'] as const;

/** task_struct.pid of this build (from its -dbg DWARF, reference/real-kernel.md caveat 7): used only when comm sits where that build has it. */
const KNOWN_LAYOUT = { comm: 0xba0, pid: 0x970 };
/** struct x86_hw_tss { u32 reserved1; u64 sp0; u64 sp1; u64 sp2; u64 reserved2; u64 ist[7]; ... } __packed */
const TSS_SP0 = 4;
const TSS_IST = 36;
/**
 * The IST stacks by their TSS slot (arch/x86/include/asm/page_64_types.h: IST_INDEX_DF 0, NMI 1,
 * DB 2, MCE 3): ist[n] holds the top of that stack in the CPU's cpu_entry_area (CEA_ESTACK_TOP),
 * which is where the CPU pushes the hardware frame.
 */
const IST_SLOTS: readonly [StackType, number][] = [['df', 0], ['nmi', 1], ['db', 2], ['mce', 3]];
const THREAD_SIZE = stackSize('task');
const VMALLOC_START = 0xffffc90000000000n;
const KERNEL_HALF = 0xffff800000000000n;
const CPU_ENTRY_AREA = 0xfffffe0000000000n;
const CPU_ENTRY_AREA_END = 0xfffffe8000000000n;
/** Bytes read below the sampled rsp (stale, but entry-code ORC data may refer to them). */
const BELOW_SP = 128n;

function inRange(x: bigint, top: bigint | undefined, size: bigint): boolean {
  return top !== undefined && x >= top - size && x < top;
}

function maxBig(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

/** mulberry32: a small seeded PRNG, so that a run's stop intervals can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface StepTimes {
  stop: number;
  regs: number;
  memory: number;
}

export interface TakenSample {
  sample: Sample;
  times: StepTimes;
  /** Where the sampled rsp was: a stack type, or 'user' / 'unknown'. */
  where: StackType | 'user' | 'unknown';
}

export interface SamplerOptions {
  seed: number;
  /** Random pause between samples, ms: uniform in [min, max). */
  minIntervalMs?: number;
  maxIntervalMs?: number;
  buildId: string;
  host: string;
}

const GPR: [string, keyof Regs][] = [
  ['rax', 'ax'], ['rbx', 'bx'], ['rcx', 'cx'], ['rdx', 'dx'], ['rsi', 'si'], ['rdi', 'di'], ['rbp', 'bp'], ['rsp', 'sp'],
  ['r8', 'r8'], ['r9', 'r9'], ['r10', 'r10'], ['r11', 'r11'], ['r12', 'r12'], ['r13', 'r13'], ['r14', 'r14'], ['r15', 'r15'],
  ['rip', 'ip'], ['eflags', 'flags'], ['cs', 'cs'], ['ss', 'ss'],
];

export class Sampler {
  /**
   * Reuse the per-CPU stack bounds between captures while rsp stays on those stacks (a single-step
   * sweep: nothing else runs between two steps, so only the stepped code can move them).
   */
  keepBounds = false;
  private bounds: Bounds | undefined;
  private readonly rand: () => number;
  private perCpuBase: bigint | undefined;
  private commOffset: number | undefined;
  private readonly t0 = performance.now();
  private n = 0;

  constructor(
    private readonly gdb: GdbStub,
    private readonly syms: Map<string, bigint>,
    private readonly o: SamplerOptions,
  ) {
    this.rand = seededRandom(o.seed);
  }

  /** One-time reads while the VM is stopped: the per-CPU base of CPU 0 and where comm lives. */
  async init(): Promise<void> {
    const pco = this.syms.get('__per_cpu_offset');
    // A uniprocessor build (CONFIG_SMP=n) has no __per_cpu_offset: its per-CPU variables are plain
    // globals, and kallsyms gives their absolute addresses.
    if (pco !== undefined) this.perCpuBase = await this.gdb.readU64(pco);
    else if ((this.syms.get('current_task') ?? 0n) >= KERNEL_HALF) this.perCpuBase = 0n;
    const init = this.syms.get('init_task');
    if (init !== undefined) {
      // The idle task of CPU 0 is called "swapper/0": its comm field is where that string is.
      const b = await this.gdb.readMemory(init, 0x2000);
      const at = Buffer.from(b).indexOf('swapper/0\0', 0, 'latin1');
      if (at >= 0) this.commOffset = at;
    }
  }

  get commFieldOffset(): number | undefined {
    return this.commOffset;
  }

  private async perCpu(name: string): Promise<bigint | undefined> {
    const off = this.syms.get(name);
    if (off === undefined || this.perCpuBase === undefined) return undefined;
    return this.gdb.readU64(this.perCpuBase + off);
  }

  /** Lets the guest run for a random interval, stops it and takes one sample (the VM stays stopped). */
  async take(): Promise<TakenSample> {
    const lo = this.o.minIntervalMs ?? 5;
    const hi = this.o.maxIntervalMs ?? 50;
    const wait = lo + this.rand() * (hi - lo);
    this.gdb.cont();
    await new Promise((r) => setTimeout(r, wait));
    let t = performance.now();
    await this.gdb.interrupt();
    const stop = performance.now() - t;
    const taken = await this.capture('nmi');
    taken.times.stop = stop;
    return taken;
  }

  /** A sample of the VM as it is stopped now (after a stop, a breakpoint or a single step). */
  async capture(trigger: string, withTask = true): Promise<TakenSample> {
    let t = performance.now();
    const g = await this.gdb.readRegisters();
    const regsMs = performance.now() - t;
    t = performance.now();
    const regs: Regs = {};
    for (const [from, to] of GPR) {
      const v = g.get(from);
      if (v !== undefined) regs[to] = v;
    }
    const sample: Sample = {
      cpu: 0, time: ((performance.now() - this.t0) / 1000).toFixed(6), trigger,
      host: this.o.host, kernel: this.o.buildId, regs, stacks: [],
    };
    if (withTask) await this.task(sample);
    let where: TakenSample['where'] = 'user';
    if (((regs.cs ?? 0n) & 3n) === 0n) where = await this.stacks(sample, regs.sp ?? 0n);
    const memory = performance.now() - t;
    this.n++;
    return { sample, times: { stop: 0, regs: regsMs, memory }, where };
  }

  private async task(s: Sample): Promise<void> {
    const cur = await this.perCpu('current_task');
    if (cur === undefined || this.commOffset === undefined) return;
    const b = await this.gdb.readMemory(cur + BigInt(this.commOffset), 16);
    const nul = b.indexOf(0);
    s.comm = Buffer.from(b.subarray(0, nul < 0 ? b.length : nul)).toString('latin1');
    if (this.commOffset === KNOWN_LAYOUT.comm) {
      const pid = await this.gdb.readMemory(cur + BigInt(KNOWN_LAYOUT.pid), 8);
      if (pid.length === 8) {
        const dv = new DataView(pid.buffer, pid.byteOffset, 8);
        s.pid = dv.getInt32(4, true); // tgid follows pid
        s.tid = dv.getInt32(0, true);
      }
    }
  }

  /**
   * Which stack rsp is on, and its windows: from rsp (8-aligned down) to the stack's top, reading
   * until the top or the first unmapped page; on the IRQ stack also the task stack from the
   * interrupted rsp saved in the IRQ stack's top word.
   */
  private async stacks(s: Sample, rsp: bigint): Promise<TakenSample['where']> {
    const irqSize = BigInt(stackSize('irq'));
    const threadSize = BigInt(THREAD_SIZE);
    let b = this.keepBounds ? this.bounds : undefined;
    // Kept bounds serve only while rsp is on one of those stacks (a task switch moves it elsewhere).
    if (b && !(inRange(rsp, b.top, threadSize) || inRange(rsp, b.irqTop, irqSize) || inRange(rsp, b.sp0, BigInt(PAGE_SIZE)) || b.ist.some(([t, top]) => inRange(rsp, top, BigInt(stackSize(t)))))) b = undefined;
    if (!b) {
      const irqPtr = await this.perCpu('hardirq_stack_ptr');
      const tss = this.syms.get('cpu_tss_rw');
      const tssAt = tss !== undefined && this.perCpuBase !== undefined ? this.perCpuBase + tss : undefined;
      const ist: [StackType, bigint][] = [];
      if (tssAt !== undefined) {
        const words = await this.gdb.readMemory(tssAt + BigInt(TSS_IST), 4 * 8);
        for (const [type, slot] of IST_SLOTS) {
          if (words.length < (slot + 1) * 8) continue;
          const top = new DataView(words.buffer, words.byteOffset + slot * 8, 8).getBigUint64(0, true);
          // An unused slot is 0; a used one points into the cpu_entry_area.
          if (top > CPU_ENTRY_AREA && top <= CPU_ENTRY_AREA_END) ist.push([type, top]);
        }
      }
      b = {
        top: await this.perCpu('cpu_current_top_of_stack'),
        irqTop: irqPtr !== undefined ? irqPtr + 8n : undefined,
        sp0: tssAt !== undefined ? await this.gdb.readU64(tssAt + BigInt(TSS_SP0)) : undefined,
        ist,
      };
      this.bounds = b;
    }
    return this.onStack(s, rsp, b, 0);
  }

  /** The stack rsp is on, pushed to the sample, then the stacks it links to (an IST stack to what it interrupted). */
  private async onStack(s: Sample, rsp: bigint, b: Bounds, depth: number): Promise<TakenSample['where']> {
    const irqSize = BigInt(stackSize('irq'));
    const threadSize = BigInt(THREAD_SIZE);
    const { top, irqTop, sp0 } = b;
    for (const [type, istTop] of b.ist) {
      const size = BigInt(stackSize(type));
      if (!inRange(rsp, istTop, size)) continue;
      s.stacks.push(await this.window(type, istTop - size, istTop, rsp));
      // The hardware frame at the top holds the interrupted rsp (in_exception_stack: ((pt_regs *)end - 1)->sp);
      // from user mode it is a user address and there is nothing more to read.
      const link = await this.gdb.readU64(istTop - 16n);
      if (depth < 3 && link !== undefined && link >= KERNEL_HALF && !s.stacks.some((x) => link >= x.begin && link < x.end)) {
        await this.onStack(s, link, b, depth + 1);
      }
      return type;
    }

    if (irqTop !== undefined && rsp >= irqTop - irqSize && rsp < irqTop) {
      const irq = await this.window('irq', irqTop - irqSize, irqTop, rsp);
      s.stacks.push(irq);
      // call_on_irqstack wrote the interrupted rsp into the IRQ stack's top word before switching.
      const link = await this.gdb.readU64(irqTop - 8n);
      if (link !== undefined) {
        const task = taskStackOf(link, top, threadSize);
        if (task) s.stacks.push(await this.window('task', task[0], task[1], link));
      }
      return 'irq';
    }
    if (sp0 !== undefined && rsp < sp0 && rsp >= ((sp0 - 1n) & ~BigInt(PAGE_SIZE - 1))) {
      s.stacks.push(await this.window('entry', (sp0 - 1n) & ~BigInt(PAGE_SIZE - 1), sp0, rsp));
      return 'entry';
    }
    if (rsp >= CPU_ENTRY_AREA && rsp < CPU_ENTRY_AREA_END) return 'unknown'; // in the cpu_entry_area, on no stack the TSS names
    const task = taskStackOf(rsp, top, threadSize);
    if (!task) return 'unknown';
    s.stacks.push(await this.window('task', task[0], task[1], rsp));
    return 'task';
  }

  private async window(type: StackType, begin: bigint, end: bigint, from: bigint): Promise<SampleStack> {
    // A little below rsp too: in entry code ORC may point just under it (syscall_return_via_sysret
    // after popping pt_regs has UNWIND_HINT_REGS with sp already inside them).
    const start = maxBig(begin, (from & ~7n) - BELOW_SP);
    const len = Number(end - start);
    const bytes = len > 0 ? await this.gdb.readMemory(start, len) : new Uint8Array(0);
    return { type, begin, end, windows: bytes.length > 0 ? [{ start, bytes }] : [] };
  }

  get taken(): number {
    return this.n;
  }
}

interface Bounds {
  top: bigint | undefined;
  irqTop: bigint | undefined;
  sp0: bigint | undefined;
  /** The IST stacks' tops, from the TSS. */
  ist: [StackType, bigint][];
}

/**
 * The task stack holding addr: the current task's [top - THREAD_SIZE, top) when addr is there;
 * otherwise (mid task switch: the per-CPU top already names the next task) the THREAD_SIZE-aligned
 * block around addr — vmap'd task stacks and init_thread_union are THREAD_SIZE aligned (THREAD_ALIGN).
 */
export function taskStackOf(addr: bigint, top: bigint | undefined, size: bigint): [bigint, bigint] | undefined {
  // addr == top: the stack is empty (entry_SYSCALL_64 has just loaded the top into rsp); it is still this stack.
  if (top !== undefined && addr >= top - size && addr <= top) return [top - size, top];
  if (addr < VMALLOC_START && addr < 0xffffffff80000000n) return undefined; // user or direct map: no task stack
  const base = addr & ~(size - 1n);
  return [base, base + size];
}
