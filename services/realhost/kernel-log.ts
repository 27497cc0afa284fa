// Kernel console logs (dmesg, serial consoles, syzkaller reports) → the stack traces the kernel
// printed, each as a sample carrying the host's callchain. The formats are the kernel's own
// (reference/kernel-unwinders.md §3; reference/peers-and-formats.md §3.1):
//   show_trace_log_lvl()   "Call Trace:", " <IRQ>" ... " </IRQ>", " func+0x1a/0x40 [mod]", " ? func+..."
//   v4.x and older         " [<ffffffff81234567>] ? func+0x1a/0x40", " <IRQ>  [<...>] ...", " <EOI>  ..."
//   __show_regs()          "RIP: 0010:func+0x12/0x40", "RSP: 0018:ffffc900... EFLAGS: 00010246", "RAX: ..."
//   unwind_frame.c         "WARNING: kernel stack regs at %p in %s:%d has bad 'bp' value %p",
//                          "WARNING: kernel stack frame pointer at %p in %s:%d has bad value %p",
//                          unwind_dump(): "unwind stack type:%d next_sp:%p mask:0x%lx graph_idx:%d"
//                          then one "%p: %016lx (%pB)" line per stack word
// printk prefixes are stripped: "[  146.941333]" time and the CONFIG_PRINTK_CALLER tag
// "[    C0]"/"[  T123]". With caller tags, lines of different callers interleave freely and are
// followed separately; without them an unrelated line inside a trace is skipped when the trace
// continues on the next line. Pure: text in, traces out.
import { callchainFlags } from '../core/dump/callchain-flags.ts';
import type { CallchainEntry, Regs, Sample } from '../core/dump/sample.ts';
import type { PtRegsField } from '../core/stack/layout.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import type { HostChainContext } from './callchain-check.ts';

export interface LogFrame {
  /** As printed, without the "? " and the old "[<addr>]" column. */
  text: string;
  name: string;
  offset?: number;
  size?: number;
  module?: string;
  /** Printed by old kernels ("[<ffffffff81234567>]") or as a bare 0x address. */
  addr?: bigint;
  /** false for "? " entries: text addresses found on the stack that the unwinder did not use. */
  reliable: boolean;
  /** The stack segment the frame was printed in ('' before any marker). */
  segment: string;
  /** A symbolizer's "[inline]" line (syzkaller): no frame of the unwinder's own. */
  inline: boolean;
  line: number;
}

export interface LogRegs {
  line: number;
  /** "0010:func+0x12/0x40" or "0033:0x7f9e69847189", as printed after "RIP: ". */
  ripText?: string;
  regs: Regs;
}

export type UnwinderWarningKind = 'bad_regs_bp' | 'bad_frame_pointer' | 'unwind_dump';

export interface UnwinderWarning {
  kind: UnwinderWarningKind;
  line: number;
  message: string;
  /** unwind_dump()'s raw stack words: the value and what %pB made of it. */
  words: { value: bigint; sym?: string }[];
}

export interface KernelLogTrace {
  /** 1-based line of "Call Trace:". */
  line: number;
  time?: string;
  caller?: string;
  comm?: string;
  pid?: number;
  cpu?: number;
  /** Printed by "NMI backtrace for cpu N" (nmi_cpu_backtrace). */
  nmiBacktrace: boolean;
  /** The register block printed before "Call Trace:" (the state the trace starts from). */
  regs?: LogRegs;
  frames: LogFrame[];
  /** Register blocks printed inside the trace (show_regs_if_on_stack: an entry's pt_regs). */
  entryRegs: LogRegs[];
  segments: string[];
  /** The frame-pointer unwinder's own complaints while printing this trace. */
  warnings: UnwinderWarning[];
  /** Lines skipped inside the trace because they belonged to other output. */
  interleaved: number;
}

export interface KernelLogResult {
  traces: KernelLogTrace[];
  /** Warnings printed outside any trace (e.g. while saving a KASAN stack). */
  warnings: UnwinderWarning[];
  /** syzkaller's "TITLE:" header, when present. */
  title?: string;
  lines: number;
}

/**
 * True when the text looks like a kernel log: a syzkaller report header, printk time stamps
 * ("[  146.941333]") at the start of its first lines, or a "Call Trace:" line. perf script output
 * and our dumps have none of these.
 */
export function looksLikeKernelLog(text: string): boolean {
  const head = text.slice(0, 1 << 16);
  if (head.startsWith('TITLE: ')) return true; // a syzkaller report
  if (/(^|\n)(<\d>)?\[ *\d+\.\d{6}\]/.test(head)) return true;
  return /(^|\n)[^\n]*\bCall Trace:/.test(text.slice(0, 4 << 20));
}

const PRINTK_TIME = /^\[ *(\d+\.\d+)\]/;
const PRINTK_CALLER = /^\[ *([CT]\d+)\]/;
const SEGMENT = /^<(\/?)(NMI|IRQ|TASK|EOI|SOFTIRQ|ENTRY_TRAMPOLINE|#[A-Z]{2}|<EOE>|EOE)>/;
const OLD_ADDR = /^\[<([0-9a-f]{1,16})>\] ?/;
const SYMBOL = /^([A-Za-z0-9_.$]+)\+0x([0-9a-f]+)\/0x([0-9a-f]+)(?: \[([^\]\s]+)\])?/;
const INLINE = /^([A-Za-z0-9_.$]+) \S+:\d+(?::\d+)? \[inline\]/;
const BARE_ADDR = /^0x([0-9a-f]{1,16})\b/;
const REG_LINE = /^(RIP|RSP|RAX|RDX|RBP|R10|R13|FS|CS|CR2|DR0|DR3|EIP|EAX|ESI|DS|CR0|PKRU|Code):/;
const CONTEXT = /^CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)/;
const BAD_REGS_BP = /WARNING: kernel stack regs at (.*?) in (.*?):(\d+) has bad 'bp' value (.*)$/;
const BAD_FP = /WARNING: kernel stack frame pointer at (.*?) in (.*?):(\d+) has bad value (.*)$/;
const UNWIND_DUMP = /unwind stack type:(\d+) next_sp:.* mask:(0x[0-9a-f]+) graph_idx:(\d+)/;
const DUMP_WORD = /^(?:\(ptrval\)|[0-9a-f]{8,16}): ([0-9a-f]{16}) (?:\((.*)\)|\.\.\.)$/;
const OTHER_STACK = /^(Allocated by task|Freed by task|Last potentially related|Second to last|The buggy address|Memory state)/;

const REG_NAMES: Readonly<Record<string, PtRegsField>> = {
  RAX: 'ax', RBX: 'bx', RCX: 'cx', RDX: 'dx', RSI: 'si', RDI: 'di', RBP: 'bp', RSP: 'sp',
  R08: 'r8', R09: 'r9', R10: 'r10', R11: 'r11', R12: 'r12', R13: 'r13', R14: 'r14', R15: 'r15',
  EFLAGS: 'flags', ORIG_RAX: 'orig_ax',
};

const SEGMENT_NAMES: Readonly<Record<string, string>> = {
  NMI: 'nmi', IRQ: 'irq', TASK: 'task', SOFTIRQ: 'softirq', ENTRY_TRAMPOLINE: 'entry',
  '#DF': 'df', '#DB': 'db', '#MC': 'mce', '#VC': 'vc', '#NM': 'nm', '#SS': 'ss', '#GP': 'gp',
};

interface Stream {
  trace?: KernelLogTrace;
  segment: string;
  comm?: string;
  pid?: number;
  cpu?: number;
  nmi: boolean;
  /** A trace ended by an unrelated line on an untagged console: its frames may still come. */
  resumable?: KernelLogTrace;
  /** The register block being printed (it spans several lines). */
  regBlock?: LogRegs;
  dump?: UnwinderWarning;
}

interface Stripped {
  time?: string;
  caller?: string;
  body: string;
}

function strip(raw: string): Stripped {
  let s = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  const out: Stripped = { body: '' };
  // syslog level "<4>" before the time stamp
  const lvl = /^<\d>/.exec(s);
  if (lvl) s = s.slice(lvl[0].length);
  const t = PRINTK_TIME.exec(s);
  if (t) {
    out.time = t[1]!;
    s = s.slice(t[0].length);
    const c = PRINTK_CALLER.exec(s);
    if (c) {
      out.caller = c[1]!;
      s = s.slice(c[0].length);
    }
  }
  out.body = s;
  return out;
}

/** Parses one frame text (after "? " and "[<addr>]" are removed). */
function parseFrameText(t: string): Omit<LogFrame, 'reliable' | 'segment' | 'line'> | undefined {
  let m = SYMBOL.exec(t);
  if (m) {
    const f: Omit<LogFrame, 'reliable' | 'segment' | 'line'> = {
      text: m[0], name: m[1]!, offset: parseInt(m[2]!, 16), size: parseInt(m[3]!, 16), inline: false,
    };
    if (m[4] !== undefined) f.module = m[4];
    return f;
  }
  m = INLINE.exec(t);
  if (m) return { text: m[0], name: m[1]!, inline: true };
  m = BARE_ADDR.exec(t);
  if (m) return { text: m[0], name: '', addr: BigInt('0x' + m[1]!), inline: false };
  return undefined;
}

interface FrameLine {
  segment?: string;
  endSegment?: boolean;
  frame?: Omit<LogFrame, 'segment' | 'line'>;
}

/** A trace line: segment markers and/or one frame (old kernels print both on one line). */
function parseTraceLine(body: string): FrameLine | undefined {
  let s = body.trimStart();
  const out: FrameLine = {};
  const seg = SEGMENT.exec(s);
  if (seg) {
    const name = seg[2]!;
    if (name === 'EOI' || name === '<EOE>' || name === 'EOE') out.endSegment = true;
    else if (seg[1] === '/') out.endSegment = true;
    else out.segment = SEGMENT_NAMES[name] ?? name.toLowerCase();
    s = s.slice(seg[0].length).trimStart();
    if (s === '') return out;
  }
  let addr: bigint | undefined;
  const old = OLD_ADDR.exec(s);
  if (old) {
    addr = BigInt('0x' + old[1]!);
    s = s.slice(old[0].length);
  }
  let reliable = true;
  if (s.startsWith('? ')) {
    reliable = false;
    s = s.slice(2);
  }
  const f = parseFrameText(s);
  if (!f) return seg ? out : undefined;
  const frame: Omit<LogFrame, 'segment' | 'line'> = { ...f, reliable };
  if (addr !== undefined) frame.addr = addr;
  out.frame = frame;
  return out;
}

/** "RSP: 0018:ffffc9000902f7d0 EFLAGS: 00010202" and friends: name/value pairs into regs. */
function parseRegLine(body: string, into: LogRegs): void {
  const s = body.trim();
  if (s.startsWith('RIP: ')) {
    const rest = s.slice(5);
    into.ripText = rest;
    const m = /^([0-9a-f]{4}):(?:\[<([0-9a-f]{16})>\]|0x([0-9a-f]+))/.exec(rest);
    if (m) {
      into.regs.cs = BigInt('0x' + m[1]!);
      into.regs.ip = BigInt('0x' + (m[2] ?? m[3]!));
    } else if (/^[0-9a-f]{4}:/.test(rest)) into.regs.cs = BigInt('0x' + rest.slice(0, 4));
    return;
  }
  // A name starts where no name character precedes it. Without the lookbehind the engine tried
  // every position of a long run of capitals (each scanning to the run's end: quadratic, 11 s for
  // a 64 KB line); a start inside a run reaches the same colon as the run's first letter, so it
  // can never match where that one did not.
  const re = /(?<![A-Z0-9_])([A-Z0-9_]+): ?(?:([0-9a-f]{4}):)?([0-9a-f]{8,16})\b/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const f = REG_NAMES[m[1]!];
    if (f === undefined) continue;
    into.regs[f] = BigInt('0x' + m[3]!);
    if (m[1] === 'RSP' && m[2] !== undefined) into.regs.ss = BigInt('0x' + m[2]);
  }
}

export function parseKernelLog(text: string): KernelLogResult {
  const lines = text.split('\n');
  const result: KernelLogResult = { traces: [], warnings: [], lines: lines.length };
  const streams = new Map<string, Stream>();
  const streamOf = (key: string): Stream => {
    let st = streams.get(key);
    if (!st) streams.set(key, (st = { segment: '', nmi: false }));
    return st;
  };
  const pushed = new WeakSet<KernelLogTrace>();
  const close = (st: Stream, resumable = false): void => {
    if (!st.trace) {
      if (!resumable) st.resumable = undefined;
      return;
    }
    if (!pushed.has(st.trace)) {
      pushed.add(st.trace);
      result.traces.push(st.trace);
    }
    st.resumable = resumable ? st.trace : undefined;
    st.trace = undefined;
    st.regBlock = undefined;
  };
  const warn = (st: Stream, w: UnwinderWarning): void => {
    if (st.trace) st.trace.warnings.push(w);
    else result.warnings.push(w);
  };

  let headerDone = false;
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i]!;
    if (!headerDone) {
      // syzkaller's report header: TITLE:/ALT:/TYPE:/CORRUPTED:/... lines, then a blank line.
      const h = /^([A-Z]+): (.*)$/.exec(raw);
      if (h && i < 16 && !raw.startsWith('[')) {
        if (h[1] === 'TITLE' && result.title === undefined) result.title = h[2]!;
        continue;
      }
      headerDone = true;
    }
    const { time, caller, body } = strip(raw);
    const st = streamOf(caller ?? '');
    const trimmed = body.trim();

    // unwind_dump() words continue until another kind of line.
    if (st.dump) {
      const w = DUMP_WORD.exec(trimmed);
      if (w) {
        const word: { value: bigint; sym?: string } = { value: BigInt('0x' + w[1]!) };
        if (w[2] !== undefined && !w[2].startsWith('0x')) word.sym = w[2];
        st.dump.words.push(word);
        continue;
      }
      st.dump = undefined;
    }
    if (trimmed === '') {
      if (caller === undefined) close(st);
      continue;
    }
    let m = BAD_REGS_BP.exec(trimmed) ?? undefined;
    if (m) {
      warn(st, { kind: 'bad_regs_bp', line: lineNo, message: trimmed, words: [] });
      continue;
    }
    m = BAD_FP.exec(trimmed) ?? undefined;
    if (m) {
      warn(st, { kind: 'bad_frame_pointer', line: lineNo, message: trimmed, words: [] });
      continue;
    }
    m = UNWIND_DUMP.exec(trimmed) ?? undefined;
    if (m) {
      const w: UnwinderWarning = { kind: 'unwind_dump', line: lineNo, message: trimmed, words: [] };
      warn(st, w);
      st.dump = w;
      continue;
    }
    if (/^Call [Tt]race:/.test(trimmed)) {
      close(st);
      const tr: KernelLogTrace = { line: lineNo, nmiBacktrace: false, frames: [], entryRegs: [], segments: [], warnings: [], interleaved: 0 };
      if (time !== undefined) tr.time = time;
      if (caller !== undefined) tr.caller = caller;
      if (st.comm !== undefined) tr.comm = st.comm;
      if (st.pid !== undefined) tr.pid = st.pid;
      if (st.cpu !== undefined) tr.cpu = st.cpu;
      // The register block printed just before belongs to this trace; one inside it (below) is
      // an entry's pt_regs.
      if (st.regBlock) tr.regs = st.regBlock;
      tr.nmiBacktrace = st.nmi;
      st.regBlock = undefined;
      st.nmi = false;
      st.trace = tr;
      st.segment = '';
      continue;
    }
    if (REG_LINE.test(trimmed) || /^(R[A-Z0-9]{2}|FS|GS|CS|CR\d|DR\d): /.test(trimmed)) {
      if (trimmed.startsWith('RIP: ') || trimmed.startsWith('EIP: ')) {
        st.regBlock = { line: lineNo, regs: {} };
        if (st.trace) st.trace.entryRegs.push(st.regBlock);
      }
      if (st.regBlock && !trimmed.startsWith('Code:')) parseRegLine(trimmed, st.regBlock);
      continue;
    }
    const ctx = CONTEXT.exec(trimmed);
    if (ctx) {
      close(st);
      // The register block of this report comes after its CPU: line; an older one is stale.
      st.regBlock = undefined;
      st.cpu = Number(ctx[1]);
      st.pid = Number(ctx[2]);
      st.comm = ctx[3]!;
      continue;
    }
    if (/^NMI backtrace for cpu \d+/.test(trimmed)) {
      close(st);
      st.nmi = true;
      st.cpu = Number(/\d+/.exec(trimmed.slice(18))![0]);
      continue;
    }
    if (!st.trace && st.resumable && caller === undefined && parseTraceLine(body)?.frame) {
      // Frames resume after other output: untagged consoles interleave what CPUs print.
      st.trace = st.resumable;
      st.trace.interleaved++;
    }
    if (st.trace) {
      const fl = parseTraceLine(body);
      if (fl) {
        const tr = st.trace;
        // Old kernels print <EOI> where the IRQ stack ends and the task's frames resume.
        if (fl.endSegment) st.segment = /<EOI>/.test(trimmed) ? 'task' : '';
        if (fl.segment !== undefined) {
          st.segment = fl.segment;
          tr.segments.push(fl.segment);
        }
        if (fl.frame) tr.frames.push({ ...fl.frame, segment: st.segment, line: lineNo });
        continue;
      }
      if (OTHER_STACK.test(trimmed) || trimmed.startsWith('---[ end trace')) {
        close(st);
        continue;
      }
      // Another message in the middle of the trace (untagged consoles interleave CPUs): skip it
      // if the trace goes on right after, else the trace has ended.
      const next = lines[i + 1];
      if (caller === undefined && next !== undefined) {
        const n = strip(next);
        if (n.caller === undefined && parseTraceLine(n.body)) {
          st.trace.interleaved++;
          continue;
        }
      }
      close(st, caller === undefined);
      continue;
    }
  }
  for (const st of streams.values()) close(st);
  result.traces.sort((a, b) => a.line - b.line);
  return result;
}

/**
 * One sample per trace: its frames as the host callchain, leaf first, as printed. `? ` entries stay
 * in place, flagged `unreliable` (text addresses the unwinder found on the stack but did not use:
 * consumers that take the chain as the host's unwind skip them); syzkaller's `[inline]` lines are
 * no frames of the unwinder and are left out. A frame's address is the one the kernel printed (old
 * kernels), else its symbol's address plus the offset when a profile of that kernel is given, else
 * 0 flagged `no_address` (not `zero`, which is perf's chain terminator).
 */
export function kernelLogSamples(r: KernelLogResult, opts: { file?: string; profile?: KernelProfile } = {}): Sample[] {
  const byName = opts.profile ? nameIndex(opts.profile) : undefined;
  return r.traces.map((t) => {
    const s: Sample = { trigger: t.nmiBacktrace ? 'nmi' : 'log', stacks: [] };
    if (t.comm !== undefined) s.comm = t.comm;
    if (t.pid !== undefined) s.pid = t.pid;
    if (t.cpu !== undefined) s.cpu = t.cpu;
    if (t.time !== undefined) s.time = t.time;
    if (t.regs && Object.keys(t.regs.regs).length > 0) s.regs = { ...t.regs.regs };
    s.callchain = t.frames.filter((f) => !f.inline).map((f) => logFrameEntry(f, byName));
    s.source = { file: opts.file ?? '<log>', line: t.line };
    return s;
  });
}

export function logFrameEntry(f: LogFrame, byName?: Map<string, bigint>): CallchainEntry {
  let addr = f.addr;
  if (addr === undefined && byName && f.offset !== undefined) {
    const base = byName.get(f.name);
    if (base !== undefined) addr = base + BigInt(f.offset);
  }
  const sym = f.name !== '' ? f.text : undefined;
  const e: CallchainEntry = { addr: addr ?? 0n, flags: [] };
  if (sym !== undefined) e.sym = sym;
  e.dso = f.module !== undefined ? `[${f.module}]` : '[kernel.kallsyms]';
  const flags = addr !== undefined ? callchainFlags(addr, sym) : callchainFlags(0n, sym).filter((x) => x !== 'zero');
  // CALLCHAIN_FLAGS order: the computed flags, then unreliable, then no_address.
  if (!f.reliable) flags.push('unreliable');
  if (addr === undefined) flags.push('no_address');
  e.flags = flags;
  return e;
}

function nameIndex(p: KernelProfile): Map<string, bigint> {
  const m = new Map<string, bigint>();
  const t = p.symbols;
  for (let i = 0; i < t.length; i++) {
    const name = t.names[i]!;
    if (!m.has(name)) m.set(name, BigInt.asUintN(64, BigInt(t.starts[i]!)));
  }
  return m;
}

/**
 * What a trace says beyond its frames, for checkHostCallchain: whether it ended at user-mode
 * pt_regs (a "RIP: 0033:..." block after the last frame) or is of a kernel that prints none (v4.x),
 * after which frames it printed kernel-mode pt_regs (their RIP: line is the interrupted function,
 * which the log does not repeat as a frame), and the unwinder's warnings.
 */
export function kernelLogContext(t: KernelLogTrace): HostChainContext {
  // The frames in the order of the sample's callchain (kernelLogSamples drops [inline] lines only).
  const frames = t.frames.filter((f) => !f.inline);
  const used = frames.filter((f) => f.reliable);
  const lastLine = used.length > 0 ? used[used.length - 1]!.line : t.line;
  const ctx: HostChainContext = {};
  for (const r of t.entryRegs) {
    const cs = r.ripText !== undefined ? /^([0-9a-f]{4}):/.exec(r.ripText) : null;
    if (cs === null) continue;
    if ((parseInt(cs[1]!, 16) & 3) !== 0) {
      if (r.line > lastLine) ctx.endsInUserRegs = true;
      continue;
    }
    // show_regs_if_on_stack prints the regs right after the reliable frame the unwinder left.
    let after = -1;
    for (let i = 0; i < frames.length && frames[i]!.line < r.line; i++) if (frames[i]!.reliable) after = i;
    if (after >= 0) (ctx.regsAfter ??= []).push(after);
  }
  // Old kernels print the "[<addr>]" column and no pt_regs for an interrupt from user mode.
  if (!ctx.endsInUserRegs && frames.some((f) => f.addr !== undefined && f.name !== '')) ctx.userRegsUnprinted = true;
  if (t.warnings.length > 0) ctx.hostWarnings = t.warnings.map((w) => w.message);
  return ctx;
}
