// Kernel-log parsing on syzkaller's real reports (../shared/corpus/kernel-logs). Expected values
// are counted by hand (or with the grep given) from the files, not from the parser:
//
// report-207 (v4.9-era, old "[<addr>]" style, <IRQ>/<EOI> inline), its one Call Trace, line 13:
//   reliable frames: _sched_show_task, sched_show_task, rcu_check_callbacks, update_process_times,
//   tick_sched_handle.isra.17, tick_sched_timer, __hrtimer_run_queues, hrtimer_interrupt,
//   local_apic_timer_interrupt, smp_apic_timer_interrupt, smp_apic_timer_interrupt_entry_after_kaiser_bti
//   (11, on the IRQ stack), then after <EOI>: free_percpu, array_map_free, bpf_map_free_deferred,
//   process_one_work, worker_thread, kthread, ret_from_fork (7) = 18; "? " entries 4 + 9 = 13;
//   one foreign line inside ("executing program"); first address ffffffff813a0886.
// report-314 (double fault): two traces, lines 20 (empty: "Code:" follows at once) and 25:
//   <#DF>, 5 reliable (dump_stack, panic, df_debug, do_double_fault, double_fault), one register
//   block (RIP: 0010:compat_sock_ioctl+0xfea/0x103e), 1 "? " (dev_ioctl), then the FP unwinder's
//   "has bad 'bp' value" warning and unwind_dump with 3 stack words.
// report-720 (6.10-era, printk caller tags): trace at line 11 ([C1], <TASK>): in lines 12-146,
//   grep '\]  \? ' → 95 and grep -E '\]  [A-Za-z0-9_.]+\+0x' → 31; ends with entry_SYSCALL_64_after_hwframe
//   and "RIP: 0033:0x7f5079f7892c" (user regs). Trace at line 198 ([C0], "NMI backtrace for cpu 0"):
//   <NMI> with 13 "? " entries only, an empty <TASK>.
// report-145 (4.x, KASAN build): trace at line 9, 40 frames and no "? " line (grep -c ' ? ' → 0 in
//   lines 10-60): 10 frames, then the stub apic_timer_interrupt (index 10), then "RIP: 0010:
//   __sanitizer_cov_trace_pc" (the interrupted function, printed as regs, not as a frame), 14 more
//   frames on the IRQ stack, </IRQ>, 15 on the task stack ending at entry_SYSCALL_64_fastpath, and
//   "RIP: 0033:0x452ac9" (user regs).
// report-517 (5.3, caller tags): trace at line 19, <IRQ> and 6 frames ending at the stub
//   apic_timer_interrupt (index 5), then </IRQ>, "Modules linked in:" and the end of the trace: the
//   interrupted function and the task stack were never printed.
// All files: 248 "Call Trace:" lines (grep -c 'Call Trace:' summed over the 107 files).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernelLogContext, kernelLogSamples, looksLikeKernelLog, parseKernelLog } from '../../services/realhost/kernel-log.ts';
import { checkHostCallchain } from '../../services/realhost/callchain-check.ts';
import { referenceOf } from '../../services/core/check/checker.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = path.resolve(root, '../shared/corpus/kernel-logs');
const skip = existsSync(dir) ? false : `${dir} not found: ../shared/corpus is absent`;
const read = (n: number): string => readFileSync(path.join(dir, `syzkaller-report-${n}.txt`), 'utf8');

describe('kernel logs: hand-counted traces', { skip }, () => {
  it('report-207: old [<addr>] style with <IRQ> and <EOI> on the frame lines', () => {
    const r = parseKernelLog(read(207));
    assert.equal(r.traces.length, 1);
    const t = r.traces[0]!;
    assert.equal(t.line, 13);
    assert.equal(t.frames.filter((f) => f.reliable).length, 18);
    assert.equal(t.frames.filter((f) => !f.reliable).length, 13);
    assert.equal(t.frames.filter((f) => f.reliable && f.segment === 'irq').length, 11);
    assert.equal(t.frames[0]!.addr, 0xffffffff813a0886n);
    assert.equal(t.frames[0]!.text, '_sched_show_task+0x2a6/0x4f0');
    assert.equal(t.interleaved, 1);
    // The sample keeps all 31 frame lines in printed order; the "? " ones (lines 15, 21, 22, 23,
    // 28, 30, 32, 36, 37, 40, 41, 42, 45 of the file) are flagged unreliable and keep their
    // printed addresses.
    const s = kernelLogSamples(r)[0]!;
    assert.equal(s.callchain!.length, 31);
    const unreliable = s.callchain!.flatMap((e, i) => (e.flags.includes('unreliable') ? [i] : []));
    assert.deepEqual(unreliable, [1, 8, 9, 10, 15, 17, 19, 22, 23, 26, 27, 28, 30]);
    assert.deepEqual(s.callchain![15], { addr: 0xffffffff81010d64n, sym: '_raw_spin_unlock_irqrestore+0x64/0x80', dso: '[kernel.kallsyms]', flags: ['unreliable'] });
    assert.equal(s.callchain![29]!.sym, 'ret_from_fork+0x5c/0x90');
    assert.deepEqual(s.callchain![29]!.flags, []);
    assert.equal(s.callchain![30]!.sym, 'kthread_create_on_node+0x460/0x460');
    // A kthread's trace ends at ret_from_fork: a valid bottom.
    assert.equal(checkHostCallchain(s, undefined, kernelLogContext(t))!.bottom, 'ret_from_fork');
  });

  it('report-314: a #DF trace with pt_regs inside and the FP unwinder\'s bad-bp warning', () => {
    const r = parseKernelLog(read(314));
    assert.deepEqual(r.traces.map((t) => t.line), [20, 25]);
    assert.equal(r.traces[0]!.frames.length, 0);
    const t = r.traces[1]!;
    assert.deepEqual(t.segments, ['df']);
    assert.deepEqual(t.frames.filter((f) => f.reliable).map((f) => f.name), ['dump_stack', 'panic', 'df_debug', 'do_double_fault', 'double_fault']);
    assert.deepEqual(t.frames.filter((f) => !f.reliable).map((f) => f.name), ['dev_ioctl']);
    assert.deepEqual(t.entryRegs.map((x) => x.ripText), ['0010:compat_sock_ioctl+0xfea/0x103e']);
    assert.equal(t.entryRegs[0]!.regs.bp, 0xffffc90000277e18n);
    assert.deepEqual(t.warnings.map((w) => [w.kind, w.words.length]), [['bad_regs_bp', 0], ['unwind_dump', 3]]);
    assert.equal(t.comm, 'netifd');
    assert.equal(t.pid, 917);
    const s = kernelLogSamples(r)[1]!;
    const c = checkHostCallchain(s, undefined, kernelLogContext(t))!;
    assert.equal(c.verdict, 'error');
    assert.equal(c.reason, 'bad_frame_pointer');
  });

  it('report-720: printk caller tags, <TASK>, user regs at the end, an NMI backtrace', () => {
    const r = parseKernelLog(read(720));
    const t = r.traces.find((x) => x.line === 11)!;
    assert.equal(t.caller, 'C1');
    assert.equal(t.frames.filter((f) => f.reliable).length, 31);
    assert.equal(t.frames.filter((f) => !f.reliable).length, 95);
    assert.equal(t.frames.filter((f) => f.reliable).at(-1)!.name, 'entry_SYSCALL_64_after_hwframe');
    assert.equal(kernelLogContext(t).endsInUserRegs, true);
    const nmi = r.traces.find((x) => x.line === 198)!;
    assert.equal(nmi.nmiBacktrace, true);
    assert.equal(nmi.caller, 'C0');
    assert.deepEqual(nmi.segments, ['nmi', 'task']);
    assert.equal(nmi.frames.length, 13);
    assert.ok(nmi.frames.every((f) => !f.reliable && f.segment === 'nmi'));
    assert.equal(nmi.regs?.ripText, '0010:common_interrupt_return+0x1a/0xcc');
  });
});

/**
 * A hand-built profile for a log's functions: each gets its own 64 KiB of text (every printed offset
 * is smaller), the interrupt stubs and syscall entries a slot in .entry.text, as in every x86-64
 * kernel since 2.6.39.
 */
function profileFor(names: string[]): KernelProfile {
  const stubs = names.filter((n) => /^(apic_timer_interrupt|page_fault|entry_SYSCALL_64\w*)$/.test(n));
  const text = names.filter((n) => !stubs.includes(n));
  const hex = (a: bigint): string => a.toString(16);
  const lines = ['ffffffff81000000 T _stext'];
  text.forEach((n, i) => lines.push(`${hex(0xffffffff81010000n + BigInt(i) * 0x10000n)} T ${n}`));
  lines.push('ffffffff82000000 T __entry_text_start');
  stubs.forEach((n, i) => lines.push(`${hex(0xffffffff82000000n + BigInt(i) * 0x1000n)} T ${n}`));
  lines.push(`${hex(0xffffffff82000000n + BigInt(stubs.length) * 0x1000n)} T __entry_text_end`, 'ffffffff83000000 T _etext');
  return KernelProfile.fromKallsyms(lines.join('\n') + '\n');
}

describe('kernel logs: entry boundaries on corpus traces (hand-built profiles)', { skip }, () => {
  it('report-145: the stub is followed by the pt_regs of the interrupted function; nothing is missing', () => {
    const r = parseKernelLog(read(145));
    const t = r.traces[0]!;
    assert.equal(t.line, 9);
    const profile = profileFor([...new Set(t.frames.map((f) => f.name))]);
    const s = kernelLogSamples(r, { profile })[0]!;
    assert.equal(s.callchain!.length, 40);
    assert.equal(s.callchain![10]!.sym, 'apic_timer_interrupt+0xa9/0xb0');
    const ctx = kernelLogContext(t);
    assert.deepEqual(ctx.regsAfter, [10]);
    const c = checkHostCallchain(s, profile, ctx)!;
    assert.deepEqual([c.verdict, c.bottom, c.kernelFrames, c.findings], ['consistent', 'syscall', 40, []]);
    // Read as a perf chain (no regs known): the next entry, __xfrm_decode_session, is kernel text
    // outside the entry section, which is all the check can ask of it.
    assert.deepEqual(checkHostCallchain(s, profile, { endsInUserRegs: true })!.findings, []);
  });

  it('report-517: the trace ends at the stub, so the interrupted function is missing', () => {
    const r = parseKernelLog(read(517));
    const t = r.traces[0]!;
    assert.equal(t.line, 19);
    const profile = profileFor([...new Set(t.frames.map((f) => f.name))]);
    const s = kernelLogSamples(r, { profile })[0]!;
    assert.deepEqual(s.callchain!.map((e) => e.sym!.split('+')[0]), ['timerqueue_del', '__remove_hrtimer', '__hrtimer_run_queues', 'hrtimer_interrupt', 'smp_apic_timer_interrupt', 'apic_timer_interrupt']);
    const c = checkHostCallchain(s, profile, kernelLogContext(t))!;
    assert.deepEqual([c.verdict, c.reason], ['missing_frames', 'missing_interrupted_frame']);
    assert.deepEqual(c.findings.map((f) => [f.index, f.reason]), [[5, 'missing_interrupted_frame']]);
    // Without a profile the stub cannot be placed in .entry.text: not judged.
    assert.equal(checkHostCallchain(s, undefined, kernelLogContext(t))!.verdict, 'consistent');
  });
});

describe('kernel logs: "? " entries are no reference for the checker', () => {
  it('referenceOf takes the reliable frames only', () => {
    const log = ['Call Trace:', ' [<ffffffff81000110>] a+0x10/0x40', ' [<ffffffff81000990>] ? stale+0x10/0x40', ' [<ffffffff81000220>] b+0x20/0x40', ''].join('\n');
    const s = kernelLogSamples(parseKernelLog(log))[0]!;
    assert.equal(s.callchain!.length, 3);
    const ref = referenceOf(s);
    assert.equal(ref.kind, 'host');
    assert.deepEqual(ref.frames.map((f) => BigInt.asUintN(64, BigInt(f.ipS)).toString(16)), ['ffffffff81000110', 'ffffffff81000220']);
  });
  it('a chain of "? " entries only gives no reference at all', () => {
    const s = kernelLogSamples(parseKernelLog('Call Trace:\n [<ffffffff81000990>] ? stale+0x10/0x40\n'))[0]!;
    assert.equal(referenceOf(s).kind, 'none');
    assert.equal(checkHostCallchain(s), undefined); // no kernel part: not judged
  });
});

describe('kernel logs: every corpus file', { skip }, () => {
  it('parses, with one trace per "Call Trace:" line (248 in 107 files)', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.txt'));
    assert.equal(files.length, 107);
    let traces = 0;
    for (const f of files) {
      const text = readFileSync(path.join(dir, f), 'utf8');
      assert.ok(looksLikeKernelLog(text), `${f} is recognised as a kernel log`);
      const r = parseKernelLog(text);
      traces += r.traces.length;
      for (const s of kernelLogSamples(r, { file: f })) for (const e of s.callchain!) assert.ok(!e.flags.includes('zero') || e.addr === 0n);
    }
    assert.equal(traces, 248);
  });

  // The runner's timeout is the hang guard; speed is a benchmark's business.
  it('fuzz: truncated and byte-flipped reports never throw or hang', { timeout: 180_000 }, () => {
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (const n of [207, 314, 720, 235, 245]) {
      const text = read(n);
      for (let k = 0; k < 60; k++) {
        const cut = Math.floor(rand() * text.length);
        kernelLogSamples(parseKernelLog(text.slice(0, cut)));
        const chars = [...text];
        for (let j = 0; j < 20; j++) chars[Math.floor(rand() * chars.length)] = String.fromCharCode(Math.floor(rand() * 256));
        const r = parseKernelLog(chars.join(''));
        for (const t of r.traces) kernelLogContext(t);
      }
    }
    // Pathological lines: long, bracket-heavy, colon-heavy.
    parseKernelLog(`Call Trace:\n ${'[<'.repeat(50_000)}\n ${'? '.repeat(50_000)}x+0x1/0x2\n${'RAX: '.repeat(40_000)}\n`);
  });
});

describe('kernel logs: small cases', () => {
  it('untagged interleaving: a foreign line between frames is skipped, the trace goes on', () => {
    const log = ['Call Trace:', ' a+0x1/0x10', 'random: crng init done', ' ? b+0x2/0x10', ' c+0x3/0x10', ' entry_SYSCALL_64_after_hwframe+0x44/0xa9', 'other message', ''].join('\n');
    const r = parseKernelLog(log);
    assert.equal(r.traces.length, 1);
    assert.deepEqual(r.traces[0]!.frames.map((f) => `${f.reliable ? '' : '? '}${f.name}`), ['a', '? b', 'c', 'entry_SYSCALL_64_after_hwframe']);
    assert.equal(r.traces[0]!.interleaved, 1);
    const s = kernelLogSamples(r)[0]!;
    // No address was printed: 0 flagged no_address, not perf's zero terminator; "? b" stays in its
    // place, flagged unreliable.
    assert.deepEqual(s.callchain!.map((e) => [e.sym, e.addr, e.flags]), [
      ['a+0x1/0x10', 0n, ['no_address']],
      ['b+0x2/0x10', 0n, ['unreliable', 'no_address']],
      ['c+0x3/0x10', 0n, ['no_address']],
      ['entry_SYSCALL_64_after_hwframe+0x44/0xa9', 0n, ['no_address']],
    ]);
    const c = checkHostCallchain(s)!;
    assert.equal(c.verdict, 'consistent');
    assert.equal(c.kernelFrames, 3); // a, c and the syscall entry: "? b" is not the host's unwind
  });
  it('module frames keep their module; symbolizer [inline] lines are not unwinder frames', () => {
    const r = parseKernelLog('Call Trace:\n __dump_stack lib/dump_stack.c:77 [inline]\n dump_stack+0x1a7/0x27d lib/dump_stack.c:113\n nf_hook+0x10/0x20 [nf_tables]\n ret_from_fork+0x35/0x40\n');
    const t = r.traces[0]!;
    assert.deepEqual(t.frames.map((f) => [f.name, f.inline, f.module]), [['__dump_stack', true, undefined], ['dump_stack', false, undefined], ['nf_hook', false, 'nf_tables'], ['ret_from_fork', false, undefined]]);
    assert.deepEqual(kernelLogSamples(r)[0]!.callchain!.map((e) => e.dso), ['[kernel.kallsyms]', '[nf_tables]', '[kernel.kallsyms]']);
  });
});
