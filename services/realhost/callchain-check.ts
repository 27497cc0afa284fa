// Checks of a host's own callchain that need no stack memory: what `perf script`, perf.data and
// kernel logs give us. They judge the host's kernel unwinder by the kernel's rules
// (reference/kernel-unwinders.md §9), with the verdicts and reasons of full-state samples
// (services/core/check/reasons.ts) wherever one applies:
//   - every kernel frame is kernel text (__kernel_text_address, rule 9) when the kernel's
//     profile is known; otherwise it is counted as unresolved, not judged;
//   - no `[unknown]` symbol inside the kernel part when perf resolved the other kernel frames;
//   - a syscall entry or ret_from_fork is the last kernel frame (nothing lies below it);
//   - an interrupt/exception entry as the last kernel frame means the interrupted context was
//     user mode (the kernel stops at user pt_regs), a valid bottom;
//   - the chain ends at a valid bottom (user mode, ret_from_fork, the idle loop's start), or it is
//     truncated: at perf's 127-frame cap (depth_limit) or anywhere else (did_not_reach_end);
//   - the host unwinder's own warnings (kernel logs) are its failures (bad_frame_pointer);
//   - with a profile, a return into the entry section (an interrupt or exception stub, not the
//     syscall or fork bottom) is followed by the interrupted function — a kernel text address
//     outside the entry section — or ends the kernel part with user frames after it; otherwise the
//     unwinder lost the interrupted frame (missing_interrupted_frame).
// `? ` entries of kernel logs (flag `unreliable`) are what the unwinder did not use: every check
// reads the chain without them.
// Garbage addresses (zero, all-ones, non-canonical) are already flagged on every entry
// (callchain-flags.ts); inside the kernel part they are non-text frames.
import type { CallchainEntry, Sample } from '../core/dump/sample.ts';
import { splitSymbolOffset } from '../core/dump/callchain-flags.ts';
import type { Reason, Verdict } from '../core/check/reasons.ts';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { signedFromBig } from '../core/u64.ts';

/** perf stores at most this many entries per callchain (PERF_MAX_STACK_DEPTH, kernel.perf_event_max_stack). */
export const PERF_MAX_STACK = 127;
/** Printed chains lose the context markers (at least the kernel one) from the stored entries. */
const CAP_SLACK = 2;

export interface HostChainFinding {
  /** Index into sample.callchain. */
  index: number;
  reason: Reason;
  message: string;
}

export type ChainBottom = 'user' | 'syscall' | 'ret_from_fork' | 'idle' | 'none';

export interface HostChainCheck {
  verdict: Verdict;
  reason?: Reason;
  kernelFrames: number;
  userFrames: number;
  /** Kernel frames that could not be checked against kernel text (no profile, or no address). */
  unresolved: number;
  bottom: ChainBottom;
  findings: HostChainFinding[];
}

/** What a kernel log adds to the callchain (see kernel-log.ts). */
export interface HostChainContext {
  /** The trace ended at user-mode pt_regs (a "RIP: 0033:..." block after the last frame). */
  endsInUserRegs?: boolean;
  /** The host unwinder's own warnings printed with this trace. */
  hostWarnings?: string[];
  /**
   * Indices into sample.callchain of entries after which a kernel log printed kernel-mode pt_regs
   * (show_regs_if_on_stack): the interrupted function is that `RIP:` line, not a frame — the log
   * skips `&regs->ip` — so the entry boundary there is not missing it.
   */
  regsAfter?: number[];
  /**
   * The source shows no user-mode pt_regs (v4.x kernel logs, `[<addr>]` style, print none): a
   * kernel part ending at an entry stub may be an interrupt from user mode, and is not judged.
   */
  userRegsUnprinted?: boolean;
}

const SYSCALL_ENTRIES = /^(entry_SYSCALL_64(_after_hwframe|_after_swapgs|_fastpath|_safe_stack)?|int_ret_from_sys_call|sysenter_flags_fixed|sysenter_do_call|entry_SYSCALL_compat|entry_SYSENTER_(compat|32)|entry_INT80_(compat|32)|system_call(_fastpath)?|ia32_sysenter_target|ia32_syscall|ia32_cstar_target|sysenter_dispatch|cstar_dispatch)$/;
const FORK_ENTRIES = /^(ret_from_fork(_asm)?|kernel_thread_helper|child_rip)$/;
// The idle task's first frames: the boot CPU (start_kernel via rest_init) and the others
// (start_secondary from secondary_startup_64).
const IDLE_BOTTOMS = /^(secondary_startup_64(_no_verify)?|common_startup_64|start_secondary|x86_64_start_kernel|x86_64_start_reservations|start_kernel|rest_init|cpu_startup_entry|cpu_bringup_and_idle|xen_start_kernel)$/;
// Interrupt and exception stubs, by name, for kernels whose profile is unknown: the v5.8+ IDT
// stubs, and the older names perf and dumps print (apic_timer_interrupt, page_fault, ...).
const IRQ_ENTRIES = /^(asm_(exc|sysvec|common)_\w+|asm_common_interrupt|common_interrupt|\w+_interrupt|page_fault|async_page_fault|general_protection|invalid_op|int3|debug|nmi|double_fault|error_entry|ret_from_intr|irq_entries_start|spurious_entries_start|restore_regs_and_return_to_kernel)$/;

/** perf's kernel dso names, as inferno's is_kernel: [kernel.kallsyms], [module], *.ko, vmlinux paths. */
export function isKernelDso(dso: string | undefined): boolean {
  if (dso === undefined) return false;
  if (dso.startsWith('[')) return dso !== '[unknown]' && dso !== '[vdso]' && dso !== '[vsyscall]' && dso !== '[heap]' && dso !== '[stack]';
  return dso.endsWith('.ko') || /(^|\/)vmlinux[-._a-zA-Z0-9]*$/.test(dso) || dso.includes('/vmlinux-');
}

/** A canonical kernel-half address (and not the all-ones terminator). */
function isKernelAddr(a: bigint): boolean {
  return a >= 0xffff800000000000n && a !== 0xffffffffffffffffn;
}

function isKernelEntry(e: CallchainEntry): boolean {
  if (e.addr === 0xffffffffffffffffn) return false;
  return isKernelAddr(e.addr) || isKernelDso(e.dso);
}

function nameOf(e: CallchainEntry, profile: KernelProfile | undefined, returnAddress: boolean): string | undefined {
  if (e.sym !== undefined && e.sym !== '[unknown]') return splitSymbolOffset(e.sym).name;
  if (profile && isKernelAddr(e.addr)) {
    const s = signedFromBig(e.addr);
    const i = profile.symbols.indexOfSigned(returnAddress ? s - 1 : s);
    if (i >= 0) return profile.symbols.names[i];
  }
  return undefined;
}

type EntryKind = 'syscall' | 'fork' | 'irq' | undefined;

function entryKind(name: string | undefined, inEntrySection: boolean): EntryKind {
  if (name !== undefined) {
    if (SYSCALL_ENTRIES.test(name)) return 'syscall';
    if (FORK_ENTRIES.test(name)) return 'fork';
    if (IRQ_ENTRIES.test(name)) return 'irq';
  }
  // A return address in the entry section whose stub we cannot name is still an entry.
  return inEntrySection ? 'irq' : undefined;
}

/**
 * Judges one sample's host callchain. Returns undefined when it has no kernel part (a user-only
 * chain says nothing about the kernel's unwinder).
 */
export function checkHostCallchain(sample: Sample, profile?: KernelProfile, ctx: HostChainContext = {}): HostChainCheck | undefined {
  const all = sample.callchain ?? [];
  // The host's unwind is the chain without its `? ` entries; `at` maps back to sample.callchain.
  const at: number[] = [];
  for (let i = 0; i < all.length; i++) if (!all[i]!.flags.includes('unreliable')) at.push(i);
  const chain = at.length === all.length ? all : at.map((i) => all[i]!);
  let k = 0;
  while (k < chain.length && isKernelEntry(chain[k]!)) k++;
  if (k === 0) return undefined;
  const out: HostChainCheck = { verdict: 'consistent', kernelFrames: k, userFrames: chain.length - k, unresolved: 0, bottom: 'none', findings: [] };
  const find = (index: number, reason: Reason, message: string): void => {
    out.findings.push({ index: index >= 0 ? at[index]! : index, reason, message });
  };
  // perf prints [unknown] for every kernel frame when it could not read kallsyms (kptr_restrict);
  // only an [unknown] among resolved kernel frames is a frame outside all known text.
  let resolvedSyms = 0;
  for (let i = 0; i < k; i++) if (chain[i]!.sym !== undefined && chain[i]!.sym !== '[unknown]') resolvedSyms++;

  for (let i = 0; i < k; i++) {
    const e = chain[i]!;
    const garbage = e.flags.includes('zero') || e.flags.includes('non_canonical');
    if (garbage) {
      find(i, 'non_text_return_address', `kernel frame ${i} has a garbage address ${e.addr.toString(16)}`);
      continue;
    }
    // The first entry is the sampled ip, the rest are return addresses (looked up at addr - 1).
    const ra = i > 0;
    if (profile && isKernelAddr(e.addr)) {
      const s = signedFromBig(e.addr);
      if (!profile.isTextS(s) && !(ra && profile.isTextS(s - 1))) {
        find(i, 'non_text_return_address', `kernel frame ${i} (${e.addr.toString(16)}${e.sym ? ` ${e.sym}` : ''}) is not kernel text`);
        continue;
      }
    } else out.unresolved++;
    if (e.sym === '[unknown]' && resolvedSyms > 0) {
      find(i, 'non_text_return_address', `kernel frame ${i} (${e.addr.toString(16)}) is [unknown] among resolved kernel frames: no kernel or module text contains it`);
    }
  }

  // Entries and the bottom.
  for (let i = 0; i < k; i++) {
    const e = chain[i]!;
    const inSection = profile !== undefined && isKernelAddr(e.addr) && i > 0 && profile.inEntrySectionS(signedFromBig(e.addr) - 1);
    const kind = entryKind(nameOf(e, profile, i > 0), inSection);
    if (kind === undefined) continue;
    if ((kind === 'syscall' || kind === 'fork') && i < k - 1) {
      find(i + 1, 'extra_frame', `${kind === 'syscall' ? 'a syscall entry' : 'ret_from_fork'} (frame ${i}) is followed by ${k - 1 - i} more kernel frame(s): nothing lies below it`);
    }
  }
  if (profile) interruptedFrames(chain, k, at, profile, out.userFrames > 0 || ctx.endsInUserRegs === true || ctx.userRegsUnprinted === true, new Set(ctx.regsAfter), find);
  const last = chain[k - 1]!;
  const lastKind = entryKind(nameOf(last, profile, k > 1), profile !== undefined && isKernelAddr(last.addr) && k > 1 && profile.inEntrySectionS(signedFromBig(last.addr) - 1));
  const lastName = nameOf(last, profile, k > 1);
  if (lastKind === 'syscall') out.bottom = 'syscall';
  else if (lastKind === 'fork') out.bottom = 'ret_from_fork';
  else if (lastKind === 'irq') out.bottom = 'user';
  else if (lastName !== undefined && IDLE_BOTTOMS.test(lastName)) out.bottom = 'idle';
  else if (out.userFrames > 0 || ctx.endsInUserRegs) out.bottom = 'user';
  if (out.bottom === 'none') {
    if (chain.length >= PERF_MAX_STACK - CAP_SLACK) find(k - 1, 'depth_limit', `the chain has ${chain.length} entries: perf's ${PERF_MAX_STACK}-entry cap cut it`);
    else find(k - 1, 'did_not_reach_end', `the kernel part ends at ${lastName ?? last.addr.toString(16)}, which is no valid bottom (user mode, a syscall entry, ret_from_fork, the idle loop's start)`);
  }
  for (const w of ctx.hostWarnings ?? []) find(-1, 'bad_frame_pointer', `the host's unwinder warned: ${w}`);

  // One verdict, the gravest finding first: the host's own failure, frames no correct unwinder
  // reports, then a chain cut short.
  const first = (r: Reason): HostChainFinding | undefined => out.findings.find((f) => f.reason === r);
  const pick =
    first('bad_frame_pointer') ? (['error', 'bad_frame_pointer'] as const)
    : first('non_text_return_address') ? (['extra_frames', 'non_text_return_address'] as const)
    : first('extra_frame') ? (['extra_frames', 'extra_frame'] as const)
    : first('missing_interrupted_frame') ? (['missing_frames', 'missing_interrupted_frame'] as const)
    : first('depth_limit') ? (['truncated', 'depth_limit'] as const)
    : first('did_not_reach_end') ? (['truncated', 'did_not_reach_end'] as const)
    : undefined;
  if (pick) {
    out.verdict = pick[0];
    out.reason = pick[1];
  }
  return out;
}

/**
 * After a return into the entry section comes the interrupted function: the stub's pt_regs hold
 * its ip, and both the ORC and the frame-pointer unwinder report `regs->ip` next (the exact ip,
 * looked up as is, not at addr - 1). Without stack memory an interrupted ip cannot be told from a
 * return address, and need not be: whatever it is, it must be kernel text outside the entry
 * section. A stub that ends the kernel part is an interrupt from user mode when user frames (or
 * user pt_regs) follow. Anything else — the chain ends, garbage or [unknown] outside text, another
 * entry-section address — means the unwinder lost the interrupted frame.
 */
function interruptedFrames(
  chain: readonly CallchainEntry[], k: number, at: readonly number[], profile: KernelProfile, userAfter: boolean,
  regsAfter: ReadonlySet<number>, find: (index: number, reason: Reason, message: string) => void,
): void {
  // i = 0 is the sampled ip: inside a stub it is no return into one.
  for (let i = 1; i < k; i++) {
    const e = chain[i]!;
    if (!isKernelAddr(e.addr) || e.flags.includes('no_address')) continue;
    const s = signedFromBig(e.addr);
    if (!profile.inEntrySectionS(s - 1)) continue;
    const name = nameOf(e, profile, true);
    const kind = entryKind(name, true);
    if (kind === 'syscall' || kind === 'fork') continue;
    const stub = name ?? e.addr.toString(16);
    // A kernel log prints the interrupted function as the RIP: line of the regs after the stub.
    if (regsAfter.has(at[i]!)) continue;
    if (i === k - 1) {
      if (!userAfter) find(i, 'missing_interrupted_frame', `the chain ends at the entry stub ${stub} (frame ${i}): neither the interrupted kernel function nor user frames follow`);
      continue;
    }
    const next = chain[i + 1]!;
    // A log frame printed without an address cannot be placed: not judged.
    if (next.flags.includes('no_address')) continue;
    const garbage = next.flags.includes('zero') || next.flags.includes('non_canonical') || next.flags.includes('all_ones');
    const ns = garbage || !isKernelAddr(next.addr) ? undefined : signedFromBig(next.addr);
    if (ns !== undefined && profile.isTextS(ns) && !profile.inEntrySectionS(ns)) continue;
    const what = ns === undefined ? 'no kernel address' : !profile.isTextS(ns) ? 'not kernel text' : 'another entry-section address';
    find(i + 1, 'missing_interrupted_frame', `the entry stub ${stub} (frame ${i}) is followed by ${next.addr.toString(16)}${next.sym ? ` ${next.sym}` : ''}, ${what}: the interrupted function is missing`);
  }
}

/** Tallies of host callchain checks over many samples (the CLI prints them; workers can export them). */
export class HostChainSummary {
  checked = 0;
  /** Chains with no kernel part: user-only, or a log trace of "? " entries only. Not judged. */
  userOnly = 0;
  failing = 0;
  unresolvedFrames = 0;
  readonly verdicts = new Map<Verdict, number>();
  readonly reasons = new Map<Reason, number>();
  readonly bottoms = new Map<ChainBottom, number>();
  readonly examples: { index: number; sample: Sample; check: HostChainCheck }[] = [];

  constructor(private readonly keep = 20) {}

  add(index: number, sample: Sample, c: HostChainCheck | undefined): void {
    if (!c) {
      this.userOnly++;
      return;
    }
    this.checked++;
    this.unresolvedFrames += c.unresolved;
    this.verdicts.set(c.verdict, (this.verdicts.get(c.verdict) ?? 0) + 1);
    this.bottoms.set(c.bottom, (this.bottoms.get(c.bottom) ?? 0) + 1);
    if (c.reason) this.reasons.set(c.reason, (this.reasons.get(c.reason) ?? 0) + 1);
    if (c.verdict !== 'consistent') {
      this.failing++;
      if (this.examples.length < this.keep) this.examples.push({ index, sample, check: c });
    }
  }
}
