// The trace explorer's routes (issue 14), registered by buildApp: the overview `/`, a trace's page
// and its picture as JSON, the blind-spot table `/sweeps` and its JSON, the hourly series, and the
// page script. Each page is rendered from the very objects its JSON route answers.
import { readFileSync } from 'node:fs';
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import { GOOD_VERDICTS, REASONS, type Verdict } from '../core/check/reasons.ts';
import { STRATEGIES } from '../core/unwind/types.ts';
import { BASELINE } from '../pipeline/check-batch.ts';
import type { FindingsStore } from '../pipeline/findings.ts';
import type { KernelStore } from '../pipeline/kernels.ts';
import type { TraceStore } from '../pipeline/trace-store.ts';
import { traceView } from '../pipeline/trace-view.ts';
import { renderOverview, renderSweeps, type SeriesPoint, type TraceFilters } from './explorer-overview.ts';
import { renderTracePage } from './explorer-trace.ts';
import { readExperiment, renderExperiment } from './explorer-experiment.ts';
import { sweepState, startSweep } from './sweep-cache.ts';
import * as S from './schemas.ts';

export interface ExplorerDeps {
  store: TraceStore;
  kernels: KernelStore;
  findings: FindingsStore;
  /** The read guard of the JSON routes (a token when STACKSANITY_READ_AUTH is on). */
  readGuard: { preHandler?: preHandlerHookHandler };
  /** Throws Unavailable while Redis is down (answered 503 by the app's error handler). */
  ready: () => void;
  /** The results file of `stacksanity experiment` (ServiceConfig.experimentResults). */
  experimentResults: string;
}

const SERIES_HOURS = 48;
const SCRIPT = readFileSync(new URL('./static/explorer.js', import.meta.url), 'utf8');
const STRATEGY_NAMES = [...STRATEGIES, 'orc'];

export async function registerExplorer(app: FastifyInstance, d: ExplorerDeps): Promise<void> {
  const { store, kernels, findings, readGuard, ready } = d;
  const html = 'text/html; charset=utf-8';

  app.get('/explorer.js', { schema: { hide: true } }, async (_req, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'public, max-age=300').send(SCRIPT));

  const series = async (hours: number): Promise<SeriesPoint[]> => (await store.series(hours)).map(({ hour, counts }) => {
    const strategies: SeriesPoint['strategies'] = {};
    for (const [k, v] of Object.entries(counts)) {
      const c = k.indexOf(':');
      if (c < 0) continue;
      const s = (strategies[k.slice(0, c)] ??= { unwinds: 0, bad: 0 });
      const n = Number(v);
      s.unwinds += n;
      if (!GOOD_VERDICTS.has(k.slice(c + 1) as Verdict)) s.bad += n;
    }
    return { hour: new Date(hour).toISOString(), samples: Number(counts.samples ?? 0), strategies };
  });

  app.get('/v1/overview/series', {
    ...readGuard,
    schema: {
      summary: 'Unwinds and bad verdicts per strategy per hour (the overview\'s failure-ratio charts)', tags: ['results'],
      querystring: { type: 'object', properties: { hours: { type: 'integer', minimum: 1, maximum: 24 * 30, default: SERIES_HOURS } }, additionalProperties: false },
    },
  }, async (req) => {
    ready();
    const { hours } = req.query as { hours: number };
    return { hours: await series(hours), baseline: [...BASELINE] };
  });

  app.get('/', {
    ...readGuard,
    schema: {
      hide: true,
      querystring: { type: 'object', properties: { host: { type: 'string' }, kernel: { type: 'string' }, strategy: { type: 'string' }, reason: { type: 'string' }, cursor: { type: 'string' } } },
    },
  }, async (req, reply) => {
    const q = req.query as TraceFilters & { cursor?: string };
    const filters: TraceFilters = {};
    for (const k of ['host', 'kernel', 'strategy', 'reason'] as const) if (q[k]) filters[k] = q[k];
    let data: Parameters<typeof renderOverview>[0] = {
      series: undefined, findings: undefined, traces: undefined, next: null, filters, baseline: BASELINE,
      choices: { hosts: [], kernels: [], strategies: STRATEGY_NAMES.filter((s) => !BASELINE.has(s as never)), reasons: [...REASONS] },
    };
    try {
      ready();
      const [s, f, page, hosts, ks] = await Promise.all([
        series(SERIES_HOURS),
        findings.list({ sort: 'count', limit: 20 }),
        store.list({ status: 'failing', limit: 50, ...filters, ...(q.cursor ? { cursor: q.cursor } : {}) }),
        store.hosts(200),
        kernels.list(),
      ]);
      data = {
        ...data, series: s, findings: f.items, next: page.next,
        traces: page.items.map((m) => ({ ...m, received_at: new Date(Math.floor(m.score / 1000)).toISOString() })),
        choices: { ...data.choices, hosts: hosts.sort(), kernels: ks.sort() },
      };
    } catch (e) {
      // Redis down (or a bad cursor): the page says so where the data would be.
      req.log.warn({ err: e }, 'overview partly unavailable');
    }
    return reply.type(html).send(renderOverview(data));
  });

  app.get('/traces/:id', { ...readGuard, schema: { hide: true, params: S.IdParams, querystring: { type: 'object', properties: { strategy: { type: 'string' } } } } }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const { strategy } = req.query as { strategy?: string };
    const t = await store.get(id);
    if (t === null) return reply.code(404).type(html).send(`<!doctype html><meta charset="utf-8"><title>no such trace</title><p>No trace '${escapeText(id)}' (unknown, or evicted by retention). <a href="/">Back to the overview</a></p>`);
    const v = await traceView(t, (b) => kernels.entry(b));
    return reply.type(html).send(renderTracePage(v.detail, v.picture, strategy));
  });

  app.get('/v1/traces/:id/picture', {
    ...readGuard,
    schema: { summary: 'One trace\'s stack picture: every captured word with its meaning, the structures on the stacks, each strategy\'s walk (the words it read) and the true chain', tags: ['results'], params: S.IdParams },
  }, async (req, reply) => {
    ready();
    const { id } = req.params as { id: string };
    const t = await store.get(id);
    if (t === null) return reply.code(404).send({ error: 'not_found', message: `no trace '${id}' (unknown, or evicted by retention)` });
    const v = await traceView(t, (b) => kernels.entry(b));
    if (v.picture === null) {
      return reply.code(404).send({ error: 'no_picture', message: 'this trace has no stack picture: its sample carries no stack memory, or its kernel build has no profile any more' });
    }
    return { id, picture: v.picture };
  });

  app.get('/v1/sweeps', {
    schema: { summary: 'The emulator\'s single-step sweep per entry layout (the blind-spot table; the same document as `stacksanity sweep --json`)', tags: ['results'] },
  }, async (_req, reply) => {
    const s = sweepState();
    if (s.state === 'ready') return s.doc;
    if (s.state === 'idle') startSweep();
    if (s.state === 'failed') return reply.code(500).send({ error: 'internal', message: `the sweep failed: ${s.error}` });
    reply.header('retry-after', '3');
    return reply.code(503).send({ error: 'unavailable', message: 'the sweep is being computed (once per API process); retry in a few seconds' });
  });

  app.get('/v1/experiment', {
    schema: { summary: 'The results of `stacksanity experiment` (issue 18: three entry designs swept and sampled, and the emulator beside them); the file the /experiment page draws', tags: ['results'] },
  }, async (_req, reply) => {
    const f = readExperiment(d.experimentResults);
    if (f.state === 'absent') return reply.code(404).send({ error: 'not_found', message: 'no experiment results yet: generate them with `npm run experiment`' });
    if (f.state === 'invalid') return reply.code(500).send({ error: 'internal', message: `the experiment results file cannot be read: ${f.error}` });
    return f.results;
  });

  app.get('/experiment', { schema: { hide: true } }, async (_req, reply) => {
    const f = readExperiment(d.experimentResults);
    return reply.code(f.state === 'invalid' ? 500 : 200).type(html).send(renderExperiment(f));
  });

  app.get('/sweeps', { schema: { hide: true } }, async (_req, reply) => {
    let s = sweepState();
    if (s.state === 'idle') {
      startSweep();
      s = sweepState();
    }
    return reply.type(html).send(s.state === 'ready' ? renderSweeps(s.doc, 'ready') : renderSweeps(undefined, s.state === 'failed' ? 'failed' : 'computing', s.state === 'failed' ? s.error : undefined));
  });
}

function escapeText(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
