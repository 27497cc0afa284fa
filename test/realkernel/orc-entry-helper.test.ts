// The section cross-check through an entry helper. Since v5.x a user-mode exception's stub calls
// error_entry (entry text, not an IDT stub), which pushes pt_regs and re-pushes the stub's return
// address just below them (PUSH_AND_CLEAR_REGS save_ret=1) before calling sync_regs. Sampled in
// sync_regs (seen on Debian 6.1 under QEMU), the ORC walk meets error_entry's return address first;
// the section strategy's pt_regs are above the *stub's* return address, the word above it. The
// stack below is written as that code writes it; the expectations are the layout's, by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OrcTable } from '../../services/core/unwind/orc-table.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { unwind } from '../../services/core/unwind/index.ts';
import { crossCheckEntries } from '../../services/core/unwind/orc.ts';
import { StackSpace } from '../../services/core/unwind/space.ts';
import { checkSample } from '../../services/core/check/checker.ts';
import { PT_REGS_OFFSET, type PtRegsField } from '../../services/core/stack/layout.ts';
import type { Sample } from '../../services/core/dump/sample.ts';
import { CALL, REGS, PARTIAL, WEAK } from '../support/orc-kernel.ts';

const KALLSYMS = `ffffffff81000000 T _stext
ffffffff81000100 T sync_regs
ffffffff81000200 T exc_page_fault
ffffffff81e00000 T __entry_text_start
ffffffff81e00000 T error_entry
ffffffff81e00200 T __irqentry_text_start
ffffffff81e00200 T asm_exc_page_fault
ffffffff81e00300 T __irqentry_text_end
ffffffff81e00300 T __entry_text_end
ffffffff81e01000 T _etext
`;
const S = (a: bigint): number => Number(BigInt.asIntN(64, a));
// sync_regs: a leaf (CFA sp+8). error_entry after PUSH_AND_CLEAR_REGS save_ret=1: pt_regs at sp+8
// (UNWIND_HINT_REGS offset=8). The stub before `call error_entry`: iret frame at sp+8 (error code).
const ROWS: [bigint, ReturnType<typeof CALL>][] = [
  [0xffffffff81000000n, CALL(8)],
  [0xffffffff81000100n, CALL(8)],
  [0xffffffff81000200n, CALL(8)],
  [0xffffffff81e00000n, REGS(8)],
  [0xffffffff81e00200n, PARTIAL(8)],
  [0xffffffff81e00300n, WEAK],
];
const ORC = OrcTable.fromEntries('type2', ROWS.map(([a]) => S(a)), ROWS.map(([, e]) => e));
const profile = KernelProfile.fromKallsyms(KALLSYMS, { orc: ORC, framePointers: false });

// The CPU entry stack (cpu_entry_area), where user-mode exceptions land.
const BEGIN = 0xfffffe0000002000n;
const END = BEGIN + 0x1000n;
const P = END - 168n; // pt_regs at the top (hardware frame + the registers error_entry pushed)
const STUB_RET = 0xffffffff81e00209n; // asm_exc_page_fault+0x9, after `call error_entry`
const HELPER_RET = 0xffffffff81e00093n; // error_entry+0x93, after `call sync_regs`

function sample(): Sample {
  const mem = new Uint8Array(0x1000);
  const dv = new DataView(mem.buffer);
  const put = (a: bigint, v: bigint): void => dv.setBigUint64(Number(a - BEGIN), v, true);
  const regs: Partial<Record<PtRegsField, bigint>> = { ip: 0x401000n, cs: 0x33n, flags: 0x246n, sp: 0x7ffc0000e000n, ss: 0x2bn, orig_ax: 0xffffffffffffffffn };
  for (const [k, v] of Object.entries(regs)) put(P + BigInt(PT_REGS_OFFSET[k as PtRegsField]), v);
  put(P - 8n, STUB_RET);
  put(P - 16n, HELPER_RET);
  const sp = P - 16n;
  return {
    trigger: 'nmi',
    regs: { ip: 0xffffffff8100011en, sp, bp: 0n, cs: 0x10n, flags: 0x46n, ss: 0x18n },
    stacks: [{ type: 'entry', begin: BEGIN, end: END, windows: [{ start: BEGIN, bytes: mem }] }],
  };
}

test('sampled in sync_regs under error_entry: ORC reaches the user pt_regs and the section reading agrees through the stub', () => {
  const s = sample();
  const u = unwind(s, profile, 'orc');
  assert.equal(u.outcome, 'user', u.message);
  assert.deepEqual(u.frames.map((f) => [f.kind, profile.symbols.format(f.ip, f.kind === 'call')]), [
    ['start', 'sync_regs+0x1e/0x100'],
    ['call', 'error_entry+0x93/0x200'],
  ]);
  assert.equal(u.userRegsAt, P);
  const x = crossCheckEntries(profile, u, new StackSpace(s));
  assert.deepEqual(x.map((c) => [c.result, c.entry]), [['agree', 'page_fault']], x.map((c) => c.message).join('; '));
  assert.match(x[0]!.message, /asm_exc_page_fault\+0x9.*through error_entry/);
  assert.equal(checkSample(s, profile, ['orc']).results[0]!.verdict, 'consistent');
});

test('the same stack with a word above the helper that is no stub return stays a mismatch', () => {
  const s = sample();
  const w = s.stacks[0]!.windows[0]!;
  new DataView(w.bytes.buffer, w.bytes.byteOffset).setBigUint64(Number(P - 8n - BEGIN), 0xffffffff81000210n, true); // exc_page_fault+0x10: core text
  const u = unwind(s, profile, 'orc');
  const x = crossCheckEntries(profile, u, new StackSpace(s));
  assert.equal(x[0]?.result, 'mismatch');
  assert.equal(checkSample(s, profile, ['orc']).results[0]!.verdict, 'entry_mismatch');
});
