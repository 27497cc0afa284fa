// The blind-spot table for /sweeps and /v1/sweeps: computed on demand, once per API process, in a
// worker thread, and kept. Why not precomputed: the table is a function of this checkout's code
// alone (the emulator's kernels and scenarios, the strategies), so a file committed beside it
// could only go stale; and it costs ~2 s of CPU, which would stall every request if it ran on the
// API's event loop. See docs/explorer.md.
import { Worker } from 'node:worker_threads';
import { SCENARIOS } from '../emulator/sweep.ts';
import { fleetBuilds } from '../emulator/index.ts';
import { SWEEP_STRATEGIES, sweepKernel } from '../cli/sweep.ts';
import type { SweepDoc } from './explorer-overview.ts';

export type SweepState =
  | { state: 'idle' }
  | { state: 'computing' }
  | { state: 'ready'; doc: SweepDoc }
  | { state: 'failed'; error: string };

let current: SweepState = { state: 'idle' };

export function sweepState(): SweepState {
  return current;
}

/** The document `stacksanity sweep --layout all --json` writes, computed here. */
export function computeSweepDoc(): SweepDoc {
  const tables = fleetBuilds('all', []).map((k) => sweepKernel(k, SCENARIOS, SWEEP_STRATEGIES));
  return { scenarios: SCENARIOS.map((s) => ({ name: s.name, summary: s.summary })), tables };
}

/** Starts the computation in a worker thread unless it is running or done. */
export function startSweep(): void {
  if (current.state === 'computing' || current.state === 'ready') return;
  current = { state: 'computing' };
  // The worker loads the TypeScript sources through tsx's loader, registered first as
  // bin/stacksanity.js does (a .ts entry would be resolved before an --import loader applies).
  const entry = new URL('./sweep-worker.ts', import.meta.url).href;
  const boot = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  const w = new Worker(boot, { eval: true });
  w.unref();
  w.once('message', (json: string) => {
    current = { state: 'ready', doc: JSON.parse(json) as SweepDoc };
    void w.terminate();
  });
  w.once('error', (e) => {
    current = { state: 'failed', error: e.message };
  });
  w.once('exit', (code) => {
    if (current.state === 'computing') current = { state: 'failed', error: `the sweep worker exited with code ${code}` };
  });
}
