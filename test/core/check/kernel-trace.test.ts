// The kernel's own trace judged against the raw memory (services/core/check/kernel-trace.ts), on
// hand-built stacks: call encodings from the Intel SDM (CALL: E8 cd; FF /2 with ModRM/SIB/disp),
// a task stack laid out as the hardware and a compiler would, and a trace that obeys or breaks the
// rules a correct unwind obeys.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkKernelTrace, endsWithCall, formatTextSnippets, parseTextSnippets, kernelTraceFindings, type TextSnippets } from '../../../services/core/check/kernel-trace.ts';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { callchainFlags } from '../../../services/core/dump/callchain-flags.ts';
import type { UnwindResult, Frame } from '../../../services/core/unwind/types.ts';
import { signedFromBig } from '../../../services/core/u64.ts';

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
const pad = (b: Uint8Array): Uint8Array => Uint8Array.from([...new Array(16 - b.length).fill(0x90), ...b]);

describe('endsWithCall', () => {
  it('recognises every call form that can end at a return address', () => {
    assert.equal(endsWithCall(pad(bytes(0xe8, 0x10, 0x20, 0x30, 0x40))), true, 'call rel32');
    assert.equal(endsWithCall(pad(bytes(0xff, 0xd0))), true, 'call *%rax');
    assert.equal(endsWithCall(pad(bytes(0x41, 0xff, 0xd3))), true, 'call *%r11');
    assert.equal(endsWithCall(pad(bytes(0xff, 0x15, 1, 2, 3, 4))), true, 'call *disp32(%rip)');
    assert.equal(endsWithCall(pad(bytes(0xff, 0x50, 0x08))), true, 'call *0x8(%rax)');
    assert.equal(endsWithCall(pad(bytes(0xff, 0x14, 0x25, 1, 2, 3, 4))), true, 'call *abs32 (SIB, no base)');
    assert.equal(endsWithCall(pad(bytes(0xff, 0x94, 0x24, 1, 2, 3, 4))), true, 'call *disp32(%rsp)');
  });
  it('refuses bytes that end with no call', () => {
    assert.equal(endsWithCall(pad(bytes(0x48, 0x89, 0xe5))), false, 'mov %rsp,%rbp');
    assert.equal(endsWithCall(pad(bytes(0xff, 0xe0))), false, 'jmp *%rax is FF /4');
    assert.equal(endsWithCall(pad(bytes(0xe9, 1, 2, 3, 4))), false, 'jmp rel32');
    assert.equal(endsWithCall(new Uint8Array(16).fill(0x90)), false, 'nops');
  });
});

// _stext .. _etext holds three functions; a task stack of 64 bytes at 0xffffc90000000000.
const profile = KernelProfile.fromKallsyms([
  'ffffffff81000000 T _stext', 'ffffffff81000100 T leaf', 'ffffffff81000200 T middle', 'ffffffff81000300 T outer', 'ffffffff81001000 T _etext',
].join('\n'));
const LEAF_IP = 0xffffffff81000110n;
const RET_MIDDLE = 0xffffffff81000220n;
const RET_OUTER = 0xffffffff81000330n;
const BASE = 0xffffc90000000000n;

function sampleWith(words: bigint[], trace: bigint[]): Sample {
  const b = new Uint8Array(words.length * 8);
  const dv = new DataView(b.buffer);
  words.forEach((w, i) => dv.setBigUint64(i * 8, w, true));
  return {
    trigger: 'cpu-clock', regs: { ip: LEAF_IP, sp: BASE, cs: 0x10n },
    stacks: [{ type: 'task', begin: BASE, end: BASE + BigInt(b.length), windows: [{ start: BASE, bytes: b }] }],
    callchain: trace.map((addr) => ({ addr, dso: '[kernel.kallsyms]', flags: callchainFlags(addr) })),
  };
}

function orcOf(ips: bigint[]): UnwindResult {
  const frames: Frame[] = ips.map((ip, i) => ({ ip, ipS: signedFromBig(ip), kind: i === 0 ? 'start' : 'call', stack: 'task' }));
  return { strategy: 'orc', frames, outcome: 'kthread', reliable: true, stacks: ['task'] };
}

const callBytes: TextSnippets = new Map([[RET_MIDDLE, pad(bytes(0xe8, 0, 0, 0, 0))], [RET_OUTER, pad(bytes(0xff, 0xd0))]]);

describe('checkKernelTrace', () => {
  it('passes a trace whose return addresses lie on the stack in order, after calls, equal to the ORC walk', () => {
    const s = sampleWith([0x1234n, RET_MIDDLE, 0n, RET_OUTER], [LEAF_IP, RET_MIDDLE, RET_OUTER]);
    const c = checkKernelTrace(s, profile, orcOf([LEAF_IP, RET_MIDDLE, RET_OUTER]), callBytes)!;
    assert.deepEqual(c.problems, []);
    assert.equal(c.onStack, 2);
    assert.equal(c.afterCall, 2);
    assert.equal(c.equalToOrc, true);
  });
  it('finds a return address printed out of order (below the previous one on the stack)', () => {
    const s = sampleWith([RET_OUTER, RET_MIDDLE], [LEAF_IP, RET_MIDDLE, RET_OUTER]);
    const c = checkKernelTrace(s, profile, undefined, callBytes)!;
    assert.deepEqual(c.problems.map((p) => [p.index, p.reason]), [[2, 'not_on_stack']]);
    assert.match(c.problems[0]!.message, /out of order/);
  });
  it('finds an address that is nowhere on the stack, one that is not text, and one after no call', () => {
    const notText = 0xffff888000001000n;
    const s = sampleWith([RET_MIDDLE], [LEAF_IP, RET_MIDDLE, notText]);
    const noCall: TextSnippets = new Map([[RET_MIDDLE, pad(bytes(0x48, 0x89, 0xe5))]]);
    const c = checkKernelTrace(s, profile, orcOf([LEAF_IP, RET_MIDDLE, notText]), noCall)!;
    assert.deepEqual(c.problems.map((p) => p.reason).sort(), ['not_after_call', 'not_text']);
    const s2 = sampleWith([RET_MIDDLE], [LEAF_IP, RET_MIDDLE, RET_OUTER]);
    assert.deepEqual(checkKernelTrace(s2, profile, undefined, callBytes)!.problems.map((p) => p.reason), ['not_on_stack']);
  });
  it('exempts pt_regs ips (ORC regs frames) from the call check', () => {
    const s = sampleWith([RET_MIDDLE], [LEAF_IP, RET_MIDDLE]);
    const orc = orcOf([LEAF_IP, RET_MIDDLE]);
    orc.frames[1]!.kind = 'regs';
    const c = checkKernelTrace(s, profile, orc, new Map([[RET_MIDDLE, pad(bytes(0x90))]]))!;
    assert.deepEqual(c.problems, []);
  });
  it('reports a trace that differs from the ORC walk, and a wrong start, as findings', () => {
    const s = sampleWith([RET_MIDDLE, RET_OUTER], [LEAF_IP + 1n, RET_MIDDLE, RET_OUTER]);
    const c = checkKernelTrace(s, profile, orcOf([LEAF_IP, RET_MIDDLE]), callBytes)!;
    assert.deepEqual(c.problems.map((p) => p.reason).sort(), ['orc_differs', 'wrong_start']);
    assert.equal(c.equalToOrc, false);
    const f = kernelTraceFindings(s, c, profile);
    assert.equal(f.length, 2);
    assert.ok(f.every((x) => x.strategy === 'kernel' && /^[0-9a-f]{16}$/.test(x.id)));
  });
  it('compares a trace cut at the sampler cap as a prefix of the ORC walk', () => {
    const s = sampleWith([RET_MIDDLE, RET_OUTER], [LEAF_IP, RET_MIDDLE]);
    assert.equal(checkKernelTrace(s, profile, orcOf([LEAF_IP, RET_MIDDLE, RET_OUTER]), callBytes, 2)!.equalToOrc, true);
    assert.equal(checkKernelTrace(s, profile, orcOf([LEAF_IP, RET_MIDDLE, RET_OUTER]), callBytes)!.equalToOrc, false);
  });
  it('skips samples without memory or without a kernel trace', () => {
    const s = sampleWith([RET_MIDDLE], []);
    assert.equal(checkKernelTrace(s, profile, undefined, undefined), undefined);
    assert.equal(checkKernelTrace({ ...s, stacks: [], callchain: [{ addr: LEAF_IP, flags: [] }] }, profile, undefined, undefined), undefined);
  });
});

describe('text snippets file', () => {
  it('round-trips and names the bad line', () => {
    assert.deepEqual(parseTextSnippets(formatTextSnippets(callBytes)), callBytes);
    assert.throws(() => parseTextSnippets('# c\nffffffff81000220 zz\n', 'k.text'), /k\.text:2/);
  });
});
