// npm run bench:emulate — the emulated host's throughput on one core, each figure next to a
// baseline measured in the same run (these machines are shared and noisy: ratios mean more than
// times). Results go to bench/RESULTS.md by hand, with the machine's description.
//
//  1. samples generated per second by EmulatedFleet.next() (layout all, 8 hosts, no faults).
//     Baseline: checkSample on the same samples with the strategies their kernels support —
//     whether one emulator core can feed one checker core.
//  2. sweep steps generated and checked per minute (every scenario, every strategy of the
//     frame-pointer family, on each build). Baseline: the same steps generated without checking.
import { cpus } from 'node:os';
import { EmulatedFleet, fleetBuilds } from '../services/emulator/index.ts';
import { SCENARIOS, sweepScenario } from '../services/emulator/sweep.ts';
import { KernelProfile, type EntryLayout } from '../services/core/symbols/profile.ts';
import { checkSample } from '../services/core/check/checker.ts';
import { sweepKernel } from '../services/cli/sweep.ts';
import type { StrategyName } from '../services/core/unwind/types.ts';
import type { Sample } from '../services/core/dump/sample.ts';
import { timeIt } from './timing.ts';


const ms = Number(process.env.BENCH_MS ?? 3000);
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
console.log(`bench:emulate — ${cpus()[0]?.model ?? 'cpu'} x${cpus().length}, Node ${process.version}, ${ms} ms per figure\n`);

// 1. generation
const fleet = new EmulatedFleet({ seed: 1, layout: 'all', hosts: 8 });
const gen = timeIt(ms, () => {
  for (let i = 0; i < 1000; i++) fleet.next();
  return 1000;
});
const profiles = new Map(fleet.kernels().map((k) => [k.buildId, KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[], buildId: k.buildId })]));
const pool: Sample[] = fleet.batch(5000);
let bytes = 0;
for (const s of pool) for (const st of s.stacks) for (const w of st.windows) bytes += w.bytes.length;
let j = 0;
const chk = timeIt(ms, () => {
  for (let i = 0; i < 200; i++) {
    const s = pool[j++ % pool.length]!;
    const p = profiles.get(s.kernel!)!;
    checkSample(s, p, ['fp', ...p.layouts] as StrategyName[]);
  }
  return 200;
});
console.log(`samples generated:   ${fmt(gen.perSec)} samples/s (target ≥ 100,000); mean ${Math.round(bytes / pool.length)} stack bytes/sample`);
console.log(`baseline, checked:   ${fmt(chk.perSec)} samples/s (checkSample, fp + the kernel's own strategies)  ratio ${(gen.perSec / chk.perSec).toFixed(2)}x`);

// 2. sweep
const builds = fleetBuilds('all', []);
let stepsPerPass = 0;
for (const k of builds) for (const sc of SCENARIOS) stepsPerPass += sweepScenario(k, sc, () => {});
const genOnly = timeIt(ms, () => {
  let n = 0;
  for (const k of builds) for (const sc of SCENARIOS) n += sweepScenario(k, sc, () => {});
  return n;
});
const checked = timeIt(ms, () => {
  let n = 0;
  for (const k of builds) n += sweepKernel(k).steps;
  return n;
});
console.log(`\nsweep: ${stepsPerPass} steps per pass (${SCENARIOS.length} scenarios x ${builds.length} builds), 4 strategies per step`);
console.log(`sweep steps generated + checked: ${fmt(checked.perSec * 60)} steps/min (target ≥ 1,000,000)`);
console.log(`baseline, generated only:        ${fmt(genOnly.perSec * 60)} steps/min  ratio ${(checked.perSec / genOnly.perSec).toFixed(2)}x`);
