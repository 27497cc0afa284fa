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
  /** A batch's attempts so far (dead-letter.ts): started, not yet ended, first and last start. */
  attempts(jobId: string): string { return `${this.prefix}:attempts:${jobId}`; }
  /** Parked batches (dead-letter.ts): job id scored by park time; each one's record in deadLetter(id). */
  get deadLetters(): string { return `${this.prefix}:deadletter`; }
  deadLetter(jobId: string): string { return `${this.prefix}:deadletter:${jobId}`; }
  /** Batches ever parked, by reason (the dead-lettered counter). */
  get deadLetterTotals(): string { return `${this.prefix}:deadletter-totals`; }
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
  /** The counters of the batches committed in one hour (start of the hour, ms): the overview's time series. */
  hourSummary(hourStartMs: number): string { return `${this.prefix}:sum:hour:${hourStartMs}`; }
  get hosts(): string { return `${this.prefix}:hosts`; }
  /** One finding (findings.ts): its signature fields, counts, capped lists and state. */
  finding(id: string): string { return `${this.prefix}:finding:${id}`; }
  /** Finding ids by count and by last seen (ms): the list's two orders; ZCARD is the cap's measure. */
  findingsBy(order: 'count' | 'last_seen'): string { return `${this.prefix}:findings:by_${order}`; }
  /** Ids of the findings marked known (read by workers to label failures). */
  get findingsKnown(): string { return `${this.prefix}:findings:known`; }
  /** `<state>:<strategy>` -> number of findings, `overflow` (occurrences beyond the cap), `rev` (bumped by every state change). */
  get findingsStats(): string { return `${this.prefix}:findings:stats`; }
}
