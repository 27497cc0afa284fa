// The binary batch form (services/core/dump/batch-*.ts). Expected values always come from an
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
import { formatTextDump, parseTextDump, MAX_HEADER_CHARS } from '../../../services/core/dump/text.ts';
import { hasFullState, type Sample } from '../../../services/core/dump/sample.ts';
import { DumpError } from '../../../services/core/dump/errors.ts';
import { isEncodedBatch } from '../../../services/core/dump/batch-form.ts';
import { encodeParsed, encodeSamples } from '../../../services/core/dump/batch-encode.ts';
import { decodeBatch, decodeSampleRecord } from '../../../services/core/dump/batch-decode.ts';
import { transcodeTextDump } from '../../../services/core/dump/batch-transcode.ts';
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

describe('decodeBatch builds objects the way the fields come', () => {
  // Hand-made records: writeSample always writes keys in one order, so other orders, repeats and
  // register sequences are only reachable this way. Expected: keys in order of first appearance,
  // repeats overwriting (regs merging), as a plain key-by-key reading gives.
  const tag = { comm: 1, pid: 2, trigger: 7, host: 8, kernel: 9, regs: 10, source: 16, undef: 17 } as const;
  const str = (v: string): number[] => [v.length * 2, 0, 0, 0, ...Array.from(v, (c) => c.charCodeAt(0))];
  const u64 = (v: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
  const f64 = (v: number): number[] => Array.from(new Uint8Array(new Float64Array([v]).buffer));
  const REG = (name: string): number => ['r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip', 'cs', 'flags', 'sp', 'ss'].indexOf(name);
  const regs = (...fs: [string, bigint | undefined][]): number[] => [tag.regs, fs.length, ...fs.flatMap(([n, v]) => (v === undefined ? [REG(n) | 0x80] : [REG(n), ...u64(v)]))];
  function batch(...records: number[][]): Uint8Array {
    const u32 = (v: number): number[] => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24];
    const out = [0x89, 0x53, 0x53, 0x42, 1, 0, 0, 0, ...u32(records.length)];
    records.forEach((fields, i) => out.push(...u32(5 + fields.length), 1, ...u32(i), ...fields));
    return Uint8Array.from(out);
  }
  const keysOf = (o: object): string[] => Object.keys(o);

  it('keys out of the usual order keep the order they came in', () => {
    const d = decodeBatch(batch([tag.trigger, ...str('nmi'), tag.host, ...str('h'), tag.comm, ...str('c'), tag.pid, ...f64(3)]));
    assert.deepStrictEqual(keysOf(d.samples[0]!), ['trigger', 'stacks', 'host', 'comm', 'pid']);
    assert.deepStrictEqual(d.samples[0], { trigger: 'nmi', stacks: [], host: 'h', comm: 'c', pid: 3 });
    const r = decodeBatch(batch([tag.comm, ...str('a'), tag.trigger, ...str('t'), tag.comm, ...str('b'), tag.undef, tag.kernel]));
    assert.deepStrictEqual(keysOf(r.samples[0]!), ['trigger', 'stacks', 'comm', 'kernel']);
    assert.deepStrictEqual(r.samples[0], { trigger: 't', stacks: [], comm: 'b', kernel: undefined });
  });

  it('register sequences: any order, repeats, undefined values, merged payloads, many shapes', () => {
    const base = [tag.trigger, ...str('nmi')];
    const one = (...fields: number[]) => decodeBatch(batch([...base, ...fields])).samples[0]!.regs!;
    assert.deepStrictEqual(keysOf(one(...regs(['sp', 5n], ['ip', 7n]))), ['sp', 'ip']);
    assert.deepStrictEqual(one(...regs(['sp', 5n], ['ip', 7n])), { sp: 5n, ip: 7n });
    // The same sequence again (a made object literal) and its prefix.
    assert.deepStrictEqual(one(...regs(['sp', 6n], ['ip', 8n])), { sp: 6n, ip: 8n });
    assert.deepStrictEqual(keysOf(one(...regs(['sp', 1n]))), ['sp']);
    const rep = one(...regs(['ip', 1n], ['sp', 2n], ['ip', 3n]));
    assert.deepStrictEqual(keysOf(rep), ['ip', 'sp']);
    assert.deepStrictEqual(rep, { ip: 3n, sp: 2n });
    assert.deepStrictEqual(one(...regs(['ip', 1n], ['sp', undefined])), { ip: 1n, sp: undefined });
    assert.deepStrictEqual(one(...regs(['ip', 1n]), ...regs(['sp', 2n], ['ip', 4n])), { ip: 4n, sp: 2n });
    assert.deepStrictEqual(one(...regs()), {});
    const all = ['r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip', 'cs', 'flags', 'sp', 'ss'];
    const full = one(...regs(...all.map((n, i): [string, bigint] => [n, BigInt(i) << 40n])));
    assert.deepStrictEqual(keysOf(full), all);
    // More distinct sequences than get a literal of their own: the rest key by key, same answer.
    const rnd = xorshift(3);
    for (let k = 0; k < 300; k++) {
      const names = all.filter(() => rnd() < 0.3).sort(() => rnd() - 0.5);
      const fs = names.map((n): [string, bigint] => [n, BigInt(Math.floor(rnd() * 2 ** 52))]);
      const got = one(...regs(...fs));
      assert.deepStrictEqual(keysOf(got), names, `sequence ${k}`);
      assert.deepStrictEqual(got, Object.fromEntries(fs), `sequence ${k}`);
    }
  });

  it('strings and 64-bit values from the caches stay exact', () => {
    // Strings of every length around the cache's and the short decoder's limits, values that
    // share low or high halves: each record decodes to its own values.
    const rnd = xorshift(11);
    const recs: number[][] = [];
    const want: Sample[] = [];
    for (let k = 0; k < 400; k++) {
      const n = k % 70;
      const comm = Array.from({ length: n }, () => String.fromCharCode(0x20 + Math.floor(rnd() * 0xdf))).join('');
      const host = 'h' + (k % 7);
      const ip = (BigInt(k % 5) << 32n) | BigInt((k * 0x1000) % 7);
      recs.push([tag.trigger, ...str('nmi'), tag.comm, ...str(comm), tag.host, ...str(host), ...regs(['ip', ip])]);
      want.push({ trigger: 'nmi', stacks: [], comm, host, regs: { ip } });
    }
    assert.deepStrictEqual(decodeBatch(batch(...recs)).samples, want);
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

  // One sample of the shipped example, and that text with one line (found by a pattern) edited.
  const demo = readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8').split('\n\n')[0]! + '\n';
  const edit = (re: RegExp, to: string): string => {
    assert.match(demo, re);
    return demo.replace(re, to);
  };

  it('.mem lines out of the fixed layout go to the general reading (same answer)', () => {
    const line = /\t\.mem ffffc90000633ee0 ([^\n]*)\n/;
    const words = '0000000000000000 0000000000000000 ffffc90000633f10 ffffffff810001aa';
    const variants: [string, string][] = [
      ['two spaces', `\t.mem ffffc90000633ee0  ${words}\n`],
      ['tab separators', `\t.mem ffffc90000633ee0\t${words.replaceAll(' ', '\t')}\n`],
      ['trailing blank', `\t.mem ffffc90000633ee0 ${words} \n`],
      ['CR LF', `\t.mem ffffc90000633ee0 ${words}\r\n`],
      ['upper case', `\t.mem FFFFC90000633EE0 ${words.toUpperCase()}\n`],
      ['bad digit in the last word', `\t.mem ffffc90000633ee0 ${words.slice(0, -1)}g\n`],
      ['bad digit in the address', `\t.mem ffffc90000633eeg ${words}\n`],
      ['wrong address', `\t.mem ffffc90000633f00 ${words}\n`],
      ['short address', `\t.mem c90000633ee0 ${words}\n`],
      ['three words', `\t.mem ffffc90000633ee0 ${words.slice(0, 50)}\n`],
      ['five words', `\t.mem ffffc90000633ee0 ${words} 0000000000000000\n`],
      ['a 17-digit word', `\t.mem ffffc90000633ee0 0${words}\n`],
      ['a 15-digit word', `\t.mem ffffc90000633ee0 ${words.slice(1)}\n`],
      ['two tabs before', `\t\t.mem ffffc90000633ee0 ${words}\n`],
      ['space before', ` \t.mem ffffc90000633ee0 ${words}\n`],
      ['tab after the keyword', `\t.mem\tffffc90000633ee0 ${words}\n`],
      ['a control byte', `\t.mem ffffc90000633ee0 ${words}\x01\n`],
    ];
    for (const [label, to] of variants) agrees(demo.replace(line, to), `.mem ${label}`);
    assert.equal(agrees(demo, 'unchanged'), true);
    // Past the window's end: a fifth line after the last.
    agrees(edit(/(\t\.mem ffffc90000633fe0 [^\n]*\n)/, '$1\t.mem ffffc90000634000 0000000000000000 0000000000000000 0000000000000000 0000000000000000\n'), '.mem past the window');
    // A window that ends inside a four-word line.
    agrees(edit(/\.window ffffc90000633ec0 ffffc90000634000/, '.window ffffc90000633ec0 ffffc90000633ff8'), '.mem over the window end');
    // The text ends inside or right after a .mem line (no blank line, no LF).
    const at = demo.indexOf('\t.mem ffffc90000633fe0');
    for (const cut of [at + 20, at + 80, at + 89, at + 90, at + 91]) agrees(demo.slice(0, cut), `cut at ${cut - at}`);
  });

  it('.truth lines out of the fixed layout go to the general reading (same answer)', () => {
    const line = /\t\.truth ffffffff810001aa call\n/;
    const variants: [string, string][] = [
      ['two spaces', '\t.truth ffffffff810001aa  call\n'],
      ['trailing blank', '\t.truth ffffffff810001aa call \n'],
      ['CR LF', '\t.truth ffffffff810001aa call\r\n'],
      ['upper-case kind', '\t.truth ffffffff810001aa CALL\n'],
      ['calls', '\t.truth ffffffff810001aa calls\n'],
      ['cal', '\t.truth ffffffff810001aa cal\n'],
      ['starts', '\t.truth ffffffff810001aa starts\n'],
      ['regs kind', '\t.truth ffffffff810001aa regs entry=page_fault\n'],
      ['an entry', '\t.truth ffffffff810001aa call entry=x\n'],
      ['tolerated', '\t.truth ffffffff810001aa call tolerated=leaf\n'],
      ['short ip', '\t.truth ffffff810001aa call\n'],
      ['17-digit ip', '\t.truth 0ffffffff810001aa call\n'],
      ['bad digit', '\t.truth ffffffff810001ag call\n'],
      ['empty', '\t.truth empty\n'],
      ['no kind', '\t.truth ffffffff810001aa\n'],
      ['two tabs before', '\t\t.truth ffffffff810001aa call\n'],
      ['tab after the keyword', '\t.truth\tffffffff810001aa call\n'],
      ['truthy keyword', '\t.truthy ffffffff810001aa call\n'],
      ['a control byte', '\t.truth ffffffff810001aa call\x01\n'],
    ];
    for (const [label, to] of variants) agrees(demo.replace(line, to), `.truth ${label}`);
    agrees(edit(/ffffffff8100025c start\n/, 'ffffffff8100025c start\r\n'), '.truth start CR');
    agrees(edit(/ffffffff8100025c start\n/, 'ffffffff8100025c star\n'), '.truth star');
    agrees(edit(/ffffffff8100025c start\n/, 'ffffffff8100025c startx\n'), '.truth startx');
    const end = demo.lastIndexOf(' call\n');
    for (const cut of [end + 2, end + 5, end + 6]) agrees(demo.slice(0, cut), `.truth cut at ${cut - end}`);
  });

  it('keywords, registers, host and kernel near the fixed forms (same answer)', () => {
    const variants: [RegExp, string][] = [
      [/\.regs /, '.regs\t'], [/\.regs /, '.regsx '], [/\.regs /, '.reg '], [/\.host /, '.hostname '],
      [/\.host /, '.host\r'], [/\.kernel /, '.kernel\t'], [/\.kernel /, '.kernels '], [/\.kernel /, '.kerne '],
      [/\.window /, '.window\t'], [/\.window /, '.windows '], [/\.stack /, '.stack\t'], [/\.stack /, '.stacks '],
      [/ip=ffffffff8100025c/, 'ip='], [/ip=ffffffff8100025c/, '=ffffffff8100025c'], [/ip=ffffffff8100025c/, 'ip=1=2'],
      [/ip=ffffffff8100025c/, 'ip=ffffffff8100025g'], [/ip=ffffffff8100025c/, 'ip=0ffffffff8100025c'], [/ip=ffffffff8100025c/, 'IP=ffffffff8100025c'],
      [/ip=ffffffff8100025c/, 'ip=ffffffff8100025c ip=1'], [/ip=ffffffff8100025c/, 'ip=ffffffff8100025c\x01'], [/ip=ffffffff8100025c/, 'ip=7fffffff8100025c'],
      [/cs=10/, 'cs=10000'], [/cs=10/, 'cs=ffff'], [/cs=10/, 'cs=0000000000000010'], [/ss=18\n/, 'ss=18 \n'], [/ss=18\n/, 'ss=18\r\n'],
      [/\.host demo-host/, '.host "demo-host"'], [/\.host demo-host/, '.host demo"host'], [/\.host demo-host/, '.host'], [/\.host demo-host/, '.host a b'],
      [/\.kernel demo-encoded-fp/, `.kernel ${'k'.repeat(300)}`], [/\.kernel demo-encoded-fp/, `.kernel ${'k'.repeat(256)}`],
      [/\.kernel demo-encoded-fp/, `.kernel ${'k'.repeat(255)}`], [/\.kernel demo-encoded-fp/, '.kernel démo'], [/\.kernel demo-encoded-fp/, '.kernel demo-encoded-fp\x01'],
    ];
    for (const [re, to] of variants) agrees(edit(re, to), `${re.source} -> ${JSON.stringify(to)}`);
    // The kernel's string is shared through a cache: two kernels alternating, and the one after a long one.
    const two = demo + '\n' + demo.replace('demo-encoded-fp', 'demo-encoded-fq') + '\n' + demo + '\n' + demo.replace('demo-encoded-fp', 'k'.repeat(300));
    assert.equal(agrees(two, 'kernels alternating'), true);
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

describe('a line far longer than any header (a decompressed run of one byte)', () => {
  it('is refused as bad_header without parsing it, and the samples after it still parse, in both readers', () => {
    const demo = readFileSync(path.join(ROOT, 'examples', 'demo.dump'), 'utf8');
    const want = parseTextDump(demo, { file: 'body' }).samples.length;
    const text = 'A'.repeat(MAX_HEADER_CHARS + 1) + '\n\n' + demo;
    const p = parseTextDump(text, { file: 'body' });
    assert.equal(p.samples.length, want);
    assert.equal(p.rejected.length, 1);
    assert.equal(p.rejected[0]!.reason, 'bad_header');
    assert.match(p.rejected[0]!.message, new RegExp(`a line of ${MAX_HEADER_CHARS + 1} characters`));
    const t = transcodeTextDump(text, { file: 'body' });
    assert.equal(t.samples.length, want);
    assert.deepEqual(t.rejected.map((r) => r.reason), ['bad_header']);
    // A line just within the bound is still looked at as a header (and refused for its content).
    const q = parseTextDump('A'.repeat(MAX_HEADER_CHARS) + '\n', { file: 'body' });
    assert.match(q.rejected[0]!.message, /not a sample header \(expected/);
  });
});
