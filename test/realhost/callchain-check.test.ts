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
    // The stub's return address is in .entry.text: the interrupted context was user mode.
    const irq = sample([K('ffffffff81000810', 'handle_irq+0x10'), 'ffffffff81e00210 [unknown] ([kernel.kallsyms])']);
    const c = checkHostCallchain(irq, profile)!;
    assert.equal(c.bottom, 'user');
    assert.equal(c.verdict, 'extra_frames'); // ...but [unknown] among resolved frames is still flagged
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
