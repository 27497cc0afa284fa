// The live real host, end to end: boots Debian's kernel under QEMU/TCG, takes a few hundred
// samples through the gdbstub with and without single-stepping, and checks each with ORC.
// Assertions rest on facts independent of the unwinder: the guest's own memory as sampled (the
// pt_regs at the top of the task stack, the IRQ stack's link word), the ORC table's contents, the
// kernel's symbols. Runs only after scripts/realkernel-setup.sh (it skips with a message otherwise).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unavailableReason } from '../../services/realkernel/guest.ts';
import { RealHostSession } from '../../services/realkernel/session.ts';
import { runSampling, summarize, type CheckedSample } from '../../services/realkernel/run.ts';
import { formatTextDump, parseTextDump } from '../../services/core/dump/text.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import { ORC_TYPE } from '../../services/core/unwind/orc-table.ts';
import { PT_REGS_OFFSET, PT_REGS_SIZE } from '../../services/core/stack/layout.ts';
import { hasFullState } from '../../services/core/dump/sample.ts';
import { main } from '../../services/cli/main.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelMode, word } from '../support/sample-memory.ts';
import { assertCrossingsAgree } from '../support/crossings.ts';

const skip = unavailableReason();
const PER_MODE = Number(process.env.STACKSANITY_REALKERNEL_SAMPLES ?? 200);


describe('real kernel under QEMU', { skip: skip ? `skipped: ${skip}` : false }, () => {
  let session: RealHostSession;
  let plain: CheckedSample[] = [];
  let stepped: CheckedSample[] = [];
  let all: CheckedSample[] = [];

  before(async () => {
    session = await RealHostSession.open({ seed: 20261125 });
    plain = await runSampling(session, { samples: PER_MODE });
    stepped = await runSampling(session, { samples: PER_MODE, singleStep: true });
    all = [...plain, ...stepped];
  });

  after(() => session?.close());

  test('the kernel is the ORC build the reference describes (no frame pointers, ORC tables present)', (t) => {
    for (const [name, run] of [['plain', plain], ['single-step', stepped]] as const) {
      const s = summarize(run);
      t.diagnostic(`${name}: where ${JSON.stringify(s.where)} ORC ${JSON.stringify(s.orcVerdicts)} crossings ${JSON.stringify(s.crossings)}`);
    }
    assert.equal(session.build.framePointers, false);
    assert.ok(session.build.orc!.length > 100_000);
    assert.match(session.build.buildId, /^[0-9a-f]{40}$/);
    assert.equal(all.length, 2 * PER_MODE);
    assert.ok(all.filter((c) => kernelMode(c.sample)).length > PER_MODE / 2, 'most stops land in the kernel');
  });

  test('every kernel sample\'s ORC unwind reaches user pt_regs, ret_from_fork or an ORC end entry', (t) => {
    const orc = session.build.orc!;
    let thunk = 0;
    let switching = 0;
    let helperWindow = 0;
    let undefinedRows = 0;
    for (const c of all.filter((x) => kernelMode(x.sample))) {
      const r = c.check.results.find((x) => x.strategy === 'orc')!;
      const where = `${c.sample.comm} ${c.where} ip=${c.sample.regs!.ip!.toString(16)}: ${r.unwind.message ?? ''}`;
      const startFn = session.profile.symbols.format(c.sample.regs!.ip!);
      if (r.unwind.outcome === 'error' && /^__x86_indirect_thunk_/.test(startFn) && r.unwind.frames.length <= 2) {
        // Inside a retpoline thunk past its first instruction (only single-stepping lands there):
        // `mov %reg,(%rsp)` has replaced the return address with the branch target, which the
        // 6.1 ORC data still describes as a call frame — the kernel's own unwinder fails here too.
        assert.ok(c.singleStep, where);
        assert.ok(['orc_undefined', 'non_text_return_address', 'frame_not_ascending'].includes(r.reason!), where);
        thunk++;
        continue;
      }
      const row = orc.find(Number(BigInt.asIntN(64, c.sample.regs!.ip!)));
      if (r.unwind.outcome === 'error' && r.unwind.frames.length === 1 && /^asm_/.test(startFn) && orc.type[row] === ORC_TYPE.REGS_PARTIAL && orc.type[row + 1] === ORC_TYPE.REGS) {
        // Right after an IDT stub's `call error_entry` (before `mov %rax,%rsp` and its REGS hint):
        // error_entry has pushed the full pt_regs and returned, but 6.1's ORC row still describes
        // the iret frame as it was before the call, so the kernel's own unwinder misreads it too.
        // A genuine one-instruction blind spot of the kernel's ORC data: a finding, not a crash.
        assert.ok(r.reason !== undefined && r.unwind.message !== undefined, where);
        helperWindow++;
        continue;
      }
      if (r.unwind.outcome === 'error' && r.reason === 'orc_undefined') {
        // The kernel's own table has no unwind state for an address the walk reached (an undefined
        // row: unwind_orc.c's `goto err`): the kernel's unwinder fails there as well. Rare under
        // QEMU's timing (once in ~2,000 samples, in a single-stepped softirq), and reported as a
        // finding; a systematic misreading would show as many of these.
        t.diagnostic(`ORC row undefined: ${where}`);
        undefinedRows++;
        continue;
      }
      if (r.unwind.outcome === 'error' && /^__switch_to_asm\+/.test(startFn)) {
        // Mid task switch (issue 7's edge case): after `mov TASK_threadsp(%rsi),%rsp` the frames
        // being popped belong to the next task, and the RSB-filling sequence there pushes return
        // addresses of its own; the walk may stop. It must stop with a reason, never crash.
        assert.ok(r.reason !== undefined && r.unwind.message !== undefined, where);
        switching++;
        continue;
      }
      assert.ok(['user', 'kthread', 'end_of_stack'].includes(r.unwind.outcome), `${r.unwind.outcome} ${where}`);
      const last = r.unwind.frames[r.unwind.frames.length - 1]!;
      if (r.unwind.outcome === 'end_of_stack' || r.unwind.outcome === 'kthread') {
        // The table itself says "end" at the last frame's lookup address (ip - 1 after a call).
        const i = orc.find(last.kind === 'call' ? last.ipS - 1 : last.ipS);
        assert.equal(orc.type[i], ORC_TYPE.END_OF_STACK, where);
      }
      if (r.unwind.outcome === 'kthread') {
        // A kthread's bottom: sp at task_pt_regs, the last return address in ret_from_fork (or
        // the boot CPU's idle task, whose bottom is the head code).
        const name = session.profile.symbols.format(last.ip, last.kind === 'call');
        assert.match(name, /^(ret_from_fork|secondary_startup_64|x86_64_start|start_cpu)/, where);
      }
      assert.ok(['consistent', 'truncated'].includes(c.check.results.find((x) => x.strategy === 'orc')!.verdict), where);
    }
    t.diagnostic(`${thunk} single-step samples inside a retpoline thunk's return-address rewrite; ${switching} mid task switch`);
    assert.ok(switching <= all.length / 50, `${switching} samples stopped inside __switch_to_asm`);
    assert.ok(helperWindow <= all.length / 50, `${helperWindow} samples right after an IDT stub's call error_entry`);
    assert.ok(undefinedRows <= all.length / 100, `${undefinedRows} samples reached an undefined ORC row`);
  });

  test('user pt_regs lie at the top of the task stack and hold a user ip', () => {
    let n = 0;
    for (const c of all.filter((x) => kernelMode(x.sample))) {
      const r = c.check.results.find((x) => x.strategy === 'orc')!;
      if (r.unwind.outcome !== 'user') continue;
      const task = c.sample.stacks.find((s) => s.type === 'task');
      if (!task) continue; // a user-mode iret frame on the entry trampoline stack
      const regs = task.end - BigInt(PT_REGS_SIZE); // task_pt_regs(), from the stack bounds alone
      assert.equal(r.unwind.userRegsAt, regs, `${c.sample.comm} ${c.where}`);
      const cs = word(task, regs + BigInt(PT_REGS_OFFSET.cs))!;
      const ip = word(task, regs + BigInt(PT_REGS_OFFSET.ip))!;
      assert.equal(cs & 3n, 3n, 'user code segment');
      assert.ok(ip < 0x0000800000000000n && ip > 0n, `user ip ${ip.toString(16)}`);
      n++;
    }
    assert.ok(n > 0, 'some samples were inside syscalls or exceptions from user mode');
  });

  test('every IRQ-stack sample links back to its task stack', () => {
    const irq = all.filter((c) => c.where === 'irq');
    for (const c of irq) {
      const st = c.sample.stacks.find((s) => s.type === 'irq')!;
      const task = c.sample.stacks.find((s) => s.type === 'task');
      assert.ok(task, 'the interrupted task stack was read too');
      // call_on_irqstack wrote the interrupted rsp into the IRQ stack's top word.
      const link = word(st, st.end - 8n)!;
      assert.ok(link >= task.begin && link < task.end, `link ${link.toString(16)} lies on the task stack`);
      const r = c.check.results.find((x) => x.strategy === 'orc')!;
      const startFn = session.profile.symbols.format(c.sample.regs!.ip!);
      if (/^__x86_indirect_thunk_/.test(startFn) && r.unwind.outcome === 'end_of_stack' && r.unwind.frames.length === 1) {
        // Stopped in a retpoline thunk (sampled or single-stepped there): the 6.1 ORC table marks the
        // thunk as an end hint, so the kernel's own unwinder stops here too — Debian 6.1's genuine
        // blind spot, which the checker reports as one finding (truncated / orc_end_hint).
        assert.equal(session.build.orc!.type[session.build.orc!.find(r.unwind.frames[0]!.ipS)], ORC_TYPE.END_OF_STACK, startFn);
        assert.equal(r.verdict, 'truncated');
        assert.equal(r.reason, 'orc_end_hint');
        continue;
      }
      assert.deepEqual(r.unwind.stacks.slice(0, 2), ['irq', 'task'], r.unwind.message);
      assert.ok(r.unwind.frames.some((f) => f.stack === 'task'), 'frames continue on the task stack');
    }
  });

  test('every entry boundary agrees with the section cross-check', () => {
    assertCrossingsAgree(all);
  });

  test('the frame-pointer strategies are not applicable here, not failures', () => {
    for (const c of all) {
      for (const r of c.check.results.filter((x) => x.strategy !== 'orc')) {
        assert.deepEqual([r.verdict, r.reason], ['not_applicable', 'no_frame_pointers']);
      }
    }
  });

  test('offline: `stacksanity check --vmlinux` on the bzImage, no profile: the same orc verdicts, the FP strategies not_applicable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stacksanity-vmlinux-'));
    try {
      // Samples the sampler could give no stack window (kernel code still on the user's rsp at
      // syscall entry) are callchain-only to the CLI; compare the ones that carry stack memory.
      const withStacks = all.filter((c) => hasFullState(c.sample));
      writeFileSync(join(dir, 'samples.dump'), formatTextDump(withStacks.map((c) => c.sample)));
      writeFileSync(join(dir, 'kallsyms'), session.kallsyms);
      let out = '';
      let err = '';
      const code = await main(['check', '--vmlinux', session.build.files.image, '--kallsyms', join(dir, 'kallsyms'), '--format', 'json', join(dir, 'samples.dump')],
        { out: (x) => (out += x), err: (x) => (err += x) });
      assert.ok(code === 0 || code === 1, `exit ${code}`);
      const j = JSON.parse(out) as {
        verdicts: Record<string, Record<string, number>>; rejections: { sampleIndex: number; message: string }[];
        profile: { frame_pointers: boolean | null; frame_pointers_source: string | null };
      };
      // No profile file: the image itself says "no frame pointers" (Debian's config, checked by
      // the first test, agrees), so every FP strategy is not_applicable on every checked sample.
      assert.deepEqual([j.profile.frame_pointers, j.profile.frame_pointers_source], [false, 'orc']);
      assert.match(err, /frame pointers: no, from the ORC table/);
      const checked = Object.values(j.verdicts.orc ?? {}).reduce((a, b) => a + b, 0);
      for (const s of ['fp', 'section', 'encoded_fp']) assert.deepEqual(j.verdicts[s], { not_applicable: checked }, s);
      const got = j.verdicts.orc ?? {};
      // The CLI validates samples first (e.g. sp on none of the captured stacks): those it rejects
      // with a message are left out of the comparison, and must stay rare.
      const rejected = new Set(j.rejections.map((r) => r.sampleIndex));
      assert.ok(rejected.size <= all.length / 50, JSON.stringify(j.rejections));
      const want: Record<string, number> = {};
      for (const [i, c] of withStacks.entries()) {
        if (!kernelMode(c.sample) || rejected.has(i)) continue;
        const v = c.check.results.find((x) => x.strategy === 'orc')!.verdict;
        want[v] = (want[v] ?? 0) + 1;
      }
      assert.deepEqual(got, want);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the samples survive the text dump unchanged: parsed back, they unwind to the same traces', () => {
    const text = formatTextDump(all.map((c) => c.sample));
    const back = parseTextDump(text);
    assert.deepEqual(back.rejected.map((r) => r.message), []);
    assert.equal(back.samples.length, all.length);
    back.samples.forEach((s, i) => {
      const a = checkSample(s, session.profile, ['orc']).results[0]!;
      const b = all[i]!.check.results.find((x) => x.strategy === 'orc')!;
      assert.deepEqual(a.unwind.frames.map((f) => f.ip), b.unwind.frames.map((f) => f.ip));
      assert.equal(a.verdict, b.verdict);
    });
  });
});
