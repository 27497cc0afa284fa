// The emulator's side of the 2016 experiment (issue 18): the same single-step sweep the `sweep`
// command runs, on a clean emulated kernel of each entry layout, turned into the ExperimentResults
// shapes so the report and the explorer can put it beside the real kernels' sweeps. The emulator's
// truth comes from its own machine state (services/emulator/machine.ts), never from an unwinder, so
// where the two sides disagree one of the two models of the entry code is wrong, and the report
// says which.
import { checkSample, type StrategyCheck } from '../core/check/checker.ts';
import { signatureOf } from '../core/check/findings.ts';
import { GOOD_VERDICTS } from '../core/check/reasons.ts';
import { KernelProfile, type EntryLayout } from '../core/symbols/profile.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { buildKernel, type KernelImage, type Layout } from '../emulator/image.ts';
import { SCENARIOS, classify, sweepScenario, type Scenario, type SweepStep } from '../emulator/sweep.ts';
import { DESIGNS, type BlindSpot, type DesignName, type EmulatorPath, type SweepOutcome } from './results.ts';

/** The frame-pointer family, as `stacksanity sweep` checks it (services/cli/sweep.ts SWEEP_STRATEGIES). */
export const EMULATOR_STRATEGIES: readonly StrategyName[] = ['fp', 'kernel_entry', 'section', 'encoded_fp'];

const LAYOUT_OF: Record<DesignName, Layout> = { encoded: 'encoded_fp', section: 'section', kernel_entry: 'kernel_entry' };
const DESIGN_OF: Record<Layout, DesignName> = { encoded_fp: 'encoded', section: 'section', kernel_entry: 'kernel_entry' };

/** Either vocabulary: the experiment's design names or the emulator's layout names. */
export type LayoutName = DesignName | Layout;

export function designOf(l: LayoutName): DesignName {
  return (DESIGNS as readonly string[]).includes(l) ? (l as DesignName) : DESIGN_OF[l as Layout];
}

export function layoutOf(l: LayoutName): Layout {
  return LAYOUT_OF[designOf(l)];
}

/** An entry a scenario takes that the real sweep can also step through: its path name and stub. */
export interface ScenarioEntry {
  path: string;
  stub: string;
}

/**
 * Which of the real sweep's paths (real-sweep.ts SWEEP_ENTRIES × from) each emulator scenario
 * contains, the one it is about first. The scenario's own event is the primary: syscall_page_fault
 * is a copy to user that faults, which is what a kernel-mode page fault on the real guest is (dd's
 * clear_user), while its syscall is only the way in. kthread_machine_check has none: the real sweep
 * cannot raise #MC (a tiny config has no CONFIG_X86_MCE).
 */
const SCENARIO_ENTRIES: Record<string, ScenarioEntry[]> = {
  syscall_page_fault: [
    { path: 'page_fault from kernel', stub: 'asm_exc_page_fault' },
    { path: 'syscall from user', stub: 'entry_SYSCALL_64' },
  ],
  irq_in_syscall: [
    { path: 'irq from kernel', stub: 'asm_common_interrupt' },
    { path: 'syscall from user', stub: 'entry_SYSCALL_64' },
  ],
  nmi_in_pf_in_irq: [
    { path: 'nmi from kernel', stub: 'asm_exc_nmi' },
    { path: 'page_fault from kernel', stub: 'asm_exc_page_fault' },
    { path: 'irq from kernel', stub: 'asm_common_interrupt' },
    { path: 'syscall from user', stub: 'entry_SYSCALL_64' },
  ],
  timer_softirq_idle: [{ path: 'timer from kernel', stub: 'asm_sysvec_apic_timer_interrupt' }],
  user_timer: [{ path: 'timer from user', stub: 'asm_sysvec_apic_timer_interrupt' }],
  kthread_machine_check: [],
};

/** The real sweep's path an emulator scenario is the counterpart of, or undefined when it has none. */
export function scenarioToPath(name: string): string | undefined {
  return SCENARIO_ENTRIES[name]?.[0]?.path;
}

/** Every real path whose entry the scenario runs through (nested entries and the syscall it starts from included). */
export function scenarioEntries(name: string): readonly ScenarioEntry[] {
  return SCENARIO_ENTRIES[name] ?? [];
}

/** The emulator scenarios whose primary entry is this real path ("timer from kernel" → timer_softirq_idle). */
export function pathToScenarios(path: string): string[] {
  return SCENARIOS.filter((s) => scenarioToPath(s.name) === path).map((s) => s.name);
}

const kernels = new Map<Layout, { k: KernelImage; profile: KernelProfile }>();

/** A clean emulated kernel of the layout (no build faults), with the profile the sweep checks against. */
export function emulatedKernel(l: LayoutName): { k: KernelImage; profile: KernelProfile } {
  const layout = layoutOf(l);
  let e = kernels.get(layout);
  if (!e) {
    // The encoded design is modern Linux: its stubs are in the entry section and encode rbp, and the
    // real kernel's profile (inferred from its entry-section symbols) declares both layouts. That is
    // the emulator's encoded_fp+section build ('all' fleets), where the section strategy steps aside
    // (not_applicable, no finding) wherever rbp holds &pt_regs|1 instead of failing there. The only
    // use of the declared layouts is that one (core/check/checker.ts sectionStepsAside), so the
    // other two designs keep their own layout alone.
    const k = buildKernel(layout === 'encoded_fp' ? { layout, profileLayouts: ['encoded_fp', 'section'] } : { layout });
    // As services/cli/sweep.ts sweepKernel builds it: the profile declares the build's layouts.
    const profile = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: k.buildId });
    e = { k, profile };
    kernels.set(layout, e);
  }
  return e;
}

function scenario(name: string): Scenario {
  const sc = SCENARIOS.find((s) => s.name === name);
  if (!sc) throw new Error(`unknown emulator scenario '${name}' (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  return sc;
}

/**
 * Which part of a scenario a path covers. 'scenario': every step, from the bottom stub to its
 * sysret/iret. 'entry': only the primary entry's window, from its stub's first instruction to its
 * iret (nested entries included) — the window the real sweep steps, which starts at a breakpoint on
 * the stub and ends when the interrupted instruction runs again.
 */
export type PathWindow = 'scenario' | 'entry';

export interface EmulatorPathOptions {
  layouts?: readonly LayoutName[];
  scenarios?: readonly string[];
  strategies?: readonly StrategyName[];
  /**
   * Strategies whose blind-spot rows are kept (totals are kept for all). Every row of all four
   * strategies on all 18 paths is ~2,800 rows, ~630 KB of JSON; the report reads the design's own.
   */
  rowStrategies?: readonly StrategyName[];
  window?: PathWindow;
}

/**
 * Tracks one entry's window in a scenario's step sequence: open at the stub's first sampled
 * instruction, closed after its iret or sysret. Steps are taken before each instruction runs, so
 * the stub's last step is the iret itself. (entry_SYSCALL_64's first instructions run on the
 * user's rsp, where the sweep takes no sample.)
 */
class EntryWindow {
  state: 'before' | 'open' | 'after' = 'before';
  constructor(private readonly stub: string) {}
  /** Whether this step is inside the window. */
  take(st: SweepStep): boolean {
    if (this.state === 'before' && st.fn === this.stub) this.state = 'open';
    if (this.state !== 'open') return false;
    if (st.fn === this.stub && (st.op === 'iretq' || st.op === 'sysretq')) this.state = 'after';
    return true;
  }
}

interface OpenRow {
  row: BlindSpot;
  scenario: string;
  toInsn: number;
  offFrom: number;
  offTo: number;
  key: string;
}

/** Rows as the emulator's BlindSpotBuilder groups them, split further where the finding raised changes. */
class RowBuilder {
  readonly totals: Record<string, Record<SweepOutcome, number>> = {};
  readonly rows: BlindSpot[] = [];
  private readonly open = new Map<string, OpenRow>();
  steps = 0;

  constructor(private readonly profile: KernelProfile, private readonly keep?: ReadonlySet<string>) {}

  add(st: SweepStep, checks: readonly StrategyCheck[]): void {
    this.steps++;
    const truth = st.sample.truth?.frames ?? [];
    for (const c of checks) {
      const { outcome, lost } = classify(truth, { strategy: c.strategy, verdict: c.verdict, frames: c.unwind.frames.map((f) => f.ip) });
      const t = (this.totals[c.strategy] ??= { exact: 0, window: 0, stopped: 0, not_decoded: 0, wrong: 0 });
      t[outcome]++;
      if (outcome === 'exact' || (this.keep && !this.keep.has(c.strategy))) {
        this.open.delete(c.strategy);
        continue;
      }
      // A failing verdict (or a passing one the checker caught claiming reliability) raises a finding.
      const sig = !GOOD_VERDICTS.has(c.verdict) || c.falseReliable ? signatureOf(c, this.profile) : undefined;
      const key = [outcome, c.verdict, c.reason ?? '', lost.join(','), sig?.id ?? ''].join('|');
      const prev = this.open.get(c.strategy);
      if (prev && prev.scenario === st.scenario && prev.row.fn === st.fn && prev.toInsn === st.insn - 1 && prev.key === key) {
        prev.toInsn = st.insn;
        prev.offTo = st.offset;
        prev.row.steps++;
        prev.row.where = whereOf(st.fn, prev.offFrom, prev.offTo);
        continue;
      }
      const row: BlindSpot = { strategy: c.strategy, where: whereOf(st.fn, st.offset, st.offset), fn: st.fn, steps: 1, outcome, verdict: c.verdict, lost };
      if (c.reason !== undefined) row.reason = c.reason;
      if (sig) {
        row.findingId = sig.id;
        row.findingTitle = sig.title;
      }
      this.rows.push(row);
      this.open.set(c.strategy, { row, scenario: st.scenario, toInsn: st.insn, offFrom: st.offset, offTo: st.offset, key });
    }
  }
}

function whereOf(fn: string, from: number, to: number): string {
  return from === to ? `${fn}+0x${from.toString(16)}` : `${fn}+0x${from.toString(16)}..+0x${to.toString(16)}`;
}

/** One layout and scenario, swept and tabulated. */
export function emulatorPath(l: LayoutName, scenarioName: string, o: Omit<EmulatorPathOptions, 'layouts' | 'scenarios'> = {}): EmulatorPath {
  const { k, profile } = emulatedKernel(l);
  const sc = scenario(scenarioName);
  const strategies = o.strategies ?? EMULATOR_STRATEGIES;
  const b = new RowBuilder(profile, o.rowStrategies ? new Set(o.rowStrategies) : undefined);
  const primary = scenarioEntries(sc.name)[0];
  const win = o.window === 'entry' && primary ? new EntryWindow(primary.stub) : undefined;
  const fns = new Set<string>();
  sweepScenario(k, sc, (st) => {
    if (win && !win.take(st)) return;
    fns.add(st.fn);
    b.add(st, checkSample(st.sample, profile, strategies).results);
  });
  const out: EmulatorPath = { layout: designOf(l), scenario: sc.name, steps: b.steps, totals: b.totals, blindSpots: b.rows, pathFns: [...fns] };
  const real = scenarioToPath(sc.name);
  if (real !== undefined) out.path = real;
  const cost = primary ? emulatorEntryCost(l, sc.name) : undefined;
  if (cost) out.entryCost = { in: cost.in, out: cost.out };
  return out;
}

/** The emulator's sweep of every scenario on a clean kernel of each of the three layouts: one path per layout and scenario. */
export function emulatorPaths(o: EmulatorPathOptions = {}): EmulatorPath[] {
  const out: EmulatorPath[] = [];
  for (const l of o.layouts ?? DESIGNS) {
    for (const name of o.scenarios ?? SCENARIOS.map((s) => s.name)) out.push(emulatorPath(l, name, o));
  }
  return out;
}

export interface EntryCost {
  /** Stub instructions run from its first one up to and including the call to the C handler. */
  in: number;
  /** Stub instructions run after the handler returned, through the iret (sysret for a syscall). */
  out: number;
  stub: string;
  handler: string;
  path: string;
}

/**
 * The instructions the emulated entry runs in entry code, measured on the sweep: the steps taken
 * in the entry's stub before the C handler's first instruction, and after the handler's return.
 * The emulator's stub is one function (error_entry's work and `call sync_regs` are one modelled
 * instruction each), so these are far below the real kernel's counts; what compares is the
 * difference between layouts. `path` picks which of the scenario's entries (default: the one the
 * scenario is about); undefined when the scenario has no such entry.
 */
export function emulatorEntryCost(l: LayoutName, scenarioName: string, path?: string): EntryCost | undefined {
  const e = path === undefined ? scenarioEntries(scenarioName)[0] : scenarioEntries(scenarioName).find((x) => x.path === path);
  if (!e) return undefined;
  const { k } = emulatedKernel(l);
  const stub = k.fn(e.stub);
  const callIdx = stub.stub!.callIdx;
  const handler = stub.targets[callIdx]!.name;
  const win = new EntryWindow(e.stub);
  // Distinct instruction indices: the sweep samples a boundary again when a nested entry returns to it.
  const inSeen = new Set<number>();
  const outSeen = new Set<number>();
  let reachedHandler = false;
  sweepScenario(k, scenario(scenarioName), (st) => {
    if (!win.take(st)) return;
    if (st.fn === e.stub) (st.insn <= callIdx ? inSeen : outSeen).add(st.insn);
    else if (st.fn === handler && st.insn === 0) reachedHandler = true;
  });
  if (!reachedHandler || inSeen.size === 0) throw new Error(`${scenarioName}: ${e.stub} never reached ${handler}`);
  // Every entry starts at its stub's first instruction: those before the first sample ran unsampled.
  const unsampled = Math.min(...inSeen);
  return { in: inSeen.size + unsampled, out: outSeen.size, stub: e.stub, handler, path: e.path };
}
