// npm run bench:max-batch — how long the worker holds the largest batch the API accepts, and the
// longest stretch it keeps the event loop (where BullMQ renews the batch's lock) to itself. This
// sizes STACKSANITY_LOCK_MS / STACKSANITY_STALLED_MS (docs/operations-service.md).
//
// The largest batch: emulated samples (text, as hosts send) up to the decoded-size limit
// (STACKSANITY_MAX_DECODED, default 128 MiB; BENCH_MAX_BYTES overrides), within the body limit
// once gzipped. Baseline in the same run: the usual 500-sample batch.
import { gzipSync } from 'node:zlib';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../services/pipeline/config.ts';
import { feederSource } from '../services/pipeline/feed.ts';
import { encodeBatch, type BatchJob } from '../services/pipeline/job.ts';
import { checkBatch } from '../services/pipeline/check-batch.ts';
import { YIELD_EVERY_MS } from '../services/pipeline/queue.ts';
import { decodeBatch } from '../services/core/dump/batch-decode.ts';
import { KernelProfile, parseProfileOptions } from '../services/core/symbols/profile.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cfg = loadConfig();
const MAX = Number(process.env.BENCH_MAX_BYTES ?? cfg.maxSamplesDecoded);
const log = (s: string): void => void process.stderr.write(`${s}\n`);

/** Runs f while a 1 ms timer watches the event loop; returns f's wall time and the longest gap between ticks. */
async function watched(f: () => Promise<unknown> | unknown): Promise<{ ms: number; longestBlockMs: number }> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  await f();
  const ms = performance.now() - t0;
  longest = Math.max(longest, performance.now() - last);
  clearInterval(timer);
  return { ms, longestBlockMs: longest };
}

const source = await feederSource({ root: ROOT, hosts: 16, seed: 11, warn: log });
const profiles = new Map(source.kernels.map((k) => [k.buildId, { profile: KernelProfile.fromKallsyms(k.kallsyms, { ...parseProfileOptions(k.profile), buildId: k.buildId }), rev: 1 }]));
log(`generating a batch up to ${(MAX / 2 ** 20).toFixed(0)} MiB of text (${source.kind})...`);
const parts: string[] = [];
let bytes = 0;
for (;;) {
  const p = source.batch(1000);
  if (bytes + p.length > MAX) break;
  parts.push(p);
  bytes += p.length;
}
const text = Buffer.from(parts.join(''));
parts.length = 0;
const gz = gzipSync(text, { level: 6 });
log(`  ${(text.length / 2 ** 20).toFixed(1)} MiB text, ${(gz.length / 2 ** 20).toFixed(1)} MiB gzip (body limit ${(cfg.maxSamplesBody / 2 ** 20).toFixed(0)} MiB)`);

async function measure(label: string, body: Buffer, yieldEveryMs: number | undefined): Promise<Record<string, number | string>> {
  const enc = encodeBatch(body, 'text', 1 << 30);
  let d = decodeBatch(enc.bytes);
  const decode = await watched(() => { d = decodeBatch(enc.bytes); });
  const job: BatchJob = { v: 2, format: 'text', gzip: false, uploader: 'bench', source: 'emulator', receivedAt: Date.now(), accepted: d.samples.length, skip: [] };
  const ctx = { profile: async (b: string) => profiles.get(b), passingRatio: cfg.tracePassingRatio, maxTraces: 1000, ...(yieldEveryMs !== undefined ? { yieldEveryMs } : {}) };
  for (let i = 0; i < 5; i++) await checkBatch('warm', job, d.samples.slice(0, 2000), d.indices.slice(0, 2000), ctx, d.records.slice(0, 2000));
  const check = await watched(() => checkBatch('max', job, d.samples, d.indices, ctx, d.records));
  return {
    batch: label, samples: d.samples.length, storedMiB: Number((enc.bytes.length / 2 ** 20).toFixed(1)), yield: yieldEveryMs === undefined ? 'never' : `${yieldEveryMs} ms`,
    decodeMs: Math.round(decode.ms), checkMs: Math.round(check.ms), totalMs: Math.round(decode.ms + check.ms),
    longestLoopBlockMs: Math.round(Math.max(decode.longestBlockMs, check.longestBlockMs)),
  };
}

const small = Buffer.from(source.batch(500));
const rows = [
  await measure('500 samples (baseline)', small, YIELD_EVERY_MS),
  await measure('largest accepted', text, undefined),
  await measure('largest accepted', text, YIELD_EVERY_MS),
];
console.log(`machine: nproc ${cpus().length}, ${cpus()[0]?.model ?? '?'}; node ${process.version}`);
console.table(rows);
