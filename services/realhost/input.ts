// Reading an input as bytes (perf.data is binary; perf script text is bytes to the collapser; text
// formats decode afterwards): a file or stdin, gzip detected by its magic, the size limit enforced
// before and during decompression.
import { readFileSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { DumpError } from '../core/dump/errors.ts';
import { parseJsonDump } from '../core/dump/json.ts';
import { parseTextDump } from '../core/dump/text.ts';
import type { ParseResult } from '../core/dump/errors.ts';
import type { Sample } from '../core/dump/sample.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { isPerfData, parsePerfData } from './perf-data.ts';
import { kernelLogContext, kernelLogSamples, looksLikeKernelLog, parseKernelLog } from './kernel-log.ts';
import type { HostChainContext } from './callchain-check.ts';

export const DEFAULT_MAX_INPUT = 256 * 1024 * 1024;

/**
 * An input file that could not be opened at all (missing, unreadable, a directory): no sample was
 * read from it, so callers report it once as such rather than as a sample's rejection.
 */
export class InputFileError extends DumpError {}

export function readInputBytes(path: string, maxBytes = DEFAULT_MAX_INPUT): Buffer {
  let raw: Buffer;
  try {
    if (path === '-') raw = readFileSync(0);
    else {
      const st = statSync(path);
      if (st.isDirectory()) throw new InputFileError('bad_field', 'is a directory, not an input file', { file: path });
      if (st.size > maxBytes) throw new DumpError('oversized', `is ${st.size} bytes; the limit is ${maxBytes} (--max-bytes)`, { file: path });
      raw = readFileSync(path);
    }
  } catch (e) {
    if (e instanceof DumpError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputFileError('bad_field', code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`, { file: path });
  }
  if (raw.length > maxBytes) throw new DumpError('oversized', `is over the ${maxBytes}-byte limit (--max-bytes)`, { file: path });
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw, { maxOutputLength: maxBytes });
    } catch (e) {
      const msg = (e as Error).message;
      if (/maxOutputLength|Cannot create a Buffer larger/i.test(msg) || (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new DumpError('oversized', `decompresses to more than ${maxBytes} bytes (--max-bytes)`, { file: path });
      }
      throw new DumpError('truncated', `is not a complete gzip stream: ${msg}`, { file: path });
    }
  }
  return raw;
}


export type InputKind = 'perf.data' | 'kernel-log' | 'json' | 'text';

export interface HostInput {
  kind: InputKind;
  parsed: ParseResult<Sample>;
  /** Kernel-log facts about a sample's callchain (see kernelLogContext). */
  contexts: WeakMap<Sample, HostChainContext>;
  /** Things the reader could not do, for the user (e.g. compressed perf.data records). */
  notes: string[];
}

/**
 * Reads any input the checker accepts, told apart by content: perf.data by its PERFILE2 magic,
 * JSON by a leading { or [, a kernel log by a "Call Trace:" line (and no perf script header
 * before it), else the perf-script-compatible text dump.
 */
export function readHostInput(path: string, opts: { maxBytes?: number; profile?: KernelProfile } = {}): HostInput {
  const bytes = readInputBytes(path, opts.maxBytes);
  const file = path === '-' ? '<stdin>' : path;
  const contexts = new WeakMap<Sample, HostChainContext>();
  if (isPerfData(bytes)) {
    const r = parsePerfData(bytes, { file });
    for (const [s, c] of r.contexts) contexts.set(s, c);
    return { kind: 'perf.data', parsed: { samples: r.samples, rejected: r.rejected }, contexts, notes: r.notes.map((n) => `${file}: ${n}`) };
  }
  const text = bytes.toString('utf8');
  const first = /\S/.exec(text)?.[0];
  if (first === '{' || first === '[') return { kind: 'json', parsed: parseJsonDump(text, { file, ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}) }), contexts, notes: [] };
  if (looksLikeKernelLog(text)) {
    const log = parseKernelLog(text);
    const samples = kernelLogSamples(log, { file, ...(opts.profile ? { profile: opts.profile } : {}) });
    samples.forEach((s, i) => contexts.set(s, kernelLogContext(log.traces[i]!)));
    const notes = log.warnings.length > 0 ? [`${file}: ${log.warnings.length} unwinder warning(s) printed outside any Call Trace`] : [];
    return { kind: 'kernel-log', parsed: { samples, rejected: [] }, contexts, notes };
  }
  return { kind: 'text', parsed: parseTextDump(text, { file, ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}) }), contexts, notes: [] };
}
