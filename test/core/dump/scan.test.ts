// The API's validate-only scan (services/core/dump/scan.ts) against the parser: on every input —
// the shipped example, emulated-fleet batches, the perf script corpus, and thousands of mutated
// dumps — scanTextDump must accept exactly the samples parseTextDump accepts (same indices,
// header lines, kernels, full-state flags) and reject the others with the parser's own
// rejections. Mutations aim at the lines the fast path reads (hex digits, addresses, window ends,
// stack types, selectors, duplicate keywords), so both paths are exercised; a fixed seed makes a
// failure reproducible by its iteration number.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';
import { hasFullState, type Sample } from '../../../services/core/dump/sample.ts';
import { scanTextDump } from '../../../services/core/dump/scan.ts';
import { feederSource } from '../../../services/pipeline/feed.ts';
import { xorshift } from '../../support/rng.ts';
import { mutate } from './mutate-dump.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');


let fastCount = 0;

/** Both readings of one input, compared field by field. */
function same(input: string, label: string, maxBytes?: number): boolean {
  const opts = { file: 'body', ...(maxBytes !== undefined ? { maxBytes } : {}) };
  const p = parseTextDump(input, opts);
  const s = scanTextDump(input, opts);
  const rejected = new Set(p.rejected.map((r) => r.sampleIndex));
  const want: { index: number; line: number; kernel: string | undefined; fullState: boolean }[] = [];
  let index = 0;
  for (const x of p.samples) {
    while (rejected.has(index)) index++;
    want.push({ index: index++, line: x.source!.line, kernel: x.kernel, fullState: hasFullState(x) });
  }
  assert.deepEqual(s.samples, want, `${label}: accepted samples differ (fast path: ${s.fast})\n${input.slice(0, 2000)}`);
  assert.deepEqual(s.rejected, p.rejected, `${label}: rejections differ (fast path: ${s.fast})`);
  if (s.fast) fastCount++;
  return s.fast;
}

function ownSample(i: number): Sample {
  const begin = 0xffffc90000000000n + BigInt(i) * 0x10000n;
  const bytes = Uint8Array.from({ length: 64 + i * 8 }, (_, k) => (k * 37 + i) & 0xff);
  return {
    comm: 'swapper/0', pid: 10 + i, tid: 20 + i, cpu: i, time: `${i}.000001`, trigger: 'nmi',
    host: 'h', kernel: `b${i % 2}`, regs: { ip: 0xffffffff81000000n + BigInt(i), sp: begin + 0x3f00n, bp: begin + 0x3f40n, cs: 0x10n, ss: 0x18n, flags: 0x246n },
    stacks: [
      { type: 'task', begin, end: begin + 0x4000n, windows: [{ start: begin + 0x3f00n, bytes }] },
      { type: 'irq', begin: begin + 0x8000n, end: begin + 0xc000n, windows: [{ start: begin + 0xbfe0n, bytes: new Uint8Array(32).fill(0xcc) }] },
    ],
    truth: { frames: [{ ip: 0xffffffff81000000n, kind: 'start' }, { ip: 0xffffffff81000100n, kind: 'regs', entry: 'page_fault', tolerated: 'entry_code' }] },
  };
}

describe('scanTextDump agrees with parseTextDump', () => {
  it('on the shipped example and on hand-built samples: all through the fast path', () => {
    assert.equal(same(readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8'), 'demo.dump'), true);
    assert.equal(same(formatTextDump([0, 1, 2, 3].map(ownSample)), 'own'), true);
    assert.equal(same('', 'empty'), true);
    assert.equal(same('# stacksanity-dump v1\n', 'magic only'), true);
  });

  it('on emulated-fleet batches (what hosts upload)', async () => {
    const src = await feederSource({ root: ROOT, hosts: 8, seed: 3 });
    for (let i = 0; i < 4; i++) assert.equal(same(src.batch(200), `fleet batch ${i}`), true, `fleet batch ${i} should take the fast path (${src.kind})`);
  });

  it('near the size limit, the parser decides', () => {
    const t = formatTextDump([ownSample(0)]);
    same(t, 'limit', t.length * 2);
    same(t, 'over limit', t.length - 1);
  });

  it('on the perf script corpus', (t) => {
    const corpus = path.resolve(ROOT, '../shared/corpus/perf-script');
    if (!existsSync(corpus)) return t.skip(`no corpus at ${corpus}`);
    for (const f of readdirSync(corpus).filter((x) => x.endsWith('.txt') || x.endsWith('.txt.gz'))) {
      const b = readFileSync(path.join(corpus, f));
      same((f.endsWith('.gz') ? gunzipSync(b) : b).toString('utf8'), f);
    }
  });

  it('on 4000 mutated dumps', async () => {
    const src = await feederSource({ root: ROOT, hosts: 8, seed: 11 });
    const seeds = [formatTextDump([0, 1, 2].map(ownSample)), src.batch(6), readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8').split('\n\n').slice(0, 3).join('\n\n') + '\n'];
    const rnd = xorshift(20261125);
    const before = fastCount;
    let n = 0;
    for (let i = 0; i < Number(process.env.SCAN_FUZZ_N ?? 4000); i++) {
      const input = mutate(seeds[i % seeds.length]!, rnd);
      same(input, `mutation ${i}`);
      n++;
    }
    // Both paths must be exercised: many mutations stay well-formed (a shifted value that is
    // still valid), many do not.
    const fast = fastCount - before;
    assert.ok(fast > n * 0.05 && fast < n * 0.9, `fast path taken on ${fast} of ${n} mutations`);
  });
});
