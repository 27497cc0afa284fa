// The single-step sweep against what the kernel documents (reference kernel-unwinders.md §7, §9
// rules 17–18): on a clean kernel of layout X, strategy X is exact or in a documented window at
// every instruction boundary; outside entry code a window loses exactly the one caller of the
// function in its prologue, epilogue or frameless body. What each strategy does inside entry
// stubs is the finding (docs/emulator.md); the findings are asserted here so that a change in
// the unwinders or the emulator shows up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fleetBuilds } from '../../services/emulator/index.ts';
import { SCENARIOS, sweepScenario, classify, stopIsDocumented } from '../../services/emulator/sweep.ts';
import { sweepKernel } from '../../services/cli/sweep.ts';
import { KernelProfile, type EntryLayout } from '../../services/core/symbols/profile.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import type { KernelImage } from '../../services/emulator/image.ts';

const builds = fleetBuilds('all', []);
const byTag = (tag: string): KernelImage => builds.find((k) => k.profile.layouts.join('+') === tag)!;

test('the sweep stops at every instruction of every entry stub on the path', () => {
  const k = byTag('encoded_fp');
  const seen = new Map<string, Set<number>>();
  sweepScenario(k, SCENARIOS.find((s) => s.name === 'nmi_in_pf_in_irq')!, (st) => {
    let s = seen.get(st.fn);
    if (!s) seen.set(st.fn, (s = new Set()));
    s.add(st.insn);
  });
  for (const stub of ['asm_common_interrupt', 'asm_exc_page_fault', 'asm_exc_nmi']) {
    const f = k.fn(stub);
    const got = seen.get(stub)!;
    for (let i = 0; i < f.ops.length; i++) assert.ok(got.has(i), `${stub} instruction ${i} sampled`);
  }
});

for (const tag of ['kernel_entry', 'section', 'encoded_fp', 'encoded_fp+section']) {
  test(`sweep on a clean ${tag} kernel: the kernel's own strategy has only documented windows`, () => {
    const k = byTag(tag);
    const own = k.layout;
    const profile = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[] });
    let steps = 0;
    for (const sc of SCENARIOS) {
      sweepScenario(k, sc, (st) => {
        steps++;
        const [r] = checkSample(st.sample, profile, [own]).results;
        const truth = st.sample.truth!.frames;
        const c = classify(truth, { strategy: own, verdict: r!.verdict, frames: r!.unwind.frames.map((f) => f.ip) });
        const at = `${sc.name} ${st.fn}+0x${st.offset.toString(16)} (${st.op})`;
        const ok = c.outcome === 'exact' || c.outcome === 'window' || (c.outcome === 'stopped' && stopIsDocumented(k, st.fn, truth));
        assert.ok(ok, `${own} ${at}: ${c.outcome} ${r!.verdict} ${r!.reason} lost ${c.lost}`);
        const f = k.fn(st.fn);
        const inEntryCode = st.inStub || c.lost.includes('entry_code');
        if (!inEntryCode) {
          // Outside entry code: the running function's own window loses exactly its caller.
          const own = f.framed ? (st.insn < f.frameFrom ? 'prologue' : st.insn > f.frameTo ? 'epilogue' : undefined) : 'leaf';
          const ownLost = c.lost.filter((l) => l === 'prologue' || l === 'epilogue').length + (own === 'leaf' && c.lost[0] === 'leaf' ? 1 : 0);
          if (own === 'prologue' || own === 'epilogue') assert.equal(c.lost.filter((l) => l === own).length, 1, `${at}: one caller lost in the ${own}`);
          if (own === undefined) assert.equal(ownLost, 0, `${at}: nothing lost in a body`);
          for (const l of c.lost) assert.ok(['prologue', 'epilogue', 'leaf'].includes(l), `${at}: lost ${l}`);
        }
      });
    }
    assert.ok(steps > 1000);
  });
}

test('findings: what each strategy does inside entry code (see docs/emulator.md)', () => {
  const t = (tag: string) => sweepKernel(byTag(tag));
  const enc = t('encoded_fp+section');
  // The section strategy on a kernel that also encodes rbp: blind (pt_regs_not_decoded) only where
  // rbp itself holds &pt_regs|1 — in the stub after ENCODE_FRAME_POINTER and in the handler's
  // first and last instructions; nowhere a wrong trace.
  assert.equal(enc.totals.section!.wrong, 0);
  assert.ok(enc.totals.section!.not_decoded > 0);
  for (const r of enc.rows.filter((x) => x.strategy === 'section' && x.outcome === 'not_decoded')) {
    const f = byTag('encoded_fp+section').fn(r.fn);
    const inHandlerEdge = f.framed && (r.to < f.frameFrom || r.from > f.frameTo);
    assert.ok(r.inStub || inHandlerEdge || !f.framed, `section blind at ${r.fn}+0x${r.offFrom.toString(16)}`);
  }
  assert.equal(enc.totals.encoded_fp!.wrong + enc.totals.encoded_fp!.not_decoded, 0);
  // fp: never a wrong trace on the encoded kernel before the first entry; on the others it loses
  // (section) or replaces (kernel_entry) the interrupted function while inside handlers.
  for (const tag of ['kernel_entry', 'section']) {
    const x = t(tag);
    assert.ok(x.totals.fp!.wrong > 0, `${tag}: fp is wrong inside handlers`);
    assert.equal(x.totals[x.layout]!.wrong + x.totals[x.layout]!.not_decoded, 0);
    // A strategy for another layout refuses the first entry it meets rather than guess.
    for (const other of ['kernel_entry', 'section', 'encoded_fp'].filter((s) => s !== x.layout)) {
      assert.equal(x.totals[other]!.wrong, 0, `${other} on ${tag} never returns a wrong trace`);
    }
  }
});
