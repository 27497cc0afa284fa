// An emulated host: one kernel build, a few CPUs, tasks in syscalls, kthreads and the idle loop,
// taking timer and device IRQs, page faults from function bodies, NMIs, #DB and #MC, nested —
// and sampled NMI-style at a random instruction boundary. Faults are injected by name.
import type { Sample } from '../core/dump/sample.ts';
import { PT_REGS_SIZE } from '../core/stack/layout.ts';
import { OPS, type Func, type KernelImage } from './image.ts';
import { ACT, ENTRY, Machine, STOP_CALL, type Act, type EntryRec, type Where } from './machine.ts';
import { Rng } from './rng.ts';

const { MEM, SWITCH_TASK } = OPS;

export const FAULTS = [
  'corrupt_bp', // a saved frame pointer overwritten
  'clobber_ret', // a return address overwritten
  'no_frame_pointer', // an asm function that calls on without setting up a frame (objtool rule 3)
  'missing_kernel_entry', // kernel_entry builds: one stub does not push the kernel_entry frame
  'stub_outside_section', // an entry stub linked outside the entry section
  'stale_frames', // stale frames below sp, and rbp left pointing at one of them
  'broken_irq_link', // the IRQ stack's link word overwritten
  'stack_overflow', // the task stack overflows into its guard page: #DF on the IST stack
] as const;
export type FaultName = (typeof FAULTS)[number];

/** Faults that are properties of the kernel build rather than of one sample. */
export const BUILD_FAULTS: ReadonlySet<FaultName> = new Set(['no_frame_pointer', 'missing_kernel_entry', 'stub_outside_section']);

export interface InjectedFault {
  name: FaultName;
  /** What was done, in words (the word's address and role, the value written). */
  detail: string;
  /** Faults written into one stack word: which word (its role, address) and its value before and after (signed form). */
  word?: { role: 'saved_bp' | 'return_address' | 'irq_link'; at: number; was: number; value: number };
}

/** A sample with what the emulator knows about it beyond the dump. */
export interface EmulatedSample {
  sample: Sample;
  host: string;
  layout: string;
  /** syscall, kthread, idle, sched, user_irq (an interrupt from user mode), overflow. */
  scenario: string;
  where: Where;
  fault?: InjectedFault;
  /**
   * From the machine state, not from any unwinder: a frame-pointer walk would claim a reliable
   * trace here and be wrong. It claims reliability only for a task stopped at a call site (trigger
   * sched: no kernel-mode pt_regs on the way, §4.1) whose bp chain reaches the bottom intact (no
   * word of the sample was overwritten); it is wrong exactly when some activation called on
   * without a frame, hiding a return address from the chain.
   */
  falseReliable: boolean;
  /** rbp, or an interrupted rbp saved in pt_regs, holds &pt_regs|1 (Machine.encodedRbpLive). */
  encodedRbp: boolean;
}

const COMMS = ['cat', 'nginx', 'postgres', 'bash', 'java', 'sshd', 'python3'];

// Events by context: [stub, weight]. IRQs only where interrupts are enabled (process context,
// softirq); NMIs and machine checks anywhere; page faults only at instructions touching memory.
const EV_PROCESS: [string, number][] = [
  ['asm_sysvec_apic_timer_interrupt', 35], ['asm_common_interrupt', 30], ['asm_exc_nmi', 20], ['asm_exc_page_fault', 12],
  ['asm_exc_debug', 2], ['asm_exc_machine_check', 1],
];
const EV_HARDIRQ: [string, number][] = [['asm_exc_nmi', 10], ['asm_exc_page_fault', 2], ['asm_exc_machine_check', 1]];
const EV_NMI_ONLY: [string, number][] = [['asm_exc_nmi', 1]];

/** Paths a wanted fault needs: caller → callee to take. */
const STEER: Partial<Record<FaultName, Map<string, string>>> = {
  no_frame_pointer: new Map([
    ['x64_sys_call', '__x64_sys_read'], ['ksys_read', 'vfs_read'], ['vfs_read', 'seq_read'], ['kthread', 'worker_thread'],
    ['worker_thread', 'process_one_work'],
  ]),
  broken_irq_link: new Map([['common_interrupt', '__common_interrupt']]),
  missing_kernel_entry: new Map([['common_interrupt', '__common_interrupt']]),
  stub_outside_section: new Map([['sysvec_apic_timer_interrupt', '__sysvec_apic_timer_interrupt']]),
};

const THUNK_CALLERS = new Map([['seq_read_iter', 'seq_show_thunk'], ['do_futex', 'futex_asm_thunk'], ['process_one_work', 'work_asm_thunk']]);

export interface HostOptions {
  name: string;
  kernel: KernelImage;
  cpus: number;
  seed: number;
}

export class EmulatedHost {
  readonly name: string;
  readonly kernel: KernelImage;
  readonly cpus: number;
  readonly m: Machine;
  private usec: number;
  private readonly stubOf: Map<string, Func>;

  constructor(o: HostOptions) {
    this.name = o.name;
    this.kernel = o.kernel;
    this.cpus = o.cpus;
    this.m = new Machine(o.kernel);
    this.usec = 1000_000_000 + (o.seed % 1000) * 1000;
    this.stubOf = new Map(o.kernel.funcs.filter((f) => f.stub).map((f) => [f.name, f]));
  }

  /** One sample. `fault` forces that fault into this sample where the scenario allows it. */
  sample(rng: Rng, fault?: FaultName): EmulatedSample {
    const m = this.m;
    const cpu = rng.int(this.cpus);
    this.usec += 100 + rng.int(400);
    const time = `${Math.floor(this.usec / 1e6)}.${String(this.usec % 1e6).padStart(6, '0')}`;
    const kind = fault === 'stack_overflow' ? 'overflow' : pickScenario(rng, fault);
    let comm: string;
    let pid: number;
    if (kind === 'idle') {
      pid = 0;
      comm = `swapper/${cpu}`;
      m.reset(cpu, 8000 + cpu);
      m.idle();
    } else if (kind === 'user_irq') {
      pid = 1000 + rng.int(30000);
      comm = COMMS[pid % COMMS.length]!;
      m.reset(cpu, pid);
      m.userInterrupt(rng.chance(0.5) ? 'asm_sysvec_apic_timer_interrupt' : 'asm_common_interrupt');
    } else if (kind === 'kthread' || (kind === 'sched' && rng.chance(0.4))) {
      pid = 100 + rng.int(400);
      comm = `kworker/${cpu}:${rng.int(4)}`;
      m.reset(cpu, pid);
      m.kthread();
    } else {
      pid = 1000 + rng.int(30000);
      comm = COMMS[pid % COMMS.length]!;
      m.reset(cpu, pid);
      m.syscall();
    }
    const want = fault === 'no_frame_pointer' || fault === 'missing_kernel_entry' || fault === 'stub_outside_section' || fault === 'broken_irq_link' ? fault : undefined;
    let trigger = 'nmi';
    if (kind === 'overflow') this.overflow(rng);
    else if (kind === 'sched') {
      this.toSchedule(rng, want === 'no_frame_pointer');
      trigger = 'sched';
    } else this.descend(rng, want);
    const where = m.where();
    let sample: Sample;
    if (trigger === 'sched') sample = this.captureSched({ trigger, comm, pid, tid: pid, cpu, time, host: this.name, kernel: this.kernel.buildId });
    else sample = m.capture({ comm, pid, tid: pid, cpu, time, trigger, host: this.name, kernel: this.kernel.buildId });
    const out: EmulatedSample = { sample, host: this.name, layout: this.kernel.layout, scenario: kind, where, falseReliable: false, encodedRbp: m.encodedRbpLive() };
    let injected: InjectedFault | undefined;
    if (fault && !BUILD_FAULTS.has(fault) && fault !== 'stack_overflow') injected = injectSampleFault(fault, m, sample, rng);
    else if (fault === 'stack_overflow' && m.overflowed) injected = { name: fault, detail: 'the task stack overflowed into its guard page; #DF on the IST stack' };
    out.falseReliable = trigger === 'sched' && injected === undefined && m.hiddenCallers() > 0;
    injected ??= this.buildFaultActive();
    if (injected) out.fault = injected;
    return out;
  }

  /** The random walk: descend through call sites, take events, stop at an instruction boundary. */
  private descend(rng: Rng, want: FaultName | undefined): void {
    const m = this.m;
    let entries = 0;
    let forcedEvent = want === 'missing_kernel_entry' ? 'asm_common_interrupt' : want === 'stub_outside_section' ? 'asm_sysvec_apic_timer_interrupt' : want === 'broken_irq_link' ? 'asm_common_interrupt' : undefined;
    for (let guard = 0; guard < 400; guard++) {
      const a = m.running();
      const f = a.fn;
      if (f.stub) {
        const info = f.stub;
        const forced = want !== undefined;
        if (f.name === 'entry_SYSCALL_64' && a.pc === 0) {
          if (!forced && rng.chance(0.03)) {
            // In the syscall entry after the switch to the task stack (before it rsp is the user's).
            m.runTo(rng.range(f.ops.indexOf(SWITCH_TASK) + 1, info.callIdx));
            return;
          }
          m.callAt(info.callIdx);
          continue;
        }
        if (a.pc <= info.callIdx && (forced || !rng.chance(info.entry === 'fork' || info.entry === 'head' ? 0.02 : 0.1))) {
          m.callAt(info.callIdx);
          continue;
        }
        const k = rng.range(a.pc, f.ops.length - 1);
        m.runTo(k);
        if (entries < 3 && this.context() !== 'nmi' && rng.chance(0.15)) {
          m.interrupt('asm_exc_nmi');
          entries++;
          continue;
        }
        return;
      }
      const calls = f.calls;
      let c = -1;
      const steer = want !== undefined ? STEER[want]?.get(f.name) ?? (want === 'no_frame_pointer' ? THUNK_CALLERS.get(f.name) : undefined) : undefined;
      if (steer) {
        for (const i of calls) if (i >= a.pc && f.targets[i]!.name === steer) c = i;
      }
      // Below a no-frame-pointer thunk the fault is what is being tested: do not stop in the thunk.
      if (c < 0 && want === 'no_frame_pointer' && f.name.endsWith('_thunk')) c = calls[0]!;
      if (c < 0 && m.chain.length < 70) {
        let n = 0;
        // Recursion only in the stack overflow scenario.
        for (const i of calls) if (i >= a.pc && f.targets[i] !== f) n++;
        if (n > 0 && rng.chance(want ? 0.9 : 0.78)) {
          let pick = rng.int(n);
          for (const i of calls) {
            if (i >= a.pc && f.targets[i] !== f && pick-- === 0) { c = i; break; }
          }
        }
      }
      if (c >= 0) {
        const target = f.targets[c]!;
        if (target.name === '__switch_to_asm') c = -1; // sleeping is the sched scenario
        else if (target.stub === undefined) {
          m.callAt(c);
          continue;
        }
      }
      // Stop somewhere in this function; maybe an event arrives here.
      const last = f.ops.length - 1;
      let k = rng.range(a.pc, last);
      if (forcedEvent !== undefined && f.calls.length > 0 && entries === 0) {
        // Take the forced event in a framed body, so that the handler path is what is tested.
        k = Math.max(a.pc, Math.min(f.frameFrom, last));
      }
      m.runTo(k);
      const ev = forcedEvent !== undefined && entries === 0 ? forcedEvent : entries < 3 && rng.chance(0.32) ? this.pickEvent(rng, f.ops[k] === MEM) : undefined;
      if (ev) {
        if (ev === forcedEvent) forcedEvent = undefined;
        m.interrupt(ev, ev === 'asm_exc_page_fault' ? 2 : 0);
        entries++;
        continue;
      }
      return;
    }
  }

  private context(): 'process' | 'hardirq' | 'nmi' {
    const ch = this.m.chain;
    for (let i = ch.length - 1; i >= 0; i--) {
      const r = ch[i]!;
      if (r.kind === ACT && r.fn.section === 'softirqentry') return 'process';
      if (r.kind === ENTRY) {
        if (r.type === 'nmi' || r.type === 'machine_check' || r.type === 'double_fault' || r.type === 'debug') return 'nmi';
        if (r.type === 'irq' || r.type === 'timer') return 'hardirq';
        if (r.type === 'page_fault') return 'process';
      }
    }
    return 'process';
  }

  private pickEvent(rng: Rng, atMem: boolean): string | undefined {
    const ctx = this.context();
    if (ctx === 'nmi') return undefined;
    const table = ctx === 'hardirq' ? EV_HARDIRQ : this.inPageFault() ? EV_NMI_ONLY.concat([['asm_common_interrupt', 1], ['asm_sysvec_apic_timer_interrupt', 1]]) : EV_PROCESS;
    let total = 0;
    for (const [name, w] of table) if (atMem || name !== 'asm_exc_page_fault') total += w;
    let r = rng.int(total);
    for (const [name, w] of table) {
      if (!atMem && name === 'asm_exc_page_fault') continue;
      if (r < w) return this.stubOf.has(name) ? name : undefined;
      r -= w;
    }
    return undefined;
  }

  private inPageFault(): boolean {
    for (const r of this.m.chain) if (r.kind === ENTRY && r.type === 'page_fault') return true;
    return false;
  }

  /** A task going to sleep: … → schedule → __schedule → __switch_to_asm pushes its inactive frame. */
  private toSchedule(rng: Rng, wantThunk: boolean): void {
    const m = this.m;
    const viaThunk = this.kernel.faults.noFramePointer === true;
    const path = m.running().fn.name === 'ret_from_fork_asm'
      ? ['ret_from_fork', 'kthread', 'worker_thread', 'schedule', '__schedule', '__switch_to_asm']
      : rng.chance(0.5) || wantThunk
        ? ['do_syscall_64', 'x64_sys_call', '__x64_sys_futex', 'do_futex', viaThunk ? 'futex_asm_thunk' : 'futex_wait', 'futex_wait', 'futex_wait_queue', 'schedule', '__schedule', '__switch_to_asm']
        : ['do_syscall_64', 'x64_sys_call', '__x64_sys_read', 'ksys_read', 'vfs_read', 'new_sync_read', 'ext4_file_read_iter', 'filemap_read', 'filemap_get_pages', 'folio_wait_bit_common', 'io_schedule', 'schedule', '__schedule', '__switch_to_asm'];
    for (const name of path) {
      const a = m.running();
      const f = a.fn;
      let c = -1;
      for (const i of f.calls) if (i >= a.pc && f.targets[i]!.name === name) { c = i; break; }
      if (c < 0) continue; // futex_wait appears twice in the thunk path: once through the thunk
      m.callAt(c);
    }
    // __switch_to_asm: push %rbp and the callee-saved registers (inactive_task_frame).
    m.runTo(6);
  }

  /**
   * A sleeping task as livepatch sees it: ip = the inactive frame's return address into
   * __schedule, sp = thread.sp, bp = the saved rbp (__schedule's frame).
   */
  private captureSched(meta: Omit<Sample, 'stacks' | 'regs' | 'truth'>): Sample {
    const m = this.m;
    const s = m.capture(meta);
    const sw = m.running();
    s.regs!.ip = BigInt.asUintN(64, BigInt(sw.ret));
    // The truth starts at that return address; __switch_to_asm itself is not part of the trace.
    const frames = s.truth!.frames;
    frames.splice(0, 2, { ip: s.regs!.ip, kind: 'start' });
    return s;
  }

  /**
   * Deep recursion with a large on-stack buffer until `sub $n,%rsp` takes rsp below the task
   * stack; the next access faults, and with no stack left the page fault becomes a #DF on its IST
   * stack (handle_stack_overflow). pt_regs->sp then lies in the guard page.
   */
  private overflow(rng: Rng): void {
    const m = this.m;
    for (const name of ['do_syscall_64', 'x64_sys_call', '__x64_sys_getdents64', 'iterate_dir', 'dentry_walk_nested']) {
      const a = m.running();
      const f = a.fn;
      const c = f.calls.find((i) => f.targets[i]!.name === name)!;
      m.callAt(c);
    }
    for (let guard = 0; guard < 64 && !m.overflowed; guard++) {
      const a = m.running();
      const f = a.fn;
      const mem = f.mems[0]!;
      m.runTo(mem);
      if (m.overflowed || m.rsp < m.stacks.task.begin) break;
      m.callAt(f.calls[0]!);
    }
    m.interrupt('asm_exc_double_fault', 0);
    m.callAt(m.running().fn.stub!.callIdx);
    const h = m.running();
    if (rng.chance(0.5)) m.callAt(h.fn.calls[0]!);
    m.runTo(Math.min(m.running().fn.ops.length - 1, m.running().fn.frameFrom + 1 > 0 ? m.running().fn.frameFrom + 1 : 0));
  }

  /** Build faults are in the image; a sample shows one only when its chain runs through it. */
  private buildFaultActive(): InjectedFault | undefined {
    const k = this.kernel;
    const ch = this.m.chain;
    for (let i = 0; i < ch.length; i++) {
      const r = ch[i]!;
      if (k.faults.noFramePointer && r.kind === ACT && r.fn.name.endsWith('_thunk') && i < ch.length - 1 && r.stoppedBy === STOP_CALL) {
        return { name: 'no_frame_pointer', detail: `${r.fn.name} called on without a frame` };
      }
      if (r.kind === ENTRY) {
        const stub = r.stub!.fn;
        if (k.faults.missingKernelEntry && stub.name === 'asm_common_interrupt' && k.layout === 'kernel_entry' && handlerRunning(ch, i)) {
          return { name: 'missing_kernel_entry', detail: 'asm_common_interrupt called its handler without the kernel_entry frame' };
        }
        if (k.faults.stubOutsideSection && stub.section === 'text' && handlerRunning(ch, i)) {
          return { name: 'stub_outside_section', detail: `${stub.name} lies in .text, outside the entry section` };
        }
      }
    }
    return undefined;
  }
}

function handlerRunning(ch: readonly (Act | EntryRec | { kind: 2 })[], ei: number): boolean {
  const h = ch[ei + 2];
  return h !== undefined && h.kind === ACT && !Number.isNaN(h.ret);
}

function pickScenario(rng: Rng, fault: FaultName | undefined): 'syscall' | 'kthread' | 'idle' | 'sched' | 'user_irq' {
  if (fault === 'no_frame_pointer') return rng.chance(0.5) ? 'sched' : 'syscall';
  if (fault !== undefined) return rng.chance(0.2) ? 'kthread' : 'syscall';
  const r = rng.int(100);
  return r < 50 ? 'syscall' : r < 70 ? 'kthread' : r < 84 ? 'idle' : r < 92 ? 'sched' : 'user_irq';
}

// --- faults written into one sample's bytes ------------------------------------------------------

const TWO32 = 4294967296;

/** Writes a u64 (signed form) at a stack address of the sample, if that word was captured. */
export function pokeSample(s: Sample, addr: number, v: number): boolean {
  const a = BigInt.asUintN(64, BigInt(addr));
  for (const st of s.stacks) {
    for (const w of st.windows) {
      const off = Number(a - w.start);
      if (off >= 0 && off + 8 <= w.bytes.length) {
        const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
        const hi = Math.floor(v / TWO32);
        dv.setUint32(off, v - hi * TWO32, true);
        dv.setUint32(off + 4, hi >>> 0, true);
        return true;
      }
    }
  }
  return false;
}

/**
 * Frames whose saved bp and return address every entry-aware strategy of this kernel reads: the
 * activations with a complete frame, except the last task frame (its saved bp is never followed:
 * the walk ends there) and, for the saved bp, a handler called straight from a stub (the section
 * strategy jumps from its return address to pt_regs and never reads that word).
 */
function framedTargets(m: Machine, forBp: boolean): Act[] {
  const out: Act[] = [];
  const ch = m.chain;
  const lastFrame = m.stacks.task.end - PT_REGS_SIZE - 16;
  for (let i = 0; i < ch.length; i++) {
    const r = ch[i]!;
    if (r.kind !== ACT || Number.isNaN(r.ret) || !r.fn.framed) continue;
    const rbp = i === ch.length - 1 ? m.rbp : r.rbpStop;
    if (rbp !== r.retSlot - 8) continue;
    if (forBp && r.retSlot - 8 === lastFrame && r.stack === m.stacks.task) continue;
    const below = ch[i - 1];
    if (forBp && below && below.kind === ACT && below.fn.stub) continue;
    out.push(r);
  }
  return out;
}

function injectSampleFault(name: FaultName, m: Machine, s: Sample, rng: Rng): InjectedFault | undefined {
  switch (name) {
    case 'corrupt_bp': {
      const t = framedTargets(m, true);
      if (t.length === 0) return undefined;
      const a = rng.pick(t);
      const slot = a.retSlot - 8;
      const variant = rng.int(3);
      const was = readSaved(a);
      const v = variant === 0 ? 0 : variant === 1 ? 0x7ffc00001000 : m.stacks.task.has(slot) ? was + 4 : 0x7ffc00001000;
      pokeSample(s, slot, v);
      return { name, detail: `saved bp of ${a.fn.name} at ${hexs(slot)} := ${hexs(v)}`, word: { role: 'saved_bp', at: slot, was, value: v } };
    }
    case 'clobber_ret': {
      const t = framedTargets(m, false);
      if (t.length === 0) return undefined;
      const a = rng.pick(t);
      const variant = rng.int(3);
      const v = variant === 0 ? 0 : variant === 1 ? m.k.fn('kmem_cache_alloc').addr + 0x11 : -0x7d5fb000; // jiffies area
      pokeSample(s, a.retSlot, v);
      return { name, detail: `return address of ${a.fn.name} at ${hexs(a.retSlot)} := ${hexs(v)}`, word: { role: 'return_address', at: a.retSlot, was: a.ret, value: v } };
    }
    case 'stale_frames': {
      // A callee that returned left its frame below rsp; code that used rbp as scratch left it
      // pointing there. The frame's saved bp is the current function's frame, as a stale callee
      // frame's is.
      const top = m.chain.length - 1;
      const a = m.chain[top]!;
      if (a.kind !== ACT || !a.fn.framed || m.rbp !== a.retSlot - 8) return undefined;
      const at = m.rsp - 48;
      if (!m.cur.has(at, 16)) return undefined;
      pokeSample(s, at, m.rbp);
      pokeSample(s, at + 8, a.fn.addr + a.fn.offs[Math.max(0, a.pc - 1)]!);
      pokeSample(s, at - 16, at);
      pokeSample(s, at - 8, m.k.fn('memcpy').addr + 7);
      s.regs!.bp = BigInt.asUintN(64, BigInt(at - 16));
      return { name, detail: `two stale frames at ${hexs(at - 16)} below sp ${hexs(m.rsp)}; rbp points at them` };
    }
    case 'broken_irq_link': {
      const irq = m.stacks.irq;
      if (!s.stacks.some((st) => st.type === 'irq') || !m.chain.some((r) => r.kind === ACT && r.switchedFrom)) return undefined;
      const variant = rng.int(3);
      const v = variant === 0 ? 0 : variant === 1 ? 0x7ffd4c1e3000 : irq.end - 0x200;
      const was = irq.read(irq.end - 8);
      pokeSample(s, irq.end - 8, v);
      return { name, detail: `IRQ stack link word at ${hexs(irq.end - 8)} := ${hexs(v)}`, word: { role: 'irq_link', at: irq.end - 8, was, value: v } };
    }
    default:
      return undefined;
  }
}

function readSaved(a: Act): number {
  return a.stack.read(a.retSlot - 8);
}

function hexs(v: number): string {
  return BigInt.asUintN(64, BigInt(v)).toString(16);
}
