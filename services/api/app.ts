// The HTTP API (DESIGN §4): uploads, job status, summaries, traces, metrics, health, OpenAPI, and
// the web page. buildApp() is the whole app as one fastify instance; api-process.ts runs it.
import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import rateLimit from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import { UploadClaims } from '../pipeline/claims.ts';
import { DumpError, type Rejection } from '../core/dump/errors.ts';
import type { ServiceConfig } from '../pipeline/config.ts';
import { OrcFormatError } from '../core/unwind/orc-table.ts';
import { JOB_NAME, decodeBody, encodeBatch, gunzipBody, jobIdFor, type BatchJob, type BodyFormat, type Source } from '../pipeline/job.ts';
import { Keys } from '../pipeline/keys.ts';
import { KernelStore } from '../pipeline/kernels.ts';
import { registerFindingsGauge, renderSeries, type ApiMetrics } from '../pipeline/metrics.ts';
import type { BatchQueue } from '../pipeline/queue.ts';
import { CursorError, type TraceStore } from '../pipeline/trace-store.ts';
import { BASELINE } from '../pipeline/check-batch.ts';
import { traceDetailJson } from '../pipeline/trace-view.ts';
import { FindingsStore, type FindingState, type FindingsQuery } from '../pipeline/findings.ts';
import * as S from './schemas.ts';
import { TokenSet, tokenKey } from './tokens.ts';
import { registerExplorer } from './explorer.ts';

export interface ApiDeps {
  cfg: ServiceConfig;
  /** The producer connection (enableOfflineQueue false): commands fail at once while Redis is down. */
  redis: Redis;
  queue: BatchQueue;
  store: TraceStore;
  tokens: TokenSet;
  /** Tokens of the admin scope (PUT /v1/findings/{id}); default: from the environment (TokenSet.adminFromEnv). */
  adminTokens?: TokenSet;
  metrics: ApiMetrics;
  logLevel?: string;
  /** Where the log lines go (default stdout); tests capture them. */
  logStream?: NodeJS.WritableStream;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: string;
  }
}

const RETRY_AFTER_SECONDS = 5;
const MAX_ERRORS_SHOWN = 1000;
/** A claim with no job after this long was abandoned (its API died between claim and queue.add). */
const CLAIM_LEASE_MS = 30_000;
/** How long a duplicate waits for the winner's queue.add before answering 503. */
const CLAIM_WAIT_MS = 10_000;

/** Raised for any Redis failure on a request path; answered with 503 and Retry-After. */
export class Unavailable extends Error {}

export async function buildApp(d: ApiDeps): Promise<FastifyInstance> {
  const { cfg, redis, queue, store, tokens, metrics } = d;
  const keys = new Keys(cfg.prefix);
  const kernels = new KernelStore(redis, keys);
  const findings = new FindingsStore(redis, keys);
  const adminTokens = d.adminTokens ?? TokenSet.adminFromEnv();
  registerFindingsGauge(metrics.registry, async () => (await findings.stats()).byState);
  const app = Fastify({
    logger: {
      level: d.logLevel ?? process.env.LOG_LEVEL ?? 'warn',
      // Tokens never reach the logs, whatever the level.
      redact: { paths: ['req.headers.authorization', 'headers.authorization', 'authorization', '*.token'], censor: '[redacted]' },
      ...(d.logStream ? { stream: d.logStream } : {}),
    },
    requestTimeout: 120_000,
    connectionTimeout: 120_000,
    keepAliveTimeout: 10_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'stacksanity', version: '1', description: 'Upload kernel stack samples; read verdicts, traces and metrics. See docs/api.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(rateLimit, {
    global: false,
    max: cfg.rateLimitPerMinute,
    timeWindow: 60_000,
    // Per token (its hash, never the token itself), else per client address.
    keyGenerator: (req) => {
      const t = TokenSet.bearer(req.headers.authorization);
      return t ? tokenKey(t) : `ip:${req.ip}`;
    },
  });

  // Who won each upload's job id (claims.ts).
  const claims = new UploadClaims(redis, keys, (id) => queue.toKey(id), { ttlSeconds: cfg.idempotencySeconds, leaseMs: CLAIM_LEASE_MS, waitMs: CLAIM_WAIT_MS });
  const ready = (): void => {
    if (redis.status !== 'ready') throw new Unavailable('Redis is unavailable');
  };
  const requireToken = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const t = TokenSet.bearer(req.headers.authorization);
    if (t === undefined) {
      reply.header('www-authenticate', 'Bearer realm="stacksanity"');
      return reply.code(401).send({ error: 'unauthorized', message: req.headers.authorization ? 'the Authorization header must be "Bearer <token>"' : 'this endpoint needs an upload token: Authorization: Bearer <token>' });
    }
    const who = tokens.verify(t);
    if (who === undefined) {
      reply.header('www-authenticate', 'Bearer realm="stacksanity", error="invalid_token"');
      return reply.code(401).send({ error: 'unauthorized', message: 'the token is not valid' });
    }
    req.principal = who;
  };
  // The admin scope: an upload token is known but not allowed here (403), anything else is 401.
  const requireAdmin = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const t = TokenSet.bearer(req.headers.authorization);
    const scope = 'an admin token (STACKSANITY_ADMIN_TOKENS or STACKSANITY_ADMIN_TOKENS_FILE)';
    if (t === undefined) {
      reply.header('www-authenticate', 'Bearer realm="stacksanity-admin"');
      return reply.code(401).send({ error: 'unauthorized', message: `changing a finding needs ${scope}: Authorization: Bearer <token>` });
    }
    const who = adminTokens.verify(t);
    if (who !== undefined) {
      req.principal = who;
      return;
    }
    if (tokens.verify(t) !== undefined) {
      return reply.code(403).send({ error: 'forbidden', message: `this is an upload token: it may upload samples and kernels, not change findings, which needs ${scope}` });
    }
    reply.header('www-authenticate', 'Bearer realm="stacksanity-admin", error="invalid_token"');
    return reply.code(401).send({ error: 'unauthorized', message: 'the token is not valid' });
  };
  const readGuard = cfg.readAuth ? { preHandler: requireToken } : {};
  const uploadSecurity = [{ bearer: [] }];

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string; validation?: unknown }, req, reply) => {
    if (err instanceof Unavailable || isRedisDown(err)) {
      reply.header('retry-after', String(RETRY_AFTER_SECONDS));
      return reply.code(503).send({ error: 'unavailable', message: 'the queue (Redis) is unavailable; retry later' });
    }
    if (err instanceof DumpError) return reply.code(400).send({ error: 'bad_request', reason: err.reason, message: err.describe() });
    if (err instanceof CursorError) return reply.code(400).send({ error: 'bad_request', message: err.message });
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      if (req.url.startsWith('/v1/samples')) metrics.rejected.inc({ reason: 'oversized' });
      const limit = req.url.startsWith('/v1/samples') ? cfg.maxSamplesBody : /\/orc(\?|$)/.test(req.url) ? cfg.maxOrcBody : cfg.maxSymbolsBody;
      return reply.code(413).send({ error: 'payload_too_large', message: `the body is over the ${limit}-byte limit of this endpoint${req.url.startsWith('/v1/samples') ? '; split the batch' : ''}` });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({ error: 'unsupported_media_type', message: `content type '${req.headers['content-type'] ?? ''}' is not accepted here; use text/plain, application/json, application/x-ndjson, application/gzip or application/octet-stream` });
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) {
      req.log.error({ err }, 'request failed');
      return reply.code(500).send({ error: 'internal', message: 'internal error' });
    }
    if (err.validation) return reply.code(400).send({ error: 'bad_request', message: validationMessage(err as Error & { validation: ValidationIssue[]; validationContext?: string }) });
    return reply.code(status).send({ error: status === 429 ? 'rate_limited' : 'bad_request', message: err.message });
  });
  // Unknown routes (and known paths under another method) answer in the same shape as every error.
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}; the API's routes are listed at /docs` }));

  // ---- uploads: their own scope, with raw-bytes parsers for every accepted type -------------
  await app.register(async (up) => {
    up.removeAllContentTypeParsers();
    up.addContentTypeParser(['text/plain', 'application/json', 'application/x-ndjson', 'application/gzip', 'application/x-gzip', 'application/octet-stream'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

    up.post('/v1/samples', {
      bodyLimit: cfg.maxSamplesBody,
      preHandler: requireToken,
      config: { rateLimit: {} },
      schema: {
        summary: 'Upload a batch of samples',
        description: '202 once the batch is durably queued, with the job id and per-sample errors by index (duplicate: true with the first upload\'s answer when this job id was queued before); 400 when no sample is usable; 409 when the Idempotency-Key (or these bytes) was used for a different request; 503 + Retry-After while Redis is unavailable.',
        tags: ['uploads'],
        security: uploadSecurity,
        querystring: S.UploadQuery,
        headers: S.UploadHeaders,
        body: S.SamplesBody,
        response: { 202: S.UploadReply, 400: S.RejectedReply, 401: S.ErrorBody, 409: S.ConflictReply, 413: S.ErrorBody, 415: S.ErrorBody, 503: S.ErrorBody },
      },
    }, async (req, reply) => {
      ready();
      const q = req.query as { source: Source; kernel?: string };
      const raw = req.body as Buffer;
      const uploader = req.principal!;
      if (!Buffer.isBuffer(raw) || raw.length === 0) return reply.code(400).send({ error: 'bad_request', message: 'the body is empty', rejected: 0, errors: [] });
      let body: Buffer;
      try {
        body = gunzipBody(raw, cfg.maxSamplesDecoded);
      } catch (e) {
        if (!(e instanceof DumpError)) throw e;
        metrics.rejected.inc({ reason: e.reason });
        return reply.code(e.reason === 'oversized' ? 413 : 400).send({ error: e.reason, message: e.describe() });
      }
      const format = formatOf(req.headers['content-type']);
      // Read once: the worker checks the binary batch made here and parses no text.
      const parsed = encodeBatch(body, format, cfg.maxSamplesDecoded);
      const rejections: Rejection[] = [...parsed.rejected];
      const known = new Map<string, boolean>();
      const skip: number[] = [];
      for (let i = 0; i < parsed.samples.length; i++) {
        const s = parsed.samples[i]!;
        if (!s.fullState) continue;
        const b = s.kernel ?? q.kernel;
        let ok = b === undefined ? false : known.get(b);
        if (ok === undefined) known.set(b!, (ok = await kernels.hasSymbols(b!)));
        if (!ok) {
          const index = s.index;
          skip.push(index);
          const line = s.line || undefined;
          const message = b === undefined
            ? 'the sample names no kernel build id: add a .kernel line (or "kernel" in JSON) or ?kernel=<build id>'
            : `unknown kernel build id '${b}': upload its symbols first (POST /v1/kernels/${b}/symbols)`;
          rejections.push({ sampleIndex: index, reason: 'unknown_build_id', message, where: { sampleIndex: index, ...(line !== undefined ? { line } : {}), field: 'kernel' } });
        }
      }
      rejections.sort((a, b) => a.sampleIndex - b.sampleIndex);
      const errors = rejections.slice(0, MAX_ERRORS_SHOWN).map(errorOf);
      const truncated = rejections.length > MAX_ERRORS_SHOWN ? { errors_truncated: true } : {};
      const accepted = parsed.samples.length - skip.length;
      if (accepted === 0) {
        for (const r of rejections) metrics.rejected.inc({ reason: r.reason });
        const message = parsed.samples.length + rejections.length === 0 ? 'the body holds no samples' : `none of the ${rejections.length} samples is usable; see errors`;
        return reply.code(400).send({ error: 'no_usable_samples', message, rejected: rejections.length, errors, ...truncated });
      }
      const idem = (req.headers['idempotency-key'] as string | undefined) ?? undefined;
      const jobId = jobIdFor(uploader, raw, idem);
      // Claimed before anything is written: one request per job id goes on (claims.ts).
      const mine = { job: jobId, accepted, rejected: rejections.length, digest: requestDigest(body, format, q) };
      const c = await claims.claim(mine);
      if (c.kind === 'conflict') {
        const what = idem !== undefined ? `Idempotency-Key '${idem}'` : 'an upload of these bytes';
        return reply.code(409).send({ error: 'idempotency_conflict', job: jobId, message: `${what} was already used for a different request (other samples, format, source or kernel) within the idempotency window; send this batch under a new Idempotency-Key` });
      }
      if (c.kind === 'busy') {
        reply.header('retry-after', String(RETRY_AFTER_SECONDS));
        return reply.code(503).send({ error: 'unavailable', message: 'an identical upload is being queued right now; retry the same request' });
      }
      if (c.kind === 'duplicate') {
        // The winner's answer. Its errors are this request's own when the counts agree (same
        // bytes, same parse); they differ only when a kernel's symbols arrived in between.
        const w = c.answer ?? mine;
        const same = w.accepted === accepted && w.rejected === rejections.length;
        return reply.code(202).send({ job: w.job, accepted: w.accepted, rejected: w.rejected, duplicate: true, status: `/v1/jobs/${w.job}`, errors: same ? errors : [], ...(same ? truncated : {}) });
      }
      const data: BatchJob = {
        v: 2, format, gzip: false, uploader, source: q.source, receivedAt: Date.now(), accepted,
        skip: [...skip, ...parsed.rejected.map((r) => r.sampleIndex)].sort((a, b) => a - b),
        ...(q.kernel !== undefined ? { kernel: q.kernel } : {}),
      };
      try {
        // The claim is this request's, so the bytes are too: no NX (a takeover rewrites the same batch).
        const bytes = Buffer.from(parsed.bytes.buffer, parsed.bytes.byteOffset, parsed.bytes.byteLength);
        await redis.set(keys.body(jobId), bytes, 'EX', cfg.idempotencySeconds);
        // The 202 waits for this: once add() resolves the job is in Redis.
        await queue.add(JOB_NAME, data, { jobId });
      } catch (e) {
        // Free the id for the client's retry, bytes included, unless the job got in after all.
        const r = await claims.release(jobId, c.token).catch(() => 'failed' as const);
        if (r !== 'queued') throw e;
      }
      metrics.received.inc({ source: q.source }, accepted);
      for (const r of rejections) metrics.rejected.inc({ reason: r.reason });
      return reply.code(202).send({ job: jobId, accepted, rejected: rejections.length, duplicate: false, status: `/v1/jobs/${jobId}`, errors, ...truncated });
    });

    up.post('/v1/kernels/:buildId/symbols', {
      bodyLimit: cfg.maxSymbolsBody,
      preHandler: requireToken,
      config: { rateLimit: {} },
      schema: {
        summary: 'Upload a kernel build\'s symbols (kallsyms or System.map)',
        tags: ['kernels'], security: uploadSecurity, params: S.BuildIdParams, body: S.SymbolsBody,
        response: { 201: S.KernelReply, 400: S.ErrorBody, 401: S.ErrorBody, 413: S.ErrorBody },
      },
    }, async (req, reply) => {
      ready();
      const { buildId } = req.params as { buildId: string };
      const text = decodeBody(req.body as Buffer, cfg.maxSymbolsBody * 8);
      const info = await kernels.putSymbols(buildId, text);
      return reply.code(201).send(info);
    });

    up.put('/v1/kernels/:buildId/orc', {
      bodyLimit: cfg.maxOrcBody,
      preHandler: requireToken,
      config: { rateLimit: {} },
      schema: {
        summary: 'Upload a kernel build\'s ORC tables (.orc_unwind_ip / .orc_unwind), so that workers run the orc strategy',
        tags: ['kernels'], security: uploadSecurity, params: S.BuildIdParams, body: S.OrcBody,
        response: { 201: S.OrcReply, 400: S.ErrorBody, 401: S.ErrorBody, 413: S.ErrorBody },
      },
    }, async (req, reply) => {
      ready();
      const { buildId } = req.params as { buildId: string };
      const raw = req.body as Buffer;
      if (!Buffer.isBuffer(raw) || raw.length === 0) return reply.code(400).send({ error: 'bad_orc', message: 'the body is empty' });
      let bytes: Buffer;
      try {
        bytes = gunzipBody(raw, cfg.maxOrcBody);
      } catch (e) {
        if (!(e instanceof DumpError)) throw e;
        return reply.code(e.reason === 'oversized' ? 413 : 400).send({ error: e.reason === 'oversized' ? 'payload_too_large' : 'bad_orc', message: e.describe() });
      }
      try {
        const r = await kernels.putOrc(buildId, bytes);
        return reply.code(201).send({ buildId, ...r });
      } catch (e) {
        if (e instanceof OrcFormatError || e instanceof RangeError) {
          return reply.code(400).send({ error: 'bad_orc', message: `${e instanceof OrcFormatError ? `${e.field}: ` : ''}${e.message}` });
        }
        throw e;
      }
    });
  });

  app.put('/v1/kernels/:buildId/profile', {
    preHandler: requireToken,
    config: { rateLimit: {} },
    schema: {
      summary: 'Set a kernel build\'s profile options (entry layouts, stub offsets, KASAN)',
      tags: ['kernels'], security: uploadSecurity, params: S.BuildIdParams, body: S.ProfileBody,
      response: { 200: S.KernelReply, 400: S.ErrorBody, 401: S.ErrorBody },
    },
  }, async (req) => {
    ready();
    const { buildId } = req.params as { buildId: string };
    await kernels.putOptions(buildId, req.body);
    return (await kernels.info(buildId))!;
  });

  app.get('/v1/kernels', { ...readGuard, schema: { summary: 'Known kernel build ids', tags: ['kernels'] } }, async () => {
    ready();
    return { kernels: await kernels.list() };
  });

  app.get('/v1/kernels/:buildId', { ...readGuard, schema: { summary: 'One kernel build', tags: ['kernels'], params: S.BuildIdParams, response: { 200: S.KernelReply, 404: S.ErrorBody } } }, async (req, reply) => {
    ready();
    const { buildId } = req.params as { buildId: string };
    const info = await kernels.info(buildId);
    if (!info) return reply.code(404).send({ error: 'not_found', message: `no kernel build '${buildId}'` });
    return info;
  });

  app.get('/v1/jobs/:id', { ...readGuard, schema: { summary: 'Status of an uploaded batch', tags: ['jobs'], params: S.IdParams } }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const job = await queue.getJob(id);
    if (!job) {
      if (await store.isCommitted(id)) return { id, state: 'completed', note: 'the job record was evicted (bounded retention); its results were committed' };
      return reply.code(404).send({ error: 'not_found', message: `no job '${id}' (unknown, or evicted by retention)` });
    }
    return {
      id, state: await job.getState(), accepted: job.data.accepted, source: job.data.source, attempts: job.attemptsMade,
      received_at: new Date(job.data.receivedAt).toISOString(),
      finished_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
      result: job.returnvalue ?? null,
      failed_reason: job.failedReason ?? null,
    };
  });

  app.get('/v1/summary', { ...readGuard, schema: { summary: 'Counts per strategy, verdict and reason (all, or one host or kernel)', tags: ['results'], querystring: S.SummaryQuery } }, async (req) => {
    ready();
    const q = req.query as { host?: string; kernel?: string };
    if (q.host !== undefined || q.kernel !== undefined) {
      const kind = q.host !== undefined ? 'host' : 'kernel';
      const name = (q.host ?? q.kernel)!;
      return scopedSummary(kind, name, await store.summary(kind, name));
    }
    return globalSummary(await store.metricTotals());
  });

  app.get('/v1/traces', { ...readGuard, schema: { summary: 'Stored traces, newest first, with filters and cursor pagination', tags: ['results'], querystring: S.TracesQuery, response: { 200: S.TraceListReply, 400: S.ErrorBody } } }, async (req, reply) => {
    ready();
    const q = req.query as { host?: string; kernel?: string; strategy?: string; reason?: string; status?: 'failing' | 'passing'; since?: string; until?: string; cursor?: string; limit: number };
    const since = q.since !== undefined ? timeOf(q.since) : undefined;
    const until = q.until !== undefined ? timeOf(q.until) : undefined;
    if (Number.isNaN(since) || Number.isNaN(until)) return reply.code(400).send({ error: 'bad_request', message: 'since and until take an ISO 8601 time or milliseconds since the epoch' });
    const { since: _s, until: _u, ...rest } = q;
    const page = await store.list({ ...rest, ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}) });
    return {
      items: page.items.map((m) => ({ ...m, received_at: new Date(Math.floor(m.score / 1000)).toISOString(), url: `/v1/traces/${m.id}` })),
      next: page.next,
    };
  });

  app.get('/v1/traces/:id', { ...readGuard, schema: { summary: 'One trace: registers, stack windows, each strategy\'s frames, verdict and kernel-style text', tags: ['results'], params: S.IdParams } }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const t = await store.get(id);
    if (t === null) return reply.code(404).send({ error: 'not_found', message: `no trace '${id}' (unknown, or evicted by retention)` });
    // Rendered now from the stored sample (trace-view.ts), not stored rendered.
    return reply.type('application/json; charset=utf-8').send(await traceDetailJson(t, (b) => kernels.entry(b)));
  });

  app.get('/v1/findings', { ...readGuard, schema: { summary: 'Findings: failing unwinds grouped by signature, most frequent (or most recently seen) first', tags: ['findings'], querystring: S.FindingsQuery, response: { 200: S.FindingListReply, 400: S.ErrorBody } } }, async (req) => {
    ready();
    const q = req.query as FindingsQuery;
    const [page, stats] = await Promise.all([findings.list(q), findings.stats()]);
    return { items: page.items, next: page.next, total: stats.total, overflow: stats.overflow };
  });

  app.get('/v1/findings/:id', { ...readGuard, schema: { summary: 'One finding', tags: ['findings'], params: S.FindingIdParams, response: { 200: S.Finding, 404: S.ErrorBody } } }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const f = await findings.get(id);
    if (!f) return reply.code(404).send({ error: 'not_found', message: `no finding '${id}'` });
    return f;
  });

  app.put('/v1/findings/:id', {
    preHandler: requireAdmin,
    config: { rateLimit: {} },
    schema: {
      summary: 'Mark a finding known (acknowledged, with a note) or new again',
      description: 'Needs an admin token (a scope apart from upload tokens: those get 403). Failures of a known finding are counted with finding="known" in stacksanity_unwind_failures_total from the workers\' next batch on (within STACKSANITY_FINDINGS_REVALIDATE_MS), and do not page.',
      tags: ['findings'], security: uploadSecurity, params: S.FindingIdParams, body: S.FindingBody,
      response: { 200: S.Finding, 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody },
    },
  }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const b = req.body as { state: FindingState; note?: string };
    const f = await findings.setState(id, b.state, b.note, req.principal!);
    if (!f) return reply.code(404).send({ error: 'not_found', message: `no finding '${id}'` });
    return f;
  });

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['operations'] } }, async (_req, reply) => {
    let text = await metrics.registry.metrics();
    if (cfg.combinedMetrics) {
      try {
        text += renderSeries(Object.entries(await store.metricTotals()), { uploads: true });
      } catch {
        // Redis down: serve this process's series; the workers' totals come back with Redis.
      }
    }
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.get('/healthz', { schema: { summary: 'Liveness', tags: ['operations'] } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { summary: 'Readiness: Redis reachable', tags: ['operations'] } }, async (_req, reply) => {
    try {
      ready();
      await redis.ping();
      return { status: 'ready' };
    } catch {
      reply.header('retry-after', String(RETRY_AFTER_SECONDS));
      return reply.code(503).send({ status: 'unavailable', error: 'unavailable', message: 'Redis is unavailable' });
    }
  });

  // The web pages (the trace explorer): explorer.ts.
  await registerExplorer(app, { store, kernels, findings, readGuard, ready, experimentResults: cfg.experimentResults });

  return app;
}

/**
 * What makes two uploads under one job id the same request: the samples (after gunzip, so a
 * re-compressed retry is still the same), the declared format and the query.
 */
function requestDigest(body: Buffer, format: BodyFormat, q: { source: Source; kernel?: string }): string {
  return createHash('sha256').update(`${format}\0${q.source}\0${q.kernel ?? ''}\0`).update(body).digest('hex');
}

function formatOf(contentType: string | undefined): BodyFormat {
  const t = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (t === 'text/plain') return 'text';
  if (t === 'application/json' || t === 'application/x-ndjson') return 'json';
  return 'auto';
}

function errorOf(r: Rejection): Record<string, unknown> {
  const o: Record<string, unknown> = { index: r.sampleIndex, reason: r.reason, message: r.message };
  if (r.where.line !== undefined) o.line = r.where.line;
  if (r.where.field !== undefined) o.field = r.where.field;
  return o;
}

function timeOf(s: string): number {
  return /^\d+$/.test(s) ? Number(s) : Date.parse(s);
}

/** One ajv error as fastify hands it over (err.validation). */
interface ValidationIssue {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/**
 * A request that failed its schema, said the way fastify does ("querystring/source must be ...")
 * with what ajv leaves out: the allowed values of an enum, the name of a missing property.
 */
function validationMessage(err: Error & { validation: ValidationIssue[]; validationContext?: string }): string {
  const where = err.validationContext ?? 'request';
  const parts = err.validation.map((v) => {
    const path = `${where}${v.instancePath}`;
    if (v.keyword === 'enum' && Array.isArray(v.params.allowedValues)) return `${path} must be one of: ${(v.params.allowedValues as unknown[]).map(String).join(', ')}`;
    return `${path} ${v.message ?? 'is not valid'}`;
  });
  return parts.join('; ');
}

const REDIS_DOWN = /Stream isn't writeable|Connection is closed|ECONNREFUSED|ECONNRESET|MaxRetriesPerRequest|Reached the max retries|Connection in subscriber mode|connect ETIMEDOUT|LOADING/;

function isRedisDown(e: Error): boolean {
  return e.name === 'MaxRetriesPerRequestError' || REDIS_DOWN.test(e.message);
}

function scopedSummary(kind: 'host' | 'kernel', name: string, h: Record<string, string>): Record<string, unknown> {
  const strategies: Record<string, { baseline: boolean; verdicts: Record<string, number> }> = {};
  for (const [k, v] of Object.entries(h)) {
    const c = k.indexOf(':');
    if (c < 0) continue;
    const s = k.slice(0, c);
    (strategies[s] ??= { baseline: BASELINE.has(s as never), verdicts: {} }).verdicts[k.slice(c + 1)] = Number(v);
  }
  return { scope: kind, name, samples: Number(h.samples ?? 0), failing: Number(h.failing ?? 0), callchain_only: Number(h.callchain_only ?? 0), strategies };
}

/** The global summary is read off the metric totals, so it always agrees with /metrics. */
function globalSummary(h: Record<string, string>): Record<string, unknown> {
  const strategies: Record<string, { baseline: boolean; verdicts: Record<string, number>; reasons: Record<string, number> }> = {};
  const disagreements: Record<string, number> = {};
  const falseReliable: Record<string, number> = {};
  const entry = (s: string) => (strategies[s] ??= { baseline: BASELINE.has(s as never), verdicts: {}, reasons: {} });
  let samples = 0;
  for (const [k, v] of Object.entries(h)) {
    const n = Number(v);
    const labels = Object.fromEntries([...k.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (k.startsWith('stacksanity_unwinds_total{')) {
      entry(labels.strategy!).verdicts[labels.verdict!] = n;
      if (labels.strategy === 'fp') samples += n;
    } else if (k.startsWith('stacksanity_unwind_failures_total{')) {
      const r = entry(labels.strategy!).reasons;
      r[labels.reason!] = (r[labels.reason!] ?? 0) + n;
    } else if (k.startsWith('stacksanity_strategy_disagreements_total{')) disagreements[labels.strategies!] = n;
    else if (k.startsWith('stacksanity_false_reliable_total{')) falseReliable[labels.strategy!] = n;
  }
  return { scope: 'all', samples, strategies, disagreements, false_reliable: falseReliable };
}
