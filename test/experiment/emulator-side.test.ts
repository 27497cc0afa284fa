// The emulator's side of the experiment, asserted from the emulator's ground truth and the entry
// designs as issue 18 states them: each design's own strategy reads its own entries, encoded_fp
// needs &pt_regs|1 in rbp (which only the encoded design puts there), and the designs' entry code
// differs by the instructions that mark the entry (one lea; pushq $kernel_entry + push %rbp + mov).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EMULATOR_STRATEGIES, emulatedKernel, emulatorEntryCost, emulatorPath, emulatorPaths, pathToScenarios, scenarioEntries, scenarioToPath,
} from '../../services/experiment/emulator-side.ts';
import { DESIGNS, DESIGN_STRATEGY, type EmulatorPath } from '../../services/experiment/results.ts';
import { SCENARIOS, sweepScenario } from '../../services/emulator/sweep.ts';
import { OPS } from '../../services/emulator/image.ts';
import { SWEEP_STRATEGIES, sweepKernel } from '../../services/cli/sweep.ts';

const paths = emulatorPaths();
const pathOf = (design: string, scenario: string): EmulatorPath => paths.find((p) => p.layout === design && p.scenario === scenario)!;

test('one path per design and scenario, every step judged for every strategy', () => {
  assert.equal(paths.length, DESIGNS.length * SCENARIOS.length);
  for (const p of paths) {
    assert.ok(p.steps > 100, `${p.layout} ${p.scenario}: ${p.steps} steps`);
    for (const [s, t] of Object.entries(p.totals)) {
      const sum = t.exact + t.window + t.stopped + t.not_decoded + t.wrong;
      assert.equal(sum, p.steps, `${p.layout} ${p.scenario} ${s}`);
      // Rows are runs of non-exact steps: together they cover exactly the steps that are not exact.
      const inRows = p.blindSpots.filter((r) => r.strategy === s).reduce((a, r) => a + r.steps, 0);
      assert.equal(inRows, sum - t.exact, `${p.layout} ${p.scenario} ${s}: rows cover the non-exact steps`);
    }
  }
});

test('the same sweep as `stacksanity sweep`: per-layout totals are the sums of the per-scenario ones', () => {
  assert.deepEqual([...EMULATOR_STRATEGIES], [...SWEEP_STRATEGIES]);
  for (const d of DESIGNS) {
    const t = sweepKernel(emulatedKernel(d).k);
    const sum: Record<string, Record<string, number>> = {};
    for (const p of paths.filter((x) => x.layout === d)) {
      for (const [s, o] of Object.entries(p.totals)) for (const [k, n] of Object.entries(o)) (sum[s] ??= {})[k] = (sum[s]![k] ?? 0) + n;
    }
    assert.deepEqual(sum, t.totals, d);
    assert.equal(paths.filter((x) => x.layout === d).reduce((a, p) => a + p.steps, 0), t.steps);
  }
});

test("each design's own strategy is never wrong and never refuses on a clean kernel", () => {
  for (const p of paths) {
    const own = DESIGN_STRATEGY[p.layout];
    const t = p.totals[own]!;
    assert.equal(t.wrong, 0, `${own} on ${p.layout} ${p.scenario}`);
    assert.equal(t.not_decoded, 0, `${own} on ${p.layout} ${p.scenario}`);
    // Nothing it does there is a failure: no finding is raised.
    for (const r of p.blindSpots.filter((x) => x.strategy === own)) assert.equal(r.findingId, undefined, `${own} ${r.where}: ${r.findingTitle}`);
  }
});

test('encoded_fp reads only the encoded design: not exact at the interrupted frame of the other two', () => {
  // In the timer handler's body (frame built, after its prologue) the interrupted idle loop is
  // recoverable on every design; only the encoded one leaves &pt_regs|1 in the chain for encoded_fp.
  const inHandlerBody = (p: EmulatorPath, strategy: string): string[] =>
    p.blindSpots.filter((r) => r.strategy === strategy && r.fn === 'sysvec_apic_timer_interrupt' && (r.outcome === 'wrong' || r.outcome === 'not_decoded')).map((r) => r.where);
  for (const d of ['section', 'kernel_entry'] as const) {
    const p = pathOf(d, 'timer_softirq_idle');
    assert.ok(inHandlerBody(p, 'encoded_fp').length > 0, `encoded_fp on ${d}: the handler body loses the interrupted frame`);
    assert.ok(p.totals['encoded_fp']!.wrong + p.totals['encoded_fp']!.not_decoded > 0);
    assert.deepEqual(inHandlerBody(p, DESIGN_STRATEGY[d]), [], `${d}'s own strategy is exact there`);
  }
  const enc = pathOf('encoded', 'timer_softirq_idle');
  assert.deepEqual(inHandlerBody(enc, 'encoded_fp'), []);
  // The baseline (no entry decoding) loses it on every design, and that is a failure with a finding.
  for (const d of DESIGNS) {
    const rows = pathOf(d, 'timer_softirq_idle').blindSpots.filter((r) => r.strategy === 'fp' && r.outcome === 'wrong');
    assert.ok(rows.length > 0 && rows.every((r) => r.findingId !== undefined && /^[0-9a-f]{16}$/.test(r.findingId) && r.findingTitle!.startsWith('fp ')), d);
    assert.ok(rows.some((r) => r.lost.includes('interrupted')), `${d}: fp loses the interrupted frame`);
  }
});

test('on the encoded design the section strategy steps aside where rbp holds &pt_regs|1, as on a real 6.1 kernel', () => {
  // Modern Linux's stubs are in the entry section and encode rbp: from the stub's lea until the
  // handler has its frame (and again from its return until rbp is restored), the entry is
  // encoded_fp's to read, and section says so instead of failing.
  for (const sc of ['timer_softirq_idle', 'irq_in_syscall', 'nmi_in_pf_in_irq']) {
    const rows = pathOf('encoded', sc).blindSpots.filter((r) => r.strategy === 'section' && r.outcome === 'not_decoded');
    assert.ok(rows.length > 0, sc);
    for (const r of rows) {
      assert.equal(r.verdict, 'not_applicable', `${sc} ${r.where}`);
      assert.equal(r.reason, 'encoded_entry_window', `${sc} ${r.where}`);
      assert.equal(r.findingId, undefined);
    }
    assert.ok(rows.some((r) => r.fn.startsWith('asm_')), `${sc}: in the stub after the lea`);
  }
});

test('blind-spot rows name the code: where is fn+offset range inside that function', () => {
  for (const p of paths.filter((x) => x.layout === 'section')) {
    const { k } = emulatedKernel('section');
    for (const r of p.blindSpots) {
      const m = /^(.+?)\+0x([0-9a-f]+)(?:\.\.\+0x([0-9a-f]+))?$/.exec(r.where);
      assert.ok(m, r.where);
      assert.equal(m[1], r.fn);
      const f = k.fn(r.fn);
      const from = parseInt(m[2]!, 16);
      const to = m[3] === undefined ? from : parseInt(m[3], 16);
      assert.ok(from <= to && f.offs.includes(from) && f.offs.includes(to), `${r.where} on instruction boundaries of ${r.fn}`);
      // A window is a documented loss: it raises no finding.
      if (r.outcome === 'window') assert.equal(r.findingId, undefined, r.where);
    }
  }
});

test('each scenario maps to the real path of the entry it takes, in the mode it takes it', () => {
  assert.equal(scenarioToPath('timer_softirq_idle'), 'timer from kernel');
  assert.equal(scenarioToPath('user_timer'), 'timer from user');
  assert.equal(scenarioToPath('kthread_machine_check'), undefined, 'the real sweep cannot raise #MC');
  assert.equal(scenarioToPath('no_such_scenario'), undefined);
  assert.deepEqual(pathToScenarios('timer from kernel'), ['timer_softirq_idle']);
  // From the machine: at the C handler's first instruction, a kernel-mode entry is in the truth as
  // pt_regs of its type; a user-mode entry ends the chain and is not.
  const { k } = emulatedKernel('section');
  for (const sc of SCENARIOS) {
    for (const e of scenarioEntries(sc.name)) {
      const stub = k.fn(e.stub);
      const handler = stub.targets[stub.stub!.callIdx]!.name;
      const [type, , from] = e.path.split(' ');
      assert.equal(stub.stub!.entry, type, `${sc.name}: ${e.stub} is a ${type} entry`);
      let seen = false;
      sweepScenario(k, sc, (st) => {
        if (seen || st.fn !== handler || st.insn !== 0) return;
        seen = true;
        const hasRegs = st.sample.truth!.frames.some((f) => f.kind === 'regs' && f.entry === type);
        assert.equal(hasRegs, from === 'kernel', `${sc.name}: ${e.path}`);
      });
      assert.ok(seen, `${sc.name} runs ${handler}`);
    }
  }
});

test('rows can be kept for some strategies only, totals for all', () => {
  const p = emulatorPath('section', 'timer_softirq_idle', { rowStrategies: ['section'] });
  assert.deepEqual(p.totals, pathOf('section', 'timer_softirq_idle').totals);
  assert.ok(p.blindSpots.length > 0 && p.blindSpots.every((r) => r.strategy === 'section'));
  assert.deepEqual(p.blindSpots, pathOf('section', 'timer_softirq_idle').blindSpots.filter((r) => r.strategy === 'section'));
});

test('the entry window covers the stub from its first instruction to its iret', () => {
  const p = emulatorPath('encoded', 'timer_softirq_idle', { window: 'entry' });
  const whole = pathOf('encoded', 'timer_softirq_idle');
  assert.ok(p.steps < whole.steps);
  // The idle loop below the entry is not in the window; the stub and the handler are.
  assert.ok(!p.blindSpots.some((r) => r.fn === 'do_idle' || r.fn === 'secondary_startup_64'));
  assert.ok(p.blindSpots.some((r) => r.fn === 'asm_sysvec_apic_timer_interrupt'));
  // A user-mode entry is the whole scenario.
  assert.equal(emulatorPath('section', 'user_timer', { window: 'entry' }).steps, pathOf('section', 'user_timer').steps);
});

test('entry cost: the marking instructions are the whole difference between the designs', () => {
  for (const sc of ['timer_softirq_idle', 'user_timer', 'irq_in_syscall', 'syscall_page_fault', 'nmi_in_pf_in_irq']) {
    const s = emulatorEntryCost('section', sc)!;
    const e = emulatorEntryCost('encoded', sc)!;
    const ke = emulatorEntryCost('kernel_entry', sc)!;
    // section ≤ encoded ≤ kernel_entry, on the way in and out.
    assert.ok(s.in <= e.in && e.in <= ke.in, `${sc} in: ${s.in} ${e.in} ${ke.in}`);
    assert.ok(s.out <= e.out && e.out <= ke.out, `${sc} out: ${s.out} ${e.out} ${ke.out}`);
    // encoded adds lea 1(%rsp),%rbp; kernel_entry adds pushq $kernel_entry, push %rbp, mov %rsp,%rbp.
    assert.equal(e.in - s.in, 1, sc);
    assert.equal(ke.in - s.in, 3, sc);
    // On the way out encoded restores rbp with the other registers; kernel_entry drops its two words.
    assert.equal(e.out, s.out, sc);
    assert.equal(ke.out - s.out, 2, sc);
  }
  // Measured on the sweep, the cost is every stub instruction up to the handler call, and the rest.
  const { k } = emulatedKernel('kernel_entry');
  const stub = k.fn('asm_sysvec_apic_timer_interrupt');
  const c = emulatorEntryCost('kernel_entry', 'timer_softirq_idle')!;
  assert.equal(c.in, stub.stub!.callIdx + 1);
  assert.equal(c.out, stub.ops.length - stub.stub!.callIdx - 1);
  assert.equal(stub.ops[stub.ops.length - 1], OPS.IRET);
  assert.equal(c.handler, 'sysvec_apic_timer_interrupt');
  // The syscall entry is the same in every design (no entry marks it), including the instructions
  // it runs on the user's stack before the sweep can sample.
  const sys = DESIGNS.map((d) => emulatorEntryCost(d, 'syscall_page_fault', 'syscall from user')!);
  assert.ok(sys.every((x) => x.in === sys[0]!.in && x.out === sys[0]!.out));
  const ent = k.fn('entry_SYSCALL_64');
  assert.equal(sys[0]!.in, ent.stub!.callIdx + 1);
  assert.equal(emulatorEntryCost('section', 'kthread_machine_check'), undefined);
});
