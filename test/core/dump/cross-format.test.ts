// The text and JSON forms carry the same samples: text -> JSON -> text is lossless (DESIGN §3.2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { arbSample } from './gen-sample.ts';
import { formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';
import { formatJsonDump, formatNdjson, parseJsonDump } from '../../../services/core/dump/json.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';

function strip(s: Sample): Sample {
  const { source: _source, ...rest } = s;
  return rest;
}

test('any sample survives text -> JSON -> NDJSON -> text unchanged', () => {
  fc.assert(
    fc.property(fc.array(arbSample, { minLength: 1, maxLength: 3 }), (samples) => {
      const t1 = parseTextDump(formatTextDump(samples));
      assert.deepEqual(t1.rejected, []);
      const j = parseJsonDump(formatJsonDump(t1.samples));
      assert.deepEqual(j.rejected, []);
      const n = parseJsonDump(formatNdjson(j.samples));
      assert.deepEqual(n.rejected, []);
      const t2 = parseTextDump(formatTextDump(n.samples));
      assert.deepEqual(t2.rejected, []);
      assert.deepEqual(t2.samples.map(strip), samples.map(strip));
    }),
    { numRuns: 150, seed: 20261125 },
  );
});
