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
