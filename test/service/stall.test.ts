// Stall recovery and the dead-letter list (issue 17): with the shipped lock and stall-check
// settings, a batch whose worker is SIGKILLed mid-batch is committed by another worker within
// 10 s; a batch that kills every worker that takes it is parked with its reason and bytes (metric,
// gauge), and once the cause is gone `stacksanity replay` has it checked exactly once.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import type { ApiServer } from '../../services/api/server.ts';
import { CheckerWorker, traceStore } from '../../services/pipeline/queue.ts';
import { DeadLetters } from '../../services/pipeline/dead-letter.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { JOB_NAME, encodeBatch, type BatchJob } from '../../services/pipeline/job.ts';
import { checkBatch } from '../../services/pipeline/check-batch.ts';
import { decodeBatch } from '../../services/core/dump/batch-decode.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import type { ServiceConfig } from '../../services/pipeline/config.ts';
import { runReplay } from '../../services/cli/replay.ts';
import { freePort } from '../../services/pipeline/redis-server.ts';
import {
  DEMO_BUILD, DEMO_DUMP, DEMO_KALLSYMS, DEMO_SAMPLES, DEMO_STRATEGIES, forkCheckerWorker, SHARED_REDIS, auth, cleanup, demoVariant, metricSum, putDemoSymbols,
  startTestApi, testConfig, uniquePrefix, waitFor,
} from './helpers.ts';

/** The requirement: a killed worker's batch is checked by another one within this. */
const RECOVERY_MS = 10_000;

interface Env { prefix: string; cfg: ServiceConfig; keys: Keys; api: ApiServer; redis: Redis; env: Record<string, string> }

async function setUp(tag: string, env: Record<string, string>): Promise<Env> {
  const prefix = uniquePrefix(tag);
  const cfg = testConfig(prefix, env);
  const api = await startTestApi(cfg);
  await putDemoSymbols(api);
  return { prefix, cfg, keys: new Keys(prefix), api, redis: new Redis(SHARED_REDIS), env };
}

async function tearDown(e: Env | undefined): Promise<void> {
  if (!e) return;
  await e.api.close();
  e.redis.disconnect();
  await cleanup(e.prefix);
}


async function upload(e: Env, host: string): Promise<string> {
  const up = await e.api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant(host) });
  assert.equal(up.statusCode, 202, up.body);
  return JSON.parse(up.body).job as string;
}

async function unwindTotal(e: Env): Promise<number> {
  const h = await traceStore(e.cfg, e.redis, e.keys).metricTotals();
  let n = 0;
  for (const [k, v] of Object.entries(h)) if (k.startsWith('stacksanity_unwinds_total{')) n += Number(v);
  return n;
}

async function completed(e: Env, id: string, ms = 30_000): Promise<Record<string, unknown>> {
  return waitFor(`batch ${id} to complete`, async () => {
    if ((await e.api.queue.getJobState(id)) !== 'completed') return undefined;
    return (await e.api.queue.getJob(id))?.returnvalue as Record<string, unknown> | undefined;
  }, ms);
}

async function scrape(e: Env): Promise<string> {
  const r = await e.api.app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(r.statusCode, 200);
  return r.body;
}

function capture(): { io: { out: (s: string) => void; err: (s: string) => void }; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return { io: { out: (s) => { out += s; }, err: (s) => { err += s; } }, out: () => out, err: () => err };
}

describe('the shipped lock and stall-check settings', () => {
  let e: Env | undefined;
  // No STACKSANITY_LOCK_MS / STACKSANITY_STALLED_MS: the defaults are what is tested.
  before(async () => { e = await setUp('stall', {}); });
  after(() => tearDown(e));

  test('a batch whose worker is SIGKILLed mid-batch is committed by another worker within 10 s, once', async (t) => {
    const env = e!;
    const before = await unwindTotal(env);
    // 12 samples x 5 s: the slowed worker would hold the batch for a minute.
    const slow = await forkCheckerWorker(env.prefix, { ...env.env, STACKSANITY_TEST_SAMPLE_DELAY_MS: '5000' }, 'ignore');
    const id = await upload(env, 'stall-a');
    await waitFor('the slowed worker to take the batch', async () => (await env.api.queue.getJobState(id)) === 'active');
    // The rescuer is up before the kill: what is measured is recovery, not a worker's start.
    const rescuer = new CheckerWorker(env.cfg);
    await rescuer.start();
    try {
      const exited = new Promise((r) => slow.once('exit', r));
      slow.kill('SIGKILL');
      await exited;
      const killedAt = Date.now();
      await waitFor('the commit by the other worker', async () => (await env.redis.exists(env.keys.done(id))) === 1, RECOVERY_MS + 5_000, 50);
      const recoveryMs = Date.now() - killedAt;
      t.diagnostic(`committed ${recoveryMs} ms after the kill`);
      assert.ok(recoveryMs <= RECOVERY_MS, `committed ${recoveryMs} ms after the kill (the issue asks for 10 s)`);
      const result = await completed(env, id);
      assert.equal(result.counted, true);
      assert.equal(result.checked, DEMO_SAMPLES);
      assert.equal(rescuer.batches, 1, 'checked by the rescuer');
      assert.equal((await unwindTotal(env)) - before, DEMO_SAMPLES * DEMO_STRATEGIES);
      assert.equal(await new DeadLetters(env.redis, env.keys, 60).count(), 0, 'a single death parks nothing');
    } finally {
      await rescuer.close();
    }
  });
});

describe('a poison batch', () => {
  let e: Env | undefined;
  // Short locks: four deaths take seconds, not half a minute (the settings are tested above).
  before(async () => { e = await setUp('poison', { STACKSANITY_LOCK_MS: '2000', STACKSANITY_STALLED_MS: '1000' }); });
  after(() => tearDown(e));

  test('kills each worker, is parked with its reason and bytes, and is checked once by replay after the fix', async () => {
    const env = e!;
    const POISON = 'poison-host';
    const hooks = { STACKSANITY_TEST_CRASH_HOST: POISON };
    const before = await unwindTotal(env);
    const dl = new DeadLetters(env.redis, env.keys, 60);
    const id = await upload(env, POISON);
    // As `serve` does: a worker that dies is started again, with the same (bad) build.
    let deaths = 0;
    let worker: ChildProcess | undefined;
    const parked = await waitFor('the batch in the dead-letter list', async () => {
      if (worker === undefined || worker.exitCode !== null || worker.signalCode !== null) {
        if (worker?.signalCode === 'SIGKILL') deaths++;
        worker = await forkCheckerWorker(env.prefix, { ...env.env, ...hooks }, 'ignore');
      }
      return dl.get(id);
    }, 60_000, 200);
    const lastWorker = worker!;
    await waitFor('the parked batch\'s job to fail', async () => (await env.api.queue.getJobState(id)) === 'failed');
    // Its 3 workers died (cfg.maxStalls); the fourth start parked it instead of running it.
    assert.equal(env.cfg.maxStalls, 3);
    assert.equal(parked.reason, 'stalled');
    assert.equal(parked.detail, 'stalled 3 times: its worker died each time');
    assert.equal(parked.deaths, 3);
    assert.equal(parked.starts, 4);
    assert.equal(parked.failures, 0, 'no attempt ended in an error: each one died');
    assert.ok(deaths >= 3, `${deaths} worker deaths seen`);
    assert.equal(parked.samples, DEMO_SAMPLES);
    assert.equal(parked.data.uploader, 'test-host');
    assert.ok(parked.bytes > 0);
    assert.ok(parked.firstAttemptAt <= parked.lastAttemptAt && parked.lastAttemptAt <= parked.parkedAt);
    // Its bytes are kept without an expiry while parked, and nothing was counted.
    assert.equal(await env.redis.strlen(env.keys.body(id)), parked.bytes);
    assert.equal(await env.redis.ttl(env.keys.body(id)), -1);
    assert.equal(await env.redis.exists(env.keys.done(id)), 0);
    assert.equal(await unwindTotal(env), before);
    const job = await env.api.queue.getJob(id);
    assert.match(job!.failedReason, /parked in the dead-letter list: stalled 3 times/);

    let text = await scrape(env);
    assert.equal(metricSum(text, 'stacksanity_batches_dead_lettered_total{reason="stalled"}'), 1);
    assert.equal(metricSum(text, 'stacksanity_batches_dead_lettered_total{reason="unrecoverable"}'), 0);
    assert.equal(metricSum(text, 'stacksanity_dead_letter_batches '), 1);

    const listed = capture();
    assert.equal(await runReplay(['--list'], listed.io, { STACKSANITY_PREFIX: env.prefix, REDIS_URL: SHARED_REDIS }), 0, listed.err());
    assert.match(listed.out(), new RegExp(`${id}  stalled: stalled 3 times: its worker died each time`));
    assert.match(listed.out(), /12 samples from test-host/);

    // The cause is fixed: the crashing worker is stopped and one without the hook runs.
    lastWorker.kill('SIGTERM');
    await new Promise((r) => (lastWorker.exitCode !== null || lastWorker.signalCode !== null ? r(null) : lastWorker.once('exit', r)));
    const fixed = new CheckerWorker(env.cfg);
    await fixed.start();
    try {
      const replay = capture();
      assert.equal(await runReplay(['--job', id], replay.io, { STACKSANITY_PREFIX: env.prefix, REDIS_URL: SHARED_REDIS }), 0, replay.err());
      assert.match(replay.out(), /queued again \(12 samples\)/);
      const result = await completed(env, id);
      assert.equal(result.counted, true);
      assert.equal(result.checked, DEMO_SAMPLES);
      // Received (what the API accepted for this host) equals checked, counted once.
      assert.equal((await unwindTotal(env)) - before, DEMO_SAMPLES * DEMO_STRATEGIES);
      assert.equal(Number((await traceStore(env.cfg, env.redis, env.keys).summary('host', POISON)).samples), DEMO_SAMPLES);
      assert.equal(await dl.count(), 0);
      text = await scrape(env);
      assert.equal(metricSum(text, 'stacksanity_dead_letter_batches '), 0);
      assert.equal(metricSum(text, 'stacksanity_batches_dead_lettered_total{reason="stalled"}'), 1, 'a counter: the park stays counted');

      // Replaying it again: no longer parked.
      const again = capture();
      assert.equal(await runReplay(['--job', id], again.io, { STACKSANITY_PREFIX: env.prefix, REDIS_URL: SHARED_REDIS }), 1);
      assert.match(again.err(), new RegExp(`no parked batch with job id '${id}'`));
      const all = capture();
      assert.equal(await runReplay(['--all'], all.io, { STACKSANITY_PREFIX: env.prefix, REDIS_URL: SHARED_REDIS }), 0);
      assert.match(all.out(), /no parked batches: nothing to replay/);
    } finally {
      await fixed.close();
    }
  });

  test('a batch that fails for good is parked as unrecoverable; without its bytes replay refuses it', async () => {
    const env = e!;
    const id = 'b-bytes-gone-0000';
    const data: BatchJob = { v: 2, format: 'text', gzip: false, uploader: 'test-host', source: 'upload', receivedAt: Date.now(), accepted: 7, skip: [] };
    // A job whose bytes are not there (expired before a worker took it): no retry brings them back.
    await env.api.queue.add(JOB_NAME, data, { jobId: id });
    const w = new CheckerWorker(env.cfg);
    await w.start();
    try {
      const dl = new DeadLetters(env.redis, env.keys, 60);
      const p = await waitFor('the batch in the dead-letter list', () => dl.get(id));
      assert.equal(p.reason, 'unrecoverable');
      assert.match(p.detail, /the bytes of batch b-bytes-gone-0000 are gone/);
      assert.equal(p.bytes, 0);
      assert.equal(p.samples, 7);
      assert.equal(p.deaths, 0);
      assert.equal(p.failures, 1, 'failed once, for good');
      assert.equal(p.starts, 1);
      assert.equal(metricSum(await scrape(env), 'stacksanity_batches_dead_lettered_total{reason="unrecoverable"}'), 1);
      const r = capture();
      assert.equal(await runReplay(['--job', id], r.io, { STACKSANITY_PREFIX: env.prefix, REDIS_URL: SHARED_REDIS }), 1);
      assert.match(r.err(), /its bytes are gone .* it stays listed/);
      assert.ok(await dl.get(id), 'still listed');
    } finally {
      await w.close();
    }
  });
});

test('replay: usage errors and Redis down are told clearly, and change nothing', async () => {
  const both = capture();
  assert.equal(await runReplay(['--job', 'x', '--all'], both.io, {}), 2);
  assert.match(both.err(), /--job and --all exclude each other/);
  const port = await freePort();
  const down = capture();
  assert.equal(await runReplay(['--list'], down.io, { REDIS_URL: `redis://127.0.0.1:${port}`, STACKSANITY_PREFIX: uniquePrefix('replay-down') }), 2);
  assert.match(down.err(), new RegExp(`cannot reach Redis at redis://127.0.0.1:${port}`));
  const empty = capture();
  assert.equal(await runReplay([], empty.io, { REDIS_URL: SHARED_REDIS, STACKSANITY_PREFIX: uniquePrefix('replay-empty') }), 0, empty.err());
  assert.equal(empty.out(), 'no parked batches\n');
});

test('a long batch gives the event loop turns while it is checked (where BullMQ renews its lock)', async () => {
  const d = decodeBatch(encodeBatch(DEMO_DUMP, 'text', 1 << 26).bytes);
  const copies = 100;
  const samples = Array.from({ length: copies }, () => d.samples).flat();
  const indices = samples.map((_, i) => i);
  const job: BatchJob = { v: 2, format: 'text', gzip: false, uploader: 't', source: 'upload', receivedAt: Date.now(), accepted: samples.length, skip: [] };
  const at = { profile: KernelProfile.fromKallsyms(DEMO_KALLSYMS.toString('utf8'), { buildId: DEMO_BUILD }), rev: 1 };
  // Timers run only when the loop gets a turn: count the ones that fire during the check.
  const turns = async (yieldEveryMs: number | undefined): Promise<number> => {
    let n = 0;
    let on = true;
    const tick = (): void => { if (on) { n++; setTimeout(tick, 0); } };
    setTimeout(tick, 0);
    const r = await checkBatch('y', job, samples, indices, { profile: async () => at, passingRatio: 0, ...(yieldEveryMs !== undefined ? { yieldEveryMs } : {}) });
    on = false;
    assert.equal(r.result.checked, DEMO_SAMPLES * copies);
    return n;
  };
  assert.equal(await turns(undefined), 0, 'without yielding, the loop waits for the whole batch');
  assert.ok((await turns(0)) > 10, 'yielding: timers (the lock renewal among them) run during the check');
});
