// A firing alert goes through a real Alertmanager (Debian's prometheus-alertmanager, on loopback)
// with the shipped routing tree, and reaches the webhook of the receiver its severity selects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { freePort, skipUnless } from './tools.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const shipped = resolve(root, 'deploy/alertmanager/alertmanager.yml');

test('amtool accepts the shipped routing tree', { skip: skipUnless('amtool', 'prometheus-alertmanager') }, () => {
  const r = spawnSync('amtool', ['check-config', shipped], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('a critical alert is routed to the oncall webhook, a warning to the team webhook', { skip: skipUnless('prometheus-alertmanager', 'prometheus-alertmanager'), timeout: 60_000 }, async (t) => {
  const received: { path: string; body: { receiver: string; alerts: { labels: Record<string, string>; status: string }[] } }[] = [];
  const hook = createServer((req: IncomingMessage, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', body: JSON.parse(data) });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  const hookPort = (hook.address() as { port: number }).port;
  t.after(() => hook.close());

  // The shipped tree, with its receivers pointed at this test's webhook and short group waits.
  const cfg = parse(readFileSync(shipped, 'utf8'));
  for (const r of cfg.receivers) for (const w of r.webhook_configs) w.url = w.url.replace(/^http:\/\/[^/]+/, `http://127.0.0.1:${hookPort}`);
  cfg.route.group_wait = '1s';
  for (const r of cfg.route.routes) r.group_wait = '0s';
  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-am-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'am.yml'), stringify(cfg));
  const port = await freePort();
  const am: ChildProcess = spawn('prometheus-alertmanager', [
    `--config.file=${join(dir, 'am.yml')}`, `--storage.path=${dir}`, `--web.listen-address=127.0.0.1:${port}`,
    '--cluster.listen-address=', // no gossip: a single local instance
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  am.stderr?.on('data', (c) => (log += c));
  t.after(() => am.kill('SIGTERM'));

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/-/ready`)).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) assert.fail(`alertmanager did not become ready:\n${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const now = new Date().toISOString();
  const post = await fetch(`${base}/api/v2/alerts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([
      { labels: { alertname: 'FalseReliableUnwind', severity: 'critical', strategy: 'section' }, annotations: { summary: 'test' }, startsAt: now },
      { labels: { alertname: 'UploadsRejected', severity: 'warning' }, annotations: { summary: 'test' }, startsAt: now },
    ]),
  });
  assert.equal(post.status, 200, await post.text());
  while (received.length < 2 && Date.now() < deadline + 20_000) await new Promise((r) => setTimeout(r, 200));
  const oncall = received.find((r) => r.path === '/hooks/oncall');
  const team = received.find((r) => r.path === '/hooks/team');
  assert.ok(oncall, `no oncall delivery; got ${JSON.stringify(received)}\n${log}`);
  assert.ok(team, `no team delivery; got ${JSON.stringify(received)}`);
  assert.equal(oncall.body.receiver, 'oncall');
  assert.deepEqual(oncall.body.alerts.map((a) => [a.labels.alertname, a.status]), [['FalseReliableUnwind', 'firing']]);
  assert.equal(team.body.receiver, 'team');
  assert.deepEqual(team.body.alerts.map((a) => a.labels.alertname), ['UploadsRejected']);
});
