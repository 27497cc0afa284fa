// Findings in Redis (DESIGN §3.5): failing unwinds grouped by the core's signature
// (core/check/findings.ts), counted per finding with first/last seen, capped lists of hosts,
// kernels, offsets and example traces, and a state an operator sets (new | known, with a note).
//
// Writes: a worker aggregates a batch's occurrences per finding (findings-batch.ts) and the batch's
// commit script applies them (FINDINGS_FN, in trace-store.ts's COMMIT_LUA) after it set the
// batch's `done:` marker, so a retried batch adds nothing. State changes (PUT /v1/findings/{id})
// are one script too, which keeps the per-state tallies that the stacksanity_findings gauge reads
// equal to the findings' own states.
//
// Layout (under the hash-tagged prefix, keys.ts):
//   finding:<id>          HASH  title strategy verdict reason entry fn where false_reliable (set once),
//                               count, first_seen, last_seen (ms), hosts kernels at examples (JSON
//                               arrays, capped), state, note, acknowledged_by, acknowledged_at
//   findings:by_count     ZSET  id by count            (the cap counts its members)
//   findings:by_last_seen ZSET  id by last seen (ms)
//   findings:known        SET   ids in state known     (workers' cache, findingsRevalidateMs)
//   findings:stats        HASH  <state>:<strategy> -> findings; overflow; rev
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';
import { runScript } from './redis.ts';
import { CursorError, decodeCursor, encodeCursor } from './trace-store.ts';
import { pageByScore } from './paging.ts';

/** Characters of an operator's note on a finding. */
export const MAX_NOTE = 2000;

export type FindingState = 'new' | 'known';
export const FINDING_STATES: readonly FindingState[] = ['new', 'known'];

/** KEYS: finding, known set, stats. ARGV: id, state, has note (1|0), note, who, now (ms). 0 when unknown. */
const SET_STATE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = redis.call('HMGET', KEYS[1], 'state', 'strategy')
local old, strategy = h[1] or 'new', h[2] or '?'
local new = ARGV[2]
if old ~= new then
  redis.call('HINCRBY', KEYS[3], old .. ':' .. strategy, -1)
  redis.call('HINCRBY', KEYS[3], new .. ':' .. strategy, 1)
end
redis.call('HSET', KEYS[1], 'state', new)
if new == 'known' then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'acknowledged_by', ARGV[5], 'acknowledged_at', ARGV[6])
else
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], 'acknowledged_by', 'acknowledged_at')
end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'note', ARGV[4]) end
redis.call('HINCRBY', KEYS[3], 'rev', 1)
return 1
`;

/** A finding as the API returns it. */
export interface StoredFinding {
  id: string;
  title: string;
  strategy: string;
  verdict: string;
  reason: string;
  entry: string;
  fn: string;
  where: string;
  false_reliable: boolean;
  count: number;
  first_seen: string;
  last_seen: string;
  hosts: string[];
  kernels: string[];
  /** fn+0xoff of occurrences, first seen first. */
  offsets: string[];
  examples: { id: string; url: string }[];
  state: FindingState;
  note: string | null;
  acknowledged_by: string | null;
  acknowledged_at: string | null;
}

export interface FindingsQuery {
  state?: FindingState;
  strategy?: string;
  kernel?: string;
  sort: 'count' | 'last_seen';
  cursor?: string;
  limit: number;
}


export const FINDING_ID_RE = /^[0-9a-f]{16}$/;

export class FindingsStore {
  private knownCache: { rev: string | null; ids: ReadonlySet<string>; checkedAt: number } | undefined;

  constructor(private readonly redis: Redis, private readonly keys: Keys) {}

  /**
   * The ids of known findings, for labelling failures. Cached: Redis is asked for the state
   * revision at most every `maxAgeMs`, and for the set only when the revision moved.
   */
  async known(maxAgeMs: number): Promise<ReadonlySet<string>> {
    const now = Date.now();
    const c = this.knownCache;
    if (c && maxAgeMs > 0 && now - c.checkedAt < maxAgeMs) return c.ids;
    const rev = await this.redis.hget(this.keys.findingsStats, 'rev');
    if (c && c.rev === rev) {
      c.checkedAt = now;
      return c.ids;
    }
    const ids = rev === null ? new Set<string>() : new Set(await this.redis.smembers(this.keys.findingsKnown));
    this.knownCache = { rev, ids, checkedAt: now };
    return ids;
  }

  /** null when there is no such finding. */
  async setState(id: string, state: FindingState, note: string | undefined, who: string): Promise<StoredFinding | null> {
    const k = this.keys;
    const r = await runScript(this.redis, SET_STATE_LUA, [k.finding(id), k.findingsKnown, k.findingsStats], [id, state, note === undefined ? '0' : '1', note ?? '', who, String(Date.now())]);
    return r === 1 ? this.get(id) : null;
  }

  async get(id: string): Promise<StoredFinding | null> {
    const h = await this.redis.hgetall(this.keys.finding(id));
    if (!h.title) return null;
    const f = parseFinding(id, h);
    await this.pruneExamples([f]);
    return f;
  }

  /**
   * Most frequent (or most recently seen) first. Filters are checked on each candidate; one
   * request looks at a bounded number of findings, so a page may be short and still have a next
   * cursor (the last score and id seen, as the trace list's).
   */
  async list(q: FindingsQuery): Promise<{ items: StoredFinding[]; next: string | null }> {
    const key = this.keys.findingsBy(q.sort);
    let maxScore = Infinity;
    let afterId: string | undefined;
    if (q.cursor) {
      const c = decodeCursor(q.cursor);
      maxScore = c.score;
      afterId = c.id;
    }
    const page = await pageByScore<StoredFinding>(this.redis, key, { maxScore, afterId }, q.limit, async (cands) => {
      const pipe = this.redis.pipeline();
      for (const c of cands) pipe.hgetall(this.keys.finding(c.id));
      const rows = (await pipe.exec()) ?? [];
      return cands.map((c, i) => {
        const [err, h] = rows[i] ?? [null, null];
        if (err) throw err;
        const row = h as Record<string, string> | null;
        if (!row?.title) return undefined;
        const f = parseFinding(c.id, row);
        if (q.state !== undefined && f.state !== q.state) return undefined;
        if (q.strategy !== undefined && f.strategy !== q.strategy) return undefined;
        if (q.kernel !== undefined && !f.kernels.includes(q.kernel)) return undefined;
        return f;
      });
    });
    const items = page.items;
    await this.pruneExamples(items);
    return { items, next: page.next ? encodeCursor(page.next.score, page.next.id) : null };
  }

  /** `<state>:<strategy>` -> findings, from the tallies the scripts keep. */
  async stats(): Promise<{ byState: { state: FindingState; strategy: string; n: number }[]; overflow: number; total: number }> {
    const [h, total] = await Promise.all([this.redis.hgetall(this.keys.findingsStats), this.redis.zcard(this.keys.findingsBy('count'))]);
    const byState: { state: FindingState; strategy: string; n: number }[] = [];
    for (const [k, v] of Object.entries(h)) {
      const c = k.indexOf(':');
      if (c < 0) continue;
      const state = k.slice(0, c);
      if (state === 'new' || state === 'known') byState.push({ state, strategy: k.slice(c + 1), n: Number(v) });
    }
    return { byState, overflow: Number(h.overflow ?? 0), total };
  }

  /** Example traces evicted from the trace store since are left out: their links would 404. */
  private async pruneExamples(fs: StoredFinding[]): Promise<void> {
    const ids = fs.flatMap((f) => f.examples.map((e) => e.id));
    if (ids.length === 0) return;
    const have = await this.redis.hmget(this.keys.traceMeta, ...ids);
    const alive = new Set(ids.filter((_, i) => have[i] !== null));
    for (const f of fs) f.examples = f.examples.filter((e) => alive.has(e.id));
  }
}

export { CursorError };

function parseFinding(id: string, h: Record<string, string>): StoredFinding {
  const iso = (ms: string | undefined): string => new Date(Number(ms ?? 0)).toISOString();
  return {
    id, title: h.title ?? '', strategy: h.strategy ?? '', verdict: h.verdict ?? '', reason: h.reason ?? '', entry: h.entry ?? '',
    fn: h.fn ?? '', where: h.where ?? '', false_reliable: h.false_reliable === '1',
    count: Number(h.count ?? 0), first_seen: iso(h.first_seen), last_seen: iso(h.last_seen),
    hosts: list(h.hosts), kernels: list(h.kernels), offsets: list(h.at),
    examples: list(h.examples).map((t) => ({ id: t, url: `/v1/traces/${t}` })),
    state: h.state === 'known' ? 'known' : 'new',
    note: h.note ?? null,
    acknowledged_by: h.acknowledged_by ?? null,
    acknowledged_at: h.acknowledged_at !== undefined ? iso(h.acknowledged_at) : null,
  };
}

function list(s: string | undefined): string[] {
  if (!s) return [];
  try {
    const v = JSON.parse(s) as unknown;
    // cjson writes an empty table as {}.
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}
