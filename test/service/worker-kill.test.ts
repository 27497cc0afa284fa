// A checker worker process killed mid-batch: the batch is retried by another worker (BullMQ's
// stall recovery) and counted exactly once — also when the kill comes after the results were
// committed but before the job was acknowledged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { ApiServer } from '../../services/api/server.ts';
import { CheckerWorker, traceStore } from '../../services/pipeline/queue.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import {
  DEMO_SAMPLES, DEMO_STRATEGIES, forkCheckerWorker, sigkill, SHARED_REDIS, auth, cleanup, demoVariant, putDemoSymbols,
  startTestApi, testConfig, uniquePrefix, waitFor,
} from './helpers.ts';

const prefix = uniquePrefix('kill');
// Shorter locks than the defaults (5 s / 2 s): the kills here need no realistic timing, only speed.
const env = { STACKSANITY_LOCK_MS: '2000', STACKSANITY_STALLED_MS: '1000' };
const cfg = testConfig(prefix, env);
const keys = new Keys(prefix);
let api: ApiServer;
let redis: Redis;

before(async () => {
  api = await startTestApi(cfg);
  redis = new Redis(SHARED_REDIS);
  await putDemoSymbols(api);
});

after(async () => {
  await api?.close();
  redis?.disconnect();
  await cleanup(prefix);
});


async function unwindTotal(): Promise<number> {
  const h = await traceStore(cfg, redis, keys).metricTotals();
  let n = 0;
  for (const [k, v] of Object.entries(h)) if (k.startsWith('stacksanity_unwinds_total{')) n += Number(v);
  return n;
}

async function killMidBatch(fault: string, host: string): Promise<{ job: Record<string, unknown>; before: number; traces: number }> {
  const before = await unwindTotal();
  const tracesBefore = await redis.hlen(keys.traces);
  const child = await forkCheckerWorker(prefix, { ...env, STACKSANITY_FAULT: fault });
  const up = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant(host) });
  assert.equal(up.statusCode, 202, up.body);
  const id = JSON.parse(up.body).job as string;
  await waitFor('the worker to take the batch', async () => (await (await api.queue.getJob(id))?.getState()) === 'active');
  if (fault.startsWith('after-commit')) await waitFor('the commit', async () => (await redis.exists(keys.done(id))) === 1);
  await sigkill(child);

  const rescuer = new CheckerWorker(cfg);
  await rescuer.start();
  try {
    const job = await waitFor('the retried batch to complete', async () => {
      // State first, then the job: read the other way round, the job's fields could predate the
      // completion that the state then reports (no return value yet).
      if ((await api.queue.getJobState(id)) !== 'completed') return undefined;
      const j = await api.queue.getJob(id);
      return j ? { result: j.returnvalue as unknown, stalled: j.stalledCounter } : undefined;
    }, 30_000);
    return { job, before, traces: (await redis.hlen(keys.traces)) - tracesBefore };
  } finally {
    await rescuer.close();
  }
}

test('killed before its commit: the batch is retried and counted once', async () => {
  const { job, before, traces } = await killMidBatch('before-commit:60000', 'kill-a');
  const result = job.result as Record<string, unknown>;
  assert.equal(result.counted, true);
  assert.equal(result.checked, DEMO_SAMPLES);
  assert.ok((job.stalled as number) >= 1, 'recovered by the stall check');
  assert.equal((await unwindTotal()) - before, DEMO_SAMPLES * DEMO_STRATEGIES);
  assert.equal(traces, result.traces);
});

test('killed after its commit, before the ack: the retry finds the marker and counts nothing again', async () => {
  const { job, before, traces } = await killMidBatch('after-commit:60000', 'kill-b');
  const result = job.result as Record<string, unknown>;
  assert.equal(result.counted, false);
  assert.equal((await unwindTotal()) - before, DEMO_SAMPLES * DEMO_STRATEGIES);
  assert.ok(traces > 0);
  const host = (await traceStore(cfg, redis, keys).summary('host', 'kill-b')).samples;
  assert.equal(Number(host), DEMO_SAMPLES);
});
