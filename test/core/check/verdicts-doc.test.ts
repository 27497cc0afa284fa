// docs/verdicts.md is executable: every example dump in it is parsed and checked, and must get the
// verdict and reason its comment states; every verdict and reason of the closed lists must have a
// heading there. So the page cannot fall behind the code (nor the code drift from the page).
//
// An example is an HTML comment line
//   <!-- example: strategy=<name> verdict=<verdict> reason=<reason or -> [false_reliable=true|false] [disagrees=<strategy>] [kallsyms=<n>] [orc=<n>] [frame_pointers=yes|no] -->
// immediately followed by a ```dump fenced block; kallsyms=<n> names the n-th ```kallsyms block of
// the page (default 1).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseTextDump } from '../../../services/core/dump/text.ts';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import { checkSample } from '../../../services/core/check/checker.ts';
import { REASONS, VERDICTS } from '../../../services/core/check/reasons.ts';
import { strategies } from '../../../services/core/unwind/index.ts';
import { parseOrcText } from '../../../services/core/unwind/orc-table.ts';
import type { StrategyName } from '../../../services/core/unwind/types.ts';

const DOC = fileURLToPath(new URL('../../../docs/verdicts.md', import.meta.url));
const text = readFileSync(DOC, 'utf8').replace(/\r\n/g, '\n');
const lines = text.split('\n');

interface Example {
  line: number; // 1-based line of the comment
  keys: Map<string, string>;
  dump: string;
}

function fencedBlocks(tag: string): { line: number; body: string }[] {
  const out: { line: number; body: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```' + tag) continue;
    const end = lines.indexOf('```', i + 1);
    assert.ok(end > i, `docs/verdicts.md:${i + 1}: unterminated \`\`\`${tag} block`);
    out.push({ line: i + 1, body: lines.slice(i + 1, end).join('\n') + '\n' });
    i = end;
  }
  return out;
}

const COMMENT = /^<!-- example: (.*) -->$/;
const KNOWN_KEYS = new Set(['strategy', 'verdict', 'reason', 'false_reliable', 'disagrees', 'kallsyms', 'orc', 'frame_pointers']);

function examples(): Example[] {
  const out: Example[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('```')) {
      // Skip any other fenced block (the grammar above, kallsyms, a dump without a comment).
      const close = lines.indexOf('```', i + 1);
      i = close < 0 ? lines.length : close;
      continue;
    }
    if (!line.includes('<!-- example:')) continue;
    const m = COMMENT.exec(line);
    assert.ok(m, `docs/verdicts.md:${i + 1}: malformed example comment: ${line}`);
    const keys = new Map<string, string>();
    for (const kv of m[1]!.trim().split(/\s+/)) {
      const eq = kv.indexOf('=');
      assert.ok(eq > 0, `docs/verdicts.md:${i + 1}: '${kv}' is not key=value`);
      const k = kv.slice(0, eq);
      assert.ok(KNOWN_KEYS.has(k), `docs/verdicts.md:${i + 1}: unknown key '${k}'`);
      assert.ok(!keys.has(k), `docs/verdicts.md:${i + 1}: key '${k}' given twice`);
      keys.set(k, kv.slice(eq + 1));
    }
    for (const k of ['strategy', 'verdict', 'reason']) assert.ok(keys.has(k), `docs/verdicts.md:${i + 1}: example without ${k}=`);
    assert.equal(lines[i + 1], '```dump', `docs/verdicts.md:${i + 1}: an example comment must be followed at once by a \`\`\`dump block`);
    const end = lines.indexOf('```', i + 2);
    assert.ok(end > i, `docs/verdicts.md:${i + 2}: unterminated \`\`\`dump block`);
    out.push({ line: i + 1, keys, dump: lines.slice(i + 2, end).join('\n') + '\n' });
    i = end;
  }
  return out;
}

const kallsyms = fencedBlocks('kallsyms');
// orc=<n> gives the example's profile the n-th ```orc table of the page; frame_pointers=no says the
// kernel was built without frame pointers (both only reach a profile through an adapter otherwise).
const orcTables = fencedBlocks('orc').map((b) => parseOrcText(b.body));
const profiles = kallsyms.map((k) => KernelProfile.fromKallsyms(k.body, { file: `docs/verdicts.md:${k.line}` }));
const all = examples();

describe('docs/verdicts.md', () => {
  test('has at least one kallsyms block and one example', () => {
    assert.ok(profiles.length >= 1);
    assert.ok(all.length >= 1);
  });

  test('every dump block is an example (preceded by its comment)', () => {
    assert.equal(fencedBlocks('dump').length, all.length);
  });

  test('every verdict and every reason has a heading', () => {
    for (const name of [...VERDICTS, ...REASONS]) {
      assert.ok(lines.includes(`### ${name}`), `docs/verdicts.md has no heading '### ${name}'`);
    }
  });

  test('every verdict and every reason is shown by at least one example', () => {
    const verdicts = new Set(all.map((e) => e.keys.get('verdict')));
    const reasons = new Set(all.map((e) => e.keys.get('reason')));
    for (const v of VERDICTS) assert.ok(verdicts.has(v), `no example with verdict=${v}`);
    for (const r of REASONS) assert.ok(reasons.has(r), `no example with reason=${r}`);
  });

  for (const ex of all) {
    const k = ex.keys;
    const strategy = k.get('strategy')! as StrategyName;
    const verdict = k.get('verdict')!;
    const reason = k.get('reason')!;
    const name = `line ${ex.line}: ${strategy} → ${verdict}${reason === '-' ? '' : ` (${reason})`}`;
    test(name, () => {
      assert.ok(strategies.has(strategy), `unknown strategy '${strategy}'`);
      assert.ok((VERDICTS as readonly string[]).includes(verdict), `unknown verdict '${verdict}'`);
      assert.ok(reason === '-' || (REASONS as readonly string[]).includes(reason), `unknown reason '${reason}'`);
      const n = Number(k.get('kallsyms') ?? '1');
      let profile = profiles[n - 1];
      assert.ok(Number.isInteger(n) && profile, `kallsyms=${k.get('kallsyms')}: the page has ${profiles.length} kallsyms block(s)`);
      if (k.has('orc') || k.has('frame_pointers')) {
        const orc = k.has('orc') ? orcTables[Number(k.get('orc')) - 1] : undefined;
        assert.ok(!k.has('orc') || orc, `orc=${k.get('orc')}: the page has ${orcTables.length} orc block(s)`);
        profile = KernelProfile.fromKallsyms(kallsyms[n - 1]!.body, { ...(orc ? { orc } : {}), ...(k.has('frame_pointers') ? { framePointers: k.get('frame_pointers') === 'yes' } : {}) });
      }

      const parsed = parseTextDump(ex.dump, { file: `docs/verdicts.md:${ex.line + 1}` });
      assert.deepEqual(parsed.rejected.map((r) => r.message), [], 'rejections');
      assert.equal(parsed.samples.length, 1, 'one sample per example');
      const sample = parsed.samples[0]!;

      const r = checkSample(sample, profile, [strategy]).results[0]!;
      const why = `trace ${r.unwind.frames.length} frames, outcome ${r.unwind.outcome}${r.unwind.message ? `: ${r.unwind.message}` : ''}; missing [${r.missing}], extra [${r.extra}]`;
      assert.equal(r.verdict, verdict, `verdict (${why})`);
      assert.equal(r.reason ?? '-', reason, `reason (${why})`);

      const fr = k.get('false_reliable');
      if (fr !== undefined) {
        assert.ok(fr === 'true' || fr === 'false', `false_reliable=${fr}`);
        assert.equal(r.falseReliable, fr === 'true', 'false_reliable');
        if (fr === 'true') assert.equal(r.reliable, true, 'a false_reliable trace claims to be reliable');
      } else {
        assert.equal(r.falseReliable, false, 'false_reliable (not stated, so expected false)');
      }

      const other = k.get('disagrees') as StrategyName | undefined;
      if (other !== undefined) {
        assert.ok(strategies.has(other) && other !== strategy, `disagrees=${other}`);
        const c = checkSample(sample, profile, [strategy, other]);
        assert.deepEqual(c.disagreements.map((d) => [...d].sort().join('/')), [[strategy, other].sort().join('/')], 'disagreements');
      }
    });
  }
});
