// Reading the kernel's printed trace (services/core/check/instant.ts) by the rules of
// arch/x86/kernel/dumpstack.c: printk_stack_address prints every address with %pB, which looks the
// symbol up at address - 1 but prints the offset from that symbol's start, so "sym+off/size" is
// exactly start(sym) + off — even where off == size, the first byte of the next symbol. A RIP block
// with a kernel cs is an interrupted kernel context; with cs & 3 = 3 a user one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import { compareInstant, instantVerdict, parsePrintedTrace, printedAddress, traceNames, type TraceElement } from '../../../services/core/check/instant.ts';

const KALLSYMS = [
  'ffffffff81000000 T _stext',
  'ffffffff81000100 T clear_user_rep_good',
  'ffffffff81000130 T read_zero',
  'ffffffff810001c9 T vfs_read',
  'ffffffff81000304 T ksys_read',
  'ffffffff8100039b T common_interrupt',
  'ffffffff81000428 T dup_name',
  'ffffffff81000440 T dup_name',
  'ffffffff81000480 t twin',
  'ffffffff81000490 t twin',
  'ffffffff810004a0 T after_twins',
  'ffffffff81000500 T _etext',
  'ffffffff81200000 T __entry_text_start',
  'ffffffff81200100 T __irqentry_text_start',
  'ffffffff81200100 T asm_common_interrupt',
  'ffffffff81200140 T __irqentry_text_end',
  'ffffffff81200150 T xen_error_entry',
  'ffffffff812001a0 T kernel_entry',
  'ffffffff812001b0 T entry_SYSCALL_64_after_hwframe',
  'ffffffff81200300 T __entry_text_end',
].join('\n') + '\n';
const p = KernelProfile.fromKallsyms(KALLSYMS);

test('a printed sym+off/size is start(sym) + off; off == size is the first byte of the next symbol', () => {
  assert.equal(printedAddress(p, 'vfs_read', 0x90, 0x13b), 0xffffffff810001c9n + 0x90n);
  assert.equal(printedAddress(p, 'xen_error_entry', 0x50, 0x50), 0xffffffff812001a0n);
  // Two static functions of one name: the size picks the one meant…
  assert.equal(printedAddress(p, 'dup_name', 4, 0x40), 0xffffffff81000444n);
  assert.equal(printedAddress(p, 'dup_name', 4, 0x40, new Set([0xffffffff8100042cn])), 0xffffffff81000444n);
  // …and where both have that size, the one whose address is on the stack the trace was printed from.
  assert.equal(printedAddress(p, 'twin', 0x10, 0x10), 0xffffffff81000490n);
  assert.equal(printedAddress(p, 'twin', 0x10, 0x10, new Set([0xffffffff810004a0n])), 0xffffffff810004a0n);
  assert.equal(printedAddress(p, 'no_such', 0, 1), undefined);
});

const STOCK_KERNEL_ENTRY = [
  'task:dd              state:R  running task     stack:0     pid:25    ppid:1      flags:0x00000008',
  'Call Trace:',
  ' <IRQ>',
  ' common_interrupt+0x6a/0x8d',
  ' </IRQ>',
  ' <TASK>',
  ' asm_common_interrupt+0x2d/0x40',
  ' xen_error_entry+0x50/0x50',
  ' ? clear_user_rep_good+0xe/0x30',
  ' ? read_zero+0x57/0x99',
  ' vfs_read+0x90/0x13b',
  ' ksys_read+0x66/0x97',
  ' entry_SYSCALL_64_after_hwframe+0x4b/0x150',
  'RIP: 0033:0x47b6fd',
  'RSP: 002b:00007ffcc2fe33c8 EFLAGS: 00000246 ORIG_RAX: 0000000000000000',
  ' </TASK>',
];

test('parsing a block: frames, guesses, the user RIP block, and the %pB name of a symbol\'s first byte', () => {
  const b = parsePrintedTrace(STOCK_KERNEL_ENTRY, p);
  const task = b.elements.filter((x) => x.stack === 'TASK').map((x) => x.e);
  assert.deepEqual(task.map((e) => e.kind), ['frame', 'frame', 'guess', 'guess', 'frame', 'frame', 'frame', 'user']);
  // The line after the stub is kernel_entry itself, printed as the end of the symbol before it.
  assert.equal(task[1]!.addr, 0xffffffff812001a0n);
  assert.deepEqual(traceNames(task, p).slice(0, 3), ['asm_common_interrupt', 'xen_error_entry+0x50/0x50 (kernel_entry)', '? clear_user_rep_good']);
  assert.deepEqual(b.warnings, []);
});

test('the raw dump and the warning of the stock unwinder are not trace lines', () => {
  const b = parsePrintedTrace([
    ' <TASK>',
    ' asm_common_interrupt+0x22/0x40',
    'WARNING: kernel stack frame pointer at (____ptrval____) in dd:23 has bad value 0000000000000000',
    'unwind stack type:0 next_sp:0000000000000000 mask:0x6 graph_idx:0',
    '(____ptrval____): ffffffff81000122 (clear_user_rep_good+0x22/0x30)',
    '(____ptrval____): 0000000000000000 ...',
    ' ? clear_user_rep_good+0xe/0x30',
    ' </TASK>',
  ], p);
  assert.equal(b.warnings.length, 2);
  assert.equal(b.rawDumpLines, 2);
  assert.deepEqual(b.elements.map((x) => x.e.kind), ['frame', 'guess']);
});

const el = (kind: TraceElement['kind'], addr: bigint | undefined, fn: string): TraceElement => ({ kind, ...(addr !== undefined ? { addr } : {}), fn, text: fn });
const STUB = el('frame', 0xffffffff8120012dn, 'asm_common_interrupt');
const RIP = el('regs', 0xffffffff8100010en, 'clear_user_rep_good');
const LEAF = el('guess', 0xffffffff81000187n, 'read_zero');
const VFS = el('frame', 0xffffffff81000259n, 'vfs_read');
const MARK = el('frame', 0xffffffff812001a0n, 'xen_error_entry');
const USER = el('user', undefined, '(user)');

test('agreement is address for address on the reliable lines; the marker frame is reported, not compared', () => {
  const c = compareInstant([STUB, MARK, RIP, LEAF, VFS, USER], [STUB, RIP, LEAF, { ...MARK, kind: 'guess' }, VFS, USER], p);
  assert.equal(c.agree, true);
  assert.equal(c.kernelMarker, 'xen_error_entry');
  assert.equal(c.guessesCommon, 1);
  assert.match(instantVerdict(c, { strategy: 'kernel_entry', unwinder: 'patched', warnings: [] }), /agree on all 2 frames below the interrupt .*marker frame/);
});

test('a lost RIP block: the kernel guesses, the project recovers; the leaf caller reads as a guess after the RIP', () => {
  const c = compareInstant([STUB, { ...RIP, kind: 'guess' }, LEAF, { ...VFS, kind: 'guess' }], [STUB, RIP, LEAF, VFS, USER], p);
  assert.equal(c.agree, false);
  assert.equal(c.kernelRipBlock, false);
  assert.equal(c.projectRipBlock, true);
  assert.deepEqual(c.projectRecovered, ['clear_user_rep_good', 'read_zero?', 'vfs_read']);
  const v = instantVerdict(c, { strategy: 'section', unwinder: 'stock', warnings: ['WARNING: kernel stack frame pointer at x in dd:1 has bad value 0000000000000000'], interruptedFn: 'clear_user_rep_good' });
  assert.match(v, /loses the interrupted RIP \(clear_user_rep_good only as a `\?` guess\)/);
  assert.match(v, /recovers clear_user_rep_good, read_zero\?, vfs_read to the user pt_regs/);
});

test('an interrupted RIP at a function\'s first byte is still recognised among the guesses, by address', () => {
  // %pB names that word after the function before it (read_zero+0x0 prints as clear_user_rep_good+0x30/0x30).
  const atStart = 0xffffffff81000130n;
  const guess = el('guess', atStart, 'clear_user_rep_good');
  const c = compareInstant([STUB, guess], [STUB, el('regs', atStart, 'read_zero'), USER], p);
  const v = instantVerdict(c, { strategy: 'section', unwinder: 'stock', warnings: [], interruptedFn: 'read_zero', interruptedIp: atStart });
  assert.match(v, /read_zero only as a `\?` guess/);
});
