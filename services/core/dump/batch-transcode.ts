// Dump text -> binary batch form (batch-form.ts) in one pass, without making a Sample: what the API
// runs on a text upload.
//
// The transcoder is exact by construction, as the validate-only scanner it replaced was: a fast
// path over the lines formatTextDump writes, with every check the parser and validateSample make on them; anything it
// has not proved (another keyword, a quoted value, a value it would reject, a huge number, an
// unterminated last line) sends the whole text to parseTextDump, whose result is encoded instead.
import { DEFAULT_MAX_TEXT_BYTES, MAX_HEADER_CHARS, parseHeaderLine, parseTextDump, type TextParseOptions } from './text.ts';
import { MAX_SAMPLE_BYTES, MAX_STACK_SIZE } from './validate.ts';
import { HEX_DIGITS } from './hex.ts';
import {
  HAS_A, HAS_B, KIND_INDEX, KIND_NAMES, REG_INDEX, REG_NAMES, STACK_NAMES, T_COMM, T_CPU, T_FRAME, T_HOST,
  T_KERNEL, T_PERIOD, T_PID, T_REGS, T_SOURCE, T_STACK, T_TID, T_TIME, T_TRIGGER, T_WINDOW, TOL_NAMES, TWO32,
  type BatchSampleInfo, type EncodedBatch,
} from './batch-form.ts';
import { beginRecord, encodeParsed, endRecord, Out, writeBatchHeader } from './batch-encode.ts';

const SAFE = 2 ** 53;

// ---------------------------------------------------------------------------------------------
// Text -> binary in one pass
//
// The fast path reads UTF-8 bytes, not the string: on V8 a byte loop over a Uint8Array runs about
// twice as fast as charCodeAt over the same text. A string input is encoded into a reused scratch
// buffer first (encodeInto, a bulk copy); when it is not pure ASCII, byte and string offsets no
// longer line up, so such inputs go to the parser. Byte inputs may hold UTF-8 anywhere: every byte
// the fast path interprets is ASCII, and tokens it copies out (host, kernel, entry, the header)
// are decoded as UTF-8 on their own, which equals the slice of the decoded whole because every
// token ends at an ASCII blank.

const TAB = 0x09, LF = 0x0a, SPACE = 0x20, CR = 0x0d, HASH = 0x23, DOT = 0x2e, QUOTE = 0x22, EQ = 0x3d;
const SOURCE_FILE_DEFAULT = '<text>';

/** Thrown inside the fast path: "not proved", the parser decides. Never escapes this module. */
class Unsure {}
const UNSURE = new Unsure();

const encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF, as Buffer#toString('utf8') does; invalid bytes become U+FFFD.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
let scratch = new Uint8Array(1 << 16);
// A long-lived process keeps what it reuses: 4 MiB holds a 500-sample batch several times over,
// and a bigger upload pays one allocation (zeroed pages, ~2 % of its parse) instead of pinning 16 MiB.
const SCRATCH_MAX = 4 * 1024 * 1024;

// The last hex number read (readHex), as 32-bit halves.
let HI = 0;
let LO = 0;

/** b[from, to) as 1-16 hex digits into HI:LO (the parser's HexReader rule). False when malformed. */
function readHex(b: Uint8Array, from: number, to: number): boolean {
  const n = to - from;
  if (n <= 0 || n > 16) return false;
  const hex = HEX_DIGITS;
  let hi = 0;
  let lo = 0;
  let badBits = 0;
  const split = n > 8 ? to - 8 : from;
  for (let i = from; i < split; i++) {
    const d = hex[b[i]!]!;
    hi = (hi << 4) | d;
    badBits |= d;
  }
  for (let i = split; i < to; i++) {
    const d = hex[b[i]!]!;
    lo = (lo << 4) | d;
    badBits |= d;
  }
  if (badBits < 0) return false;
  HI = hi >>> 0;
  LO = lo >>> 0;
  return true;
}

/** HI:LO as a signed 64-bit value, or Unsure when a double cannot hold it exactly. */
function signedHL(): number {
  const v = (HI | 0) * TWO32 + LO;
  if (v >= SAFE || v < -SAFE) throw UNSURE;
  return v;
}

/** A kernel-half address (negative signed form), where every stack lives: unsigned order = signed order. */
function kernelAddrHL(): number {
  const v = signedHL();
  if (v >= 0) throw UNSURE;
  return v;
}

/** b[at...] starts with the ASCII string s. */
function bytesAre(b: Uint8Array, at: number, s: string): boolean {
  for (let k = 0; k < s.length; k++) if (b[at + k] !== s.charCodeAt(k)) return false;
  return true;
}

/**
 * Finds a token among a closed list of ASCII names without making a string: an open-addressed
 * table keyed by length, first and last byte (a Map lookup cost more than the rest of a `.regs`
 * field), then the candidate compared byte by byte.
 */
class NameTable {
  /** Slot -> name index + 1 (0: empty), probed linearly. */
  private readonly slots = new Int16Array(NAME_SLOTS);
  private readonly keys = new Int32Array(NAME_SLOTS);
  private readonly bytes: Uint8Array[];
  constructor(names: readonly string[]) {
    if (names.length * 2 > NAME_SLOTS) throw new RangeError(`${names.length} names do not fit a name table`);
    this.bytes = names.map((n) => Uint8Array.from(n, (c) => c.charCodeAt(0)));
    names.forEach((n, i) => {
      const k = nameKey(n.length, n.charCodeAt(0), n.charCodeAt(n.length - 1));
      let h = nameSlot(k);
      while (this.slots[h] !== 0) h = (h + 1) & (NAME_SLOTS - 1);
      this.slots[h] = i + 1;
      this.keys[h] = k;
    });
  }
  /** Index of b[from, to) in the names, or -1. */
  find(b: Uint8Array, from: number, to: number): number {
    const n = to - from;
    if (n <= 0 || n > 0xff) return -1;
    const k = nameKey(n, b[from]!, b[to - 1]!);
    const slots = this.slots;
    for (let h = nameSlot(k); ; h = (h + 1) & (NAME_SLOTS - 1)) {
      const idx = slots[h]! - 1;
      if (idx < 0) return -1;
      if (this.keys[h] !== k) continue;
      const nb = this.bytes[idx]!;
      let q = 1;
      while (q < n && nb[q] === b[from + q]) q++;
      if (q >= n) return idx;
    }
  }
}
const NAME_SLOTS = 64;
function nameKey(n: number, first: number, last: number): number {
  return (n << 16) | (first << 8) | last;
}
function nameSlot(k: number): number {
  return (Math.imul(k, 0x9e3779b1) >>> 26) & (NAME_SLOTS - 1);
}
const REG_TABLE = new NameTable(REG_NAMES);
const STACK_TABLE = new NameTable(STACK_NAMES);
const KIND_TABLE = new NameTable(KIND_NAMES);
const TOL_TABLE = new NameTable(TOL_NAMES);

function isAscii(b: Uint8Array, from: number, to: number): boolean {
  let any = 0;
  for (let i = from; i < to; i++) any |= b[i]!;
  return any < 0x80;
}

// Kernel build ids repeat across a batch: the string for a token is kept, with its bytes, by a hash
// of the bytes and reused after a byte-by-byte check.
const tokCache: (string | undefined)[] = new Array<string | undefined>(256).fill(undefined);
const tokCacheBytes: Uint8Array[] = new Array<Uint8Array>(256).fill(new Uint8Array(0));

/** b[from, to) as a string (UTF-8). */
function tokenString(b: Uint8Array, from: number, to: number): string {
  const n = to - from;
  if (n > 64 || !isAscii(b, from, to)) return utf8.decode(b.subarray(from, to));
  let x = 0;
  for (let i = from; i < to; i++) x = (Math.imul(x, 31) + b[i]!) | 0;
  return cachedToken(b, from, to, x);
}

/** ASCII b[from, to) as a string, through the cache; x is tokenString's hash of the bytes. */
function cachedToken(b: Uint8Array, from: number, to: number, x: number): string {
  const n = to - from;
  if (n > 64) return tokenString(b, from, to);
  const slot = (x ^ (x >>> 8)) & 255;
  const cb = tokCacheBytes[slot]!;
  if (cb.length === n) {
    let k = 0;
    while (k < n && cb[k] === b[from + k]) k++;
    if (k === n) return tokCache[slot]!;
  }
  let s = '';
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i]!);
  tokCache[slot] = s;
  tokCacheBytes[slot] = b.slice(from, to);
  return s;
}

/** Set by putBare: the token was ASCII, and tokenString's hash of it. */
let BARE_ASCII = false;
let BARE_HASH = 0;
/** putBare copies this many bytes at most in its own loop; a longer token is written by putToken. */
const BARE_MAX = 256;

/**
 * The token at from (to the first byte <= SPACE) written as a string field, its end returned:
 * tok, putToken and tokenString's hash in one loop (sets QUOTED, BARE_ASCII, BARE_HASH).
 */
function putBare(o: Out, b: Uint8Array, from: number): number {
  o.room(4 + BARE_MAX);
  const at = o.n;
  const out = o.buf;
  let any = 0;
  let quote = false;
  let p = at + 4;
  let i = from;
  const stop = from + BARE_MAX;
  let c = b[i]!;
  let x = 0;
  while (c > SPACE && i < stop) {
    any |= c;
    if (c === QUOTE) quote = true;
    x = (Math.imul(x, 31) + c) | 0;
    out[p++] = c;
    c = b[++i]!;
  }
  if (c > SPACE) {
    // Longer than BARE_MAX: the plain way.
    while (b[i]! > SPACE) i++;
    putToken(o, b, from, i);
    BARE_ASCII = false;
    return i;
  }
  QUOTED = quote;
  const n = i - from;
  BARE_ASCII = any < 0x80;
  BARE_HASH = x;
  if (BARE_ASCII) {
    o.dv.setUint32(at, n * 2, true);
    o.n = p;
    return i;
  }
  const s = utf8.decode(b.subarray(from, i));
  o.str(s, 0, s.length);
  return i;
}

/** Set by putToken: the token held a double quote (a JSON string to the parser: not on the fast path). */
let QUOTED = false;

/** Writes b[from, to) as a string field: ASCII bytes are the narrow form as they are. */
function putToken(o: Out, b: Uint8Array, from: number, to: number): void {
  const n = to - from;
  o.room(4 + n);
  const at = o.n;
  const out = o.buf;
  let any = 0;
  let quote = false;
  let p = at + 4;
  // Copied and checked in one pass; UTF-8 (byte inputs only) is decoded and written again.
  for (let i = from; i < to; i++) {
    const c = b[i]!;
    any |= c;
    if (c === QUOTE) quote = true;
    out[p++] = c;
  }
  QUOTED = quote;
  if (any < 0x80) {
    o.dv.setUint32(at, n * 2, true);
    o.n = p;
    return;
  }
  const s = utf8.decode(b.subarray(from, to));
  o.str(s, 0, s.length);
}

// Two hex digits at once: PAIR[c0 | c1 << 8] is the byte "c0c1" spells, or -1. Loop iterations,
// not loads, are what a per-character scan pays for, so the 16-digit numbers that fill a dump
// (stack words, addresses) are read four characters per load and decoded two per lookup.
const PAIR = new Int16Array(65536).fill(-1);
for (let c0 = 0; c0 < 128; c0++) {
  for (let c1 = 0; c1 < 128; c1++) {
    const d0 = HEX_DIGITS[c0]!, d1 = HEX_DIGITS[c1]!;
    if (d0 >= 0 && d1 >= 0) PAIR[c0 | (c1 << 8)] = (d0 << 4) | d1;
  }
}
// The first four bytes of the hot keywords as little-endian u32s.
const KW_TRUT = 0x74757274, KW_WIND = 0x646e6977, KW_STAC = 0x63617473, KW_REGS = 0x73676572;
const KW_HOST = 0x74736f68, KW_KERN = 0x6e72656b;
/** "call" and "star" as little-endian u32s, and the kinds they start. */
const CALL4 = 0x6c6c6163, STAR4 = 0x72617473;
const CALL_K = KIND_INDEX.get('call')!, START_K = KIND_INDEX.get('start')!;
/** ".mem" as a little-endian u32. */
const DOT_MEM = 0x6d656d2e;
/** A full `.mem` line from its dot to its LF inclusive: 5 + 16 + 4 * 17 + 1. */
const MEM_LINE = 90;
/** Zero bytes after the text in the scratch copy: every scan stops at them, so no loop needs a bound. */
const PAD = 32;

interface FastStack {
  type: number;
  begin: number;
  end: number;
  /** [start, end) of each window with bytes, in order of appearance. */
  windows: number[];
}

class FastTranscode {
  readonly info: BatchSampleInfo[] = [];
  readonly o: Out;
  private readonly b: Uint8Array;
  private readonly dv: DataView;
  private readonly len: number;
  private readonly file: string;
  private open = false;
  private lineNo = 0;
  private index = 0;
  // The sample being read.
  private recAt = 0;
  private line = 0;
  private hasHost = false;
  private kernel: string | undefined = undefined;
  private hasKernel = false;
  private regsSeen = 0;
  private stacks: FastStack[] = [];
  private win: FastStack | undefined = undefined;
  private winStartHi = 0;
  private winStartLo = 0;
  private winDeclared = 0;
  private winFill = 0;
  /** Where the current window's bytes go in o.buf. */
  private winAt = 0;
  private declaredBytes = 0;

  /** b holds the text in [0, len) followed by PAD zero bytes. */
  constructor(b: Uint8Array, len: number, file: string) {
    this.b = b;
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.len = len;
    this.file = file;
    // Binary is about 0.42x the text for .mem-heavy dumps; room() grows it when needed.
    this.o = new Out((len >>> 1) + 256);
    writeBatchHeader(this.o, 0);
  }

  /** 16 hex digits at p into HI:LO; false when any is not a digit. */
  private hex16(p: number): boolean {
    const dv = this.dv;
    const pair = PAIR;
    const x0 = dv.getUint32(p, true), x1 = dv.getUint32(p + 4, true), x2 = dv.getUint32(p + 8, true), x3 = dv.getUint32(p + 12, true);
    const a0 = pair[x0 & 0xffff]!, a1 = pair[x0 >>> 16]!, a2 = pair[x1 & 0xffff]!, a3 = pair[x1 >>> 16]!;
    const a4 = pair[x2 & 0xffff]!, a5 = pair[x2 >>> 16]!, a6 = pair[x3 & 0xffff]!, a7 = pair[x3 >>> 16]!;
    if ((a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7) < 0) return false;
    HI = ((a0 << 24) | (a1 << 16) | (a2 << 8) | a3) >>> 0;
    LO = ((a4 << 24) | (a5 << 16) | (a6 << 8) | a7) >>> 0;
    return true;
  }

  /** After a token ending at p: p if a blank or LF follows; at a CR, the LF it trails to; else Unsure. */
  private sep(p: number): number {
    const b = this.b;
    const c = b[p]!;
    if (c === SPACE || c === TAB || c === LF) return p;
    if (c !== CR) throw UNSURE; // a control byte (or the end) inside what the parser reads as one token
    // A CR is part of a token unless only blanks and CRs follow it on the line (the parser trims those).
    let q = p + 1;
    for (;;) {
      const d = b[q]!;
      if (d === LF) return q;
      if (d !== SPACE && d !== TAB && d !== CR) throw UNSURE;
      q++;
    }
  }

  /** End of the token at p (p at a non-blank), checked by sep. */
  private tok(p: number): number {
    const b = this.b;
    while (b[p]! > SPACE) p++;
    return this.sep(p);
  }

  /** Skips blanks (and trailing CRs) from p: at the next token or at the LF. */
  private ws(p: number): number {
    const b = this.b;
    for (;;) {
      const c = b[p]!;
      if (c === SPACE || c === TAB) p++;
      else if (c === CR) return this.sep(p);
      else return p;
    }
  }

  /** The hex token at p into HI:LO; returns its end. Unsure when it is not 1-16 hex digits. */
  private hexTok(p: number): number {
    const b = this.b;
    const c = b[p + 16]!;
    if (c <= SPACE && this.hex16(p)) return this.sep(p + 16);
    const e = this.tok(p);
    if (e === p || !readHex(b, p, e)) throw UNSURE;
    return e;
  }

  /** The LF at p ends the line: the next line's start. */
  private eol(p: number): number {
    if (this.b[p] !== LF) throw UNSURE;
    return p + 1;
  }

  run(): void {
    const b = this.b;
    const len = this.len;
    let p = 0;
    while (p < len) {
      this.lineNo++;
      const ls = p;
      let i = p;
      for (;;) {
        const c = b[i]!;
        if (c !== SPACE && c !== TAB) break;
        i++;
      }
      const c = b[i]!;
      if (c === DOT && this.open) {
        // .mem first: it is most of every dump.
        if (this.dv.getUint32(i, true) === DOT_MEM) {
          const d = b[i + 4];
          if (d === SPACE) {
            p = this.memLines(i);
            continue;
          }
          if (d === TAB) {
            p = this.mem(i + 5);
            continue;
          }
        }
        p = this.dotLine(i);
        continue;
      }
      if (c === LF || c === CR) {
        const e = this.ws(i);
        if (b[e] !== LF) throw UNSURE;
        if (this.open) this.finish();
        p = e + 1;
        continue;
      }
      if (i >= len) throw UNSURE; // an unterminated last line: the parser's truncation rules
      if (b[ls] === HASH) {
        let e = i;
        while (b[e] !== LF && e < len) e++;
        if (e >= len) throw UNSURE;
        p = e + 1;
        continue;
      }
      // A content line: only a header that starts a block is on the fast path (callchain lines,
      // header lines without a blank line before them, garbage: the parser decides).
      if (this.open) throw UNSURE;
      p = this.header(ls, i);
    }
    if (this.open) this.finish();
    this.o.dv.setUint32(8, this.info.length, true);
  }

  private startBlock(): void {
    this.open = true;
    this.line = this.lineNo;
    this.hasHost = false;
    this.kernel = undefined;
    this.hasKernel = false;
    this.regsSeen = 0;
    this.stacks = [];
    this.win = undefined;
    this.declaredBytes = 0;
    this.recAt = beginRecord(this.o, this.index);
  }

  /** A header line from ls (first non-blank at i); returns the next line's start. */
  private header(ls: number, i: number): number {
    const r = this.quickHeader(i);
    const next = r >= 0 ? r : this.genericHeader(ls, i);
    // The parser refuses a header line over MAX_HEADER_CHARS (bad_header): that answer is its own.
    if (next - ls > MAX_HEADER_CHARS) throw UNSURE;
    return next;
  }

  /**
   * perf's usual header, `comm pid/tid [cpu] secs.frac: event:`, read in place; -1 when the line
   * has another shape. parseHeaderLine would find the same split: the comm has a byte no optional
   * field can contain (so no split starts at it), and the event token is no period, so the first
   * split it accepts is comm | ids cpu time | event.
   */
  private quickHeader(i: number): number {
    const b = this.b;
    const s0 = i;
    let e0 = s0;
    let plain = false; // a byte outside [0-9./:\-\[\]]: no ids, cpu, time, period or event token
    while (b[e0]! > SPACE) {
      const c = b[e0]!;
      if (!((c >= 0x30 && c <= 0x3a) || c === DOT || c === 0x2f || c === 0x2d || c === 0x5b || c === 0x5d)) plain = true;
      e0++;
    }
    if (!plain || b[e0 - 1] === 0x3a || (b[e0] !== SPACE && b[e0] !== TAB)) return -1;
    // pid/tid
    let p = e0;
    while (b[p] === SPACE || b[p] === TAB) p++;
    let pid = NaN;
    let tid = this.smallInt(p);
    if (tid === undefined) return -1;
    p = SMALL_END;
    if (b[p] === 0x2f) {
      pid = tid;
      tid = this.smallInt(p + 1);
      if (tid === undefined) return -1;
      p = SMALL_END;
    }
    if (b[p] !== SPACE && b[p] !== TAB) return -1;
    while (b[p] === SPACE || b[p] === TAB) p++;
    // [cpu]
    if (b[p] !== 0x5b) return -1;
    const cs = p + 1;
    let ce = cs;
    let cpu = 0;
    while (b[ce]! >= 0x30 && b[ce]! <= 0x39) cpu = cpu * 10 + (b[ce++]! - 0x30);
    if (ce === cs || ce - cs > 10 || b[ce] !== 0x5d) return -1;
    p = ce + 1;
    if (b[p] !== SPACE && b[p] !== TAB) return -1;
    while (b[p] === SPACE || b[p] === TAB) p++;
    // secs.frac:
    const ts = p;
    while (b[p]! >= 0x30 && b[p]! <= 0x39) p++;
    if (p === ts || p - ts > 20 || b[p] !== DOT) return -1;
    const fs = ++p;
    while (b[p]! >= 0x30 && b[p]! <= 0x39) p++;
    if (p === fs || p - fs > 20 || b[p] !== 0x3a) return -1;
    const te = p;
    p++;
    if (b[p] !== SPACE && b[p] !== TAB) return -1;
    while (b[p] === SPACE || b[p] === TAB) p++;
    // event:
    const es = p;
    while (b[p]! > SPACE) p++;
    const ee = p;
    if (ee - es < 2 || b[ee - 1] !== 0x3a) return -1;
    const c = b[ee]!;
    if (c !== SPACE && c !== TAB && c !== LF && c !== CR) return -1;
    const end = this.ws(ee);
    if (b[end] !== LF) return -1;
    this.startBlock();
    const o = this.o;
    o.u8(T_TRIGGER);
    putToken(o, b, es, ee - 1);
    o.u8(T_COMM);
    putToken(o, b, s0, e0);
    if (pid === pid) {
      o.u8(T_PID);
      o.f64(pid);
    }
    o.u8(T_TID);
    o.f64(tid);
    o.u8(T_CPU);
    o.f64(cpu);
    o.u8(T_TIME);
    putToken(o, b, ts, te);
    return end + 1;
  }

  /** `-?\d{1,10}` at p as the parser's toInt reads it (-0 is 0); its end goes to SMALL_END. */
  private smallInt(p: number): number | undefined {
    const b = this.b;
    let neg = false;
    if (b[p] === 0x2d) {
      neg = true;
      p++;
    }
    const s = p;
    let v = 0;
    while (b[p]! >= 0x30 && b[p]! <= 0x39) v = v * 10 + (b[p++]! - 0x30);
    if (p === s || p - s > 10) return undefined;
    SMALL_END = p;
    return neg && v !== 0 ? -v : v;
  }

  /** Any other header: parseHeaderLine on the line's text. */
  private genericHeader(ls: number, i: number): number {
    const b = this.b;
    let nl = i;
    while (b[nl] !== LF && nl < this.len) nl++;
    if (nl >= this.len) throw UNSURE;
    let end = nl;
    while (end > ls && (b[end - 1] === SPACE || b[end - 1] === TAB || b[end - 1] === CR)) end--;
    const line = tokenString(b, ls, end);
    const h = parseHeaderLine(line);
    if (h === undefined) throw UNSURE;
    for (let k = h.restStart; k < line.length; k++) {
      const c = line.charCodeAt(k);
      if (c !== SPACE && c !== TAB) throw UNSURE;
    }
    this.startBlock();
    const o = this.o;
    o.u8(T_TRIGGER);
    o.str(h.trigger, 0, h.trigger.length);
    if (h.comm !== undefined) {
      o.u8(T_COMM);
      o.str(h.comm, 0, h.comm.length);
    }
    if (h.pid !== undefined) {
      o.u8(T_PID);
      o.f64(h.pid);
    }
    if (h.tid !== undefined) {
      o.u8(T_TID);
      o.f64(h.tid);
    }
    if (h.cpu !== undefined) {
      o.u8(T_CPU);
      o.f64(h.cpu);
    }
    if (h.time !== undefined) {
      o.u8(T_TIME);
      o.str(h.time, 0, h.time.length);
    }
    if (h.period !== undefined) {
      o.u8(T_PERIOD);
      o.u64(h.period, 'period');
    }
    return nl + 1;
  }

  /** A `.keyword` line other than the hot `.mem`; returns the next line's start. */
  private dotLine(i: number): number {
    const b = this.b;
    // The keyword by one load, when a blank follows it (tok's end then, as it is for the general
    // reading below, which every other line falls through to).
    switch (this.dv.getUint32(i + 1, true)) {
      case KW_TRUT:
        if (b[i + 5] === 0x68 && b[i + 6]! <= SPACE) return b[i + 6] === SPACE ? this.truthLines(i) : this.truth(this.ws(this.sep(i + 6)));
        break;
      case KW_WIND:
        if (b[i + 5] === 0x6f && b[i + 6] === 0x77 && b[i + 7]! <= SPACE) return this.window(this.ws(this.sep(i + 7)));
        break;
      case KW_STAC:
        if (b[i + 5] === 0x6b && b[i + 6]! <= SPACE) return this.stack(this.ws(this.sep(i + 6)));
        break;
      case KW_REGS:
        if (b[i + 5]! <= SPACE) return this.regs(this.ws(this.sep(i + 5)));
        break;
      case KW_HOST:
        if (b[i + 5]! <= SPACE) return this.hostOrKernel(this.ws(this.sep(i + 5)), false);
        break;
      case KW_KERN:
        if (b[i + 5] === 0x65 && b[i + 6] === 0x6c && b[i + 7]! <= SPACE) return this.hostOrKernel(this.ws(this.sep(i + 7)), true);
        break;
    }
    const ke = this.tok(i + 1);
    const kl = ke - i - 1;
    const c1 = b[i + 1];
    const v = this.ws(ke);
    if (kl === 5 && c1 === 0x74 && bytesAre(b, i + 1, 'truth')) return this.truth(v);
    if (kl === 3 && c1 === 0x6d && bytesAre(b, i + 1, 'mem')) return this.mem(v);
    if (kl === 6 && c1 === 0x77 && bytesAre(b, i + 1, 'window')) return this.window(v);
    if (kl === 5 && c1 === 0x73 && bytesAre(b, i + 1, 'stack')) return this.stack(v);
    if (kl === 4 && c1 === 0x72 && bytesAre(b, i + 1, 'regs')) return this.regs(v);
    if (kl === 4 && c1 === 0x68 && bytesAre(b, i + 1, 'host')) return this.hostOrKernel(v, false);
    if (kl === 6 && c1 === 0x6b && bytesAre(b, i + 1, 'kernel')) return this.hostOrKernel(v, true);
    throw UNSURE;
  }

  /**
   * `.truth ` lines from i (at the dot, one space after the keyword): formatTextDump's usual
   * frames in one loop while the next line is another `.truth ` after a single tab; any other
   * frame line goes to truth().
   */
  private truthLines(i: number): number {
    const b = this.b;
    const dv = this.dv;
    for (;;) {
      const a = i + 7;
      const next = this.truthFrame(a);
      if (next < 0) return this.truth(this.ws(a));
      if (b[next] !== TAB || dv.getUint32(next + 2, true) !== KW_TRUT || b[next + 1] !== DOT || b[next + 6] !== 0x68 || b[next + 7] !== SPACE) return next;
      this.lineNo++;
      i = next + 1;
    }
  }

  /**
   * `<16 digits> call` or `<16 digits> start` at a, with a single space and a bare LF: the frame
   * written and the next line's start returned, or -1 (nothing written) for any other shape.
   * truth() reads such a line the same way.
   */
  private truthFrame(a: number): number {
    const b = this.b;
    if (b[a + 16] !== SPACE || !this.hex16(a)) return -1;
    const k = a + 17;
    const w = this.dv.getUint32(k, true);
    let j: number;
    let kind: number;
    if (w === CALL4 && b[k + 4] === LF) {
      j = k + 4;
      kind = CALL_K;
    } else if (w === STAR4 && b[k + 4] === 0x74 && b[k + 5] === LF) {
      j = k + 5;
      kind = START_K;
    } else return -1;
    const o = this.o;
    o.room(11);
    const at = o.n;
    o.buf[at] = T_FRAME;
    o.dv.setUint32(at + 1, LO, true);
    o.dv.setUint32(at + 5, HI, true);
    o.buf[at + 9] = kind;
    o.buf[at + 10] = 0;
    o.n = at + 11;
    return j + 1;
  }

  /** `.host X` / `.kernel X`: one bare token (quoted strings: the parser), once per sample. */
  private hostOrKernel(s: number, kernel: boolean): number {
    const b = this.b;
    if (b[s] === LF) throw UNSURE;
    const o = this.o;
    o.u8(kernel ? T_KERNEL : T_HOST);
    const e = putBare(o, b, s);
    if (QUOTED) throw UNSURE;
    const next = this.eol(this.ws(this.sep(e)));
    if (kernel) {
      if (this.hasKernel) throw UNSURE;
      this.hasKernel = true;
      this.kernel = BARE_ASCII ? cachedToken(b, s, e, BARE_HASH) : tokenString(b, s, e);
    } else {
      if (this.hasHost) throw UNSURE;
      this.hasHost = true;
    }
    return next;
  }

  /** `.regs name=hex ...`: pt_regs fields, each once in the sample; cs/ss 16-bit, ip/sp canonical. */
  private regs(j: number): number {
    const b = this.b;
    const hex = HEX_DIGITS;
    const o = this.o;
    o.u8(T_REGS);
    const countAt = o.n;
    o.u8(0);
    let count = 0;
    while (b[j] !== LF) {
      // The token is name=hex: the name runs to the first '=', the value to the token's end
      // (a byte that is no hex digit inside the token makes it no hex number).
      let eq = j;
      while (b[eq]! > SPACE && b[eq] !== EQ) eq++;
      if (b[eq] !== EQ) throw UNSURE;
      const f = REG_TABLE.find(b, j, eq);
      if (f < 0 || (this.regsSeen & (1 << f)) !== 0) throw UNSURE;
      let k = eq + 1;
      let hi = 0, lo = 0;
      for (;;) {
        const d = hex[b[k]!]!;
        if (d < 0) break;
        hi = (hi << 4) | (lo >>> 28);
        lo = (lo << 4) | d;
        k++;
      }
      const n = k - eq - 1;
      if (n === 0 || n > 16 || b[k]! > SPACE) throw UNSURE;
      k = this.sep(k);
      HI = hi >>> 0;
      LO = lo >>> 0;
      this.regsSeen |= 1 << f;
      // ip and sp within ±2^53 are canonical (57-bit) by construction.
      if (f === IP_F || f === SP_F) signedHL();
      else if ((f === CS_F || f === SS_F) && (HI !== 0 || LO > 0xffff)) throw UNSURE;
      o.room(9);
      const at = o.n;
      o.buf[at] = f;
      o.dv.setUint32(at + 1, LO, true);
      o.dv.setUint32(at + 5, HI, true);
      o.n = at + 9;
      count++;
      j = this.ws(k);
    }
    o.buf[countAt] = count;
    return j + 1;
  }

  /** `.stack <type> <begin> <end>` */
  private stack(a: number): number {
    const b = this.b;
    if (b[a] === LF) throw UNSURE;
    const ae = this.tok(a);
    const type = STACK_TABLE.find(b, a, ae);
    if (type < 0) throw UNSURE;
    const bb = this.ws(ae);
    if (b[bb] === LF) throw UNSURE;
    const be = this.hexTok(bb);
    const beginHi = HI, beginLo = LO;
    const begin = kernelAddrHL();
    const c = this.ws(be);
    if (b[c] === LF) throw UNSURE;
    const next = this.eol(this.ws(this.hexTok(c)));
    const stEnd = kernelAddrHL();
    if (stEnd <= begin || stEnd - begin > MAX_STACK_SIZE) throw UNSURE;
    const stacks = this.stacks;
    for (let k = 0; k < stacks.length; k++) if (stacks[k]!.type === type) throw UNSURE;
    if (this.win !== undefined && this.winFill !== this.winDeclared) throw UNSURE;
    stacks.push({ type, begin, end: stEnd, windows: [] });
    this.win = undefined;
    const o = this.o;
    o.u8(T_STACK);
    o.u8(type);
    o.halves(beginHi, beginLo);
    o.halves(HI, LO);
    return next;
  }

  /** `.window <start> <end>` inside the latest stack (the one-token form and other stacks: the parser). */
  private window(a: number): number {
    const b = this.b;
    if (b[a] === LF || this.stacks.length === 0) throw UNSURE;
    const ae = this.hexTok(a);
    const startHi = HI, startLo = LO;
    const start = kernelAddrHL();
    const c = this.ws(ae);
    if (b[c] === LF) throw UNSURE;
    const next = this.eol(this.ws(this.hexTok(c)));
    const st = this.stacks[this.stacks.length - 1]!;
    if (start < st.begin || start > st.end) throw UNSURE;
    const wEnd = kernelAddrHL();
    if (wEnd < start || wEnd > st.end) throw UNSURE;
    const declared = wEnd - start;
    this.declaredBytes += declared;
    if (this.declaredBytes > MAX_SAMPLE_BYTES) throw UNSURE;
    if (this.win !== undefined && this.winFill !== this.winDeclared) throw UNSURE;
    this.win = st;
    this.winStartHi = startHi;
    this.winStartLo = startLo;
    this.winDeclared = declared;
    this.winFill = 0;
    if (declared > 0) st.windows.push(start, wEnd);
    // The window's bytes are reserved now and filled in place by its .mem lines.
    const o = this.o;
    o.u8(T_WINDOW);
    o.halves(startHi, startLo);
    o.u32(declared);
    o.room(declared);
    this.winAt = o.n;
    o.n += declared;
    return next;
  }

  /**
   * `.mem ` lines from i (at the dot) in formatTextDump's exact layout: `.mem <addr16> <w16> <w16>
   * <w16> <w16>` with single spaces and a bare LF, and further lines of that layout after a single
   * tab, in one loop. That is the case mem() reads with every blank and length fixed: 16 digits
   * each (the address as hexTok's 16-digit case, which needs no separator beyond the blank), four
   * words within the declared window, at the address the window has reached. A line with another
   * layout (fewer words, other blanks, a CR, a bad digit) goes to mem(), which reads it from
   * scratch: the bytes this loop wrote for it are rewritten there or the fast path is abandoned.
   */
  private memLines(i: number): number {
    const win = this.win;
    if (win === undefined) return this.mem(i + 5);
    const b = this.b;
    const dv = this.dv;
    const pair = PAIR;
    const out = this.o.dv;
    const at = this.winAt;
    const limit = this.winDeclared;
    const startHi = this.winStartHi, startLo = this.winStartLo;
    const last = this.len - MEM_LINE;
    let fill = this.winFill;
    for (;;) {
      if (i > last || fill + 32 > limit || b[i + MEM_LINE - 1] !== LF) break;
      if (b[i + 21] !== SPACE || b[i + 38] !== SPACE || b[i + 55] !== SPACE || b[i + 72] !== SPACE) break;
      // The address: where the window has got to.
      let x = dv.getUint32(i + 5, true), y = dv.getUint32(i + 9, true);
      let a0 = pair[x & 0xffff]!, a1 = pair[x >>> 16]!, a2 = pair[y & 0xffff]!, a3 = pair[y >>> 16]!;
      let bad = a0 | a1 | a2 | a3;
      const hi = ((a0 << 24) | (a1 << 16) | (a2 << 8) | a3) >>> 0;
      x = dv.getUint32(i + 13, true);
      y = dv.getUint32(i + 17, true);
      a0 = pair[x & 0xffff]!; a1 = pair[x >>> 16]!; a2 = pair[y & 0xffff]!; a3 = pair[y >>> 16]!;
      bad |= a0 | a1 | a2 | a3;
      const lo = ((a0 << 24) | (a1 << 16) | (a2 << 8) | a3) >>> 0;
      let wantLo = startLo + fill;
      let wantHi = startHi;
      if (wantLo >= TWO32) {
        wantLo -= TWO32;
        wantHi = (wantHi + 1) >>> 0;
      }
      if (bad < 0 || lo !== wantLo || hi !== wantHi) break;
      // Four words, 17 bytes apart from i + 22. Memory is little-endian: the word's last digit
      // pair is its first byte, so each 4-digit load gives the two bytes in reverse order.
      let q = at + fill;
      for (let w = i + 22; w < i + 90; w += 17) {
        const x0 = dv.getUint32(w, true), x1 = dv.getUint32(w + 4, true), x2 = dv.getUint32(w + 8, true), x3 = dv.getUint32(w + 12, true);
        const c0 = pair[x0 & 0xffff]!, c1 = pair[x0 >>> 16]!, c2 = pair[x1 & 0xffff]!, c3 = pair[x1 >>> 16]!;
        const c4 = pair[x2 & 0xffff]!, c5 = pair[x2 >>> 16]!, c6 = pair[x3 & 0xffff]!, c7 = pair[x3 >>> 16]!;
        bad |= c0 | c1 | c2 | c3 | c4 | c5 | c6 | c7;
        out.setUint32(q, (c7 | (c6 << 8) | (c5 << 16) | (c4 << 24)) >>> 0, true);
        out.setUint32(q + 4, (c3 | (c2 << 8) | (c1 << 16) | (c0 << 24)) >>> 0, true);
        q += 8;
      }
      if (bad < 0) break;
      fill += 32;
      const next = i + MEM_LINE;
      // Another line of the run: a single tab, then `.mem `.
      if (b[next] !== TAB || dv.getUint32(next + 1, true) !== DOT_MEM || b[next + 5] !== SPACE) {
        this.winFill = fill;
        return next;
      }
      this.lineNo++;
      i = next + 1;
    }
    this.winFill = fill;
    return this.mem(i + 5);
  }

  /** `.mem <addr> <w0> [<w1> <w2> <w3>]` from after `.mem `: continues the window, 16 digits a word. */
  private mem(a: number): number {
    const b = this.b;
    a = this.ws(a);
    if (b[a] === LF || this.win === undefined) throw UNSURE;
    let j = this.ws(this.hexTok(a));
    if (b[j] === LF) throw UNSURE;
    let lo = this.winStartLo + this.winFill;
    let hi = this.winStartHi;
    if (lo >= TWO32) {
      lo -= TWO32;
      hi = (hi + 1) >>> 0;
    }
    if (LO !== lo || HI !== hi) throw UNSURE;
    const odv = this.o.dv;
    let fill = this.winFill;
    const limit = this.winDeclared;
    const at = this.winAt;
    let words = 0;
    for (;;) {
      if (++words > 4 || fill + 8 > limit || !this.hex16(j)) throw UNSURE;
      // Memory is little-endian: the low half of the word first.
      odv.setUint32(at + fill, LO, true);
      odv.setUint32(at + fill + 4, HI, true);
      fill += 8;
      j += 16;
      let c = b[j]!;
      if (c === SPACE || c === TAB) {
        do c = b[++j]!;
        while (c === SPACE || c === TAB);
        if (c === LF) break;
        if (c === CR) {
          j = this.sep(j);
          break;
        }
        continue;
      }
      if (c === LF) break;
      if (c !== CR) throw UNSURE; // the word runs on: not 16 digits
      j = this.sep(j);
      break;
    }
    this.winFill = fill;
    return j + 1;
  }

  /** `.truth <ip> <kind> [entry=<name>] [tolerated=<why>]` (`.truth empty` and quoted values: the parser). */
  private truth(a: number): number {
    const b = this.b;
    const fast = this.truthFrame(a);
    if (fast >= 0) return fast;
    if (b[a] === LF) throw UNSURE;
    const ae = this.hexTok(a);
    const ipHi = HI, ipLo = LO;
    const k = this.ws(ae);
    if (b[k] === LF) throw UNSURE;
    const ke = this.tok(k);
    const kind = KIND_TABLE.find(b, k, ke);
    if (kind < 0) throw UNSURE;
    let entryFrom = -1, entryTo = -1;
    let tolerated = -1;
    let j = this.ws(ke);
    while (b[j] !== LF) {
      const e = this.tok(j);
      if (e - j >= 6 && bytesAre(b, j, 'entry=')) {
        if (entryFrom >= 0) throw UNSURE;
        entryFrom = j + 6;
        entryTo = e;
      } else if (e - j >= 10 && bytesAre(b, j, 'tolerated=')) {
        if (tolerated >= 0) throw UNSURE;
        tolerated = TOL_TABLE.find(b, j + 10, e);
        if (tolerated < 0) throw UNSURE;
      } else throw UNSURE;
      j = this.ws(e);
    }
    const o = this.o;
    o.u8(T_FRAME);
    o.halves(ipHi, ipLo);
    o.u8(kind);
    o.u8((entryFrom >= 0 ? HAS_A : 0) | (tolerated >= 0 ? HAS_B : 0));
    if (entryFrom >= 0) {
      putToken(o, b, entryFrom, entryTo);
      if (QUOTED) throw UNSURE;
    }
    if (tolerated >= 0) o.u8(tolerated);
    return j + 1;
  }

  /** The end of a block: what buildSample and validateSample check on the whole sample. */
  private finish(): void {
    this.open = false;
    if (this.win !== undefined && this.winFill !== this.winDeclared) throw UNSURE;
    const stacks = this.stacks;
    for (let s = 0; s < stacks.length; s++) {
      // Windows of one stack must not overlap (sorted by start; empty ones do not count).
      const w = stacks[s]!.windows;
      if (w.length > 2) windowsOverlap(w);
    }
    if (stacks.length > 1) stacksOverlap(stacks);
    const o = this.o;
    o.u8(T_SOURCE);
    o.str(this.file, 0, this.file.length);
    o.f64(this.line);
    endRecord(o, this.recAt);
    const full = (this.regsSeen & IP_SP) === IP_SP && stacks.length > 0;
    this.info.push({ index: this.index++, line: this.line, kernel: this.hasKernel ? this.kernel : undefined, fullState: full });
  }
}

/** Where the last smallInt ended. */
let SMALL_END = 0;

const IP_F = REG_INDEX.get('ip')!, SP_F = REG_INDEX.get('sp')!, CS_F = REG_INDEX.get('cs')!, SS_F = REG_INDEX.get('ss')!;
const IP_SP = (1 << IP_F) | (1 << SP_F);

/** Throws Unsure when two of the windows ([start, end) pairs) share bytes. */
function windowsOverlap(w: number[]): void {
  const order: number[] = [];
  for (let k = 0; k < w.length; k += 2) order.push(k);
  order.sort((x, y) => w[x]! - w[y]!);
  for (let k = 1; k < order.length; k++) if (w[order[k]!]! < w[order[k - 1]! + 1]!) throw UNSURE;
}

function stacksOverlap(stacks: FastStack[]): void {
  const sorted = stacks.slice().sort((x, y) => x.begin - y.begin);
  for (let k = 1; k < sorted.length; k++) if (sorted[k]!.begin < sorted[k - 1]!.end) throw UNSURE;
}

/** The fast path over b[0, len) (PAD zero bytes after), or undefined when it cannot prove the text. */
function fastTranscode(b: Uint8Array, len: number, file: string): EncodedBatch | undefined {
  const f = new FastTranscode(b, len, file);
  try {
    f.run();
  } catch (e) {
    if (e !== UNSURE) throw e;
    return undefined;
  }
  // The batch is handed out as a view of the buffer it was written in when that wastes at most a
  // quarter of the bytes (fleet batches: about a sixth): copying it out was a tenth of the time.
  const o = f.o;
  const bytes = o.buf.length - o.n <= o.n >>> 2 ? o.buf.subarray(0, o.n) : o.take();
  return { bytes, samples: f.info, rejected: [], fast: true };
}

/**
 * Text dump -> binary batch in one pass: the same samples, indices, lines and rejections (reason,
 * message, where) as parseTextDump with the same options, for every input. The input may also be
 * the dump's UTF-8 bytes (the API's gunzipped Buffer): then the answer is parseTextDump's on the
 * bytes decoded as Buffer#toString('utf8') does (invalid sequences as U+FFFD, a BOM kept), and an
 * ASCII upload is never turned into a string at all.
 */
export function transcodeTextDump(input: string | Uint8Array, opts: TextParseOptions = {}): EncodedBatch {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TEXT_BYTES;
  const file = opts.file ?? SOURCE_FILE_DEFAULT;
  // Near the size limit the parser's exact UTF-8 count decides (a string's UTF-8 form is at most
  // 3 bytes a unit; decoded bytes grow at most 3x, each bad byte becoming a 3-byte U+FFFD).
  if (input.length * 3 <= maxBytes) {
    // The text goes into a reused scratch buffer followed by PAD zero bytes (see PAD).
    const n = input.length;
    // The scratch buffer is kept for batch-sized inputs only: a huge upload gets one of its own.
    let buf = scratch;
    if (buf.length < n + PAD) {
      buf = new Uint8Array(Math.max(n + PAD, Math.min(scratch.length * 2, SCRATCH_MAX)));
      if (buf.length <= SCRATCH_MAX) scratch = buf;
    }
    let ok: boolean;
    if (typeof input === 'string') {
      const { read, written } = encoder.encodeInto(input, buf.subarray(0, n));
      // Pure ASCII only: then byte offsets are string offsets.
      ok = read === n && written === n;
    } else {
      buf.set(input);
      ok = true;
    }
    if (ok) {
      buf.fill(0, n, n + PAD);
      const r = fastTranscode(buf, n, file);
      if (r !== undefined) return r;
    }
  }
  return encodeParsed(parseTextDump(typeof input === 'string' ? input : utf8.decode(input), opts));
}
