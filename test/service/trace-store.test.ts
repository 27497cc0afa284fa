// The trace store's bounds and bookkeeping on the real Redis: count and age limits, idempotent
// commits, the host-label cap, and metric rendering of the committed totals.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Keys } from '../../services/pipeline/keys.ts';
import { TraceStore, type TraceRecord } from '../../services/pipeline/trace-store.ts';
import { BatchTally, renderSeries, strategyIndex, verdictIndex } from '../../services/pipeline/metrics.ts';
import { SHARED_REDIS, cleanup, uniquePrefix } from './helpers.ts';

const prefix = uniquePrefix('store');
const keys = new Keys(prefix);
const redis = new Redis(SHARED_REDIS);
after(async () => {
  redis.disconnect();
  await cleanup(prefix);
});

function trace(id: string, ms: number, host = 'h1'): TraceRecord {
  return { id, score: ms * 1000, host, kernel: 'k1', status: 'failing', strategies: ['section'], reasons: ['bad_frame_pointer'], json: JSON.stringify({ id }) };
}

function batch(jobId: string, traces: TraceRecord[]): Parameters<TraceStore['commit']>[0] {
  const t = new BatchTally();
  t.unwind(strategyIndex('section'), verdictIndex('truncated'), 7);
  t.failure('section', 'bad_frame_pointer', 'irq', undefined);
  t.duration(0.00004);
  return { jobId, metrics: t.fields(), traces, hostSummaries: new Map([['h1', new Map([['samples', 1]])]]), kernelSummaries: new Map() };
}

test('count and age limits; a repeated commit changes nothing', async () => {
  const store = new TraceStore(redis, keys, { traceMax: 5, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const now = Date.now();
  assert.equal(await store.commit(batch('j1', [trace('old', now - 2 * 3600 * 1000)])), true);
  assert.equal(await redis.hexists(keys.traces, 'old'), 0, 'older than the age limit: trimmed');
  for (let b = 0; b < 3; b++) {
    assert.equal(await store.commit(batch(`j${b + 2}`, [0, 1, 2, 3].map((i) => trace(`t${b}-${i}`, now + b * 10 + i)))), true);
  }
  assert.equal(await redis.hlen(keys.traces), 5);
  assert.equal(await redis.hlen(keys.traceMeta), 5);
  assert.equal(await redis.zcard(keys.index('all')), 5);
  const page = await store.list({ limit: 10 });
  assert.deepEqual(page.items.map((i) => i.id), ['t2-3', 't2-2', 't2-1', 't2-0', 't1-3']);
  assert.equal(page.next, null);
  const byHost = await store.list({ host: 'h1', limit: 10 });
  assert.equal(byHost.items.length, 5, 'secondary index entries of evicted traces are skipped');

  const before = await redis.hgetall(keys.metrics);
  assert.equal(await store.commit(batch('j2', [trace('again', now)])), false);
  assert.deepEqual(await redis.hgetall(keys.metrics), before);
  assert.equal(await redis.hexists(keys.traces, 'again'), 0);
  assert.equal(Number(await redis.hget(keys.summary('host', 'h1'), 'samples')), 4);

  const text = renderSeries(Object.entries(before));
  assert.match(text, /# TYPE stacksanity_unwind_depth_frames histogram/);
  assert.match(text, /stacksanity_unwind_depth_frames_bucket\{strategy="section",le="6"\} 0/);
  assert.match(text, /stacksanity_unwind_depth_frames_bucket\{strategy="section",le="8"\} 4/);
  assert.match(text, /stacksanity_unwind_depth_frames_bucket\{strategy="section",le="\+Inf"\} 4/);
  assert.match(text, /stacksanity_unwind_failures_total\{strategy="section",reason="bad_frame_pointer",entry="irq"\} 4/);
  assert.match(text, /stacksanity_check_duration_seconds_bucket\{le="0.00005"\} 4/);
  // Bucket lines of a histogram come in increasing le order.
  const les = [...text.matchAll(/depth_frames_bucket\{strategy="section",le="([^"]+)"\}/g)].map((m) => (m[1] === '+Inf' ? Infinity : Number(m[1])));
  assert.deepEqual(les, [...les].sort((a, b) => a - b));
});

test('host label: the first hosts up to the cap get their own value, the rest share one', async () => {
  const store = new TraceStore(redis, keys, { traceMax: 5, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const allowed = [];
  for (const h of ['a', 'b', 'c', 'a', 'd']) allowed.push(await store.hostLabelAllowed(h, 2));
  assert.deepEqual(allowed, [true, true, false, true, false]);
});
