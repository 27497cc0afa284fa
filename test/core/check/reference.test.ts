// Verdicts without ground truth: against the host's own callchain, and against the invariants alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSample } from '../../../services/core/check/checker.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { cloneSample } from '../../support/stack-image.ts';
import { ENCODED, pageFault } from '../unwind/fixtures.ts';

function withoutTruth(s: Sample): Sample {
  const c = cloneSample(s);
  delete c.truth;
  return c;
}

/** The callchain perf would store for this sample: regs->ip first, then every return address. */
function hostChainOf(s: Sample): NonNullable<Sample['callchain']> {
  return s.truth!.frames.map((f) => ({ addr: f.ip, flags: [] }));
}

test('with only a host callchain, a strategy that matches it is exact against the host', () => {
  const base = pageFault(ENCODED).b.sample;
  const s = withoutTruth(base);
  s.callchain = hostChainOf(base);
  const c = checkSample(s, ENCODED.profile, ['encoded_fp', 'section']);
  for (const r of c.results) {
    assert.equal(r.reference, 'host');
    assert.equal(r.verdict, 'exact', r.strategy);
    assert.equal(r.falseReliable, false);
  }
});

test('a host callchain that lacks a frame makes the strategies report an extra frame (the host is the reference)', () => {
  const base = pageFault(ENCODED).b.sample;
  const s = withoutTruth(base);
  const chain = hostChainOf(base);
  // Drop the interrupted function (index 3: start, exc_page_fault, asm_exc_page_fault, vfs_read).
  const dropped = chain.splice(3, 1)[0]!;
  s.callchain = chain;
  const r = checkSample(s, ENCODED.profile, ['encoded_fp']).results[0]!;
  assert.equal(r.verdict, 'extra_frames');
  assert.equal(r.reason, 'extra_frame');
  assert.deepEqual(r.extra, [ENCODED.kernel.nameAt(dropped.addr)]);
});

test("perf's terminators and garbage in the host chain are not reference frames", () => {
  const base = pageFault(ENCODED).b.sample;
  const s = withoutTruth(base);
  s.callchain = [...hostChainOf(base), { addr: 0n, flags: ['zero'] }, { addr: 0xffffffffffffffffn, flags: ['all_ones'] }];
  assert.equal(checkSample(s, ENCODED.profile, ['encoded_fp']).results[0]!.verdict, 'exact');
});

test('with no reference at all, a walk that reaches a valid end is consistent; one that stops is an error with its reason', () => {
  const s = withoutTruth(pageFault(ENCODED).b.sample);
  const r = checkSample(s, ENCODED.profile, ['encoded_fp', 'fp']);
  assert.equal(r.results[0]!.verdict, 'consistent');
  assert.equal(r.results[0]!.reference, 'none');
  // fp meets the encoded bp (&pt_regs | 1) the handler saved and cannot follow an odd pointer.
  assert.equal(r.results[1]!.verdict, 'error');
  assert.equal(r.results[1]!.reason, 'bad_frame_pointer');
});

test('the frame limit: a trace of exactly maxFrames frames is complete; one more frame is depth_limit', async () => {
  const { unwind } = await import('../../../services/core/unwind/index.ts');
  const s = pageFault(ENCODED).b.sample;
  const n = s.truth!.frames.length;
  const full = unwind(s, ENCODED.profile, 'encoded_fp', { maxFrames: n });
  assert.equal(full.outcome, 'user');
  assert.equal(full.frames.length, n);
  const cut = unwind(s, ENCODED.profile, 'encoded_fp', { maxFrames: n - 1 });
  assert.equal(cut.outcome, 'depth_limit');
  assert.equal(cut.reason, 'depth_limit');
  assert.equal(cut.frames.length, n - 1);
  assert.equal(cut.reliable, false);
});

test('with a repeated ip (recursion), the tolerated copy is the one reported missing', async () => {
  const { align } = await import('../../../services/core/check/compare.ts');
  // Reference: start, a tolerated caller, its required twin (same ip), then the root.
  const ref = [
    { ipS: 100, kind: 'start', tolerated: false },
    { ipS: 200, kind: 'call', tolerated: true },
    { ipS: 200, kind: 'call', tolerated: false },
    { ipS: 300, kind: 'call', tolerated: false },
  ];
  const a = align([100, 200, 300], ref);
  assert.deepEqual(a.missing, [1]);
  assert.deepEqual(a.extra, []);
});
