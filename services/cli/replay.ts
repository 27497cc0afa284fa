// `stacksanity replay`: the operator's side of the dead-letter list (services/pipeline/dead-letter.ts).
// Lists parked batches with their reasons, and queues one or all of them again under their own job
// id, so that a batch whose results were committed after all is not counted twice (the commit's
// done: marker). A batch leaves the list only once its new job is queued.
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { loadConfig, type ServiceConfig } from '../pipeline/config.ts';
import { DeadLetters, type ParkedBatch } from '../pipeline/dead-letter.ts';
import { JOB_NAME } from '../pipeline/job.ts';
import { Keys } from '../pipeline/keys.ts';
import { closeQuietly, connect, whenReady, DEFAULT_REDIS_URL } from '../pipeline/redis.ts';
import { redact } from '../pipeline/redis-server.ts';
import { createQueue, traceStore, type BatchQueue } from '../pipeline/queue.ts';
import type { Io } from './check.ts';

export const USAGE = `usage: stacksanity replay [--list] [--job ID | --all] [--json]
  Parked batches: accepted samples that were not checked (their workers kept dying, or an error
  no retry fixes). Env: REDIS_URL, STACKSANITY_PREFIX, STACKSANITY_QUEUE, as the service's.
  --list      show the parked batches and why (the default)
  --job ID    queue this batch again (same job id: its results still count once)
  --all       queue every parked batch again
  --json      --list as JSON
Exit 0: done (also: nothing parked); 1: a batch could not be queued; 2: usage, or Redis unreachable.
`;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
/** Job states in which a batch is already on its way to a worker: nothing to add. */
const QUEUED = new Set(['waiting', 'delayed', 'active', 'prioritized', 'waiting-children']);

export async function runReplay(args: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let o;
  try {
    o = parseArgs({ args, options: { list: { type: 'boolean', default: false }, job: { type: 'string' }, all: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } } }).values;
  } catch (e) {
    io.err(`stacksanity replay: ${(e as Error).message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (o.help) {
    io.out(USAGE);
    return 0;
  }
  if (o.job !== undefined && o.all) {
    io.err(`stacksanity replay: --job and --all exclude each other\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (o.list && (o.job !== undefined || o.all)) {
    io.err(`stacksanity replay: --list only lists; drop it to replay\n${USAGE}`);
    return EXIT_USAGE;
  }
  let cfg: ServiceConfig;
  try {
    cfg = loadConfig(env);
  } catch (e) {
    io.err(`stacksanity replay: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  const redis = connect(cfg.redisUrl, 'producer', 'stacksanity-replay');
  redis.on('error', () => { /* reported below, once */ });
  try {
    await whenReady(redis, 3000);
  } catch {
    io.err(`stacksanity replay: cannot reach Redis at ${redact(cfg.redisUrl ?? DEFAULT_REDIS_URL)} (REDIS_URL); nothing was changed\n`);
    await closeQuietly(redis);
    return EXIT_USAGE;
  }
  const dl = new DeadLetters(redis, new Keys(cfg.prefix), cfg.idempotencySeconds);
  let queue: BatchQueue | undefined;
  try {
    if (o.job === undefined && !o.all) return await list(dl, o.json, io);
    queue = createQueue(cfg, redis);
    queue.on('error', () => undefined);
    const ids = o.all ? (await dl.list()).map((b) => b.job) : [o.job!];
    if (o.all && ids.length === 0) {
      io.out('no parked batches: nothing to replay\n');
      return 0;
    }
    let failed = 0;
    for (const id of ids) {
      try {
        io.out(`${id}: ${await replayOne(cfg, redis, dl, queue, id)}\n`);
      } catch (e) {
        failed++;
        io.err(`stacksanity replay: ${id}: ${(e as Error).message}\n`);
      }
    }
    return failed > 0 ? EXIT_FAILED : 0;
  } catch (e) {
    io.err(`stacksanity replay: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  } finally {
    if (queue) await Promise.race([queue.close(), new Promise((r) => setTimeout(r, 2000))]);
    await closeQuietly(redis);
  }
}

async function list(dl: DeadLetters, json: boolean, io: Io): Promise<number> {
  const parked = await dl.list();
  if (json) {
    io.out(JSON.stringify(parked.map(({ data, ...b }) => ({ ...b, uploader: data.uploader, source: data.source })), null, 2) + '\n');
    return 0;
  }
  if (parked.length === 0) {
    io.out('no parked batches\n');
    return 0;
  }
  io.out(`${parked.length} parked batch${parked.length === 1 ? '' : 'es'} (${parked.reduce((n, b) => n + b.samples, 0)} samples accepted, not checked):\n`);
  for (const b of parked) io.out(describe(b));
  io.out('replay one with --job ID, every one with --all, once the cause is fixed (docs/operations.md#batchesdeadlettered)\n');
  return 0;
}

function describe(b: ParkedBatch): string {
  const t = (ms: number): string => new Date(ms).toISOString();
  return [
    `${b.job}  ${b.reason}${b.state === 'replaying' ? ' (replay started)' : ''}: ${b.detail}`,
    `    ${b.samples} samples from ${b.data.uploader} (${b.data.source}); ${b.bytes > 0 ? `${b.bytes} bytes kept` : 'bytes gone: cannot be replayed'}`,
    `    ${b.starts} starts, ${b.deaths} worker deaths, ${b.failures} failed attempts; first ${t(b.firstAttemptAt)}, last ${t(b.lastAttemptAt)}, parked ${t(b.parkedAt)}`,
  ].join('\n') + '\n';
}

async function replayOne(cfg: ServiceConfig, redis: Redis, dl: DeadLetters, queue: BatchQueue, id: string): Promise<string> {
  const b = await dl.get(id);
  if (!b) throw new Error(`no parked batch with job id '${id}' (stacksanity replay --list shows them)`);
  if (await traceStore(cfg, redis).isCommitted(id)) {
    await dl.remove(id);
    return 'its results were committed after all: removed from the list, nothing queued';
  }
  if ((await redis.exists(new Keys(cfg.prefix).body(id))) === 0) {
    throw new Error('its bytes are gone (they were lost before it was parked): it cannot be checked; it stays listed');
  }
  // From here a worker may run it; a crash before the end leaves it listed as "replay started",
  // and replaying it again finds its job queued.
  await dl.markReplaying(id, cfg.idempotencySeconds);
  const old = await queue.getJob(id);
  if (old) {
    const state = await old.getState();
    if (QUEUED.has(state)) {
      await dl.remove(id);
      return `already queued (${state}): removed from the list`;
    }
    // Its failed (or completed) job holds the id: BullMQ ignores an add under an id it still has.
    await old.remove();
  }
  await queue.add(JOB_NAME, b.data, { jobId: id });
  await dl.remove(id);
  return `queued again (${b.samples} samples)`;
}
