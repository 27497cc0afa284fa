// npm run bench:soak — the fault campaign of issue 17 as a benchmark: `stacksanity serve
// --no-feeder --workers 2` (API in the serve process, two checker worker processes, restarted 1 s
// after they die) on a private redis-server with AOF, fed steadily over HTTP, while one worker at a
// time is SIGKILLed in the middle of a batch. Per kill: the recovery time, from the kill to the
// commit of every batch the killed worker held (which another worker must take over). At the end:
// samples accepted (202s) against samples checked (the per-host summaries) — must be equal: none
// lost, none counted twice — the dead-letter list (must be empty), and the API's RSS before the
// load and after it, once idle.
//
// Env: BENCH_KILLS (default 10), BENCH_BATCH (samples per upload, default 2000: a batch long enough
// that a kill lands inside one), BENCH_WAITING (batches kept waiting, default 4), BENCH_KILL_GAP
// (ms between a recovery and the next kill, default 2000), BENCH_MAX_SECONDS (hard stop, default
// 600). Stops by itself; every process it started is stopped.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { feederSource } from '../services/pipeline/feed.ts';
import { startPrivateRedis } from '../services/pipeline/redis-server.ts';
import { loadConfig } from '../services/pipeline/config.ts';
import { createQueue, traceStore } from '../services/pipeline/queue.ts';
import { DeadLetters } from '../services/pipeline/dead-letter.ts';
import { Keys } from '../services/pipeline/keys.ts';
import { ROOT, checkedSamples, mib, rssOf, sleep, startServe, workerPids, type ServeHandle } from './service.ts';

const KILLS = Number(process.env.BENCH_KILLS ?? 10);
const BATCH = Number(process.env.BENCH_BATCH ?? 2000);
const WAITING = Number(process.env.BENCH_WAITING ?? 4);
const KILL_GAP = Number(process.env.BENCH_KILL_GAP ?? 2000);
const MAX_SECONDS = Number(process.env.BENCH_MAX_SECONDS ?? 600);
const TOKEN = `soak-${randomBytes(8).toString('hex')}-token`;
const PREFIX = `{ss-soak-${randomBytes(4).toString('hex')}}`;

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const started = Date.now();
const timeLeft = (): number => MAX_SECONDS * 1000 - (Date.now() - started);

const dir = mkdtempSync(join(tmpdir(), 'stacksanity-soak-'));
const redisServer = await startPrivateRedis(join(dir, 'redis'));
const cfg = loadConfig({ ...process.env, REDIS_URL: redisServer.url, STACKSANITY_PREFIX: PREFIX });
const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
const queue = createQueue(cfg, redis);
const keys = new Keys(PREFIX);
let serve: ServeHandle | undefined;
let exitCode = 0;
try {
  const source = await feederSource({ root: ROOT, hosts: 16, seed: 23, warn: log });
  const bodies: Buffer[] = [];
  for (let i = 0; i < 8; i++) bodies.push(gzipSync(source.batch(BATCH), { level: 1 }));
  log(`${bodies.length} distinct bodies of ${BATCH} samples (${source.kind}), each sent under its own Idempotency-Key`);

  serve = await startServe({ workers: 2, redisUrl: redisServer.url, prefix: PREFIX, token: TOKEN, name: 'soak', log });
  const base = serve.base;
  const servePid = serve.pid;
  const auth = { authorization: `Bearer ${TOKEN}` };
  for (const k of source.kernels) {
    await fetch(`${base}/v1/kernels/${k.buildId}/profile`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(k.profile) });
    const r = await fetch(`${base}/v1/kernels/${k.buildId}/symbols`, { method: 'POST', headers: { ...auth, 'content-type': 'text/plain' }, body: k.kallsyms });
    if (r.status !== 201) throw new Error(`kernel upload: ${r.status} ${await r.text()}`);
  }
  await sleep(2000);
  const rssBefore = rssOf(servePid);
  let rssPeak = rssBefore;
  const rssTimer = setInterval(() => { rssPeak = Math.max(rssPeak, rssOf(servePid)); }, 250);

  // The load: keep BENCH_WAITING batches waiting, so that both workers are always busy.
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const post = (body: Buffer, key: string): Promise<{ status: number; text: string }> =>
    new Promise((res, rej) => {
      const req = request(`${base}/v1/samples`, { method: 'POST', agent, headers: { ...auth, 'content-type': 'text/plain', 'content-encoding': 'gzip', 'idempotency-key': key, 'content-length': String(body.length) } }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => res({ status: r.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        r.on('error', rej);
      });
      req.on('error', rej);
      req.end(body);
    });
  let feeding = true;
  let accepted = 0;
  let uploads = 0;
  const jobIds = new Set<string>();
  const feeder = (async () => {
    while (feeding && timeLeft() > 0) {
      if ((await queue.getWaitingCount()) >= WAITING) {
        await sleep(20);
        continue;
      }
      const r = await post(bodies[uploads % bodies.length]!, `soak-${uploads}`);
      uploads++;
      if (r.status !== 202) throw new Error(`upload answered ${r.status}: ${r.text}`);
      const j = JSON.parse(r.text) as { job: string; accepted: number; duplicate: boolean };
      if (!j.duplicate) {
        accepted += j.accepted;
        jobIds.add(j.job);
      }
    }
  })();

  // The kills: wait for a worker with a batch in hand, SIGKILL it, time the commit of its batches.
  const kills: { pid: number; batches: number; recoveryMs: number | null }[] = [];
  let missed = 0;
  for (let k = 0; k < KILLS && timeLeft() > 60_000; k++) {
    await sleep(KILL_GAP);
    while (workerPids(servePid).length < 2 && timeLeft() > 60_000) await sleep(50);
    const pids = workerPids(servePid);
    const want = pids[k % pids.length]!;
    let held: string[] = [];
    for (const t = Date.now(); held.length === 0 && Date.now() - t < 10_000; await sleep(5)) {
      held = (await queue.getActive()).filter((j) => j.processedBy?.endsWith(`:${want}`)).map((j) => j.id!);
      // A batch committed but not yet acknowledged is no longer work in hand.
      const d = await Promise.all(held.map((id) => redis.exists(keys.done(id))));
      if (d.every((x) => x === 1)) held = [];
    }
    try {
      process.kill(want, 'SIGKILL');
    } catch {
      k--;
      continue;
    }
    const killedAt = performance.now();
    // Only batches not committed before the kill are the dead worker's unfinished work.
    const committed = await Promise.all(held.map((id) => redis.exists(keys.done(id))));
    const inFlight = held.filter((_, i) => committed[i] === 0);
    if (inFlight.length === 0) {
      missed++;
      kills.push({ pid: want, batches: 0, recoveryMs: null });
      log(`kill ${k + 1}: worker ${want} had no uncommitted batch at the kill`);
      continue;
    }
    let recoveryMs: number | null = null;
    for (const t = Date.now(); Date.now() - t < 60_000; await sleep(20)) {
      const d = await Promise.all(inFlight.map((id) => redis.exists(keys.done(id))));
      if (d.every((x) => x === 1)) {
        recoveryMs = performance.now() - killedAt;
        break;
      }
    }
    kills.push({ pid: want, batches: inFlight.length, recoveryMs });
    log(`kill ${k + 1}: worker ${want} held ${inFlight.length} uncommitted batch(es); committed by another worker after ${recoveryMs === null ? 'MORE THAN 60 s' : `${(recoveryMs / 1000).toFixed(2)} s`}`);
  }
  feeding = false;
  await feeder;

  // Drain: every accepted batch committed (or parked), bounded.
  const dl = new DeadLetters(redis, keys, cfg.idempotencySeconds);
  let uncommitted = [...jobIds];
  for (const t = Date.now(); uncommitted.length > 0 && Date.now() - t < 120_000; await sleep(200)) {
    const d = await Promise.all(uncommitted.map((id) => redis.exists(keys.done(id))));
    uncommitted = uncommitted.filter((_, i) => d[i] === 0);
    if (uncommitted.length > 0 && (await dl.count()) >= uncommitted.length) break;
  }
  const checked = await checkedSamples(redis, keys, traceStore(cfg, redis, keys));
  const parked = await dl.count();
  await sleep(5000);
  clearInterval(rssTimer);
  const rssAfter = rssOf(servePid);

  const rec = kills.map((k) => k.recoveryMs).filter((x): x is number => x !== null).sort((a, b) => a - b);
  const cpu = cpus();
  const lines = [
    `bench:soak — ${new Date().toISOString()}`,
    `machine: nproc ${cpu.length}, ${cpu[0]?.model ?? '?'}; Node ${process.version}; load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
    `settings: lock ${cfg.lockDurationMs} ms, stall check ${cfg.stalledIntervalMs} ms, max stalls ${cfg.maxStalls}; batches of ${BATCH} samples; ${((Date.now() - started) / 1000).toFixed(0)} s`,
    `kills: ${kills.length} SIGKILLs (${missed} landed between batches), serve restarted a worker ${serve.restarts()} times`,
    `recovery (kill -> the killed worker's batches committed by another): ${rec.map((ms) => (ms / 1000).toFixed(2)).join(', ')} s; max ${rec.length ? (rec[rec.length - 1]! / 1000).toFixed(2) : '-'} s`,
    `uploads ${uploads}, samples accepted ${accepted}, checked ${checked}: ${accepted - checked} lost or extra; batches uncommitted ${uncommitted.length}, parked ${parked}`,
    `API (serve) RSS: ${mib(rssBefore)} before, ${mib(rssPeak)} peak, ${mib(rssAfter)} after (5 s idle)`,
  ];
  console.log(lines.join('\n'));
  const slow = kills.filter((k) => k.batches > 0 && (k.recoveryMs === null || k.recoveryMs > 10_000)).length;
  if (accepted !== checked || uncommitted.length > 0 || parked > 0 || slow > 0) {
    log(`FAILED: ${accepted !== checked ? 'accepted != checked; ' : ''}${uncommitted.length} uncommitted; ${parked} parked; ${slow} recoveries over 10 s`);
    exitCode = 1;
  }
} finally {
  await serve?.stop();
  await queue.close().catch(() => undefined);
  redis.disconnect();
  await redisServer.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
