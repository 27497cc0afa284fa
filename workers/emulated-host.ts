// The emulated host agent: uploads its kernels' symbols and profiles, then feeds sample batches to
// the API over HTTP, as a real host agent would. Uses the emulated fleet (services/emulator) when
// it is there, else replays the shipped example (examples/demo.*) with fresh times and hosts.
//
// Env: STACKSANITY_API_URL (default http://127.0.0.1:3000), STACKSANITY_FEEDER_TOKEN (required),
// STACKSANITY_FEED_RATE samples/s (default 200), STACKSANITY_FEED_BATCH (default 100),
// STACKSANITY_FEED_HOSTS (default 4), STACKSANITY_FEED_SEED (default: new each run), STACKSANITY_FEED_FAULTS
// (comma-separated emulator faults, default corrupt_bp,clobber_ret,stale_frames; empty for none),
// STACKSANITY_FEED_FAULT_RATE (default 0.05).
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { randomInt } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { feederSource } from '../services/pipeline/feed.ts';

const api = process.env.STACKSANITY_API_URL ?? 'http://127.0.0.1:3000';
const token = process.env.STACKSANITY_FEEDER_TOKEN;
if (!token) {
  process.stderr.write('emulated host: STACKSANITY_FEEDER_TOKEN is not set\n');
  process.exit(2);
}
const rate = Number(process.env.STACKSANITY_FEED_RATE ?? 200);
const batchSize = Number(process.env.STACKSANITY_FEED_BATCH ?? 100);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// A new seed each run: with a fixed one a restarted feeder re-sent the last run's batches, which
// the service (rightly) took as retries and did not check again. Set it to replay a run.
const seed = process.env.STACKSANITY_FEED_SEED !== undefined ? Number(process.env.STACKSANITY_FEED_SEED) : randomInt(1, 2 ** 31);
const source = await feederSource({
  root,
  hosts: Number(process.env.STACKSANITY_FEED_HOSTS ?? 4),
  seed,
  ...(process.env.STACKSANITY_FEED_FAULTS !== undefined ? { faults: process.env.STACKSANITY_FEED_FAULTS.split(',').filter(Boolean) } : {}),
  ...(process.env.STACKSANITY_FEED_FAULT_RATE !== undefined ? { faultRate: Number(process.env.STACKSANITY_FEED_FAULT_RATE) } : {}),
  warn: (m) => process.stderr.write(`emulated host: ${m}\n`),
});
const auth = { authorization: `Bearer ${token}` };
let stopping = false;
const stop = (): void => { stopping = true; };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);

async function send(url: string, method: string, body: Buffer | string, type: string): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(`${api}${url}`, { method, headers: { ...auth, 'content-type': type }, body });
      // 503/429: the service asks us to come back later; an agent must not drop data on that.
      if ((r.status === 503 || r.status === 429) && !stopping && attempt < 30) {
        await sleep(1000 * Number(r.headers.get('retry-after') ?? 1));
        continue;
      }
      return r;
    } catch (e) {
      if (stopping || attempt >= 30) throw e;
      await sleep(1000);
    }
  }
}

for (const k of source.kernels) {
  const r1 = await send(`/v1/kernels/${k.buildId}/profile`, 'PUT', JSON.stringify(k.profile), 'application/json');
  const r2 = await send(`/v1/kernels/${k.buildId}/symbols`, 'POST', gzipSync(k.kallsyms), 'application/gzip');
  if (!r1.ok || !r2.ok) process.stderr.write(`emulated host: kernel ${k.buildId}: ${r1.status} ${r2.status} ${await r2.text()}\n`);
}
process.stderr.write(`emulated host: feeding ${rate} samples/s in batches of ${batchSize} (${source.kind})\n`);
const interval = (1000 * batchSize) / Math.max(rate, 1);
while (!stopping) {
  const t0 = Date.now();
  const body = gzipSync(source.batch(batchSize), { level: 1 });
  try {
    const r = await send('/v1/samples?source=emulator', 'POST', body, 'application/gzip');
    if (r.status !== 202) process.stderr.write(`emulated host: upload ${r.status}: ${(await r.text()).slice(0, 300)}\n`);
  } catch (e) {
    if (!stopping) process.stderr.write(`emulated host: ${(e as Error).message}\n`);
  }
  await sleep(Math.max(0, interval - (Date.now() - t0)));
}
process.exit(0);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
