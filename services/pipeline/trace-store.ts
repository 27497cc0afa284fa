// The trace store in Redis: failing samples (and a sampled share of passing ones) with their
// verdicts, bounded in count and age, indexed for the list filters; per-host and per-kernel
// summaries; the metric totals. A batch's writes are applied by one Lua script that first sets
// the batch's idempotency marker: a batch retried after a crash (its results possibly committed
// already) is neither stored nor counted twice.
//
// Layout (all under the hash-tagged prefix, see keys.ts):
//   traces        HASH  trace id -> binary body (encodeTraceBody): 0x01, u32le n, n bytes of JSON
//                       header (job, index, received_at ms, uploader, source, rev: the kernel
//                       profile revision checked with, when known; checker: the checker build),
//                       then the sample's binary
//                       record. The detail (verdicts, frames, kernel-style text) is re-derived from
//                       it on read (trace-view.ts). Bodies written before that are the detail's
//                       JSON itself (they start with '{') and are served as they are.
//   tmeta         HASH  trace id -> "host\tkernel\tstatus\tstrategy,..\treason,.."  (list filtering)
//   idx:all       ZSET  trace id by score = receivedAt ms * 1000 + index % 1000 (newest first)
//   idx:<k>:<v>   ZSET  same scores, one per host, kernel, strategy, reason, status value
//   sum:host:<h>  HASH  samples, failing, <strategy>:<verdict> counts   (expire with the traces)
//   sum:kernel:<k> HASH idem
//   sum:hour:<ms> HASH idem, summed over the batches committed in that hour (the overview's series)
//   metrics       HASH  exposition line key -> total (metrics.ts)
//   counters:pending LIST committed batches' counter increments not yet in metrics/sum:* (FOLD_FN)
//   done:<job>    STRING the batch was committed (expires after the idempotency window)
//   finding:<id>, findings:*   the batch's findings (findings.ts), applied by the same script
import { pageByScore } from './paging.ts';
import type { Redis } from 'ioredis';
import { FINDINGS_FN, findingsArg, type FindingDelta } from './findings-batch.ts';
import type { Keys } from './keys.ts';
import { runScript } from './redis.ts';

export interface TraceMeta {
  id: string;
  score: number;
  host: string;
  kernel: string;
  status: 'failing' | 'passing';
  strategies: string[];
  reasons: string[];
}

export interface TraceRecord extends TraceMeta {
  /** encodeTraceBody(): bytes, not text (ioredis passes Buffers to Lua ARGV unchanged). */
  body: Uint8Array;
}

/** What a stored trace records about its check besides the sample and the meta in tmeta. */
export interface TraceHeader {
  job: string;
  index: number;
  /** ms since the epoch */
  receivedAt: number;
  uploader: string;
  source: string;
  /** The kernel profile's revision when the sample was checked; absent when it was not known. */
  rev?: number;
  /** The checker build that checked it (checker-build.ts); absent in traces stored before it was recorded. */
  checker?: string;
}

/** First byte of a binary body; a body of the JSON era starts with '{'. */
const BODY_V1 = 0x01;

export function encodeTraceBody(h: TraceHeader, record: Uint8Array): Buffer {
  const head = JSON.stringify({
    job: h.job, index: h.index, received_at: h.receivedAt, uploader: h.uploader, source: h.source,
    ...(h.rev !== undefined ? { rev: h.rev } : {}), ...(h.checker !== undefined ? { checker: h.checker } : {}),
  });
  const headLen = Buffer.byteLength(head);
  const out = Buffer.allocUnsafe(5 + headLen + record.byteLength);
  out[0] = BODY_V1;
  out.writeUInt32LE(headLen, 1);
  out.write(head, 5, 'utf8');
  out.set(record, 5 + headLen);
  return out;
}

export type StoredBody = { kind: 'record'; header: TraceHeader; record: Uint8Array } | { kind: 'json'; json: string };

/** Throws on a body that is neither form (a corrupt value). */
export function decodeTraceBody(b: Buffer): StoredBody {
  if (b.length > 0 && b[0] === 0x7b) return { kind: 'json', json: b.toString('utf8') };
  if (b.length < 5 || b[0] !== BODY_V1) throw new Error(`trace body of unknown form (first byte ${b[0] ?? 'none'})`);
  const headLen = b.readUInt32LE(1);
  if (5 + headLen > b.length) throw new Error('trace body truncated in its header');
  const o = JSON.parse(b.toString('utf8', 5, 5 + headLen)) as { job: string; index: number; received_at: number; uploader: string; source: string; rev?: number; checker?: string };
  const header: TraceHeader = {
    job: o.job, index: o.index, receivedAt: o.received_at, uploader: o.uploader, source: o.source,
    ...(o.rev !== undefined ? { rev: o.rev } : {}), ...(typeof o.checker === 'string' ? { checker: o.checker } : {}),
  };
  return { kind: 'record', header, record: b.subarray(5 + headLen) };
}

/** A stored trace as read back: its body and its list meta. */
export interface StoredTrace {
  body: Buffer;
  meta: TraceMeta;
}

/**
 * Part of the commit script: drops traces beyond the count cap or older than the cutoff from
 * idx:all (KEYS[4]), the bodies (KEYS[2]) and meta (KEYS[3]); ARGV[3] cutoff score, ARGV[4] cap.
 * Secondary indexes are trimmed by score and size when written and skip vanished ids on read.
 */
const TRIM_BODY = `
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
  local excess = redis.call('ZCARD', KEYS[4]) - #old - tonumber(ARGV[4])
  local ids = old
  if excess > 0 then
    local more = redis.call('ZRANGE', KEYS[4], #old, #old + math.min(excess, 1000) - 1)
    for _, id in ipairs(more) do table.insert(ids, id) end
  end
  for s = 1, #ids, 500 do
    local chunk = {unpack(ids, s, math.min(s + 499, #ids))}
    redis.call('ZREM', KEYS[4], unpack(chunk))
    redis.call('HDEL', KEYS[2], unpack(chunk))
    redis.call('HDEL', KEYS[3], unpack(chunk))
  end`;

/**
 * The counters (metric totals, per-host and per-kernel summaries) reach their hashes through a
 * pending list: a batch's commit appends its increments as one JSON entry, and the entries are
 * summed and applied together — by the commit that brings the list to FOLD_EVERY entries, and by
 * every reader before it reads (fold()). One entry is pushed only by the commit that set the
 * batch's marker, and a fold applies and empties the list in one script, so each batch is still
 * counted exactly once; readers never see a total without the batches committed before the read.
 * Why: ~330 HINCRBY per batch were a third of Redis's time in the commit (bench/RESULTS.md,
 * third pass); folded, each distinct field is incremented once per FOLD_EVERY batches.
 * An entry: { i: [[hash, [field, n, ...]], ...] HINCRBY, f: [[hash, field, x], ...] HINCRBYFLOAT,
 * e: [[hash, seconds], ...] EXPIRE (set once the hash exists) }.
 */
export const FOLD_EVERY = 16;
const HOUR_MS = 3_600_000;

const FOLD_FN = `
local function fold(pending)
  local entries = redis.call('LRANGE', pending, 0, -1)
  if #entries == 0 then return 0 end
  local ints, order, floats, forder, ttl = {}, {}, {}, {}, {}
  for _, raw in ipairs(entries) do
    local c = cjson.decode(raw)
    for _, g in ipairs(c.i) do
      local key, fs = g[1], g[2]
      local t = ints[key]
      if not t then t = {}; ints[key] = t; order[#order + 1] = key end
      for j = 1, #fs, 2 do t[fs[j]] = (t[fs[j]] or 0) + tonumber(fs[j + 1]) end
    end
    for _, g in ipairs(c.f) do
      local t = floats[g[1]]
      if not t then t = {}; floats[g[1]] = t; forder[#forder + 1] = g[1] end
      t[g[2]] = (t[g[2]] or 0) + tonumber(g[3])
    end
    for _, g in ipairs(c.e) do ttl[g[1]] = g[2] end
  end
  for _, key in ipairs(order) do
    for field, n in pairs(ints[key]) do redis.call('HINCRBY', key, field, string.format('%d', n)) end
  end
  for _, key in ipairs(forder) do
    for field, x in pairs(floats[key]) do redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', x)) end
  end
  for key, seconds in pairs(ttl) do redis.call('EXPIRE', key, seconds) end
  redis.call('DEL', pending)
  return #entries
end
`;

/** KEYS[1]: the pending list. Returns how many batches' entries it applied. */
const FOLD_LUA = `${FOLD_FN}
return fold(KEYS[1])
`;

/**
 * One batch's writes, applied only when the batch's idempotency marker was absent, then the trim
 * of the trace store (below) when the batch stored traces: one script, one round trip.
 * KEYS: done marker, traces, tmeta, idx:all, hosts, the batch's queued bytes (deleted: once the
 * results are in, a retry finds the marker and needs no bytes), the pending counters list.
 * ARGV[1]: marker ttl; ARGV[2]: the index entries as JSON (below); ARGV[3]: trim cutoff score;
 * ARGV[4]: max traces; ARGV[5]: host-list cutoff (ms); ARGV[6]: the counters entry (FOLD_FN);
 * ARGV[7]: FOLD_EVERY; ARGV[8..]: one (id, body, meta) triple per stored trace, as separate
 * arguments because bodies are binary. Every number in the JSON is a string, so Lua never
 * reformats one (it would print large scores with an exponent).
 *   z: [[zset, [score, member, score, member, ...]], ...]   ZADD
 *   t: [[zset, maxScore, stop], ...]              ZREMRANGEBYSCORE -inf (maxScore, ZREMRANGEBYRANK 0 stop
 *   e: [[key, seconds], ...]                      EXPIRE
 * Packing the entries into one argument matters: as separate commands a batch was ~3,000
 * arguments, and serialising them cost the worker more than checking the batch's samples. Members
 * of one key go in one command (Redis's own cost is mostly per call made from Lua), in chunks
 * that stay far below Lua's limit on unpacked values.
 *   f: findings (findingsArg), applied after the marker like everything else
 * Returns {1, new findings not stored for the cap} when applied, 0 when the batch had been
 * committed before.
 */
const COMMIT_LUA = `${FOLD_FN}${FINDINGS_FN}
redis.call('DEL', KEYS[6])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local d = cjson.decode(ARGV[2])
local function many(cmd, key, list)
  for s = 1, #list, 512 do redis.call(cmd, key, unpack(list, s, math.min(s + 511, #list))) end
end
local bodies, metas = {}, {}
for a = 8, #ARGV, 3 do
  bodies[#bodies + 1] = ARGV[a]
  bodies[#bodies + 1] = ARGV[a + 1]
  metas[#metas + 1] = ARGV[a]
  metas[#metas + 1] = ARGV[a + 2]
end
if #bodies > 0 then
  many('HSET', KEYS[2], bodies)
  many('HSET', KEYS[3], metas)
end
if redis.call('RPUSH', KEYS[7], ARGV[6]) >= tonumber(ARGV[7]) then fold(KEYS[7]) end
for _, g in ipairs(d.z) do many('ZADD', g[1], g[2]) end
for _, g in ipairs(d.t) do
  redis.call('ZREMRANGEBYSCORE', g[1], '-inf', '(' .. g[2])
  redis.call('ZREMRANGEBYRANK', g[1], 0, g[3])
end
for _, g in ipairs(d.e) do redis.call('EXPIRE', g[1], g[2]) end
local overflow = 0
if d.f then overflow = findings(d.f) end
if #bodies > 0 then
  ${TRIM_BODY}
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[5])
end
return {1, overflow}
`;

/**
 * JSON for the commit script. Redis's cjson refuses a lone surrogate escape (a host name from a
 * JSON upload may hold one): such strings are sent as ioredis sends any string argument, with
 * U+FFFD in its place, so the keys are the same bytes either way.
 */
function packJson(v: unknown): string {
  const json = JSON.stringify(v);
  if (!/\\ud[89a-f]/i.test(json)) return json;
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'string' ? (x as string & { toWellFormed(): string }).toWellFormed() : x));
}

/** Caps the distinct values of the host label: KEYS[1] set of labelled hosts, ARGV host, cap. */
const HOST_LABEL_LUA = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then redis.call('SADD', KEYS[1], ARGV[1]) return 1 end
return 0
`;


export interface StoreLimits {
  traceMax: number;
  traceMaxAgeSeconds: number;
  idempotencySeconds: number;
  /** Distinct findings kept (default 10,000); new ones beyond it are only counted as overflow. */
  findingsMax?: number;
}

export interface BatchWrite {
  jobId: string;
  metrics: Map<string, number>;
  traces: TraceRecord[];
  /** Per host / per kernel: field -> increment. */
  hostSummaries: Map<string, Map<string, number>>;
  kernelSummaries: Map<string, Map<string, number>>;
  /** The batch's findings, one entry per finding id (findings-batch.ts). */
  findings?: readonly FindingDelta[];
}

export interface CommitResult {
  /** false: the batch had been committed before; nothing was written. */
  applied: boolean;
  /** New findings of the batch not stored because the findings cap was reached. */
  findingsOverflow: number;
}

export interface ListQuery {
  host?: string;
  kernel?: string;
  strategy?: string;
  reason?: string;
  status?: 'failing' | 'passing';
  /** ms since the epoch */
  since?: number;
  until?: number;
  cursor?: string;
  limit: number;
}

export interface ListPage {
  items: TraceMeta[];
  next: string | null;
}

export class TraceStore {
  constructor(private readonly redis: Redis, private readonly keys: Keys, private readonly limits: StoreLimits) {}

  /** Applies the batch's writes unless already applied. Returns false for a repeat. */
  async commit(w: BatchWrite): Promise<boolean> {
    return (await this.commitBatch(w)).applied;
  }

  async commitBatch(w: BatchWrite): Promise<CommitResult> {
    const k = this.keys;
    const ttl = String(this.limits.traceMaxAgeSeconds);
    const incr: [string, string[]][] = [];
    const floats: [string, string, string][] = [];
    const zadd = new Map<string, string[]>();
    const zadd1 = (key: string, score: string, member: string): void => {
      const l = zadd.get(key);
      if (l) l.push(score, member);
      else zadd.set(key, [score, member]);
    };
    const trims: [string, string, string][] = [];
    const expire: [string, string][] = [];
    const traceArgs: (string | Buffer)[] = [];
    const metricInts: string[] = [];
    for (const [field, n] of w.metrics) {
      if (Number.isInteger(n)) metricInts.push(field, String(n));
      else floats.push([k.metrics, field, String(n)]);
    }
    if (metricInts.length) incr.push([k.metrics, metricInts]);
    const nowMs = Date.now();
    const oldestMs = nowMs - this.limits.traceMaxAgeSeconds * 1000;
    const cutoff = String(oldestMs * 1000);
    const touched = new Set<string>();
    const idxAll = k.index('all');
    for (const t of w.traces) {
      traceArgs.push(t.id, Buffer.isBuffer(t.body) ? t.body : Buffer.from(t.body.buffer, t.body.byteOffset, t.body.byteLength), metaString(t));
      const score = String(t.score);
      zadd1(idxAll, score, t.id);
      for (const key of indexKeys(k, t)) {
        zadd1(key, score, t.id);
        touched.add(key);
      }
    }
    const stop = String(-(this.limits.traceMax + 1));
    for (const key of touched) {
      trims.push([key, cutoff, stop]);
      expire.push([key, ttl]);
    }
    const summaryTtl: [string, string][] = [];
    const summary = (key: string, m: Map<string, number>): void => {
      const fs: string[] = [];
      for (const [field, n] of m) fs.push(field, String(n));
      incr.push([key, fs]);
      summaryTtl.push([key, ttl]);
    };
    for (const [h, m] of w.hostSummaries) summary(k.summary('host', h), m);
    for (const [b, m] of w.kernelSummaries) summary(k.summary('kernel', b), m);
    // The hour's bucket: every host's counts of this batch, summed (one more HINCRBY per field).
    const hour = new Map<string, number>();
    for (const m of w.hostSummaries.values()) for (const [field, n] of m) hour.set(field, (hour.get(field) ?? 0) + n);
    if (hour.size > 0) summary(k.hourSummary(nowMs - (nowMs % HOUR_MS)), hour);
    for (const h of w.hostSummaries.keys()) zadd1(k.hosts, String(nowMs), h);
    const f = w.findings ? findingsArg(k, this.limits.findingsMax ?? 10_000, w.findings) : undefined;
    const packed = packJson({ z: [...zadd], t: trims, e: expire, ...(f ? { f } : {}) });
    const counters = packJson({ i: incr, f: floats, e: summaryTtl });
    const keys = [k.done(w.jobId), k.traces, k.traceMeta, idxAll, k.hosts, k.body(w.jobId), k.pendingCounters];
    const args = [this.limits.idempotencySeconds, packed, cutoff, this.limits.traceMax, String(oldestMs), counters, FOLD_EVERY, ...traceArgs];
    const r = await runScript(this.redis, COMMIT_LUA, keys, args);
    return Array.isArray(r) ? { applied: true, findingsOverflow: Number(r[1]) } : { applied: false, findingsOverflow: 0 };
  }

  /** Applies the counters of committed batches still in the pending list; readers call it first. */
  async fold(): Promise<number> {
    return Number(await runScript(this.redis, FOLD_LUA, [this.keys.pendingCounters], []));
  }

  async isCommitted(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.done(jobId))) === 1;
  }

  async hostLabelAllowed(host: string, cap: number): Promise<boolean> {
    return (await runScript(this.redis, HOST_LABEL_LUA, [this.keys.hostLabels], [host, cap])) === 1;
  }

  /** The trace's body and meta, or null when it is unknown or was trimmed. */
  async get(id: string): Promise<StoredTrace | null> {
    const k = this.keys;
    const res = await this.redis.multi().hgetBuffer(k.traces, id).hget(k.traceMeta, id).zscore(k.index('all'), id).exec();
    if (!res) return null;
    for (const [err] of res) if (err) throw err;
    const body = res[0]![1] as Buffer | null;
    const meta = res[1]![1] as string | null;
    if (body === null || meta === null) return null;
    return { body, meta: parseMeta(id, Number(res[2]![1] ?? 0), meta) };
  }

  /**
   * Newest first. The most selective filter's index drives the scan; the others are checked on
   * each candidate's meta. A page may hold fewer than `limit` items and still have a next cursor
   * (the scan of one request is bounded); the cursor is the last score and id seen.
   */
  async list(q: ListQuery): Promise<ListPage> {
    const k = this.keys;
    const key = q.host !== undefined ? k.index('host', q.host)
      : q.kernel !== undefined ? k.index('kernel', q.kernel)
      : q.reason !== undefined ? k.index('reason', q.reason)
      : q.strategy !== undefined ? k.index('strategy', q.strategy)
      : q.status !== undefined ? k.index('status', q.status)
      : k.index('all');
    let maxScore = q.until !== undefined ? q.until * 1000 + 999 : Infinity;
    let afterId: string | undefined;
    if (q.cursor) {
      const c = decodeCursor(q.cursor);
      if (c.score <= maxScore) {
        maxScore = c.score;
        afterId = c.id;
      }
    }
    const min = q.since !== undefined ? String(q.since * 1000) : '-inf';
    const page = await pageByScore<TraceMeta>(this.redis, key, { maxScore, afterId, min }, q.limit, async (cands) => {
      const metas = await this.redis.hmget(k.traceMeta, ...cands.map((c) => c.id));
      return cands.map((c, i) => {
        const m = metas[i];
        if (m == null) return undefined;
        const meta = parseMeta(c.id, c.score, m);
        if (q.host !== undefined && meta.host !== q.host) return undefined;
        if (q.kernel !== undefined && meta.kernel !== q.kernel) return undefined;
        if (q.status !== undefined && meta.status !== q.status) return undefined;
        if (q.strategy !== undefined && !meta.strategies.includes(q.strategy)) return undefined;
        if (q.reason !== undefined && !meta.reasons.includes(q.reason)) return undefined;
        return meta;
      });
    });
    return { items: page.items, next: page.next ? encodeCursor(page.next.score, page.next.id) : null };
  }

  async summary(kind: 'host' | 'kernel', value: string): Promise<Record<string, string>> {
    await this.fold();
    return this.redis.hgetall(this.keys.summary(kind, value));
  }

  /** The hourly counters of the last `hours` hours, oldest first (hours with no batch are empty). */
  async series(hours: number, nowMs = Date.now()): Promise<{ hour: number; counts: Record<string, string> }[]> {
    await this.fold();
    const last = nowMs - (nowMs % HOUR_MS);
    const starts = Array.from({ length: hours }, (_, i) => last - (hours - 1 - i) * HOUR_MS);
    const p = this.redis.pipeline();
    for (const h of starts) p.hgetall(this.keys.hourSummary(h));
    const res = (await p.exec()) ?? [];
    return starts.map((hour, i) => {
      const [err, v] = res[i] ?? [null, {}];
      if (err) throw err;
      return { hour, counts: (v ?? {}) as Record<string, string> };
    });
  }

  async hosts(limit = 1000): Promise<string[]> {
    return this.redis.zrevrange(this.keys.hosts, 0, limit - 1);
  }

  async metricTotals(): Promise<Record<string, string>> {
    await this.fold();
    return this.redis.hgetall(this.keys.metrics);
  }
}

function indexKeys(k: Keys, t: TraceMeta): string[] {
  const out = [k.index('host', t.host), k.index('kernel', t.kernel), k.index('status', t.status)];
  for (const s of t.strategies) out.push(k.index('strategy', s));
  for (const r of t.reasons) out.push(k.index('reason', r));
  return out;
}

function metaString(t: TraceMeta): string {
  return [t.host, t.kernel, t.status, t.strategies.join(','), t.reasons.join(',')].join('\t');
}

function parseMeta(id: string, score: number, s: string): TraceMeta {
  const [host = '', kernel = '', status = 'failing', strategies = '', reasons = ''] = s.split('\t');
  return {
    id, score, host, kernel, status: status === 'passing' ? 'passing' : 'failing',
    strategies: strategies ? strategies.split(',') : [], reasons: reasons ? reasons.split(',') : [],
  };
}

export function encodeCursor(score: number, id: string): string {
  return Buffer.from(`${score}\n${id}`).toString('base64url');
}

export function decodeCursor(c: string): { score: number; id: string } {
  const s = Buffer.from(c, 'base64url').toString('utf8');
  const nl = s.indexOf('\n');
  const score = Number(s.slice(0, nl));
  if (nl < 0 || !Number.isFinite(score)) throw new CursorError();
  return { score, id: s.slice(nl + 1) };
}

export class CursorError extends Error {
  constructor() { super('cursor is not one this service returned'); }
}
