// `check` as kernel CI uses it: a clean fleet of every layout exits 0 (the kernel's silent windows
// are no failures); faults become findings; a findings file is a baseline that passes the same
// input and fails one with a new fault kind, naming the new findings. Expectations come from the
// emulator (which samples carry which fault), not from the checker's output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../support/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'stacksanity-findings-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const run = runCli;

const kernels = join(dir, 'kernels');

async function emulate(name: string, seed: number, samples: number, faults?: string): Promise<string> {
  const file = join(dir, name);
  const r = await run(['emulate', '--seed', String(seed), '--samples', String(samples), '--layout', 'all', '--out', file, ...(faults ? ['--faults', faults] : [])]);
  assert.equal(r.code, 0, r.err);
  return file;
}

test('a clean fleet of every layout passes in one command (--kernels), with no finding', async () => {
  const clean = await emulate('clean.dump', 4242, 20000);
  const r = await run(['check', '--kernels', kernels, clean]);
  assert.equal(r.code, 0, r.out.slice(0, 3000));
  assert.match(r.out, /samples: 20000 checked, 0 rejected/);
  assert.doesNotMatch(r.out, /findings:/);
  // The kernel's silent windows occur and are counted as tolerated, not as failures.
  const j = JSON.parse((await run(['check', '--kernels', kernels, '--format', 'json', clean])).out) as { verdicts: Record<string, Record<string, number>>; findings: unknown[]; failing_samples: number };
  assert.equal(j.failing_samples, 0);
  assert.deepEqual(j.findings, []);
  for (const s of ['section', 'encoded_fp', 'kernel_entry']) assert.ok((j.verdicts[s]?.tolerated ?? 0) > 0, `${s} has tolerated samples`);
});

test('--findings-out then --known: the same input passes, a new fault kind fails and is named', async () => {
  const base = await emulate('bp.dump', 77, 3000, 'corrupt_bp');
  const baseline = join(dir, 'base.json');
  const first = await run(['check', '--kernels', kernels, '--findings-out', baseline, base]);
  assert.equal(first.code, 1, 'corrupted frame pointers fail the run');
  const doc = JSON.parse(readFileSync(baseline, 'utf8')) as { format: string; samples: number; findings: { id: string; verdict: string; reason: string; count: number; title: string }[] };
  assert.equal(doc.format, 'stacksanity-findings');
  assert.equal(doc.samples, 3000);
  assert.ok(doc.findings.length > 0);
  // A corrupted saved bp makes a frame-pointer walk stop: bad_frame_pointer, or did_not_reach_end for a zeroed one.
  for (const f of doc.findings) assert.ok(['bad_frame_pointer', 'did_not_reach_end', 'pt_regs_not_decoded'].includes(f.reason), f.title);
  assert.match(first.out, /findings: \d+/);

  const again = await run(['check', '--kernels', kernels, '--known', baseline, base]);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /findings: \d+ \(0 new, \d+ known\)/);

  // Adding a fault kind (return addresses overwritten) brings findings the baseline lacks.
  const more = await emulate('bp-ret.dump', 78, 3000, 'corrupt_bp,clobber_ret');
  const gated = await run(['check', '--kernels', kernels, '--known', baseline, more]);
  assert.equal(gated.code, 1);
  const named = gated.err.split('\n').filter((l) => l.startsWith('stacksanity: new finding '));
  assert.ok(named.length > 0, gated.err);
  // Among them, the clobbered return address's own signature: a non-text return address or a wrong frame.
  assert.ok(named.some((l) => /non_text_return_address|wrong_frame/.test(l)), named.join('\n'));
  const ids = new Set(doc.findings.map((f) => f.id));
  for (const l of named) assert.ok(!ids.has(l.slice('stacksanity: new finding '.length, 'stacksanity: new finding '.length + 16)), l);
});

test('--format ndjson prints every sample (passing ones too) with frames, then one summary line', async () => {
  const file = await emulate('small.dump', 9, 200);
  const r = await run(['check', '--kernels', kernels, '--format', 'ndjson', file]);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; index?: number; results?: { strategy: string; verdict: string; unwind: { frames: unknown[] } }[] });
  const samples = lines.filter((l) => l.type === 'sample');
  assert.equal(samples.length, 200);
  assert.deepEqual(samples.map((s) => s.index), [...Array(200).keys()]);
  for (const s of samples) for (const x of s.results!) assert.ok(x.unwind.frames.length > 0, `${x.strategy} frames`);
  assert.equal(lines[lines.length - 1]!.type, 'summary');
});

test('a malformed baseline or kernels folder is refused with the file and field named', async () => {
  const file = await emulate('tiny.dump', 10, 20);
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ format: 'stacksanity-findings', version: 1, findings: [{ id: 'nope' }] }));
  const r = await run(['check', '--kernels', kernels, '--known', bad, file]);
  assert.equal(r.code, 2);
  assert.match(r.err, /bad\.json.*findings\[0\]\.id|findings\[0\]\.id.*bad\.json/);
  const other = join(dir, 'other.json');
  writeFileSync(other, '{"hello": 1}');
  const r2 = await run(['check', '--kernels', kernels, '--known', other, file]);
  assert.equal(r2.code, 2);
  assert.match(r2.err, /not a findings file/);
  const r3 = await run(['check', '--kernels', dir + '/nowhere', file]);
  assert.equal(r3.code, 2);
  assert.match(r3.err, /kernels folder/);
});
