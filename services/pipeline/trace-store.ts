// The trace store in Redis: failing samples (and a sampled share of passing ones) with their
// verdicts, bounded in count and age, indexed for the list filters; per-host and per-kernel
// summaries; the metric totals. A batch's writes are applied by one Lua script that first sets
// the batch's idempotency marker: a batch retried after a crash (its results possibly committed
// already) is neither stored nor counted twice.
//
// Layout (all under the hash-tagged prefix, see keys.ts):
//   traces        HASH  trace id -> JSON (sample, verdicts, frames, kernel-style text)
//   tmeta         HASH  trace id -> "host\tkernel\tstatus\tstrategy,..\treason,.."  (list filtering)
//   idx:all       ZSET  trace id by score = receivedAt ms * 1000 + index % 1000 (newest first)
//   idx:<k>:<v>   ZSET  same scores, one per host, kernel, strategy, reason, status value
//   sum:host:<h>  HASH  samples, failing, <strategy>:<verdict> counts   (expire with the traces)
//   sum:kernel:<k> HASH idem
//   metrics       HASH  exposition line key -> total (metrics.ts)
//   done:<job>    STRING the batch was committed (expires after the idempotency window)
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';

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
  json: string;
}

/**
 * KEYS[1] done marker. ARGV: ttl, then groups "op nargs arg..." applied only when the marker was
 * absent. Returns 1 when applied, 0 when the batch had been committed before.
 */
const COMMIT_LUA = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local i = 2
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local k = tonumber(ARGV[i + 1])
  redis.call(op, unpack(ARGV, i + 2, i + 1 + k))
  i = i + 2 + k
end
return 1
`;

/**
 * Drops traces beyond the count cap or older than the cutoff from idx:all, the bodies and meta.
 * Secondary indexes are trimmed by score and size when written and skip vanished ids on read.
 * KEYS: idx:all, traces, tmeta. ARGV: cutoff score, max count.
 */
const TRIM_LUA = `
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
local excess = redis.call('ZCARD', KEYS[1]) - #old - tonumber(ARGV[2])
local ids = old
if excess > 0 then
  local more = redis.call('ZRANGE', KEYS[1], #old, #old + math.min(excess, 1000) - 1)
  for _, id in ipairs(more) do table.insert(ids, id) end
end
for s = 1, #ids, 500 do
  local chunk = {unpack(ids, s, math.min(s + 499, #ids))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[3], unpack(chunk))
end
return #ids
`;

/** Caps the distinct values of the host label: KEYS[1] set of labelled hosts, ARGV host, cap. */
const HOST_LABEL_LUA = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then redis.call('SADD', KEYS[1], ARGV[1]) return 1 end
return 0
`;

const MAX_SCAN = 5000;

export interface StoreLimits {
  traceMax: number;
  traceMaxAgeSeconds: number;
  idempotencySeconds: number;
}

export interface BatchWrite {
  jobId: string;
  metrics: Map<string, number>;
  traces: TraceRecord[];
  /** Per host / per kernel: field -> increment. */
  hostSummaries: Map<string, Map<string, number>>;
  kernelSummaries: Map<string, Map<string, number>>;
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
    const k = this.keys;
    const argv: (string | number | Buffer)[] = [this.limits.idempotencySeconds];
    const op = (name: string, ...args: (string | number)[]): void => { argv.push(name, args.length, ...args); };
    for (const [field, n] of w.metrics) {
      if (Number.isInteger(n)) op('HINCRBY', k.metrics, field, n);
      else op('HINCRBYFLOAT', k.metrics, field, n);
    }
    const nowScore = Date.now() * 1000;
    const cutoff = nowScore - this.limits.traceMaxAgeSeconds * 1000 * 1000;
    const touched = new Set<string>();
    for (const t of w.traces) {
      op('HSET', k.traces, t.id, t.json);
      op('HSET', k.traceMeta, t.id, metaString(t));
      op('ZADD', k.index('all'), t.score, t.id);
      for (const key of indexKeys(k, t)) {
        op('ZADD', key, t.score, t.id);
        touched.add(key);
      }
    }
    for (const key of touched) {
      op('ZREMRANGEBYSCORE', key, '-inf', `(${cutoff}`);
      op('ZREMRANGEBYRANK', key, 0, -(this.limits.traceMax + 1));
      op('EXPIRE', key, this.limits.traceMaxAgeSeconds);
    }
    const summaries: [string, Map<string, number>][] = [
      ...[...w.hostSummaries].map(([h, m]): [string, Map<string, number>] => [k.summary('host', h), m]),
      ...[...w.kernelSummaries].map(([b, m]): [string, Map<string, number>] => [k.summary('kernel', b), m]),
    ];
    for (const [key, m] of summaries) {
      for (const [field, n] of m) op('HINCRBY', key, field, n);
      op('EXPIRE', key, this.limits.traceMaxAgeSeconds);
    }
    for (const h of w.hostSummaries.keys()) op('ZADD', k.hosts, Date.now(), h);
    const applied = (await this.redis.eval(COMMIT_LUA, 1, k.done(w.jobId), ...argv)) === 1;
    if (applied && w.traces.length > 0) await this.trim();
    return applied;
  }

  async isCommitted(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.done(jobId))) === 1;
  }

  async trim(): Promise<number> {
    const cutoff = (Date.now() - this.limits.traceMaxAgeSeconds * 1000) * 1000;
    const k = this.keys;
    const n = Number(await this.redis.eval(TRIM_LUA, 3, k.index('all'), k.traces, k.traceMeta, cutoff, this.limits.traceMax));
    // Hosts idle past the retention age leave the host list.
    await this.redis.zremrangebyscore(k.hosts, '-inf', `(${Date.now() - this.limits.traceMaxAgeSeconds * 1000}`);
    return n;
  }

  async hostLabelAllowed(host: string, cap: number): Promise<boolean> {
    return (await this.redis.eval(HOST_LABEL_LUA, 1, this.keys.hostLabels, host, cap)) === 1;
  }

  async get(id: string): Promise<string | null> {
    return this.redis.hget(this.keys.traces, id);
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
    const items: TraceMeta[] = [];
    const chunk = Math.max(q.limit * 2, 50);
    let scanned = 0;
    let offset = 0;
    let last: { score: number; id: string } | undefined;
    let done = false;
    while (items.length < q.limit && scanned < MAX_SCAN) {
      const max = maxScore === Infinity ? '+inf' : String(maxScore);
      const raw = await this.redis.zrevrangebyscore(key, max, min, 'WITHSCORES', 'LIMIT', offset, chunk);
      const n = raw.length / 2;
      if (n === 0) {
        done = true;
        break;
      }
      const cands: { id: string; score: number }[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const id = raw[i]!;
        const score = Number(raw[i + 1]);
        // Equal scores come in reverse id order: those at or above the cursor's id were shown.
        if (afterId !== undefined && score === maxScore && id >= afterId) continue;
        cands.push({ id, score });
      }
      const metas = cands.length > 0 ? await this.redis.hmget(k.traceMeta, ...cands.map((c) => c.id)) : [];
      let i = 0;
      for (; i < cands.length && items.length < q.limit; i++) {
        const c = cands[i]!;
        last = c;
        scanned++;
        const m = metas[i];
        if (m == null) continue;
        const meta = parseMeta(c.id, c.score, m);
        if (q.host !== undefined && meta.host !== q.host) continue;
        if (q.kernel !== undefined && meta.kernel !== q.kernel) continue;
        if (q.status !== undefined && meta.status !== q.status) continue;
        if (q.strategy !== undefined && !meta.strategies.includes(q.strategy)) continue;
        if (q.reason !== undefined && !meta.reasons.includes(q.reason)) continue;
        items.push(meta);
      }
      if (n < chunk && i === cands.length) {
        done = true;
        break;
      }
      if (cands.length > 0) {
        maxScore = last!.score;
        afterId = last!.id;
        offset = 0;
      } else {
        // A run of equal scores longer than a chunk, all shown already: page past it.
        offset += chunk;
      }
    }
    return { items, next: !done && last ? encodeCursor(last.score, last.id) : null };
  }

  async summary(kind: 'host' | 'kernel', value: string): Promise<Record<string, string>> {
    return this.redis.hgetall(this.keys.summary(kind, value));
  }

  async hosts(limit = 1000): Promise<string[]> {
    return this.redis.zrevrange(this.keys.hosts, 0, limit - 1);
  }

  async metricTotals(): Promise<Record<string, string>> {
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
