// npm run bench:bpf — the live-host BPF sampler's cost on this machine, next to `perf record -a -g`
// at the same rate in the same run (issue 16). Three phases of the same length under the same
// kernel-heavy workload (dd from /dev/zero to /dev/null, 4 KiB reads: one syscall and one kernel
// copy per read): the workload alone (baseline throughput), with `capture --bpf`'s sampler, and
// with perf record -g. Reported per phase: samples, kernel-mode samples, lost samples, bytes per
// kernel sample, the sampler's CPU (BPF program time from the kernel's bpf_stats, loader, agent;
// for perf: perf record's own user+sys and perf script's), and the workload's throughput as a
// share of the baseline (what the host loses). Needs root; prints why when it cannot run.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { bpfPreflight, bpfRecord, BpfUnavailable } from '../services/realhost/bpf-capture.ts';
import { parsePerfData } from '../services/realhost/perf-data.ts';

const D = Number(process.env.SECONDS_PER_PHASE ?? 30);
const HZ = Number(process.env.HZ ?? 99);
try {
  bpfPreflight();
} catch (e) {
  if (e instanceof BpfUnavailable) {
    console.log(`bench:bpf skipped: ${e.message}`);
    process.exit(0);
  }
  throw e;
}

/** Starts the workload; resolves with its bytes per second once stopped (dd reports on SIGINT). */
function workload(): { stop: () => Promise<number> } {
  const p = spawn('dd', ['if=/dev/zero', 'of=/dev/null', 'bs=4k'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  return {
    stop: () => new Promise((resolve) => {
      p.on('exit', () => {
        const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(err);
        resolve(m ? Number(m[1]) / Number(m[2]) : NaN);
      });
      p.kill('SIGINT');
    }),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'bench-bpf-'));
try {
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}, Node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ${D}s per phase at ${HZ} Hz`);

  // 1. Baseline: the workload alone.
  let w = workload();
  spawnSync('sleep', [String(D)]);
  const base = await w.stop();

  // 2. The BPF sampler (redacted, as shipped).
  w = workload();
  const b = bpfRecord({ duration: D, frequency: HZ });
  const withBpf = await w.stop();
  const st = b.stats;
  const bpfCpu = st.bpf_ns / 1e9 + st.loader_cpu_s + b.agentCpuS;

  // 3. perf record -a -g at the same rate; bash's `times` gives perf's own CPU (children).
  w = workload();
  const data = join(dir, 'perf.data');
  const rec = spawnSync('bash', ['-c', `perf record -a -g -F ${HZ} -o ${data} -- sleep ${D} 2>${join(dir, 'rec.err')}; times`], { encoding: 'utf8' });
  const withPerf = await w.stop();
  const times = rec.stdout.trim().split('\n').pop()!.split(/\s+/).map((x) => { const m = /(\d+)m([\d.]+)s/.exec(x); return m ? Number(m[1]) * 60 + Number(m[2]) : 0; });
  const perfRecCpu = times[0]! + times[1]!;
  const recErr = readFileSync(join(dir, 'rec.err'), 'utf8');
  const lostM = /(\d+) (?:chunks|events) LOST|lost (\d+)/i.exec(recErr);
  const scr = spawnSync('bash', ['-c', `perf script -i ${data} -F comm,pid,tid,cpu,time,period,event,ip,sym,symoff,dso >/dev/null 2>&1; times`], { encoding: 'utf8' });
  const st2 = scr.stdout.trim().split('\n').pop()!.split(/\s+/).map((x) => { const m = /(\d+)m([\d.]+)s/.exec(x); return m ? Number(m[1]) * 60 + Number(m[2]) : 0; });
  const perfScriptCpu = st2[0]! + st2[1]!;
  const parsed = parsePerfData(readFileSync(data), { file: data });
  const perfSamples = parsed.samples.length;
  const perfKernel = parsed.samples.filter((s) => (s.callchain?.[0]?.addr ?? 0n) >= 0xffff800000000000n).length;
  const perfBytes = statSync(data).size;

  const pct = (x: number): string => `${((100 * x) / base).toFixed(1)} %`;
  console.log(`workload alone: ${(base / 1e6).toFixed(0)} MB/s`);
  console.log(`bpf sampler: ${st.samples} samples (${st.kernel} kernel, ${st.user} user), ${st.lost} lost, ${st.cpus} CPUs; ` +
    `BPF program ${(st.bpf_ns / st.bpf_runs / 1000).toFixed(1)} µs/sample (${(st.bpf_ns / 1e9).toFixed(3)} s), loader ${st.loader_cpu_s.toFixed(3)} s, agent ${b.agentCpuS.toFixed(3)} s; ` +
    `total ${(1e6 * bpfCpu / st.samples).toFixed(1)} µs CPU/sample, ${(100 * bpfCpu / D / st.cpus).toFixed(2)} % of the CPUs; ` +
    `${Math.round((st.bytes - st.records * 832) / Math.max(1, st.kernel))} stack bytes/kernel sample; redacted ${b.redaction?.zeroed ?? 0} of ${b.redaction?.words ?? 0} words; workload at ${pct(withBpf)}`);
  console.log(`perf record -g: ${perfSamples} samples (${perfKernel} kernel), lost ${lostM ? (lostM[1] ?? lostM[2]) : 0}; perf record ${perfRecCpu.toFixed(3)} s CPU, perf script ${perfScriptCpu.toFixed(3)} s; ` +
    `total ${(1e6 * (perfRecCpu + perfScriptCpu) / Math.max(1, perfSamples)).toFixed(1)} µs CPU/sample; ${Math.round(perfBytes / Math.max(1, perfSamples))} perf.data bytes/sample; workload at ${pct(withPerf)}`);
  console.log(`ratio (bpf / perf) of CPU per sample: ${((bpfCpu / st.samples) / ((perfRecCpu + perfScriptCpu) / Math.max(1, perfSamples))).toFixed(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
