// The checker worker process: takes sample batches from the queue, checks them, commits verdicts,
// traces and metric totals to Redis. Serves its own /metrics when METRICS_PORT is set.
// Stops on SIGTERM/SIGINT (or when the parent that started it goes away) after the active
// batches finish; batches it could not finish are retried by another worker (stall recovery).
import { loadConfig } from '../services/pipeline/config.ts';
import { CheckerWorker, parseFault, type TestHooks } from '../services/pipeline/queue.ts';

const cfg = loadConfig();
const tag = `[worker ${process.pid}]`;
const port = process.env.METRICS_PORT;
// Test hooks (tests and bench:soak only; docs/operations-service.md): a slowed batch, a poison host.
const hooks: TestHooks = {
  ...(process.env.STACKSANITY_TEST_SAMPLE_DELAY_MS ? { sampleDelayMs: Number(process.env.STACKSANITY_TEST_SAMPLE_DELAY_MS) } : {}),
  ...(process.env.STACKSANITY_TEST_CRASH_HOST ? { crashOnHost: process.env.STACKSANITY_TEST_CRASH_HOST } : {}),
};
if (Object.keys(hooks).length > 0) process.stderr.write(`${tag} TEST HOOKS ACTIVE: ${JSON.stringify(hooks)}\n`);
const worker = new CheckerWorker(cfg, {
  ...(process.env.STACKSANITY_FAULT ? { fault: parseFault(process.env.STACKSANITY_FAULT)! } : {}),
  hooks,
  ...(port !== undefined && port !== '' ? { metricsPort: Number(port) } : {}),
  log: (m) => process.stderr.write(`${tag} ${m}\n`),
});

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await worker.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.on('disconnect', () => void stop());

await worker.start();
process.send?.({ type: 'ready', pid: process.pid, metrics: worker.metricsAddress ?? null });
if (!process.send) process.stderr.write(`${tag} ready; metrics ${worker.metricsAddress ?? 'off'}\n`);
