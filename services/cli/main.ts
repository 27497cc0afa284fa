// The stacksanity command line.
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';
import { runCheck, EXIT_UNUSABLE, type Io } from './check.ts';
import { strategies } from '../core/unwind/index.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { orcLayoutFromName, ORC_LAYOUT_CHOICES, type OrcLayout } from '../core/unwind/orc-table.ts';

const CHECK_USAGE = `usage: stacksanity check [--kallsyms FILE] [--profile FILE | --kernels DIR] [--vmlinux FILE [--orc-layout L]]
                         [--strategy LIST] [--format text|json|ndjson] [--findings-out FILE] [--known FILE] FILE...
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
`;

const DEMO_USAGE = `usage: stacksanity demo
  Check the shipped example (examples/demo.dump against examples/demo.kallsyms) and explain what
  the output means. Takes no options.
`;

const EMULATE_USAGE = `usage: stacksanity emulate [--seed S] [--samples N] [--hosts H] [--layout L] [--faults LIST] [--fault-rate P]
                         (--out FILE | --upload URL --token T [--rate R] [--batch N])
  Run the emulated fleet (hand-built x86-64 kernels; every sample carries its true call chain)
  and write its samples as a text dump, or upload them to a running service.
  --seed S        generator seed (default 1): the same seed gives the same samples
  --samples N     how many samples (default 1000)
  --hosts H       emulated hosts (default 4)
  --layout L      entry layout of the kernels: kernel_entry, section, encoded_fp or all (default)
  --faults LIST   comma-separated stack faults to inject (e.g. corrupt_bp,clobber_ret,stale_frames)
  --fault-rate P  share of samples given a fault, 0..1
  --out FILE      write the dump to FILE, and each kernel's kallsyms and profile to kernels/ beside
                  it (stdout when neither --out nor --upload is given); then check it with
                  stacksanity check --kernels DIR FILE
  --upload URL    upload kernels and samples to the service at URL (needs --token)
  --rate R        samples per second when uploading (default 0: as fast as it takes them)
  --batch N       samples per upload request (default 500)
`;

const SWEEP_USAGE = `usage: stacksanity sweep [--layout kernel_entry|section|encoded_fp|all] [--scenario NAME] [--json FILE]
  Single-step the emulator's entry-code scenarios on a clean kernel of each layout, check every
  instruction boundary with every strategy, and print the per-strategy blind-spot table.
  --layout L       which kernel layout(s) to sweep (default all)
  --scenario NAME  one scenario only
  --json FILE      also write the table as JSON
`;

const SERVE_USAGE = `usage: stacksanity serve [--no-feeder] [--workers N]
  The one-machine service (what npm start runs): the HTTP API, checker workers as child processes
  (one per core) and an emulated host feeding samples. Redis: REDIS_URL, else 127.0.0.1:6379,
  else a private redis-server started from PATH. Ctrl-C or SIGTERM stops everything it started.
  --no-feeder   no emulated host
  --workers N   checker worker processes (default: one per core; env STACKSANITY_WORKERS)
  Env: PORT (3000), HOST (127.0.0.1), REDIS_URL, STACKSANITY_TOKENS(_FILE), STACKSANITY_ADMIN_TOKENS(_FILE)
  and the rest in docs/operations-service.md.
`;

const API_USAGE = `usage: stacksanity api
  The HTTP API alone (a fleet runs several replicas). Takes no options; configured by the
  environment: REDIS_URL, HOST, PORT, STACKSANITY_TOKENS(_FILE), ... (docs/operations-service.md).
`;

const WORKER_USAGE = `usage: stacksanity worker
  One checker worker process. Takes no options; configured by the environment: REDIS_URL,
  METRICS_PORT, STACKSANITY_CONCURRENCY, ... (docs/operations-service.md).
`;

/**
 * A subcommand: a line for the command list, its full usage (printed by `<command> --help` and
 * after a bad flag), and its entry point (returns the exit code). Modules that own a usage text
 * export it and it is read from there, so that it stays next to the flags it describes.
 */
export interface Command {
  usage: string;
  help: () => string | Promise<string>;
  /** The command takes no arguments at all (its configuration is the environment). */
  noArgs?: boolean;
  run: (args: string[], io: Io) => number | Promise<number>;
}

/**
 * The subcommands. Each lives in its own module; adding one is one entry here.
 */
export const COMMANDS: Record<string, Command> = {
  check: { usage: 'check    unwind and judge dumps', help: () => CHECK_USAGE, run: (a, io) => check(a, io) },
  demo: { usage: 'demo     check the shipped example and explain the output', help: () => DEMO_USAGE, noArgs: true, run: (_a, io) => demo(io) },
  host: { usage: 'host     qemu ...  sample (or --sweep) Debian\'s kernel or your own under QEMU', help: async () => `${(await import('./host.ts')).USAGE}${(await import('./host-sweep.ts')).SWEEP_USAGE}`, run: async (a, io) => (await import('./host.ts')).runHost(a, io) },
  experiment: { usage: 'experiment  the three entry designs on a real kernel: build, sample, sweep, report', help: async () => (await import('./experiment.ts')).EXPERIMENT_USAGE, run: async (a, io) => (await import('./experiment.ts')).runExperimentCommand(a, io) },
  sweep: { usage: 'sweep    single-step entry code, blind-spot table', help: () => SWEEP_USAGE, run: async (a, io) => (await import('./sweep.ts')).runSweep(a, io) },
  emulate: { usage: 'emulate  emulated fleet: a dump (--out) or uploads (--upload)', help: () => EMULATE_USAGE, run: async (a, io) => (await import('./emulate.ts')).runEmulate(a, io) },
  // The service commands load fastify/BullMQ lazily so that `check` stays light.
  serve: { usage: 'serve    API + checker workers + emulated host on one machine (npm start)', help: () => SERVE_USAGE, run: async (a, io) => (await import('./serve.ts')).serve(a, io) },
  api: { usage: 'api      the HTTP API alone (env: REDIS_URL, HOST, PORT, STACKSANITY_TOKENS...)', help: () => API_USAGE, noArgs: true, run: async (a, io) => (await import('./serve.ts')).apiCommand(a, io) },
  worker: { usage: 'worker   one checker worker process (env: REDIS_URL, METRICS_PORT...)', help: () => WORKER_USAGE, noArgs: true, run: async (a, io) => (await import('./serve.ts')).workerCommand(a, io) },
  replay: { usage: 'replay   batches parked in the dead-letter list: why, and queue them again', help: async () => (await import('./replay.ts')).USAGE, run: async (a, io) => (await import('./replay.ts')).runReplay(a, io) },
  capture: { usage: 'capture  real-host agent: record or read perf data and upload it', help: async () => (await import('./capture.ts')).CAPTURE_USAGE, run: async (a, io) => (await import('./capture.ts')).runCapture(a, io) },
  collapse: { usage: 'collapse perf script → folded stacks (FlameGraph byte for byte)', help: async () => (await import('./collapse.ts')).COLLAPSE_USAGE, run: async (a, io) => (await import('./collapse.ts')).runCollapse(a, io) },
};

/** node:util parseArgs's messages for a flag it does not know or an argument in the wrong place. */
const FLAG_ERROR = /Unknown option '|' argument missing|Unexpected argument '|does not take an argument/;

export async function main(argv: string[], io: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) }): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    // `help <command>` is `<command> --help`.
    const c = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined;
    if (cmd === 'help' && c) {
      io.out(await c.help());
      return 0;
    }
    io.out(usage());
    return cmd === undefined ? EXIT_UNUSABLE : 0;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    io.out(`stacksanity ${version()}\n`);
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    io.err(`stacksanity: unknown ${cmd.startsWith('-') ? 'option' : 'command'} '${cmd}'\n${usage()}`);
    return EXIT_UNUSABLE;
  }
  // --help anywhere before a '--' (after which everything is a file name), on every command and
  // subcommand (`host qemu --help`): the usage, on stdout, exit 0; the command does not run.
  const end = rest.indexOf('--');
  const flags = end < 0 ? rest : rest.slice(0, end);
  if (flags.includes('--help') || flags.includes('-h')) {
    io.out(await c.help());
    return 0;
  }
  if (c.noArgs && rest.length > 0) {
    io.err(`stacksanity ${cmd}: ${rest[0]!.startsWith('-') ? `Unknown option '${rest[0]}'` : `Unexpected argument '${rest[0]}'`}: it takes no options\n${await c.help()}`);
    return EXIT_UNUSABLE;
  }
  // A bad flag: the command names it (parseArgs's message); the usage follows here, once, for
  // every command alike.
  let said = '';
  const code = await c.run(rest, { out: io.out, err: (s) => { said += s; io.err(s); } });
  if (code === EXIT_UNUSABLE && FLAG_ERROR.test(said) && !said.includes('usage: stacksanity')) {
    io.err(`${said.endsWith('\n') ? '' : '\n'}${await c.help()}`);
  }
  return code;
}

function usage(): string {
  const list = Object.values(COMMANDS).map((c) => `  ${c.usage}\n`).join('');
  return `usage: stacksanity <command> [options]

commands:
${list}
'stacksanity <command> --help' shows a command's options; 'stacksanity --version' the version.
Try: stacksanity demo
`;
}

/** The package's version (package.json at the root of the checkout or the installed package). */
export function version(): string {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  try {
    return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
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
