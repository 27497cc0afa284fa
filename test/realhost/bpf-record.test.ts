// The BPF sampler's records (services/realhost/bpf/sampler.h, struct ss_record) decoded into
// samples. Records are built here from the C layout (natural alignment: u32 magic, u32 size, u64
// time, u32 cpu/pid/tid/flags, char comm[16], u64 regs[21], s32 kstack_bytes, u32 nstacks,
// u64 kstack[64], 3 x {u64 begin, end, start; u32 len, type}, then the stack bytes).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRecords, RECORD_HEADER } from '../../services/realhost/bpf-record.ts';
import { formatTextDump, parseTextDump } from '../../services/core/dump/text.ts';
import { validateSample } from '../../services/core/dump/validate.ts';

interface Rec { user?: boolean; kstack?: bigint[]; stacks?: { type: number; begin: bigint; end: bigint; start: bigint; bytes: Uint8Array }[] }

function record(r: Rec): Uint8Array {
  const stacks = r.stacks ?? [];
  const size = RECORD_HEADER + stacks.reduce((n, s) => n + s.bytes.length, 0);
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x53534231, true);
  dv.setUint32(4, size, true);
  dv.setBigUint64(8, 12_000_000_123n, true);
  dv.setUint32(16, 1, true);
  dv.setUint32(20, 42, true);
  dv.setUint32(24, 43, true);
  dv.setUint32(28, r.user ? 1 : 0, true);
  b.set(Buffer.from('cat'), 32);
  const regs = new Array(21).fill(0n);
  regs[16] = r.user ? 0x401000n : 0xffffffff81000110n; // ip
  regs[17] = r.user ? 0x33n : 0x10n; // cs
  regs[19] = stacks[0]?.start ?? 0x7ffc0000n; // sp
  regs[10] = 0x1234n; // ax
  regs.forEach((v, i) => dv.setBigUint64(48 + i * 8, v, true));
  const k = r.kstack ?? [];
  dv.setInt32(216, k.length * 8, true);
  dv.setUint32(220, stacks.length, true);
  k.forEach((a, i) => dv.setBigUint64(224 + i * 8, a, true));
  let at = RECORD_HEADER;
  stacks.forEach((s, i) => {
    const p = 736 + i * 32;
    dv.setBigUint64(p, s.begin, true);
    dv.setBigUint64(p + 8, s.end, true);
    dv.setBigUint64(p + 16, s.start, true);
    dv.setUint32(p + 24, s.bytes.length, true);
    dv.setUint32(p + 28, s.type, true);
    b.set(s.bytes, at);
    at += s.bytes.length;
  });
  return b;
}

const IRQ_END = 0xffffc90000104000n;
const TASK_END = 0xffffc90000204000n;
const kernel = record({
  kstack: [0xffffffff81000110n, 0xffffffff81000220n],
  stacks: [
    { type: 1, begin: IRQ_END - 0x4000n, end: IRQ_END, start: IRQ_END - 16n, bytes: new Uint8Array(16).fill(1) },
    { type: 0, begin: TASK_END - 0x4000n, end: TASK_END, start: TASK_END - 24n, bytes: new Uint8Array(24).fill(2) },
  ],
});
const user = record({ user: true });

describe('decodeRecords', () => {
  it('decodes a kernel sample on the IRQ stack and the task stack it interrupted, and a user sample', () => {
    const d = decodeRecords(Buffer.concat([kernel, user]));
    assert.deepEqual(d.errors, []);
    assert.equal(d.samples.length, 2);
    assert.equal(d.userSamples, 1);
    const [k, u] = d.samples;
    assert.equal(k!.comm, 'cat');
    assert.equal(k!.pid, 42);
    assert.equal(k!.tid, 43);
    assert.equal(k!.cpu, 1);
    assert.equal(k!.time, '12.000000123');
    assert.equal(k!.regs!.ip, 0xffffffff81000110n);
    assert.equal(k!.regs!.ax, 0x1234n);
    assert.deepEqual(k!.stacks.map((s) => [s.type, s.begin, s.end, s.windows[0]!.start, s.windows[0]!.bytes.length]), [
      ['irq', IRQ_END - 0x4000n, IRQ_END, IRQ_END - 16n, 16], ['task', TASK_END - 0x4000n, TASK_END, TASK_END - 24n, 24],
    ]);
    assert.deepEqual(k!.callchain!.map((c) => c.addr), [0xffffffff81000110n, 0xffffffff81000220n]);
    assert.equal(validateSample(k!), undefined);
    assert.equal(u!.stacks.length, 0);
    assert.equal(u!.regs!.cs, 0x33n);
    // The text dump carries it all.
    const back = parseTextDump(formatTextDump(d.samples));
    assert.equal(back.rejected.length, 0);
    assert.deepEqual(back.samples[0]!.stacks[1]!.windows[0]!.bytes, new Uint8Array(24).fill(2));
  });
  it('reports truncation, a foreign magic and a window outside its stack, keeping the good records', () => {
    const cut = decodeRecords(Buffer.concat([user, kernel.subarray(0, kernel.length - 1)]));
    assert.equal(cut.samples.length, 1);
    assert.match(cut.errors[0]!.message, /byte 832: record size \d+ runs past the end/);
    const bad = Buffer.from(kernel);
    bad.writeUInt32LE(0x12345678, 0);
    assert.match(decodeRecords(bad).errors[0]!.message, /magic 0x12345678/);
    const out = Buffer.from(kernel);
    out.writeBigUInt64LE(IRQ_END - 8n, 736 + 16); // start + 16 bytes runs past the IRQ stack's end
    const d = decodeRecords(Buffer.concat([out, user]));
    assert.equal(d.samples.length, 1);
    assert.match(d.errors[0]!.message, /outside its bounds/);
  });
});
