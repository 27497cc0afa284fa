// Host callchain checks on hand-built perf script samples (parsed by the core text codec), against
// a small hand-written kernel: each expectation follows from the kernel rule named in the test.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTextDump } from '../../services/core/dump/text.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { checkHostCallchain, HostChainSummary, isKernelDso } from '../../services/realhost/callchain-check.ts';

const KALLSYMS = `ffffffff81000000 T _stext
ffffffff81000000 T do_syscall_64
ffffffff81000100 T vfs_read
ffffffff81000200 T ksys_read
ffffffff81000300 T kthread
ffffffff81000400 T worker_thread
ffffffff81000500 T native_safe_halt
ffffffff81000600 T cpu_startup_entry
ffffffff81000700 T start_secondary
ffffffff81000800 T handle_irq
ffffffff81e00000 T __entry_text_start
ffffffff81e00000 T entry_SYSCALL_64
ffffffff81e00100 T ret_from_fork
ffffffff81e00200 T asm_sysvec_apic_timer_interrupt
ffffffff81e00300 T __entry_text_end
ffffffff81f00000 T _etext
ffffffff82000000 D jiffies
`;
const profile = KernelProfile.fromKallsyms(KALLSYMS);

function sample(frames: string[], header = 'cat 42/42 [000] 1.000000: 1 cycles:') {
  const r = parseTextDump(`${header}\n${frames.map((f) => `\t${f}`).join('\n')}\n\n`);
  assert.deepEqual(r.rejected, []);
  return r.samples[0]!;
}
const K = (addr: string, sym: string): string => `${addr} ${sym} ([kernel.kallsyms])`;

describe('host callchain checks', () => {
  it('a syscall chain into user space is consistent (it ends at the syscall entry)', () => {
    const s = sample([K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81000220', 'ksys_read+0x20'), K('ffffffff81000030', 'do_syscall_64+0x30'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), '7f0000001000 read (/lib/libc.so)']);
    const c = checkHostCallchain(s, profile)!;
    assert.equal(c.verdict, 'consistent');
    assert.equal(c.bottom, 'syscall');
    assert.equal(c.kernelFrames, 4);
    assert.equal(c.userFrames, 1);
    assert.equal(c.unresolved, 0);
  });
  it('a kernel frame outside kernel text is non_text_return_address (__kernel_text_address)', () => {
    const s = sample([K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff82000010', 'jiffies+0x10'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40')]);
    const c = checkHostCallchain(s, profile)!;
    assert.deepEqual([c.verdict, c.reason], ['extra_frames', 'non_text_return_address']);
    assert.equal(c.findings[0]!.index, 1);
  });
  it('[unknown] among resolved kernel frames is not text; all-[unknown] (kptr_restrict) is only unresolved', () => {
    const mixed = sample([K('ffffffff81000110', 'vfs_read+0x10'), 'ffffffff83000000 [unknown] ([kernel.kallsyms])', K('ffffffff81e00040', 'entry_SYSCALL_64+0x40')]);
    assert.equal(checkHostCallchain(mixed)!.reason, 'non_text_return_address');
    const restricted = sample(['ffffffff81000110 [unknown] ([kernel.kallsyms])', 'ffffffff81e00040 [unknown] ([kernel.kallsyms])', '7f0000001000 read (/lib/libc.so)']);
    const c = checkHostCallchain(restricted)!;
    assert.equal(c.verdict, 'consistent');
    assert.equal(c.unresolved, 2);
  });
  it('a kthread ends at ret_from_fork; frames below it are extra', () => {
    const ok = sample([K('ffffffff81000410', 'worker_thread+0x10'), K('ffffffff81000320', 'kthread+0x20'), K('ffffffff81e00110', 'ret_from_fork+0x10')]);
    assert.equal(checkHostCallchain(ok, profile)!.bottom, 'ret_from_fork');
    const bad = sample([K('ffffffff81000410', 'worker_thread+0x10'), K('ffffffff81e00110', 'ret_from_fork+0x10'), K('ffffffff81000320', 'kthread+0x20')]);
    assert.deepEqual([checkHostCallchain(bad, profile)!.verdict, checkHostCallchain(bad, profile)!.reason], ['extra_frames', 'extra_frame']);
  });
  it('a chain that stops inside the kernel is truncated: did_not_reach_end, or depth_limit at perf\'s cap', () => {
    const short = sample([K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81000220', 'ksys_read+0x20')]);
    assert.deepEqual([checkHostCallchain(short, profile)!.verdict, checkHostCallchain(short, profile)!.reason], ['truncated', 'did_not_reach_end']);
    const deep = sample(Array.from({ length: 127 }, () => K('ffffffff81000410', 'worker_thread+0x10')));
    assert.deepEqual([checkHostCallchain(deep, profile)!.verdict, checkHostCallchain(deep, profile)!.reason], ['truncated', 'depth_limit']);
  });
  it('the idle loop\'s start and an interrupt entry from user mode are valid bottoms', () => {
    const idle = sample([K('ffffffff81000501', 'native_safe_halt+0x1'), K('ffffffff81000610', 'cpu_startup_entry+0x10'), K('ffffffff81000710', 'start_secondary+0x10')], 'swapper 0/0 [001] 1.000000: 1 cycles:');
    assert.equal(checkHostCallchain(idle, profile)!.bottom, 'idle');
    // The stub's return address is in .entry.text and user frames follow: the interrupted context
    // was user mode.
    const irq = sample([K('ffffffff81000810', 'handle_irq+0x10'), 'ffffffff81e00210 [unknown] ([kernel.kallsyms])', '7f0000001000 main (/bin/cat)']);
    const c = checkHostCallchain(irq, profile)!;
    assert.equal(c.bottom, 'user');
    assert.equal(c.verdict, 'extra_frames'); // ...but [unknown] among resolved frames is still flagged
  });
  describe('an entry boundary is followed by the interrupted function', () => {
    // asm_sysvec_apic_timer_interrupt lies in .entry.text (ffffffff81e00200..300) in this kernel;
    // +0x10 is the return address its call to the C handler pushed.
    const STUB = K('ffffffff81e00210', 'asm_sysvec_apic_timer_interrupt+0x10');
    const HANDLER = K('ffffffff81000810', 'handle_irq+0x10');
    const USER = '7f0000001000 read (/lib/libc.so)';
    const verdict = (frames: string[], p: KernelProfile | null = profile) => {
      const c = checkHostCallchain(sample(frames), p ?? undefined)!;
      return [c.verdict, c.reason, c.findings.filter((f) => f.reason === 'missing_interrupted_frame').map((f) => f.index)];
    };
    it('a kernel function after the stub (the interrupted ip, then its callers) is consistent', () => {
      // vfs_read+0x10 is the interrupted ip (regs->ip), not a return address.
      assert.deepEqual(verdict([HANDLER, STUB, K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81000220', 'ksys_read+0x20'), K('ffffffff81000030', 'do_syscall_64+0x30'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), USER]), ['consistent', undefined, []]);
      // An interrupted ip at a function's first byte: addr - 1 would be the previous function.
      assert.deepEqual(verdict([HANDLER, STUB, K('ffffffff81000400', 'worker_thread'), K('ffffffff81000320', 'kthread+0x20'), K('ffffffff81e00110', 'ret_from_fork+0x10')]), ['consistent', undefined, []]);
    });
    it('the stub ending the kernel part is an interrupt from user mode only when user frames follow', () => {
      assert.deepEqual(verdict([HANDLER, STUB, USER]), ['consistent', undefined, []]);
      assert.deepEqual(verdict([HANDLER, STUB]), ['missing_frames', 'missing_interrupted_frame', [1]]);
    });
    it('another entry-section address, garbage or non-text after the stub: the interrupted frame is missing', () => {
      assert.deepEqual(verdict([HANDLER, STUB, K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), USER]), ['missing_frames', 'missing_interrupted_frame', [2]]);
      assert.deepEqual(verdict([HANDLER, STUB, STUB, K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40')]), ['missing_frames', 'missing_interrupted_frame', [2]]);
      // Garbage and non-text are also not text (the graver verdict), and the frame is still missing.
      assert.deepEqual(verdict([HANDLER, STUB, '0 [unknown] ([kernel.kallsyms])', USER]), ['extra_frames', 'non_text_return_address', [2]]);
      assert.deepEqual(verdict([HANDLER, STUB, K('ffffffff82000010', 'jiffies+0x10'), USER]), ['extra_frames', 'non_text_return_address', [2]]);
    });
    it('syscall and fork entries, the sampled ip in a stub, and chains without a profile are not judged', () => {
      // entry_SYSCALL_64 and ret_from_fork are bottoms, with nothing interrupted above them.
      assert.deepEqual(verdict([K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), USER]), ['consistent', undefined, []]);
      // Frame 0 is the sampled ip: inside the stub it is no return into it.
      assert.deepEqual(verdict([STUB, USER]), ['consistent', undefined, []]);
      assert.deepEqual(verdict([HANDLER, STUB], null), ['consistent', undefined, []]);
    });
    it('"? " entries are skipped, and findings name the entry\'s index in the whole chain', () => {
      // A kernel log's chain: the stale stack word between the stub and the interrupted function is
      // what the unwinder did not use.
      const s = sample([HANDLER, STUB, K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), '.flags 2 unreliable', K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81e00040', 'entry_SYSCALL_64+0x40'), USER]);
      assert.deepEqual(s.callchain![2]!.flags, ['unreliable']);
      const c = checkHostCallchain(s, profile)!;
      assert.deepEqual([c.verdict, c.kernelFrames, c.findings], ['consistent', 4, []]);
      const cut = sample([HANDLER, STUB, K('ffffffff81000990', 'handle_irq+0x190'), '.flags 2 unreliable']);
      assert.deepEqual(checkHostCallchain(cut, profile)!.findings.map((f) => [f.index, f.reason]), [[1, 'missing_interrupted_frame']]);
      const tail = sample([K('ffffffff81000110', 'vfs_read+0x10'), K('ffffffff81000990', 'handle_irq+0x190'), '.flags 1 unreliable', K('ffffffff81000220', 'ksys_read+0x20')]);
      assert.deepEqual(checkHostCallchain(tail, profile)!.findings.map((f) => [f.index, f.reason]), [[2, 'did_not_reach_end']]);
    });
  });
  it('a zero or non-canonical address inside the kernel part is not text', () => {
    const s = sample([K('ffffffff81000110', 'vfs_read+0x10'), '0 [unknown] ([kernel.kallsyms])', K('ffffffff81e00040', 'entry_SYSCALL_64+0x40')]);
    assert.equal(checkHostCallchain(s, profile)!.reason, 'non_text_return_address');
  });
  it('user-only chains are not judged; kernel dsos are recognised as inferno does', () => {
    assert.equal(checkHostCallchain(sample(['7f0000001000 read (/lib/libc.so)', '0 [unknown] ([unknown])'])), undefined);
    for (const d of ['[kernel.kallsyms]', '[nf_conntrack]', '/lib/modules/4.3.0/build/vmlinux', '/usr/lib/debug/boot/vmlinux-5.4.14', 'x.ko']) assert.ok(isKernelDso(d), d);
    for (const d of ['[unknown]', '[vdso]', '/lib/libc.so', undefined]) assert.ok(!isKernelDso(d), String(d));
  });
  it('the summary tallies verdicts, reasons and bottoms', () => {
    const h = new HostChainSummary();
    const s1 = sample([K('ffffffff81000110', 'vfs_read+0x10')]);
    h.add(0, s1, checkHostCallchain(s1, profile));
    h.add(1, s1, undefined);
    assert.equal(h.checked, 1);
    assert.equal(h.userOnly, 1);
    assert.equal(h.failing, 1);
    assert.equal(h.reasons.get('did_not_reach_end'), 1);
  });
});

const corpus = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/corpus/perf-script/flamegraph-perf-dd-stacks-01.txt');
describe('host callchain checks on real perf script', { skip: existsSync(corpus) ? false : `${corpus} not found` }, () => {
  it('perf-dd-stacks-01: 9 of 11 samples have kernel frames (vmlinux dso), all ending at system_call', () => {
    // By hand: the samples at lines 26 and 61 have only libc and [unknown] frames; the other 9
    // have vmlinux frames ending in system_call (grep -c 'system_call ' → 9).
    const r = parseTextDump(readFileSync(corpus, 'utf8'));
    const checks = r.samples.map((s) => checkHostCallchain(s));
    assert.equal(checks.filter((c) => c === undefined).length, 2);
    assert.ok(checks.every((c) => c === undefined || (c.verdict === 'consistent' && c.bottom === 'syscall')));
  });
});
