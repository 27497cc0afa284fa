// The decoder against encodings from the Intel SDM's opcode tables (and as GNU as assembles them):
// the call's length is what makes the shadow stack's return address, so every ModR/M form counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeInsn, modrmLength } from '../../../services/core/x86/insn.ts';

const b = (...x: number[]): Uint8Array => new Uint8Array([...x, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90]);

test('direct and indirect calls: kind and length', () => {
  assert.deepEqual(decodeInsn(b(0xe8, 1, 2, 3, 4)), { kind: 'call', len: 5, rep: false }); // call rel32
  assert.equal(decodeInsn(b(0xff, 0xd0)).len, 2); // call *%rax
  assert.equal(decodeInsn(b(0x41, 0xff, 0xd3)).len, 3); // call *%r11
  assert.equal(decodeInsn(b(0xff, 0x15, 1, 2, 3, 4)).len, 6); // call *disp32(%rip)
  assert.equal(decodeInsn(b(0xff, 0x14, 0x25, 1, 2, 3, 4)).len, 7); // call *abs32 (SIB, no base)
  assert.equal(decodeInsn(b(0xff, 0x50, 0x08)).len, 3); // call *0x8(%rax)
  assert.equal(decodeInsn(b(0xff, 0x54, 0x24, 0x08)).len, 4); // call *0x8(%rsp) (SIB + disp8)
  assert.equal(decodeInsn(b(0x41, 0xff, 0x94, 0x24, 1, 2, 3, 4)).len, 8); // call *disp32(%r12) (SIB + disp32)
  assert.equal(decodeInsn(b(0x2e, 0xe8, 1, 2, 3, 4)).len, 6); // cs-prefixed call (a retpoline-less alternative)
  assert.equal(decodeInsn(b(0xff, 0xe0)).kind, 'other'); // jmp *%rax is /4, not a call
  assert.equal(decodeInsn(b(0xff, 0x30)).kind, 'other'); // push (%rax) is /6
});

test('returns, iretq, sysretq and the frame instructions', () => {
  assert.equal(decodeInsn(b(0xc3)).kind, 'ret');
  assert.equal(decodeInsn(b(0xc2, 8, 0)).kind, 'ret');
  assert.equal(decodeInsn(b(0x48, 0xcf)).kind, 'iret');
  assert.equal(decodeInsn(b(0x48, 0x0f, 0x07)).kind, 'sysret');
  assert.equal(decodeInsn(b(0x55)).kind, 'push_rbp');
  assert.equal(decodeInsn(b(0x41, 0x55)).kind, 'other'); // push %r13
  assert.equal(decodeInsn(b(0x48, 0x89, 0xe5)).kind, 'mov_rsp_rbp');
  assert.equal(decodeInsn(b(0x48, 0x8b, 0xec)).kind, 'mov_rsp_rbp');
  assert.equal(decodeInsn(b(0x49, 0x89, 0xe5)).kind, 'other'); // mov %rsp,%r13
  assert.equal(decodeInsn(b(0x5d)).kind, 'pop_rbp');
  assert.equal(decodeInsn(b(0xc9)).kind, 'leave');
  assert.equal(decodeInsn(b(0xf3, 0xa4)).rep, true); // rep movsb
});

test('the entry designs\' marks: ENCODE_FRAME_POINTER\'s lea and the kernel_entry push', () => {
  // lea 0x1(%rsp),%rbp (ENCODE_FRAME_POINTER) and lea 0x9(%rsp),%rbp (ENCODE_FRAME_POINTER 8 in error_entry)
  assert.deepEqual(decodeInsn(b(0x48, 0x8d, 0x6c, 0x24, 0x01)), { kind: 'lea_rsp_rbp', len: 5, rep: false, value: 1n });
  assert.equal(decodeInsn(b(0x48, 0x8d, 0x6c, 0x24, 0x09)).value, 9n);
  assert.equal(decodeInsn(b(0x48, 0x8d, 0x6c, 0x24, 0xf8)).value, -8n);
  assert.equal(decodeInsn(b(0x4c, 0x8d, 0x6c, 0x24, 0x01)).kind, 'other'); // lea 0x1(%rsp),%r13
  assert.equal(decodeInsn(b(0x48, 0x8d, 0x7c, 0x24, 0x01)).kind, 'other'); // lea 0x1(%rsp),%rdi
  // push $0xffffffff812001a0: imm32 0x812001a0, sign-extended (the kernel_entry design's fake return address)
  assert.deepEqual(decodeInsn(b(0x68, 0xa0, 0x01, 0x20, 0x81)), { kind: 'push_imm', len: 5, rep: false, value: 0xffffffff812001a0n });
  assert.equal(decodeInsn(b(0x68, 0xff, 0xff, 0xff, 0x7f)).value, 0x7fffffffn);
  assert.equal(decodeInsn(b(0x66, 0x68, 1, 2)).kind, 'other'); // pushw $imm16
});

test('ModR/M lengths: register, rip-relative, SIB with and without base, displacements', () => {
  assert.equal(modrmLength(b(0xc0), 0), 1);
  assert.equal(modrmLength(b(0x05), 0), 5);
  assert.equal(modrmLength(b(0x04, 0x25), 0), 6);
  assert.equal(modrmLength(b(0x04, 0x24), 0), 2);
  assert.equal(modrmLength(b(0x44, 0x24), 0), 3);
  assert.equal(modrmLength(b(0x84, 0x24), 0), 6);
  assert.equal(modrmLength(new Uint8Array([0x04]), 0), undefined);
});
