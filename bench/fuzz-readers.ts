// The reader half of `npm run fuzz` (issue 15): a campaign of mutated and truncated inputs run
// straight into every reader of untrusted bytes — the text dump parser, the API's text transcoder
// (checked against the parser, whose answers it must give), the JSON dump parser, the binary batch
// decoder the workers run on stored batches, the perf script collapser, the perf.data reader and
// the kernel-log reader. A reader may refuse an input only with its own input error (DumpError,
// which names what and where); anything else it throws is a crash. Inputs run in a worker thread
// under a watchdog: one that takes longer than the per-input cap is a hang (the thread is
// terminated and a fresh one carries on after it), and one that exhausts the thread's heap is a
// crash too.
//
// Each input is made from (seed, index) alone, so any one can be run again in this process with
// its stack trace: FUZZ_SEED=<seed> FUZZ_READER_REPLAY=<index> npm run fuzz (FUZZ_SAVE=<dir> keeps
// its bytes). Seeds: examples/, the emulated fleet's batches (from the same seed), and the real
// perf script, perf.data and kernel-log files of ../shared/corpus when it is there (read only;
// without it, those readers start from the few seeds made here and the report says so).
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DumpError } from '../services/core/dump/errors.ts';
import { parseTextDump, formatTextDump } from '../services/core/dump/text.ts';
import { parseJsonDump, formatJsonDump, formatNdjson } from '../services/core/dump/json.ts';
import { decodeBatch, decodeSampleRecord } from '../services/core/dump/batch-decode.ts';
import { encodeSamples } from '../services/core/dump/batch-encode.ts';
import { transcodeTextDump } from '../services/core/dump/batch-transcode.ts';
import { collapsePerfScript } from '../services/realhost/collapse.ts';
import { parsePerfData } from '../services/realhost/perf-data.ts';
import { kernelLogContext, kernelLogSamples, parseKernelLog } from '../services/realhost/kernel-log.ts';
import { Rng } from '../services/emulator/rng.ts';
import { feederSource } from '../services/pipeline/feed.ts';
import { ROOT } from './service.ts';

export const READERS = ['text dump', 'text transcoder (API)', 'JSON dump', 'binary batch', 'perf script', 'perf.data', 'kernel log'] as const;
type ReaderName = (typeof READERS)[number];

// ---- seeds --------------------------------------------------------------------------------------

interface Seeds {
  /** Per reader: the valid inputs mutations start from. */
  by: Record<ReaderName, Buffer[]>;
  /** Binary seeds' structure boundaries (record starts), for truncation at a record's edge. */
  bounds: Map<Buffer, number[]>;
  notes: string[];
}

const CORPUS = join(ROOT, '..', 'shared', 'corpus');
/** Larger seeds are cut (at a blank line) to this: big inputs slow every mutation, and add little. */
const SEED_MAX = 16 * 1024;

function cutText(b: Buffer): Buffer {
  if (b.length <= SEED_MAX) return b;
  const at = b.lastIndexOf('\n\n', SEED_MAX);
  return b.subarray(0, at > 0 ? at + 2 : SEED_MAX);
}

function corpusFiles(sub: string, re: RegExp): string[] {
  const d = join(CORPUS, sub);
  if (!existsSync(d)) return [];
  return readdirSync(d).filter((f) => re.test(f)).sort().map((f) => join(d, f));
}

/** A kernel log of the shape the reader looks for, written here for when the corpus is absent. */
const SMALL_LOG = `[  100.000001] NMI backtrace for cpu 1
[  100.000002] CPU: 1 PID: 42 Comm: worker Not tainted 6.1.0 #1
[  100.000003] RIP: 0010:native_safe_halt+0xe/0x20
[  100.000004] RSP: 0018:ffffc90000093e70 EFLAGS: 00000246
[  100.000005] Call Trace:
[  100.000006]  <NMI>
[  100.000007]  nmi_cpu_backtrace+0x8d/0xc0
[  100.000008]  </NMI>
[  100.000009]  <TASK>
[  100.000010]  default_idle+0x9/0x20
[  100.000011]  ? do_idle+0x1e2/0x280
[  100.000012]  cpu_startup_entry+0x19/0x20
[  100.000013]  </TASK>
`;

export async function loadSeeds(seed: number): Promise<Seeds> {
  const notes: string[] = [];
  const demoText = readFileSync(join(ROOT, 'examples', 'demo.dump'));
  const demo = parseTextDump(demoText.toString('utf8')).samples;
  const source = await feederSource({ root: ROOT, hosts: 4, seed, warn: () => undefined });
  const fleet = parseTextDump(source.batch(8)).samples;
  const perfScript = corpusFiles('perf-script', /\.txt(\.gz)?$/).map((f) => cutText(f.endsWith('.gz') ? gunzipSync(readFileSync(f)) : readFileSync(f))).filter((b) => b.length > 0);
  const perfData = corpusFiles('perf-data', /\.perf\.data$/).map((f) => readFileSync(f));
  const logs = corpusFiles('kernel-logs', /\.txt$/).map((f) => cutText(readFileSync(f)));
  if (!existsSync(CORPUS)) notes.push(`${CORPUS} absent: perf script, perf.data and kernel-log seeds are the few made here`);
  const text = [demoText, Buffer.from(formatTextDump(fleet.slice(0, 2))), Buffer.from(formatTextDump(fleet)), ...perfScript.slice(0, 8)];
  const batch = [encodeSamples(demo.slice(0, 4), [0, 1, 2, 3]), encodeSamples(fleet.slice(0, 3), [0, 1, 2]), encodeSamples(fleet, fleet.map((_, i) => i))].map((u) => Buffer.from(u));
  const bounds = new Map<Buffer, number[]>();
  for (const b of batch) bounds.set(b, decodeBatch(b).records.map((r) => r.byteOffset - b.byteOffset));
  for (const b of perfData) bounds.set(b, perfDataRecordStarts(b));
  if (perfData.length === 0) notes.push('no perf.data seed: that reader is fuzzed from the magic and header alone');
  const by: Record<ReaderName, Buffer[]> = {
    'text dump': text,
    'text transcoder (API)': text,
    'JSON dump': [Buffer.from(formatJsonDump(demo.slice(0, 3))), Buffer.from(formatNdjson(fleet.slice(0, 3))), Buffer.from(formatJsonDump(fleet.slice(0, 1)))],
    'binary batch': batch,
    'perf script': perfScript.length > 0 ? perfScript : [demoText],
    'perf.data': perfData.length > 0 ? perfData : [minimalPerfHeader()],
    'kernel log': logs.length > 0 ? logs : [Buffer.from(SMALL_LOG)],
  };
  return { by, bounds, notes };
}

/** Offsets where the data section's records start (perf_event_header.size chains them). */
function perfDataRecordStarts(b: Buffer): number[] {
  const out: number[] = [];
  if (b.length < 104) return out;
  const off = Number(b.readBigUInt64LE(40));
  const size = Number(b.readBigUInt64LE(48));
  for (let p = off; p + 8 <= Math.min(b.length, off + size) && out.length < 100_000;) {
    out.push(p);
    const s = b.readUInt16LE(p + 6);
    if (s < 8) break;
    p += s;
  }
  return out;
}

function minimalPerfHeader(): Buffer {
  const b = Buffer.alloc(104 + 136);
  b.write('PERFILE2', 0, 'latin1');
  b.writeBigUInt64LE(104n, 8);
  b.writeBigUInt64LE(136n, 16);
  b.writeBigUInt64LE(104n, 24);
  b.writeBigUInt64LE(136n, 32);
  b.writeBigUInt64LE(240n, 40);
  return b;
}

// ---- one input from (seed, index) ---------------------------------------------------------------

export interface FuzzInput {
  index: number;
  reader: ReaderName;
  what: string;
  bytes: Buffer;
}

/** Inputs per reader that truncate its first seed at evenly spread offsets (every offset of a small seed). */
const SWEEP = 3000;

const INTERESTING = [0x00, 0xff, 0x0a, 0x20, 0x09, 0x3a, 0x7b, 0x7d, 0x5b, 0x5d, 0x22, 0x2c, 0x2e, 0x30, 0x78, 0x2b, 0x2d, 0x3c, 0x3e, 0x80, 0xc3, 0xef];
const HUGE_TEXT = ['99999999999999999999999999', 'ffffffffffffffffffffffff', '18446744073709551616', '-1', '-0', '1e308', '1e-400', 'NaN', 'Infinity', '0x', '0xffffffffffffffffff', '4294967296', '9007199254740993', '00000000000000000000000000000000000000001'];
const HUGE_BIN = [0xffffffffn, 0x7fffffffn, 0x80000000n, 0n, 0xffffffffffffffffn, 0x7fffffffffffffffn, 0x100000000n, 0xfffffffen];

export function makeInput(seeds: Seeds, seed: number, index: number): FuzzInput {
  const reader = READERS[index % READERS.length]!;
  const local = Math.floor(index / READERS.length);
  const pool = seeds.by[reader];
  const rng = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  if (local < SWEEP) {
    const s = pool[0]!;
    const at = s.length <= SWEEP ? local % (s.length + 1) : Math.floor((local * s.length) / SWEEP);
    return { index, reader, what: `truncated at ${at} of seed 0 (sweep)`, bytes: s.subarray(0, at) };
  }
  const si = rng.int(pool.length);
  let b: Buffer = Buffer.from(pool[si]!);
  const ops: string[] = [];
  const n = 1 + rng.int(3);
  const binary = reader === 'binary batch' || reader === 'perf.data';
  for (let k = 0; k < n; k++) {
    const r = mutate(b, rng, binary, seeds, reader, pool[si]!);
    b = r.bytes;
    ops.push(r.what);
  }
  return { index, reader, what: `seed ${si}: ${ops.join(', ')}`, bytes: b };
}

function mutate(b: Buffer, rng: Rng, binary: boolean, seeds: Seeds, reader: ReaderName, orig: Buffer): { bytes: Buffer; what: string } {
  const pos = (): number => rng.int(b.length + 1);
  switch (rng.int(11)) {
    case 0: {
      const c = Buffer.from(b);
      const k = 1 + rng.int(8);
      for (let i = 0; i < k && c.length > 0; i++) c[rng.int(c.length)]! ^= 1 << rng.int(8);
      return { bytes: c, what: `${k} bit flip(s)` };
    }
    case 1: {
      const at = pos();
      const k = 1 + rng.int(4);
      const ins = Buffer.from(Array.from({ length: k }, () => (rng.chance(0.5) ? rng.pick(INTERESTING) : rng.int(256))));
      return { bytes: Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]), what: `${k} byte(s) inserted at ${at}` };
    }
    case 2: {
      const at = pos();
      const k = 1 + rng.int(rng.chance(0.8) ? 4 : 256);
      return { bytes: Buffer.concat([b.subarray(0, at), b.subarray(at + k)]), what: `${k} byte(s) deleted at ${at}` };
    }
    case 3:
    case 4:
      return truncate(b, rng, binary, seeds.bounds.get(orig));
    case 5: {
      const other = rng.pick(seeds.by[reader]);
      const a = pos();
      const c = rng.int(other.length + 1);
      return { bytes: Buffer.concat([b.subarray(0, a), other.subarray(c)]), what: `spliced: head ${a} + another seed's tail from ${c}` };
    }
    case 6:
      return binary ? hugeBinary(b, rng) : hugeText(b, rng);
    case 7:
      return nest(b, rng, reader);
    case 8: {
      if (binary) {
        const at = pos();
        const k = 1 + rng.int(64);
        const c = Buffer.from(b);
        for (let i = at; i < Math.min(c.length, at + k); i++) c[i] = rng.int(256);
        return { bytes: c, what: `${k} random byte(s) over ${at}` };
      }
      return lineOp(b, rng);
    }
    case 9: {
      const at = pos();
      const k = rng.chance(0.1) ? 256 * 1024 : rng.pick([1024, 16384, 65536]);
      const ch = rng.pick([0x41, 0x20, 0x30, 0x66, 0x2c, 0x00, 0x09]);
      return { bytes: Buffer.concat([b.subarray(0, at), Buffer.alloc(k, ch), b.subarray(at)]), what: `${k} bytes of 0x${ch.toString(16)} inserted at ${at}` };
    }
    default: {
      // A chunk of the input repeated: duplicated records, samples or lines.
      const a = pos();
      const long = rng.chance(0.1);
      const len = 1 + rng.int(Math.min(long ? 256 : 4096, Math.max(1, b.length - a)));
      const times = 1 + rng.int(long ? 2000 : 8);
      const chunk = b.subarray(a, a + len);
      return { bytes: Buffer.concat([b.subarray(0, a + len), ...Array<Buffer>(times).fill(chunk), b.subarray(a + len)]), what: `${len} bytes at ${a} repeated ${times}x` };
    }
  }
}

function truncate(b: Buffer, rng: Rng, binary: boolean, bounds: number[] | undefined): { bytes: Buffer; what: string } {
  const kinds = binary ? ['byte', 'aligned 8', 'aligned 4', 'record start', 'inside a record header'] : ['byte', 'line end', 'before a line end', 'token edge', 'sample boundary', 'structure'];
  const kind = rng.pick(kinds);
  let at = rng.int(b.length + 1);
  const find = (re: RegExp): number[] => {
    const out: number[] = [];
    const s = b.toString('latin1');
    for (let m = re.exec(s); m && out.length < 100_000; m = re.exec(s)) out.push(m.index + m[0].length);
    return out;
  };
  switch (kind) {
    case 'aligned 8': at -= at % 8; break;
    case 'aligned 4': at -= at % 4; break;
    case 'record start': if (bounds?.length) at = rng.pick(bounds); break;
    case 'inside a record header': if (bounds?.length) at = rng.pick(bounds) + 1 + rng.int(15); break;
    case 'line end': { const c = find(/\n/g); if (c.length) at = rng.pick(c); break; }
    case 'before a line end': { const c = find(/\n/g); if (c.length) at = rng.pick(c) - 1; break; }
    case 'token edge': { const c = find(/[ \t:=,]/g); if (c.length) at = rng.pick(c) - rng.int(2); break; }
    case 'sample boundary': { const c = find(/\n\n|\n(?=\S)/g); if (c.length) at = rng.pick(c); break; }
    case 'structure': { const c = find(/[}\]",]/g); if (c.length) at = rng.pick(c) - rng.int(2); break; }
  }
  at = Math.max(0, Math.min(b.length, at));
  return { bytes: b.subarray(0, at), what: `truncated at ${at} (${kind})` };
}

function hugeText(b: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  const s = b.toString('latin1');
  const re = /\b(0x)?[0-9a-f]+\b/gi;
  const hits: [number, number][] = [];
  for (let m = re.exec(s); m && hits.length < 20_000; m = re.exec(s)) hits.push([m.index, m[0].length]);
  const v = rng.pick(HUGE_TEXT);
  if (hits.length === 0) return { bytes: Buffer.concat([b, Buffer.from(v)]), what: `${v} appended` };
  const [at, len] = rng.pick(hits);
  return { bytes: Buffer.concat([b.subarray(0, at), Buffer.from(v, 'latin1'), b.subarray(at + len)]), what: `number at ${at} replaced by ${v}` };
}

function hugeBinary(b: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  if (b.length < 8) return { bytes: b, what: 'too short for a huge number' };
  const c = Buffer.from(b);
  const wide = rng.chance(0.5);
  const at = rng.int(Math.floor((c.length - (wide ? 8 : 4)) / 4) + 1) * 4;
  const v = rng.pick(HUGE_BIN);
  if (wide) c.writeBigUInt64LE(v, at);
  else c.writeUInt32LE(Number(v & 0xffffffffn), at);
  return { bytes: c, what: `${wide ? 'u64' : 'u32'} at ${at} set to 0x${(wide ? v : v & 0xffffffffn).toString(16)}` };
}

function nest(b: Buffer, rng: Rng, reader: ReaderName): { bytes: Buffer; what: string } {
  const depth = rng.chance(0.05) ? 100_000 : rng.pick([100, 1000, 10_000]);
  const at = rng.int(b.length + 1);
  let ins: string;
  switch (reader) {
    case 'JSON dump':
      ins = rng.chance(0.5) ? '['.repeat(depth) + ']'.repeat(rng.chance(0.5) ? depth : 0) : '{"a":'.repeat(depth);
      break;
    case 'kernel log':
      ins = rng.chance(0.5) ? ' <IRQ>\n <NMI>\n'.repeat(depth / 10) : ' ? do_idle+0x1e2/0x280\n'.repeat(depth / 10);
      break;
    case 'perf script':
      ins = '\tffffffff81000000 f+0x1 ([kernel.kallsyms])\n'.repeat(depth / 10);
      break;
    case 'binary batch':
    case 'perf.data':
      return { bytes: Buffer.concat([b.subarray(0, at), Buffer.alloc(depth, 0xff), b.subarray(at)]), what: `${depth} bytes of 0xff at ${at}` };
    default:
      ins = rng.chance(0.5) ? '\t.stack irq ffffc90000000000 ffffc90000004000\n'.repeat(depth / 10) : '\t.truth ffffffff81000000 call\n'.repeat(depth / 10);
  }
  return { bytes: Buffer.concat([b.subarray(0, at), Buffer.from(ins), b.subarray(at)]), what: `nesting/repetition depth ${depth} at ${at}` };
}

function lineOp(b: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  const lines = b.toString('latin1').split('\n');
  const i = rng.int(lines.length);
  const j = rng.int(lines.length);
  const op = rng.int(3);
  if (op === 0) lines.splice(i, 1);
  else if (op === 1) lines.splice(i, 0, lines[j]!);
  else [lines[i], lines[j]] = [lines[j]!, lines[i]!];
  return { bytes: Buffer.from(lines.join('\n'), 'latin1'), what: `line ${i} ${['deleted', `duplicated from ${j}`, `swapped with ${j}`][op]}` };
}

// ---- running one input --------------------------------------------------------------------------

export type Outcome = { kind: 'ok'; detail?: string } | { kind: 'refused'; reason: string } | { kind: 'crash'; error: string } | { kind: 'disagree'; detail: string };

function refusal(e: unknown): Outcome {
  if (e instanceof DumpError) return { kind: 'refused', reason: e.reason };
  const err = e instanceof Error ? e : new Error(String(e));
  return { kind: 'crash', error: `${err.name}: ${err.message.slice(0, 300)}\n${(err.stack ?? '').split('\n').slice(1, 6).join('\n')}` };
}

function tryRun(f: () => void): Outcome {
  try {
    f();
    return { kind: 'ok' };
  } catch (e) {
    return refusal(e);
  }
}

export function runReader(reader: ReaderName, bytes: Buffer): Outcome {
  switch (reader) {
    case 'text dump':
      return tryRun(() => void parseTextDump(bytes.toString('utf8'), { file: 'fuzz' }));
    case 'text transcoder (API)': {
      // The transcoder's answers must be the parser's: same samples accepted, same rejections by index and reason.
      let tc: ReturnType<typeof transcodeTextDump> | undefined;
      const a = tryRun(() => { tc = transcodeTextDump(bytes, { file: 'fuzz' }); });
      if (a.kind === 'crash') return a;
      let parsed: ReturnType<typeof parseTextDump> | undefined;
      const p = tryRun(() => { parsed = parseTextDump(bytes.toString('utf8'), { file: 'fuzz' }); });
      if (p.kind === 'crash') return p;
      if (a.kind !== p.kind) return { kind: 'disagree', detail: `transcoder ${a.kind === 'refused' ? `refused (${a.reason})` : 'read it'}, parser ${p.kind === 'refused' ? `refused (${p.reason})` : 'read it'}` };
      if (tc && parsed) {
        const ta = tc.samples.map((s) => s.index).join(',');
        const pa = indicesOf(parsed);
        const tr = tc.rejected.map((r) => `${r.sampleIndex}:${r.reason}`).join(',');
        const pr = parsed.rejected.map((r) => `${r.sampleIndex}:${r.reason}`).join(',');
        if (ta !== pa || tr !== pr) return { kind: 'disagree', detail: `accepted ${clip(ta)} vs ${clip(pa)}; rejected ${clip(tr)} vs ${clip(pr)} (fast path ${tc.fast})` };
        // The binary form the API stores must decode (that is what the worker does next).
        const d = tryRun(() => void decodeBatch(tc!.bytes));
        if (d.kind !== 'ok') return d.kind === 'refused' ? { kind: 'disagree', detail: `the transcoder's own batch does not decode: ${d.reason}` } : d;
      }
      return a;
    }
    case 'JSON dump':
      return tryRun(() => void parseJsonDump(bytes.toString('utf8'), { file: 'fuzz' }));
    case 'binary batch':
      return tryRun(() => {
        const d = decodeBatch(bytes);
        for (const r of d.records) decodeSampleRecord(r);
      });
    case 'perf script':
      return tryRun(() => {
        const text = bytes.toString('utf8');
        collapsePerfScript(text, {});
        collapsePerfScript(text, { all: true, tid: true, addrs: true });
        parseTextDump(text, { file: 'fuzz' });
      });
    case 'perf.data':
      return tryRun(() => void parsePerfData(bytes, { file: 'fuzz' }));
    case 'kernel log':
      return tryRun(() => {
        const log = parseKernelLog(bytes.toString('utf8'));
        kernelLogSamples(log, { file: 'fuzz' });
        for (const t of log.traces) kernelLogContext(t);
      });
  }
}

function indicesOf(p: ReturnType<typeof parseTextDump>): string {
  const rejected = new Set(p.rejected.map((r) => r.sampleIndex));
  const out: number[] = [];
  for (let i = 0; out.length < p.samples.length; i++) if (!rejected.has(i)) out.push(i);
  return out.join(',');
}

const clip = (s: string): string => (s.length > 80 ? `${s.slice(0, 80)}…` : s);

// ---- the worker thread ---------------------------------------------------------------------------

interface ReaderStats {
  n: number;
  refused: number;
  bytes: number;
  ms: number;
  slowest: { ms: number; index: number; size: number; what: string };
}

interface Finding { kind: 'crash' | 'hang' | 'disagree' | 'slow'; reader: ReaderName; index: number; size: number; what: string; detail: string }

interface WorkerMsg { stats: Record<string, ReaderStats>; findings: Finding[]; next: number; done: boolean }

function emptyStats(): ReaderStats {
  return { n: 0, refused: 0, bytes: 0, ms: 0, slowest: { ms: -1, index: -1, size: 0, what: '' } };
}

async function workerMain(): Promise<void> {
  const { seed, from, to, progress, skip } = workerData as { seed: number; from: number; to: number; progress: SharedArrayBuffer; skip: number[] };
  const skipped = new Set(skip);
  const cur = new Float64Array(progress);
  const seeds = await loadSeeds(seed);
  let stats: Record<string, ReaderStats> = {};
  let findings: Finding[] = [];
  let lastPost = performance.now();
  for (let i = from; i < to; i++) {
    if (skipped.has(i)) {
      if (i === to - 1) parentPort!.postMessage({ stats, findings, next: to, done: true } satisfies WorkerMsg);
      continue;
    }
    const input = makeInput(seeds, seed, i);
    cur[0] = i;
    cur[1] = performance.now() + performance.timeOrigin;
    const t = performance.now();
    const o = runReader(input.reader, input.bytes);
    const ms = performance.now() - t;
    cur[1] = 0;
    const s = (stats[input.reader] ??= emptyStats());
    s.n++;
    s.bytes += input.bytes.length;
    s.ms += ms;
    if (o.kind === 'refused') s.refused++;
    if (ms > s.slowest.ms) s.slowest = { ms, index: i, size: input.bytes.length, what: input.what };
    if (o.kind === 'crash' || o.kind === 'disagree') findings.push({ kind: o.kind, reader: input.reader, index: i, size: input.bytes.length, what: input.what, detail: o.kind === 'crash' ? o.error : o.detail });
    if (performance.now() - lastPost > 500 || i === to - 1) {
      parentPort!.postMessage({ stats, findings, next: i + 1, done: i === to - 1 } satisfies WorkerMsg);
      stats = {};
      findings = [];
      lastPost = performance.now();
    }
  }
  if (from >= to) parentPort!.postMessage({ stats, findings, next: to, done: true } satisfies WorkerMsg);
}

if (!isMainThread && (workerData as { fuzzReaders?: boolean } | undefined)?.fuzzReaders) await workerMain();

// ---- the campaign (main thread) -----------------------------------------------------------------

export interface CampaignOptions {
  seed: number;
  inputs: number;
  /** Per-input cap: an input still running after this is a hang. */
  timeoutMs: number;
  /** Worker threads (each takes a share of the indices). */
  threads: number;
  log: (line: string) => void;
}

export interface CampaignResult {
  ok: boolean;
  /** The report, as markdown lines. */
  lines: string[];
}

function startWorker(seed: number, from: number, to: number, progress: SharedArrayBuffer, skip: number[] = []): Worker {
  const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(import.meta.url)});`;
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(boot)}`), {
    workerData: { fuzzReaders: true, seed, from, to, progress, skip },
    // A reader that allocates without bound dies here, not the campaign.
    resourceLimits: { maxOldGenerationSizeMb: 1536 },
  });
}

/** One input in a fresh worker thread: its time (ms), or undefined when it overran `capMs`. */
async function timeAlone(seed: number, index: number, capMs: number): Promise<number | undefined> {
  const progress = new SharedArrayBuffer(16);
  const w = startWorker(seed, index, index + 1, progress);
  const r = await new Promise<number | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), capMs + 60_000);
    let ms: number | undefined;
    w.on('message', (m: WorkerMsg) => { for (const s of Object.values(m.stats)) ms = s.ms; if (m.done) { clearTimeout(timer); resolve(ms); } });
    w.on('error', () => { clearTimeout(timer); resolve(undefined); });
    // The 60 s above are for the thread's start (its seeds); the input itself gets capMs.
    const watch = setInterval(() => {
      const cur = new Float64Array(progress);
      if (cur[1]! > 0 && performance.now() + performance.timeOrigin - cur[1]! > capMs) { clearTimeout(timer); clearInterval(watch); resolve(undefined); }
    }, 100);
    w.once('exit', () => clearInterval(watch));
  });
  await w.terminate();
  return r !== undefined && r <= capMs ? r : undefined;
}

/** Runs indices [from, to) in worker threads, restarting after each hang or death. */
async function runRange(o: CampaignOptions, seeds: Seeds, from: number, to: number, stats: Map<string, ReaderStats>, findings: Finding[], tick: () => void): Promise<void> {
  let next = from;
  // Inputs that hung or killed a thread: the next thread starts after the last input whose result
  // came back (those after it and before the culprit ran, but their results were still in the
  // dead thread) and skips these.
  const skip: number[] = [];
  while (next < to) {
    const progress = new SharedArrayBuffer(16);
    const cur = new Float64Array(progress);
    const w = startWorker(o.seed, next, to, progress, skip);
    const outcome = await new Promise<{ kind: 'done' } | { kind: 'hang' | 'died'; index: number; detail: string }>((resolve) => {
      let settled = false;
      const settle = (v: { kind: 'done' } | { kind: 'hang' | 'died'; index: number; detail: string }): void => {
        if (settled) return;
        settled = true;
        clearInterval(watch);
        resolve(v);
      };
      w.on('message', (m: WorkerMsg) => {
        for (const [r, s] of Object.entries(m.stats)) {
          const t = stats.get(r) ?? emptyStats();
          t.n += s.n; t.refused += s.refused; t.bytes += s.bytes; t.ms += s.ms;
          if (s.slowest.ms > t.slowest.ms) t.slowest = s.slowest;
          stats.set(r, t);
        }
        findings.push(...m.findings);
        for (const f of m.findings) o.log(`  ${f.kind} in ${f.reader}: input #${f.index}: ${f.detail.split('\n')[0]}`);
        next = m.next;
        tick();
        if (m.done) settle({ kind: 'done' });
      });
      w.on('error', (e) => settle({ kind: 'died', index: cur[0]!, detail: `${e.name}: ${e.message}` }));
      w.on('exit', (code) => settle(code === 0 ? { kind: 'done' } : { kind: 'died', index: cur[0]!, detail: `worker thread exited with ${code}` }));
      const watch = setInterval(() => {
        const started = cur[1]!;
        if (started > 0 && performance.now() + performance.timeOrigin - started > o.timeoutMs) settle({ kind: 'hang', index: cur[0]!, detail: `still running after ${o.timeoutMs} ms` });
      }, 100);
    });
    await w.terminate();
    if (outcome.kind === 'done') return;
    const input = makeInput(seeds, o.seed, outcome.index);
    let detail = outcome.detail;
    let kind: Finding['kind'] = outcome.kind === 'hang' ? 'hang' : 'crash';
    if (kind === 'hang') {
      // On a shared, loaded machine a big input can overrun the cap without looping: run it once
      // more alone with 6x the cap. Only an input that overruns that too is a hang.
      const again = await timeAlone(o.seed, outcome.index, o.timeoutMs * 6);
      if (again !== undefined) {
        kind = 'slow';
        detail = `over the ${o.timeoutMs} ms cap in the campaign, ${again.toFixed(0)} ms alone`;
      }
    }
    o.log(`  ${kind} in ${input.reader}: input #${outcome.index} (${input.bytes.length} B): ${detail}`);
    findings.push({ kind, reader: input.reader, index: outcome.index, size: input.bytes.length, what: input.what, detail });
    const t = stats.get(input.reader) ?? emptyStats();
    t.n++;
    stats.set(input.reader, t);
    skip.push(outcome.index);
  }
}

export async function runReaderCampaign(o: CampaignOptions): Promise<CampaignResult> {
  const seeds = await loadSeeds(o.seed);
  for (const n of seeds.notes) o.log(`fuzz (readers): ${n}`);
  o.log(`fuzz (readers): ${o.inputs} inputs over ${READERS.length} readers, seeds: ${READERS.map((r) => `${r} ${seeds.by[r].length}`).join(', ')}; ${o.threads} thread(s), ${o.timeoutMs} ms per input`);
  const stats = new Map<string, ReaderStats>();
  const findings: Finding[] = [];
  const t0 = performance.now();
  let lastLog = t0;
  const tick = (): void => {
    if (performance.now() - lastLog < 15_000) return;
    lastLog = performance.now();
    const n = [...stats.values()].reduce((a, s) => a + s.n, 0);
    o.log(`  readers: ${n} inputs, ${findings.length} finding(s), ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  };
  const per = Math.ceil(o.inputs / o.threads);
  await Promise.all(Array.from({ length: o.threads }, (_, k) => runRange(o, seeds, k * per, Math.min(o.inputs, (k + 1) * per), stats, findings, tick)));
  const seconds = (performance.now() - t0) / 1000;
  const total = [...stats.values()].reduce((a, s) => a + s.n, 0);
  const count = (k: Finding['kind'], r?: string): number => findings.filter((f) => f.kind === k && (r === undefined || f.reader === r)).length;
  const lines = [
    `fuzz (readers): seed ${o.seed}, ${total} inputs in ${seconds.toFixed(0)} s; crashes ${count('crash')}, hangs ${count('hang')} (cap ${o.timeoutMs} ms, confirmed alone at ${o.timeoutMs * 6} ms; ${count('slow')} over the cap only under the campaign's load), transcoder/parser disagreements ${count('disagree')}`,
    '',
    '| reader | inputs | refused (DumpError) | crashes | hangs | disagreements | mean size | mean time | slowest input (time, size, what) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of READERS) {
    const s = stats.get(r) ?? emptyStats();
    lines.push(`| ${r} | ${s.n} | ${s.refused} | ${count('crash', r)} | ${count('hang', r)} | ${count('disagree', r)} | ${(s.bytes / Math.max(1, s.n) / 1024).toFixed(1)} KB | ${((s.ms / Math.max(1, s.n)) * 1000).toFixed(0)} µs | ${s.slowest.ms.toFixed(1)} ms, ${s.slowest.size} B, #${s.slowest.index}: ${s.slowest.what} |`);
  }
  findings.sort((a, b) => a.index - b.index);
  const shown = new Set<string>();
  for (const f of findings) {
    // One line per distinct failure (reader, kind, first line of the error), with its replay.
    const key = `${f.reader}\t${f.kind}\t${f.detail.split('\n')[0]}`;
    if (shown.has(key) || shown.size >= 20) continue;
    shown.add(key);
    lines.push('', `${f.kind} in ${f.reader}: input #${f.index} (${f.size} B; ${f.what}): ${f.detail.split('\n').slice(0, 3).join(' | ')}`,
      `  replay: FUZZ_SEED=${o.seed} FUZZ_READER_REPLAY=${f.index} npm run fuzz`);
  }
  return { ok: count('crash') === 0 && count('hang') === 0 && count('disagree') === 0, lines };
}

/** Runs one input here, in this thread, and prints what happened (FUZZ_READER_REPLAY). */
export async function replayReaderInput(seed: number, index: number, save: string | undefined, log: (l: string) => void): Promise<number> {
  const seeds = await loadSeeds(seed);
  const input = makeInput(seeds, seed, index);
  log(`input #${index}: reader ${input.reader}, ${input.bytes.length} bytes; ${input.what}`);
  if (save) {
    const p = join(save, `reader-input-${index}.bin`);
    writeFileSync(p, input.bytes);
    log(`saved as ${p}`);
  }
  const t = performance.now();
  const o = runReader(input.reader, input.bytes);
  log(`${(performance.now() - t).toFixed(1)} ms: ${o.kind}${o.kind === 'refused' ? ` (${o.reason})` : o.kind === 'crash' ? `\n${o.error}` : o.kind === 'disagree' ? `: ${o.detail}` : ''}`);
  return o.kind === 'ok' || o.kind === 'refused' ? 0 : 1;
}
