// The guest a single-step sweep runs on: Debian's ORC kernel from the cache (the default), or the
// user's own bzImage with its vmlinux (--kernel/--vmlinux). For the latter the profile comes from
// the vmlinux (build id, ORC tables if any, frame pointers with their evidence) and the symbols from
// the guest's /proc/kallsyms, both through the session module like `host qemu --kernel`.
import type { KernelProfile } from '../core/symbols/profile.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import type { GdbStub } from './gdbstub.ts';
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

/** The frame-pointer strategies that apply to a 6.x frame-pointer build (no kernel_entry function there). */
const FP_STRATEGIES: StrategyName[] = ['fp', 'section', 'encoded_fp'];

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
  if (s.profile.orc) strategies.push('orc');
  if (strategies.length === 0) {
    s.close();
    throw new Error(`${o.vmlinux ?? o.kernel}: neither frame pointers nor ORC tables: no strategy applies`);
  }
  return {
    gdb: s.gdb, sampler: s.sampler, profile: s.profile, kallsyms: s.kallsyms, buildId: s.build.buildId,
    unwinder: fp ? 'frame_pointer' : 'orc', strategies, notes: s.build.notes,
    close: () => s.close(),
  };
}
