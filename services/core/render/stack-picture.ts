// The stack picture's data (the trace explorer, issue 14): every captured stack of a sample as a
// column of 8-byte words with what each one means, the structures the kernel lays on them (frame
// headers, pt_regs, the CPU's hardware frame, the link word to the interrupted stack), each
// strategy's walk as the words it read in order, and the true chain set against every strategy.
// Pure and JSON-ready: GET /v1/traces/{id}/picture serves it and the HTML page draws it.
import type { Sample, SampleStack } from '../dump/sample.ts';
import type { SampleCheck } from '../check/checker.ts';
import { IRET_FRAME_OFFSET, IRET_FRAME_SIZE, IST_STACK_TYPES, PT_REGS_FIELDS, PT_REGS_SIZE, STACK_TYPE_NAME, linkFromTop, type StackType } from '../stack/layout.ts';
import { ENTRY_TITLE, type EntryType } from '../symbols/entry-types.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { formatHex64, signedFromBig } from '../u64.ts';
import type { Frame, StrategyName, WordRole } from '../unwind/types.ts';

/** Runs of this many unremarkable zero words or more are folded into one row. */
export const FOLD_ZERO_RUN = 6;
const HW_FIELDS = ['ip', 'cs', 'flags', 'sp', 'ss'] as const;

export interface PictureWord {
  row: 'word';
  addr: string;
  value: string;
  /** What the value is, where it has a meaning (a symbol, a pointer into a stack, a pt_regs field). */
  meaning?: string;
  /** kernel text, a pointer into a captured stack, &pt_regs|1, or nothing known. */
  kind: 'text' | 'stack' | 'encoded' | 'zero' | 'data';
  /** The structure the word belongs to, e.g. "pt_regs.ip", "hw.sp", "link". */
  field?: string;
}

export interface PictureGap {
  row: 'gap';
  /** [from, to) */
  from: string;
  to: string;
  words: number;
  why: 'not_captured' | 'zero';
}

export type PictureRow = PictureWord | PictureGap;

export interface PictureBlock {
  kind: 'frame' | 'pt_regs' | 'hw_frame' | 'link';
  /** Lowest and highest word address inside the block (inclusive). */
  from: string;
  to: string;
  label: string;
}

export interface PictureStack {
  type: StackType;
  name: string;
  begin: string;
  end: string;
  /** Rows from the highest address down, as the kernel's diagrams draw a stack. */
  rows: PictureRow[];
  blocks: PictureBlock[];
  /** The distance in bytes (decimal) to the next stack below in the address space: a guard gap when they are neighbours. */
  below?: { stack: StackType; bytes: string };
}

export interface PathStep {
  addr: string;
  role: WordRole;
  /** The stack holding the word; absent when it lies on none of them (where a walk ran off). */
  stack?: StackType;
}

export interface PathFrame {
  index: number;
  kind: Frame['kind'];
  symbol: string;
  stack: StackType;
  entry?: string;
  /** The stack words the frame was read from (its frame header, or its pt_regs). */
  words: string[];
  /** Not in the true chain (when the sample has one). */
  invented?: boolean;
}

export interface PicturePath {
  strategy: StrategyName;
  baseline: boolean;
  verdict: string;
  outcome: string;
  reliable: boolean;
  reason?: string;
  message?: string;
  steps: PathStep[];
  frames: PathFrame[];
  /** The stacks in the order the walk visited them. */
  stacks: StackType[];
}

export interface TruthRow {
  symbol: string;
  kind: string;
  entry?: string;
  tolerated?: string;
  /** Per strategy: the frame index that reports this ip, or -1 when the strategy misses it. */
  found: Record<string, number>;
}

export interface StackPicture {
  stacks: PictureStack[];
  paths: PicturePath[];
  truth: TruthRow[] | null;
}

/** The words of a captured stack by address, for meanings and blocks. */
class Words {
  private readonly byAddr = new Map<bigint, bigint>();

  constructor(stacks: readonly SampleStack[]) {
    for (const st of stacks) {
      for (const w of st.windows) {
        const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
        // Only whole words from an 8-aligned address: the picture's rows.
        const first = Number(((w.start + 7n) & ~7n) - w.start);
        for (let o = first; o + 8 <= w.bytes.byteLength; o += 8) this.byAddr.set(w.start + BigInt(o), dv.getBigUint64(o, true));
      }
    }
  }

  get(a: bigint): bigint | undefined {
    return this.byAddr.get(a);
  }
}

export function stackPicture(sample: Sample, profile: KernelProfile, check: SampleCheck, baseline: ReadonlySet<string> = new Set(['fp'])): StackPicture {
  const words = new Words(sample.stacks);
  const stackOf = (a: bigint): SampleStack | undefined => sample.stacks.find((s) => a >= s.begin && a < s.end);
  const isText = (v: bigint): boolean => v !== 0n && profile.isTextS(signedFromBig(v));
  const sym = (v: bigint, ret = false): string => profile.symbols.format(v, ret);

  // Structures: pt_regs (wherever any strategy found them, and at the task stack's top), the
  // hardware frame at an IST stack's top, link words, frame headers of every strategy's frames.
  const field = new Map<bigint, string>();
  const blocks = new Map<StackType, PictureBlock[]>();
  const seenBlock = new Set<string>();
  const addBlock = (st: SampleStack | undefined, b: PictureBlock): void => {
    if (!st) return;
    const key = `${st.type}:${b.kind}:${b.from}:${b.to}`;
    if (seenBlock.has(key)) return;
    seenBlock.add(key);
    (blocks.get(st.type) ?? blocks.set(st.type, []).get(st.type)!).push(b);
  };
  const ptRegs = (at: bigint, label: string, partial = false): void => {
    const st = stackOf(at);
    if (!st || at + BigInt(PT_REGS_SIZE) > st.end) return;
    PT_REGS_FIELDS.forEach((f, i) => {
      if (partial && i * 8 < IRET_FRAME_OFFSET) return;
      field.set(at + BigInt(i * 8), `pt_regs.${f}`);
    });
    const from = partial ? at + BigInt(IRET_FRAME_OFFSET) : at;
    addBlock(st, { kind: 'pt_regs', from: formatHex64(from), to: formatHex64(at + BigInt(PT_REGS_SIZE - 8)), label });
  };
  for (const st of sample.stacks) {
    if (st.type === 'task') ptRegs(st.end - BigInt(PT_REGS_SIZE), 'pt_regs at the task stack\'s top (the entry from user space, or a kthread\'s)');
    if (IST_STACK_TYPES.has(st.type)) {
      const hw = st.end - BigInt(IRET_FRAME_SIZE);
      HW_FIELDS.forEach((f, i) => { if (!field.has(hw + BigInt(i * 8))) field.set(hw + BigInt(i * 8), `hw.${f}`); });
      addBlock(st, { kind: 'hw_frame', from: formatHex64(hw), to: formatHex64(st.end - 8n), label: `hardware frame the CPU pushed on entering the ${STACK_TYPE_NAME[st.type]} stack` });
    }
    const link = linkFromTop(st.type);
    if (link !== undefined) {
      const at = st.end - BigInt(link);
      const v = words.get(at);
      const to = v !== undefined ? stackOf(v) : undefined;
      addBlock(st, { kind: 'link', from: formatHex64(at), to: formatHex64(at), label: `link to the ${to ? STACK_TYPE_NAME[to.type] : 'interrupted'} stack (the interrupted sp)` });
      field.set(at, field.has(at) ? `${field.get(at)} · link` : 'link');
    }
  }
  for (const r of check.results) {
    const fp = r.strategy !== 'orc';
    for (const f of r.unwind.frames) {
      if (f.kind === 'regs' && f.regsAt !== undefined) {
        ptRegs(f.regsAt, `pt_regs of the ${ENTRY_TITLE[(f.entry ?? 'unknown') as EntryType]} (RIP=${sym(f.ip)})`, f.partial === true);
      } else if (f.kind === 'call' && f.slot !== undefined) {
        const st = stackOf(f.slot);
        const from = fp ? f.slot - 8n : f.slot;
        addBlock(st, { kind: 'frame', from: formatHex64(from), to: formatHex64(f.slot), label: `${fp ? 'frame header: saved bp, ' : ''}return to ${sym(f.ip, true)}` });
      }
    }
    if (r.unwind.userRegsAt !== undefined) ptRegs(r.unwind.userRegsAt, 'user-mode pt_regs (the end of the kernel trace)');
  }

  const meaning = (a: bigint, v: bigint): Pick<PictureWord, 'meaning' | 'kind'> => {
    if (v === 0n) return { kind: 'zero' };
    if (isText(v)) return { kind: 'text', meaning: sym(v, true) };
    const target = stackOf(v & ~1n);
    if (target) {
      const off = `${STACK_TYPE_NAME[target.type]} +0x${(v - target.begin).toString(16)}`;
      if ((v & 1n) === 1n) return { kind: 'encoded', meaning: `&pt_regs|1 → pt_regs at ${off} (encoded frame pointer)` };
      const f = field.get(a);
      if (f?.includes('link') || f === 'hw.sp' || f === 'pt_regs.sp') return { kind: 'stack', meaning: `→ ${off}` };
      // A saved bp: the word above it is the return address into the function whose frame it points to.
      const above = words.get(a + 8n);
      if (above !== undefined && isText(above) && (v & 7n) === 0n && v > a) {
        return { kind: 'stack', meaning: `saved bp → frame of ${fnName(sym(above, true))}` };
      }
      return { kind: 'stack', meaning: `→ ${off}` };
    }
    return { kind: 'data' };
  };

  // Path steps and frames per strategy; the words any of them read stay unfolded.
  const keep = new Set<bigint>();
  for (const b of blocks.values()) for (const x of b) for (let a = BigInt(`0x${x.from}`); a <= BigInt(`0x${x.to}`); a += 8n) keep.add(a);
  const truth = sample.truth?.frames;
  const truthIps = new Set((truth ?? []).map((f) => f.ip));
  const paths: PicturePath[] = check.results.map((r) => {
    const steps: PathStep[] = (r.unwind.reads ?? []).map((x) => {
      keep.add(x.addr);
      const st = stackOf(x.addr);
      return { addr: formatHex64(x.addr), role: x.role, ...(st ? { stack: st.type } : {}) };
    });
    const fp = r.strategy !== 'orc';
    const frames: PathFrame[] = r.unwind.frames.map((f, index) => {
      const ws: bigint[] = [];
      if (f.kind === 'call' && f.slot !== undefined) {
        if (fp) ws.push(f.slot - 8n);
        ws.push(f.slot);
      } else if (f.kind === 'regs' && f.regsAt !== undefined) {
        const first = f.partial ? IRET_FRAME_OFFSET : 0;
        for (let o = first; o < PT_REGS_SIZE; o += 8) ws.push(f.regsAt + BigInt(o));
      }
      for (const w of ws) keep.add(w);
      const pf: PathFrame = { index, kind: f.kind, symbol: sym(f.ip, f.kind === 'call'), stack: f.stack, words: ws.map(formatHex64) };
      if (f.entry !== undefined) pf.entry = f.entry;
      if (truth && truth.length > 0 && !truthIps.has(f.ip)) pf.invented = true;
      return pf;
    });
    const p: PicturePath = {
      strategy: r.strategy, baseline: baseline.has(r.strategy), verdict: r.verdict, outcome: r.unwind.outcome, reliable: r.unwind.reliable,
      steps, frames, stacks: [...r.unwind.stacks],
    };
    if (r.reason !== undefined) p.reason = r.reason;
    if (r.unwind.message !== undefined) p.message = r.unwind.message;
    return p;
  });

  const truthRows: TruthRow[] | null = truth && truth.length > 0 ? truth.map((t) => {
    const found: Record<string, number> = {};
    for (const r of check.results) found[r.strategy] = r.unwind.frames.findIndex((f) => f.ip === t.ip);
    const row: TruthRow = { symbol: sym(t.ip, t.kind === 'call'), kind: t.kind, found };
    if (t.entry !== undefined) row.entry = t.entry;
    if (t.tolerated !== undefined) row.tolerated = t.tolerated;
    return row;
  }) : null;

  // The stacks, highest address first; each from its top down to the lowest captured word.
  const ordered = [...sample.stacks].sort((a, b) => (a.begin < b.begin ? 1 : -1));
  const stacks: PictureStack[] = ordered.map((st, i) => {
    const rows: PictureRow[] = [];
    let low = st.end;
    for (const w of st.windows) if (w.start < low) low = w.start;
    low = (low + 7n) & ~7n;
    let zeroRun: bigint[] = [];
    let gapFrom: bigint | undefined;
    const flushZeros = (): void => {
      if (zeroRun.length >= FOLD_ZERO_RUN) {
        rows.push({ row: 'gap', from: formatHex64(zeroRun[zeroRun.length - 1]!), to: formatHex64(zeroRun[0]! + 8n), words: zeroRun.length, why: 'zero' });
      } else {
        for (const a of zeroRun) rows.push(wordRow(a, 0n));
      }
      zeroRun = [];
    };
    const wordRow = (a: bigint, v: bigint): PictureWord => {
      const w: PictureWord = { row: 'word', addr: formatHex64(a), value: formatHex64(v), ...meaning(a, v) };
      const f = field.get(a);
      if (f !== undefined) w.field = f;
      return w;
    };
    for (let a = st.end - 8n; a >= low; a -= 8n) {
      const v = words.get(a);
      if (v === undefined) {
        flushZeros();
        gapFrom ??= a + 8n;
        continue;
      }
      if (gapFrom !== undefined) {
        rows.push({ row: 'gap', from: formatHex64(a + 8n), to: formatHex64(gapFrom), words: Number((gapFrom - a - 8n) / 8n), why: 'not_captured' });
        gapFrom = undefined;
      }
      if (v === 0n && !keep.has(a) && !field.has(a)) {
        zeroRun.push(a);
        continue;
      }
      flushZeros();
      rows.push(wordRow(a, v));
    }
    flushZeros();
    if (gapFrom !== undefined && gapFrom > low) rows.push({ row: 'gap', from: formatHex64(low), to: formatHex64(gapFrom), words: Number((gapFrom - low) / 8n), why: 'not_captured' });
    const ps: PictureStack = {
      type: st.type, name: STACK_TYPE_NAME[st.type], begin: formatHex64(st.begin), end: formatHex64(st.end), rows,
      blocks: (blocks.get(st.type) ?? []).sort((a, b) => (a.to < b.to ? 1 : -1)),
    };
    const next = ordered[i + 1];
    if (next) ps.below = { stack: next.type, bytes: (st.begin - next.end).toString() };
    return ps;
  });
  return { stacks, paths, truth: truthRows };
}

/** "vfs_read+0x5a/0x120" → "vfs_read". */
function fnName(s: string): string {
  const i = s.indexOf('+');
  return i > 0 ? s.slice(0, i) : s;
}
