// npm run bench:collapse — perf script parse + collapse on one core (Node runs it on one thread),
// on FlameGraph's example-perf-stacks (the input inferno and FlameGraph benchmark on), after
// gunzip. Each figure is printed next to baselines measured in the same process: splitting the
// same text into lines (a floor no line-based parser beats), and the core text codec parsing it
// into full Sample objects (what `check` does with perf script). Results go to bench/RESULTS.md.
import { readFileSync, existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { collapsePerfScript } from '../services/realhost/collapse.ts';
import { parseTextDump } from '../services/core/dump/text.ts';

const here = dirname(fileURLToPath(import.meta.url));
const file = resolve(here, '../../shared/corpus/perf-script/flamegraph-example-perf-stacks.txt.gz');
if (!existsSync(file)) {
  console.log(`skipped: ${file} not found (../shared/corpus is absent)`);
  process.exit(0);
}
const bytes = gunzipSync(readFileSync(file));
const latin1 = bytes.toString('latin1');
const utf8 = bytes.toString('utf8');
const MB = bytes.length / 1e6;

/** Median MB/s over `rounds` rounds of at least `ms` each, after a warm-up. */
function mbps(rounds: number, ms: number, fn: () => number): { median: number; best: number } {
  const warm = performance.now() + 300;
  while (performance.now() < warm) fn();
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let n = 0;
    let sink = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      sink += fn();
      n++;
      t = performance.now();
    }
    if (sink === -1) console.log(sink);
    rates.push((n * MB) / ((t - t0) / 1000));
  }
  rates.sort((a, b) => a - b);
  return { median: rates[Math.floor(rates.length / 2)]!, best: rates[rates.length - 1]! };
}

const cpu = cpus()[0]?.model ?? 'unknown CPU';
console.log(`bench:collapse — ${file.split('/').pop()} (${bytes.length.toLocaleString('en')} bytes after gunzip)`);
console.log(`machine: ${cpus().length} × ${cpu}, Node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const collapse = mbps(15, 400, () => collapsePerfScript(latin1).stacks);
const collapseAll = mbps(7, 400, () => collapsePerfScript(latin1, { all: true, tid: true }).stacks);
const split = mbps(7, 400, () => utf8.split('\n').length);
const codec = mbps(5, 400, () => parseTextDump(utf8).samples.length);
const row = (what: string, r: { median: number; best: number }): string => `| ${what} | ${r.median.toFixed(1)} MB/s | ${r.best.toFixed(1)} MB/s | ${(r.median / split.median).toFixed(3)}× |`;
console.log('');
console.log('| what | median | best | vs split |');
console.log('|---|---:|---:|---:|');
console.log(row('collapse (default options)', collapse));
console.log(row('collapse --all --tid', collapseAll));
console.log(row('baseline: text.split(\'\\n\')', split));
console.log(row('baseline: core parseTextDump → Sample objects', codec));
console.log(`\ncollapse vs the core codec: ${(collapse.median / codec.median).toFixed(2)}×; target >= 200 MB/s: ${collapse.median >= 200 ? 'met' : 'not met'} (median)`);
