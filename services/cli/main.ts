// The stacksanity command line.
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { runCheck, EXIT_UNUSABLE, type Io } from './check.ts';
import { strategies } from '../core/unwind/index.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { orcLayoutFromName, ORC_LAYOUT_CHOICES, type OrcLayout } from '../core/unwind/orc-table.ts';

const USAGE = `usage: stacksanity <command> [options]

commands:
  check [--kallsyms FILE] [--profile FILE | --kernels DIR] [--vmlinux FILE [--orc-layout L]] [--strategy LIST]
        [--format text|json|ndjson] [--findings-out FILE] [--known FILE] FILE...
        Unwind every sample in the dumps (stacksanity text or JSON dumps, or perf script output;
        '-' reads stdin; gzip is detected) with each strategy and judge the result. Failing
        unwinds are grouped into findings (one line per blind spot) printed before the samples.
        Exit 0: all consistent (with --known: no finding outside the baseline); 1: failures found
        (with --known: a new finding); 2: the input was unusable.
        --kernels DIR     every <build id>.kallsyms (+ .profile.json) in DIR, the kernels/ folder
                          that emulate --out writes; each sample is unwound with its own build
        --findings-out F  write this run's findings (JSON) to F: the baseline for --known
        --known F         a findings file from an earlier run: only findings not in it fail the run
                          (kernel CI: check the unpatched kernel once, gate the patch on it)
        --kallsyms FILE   /proc/kallsyms or System.map of the sampled kernel (gzip allowed)
        --profile FILE    kernel profile JSON: {"buildId", "layouts": [...], "stubs": {...}, "kasan", "framePointers"}
        --vmlinux FILE    the kernel's vmlinux or bzImage: its ORC tables add the orc strategy, its
                          build id must match the samples', and it tells whether the build has
                          frame pointers (embedded config, else the ORC table, else the function
                          prologues; a note on stderr says which). Without frame pointers the fp
                          strategies answer not_applicable. A --profile's "framePointers" wins.
        --orc-layout L    the ORC entry layout of --vmlinux when its "Linux version" banner is
                          missing (or to override it): type2 (v4.14–v6.3), type3 (v6.4+), or a
                          kernel release such as 6.1 or 6.4
        --strategy LIST   comma-separated: ${[...strategies.keys()].join(', ')} (default: all; the
                          fp baseline only counts as failing when named here)
        --format text|json|ndjson  ndjson: one line per sample with every strategy's frames and
                          verdict (passing samples too), then a summary line
        --max-bytes N     refuse inputs larger than N bytes (default 256 MiB)
        --max-failures N  show at most N failing samples (default 20)
  demo  Check the shipped example (examples/demo.dump) and explain what the output means.
`;

/** A subcommand: its one-line usage for the help text and its entry point (returns the exit code). */
export interface Command {
  usage: string;
  run: (args: string[], io: Io) => number | Promise<number>;
}

/**
 * The subcommands. Each lives in its own module; adding one is one line here.
 */
export const COMMANDS: Record<string, Command> = {
  check: { usage: 'check   unwind and judge dumps (see above)', run: (a, io) => check(a, io) },
  demo: { usage: 'demo    check the shipped example and explain the output', run: (_a, io) => demo(io) },
  host: { usage: 'host    qemu [--samples N | --duration T] [--singlestep] [--seed S] [--out FILE | --upload URL --token T]  sample Debian\'s kernel under QEMU', run: async (a, io) => (await import('./host.ts')).runHost(a, io) },
  sweep: { usage: 'sweep   --layout kernel_entry|section|encoded_fp|all [--json FILE]  single-step entry code, blind-spot table', run: async (a, io) => (await import('./sweep.ts')).runSweep(a, io) },
  emulate: { usage: 'emulate --seed S --samples N [--hosts H --layout L --faults LIST --out FILE | --upload URL --token T --rate R]', run: async (a, io) => (await import('./emulate.ts')).runEmulate(a, io) },
  // The service commands load fastify/BullMQ lazily so that `check` stays light.
  serve: { usage: 'serve   [--no-feeder] [--workers N]  API + checker workers + emulated host on one machine (npm start)', run: async (a, io) => (await import('./serve.ts')).serve(a, io) },
  api: { usage: 'api     the HTTP API alone (env: REDIS_URL, HOST, PORT, STACKSANITY_TOKENS...)', run: async (a, io) => (await import('./serve.ts')).apiCommand(a, io) },
  worker: { usage: 'worker  one checker worker process (env: REDIS_URL, METRICS_PORT...)', run: async (a, io) => (await import('./serve.ts')).workerCommand(a, io) },
  replay: { usage: 'replay  [--list] [--job ID | --all]  batches parked in the dead-letter list: why, and queue them again', run: async (a, io) => (await import('./replay.ts')).runReplay(a, io) },
  capture: { usage: 'capture (--url U --token T | --dry-run --out F) [--duration S | --perf-data F | --perf-script F | --kernel-log F]  real-host agent', run: async (a, io) => (await import('./capture.ts')).runCapture(a, io) },
  collapse: { usage: 'collapse [--pid|--tid] [--kernel|--jit|--all] [--addrs] FILE...  perf script → folded stacks (FlameGraph byte for byte)', run: async (a, io) => (await import('./collapse.ts')).runCollapse(a, io) },
};

export async function main(argv: string[], io: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) }): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    io.out(usage());
    return cmd === undefined ? EXIT_UNUSABLE : 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    io.err(`stacksanity: unknown command '${cmd}'\n${usage()}`);
    return EXIT_UNUSABLE;
  }
  return c.run(rest, io);
}

function usage(): string {
  const extra = Object.entries(COMMANDS).filter(([n]) => n !== 'check' && n !== 'demo').map(([, c]) => `  ${c.usage}\n`).join('');
  return USAGE + extra;
}

function check(args: string[], io: Io): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        kallsyms: { type: 'string' },
        profile: { type: 'string' },
        vmlinux: { type: 'string' },
        'orc-layout': { type: 'string' },
        strategy: { type: 'string' },
        kernels: { type: 'string' },
        'findings-out': { type: 'string' },
        known: { type: 'string' },
        format: { type: 'string', default: 'text' },
        'max-bytes': { type: 'string' },
        'max-failures': { type: 'string' },
      },
    });
  } catch (e) {
    io.err(`stacksanity check: ${(e as Error).message}\n`);
    return EXIT_UNUSABLE;
  }
  const v = parsed.values;
  if (parsed.positionals.length === 0) {
    io.err('stacksanity check: name at least one dump file (or - for stdin)\n');
    return EXIT_UNUSABLE;
  }
  if (v.format !== 'text' && v.format !== 'json' && v.format !== 'ndjson') {
    io.err(`stacksanity check: --format must be text, json or ndjson, not '${v.format}'\n`);
    return EXIT_UNUSABLE;
  }
  let list: StrategyName[] | undefined;
  if (v.strategy !== undefined) {
    list = [];
    for (const name of v.strategy.split(',').map((x) => x.trim()).filter(Boolean)) {
      if (!strategies.has(name as StrategyName)) {
        io.err(`stacksanity check: unknown strategy '${name}' (known: ${[...strategies.keys()].join(', ')})\n`);
        return EXIT_UNUSABLE;
      }
      list.push(name as StrategyName);
    }
    if (list.length === 0) {
      io.err('stacksanity check: --strategy names no strategy\n');
      return EXIT_UNUSABLE;
    }
  }
  let orcLayout: OrcLayout | undefined;
  if (v['orc-layout'] !== undefined) {
    orcLayout = orcLayoutFromName(v['orc-layout']);
    if (!orcLayout) {
      io.err(`stacksanity check: --orc-layout must be ${ORC_LAYOUT_CHOICES}, not '${v['orc-layout']}'\n`);
      return EXIT_UNUSABLE;
    }
  }
  const num = (s: string | undefined, flag: string): number | undefined | null => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isInteger(n) || n <= 0) {
      io.err(`stacksanity check: ${flag} must be a positive integer, not '${s}'\n`);
      return null;
    }
    return n;
  };
  const maxBytes = num(v['max-bytes'], '--max-bytes');
  const maxFailures = num(v['max-failures'], '--max-failures');
  if (maxBytes === null || maxFailures === null) return EXIT_UNUSABLE;
  return runCheck(
    {
      files: parsed.positionals,
      format: v.format,
      ...(v.kallsyms !== undefined ? { kallsyms: v.kallsyms } : {}),
      ...(v.profile !== undefined ? { profile: v.profile } : {}),
      ...(v.vmlinux !== undefined ? { vmlinux: v.vmlinux } : {}),
      ...(v.kernels !== undefined ? { kernels: v.kernels } : {}),
      ...(v['findings-out'] !== undefined ? { findingsOut: v['findings-out'] } : {}),
      ...(v.known !== undefined ? { known: v.known } : {}),
      ...(orcLayout !== undefined ? { orcLayout } : {}),
      ...(list ? { strategies: list } : {}),
      ...(maxBytes !== undefined ? { maxBytes } : {}),
      ...(maxFailures !== undefined ? { maxFailures } : {}),
    },
    io,
  );
}

function demo(io: Io): number {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const kallsyms = join(root, 'examples', 'demo.kallsyms');
  const dump = join(root, 'examples', 'demo.dump');
  io.out(`stacksanity demo: checking ${dump}
against the kernel symbols in ${kallsyms}.
The samples come from a small hand-built x86-64 kernel image: calls in function bodies and
prologues, a page fault, an IRQ on the IRQ stack interrupting a syscall, an NMI inside that IRQ, a
kthread, and a few corrupted stacks. Every sample carries its true call chain, so each strategy's
unwind is judged against the truth. Run the same yourself:
  npx stacksanity check --kallsyms examples/demo.kallsyms examples/demo.dump

`);
  const code = runCheck({ files: [dump], kallsyms, format: 'text', maxFailures: 6 }, io);
  io.out(`
(exit status of the check: ${code} — 0 all consistent, 1 failures found, 2 unusable input.
 The failures above are the ones the demo's corrupted samples were built to show.)
`);
  return code === EXIT_UNUSABLE ? code : 0;
}
