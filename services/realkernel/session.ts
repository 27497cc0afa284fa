// One real-host session: boot the cached Debian kernel (or the user's own, own-kernel.ts) under QEMU, obtain its symbols (dumped by
// the guest once per build, then cached), connect to the gdbstub, optionally switch QEMU to
// single-stepping, and take samples until a count or a duration is reached.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { GdbStub } from './gdbstub.ts';
import { cleanKallsyms, kernelFiles, launchGuest, DEFAULT_CACHE, type BootFailure, type Guest } from './guest.ts';
import { bootTimeoutOf, checkLinkAddresses, diagnoseBoot, loadOwnKernel, refineWithKallsyms, type OwnKernelOptions } from './own-kernel.ts';
import { cachedKallsyms, kallsymsCachePath, loadKernelBuild, profileOf, symbolAddresses, type KernelBuild } from './kernel.ts';
import { Sampler, SAMPLER_SYMBOLS, type TakenSample } from './sampler.ts';

export interface SessionOptions {
  cache?: string;
  seed?: number;
  minIntervalMs?: number;
  maxIntervalMs?: number;
  log?: (s: string) => void;
  qemuArgs?: string[];
  /** Boot the user's own kernel (own-kernel.ts) instead of Debian's from the cache. */
  own?: OwnKernelOptions;
  /** Another /init for the guest (guest.ts initScript(); default: the sampling workload). */
  init?: string;
  /** Let the host type on the guest's serial console (Guest.type). */
  consoleInput?: boolean;
}

export class RealHostSession {
  private constructor(
    readonly build: KernelBuild,
    readonly kallsyms: string,
    readonly profile: KernelProfile,
    readonly guest: Guest,
    readonly gdb: GdbStub,
    readonly sampler: Sampler,
    readonly timings: Record<string, number>,
    private readonly workdir: string,
  ) {}

  static async open(o: SessionOptions = {}): Promise<RealHostSession> {
    const log = o.log ?? (() => {});
    const timings: Record<string, number> = {};
    let t = performance.now();
    let build: KernelBuild;
    if (o.own) build = loadOwnKernel(o.own);
    else {
      const files = kernelFiles(o.cache ?? DEFAULT_CACHE);
      if (!files) throw new Error(`no cached kernel in ${o.cache ?? DEFAULT_CACHE}: run scripts/realkernel-setup.sh first`);
      build = loadKernelBuild(files);
    }
    const files = build.files;
    if (!existsSync(files.busybox)) throw new Error(`${files.busybox} is missing: run scripts/realkernel-setup.sh (it installs busybox-static and QEMU)`);
    timings.load = performance.now() - t;
    log(`kernel ${files.package}, build id ${build.buildId}, ${build.orc ? `${build.orc.length} ORC entries` : 'no ORC tables'}, frame pointers: ${build.framePointers === undefined ? 'unknown' : build.framePointers ? 'yes' : 'no'}`);
    if (o.own) for (const n of build.notes) log(`${build.vmlinuxPath}: ${n}`);
    let kallsyms = cachedKallsyms(build);
    const workdir = mkdtempSync(join(tmpdir(), 'stacksanity-qemu-'));
    t = performance.now();
    log(kallsyms ? 'booting (kallsyms cached)' : `booting and dumping /proc/kallsyms once for this build${o.own ? '' : ' (slow UART, ~30 s)'}`);
    let guest: Guest;
    try {
      guest = await launchGuest({
        files, dumpKallsyms: kallsyms === undefined, dir: workdir,
        ...(o.qemuArgs ? { qemuArgs: o.qemuArgs } : {}),
        ...(o.init !== undefined ? { init: o.init } : {}),
        ...(o.consoleInput ? { consoleInput: true } : {}),
        ...(o.own ? { initTimeoutMs: bootTimeoutOf(o.own), diagnose: (f: BootFailure) => diagnoseBoot(files.image, f), ...(o.own.append ? { append: o.own.append } : {}) } : {}),
      });
    } catch (e) {
      rmSync(workdir, { recursive: true, force: true });
      throw e;
    }
    timings.boot = performance.now() - t;
    try {
      if (kallsyms === undefined) {
        kallsyms = cleanKallsyms(readFileSync(guest.kallsymsFile, 'latin1'));
        if (!/ T _stext$/m.test(kallsyms)) throw new Error('the guest\'s kallsyms dump has no _stext: incomplete or restricted');
        if (/^0{16} T _stext$/m.test(kallsyms)) throw new Error('the guest\'s kallsyms are restricted (all-zero addresses)');
        if (o.own) checkLinkAddresses(build, kallsyms);
        writeFileSync(kallsymsCachePath(build), kallsyms);
      }
      if (o.own) {
        const before = build.framePointers;
        refineWithKallsyms(build, kallsyms);
        if (before === undefined) for (const n of build.notes.filter((x) => x.startsWith('frame pointers:'))) log(`${build.vmlinuxPath}: ${n} (with the guest's symbols)`);
        const missing = SAMPLER_SYMBOLS.filter((n) => n !== '__per_cpu_offset' && !new RegExp(` ${n}$`, 'm').test(kallsyms!));
        if (missing.length > 0) log(`warning: the guest's kallsyms lack ${missing.join(', ')} (CONFIG_KALLSYMS_ALL?): samples will carry no stacks or no comm`);
      }
      const profile = profileOf(build, kallsyms);
      t = performance.now();
      const gdb = await GdbStub.connect('127.0.0.1', guest.port);
      // Connecting pauses the VM; QEMU may send an unsolicited stop reply: drop it.
      await gdb.drain(300);
      await gdb.handshake();
      timings.connect = performance.now() - t;
      const syms = symbolAddresses(kallsyms, SAMPLER_SYMBOLS);
      const sampler = new Sampler(gdb, syms, {
        seed: o.seed ?? 1, buildId: build.buildId, host: 'qemu-tcg',
        ...(o.minIntervalMs !== undefined ? { minIntervalMs: o.minIntervalMs } : {}),
        ...(o.maxIntervalMs !== undefined ? { maxIntervalMs: o.maxIntervalMs } : {}),
      });
      await sampler.init();
      return new RealHostSession(build, kallsyms, profile, guest, gdb, sampler, timings, workdir);
    } catch (e) {
      guest.stop();
      rmSync(workdir, { recursive: true, force: true });
      throw e;
    }
  }

  /** QEMU's HMP `singlestep on`: one instruction per translation block, so stops land anywhere. */
  async singleStep(on: boolean): Promise<void> {
    await this.gdb.monitor(`singlestep ${on ? 'on' : 'off'}`);
  }

  async take(): Promise<TakenSample> {
    return this.sampler.take();
  }

  close(): void {
    try {
      this.gdb.close();
    } finally {
      this.guest.stop();
      rmSync(this.workdir, { recursive: true, force: true });
    }
  }
}
