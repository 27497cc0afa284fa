// The checker worker process: takes sample batches from the queue, checks them, commits verdicts,
// traces and metric totals to Redis. Serves its own /metrics when METRICS_PORT is set.
// Stops on SIGTERM/SIGINT (or when the parent that started it goes away) after the active
// batches finish; batches it could not finish are retried by another worker (stall recovery).
import { loadConfig } from '../services/pipeline/config.ts';
import { CheckerWorker, parseFault } from '../services/pipeline/queue.ts';

const cfg = loadConfig();
const tag = `[worker ${process.pid}]`;
const port = process.env.METRICS_PORT;
const worker = new CheckerWorker(cfg, {
  ...(process.env.STACKSANITY_FAULT ? { fault: parseFault(process.env.STACKSANITY_FAULT)! } : {}),
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
