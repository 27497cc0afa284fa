// The stacksanity command as a user meets it: exit codes, messages that name file, line and field,
// gzip and stdin, JSON output. Expectations come from how each input was built.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { gzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runCli } from '../support/cli.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import { formatJsonDump } from '../../services/core/dump/json.ts';
import { ENCODED, pageFault, syscallToVfsRead } from '../core/unwind/fixtures.ts';
import { Machine } from '../support/stack-image.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(join(tmpdir(), 'stacksanity-cli-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const run = runCli;

const kallsyms = join(dir, 'kallsyms');
writeFileSync(kallsyms, ENCODED.kernel.kallsyms);

/** Clean samples on the encoded_fp+section kernel: a body sample and a page fault, both exact by construction. */
function cleanSamples() {
  const m = new Machine(ENCODED.kernel, ENCODED.layout);
  syscallToVfsRead(m);
  return [m.sample({ at: 0x40 }).sample, pageFault(ENCODED).b.sample];
}

test('clean samples: exit 0 and a summary naming each strategy the kernel supports', async () => {
  const f = join(dir, 'clean.dump');
  writeFileSync(f, formatTextDump(cleanSamples()));
  const r = await run(['check', '--kallsyms', kallsyms, f]);
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /samples: 2 checked, 0 rejected/);
  assert.match(r.out, /^section\s+exact 2$/m);
  assert.match(r.out, /^encoded_fp\s+exact 2$/m);
  // fp loses or stops at the page fault's entry, but the baseline never decides the exit status.
  assert.match(r.out, /^fp .*\(baseline, not counted as failure\)$/m);
  // kernel_entry is not offered on a kernel without the dummy function.
  assert.doesNotMatch(r.out, /^kernel_entry/m);
});

test('the same samples gzipped, as JSON, and through stdin give the same verdicts', async () => {
  const gz = join(dir, 'clean.json.gz');
  writeFileSync(gz, gzipSync(formatJsonDump(cleanSamples())));
  const r = await run(['check', '--kallsyms', kallsyms, '--format', 'json', gz]);
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.samples, 2);
  assert.deepEqual(j.verdicts.encoded_fp, { exact: 2 });
  assert.equal(j.failing_samples, 0);

  const text = formatTextDump(cleanSamples());
  const p = spawnSync(process.execPath, [join(root, 'bin/stacksanity.js'), 'check', '--kallsyms', kallsyms, '-'], { input: text, encoding: 'utf8' });
  assert.equal(p.status, 0, p.stderr);
  assert.match(p.stdout, /samples: 2 checked/);
});

test('naming a strategy the kernel cannot decode shows pt_regs_not_decoded and exits 1', async () => {
  const f = join(dir, 'pf.dump');
  writeFileSync(f, formatTextDump([pageFault(ENCODED).b.sample]));
  const r = await run(['check', '--kallsyms', kallsyms, '--strategy', 'kernel_entry,encoded_fp', f]);
  assert.equal(r.code, 1);
  assert.match(r.out, /^kernel_entry\s+error 1$/m);
  assert.match(r.out, /reasons: pt_regs_not_decoded 1/);
  assert.match(r.out, /kernel_entry trace:/);
});

test('the demo: exit 1, and the failures are the samples built to fail', async () => {
  const r = await run(['check', '--kallsyms', join(root, 'examples/demo.kallsyms'), join(root, 'examples/demo.dump')]);
  assert.equal(r.code, 1);
  assert.match(r.out, /samples: 12 checked, 0 rejected/);
  // make-demo.ts builds three: the objtool case claimed reliable, a corrupted bp, a frame loop.
  assert.match(r.out, /failing samples: 3/);
  assert.match(r.out, /FALSE RELIABLE/);
  assert.match(r.out, /bad_frame_pointer/);
  assert.match(r.out, /frame_not_ascending/);
});

test('one bad sample is reported by file, line and field; the others are still checked', async () => {
  const good = formatTextDump(cleanSamples());
  const blocks = good.trimEnd().split(/\n\n/);
  const bad = blocks[0]!.replace(/ ip=([0-9a-f]+)/, ' ip=zz$1');
  assert.notEqual(bad, blocks[0]);
  const f = join(dir, 'onebad.dump');
  writeFileSync(f, [bad, blocks[1]].join('\n\n') + '\n');
  const badLine = bad.split('\n').findIndex((l) => l.includes('ip=zz')) + 1;
  const r = await run(['check', '--kallsyms', kallsyms, f]);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /samples: 1 checked, 1 rejected/);
  assert.match(r.out, /rejected by reason: bad_hex 1/);
  assert.ok(r.out.includes(`${f}:${badLine}:`), r.out);
  assert.match(r.out, /sample 0/);
});

test('unusable input exits 2 with a message that names what is wrong', async () => {
  let r = await run(['check', '--kallsyms', kallsyms, join(dir, 'nope.dump')]);
  assert.equal(r.code, 2);
  assert.match(r.err, /nope\.dump: no such file/);

  r = await run(['check']);
  assert.equal(r.code, 2);
  assert.match(r.err, /name at least one dump file/);

  r = await run(['check', '--strategy', 'orcc', 'x']);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown strategy 'orcc'/);

  r = await run(['check', '--format', 'yaml', 'x']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--format must be text, json or ndjson/);

  const restricted = join(dir, 'restricted');
  writeFileSync(restricted, '0000000000000000 T _stext\n0000000000000000 T startup_64\n');
  r = await run(['check', '--kallsyms', restricted, join(dir, 'clean.dump')]);
  assert.equal(r.code, 2);
  assert.match(r.err, /kptr_restrict/);

  const f = join(dir, 'clean.dump');
  r = await run(['check', '--kallsyms', kallsyms, '--max-bytes', '100', f]);
  assert.equal(r.code, 2);
  assert.match(r.err + r.out, /oversized|limit is 100/);

  const garbage = join(dir, 'garbage.dump');
  writeFileSync(garbage, 'this is not a dump\nat all\n');
  r = await run(['check', '--kallsyms', kallsyms, garbage]);
  assert.equal(r.code, 2);
  assert.match(r.err, /no usable samples/);
});

test('a sample naming another kernel build than the profile is rejected, not unwound', async () => {
  const s = cleanSamples()[0]!;
  s.kernel = 'aaaa';
  const f = join(dir, 'build.dump');
  writeFileSync(f, formatTextDump([s, cleanSamples()[1]!]));
  const prof = join(dir, 'profile.json');
  writeFileSync(prof, JSON.stringify({ buildId: 'bbbb' }));
  const r = await run(['check', '--kallsyms', kallsyms, '--profile', prof, f]);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /rejected by reason: unknown_build_id 1/);
  assert.match(r.out, /names kernel build aaaa, but the profile is for bbbb/);
});

const corpus = resolve(root, '../shared/corpus/perf-script/flamegraph-perf-dd-stacks-01.txt');
test('perf script output: callchain-only samples are counted and their flagged frames tallied', { skip: existsSync(corpus) ? false : `${corpus} not found: ../shared/corpus is absent` }, async () => {
  const r = await run(['check', corpus]);
  assert.equal(r.code, 0, r.out + r.err);
  // The file has 11 samples (grep -c 'cpu-clock:'), 7 of whose frames are "0 [unknown]".
  const samples = readFileSync(corpus, 'utf8').split('\n').filter((l) => /cpu-clock:/.test(l)).length;
  assert.equal(samples, 11);
  assert.match(r.out, new RegExp(`${samples} callchain-only`));
  assert.match(r.out, /zero 7/);
});
