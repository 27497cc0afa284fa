// Found by `npm run fuzz` (bench/fuzz-readers.ts): the API's text transcoder accepted a sample whose
// header line is longer than a header may be (MAX_HEADER_CHARS, 64 KiB; docs/dump-format.md), where
// the parser — whose answers the transcoder must give — rejects it as bad_header. The API then
// queued a sample that `stacksanity check` on the same file refuses.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { transcodeTextDump } from '../../../services/core/dump/batch-transcode.ts';
import { readFileSync } from 'node:fs';
import { MAX_HEADER_CHARS, formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';

// Three samples of the shipped example in the dump's own form (the transcoder's fast path reads
// those; perf script callchains go to the parser anyway), the second one's command replaced.
const demo = parseTextDump(readFileSync(new URL('../../../examples/demo.dump', import.meta.url), 'utf8')).samples.slice(0, 3);
const dump = (comm2: string): string => formatTextDump(demo.map((s, i) => (i === 1 ? { ...s, comm: comm2 } : s)));

describe('transcoder: a header line over the header limit', () => {
  for (const [name, comm] of [['a long command', 'A'.repeat(MAX_HEADER_CHARS + 10)], ['a long run of blanks in it', `cc${' '.repeat(MAX_HEADER_CHARS + 10)}x`]] as const) {
    it(`rejects that sample as the parser does (${name}), keeping the others`, () => {
      const text = dump(comm);
      const tc = transcodeTextDump(Buffer.from(text), { file: 'long.dump' });
      // The rule: a line over MAX_HEADER_CHARS where a header belongs is no header (sample 1).
      assert.deepEqual(tc.samples.map((s) => s.index), [0, 2]);
      assert.deepEqual(tc.rejected.map((r) => [r.sampleIndex, r.reason]), [[1, 'bad_header']]);
      const parsed = parseTextDump(text, { file: 'long.dump' });
      assert.deepEqual(tc.rejected, parsed.rejected);
    });
  }

  it('keeps a header line just under the limit on the fast path', () => {
    const tc = transcodeTextDump(Buffer.from(dump('A'.repeat(1000))), { file: 'ok.dump' });
    assert.deepEqual(tc.samples.map((s) => s.index), [0, 1, 2]);
    assert.equal(tc.rejected.length, 0);
    assert.equal(tc.fast, true);
  });
});
