// Inputs found by `npm run fuzz` (bench/fuzz-readers.ts) that broke a reader. Two hung it: a long
// run of one character made a scan quadratic in the run's length (64 KB: 11 s to over 30 s; the
// 1 MiB runs here would take hours). Each of those tests checks what the reader makes of such a
// line, worked out from the format's rules; the test runner's timeout is the hang guard (the fixed
// readers take milliseconds, ~1000x below it), not a timing assertion. One crashed it: a perf.data
// sample record whose length is not a multiple of 8 (perf writes 8-aligned records; a damaged file
// need not).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { collapsePerfScript } from '../../services/realhost/collapse.ts';
import { parseKernelLog } from '../../services/realhost/kernel-log.ts';
import { parsePerfData } from '../../services/realhost/perf-data.ts';

const RUN = 1 << 20;
const GUARD = { timeout: 60_000 };

describe('perf script: a long run of blanks in a header line', () => {
  // stackcollapse-perf.pl's header rule is `^(\S.+?)\s+(\d+)\/*(\d+)*\s+`: the blanks between the
  // command and the pid are one \s+, however many there are.
  const sample = (gap: string): string => `noploop${gap}4242 [000] 1.000000: cycles: \n\tffffffff81000000 do_thing ([kernel.kallsyms])\n\n`;

  it('reads the command and pid across 1 MiB of blanks as across one', GUARD, () => {
    const r = collapsePerfScript(sample(' '.repeat(RUN)), { pid: true });
    assert.equal(r.text, 'noploop-?;do_thing 1\n');
    assert.equal(r.unrecognized, 0);
  });

  it('returns on a line that is a character and 1 MiB of blanks or tabs (the fuzzer\'s input)', GUARD, () => {
    for (const blank of [' ', '\t']) {
      const r = collapsePerfScript(`i${blank.repeat(RUN)}\n` + sample(' '), {});
      // Not a header (no pid after the blanks): the sample after it is still read.
      assert.equal(r.text, 'noploop;do_thing 1\n');
    }
  });
});

describe('kernel log: a long run of capitals in a register line', () => {
  const log = (line: string): string => [
    '[    1.000000] Call Trace:',
    '[    1.000001]  <TASK>',
    '[    1.000002]  do_thing+0x12/0x40',
    '[    1.000003] RIP: 0010:do_thing+0x12/0x40',
    '[    1.000004] RSP: 0018:ffffc9000902f7d0 EFLAGS: 00010202',
    `[    1.000005] ${line}`,
    '[    1.000006]  </TASK>',
    '',
  ].join('\n');

  it('reads the registers on both sides of 1 MiB of capitals', GUARD, () => {
    const r = parseKernelLog(log(`RAX: 0000000000000001 ${'A'.repeat(RUN)} RBX: 0000000000000002`));
    const regs = r.traces[0]!.entryRegs[0]!.regs;
    assert.equal(regs.ax, 1n);
    assert.equal(regs.bx, 2n);
    assert.equal(regs.sp, 0xffffc9000902f7d0n);
    assert.equal(regs.ss, 0x18n);
    assert.equal(regs.flags, 0x10202n);
  });

  it('takes a name glued to the run as one unknown name, not as the register at its end', GUARD, () => {
    // "AAA…ARBX:" names no register the kernel prints: RBX is not set from it.
    const r = parseKernelLog(log(`RAX: 0000000000000001 ${'A'.repeat(RUN)}RBX: 0000000000000002`));
    const regs = r.traces[0]!.entryRegs[0]!.regs;
    assert.equal(regs.ax, 1n);
    assert.equal(regs.bx, undefined);
  });
});

describe('perf.data: a sample record whose length is not a multiple of 8', () => {
  /**
   * A little-endian perf.data by the layout of perf_file_header (tools/perf/util/header.h): one
   * perf_event_attr of PERF_ATTR_SIZE_VER0 (64 bytes) with sample_type = PERF_SAMPLE_CALLCHAIN
   * (1 << 5) and an empty ids section, then the data section holding `record`.
   */
  function perfData(record: Buffer): Buffer {
    const head = Buffer.alloc(104 + 80);
    head.write('PERFILE2', 0, 'latin1');
    head.writeBigUInt64LE(104n, 8); // header size
    head.writeBigUInt64LE(80n, 16); // attr_size: perf_event_attr + perf_file_section ids
    head.writeBigUInt64LE(104n, 24); // attrs.offset
    head.writeBigUInt64LE(80n, 32); // attrs.size
    head.writeBigUInt64LE(184n, 40); // data.offset
    head.writeBigUInt64LE(BigInt(record.length), 48); // data.size
    head.writeUInt32LE(0, 104); // attr.type: PERF_TYPE_HARDWARE
    head.writeUInt32LE(64, 108); // attr.size
    head.writeBigUInt64LE(1n << 5n, 128); // attr.sample_type: CALLCHAIN
    return Buffer.concat([head, record]);
  }

  /** PERF_RECORD_SAMPLE (type 9): the 8-byte header, callchain.nr = nr, then `tail` bytes. */
  function sampleRecord(nr: bigint, tail: number): Buffer {
    const b = Buffer.alloc(8 + 8 + tail);
    b.writeUInt32LE(9, 0);
    b.writeUInt16LE(1, 4); // misc: PERF_RECORD_MISC_KERNEL
    b.writeUInt16LE(b.length, 6);
    b.writeBigUInt64LE(nr, 8);
    return b;
  }

  it('rejects the sample as truncated when its callchain.nr needs more than the 4 bytes left', () => {
    // 4 bytes after nr: room for no 8-byte ip at all, so nr = 3 cannot fit.
    const r = parsePerfData(perfData(sampleRecord(3n, 4)), { file: 'x.perf.data' });
    assert.equal(r.samples.length, 0);
    assert.deepEqual(r.rejected.map((x) => [x.reason, x.where.field]), [['truncated', 'sample.callchain.nr']]);
  });

  it('still reads a callchain that fits, with odd bytes after it', () => {
    // nr = 1 and 12 bytes left: one ip (8 bytes) fits; the 4 bytes after it are the record's slack.
    const rec = sampleRecord(1n, 12);
    rec.writeBigUInt64LE(0xffffffff81000000n, 16);
    const r = parsePerfData(perfData(rec), { file: 'x.perf.data' });
    assert.equal(r.rejected.length, 0);
    assert.equal(r.samples.length, 1);
    assert.deepEqual(r.samples[0]!.callchain?.map((e) => e.addr), [0xffffffff81000000n]);
  });
});
