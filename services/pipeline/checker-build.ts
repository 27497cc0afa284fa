// Which checker a stored trace was checked with. A trace keeps its sample, not its results: the
// detail re-derives them when read (trace-view.ts), with the checker deployed then. If that is not
// the checker that judged the sample, frames or verdicts may differ from what was stored, and the
// detail says so. The build is a digest of the pure core's sources (services/core): any change to
// the stack model, symbols, dumps, unwinders or checker yields a new one, with no version number
// for anyone to forget to bump. (A change that only touches comments is flagged too: better a
// note that turns out unneeded than a changed trace passed off as the stored one.)
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const CORE = join(dirname(fileURLToPath(import.meta.url)), '..', 'core');

let build: string | undefined;

/** This process's checker build: sourcesDigest of services/core, or 'unknown' if it cannot be read. */
export function checkerBuild(): string {
  if (build !== undefined) return build;
  try {
    build = sourcesDigest(CORE);
  } catch {
    build = 'unknown';
  }
  return build;
}

/** 12 hex digits of sha256 over the .ts files under dir (relative path and bytes, in path order). */
export function sourcesDigest(dir: string): string {
  const files = sourcesUnder(dir).sort();
  if (files.length === 0) throw new Error(`no .ts sources under ${dir}`);
  const h = createHash('sha256');
  for (const f of files) h.update(relative(dir, f)).update('\0').update(readFileSync(f)).update('\0');
  return h.digest('hex').slice(0, 12);
}

function sourcesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourcesUnder(p));
    else if (e.isFile() && e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}
