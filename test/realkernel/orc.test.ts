// The ORC decoder and unwinder on hand-built tables and stacks. Byte expectations come from the
// struct orc_entry layouts (orc_types.h: s16 sp_offset, s16 bp_offset, then little-endian
// bitfields); walk expectations from the rules of unwind_orc.c applied by hand to the stack
// written below (CFA = base + offset; CALL: return address at CFA - 8; REGS: pt_regs at CFA;
// REGS_PARTIAL: iret frame at CFA; lookups at ip - 1 after a call, at ip after pt_regs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeOrcEntry, encodeOrcEntry, orcLayoutForRelease, OrcTable, ORC_REG, ORC_TYPE, type OrcEntry, type OrcLayout } from '../../services/core/unwind/orc-table.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { unwind } from '../../services/core/unwind/index.ts';
import { crossCheckEntries } from '../../services/core/unwind/orc.ts';
import { StackSpace } from '../../services/core/unwind/space.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import type { Regs, Sample } from '../../services/core/dump/sample.ts';
import { PT_REGS_OFFSET, type PtRegsField } from '../../services/core/stack/layout.ts';

describe('struct orc_entry layouts', () => {
  test('6.1 (type:2, end:1): bytes of CALL sp+8, REGS_PARTIAL, and the end hint', () => {
    const call = Uint8Array.of(0x08, 0x00, 0x00, 0x00, 0x05, 0x00); // sp_offset 8, bp_offset 0, sp_reg SP(5), type CALL(0)
    assert.deepEqual(decodeOrcEntry(call, 0, 'type2'), { spOffset: 8, bpOffset: 0, spReg: ORC_REG.SP, bpReg: 0, type: ORC_TYPE.CALL, signal: false });
    const iret = Uint8Array.of(0x10, 0x00, 0x00, 0x00, 0x05, 0x02); // type 2 = REGS_IRET/REGS_PARTIAL, a signal frame
    assert.equal(decodeOrcEntry(iret, 0, 'type2').type, ORC_TYPE.REGS_PARTIAL);
    assert.equal(decodeOrcEntry(iret, 0, 'type2').signal, true);
    const end = Uint8Array.of(0, 0, 0, 0, 0x00, 0x04); // sp_reg UNDEFINED + end bit = UNWIND_HINT_EMPTY
    assert.equal(decodeOrcEntry(end, 0, 'type2').type, ORC_TYPE.END_OF_STACK);
    const weak = Uint8Array.of(0, 0, 0, 0, 0x00, 0x00); // sp_reg UNDEFINED without end: a terminator
    assert.equal(decodeOrcEntry(weak, 0, 'type2').type, ORC_TYPE.UNDEFINED);
    const bp = Uint8Array.of(0xf0, 0xff, 0xf0, 0xff, 0x14, 0x00); // sp -16 ... bp_reg PREV_SP(1) sp_reg BP(4)
    assert.deepEqual(decodeOrcEntry(bp, 0, 'type2'), { spOffset: -16, bpOffset: -16, spReg: ORC_REG.BP, bpReg: ORC_REG.PREV_SP, type: ORC_TYPE.CALL, signal: false });
  });

  test('6.4+ (type:3, signal:1)', () => {
    assert.equal(decodeOrcEntry(Uint8Array.of(8, 0, 0, 0, 5, 0x02), 0, 'type3').type, ORC_TYPE.CALL);
    const regs = decodeOrcEntry(Uint8Array.of(0, 0, 0, 0, 5, 0x0b), 0, 'type3'); // type 3 = REGS, bit 3 = signal
    assert.equal(regs.type, ORC_TYPE.REGS);
    assert.equal(regs.signal, true);
    assert.equal(decodeOrcEntry(Uint8Array.of(0, 0, 0, 0, 0, 0x01), 0, 'type3').type, ORC_TYPE.END_OF_STACK);
    assert.equal(decodeOrcEntry(Uint8Array.of(0, 0, 0, 0, 0, 0x07), 0, 'type3').type, ORC_TYPE.BAD);
  });

  test('encode is the inverse of decode in both layouts', () => {
    for (const layout of ['type2', 'type3'] as OrcLayout[]) {
      for (const e of [CALL(24), REGS(0), PARTIAL(8), END, { spOffset: -16, bpOffset: -16, spReg: ORC_REG.BP, bpReg: ORC_REG.PREV_SP, type: ORC_TYPE.CALL, signal: false }] as OrcEntry[]) {
        assert.deepEqual(decodeOrcEntry(encodeOrcEntry(e, layout), 0, layout), e);
      }
    }
  });

  test('the layout follows the kernel release', () => {
    assert.equal(orcLayoutForRelease('6.1.0-56-amd64'), 'type2');
    assert.equal(orcLayoutForRelease('6.3.13'), 'type2');
    assert.equal(orcLayoutForRelease('6.4.0'), 'type3');
    assert.equal(orcLayoutForRelease('6.12.9-amd64'), 'type3');
    assert.equal(orcLayoutForRelease('4.13.0'), undefined);
  });
});

describe('OrcTable', () => {
  test('.orc_unwind_ip entries are relative to their own address; lookups take the rightmost ip <= addr', () => {
    const base = 0xffffffff82c5f474n; // where 6.1's section sits; any address works
    const targets = [0xffffffff81000000n, 0xffffffff81000010n, 0xffffffff81000030n];
    const ipSection = new Uint8Array(12);
    const dv = new DataView(ipSection.buffer);
    targets.forEach((t, i) => dv.setInt32(i * 4, Number(t - (base + BigInt(i * 4))), true));
    const unwindSection = new Uint8Array(18);
    [CALL(8), CALL(16), END].forEach((e, i) => unwindSection.set(encodeOrcEntry(e, 'type2'), i * 6));
    const t = OrcTable.fromSections({ layout: 'type2', ipSectionAddr: base, ipSection, unwindSection });
    assert.equal(t.length, 3);
    assert.equal(t.find(S(0xffffffff81000000n)), 0);
    assert.equal(t.find(S(0xffffffff8100002fn)), 1);
    assert.equal(t.find(S(0xffffffff81000030n)), 2);
    assert.equal(t.find(S(0xffffffff80ffffffn)), -1);
    assert.throws(() => OrcTable.fromSections({ layout: 'type2', ipSectionAddr: base, ipSection, unwindSection: unwindSection.subarray(0, 12) }), RangeError);
  });

  test('unsorted tables are sorted; at equal addresses the weak terminator loses to the real entry', () => {
    const t = OrcTable.fromEntries('type2', [S(0xffffffff81000100n), S(0xffffffff81000000n), S(0xffffffff81000100n)], [CALL(16), CALL(8), WEAK]);
    assert.deepEqual([...t.ips], [S(0xffffffff81000000n), S(0xffffffff81000100n), S(0xffffffff81000100n)]);
    assert.equal(t.entry(t.find(S(0xffffffff81000100n))).type, ORC_TYPE.CALL);
  });
});

// ---------------------------------------------------------------------------------------------
// A hand-built kernel: a syscall (entry_SYSCALL_64 -> do_syscall_64 -> mid_fn) in which mid_fn
// takes a page fault; asm_exc_page_fault builds pt_regs and calls exc_page_fault, sampled after
// its `push %rbx`.
// ---------------------------------------------------------------------------------------------

const KALLSYMS = `ffffffff81000000 T _stext
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

function S(a: bigint): number {
  return Number(BigInt.asIntN(64, a));
}
function CALL(sp: number): OrcEntry {
  return { spOffset: sp, bpOffset: 0, spReg: ORC_REG.SP, bpReg: ORC_REG.UNDEFINED, type: ORC_TYPE.CALL, signal: false };
}
function REGS(sp: number): OrcEntry {
  return { spOffset: sp, bpOffset: 0, spReg: ORC_REG.SP, bpReg: ORC_REG.UNDEFINED, type: ORC_TYPE.REGS, signal: true };
}
function PARTIAL(sp: number): OrcEntry {
  return { spOffset: sp, bpOffset: 0, spReg: ORC_REG.SP, bpReg: ORC_REG.UNDEFINED, type: ORC_TYPE.REGS_PARTIAL, signal: true };
}
const END: OrcEntry = { spOffset: 0, bpOffset: 0, spReg: ORC_REG.UNDEFINED, bpReg: ORC_REG.UNDEFINED, type: ORC_TYPE.END_OF_STACK, signal: false };
const WEAK: OrcEntry = { ...END, type: ORC_TYPE.UNDEFINED };

/** The table objtool would emit for the functions above (overrides replace single rows). */
function table(over: [bigint, OrcEntry][] = []): OrcTable {
  const rows: [bigint, OrcEntry][] = [
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
  const m = new Map(rows.map(([a, e]) => [a, e]));
  for (const [a, e] of over) m.set(a, e);
  const sorted = [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return OrcTable.fromEntries('type2', sorted.map(([a]) => S(a)), sorted.map(([, e]) => e));
}

const STACK_BEGIN = 0xffffc90000630000n;
const STACK_END = STACK_BEGIN + 0x4000n;
const P_USER = STACK_END - 168n; // task_pt_regs
const USER_IP = 0x401234n;
const USER_SP = 0x7ffc0000f000n;

interface Built {
  sample: Sample;
  pKernel: bigint;
}

/** Writes the stack as the CPU and the entry code would, and samples in exc_page_fault+4. */
function build(): Built {
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
  const aligned = rspBefore & ~0xfn;
  const pKernel = aligned - 168n;
  regs(pKernel, { ip: 0xffffffff81000208n, cs: 0x10n, flags: 0x82n, sp: rspBefore, ss: 0x18n, orig_ax: 0n, bp: 0x4444n });
  put(pKernel - 8n, 0xffffffff81e0011dn); // call exc_page_fault at asm_exc_page_fault+0x18
  put(pKernel - 16n, 0x5555n); // exc_page_fault: push %rbx
  const sp = pKernel - 16n;
  const r: Regs = { ip: 0xffffffff81000104n, sp, bp: 0x4444n, cs: 0x10n, flags: 0x82n, ss: 0x18n };
  const sample: Sample = {
    trigger: 'nmi', regs: r,
    stacks: [{ type: 'task', begin: STACK_BEGIN, end: STACK_END, windows: [{ start: sp, bytes: mem.subarray(Number(sp - STACK_BEGIN)) }] }],
  };
  return { sample, pKernel };
}

function profile(t: OrcTable, framePointers?: boolean): KernelProfile {
  return KernelProfile.fromKallsyms(KALLSYMS, { orc: t, ...(framePointers !== undefined ? { framePointers } : {}) });
}

describe('orc unwinder', () => {
  test('a page fault inside a syscall: through the kernel pt_regs to the user pt_regs', () => {
    const { sample, pKernel } = build();
    const p = profile(table());
    const u = unwind(sample, p, 'orc');
    assert.equal(u.outcome, 'user', u.message);
    assert.deepEqual(u.frames.map((f) => [f.kind, p.symbols.format(f.ip, f.kind === 'call')]), [
      ['start', 'exc_page_fault+0x4/0x40'],
      ['call', 'asm_exc_page_fault+0x1d/0x100'],
      ['regs', 'mid_fn+0x8/0x100'],
      ['call', 'do_syscall_64+0x15/0x100'],
      ['call', 'entry_SYSCALL_64+0x45/0x100'],
    ]);
    assert.equal(u.frames[2]!.regsAt, pKernel);
    assert.equal(u.frames[2]!.entry, 'page_fault');
    assert.equal(u.userRegsAt, P_USER);
    assert.equal(u.reliable, true, 'ORC: kernel-mode pt_regs do not make a trace unreliable');
    const x = crossCheckEntries(p, u, new StackSpace(sample));
    assert.deepEqual(x.map((c) => [c.result, c.entry]), [['agree', 'page_fault'], ['agree', 'syscall']]);
    const c = checkSample(sample, p, ['orc']).results[0]!;
    assert.equal(c.verdict, 'consistent');
  });

  test('the frame-pointer strategies are not applicable on a kernel without frame pointers', () => {
    const { sample } = build();
    const c = checkSample(sample, profile(table(), false), ['fp', 'section', 'encoded_fp', 'orc']);
    assert.deepEqual(c.results.map((r) => [r.strategy, r.verdict, r.reason ?? '-']), [
      ['fp', 'not_applicable', 'no_frame_pointers'],
      ['section', 'not_applicable', 'no_frame_pointers'],
      ['encoded_fp', 'not_applicable', 'no_frame_pointers'],
      ['orc', 'consistent', '-'],
    ]);
    assert.deepEqual(c.disagreements, []);
  });

  test('a profile whose stub layout disagrees with the pt_regs ORC decoded: section_mismatch', () => {
    const { sample } = build();
    // The section strategy would read pt_regs 16 bytes above the stub's return slot; ORC found them at 8.
    const p = KernelProfile.fromKallsyms(KALLSYMS, { orc: table(), stubs: { asm_exc_page_fault: { offset: 16 } } });
    const c = checkSample(sample, p, ['orc']).results[0]!;
    assert.equal(c.verdict, 'entry_mismatch');
    assert.equal(c.reason, 'section_mismatch');
    assert.equal(c.entry, 'page_fault');
    assert.equal(c.unwind.outcome, 'user', 'the ORC walk itself ended validly');
  });

  test('an end hint in the middle of the stack truncates the trace (a retpoline thunk)', () => {
    const { sample } = build();
    sample.regs!.ip = 0xffffffff81000140n; // the thunk, entered by a call: its ORC entry says "end"
    const p = profile(table());
    const u = unwind(sample, p, 'orc');
    assert.equal(u.outcome, 'end_of_stack');
    assert.equal(u.frames.length, 1);
    const c = checkSample(sample, p, ['orc']).results[0]!;
    assert.deepEqual([c.verdict, c.reason], ['truncated', 'orc_end_hint']);
  });

  test('the first instruction of syscall entry, still on the user stack: a complete one-frame trace', () => {
    const sample: Sample = { trigger: 'nmi', regs: { ip: 0xffffffff81e00000n, sp: USER_SP, cs: 0x10n, bp: 0n }, stacks: [] };
    const p = profile(table());
    const u = unwind(sample, p, 'orc');
    assert.equal(u.outcome, 'end_of_stack');
    assert.equal(u.reliable, false, 'sp on no known stack: the kernel sets state->error');
    assert.equal(checkSample(sample, p, ['orc']).results[0]!.verdict, 'consistent');
  });

  test('an undefined entry stops the walk with orc_undefined', () => {
    const { sample } = build();
    sample.regs!.ip = 0xffffffff81000404n;
    const u = unwind(sample, profile(table()), 'orc');
    assert.deepEqual([u.outcome, u.reason], ['error', 'orc_undefined']);
  });

  test('a CFA that does not move up is "stack going in the wrong direction"', () => {
    const { sample } = build();
    // CFA = sp + 8 - 8: the "return address" is the word at sp - 8, below the sampled sp.
    const p = profile(table([[0xffffffff81000101n, CALL(-8)]]));
    sample.stacks[0]!.windows[0]!.start -= 16n;
    sample.stacks[0]!.windows[0]!.bytes = new Uint8Array(Number(STACK_END - sample.stacks[0]!.windows[0]!.start));
    const u = unwind(sample, p, 'orc');
    assert.equal(u.reason, 'frame_not_ascending', u.message);
  });

  test('a return slot off every stack stops with orc_off_stack', () => {
    const { sample } = build();
    const p = profile(table([[0xffffffff81000101n, CALL(0x5000)]]));
    const u = unwind(sample, p, 'orc');
    assert.equal(u.reason, 'orc_off_stack', u.message);
  });

  test('without ORC tables in the profile the strategy says so', () => {
    const { sample } = build();
    const u = unwind(sample, KernelProfile.fromKallsyms(KALLSYMS), 'orc');
    assert.equal(u.reason, 'no_regs');
    assert.match(u.message ?? '', /no ORC tables/);
  });
});
