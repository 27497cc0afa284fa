// `stacksanity host qemu --sweep ENTRY`: the single-step sweep on a real kernel under QEMU. Boots
// the kernel (Debian's ORC build, or --kernel/--vmlinux), puts a hardware breakpoint on the entry
// stub, steps every instruction until the interrupted instruction runs again, checks each step
// with every applicable strategy against the stepper's own truth, and prints the blind-spot table
// of `stacksanity sweep` (--json: the same shape) with the findings for every failing step.
import { appendFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { formatBlindSpots } from '../emulator/sweep.ts';
import { blindSpotTable, entryCostOf, scenarioName, sweepEntry, sweepFindings, SWEEP_ENTRIES, type EntrySweep, type FromMode, type SweepEntryName } from '../realkernel/real-sweep.ts';
import { DESIGN_STRATEGY, openSweepTarget } from '../realkernel/sweep-target.ts';
import type { Io } from './check.ts';

export const SWEEP_USAGE = 'usage: stacksanity host qemu --sweep ENTRY [--from user|kernel|both] [--kernel BZIMAGE --vmlinux FILE] [--json FILE] [--max-steps N] [--trace FILE]\n'
  + `  ENTRY: ${Object.keys(SWEEP_ENTRIES).join(', ')} (syscall: from user mode only)\n`;

export async function runHostSweep(args: string[], io: Io): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args, allowPositionals: true,
      options: {
        sweep: { type: 'string' }, from: { type: 'string', default: 'both' }, kernel: { type: 'string' }, vmlinux: { type: 'string' },
        json: { type: 'string' }, 'max-steps': { type: 'string' }, trace: { type: 'string' },
      },
    });
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n${SWEEP_USAGE}`);
    return 2;
  }
  const o = v.values;
  if (v.positionals[0] !== 'qemu' || v.positionals.length !== 1) {
    io.err(SWEEP_USAGE);
    return 2;
  }
  const entry = o.sweep as SweepEntryName;
  if (!(entry in SWEEP_ENTRIES)) {
    io.err(`stacksanity host: --sweep must be one of ${Object.keys(SWEEP_ENTRIES).join(', ')}, not '${o.sweep}'\n`);
    return 2;
  }
  if (!['user', 'kernel', 'both'].includes(o.from!)) {
    io.err(`stacksanity host: --from must be user, kernel or both, not '${o.from}'\n`);
    return 2;
  }
  const maxSteps = o['max-steps'] !== undefined ? Number(o['max-steps']) : undefined;
  if (maxSteps !== undefined && (!Number.isInteger(maxSteps) || maxSteps <= 0)) {
    io.err(`stacksanity host: --max-steps must be a positive integer, not '${o['max-steps']}'\n`);
    return 2;
  }
  const modes: FromMode[] = o.from === 'both' ? (entry === 'syscall' ? ['user'] : ['user', 'kernel']) : [o.from as FromMode];
  if (entry === 'syscall' && modes.includes('kernel')) {
    io.err('stacksanity host: a syscall always comes from user mode: --from kernel does not apply\n');
    return 2;
  }
  const log = (s: string): void => io.err(`stacksanity host: ${s}\n`);
  let target;
  try {
    target = await openSweepTarget({ ...(o.kernel ? { kernel: o.kernel } : {}), ...(o.vmlinux ? { vmlinux: o.vmlinux } : {}), log });
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n`);
    return 2;
  }
  try {
    for (const n of target.notes) log(n);
    const flags = await target.gdb.request('qqemu.sstep');
    const bits = await target.gdb.request('qqemu.sstepbits');
    log(`QEMU single-step flags ${flags} (${bits}): left at the default, interrupts and timers masked while stepping`);
    const sweeps: EntrySweep[] = [];
    for (const from of modes) {
      if (o.trace) writeFileSync(o.trace, '');
      const trace = o.trace ? (line: string): void => appendFileSync(o.trace!, `${entry}_from_${from} ${line}\n`) : undefined;
      const sw = await sweepEntry(target, entry, from, { ...(maxSteps !== undefined ? { maxSteps } : {}), log, ...(trace ? { trace } : {}) });
      sweeps.push(sw);
      const cost = entryCostOf(sw);
      if (cost) log(`${scenarioName(sw)}: entry code ran ${cost.in} instructions on the way in (to ${cost.handler}${cost.outsideBefore ? `; ${cost.outsideBefore} more outside entry code before it` : ''}), ${cost.out} on the way out`);
      log(`${scenarioName(sw)}: ${sw.steps.length} steps (${sw.calls} calls, ${sw.rets} rets, ${sw.repeats} rep iterations), interrupted ${sw.interrupted.user ? 'user' : 'kernel'} ip ${sw.interrupted.ip.toString(16)}, ${sw.returned ? 'returned to it' : `did NOT return within the step limit (shadow depth ${sw.finalDepth})`}; ${(sw.steps.length / (sw.ms / 1000)).toFixed(0)} steps/s; ${sw.hitsSkipped} breakpoint hits skipped`);
    }
    // The entry layout the kernel's own code has (sweep-target.ts read it): the strategy that reads it.
    const layout = target.unwinder === 'orc' ? 'orc' : target.design ? DESIGN_STRATEGY[target.design] : 'encoded_fp';
    const table = blindSpotTable(sweeps, target.profile, layout, target.buildId);
    const findings = sweepFindings(sweeps, target.profile);
    io.out(`single-step sweep on a real kernel: ${sweeps.map(scenarioName).join(', ')}\n`);
    io.out('outcome per step: exact | window (only frames the kernel documents as lost at that instant) | stopped (all frames, then an error) |\n  not_decoded (the strategy cannot read this kernel\'s entries) | wrong (a recoverable frame lost, or one invented)\n\n');
    io.out(formatBlindSpots(table) + '\n');
    io.out(findings.length === 0 ? 'findings: none (every step is exact or in a window the kernel documents)\n' : `findings (${findings.length}):\n`);
    for (const f of findings) io.out(`  ${String(f.count).padStart(6)}  ${f.title}  at ${f.at.join(', ')}\n`);
    if (o.json) {
      const scenarios = sweeps.map((s) => ({ name: scenarioName(s), summary: summaryOf(s) }));
      writeFileSync(o.json, JSON.stringify({ scenarios, tables: [table], findings }, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x), 1) + '\n');
      log(`wrote ${o.json}`);
    }
    return sweeps.every((s) => s.returned) ? 0 : 1;
  } catch (e) {
    io.err(`stacksanity host: ${(e as Error).message}\n`);
    return 2;
  } finally {
    target.close();
  }
}

function summaryOf(s: EntrySweep): string {
  const at = s.interrupted.user ? 'user mode' : `kernel ip 0x${s.interrupted.ip.toString(16)}`;
  return `${s.stub} from ${at}: ${s.steps.length} steps, ${s.calls} calls and ${s.rets} returns, ${s.returned ? 'back at the interrupted instruction' : 'stopped at the step limit'}`;
}
