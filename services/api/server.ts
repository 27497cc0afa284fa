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
  // BullMQ needs Redis up when the queue is created with the offline queue disabled.
  await whenReady(redis, 10_000);
  const queue = createQueue(cfg, redis);
  queue.on('error', () => undefined);
  const store = traceStore(cfg, redis);
  const deadLetters = new DeadLetters(redis, new Keys(cfg.prefix), cfg.idempotencySeconds);
  const metrics = createApiMetrics({
    counts: () => queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children'),
    oldestWaiting: async () => (await queue.getJobs(['waiting'], 0, 0, true))[0]?.timestamp,
    deadLetters: async () => ({ parked: await deadLetters.count(), totals: await deadLetters.totals() }),
  }, cfg.queueName);
  const app = await buildApp({ cfg, redis, queue, store, tokens, metrics, ...(opts.adminTokens ? { adminTokens: opts.adminTokens } : {}), ...(opts.logLevel ? { logLevel: opts.logLevel } : {}), ...(opts.logStream ? { logStream: opts.logStream } : {}) });
  let url = '';
  if (opts.listen !== false) url = await app.listen({ host: cfg.host, port: cfg.port });
  else await app.ready();
  return {
    app, queue, redis, url,
    async close() {
      // Stop taking requests, let in-flight ones finish (their 202s depend on Redis), then disconnect.
      await app.close();
      await Promise.race([queue.close(), new Promise((r) => setTimeout(r, 3000))]);
      await closeQuietly(redis);
    },
  };
}
