// Shared by the service tests: a unique hash-tagged key prefix per run on the real Redis at
// 127.0.0.1:6379 (deleted afterwards), configs, the shipped example as input, polling helpers.
import { randomBytes } from 'node:crypto';
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import assert from 'node:assert/strict';
import { startApi, type ApiServer } from '../../services/api/server.ts';
import { TokenSet } from '../../services/api/tokens.ts';
import { loadConfig, type ServiceConfig } from '../../services/pipeline/config.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED_REDIS = 'redis://127.0.0.1:6379';
export const DEMO_BUILD = 'demo-encoded-fp';
export const DEMO_KALLSYMS = readFileSync(join(ROOT, 'examples', 'demo.kallsyms'));
export const DEMO_DUMP = readFileSync(join(ROOT, 'examples', 'demo.dump'));
/** examples/demo.dump holds 12 samples; its kernel supports section and encoded_fp, plus the fp baseline. */
export const DEMO_SAMPLES = 12;
export const DEMO_STRATEGIES = 3;
export const TOKEN = 'test-token-0123456789abcdef';
export const TOKEN_HOST = 'test-host';

export function uniquePrefix(tag: string): string {
  return `{ss-test-${tag}-${randomBytes(6).toString('hex')}}`;
}

export function testConfig(prefix: string, extra: Record<string, string> = {}): ServiceConfig {
  return loadConfig({ STACKSANITY_PREFIX: prefix, REDIS_URL: SHARED_REDIS, PORT: '0', STACKSANITY_WORKERS: '1', ...extra });
}

/** Deletes every key of the prefix (SCAN, never KEYS: the shared Redis may be busy). */
export async function cleanup(prefix: string, url = SHARED_REDIS): Promise<void> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

export async function waitFor<T>(what: string, f: () => Promise<T | undefined | false>, ms = 20_000, every = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

export function auth(token = TOKEN): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** The demo dump with its hosts renamed, so that each variant is a different upload. */
export function demoVariant(tag: string): Buffer {
  return Buffer.from(DEMO_DUMP.toString('utf8').replace(/\.host demo-host/g, `.host ${tag}`));
}

/** Sums the values of /metrics lines starting with `prefix`. */
export function metricSum(text: string, prefix: string): number {
  let n = 0;
  for (const l of text.split('\n')) if (l.startsWith(prefix)) n += Number(l.slice(l.lastIndexOf(' ') + 1));
  return n;
}

/** The tests' tokens: TOKEN, for uploader TOKEN_HOST. */
export function testTokens(): TokenSet {
  const t = new TokenSet();
  t.add(TOKEN_HOST, TOKEN);
  return t;
}

/** The API in this process, answering app.inject() only, with the tests' tokens. */
export function startTestApi(cfg: ServiceConfig, opts: Parameters<typeof startApi>[2] = {}): Promise<ApiServer> {
  return startApi(cfg, testTokens(), { listen: false, ...opts });
}

/** Uploads the example kernel's symbols (examples/demo.kallsyms) and asserts they were taken. */
export async function putDemoSymbols(api: ApiServer): Promise<void> {
  const r = await api.app.inject({ method: 'POST', url: `/v1/kernels/${DEMO_BUILD}/symbols`, headers: { ...auth(), 'content-type': 'text/plain' }, payload: DEMO_KALLSYMS });
  assert.equal(r.statusCode, 201, r.body);
}

/**
 * A checker worker as its own process (workers/checker.ts) on the shared Redis under `prefix`,
 * resolved once it reports ready; `env` adds the test's settings and hooks.
 */
export function forkCheckerWorker(prefix: string, env: NodeJS.ProcessEnv = {}, stderr: 'inherit' | 'ignore' = 'inherit'): Promise<ChildProcess> {
  const child = fork(join(ROOT, 'workers', 'checker.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env, STACKSANITY_PREFIX: prefix, REDIS_URL: SHARED_REDIS, METRICS_PORT: '' },
    stdio: ['ignore', 'ignore', stderr, 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code, sig) => reject(new Error(`worker exited early (${code ?? sig})`)));
  });
}

/** SIGKILL a child and wait until it is gone. */
export async function sigkill(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}
