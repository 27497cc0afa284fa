// The text dump format: hand-written cases from the grammar (docs/dump-format.md), bad input, and a
// property test that the writer and the parser round-trip every valid sample losslessly.
// Expected values are read off the input text by hand, never copied from the parser's output.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatTextDump, formatTextSample, parseTextDump, parseHeaderLine } from '../../../services/core/dump/text.ts';
import { callchainFlags, splitSymbolOffset } from '../../../services/core/dump/callchain-flags.ts';
import { validateSample } from '../../../services/core/dump/validate.ts';
import {
  CALLCHAIN_FLAGS, TOLERANCES, TRUTH_KINDS,
  type CallchainEntry, type Regs, type Sample, type SampleStack, type StackWindow, type TruthFrame,
} from '../../../services/core/dump/sample.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type StackType } from '../../../services/core/stack/layout.ts';

type Plain = Omit<Sample, 'source'>;
function plain(ss: Sample[]): Plain[] {
  return ss.map(({ source: _source, ...rest }) => rest);
}
function one(text: string): Sample {
  const r = parseTextDump(text, { file: 't.txt' });
  assert.deepEqual(r.rejected, [], `unexpected rejections: ${r.rejected.map((x) => x.message).join('; ')}`);
  assert.equal(r.samples.length, 1);
  return r.samples[0]!;
}
function entry(addr: bigint, sym: string | undefined, dso: string | undefined, flags: CallchainEntry['flags'] = []): CallchainEntry {
  const e: CallchainEntry = { addr, flags };
  if (sym !== undefined) e.sym = sym;
  if (dso !== undefined) e.dso = dso;
  return e;
}

describe('perf script headers', () => {
  it('comm pid [cpu] time: event: (perf 3.13, TID only)', () => {
    const s = one('java 11008 [001] 30143.481555: cpu-clock: \n\tffffffff8104f45a native_write_msr_safe ([kernel.kallsyms])\n');
    assert.equal(s.comm, 'java');
    assert.equal(s.tid, 11008);
    assert.equal(s.pid, undefined);
    assert.equal(s.cpu, 1);
    assert.equal(s.time, '30143.481555');
    assert.equal(s.period, undefined);
    assert.equal(s.trigger, 'cpu-clock');
    assert.deepEqual(s.source, { file: 't.txt', line: 1 });
  });

  it('comm pid time: period event:', () => {
    const s = one('dd 29776 666709.771979:   10101010 cpu-clock: \n\t          414b3b fsnotify (/lib/modules/4.1.0-virtual/build/vmlinux)\n');
    assert.equal(s.comm, 'dd');
    assert.equal(s.tid, 29776);
    assert.equal(s.cpu, undefined);
    assert.equal(s.time, '666709.771979');
    assert.equal(s.period, 10101010n);
    assert.equal(s.trigger, 'cpu-clock');
    assert.deepEqual(s.callchain, [entry(0x414b3bn, 'fsnotify', '/lib/modules/4.1.0-virtual/build/vmlinux')]);
  });

  it('comm pid/tid [cpu] time: event: with padding', () => {
    const s = one('perf   977/977   [000] 7628263.042515: cycles: \n\tffffffff8104f45a native_write_msr_safe ([kernel.kallsyms])\n');
    assert.equal(s.comm, 'perf');
    assert.equal(s.pid, 977);
    assert.equal(s.tid, 977);
    assert.equal(s.cpu, 0);
    assert.equal(s.time, '7628263.042515');
    assert.equal(s.trigger, 'cycles');
  });

  it('no cpu, no time (perf 3.2)', () => {
    const s = one('java  3244 cpu-clock: \n\t    7f1e214c24d9 SpinPause (/x/libjvm.so)\n');
    assert.equal(s.comm, 'java');
    assert.equal(s.tid, 3244);
    assert.equal(s.cpu, undefined);
    assert.equal(s.time, undefined);
    assert.equal(s.trigger, 'cpu-clock');
  });

  it('event modifiers stay in the trigger', () => {
    assert.equal(one('emulator  5107 1138.435434:     255244 cycles:u: \n\t d70 x (y)\n'.replace('\t d70', '\td70')).trigger, 'cycles:u');
    const s = one('go  6157  1224.147545:     250000 cpu-clock:uhH: \n\t          414297 runtime.mapassign_faststr+0x277 (/usr/lib/go/bin/go)\n');
    assert.equal(s.trigger, 'cpu-clock:uhH');
    assert.equal(s.period, 250000n);
    assert.equal(s.tid, 6157);
  });

  it('comm with spaces', () => {
    const s = one('V8 WorkerThread 24636/25607 [000] 94564.109216: 100 cycles:\n\t    7f1e2215d058 foo (/lib/x.so)\n');
    assert.equal(s.comm, 'V8 WorkerThread');
    assert.equal(s.pid, 24636);
    assert.equal(s.tid, 25607);
    assert.equal(s.cpu, 0);
    assert.equal(s.time, '94564.109216');
    assert.equal(s.period, 100n);
    assert.equal(s.trigger, 'cycles');
  });

  it('comm padded with leading spaces and a kworker-style comm', () => {
    const s = one('         swapper     0 [000] 1.000001: cycles: \n\tffffffff8101caaf default_idle ([kernel.kallsyms])\n');
    assert.equal(s.comm, 'swapper');
    assert.equal(s.tid, 0);
    const k = one('kworker/u16:2 1234/1234 [003] 5.5: cycles:\n\tffffffff8101caaf worker_thread ([kernel.kallsyms])\n');
    assert.equal(k.comm, 'kworker/u16:2');
    assert.equal(k.pid, 1234);
  });

  it('single-line samples: the frame on the header line, no blank line between samples', () => {
    const text =
      '           false 39654 19115.489713:          1 cycles:u:  ffffffff9b201293 [unknown] ([unknown])\n' +
      '           false 39654 19115.489719:          1 cycles:      7fa68b1f2d84 _dl_start+0x4 (/usr/lib/ld-2.31.so)\n';
    const r = parseTextDump(text);
    assert.deepEqual(r.rejected, []);
    assert.equal(r.samples.length, 2);
    const [a, b] = r.samples as [Sample, Sample];
    assert.equal(a.comm, 'false');
    assert.equal(a.tid, 39654);
    assert.equal(a.time, '19115.489713');
    assert.equal(a.period, 1n);
    assert.equal(a.trigger, 'cycles:u');
    assert.deepEqual(a.callchain, [entry(0xffffffff9b201293n, '[unknown]', '[unknown]', ['unknown_symbol'])]);
    assert.equal(b.trigger, 'cycles');
    assert.deepEqual(b.callchain, [entry(0x7fa68b1f2d84n, '_dl_start+0x4', '/usr/lib/ld-2.31.so')]);
    assert.deepEqual(b.source, { file: '<text>', line: 2 });
  });

  it('a header without pid or comm fields', () => {
    const h = parseHeaderLine('nmi:');
    assert.equal(h?.trigger, 'nmi');
    assert.equal(h?.comm, undefined);
    assert.equal(parseHeaderLine('\tffffffff8104f45a native_write_msr_safe ([kernel.kallsyms])'), undefined);
  });

  it('tracepoint payload after the event is not a frame', () => {
    const s = one('perf 12/12 [000] 1.5: sched:sched_switch: prev_comm=perf prev_pid=12 ==> next_comm=swapper/0\n');
    assert.equal(s.trigger, 'sched:sched_switch');
    assert.equal(s.callchain, undefined);
  });
});

describe('perf script callchain lines', () => {
  it('unindented callchain lines (perf-java-stacks-02)', () => {
    const s = one(
      'java 19983 cycles:\n' +
        'ffffffff8103d0ca native_write_msr_safe ([kernel.kallsyms])\n' +
        '7f7241fbe6d8 arrayOopDesc::base(BasicType) const (/opt/jdk/libjvm.so)\n',
    );
    assert.equal(s.tid, 19983);
    assert.deepEqual(s.callchain, [
      entry(0xffffffff8103d0can, 'native_write_msr_safe', '[kernel.kallsyms]'),
      entry(0x7f7241fbe6d8n, 'arrayOopDesc::base(BasicType) const', '/opt/jdk/libjvm.so'),
    ]);
  });

  it('symbols with spaces and parentheses; a dso with parentheses; no symbol', () => {
    const s = one(
      'java 1 cycles:\n' +
        '\t    7f1e2162ad6f StealTask::do_it(GCTaskManager*, unsigned int) (/x/libjvm.so)\n' +
        '\t    7f1e2215d058  (/lib/x.so)\n' +
        '\t    7f0000001000 memcpy (/usr/lib/libc.so (deleted))\n' +
        '\t    7f0000002000 (anonymous namespace)::f (/a.out)\n' +
        '\t    7f0000003000\n',
    );
    assert.deepEqual(s.callchain, [
      entry(0x7f1e2162ad6fn, 'StealTask::do_it(GCTaskManager*, unsigned int)', '/x/libjvm.so'),
      entry(0x7f1e2215d058n, undefined, '/lib/x.so'),
      entry(0x7f0000001000n, 'memcpy', '/usr/lib/libc.so (deleted)'),
      entry(0x7f0000002000n, '(anonymous namespace)::f', '/a.out'),
      entry(0x7f0000003000n, undefined, undefined),
    ]);
  });

  it('flags garbage frames and keeps them', () => {
    const s = one(
      'iperf 1/1 [000] 1.0: cpu-clock: \n' +
        '\tffffffff9c2009e7 [unknown] ([kernel.kallsyms])\n' +
        '\t               0 [unknown] ([unknown])\n' +
        '\tffffffffffffffff [unknown] ([unknown])\n' +
        '\t6873756c66660036 [unknown] ([unknown])\n' +
        '\tffffffff81790a9e page_fault+0xfe200000 ([kernel.kallsyms])\n' +
        '\tffffffffb94000e0 __softirqentry_text_start+0xe0 (/usr/lib/debug/boot/vmlinux-5.4.14)\n' +
        '\tffffffff81000000 _stext ([kernel.kallsyms])\n' +
        '\t             d70 _start+0xffff018fd5dce000 (/usr/lib/ld-2.24.so)\n' +
        '\tffffffff81001000 do_one+0x100000 ([kernel.kallsyms])\n',
    );
    const flags = s.callchain!.map((e) => e.flags);
    assert.deepEqual(flags, [
      ['unknown_symbol'],
      ['unknown_symbol', 'zero'],
      ['unknown_symbol', 'all_ones'],
      ['unknown_symbol', 'non_canonical'],
      ['absurd_offset'],
      ['section_marker'],
      ['section_marker'],
      ['absurd_offset'],
      [], // exactly 1 MiB is not over it
    ]);
    assert.equal(s.callchain![1]!.addr, 0n);
    assert.equal(s.callchain![2]!.addr, 0xffffffffffffffffn);
  });

  it('callchainFlags and splitSymbolOffset on their own', () => {
    assert.deepEqual(callchainFlags(0x0000800000000000n, 'x'), ['non_canonical']);
    assert.deepEqual(callchainFlags(0x00007fffffffffffn, 'x'), []);
    assert.deepEqual(callchainFlags(0xffff800000000000n, '__irqentry_text_end'), ['section_marker']);
    assert.deepEqual(callchainFlags(0xffffffff81000000n, 'entry_SYSCALL_64+0x10/0x30'), []);
    assert.deepEqual(callchainFlags(0xffffffff81000000n, 'foo+0xzz'), []);
    assert.deepEqual(splitSymbolOffset('cpu_startup_entry+0x800047c022ec'), { name: 'cpu_startup_entry', offsetHex: '800047c022ec' });
    assert.deepEqual(splitSymbolOffset('do_IRQ+0x4d/0xd0'), { name: 'do_IRQ', offsetHex: '4d' });
    assert.deepEqual(splitSymbolOffset('+0x10'), { name: '+0x10' });
  });

  it('iregs: ABI lines give the kernel regs; the uregs set after them is ignored', () => {
    const s = one(
      'perf 5/5 [000] 1.0: cycles:\n' +
        '\tffffffff8a06f2f4 native_write_msr+0x4 ([kernel.kallsyms])\n' +
        ' ABI:2    AX:0xffffd168fee0a980    BX:0xffff8a23b087f000    IP:0xffffffff8a06f2f4 FLAGS:0x4e    CS:0x10    SS:0x18    SP:0xffffc90000003f00    R8:0x1495f0a91129a   R15:0xffffd168fee0a980   DS:0x0  ABI:2    CX:0x7f204460e49b    DX:0xf42920\n',
    );
    assert.deepEqual(s.regs, {
      ax: 0xffffd168fee0a980n, bx: 0xffff8a23b087f000n, ip: 0xffffffff8a06f2f4n, flags: 0x4en,
      cs: 0x10n, ss: 0x18n, sp: 0xffffc90000003f00n, r8: 0x1495f0a91129an, r15: 0xffffd168fee0a980n,
    });
  });

  it('register names perf prints that are not pt_regs fields are ignored', () => {
    const s = one('p 1 cycles:\n\tffffffff81000000 f (k)\n ABI:2 DS:0x0 XMM0:0x1 constructor:0x2 __proto__:0x3 junk IP:0xffffffff81000000\n');
    assert.deepEqual(s.regs, { ip: 0xffffffff81000000n });
  });

  it('iregs without a blank line before the next sample', () => {
    const r = parseTextDump(
      'a 1 [000] 1.0: cycles:\n\tffffffff81000100 f ([kernel.kallsyms])\n ABI:2 IP:0xffffffff81000100\n' +
        'b 2 [001] 2.0: cycles:\n\tffffffff81000200 g ([kernel.kallsyms])\n ABI:2 IP:0xffffffff81000200\n',
    );
    assert.deepEqual(r.rejected, []);
    assert.deepEqual(r.samples.map((s) => [s.comm, s.regs?.ip, s.callchain?.length]), [
      ['a', 0xffffffff81000100n, 1],
      ['b', 0xffffffff81000200n, 1],
    ]);
  });

  it('single-line sample with iregs on the same line', () => {
    const s = one('perf 5/5 [000] 1.0: cycles:   ffffffff8a06f2f4 ABI:2    AX:0x1    IP:0xffffffff8a06f2f4\n');
    assert.deepEqual(s.callchain, [entry(0xffffffff8a06f2f4n, undefined, undefined)]);
    assert.deepEqual(s.regs, { ax: 1n, ip: 0xffffffff8a06f2f4n });
  });
});

describe('file structure', () => {
  it('empty file, comments only', () => {
    assert.deepEqual(parseTextDump(''), { samples: [], rejected: [] });
    assert.deepEqual(parseTextDump('# stacksanity-dump v1\n# ========\n#\n\n\n'), { samples: [], rejected: [] });
  });

  it('no trailing blank line (or newline) after the last sample', () => {
    const r = parseTextDump('a 1 cycles:\n\tffffffff81000100 f ([kernel.kallsyms])\n\nb 2 cycles:\n\tffffffff81000200 g ([kernel.kallsyms])');
    assert.deepEqual(r.rejected, []);
    assert.deepEqual(r.samples.map((s) => s.comm), ['a', 'b']);
  });

  it('an empty line after a header ends that sample; the orphan callchain is rejected (inferno empty-line.txt)', () => {
    const r = parseTextDump(
      'inline-counter 26037  8801.193547:     250000 cpu-clock:uhH:\n' +
        '\t          401b97 main+0x1f (./inline-counter)\n' +
        '\n' +
        'inline-counter 26037  8801.194312:     250000 cpu-clock:uhH:\n' +
        '\n' +
        '\t          401b94 main+0x1c (./inline-counter)\n',
      { file: 'empty-line.txt' },
    );
    assert.equal(r.samples.length, 2);
    assert.deepEqual(r.samples[0]!.callchain, [entry(0x401b97n, 'main+0x1f', './inline-counter')]);
    assert.equal(r.samples[1]!.time, '8801.194312');
    assert.equal(r.samples[1]!.callchain, undefined);
    assert.equal(r.rejected.length, 1);
    assert.equal(r.rejected[0]!.reason, 'bad_header');
    assert.equal(r.rejected[0]!.sampleIndex, 2);
    assert.deepEqual(r.rejected[0]!.where, { file: 'empty-line.txt', line: 6, field: 'header', sampleIndex: 2 });
  });

  it('a weird stack line rejects its sample only', () => {
    const r = parseTextDump('a 1 cycles:\n\t          401b97 main (./x)\n\nb 2 cycles:\n\t          THIS_IS_A_WEIRD_LINE\n');
    assert.equal(r.samples.length, 1);
    assert.equal(r.rejected[0]!.reason, 'bad_field');
    assert.equal(r.rejected[0]!.where.field, 'callchain');
    assert.equal(r.rejected[0]!.where.line, 5);
    assert.equal(r.rejected[0]!.sampleIndex, 1);
  });

  it('CRLF line ends', () => {
    const s = one('a 1/2 [003] 1.5: cycles: \r\n\tffffffff81000100 f ([kernel.kallsyms])\r\n\r\n');
    assert.equal(s.cpu, 3);
    assert.deepEqual(s.callchain, [entry(0xffffffff81000100n, 'f', '[kernel.kallsyms]')]);
  });
});

// A stacksanity sample written by hand: a 20-byte window (two words and a 4-byte tail).
const OWN = [
  '# stacksanity-dump v1',
  'swapper/0 0/0 [001] 100.000001: 1 nmi:',
  '\tffffffff81001234 default_idle+0x4 ([kernel.kallsyms])',
  '\t.host h1',
  '\t.kernel 4f2a',
  '\t.regs ip=ffffffff81001234 cs=10 sp=ffffc90000003ff0',
  '\t.stack task ffffc90000000000 ffffc90000004000',
  '\t.window ffffc90000003fe0 ffffc90000003ff4',
  '\t.mem ffffc90000003fe0 0807060504030201 100f0e0d0c0b0a09',
  '\t.bytes ffffc90000003ff0 11121314',
  '\t.truth ffffffff81001234 start',
  '\t.truth ffffffff81000100 regs entry=page_fault tolerated=prologue',
  '',
].join('\n');
const OWN_SAMPLE: Plain = {
  comm: 'swapper/0', pid: 0, tid: 0, cpu: 1, time: '100.000001', period: 1n, trigger: 'nmi',
  host: 'h1', kernel: '4f2a',
  regs: { ip: 0xffffffff81001234n, cs: 0x10n, sp: 0xffffc90000003ff0n },
  stacks: [{
    type: 'task', begin: 0xffffc90000000000n, end: 0xffffc90000004000n,
    windows: [{ start: 0xffffc90000003fe0n, bytes: Uint8Array.from({ length: 20 }, (_, i) => i + 1) }],
  }],
  callchain: [entry(0xffffffff81001234n, 'default_idle+0x4', '[kernel.kallsyms]')],
  truth: { frames: [{ ip: 0xffffffff81001234n, kind: 'start' }, { ip: 0xffffffff81000100n, kind: 'regs', entry: 'page_fault', tolerated: 'prologue' }] },
};

describe('stacksanity extension lines', () => {
  it('parse a hand-written sample', () => {
    assert.deepEqual(plain([one(OWN)]), [OWN_SAMPLE]);
  });

  it('the writer emits exactly the documented order and form', () => {
    assert.equal(formatTextDump([OWN_SAMPLE as Sample]), OWN);
  });

  it('extension lines in any order; .mem words 1-4 per line; window without a declared end', () => {
    const s = one([
      'x 7 nmi:',
      '  .truth ffffffff81000010 call',
      '  .stack irq ffff888000010000 ffff888000014000',
      '  .window ffff888000013ff0',
      '  .mem ffff888000013ff0 00000000000000aa',
      '  .mem ffff888000013ff8 00000000000000bb',
      '  .regs sp=ffff888000013ff0',
      '  .regs ip=ffffffff81000010',
      '  .kernel abc',
      '',
    ].join('\n'));
    assert.deepEqual(s.regs, { sp: 0xffff888000013ff0n, ip: 0xffffffff81000010n });
    assert.equal(s.kernel, 'abc');
    assert.deepEqual(s.stacks, [{
      type: 'irq', begin: 0xffff888000010000n, end: 0xffff888000014000n,
      windows: [{ start: 0xffff888000013ff0n, bytes: Uint8Array.from([0xaa, 0, 0, 0, 0, 0, 0, 0, 0xbb, 0, 0, 0, 0, 0, 0, 0]) }],
    }]);
  });

  it('a window belongs to the stack that contains it, even if declared earlier', () => {
    const s = one([
      'x nmi:',
      '\t.stack task ffffc90000000000 ffffc90000004000',
      '\t.stack nmi fffffe0000001000 fffffe0000002000',
      '\t.window ffffc90000003ff8 ffffc90000004000',
      '\t.mem ffffc90000003ff8 0000000000000001',
      '',
    ].join('\n'));
    assert.equal(s.stacks[0]!.windows.length, 1);
    assert.equal(s.stacks[1]!.windows.length, 0);
  });

  it('header fields perf cannot print come as overrides: pid without tid, empty callchain, empty truth', () => {
    const s = one('nmi:\n\t.pid 42\n\t.callchain empty\n\t.truth empty\n\t.comm "  two  spaces"\n');
    assert.equal(s.pid, 42);
    assert.equal(s.tid, undefined);
    assert.deepEqual(s.callchain, []);
    assert.deepEqual(s.truth, { frames: [] });
    assert.equal(s.comm, '  two  spaces');
    assert.equal(s.trigger, 'nmi');
  });

  it('entry overrides replace symbol, dso and flags by index', () => {
    const s = one('x 1 nmi:\n\tffffffff81000000 a (b)\n\t.sym 0 "a (b)"\n\t.dso 0 -\n\t.flags 0 zero,zero\n');
    assert.deepEqual(s.callchain, [entry(0xffffffff81000000n, 'a (b)', undefined, ['zero', 'zero'])]);
  });

  it('unreliable and no_address survive a round trip: no codec computes them, so they are written as .flags', () => {
    // A kernel log's "? " entry with a known address, and a log frame printed as func+off/size only.
    const s: Sample = {
      trigger: 'log', stacks: [],
      callchain: [
        entry(0xffffffff81001000n, 'do_one+0x10/0x40', '[kernel.kallsyms]'),
        entry(0xffffffff81002000n, 'stale_fn+0x5/0x20', '[kernel.kallsyms]', ['unreliable']),
        entry(0n, 'bar+0x12/0x40', '[kernel.kallsyms]', ['unreliable', 'no_address']),
      ],
    };
    const text = formatTextSample(s);
    // Entry 0's flags are what the parser computes; 1 and 2 need overrides (2 would read as `zero`).
    assert.ok(!text.includes('.flags 0'));
    assert.ok(text.includes('\t.flags 1 unreliable\n'));
    assert.ok(text.includes('\t.flags 2 unreliable,no_address\n'));
    assert.deepEqual(plain(parseTextDump(text).samples), [s]);
    // Read by hand: the same entries as a dump someone wrote.
    const r = one('k log:\n\tffffffff81002000 stale_fn+0x5/0x20 ([kernel.kallsyms])\n\t.flags 0 unreliable\n\t               0 bar+0x12/0x40 ([kernel.kallsyms])\n\t.flags 1 no_address\n');
    assert.deepEqual(r.callchain!.map((e) => e.flags), [['unreliable'], ['no_address']]);
  });

  it('the writer uses overrides only where the perf form is not exact', () => {
    const s: Sample = { comm: ' lead', pid: 3, trigger: 'timer', stacks: [], callchain: [entry(1n, '', 'd', ['non_canonical'])] };
    assert.equal(
      formatTextSample(s),
      ' lead timer:\n\t               1  (d)\n\t.comm " lead"\n\t.pid 3\n\t.sym 0 ""\n\t.flags 0 non_canonical\n',
    );
  });
});

describe('bad input', () => {
  const HEAD = 'x 1 [000] 1.0: nmi:\n\t.stack task ffffc90000000000 ffffc90000004000\n';

  function rejectOne(text: string): { reason: string; line: number | undefined; field: string | undefined; message: string } {
    const r = parseTextDump(text, { file: 'bad.txt' });
    assert.equal(r.samples.length, 0, 'no sample should survive');
    assert.equal(r.rejected.length, 1);
    const j = r.rejected[0]!;
    assert.equal(j.sampleIndex, 0);
    assert.equal(j.where.file, 'bad.txt');
    return { reason: j.reason, line: j.where.line, field: j.where.field, message: j.message };
  }

  it('bad hex in .regs names line and field', () => {
    const j = rejectOne('x nmi:\n\t.regs sp=ffffc90000003f00 ip=ffffffff8100zz00\n');
    assert.equal(j.reason, 'bad_hex');
    assert.equal(j.line, 2);
    assert.equal(j.field, 'regs.ip');
    assert.match(j.message, /^bad\.txt:2: sample 0: field regs\.ip: /);
  });

  it('over-64-bit hex, unknown and repeated register fields', () => {
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.regs ip=1ffffffffffffffff\n')), ['bad_hex', 2, 'regs.ip']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.regs rip=1\n')), ['bad_field', 2, 'regs.rip']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.regs ip=1\n\t.regs bp=2 ip=1\n')), ['bad_field', 3, 'regs.ip']);
  });

  it('bad hex in a .mem word', () => {
    const j = rejectOne(HEAD + '\t.window ffffc90000003ff0 ffffc90000004000\n\t.mem ffffc90000003ff0 000000000000000g 0000000000000000\n');
    assert.deepEqual(pick(j), ['bad_hex', 4, 'mem.word']);
    assert.deepEqual(pick(rejectOne(HEAD + '\t.window ffffc90000003ff0\n\t.mem ffffc90000003ff0 00000000000001\n')), ['bad_hex', 4, 'mem.word']);
  });

  it('non-contiguous .mem', () => {
    const j = rejectOne(HEAD + '\t.window ffffc90000003fe0 ffffc90000004000\n\t.mem ffffc90000003fe0 0000000000000001\n\t.mem ffffc90000003ff0 0000000000000002\n');
    assert.deepEqual(pick(j), ['bad_field', 5, 'mem.addr']);
  });

  it('a window outside its stack', () => {
    assert.deepEqual(pick(rejectOne(HEAD + '\t.window ffffc90000005000\n')), ['window_out_of_bounds', 3, 'window.start']);
    assert.deepEqual(pick(rejectOne(HEAD + '\t.window ffffc90000003ff0 ffffc90000004010\n')), ['window_out_of_bounds', 3, 'window.end']);
    // Without a declared end the window grows until it passes the stack's end.
    const grow = rejectOne(HEAD + '\t.window ffffc90000003ff8\n\t.mem ffffc90000003ff8 0000000000000001 0000000000000002\n');
    assert.deepEqual(pick(grow), ['window_out_of_bounds', 4, 'mem.addr']);
  });

  it('.mem before .window, .window before .stack, unknown keyword, bad stack type', () => {
    assert.deepEqual(pick(rejectOne(HEAD + '\t.mem ffffc90000003ff8 0000000000000001\n')), ['bad_field', 3, 'mem']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.window ffffc90000003ff8\n')), ['bad_field', 2, 'window']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.frobnicate 1\n')), ['bad_field', 2, 'frobnicate']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.stack softirq 1000 2000\n')), ['bad_field', 2, 'stack.type']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.truth ffffffff81000000 jump\n')), ['bad_field', 2, 'truth.kind']);
    assert.deepEqual(pick(rejectOne('x nmi:\n\t.truth ffffffff81000000 call tolerated=always\n')), ['bad_field', 2, 'truth.tolerated']);
  });

  it('checks of the sample as a whole (validateSample) name the header line', () => {
    // Not canonical even with 57-bit addresses (bits 63..56 differ).
    const j = rejectOne(HEAD + '\t.regs sp=8000000000000000\n');
    assert.deepEqual(pick(j), ['impossible_regs', 1, 'regs.sp']);
  });

  it('truncated inside a .mem run: at a line boundary and inside a line', () => {
    const full = formatTextDump([OWN_SAMPLE as Sample]);
    const atLine = full.slice(0, full.indexOf('\t.mem'));
    assert.deepEqual(pick(rejectOne(atLine)), ['truncated', 8, 'window.end']);
    const inLine = full.slice(0, full.indexOf('\t.mem') + 30);
    assert.equal(rejectOne(inLine).reason, 'truncated');
    const inBytes = full.slice(0, full.indexOf('\t.bytes') + 30);
    assert.equal(rejectOne(inBytes).reason, 'truncated');
    // Cut inside a .regs value: a shorter value would still be valid hex, so an unterminated
    // extension line is never trusted.
    const inRegs = full.slice(0, full.indexOf('\t.regs') + 14);
    assert.equal(rejectOne(inRegs).reason, 'truncated');
    // Cut inside a perf callchain line: the line lacks its closing ')'.
    assert.equal(rejectOne('a 1 cycles:\n\tffffffff8104f45a native_wri').reason, 'truncated');
  });

  it('a bad sample between two good ones', () => {
    const good = (c: string): string => `${c} 1/1 [000] 1.0: cycles:\n\tffffffff81000100 f ([kernel.kallsyms])\n`;
    const text = good('first') + '\n' + 'bad 2/2 [000] 2.0: cycles:\n\tffffffff81000100 f ([kernel.kallsyms])\n\t.regs ip=xyz\n\tffffffff81000200 g ([kernel.kallsyms])\n\n' + good('third');
    const r = parseTextDump(text);
    assert.deepEqual(r.samples.map((s) => s.comm), ['first', 'third']);
    assert.equal(r.rejected.length, 1);
    assert.equal(r.rejected[0]!.sampleIndex, 1);
    assert.equal(r.rejected[0]!.where.line, 6);
    assert.equal(r.samples[1]!.source?.line, 9);
  });

  it('oversized input is one rejection, no samples', () => {
    const r = parseTextDump('a 1 cycles:\n'.repeat(100), { maxBytes: 1000, file: 'big.txt' });
    assert.equal(r.samples.length, 0);
    assert.equal(r.rejected.length, 1);
    assert.equal(r.rejected[0]!.reason, 'oversized');
    // Multi-byte characters count in UTF-8 bytes.
    assert.equal(parseTextDump('é'.repeat(600), { maxBytes: 1000 }).rejected[0]?.reason, 'oversized');
  });

  it('too many declared window bytes in one sample are refused before allocation', () => {
    const lines = ['x nmi:', '\t.stack task ffffc90000000000 ffffc90000010000'];
    for (let k = 0; k < 40; k++) lines.push('\t.window ffffc90000000000 ffffc90000010000');
    const j = rejectOne(lines.join('\n') + '\n');
    assert.equal(j.reason, 'oversized');
  });
});

function pick(j: { reason: string; line: number | undefined; field: string | undefined }): [string, number | undefined, string | undefined] {
  return [j.reason, j.line, j.field];
}

// ---------------------------------------------------------------------------------------------
// Property: every valid sample round-trips

const U64 = (1n << 64n) - 1n;
const TRICKY = fc.constantFrom(' ', '(', ')', '"', '\\', ':', '#', '.', '-', '\t', '\n', '\r', 'a', '1', '/', '[', ']', '=', '+', 'x', 'é', '0');
const trickyString = fc.oneof(
  fc.string({ unit: TRICKY, maxLength: 10 }),
  fc.string({ unit: 'binary', maxLength: 8 }),
);
const addr = fc.oneof(
  fc.constantFrom(0n, U64, 0x6873756c66660036n, 0x0000800000000000n),
  fc.bigInt({ min: 0xffffffff80000000n, max: 0xffffffffffffffffn }),
  fc.bigInt({ min: 0n, max: 0x00007fffffffffffn }),
  fc.bigInt({ min: 0n, max: U64 }),
);
const sym = fc.oneof(
  fc.constantFrom('[unknown]', 'page_fault+0xfe200000', '__softirqentry_text_start+0xe0', 'native_write_msr_safe+0x6',
    'StealTask::do_it(GCTaskManager*, unsigned int)', '(anonymous namespace)::f', 'a (b)', '_stext', ''),
  trickyString,
);
const dso = fc.oneof(fc.constantFrom('[kernel.kallsyms]', '[unknown]', '/lib/x.so (deleted)', '', 'a)'), trickyString);
const callchainEntry = fc
  .record({ addr, sym, dso, own: fc.boolean(), flags: fc.subarray([...CALLCHAIN_FLAGS]) }, { requiredKeys: ['addr', 'own', 'flags'] })
  .map((r): CallchainEntry => {
    const e = entry(r.addr, r.sym, r.dso, r.own ? r.flags : callchainFlags(r.addr, r.sym));
    return e;
  });

interface RawStack { type: StackType; size: number; skew: number; w: number[]; nWin: number; reverse: boolean }
const rawStack = (type: StackType): fc.Arbitrary<RawStack> =>
  fc.record({
    type: fc.constant(type),
    size: fc.constantFrom(0x1000, 0x2000, 0x4000),
    skew: fc.integer({ min: 0, max: 0xfff }),
    w: fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
    nWin: fc.integer({ min: 0, max: 2 }),
    reverse: fc.boolean(),
  });

function fillBytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = (seed | 1) >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function buildStacks(raws: RawStack[]): SampleStack[] {
  return raws.map((r, idx) => {
    // Disjoint stacks: each gets its own 128 KiB slot; begin need not be aligned.
    const begin = 0xffffc90000000000n + BigInt(idx) * 0x20000n + BigInt(r.skew);
    const windows: StackWindow[] = [];
    const [a, la, b2, lb] = r.w as [number, number, number, number];
    const off1 = a % r.size;
    const len1 = la % (Math.min(r.size - off1, 4100) + 1);
    if (r.nWin >= 1) windows.push({ start: begin + BigInt(off1), bytes: fillBytes(len1, a ^ la) });
    if (r.nWin >= 2) {
      const from = off1 + len1;
      const off2 = from + (b2 % (r.size - from + 1));
      const len2 = lb % (Math.min(r.size - off2, 4100) + 1);
      windows.push({ start: begin + BigInt(off2), bytes: fillBytes(len2, b2 ^ lb) });
    }
    if (r.reverse) windows.reverse();
    return { type: r.type, begin, end: begin + BigInt(r.size), windows };
  });
}

const truthFrame = fc
  .record({ ip: addr, kind: fc.constantFrom(...TRUTH_KINDS), entry: fc.oneof(fc.constantFrom('page_fault', 'nmi', 'irq'), trickyString), tolerated: fc.constantFrom(...TOLERANCES) }, { requiredKeys: ['ip', 'kind'] })
  .map((r): TruthFrame => {
    const f: TruthFrame = { ip: r.ip, kind: r.kind };
    if (r.entry !== undefined) f.entry = r.entry;
    if (r.tolerated !== undefined) f.tolerated = r.tolerated;
    return f;
  });

const sampleArb: fc.Arbitrary<Sample> = fc
  .record(
    {
      comm: fc.oneof(fc.constantFrom('swapper/0', 'V8 WorkerThread', 'kworker/u16:2', '1234', 'a:', '   padded', '#x', ''), trickyString),
      pid: fc.oneof(fc.integer({ min: -1, max: 4194304 }), fc.constantFrom(Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER)),
      tid: fc.oneof(fc.integer({ min: -1, max: 4194304 }), fc.constant(12345678901234)),
      cpu: fc.integer({ min: -1, max: 8191 }),
      time: fc.oneof(fc.constantFrom('30143.481555', '1.000000001', '12:00', '1.', ''), trickyString),
      period: fc.bigInt({ min: 0n, max: U64 }),
      trigger: fc.oneof(fc.constantFrom('nmi', 'timer', 'single-step', 'sched', 'cycles:u', 'cpu-clock:uhH', '1.5', '', '-', '#'), trickyString),
      host: fc.oneof(fc.constantFrom('host-1', '-', ''), trickyString),
      kernel: fc.oneof(fc.constantFrom('4f2a9c0e', 'empty'), trickyString),
      regFields: fc.subarray([...PT_REGS_FIELDS]),
      regVals: fc.array(fc.bigInt({ min: 0n, max: U64 }), { minLength: 21, maxLength: 21 }),
      stackTypes: fc.shuffledSubarray([...STACK_TYPES], { maxLength: 3 }).chain((ts) => fc.tuple(...ts.map(rawStack))),
      callchain: fc.array(callchainEntry, { maxLength: 6 }),
      truth: fc.array(truthFrame, { maxLength: 4 }),
    },
    { requiredKeys: ['trigger', 'stackTypes', 'regVals'] },
  )
  .map((r): Sample => {
    const stacks = buildStacks(r.stackTypes);
    const s: Sample = { trigger: r.trigger, stacks };
    for (const k of ['comm', 'pid', 'tid', 'cpu', 'time', 'period', 'host', 'kernel'] as const) {
      if (r[k] !== undefined) (s as unknown as Record<string, unknown>)[k] = r[k];
    }
    if (r.regFields !== undefined) {
      const regs: Regs = {};
      r.regFields.forEach((f) => {
        let v = r.regVals[PT_REGS_FIELDS.indexOf(f)]!;
        // Keep the sample valid: canonical ip/sp, sp on a stack, 16-bit selectors.
        if (f === 'ip' || f === 'sp') v = BigInt.asUintN(64, BigInt.asIntN(57, v));
        if (f === 'sp' && stacks.length > 0) v = stacks[0]!.begin + (v % (stacks[0]!.end - stacks[0]!.begin + 1n));
        if (f === 'cs' || f === 'ss') v &= 0xffffn;
        regs[f] = v;
      });
      s.regs = regs;
    }
    if (r.callchain !== undefined) s.callchain = r.callchain;
    if (r.truth !== undefined) s.truth = { frames: r.truth };
    return s;
  });

describe('round trip (property)', () => {
  it('formatTextDump then parseTextDump gives back equal samples', () => {
    fc.assert(
      fc.property(fc.array(sampleArb, { minLength: 0, maxLength: 3 }), (samples) => {
        for (const s of samples) validateSample(s);
        const text = formatTextDump(samples);
        const r = parseTextDump(text);
        assert.deepEqual(r.rejected, []);
        assert.deepStrictEqual(plain(r.samples), samples);
        // The writer is a function of the sample: writing what was read gives the same text.
        assert.equal(formatTextDump(r.samples), text);
      }),
      { numRuns: 300 },
    );
  });

  it('each block stands alone', () => {
    fc.assert(
      fc.property(sampleArb, (s) => {
        const r = parseTextDump(formatTextSample(s));
        assert.deepEqual(r.rejected, []);
        assert.deepStrictEqual(plain(r.samples), [s]);
      }),
      { numRuns: 200 },
    );
  });

  it('the writer refuses values outside the model', () => {
    assert.throws(() => formatTextSample({ trigger: 'nmi', stacks: [], regs: { ip: -1n } }), RangeError);
    assert.throws(() => formatTextSample({ trigger: 'nmi', stacks: [], pid: 1.5 }), RangeError);
    assert.throws(() => formatTextSample({ trigger: 'nmi', stacks: [], period: 1n << 64n }), RangeError);
  });
});
