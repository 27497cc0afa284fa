// Checks one batch: every sample with the fp baseline plus the entry-aware strategies its kernel
// supports, tallied into metric deltas, per-host and per-kernel summaries, and trace records for
// failing samples (and a sampled share of passing ones). No I/O here except the profile lookup.
import { performance } from 'node:perf_hooks';
import { checkSample, type SampleCheck } from '../core/check/checker.ts';
import { GOOD_VERDICTS, VERDICTS } from '../core/check/reasons.ts';
import { sampleToJson } from '../core/dump/json.ts';
import { hasFullState, type Sample } from '../core/dump/sample.ts';
import { renderKernelTrace } from '../core/render/kernel-text.ts';
import { sampleCheckToJson } from '../core/render/json.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { STRATEGIES, type StrategyName } from '../core/unwind/types.ts';
import type { BatchJob, BatchResult } from './job.ts';
import { BatchTally, TALLY_STRATEGIES, strategyIndex, verdictIndex } from './metrics.ts';
import type { BatchWrite, TraceRecord } from './trace-store.ts';

/**
 * The fp baseline loses the interrupted function at every entry by design (docs/architecture.md).
 * Its unwinds are counted under strategy="fp" like any other, so dashboards can show what the
 * entry-aware strategies recover; but it never makes a sample "failing" (trace store, summaries'
 * failing count), exactly as the CLI's default run treats it.
 */
export const BASELINE: ReadonlySet<StrategyName> = new Set(['fp']);

export interface CheckContext {
  profile: (buildId: string) => Promise<KernelProfile | undefined>;
  /** The host label value for a host, or undefined when the host label is off. */
  hostLabel?: (host: string) => Promise<string>;
  passingRatio: number;
  /**
   * Traces stored per batch at most: the batch's writes go to Redis in one script, which must stay
   * short however many samples of a huge batch fail (the rest are still counted).
   */
  maxTraces?: number;
  random?: () => number;
}

export interface CheckedBatch {
  write: BatchWrite;
  result: Omit<BatchResult, 'counted'>;
}

const strategyCache = new WeakMap<KernelProfile, StrategyName[]>();

/** Summary field names `<strategy>:<verdict>`, made once: building them per result cost ~1 µs a sample. */
const SUMMARY_KEYS: string[][] = TALLY_STRATEGIES.map((st) => VERDICTS.map((v) => `${st}:${v}`));

/**
 * The fp baseline, the entry-aware strategies the build's entry code supports, and orc when its
 * ORC tables were uploaded (PUT /v1/kernels/{buildId}/orc). On a build without frame pointers
 * the frame-pointer ones report not_applicable, which is the answer, not a failure.
 */
export function strategiesFor(p: KernelProfile): StrategyName[] {
  let s = strategyCache.get(p);
  if (!s) {
    s = STRATEGIES.filter((n) => n === 'fp' || p.layouts.has(n));
    if (p.orc) s.push('orc');
    strategyCache.set(p, s);
  }
  return s;
}

export async function checkBatch(jobId: string, job: BatchJob, samples: Sample[], indices: number[], ctx: CheckContext): Promise<CheckedBatch> {
  const tally = new BatchTally();
  const traces: TraceRecord[] = [];
  const hostSummaries = new Map<string, Map<string, number>>();
  const kernelSummaries = new Map<string, Map<string, number>>();
  const skip = new Set(job.skip);
  const random = ctx.random ?? Math.random;
  const maxTraces = ctx.maxTraces ?? 1000;
  const labels = new Map<string, string>();
  const profiles = new Map<string, KernelProfile | undefined>();
  const result = { checked: 0, callchainOnly: 0, failing: 0, traces: 0 };

  for (let n = 0; n < samples.length; n++) {
    const index = indices[n]!;
    if (skip.has(index)) continue;
    const s = samples[n]!;
    const host = s.host ?? job.uploader;
    const kernel = s.kernel ?? job.kernel ?? 'unknown';
    const hs = summaryOf(hostSummaries, host);
    const ks = summaryOf(kernelSummaries, kernel);
    if (!hasFullState(s)) {
      result.callchainOnly++;
      bump(hs, 'callchain_only');
      bump(ks, 'callchain_only');
      continue;
    }
    let profile = profiles.get(kernel);
    if (!profiles.has(kernel)) profiles.set(kernel, (profile = await ctx.profile(kernel)));
    if (!profile) {
      // The API refused unknown builds; this is a build whose profile vanished since (manual delete).
      bump(hs, 'unprofiled');
      continue;
    }
    let label: string | undefined;
    if (ctx.hostLabel) {
      label = labels.get(host);
      if (label === undefined) labels.set(host, (label = await ctx.hostLabel(host)));
    }
    const t0 = performance.now();
    const check = checkSample(s, profile, strategiesFor(profile));
    tally.duration((performance.now() - t0) / 1000);
    result.checked++;
    bump(hs, 'samples');
    bump(ks, 'samples');

    let failing = check.disagreements.length > 0;
    const failingStrategies: string[] = [];
    const reasons = new Set<string>();
    for (const r of check.results) {
      const si = strategyIndex(r.strategy);
      const vi = verdictIndex(r.verdict);
      tally.unwind(si, vi, r.unwind.frames.length);
      const key = SUMMARY_KEYS[si]![vi]!;
      bump(hs, key);
      bump(ks, key);
      const counts = !BASELINE.has(r.strategy);
      const bad = !GOOD_VERDICTS.has(r.verdict);
      if (bad) tally.failure(r.strategy, r.reason ?? r.verdict, r.entry, label);
      if (r.falseReliable) tally.falseReliable[si]!++;
      if (bad || r.falseReliable) {
        failingStrategies.push(r.strategy);
        if (counts) {
          failing = true;
          reasons.add(r.falseReliable && !bad ? 'false_reliable' : (r.reason ?? r.verdict));
          if (r.falseReliable) reasons.add('false_reliable');
        }
      }
    }
    for (const [a, b] of check.disagreements) tally.disagreement(`${a},${b}`);
    if (check.disagreements.length > 0) reasons.add('disagreement');
    if (failing) {
      result.failing++;
      bump(hs, 'failing');
      bump(ks, 'failing');
    }
    if (traces.length < maxTraces && (failing || (ctx.passingRatio > 0 && random() < ctx.passingRatio))) {
      const id = `${jobId}-${index}`;
      traces.push({
        id, host, kernel, score: job.receivedAt * 1000 + (index % 1000),
        status: failing ? 'failing' : 'passing', strategies: failingStrategies, reasons: [...reasons],
        json: traceJson(id, jobId, index, job, host, kernel, failing, s, check, profile),
      });
    }
  }
  result.traces = traces.length;
  return { write: { jobId, metrics: tally.fields(), traces, hostSummaries, kernelSummaries }, result };
}

function traceJson(id: string, jobId: string, index: number, job: BatchJob, host: string, kernel: string, failing: boolean, s: Sample, check: SampleCheck, profile: KernelProfile): string {
  const checked = sampleCheckToJson(check, profile);
  const results = (checked.results as Record<string, unknown>[]).map((r, i) => ({
    ...r,
    baseline: BASELINE.has(check.results[i]!.strategy),
    kernel_text: renderKernelTrace(s, profile, check.results[i]!.unwind),
  }));
  return JSON.stringify({
    id, job: jobId, index, received_at: new Date(job.receivedAt).toISOString(), uploader: job.uploader, source: job.source,
    host, kernel, status: failing ? 'failing' : 'passing', sample: sampleToJson(s), results, disagreements: checked.disagreements,
  });
}

function summaryOf(m: Map<string, Map<string, number>>, k: string): Map<string, number> {
  let v = m.get(k);
  if (!v) m.set(k, (v = new Map()));
  return v;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}
