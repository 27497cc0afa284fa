// `stacksanity experiment`: issue 18's comparison of the three entry designs on a real kernel, end
// to end — build the kernels (scripts/build-fp-kernel.sh, cached), sample and sweep each, hold the
// kernel's own trace against the project's, compare with the emulator, write the report.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ALL_PATHS, REDUCED_PATHS, runExperiment, pathName, type SweepPath } from '../experiment/run.ts';
import { renderReport } from '../experiment/report.ts';
import { DESIGNS, type DesignName, type ExperimentResults } from '../experiment/results.ts';
import { SWEEP_ENTRIES, type SweepEntryName } from '../realkernel/real-sweep.ts';
import type { Io } from './check.ts';

export const EXPERIMENT_USAGE = `usage: stacksanity experiment [--reduced] [--design D[,D…]] [--path ENTRY:FROM[,…]] [--samples N]
                              [--no-instants] [--no-build] [--max-steps N] [--out FILE] [--json FILE] [--strict]
  Builds the three entry-design kernels (encoded, section, kernel_entry; scripts/build-fp-kernel.sh,
  cached), samples each at random stops, single-steps every entry path, captures the kernel's own
  trace against the project's unwind on every build, compares with the emulator, and writes the
  report (default docs/experiment.md) and its data (default docs/experiment/results.json).
  --reduced        one entry path per design (timer from kernel), 40 random stops, no instants: CI's run
  --design         some of: ${DESIGNS.join(', ')} (default all)
  --path           entry paths to sweep, e.g. timer:kernel,page_fault:user (default all: ${ALL_PATHS.map((p) => `${p.entry}:${p.from}`).join(' ')})
  --samples N      random stops per design (default 2000; 0: none)
  --no-instants    skip the kernel-trace captures (five boots)
  --no-build       use the kernels already built, do not run the build script
  --strict         exit 1 when a path asked for could not be swept or did not return, or a
                   difference from the emulator is unexplained
`;

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function runExperimentCommand(args: string[], io: Io): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args,
      options: {
        reduced: { type: 'boolean', default: false }, design: { type: 'string' }, path: { type: 'string' },
        samples: { type: 'string' }, 'no-instants': { type: 'boolean', default: false }, 'no-build': { type: 'boolean', default: false },
        'max-steps': { type: 'string' }, out: { type: 'string' }, json: { type: 'string' }, strict: { type: 'boolean', default: false },
      },
    }).values;
  } catch (e) {
    io.err(`stacksanity experiment: ${(e as Error).message}\n`);
    return 2;
  }
  const fail = (m: string): number => {
    io.err(`stacksanity experiment: ${m}\n`);
    return 2;
  };
  const designs = (v.design ?? DESIGNS.join(',')).split(',').map((s) => s.trim()) as DesignName[];
  for (const d of designs) if (!DESIGNS.includes(d)) return fail(`--design: unknown design '${d}' (known: ${DESIGNS.join(', ')})`);
  let paths: readonly SweepPath[] = v.reduced ? REDUCED_PATHS : ALL_PATHS;
  if (v.path !== undefined) {
    const out: SweepPath[] = [];
    for (const item of v.path.split(',')) {
      const [entry, from] = item.trim().split(':');
      if (!entry || !(entry in SWEEP_ENTRIES)) return fail(`--path: unknown entry '${entry}' in '${item}' (known: ${Object.keys(SWEEP_ENTRIES).join(', ')})`);
      if (from !== 'user' && from !== 'kernel') return fail(`--path: '${item}' must end in :user or :kernel`);
      if (entry === 'syscall' && from === 'kernel') return fail('--path: a syscall always comes from user mode (syscall:user)');
      out.push({ entry: entry as SweepEntryName, from });
    }
    paths = out;
  }
  const samples = v.samples !== undefined ? Number(v.samples) : v.reduced ? 40 : 2000;
  if (!Number.isInteger(samples) || samples < 0) return fail(`--samples must be a whole number, not '${v.samples}'`);
  const maxSteps = v['max-steps'] !== undefined ? Number(v['max-steps']) : undefined;
  if (maxSteps !== undefined && (!Number.isInteger(maxSteps) || maxSteps <= 0)) return fail(`--max-steps must be a positive integer, not '${v['max-steps']}'`);
  const instants = !v.reduced && !v['no-instants'];
  const out = v.out ?? join(REPO, 'docs', 'experiment.md');
  const json = v.json ?? join(REPO, 'docs', 'experiment', 'results.json');
  const log = (s: string): void => io.err(`stacksanity experiment: ${s}\n`);

  if (!v['no-build']) {
    // The stock-unwinder builds only matter to the kernel-trace captures.
    const unwinders = instants ? 'all' : 'patched';
    log(`building the kernels: scripts/build-fp-kernel.sh --design ${designs.join(',')} --unwinder ${unwinders}`);
    const b = spawnSync('bash', [join(REPO, 'scripts', 'build-fp-kernel.sh'), '--design', designs.join(','), '--unwinder', unwinders], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (b.status !== 0) return fail(`the kernel build failed (exit ${b.status ?? b.signal}); see its messages above`);
  }

  const command = ['stacksanity experiment', ...args].join(' ');
  let results: ExperimentResults;
  const t0 = performance.now();
  try {
    results = await runExperiment({ designs, paths, samples, instants, reduced: v.reduced ?? false, command, ...(maxSteps !== undefined ? { maxSteps } : {}), log });
  } catch (e) {
    return fail((e as Error).message);
  }
  mkdirSync(dirname(json), { recursive: true });
  writeFileSync(json, JSON.stringify(results, null, 1) + '\n');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, renderReport(results));
  log(`wrote ${out} and ${json} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);

  const problems: string[] = [];
  for (const d of results.designs) {
    for (const p of d.paths) {
      if (p.skipped) problems.push(`${d.design} ${p.path}: not swept (${p.skipped})`);
      else if (!p.returned) problems.push(`${d.design} ${p.path}: did not return within the step limit`);
    }
  }
  for (const x of results.differences) if (x.resolution === 'unexplained') problems.push(`${x.design} ${x.path}: unexplained difference from the emulator: ${x.what}`);
  for (const p of problems) log(p);
  io.out(`experiment: ${results.designs.length} designs, ${results.designs.reduce((a, d) => a + d.paths.filter((p) => !p.skipped).length, 0)} paths swept (${paths.map(pathName).join(', ')}), report ${out}\n`);
  return v.strict && problems.length > 0 ? 1 : 0;
}
