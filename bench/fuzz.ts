// npm run fuzz — the fault campaign's fuzzing, kept as a command, in two parts. First the readers
// (bench/fuzz-readers.ts): FUZZ_READER_INPUTS (default 100,000) mutated and truncated inputs run
// straight into the text, JSON, binary batch, perf script, perf.data and kernel-log readers in a
// worker thread under a watchdog (FUZZ_READER_TIMEOUT_MS per input, default 5000; 0 inputs skips
// this part; FUZZ_SEED=<seed> FUZZ_READER_REPLAY=<index> runs one input here with its stack trace).
// Then the HTTP API (FUZZ_UPLOADS=0 skips it), as below.
//
// The HTTP part (issue 17): it starts
// `stacksanity serve --no-feeder --workers 1` (the API in that process, one checker worker process)
// on the Redis at 127.0.0.1:6379 under a unique key prefix (deleted afterwards), uploads the
// example kernel's symbols and the emulated fleet's kernels, then sends a bounded number of
// mutated uploads to POST /v1/samples from 8 concurrent clients. Each upload is built from its
// index and the seed alone (a per-request PRNG over a corpus made from the same seed), so any one
// of them can be sent again: FUZZ_SEED=<seed> FUZZ_ONLY=<index> npm run fuzz.
//
// The promises it checks, and exits non-zero when one broke (naming the first offending upload):
//   - no 5xx but 503, and a 503 always with Retry-After;
//   - no upload unanswered past its timeout; the connection closed without an answer only on a
//     body over the route's limit (the server may stop reading it);
//   - never a 202 for what cannot hold a usable sample or must be refused (bad or missing token,
//     empty body, body over the limit, gzip bombs, gzip streams that are cut or fail their checks);
//   - no job id answered `duplicate: false` twice;
//   - the API and the worker still alive at the end (the worker never restarted), nothing logged
//     at error level;
//   - once the queue drains, samples accepted (the 202s) = stacksanity_samples_received_total =
//     samples checked (the per-host summaries), nothing parked in the dead-letter list;
//   - the API's RSS back within FUZZ_RSS_RATIO of its level before the campaign within
//     FUZZ_RSS_WAIT seconds of idle (V8 gives the garbage of a burst back when its memory reducer
//     runs, some 10-60 s after the allocations stop); the RSS after FUZZ_IDLE seconds is reported.
//
// Env: FUZZ_UPLOADS (default 20000), FUZZ_SECONDS (cap on the sending phase, default 120),
// FUZZ_SEED (default: random, printed), FUZZ_ONLY (comma-separated indices: send only those),
// FUZZ_KIND (a regular expression: send only the uploads whose mutation matches, e.g. '^gzip bomb';
// with FUZZ_ONLY or FUZZ_KIND each upload and its answer are printed), FUZZ_SAVE (a directory:
// each body sent is written there as upload-<index>.bin),
// FUZZ_CONCURRENCY (8), FUZZ_TIMEOUT_MS (per upload, 30000), FUZZ_IDLE (seconds, 10),
// FUZZ_RSS_RATIO (1.2), FUZZ_RSS_WAIT (120), REDIS_URL (redis://127.0.0.1:6379). The service gets this environment,
// so STACKSANITY_MAX_BODY and friends apply to both. Traffic goes to 127.0.0.1 only.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { Agent, request, type OutgoingHttpHeaders } from 'node:http';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createGzip, gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { parseTextDump } from '../services/core/dump/text.ts';
import { formatJsonDump, formatNdjson } from '../services/core/dump/json.ts';
import { Rng } from '../services/emulator/rng.ts';
import { feederSource, type FeedKernel } from '../services/pipeline/feed.ts';
import { loadConfig } from '../services/pipeline/config.ts';
import { traceStore } from '../services/pipeline/queue.ts';
import { Keys } from '../services/pipeline/keys.ts';
import { replayReaderInput, runReaderCampaign } from './fuzz-readers.ts';
import { ROOT, alive, checkedSamples, cpuSecondsOf, deletePrefix, mib, rssOf, sleep, startServe, workerPids, type ServeHandle } from './service.ts';

const UPLOADS = Number(process.env.FUZZ_UPLOADS ?? 20_000);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 120);
const SEED = (process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : randomBytes(4).readUInt32LE(0)) >>> 0;
const ONLY = process.env.FUZZ_ONLY?.split(',').filter(Boolean).map(Number);
const KIND = process.env.FUZZ_KIND !== undefined ? new RegExp(process.env.FUZZ_KIND) : undefined;
const CONCURRENCY = Number(process.env.FUZZ_CONCURRENCY ?? 8);
const TIMEOUT_MS = Number(process.env.FUZZ_TIMEOUT_MS ?? 30_000);
const IDLE_S = Number(process.env.FUZZ_IDLE ?? 10);
const RSS_RATIO = Number(process.env.FUZZ_RSS_RATIO ?? 1.2);
const RSS_WAIT_S = Math.max(IDLE_S, Number(process.env.FUZZ_RSS_WAIT ?? 120));
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The build id examples/demo.dump names (services/cli/serve.ts prints it in the banner's curl line). */
const EXAMPLE_BUILD = 'demo-encoded-fp';
const DRAIN_MS = 180_000;

const TOKEN = `fuzz-${randomBytes(12).toString('hex')}`;
const PREFIX = `{ss-fuzz-${randomBytes(4).toString('hex')}}`;
const log = (s: string): void => void process.stderr.write(`${s}\n`);
if (!Number.isInteger(SEED) || (ONLY && ONLY.some((i) => !Number.isInteger(i) || i < 0))) {
  log('fuzz: FUZZ_SEED must be an unsigned 32-bit integer and FUZZ_ONLY a list of upload indices');
  process.exit(2);
}
// The service's limits, from the environment it will run with.
const cfg = loadConfig({ ...process.env, REDIS_URL, STACKSANITY_PREFIX: PREFIX });
const MAX_BODY = cfg.maxSamplesBody;
const MAX_DECODED = cfg.maxSamplesDecoded;

// ---- the corpus: valid dumps the mutations start from ------------------------------------------

interface Base { name: string; body: Buffer; type: string }

async function corpus(): Promise<{ bases: Base[]; kernels: FeedKernel[]; kind: string }> {
  const demo = readFileSync(join(ROOT, 'examples', 'demo.dump'));
  const source = await feederSource({ root: ROOT, hosts: 8, seed: SEED, warn: log });
  const f5 = source.batch(5);
  const f50 = source.batch(50);
  const f200 = source.batch(200);
  const demoSamples = parseTextDump(demo.toString('utf8')).samples;
  const f50Samples = parseTextDump(f50).samples;
  const bases: Base[] = [
    { name: 'demo text', body: demo, type: 'text/plain' },
    { name: 'fleet 5 text', body: Buffer.from(f5), type: 'text/plain' },
    { name: 'fleet 50 text', body: Buffer.from(f50), type: 'text/plain' },
    { name: 'fleet 200 text', body: Buffer.from(f200), type: 'text/plain' },
    { name: 'demo json', body: Buffer.from(formatJsonDump(demoSamples)), type: 'application/json' },
    { name: 'demo ndjson', body: Buffer.from(formatNdjson(demoSamples)), type: 'application/x-ndjson' },
    { name: 'fleet 50 ndjson', body: Buffer.from(formatNdjson(f50Samples)), type: 'application/x-ndjson' },
  ];
  const kernels = [...source.kernels];
  if (!kernels.some((k) => k.buildId === EXAMPLE_BUILD)) {
    kernels.push({ buildId: EXAMPLE_BUILD, kallsyms: readFileSync(join(ROOT, 'examples', 'demo.kallsyms'), 'utf8'), profile: {} });
  }
  return { bases, kernels, kind: source.kind };
}

/** A gzip stream of `n` zero bytes (or newlines), made in pieces: a bomb, without holding its decoded size here. */
async function bomb(n: number, fill: number): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((r) => gz.once('end', r));
  const piece = Buffer.alloc(1 << 20, fill);
  for (let left = n; left > 0; left -= piece.length) {
    if (!gz.write(left >= piece.length ? piece : piece.subarray(0, left))) await new Promise((r) => gz.once('drain', r));
  }
  gz.end();
  await done;
  return Buffer.concat(out);
}

// ---- one upload from (seed, index) -------------------------------------------------------------

interface Spec {
  index: number;
  /** What was done to it, for the tables: the content mutation, then the transport's. */
  kind: string;
  path: string;
  headers: OutgoingHttpHeaders;
  body: Buffer;
  chunked: boolean;
  /** The body is over the route's limit: the server may answer and close without reading it all. */
  oversized: boolean;
  /** Why this upload must never be accepted (undefined: any answer but a broken promise will do). */
  never202?: string;
}

interface Fixed { bases: Base[]; bombs: { name: string; body: Buffer }[]; oversized: Buffer }

const HUGE = ['18446744073709551616', 'ffffffffffffffffffff', '99999999999999999999999999999999999999', '-1', '1e309', '9007199254740993', '0x', '0'.repeat(400) + '1', 'f'.repeat(5000), 'NaN', 'Infinity'];
const BAD_HEX = ['g', 'z', 'x', '-', ' ', '\t', '..', 'ﬀ', '\u0000', '0x'];
const TYPES = ['text/plain', 'application/json', 'application/x-ndjson', 'application/gzip', 'application/x-gzip', 'application/octet-stream', 'text/plain; charset=utf-8', 'text/plain; charset=utf-16', 'application/json; charset=latin1', 'TEXT/PLAIN', 'text/plain;;;', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'text/html', 'garbage', '', undefined];
const QUERIES = ['?source=agent', '?source=bogus', `?kernel=${EXAMPLE_BUILD}`, '?kernel=bad!id', '?kernel=' + 'k'.repeat(200), '?x=1', '?source=', '?source=ci&source=perf', '?%zz'];

function seedOf(index: number): number {
  return (SEED ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
}

function mutateText(rng: Rng, b: Buffer, bases: Base[]): [string, Buffer] {
  let s = b.toString('latin1');
  const ops: string[] = [];
  for (let n = rng.range(1, 3); n > 0; n--) {
    const op = rng.pick(['flip', 'flip', 'truncate', 'lines', 'lines', 'huge', 'badhex', 'splice', 'control']);
    ops.push(op);
    if (s.length === 0) break;
    const at = rng.int(s.length);
    switch (op) {
      case 'flip': {
        const a = Buffer.from(s, 'latin1');
        for (let k = rng.range(1, 16); k > 0; k--) {
          const p = rng.int(a.length);
          a[p] = rng.chance(0.5) ? a[p]! ^ (1 << rng.int(8)) : rng.int(256);
        }
        s = a.toString('latin1');
        break;
      }
      case 'truncate':
        s = s.slice(0, at);
        break;
      case 'lines': {
        const lines = s.split('\n');
        for (let k = rng.range(1, 8); k > 0; k--) {
          const i = rng.int(lines.length);
          const j = rng.int(lines.length);
          const what = rng.int(4);
          if (what === 0) lines.splice(i, 0, lines[i]!);
          else if (what === 1) lines.splice(i, 1);
          else if (what === 2) [lines[i], lines[j]] = [lines[j]!, lines[i]!];
          else lines.splice(i, 0, ...lines.slice(Math.min(i, j), Math.min(Math.max(i, j), Math.min(i, j) + 50)));
        }
        s = lines.join('\n');
        break;
      }
      case 'huge':
      case 'badhex': {
        const re = /[0-9a-fA-F]{2,}/g;
        for (let k = rng.range(1, 6); k > 0; k--) {
          re.lastIndex = rng.int(s.length);
          const m = re.exec(s);
          if (!m) continue;
          const rep = op === 'huge' ? rng.pick(HUGE) : m[0].slice(0, rng.int(m[0].length)) + rng.pick(BAD_HEX) + m[0].slice(rng.int(m[0].length));
          s = s.slice(0, m.index) + rep + s.slice(m.index + m[0].length);
        }
        break;
      }
      case 'splice': {
        const o = rng.pick(bases).body.toString('latin1');
        s = s.slice(0, at) + o.slice(rng.int(o.length));
        break;
      }
      case 'control': {
        const ins = rng.pick(['\u0000', '\r', '\r\n', '\uFEFF', 'é', '\n\n\n', 'x'.repeat(rng.range(1000, 1 << 18)), '\n.regs', '\n.mem ', '{', '[', '"', '\\']);
        s = s.slice(0, at) + ins + s.slice(at);
        break;
      }
    }
  }
  // Characters above U+00FF (a BOM, ﬀ) go out as UTF-8; the rest byte for byte.
  return [ops.join('+'), /[^\u0000-\u00ff]/.test(s) ? Buffer.from(s, 'utf8') : Buffer.from(s, 'latin1')];
}

function build(index: number, fx: Fixed): Spec {
  const rng = new Rng(seedOf(index));
  const base = rng.pick(fx.bases);
  let body: Buffer;
  let kind: string;
  let type: string | undefined = base.type;
  let oversized = false;
  let never202: string | undefined;
  let chunked = rng.chance(0.1);
  let gzipped = false;
  const r = rng.u32() / 4294967296;
  if (r < 0.1) {
    kind = 'valid';
    body = base.body;
  } else if (r < 0.8) {
    [kind, body] = mutateText(rng, base.body, fx.bases);
  } else if (r < 0.84) {
    kind = 'random bytes';
    body = Buffer.from(Array.from({ length: rng.range(1, 4096) }, () => rng.int(256)));
  } else if (r < 0.87) {
    kind = 'empty';
    body = Buffer.alloc(0);
    never202 = 'an empty body';
  } else if (r < 0.95) {
    // A gzip stream broken in one of the ways a client or a network can break it.
    const gz = gzipSync(base.body, { level: rng.range(1, 9) });
    const how = rng.pick(['cut', 'crc', 'isize', 'flip', 'trailing', 'two members', 'magic only']);
    kind = `broken gzip: ${how}`;
    gzipped = true;
    if (how === 'cut') {
      body = gz.subarray(0, rng.range(2, gz.length - 1));
      never202 = 'a cut gzip stream';
    } else if (how === 'crc' || how === 'isize') {
      body = Buffer.from(gz);
      const at = gz.length - (how === 'crc' ? 8 : 4) + rng.int(4);
      body[at] = body[at]! ^ (1 + rng.int(255));
      never202 = `a gzip stream with a wrong ${how === 'crc' ? 'CRC' : 'length'}`;
    } else if (how === 'flip') {
      body = Buffer.from(gz);
      const at = rng.range(10, gz.length - 9);
      body[at] = body[at]! ^ (1 << rng.int(8));
    } else if (how === 'trailing') {
      body = Buffer.concat([gz, Buffer.from('trailing garbage\n')]);
    } else if (how === 'two members') {
      body = Buffer.concat([gz, gzipSync(rng.pick(fx.bases).body)]);
    } else {
      body = Buffer.from([0x1f, 0x8b]);
      never202 = 'a gzip magic alone';
    }
  } else if (r < 0.96) {
    const b = rng.pick(fx.bombs);
    kind = `gzip bomb: ${b.name}`;
    body = b.body;
    gzipped = true;
    never202 = 'a gzip bomb holds no sample';
  } else if (r < 0.962) {
    kind = 'oversized';
    body = fx.oversized.subarray(0, MAX_BODY + 1 + rng.int(fx.oversized.length - MAX_BODY - 1));
    oversized = true;
    never202 = 'a body over the limit';
  } else {
    // Valid bytes under a replayed or conflicting Idempotency-Key (set below).
    kind = 'replayed key';
    body = base.body;
  }

  // Compression the client chose, announced or not.
  if (!gzipped && body.length > 0 && !oversized && rng.chance(0.3)) {
    body = gzipSync(body, { level: rng.range(1, 9) });
    gzipped = true;
    kind += ', gzip';
  }
  const headers: OutgoingHttpHeaders = {};
  if (gzipped && rng.chance(0.5)) {
    headers['content-encoding'] = 'gzip';
    if (rng.chance(0.3)) type = rng.pick(['application/gzip', 'application/x-gzip', 'application/octet-stream']);
  } else if (rng.chance(0.03)) {
    headers['content-encoding'] = rng.pick(['gzip', 'br', 'deflate', 'identity', 'gzip, gzip']);
  }
  if (rng.chance(0.25)) type = rng.pick(TYPES);
  if (type !== undefined) headers['content-type'] = type;

  // Auth: mostly right; otherwise missing, wrong or malformed, and never to be accepted.
  const a = rng.u32() / 4294967296;
  if (a < 0.92) headers.authorization = `Bearer ${TOKEN}`;
  else {
    const bad = rng.pick(['missing', 'wrong token', 'basic', 'empty bearer', 'token alone', 'truncated token', 'token + 1 char']);
    kind += `, auth: ${bad}`;
    never202 = `a request with ${bad === 'missing' ? 'no token' : `a bad token (${bad})`}`;
    if (bad === 'wrong token') headers.authorization = `Bearer fuzz-${randomFrom(rng, 24)}`;
    else if (bad === 'basic') headers.authorization = `Basic ${Buffer.from(`fuzz:${TOKEN}`).toString('base64')}`;
    else if (bad === 'empty bearer') headers.authorization = 'Bearer ';
    else if (bad === 'token alone') headers.authorization = TOKEN;
    else if (bad === 'truncated token') headers.authorization = `Bearer ${TOKEN.slice(0, -1)}`;
    else if (bad === 'token + 1 char') headers.authorization = `Bearer ${TOKEN}x`;
  }

  // Idempotency-Key: none, own, shared with other uploads (replays and conflicts), odd.
  const k = rng.u32() / 4294967296;
  if (kind === 'replayed key' || (k >= 0.8 && k < 0.9)) {
    headers['idempotency-key'] = `fuzz-pool-${rng.int(8)}`;
  } else if (k >= 0.45 && k < 0.8) {
    headers['idempotency-key'] = `fuzz-${SEED}-${index}`;
  } else if (k >= 0.9) {
    const odd = rng.pick(['', ' ', 'a'.repeat(200), 'a'.repeat(201), 'a'.repeat(8000), 'k\u00e9y', 'key with spaces', '../../../etc/passwd', '{fuzz}', '*', '\t', 'two']);
    headers['idempotency-key'] = odd === 'two' ? [`fuzz-a-${index}`, `fuzz-b-${index}`] : odd;
    kind += ', odd key';
  }
  const path = '/v1/samples' + (rng.chance(0.05) ? rng.pick(QUERIES) : '');
  if (oversized && rng.chance(0.5)) chunked = true;
  return { index, kind, path, headers, body, chunked, oversized, ...(never202 ? { never202 } : {}) };
}

function randomFrom(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += 'abcdefghijklmnopqrstuvwxyz0123456789'[rng.int(36)];
  return s;
}

// ---- sending ------------------------------------------------------------------------------------

interface Answer {
  status: number;
  /** The error code of the JSON body, or for no answer: timeout / closed (with the socket error). */
  error: string;
  retryAfter: boolean;
  ms: number;
  json?: { job?: string; accepted?: number; duplicate?: boolean };
  /** The start of the answer's body, shown when uploads are replayed (FUZZ_ONLY). */
  text?: string;
}

function send(base: string, agent: Agent, s: Spec, timeoutMs = TIMEOUT_MS): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (a: Omit<Answer, 'ms'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...a, ms: performance.now() - t0 });
    };
    const headers = { ...s.headers, ...(s.chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(s.body.length) }) };
    const req = request(`${base}${s.path}`, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < 1 << 20) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Answer['json'] & { error?: unknown } = {};
        try {
          json = JSON.parse(text) as typeof json;
        } catch {
          // not JSON: tallied under its status alone
        }
        const status = res.statusCode ?? 0;
        const error = status === 202 ? (json.duplicate ? 'duplicate' : 'accepted') : typeof json.error === 'string' ? json.error : text ? 'non-json body' : '-';
        finish({ status, error, retryAfter: res.headers['retry-after'] !== undefined, json, text: text.slice(0, 400) });
      });
      res.on('error', (e: NodeJS.ErrnoException) => finish({ status: 0, error: `closed (${e.code ?? e.message})`, retryAfter: false }));
    });
    const timer = setTimeout(() => {
      finish({ status: 0, error: 'timeout', retryAfter: false });
      req.destroy();
    }, timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => finish({ status: 0, error: `closed (${e.code ?? e.message})`, retryAfter: false }));
    if (s.chunked) {
      for (let o = 0; o < s.body.length; o += 1 << 20) req.write(s.body.subarray(o, o + (1 << 20)));
      req.end();
    } else {
      req.end(s.body);
    }
  });
}

/** The promises a single answer can break; undefined when it kept them. */
function broken(s: Spec, a: Answer): string | undefined {
  if (a.error === 'timeout') return `no answer within ${TIMEOUT_MS} ms`;
  if (a.status === 0 && !s.oversized) return `connection ${a.error} without an answer`;
  if (a.status >= 500 && a.status !== 503) return `answered ${a.status} (${a.error})`;
  if (a.status === 503 && !a.retryAfter) return 'answered 503 without Retry-After';
  if (a.status === 202 && s.never202) return `accepted ${s.never202}`;
  if (a.status === 202 && (typeof a.json?.job !== 'string' || typeof a.json.accepted !== 'number')) return '202 without a job id and count';
  return undefined;
}

/** Sum of a metric's series in a Prometheus exposition. */
function metricSum(text: string, name: string): number {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((x, l) => x + Number(l.split(' ').pop()), 0);
}

async function heapOf(base: string): Promise<string> {
  const t = await (await fetch(`${base}/metrics`)).text();
  return `${mib(metricSum(t, 'nodejs_heap_size_used_bytes'))} / ${mib(metricSum(t, 'nodejs_heap_size_total_bytes'))}, ${mib(metricSum(t, 'nodejs_external_memory_bytes'))}`;
}

// ---- the run ------------------------------------------------------------------------------------

interface Offence { index: number; kind: string; why: string }

async function main(): Promise<number> {
  const started = Date.now();
  log(`fuzz: seed ${SEED} (replay one upload: FUZZ_SEED=${SEED} FUZZ_ONLY=<index> npm run fuzz)`);
  const { bases, kernels, kind: sourceKind } = await corpus();
  const [within, newlines, beyond] = await Promise.all([bomb(MAX_DECODED >> 1, 0), bomb(MAX_DECODED >> 2, 0x0a), bomb(MAX_DECODED * 2, 0)]);
  const fx: Fixed = {
    bases,
    bombs: [
      { name: `${mib(MAX_DECODED >> 1)} of zeros (within the decoded limit)`, body: within },
      { name: `${mib(MAX_DECODED >> 2)} of newlines (within)`, body: newlines },
      { name: `${mib(MAX_DECODED * 2)} of zeros (beyond)`, body: beyond },
    ],
    oversized: randomBytes(MAX_BODY + 65_536),
  };
  log(`corpus: ${bases.map((b) => `${b.name} ${b.body.length} B`).join(', ')} (${sourceKind}); bombs ${fx.bombs.map((b) => `${b.body.length} B`).join(', ')}`);

  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  const keys = new Keys(PREFIX);
  // Like `npm start`: the malloc setting the project ships, unless the caller chose one.
  const malloc: Record<string, string> = Object.keys(process.env).some((k) => k.startsWith('MALLOC_')) ? {} : { MALLOC_MMAP_THRESHOLD_: '131072' };
  let serve: ServeHandle | undefined;
  try {
    serve = await startServe({ workers: 1, redisUrl: REDIS_URL, prefix: PREFIX, token: TOKEN, name: 'fuzz', env: malloc, log });
    const base = serve.base;
    const workerPid = workerPids(serve.pid)[0]!;
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const k of kernels) {
      const p = await fetch(`${base}/v1/kernels/${k.buildId}/profile`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(k.profile) });
      const r = await fetch(`${base}/v1/kernels/${k.buildId}/symbols`, { method: 'POST', headers: { ...auth, 'content-type': 'text/plain' }, body: k.kallsyms });
      if (p.status !== 200 || r.status !== 201) throw new Error(`kernel ${k.buildId}: profile ${p.status}, symbols ${r.status} ${await r.text()}`);
    }

    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const jobs = new Map<string, number>();
    const offences: Offence[] = [];
    const note202 = (s: Spec, a: Answer): void => {
      if (a.status !== 202 || a.json?.duplicate !== false) return;
      if (jobs.has(a.json.job!)) offences.push({ index: s.index, kind: s.kind, why: `job ${a.json.job} answered duplicate: false a second time` });
      jobs.set(a.json.job!, a.json.accepted!);
    };
    // Warm-up (not tallied): each base once, plain and gzip, so that the code paths are loaded and
    // compiled before the RSS taken as the baseline.
    for (const [n, b] of bases.entries()) {
      for (const gz of [false, true]) {
        const s: Spec = { index: -1, kind: 'warm-up', path: '/v1/samples', headers: { ...auth, 'content-type': b.type, 'idempotency-key': `warm-${n}-${gz}` }, body: gz ? gzipSync(b.body) : b.body, chunked: false, oversized: false };
        const a = await send(base, agent, s, 60_000);
        if (a.status !== 202) throw new Error(`warm-up upload of ${b.name}${gz ? ' (gzip)' : ''} answered ${a.status} ${a.error}`);
        note202(s, a);
      }
    }
    await sleep(2000);
    const heapBefore = await heapOf(base);
    const rssBefore = rssOf(serve.pid);
    const cpu0 = { api: cpuSecondsOf(serve.pid), worker: cpuSecondsOf(workerPid), driver: process.cpuUsage() };
    let rssPeak = rssBefore;
    const rssTimer = setInterval(() => { rssPeak = Math.max(rssPeak, rssOf(serve!.pid)); }, 250);

    // The campaign.
    const indices = ONLY ?? Array.from({ length: UPLOADS }, (_, i) => i);
    const tally = new Map<string, { n: number; kinds: Map<string, number> }>();
    const byKind = new Map<string, Map<string, number>>();
    const msByKind = new Map<string, { sum: number; max: number }>();
    let pos = 0;
    let sent = 0;
    let maxMs = 0;
    const t0 = Date.now();
    const deadline = t0 + SECONDS * 1000;
    const lane = async (): Promise<void> => {
      while (pos < indices.length && Date.now() < deadline) {
        const s = build(indices[pos++]!, fx);
        if (KIND && !KIND.test(s.kind)) continue;
        if (process.env.FUZZ_SAVE) writeFileSync(join(process.env.FUZZ_SAVE, `upload-${s.index}.bin`), s.body);
        const a = await send(base, agent, s);
        sent++;
        maxMs = Math.max(maxMs, a.ms);
        const why = broken(s, a);
        if (ONLY || KIND) log(`upload ${s.index} (${s.kind}; ${s.body.length} B, ${JSON.stringify({ ...s.headers, authorization: s.headers.authorization === `Bearer ${TOKEN}` ? 'Bearer <token>' : s.headers.authorization })}${s.path === '/v1/samples' ? '' : `, ${s.path}`}): ${a.status || '-'} ${a.error} in ${a.ms.toFixed(0)} ms ${a.text ?? ''}`);
        if (why) offences.push({ index: s.index, kind: s.kind, why });
        note202(s, a);
        const key = `${a.status || '-'}\t${a.error}`;
        const t = tally.get(key) ?? { n: 0, kinds: new Map<string, number>() };
        t.n++;
        const family = s.kind.split(/[,:+]/)[0]!;
        t.kinds.set(family, (t.kinds.get(family) ?? 0) + 1);
        tally.set(key, t);
        const k = byKind.get(family) ?? new Map<string, number>();
        k.set(String(a.status || a.error), (k.get(String(a.status || a.error)) ?? 0) + 1);
        byKind.set(family, k);
        const m = msByKind.get(family) ?? { sum: 0, max: 0 };
        m.sum += a.ms;
        m.max = Math.max(m.max, a.ms);
        msByKind.set(family, m);
        if (sent % 2000 === 0) log(`  ${sent} uploads, ${((Date.now() - t0) / 1000).toFixed(0)} s, ${offences.length} broken promise(s)`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    const campaignS = (Date.now() - t0) / 1000;
    const driverCpu = process.cpuUsage(cpu0.driver);
    const cpuUsed = { api: cpuSecondsOf(serve.pid) - cpu0.api, worker: cpuSecondsOf(workerPid) - cpu0.worker, driver: (driverCpu.user + driverCpu.system) / 1e6 };
    agent.destroy();

    // Drain: every accepted job committed (or parked, which is a broken promise too), bounded.
    let open = [...jobs.keys()];
    const drainT0 = Date.now();
    while (open.length > 0 && Date.now() - drainT0 < DRAIN_MS) {
      const p = redis.pipeline();
      for (const id of open) {
        p.exists(keys.done(id));
        p.zscore(keys.deadLetters, id);
      }
      const res = (await p.exec()) ?? [];
      open = open.filter((_, i) => res[2 * i]?.[1] !== 1 && res[2 * i + 1]?.[1] === null);
      if (open.length > 0) await sleep(250);
    }
    const drainS = (Date.now() - drainT0) / 1000;
    const parked = await redis.zcard(keys.deadLetters);
    const accepted = [...jobs.values()].reduce((x, y) => x + y, 0);
    const checked = await checkedSamples(redis, keys, traceStore(cfg, redis, keys));
    const received = metricSum(await (await fetch(`${base}/metrics`)).text(), 'stacksanity_samples_received_total');
    clearInterval(rssTimer);
    // Idle: the RSS after IDLE_S, and how long until it is back within RSS_RATIO of before.
    const idleT0 = Date.now();
    await sleep(IDLE_S * 1000);
    const rssAfter = rssOf(serve.pid);
    const heapAfter = await heapOf(base);
    let backAfterS: number | undefined;
    for (;;) {
      if (rssOf(serve.pid) <= rssBefore * RSS_RATIO) {
        backAfterS = (Date.now() - idleT0) / 1000;
        break;
      }
      if (Date.now() - idleT0 >= RSS_WAIT_S * 1000) break;
      await sleep(1000);
    }
    const rssBack = rssOf(serve.pid);
    const apiAlive = serve.child.exitCode === null && serve.child.signalCode === null && alive(serve.pid);
    const workerAlive = alive(workerPid) && serve.restarts() === 0;
    const errs = serve.errors();

    // The report.
    const cpu = cpus();
    const out: string[] = [];
    out.push(`fuzz — ${new Date().toISOString()}; seed ${SEED}${ONLY ? `; only ${ONLY.join(',')}` : ''}${KIND ? `; only mutations matching ${KIND}` : ''}`);
    out.push(`machine: nproc ${cpu.length}, ${cpu[0]?.model ?? '?'}; Node ${process.version}; load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    out.push(`service: serve --no-feeder --workers 1, Redis ${REDIS_URL} prefix ${PREFIX}; body limit ${MAX_BODY} B, decoded limit ${MAX_DECODED} B; ${malloc.MALLOC_MMAP_THRESHOLD_ ? 'MALLOC_MMAP_THRESHOLD_=131072 (as npm start)' : 'malloc settings from the environment'}`);
    out.push(`sent ${sent} of ${indices.length} uploads in ${campaignS.toFixed(1)} s (${(sent / campaignS).toFixed(0)}/s), ${CONCURRENCY} concurrent, timeout ${TIMEOUT_MS} ms; slowest answer ${(maxMs / 1000).toFixed(2)} s; drain ${drainS.toFixed(1)} s; total ${((Date.now() - started) / 1000).toFixed(0)} s`);
    out.push(`CPU during the sending phase: API ${cpuUsed.api.toFixed(1)} s, worker ${cpuUsed.worker.toFixed(1)} s, this driver ${cpuUsed.driver.toFixed(1)} s`);
    out.push(`API V8 heap used / total, external (from its /metrics, no forced gc): before ${heapBefore}; after ${IDLE_S} s idle ${heapAfter}`);
    out.push('', '| status | error code | uploads | mutation families |', '|---|---|---:|---|');
    for (const [key, t] of [...tally].sort((x, y) => y[1].n - x[1].n)) {
      const [st, err] = key.split('\t');
      out.push(`| ${st} | ${err} | ${t.n} | ${[...t.kinds].sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k} ${n}`).join(', ')} |`);
    }
    out.push('', '| mutation family | uploads | answers | answer time mean / max |', '|---|---:|---|---:|');
    for (const [k, m] of [...byKind].sort((x, y) => x[0].localeCompare(y[0]))) {
      const n = [...m.values()].reduce((x, y) => x + y, 0);
      const t = msByKind.get(k)!;
      out.push(`| ${k} | ${n} | ${[...m].sort((x, y) => y[1] - x[1]).map(([st, c]) => `${c}× ${st}`).join(', ')} | ${(t.sum / n).toFixed(0)} / ${t.max.toFixed(0)} ms |`);
    }
    const promises: [string, boolean, string][] = [
      ['every answer kept the per-request promises (no 5xx but 503 + Retry-After, no hang, no 202 for what must be refused)', offences.length === 0, `${offences.length} broken`],
      ['API process alive', apiAlive, apiAlive ? 'yes' : 'NO'],
      ['worker process alive, never restarted', workerAlive, `pid ${workerPid} ${alive(workerPid) ? 'alive' : 'GONE'}, ${serve.restarts()} restart(s)`],
      ['nothing logged at error level by the API', errs.count === 0, `${errs.count} line(s)`],
      ['every accepted batch committed, none parked', open.length === 0 && parked === 0, `${jobs.size} batches: ${open.length} uncommitted, ${parked} parked`],
      ['samples accepted (202s) = received (metric) = checked (summaries)', accepted === received && received === checked, `${accepted} / ${received} / ${checked}`],
      [`API RSS back within ${RSS_RATIO}× its level before, within ${RSS_WAIT_S} s of idle`, backAfterS !== undefined, `${mib(rssBefore)} before, ${mib(rssPeak)} peak, ${mib(rssAfter)} after ${IDLE_S} s idle (${(rssAfter / rssBefore).toFixed(2)}×); ${backAfterS !== undefined ? `${mib(rssBack)} (${(rssBack / rssBefore).toFixed(2)}×) after ${backAfterS.toFixed(0)} s` : `still ${mib(rssBack)} (${(rssBack / rssBefore).toFixed(2)}×) after ${RSS_WAIT_S} s`}`],
    ];
    out.push('', '| promise | held | figures |', '|---|---|---|');
    for (const [what, ok, fig] of promises) out.push(`| ${what} | ${ok ? 'yes' : '**NO**'} | ${fig} |`);
    console.log(out.join('\n'));
    for (const l of errs.first) log(`API error log: ${l}`);
    offences.sort((x, y) => x.index - y.index);
    for (const o of offences.slice(0, 10)) log(`broken: upload ${o.index} (${o.kind}): ${o.why}`);
    if (promises.every(([, ok]) => ok)) return 0;
    const first = offences[0];
    log(`FAILED${first ? `: first offending upload ${first.index} (${first.kind}): ${first.why}; replay: FUZZ_SEED=${SEED} FUZZ_ONLY=${first.index} npm run fuzz` : `: ${promises.filter(([, ok]) => !ok).map(([w]) => w).join('; ')}`}`);
    return 1;
  } finally {
    await serve?.stop();
    redis.disconnect();
    await deletePrefix(REDIS_URL, PREFIX);
  }
}

const READER_INPUTS = Number(process.env.FUZZ_READER_INPUTS ?? 100_000);
const READER_REPLAY = process.env.FUZZ_READER_REPLAY;

async function all(): Promise<number> {
  if (READER_REPLAY !== undefined) return replayReaderInput(SEED, Number(READER_REPLAY), process.env.FUZZ_SAVE, log);
  let code = 0;
  if (READER_INPUTS > 0 && !ONLY && !KIND) {
    log(`fuzz: seed ${SEED} (replay one reader input: FUZZ_SEED=${SEED} FUZZ_READER_REPLAY=<index> npm run fuzz)`);
    const r = await runReaderCampaign({ seed: SEED, inputs: READER_INPUTS, timeoutMs: Number(process.env.FUZZ_READER_TIMEOUT_MS ?? 5000), threads: Number(process.env.FUZZ_READER_THREADS ?? 1), log });
    console.log(r.lines.join('\n'));
    if (!r.ok) {
      log('FAILED: a reader crashed, hung, or the transcoder disagreed with the parser (replay commands above)');
      code = 1;
    }
  }
  if (UPLOADS > 0 || ONLY) code = Math.max(code, await main());
  return code;
}

process.exit(await all());
