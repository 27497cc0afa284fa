// Service configuration from the environment. Every knob has a default that makes `npm start`
// work on a fresh clone; docs/operations-service.md lists them with their reasons.
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

export interface ServiceConfig {
  redisUrl: string | undefined;
  /** Hash-tagged so that every key of the service lands in one Redis Cluster slot (BullMQ's Lua needs it). */
  prefix: string;
  queueName: string;
  host: string;
  port: number;
  workers: number;
  concurrency: number;
  /** Bytes of request body (as sent, possibly gzip) and after decompression. */
  maxSamplesBody: number;
  maxSamplesDecoded: number;
  maxSymbolsBody: number;
  /** ORC table uploads: bytes as sent and after gunzip (a 385k-entry table is ~3.9 MB raw). */
  maxOrcBody: number;
  rateLimitPerMinute: number;
  readAuth: boolean;
  traceMax: number;
  traceMaxAgeSeconds: number;
  /** Share of passing samples kept in the trace store (failing ones are always kept). */
  tracePassingRatio: number;
  hostLabel: boolean;
  hostLabelCap: number;
  /** How long an upload's id stays known, so that a retried upload is neither checked nor counted twice. */
  idempotencySeconds: number;
  jobAttempts: number;
  /** A batch's lock; renewed every half of it while the worker lives (docs/operations-service.md). */
  lockDurationMs: number;
  /** How often a worker looks for batches whose lock expired (their worker died). */
  stalledIntervalMs: number;
  /** Worker deaths on one batch after which it is parked in the dead-letter list, not run again. */
  maxStalls: number;
  /** Workers use a cached kernel profile this long before asking Redis whether it changed. */
  profileRevalidateMs: number;
  keepCompletedJobs: number;
  keepFailedJobs: number;
  /** Serve the workers' series (aggregated in Redis) on the API's /metrics. */
  combinedMetrics: boolean;
  /** Distinct findings kept in Redis; occurrences of further new ones are only counted (overflow). */
  findingsMax: number;
  /** Workers use their cached set of known findings this long before asking Redis whether it changed. */
  findingsRevalidateMs: number;
  /** The results file of `stacksanity experiment` (issue 18) that the explorer's /experiment page draws. */
  experimentResults: string;
}

/** Where `npm run experiment` writes its results: docs/experiment/ of this checkout, whatever the cwd. */
export const DEFAULT_EXPERIMENT_RESULTS = fileURLToPath(new URL('../../docs/experiment/results.json', import.meta.url));

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): ServiceConfig {
  const prefix = env.STACKSANITY_PREFIX ?? '{stacksanity}';
  if (!/^\{[^{}]+\}/.test(prefix)) throw new ConfigError(`STACKSANITY_PREFIX must start with a hash tag such as {stacksanity}, not '${prefix}'`);
  return {
    redisUrl: env.REDIS_URL || undefined,
    prefix,
    queueName: env.STACKSANITY_QUEUE ?? 'samples',
    host: env.HOST ?? '127.0.0.1',
    port: int(env, 'PORT', 3000, 0),
    workers: int(env, 'STACKSANITY_WORKERS', Math.max(1, cpus().length), 0),
    concurrency: int(env, 'STACKSANITY_CONCURRENCY', 2, 1),
    maxSamplesBody: int(env, 'STACKSANITY_MAX_BODY', 32 * 1024 * 1024, 1024),
    maxSamplesDecoded: int(env, 'STACKSANITY_MAX_DECODED', 128 * 1024 * 1024, 1024),
    maxSymbolsBody: int(env, 'STACKSANITY_MAX_SYMBOLS_BODY', 64 * 1024 * 1024, 1024),
    maxOrcBody: int(env, 'STACKSANITY_MAX_ORC_BODY', 16 * 1024 * 1024, 1024),
    rateLimitPerMinute: int(env, 'STACKSANITY_RATE_LIMIT', 600, 1),
    readAuth: bool(env, 'STACKSANITY_READ_AUTH', false),
    traceMax: int(env, 'STACKSANITY_TRACE_MAX', 10000, 1),
    traceMaxAgeSeconds: int(env, 'STACKSANITY_TRACE_MAX_AGE', 7 * 24 * 3600, 1),
    tracePassingRatio: ratio(env, 'STACKSANITY_TRACE_PASSING', 0.01),
    hostLabel: bool(env, 'STACKSANITY_HOST_LABEL', false),
    hostLabelCap: int(env, 'STACKSANITY_HOST_LABEL_CAP', 50, 1),
    idempotencySeconds: int(env, 'STACKSANITY_IDEMPOTENCY_TTL', 24 * 3600, 60),
    jobAttempts: int(env, 'STACKSANITY_JOB_ATTEMPTS', 5, 1),
    lockDurationMs: int(env, 'STACKSANITY_LOCK_MS', 5000, 1000),
    stalledIntervalMs: int(env, 'STACKSANITY_STALLED_MS', 2000, 500),
    maxStalls: int(env, 'STACKSANITY_MAX_STALLS', 3, 1),
    profileRevalidateMs: int(env, 'STACKSANITY_PROFILE_REVALIDATE_MS', 1000, 0),
    keepCompletedJobs: int(env, 'STACKSANITY_KEEP_COMPLETED', 1000, 0),
    keepFailedJobs: int(env, 'STACKSANITY_KEEP_FAILED', 5000, 0),
    combinedMetrics: bool(env, 'STACKSANITY_COMBINED_METRICS', false),
    findingsMax: int(env, 'STACKSANITY_FINDINGS_MAX', 10000, 1),
    findingsRevalidateMs: int(env, 'STACKSANITY_FINDINGS_REVALIDATE_MS', 1000, 0),
    experimentResults: env.STACKSANITY_EXPERIMENT_RESULTS || DEFAULT_EXPERIMENT_RESULTS,
  };
}

export class ConfigError extends Error {}

function int(env: Env, name: string, dflt: number, min: number): number {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min}, not '${v}'`);
  return n;
}

function bool(env: Env, name: string, dflt: boolean): boolean {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(`${name} must be true or false, not '${v}'`);
}

function ratio(env: Env, name: string, dflt: number): number {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new ConfigError(`${name} must be a number between 0 and 1, not '${v}'`);
  return n;
}
