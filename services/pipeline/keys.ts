// Redis key layout. Every key starts with the hash-tagged prefix, so the queue, the trace store and
// the metric totals share one Cluster slot and the Lua scripts may touch any of them.
export class Keys {
  constructor(readonly prefix: string) {}
  /** The uploaded batch bytes, referenced by the job (job data stays small). */
  body(jobId: string): string { return `${this.prefix}:body:${jobId}`; }
  /** Who won the upload's job id and what it was answered (claims.ts): the atomic idempotency claim. */
  claim(jobId: string): string { return `${this.prefix}:claim:${jobId}`; }
  /** Set once the batch's results were committed: the idempotency marker. */
  done(jobId: string): string { return `${this.prefix}:done:${jobId}`; }
  kernel(buildId: string): string { return `${this.prefix}:kernel:${buildId}`; }
  get kernels(): string { return `${this.prefix}:kernels`; }
  /** Metric totals over every worker: field = series key, value = count. */
  get metrics(): string { return `${this.prefix}:metrics`; }
  /** Committed batches' counter increments not yet applied to metrics and the summaries (trace-store.ts). */
  get pendingCounters(): string { return `${this.prefix}:counters:pending`; }
  get hostLabels(): string { return `${this.prefix}:hostlabels`; }
  get traces(): string { return `${this.prefix}:traces`; }
  get traceMeta(): string { return `${this.prefix}:tmeta`; }
  index(kind: 'all' | 'host' | 'kernel' | 'strategy' | 'reason' | 'status', value = ''): string {
    return kind === 'all' ? `${this.prefix}:idx:all` : `${this.prefix}:idx:${kind}:${value}`;
  }
  summary(kind: 'host' | 'kernel', value: string): string { return `${this.prefix}:sum:${kind}:${value}`; }
  get hosts(): string { return `${this.prefix}:hosts`; }
}
