// The job codec: one BullMQ job per uploaded batch. The job's data is small (who, what, how many);
// the batch's bytes sit in their own key (Keys.body). The API reads an upload once and stores its
// samples in the binary batch form (services/core/dump/batch-form.ts): the worker decodes that without
// parsing any text, which halves the service's CPU per sample (bench/RESULTS.md, bench:e2e). Each
// sample keeps its index in the upload, so indices agree between the API's 202 and the worker's
// traces. Jobs queued by an older API (v 1: the upload's bytes as sent, gzip or not) are still
// parsed the old way, so an upgrade loses nothing that was accepted.
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { DumpError, type ParseResult } from '../core/dump/errors.ts';
import { parseJsonDump } from '../core/dump/json.ts';
import { parseTextDump } from '../core/dump/text.ts';
import type { EncodedBatch } from '../core/dump/batch-form.ts';
import { encodeParsed } from '../core/dump/batch-encode.ts';
import { transcodeTextDump } from '../core/dump/batch-transcode.ts';
import type { Sample } from '../core/dump/sample.ts';

export const SOURCES = ['emulator', 'agent', 'perf', 'ci', 'upload'] as const;
export type Source = (typeof SOURCES)[number];

export type BodyFormat = 'text' | 'json' | 'auto';

export interface BatchJob {
  /** 2: the stored bytes are the binary batch form. 1 (older APIs): the upload's bytes as sent. */
  v: 1 | 2;
  /** The upload's format as the client declared it (v 1: how to parse the stored bytes). */
  format: BodyFormat;
  /** v 1: the stored bytes are gzip. */
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
      b = gunzipSync(raw, { maxOutputLength: maxDecoded, chunkSize: outputChunk(raw, maxDecoded) });
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

/**
 * zlib's output chunk for a gzip body. The default 16 KiB makes a 1 MB batch ~60 inflate calls
 * and a concat: sized from the gzip trailer's ISIZE (the input's length mod 2^32, as the client
 * claims it) gunzip takes ~30 % less time. The claim is only a hint: it is capped by what deflate
 * can expand these bytes to (~1032:1) and by 16 MiB, so a lying trailer cannot make a small body
 * allocate a large buffer; maxOutputLength still bounds the result.
 */
function outputChunk(raw: Buffer, maxDecoded: number): number {
  const isize = raw.length >= 18 ? raw.readUInt32LE(raw.length - 4) : 0;
  return Math.max(64 * 1024, Math.min(isize + 1, maxDecoded + 1, raw.length * 1032, 16 * 1024 * 1024));
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
 * The upload read once, for the API: usable samples by index with their kernel, the rejections
 * (index, line, field, message: always the parser's own), and the binary batch the worker checks.
 * Text dumps are transcoded from the bytes (no string of the whole body is made).
 */
export function encodeBatch(body: Buffer, format: BodyFormat, maxBytes: number): EncodedBatch {
  if (formatOfBytes(body, format) === 'text') return transcodeTextDump(body, { file: 'body', maxBytes });
  return encodeParsed(parseJsonDump(body.toString('utf8'), { file: 'body', maxBytes }));
}

/** formatOfText on the bytes: ASCII whitespace is skipped here, anything else non-ASCII (a BOM) decides as text would. */
function formatOfBytes(b: Buffer, format: BodyFormat): 'json' | 'text' {
  if (format !== 'auto') return format;
  const n = Math.min(b.length, 4096);
  for (let i = 0; i < n; i++) {
    const c = b[i]!;
    if (c === 0x20 || (c >= 0x09 && c <= 0x0d)) continue;
    if (c >= 0x80) return formatOfText(b.subarray(0, 4096).toString('utf8'), format);
    return c === 0x7b || c === 0x5b ? 'json' : 'text';
  }
  return 'text';
}

/** Original indices of the parsed samples (parsed.samples skips the rejected ones). */
export function sampleIndices(parsed: ParseResult<Sample>): number[] {
  const rejected = new Set(parsed.rejected.map((r) => r.sampleIndex));
  const out: number[] = [];
  for (let i = 0; out.length < parsed.samples.length; i++) if (!rejected.has(i)) out.push(i);
  return out;
}
