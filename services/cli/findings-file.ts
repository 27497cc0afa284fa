// The findings file (`check --findings-out FILE`) and the baseline it becomes (`check --known FILE`):
// kernel CI runs the unpatched kernel once, keeps the file, and gates a patch on "no new unwinder
// findings". Identities (ids) do not include the build id or offsets (core/check/findings.ts), so a
// baseline taken on one build recognises the same blind spot on the next.
import { readFileSync, writeFileSync } from 'node:fs';
import { DumpError } from '../core/dump/errors.ts';
import type { Finding } from '../core/check/findings.ts';

export const FINDINGS_FORMAT = 'stacksanity-findings';
export const FINDINGS_VERSION = 1;

export interface FindingsFile {
  format: typeof FINDINGS_FORMAT;
  version: number;
  created: string;
  samples: number;
  findings: (Omit<Finding, 'falseReliable'> & { share: number; false_reliable: boolean; state?: 'new' | 'known' })[];
}

export function findingsDocument(list: readonly Finding[], samples: number, known?: ReadonlySet<string>): FindingsFile {
  return {
    format: FINDINGS_FORMAT,
    version: FINDINGS_VERSION,
    created: new Date().toISOString(),
    samples,
    findings: list.map(({ falseReliable, ...f }) => ({
      ...f,
      false_reliable: falseReliable,
      share: samples > 0 ? f.count / samples : 0,
      ...(known ? { state: known.has(f.id) ? 'known' as const : 'new' as const } : {}),
    })),
  };
}

export function writeFindingsFile(path: string, doc: FindingsFile): void {
  writeFileSync(path, JSON.stringify(doc, null, 2) + '\n');
}

/** The ids of a findings file, refused with a message naming the file and the field when malformed. */
export function readKnownIds(path: string): Set<string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DumpError('bad_json', `cannot read the known findings: ${(e as Error).message}`, { file: path });
  }
  const o = json as Partial<FindingsFile> | null;
  if (typeof o !== 'object' || o === null || o.format !== FINDINGS_FORMAT) {
    throw new DumpError('bad_field', `not a findings file (write one with check --findings-out FILE): "format" must be "${FINDINGS_FORMAT}"`, { file: path, field: 'format' });
  }
  if (typeof o.version !== 'number' || o.version > FINDINGS_VERSION) {
    throw new DumpError('bad_field', `findings file version ${String(o.version)} is newer than this stacksanity reads (${FINDINGS_VERSION})`, { file: path, field: 'version' });
  }
  if (!Array.isArray(o.findings)) throw new DumpError('bad_field', '"findings" must be an array', { file: path, field: 'findings' });
  const ids = new Set<string>();
  o.findings.forEach((f, i) => {
    const id = (f as { id?: unknown } | null)?.id;
    if (typeof id !== 'string' || !/^[0-9a-f]{16}$/.test(id)) throw new DumpError('bad_field', 'a finding id is 16 hex digits', { file: path, field: `findings[${i}].id` });
    ids.add(id);
  });
  return ids;
}

const MAX_ROWS = 40;

/** The findings table printed before the sample details (new ones first when a baseline is given). */
export function findingsTable(list: readonly Finding[], samples: number, known?: ReadonlySet<string>): string[] {
  if (list.length === 0) return [];
  if (known) list = [...list].sort((a, b) => Number(known.has(a.id)) - Number(known.has(b.id)) || b.count - a.count);
  const fresh = known ? list.filter((f) => !known.has(f.id)).length : undefined;
  const out = ['', `findings: ${list.length}${fresh !== undefined ? ` (${fresh} new, ${list.length - fresh} known)` : ''}`];
  out.push(`  ${'count'.padStart(7)} ${'share'.padStart(7)}  ${'id'.padEnd(16)}  ${known ? 'state  ' : ''}finding  (where; example sample)`);
  for (const f of list.slice(0, MAX_ROWS)) {
    const share = samples > 0 ? `${((100 * f.count) / samples).toFixed(2)}%` : '-';
    const state = known ? (known.has(f.id) ? 'known  ' : 'NEW    ') : '';
    out.push(`  ${String(f.count).padStart(7)} ${share.padStart(7)}  ${f.id}  ${state}${f.title}  (${f.at.slice(0, 3).join(', ')}; sample ${f.examples[0] ?? '?'})`);
  }
  if (list.length > MAX_ROWS) out.push(`  ... ${list.length - MAX_ROWS} more (all of them: --findings-out FILE or --format json)`);
  return out;
}
