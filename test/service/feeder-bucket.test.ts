// `npm start`'s built-in feeder uploads with a token of its own, so it has a rate-limit bucket of
// its own: while the user's printed token is refused with 429 (its bucket spent by a burst), the
// feeder's batches keep being accepted. With one shared token the feeder stalled until the user's
// window reset (issue 15).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../../services/pipeline/redis-server.ts';
import { ROOT, SHARED_REDIS, cleanup, metricSum, uniquePrefix, waitFor } from './helpers.ts';

const prefix = uniquePrefix('feeder');
after(() => cleanup(prefix));

test('serve: a burst that spends the user\'s rate-limit bucket does not stall the built-in feeder', async () => {
  const port = await freePort();
  // 40 requests a minute per token; the feeder sends about 18 (3 samples/s in batches of 10) plus
  // its kernels, so only the user's burst runs out.
  const env: NodeJS.ProcessEnv = {
    ...process.env, PORT: String(port), HOST: '127.0.0.1', REDIS_URL: SHARED_REDIS, STACKSANITY_PREFIX: prefix,
    STACKSANITY_WORKERS: '1', STACKSANITY_RATE_LIMIT: '40', STACKSANITY_FEED_RATE: '3', STACKSANITY_FEED_BATCH: '10', LOG_LEVEL: 'warn',
  };
  delete env.STACKSANITY_TOKENS;
  delete env.STACKSANITY_TOKENS_FILE;
  delete env.STACKSANITY_FEEDER_TOKEN;
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'stacksanity.js'), 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await waitFor('the startup banner', async () => out.includes('Ctrl-C'), 60_000);
    const token = /\n\s+(ss_[A-Za-z0-9_-]+)\n/.exec(out)?.[1];
    assert.ok(token, out);
    const base = `http://127.0.0.1:${port}`;
    const fed = async (): Promise<number> => metricSum(await (await fetch(`${base}/metrics`)).text(), 'stacksanity_samples_received_total{source="emulator"}');
    await waitFor('the feeder\'s first accepted batch', async () => (await fed()) > 0, 60_000, 250);

    // The user's burst: requests until the bucket is spent (an empty body is refused with 400,
    // but still counts against the limit).
    const userPost = (): Promise<Response> => fetch(`${base}/v1/samples`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: '' });
    let limited = false;
    for (let i = 0; i < 100 && !limited; i++) limited = (await userPost()).status === 429;
    assert.ok(limited, 'the user\'s burst reaches the rate limit');
    const before = await fed();
    await waitFor('a feeder batch accepted after the user\'s bucket ran out', async () => (await fed()) > before, 50_000, 250);
    // ...while the user's bucket is still empty: the feeder did not wait for it to refill.
    assert.equal((await userPost()).status, 429, 'the user\'s token is still rate limited');
  } finally {
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 30_000); })]);
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (err.includes('restarting')) console.log(`# serve stderr:\n${err}`);
  }
});
