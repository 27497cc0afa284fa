// The single-step sweep on a real kernel: a hardware breakpoint on an entry stub, then one sample at
// every instruction until the interrupted instruction runs again (rip back at the interrupted ip
// with the interrupted rsp), each checked with every applicable strategy against a truth the
// stepper built itself (shadow-stack.ts). QEMU's single-step flags are left at their default
// (ENABLE|NOIRQ|NOTIMER): no interrupt or timer fires while stepping, so the path is deterministic
// and the entry under test is the only one on the way.
// The outcome per step and the blind-spot table are the emulator sweep's (services/emulator/sweep.ts).
import { checkSample, type SampleCheck } from '../core/check/checker.ts';
import { findingsOf, FindingsTally, type Finding } from '../core/check/findings.ts';
import { GOOD_VERDICTS } from '../core/check/reasons.ts';
import type { Sample, TruthFrame } from '../core/dump/sample.ts';
import type { EntryType } from '../core/symbols/entry-types.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { signedFromBig } from '../core/u64.ts';
import { decodeInsn, type Insn } from '../core/x86/insn.ts';
import { classify, type BlindSpotTable, type Outcome, type StepResult, type TableRow } from '../emulator/sweep.ts';
import { symbolAddresses } from './kernel.ts';
import { ShadowStack, type CpuState, type EntryContext, type ReplacedReturn } from './shadow-stack.ts';
import { DESIGN_STRATEGY, type SweepTarget } from './sweep-target.ts';

export const SWEEP_ENTRIES = {
  timer: { stub: 'asm_sysvec_apic_timer_interrupt', type: 'timer' },
  irq: { stub: 'asm_common_interrupt', type: 'irq' },
  page_fault: { stub: 'asm_exc_page_fault', type: 'page_fault' },
  syscall: { stub: 'entry_SYSCALL_64', type: 'syscall' },
  nmi: { stub: 'asm_exc_nmi', type: 'nmi' },
} as const satisfies Record<string, { stub: string; type: EntryType }>;
export type SweepEntryName = keyof typeof SWEEP_ENTRIES;
export type FromMode = 'user' | 'kernel';

/**
 * System calls that neither block nor switch tasks, so that stepping one ends back in user mode on
 * the same task: getpid 39, getuid 102, getgid 104, geteuid 107, getegid 108, getppid 110, uname 63,
 * newfstatat 262, fstat 5, lseek 8, rt_sigprocmask 14, rt_sigaction 13, close 3, dup2 33, brk 12.
 */
const QUICK_SYSCALLS = new Set([39n, 102n, 104n, 107n, 108n, 110n, 63n, 262n, 5n, 8n, 14n, 13n, 3n, 33n, 12n]);

export interface SweepStepRecord {
  index: number;
  ip: bigint;
  sp: bigint;
  fn: string;
  offset: number;
  /** The decoded kind of the instruction about to run (call, ret, push_rbp, ... or other). */
  op: string;
  inEntryCode: boolean;
  depth: number;
  truth: TruthFrame[];
  results: (StepResult & { outcome: Outcome; lost: string[] })[];
  /** The checker's answer (for the findings), and the sample without its stack bytes. */
  check?: SampleCheck;
  sample?: Sample;
}

export interface EntrySweep {
  entry: SweepEntryName;
  from: FromMode;
  stub: string;
  stubAddress: bigint;
  /** The breakpoint hits looked at before one fitted (mode, syscall number, an agreed base chain). */
  hitsSkipped: number;
  /** The hardware frame at the stub's first instruction: where it sat and what it held. */
  hwFrame?: { at: bigint; ip: bigint; cs: bigint; flags: bigint; sp: bigint; ss: bigint; errorCode?: bigint };
  interrupted: { ip: bigint; sp: bigint; user: boolean };
  base: TruthFrame[];
  steps: SweepStepRecord[];
  /** The interrupted instruction ran again (rip and rsp back) within the step limit. */
  returned: boolean;
  /** Calls into the scheduler run at full speed (not sampled) until the task returned from them. */
  steppedOver: { fn: string; step: number }[];
  /** The path reached __switch_to_asm: it scheduled another task before returning. */
  scheduledAway: boolean;
  /** Shadow-stack depth when the sweep ended (0 when the entry returned cleanly). */
  finalDepth: number;
  calls: number;
  rets: number;
  /** Steps where rip did not move (one iteration of a rep-prefixed string instruction). */
  repeats: number;
  replacedReturns: ReplacedReturn[];
  /** Wall time of the stepping loop (step + registers + stack + checks), ms. */
  ms: number;
  /** Of which, in the gdbstub (step, registers, memory), ms. */
  gdbMs: number;
}

export interface SweepOptions {
  maxSteps?: number;
  /** Breakpoint hits to look at before giving up. */
  maxHits?: number;
  /** Give up waiting for a breakpoint hit after this long, ms. */
  waitMs?: number;
  check?: boolean;
  log?: (s: string) => void;
  /** Sweeps that switched tasks to drop before giving up (default 5). */
  attempts?: number;
  /** One line per step (index, ip, symbol, decoded kind, rsp, rbp, shadow depth, outcomes). */
  trace?: (line: string) => void;
}

/** Entries the guest takes at moments of its own choosing (not at an instruction of the workload). */
const ASYNC_ENTRIES: ReadonlySet<SweepEntryName> = new Set(['timer', 'irq', 'nmi']);

const hex = (v: bigint): string => BigInt.asUintN(64, v).toString(16);

/** Code bytes by address: kernel text does not change while the guest is stopped. */
class CodeCache {
  private readonly lines = new Map<bigint, Uint8Array>();
  constructor(private readonly t: SweepTarget) {}
  async at(ip: bigint): Promise<Uint8Array> {
    const line = ip & ~63n;
    const out = new Uint8Array(16);
    let n = 0;
    for (let l = line; n < 16; l += 64n) {
      let b = this.lines.get(l);
      if (!b) {
        b = await this.t.gdb.readMemory(l, 64);
        this.lines.set(l, b);
      }
      const from = l === line ? Number(ip - line) : 0;
      const part = b.subarray(from, Math.min(b.length, from + 16 - n));
      out.set(part, n);
      n += part.length;
      if (b.length < 64) break;
    }
    return out.subarray(0, n);
  }
}

function stateOf(s: Sample): CpuState {
  const r = s.regs!;
  return { ip: r.ip!, sp: r.sp!, bp: r.bp ?? 0n };
}

function u64(b: Uint8Array, i: number): bigint {
  return new DataView(b.buffer, b.byteOffset + i * 8, 8).getBigUint64(0, true);
}

/** The kernel symbol and offset of an ip. */
function where(profile: KernelProfile, ip: bigint): { fn: string; offset: number } {
  const s = signedFromBig(ip);
  const t = profile.symbols;
  const i = t.indexOfSigned(s);
  if (i < 0) return { fn: ip >> 63n === 0n ? '(user)' : `(${hex(ip)})`, offset: 0 };
  return { fn: t.names[i]!, offset: s - t.starts[i]! };
}

/**
 * The interrupted context's chain at the breakpoint, when every applicable strategy unwinds it
 * from the interrupted registers to a proper end and they all agree (undefined otherwise). On a
 * frame-pointer kernel the interrupted ip must also not sit in a prologue or at a return: there
 * all frame-pointer walks lose the same caller and would agree on a wrong chain.
 * A frame-pointer kernel of a known entry design asks less: the strategy that reads the design
 * must end properly, and every other strategy that ends properly must agree with it. The others
 * cannot cross a kernel-mode entry of a design they do not read (encoded_fp and fp stop at the
 * section design's rbp = 0; encoded_fp and section refuse the kernel_entry frame), so "all agree"
 * would only accept interrupted contexts that crossed no entry; where no entry was crossed, fp and
 * the rest still check the chain.
 */
async function baseChain(t: SweepTarget, code: CodeCache, at: Sample, ip: bigint, sp: bigint, cs: bigint, flags: bigint): Promise<TruthFrame[] | undefined> {
  const regs = { ...at.regs!, ip, sp, cs, flags };
  const s: Sample = { ...at, regs };
  const check = checkSample(s, t.profile, t.strategies);
  const own = t.unwinder === 'frame_pointer' && t.design ? DESIGN_STRATEGY[t.design] : undefined;
  if (own !== undefined && !check.results.some((r) => r.strategy === own && r.verdict !== 'not_applicable')) return undefined;
  let agreed: bigint[] | undefined;
  let frames: TruthFrame[] = [];
  for (const r of check.results) {
    if (r.verdict === 'not_applicable') continue;
    const u = r.unwind;
    if (u.outcome === 'error' || u.outcome === 'depth_limit') {
      if (own === undefined || r.strategy === own) return undefined;
      continue;
    }
    const ips = u.frames.map((f) => f.ip);
    if (agreed && (agreed.length !== ips.length || agreed.some((x, i) => x !== ips[i]))) return undefined;
    agreed = ips;
    frames = u.frames.slice(1).map((f) => {
      const tf: TruthFrame = { ip: f.ip, kind: f.kind };
      if (f.entry) tf.entry = f.entry;
      return tf;
    });
  }
  if (!agreed) return undefined;
  if (t.unwinder === 'frame_pointer' && !(await framedAt(t, code, ip))) return undefined;
  return frames;
}

/** Whether the function holding ip has built its frame by ip and has not started returning (frame-pointer builds). */
async function framedAt(t: SweepTarget, code: CodeCache, ip: bigint): Promise<boolean> {
  const i = t.profile.symbols.indexOfSigned(signedFromBig(ip));
  if (i < 0) return false;
  const start = BigInt.asUintN(64, BigInt(t.profile.symbols.starts[i]!));
  const b = await code.at(start);
  let o = 0;
  if (b[0] === 0xf3 && b[1] === 0x0f && b[2] === 0x1e && b[3] === 0xfa) o += 4; // endbr64
  if (b[o] === 0x0f && b[o + 1] === 0x1f && b[o + 2] === 0x44) o += 5; // nop5 where ftrace's call goes
  else if (b[o] === 0xe8) o += 5; // call __fentry__
  if (b[o] !== 0x55 || decodeInsn(b.subarray(o + 1)).kind !== 'mov_rsp_rbp') return false;
  if (ip <= start + BigInt(o + 1)) return false; // at the push or the mov
  const here = decodeInsn(await code.at(ip));
  return here.kind !== 'ret' && here.kind !== 'pop_rbp' && here.kind !== 'leave';
}

/**
 * Sweeps one entry; a path that switches tasks on its way out (schedule() in the exit path: the
 * interrupted instruction would run only when the task is picked again) is dropped and another
 * hit taken, up to `attempts` times.
 */
export async function sweepEntry(t: SweepTarget, entry: SweepEntryName, from: FromMode, o: SweepOptions = {}): Promise<EntrySweep> {
  const attempts = o.attempts ?? 5;
  let dropped = 0;
  for (;;) {
    const sw = await sweepOnce(t, entry, from, o);
    if (!sw.scheduledAway || ++dropped >= attempts) return { ...sw, hitsSkipped: sw.hitsSkipped + dropped };
    o.log?.(`${entry} from ${from}: the exit path switched tasks after ${sw.steps.length} steps; taking another hit`);
  }
}

async function sweepOnce(t: SweepTarget, entry: SweepEntryName, from: FromMode, o: SweepOptions): Promise<EntrySweep> {
  const spec = SWEEP_ENTRIES[entry];
  const stubAddr = symbolAddresses(t.kallsyms, [spec.stub]).get(spec.stub);
  if (stubAddr === undefined) throw new Error(`this kernel has no ${spec.stub} in its kallsyms`);
  if (entry === 'syscall' && from === 'kernel') throw new Error('a syscall always comes from user mode');
  const log = o.log ?? (() => {});
  const code = new CodeCache(t);
  const gdb = t.gdb;
  const entryStart = t.profile.sections.entry;
  const inEntryCode = (ip: bigint): boolean => {
    const s = signedFromBig(ip);
    return entryStart !== undefined && s >= entryStart.startS && s < entryStart.endS;
  };
  const maxHits = o.maxHits ?? 400;
  const topOfStack = symbolAddresses(t.kallsyms, ['cpu_current_top_of_stack']).get('cpu_current_top_of_stack');

  // 1. Wait for a hit that fits: the right mode, a quick syscall, a base chain all strategies agree on.
  await gdb.hwBreakpoint(stubAddr, true);
  let hitsSkipped = 0;
  let s0: Sample | undefined;
  let ctx: EntryContext | undefined;
  let hwFrame: EntrySweep['hwFrame'];
  try {
    for (let hit = 0; hit < maxHits && !ctx; hit++) {
      if (hit > 0) {
        // Continuing at a breakpoint hits it again at once: step off it with the breakpoint out.
        await gdb.hwBreakpoint(stubAddr, false);
        await gdb.step();
        if (ASYNC_ENTRIES.has(entry)) {
          // After a stop at an interrupt stub the next timer tick is already due when the guest
          // resumes (QEMU's icount clock; seen on the 6.1 FP kernels: every later hit lands at
          // the sti in handle_softirqs, one jiffy apart), so hits taken back to back all
          // interrupt the same softirq loop. A short free run lets the guest go back to its
          // workload before the next hit is taken.
          gdb.cont();
          await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 80)));
          await gdb.interrupt();
        }
        await gdb.hwBreakpoint(stubAddr, true);
      }
      if (entry === 'nmi') await gdb.monitor('nmi');
      // A device interrupt: the busybox workload raises none, so the host sends a break on the
      // console's serial line (QEMU names the first -serial chardev serial0): the 16550 sets
      // LSR.BI and raises IRQ 4 (the 8250 driver enables the line-status interrupt while the
      // console is open), which the IO-APIC delivers through asm_common_interrupt when the guest
      // resumes. A break carries no character; with no controlling tty on /dev/console it signals
      // nobody, and sysrq would only act on a character following it. (`sendkey` through the
      // i8042, IRQ 1, raised the first interrupt and then none within 60 s.)
      if (entry === 'irq') await gdb.monitor('chardev-send-break serial0');
      gdb.cont();
      let stop: string;
      try {
        stop = await gdb.waitStop(o.waitMs ?? 60_000);
      } catch {
        await gdb.interrupt();
        throw new Error(`the guest took no ${entry} entry (${spec.stub}) from ${from} mode within ${((o.waitMs ?? 60_000) / 1000).toFixed(0)} s: nothing in its workload raises one`);
      }
      const taken = await t.sampler.capture('single-step');
      const regs = taken.sample.regs!;
      if (regs.ip !== stubAddr) {
        log(`stopped at ${hex(regs.ip!)} (${stop}), not at the breakpoint`);
        hitsSkipped++;
        continue;
      }
      let ip: bigint, sp: bigint, cs: bigint, flags: bigint;
      let ptRegs: bigint[] = [];
      if (entry === 'syscall') {
        // SYSCALL: rcx = the next user ip, r11 = rflags, rsp untouched (still the user's).
        ip = regs.cx!;
        sp = regs.sp!;
        cs = 0x33n;
        flags = regs.r11!;
        if (!QUICK_SYSCALLS.has(regs.ax!)) {
          hitsSkipped++;
          continue;
        }
      } else {
        // A page fault's error code, or a device IRQ's vector: irq_entries_start's per-vector stub
        // pushes it in the error code's slot and jumps to asm_common_interrupt, where the breakpoint is.
        const err = entry === 'page_fault' || entry === 'irq' ? 1 : 0;
        const words = await gdb.readMemory(regs.sp!, (5 + err) * 8);
        if (words.length < (5 + err) * 8) throw new Error(`cannot read the hardware frame at ${hex(regs.sp!)}`);
        ip = u64(words, err);
        cs = u64(words, err + 1);
        flags = u64(words, err + 2);
        sp = u64(words, err + 3);
        hwFrame = { at: regs.sp! + BigInt(err * 8), ip, cs, flags, sp, ss: u64(words, err + 4), ...(err ? { errorCode: u64(words, 0) } : {}) };
        // pt_regs end with the hardware frame: ip is at offset 128 (after r15..r8, bp, bx, ax..di, orig_ax).
        // Except the NMI's from kernel mode: asm_exc_nmi keeps the CPU's frame at the IST top and
        // builds pt_regs below its scratch word, "NMI executing" flag and the "iret" and
        // "outermost" copies of that frame (entry_64.S's diagram), so they end 136 bytes lower:
        // at the NMI stack's top - 264.
        ptRegs = [entry === 'nmi' ? hwFrame.at + 40n - 264n : hwFrame.at - 128n];
      }
      const user = (cs & 3n) !== 0n;
      if ((from === 'user') !== user) {
        hitsSkipped++;
        if (hitsSkipped % 50 === 0) log(`${hitsSkipped} breakpoint hits skipped (last from ${user ? 'user' : 'kernel'} mode at ${hex(ip)})`);
        continue;
      }
      let base: TruthFrame[] = [];
      if (!user) {
        const b = await baseChain(t, code, taken.sample, ip, sp, cs, flags);
        if (!b) {
          hitsSkipped++;
          continue;
        }
        base = b;
      } else if (topOfStack !== undefined) {
        // From user mode the stub moves pt_regs to the task stack's top (sync_regs): the marker may name either copy.
        const perCpuBase = symbolAddresses(t.kallsyms, ['__per_cpu_offset']).has('__per_cpu_offset') ? undefined : 0n;
        const top = perCpuBase === 0n ? await gdb.readU64(topOfStack) : await perCpuRead(t, 'cpu_current_top_of_stack');
        if (top !== undefined) ptRegs.push(top - 168n);
      }
      s0 = taken.sample;
      ctx = { type: spec.type, ip, sp, user, ptRegs, base, bp: regs.bp! };
    }
  } finally {
    await gdb.hwBreakpoint(stubAddr, false);
  }
  if (!ctx || !s0) throw new Error(`no ${entry} entry from ${from} mode that fits in ${maxHits} breakpoint hits (${hitsSkipped} skipped)`);

  // 2. Step to the end, sampling every instruction.
  const kernelEntry = symbolAddresses(t.kallsyms, ['kernel_entry']).get('kernel_entry');
  const shadow = new ShadowStack(ctx, {
    tolerance: t.unwinder === 'frame_pointer' ? 'encoded_fp' : 'orc', inEntryCode,
    ...(t.design ? { design: t.design } : {}), ...(kernelEntry !== undefined ? { kernelEntry } : {}),
  });
  const steps: SweepStepRecord[] = [];
  const maxSteps = o.maxSteps ?? 200_000;
  let sample = s0;
  let repeats = 0;
  let returned = false;
  let scheduledAway = false;
  const steppedOver: { fn: string; step: number }[] = [];
  let gdbMs = 0;
  const t0 = performance.now();
  t.sampler.keepBounds = true;
  try {
  for (;;) {
    const cur = stateOf(sample);
    const bytes = await code.at(cur.ip);
    const insn: Insn = decodeInsn(bytes);
    const w = where(t.profile, cur.ip);
    const truth = shadow.truth(cur, insn.kind === 'push_rbp');
    sample.truth = { frames: truth };
    const rec: SweepStepRecord = {
      index: steps.length, ip: cur.ip, sp: cur.sp, fn: w.fn, offset: w.offset, op: insn.kind, inEntryCode: inEntryCode(cur.ip),
      depth: shadow.depth, truth, results: [],
    };
    if (o.check !== false) {
      const c = checkSample(sample, t.profile, t.strategies);
      for (const r of c.results) {
        const sr: StepResult = { strategy: r.strategy, verdict: r.verdict, frames: r.unwind.frames.map((f) => f.ip) };
        if (r.reason !== undefined) sr.reason = r.reason;
        const k = classify(truth, sr);
        rec.results.push({ ...sr, ...k });
      }
      rec.check = c;
    }
    rec.sample = { ...sample, stacks: [] };
    steps.push(rec);
    o.trace?.(`${rec.index} ${hex(cur.ip)} ${w.fn}+0x${w.offset.toString(16)} ${insn.kind} sp=${hex(cur.sp)} bp=${hex(cur.bp)} depth=${shadow.depth} ${rec.results.map((r) => `${r.strategy}:${r.outcome}`).join(' ')}`);
    if (steps.length >= maxSteps) break;
    if (w.fn === '__switch_to_asm') {
      scheduledAway = true;
      break;
    }
    if (steps.length % 5000 === 0) log(`${steps.length} steps, at ${w.fn}+0x${w.offset.toString(16)}, shadow depth ${shadow.depth}`);
    const tg = performance.now();
    const top = shadow.frames[shadow.depth - 1];
    const over = w.offset === 0 && top !== undefined && top.slot === cur.sp && SCHEDULERS.has(w.fn);
    if (over) {
      // Another task runs until this one is picked again: its instructions are not this entry's.
      await runUntilReturn(t, top.ret, top.slot + 8n, o.waitMs ?? 60_000);
      steppedOver.push({ fn: w.fn, step: rec.index });
    } else await gdb.step();
    const next = (await t.sampler.capture('single-step', false)).sample;
    gdbMs += performance.now() - tg;
    next.comm = s0.comm;
    if (s0.pid !== undefined) next.pid = s0.pid;
    if (s0.tid !== undefined) next.tid = s0.tid;
    const after = stateOf(next);
    if (after.ip === cur.ip && after.sp === cur.sp && insn.rep) repeats++;
    shadow.advance(cur, over ? { kind: 'ret', rep: false } : insn, after);
    if (after.ip === ctx.ip && after.sp === ctx.sp && shadow.depth === 0) {
      returned = true;
      break;
    }
    sample = next;
  }
  } finally {
    t.sampler.keepBounds = false;
  }
  const ms = performance.now() - t0;
  return {
    entry, from, stub: spec.stub, stubAddress: stubAddr, hitsSkipped, ...(hwFrame ? { hwFrame } : {}),
    interrupted: { ip: ctx.ip, sp: ctx.sp, user: ctx.user }, base: ctx.base, steps, returned, scheduledAway, steppedOver, finalDepth: shadow.depth,
    calls: shadow.calls, rets: shadow.rets, repeats, replacedReturns: shadow.replaced, ms, gdbMs,
  };
}

/**
 * The scheduler entry points an entry's exit path calls (exit_to_user_mode_loop → schedule,
 * irqentry_exit → preempt_schedule_irq, cond_resched in softirq work): stepped over, since the
 * instructions up to the return belong to whatever tasks run meanwhile.
 */
const SCHEDULERS = new Set(['schedule', 'preempt_schedule_irq', 'preempt_schedule', 'preempt_schedule_notrace', '__cond_resched', 'preempt_schedule_thunk', 'preempt_schedule_notrace_thunk']);

/** Runs the guest until this task executes ret to `ip` with rsp back at `sp` (other tasks may pass there first). */
async function runUntilReturn(t: SweepTarget, ip: bigint, sp: bigint, waitMs: number): Promise<void> {
  const gdb = t.gdb;
  await gdb.hwBreakpoint(ip, true);
  try {
    for (let n = 0; n < 10_000; n++) {
      gdb.cont();
      await gdb.waitStop(waitMs);
      const r = await gdb.readRegisters();
      if (r.get('rip') === ip && r.get('rsp') === sp) return;
      await gdb.hwBreakpoint(ip, false);
      await gdb.step();
      await gdb.hwBreakpoint(ip, true);
    }
    throw new Error(`the task did not return to ${hex(ip)} with rsp ${hex(sp)}`);
  } finally {
    await gdb.hwBreakpoint(ip, false);
  }
}

async function perCpuRead(t: SweepTarget, name: string): Promise<bigint | undefined> {
  const syms = symbolAddresses(t.kallsyms, ['__per_cpu_offset', name]);
  const pco = syms.get('__per_cpu_offset');
  const off = syms.get(name);
  if (pco === undefined || off === undefined) return undefined;
  const base = await t.gdb.readU64(pco);
  return base === undefined ? undefined : t.gdb.readU64(base + off);
}

// --- the table and the findings --------------------------------------------------------------------

export function scenarioName(s: EntrySweep): string {
  return `${s.entry}_from_${s.from}`;
}

/**
 * The blind-spot table of the emulator's sweep, for real steps: runs of consecutive steps in one
 * function with the same outcome, verdict, reason and losses; from/to are step indices in
 * execution order, offFrom/offTo the byte offsets in the function.
 */
export function blindSpotTable(sweeps: readonly EntrySweep[], profile: KernelProfile, layout: string, buildId: string): BlindSpotTable {
  const totals: Record<string, Record<Outcome, number>> = {};
  const rows: TableRow[] = [];
  let n = 0;
  for (const sw of sweeps) {
    const open = new Map<string, TableRow>();
    for (const st of sw.steps) {
      n++;
      for (const r of st.results) {
        const tot = (totals[r.strategy] ??= { exact: 0, window: 0, stopped: 0, not_decoded: 0, wrong: 0 });
        tot[r.outcome]++;
        const prev = open.get(r.strategy);
        const lostKey = r.lost.join(',');
        if (prev && prev.fn === st.fn && prev.to === st.index - 1 && prev.outcome === r.outcome && prev.verdict === r.verdict && prev.reason === r.reason && prev.lost.join(',') === lostKey) {
          prev.to = st.index;
          prev.offTo = st.offset;
          prev.ops.push(st.op);
          prev.steps++;
          continue;
        }
        if (r.outcome === 'exact') {
          open.delete(r.strategy);
          continue;
        }
        const row: TableRow = {
          strategy: r.strategy, scenario: scenarioName(sw), fn: st.fn, from: st.index, to: st.index, offFrom: st.offset, offTo: st.offset,
          ops: [st.op], outcome: r.outcome, verdict: r.verdict, lost: r.lost, steps: 1, inStub: st.inEntryCode,
        };
        if (r.reason !== undefined) row.reason = r.reason;
        rows.push(row);
        open.set(r.strategy, row);
      }
    }
  }
  return { layout, profileLayouts: [...profile.layouts], buildId, steps: n, totals, rows: compactRows(rows) };
}

/**
 * Runs at the same code with the same outcome are one row, however often the path came back to
 * them (a retpoline thunk is visited at every indirect call): from/to keep the first visit, steps
 * counts them all, lost lists the kinds of frame lost.
 */
function compactRows(rows: TableRow[]): TableRow[] {
  const byKey = new Map<string, TableRow>();
  const out: TableRow[] = [];
  for (const r of rows) {
    const lost = [...new Set(r.lost)].sort();
    const key = [r.strategy, r.scenario, r.fn, r.offFrom, r.offTo, r.outcome, r.verdict, r.reason ?? '', lost.join(',')].join('|');
    const prev = byKey.get(key);
    if (prev) {
      prev.steps += r.steps;
      continue;
    }
    const row = { ...r, lost, ops: [...r.ops] };
    byKey.set(key, row);
    out.push(row);
  }
  return out;
}

/**
 * Every failing verdict of every step as a finding (findings.ts signatures): a failure is either a
 * window the kernel documents (the checker's `tolerated`, which is not a failure) or one of these.
 */
export function sweepFindings(sweeps: readonly EntrySweep[], profile: KernelProfile): Finding[] {
  const tally = new FindingsTally();
  let i = 0;
  for (const sw of sweeps) {
    for (const st of sw.steps) {
      const c = st.check;
      if (c && st.sample && c.results.some((r) => !GOOD_VERDICTS.has(r.verdict) || r.falseReliable)) {
        tally.add(i, st.sample, findingsOf(st.sample, c, profile).filter((f) => f.verdict !== 'disagreement'));
      }
      i++;
    }
  }
  return tally.list();
}

// --- the cost of an entry ----------------------------------------------------------------------------

export interface EntryCost {
  /** Entry-code instructions from the stub's first instruction up to the C handler's first (the call included). */
  in: number;
  /** Entry-code instructions after the handler returned, up to and including the iret or sysret. */
  out: number;
  /** The C function the stub called with pt_regs (the first call from the stub itself into ordinary text). */
  handler: string;
  /** Instructions the path ran outside entry code before the handler (sync_regs from user mode), not counted in `in`. */
  outsideBefore: number;
}

/**
 * The instructions an entry path ran in entry code (.entry.text) on its way in and out, counted
 * from the sweep's own steps: every step is one executed instruction, and the shadow depth says
 * which frame ran it. The handler is the first call the stub makes at depth 0 whose target is not
 * entry code (error_entry and paranoid_entry are, and are counted); its return is the next step back
 * at depth 0. Instructions of C functions that entry code calls before the handler (sync_regs
 * from user mode) are reported apart, as patches/kernel/README.md's static counts leave them out.
 * Undefined when the sweep never reached or never came back from the handler.
 */
export function entryCostOf(sw: EntrySweep): EntryCost | undefined {
  const st = sw.steps;
  let h = -1;
  for (let i = 0; i + 1 < st.length; i++) {
    if (st[i]!.op === 'call' && st[i]!.depth === 0 && st[i + 1]!.depth === 1 && !st[i + 1]!.inEntryCode) {
      h = i + 1;
      break;
    }
  }
  if (h < 0) return undefined;
  let back = -1;
  for (let j = h + 1; j < st.length; j++) {
    if (st[j]!.depth === 0) {
      back = j;
      break;
    }
  }
  if (back < 0) return undefined;
  let inN = 0;
  let outside = 0;
  for (let i = 0; i < h; i++) {
    if (st[i]!.inEntryCode) inN++;
    else outside++;
  }
  let outN = 0;
  for (let j = back; j < st.length; j++) if (st[j]!.inEntryCode) outN++;
  return { in: inN, out: outN, handler: st[h]!.fn, outsideBefore: outside };
}
