// `stacksanity capture --bpf` (issue 16): full-state samples from a live host. Builds (once) and
// runs the BPF sampler (services/realhost/bpf/), reads the host's kernel profile from its own
// memory (bpf-kernel.ts), decodes the records (bpf-record.ts), reads the text bytes before every
// return address the kernel's traces printed, and redacts the memory (bpf-redact.ts) unless asked
// for all of it. The process parts live here; the decoding and the rules are in the pure modules.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sample } from '../core/dump/sample.ts';
import { parseKallsyms } from '../core/symbols/kallsyms.ts';
import { KernelProfile } from '../core/symbols/profile.ts';
import { encodeOrcUpload, type OrcLayout } from '../core/unwind/orc-table.ts';
import { decodeRecords } from './bpf-record.ts';
// A cycle (capture.ts runs this module): only a function is taken, called long after both load.
import { buildIdFromNotes } from './capture.ts';
import { framePointersOf, liveOrcLayout, readLiveOrc, readTextBefore, type BpfTools, type HostKernelFiles } from './bpf-kernel.ts';
import { emptyRedactionStats, redactSample, type RedactionStats } from './bpf-redact.ts';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SOURCES = ['sampler.bpf.c', 'sampler.h', 'loader.c'].map((f) => join(REPO, 'services/realhost/bpf', f));

/** Why the BPF capture cannot run here; the message says what to do. */
export class BpfUnavailable extends Error {
  override name = 'BpfUnavailable';
}

export interface BpfCaptureOptions {
  /** Seconds to sample. */
  duration: number;
  /** Samples per second per CPU. */
  frequency: number;
  /** Keep all stack memory (default: redacted to what an unwinder can use). */
  fullMemory?: boolean;
  orcLayout?: OrcLayout;
  kallsyms?: string;
  buildId?: string;
  /** Where the loader is built (default: $STACKSANITY_BPF_DIR or <repo>/.cache/bpf). */
  toolsDir?: string;
  /** Install clang, libbpf-dev, bpftool and gcc with apt when missing (the build script's --install). */
  install?: boolean;
  log?: (s: string) => void;
}

/** The loader's own account of the run (one JSON line). */
export interface SamplerStats {
  cpus: number;
  wall_s: number;
  samples: number;
  user: number;
  kernel: number;
  lost: number;
  read_errors: number;
  cut: number;
  no_percpu: number;
  records: number;
  bytes: number;
  bpf_runs: number;
  bpf_ns: number;
  bpf_stats: boolean;
  loader_cpu_s: number;
}

export interface BpfCaptureResult {
  samples: Sample[];
  stats: SamplerStats;
  kernel: HostKernelFiles;
  profile: KernelProfile;
  /** Absent with fullMemory. */
  redaction?: RedactionStats;
  /** Records the decoder refused (with where and why). */
  decodeErrors: string[];
  /** Node's CPU seconds for decoding, reading text and redacting (the host-side cost beyond the loader). */
  agentCpuS: number;
  notes: string[];
}

/** The built loader, building it first when missing or older than its sources. */
export function bpfTools(o: Pick<BpfCaptureOptions, 'toolsDir' | 'install' | 'log'> = {}): BpfTools {
  const dir = o.toolsDir ?? process.env.STACKSANITY_BPF_DIR ?? join(REPO, '.cache/bpf');
  const tools = { loader: join(dir, 'stacksanity-bpf'), object: join(dir, 'sampler.bpf.o') };
  const fresh = existsSync(tools.loader) && existsSync(tools.object)
    && SOURCES.every((src) => !existsSync(src) || statSync(src).mtimeMs <= Math.min(statSync(tools.loader).mtimeMs, statSync(tools.object).mtimeMs));
  if (fresh) return tools;
  o.log?.(`building the BPF sampler into ${dir} (scripts/bpf-build.sh)`);
  const b = spawnSync('bash', [join(REPO, 'scripts/bpf-build.sh'), ...(o.install ? ['--install'] : [])], { encoding: 'utf8', env: { ...process.env, STACKSANITY_BPF_DIR: dir } });
  if (b.status !== 0) throw new BpfUnavailable(`cannot build the BPF sampler: ${(b.stderr || b.error?.message || '').trim().split('\n').slice(-4).join(' / ')}`);
  return tools;
}

/** Refuses early, with the reason, where BPF sampling cannot work. */
export function bpfPreflight(): void {
  if (process.platform !== 'linux') throw new BpfUnavailable('BPF sampling needs Linux');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new BpfUnavailable('BPF sampling needs root (the kernel asks for CAP_BPF and CAP_PERFMON, the reads of /proc/kallsyms for real addresses): run capture --bpf as root');
  }
  if (!existsSync('/sys/kernel/btf/vmlinux')) throw new BpfUnavailable('the kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): the sampler needs it for task_struct and the per-CPU stack bounds');
}

function buildIdOfHost(): string | undefined {
  try {
    return buildIdFromNotes(readFileSync('/sys/kernel/notes'));
  } catch {
    return undefined;
  }
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Samples this host: see the file comment. Throws BpfUnavailable where it cannot. */
export function bpfRecord(o: BpfCaptureOptions): BpfCaptureResult {
  const log = o.log ?? (() => {});
  bpfPreflight();
  const tools = bpfTools(o);
  const notes: string[] = [];
  const kpath = o.kallsyms ?? '/proc/kallsyms';
  const kallsyms = readFileSync(kpath, 'utf8');
  const { symbols } = parseKallsyms(kallsyms, kpath); // refuses all-zero addresses (kptr_restrict)
  const buildId = o.buildId ?? buildIdOfHost() ?? `live-${release()}`;
  const rel = release();
  const layout = liveOrcLayout(rel, o.orcLayout);
  const orc = readLiveOrc(tools, symbols, layout);
  if (orc) notes.push(...orc.notes);
  else notes.push('no __start_orc_unwind_ip/__stop_orc_unwind markers in kallsyms: a kernel without ORC; the orc strategy does not apply');
  const framePointers = orc ? framePointersOf(orc.table) : undefined;
  const profile = new KernelProfile(symbols, { buildId, ...(orc ? { orc: orc.table } : {}), ...(framePointers !== undefined ? { framePointers } : {}) });

  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-bpf-'));
  const out = join(dir, 'samples.bin');
  try {
    log(`sampling every CPU at ${o.frequency} Hz for ${o.duration}s with the BPF sampler`);
    const p = spawnSync(tools.loader, [tools.object, 'sample', '--freq', String(o.frequency), '--duration', String(o.duration), '--out', out], { encoding: 'utf8', maxBuffer: 1 << 20 });
    if (p.error) throw new BpfUnavailable(`cannot run ${tools.loader}: ${p.error.message}`);
    if (p.status !== 0) throw new BpfUnavailable(`the BPF sampler failed (exit ${p.status}): ${p.stderr.trim().split('\n').slice(-4).join(' / ')}`);
    for (const l of p.stderr.trim().split('\n').filter(Boolean)) notes.push(`sampler: ${l}`);
    const last = p.stdout.trim().split('\n').pop() ?? '';
    let stats: SamplerStats;
    try {
      stats = JSON.parse(last) as SamplerStats;
    } catch {
      throw new BpfUnavailable(`the BPF sampler printed no statistics line: '${last.slice(0, 200)}'`);
    }
    const c0 = cpuSeconds();
    const decoded = decodeRecords(readFileSync(out), { symbols: profile.symbols });
    const host = decoded.samples;
    for (const s of host) s.kernel = buildId;
    // The bytes before each address the kernel's traces printed (the sampled ip needs none).
    const addrs = new Set<bigint>();
    for (const s of host) if (s.stacks.length > 0) s.callchain?.slice(1).forEach((c) => addrs.add(c.addr));
    const text = readTextBefore(tools, addrs);
    let redaction: RedactionStats | undefined;
    if (!o.fullMemory) {
      redaction = emptyRedactionStats();
      for (const s of host) redactSample(s, profile, redaction);
    }
    const agentCpuS = cpuSeconds() - c0;
    const kernel: HostKernelFiles = {
      buildId, kallsyms, release: rel, text, ...(orc ? { orc: encodeOrcUpload(orc.sections), layout } : {}), ...(framePointers !== undefined ? { framePointers } : {}),
    };
    return { samples: host, stats, kernel, profile, ...(redaction ? { redaction } : {}), decodeErrors: decoded.errors.map((e) => e.message), agentCpuS, notes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
