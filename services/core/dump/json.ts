// The JSON and NDJSON forms of the dump (docs/dump-format-json.md, schema in dump.schema.json).
// Every 64-bit value travels as a string: JSON numbers are IEEE doubles, and kernel addresses
// (ffffffff81000000 and up) lie far above 2^53, where a double can no longer hold every integer.
import { Buffer } from 'node:buffer';
import { DumpError, rejectionOf, type Location, type ParseResult, type Rejection, type RejectReason } from './errors.ts';
import {
  CALLCHAIN_FLAGS,
  TOLERANCES,
  TRUTH_KINDS,
  type CallchainEntry,
  type CallchainFlag,
  type FrameKind,
  type GroundTruth,
  type Regs,
  type Sample,
  type SampleStack,
  type StackWindow,
  type Tolerance,
  type TruthFrame,
} from './sample.ts';
import { validateSample } from './validate.ts';
import { PT_REGS_FIELDS, STACK_TYPES, type PtRegsField, type StackType } from '../stack/layout.ts';
import { U64_MASK, formatHex64, parseHex64 } from '../u64.ts';

export const JSON_DUMP_FORMAT = 'stacksanity-dump';
export const JSON_DUMP_VERSION = 1;
/** Default input limit: a batch larger than this is refused whole rather than half-parsed. */
export const DEFAULT_MAX_JSON_BYTES = 256 * 1024 * 1024;

export interface JsonParseOptions {
  /** Named in rejections and in each sample's `source`. */
  file?: string;
  /** Refuse inputs whose UTF-8 size exceeds this (default 256 MiB). */
  maxBytes?: number;
}

// ---------------------------------------------------------------------------------------------
// Writing

/** The JSON-able form of one sample; keys in a fixed order so that dumps diff cleanly. */
export function sampleToJson(s: Sample): object {
  const o: Record<string, unknown> = {};
  if (s.comm !== undefined) o.comm = s.comm;
  if (s.pid !== undefined) o.pid = s.pid;
  if (s.tid !== undefined) o.tid = s.tid;
  if (s.cpu !== undefined) o.cpu = s.cpu;
  if (s.time !== undefined) o.time = s.time;
  if (s.period !== undefined) o.period = u64Text(s.period, 'period').toString();
  o.trigger = s.trigger;
  if (s.host !== undefined) o.host = s.host;
  if (s.kernel !== undefined) o.kernel = s.kernel;
  if (s.regs !== undefined) {
    const regs: Record<string, string> = {};
    // pt_regs order rather than insertion order: the same register set always prints the same way.
    for (const f of PT_REGS_FIELDS) {
      const v = s.regs[f];
      if (v !== undefined) regs[f] = hex(v, `regs.${f}`);
    }
    o.regs = regs;
  }
  o.stacks = s.stacks.map((st, i) => ({
    type: st.type,
    begin: hex(st.begin, `stacks[${i}].begin`),
    end: hex(st.end, `stacks[${i}].end`),
    windows: st.windows.map((w, j) => ({
      start: hex(w.start, `stacks[${i}].windows[${j}].start`),
      data: Buffer.from(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength).toString('base64'),
    })),
  }));
  if (s.callchain !== undefined) {
    o.callchain = s.callchain.map((e, i) => {
      const c: Record<string, unknown> = { addr: hex(e.addr, `callchain[${i}].addr`) };
      if (e.sym !== undefined) c.sym = e.sym;
      if (e.dso !== undefined) c.dso = e.dso;
      // An absent flags key reads back as [], so empty lists are left out to keep lines short.
      if (e.flags.length > 0) c.flags = [...e.flags];
      return c;
    });
  }
  if (s.truth !== undefined) {
    o.truth = {
      frames: s.truth.frames.map((f, i) => {
        const t: Record<string, unknown> = { ip: hex(f.ip, `truth.frames[${i}].ip`), kind: f.kind };
        if (f.entry !== undefined) t.entry = f.entry;
        if (f.tolerated !== undefined) t.tolerated = f.tolerated;
        return t;
      }),
    };
  }
  return o;
}

/**
 * The document form: one key per line, except that each small record (a window, a callchain
 * entry, a truth frame) stays on a line of its own, so that a diff shows which frame changed.
 */
export function formatJsonDump(samples: Sample[]): string {
  const doc = { format: JSON_DUMP_FORMAT, version: JSON_DUMP_VERSION, samples: samples.map(sampleToJson) };
  return pretty(doc, '', false) + '\n';
}

/** One sample per line, each line a complete JSON object; '' for no samples. */
export function formatNdjson(samples: Sample[]): string {
  let out = '';
  for (const s of samples) out += JSON.stringify(sampleToJson(s)) + '\n';
  return out;
}

function hex(v: bigint, what: string): string {
  return formatHex64(u64Text(v, what));
}

// A Sample built in code may hold any bigint; writing a negative or 65-bit value would produce a
// file no reader accepts, so the writer refuses it instead.
function u64Text(v: bigint, what: string): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MASK) throw new RangeError(`${what}: ${String(v)} is not an unsigned 64-bit value`);
  return v;
}

function isScalar(x: unknown): boolean {
  return x === null || typeof x !== 'object';
}

// A record inside a list (window, callchain entry, truth frame) goes on one line when it holds
// only scalars and lists of scalars; everything else gets one key per line. Named objects such as
// regs therefore stay one register per line.
function pretty(v: unknown, indent: string, inList: boolean): string {
  if (isScalar(v)) return JSON.stringify(v);
  const inner = indent + '  ';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    if (v.every(isScalar)) return '[' + v.map((x) => JSON.stringify(x)).join(', ') + ']';
    return '[\n' + v.map((x) => inner + pretty(x, inner, true)).join(',\n') + '\n' + indent + ']';
  }
  const entries = Object.entries(v as object);
  if (entries.length === 0) return '{}';
  if (inList && entries.every(([, x]) => isScalar(x) || (Array.isArray(x) && x.every(isScalar)))) {
    return '{ ' + entries.map(([k, x]) => JSON.stringify(k) + ': ' + pretty(x, inner, false)).join(', ') + ' }';
  }
  return '{\n' + entries.map(([k, x]) => inner + JSON.stringify(k) + ': ' + pretty(x, inner, false)).join(',\n') + '\n' + indent + '}';
}

// ---------------------------------------------------------------------------------------------
// Reading one sample

const SAMPLE_KEYS = new Set(['comm', 'pid', 'tid', 'cpu', 'time', 'period', 'trigger', 'host', 'kernel', 'regs', 'stacks', 'callchain', 'truth']);
const STACK_KEYS = new Set(['type', 'begin', 'end', 'windows']);
const WINDOW_KEYS = new Set(['start', 'data']);
const CALLCHAIN_KEYS = new Set(['addr', 'sym', 'dso', 'flags']);
const TRUTH_KEYS = new Set(['frames']);
const FRAME_KEYS = new Set(['ip', 'kind', 'entry', 'tolerated']);
const DOCUMENT_KEYS = new Set(['$schema', 'format', 'version', 'samples']);

// perf prints pid/tid/cpu as -1 when it does not know them; pid_t and the cpu number fit in 32 bits.
const MIN_ID = -1;
const MAX_ID = 0xffffffff;
// perf's "seconds.fraction"; kept as text so that nanosecond timestamps stay exact.
const TIME_RE = /^[0-9]+(?:\.[0-9]+)?$/;
const DECIMAL_RE = /^[0-9]{1,20}$/;

type Obj = Record<string, unknown>;

/** Decodes and validates one sample object. Throws DumpError naming the field path. */
export function sampleFromJson(o: unknown, where: Location = {}): Sample {
  const d = new Decoder(where);
  const root = d.object(o, '');
  d.onlyKeys(root, SAMPLE_KEYS, '');

  const s: Sample = { trigger: '', stacks: [] };
  if (has(root, 'comm')) s.comm = d.string(root.comm, 'comm');
  if (has(root, 'pid')) s.pid = d.id(root.pid, 'pid');
  if (has(root, 'tid')) s.tid = d.id(root.tid, 'tid');
  if (has(root, 'cpu')) s.cpu = d.id(root.cpu, 'cpu');
  if (has(root, 'time')) {
    const t = d.string(root.time, 'time');
    if (!TIME_RE.test(t)) d.fail('bad_field', 'time', `expected perf's seconds with an optional fraction (e.g. "12345.678901"), got ${show(t)}`);
    s.time = t;
  }
  if (has(root, 'period')) s.period = d.decimal64(root.period, 'period');
  s.trigger = d.string(d.required(root, 'trigger', ''), 'trigger');
  if (s.trigger === '') d.fail('bad_field', 'trigger', 'is empty; name what took the sample (nmi, timer, an event name)');
  if (has(root, 'host')) s.host = d.string(root.host, 'host');
  if (has(root, 'kernel')) s.kernel = d.string(root.kernel, 'kernel');
  if (has(root, 'regs')) s.regs = d.regs(root.regs);
  s.stacks = d.array(d.required(root, 'stacks', ''), 'stacks').map((x, i) => d.stack(x, `stacks[${i}]`));
  if (has(root, 'callchain')) s.callchain = d.array(root.callchain, 'callchain').map((x, i) => d.callchainEntry(x, `callchain[${i}]`));
  if (has(root, 'truth')) s.truth = d.truth(root.truth);

  if (where.file !== undefined && where.line !== undefined) s.source = { file: where.file, line: where.line };
  validateSample(s, where);
  return s;
}

class Decoder {
  private readonly where: Location;
  constructor(where: Location) {
    this.where = where;
  }

  fail(reason: RejectReason, field: string, message: string): never {
    throw new DumpError(reason, message, { ...this.where, field: field === '' ? '(sample)' : field });
  }

  // A wrong JSON type is "JSON of the wrong shape" (bad_json); a right type with a wrong value is
  // bad_field or bad_hex, so the rejection counters separate broken producers from odd data.
  wrongType(v: unknown, field: string, expected: string): never {
    return this.fail('bad_json', field, `expected ${expected}, got ${typeName(v)}`);
  }

  object(v: unknown, field: string): Obj {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.wrongType(v, field, 'an object');
    return v as Obj;
  }

  array(v: unknown, field: string): unknown[] {
    if (!Array.isArray(v)) this.wrongType(v, field, 'an array');
    return v;
  }

  string(v: unknown, field: string): string {
    if (typeof v !== 'string') this.wrongType(v, field, 'a string');
    return v;
  }

  required(o: Obj, key: string, path: string): unknown {
    if (!has(o, key)) this.fail('bad_field', join(path, key), 'is required but missing');
    return o[key];
  }

  onlyKeys(o: Obj, allowed: ReadonlySet<string>, path: string): void {
    for (const k of Object.keys(o)) {
      if (!allowed.has(k)) this.fail('bad_field', join(path, k), `unknown key; expected one of ${[...allowed].join(', ')}`);
    }
  }

  id(v: unknown, field: string): number {
    if (typeof v !== 'number') this.wrongType(v, field, 'an integer');
    if (!Number.isInteger(v) || v < MIN_ID || v > MAX_ID) this.fail('bad_field', field, `expected an integer from ${MIN_ID} to ${MAX_ID}, got ${v}`);
    // JSON.parse('-0') is -0, which JSON.stringify writes back as 0: normalise so a round trip is exact.
    return v === 0 ? 0 : v;
  }

  hex(v: unknown, field: string): bigint {
    if (typeof v !== 'string') {
      if (typeof v === 'number') this.fail('bad_json', field, `expected a hex string, got number ${v}: 64-bit values are strings because JSON numbers lose precision above 2^53`);
      this.wrongType(v, field, 'a hex string');
    }
    const n = parseHex64(v);
    if (n === undefined) this.fail('bad_hex', field, `expected 1-16 hex digits with an optional 0x, got ${show(v)}`);
    return n;
  }

  decimal64(v: unknown, field: string): bigint {
    if (typeof v !== 'string') {
      if (typeof v === 'number') this.fail('bad_json', field, `expected a decimal string, got number ${v}: 64-bit values are strings because JSON numbers lose precision above 2^53`);
      this.wrongType(v, field, 'a decimal string');
    }
    if (!DECIMAL_RE.test(v)) this.fail('bad_field', field, `expected an unsigned decimal integer of at most 20 digits, got ${show(v)}`);
    const n = BigInt(v);
    if (n > U64_MASK) this.fail('bad_field', field, `${v} does not fit in 64 bits`);
    return n;
  }

  oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[]): T {
    const s = this.string(v, field);
    if (!(allowed as readonly string[]).includes(s)) this.fail('bad_field', field, `unknown value ${show(s)}; expected one of ${allowed.join(', ')}`);
    return s as T;
  }

  regs(v: unknown): Regs {
    const o = this.object(v, 'regs');
    this.onlyKeys(o, REG_NAMES, 'regs');
    const regs: Regs = {};
    for (const f of PT_REGS_FIELDS) if (has(o, f)) regs[f] = this.hex(o[f], `regs.${f}`);
    return regs;
  }

  stack(v: unknown, path: string): SampleStack {
    const o = this.object(v, path);
    this.onlyKeys(o, STACK_KEYS, path);
    const type: StackType = this.oneOf(this.required(o, 'type', path), `${path}.type`, STACK_TYPES);
    const begin = this.hex(this.required(o, 'begin', path), `${path}.begin`);
    const end = this.hex(this.required(o, 'end', path), `${path}.end`);
    // A stack with bounds but no captured bytes still tells the unwinder where a link may point.
    const windows = has(o, 'windows') ? this.array(o.windows, `${path}.windows`).map((w, i) => this.window(w, `${path}.windows[${i}]`)) : [];
    return { type, begin, end, windows };
  }

  window(v: unknown, path: string): StackWindow {
    const o = this.object(v, path);
    this.onlyKeys(o, WINDOW_KEYS, path);
    const start = this.hex(this.required(o, 'start', path), `${path}.start`);
    const data = this.string(this.required(o, 'data', path), `${path}.data`);
    return { start, bytes: this.base64(data, `${path}.data`) };
  }

  // Buffer.from(s, 'base64') skips characters it does not know, so a damaged window would decode
  // to fewer bytes at the wrong addresses; re-encoding and comparing catches every such case.
  base64(s: string, field: string): Uint8Array {
    const buf = Buffer.from(s, 'base64');
    if (buf.toString('base64') !== s) this.fail('bad_field', field, `is not canonical base64 (RFC 4648 alphabet with = padding): ${show(s)}`);
    // A copy with its own ArrayBuffer: Buffer's small allocations share an 8 KiB pool, and a
    // window's .buffer must not expose (or alias) neighbouring data.
    return new Uint8Array(buf);
  }

  callchainEntry(v: unknown, path: string): CallchainEntry {
    const o = this.object(v, path);
    this.onlyKeys(o, CALLCHAIN_KEYS, path);
    const e: CallchainEntry = { addr: this.hex(this.required(o, 'addr', path), `${path}.addr`), flags: [] };
    if (has(o, 'sym')) e.sym = this.string(o.sym, `${path}.sym`);
    if (has(o, 'dso')) e.dso = this.string(o.dso, `${path}.dso`);
    if (has(o, 'flags')) {
      e.flags = this.array(o.flags, `${path}.flags`).map((f, i): CallchainFlag => this.oneOf(f, `${path}.flags[${i}]`, CALLCHAIN_FLAGS));
    }
    return e;
  }

  truth(v: unknown): GroundTruth {
    const o = this.object(v, 'truth');
    this.onlyKeys(o, TRUTH_KEYS, 'truth');
    const frames = this.array(this.required(o, 'frames', 'truth'), 'truth.frames');
    return { frames: frames.map((f, i) => this.frame(f, `truth.frames[${i}]`)) };
  }

  frame(v: unknown, path: string): TruthFrame {
    const o = this.object(v, path);
    this.onlyKeys(o, FRAME_KEYS, path);
    const ip = this.hex(this.required(o, 'ip', path), `${path}.ip`);
    const kind: FrameKind = this.oneOf(this.required(o, 'kind', path), `${path}.kind`, TRUTH_KINDS);
    const f: TruthFrame = { ip, kind };
    if (has(o, 'entry')) f.entry = this.string(o.entry, `${path}.entry`);
    if (has(o, 'tolerated')) f.tolerated = this.oneOf(o.tolerated, `${path}.tolerated`, TOLERANCES) satisfies Tolerance;
    return f;
  }
}

const REG_NAMES: ReadonlySet<string> = new Set<PtRegsField>(PT_REGS_FIELDS);

function has(o: Obj, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

const IDENT_RE = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** 'stacks[1].windows[0].start'; keys that are not identifiers are quoted so the path stays unambiguous. */
function join(path: string, key: string): string {
  if (!IDENT_RE.test(key) || key.length > 60) return `${path}[${show(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

/** A value quoted for a message, cut short: a hostile input must not turn into a megabyte error. */
function show(s: string): string {
  const max = 60;
  return JSON.stringify(s.length > max ? s.slice(0, max) + '…' : s);
}

function typeName(v: unknown): string {
  if (v === null) return 'null (leave the key out instead)';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `string ${show(v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  return typeof v === 'object' ? 'an object' : typeof v;
}

// ---------------------------------------------------------------------------------------------
// Reading a whole input

/**
 * Reads a document {"format":"stacksanity-dump","version":1,"samples":[...]}, a bare array of
 * samples, a single sample object, or NDJSON (one sample object per line), whichever the text is.
 * Each sample is decoded on its own, so one bad sample becomes one rejection and the rest survive.
 * Never throws.
 */
export function parseJsonDump(text: string, opts: JsonParseOptions = {}): ParseResult<Sample> {
  // Every DumpError and SyntaxError raised while parsing is caught here and becomes a Rejection,
  // so the stack trace V8 captures for each is pure cost: with traces on, a batch of broken lines
  // spends most of its time walking the stack. The limit is restored before returning.
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return parseInput(text, opts);
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

function parseInput(text: string, opts: JsonParseOptions): ParseResult<Sample> {
  const file = opts.file;
  const base: Location = file === undefined ? {} : { file };
  try {
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_JSON_BYTES;
    // UTF-8 needs at most 3 bytes per UTF-16 unit, so most inputs skip the exact count.
    if (text.length * 3 > maxBytes) {
      const size = Buffer.byteLength(text, 'utf8');
      if (size > maxBytes) return whole('oversized', `input is ${size} bytes; the limit is ${maxBytes}`, base);
    }
    // A UTF-8 BOM survives decoding as U+FEFF, which JSON.parse refuses.
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    if (text.trim() === '') return { samples: [], rejected: [] };

    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      return parseNdjsonOr(text, e, base);
    }
    if (Array.isArray(value)) return decodeAll(value, text, 'array', base);
    if (value !== null && typeof value === 'object') {
      const o = value as Obj;
      if (has(o, 'format') || has(o, 'version') || has(o, 'samples')) return parseDocument(o, text, base);
      return decodeAll([o], text, 'single', base);
    }
    return whole('bad_json', `expected a dump document, an array of samples or a sample object, got ${typeName(value)}`, base);
  } catch (e) {
    // Only reachable through a bug or an engine limit (e.g. a string too long to build); the
    // contract is that bad input yields rejections, so report it as one rather than crash a worker.
    return whole('bad_json', `could not read the input: ${errorText(e)}`, base);
  }
}

function whole(reason: RejectReason, message: string, where: Location): ParseResult<Sample> {
  return { samples: [], rejected: [rejectionOf(new DumpError(reason, message, where), 0)] };
}

function parseDocument(o: Obj, text: string, base: Location): ParseResult<Sample> {
  const fail = (reason: RejectReason, field: string, message: string) => whole(reason, message, { ...base, field });
  for (const k of Object.keys(o)) {
    if (!DOCUMENT_KEYS.has(k)) return fail('bad_field', join('', k), `unknown key in the dump document; expected one of ${[...DOCUMENT_KEYS].join(', ')}`);
  }
  if (has(o, '$schema') && typeof o.$schema !== 'string') return fail('bad_json', '$schema', `expected a string, got ${typeName(o.$schema)}`);
  if (!has(o, 'format')) return fail('bad_field', 'format', `is required but missing; expected "${JSON_DUMP_FORMAT}"`);
  if (o.format !== JSON_DUMP_FORMAT) return fail('bad_field', 'format', `expected "${JSON_DUMP_FORMAT}", got ${typeName(o.format)}`);
  if (!has(o, 'version')) return fail('bad_field', 'version', `is required but missing; expected ${JSON_DUMP_VERSION}`);
  if (o.version !== JSON_DUMP_VERSION) return fail('bad_field', 'version', `unsupported version ${typeName(o.version)}; this reader knows version ${JSON_DUMP_VERSION}`);
  if (!has(o, 'samples')) return fail('bad_field', 'samples', 'is required but missing');
  if (!Array.isArray(o.samples)) return fail('bad_json', 'samples', `expected an array, got ${typeName(o.samples)}`);
  return decodeAll(o.samples, text, 'document', base);
}

type Form = 'array' | 'document' | 'single';

function decodeAll(items: unknown[], text: string, form: Form, base: Location): ParseResult<Sample> {
  const out: ParseResult<Sample> = { samples: [], rejected: [] };
  // Line numbers cost a scan of the whole text; only pay for it when a sample keeps its source
  // or a rejection needs to say where.
  let lines: number[] | undefined;
  const lineOf = (i: number): number | undefined => {
    lines ??= sampleLines(text, form);
    return lines[i];
  };
  for (let i = 0; i < items.length; i++) {
    const where: Location = { ...base, sampleIndex: i };
    if (base.file !== undefined) {
      const line = lineOf(i);
      if (line !== undefined) where.line = line;
    }
    try {
      out.samples.push(sampleFromJson(items[i], where));
    } catch (e) {
      const line = where.line ?? lineOf(i);
      out.rejected.push(toRejection(e instanceof DumpError && line !== undefined ? new DumpError(e.reason, e.message, { ...e.where, line }) : e, i));
    }
  }
  return out;
}

function toRejection(e: unknown, sampleIndex: number): Rejection {
  if (e instanceof DumpError) return rejectionOf(e, sampleIndex);
  const message = e instanceof Error ? e.message : String(e);
  return rejectionOf(new DumpError('bad_json', `could not decode the sample: ${message}`), sampleIndex);
}

/** How many leading lines must hold at least one object before the text counts as NDJSON. */
const NDJSON_PROBE_LINES = 100;

/**
 * The whole text is not one JSON value. If it is NDJSON, decode line by line; otherwise report
 * the JSON error once. A pretty-printed document starts with a line holding only '{' or '[' and
 * is never taken for NDJSON; other text counts as NDJSON when one of its first
 * NDJSON_PROBE_LINES non-blank lines is a JSON object by itself. The probe bounds the work spent
 * on text that is not JSON at all (perf script sent to the wrong endpoint): a few hundred failed
 * parses, not one per line of a 256 MiB file.
 */
function parseNdjsonOr(text: string, err: unknown, base: Location): ParseResult<Sample> {
  const lines = text.split('\n');
  const first = lines.find((l) => l.trim() !== '')?.trim();
  const looksPretty = first === '{' || first === '[';
  if (!looksPretty && lines.filter((l) => l.trim() !== '').length >= 2) {
    const out: ParseResult<Sample> = { samples: [], rejected: [] };
    let index = 0;
    let objects = 0;
    for (let ln = 0; ln < lines.length; ln++) {
      if (objects === 0 && index >= NDJSON_PROBE_LINES) break;
      const raw = lines[ln]!;
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      const start = line.search(/\S/);
      if (start === -1) continue;
      const i = index++;
      const where: Location = { ...base, line: ln + 1, sampleIndex: i };
      const reject = (reason: RejectReason, message: string) => out.rejected.push(rejectionOf(new DumpError(reason, message, where), i));
      // Only an object can be a sample; saying so is cheaper and clearer than JSON.parse's error.
      if (line.charCodeAt(start) !== 0x7b /* { */) {
        reject('bad_json', `an NDJSON line must hold one sample object, but column ${start + 1} is ${show(line.slice(start, start + 20))}`);
        continue;
      }
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        const pos = jsonErrorPosition(e, line.length);
        reject('bad_json', `not valid JSON${pos === undefined ? '' : ` at column ${pos + 1}`}: ${errorText(e)}`);
        continue;
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        reject('bad_json', `an NDJSON line must hold one sample object, got ${typeName(v)}`);
        continue;
      }
      objects++;
      try {
        out.samples.push(sampleFromJson(v, where));
      } catch (e) {
        out.rejected.push(toRejection(e, i));
      }
    }
    if (objects > 0) return out;
  }
  const pos = jsonErrorPosition(err, text.length);
  if (pos === undefined) return whole('bad_json', `not valid JSON: ${errorText(err)}`, base);
  const { line, column } = lineColumn(text, pos);
  return whole('bad_json', `not valid JSON at column ${column}: ${errorText(err)}`, { ...base, line });
}

function errorText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 200 ? m.slice(0, 200) + '…' : m;
}

/**
 * Where V8 says the error is: "... in JSON at position N", or the end for "Unexpected end of JSON
 * input". Some messages ("Unexpected token 'x', ...") carry no position; then neither do we.
 */
function jsonErrorPosition(e: unknown, length: number): number | undefined {
  const message = e instanceof Error ? e.message : '';
  const m = /position (\d+)/.exec(message);
  if (m) return Math.min(Number(m[1]), length);
  return /end of JSON input/.test(message) ? length : undefined;
}

function lineColumn(text: string, pos: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < pos; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: pos - lineStart + 1 };
}

/**
 * The 1-based line on which each sample begins. JSON.parse gives no positions, so this walks
 * the (already valid) text once, tracking only nesting and strings: the samples are the
 * elements of the root array, or of the root object's "samples" array (the last one, as
 * JSON.parse keeps the last of duplicate keys).
 */
function sampleLines(text: string, form: Form): number[] {
  const n = text.length;
  if (form === 'single') {
    let i = 0;
    while (i < n && isSpace(text.charCodeAt(i))) i++;
    return [lineColumn(text, i).line];
  }
  const elementDepth = form === 'array' ? 1 : 2;
  let offsets: number[] = [];
  let current: number[] | undefined;
  let depth = 0;
  let expectElement = false;
  let expectKey = false;
  let lastKey: string | undefined;
  let samplesValueNext = false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (isSpace(c)) continue;
    const opensSamples = samplesValueNext;
    samplesValueNext = false;
    if (expectElement && c !== 0x5d /* ] */) {
      current!.push(i);
      expectElement = false;
    }
    if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      if (form === 'document' && depth === 1 && expectKey) {
        lastKey = JSON.parse(text.slice(i, end + 1)) as string;
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (form === 'document' && depth === 1) expectKey = true;
      const startsContainer = c === 0x5b && ((form === 'array' && depth === 1) || (form === 'document' && depth === 2 && opensSamples));
      if (startsContainer) {
        current = [];
        expectElement = true;
      }
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (current && c === 0x5d && depth === elementDepth) {
        offsets = current;
        current = undefined;
      }
      expectElement = false;
      depth--;
    } else if (c === 0x2c /* , */) {
      if (current && depth === elementDepth) expectElement = true;
      if (form === 'document' && depth === 1) expectKey = true;
    } else if (c === 0x3a /* : */) {
      if (form === 'document' && depth === 1) samplesValueNext = lastKey === 'samples';
    }
  }
  const lines: number[] = [];
  let line = 1;
  let at = 0;
  for (const off of offsets) {
    for (let j = text.indexOf('\n', at); j !== -1 && j < off; j = text.indexOf('\n', j + 1)) {
      line++;
      at = j + 1;
    }
    lines.push(line);
  }
  return lines;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Index of the quote closing the string that opens at i; skips long base64 strings with indexOf. */
function stringEnd(text: string, i: number): number {
  let j = i;
  for (;;) {
    j = text.indexOf('"', j + 1);
    if (j === -1) return text.length - 1;
    let backslashes = 0;
    for (let k = j - 1; text.charCodeAt(k) === 0x5c; k--) backslashes++;
    if (backslashes % 2 === 0) return j;
  }
}
