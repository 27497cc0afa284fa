// The binary batch form's decoder (layout: batch-form.ts, docs/dump-format.md): what a worker runs
// on a batch, and the trace store on one stored record. It trusts nothing: every length is checked
// against its record, and a damaged batch is a DumpError naming the field and byte.
import { Buffer } from 'node:buffer';
import { DumpError } from './errors.ts';
import type { CallchainEntry, Regs, Sample, SampleStack, TruthFrame } from './sample.ts';
import {
  BATCH_HEADER, BATCH_VERSION, FLAG_NAMES, HAS_A, HAS_B, isEncodedBatch, KIND_NAMES, OTHER, RECORD_HEAD,
  REG_NAMES, REG_UNDEF, STACK_NAMES, T_CALLCHAIN, T_COMM, T_CPU, T_FRAME, T_HOST, T_KERNEL, T_PERIOD, T_PID,
  T_REGS, T_SOURCE, T_STACK, T_TID, T_TIME, T_TRIGGER, T_TRUTH, T_UNDEF, T_WINDOW, TOL_NAMES, UNDEF_A, UNDEF_B,
  UNDEF_KEYS,
} from './batch-form.ts';

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
