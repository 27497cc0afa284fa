// `stacksanity serve` as `npm start` runs it on a fresh clone (no tokens configured): it prints a
// generated token, the feeder makes traces appear within seconds, uploads with the printed token
// are accepted, and SIGINT drains and stops every child — nothing left running, nothing that got a
// 202 lost (each batch is either committed or still queued in Redis for the next start).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { freePort } from '../../services/pipeline/redis-server.ts';
import { CheckerWorker } from '../../services/pipeline/queue.ts';
import { Keys } from '../../services/pipeline/keys.ts';
import { DEMO_BUILD, DEMO_KALLSYMS, ROOT, SHARED_REDIS, cleanup, demoVariant, testConfig, uniquePrefix, waitFor } from './helpers.ts';

const prefix = uniquePrefix('serve');
after(() => cleanup(prefix));

function hasCurl(): boolean {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('serve: one command up, traces within seconds, Ctrl-C stops everything and loses nothing accepted', async () => {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), HOST: '127.0.0.1', REDIS_URL: SHARED_REDIS, STACKSANITY_PREFIX: prefix, STACKSANITY_WORKERS: '2', STACKSANITY_FEED_RATE: '300', LOG_LEVEL: 'warn' };
  delete env.STACKSANITY_TOKENS;
  delete env.STACKSANITY_TOKENS_FILE;
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'stacksanity.js'), 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitFor('the startup banner', async () => out.includes('Ctrl-C'), 30_000);
    const token = /\n\s+(ss_[A-Za-z0-9_-]+)\n/.exec(out)?.[1];
    assert.ok(token, `a generated token is printed:\n${out}`);
    const curls = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('curl '));
    assert.ok(curls.length >= 1 && curls.every((l) => l.includes(`Bearer ${token}`)), `curl lines with the token:\n${out}`);
    const base = `http://127.0.0.1:${port}`;
    const summary = async (): Promise<Record<string, number>> => (await (await fetch(`${base}/v1/summary`)).json()) as Record<string, number>;
    await waitFor('the feeder\'s samples to be checked', async () => ((await summary()).samples ?? 0) > 0, 30_000, 250);
    const page = await (await fetch(`${base}/`)).text();
    assert.match(page, /href="\/traces\//, 'the web page lists failing traces');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /stacksanity_unwinds_total\{/, 'the API carries the workers\' series');

    // The printed lines, run as printed from where serve was started: a newcomer's first upload.
    if (hasCurl()) {
      const runs = curls.map((l) => {
        const lines = execFileSync('sh', ['-c', `${l} -s -w '\\n%{http_code}'`], { cwd: ROOT }).toString().trimEnd().split('\n');
        return { code: lines.pop(), body: lines.join('\n') };
      });
      assert.ok(runs.every((r) => r.code === '201' || r.code === '202'), `every printed curl line succeeds:\n${JSON.stringify(runs, null, 1)}`);
      const answers = runs.map((r) => JSON.parse(r.body) as { job?: string; rejected?: number });
      const upload = answers[answers.length - 1]!;
      assert.ok(upload.job && upload.rejected === 0, `the example dump is accepted whole: ${JSON.stringify(upload)}`);
    } else {
      console.log('# curl is not installed: the printed curl lines were not run');
    }

    const headers = { authorization: `Bearer ${token}` };
    const k = await fetch(`${base}/v1/kernels/${DEMO_BUILD}/symbols`, { method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: DEMO_KALLSYMS });
    assert.equal(k.status, 201);
    const jobs: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await fetch(`${base}/v1/samples`, { method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: demoVariant(`serve-${i}`) });
      assert.equal(r.status, 202);
      jobs.push(((await r.json()) as { job: string }).job);
    }
    const kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(child.pid)]).toString().split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
    const roles = kids.map((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } }).filter((c) => c.includes('workers/'));
    assert.equal(roles.length, 3, 'two workers and the feeder');
    child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise((r) => { timer = setTimeout(() => r('timeout'), 40_000); })]);
    clearTimeout(timer);
    assert.equal(code, 0, `serve exits cleanly\n${err}`);
    // A child may take a moment to be reaped after serve's exit (tsx's esbuild helper exits when
    // its pipe closes): give each a few seconds, then it must be gone.
    for (const pid of kids) {
      await waitFor(`child ${pid} to be gone`, async () => !alive(pid), 5_000, 50).catch(() => undefined);
      assert.equal(alive(pid), false, `child ${pid} is gone`);
    }
    assert.equal(out.split(token!).length - 1, 1 + curls.length, 'the token is printed once, in its curl lines, and nowhere else');
    assert.ok(!err.includes(token!), 'the token never reaches the logs');

    // Every accepted batch is committed or still queued; a worker started afterwards finishes them.
    const redis = new Redis(SHARED_REDIS);
    const keys = new Keys(prefix);
    const cfg = testConfig(prefix);
    const w = new CheckerWorker(cfg);
    await w.start();
    try {
      for (const id of jobs) {
        await waitFor(`batch ${id} committed`, async () => (await redis.exists(keys.done(id))) === 1, 20_000);
      }
    } finally {
      await w.close();
      redis.disconnect();
    }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
