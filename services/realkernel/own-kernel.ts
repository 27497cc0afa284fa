// The user's own kernel (`host qemu --kernel BZIMAGE [--vmlinux FILE] [--append ARGS]`, issue 13):
// checks the files before anything boots, reads the build's facts from the vmlinux (the one given,
// or the ELF inside the bzImage), and turns a boot that never reaches the project's initramfs into
// an error naming the config options the guest needs. RealHostSession.open({ own }) and the
// single-step sweep boot through here; Debian's kernel (kernel.ts) stays the default.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseKallsyms } from '../core/symbols/kallsyms.ts';
import { bzImagePayload, buildId, elfSections, extractVmlinux, isBzImage, kernelRelease } from './vmlinux.ts';
import { vmlinuxProfile, VmlinuxError } from './vmlinux-profile.ts';
import type { BootFailure, KernelFiles } from './guest.ts';
import type { KernelBuild } from './kernel.ts';

export interface OwnKernelOptions {
  /** The bzImage QEMU boots (-kernel). */
  kernel: string;
  /** The matching ELF vmlinux; without it the ELF inside the bzImage is used (sections, no symbols). */
  vmlinux?: string;
  /** Extra kernel arguments, after console=ttyS0 nokaslr panic=-1. */
  append?: string;
  /** Where the guest's kallsyms dumps are kept per build id (default .cache/own-kernels). */
  cache?: string;
  /** How long the kernel may take to reach /init (default 180 s: the 6.1 FP kernel needs ~1.5 s under TCG, Debian's ~6 s on an idle machine, over 60 s on a loaded one; a kernel that panics makes QEMU exit at once). */
  bootTimeoutMs?: number;
}

export const OWN_KERNEL_CACHE = resolve(process.env.STACKSANITY_OWNKERNEL_CACHE ?? '.cache/own-kernels');
const DEFAULT_BOOT_TIMEOUT_MS = 180_000;

/** A kernel the user asked for that cannot be used: the message says what and where. */
export class OwnKernelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OwnKernelError';
  }
}

/**
 * The config options the guest cannot do without, and what each is for (docs/real-kernel.md
 * lists the same). A boot that fails names the ones its console points at, and always all of them.
 */
export const GUEST_CONFIG: readonly { options: string; why: string }[] = [
  { options: 'CONFIG_64BIT', why: 'an x86-64 kernel (the gdbstub and the unwinders read 64-bit registers)' },
  { options: 'CONFIG_PRINTK, CONFIG_TTY, CONFIG_SERIAL_8250, CONFIG_SERIAL_8250_CONSOLE', why: 'a console on the first serial port (console=ttyS0): /init reports that it runs there' },
  { options: 'CONFIG_BLK_DEV_INITRD, CONFIG_RD_GZIP', why: 'the initramfs (a gzip\'d cpio passed with -initrd)' },
  { options: 'CONFIG_BINFMT_ELF, CONFIG_BINFMT_SCRIPT', why: '/init is a #! script run by a static busybox' },
  { options: 'CONFIG_PROC_FS, CONFIG_SYSFS, CONFIG_DEVTMPFS', why: '/init mounts /proc, /sys and /dev (the second serial port /dev/ttyS1 carries the kallsyms dump)' },
  { options: 'CONFIG_KALLSYMS, CONFIG_KALLSYMS_ALL', why: 'the symbols come from the guest\'s /proc/kallsyms; the sampler needs data symbols (current_task, cpu_current_top_of_stack, hardirq_stack_ptr, cpu_tss_rw, init_task)' },
];

/** What QEMU needs and the facts of the build, read before anything boots. */
export function loadOwnKernel(o: OwnKernelOptions): KernelBuild {
  const timings: Record<string, number> = {};
  let t = performance.now();
  const kernel = resolve(o.kernel);
  const image = readFile(kernel, '--kernel');
  if (!isBzImage(image)) throw new OwnKernelError(`${kernel}: not a bzImage (no "HdrS" boot header at 0x202); --kernel takes arch/x86/boot/bzImage, and --vmlinux the ELF vmlinux`);
  let elf: Uint8Array;
  let vmlinuxPath: string;
  const notes: string[] = [];
  if (o.vmlinux !== undefined) {
    vmlinuxPath = resolve(o.vmlinux);
    elf = readFile(vmlinuxPath, '--vmlinux');
    if (!isElf(elf)) throw new OwnKernelError(`${vmlinuxPath}: not an ELF file; --vmlinux takes the vmlinux from the top of the build tree`);
  } else {
    vmlinuxPath = kernel;
    try {
      elf = extractVmlinux(image);
    } catch (e) {
      throw new OwnKernelError(`${kernel}: cannot read the vmlinux inside it (${(e as Error).message}); pass --vmlinux FILE`);
    }
    notes.push('no --vmlinux: the build\'s facts come from the ELF inside the bzImage (stripped, sections only)');
  }
  timings.vmlinux = performance.now() - t;
  t = performance.now();
  const sections = elfSections(elf);
  const id = buildId(elf, sections);
  if (!id) throw new OwnKernelError(`${vmlinuxPath}: no GNU build id note (.notes): the project keys symbols, samples and tables by it`);
  if (o.vmlinux !== undefined) matchImage(kernel, image, vmlinuxPath, id);
  // Frame pointers and ORC from the image alone (the embedded config, the ORC table); the code
  // evidence needs symbols, so refineWithKallsyms may decide later.
  let profile;
  try {
    profile = vmlinuxProfile(elf);
  } catch (e) {
    if (e instanceof VmlinuxError) throw new OwnKernelError(`${vmlinuxPath}: ${e.message}`);
    throw e;
  }
  timings.orc = performance.now() - t;
  const release = kernelRelease(elf) ?? 'unknown';
  const cache = resolve(o.cache ?? OWN_KERNEL_CACHE);
  mkdirSync(cache, { recursive: true });
  const files: KernelFiles = { cache, package: `${basename(kernel)} (${release})`, release, image: kernel, config: '', busybox: '/bin/busybox' };
  const build: KernelBuild = {
    files, buildId: id, sections, orc: profile.options.orc, framePointers: profile.options.framePointers,
    vmlinuxPath, notes: [...notes, ...profile.notes], timings,
  };
  if (profile.options.provenance) build.provenance = profile.options.provenance;
  return build;
}

/**
 * With the guest's symbols the prologue evidence can decide too: run the inference again with
 * them when the image alone was inconclusive (the notes then say what decided).
 */
export function refineWithKallsyms(build: KernelBuild, kallsyms: string): void {
  if (build.framePointers !== undefined) return;
  const elf = readFileSync(build.vmlinuxPath);
  const image = isBzImage(elf) ? extractVmlinux(elf) : elf;
  const p = vmlinuxProfile(image, { symbols: parseKallsyms(kallsyms).symbols });
  build.framePointers = p.options.framePointers;
  if (p.options.provenance) build.provenance = p.options.provenance;
  build.notes = build.notes.filter((n) => !n.startsWith('frame pointers:')).concat(p.notes.filter((n) => n.startsWith('frame pointers:')));
}

/**
 * The guest runs the kernel at its link addresses (nokaslr; or a kernel without RELOCATABLE), so
 * kallsyms' _text must be where the vmlinux links .text: otherwise the ORC table and the image's
 * code would be read at the wrong addresses.
 */
export function checkLinkAddresses(build: KernelBuild, kallsyms: string): void {
  const text = build.sections.find((s) => s.name === '.text');
  const m = /^([0-9a-f]{16}) [Tt] _text$/m.exec(kallsyms) ?? /^([0-9a-f]{16}) [Tt] _stext$/m.exec(kallsyms);
  if (!text || !m) return;
  const runtime = BigInt('0x' + m[1]);
  if (runtime !== text.addr) {
    throw new OwnKernelError(`the guest's kernel text starts at 0x${runtime.toString(16)} but ${build.vmlinuxPath} links .text at 0x${text.addr.toString(16)}: the kernel was relocated (KASLR despite nokaslr?) or --vmlinux is another build`);
  }
}

export function bootTimeoutOf(o: OwnKernelOptions): number {
  const env = Number(process.env.STACKSANITY_BOOT_TIMEOUT_S);
  return o.bootTimeoutMs ?? (Number.isFinite(env) && env > 0 ? env * 1000 : DEFAULT_BOOT_TIMEOUT_MS);
}

/**
 * Why a kernel did not reach the project's /init, from what its console shows: the options the
 * symptom points at first, then every option the guest needs, then the console's last lines.
 */
export function diagnoseBoot(kernel: string, f: BootFailure): string {
  const con = f.console.replace(/\r/g, '');
  const suspects: string[] = [];
  const say = (options: string, what: string): void => {
    suspects.push(`${what}: check ${options}`);
  };
  if (con.trim() === '') {
    say('CONFIG_PRINTK, CONFIG_TTY, CONFIG_SERIAL_8250, CONFIG_SERIAL_8250_CONSOLE (and CONFIG_64BIT)', 'nothing was printed on the serial console');
  }
  if (/Unable to mount root fs|No filesystem could mount root|VFS: Cannot open root device/.test(con)) say('CONFIG_BLK_DEV_INITRD and CONFIG_RD_GZIP', 'the initramfs was not used (the kernel looked for a root device)');
  if (/Initramfs unpacking failed|rootfs image is not initramfs/.test(con)) say('CONFIG_RD_GZIP', 'the initramfs could not be unpacked');
  if (/error -8\b/.test(con)) say('CONFIG_BINFMT_SCRIPT and CONFIG_BINFMT_ELF', '/init could not be executed (ENOEXEC)');
  else if (/No working init found/.test(con)) say('CONFIG_BLK_DEV_INITRD, CONFIG_BINFMT_SCRIPT, CONFIG_BINFMT_ELF', 'no init could run');
  if (/mounting proc on \/proc failed/.test(con)) say('CONFIG_PROC_FS', '/proc could not be mounted');
  if (/mounting sys(?:fs)? on \/sys failed/.test(con)) say('CONFIG_SYSFS', '/sys could not be mounted');
  if (/mounting dev(?:tmpfs)? on \/dev failed/.test(con)) say('CONFIG_DEVTMPFS', '/dev could not be mounted');
  if (/kallsyms: No such file|can't open '\/proc\/kallsyms'/.test(con)) say('CONFIG_KALLSYMS', 'the guest has no /proc/kallsyms');
  if (/can't create \/dev\/ttyS1|ttyS1: No such/.test(con)) say('CONFIG_DEVTMPFS and CONFIG_SERIAL_8250_RUNTIME_UARTS >= 2', '/dev/ttyS1 is missing');
  if (suspects.length === 0) {
    const panic = /Kernel panic - not syncing:[^\n]*/.exec(con)?.[0];
    if (panic) suspects.push(`the kernel panicked (${panic.trim()})`);
    else if (f.kind === 'no_kallsyms') say('CONFIG_KALLSYMS and a second 8250 UART (CONFIG_SERIAL_8250_RUNTIME_UARTS >= 2)', '/init started but neither reported ready nor finished the kallsyms dump on /dev/ttyS1');
    else suspects.push(f.kind === 'exited' ? 'QEMU exited before /init ran' : `no sign of /init after ${Math.round(f.timeoutMs / 1000)} s`);
  }
  const what = f.kind === 'exited' ? `QEMU exited${f.qemuStderr.trim() ? ` (${f.qemuStderr.trim().split('\n').pop()})` : ''} before the kernel reached the project's initramfs`
    : f.kind === 'timeout' ? `the kernel did not reach the project's initramfs within ${Math.round(f.timeoutMs / 1000)} s (STACKSANITY_BOOT_TIMEOUT_S raises the limit)`
      : 'the kernel started /init, but /init did not report ready (after dumping /proc/kallsyms) in time';
  const lines = con.trim() === '' ? '' : con.trimEnd().split('\n').slice(-12).map((l) => `  | ${l}`).join('\n');
  return `${kernel}: ${what}.\n${suspects.map((s) => `  - ${s}`).join('\n')}\n`
    + `  The guest needs: ${GUEST_CONFIG.map((g) => g.options).join(', ')} (docs/real-kernel.md, "Your own kernel").\n`
    + (lines ? `  console (last lines):\n${lines}` : '  (the console was empty)');
}

function readFile(path: string, flag: string): Uint8Array {
  if (!existsSync(path)) throw new OwnKernelError(`${path}: no such file (${flag})`);
  if (!statSync(path).isFile()) throw new OwnKernelError(`${path}: not a regular file (${flag})`);
  return readFileSync(path);
}

function isElf(b: Uint8Array): boolean {
  return b.length > 64 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46 && b[4] === 2;
}

/**
 * A --vmlinux from another build would misplace every symbol: the ELF inside the bzImage carries
 * the same build id note when both came from one build. Only XZ payloads can be opened here; for
 * others the check is skipped (the link-address check after boot still catches most mix-ups).
 */
function matchImage(kernel: string, image: Uint8Array, vmlinuxPath: string, id: string): void {
  let inner: Uint8Array;
  try {
    bzImagePayload(image);
    inner = extractVmlinux(image);
  } catch {
    return;
  }
  const innerId = buildId(inner, elfSections(inner));
  if (innerId !== undefined && innerId !== id) {
    throw new OwnKernelError(`${vmlinuxPath} (build id ${id}) is not the vmlinux of ${kernel} (build id ${innerId}): pass the vmlinux from the same build`);
  }
}

/** Why an own kernel cannot boot here (QEMU or busybox missing: for skip messages), or undefined. */
export function ownKernelUnavailable(): string | undefined {
  const q = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (q.error || q.status !== 0) return 'qemu-system-x86_64 is not installed: run scripts/realkernel-setup.sh first';
  if (!existsSync('/bin/busybox')) return '/bin/busybox is missing: run scripts/realkernel-setup.sh first (busybox-static)';
  return undefined;
}
