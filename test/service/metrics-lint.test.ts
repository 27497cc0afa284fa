// /metrics as Prometheus's own linter reads it: a live API (combined view, as `npm start` runs it)
// and a checker worker's own endpoint, after real uploads were checked, piped to
// `promtool check metrics` (Debian package prometheus). Also what promtool does not check but the
// exposition format asks: each histogram's buckets in increasing le order ending at +Inf, then its
// _sum and _count, and no series twice. And counters read side by side count the same history:
// samples received = samples checked, once the queue has drained.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { ApiServer } from '../../services/api/server.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { DEMO_SAMPLES, auth, cleanup, demoVariant, metricSum, putDemoSymbols, startTestApi, testConfig, uniquePrefix, waitFor } from './helpers.ts';

const prefix = uniquePrefix('promlint');
const cfg = { ...testConfig(prefix, { STACKSANITY_RATE_LIMIT: '1000' }), combinedMetrics: true };
let api: ApiServer | undefined;
let worker: CheckerWorker | undefined;

const promtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' });
const hasPromtool = !promtool.error && promtool.status === 0;

before(async () => {
  const a: ApiServer = await startTestApi(cfg);
  api = a;
  worker = new CheckerWorker(cfg, { metricsPort: 0 });
  await worker.start();
  await putDemoSymbols(a);
  const jobs: string[] = [];
  for (const [i, source] of ['upload', 'ci', 'emulator'].entries()) {
    const r = await a.app.inject({ method: 'POST', url: `/v1/samples?source=${source}`, headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant(`lint-${i}`) });
    assert.equal(r.statusCode, 202, r.body);
    jobs.push((JSON.parse(r.body) as { job: string }).job);
  }
  // One refused sample too, so the rejected counter has a non-zero series.
  const bad = await a.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: 'not a dump\n' });
  assert.equal(bad.statusCode, 400, bad.body);
  for (const id of jobs) {
    await waitFor(`job ${id}`, async () => (JSON.parse((await a.app.inject({ url: `/v1/jobs/${id}` })).body) as { state: string }).state === 'completed');
  }
});

after(async () => {
  await worker?.close();
  await api?.close();
  await cleanup(prefix);
});

async function apiMetrics(): Promise<string> {
  const r = await api!.app.inject({ url: '/metrics' });
  assert.equal(r.statusCode, 200);
  return r.body;
}

async function workerMetrics(): Promise<string> {
  const r = await fetch(worker!.metricsAddress!);
  assert.equal(r.status, 200);
  return r.text();
}

function lint(text: string): { code: number | null; findings: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text });
  return { code: r.status, findings: `${r.stdout.toString()}${r.stderr.toString()}`.trim() };
}

/** The exposition format's order for histograms, checked from the text alone. */
function histogramOrderProblems(text: string): string[] {
  const problems: string[] = [];
  const histograms = new Set([...text.matchAll(/^# TYPE (\S+) histogram$/gm)].map((m) => m[1]!));
  const seen = new Set<string>();
  // Per histogram and label set (le aside): the le values in order of appearance, and what came after +Inf.
  const state = new Map<string, { les: number[]; closed: string[] }>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const key = line.slice(0, line.lastIndexOf(' '));
    if (seen.has(key)) problems.push(`series twice: ${key}`);
    seen.add(key);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*?)(_bucket|_sum|_count)?(?:\{(.*)\})?$/.exec(key);
    if (!m || !m[2] || !histograms.has(m[1]!)) continue;
    const labels = (m[3] ?? '').replace(/(?:^|,)le="[^"]*"/, '').replace(/^,/, '');
    const id = `${m[1]}{${labels}}`;
    const s = state.get(id) ?? { les: [], closed: [] };
    state.set(id, s);
    if (m[2] === '_bucket') {
      const le = /le="([^"]*)"/.exec(m[3] ?? '')![1]!;
      const v = le === '+Inf' ? Infinity : Number(le);
      if (s.closed.length > 0) problems.push(`${id}: bucket le="${le}" after ${s.closed.join(', ')}`);
      if (s.les.length > 0 && v <= s.les[s.les.length - 1]!) problems.push(`${id}: bucket le="${le}" after le="${s.les[s.les.length - 1]}"`);
      s.les.push(v);
    } else {
      if (s.les[s.les.length - 1] !== Infinity) problems.push(`${id}: ${m[2]} before the +Inf bucket`);
      s.closed.push(m[2]);
    }
  }
  return problems;
}

test('promtool check metrics finds nothing on the API\'s live /metrics (combined view)', async (t) => {
  if (!hasPromtool) return t.skip('promtool is not installed (Debian package prometheus): apt-get install prometheus');
  const text = await apiMetrics();
  assert.match(text, /stacksanity_check_duration_seconds_bucket/, 'the workers\' series are there');
  const r = lint(text);
  assert.equal(r.findings, '', `promtool findings:\n${r.findings}`);
  assert.equal(r.code, 0);
});

test('promtool check metrics finds nothing on a worker\'s own /metrics', async (t) => {
  if (!hasPromtool) return t.skip('promtool is not installed (Debian package prometheus): apt-get install prometheus');
  const text = await workerMetrics();
  assert.match(text, /stacksanity_unwind_depth_frames_bucket/);
  const r = lint(text);
  assert.equal(r.findings, '', `promtool findings:\n${r.findings}`);
  assert.equal(r.code, 0);
});

test('every histogram lists its buckets in increasing le order ending at +Inf, then _sum and _count; no series twice', async () => {
  for (const [where, text] of [['API', await apiMetrics()], ['worker', await workerMetrics()]] as const) {
    assert.ok((text.match(/^# TYPE \S+ histogram$/gm) ?? []).length >= 3, `${where}: the histograms are there`);
    assert.deepEqual(histogramOrderProblems(text), [], `${where} /metrics`);
  }
});

test('received and checked count the same history: the samples received are the samples the fp baseline unwound', async () => {
  const text = await apiMetrics();
  const received = metricSum(text, 'stacksanity_samples_received_total{');
  assert.equal(received, 3 * DEMO_SAMPLES);
  // Every checked sample is unwound once by the fp baseline, whatever its verdict.
  assert.equal(metricSum(text, 'stacksanity_unwinds_total{strategy="fp",'), received);
  assert.equal(metricSum(text, 'stacksanity_check_duration_seconds_count'), received);
  assert.equal((text.match(/^# TYPE stacksanity_samples_received_total counter$/gm) ?? []).length, 1, 'one family, from the Redis totals');
  assert.ok(metricSum(text, 'stacksanity_samples_rejected_total{') >= 1);
  // The totals live in Redis: an API started afresh (a restart) reads the same counts.
  const second = await startTestApi(cfg);
  try {
    const again = (await second.app.inject({ url: '/metrics' })).body;
    assert.equal(metricSum(again, 'stacksanity_samples_received_total{'), received);
    assert.equal(metricSum(again, 'stacksanity_unwinds_total{strategy="fp",'), received);
  } finally {
    await second.close();
  }
});
