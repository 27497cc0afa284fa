// Every error the API answers is the documented JSON {error, message} (docs/api.md): unknown
// routes and methods too, and schema failures, whose enum errors name the allowed values.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ApiServer } from '../../services/api/server.ts';
import { SOURCES } from '../../services/pipeline/job.ts';
import { auth, cleanup, startTestApi, testConfig, uniquePrefix } from './helpers.ts';

const prefix = uniquePrefix('errshape');
let api: ApiServer | undefined;

before(async () => {
  api = await startTestApi(testConfig(prefix, { STACKSANITY_RATE_LIMIT: '1000' }));
});

after(async () => {
  await api?.close();
  await cleanup(prefix);
});

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, extra: { headers?: Record<string, string>; payload?: string } = {}): Promise<{ status: number; body: Record<string, unknown>; type: string }> {
  const r = await api!.app.inject({ method, url, ...extra });
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(r.body) as Record<string, unknown>;
  } catch {
    assert.fail(`${method} ${url}: ${r.statusCode} is not JSON: ${r.body.slice(0, 200)}`);
  }
  return { status: r.statusCode, body, type: String(r.headers['content-type'] ?? '') };
}

function documented(r: { body: Record<string, unknown>; type: string }): void {
  assert.match(r.type, /^application\/json/);
  assert.equal(typeof r.body.error, 'string', JSON.stringify(r.body));
  assert.equal(typeof r.body.message, 'string', JSON.stringify(r.body));
  assert.ok((r.body.message as string).length > 0);
}

test('an unknown route, or a known path under another method, is a 404 in the documented shape', async () => {
  for (const [method, url] of [['GET', '/v1/nope'], ['GET', '/v2/samples?x=1'], ['DELETE', '/v1/samples'], ['POST', '/v1/summary']] as const) {
    const r = await call(method, url, method === 'POST' ? { headers: { 'content-type': 'application/json' }, payload: '{}' } : {});
    assert.equal(r.status, 404, `${method} ${url}`);
    documented(r);
    assert.equal(r.body.error, 'not_found');
    assert.ok((r.body.message as string).includes(url.split('?')[0]!), `the message names the path: ${r.body.message}`);
  }
});

test('a value outside an enum: 400 in the documented shape, naming the parameter and every allowed value', async () => {
  const r = await call('POST', '/v1/samples?source=carrier-pigeon', { headers: { ...auth(), 'content-type': 'text/plain' }, payload: 'x' });
  assert.equal(r.status, 400);
  documented(r);
  assert.match(r.body.message as string, /source/);
  for (const s of SOURCES) assert.ok((r.body.message as string).includes(s), `lists '${s}': ${r.body.message}`);
  const f = await call('GET', '/v1/findings?sort=loudest');
  assert.equal(f.status, 400);
  documented(f);
  assert.match(f.body.message as string, /sort.*count.*last_seen/);
});

test('other schema failures (a missing property, a wrong type) are 400 in the documented shape', async () => {
  const r = await call('GET', '/v1/traces?limit=banana');
  assert.equal(r.status, 400);
  documented(r);
  assert.match(r.body.message as string, /limit/);
});
