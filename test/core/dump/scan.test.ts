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

const HEXCH = '0123456789abcdefABCDEF';
/** A token replaced by something near it: another hex value, a shifted address, a keyword, garbage. */
function variant(tok: string, rnd: () => number): string {
  const r = Math.floor(rnd() * 12);
  const isHex = /^[0-9a-fA-F]{1,16}$/.test(tok);
  if (isHex && r < 5) {
    const v = BigInt('0x' + tok);
    const d = [8n, 16n, 0x40n, 0x1000n, 0x4000n, 0x10000n][Math.floor(rnd() * 6)]!;
    const n = BigInt.asUintN(64, rnd() < 0.5 ? v + d : v - d);
    return n.toString(16).padStart(rnd() < 0.5 ? tok.length : 1, '0');
  }
  switch (r) {
    case 5: return tok.slice(0, Math.max(0, tok.length - 1 - Math.floor(rnd() * 3)));
    case 6: return tok + HEXCH[Math.floor(rnd() * HEXCH.length)]!;
    case 7: return ['task', 'irq', 'nmi', 'entry', 'db', 'bogus', 'start', 'call', 'regs', 'empty', 'entry=x', 'tolerated=leaf', 'tolerated=nope', 'cs=10000', 'ss=ffff', 'sp=0', 'ip=8000000000000000', '"q"'][Math.floor(rnd() * 18)]!;
    case 8: return tok.replace(/[0-9a-f]/, 'g');
    case 9: return '';
    case 10: return `${tok} ${tok}`;
    default: return tok.toUpperCase();
  }
}

function mutate(text: string, rnd: () => number): string {
  const lines = text.split('\n');
  const rounds = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < rounds; k++) {
    const li = Math.floor(rnd() * lines.length);
    const op = Math.floor(rnd() * 8);
    const line = lines[li] ?? '';
    if (op <= 3) {
      // A token of a line, most often a value.
      const toks = line.split(/(\s+)/);
      const idx = toks.map((t, i) => (t.trim() ? i : -1)).filter((i) => i >= 0);
      if (idx.length === 0) continue;
      const at = idx[Math.floor(rnd() * idx.length)]!;
      toks[at] = variant(toks[at]!.includes('=') && rnd() < 0.7 ? toks[at]!.split('=')[0] + '=' + variant(toks[at]!.split('=')[1] ?? '', rnd) : toks[at]!, rnd);
      lines[li] = toks.join('');
    } else if (op === 4) lines.splice(li, 1);
    else if (op === 5) lines.splice(li, 0, line);
    else if (op === 6) {
      const lj = Math.floor(rnd() * lines.length);
      [lines[li], lines[lj]] = [lines[lj]!, line];
    } else {
      const extra = ['', '# note', '\t.host again', '\t.kernel k2', '\t.comm x', '\t.bytes 0 00', '\t.window ffffc90000003f00', '\tffffffff81000000 f ([kernel.kallsyms])', '\t.regs ip=1 ip=2', ' ABI:2 IP:0x1', 'x 1 [000] 1.0: nmi:'];
      lines.splice(li, 0, extra[Math.floor(rnd() * extra.length)]!);
    }
  }
  let t = lines.join('\n');
  if (rnd() < 0.05) t = t.slice(0, Math.floor(rnd() * t.length));
  return t;
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
