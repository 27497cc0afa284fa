// Kernel rules that no other test pinned down (each was removed from the code once and this file
// failed): user_mode()/the cs selector of pt_regs, and the FP unwinder's realigned last frame.
// Expectations come from the image the builder wrote and reference/kernel-unwinders.md (§1.2
// unwind_frame.c, §2.1 pt_regs, §9 rules 12-13), never from a checker run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSample, type StrategyCheck } from '../../../services/core/check/checker.ts';
import { STRATEGIES, type StrategyName } from '../../../services/core/unwind/types.ts';
import { PT_REGS_OFFSET, USER_CS, USER_DS } from '../../../services/core/stack/layout.ts';
import { Machine, USER_IP, USER_SP, taskGeometry } from '../../support/stack-image.ts';
import { FLAVOURS, assertHex, pageFault, showAll, type Flavour } from './fixtures.ts';

const ALL = STRATEGIES as readonly StrategyName[];

function only(f: Flavour, sample: Parameters<typeof checkSample>[0], s: StrategyName): StrategyCheck {
  return checkSample(sample, f.profile, [s]).results[0]!;
}

for (const f of FLAVOURS) {
  test(`${f.layout}: pt_regs whose cs slot holds no segment selector are not pt_regs (pt_regs_not_decoded)`, () => {
    // The CPU pushes CS as a 16-bit selector, zero-extended (Intel SDM §6.14.2): a word wider than
    // 16 bits in that slot means the strategy located something other than pt_regs. Here the slot
    // of the page fault's pt_regs holds a direct-map pointer.
    const { m, b: clean, ptRegs } = pageFault(f);
    assert.equal(only(f, clean.sample, f.decoder).verdict, 'exact', 'the unmodified image unwinds exactly');
    m.poke(ptRegs + BigInt(PT_REGS_OFFSET.cs), 0xffff888003c1e410n);
    const b = m.sample({ at: 0x88 });
    const r = only(f, b.sample, f.decoder);
    assert.equal(r.verdict, 'error', `${f.decoder}: ${r.verdict} ${r.reason} ${r.unwind.message}`);
    assert.equal(r.reason, 'pt_regs_not_decoded');
    assert.equal(r.unwind.frames.some((x) => x.kind === 'regs'), false, 'no regs frame from a word that is not pt_regs');
  });

  test(`${f.layout}: kernel pt_regs whose cs has RPL 3 are user_mode(): the trace ends there`, () => {
    // user_mode(regs) is cs & 3 (§9 rule 12): the same page-fault image with the user selector in
    // pt_regs->cs ends at that entry with outcome user, the interrupted (kernel) ip not reported.
    const { m, ptRegs } = pageFault(f);
    m.poke(ptRegs + BigInt(PT_REGS_OFFSET.cs), USER_CS);
    const b = m.sample({ at: 0x88 });
    const r = only(f, b.sample, f.decoder);
    const upToEntry = b.expected.findIndex((e) => e.kind === 'regs');
    assert.deepEqual(showAll(f.kernel, r.unwind.frames), showAll(f.kernel, b.expected.slice(0, upToEntry)));
    assert.equal(r.unwind.outcome, 'user');
  });
}

test('a sample taken in user mode (sampled cs & 3) has no kernel stack to walk: outcome user at once', () => {
  const f = FLAVOURS[0]!;
  const { b } = pageFault(f);
  b.sample.regs = { ...b.sample.regs, ip: USER_IP, sp: USER_SP, cs: USER_CS, ss: USER_DS };
  b.sample.truth = { frames: [{ ip: USER_IP, kind: 'start' }] };
  const c = checkSample(b.sample, f.profile, ALL);
  for (const r of c.results) {
    assert.equal(r.unwind.outcome, 'user', `${r.strategy}: ${r.unwind.reason} ${r.unwind.message}`);
    assert.deepEqual(r.unwind.frames.map((x) => x.ip), [USER_IP]);
    assert.equal(r.verdict, 'exact');
  }
});

/**
 * read(2) whose first C function realigned the stack GCC-DRAP style (unwind_frame.c's example,
 * x86_64_start_kernel): `lea 0x8(%rsp),%r10; and $-16,%rsp; pushq -0x8(%r10); push %rbp; mov
 * %rsp,%rbp`. task_pt_regs is ≡ 8 (mod 16), so the call's return slot P-8 is already aligned; the
 * duplicate return address lands at P-16 and the frame at P-24 = last_frame - 1 word.
 */
function realignedSyscall(f: Flavour): { m: Machine; dup: bigint } {
  const m = new Machine(f.kernel, f.layout);
  m.syscall();
  const a = m.call('do_syscall_64', { returnTo: 0x4e });
  assert.equal(m.rsp & 15n, 0n, 'the return slot is 16-byte aligned: `and $-16,%rsp` leaves rsp alone');
  const dup = m.push(a.ret!);
  m.frame(0x18);
  m.enter('__x64_sys_read', 0xa1, 0);
  m.enter('ksys_read', 0x1c, 0x10);
  return { m, dup };
}

for (const f of FLAVOURS) {
  test(`${f.layout}: the realigned last frame (bp = last_frame - 8, duplicate return address) ends the walk at the syscall regs`, () => {
    const { m, dup } = realignedSyscall(f);
    const g = taskGeometry(m.get('task'));
    assertHex(m.act('do_syscall_64').bp, g.lastFrame - 8n, 'do_syscall_64 frame one word below last_frame');
    assertHex(m.peek(dup), m.peek(g.lastFrame + 8n), 'the duplicate equals the return address at last_frame + 8');
    const b = m.sample({ at: 0x20 });
    for (const s of ALL) {
      const r = only(f, b.sample, s);
      // is_last_aligned_frame(): this is the last frame; the walk ends at the user-mode syscall
      // regs (outcome user), having read do_syscall_64's return from the duplicate at bp + 8.
      assert.deepEqual(showAll(f.kernel, r.unwind.frames), showAll(f.kernel, b.expected), s);
      assert.equal(r.unwind.outcome, 'user', `${s}: ${r.unwind.reason} ${r.unwind.message}`);
      assert.equal(r.verdict, 'exact', s);
      assertHex(r.unwind.frames[r.unwind.frames.length - 1]!.slot, dup, `${s}: return address read at bp + 8`);
    }
  });

  test(`${f.layout}: one word below last_frame without the duplicate is not the last frame`, () => {
    // Both halves of is_last_aligned_frame() are needed: with the words differing, the walk goes
    // on to the saved bp, which is the 0 entry code left in rbp, and ends in an error.
    const { m, dup } = realignedSyscall(f);
    m.poke(dup, f.kernel.at('do_syscall_64', 0x10));
    const b = m.sample({ at: 0x20 });
    const r = only(f, b.sample, f.decoder);
    assert.equal(r.unwind.outcome, 'error');
    assert.equal(r.unwind.reason, 'did_not_reach_end');
  });
}
