// The few x86-64 instructions a single-stepper must recognise to keep a shadow call stack: calls
// (and their length, which gives the return address), returns, iretq, sysretq, and the frame
// instructions of a prologue and an epilogue. Pure: bytes in, a description out (Intel SDM vol. 2,
// one-byte opcode map and ModR/M addressing in 64-bit mode). Anything else is 'other'.
// Two more mark the entry designs of issue 18: ENCODE_FRAME_POINTER is `lea disp8(%rsp),%rbp`
// (48 8d 6c 24 disp8), and the kernel_entry design's fake return address is `push $imm32` (68 imm32).

export type InsnKind = 'call' | 'ret' | 'iret' | 'sysret' | 'push_rbp' | 'mov_rsp_rbp' | 'pop_rbp' | 'leave' | 'lea_rsp_rbp' | 'push_imm' | 'other';

export interface Insn {
  kind: InsnKind;
  /** Length in bytes, known for calls (the return address is ip + len) and the frame instructions. */
  len?: number;
  /** True when a REP/REPNE prefix is present: one step may execute one iteration only. */
  rep: boolean;
  /** lea_rsp_rbp: the displacement (rbp = rsp + disp); push_imm: the pushed value, sign-extended to 64 bits. */
  value?: bigint;
}

const LEGACY_PREFIXES = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3]);

/** Bytes a ModR/M byte (and what follows it: SIB, displacement) takes, in 64-bit mode with 64-bit addressing. */
export function modrmLength(b: Uint8Array, at: number): number | undefined {
  if (at >= b.length) return undefined;
  const m = b[at]!;
  const mod = m >> 6;
  const rm = m & 7;
  if (mod === 3) return 1;
  let n = 1;
  if (rm === 4) {
    if (at + 1 >= b.length) return undefined;
    const base = b[at + 1]! & 7;
    n++;
    if (mod === 0 && base === 5) return n + 4;
  } else if (mod === 0 && rm === 5) return n + 4; // rip-relative
  return n + (mod === 1 ? 1 : mod === 2 ? 4 : 0);
}

/** Decodes the instruction at the start of `b` (at least 15 bytes for a complete answer). */
export function decodeInsn(b: Uint8Array): Insn {
  let i = 0;
  let rep = false;
  let rex = 0;
  while (i < b.length && LEGACY_PREFIXES.has(b[i]!)) {
    if (b[i] === 0xf3 || b[i] === 0xf2) rep = true;
    i++;
  }
  if (i < b.length && (b[i]! & 0xf0) === 0x40) {
    rex = b[i]!;
    i++;
  }
  if (i >= b.length) return { kind: 'other', rep };
  const op = b[i]!;
  switch (op) {
    case 0xe8: return { kind: 'call', len: i + 5, rep };
    case 0xc3: return { kind: 'ret', len: i + 1, rep };
    case 0xc2: return { kind: 'ret', len: i + 3, rep };
    case 0xcf: return { kind: 'iret', len: i + 1, rep };
    case 0xc9: return { kind: 'leave', len: i + 1, rep };
    case 0x55: return i === 0 ? { kind: 'push_rbp', len: 1, rep } : { kind: 'other', rep };
    case 0x5d: return i === 0 ? { kind: 'pop_rbp', len: 1, rep } : { kind: 'other', rep };
    // mov %rsp,%rbp: 48 89 e5 or 48 8b ec (REX.W alone: with R or B set the registers are r12/r13)
    case 0x89:
      return rex === 0x48 && b[i + 1] === 0xe5 ? { kind: 'mov_rsp_rbp', len: i + 2, rep } : { kind: 'other', rep };
    case 0x8b:
      return rex === 0x48 && b[i + 1] === 0xec ? { kind: 'mov_rsp_rbp', len: i + 2, rep } : { kind: 'other', rep };
    // lea disp8(%rsp),%rbp: REX.W alone, ModR/M 01 101 100 (rbp, SIB + disp8), SIB 0x24 (base rsp, no index).
    case 0x8d:
      return rex === 0x48 && b[i + 1] === 0x6c && b[i + 2] === 0x24 && i + 3 < b.length
        ? { kind: 'lea_rsp_rbp', len: i + 4, rep, value: BigInt((b[i + 3]! << 24) >> 24) }
        : { kind: 'other', rep };
    case 0x68: {
      if (i !== 0 || b.length < 5) return { kind: 'other', rep }; // with 66 it pushes 16 bits
      const imm = (b[1]! | (b[2]! << 8) | (b[3]! << 16) | (b[4]! << 24)); // already signed: the CPU sign-extends it
      return { kind: 'push_imm', len: 5, rep, value: BigInt.asUintN(64, BigInt(imm)) };
    }
    case 0x0f:
      return b[i + 1] === 0x07 ? { kind: 'sysret', len: i + 2, rep } : { kind: 'other', rep };
    case 0xff: {
      if (i + 1 >= b.length) return { kind: 'other', rep };
      const reg = (b[i + 1]! >> 3) & 7;
      if (reg !== 2) return { kind: 'other', rep }; // /2 is a near indirect call; /3 (far) does not occur in the kernel
      const m = modrmLength(b, i + 1);
      return m === undefined ? { kind: 'other', rep } : { kind: 'call', len: i + 1 + m, rep };
    }
    default:
      return { kind: 'other', rep };
  }
}
