// A tiny ORC kernel for the tests of the orc strategy and of ORC uploads: its symbols, the ORC rows
// objtool would emit for it, and a stack written the way the CPU and the entry code write it.
//
// A syscall (entry_SYSCALL_64 -> do_syscall_64 -> mid_fn) in which mid_fn takes a page fault;
// asm_exc_page_fault builds pt_regs and calls exc_page_fault, sampled after its `push %rbx`.
import type { Regs, Sample } from '../../services/core/dump/sample.ts';
import { PT_REGS_OFFSET, type PtRegsField } from '../../services/core/stack/layout.ts';
import { encodeOrcEntry, ORC_REG, ORC_TYPE, type OrcEntry } from '../../services/core/unwind/orc-table.ts';

export const ORC_KALLSYMS = `ffffffff81000000 T _stext
ffffffff81000100 T exc_page_fault
ffffffff81000140 T retpoline_like_thunk
ffffffff81000200 T mid_fn
ffffffff81000300 T do_syscall_64
ffffffff81000400 T undefined_fn
ffffffff81e00000 T __entry_text_start
ffffffff81e00000 T entry_SYSCALL_64
ffffffff81e00100 T __irqentry_text_start
ffffffff81e00100 T asm_exc_page_fault
ffffffff81e00200 T __irqentry_text_end
ffffffff81e00200 T __entry_text_end
ffffffff81e01000 T _etext
`;

function spEntry(spReg: number, spOffset: number, type: OrcEntry['type']): OrcEntry {
  return { spOffset, bpOffset: 0, spReg, bpReg: ORC_REG.UNDEFINED, type, signal: type === ORC_TYPE.REGS || type === ORC_TYPE.REGS_PARTIAL };
}
export function CALL(sp: number): OrcEntry {
  return spEntry(ORC_REG.SP, sp, ORC_TYPE.CALL);
}
export function REGS(sp: number): OrcEntry {
  return spEntry(ORC_REG.SP, sp, ORC_TYPE.REGS);
}
export function PARTIAL(sp: number): OrcEntry {
  return spEntry(ORC_REG.SP, sp, ORC_TYPE.REGS_PARTIAL);
}
export const END: OrcEntry = spEntry(ORC_REG.UNDEFINED, 0, ORC_TYPE.END_OF_STACK);
export const WEAK: OrcEntry = spEntry(ORC_REG.UNDEFINED, 0, ORC_TYPE.UNDEFINED);

/** The rows objtool would emit for the functions above, sorted by address. */
export const ORC_ROWS: readonly (readonly [bigint, OrcEntry])[] = [
  [0xffffffff81000000n, CALL(8)],
  [0xffffffff81000100n, CALL(8)], // exc_page_fault entry
  [0xffffffff81000101n, CALL(16)], // after push %rbx
  [0xffffffff81000140n, END], // a thunk with UNWIND_HINT_EMPTY
  [0xffffffff81000160n, CALL(8)],
  [0xffffffff81000200n, CALL(8)],
  [0xffffffff81000202n, CALL(24)], // mid_fn after two pushes
  [0xffffffff81000300n, CALL(8)],
  [0xffffffff81000301n, CALL(16)], // do_syscall_64 after push %rbx
  [0xffffffff81000400n, WEAK], // no ORC data for undefined_fn
  [0xffffffff81e00000n, END], // entry_SYSCALL_64+0: still on the user stack
  [0xffffffff81e00040n, REGS(0)], // pt_regs complete, `call do_syscall_64` at +0x40
  [0xffffffff81e00100n, PARTIAL(8)], // asm_exc_page_fault: iret frame above the error code
  [0xffffffff81e00110n, REGS(0)], // pt_regs complete, `call exc_page_fault` at +0x18
  [0xffffffff81e00200n, WEAK],
];

export const STACK_BEGIN = 0xffffc90000630000n;
export const STACK_END = STACK_BEGIN + 0x4000n;
export const P_USER = STACK_END - 168n; // task_pt_regs
export const USER_IP = 0x401234n;
export const USER_SP = 0x7ffc0000f000n;

/** Writes the stack as the CPU and the entry code would; the sample is taken at `ip` (exc_page_fault+4). */
export function pageFaultStack(ip = 0xffffffff81000104n): { sample: Sample; pKernel: bigint } {
  const mem = new Uint8Array(0x4000);
  const dv = new DataView(mem.buffer);
  const put = (addr: bigint, v: bigint): void => dv.setBigUint64(Number(addr - STACK_BEGIN), v, true);
  const regs = (at: bigint, r: Partial<Record<PtRegsField, bigint>>): void => {
    for (const [k, v] of Object.entries(r)) put(at + BigInt(PT_REGS_OFFSET[k as PtRegsField]), v);
  };
  regs(P_USER, { ip: USER_IP, cs: 0x33n, flags: 0x246n, sp: USER_SP, ss: 0x2bn, bp: 0x7ffc0000f100n });
  put(P_USER - 8n, 0xffffffff81e00045n); // call do_syscall_64 at entry_SYSCALL_64+0x40
  put(P_USER - 16n, 0x1111n); // push %rbx
  put(P_USER - 24n, 0xffffffff81000315n); // call mid_fn at do_syscall_64+0x10
  put(P_USER - 32n, 0x2222n);
  put(P_USER - 40n, 0x3333n); // mid_fn's two pushes: rsp = P_USER - 40 at mid_fn+8
  const rspBefore = P_USER - 40n;
  // The CPU aligns rsp to 16 and pushes ss, rsp, rflags, cs, rip; the stub pushes the rest.
  const pKernel = (rspBefore & ~0xfn) - 168n;
  regs(pKernel, { ip: 0xffffffff81000208n, cs: 0x10n, flags: 0x82n, sp: rspBefore, ss: 0x18n, orig_ax: 0n, bp: 0x4444n });
  put(pKernel - 8n, 0xffffffff81e0011dn); // call exc_page_fault at asm_exc_page_fault+0x18
  put(pKernel - 16n, 0x5555n); // exc_page_fault: push %rbx
  const sp = pKernel - 16n;
  const r: Regs = { ip, sp, bp: 0x4444n, cs: 0x10n, flags: 0x82n, ss: 0x18n };
  const sample: Sample = {
    trigger: 'nmi', regs: r,
    stacks: [{ type: 'task', begin: STACK_BEGIN, end: STACK_END, windows: [{ start: sp, bytes: mem.subarray(Number(sp - STACK_BEGIN)) }] }],
  };
  return { sample, pKernel };
}

/** Where the hand-made tables' .orc_unwind_ip section sits (any kernel-text address would do). */
export const IP_SECTION_ADDR = 0xffffffff82c5f474n;

/** The two sections as a vmlinux holds them (the body of an ORC upload): s32 ip offsets relative to their own slot. */
export function orcSections(rows: readonly (readonly [bigint, OrcEntry])[] = ORC_ROWS, base = IP_SECTION_ADDR): { layout: 'type2'; ipSectionAddr: bigint; ipSection: Uint8Array; unwindSection: Uint8Array } {
  const ipSection = new Uint8Array(rows.length * 4);
  const unwindSection = new Uint8Array(rows.length * 6);
  const dv = new DataView(ipSection.buffer);
  rows.forEach(([a, e], i) => {
    dv.setInt32(i * 4, Number(a - (base + BigInt(i * 4))), true);
    unwindSection.set(encodeOrcEntry(e, 'type2'), i * 6);
  });
  return { layout: 'type2', ipSectionAddr: base, ipSection, unwindSection };
}
