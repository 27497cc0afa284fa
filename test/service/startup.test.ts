// `stacksanity serve` (what `npm start` runs) when it cannot start, and when it is told to stop.
// Real processes on 127.0.0.1: a start that fails must say why and what to do, exit non-zero, and
// leave no process behind; a SIGTERM (Kubernetes, systemd) must stop every process it started.
// Every descendant is tracked from /proc while the command runs, so a worker that was forked and
// orphaned (re-parented to init) is still seen.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { freePort } from '../../services/pipeline/redis-server.ts';
import { ROOT, SHARED_REDIS, cleanup, uniquePrefix, waitFor } from './helpers.ts';

const prefix = uniquePrefix('startup');
after(() => cleanup(prefix));

/** Generous: a hang (the bug) never ends; a loaded 2-core machine takes seconds to load tsx. */
const HANG_MS = 60_000;

function parentOf(pid: number): number | undefined {
  try {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Every process started under `root` (children, theirs...), collected until stop() is called. */
function trackDescendants(root: number): { pids: Set<number>; stop: () => void } {
  const pids = new Set<number>();
  const scan = (): void => {
    const known = new Set([root, ...pids]);
    for (const d of readdirSync('/proc')) {
      const pid = Number(d);
      if (!Number.isInteger(pid) || pid <= 0 || known.has(pid)) continue;
      const pp = parentOf(pid);
      if (pp !== undefined && known.has(pp)) pids.add(pid);
    }
  };
  const timer = setInterval(scan, 50);
  scan();
  return { pids, stop: () => clearInterval(timer) };
}

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  tracked: ReturnType<typeof trackDescendants>;
}

function serve(env: NodeJS.ProcessEnv, args: string[] = [], command: string[] = [process.execPath, join(ROOT, 'bin', 'stacksanity.js'), 'serve']): Run {
  const e: NodeJS.ProcessEnv = { ...process.env, HOST: '127.0.0.1', STACKSANITY_PREFIX: prefix, STACKSANITY_WORKERS: '2', STACKSANITY_FEED_RATE: '100', LOG_LEVEL: 'warn', ...env };
  delete e.STACKSANITY_TOKENS;
  delete e.STACKSANITY_TOKENS_FILE;
  const started = Date.now();
  const child = spawn(command[0]!, [...command.slice(1), ...args], { cwd: ROOT, env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const tracked = trackDescendants(child.pid!);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((r) => child.once('exit', (code, signal) => r({ code, signal, ms: Date.now() - started })));
  return { child, out: () => out, err: () => err, exit, tracked };
}

async function exitOf(run: Run, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([run.exit, new Promise<'hung'>((res) => { timer = setTimeout(() => res('hung'), ms); })]);
  clearTimeout(timer);
  if (r === 'hung') {
    const left = [...run.tracked.pids].filter(alive);
    run.child.kill('SIGKILL');
    for (const pid of left) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    assert.fail(`serve still running after ${ms} ms\nstdout:\n${run.out()}\nstderr:\n${run.err()}`);
  }
  return r;
}

/** Every process the run started is gone (a moment allowed for the kernel to reap each). */
async function nothingLeft(run: Run): Promise<void> {
  run.tracked.stop();
  for (const pid of run.tracked.pids) {
    await waitFor(`process ${pid} to be gone`, async () => !alive(pid), 5_000, 50).catch(() => undefined);
    let cmd = '';
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { /* gone */ }
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    assert.equal(cmd === '' ? false : true, false, `process ${pid} (${cmd}) is still running after serve exited`);
  }
}

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

test('serve: the port already taken → exit ≠ 0 naming the port and what to do; nothing left running', async () => {
  const port = await freePort();
  const squatter = await listen(port);
  try {
    const run = serve({ PORT: String(port), REDIS_URL: SHARED_REDIS });
    const r = await exitOf(run, HANG_MS);
    console.log(`# exited ${r.code} after ${r.ms} ms`);
    assert.notEqual(r.code, 0, 'a start that failed exits non-zero');
    assert.match(run.err(), new RegExp(`port ${port}.*in use`), run.err());
    assert.match(run.err(), /PORT=\d+/, 'says how to choose another port');
    assert.doesNotMatch(run.out(), /is running/, 'no banner for a service that is not running');
    await nothingLeft(run);
  } finally {
    squatter.close();
  }
});

test('serve: Redis unreachable (REDIS_URL on a closed port) → exit ≠ 0 saying how to point at Redis; nothing left running', async () => {
  const closed = await freePort();
  const run = serve({ PORT: '0', REDIS_URL: `redis://127.0.0.1:${closed}` });
  const r = await exitOf(run, HANG_MS);
  console.log(`# exited ${r.code} after ${r.ms} ms`);
  assert.notEqual(r.code, 0);
  assert.match(run.err(), new RegExp(`127\\.0\\.0\\.1:${closed}.*does not answer`), run.err());
  assert.match(run.err(), /REDIS_URL=/, 'says how to point at another Redis');
  assert.match(run.err(), /apt-get install redis-server/, 'says how to get one');
  await nothingLeft(run);
});

test('serve: SIGTERM to a running service stops the API, the workers and the feeder, and it exits 0', async () => {
  const port = await freePort();
  const run = serve({ PORT: String(port), REDIS_URL: SHARED_REDIS });
  try {
    await waitFor('the startup banner', async () => run.out().includes('Ctrl-C'), HANG_MS, 100);
    // The two workers and the feeder are up (each a node process running a workers/ file).
    await waitFor('two workers and the feeder', async () => {
      const roles = [...run.tracked.pids].filter(alive).map((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } });
      return roles.filter((c) => c.includes('workers/checker.ts')).length === 2 && roles.some((c) => c.includes('workers/emulated-host.ts'));
    }, HANG_MS, 100);
    const sent = Date.now();
    run.child.kill('SIGTERM');
    const r = await exitOf(run, HANG_MS);
    console.log(`# exited ${r.code ?? r.signal} ${Date.now() - sent} ms after SIGTERM`);
    assert.equal(r.code, 0, run.err());
    assert.match(run.err(), /stopped/);
    await nothingLeft(run);
  } finally {
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
  }
});

function hasNpm(): boolean {
  const r = spawnSync('npm', ['--version'], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

test('npm start: a SIGTERM to npm reaches serve (the script execs node), and nothing is left running', async (t) => {
  if (!hasNpm()) return t.skip('npm is not on PATH');
  const port = await freePort();
  // A worker and no feeder: what matters is the chain npm → sh → node → children.
  const run = serve({ PORT: String(port), REDIS_URL: SHARED_REDIS, STACKSANITY_WORKERS: '1' }, [], ['npm', 'start', '--silent', '--', '--no-feeder']);
  try {
    await waitFor('the startup banner', async () => run.out().includes('Ctrl-C'), HANG_MS, 100);
    await waitFor('the worker', async () => [...run.tracked.pids].filter(alive).some((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('workers/checker.ts'); } catch { return false; } }), HANG_MS, 100);
    run.child.kill('SIGTERM');
    await exitOf(run, HANG_MS);
    assert.match(run.err(), /SIGTERM: draining[\s\S]*stopped/, run.err());
    await nothingLeft(run);
  } finally {
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
  }
});
