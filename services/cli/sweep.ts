// `stacksanity sweep`: single-step the emulator's scenarios on a clean kernel of each layout, check
// every instruction boundary with every strategy, and print the per-strategy blind-spot table.
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { checkSample } from '../core/check/checker.ts';
import { KernelProfile, type EntryLayout } from '../core/symbols/profile.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { fleetBuilds } from '../emulator/index.ts';
import type { KernelImage } from '../emulator/image.ts';
import { BlindSpotBuilder, SCENARIOS, formatBlindSpots, sweepScenario, type BlindSpotTable, type StepResult } from '../emulator/sweep.ts';
import { Progress } from './progress.ts';
import type { Io } from './check.ts';

/** The frame-pointer family: what the emulator's kernels are built for (ORC needs .orc_unwind tables). */
export const SWEEP_STRATEGIES: readonly StrategyName[] = ['fp', 'kernel_entry', 'section', 'encoded_fp'];

/** Sweeps every scenario on one kernel with every strategy; the checker is passed to the emulator's stepping. */
export function sweepKernel(k: KernelImage, scenarios = SCENARIOS, strategies: readonly StrategyName[] = SWEEP_STRATEGIES, onProgress?: (n: number) => void): BlindSpotTable {
  const profile = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: k.buildId });
  const b = new BlindSpotBuilder(k);
  let n = 0;
  for (const sc of scenarios) {
    sweepScenario(k, sc, (step) => {
      const r = checkSample(step.sample, profile, strategies);
      const results: StepResult[] = r.results.map((c) => {
        const o: StepResult = { strategy: c.strategy, verdict: c.verdict, frames: c.unwind.frames.map((f) => f.ip) };
        if (c.reason !== undefined) o.reason = c.reason;
        return o;
      });
      b.add(step, results);
      if (onProgress && ++n % 50 === 0) onProgress(n);
    });
  }
  return b.table();
}

export function runSweep(args: string[], io: Io): number {
  let v;
  try {
    v = parseArgs({ args, options: { layout: { type: 'string', default: 'all' }, json: { type: 'string' }, scenario: { type: 'string' } } }).values;
  } catch (e) {
    io.err(`stacksanity sweep: ${(e as Error).message}\n`);
    return 2;
  }
  const layout = v.layout as 'kernel_entry' | 'section' | 'encoded_fp' | 'all';
  if (!['kernel_entry', 'section', 'encoded_fp', 'all'].includes(layout)) {
    io.err(`stacksanity sweep: --layout must be kernel_entry, section, encoded_fp or all, not '${v.layout}'\n`);
    return 2;
  }
  const scenarios = v.scenario ? SCENARIOS.filter((s) => s.name === v.scenario) : SCENARIOS;
  if (scenarios.length === 0) {
    io.err(`stacksanity sweep: unknown scenario '${v.scenario}' (known: ${SCENARIOS.map((s) => s.name).join(', ')})\n`);
    return 2;
  }
  const tables: BlindSpotTable[] = [];
  const builds = fleetBuilds(layout, []);
  const progress = new Progress(builds.length * 1500, 'sweep');
  let done = 0;
  for (const k of builds) {
    tables.push(sweepKernel(k, scenarios, SWEEP_STRATEGIES, (n) => progress.tick(done + n)));
    done += tables[tables.length - 1]!.steps;
  }
  progress.finish();
  io.out(`single-step sweep: ${scenarios.map((s) => s.name).join(', ')}\n`);
  io.out('outcome per step: exact | window (only frames the kernel documents as lost at that instant) | stopped (all frames, then an error) |\n  not_decoded (the strategy cannot read this kernel\'s entries) | wrong (a recoverable frame lost, or one invented)\n\n');
  for (const t of tables) io.out(formatBlindSpots(t) + '\n');
  if (v.json) writeFileSync(v.json, JSON.stringify({ scenarios: scenarios.map((s) => ({ name: s.name, summary: s.summary })), tables }, null, 1) + '\n');
  return 0;
}
