// Keyset paging over a Redis sorted set, newest (highest score) first, with filters checked on
// each candidate: shared by the trace list and the findings list. One request looks at a bounded
// number of members, so a page may be short and still carry a next cursor (the last score and
// id seen).
import type { Redis } from 'ioredis';

/** Members one request may look at before it returns a (possibly short) page. */
export const MAX_SCAN = 5000;

export interface ScorePage<T> {
  items: T[];
  /** The last member looked at, for the next cursor; undefined when the set is exhausted. */
  next: { score: number; id: string } | undefined;
}

/**
 * Walks `key` from (maxScore, afterId) downwards to `min`, loading candidates a chunk at a time
 * with `load` (undefined: the member is gone or filtered out) until `limit` items are found.
 */
export async function pageByScore<T>(
  redis: Redis,
  key: string,
  from: { maxScore: number; afterId: string | undefined; min?: string },
  limit: number,
  load: (cands: readonly { id: string; score: number }[]) => Promise<(T | undefined)[]>,
): Promise<ScorePage<T>> {
  let { maxScore, afterId } = from;
  const min = from.min ?? '-inf';
  const items: T[] = [];
  const chunk = Math.max(limit * 2, 50);
  let scanned = 0;
  let offset = 0;
  let last: { score: number; id: string } | undefined;
  while (items.length < limit && scanned < MAX_SCAN) {
    const raw = await redis.zrevrangebyscore(key, maxScore === Infinity ? '+inf' : String(maxScore), min, 'WITHSCORES', 'LIMIT', offset, chunk);
    const n = raw.length / 2;
    if (n === 0) return { items, next: undefined };
    const cands: { id: string; score: number }[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const id = raw[i]!;
      const score = Number(raw[i + 1]);
      // Equal scores come in reverse id order: those at or above the cursor's id were shown.
      if (afterId !== undefined && score === maxScore && id >= afterId) continue;
      cands.push({ id, score });
    }
    const loaded = cands.length > 0 ? await load(cands) : [];
    let i = 0;
    for (; i < cands.length && items.length < limit; i++) {
      last = cands[i]!;
      scanned++;
      const item = loaded[i];
      if (item !== undefined) items.push(item);
    }
    if (n < chunk && i === cands.length) return { items, next: undefined };
    if (cands.length > 0) {
      maxScore = last!.score;
      afterId = last!.id;
      offset = 0;
    } else {
      // A run of equal scores longer than a chunk, all shown already: page past it.
      offset += chunk;
    }
  }
  return { items, next: last };
}
