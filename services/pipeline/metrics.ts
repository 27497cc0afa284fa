// Metrics exactly as DESIGN §4 names them. The checker's series are tallied per batch into plain
// typed arrays (no label strings on the per-sample path), then turned into "series fields": one
// exposition line each (`name{labels}` → value, histogram buckets already cumulative). The same
// fields are added to the worker's own totals and, atomically with the batch's idempotency
// marker, to a Redis hash that holds the totals over every worker — which the API's /metrics
// renders in the single-machine default. A batch retried after a crash is therefore counted once.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';
import { VERDICTS, type Verdict } from '../core/check/reasons.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { REJECT_REASONS } from '../core/dump/errors.ts';
import { SOURCES } from './job.ts';
import { DEAD_LETTER_REASONS } from './dead-letter.ts';

export const M = {
  received: 'stacksanity_samples_received_total',
  rejected: 'stacksanity_samples_rejected_total',
  unwinds: 'stacksanity_unwinds_total',
  failures: 'stacksanity_unwind_failures_total',
  disagreements: 'stacksanity_strategy_disagreements_total',
  falseReliable: 'stacksanity_false_reliable_total',
  depth: 'stacksanity_unwind_depth_frames',
  duration: 'stacksanity_check_duration_seconds',
  findings: 'stacksanity_findings',
  // Was bullmq_job_count: a gauge must not end in _count (promtool; it reads as a histogram's part).
  queueJobs: 'stacksanity_queue_batches',
  deadLettered: 'stacksanity_batches_dead_lettered_total',
  deadLetterBatches: 'stacksanity_dead_letter_batches',
} as const;

/**
 * The `finding` label of a failure: the state of the finding the failing unwind belongs to, so
 * that rules page on new findings only. The fp baseline's failures are no finding at all (it
 * loses the interrupted function by design): they are `baseline`, never `new`.
 */
export type FindingLabel = 'new' | 'known' | 'baseline';

const HELP: Record<string, [string, 'counter' | 'histogram']> = {
  [M.received]: ['Samples accepted into the queue, by the uploader\'s declared source.', 'counter'],
  [M.rejected]: ['Samples refused before checking, by reason (dump errors, unknown build id, oversized).', 'counter'],
  [M.unwinds]: ['Unwinds by strategy and verdict (the fp baseline included; it fails at entries by design).', 'counter'],
  [M.failures]: ['Unwinds whose verdict is not exact/tolerated/consistent, by strategy, reason, the entry nearest the failure and the state of its finding (new, known; baseline for fp).', 'counter'],
  [M.disagreements]: ['Samples on which two entry-aware strategies reported different traces, by strategy pair.', 'counter'],
  [M.falseReliable]: ['Unwinds that claimed to be reliable and were wrong against ground truth.', 'counter'],
  [M.depth]: ['Frames per unwind, by strategy.', 'histogram'],
  [M.duration]: ['Time to check one sample with every strategy (seconds).', 'histogram'],
};

/** Frames: perf keeps at most 127, the walker stops at 128. */
export const DEPTH_BUCKETS = [2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128];
/** One sample with every strategy takes ~10-50 µs; the top buckets catch pathological stacks. */
export const DURATION_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

export const TALLY_STRATEGIES: readonly StrategyName[] = ['fp', 'kernel_entry', 'section', 'encoded_fp', 'orc'];
const S = TALLY_STRATEGIES.length;
const V = VERDICTS.length;
const MAX_DEPTH = 129;
const VERDICT_INDEX = new Map<Verdict, number>(VERDICTS.map((v, i) => [v, i]));
const STRATEGY_INDEX = new Map<StrategyName, number>(TALLY_STRATEGIES.map((s, i) => [s, i]));

export function strategyIndex(s: StrategyName): number { return STRATEGY_INDEX.get(s) ?? 0; }
export function verdictIndex(v: Verdict): number { return VERDICT_INDEX.get(v) ?? 0; }

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Per-batch deltas of the checker's series. */
export class BatchTally {
  readonly unwinds = new Int32Array(S * V);
  readonly falseReliable = new Int32Array(S);
  readonly depth = new Int32Array(S * (MAX_DEPTH + 1));
  readonly durationBuckets = new Int32Array(DURATION_BUCKETS.length + 1);
  durationSum = 0;
  durations = 0;
  /** Label-string keyed: failing unwinds are the minority, so strings are affordable here. */
  readonly failures = new Map<string, number>();
  readonly disagreements = new Map<string, number>();

  unwind(s: number, v: number, frames: number): void {
    this.unwinds[s * V + v]!++;
    this.depth[s * (MAX_DEPTH + 1) + Math.min(frames, MAX_DEPTH)]!++;
  }

  failure(strategy: string, reason: string, entry: string, host: string | undefined, finding?: FindingLabel): void {
    const k = `strategy="${strategy}",reason="${reason}",entry="${entry}"${finding !== undefined ? `,finding="${finding}"` : ''}${host !== undefined ? `,host="${escapeLabel(host)}"` : ''}`;
    this.failures.set(k, (this.failures.get(k) ?? 0) + 1);
  }

  disagreement(pair: string): void {
    this.disagreements.set(pair, (this.disagreements.get(pair) ?? 0) + 1);
  }

  duration(seconds: number): void {
    let b = 0;
    while (b < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[b]!) b++;
    this.durationBuckets[b]!++;
    this.durationSum += seconds;
    this.durations++;
  }

  /** The deltas as exposition-line keys (histogram buckets cumulative, as exposed). */
  fields(): Map<string, number> {
    const out = new Map<string, number>();
    for (let s = 0; s < S; s++) {
      const strategy = TALLY_STRATEGIES[s]!;
      let any = false;
      for (let v = 0; v < V; v++) {
        const n = this.unwinds[s * V + v]!;
        if (n > 0) {
          any = true;
          out.set(`${M.unwinds}{strategy="${strategy}",verdict="${VERDICTS[v]}"}`, n);
        }
      }
      if (this.falseReliable[s]! > 0) out.set(`${M.falseReliable}{strategy="${strategy}"}`, this.falseReliable[s]!);
      if (!any) continue;
      let cum = 0;
      let sum = 0;
      let d = 0;
      const base = s * (MAX_DEPTH + 1);
      for (const le of DEPTH_BUCKETS) {
        for (; d <= le; d++) {
          cum += this.depth[base + d]!;
          sum += d * this.depth[base + d]!;
        }
        out.set(`${M.depth}_bucket{strategy="${strategy}",le="${le}"}`, cum);
      }
      for (; d <= MAX_DEPTH; d++) {
        cum += this.depth[base + d]!;
        sum += d * this.depth[base + d]!;
      }
      out.set(`${M.depth}_bucket{strategy="${strategy}",le="+Inf"}`, cum);
      out.set(`${M.depth}_sum{strategy="${strategy}"}`, sum);
      out.set(`${M.depth}_count{strategy="${strategy}"}`, cum);
    }
    for (const [k, n] of this.failures) out.set(`${M.failures}{${k}}`, n);
    for (const [k, n] of this.disagreements) out.set(`${M.disagreements}{strategies="${k}"}`, n);
    if (this.durations > 0) {
      let cum = 0;
      DURATION_BUCKETS.forEach((le, i) => {
        cum += this.durationBuckets[i]!;
        out.set(`${M.duration}_bucket{le="${le}"}`, cum);
      });
      out.set(`${M.duration}_bucket{le="+Inf"}`, this.durations);
      out.set(`${M.duration}_sum`, this.durationSum);
      out.set(`${M.duration}_count`, this.durations);
    }
    return out;
  }
}

/**
 * Renders series fields (from a worker's totals or the Redis hash) as Prometheus text.
 * uploads: also the API's upload counters (received, rejected), each closed label set from 0;
 * only the API's combined view holds them.
 */
export function renderSeries(fields: Iterable<[string, number | string]>, opts: { uploads?: boolean } = {}): string {
  const byMetric = new Map<string, [string, number][]>();
  // Counters whose label values form a closed set start at 0, so that "never happened" reads as 0
  // rather than as a missing series (rules and dashboards can then rely on the series existing).
  const all: [string, number | string][] = [...fields];
  const seen = new Set(all.map(([k]) => k));
  for (const k of opts.uploads ? [...ZERO_SERIES, ...UPLOAD_ZERO_SERIES] : ZERO_SERIES) if (!seen.has(k)) all.push([k, 0]);
  for (const [k, v] of all) {
    const name = metricOf(k);
    if (!HELP[name]) continue;
    if (!opts.uploads && (name === M.received || name === M.rejected)) continue;
    let lines = byMetric.get(name);
    if (!lines) byMetric.set(name, (lines = []));
    lines.push([k, Number(v)]);
  }
  const out: string[] = [];
  for (const name of Object.keys(HELP)) {
    const lines = byMetric.get(name);
    if (!lines) continue;
    const [help, type] = HELP[name]!;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    // Sorted on the series key alone (never the value): each label set's buckets in numeric le
    // order, then its _sum and _count, as the exposition format expects of a histogram.
    lines.sort((a, b) => compareSeries(a[0], b[0]));
    for (const [k, v] of lines) out.push(`${k} ${v}`);
  }
  return out.length ? out.join('\n') + '\n' : '';
}

/** Pairs are named in STRATEGIES order, as the checker reports disagreements. */
const ENTRY_AWARE: readonly StrategyName[] = ['kernel_entry', 'section', 'encoded_fp', 'orc'];
const ZERO_SERIES: readonly string[] = [
  ...TALLY_STRATEGIES.map((s) => `${M.falseReliable}{strategy="${s}"}`),
  ...ENTRY_AWARE.flatMap((a, i) => ENTRY_AWARE.slice(i + 1).map((b) => `${M.disagreements}{strategies="${a},${b}"}`)),
];

const UPLOAD_ZERO_SERIES: readonly string[] = [
  ...SOURCES.map((s) => `${M.received}{source="${s}"}`),
  ...REJECT_REASONS.map((r) => `${M.rejected}{reason="${r}"}`),
];

function metricOf(field: string): string {
  const brace = field.indexOf('{');
  let name = brace < 0 ? field : field.slice(0, brace);
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix) && HELP[name.slice(0, -suffix.length)]) return name.slice(0, -suffix.length);
  }
  return name;
}

/** Orders series keys: by label set (le aside), then bucket < _sum < _count, buckets by numeric le. */
function compareSeries(a: string, b: string): number {
  const ka = seriesSortKey(a);
  const kb = seriesSortKey(b);
  if (ka.labels !== kb.labels) return ka.labels < kb.labels ? -1 : 1;
  if (ka.part !== kb.part) return ka.part - kb.part;
  return ka.le - kb.le;
}

function seriesSortKey(k: string): { labels: string; part: number; le: number } {
  const brace = k.indexOf('{');
  const name = brace < 0 ? k : k.slice(0, brace);
  const part = name.endsWith('_bucket') ? 0 : name.endsWith('_sum') ? 1 : name.endsWith('_count') ? 2 : 0;
  const body = brace < 0 ? '' : k.slice(brace + 1, -1);
  const le = /(?:^|,)le="([^"]+)"/.exec(body);
  const labels = body.replace(/(?:^|,)le="[^"]+"/, '').replace(/^,/, '');
  return { labels, part, le: le ? (le[1] === '+Inf' ? Infinity : Number(le[1])) : -1 };
}

/** A process's own totals of the checker series (what a worker's /metrics shows). */
export class SeriesTotals {
  readonly values = new Map<string, number>();
  add(fields: Map<string, number>): void {
    for (const [k, n] of fields) this.values.set(k, (this.values.get(k) ?? 0) + n);
  }
  render(): string { return renderSeries(this.values); }
}

export interface QueueProbe {
  counts: () => Promise<Record<string, number>>;
  /** Enqueue time (ms) of the oldest waiting batch, undefined when none waits. */
  oldestWaiting: () => Promise<number | undefined>;
  /** The dead-letter list (dead-letter.ts): batches parked now, and ever parked by reason. */
  deadLetters?: () => Promise<{ parked: number; totals: Record<string, number> }>;
}

/** An upload counter as the API's request paths use it. */
export interface UploadCounter<L extends string> {
  inc(labels: Record<L, string>, n?: number): void;
}

/** The API's own registry: uploads received and rejected, the queue gauges, process metrics. */
export interface ApiMetrics {
  registry: Registry;
  received: UploadCounter<'source'>;
  rejected: UploadCounter<'reason'>;
}

/**
 * Where the upload counters also go: the metric totals hash in Redis, beside the workers' series.
 * combined: the API's /metrics renders them from there (renderSeries with uploads) instead of from
 * this process's counters, so that after a restart received and checked still count the same
 * history (docs/operations-service.md, "Counters and restarts").
 */
export interface UploadTotals {
  redis: Redis;
  keys: Keys;
  combined: boolean;
}

export function createApiMetrics(probe?: QueueProbe, queueName = 'samples', totals?: UploadTotals): ApiMetrics {
  const registry = createProcessRegistry();
  const own = !totals?.combined;
  const received = new Counter({ name: M.received, help: HELP[M.received]![0], labelNames: ['source'] as const, registers: own ? [registry] : [] });
  const rejected = new Counter({ name: M.rejected, help: HELP[M.rejected]![0], labelNames: ['reason'] as const, registers: own ? [registry] : [] });
  // Pre-create the bounded label values so that rate() sees a zero before the first event.
  for (const s of SOURCES) received.inc({ source: s }, 0);
  for (const r of REJECT_REASONS) rejected.inc({ reason: r }, 0);
  const counter = <L extends string>(c: Counter<L>, name: string, label: L): UploadCounter<L> => ({
    inc(labels, n = 1) {
      c.inc(labels as never, n);
      if (totals && n > 0) {
        // Best effort: the upload's answer does not wait for (or fail on) its count.
        totals.redis.hincrby(totals.keys.metrics, `${name}{${label}="${escapeLabel(String(labels[label]))}"}`, n).catch(() => undefined);
      }
    },
  });
  if (probe) {
    new Gauge({
      name: 'stacksanity_queue_oldest_waiting_seconds',
      help: 'Age of the oldest batch waiting for a worker (0 when none waits): how far checking lags uploads.',
      labelNames: ['queue'] as const,
      registers: [registry],
      async collect() {
        try {
          const t = await probe.oldestWaiting();
          this.set({ queue: queueName }, t === undefined ? 0 : Math.max(0, (Date.now() - t) / 1000));
        } catch {
          // Redis down: keep the last value.
        }
      },
    });
    const deadLetters = probe.deadLetters;
    if (deadLetters) {
      // The counter's source of truth is the tally in Redis that the parking script increments,
      // whichever worker parked the batch: set from it at each scrape.
      new Counter({
        name: M.deadLettered,
        help: 'Accepted batches parked in the dead-letter list instead of being checked, by reason (stalled: their workers kept dying; unrecoverable: an error no retry fixes).',
        labelNames: ['reason'] as const,
        registers: [registry],
        async collect() {
          try {
            const { totals } = await deadLetters();
            this.reset();
            for (const r of DEAD_LETTER_REASONS) this.inc({ reason: r }, totals[r] ?? 0);
          } catch {
            // Redis down: keep the last values.
          }
        },
      });
      new Gauge({
        name: M.deadLetterBatches,
        help: 'Batches in the dead-letter list now: accepted, not checked, waiting for `stacksanity replay`.',
        registers: [registry],
        async collect() {
          try {
            this.set((await deadLetters()).parked);
          } catch {
            // Redis down: keep the last value.
          }
        },
      });
    }
    new Gauge({
      name: M.queueJobs,
      help: 'BullMQ jobs (sample batches) by queue and state.',
      labelNames: ['queue', 'state'] as const,
      registers: [registry],
      async collect() {
        try {
          const counts = await probe.counts();
          for (const [state, n] of Object.entries(counts)) this.set({ queue: queueName, state }, n);
        } catch {
          // Redis down: keep the last values rather than fail the whole scrape.
        }
      },
    });
  }
  return { registry, received: counter(received, M.received, 'source'), rejected: counter(rejected, M.rejected, 'reason') };
}

/** Findings by state and strategy (findings.ts's tallies), read at scrape. */
export type FindingsProbe = () => Promise<{ state: string; strategy: string; n: number }[]>;

/** The stacksanity_findings gauge on the API's registry (always served, not only in the combined view). */
export function registerFindingsGauge(registry: Registry, findings: FindingsProbe): void {
  new Gauge({
    name: M.findings,
    help: 'Findings (failing unwinds grouped by signature) in Redis, by strategy and state (new, known).',
    labelNames: ['strategy', 'state'] as const,
    registers: [registry],
    async collect() {
      try {
        const rows = await findings();
        // Every entry-aware strategy in both states, so that a first finding is a rise from 0.
        for (const strategy of ENTRY_AWARE) for (const state of ['new', 'known']) this.set({ strategy, state }, 0);
        for (const r of rows) this.set({ strategy: r.strategy, state: r.state }, r.n);
      } catch {
        // Redis down: keep the last values.
      }
    },
  });
}

/**
 * A registry with prom-client's process and Node series, less the three gauges it names *_total
 * (nodejs_active_{handles,requests,resources}_total): a gauge must not end in _total (promtool),
 * and each is the sum of the same gauge without the suffix, which stays (by type).
 */
export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  return registry;
}
