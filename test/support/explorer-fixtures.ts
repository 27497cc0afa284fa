// Traces of every kind the explorer draws, stored through the real pipeline pieces (kernel uploads
// through the API, checkBatch, the trace store) under a test prefix: an NMI in a page fault in an
// IRQ and a kernel_entry sample (the emulator's single-step sweep, with ground truth), a corrupt
// saved bp (the emulator's fault injection, which says which word it overwrote), an ORC sample
// (test/support/orc-kernel.ts) and a perf callchain without stack memory. Used by the browser
// test and the explorer bench.
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import type { Sample } from '../../services/core/dump/sample.ts';
import { decodeBatch } from '../../services/core/dump/batch-decode.ts';
import { encodeSamples } from '../../services/core/dump/batch-encode.ts';
import { encodeOrcUpload } from '../../services/core/unwind/orc-table.ts';
import { EmulatedFleet, fleetBuilds } from '../../services/emulator/index.ts';
import type { KernelImage } from '../../services/emulator/image.ts';
import { SCENARIOS, sweepScenario } from '../../services/emulator/sweep.ts';
import { checkBatch } from '../../services/pipeline/check-batch.ts';
import { checkerBuild } from '../../services/pipeline/checker-build.ts';
import type { BatchJob } from '../../services/pipeline/job.ts';
import type { KernelStore } from '../../services/pipeline/kernels.ts';
import { encodeTraceBody, type TraceStore } from '../../services/pipeline/trace-store.ts';
import { ORC_KALLSYMS, ORC_ROWS, orcSections, pageFaultStack } from './orc-kernel.ts';

export const TOKEN = 'test-token-0123456789abcdef';
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** A sample whose windows own their bytes (the emulator's are views into shared slabs). */
export function detach(s: Sample): Sample {
  return { ...s, stacks: s.stacks.map((st) => ({ ...st, windows: st.windows.map((w) => ({ start: w.start, bytes: new Uint8Array(w.bytes) })) })) };
}

/** The first sweep step of a scenario on a kernel that `pick` accepts. */
export function sweepSample(k: KernelImage, scenario: string, pick: (fn: string, s: Sample) => boolean): Sample {
  const sc = SCENARIOS.find((x) => x.name === scenario)!;
  let found: Sample | undefined;
  sweepScenario(k, sc, (step) => {
    if (found === undefined && pick(step.fn, step.sample)) found = detach(step.sample);
  });
  assert.ok(found, `no step of ${scenario} matched`);
  return found;
}

export interface Fixture {
  id: string;
  sample: Sample;
  /** For the corrupt-bp sample: the word the emulator overwrote and the value it wrote. */
  fault?: { at: bigint; value: bigint };
}

export interface Fixtures {
  nmiPfIrq: Fixture;
  corruptBp: Fixture;
  kernelEntry: Fixture;
  orc: Fixture;
  callchain: Fixture;
}

async function inject(app: FastifyInstance, method: 'POST' | 'PUT', url: string, payload: string | Buffer | object, type: string): Promise<void> {
  const r = await app.inject({ method, url, headers: { ...AUTH, 'content-type': type }, payload: payload as string });
  assert.ok(r.statusCode < 300, `${method} ${url}: ${r.statusCode} ${r.body}`);
}

async function putKernel(app: FastifyInstance, k: { buildId: string; kallsyms: string; layouts?: readonly string[] }, profile?: object): Promise<void> {
  if (k.layouts) await inject(app, 'PUT', `/v1/kernels/${k.buildId}/profile`, { layouts: k.layouts }, 'application/json');
  if (profile) await inject(app, 'PUT', `/v1/kernels/${k.buildId}/profile`, profile, 'application/json');
  await inject(app, 'POST', `/v1/kernels/${k.buildId}/symbols`, k.kallsyms, 'text/plain');
}


/** Stores one sample as a trace through checkBatch (every sample kept: passingRatio 1). */
async function storeChecked(store: TraceStore, kernels: KernelStore, job: string, sample: Sample, host: string): Promise<string> {
  const b: BatchJob = { v: 2, format: 'text', gzip: false, uploader: 'test-host', source: 'ci', receivedAt: Date.now(), accepted: 1, skip: [] } as BatchJob;
  const checked = await checkBatch(job, b, [{ ...sample, host }], [0], { profile: (id) => kernels.entry(id), passingRatio: 1, checker: checkerBuild() });
  assert.equal(checked.write.traces.length, 1);
  assert.equal(await store.commit(checked.write), true);
  return checked.write.traces[0]!.id;
}

export async function storeFixtures(app: FastifyInstance, store: TraceStore, kernels: KernelStore, tag: string): Promise<Fixtures> {
  const builds = fleetBuilds('all', []);
  const modern = builds.find((k) => k.profile.layouts.includes('section') && k.profile.layouts.includes('encoded_fp'))!;
  const ke = builds.find((k) => k.layout === 'kernel_entry')!;
  for (const k of [modern, ke]) await putKernel(app, { buildId: k.buildId, kallsyms: k.kallsyms, layouts: k.profile.layouts });

  // Deep inside the NMI handler: three stacks (NMI, IRQ, task) and two entries below it.
  const nmi = { ...sweepSample(modern, 'nmi_in_pf_in_irq', (fn) => fn === 'native_read_msr'), kernel: modern.buildId, comm: 'cat', pid: 4242, tid: 4242, cpu: 1 };
  // In the device IRQ handler on a kernel_entry build.
  const kes = { ...sweepSample(ke, 'irq_in_syscall', (fn) => fn === 'e1000_intr'), kernel: ke.buildId, comm: 'cat', pid: 4243, tid: 4243, cpu: 2 };

  const fleet = new EmulatedFleet({ seed: 7, layout: 'encoded_fp', faults: ['corrupt_bp'], faultRate: 1, hosts: 1 });
  const fk = fleet.images()[0]!;
  await putKernel(app, { buildId: fk.buildId, kallsyms: fk.kallsyms, layouts: fk.profile.layouts });
  let corrupt: { sample: Sample; at: bigint; value: bigint } | undefined;
  for (let i = 0; i < 500 && !corrupt; i++) {
    const info = fleet.nextInfo();
    const w = info.fault?.word;
    // A saved bp overwritten on the task stack of a plain syscall: the fp walk must stop on reading it.
    if (info.fault?.name === 'corrupt_bp' && w && w.role === 'saved_bp' && info.sample.stacks.length === 1) {
      corrupt = { sample: detach(info.sample), at: BigInt.asUintN(64, BigInt(w.at)), value: BigInt.asUintN(64, BigInt(w.value)) };
    }
  }
  assert.ok(corrupt, 'the fleet produced no corrupt_bp sample');

  const ORC_BUILD = `explorer-orc-${tag}`;
  await putKernel(app, { buildId: ORC_BUILD, kallsyms: ORC_KALLSYMS }, { framePointers: false });
  await inject(app, 'PUT', `/v1/kernels/${ORC_BUILD}/orc`, gzipSync(encodeOrcUpload(orcSections(ORC_ROWS))), 'application/gzip');
  const orcSample = { ...pageFaultStack().sample, kernel: ORC_BUILD, comm: 'cat', pid: 42, tid: 42, cpu: 0 };

  const nmiId = await storeChecked(store, kernels, `explorer-nmi-${tag}`, nmi, 'emu-modern-000');
  const keId = await storeChecked(store, kernels, `explorer-ke-${tag}`, kes, 'emu-kernel-entry-000');
  const cbId = await storeChecked(store, kernels, `explorer-bp-${tag}`, { ...corrupt.sample, kernel: fk.buildId }, 'emu-encoded-fp-000');
  const orcId = await storeChecked(store, kernels, `explorer-orc-${tag}`, orcSample, 'orc-host');

  // A perf callchain (no registers, no stack memory): the pipeline counts these and stores none, so
  // the trace is written the way checkBatch writes a stored sample (its binary record + header).
  const sym = (name: string, off: number): bigint => BigInt(`0x${ORC_KALLSYMS.split('\n').find((l) => l.endsWith(` ${name}`))!.split(' ')[0]}`) + BigInt(off);
  const chain: Sample = {
    trigger: 'cycles', comm: 'cat', pid: 42, tid: 42, cpu: 3, kernel: ORC_BUILD, host: 'perf-host', stacks: [],
    callchain: [
      { addr: sym('exc_page_fault', 4), sym: 'exc_page_fault+0x4', dso: '[kernel.kallsyms]', flags: [] },
      { addr: sym('asm_exc_page_fault', 0x1d), sym: 'asm_exc_page_fault+0x1d', dso: '[kernel.kallsyms]', flags: [] },
      { addr: sym('mid_fn', 8), sym: 'mid_fn+0x8', dso: '[kernel.kallsyms]', flags: [] },
      { addr: sym('do_syscall_64', 0x15), sym: 'do_syscall_64+0x15', dso: '[kernel.kallsyms]', flags: [] },
      { addr: sym('entry_SYSCALL_64', 0x45), sym: 'entry_SYSCALL_64+0x45', dso: '[kernel.kallsyms]', flags: [] },
      { addr: 0x401234n, sym: 'main', dso: '/usr/bin/cat', flags: [] },
    ],
  };
  const record = decodeBatch(encodeSamples([chain], [0])).records[0]!;
  const ccId = `explorer-cc-${tag}-0`;
  const orcRev = (await kernels.entry(ORC_BUILD))!.rev;
  const receivedAt = Date.now();
  await store.commit({
    jobId: `explorer-cc-${tag}`, metrics: new Map(), hostSummaries: new Map(), kernelSummaries: new Map(),
    traces: [{ id: ccId, host: 'perf-host', kernel: ORC_BUILD, score: receivedAt * 1000, status: 'passing', strategies: [], reasons: [], body: encodeTraceBody({ job: `explorer-cc-${tag}`, index: 0, receivedAt, uploader: 'test-host', source: 'perf', rev: orcRev, checker: checkerBuild() }, record) }],
  });

  return {
    nmiPfIrq: { id: nmiId, sample: nmi },
    corruptBp: { id: cbId, sample: corrupt.sample, fault: { at: corrupt.at, value: corrupt.value } },
    kernelEntry: { id: keId, sample: kes },
    orc: { id: orcId, sample: orcSample },
    callchain: { id: ccId, sample: chain },
  };
}
