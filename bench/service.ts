// Shared by the benchmarks that drive the whole service from outside (bench:soak, fuzz,
// bench:api-memory): `stacksanity serve` as a child process, its processes' memory from /proc,
// the samples the workers counted, and the removal of a run's Redis keys.
import { execFileSync } from 'node:child_process';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort } from '../services/pipeline/redis-server.ts';
import type { Keys } from '../services/pipeline/keys.ts';
import type { TraceStore } from '../services/pipeline/trace-store.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MB`;

/** A process's resident set from /proc (0 once it is gone). */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat (clock ticks of
 * 10 ms); with reapedChildren, plus its reaped children's (Redis forks to rewrite its append-only
 * file, and that child's CPU is Redis's work on the same cores).
 */
export function cpuSecondsOf(pid: number, reapedChildren = false): number {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + (reapedChildren ? Number(f[13]) + Number(f[14]) : 0)) / 100;
  } catch {
    return 0;
  }
}

/**
 * Child pids from /proc (the kernel's children list), falling back to ps. Read, not spawned, on
 * every tick: a `ps` per tick cost a bench client more CPU than its HTTP uploads.
 */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').map(Number).filter((n) => n > 0);
  } catch {
    try {
      return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)]).toString().split('\n').map((x) => Number(x.trim())).filter((n) => n > 0);
    } catch {
      return [];
    }
  }
}

/** The checker worker processes `serve` forked (feeder excluded). */
export function workerPids(servePid: number): number[] {
  return childrenOf(servePid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('workers/checker.ts');
    } catch {
      return false;
    }
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface ServeOptions {
  workers: number;
  redisUrl: string;
  prefix: string;
  /** The upload token, named `name` in STACKSANITY_TOKENS. */
  token: string;
  name: string;
  /** More environment for serve (it is added to this process's). */
  env?: Record<string, string>;
  log: (line: string) => void;
}

export interface ServeHandle {
  child: ChildProcess;
  pid: number;
  base: string;
  /** Workers serve restarted because they died. */
  restarts(): number;
  /** Error-level log lines of the API (pino level ≥ 50), the first few kept. */
  errors(): { count: number; first: string[] };
  stop(): Promise<void>;
}

/**
 * `stacksanity serve --no-feeder --workers N` on a free loopback port; resolves once the banner is
 * out and every worker process is up. stop() is SIGTERM (serve drains), SIGKILL after 30 s.
 */
export async function startServe(o: ServeOptions): Promise<ServeHandle> {
  const port = await freePort();
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'stacksanity.js'), 'serve', '--no-feeder', '--workers', String(o.workers)], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', REDIS_URL: o.redisUrl, STACKSANITY_PREFIX: o.prefix, STACKSANITY_TOKENS: `${o.name}:${o.token}`, STACKSANITY_RATE_LIMIT: '1000000', LOG_LEVEL: 'warn', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let banner = '';
  let started = false;
  let restarts = 0;
  const errors = { count: 0, first: [] as string[] };
  let partial = '';
  child.stdout!.on('data', (d: Buffer) => {
    if (!started) {
      banner += d.toString();
      return;
    }
    // After the banner, stdout is the API's pino log: keep only what says something broke.
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!.slice(-65536);
    for (const l of lines) {
      const level = /"level":(\d+)/.exec(l);
      if (level && Number(level[1]) >= 50) {
        errors.count++;
        if (errors.first.length < 5) errors.first.push(l.slice(0, 2000));
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    const s = d.toString();
    restarts += (s.match(/restarting in 1 s/g) ?? []).length;
    for (const l of s.split('\n')) if (l && !/restarting in 1 s/.test(l)) o.log(`  serve: ${l}`);
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  // On a shared machine under heavy load (load average 25 on 2 cores) serve took over 30 s to start.
  const startMs = Number(process.env.BENCH_START_TIMEOUT_MS ?? 120_000);
  try {
    for (const t = Date.now(); !banner.includes('Ctrl-C');) {
      if (child.exitCode !== null || Date.now() - t > startMs) throw new Error(`serve did not start within ${startMs} ms: ${banner}`);
      await sleep(100);
    }
    started = true;
    for (const t = Date.now(); workerPids(child.pid!).length < o.workers;) {
      if (Date.now() - t > startMs) throw new Error('the workers did not start');
      await sleep(100);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, pid: child.pid!, base: `http://127.0.0.1:${port}`, restarts: () => restarts, errors: () => errors, stop };
}

/** Samples the workers counted: every sample lands in its host's summary (checked, callchain-only or unprofiled). */
export async function checkedSamples(redis: Redis, keys: Keys, store: TraceStore): Promise<number> {
  let checked = 0;
  for (const h of await redis.zrange(keys.hosts, 0, -1)) {
    const s = await store.summary('host', h);
    checked += Number(s.samples ?? 0) + Number(s.callchain_only ?? 0) + Number(s.unprofiled ?? 0);
  }
  return checked;
}

/** Deletes every key of the prefix (SCAN, never KEYS: the shared Redis may be busy). */
export async function deletePrefix(redisUrl: string, prefix: string): Promise<void> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [nextCursor, keys] = await r.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1000);
      cursor = nextCursor;
      if (keys.length) await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
