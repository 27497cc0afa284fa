// npm run bench:api-memory — what the API keeps after a burst of large and hostile uploads.
// The API runs alone in a child process (`--expose-gc`, as `stacksanity api` runs it) on the real
// Redis at 127.0.0.1:6379 under a unique key prefix (deleted afterwards). The parent warms it up
// with small uploads, then sends a burst: large valid gzip batches, bodies over the size limit,
// malformed bodies, gzip bombs and truncated gzip; it samples the child's memory during the burst
// and reads it again right after and after an idle pause. Each reading: RSS (anonymous and file
// pages, from /proc), V8 heap used/total, external and ArrayBuffer bytes, after two gc() calls.
//
// It runs twice, each time with a fresh API process: with glibc's malloc defaults (the baseline)
// and with the malloc setting the project ships (SHIPPED below), or BENCH_CHILD_ENV instead.
//
// Env: BENCH_ROUNDS (burst rounds, default 3), BENCH_LARGE_MB (decoded size of each valid batch,
// default 24), BENCH_IDLE (seconds of idle before the last reading, default 10), BENCH_SNAPSHOT=1
// (heap snapshots before and after the burst, in the working directory), BENCH_CHILD_ENV
// (environment for the second API process, "NAME=value,NAME=value": e.g. MALLOC_ARENA_MAX=2).
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { deletePrefix } from './service.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// The driver makes the token; the API process reads it from its environment.
const TOKEN = process.env.BENCH_API_TOKEN ?? `bench-memory-token-${randomBytes(8).toString('hex')}`;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

interface Reading {
  rss: number;
  rssAnon: number;
  rssFile: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** V8's malloced memory (outside the JS heap) and its peak. */
  malloced: number;
  peakMalloced: number;
}

type Msg = { t: 'ready'; url: string } | { t: 'reading'; r: Reading } | { t: 'snapshot'; file: string };

// ---- the API process ---------------------------------------------------------------------------

async function child(): Promise<void> {
  const { startApi } = await import('../services/api/server.ts');
  const { TokenSet } = await import('../services/api/tokens.ts');
  const { loadConfig } = await import('../services/pipeline/config.ts');
  const tokens = new TokenSet();
  tokens.add('bench', TOKEN);
  // A high rate limit: the burst is one client.
  const api = await startApi(loadConfig({ ...process.env, PORT: '0', STACKSANITY_RATE_LIMIT: '100000' }), tokens);
  const send = (m: Msg): void => void process.send!(m);
  process.on('message', (m: { t: string; tag?: string }) => {
    if (m.t === 'read') send({ t: 'reading', r: readMemory(m.tag === 'gc') });
    else if (m.t === 'snapshot') send({ t: 'snapshot', file: writeHeapSnapshot(`api-memory-${process.pid}-${m.tag}.heapsnapshot`) });
    else if (m.t === 'stop') void api.close().then(() => process.exit(0));
  });
  // The driver gone (crashed, interrupted): no orphan API.
  process.on('disconnect', () => process.exit(1));
  send({ t: 'ready', url: api.url });
}

function readMemory(collect: boolean): Reading {
  const g = (globalThis as { gc?: () => void }).gc;
  if (collect && g) { g(); g(); }
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return {
    rss: m.rss, rssAnon: kb('RssAnon'), rssFile: kb('RssFile'), heapUsed: m.heapUsed, heapTotal: m.heapTotal,
    external: m.external, arrayBuffers: m.arrayBuffers, malloced: h.malloced_memory, peakMalloced: h.peak_malloced_memory,
  };
}

// ---- the driver --------------------------------------------------------------------------------

const MB = 1024 * 1024;
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const mb = (n: number): string => (n / MB).toFixed(1);

const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const largeMb = Number(process.env.BENCH_LARGE_MB ?? 24);
const idle = Number(process.env.BENCH_IDLE ?? 10);
const snapshots = process.env.BENCH_SNAPSHOT === '1';

interface Run { label: string; before: Reading; peak: Reading; after: Reading; idle: Reading; burstMs: number; statuses: Map<string, Map<number, number>>; gzipMb: number }

/** One API process through warm-up, burst and idle. `env` replaces the malloc settings of this process's environment. */
async function runOnce(label: string, env: Record<string, string>): Promise<Run> {
  const prefix = `{ss-bench-mem-${randomBytes(4).toString('hex')}}`;
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MALLOC_')));
  const c = fork(fileURLToPath(import.meta.url), ['--child'], {
    execArgv: ['--expose-gc', '--import', 'tsx'],
    env: { ...inherited, ...env, STACKSANITY_PREFIX: prefix, REDIS_URL, LOG_LEVEL: 'error', BENCH_API_TOKEN: TOKEN },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting: ((m: Msg) => void)[] = [];
  c.on('message', (m: Msg) => waiting.shift()?.(m));
  const next = (): Promise<Msg> => new Promise((r) => waiting.push(r));
  const ask = async (t: string, tag?: string): Promise<Msg> => { const p = next(); c.send({ t, tag }); return p; };
  const read = async (collect = true): Promise<Reading> => ((await ask('read', collect ? 'gc' : 'nogc')) as { r: Reading }).r;
  const ready = (await next()) as { url: string };
  const base = ready.url;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const post = async (path: string, body: Buffer, type: string): Promise<number> => {
    try {
      const r = await fetch(base + path, { method: 'POST', headers: { ...auth, 'content-type': type }, body, signal: AbortSignal.timeout(120_000) });
      await r.arrayBuffer();
      return r.status;
    } catch (e) {
      if (process.env.BENCH_DEBUG) log(`${path}: ${(e as Error).message} ${String((e as { cause?: unknown }).cause)}`);
      return 0; // the API closed the connection (a body over the limit): also an answer
    }
  };

  const kallsyms = readFileSync(join(ROOT, 'examples', 'demo.kallsyms'));
  const dump = readFileSync(join(ROOT, 'examples', 'demo.dump'), 'utf8');
  const sym = await post('/v1/kernels/demo-encoded-fp/symbols', kallsyms, 'text/plain');
  if (sym !== 201) throw new Error(`symbols upload to ${base} answered ${sym}`);
  const samplesOf = (tag: string, bytes: number): Buffer => {
    const reps = Math.max(1, Math.round(bytes / dump.length));
    const parts: string[] = [];
    for (let i = 0; i < reps; i++) parts.push(dump.replace(/\.host demo-host/g, `.host ${tag}-${i % 50}`));
    return Buffer.from(parts.join('\n'));
  };

  // Warm-up: the code paths the burst takes, with small bodies, so JIT and lazily loaded modules
  // are in the pre-burst figure.
  for (let i = 0; i < 20; i++) {
    await post('/v1/samples', gzipSync(samplesOf(`warm-${i}`, 40_000)), 'application/gzip');
    await post('/v1/samples', Buffer.from(`garbage ${i}\n`), 'text/plain');
  }
  await new Promise((r) => setTimeout(r, 1000));
  if (snapshots) console.error(`heap snapshot: ${((await ask('snapshot', 'before')) as { file: string }).file}`);
  const before = await read();

  log(`${label}: before the burst RSS ${mb(before.rss)} MB, heap ${mb(before.heapUsed)} MB`);
  // The burst's bodies, made once.
  const large = Array.from({ length: 4 }, (_, i) => gzipSync(samplesOf(`large-${i}`, largeMb * MB), { level: 1 }));
  const oversized = randomBytes(33 * MB); // over STACKSANITY_MAX_BODY (32 MiB)
  const malformed = Buffer.from(`${'cat 1/1 [000] 1.0: nmi:\n\t.regs ip=zz bp=?? \n'.repeat(150_000)}`);
  const bomb = gzipSync(Buffer.alloc(1024 * MB), { level: 9 }); // inflates past STACKSANITY_MAX_DECODED
  const truncated = large[0]!.subarray(0, large[0]!.length >> 1);
  const statuses = new Map<string, Map<number, number>>();
  const note = (what: string, s: number): void => {
    const m = statuses.get(what) ?? new Map<number, number>();
    m.set(s, (m.get(s) ?? 0) + 1);
    statuses.set(what, m);
  };

  let peak: Reading | undefined;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const r = await read(false);
      if (!peak || r.rss > peak.rss) peak = r;
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  const t0 = Date.now();
  for (let round = 0; round < rounds; round++) {
    // Four at a time, as several clients would: each kind of body in flight together.
    const jobs: [string, () => Promise<number>][] = [];
    large.forEach((_b, i) => jobs.push(['large valid gzip', () => post('/v1/samples', gzipSync(samplesOf(`large-${round}-${i}`, largeMb * MB), { level: 1 }), 'application/gzip')]));
    for (let i = 0; i < 2; i++) jobs.push(['oversized', () => post('/v1/samples', oversized, 'application/octet-stream')]);
    for (let i = 0; i < 4; i++) jobs.push(['malformed', () => post('/v1/samples', malformed, 'text/plain')]);
    for (let i = 0; i < 4; i++) jobs.push(['gzip bomb', () => post('/v1/samples', bomb, 'application/gzip')]);
    for (let i = 0; i < 2; i++) jobs.push(['truncated gzip', () => post('/v1/samples', truncated, 'application/gzip')]);
    log(`round ${round + 1}/${rounds} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    for (let i = 0; i < jobs.length; i += 4) {
      await Promise.all(jobs.slice(i, i + 4).map(async ([what, f]) => note(what, await f())));
    }
  }
  const burstMs = Date.now() - t0;
  sampling = false;
  await sampler;
  const after = await read();
  await new Promise((r) => setTimeout(r, idle * 1000));
  const idleR = await read();
  if (snapshots) console.error(`heap snapshot: ${((await ask('snapshot', 'after')) as { file: string }).file}`);
  c.send({ t: 'stop' });
  await new Promise((r) => c.once('exit', r));
  await deletePrefix(REDIS_URL, prefix);

  return { label, before, peak: peak ?? after, after, idle: idleR, burstMs, statuses, gzipMb: large[0]!.length / MB };
}

/** The setting the Dockerfile and `npm start` ship (docs/operations-service.md, "API memory"). */
const SHIPPED = { MALLOC_MMAP_THRESHOLD_: '131072' };

async function main(): Promise<void> {
  const custom = Object.fromEntries((process.env.BENCH_CHILD_ENV ?? '').split(',').filter(Boolean).map((kv) => kv.split('=', 2) as [string, string]));
  const runs = [
    await runOnce('glibc defaults (baseline)', {}),
    await runOnce(process.env.BENCH_CHILD_ENV ? `with ${process.env.BENCH_CHILD_ENV}` : 'as shipped (MALLOC_MMAP_THRESHOLD_=131072)', process.env.BENCH_CHILD_ENV ? custom : SHIPPED),
  ];
  const cpu = cpus()[0]?.model ?? '?';
  console.log(`bench:api-memory — ${new Date().toISOString()}  machine: ${cpus().length} cores, ${cpu}, Node ${process.version}`);
  console.log(`burst: ${rounds} rounds of 4 large valid gzip batches (${largeMb} MB decoded, ${runs[0]!.gzipMb.toFixed(1)} MB gzip), 2 bodies over the 32 MiB limit, 4 malformed text bodies (6.7 MB, 150,000 bad samples), 4 gzip bombs (1 GiB of zeros), 2 truncated gzip; 4 requests in flight; readings after gc() unless marked`);
  for (const r of runs) {
    console.log(`\n${r.label}: burst ${(r.burstMs / 1000).toFixed(1)} s; answers: ${[...r.statuses].map(([what, m]) => `${what} ${[...m].map(([st, n]) => `${n}× ${st || 'closed'}`).join('/')}`).join(', ')}`);
    console.log('| reading (MB) | RSS | RssAnon | RssFile | heap used | heap total | external | ArrayBuffers | V8 malloced |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    console.log(row('before the burst', r.before));
    console.log(row('peak RSS during the burst (no gc)', r.peak));
    console.log(row('right after the burst', r.after));
    console.log(row(`after ${idle} s idle`, r.idle));
    console.log(`RSS after idle / before: ${(r.idle.rss / r.before.rss).toFixed(2)} (target ≤ 1.20); RSS above heap total + external after idle: ${mb(r.idle.rss - r.idle.heapTotal - r.idle.external)} MB (before: ${mb(r.before.rss - r.before.heapTotal - r.before.external)} MB)`);
  }
}

function row(name: string, r: Reading): string {
  return `| ${name} | ${mb(r.rss)} | ${mb(r.rssAnon)} | ${mb(r.rssFile)} | ${mb(r.heapUsed)} | ${mb(r.heapTotal)} | ${mb(r.external)} | ${mb(r.arrayBuffers)} | ${mb(r.malloced)} |`;
}

if (process.argv.includes('--child')) await child();
else await main();
