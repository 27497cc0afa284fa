// perf.data reader against sources that are not this reader:
// - perfparser's own dump of perfparser-vector_static_gcc.perf.data (.expected.txt, KDAB's test
//   golden): per sample the time, the period, every kernel callchain address and, for samples
//   taken in user mode, the ip (the first frame perfparser prints);
// - `perf report -D -i FILE` (perf 6.1 on the machine this test was written on) for the record
//   counts of the same file: MMAP 141, COMM 2, EXIT 1, SAMPLE 45, MMAP2 13, FINISHED_ROUND 4,
//   THREAD_MAP 1, CPU_MAP 1, TIME_CONV 1; and `perf report --header-only` for hostname
//   "agathebauer", os release "5.3.0-arch1-1-ARCH" and the cmdline; `perf buildid-list -i FILE`
//   for the kernel's build id 2366ff9353522874bfb9e58d3452bb73aaf47841 ([kernel.kallsyms]);
// - for perfparser-cpp-inlining.perf.data (perf 6.1 cannot read it), a six-line Python walk of the
//   data section's record headers: TIME_CONV 1, ID_INDEX 1, EVENT_UPDATE 2, THREAD_MAP 1,
//   CPU_MAP 1, KSYMBOL 2, COMM 1, FINISHED_INIT 1, COMPRESSED 13, FINISHED_ROUND 8; and
//   `strings` for the event names cpu_atom/cycles:Pu/, cpu_core/cycles:Pu/, dummy:HGu.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePerfData } from '../../services/realhost/perf-data.ts';
import { DumpError } from '../../services/core/dump/errors.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = path.resolve(root, '../shared/corpus/perf-data');
const skip = existsSync(dir) ? false : `${dir} not found: ../shared/corpus is absent`;
const vector = path.join(dir, 'perfparser-vector_static_gcc.perf.data');
const inlining = path.join(dir, 'perfparser-cpp-inlining.perf.data');

interface ExpectedSample {
  time: string;
  period: string;
  kernel: string[];
  firstUser?: string;
}

/** perfparser's dump: "comm\tpid\ttid\ttime", "\tcycles: N", then frame lines; kernel frames are "\t<addr> 0\t0 0". */
function readExpected(text: string): ExpectedSample[] {
  const out: ExpectedSample[] = [];
  for (const l of text.split('\n')) {
    if (l === '') continue;
    if (l[0] !== '\t') {
      out.push({ time: l.split('\t')[3]!, period: '', kernel: [] });
      continue;
    }
    const cur = out[out.length - 1]!;
    let m = /^\tcycles: (\d+)$/.exec(l);
    if (m) cur.period = m[1]!;
    else if ((m = /^\t(ffff[0-9a-f]{12}) 0\t0 0$/.exec(l))) cur.kernel.push(m[1]!);
    else if ((m = /^\t([0-9a-f]+) \1\t/.exec(l)) && m[1] !== '0' && cur.firstUser === undefined) cur.firstUser = m[1]!;
  }
  return out;
}

describe('perf.data: perfparser-vector_static_gcc', { skip }, () => {
  it('matches perfparser: 45 samples, times, periods, kernel callchains, user ips', () => {
    const r = parsePerfData(readFileSync(vector), { file: vector });
    const want = readExpected(readFileSync(vector + '.expected.txt', 'utf8'));
    assert.equal(want.length, 45);
    assert.equal(r.samples.length, 45);
    assert.deepEqual(r.rejected, []);
    for (let i = 0; i < want.length; i++) {
      const s = r.samples[i]!;
      const w = want[i]!;
      assert.equal(s.time, w.time, `sample ${i} time`);
      assert.equal(String(s.period), w.period, `sample ${i} period`);
      const chain = s.callchain!.map((c) => c.addr.toString(16));
      assert.deepEqual(chain.filter((a) => a.startsWith('ffff')), w.kernel, `sample ${i} kernel callchain`);
      // --call-graph dwarf: the kernel records no user frames; a user-mode sample's chain is its ip.
      const user = chain.filter((a) => !a.startsWith('ffff'));
      if (user.length > 0) assert.deepEqual(user, [w.firstUser], `sample ${i} user ip`);
      else assert.ok(w.kernel.length > 0, `sample ${i} has neither kernel frames nor an ip`);
      assert.equal(s.pid, 349054);
      assert.equal(s.trigger, 'cycles');
    }
  });
  it('counts the records it does not use, as perf report -D does', () => {
    const r = parsePerfData(readFileSync(vector));
    assert.deepEqual(r.skipped, { MMAP: 141, EXIT: 1, MMAP2: 13, FINISHED_ROUND: 4, THREAD_MAP: 1, CPU_MAP: 1, TIME_CONV: 1 });
    assert.equal(r.hostname, 'agathebauer');
    assert.equal(r.osRelease, '5.3.0-arch1-1-ARCH');
    assert.deepEqual(r.cmdline, ['/home/milian/projects/src/linux/tools/perf/perf', 'record', '--call-graph', 'dwarf', '-e', 'cycles', './vector_static_gcc_v9.1.0']);
    assert.equal(r.attrs.length, 1);
    assert.equal(r.attrs[0]!.name, 'cycles');
    assert.equal(r.kernelBuildId, '2366ff9353522874bfb9e58d3452bb73aaf47841');
    assert.ok(r.samples.every((s) => s.kernel === r.kernelBuildId));
  });
});

describe('perf.data: perfparser-cpp-inlining (zstd-compressed records)', { skip }, () => {
  it('skips and counts every record type, names the events, and says why no sample was read', () => {
    const r = parsePerfData(readFileSync(inlining));
    assert.deepEqual(r.skipped, { TIME_CONV: 1, ID_INDEX: 1, EVENT_UPDATE: 2, THREAD_MAP: 1, CPU_MAP: 1, KSYMBOL: 2, FINISHED_INIT: 1, COMPRESSED: 13, FINISHED_ROUND: 8 });
    assert.equal(r.samples.length, 0);
    assert.deepEqual(r.attrs.map((a) => a.name), ['cpu_atom/cycles:Pu/', 'cpu_core/cycles:Pu/', 'dummy:HGu']);
    assert.equal(r.hostname, 'lievensdock');
    assert.match(r.notes.join('\n'), /13 COMPRESSED records .* zstd/);
  });
});

describe('perf.data: bad input', () => {
  it('refuses what is not perf.data, naming the magic', () => {
    assert.throws(() => parsePerfData(Buffer.from('hello world, not perf')), (e: unknown) => e instanceof DumpError && /magic 'hello wo'/.test(e.message));
  });
  it('fuzz: truncations and flipped bytes give DumpErrors or rejections, never a crash or a hang', { skip, timeout: 180_000 }, () => {
    for (const f of [vector, inlining]) {
      const orig = readFileSync(f);
      let cases = 0;
      const tryOne = (b: Buffer, what: string): void => {
        cases++;
        try {
          const r = parsePerfData(b, { file: 'fuzz' });
          for (const x of r.rejected) assert.match(x.message, /offset \d+|fuzz/, `${what}: a rejection names where`);
        } catch (e) {
          assert.ok(e instanceof DumpError, `${what}: ${(e as Error).stack}`);
          assert.match(e.describe(), /^fuzz/, `${what}: names the file`);
        }
      };
      // Truncations: every byte of the header region, then a spread over the whole file.
      for (let n = 0; n < 300; n++) tryOne(orig.subarray(0, n), `truncated at ${n}`);
      for (let n = 300; n < orig.length; n += Math.max(1, Math.floor(orig.length / 400))) tryOne(orig.subarray(0, n), `truncated at ${n}`);
      // Flipped bytes: deterministic positions, header and records alike.
      let seed = 12345;
      const rand = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
      for (let k = 0; k < 600; k++) {
        const b = Buffer.from(orig);
        const at = k < 200 ? k % 0x200 : Math.floor(rand() * b.length);
        b[at] = b[at]! ^ (1 << (k % 8)) ^ (k % 3 === 0 ? 0xff : 0);
        tryOne(b, `byte ${at} flipped`);
      }
      assert.ok(cases > 0);
    }
  });
});

// A fresh recording of this machine, when perf is installed and allowed to sample (CI may not be):
// every sample against `perf script` itself — same order (perf sorts by time), same times, same
// kernel callchain addresses, same number of user entries (perf script may print those
// DSO-relative, so only their count is compared).
describe('perf.data: a fresh recording against perf script', () => {
  const dirTmp = mkdtempSync(path.join(tmpdir(), 'perfdata-'));
  const data = path.join(dirTmp, 'perf.data');
  const rec = spawnSync('perf', ['record', '-q', '-a', '-g', '-F', '99', '-o', data, '--', 'sleep', '0.5'], { encoding: 'utf8' });
  const why = rec.error ? `perf not available (${rec.error.message})` : rec.status !== 0 ? `perf record not permitted here: ${(rec.stderr ?? '').trim().split('\n')[0]}` : false;
  it('matches perf script sample for sample', { skip: why }, () => {
    try {
      const script = spawnSync('perf', ['script', '-i', data, '-F', 'tid,time,ip', '--ns'], { encoding: 'utf8', maxBuffer: 1 << 28 });
      assert.equal(script.status, 0, script.stderr);
      const blocks = script.stdout.split('\n\n').filter((b) => b.trim() !== '');
      const r = parsePerfData(readFileSync(data));
      assert.equal(r.samples.length, blocks.length);
      assert.ok(blocks.length > 0);
      const kind = (a: string): string => (a.startsWith('ffff') ? a : 'user');
      for (let i = 0; i < blocks.length; i++) {
        const lines = blocks[i]!.split('\n').filter(Boolean);
        const time = /(\d+\.\d+):/.exec(lines[0]!)![1];
        const want = lines.slice(1).map((l) => kind(l.trim().split(/\s+/)[0]!));
        const s = r.samples[i]!;
        assert.equal(s.time, time, `sample ${i} time`);
        assert.deepEqual(s.callchain!.map((c) => kind(c.addr.toString(16))), want, `sample ${i} callchain`);
      }
    } finally {
      rmSync(dirTmp, { recursive: true, force: true });
    }
  });
  if (why) rmSync(dirTmp, { recursive: true, force: true });
});
