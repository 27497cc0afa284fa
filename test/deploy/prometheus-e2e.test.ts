// End to end with a real Prometheus (Debian's prometheus, on loopback): the service checks samples
// from emulated hosts with faults injected, Prometheus scrapes the API and two workers with the
// shipped rules loaded, the failure ratio Prometheus computes equals what the service counted, an
// alert reaches the firing state, NewUnwindFinding fires on the faults' findings and, once they
// are marked known, their later failures are counted as known — and every series the dashboard
// and the rules name is one the running service actually exposes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { startApi, type ApiServer } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { EmulatedFleet } from '../../services/emulator/index.ts';
import { formatTextDump } from '../../services/core/dump/text.ts';
import { GOOD_VERDICTS, type Verdict } from '../../services/core/check/reasons.ts';
import { cleanup, testConfig, uniquePrefix, waitFor } from '../service/helpers.ts';
import { freePort, skipUnless } from './tools.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const skip = skipUnless('prometheus', 'prometheus');
const TOKEN = 'e2e-token-0123456789abcdef';
const ADMIN = 'e2e-admin-0123456789abcdef';
const prefix = uniquePrefix('prom');

let api: ApiServer | undefined;
const workers: CheckerWorker[] = [];
let prom: ChildProcess | undefined;
let promUrl = '';
let dir = '';
let promLog = '';

before(async () => {
  if (skip) return;
  const apiPort = await freePort();
  // Workers ask for the known findings before every batch (the default caches them for 1 s).
  const cfg = { ...testConfig(prefix, { PORT: String(apiPort), STACKSANITY_RATE_LIMIT: '100000', STACKSANITY_FINDINGS_REVALIDATE_MS: '0' }), combinedMetrics: true };
  const tokens = new TokenSet();
  tokens.add('e2e', TOKEN);
  const adminTokens = new TokenSet();
  adminTokens.add('e2e-ops', ADMIN);
  api = await startApi(cfg, tokens, { listen: true, adminTokens });
  for (let i = 0; i < 2; i++) {
    const w = new CheckerWorker(cfg, { metricsPort: 0 });
    await w.start();
    workers.push(w);
  }
  // Prometheus with the shipped rules, scraping every second.
  dir = mkdtempSync(join(tmpdir(), 'stacksanity-prom-'));
  copyFileSync(join(root, 'deploy/prometheus/rules.yml'), join(dir, 'rules.yml'));
  const shipped = parse(readFileSync(join(root, 'deploy/prometheus/prometheus.yml'), 'utf8'));
  const host = (u: string) => new URL(u).host;
  const config = {
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    rule_files: shipped.rule_files.map((f: string) => f.replace(/\s.*$/, '')),
    scrape_configs: [
      { job_name: 'stacksanity-api', metrics_path: '/metrics', static_configs: [{ targets: [host(api.url)] }] },
      { job_name: 'stacksanity-worker', metrics_path: '/metrics', static_configs: [{ targets: workers.map((w) => host(w.metricsAddress!)) }] },
    ],
  };
  // The shipped config's job names are the ones the rules use.
  assert.deepEqual(config.scrape_configs.map((s) => s.job_name), shipped.scrape_configs.map((s: { job_name: string }) => s.job_name));
  writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  prom = spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  prom.stderr?.on('data', (c) => (promLog += c));
  await waitFor('prometheus ready', async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok === true, 30_000, 200);
});

after(async () => {
  prom?.kill('SIGTERM');
  for (const w of workers) await w.close();
  await api?.close();
  await cleanup(prefix);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function promQuery(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  const j = (await r.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] }; error?: string };
  assert.equal(j.status, 'success', `${q}: ${j.error}`);
  return j.data.result;
}

async function post(path: string, body: string, method = 'POST', type = 'text/plain', token = TOKEN): Promise<Response> {
  return fetch(`${api!.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': type }, body });
}

async function firing(name: string): Promise<{ labels: Record<string, string> }[]> {
  const r = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
  return r.data.alerts.filter((a) => a.labels.alertname === name && a.state === 'firing');
}

/** The service's own total of stacksanity_unwind_failures_total{finding=...} (the API's combined view). */
async function serviceFailures(finding: string): Promise<number> {
  const text = await (await fetch(`${api!.url}/metrics`)).text();
  let n = 0;
  for (const l of text.split('\n')) if (l.startsWith('stacksanity_unwind_failures_total{') && l.includes(`finding="${finding}"`)) n += Number(l.slice(l.lastIndexOf(' ') + 1));
  return n;
}

async function feed(fleet: EmulatedFleet, batches: number): Promise<void> {
  const jobs: string[] = [];
  for (let b = 0; b < batches; b++) {
    const r = await post('/v1/samples', formatTextDump(fleet.batch(300)));
    const text = await r.text();
    assert.equal(r.status, 202, text);
    jobs.push((JSON.parse(text) as { job: string }).job);
  }
  for (const id of jobs) {
    await waitFor(`job ${id}`, async () => ((await (await fetch(`${api!.url}/v1/jobs/${id}`)).json()) as { state: string }).state === 'completed', 60_000, 200);
  }
}

let fleet: EmulatedFleet;

test('Prometheus computes the same failure ratio the service counted, and FalseReliableUnwind fires', { skip, timeout: 120_000 }, async () => {
  // Emulated hosts with faults; no_frame_pointer on sleeping tasks makes reliable claims wrong.
  fleet = new EmulatedFleet({ seed: 5, layout: 'all', hosts: 4, faults: ['corrupt_bp', 'no_frame_pointer', 'broken_irq_link'], faultRate: 0.3 });
  for (const k of fleet.kernels()) {
    assert.equal((await post(`/v1/kernels/${k.buildId}/symbols`, k.kallsyms)).status, 201);
    assert.equal((await post(`/v1/kernels/${k.buildId}/profile`, JSON.stringify(k.profile), 'PUT', 'application/json')).status < 300, true);
  }
  await feed(fleet, 6);
  const summary = (await (await fetch(`${api!.url}/v1/summary`)).json()) as { samples: number; strategies: Record<string, { verdicts: Record<string, number> }>; false_reliable: Record<string, number> };
  assert.equal(summary.samples, 1800);
  const counted = new Map<string, number>();
  for (const [s, v] of Object.entries(summary.strategies)) {
    let all = 0;
    let bad = 0;
    for (const [verdict, n] of Object.entries(v.verdicts)) {
      all += n;
      if (!GOOD_VERDICTS.has(verdict as Verdict)) bad += n;
    }
    if (all > 0) counted.set(s, bad / all);
  }
  assert.ok([...counted.values()].some((r) => r > 0), 'the faults produced failures');

  // Once Prometheus has scraped the final totals, its ratio per strategy is the service's.
  const q = 'sum by (strategy) (stacksanity_unwind_failures_total{job="stacksanity-api"}) / sum by (strategy) (stacksanity_unwinds_total{job="stacksanity-api"})';
  await waitFor('Prometheus to agree with the service', async () => {
    const rows = await promQuery(q);
    if (rows.length === 0) return false;
    for (const [s, ratio] of counted) {
      const row = rows.find((r) => r.metric.strategy === s);
      const got = row ? Number(row.value[1]) : 0;
      if (Math.abs(got - ratio) > 1e-9) return false;
    }
    return true;
  }, 30_000, 500).catch(async (e) => {
    throw new Error(`${(e as Error).message}\nservice: ${JSON.stringify([...counted])}\nprometheus: ${JSON.stringify(await promQuery(q))}\n${promLog}`);
  });

  // The shipped alert fires: the workers report false_reliable and the rule has for: 0m.
  const wrong = Object.values(summary.false_reliable ?? {}).reduce((a, b) => a + b, 0);
  assert.ok(wrong > 0, `the no_frame_pointer fault made a reliable claim wrong: ${JSON.stringify(summary.false_reliable)}`);
  await waitFor('FalseReliableUnwind firing', async () => {
    const r = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
    return r.data.alerts.some((a) => a.labels.alertname === 'FalseReliableUnwind' && a.state === 'firing');
  }, 40_000, 500);
  // The workers are up, so CheckerWorkersDown stays silent.
  // (Waited for: under load Prometheus may not have scraped both workers yet at this instant.)
  await waitFor('both workers scraped and up', async () => Number((await promQuery('sum(up{job="stacksanity-worker"})'))[0]?.value[1]) === 2, 30_000, 500);
});

test('NewUnwindFinding fires on the faults\' findings; marked known, their later failures count as known', { skip, timeout: 120_000 }, async () => {
  // The first test's faulty samples are new findings: the page fires, naming strategy and reason.
  await waitFor('NewUnwindFinding firing', async () => (await firing('NewUnwindFinding')).length > 0, 40_000, 500).catch((e: Error) => {
    throw new Error(`${e.message}\n${promLog}`);
  });
  const pages = await firing('NewUnwindFinding');
  assert.ok(pages.every((a) => a.labels.strategy !== 'fp' && a.labels.severity === 'critical' && a.labels.reason), JSON.stringify(pages));
  assert.equal(await serviceFailures('known'), 0);

  // An operator triages them: every finding marked known (an upload token may not).
  let cursor: string | null = null;
  const ids: string[] = [];
  do {
    const r = (await (await fetch(`${api!.url}/v1/findings?state=new&limit=500${cursor ? `&cursor=${cursor}` : ''}`)).json()) as { items: { id: string }[]; next: string | null };
    ids.push(...r.items.map((f) => f.id));
    cursor = r.next;
  } while (cursor);
  assert.ok(ids.length > 0, 'the faults made findings');
  assert.equal((await post(`/v1/findings/${ids[0]}`, JSON.stringify({ state: 'known' }), 'PUT', 'application/json')).status, 403);
  for (const id of ids) {
    const r = await post(`/v1/findings/${id}`, JSON.stringify({ state: 'known', note: 'injected by the e2e test' }), 'PUT', 'application/json', ADMIN);
    assert.equal(r.status, 200, await r.text());
  }
  const gauge = await promQueryUntil('sum(stacksanity_findings{job="stacksanity-api",state="known"})', ids.length);
  assert.equal(gauge, ids.length);

  // The same hosts keep failing the same way: those failures are now counted as known.
  await feed(fleet, 3);
  const known = await serviceFailures('known');
  assert.ok(known > 0, 'failures of known findings are counted as known');
  await promQueryUntil('sum(stacksanity_unwind_failures_total{job="stacksanity-api",finding="known"})', known);
});

/** Waits until Prometheus's value for `q` is `want` (it scrapes every second), and returns it. */
async function promQueryUntil(q: string, want: number): Promise<number> {
  let got = NaN;
  await waitFor(`${q} = ${want}`, async () => {
    const rows = await promQuery(q);
    got = rows.length > 0 ? Number(rows[0]!.value[1]) : NaN;
    return got === want;
  }, 30_000, 500).catch((e: Error) => { throw new Error(`${e.message} (last: ${got})`); });
  return got;
}

test('every series the dashboard and the rules name is exposed by the running service', { skip, timeout: 60_000 }, async () => {
  const exposed = new Set<string>();
  const texts = [await (await fetch(`${api!.url}/metrics`)).text(), ...(await Promise.all(workers.map(async (w) => (await fetch(w.metricsAddress!)).text())))];
  for (const t of texts) for (const line of t.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m && !line.startsWith('#')) exposed.add(m[1]!);
  }
  const rules = parse(readFileSync(join(root, 'deploy/prometheus/rules.yml'), 'utf8')) as { groups: { rules: { expr: string; record?: string }[] }[] };
  const exprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
  const dash = JSON.parse(readFileSync(join(root, 'deploy/grafana/dashboards/stacksanity.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[]; templating: { list: { definition?: string }[] } };
  for (const p of dash.panels) for (const t of p.targets ?? []) exprs.push(t.expr);
  for (const v of dash.templating.list) if (v.definition) exprs.push(v.definition);
  const named = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(/\b((?:stacksanity|bullmq)_[a-z0-9_]+)\b/g)) named.add(m[1]!);
  assert.ok(named.size >= 10, `found ${named.size} series names in the queries`);
  const missing = [...named].filter((n) => !exposed.has(n));
  assert.deepEqual(missing, [], `named in deploy/ but not exposed by the service: ${missing.join(', ')}`);
});
