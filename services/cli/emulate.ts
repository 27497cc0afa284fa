// `stacksanity emulate`: run the emulated fleet and write its samples as a text dump (with the
// kernels' kallsyms and profiles beside it), or upload kernels and samples to a stacksanity service.
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatTextDump, formatTextSample } from '../core/dump/text.ts';
import type { Sample } from '../core/dump/sample.ts';
import { EmulatedFleet, type EmulatedKernel, type EmulatorOptions } from '../emulator/index.ts';
import { Progress } from './progress.ts';
import type { Io } from './check.ts';

export interface UploadOptions {
  url: string;
  token: string;
  /** Samples per second (0: as fast as the service takes them). */
  rate: number;
  batch: number;
  /** Attempts per request on 503 or network errors. */
  attempts?: number;
  /** First backoff delay in ms (doubles per attempt, capped at 5 s; Retry-After wins when given). */
  backoffMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

const realSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A request with retries: 503/429 and network errors back off and retry; other errors fail at once. */
export async function postWithRetry(url: string, body: string, contentType: string, o: UploadOptions, method: 'POST' | 'PUT' = 'POST'): Promise<Response> {
  const attempts = o.attempts ?? 8;
  const sleep = o.sleep ?? realSleep;
  let delay = o.backoffMs ?? 200;
  let last = '';
  for (let i = 0; i < attempts; i++) {
    let res: Response | undefined;
    try {
      res = await fetch(url, { method, headers: { authorization: `Bearer ${o.token}`, 'content-type': contentType }, body });
    } catch (e) {
      last = `network error: ${(e as Error).message}`;
    }
    if (res) {
      if (res.ok) return res;
      const text = await res.text().catch(() => '');
      last = `HTTP ${res.status} ${text.slice(0, 200)}`;
      if (res.status !== 503 && res.status !== 429) throw new Error(`${method} ${url} failed: ${last}`);
      const ra = Number(res.headers.get('retry-after'));
      if (Number.isFinite(ra) && ra > 0) delay = Math.min(ra * 1000, 30000);
    }
    if (i < attempts - 1) {
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  }
  throw new Error(`${method} ${url} failed after ${attempts} attempts: ${last}`);
}

/**
 * Uploads each kernel's symbols (POST) and profile options (PUT: setting them is idempotent; the
 * body is exactly the profile options — the build id is in the path), then the samples in
 * batches at the given rate.
 */
export async function upload(kernels: EmulatedKernel[], batches: AsyncIterable<Sample[]> | Iterable<Sample[]>, o: UploadOptions, onBatch?: (n: number) => void): Promise<{ samples: number; requests: number }> {
  const base = o.url.replace(/\/+$/, '');
  let requests = 0;
  for (const k of kernels) {
    await postWithRetry(`${base}/v1/kernels/${k.buildId}/symbols`, k.kallsyms, 'text/plain', o);
    await postWithRetry(`${base}/v1/kernels/${k.buildId}/profile`, JSON.stringify(k.profile), 'application/json', o, 'PUT');
    requests += 2;
  }
  const sleep = o.sleep ?? realSleep;
  const t0 = Date.now();
  let samples = 0;
  for await (const b of batches) {
    await postWithRetry(`${base}/v1/samples`, formatTextDump(b), 'text/plain', o);
    requests++;
    samples += b.length;
    onBatch?.(samples);
    if (o.rate > 0) {
      // Pace to the rate: the n-th sample is due at n / rate seconds after the start.
      const due = t0 + (samples / o.rate) * 1000;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
    }
  }
  return { samples, requests };
}

export async function runEmulate(args: string[], io: Io): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args,
      options: {
        seed: { type: 'string', default: '1' }, samples: { type: 'string', default: '1000' }, hosts: { type: 'string', default: '4' },
        layout: { type: 'string', default: 'all' }, faults: { type: 'string' }, 'fault-rate': { type: 'string' },
        out: { type: 'string' }, upload: { type: 'string' }, token: { type: 'string' }, rate: { type: 'string', default: '0' },
        batch: { type: 'string', default: '500' },
      },
    }).values;
  } catch (e) {
    io.err(`stacksanity emulate: ${(e as Error).message}\n`);
    return 2;
  }
  const int = (s: string, flag: string, min = 0): number | undefined => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) {
      io.err(`stacksanity emulate: ${flag} must be an integer >= ${min}, not '${s}'\n`);
      return undefined;
    }
    return n;
  };
  const seed = int(v.seed, '--seed');
  const samples = int(v.samples, '--samples', 1);
  const hosts = int(v.hosts, '--hosts', 1);
  const rate = Number(v.rate);
  const batch = int(v.batch, '--batch', 1);
  if (seed === undefined || samples === undefined || hosts === undefined || batch === undefined) return 2;
  if (!Number.isFinite(rate) || rate < 0) {
    io.err(`stacksanity emulate: --rate must be a number of samples per second >= 0, not '${v.rate}'\n`);
    return 2;
  }
  const faults = v.faults ? v.faults.split(',').map((x) => x.trim()).filter(Boolean) : [];
  const opts: EmulatorOptions = { seed, layout: v.layout as EmulatorOptions['layout'], hosts, faults };
  if (v['fault-rate'] !== undefined) {
    const p = Number(v['fault-rate']);
    if (!(p >= 0 && p <= 1)) {
      io.err(`stacksanity emulate: --fault-rate must be in [0, 1], not '${v['fault-rate']}'\n`);
      return 2;
    }
    opts.faultRate = p;
  }
  let fleet: EmulatedFleet;
  try {
    fleet = new EmulatedFleet(opts);
  } catch (e) {
    io.err(`stacksanity emulate: ${(e as Error).message}\n`);
    return 2;
  }
  const kernels = fleet.kernels();
  const progress = new Progress(samples, 'emulate');
  if (v.upload !== undefined) {
    if (!v.token) {
      io.err('stacksanity emulate: --upload needs --token\n');
      return 2;
    }
    function* batches(): Iterable<Sample[]> {
      for (let done = 0; done < samples!; done += batch!) yield fleet.batch(Math.min(batch!, samples! - done));
    }
    try {
      const r = await upload(kernels, batches(), { url: v.upload, token: v.token, rate, batch }, (n) => progress.tick(n));
      progress.finish();
      io.out(`uploaded ${kernels.length} kernel(s) and ${r.samples} samples in ${r.requests} requests to ${v.upload}\n`);
      return 0;
    } catch (e) {
      progress.finish();
      io.err(`stacksanity emulate: ${(e as Error).message}\n`);
      return 1;
    }
  }
  // A file (or stdout): the dump, and beside a file each kernel's kallsyms and profile options.
  const write = v.out !== undefined ? openSync(v.out, 'w') : 1;
  const header = formatTextDump([]);
  writeSync(write, header);
  for (let done = 0; done < samples; ) {
    const n = Math.min(2000, samples - done);
    const b = fleet.batch(n);
    const parts: string[] = [];
    for (let i = 0; i < b.length; i++) {
      if (done + i > 0) parts.push('\n');
      parts.push(formatTextSample(b[i]!));
    }
    writeSync(write, parts.join(''));
    done += n;
    progress.tick(done);
  }
  progress.finish();
  if (v.out !== undefined) {
    closeSync(write);
    const dir = join(dirname(v.out), 'kernels');
    mkdirSync(dir, { recursive: true });
    for (const k of kernels) {
      writeFileSync(join(dir, `${k.buildId}.kallsyms`), k.kallsyms);
      writeFileSync(join(dir, `${k.buildId}.profile.json`), JSON.stringify({ buildId: k.buildId, ...k.profile }, null, 1) + '\n');
    }
    io.err(`wrote ${samples} samples to ${v.out}; kernels (kallsyms + profile) in ${dir}/\n`);
    // What to run next: each sample is unwound with its own kernel from the folder just written.
    io.err(`check them with:\n  npx stacksanity check --kernels ${shellWord(dir)} ${shellWord(v.out)}\n`);
  }
  return 0;
}

/** A path as a shell word: bare when it is plainly safe, else single-quoted. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
