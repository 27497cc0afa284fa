// Inputs found by `npm run fuzz` (bench/fuzz-readers.ts) that hung a reader: a long run of one
// character made a scan quadratic in the run's length (64 KB: 11 s to over 30 s; the 1 MiB runs
// here would take hours). Each test checks what the reader makes of such a line, worked out from
// the format's rules; the test runner's timeout is the hang guard (the fixed readers take
// milliseconds, ~1000x below it), not a timing assertion.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { collapsePerfScript } from '../../services/realhost/collapse.ts';
import { parseKernelLog } from '../../services/realhost/kernel-log.ts';

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
