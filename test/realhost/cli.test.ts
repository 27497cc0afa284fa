// The real-host inputs through the command line: `collapse` against a FlameGraph golden, and
// `check` on perf.data and kernel logs (told apart by content), with their host callchain verdicts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli } from '../support/cli.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const corpus = path.resolve(root, '../shared/corpus');
const skip = existsSync(corpus) ? false : `${corpus} not found: ../shared/corpus is absent`;

const run = runCli;

describe('stacksanity collapse / check on real-host inputs', { skip }, () => {
  it('collapse --all prints FlameGraph\'s golden byte for byte (gzip input)', async () => {
    const r = await run(['collapse', '--all', path.join(corpus, 'perf-script/flamegraph-perf-iperf-stacks-pidtid-01.txt')]);
    assert.equal(r.code, 0, r.err);
    assert.equal(Buffer.from(r.out, 'latin1').equals(readFileSync(path.join(corpus, 'perf-script/flamegraph-golden/perf-iperf-stacks-pidtid-01-collapsed-all.txt'))), true);
  });
  it('collapse reports the event filter as stackcollapse-perf.pl does', async () => {
    const r = await run(['collapse', path.join(corpus, 'perf-script/flamegraph-perf-cycles-instructions-01.txt')]);
    assert.equal(r.code, 0);
    // The file's first event is instructions; the Perl script names the event it drops (cycles)
    // in this message, a quirk kept as is.
    assert.equal(readFileSync(path.join(corpus, 'perf-script/flamegraph-perf-cycles-instructions-01.txt'), 'utf8').split('\n').find((l) => /: *\d* *[a-z-]+:\s*$/.test(l) && !l.startsWith('#'))!.match(/(\S+):\s*$/)![1], 'instructions');
    assert.match(r.err, /Filtering for events of type: cycles/);
  });
  it('check reads perf.data by its magic: 45 callchain-only samples, kernel parts ending in user mode', async () => {
    const r = await run(['check', path.join(corpus, 'perf-data/perfparser-vector_static_gcc.perf.data')]);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /45 callchain-only/);
    assert.match(r.out, /host callchains: 10 with a kernel part/);
  });
  it('check reads a kernel log and fails on the FP unwinder\'s own warning (exit 1)', async () => {
    const r = await run(['check', path.join(corpus, 'kernel-logs/syzkaller-report-314.txt')]);
    assert.equal(r.code, 1, r.out + r.err);
    assert.match(r.out, /2 callchain-only/);
    assert.match(r.out, /reasons: bad_frame_pointer 1/);
    assert.match(r.out, /has bad 'bp' value/);
  });
  it('check --format json carries the host callchain tallies', async () => {
    const r = await run(['check', '--format', 'json', path.join(corpus, 'kernel-logs/syzkaller-report-207.txt')]);
    const j = JSON.parse(r.out) as { host_callchains: { checked: number; bottoms: Record<string, number> } };
    assert.equal(j.host_callchains.checked, 1);
    assert.deepEqual(j.host_callchains.bottoms, { ret_from_fork: 1 });
  });
});
