// The BullMQ queue of sample batches and the checker worker that drains it.
import { DelayedError, Queue, Worker, UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import type { ServiceConfig } from './config.ts';
import { JOB_NAME, decodeBody, parseBatch, sampleIndices, type BatchJob, type BatchResult } from './job.ts';
import { BATCH_VERSION, batchFormVersion, isEncodedBatch } from '../core/dump/batch-form.ts';
import { decodeBatch } from '../core/dump/batch-decode.ts';
import { DumpError } from '../core/dump/errors.ts';
import type { Sample } from '../core/dump/sample.ts';
import { Keys } from './keys.ts';
import { KernelStore } from './kernels.ts';
import { SeriesTotals, createProcessRegistry } from './metrics.ts';
import { connect, closeQuietly } from './redis.ts';
import { TraceStore } from './trace-store.ts';
import { FindingsStore } from './findings.ts';
import { checkBatch } from './check-batch.ts';
import { checkerBuild } from './checker-build.ts';
import { DeadLetters } from './dead-letter.ts';

export type BatchQueue = Queue<BatchJob, BatchResult, typeof JOB_NAME>;

export function createQueue(cfg: ServiceConfig, connection: Redis): BatchQueue {
  return new Queue<BatchJob, BatchResult, typeof JOB_NAME>(cfg.queueName, {
    connection,
    prefix: cfg.prefix,
    // Bounded history: completed and failed jobs are evicted by count and age.
    defaultJobOptions: {
      attempts: cfg.jobAttempts,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: { count: cfg.keepCompletedJobs, age: 24 * 3600 },
      removeOnFail: { count: cfg.keepFailedJobs, age: 7 * 24 * 3600 },
    },
    streams: { events: { maxLen: 1000 } },
  });
}

export function traceStore(cfg: ServiceConfig, redis: Redis, keys = new Keys(cfg.prefix)): TraceStore {
  return new TraceStore(redis, keys, { traceMax: cfg.traceMax, traceMaxAgeSeconds: cfg.traceMaxAgeSeconds, idempotencySeconds: cfg.idempotencySeconds, findingsMax: cfg.findingsMax });
}

/** A pause at a named point of the processor, so tests can kill a worker mid-batch (STACKSANITY_FAULT=point:ms). */
export interface Fault {
  point: 'before-commit' | 'after-commit';
  ms: number;
}

/**
 * How long a batch in a newer binary form than this worker reads waits before it is offered again.
 * During a rolling upgrade that updated the API first, such batches wait for an upgraded worker
 * instead of failing: what the API accepted is not lost. They wait at most as long as their bytes
 * live (the idempotency TTL); then the job fails with "the bytes are gone".
 */
export const NEWER_FORM_RETRY_MS = 30_000;

export function parseFault(s: string | undefined): Fault | undefined {
  const m = s ? /^(before-commit|after-commit):(\d+)$/.exec(s) : null;
  return m ? { point: m[1] as Fault['point'], ms: Number(m[2]) } : undefined;
}

/**
 * Test hooks, set only by tests and benchmarks (workers/checker.ts reads them from
 * STACKSANITY_TEST_* variables): a slowed batch, and a batch that kills its worker.
 */
export interface TestHooks {
  /** Sleep this long per sample before checking a batch, so that a kill lands mid-batch. */
  sampleDelayMs?: number;
  /** SIGKILL this process when a batch holds a sample from this host (a poison batch). */
  crashOnHost?: string;
}

/** BullMQ's reason for a job it failed itself after too many stalls. */
export const BULLMQ_STALL_LIMIT = 'job stalled more than allowable limit';

/** The longest stretch of checking between two turns of the event loop (lock renewal runs there). */
export const YIELD_EVERY_MS = 50;

/**
 * Decoding a batch is one synchronous call: the largest accepted batch (54 MiB stored) took
 * 0.4-1.5 s here (bench:max-batch). Before decoding a batch above DECODE_EXTEND_FROM bytes the
 * worker extends its lock by this much per MiB (4x the worst seen), so the lock cannot lapse
 * while the event loop is busy; the regular renewal takes over again afterwards.
 */
export const DECODE_BUDGET_MS_PER_MIB = 100;
export const DECODE_EXTEND_FROM = 4 * 2 ** 20;

export interface CheckerOptions {
  fault?: Fault;
  hooks?: TestHooks;
  /** Serve this process's /metrics on this port (0: any free port; undefined: none). */
  metricsPort?: number;
  log?: (msg: string) => void;
}

export class CheckerWorker {
  readonly keys: Keys;
  readonly redis: Redis;
  readonly store: TraceStore;
  readonly findings: FindingsStore;
  readonly kernels: KernelStore;
  readonly deadLetters: DeadLetters;
  readonly totals = new SeriesTotals();
  worker: Worker<BatchJob, BatchResult> | undefined;
  private server: Server | undefined;
  private readonly log: (msg: string) => void;
  batches = 0;

  constructor(private readonly cfg: ServiceConfig, private readonly opts: CheckerOptions = {}) {
    this.keys = new Keys(cfg.prefix);
    this.redis = connect(cfg.redisUrl, 'worker', 'stacksanity-worker');
    this.redis.on('error', () => { /* reconnects by itself; readiness shows in the queue */ });
    this.store = traceStore(cfg, this.redis, this.keys);
    this.findings = new FindingsStore(this.redis, this.keys);
    this.kernels = new KernelStore(this.redis, this.keys, cfg.profileRevalidateMs);
    // The attempts record lives as long as the batch's bytes could.
    this.deadLetters = new DeadLetters(this.redis, this.keys, cfg.idempotencySeconds);
    this.log = opts.log ?? (() => undefined);
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    this.worker = new Worker<BatchJob, BatchResult>(cfg.queueName, (job, token) => this.process(job, token), {
      connection: this.redis,
      prefix: cfg.prefix,
      // Recorded on each job it takes (processedBy): which process had a batch when it died.
      name: `${hostname()}:${process.pid}`,
      concurrency: cfg.concurrency,
      lockDuration: cfg.lockDurationMs,
      stalledInterval: cfg.stalledIntervalMs,
      // Our own limit (cfg.maxStalls, dead-letter.ts) parks a batch before BullMQ would fail it:
      // BullMQ's is one higher, a backstop that the 'failed' handler parks as well.
      maxStalledCount: cfg.maxStalls + 1,
    });
    this.worker.on('error', (e) => this.log(`worker error: ${e.message}`));
    this.worker.on('failed', (job, e) => {
      this.log(`batch ${job?.id ?? '?'} failed (attempt ${job?.attemptsMade ?? '?'}): ${e.message}`);
      if (job?.id && e.message === BULLMQ_STALL_LIMIT) {
        void this.park(job, 'stalled', `stalled more than ${cfg.maxStalls + 1} times (BullMQ's limit): its worker died each time`)
          .catch((err: Error) => this.log(`cannot park batch ${job.id}: ${err.message}`));
      }
    });
    if (this.opts.metricsPort !== undefined) {
      // A taken port must not stop the checking: the totals are on the API's /metrics anyway.
      await this.serveMetrics(this.opts.metricsPort).catch((e: Error) => {
        this.log(`cannot serve /metrics on port ${this.opts.metricsPort}: ${e.message}`);
        this.server = undefined;
      });
    }
  }

  /**
   * One attempt at a batch, bracketed by the attempts record: a batch that its workers died on
   * cfg.maxStalls times, or that fails for good, is parked in the dead-letter list (its job then
   * fails with "parked ..."), never failed with its bytes left to expire.
   */
  async process(job: Job<BatchJob, BatchResult>, token?: string): Promise<BatchResult> {
    const id = job.id!;
    const attempt = await this.deadLetters.begin(id);
    if (attempt.parked) throw new UnrecoverableError(`batch ${id} is parked in the dead-letter list`);
    if (attempt.deaths >= this.cfg.maxStalls) {
      const detail = `stalled ${attempt.deaths} times: its worker died each time`;
      await this.park(job, 'stalled', detail, attempt.deaths);
      throw new UnrecoverableError(`parked in the dead-letter list: ${detail}`);
    }
    let result: BatchResult;
    try {
      result = await this.attempt(job, token);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      const final = err instanceof UnrecoverableError || (!(err instanceof DelayedError) && job.attemptsMade + 1 >= (job.opts.attempts ?? 1));
      if (final) {
        await this.park(job, 'unrecoverable', err.message, 0, job.attemptsMade + 1).catch((pe: Error) => this.log(`cannot park batch ${id}: ${pe.message}`));
      } else {
        await this.deadLetters.endFailed(id).catch(() => undefined);
      }
      throw err;
    }
    await this.deadLetters.endDone(id).catch(() => undefined);
    return result;
  }

  /** `failures`: attempts that ended in an error, this one included when it did. */
  private async park(job: Job<BatchJob, BatchResult>, reason: 'stalled' | 'unrecoverable', detail: string, deaths?: number, failures = job.attemptsMade): Promise<void> {
    const r = await this.deadLetters.park(job.id!, { reason, detail, data: job.data, failures, ...(deaths !== undefined ? { deaths } : {}) });
    if (r === 'parked') this.log(`batch ${job.id} parked in the dead-letter list (${reason}): ${detail}`);
  }

  private async attempt(job: Job<BatchJob, BatchResult>, token?: string): Promise<BatchResult> {
    const id = job.id!;
    const data = job.data;
    let body: Buffer | null = await this.redis.getBuffer(this.keys.body(id));
    if (!body) {
      if (await this.store.isCommitted(id)) return { checked: 0, callchainOnly: 0, failing: 0, traces: 0, counted: false };
      throw new UnrecoverableError(`the bytes of batch ${id} are gone (expired before a worker took it)`);
    }
    if (token && body.length > DECODE_EXTEND_FROM) {
      await job.extendLock(token, this.cfg.lockDurationMs + Math.ceil(body.length / 2 ** 20) * DECODE_BUDGET_MS_PER_MIB).catch(() => 0);
    }
    let samples: Sample[];
    let indices: number[];
    let records: Uint8Array[] | undefined;
    const form = batchFormVersion(body);
    if (form !== undefined && form > BATCH_VERSION) {
      // Not damage: an API newer than this worker queued it. Leave it for an upgraded worker
      // (DelayedError does not use up an attempt).
      this.log(`batch ${id} is in binary batch form version ${form}, newer than this worker reads (${BATCH_VERSION}); offered again in ${NEWER_FORM_RETRY_MS / 1000} s`);
      await job.moveToDelayed(Date.now() + NEWER_FORM_RETRY_MS, token);
      throw new DelayedError();
    }
    if (isEncodedBatch(body)) {
      // The windows of the decoded samples are views into body: it lives until the batch is checked.
      try {
        ({ samples, indices, records } = decodeBatch(body));
      } catch (e) {
        // Damaged bytes will not get better on a retry.
        if (e instanceof DumpError) throw new UnrecoverableError(`batch ${id}: ${e.describe()}`);
        throw e;
      }
    } else {
      // A job queued by an API older than the binary form: the upload's own bytes.
      const parsed = parseBatch(decodeBody(body, this.cfg.maxSamplesDecoded), data.format, this.cfg.maxSamplesDecoded);
      // The bytes and the text are not needed past the parse: let a scavenge take them (worker RSS).
      body = null;
      samples = parsed.samples;
      indices = sampleIndices(parsed);
    }
    await this.testHooks(samples);
    const cfg = this.cfg;
    const checked = await checkBatch(id, data, samples, indices, {
      yieldEveryMs: YIELD_EVERY_MS,
      profile: (b) => this.kernels.entry(b),
      passingRatio: cfg.tracePassingRatio,
      checker: checkerBuild(),
      maxTraces: Math.min(cfg.traceMax, 1000),
      knownFindings: await this.findings.known(cfg.findingsRevalidateMs),
      ...(cfg.hostLabel ? { hostLabel: async (h: string) => ((await this.store.hostLabelAllowed(h, cfg.hostLabelCap)) ? h : 'other') } : {}),
    }, records);
    await this.pause('before-commit');
    const { applied: counted, findingsOverflow } = await this.store.commitBatch(checked.write);
    if (findingsOverflow > 0) {
      this.log(`batch ${id}: ${findingsOverflow} new finding(s) not stored: ${cfg.findingsMax} findings are kept (STACKSANITY_FINDINGS_MAX); their failures are still counted, and GET /v1/findings reports the overflow`);
    }
    if (counted) this.totals.add(checked.write.metrics);
    // The commit deleted the batch's bytes with the results in (a retry from here on finds the marker).
    await this.pause('after-commit');
    this.batches++;
    return { ...checked.result, counted };
  }

  private async testHooks(samples: readonly Sample[]): Promise<void> {
    const h = this.opts.hooks;
    if (!h) return;
    if (h.crashOnHost !== undefined && samples.some((s) => s.host === h.crashOnHost)) {
      this.log(`test hook: a sample from ${h.crashOnHost}; dying as an OOM kill would`);
      process.kill(process.pid, 'SIGKILL');
    }
    if (h.sampleDelayMs) await new Promise((r) => setTimeout(r, h.sampleDelayMs! * samples.length));
  }

  private async pause(point: Fault['point']): Promise<void> {
    const f = this.opts.fault;
    if (f && f.point === point) await new Promise((r) => setTimeout(r, f.ms));
  }

  private async serveMetrics(port: number): Promise<void> {
    const registry = createProcessRegistry();
    this.server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': registry.contentType }).end(text + this.totals.render());
      }, (e: Error) => res.writeHead(500).end(e.message));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, this.cfg.host, () => resolve());
    });
  }

  get metricsAddress(): string | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? `http://${a.address}:${a.port}/metrics` : undefined;
  }

  /** Stops taking jobs, waits for the active ones (bounded), then closes the connections. */
  async close(graceMs = 15000): Promise<void> {
    if (this.worker) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), graceMs); });
      const r = await Promise.race([this.worker.close().then(() => 'ok' as const), timedOut]);
      clearTimeout(timer);
      // Unfinished jobs keep their lock until it expires; the stall check then retries them.
      if (r === 'timeout') await this.worker.close(true).catch(() => undefined);
    }
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
    await closeQuietly(this.redis);
  }
}
