// One short single-step sweep on the real kernel (the timer interrupt taken in user mode, Debian's
// ORC build from the cache), checked against facts that do not come from the sweep's own truth:
// where the CPU pushes the hardware frame (Intel SDM vol. 3 §6.14.2: from ring 3 the stack is
// TSS.sp0, five words pushed), that the path ends with iretq at the interrupted instruction and
// every call it made has returned, that each step executed exactly one instruction (rip moves,
// except for the iterations of a rep-prefixed string instruction), and that every step the checker
// tolerated lies in a window the kernel documents. Skips when QEMU or the kernel cache is missing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unavailableReason } from '../../services/realkernel/guest.ts';
import { symbolAddresses } from '../../services/realkernel/kernel.ts';
import { openSweepTarget, type SweepTarget } from '../../services/realkernel/sweep-target.ts';
import { blindSpotTable, sweepEntry, sweepFindings, type EntrySweep } from '../../services/realkernel/real-sweep.ts';
import { GOOD_VERDICTS } from '../../services/core/check/reasons.ts';
import { SILENT_STOP_REASONS } from '../../services/core/check/silent-stops.ts';
import { TOLERANCES } from '../../services/core/dump/sample.ts';

const skip = unavailableReason();

describe('single-step sweep of the timer interrupt from user mode', { skip: skip ? `skipped: ${skip}` : false }, () => {
  let target: SweepTarget;
  let sw: EntrySweep;

  before(async () => {
    target = await openSweepTarget({});
    sw = await sweepEntry(target, 'timer', 'user', { maxSteps: 60_000 });
  });

  after(() => target?.close());

  test('the interrupted instruction runs again, with every call returned (shadow depth 0)', (t) => {
    t.diagnostic(`${sw.steps.length} steps, ${sw.calls} calls, ${sw.rets} rets, ${sw.repeats} rep iterations, stepped over ${JSON.stringify(sw.steppedOver)}`);
    assert.equal(sw.returned, true);
    assert.equal(sw.finalDepth, 0);
    assert.equal(sw.calls, sw.rets);
    assert.ok(sw.steps.length >= 1000, `a timer interrupt from user mode is over a thousand instructions, got ${sw.steps.length}`);
    // From user mode the way back is iretq (swapgs_restore_regs_and_return_to_usermode).
    assert.equal(sw.steps[sw.steps.length - 1]!.op, 'iret');
    assert.ok(sw.interrupted.user && sw.interrupted.ip < 0x800000000000n);
  });

  test('at the stub\'s first instruction the hardware frame sits at TSS.sp0 - 40, as the CPU pushes it from ring 3', async () => {
    const first = sw.steps[0]!;
    assert.equal(first.ip, sw.stubAddress);
    const hw = sw.hwFrame!;
    assert.equal(hw.at, first.sp);
    // The per-CPU TSS (cpu_tss_rw.x86_tss.sp0, at offset 4 of the packed struct).
    const syms = symbolAddresses(target.kallsyms, ['__per_cpu_offset', 'cpu_tss_rw']);
    const base = syms.has('__per_cpu_offset') ? (await target.gdb.readU64(syms.get('__per_cpu_offset')!))! : 0n;
    const sp0 = await target.gdb.readU64(base + syms.get('cpu_tss_rw')! + 4n);
    assert.equal(first.sp, sp0! - 40n);
    assert.equal(hw.cs & 3n, 3n, 'the pushed cs is a ring-3 selector');
    assert.equal(hw.ss & 3n, 3n, 'the pushed ss is a ring-3 selector');
    assert.ok((hw.flags & 0x200n) !== 0n, 'IF was set: the interrupt was taken with interrupts enabled');
    assert.equal(hw.ip, sw.interrupted.ip);
    assert.equal(hw.sp, sw.interrupted.sp);
  });

  test('each step executed one instruction: rip moves except in a rep-prefixed string instruction', () => {
    let stays = 0;
    for (let i = 1; i < sw.steps.length; i++) {
      const a = sw.steps[i - 1]!;
      const b = sw.steps[i]!;
      if (a.ip === b.ip) {
        stays++;
        assert.equal(b.op, a.op, `step ${i}`);
      }
    }
    assert.equal(stays, sw.repeats);
    // Step indices are consecutive: the count is the number of instructions (iterations) executed.
    sw.steps.forEach((s, i) => assert.equal(s.index, i));
  });

  test('every tolerated step is in a documented window; every failing one is a finding', () => {
    const kinds = new Set<string>(TOLERANCES);
    let failing = 0;
    for (const st of sw.steps) {
      for (const r of st.results) {
        if (r.outcome === 'window') {
          for (const l of r.lost) assert.ok(kinds.has(l), `step ${st.index} ${st.fn}+0x${st.offset.toString(16)}: lost ${l}`);
          // On an ORC kernel the only window is entry code's (its hints describe pt_regs, not calls).
          if (target.unwinder === 'orc') assert.deepEqual([...new Set(r.lost)], ['entry_code'], `step ${st.index}`);
          // The activation holding the lost return address runs entry code at that instant.
          const lostAt = st.truth.filter((f) => f.tolerated === 'entry_code' && f.kind === 'call');
          assert.ok(lostAt.length > 0, `step ${st.index}`);
        }
        if (r.verdict === 'tolerated' && r.reason !== undefined) {
          assert.ok((SILENT_STOP_REASONS as readonly string[]).includes(r.reason) || r.reason === 'stopped_in_lossy_window', `step ${st.index}: ${r.reason}`);
        }
      }
      if (st.check!.results.some((r) => !GOOD_VERDICTS.has(r.verdict) || r.falseReliable)) failing++;
    }
    const findings = sweepFindings([sw], target.profile);
    const counted = new Set<number>();
    for (const f of findings) for (const e of f.examples) counted.add(e);
    assert.ok(failing === 0 || findings.length > 0, 'failing steps come out as findings');
    const total = findings.reduce((n, f) => n + f.count, 0);
    assert.ok(total >= failing, `${total} finding occurrences for ${failing} failing steps`);
    const table = blindSpotTable([sw], target.profile, target.unwinder, target.buildId);
    assert.equal(table.steps, sw.steps.length);
    for (const [s, tot] of Object.entries(table.totals)) {
      assert.equal(tot.exact + tot.window + tot.stopped + tot.not_decoded + tot.wrong, sw.steps.length, s);
    }
  });
});
