// A validate-only pass over a text dump, for the API: it must answer "which samples are usable,
// which kernel does each name, and why is each bad one bad" for every upload, but the samples
// themselves are built again by the worker. parseTextDump builds Sample objects and decodes
// every stack word into bytes (~20 µs per sample); this scan reads the same lines without
// allocating per line (~3–5 µs).
//
// Exactness comes from construction, not from re-implementing every rule: the fast path accepts
// only the lines formatTextDump writes (`#` comments, the header, .host .kernel .regs .stack
// .window with an end, .mem, .truth) and applies to them every check the parser and
// validateSample apply. The moment it meets anything else — a callchain line, another extension,
// a quoted string, any value it would have to reject, a number outside ±2^53 — it gives up and
// returns what parseTextDump says about the whole text. So a body is either all well-formed
// lines the scan has proved good, or it is judged by the parser itself: the accepted and
// rejected indices, lines, fields and messages are the parser's in both cases.
import { DEFAULT_MAX_TEXT_BYTES, parseHeaderLine, parseTextDump, type TextParseOptions } from './text.ts';
import type { Rejection } from './errors.ts';
import { hasFullState, TOLERANCES, TRUTH_KINDS } from './sample.ts';
import { MAX_SAMPLE_BYTES, MAX_STACK_SIZE } from './validate.ts';
import { PT_REGS_FIELDS, STACK_TYPES } from '../stack/layout.ts';
import { HEX_DIGITS, HexReader } from './hex.ts';

/** What the API needs to know about one usable sample. */
export interface ScannedSample {
  /** Index in the input, counting rejected samples too (the parser's numbering). */
  index: number;
  /** Line of the sample's header. */
  line: number;
  kernel: string | undefined;
  /** Registers (ip and sp) and at least one stack: hasFullState of the parsed sample. */
  fullState: boolean;
}

export interface TextScan {
  samples: ScannedSample[];
  rejected: Rejection[];
  /** True when the fast path proved the whole text; false when parseTextDump judged it. */
  fast: boolean;
}

const TAB = 0x09, SPACE = 0x20, CR = 0x0d, HASH = 0x23, DOT = 0x2e, QUOTE = 0x22, EQ = 0x3d;
const TWO32 = 4294967296;
const SAFE = 2 ** 53;

// Module-local aliases: under tsx an imported binding read in a loop is a getter call.
const HEX = HEX_DIGITS;
const hx = new HexReader();

const PT_REGS_INDEX = new Map<string, number>(PT_REGS_FIELDS.map((f, i) => [f, i]));
const IP = PT_REGS_INDEX.get('ip')!, SP = PT_REGS_INDEX.get('sp')!, CS = PT_REGS_INDEX.get('cs')!, SS = PT_REGS_INDEX.get('ss')!;
const STACK_TYPE_SET: ReadonlySet<string> = new Set(STACK_TYPES);
const KIND_SET: ReadonlySet<string> = new Set(TRUTH_KINDS);
const TOLERANCE_SET: ReadonlySet<string> = new Set(TOLERANCES);

/** Thrown inside the fast path: "not proved", the parser decides. Never escapes this module. */
class Unsure {}
const UNSURE = new Unsure();

/** The last number as a signed 64-bit value, or throws Unsure when a double cannot hold it exactly. */
function signed(): number {
  const v = (hx.hi | 0) * TWO32 + hx.lo;
  if (v >= SAFE || v < -SAFE) throw UNSURE;
  return v;
}

/** A kernel-half address (negative signed form): where every stack lives. Unsigned order = signed order there. */
function kernelAddr(): number {
  const v = signed();
  if (v >= 0) throw UNSURE;
  return v;
}

function isWs(c: number): boolean {
  return c === SPACE || c === TAB;
}
function skipWs(t: string, i: number, end: number): number {
  while (i < end && isWs(t.charCodeAt(i))) i++;
  return i;
}
function tokenEnd(t: string, i: number, end: number): number {
  while (i < end && !isWs(t.charCodeAt(i))) i++;
  return i;
}
function has(t: string, c: number, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (t.charCodeAt(i) === c) return true;
  return false;
}

interface StackState {
  type: string;
  begin: number;
  end: number;
  /** [start, end) of each window with bytes, in order of appearance. */
  windows: number[];
}

/** One sample block while it is read. Reused: reset() per block. */
class Block {
  line = 0;
  host = false;
  kernel: string | undefined = undefined;
  hasKernel = false;
  regsSeen = 0; // bit per pt_regs field (21 fields)
  ip = 0;
  sp = 0;
  stacks: StackState[] = [];
  /** The current window: its stack, start, declared length and bytes filled. */
  win: StackState | undefined = undefined;
  winStartHi = 0;
  winStartLo = 0;
  winDeclared = 0;
  winFill = 0;
  declaredBytes = 0;
  truth = false;

  reset(line: number): void {
    this.line = line;
    this.host = false;
    this.kernel = undefined;
    this.hasKernel = false;
    this.regsSeen = 0;
    this.stacks = [];
    this.win = undefined;
    this.declaredBytes = 0;
    this.truth = false;
  }
}

class FastScan {
  readonly out: ScannedSample[] = [];
  private readonly b = new Block();
  private open = false;
  private lineNo = 0;
  private index = 0;

  constructor(private readonly t: string) {}

  run(): void {
    const t = this.t;
    const len = t.length;
    let pos = 0;
    while (pos < len) {
      let nl = t.indexOf('\n', pos);
      // The parser treats an unterminated last line specially (truncation): leave it to the parser.
      if (nl < 0) throw UNSURE;
      const ls = pos;
      pos = nl + 1;
      this.lineNo++;
      let end = nl;
      while (end > ls) {
        const c = t.charCodeAt(end - 1);
        if (c !== SPACE && c !== TAB && c !== CR) break;
        end--;
      }
      const i = skipWs(t, ls, end);
      if (this.open && i < end && t.charCodeAt(i) === DOT) {
        this.dotLine(i, end);
        continue;
      }
      if (i === end) {
        if (this.open) this.finish();
        continue;
      }
      if (t.charCodeAt(ls) === HASH) continue;
      // A content line: only a header that starts a block is on the fast path (callchain lines,
      // header lines without a blank line before them, garbage: the parser decides).
      if (this.open) throw UNSURE;
      const line = t.slice(ls, end);
      const h = parseHeaderLine(line);
      if (h === undefined || skipWs(line, h.restStart, line.length) < line.length) throw UNSURE;
      this.open = true;
      this.b.reset(this.lineNo);
    }
    if (this.open) this.finish();
  }

  private dotLine(i: number, end: number): void {
    const t = this.t;
    const ke = tokenEnd(t, i + 1, end);
    const kl = ke - i - 1;
    const c1 = t.charCodeAt(i + 1);
    if (kl === 3 && c1 === 0x6d && t.startsWith('mem', i + 1)) return this.mem(ke, end);
    if (kl === 5 && t.startsWith('truth', i + 1)) return this.truth(ke, end);
    if (kl === 6 && t.startsWith('window', i + 1)) return this.window(ke, end);
    if (kl === 5 && t.startsWith('stack', i + 1)) return this.stack(ke, end);
    if (kl === 4 && t.startsWith('regs', i + 1)) return this.regs(ke, end);
    if (kl === 4 && t.startsWith('host', i + 1)) return this.hostOrKernel(ke, end, false);
    if (kl === 6 && t.startsWith('kernel', i + 1)) return this.hostOrKernel(ke, end, true);
    throw UNSURE;
  }

  /** `.host X` / `.kernel X`: one bare token (quoted strings: the parser), once per sample. */
  private hostOrKernel(i: number, end: number, kernel: boolean): void {
    const t = this.t;
    const s = skipWs(t, i, end);
    const e = tokenEnd(t, s, end);
    if (s >= end || e !== end || has(t, QUOTE, s, e)) throw UNSURE;
    const b = this.b;
    if (kernel) {
      if (b.hasKernel) throw UNSURE;
      b.hasKernel = true;
      b.kernel = t.slice(s, e);
    } else {
      if (b.host) throw UNSURE;
      b.host = true;
    }
  }

  /** `.regs name=hex ...`: pt_regs fields, each once; ip/sp/cs/ss kept for the validation. */
  private regs(i: number, end: number): void {
    const t = this.t;
    const b = this.b;
    let j = i;
    for (;;) {
      j = skipWs(t, j, end);
      if (j >= end) return;
      const k = tokenEnd(t, j, end);
      let eq = -1;
      for (let p = j; p < k; p++) if (t.charCodeAt(p) === EQ) { eq = p; break; }
      if (eq < 0) throw UNSURE;
      const f = PT_REGS_INDEX.get(t.slice(j, eq));
      if (f === undefined || (b.regsSeen & (1 << f)) !== 0 || !hx.read(t, eq + 1, k)) throw UNSURE;
      b.regsSeen |= 1 << f;
      if (f === IP) b.ip = signed();
      else if (f === SP) b.sp = signed();
      else if ((f === CS || f === SS) && (hx.hi !== 0 || hx.lo > 0xffff)) throw UNSURE;
      j = k;
    }
  }

  /** `.stack <type> <begin> <end>` */
  private stack(i: number, end: number): void {
    const t = this.t;
    const a = skipWs(t, i, end), ae = tokenEnd(t, a, end);
    const bb = skipWs(t, ae, end), be = tokenEnd(t, bb, end);
    const c = skipWs(t, be, end), ce = tokenEnd(t, c, end);
    if (ce !== end || c >= end || has(t, QUOTE, a, end)) throw UNSURE;
    const type = t.slice(a, ae);
    if (!STACK_TYPE_SET.has(type) || !hx.read(t, bb, be)) throw UNSURE;
    const begin = kernelAddr();
    if (!hx.read(t, c, ce)) throw UNSURE;
    const stEnd = kernelAddr();
    if (stEnd <= begin || stEnd - begin > MAX_STACK_SIZE) throw UNSURE;
    const b = this.b;
    for (const s of b.stacks) if (s.type === type) throw UNSURE;
    if (b.win !== undefined && b.winFill !== b.winDeclared) throw UNSURE;
    b.stacks.push({ type, begin, end: stEnd, windows: [] });
    b.win = undefined;
  }

  /** `.window <start> <end>` inside the latest stack (the one-token form and other stacks: the parser). */
  private window(i: number, end: number): void {
    const t = this.t;
    const b = this.b;
    const a = skipWs(t, i, end), ae = tokenEnd(t, a, end);
    const c = skipWs(t, ae, end), ce = tokenEnd(t, c, end);
    if (ce !== end || c >= end || b.stacks.length === 0) throw UNSURE;
    if (!hx.read(t, a, ae)) throw UNSURE;
    const startHi = hx.hi, startLo = hx.lo;
    const start = kernelAddr();
    const st = b.stacks[b.stacks.length - 1]!;
    if (start < st.begin || start > st.end) throw UNSURE;
    if (!hx.read(t, c, ce)) throw UNSURE;
    const wEnd = kernelAddr();
    if (wEnd < start || wEnd > st.end) throw UNSURE;
    const declared = wEnd - start;
    b.declaredBytes += declared;
    if (b.declaredBytes > MAX_SAMPLE_BYTES) throw UNSURE;
    if (b.win !== undefined && b.winFill !== b.winDeclared) throw UNSURE;
    b.win = st;
    b.winStartHi = startHi;
    b.winStartLo = startLo;
    b.winDeclared = declared;
    b.winFill = 0;
    if (declared > 0) st.windows.push(start, wEnd);
  }

  /** `.mem <addr> <w0> [<w1> <w2> <w3>]`: continues the window, 16 hex digits per word, within its end. */
  private mem(i: number, end: number): void {
    const t = this.t;
    const b = this.b;
    const a = skipWs(t, i, end);
    const ae = tokenEnd(t, a, end);
    let j = skipWs(t, ae, end);
    if (j >= end || b.win === undefined || !hx.read(t, a, ae)) throw UNSURE;
    let lo = b.winStartLo + b.winFill;
    let hi = b.winStartHi;
    if (lo >= TWO32) {
      lo -= TWO32;
      hi = (hi + 1) >>> 0;
    }
    if (hx.lo !== lo || hx.hi !== hi) throw UNSURE;
    let words = 0;
    while (j < end) {
      const k = j + 16;
      if (k > end || (k < end && !isWs(t.charCodeAt(k)))) throw UNSURE;
      let bad = 0;
      for (let p = j; p < k; p++) bad |= HEX[t.charCodeAt(p)]!;
      if (bad < 0 || ++words > 4) throw UNSURE;
      j = k;
      while (j < end && isWs(t.charCodeAt(j))) j++;
    }
    b.winFill += 8 * words;
    if (b.winFill > b.winDeclared) throw UNSURE;
  }

  /** `.truth <ip> <kind> [entry=<name>] [tolerated=<why>]` (`.truth empty` and quoted values: the parser). */
  private truth(i: number, end: number): void {
    const t = this.t;
    if (has(t, QUOTE, i, end)) throw UNSURE;
    const a = skipWs(t, i, end), ae = tokenEnd(t, a, end);
    const k = skipWs(t, ae, end), ke = tokenEnd(t, k, end);
    if (k >= end || !hx.read(t, a, ae) || !KIND_SET.has(t.slice(k, ke))) throw UNSURE;
    let entry = false;
    let tolerated = false;
    let j = ke;
    for (;;) {
      j = skipWs(t, j, end);
      if (j >= end) break;
      const e = tokenEnd(t, j, end);
      if (t.startsWith('entry=', j)) {
        if (entry) throw UNSURE;
        entry = true;
      } else if (t.startsWith('tolerated=', j)) {
        if (tolerated || !TOLERANCE_SET.has(t.slice(j + 10, e))) throw UNSURE;
        tolerated = true;
      } else throw UNSURE;
      j = e;
    }
    this.b.truth = true;
  }

  /** The end of a block: what buildSample and validateSample check on the whole sample. */
  private finish(): void {
    const b = this.b;
    this.open = false;
    if (b.win !== undefined && b.winFill !== b.winDeclared) throw UNSURE;
    const stacks = b.stacks;
    for (const st of stacks) {
      // Windows of one stack must not overlap (sorted by start; empty ones do not count).
      const w = st.windows;
      if (w.length > 2) {
        const order: number[] = [];
        for (let k = 0; k < w.length; k += 2) order.push(k);
        order.sort((x, y) => w[x]! - w[y]!);
        for (let k = 1; k < order.length; k++) if (w[order[k]!]! < w[order[k - 1]! + 1]!) throw UNSURE;
      }
    }
    if (stacks.length > 1) {
      const sorted = [...stacks].sort((x, y) => x.begin - y.begin);
      for (let k = 1; k < sorted.length; k++) if (sorted[k]!.begin < sorted[k - 1]!.end) throw UNSURE;
    }
    const hasIp = (b.regsSeen & (1 << IP)) !== 0;
    const hasSp = (b.regsSeen & (1 << SP)) !== 0;
    // ip and sp within ±2^53 are canonical (57-bit) by construction; sp may lie on no stack.
    this.out.push({ index: this.index++, line: b.line, kernel: b.hasKernel ? b.kernel : undefined, fullState: hasIp && hasSp && stacks.length > 0 });
  }
}

/**
 * Which samples of a text dump are usable, with the kernel each names, and the rejected ones with
 * the parser's reasons. Same answer as parseTextDump (same options) for every input.
 */
export function scanTextDump(text: string, opts: TextParseOptions = {}): TextScan {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TEXT_BYTES;
  // Near the size limit the parser's exact UTF-8 count decides.
  if (text.length * 3 <= maxBytes) {
    const f = new FastScan(text);
    try {
      f.run();
      return { samples: f.out, rejected: [], fast: true };
    } catch (e) {
      if (e !== UNSURE) throw e;
    }
  }
  const parsed = parseTextDump(text, opts);
  const rejected = new Set(parsed.rejected.map((r) => r.sampleIndex));
  const samples: ScannedSample[] = [];
  let index = 0;
  for (const s of parsed.samples) {
    while (rejected.has(index)) index++;
    samples.push({ index: index++, line: s.source?.line ?? 0, kernel: s.kernel, fullState: hasFullState(s) });
  }
  return { samples, rejected: parsed.rejected, fast: false };
}
