// A short real capture through BPF on this machine's own kernel (issue 16, part 5), checked end to
// end: registers and stack memory of kernel-mode samples, the kernel's own trace judged against
// that memory and against the project's ORC walk, redacted samples judged like full ones. Skips,
// saying why, where BPF is not permitted (not root, no BTF) or the sampler cannot be built.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bpfPreflight, bpfRecord, bpfTools, BpfUnavailable, type BpfCaptureResult } from '../../services/realhost/bpf-capture.ts';
import { redactSample } from '../../services/realhost/bpf-redact.ts';
import { checkSample, type StrategyCheck } from '../../services/core/check/checker.ts';
import { checkKernelTrace } from '../../services/core/check/kernel-trace.ts';
import { hasFullState, type Sample } from '../../services/core/dump/sample.ts';
import { signedFromBig } from '../../services/core/u64.ts';
import { runCli } from '../support/cli.ts';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { capture } from '../../services/realhost/capture.ts';
import { parseTextDump } from '../../services/core/dump/text.ts';
import { decodeOrcUpload, OrcTable } from '../../services/core/unwind/orc-table.ts';

let skip: string | false = false;
try {
  bpfPreflight();
  bpfTools({ log: () => {} });
} catch (e) {
  if (!(e instanceof BpfUnavailable)) throw e;
  skip = `BPF capture not possible here: ${e.message}`;
}

const dir = mkdtempSync(path.join(tmpdir(), 'bpf-capture-test-'));
let load: ChildProcess | undefined;
let full: BpfCaptureResult | undefined;

before(() => {
  if (skip) return;
  // Kernel work to sample: reads of /dev/zero are copies in the kernel (clear_user), one syscall each.
  load = spawn('dd', ['if=/dev/zero', 'of=/dev/null', 'bs=4k'], { stdio: 'ignore' });
});
after(() => {
  if (load?.pid !== undefined) load.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function clone(s: Sample): Sample {
  return { ...s, regs: { ...s.regs }, stacks: s.stacks.map((st) => ({ ...st, windows: st.windows.map((w) => ({ start: w.start, bytes: w.bytes.slice() })) })) };
}

describe('capture --bpf on this machine', { skip }, () => {
  it('records kernel-mode samples with registers, the stacks they are on, and the kernel trace equal to the ORC walk', () => {
    full = bpfRecord({ duration: 3, frequency: 99, fullMemory: true });
    const st = full.stats;
    assert.ok(st.samples > 0 && st.kernel > 0, `the sampler saw ${st.samples} samples, ${st.kernel} in kernel mode`);
    assert.equal(st.user + st.kernel, st.samples);
    assert.equal(st.records + st.lost, st.samples, 'every sample is a record or counted lost');
    assert.deepEqual(full.decodeErrors, []);
    assert.ok(full.profile.orc && full.profile.orc.length > 10_000, 'the ORC tables were read from live memory');
    const kernel = full.samples.filter(hasFullState);
    assert.ok(kernel.length > 0);
    let compared = 0;
    let equal = 0;
    for (const s of kernel) {
      // sp lies on the first captured stack, which was captured from sp to its end.
      const first = s.stacks[0]!;
      assert.equal(first.windows[0]!.start, s.regs!.sp);
      assert.equal(first.windows[0]!.start + BigInt(first.windows[0]!.bytes.length), first.end);
      assert.ok(full.profile.isTextS(signedFromBig(s.regs!.ip!)), 'a kernel-mode ip is kernel text');
      const c = checkSample(s, full.profile, ['orc']);
      const k = checkKernelTrace(s, full.profile, c.results[0]!.unwind, full.kernel.text, 64);
      if (!k) continue;
      compared++;
      if (k.equalToOrc) equal++;
      // Whatever the unwinders do, the kernel printed nothing that is not on the stack.
      assert.ok(!k.problems.some((p) => p.reason === 'not_text'), `sample ${s.cpu}/${s.time}: ${k.problems.map((p) => p.message).join('; ')}`);
    }
    assert.ok(compared > 0);
    assert.ok(equal / compared >= 0.95, `the project's ORC walk equals the kernel's trace on ${equal} of ${compared} samples`);
  });

  it('gives the same verdicts on redacted samples as on full ones, and zeroes words that are no address', (t) => {
    if (!full) return t.skip('the capture above did not run');
    const cap: BpfCaptureResult = full;
    const profile = cap.profile;
    let zeroed = 0;
    for (const s of cap.samples.filter(hasFullState)) {
      const r = clone(s);
      const stats = redactSample(r, profile);
      zeroed += stats.zeroed;
      const a: StrategyCheck = checkSample(s, profile, ['orc']).results[0]!;
      const b: StrategyCheck = checkSample(r, profile, ['orc']).results[0]!;
      assert.equal(b.verdict, a.verdict);
      assert.deepEqual(b.unwind.frames.map((f) => f.ip), a.unwind.frames.map((f) => f.ip));
      const ka = checkKernelTrace(s, profile, a.unwind, cap.kernel.text);
      const kb = checkKernelTrace(r, profile, b.unwind, cap.kernel.text);
      assert.deepEqual(kb?.problems.map((p) => p.reason), ka?.problems.map((p) => p.reason));
      // Redaction only zeroes: every surviving word is the original one.
      r.stacks.forEach((st, i) => {
        const after = new DataView(st.windows[0]!.bytes.buffer, st.windows[0]!.bytes.byteOffset, st.windows[0]!.bytes.byteLength);
        const w = s.stacks[i]!.windows[0]!.bytes;
        const before = new DataView(w.buffer, w.byteOffset, w.byteLength);
        for (let o = 0; o + 8 <= after.byteLength; o += 8) {
          const v = after.getBigUint64(o, true);
          assert.ok(v === 0n || v === before.getBigUint64(o, true), 'redaction only zeroes');
        }
      });
    }
    assert.ok(zeroed > 0, 'real stacks hold words that are no address: some were zeroed');
  });

  it('runs from the command line: capture --bpf --out, then check --kernels on what it wrote', async () => {
    const out = path.join(dir, 'live.dump');
    const cap = await runCli(['capture', '--bpf', '--duration', '3s', '--out', out]);
    assert.equal(cap.code, 0, cap.err);
    const res = JSON.parse(cap.out) as { samples: number; bpf: { kernelSamples: number; lost: number; redactedWords: number; kernelsOut: string; bpfUsPerSample: number } };
    assert.ok(res.bpf.kernelSamples > 0);
    assert.ok(res.bpf.redactedWords > 0, 'redaction is on by default');
    assert.match(readFileSync(out, 'utf8'), /^# stacksanity-dump v1\n/);
    const chk = await runCli(['check', '--kernels', res.bpf.kernelsOut, '--format', 'json', out]);
    const j = JSON.parse(chk.out) as { samples: number; rejected: Record<string, number>; verdicts: { orc?: Record<string, number> }; kernel_traces: { samples: number; equal_to_orc: number; compared_to_orc: number; on_stack: number; frames: number } };
    assert.equal(j.samples, res.samples);
    assert.deepEqual(j.rejected, {});
    assert.ok(j.verdicts.orc && (j.verdicts.orc.exact ?? 0) > 0, `orc verdicts: ${JSON.stringify(j.verdicts.orc)}`);
    assert.ok(j.kernel_traces.samples > 0);
    assert.ok(j.kernel_traces.equal_to_orc / j.kernel_traces.compared_to_orc >= 0.95, JSON.stringify(j.kernel_traces));
  });

  it('uploads like the other agents: symbols, the live ORC tables, then the samples', async () => {
    const got: { method: string; url: string; body: Buffer }[] = [];
    const server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        got.push({ method: req.method!, url: req.url!, body: Buffer.concat(parts) });
        res.writeHead(req.url === '/v1/samples' ? 202 : 201, { 'content-type': 'application/json' }).end(req.url === '/v1/samples' ? `{"job":"j${got.length}"}` : '{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const r = await capture({ bpf: true, duration: 2, url, token: 't', stateDir: path.join(dir, 'state'), log: () => {} });
      assert.ok(r.symbolsUploaded);
      assert.equal(r.bpf?.orcUploaded, true);
      const urls = got.map((x) => `${x.method} ${x.url.replace(/kernels\/[^/]+/, 'kernels/ID')}`);
      assert.deepEqual(urls.slice(0, 2), ['POST /v1/kernels/ID/symbols', 'PUT /v1/kernels/ID/orc']);
      const orc = OrcTable.fromSections(decodeOrcUpload(got[1]!.body));
      assert.equal(orc.length, r.bpf!.orcEntries);
      const samples = got.filter((x) => x.url === '/v1/samples').flatMap((x) => parseTextDump(x.body.toString('utf8')).samples);
      assert.equal(samples.length, r.samples);
      assert.equal(samples.filter(hasFullState).length, r.bpf!.fullState);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
