// The kernel's own trace judged against the raw memory of the same instant (issue 16, part 3).
// A live host's BPF sampler records, beside registers and stack memory, the trace the kernel's
// unwinder printed (perf_callchain_kernel(): the sampled ip, then one address per frame). On those
// bytes the trace must obey what any correct unwind obeys:
//   - every address after the first is kernel text (__kernel_text_address);
//   - each is present on the sample's stacks, in trace order: at rising addresses within a stack,
//     and through the stacks in the order the sample crossed them (IRQ stack, then the task stack);
//   - each return address (a call frame in the project's ORC walk of the same bytes) follows a call
//     instruction in kernel text; an ip taken from pt_regs need not;
//   - the whole trace equals the project's ORC unwind of the same bytes.
// A failure is a finding: in the kernel's unwinder, or in the project's, which the message names.
// Pure: text bytes come in as a map from return address to the bytes just before it.
import type { Sample } from '../dump/sample.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import type { UnwindResult } from '../unwind/types.ts';
import { formatHex64, signedFromBig } from '../u64.ts';
import { fnv1a64, type FindingSignature } from './findings.ts';

/** Bytes kept before each return address: the longest call encoding (REX + FF /2 + SIB + disp32 = 8) with room. */
export const TEXT_SNIPPET_BYTES = 16;
/** Return address -> the TEXT_SNIPPET_BYTES bytes that end at it. */
export type TextSnippets = Map<bigint, Uint8Array>;

export const KERNEL_TRACE_REASONS = ['wrong_start', 'not_text', 'not_on_stack', 'not_after_call', 'orc_differs'] as const;
export type KernelTraceReason = (typeof KERNEL_TRACE_REASONS)[number];

export interface KernelTraceProblem {
  /** Index into the trace (sample.callchain). */
  index: number;
  reason: KernelTraceReason;
  message: string;
}

export interface KernelTraceCheck {
  frames: number;
  /** Addresses found on the stack in order / preceded by a call / whose bytes were not available. */
  onStack: number;
  afterCall: number;
  callUnchecked: number;
  /** The trace equals the project's ORC walk (undefined when there is no ORC walk). */
  equalToOrc?: boolean;
  /** The trace stopped at the sampler's depth cap: compared as a prefix. */
  capped: boolean;
  problems: KernelTraceProblem[];
}

/**
 * True when the bytes end with a call instruction: E8 rel32, or FF /2 (call r/m64) in any of its
 * ModRM/SIB/displacement forms, with or without a REX prefix.
 */
export function endsWithCall(b: Uint8Array): boolean {
  const n = b.length;
  if (n >= 5 && b[n - 5] === 0xe8) return true;
  for (let len = 2; len <= 8 && len <= n; len++) {
    let k = n - len;
    if (b[k]! >= 0x40 && b[k]! <= 0x4f) k++; // REX
    if (b[k] !== 0xff || k + 1 >= n) continue;
    const modrm = b[k + 1]!;
    if (((modrm >> 3) & 7) !== 2) continue;
    const mod = modrm >> 6;
    const rm = modrm & 7;
    let size = 2; // opcode + ModRM
    if (mod !== 3 && rm === 4) {
      if (k + 2 >= n) continue;
      size++; // SIB
      if (mod === 0 && (b[k + 2]! & 7) === 5) size += 4; // SIB with no base: disp32
    }
    if (mod === 0 && rm === 5) size += 4; // RIP-relative
    else if (mod === 1) size += 1;
    else if (mod === 2) size += 4;
    if (k + size === n) return true;
  }
  return false;
}

/** The trace the kernel printed: the callchain's kernel-half entries, `? ` entries left out. */
function kernelTrace(s: Sample): bigint[] {
  const out: bigint[] = [];
  for (const c of s.callchain ?? []) {
    if (c.flags.includes('unreliable')) continue;
    if ((c.addr >> 63n) !== 1n || c.addr === 0xffffffffffffffffn) break;
    out.push(c.addr);
  }
  return out;
}

/**
 * Judges the sample's host callchain (the kernel's trace) against its own stack memory and the
 * project's ORC walk (`orc`, the checker's unwind of the same sample), with text bytes where known.
 * Undefined for samples without stack memory or without a kernel trace. `cap` is the sampler's
 * trace depth limit: a trace that long may have been cut, so the ORC walk is compared as a prefix.
 */
export function checkKernelTrace(s: Sample, profile: KernelProfile, orc: UnwindResult | undefined, text: TextSnippets | undefined, cap = Infinity): KernelTraceCheck | undefined {
  const trace = kernelTrace(s);
  if (trace.length === 0 || s.stacks.length === 0 || s.regs?.ip === undefined) return undefined;
  const out: KernelTraceCheck = { frames: trace.length, onStack: 0, afterCall: 0, callUnchecked: 0, capped: trace.length >= cap, problems: [] };
  const name = (a: bigint, ret: boolean): string => `${profile.symbols.format(a, ret)} (${formatHex64(a)})`;
  if (trace[0] !== s.regs.ip) out.problems.push({ index: 0, reason: 'wrong_start', message: `the trace starts at ${name(trace[0]!, false)}, the sampled ip is ${name(s.regs.ip, false)}` });

  // The captured words in the order the stacks were crossed, each stack from its lowest address.
  const words: { addr: bigint; value: bigint }[] = [];
  for (const st of s.stacks) {
    for (const w of st.windows) {
      const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
      for (let o = 0; o + 8 <= w.bytes.length; o += 8) words.push({ addr: w.start + BigInt(o), value: dv.getBigUint64(o, true) });
    }
  }
  const kinds = orc?.frames.map((f) => f.kind);
  let pos = 0;
  for (let i = 1; i < trace.length; i++) {
    const a = trace[i]!;
    if (!profile.isTextS(signedFromBig(a))) {
      out.problems.push({ index: i, reason: 'not_text', message: `frame ${i} ${formatHex64(a)} is not kernel text` });
      continue;
    }
    let found = -1;
    for (let k = pos; k < words.length; k++) {
      if (words[k]!.value === a) {
        found = k;
        break;
      }
    }
    if (found < 0) {
      const anywhere = words.findIndex((w) => w.value === a);
      out.problems.push({ index: i, reason: 'not_on_stack', message: anywhere < 0
        ? `frame ${i} ${name(a, true)} is nowhere on the sample's stacks`
        : `frame ${i} ${name(a, true)} is on the stack only at ${formatHex64(words[anywhere]!.addr)}, below the slot of the frame before it: out of order` });
    } else {
      out.onStack++;
      pos = found + 1;
    }
    // pt_regs ips (ORC regs frames) follow no call; without the ORC walk every frame is a candidate.
    if (kinds !== undefined && kinds[i] !== undefined && kinds[i] !== 'call') continue;
    const bytes = text?.get(a);
    if (bytes === undefined) {
      out.callUnchecked++;
      continue;
    }
    if (endsWithCall(bytes)) out.afterCall++;
    else if (kinds !== undefined && kinds[i] === 'call') {
      out.problems.push({ index: i, reason: 'not_after_call', message: `frame ${i} ${name(a, true)} is used as a return address, but no call instruction ends at it` });
    }
  }
  if (orc) {
    const ips = orc.frames.map((f) => f.ip);
    const n = out.capped ? Math.min(ips.length, trace.length) : Math.max(ips.length, trace.length);
    let diff = -1;
    for (let i = 0; i < n && diff < 0; i++) if (ips[i] !== trace[i]) diff = i;
    if (!out.capped && ips.length !== trace.length && diff < 0) diff = Math.min(ips.length, trace.length);
    out.equalToOrc = diff < 0;
    if (diff >= 0) {
      const k = trace[diff];
      const p = ips[diff];
      out.problems.push({ index: diff, reason: 'orc_differs', message: `frame ${diff}: the kernel printed ${k === undefined ? 'nothing more' : name(k, diff > 0)}, the project's ORC walk gives ${p === undefined ? `nothing more (${orc.outcome}${orc.reason ? `: ${orc.reason}` : ''})` : name(p, diff > 0)}` });
    }
  }
  return out;
}

/** One finding signature per kind of problem in the sample, in the shape findings.ts tallies. */
export function kernelTraceFindings(s: Sample, c: KernelTraceCheck, profile: KernelProfile): FindingSignature[] {
  const out: FindingSignature[] = [];
  const seen = new Set<string>();
  for (const p of c.problems) {
    if (seen.has(p.reason)) continue;
    seen.add(p.reason);
    const trace = kernelTrace(s);
    const a = trace[p.index];
    const t = profile.symbols;
    const i = a === undefined ? -1 : t.indexOfSigned(signedFromBig(a) - (p.index > 0 ? 1 : 0));
    const fn = i >= 0 ? t.names[i]! : a === undefined ? '(end of trace)' : '(not text)';
    const at = i >= 0 && a !== undefined ? `${fn}+0x${(signedFromBig(a) - t.starts[i]!).toString(16)}` : fn;
    const f = { strategy: 'kernel', verdict: 'kernel_trace', reason: p.reason, entry: 'none', fn, where: 'stopped' as const, falseReliable: false, at };
    const id = fnv1a64([f.strategy, f.verdict, f.reason, f.entry, f.fn, f.where, ''].join('\0'));
    out.push({ id, title: `kernel's own trace (${p.reason}) at ${fn}`, ...f });
  }
  return out;
}

/** The text form of snippets (<id>.text beside <id>.kallsyms): `<address> <hex bytes>` per line. */
export function formatTextSnippets(t: TextSnippets): string {
  const lines = ['# stacksanity text snippets: <return address> <the bytes just before it, in address order>'];
  for (const [a, b] of [...t].sort((x, y) => (x[0] < y[0] ? -1 : 1))) lines.push(`${formatHex64(a)} ${Buffer.from(b).toString('hex')}`);
  return `${lines.join('\n')}\n`;
}

/** Reads formatTextSnippets' form; a bad line throws a SyntaxError naming the file and line. */
export function parseTextSnippets(text: string, file = 'text'): TextSnippets {
  const out: TextSnippets = new Map();
  text.split('\n').forEach((raw, n) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^([0-9a-f]{1,16})\s+((?:[0-9a-f]{2})+)$/i.exec(line);
    if (!m) throw new SyntaxError(`${file}:${n + 1}: expected '<address> <hex bytes>', got '${line.slice(0, 80)}'`);
    out.set(BigInt(`0x${m[1]}`), Uint8Array.from(Buffer.from(m[2]!, 'hex')));
  });
  return out;
}
