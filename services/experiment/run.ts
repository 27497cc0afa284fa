// The 2016 experiment (issue 18), run: for each entry design, its kernel is sampled at random stops
// and single-stepped through each entry path; every step is judged against the stepper's truth and
// every random sample by the checker alone, so the two testing methods can be held side by side.
// Then the kernel's own printed trace is held against the project's unwind of the same instant on
// every build (stock and patched unwinders), and the emulator's sweep of the same three layouts is
// put beside the real one. The result is plain data (results.ts); report.ts renders it.
import { cpus } from 'node:os';
import { GOOD_VERDICTS } from '../core/check/reasons.ts';
import { findingsOf, signatureOf } from '../core/check/findings.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { builtFpKernel, type BuiltKernel } from '../realkernel/fp-kernel.ts';
import { captureInstant } from '../realkernel/instant-trace.ts';
import { blindSpotTable, entryCostOf, sweepEntry, SWEEP_ENTRIES, type EntrySweep, type FromMode, type SweepEntryName } from '../realkernel/real-sweep.ts';
import { strategiesFor } from '../realkernel/run.ts';
import { checkSample } from '../core/check/checker.ts';
import { StackSpace } from '../core/unwind/space.ts';
import { RealHostSession } from '../realkernel/session.ts';
import { openSweepTarget, readEntryDesign, withDesignLayouts } from '../realkernel/sweep-target.ts';
import { compareWithEmulator } from './compare.ts';
import { emulatorPaths } from './emulator-side.ts';
import { DESIGN_STRATEGY, DESIGNS, type BlindSpot, type DesignName, type DesignResult, type ExperimentResults, type InstantResult, type KernelRef, type PathResult, type RandomResult } from './results.ts';

export interface SweepPath {
  entry: SweepEntryName;
  from: FromMode;
}

/** Every entry path the real sweep can take, in the report's order. */
export const ALL_PATHS: readonly SweepPath[] = [
  { entry: 'timer', from: 'kernel' }, { entry: 'timer', from: 'user' },
  { entry: 'irq', from: 'kernel' }, { entry: 'irq', from: 'user' },
  { entry: 'page_fault', from: 'kernel' }, { entry: 'page_fault', from: 'user' },
  { entry: 'syscall', from: 'user' },
  { entry: 'nmi', from: 'kernel' }, { entry: 'nmi', from: 'user' },
];

/** The reduced run (CI): one entry path per design, the one where the designs differ most. */
export const REDUCED_PATHS: readonly SweepPath[] = [{ entry: 'timer', from: 'kernel' }];

export interface ExperimentOptions {
  designs?: readonly DesignName[];
  paths?: readonly SweepPath[];
  /** Random stops per design (0: none). */
  samples?: number;
  /** Capture the kernel's own trace on every build (five boots). */
  instants?: boolean;
  reduced?: boolean;
  command?: string;
  maxSteps?: number;
  /** Finds a built kernel by variant (default: the build-fp-kernel.sh cache). */
  kernel?: (variant: string) => BuiltKernel | undefined;
  log?: (s: string) => void;
}

export const pathName = (p: SweepPath): string => `${p.entry} from ${p.from}`;

export function variantsOf(design: DesignName): { variant: string; unwinder: 'stock' | 'patched' }[] {
  return design === 'encoded' ? [{ variant: 'encoded', unwinder: 'stock' }] : [{ variant: `${design}-patched`, unwinder: 'patched' }, { variant: `${design}-stock`, unwinder: 'stock' }];
}

export async function runExperiment(o: ExperimentOptions = {}): Promise<ExperimentResults> {
  const log = o.log ?? (() => {});
  const find = o.kernel ?? ((v: string) => builtFpKernel(v));
  const designs: DesignResult[] = [];
  let source = '';
  for (const design of o.designs ?? DESIGNS) {
    const kernels: KernelRef[] = [];
    const built = new Map<string, BuiltKernel>();
    for (const { variant, unwinder } of variantsOf(design)) {
      const k = find(variant);
      if (!k) {
        if (unwinder === 'stock' && !o.instants) continue;
        throw new Error(`no ${variant} kernel built: run bash scripts/build-fp-kernel.sh --design ${design}${design === 'encoded' ? '' : ` --unwinder ${unwinder}`}`);
      }
      built.set(variant, k);
      source ||= k.source;
      kernels.push({ variant, unwinder, buildId: '', image: k.image });
    }
    const main = built.get(variantsOf(design)[0]!.variant)!;
    const d: DesignResult = { design, strategy: DESIGN_STRATEGY[design], kernels, paths: [], instants: [] };
    const samples = o.samples ?? 0;
    if (samples > 0) {
      log(`${design}: ${samples} random stops on ${main.image}`);
      d.random = await randomRun(main, samples, log);
    }
    log(`${design}: sweeping ${(o.paths ?? ALL_PATHS).map(pathName).join(', ')}`);
    const { paths, buildId } = await sweepPaths(main, design, o.paths ?? ALL_PATHS, o.maxSteps, log);
    kernels[0]!.buildId = buildId;
    d.paths = paths;
    if (d.random) attachRandom(d);
    if (o.instants) {
      for (const [variant, k] of built) {
        log(`${variant}: the kernel's own trace against the project's unwind of the same instant`);
        d.instants.push(await instantOf(k, variant, log));
      }
    }
    designs.push(d);
  }
  log('the emulator\'s sweep of the same three layouts');
  const emulator = emulatorPaths({ window: 'entry', rowStrategies: [...new Set(Object.values(DESIGN_STRATEGY))] });
  const results: ExperimentResults = {
    version: 1, generatedAt: new Date().toISOString(), command: o.command ?? 'stacksanity experiment', reduced: o.reduced ?? false,
    source, machine: machineLine(), designs, emulator, differences: [],
  };
  results.differences = compareWithEmulator(results);
  return results;
}

function machineLine(): string {
  const c = cpus();
  return `${c.length} × ${c[0]?.model.trim() ?? 'unknown CPU'}, QEMU TCG`;
}

async function instantOf(k: BuiltKernel, variant: string, log: (s: string) => void): Promise<InstantResult> {
  try {
    return await captureInstant({ kernel: k.image, vmlinux: k.vmlinux, variant, log });
  } catch (e) {
    return { variant, what: '', kernelTrace: [], kernelRipBlock: false, kernelWarnings: [], projectTrace: [], verdict: '', skipped: (e as Error).message };
  }
}

// --- random stops ---------------------------------------------------------------------------------

/** The fp walk's failures belong to no finding (it is the baseline every design is measured from). */
const BASELINE = new Set<StrategyName>(['fp']);

/** Per random sample: the functions it was sampled in (to estimate the time share of each path). */
interface RandomRun extends RandomResult {
  sampledFns: string[];
}

async function randomRun(k: BuiltKernel, samples: number, log: (s: string) => void): Promise<RandomRun> {
  const session = await RealHostSession.open({ own: { kernel: k.image, vmlinux: k.vmlinux }, log });
  try {
    // Judged with the layouts the kernel's code produces, as the sweep judges it (sweep-target.ts).
    const design = await readEntryDesign(session.gdb, session.profile, session.kallsyms);
    const profile = withDesignLayouts(session.profile, session.kallsyms, design.design);
    log(design.note);
    const strategies = strategiesFor(profile).filter((s) => s !== 'orc' || profile.orc);
    const verdicts: Record<string, Record<string, number>> = {};
    const byId = new Map<string, RandomResult['findings'][number]>();
    const sampledFns: string[] = [];
    for (let i = 0; i < samples; i++) {
      const { sample } = await session.take();
      const check = checkSample(sample, profile, strategies, { space: new StackSpace(sample) });
      for (const r of check.results) {
        const v = (verdicts[r.strategy] ??= {});
        v[r.verdict] = (v[r.verdict] ?? 0) + 1;
      }
      const ip = sample.regs?.ip;
      sampledFns.push(ip === undefined ? '?' : profile.symbols.lookup(ip)?.name ?? '?');
      for (const f of findingsOf(sample, check, profile, BASELINE)) {
        const had = byId.get(f.id);
        if (had) had.count++;
        else byId.set(f.id, { id: f.id, title: f.title, strategy: f.strategy, count: 1, firstSample: i });
      }
    }
    return { samples, verdicts, findings: [...byId.values()].sort((a, b) => a.firstSample - b.firstSample), sampledFns };
  } finally {
    session.close();
  }
}

/**
 * Which random sample first raised each blind spot's finding, and how many random samples one would
 * expect to need: a spot of s instructions in a path of S, on a path whose functions held a share p
 * of the random samples, is hit with probability p·s/S per sample (uniform stops over the time the
 * guest spends there; the path's instructions are taken to cost alike).
 */
function attachRandom(d: DesignResult): void {
  const random = d.random as RandomRun;
  const first = new Map(random.findings.map((f) => [f.id, f.firstSample]));
  for (const p of d.paths) {
    if (p.skipped || p.steps === 0) continue;
    const fns = new Set(p.pathFns ?? []);
    const inPath = random.sampledFns.filter((f) => fns.has(f)).length;
    for (const b of p.blindSpots) {
      b.firstRandomSample = b.findingId !== undefined ? (first.get(b.findingId) ?? null) : null;
      const share = Math.max(inPath, 0.5) / random.samples * (b.steps / p.steps);
      b.expectedRandomSamples = Math.round(1 / share);
    }
  }
  // The per-sample function list was only needed for the estimate.
  delete (random as Partial<RandomRun>).sampledFns;
}

// --- sweeps ---------------------------------------------------------------------------------------

async function sweepPaths(k: BuiltKernel, design: DesignName, paths: readonly SweepPath[], maxSteps: number | undefined, log: (s: string) => void): Promise<{ paths: PathResult[]; buildId: string }> {
  const target = await openSweepTarget({ kernel: k.image, vmlinux: k.vmlinux, log });
  const out: PathResult[] = [];
  try {
    for (const p of paths) {
      const t0 = performance.now();
      let sw: EntrySweep;
      try {
        sw = await sweepEntry(target, p.entry, p.from, { ...(maxSteps !== undefined ? { maxSteps } : {}), log });
      } catch (e) {
        log(`${design} ${pathName(p)}: not swept: ${(e as Error).message}`);
        out.push({ path: pathName(p), entry: p.entry, from: p.from, skipped: (e as Error).message, steps: 0, returned: false, totals: {}, blindSpots: [] });
        continue;
      }
      log(`${design} ${pathName(p)}: ${sw.steps.length} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      out.push(pathResult(sw, p, target.profile, target.buildId, DESIGN_STRATEGY[design]));
    }
  } finally {
    target.close();
  }
  return { paths: out, buildId: target.buildId };
}

/**
 * Rows kept: the design's own strategy's, its windows in C code (prologue, epilogue, leaf: alike in
 * every design) only summed; the other strategies' totals only (fp, the baseline, is wrong nearly
 * everywhere; encoded_fp and section cannot read the other designs' entries at all).
 */
function pathResult(sw: EntrySweep, p: SweepPath, profile: Parameters<typeof blindSpotTable>[1], buildId: string, own: string): PathResult {
  const table = blindSpotTable([sw], profile, SWEEP_ENTRIES[p.entry].type, buildId);
  const kept = table.rows.filter((r) => r.strategy === own && (r.outcome !== 'window' || r.lost.includes('entry_code')));
  const windowTotals: Record<string, { runs: number; insns: number }> = {};
  for (const r of table.rows) {
    if (r.strategy !== own || r.outcome !== 'window' || r.lost.includes('entry_code')) continue;
    const e = (windowTotals[r.lost.join('+') || 'nothing'] ??= { runs: 0, insns: 0 });
    e.runs++;
    e.insns += r.steps;
  }
  const blindSpots: BlindSpot[] = kept.map((r) => {
    const range = r.offFrom === r.offTo ? `+0x${r.offFrom.toString(16)}` : `+0x${r.offFrom.toString(16)}..+0x${r.offTo.toString(16)}`;
    const b: BlindSpot = { strategy: r.strategy, where: `${r.fn}${range}`, fn: r.fn, steps: r.steps, outcome: r.outcome, verdict: r.verdict, lost: r.lost };
    if (r.reason !== undefined) b.reason = r.reason;
    // The finding the checker raises there, on its own, without the truth: none when it is silent.
    const st = sw.steps.find((s) => s.index === r.from);
    const res = st?.check?.results.find((x) => x.strategy === r.strategy);
    if (res && (!GOOD_VERDICTS.has(res.verdict) || res.falseReliable)) {
      const f = signatureOf(res, profile);
      b.findingId = f.id;
      b.findingTitle = f.title;
    }
    return b;
  });
  const cost = entryCostOf(sw);
  return {
    path: pathName(p), entry: p.entry, from: p.from, steps: sw.steps.length, returned: sw.returned,
    ...(cost ? { entryCost: { in: cost.in, out: cost.out } } : {}), totals: table.totals, blindSpots, windowTotals,
    pathFns: [...new Set(sw.steps.map((s) => s.fn))],
  };
}
