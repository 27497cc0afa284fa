// The dead-letter list: accepted batches that could not be checked, parked with their bytes and
// the reason, until an operator replays them (`stacksanity replay`). An accepted sample is then
// either checked or visible here; BullMQ never gets to fail a batch on its own.
//
// Why we count attempts ourselves rather than rely on BullMQ's stalled counter: a batch that
// kills its worker (OOM, a crash in native code) cannot run any code at its death. So every start
// is recorded in Redis before the batch is touched (`begin`), and every attempt that ends, well or
// badly, says so (`end`). A start that finds earlier starts that never ended knows how many
// workers died on this batch; at the limit it parks the batch instead of running it. That holds
// whatever BullMQ's stall check does internally, as long as BullMQ's own limit is above ours
// (queue.ts sets it one higher; its "stalled more than allowable limit" failure is parked too).
import type { Redis } from 'ioredis';
import type { BatchJob } from './job.ts';
import type { Keys } from './keys.ts';
import { runScript } from './redis.ts';

/** The reason label of stacksanity_batches_dead_lettered_total: a closed set. */
export const DEAD_LETTER_REASONS = ['stalled', 'unrecoverable'] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

export interface ParkedBatch {
  job: string;
  reason: DeadLetterReason;
  /** What happened, for a person: "stalled 3 times: its worker died each time", or the error. */
  detail: string;
  /** Starts of the batch on a worker, this parking one included. */
  starts: number;
  /** Starts whose worker died before the attempt ended. */
  deaths: number;
  /** Attempts that ended in an error (BullMQ's attemptsMade). */
  failures: number;
  firstAttemptAt: number;
  lastAttemptAt: number;
  parkedAt: number;
  /** Samples the API accepted in the batch. */
  samples: number;
  /** Size of the kept bytes; 0 when they were already gone (nothing to replay). */
  bytes: number;
  /** 'replaying' between a replay's start and the new job being queued. */
  state: 'parked' | 'replaying';
  data: BatchJob;
}

export interface Attempt {
  /** Earlier starts of this batch whose worker never said the attempt ended. */
  deaths: number;
  /** The batch is parked (a worker died between parking it and failing its job). */
  parked: boolean;
}

// KEYS: attempts(id), deadLetter(id). ARGV: now ms, ttl s.
// Returns {open starts before this one, 1 if parked}.
const BEGIN_LUA = `
if redis.call('HGET', KEYS[2], 'state') == 'parked' then return {0, 1} end
local open = redis.call('HINCRBY', KEYS[1], 'open', 1)
redis.call('HINCRBY', KEYS[1], 'starts', 1)
redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {open - 1, 0}
`;

// KEYS: attempts(id). An attempt ended by an error that BullMQ retries: not a death.
const END_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('HGET', KEYS[1], 'open') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'open', -1)
end
return 1
`;

// KEYS: deadLetters, deadLetter(id), attempts(id), body(id), done(id), totals.
// ARGV: id, reason, detail, now ms, data json, samples, failures, deaths (-1: from the attempts).
// Moves the batch aside in one step: record, index, counter, bytes kept (no expiry), attempts gone.
// Returns 1 parked, 0 already parked, -1 already committed (nothing to park).
const PARK_LUA = `
if redis.call('HGET', KEYS[2], 'state') == 'parked' then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DEL', KEYS[3])
  return -1
end
local a = redis.call('HMGET', KEYS[3], 'open', 'starts', 'first', 'last')
local starts = tonumber(a[2] or '0')
local deaths = tonumber(ARGV[8])
if deaths < 0 then deaths = math.max(0, tonumber(a[1] or '0') - 1) end
local bytes = redis.call('STRLEN', KEYS[4])
if bytes > 0 then redis.call('PERSIST', KEYS[4]) end
redis.call('HSET', KEYS[2], 'job', ARGV[1], 'reason', ARGV[2], 'detail', ARGV[3], 'starts', starts,
  'deaths', deaths, 'failures', ARGV[7], 'first', a[3] or ARGV[4], 'last', a[4] or ARGV[4],
  'parkedAt', ARGV[4], 'samples', ARGV[6], 'bytes', bytes, 'state', 'parked', 'data', ARGV[5])
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
redis.call('DEL', KEYS[3])
return 1
`;

export class DeadLetters {
  constructor(private readonly redis: Redis, private readonly keys: Keys, private readonly attemptsTtlSeconds: number) {}

  /** Records a start of the batch; call before touching it. */
  async begin(jobId: string, now = Date.now()): Promise<Attempt> {
    const [deaths, parked] = (await runScript(this.redis, BEGIN_LUA, [this.keys.attempts(jobId), this.keys.deadLetter(jobId)], [now, this.attemptsTtlSeconds])) as [number, number];
    return { deaths, parked: parked === 1 };
  }

  /** The attempt ended in an error that will be retried (or in a delay): it was not a death. */
  async endFailed(jobId: string): Promise<void> {
    await runScript(this.redis, END_LUA, [this.keys.attempts(jobId)], []);
  }

  /** The batch is done (committed): its attempt record goes. */
  async endDone(jobId: string): Promise<void> {
    await this.redis.del(this.keys.attempts(jobId));
  }

  /**
   * Parks the batch. `deaths` undefined: counted from the attempts record (open starts but this
   * one). Returns what happened: parked now, parked before, or committed already (not parked).
   */
  async park(jobId: string, p: { reason: DeadLetterReason; detail: string; data: BatchJob; failures: number; deaths?: number }, now = Date.now()): Promise<'parked' | 'already' | 'committed'> {
    const k = this.keys;
    const r = Number(await runScript(this.redis, PARK_LUA,
      [k.deadLetters, k.deadLetter(jobId), k.attempts(jobId), k.body(jobId), k.done(jobId), k.deadLetterTotals],
      [jobId, p.reason, p.detail, now, JSON.stringify(p.data), p.data.accepted ?? 0, p.failures, p.deaths ?? -1]));
    return r === 1 ? 'parked' : r === 0 ? 'already' : 'committed';
  }

  async count(): Promise<number> {
    return this.redis.zcard(this.keys.deadLetters);
  }

  /** Batches ever parked, by reason (every reason present, 0 when none). */
  async totals(): Promise<Record<DeadLetterReason, number>> {
    const h = await this.redis.hgetall(this.keys.deadLetterTotals);
    const out = {} as Record<DeadLetterReason, number>;
    for (const r of DEAD_LETTER_REASONS) out[r] = Number(h[r] ?? 0);
    return out;
  }

  /** Parked batches, oldest first. */
  async list(): Promise<ParkedBatch[]> {
    const ids = await this.redis.zrange(this.keys.deadLetters, 0, -1);
    const out: ParkedBatch[] = [];
    for (const id of ids) {
      const b = await this.get(id);
      if (b) out.push(b);
    }
    return out;
  }

  async get(jobId: string): Promise<ParkedBatch | undefined> {
    const h = await this.redis.hgetall(this.keys.deadLetter(jobId));
    if (!h.job) return undefined;
    return {
      job: h.job,
      reason: h.reason as DeadLetterReason,
      detail: h.detail ?? '',
      starts: Number(h.starts),
      deaths: Number(h.deaths),
      failures: Number(h.failures),
      firstAttemptAt: Number(h.first),
      lastAttemptAt: Number(h.last),
      parkedAt: Number(h.parkedAt),
      samples: Number(h.samples),
      bytes: Number(h.bytes),
      state: h.state === 'replaying' ? 'replaying' : 'parked',
      data: JSON.parse(h.data ?? '{}') as BatchJob,
    };
  }

  /** First step of a replay: workers may run the batch again; its bytes expire like a new upload's. */
  async markReplaying(jobId: string, bodyTtlSeconds: number): Promise<void> {
    await this.redis.multi()
      .hset(this.keys.deadLetter(jobId), 'state', 'replaying')
      .expire(this.keys.body(jobId), bodyTtlSeconds)
      .exec();
  }

  /** Last step of a replay (the new job is queued) or of a drop. */
  async remove(jobId: string): Promise<void> {
    await this.redis.multi().zrem(this.keys.deadLetters, jobId).del(this.keys.deadLetter(jobId)).exec();
  }
}
