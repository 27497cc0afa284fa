// Trace details are rendered when read, from the stored sample record: read back through the API,
// a stored trace shows for each strategy the frames and verdict that checking its sample directly
// gives; after the kernel's profile changes the detail says so; without a profile it still answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { ApiServer } from '../../services/api/server.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import { parseTextDump } from '../../services/core/dump/text.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { formatHex64 } from '../../services/core/u64.ts';
import { checkBatch, strategiesFor } from '../../services/pipeline/check-batch.ts';
import { checkerBuild, sourcesDigest } from '../../services/pipeline/checker-build.ts';
import { decodeTraceBody, encodeTraceBody } from '../../services/pipeline/trace-store.ts';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BatchJob } from '../../services/pipeline/job.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { KernelStore } from '../../services/pipeline/kernels.ts';
import { traceStore } from '../../services/pipeline/queue.ts';
import { sampleIndices } from '../../services/pipeline/job.ts';
import {
  DEMO_BUILD, DEMO_DUMP, DEMO_KALLSYMS, ROOT, SHARED_REDIS, auth, cleanup, startTestApi,
  testConfig, uniquePrefix,
} from './helpers.ts';

const prefix = uniquePrefix('view');
const cfg = testConfig(prefix, { STACKSANITY_RATE_LIMIT: '1000' });
const keys = new Keys(prefix);
const redis = new Redis(SHARED_REDIS);
const kernels = new KernelStore(redis, keys);
const store = traceStore(cfg, redis, keys);
const parsed = parseTextDump(DEMO_DUMP.toString('utf8'));
const samples = parsed.samples;
const indices = sampleIndices(parsed);
let api: ApiServer;

before(async () => {
  api = await startTestApi(cfg);
});

after(async () => {
  await api?.close();
  redis.disconnect();
  await cleanup(prefix);
});

async function putSymbols(buildId: string, text: string): Promise<void> {
  const r = await api.app.inject({ method: 'POST', url: `/v1/kernels/${buildId}/symbols`, headers: { ...auth(), 'content-type': 'text/plain' }, payload: text });
  assert.equal(r.statusCode, 201, r.body);
}

/** Checks the demo's samples as kernel `buildId` and stores every one of them as a trace. */
async function storeDemo(jobId: string, buildId: string): Promise<string[]> {
  const job: BatchJob = { v: 1, format: 'text', gzip: false, uploader: 'test-host', source: 'ci', kernel: buildId, receivedAt: Date.now(), accepted: samples.length, skip: [] } as BatchJob;
  const renamed = samples.map((s) => ({ ...s, kernel: buildId }));
  const checked = await checkBatch(jobId, job, renamed, indices, {
    profile: (b) => kernels.entry(b),
    passingRatio: 1,
    checker: checkerBuild(),
  });
  assert.equal(await store.commit(checked.write), true);
  return checked.write.traces.map((t) => t.id);
}

async function detail(id: string): Promise<Record<string, unknown>> {
  const r = await api.app.inject({ url: `/v1/traces/${id}` });
  assert.equal(r.statusCode, 200, r.body);
  return JSON.parse(r.body) as Record<string, unknown>;
}

type Result = { strategy: string; verdict: string; reason?: string; unwind: { frames: { ip: string; kind: string; symbol: string }[] }; kernel_text: string };

test('a stored trace read back through the API shows what checking its sample directly gives', async () => {
  await putSymbols(DEMO_BUILD, DEMO_KALLSYMS.toString('utf8'));
  const ids = await storeDemo('view-job', DEMO_BUILD);
  assert.equal(ids.length, samples.length, 'passingRatio 1 stores every sample');
  // Checked here against a profile built from the symbol file, not the service's.
  const profile = KernelProfile.fromKallsyms(DEMO_KALLSYMS.toString('utf8'), { buildId: DEMO_BUILD });
  let failing = 0;
  for (const id of ids) {
    const t = await detail(id);
    const n = indices.indexOf(t.index as number);
    assert.ok(n >= 0, `index ${String(t.index)} is one of the batch's`);
    const direct = checkSample(samples[n]!, profile, strategiesFor(profile));
    const results = t.results as Result[];
    assert.deepEqual(results.map((r) => r.strategy), direct.results.map((r) => r.strategy));
    for (const [i, r] of results.entries()) {
      const d = direct.results[i]!;
      assert.equal(r.verdict, d.verdict, `${id} ${r.strategy}`);
      assert.equal(r.reason, d.reason, `${id} ${r.strategy}`);
      assert.deepEqual(r.unwind.frames.map((f) => [f.ip, f.kind, f.symbol]), d.unwind.frames.map((f) => [formatHex64(f.ip), f.kind, profile.symbols.format(f.ip, f.kind === 'call')]), `${id} ${r.strategy} frames`);
      assert.match(r.kernel_text, /Call Trace:/);
    }
    assert.equal(t.recheck, undefined, 'same profile revision and verdicts: no note');
    assert.equal(t.host, samples[n]!.host);
    assert.equal(t.job, 'view-job');
    if (t.status === 'failing') failing++;
  }
  assert.ok(failing > 0, 'the demo has failing samples');
  const page = await api.app.inject({ url: `/traces/${ids[0]!}` });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /Call Trace:/);
  assert.doesNotMatch(page.body, /Re-derived/);
});

test('after the symbols are re-uploaded with a change, the detail says the profile and verdicts changed', async () => {
  const build = 'view-recheck';
  const text = DEMO_KALLSYMS.toString('utf8');
  await putSymbols(build, text);
  const ids = await storeDemo('view-recheck-job', build);
  const before = await Promise.all(ids.map(detail));
  const withVfsRead = before.find((t) => (t.results as Result[]).some((r) => r.unwind.frames.some((f) => f.symbol.startsWith('vfs_read'))));
  assert.ok(withVfsRead, 'some stored trace has a vfs_read frame');
  const rev0 = (await kernels.info(build))!.rev;
  assert.equal(before.filter((t) => 'recheck' in t).length, 0, 'checked and read with the same profile: no note');

  // The same symbols again (a host agent re-sends its kernel at every start): nothing changed.
  await putSymbols(build, text);
  assert.equal((await kernels.info(build))!.rev, rev0);
  assert.equal('recheck' in (await detail(withVfsRead.id as string)), false);

  // A renamed function: same addresses and verdicts, other symbols.
  await putSymbols(build, text.replace(/ vfs_read$/m, ' vfs_read_v2'));
  const renamed = await detail(withVfsRead.id as string);
  assert.deepEqual(renamed.recheck, { profile_rev_then: rev0, profile_rev_now: rev0 + 1, checker_then: checkerBuild(), checker_now: checkerBuild(), verdicts_changed: false });
  const symbols = (renamed.results as Result[]).flatMap((r) => r.unwind.frames.map((f) => f.symbol));
  assert.ok(symbols.some((s) => s.startsWith('vfs_read_v2+')), 'frames are symbolised with the current profile');
  const page = await api.app.inject({ url: `/traces/${withVfsRead.id as string}` });
  assert.match(page.body, new RegExp(`revision ${rev0 + 1}\\); the sample was checked with revision ${rev0}`));

  // No entry section markers: the entry-aware strategies no longer apply, so failing samples' verdicts change.
  await putSymbols(build, text.split('\n').filter((l) => !/__(irq)?entry_text_(start|end)/.test(l)).join('\n'));
  const failingId = before.find((t) => t.status === 'failing')!.id as string;
  const now = await detail(failingId);
  const recheck = now.recheck as Record<string, unknown>;
  assert.equal(recheck.profile_rev_then, rev0);
  assert.equal(recheck.profile_rev_now, rev0 + 2);
  assert.equal(recheck.verdicts_changed, true);
  assert.equal((recheck.then as Record<string, unknown>).status, 'failing');
  assert.notDeepEqual(recheck.now, recheck.then);
  assert.equal(now.status, 'failing', 'the top-level status stays the stored one (the list filters by it)');
});

test('a trace whose kernel profile is gone still answers: the sample, the recorded verdicts and why', async () => {
  const build = 'view-gone';
  await putSymbols(build, DEMO_KALLSYMS.toString('utf8'));
  const ids = await storeDemo('view-gone-job', build);
  await redis.del(keys.kernel(build));
  const t = await detail(ids[0]!);
  assert.equal(t.results, undefined);
  assert.ok((t.sample as Record<string, unknown>).regs, 'the sample is there');
  assert.ok(Array.isArray(t.strategies) && Array.isArray(t.reasons));
  assert.match(t.message as string, /no profile/);
  const page = await api.app.inject({ url: `/traces/${ids[0]!}` });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /no profile/);
});

test('a trace checked by another checker build says so; its verdicts are compared as with a profile change', async () => {
  const build = 'view-checker';
  await putSymbols(build, DEMO_KALLSYMS.toString('utf8'));
  const ids = await storeDemo('view-checker-job', build);
  const rev = (await kernels.info(build))!.rev;
  // Rewrite two stored bodies as an older build (and as one from before builds were recorded) would have.
  for (const [id, checker] of [[ids[0]!, '0123456789ab'], [ids[1]!, undefined]] as const) {
    const body = decodeTraceBody((await redis.hgetBuffer(keys.traces, id))!);
    assert.equal(body.kind, 'record');
    if (body.kind !== 'record') return;
    const { checker: _now, ...header } = body.header;
    await redis.hset(keys.traces, id, encodeTraceBody(checker === undefined ? header : { ...header, checker }, body.record));
  }
  const older = await detail(ids[0]!);
  assert.deepEqual(older.recheck, { profile_rev_then: rev, profile_rev_now: rev, checker_then: '0123456789ab', checker_now: checkerBuild(), verdicts_changed: false });
  const unrecorded = await detail(ids[1]!);
  assert.equal((unrecorded.recheck as Record<string, unknown>).checker_then, null, 'not recorded: cannot vouch');
  assert.equal((await detail(ids[2]!)).recheck, undefined, 'same build, same profile: no note');
  const page = await api.app.inject({ url: `/traces/${ids[0]!}` });
  assert.match(page.body, new RegExp(`This checker \\(build ${checkerBuild()}\\) is not the one that checked it \\(0123456789ab\\)`));
});

test('the checker build changes with any core source and only with them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ss-build-'));
  try {
    cpSync(join(ROOT, 'services', 'core'), dir, { recursive: true });
    const a = sourcesDigest(dir);
    assert.match(a, /^[0-9a-f]{12}$/);
    assert.equal(sourcesDigest(dir), a, 'the same sources, the same build');
    writeFileSync(join(dir, 'NOTES.txt'), 'not a source');
    assert.equal(sourcesDigest(dir), a, 'files other than .ts do not count');
    const f = join(dir, 'unwind', 'frame-walker.ts');
    writeFileSync(f, readFileSync(f, 'utf8').replace('GCC_REALIGN_WORDS = 1', 'GCC_REALIGN_WORDS = 2'));
    assert.notEqual(sourcesDigest(dir), a, 'one changed constant in an unwinder');
    assert.equal(checkerBuild(), sourcesDigest(join(ROOT, 'services', 'core')), 'the running build is the shipped sources\' digest');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
