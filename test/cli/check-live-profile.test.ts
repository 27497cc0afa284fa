// `check --kernels DIR` on the profile layout `capture --bpf` writes (<id>.kallsyms, <id>.orc in the
// ORC upload form, <id>.text, <id>.profile.json), without BPF: a hand-built kernel of two functions
// whose ORC rows say "leaf: return address at sp" and "outer: end of stack", one sample on a task
// stack laid out as a kthread's bottom would be, and the kernel's trace printed for it.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { encodeOrcEntry, encodeOrcUpload, ORC_REG, ORC_TYPE } from '../../services/core/unwind/orc-table.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import { formatTextSnippets } from '../../services/core/check/kernel-trace.ts';
import { PT_REGS_SIZE } from '../../services/core/stack/layout.ts';
import { callchainFlags } from '../../services/core/dump/callchain-flags.ts';
import type { Sample } from '../../services/core/dump/sample.ts';
import { runCli } from '../support/cli.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'live-profile-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ID = 'b1d';
const LEAF = 0xffffffff81000100n;
const OUTER = 0xffffffff81000200n;
const IP = LEAF + 0x10n;
const RET = OUTER + 0x15n; // after a 5-byte call at outer+0x10
const kernels = path.join(dir, 'kernels');
const TOP = 0xffffc90000004000n; // task stack [TOP - 16 KiB, TOP)

function setup(): void {
  // ORC: the ip table holds s32 offsets relative to each slot, at an address of our choosing.
  const ipAddr = 0xffffffff82000000n;
  const ips = [LEAF, OUTER, 0xffffffff81000300n];
  const ipSection = new Uint8Array(ips.length * 4);
  const dv = new DataView(ipSection.buffer);
  ips.forEach((ip, i) => dv.setInt32(i * 4, Number(ip - (ipAddr + BigInt(i * 4))), true));
  const rows = [
    encodeOrcEntry({ spReg: ORC_REG.SP, spOffset: 8, bpReg: ORC_REG.UNDEFINED, bpOffset: 0, type: ORC_TYPE.CALL }, 'type3'),
    encodeOrcEntry({ spReg: ORC_REG.UNDEFINED, spOffset: 0, bpReg: ORC_REG.UNDEFINED, bpOffset: 0, type: ORC_TYPE.END_OF_STACK }, 'type3'),
    encodeOrcEntry({ spReg: ORC_REG.UNDEFINED, spOffset: 0, bpReg: ORC_REG.UNDEFINED, bpOffset: 0, type: ORC_TYPE.UNDEFINED }, 'type3'),
  ];
  const unwindSection = new Uint8Array(rows.length * 6);
  rows.forEach((r, i) => unwindSection.set(r, i * 6));
  const k = (n: string): string => path.join(kernels, `${ID}.${n}`);
  mkdirSync(kernels, { recursive: true });
  writeFileSync(k('kallsyms'), 'ffffffff81000000 T _stext\nffffffff81000100 T leaf\nffffffff81000200 T outer\nffffffff81001000 T _etext\n');
  writeFileSync(k('orc'), encodeOrcUpload({ layout: 'type3', ipSectionAddr: ipAddr, ipSection, unwindSection }));
  writeFileSync(k('profile.json'), JSON.stringify({ buildId: ID, framePointers: false }));
  const callBytes = new Uint8Array(16).fill(0x90);
  callBytes.set([0xe8, 0, 0, 0, 0], 11);
  writeFileSync(k('text'), formatTextSnippets(new Map([[RET, callBytes]])));
}

function dump(trace: bigint[]): string {
  // sp just below the kthread's pt_regs area: one return slot, then the (zero) pt_regs.
  const sp = TOP - BigInt(PT_REGS_SIZE) - 8n;
  const bytes = new Uint8Array(Number(TOP - sp));
  new DataView(bytes.buffer).setBigUint64(0, RET, true);
  const s: Sample = {
    comm: 'kworker', pid: 7, tid: 7, cpu: 0, time: '1.000000001', trigger: 'cpu-clock', kernel: ID,
    regs: { ip: IP, sp, cs: 0x10n, bp: 0n },
    stacks: [{ type: 'task', begin: TOP - 0x4000n, end: TOP, windows: [{ start: sp, bytes }] }],
    callchain: trace.map((addr) => ({ addr, dso: '[kernel.kallsyms]', flags: callchainFlags(addr) })),
  };
  return formatTextDump([s]);
}

describe('check --kernels on a live host profile', () => {
  it('runs the orc strategy from <id>.orc and finds the kernel trace equal to it, on the stack, after a call', async () => {
    setup();
    const f = path.join(dir, 'good.dump');
    writeFileSync(f, dump([IP, RET]));
    const r = await runCli(['check', '--kernels', kernels, f]);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /orc +exact 1/);
    assert.match(r.out, /equal to the project's ORC walk: 1 of 1 \(100\.0 %\)/);
    assert.match(r.out, /frames found on the stack in order: 1 of 1; return addresses after a call instruction: 1/);
  });
  it('makes a kernel trace with a frame that is not on the stack a finding, and fails the run', async () => {
    setup();
    const f = path.join(dir, 'bad.dump');
    writeFileSync(f, dump([IP, RET, OUTER + 0x40n]));
    const r = await runCli(['check', '--kernels', kernels, f]);
    assert.equal(r.code, 1, r.out + r.err);
    assert.match(r.out, /problems: .*not_on_stack 1/);
    assert.match(r.out, /kernel's own trace \(not_on_stack\) at outer/);
  });
});
