// Scenarios shared by the verdict tests: hand-built call chains on the synthetic kernel. Every
// offset below is an arbitrary point inside the named function; what matters is the layout the
// Machine writes (test/support/stack-image.ts), from which each test reads its expectation.
import assert from 'node:assert/strict';
import { Machine, syntheticKernel, type BuiltSample, type EntryLayout, type ExpectedFrame, type SyntheticKernel } from '../../support/stack-image.ts';
import type { KernelProfile } from '../../../services/core/symbols/profile.ts';

/** A modern-style kernel (entry markers, no kernel_entry) and a 2016 kernel_entry kernel. */
export const K = syntheticKernel();
export const KE = syntheticKernel({ kernelEntry: true });
/** The same symbols without __entry_text_* / __irqentry_text_* markers. */
export const K_NO_MARKERS = syntheticKernel({ entryMarkers: false });

export interface Flavour {
  layout: EntryLayout;
  kernel: SyntheticKernel;
  profile: KernelProfile;
  /** The strategy that decodes this kernel's entry layout. */
  decoder: 'encoded_fp' | 'section' | 'kernel_entry';
}

// Modern kernels have both the encoded frame pointer and the section markers, so the section
// strategy works on them too (the stub's return address is in __irqentry_text, pt_regs at slot+8).
export const ENCODED: Flavour = { layout: 'encoded_fp', kernel: K, profile: K.profile(['encoded_fp', 'section']), decoder: 'encoded_fp' };
export const SECTION: Flavour = { layout: 'section', kernel: K, profile: K.profile(['section']), decoder: 'section' };
export const KENTRY: Flavour = { layout: 'kernel_entry', kernel: KE, profile: KE.profile(['kernel_entry']), decoder: 'kernel_entry' };
export const FLAVOURS: readonly Flavour[] = [ENCODED, SECTION, KENTRY];

/** read(2) from user space: entry_SYSCALL_64 → do_syscall_64 → __x64_sys_read → ksys_read → vfs_read. */
export function syscallToVfsRead(m: Machine): void {
  m.syscall();
  m.call('do_syscall_64', { returnTo: 0x4e });
  m.frame(0x18);
  m.enter('__x64_sys_read', 0xa1, 0);
  m.enter('ksys_read', 0x1c, 0x10);
  m.enter('vfs_read', 0x5a, 0x28);
}

/** vfs_read faults at +0x7b; asm_exc_page_fault → exc_page_fault → handle_mm_fault (sample at +0x88). */
export function pageFault(f: Flavour, trigger = 'nmi'): { m: Machine; b: BuiltSample; ptRegs: bigint } {
  const m = new Machine(f.kernel, f.layout);
  syscallToVfsRead(m);
  const ptRegs = m.interrupt('asm_exc_page_fault', { at: 0x7b, errorCode: 0n });
  m.call('exc_page_fault', { returnTo: 0x1e });
  m.frame(0x20);
  m.enter('handle_mm_fault', 0xd4, 0x30);
  return { m, b: m.sample({ at: 0x88, trigger }), ptRegs };
}

/**
 * A device interrupt hits vfs_read at +0x93: asm_common_interrupt → common_interrupt (task stack)
 * → call_on_irqstack → __common_interrupt → handle_irq_event (IRQ stack).
 */
export function irqInSyscall(f: Flavour): Machine {
  const m = new Machine(f.kernel, f.layout);
  syscallToVfsRead(m);
  deviceIrq(m, 0x93);
  return m;
}

/** A device interrupt hits the running function at +at; the handler runs on the IRQ stack. */
export function deviceIrq(m: Machine, at: number): void {
  m.interrupt('asm_common_interrupt', { at });
  m.call('common_interrupt', { returnTo: 0x1e });
  m.frame(0x10);
  m.switchToIrqStack(m.stack('irq'));
  m.call('__common_interrupt', { returnTo: 0x5c });
  m.frame(0x18);
  m.enter('handle_irq_event', 0x9a, 0x10);
}
export const IRQ_SAMPLE_AT = 0x31;

/** An NMI hits handle_irq_event at +0x44 (on the IRQ stack): asm_exc_nmi → exc_nmi → perf_event_nmi_handler. */
export function nmiInIrq(f: Flavour): Machine {
  const m = irqInSyscall(f);
  m.interrupt('asm_exc_nmi', { at: 0x44, ist: m.stack('nmi') });
  m.call('exc_nmi', { returnTo: 0xbf });
  m.frame(0x18);
  m.enter('perf_event_nmi_handler', 0x7c, 0x10);
  return m;
}
export const NMI_SAMPLE_AT = 0x2c;

/** A kthread: ret_from_fork_asm → ret_from_fork → kthread → worker_thread (sample at +0x1f0). */
export function kthread(f: Flavour, trigger = 'nmi'): { m: Machine; b: BuiltSample } {
  const m = new Machine(f.kernel, f.layout);
  m.kthread();
  m.call('ret_from_fork', { returnTo: 0x1d });
  m.frame(0x10);
  m.enter('kthread', 0x4f, 0x20);
  m.enter('worker_thread', 0xc3, 0x40);
  return { m, b: m.sample({ at: 0x1f0, trigger }) };
}

/** Human-readable frame line: "call ksys_read+0x5a", "regs vfs_read+0x7b <page_fault>". */
export function show(k: SyntheticKernel, f: { ip: bigint; kind: string; entry?: string | undefined }): string {
  const name = k.nameAt(f.ip);
  const sym = name ? `${name}+0x${(f.ip - k.sym(name)).toString(16)}` : `0x${f.ip.toString(16)}`;
  return `${f.kind} ${sym}${f.kind === 'regs' ? ` <${f.entry ?? '?'}>` : ''}`;
}

export function showAll(k: SyntheticKernel, frames: readonly { ip: bigint; kind: string; entry?: string | undefined }[]): string[] {
  return frames.map((f) => show(k, f));
}

/** The truth frames without the tolerated ones: what a correct FP unwinder reports. */
export function recoverable(expected: readonly ExpectedFrame[]): ExpectedFrame[] {
  return expected.filter((f) => f.tolerated === undefined);
}

export function assertHex(actual: bigint | undefined, expected: bigint | undefined, what: string): void {
  assert.equal(
    actual === undefined ? 'undefined' : '0x' + actual.toString(16),
    expected === undefined ? 'undefined' : '0x' + expected.toString(16),
    what,
  );
}
