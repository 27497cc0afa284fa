// The trace store's bounds and bookkeeping on the real Redis: count and age limits, idempotent
// commits, the host-label cap, and metric rendering of the committed totals.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { Keys } from '../../services/pipeline/keys.ts';
import { FOLD_EVERY, TraceStore, decodeTraceBody, encodeTraceBody, type TraceRecord } from '../../services/pipeline/trace-store.ts';
import { BatchTally, renderSeries, strategyIndex, verdictIndex } from '../../services/pipeline/metrics.ts';
import { runScript } from '../../services/pipeline/redis.ts';
import { SHARED_REDIS, cleanup, uniquePrefix } from './helpers.ts';

const prefix = uniquePrefix('store');
const keys = new Keys(prefix);
const redis = new Redis(SHARED_REDIS);
after(async () => {
  redis.disconnect();
  await cleanup(prefix);
});

/** Not valid UTF-8, with NULs: the store must keep a body's bytes, not a string of them. */
const RECORD = Uint8Array.from([0x00, 0xff, 0xfe, 0x80, 0x7b, 0x00, 0xc3, 0x28, 0x0a, 0x01]);

function trace(id: string, ms: number, host = 'h1'): TraceRecord {
  return {
    id, score: ms * 1000, host, kernel: 'k1', status: 'failing', strategies: ['section'], reasons: ['bad_frame_pointer'],
    body: encodeTraceBody({ job: 'j', index: 3, receivedAt: ms, uploader: 'u', source: 'ci', rev: 2 }, RECORD),
  };
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

  const before = await store.metricTotals();
  assert.equal(await store.commit(batch('j2', [trace('again', now)])), false);
  assert.deepEqual(await store.metricTotals(), before);
  assert.equal(await redis.hexists(keys.traces, 'again'), 0);
  assert.equal(Number((await store.summary('host', 'h1')).samples), 4);

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

test('a trace body is stored byte for byte and read back with its meta', async () => {
  const store = new TraceStore(redis, keys, { traceMax: 50, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const now = Date.now();
  assert.equal(await store.commit(batch('bin', [trace('bin-3', now, 'h-bin')])), true);
  const got = await store.get('bin-3');
  assert.ok(got);
  assert.deepEqual(got.meta, { id: 'bin-3', score: now * 1000, host: 'h-bin', kernel: 'k1', status: 'failing', strategies: ['section'], reasons: ['bad_frame_pointer'] });
  const body = decodeTraceBody(got.body);
  assert.equal(body.kind, 'record');
  if (body.kind !== 'record') return;
  assert.deepEqual(body.header, { job: 'j', index: 3, receivedAt: now, uploader: 'u', source: 'ci', rev: 2 });
  assert.deepEqual([...body.record], [...RECORD]);
  assert.equal(await store.get('no-such-trace'), null);
  // A body written before bodies were binary: the detail's JSON itself.
  assert.deepEqual(decodeTraceBody(Buffer.from('{"id":"x"}')), { kind: 'json', json: '{"id":"x"}' });
  assert.throws(() => decodeTraceBody(Buffer.from([0x02, 0, 0, 0, 0])), /unknown form/);
});

test('host label: the first hosts up to the cap get their own value, the rest share one', async () => {
  const store = new TraceStore(redis, keys, { traceMax: 5, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const allowed = [];
  for (const h of ['a', 'b', 'c', 'a', 'd']) allowed.push(await store.hostLabelAllowed(h, 2));
  assert.deepEqual(allowed, [true, true, false, true, false]);
});

test('names outside plain ASCII reach Redis as their UTF-8 bytes; a lone surrogate does not sink the commit', async () => {
  const store = new TraceStore(redis, keys, { traceMax: 50, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const now = Date.now();
  // A JSON upload may name a host with any string, "\ud800" included; UTF-8 has no such character,
  // so it is stored as the replacement character U+FFFD, as any Redis client writes it.
  const hosts = ['höst-ü', 'tab\there', 'lone\ud800surrogate'];
  for (const [i, host] of hosts.entries()) {
    const w = batch(`utf-${i}`, [trace(`utf-${i}`, now + i, host)]);
    w.hostSummaries = new Map([[host, new Map([['samples', 2], ['failing', 1]])]]);
    assert.equal(await store.commit(w), true, host);
  }
  assert.equal((await store.summary('host', 'höst-ü')).samples, '2');
  assert.equal((await store.summary('host', 'tab\there')).failing, '1');
  assert.equal((await store.summary('host', 'lone\ufffdsurrogate')).samples, '2');
  assert.equal((await store.list({ host: 'höst-ü', limit: 5 })).items[0]?.id, 'utf-0');
  // Large scores must stay exact (Lua would print a number like this with an exponent).
  assert.equal(await redis.zscore(keys.index('all'), 'utf-2'), String((now + 2) * 1000));
});

test('a batch of many traces is stored whole (the script splits long commands)', async () => {
  const p = uniquePrefix('store-many');
  const k = new Keys(p);
  const store = new TraceStore(redis, k, { traceMax: 5000, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const now = Date.now();
  // 700 traces: 1,400 field/value pairs for the body hash, more than one 512-value chunk.
  const traces = Array.from({ length: 700 }, (_, i) => trace(`many-${i}`, now + i));
  try {
    assert.equal(await store.commit(batch('many', traces)), true);
    assert.equal(await redis.hlen(k.traces), 700);
    assert.equal(await redis.hlen(k.traceMeta), 700);
    assert.equal(await redis.zcard(k.index('all')), 700);
    assert.equal(await redis.zcard(k.index('host', 'h1')), 700);
    assert.equal((await store.get('many-699'))?.meta.id, 'many-699');
  } finally {
    await cleanup(p);
  }
});

test('scripts run by SHA1; a script Redis does not hold yet is sent once, then found by its hash', async () => {
  // A body no one has run: Redis answers the first EVALSHA with NOSCRIPT, as after a restart.
  const body = `return ARGV[1] .. ':' .. KEYS[1] -- ${prefix} ${Math.random()}`;
  const sha = createHash('sha1').update(body).digest('hex');
  assert.deepEqual(await redis.script('EXISTS', sha), [0]);
  assert.equal(await runScript(redis, body, [`${prefix}:k`], ['a']), `a:${prefix}:k`);
  assert.deepEqual(await redis.script('EXISTS', sha), [1], 'the fallback loaded the body');
  assert.equal(await runScript(redis, body, [`${prefix}:k`], ['b']), `b:${prefix}:k`);
  // Errors other than NOSCRIPT are the script's own and reach the caller.
  await assert.rejects(runScript(redis, `return redis.call('NO_SUCH_COMMAND') -- ${Math.random()}`, [], []), /Unknown Redis command|unknown command/i);
});

test('counters are applied in folds: totals are exact at every read, each batch counted once, the pending list bounded', async () => {
  const p = uniquePrefix('store-fold');
  const k = new Keys(p);
  const store = new TraceStore(redis, k, { traceMax: 50, traceMaxAgeSeconds: 3600, idempotencySeconds: 600 });
  const write = (job: string, i: number): Parameters<TraceStore['commit']>[0] => ({
    jobId: job,
    metrics: new Map([['m_total{a="x"}', i + 1], ['m_seconds_sum', 0.25]]),
    traces: [],
    hostSummaries: new Map([[`h${i % 3}`, new Map([['samples', 10], ['failing', i % 2]])]]),
    kernelSummaries: new Map([['k1', new Map([['samples', 10]])]]),
  });
  try {
    let expected = 0;
    for (let i = 0; i < 2 * FOLD_EVERY + 5; i++) {
      assert.equal(await store.commit(write(`fold-${i}`, i)), true);
      expected += i + 1;
      assert.ok(await redis.llen(k.pendingCounters) < FOLD_EVERY, 'the commit that fills the list folds it');
      // A retry of a committed batch adds nothing, folded or not.
      if (i % 7 === 0) assert.equal(await store.commit(write(`fold-${i}`, i)), false);
      if (i % 5 === 0) {
        const totals = await store.metricTotals();
        assert.equal(Number(totals['m_total{a="x"}']), expected, `after batch ${i}`);
        assert.equal(await redis.llen(k.pendingCounters), 0, 'a read folds everything pending');
      }
    }
    const n = 2 * FOLD_EVERY + 5;
    const totals = await store.metricTotals();
    assert.equal(Number(totals['m_total{a="x"}']), (n * (n + 1)) / 2);
    assert.ok(Math.abs(Number(totals.m_seconds_sum) - 0.25 * n) < 1e-9);
    assert.equal(Number((await store.summary('kernel', 'k1')).samples), 10 * n);
    const hosts = await Promise.all([0, 1, 2].map((h) => store.summary('host', `h${h}`)));
    assert.equal(hosts.reduce((a, h) => a + Number(h.samples), 0), 10 * n);
    assert.equal(Number(hosts[1]!.failing), Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 === 1 && i % 2 === 1).length);
    const ttl = await redis.ttl(k.summary('host', 'h0'));
    assert.ok(ttl > 0 && ttl <= 3600, `summaries expire with the traces (ttl ${ttl})`);
  } finally {
    await cleanup(p);
  }
});
