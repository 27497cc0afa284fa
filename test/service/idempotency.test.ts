// Idempotency at the edge, against the real Redis with a checker worker in this process: uploads
// of one job id sent at once are queued once and answered once with duplicate: false, the others
// get the winner's answer; a key reused for other bytes gets 409; the received metric counts what
// was checked; a failed enqueue leaves the id free for the client's retry and no bytes behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../services/api/app.ts';
import type { ApiServer } from '../../services/api/server.ts';
import { jobIdFor } from '../../services/pipeline/job.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { createApiMetrics } from '../../services/pipeline/metrics.ts';
import { CheckerWorker, createQueue, traceStore } from '../../services/pipeline/queue.ts';
import { connect, whenReady } from '../../services/pipeline/redis.ts';
import {
  DEMO_DUMP, DEMO_SAMPLES, SHARED_REDIS, TOKEN_HOST, auth, cleanup, demoVariant, metricSum, putDemoSymbols,
  startTestApi, testConfig, testTokens, uniquePrefix, waitFor,
} from './helpers.ts';

const prefix = uniquePrefix('idem');
const cfg = testConfig(prefix, { STACKSANITY_RATE_LIMIT: '100000' });
const keys = new Keys(prefix);
let api: ApiServer;
let worker: CheckerWorker;
let redis: Redis;

before(async () => {
  api = await startTestApi(cfg);
  worker = new CheckerWorker(cfg);
  await worker.start();
  redis = new Redis(SHARED_REDIS);
  await putDemoSymbols(api);
});

after(async () => {
  await worker?.close();
  await api?.close();
  redis?.disconnect();
  await cleanup(prefix);
});

interface Reply { status: number; body: Record<string, unknown> }

async function upload(app: FastifyInstance, body: Buffer, headers: Record<string, string> = {}, type = 'text/plain'): Promise<Reply> {
  const r = await app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': type, ...headers }, payload: body });
  return { status: r.statusCode, body: JSON.parse(r.body) as Record<string, unknown> };
}

async function received(): Promise<number> {
  return metricSum((await api.app.inject({ url: '/metrics' })).body, 'stacksanity_samples_received_total{');
}

async function checkedBy(job: string): Promise<number> {
  const r = await waitFor(`job ${job}`, async () => {
    const j = JSON.parse((await api.app.inject({ url: `/v1/jobs/${job}` })).body) as Record<string, unknown>;
    return j.state === 'completed' ? j : undefined;
  });
  return (r.result as { checked: number }).checked;
}

/** body: keys whose job is not in the queue: bytes nobody will check or delete. */
async function orphanBodies(): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}:body:*`, 'COUNT', 1000);
    cursor = next;
    for (const k of found) {
      const id = k.slice(k.lastIndexOf(':') + 1);
      if ((await api.queue.getJob(id)) === undefined) out.push(id);
    }
  } while (cursor !== '0');
  return out;
}

/** The demo dump with its first sample's registers broken: 11 usable samples, 1 rejected. */
function withOneBroken(tag: string): Buffer {
  const lines = demoVariant(tag).toString().split('\n');
  const i = lines.findIndex((l) => l.includes('.regs'));
  lines[i] = '\t.regs ip=zzzz';
  return Buffer.from(lines.join('\n'));
}

test('50 rounds of 8 identical uploads at once: one duplicate:false per round, the rest the winner\'s answer; received = checked', async () => {
  const before = await received();
  const winners: string[] = [];
  let expected = 0;
  for (let round = 0; round < 50; round++) {
    // Rounds vary the id's origin (key or bytes), the encoding, and whether a sample is rejected.
    const broken = round % 5 === 0;
    const raw = broken ? withOneBroken(`idem-${round}`) : demoVariant(`idem-${round}`);
    const gz = round % 3 === 1;
    const body = gz ? gzipSync(raw) : raw;
    const headers: Record<string, string> = round % 2 === 0 ? { 'idempotency-key': `round-${round}` } : {};
    const replies = await Promise.all(Array.from({ length: 8 }, () => upload(api.app, body, headers, gz ? 'application/gzip' : 'text/plain')));
    for (const r of replies) assert.equal(r.status, 202, JSON.stringify(r.body));
    const first = replies.filter((r) => r.body.duplicate === false);
    assert.equal(first.length, 1, `round ${round}: ${first.length} answers said duplicate: false`);
    const w = first[0]!.body;
    const accepted = broken ? DEMO_SAMPLES - 1 : DEMO_SAMPLES;
    assert.equal(w.accepted, accepted);
    assert.equal(w.rejected, broken ? 1 : 0);
    for (const r of replies) {
      assert.equal(r.body.job, w.job);
      assert.equal(r.body.accepted, w.accepted);
      assert.equal(r.body.rejected, w.rejected);
      assert.deepEqual(r.body.errors, w.errors, 'a duplicate lists the same rejected samples');
    }
    // Every duplicate was answered once the winner's job was in the queue: none has bytes without one.
    assert.deepEqual(await orphanBodies(), [], `round ${round}`);
    winners.push(w.job as string);
    expected += accepted;
  }
  assert.equal(new Set(winners).size, 50);
  let checked = 0;
  for (const j of winners) checked += await checkedBy(j);
  assert.equal(checked, expected, 'every winner\'s accepted samples were checked');
  assert.equal(await received() - before, expected, 'received counts each batch once');

  // A retry long after (the batch committed): still the winner's answer.
  const late = await upload(api.app, demoVariant('idem-3'));
  assert.equal(late.body.duplicate, true);
  assert.equal(late.body.job, winners[3]);
  assert.equal(await received() - before, expected);
});

test('one Idempotency-Key, 8 different bodies at once: the winner 202, every other 409; the winner\'s batch is the one checked', async () => {
  const before = await received();
  for (let round = 0; round < 10; round++) {
    const key = `conflict-${round}`;
    const bodies = Array.from({ length: 8 }, (_, j) => demoVariant(`conflict-${round}-${j}`));
    const replies = await Promise.all(bodies.map((b) => upload(api.app, b, { 'idempotency-key': key })));
    const won = replies.filter((r) => r.status === 202);
    const refused = replies.filter((r) => r.status === 409);
    assert.equal(won.length, 1, JSON.stringify(replies.map((r) => r.status)));
    assert.equal(refused.length, 7);
    assert.equal(won[0]!.body.duplicate, false);
    for (const r of refused) {
      assert.equal(r.body.error, 'idempotency_conflict');
      assert.match(r.body.message as string, new RegExp(`Idempotency-Key '${key}'.*different`));
    }
    const winner = bodies[replies.indexOf(won[0]!)]!;
    assert.equal(await checkedBy(won[0]!.body.job as string), DEMO_SAMPLES);
    // Later: the winner's bytes are a duplicate, any other bytes still a conflict.
    const again = await upload(api.app, winner, { 'idempotency-key': key });
    assert.equal(again.status, 202);
    assert.equal(again.body.duplicate, true);
    assert.equal(again.body.job, won[0]!.body.job);
    assert.equal((await upload(api.app, bodies[(replies.indexOf(won[0]!) + 1) % 8]!, { 'idempotency-key': key })).status, 409);
    // The winner's host has the traces; a refused body's host has none.
    const loser = replies.findIndex((r) => r.status === 409);
    const sum = JSON.parse((await api.app.inject({ url: `/v1/summary?host=conflict-${round}-${loser}` })).body) as { samples: number };
    assert.equal(sum.samples, 0);
  }
  assert.deepEqual(await orphanBodies(), []);
  assert.equal(await received() - before, 10 * DEMO_SAMPLES);
});

test('a failed enqueue frees the id: no claim, no bytes left, and the retry is queued and checked', async () => {
  // An API whose queue has its own connection, closed: queue.add fails after the claim succeeded
  // on the API's working connection, as it would when Redis drops between the two.
  const conn = connect(SHARED_REDIS, 'producer', 'idem-test-broken-queue');
  conn.on('error', () => undefined);
  await whenReady(conn);
  const brokenQueue = createQueue(cfg, conn);
  brokenQueue.on('error', () => undefined);
  await brokenQueue.waitUntilReady();
  conn.disconnect();
  const apiRedis = connect(SHARED_REDIS, 'producer', 'idem-test-api');
  await whenReady(apiRedis);
  const app = await buildApp({ cfg, redis: apiRedis, queue: brokenQueue, store: traceStore(cfg, apiRedis), tokens: testTokens(), metrics: createApiMetrics() });
  try {
    const body = demoVariant('idem-failed');
    const jobId = jobIdFor(TOKEN_HOST, body, 'failed-once');
    const before = await received();
    const r = await upload(app, body, { 'idempotency-key': 'failed-once' });
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(await redis.exists(keys.claim(jobId)), 0, 'the claim was released');
    assert.equal(await redis.exists(keys.body(jobId)), 0, 'the bytes were removed');
    assert.equal(await api.queue.getJob(jobId), undefined);

    const retry = await upload(api.app, body, { 'idempotency-key': 'failed-once' });
    assert.equal(retry.status, 202);
    assert.equal(retry.body.duplicate, false, 'the retry is the first upload to reach the queue');
    assert.equal(retry.body.job, jobId);
    assert.equal(await checkedBy(jobId), DEMO_SAMPLES);
    assert.equal(await received() - before, DEMO_SAMPLES);
  } finally {
    await app.close();
    await brokenQueue.close().catch(() => undefined);
    apiRedis.disconnect();
  }
});

test('a claim abandoned by a dead API (no job after the lease) is taken over by the next upload', async () => {
  const body = demoVariant('idem-abandoned');
  const jobId = jobIdFor(TOKEN_HOST, body, 'abandoned');
  // As an API that died between claim and queue.add leaves it: claimed long ago, nothing queued.
  await redis.set(keys.claim(jobId), `1000 ${JSON.stringify({ job: jobId, accepted: 3, rejected: 0, digest: 'someone-else', n: 'x' })}`, 'EX', 600);
  const r = await upload(api.app, body, { 'idempotency-key': 'abandoned' });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.duplicate, false);
  assert.equal(r.body.accepted, DEMO_SAMPLES);
  assert.equal(await checkedBy(jobId), DEMO_SAMPLES);
  // A fresh claim of another request is not taken over: that upload is in flight.
  const other = DEMO_DUMP;
  const otherId = jobIdFor(TOKEN_HOST, other, 'in-flight');
  const [sec] = await redis.time();
  await redis.set(keys.claim(otherId), `${Number(sec) * 1000} ${JSON.stringify({ job: otherId, accepted: 1, rejected: 0, digest: 'someone-else', n: 'y' })}`, 'EX', 600);
  assert.equal((await upload(api.app, other, { 'idempotency-key': 'in-flight' })).status, 409);
});
