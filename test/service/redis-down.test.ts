// Redis goes away: uploads get 503 with Retry-After (nothing is half-accepted), readiness fails,
// and when Redis is back the same API and worker carry on without a restart. Runs on a private
// redis-server on another loopback port, so the shared one keeps running.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiServer } from '../../services/api/server.ts';
import { loadConfig } from '../../services/pipeline/config.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { ensureRedis, freePort, ping, redisServerAvailable, startPrivateRedis } from '../../services/pipeline/redis-server.ts';
import {
  DEMO_SAMPLES, auth, demoVariant, putDemoSymbols, startTestApi, uniquePrefix, waitFor,
} from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'stacksanity-redis-'));
let server: Awaited<ReturnType<typeof startPrivateRedis>> | undefined;
let api: ApiServer | undefined;
let worker: CheckerWorker | undefined;

before(async () => {
  if (!redisServerAvailable()) return;
  server = await startPrivateRedis(dir);
  const cfg = loadConfig({ STACKSANITY_PREFIX: uniquePrefix('down'), REDIS_URL: server.url, PORT: '0' });
  api = await startTestApi(cfg);
  worker = new CheckerWorker(cfg);
  await worker.start();
});

after(async () => {
  await worker?.close(3000);
  await api?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function upload(host: string): Promise<{ status: number; headers: Record<string, unknown>; body: Record<string, unknown> }> {
  const r = await api!.app.inject({ method: 'POST', url: '/v1/samples', headers: { ...auth(), 'content-type': 'text/plain' }, payload: demoVariant(host) });
  return { status: r.statusCode, headers: r.headers, body: JSON.parse(r.body) as Record<string, unknown> };
}

async function completed(id: string): Promise<void> {
  await waitFor(`job ${id}`, async () => JSON.parse((await api!.app.inject({ url: `/v1/jobs/${id}` })).body).state === 'completed', 30_000, 200);
}

test('Redis stopped: 503 + Retry-After; Redis back: uploads flow again without a restart', { skip: !redisServerAvailable() && 'redis-server is not on PATH' }, async () => {
  await putDemoSymbols(api!);
  const first = await upload('before');
  assert.equal(first.status, 202);
  await completed(first.body.job as string);

  const port = server!.port;
  await server!.stop();
  await waitFor('the API to notice', async () => (await api!.app.inject({ url: '/readyz' })).statusCode === 503);
  const down = await upload('during');
  assert.equal(down.status, 503);
  assert.equal(down.headers['retry-after'], '5');
  assert.match(down.body.message as string, /unavailable/);
  assert.equal((await api!.app.inject({ url: '/v1/summary' })).statusCode, 503);
  assert.equal((await api!.app.inject({ url: '/metrics' })).statusCode, 200, 'metrics still answer');
  assert.equal((await api!.app.inject({ url: '/healthz' })).statusCode, 200, 'alive, just not ready');

  // Same port, same data directory: the AOF brings back the kernel and the queue.
  server = await startPrivateRedis(dir, port);
  await waitFor('the API to reconnect', async () => (await api!.app.inject({ url: '/readyz' })).statusCode === 200, 30_000, 200);
  const after = await upload('after');
  assert.equal(after.status, 202, JSON.stringify(after.body));
  assert.equal(after.body.accepted, DEMO_SAMPLES);
  await completed(after.body.job as string);
  const s = JSON.parse((await api!.app.inject({ url: '/v1/summary' })).body) as Record<string, number>;
  assert.equal(s.samples, 2 * DEMO_SAMPLES, 'the batch before the outage and the one after');
});

test('no Redis anywhere: a private redis-server under the data directory, or an error naming the package', { skip: !redisServerAvailable() && 'redis-server is not on PATH' }, async () => {
  const nobody = `redis://127.0.0.1:${await freePort()}`;
  const dataDir = join(dir, 'fallback');
  await assert.rejects(ensureRedis({ PATH: join(dir, 'empty-path') }, dataDir, nobody), /Debian package 'redis-server'.*REDIS_URL/s);
  const h = await ensureRedis({ PATH: process.env.PATH }, dataDir, nobody);
  try {
    assert.match(h.how, /private redis-server/);
    assert.ok(h.stop);
    assert.ok(await ping(h.url));
  } finally {
    await h.stop?.();
  }
  assert.equal(await ping(h.url), false, 'stopped');
  const viaUrl = await ensureRedis({ REDIS_URL: 'redis://user:secret@127.0.0.1:1' }, dataDir, nobody);
  assert.doesNotMatch(viaUrl.how, /secret/);
});
