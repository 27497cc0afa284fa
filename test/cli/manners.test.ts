// The command line as a newcomer meets it: --help on every command and subcommand (usage on
// stdout, exit 0, nothing run), --version, a bad flag named with the command's usage (exit 2), a
// missing input file reported once and not as a refused sample, and `emulate --out` saying which
// `check` to run — a command that, run as printed, checks what emulate wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../../services/cli/main.ts';
import { runCli } from '../support/cli.ts';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
const KALLSYMS = join(ROOT, 'examples', 'demo.kallsyms');
const DUMP = join(ROOT, 'examples', 'demo.dump');

/** Every command, and the subcommands that exist (host qemu). */
const INVOCATIONS: string[][] = [...Object.keys(COMMANDS).map((c) => [c]), ['host', 'qemu']];

test('--help and -h on every command and subcommand: its usage on stdout, exit 0, nothing run', async () => {
  for (const inv of INVOCATIONS) {
    for (const flag of ['--help', '-h']) {
      const r = await runCli([...inv, flag]);
      assert.equal(r.code, 0, `${inv.join(' ')} ${flag}: ${r.err}`);
      assert.ok(r.out.startsWith(`usage: stacksanity ${inv[0]}`), `${inv.join(' ')} ${flag} prints its own usage first:\n${r.out}`);
      assert.equal(r.err, '', `${inv.join(' ')} ${flag} writes nothing to stderr`);
    }
  }
  // --help after other flags still wins; the demo is not run.
  const d = await runCli(['demo', '--help']);
  assert.doesNotMatch(d.out, /exit status of the check/);
  const c = await runCli(['check', '--kallsyms', KALLSYMS, '--help', DUMP]);
  assert.equal(c.code, 0);
  assert.doesNotMatch(c.out, /samples: \d+ checked/);
  // `help <command>` is the same text.
  assert.equal((await runCli(['help', 'emulate'])).out, (await runCli(['emulate', '--help'])).out);
});

test('stacksanity --help lists every command; --version prints package.json\'s version', async () => {
  const h = await runCli(['--help']);
  assert.equal(h.code, 0);
  for (const c of Object.keys(COMMANDS)) assert.match(h.out, new RegExp(`^  ${c}\\b`, 'm'), `lists ${c}`);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const v = await runCli([flag]);
    assert.equal(v.code, 0);
    assert.equal(v.out, `stacksanity ${pkg.version}\n`);
  }
});

test('a bad flag: exit 2, the flag named, then that command\'s usage, once', async () => {
  for (const inv of INVOCATIONS) {
    const r = await runCli([...inv, '--bogus-flag']);
    assert.equal(r.code, 2, `${inv.join(' ')} --bogus-flag: ${r.out}${r.err}`);
    assert.match(r.err, /'--bogus-flag'/, `${inv.join(' ')}: the message names the flag:\n${r.err}`);
    const usages = r.err.split(`usage: stacksanity ${inv[0]}`).length - 1;
    assert.equal(usages, 1, `${inv.join(' ')}: the command's usage follows once:\n${r.err}`);
    assert.equal(r.out, '', `${inv.join(' ')}: nothing on stdout`);
  }
  // A flag that wants a value and got none is named too.
  const m = await runCli(['check', '--kallsyms']);
  assert.equal(m.code, 2);
  assert.match(m.err, /--kallsyms/);
  assert.match(m.err, /usage: stacksanity check/);
});

test('a missing input file is reported once, and not as a refused sample', async () => {
  const missing = join(tmpdir(), `stacksanity-missing-${process.pid}.dump`);
  const alone = await runCli(['check', '--kallsyms', KALLSYMS, missing]);
  assert.equal(alone.code, 2);
  const all = alone.out + alone.err;
  assert.equal(all.split(`${missing}: no such file`).length - 1, 1, `reported once:\n${all}`);
  assert.doesNotMatch(all, /bad_field/);
  assert.doesNotMatch(all, /rejected/);

  // Beside a readable dump: its 12 samples are checked, none is counted as rejected.
  const mixed = await runCli(['check', '--kallsyms', KALLSYMS, DUMP, missing]);
  const both = mixed.out + mixed.err;
  assert.equal(both.split(`${missing}: no such file`).length - 1, 1, `reported once:\n${both}`);
  assert.match(mixed.out, /samples: 12 checked, 0 rejected/);
  assert.doesNotMatch(both, /bad_field/);
});

test('emulate --out prints the check command for what it wrote; run as printed, it checks every sample', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-emulate-'));
  try {
    const out = join(dir, 'fleet.dump');
    const e = await runCli(['emulate', '--seed', '7', '--samples', '40', '--out', out]);
    assert.equal(e.code, 0, e.err);
    const line = e.err.split('\n').map((l) => l.trim()).find((l) => l.includes('stacksanity check'));
    assert.ok(line, `a check command is printed:\n${e.err}`);
    const words = line.replace(/^npx /, '').split(/\s+/);
    assert.equal(words[0], 'stacksanity');
    const c = await runCli(words.slice(1));
    assert.notEqual(c.code, 2, `the printed command runs: ${c.err}`);
    assert.match(c.out, /samples: 40 checked, 0 rejected/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
