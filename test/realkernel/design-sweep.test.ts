// The single-step sweep on the three entry designs of issue 18 (patches/kernel/README.md): one
// timer interrupt taken in kernel mode on each patched frame-pointer kernel, judged from what each
// design's entry code does, not from the sweep's own tables:
// - the kernel's code says which design it is (the build's patches name it);
// - the design's own strategy recovers every frame a correct unwinder can, except where the
//   design leaves nothing to follow: on the section design, the C handler's prologue and its ret,
//   where rbp is still (or again) 0 — PUSH_AND_CLEAR_REGS cleared it and nothing encodes it — and
//   the only link to pt_regs, the handler's frame with its return address into entry text, is
//   not on the rbp chain;
// - encoded_fp, which reads only &pt_regs|1, cannot cross the interrupt on the other two designs
//   (no entry encodes rbp), and loses nothing on the encoded one;
// - the entry code run on the way in grows with what each design adds to the stub: nothing
//   (section), two lea (encoded), push, push, mov (kernel_entry).
// Skips a design whose kernel is not built (scripts/build-fp-kernel.sh --design all --unwinder all).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { builtFpKernel } from '../../services/realkernel/fp-kernel.ts';
import { ownKernelUnavailable } from '../../services/realkernel/own-kernel.ts';
import { entryCostOf, sweepEntry, type EntryCost, type EntrySweep } from '../../services/realkernel/real-sweep.ts';
import { DESIGN_STRATEGY, openSweepTarget, type EntryDesign, type SweepTarget } from '../../services/realkernel/sweep-target.ts';

const VARIANTS: readonly [EntryDesign, string][] = [['encoded', 'encoded'], ['section', 'section-patched'], ['kernel_entry', 'kernel_entry-patched']];
const costs = new Map<EntryDesign, EntryCost>();

for (const [design, variant] of VARIANTS) {
  const k = builtFpKernel(variant);
  const skip = !k ? `no ${variant} kernel built: run scripts/build-fp-kernel.sh --design all --unwinder all (patches/kernel/README.md)` : ownKernelUnavailable();

  describe(`the timer interrupt from kernel mode, single-stepped on the ${variant} kernel`, { skip: skip ? `skipped: ${skip}` : false }, () => {
    let target: SweepTarget;
    let sw: EntrySweep;
    const own = DESIGN_STRATEGY[design];

    before(async () => {
      target = await openSweepTarget({ kernel: k!.image, vmlinux: k!.vmlinux });
      sw = await sweepEntry(target, 'timer', 'kernel', { maxSteps: 40_000 });
    });

    after(() => target?.close());

    test('the kernel\'s code names its design; the sweep went in and came back out', (t) => {
      t.diagnostic(target.designNote ?? '');
      assert.equal(target.design, design);
      assert.equal(target.strategies.includes('kernel_entry'), design === 'kernel_entry');
      assert.equal(sw.returned, true);
      assert.equal(sw.finalDepth, 0);
      assert.equal(sw.steps[sw.steps.length - 1]!.op, 'iret');
      assert.equal(sw.interrupted.user, false);
    });

    test(`${own} loses no frame a correct unwinder recovers, outside the design's own blind spot`, (t) => {
      const wrong = sw.steps.filter((s) => s.results.find((r) => r.strategy === own)?.outcome === 'wrong');
      t.diagnostic(`${sw.steps.length} steps; ${own} wrong at ${wrong.length}: ${wrong.map((s) => `${s.fn}+0x${s.offset.toString(16)}`).join(', ')}`);
      if (design !== 'section') {
        assert.equal(wrong.length, 0);
        return;
      }
      // Section: only in the C handler (the function the stub called: depth 1) with rbp = 0.
      for (const s of wrong) {
        assert.equal(s.depth, 1, `${s.fn}+0x${s.offset.toString(16)} is not the handler the stub called`);
        assert.equal(s.inEntryCode, false);
        assert.equal(s.sample?.regs?.bp, 0n, `${s.fn}+0x${s.offset.toString(16)}: rbp is not 0`);
      }
    });

    test('encoded_fp crosses the interrupt only where entry code encodes rbp', (t) => {
      // The steps where the design lets a correct unwinder reach the interrupted instruction.
      const recoverable = sw.steps.filter((s) => s.truth.some((f) => f.kind === 'regs' && f.tolerated === undefined));
      const failed = recoverable.filter((s) => ['wrong', 'not_decoded'].includes(s.results.find((r) => r.strategy === 'encoded_fp')!.outcome));
      const wrong = sw.steps.filter((s) => s.results.find((r) => r.strategy === 'encoded_fp')!.outcome === 'wrong');
      t.diagnostic(`interrupted frame recoverable at ${recoverable.length} steps; encoded_fp wrong or not_decoded at ${failed.length} of them, wrong at ${wrong.length} steps in all`);
      assert.ok(recoverable.length > 0);
      if (design === 'encoded') assert.equal(wrong.length, 0);
      else assert.ok(failed.length > recoverable.length / 2, 'encoded_fp should fail across most of the handler');
    });

    test('the entry cost is measured from the steps', (t) => {
      const c = entryCostOf(sw);
      assert.ok(c, 'the stub called a C handler and it returned');
      t.diagnostic(`in ${c.in} (to ${c.handler}), out ${c.out}`);
      assert.equal(c.handler, 'sysvec_apic_timer_interrupt');
      assert.equal(c.outsideBefore, 0, 'from kernel mode error_entry calls no C function');
      costs.set(design, c);
    });
  });
}

test('entry code on the way in: section < encoded < kernel_entry', (t) => {
  if (costs.size < 3) {
    t.skip(`needs all three designs swept (have ${[...costs.keys()].join(', ') || 'none'})`);
    return;
  }
  const s = costs.get('section')!.in;
  const e = costs.get('encoded')!.in;
  const ke = costs.get('kernel_entry')!.in;
  t.diagnostic(`section ${s}, encoded ${e}, kernel_entry ${ke}`);
  assert.ok(s < e && e < ke);
});
