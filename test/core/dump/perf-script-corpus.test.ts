// Real `perf script` output from public projects (../shared/corpus/perf-script, see its README)
// parses as callchain-only samples, with the counts below.
//
// How the constants were counted, independently of the parser: a Perl script read each file
// line by line, skipping `#` lines, treating each run of non-blank lines as one block whose first
// line is the header (a header with text after its event colon also counts one frame), and every
// other line `^\s*([0-9a-f]+)(?: (.*?))?(?: \((.*)\))?$` as one frame. Per frame it counted:
//   unknown      the symbol text is exactly `[unknown]`
//   zero         the address is all zeros;  allOnes: it is ffffffffffffffff
//   nonCanonical the 16-digit zero-padded address starts with neither 0000[0-7] nor ffff[8-f]
//   absurd       the symbol ends in +0x<hex> with a value above 0x100000
// No file has a section-marker symbol (checked with
// grep -cE ' (_stext|_etext|_text|_sinittext|_einittext|__[a-z_]+_text_(start|end))(\+0x[0-9a-f]+)? \(' → 0).
// Where the block count is not the sample count it is said per file (grep counts given there).
// The numbers agree with reference/peers-and-formats.md §2.8 where it gives them (the .gz: 1,315
// samples and 34,510 frames; dd: 7 zero frames; iperf: 59; 38 non-canonical frames in 7 files).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { formatTextDump, parseTextDump } from '../../../services/core/dump/text.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const corpus = path.resolve(repoRoot, '../shared/corpus/perf-script');

interface Expected {
  samples: number;
  rejected?: { reason: string; line: number; sampleIndex: number }[];
  frames: number;
  unknown: number;
  zero?: number;
  allOnes?: number;
  nonCanonical?: number;
  absurd?: number;
}

const EXPECTED: Record<string, Expected> = {
  'flamegraph-example-perf-stacks.txt.gz': { samples: 1315, frames: 34510, unknown: 463, nonCanonical: 11 },
  'flamegraph-perf-cycles-instructions-01.txt': { samples: 444, frames: 705, unknown: 3 },
  'flamegraph-perf-dd-stacks-01.txt': { samples: 11, frames: 52, unknown: 10, zero: 7 },
  'flamegraph-perf-funcab-pid-01.txt': { samples: 228, frames: 684, unknown: 0 },
  'flamegraph-perf-iperf-stacks-pidtid-01.txt': { samples: 201, frames: 3207, unknown: 332, zero: 59, nonCanonical: 1 },
  'flamegraph-perf-java-faults-01.txt': { samples: 23, frames: 143, unknown: 1, nonCanonical: 1 },
  'flamegraph-perf-java-stacks-01.txt': { samples: 46, frames: 1233, unknown: 26, nonCanonical: 1 },
  'flamegraph-perf-java-stacks-02.txt': { samples: 2, frames: 48, unknown: 0 },
  'flamegraph-perf-js-stacks-01.txt': { samples: 2, frames: 34, unknown: 0 },
  'flamegraph-perf-mirageos-stacks-01.txt': { samples: 53, frames: 228, unknown: 7 },
  'flamegraph-perf-rust-Yamakaky-dcpu.txt': { samples: 58, frames: 938, unknown: 6, nonCanonical: 2, absurd: 932 },
  'flamegraph-perf-vertx-stacks-01.txt': { samples: 286, frames: 9397, unknown: 0 },
  'inferno-cpp-stacks-std-function.txt': { samples: 46, frames: 423, unknown: 44 },
  // 3 blocks: the second header is followed by a blank line, so its sample has no callchain, and
  // the third block (line 6) is a callchain line with no header.
  'inferno-empty-line.txt': { samples: 2, rejected: [{ reason: 'bad_header', line: 6, sampleIndex: 2 }], frames: 1, unknown: 0 },
  'inferno-go-stacks.txt': { samples: 5, frames: 90, unknown: 7, nonCanonical: 5 },
  'inferno-java-inline.txt': { samples: 22, frames: 157, unknown: 40, nonCanonical: 17 },
  'inferno-no-events.txt': { samples: 0, frames: 0, unknown: 0 },
  'inferno-single-event.txt': { samples: 1, frames: 89, unknown: 1, allOnes: 1 },
  // One block of two single-line samples (grep -c 'cycles:' → 2), one frame each.
  'inferno-single-line-stacks.txt': { samples: 2, frames: 2, unknown: 1 },
  'inferno-sourcepawn-jitdump.txt': { samples: 1, frames: 34, unknown: 0 },
  // Line 5 of the second sample is `\t          THIS_IS_A_WEIRD_LINE`.
  'inferno-weird-stack-line.txt': { samples: 1, rejected: [{ reason: 'bad_field', line: 5, sampleIndex: 1 }], frames: 1, unknown: 0 },
};

function load(name: string): string {
  const buf = readFileSync(path.join(corpus, name));
  return name.endsWith('.gz') ? gunzipSync(buf).toString('utf8') : buf.toString('utf8');
}

function count(samples: Sample[], flag: string): number {
  let n = 0;
  for (const s of samples) for (const e of s.callchain ?? []) if ((e.flags as string[]).includes(flag)) n++;
  return n;
}

const plain = (ss: Sample[]): Omit<Sample, 'source'>[] => ss.map(({ source: _s, ...rest }) => rest);

describe('perf script corpus', () => {
  if (!existsSync(corpus)) {
    it('corpus', (t) => t.skip(`perf-script corpus tests: ../shared/corpus not found (looked in ${corpus})`));
    return;
  }

  it('every corpus file has expected counts written down', () => {
    const files = readdirSync(corpus).filter((f) => f.endsWith('.txt') || f.endsWith('.txt.gz')).sort();
    assert.deepEqual(files, Object.keys(EXPECTED).sort());
  });

  for (const [name, want] of Object.entries(EXPECTED)) {
    it(name, () => {
      const text = load(name);
      const r = parseTextDump(text, { file: name });
      assert.equal(r.samples.length, want.samples, 'samples');
      assert.deepEqual(
        r.rejected.map((j) => ({ reason: j.reason, line: j.where.line, sampleIndex: j.sampleIndex })),
        want.rejected ?? [],
      );
      let frames = 0;
      for (const s of r.samples) frames += s.callchain?.length ?? 0;
      assert.equal(frames, want.frames, 'frames');
      assert.equal(count(r.samples, 'unknown_symbol'), want.unknown, 'unknown_symbol');
      assert.equal(count(r.samples, 'zero'), want.zero ?? 0, 'zero');
      assert.equal(count(r.samples, 'all_ones'), want.allOnes ?? 0, 'all_ones');
      assert.equal(count(r.samples, 'non_canonical'), want.nonCanonical ?? 0, 'non_canonical');
      assert.equal(count(r.samples, 'absurd_offset'), want.absurd ?? 0, 'absurd_offset');
      assert.equal(count(r.samples, 'section_marker'), 0, 'section_marker');
      // perf script output carries callchains only: no registers, stacks or truth appear.
      for (const s of r.samples) {
        assert.equal(s.regs, undefined);
        assert.deepEqual(s.stacks, []);
        assert.equal(s.truth, undefined);
      }
      // What was read from perf's text writes back in our form and reads back the same.
      const back = parseTextDump(formatTextDump(r.samples));
      assert.deepEqual(back.rejected, []);
      assert.deepStrictEqual(plain(back.samples), plain(r.samples));
    });
  }

  it('header fields of the pid/tid variant (first sample of the .gz)', () => {
    const s = parseTextDump(load('flamegraph-example-perf-stacks.txt.gz')).samples[0]!;
    // `perf   977/977   [000] 7628263.042515: cycles: ` on line 19, after 18 `#` header lines.
    assert.equal(s.comm, 'perf');
    assert.equal(s.pid, 977);
    assert.equal(s.tid, 977);
    assert.equal(s.cpu, 0);
    assert.equal(s.time, '7628263.042515');
    assert.equal(s.trigger, 'cycles');
    assert.equal(s.source?.line, 19);
    assert.equal(s.callchain?.[0]?.sym, 'native_write_msr_safe');
    assert.equal(s.callchain?.[0]?.dso, '[kernel.kallsyms]');
  });
});
