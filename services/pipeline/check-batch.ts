// Checks one batch: every sample with the fp baseline plus the entry-aware strategies its kernel
// supports, tallied into metric deltas, per-host and per-kernel summaries, and trace records for
// failing samples (and a sampled share of passing ones). No I/O here except the profile lookup.
//
// A stored trace keeps the sample's binary record and what it was checked against, not rendered
// output: the detail (frames, symbols, kernel-style text) is re-derived when someone reads it
// (trace-view.ts), because only a few stored traces are ever read while every one was paid for on
// the hot path. Per-sample bookkeeping goes into flat counters indexed by strategy and verdict
// and becomes the summaries' field maps once per batch.
import { performance } from 'node:perf_hooks';
import { checkSample, type SampleCheck, type StrategyCheck } from '../core/check/checker.ts';
import { findingsOf } from '../core/check/findings.ts';
import { GOOD_VERDICTS, VERDICTS } from '../core/check/reasons.ts';
import { decodeBatch } from '../core/dump/batch-decode.ts';
import { encodeSamples } from '../core/dump/batch-encode.ts';
import { hasFullState, type Sample } from '../core/dump/sample.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { STRATEGIES, type StrategyName } from '../core/unwind/types.ts';
import type { BatchJob, BatchResult } from './job.ts';
import { BatchTally, TALLY_STRATEGIES, strategyIndex, verdictIndex } from './metrics.ts';
import { FindingsBatch } from './findings-batch.ts';
import { encodeTraceBody, type BatchWrite, type TraceHeader, type TraceRecord } from './trace-store.ts';

/**
 * The fp baseline loses the interrupted function at every entry by design (docs/architecture.md).
 * Its unwinds are counted under strategy="fp" like any other, so dashboards can show what the
 * entry-aware strategies recover; but it never makes a sample "failing" (trace store, summaries'
 * failing count), exactly as the CLI's default run treats it.
 */
export const BASELINE: ReadonlySet<StrategyName> = new Set(['fp']);

/** A build's profile and its revision (KernelStore.entry); the revision is undefined when unknown. */
export interface ProfileAt {
  profile: KernelProfile;
  rev: number | undefined;
}

export type ProfileLookup = (buildId: string) => Promise<ProfileAt | undefined>;

export interface CheckContext {
  /**
   * The build's profile with its revision, which each stored trace records so that a detail
   * rendered later says when the symbols or options changed since the check.
   */
  profile: ProfileLookup;
  /** The host label value for a host, or undefined when the host label is off. */
  hostLabel?: (host: string) => Promise<string>;
  passingRatio: number;
  /** The checker build (checker-build.ts), recorded with each stored trace. */
  checker?: string;
  /**
   * Ids of the findings marked known (FindingsStore.known): their failures are counted with
   * finding="known", every other one of an entry-aware strategy with finding="new".
   */
  knownFindings?: ReadonlySet<string>;
  /**
   * Traces stored per batch at most: the batch's writes go to Redis in one script, which must stay
   * short however many samples of a huge batch fail (the rest are still counted).
   */
  maxTraces?: number;
  random?: () => number;
  /**
   * Give the event loop a turn after this much checking (ms). A worker's batch lock is renewed by
   * a timer on that loop: a huge batch checked in one go would let the lock expire, and another
   * worker would take the batch as stalled while this one still checks it.
   */
  yieldEveryMs?: number;
}

export interface CheckedBatch {
  write: BatchWrite;
  result: Omit<BatchResult, 'counted'>;
}

const strategyCache = new WeakMap<KernelProfile, StrategyName[]>();

/** Summary field names `<strategy>:<verdict>`, made once: building them per result cost ~1 µs a sample. */
const SUMMARY_KEYS: string[][] = TALLY_STRATEGIES.map((st) => VERDICTS.map((v) => `${st}:${v}`));

const NS = TALLY_STRATEGIES.length;
const NV = VERDICTS.length;
/** Per-summary counters: these four, then one per (strategy, verdict) at FIXED + s * NV + v. */
const FIXED_FIELDS = ['samples', 'failing', 'callchain_only', 'unprofiled'] as const;
const SAMPLES = 0;
const FAILING = 1;
const CALLCHAIN_ONLY = 2;
const UNPROFILED = 3;
const FIXED = FIXED_FIELDS.length;
const SUMMARY_SIZE = FIXED + NS * NV;
const GOOD = Uint8Array.from(VERDICTS, (v) => (GOOD_VERDICTS.has(v) ? 1 : 0));
const IS_BASELINE = Uint8Array.from(TALLY_STRATEGIES, (s) => (BASELINE.has(s) ? 1 : 0));
const EMPTY = new Uint8Array(0);
const NO_FINDINGS: ReadonlySet<string> = new Set();

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

/** What a check says about a sample as the trace store indexes it. */
export interface Verdicts {
  failing: boolean;
  /** Strategies (the baseline included) with a bad verdict or a false reliable claim, in check order. */
  strategies: string[];
  /** Why the sample fails, from the entry-aware strategies only, first occurrence order. */
  reasons: string[];
}

/**
 * The meta of a stored trace. checkBatch calls it only for samples it stores, and the trace view
 * calls it again on the re-derived check: one definition, so the two agree unless the check did.
 */
export function verdictsOf(check: SampleCheck): Verdicts {
  let failing = check.disagreements.length > 0;
  const strategies: string[] = [];
  const reasons = new Set<string>();
  for (const r of check.results) {
    const bad = !GOOD_VERDICTS.has(r.verdict);
    if (!bad && !r.falseReliable) continue;
    strategies.push(r.strategy);
    if (BASELINE.has(r.strategy)) continue;
    failing = true;
    reasons.add(r.falseReliable && !bad ? 'false_reliable' : (r.reason ?? r.verdict));
    if (r.falseReliable) reasons.add('false_reliable');
  }
  if (check.disagreements.length > 0) reasons.add('disagreement');
  return { failing, strategies, reasons: [...reasons] };
}

/** Samples' own record bytes, for a batch whose records the caller did not pass (tests, old jobs). */
function encodeSampleRecords(samples: readonly Sample[], indices: readonly number[]): Uint8Array[] {
  // One batch for all of them: the batch header and the encoder's set-up are paid once.
  return decodeBatch(encodeSamples(samples, indices)).records;
}

/**
 * `records`, when given, holds each sample's own binary record (aligned with `samples`), stored
 * as is with the sample's trace; without it a stored sample is encoded here.
 */
export async function checkBatch(
  jobId: string, job: BatchJob, samples: readonly Sample[], indices: readonly number[], ctx: CheckContext, records?: readonly Uint8Array[],
): Promise<CheckedBatch> {
  const tally = new BatchTally();
  const traces: TraceRecord[] = [];
  // Summaries: one flat counter block per host / kernel, found by name once per sample.
  const hostSlot = new Map<string, number>();
  const kernelSlot = new Map<string, number>();
  let hostCounts: Int32Array = new Int32Array(SUMMARY_SIZE * 4);
  let kernelCounts: Int32Array = new Int32Array(SUMMARY_SIZE * 4);
  const skip = job.skip.length > 0 ? new Set(job.skip) : undefined;
  const random = ctx.random ?? Math.random;
  const maxTraces = ctx.maxTraces ?? 1000;
  const labels = new Map<string, string>();
  const profiles = new Map<string, { profile: KernelProfile | undefined; rev: number | undefined; strategies: StrategyName[] }>();
  const findings = new FindingsBatch();
  const known = ctx.knownFindings ?? NO_FINDINGS;
  // A sample's failing unwinds of entry-aware strategies: counted once their finding is known.
  const bads: StrategyCheck[] = [];
  const result = { checked: 0, callchainOnly: 0, failing: 0, traces: 0 };
  // Stored traces whose record is still to be encoded (no `records`): sample, index, header.
  const toEncode: { sample: Sample; index: number; header: TraceHeader; trace: number }[] = [];
  const yieldEvery = ctx.yieldEveryMs ?? Infinity;
  let lastYield = performance.now();

  for (let n = 0; n < samples.length; n++) {
    const index = indices[n]!;
    if (skip?.has(index)) continue;
    const s = samples[n]!;
    const host = s.host ?? job.uploader;
    const kernel = s.kernel ?? job.kernel ?? 'unknown';
    let hb = hostSlot.get(host);
    if (hb === undefined) {
      hb = hostSlot.size * SUMMARY_SIZE;
      hostSlot.set(host, hb);
      if (hb + SUMMARY_SIZE > hostCounts.length) hostCounts = grow(hostCounts);
    }
    let kb = kernelSlot.get(kernel);
    if (kb === undefined) {
      kb = kernelSlot.size * SUMMARY_SIZE;
      kernelSlot.set(kernel, kb);
      if (kb + SUMMARY_SIZE > kernelCounts.length) kernelCounts = grow(kernelCounts);
    }
    if (!hasFullState(s)) {
      result.callchainOnly++;
      hostCounts[hb + CALLCHAIN_ONLY]!++;
      kernelCounts[kb + CALLCHAIN_ONLY]!++;
      continue;
    }
    let p = profiles.get(kernel);
    if (p === undefined) {
      const at = await ctx.profile(kernel);
      profiles.set(kernel, (p = { profile: at?.profile, rev: at?.rev, strategies: at ? strategiesFor(at.profile) : [] }));
    }
    const profile = p.profile;
    if (!profile) {
      // The API refused unknown builds; this is a build whose profile vanished since (manual delete).
      hostCounts[hb + UNPROFILED]!++;
      continue;
    }
    let label: string | undefined;
    if (ctx.hostLabel) {
      label = labels.get(host);
      if (label === undefined) labels.set(host, (label = await ctx.hostLabel(host)));
    }
    let t0 = performance.now();
    if (t0 - lastYield > yieldEvery) {
      await new Promise<void>((r) => setImmediate(r));
      lastYield = t0 = performance.now();
    }
    const check = checkSample(s, profile, p.strategies);
    tally.duration((performance.now() - t0) / 1000);
    result.checked++;
    hostCounts[hb + SAMPLES]!++;
    kernelCounts[kb + SAMPLES]!++;

    let failing = check.disagreements.length > 0;
    let flagged = false;
    bads.length = 0;
    const res = check.results;
    for (let i = 0; i < res.length; i++) {
      const r = res[i]!;
      const si = strategyIndex(r.strategy);
      const vi = verdictIndex(r.verdict);
      tally.unwind(si, vi, r.unwind.frames.length);
      const field = FIXED + si * NV + vi;
      hostCounts[hb + field]!++;
      kernelCounts[kb + field]!++;
      const bad = GOOD[vi] === 0;
      if (bad) {
        if (IS_BASELINE[si] === 1) tally.failure(r.strategy, r.reason ?? r.verdict, r.entry, label, 'baseline');
        else bads.push(r);
      }
      if (r.falseReliable) tally.falseReliable[si]!++;
      if (bad || r.falseReliable) {
        flagged = true;
        if (IS_BASELINE[si] === 0) failing = true;
      }
    }
    const dis = check.disagreements;
    for (let i = 0; i < dis.length; i++) tally.disagreement(`${dis[i]![0]},${dis[i]![1]}`);
    if (failing) {
      result.failing++;
      hostCounts[hb + FAILING]!++;
      kernelCounts[kb + FAILING]!++;
    }
    let traceId: string | undefined;
    if (traces.length < maxTraces && (failing || (ctx.passingRatio > 0 && random() < ctx.passingRatio))) {
      // Only stored samples pay for their strategy and reason lists.
      const v: Verdicts = flagged || failing ? verdictsOf(check) : { failing, strategies: [], reasons: [] };
      const header: TraceHeader = {
        job: jobId, index, receivedAt: job.receivedAt, uploader: job.uploader, source: job.source,
        ...(p.rev !== undefined ? { rev: p.rev } : {}), ...(ctx.checker !== undefined ? { checker: ctx.checker } : {}),
      };
      const record = records?.[n];
      if (record === undefined) toEncode.push({ sample: s, index, header, trace: traces.length });
      traceId = `${jobId}-${index}`;
      traces.push({
        id: traceId, host, kernel, score: job.receivedAt * 1000 + (index % 1000),
        status: failing ? 'failing' : 'passing', strategies: v.strategies, reasons: v.reasons,
        body: record === undefined ? EMPTY : encodeTraceBody(header, record),
      });
    }
    if (failing) {
      // The baseline is left out exactly as above: its failures make no sample failing and no finding.
      const sigs = findingsOf(s, check, profile, BASELINE);
      for (const sig of sigs) findings.add(sig, host, kernel, job.receivedAt, traceId);
      for (const r of bads) {
        const sig = sigs.find((x) => x.strategy === r.strategy);
        tally.failure(r.strategy, r.reason ?? r.verdict, r.entry, label, sig !== undefined && known.has(sig.id) ? 'known' : 'new');
      }
    }
  }
  if (toEncode.length > 0) {
    const recs = encodeSampleRecords(toEncode.map((e) => e.sample), toEncode.map((e) => e.index));
    toEncode.forEach((e, i) => { traces[e.trace]!.body = encodeTraceBody(e.header, recs[i]!); });
  }
  result.traces = traces.length;
  return {
    write: {
      jobId, metrics: tally.fields(), traces, hostSummaries: summaries(hostSlot, hostCounts), kernelSummaries: summaries(kernelSlot, kernelCounts),
      findings: [...findings.byId.values()],
    },
    result,
  };
}

function grow(a: Int32Array): Int32Array {
  const b = new Int32Array(a.length * 2);
  b.set(a);
  return b;
}

/**
 * The counter blocks as field -> increment maps, nonzero fields only. Every name seen keeps its
 * (possibly empty) map: the commit refreshes its summary's expiry and, for hosts, the host list.
 */
function summaries(slots: Map<string, number>, counts: Int32Array): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const [name, base] of slots) {
    const m = new Map<string, number>();
    for (let f = 0; f < FIXED; f++) if (counts[base + f]! > 0) m.set(FIXED_FIELDS[f]!, counts[base + f]!);
    for (let si = 0; si < NS; si++) {
      for (let vi = 0; vi < NV; vi++) {
        const c = counts[base + FIXED + si * NV + vi]!;
        if (c > 0) m.set(SUMMARY_KEYS[si]![vi]!, c);
      }
    }
    out.set(name, m);
  }
  return out;
}
