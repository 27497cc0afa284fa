// The kernel's own printed trace held against the project's unwind of the same instant (issue 18,
// part 2). The kernel prints a task's stack (show_trace_log_lvl) by scanning every word of each
// stack it crosses: a text address the unwinder stood on is printed plain, any other text address
// with "? ", and pt_regs the unwinder found as a "RIP: cs:func" block. The project's unwind of a
// sample taken at that instant is listed by the same scan over the same words, so the two listings
// line up word for word where the unwinders agree, and any difference is a difference of unwinders.
// Only the part both describe is compared: from the return address of the interrupt stub that
// crossed into the IRQ (on the task stack, just below the interrupt's pt_regs) down to the end.
// Pure: the kernel's block as lines, the sample, the profile and the unwinds come in.
import type { Sample } from '../dump/sample.ts';
import { PT_REGS_OFFSET, PT_REGS_SIZE } from '../stack/layout.ts';
import type { KernelProfile } from '../symbols/profile.ts';
import { formatHex64, signedFromBig, bigFromSigned } from '../u64.ts';
import type { UnwindResult } from '../unwind/types.ts';

/** One line of a printed trace, or one element of the project's listing in the same form. */
export interface TraceElement {
  /** frame: reliable return address; guess: "? " address; regs: a kernel-mode RIP block; user: a user-mode RIP block. */
  kind: 'frame' | 'guess' | 'regs' | 'user';
  /** Exact address (frames and guesses: the return address; regs: the interrupted ip); absent for user. */
  addr?: bigint;
  /** Function name (for return addresses the symbol of addr - 1, as %pB looks it up). */
  fn: string;
  /** As printed: "vfs_read+0x90/0x13b". */
  text: string;
}

export interface PrintedBlock {
  elements: { e: TraceElement; stack: string | undefined }[];
  /** Unwinder warnings (WARNING: kernel stack …, unwind stack type …). */
  warnings: string[];
  /** Words of the raw stack dump the stock unwinder prints after its warning. */
  rawDumpLines: number;
}

const FRAME_RE = /^\s*(\?\s+)?([\w.$]+)\+0x([0-9a-f]+)\/0x([0-9a-f]+)(?:\s+\[\w+\])?\s*$/;
const RIP_RE = /^\s*RIP:\s+([0-9a-f]{4}):(\S+)/;
const STACK_RE = /^\s*<(\/?)([A-Z#_]+)>\s*$/;
const WARNING_RE = /WARNING: kernel stack|unwind stack type:/;

/**
 * The exact address a printed "name+0xoff/0xsize" stands for: the symbol of that name plus the
 * offset. %pB prints a return address that is a symbol's first byte as the previous symbol at
 * offset == size, so this inverts it too. Static functions share names (an inline helper emitted
 * out of line in many files: test_ti_thread_flag/0xd), and size alone may not tell them apart:
 * `seen` says which candidate addresses the printer could have read (the stack's words): the first
 * of the printed size among them wins; then the first of the printed size; then the first of the name.
 */
export function printedAddress(profile: KernelProfile, name: string, off: number, size: number, seen?: ReadonlySet<bigint>): bigint | undefined {
  const t = profile.symbols;
  let any: bigint | undefined;
  let sized: bigint | undefined;
  for (let i = 0; i < t.length; i++) {
    if (t.names[i] !== name) continue;
    const a = bigFromSigned(t.starts[i]! + off);
    const fits = t.ends[i]! - t.starts[i]! === size;
    if (fits && seen?.has(a)) return a;
    any ??= a;
    if (fits) sized ??= a;
  }
  return sized ?? any;
}

/** Every word on the sample's captured stacks: what a printed trace of that instant can name. */
export function stackWords(sample: Sample): Set<bigint> {
  const out = new Set<bigint>();
  for (const st of sample.stacks) {
    for (const w of st.windows) {
      const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
      for (let o = 0; o + 8 <= w.bytes.length; o += 8) out.add(dv.getBigUint64(o, true));
    }
  }
  return out;
}

/**
 * Parses a task's block of a kernel stack dump (a sysrq 't' block, a dump_stack()); `seen`: the
 * words of the stacks it was printed from, when known (printedAddress).
 */
export function parsePrintedTrace(lines: readonly string[], profile: KernelProfile, seen?: ReadonlySet<bigint>): PrintedBlock {
  const out: PrintedBlock = { elements: [], warnings: [], rawDumpLines: 0 };
  let stack: string | undefined;
  for (const line of lines) {
    if (WARNING_RE.test(line)) {
      out.warnings.push(line.trim());
      continue;
    }
    const st = STACK_RE.exec(line);
    if (st) {
      stack = st[1] ? undefined : st[2];
      continue;
    }
    const rip = RIP_RE.exec(line);
    if (rip) {
      const cs = parseInt(rip[1]!, 16);
      if ((cs & 3) !== 0) {
        out.elements.push({ e: { kind: 'user', fn: '(user)', text: line.trim() }, stack });
        continue;
      }
      const m = /^([\w.$]+)\+0x([0-9a-f]+)\/0x([0-9a-f]+)$/.exec(rip[2]!);
      const addr = m ? printedAddress(profile, m[1]!, parseInt(m[2]!, 16), parseInt(m[3]!, 16), seen) : undefined;
      out.elements.push({ e: { kind: 'regs', ...(addr !== undefined ? { addr } : {}), fn: m ? m[1]! : rip[2]!, text: rip[2]! }, stack });
      continue;
    }
    const f = FRAME_RE.exec(line);
    if (f) {
      const addr = printedAddress(profile, f[2]!, parseInt(f[3]!, 16), parseInt(f[4]!, 16), seen);
      const text = `${f[2]}+0x${f[3]}/0x${f[4]}`;
      const fn = addr !== undefined ? fnOf(profile, addr, true) : f[2]!;
      out.elements.push({ e: { kind: f[1] ? 'guess' : 'frame', ...(addr !== undefined ? { addr } : {}), fn, text }, stack });
      continue;
    }
    if (/^\s*\S+: [0-9a-f]{16}\b/.test(line)) out.rawDumpLines++;
  }
  return out;
}

/** The function an address belongs to; a return address is looked up at address - 1 (%pB). */
export function fnOf(profile: KernelProfile, addr: bigint, returnAddress: boolean): string {
  const t = profile.symbols;
  const s = signedFromBig(addr);
  const i = t.indexOfSigned(returnAddress ? s - 1 : s);
  return i >= 0 ? t.names[i]! : formatHex64(addr);
}

/** Little-endian word at an address from the sample's captured windows. */
export function wordAt(sample: Sample, addr: bigint): bigint | undefined {
  for (const st of sample.stacks) {
    for (const w of st.windows) {
      const o = Number(addr - w.start);
      if (addr >= w.start && o + 8 <= w.bytes.length) {
        return new DataView(w.bytes.buffer, w.bytes.byteOffset + o, 8).getBigUint64(0, true);
      }
    }
  }
  return undefined;
}

export interface InterruptedContext {
  /** The slot holding the interrupt stub's return address (the call to its C handler). */
  stubSlot: bigint;
  stubReturn: bigint;
  /** The stub pushed a kernel_entry marker frame between its return address and pt_regs. */
  markerFrame: boolean;
  ptRegsAt: bigint;
  ip: bigint;
  cs: bigint;
  bp: bigint;
  sp: bigint;
}

/**
 * Where the interrupt that the IRQ stack was entered from left its pt_regs, read from the sample's
 * memory by the entry code's own layout, not by any unwinder: call_on_irqstack saved the task's rsp
 * in the IRQ stack's top word; above it on the task stack, the first return address into the
 * IRQ entry text is the stub's call to its C handler, made with %rsp at pt_regs (idtentry_body) —
 * or, when the stub pushed a kernel_entry frame {pt_regs->bp, kernel_entry} first, 16 bytes higher.
 */
export function locateInterruptedContext(sample: Sample, profile: KernelProfile): InterruptedContext | undefined {
  const irq = sample.stacks.find((s) => s.type === 'irq');
  const task = sample.stacks.find((s) => s.type === 'task');
  if (!irq || !task) return undefined;
  const link = wordAt(sample, irq.end - 8n);
  if (link === undefined || link < task.begin || link >= task.end) return undefined;
  for (let a = link & ~7n; a + 8n <= task.end; a += 8n) {
    const v = wordAt(sample, a);
    if (v === undefined) return undefined;
    const s = signedFromBig(v);
    if (!Number.isSafeInteger(s) || !profile.inEntrySectionS(s)) continue;
    const ke = profile.kernelEntry;
    const marker = ke !== undefined && wordAt(sample, a + 16n) === bigFromSigned(ke);
    const ptRegsAt = a + (marker ? 24n : 8n);
    const ip = wordAt(sample, ptRegsAt + BigInt(PT_REGS_OFFSET.ip));
    const cs = wordAt(sample, ptRegsAt + BigInt(PT_REGS_OFFSET.cs));
    const bp = wordAt(sample, ptRegsAt + BigInt(PT_REGS_OFFSET.bp));
    const sp = wordAt(sample, ptRegsAt + BigInt(PT_REGS_OFFSET.sp));
    if (ip === undefined || cs === undefined || bp === undefined || sp === undefined || ptRegsAt + BigInt(PT_REGS_SIZE) > task.end) return undefined;
    return { stubSlot: a, stubReturn: v, markerFrame: marker, ptRegsAt, ip, cs, bp, sp };
  }
  return undefined;
}

/**
 * The project's unwind listed the way show_trace_log_lvl() prints it, from `fromSlot` to the end of
 * its stack: each word that is a frame's return slot prints that frame, and pt_regs the walk entered
 * right after it print as its RIP block (whose ip word the scan then skips, as the kernel does);
 * every other kernel text address prints as a guess. A walk that ends at user pt_regs ends with them.
 */
export function projectListing(sample: Sample, profile: KernelProfile, u: UnwindResult, fromSlot: bigint): TraceElement[] {
  const st = sample.stacks.find((s) => fromSlot >= s.begin && fromSlot < s.end);
  if (!st) return [];
  const out: TraceElement[] = [];
  const bySlot = new Map<bigint, number>();
  u.frames.forEach((f, i) => {
    if (f.slot !== undefined && f.stack === st.type) bySlot.set(f.slot, i);
  });
  const printed = new Set<number>();
  const skip = new Set<bigint>();
  const regsOf = (i: number): void => {
    const f = u.frames[i]!;
    printed.add(i);
    if (f.slot !== undefined) skip.add(f.slot);
    out.push({ kind: 'regs', addr: f.ip, fn: fnOf(profile, f.ip, false), text: profile.symbols.format(f.ip) });
  };
  for (let a = fromSlot; a + 8n <= st.end; a += 8n) {
    if (skip.has(a)) continue;
    const i = bySlot.get(a);
    if (i !== undefined && !printed.has(i)) {
      const f = u.frames[i]!;
      if (f.kind === 'regs') {
        regsOf(i);
        continue;
      }
      printed.add(i);
      out.push({ kind: 'frame', addr: f.ip, fn: fnOf(profile, f.ip, true), text: profile.symbols.format(f.ip, true) });
      const next = u.frames[i + 1];
      if (next?.kind === 'regs') regsOf(i + 1);
      continue;
    }
    const v = wordAt(sample, a);
    if (v === undefined) break;
    const s = signedFromBig(v);
    if (!Number.isSafeInteger(s) || !profile.isTextS(s)) continue;
    out.push({ kind: 'guess', addr: v, fn: fnOf(profile, v, true), text: profile.symbols.format(v, true) });
  }
  if (u.outcome === 'user') out.push({ kind: 'user', fn: '(user)', text: 'user pt_regs' });
  return out;
}

/** The kernel's elements from the stub's return address down (the part the comparison covers). */
export function kernelBelow(block: PrintedBlock, stubReturn: bigint): TraceElement[] | undefined {
  // The task stack's part: after </IRQ>, in <TASK>.
  const i = block.elements.findIndex((x) => x.stack === 'TASK' && x.e.kind === 'frame' && x.e.addr === stubReturn);
  if (i < 0) return undefined;
  const out: TraceElement[] = [];
  for (const x of block.elements.slice(i)) {
    if (x.stack !== 'TASK' && x.e.kind !== 'user') break;
    out.push(x.e);
  }
  return out;
}

export interface InstantComparison {
  /** Reliable elements (frames and RIP blocks, the marker frame left out) after the stub, per side. */
  kernelReliable: TraceElement[];
  projectReliable: TraceElement[];
  /** The two reliable sequences are equal, address for address, and both reach (or miss) user pt_regs alike. */
  agree: boolean;
  kernelRipBlock: boolean;
  projectRipBlock: boolean;
  kernelUser: boolean;
  projectUser: boolean;
  /** The kernel printed the kernel_entry marker frame as a reliable line (as %pB names it). */
  kernelMarker?: string;
  /** Guesses one side printed and the other did not (function names), the marker left out. */
  guessesOnlyKernel: string[];
  guessesOnlyProject: string[];
  guessesCommon: number;
  /** Every guess the kernel printed below the stub (function names, as %pB names them). */
  kernelGuesses: string[];
  /** …and their addresses (a guess at a function's first byte is named after the function before it). */
  kernelGuessAddrs: bigint[];
  /** Reliable elements both end with (counted from the end). */
  commonTail: number;
  /**
   * The project's reading below the stub for a sentence: its frames, and the guesses right after
   * an interrupted RIP marked "fn?" (a frameless leaf's caller: the return address the leaf's own
   * call pushed, which no frame-pointer walk can vouch for).
   */
  projectRecovered: string[];
}

/** Elements as a trace of function names: guesses "? fn", RIP blocks "RIP: fn", user regs "(user)". */
export function traceNames(es: readonly TraceElement[], profile?: KernelProfile): string[] {
  const ke = profile?.kernelEntry;
  return es.map((e) => {
    if (e.kind === 'user') return '(user)';
    if (e.kind === 'regs') return `RIP: ${e.fn}`;
    const marker = ke !== undefined && e.addr === bigFromSigned(ke) ? `${e.text} (kernel_entry)` : e.fn;
    return e.kind === 'guess' ? `? ${marker}` : marker;
  });
}

export function compareInstant(kernel: readonly TraceElement[], project: readonly TraceElement[], profile: KernelProfile): InstantComparison {
  const ke = profile.kernelEntry !== undefined ? bigFromSigned(profile.kernelEntry) : undefined;
  const isMarker = (e: TraceElement): boolean => ke !== undefined && e.addr === ke;
  // The stub's own line is the anchor both lists start with; compare what lies below it.
  const below = (es: readonly TraceElement[]): TraceElement[] => es.slice(1);
  const rel = (es: readonly TraceElement[]): TraceElement[] => below(es).filter((e) => (e.kind === 'frame' || e.kind === 'regs') && !isMarker(e));
  const kernelReliable = rel(kernel);
  const projectReliable = rel(project);
  const kernelUser = kernel.some((e) => e.kind === 'user');
  const projectUser = project.some((e) => e.kind === 'user');
  const same = (a: TraceElement, b: TraceElement): boolean => a.kind === b.kind && a.addr === b.addr;
  const agree = kernelReliable.length === projectReliable.length && kernelReliable.every((e, i) => same(e, projectReliable[i]!)) && kernelUser === projectUser;
  let commonTail = 0;
  while (commonTail < Math.min(kernelReliable.length, projectReliable.length)
    && same(kernelReliable[kernelReliable.length - 1 - commonTail]!, projectReliable[projectReliable.length - 1 - commonTail]!)) commonTail++;
  // Guesses as multisets of addresses: the same stale word prints once on each side.
  const guesses = (es: readonly TraceElement[]): Map<bigint, TraceElement[]> => {
    const m = new Map<bigint, TraceElement[]>();
    for (const e of below(es)) if (e.kind === 'guess' && e.addr !== undefined && !isMarker(e)) m.set(e.addr, [...(m.get(e.addr) ?? []), e]);
    return m;
  };
  const gk = guesses(kernel);
  const gp = guesses(project);
  const only = (a: Map<bigint, TraceElement[]>, b: Map<bigint, TraceElement[]>): string[] => {
    const out: string[] = [];
    for (const [addr, es] of a) for (let i = b.get(addr)?.length ?? 0; i < es.length; i++) out.push(es[i]!.fn);
    return out;
  };
  let guessesCommon = 0;
  for (const [addr, es] of gk) guessesCommon += Math.min(es.length, gp.get(addr)?.length ?? 0);
  const marker = below(kernel).find((e) => e.kind === 'frame' && isMarker(e));
  const projectRecovered: string[] = [];
  let afterRegs = false;
  for (const e of below(project)) {
    if (isMarker(e) || e.kind === 'user') continue;
    if (e.kind === 'guess') {
      if (afterRegs) projectRecovered.push(`${e.fn}?`);
      continue;
    }
    projectRecovered.push(e.fn);
    afterRegs = e.kind === 'regs';
  }
  return {
    kernelReliable, projectReliable, agree,
    kernelRipBlock: kernelReliable.some((e) => e.kind === 'regs'),
    projectRipBlock: projectReliable.some((e) => e.kind === 'regs'),
    kernelUser, projectUser,
    ...(marker ? { kernelMarker: marker.text } : {}),
    guessesOnlyKernel: only(gk, gp), guessesOnlyProject: only(gp, gk), guessesCommon, commonTail,
    kernelGuesses: [...gk.values()].flat().map((e) => e.fn),
    kernelGuessAddrs: [...gk.keys()],
    projectRecovered,
  };
}

/**
 * One sentence: where the kernel's trace and the project's (strategy) agree and where they part.
 * `interruptedFn` is the function the interrupt's pt_regs name (read from memory, not unwound).
 */
export function instantVerdict(c: InstantComparison, o: { strategy: string; unwinder: string; warnings: readonly string[]; projectStop?: string; interruptedFn?: string; interruptedIp?: bigint }): string {
  const names = (es: readonly TraceElement[]): string => es.map((e) => e.fn).join(', ');
  const marker = c.kernelMarker ? `; the kernel also prints the kernel_entry marker frame as ${c.kernelMarker}` : '';
  const guessNote = c.guessesOnlyKernel.length || c.guessesOnlyProject.length
    ? `; the \`?\` guesses differ (kernel only: ${c.guessesOnlyKernel.join(', ') || 'none'}; project only: ${c.guessesOnlyProject.join(', ') || 'none'})`
    : c.guessesCommon > 0 ? ` and on all ${c.guessesCommon} \`?\` guesses` : ' (no `?` guesses on either side)';
  if (c.agree && c.kernelReliable.length === 0) {
    const why = o.projectStop ? `: both stop where the frame chain ends (${o.projectStop})` : '';
    return `kernel and project (${o.strategy}) agree that nothing below the interrupt is reliable${why}${guessNote}${marker}.`;
  }
  if (c.agree) {
    return `kernel and project (${o.strategy}) agree on all ${c.kernelReliable.length} frames below the interrupt (${names(c.kernelReliable)}${c.kernelUser ? ', then the syscall\'s user pt_regs' : ''})${guessNote}${marker}.`;
  }
  const k: string[] = [];
  if (o.warnings.some((w) => /bad value/.test(w))) k.push(`warns "${o.warnings.find((w) => /bad value/.test(w))!.replace(/ at \S+ in \S+/, '')}"`);
  if (!c.kernelRipBlock && o.interruptedFn) {
    const guessed = o.interruptedIp !== undefined ? c.kernelGuessAddrs.includes(o.interruptedIp) : c.kernelGuesses.includes(o.interruptedFn);
    k.push(`loses the interrupted RIP (${o.interruptedFn} ${guessed ? 'only as a `?` guess' : 'not printed at all'})`);
  }
  if (c.kernelMarker) k.push(`prints the marker frame as ${c.kernelMarker}`);
  if (!c.kernelUser && c.projectUser) k.push('never reaches the syscall\'s user pt_regs');
  if (c.kernelReliable.length > 0) k.push(`vouches for ${names(c.kernelReliable)}`);
  else k.push('vouches for nothing below it, only guesses');
  const p = c.projectReliable.length
    ? `the project's ${o.strategy} strategy recovers ${c.projectRecovered.join(', ')}${c.projectUser ? ' to the user pt_regs' : ''}`
    : `the project's ${o.strategy} strategy recovers nothing below the interrupt`;
  const stop = o.projectStop ? ` and stops (${o.projectStop})` : '';
  const tail = c.commonTail > 0 && c.commonTail < Math.max(c.kernelReliable.length, c.projectReliable.length)
    ? `; both agree on the last ${c.commonTail} (${names(c.projectReliable.slice(-c.commonTail))})` : '';
  return `the kernel (${o.unwinder} unwinder) ${k.join(', ')}; ${p}${stop}${tail}.`;
}
