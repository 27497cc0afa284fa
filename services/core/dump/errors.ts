// Errors about input name what is wrong and where: file, line, field, sample index.

/** Closed list of reasons a sample is rejected before any unwinding. */
export const REJECT_REASONS = [
  'bad_header', // the sample's first line is not a perf-style header
  'bad_hex', // a hex number is malformed or wider than 64 bits
  'bad_field', // an unknown keyword, field, stack type, kind or a missing value
  'bad_json', // not JSON, or JSON of the wrong shape
  'window_out_of_bounds', // a captured window lies outside its stack's bounds
  'overlapping_stacks', // two stacks (or two windows) share bytes, or a stack type appears twice
  'impossible_regs', // registers that no CPU state can have (sp outside every stack, misaligned sp, ...)
  'truncated', // the input ends in the middle of a sample
  'oversized', // over the size limit for one sample or one input
  'unknown_build_id', // the sample names a kernel whose profile is not known
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export interface Location {
  file?: string;
  line?: number;
  field?: string;
  sampleIndex?: number;
}

export class DumpError extends Error {
  readonly reason: RejectReason;
  readonly where: Location;
  constructor(reason: RejectReason, message: string, where: Location = {}) {
    super(message);
    this.name = 'DumpError';
    this.reason = reason;
    this.where = where;
  }

  /** "file:line: sample 3: field sp: message" with whichever parts are known. */
  describe(): string {
    const w = this.where;
    const parts: string[] = [];
    if (w.file !== undefined) parts.push(w.line !== undefined ? `${w.file}:${w.line}` : w.file);
    else if (w.line !== undefined) parts.push(`line ${w.line}`);
    if (w.sampleIndex !== undefined) parts.push(`sample ${w.sampleIndex}`);
    if (w.field !== undefined) parts.push(`field ${w.field}`);
    parts.push(this.message);
    return parts.join(': ');
  }
}

export interface Rejection {
  /** Index of the sample in its input (0-based, counting rejected ones too). */
  sampleIndex: number;
  reason: RejectReason;
  message: string;
  where: Location;
}

export function rejectionOf(e: DumpError, sampleIndex: number): Rejection {
  return { sampleIndex, reason: e.reason, message: e.describe(), where: { ...e.where, sampleIndex } };
}

/** What every parser returns: the samples it could read and, by index, the ones it could not. */
export interface ParseResult<S> {
  samples: S[];
  rejected: Rejection[];
}
