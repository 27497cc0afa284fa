// Findings in the service: the emulator's faulted samples become findings in Redis, listed by
// GET /v1/findings with counts equal to the number of samples the emulator faulted (its ground
// truth, not the checker's output); marking one known (an admin token; an upload token gets 403)
// moves its later failures to finding="known" in /metrics; a batch retried after its commit adds
// nothing; the findings cap holds. Real Redis, unique prefix; the API and a worker in this process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { ApiServer } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { FindingsStore } from '../../services/pipeline/findings.ts';
import type { FindingDelta } from '../../services/pipeline/findings-batch.ts';
import { TraceStore, type BatchWrite } from '../../services/pipeline/trace-store.ts';
import { BASELINE, strategiesFor } from '../../services/pipeline/check-batch.ts';
import { EmulatedFleet, type EmulatedSample } from '../../services/emulator/index.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import { findingsOf } from '../../services/core/check/findings.ts';
import { forkCheckerWorker, sigkill, SHARED_REDIS, TOKEN, auth, cleanup, startTestApi, testConfig, uniquePrefix, waitFor } from './helpers.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const prefix = uniquePrefix('findings');
// 0: workers ask Redis for the known set before every batch, so the test needs no sleep.
const env = { STACKSANITY_FINDINGS_REVALIDATE_MS: '0', STACKSANITY_RATE_LIMIT: '100000', STACKSANITY_LOCK_MS: '2000', STACKSANITY_STALLED_MS: '1000' };
const cfg = { ...testConfig(prefix, env), combinedMetrics: true };
const keys = new Keys(prefix);
let api: ApiServer;
let worker: CheckerWorker | undefined;
let redis: Redis;

// One layout, so each sample is checked by the fp baseline and kernel_entry only: a faulted
// sample is one failing unwind. broken_irq_link overwrites the IRQ stack's link word: the walk
// cannot leave the IRQ stack (docs/emulator.md), so every finding it makes is of one family.
const fleet = new EmulatedFleet({ seed: 20261207, layout: 'kernel_entry', hosts: 3, faults: ['broken_irq_link'], faultRate: 0.3 });
const profiles = new Map(fleet.kernels().map((k) => [k.buildId, KernelProfile.fromKallsyms(k.kallsyms, { buildId: k.buildId, layouts: k.profile.layouts })]));

before(async () => {
  const admin = new TokenSet();
  admin.add('ops', ADMIN);
  api = await startTestApi(cfg, { adminTokens: admin });
  redis = new Redis(SHARED_REDIS);
  worker = new CheckerWorker(cfg);
  await worker.start();
  for (const k of fleet.kernels()) {
    const s = await api.app.inject({ method: 'POST', url: `/v1/kernels/${k.buildId}/symbols`, headers: { ...auth(), 'content-type': 'text/plain' }, payload: k.kallsyms });
    assert.equal(s.statusCode, 201, s.body);
    const p = await api.app.inject({ method: 'PUT', url: `/v1/kernels/${k.buildId}/profile`, headers: { ...auth(), 'content-type': 'application/json' }, payload: k.profile });
    assert.equal(p.statusCode, 200, p.body);
  }
});

after(async () => {
  await worker?.close();
  await api?.close();
  redis?.disconnect();
  await cleanup(prefix);
});

interface Batch {
  job: string;
  samples: EmulatedSample[];
  receivedAt: string;
}

async function uploadBatch(n: number): Promise<Batch> {
  const samples: EmulatedSample[] = [];
  for (let i = 0; i < n; i++) samples.push(fleet.nextInfo());
  const r = await api.app.inject({ method: 'POST', url: '/v1/samples?source=emulator', headers: { ...auth(), 'content-type': 'text/plain' }, payload: formatTextDump(samples.map((e) => e.sample)) });
  assert.equal(r.statusCode, 202, r.body);
  const job = (JSON.parse(r.body) as { job: string; accepted: number }).job;
  const done = await waitFor(`job ${job}`, async () => {
    const j = JSON.parse((await api.app.inject({ url: `/v1/jobs/${job}` })).body) as { state: string; received_at: string };
    return j.state === 'completed' ? j : undefined;
  }, 60_000);
  return { job, samples, receivedAt: done.received_at };
}

/**
 * The faulted samples of a batch (the emulator's ground truth) and, for each, the id of the
 * finding it belongs to — the id is the core's signature (its definition), the count is ours.
 */
function expectedFindings(b: Batch): { faulted: number; byId: Map<string, { count: number; hosts: Set<string>; indexes: Set<number> }> } {
  const byId = new Map<string, { count: number; hosts: Set<string>; indexes: Set<number> }>();
  let faulted = 0;
  b.samples.forEach((e, index) => {
    if (e.fault?.name !== 'broken_irq_link') return;
    faulted++;
    const p = profiles.get(e.sample.kernel!)!;
    const sigs = findingsOf(e.sample, checkSample(e.sample, p, strategiesFor(p)), p, BASELINE);
    assert.equal(sigs.length, 1, `faulted sample ${index}: one failing unwind (kernel_entry), got ${sigs.map((s) => s.title).join('; ')}`);
    const sig = sigs[0]!;
    const x = byId.get(sig.id) ?? { count: 0, hosts: new Set<string>(), indexes: new Set<number>() };
    x.count++;
    x.hosts.add(e.host);
    x.indexes.add(index);
    byId.set(sig.id, x);
  });
  return { faulted, byId };
}

interface ApiFinding {
  id: string; title: string; strategy: string; verdict: string; reason: string; entry: string; fn: string; where: string;
  count: number; first_seen: string; last_seen: string; hosts: string[]; kernels: string[]; offsets: string[];
  examples: { id: string; url: string }[]; state: string; note: string | null; acknowledged_by: string | null; acknowledged_at: string | null;
}

async function listFindings(query = ''): Promise<{ items: ApiFinding[]; next: string | null; total: number; overflow: number }> {
  const r = await api.app.inject({ url: `/v1/findings?limit=500${query}` });
  assert.equal(r.statusCode, 200, r.body);
  return JSON.parse(r.body);
}

/** stacksanity_unwind_failures_total summed over the series whose labels include all of `want`. */
async function failures(want: Record<string, string>): Promise<number> {
  const text = (await api.app.inject({ url: '/metrics' })).body;
  let n = 0;
  for (const l of text.split('\n')) {
    if (!l.startsWith('stacksanity_unwind_failures_total{')) continue;
    if (Object.entries(want).every(([k, v]) => l.includes(`${k}="${v}"`))) n += Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return n;
}

async function gauge(strategy: string, state: string): Promise<number> {
  const text = (await api.app.inject({ url: '/metrics' })).body;
  const m = new RegExp(`^stacksanity_findings\\{strategy="${strategy}",state="${state}"\\} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `stacksanity_findings{strategy="${strategy}",state="${state}"} is exposed`);
  return Number(m[1]);
}

let first: Batch;
let firstExpected: ReturnType<typeof expectedFindings>;

test('the faulted samples become findings, counted as the emulator faulted them', { timeout: 90_000 }, async () => {
  first = await uploadBatch(400);
  firstExpected = expectedFindings(first);
  assert.ok(firstExpected.faulted > 60, `faults injected: ${firstExpected.faulted}`);
  const { items, total, overflow } = await listFindings();
  assert.equal(overflow, 0);
  assert.equal(total, firstExpected.byId.size);
  // Every failing unwind is a faulted sample's: clean samples of a clean kernel make no finding.
  assert.equal(items.reduce((a, f) => a + f.count, 0), firstExpected.faulted);
  for (const f of items) {
    const want = firstExpected.byId.get(f.id);
    assert.ok(want, `finding ${f.title} is one of the faulted samples'`);
    assert.equal(f.count, want.count, f.title);
    // The broken link word strands the walk on the IRQ stack.
    assert.equal(f.strategy, 'kernel_entry');
    assert.equal(f.entry, 'irq');
    assert.equal(f.where, 'stopped');
    assert.equal(f.state, 'new');
    assert.deepEqual(new Set(f.hosts), want.hosts);
    assert.deepEqual(f.kernels, [first.samples[0]!.sample.kernel]);
    assert.ok(f.offsets.length >= 1 && f.offsets.every((o) => o.startsWith(`${f.fn.replace(/ \[.*\]$/, '')}+0x`)), `${f.offsets}`);
    assert.equal(f.first_seen, first.receivedAt);
    assert.equal(f.last_seen, first.receivedAt);
    assert.ok(f.examples.length >= 1 && f.examples.length <= Math.min(5, want.count));
    for (const e of f.examples) {
      const index = Number(e.id.slice(first.job.length + 1));
      assert.ok(e.id.startsWith(`${first.job}-`) && want.indexes.has(index), `example ${e.id} is a sample of this finding`);
      assert.equal((await api.app.inject({ url: e.url })).statusCode, 200);
    }
    const one = await api.app.inject({ url: `/v1/findings/${f.id}` });
    assert.equal(one.statusCode, 200);
    assert.equal((JSON.parse(one.body) as ApiFinding).count, want.count);
  }
  // Most frequent first.
  assert.deepEqual(items.map((f) => f.count), [...items.map((f) => f.count)].sort((a, b) => b - a));
  assert.equal(await failures({ strategy: 'kernel_entry', finding: 'new' }), firstExpected.faulted);
  assert.equal(await failures({ finding: 'known' }), 0);
  assert.equal(await gauge('kernel_entry', 'new'), firstExpected.byId.size);
  assert.equal(await gauge('kernel_entry', 'known'), 0);
  assert.equal((await api.app.inject({ url: '/v1/findings/0123456789abcdef' })).statusCode, 404);
  // The web page opens with them, most frequent first.
  const page = (await api.app.inject({ url: '/' })).body;
  assert.ok(page.indexOf(`/v1/findings/${items[0]!.id}`) > 0 && page.indexOf(`/v1/findings/${items[0]!.id}`) < page.indexOf('Recent failing traces'), 'the top finding on the page');
  // The OpenAPI document has the routes.
  const doc = JSON.parse((await api.app.inject({ url: '/docs/json' })).body) as { paths: Record<string, Record<string, unknown>> };
  assert.ok(doc.paths['/v1/findings']?.get && doc.paths['/v1/findings/{id}']?.get && doc.paths['/v1/findings/{id}']?.put);
  assert.equal((await api.app.inject({ url: '/v1/findings?state=bogus' })).statusCode, 400);
});

test('pages: the cursor walks every finding once', async () => {
  const all = (await listFindings()).items.map((f) => f.id);
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const r = await api.app.inject({ url: `/v1/findings?limit=1${cursor ? `&cursor=${cursor}` : ''}` });
    const page = JSON.parse(r.body) as { items: ApiFinding[]; next: string | null };
    seen.push(...page.items.map((f) => f.id));
    cursor = page.next;
  } while (cursor);
  assert.deepEqual(seen, all);
});

test('PUT known needs an admin token and moves the finding\'s later failures to finding="known"', { timeout: 90_000 }, async () => {
  const top = (await listFindings()).items[0]!;
  const put = (headers: Record<string, string>, body: unknown, id = top.id) =>
    api.app.inject({ method: 'PUT', url: `/v1/findings/${id}`, headers: { 'content-type': 'application/json', ...headers }, payload: body as object });
  const none = await put({}, { state: 'known' });
  assert.equal(none.statusCode, 401);
  const upload = await put(auth(TOKEN), { state: 'known' });
  assert.equal(upload.statusCode, 403);
  assert.match(JSON.parse(upload.body).message, /upload token.*admin token/);
  assert.equal((await put(auth('not-a-token-0123456789'), { state: 'known' })).statusCode, 401);
  assert.equal((await put(auth(ADMIN), { state: 'known', note: 'x'.repeat(2001) })).statusCode, 400);
  assert.equal((await put(auth(ADMIN), { state: 'gone' })).statusCode, 400);
  assert.equal((await put(auth(ADMIN), { state: 'known' }, 'fedcba9876543210')).statusCode, 404);
  // Nothing was changed by the refused requests.
  assert.equal((await listFindings('&state=known')).items.length, 0);

  const ok = await put(auth(ADMIN), { state: 'known', note: 'IRQ link word overwritten by the test fault' });
  assert.equal(ok.statusCode, 200, ok.body);
  const f = JSON.parse(ok.body) as ApiFinding;
  assert.equal(f.state, 'known');
  assert.equal(f.note, 'IRQ link word overwritten by the test fault');
  assert.equal(f.acknowledged_by, 'ops');
  assert.ok(f.acknowledged_at !== null);
  assert.deepEqual((await listFindings('&state=known')).items.map((x) => x.id), [top.id]);
  assert.equal((await listFindings('&state=new')).items.length, firstExpected.byId.size - 1);
  assert.equal(await gauge('kernel_entry', 'known'), 1);
  assert.equal(await gauge('kernel_entry', 'new'), firstExpected.byId.size - 1);

  const knownBefore = await failures({ finding: 'known' });
  const newBefore = await failures({ strategy: 'kernel_entry', finding: 'new' });
  const second = await uploadBatch(400);
  const exp = expectedFindings(second);
  const ofKnown = exp.byId.get(top.id)?.count ?? 0;
  assert.ok(ofKnown > 0, 'the second batch has failures of the known finding');
  assert.equal((await failures({ finding: 'known' })) - knownBefore, ofKnown);
  assert.equal((await failures({ strategy: 'kernel_entry', finding: 'new' })) - newBefore, exp.faulted - ofKnown);
  // Still counted as a finding; still known.
  const again = JSON.parse((await api.app.inject({ url: `/v1/findings/${top.id}` })).body) as ApiFinding;
  assert.equal(again.count, top.count + ofKnown);
  assert.equal(again.state, 'known');
  assert.equal(again.first_seen, first.receivedAt);
  assert.equal(again.last_seen, second.receivedAt);

  // Back to new: the note stays, the acknowledgement goes.
  const back = JSON.parse((await put(auth(ADMIN), { state: 'new' })).body) as ApiFinding;
  assert.equal(back.state, 'new');
  assert.equal(back.note, 'IRQ link word overwritten by the test fault');
  assert.equal(back.acknowledged_by, null);
  assert.equal(await gauge('kernel_entry', 'known'), 0);
});

test('a batch retried after its commit adds nothing to any finding', { timeout: 90_000 }, async () => {
  await worker?.close();
  worker = undefined;
  const before = new Map((await listFindings()).items.map((f) => [f.id, f.count]));
  const child = await forkCheckerWorker(prefix, { ...env, STACKSANITY_FAULT: 'after-commit:60000' });
  const samples: EmulatedSample[] = [];
  for (let i = 0; i < 300; i++) samples.push(fleet.nextInfo());
  const b: Batch = { job: '', samples, receivedAt: '' };
  const up = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: formatTextDump(samples.map((e) => e.sample)) });
  assert.equal(up.statusCode, 202, up.body);
  b.job = JSON.parse(up.body).job as string;
  await waitFor('the commit', async () => (await redis.exists(keys.done(b.job))) === 1, 30_000);
  await sigkill(child);
  const rescuer = new CheckerWorker(cfg);
  await rescuer.start();
  try {
    const result = await waitFor('the retried batch', async () => {
      if ((await api.queue.getJobState(b.job)) !== 'completed') return undefined;
      return (await api.queue.getJob(b.job))?.returnvalue as { counted: boolean } | undefined;
    }, 30_000);
    assert.equal(result.counted, false, 'the retry found the marker');
  } finally {
    await rescuer.close();
  }
  const exp = expectedFindings(b);
  const after = (await listFindings()).items;
  for (const f of after) assert.equal(f.count, (before.get(f.id) ?? 0) + (exp.byId.get(f.id)?.count ?? 0), f.title);
  assert.equal(after.reduce((a, f) => a + f.count, 0), [...before.values()].reduce((a, n) => a + n, 0) + exp.faulted);
});


test('a worker sees a state change at its next look at Redis (every STACKSANITY_FINDINGS_REVALIDATE_MS), not before', async () => {
  const p = uniquePrefix('findings-known');
  const r = new Redis(SHARED_REDIS);
  try {
    const k = new Keys(p);
    const store = new TraceStore(r, k, { traceMax: 100, traceMaxAgeSeconds: 3600, idempotencySeconds: 3600 });
    const id = 'abcdef0123456789';
    await store.commitBatch({
      jobId: 'j', metrics: new Map(), traces: [], hostSummaries: new Map(), kernelSummaries: new Map(),
      findings: [{ sig: { id, title: 't', strategy: 'orc', verdict: 'truncated', reason: 'did_not_reach_end', entry: 'nmi', fn: 'f', where: 'stopped', falseReliable: false }, count: 1, first: 1, last: 1, hosts: [], kernels: [], at: [], examples: [] }],
    });
    const worker = new FindingsStore(r, k);
    const operator = new FindingsStore(r, k);
    assert.equal((await worker.known(3_600_000)).size, 0);
    assert.equal((await operator.setState(id, 'known', 'blind spot', 'ops'))?.state, 'known');
    // Within its cache time the worker has not asked yet; once it asks, it knows.
    assert.equal((await worker.known(3_600_000)).has(id), false);
    assert.equal((await worker.known(0)).has(id), true);
    await operator.setState(id, 'new', undefined, 'ops');
    assert.equal((await worker.known(0)).has(id), false);
    const f = await operator.get(id);
    assert.equal(f?.note, 'blind spot');
    assert.deepEqual(f?.hosts, []);
    assert.deepEqual((await operator.stats()).byState.filter((x) => x.n > 0), [{ state: 'new', strategy: 'orc', n: 1 }]);
  } finally {
    r.disconnect();
    await cleanup(p);
  }
});

test('admin tokens come from their own variables, apart from upload tokens', () => {
  const env = { STACKSANITY_TOKENS: 'host-1:upload-token-0123456789', STACKSANITY_ADMIN_TOKENS: 'ops:admin-token-9876543210abc' };
  assert.equal(TokenSet.adminFromEnv(env).verify('admin-token-9876543210abc'), 'ops');
  assert.equal(TokenSet.adminFromEnv(env).verify('upload-token-0123456789'), undefined);
  assert.equal(TokenSet.fromEnv(env).verify('admin-token-9876543210abc'), undefined);
  assert.throws(() => TokenSet.adminFromEnv({ STACKSANITY_ADMIN_TOKENS: 'ops:short' }), /STACKSANITY_ADMIN_TOKENS: entry 1: .*shorter than 16/);
});

test('the findings cap: new ids beyond it are counted as overflow, not stored; stored ones keep counting', async () => {
  const p = uniquePrefix('findings-cap');
  const r = new Redis(SHARED_REDIS);
  try {
    const k = new Keys(p);
    const store = new TraceStore(r, k, { traceMax: 100, traceMaxAgeSeconds: 3600, idempotencySeconds: 3600, findingsMax: 3 });
    const findings = new FindingsStore(r, k);
    const delta = (n: number, count: number): FindingDelta => ({
      sig: { id: n.toString(16).padStart(16, '0'), title: `t${n}`, strategy: 'section', verdict: 'truncated', reason: 'bad_frame_pointer', entry: 'irq', fn: `f${n}`, where: 'stopped', falseReliable: false },
      count, first: 1000 + n, last: 1000 + n, hosts: [`h${n}`], kernels: ['k'], at: [`f${n}+0x1`], examples: [],
    });
    const write = (job: string, deltas: FindingDelta[]): BatchWrite => ({ jobId: job, metrics: new Map(), traces: [], hostSummaries: new Map(), kernelSummaries: new Map(), findings: deltas });
    assert.deepEqual(await store.commitBatch(write('a', [delta(1, 2), delta(2, 1)])), { applied: true, findingsOverflow: 0 });
    // Five distinct ids against a cap of three: 3 stored, 4 and 5 overflow (their 7 + 9 occurrences).
    assert.deepEqual(await store.commitBatch(write('b', [delta(1, 1), delta(3, 1), delta(4, 7), delta(5, 9)])), { applied: true, findingsOverflow: 2 });
    // Retried: nothing at all.
    assert.deepEqual(await store.commitBatch(write('b', [delta(1, 1), delta(3, 1), delta(4, 7), delta(5, 9)])), { applied: false, findingsOverflow: 0 });
    const page = await findings.list({ sort: 'count', limit: 10 });
    assert.deepEqual(page.items.map((f) => [f.id.replace(/^0+/, ''), f.count]), [['1', 3], ['3', 1], ['2', 1]]);
    const stats = await findings.stats();
    assert.equal(stats.total, 3);
    assert.equal(stats.overflow, 16);
    assert.deepEqual(stats.byState, [{ state: 'new', strategy: 'section', n: 3 }]);
    assert.equal(await r.exists(k.finding(delta(4, 1).sig.id)), 0);
  } finally {
    r.disconnect();
    await cleanup(p);
  }
});
