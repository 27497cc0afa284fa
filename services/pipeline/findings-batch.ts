// A batch's findings on their way to Redis: the worker's per-batch aggregation (one update per
// finding per batch, not per sample) and the commit script's part that applies it. Kept apart
// from findings.ts (the reads and state changes) because the trace store's commit script
// includes FINDINGS_FN, and findings.ts reads through the trace store's cursor helpers.
import type { FindingSignature } from '../core/check/findings.ts';
import type { Keys } from './keys.ts';

/** Caps of a finding's lists: what an operator reads, not a census (the count is exact). */
export const MAX_HOSTS = 20;
export const MAX_KERNELS = 20;
export const MAX_OFFSETS = 10;
export const MAX_EXAMPLES = 5;

/** One finding's occurrences in one batch. */
export interface FindingDelta {
  sig: Omit<FindingSignature, 'at'>;
  count: number;
  /** ms: the batch's receive time (the same for every occurrence of a batch; a retry repeats it). */
  first: number;
  last: number;
  hosts: string[];
  kernels: string[];
  at: string[];
  /** Trace ids of occurrences whose trace was stored, newest (highest index) first. */
  examples: string[];
}

/** Occurrences of a batch, one entry per finding id: one update per finding per batch in Redis. */
export class FindingsBatch {
  readonly byId = new Map<string, FindingDelta>();

  add(sig: FindingSignature, host: string, kernel: string, atMs: number, traceId: string | undefined): void {
    let d = this.byId.get(sig.id);
    if (!d) {
      const { at: _at, ...rest } = sig;
      d = { sig: rest, count: 0, first: atMs, last: atMs, hosts: [], kernels: [], at: [], examples: [] };
      this.byId.set(sig.id, d);
    }
    d.count++;
    if (atMs < d.first) d.first = atMs;
    if (atMs > d.last) d.last = atMs;
    addCapped(d.hosts, host, MAX_HOSTS);
    addCapped(d.kernels, kernel, MAX_KERNELS);
    addCapped(d.at, sig.at, MAX_OFFSETS);
    if (traceId !== undefined && d.examples[0] !== traceId) {
      // Samples come in index order: the newest is the last one seen.
      d.examples.unshift(traceId);
      if (d.examples.length > MAX_EXAMPLES) d.examples.pop();
    }
  }

  get size(): number {
    return this.byId.size;
  }
}

function addCapped(list: string[], v: string, cap: number): void {
  if (list.length < cap && !list.includes(v)) list.push(v);
}

/**
 * The commit script's part (needs `d.f`, see findingsArg). Returns how many new findings were not
 * stored because the cap was reached. Lists are JSON arrays in the hash; Lua's cjson writes an
 * empty table as {}, so empty lists are written as the literal [] instead. Every number crosses
 * as a string and is written back as that string (Lua would print ms timestamps with an exponent).
 */
export const FINDINGS_FN = `
local function jlist(s)
  if not s then return {} end
  local ok, t = pcall(cjson.decode, s)
  if ok and type(t) == 'table' then return t end
  return {}
end
local function jenc(t)
  if #t == 0 then return '[]' end
  return cjson.encode(t)
end
local function merge_first(list, add, cap)
  local seen = {}
  for _, v in ipairs(list) do seen[v] = true end
  for _, v in ipairs(add) do
    if #list >= cap then break end
    if not seen[v] then list[#list + 1] = v; seen[v] = true end
  end
  return list
end
local function merge_newest(list, add, cap)
  local out, seen = {}, {}
  for _, src in ipairs({add, list}) do
    for _, v in ipairs(src) do
      if #out < cap and not seen[v] then out[#out + 1] = v; seen[v] = true end
    end
  end
  return out
end
local function findings(F)
  local cap = tonumber(F.cap)
  local caps = F.caps
  local overflow = 0
  for _, it in ipairs(F.items) do
    local key, id = it.k, it.id
    local exists = redis.call('EXISTS', key) == 1
    if not exists and redis.call('ZCARD', F.bc) >= cap then
      overflow = overflow + 1
      redis.call('HINCRBY', F.stats, 'overflow', it.n)
    else
      if not exists then
        redis.call('HSET', key, 'state', 'new', 'first_seen', it.t0, 'last_seen', it.t1, unpack(it.m))
        redis.call('HINCRBY', F.stats, 'new:' .. it.s, 1)
        redis.call('ZADD', F.bl, it.t1, id)
      else
        local h = redis.call('HMGET', key, 'first_seen', 'last_seen')
        if tonumber(it.t0) < tonumber(h[1] or it.t0) then redis.call('HSET', key, 'first_seen', it.t0) end
        if tonumber(it.t1) > tonumber(h[2] or '0') then
          redis.call('HSET', key, 'last_seen', it.t1)
          redis.call('ZADD', F.bl, it.t1, id)
        end
      end
      redis.call('HINCRBY', key, 'count', it.n)
      redis.call('ZINCRBY', F.bc, it.n, id)
      local l = redis.call('HMGET', key, 'hosts', 'kernels', 'at', 'examples')
      redis.call('HSET', key,
        'hosts', jenc(merge_first(jlist(l[1]), it.h, tonumber(caps[1]))),
        'kernels', jenc(merge_first(jlist(l[2]), it.b, tonumber(caps[2]))),
        'at', jenc(merge_first(jlist(l[3]), it.a, tonumber(caps[3]))),
        'examples', jenc(merge_newest(jlist(l[4]), it.x, tonumber(caps[4]))))
    end
  end
  return overflow
end
`;

/** The commit script's `f` argument for a batch's findings (undefined when it has none). */
export function findingsArg(keys: Keys, cap: number, deltas: readonly FindingDelta[]): Record<string, unknown> | undefined {
  const items: Record<string, unknown>[] = [];
  for (const d of deltas) {
    const s = d.sig;
    items.push({
      k: keys.finding(s.id), id: s.id, s: s.strategy, n: String(d.count), t0: String(d.first), t1: String(d.last),
      m: ['title', s.title, 'strategy', s.strategy, 'verdict', s.verdict, 'reason', s.reason, 'entry', s.entry, 'fn', s.fn, 'where', s.where, 'false_reliable', s.falseReliable ? '1' : '0'],
      h: d.hosts, b: d.kernels, a: d.at, x: d.examples,
    });
  }
  if (items.length === 0) return undefined;
  return {
    cap: String(cap), caps: [String(MAX_HOSTS), String(MAX_KERNELS), String(MAX_OFFSETS), String(MAX_EXAMPLES)],
    bc: keys.findingsBy('count'), bl: keys.findingsBy('last_seen'), stats: keys.findingsStats, items,
  };
}
