import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import fc from 'fast-check';
import {
  formatJsonDump,
  formatNdjson,
  parseJsonDump,
  sampleFromJson,
  sampleToJson,
} from '../../../services/core/dump/json.ts';
import { DumpError, type RejectReason } from '../../../services/core/dump/errors.ts';
import { CALLCHAIN_FLAGS, TOLERANCES, TRUTH_KINDS, type Sample } from '../../../services/core/dump/sample.ts';
import { validateSample } from '../../../services/core/dump/validate.ts';
import { PT_REGS_FIELDS, STACK_TYPES } from '../../../services/core/stack/layout.ts';
import { arbSample } from './gen-sample.ts';

const schema = JSON.parse(readFileSync(new URL('../../../services/core/dump/dump.schema.json', import.meta.url), 'utf8'));
const ajv = new Ajv2020.default({ strict: true, allErrors: true });
const validateDoc = ajv.compile(schema);
const validateOne = ajv.getSchema('urn:stacksanity:dump:1#/$defs/sample')!;

function withoutSource(s: Sample): Sample {
  const { source: _source, ...rest } = s;
  return rest;
}

/** The DumpError sampleFromJson throws for `o`, so a test can look at reason and field. */
function decodeError(o: unknown): DumpError {
  try {
    sampleFromJson(o);
  } catch (e) {
    assert.ok(e instanceof DumpError, `expected a DumpError, got ${String(e)}`);
    return e;
  }
  assert.fail('sampleFromJson accepted the input');
}

function expectReject(o: unknown, reason: RejectReason, field: string): void {
  const e = decodeError(o);
  assert.equal(e.reason, reason, e.describe());
  assert.equal(e.where.field, field, e.describe());
}

const minimal = { trigger: 'nmi', stacks: [] };

describe('schema', () => {
  test('enums match the model constants', () => {
    const d = schema.$defs;
    assert.deepEqual(d.stack.properties.type.enum, [...STACK_TYPES]);
    assert.deepEqual(d.regs.propertyNames.enum, [...PT_REGS_FIELDS]);
    assert.deepEqual(d.callchainEntry.properties.flags.items.enum, [...CALLCHAIN_FLAGS]);
    assert.deepEqual(d.truthFrame.properties.tolerated.enum, [...TOLERANCES]);
    assert.deepEqual(d.truthFrame.properties.kind.enum, [...TRUTH_KINDS]);
  });

  test('the sample keys in the schema are the ones the reader knows', () => {
    // Each key the schema allows must decode, and the writer's keys must all be in the schema.
    const full: Sample = {
      comm: 'c', pid: 1, tid: 2, cpu: 3, time: '1.5', period: 7n, trigger: 't', host: 'h', kernel: 'k',
      regs: { ip: 1n }, stacks: [], callchain: [{ addr: 1n, sym: 's', dso: 'd', flags: ['zero'] }],
      truth: { frames: [{ ip: 1n, kind: 'regs', entry: 'e', tolerated: 'leaf' }] },
    };
    const o = sampleToJson(full) as Record<string, unknown>;
    assert.deepEqual(Object.keys(o).sort(), Object.keys(schema.$defs.sample.properties).sort());
    assert.ok(validateOne(o), JSON.stringify(validateOne.errors));
  });

  test('rejects invalid examples', () => {
    const bad: Array<[string, unknown]> = [
      ['unknown key', { ...minimal, colour: 'red' }],
      ['missing trigger', { stacks: [] }],
      ['missing stacks', { trigger: 'nmi' }],
      ['address as a number', { ...minimal, regs: { ip: 18446744071578845475 } }],
      ['17 hex digits', { ...minimal, regs: { ip: '1ffffffff81000123' } }],
      ['not hex', { ...minimal, regs: { ip: 'ffffffff8100012g' } }],
      ['unknown register', { ...minimal, regs: { rip: '1' } }],
      ['unknown stack type', { ...minimal, stacks: [{ type: 'softirq', begin: '0', end: '10' }] }],
      ['bad base64', { ...minimal, stacks: [{ type: 'task', begin: '0', end: '10', windows: [{ start: '0', data: 'AAA' }] }] }],
      ['unknown flag', { ...minimal, callchain: [{ addr: '0', flags: ['odd'] }] }],
      ['unknown kind', { ...minimal, truth: { frames: [{ ip: '0', kind: 'jump' }] } }],
      ['period as a number', { ...minimal, period: 1 }],
      ['pid below -1', { ...minimal, pid: -2 }],
      ['time not perf-like', { ...minimal, time: '1e3' }],
    ];
    for (const [why, o] of bad) {
      assert.equal(validateOne(o), false, `schema accepted: ${why}`);
      // The reader must refuse what the schema refuses, or the schema documents a different format.
      assert.throws(() => sampleFromJson(o), DumpError, `reader accepted: ${why}`);
    }
    assert.equal(validateDoc({ format: 'stacksanity-dump', version: 2, samples: [] }), false);
    assert.equal(validateDoc({ format: 'stacksanity-dump', version: 1, samples: [], extra: 1 }), false);
    assert.equal(validateDoc({ format: 'stacksanity-dump', version: 1, samples: [minimal] }), true);
  });
});

describe('round trip (property)', () => {
  test('document, NDJSON, array and single forms are lossless and documents match the schema', () => {
    fc.assert(
      fc.property(fc.array(arbSample, { maxLength: 4 }), (samples) => {
        for (const s of samples) validateSample(s);

        const doc = formatJsonDump(samples);
        assert.ok(validateDoc(JSON.parse(doc)), JSON.stringify(validateDoc.errors));
        const fromDoc = parseJsonDump(doc);
        assert.deepEqual(fromDoc.rejected, []);
        assert.deepStrictEqual(fromDoc.samples, samples);

        const nd = formatNdjson(samples);
        assert.equal(nd.split('\n').length, samples.length + 1);
        for (const line of nd.split('\n').filter((l) => l !== '')) assert.ok(validateOne(JSON.parse(line)));
        const fromNd = parseJsonDump(nd, { file: 'batch.ndjson' });
        assert.deepEqual(fromNd.rejected, []);
        assert.deepStrictEqual(fromNd.samples.map(withoutSource), samples);
        fromNd.samples.forEach((s, i) => assert.deepEqual(s.source, { file: 'batch.ndjson', line: i + 1 }));

        const fromArray = parseJsonDump(JSON.stringify(samples.map(sampleToJson)));
        assert.deepStrictEqual(fromArray.samples, samples);
        for (const s of samples) assert.deepStrictEqual(parseJsonDump(JSON.stringify(sampleToJson(s))).samples, [s]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('hand-written samples', () => {
  test('a kernel log sample: a "? " entry and a frame printed without an address keep their flags', () => {
    const text = '{"trigger":"log","stacks":[],"callchain":[' +
      '{"addr":"0","sym":"foo+0x12/0x40","dso":"[kernel.kallsyms]","flags":["no_address"]},' +
      '{"addr":"0","sym":"bar+0x5/0x20","dso":"[kernel.kallsyms]","flags":["unreliable","no_address"]},' +
      '{"addr":"ffffffff81002000","sym":"baz+0x1/0x10","dso":"[kernel.kallsyms]","flags":["unreliable"]}]}';
    assert.ok(validateOne(JSON.parse(text)), JSON.stringify(validateOne.errors));
    const r = parseJsonDump(text);
    assert.deepEqual(r.rejected, []);
    assert.deepEqual(r.samples[0]!.callchain!.map((e) => e.flags), [['no_address'], ['unreliable', 'no_address'], ['unreliable']]);
    assert.deepStrictEqual(parseJsonDump(formatNdjson(r.samples)).samples, r.samples);
  });
  test('a minimal sample', () => {
    assert.deepStrictEqual(parseJsonDump('{"trigger":"nmi","stacks":[]}'), { samples: [{ trigger: 'nmi', stacks: [] }], rejected: [] });
    assert.deepStrictEqual(sampleToJson({ trigger: 'nmi', stacks: [] }), { trigger: 'nmi', stacks: [] });
  });

  test('the document form as written', () => {
    const s: Sample = {
      comm: 'swapper/0',
      pid: 0,
      tid: 0,
      cpu: 0,
      time: '12345.678901',
      period: 250000n,
      trigger: 'nmi',
      regs: { ip: 0xffffffff81000123n, sp: 0xffffc90000003f00n, cs: 0x10n },
      stacks: [{ type: 'task', begin: 0xffffc90000000000n, end: 0xffffc90000004000n, windows: [{ start: 0xffffc90000003f00n, bytes: Uint8Array.of(0x23, 0x01, 0x00, 0x81) }] }],
      callchain: [
        { addr: 0xffffffff81000123n, sym: 'do_idle+0x23', dso: '[kernel.kallsyms]', flags: [] },
        { addr: 0n, flags: ['zero'] },
      ],
      truth: { frames: [{ ip: 0xffffffff81000123n, kind: 'start' }, { ip: 0xffffffff81000456n, kind: 'call', tolerated: 'prologue' }] },
    };
    const expected = `{
  "format": "stacksanity-dump",
  "version": 1,
  "samples": [
    {
      "comm": "swapper/0",
      "pid": 0,
      "tid": 0,
      "cpu": 0,
      "time": "12345.678901",
      "period": "250000",
      "trigger": "nmi",
      "regs": {
        "ip": "ffffffff81000123",
        "cs": "0000000000000010",
        "sp": "ffffc90000003f00"
      },
      "stacks": [
        {
          "type": "task",
          "begin": "ffffc90000000000",
          "end": "ffffc90000004000",
          "windows": [
            { "start": "ffffc90000003f00", "data": "IwEAgQ==" }
          ]
        }
      ],
      "callchain": [
        { "addr": "ffffffff81000123", "sym": "do_idle+0x23", "dso": "[kernel.kallsyms]" },
        { "addr": "0000000000000000", "flags": ["zero"] }
      ],
      "truth": {
        "frames": [
          { "ip": "ffffffff81000123", "kind": "start" },
          { "ip": "ffffffff81000456", "kind": "call", "tolerated": "prologue" }
        ]
      }
    }
  ]
}
`;
    assert.equal(formatJsonDump([s]), expected);
    assert.equal(formatNdjson([s]).split('\n').length, 2);
    assert.equal(formatJsonDump([]), '{\n  "format": "stacksanity-dump",\n  "version": 1,\n  "samples": []\n}\n');
    assert.equal(formatNdjson([]), '');
  });

  test('addresses above 2^53 stay exact', () => {
    const s = sampleFromJson({ trigger: 'nmi', stacks: [], regs: { ip: 'ffffffff81000123', bp: 'ffffffffffffffff' }, callchain: [{ addr: '0020000000000001' }] });
    assert.equal(s.regs?.ip, 0xffffffff81000123n);
    assert.equal(s.regs?.bp, 0xffffffffffffffffn);
    // 2^53 + 1 is the first integer a double cannot hold.
    assert.equal(s.callchain?.[0]?.addr, 9007199254740993n);
    const o = sampleToJson(s) as { regs: Record<string, string>; callchain: Array<{ addr: string }> };
    assert.equal(o.regs.ip, 'ffffffff81000123');
    assert.equal(o.callchain[0]?.addr, '0020000000000001');
  });

  test('hex with and without 0x, short and upper case', () => {
    const s = sampleFromJson({ trigger: 'nmi', stacks: [], regs: { ip: '0xFFFFFFFF81000000', cs: '0x10', flags: '246', ss: '0' } });
    assert.deepStrictEqual(s.regs, { ip: 0xffffffff81000000n, cs: 0x10n, flags: 0x246n, ss: 0n });
  });

  test('-0 reads as 0, so writing it back changes nothing', () => {
    assert.ok(Object.is(sampleFromJson(JSON.parse('{"trigger":"nmi","stacks":[],"cpu":-0}')).cpu, 0));
  });

  test('callchain entries without flags read back with flags []', () => {
    const s = sampleFromJson({ trigger: 'cpu-clock', stacks: [], callchain: [{ addr: 'ffffffff81000000', sym: '[unknown]' }] });
    assert.deepStrictEqual(s.callchain, [{ addr: 0xffffffff81000000n, sym: '[unknown]', flags: [] }]);
  });

  test('bad hex is bad_hex, naming the field', () => {
    expectReject({ ...minimal, regs: { ip: 'xyz' } }, 'bad_hex', 'regs.ip');
    expectReject({ ...minimal, regs: { ip: '' } }, 'bad_hex', 'regs.ip');
    expectReject({ ...minimal, regs: { ip: '0x' } }, 'bad_hex', 'regs.ip');
    expectReject({ ...minimal, regs: { sp: '1ffffffffffffffff' } }, 'bad_hex', 'regs.sp');
    expectReject({ ...minimal, callchain: [{ addr: '1' }, { addr: ' 1' }] }, 'bad_hex', 'callchain[1].addr');
    expectReject({ ...minimal, truth: { frames: [{ ip: '-1', kind: 'start' }] } }, 'bad_hex', 'truth.frames[0].ip');
  });

  test('unknown keys are bad_field with the key path', () => {
    const st = (windows: unknown[]) => ({ type: 'task', begin: 'ffffc90000000000', end: 'ffffc90000004000', windows });
    const irq = { type: 'irq', begin: 'ffffc90000100000', end: 'ffffc90000104000' };
    expectReject({ ...minimal, stacks: [irq, st([{ stat: 'ffffc90000000000', data: '' }])] }, 'bad_field', 'stacks[1].windows[0].stat');
    expectReject({ ...minimal, colour: 'red' }, 'bad_field', 'colour');
    expectReject({ ...minimal, regs: { rip: '1' } }, 'bad_field', 'regs.rip');
    expectReject({ ...minimal, 'odd key': 1 }, 'bad_field', '["odd key"]');
    expectReject(JSON.parse('{"trigger":"nmi","stacks":[],"__proto__":{}}'), 'bad_field', '__proto__');
    expectReject({ ...minimal, truth: { frames: [], extra: [] } }, 'bad_field', 'truth.extra');
  });

  test('missing required keys and unknown enum values are bad_field', () => {
    expectReject({ stacks: [] }, 'bad_field', 'trigger');
    expectReject({ trigger: 'nmi' }, 'bad_field', 'stacks');
    expectReject({ trigger: '', stacks: [] }, 'bad_field', 'trigger');
    expectReject({ ...minimal, stacks: [{ type: 'softirq', begin: '0', end: '1' }] }, 'bad_field', 'stacks[0].type');
    expectReject({ ...minimal, stacks: [{ type: 'task', begin: '0' }] }, 'bad_field', 'stacks[0].end');
    expectReject({ ...minimal, callchain: [{ addr: '1', flags: ['zero', 'odd'] }] }, 'bad_field', 'callchain[0].flags[1]');
    expectReject({ ...minimal, truth: { frames: [{ ip: '1' }] } }, 'bad_field', 'truth.frames[0].kind');
    expectReject({ ...minimal, truth: { frames: [{ ip: '1', kind: 'call', tolerated: 'maybe' }] } }, 'bad_field', 'truth.frames[0].tolerated');
    expectReject({ ...minimal, pid: 1.5 }, 'bad_field', 'pid');
    expectReject({ ...minimal, cpu: 4294967296 }, 'bad_field', 'cpu');
    expectReject({ ...minimal, time: '12.' }, 'bad_field', 'time');
    expectReject({ ...minimal, period: '18446744073709551616' }, 'bad_field', 'period');
    expectReject({ ...minimal, period: '-1' }, 'bad_field', 'period');
  });

  test('wrong JSON types are bad_json', () => {
    expectReject({ ...minimal, pid: '12' }, 'bad_json', 'pid');
    expectReject({ ...minimal, regs: { ip: 18446744071578845000 } }, 'bad_json', 'regs.ip');
    expectReject({ ...minimal, period: 100 }, 'bad_json', 'period');
    expectReject({ trigger: 'nmi', stacks: {} }, 'bad_json', 'stacks');
    expectReject({ ...minimal, comm: null }, 'bad_json', 'comm');
    expectReject({ ...minimal, regs: [] }, 'bad_json', 'regs');
    expectReject({ ...minimal, callchain: [{ addr: '1', flags: 'zero' }] }, 'bad_json', 'callchain[0].flags');
    expectReject({ ...minimal, callchain: ['ffffffff81000000'] }, 'bad_json', 'callchain[0]');
    expectReject([minimal], 'bad_json', '(sample)');
    expectReject('nmi', 'bad_json', '(sample)');
  });

  test('window data must be canonical base64', () => {
    const w = (data: string) => ({ ...minimal, stacks: [{ type: 'task', begin: '1000', end: '2000', windows: [{ start: '1000', data }] }] });
    assert.deepStrictEqual(sampleFromJson(w('AAEC/w==')).stacks[0]?.windows[0]?.bytes, Uint8Array.of(0, 1, 2, 255));
    assert.deepStrictEqual(sampleFromJson(w('')).stacks[0]?.windows[0]?.bytes, new Uint8Array(0));
    expectReject(w('AAEC/w'), 'bad_field', 'stacks[0].windows[0].data');
    expectReject(w('AA EC/w=='), 'bad_field', 'stacks[0].windows[0].data');
    expectReject(w('AAEC_w=='), 'bad_field', 'stacks[0].windows[0].data');
  });

  test('a window outside its stack is window_out_of_bounds (from validateSample)', () => {
    const o = { ...minimal, stacks: [{ type: 'task', begin: 'ffffc90000000000', end: 'ffffc90000004000', windows: [{ start: 'ffffc90000003ffc', data: 'AAAAAAAAAAA=' }] }] };
    assert.equal(decodeError(o).reason, 'window_out_of_bounds');
    const r = parseJsonDump(JSON.stringify(o));
    assert.equal(r.samples.length, 0);
    assert.equal(r.rejected[0]?.reason, 'window_out_of_bounds');
  });

  test('a decoded window owns its bytes', () => {
    const s = sampleFromJson({ ...minimal, stacks: [{ type: 'task', begin: '1000', end: '2000', windows: [{ start: '1000', data: 'AQID' }] }] });
    const bytes = s.stacks[0]!.windows[0]!.bytes;
    assert.equal(Object.getPrototypeOf(bytes), Uint8Array.prototype);
    assert.equal(bytes.byteOffset, 0);
    assert.equal(bytes.buffer.byteLength, 3);
  });

  test('the writer refuses values that are not u64', () => {
    assert.throws(() => sampleToJson({ trigger: 'nmi', stacks: [], regs: { ip: -1n } }), RangeError);
    assert.throws(() => sampleToJson({ trigger: 'nmi', stacks: [], period: 1n << 64n }), RangeError);
  });
});

describe('whole inputs', () => {
  const good = (comm: string) => ({ comm, trigger: 'nmi', stacks: [] });

  test('a bad sample between two good ones in an array', () => {
    const text = JSON.stringify([good('a'), { ...good('b'), regs: { ip: 'nope' } }, good('c')], null, 2);
    const r = parseJsonDump(text, { file: 'x.json' });
    assert.deepEqual(r.samples.map((s) => s.comm), ['a', 'c']);
    assert.equal(r.rejected.length, 1);
    const rej = r.rejected[0]!;
    assert.equal(rej.sampleIndex, 1);
    assert.equal(rej.reason, 'bad_hex');
    assert.deepEqual(rej.where, { file: 'x.json', line: 7, field: 'regs.ip', sampleIndex: 1 });
    assert.equal(rej.message, 'x.json:7: sample 1: field regs.ip: expected 1-16 hex digits with an optional 0x, got "nope"');
    assert.deepEqual(r.samples.map((s) => s.source), [{ file: 'x.json', line: 2 }, { file: 'x.json', line: 15 }]);
  });

  test('a bad sample between two good ones in a document', () => {
    const doc = { format: 'stacksanity-dump', version: 1, samples: [good('a'), { ...good('b'), pid: 'x' }, good('c')] };
    const r = parseJsonDump(JSON.stringify(doc));
    assert.deepEqual(r.samples.map((s) => s.comm), ['a', 'c']);
    assert.deepEqual(r.rejected.map((j) => [j.sampleIndex, j.reason, j.where.field, j.where.line]), [[1, 'bad_json', 'pid', 1]]);
    const text = `{
  "format": "stacksanity-dump",
  "comment_free": null,
  "samples": []
}`;
    assert.equal(parseJsonDump(text).rejected[0]?.where.field, 'comment_free');
    // Strings holding quotes, brackets and the word "samples" must not move the line numbers.
    const pretty = `{"version": 1,
 "format": "stacksanity-dump",
 "samples": [
  {"comm": "samples\\"", "trigger": "nmi", "stacks": []},

  {"comm": "[{", "trigger": "nmi", "stacks": [], "pid": -7},
  {"trigger": "nmi", "stacks": []}]}`;
    const p = parseJsonDump(pretty);
    assert.equal(p.samples.length, 2);
    assert.deepEqual(p.rejected.map((j) => [j.sampleIndex, j.where.line, j.where.field]), [[1, 6, 'pid']]);
  });

  test('a bad sample between two good ones in NDJSON', () => {
    const lines = [JSON.stringify(good('a')), '', JSON.stringify({ ...good('b'), stacks: [{ type: 'task', begin: '2000', end: '1000' }] }), '{"comm": "c", "trigger": "nmi", "stacks": [', JSON.stringify(good('d')) + '\r', '42', ''];
    const r = parseJsonDump(lines.join('\n'), { file: 'b.ndjson' });
    assert.deepEqual(r.samples.map((s) => [s.comm, s.source?.line]), [['a', 1], ['d', 5]]);
    assert.deepEqual(
      r.rejected.map((j) => [j.sampleIndex, j.reason, j.where.line]),
      [[1, 'window_out_of_bounds', 3], [2, 'bad_json', 4], [4, 'bad_json', 6]],
    );
    assert.match(r.rejected[1]!.message, /^b\.ndjson:4: sample 2: not valid JSON at column 44/);
  });

  test('malformed JSON overall is one bad_json with its line', () => {
    const r = parseJsonDump('{\n  "format": "stacksanity-dump",\n  "version": 1,\n  "samples": [\n    {"trigger": "nmi" "stacks": []}\n  ]\n}\n', { file: 'd.json' });
    assert.equal(r.samples.length, 0);
    assert.equal(r.rejected.length, 1);
    assert.equal(r.rejected[0]!.reason, 'bad_json');
    assert.equal(r.rejected[0]!.where.line, 5);
    assert.match(r.rejected[0]!.message, /^d\.json:5: not valid JSON at column 23: /);
    const cut = parseJsonDump('[{"trigger": "nmi", "stacks": []},\n{"trig');
    assert.deepEqual(cut.rejected.map((j) => [j.reason, j.where.line]), [['bad_json', 2]]);
    // perf script text is not JSON, and must not be taken for NDJSON.
    const perf = parseJsonDump('swapper 0 [000] 12345.678901: cpu-clock:\n\tffffffff81000123 do_idle+0x23 ([kernel.kallsyms])\n');
    assert.deepEqual(perf.rejected.map((j) => j.reason), ['bad_json']);
  });

  test('document wrapper errors', () => {
    const reasonOf = (o: unknown) => parseJsonDump(JSON.stringify(o)).rejected.map((j) => [j.reason, j.where.field]);
    assert.deepEqual(reasonOf({ format: 'stacksanity-dump', version: 2, samples: [] }), [['bad_field', 'version']]);
    assert.deepEqual(reasonOf({ format: 'perf', version: 1, samples: [] }), [['bad_field', 'format']]);
    assert.deepEqual(reasonOf({ version: 1, samples: [] }), [['bad_field', 'format']]);
    assert.deepEqual(reasonOf({ format: 'stacksanity-dump', version: 1 }), [['bad_field', 'samples']]);
    assert.deepEqual(reasonOf({ format: 'stacksanity-dump', version: 1, samples: {} }), [['bad_json', 'samples']]);
    assert.deepEqual(reasonOf({ format: 'stacksanity-dump', version: 1, samples: [], generator: 'x' }), [['bad_field', 'generator']]);
    assert.deepEqual(reasonOf(42), [['bad_json', undefined]]);
    assert.deepEqual(parseJsonDump(JSON.stringify({ $schema: './dump.schema.json', format: 'stacksanity-dump', version: 1, samples: [minimal] })).samples, [minimal]);
  });

  test('NDJSON is recognised by its lines, not by its first line alone', () => {
    // A broken first record does not hide the good ones after it.
    const r = parseJsonDump('{"trigger": "nmi", "stacks": [}\n{"trigger": "timer", "stacks": []}\n');
    assert.deepEqual(r.samples, [{ trigger: 'timer', stacks: [] }]);
    assert.deepEqual(r.rejected.map((j) => [j.sampleIndex, j.reason, j.where.line]), [[0, 'bad_json', 1]]);
    // Text none of whose first 100 lines is an object is not NDJSON: one rejection, not thousands.
    // (V8 gives no position for "Unexpected token", so neither does the rejection.)
    const junk = 'not json\n'.repeat(100) + '{"trigger": "nmi", "stacks": []}\n';
    assert.deepEqual(parseJsonDump(junk).rejected.map((j) => [j.reason, j.where.line]), [['bad_json', undefined]]);
    const late = 'not json\n'.repeat(99) + '{"trigger": "nmi", "stacks": []}\n';
    const lr = parseJsonDump(late);
    assert.equal(lr.samples.length, 1);
    assert.equal(lr.rejected.length, 99);
  });

  test('the caller keeps its stack traces', () => {
    const before = Error.stackTraceLimit;
    parseJsonDump('{"trigger": 1, "stacks": []}\n{"trigger": 2, "stacks": []}\n');
    assert.equal(Error.stackTraceLimit, before);
  });

  test('oversized input is refused whole', () => {
    const text = formatNdjson(Array.from({ length: 10 }, () => ({ trigger: 'nmi', stacks: [] })));
    const r = parseJsonDump(text, { maxBytes: 100 });
    assert.deepEqual(r.samples, []);
    assert.deepEqual(r.rejected.map((j) => j.reason), ['oversized']);
    assert.equal(parseJsonDump(text, { maxBytes: text.length }).samples.length, 10);
    // The limit counts UTF-8 bytes, not UTF-16 units.
    const wide = JSON.stringify({ comm: '€€€€', trigger: 'nmi', stacks: [] });
    assert.equal(parseJsonDump(wide, { maxBytes: wide.length + 7 }).rejected[0]?.reason, 'oversized');
    assert.equal(parseJsonDump(wide, { maxBytes: wide.length + 8 }).samples.length, 1);
  });

  test('empty input, a BOM, a single sample', () => {
    assert.deepEqual(parseJsonDump(''), { samples: [], rejected: [] });
    assert.deepEqual(parseJsonDump(' \n\n'), { samples: [], rejected: [] });
    assert.deepEqual(parseJsonDump('\ufeff[]'), { samples: [], rejected: [] });
    const one = parseJsonDump('\n\n  {"trigger": "timer", "stacks": []}', { file: 'one.json' });
    assert.deepEqual(one.samples, [{ trigger: 'timer', stacks: [], source: { file: 'one.json', line: 3 } }]);
  });
});

describe('docs/dump-format-json.md', () => {
  const doc = readFileSync(new URL('../../../docs/dump-format-json.md', import.meta.url), 'utf8');
  const block = (lang: string) => {
    const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(doc);
    assert.ok(m, `no ${lang} block in the doc`);
    return m[1]!;
  };

  test('the full example is what the writer produces, and the schema accepts it', () => {
    const text = block('json');
    const r = parseJsonDump(text);
    assert.deepEqual(r.rejected, []);
    assert.equal(r.samples.length, 1);
    assert.equal(formatJsonDump(r.samples), text);
    assert.ok(validateDoc(JSON.parse(text)), JSON.stringify(validateDoc.errors));
  });

  test('the NDJSON example is what the writer produces', () => {
    const text = block('ndjson');
    const r = parseJsonDump(text);
    assert.deepEqual(r.rejected, []);
    assert.equal(formatNdjson(r.samples), text);
  });
});
