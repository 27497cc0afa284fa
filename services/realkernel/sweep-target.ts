// The guest a single-step sweep runs on: Debian's ORC kernel from the cache (the default), or the
// user's own bzImage with its vmlinux (--kernel/--vmlinux). For the latter the profile comes from
// the vmlinux (build id, ORC tables if any, frame pointers with their evidence) and the symbols from
// the guest's /proc/kallsyms, both through the session module like `host qemu --kernel`.
import { KernelProfile, type EntryLayout } from '../core/symbols/profile.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { decodeInsn } from '../core/x86/insn.ts';
import type { GdbStub } from './gdbstub.ts';
import { symbolAddresses } from './kernel.ts';
import type { Sampler } from './sampler.ts';
import { RealHostSession } from './session.ts';

export interface SweepTarget {
  gdb: GdbStub;
  sampler: Sampler;
  profile: KernelProfile;
  kallsyms: string;
  buildId: string;
  /** What the kernel's own unwinder is, and so which strategies apply and which windows are documented. */
  unwinder: 'orc' | 'frame_pointer';
  /**
   * How the kernel's entry code lets a frame-pointer unwinder find pt_regs (issue 18's three
   * designs), read from the kernel's own code: undefined on a kernel without frame pointers.
   */
  design?: EntryDesign;
  /** What the design was read from, in a sentence. */
  designNote?: string;
  strategies: StrategyName[];
  /** What the profile was learned from, one line each. */
  notes: string[];
  close(): void;
}

export interface TargetOptions {
  kernel?: string;
  vmlinux?: string;
  cache?: string;
  log?: (s: string) => void;
}

/**
 * The guest clock follows the instruction count (1 ns per instruction), not the host's clock: a
 * stepped instruction costs the host ~1 ms, and with real time the timer handler would find
 * seconds gone by and loop ("hrtimer: interrupt took 9994498527 ns", then a reschedule on the way
 * out). sleep=off: an idle guest skips ahead to its next timer instead of waiting in real time.
 */
export const SWEEP_QEMU_ARGS = ['-icount', 'shift=0,sleep=off'];

/** The frame-pointer strategies every frame-pointer build gets; kernel_entry joins them when the build has the dummy function. */
const FP_STRATEGIES: StrategyName[] = ['fp', 'section', 'encoded_fp'];

export type EntryDesign = 'encoded' | 'section' | 'kernel_entry';

/** The strategy that reads each design's entries (the others are judged beside it). */
export const DESIGN_STRATEGY: Record<EntryDesign, StrategyName> = { encoded: 'encoded_fp', section: 'section', kernel_entry: 'kernel_entry' };

/** The code the design is read from: the timer's idtentry stub, and error_entry which every idtentry stub calls. */
export const DESIGN_EVIDENCE_SYMBOLS = ['asm_sysvec_apic_timer_interrupt', 'error_entry'] as const;

/**
 * The entry design, from the kernel's code. ENCODE_FRAME_POINTER assembles to `lea 0x1(%rsp),%rbp`
 * in idtentry_body (every idtentry stub) and `lea 0x9(%rsp),%rbp` in error_entry (its `8`: one
 * return address above pt_regs); the kernel_entry design has the dummy symbol and pushes its address
 * (`push $kernel_entry`) in the stub. No encoding and no dummy: the section design (whose unwinder
 * change is invisible in the entry code). Every byte offset of each function is decoded, since the
 * decoder only sizes the instructions it knows; a 5-byte pattern matching across two instructions
 * by accident would need entry code that does not exist in 6.1.
 */
export function entryDesignOf(code: Partial<Record<(typeof DESIGN_EVIDENCE_SYMBOLS)[number], Uint8Array>>, kernelEntry: bigint | undefined): { design: EntryDesign; note: string } {
  const found = { stubLea: false, errorEntryLea: false, pushKernelEntry: false };
  const scan = (b: Uint8Array | undefined, f: (i: ReturnType<typeof decodeInsn>) => void): void => {
    if (b) for (let o = 0; o < b.length; o++) f(decodeInsn(b.subarray(o, o + 15)));
  };
  scan(code.asm_sysvec_apic_timer_interrupt, (i) => {
    if (i.kind === 'lea_rsp_rbp' && i.value === 1n) found.stubLea = true;
    if (i.kind === 'push_imm' && kernelEntry !== undefined && i.value === kernelEntry) found.pushKernelEntry = true;
  });
  scan(code.error_entry, (i) => {
    if (i.kind === 'lea_rsp_rbp' && i.value === 9n) found.errorEntryLea = true;
  });
  const missing = DESIGN_EVIDENCE_SYMBOLS.filter((n) => code[n] === undefined);
  const read = missing.length ? ` (${missing.join(', ')} not found: judged without it)` : '';
  const encodes = found.stubLea || found.errorEntryLea;
  const leas = `asm_sysvec_apic_timer_interrupt ${found.stubLea ? 'has' : 'has no'} lea 0x1(%rsp),%rbp, error_entry ${found.errorEntryLea ? 'has' : 'has no'} lea 0x9(%rsp),%rbp`;
  if (kernelEntry !== undefined) {
    return {
      design: 'kernel_entry',
      note: `entry design kernel_entry: the kernel has kernel_entry at ${kernelEntry.toString(16)} and the timer stub ${found.pushKernelEntry ? 'pushes its address' : 'does NOT push its address (unexpected)'}; ${leas}${read}`,
    };
  }
  if (encodes) return { design: 'encoded', note: `entry design encoded: ${leas} (ENCODE_FRAME_POINTER)${read}` };
  return { design: 'section', note: `entry design section: no kernel_entry symbol, and ${leas}: no entry encodes rbp${read}` };
}

/** The design of the running guest's kernel, from its text (the code the CPU runs). */
export async function readEntryDesign(gdb: GdbStub, profile: KernelProfile, kallsyms: string): Promise<{ design: EntryDesign; note: string }> {
  const addrs = symbolAddresses(kallsyms, [...DESIGN_EVIDENCE_SYMBOLS, 'kernel_entry']);
  const code: Partial<Record<(typeof DESIGN_EVIDENCE_SYMBOLS)[number], Uint8Array>> = {};
  for (const name of DESIGN_EVIDENCE_SYMBOLS) {
    const a = addrs.get(name);
    const hit = a === undefined ? undefined : profile.symbols.lookup(a);
    if (a === undefined || !hit || hit.size <= 0) continue;
    code[name] = await gdb.readMemory(a, Math.min(hit.size, 4096));
  }
  return entryDesignOf(code, addrs.get('kernel_entry'));
}

/**
 * The entry layouts a design's kernel produces. The symbols alone cannot tell a section kernel
 * from an encoded one (both have the entry section), so a profile inferred from them declares
 * both, and then an odd rbp (a user value at an entry from user mode) reads as an encoding the
 * section strategy steps aside for. Read from the code, the design says which: 6.1 as shipped
 * encodes and has the section (both layouts); the section design only the section; kernel_entry its
 * marker frame.
 */
export function layoutsOfDesign(design: EntryDesign): EntryLayout[] {
  return design === 'encoded' ? ['encoded_fp', 'section'] : [design];
}

/** The profile with the layouts the design's code produces instead of those guessed from its symbols. */
export function withDesignLayouts(p: KernelProfile, kallsyms: string, design: EntryDesign): KernelProfile {
  return KernelProfile.fromKallsyms(kallsyms, {
    layouts: layoutsOfDesign(design), kasan: p.kasan,
    ...(p.buildId !== undefined ? { buildId: p.buildId } : {}), ...(p.orc ? { orc: p.orc } : {}),
    ...(p.framePointers !== undefined ? { framePointers: p.framePointers } : {}), ...(p.provenance ? { provenance: p.provenance } : {}),
  });
}

export async function openSweepTarget(o: TargetOptions): Promise<SweepTarget> {
  const log = o.log ?? (() => {});
  if (o.kernel === undefined && o.vmlinux !== undefined) throw new Error('--vmlinux needs --kernel (the default kernel brings its own)');
  // The same boot as `host qemu [--kernel]` (own-kernel.ts checks the files and diagnoses a failed
  // boot), with the instruction-counted clock the stepping needs.
  const s = await RealHostSession.open({
    ...(o.cache ? { cache: o.cache } : {}), log, qemuArgs: SWEEP_QEMU_ARGS,
    ...(o.kernel !== undefined ? { own: { kernel: o.kernel, ...(o.vmlinux !== undefined ? { vmlinux: o.vmlinux } : {}) } } : {}),
  });
  const fp = s.profile.framePointers === true;
  const strategies: StrategyName[] = fp ? [...FP_STRATEGIES] : [];
  if (fp && s.profile.kernelEntry !== undefined) strategies.push('kernel_entry');
  if (s.profile.orc) strategies.push('orc');
  if (strategies.length === 0) {
    s.close();
    throw new Error(`${o.vmlinux ?? o.kernel}: neither frame pointers nor ORC tables: no strategy applies`);
  }
  const notes = [...s.build.notes];
  let design: { design: EntryDesign; note: string } | undefined;
  if (fp) {
    try {
      design = await readEntryDesign(s.gdb, s.profile, s.kallsyms);
    } catch (e) {
      s.close();
      throw e;
    }
    notes.push(design.note);
  }
  return {
    gdb: s.gdb, sampler: s.sampler, profile: design ? withDesignLayouts(s.profile, s.kallsyms, design.design) : s.profile, kallsyms: s.kallsyms, buildId: s.build.buildId,
    unwinder: fp ? 'frame_pointer' : 'orc', ...(design ? { design: design.design, designNote: design.note } : {}), strategies, notes,
    close: () => s.close(),
  };
}
