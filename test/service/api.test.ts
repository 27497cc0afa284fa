// The API against the real Redis, with a checker worker in this process: an upload reaches
// verdicts in the trace store, /v1/summary and /metrics; retries are not counted twice; every
// class of bad input gets a 4xx that says what and where.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { Writable } from 'node:stream';
import type { ApiServer } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { formatNdjson, formatJsonDump } from '../../services/core/dump/json.ts';
import { parseTextDump } from '../../services/core/dump/text.ts';
import {
  DEMO_BUILD, DEMO_DUMP, DEMO_SAMPLES, DEMO_STRATEGIES, TOKEN, auth, cleanup, demoVariant,
  metricSum, putDemoSymbols, startTestApi, testConfig, uniquePrefix, waitFor,
} from './helpers.ts';

const prefix = uniquePrefix('api');
const cfg = { ...testConfig(prefix, { STACKSANITY_MAX_BODY: String(256 * 1024), STACKSANITY_RATE_LIMIT: '1000' }), combinedMetrics: true };
let api: ApiServer;
let worker: CheckerWorker;

before(async () => {
  api = await startTestApi(cfg);
  worker = new CheckerWorker(cfg);
  await worker.start();
  await putDemoSymbols(api);
});

after(async () => {
  await worker?.close();
  await api?.close();
  await cleanup(prefix);
});

async function upload(body: Buffer | string, type = 'text/plain', headers: Record<string, string> = {}, query = ''): Promise<{ status: number; body: Record<string, unknown>; headers: Record<string, unknown> }> {
  const r = await api.app.inject({ method: 'POST', url: `/v1/samples${query}`, headers: { ...auth(), 'content-type': type, ...headers }, payload: body });
  return { status: r.statusCode, body: JSON.parse(r.body) as Record<string, unknown>, headers: r.headers };
}

async function completed(job: string): Promise<Record<string, unknown>> {
  return waitFor(`job ${job}`, async () => {
    const r = JSON.parse((await api.app.inject({ url: `/v1/jobs/${job}` })).body) as Record<string, unknown>;
    return r.state === 'completed' ? r : undefined;
  });
}

async function get(url: string): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
  const r = await api.app.inject({ url });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.body) as Record<string, unknown>; } catch { /* text */ }
  return { status: r.statusCode, json, text: r.body };
}

test('an upload reaches verdicts in the trace store, the summary and /metrics; a retried upload is counted once', async () => {
  const body = demoVariant('host-a');
  const first = await upload(body, 'text/plain', {}, '?source=ci');
  assert.equal(first.status, 202, JSON.stringify(first.body));
  assert.equal(first.body.accepted, DEMO_SAMPLES);
  assert.equal(first.body.rejected, 0);
  assert.equal(first.body.duplicate, false);
  const job = await completed(first.body.job as string);
  const result = job.result as Record<string, number | boolean>;
  assert.equal(result.checked, DEMO_SAMPLES);
  assert.equal(result.counted, true);
  assert.ok((result.failing as number) > 0, 'the demo has corrupted samples');

  // The same bytes again (a client retry): same job, not queued, not counted.
  const again = await upload(body, 'text/plain', {}, '?source=ci');
  assert.equal(again.status, 202);
  assert.equal(again.body.job, first.body.job);
  assert.equal(again.body.duplicate, true);

  const list = await get('/v1/traces?host=host-a&status=failing');
  const items = list.json.items as Record<string, unknown>[];
  assert.equal(items.length, result.failing);
  const detail = await get(items[0]!.url as string);
  assert.equal(detail.status, 200);
  const t = detail.json;
  assert.equal(t.host, 'host-a');
  assert.equal(t.kernel, DEMO_BUILD);
  const sample = t.sample as Record<string, unknown>;
  assert.ok((sample.regs as Record<string, string>).ip, 'registers are in the trace');
  assert.ok((sample.stacks as unknown[]).length > 0, 'stack windows are in the trace');
  const results = t.results as Record<string, unknown>[];
  assert.deepEqual(results.map((r) => r.strategy).sort(), ['encoded_fp', 'fp', 'section']);
  for (const r of results) {
    assert.match(r.kernel_text as string, /Call Trace:/);
    assert.ok(Array.isArray((r.unwind as Record<string, unknown>).frames));
    assert.equal(typeof r.verdict, 'string');
  }
  // The detail is rendered on read; it must name the trace the list did and agree with its verdicts.
  assert.equal(t.id, items[0]!.id);
  assert.equal(t.job, first.body.job);
  assert.equal(t.status, 'failing');
  const good = new Set(['exact', 'tolerated', 'consistent', 'not_applicable']);
  const flagged = results.filter((r) => !good.has(r.verdict as string) || r.false_reliable === true).map((r) => r.strategy);
  assert.deepEqual(flagged, items[0]!.strategies, 'the strategies the list shows are those failing in the detail');
  assert.equal((t.recheck as Record<string, unknown> | undefined)?.verdicts_changed ?? false, false);
  const page = await get(`/traces/${items[0]!.id as string}`);
  assert.match(page.text, /Call Trace:/);
  assert.match((await get('/')).text, new RegExp(items[0]!.id as string));

  const summary = (await get('/v1/summary')).json;
  assert.equal(summary.samples, DEMO_SAMPLES);
  const host = (await get('/v1/summary?host=host-a')).json;
  assert.equal(host.samples, DEMO_SAMPLES);
  assert.equal(host.failing, result.failing);

  const metrics = (await get('/metrics')).text;
  assert.equal(metricSum(metrics, 'stacksanity_unwinds_total{'), DEMO_SAMPLES * DEMO_STRATEGIES);
  assert.equal(metricSum(metrics, 'stacksanity_samples_received_total{source="ci"}'), DEMO_SAMPLES);
  assert.equal(metricSum(metrics, 'stacksanity_unwind_depth_frames_count{'), DEMO_SAMPLES * DEMO_STRATEGIES);
  assert.equal(metricSum(metrics, 'stacksanity_check_duration_seconds_count'), DEMO_SAMPLES);
  assert.ok(metricSum(metrics, 'stacksanity_unwind_failures_total{') > 0);
  assert.match(metrics, /stacksanity_queue_batches\{queue="samples",state="completed"\} 1/);
  // The worker's own /metrics-to-be carries the same series for its process.
  assert.match(worker.totals.render(), /stacksanity_unwinds_total\{strategy="section",verdict="exact"\}/);
});

test('JSON, NDJSON and gzip uploads are accepted; an Idempotency-Key makes a retry the same job', async () => {
  const samples = parseTextDump(demoVariant('host-json').toString()).samples;
  const json = await upload(formatJsonDump(samples), 'application/json');
  assert.equal(json.status, 202, JSON.stringify(json.body));
  assert.equal(json.body.accepted, DEMO_SAMPLES);
  const nd = await upload(formatNdjson(samples.slice(0, 5).map((s) => ({ ...s, host: 'host-nd' }))), 'application/x-ndjson');
  assert.equal(nd.status, 202, JSON.stringify(nd.body));
  assert.equal(nd.body.accepted, 5);
  const gz = await upload(gzipSync(demoVariant('host-gz')), 'application/gzip', { 'idempotency-key': 'upload-42' });
  assert.equal(gz.status, 202, JSON.stringify(gz.body));
  const gz2 = await upload(gzipSync(demoVariant('host-gz')), 'application/octet-stream', { 'idempotency-key': 'upload-42' });
  assert.equal(gz2.body.job, gz.body.job);
  assert.equal(gz2.body.duplicate, true);
  for (const j of [json, nd, gz]) await completed(j.body.job as string);
  const host = (await get('/v1/summary?host=host-gz')).json;
  assert.equal(host.samples, DEMO_SAMPLES);
});

test('bad input: each class gets a 4xx with a message', async () => {
  const noToken = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { 'content-type': 'text/plain' }, payload: DEMO_DUMP });
  assert.equal(noToken.statusCode, 401);
  assert.match(JSON.parse(noToken.body).message, /Bearer/);
  assert.match(String(noToken.headers['www-authenticate']), /Bearer/);

  const wrong = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth('wrong-token-0123456789'), 'content-type': 'text/plain' }, payload: DEMO_DUMP });
  assert.equal(wrong.statusCode, 401);
  assert.match(JSON.parse(wrong.body).message, /not valid/);

  const type = await upload(DEMO_DUMP, 'image/png');
  assert.equal(type.status, 415);
  assert.match(type.body.message as string, /image\/png/);

  const big = await upload(Buffer.alloc(300 * 1024, 0x41));
  assert.equal(big.status, 413);
  assert.match(big.body.message as string, /limit/);

  const bomb = await upload(gzipSync(Buffer.alloc(cfg.maxSamplesDecoded + 1024, 0x20)), 'application/gzip');
  assert.equal(bomb.status, 413, 'a gzip that inflates past the limit');

  const notGzip = await upload(Buffer.from([0x1f, 0x8b, 1, 2, 3]), 'application/gzip');
  assert.equal(notGzip.status, 400);
  assert.match(notGzip.body.message as string, /gzip/);

  const empty = await upload(Buffer.alloc(0));
  assert.equal(empty.status, 400);

  // A malformed dump: the first sample's .regs line is broken; the error names its line.
  const lines = DEMO_DUMP.toString().split('\n');
  const regsLine = lines.findIndex((l) => l.includes('.regs')) + 1;
  lines[regsLine - 1] = '\t.regs ip=zzzz';
  const malformed = await upload(lines.join('\n'));
  assert.equal(malformed.status, 202, 'the other samples survive');
  assert.equal(malformed.body.accepted, DEMO_SAMPLES - 1);
  const errors = malformed.body.errors as Record<string, unknown>[];
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.index, 0);
  assert.equal(errors[0]!.line, regsLine);
  assert.match(errors[0]!.message as string, new RegExp(`:${regsLine}:`));

  const unknown = await upload(DEMO_DUMP.toString().replace(/\.kernel demo-encoded-fp/g, '.kernel no-such-build'));
  assert.equal(unknown.status, 400);
  const ue = unknown.body.errors as Record<string, unknown>[];
  assert.equal(ue.length, DEMO_SAMPLES);
  assert.equal(ue[3]!.index, 3);
  assert.equal(ue[3]!.reason, 'unknown_build_id');
  assert.match(ue[3]!.message as string, /no-such-build.*symbols/);

  const garbage = await upload('{"format":"stacksanity-dump","version":1,"samples":"nope"}', 'application/json');
  assert.equal(garbage.status, 400);
  assert.equal((garbage.body.errors as unknown[]).length, 1);

  const badQuery = await upload(DEMO_DUMP, 'text/plain', {}, '?source=martians');
  assert.equal(badQuery.status, 400);
  assert.match(badQuery.body.message as string, /source/);

  const ok = await api.app.inject({ method: 'PUT', url: '/v1/kernels/other-build/profile', headers: auth(), payload: { buildId: 'other-build', layouts: ['section'], framePointers: true, stubs: { asm_exc_page_fault: { entry: 'page_fault', offset: 8 } } } });
  assert.equal(ok.statusCode, 200, ok.body);
  const profile = await api.app.inject({ method: 'PUT', url: `/v1/kernels/${DEMO_BUILD}x/profile`, headers: auth(), payload: { layouts: ['sideways'] } });
  assert.equal(profile.statusCode, 400);
  assert.match(JSON.parse(profile.body).message, /layouts/);

  const restricted = await api.app.inject({ method: 'POST', url: '/v1/kernels/restricted/symbols', headers: { ...auth(), 'content-type': 'text/plain' }, payload: '0000000000000000 T _stext\n0000000000000000 T start_kernel\n' });
  assert.equal(restricted.statusCode, 400);
  assert.match(JSON.parse(restricted.body).message, /kptr_restrict|restricted|zero/i);

  const metrics = (await get('/metrics')).text;
  assert.ok(metricSum(metrics, 'stacksanity_samples_rejected_total{reason="unknown_build_id"}') >= DEMO_SAMPLES);
  assert.ok(metricSum(metrics, 'stacksanity_samples_rejected_total{reason="bad_hex"}') + metricSum(metrics, 'stacksanity_samples_rejected_total{reason="bad_field"}') >= 1);
  assert.ok(metricSum(metrics, 'stacksanity_samples_rejected_total{reason="oversized"}') >= 2);
});

test('trace list: filters and cursor pagination walk every trace once, newest first', async () => {
  const first = await upload(demoVariant('host-page'));
  await completed(first.body.job as string);
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const url: string = `/v1/traces?host=host-page&limit=1${cursor ? `&cursor=${cursor}` : ''}`;
    const r = await get(url);
    assert.equal(r.status, 200, r.text);
    for (const i of r.json.items as Record<string, unknown>[]) seen.push(i.id as string);
    cursor = r.json.next as string | null;
    pages++;
  } while (cursor && pages < 50);
  const all = (await get('/v1/traces?host=host-page&limit=100')).json.items as Record<string, unknown>[];
  assert.deepEqual(seen, all.map((i) => i.id));
  assert.equal(new Set(seen).size, seen.length);
  const byReason = (await get('/v1/traces?reason=bad_frame_pointer&host=host-page')).json.items as Record<string, unknown>[];
  assert.ok(byReason.length > 0 && byReason.length < all.length);
  for (const i of byReason) assert.ok((i.reasons as string[]).includes('bad_frame_pointer'));
  const future = (await get(`/v1/traces?host=host-page&since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).json.items as unknown[];
  assert.equal(future.length, 0);
  assert.equal((await get('/v1/traces?since=yesterday-ish')).status, 400);
  assert.equal((await get('/v1/traces?cursor=!!!')).status, 400);
  assert.equal((await get('/v1/traces/nope')).status, 404);
  assert.equal((await get('/v1/jobs/b-nope')).status, 404);
});

test('OpenAPI at /docs comes from the validating schemas; health and readiness', async () => {
  const spec = (await get('/docs/json')).json as { paths: Record<string, Record<string, { parameters?: { name: string; schema: { enum?: string[] } }[] }>> };
  assert.ok(spec.paths['/v1/samples']);
  const source = spec.paths['/v1/samples']!.post!.parameters!.find((p) => p.name === 'source');
  assert.ok(source?.schema.enum?.includes('emulator'));
  assert.ok(spec.paths['/v1/traces']!.get!.parameters!.some((p) => p.name === 'cursor'));
  assert.equal((await get('/healthz')).status, 200);
  assert.equal((await get('/readyz')).status, 200);
  assert.equal((await get('/v1/kernels')).json.kernels instanceof Array, true);
  assert.equal(((await get(`/v1/kernels/${DEMO_BUILD}`)).json.symbols as number) > 0, true);
});

test('uploads are rate limited per token', async () => {
  const small = { ...cfg, rateLimitPerMinute: 2 };
  const a = await startTestApi(small);
  try {
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: 'x' });
      codes.push(r.statusCode);
    }
    assert.deepEqual(codes.slice(0, 2).map((c) => c !== 429), [true, true]);
    assert.equal(codes[2], 429);
    // Another token has its own budget.
    const other = await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth('another-token-0123456789'), 'content-type': 'text/plain' }, payload: 'x' });
    assert.equal(other.statusCode, 401);
  } finally {
    await a.close();
  }
});

test('tokens: parsed from the file or env form, compared in constant time, never in messages', () => {
  const t = TokenSet.parse('# hosts\nweb-1:aaaaaaaaaaaaaaaaaaaa\nweb-2 bbbbbbbbbbbbbbbbbbbb\n', 'tokens.txt');
  assert.equal(t.verify('aaaaaaaaaaaaaaaaaaaa'), 'web-1');
  assert.equal(t.verify('bbbbbbbbbbbbbbbbbbbb'), 'web-2');
  assert.equal(t.verify('aaaaaaaaaaaaaaaaaaab'), undefined);
  assert.equal(t.verify(''), undefined);
  assert.equal(TokenSet.fromEnv({ STACKSANITY_TOKENS: 'x:cccccccccccccccccccc,y:dddddddddddddddddddd' }).size, 2);
  assert.throws(() => TokenSet.parse('short:abc', 'env'), (e: Error) => /shorter than 16/.test(e.message) && !e.message.includes('abc'));
  assert.equal(TokenSet.bearer('Bearer abc'), 'abc');
  assert.equal(TokenSet.bearer('Basic abc'), undefined);
});

test('no token reaches the logs, even at trace level', async () => {
  let logged = '';
  const sink = new Writable({ write(chunk, _enc, cb) { logged += String(chunk); cb(); } });
  const a = await startTestApi(cfg, { logLevel: 'trace', logStream: sink });
  try {
    await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: 'garbage' });
    await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth('wrong-token-0123456789'), 'content-type': 'text/plain' }, payload: 'x' });
  } finally {
    await a.close();
  }
  assert.ok(logged.includes('/v1/samples'), 'requests were logged');
  assert.ok(!logged.includes(TOKEN) && !logged.includes('wrong-token-0123456789'));
});

test('read endpoints need a token when STACKSANITY_READ_AUTH is on; metrics and probes stay open', async () => {
  const a = await startTestApi({ ...cfg, readAuth: true });
  try {
    assert.equal((await a.app.inject({ url: '/v1/summary' })).statusCode, 401);
    assert.equal((await a.app.inject({ url: '/v1/traces' })).statusCode, 401);
    assert.equal((await a.app.inject({ url: '/' })).statusCode, 401);
    assert.equal((await a.app.inject({ url: '/v1/summary', headers: auth() })).statusCode, 200);
    for (const url of ['/metrics', '/healthz', '/readyz']) assert.equal((await a.app.inject({ url })).statusCode, 200, url);
  } finally {
    await a.close();
  }
});

test('queue gauges: jobs by state and the age of the oldest waiting batch', async () => {
  const p = uniquePrefix('gauge');
  const a = await startTestApi({ ...cfg, prefix: p });
  try {
    await putDemoSymbols(a);
    for (const h of ['g1', 'g2']) {
      const r = await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant(h) });
      assert.equal(r.statusCode, 202);
      await new Promise((res) => setTimeout(res, 600));
    }
    const text = (await a.app.inject({ url: '/metrics' })).body;
    assert.match(text, /stacksanity_queue_batches\{queue="samples",state="waiting"\} 2/);
    const age = Number(/stacksanity_queue_oldest_waiting_seconds\{queue="samples"\} ([\d.]+)/.exec(text)?.[1]);
    assert.ok(age >= 1 && age < 60, `oldest waiting age ${age}`);
  } finally {
    await a.close();
    await cleanup(p);
  }
});
