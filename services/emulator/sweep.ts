// The single-step sweep: run a scenario instruction by instruction — every instruction of every
// entry stub included — and take a sample at every boundary. Checking the samples is the caller's
// business (the CLI passes the checker in): the emulator shares nothing with the unwinders.
// This module also turns per-step outcomes into the blind-spot table.
import type { Sample, TruthFrame } from '../core/dump/sample.ts';
import { OPS, opName, type KernelImage, type Func } from './image.ts';
import { Machine, type Act } from './machine.ts';

const { CALL, IRET, RET, SYSRET } = OPS;

export interface ScenarioEvent {
  /** Function the event interrupts, at its first MEM instruction ('mem') or at this instruction index. */
  fn: string;
  at: 'mem' | 'body' | number;
  stub: string;
}

export interface Scenario {
  name: string;
  summary: string;
  bottom: 'syscall' | 'kthread' | 'idle' | 'user';
  /** caller → callees whose calls are stepped into (others are stepped over). */
  enter: Record<string, string[]>;
  events: ScenarioEvent[];
}

const SYSCALL_READ = {
  entry_SYSCALL_64: ['do_syscall_64'], do_syscall_64: ['x64_sys_call'], x64_sys_call: ['__x64_sys_read'],
  __x64_sys_read: ['ksys_read'], ksys_read: ['vfs_read'], vfs_read: ['new_sync_read'], new_sync_read: ['ext4_file_read_iter'],
  ext4_file_read_iter: ['filemap_read'], filemap_read: ['copy_page_to_iter'], copy_page_to_iter: ['copy_user_generic'],
};

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'syscall_page_fault',
    summary: 'read(2) down to copy_user_generic, which faults; the page-fault handler runs to clear_page_erms',
    bottom: 'syscall',
    enter: {
      ...SYSCALL_READ,
      asm_exc_page_fault: ['exc_page_fault'], exc_page_fault: ['do_user_addr_fault'], do_user_addr_fault: ['handle_mm_fault'],
      handle_mm_fault: ['__handle_mm_fault'], __handle_mm_fault: ['do_anonymous_page'], do_anonymous_page: ['clear_page_erms'],
    },
    events: [{ fn: 'copy_user_generic', at: 'mem', stub: 'asm_exc_page_fault' }],
  },
  {
    name: 'irq_in_syscall',
    summary: 'a device IRQ hits vfs_read; common_interrupt switches to the IRQ stack and runs the handler',
    bottom: 'syscall',
    enter: {
      ...SYSCALL_READ, vfs_read: [],
      asm_common_interrupt: ['common_interrupt'], common_interrupt: ['__common_interrupt'], __common_interrupt: ['handle_edge_irq'],
      handle_edge_irq: ['handle_irq_event'], handle_irq_event: ['__handle_irq_event_percpu'], __handle_irq_event_percpu: ['e1000_intr'],
    },
    events: [{ fn: 'vfs_read', at: 'body', stub: 'asm_common_interrupt' }],
  },
  {
    name: 'nmi_in_pf_in_irq',
    summary: 'an NMI in a page fault in a device IRQ in a syscall (four stacks deep: task, IRQ, NMI)',
    bottom: 'syscall',
    enter: {
      ...SYSCALL_READ, vfs_read: [],
      asm_common_interrupt: ['common_interrupt'], common_interrupt: ['__common_interrupt'], __common_interrupt: ['handle_edge_irq'],
      handle_edge_irq: ['handle_irq_event'], handle_irq_event: ['__handle_irq_event_percpu'], __handle_irq_event_percpu: ['e1000_intr'],
      asm_exc_page_fault: ['exc_page_fault'], exc_page_fault: ['do_user_addr_fault'],
      asm_exc_nmi: ['exc_nmi'], exc_nmi: ['default_do_nmi'], default_do_nmi: ['nmi_handle'], nmi_handle: ['perf_event_nmi_handler'],
      perf_event_nmi_handler: ['x86_pmu_handle_irq'], x86_pmu_handle_irq: ['native_read_msr'],
    },
    events: [
      { fn: 'vfs_read', at: 'body', stub: 'asm_common_interrupt' },
      { fn: 'e1000_intr', at: 'mem', stub: 'asm_exc_page_fault' },
      { fn: 'do_user_addr_fault', at: 'body', stub: 'asm_exc_nmi' },
    ],
  },
  {
    name: 'timer_softirq_idle',
    summary: 'the idle loop halts in native_safe_halt; the timer IRQ runs hrtimers, then softirqs on irq exit',
    bottom: 'idle',
    enter: {
      secondary_startup_64: ['start_secondary'], start_secondary: ['cpu_startup_entry'], cpu_startup_entry: ['do_idle'], do_idle: ['cpuidle_idle_call'],
      cpuidle_idle_call: ['default_idle_call'], default_idle_call: ['arch_cpu_idle'], arch_cpu_idle: ['default_idle'], default_idle: ['native_safe_halt'],
      asm_sysvec_apic_timer_interrupt: ['sysvec_apic_timer_interrupt'], sysvec_apic_timer_interrupt: ['__sysvec_apic_timer_interrupt', 'irq_exit_rcu'],
      __sysvec_apic_timer_interrupt: ['hrtimer_interrupt'], hrtimer_interrupt: ['__hrtimer_run_queues'], __hrtimer_run_queues: ['tick_sched_timer'],
      tick_sched_timer: ['update_process_times'], update_process_times: ['scheduler_tick'], scheduler_tick: ['task_tick_fair'],
      irq_exit_rcu: ['__do_softirq'], __do_softirq: ['run_timer_softirq'], run_timer_softirq: ['call_timer_fn'],
    },
    events: [{ fn: 'native_safe_halt', at: 1, stub: 'asm_sysvec_apic_timer_interrupt' }],
  },
  {
    name: 'user_timer',
    summary: 'the timer IRQ hits user mode: hardware frame on the entry stack, sync_regs to the task stack, handler, softirq',
    bottom: 'user',
    enter: {
      asm_sysvec_apic_timer_interrupt: ['sysvec_apic_timer_interrupt'], sysvec_apic_timer_interrupt: ['__sysvec_apic_timer_interrupt', 'irq_exit_rcu'],
      __sysvec_apic_timer_interrupt: ['hrtimer_interrupt'], hrtimer_interrupt: ['__hrtimer_run_queues'], __hrtimer_run_queues: ['tick_sched_timer'],
      tick_sched_timer: ['update_process_times'], irq_exit_rcu: ['__do_softirq'], __do_softirq: ['net_rx_action'], net_rx_action: ['e1000_clean'],
    },
    events: [{ fn: '(user)', at: 0, stub: 'asm_sysvec_apic_timer_interrupt' }],
  },
  {
    name: 'kthread_machine_check',
    summary: 'a kworker from ret_from_fork_asm into vmstat work; a machine check (IST) hits refresh_cpu_vm_stats',
    bottom: 'kthread',
    enter: {
      ret_from_fork_asm: ['ret_from_fork'], ret_from_fork: ['kthread'], kthread: ['worker_thread'], worker_thread: ['process_one_work'],
      process_one_work: ['vmstat_update'], vmstat_update: ['refresh_cpu_vm_stats'],
      asm_exc_machine_check: ['exc_machine_check'], exc_machine_check: ['do_machine_check'],
    },
    events: [{ fn: 'refresh_cpu_vm_stats', at: 'body', stub: 'asm_exc_machine_check' }],
  },
];

export interface SweepStep {
  scenario: string;
  index: number;
  fn: string;
  insn: number;
  offset: number;
  op: string;
  /** Whether the stopped code is an entry stub (or the head/fork/syscall entry code). */
  inStub: boolean;
  /** rbp, or an interrupted rbp saved in pt_regs, holds &pt_regs|1 (Machine.encodedRbpLive). */
  encodedRbp: boolean;
  sample: Sample;
}

/** Runs a scenario on a kernel, calling onStep with the sample of every instruction boundary. */
export function sweepScenario(k: KernelImage, sc: Scenario, onStep: (s: SweepStep) => void): number {
  const m = new Machine(k);
  m.reset(0, 4242);
  const st = { n: 0, events: sc.events.slice() };
  if (sc.bottom === 'syscall') m.syscall();
  else if (sc.bottom === 'kthread') m.kthread();
  else if (sc.bottom === 'user') m.userInterrupt(sc.events[0]!.stub);
  else m.idle();
  if (sc.bottom === 'user') st.events.shift();
  const comm = sc.bottom === 'idle' ? 'swapper/0' : sc.bottom === 'kthread' ? 'kworker/0:1' : 'cat';
  if (sc.bottom === 'user') {
    // The interrupted code is user space: the scenario starts in the stub.
  }
  runAct(m, k, sc, st, onStep, comm);
  return st.n;
}

function eventAt(f: Func, pc: number, ev: ScenarioEvent): boolean {
  if (ev.fn !== f.name) return false;
  if (ev.at === 'mem') return pc === f.mems[0];
  if (ev.at === 'body') return pc === (f.calls.find((c) => c >= f.frameFrom) ?? f.frameFrom + 1);
  return pc === ev.at;
}

function runAct(m: Machine, k: KernelImage, sc: Scenario, st: { n: number; events: ScenarioEvent[] }, onStep: (s: SweepStep) => void, comm: string): void {
  const a: Act = m.running();
  const f = a.fn;
  const enter = sc.enter[f.name] ?? [];
  for (let guard = 0; guard < 10000; guard++) {
    if (m.chain[m.chain.length - 1] !== a) return;
    const pc = a.pc;
    // The bottom stubs end in a jump to the exit path or a sysret: the scenario is over.
    if (pc >= f.ops.length) return;
    const op = f.ops[pc]!;
    if (m.cur.has(m.rsp, 0) || m.rsp === m.cur.end) {
      const sample = m.capture({ comm, pid: 4242, tid: 4242, cpu: 0, time: `${1000 + st.n / 1e6}`, trigger: 'single-step', host: 'emu-sweep', kernel: k.buildId });
      onStep({ scenario: sc.name, index: st.n, fn: f.name, insn: pc, offset: f.offs[pc]!, op: opName(op), inStub: f.stub !== undefined, encodedRbp: m.encodedRbpLive(), sample });
      st.n++;
    }
    const ei = st.events.findIndex((e) => eventAt(f, pc, e));
    if (ei >= 0) {
      const ev = st.events.splice(ei, 1)[0]!;
      m.interrupt(ev.stub, ev.stub === 'asm_exc_page_fault' ? 2 : 0);
      runAct(m, k, sc, st, onStep, comm);
      // Back at the same boundary after iret: it was sampled before the event came in.
      continue;
    }
    if (op === CALL) {
      const callee = f.targets[pc]!;
      if (enter.includes(callee.name)) {
        m.step();
        runAct(m, k, sc, st, onStep, comm);
      } else m.runTo(pc + 1);
      continue;
    }
    if (op === SYSRET) return;
    m.step();
    if (op === RET || op === IRET) return;
  }
}

// --- the blind-spot table ----------------------------------------------------------------------------

/** One strategy's result for one step, in the terms the table needs (filled in by the caller). */
export interface StepResult {
  strategy: string;
  verdict: string;
  reason?: string;
  /** ips the unwind reported. */
  frames: readonly bigint[];
}

export type Outcome = 'exact' | 'window' | 'stopped' | 'not_decoded' | 'wrong';

/**
 * How a step went for a strategy, judged against the truth: exact; window (only tolerated frames
 * lost, whether or not the walk then stopped: the kernel is silent there too, §9 rule 17);
 * stopped (every frame reported, but the walk ended in an error instead of at the bottom — fine
 * only where the kernel is silent, see stopIsDocumented); not_decoded (the strategy cannot read
 * this kernel's entries); wrong (a frame a correct unwinder recovers was lost, or one invented).
 */
export function classify(truth: readonly TruthFrame[], r: StepResult): { outcome: Outcome; lost: string[] } {
  if (r.verdict === 'exact') return { outcome: 'exact', lost: [] };
  // error: the strategy cannot read this kernel's entries; not_applicable (encoded_entry_window):
  // it stepped aside for the layout whose marker rbp holds at that instant.
  if (r.verdict === 'error' || r.verdict === 'not_applicable') return { outcome: 'not_decoded', lost: [] };
  const have = new Map<bigint, number>();
  for (const ip of r.frames) have.set(ip, (have.get(ip) ?? 0) + 1);
  const lost: string[] = [];
  let hard = false;
  // Frames a correct unwinder must report claim the reported ips first: the same return address
  // can be in the truth twice (a timer interrupt nested in the softirq of an earlier one), once in
  // a window and once not, and the reported copy is the one that is not.
  const missed = new Array<boolean>(truth.length).fill(false);
  for (const windowed of [false, true]) {
    for (let i = 0; i < truth.length; i++) {
      const t = truth[i]!;
      if ((t.tolerated !== undefined) !== windowed) continue;
      const n = have.get(t.ip) ?? 0;
      if (n > 0) have.set(t.ip, n - 1);
      else missed[i] = true;
    }
  }
  for (let i = 0; i < truth.length; i++) {
    if (!missed[i]) continue;
    const t = truth[i]!;
    lost.push(t.tolerated ?? (t.kind === 'regs' ? 'interrupted' : 'caller'));
    if (!t.tolerated) hard = true;
  }
  let extra = 0;
  for (const v of have.values()) extra += v;
  if (!hard && extra === 0) return { outcome: lost.length > 0 || r.verdict === 'tolerated' ? 'window' : 'stopped', lost };
  return { outcome: 'wrong', lost };
}

/**
 * Where the kernel's FP unwinder stays silent about a walk that ends in an error
 * (unwind_frame.c, §9 rule 17): the sampled ip is in entry code, or the walk just decoded
 * pt_regs whose ip is in entry code — the stub had not finished building the frame it would
 * need. A complete trace that stops anywhere else is a strategy's bug.
 */
export function stopIsDocumented(k: KernelImage, sampledFn: string, truth: readonly TruthFrame[]): boolean {
  if (k.byName.get(sampledFn)?.stub) return true;
  const last = truth[truth.length - 1];
  if (!last || last.kind !== 'regs') return false;
  const ip = Number(BigInt.asIntN(64, last.ip));
  for (const f of k.funcs) if (f.stub && ip >= f.addr && ip < f.addr + f.size) return true;
  return false;
}

export interface TableRow {
  strategy: string;
  scenario: string;
  fn: string;
  /** Instruction range (indices) and offsets. */
  from: number;
  to: number;
  offFrom: number;
  offTo: number;
  ops: string[];
  outcome: Outcome;
  verdict: string;
  reason?: string;
  /** What was lost: tolerance kinds, or 'caller'/'interrupted' for hard losses. */
  lost: string[];
  steps: number;
  inStub: boolean;
}

export interface BlindSpotTable {
  layout: string;
  profileLayouts: string[];
  buildId: string;
  steps: number;
  /** Per strategy: steps per outcome. */
  totals: Record<string, Record<Outcome, number>>;
  /** Non-exact runs of consecutive instructions with the same outcome, verdict, reason and losses. */
  rows: TableRow[];
}

export class BlindSpotBuilder {
  private readonly totals: Record<string, Record<Outcome, number>> = {};
  private readonly rows: TableRow[] = [];
  private readonly open = new Map<string, TableRow>();
  private steps = 0;

  constructor(private readonly k: KernelImage) {}

  add(step: SweepStep, results: readonly StepResult[]): void {
    this.steps++;
    const truth = step.sample.truth?.frames ?? [];
    for (const r of results) {
      const { outcome, lost } = classify(truth, r);
      const t = (this.totals[r.strategy] ??= { exact: 0, window: 0, stopped: 0, not_decoded: 0, wrong: 0 });
      t[outcome]++;
      const key = r.strategy;
      const prev = this.open.get(key);
      const lostKey = lost.join(',');
      if (prev && prev.scenario === step.scenario && prev.fn === step.fn && prev.to === step.insn - 1 && prev.outcome === outcome && prev.verdict === r.verdict && prev.reason === r.reason && prev.lost.join(',') === lostKey) {
        prev.to = step.insn;
        prev.offTo = step.offset;
        prev.ops.push(step.op);
        prev.steps++;
        continue;
      }
      if (outcome === 'exact') {
        this.open.delete(key);
        continue;
      }
      const row: TableRow = {
        strategy: r.strategy, scenario: step.scenario, fn: step.fn, from: step.insn, to: step.insn, offFrom: step.offset, offTo: step.offset,
        ops: [step.op], outcome, verdict: r.verdict, lost, steps: 1, inStub: step.inStub,
      };
      if (r.reason !== undefined) row.reason = r.reason;
      this.rows.push(row);
      this.open.set(key, row);
    }
  }

  table(): BlindSpotTable {
    return {
      layout: this.k.layout, profileLayouts: [...this.k.profile.layouts], buildId: this.k.buildId, steps: this.steps,
      totals: this.totals, rows: this.rows,
    };
  }
}

/** The table as text: per strategy, the totals and every blind-spot run. */
export function formatBlindSpots(t: BlindSpotTable): string {
  const out: string[] = [];
  out.push(`kernel ${t.buildId.slice(0, 12)}  entry layout ${t.layout}  profile ${t.profileLayouts.join('+')}  ${t.steps} steps`);
  for (const [s, tot] of Object.entries(t.totals)) {
    out.push(`  ${s.padEnd(13)} exact ${String(tot.exact).padStart(5)}  window ${String(tot.window).padStart(5)}  stopped ${String(tot.stopped).padStart(5)}  not_decoded ${String(tot.not_decoded).padStart(5)}  wrong ${String(tot.wrong).padStart(5)}`);
  }
  for (const s of Object.keys(t.totals)) {
    const rows = t.rows.filter((r) => r.strategy === s);
    if (rows.length === 0) continue;
    out.push(`  ${s}:`);
    for (const r of rows) {
      const range = r.from === r.to ? `+0x${r.offFrom.toString(16)}` : `+0x${r.offFrom.toString(16)}..+0x${r.offTo.toString(16)}`;
      const ops = [...new Set(r.ops)].join('; ');
      out.push(`    ${r.scenario.padEnd(22)} ${(r.fn + range).padEnd(44)} ${r.outcome.padEnd(11)} ${r.verdict}${r.reason ? `/${r.reason}` : ''}  lost [${r.lost.join(',')}]  (${r.steps} insn: ${ops.length > 60 ? ops.slice(0, 57) + '...' : ops})`);
    }
  }
  return out.join('\n') + '\n';
}

/** For tests and docs: is this function an entry stub or other entry code of the image? */
export function isEntryCode(k: KernelImage, fn: string): boolean {
  const f = k.byName.get(fn);
  return f !== undefined && f.stub !== undefined;
}

