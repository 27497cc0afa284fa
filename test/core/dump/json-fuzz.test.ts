// Mutated documents and NDJSON must come back as rejections, never as an exception or a hang, and
// whatever the reader does accept must be a valid sample that writes and reads back unchanged.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatJsonDump, formatNdjson, parseJsonDump } from '../../../services/core/dump/json.ts';
import { REJECT_REASONS } from '../../../services/core/dump/errors.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { validateSample } from '../../../services/core/dump/validate.ts';
import { arbSample } from './gen-sample.ts';

type Mutation = (text: string) => string;

// Characters that change JSON's structure or a field's meaning, rather than just a letter.
const INTERESTING = [...'{}[]",:\\ \n0x-.eE+/=ftn', '\u0000', '\ud800', '€'];
const WRONG_VALUES: unknown[] = [null, true, 0, -1, 1.5, '', 'zz', [], {}, [[]], { trigger: 'nmi' }, 'ffffffffffffffffff', '0x'];
// Raw tokens JSON.stringify cannot produce: numbers beyond double range or precision, and nesting
// deep enough to break a recursive decoder.
const RAW_TOKENS = [
  '1e999',
  '-1e999',
  '123456789012345678901234567890',
  '18446744071578845475',
  '0.0000000000000000000000001',
  '['.repeat(5000) + ']'.repeat(5000),
  '{"a":'.repeat(5000) + '1' + '}'.repeat(5000),
  '"' + 'A'.repeat(100_000) + '"',
];
const PLACEHOLDER = '"@@raw@@"';

const arbPosition = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
const at = (text: string, p: number) => Math.floor(p * (text.length + 1));

const arbCharFlips: fc.Arbitrary<Mutation> = fc
  .array(fc.tuple(arbPosition, fc.oneof(fc.constantFrom(...INTERESTING), fc.string({ minLength: 1, maxLength: 1 }))), { minLength: 1, maxLength: 4 })
  .map((flips) => (text) => {
    let t = text;
    for (const [p, c] of flips) {
      const i = Math.min(at(t, p), t.length - 1);
      if (i >= 0) t = t.slice(0, i) + c + t.slice(i + 1);
    }
    return t;
  });

const arbTruncate: fc.Arbitrary<Mutation> = arbPosition.map((p) => (text) => text.slice(0, at(text, p)));

const arbSplice: fc.Arbitrary<Mutation> = fc
  .tuple(arbPosition, fc.integer({ min: 0, max: 40 }), fc.string({ maxLength: 8 }))
  .map(([p, del, ins]) => (text) => {
    const i = at(text, p);
    return text.slice(0, i) + ins + text.slice(i + del);
  });

/** Walks into the parsed value along `choices` and deletes, retypes or replaces what it lands on. */
function structural(choices: number[], op: number, wrong: unknown, raw: string): Mutation {
  return (text) => {
    const lines = text.split('\n');
    // NDJSON: mutate one line; a document: the whole thing.
    const ndjson = lines.length > 2 && lines[0]!.startsWith('{"');
    const target = ndjson ? (choices[0] ?? 0) % (lines.length - 1) : -1;
    const src = ndjson ? lines[target]! : text;
    let root: unknown;
    try {
      root = JSON.parse(src);
    } catch {
      return text;
    }
    let parent: Record<string, unknown> | unknown[] | undefined;
    let key: string | number | undefined;
    let node = root;
    for (const c of choices) {
      if (node === null || typeof node !== 'object') break;
      const keys: Array<string | number> = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
      if (keys.length === 0) break;
      parent = node as Record<string, unknown>;
      key = keys[c % keys.length]!;
      node = (parent as Record<string | number, unknown>)[key];
    }
    if (parent === undefined || key === undefined) return text;
    const p = parent as Record<string | number, unknown>;
    switch (op % 4) {
      case 0:
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete p[key];
        break;
      case 1:
        p[key] = wrong;
        break;
      case 2:
        p[key] = '@@raw@@';
        break;
      default:
        // Duplicates the node under an unknown key, or repeats an array element.
        if (Array.isArray(parent)) parent.push(node);
        else p[`${String(key)}_x`] = node;
    }
    let out: string;
    try {
      out = JSON.stringify(root);
    } catch {
      // JSON.stringify recurses, so nesting an earlier mutation made deep can overflow it.
      return text;
    }
    if (op % 4 === 2) out = out.replace(PLACEHOLDER, raw);
    if (!ndjson) return out;
    lines[target] = out;
    return lines.join('\n');
  };
}

const arbStructural: fc.Arbitrary<Mutation> = fc
  .tuple(fc.array(fc.nat(), { minLength: 1, maxLength: 7 }), fc.nat(), fc.constantFrom(...WRONG_VALUES), fc.constantFrom(...RAW_TOKENS))
  .map(([choices, op, wrong, raw]) => structural(choices, op, wrong, raw));

const arbLineShuffle: fc.Arbitrary<Mutation> = fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => (text) => {
  const lines = text.split('\n');
  const i = a % lines.length;
  const j = b % lines.length;
  [lines[i], lines[j]] = [lines[j]!, lines[i]!];
  return lines.join('\n');
});

const arbMutations: fc.Arbitrary<Mutation[]> = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: arbCharFlips },
    { weight: 2, arbitrary: arbTruncate },
    { weight: 2, arbitrary: arbSplice },
    { weight: 4, arbitrary: arbStructural },
    { weight: 1, arbitrary: arbLineShuffle },
  ),
  { minLength: 1, maxLength: 3 },
);

const smallSamples = fc.array(arbSample, { minLength: 1, maxLength: 3 });

function withoutSource(s: Sample): Sample {
  const { source: _source, ...rest } = s;
  return rest;
}

/** How often each outcome occurred, to show the mutations reach every path. */
const outcomes = { allAccepted: 0, someRejected: 0, noneAccepted: 0 };

/** What every result must satisfy, however broken its input. */
function checkResult(text: string): void {
  const r = parseJsonDump(text, { file: 'fuzz.json' });
  if (r.rejected.length === 0) outcomes.allAccepted++;
  else if (r.samples.length > 0) outcomes.someRejected++;
  else outcomes.noneAccepted++;
  assert.ok(Array.isArray(r.samples) && Array.isArray(r.rejected));
  const indices = new Set<number>();
  for (const j of r.rejected) {
    assert.ok((REJECT_REASONS as readonly string[]).includes(j.reason), j.reason);
    assert.ok(Number.isInteger(j.sampleIndex) && j.sampleIndex >= 0);
    assert.ok(!indices.has(j.sampleIndex), `sample ${j.sampleIndex} rejected twice`);
    indices.add(j.sampleIndex);
    assert.equal(typeof j.message, 'string');
    assert.ok(j.message.length < 1000, `a rejection message must not echo the input: ${j.message.slice(0, 300)}`);
  }
  for (const s of r.samples) validateSample(s);
  // Whatever was accepted must survive a second trip unchanged.
  const again = parseJsonDump(formatJsonDump(r.samples));
  assert.deepEqual(again.rejected, []);
  assert.deepStrictEqual(again.samples, r.samples.map(withoutSource));
}

/** CPU time of this process in ms: unlike wall time it does not grow when other tests share the machine. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const HANG_MS = 20_000;

describe('fuzz', () => {
  // The property sees the mutated text itself, so a failure prints the input that broke it.
  const mutated = (format: (samples: Sample[]) => string) =>
    fc.tuple(smallSamples, arbMutations).map(([samples, mutations]) => mutations.reduce((t, m) => m(t), format(samples)));

  test('mutated documents', () => {
    fc.assert(fc.property(mutated(formatJsonDump), checkResult), { numRuns: 2500 });
  });

  test('mutated NDJSON', () => {
    fc.assert(fc.property(mutated(formatNdjson), checkResult), { numRuns: 2500 });
    // NDJSON is where one bad sample sits next to good ones; the mutations must produce that case.
    assert.ok(outcomes.someRejected > 100, JSON.stringify(outcomes));
  });

  test('mutated compact arrays and single samples', () => {
    const compactArray = (samples: Sample[]) => '[' + formatNdjson(samples).trim().split('\n').join(',') + ']';
    const single = (samples: Sample[]) => formatNdjson(samples.slice(0, 1)).trim();
    fc.assert(fc.property(fc.oneof(mutated(compactArray), mutated(single)), checkResult), { numRuns: 1500 });
    assert.ok(outcomes.allAccepted > 100 && outcomes.noneAccepted > 100, JSON.stringify(outcomes));
  });

  test('pathological inputs', () => {
    const deep = 1_000_000;
    const inputs = [
      '['.repeat(deep) + ']'.repeat(deep),
      '['.repeat(deep),
      '{"trigger":'.repeat(100_000),
      '{"format":"stacksanity-dump","version":1,"samples":' + '['.repeat(deep) + ']'.repeat(deep) + '}',
      '{"trigger":"nmi","stacks":[],"pid":1e999}',
      '{"trigger":"nmi","stacks":[],"pid":123456789012345678901234567890}',
      '{"trigger":"nmi","stacks":[],"regs":{"ip":"' + 'f'.repeat(1_000_000) + '"}}',
      '{"trigger":"nmi","stacks":[{"type":"task","begin":"0","end":"10000","windows":[{"start":"0","data":"' + 'A'.repeat(4_000_000) + '"}]}]}',
      ('{"trigger":"nmi","stacks":[]}\n').repeat(50_000),
      ('{"trigger":"nmi",\n').repeat(50_000),
      'x\n'.repeat(100_000),
      '"' + '\\'.repeat(100_001) + '"',
      '\u0000',
      'null',
      '[null, 1, "x", [], {}]',
      JSON.stringify({ [`k${'x'.repeat(100_000)}`]: 1, trigger: 'nmi', stacks: [] }),
    ];
    // A hang guard, not a speed target (those live in the benchmarks): each input parses in well
    // under a second on these machines, while a reader superlinear in these megabyte-sized inputs
    // would take minutes. The bound leaves room for a slow, shared machine.
    for (const text of inputs) {
      const t0 = cpuMs();
      checkResult(text);
      assert.ok(cpuMs() - t0 < HANG_MS, `slow on input starting ${JSON.stringify(text.slice(0, 30))}`);
    }
    const big = parseJsonDump(('{"trigger":"nmi","stacks":[]}\n').repeat(50_000));
    assert.equal(big.samples.length, 50_000);
    assert.equal(parseJsonDump('[null, 1, "x", [], {}]').rejected.length, 5);
  });

});
