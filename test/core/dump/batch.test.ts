// The binary batch form (services/core/dump/batch.ts). Expected values always come from an
// independent implementation: the arbitrary samples themselves for the encode/decode round trip,
// parseTextDump for the transcoder. Inputs: generated samples, the shipped example, emulated-fleet
// batches of every layout and fault, the perf script corpus when present, and thousands of
// mutated dumps (the same mutator as scan.test.ts, so both of the transcoder's paths are
// exercised); then damaged and foreign bytes, which must fail with a DumpError, never a crash.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';
import { hasFullState, type Sample } from '../../../services/core/dump/sample.ts';
import { DumpError } from '../../../services/core/dump/errors.ts';
import {
  decodeBatch, decodeSampleRecord, encodeParsed, encodeSamples, isEncodedBatch, transcodeTextDump,
} from '../../../services/core/dump/batch.ts';
import { EmulatedFleet, FAULTS } from '../../../services/emulator/index.ts';
import { arbSample } from './gen-sample.ts';
import { mutate } from './mutate-dump.ts';
import { xorshift } from '../../support/rng.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

let fastCount = 0;

/** transcodeTextDump against parseTextDump on one input: samples, indices, infos, rejections. */
function agrees(input: string, label: string, maxBytes?: number): boolean {
  const opts = { file: 'body', ...(maxBytes !== undefined ? { maxBytes } : {}) };
  const p = parseTextDump(input, opts);
  const t = transcodeTextDump(input, opts);
  const rejected = new Set(p.rejected.map((r) => r.sampleIndex));
  const indices: number[] = [];
  let index = 0;
  for (let i = 0; i < p.samples.length; i++) {
    while (rejected.has(index)) index++;
    indices.push(index++);
  }
  const d = decodeBatch(t.bytes);
  const ctx = `${label} (fast path: ${t.fast})`;
  assert.deepStrictEqual(d.samples, p.samples, `${ctx}: samples differ\n${input.slice(0, 1500)}`);
  assert.deepStrictEqual(d.indices, indices, `${ctx}: indices differ`);
  assert.deepStrictEqual(t.rejected, p.rejected, `${ctx}: rejections differ`);
  assert.deepStrictEqual(
    t.samples,
    p.samples.map((s, i) => ({ index: indices[i]!, line: s.source!.line, kernel: s.kernel, fullState: hasFullState(s) })),
    `${ctx}: sample infos differ`,
  );
  // Each record decodes alone to its sample.
  for (let i = 0; i < d.records.length; i++) {
    const r = decodeSampleRecord(d.records[i]!);
    assert.deepStrictEqual(r.sample, p.samples[i], `${ctx}: record ${i} alone`);
    assert.equal(r.index, indices[i]);
  }
  // The UTF-8 bytes of the upload give the same answer as the string.
  const fromBytes = transcodeTextDump(new TextEncoder().encode(input), opts);
  assert.deepStrictEqual(decodeBatch(fromBytes.bytes).samples, p.samples, `${ctx}: from UTF-8 bytes`);
  assert.deepStrictEqual(fromBytes.rejected, p.rejected, `${ctx}: rejections from UTF-8 bytes`);
  if (t.fast) fastCount++;
  return t.fast;
}

function fleetText(layout: 'kernel_entry' | 'section' | 'encoded_fp' | 'all', faults: string[], seed: number, n: number): string {
  const fleet = new EmulatedFleet({ seed, layout, hosts: 6, faults, faultRate: faults.length > 0 ? 0.5 : 0 });
  return formatTextDump(fleet.batch(n));
}

function expectDumpError(fn: () => unknown, pattern: RegExp, label: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DumpError, `${label}: ${String(e)} is not a DumpError`);
    assert.match(e.message, pattern, label);
    return true;
  }, label);
}

describe('encodeSamples / decodeBatch', () => {
  it('round-trips generated samples losslessly (undefined stays absent)', () => {
    fc.assert(
      fc.property(fc.array(arbSample, { maxLength: 4 }), fc.array(fc.nat(), { minLength: 4, maxLength: 4 }), (samples, idx) => {
        const indices = samples.map((_, i) => idx[i]! + i);
        const bytes = encodeSamples(samples, indices);
        assert.ok(isEncodedBatch(bytes));
        const d = decodeBatch(bytes);
        assert.deepStrictEqual(d.samples, samples);
        assert.deepStrictEqual(d.indices, indices);
        for (let i = 0; i < samples.length; i++) {
          const alone = decodeSampleRecord(d.records[i]!.slice());
          assert.deepStrictEqual(alone, { sample: samples[i], index: indices[i] });
        }
      }),
      { numRuns: 300 },
    );
  });

  it('keeps keys present with the value undefined, and source', () => {
    const s = { trigger: 'nmi', stacks: [], comm: undefined, source: { file: 'f', line: 3 }, regs: { ip: 1n, sp: undefined }, callchain: [{ addr: 0n, flags: [], sym: undefined }], truth: { frames: [{ ip: 1n, kind: 'call', entry: undefined }] } } as unknown as Sample;
    const d = decodeBatch(encodeSamples([s], [5]));
    assert.deepStrictEqual(d.samples[0], s);
  });

  it('gives window bytes as views into the batch, readable at any offset', () => {
    const fleet = new EmulatedFleet({ seed: 1, layout: 'all', hosts: 2 });
    const samples = fleet.batch(3);
    const bytes = encodeSamples(samples, [0, 1, 2]);
    const d = decodeBatch(bytes);
    for (const s of d.samples) for (const st of s.stacks) for (const w of st.windows) assert.equal(w.bytes.buffer, bytes.buffer);
    assert.deepStrictEqual(d.samples, samples);
  });

  it('encodeParsed carries a parse result with its rejections', () => {
    const text = fleetText('all', ['corrupt_bp'], 5, 4) + '\nbogus header line\n\n' + fleetText('section', [], 6, 2);
    const p = parseTextDump(text);
    assert.ok(p.rejected.length > 0);
    const e = encodeParsed(p);
    assert.equal(e.fast, false);
    assert.deepStrictEqual(decodeBatch(e.bytes).samples, p.samples);
    assert.deepStrictEqual(e.rejected, p.rejected);
    assert.deepStrictEqual(e.samples.map((x) => x.index), [0, 1, 2, 3, 5, 6]);
  });
});

describe('decodeBatch refuses what it cannot read', () => {
  const good = encodeSamples(new EmulatedFleet({ seed: 2, layout: 'all', hosts: 2 }).batch(3), [0, 1, 2]);

  it('foreign bytes: text, gzip, empty', () => {
    expectDumpError(() => decodeBatch(new TextEncoder().encode('# stacksanity-dump v1\n')), /not a binary batch.*23 20 73 74/, 'text');
    expectDumpError(() => decodeBatch(Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0)), /not a binary batch.*1f 8b/, 'gzip');
    expectDumpError(() => decodeBatch(new Uint8Array(0)), /not a binary batch/, 'empty');
    assert.equal(isEncodedBatch(Uint8Array.of(0x1f, 0x8b, 8, 0)), false);
  });

  it('a newer or unknown version, naming it', () => {
    const newer = good.slice();
    newer[4] = 2;
    expectDumpError(() => decodeBatch(newer), /version 2 is newer than the version this decoder reads \(1\)/, 'newer');
    const zero = good.slice();
    zero[4] = 0;
    expectDumpError(() => decodeBatch(zero), /version 0 is not/, 'older');
    const rec = decodeBatch(good).records[0]!.slice();
    rec[4] = 9;
    expectDumpError(() => decodeSampleRecord(rec), /record version 9/, 'record version');
  });

  it('every truncation and trailing garbage', () => {
    for (let n = 0; n < good.length; n += n < 64 ? 1 : 7) {
      expectDumpError(() => decodeBatch(good.subarray(0, n)), /./, `cut at ${n}`);
    }
    const longer = new Uint8Array(good.length + 3);
    longer.set(good);
    expectDumpError(() => decodeBatch(longer), /3 bytes follow the last/, 'trailing');
    const rec = decodeBatch(good).records[1]!;
    for (let n = 0; n < rec.length; n += 5) expectDumpError(() => decodeSampleRecord(rec.subarray(0, n)), /./, `record cut at ${n}`);
  });

  it('random damage: DumpError or a decode, never another error or a hang', () => {
    const rnd = xorshift(7);
    for (let k = 0; k < 3000; k++) {
      const b = good.slice();
      const hits = 1 + Math.floor(rnd() * 4);
      for (let h = 0; h < hits; h++) b[4 + Math.floor(rnd() * (b.length - 4))] = Math.floor(rnd() * 256);
      b[4] = 1;
      try {
        decodeBatch(b);
      } catch (e) {
        assert.ok(e instanceof DumpError, `damage ${k}: ${String(e)}`);
      }
    }
  });
});

describe('transcodeTextDump agrees with parseTextDump', () => {
  it('on the shipped example, fast', () => {
    assert.equal(agrees(readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8'), 'demo.dump'), true);
    assert.equal(agrees('', 'empty'), true);
    assert.equal(agrees('# stacksanity-dump v1\n', 'magic only'), true);
  });

  it('on emulated-fleet batches of every layout and fault', () => {
    let seed = 100;
    for (const layout of ['kernel_entry', 'section', 'encoded_fp', 'all'] as const) {
      assert.equal(agrees(fleetText(layout, [], seed++, 40), `${layout} clean`), true, `${layout} clean should be fast`);
      for (const fault of FAULTS) {
        if (fault === 'missing_kernel_entry' && layout !== 'kernel_entry' && layout !== 'all') continue;
        agrees(fleetText(layout, [fault], seed++, 25), `${layout} ${fault}`);
      }
    }
  });

  it('near the size limit, the parser decides', () => {
    const t = fleetText('all', [], 9, 2);
    agrees(t, 'limit', t.length * 2);
    agrees(t, 'over limit', t.length - 1);
  });

  it('on non-ASCII and invalid UTF-8 bytes', () => {
    const t = fleetText('all', [], 10, 2).replace(/\.host (\S+)/, '.host hôte-ü').replace('# stacksanity-dump v1', '# é');
    agrees(t, 'non-ascii');
    const bytes = new TextEncoder().encode(fleetText('all', [], 11, 2).replace(/\.host (\S+)/, '.host XX'));
    const at = new TextDecoder().decode(bytes).indexOf('.host XX') + 6;
    bytes[at] = 0xff;
    bytes[at + 1] = 0xc3;
    const text = Buffer.from(bytes).toString('utf8');
    const p = parseTextDump(text);
    const t2 = transcodeTextDump(bytes);
    assert.equal(t2.fast, true);
    assert.deepStrictEqual(decodeBatch(t2.bytes).samples, p.samples);
  });

  it('on the perf script corpus', (t) => {
    const corpus = path.resolve(ROOT, '../shared/corpus/perf-script');
    if (!existsSync(corpus)) return t.skip(`no corpus at ${corpus}`);
    for (const f of readdirSync(corpus).filter((x) => x.endsWith('.txt') || x.endsWith('.txt.gz'))) {
      const b = readFileSync(path.join(corpus, f));
      agrees((f.endsWith('.gz') ? gunzipSync(b) : b).toString('utf8'), f);
    }
  });

  it('on 4000 mutated dumps', () => {
    const seeds = [
      fleetText('all', ['corrupt_bp', 'clobber_ret', 'stale_frames'], 21, 3),
      fleetText('kernel_entry', ['broken_irq_link'], 22, 3),
      readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8').split('\n\n').slice(0, 3).join('\n\n') + '\n',
    ];
    const rnd = xorshift(20261126);
    const before = fastCount;
    const n = Number(process.env.BATCH_FUZZ_N ?? 4000);
    for (let i = 0; i < n; i++) agrees(mutate(seeds[i % seeds.length]!, rnd), `mutation ${i}`);
    const fast = fastCount - before;
    assert.ok(fast > n * 0.05 && fast < n * 0.9, `fast path taken on ${fast} of ${n} mutations`);
  });
});
