// The layout constants, checked against the kernel headers' values (reference §2.1, §2.4, §2.5, §2.7).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PT_REGS_FIELDS, PT_REGS_OFFSET, PT_REGS_SIZE, PT_REGS_WORDS, IRET_FRAME_OFFSET, IRET_FRAME_SIZE,
  stackSize, linkFromTop, userMode, STACK_TYPE_NAME,
} from '../../../services/core/stack/layout.ts';

test('struct pt_regs: 21 words, 168 bytes, fields at the offsets of arch/x86/include/asm/ptrace.h', () => {
  assert.equal(PT_REGS_FIELDS.length, 21);
  assert.equal(PT_REGS_WORDS, 21);
  assert.equal(PT_REGS_SIZE, 168);
  const expected: Record<string, number> = {
    r15: 0, r14: 8, r13: 16, r12: 24, bp: 32, bx: 40, r11: 48, r10: 56, r9: 64, r8: 72,
    ax: 80, cx: 88, dx: 96, si: 104, di: 112, orig_ax: 120, ip: 128, cs: 136, flags: 144, sp: 152, ss: 160,
  };
  assert.deepEqual({ ...PT_REGS_OFFSET }, expected);
  // The IRET frame (ip, cs, flags, sp, ss) is the last 40 bytes.
  assert.equal(IRET_FRAME_OFFSET, 128);
  assert.equal(IRET_FRAME_OFFSET + IRET_FRAME_SIZE, PT_REGS_SIZE);
});

test('stack sizes: task and IRQ 16 KiB, exception and entry stacks 4 KiB; KASAN doubles all but the entry stack', () => {
  assert.equal(stackSize('task'), 16384);
  assert.equal(stackSize('irq'), 16384);
  for (const t of ['nmi', 'db', 'mce', 'df'] as const) assert.equal(stackSize(t), 4096);
  assert.equal(stackSize('entry'), 4096);
  assert.equal(stackSize('task', true), 32768);
  assert.equal(stackSize('irq', true), 32768);
  assert.equal(stackSize('nmi', true), 8192);
  assert.equal(stackSize('entry', true), 4096);
});

test('stack links: the IRQ stack top word; the saved RSP of the hardware frame atop an IST stack; none for task and entry', () => {
  assert.equal(linkFromTop('irq'), 8);
  // Hardware frame from the top down: ss (top-8), rsp (top-16), rflags, cs, rip.
  for (const t of ['nmi', 'db', 'mce', 'df'] as const) assert.equal(linkFromTop(t), 16);
  assert.equal(linkFromTop('task'), undefined);
  assert.equal(linkFromTop('entry'), undefined);
});

test('user_mode(regs) is cs & 3', () => {
  assert.equal(userMode(0x10n), false); // __KERNEL_CS
  assert.equal(userMode(0x33n), true); // __USER_CS
  assert.equal(userMode(0x23n), true); // __USER32_CS
  assert.equal(userMode(0n), false); // a kthread's zeroed regs
});

test('stack names as the kernel prints them between < >', () => {
  assert.equal(STACK_TYPE_NAME.nmi, 'NMI');
  assert.equal(STACK_TYPE_NAME.irq, 'IRQ');
  assert.equal(STACK_TYPE_NAME.task, 'TASK');
  assert.equal(STACK_TYPE_NAME.df, '#DF');
});
