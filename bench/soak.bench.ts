// npm run bench:soak — measured fault tolerance (issue 15, part 5). `stacksanity serve --no-feeder
// --workers 2` (the API in the serve process, two checker worker processes that serve restarts 1 s
// after they die) on a private redis-server this bench starts itself (AOF on; never the shared
// Redis), while:
//   - emulated hosts upload at a steady rate (each host a batch every period, each upload under
//     its own Idempotency-Key and retried under the same key on a 503 or a lost answer, honouring
//     Retry-After, as a host agent would);
//   - every ~10 s one checker worker is SIGKILLed, preferably while it holds a batch;
//   - once, mid-run, Redis itself is killed (SIGKILL by default: a crash, not a shutdown) and
//     started again on the same port and data directory, so it reloads its append-only file.
// Then the uploads stop, the queue drains (bounded) and the bench counts, per upload:
//   accepted  the samples its 202 named (the first 202 of its key, duplicate or not);
//   checked   the samples the workers committed for it. Each upload's samples carry a host name
//             of their own (`soak-h<host>-u<n>`), so the service's per-host summary of that name
//             is exactly what was counted for that upload, however many times a worker took it;
//   lost      accepted but never checked (summary short of accepted, or no done: marker);
//   twice     checked more than accepted (a batch committed twice: its done: marker failed).
// And the longest stall (the longest stretch during which some accepted batch waited and no batch
// was committed), the longest upload outage (no 202 at all), and RSS over time of the API, the
// workers and Redis.
//
// Env: BENCH_SECONDS (feeding time, default 300), BENCH_HOSTS (8), BENCH_BATCH (samples per
// upload, 500), BENCH_RATE (samples/s over all hosts, 2000), BENCH_KILL_EVERY_MS (10000),
// BENCH_REDIS_RESTART (kill | term | none; default kill), BENCH_REDIS_DOWN_MS (how long Redis
// stays down, 3000), BENCH_APPENDFSYNC (always | everysec; default always, the setting the 202
// promise needs: docs/operations-service.md), BENCH_DRAIN_SECONDS (180), BENCH_WORKERS (2),
// BENCH_SELF_CHECK=1 (at the end, one upload's samples are sent again under a new key, and the
// count must report exactly those as counted twice: the detector's own test).
// The service gets this environment (STACKSANITY_LOCK_MS and friends apply). Every process it
// started is stopped; its Redis data directory is deleted.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { feederSource } from '../services/pipeline/feed.ts';
import { ping, startPrivateRedis, type AppendFsync } from '../services/pipeline/redis-server.ts';
import { loadConfig } from '../services/pipeline/config.ts';
import { createQueue, traceStore } from '../services/pipeline/queue.ts';
import { DeadLetters } from '../services/pipeline/dead-letter.ts';
import { Keys } from '../services/pipeline/keys.ts';
import { ROOT, mib, rssOf, sleep, startServe, workerPids, type ServeHandle } from './service.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 300);
const HOSTS = Number(process.env.BENCH_HOSTS ?? 8);
const BATCH = Number(process.env.BENCH_BATCH ?? 500);
const RATE = Number(process.env.BENCH_RATE ?? 2000);
const KILL_EVERY_MS = Number(process.env.BENCH_KILL_EVERY_MS ?? 10_000);
const REDIS_RESTART = process.env.BENCH_REDIS_RESTART ?? 'kill';
const REDIS_DOWN_MS = Number(process.env.BENCH_REDIS_DOWN_MS ?? 3000);
const FSYNC = (process.env.BENCH_APPENDFSYNC ?? 'always') as AppendFsync;
const DRAIN_S = Number(process.env.BENCH_DRAIN_SECONDS ?? 180);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const SELF_CHECK = process.env.BENCH_SELF_CHECK === '1';
const UPLOAD_TIMEOUT_MS = 30_000;
if (!['kill', 'term', 'none'].includes(REDIS_RESTART) || !['always', 'everysec'].includes(FSYNC)) {
  process.stderr.write('bench:soak: BENCH_REDIS_RESTART is kill, term or none; BENCH_APPENDFSYNC always or everysec\n');
  process.exit(2);
}

const RUN = randomBytes(4).toString('hex');
const TOKEN = `soak-${randomBytes(8).toString('hex')}-token`;
const PREFIX = `{ss-soak-${RUN}}`;
const PERIOD_MS = (HOSTS * BATCH * 1000) / RATE;

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const t0 = performance.now();
const at = (): number => (performance.now() - t0) / 1000;
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

interface Upload {
  host: string;
  key: string;
  /** Set by the first 202 for the key. */
  job?: string;
  accepted: number;
  attempts: number;
  /** ms from the first attempt to the 202. */
  latencyMs?: number;
  /** The first answer for the key was a duplicate (an earlier attempt's 202 was lost on the way). */
  firstWasDuplicate?: boolean;
  givenUp?: string;
}

interface Kill {
  at: number;
  pid: number;
  /** What the worker held: batches not yet committed, batches committed but not acknowledged. */
  uncommitted: number;
  committed: number;
  redisDown: boolean;
}

const dir = mkdtempSync(join(tmpdir(), 'stacksanity-soak-'));
const redisDir = join(dir, 'redis');
let redisServer = await startPrivateRedis(redisDir, undefined, process.env, FSYNC);
const redisPort = redisServer.port;
const cfg = loadConfig({ ...process.env, REDIS_URL: redisServer.url, STACKSANITY_PREFIX: PREFIX });
// The bench's own connections: one that waits out the outage (queue reads, final counts), and one
// that fails at once while Redis is down (the progress monitor must not block on it).
const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
redis.on('error', () => undefined);
const probe = new Redis(redisServer.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 200 });
probe.on('error', () => undefined);
const queue = createQueue(cfg, redis);
queue.on('error', () => undefined);
const keys = new Keys(PREFIX);
let serve: ServeHandle | undefined;
let connErrors = 0;
let exitCode = 0;
const withTimeout = <T>(p: Promise<T>, ms: number): Promise<T | undefined> =>
  Promise.race([p.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), ms))]);

try {
  const source = await feederSource({ root: ROOT, hosts: HOSTS, seed: 23, warn: log });
  // A pool of batches; each upload renames every sample's host to the upload's own name.
  const pool: string[] = [];
  for (let i = 0; i < 12; i++) pool.push(source.batch(BATCH));
  log(`bench:soak: ${HOSTS} emulated hosts x ${BATCH} samples every ${secs(PERIOD_MS)} (${RATE} samples/s; ${source.kind}); ${SECONDS} s; a worker SIGKILLed every ${secs(KILL_EVERY_MS)}; Redis (appendfsync ${FSYNC}) ${REDIS_RESTART === 'none' ? 'not restarted' : `${REDIS_RESTART === 'kill' ? 'SIGKILLed' : 'stopped (SIGTERM)'} once at ${SECONDS / 2} s, down ${secs(REDIS_DOWN_MS)}`}`);

  // The workers' reconnect attempts while Redis is down are one line each: counted, not printed.
  serve = await startServe({ workers: WORKERS, redisUrl: redisServer.url, prefix: PREFIX, token: TOKEN, name: 'soak', log: (l) => (/ECONNREFUSED|EPIPE|ECONNRESET/.test(l) ? void connErrors++ : log(l)) });
  const base = serve.base;
  const servePid = serve.pid;
  const auth = { authorization: `Bearer ${TOKEN}` };
  for (const k of source.kernels) {
    await fetch(`${base}/v1/kernels/${k.buildId}/profile`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(k.profile) });
    const r = await fetch(`${base}/v1/kernels/${k.buildId}/symbols`, { method: 'POST', headers: { ...auth, 'content-type': 'text/plain' }, body: k.kallsyms });
    if (r.status !== 201) throw new Error(`kernel upload: ${r.status} ${await r.text()}`);
  }

  const agent = new Agent({ keepAlive: true, maxSockets: HOSTS });
  type Answer = { status: number; text: string; retryAfter?: string } | { error: string };
  const post = (body: Buffer, key: string): Promise<Answer> =>
    new Promise((res) => {
      const req = request(`${base}/v1/samples`, {
        method: 'POST', agent, timeout: UPLOAD_TIMEOUT_MS,
        headers: { ...auth, 'content-type': 'text/plain', 'content-encoding': 'gzip', 'idempotency-key': key, 'content-length': String(body.length) },
      }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => res({ status: r.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ...(r.headers['retry-after'] ? { retryAfter: String(r.headers['retry-after']) } : {}) }));
        r.on('error', (e) => res({ error: e.message }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => res({ error: e.message }));
      req.end(body);
    });

  // ---- the run's clock: feeding ends at feedEnd; the Redis restart at its middle ----
  const feedStart = performance.now();
  const feedEnd = feedStart + SECONDS * 1000;
  const uploads: Upload[] = [];
  const byJob = new Map<string, Upload>();
  /** Accepted batches whose done: marker the monitor has not seen yet. */
  const pending = new Set<string>();
  let last202 = performance.now();
  let longestOutage = { ms: 0, endAt: 0 };
  let answers503 = 0;
  let answersLost = 0;
  const unexpected: string[] = [];

  const hostLoop = async (h: number): Promise<void> => {
    // Hosts are spread evenly over the period, so the load is steady, not bursts of HOSTS uploads.
    for (let n = 0; ; n++) {
      const due = feedStart + (h * PERIOD_MS) / HOSTS + n * PERIOD_MS;
      if (due >= feedEnd) return;
      await sleep(Math.max(0, due - performance.now()));
      const host = `soak-h${h}-u${n}`;
      const u: Upload = { host, key: `${RUN}-${host}`, accepted: 0, attempts: 0 };
      uploads.push(u);
      const body = gzipSync(pool[(h * 5 + n) % pool.length]!.replace(/^\t\.host .*$/gm, `\t.host ${host}`), { level: 1 });
      const first = performance.now();
      for (;;) {
        u.attempts++;
        const a = await post(body, u.key);
        if ('status' in a && a.status === 202) {
          const j = JSON.parse(a.text) as { job: string; accepted: number; duplicate: boolean };
          u.job = j.job;
          u.accepted = j.accepted;
          u.latencyMs = performance.now() - first;
          u.firstWasDuplicate = j.duplicate;
          byJob.set(j.job, u);
          pending.add(j.job);
          const now = performance.now();
          if (now - last202 > longestOutage.ms) longestOutage = { ms: now - last202, endAt: at() };
          last202 = now;
          break;
        }
        if ('status' in a && a.status === 503) {
          answers503++;
          await sleep(Math.min(10, Number(a.retryAfter ?? 1)) * 1000);
          continue;
        }
        if ('error' in a) {
          // No answer (connection reset, timeout): the batch may or may not be queued; the same
          // key sent again finds out without counting it twice.
          answersLost++;
          await sleep(1000);
          continue;
        }
        u.givenUp = `${a.status}: ${a.text.slice(0, 200)}`;
        if (unexpected.length < 5) unexpected.push(`${host}: ${u.givenUp}`);
        break;
      }
    }
  };

  // ---- progress, stalls and memory, sampled every 250 ms ----
  let committedBatches = 0;
  let lastProgress = performance.now();
  let longestStall = { ms: 0, endAt: 0 };
  /** Stalls of 3 s or more: [start, end] in seconds of the run. */
  const stalls: [number, number][] = [];
  let stalled = false;
  const rssRows: { t: number; api: number; workers: number[]; redis: number }[] = [];
  let monitoring = true;
  const monitor = (async () => {
    let lastRss = 0;
    while (monitoring) {
      await sleep(250);
      const ids = [...pending];
      if (ids.length === 0) {
        if (stalled) stalls.push([(lastProgress - t0) / 1000, at()]);
        stalled = false;
        lastProgress = performance.now();
      } else {
        const pipe = probe.pipeline();
        for (const id of ids) pipe.exists(keys.done(id));
        const res = await withTimeout(pipe.exec(), 2000);
        let progressed = false;
        if (res) {
          res.forEach(([err, v], i) => {
            if (!err && v === 1) {
              pending.delete(ids[i]!);
              committedBatches++;
              progressed = true;
            }
          });
        }
        const now = performance.now();
        if (progressed) {
          if (stalled) stalls.push([(lastProgress - t0) / 1000, at()]);
          stalled = false;
          lastProgress = now;
        } else {
          if (now - lastProgress > longestStall.ms) longestStall = { ms: now - lastProgress, endAt: at() };
          if (now - lastProgress >= 3000) stalled = true;
        }
      }
      if (performance.now() - lastRss >= 1000) {
        lastRss = performance.now();
        rssRows.push({ t: at(), api: rssOf(servePid), workers: workerPids(servePid).map(rssOf), redis: rssOf(redisServer.child.pid!) });
      }
    }
  })();

  // ---- the kills: every KILL_EVERY_MS, one worker, preferably while it holds a batch ----
  const kills: Kill[] = [];
  let redisDown = false;
  const killer = (async () => {
    for (let k = 0; ; k++) {
      const due = feedStart + (k + 1) * KILL_EVERY_MS;
      if (due >= feedEnd) return;
      await sleep(Math.max(0, due - performance.now()));
      let pids = workerPids(servePid);
      for (const t = Date.now(); pids.length < WORKERS && Date.now() - t < 5000; pids = workerPids(servePid)) await sleep(50);
      const want = pids[k % Math.max(1, pids.length)];
      if (want === undefined) continue;
      // Up to 2 s for the worker to hold a batch; then it is killed anyway (idle, or Redis down).
      let held: string[] = [];
      for (const t = Date.now(); held.length === 0 && Date.now() - t < 2000 && !redisDown; await sleep(5)) {
        const active = await withTimeout(queue.getActive(), 500);
        held = (active ?? []).filter((j) => j.processedBy?.endsWith(`:${want}`)).map((j) => j.id!);
      }
      try {
        process.kill(want, 'SIGKILL');
      } catch {
        continue;
      }
      const done = held.length > 0 ? ((await withTimeout(Promise.all(held.map((id) => redis.exists(keys.done(id)))), 1000)) ?? []) : [];
      const committed = done.filter((d) => d === 1).length;
      kills.push({ at: at(), pid: want, uncommitted: held.length - committed, committed, redisDown });
    }
  })();

  // ---- Redis: down once, mid-run ----
  let redisOutage: { at: number; downMs: number; reloadMs: number } | undefined;
  const restarter = (async () => {
    if (REDIS_RESTART === 'none') return;
    await sleep(Math.max(0, feedStart + (SECONDS * 1000) / 2 - performance.now()));
    const killedAt = performance.now();
    const child = redisServer.child;
    const exited = new Promise((r) => child.once('exit', r));
    redisDown = true;
    child.kill(REDIS_RESTART === 'kill' ? 'SIGKILL' : 'SIGTERM');
    await exited;
    log(`  ${at().toFixed(0)} s: redis-server ${REDIS_RESTART === 'kill' ? 'SIGKILLed' : 'stopped'}`);
    await sleep(REDIS_DOWN_MS);
    const startAt = performance.now();
    redisServer = await startPrivateRedis(redisDir, redisPort, process.env, FSYNC);
    while (!(await ping(redisServer.url, 300))) await sleep(50);
    redisDown = false;
    redisOutage = { at: (killedAt - t0) / 1000, downMs: performance.now() - killedAt, reloadMs: performance.now() - startAt };
    log(`  ${at().toFixed(0)} s: redis-server answering again (down ${secs(redisOutage.downMs)}, of which AOF reload and start ${secs(redisOutage.reloadMs)})`);
  })();

  const progress = setInterval(() => {
    const r = rssRows[rssRows.length - 1];
    log(`  ${at().toFixed(0)} s: uploads ${uploads.length}, batches committed ${committedBatches}, waiting ${pending.size}, kills ${kills.length}; RSS API ${r ? mib(r.api) : '-'}, workers ${r ? r.workers.map(mib).join(' + ') : '-'}, Redis ${r ? mib(r.redis) : '-'}`);
  }, 30_000);

  await Promise.all([...Array.from({ length: HOSTS }, (_, h) => hostLoop(h)), killer, restarter]);
  const feedSeconds = (performance.now() - feedStart) / 1000;
  log(`  ${at().toFixed(0)} s: feeding over; draining`);

  // ---- drain: every accepted batch committed, or provably gone (no job, no marker), bounded ----
  const dl = new DeadLetters(redis, keys, cfg.idempotencySeconds);
  for (const t = Date.now(); pending.size > 0 && Date.now() - t < DRAIN_S * 1000; await sleep(500)) {
    const ids = [...pending];
    const jobs = await Promise.all(ids.map((id) => queue.getJobState(id)));
    const marks = await Promise.all(ids.map((id) => redis.exists(keys.done(id))));
    if (marks.every((m) => m === 0) && jobs.every((s) => s === 'unknown' || s === 'failed') && Date.now() - t > 15_000) break;
  }
  monitoring = false;
  await monitor;
  clearInterval(progress);
  const drainedAt = at();

  // ---- the detector's own check (BENCH_SELF_CHECK=1): one upload's samples sent again under a new
  // key — a second batch of the same samples, i.e. what a lost done: marker would do — must show
  // as exactly that many counted twice ----
  let selfCheck: Upload | undefined;
  if (SELF_CHECK) {
    const u = uploads.find((x) => x.job !== undefined)!;
    const h = Number(/^soak-h(\d+)-u(\d+)$/.exec(u.host)![1]);
    const n = Number(/-u(\d+)$/.exec(u.host)![1]);
    const body = gzipSync(pool[(h * 5 + n) % pool.length]!.replace(/^\t\.host .*$/gm, `\t.host ${u.host}`), { level: 1 });
    const a = await post(body, `${u.key}-again`);
    if (!('status' in a) || a.status !== 202) throw new Error(`self-check upload: ${JSON.stringify(a)}`);
    const job = (JSON.parse(a.text) as { job: string }).job;
    for (const t = Date.now(); (await redis.exists(keys.done(job))) === 0 && Date.now() - t < 60_000;) await sleep(200);
    selfCheck = u;
  }

  // ---- the count, upload by upload ----
  const store = traceStore(cfg, redis, keys);
  let accepted = 0;
  let checked = 0;
  let lost = 0;
  let twice = 0;
  let noMarker = 0;
  const lostList: string[] = [];
  const twiceList: string[] = [];
  for (const u of uploads) {
    if (u.job === undefined) continue;
    const s = await store.summary('host', u.host);
    const c = Number(s.samples ?? 0) + Number(s.callchain_only ?? 0) + Number(s.unprofiled ?? 0);
    accepted += u.accepted;
    checked += c;
    if ((await redis.exists(keys.done(u.job))) === 0) noMarker++;
    if (c < u.accepted) {
      lost += u.accepted - c;
      if (lostList.length < 5) lostList.push(`${u.host} (job ${u.job}, ${(await queue.getJobState(u.job))}): ${c} of ${u.accepted}`);
    } else if (c > u.accepted) {
      twice += c - u.accepted;
      if (twiceList.length < 5) twiceList.push(`${u.host} (job ${u.job}): ${c} for ${u.accepted}`);
    }
  }
  // Hosts the workers counted that no 202 named (an upload given up on after its batch was queued).
  const named = new Set(uploads.filter((u) => u.job !== undefined).map((u) => u.host));
  const unclaimed = (await redis.zrange(keys.hosts, 0, -1)).filter((h) => h.startsWith('soak-') && !named.has(h)).length;
  const parked = await dl.count();
  const failedJobs = await queue.getFailedCount();
  const givenUp = uploads.filter((u) => u.givenUp !== undefined).length;
  const lat = uploads.filter((u) => u.latencyMs !== undefined).map((u) => u.latencyMs!).sort((a, b) => a - b);
  const pct = (q: number): string => (lat.length ? `${lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]!.toFixed(0)} ms` : '-');

  // RSS over time: one row per 30 s of the run, and the peaks.
  const rows: string[] = [];
  for (let t = 0, i = 0; i < rssRows.length; t += 30) {
    while (i < rssRows.length - 1 && rssRows[i]!.t < t) i++;
    const r = rssRows[i]!;
    rows.push(`    ${r.t.toFixed(0).padStart(4)} s  API ${mib(r.api).padStart(7)}  workers ${r.workers.map(mib).join(' + ').padEnd(16)}  Redis ${mib(r.redis)}`);
    if (i === rssRows.length - 1) break;
  }
  const peak = (f: (r: (typeof rssRows)[number]) => number): string => mib(Math.max(...rssRows.map(f)));
  const midKills = kills.filter((k) => k.uncommitted > 0).length;
  const ackKills = kills.filter((k) => k.uncommitted === 0 && k.committed > 0).length;
  const cpu = cpus();
  const lines = [
    `bench:soak — ${new Date().toISOString()}`,
    `machine: nproc ${cpu.length}, ${cpu[0]?.model ?? '?'}; Node ${process.version}; load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' ')}`,
    `settings: ${HOSTS} hosts x ${BATCH} samples every ${secs(PERIOD_MS)} = ${RATE} samples/s; feeding ${feedSeconds.toFixed(0)} s, drained at ${drainedAt.toFixed(0)} s; lock ${cfg.lockDurationMs} ms, stall check ${cfg.stalledIntervalMs} ms; Redis appendonly yes, appendfsync ${FSYNC}`,
    `worker kills: ${kills.length} SIGKILLs (${midKills} holding an uncommitted batch, ${ackKills} holding only committed-unacknowledged ones, ${kills.length - midKills - ackKills} idle; ${kills.filter((k) => k.redisDown).length} while Redis was down); serve restarted a worker ${serve.restarts()} times`,
    `Redis restart: ${redisOutage ? `${REDIS_RESTART === 'kill' ? 'SIGKILL' : 'SIGTERM'} at ${redisOutage.at.toFixed(0)} s, answering again after ${secs(redisOutage.downMs)} (restart and AOF reload ${secs(redisOutage.reloadMs)})` : 'none'}`,
    `uploads: ${uploads.length} (${uploads.length - givenUp} answered 202, ${givenUp} refused), ${answers503} answers 503, ${answersLost} lost answers (retried under the same key); 202 latency p50 ${pct(0.5)}, p99 ${pct(0.99)}, max ${pct(1)}`,
    `samples accepted (202) ${accepted}, checked ${checked}: lost ${lost}, counted twice ${twice}; accepted batches without a done: marker ${noMarker}; hosts counted without a 202 ${unclaimed}; parked ${parked}, failed jobs ${failedJobs}`,
    `longest stall (an accepted batch waiting, no batch committed): ${secs(longestStall.ms)}, ended at ${longestStall.endAt.toFixed(0)} s; longest time without a 202: ${secs(longestOutage.ms)}, ended at ${longestOutage.endAt.toFixed(0)} s`,
    `stalls of 3 s or more: ${stalls.map(([a, b]) => `${a.toFixed(0)}-${b.toFixed(0)} s`).join(', ') || 'none'}; kills at ${kills.map((k) => k.at.toFixed(0)).join(', ')} s`,
    `RSS over time (API = the serve process; workers as they were at that moment):`,
    ...rows,
    `  peaks: API ${peak((r) => r.api)}, one worker ${peak((r) => Math.max(0, ...r.workers))}, Redis ${peak((r) => r.redis)}; API error log lines ${serve.errors().count}; worker connection-error lines ${connErrors}`,
  ];
  if (selfCheck) lines.push(`self-check: ${selfCheck.host}'s ${selfCheck.accepted} samples sent again under a new key; counted twice ${twice} (the detector ${twice === selfCheck.accepted ? 'works' : 'DID NOT SEE IT'})`);
  if (lostList.length) lines.push(`  lost, first: ${lostList.join('; ')}`);
  if (twiceList.length) lines.push(`  counted twice, first: ${twiceList.join('; ')}`);
  if (unexpected.length) lines.push(`  refused uploads, first: ${unexpected.join('; ')}`);
  for (const e of serve.errors().first) lines.push(`  API error: ${e.slice(0, 300)}`);
  console.log(lines.join('\n'));
  if (lost > 0 || twice !== (selfCheck?.accepted ?? 0) || noMarker > 0 || unclaimed > 0 || parked > 0 || givenUp > 0) {
    log('FAILED: lost, double-counted, unmarked, parked or refused batches (above)');
    exitCode = 1;
  }
} finally {
  await serve?.stop();
  await queue.close().catch(() => undefined);
  redis.disconnect();
  probe.disconnect();
  await redisServer.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
