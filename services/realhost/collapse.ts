// Folded stacks from `perf script` text, exactly as brendangregg/FlameGraph's stackcollapse-perf.pl
// prints them (reference/peers-and-formats.md §2.6), so that flamegraph.pl, inferno and speedscope
// read our output as their own. Byte-for-byte conformance is tested against FlameGraph's goldens.
//
// The Perl script is a per-line state machine driven by three regexes. It reads bytes, so this
// module works on a latin1 string (one char per byte) and every character class below is the Perl
// byte-string one: \s is [\t\n\v\f\r ] (not JS's Unicode \s), `.` is [^\n] (JS's `.` also stops at
// \r). The three line regexes are solved by hand-written scanners that give the match the Perl
// engine would (the reasoning is at each one; test/realhost/collapse.test.ts checks them against
// the regexes on every corpus line), in linear time and without building a line string.
//
// Pure: bytes in, folded text out; no I/O.

export interface CollapseOptions {
  /** --pid: `comm-PID` (perf's default output has only the TID, so PID prints as `?`). */
  pid?: boolean;
  /** --tid: `comm-PID/TID`. Wins over pid, as in the Perl script. */
  tid?: boolean;
  /** --kernel: `_[k]` after kernel functions (dso `[...]` or `...vmlinux`). */
  kernel?: boolean;
  /** --jit: `_[j]` after functions from a `/tmp/perf-PID.map`. */
  jit?: boolean;
  /** --all: kernel and jit annotations. */
  all?: boolean;
  /** --addrs: `[dso <pc>]` instead of `[dso]` for unresolved frames. */
  addrs?: boolean;
  /** --event-filter: keep this event only; by default the first event seen. */
  eventFilter?: string;
}

export interface CollapseResult {
  /** The folded lines, `comm;root;...;leaf count\n`, sorted bytewise (Perl `sort { $a cmp $b }`). */
  text: string;
  /** Distinct stacks. */
  stacks: number;
  /** Lines that were neither comment, blank, header nor frame (Perl: "Unrecognized line"). */
  unrecognized: number;
  /** Set when samples of other events were dropped (Perl prints "Filtering for events of type: X"). */
  filteredEvent?: string;
}

// Character classes by table, one load per char (these loops are the collapser's hot path).
const WS = 1; // Perl's \s on byte strings: space \t \n \v \f \r (not JS's Unicode \s)
const DIGIT = 2;
const WORD = 4; // \w: [A-Za-z0-9_]
const TIDY_HARD = 8; // + " ' - [
const TIDY_SEMI = 16; // ;
const TIDY_SLASH = 32; // /
const TIDY_PAREN = 64; // (
const CLASS = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]) CLASS[c] = WS;
for (let c = 0x30; c <= 0x39; c++) CLASS[c] = DIGIT | WORD;
for (let c = 0x41; c <= 0x5a; c++) CLASS[c] = WORD;
for (let c = 0x61; c <= 0x7a; c++) CLASS[c] = WORD;
CLASS[0x5f] = WORD;
for (const c of [0x2b, 0x22, 0x27, 0x2d, 0x5b]) CLASS[c] = TIDY_HARD;
CLASS[0x28] = TIDY_PAREN;
CLASS[0x3b] = TIDY_SEMI;
CLASS[0x2f] = TIDY_SLASH;

function cls(s: Uint8Array, i: number): number {
  return CLASS[s[i]!]!;
}
function isWs(c: number): boolean {
  return CLASS[c] === WS;
}

/**
 * The text as bytes for the scanners: typed-array loads cost a fraction of charCodeAt, and the
 * frame table hashes and compares its keys there. A latin1 string converts natively; chars past
 * 0xff (a caller passing UTF-16 text) become 0xff, which like them belongs to no class, and `wide`
 * makes key comparisons use the text itself.
 */
const NON_LATIN1_RE = /[^\x00-\xff]/;
function bytesOf(text: string): { b: Uint8Array; wide: boolean } {
  // Instant on a one-byte string: V8 knows no char of it can match.
  if (!NON_LATIN1_RE.test(text)) return { b: Buffer.from(text, 'latin1'), wide: false };
  const b = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    b[i] = c < 256 ? c : 0xff;
  }
  return { b, wide: true };
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

// The Perl regexes, translated class for class; used where the scanner declines.
const OFFSET_RE = /\+0x[0-9a-f]+$/;
const PAREN_TAIL_RE = /\((?!anonymous namespace\))[^\n]*/;
const QUOTES_RE = /["']/g;
const JIT_MAP_RE = /\/tmp\/perf-\d+\.map/;

/**
 * Header: `^(\S.+?)\s+(\d+)\/*(\d+)*\s+`. The lazy comm makes the match the first position e >= 2
 * where a whitespace run, digits, slashes, digits and one more whitespace follow. At a given e no
 * backtracking can help: every shorter choice leaves a digit, slash or non-space where the next
 * element needs something else. Returns [commEnd, pidStart, pidEnd, tidStart, tidEnd] or null.
 */
const headerOut = new Int32Array(5);
function scanHeader(s: Uint8Array, from: number, to: number): boolean {
  if (to - from < 2 || isWs(s[from]!)) return false;
  for (let e = from + 2; e < to; e++) {
    if (!isWs(s[e]!)) continue;
    let p = e + 1;
    while (p < to && isWs(s[p]!)) p++;
    const d1 = p;
    // Every blank of this run up to d1 would lead to the same d1 and the same verdict: on a miss,
    // go on after the run (trying each blank of a long run of blanks was quadratic in its length).
    const next = d1 - 1;
    while (p < to && isDigit(s[p]!)) p++;
    if (p === d1) {
      e = next;
      continue;
    }
    const d1e = p;
    while (p < to && s[p]! === 0x2f) p++;
    const d2 = p;
    while (p < to && isDigit(s[p]!)) p++;
    if (p >= to || !isWs(s[p]!)) {
      e = next;
      continue;
    }
    headerOut[0] = e;
    headerOut[1] = d1;
    headerOut[2] = d1e;
    headerOut[3] = d2;
    headerOut[4] = p;
    return true;
  }
  return false;
}

/**
 * Event: `:\s*(\d+)*\s+(\S+):\s*$`, searched leftmost. It can only end at the line's end, so the
 * last non-blank char is the closing colon, (\S+) is the whole last token before it, and what lies
 * between it and an earlier colon is blanks with at most one digit run: that colon is unique.
 * Sets eventOut = [periodStart, periodEnd (or -1), eventStart, eventEnd]; false if no match.
 */
const eventOut = new Int32Array(4);
function scanEvent(s: Uint8Array, from: number, to: number): boolean {
  let t = to;
  while (t > from && isWs(s[t - 1]!)) t--;
  if (t - from < 2 || s[t - 1]! !== 0x3a) return false;
  let st = t - 1;
  while (st > from && !isWs(s[st - 1]!)) st--;
  if (st === from || t - 1 - st < 1) return false;
  let w = st;
  while (w > from && isWs(s[w - 1]!)) w--;
  if (w === from) return false;
  eventOut[2] = st;
  eventOut[3] = t - 1;
  const c = s[w - 1]!;
  if (c === 0x3a) {
    eventOut[0] = -1;
    eventOut[1] = -1;
    return true;
  }
  if (!isDigit(c)) return false;
  let d = w - 1;
  while (d > from && isDigit(s[d - 1]!)) d--;
  let v = d;
  while (v > from && isWs(s[v - 1]!)) v--;
  if (v === from || s[v - 1]! !== 0x3a) return false;
  eventOut[0] = d;
  eventOut[1] = w;
  return true;
}

/**
 * Stack line: `^\s*(\w+)\s*(.+) \((.*)\)` (not anchored at the end), solved without a regex
 * (a backtracking engine is cubic on long lines with many " (" and no ")"). The greedy (.*) runs
 * to the last ")", and (.+) ends at the last " (" at least two chars before it, whatever came
 * first. The engine tries the pc and the blanks after it longest first, so the symbol starts at
 * the latest position it can: after all the blanks, or, when the last " (" comes too early, as
 * late as that allows — inside the blanks or even inside the pc's word.
 * Sets stackOut = [pcStart, pcEnd, funcStart, funcEnd, modStart, modEnd]; false if no match.
 */
const stackOut = new Int32Array(6);
function scanStack(s: Uint8Array, from: number, to: number): boolean {
  let p = from;
  while (p < to && isWs(s[p]!)) p++;
  const pc = p;
  while (p < to && (cls(s, p) & WORD) !== 0) p++;
  if (p === pc) return false;
  const pcEnd = p;
  while (p < to && isWs(s[p]!)) p++;
  let close = to - 1;
  while (close >= pc + 4 && s[close]! !== 0x29) close--;
  if (close < pc + 4) return false;
  let open = close - 2;
  while (open >= pc + 2 && !(s[open]! === 0x20 && s[open + 1]! === 0x28)) open--;
  if (open < pc + 2) return false;
  const f = Math.min(p, open - 1);
  stackOut[0] = pc;
  stackOut[1] = Math.min(pcEnd, f);
  stackOut[2] = f;
  stackOut[3] = open;
  stackOut[4] = open + 2;
  stackOut[5] = close;
  return true;
}

// What a symbol needs, from one pass over its characters.
const NEEDS_HARD = TIDY_HARD; // offsets, argument lists, quotes, "->" chains, [unknown]
const NEEDS_SEMI = TIDY_SEMI; // ; becomes :
const NEEDS_SLASH = TIDY_SLASH; // a "/" (a Java L prefix goes only when there is one)
const NEEDS_PAREN = TIDY_PAREN; // an argument list to cut (C++: JavaThread::run())

function tidyNeeds(s: Uint8Array, from: number, to: number): number {
  let needs = 0;
  for (let i = from; i < to; i++) needs |= cls(s, i);
  return needs;
}

function isKernelMod(mod: string): boolean {
  // Perl: $mod =~ m/(^\[|vmlinux$)/ && $mod !~ /unknown/
  return (mod.charCodeAt(0) === 0x5b || mod.endsWith('vmlinux')) && !mod.includes('unknown');
}

/**
 * Distinct samples as sequences of ints — the process name's id, then the frames' ids leaf first —
 * in an open-addressing table. A sample is counted by hashing a few dozen ints instead of building
 * and hashing its folded line (a kilobyte of text); the lines are built once per distinct sequence.
 */
class SequenceTable {
  private slots: Int32Array = new Int32Array(1024).fill(-1);
  /** Per entry: where its ints start in pool, how many, their hash, the summed period. */
  starts: Int32Array = new Int32Array(256);
  lens: Int32Array = new Int32Array(256);
  private hashes: Int32Array = new Int32Array(256);
  sums: Float64Array = new Float64Array(256);
  size = 0;
  pool: Int32Array = new Int32Array(4096);
  private poolLen = 0;

  /** Adds `period` to the entry of seq[0..len), creating it. */
  add(seq: Int32Array, len: number, period: number): void {
    let h = 0x811c9dc5 | 0;
    for (let i = 0; i < len; i++) h = Math.imul(h ^ seq[i]!, 0x01000193);
    h ^= h >>> 15;
    const slots = this.slots;
    const mask = slots.length - 1;
    const pool = this.pool;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const e = slots[s]!;
      if (e < 0) break;
      if (this.hashes[e] !== h || this.lens[e] !== len) continue;
      const at = this.starts[e]!;
      let i = 0;
      while (i < len && pool[at + i] === seq[i]) i++;
      if (i === len) {
        this.sums[e] = this.sums[e]! + period;
        return;
      }
    }
    this.insert(seq, len, h, period);
  }

  private insert(seq: Int32Array, len: number, h: number, period: number): void {
    const e = this.size++;
    if (e === this.starts.length) {
      this.starts = grow(this.starts, e * 2);
      this.lens = grow(this.lens, e * 2);
      this.hashes = grow(this.hashes, e * 2);
      const sums = new Float64Array(e * 2);
      sums.set(this.sums);
      this.sums = sums;
    }
    if (this.poolLen + len > this.pool.length) this.pool = grow(this.pool, Math.max(this.pool.length * 2, this.poolLen + len));
    this.pool.set(seq.subarray(0, len), this.poolLen);
    this.starts[e] = this.poolLen;
    this.lens[e] = len;
    this.hashes[e] = h;
    this.sums[e] = period;
    this.poolLen += len;
    // Keep the load under one half: probes stay short.
    if (this.size * 2 > this.slots.length) {
      const slots = new Int32Array(this.slots.length * 2).fill(-1);
      const mask = slots.length - 1;
      for (let k = 0; k < this.size; k++) {
        let s = this.hashes[k]! & mask;
        while (slots[s]! >= 0) s = (s + 1) & mask;
        slots[s] = k;
      }
      this.slots = slots;
    } else {
      const mask = this.slots.length - 1;
      let s = h & mask;
      while (this.slots[s]! >= 0) s = (s + 1) & mask;
      this.slots[s] = e;
    }
  }
}

/**
 * Frame ids by key text, a range of the input: hashed and compared in place, on the bytes, so a
 * frame line costs no string. (A Map keyed by a slice of each line spent half the collapse hashing
 * it: a runtime call per line.)
 */
class FrameTable {
  private slots: Int32Array = new Int32Array(4096).fill(-1);
  /** Per entry: its key's start and end in the input, its hash, at 3e, 3e+1, 3e+2. */
  private keys: Int32Array = new Int32Array(3 * 1024);
  private size = 0;
  // The last find's key and free slot, for insert.
  private from = 0;
  private to = 0;
  private h = 0;
  private slot = 0;

  private readonly view: DataView;

  constructor(private readonly b: Uint8Array, private readonly text: string, private readonly wide: boolean) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  /** The id of input[from..to) (with the java bit), or -1; a miss remembers the slot for insert. */
  find(from: number, to: number, java: boolean): number {
    const b = this.b;
    const v = this.view;
    // Four bytes per step (unaligned little-endian loads), then the tail: the hash and the compare
    // are most of a frame line's cost.
    const words = to - ((to - from) & 3);
    let h = java ? 0x5bd1e995 : 0x811c9dc5 | 0;
    for (let i = from; i < words; i += 4) h = Math.imul(h ^ v.getInt32(i, true), 0x01000193);
    for (let i = words; i < to; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
    h ^= h >>> 13;
    // Bit 0 of the stored hash is the java bit: the same text folds differently in a java process.
    h = (h & ~1) | (java ? 1 : 0);
    const slots = this.slots;
    const keys = this.keys;
    const mask = slots.length - 1;
    const len = to - from;
    let s = (h >>> 1) & mask;
    for (; ; s = (s + 1) & mask) {
      const e = slots[s]!;
      if (e < 0) break;
      const k = e * 3;
      if (keys[k + 2] !== h) continue;
      const at = keys[k]!;
      if (keys[k + 1]! - at !== len) continue;
      let i = 0;
      if (this.wide) {
        const t = this.text;
        while (i < len && t.charCodeAt(at + i) === t.charCodeAt(from + i)) i++;
      } else {
        const w = len & ~3;
        while (i < w && v.getInt32(at + i, true) === v.getInt32(from + i, true)) i += 4;
        if (i === w) while (i < len && b[at + i] === b[from + i]) i++;
      }
      if (i === len) return e;
    }
    this.from = from;
    this.to = to;
    this.h = h;
    this.slot = s;
    return -1;
  }

  /** Stores the key of the last missed find; returns its id (ids count from 0). */
  insert(): number {
    const e = this.size++;
    if (e * 3 === this.keys.length) this.keys = grow(this.keys, e * 6);
    this.keys[e * 3] = this.from;
    this.keys[e * 3 + 1] = this.to;
    this.keys[e * 3 + 2] = this.h;
    if (this.size * 2 <= this.slots.length) {
      this.slots[this.slot] = e;
      return e;
    }
    const slots = new Int32Array(this.slots.length * 2).fill(-1);
    const mask = slots.length - 1;
    for (let k = 0; k < this.size; k++) {
      let s = (this.keys[k * 3 + 2]! >>> 1) & mask;
      while (slots[s]! >= 0) s = (s + 1) & mask;
      slots[s] = k;
    }
    this.slots = slots;
    return e;
  }
}

function grow(a: Int32Array, n: number): Int32Array {
  const b = new Int32Array(n);
  b.set(a);
  return b;
}

/** Collapses perf script text (latin1: one char per byte, as Perl reads it). */
export function collapsePerfScript(text: string, opts: CollapseOptions = {}): CollapseResult {
  const fold: FoldOptions = {
    kernel: !!(opts.kernel || opts.all),
    jit: !!(opts.jit || opts.all),
    addrs: !!opts.addrs,
  };
  const includeTid = !!opts.tid;
  const includePid = !!opts.pid;
  let eventFilter = opts.eventFilter ?? '';
  let eventDefaulted = false;
  let filteredEvent: string | undefined;

  // Every distinct frame text gets an id and its folded pieces, computed once: perf prints the
  // same few thousand frames over and over. The key is the line from the symbol to the dso's ")"
  // (with --addrs from the pc: an [unknown] frame's name then carries it), which decides the
  // pieces, given whether the process is `java`. Ids are the frame table's, so pieces[id] lines up.
  const { b, wide } = bytesOf(text);
  const frames = new FrameTable(b, text, wide);
  const pieces: string[][] = [];
  const pnameIds = new Map<string, number>();
  const pnames: string[] = [];
  const samples = new SequenceTable();
  // The current sample: its process name's id, then its frames' ids leaf first, as perf prints
  // them (Perl unshifts; the folded line is built reversed at the end).
  let seq: Int32Array = new Int32Array(256);
  let seqLen = 1;
  let pname: string | undefined;
  let javaPname = false;
  let period = 1;
  let unrecognized = 0;

  const n = text.length;
  let pos = 0;
  while (pos < n) {
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = n;
    const from = pos;
    const to = eol;
    pos = eol + 1;
    const c0 = from < to ? b[from]! : -1;
    if (c0 === 0x23) continue; // '#': header comments (the script reads '# cmdline' only for --inline)
    if (from === to) {
      // End of a sample. A sample whose header was filtered out left pname unset: Perl `next`s
      // before clearing, and so do we.
      if (pname === undefined) continue;
      let id = pnameIds.get(pname);
      if (id === undefined) {
        id = pnames.length;
        pnames.push(pname);
        pnameIds.set(pname, id);
      }
      seq[0] = id;
      samples.add(seq, seqLen, period);
      seqLen = 1;
      pname = undefined;
      continue;
    }
    // A frame line starts with blanks; a header cannot (its comm starts with \S).
    if (c0 !== 0x09 && c0 !== 0x20 && scanHeader(b, from, to)) {
      const commEnd = headerOut[0]!;
      let pid = text.slice(headerOut[1]!, headerOut[2]!);
      let tid = headerOut[4]! > headerOut[3]! ? text.slice(headerOut[3]!, headerOut[4]!) : '';
      // Perl: `if (not $tid)` — an empty or "0" TID means the lone number was the TID.
      if (tid === '' || tid === '0') {
        tid = pid;
        pid = '?';
      }
      let p = '';
      if (scanEvent(b, from, to)) {
        p = eventOut[0]! >= 0 ? text.slice(eventOut[0]!, eventOut[1]!) : '';
        const event = text.slice(eventOut[2]!, eventOut[3]!);
        if (eventFilter === '') {
          // The first event seen: mixing cycles with instructions would mislead.
          eventFilter = event;
          eventDefaulted = true;
        } else if (event !== eventFilter) {
          if (eventDefaulted && filteredEvent === undefined) filteredEvent = event;
          continue;
        }
      }
      // Perl: `if (not $period) { $period = 1 }` — "" and "0" are false; "00" is a true 0.
      period = p === '' || p === '0' ? 1 : Number(p);
      const comm = text.slice(from, commEnd);
      const name = includeTid ? `${comm}-${pid}/${tid}` : includePid ? `${comm}-${pid}` : comm;
      pname = name.includes(' ') ? name.replaceAll(' ', '_') : name;
      // The goldens come from the script version that tests `$pname eq "java"` (today's upstream
      // has m/^java/): with --pid the name is java-PID and Java names keep their L.
      javaPname = pname === 'java';
      continue;
    }
    if (!scanStack(b, from, to)) {
      unrecognized++;
      continue;
    }
    if (pname === undefined) continue;
    let id = frames.find(fold.addrs ? stackOut[0]! : stackOut[2]!, stackOut[5]!, javaPname);
    if (id < 0) {
      id = frames.insert();
      pieces.push(foldFrame(text, b, javaPname, fold));
    }
    if (seqLen === seq.length) seq = grow(seq, seqLen * 2);
    seq[seqLen++] = id;
  }

  // Each distinct sequence's line, joined from an array (one flat string, not a rope).
  const pool = samples.pool;
  const parts: string[] = [];
  const lines: string[] = new Array<string>(samples.size);
  for (let e = 0; e < samples.size; e++) {
    const at = samples.starts[e]!;
    parts.length = 0;
    parts.push(pnames[pool[at]!]!);
    for (let i = at + samples.lens[e]! - 1; i > at; i--) {
      const ps = pieces[pool[i]!]!;
      for (let j = 0; j < ps.length; j++) parts.push(ps[j]!);
    }
    lines[e] = parts.join(';');
  }
  // Sorted by line, comparing UTF-16 code units as the default sort does (on latin1 text: Perl's
  // bytewise cmp). Distinct sequences may fold to the same line (two dsos, one name): equal lines
  // end up adjacent and are merged there, so no Map has to hash every line.
  const order = Array.from({ length: samples.size }, (_, i) => i);
  order.sort((x, y) => (lines[x]! < lines[y]! ? -1 : lines[x]! > lines[y]! ? 1 : 0));
  let out = '';
  let stacks = 0;
  for (let k = 0; k < order.length; ) {
    const line = lines[order[k]!]!;
    let sum = samples.sums[order[k]!]!;
    for (k++; k < order.length && lines[order[k]!] === line; k++) sum += samples.sums[order[k]!]!;
    out += `${line} ${sum}\n`;
    stacks++;
  }
  const result: CollapseResult = { text: out, stacks, unrecognized };
  if (filteredEvent !== undefined) result.filteredEvent = filteredEvent;
  return result;
}

interface FoldOptions {
  kernel: boolean;
  jit: boolean;
  addrs: boolean;
}

/**
 * The folded pieces of the frame scanStack just matched (stackOut), outermost first, as the Perl
 * script unshifts them; none for a frame it drops.
 */
function foldFrame(text: string, b: Uint8Array, java: boolean, o: FoldOptions): string[] {
  const fs = stackOut[2]!;
  const fe = stackOut[3]!;
  const ms = stackOut[4]!;
  const me = stackOut[5]!;
  const needs = tidyNeeds(b, fs, fe);
  // Fast path: one piece, no offset, no argument list, no quotes, not [unknown]: only the
  // separator, Java's L and the annotations apply (Java method names from perf-PID.map are most
  // of the frames in JVM profiles: Lorg/mozilla/javascript/ContextFactory;.call).
  if ((needs & (NEEDS_HARD | NEEDS_PAREN)) === 0) {
    let func = text.slice(fs, fe);
    if (needs & NEEDS_SEMI) func = func.replaceAll(';', ':');
    if (java && (needs & NEEDS_SLASH) && func.charCodeAt(0) === 0x4c) func = func.slice(1);
    return [annotate(func, text.slice(ms, me), o)];
  }
  if ((needs & NEEDS_HARD) === 0) {
    // Only an argument list: cut at the first "(" — unless the name may be a Go method
    // (".(") or hold "(anonymous namespace)", which the general path handles.
    let cut = -1;
    let dotParen = false;
    for (let i = fs; i < fe; i++) {
      if (text.charCodeAt(i) === 0x28) {
        if (i > fs && text.charCodeAt(i - 1) === 0x2e) dotParen = true;
        if (cut < 0) cut = i;
      }
    }
    // A symbol that starts with "(" is a process name perf printed, not a frame: skipped.
    if (cut === fs) return [];
    if (!dotParen && !text.startsWith('(anonymous namespace)', cut)) {
      let func = text.slice(fs, cut);
      if (needs & NEEDS_SEMI) func = func.replaceAll(';', ':');
      if (java && func.charCodeAt(0) === 0x4c && func.includes('/')) func = func.slice(1);
      return [annotate(func, text.slice(ms, me), o)];
    }
  }
  return tidyFrame(text.slice(fs, fe), text.slice(ms, me), text.slice(stackOut[0]!, stackOut[1]!), java, o.kernel, o.jit, o.addrs);
}

function annotate(func: string, mod: string, o: FoldOptions): string {
  if (o.kernel && isKernelMod(mod)) return func + '_[k]';
  if (o.jit && JIT_MAP_RE.test(mod)) return func + '_[j]';
  return func;
}

/**
 * The Perl per-frame rules on one symbol (offset already stripped): split Java/perf inline chains
 * at "->", name unresolved frames after their dso, tidy, strip Java's L, annotate. Returns the
 * pieces in the order the Perl script unshifts them (outermost first); none for "->" alone.
 */
function tidyFrame(rawWithOffset: string, mod: string, pc: string, java: boolean, kernel: boolean, jit: boolean, addrs: boolean): string[] {
  // Linux 4.8's perf prints symbol offsets by default: s/\+0x[\da-f]+$//
  const m = OFFSET_RE.exec(rawWithOffset);
  const raw = m ? rawWithOffset.slice(0, m.index) : rawWithOffset;
  if (raw.charCodeAt(0) === 0x28) return []; // "(": perf printed a process name, not a frame
  // Perl's split drops trailing empty fields (and "->" alone yields nothing at all).
  const pieces = raw.split('->');
  while (pieces.length > 0 && pieces[pieces.length - 1] === '') pieces.pop();
  const out: string[] = [];
  for (const piece of pieces) {
    let func = piece;
    if (func === '[unknown]') {
      let name: string;
      if (mod !== '[unknown]') {
        const slash = mod.lastIndexOf('/');
        name = slash >= 0 ? mod.slice(slash + 1) : mod;
      } else name = 'unknown';
      func = addrs ? `[${name} <${pc}>]` : `[${name}]`;
    }
    // tidy_generic
    func = func.replaceAll(';', ':');
    // Everything after the first "(" is argument noise, unless it is a Go method name such as
    // net/http.(*Client).Do, or a C++ "(anonymous namespace)".
    // ($func !~ m/\.\(.*\)\./, as index searches: a ".(" with a ")." after it.)
    const goOpen = func.indexOf('.(');
    if (goOpen < 0 || func.indexOf(').', goOpen + 2) < 0) func = func.replace(PAREN_TAIL_RE, '');
    func = func.replace(QUOTES_RE, '');
    // tidy_java: Lorg/mozilla/...;.call → org/mozilla/...:.call
    if (java && func.includes('/') && func.charCodeAt(0) === 0x4c) func = func.slice(1);
    if (out.length > 0) {
      if (!func.includes('_[i]')) func += '_[i]';
    } else if (kernel && isKernelMod(mod)) func += '_[k]';
    else if (jit && JIT_MAP_RE.test(mod)) {
      if (!func.includes('_[j]')) func += '_[j]';
    }
    out.push(func);
  }
  return out;
}
