// npm run bench:check — throughput of the checking engine on one core, each figure next to a
// baseline measured in the same process (these machines are shared and noisy: ratios mean more
// than times). Results go to bench/RESULTS.md by hand, with the machine's description.
//
//  1. unwind + verdict of decoded full-state samples (~20 frames over two stacks, one entry), per
//     strategy. Baseline: a naive BigInt frame-pointer walk of the same bytes with no checks.
//  2. dump text parse MB/s. Baseline: splitting the same text into lines.
//  3. perf script parse MB/s on the FlameGraph example (corpus). Same baseline.
//  4. a 100,000-symbol kallsyms load.
//  5. the binary batch form (API -> workers) on emulated-fleet batches of 500 samples: text ->
//     binary transcode and binary decode, µs per sample. Baseline: parseTextDump of the same text.
//     Then the worker's loop, decode + checkSample, next to checkSample on kept decoded samples.
import { readFileSync, existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { checkSample } from '../services/core/check/checker.ts';
import { parseTextDump, formatTextDump } from '../services/core/dump/text.ts';
import { decodeBatch } from '../services/core/dump/batch-decode.ts';
import { transcodeTextDump } from '../services/core/dump/batch-transcode.ts';
import { strategiesFor } from '../services/pipeline/check-batch.ts';
import { EmulatedFleet } from '../services/emulator/index.ts';
import { KernelProfile } from '../services/core/symbols/profile.ts';
import { STRATEGIES } from '../services/core/unwind/types.ts';
import type { Sample } from '../services/core/dump/sample.ts';
import { Machine } from '../test/support/stack-image.ts';
import { ENCODED, deviceIrq, syscallToVfsRead } from '../test/core/unwind/fixtures.ts';
import { timeIt } from './timing.ts';

const here = dirname(fileURLToPath(import.meta.url));
const corpus = resolve(here, '../../shared/corpus');


/** ~20 frames: read(2) down to a deep seq_file chain, interrupted by a device IRQ handled on the IRQ stack. */
function benchSample(): Sample {
  const m = new Machine(ENCODED.kernel, ENCODED.layout);
  syscallToVfsRead(m);
  m.enter('seq_read', 0x7b, 0x20);
  for (let i = 0; i < 4; i++) {
    m.enter('proc_single_show', 0x11e, 0x18); // called from seq_read+0x11e
    m.enter('seq_read', 0x3a, 0x20); // called from proc_single_show+0x3a
  }
  m.enter('copy_user_generic', 0x1c0, 0x10);
  deviceIrq(m, 0x2a);
  return m.sample({ at: 0x31 }).sample;
}

/**
 * The baseline: the obvious BigInt implementation — follow the bp chain through whichever window
 * holds it, read each return address and name it by a BigInt binary search over the symbol
 * starts — with none of the kernel's rules, entries or verdicts.
 */
function naiveWalk(s: Sample, starts: bigint[]): number {
  let n = 0;
  let bp = s.regs!.bp!;
  while (n < 128) {
    let found = false;
    for (const st of s.stacks) {
      for (const w of st.windows) {
        const end = w.start + BigInt(w.bytes.length);
        if (bp < w.start || bp + 16n > end) continue;
        const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
        const off = Number(bp - w.start);
        const ret = dv.getBigUint64(off + 8, true);
        let lo = 0;
        let hi = starts.length - 1;
        while (lo < hi) {
          const mid = (lo + hi + 1) >> 1;
          if (starts[mid]! <= ret - 1n) lo = mid;
          else hi = mid - 1;
        }
        const next = dv.getBigUint64(off, true);
        // An encoded bp points at pt_regs: continue from regs->bp (offset 32), as encoded_fp does.
        bp = (next & 1n) === 1n ? readAny(s, (next & ~1n) + 32n) ?? 0n : next;
        found = true;
        break;
      }
      if (found) break;
    }
    if (!found) break;
    n++;
  }
  return n;
}

function readAny(s: Sample, addr: bigint): bigint | undefined {
  for (const st of s.stacks) {
    for (const w of st.windows) {
      if (addr < w.start || addr + 8n > w.start + BigInt(w.bytes.length)) continue;
      return new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength).getBigUint64(Number(addr - w.start), true);
    }
  }
  return undefined;
}

function main(): void {
  const cpu = cpus()[0];
  console.log(`machine: ${cpus().length} cores, ${cpu?.model ?? 'unknown'}; node ${process.version}`);
  const profile = ENCODED.profile;
  const sample = benchSample();
  const frames = checkSample(sample, profile, ['encoded_fp']).results[0]!.unwind.frames.length;
  const verdict = checkSample(sample, profile, ['encoded_fp']).results[0]!.verdict;
  console.log(`sample: ${frames} frames over ${sample.stacks.map((s) => s.type).join('+')}, encoded_fp verdict ${verdict}`);

  const starts = [...ENCODED.kernel.functions.values()].map((f) => f.start).sort((a, b) => (a < b ? -1 : 1));
  const naiveFrames = naiveWalk(sample, starts);
  const base = timeIt(1500, () => {
    for (let i = 0; i < 1000; i++) naiveWalk(sample, starts);
    return 1000;
  });
  console.log(`\n1. unwind + verdict (samples/s, one core)`);
  console.log(`   baseline: naive BigInt fp walk + symbol lookup, no rules (${naiveFrames} frames): ${fmt(base.perSec)} samples/s`);
  for (const s of STRATEGIES) {
    const r = timeIt(1500, () => {
      for (let i = 0; i < 1000; i++) checkSample(sample, profile, [s]);
      return 1000;
    });
    console.log(`   ${s.padEnd(13)} ${fmt(r.perSec)} samples/s  (${(r.perSec / base.perSec).toFixed(2)}x baseline)`);
  }
  const all = timeIt(1500, () => {
    for (let i = 0; i < 500; i++) checkSample(sample, profile);
    return 500;
  });
  console.log(`   all four + agreement: ${fmt(all.perSec)} samples/s = ${fmt(all.perSec * 4)} strategy-unwinds/s  (${((all.perSec * 4) / base.perSec).toFixed(2)}x baseline)`);

  console.log(`\n2. dump text parse (MB/s)`);
  const text = formatTextDump(Array.from({ length: 200 }, () => sample));
  const bytes = Buffer.byteLength(text);
  const split = timeIt(1500, () => {
    text.split('\n');
    return bytes;
  });
  const parse = timeIt(2000, () => {
    const r = parseTextDump(text);
    if (r.samples.length !== 200) throw new Error('parse lost samples');
    return bytes;
  });
  console.log(`   input: ${(bytes / 1e6).toFixed(2)} MB, 200 samples`);
  console.log(`   baseline text.split('\\n'): ${(split.perSec / 1e6).toFixed(1)} MB/s`);
  console.log(`   parseTextDump:             ${(parse.perSec / 1e6).toFixed(1)} MB/s  (${(parse.perSec / split.perSec).toFixed(2)}x baseline)`);

  console.log(`\n3. perf script parse (MB/s)`);
  const gz = resolve(corpus, 'perf-script/flamegraph-example-perf-stacks.txt.gz');
  if (!existsSync(gz)) {
    console.log(`   skipped: ${gz} not found (../shared/corpus is absent)`);
  } else {
    const perf = gunzipSync(readFileSync(gz)).toString('utf8');
    const pb = Buffer.byteLength(perf);
    const ps = timeIt(1500, () => {
      perf.split('\n');
      return pb;
    });
    let count = 0;
    const pp = timeIt(2000, () => {
      count = parseTextDump(perf).samples.length;
      return pb;
    });
    console.log(`   input: ${(pb / 1e6).toFixed(2)} MB, ${count} samples`);
    console.log(`   baseline text.split('\\n'): ${(ps.perSec / 1e6).toFixed(1)} MB/s`);
    console.log(`   parseTextDump (perf):      ${(pp.perSec / 1e6).toFixed(1)} MB/s  (${(pp.perSec / ps.perSec).toFixed(2)}x baseline)`);
  }

  console.log(`\n4. kallsyms load`);
  const lines: string[] = ['ffffffff81000000 T _stext'];
  for (let i = 0; i < 100_000; i++) lines.push(`${(0xffffffff81000000n + BigInt(i * 48)).toString(16)} ${i % 3 ? 't' : 'T'} fn_${i}`);
  lines.push(`${(0xffffffff81000000n + 4_800_000n).toString(16)} T _etext`);
  const ks = lines.join('\n');
  const kl = timeIt(3000, () => {
    KernelProfile.fromKallsyms(ks);
    return 1;
  });
  console.log(`   100,000 symbols: ${(1000 / kl.perSec).toFixed(1)} ms per load`);

  console.log(`\n5. binary batch form (µs per sample, emulated-fleet batches of 500)`);
  const fleet = new EmulatedFleet({ seed: 7, layout: 'all', hosts: 16, faults: ['corrupt_bp', 'clobber_ret', 'stale_frames'], faultRate: 0.05 });
  const texts = Array.from({ length: 8 }, () => formatTextDump(fleet.batch(500)));
  const uploads = texts.map((t) => Buffer.from(t, 'utf8'));
  const batches = texts.map((t) => transcodeTextDump(t));
  if (!batches.every((b) => b.fast)) throw new Error('fleet batches should take the transcoder fast path');
  const binaries = batches.map((b) => b.bytes);
  const perBatch = (fn: (i: number) => void) => {
    let i = 0;
    return timeIt(2000, () => {
      fn(i++ % 8);
      return 500;
    });
  };
  const us = (r: { perSec: number }) => 1e6 / r.perSec;
  const baseP = perBatch((i) => parseTextDump(texts[i]!));
  const tr = perBatch((i) => transcodeTextDump(texts[i]!));
  const trb = perBatch((i) => transcodeTextDump(uploads[i]!));
  const dec = perBatch((i) => decodeBatch(binaries[i]!));
  const textBytes = texts.reduce((n, t) => n + t.length, 0) / 8 / 500;
  const binBytes = binaries.reduce((n, b) => n + b.length, 0) / 8 / 500;
  console.log(`   input: ${textBytes.toFixed(0)} text bytes -> ${binBytes.toFixed(0)} binary bytes per sample`);
  console.log(`   baseline parseTextDump:           ${us(baseP).toFixed(2)} µs/sample`);
  console.log(`   transcode text -> binary:         ${us(tr).toFixed(2)} µs/sample  (${(us(tr) / us(baseP)).toFixed(3)}x baseline)`);
  console.log(`   transcode UTF-8 bytes -> binary:  ${us(trb).toFixed(2)} µs/sample  (${(us(trb) / us(baseP)).toFixed(3)}x baseline)`);
  console.log(`   decode binary batch:              ${us(dec).toFixed(2)} µs/sample  (${(us(dec) / us(baseP)).toFixed(3)}x baseline)`);
  // What a worker pays: decode, then checkSample on each sample (the profiles and strategies the
  // worker would use), garbage collection included. Next to it, checkSample alone on samples
  // decoded once and kept, so the difference is decoding's whole cost, its allocations included.
  const profiles = new Map(fleet.kernels().map((k) => [k.buildId, KernelProfile.fromKallsyms(k.kallsyms, { layouts: k.profile.layouts, buildId: k.buildId })]));
  const checkAll = (samples: Sample[]): void => {
    for (const s of samples) {
      const p = profiles.get(s.kernel!)!;
      checkSample(s, p, strategiesFor(p));
    }
  };
  const decoded = binaries.map((b) => decodeBatch(b).samples);
  const chk = perBatch((i) => checkAll(decoded[i]!));
  const dchk = perBatch((i) => checkAll(decodeBatch(binaries[i]!).samples));
  console.log(`   checkSample (decoded once):       ${us(chk).toFixed(2)} µs/sample`);
  console.log(`   decode + checkSample:             ${us(dchk).toFixed(2)} µs/sample  (+${(us(dchk) - us(chk)).toFixed(2)} over checkSample alone)`);
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

main();
