// Runs the API: connections, queue, metrics and the fastify app, with an orderly close.
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { ServiceConfig } from '../pipeline/config.ts';
import { createApiMetrics } from '../pipeline/metrics.ts';
import { createQueue, traceStore, type BatchQueue } from '../pipeline/queue.ts';
import { closeQuietly, connect, whenReady } from '../pipeline/redis.ts';
import { buildApp } from './app.ts';
import { DeadLetters } from '../pipeline/dead-letter.ts';
import { Keys } from '../pipeline/keys.ts';
import type { TokenSet } from './tokens.ts';

export interface ApiServer {
  app: FastifyInstance;
  queue: BatchQueue;
  redis: Redis;
  url: string;
  close(): Promise<void>;
}

/** adminTokens: the scope that may change findings (default: from the environment, TokenSet.adminFromEnv). */
export async function startApi(cfg: ServiceConfig, tokens: TokenSet, opts: { listen?: boolean; logLevel?: string; logStream?: NodeJS.WritableStream; adminTokens?: TokenSet } = {}): Promise<ApiServer> {
  const redis = connect(cfg.redisUrl, 'producer', 'stacksanity-api');
  redis.on('error', () => { /* reconnects by itself; requests answer 503 meanwhile */ });
  let queue: BatchQueue | undefined;
  let app: FastifyInstance | undefined;
  let url = '';
  try {
    // BullMQ needs Redis up when the queue is created with the offline queue disabled.
    await whenReady(redis, 10_000);
    const q = createQueue(cfg, redis);
    queue = q;
    q.on('error', () => undefined);
    const store = traceStore(cfg, redis);
    const deadLetters = new DeadLetters(redis, new Keys(cfg.prefix), cfg.idempotencySeconds);
    const metrics = createApiMetrics({
      counts: () => q.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children'),
      oldestWaiting: async () => (await q.getJobs(['waiting'], 0, 0, true))[0]?.timestamp,
      deadLetters: async () => ({ parked: await deadLetters.count(), totals: await deadLetters.totals() }),
    }, cfg.queueName, { redis, keys: new Keys(cfg.prefix), combined: cfg.combinedMetrics });
    app = await buildApp({ cfg, redis, queue: q, store, tokens, metrics, ...(opts.adminTokens ? { adminTokens: opts.adminTokens } : {}), ...(opts.logLevel ? { logLevel: opts.logLevel } : {}), ...(opts.logStream ? { logStream: opts.logStream } : {}) });
    if (opts.listen !== false) url = await app.listen({ host: cfg.host, port: cfg.port });
    else await app.ready();
  } catch (e) {
    // A start that fails (Redis never ready, the port taken) must leave nothing open: a live
    // connection or server would keep the process up after the error was printed.
    await app?.close().catch(() => undefined);
    if (queue) await Promise.race([queue.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    await closeQuietly(redis, 500);
    throw e;
  }
  const queueOpen = queue;
  const appOpen = app;
  return {
    app: appOpen, queue: queueOpen, redis, url,
    async close() {
      // Stop taking requests, let in-flight ones finish (their 202s depend on Redis), then disconnect.
      await appOpen.close();
      await Promise.race([queueOpen.close(), new Promise((r) => setTimeout(r, 3000).unref())]);
      await closeQuietly(redis);
    },
  };
}
