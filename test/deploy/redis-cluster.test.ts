// The service unchanged on a Redis Cluster: a local 3-node cluster (redis-server in cluster mode on
// loopback ports), the API and two workers on it, and every uploaded sample checked exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { startApi, type ApiServer } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { loadConfig } from '../../services/pipeline/config.ts';
import { DEMO_BUILD, DEMO_KALLSYMS, DEMO_SAMPLES, demoVariant, uniquePrefix, waitFor } from '../service/helpers.ts';
import { freePort, skipUnless } from './tools.ts';

const skip = skipUnless('redis-cli', 'redis-tools') || skipUnless('redis-server', 'redis-server');
const TOKEN = 'cluster-token-0123456789abcdef';
const servers: ChildProcess[] = [];
const ports: number[] = [];
let dir = '';
let api: ApiServer | undefined;
const workers: CheckerWorker[] = [];
const prefix = uniquePrefix('cluster');

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'stacksanity-cluster-'));
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    ports.push(port);
    const d = join(dir, String(port));
    mkdirSync(d);
    servers.push(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
      '--cluster-config-file', join(d, 'nodes.conf'), '--save', '', '--appendonly', 'no', '--dir', d], { stdio: 'ignore' }));
  }
  for (const p of ports) {
    await waitFor(`redis on ${p}`, async () => spawnSync('redis-cli', ['-p', String(p), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 10_000, 100);
  }
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  assert.equal(create.status, 0, create.stdout + create.stderr);
  for (const p of ports) {
    await waitFor(`cluster state ok on ${p}`, async () => /cluster_state:ok/.test(spawnSync('redis-cli', ['-p', String(p), 'cluster', 'info'], { encoding: 'utf8' }).stdout), 20_000, 200);
  }
});

after(async () => {
  for (const w of workers) await w.close().catch(() => undefined);
  await api?.close().catch(() => undefined);
  for (const s of servers) s.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('API and two workers on a 3-node Redis Cluster check every uploaded sample exactly once', { skip, timeout: 120_000 }, async () => {
  const url = `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`;
  const cfg = { ...loadConfig({ REDIS_URL: url, STACKSANITY_PREFIX: prefix, PORT: '0', STACKSANITY_RATE_LIMIT: '10000' }), combinedMetrics: true };
  const tokens = new TokenSet();
  tokens.add('cluster', TOKEN);
  api = await startApi(cfg, tokens, { listen: false });
  for (let i = 0; i < 2; i++) {
    const w = new CheckerWorker(cfg);
    await w.start();
    workers.push(w);
  }
  const headers = { authorization: `Bearer ${TOKEN}` };
  const k = await api.app.inject({ method: 'POST', url: `/v1/kernels/${DEMO_BUILD}/symbols`, headers: { ...headers, 'content-type': 'text/plain' }, payload: DEMO_KALLSYMS });
  assert.equal(k.statusCode, 201, k.body);
  const batches = 10;
  const jobs: string[] = [];
  for (let i = 0; i < batches; i++) {
    const r: { statusCode: number; body: string } = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...headers, 'content-type': 'text/plain' }, payload: demoVariant(`cluster-${i}`) });
    assert.equal(r.statusCode, 202, r.body);
    jobs.push((JSON.parse(r.body) as { job: string }).job);
  }
  // A retried upload of the same bytes is the same job: not checked or counted again.
  const again = await api.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...headers, 'content-type': 'text/plain' }, payload: demoVariant('cluster-0') });
  assert.equal(again.statusCode, 202);
  assert.equal((JSON.parse(again.body) as { job: string }).job, jobs[0]);

  for (const id of jobs) {
    await waitFor(`job ${id} completed`, async () => (JSON.parse((await api!.app.inject({ url: `/v1/jobs/${id}` })).body) as { state: string }).state === 'completed', 60_000, 200);
  }
  const summary = JSON.parse((await api.app.inject({ url: '/v1/summary' })).body) as { samples: number; strategies: Record<string, { verdicts: Record<string, number> }> };
  assert.equal(summary.samples, batches * DEMO_SAMPLES, 'each sample checked once');
  for (const [s, v] of Object.entries(summary.strategies)) {
    const unwinds = Object.values(v.verdicts).reduce((a, b) => a + b, 0);
    if (unwinds > 0) assert.equal(unwinds, batches * DEMO_SAMPLES, `${s}: one unwind per sample`);
  }
  // The two workers together processed each batch once, and the keys really live on the cluster.
  assert.equal(workers.reduce((n, w) => n + w.batches, 0), batches);
  const c = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })));
  try {
    // The client learns the masters once connected.
    if (c.status !== 'ready') await new Promise((r) => c.once('ready', r));
    let found = 0;
    for (const node of c.nodes('master')) found += (await node.keys(`${prefix}*`)).length;
    assert.ok(found > 0, 'the service wrote its keys to the cluster');
  } finally {
    c.disconnect();
  }
});
