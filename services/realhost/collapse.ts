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

// Chars past 0xff only occur if a caller passes a UTF-16 string; they belong to no class.
function cls(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return c < 256 ? CLASS[c]! : 0;
}
function isWs(c: number): boolean {
  return c < 256 && CLASS[c] === WS;
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
function scanHeader(s: string, from: number, to: number): boolean {
  if (to - from < 2 || isWs(s.charCodeAt(from))) return false;
  for (let e = from + 2; e < to; e++) {
    if (!isWs(s.charCodeAt(e))) continue;
    let p = e + 1;
    while (p < to && isWs(s.charCodeAt(p))) p++;
    const d1 = p;
    while (p < to && isDigit(s.charCodeAt(p))) p++;
    if (p === d1) continue;
    const d1e = p;
    while (p < to && s.charCodeAt(p) === 0x2f) p++;
    const d2 = p;
    while (p < to && isDigit(s.charCodeAt(p))) p++;
    if (p >= to || !isWs(s.charCodeAt(p))) continue;
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
function scanEvent(s: string, from: number, to: number): boolean {
  let t = to;
  while (t > from && isWs(s.charCodeAt(t - 1))) t--;
  if (t - from < 2 || s.charCodeAt(t - 1) !== 0x3a) return false;
  let st = t - 1;
  while (st > from && !isWs(s.charCodeAt(st - 1))) st--;
  if (st === from || t - 1 - st < 1) return false;
  let w = st;
  while (w > from && isWs(s.charCodeAt(w - 1))) w--;
  if (w === from) return false;
  eventOut[2] = st;
  eventOut[3] = t - 1;
  const c = s.charCodeAt(w - 1);
  if (c === 0x3a) {
    eventOut[0] = -1;
    eventOut[1] = -1;
    return true;
  }
  if (!isDigit(c)) return false;
  let d = w - 1;
  while (d > from && isDigit(s.charCodeAt(d - 1))) d--;
  let v = d;
  while (v > from && isWs(s.charCodeAt(v - 1))) v--;
  if (v === from || s.charCodeAt(v - 1) !== 0x3a) return false;
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
function scanStack(s: string, from: number, to: number): boolean {
  let p = from;
  while (p < to && isWs(s.charCodeAt(p))) p++;
  const pc = p;
  while (p < to && (cls(s, p) & WORD) !== 0) p++;
  if (p === pc) return false;
  const pcEnd = p;
  while (p < to && isWs(s.charCodeAt(p))) p++;
  // Backward char loops: String.prototype.lastIndexOf is a runtime call, slow per line.
  let close = to - 1;
  while (close >= pc + 4 && s.charCodeAt(close) !== 0x29) close--;
  if (close < pc + 4) return false;
  let open = close - 2;
  while (open >= pc + 2 && !(s.charCodeAt(open) === 0x20 && s.charCodeAt(open + 1) === 0x28)) open--;
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

function tidyNeeds(s: string, from: number, to: number): number {
  let needs = 0;
  for (let i = from; i < to; i++) needs |= cls(s, i);
  return needs;
}

function isKernelMod(mod: string): boolean {
  // Perl: $mod =~ m/(^\[|vmlinux$)/ && $mod !~ /unknown/
  return (mod.charCodeAt(0) === 0x5b || mod.endsWith('vmlinux')) && !mod.includes('unknown');
}

/** Collapses perf script text (latin1: one char per byte, as Perl reads it). */
export function collapsePerfScript(text: string, opts: CollapseOptions = {}): CollapseResult {
  const annotateKernel = !!(opts.kernel || opts.all);
  const annotateJit = !!(opts.jit || opts.all);
  const includeTid = !!opts.tid;
  const includePid = !!opts.pid;
  const addrs = !!opts.addrs;
  let eventFilter = opts.eventFilter ?? '';
  let eventDefaulted = false;
  let filteredEvent: string | undefined;

  // One lookup per sample: the holder is bumped in place (a get and a set would compare the long
  // key twice).
  const counts = new Map<string, { n: number }>();
  // Frames of the current sample, leaf first as perf prints them (Perl unshifts; we reverse once).
  let frames: string[] = [];
  let pname: string | undefined;
  let javaPname = false;
  let period = 1;
  let unrecognized = 0;
  // Folded name per distinct (symbol, dso) text: perf prints the same few thousand frames over and
  // over, and the cache key is a slice of the line, cheaper than the tidy rules.
  // Keyed by the line from the symbol to the dso's ")" (one hash per frame, not two).
  const tidyCache = new Map<string, string[]>();
  const javaTidyCache = new Map<string, string[]>();

  const n = text.length;
  let pos = 0;
  while (pos < n) {
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = n;
    const from = pos;
    const to = eol;
    pos = eol + 1;
    const c0 = from < to ? text.charCodeAt(from) : -1;
    if (c0 === 0x23) continue; // '#': header comments (the script reads '# cmdline' only for --inline)
    if (from === to) {
      // End of a sample. A sample whose header was filtered out left pname unset: Perl `next`s
      // before clearing, and so do we.
      if (pname === undefined) continue;
      let key = pname;
      if (frames.length > 0) key += ';' + frames.reverse().join(';');
      const held = counts.get(key);
      if (held === undefined) counts.set(key, { n: period });
      else held.n += period;
      frames = [];
      pname = undefined;
      continue;
    }
    if (scanHeader(text, from, to)) {
      const commEnd = headerOut[0]!;
      let pid = text.slice(headerOut[1]!, headerOut[2]!);
      let tid = headerOut[4]! > headerOut[3]! ? text.slice(headerOut[3]!, headerOut[4]!) : '';
      // Perl: `if (not $tid)` — an empty or "0" TID means the lone number was the TID.
      if (tid === '' || tid === '0') {
        tid = pid;
        pid = '?';
      }
      let p = '';
      if (scanEvent(text, from, to)) {
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
    if (!scanStack(text, from, to)) {
      unrecognized++;
      continue;
    }
    if (pname === undefined) continue;
    const fs = stackOut[2]!;
    const fe = stackOut[3]!;
    const ms = stackOut[4]!;
    const me = stackOut[5]!;
    const needs = tidyNeeds(text, fs, fe);
    // Fast path: one piece, no offset, no argument list, no quotes, not [unknown]: only the
    // separator, Java's L and the annotations apply (Java method names from perf-PID.map are most
    // of the frames in JVM profiles: Lorg/mozilla/javascript/ContextFactory;.call).
    if ((needs & (NEEDS_HARD | NEEDS_PAREN)) === 0) {
      let func = text.slice(fs, fe);
      if (needs & NEEDS_SEMI) func = func.replaceAll(';', ':');
      if (javaPname && (needs & NEEDS_SLASH) && func.charCodeAt(0) === 0x4c) func = func.slice(1);
      if (annotateKernel || annotateJit) {
        const mod = text.slice(ms, me);
        if (annotateKernel && isKernelMod(mod)) func += '_[k]';
        else if (annotateJit && JIT_MAP_RE.test(mod)) func += '_[j]';
      }
      frames.push(func);
      continue;
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
      if (cut === fs) continue;
      if (!dotParen && !text.startsWith('(anonymous namespace)', cut)) {
        let func = text.slice(fs, cut);
        if (needs & NEEDS_SEMI) func = func.replaceAll(';', ':');
        if (javaPname && func.charCodeAt(0) === 0x4c && func.includes('/')) func = func.slice(1);
        if (annotateKernel || annotateJit) {
          const mod = text.slice(ms, me);
          if (annotateKernel && isKernelMod(mod)) func += '_[k]';
          else if (annotateJit && JIT_MAP_RE.test(mod)) func += '_[j]';
        }
        frames.push(func);
        continue;
      }
    }
    // With --addrs an [unknown] frame's name carries its pc, so it cannot be shared.
    const cache = addrs ? undefined : javaPname ? javaTidyCache : tidyCache;
    const cacheKey = cache ? text.slice(fs, me) : '';
    let folded = cache?.get(cacheKey);
    if (folded === undefined) {
      folded = tidyFrame(text.slice(fs, fe), text.slice(ms, me), text.slice(stackOut[0]!, stackOut[1]!), javaPname, annotateKernel, annotateJit, addrs);
      cache?.set(cacheKey, folded);
    }
    // The pieces come outermost first; frames is leaf first.
    for (let i = folded.length - 1; i >= 0; i--) frames.push(folded[i]!);
  }

  // The default sort compares UTF-16 code units: on latin1 text that is Perl's bytewise cmp.
  const keys = [...counts.keys()].sort();
  let out = '';
  for (const k of keys) out += `${k} ${counts.get(k)!.n}\n`;
  const result: CollapseResult = { text: out, stacks: keys.length, unrecognized };
  if (filteredEvent !== undefined) result.filteredEvent = filteredEvent;
  return result;
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
