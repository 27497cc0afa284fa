import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKallsyms, RESTRICTED_HINT } from '../../../services/core/symbols/kallsyms.ts';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import { DumpError } from '../../../services/core/dump/errors.ts';

// A /proc/kallsyms excerpt in the kernel's own format (kernel/kallsyms.c s_show): "%px %c %s\n",
// and "%px %c %s\t[%s]\n" for module symbols.
const KALLSYMS = [
  'ffffffff81000000 T _stext',
  'ffffffff81000000 T startup_64',
  'ffffffff81000100 t secondary_startup_64',
  'ffffffff81001000 T do_syscall_64',
  'ffffffff81001200 W weak_fn',
  'ffffffff81001300 T __softirqentry_text_start',
  'ffffffff81001300 T __do_softirq',
  'ffffffff81001400 T __softirqentry_text_end',
  'ffffffff81001400 T last_core_fn',
  'ffffffff81002000 T _etext',
  'ffffffff81200000 T __entry_text_start',
  'ffffffff81200000 T entry_SYSCALL_64',
  'ffffffff81200100 T __irqentry_text_start',
  'ffffffff81200100 T asm_exc_page_fault',
  'ffffffff81200140 T asm_common_interrupt',
  'ffffffff81200180 T __irqentry_text_end',
  'ffffffff81200180 T ret_from_fork_asm',
  'ffffffff81200200 T __entry_text_end',
  'ffffffff82000000 D jiffies',
  'ffffffff83000000 T _sinittext',
  'ffffffff83000000 T start_kernel',
  'ffffffff83000800 T _einittext',
  'ffffffffc0001000 t xfs_attr_get\t[xfs]',
  'ffffffffc0001080 t xfs_attr_set\t[xfs]',
  'ffffffffc0002000 t e1000_intr\t[e1000]',
].join('\n') + '\n';

test('module symbols keep their module after the tab', () => {
  const { symbols } = parseKallsyms(KALLSYMS);
  const xfs = symbols.find((s) => s.name === 'xfs_attr_get');
  assert.equal(xfs?.module, 'xfs');
  assert.equal(xfs?.address, 0xffffffffc0001000n);
  assert.equal(symbols.find((s) => s.name === 'startup_64')?.module, undefined);
});

test('addr -> func+0xoff/0xsize, with size = distance to the next symbol', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  // do_syscall_64 starts at ...1000, the next symbol (weak_fn) at ...1200: size 0x200.
  assert.equal(p.symbols.format(0xffffffff81001034n), 'do_syscall_64+0x34/0x200');
  // A module symbol prints its module, and ends where the next symbol of the module starts.
  assert.equal(p.symbols.format(0xffffffffc0001010n), 'xfs_attr_get+0x10/0x80 [xfs]');
  // Exact 64-bit: the address exceeds 2^53 and must not round.
  assert.equal(p.symbols.lookup(0xffffffff81000101n)?.name, 'secondary_startup_64');
});

test('aliases at one address prefer the real function over the section marker', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  assert.equal(p.symbols.lookup(0xffffffff81001310n)?.name, '__do_softirq');
  assert.equal(p.symbols.lookup(0xffffffff81000000n)?.name, 'startup_64');
  assert.equal(p.symbols.lookup(0xffffffff81200100n)?.name, 'asm_exc_page_fault');
});

test('a return address is looked up at addr-1 (%pB): a call at the very end names the caller', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  // 0xffffffff81001200 is weak_fn's first byte; as a return address it belongs to do_syscall_64.
  assert.equal(p.symbols.format(0xffffffff81001200n, true), 'do_syscall_64+0x200/0x200');
  assert.equal(p.symbols.format(0xffffffff81001200n, false), 'weak_fn+0x0/0x100');
});

test('section ranges come from the marker symbols; missing markers stay missing', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  assert.equal(p.sections.text?.start, 0xffffffff81000000n);
  assert.equal(p.sections.text?.end, 0xffffffff81002000n);
  assert.equal(p.sections.irqentry?.start, 0xffffffff81200100n);
  assert.equal(p.sections.irqentry?.end, 0xffffffff81200180n);
  assert.equal(p.sections.softirqentry?.start, 0xffffffff81001300n);
  assert.equal(p.sections.inittext?.end, 0xffffffff83000800n);
  const bare = KernelProfile.fromKallsyms('ffffffff81000000 T foo\nffffffff81000100 T bar\n');
  assert.equal(bare.sections.text, undefined);
  assert.equal(bare.sections.entry, undefined);
  assert.equal(bare.hasEntrySection(), false);
});

test('kernel text: core, init, entry and module text are text; data and the gap after _etext are not', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  const t = (a: bigint) => p.isTextS(Number(BigInt.asIntN(64, a)));
  assert.equal(t(0xffffffff81001034n), true);
  assert.equal(t(0xffffffff83000010n), true);
  assert.equal(t(0xffffffff81200110n), true);
  assert.equal(t(0xffffffffc0001010n), true);
  assert.equal(t(0xffffffff82000000n), false); // jiffies
  assert.equal(t(0xffffffff81002000n), false); // _etext itself is past the end
  assert.equal(t(0xffffc90000630000n), false); // a stack address
  // Past _etext no symbol names the address (the marker ends the last function).
  assert.equal(p.symbols.lookup(0xffffffff81100000n), undefined);
});

test('entry stubs are named by their symbols', () => {
  const p = KernelProfile.fromKallsyms(KALLSYMS);
  const s = (a: bigint) => Number(BigInt.asIntN(64, a));
  assert.equal(p.entryTypeAtS(s(0xffffffff81200122n)), 'page_fault');
  assert.equal(p.entryTypeAtS(s(0xffffffff81200150n)), 'irq');
  assert.equal(p.entryTypeAtS(s(0xffffffff81001034n)), 'unknown');
  assert.deepEqual([...p.layouts].sort(), ['encoded_fp', 'section']);
});

test('System.map (no module column, per-cpu symbols at 0) parses', () => {
  const map = '0000000000000000 D __per_cpu_start\n0000000000001000 D cpu_debug_store\nffffffff81000000 T _stext\nffffffff81000000 T startup_64\nffffffff81000200 T _etext\n';
  const p = KernelProfile.fromKallsyms(map);
  assert.equal(p.symbols.format(0xffffffff81000010n), 'startup_64+0x10/0x200');
});

test('all-zero addresses are refused with a message that says how to lift the restriction', () => {
  const restricted = '0000000000000000 T _stext\n0000000000000000 T startup_64\n0000000000000000 t foo\t[xfs]\n';
  assert.throws(() => parseKallsyms(restricted, '/proc/kallsyms'), (e: unknown) => {
    assert.ok(e instanceof DumpError);
    assert.match(e.describe(), /^\/proc\/kallsyms:1: field address: /);
    assert.match(e.message, /kptr_restrict/);
    assert.equal(e.message, RESTRICTED_HINT);
    return true;
  });
});

test('malformed lines are skipped and reported with their line numbers', () => {
  const { symbols, skipped } = parseKallsyms('ffffffff81000000 T a\nnot a symbol line at all\nzzzz T b\nffffffff81000010 t c\n');
  assert.deepEqual(symbols.map((s) => s.name), ['a', 'c']);
  assert.deepEqual(skipped.map((s) => s.line), [2, 3]);
  assert.throws(() => parseKallsyms('\n\n'), DumpError);
});

test('a 100,000-symbol table loads and resolves every symbol start', () => {
  const lines: string[] = ['ffffffff81000000 T _stext'];
  const base = 0xffffffff81000000n;
  for (let i = 0; i < 100_000; i++) lines.push(`${(base + BigInt(i * 48)).toString(16)} ${i % 3 ? 't' : 'T'} fn_${i}`);
  lines.push(`${(base + 100_000n * 48n).toString(16)} T _etext`);
  const p = KernelProfile.fromKallsyms(lines.join('\n'));
  assert.equal(p.symbols.length, 100_001); // fn_0 absorbs _stext; _etext stays as the end
  for (const i of [0, 1, 4242, 99_999]) {
    const hit = p.symbols.lookup(base + BigInt(i * 48) + 5n);
    assert.equal(hit?.name, `fn_${i}`);
    assert.equal(hit?.offset, 5);
    assert.equal(hit?.size, 48);
  }
});

test('per-cpu and absolute symbols at small addresses (a real kallsyms) do not disturb text lookups', () => {
  // /proc/kallsyms lists per-cpu symbols from 0 and absolute ones such as __per_cpu_end (type A).
  const text = [
    '0000000000000000 A fixed_percpu_data',
    '0000000000001000 D cpu_debug_store',
    '0000000000035000 A __per_cpu_end',
    'ffffffff81000000 T _stext',
    'ffffffff81000000 T startup_64',
    'ffffffff81000100 T do_one',
    'ffffffff81000200 T _etext',
  ].join('\n');
  const p = KernelProfile.fromKallsyms(text);
  assert.equal(p.symbols.format(0xffffffff81000104n), 'do_one+0x4/0x100');
  assert.equal(p.symbols.format(0xffffffff81000010n), 'startup_64+0x10/0x100');
  assert.equal(p.symbols.lookup(0x35000n), undefined);
});
