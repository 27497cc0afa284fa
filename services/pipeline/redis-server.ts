// Finding Redis for the one-command start: REDIS_URL, else 127.0.0.1:6379 when it answers, else a
// private redis-server from PATH with its data under .data/redis (AOF on, noeviction: BullMQ's
// requirements). Tests use startPrivateRedis for a server they may stop.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

export const DEBIAN_PACKAGE = 'redis-server';

export interface RedisHandle {
  url: string;
  /** How it was found, for the startup banner. */
  how: string;
  /** Present when we started the server: stops it (data stays under its directory). */
  stop?: () => Promise<void>;
}

export async function ping(url: string, ms = 1000): Promise<boolean> {
  const r = new Redis(url, { lazyConnect: true, connectTimeout: ms, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return (await r.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export function redisServerAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore', env });
  return !r.error && r.status === 0;
}

/**
 * When Redis fsyncs its append-only file. 'always': before it answers a write, so a 202 (sent
 * once the batch's job is in Redis) survives the machine itself crashing — what the API promises.
 * 'everysec': written to the kernel before the answer but fsynced once a second, so a power cut or
 * kernel panic can lose the last second or two of accepted batches (a Redis crash alone cannot).
 * docs/operations-service.md, "Redis", has the measured cost.
 */
export type AppendFsync = 'always' | 'everysec';

export async function startPrivateRedis(dir: string, port?: number, env: NodeJS.ProcessEnv = process.env, appendfsync: AppendFsync = 'always'): Promise<RedisHandle & { stop: () => Promise<void>; port: number; child: ChildProcess }> {
  if (!redisServerAvailable(env)) {
    throw new Error(`no Redis: REDIS_URL is not set, nothing answers on 127.0.0.1:6379, and redis-server is not on PATH. Install the Debian package '${DEBIAN_PACKAGE}' (sudo apt-get install ${DEBIAN_PACKAGE}) or set REDIS_URL.`);
  }
  mkdirSync(dir, { recursive: true });
  const pidfile = join(dir, 'redis.pid');
  await stopStale(pidfile);
  const p = port ?? (await freePort());
  const child = spawn('redis-server', [
    '--bind', '127.0.0.1', '--port', String(p), '--dir', dir, '--appendonly', 'yes', '--appendfsync', appendfsync,
    '--save', '', '--maxmemory-policy', 'noeviction', '--protected-mode', 'yes', '--daemonize', 'no', '--loglevel', 'warning',
    '--pidfile', pidfile,
    // Its own process group: a Ctrl-C in the terminal must not stop Redis before the workers have
    // committed their last batches; whoever started it stops it last.
  ], { stdio: ['ignore', 'ignore', 'inherit'], env, detached: true });
  const url = `redis://127.0.0.1:${p}`;
  const deadline = Date.now() + 10_000;
  while (!(await ping(url, 300))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with status ${child.exitCode} (port ${p} taken?)`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer on ${url} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    // SIGTERM makes redis-server flush the AOF and exit cleanly.
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return { url, how: `private redis-server on ${url} (data in ${dir})`, stop, port: p, child };
}

export async function ensureRedis(env: NodeJS.ProcessEnv, dataDir: string, local = 'redis://127.0.0.1:6379'): Promise<RedisHandle> {
  if (env.REDIS_URL) return { url: env.REDIS_URL, how: `REDIS_URL (${redact(env.REDIS_URL)})` };
  if (await ping(local)) return { url: local, how: `Redis on ${local}` };
  return startPrivateRedis(dataDir, undefined, env);
}

/** A Redis URL without its password, for printing. */
export function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

/** A server left running by a start that was killed (SIGKILL) would hold the same AOF: stop it. */
async function stopStale(pidfile: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidfile, 'utf8').trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0) return;
  let cmd = '';
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return;
  }
  if (!cmd.startsWith('redis-server')) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
