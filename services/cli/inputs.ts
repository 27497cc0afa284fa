// Reading inputs for the CLI: files or stdin, gzip detected by its magic bytes, a size limit
// enforced before and during decompression, and the dump format told from the first byte.
import { readFileSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { DumpError } from '../core/dump/errors.ts';

export const DEFAULT_MAX_INPUT = 256 * 1024 * 1024;

export function readInput(path: string, maxBytes = DEFAULT_MAX_INPUT): string {
  let raw: Buffer;
  try {
    if (path === '-') raw = readFileSync(0);
    else {
      const st = statSync(path);
      if (st.isDirectory()) throw new DumpError('bad_field', 'is a directory, not a dump file', { file: path });
      if (st.size > maxBytes) throw new DumpError('oversized', `is ${st.size} bytes; the limit is ${maxBytes} (--max-bytes)`, { file: path });
      raw = readFileSync(path);
    }
  } catch (e) {
    if (e instanceof DumpError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new DumpError('bad_field', code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`, { file: path });
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
  return raw.toString('utf8');
}

export type DumpFormat = 'json' | 'text';

/** JSON documents and NDJSON start with { or [; everything else is the perf-style text form. */
export function detectFormat(text: string): DumpFormat {
  const m = /\S/.exec(text);
  const c = m ? m[0] : '';
  return c === '{' || c === '[' ? 'json' : 'text';
}
