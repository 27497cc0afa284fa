// npm run bench:e2e — the service end to end on this machine: emulated hosts upload gzip batches
// over HTTP to `stacksanity serve` (API + one checker worker process per core) on a private
// redis-server; we measure samples/s from upload to committed verdict, upload-to-verdict latency
// (p50/p99) under saturation and at a paced 10,000 samples/s, peak RSS per process and Redis
// memory. Baseline in the same run: BullMQ's own ceiling for no-op jobs on the same Redis.
//
// Env: BENCH_SECONDS (per phase, default 20), BENCH_WARMUP (seconds of saturated load before the
// measured phases, default 15), BENCH_BATCH (samples per upload, default 500), BENCH_INFLIGHT
// (batches uploaded but not yet checked, default 8), BENCH_RATE (paced phase, default 10000
// samples/s).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { feederSource } from '../services/pipeline/feed.ts';
import { freePort, startPrivateRedis } from '../services/pipeline/redis-server.ts';
import { Keys } from '../services/pipeline/keys.ts';
import { encodeBatch, gunzipBody, type BatchJob } from '../services/pipeline/job.ts';
import { checkBatch } from '../services/pipeline/check-batch.ts';
import { decodeBatch } from '../services/core/dump/batch-decode.ts';
import { KernelProfile, parseProfileOptions } from '../services/core/symbols/profile.ts';
import type { FeedKernel } from '../services/pipeline/feed.ts';
import { childrenOf, cpuSecondsOf, rssOf } from './service.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 15);
const BATCH = Number(process.env.BENCH_BATCH ?? 500);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 8);
const RATE = Number(process.env.BENCH_RATE ?? 10_000);
const TOKEN = `bench-${Date.now()}-token-0123456789`;
const PREFIX = '{ss-bench}';

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/**
 * The work a sample needs whatever carries it, measured in this process on the same bodies before
 * the service starts: the API's gunzip and transcode, the worker's decode and checkBatch (every
 * strategy, tallies, trace records), no HTTP, no Redis, no queue. `cpu` is this process's CPU per
 * sample over the timed rounds, GC threads included, as the service's figures are; the stages are
 * split by wall time on the main thread (CPU time cannot be read finely enough per stage).
 */
async function inherentWork(bodies: Buffer[], kernels: FeedKernel[]): Promise<{ gunzip: number; transcode: number; decode: number; check: number; cpu: number }> {
  const profiles = new Map(kernels.map((k) => [k.buildId, { profile: KernelProfile.fromKallsyms(k.kallsyms, { ...parseProfileOptions(k.profile), buildId: k.buildId }), rev: 1 }]));
  const job: BatchJob = { v: 2, format: 'text', gzip: false, uploader: 'bench', source: 'emulator', receivedAt: Date.now(), accepted: BATCH, skip: [] };
  const wall = { gunzip: 0, transcode: 0, decode: 0, check: 0 };
  let samples = 0;
  const pass = async (timed: boolean): Promise<void> => {
    for (const [i, gz] of bodies.entries()) {
      const t0 = performance.now();
      const text = gunzipBody(gz, 1 << 30);
      const t1 = performance.now();
      const enc = encodeBatch(text, 'text', 1 << 30);
      const t2 = performance.now();
      const d = decodeBatch(enc.bytes);
      const t3 = performance.now();
      await checkBatch(`inherent-${i}`, job, d.samples, d.indices, { profile: async (b) => profiles.get(b), passingRatio: 0.01 }, d.records);
      if (!timed) continue;
      wall.gunzip += t1 - t0; wall.transcode += t2 - t1; wall.decode += t3 - t2; wall.check += performance.now() - t3;
      samples += d.samples.length;
    }
  };
  await pass(false); // warms the JIT
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  while (samples === 0 || performance.now() - start < 3000) await pass(true);
  const c = process.cpuUsage(cpu0);
  const us = (ms: number): number => (ms * 1000) / samples;
  return { gunzip: us(wall.gunzip), transcode: us(wall.transcode), decode: us(wall.decode), check: us(wall.check), cpu: (c.user + c.system) / samples };
}

async function noopCeiling(url: string): Promise<{ jobsPerSec: number; jobs: number }> {
  const jobs = 20_000;
  const conn = new Redis(url, { maxRetriesPerRequest: null });
  const queue = new Queue('noop', { connection: conn, prefix: '{ss-bench-noop}', defaultJobOptions: { removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } } });
  let done = 0;
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  const worker = new Worker('noop', async () => undefined, { connection: conn, prefix: '{ss-bench-noop}', concurrency: 100 });
  worker.on('completed', () => {
    if (++done === jobs) finish();
  });
  const t0 = performance.now();
  for (let i = 0; i < jobs; i += 1000) {
    await queue.addBulk(Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ name: 'noop', data: { i: i + k } })));
  }
  await finished;
  const s = (performance.now() - t0) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  conn.disconnect();
  return { jobsPerSec: jobs / s, jobs };
}

interface Phase {
  name: string;
  uploaded: number;
  committed: number;
  seconds: number;
  latencies: number[];
  rejected: number;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-bench-'));
  const redisServer = await startPrivateRedis(join(dir, 'redis'));
  const redis = new Redis(redisServer.url);
  const keys = new Keys(PREFIX);
  let serve: ChildProcess | undefined;
  try {
    log(`private Redis at ${redisServer.url}; BullMQ no-op baseline...`);
    const baseline = await noopCeiling(redisServer.url);
    log(`  ${baseline.jobsPerSec.toFixed(0)} no-op jobs/s`);

    log('generating batches...');
    const source = await feederSource({ root: ROOT, hosts: 16, seed: 7, warn: log });
    const bodies: Buffer[] = [];
    for (let i = 0; i < 24; i++) bodies.push(gzipSync(source.batch(BATCH), { level: 1 }));
    const rawBytes = source.batch(BATCH).length;
    log(`  ${bodies.length} batches of ${BATCH} samples (${source.kind}); ${(rawBytes / 1024).toFixed(0)} KiB text, ${(bodies[0]!.length / 1024).toFixed(0)} KiB gzip each`);

    log('inherent work per sample (this process, no I/O)...');
    const inherent = await inherentWork(bodies, source.kernels);
    const inherentTotal = inherent.cpu;

    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    // BENCH_SERVE_NODE_ARGS: Node flags for the serve (API) process, e.g. --cpu-prof to profile it.
    const serveArgs = (process.env.BENCH_SERVE_NODE_ARGS ?? '').split(' ').filter(Boolean);
    serve = spawn(process.execPath, [...serveArgs, join(ROOT, 'bin', 'stacksanity.js'), 'serve', '--no-feeder'], {
      env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redisServer.url, STACKSANITY_PREFIX: PREFIX, STACKSANITY_TOKENS: `bench:${TOKEN}`, STACKSANITY_RATE_LIMIT: '1000000', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let banner = '';
    serve.stdout!.on('data', (d: Buffer) => (banner += d.toString()));
    const t = Date.now();
    while (!banner.includes('Ctrl-C')) {
      if (Date.now() - t > 30_000) throw new Error('serve did not start');
      await sleep(100);
    }
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const k of source.kernels) {
      await fetch(`${base}/v1/kernels/${k.buildId}/profile`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(k.profile) });
      const r = await fetch(`${base}/v1/kernels/${k.buildId}/symbols`, { method: 'POST', headers: { ...auth, 'content-type': 'text/plain' }, body: k.kallsyms });
      if (r.status !== 201) throw new Error(`kernel upload: ${r.status} ${await r.text()}`);
    }
    await sleep(1500); // workers connected

    const peakRss = new Map<number, number>();
    const sampler = setInterval(() => {
      for (const pid of [serve!.pid!, ...childrenOf(serve!.pid!)]) peakRss.set(pid, Math.max(peakRss.get(pid) ?? 0, rssOf(pid)));
    }, 250);

    // Completion watcher: upload time per job id, polled for its commit marker.
    const pending = new Map<string, { t0: number; phase: Phase; done: () => void }>();
    let seq = 0;
    let polling = false;
    const watch = setInterval(() => {
      if (pending.size === 0 || polling) return;
      polling = true;
      const ids = [...pending.keys()];
      const p = redis.pipeline();
      for (const id of ids) p.exists(keys.done(id));
      p.exec().then((res) => {
        const now = performance.now();
        ids.forEach((id, i) => {
          const e = pending.get(id);
          if (e && res?.[i]?.[1] === 1) {
            pending.delete(id);
            e.done();
            e.phase.latencies.push(now - e.t0);
            e.phase.committed += BATCH;
          }
        });
      }, (e: Error) => log(`watcher: ${e.message}`)).finally(() => { polling = false; });
    }, 20);

    // node:http with keep-alive rather than fetch: the load generator shares the two cores with
    // the service, and undici's fetch cost it more CPU per upload than the request itself needs.
    const agent = new Agent({ keepAlive: true, maxSockets: INFLIGHT * 2 });
    const post = (path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; text: string }> =>
      new Promise((resolve, reject) => {
        const req = request(`${base}${path}`, { method: 'POST', agent, headers: { ...headers, 'content-length': String(body.length) } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(body);
      });

    /** Uploads one batch; resolves with a promise of its commit (the watcher settles it). */
    const upload = async (phase: Phase): Promise<Promise<void>> => {
      const body = bodies[seq % bodies.length]!;
      const t0 = performance.now();
      const r = await post(`/v1/samples?source=emulator`, { ...auth, 'content-type': 'application/gzip', 'idempotency-key': `bench-${seq++}` }, body);
      const j = JSON.parse(r.text) as { job?: string; accepted?: number; rejected?: number };
      if (r.status !== 202 || !j.job) throw new Error(`upload: ${r.status} ${r.text.slice(0, 300)}`);
      phase.uploaded += j.accepted ?? 0;
      phase.rejected += j.rejected ?? 0;
      return new Promise<void>((done) => pending.set(j.job!, { t0, phase, done }));
    };

    /** Closed loop: INFLIGHT slots, each uploading its next batch once its previous one is committed. */
    const saturate = async (phase: Phase, seconds: number): Promise<void> => {
      const end = performance.now() + seconds * 1000;
      await Promise.all(Array.from({ length: INFLIGHT }, async () => {
        while (performance.now() < end) await (await upload(phase));
      }));
    };

    // Warm-up: a started service runs cold (V8 interprets, then compiles the hot paths on
    // background threads, which costs CPU too); a worker's checker reaches its steady speed after
    // roughly a hundred batches. Sustained throughput is what the service does after that.
    const warm: Phase = { name: 'warm-up', uploaded: 0, committed: 0, seconds: 0, latencies: [], rejected: 0 };
    if (WARMUP > 0) {
      log(`warm-up: saturated, ${WARMUP} s (not measured)...`);
      const tw = performance.now();
      await saturate(warm, WARMUP);
      warm.seconds = (performance.now() - tw) / 1000;
    }

    // CPU per process over phase 1: where the service's time goes, per committed sample. The
    // bench's own CPU (HTTP client, completion watcher) is shown apart; the batches were
    // generated before the clock started, so the emulator's CPU is not in the figures.
    const cmdOf = (pid: number): string => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } };
    const procs = (): [string, number][] => [
      ['API (serve)', serve!.pid!],
      ...childrenOf(serve!.pid!).filter((p) => cmdOf(p).includes('workers/checker')).map((p, i) => [`worker ${i + 1}`, p] as [string, number]),
      ['redis-server', redisServer.child.pid!],
    ];
    // Redis's command statistics for the saturated phase alone (not the no-op baseline's jobs).
    await redis.config('RESETSTAT');
    const cpuBefore = new Map(procs().map(([, p]) => [p, cpuSecondsOf(p, true)]));
    const selfBefore = process.cpuUsage();

    // Phase 1: saturation, closed loop with INFLIGHT batches between upload and verdict.
    const sat: Phase = { name: 'saturated', uploaded: 0, committed: 0, seconds: 0, latencies: [], rejected: 0 };
    log(`phase 1: saturated, ${INFLIGHT} batches in flight, ${SECONDS} s...`);
    const t1 = performance.now();
    await saturate(sat, SECONDS);
    const committedAtEnd = sat.committed;
    sat.seconds = (performance.now() - t1) / 1000;
    const cpuUsed = procs().map(([name, p]) => [name, cpuSecondsOf(p, true) - (cpuBefore.get(p) ?? 0)] as [string, number]);
    const self = process.cpuUsage(selfBefore);
    const satBatches = committedAtEnd / BATCH;
    // Where Redis's own CPU went, by command (Lua scripts show as eval/evalsha plus what they call).
    const cmdStats = [...(await redis.info('commandstats')).matchAll(/cmdstat_(\w+):calls=(\d+),usec=(\d+)/g)]
      .map((m) => ({ cmd: m[1]!, calls: Number(m[2]), usec: Number(m[3]) }))
      .sort((a, b) => b.usec - a.usec).slice(0, 12);
    cpuUsed.push(['bench client (not the service)', (self.user + self.system) / 1e6]);
    while ([...pending.values()].some((e) => e.phase === sat)) await sleep(20);
    sat.committed = committedAtEnd;

    // Phase 2: paced at RATE samples/s, open loop.
    const paced: Phase = { name: `paced ${RATE}/s`, uploaded: 0, committed: 0, seconds: 0, latencies: [], rejected: 0 };
    log(`phase 2: paced at ${RATE} samples/s, ${SECONDS} s...`);
    const interval = (1000 * BATCH) / RATE;
    const t2 = performance.now();
    const inflight: Promise<void>[] = [];
    for (let k = 0; performance.now() - t2 < SECONDS * 1000; k++) {
      const due = t2 + k * interval;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      inflight.push(upload(paced).then(() => undefined));
    }
    await Promise.all(inflight);
    paced.seconds = (performance.now() - t2) / 1000;
    const drainStart = performance.now();
    while ([...pending.values()].some((e) => e.phase === paced) && performance.now() - drainStart < 120_000) await sleep(20);

    clearInterval(sampler);
    clearInterval(watch);
    agent.destroy();
    const info = await redis.info('memory');
    const persistence = await redis.info('persistence');
    const mem = (k: string): number => Number(new RegExp(`${k}:(\\d+)`).exec(info)?.[1] ?? 0);
    const workerPids = childrenOf(serve.pid!).filter((p) => cmdOf(p).includes('workers/checker'));
    const mb = (b: number): string => `${(b / 1048576).toFixed(0)} MB`;

    const cpu = cpus();
    const svcCpu = cpuUsed.filter(([n]) => !n.startsWith('bench')).reduce((a, [, c]) => a + c, 0);
    const lines = [
      `machine: ${cpu.length} × ${cpu[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, load ${execFileSync('cat', ['/proc/loadavg']).toString().split(' ').slice(0, 3).join(' ')}`,
      `input: ${source.kind}; ${BATCH} samples per upload (gzip), ${INFLIGHT} batches in flight in phase 1`,
      '',
      '| what | result |',
      '|---|---:|',
      `| BullMQ no-op jobs (baseline, same Redis, 1 process, concurrency 100) | ${baseline.jobsPerSec.toFixed(0)} jobs/s = ${(baseline.jobsPerSec * BATCH).toFixed(0)} samples/s at ${BATCH} per job |`,
      ...(WARMUP > 0 ? [`| warm-up (${WARMUP} s from a cold start, not in the figures below) | ${(warm.committed / warm.seconds).toFixed(0)} samples/s |`] : []),
      `| saturated: samples/s upload → committed verdict | ${(sat.committed / sat.seconds).toFixed(0)} samples/s (${(sat.committed / sat.seconds / BATCH).toFixed(1)} batches/s = ${((sat.committed / sat.seconds / BATCH) / baseline.jobsPerSec * 100).toFixed(2)} % of the no-op ceiling) |`,
      `| saturated: upload → verdict latency p50 / p99 | ${pct(sat.latencies, 50).toFixed(0)} / ${pct(sat.latencies, 99).toFixed(0)} ms |`,
      `| paced ${RATE} samples/s: achieved upload rate | ${(paced.uploaded / paced.seconds).toFixed(0)} samples/s |`,
      `| paced ${RATE} samples/s: latency p50 / p99 | ${pct(paced.latencies, 50).toFixed(0)} / ${pct(paced.latencies, 99).toFixed(0)} ms (${paced.latencies.length} batches) |`,
      `| peak RSS: API (serve) process | ${mb(peakRss.get(serve.pid!) ?? 0)} |`,
      ...workerPids.map((p, i) => `| peak RSS: worker ${i + 1} | ${mb(peakRss.get(p) ?? 0)} |`),
      `| Redis used_memory now / peak | ${mb(mem('used_memory'))} / ${mb(mem('used_memory_peak'))} |`,
      `| samples rejected by the API | ${sat.rejected + paced.rejected} |`,
      `| Redis AOF rewrites during the run | ${/aof_rewrites:(\d+)/.exec(persistence)?.[1] ?? '?'} |`,
      '',
      `CPU in the saturated phase (${sat.seconds.toFixed(1)} s wall, ${committedAtEnd} samples committed), from /proc/<pid>/stat:`,
      '',
      '| process | CPU s | cores busy | µs CPU per committed sample |',
      '|---|---:|---:|---:|',
      ...cpuUsed.map(([n, c]) => `| ${n} | ${c.toFixed(2)} | ${(c / sat.seconds).toFixed(2)} | ${(c * 1e6 / Math.max(1, committedAtEnd)).toFixed(1)} |`),
      `| service total (API + workers + Redis) | ${svcCpu.toFixed(2)} | ${(svcCpu / sat.seconds).toFixed(2)} | ${(svcCpu * 1e6 / Math.max(1, committedAtEnd)).toFixed(1)} |`,
      `| ceiling on ${cpu.length} cores at that cost (all cores to the service) | | | ${(cpu.length / (svcCpu / Math.max(1, committedAtEnd))).toFixed(0)} samples/s |`,
      '',
      'Inherent work per sample on the same batches, one process, no HTTP/Redis/queue, measured before the service started (stages by main-thread wall time; total = process CPU, GC threads included):',
      '',
      '| gunzip | transcode | decode | checkBatch | total CPU | service total ÷ inherent | ceiling on all cores at the inherent cost alone |',
      '|---:|---:|---:|---:|---:|---:|---:|',
      `| ${inherent.gunzip.toFixed(1)} µs | ${inherent.transcode.toFixed(1)} µs | ${inherent.decode.toFixed(1)} µs | ${inherent.check.toFixed(1)} µs | ${inherentTotal.toFixed(1)} µs | ${((svcCpu * 1e6 / Math.max(1, committedAtEnd)) / inherentTotal).toFixed(2)}× | ${(cpu.length * 1e6 / inherentTotal).toFixed(0)} samples/s |`,
      '',
      `Redis commands in the saturated phase (INFO commandstats, top 12 by time, ${satBatches.toFixed(0)} batches; script bodies count under the commands they call too):`,
      '',
      '| command | calls | calls per batch | µs total | µs per call | µs per batch |',
      '|---|---:|---:|---:|---:|---:|',
      ...cmdStats.map((c) => `| ${c.cmd} | ${c.calls} | ${(c.calls / satBatches).toFixed(1)} | ${c.usec} | ${(c.usec / Math.max(1, c.calls)).toFixed(1)} | ${(c.usec / satBatches).toFixed(0)} |`),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    if (serve && serve.exitCode === null) {
      const exited = new Promise((r) => serve!.once('exit', r));
      serve.kill('SIGINT');
      await Promise.race([exited, sleep(30_000)]);
      if (serve.exitCode === null) serve.kill('SIGKILL');
    }
    redis.disconnect();
    await redisServer.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
