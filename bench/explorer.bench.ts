// bench:explorer — server-side cost of the trace explorer's page for a 40-frame sample on three
// stacks (NMI → IRQ → task), against the JSON detail of the same stored trace in the same run
// (GET /v1/traces/{id}: decode, check, render JSON) as the baseline. Both start from the stored
// body, as the routes do; Redis is left out (the same one HGET for both).
//
// The sample is written here: a frame-pointer chain of 5 frames on the NMI stack (under the
// hardware frame), 5 on the IRQ stack (under its link word) and 30 on the task stack (under the
// user pt_regs), each frame 64 bytes with non-zero locals, the saved bp of each stack's last frame
// pointing into the next stack as an interrupted frame pointer does.
import { KernelProfile } from '../services/core/symbols/profile.ts';
import type { Sample, SampleStack, TruthFrame } from '../services/core/dump/sample.ts';
import { decodeBatch } from '../services/core/dump/batch-decode.ts';
import { encodeSamples } from '../services/core/dump/batch-encode.ts';
import { encodeTraceBody, type StoredTrace } from '../services/pipeline/trace-store.ts';
import { traceDetailJson, traceView } from '../services/pipeline/trace-view.ts';
import { renderTracePage } from '../services/api/explorer-trace.ts';

const TEXT = 0xffffffff81000000n;
const FUNCS = 48;
const kallsyms = ['ffffffff81000000 T _stext', ...Array.from({ length: FUNCS }, (_, i) => `${(TEXT + 0x100n + BigInt(i) * 0x100n).toString(16)} T bench_fn_${i}`), `${(TEXT + 0x100000n).toString(16)} T _etext`].join('\n') + '\n';
const profile = KernelProfile.fromKallsyms(kallsyms, { buildId: 'bench-explorer' });
const fnAddr = (i: number): bigint => TEXT + 0x100n + BigInt(i) * 0x100n;

function stack(type: SampleStack['type'], begin: bigint, size: number): { st: SampleStack; put: (a: bigint, v: bigint) => void; mem: DataView } {
  const bytes = new Uint8Array(size);
  const mem = new DataView(bytes.buffer);
  return { st: { type, begin, end: begin + BigInt(size), windows: [{ start: begin, bytes }] }, put: (a, v) => mem.setBigUint64(Number(a - begin), v, true), mem };
}

function sample(): Sample {
  const task = stack('task', 0xffffc90000630000n, 0x4000);
  const irq = stack('irq', 0xffffc90000004000n, 0x4000);
  const nmi = stack('nmi', 0xfffffe0000005000n, 0x1000);
  const truth: TruthFrame[] = [];
  let fn = 0;
  // Task stack: user pt_regs at the top, 30 frames under them (frame k at top - 168 - 64*(30-k)).
  const pUser = task.st.end - 168n;
  task.put(pUser + 136n, 0x33n); // cs: user mode
  task.put(pUser + 128n, 0x401000n);
  const taskFrames: bigint[] = [];
  for (let k = 0; k < 30; k++) taskFrames.push(pUser - 16n - BigInt(k) * 64n); // taskFrames[0] is the last (highest) frame
  const chain = (frames: bigint[], put: (a: bigint, v: bigint) => void, nextBp: bigint): void => {
    // frames from highest to lowest; each frame's saved bp points to the frame above it.
    for (let k = 0; k < frames.length; k++) {
      const f = frames[k]!;
      put(f, k === 0 ? nextBp : frames[k - 1]!);
      put(f + 8n, fnAddr(fn++) + 0x10n);
      for (let j = 2; j < 8; j++) put(f - BigInt(j) * 8n, 0xffff888000000000n + BigInt(fn * 8 + j));
    }
  };
  chain(taskFrames, task.put, 0n);
  // IRQ stack: the link word at its top is the task sp where the IRQ came in.
  const taskSp = taskFrames[29]! - 64n;
  irq.put(irq.st.end - 8n, taskSp);
  const irqFrames = Array.from({ length: 5 }, (_, k) => irq.st.end - 32n - 64n * BigInt(k));
  chain(irqFrames, irq.put, taskFrames[29]!);
  // NMI stack: the hardware frame at its top (its sp is the IRQ stack's sp), 5 frames under it.
  const hw = nmi.st.end - 40n;
  const irqSp = irqFrames[4]! - 64n;
  nmi.put(hw, fnAddr(fn) + 4n);
  nmi.put(hw + 8n, 0x10n);
  nmi.put(hw + 16n, 0x46n);
  nmi.put(hw + 24n, irqSp);
  nmi.put(hw + 32n, 0x18n);
  const nmiFrames = Array.from({ length: 5 }, (_, k) => hw - 16n - 64n * BigInt(k));
  chain(nmiFrames, nmi.put, irqFrames[4]!);
  // Truth: the start frame, then every return address from the innermost frame out.
  const ip = fnAddr(FUNCS - 1) + 8n;
  truth.push({ ip, kind: 'start' });
  for (const f of [...nmiFrames].reverse().concat([...irqFrames].reverse(), [...taskFrames].reverse())) {
    const st = [nmi, irq, task].find((s) => f >= s.st.begin && f < s.st.end)!;
    truth.push({ ip: st.mem.getBigUint64(Number(f + 8n - st.st.begin), true), kind: 'call' });
  }
  const sp = nmiFrames[4]! - 56n;
  return {
    trigger: 'nmi', comm: 'bench', pid: 1, tid: 1, cpu: 0, kernel: 'bench-explorer', host: 'bench-host',
    regs: { ip, sp, bp: nmiFrames[4]!, cs: 0x10n, flags: 0x46n, ss: 0x18n },
    stacks: [task.st, irq.st, nmi.st].map((s) => ({ ...s, windows: [{ start: s.begin, bytes: s.windows[0]!.bytes }] })),
    truth: { frames: truth },
  };
}

async function main(): Promise<void> {
  const s = sample();
  const record = decodeBatch(encodeSamples([s], [0])).records[0]!;
  const t: StoredTrace = {
    body: encodeTraceBody({ job: 'bench', index: 0, receivedAt: Date.now(), uploader: 'bench', source: 'ci', rev: 1, checker: 'bench' }, record),
    meta: { id: 'bench-0', score: 0, host: 'bench-host', kernel: 'bench-explorer', status: 'passing', strategies: [], reasons: [] },
  };
  const lookup = async (): Promise<{ profile: KernelProfile; rev: number }> => ({ profile, rev: 1 });
  const v = await traceView(t, lookup);
  const fp = v.picture!.paths.find((p) => p.strategy === 'fp')!;
  const words = v.picture!.stacks.reduce((n, st) => n + st.rows.length, 0);
  console.log(`sample: ${s.stacks.length} stacks (${v.picture!.stacks.map((x) => x.type).join(', ')}), fp walk ${fp.frames.length} frames, outcome ${fp.outcome}, ${fp.steps.length} words read; ${words} rows drawn; truth ${s.truth!.frames.length} frames`);
  if (fp.frames.length < 40 || v.picture!.stacks.length !== 3) throw new Error('the bench sample is not the 40-frame, 3-stack sample it should be');

  // Async work measured with a sync timer: each unit awaits its render in a loop of N.
  const N = 20;
  const run = async (f: () => Promise<unknown>): Promise<number> => {
    for (let i = 0; i < N; i++) await f(); // warm-up
    const rounds: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < N; i++) await f();
      rounds.push((performance.now() - t0) / N);
    }
    rounds.sort((a, b) => a - b);
    return rounds[2]!; // median of 5 rounds
  };
  let htmlBytes = 0;
  let jsonBytes = 0;
  const json = await run(async () => { jsonBytes = (await traceDetailJson(t, lookup)).length; });
  const page = await run(async () => {
    const x = await traceView(t, lookup);
    htmlBytes = renderTracePage(x.detail, x.picture, undefined).length;
  });
  const pic = await run(async () => JSON.stringify((await traceView(t, lookup)).picture).length);
  console.log(`JSON detail (baseline): ${json.toFixed(2)} ms per trace, ${(jsonBytes / 1024).toFixed(0)} KiB`);
  console.log(`picture JSON:           ${pic.toFixed(2)} ms (${(pic / json).toFixed(2)}× the detail)`);
  console.log(`explorer page (HTML):   ${page.toFixed(2)} ms (${(page / json).toFixed(2)}× the detail), ${(htmlBytes / 1024).toFixed(0)} KiB; target < 200 ms: ${page < 200 ? 'met' : 'NOT met'}`);
}

await main();
