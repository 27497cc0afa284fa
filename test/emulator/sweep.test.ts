// The single-step sweep against what the kernel documents (reference kernel-unwinders.md §7, §9
// rules 17–18): on a clean kernel of layout X, strategy X is exact or in a documented window at
// every instruction boundary; outside entry code a window loses exactly the one caller of the
// function in its prologue, epilogue or frameless body. What each strategy can decode on each
// build follows from the build's entry layout and is asserted step by step, from the truth and
// the machine state (docs/emulator.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fleetBuilds } from '../../services/emulator/index.ts';
import { SCENARIOS, sweepScenario, classify, stopIsDocumented } from '../../services/emulator/sweep.ts';
import { SILENT_STOP_REASONS } from '../../services/core/check/silent-stops.ts';
import { GOOD_VERDICTS } from '../../services/core/check/reasons.ts';
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
        // Every step of the build's own strategy is a good verdict; a stop with nothing lost names
        // the silent window the kernel stops in.
        assert.ok(GOOD_VERDICTS.has(r!.verdict), `${own} ${at}: ${r!.verdict} ${r!.reason}`);
        if (c.outcome === 'stopped') assert.ok((SILENT_STOP_REASONS as readonly string[]).includes(r!.reason ?? ''), `${own} ${at}: ${r!.reason}`);
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

/**
 * What each strategy can decode follows from the build's entry layout (docs/emulator.md): its own
 * layout's entries, and no other. On every build and at every instruction boundary:
 * - the build's own strategy is never wrong and never refuses (not_decoded);
 * - a strategy for another layout is never wrong: wherever the truth holds an entry a correct
 *   unwinder recovers, it refuses (not_decoded), and it refuses only where the walk meets an
 *   entry's marker;
 * - the section strategy on a kernel that encodes rbp reads that kernel's entries through the
 *   stubs' return addresses, and refuses exactly where rbp, or an interrupted rbp saved in
 *   pt_regs, holds &pt_regs|1 (machine state: SweepStep.encodedRbp);
 * - fp decodes no entry: never not_decoded, and wrong wherever the truth holds a recoverable entry.
 */
for (const tag of ['kernel_entry', 'section', 'encoded_fp', 'encoded_fp+section']) {
  test(`what each strategy decodes on a ${tag} kernel follows from its layout`, () => {
    const k = byTag(tag);
    const profile = KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts as EntryLayout[] });
    const encoded = k.layout === 'encoded_fp';
    const seen = { refused: 0, blind: 0, fpWrong: 0 };
    for (const sc of SCENARIOS) {
      sweepScenario(k, sc, (st) => {
        const truth = st.sample.truth!.frames;
        const recoverable = truth.some((t) => t.kind === 'regs' && !t.tolerated);
        // An entry's marker the walk can meet: a kernel-mode entry in the truth, the user-mode entry
        // of user_timer, or on encoded kernels an rbp holding &pt_regs|1 (a kthread's first
        // frame pointer is encode_frame_pointer(childregs) too, §2.7).
        const entryMet = truth.some((t) => t.kind === 'regs') || sc.name === 'user_timer' || (encoded && st.encodedRbp);
        for (const r of checkSample(st.sample, profile, ['fp', 'kernel_entry', 'section', 'encoded_fp']).results) {
          const { outcome } = classify(truth, { strategy: r.strategy, verdict: r.verdict, frames: r.unwind.frames.map((f) => f.ip) });
          const at = `${r.strategy} ${sc.name} ${st.fn}+0x${st.offset.toString(16)} (${st.op}): ${outcome} ${r.verdict} ${r.reason}`;
          if (r.strategy === 'fp') {
            assert.notEqual(outcome, 'not_decoded', at);
            if (recoverable) { assert.equal(outcome, 'wrong', at); seen.fpWrong++; }
          } else if (r.strategy === k.layout) {
            assert.ok(outcome !== 'wrong' && outcome !== 'not_decoded', at);
          } else if (r.strategy === 'section' && encoded) {
            assert.notEqual(outcome, 'wrong', at);
            assert.equal(outcome === 'not_decoded', st.encodedRbp, `${at}; encoded rbp live: ${st.encodedRbp}`);
            if (st.encodedRbp) seen.blind++;
          } else {
            assert.notEqual(outcome, 'wrong', at);
            if (recoverable) assert.equal(outcome, 'not_decoded', at);
            if (outcome === 'not_decoded') { assert.ok(entryMet, `${at}: refused without meeting an entry`); seen.refused++; }
          }
        }
      });
    }
    // The sweep does cross entries of every kind on every build.
    assert.ok(seen.refused > 100 && seen.fpWrong > 100, JSON.stringify(seen));
    if (encoded) assert.ok(seen.blind > 0, 'the sweep reaches the places where rbp holds &pt_regs|1');
  });
}

test('classify: a return address in the truth twice (in a window once) is matched to the copy that must be reported', () => {
  // A timer interrupt in the softirq of an earlier one: the handler's return into the stub (in its
  // prologue: tolerated) and the earlier handler's identical return address below (not tolerated).
  const stubRet = 0xffffffff81c00f0bn;
  const truth = [
    { ip: 0xffffffff81a40000n, kind: 'start' as const },
    { ip: stubRet, kind: 'call' as const, tolerated: 'prologue' as const },
    { ip: 0xffffffff81034bebn, kind: 'regs' as const, entry: 'timer' },
    { ip: stubRet, kind: 'call' as const },
  ];
  // The walk reports one copy (the lower one) and loses the one in the prologue window.
  const r = classify(truth, { strategy: 'encoded_fp', verdict: 'tolerated', frames: [0xffffffff81a40000n, 0xffffffff81034bebn, stubRet] });
  assert.deepEqual(r, { outcome: 'window', lost: ['prologue'] });
  // Losing both is a hard loss.
  assert.equal(classify(truth, { strategy: 'encoded_fp', verdict: 'truncated', frames: [0xffffffff81a40000n, 0xffffffff81034bebn] }).outcome, 'wrong');
});
