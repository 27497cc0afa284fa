// The guest a single-step sweep runs on: Debian's ORC kernel from the cache (the default), or the
// user's own bzImage with its vmlinux (--kernel/--vmlinux). For the latter the profile comes from
// the vmlinux (build id, ORC tables if any, frame pointers with their evidence) and the symbols from
// the guest's /proc/kallsyms, dumped on first boot and cached by build id in the temp directory.
// (The general `host qemu --kernel` path belongs to the session module; this is the sweep's own,
// simplest way in until the two are unified.)
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseKallsyms } from '../core/symbols/kallsyms.ts';
import { KernelProfile } from '../core/symbols/profile.ts';
import type { StrategyName } from '../core/unwind/types.ts';
import { GdbStub } from './gdbstub.ts';
import { cleanKallsyms, kernelFiles, launchGuest, DEFAULT_CACHE, type Guest, type KernelFiles } from './guest.ts';
import { symbolAddresses } from './kernel.ts';
import { Sampler, SAMPLER_SYMBOLS } from './sampler.ts';
import { RealHostSession } from './session.ts';
import { vmlinuxProfile } from './vmlinux-profile.ts';

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
  if (o.kernel === undefined) {
    if (o.vmlinux !== undefined) throw new Error('--vmlinux needs --kernel (the default kernel brings its own)');
    const s = await RealHostSession.open({ ...(o.cache ? { cache: o.cache } : {}), log, qemuArgs: SWEEP_QEMU_ARGS });
    const fp = s.profile.framePointers === true;
    return {
      gdb: s.gdb, sampler: s.sampler, profile: s.profile, kallsyms: s.kallsyms, buildId: s.build.buildId,
      unwinder: fp ? 'frame_pointer' : 'orc', strategies: fp ? FP_STRATEGIES : ['orc'],
      notes: [`Debian kernel ${s.build.files.package}: ORC ${s.build.orc.length} entries, frame pointers ${fp ? 'yes' : 'no'}`],
      close: () => s.close(),
    };
  }
  if (o.vmlinux === undefined) throw new Error('--kernel needs --vmlinux (the ELF image the bzImage was built from: symbols\' code, ORC tables, build id)');
  for (const [flag, f] of [['--kernel', o.kernel], ['--vmlinux', o.vmlinux]] as const) {
    if (!existsSync(f)) throw new Error(`${flag} ${f}: no such file`);
  }
  const cached = kernelFiles(o.cache ?? DEFAULT_CACHE);
  const busybox = cached?.busybox ?? '/bin/busybox';
  if (!existsSync(busybox)) throw new Error(`no static busybox for the initramfs (looked at ${busybox}): run scripts/realkernel-setup.sh`);
  const elf = readFileSync(o.vmlinux);
  const workdir = mkdtempSync(join(tmpdir(), 'stacksanity-sweep-'));
  const files: KernelFiles = { cache: workdir, package: 'custom', release: '', image: o.kernel, config: '', busybox };
  // The build id first (no symbols needed), to find cached kallsyms.
  const first = vmlinuxProfile(elf);
  const buildId = first.options.buildId;
  if (!buildId) throw new Error(`--vmlinux ${o.vmlinux}: no GNU build id note`);
  const kallsymsCache = join(tmpdir(), `stacksanity-kallsyms-${buildId}`);
  let kallsyms = existsSync(kallsymsCache) ? readFileSync(kallsymsCache, 'utf8') : undefined;
  log(kallsyms ? `booting ${o.kernel} (kallsyms cached)` : `booting ${o.kernel} and dumping /proc/kallsyms once for this build`);
  let guest: Guest;
  try {
    guest = await launchGuest({ files, dumpKallsyms: kallsyms === undefined, dir: workdir, qemuArgs: SWEEP_QEMU_ARGS });
  } catch (e) {
    rmSync(workdir, { recursive: true, force: true });
    throw new Error(`${(e as Error).message}\n(the guest needs 64BIT, PRINTK, SERIAL_8250_CONSOLE, BLK_DEV_INITRD, RD_GZIP, BINFMT_ELF, BINFMT_SCRIPT, PROC_FS, SYSFS, DEVTMPFS, KALLSYMS_ALL: see docs/real-kernel.md)`);
  }
  try {
    if (kallsyms === undefined) {
      kallsyms = cleanKallsyms(readFileSync(guest.kallsymsFile, 'latin1'));
      if (!/ T _stext$/m.test(kallsyms)) throw new Error('the guest\'s kallsyms dump has no _stext (CONFIG_KALLSYMS_ALL?)');
      writeFileSync(kallsymsCache, kallsyms);
    }
    const { symbols } = parseKallsyms(kallsyms, kallsymsCache);
    const learned = vmlinuxProfile(elf, { symbols });
    if (learned.options.buildId !== buildId) throw new Error('the vmlinux changed while booting');
    const profile = KernelProfile.fromKallsyms(kallsyms, { ...learned.options, file: kallsymsCache });
    const fp = profile.framePointers === true;
    const strategies: StrategyName[] = fp ? [...FP_STRATEGIES] : [];
    if (profile.orc) strategies.push('orc');
    if (strategies.length === 0) throw new Error(`${o.vmlinux}: neither frame pointers nor ORC tables: no strategy applies`);
    const gdb = await GdbStub.connect('127.0.0.1', guest.port);
    await gdb.drain(300);
    await gdb.handshake();
    const sampler = new Sampler(gdb, symbolAddresses(kallsyms, SAMPLER_SYMBOLS), { seed: 1, buildId, host: 'qemu-tcg-sweep' });
    await sampler.init();
    return {
      gdb, sampler, profile, kallsyms, buildId, unwinder: fp ? 'frame_pointer' : 'orc', strategies, notes: learned.notes,
      close: () => {
        try {
          gdb.close();
        } finally {
          guest.stop();
          rmSync(workdir, { recursive: true, force: true });
        }
      },
    };
  } catch (e) {
    guest.stop();
    rmSync(workdir, { recursive: true, force: true });
    throw e;
  }
}
