// `stacksanity serve` (the `npm start` target): Redis (found or started), the API in this process,
// checker workers as child processes (one per core by default) and the emulated host feeding it.
// Ctrl-C (SIGINT) or SIGTERM: the feeder stops, the API stops taking uploads, the workers finish
// their active batches, a private redis-server is shut down; every child is waited for.
// `stacksanity api` and `stacksanity worker` run one role each (a fleet's Deployments).
import { fork, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';
import { loadConfig, type ServiceConfig } from '../pipeline/config.ts';
import { ensureRedis, redact, type RedisHandle } from '../pipeline/redis-server.ts';
import { startApi, type ApiServer } from '../api/server.ts';
import { TokenSet, randomToken } from '../api/tokens.ts';
import type { Io } from './check.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The build id examples/demo.dump names (examples/make-demo.ts). */
const EXAMPLE_BUILD = 'demo-encoded-fp';
const EXIT_USAGE = 2;

export async function serve(args: string[], io: Io): Promise<number> {
  let opts;
  try {
    opts = parseArgs({ args, options: { 'no-feeder': { type: 'boolean', default: false }, workers: { type: 'string' } } }).values;
  } catch (e) {
    io.err(`stacksanity serve: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  const env = { ...process.env };
  if (opts.workers !== undefined) env.STACKSANITY_WORKERS = opts.workers;
  let cfg: ServiceConfig;
  let tokens: TokenSet;
  try {
    cfg = { ...loadConfig(env), combinedMetrics: env.STACKSANITY_COMBINED_METRICS !== '0' };
    tokens = TokenSet.fromEnv(env);
  } catch (e) {
    io.err(`stacksanity serve: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  let redisHandle: RedisHandle;
  try {
    redisHandle = await ensureRedis(env, join(ROOT, '.data', 'redis'));
  } catch (e) {
    io.err(`stacksanity serve: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  cfg.redisUrl = redisHandle.url;

  // A fresh clone has no tokens: make one for this run, show it once on the terminal (never in
  // logs) and hand it to the built-in feeder.
  let devToken: string | undefined;
  if (tokens.size === 0) {
    devToken = randomToken();
    tokens.add('dev', devToken);
  }
  // Likewise for the admin scope (marking findings known), a token apart from the upload one.
  const adminTokens = TokenSet.adminFromEnv();
  let devAdminToken: string | undefined;
  if (adminTokens.size === 0) {
    devAdminToken = randomToken();
    adminTokens.add('dev-admin', devAdminToken);
  }

  const children = new Set<ChildProcess>();
  let api: ApiServer | undefined;
  let stopping = false;
  const childEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...env, REDIS_URL: redisHandle.url, ...extra };
    // Workers need no tokens: keep them out of the children's environment.
    delete e.STACKSANITY_TOKENS;
    delete e.STACKSANITY_TOKENS_FILE;
    delete e.STACKSANITY_ADMIN_TOKENS;
    delete e.STACKSANITY_ADMIN_TOKENS_FILE;
    return e;
  };
  const childArgs = (process.env.STACKSANITY_CHILD_NODE_ARGS ?? '').split(' ').filter(Boolean);
  // Workers allocate fast and keep little: a 4 MB semi-space (V8's default is 16) keeps their RSS
  // under 200 MB at full load for a few % more scavenges (bench/RESULTS.md, bench:e2e).
  const workerArgs = childArgs.some((a) => a.startsWith('--max-semi-space-size')) ? childArgs : ['--max-semi-space-size=4', ...childArgs];
  const start = (file: string, extra: Record<string, string>, name: string): ChildProcess => {
    const args = file === 'workers/checker.ts' ? workerArgs : childArgs;
    const c = fork(join(ROOT, file), [], { execArgv: ['--import', 'tsx', ...args], env: childEnv(extra), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(c);
    c.on('exit', (code, signal) => {
      children.delete(c);
      if (!stopping) {
        io.err(`stacksanity: ${name} exited (${signal ?? code}); restarting in 1 s\n`);
        setTimeout(() => { if (!stopping) start(file, extra, name); }, 1000).unref();
      }
    });
    return c;
  };

  const done = new Promise<number>((resolve) => {
    const shutdown = async (sig: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      io.err(`\nstacksanity: ${sig}: draining (active batches finish; queued ones stay in Redis)...\n`);
      const exited = (c: ChildProcess): Promise<void> => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));
      const feeder = [...children].filter((c) => (c as ChildProcess & { role?: string }).role === 'feeder');
      for (const c of feeder) c.kill('SIGTERM');
      await Promise.all(feeder.map(exited));
      if (api) await api.close().catch(() => undefined);
      const rest = [...children];
      for (const c of rest) c.kill('SIGTERM');
      const killTimer = setTimeout(() => { for (const c of rest) c.kill('SIGKILL'); }, 20_000);
      await Promise.all(rest.map(exited));
      clearTimeout(killTimer);
      if (redisHandle.stop) await redisHandle.stop();
      io.err('stacksanity: stopped\n');
      resolve(0);
    };
    process.once('SIGINT', () => void shutdown('SIGINT'));
    process.once('SIGTERM', () => void shutdown('SIGTERM'));
  });

  try {
    api = await startApi(cfg, tokens, { logLevel: env.LOG_LEVEL ?? 'warn', adminTokens });
  } catch (e) {
    io.err(`stacksanity serve: cannot start the API: ${(e as Error).message}\n`);
    if (redisHandle.stop) await redisHandle.stop();
    return EXIT_USAGE;
  }
  const base = `http://${cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host}:${new URL(api.url).port}`;
  const apiPort = Number(new URL(api.url).port);
  for (let i = 0; i < cfg.workers; i++) {
    start('workers/checker.ts', { METRICS_PORT: cfg.port === 0 ? '0' : String(apiPort + 1 + i), HOST: cfg.host }, `worker ${i + 1}`);
  }
  if (!opts['no-feeder']) {
    // With operator tokens and none named for the feeder, it gets a token of its own for this run
    // (name 'emulated-host'), shown nowhere.
    let feederToken = devToken ?? env.STACKSANITY_FEEDER_TOKEN;
    if (feederToken === undefined) {
      feederToken = randomToken();
      tokens.add('emulated-host', feederToken);
    }
    const f = start('workers/emulated-host.ts', { STACKSANITY_API_URL: base, STACKSANITY_FEEDER_TOKEN: feederToken }, 'emulated host');
    (f as ChildProcess & { role?: string }).role = 'feeder';
  }
  io.out(`stacksanity is running
  web page      ${base}/
  API docs      ${base}/docs
  metrics       ${base}/metrics   (API and all workers; each worker also on ${cfg.port === 0 ? 'its own port' : `:${apiPort + 1}..:${apiPort + cfg.workers}`}/metrics)
  Redis         ${redisHandle.how}
  workers       ${cfg.workers} processes x concurrency ${cfg.concurrency}
  feeder        ${opts['no-feeder'] ? 'off (--no-feeder)' : 'emulated host, on'}
`);
  if (devToken) {
    // The example's kernel is not one the feeder registers: its symbols go first, or every sample
    // of the dump is refused as an unknown build id. Paths as seen from where serve was started.
    const example = (f: string): string => relative(process.cwd(), join(ROOT, 'examples', f)) || f;
    const curl = `curl -H 'Authorization: Bearer ${devToken}' -H 'Content-Type: text/plain' --data-binary`;
    io.out(`
  upload token (generated for this run; set STACKSANITY_TOKENS or STACKSANITY_TOKENS_FILE to choose your own):
    ${devToken}
  try (the example kernel's symbols, then samples taken on it):
    ${curl} @${example('demo.kallsyms')} '${base}/v1/kernels/${EXAMPLE_BUILD}/symbols'
    ${curl} @${example('demo.dump')} '${base}/v1/samples'
`);
  }
  if (devAdminToken) {
    io.out(`
  admin token (marks findings known; generated for this run, set STACKSANITY_ADMIN_TOKENS to choose your own):
    ${devAdminToken}
  findings:     curl '${base}/v1/findings'
  mark known:   curl -X PUT -H 'Authorization: Bearer ${devAdminToken}' -H 'Content-Type: application/json' -d '{"state":"known","note":"why"}' '${base}/v1/findings/<id>'
`);
  }
  io.out('Ctrl-C stops everything.\n');
  return done;
}

/** `stacksanity api`: the API alone (a fleet runs several). */
export async function apiCommand(_args: string[], io: Io): Promise<number> {
  let cfg: ServiceConfig;
  let tokens: TokenSet;
  try {
    cfg = loadConfig();
    tokens = TokenSet.fromEnv();
  } catch (e) {
    io.err(`stacksanity api: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  if (tokens.size === 0) io.err('stacksanity api: no upload tokens configured (STACKSANITY_TOKENS or STACKSANITY_TOKENS_FILE): every upload will get 401\n');
  const api = await startApi(cfg, tokens).catch((e: Error) => {
    io.err(`stacksanity api: ${e.message} (Redis at ${redact(cfg.redisUrl ?? 'redis://127.0.0.1:6379')})\n`);
    return undefined;
  });
  if (!api) return EXIT_USAGE;
  io.out(`stacksanity api listening on ${api.url}\n`);
  return new Promise((resolve) => {
    const stop = (): void => { void api.close().then(() => resolve(0)); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** `stacksanity worker`: one checker worker process. */
export async function workerCommand(_args: string[], io: Io): Promise<number> {
  try {
    loadConfig();
  } catch (e) {
    io.err(`stacksanity worker: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  await import('../../workers/checker.ts');
  return new Promise(() => undefined);
}
