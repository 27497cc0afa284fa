// The queue's payload: the API stores each upload's samples in the binary batch form, and a worker
// must still check batches that an older API queued as the upload's own bytes, and leave batches
// of a newer form for an upgraded worker (an upgrade in either order loses nothing accepted);
// damaged bytes fail that job with the reason, not the worker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import type { ApiServer } from '../../services/api/server.ts';
import { CheckerWorker, createQueue, traceStore, type BatchQueue } from '../../services/pipeline/queue.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { JOB_NAME, type BatchJob } from '../../services/pipeline/job.ts';
import { isEncodedBatch } from '../../services/core/dump/batch-form.ts';
import {
  DEMO_SAMPLES, DEMO_STRATEGIES, SHARED_REDIS, TOKEN_HOST, auth, cleanup, demoVariant,
  putDemoSymbols, startTestApi, testConfig, uniquePrefix, waitFor,
} from './helpers.ts';

const prefix = uniquePrefix('form');
const cfg = testConfig(prefix);
const keys = new Keys(prefix);
let api: ApiServer;
let worker: CheckerWorker;
let redis: Redis;
let queue: BatchQueue;

before(async () => {
  api = await startTestApi(cfg);
  redis = new Redis(SHARED_REDIS);
  queue = createQueue(cfg, redis);
  await putDemoSymbols(api);
});

after(async () => {
  await worker?.close();
  await queue?.close();
  await api?.close();
  redis?.disconnect();
  await cleanup(prefix);
});

/** Queues bytes the way an API of the given job version would, bypassing the HTTP handler. */
async function enqueueRaw(id: string, body: Buffer, data: Partial<BatchJob>): Promise<void> {
  await redis.set(keys.body(id), body, 'EX', 3600);
  const job: BatchJob = { v: 1, format: 'text', gzip: false, uploader: TOKEN_HOST, source: 'upload', receivedAt: Date.now(), accepted: DEMO_SAMPLES, skip: [], ...data };
  await queue.add(JOB_NAME, job, { jobId: id });
}

async function hostSummary(host: string): Promise<Record<string, string>> {
  return waitFor(`the summary of ${host}`, async () => {
    const h = await traceStore(cfg, redis, keys).summary('host', host);
    return Number(h.samples ?? 0) === DEMO_SAMPLES ? h : undefined;
  });
}

test('an upload is queued in the binary form, and a batch an older API queued as gzip text gets the same verdicts', async () => {
  // No worker runs yet, so nothing can take (and delete) the bytes before we look at them.
  const r = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant('form-new') });
  assert.equal(r.statusCode, 202, r.body);
  const jobId = (r.json() as { job: string }).job;
  const stored = await redis.getBuffer(keys.body(jobId));
  assert.ok(stored && isEncodedBatch(stored), 'the queued bytes are the binary batch form');
  worker = new CheckerWorker(cfg);
  await worker.start();
  const fresh = await hostSummary('form-new');

  await enqueueRaw('b-legacy-gzip', gzipSync(demoVariant('form-old')), { v: 1, gzip: true, format: 'text' });
  const legacy = await hostSummary('form-old');
  // Same samples, two payload forms: every per-strategy verdict count must agree.
  assert.deepEqual(legacy, fresh);
  let unwinds = 0;
  for (const [k, v] of Object.entries(fresh)) if (/^[a-z_]+:[a-z_]+$/.test(k)) unwinds += Number(v);
  assert.equal(unwinds, DEMO_SAMPLES * DEMO_STRATEGIES, 'one verdict per sample and strategy');
});

test('a batch in a newer binary form waits for an upgraded worker; damaged bytes fail that job with the reason; the worker goes on', async () => {
  // An API upgraded before the workers: not damage, and accepted, so it must not be lost.
  const newer = Buffer.from([0x89, 0x53, 0x53, 0x42, 0x7f, 0, 0, 0, 0, 0, 0, 0]);
  await enqueueRaw('b-newer-form', newer, { v: 2 });
  const delayed = await waitFor('the job to be put back', async () => ((await queue.getJobState('b-newer-form')) === 'delayed' ? queue.getJob('b-newer-form') : undefined));
  assert.equal(delayed.attemptsMade, 0, 'waiting for a worker that reads it uses up no attempt');
  assert.ok(await redis.exists(keys.body('b-newer-form')), 'its bytes are kept');

  // This version's magic and version byte, then a header that claims more records than there are.
  const damaged = Buffer.from([0x89, 0x53, 0x53, 0x42, 0x01, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 2, 3]);
  await enqueueRaw('b-damaged-form', damaged, { v: 2 });
  const failed = await waitFor('the damaged job to fail', async () => {
    // State first: a job read before its failure was recorded would have no failedReason.
    if ((await queue.getJobState('b-damaged-form')) !== 'failed') return undefined;
    return queue.getJob('b-damaged-form');
  });
  assert.match(failed.failedReason, /batch b-damaged-form: .*batch\.count.*65535 samples/);
  assert.equal(failed.attemptsMade, 1, 'not retried: the bytes will not become readable');

  const r = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant('form-after') });
  assert.equal(r.statusCode, 202, r.body);
  await hostSummary('form-after');
});
