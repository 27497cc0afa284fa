// Tallies over many samples: per strategy and verdict, failure reasons, rejected inputs by reason.
// The CLI prints it; the workers (later) turn the same tallies into metrics.
import type { Rejection, RejectReason } from '../dump/errors.ts';
import type { Sample } from '../dump/sample.ts';
import type { StrategyName } from '../unwind/types.ts';
import type { SampleCheck } from './checker.ts';
import { GOOD_VERDICTS, type Reason, type Verdict } from './reasons.ts';

export interface Failure {
  index: number;
  sample: Sample;
  check: SampleCheck;
}

export class CheckSummary {
  samples = 0;
  /** Samples with no registers or stack memory: only their host callchain can be looked at. */
  callchainOnly = 0;
  flaggedFrames = new Map<string, number>();
  readonly verdicts = new Map<StrategyName, Map<Verdict, number>>();
  readonly reasons = new Map<StrategyName, Map<Reason, number>>();
  readonly rejected = new Map<RejectReason, number>();
  readonly rejections: Rejection[] = [];
  disagreements = 0;
  falseReliable = 0;
  readonly failures: Failure[] = [];
  failingSamples = 0;

  constructor(private readonly keepFailures = 50) {}

  reject(r: Rejection): void {
    this.rejected.set(r.reason, (this.rejected.get(r.reason) ?? 0) + 1);
    if (this.rejections.length < 1000) this.rejections.push(r);
  }

  addCallchainOnly(sample: Sample): void {
    this.samples++;
    this.callchainOnly++;
    for (const c of sample.callchain ?? []) for (const f of c.flags) this.flaggedFrames.set(f, (this.flaggedFrames.get(f) ?? 0) + 1);
  }

  /**
   * Tallies one checked sample. Results of strategies in `baseline` are tallied but do not make
   * the sample fail (the fp baseline loses frames at every entry by design).
   */
  add(index: number, sample: Sample, check: SampleCheck, baseline: ReadonlySet<StrategyName> = NO_BASELINE): void {
    this.samples++;
    let failed = false;
    for (const r of check.results) {
      bump(this.verdicts, r.strategy, r.verdict);
      const counts = !baseline.has(r.strategy);
      if (!GOOD_VERDICTS.has(r.verdict)) {
        if (counts) failed = true;
        if (r.reason) bump(this.reasons, r.strategy, r.reason);
      }
      if (r.falseReliable && counts) {
        this.falseReliable++;
        failed = true;
      }
    }
    if (check.disagreements.length > 0) {
      this.disagreements++;
      failed = true;
    }
    if (failed) {
      this.failingSamples++;
      if (this.failures.length < this.keepFailures) this.failures.push({ index, sample, check });
    }
  }

  get rejectedCount(): number {
    let n = 0;
    for (const v of this.rejected.values()) n += v;
    return n;
  }
}

const NO_BASELINE: ReadonlySet<StrategyName> = new Set();

function bump<K, V>(m: Map<K, Map<V, number>>, k: K, v: V): void {
  let inner = m.get(k);
  if (!inner) m.set(k, (inner = new Map()));
  inner.set(v, (inner.get(v) ?? 0) + 1);
}
