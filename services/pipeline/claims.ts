// Upload claims: the atomic half of idempotency at the edge. Before the API writes anything for an
// upload it claims the upload's job id in Redis with one script. Exactly one request per job id
// wins and goes on to store the batch and queue it; every other request reads the winner's answer
// from the claim (job id, counts, digest of the request) and replies with it, or is refused when
// its request differs from the winner's. The commit's done: marker (trace-store.ts) and the BullMQ
// job itself say whether the winner's batch reached the queue; the claim alone says "being queued".
//
//   claim:<job>  STRING  "<claimed at, Redis ms> <answer JSON>"  expires after the idempotency window
//
// A claim with neither job nor marker is the winner between claim and queue.add. Requests that
// find it wait for that to end (the job appears, or the winner releases the claim after a failed
// enqueue and one of them wins instead), so a 202 with duplicate: true always names a batch that
// is in the queue. A claim older than the lease with still no job was abandoned (its API died
// mid-request, or its release failed with Redis down) and the next request takes it over.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';
import { runScript } from './redis.ts';

/** What the winner answered, as every duplicate of it is answered. */
export interface UploadAnswer {
  job: string;
  accepted: number;
  rejected: number;
  /** Digest of the request (requestDigest in app.ts): equal digests are the same upload. */
  digest: string;
}

export type ClaimResult =
  /** This request owns the job id: store the batch, queue it, then count it. */
  | { kind: 'won'; token: string }
  /** Queued before. `answer` is the winner's; absent when the batch predates its claim (older API, or the claim expired before the marker). */
  | { kind: 'duplicate'; answer?: UploadAnswer }
  /** The job id is taken by a request with another digest. */
  | { kind: 'conflict'; answer: UploadAnswer }
  /** The winner is still between claim and queue.add after the wait: retry. */
  | { kind: 'busy' };

export interface ClaimLimits {
  /** The idempotency window: how long a claim (and so the winner's answer) is kept. */
  ttlSeconds: number;
  /** A claim this old with no job was abandoned and may be taken over. */
  leaseMs: number;
  /** How long a request waits for an in-flight winner before answering busy. */
  waitMs: number;
}

/**
 * KEYS: claim, done marker, BullMQ job hash. ARGV: answer JSON, ttl seconds, lease ms.
 * Returns {state, claim value}: 'queued' (marker or job exists; value '' when no claim), 'pending'
 * (claimed, not queued yet), 'won' (this call claimed; the value is the owner's token). TIME is
 * Redis's clock, the same for every API replica.
 */
const CLAIM_LUA = `
local cur = redis.call('GET', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return {'queued', cur or ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if cur then
  local at = tonumber(string.match(cur, '^(%d+) '))
  if at and now - at < tonumber(ARGV[3]) then return {'pending', cur} end
end
local v = string.format('%d', now) .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'EX', tonumber(ARGV[2]))
return {'won', v}
`;

/**
 * KEYS: claim, body, BullMQ job hash. ARGV: the owner's token. Drops the claim and the batch's
 * bytes unless the job exists after all (the add reached Redis but its reply was lost) or the claim
 * is no longer this request's. Returns 'released', 'queued' or 'lost'.
 */
const RELEASE_LUA = `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'queued' end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
redis.call('DEL', KEYS[1], KEYS[2])
return 'released'
`;

// A winner's queue.add takes a millisecond or two: poll soon, then back off so that a crowd of
// waiting duplicates costs Redis little.
const POLL_MS = 5;
const POLL_MAX_MS = 200;

export class UploadClaims {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    /** The BullMQ job hash's key for a job id (Queue.toKey). */
    private readonly jobKey: (jobId: string) => string,
    private readonly limits: ClaimLimits,
  ) {}

  async claim(a: UploadAnswer): Promise<ClaimResult> {
    // The nonce makes the token unique even for two claims of one id in one millisecond.
    const value = JSON.stringify({ job: a.job, accepted: a.accepted, rejected: a.rejected, digest: a.digest, n: randomBytes(6).toString('hex') });
    const keys = [this.keys.claim(a.job), this.keys.done(a.job), this.jobKey(a.job)];
    const deadline = Date.now() + this.limits.waitMs;
    for (let poll = POLL_MS; ; poll = Math.min(poll * 2, POLL_MAX_MS)) {
      const [state, cur] = (await runScript(this.redis, CLAIM_LUA, keys, [value, this.limits.ttlSeconds, this.limits.leaseMs])) as [string, string];
      if (state === 'won') return { kind: 'won', token: cur };
      const winner = cur ? answerOf(cur) : undefined;
      if (winner && winner.digest !== a.digest) return { kind: 'conflict', answer: winner };
      if (state === 'queued') return winner ? { kind: 'duplicate', answer: winner } : { kind: 'duplicate' };
      if (Date.now() >= deadline) return { kind: 'busy' };
      await new Promise((r) => setTimeout(r, poll));
    }
  }

  /** After a failed enqueue: frees the job id for a retry. 'queued': the job exists after all. */
  async release(jobId: string, token: string): Promise<'released' | 'queued' | 'lost'> {
    return (await runScript(this.redis, RELEASE_LUA, [this.keys.claim(jobId), this.keys.body(jobId), this.jobKey(jobId)], [token])) as 'released' | 'queued' | 'lost';
  }
}

function answerOf(value: string): UploadAnswer | undefined {
  const sp = value.indexOf(' ');
  try {
    const o = JSON.parse(value.slice(sp + 1)) as Partial<UploadAnswer>;
    if (typeof o.job !== 'string' || typeof o.digest !== 'string') return undefined;
    return { job: o.job, accepted: Number(o.accepted), rejected: Number(o.rejected), digest: o.digest };
  } catch {
    return undefined;
  }
}
