// The API's validate-only view of a text dump, kept for its callers while they move to the binary
// batch form: transcodeTextDump (batch.ts) does the same one-pass, exact-by-construction reading
// and also writes the samples, so this is that function without its bytes. Same answer as
// parseTextDump (same options) for every input.
import { transcodeTextDump, type BatchSampleInfo } from './batch.ts';
import type { Rejection } from './errors.ts';
import type { TextParseOptions } from './text.ts';

/** What the API needs to know about one usable sample. */
export type ScannedSample = BatchSampleInfo;

export interface TextScan {
  samples: ScannedSample[];
  rejected: Rejection[];
  /** True when the fast path proved the whole text; false when parseTextDump judged it. */
  fast: boolean;
}

/**
 * Which samples of a text dump are usable, with the kernel each names, and the rejected ones with
 * the parser's reasons.
 */
export function scanTextDump(text: string, opts: TextParseOptions = {}): TextScan {
  const r = transcodeTextDump(text, opts);
  return { samples: r.samples, rejected: r.rejected, fast: r.fast };
}
