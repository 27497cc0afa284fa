// The stepper's truth, on a hand-written instruction sequence whose frames follow from the x86
// rules alone: a call pushes ip + length at rsp - 8, a ret pops it, push %rbp / mov %rsp,%rbp build
// the frame at slot - 8, and an encoding stub puts &pt_regs|1 in rbp (entry_64.S ENCODE_FRAME_POINTER).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ShadowStack, type CpuState } from '../../services/realkernel/shadow-stack.ts';
import type { Insn } from '../../services/core/x86/insn.ts';

const STUB = 0xffffffff81c00ef0n; // entry code
const HANDLER = 0xffffffff81a40000n;
const LEAF = 0xffffffff81100000n;
const P = 0xffffc90000003e00n; // pt_regs
const INTERRUPTED_BP = 0xffffc90000003f80n;
const inEntry = (ip: bigint): boolean => ip >= 0xffffffff81c00000n && ip < 0xffffffff81c02000n;
const insn = (kind: Insn['kind'], len = 1): Insn => ({ kind, len, rep: false });

function run(tolerance: 'encoded_fp' | 'orc') {
  const sh = new ShadowStack({ type: 'timer', ip: 0xffffffff81234567n, sp: P + 168n, user: false, ptRegs: [P], base: [{ ip: 0xffffffff81200000n, kind: 'call' }] }, { tolerance, inEntryCode: inEntry });
  let cur: CpuState = { ip: STUB + 0x20n, sp: P, bp: INTERRUPTED_BP };
  const go = (i: Insn, next: Partial<CpuState>): void => {
    const after = { ...cur, ...next };
    sh.advance(cur, i, after);
    cur = after;
  };
  const snap = (atPush = false): ReturnType<ShadowStack['truth']> => sh.truth(cur, atPush);
  const out: Record<string, ReturnType<ShadowStack['truth']>> = {};
  out.beforeMarker = snap();
  go(insn('other', 5), { ip: STUB + 0x25n, bp: P | 1n }); // lea 1(%rsp),%rbp
  out.markerInStub = snap();
  go(insn('call', 5), { ip: HANDLER, sp: P - 8n }); // call handler: return address STUB+0x2a at P-8
  out.handlerFirst = snap(true);
  go(insn('push_rbp'), { ip: HANDLER + 1n, sp: P - 16n });
  out.handlerPushed = snap();
  go(insn('mov_rsp_rbp', 3), { ip: HANDLER + 4n, bp: P - 16n });
  out.handlerFramed = snap();
  go(insn('call', 5), { ip: LEAF, sp: P - 24n });
  out.leaf = snap();
  go(insn('ret'), { ip: HANDLER + 9n, sp: P - 16n });
  out.backInHandler = snap();
  go(insn('pop_rbp'), { ip: HANDLER + 10n, sp: P - 8n, bp: P | 1n });
  out.handlerEpilogue = snap();
  go(insn('ret'), { ip: STUB + 0x2an, sp: P });
  out.backInStub = snap();
  go(insn('other'), { ip: STUB + 0x30n, bp: INTERRUPTED_BP }); // the exit path's pop %rbp
  out.afterRestore = snap();
  return { sh, out };
}

test('return addresses are the calls\' ip + length, popped by rets; depth back to 0', () => {
  const { sh, out } = run('encoded_fp');
  assert.deepEqual(out.leaf!.map((f) => f.ip), [LEAF, HANDLER + 9n, STUB + 0x2an, 0xffffffff81234567n, 0xffffffff81200000n]);
  assert.deepEqual(out.leaf!.map((f) => f.kind), ['start', 'call', 'call', 'regs', 'call']);
  assert.equal(sh.depth, 0);
  assert.equal(sh.calls, 2);
  assert.equal(sh.rets, 2);
  assert.deepEqual(sh.replaced, []);
});

test('frame-pointer windows: prologue, leaf, epilogue on the innermost; the entry until its marker is reachable', () => {
  const { out } = run('encoded_fp');
  const tol = (k: string): (string | undefined)[] => out[k]!.map((f) => f.tolerated);
  assert.deepEqual(tol('beforeMarker'), [undefined, 'entry_code', undefined]);
  assert.deepEqual(tol('markerInStub'), [undefined, undefined, undefined]);
  assert.deepEqual(tol('handlerFirst'), [undefined, 'prologue', undefined, undefined]);
  assert.deepEqual(tol('handlerPushed'), [undefined, 'prologue', undefined, undefined]);
  assert.deepEqual(tol('handlerFramed'), [undefined, undefined, undefined, undefined]);
  assert.deepEqual(tol('leaf'), [undefined, 'leaf', undefined, undefined, undefined]);
  assert.deepEqual(tol('backInHandler'), [undefined, undefined, undefined, undefined]);
  assert.deepEqual(tol('handlerEpilogue'), [undefined, 'epilogue', undefined, undefined]);
  assert.deepEqual(tol('backInStub'), [undefined, undefined, undefined]);
  assert.deepEqual(tol('afterRestore'), [undefined, 'entry_code', undefined]);
});

test('ORC rules tolerate nothing outside entry code', () => {
  const { out } = run('orc');
  for (const [k, frames] of Object.entries(out)) {
    assert.ok(frames.every((f) => f.tolerated === undefined), k);
  }
});

test('a ret with nothing to pop is an error, not a silent miscount', () => {
  const sh = new ShadowStack({ type: 'timer', ip: 1n, sp: 2n, user: true, ptRegs: [], base: [] }, { tolerance: 'orc', inEntryCode: inEntry });
  assert.throws(() => sh.advance({ ip: STUB, sp: P, bp: 0n }, insn('ret'), { ip: 5n, sp: P + 8n, bp: 0n }), /empty shadow stack/);
  assert.throws(() => sh.advance({ ip: STUB, sp: P, bp: 0n }, insn('call', 5), { ip: 5n, sp: P, bp: 0n }), /not down by 8/);
});

test('entry code that clears rbp cuts the chain below the entry: tolerated there only', () => {
  const base = [{ ip: 0xffffffff81200000n, kind: 'call' as const }];
  const sh = new ShadowStack({ type: 'timer', ip: 0xffffffff81234567n, sp: P + 168n, user: false, ptRegs: [P], base, bp: INTERRUPTED_BP }, { tolerance: 'encoded_fp', inEntryCode: inEntry });
  // In error_entry (entry code) after `xor %ebp,%ebp`: neither the marker nor the interrupted rbp is reachable.
  const cleared = sh.truth({ ip: STUB + 0x40n, sp: P, bp: 0n }, false);
  assert.deepEqual(cleared.map((f) => f.tolerated), [undefined, 'entry_code', 'entry_code']);
  // Still holding the interrupted rbp: the chain below is reachable, only the interrupted ip is lost.
  const kept = sh.truth({ ip: STUB + 0x40n, sp: P, bp: INTERRUPTED_BP }, false);
  assert.deepEqual(kept.map((f) => f.tolerated), [undefined, 'entry_code', undefined]);
  // rbp 0 outside entry code is no window.
  const outside = sh.truth({ ip: HANDLER, sp: P, bp: 0n }, false);
  assert.deepEqual(outside.map((f) => f.tolerated), [undefined, 'entry_code', undefined]);
});

// The other two entry designs of issue 18 (patches/kernel/README.md). Both leave rbp = 0 after
// PUSH_AND_CLEAR_REGS; what makes the interrupted frame reachable differs.
const KE = 0xffffffff812001b0n; // the kernel_entry dummy's address
const states = (design: 'section' | 'kernel_entry') => {
  const sh = new ShadowStack(
    { type: 'timer', ip: 0xffffffff81234567n, sp: P + 168n, user: false, ptRegs: [P], base: [{ ip: 0xffffffff81200000n, kind: 'call' }], bp: INTERRUPTED_BP },
    { tolerance: 'encoded_fp', inEntryCode: inEntry, design, kernelEntry: KE },
  );
  let cur: CpuState = { ip: STUB + 0x20n, sp: P, bp: 0n };
  const out: [string, ReturnType<ShadowStack['truth']>][] = [];
  const go = (name: string, i: Insn, next: Partial<CpuState>, atPush = false): void => {
    const after = { ...cur, ...next };
    sh.advance(cur, i, after);
    cur = after;
    out.push([name, sh.truth(cur, atPush)]);
  };
  const regsTol = (name: string): string | undefined => out.find(([n]) => n === name)![1].find((f) => f.kind === 'regs')!.tolerated;
  return { sh, out, go, regsTol, at: () => cur };
};

test('section: the interrupted frame is reachable exactly while the stub-called handler\'s frame is on the rbp chain', () => {
  const { go, regsTol, out } = states('section');
  go('handlerFirst', insn('call', 5), { ip: HANDLER, sp: P - 8n }, true);
  go('handlerPushed', insn('push_rbp'), { ip: HANDLER + 1n, sp: P - 16n });
  go('handlerFramed', insn('mov_rsp_rbp', 3), { ip: HANDLER + 4n, bp: P - 16n });
  go('leaf', insn('call', 5), { ip: LEAF, sp: P - 24n });
  go('backInHandler', insn('ret'), { ip: HANDLER + 9n, sp: P - 16n });
  go('handlerEpilogue', insn('pop_rbp'), { ip: HANDLER + 10n, sp: P - 8n, bp: 0n });
  go('backInStub', insn('ret'), { ip: STUB + 0x2an, sp: P });
  assert.equal(regsTol('handlerFirst'), 'entry_code');
  assert.equal(regsTol('handlerPushed'), 'entry_code');
  assert.equal(regsTol('handlerFramed'), undefined);
  assert.equal(regsTol('leaf'), undefined);
  assert.equal(regsTol('backInHandler'), undefined);
  assert.equal(regsTol('handlerEpilogue'), 'entry_code');
  assert.equal(regsTol('backInStub'), 'entry_code');
  // In the handler's prologue no walk from rbp = 0 reaches the interrupted chain, and the handler is
  // not entry code: the chain below stays a hard loss (the kernel warns there: bad_address).
  const first = out.find(([n]) => n === 'handlerFirst')![1];
  assert.equal(first[first.length - 1]!.tolerated, undefined);
});

test('kernel_entry: reachable from the fake frame\'s mov %rsp,%rbp to its add $0x10,%rsp; the fake frame is no caller', () => {
  const { go, regsTol, out, sh } = states('kernel_entry');
  go('pushedKe', { kind: 'push_imm', len: 5, rep: false, value: KE }, { ip: STUB + 0x25n, sp: P - 8n });
  go('pushedBp', insn('other', 3), { ip: STUB + 0x28n, sp: P - 16n });
  go('fakeFramed', insn('mov_rsp_rbp', 3), { ip: STUB + 0x2bn, bp: P - 16n });
  go('handlerFirst', insn('call', 5), { ip: HANDLER, sp: P - 24n }, true);
  go('handlerFramed', insn('push_rbp'), { ip: HANDLER + 1n, sp: P - 32n });
  go('handlerMov', insn('mov_rsp_rbp', 3), { ip: HANDLER + 4n, bp: P - 32n });
  go('handlerEpilogue', insn('pop_rbp'), { ip: HANDLER + 5n, sp: P - 24n, bp: P - 16n });
  go('backInStub', insn('ret'), { ip: STUB + 0x30n, sp: P - 16n });
  go('fakeDropped', insn('other', 4), { ip: STUB + 0x34n, sp: P });
  assert.equal(regsTol('pushedKe'), 'entry_code');
  assert.equal(regsTol('pushedBp'), 'entry_code');
  for (const n of ['fakeFramed', 'handlerFirst', 'handlerFramed', 'handlerMov', 'handlerEpilogue', 'backInStub']) assert.equal(regsTol(n), undefined, n);
  assert.equal(regsTol('fakeDropped'), 'entry_code');
  for (const [n, frames] of out) assert.ok(frames.every((f) => f.ip !== KE), `${n}: kernel_entry is in the truth`);
  assert.equal(sh.depth, 0);
});

test('kernel_entry: a push of the dummy\'s address anywhere but right below pt_regs marks nothing', () => {
  const { go, regsTol } = states('kernel_entry');
  go('elsewhere', { kind: 'push_imm', len: 5, rep: false, value: KE }, { ip: STUB + 0x25n, sp: P - 40n });
  go('mov', insn('mov_rsp_rbp', 3), { ip: STUB + 0x28n, bp: P - 40n });
  assert.equal(regsTol('mov'), 'entry_code');
});
