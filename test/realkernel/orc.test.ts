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
import type { Sample } from '../../services/core/dump/sample.ts';
import { CALL, END, ORC_KALLSYMS, ORC_ROWS, PARTIAL, P_USER, REGS, STACK_END, USER_SP, WEAK, pageFaultStack } from '../support/orc-kernel.ts';

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

// A hand-built kernel (test/support/orc-kernel.ts): a syscall in which mid_fn takes a page fault,
// sampled in exc_page_fault after its `push %rbx`.
const KALLSYMS = ORC_KALLSYMS;

function S(a: bigint): number {
  return Number(BigInt.asIntN(64, a));
}

/** The table objtool would emit for the kernel (overrides replace single rows). */
function table(over: [bigint, OrcEntry][] = []): OrcTable {
  const m = new Map<bigint, OrcEntry>(ORC_ROWS.map(([a, e]) => [a, e]));
  for (const [a, e] of over) m.set(a, e);
  const sorted = [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return OrcTable.fromEntries('type2', sorted.map(([a]) => S(a)), sorted.map(([, e]) => e));
}

const build = (): { sample: Sample; pKernel: bigint } => pageFaultStack();

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
