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
import { DEBIAN_PACKAGE, ensureRedis, ping, redact, type RedisHandle } from '../pipeline/redis-server.ts';
import { startApi, type ApiServer } from '../api/server.ts';
import { TokenSet, randomToken } from '../api/tokens.ts';
import type { Io } from './check.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The build id examples/demo.dump names (examples/make-demo.ts). */
const EXAMPLE_BUILD = 'demo-encoded-fp';
const EXIT_USAGE = 2;
/** Could not start (port taken, Redis unreachable): the environment, not the command line. */
const EXIT_START = 1;
/** From the first signal to everything stopped; what is still running then is killed (SIGKILL). */
const SHUTDOWN_MS = 8_000;
/** How long a start waits for a named Redis (REDIS_URL) to answer before giving up. */
const REDIS_WAIT_MS = 5_000;

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
  // From here on every way out (a start-up failure, a signal at any point) stops whatever was
  // started: children, the API, a private redis-server. Nothing may keep the process up after the
  // error is printed, and a second Ctrl-C kills what is left at once.
  const children = new Set<ChildProcess>();
  let redisHandle: RedisHandle | undefined;
  let api: ApiServer | undefined;
  let stopping = false;
  let signalled: string | undefined;
  let stopped: Promise<void> | undefined;
  let resolveDone: (code: number) => void = () => undefined;
  const done = new Promise<number>((r) => { resolveDone = r; });
  const exited = (c: ChildProcess, ms: number): Promise<void> => new Promise((r) => {
    if (c.exitCode !== null || c.signalCode !== null) return r();
    const t = setTimeout(r, ms).unref();
    c.once('exit', () => { clearTimeout(t); r(); });
  });
  const stopAll = (): Promise<void> => (stopped ??= (async () => {
    stopping = true;
    const deadline = Date.now() + SHUTDOWN_MS;
    const left = (): number => Math.max(0, deadline - Date.now());
    // The feeder first (no new uploads), then the API (in-flight 202s finish), then the workers
    // (active batches finish; queued ones stay in Redis), then a private Redis, last.
    const feeder = [...children].filter((c) => (c as ChildProcess & { role?: string }).role === 'feeder');
    for (const c of feeder) c.kill('SIGTERM');
    await Promise.all(feeder.map((c) => exited(c, Math.min(2000, left()))));
    if (api) await Promise.race([api.close().catch(() => undefined), new Promise((r) => setTimeout(r, Math.min(3000, left())).unref())]);
    const rest = [...children];
    for (const c of rest) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(rest.map((c) => exited(c, Math.max(0, left() - 1500))));
    // Whatever has not finished by now is killed: the budget is what a service manager allows.
    for (const c of rest) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(rest.map((c) => exited(c, 1000)));
    if (redisHandle?.stop) await redisHandle.stop();
  })());
  const onSignal = (sig: string): void => {
    if (signalled !== undefined) {
      // A second Ctrl-C: no more waiting.
      io.err(`\nstacksanity: ${sig} again: killing what is left\n`);
      for (const c of children) c.kill('SIGKILL');
      redisHandle?.stop?.().catch(() => undefined);
      process.exit(130);
    }
    signalled = sig;
    io.err(`\nstacksanity: ${sig}: draining (active batches finish; queued ones stay in Redis)...\n`);
    // During start-up the step under way finishes first (each is bounded), then start-up stops.
    if (running) void finish();
  };
  const finish = async (): Promise<number> => {
    await stopAll();
    io.err('stacksanity: stopped\n');
    resolveDone(0);
    return done;
  };
  let running = false;
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const detach = (): void => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  };
  void done.then(detach);
  // A start-up step that failed: say why and what to do, stop what was started, exit non-zero.
  const fail = async (message: string): Promise<number> => {
    io.err(`stacksanity serve: ${message}\n`);
    await stopAll();
    detach();
    return EXIT_START;
  };
  try {
    redisHandle = await ensureRedis(env, join(ROOT, '.data', 'redis'));
  } catch (e) {
    return fail((e as Error).message);
  }
  if (signalled !== undefined) return finish();
  const redisUrl = redisHandle.url;
  cfg.redisUrl = redisUrl;
  const reachable = await waitForRedis(redisUrl, REDIS_WAIT_MS, () => signalled !== undefined);
  if (signalled !== undefined) return finish();
  if (!reachable) {
    return fail(`Redis at ${redact(redisUrl)} does not answer (waited ${REDIS_WAIT_MS / 1000} s).
  Start that Redis, or point REDIS_URL at one that runs (REDIS_URL=redis://host:6379 npm start),
  or unset REDIS_URL: serve then uses Redis on 127.0.0.1:6379, else starts its own redis-server
  (Debian/Ubuntu: sudo apt-get install ${DEBIAN_PACKAGE}).`);
  }

  // A fresh clone has no tokens: make one for this run and show it once on the terminal (never in
  // logs).
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
  // The built-in feeder has a token of its own (unless STACKSANITY_FEEDER_TOKEN names one), so it
  // has its own rate-limit bucket too: a burst of the user's uploads must not stall it.
  let feederToken = env.STACKSANITY_FEEDER_TOKEN;
  if (feederToken === undefined && !opts['no-feeder']) {
    feederToken = randomToken();
    tokens.add('emulated-host', feederToken);
  }

  const childEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...env, REDIS_URL: redisUrl, ...extra };
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
  const start = (file: string, extra: Record<string, string>, name: string): ChildProcess | undefined => {
    if (stopping) return undefined;
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

  try {
    api = await startApi(cfg, tokens, { logLevel: env.LOG_LEVEL ?? 'warn', adminTokens });
  } catch (e) {
    return fail(listenFailure(e as NodeJS.ErrnoException, cfg, redisUrl));
  }
  if (signalled !== undefined) return finish();
  const base = `http://${cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host}:${new URL(api.url).port}`;
  const apiPort = Number(new URL(api.url).port);
  for (let i = 0; i < cfg.workers; i++) {
    start('workers/checker.ts', { METRICS_PORT: cfg.port === 0 ? '0' : String(apiPort + 1 + i), HOST: cfg.host }, `worker ${i + 1}`);
  }
  if (!opts['no-feeder'] && feederToken !== undefined) {
    const f = start('workers/emulated-host.ts', { STACKSANITY_API_URL: base, STACKSANITY_FEEDER_TOKEN: feederToken }, 'emulated host');
    if (f) (f as ChildProcess & { role?: string }).role = 'feeder';
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
  running = true;
  if (signalled !== undefined) return finish();
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
  const api = await startApi(cfg, tokens).catch((e: NodeJS.ErrnoException) => {
    io.err(`stacksanity api: ${listenFailure(e, cfg, cfg.redisUrl ?? 'redis://127.0.0.1:6379')}\n`);
    return undefined;
  });
  if (!api) return EXIT_START;
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

/** Pings until Redis answers (true), `ms` pass or `abort()` says stop (false). */
async function waitForRedis(url: string, ms: number, abort: () => boolean): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await ping(url, 1000)) return true;
    if (abort() || Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Why the API could not start, and what to do about it. */
function listenFailure(err: NodeJS.ErrnoException, cfg: ServiceConfig, redisUrl: string): string {
  if (err.code === 'EADDRINUSE') {
    return `port ${cfg.port} on ${cfg.host} is already in use: another stacksanity (or another program) listens there.
  Stop it (is \`npm start\` running in another terminal?), or choose another port: PORT=${cfg.port + 10} npm start`;
  }
  if (err.code === 'EACCES') return `may not listen on port ${cfg.port} on ${cfg.host} (ports below 1024 need privileges): choose another, e.g. PORT=3000`;
  if (err.code === 'EADDRNOTAVAIL') return `HOST=${cfg.host} is not an address of this machine: use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)`;
  if (/Redis not ready/.test(err.message)) {
    return `${err.message}: Redis at ${redact(redisUrl)} does not answer; start it, or set REDIS_URL to one that runs (install: sudo apt-get install ${DEBIAN_PACKAGE})`;
  }
  return `cannot start the API: ${err.message} (Redis at ${redact(redisUrl)})`;
}
