// The recording and alert rules load, and every alert fires and stays silent where its unit tests
// (deploy/prometheus/tests/alerts.test.yml, values by hand) say so — run by the real promtool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { skipUnless } from './tools.ts';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../deploy/prometheus');
const skip = skipUnless('promtool', 'prometheus');

test('promtool check rules accepts deploy/prometheus/rules.yml', { skip }, () => {
  const r = spawnSync('promtool', ['check', 'rules', 'rules.yml'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('promtool test rules: every alert firing and not firing', { skip }, () => {
  const r = spawnSync('promtool', ['test', 'rules', 'tests/alerts.test.yml'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS/);
});

test('every alert has a severity, a for:, a summary and a runbook link, and a firing unit test', () => {
  const rules = parse(readFileSync(resolve(dir, 'rules.yml'), 'utf8')) as { groups: { rules: Record<string, unknown>[] }[] };
  const alerts = rules.groups.flatMap((g) => g.rules).filter((r) => 'alert' in r) as {
    alert: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string>;
  }[];
  const names = alerts.map((a) => a.alert).sort();
  assert.deepEqual(names, ['BatchesDeadLettered', 'CheckerWorkersDown', 'FalseReliableUnwind', 'NewUnwindFinding', 'SampleBacklogGrowing', 'StrategiesDisagree', 'UnwindFailureRatioHigh', 'UploadsRejected']);
  const tests = parse(readFileSync(resolve(dir, 'tests/alerts.test.yml'), 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[] };
  const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
  const ops = readFileSync(resolve(dir, '../../docs/operations.md'), 'utf8');
  for (const a of alerts) {
    assert.ok(a.for !== undefined, `${a.alert}: no for:`);
    assert.ok(['warning', 'critical'].includes(a.labels?.severity ?? ''), `${a.alert}: severity`);
    assert.ok(a.annotations?.summary, `${a.alert}: summary`);
    const anchor = a.alert.toLowerCase();
    assert.equal(a.annotations?.runbook_url, `docs/operations.md#${anchor}`);
    assert.ok(new RegExp(`^#+ ${a.alert}$`, 'm').test(ops), `${a.alert}: no runbook section in docs/operations.md`);
    assert.ok(cases.some((c) => c.alertname === a.alert && c.exp_alerts.length > 0), `${a.alert}: no firing test`);
    assert.ok(cases.some((c) => c.alertname === a.alert && c.exp_alerts.length === 0), `${a.alert}: no silent test`);
  }
  const fr = alerts.find((a) => a.alert === 'FalseReliableUnwind')!;
  assert.equal(fr.labels?.severity, 'critical');
  // DESIGN §3.5: page on new findings and on false_reliable; the overall failure ratio only warns.
  assert.equal(alerts.find((a) => a.alert === 'NewUnwindFinding')!.labels?.severity, 'critical');
  assert.equal(alerts.find((a) => a.alert === 'UnwindFailureRatioHigh')!.labels?.severity, 'warning');
});
