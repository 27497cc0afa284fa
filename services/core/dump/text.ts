// The text dump format: `perf script` output, extended with `.keyword` lines that carry what perf
// cannot print (registers as pt_regs, raw stack windows, ground truth). Real perf script output
// parses as callchain-only samples. The grammar, with examples, is docs/dump-format.md.
//
// The parser is a hand-written line scanner: dumps are dominated by `.mem` lines (raw stack
// words), which are decoded with charCodeAt and a hex table straight into the window's bytes —
// no regex and no BigInt per word.
import { DumpError, rejectionOf, type ParseResult, type RejectReason, type Rejection } from './errors.ts';
import {
  CALLCHAIN_FLAGS, TOLERANCES, TRUTH_KINDS,
  type CallchainEntry, type CallchainFlag, type FrameKind, type Regs, type Sample, type SampleStack,
  type StackWindow, type Tolerance, type TruthFrame,
} from './sample.ts';
import { MAX_SAMPLE_BYTES, MAX_STACK_SIZE, validateSample } from './validate.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type PtRegsField, type StackType } from '../stack/layout.ts';
import { callchainFlags } from './callchain-flags.ts';
import { HEX_DIGITS, HexReader } from './hex.ts';

/** perf prints a header in well under 1 KiB; a longer line is refused unparsed (a header regex over
 *  a 64 MiB line took seconds). */
export const MAX_HEADER_CHARS = 64 * 1024;

export interface TextParseOptions {
  /** Named in source refs and error messages. */
  file?: string;
  /** Inputs larger than this (UTF-8 bytes) are rejected whole as 'oversized'. Default 256 MiB. */
  maxBytes?: number;
}

export const TEXT_DUMP_MAGIC = '# stacksanity-dump v1';
export const DEFAULT_MAX_TEXT_BYTES = 256 * 1024 * 1024;
/** Stack words per `.mem` line, as the writer emits them (32 bytes of stack per line). */
export const MEM_WORDS_PER_LINE = 4;

const SOURCE_FILE_DEFAULT = '<text>';
const U64_MAX = (1n << 64n) - 1n;
const U64_MAX_DEC = '18446744073709551615';

// ---------------------------------------------------------------------------------------------
// Character classes and hex decoding

const TAB = 0x09, SPACE = 0x20, CR = 0x0d, HASH = 0x23, DOT = 0x2e, COLON = 0x3a, QUOTE = 0x22;
const BACKSLASH = 0x5c, LPAREN = 0x28, RPAREN = 0x29, MINUS = 0x2d;

const hex = new HexReader();

function hexVal(c: number): number {
  return HEX_DIGITS[c] ?? -1;
}
function isWs(c: number): boolean {
  return c === SPACE || c === TAB;
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function bigOfHalves(hi: number, lo: number): bigint {
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/** indexOf limited to t[from, to): an unbounded search per token would make long lines quadratic. */
function indexIn(t: string, c: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (t.charCodeAt(i) === c) return i;
  return -1;
}

function skipWs(t: string, i: number, end: number): number {
  while (i < end && isWs(t.charCodeAt(i))) i++;
  return i;
}
function tokenEnd(t: string, i: number, end: number): number {
  while (i < end && !isWs(t.charCodeAt(i))) i++;
  return i;
}

/** UTF-8 length of text, stopping early once it exceeds limit. */
function utf8LengthOver(text: string, limit: number): boolean {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
    if (n > limit) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The perf script sample header

/** What a header line says. `restStart` indexes the text after the event name's colon. */
export interface HeaderFields {
  comm?: string;
  pid?: number;
  tid?: number;
  cpu?: number;
  time?: string;
  period?: bigint;
  trigger: string;
  restStart: number;
}

/** Decimal text to a number, with "-0" read as 0. */
function toInt(s: string): number {
  const v = Number(s);
  return v === 0 ? 0 : v;
}

function allDigits(t: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) if (!isDigit(t.charCodeAt(i))) return false;
  return true;
}

/** `-?\d{1,10}`: perf prints pid and tid with %d, and -1 for samples without a task. */
function isSmallInt(t: string, from: number, to: number): boolean {
  if (from < to && t.charCodeAt(from) === MINUS) from++;
  return to - from >= 1 && to - from <= 10 && allDigits(t, from, to);
}

/** `pid/tid` or a lone number (perf's default output prints the TID there, not the PID). */
function isIdsToken(t: string, s: number, e: number): boolean {
  const slash = indexIn(t, 0x2f, s, e);
  if (slash >= 0) return isSmallInt(t, s, slash) && isSmallInt(t, slash + 1, e);
  return isSmallInt(t, s, e);
}
/** `[001]`: perf prints the CPU with [%03d]. */
function isCpuToken(t: string, s: number, e: number): boolean {
  return e - s >= 3 && e - s <= 12 && t.charCodeAt(s) === 0x5b && t.charCodeAt(e - 1) === 0x5d && allDigits(t, s + 1, e - 1);
}
/** `30143.481555:` (%5lu.%06lu, or %09llu with --ns). */
function isTimeToken(t: string, s: number, e: number): boolean {
  if (e - s < 4 || e - s > 42 || t.charCodeAt(e - 1) !== COLON) return false;
  const dot = indexIn(t, DOT, s, e - 1);
  if (dot < 0) return false;
  return dot - s <= 20 && allDigits(t, s, dot) && e - 1 - (dot + 1) <= 20 && allDigits(t, dot + 1, e - 1);
}
/** The sample period (%10lu): a u64. */
function isPeriodToken(t: string, s: number, e: number): boolean {
  if (e - s > 20 || !allDigits(t, s, e)) return false;
  return e - s < 20 || t.slice(s, e) <= U64_MAX_DEC;
}
/** The event name with its colon: `cycles:`, `cycles:u:`, `cpu-clock:uhH:`, `sched:sched_switch:`. */
function isEventToken(t: string, s: number, e: number): boolean {
  return e - s >= 2 && t.charCodeAt(e - 1) === COLON;
}

// Optional header fields after the comm, in perf's print order; the event name follows them.
const IDS = 8, CPU = 4, TIME = 2, PERIOD = 1;

/**
 * Parses a perf script sample header, `comm pid/tid [cpu] time: period event:` with each of pid/tid,
 * [cpu], time and period optional. The comm may contain spaces (`V8 WorkerThread`) and is padded
 * with leading spaces when perf prints it with %16s, so it is found from its right end: the comm is
 * everything before the first token from which the rest of the line reads as a header tail.
 * Within a tail, optional fields are taken greedily with backtracking (16 combinations at most).
 * Returns undefined when no split of the line is a header.
 */
export function parseHeaderLine(line: string): HeaderFields | undefined {
  const starts: number[] = [];
  const ends: number[] = [];
  const len = line.length;
  let i = 0;
  while (true) {
    i = skipWs(line, i, len);
    if (i >= len) break;
    const e = tokenEnd(line, i, len);
    starts.push(i);
    ends.push(e);
    i = e;
  }
  const n = starts.length;
  for (let p = 0; p < n; p++) {
    for (let mask = 15; mask >= 0; mask--) {
      let k = p;
      let ok = true;
      let ids = -1, cpu = -1, time = -1, period = -1;
      if (mask & IDS) {
        if (k < n && isIdsToken(line, starts[k]!, ends[k]!)) ids = k++;
        else ok = false;
      }
      if (ok && mask & CPU) {
        if (k < n && isCpuToken(line, starts[k]!, ends[k]!)) cpu = k++;
        else ok = false;
      }
      if (ok && mask & TIME) {
        if (k < n && isTimeToken(line, starts[k]!, ends[k]!)) time = k++;
        else ok = false;
      }
      if (ok && mask & PERIOD) {
        if (k < n && isPeriodToken(line, starts[k]!, ends[k]!)) period = k++;
        else ok = false;
      }
      if (!ok || k >= n || !isEventToken(line, starts[k]!, ends[k]!)) continue;
      const h: HeaderFields = { trigger: line.slice(starts[k]!, ends[k]! - 1), restStart: ends[k]! };
      if (p > 0) h.comm = line.slice(starts[0]!, ends[p - 1]!);
      if (ids >= 0) {
        const tok = line.slice(starts[ids]!, ends[ids]!);
        const slash = tok.indexOf('/');
        if (slash >= 0) {
          h.pid = toInt(tok.slice(0, slash));
          h.tid = toInt(tok.slice(slash + 1));
        } else h.tid = toInt(tok);
      }
      if (cpu >= 0) h.cpu = Number(line.slice(starts[cpu]! + 1, ends[cpu]! - 1));
      if (time >= 0) h.time = line.slice(starts[time]!, ends[time]! - 1);
      if (period >= 0) h.period = BigInt(line.slice(starts[period]!, ends[period]!));
      return h;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Callchain lines

/** A parsed callchain line, before flags. */
export interface FrameText {
  addr: bigint;
  sym?: string;
  dso?: string;
}

/**
 * Parses `<addr> <sym> (<dso>)` in t[from, end) (from at the address, end after the last non-blank).
 * perf prints " " + sym + " (" + dso + ")" after the address; the symbol may itself contain spaces
 * and parentheses (C++ and Java signatures), so the dso is the last parenthesised group, matched
 * from the right, and it must be preceded by whitespace (`foo(int)` alone is a symbol). An empty
 * symbol (`7f1e2215d058  (/lib/x.so)`) is absent. Returns undefined when the address is not 1–16
 * hex digits.
 */
export function parseFrameText(t: string, from: number, end: number): FrameText | undefined {
  const ae = tokenEnd(t, from, end);
  if (!hex.read(t, from, ae)) return undefined;
  const f: FrameText = { addr: bigOfHalves(hex.hi, hex.lo) };
  if (ae >= end) return f;
  const r = ae + 1; // exactly one separator, as perf prints it
  let symEnd = end;
  if (t.charCodeAt(end - 1) === RPAREN) {
    let depth = 0;
    let k = end - 1;
    for (; k >= r; k--) {
      const c = t.charCodeAt(k);
      if (c === RPAREN) depth++;
      else if (c === LPAREN && --depth === 0) break;
    }
    if (k >= r && (k === r || isWs(t.charCodeAt(k - 1)))) {
      f.dso = t.slice(k + 1, end - 1);
      symEnd = k === r ? r : k - 1;
    }
  }
  if (symEnd > r) f.sym = t.slice(r, symEnd);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Extension-line tokens: bare words, or JSON string literals for values with blanks or controls

/** Splits t[from, end) into tokens; a `"` inside a token starts a JSON string that may hold blanks. */
function extTokens(t: string, from: number, end: number): string[] {
  const out: string[] = [];
  let i = from;
  while (true) {
    i = skipWs(t, i, end);
    if (i >= end) return out;
    const s = i;
    while (i < end) {
      const c = t.charCodeAt(i);
      if (isWs(c)) break;
      if (c === QUOTE) {
        i++;
        while (i < end) {
          const d = t.charCodeAt(i);
          if (d === BACKSLASH) i += 2;
          else if (d === QUOTE) break;
          else i++;
        }
        if (i > end) i = end;
      }
      i++;
    }
    if (i > end) i = end;
    out.push(t.slice(s, i));
  }
}

function isBareSafe(s: string): boolean {
  if (s.length === 0 || s === '-') return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= SPACE || c === 0x7f || c === QUOTE) return false;
  }
  return true;
}

/** A string value as a bare word when that reads back unchanged, else as a JSON string literal. */
export function encodeTextValue(s: string): string {
  return isBareSafe(s) ? s : JSON.stringify(s);
}

// ---------------------------------------------------------------------------------------------
// Parser state for one sample block

interface WindowBuilder {
  start: bigint;
  startHi: number;
  startLo: number;
  /** Declared length (`.window <start> <end>`), or -1 when the window ends at its last line. */
  declared: number;
  /** Bytes the window may hold: its declared length, or the room from its start to its stack's end. */
  limit: number;
  buf: Uint8Array;
  view: DataView;
  fill: number;
  line: number;
}

interface StackBuilder {
  type: StackType;
  begin: bigint;
  end: bigint;
  windows: WindowBuilder[];
}

const HEADER_OVERRIDES = ['comm', 'pid', 'tid', 'cpu', 'time', 'period', 'trigger'] as const;
type HeaderOverride = (typeof HEADER_OVERRIDES)[number];

class SampleBlock {
  readonly headerLine: number;
  readonly header: HeaderFields;
  readonly callchain: FrameText[] = [];
  /** The header carried the sample's only frame, or a register set followed: perf prints no more. */
  closed = false;
  callchainEmpty = false;
  host: string | undefined;
  hasHost = false;
  kernel: string | undefined;
  hasKernel = false;
  readonly overrides = new Map<HeaderOverride, unknown>();
  readonly symOverrides = new Map<number, string | undefined>();
  readonly dsoOverrides = new Map<number, string | undefined>();
  readonly flagOverrides = new Map<number, CallchainFlag[]>();
  regs: Regs | undefined;
  readonly regsFromDot = new Set<string>();
  abiSeen = false;
  readonly stacks: StackBuilder[] = [];
  window: WindowBuilder | undefined;
  declaredBytes = 0;
  truth: TruthFrame[] | undefined;
  truthEmpty = false;

  constructor(headerLine: number, header: HeaderFields) {
    this.headerLine = headerLine;
    this.header = header;
  }
}

/** perf's x86 register names (tools/perf/arch/x86/util/perf_regs.c) that are pt_regs fields. */
const ABI_REG_NAMES: ReadonlyMap<string, PtRegsField> = new Map<string, PtRegsField>([
  ['AX', 'ax'], ['BX', 'bx'], ['CX', 'cx'], ['DX', 'dx'], ['SI', 'si'], ['DI', 'di'], ['BP', 'bp'],
  ['SP', 'sp'], ['IP', 'ip'], ['FLAGS', 'flags'], ['CS', 'cs'], ['SS', 'ss'], ['R8', 'r8'],
  ['R9', 'r9'], ['R10', 'r10'], ['R11', 'r11'], ['R12', 'r12'], ['R13', 'r13'], ['R14', 'r14'], ['R15', 'r15'],
]);
const PT_REGS_SET: ReadonlySet<string> = new Set(PT_REGS_FIELDS);
const STACK_TYPE_SET: ReadonlySet<string> = new Set(STACK_TYPES);
const FLAG_SET: ReadonlySet<string> = new Set(CALLCHAIN_FLAGS);
const KIND_SET: ReadonlySet<string> = new Set(TRUTH_KINDS);
const TOLERANCE_SET: ReadonlySet<string> = new Set(TOLERANCES);

function startsWithAt(t: string, i: number, end: number, s: string): boolean {
  return end - i >= s.length && t.startsWith(s, i);
}

/** The line is a register dump (`perf script -F +iregs`): ` ABI:2    AX:0x...`. */
function isAbiAt(t: string, i: number, end: number): boolean {
  return startsWithAt(t, i, end, 'ABI:');
}

/** The first token is all hex digits: a callchain line's address, as perf prints it. */
function firstTokenIsHex(t: string, i: number, end: number): boolean {
  const s = i;
  while (i < end && hexVal(t.charCodeAt(i)) >= 0) i++;
  return i > s && (i === end || isWs(t.charCodeAt(i)));
}

class TextDumpParser {
  private readonly t: string;
  private readonly file: string | undefined;
  private readonly sourceFile: string;
  readonly samples: Sample[] = [];
  readonly rejected: Rejection[] = [];
  private block: SampleBlock | undefined;
  private blockIndex = -1;
  /** After an error: skip the rest of the block (to a blank line or the next header). */
  private skipping = false;
  private lineNo = 0;
  private readonly dsoIntern = new Map<string, string>();

  constructor(text: string, file: string | undefined) {
    this.t = text;
    this.file = file;
    this.sourceFile = file ?? SOURCE_FILE_DEFAULT;
  }

  private err(reason: RejectReason, field: string, msg: string, line = this.lineNo): DumpError {
    return new DumpError(reason, msg, this.file !== undefined ? { file: this.file, line, field } : { line, field });
  }

  run(): void {
    const t = this.t;
    const len = t.length;
    let pos = 0;
    while (pos < len) {
      let nl = t.indexOf('\n', pos);
      const terminated = nl >= 0;
      if (!terminated) nl = len;
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
      const b = this.block;
      // Hot path: the stack-memory lines of a sample being read.
      if (b !== undefined && i < end && t.charCodeAt(i) === DOT && terminated) {
        try {
          if (t.charCodeAt(i + 1) === 0x6d && t.charCodeAt(i + 2) === 0x65 && t.charCodeAt(i + 3) === 0x6d && i + 4 < end && isWs(t.charCodeAt(i + 4))) {
            this.memLine(b, i + 5, end);
          } else this.extLine(b, i, end);
        } catch (e) {
          this.failBlock(e, false);
        }
        continue;
      }
      if (i === end) {
        // A blank line ends the sample (perf separates samples with one).
        if (b !== undefined) this.finishBlock(false);
        this.skipping = false;
        continue;
      }
      // perf --header lines, and our own first line: comments, only at the start of a line.
      if (t.charCodeAt(ls) === HASH) continue;
      try {
        this.contentLine(ls, i, end, terminated);
      } catch (e) {
        this.failBlock(e, !terminated);
      }
    }
    if (this.block !== undefined) this.finishBlock(true);
  }

  private contentLine(ls: number, i: number, end: number, terminated: boolean): void {
    const t = this.t;
    if (this.skipping) {
      // Resynchronise on a line that can only be a header: perf prints single-line samples, and
      // samples ending in a register line, without a blank line between them.
      if (t.charCodeAt(ls) === TAB || t.charCodeAt(i) === DOT || isAbiAt(t, i, end) || firstTokenIsHex(t, i, end)) return;
      if (end - ls > MAX_HEADER_CHARS) return;
      const h = parseHeaderLine(t.slice(ls, end));
      if (h === undefined) return;
      this.skipping = false;
      this.startBlock(ls, end, h, terminated);
      return;
    }
    const b = this.block;
    if (b === undefined) {
      if (end - ls > MAX_HEADER_CHARS) {
        // Hostile or binary input (a decompressed run of one byte): refused before any parsing.
        throw this.err('bad_header', 'header', `a line of ${end - ls} characters where a sample header (at most ${MAX_HEADER_CHARS}) belongs: not a sample header`);
      }
      const h = parseHeaderLine(t.slice(ls, end));
      if (h === undefined) {
        if (!terminated) throw this.err('truncated', 'header', 'the input ends inside a sample header');
        throw this.err('bad_header', 'header', `not a sample header (expected 'comm pid/tid [cpu] time: period event:'): ${clip(t.slice(ls, end))}`);
      }
      this.startBlock(ls, end, h, terminated);
      return;
    }
    const c = t.charCodeAt(i);
    if (c === DOT) {
      if (!terminated) throw this.err('truncated', 'eof', 'the input ends inside an extension line');
      this.extLine(b, i, end);
      return;
    }
    if (isAbiAt(t, i, end)) {
      if (!terminated) throw this.err('truncated', 'regs', 'the input ends inside a register line');
      this.abiRegs(b, i, end);
      // perf prints iregs after the callchain and then only the final "\n": no blank line follows.
      b.closed = true;
      return;
    }
    if (b.closed) {
      this.finishBlock(false);
      this.contentLine(ls, i, end, terminated);
      return;
    }
    if (t.charCodeAt(ls) === TAB || firstTokenIsHex(t, i, end)) {
      this.callchainLine(b, i, end, terminated);
      return;
    }
    // Not a frame: a header that follows without a blank line (single-line samples), or garbage.
    const h = parseHeaderLine(t.slice(ls, end));
    if (h !== undefined) {
      this.finishBlock(false);
      this.startBlock(ls, end, h, terminated);
      return;
    }
    throw this.err('bad_field', 'callchain', `not a callchain line ('<addr> <sym> (<dso>)'): ${clip(t.slice(i, end))}`);
  }

  private startBlock(ls: number, end: number, h: HeaderFields, terminated: boolean): void {
    this.blockIndex++;
    const b = new SampleBlock(this.lineNo, h);
    this.block = b;
    const line = this.t.slice(ls, end);
    const rs = skipWs(line, h.restStart, line.length);
    if (rs >= line.length) return;
    // Without a callchain perf prints the sample's ip on the header line (single-line samples),
    // and -F +iregs appends ` ABI:2 AX:0x...` after it.
    let frameEnd = line.length;
    let abi = -1;
    if (isAbiAt(line, rs, line.length)) abi = rs;
    else {
      let k = line.indexOf('ABI:', rs);
      while (k >= 0 && !isWs(line.charCodeAt(k - 1))) k = line.indexOf('ABI:', k + 4);
      if (k >= 0) abi = k;
    }
    if (abi >= 0) {
      frameEnd = abi;
      while (frameEnd > rs && isWs(line.charCodeAt(frameEnd - 1))) frameEnd--;
    }
    if (frameEnd > rs && firstTokenIsHex(line, rs, frameEnd)) {
      if (!terminated && abi < 0 && line.charCodeAt(frameEnd - 1) !== RPAREN) {
        throw this.err('truncated', 'callchain', 'the input ends inside the sample header');
      }
      const f = parseFrameText(line, rs, frameEnd);
      // A first token wider than 64 bits is not an ip: treated as trace payload, as below.
      if (f !== undefined) {
        this.pushFrame(b, f);
        b.closed = true;
      }
    }
    // Anything else after the event (tracepoint payloads, -F flags/addr) is not part of the model.
    if (abi >= 0) {
      if (!terminated) throw this.err('truncated', 'regs', 'the input ends inside a register list');
      this.abiRegs(b, abi, line.length, line);
      b.closed = true;
    }
  }

  private pushFrame(b: SampleBlock, f: FrameText): void {
    if (f.dso !== undefined) {
      const d = this.dsoIntern.get(f.dso);
      if (d !== undefined) f.dso = d;
      else if (this.dsoIntern.size < 4096) this.dsoIntern.set(f.dso, f.dso);
    }
    b.callchain.push(f);
  }

  private callchainLine(b: SampleBlock, i: number, end: number, terminated: boolean): void {
    const t = this.t;
    // A cut inside a line would leave a plausible shorter symbol; perf's lines end with ')'.
    if (!terminated && t.charCodeAt(end - 1) !== RPAREN) {
      throw this.err('truncated', 'callchain', 'the input ends inside a callchain line');
    }
    const ae = tokenEnd(t, i, end);
    const f = parseFrameText(t, i, end);
    if (f === undefined) {
      if (firstTokenIsHex(t, i, end)) throw this.err('bad_hex', 'callchain', `callchain address '${clip(t.slice(i, ae))}' is wider than 64 bits`);
      throw this.err('bad_field', 'callchain', `not a callchain line ('<addr> <sym> (<dso>)'): ${clip(t.slice(i, end))}`);
    }
    this.pushFrame(b, f);
  }

  /** perf's register dump: `ABI:2    AX:0x...  BX:0x... IP:0x...`; iregs then uregs on one line. */
  private abiRegs(b: SampleBlock, i: number, end: number, t: string = this.t): void {
    // With iregs and uregs both sampled, the first set is the interrupted (kernel) state.
    if (b.abiSeen) return;
    b.abiSeen = true;
    let j = tokenEnd(t, i, end); // skip "ABI:n"
    while (true) {
      j = skipWs(t, j, end);
      if (j >= end) break;
      const k = tokenEnd(t, j, end);
      if (isAbiAt(t, j, k)) break; // the uregs set starts
      const colon = indexIn(t, COLON, j, k);
      if (colon > j) {
        const field = ABI_REG_NAMES.get(t.slice(j, colon));
        if (field !== undefined) {
          let v = colon + 1;
          if (t.charCodeAt(v) === 0x30 && (t.charCodeAt(v + 1) | 0x20) === 0x78) v += 2;
          if (!hex.read(t, v, k)) throw this.err('bad_hex', `regs.${field}`, `register ${t.slice(j, colon)} value '${clip(t.slice(colon + 1, k))}' is not a 64-bit hex number`);
          const regs = (b.regs ??= {});
          if (!b.regsFromDot.has(field)) regs[field] = bigOfHalves(hex.hi, hex.lo);
        }
        // perf also prints DS, ES, FS, GS, XMM*, SSP...: not part of pt_regs as sampled, ignored.
      }
      j = k;
    }
  }

  // -- extension lines ----------------------------------------------------------------------

  private extLine(b: SampleBlock, i: number, end: number): void {
    const t = this.t;
    const ke = tokenEnd(t, i + 1, end);
    const kw = t.slice(i + 1, ke);
    switch (kw) {
      case 'mem':
        this.memLine(b, ke, end);
        return;
      case 'bytes':
        this.bytesLine(b, ke, end);
        return;
      case 'window':
        this.windowLine(b, ke, end);
        return;
      case 'stack':
        this.stackLine(b, ke, end);
        return;
      case 'regs':
        this.regsLine(b, ke, end);
        return;
      case 'truth':
        this.truthLine(b, ke, end);
        return;
    }
    const toks = extTokens(t, ke, end);
    switch (kw) {
      case 'host':
      case 'kernel': {
        if (toks.length !== 1) throw this.err('bad_field', kw, `.${kw} takes one value`);
        if (kw === 'host' ? b.hasHost : b.hasKernel) throw this.err('bad_field', kw, `.${kw} appears twice`);
        const v = this.decodeString(toks[0]!, kw);
        if (kw === 'host') {
          b.hasHost = true;
          b.host = v;
        } else {
          b.hasKernel = true;
          b.kernel = v;
        }
        return;
      }
      case 'comm':
      case 'pid':
      case 'tid':
      case 'cpu':
      case 'time':
      case 'period':
      case 'trigger':
        this.headerOverride(b, kw, toks);
        return;
      case 'callchain':
        if (toks.length !== 1 || toks[0] !== 'empty') throw this.err('bad_field', 'callchain', `.callchain takes the word 'empty'`);
        if (b.callchainEmpty) throw this.err('bad_field', 'callchain', '.callchain appears twice');
        b.callchainEmpty = true;
        return;
      case 'sym':
      case 'dso':
      case 'flags':
        this.entryOverride(b, kw, toks);
        return;
      default:
        throw this.err('bad_field', kw === '' ? 'keyword' : kw, `unknown extension line '.${clip(kw)}'`);
    }
  }

  private decodeString(tok: string, field: string): string {
    if (tok.charCodeAt(0) !== QUOTE) return tok;
    let v: unknown;
    try {
      v = JSON.parse(tok);
    } catch {
      throw this.err('bad_field', field, `malformed string literal ${clip(tok)}`);
    }
    if (typeof v !== 'string') throw this.err('bad_field', field, `malformed string literal ${clip(tok)}`);
    return v;
  }

  private decodeInt(tok: string, field: string): number {
    let s = 0;
    if (tok.charCodeAt(0) === MINUS) s = 1;
    const v = toInt(tok);
    if (tok.length - s < 1 || tok.length - s > 16 || !allDigits(tok, s, tok.length) || !Number.isSafeInteger(v)) {
      throw this.err('bad_field', field, `'${clip(tok)}' is not an integer`);
    }
    return v;
  }

  private headerOverride(b: SampleBlock, kw: HeaderOverride, toks: string[]): void {
    if (toks.length !== 1) throw this.err('bad_field', kw, `.${kw} takes one value`);
    if (b.overrides.has(kw)) throw this.err('bad_field', kw, `.${kw} appears twice`);
    const tok = toks[0]!;
    if (tok === '-') {
      if (kw === 'trigger') throw this.err('bad_field', kw, 'a sample always has a trigger');
      b.overrides.set(kw, undefined);
      return;
    }
    switch (kw) {
      case 'comm':
      case 'time':
      case 'trigger':
        b.overrides.set(kw, this.decodeString(tok, kw));
        return;
      case 'period':
        if (!isPeriodToken(tok, 0, tok.length)) throw this.err('bad_field', kw, `'${clip(tok)}' is not a 64-bit decimal period`);
        b.overrides.set(kw, BigInt(tok));
        return;
      default:
        b.overrides.set(kw, this.decodeInt(tok, kw));
    }
  }

  private entryOverride(b: SampleBlock, kw: 'sym' | 'dso' | 'flags', toks: string[]): void {
    if (toks.length !== 2) throw this.err('bad_field', kw, `.${kw} takes a callchain index and a value`);
    const idx = toks[0]!;
    if (!allDigits(idx, 0, idx.length) || idx.length > 9) throw this.err('bad_field', kw, `'${clip(idx)}' is not a callchain index`);
    const n = Number(idx);
    const map = kw === 'sym' ? b.symOverrides : kw === 'dso' ? b.dsoOverrides : b.flagOverrides;
    if (map.has(n)) throw this.err('bad_field', kw, `.${kw} ${n} appears twice`);
    const v = toks[1]!;
    if (kw === 'flags') {
      const flags: CallchainFlag[] = [];
      if (v !== '-') {
        for (const f of v.split(',')) {
          if (!FLAG_SET.has(f)) throw this.err('bad_field', 'flags', `unknown callchain flag '${clip(f)}'`);
          flags.push(f as CallchainFlag);
        }
      }
      b.flagOverrides.set(n, flags);
    } else {
      (map as Map<number, string | undefined>).set(n, v === '-' ? undefined : this.decodeString(v, kw));
    }
  }

  /** `.regs ip=ffffffff81000000 sp=...`: any subset of the pt_regs fields, each at most once. */
  private regsLine(b: SampleBlock, i: number, end: number): void {
    const t = this.t;
    const regs = (b.regs ??= {});
    let j = i;
    while (true) {
      j = skipWs(t, j, end);
      if (j >= end) return;
      const k = tokenEnd(t, j, end);
      const eq = indexIn(t, 0x3d, j, k);
      if (eq < 0) throw this.err('bad_field', 'regs', `'${clip(t.slice(j, k))}' is not <field>=<hex>`);
      const name = t.slice(j, eq);
      if (!PT_REGS_SET.has(name)) throw this.err('bad_field', `regs.${clip(name)}`, `unknown pt_regs field '${clip(name)}'`);
      if (b.regsFromDot.has(name)) throw this.err('bad_field', `regs.${name}`, `register ${name} appears twice`);
      if (!hex.read(t, eq + 1, k)) throw this.err('bad_hex', `regs.${name}`, `register ${name} value '${clip(t.slice(eq + 1, k))}' is not 1-16 hex digits`);
      b.regsFromDot.add(name);
      regs[name as PtRegsField] = bigOfHalves(hex.hi, hex.lo);
      j = k;
    }
  }

  private hexToken(toks: string[], idx: number, field: string, what: string): bigint {
    const tok = toks[idx];
    if (tok === undefined) throw this.err('bad_field', field, `missing ${what}`);
    if (!hex.read(tok, 0, tok.length)) throw this.err('bad_hex', field, `${what} '${clip(tok)}' is not 1-16 hex digits`);
    return bigOfHalves(hex.hi, hex.lo);
  }

  /** `.stack <type> <begin> <end>` */
  private stackLine(b: SampleBlock, i: number, end: number): void {
    const toks = extTokens(this.t, i, end);
    if (toks.length !== 3) throw this.err('bad_field', 'stack', '.stack takes <type> <begin> <end>');
    const type = toks[0]!;
    if (!STACK_TYPE_SET.has(type)) throw this.err('bad_field', 'stack.type', `unknown stack type '${clip(type)}' (one of ${STACK_TYPES.join(', ')})`);
    const begin = this.hexToken(toks, 1, 'stack.begin', 'stack begin');
    const stEnd = this.hexToken(toks, 2, 'stack.end', 'stack end');
    // Checked here, not only in validateSample, because windows are allocated against these bounds.
    if (stEnd - begin > BigInt(MAX_STACK_SIZE)) throw this.err('oversized', 'stack.end', `stack ${type} is ${stEnd - begin} bytes; the largest accepted is ${MAX_STACK_SIZE}`);
    b.stacks.push({ type: type as StackType, begin, end: stEnd, windows: [] });
    b.window = undefined;
  }

  /** `.window <start> [<end>]`: belongs to the stack whose bounds contain start (the latest first). */
  private windowLine(b: SampleBlock, i: number, end: number): void {
    const toks = extTokens(this.t, i, end);
    if (toks.length < 1 || toks.length > 2) throw this.err('bad_field', 'window', '.window takes <start> [<end>]');
    const start = this.hexToken(toks, 0, 'window.start', 'window start');
    const startHi = hex.hi, startLo = hex.lo;
    if (b.stacks.length === 0) throw this.err('bad_field', 'window', '.window before any .stack');
    let st = b.stacks[b.stacks.length - 1]!;
    if (!windowInside(st, start)) {
      const other = b.stacks.find((s) => windowInside(s, start));
      if (other === undefined) throw this.err('window_out_of_bounds', 'window.start', `window at ${start.toString(16)} lies on none of the sample's stacks`);
      st = other;
    }
    const room = Number(st.end - start);
    let declared = -1;
    if (toks.length === 2) {
      const wEnd = this.hexToken(toks, 1, 'window.end', 'window end');
      if (wEnd < start) throw this.err('bad_field', 'window.end', `window end ${wEnd.toString(16)} is below its start ${start.toString(16)}`);
      if (wEnd > st.end) throw this.err('window_out_of_bounds', 'window.end', `window ${start.toString(16)}-${wEnd.toString(16)} runs past the end of its ${st.type} stack (${st.end.toString(16)})`);
      declared = Number(wEnd - start);
      b.declaredBytes += declared;
      if (b.declaredBytes > MAX_SAMPLE_BYTES) throw this.err('oversized', 'window.end', `sample declares over ${MAX_SAMPLE_BYTES} bytes of stack windows`);
    }
    const buf = new Uint8Array(declared > 0 ? declared : 0);
    const w: WindowBuilder = {
      start, startHi, startLo, declared, limit: declared >= 0 ? declared : room,
      buf, view: new DataView(buf.buffer), fill: 0, line: this.lineNo,
    };
    st.windows.push(w);
    b.window = w;
  }

  /** Checks that a `.mem`/`.bytes` address continues the current window and makes room for n bytes. */
  private continueWindow(b: SampleBlock, t: string, from: number, to: number, kw: string, n: number): WindowBuilder {
    const w = b.window;
    if (w === undefined) throw this.err('bad_field', kw, `.${kw} before any .window`);
    if (!hex.read(t, from, to)) throw this.err('bad_hex', `${kw}.addr`, `address '${clip(t.slice(from, to))}' is not 1-16 hex digits`);
    let lo = w.startLo + w.fill;
    let hi = w.startHi;
    if (lo >= 4294967296) {
      lo -= 4294967296;
      hi = (hi + 1) >>> 0;
    }
    if (hex.lo !== lo || hex.hi !== hi) {
      throw this.err('bad_field', `${kw}.addr`, `.${kw} at ${t.slice(from, to)} does not continue the window: expected ${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')}`);
    }
    this.reserve(b, w, n, kw);
    return w;
  }

  private reserve(b: SampleBlock, w: WindowBuilder, n: number, kw: string): void {
    const need = w.fill + n;
    if (need > w.limit) {
      if (w.declared >= 0) throw this.err('bad_field', `${kw}.addr`, `.${kw} runs past the window's declared end (${w.declared} bytes)`);
      throw this.err('window_out_of_bounds', `${kw}.addr`, `window at ${w.start.toString(16)} runs past the end of its stack`);
    }
    if (need > w.buf.length) {
      // Undeclared length: grow by doubling; bounded by the stack's room (at most MAX_STACK_SIZE).
      let cap = Math.max(256, w.buf.length * 2);
      while (cap < need) cap *= 2;
      if (cap > w.limit) cap = w.limit;
      b.declaredBytes += cap - w.buf.length;
      if (b.declaredBytes > MAX_SAMPLE_BYTES) throw this.err('oversized', kw, `sample carries over ${MAX_SAMPLE_BYTES} bytes of stack windows`);
      const nb = new Uint8Array(cap);
      nb.set(w.buf.subarray(0, w.fill));
      w.buf = nb;
      w.view = new DataView(nb.buffer);
    }
  }

  /** `.mem <addr> <w0> [<w1> <w2> <w3>]`: u64 words, 16 hex digits each, stored little-endian. */
  private memLine(b: SampleBlock, i: number, end: number): void {
    const t = this.t;
    const a = skipWs(t, i, end);
    const ae = tokenEnd(t, a, end);
    let j = skipWs(t, ae, end);
    if (j >= end) throw this.err('bad_field', 'mem', '.mem needs an address and 1-4 words');
    const w = this.continueWindow(b, t, a, ae, 'mem', 0);
    let words = 0;
    while (j < end) {
      const k = j + 16;
      if (k > end || (k < end && !isWs(t.charCodeAt(k)))) throw this.badWord(t, j, end);
      let hi = 0;
      let lo = 0;
      let bad = 0;
      for (let p = j; p < j + 8; p++) {
        const d = HEX_DIGITS[t.charCodeAt(p)]!;
        hi = (hi << 4) | d;
        bad |= d;
      }
      for (let p = j + 8; p < k; p++) {
        const d = HEX_DIGITS[t.charCodeAt(p)]!;
        lo = (lo << 4) | d;
        bad |= d;
      }
      if (bad < 0) throw this.badWord(t, j, end);
      if (++words > MEM_WORDS_PER_LINE) throw this.err('bad_field', 'mem', `.mem carries at most ${MEM_WORDS_PER_LINE} words`);
      if (w.fill + 8 > w.buf.length) this.reserve(b, w, 8, 'mem');
      // Memory is little-endian: the low half of the word comes first.
      w.view.setUint32(w.fill, lo >>> 0, true);
      w.view.setUint32(w.fill + 4, hi >>> 0, true);
      w.fill += 8;
      j = k;
      while (j < end && isWs(t.charCodeAt(j))) j++;
    }
  }

  private badWord(t: string, j: number, end: number): DumpError {
    return this.err('bad_hex', 'mem.word', `stack word '${clip(t.slice(j, tokenEnd(t, j, end)))}' is not 16 hex digits`);
  }

  /** `.bytes <addr> <hex bytes>`: the tail of a window whose length is not a multiple of 8. */
  private bytesLine(b: SampleBlock, i: number, end: number): void {
    const t = this.t;
    const a = skipWs(t, i, end);
    const ae = tokenEnd(t, a, end);
    const d = skipWs(t, ae, end);
    const de = tokenEnd(t, d, end);
    if (d >= end || de !== end) throw this.err('bad_field', 'bytes', '.bytes takes <addr> <hex bytes>');
    const n = de - d;
    if (n % 2 !== 0) throw this.err('bad_hex', 'bytes.data', 'byte string has an odd number of hex digits');
    const w = this.continueWindow(b, t, a, ae, 'bytes', n / 2);
    for (let p = d; p < de; p += 2) {
      const h = hexVal(t.charCodeAt(p));
      const l = hexVal(t.charCodeAt(p + 1));
      if (h < 0 || l < 0) throw this.err('bad_hex', 'bytes.data', `'${clip(t.slice(p, p + 2))}' is not a hex byte`);
      w.buf[w.fill++] = (h << 4) | l;
    }
  }

  /** `.truth <ip> <kind> [entry=<name>] [tolerated=<why>]`, or `.truth empty`. */
  private truthLine(b: SampleBlock, i: number, end: number): void {
    const toks = extTokens(this.t, i, end);
    if (toks.length === 1 && toks[0] === 'empty') {
      if (b.truthEmpty) throw this.err('bad_field', 'truth', '.truth empty appears twice');
      b.truthEmpty = true;
      return;
    }
    if (toks.length < 2) throw this.err('bad_field', 'truth', '.truth takes <ip> <kind> [entry=<name>] [tolerated=<why>]');
    const ip = this.hexToken(toks, 0, 'truth.ip', 'truth ip');
    const kind = toks[1]!;
    if (!KIND_SET.has(kind)) throw this.err('bad_field', 'truth.kind', `unknown frame kind '${clip(kind)}' (one of ${TRUTH_KINDS.join(', ')})`);
    const f: TruthFrame = { ip, kind: kind as FrameKind };
    for (let k = 2; k < toks.length; k++) {
      const tok = toks[k]!;
      const eq = tok.indexOf('=');
      const key = eq < 0 ? tok : tok.slice(0, eq);
      if (eq < 0 || (key !== 'entry' && key !== 'tolerated')) throw this.err('bad_field', 'truth', `unknown truth attribute '${clip(tok)}'`);
      if (f[key] !== undefined) throw this.err('bad_field', `truth.${key}`, `${key} appears twice`);
      const v = this.decodeString(tok.slice(eq + 1), `truth.${key}`);
      if (key === 'entry') f.entry = v;
      else {
        if (!TOLERANCE_SET.has(v)) throw this.err('bad_field', 'truth.tolerated', `unknown tolerance '${clip(v)}' (one of ${TOLERANCES.join(', ')})`);
        f.tolerated = v as Tolerance;
      }
    }
    (b.truth ??= []).push(f);
  }

  // -- block end ----------------------------------------------------------------------------

  private failBlock(e: unknown, truncatedLine: boolean): void {
    let de: DumpError;
    if (e instanceof DumpError) de = e;
    else de = this.err('bad_field', 'line', `internal parser error: ${e instanceof Error ? e.message : String(e)}`);
    if (truncatedLine && de.reason !== 'truncated') {
      de = new DumpError('truncated', `the input ends inside this line (${de.message})`, de.where);
    }
    // An error outside any block (a block whose first line is no header) is a sample of its own.
    if (this.block === undefined) this.blockIndex++;
    this.reject(de, this.blockIndex);
    this.block = undefined;
    this.skipping = true;
  }

  private finishBlock(atEof: boolean): void {
    const b = this.block!;
    this.block = undefined;
    try {
      const s = this.buildSample(b, atEof);
      validateSample(s, this.file !== undefined ? { file: this.file, line: b.headerLine } : { line: b.headerLine });
      this.samples.push(s);
    } catch (e) {
      let de: DumpError;
      if (e instanceof DumpError) de = e;
      else de = this.err('bad_field', 'sample', `internal parser error: ${e instanceof Error ? e.message : String(e)}`, b.headerLine);
      this.reject(de, this.blockIndex);
    }
  }

  private reject(e: DumpError, index: number): void {
    // Built again so that the message names the sample too.
    this.rejected.push(rejectionOf(new DumpError(e.reason, e.message, { ...e.where, sampleIndex: index }), index));
  }

  private buildSample(b: SampleBlock, atEof: boolean): Sample {
    const h = b.header;
    const ov = b.overrides;
    const s: Sample = { trigger: ov.has('trigger') ? (ov.get('trigger') as string) : h.trigger, stacks: [] };
    const comm = pick(ov, 'comm', h.comm);
    if (comm !== undefined) s.comm = comm;
    const pid = pick(ov, 'pid', h.pid);
    if (pid !== undefined) s.pid = pid;
    const tid = pick(ov, 'tid', h.tid);
    if (tid !== undefined) s.tid = tid;
    const cpu = pick(ov, 'cpu', h.cpu);
    if (cpu !== undefined) s.cpu = cpu;
    const time = pick(ov, 'time', h.time);
    if (time !== undefined) s.time = time;
    const period = pick(ov, 'period', h.period);
    if (period !== undefined) s.period = period;
    if (b.hasHost && b.host !== undefined) s.host = b.host;
    if (b.hasKernel && b.kernel !== undefined) s.kernel = b.kernel;
    if (b.regs !== undefined) s.regs = b.regs;

    const n = b.callchain.length;
    if (b.callchainEmpty && n > 0) throw this.err('bad_field', 'callchain', `.callchain empty, but the sample has ${n} callchain lines`, b.headerLine);
    for (const m of [b.symOverrides, b.dsoOverrides, b.flagOverrides]) {
      for (const idx of m.keys()) {
        if (idx >= n) throw this.err('bad_field', 'callchain', `an override names callchain entry ${idx}, but the sample has ${n}`, b.headerLine);
      }
    }
    if (n > 0 || b.callchainEmpty) {
      const cc: CallchainEntry[] = new Array(n);
      for (let k = 0; k < n; k++) {
        const f = b.callchain[k]!;
        const sym = b.symOverrides.has(k) ? b.symOverrides.get(k) : f.sym;
        const dso = b.dsoOverrides.has(k) ? b.dsoOverrides.get(k) : f.dso;
        const e: CallchainEntry = { addr: f.addr, flags: b.flagOverrides.get(k) ?? callchainFlags(f.addr, sym) };
        if (sym !== undefined) e.sym = sym;
        if (dso !== undefined) e.dso = dso;
        cc[k] = e;
      }
      s.callchain = cc;
    }

    for (const st of b.stacks) {
      const windows: StackWindow[] = [];
      for (const w of st.windows) {
        if (w.declared >= 0 && w.fill < w.declared) {
          // A cut at a line boundary inside a .mem run: only the declared end reveals it.
          if (atEof) throw this.err('truncated', 'window.end', `the input ends inside the window at ${w.start.toString(16)} (${w.fill} of ${w.declared} bytes)`, w.line);
          throw this.err('bad_field', 'window.end', `the window at ${w.start.toString(16)} has ${w.fill} of its declared ${w.declared} bytes`, w.line);
        }
        windows.push({ start: w.start, bytes: w.fill === w.buf.length ? w.buf : w.buf.slice(0, w.fill) });
      }
      const ss: SampleStack = { type: st.type, begin: st.begin, end: st.end, windows };
      s.stacks.push(ss);
    }

    if (b.truthEmpty && b.truth !== undefined) throw this.err('bad_field', 'truth', '.truth empty, but the sample has truth frames', b.headerLine);
    if (b.truth !== undefined || b.truthEmpty) s.truth = { frames: b.truth ?? [] };
    s.source = { file: this.sourceFile, line: b.headerLine };
    return s;
  }
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Parses a text dump (or plain `perf script` output). One bad sample never stops the others: it is
 * recorded in `rejected` with its index, line and field, and parsing resumes at the next sample.
 * Never throws for bad input.
 */
export function parseTextDump(text: string, opts: TextParseOptions = {}): ParseResult<Sample> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TEXT_BYTES;
  // A UTF-16 unit is 1–3 UTF-8 bytes, so the exact count is needed only near the limit.
  if (text.length > maxBytes || (text.length * 3 > maxBytes && utf8LengthOver(text, maxBytes))) {
    const where = opts.file !== undefined ? { file: opts.file } : {};
    const e = new DumpError('oversized', `input is over the ${maxBytes}-byte limit`, where);
    return { samples: [], rejected: [rejectionOf(e, 0)] };
  }
  const p = new TextDumpParser(text, opts.file);
  p.run();
  return { samples: p.samples, rejected: p.rejected };
}

// ---------------------------------------------------------------------------------------------
// Writer

// Module-level helpers, not closures: tsx's keepNames makes every named closure a defineProperty call.
function windowInside(s: StackBuilder, start: bigint): boolean {
  return start >= s.begin && start <= s.end && s.begin < s.end;
}

function pick<T>(ov: Map<HeaderOverride, unknown>, k: HeaderOverride, v: T | undefined): T | undefined {
  return ov.has(k) ? (ov.get(k) as T | undefined) : v;
}

const HEX2: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function checkU64(v: bigint, what: string): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new RangeError(`${what} ${String(v)} is not an unsigned 64-bit value`);
  return v;
}
function hex16(v: bigint, what: string): string {
  return checkU64(v, what).toString(16).padStart(16, '0');
}
function checkInt(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || Object.is(v, -0)) throw new RangeError(`${what} ${String(v)} is not an integer`);
  return v;
}

/** Replaces what would break the line structure (controls, including newlines) with '?'. */
function printable(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < SPACE || c === 0x7f) {
      out += s.slice(from, i) + '?';
      from = i + 1;
    }
  }
  return from === 0 ? s : out + s.slice(from);
}

/** The event name as one header token: no blanks, not a comment, never empty. */
function triggerToken(trigger: string): string {
  let s = printable(trigger).replace(/[ ]/g, '_');
  if (s.length === 0) s = '_';
  if (s.charCodeAt(0) === HASH) s = '_' + s.slice(1);
  return s + ':';
}

function headerLineFor(s: Sample): string {
  const parts: string[] = [];
  if (s.comm !== undefined && s.comm.length > 0) {
    let c = printable(s.comm);
    if (c.charCodeAt(0) === HASH) c = '?' + c.slice(1); // a leading '#' would make a comment line
    parts.push(c);
  }
  if (s.tid !== undefined) parts.push(s.pid !== undefined ? `${checkInt(s.pid, 'pid')}/${checkInt(s.tid, 'tid')}` : `${checkInt(s.tid, 'tid')}`);
  if (s.cpu !== undefined && checkInt(s.cpu, 'cpu') >= 0) parts.push(`[${String(s.cpu).padStart(3, '0')}]`);
  if (s.time !== undefined && /^\d{1,20}\.\d{1,20}$/.test(s.time)) parts.push(`${s.time}:`);
  if (s.period !== undefined) parts.push(checkU64(s.period, 'period').toString());
  parts.push(triggerToken(s.trigger));
  return parts.join(' ');
}

function sameHeader(h: HeaderFields, s: Sample, key: HeaderOverride): boolean {
  return h[key] === s[key];
}

function overrideValue(v: unknown): string {
  if (v === undefined) return '-';
  if (typeof v === 'string') return encodeTextValue(v);
  return String(v);
}

/** The writer's callchain line: perf's `\t%16x sym (dso)`. */
function callchainLineFor(e: CallchainEntry, what: string): string {
  let line = '\t' + checkU64(e.addr, what).toString(16).padStart(16, ' ');
  if (e.sym !== undefined || e.dso !== undefined) line += ' ' + (e.sym !== undefined ? printable(e.sym) : '');
  if (e.dso !== undefined) line += ' (' + printable(e.dso) + ')';
  return line;
}

function sameFlags(a: readonly CallchainFlag[], b: readonly CallchainFlag[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function trimLineEnd(line: string): number {
  let end = line.length;
  while (end > 0) {
    const c = line.charCodeAt(end - 1);
    if (c !== SPACE && c !== TAB && c !== CR) break;
    end--;
  }
  return end;
}

function memLines(out: string[], w: StackWindow, what: string): void {
  const bytes = w.bytes;
  const n = bytes.length;
  const startHi = Number(checkU64(w.start, what) >> 32n);
  const startLo = Number(w.start & 0xffffffffn);
  const full = n - (n % 8);
  let off = 0;
  const addrAt = (o: number): string => {
    let lo = startLo + o;
    let hi = startHi;
    if (lo >= 4294967296) {
      lo -= 4294967296;
      hi = (hi + 1) >>> 0;
    }
    return hex8(hi) + hex8(lo);
  };
  while (off < full) {
    let line = '\t.mem ' + addrAt(off);
    const stop = Math.min(full, off + 8 * MEM_WORDS_PER_LINE);
    for (; off < stop; off += 8) {
      line += ' ' + HEX2[bytes[off + 7]!]! + HEX2[bytes[off + 6]!]! + HEX2[bytes[off + 5]!]! + HEX2[bytes[off + 4]!]!
        + HEX2[bytes[off + 3]!]! + HEX2[bytes[off + 2]!]! + HEX2[bytes[off + 1]!]! + HEX2[bytes[off]!]!;
    }
    out.push(line);
  }
  if (off < n) {
    let line = '\t.bytes ' + addrAt(off) + ' ';
    for (; off < n; off++) line += HEX2[bytes[off]!]!;
    out.push(line);
  }
}

/**
 * One sample as a text block (no blank line around it). Fields perf's header cannot hold exactly
 * (a comm with leading blanks, a pid without a tid, ...) are carried by extension lines, so the
 * block always parses back to an equal sample. Throws RangeError for values outside the model's
 * domain: a 64-bit field outside [0, 2^64), a pid/tid/cpu that is not a safe integer.
 */
export function formatTextSample(s: Sample): string {
  const out: string[] = [];
  let header = headerLineFor(s);
  let h = parseHeaderLine(header);
  // The header must carry nothing after the event (no frame, no payload); else the bare event.
  if (h === undefined || h.restStart !== header.length) {
    header = triggerToken(s.trigger);
    h = parseHeaderLine(header)!;
  }
  out.push(header);

  const cc = s.callchain;
  const entryOv: string[] = [];
  if (cc !== undefined) {
    for (let k = 0; k < cc.length; k++) {
      const e = cc[k]!;
      const line = callchainLineFor(e, `callchain[${k}].addr`);
      out.push(line);
      const f = parseFrameText(line, skipWs(line, 0, line.length), trimLineEnd(line))!;
      if (f.sym !== e.sym) entryOv.push(`\t.sym ${k} ${e.sym === undefined ? '-' : encodeTextValue(e.sym)}`);
      if (f.dso !== e.dso) entryOv.push(`\t.dso ${k} ${e.dso === undefined ? '-' : encodeTextValue(e.dso)}`);
      if (!sameFlags(callchainFlags(e.addr, e.sym), e.flags)) entryOv.push(`\t.flags ${k} ${e.flags.length === 0 ? '-' : e.flags.join(',')}`);
    }
  }
  if (s.host !== undefined) out.push(`\t.host ${encodeTextValue(s.host)}`);
  if (s.kernel !== undefined) out.push(`\t.kernel ${encodeTextValue(s.kernel)}`);
  for (const key of HEADER_OVERRIDES) {
    if (!sameHeader(h, s, key)) {
      if (key === 'period' && s.period !== undefined) checkU64(s.period, 'period');
      if ((key === 'pid' || key === 'tid' || key === 'cpu') && s[key] !== undefined) checkInt(s[key], key);
      out.push(`\t.${key} ${overrideValue(s[key])}`);
    }
  }
  if (cc !== undefined && cc.length === 0) out.push('\t.callchain empty');
  for (const l of entryOv) out.push(l);

  if (s.regs !== undefined) {
    let line = '\t.regs';
    for (const f of PT_REGS_FIELDS) {
      const v = s.regs[f];
      if (v !== undefined) line += ` ${f}=${checkU64(v, `regs.${f}`).toString(16)}`;
    }
    out.push(line);
  }

  for (const st of s.stacks) {
    out.push(`\t.stack ${st.type} ${hex16(st.begin, 'stack.begin')} ${hex16(st.end, 'stack.end')}`);
    for (const w of st.windows) {
      out.push(`\t.window ${hex16(w.start, 'window.start')} ${hex16(w.start + BigInt(w.bytes.length), 'window.end')}`);
      memLines(out, w, 'window.start');
    }
  }

  if (s.truth !== undefined) {
    if (s.truth.frames.length === 0) out.push('\t.truth empty');
    for (const f of s.truth.frames) {
      let line = `\t.truth ${hex16(f.ip, 'truth.ip')} ${f.kind}`;
      if (f.entry !== undefined) line += ` entry=${encodeTextValue(f.entry)}`;
      if (f.tolerated !== undefined) line += ` tolerated=${f.tolerated}`;
      out.push(line);
    }
  }
  return out.join('\n') + '\n';
}

/** A whole dump: the magic comment, then the samples separated by blank lines. */
export function formatTextDump(samples: Sample[]): string {
  const parts: string[] = [TEXT_DUMP_MAGIC + '\n'];
  for (let k = 0; k < samples.length; k++) {
    if (k > 0) parts.push('\n');
    parts.push(formatTextSample(samples[k]!));
  }
  return parts.join('');
}
