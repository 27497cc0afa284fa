// npm run bench:host — the live real host: samples per second and the cost of each step (stop,
// registers, memory, unwind + checks), with and without QEMU single-stepping. The baseline, in
// the same run, is the gdbstub's bare round trip (a `qAttached` packet while stopped): the floor under
// every step that talks to QEMU. Then ORC unwind + verdict + cross-check throughput over the
// samples taken, offline. Then the single-step sweep (host qemu --sweep timer): steps per second,
// against the bare single-step round trip (`s` + `g`, nothing read or checked) in the same guest.
// SWEEP_ONLY=1 runs only the sweep part. Needs scripts/realkernel-setup.sh. Results go to bench/RESULTS.md.
import { cpus, loadavg } from 'node:os';
import { checkSample } from '../services/core/check/checker.ts';
import { crossCheckEntries } from '../services/core/unwind/orc.ts';
import { StackSpace } from '../services/core/unwind/space.ts';
import { unavailableReason } from '../services/realkernel/guest.ts';
import { RealHostSession } from '../services/realkernel/session.ts';
import { runSampling, summarize, type CheckedSample, type StepStats } from '../services/realkernel/run.ts';
import { openSweepTarget } from '../services/realkernel/sweep-target.ts';
import { sweepEntry } from '../services/realkernel/real-sweep.ts';

const N = Number(process.env.SAMPLES ?? 300);
const why = unavailableReason();
if (why) {
  console.log(`bench:host skipped: ${why}`);
  process.exit(0);
}

const fmt = (s: StepStats): string => `${s.median.toFixed(3)} / ${s.p90.toFixed(3)} / ${s.max.toFixed(2)}`;

if (process.env.SWEEP_ONLY !== '1') {
const session = await RealHostSession.open({ seed: 7, minIntervalMs: 0, maxIntervalMs: 2 });
try {
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}, Node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`one-time: vmlinux ${session.build.timings.vmlinux!.toFixed(0)} ms, ORC table ${session.build.timings.orc!.toFixed(0)} ms (${session.build.orc?.length ?? 0} entries), boot to /init ${session.timings.boot!.toFixed(0)} ms, gdbstub connect ${session.timings.connect!.toFixed(0)} ms`);

  // Baseline: the bare gdbstub round trip; the VM is stopped since the connect.
  const rtt: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t = performance.now();
    await session.gdb.request('qAttached');
    rtt.push(performance.now() - t);
  }
  rtt.sort((a, b) => a - b);
  const rttMed = rtt[rtt.length >> 1]!;
  console.log(`baseline: gdbstub round trip ('qAttached' while stopped) median ${rttMed.toFixed(3)} ms`);

  const runs: [string, CheckedSample[], number][] = [];
  for (const singleStep of [false, true]) {
    const t = performance.now();
    const run = await runSampling(session, { samples: N, singleStep });
    runs.push([singleStep ? 'single-step' : 'plain TCG', run, performance.now() - t]);
  }

  console.log('\n| mode | samples/s (wall, incl. 0–2 ms guest run) | stop | registers | memory | unwind+checks | total (median / p90 / max ms) | total ÷ round trip |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [name, run, ms] of runs) {
    const s = summarize(run);
    console.log(`| ${name} | ${(run.length / (ms / 1000)).toFixed(0)} | ${fmt(s.steps.stop)} | ${fmt(s.steps.regs)} | ${fmt(s.steps.memory)} | ${fmt(s.steps.unwind)} | ${fmt(s.steps.total)} | ${(s.steps.total.median / rttMed).toFixed(1)}× |`);
    console.log(`<!-- ${name}: where ${JSON.stringify(s.where)} ORC ${JSON.stringify(s.orcVerdicts)} crossings ${JSON.stringify(s.crossings)} -->`);
  }

  // Offline: ORC unwind + verdict + section cross-check over the samples taken.
  const samples = runs.flatMap(([, r]) => r.map((c) => c.sample));
  const kernel = samples.filter((s) => ((s.regs?.cs ?? 3n) & 3n) === 0n);
  let n = 0;
  const end = performance.now() + 2000;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (const s of kernel) {
      const space = new StackSpace(s);
      const c = checkSample(s, session.profile, ['orc'], { space });
      crossCheckEntries(session.profile, c.results[0]!.unwind, space);
      n++;
    }
  }
  const perSec = n / ((performance.now() - t0) / 1000);
  console.log(`\noffline ORC unwind + verdict + cross-check: ${perSec.toFixed(0)} kernel samples/s (${kernel.length} samples, ${(1000 / perSec).toFixed(4)} ms each)`);
} finally {
  session.close();
}
}

// --- the single-step sweep ----------------------------------------------------------------------
{
  const target = await openSweepTarget({});
  try {
    console.log(`\nsweep: machine ${cpus().length} × ${cpus()[0]?.model}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    // Baseline: the bare single step, `s` + `g`, wherever the guest is stopped (right after boot).
    const n = 2000;
    let t = performance.now();
    for (let i = 0; i < n; i++) {
      await target.gdb.step();
      await target.gdb.readRegisters();
    }
    const bare = n / ((performance.now() - t) / 1000);
    console.log(`baseline: bare gdbstub single step (s + g) ${bare.toFixed(0)} steps/s`);
    console.log('\n| sweep | steps | steps/s | in the gdbstub (s, g, stack, code) | ÷ bare s+g |');
    console.log('|---|---:|---:|---:|---:|');
    for (const [label, check] of [['timer from user, all checks', true], ['timer from user, no checks', false]] as const) {
      t = performance.now();
      const sw = await sweepEntry(target, 'timer', 'user', { check });
      const perSec = sw.steps.length / (sw.ms / 1000);
      console.log(`| ${label} | ${sw.steps.length} | ${perSec.toFixed(0)} | ${((sw.gdbMs / sw.ms) * 100).toFixed(0)} % | ${(perSec / bare).toFixed(2)} |`);
    }
  } finally {
    target.close();
  }
}
