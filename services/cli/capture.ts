// `stacksanity capture`: the real-host agent's command line (services/realhost/capture.ts).
import { parseArgs } from 'node:util';
import { DumpError } from '../core/dump/errors.ts';
import { capture, CaptureError, type CaptureOptions } from '../realhost/capture.ts';
import type { Io } from './check.ts';
import { BpfUnavailable } from '../realhost/bpf-capture.ts';
import { LiveKernelError } from '../realhost/bpf-kernel.ts';
import { orcLayoutFromName, ORC_LAYOUT_CHOICES } from '../core/unwind/orc-table.ts';

export const CAPTURE_USAGE = `usage: stacksanity capture (--url URL --token TOKEN | --dry-run --out FILE | --bpf --out FILE) [source] [options]
  source (default: record this host with perf record -a -g -F 99 for --duration seconds):
    --duration S        seconds to record, e.g. 30 or 30s (default 10)
    --frequency HZ      samples per second per CPU (default 99; --rate is the same)
    --perf-data FILE    read an existing perf.data          --perf-script FILE   perf script output
    --kernel-log FILE   a dmesg / console log with Call Traces
    --bpf               full-state samples through BPF (root, a kernel with BTF): registers, raw stack
                        memory and the kernel's own trace per sample, all CPUs at --frequency for
                        --duration; the kernel profile (kallsyms, ORC tables read from live memory)
                        goes with them (--out FILE alone then writes FILE and FILE.kernels/)
      --full-memory     keep all stack memory (default: only kernel text and stack addresses and
                        pt_regs' ip/cs/flags/sp/ss/bp; the rest is zeroed and counted)
      --kernels-out DIR where the kernel profile goes with --out (default FILE.kernels)
      --orc-layout L    the ORC entry layout when the release does not tell it (type2, type3, or a release)
      --install-tools   install clang, libbpf-dev, bpftool, gcc with apt if the sampler must be built
  options:
    --kallsyms FILE     symbols to upload (default /proc/kallsyms), once per build id
    --build-id ID       kernel build id (default: /sys/kernel/notes)
    --host NAME         host name on the samples (default: hostname)
    --batch N           samples per upload (default 500)
    --retries N         retries on 503/429/network errors, with exponential backoff (default 6)
    --state DIR         remembers which build ids' symbols were uploaded (default ~/.cache/stacksanity)
  The token may also come from STACKSANITY_TOKEN.
`;

export async function runCapture(args: string[], io: Io): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        url: { type: 'string' }, token: { type: 'string' }, 'dry-run': { type: 'boolean' }, out: { type: 'string' },
        duration: { type: 'string' }, frequency: { type: 'string' }, 'perf-data': { type: 'string' }, 'perf-script': { type: 'string' },
        'kernel-log': { type: 'string' }, kallsyms: { type: 'string' }, 'build-id': { type: 'string' }, host: { type: 'string' },
        batch: { type: 'string' }, retries: { type: 'string' }, state: { type: 'string' }, help: { type: 'boolean', short: 'h' },
        bpf: { type: 'boolean' }, 'full-memory': { type: 'boolean' }, 'kernels-out': { type: 'string' }, 'orc-layout': { type: 'string' },
        'install-tools': { type: 'boolean' }, rate: { type: 'string' },
      },
    });
  } catch (e) {
    io.err(`stacksanity capture: ${(e as Error).message}\n${CAPTURE_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    io.out(CAPTURE_USAGE);
    return 0;
  }
  const num = (s: string | undefined, flag: string, min: number): number | undefined => {
    if (s === undefined) return undefined;
    const n = Number(flag === '--duration' ? s.replace(/s$/, '') : s);
    if (!Number.isFinite(n) || n < min) throw new CaptureError(`${flag} must be a number >= ${min}, not '${s}'`);
    return n;
  };
  const sources = [v['perf-data'], v['perf-script'], v['kernel-log']].filter((x) => x !== undefined);
  try {
    if (sources.length + (v.bpf ? 1 : 0) > 1) throw new CaptureError('give at most one of --bpf, --perf-data, --perf-script, --kernel-log');
    if (!v.bpf && (v['full-memory'] || v['kernels-out'] !== undefined || v['orc-layout'] !== undefined || v['install-tools'])) {
      throw new CaptureError('--full-memory, --kernels-out, --orc-layout and --install-tools go with --bpf');
    }
    const o: CaptureOptions = { log: (s) => io.err(`stacksanity capture: ${s}\n`) };
    if (v.url !== undefined) o.url = v.url;
    // The token may come from the environment so that it stays out of `ps` output.
    const token = v.token ?? process.env.STACKSANITY_TOKEN;
    if (token) o.token = token;
    if (v['dry-run']) o.dryRun = true;
    if (v.bpf) {
      o.bpf = true;
      // A BPF capture to a file needs no service: --out alone means a dry run.
      if (v.out !== undefined && v.url === undefined) o.dryRun = true;
      if (v['full-memory']) o.fullMemory = true;
      if (v['kernels-out'] !== undefined) o.kernelsOut = v['kernels-out'];
      if (v['install-tools']) o.installTools = true;
      if (v['orc-layout'] !== undefined) {
        const l = orcLayoutFromName(v['orc-layout']);
        if (!l) throw new CaptureError(`--orc-layout: '${v['orc-layout']}' is not ${ORC_LAYOUT_CHOICES}`);
        o.orcLayout = l;
      }
    }
    if (v.out !== undefined) o.out = v.out;
    if (v['perf-data'] !== undefined) o.perfData = v['perf-data'];
    if (v['perf-script'] !== undefined) o.perfScript = v['perf-script'];
    if (v['kernel-log'] !== undefined) o.kernelLog = v['kernel-log'];
    if (v.kallsyms !== undefined) o.kallsyms = v.kallsyms;
    if (v['build-id'] !== undefined) o.buildId = v['build-id'];
    if (v.host !== undefined) o.host = v.host;
    if (v.state !== undefined) o.stateDir = v.state;
    const d = num(v.duration, '--duration', 1);
    if (d !== undefined) o.duration = d;
    if (v.rate !== undefined && v.frequency !== undefined) throw new CaptureError('--rate is another name for --frequency: give one');
    const f = num(v.frequency ?? v.rate, v.rate !== undefined ? '--rate' : '--frequency', 1);
    if (f !== undefined) o.frequency = f;
    const b = num(v.batch, '--batch', 1);
    if (b !== undefined) o.batchSize = Math.floor(b);
    const r = num(v.retries, '--retries', 0);
    if (r !== undefined) o.retries = Math.floor(r);
    const res = await capture(o);
    io.out(`${JSON.stringify(res)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof CaptureError || e instanceof DumpError || e instanceof BpfUnavailable || e instanceof LiveKernelError) {
      io.err(`stacksanity capture: ${e instanceof DumpError ? e.describe() : e.message}\n`);
      return 2;
    }
    throw e;
  }
}
