// Shared by the benchmarks: run a unit of work for at least minMs after a warm-up (so the figure is
// the optimised code's), and report units per second.
export function timeIt(minMs: number, fn: () => number): { perSec: number; units: number; ms: number } {
  const warmEnd = performance.now() + minMs / 4;
  while (performance.now() < warmEnd) fn();
  let units = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < minMs) {
    units += fn();
    t = performance.now();
  }
  const ms = t - t0;
  return { perSec: (units / ms) * 1000, units, ms };
}
