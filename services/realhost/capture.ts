// The real-host capture agent (DESIGN §2 "real host agent"): gets samples from perf or from files
// already on the host, uploads the kernel's symbols once per build id, then the samples in
// batches, retrying what the service asks to be retried. The process and HTTP parts live here;
// parsing is in the pure modules next to it.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { DumpError } from '../core/dump/errors.ts';
import { formatTextDump, parseTextDump } from '../core/dump/text.ts';
import type { Sample } from '../core/dump/sample.ts';
import { parseKallsyms } from '../core/symbols/kallsyms.ts';
import { readInputBytes } from './input.ts';
import { parsePerfData } from './perf-data.ts';
import { kernelLogSamples, parseKernelLog } from './kernel-log.ts';
import { bpfRecord, type BpfCaptureResult } from './bpf-capture.ts';
import { writeKernelFiles } from './bpf-kernel.ts';
import { RECORD_HEADER } from './bpf-record.ts';
import type { OrcLayout } from '../core/unwind/orc-table.ts';

export interface CaptureOptions {
  /** Service base URL (http://host:port); absent with dryRun. */
  url?: string;
  token?: string;
  /** Seconds of `perf record -a -g -F 99`, when no input file is given. */
  duration?: number;
  frequency?: number;
  perfData?: string;
  perfScript?: string;
  kernelLog?: string;
  /** Full-state samples from the BPF sampler (bpf-capture.ts) instead of perf. */
  bpf?: boolean;
  /** With bpf: keep all stack memory instead of the redacted words. */
  fullMemory?: boolean;
  /** With bpf and out: where the host's kernel profile goes (default <out>.kernels). */
  kernelsOut?: string;
  /** With bpf: the ORC entry layout, when the release does not tell it. */
  orcLayout?: OrcLayout;
  /** With bpf: install the sampler's build tools with apt when missing. */
  installTools?: boolean;
  /** Symbols of the sampled kernel (default /proc/kallsyms). */
  kallsyms?: string;
  /** Kernel build id (default: a perf.data's own, else the GNU build-id note in /sys/kernel/notes). */
  buildId?: string;
  host?: string;
  batchSize?: number;
  dryRun?: boolean;
  /** With dryRun: write the text dumps here instead of uploading. */
  out?: string;
  /** Where "kallsyms uploaded for build X" is remembered between runs. */
  stateDir?: string;
  retries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  // Seams for tests and unusual hosts.
  perf?: string;
  paranoidPath?: string;
  notesPath?: string;
  fetch?: typeof fetch;
  log?: (s: string) => void;
}

export class CaptureError extends Error {
  override name = 'CaptureError';
}

export interface CaptureResult {
  samples: number;
  batches: number;
  symbolsUploaded: boolean;
  buildId?: string;
  /** Job ids the service answered with, one per batch. */
  jobs: string[];
  /** With bpf: the sampler's cost and counts, what was redacted, where the profile went. */
  bpf?: {
    kernelSamples: number;
    userSamples: number;
    fullState: number;
    lost: number;
    cpus: number;
    bpfCpuS: number;
    bpfUsPerSample: number;
    loaderCpuS: number;
    agentCpuS: number;
    bytesPerKernelSample: number;
    redactedWords?: number;
    wordsSeen?: number;
    redactedRegs?: number;
    orcEntries?: number;
    kernelsOut?: string;
    orcUploaded?: boolean;
    decodeErrors: number;
  };
}

const DEFAULTS = { batchSize: 500, retries: 6, backoffMs: 500, maxBackoffMs: 30_000, frequency: 99 };

/** The GNU build id from /sys/kernel/notes (ELF notes: namesz, descsz, type, name, desc; 4-aligned). */
export function buildIdFromNotes(b: Uint8Array): string | undefined {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let p = 0; p + 12 <= b.length; ) {
    const namesz = dv.getUint32(p, true);
    const descsz = dv.getUint32(p + 4, true);
    const type = dv.getUint32(p + 8, true);
    const nameAt = p + 12;
    const descAt = nameAt + ((namesz + 3) & ~3);
    const next = descAt + ((descsz + 3) & ~3);
    if (next > b.length || next <= p) return undefined;
    const name = Buffer.from(b.subarray(nameAt, nameAt + Math.max(0, namesz - 1))).toString('latin1');
    if (type === 3 && name === 'GNU') return Buffer.from(b.subarray(descAt, descAt + descsz)).toString('hex');
    p = next;
  }
  return undefined;
}

/** Refuses to sample when perf is missing or perf_event_paranoid forbids what `perf record -a -g` needs. */
export function preflight(o: CaptureOptions): void {
  const perf = o.perf ?? 'perf';
  const v = spawnSync(perf, ['--version'], { encoding: 'utf8' });
  if (v.error) {
    const code = (v.error as NodeJS.ErrnoException).code;
    throw new CaptureError(code === 'ENOENT'
      ? `perf not found (${perf}): install it (Debian: apt-get install linux-perf; Ubuntu: linux-tools-$(uname -r); Fedora: perf), or capture from a file with --perf-data, --perf-script or --kernel-log`
      : `cannot run ${perf}: ${v.error.message}`);
  }
  const path = o.paranoidPath ?? '/proc/sys/kernel/perf_event_paranoid';
  let level: number | undefined;
  try {
    level = Number(readFileSync(path, 'utf8').trim());
  } catch {
    level = undefined; // not Linux, or /proc hidden: let perf itself say no
  }
  const privileged = typeof process.getuid === 'function' && process.getuid() === 0;
  // perf_event_paranoid (Documentation/admin-guide/perf-security.rst): -1 all, 0 no raw tracepoints,
  // 1 no CPU-wide events, 2 no kernel profiling; system-wide sampling needs <= 0 without CAP_PERFMON.
  if (level !== undefined && !privileged && level > 0) {
    throw new CaptureError(`kernel.perf_event_paranoid is ${level}: system-wide sampling with kernel callchains (perf record -a -g) needs it at 0 or below, or root/CAP_PERFMON. Run \`sysctl -w kernel.perf_event_paranoid=0\` (or capture as root)`);
  }
}

function readBuildId(o: CaptureOptions): string | undefined {
  if (o.buildId) return o.buildId;
  try {
    return buildIdFromNotes(readFileSync(o.notesPath ?? '/sys/kernel/notes'));
  } catch {
    return undefined;
  }
}

/** Samples from the chosen source, with host and kernel build id set on each. */
export function collectSamples(o: CaptureOptions, log: (s: string) => void): { samples: Sample[]; buildId?: string; bpf?: BpfCaptureResult } {
  let samples: Sample[];
  let fileBuildId: string | undefined;
  let bpf: BpfCaptureResult | undefined;
  if (o.bpf) {
    bpf = bpfRecord({
      duration: o.duration ?? 10, frequency: o.frequency ?? DEFAULTS.frequency, log,
      ...(o.fullMemory ? { fullMemory: true } : {}), ...(o.orcLayout ? { orcLayout: o.orcLayout } : {}),
      ...(o.kallsyms ? { kallsyms: o.kallsyms } : {}), ...(o.buildId ? { buildId: o.buildId } : {}), ...(o.installTools ? { install: true } : {}),
    });
    for (const n of bpf.notes) log(n);
    const st = bpf.stats;
    // The cost on the host, every run: what was lost and what the sampling took.
    log(`sampled ${st.samples} (${st.kernel} kernel-mode, ${st.user} user-mode) on ${st.cpus} CPUs, ${st.lost} lost${st.cut ? `, ${st.cut} stacks cut at 16 KiB` : ''}${st.no_percpu ? `, ${st.no_percpu} without IRQ/IST bounds` : ''}; CPU: BPF ${(st.bpf_ns / 1e9).toFixed(3)} s, loader ${st.loader_cpu_s.toFixed(3)} s, agent ${bpf.agentCpuS.toFixed(3)} s${bpf.redaction ? `; redacted ${bpf.redaction.zeroed} of ${bpf.redaction.words} stack words, ${bpf.redaction.regsZeroed} registers` : '; full memory kept'}`);
    for (const e of bpf.decodeErrors.slice(0, 5)) log(e);
    samples = bpf.samples;
    fileBuildId = bpf.kernel.buildId;
  } else if (o.perfData) {
    const r = parsePerfData(readInputBytes(o.perfData), { file: o.perfData });
    for (const n of [...r.notes, ...r.rejected.map((x) => x.message)]) log(n);
    samples = r.samples;
    fileBuildId = r.kernelBuildId;
  } else if (o.perfScript) {
    const r = parseTextDump(readInputBytes(o.perfScript).toString('utf8'), { file: o.perfScript });
    for (const x of r.rejected) log(x.message);
    samples = r.samples;
  } else if (o.kernelLog) {
    samples = kernelLogSamples(parseKernelLog(readInputBytes(o.kernelLog).toString('utf8')), { file: o.kernelLog });
  } else {
    samples = record(o, log);
  }
  // A perf.data names the kernel it was recorded on; other inputs are taken to be from this host.
  const buildId = o.buildId ?? fileBuildId ?? readBuildId(o);
  const host = o.host ?? hostname();
  for (const s of samples) {
    s.host = host;
    if (buildId !== undefined) s.kernel = buildId;
  }
  return { samples, ...(buildId !== undefined ? { buildId } : {}), ...(bpf ? { bpf } : {}) };
}

function record(o: CaptureOptions, log: (s: string) => void): Sample[] {
  preflight(o);
  const perf = o.perf ?? 'perf';
  const seconds = o.duration ?? 10;
  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-'));
  const data = join(dir, 'perf.data');
  try {
    log(`recording: ${perf} record -a -g -F ${o.frequency ?? DEFAULTS.frequency} for ${seconds}s`);
    const rec = spawnSync(perf, ['record', '-a', '-g', '-F', String(o.frequency ?? DEFAULTS.frequency), '-o', data, '--', 'sleep', String(seconds)], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (rec.status !== 0) throw new CaptureError(`perf record failed (exit ${rec.status}): ${(rec.stderr ?? '').trim().split('\n').slice(-3).join(' / ')}`);
    // perf script resolves symbols against this host's kernel and binaries, which the reader cannot.
    const script = spawnSync(perf, ['script', '-i', data, '-F', 'comm,pid,tid,cpu,time,period,event,ip,sym,symoff,dso'], { encoding: 'utf8', maxBuffer: 1 << 30 });
    if (script.status !== 0) throw new CaptureError(`perf script failed (exit ${script.status}): ${(script.stderr ?? '').trim()}`);
    const r = parseTextDump(script.stdout, { file: 'perf script' });
    for (const x of r.rejected) log(x.message);
    return r.samples;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface HttpOutcome {
  status: number;
  body: string;
  retryAfter?: number;
}

/** POST with retries: 503, 429 and network errors back off exponentially (or as Retry-After says). */
async function post(o: CaptureOptions, url: string, body: string, contentType: string, what: string, log: (s: string) => void): Promise<HttpOutcome> {
  const f = o.fetch ?? fetch;
  const retries = o.retries ?? DEFAULTS.retries;
  let wait = o.backoffMs ?? DEFAULTS.backoffMs;
  const max = o.maxBackoffMs ?? DEFAULTS.maxBackoffMs;
  for (let attempt = 0; ; attempt++) {
    let outcome: HttpOutcome | undefined;
    let failure: string;
    try {
      // The same key on every retry: a batch whose 202 was lost on the way back is queued once.
      const key = createHash('sha256').update(body).digest('hex').slice(0, 32);
      const res = await f(url, { method: 'POST', headers: { authorization: `Bearer ${o.token ?? ''}`, 'content-type': contentType, 'idempotency-key': key }, body });
      outcome = { status: res.status, body: await res.text() };
      const ra = res.headers.get('retry-after');
      if (ra !== null && /^\d+$/.test(ra)) outcome.retryAfter = Number(ra) * 1000;
      if (res.status !== 503 && res.status !== 429) return outcome;
      failure = `HTTP ${res.status}`;
    } catch (e) {
      failure = `network error: ${(e as Error).message}`;
    }
    if (attempt >= retries) throw new CaptureError(`${what}: giving up after ${attempt + 1} attempts (${failure})`);
    const ms = Math.min(max, outcome?.retryAfter ?? wait);
    log(`${what}: ${failure}, retrying in ${ms} ms`);
    await delay(ms);
    wait = Math.min(max, wait * 2);
  }
}

/** PUT of a binary body, with post()'s retries. */
async function put(o: CaptureOptions, url: string, body: Uint8Array, log: (s: string) => void): Promise<HttpOutcome> {
  const f = o.fetch ?? fetch;
  const viaPut: typeof fetch = (u, init) => f(u, { ...init, method: 'PUT', body });
  return post({ ...o, fetch: viaPut }, url, '', 'application/octet-stream', 'ORC upload', log);
}

function bpfSummary(b: BpfCaptureResult): NonNullable<CaptureResult['bpf']> {
  const st = b.stats;
  const kernelSamples = st.kernel;
  const out: NonNullable<CaptureResult['bpf']> = {
    kernelSamples, userSamples: st.user, fullState: b.samples.filter((s) => s.stacks.length > 0).length, lost: st.lost, cpus: st.cpus,
    bpfCpuS: st.bpf_ns / 1e9, bpfUsPerSample: st.bpf_runs > 0 ? Math.round(st.bpf_ns / st.bpf_runs / 10) / 100 : 0,
    loaderCpuS: st.loader_cpu_s, agentCpuS: Math.round(b.agentCpuS * 1000) / 1000,
    bytesPerKernelSample: kernelSamples > 0 ? Math.round((st.bytes - st.records * RECORD_HEADER) / kernelSamples) : 0,
    decodeErrors: b.decodeErrors.length,
  };
  if (b.redaction) {
    out.redactedWords = b.redaction.zeroed;
    out.wordsSeen = b.redaction.words;
    out.redactedRegs = b.redaction.regsZeroed;
  }
  if (b.profile.orc) out.orcEntries = b.profile.orc.length;
  return out;
}

function stateFile(o: CaptureOptions, buildId: string): string {
  const dir = o.stateDir ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stacksanity');
  return join(dir, `kallsyms-uploaded-${buildId.replace(/[^0-9A-Za-z_.-]/g, '_')}`);
}

export async function capture(o: CaptureOptions): Promise<CaptureResult> {
  const log = o.log ?? ((s: string) => process.stderr.write(`stacksanity capture: ${s}\n`));
  if (!o.dryRun && (!o.url || !o.token)) throw new CaptureError(`--url and --token are required (or ${o.bpf ? '--out FILE' : '--dry-run --out FILE'})`);
  if (o.dryRun && !o.out) throw new CaptureError('--dry-run needs --out FILE');
  const { samples, buildId, bpf } = collectSamples(o, log);
  const result: CaptureResult = { samples: samples.length, batches: 0, symbolsUploaded: false, jobs: [], ...(buildId !== undefined ? { buildId } : {}) };
  if (bpf) result.bpf = bpfSummary(bpf);
  const batchSize = o.batchSize ?? DEFAULTS.batchSize;
  const batches: string[] = [];
  for (let i = 0; i < samples.length; i += batchSize) batches.push(formatTextDump(samples.slice(i, i + batchSize)));

  if (o.dryRun) {
    // A blank line between batches: each ends with its last sample's line, and a comment line
    // (the next batch's magic) does not end a sample.
    writeFileSync(o.out!, batches.join('\n'));
    if (bpf) {
      const dir = o.kernelsOut ?? `${o.out}.kernels`;
      writeKernelFiles(dir, bpf.kernel);
      result.bpf!.kernelsOut = dir;
      log(`the host's kernel profile (kallsyms, ORC tables, text bytes) is in ${dir}: check with \`stacksanity check --kernels ${dir} ${o.out}\``);
    }
    result.batches = batches.length;
    log(`dry run: ${samples.length} samples in ${batches.length} batch(es) written to ${o.out}`);
    return result;
  }
  const base = o.url!.replace(/\/+$/, '');

  // Symbols first: the service checks samples against the profile of their build.
  if (buildId === undefined) log('no kernel build id (no /sys/kernel/notes, no --build-id): uploading samples without symbols');
  else {
    const mark = stateFile(o, buildId);
    if (!existsSync(mark)) {
      const path = o.kallsyms ?? '/proc/kallsyms';
      const text = readInputBytes(path).toString('utf8');
      try {
        parseKallsyms(text, path); // refuses all-zero addresses, naming kernel.kptr_restrict
      } catch (e) {
        if (e instanceof DumpError) throw new CaptureError(`${path}: ${e.message}`);
        throw e;
      }
      const r = await post(o, `${base}/v1/kernels/${encodeURIComponent(buildId)}/symbols`, text, 'text/plain', 'symbols upload', log);
      if (r.status >= 300) throw new CaptureError(`symbols upload: HTTP ${r.status}: ${r.body.slice(0, 500)}`);
      mkdirSync(join(mark, '..'), { recursive: true });
      writeFileSync(mark, `${new Date().toISOString()}\n`);
      result.symbolsUploaded = true;
    }
    // The live kernel's ORC tables, read from its memory: the workers' orc strategy needs them.
    if (bpf?.kernel.orc) {
      const r = await put(o, `${base}/v1/kernels/${encodeURIComponent(buildId)}/orc`, bpf.kernel.orc, log);
      if (r.status >= 300) throw new CaptureError(`ORC upload: HTTP ${r.status}: ${r.body.slice(0, 500)}`);
      result.bpf!.orcUploaded = true;
    }
  }
  for (let i = 0; i < batches.length; i++) {
    const r = await post(o, `${base}/v1/samples`, batches[i]!, 'text/plain', `batch ${i + 1}/${batches.length}`, log);
    if (r.status >= 300) throw new CaptureError(`batch ${i + 1}/${batches.length}: HTTP ${r.status}: ${r.body.slice(0, 500)}`);
    try {
      const j = JSON.parse(r.body) as { job?: unknown; jobId?: unknown };
      const id = j.job ?? j.jobId;
      if (id !== undefined) result.jobs.push(String(id));
    } catch {
      // A 2xx without a JSON body still means accepted.
    }
    result.batches++;
  }
  log(`uploaded ${samples.length} samples in ${result.batches} batch(es)${result.symbolsUploaded ? ` and the symbols of build ${buildId}` : ''}`);
  return result;
}
