// The kernel's own trace and the project's unwind of the same instant (issue 18, part 2).
// Boots an entry-design kernel under QEMU with the gdbstub while `dd if=/dev/zero of=/dev/null`
// runs (nearly all of its time in the kernel, clearing the user buffer), sends a serial break and
// 't' so that sysrq "show task states" runs in the 8250 interrupt handler, and stops the guest at
// `show_stack` for the task the interrupt came in on (the current task): at that instant the stack
// below the interrupt is exactly what the kernel is about to walk and print. The sampler takes the
// registers and stacks there; the project unwinds them with the design's strategy (and the others);
// then the guest runs on, prints its trace, and the two are compared from the interrupt stub's
// return address down (services/core/check/instant.ts). The printing functions above the interrupt
// differ by construction (the project stops earlier, at show_stack) and are not compared.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  compareInstant, instantVerdict, kernelBelow, locateInterruptedContext, parsePrintedTrace, projectListing, stackWords, traceNames, fnOf,
  type InstantComparison, type TraceElement,
} from '../core/check/instant.ts';
import { unwind } from '../core/unwind/index.ts';
import { STRATEGIES, type StrategyName, type UnwindResult } from '../core/unwind/types.ts';
import { formatHex64 } from '../core/u64.ts';
import { DESIGN_STRATEGY, DESIGNS, type DesignName, type InstantResult } from '../experiment/results.ts';
import { initScript } from './guest.ts';
import { builtFpKernel } from './fp-kernel.ts';
import { symbolAddresses } from './kernel.ts';
import { ownKernelUnavailable } from './own-kernel.ts';
import type { TakenSample } from './sampler.ts';
import { RealHostSession } from './session.ts';

export interface CaptureInstantOptions {
  /** The bzImage QEMU boots. */
  kernel: string;
  /** Its vmlinux. */
  vmlinux: string;
  /** encoded | section-stock | section-patched | kernel_entry-stock | kernel_entry-patched */
  variant: string;
  log?: (s: string) => void;
  /** Where the guest's kallsyms dumps are cached per build id (OwnKernelOptions.cache). */
  cache?: string;
  /** Sysrq attempts until one lands while the current task runs in the kernel (default 4). */
  attempts?: number;
}

/** One strategy's unwind of the instant, listed like the kernel's trace from the stub down. */
export interface InstantStrategyTrace {
  strategy: StrategyName;
  trace: string[];
  outcome: string;
  reason?: string;
  message?: string;
  verdict: string;
  agree: boolean;
}

export interface ListedElement {
  kind: TraceElement['kind'];
  /** Hex address, absent for user pt_regs. */
  addr?: string;
  text: string;
}

const listed = (es: readonly TraceElement[]): ListedElement[] =>
  es.map((e) => ({ kind: e.kind, ...(e.addr !== undefined ? { addr: formatHex64(e.addr) } : {}), text: e.text }));

/** InstantResult and what it was decided on. */
export interface InstantCapture extends InstantResult {
  buildId?: string;
  /** Which attempt (1-based) was used, and why the ones before it were not. */
  attempt?: number;
  rejected?: string[];
  /** The interrupt's pt_regs, read from memory by the entry code's layout (no unwinder). */
  interrupted?: { fn: string; ip: string; cs: string; ptRegsAt: string; stubReturn: string; markerFrame: boolean };
  /** Every frame-pointer strategy's reading, the design's first. */
  strategies?: InstantStrategyTrace[];
  /** The kernel's printed block for the task, as printed (the dd block of the sysrq 't' dump). */
  kernelBlock?: string[];
  /** Both listings from the stub down with exact addresses (what the traces' names stand for). */
  kernelElements?: ListedElement[];
  projectElements?: ListedElement[];
  comparison?: Omit<InstantComparison, 'kernelReliable' | 'projectReliable' | 'kernelGuessAddrs'>;
}

const READY = 'STACKSANITY-INSTANT-DD';
/** dd copies /dev/zero into its buffer: clear_user() in read_zero() nearly all the time. */
export const INSTANT_INIT = initScript(`echo 1 > /proc/sys/kernel/sysrq
echo 8 > /proc/sys/kernel/printk
dd if=/dev/zero of=/dev/null bs=1M 2>/dev/null &
echo ${READY}
while true; do sleep 60; done
`);

const WHAT = "sysrq 't' from a serial break, in the 8250 interrupt, while dd reads /dev/zero: the current task's trace from show_stack";

export function designOf(variant: string): DesignName {
  const d = variant.replace(/-(stock|patched)$/, '');
  if (!(DESIGNS as readonly string[]).includes(d)) throw new Error(`unknown variant ${variant} (a design of ${DESIGNS.join(', ')}, optionally -stock or -patched)`);
  return d as DesignName;
}

export function unwinderOf(variant: string): 'stock' | 'patched' {
  return variant.endsWith('-patched') ? 'patched' : 'stock';
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function captureInstant(o: CaptureInstantOptions): Promise<InstantCapture> {
  const log = o.log ?? (() => {});
  const base: InstantCapture = {
    variant: o.variant, what: WHAT, kernelTrace: [], kernelRipBlock: false, kernelWarnings: [], projectTrace: [], verdict: '',
  };
  const design = designOf(o.variant);
  const strategy = DESIGN_STRATEGY[design];
  const missing = [o.kernel, o.vmlinux].find((f) => !existsSync(f));
  const why = missing ? `${missing} does not exist (scripts/build-fp-kernel.sh builds it)` : ownKernelUnavailable();
  if (why) return { ...base, skipped: why, verdict: `not captured: ${why}` };

  // A kernel that does not boot, or a dump that never comes, is this variant's result, not the end
  // of a whole experiment run: it comes back as a capture that was not made, with the reason.
  let session: RealHostSession | undefined;
  try {
    session = await RealHostSession.open({
      own: { kernel: o.kernel, vmlinux: o.vmlinux, ...(o.cache ? { cache: o.cache } : {}) },
      init: INSTANT_INIT, consoleInput: true, log,
    });
    return await run(session, o, base, strategy, log);
  } catch (e) {
    const msg = `capture failed: ${(e as Error).message}`;
    log(msg);
    return { ...base, skipped: msg, verdict: `not captured: ${msg}` };
  } finally {
    session?.close();
  }
}

async function run(session: RealHostSession, o: CaptureInstantOptions, base: InstantCapture, strategy: StrategyName, log: (s: string) => void): Promise<InstantCapture> {
  const { gdb, guest, profile } = session;
  const consoleText = (): string => readFileSync(guest.consoleLog, 'latin1').replace(/\r/g, '');
  const syms = symbolAddresses(session.kallsyms, ['show_stack', '__per_cpu_offset', 'current_task']);
  const showStack = syms.get('show_stack');
  const currentTask = syms.get('current_task');
  if (showStack === undefined || currentTask === undefined) throw new Error('the guest\'s kallsyms lack show_stack or current_task');
  const pco = syms.get('__per_cpu_offset');
  const perCpu = pco !== undefined ? (await gdb.readU64(pco)) ?? 0n : 0n;
  const current = async (): Promise<bigint | undefined> => gdb.readU64(perCpu + currentTask);

  // Opening the session left the guest stopped: let /init start dd and dd settle in its loop.
  gdb.cont();
  const t0 = Date.now();
  while (!consoleText().includes(READY)) {
    if (Date.now() - t0 > 120_000) throw new Error(`the guest never started dd (console tail: ${consoleText().slice(-300)})`);
    await sleep(200);
  }
  await sleep(2000);
  await gdb.interrupt();

  const rejected: string[] = [];
  const attempts = o.attempts ?? 4;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const from = consoleText().length;
    await gdb.hwBreakpoint(showStack, true);
    gdb.cont();
    // The 8250 driver turns a break followed by a key into a sysrq (uart_handle_break, then
    // uart_prepare_sysrq_char within 5 s): the dump runs in the interrupt for the 't'.
    guest.type('\x01b');
    await sleep(500);
    guest.type('t');
    let taken: TakenSample | undefined;
    for (let hits = 0; hits < 500 && !taken; hits++) {
      await gdb.waitStop(120_000);
      const r = await gdb.readRegisters();
      const task = await current();
      if (r.get('rdi') !== task) {
        // Another task's block of the dump: step off the breakpoint and go on.
        await gdb.hwBreakpoint(showStack, false);
        await gdb.step();
        await gdb.hwBreakpoint(showStack, true);
        gdb.cont();
        continue;
      }
      await gdb.hwBreakpoint(showStack, false);
      // Past show_stack's prologue (push %rbp; mov %rsp,%rbp), so that its own frame is the
      // first one: a walk started at a function's first instruction skips its caller.
      for (let i = 0; i < 4; i++) {
        const g = await gdb.readRegisters();
        if (g.get('rbp') === g.get('rsp')) break;
        await gdb.step();
      }
      taken = await session.sampler.capture('sysrq');
    }
    if (!taken) throw new Error('show_stack was never called for the current task');
    const ctx = locateInterruptedContext(taken.sample, profile);
    // Let the kernel print its trace of the same instant.
    gdb.cont();
    const { block, warnings } = await printedBlock(consoleText, from, log);
    await gdb.interrupt();
    if (!ctx) {
      // Say where it was, by the plain frame-pointer walk, so that a rejected attempt can be understood.
      const fp = unwind(taken.sample, profile, 'fp').frames.slice(0, 12).map((f) => fnOf(profile, f.ip, f.kind === 'call')).join(' < ');
      rejected.push(`attempt ${attempt}: show_stack ran for ${taken.sample.comm ?? 'the current task'} on the ${taken.where} stack, not in an interrupt on the IRQ stack (${fp})`);
      log(rejected[rejected.length - 1]!);
      continue;
    }
    if (taken.sample.comm !== undefined && taken.sample.comm !== 'dd') {
      rejected.push(`attempt ${attempt}: the interrupt came in on ${taken.sample.comm}, not dd`);
      log(rejected[rejected.length - 1]!);
      continue;
    }
    if ((ctx.cs & 3n) !== 0n) {
      rejected.push(`attempt ${attempt}: ${taken.sample.comm ?? 'the task'} was interrupted in user mode (cs ${formatHex64(ctx.cs)})`);
      log(rejected[rejected.length - 1]!);
      continue;
    }
    return judge(session, base, strategy, taken, ctx, block, warnings, o, attempt, rejected);
  }
  const why = `no sysrq interrupt out of ${attempts} landed while the current task ran in the kernel: ${rejected.join('; ')}`;
  return { ...base, skipped: why, verdict: `not captured: ${why}`, rejected };
}

/**
 * The current task's block of the sysrq 't' dump that starts after `from`: the one whose trace
 * has an <IRQ> part (every other task's stack is printed from where it was switched out).
 */
async function printedBlock(consoleText: () => string, from: number, log: (s: string) => void): Promise<{ block: string[]; warnings: string[] }> {
  const t0 = Date.now();
  for (;;) {
    const text = consoleText().slice(from);
    const lines = text.split('\n').map((l) => l.replace(/^\[\s*\d+\.\d+\]\s?/, ''));
    const start = lines.findIndex((l) => l.includes('sysrq: Show State'));
    const done = start >= 0 && lines.slice(start).some((l) => /Showing busy workqueues/.test(l));
    if (done || Date.now() - t0 > 180_000) {
      if (!done) log('the sysrq dump did not finish within 180 s; using what was printed');
      const blocks: string[][] = [];
      for (const l of start >= 0 ? lines.slice(start + 1) : []) {
        if (/Showing busy workqueues/.test(l)) break;
        if (/^task:/.test(l)) blocks.push([l]);
        else if (blocks.length && !l.startsWith('STACKSANITY-')) blocks[blocks.length - 1]!.push(l);
      }
      // The stock unwinder's warning is printk_deferred_once: it may land anywhere in the dump.
      const warnings = lines.filter((l) => /WARNING: kernel stack|unwind stack type:/.test(l)).map((l) => l.trim());
      return { block: blocks.find((b) => b.some((l) => /^\s*<IRQ>\s*$/.test(l))) ?? [], warnings };
    }
    await sleep(300);
  }
}

function judge(
  session: RealHostSession, base: InstantCapture, strategy: StrategyName, taken: TakenSample,
  ctx: NonNullable<ReturnType<typeof locateInterruptedContext>>, block: string[], dumpWarnings: string[], o: CaptureInstantOptions, attempt: number, rejected: string[],
): InstantCapture {
  const profile = session.profile;
  const printed = parsePrintedTrace(block, profile, stackWords(taken.sample));
  for (const w of dumpWarnings) if (!printed.warnings.includes(w)) printed.warnings.push(w);
  const kernel = kernelBelow(printed, ctx.stubReturn);
  const interruptedFn = fnOf(profile, ctx.ip, false);
  const unwinder = unwinderOf(o.variant);
  const order: StrategyName[] = [strategy, ...STRATEGIES.filter((s) => s !== strategy)];
  const traces: InstantStrategyTrace[] = [];
  let main: { listing: TraceElement[]; c: InstantComparison; u: UnwindResult } | undefined;
  for (const s of order) {
    const u = unwind(taken.sample, profile, s);
    const listing = projectListing(taken.sample, profile, u, ctx.stubSlot);
    const c = compareInstant(kernel ?? [], listing, profile);
    const stop = u.outcome === 'error' ? `${u.reason}: ${u.message}` : undefined;
    const verdict = kernel
      ? instantVerdict(c, { strategy: s, unwinder, warnings: printed.warnings, interruptedFn, interruptedIp: ctx.ip, ...(stop ? { projectStop: stop } : {}) })
      : 'the kernel\'s trace never printed the interrupt stub\'s return address: nothing to compare';
    traces.push({
      strategy: s, trace: traceNames(listing, profile), outcome: u.outcome, verdict, agree: kernel !== undefined && c.agree,
      ...(u.reason ? { reason: u.reason } : {}), ...(u.message ? { message: u.message } : {}),
    });
    if (s === strategy) main = { listing, c, u };
  }
  const { c, listing } = main!;
  const { kernelReliable: _k, projectReliable: _p, kernelGuessAddrs: _g, ...comparison } = c;
  return {
    ...base,
    what: `${WHAT}; ${taken.sample.comm ?? 'the task'} interrupted in kernel mode at ${profile.symbols.format(ctx.ip)}`,
    kernelTrace: kernel ? traceNames(kernel, profile) : [],
    kernelRipBlock: c.kernelRipBlock,
    kernelWarnings: printed.warnings,
    projectTrace: traces[0]!.trace,
    verdict: `${o.variant}: ${traces[0]!.verdict}`,
    buildId: session.build.buildId,
    attempt,
    ...(rejected.length ? { rejected } : {}),
    interrupted: {
      fn: interruptedFn, ip: formatHex64(ctx.ip), cs: formatHex64(ctx.cs), ptRegsAt: formatHex64(ctx.ptRegsAt),
      stubReturn: profile.symbols.format(ctx.stubReturn, true), markerFrame: ctx.markerFrame,
    },
    strategies: traces,
    kernelBlock: block,
    kernelElements: listed(kernel ?? []),
    projectElements: listed(listing),
    comparison,
  };
}

/** captureInstant for a variant built by scripts/build-fp-kernel.sh (fp-kernel.ts finds it). */
export async function captureInstantVariant(variant: string, o: { log?: (s: string) => void; cache?: string; fpCache?: string } = {}): Promise<InstantCapture> {
  const k = builtFpKernel(variant, ...(o.fpCache ? [resolve(o.fpCache)] : []));
  if (!k) {
    const why = `the ${variant} kernel is not built (scripts/build-fp-kernel.sh)`;
    return { variant, what: WHAT, kernelTrace: [], kernelRipBlock: false, kernelWarnings: [], projectTrace: [], verdict: `not captured: ${why}`, skipped: why };
  }
  return captureInstant({ kernel: k.image, vmlinux: k.vmlinux, variant, ...(o.log ? { log: o.log } : {}), ...(o.cache ? { cache: o.cache } : {}) });
}
