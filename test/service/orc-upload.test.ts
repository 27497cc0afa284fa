// ORC tables through the normal pipeline (issue 7): PUT /v1/kernels/{buildId}/orc with a small
// hand-built table, kallsyms and a profile without frame pointers, then a full-state sample →
// the worker runs `orc` and the trace store holds its verdict. Expectations come from the ORC
// rules (arch/x86/kernel/unwind_orc.c) applied by hand to the stack written below, as in
// test/realkernel/orc.test.ts; bad ORC bodies get a 4xx that names the problem.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import type { ApiServer } from '../../services/api/server.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import type { Sample } from '../../services/core/dump/sample.ts';
import {
  decodeOrcUpload, encodeOrcUpload, OrcFormatError, OrcTable, ORC_UPLOAD_HEADER, type OrcEntry,
} from '../../services/core/unwind/orc-table.ts';
import { auth, cleanup, startTestApi, testConfig, uniquePrefix, waitFor } from './helpers.ts';
import { CALL, IP_SECTION_ADDR, ORC_KALLSYMS, ORC_ROWS, orcSections, pageFaultStack } from '../support/orc-kernel.ts';

const prefix = uniquePrefix('orc');
const cfg = { ...testConfig(prefix, { STACKSANITY_TRACE_PASSING: '1', STACKSANITY_MAX_ORC_BODY: '4096', STACKSANITY_RATE_LIMIT: '1000' }), combinedMetrics: true };
const BUILD = 'orc-test-build';
let api: ApiServer;
let worker: CheckerWorker;

// The kernel, its ORC rows and its page-fault stack: test/support/orc-kernel.ts.
const KALLSYMS = ORC_KALLSYMS;
const ROWS = ORC_ROWS;

/** The stack as the CPU and the entry code write it; the sample is taken at exc_page_fault+4. */
function pageFaultSample(host: string, ip = 0xffffffff81000104n): { sample: Sample; pKernel: bigint } {
  const { sample, pKernel } = pageFaultStack(ip);
  return { pKernel, sample: { ...sample, kernel: BUILD, host, comm: 'cat', pid: 42, tid: 42, cpu: 0, time: '1.000000' } };
}

async function putOrc(body: Uint8Array | string, type = 'application/octet-stream', headers = auth()): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await api.app.inject({ method: 'PUT', url: `/v1/kernels/${BUILD}/orc`, headers: { ...headers, 'content-type': type }, payload: Buffer.from(body) });
  return { status: r.statusCode, json: JSON.parse(r.body) as Record<string, unknown> };
}

async function get(url: string): Promise<Record<string, unknown>> {
  return JSON.parse((await api.app.inject({ url })).body) as Record<string, unknown>;
}

before(async () => {
  api = await startTestApi(cfg);
  worker = new CheckerWorker(cfg);
  await worker.start();
});

after(async () => {
  await worker?.close();
  await api?.close();
  await cleanup(prefix);
});

test('the upload form round-trips and rebuilds the same table as the sections', () => {
  const s = orcSections();
  const d = decodeOrcUpload(encodeOrcUpload(s));
  assert.equal(d.layout, 'type2');
  assert.equal(d.ipSectionAddr, IP_SECTION_ADDR);
  const a = OrcTable.fromSections(s);
  const b = OrcTable.fromSections(d);
  assert.deepEqual([...b.ips], [...a.ips]);
  assert.deepEqual([...b.type], [...a.type]);
  assert.equal(b.length, ROWS.length);
  assert.throws(() => decodeOrcUpload(new Uint8Array(10)), (e: unknown) => e instanceof OrcFormatError && e.field === 'header');
});

test('kallsyms + profile + ORC tables + a full-state sample: the worker runs orc and stores its verdict', async () => {
  let r = await api.app.inject({ method: 'POST', url: `/v1/kernels/${BUILD}/symbols`, headers: { ...auth(), 'content-type': 'text/plain' }, payload: KALLSYMS });
  assert.equal(r.statusCode, 201, r.body);
  r = await api.app.inject({ method: 'PUT', url: `/v1/kernels/${BUILD}/profile`, headers: { ...auth(), 'content-type': 'application/json' }, payload: { framePointers: false } });
  assert.equal(r.statusCode, 200, r.body);
  const put = await putOrc(gzipSync(encodeOrcUpload(orcSections())), 'application/gzip');
  assert.equal(put.status, 201, JSON.stringify(put.json));
  assert.deepEqual([put.json.entries, put.json.layout], [ROWS.length, 'type2']);
  const info = await get(`/v1/kernels/${BUILD}`);
  assert.deepEqual(info.orc, { entries: ROWS.length, layout: 'type2' });

  // Sample 0: the page fault inside a syscall. Sample 1: in the thunk whose row is an end hint.
  const { sample, pKernel } = pageFaultSample('orc-host');
  const thunk = pageFaultSample('orc-host', 0xffffffff81000140n).sample;
  const up = await api.app.inject({ method: 'POST', url: '/v1/samples?source=ci', headers: { ...auth(), 'content-type': 'text/plain' }, payload: formatTextDump([sample, thunk]) });
  assert.equal(up.statusCode, 202, up.body);
  const job = (JSON.parse(up.body) as { job: string }).job;
  await waitFor(`job ${job}`, async () => ((await get(`/v1/jobs/${job}`)).state === 'completed' ? true : undefined));

  const list = (await get(`/v1/traces?kernel=${BUILD}`)).items as { id: string; url: string }[];
  assert.equal(list.length, 2, 'STACKSANITY_TRACE_PASSING=1 keeps passing samples too');
  const byIndex = new Map<number, Record<string, unknown>>();
  for (const it of list) {
    const t = await get(it.url);
    byIndex.set(t.index as number, t);
  }
  const results = (t: Record<string, unknown>): Record<string, Record<string, unknown>> =>
    Object.fromEntries((t.results as Record<string, unknown>[]).map((x) => [x.strategy as string, x]));

  // exc_page_fault+4: CALL sp+16 -> return into asm_exc_page_fault+0x1d; that row (0x110) is
  // REGS sp+0 -> the kernel pt_regs hold mid_fn+8; mid_fn's row: CALL sp+24 -> do_syscall_64+0x15;
  // CALL sp+16 -> entry_SYSCALL_64+0x45, REGS sp+0 -> user-mode pt_regs end the trace.
  const pf = results(byIndex.get(0)!);
  assert.deepEqual(Object.keys(pf).sort(), ['encoded_fp', 'fp', 'orc', 'section']);
  for (const s of ['fp', 'section', 'encoded_fp']) assert.deepEqual([pf[s]!.verdict, pf[s]!.reason], ['not_applicable', 'no_frame_pointers']);
  const orc = pf.orc!;
  assert.equal(orc.verdict, 'consistent');
  const u = orc.unwind as { outcome: string; reliable: boolean; frames: { kind: string; symbol: string; regs_at?: string; entry?: string }[] };
  assert.equal(u.outcome, 'user');
  assert.equal(u.reliable, true);
  assert.deepEqual(u.frames.map((f) => [f.kind, f.symbol]), [
    ['start', 'exc_page_fault+0x4/0x40'],
    ['call', 'asm_exc_page_fault+0x1d/0x100'],
    ['regs', 'mid_fn+0x8/0x100'],
    ['call', 'do_syscall_64+0x15/0x100'],
    ['call', 'entry_SYSCALL_64+0x45/0x100'],
  ]);
  assert.equal(BigInt(`0x${u.frames[2]!.regs_at!}`), pKernel);
  assert.equal(u.frames[2]!.entry, 'page_fault');
  assert.match(orc.kernel_text as string, /exc_page_fault\+0x4\/0x40/);
  assert.equal(byIndex.get(0)!.status, 'passing');

  // The thunk's row is an end hint with sp still below the top of the task stack: truncated.
  const th = results(byIndex.get(1)!).orc!;
  assert.deepEqual([th.verdict, th.reason], ['truncated', 'orc_end_hint']);
  assert.equal(byIndex.get(1)!.status, 'failing');
  const failing = (await get('/v1/traces?strategy=orc&reason=orc_end_hint')).items as unknown[];
  assert.equal(failing.length, 1);

  const sum = await get(`/v1/summary?kernel=${BUILD}`);
  const strategies = sum.strategies as Record<string, { verdicts: Record<string, number> }>;
  assert.deepEqual(strategies.orc!.verdicts, { consistent: 1, truncated: 1 });
  const metrics = (await api.app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /stacksanity_unwinds_total\{strategy="orc",verdict="consistent"\} 1/);
});

test('bad ORC bodies: a 4xx that names the problem', async () => {
  const good = encodeOrcUpload(orcSections());
  const cases: [string, Uint8Array | string, number, RegExp][] = [
    ['empty', new Uint8Array(0), 400, /empty/],
    ['short', good.subarray(0, 10), 400, /header/],
    ['magic', Uint8Array.from([...good].map((b, i) => (i === 0 ? 0x58 : b))), 400, /magic/],
    ['layout', Uint8Array.from([...good].map((b, i) => (i === 8 ? 7 : b))), 400, /layout: entry layout 7/],
    ['truncated', good.subarray(0, good.length - 3), 400, /entries: 15 entries need .* truncated/],
    ['count', (() => { const b = Uint8Array.from(good); new DataView(b.buffer).setUint32(12, 0, true); return b; })(), 400, /no entries/],
    // The sections as built for IP_SECTION_ADDR, sent with another load address.
    ['load address', (() => { const b = Uint8Array.from(good); new DataView(b.buffer).setBigUint64(16, 0xffff888000000000n, true); return b; })(), 400, /ip_section_addr: .*outside kernel text/],
    ['gzip', Uint8Array.from([0x1f, 0x8b, 8, 0, 1, 2, 3]), 400, /gzip/],
    ['text', 'ffffffff81000000 call sp=sp+8\n', 400, /magic/],
  ];
  for (const [name, body, status, re] of cases) {
    const r = await putOrc(body, name === 'text' ? 'text/plain' : 'application/octet-stream');
    assert.equal(r.status, status, `${name}: ${JSON.stringify(r.json)}`);
    assert.match(String(r.json.message), re, name);
  }
  // Over STACKSANITY_MAX_ORC_BODY (4096 here), as sent and after gunzip.
  const big = encodeOrcUpload(orcSections(Array.from({ length: 500 }, (_, i) => [0xffffffff81000000n + BigInt(i * 16), CALL(8)] as [bigint, OrcEntry])));
  assert.ok(big.length > 4096);
  assert.equal((await putOrc(big)).status, 413);
  const bomb = await putOrc(gzipSync(big), 'application/gzip');
  assert.equal(bomb.status, 413, JSON.stringify(bomb.json));
  assert.equal((await putOrc(good, 'application/octet-stream', {})).status, 401);
  assert.ok(ORC_UPLOAD_HEADER === 24);
});
