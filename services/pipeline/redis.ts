// ioredis connections, one per role, because the roles want opposite failure behaviour:
// - producer (API): fail fast while Redis is down so that an upload gets 503 instead of hanging
//   (enableOfflineQueue false, few retries);
// - worker: wait out an outage (maxRetriesPerRequest null, as BullMQ requires for workers);
// Each process closes the connections it made (BullMQ does not close a connection it was given).
import { createHash } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export type RedisRole = 'producer' | 'worker';

export function redisOptions(role: RedisRole): RedisOptions {
  const common: RedisOptions = {
    lazyConnect: false,
    // Reconnect forever with a capped backoff: recovery must not need a restart.
    retryStrategy: (times: number) => Math.min(200 * times, 2000),
    connectTimeout: 2000,
  };
  return role === 'producer'
    ? { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 1 }
    : { ...common, maxRetriesPerRequest: null, enableOfflineQueue: true };
}

/**
 * REDIS_URL=redis-cluster://host:port[,host:port...] selects Redis Cluster: the seed nodes; the
 * client discovers the rest. Every key carries the hash-tagged prefix, so each of BullMQ's and the
 * trace store's multi-key scripts stays within one slot.
 */
export const CLUSTER_SCHEME = 'redis-cluster://';

export function clusterNodes(url: string): { host: string; port: number }[] | undefined {
  if (!url.startsWith(CLUSTER_SCHEME)) return undefined;
  return url.slice(CLUSTER_SCHEME.length).replace(/\/.*$/, '').split(',').filter(Boolean).map((hp) => {
    const i = hp.lastIndexOf(':');
    return { host: i < 0 ? hp : hp.slice(0, i), port: i < 0 ? 6379 : Number(hp.slice(i + 1)) };
  });
}

export function connect(url: string | undefined, role: RedisRole, name: string): Redis {
  const nodes = clusterNodes(url ?? '');
  if (nodes) {
    const opts = redisOptions(role);
    const cluster = new Cluster(nodes, {
      redisOptions: { ...opts, connectionName: name },
      enableOfflineQueue: opts.enableOfflineQueue ?? true,
      clusterRetryStrategy: (times: number) => Math.min(200 * times, 2000),
    });
    // ioredis's Cluster speaks the same commands as Redis (and BullMQ takes either); the service
    // only uses that common surface, so it is handed around under one type.
    return cluster as unknown as Redis;
  }
  return new Redis(url ?? DEFAULT_REDIS_URL, { ...redisOptions(role), connectionName: name });
}

/** Resolves once the connection is ready, or rejects after `ms`. */
export function whenReady(r: Redis, ms = 5000): Promise<void> {
  if (r.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = (): void => { cleanup(); resolve(); };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`Redis not ready after ${ms} ms (status ${r.status})`)); }, ms);
    const cleanup = (): void => { clearTimeout(timer); r.off('ready', onReady); };
    r.on('ready', onReady);
  });
}

/** quit() with a bound: quit waits for a reply that never comes while Redis is down. */
export async function closeQuietly(r: Redis, ms = 2000): Promise<void> {
  if (r.status === 'end') return;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([r.quit().catch(() => undefined), new Promise((res) => { timer = setTimeout(res, ms); })]);
  } finally {
    if (timer) clearTimeout(timer);
    r.disconnect();
  }
}

const shas = new Map<string, string>();

/**
 * Runs a Lua script by its SHA1 (EVALSHA), sending the body only when Redis does not have it yet
 * (NOSCRIPT: a restart, SCRIPT FLUSH, another Cluster node). The commit script runs once per
 * batch: sending and hashing its body every time was Redis CPU spent on nothing.
 */
export async function runScript(r: Redis, body: string, keys: readonly string[], args: readonly (string | number | Buffer)[]): Promise<unknown> {
  let sha = shas.get(body);
  if (sha === undefined) shas.set(body, (sha = createHash('sha1').update(body).digest('hex')));
  try {
    return await r.evalsha(sha, keys.length, ...keys, ...args);
  } catch (e) {
    if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
    return r.eval(body, keys.length, ...keys, ...args);
  }
}
