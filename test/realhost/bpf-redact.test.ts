// What leaves the host by default (services/realhost/bpf-redact.ts), on a hand-built task stack:
// kernel text and stack addresses stay, the user-mode pt_regs at the stack's top keep ip, cs,
// flags, sp, ss and bp whatever they hold, and every other word and register becomes 0.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { redactSample } from '../../services/realhost/bpf-redact.ts';
import { KernelProfile } from '../../services/core/symbols/profile.ts';
import { PT_REGS_FIELDS, PT_REGS_SIZE } from '../../services/core/stack/layout.ts';
import type { Sample } from '../../services/core/dump/sample.ts';

const profile = KernelProfile.fromKallsyms('ffffffff81000000 T _stext\nffffffff81000100 T vfs_read\nffffffff81001000 T _etext\n');
const BASE = 0xffffc90000000000n;
const SIZE = 0x4000;
const TEXT = 0xffffffff81000123n;
const SECRET = 0x6b65792d31323334n; // "4321-yek": data, not an address

describe('redactSample', () => {
  it('keeps addresses and pt_regs control fields, zeroes the rest and counts it', () => {
    const words = 64;
    const start = BASE + BigInt(SIZE - words * 8);
    const b = new Uint8Array(words * 8);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(0, TEXT, true); // a return address
    dv.setBigUint64(8, start + 0x40n, true); // a saved stack pointer
    dv.setBigUint64(16, SECRET, true);
    dv.setBigUint64(24, 0xffff888012345678n, true); // a heap pointer: no unwinder needs it
    // user pt_regs at the top: every field a secret-like value except what the hardware saved
    const regsAt = b.length - PT_REGS_SIZE;
    PT_REGS_FIELDS.forEach((f, i) => dv.setBigUint64(regsAt + i * 8, f === 'cs' ? 0x33n : f === 'ss' ? 0x2bn : SECRET + BigInt(i), true));
    const s: Sample = {
      trigger: 'cpu-clock', regs: { ip: TEXT, sp: start, cs: 0x10n, ax: SECRET, r10: start + 8n, bp: SECRET },
      stacks: [{ type: 'task', begin: BASE, end: BASE + BigInt(SIZE), windows: [{ start, bytes: b }] }],
    };
    const st = redactSample(s, profile);
    const after = new DataView(s.stacks[0]!.windows[0]!.bytes.buffer);
    assert.equal(after.getBigUint64(0, true), TEXT);
    assert.equal(after.getBigUint64(8, true), start + 0x40n);
    assert.equal(after.getBigUint64(16, true), 0n);
    assert.equal(after.getBigUint64(24, true), 0n);
    const kept = new Set(['ip', 'cs', 'flags', 'sp', 'ss', 'bp']);
    PT_REGS_FIELDS.forEach((f, i) => {
      const v = after.getBigUint64(regsAt + i * 8, true);
      if (kept.has(f)) assert.notEqual(v, 0n, `pt_regs.${f} kept`);
      else assert.equal(v, 0n, `pt_regs.${f} zeroed`);
    });
    // 2 stack words + 15 pt_regs fields were non-address data
    assert.equal(st.zeroed, 2 + 15);
    assert.equal(st.words, words);
    assert.equal(s.regs!.ax, 0n);
    assert.equal(s.regs!.r10, start + 8n, 'a register holding a stack address is kept (ORC may base the CFA on it)');
    assert.equal(s.regs!.bp, SECRET, 'bp is one of the kept pt_regs fields');
    assert.equal(st.regsZeroed, 1);
  });
});
