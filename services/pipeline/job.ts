// The job codec: one BullMQ job per uploaded batch. The job's data is small (who, what, how many);
// the batch's bytes sit in their own key (Keys.body) exactly as uploaded (gzip stays gzip), so
// Redis holds them compressed when the client compressed them and the completed-job history
// stays cheap. The worker decodes the bytes with the same parser the API used, which is
// deterministic, so sample indices agree between the API's 202 and the worker's traces.
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { DumpError, type ParseResult } from '../core/dump/errors.ts';
import { parseJsonDump } from '../core/dump/json.ts';
import { parseTextDump } from '../core/dump/text.ts';
import { scanTextDump, type ScannedSample } from '../core/dump/scan.ts';
import { hasFullState, type Sample } from '../core/dump/sample.ts';

export const SOURCES = ['emulator', 'agent', 'perf', 'ci', 'upload'] as const;
export type Source = (typeof SOURCES)[number];

export type BodyFormat = 'text' | 'json' | 'auto';

export interface BatchJob {
  v: 1;
  format: BodyFormat;
  /** The stored bytes are gzip. */
  gzip: boolean;
  /** Token name of the uploader (never the token). */
  uploader: string;
  source: Source;
  /** Build id for samples that name none (?kernel=). */
  kernel?: string;
  receivedAt: number;
  /** Samples accepted by the API. */
  accepted: number;
  /** Indices the API rejected (parse errors, unknown build id): the worker skips them. */
  skip: number[];
}

export interface BatchResult {
  checked: number;
  callchainOnly: number;
  failing: number;
  traces: number;
  /** False when the results had already been committed by an earlier attempt. */
  counted: boolean;
}

export const JOB_NAME = 'batch';

/**
 * Job ids are derived from the uploader and the Idempotency-Key header, else the body's bytes, so
 * a client that retries an upload (timeout, 503) gets the same job instead of a second one.
 */
export function jobIdFor(uploader: string, body: Buffer, idempotencyKey: string | undefined): string {
  const h = createHash('sha256').update(uploader).update('\0');
  if (idempotencyKey !== undefined) h.update('key\0').update(idempotencyKey);
  else h.update('body\0').update(body);
  // BullMQ refuses ids with ':' and all-digit ids; hex with a prefix is neither.
  return `b-${h.digest('hex').slice(0, 32)}`;
}

export function isGzip(b: Uint8Array): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

/** The upload's bytes as text: gunzipped when they are gzip, within `maxDecoded` bytes. */
export function decodeBody(raw: Buffer, maxDecoded: number): string {
  return gunzipBody(raw, maxDecoded).toString('utf8');
}

/** The upload's bytes, gunzipped when they are gzip, within `maxDecoded` bytes. */
export function gunzipBody(raw: Buffer, maxDecoded: number): Buffer {
  let b = raw;
  if (isGzip(raw)) {
    try {
      b = gunzipSync(raw, { maxOutputLength: maxDecoded });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ERR_BUFFER_TOO_LARGE' || /maxOutputLength|larger than/i.test(err.message)) {
        throw new DumpError('oversized', `the body decompresses to more than ${maxDecoded} bytes`);
      }
      throw new DumpError('truncated', `the body is not a complete gzip stream: ${err.message}`);
    }
  }
  if (b.length > maxDecoded) throw new DumpError('oversized', `the body is ${b.length} bytes; the limit is ${maxDecoded}`);
  return b;
}

/** JSON documents and NDJSON start with { or [; everything else is the perf-style text form. */
function formatOfText(text: string, format: BodyFormat): 'json' | 'text' {
  if (format !== 'auto') return format;
  const m = /\S/.exec(text.length > 4096 ? text.slice(0, 4096) : text);
  return m && (m[0] === '{' || m[0] === '[') ? 'json' : 'text';
}

export function parseBatch(text: string, format: BodyFormat, maxBytes: number): ParseResult<Sample> {
  return formatOfText(text, format) === 'json' ? parseJsonDump(text, { file: 'body', maxBytes }) : parseTextDump(text, { file: 'body', maxBytes });
}

/**
 * What the API needs of a batch — usable samples by index with their kernel, and the rejections —
 * without building the samples the worker builds anyway. Text dumps go through the validate-only
 * scan (same answer as the parser, services/core/dump/scan.ts); JSON is parsed.
 */
export function scanBatch(text: string, format: BodyFormat, maxBytes: number): { samples: ScannedSample[]; rejected: ParseResult<Sample>['rejected'] } {
  if (formatOfText(text, format) === 'text') return scanTextDump(text, { file: 'body', maxBytes });
  const parsed = parseJsonDump(text, { file: 'body', maxBytes });
  const indices = sampleIndices(parsed);
  return {
    samples: parsed.samples.map((s, i) => ({ index: indices[i]!, line: s.source?.line ?? 0, kernel: s.kernel, fullState: hasFullState(s) })),
    rejected: parsed.rejected,
  };
}

/** Original indices of the parsed samples (parsed.samples skips the rejected ones). */
export function sampleIndices(parsed: ParseResult<Sample>): number[] {
  const rejected = new Set(parsed.rejected.map((r) => r.sampleIndex));
  const out: number[] = [];
  for (let i = 0; out.length < parsed.samples.length; i++) if (!rejected.has(i)) out.push(i);
  return out;
}
