// One real-host session: boot the cached Debian kernel under QEMU, obtain its symbols (dumped by
// the guest once per build, then cached), connect to the gdbstub, optionally switch QEMU to
// single-stepping, and take samples until a count or a duration is reached.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KernelProfile } from '../core/symbols/profile.ts';
import { GdbStub } from './gdbstub.ts';
import { cleanKallsyms, kernelFiles, launchGuest, DEFAULT_CACHE, type Guest } from './guest.ts';
import { cachedKallsyms, kallsymsCachePath, loadKernelBuild, profileOf, symbolAddresses, type KernelBuild } from './kernel.ts';
import { Sampler, SAMPLER_SYMBOLS, type TakenSample } from './sampler.ts';

export interface SessionOptions {
  cache?: string;
  seed?: number;
  minIntervalMs?: number;
  maxIntervalMs?: number;
  log?: (s: string) => void;
  qemuArgs?: string[];
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
    const files = kernelFiles(o.cache ?? DEFAULT_CACHE);
    if (!files) throw new Error(`no cached kernel in ${o.cache ?? DEFAULT_CACHE}: run scripts/realkernel-setup.sh first`);
    const timings: Record<string, number> = {};
    let t = performance.now();
    const build = loadKernelBuild(files);
    timings.load = performance.now() - t;
    log(`kernel ${files.package}, build id ${build.buildId}, ${build.orc.length} ORC entries, frame pointers: ${build.framePointers ? 'yes' : 'no'}`);
    let kallsyms = cachedKallsyms(build);
    const workdir = mkdtempSync(join(tmpdir(), 'stacksanity-qemu-'));
    t = performance.now();
    log(kallsyms ? 'booting (kallsyms cached)' : 'booting and dumping /proc/kallsyms once for this build (slow UART, ~30 s)');
    const guest = await launchGuest({ files, dumpKallsyms: kallsyms === undefined, dir: workdir, ...(o.qemuArgs ? { qemuArgs: o.qemuArgs } : {}) });
    timings.boot = performance.now() - t;
    try {
      if (kallsyms === undefined) {
        kallsyms = cleanKallsyms(readFileSync(guest.kallsymsFile, 'latin1'));
        if (!/ T _stext$/m.test(kallsyms)) throw new Error('the guest\'s kallsyms dump has no _stext: incomplete or restricted');
        if (/^0{16} T _stext$/m.test(kallsyms)) throw new Error('the guest\'s kallsyms are restricted (all-zero addresses)');
        writeFileSync(kallsymsCachePath(build), kallsyms);
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
