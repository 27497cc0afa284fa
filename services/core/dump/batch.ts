// The binary batch form: what the API hands the checker workers. The API reads an upload once
// (text, JSON, NDJSON) and writes its accepted samples here; a worker decodes them without parsing
// any text: numbers are fixed-width little-endian, strings carry their length, and each stack
// window's bytes are a view into the batch (no copy). Layout: docs/dump-format.md, "Binary batch
// form".
//
// A batch is a header and one record per sample. A record is self-contained (its own length,
// version and input index), so it can be sliced out of a batch and stored alone as a trace's sample.
// Inside a record the fields are tagged and may come in any order: the text transcoder below writes
// each extension line's field the moment it reads the line, with no per-sample staging.
//
// The transcoder is exact by construction, as the validate-only scanner it replaced was: a fast
// path over the lines formatTextDump writes, with every check the parser and validateSample make on them; anything it
// has not proved (another keyword, a quoted value, a value it would reject, a huge number, an
// unterminated last line) sends the whole text to parseTextDump, whose result is encoded instead.
import { Buffer } from 'node:buffer';
import { DumpError, type ParseResult, type Rejection } from './errors.ts';
import {
  CALLCHAIN_FLAGS, hasFullState, TOLERANCES, TRUTH_KINDS,
  type CallchainEntry, type CallchainFlag, type FrameKind, type Regs, type Sample, type SampleStack,
  type Tolerance, type TruthFrame,
} from './sample.ts';
import { DEFAULT_MAX_TEXT_BYTES, MAX_HEADER_CHARS, parseHeaderLine, parseTextDump, type TextParseOptions } from './text.ts';
import { MAX_SAMPLE_BYTES, MAX_STACK_SIZE } from './validate.ts';
import { HEX_DIGITS } from './hex.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type PtRegsField, type StackType } from '../stack/layout.ts';

/** What the API needs to know about one usable sample (what the API's 202 is built from). */
export interface BatchSampleInfo {
  /** Index in the input, counting rejected samples too (the parser's numbering). */
  index: number;
  /** Line of the sample's header (source.line; 0 when the sample has no source). */
  line: number;
  kernel: string | undefined;
  /** Registers (ip and sp) and at least one stack: hasFullState of the sample. */
  fullState: boolean;
}

export interface EncodedBatch {
  bytes: Uint8Array;
  samples: BatchSampleInfo[];
  rejected: Rejection[];
  /** True when the transcoder's fast path proved the whole text; false when a parser judged it. */
  fast: boolean;
}

// ---------------------------------------------------------------------------------------------
// Format constants

/** "\x89SSB": the high first byte is neither text nor gzip (1f 8b), so legacy bodies never match. */
const MAGIC0 = 0x89, MAGIC1 = 0x53, MAGIC2 = 0x53, MAGIC3 = 0x42;
export const BATCH_VERSION = 1;
/** magic(4) version(1) reserved(3) count(4) */
const BATCH_HEADER = 12;
/** u32 length of the rest, u8 record version, u32 index. */
const RECORD_HEAD = 9;

// Field tags inside a record.
const T_COMM = 1, T_PID = 2, T_TID = 3, T_CPU = 4, T_TIME = 5, T_PERIOD = 6, T_TRIGGER = 7;
const T_HOST = 8, T_KERNEL = 9, T_REGS = 10, T_STACK = 11, T_WINDOW = 12, T_CALLCHAIN = 13;
const T_TRUTH = 14, T_FRAME = 15, T_SOURCE = 16, T_UNDEF = 17;
/** Optional Sample keys by tag, for T_UNDEF (a key present with the value undefined). */
const UNDEF_KEYS: Record<number, keyof Sample> = {
  [T_COMM]: 'comm', [T_PID]: 'pid', [T_TID]: 'tid', [T_CPU]: 'cpu', [T_TIME]: 'time', [T_PERIOD]: 'period',
  [T_HOST]: 'host', [T_KERNEL]: 'kernel', [T_REGS]: 'regs', [T_CALLCHAIN]: 'callchain', [T_TRUTH]: 'truth', [T_SOURCE]: 'source',
};
const OTHER = 0xff; // an enum byte that is followed by the value as a string (not in the closed list)
const REG_UNDEF = 0x80; // regs: the field's key is present with the value undefined
// Entry bits (callchain entries, truth frames): key present, key present but undefined.
const HAS_A = 1, HAS_B = 2, UNDEF_A = 4, UNDEF_B = 8;

const TWO32 = 4294967296;
const SAFE = 2 ** 53;

// Module-local aliases: under tsx an imported binding read in a loop is a getter call.
const HEX = HEX_DIGITS;
const REG_NAMES: readonly PtRegsField[] = PT_REGS_FIELDS;
const STACK_NAMES: readonly StackType[] = STACK_TYPES;
const KIND_NAMES: readonly FrameKind[] = TRUTH_KINDS;
const TOL_NAMES: readonly Tolerance[] = TOLERANCES;
const FLAG_NAMES: readonly CallchainFlag[] = CALLCHAIN_FLAGS;
const MAX_SAMPLE = MAX_SAMPLE_BYTES;
const MAX_STACK = MAX_STACK_SIZE;
const REG_INDEX = new Map<string, number>(REG_NAMES.map((f, i) => [f, i]));
const STACK_INDEX = new Map<string, number>(STACK_NAMES.map((f, i) => [f, i]));
const KIND_INDEX = new Map<string, number>(KIND_NAMES.map((f, i) => [f, i]));
const TOL_INDEX = new Map<string, number>(TOL_NAMES.map((f, i) => [f, i]));
const FLAG_INDEX = new Map<string, number>(FLAG_NAMES.map((f, i) => [f, i]));

// ---------------------------------------------------------------------------------------------
// Writer: a growable little-endian byte buffer

class Out {
  buf: Uint8Array;
  dv: DataView;
  n = 0;

  constructor(cap: number) {
    this.buf = new Uint8Array(Math.max(64, cap));
    this.dv = new DataView(this.buf.buffer);
  }

  /** Room for k more bytes. */
  room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.n + k) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.n));
    this.buf = nb;
    this.dv = new DataView(nb.buffer);
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.n++] = v;
  }
  u32(v: number): void {
    this.room(4);
    this.dv.setUint32(this.n, v, true);
    this.n += 4;
  }
  f64(v: number): void {
    this.room(8);
    this.dv.setFloat64(this.n, v, true);
    this.n += 8;
  }
  /** A u64 given as halves: low word first. */
  halves(hi: number, lo: number): void {
    this.room(8);
    this.dv.setUint32(this.n, lo, true);
    this.dv.setUint32(this.n + 4, hi, true);
    this.n += 8;
  }
  u64(v: bigint, what: string): void {
    if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) throw new RangeError(`${what} ${String(v)} is not an unsigned 64-bit value`);
    this.halves(Number(v >> 32n), Number(v & 0xffffffffn));
  }
  /** t[from, to) as a string: u32 (units << 1 | wide), then 1 byte a unit, or 2 (LE) when any unit is over 0xff. */
  str(t: string, from: number, to: number): void {
    const units = to - from;
    let wide = 0;
    for (let i = from; i < to; i++) if (t.charCodeAt(i) > 0xff) { wide = 1; break; }
    this.room(4 + units * (1 + wide));
    this.dv.setUint32(this.n, units * 2 + wide, true);
    let p = this.n + 4;
    const b = this.buf;
    if (wide === 0) {
      for (let i = from; i < to; i++) b[p++] = t.charCodeAt(i);
    } else {
      for (let i = from; i < to; i++) {
        const c = t.charCodeAt(i);
        b[p++] = c & 0xff;
        b[p++] = c >>> 8;
      }
    }
    this.n = p;
  }
  /** An enum value as its index in names, or OTHER and the string. */
  named(v: string, index: ReadonlyMap<string, number>): void {
    const k = index.get(v);
    if (k !== undefined) this.u8(k);
    else {
      this.u8(OTHER);
      this.str(String(v), 0, String(v).length);
    }
  }

  /** The bytes written, as a buffer of their own. */
  take(): Uint8Array {
    // An ArrayBuffer that is not zero-filled first (every byte is written by the copy), as a plain
    // Uint8Array over all of it: the copy of a batch-sized buffer costs less than half as much.
    const n = this.n;
    const out = new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
    out.set(this.buf.subarray(0, n));
    return out;
  }
}

function writeBatchHeader(o: Out, count: number): void {
  o.room(BATCH_HEADER);
  const b = o.buf;
  b[0] = MAGIC0; b[1] = MAGIC1; b[2] = MAGIC2; b[3] = MAGIC3;
  b[4] = BATCH_VERSION; b[5] = 0; b[6] = 0; b[7] = 0;
  o.dv.setUint32(8, count, true);
  o.n = BATCH_HEADER;
}

/** Opens a record; returns where its length goes (patched by endRecord). */
function beginRecord(o: Out, index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= TWO32) throw new RangeError(`sample index ${index} is not a u32`);
  const at = o.n;
  o.room(RECORD_HEAD);
  o.dv.setUint32(at + 5, index, true);
  o.buf[at + 4] = BATCH_VERSION;
  o.n = at + RECORD_HEAD;
  return at;
}
function endRecord(o: Out, at: number): void {
  o.dv.setUint32(at, o.n - at - 4, true);
}

function has(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

/** One Sample as tagged fields (encodeSamples and encodeParsed: the general, BigInt path). */
function writeSample(o: Out, s: Sample): void {
  const optStr = (tag: number, k: 'comm' | 'time' | 'host' | 'kernel'): void => {
    const v = s[k];
    if (v !== undefined) {
      o.u8(tag);
      o.str(v, 0, v.length);
    } else if (has(s, k)) o.u8(T_UNDEF), o.u8(tag);
  };
  const optNum = (tag: number, k: 'pid' | 'tid' | 'cpu'): void => {
    const v = s[k];
    if (v !== undefined) {
      o.u8(tag);
      o.f64(v);
    } else if (has(s, k)) o.u8(T_UNDEF), o.u8(tag);
  };
  o.u8(T_TRIGGER);
  o.str(s.trigger, 0, s.trigger.length);
  optStr(T_COMM, 'comm');
  optNum(T_PID, 'pid');
  optNum(T_TID, 'tid');
  optNum(T_CPU, 'cpu');
  optStr(T_TIME, 'time');
  if (s.period !== undefined) {
    o.u8(T_PERIOD);
    o.u64(s.period, 'period');
  } else if (has(s, 'period')) o.u8(T_UNDEF), o.u8(T_PERIOD);
  optStr(T_HOST, 'host');
  optStr(T_KERNEL, 'kernel');
  if (s.regs !== undefined) {
    const keys = Object.keys(s.regs);
    if (keys.length > 0x7f) throw new RangeError(`regs has ${keys.length} fields`);
    o.u8(T_REGS);
    o.u8(keys.length);
    for (const k of keys) {
      const f = REG_INDEX.get(k);
      if (f === undefined) throw new RangeError(`regs.${k} is not a pt_regs field`);
      const v = s.regs[k as PtRegsField];
      if (v === undefined) o.u8(f | REG_UNDEF);
      else {
        o.u8(f);
        o.u64(v, `regs.${k}`);
      }
    }
  } else if (has(s, 'regs')) o.u8(T_UNDEF), o.u8(T_REGS);
  for (const st of s.stacks) {
    o.u8(T_STACK);
    o.named(st.type, STACK_INDEX);
    o.u64(st.begin, 'stack.begin');
    o.u64(st.end, 'stack.end');
    for (const w of st.windows) {
      o.u8(T_WINDOW);
      o.u64(w.start, 'window.start');
      const n = w.bytes.length;
      o.u32(n);
      o.room(n);
      o.buf.set(w.bytes, o.n);
      o.n += n;
    }
  }
  if (s.callchain !== undefined) {
    o.u8(T_CALLCHAIN);
    o.u32(s.callchain.length);
    for (const e of s.callchain) writeEntry(o, e);
  } else if (has(s, 'callchain')) o.u8(T_UNDEF), o.u8(T_CALLCHAIN);
  if (s.truth !== undefined) {
    o.u8(T_TRUTH);
    for (const f of s.truth.frames) writeFrame(o, f);
  } else if (has(s, 'truth')) o.u8(T_UNDEF), o.u8(T_TRUTH);
  if (s.source !== undefined) {
    o.u8(T_SOURCE);
    o.str(s.source.file, 0, s.source.file.length);
    o.f64(s.source.line);
  } else if (has(s, 'source')) o.u8(T_UNDEF), o.u8(T_SOURCE);
}

function writeEntry(o: Out, e: CallchainEntry): void {
  o.u64(e.addr, 'callchain.addr');
  let bits = 0;
  if (e.sym !== undefined) bits |= HAS_A;
  else if (has(e, 'sym')) bits |= UNDEF_A;
  if (e.dso !== undefined) bits |= HAS_B;
  else if (has(e, 'dso')) bits |= UNDEF_B;
  o.u8(bits);
  if (e.sym !== undefined) o.str(e.sym, 0, e.sym.length);
  if (e.dso !== undefined) o.str(e.dso, 0, e.dso.length);
  o.u32(e.flags.length);
  for (const f of e.flags) o.named(f, FLAG_INDEX);
}

function writeFrame(o: Out, f: TruthFrame): void {
  o.u8(T_FRAME);
  o.u64(f.ip, 'truth.ip');
  o.named(f.kind, KIND_INDEX);
  let bits = 0;
  if (f.entry !== undefined) bits |= HAS_A;
  else if (has(f, 'entry')) bits |= UNDEF_A;
  if (f.tolerated !== undefined) bits |= HAS_B;
  else if (has(f, 'tolerated')) bits |= UNDEF_B;
  o.u8(bits);
  if (f.entry !== undefined) o.str(f.entry, 0, f.entry.length);
  if (f.tolerated !== undefined) o.named(f.tolerated, TOL_INDEX);
}

/** Binary form of parsed samples; indices[i] is samples[i]'s index in its input (counting rejected ones). */
export function encodeSamples(samples: readonly Sample[], indices: readonly number[]): Uint8Array {
  if (indices.length !== samples.length) throw new RangeError(`${samples.length} samples but ${indices.length} indices`);
  const o = new Out(BATCH_HEADER + samples.length * 1024);
  writeBatchHeader(o, samples.length);
  for (let i = 0; i < samples.length; i++) {
    const at = beginRecord(o, indices[i]!);
    writeSample(o, samples[i]!);
    endRecord(o, at);
  }
  return o.take();
}

/** Input indices of a parser's accepted samples: the ones no rejection names, in order. */
function acceptedIndices(parsed: ParseResult<Sample>): number[] {
  const rejected = new Set<number>();
  for (const r of parsed.rejected) rejected.add(r.sampleIndex);
  const out: number[] = new Array(parsed.samples.length);
  let index = 0;
  for (let i = 0; i < parsed.samples.length; i++) {
    while (rejected.has(index)) index++;
    out[i] = index++;
  }
  return out;
}

/** For JSON/NDJSON uploads and fallbacks: a ParseResult (from parseJsonDump/parseTextDump) as an EncodedBatch. */
export function encodeParsed(parsed: ParseResult<Sample>): EncodedBatch {
  const indices = acceptedIndices(parsed);
  const samples: BatchSampleInfo[] = new Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const s = parsed.samples[i]!;
    samples[i] = { index: indices[i]!, line: s.source?.line ?? 0, kernel: s.kernel, fullState: hasFullState(s) };
  }
  return { bytes: encodeSamples(parsed.samples, indices), samples, rejected: parsed.rejected, fast: false };
}

// ---------------------------------------------------------------------------------------------
// Reader. State lives in module-level variables rather than an object: one decode runs at a time
// (decoding is synchronous), and plain variables keep the hot reads cheap.

let B: Uint8Array = new Uint8Array(0);
let D: DataView = new DataView(B.buffer);
let P = 0;
/** End of the current record. */
let E = 0;

function bad(reason: 'truncated' | 'bad_field' | 'bad_header', msg: string, field: string): DumpError {
  return new DumpError(reason, `binary batch: ${msg}`, { field });
}

function need(k: number, what: string): void {
  if (P + k > E) throw bad('truncated', `${what} runs past the end of its record (byte ${P} + ${k} > ${E})`, what);
}

function rU8(what: string): number {
  need(1, what);
  return B[P++]!;
}
function rU32(what: string): number {
  need(4, what);
  const v = D.getUint32(P, true);
  P += 4;
  return v;
}
function rF64(what: string): number {
  need(8, what);
  const v = D.getFloat64(P, true);
  P += 8;
  return v;
}
function rU64(what: string): bigint {
  need(8, what);
  const lo = D.getUint32(P, true), hi = D.getUint32(P + 4, true);
  // Values repeat across a batch (return addresses, ip, cs/ss/flags, stack bounds): a BigInt is
  // a heap object, so a repeated value is handed out again from a small table keyed by a hash of
  // its halves, checked against them, instead of being allocated anew.
  const slot = (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 20) & (BIG_SLOTS - 1);
  let v = bigVal[slot];
  if (v === undefined || bigLo[slot] !== lo || bigHi[slot] !== hi) {
    v = D.getBigUint64(P, true);
    bigVal[slot] = v;
    bigLo[slot] = lo;
    bigHi[slot] = hi;
  }
  P += 8;
  return v;
}
const BIG_SLOTS = 4096;
const bigVal: (bigint | undefined)[] = new Array<bigint | undefined>(BIG_SLOTS).fill(undefined);
const bigLo = new Uint32Array(BIG_SLOTS);
const bigHi = new Uint32Array(BIG_SLOTS);

// Repeated short strings (host, kernel, trigger, file, comm) come back as the same string object:
// a small table keyed by a hash of the bytes, checked against a copy of the bytes before reuse.
// Hash and check read four bytes a load (a kernel build id is 40). Strings that do not repeat
// (time) skip the table: rStr(what, false).
const CACHE_SIZE = 1024;
const CACHE_MAX_LEN = 64;
const strCache: (string | undefined)[] = new Array<string | undefined>(CACHE_SIZE).fill(undefined);
/** The bytes of strCache[slot] at slot * CACHE_MAX_LEN, its length in cacheLen[slot]. */
const cacheBytes = new Uint8Array(CACHE_SIZE * CACHE_MAX_LEN);
const cacheDV = new DataView(cacheBytes.buffer);
const cacheLen = new Int32Array(CACHE_SIZE).fill(-1);

function rStr(what: string, cache = true): string {
  const h = rU32(what);
  const units = h >>> 1;
  if ((h & 1) === 0) {
    need(units, what);
    const p0 = P;
    P += units;
    if (cache && units <= CACHE_MAX_LEN) return cached(p0, units);
    return narrow(B, p0, units);
  }
  need(units * 2, what);
  let s = '';
  const p0 = P;
  P += units * 2;
  for (let i = 0; i < units; i += 4096) {
    const n = Math.min(4096, units - i);
    const codes = new Array<number>(n);
    for (let k = 0; k < n; k++) codes[k] = B[p0 + 2 * (i + k)]! | (B[p0 + 2 * (i + k) + 1]! << 8);
    s += String.fromCharCode.apply(null, codes);
  }
  return s;
}

/** B[p0, p0 + units) (units <= CACHE_MAX_LEN, one byte a unit) through the cache. */
function cached(p0: number, units: number): string {
  const d = D;
  const words = units >>> 2;
  const tail = p0 + (words << 2);
  let x = units;
  for (let i = p0; i < tail; i += 4) x = Math.imul(x ^ d.getUint32(i, true), 0x9e3779b1);
  for (let i = tail; i < p0 + units; i++) x = Math.imul(x ^ B[i]!, 0x9e3779b1);
  const slot = (x ^ (x >>> 16)) & (CACHE_SIZE - 1);
  const at = slot * CACHE_MAX_LEN;
  if (cacheLen[slot] === units) {
    let i = p0;
    let q = at;
    while (i < tail && cacheDV.getUint32(q, true) === d.getUint32(i, true)) i += 4, q += 4;
    if (i >= tail) {
      while (i < p0 + units && cacheBytes[q] === B[i]) i++, q++;
      if (i === p0 + units) return strCache[slot]!;
    }
  }
  const s = narrow(B, p0, units);
  strCache[slot] = s;
  cacheLen[slot] = units;
  cacheBytes.set(B.subarray(p0, p0 + units), at);
  return s;
}

const fcc = String.fromCharCode;
/**
 * b[p0, p0 + units) as one-byte units. Up to 12 (a time, most names) by one fromCharCode call
 * with the codes as arguments, which is several times faster than adding characters one by one
 * or any bulk decoder at these lengths; longer ones through Buffer's latin1 decoder.
 */
function narrow(b: Uint8Array, p0: number, units: number): string {
  const p = p0;
  switch (units) {
    case 0: return '';
    case 1: return fcc(b[p]!);
    case 2: return fcc(b[p]!, b[p + 1]!);
    case 3: return fcc(b[p]!, b[p + 1]!, b[p + 2]!);
    case 4: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!);
    case 5: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!);
    case 6: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!);
    case 7: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!);
    case 8: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!);
    case 9: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!, b[p + 8]!);
    case 10: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!, b[p + 8]!, b[p + 9]!);
    case 11: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!, b[p + 8]!, b[p + 9]!, b[p + 10]!);
    case 12: return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!, b[p + 8]!, b[p + 9]!, b[p + 10]!, b[p + 11]!);
  }
  return Buffer.from(b.buffer, b.byteOffset + p0, units).toString('latin1');
}

function rNamed<T extends string>(names: readonly T[], what: string): T {
  const k = rU8(what);
  if (k === OTHER) return rStr(what) as T;
  const v = names[k];
  if (v === undefined) throw bad('bad_field', `${what} code ${k} is not one of the ${names.length} known`, what);
  return v;
}

/** The record at P (length prefix included), into a Sample; P ends after it, its index in REC_INDEX. */
function readRecord(limit: number): Sample {
  if (P + 4 > limit) throw bad('truncated', `record length at byte ${P} runs past the end (${limit} bytes)`, 'record');
  const len = D.getUint32(P, true);
  if (len > limit - P - 4) throw bad('truncated', `record at byte ${P} claims ${len} bytes; only ${limit - P - 4} remain`, 'record');
  E = P + 4 + len;
  P += 4;
  const ver = rU8('record.version');
  if (ver !== BATCH_VERSION) throw bad('bad_header', `record version ${ver} is not ${BATCH_VERSION} (this decoder reads version ${BATCH_VERSION} only)`, 'record.version');
  const index = rU32('record.index');
  REC_INDEX = index;
  const fields = P;
  const s = readFields(index);
  if (s !== undefined) return s;
  P = fields;
  return readFieldsInOrder(index);
}

/** The index of the record readRecord read last (a module variable: no object a record). */
let REC_INDEX = 0;

/**
 * Each optional key's place in the order writeSample writes them (parseTextDump's order too):
 * comm pid tid cpu time period host kernel regs callchain truth source, after trigger and stacks.
 */
const RANK = new Uint8Array(256);
RANK[T_COMM] = 1; RANK[T_PID] = 2; RANK[T_TID] = 3; RANK[T_CPU] = 4; RANK[T_TIME] = 5; RANK[T_PERIOD] = 6;
RANK[T_HOST] = 7; RANK[T_KERNEL] = 8; RANK[T_REGS] = 9; RANK[T_CALLCHAIN] = 10; RANK[T_TRUTH] = 11; RANK[T_FRAME] = 11;
RANK[T_SOURCE] = 12;
/** The keys of a transcoded sample with the usual perf header (pid/tid) and ground truth. */
const USUAL = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 11) | (1 << 12);

/**
 * The fields at P into a Sample built at the end with its keys in writeSample's order (the usual
 * set as one object literal: no growing of the object key by key). readFieldsInOrder gives the same
 * object whenever each key first appears in that order, which this checks: undefined when a key
 * comes out of order or T_UNDEF appears, and the caller reads the record again that way.
 */
function readFields(index: number): Sample | undefined {
  let trigger: string | undefined;
  let comm: string | undefined, time: string | undefined, host: string | undefined, kernel: string | undefined;
  let pid = 0, tid = 0, cpu = 0;
  let period: bigint | undefined;
  let regs: Regs | undefined;
  let callchain: CallchainEntry[] | undefined;
  let truth: { frames: TruthFrame[] } | undefined;
  let source: { file: string; line: number } | undefined;
  const stacks: SampleStack[] = [];
  let stack: SampleStack | undefined;
  let mask = 0;
  let rank = 0;
  while (P < E) {
    const tag = B[P++]!;
    const r = RANK[tag]!;
    if (r !== 0) {
      if (r < rank) return undefined;
      rank = r;
      mask |= 1 << r;
    }
    switch (tag) {
      case T_TRIGGER:
        trigger = rStr('trigger');
        break;
      case T_COMM:
        comm = rStr('comm');
        break;
      case T_PID:
        pid = rF64('pid');
        break;
      case T_TID:
        tid = rF64('tid');
        break;
      case T_CPU:
        cpu = rF64('cpu');
        break;
      case T_TIME:
        time = rStr('time', false);
        break;
      case T_PERIOD:
        period = rU64('period');
        break;
      case T_HOST:
        host = rStr('host');
        break;
      case T_KERNEL:
        kernel = rStr('kernel');
        break;
      case T_REGS:
        if (regs === undefined) regs = readRegs();
        else readRegsInto(regs);
        break;
      case T_STACK:
        stacks.push((stack = readStack()));
        break;
      case T_WINDOW:
        readWindow(stack);
        break;
      case T_CALLCHAIN:
        callchain = readCallchain();
        break;
      case T_TRUTH:
        truth ??= { frames: [] };
        break;
      case T_FRAME:
        (truth ??= { frames: [] }).frames.push(readFrame());
        break;
      case T_SOURCE: {
        const file = rStr('source.file');
        source = { file, line: rF64('source.line') };
        break;
      }
      case T_UNDEF:
        return undefined;
      default:
        throw bad('bad_field', `unknown field tag ${tag} at byte ${P - 1}`, 'record');
    }
  }
  if (trigger === undefined) throw bad('bad_field', `record of sample ${index} has no trigger`, 'trigger');
  if (mask === USUAL) return { trigger, stacks, comm, pid, tid, cpu, time, host, kernel, regs, truth, source };
  const s: Sample = { trigger, stacks };
  if (mask & (1 << 1)) s.comm = comm;
  if (mask & (1 << 2)) s.pid = pid;
  if (mask & (1 << 3)) s.tid = tid;
  if (mask & (1 << 4)) s.cpu = cpu;
  if (mask & (1 << 5)) s.time = time;
  if (mask & (1 << 6)) s.period = period;
  if (mask & (1 << 7)) s.host = host;
  if (mask & (1 << 8)) s.kernel = kernel;
  if (mask & (1 << 9)) s.regs = regs;
  if (mask & (1 << 10)) s.callchain = callchain;
  if (mask & (1 << 11)) s.truth = truth;
  if (mask & (1 << 12)) s.source = source;
  return s;
}

/** A T_REGS payload into regs (repeats merge). */
function readRegsInto(regs: Regs): void {
  const n = rU8('regs');
  for (let k = 0; k < n; k++) {
    const f = rU8('regs.field');
    const name = REG_NAMES[f & ~REG_UNDEF];
    if (name === undefined) throw bad('bad_field', `register code ${f} is not a pt_regs field`, 'regs');
    regs[name] = (f & REG_UNDEF) !== 0 ? undefined : rU64(REG_WHAT[f]!);
  }
}

/**
 * A sample's first T_REGS payload as a new object, the same as readRegsInto({}). Adding a batch's
 * worth of registers key by key was a sixth of decoding; an object literal costs a fifth of that.
 * So each distinct sequence of fields (in a batch: one or a few, e.g. formatTextDump's order) gets
 * a function returning `{ bp: v[0], ip: v[1], ... }`, made once: the names come from the closed
 * PT_REGS_FIELDS list, never from the input. Sequences with a repeated field or an undefined value,
 * and any beyond the first REG_SHAPES_MAX, are built key by key.
 */
function readRegs(): Regs {
  const n = rU8('regs');
  const codes = REG_CODES, vals = REG_VALS;
  let node: RegShape | undefined = regRoot;
  let seen = 0;
  for (let k = 0; k < n; k++) {
    const f = rU8('regs.field');
    const name = REG_NAMES[f & ~REG_UNDEF];
    if (name === undefined) throw bad('bad_field', `register code ${f} is not a pt_regs field`, 'regs');
    codes[k] = f;
    if ((f & REG_UNDEF) !== 0) {
      vals[k] = undefined;
      node = undefined;
      continue;
    }
    vals[k] = rU64(REG_WHAT[f]!);
    if ((seen & (1 << f)) !== 0) node = undefined;
    seen |= 1 << f;
    if (node !== undefined) node = node.next[f] ?? newRegShape(node, f);
  }
  if (node !== undefined) {
    const make = node.make === undefined ? (node.make = regsMaker(codes, n)) : node.make;
    if (make !== null) return make(vals);
  }
  const regs: Regs = {};
  for (let k = 0; k < n; k++) regs[REG_NAMES[codes[k]! & ~REG_UNDEF]!] = vals[k];
  return regs;
}

interface RegShape {
  /** By the next field's code. */
  next: (RegShape | undefined)[];
  /** The literal's maker for the sequence ending here; undefined until made, null: key by key. */
  make: RegsMaker | null | undefined;
}
type RegsMaker = (v: (bigint | undefined)[]) => Regs;
const regRoot: RegShape = { next: [], make: null };
const REG_SHAPES_MAX = 64;
let regShapes = 0;
const REG_CODES = new Int32Array(256);
const REG_VALS: (bigint | undefined)[] = [];

function newRegShape(parent: RegShape, f: number): RegShape | undefined {
  if (regShapes >= REG_SHAPES_MAX) return undefined;
  regShapes++;
  const node: RegShape = { next: [], make: undefined };
  parent.next[f] = node;
  return node;
}

function regsMaker(codes: Int32Array, n: number): RegsMaker | null {
  const props: string[] = [];
  for (let k = 0; k < n; k++) props.push(`${REG_NAMES[codes[k]!]!}: v[${k}]`);
  try {
    return new Function('v', `return { ${props.join(', ')} };`) as RegsMaker;
  } catch {
    return null; // code generation disallowed (--disallow-code-generation-from-strings)
  }
}

/** `regs.<name>` by field code: made once, not a string a register. */
const REG_WHAT = REG_NAMES.map((n) => `regs.${n}`);

/** The fields at P into a Sample, each key added when its tag first appears (any order, T_UNDEF). */
function readFieldsInOrder(index: number): Sample {
  const s: Sample = { trigger: '', stacks: [] };
  let trigger = false;
  let stack: SampleStack | undefined;
  while (P < E) {
    const tag = B[P++]!;
    switch (tag) {
      case T_TRIGGER:
        s.trigger = rStr('trigger');
        trigger = true;
        break;
      case T_COMM:
        s.comm = rStr('comm');
        break;
      case T_PID:
        s.pid = rF64('pid');
        break;
      case T_TID:
        s.tid = rF64('tid');
        break;
      case T_CPU:
        s.cpu = rF64('cpu');
        break;
      case T_TIME:
        s.time = rStr('time', false);
        break;
      case T_PERIOD:
        s.period = rU64('period');
        break;
      case T_HOST:
        s.host = rStr('host');
        break;
      case T_KERNEL:
        s.kernel = rStr('kernel');
        break;
      case T_REGS:
        readRegsInto((s.regs ??= {}));
        break;
      case T_STACK:
        s.stacks.push((stack = readStack()));
        break;
      case T_WINDOW:
        readWindow(stack);
        break;
      case T_CALLCHAIN:
        s.callchain = readCallchain();
        break;
      case T_TRUTH:
        s.truth ??= { frames: [] };
        break;
      case T_FRAME:
        (s.truth ??= { frames: [] }).frames.push(readFrame());
        break;
      case T_SOURCE: {
        const file = rStr('source.file');
        s.source = { file, line: rF64('source.line') };
        break;
      }
      case T_UNDEF: {
        const t = rU8('undefined');
        const k = UNDEF_KEYS[t];
        if (k === undefined) throw bad('bad_field', `tag ${t} names no optional field`, 'undefined');
        (s as unknown as Record<string, unknown>)[k] = undefined;
        break;
      }
      default:
        throw bad('bad_field', `unknown field tag ${tag} at byte ${P - 1}`, 'record');
    }
  }
  if (!trigger) throw bad('bad_field', `record of sample ${index} has no trigger`, 'trigger');
  return s;
}

function readStack(): SampleStack {
  const type = rNamed(STACK_NAMES, 'stack.type');
  const begin = rU64('stack.begin');
  return { type, begin, end: rU64('stack.end'), windows: [] };
}

function readWindow(stack: SampleStack | undefined): void {
  if (stack === undefined) throw bad('bad_field', 'a window before any stack', 'window');
  const start = rU64('window.start');
  const n = rU32('window.length');
  need(n, 'window.bytes');
  // A view (no copy) made by the constructor, which costs half what subarray does.
  stack.windows.push({ start, bytes: new Uint8Array(B.buffer, B.byteOffset + P, n) });
  P += n;
}

function readCallchain(): CallchainEntry[] {
  const n = rU32('callchain');
  const cc: CallchainEntry[] = [];
  for (let k = 0; k < n; k++) cc.push(readEntry());
  return cc;
}

function readEntry(): CallchainEntry {
  const addr = rU64('callchain.addr');
  const bits = rU8('callchain.bits');
  const e: CallchainEntry = { addr, flags: [] };
  if (bits & HAS_A) e.sym = rStr('callchain.sym');
  else if (bits & UNDEF_A) e.sym = undefined;
  if (bits & HAS_B) e.dso = rStr('callchain.dso');
  else if (bits & UNDEF_B) e.dso = undefined;
  const n = rU32('callchain.flags');
  for (let k = 0; k < n; k++) e.flags.push(rNamed(FLAG_NAMES, 'callchain.flags'));
  return e;
}

function readFrame(): TruthFrame {
  const ip = rU64('truth.ip');
  const f: TruthFrame = { ip, kind: rNamed(KIND_NAMES, 'truth.kind') };
  const bits = rU8('truth.bits');
  if (bits & HAS_A) f.entry = rStr('truth.entry');
  else if (bits & UNDEF_A) f.entry = undefined;
  if (bits & HAS_B) f.tolerated = rNamed(TOL_NAMES, 'truth.tolerated');
  else if (bits & UNDEF_B) f.tolerated = undefined;
  return f;
}

function hexBytes(b: Uint8Array, n: number): string {
  return Array.from(b.subarray(0, Math.min(n, b.length)), (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/** True when the bytes start with this form's magic (so a worker can tell it from legacy text/gzip bodies). */
export function isEncodedBatch(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === MAGIC0 && bytes[1] === MAGIC1 && bytes[2] === MAGIC2 && bytes[3] === MAGIC3;
}

/** The form version of a binary batch (its fifth byte), or undefined for bytes that are not one. */
export function batchFormVersion(bytes: Uint8Array): number | undefined {
  return isEncodedBatch(bytes) && bytes.length > 4 ? bytes[4] : undefined;
}

function bind(bytes: Uint8Array): void {
  B = bytes;
  D = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  P = 0;
  E = bytes.length;
}

/**
 * Decodes a whole batch. records[i] is sample i's own record bytes (a view), decodable alone with
 * decodeSampleRecord. Window bytes are views into `bytes` too: copy them before transferring
 * their .buffer. Throws DumpError for anything that is not a whole batch of this version.
 */
export function decodeBatch(bytes: Uint8Array): { samples: Sample[]; indices: number[]; records: Uint8Array[] } {
  if (!isEncodedBatch(bytes)) {
    throw bad('bad_header', `not a binary batch: it starts with bytes [${hexBytes(bytes, 4)}], not 89 53 53 42 ("\\x89SSB")`, 'batch.magic');
  }
  if (bytes.length < BATCH_HEADER) throw bad('truncated', `${bytes.length} bytes is shorter than the ${BATCH_HEADER}-byte batch header`, 'batch');
  if (bytes[4] !== BATCH_VERSION) {
    const v = bytes[4]!;
    throw bad('bad_header', `version ${v} ${v > BATCH_VERSION ? 'is newer than' : 'is not'} the version this decoder reads (${BATCH_VERSION})`, 'batch.version');
  }
  bind(bytes);
  const count = D.getUint32(8, true);
  // Each record takes RECORD_HEAD bytes at least: a count beyond that is a damaged header.
  if (count > (bytes.length - BATCH_HEADER) / RECORD_HEAD) {
    throw bad('truncated', `header says ${count} samples; ${bytes.length} bytes cannot hold them`, 'batch.count');
  }
  const samples: Sample[] = new Array(count);
  const indices: number[] = new Array(count);
  const records: Uint8Array[] = new Array(count);
  P = BATCH_HEADER;
  const limit = bytes.length;
  const buffer = bytes.buffer, offset = bytes.byteOffset;
  try {
    for (let i = 0; i < count; i++) {
      const at = P;
      samples[i] = readRecord(limit);
      indices[i] = REC_INDEX;
      records[i] = new Uint8Array(buffer, offset + at, E - at);
      P = E;
    }
  } finally {
    release();
  }
  if (P !== limit) throw bad('bad_field', `${limit - P} bytes follow the last of the ${count} records`, 'batch');
  return { samples, indices, records };
}

const EMPTY = new Uint8Array(0);
const EMPTY_DV = new DataView(EMPTY.buffer);
/** Drops the module's references to the last input, so a decoded batch's buffer is not kept alive by them. */
function release(): void {
  B = EMPTY;
  D = EMPTY_DV;
}

/** One record (as decodeBatch's records[i] gives it, length prefix included). */
export function decodeSampleRecord(record: Uint8Array): { sample: Sample; index: number } {
  bind(record);
  try {
    const sample = readRecord(record.length);
    if (E !== record.length) throw bad('bad_field', `${record.length - E} bytes follow the record`, 'record');
    return { sample, index: REC_INDEX };
  } finally {
    release();
  }
}

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
  const hex = HEX;
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
    const hex = HEX;
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
    if (stEnd <= begin || stEnd - begin > MAX_STACK) throw UNSURE;
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
    if (this.declaredBytes > MAX_SAMPLE) throw UNSURE;
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
