// `stacksanity capture`: the real-host agent's command line (services/realhost/capture.ts).
import { parseArgs } from 'node:util';
import { DumpError } from '../core/dump/errors.ts';
import { capture, CaptureError, type CaptureOptions } from '../realhost/capture.ts';
import type { Io } from './check.ts';

export const CAPTURE_USAGE = `usage: stacksanity capture (--url URL --token TOKEN | --dry-run --out FILE) [source] [options]
  source (default: record this host with perf record -a -g -F 99 for --duration seconds):
    --duration S        seconds to record (default 10)      --frequency HZ   (default 99)
    --perf-data FILE    read an existing perf.data          --perf-script FILE   perf script output
    --kernel-log FILE   a dmesg / console log with Call Traces
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
    const n = Number(s);
    if (!Number.isFinite(n) || n < min) throw new CaptureError(`${flag} must be a number >= ${min}, not '${s}'`);
    return n;
  };
  const sources = [v['perf-data'], v['perf-script'], v['kernel-log']].filter((x) => x !== undefined);
  try {
    if (sources.length > 1) throw new CaptureError('give at most one of --perf-data, --perf-script, --kernel-log');
    const o: CaptureOptions = { log: (s) => io.err(`stacksanity capture: ${s}\n`) };
    if (v.url !== undefined) o.url = v.url;
    // The token may come from the environment so that it stays out of `ps` output.
    const token = v.token ?? process.env.STACKSANITY_TOKEN;
    if (token) o.token = token;
    if (v['dry-run']) o.dryRun = true;
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
    const f = num(v.frequency, '--frequency', 1);
    if (f !== undefined) o.frequency = f;
    const b = num(v.batch, '--batch', 1);
    if (b !== undefined) o.batchSize = Math.floor(b);
    const r = num(v.retries, '--retries', 0);
    if (r !== undefined) o.retries = Math.floor(r);
    const res = await capture(o);
    io.out(`${JSON.stringify(res)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof CaptureError || e instanceof DumpError) {
      io.err(`stacksanity capture: ${e instanceof DumpError ? e.describe() : e.message}\n`);
      return 2;
    }
    throw e;
  }
}
