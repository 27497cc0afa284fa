// Worker thread of sweep-cache.ts: computes the sweep document and posts it back as JSON text.
import { parentPort } from 'node:worker_threads';
import { computeSweepDoc } from './sweep-cache.ts';

parentPort?.postMessage(JSON.stringify(computeSweepDoc()));
