// The guest: Debian's kernel from the cache scripts/realkernel-setup.sh fills, a busybox
// initramfs with a workload, and QEMU (TCG, default qemu64 CPU: AMD, so PTI is off) with its
// gdbstub on loopback. Boot with nokaslr so that kallsyms addresses are the link addresses.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { cpioNewc, S_IFDIR, S_IFREG, type CpioEntry } from './cpio.ts';

export const DEFAULT_CACHE = resolve(process.env.STACKSANITY_REALKERNEL_CACHE ?? '.cache/realkernel');

export interface KernelFiles {
  cache: string;
  package: string;
  release: string;
  image: string;
  config: string;
  busybox: string;
}

/** What the setup script wrote to current.env, or undefined when it has not been run. */
export function kernelFiles(cache = DEFAULT_CACHE): KernelFiles | undefined {
  const env = join(cache, 'current.env');
  if (!existsSync(env)) return undefined;
  const kv = new Map<string, string>();
  for (const line of readFileSync(env, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const f = {
    cache, package: kv.get('KERNEL_PACKAGE') ?? '', release: kv.get('KERNEL_RELEASE') ?? '',
    image: kv.get('KERNEL_IMAGE') ?? '', config: kv.get('KERNEL_CONFIG') ?? '', busybox: kv.get('BUSYBOX') ?? '/bin/busybox',
  };
  if (!f.release || !existsSync(f.image) || !existsSync(f.busybox)) return undefined;
  return f;
}

/** Why the real-kernel host cannot run here (for skip messages), or undefined when it can. */
export function unavailableReason(cache = DEFAULT_CACHE): string | undefined {
  if (!kernelFiles(cache)) return `no cached kernel in ${cache}: run scripts/realkernel-setup.sh first`;
  const q = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (q.error || q.status !== 0) return 'qemu-system-x86_64 is not installed: run scripts/realkernel-setup.sh first';
  return undefined;
}

/** CONFIG_FRAME_POINTER from the package's config file. */
export function hasFramePointers(configText: string): boolean {
  return /^CONFIG_FRAME_POINTER=y$/m.test(configText);
}

export const KALLSYMS_END = '# stacksanity-kallsyms-end';
export const INIT_READY = 'stacksanity-init-ready';
/** What the kernel prints when it starts the initramfs' /init (init/main.c, run_init_process). */
const KERNEL_RUNS_INIT = 'Run /init as init process';
/** From the kernel starting /init to its ready marker, the kallsyms dump included. */
const INIT_ALLOWANCE_MS = 240_000;

/**
 * An /init: mounts, optionally dumps /proc/kallsyms to the second serial port (the package's
 * System.map is a stub), reports ready, then runs `workload` (shell lines). Every guest the session
 * boots needs the dump and the marker; only the workload differs.
 */
export function initScript(workload: string): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 0 > /proc/sys/kernel/kptr_restrict
if grep -q stacksanity.kallsyms /proc/cmdline; then
  cat /proc/kallsyms > /dev/ttyS1
  echo "${KALLSYMS_END}" > /dev/ttyS1
fi
echo ${INIT_READY}
${workload}`;
}

/**
 * The sampling workload: loops making syscalls, page faults, process spawns and pipes, with timer
 * IRQs and softirqs underneath.
 */
export const INIT_SCRIPT = initScript(`while true; do
  ls -R / > /dev/null 2>&1
  cat /proc/self/status > /dev/null
  echo x | md5sum > /dev/null
  find /sys/kernel -name 'k*' > /dev/null 2>&1
done
`);

/** A gzip'd newc initramfs: a static busybox and `init` (the project's sampling workload by default). */
export function buildInitramfs(busyboxPath: string, init = INIT_SCRIPT): Uint8Array {
  const bb = readFileSync(busyboxPath);
  const entries: CpioEntry[] = [
    { name: 'bin', mode: S_IFDIR | 0o755 },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: bb },
    { name: 'dev', mode: S_IFDIR | 0o755 },
    { name: 'proc', mode: S_IFDIR | 0o755 },
    { name: 'sys', mode: S_IFDIR | 0o755 },
    { name: 'tmp', mode: S_IFDIR | 0o1777 },
    { name: 'init', mode: S_IFREG | 0o755, data: new TextEncoder().encode(init) },
  ];
  return gzipSync(cpioNewc(entries), { level: 1 });
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

export interface Guest {
  proc: ChildProcess;
  port: number;
  dir: string;
  consoleLog: string;
  kallsymsFile: string;
  /** Writes to the serial console (only with LaunchOptions.consoleInput; "\x01b" is a break). */
  type(s: string): void;
  stop(): void;
}

export interface LaunchOptions {
  files: KernelFiles;
  dumpKallsyms: boolean;
  /** Working directory for the console log, kallsyms dump and initramfs. */
  dir: string;
  memMiB?: number;
  /** More QEMU options (e.g. -icount for the single-step sweep), after the project's own. */
  qemuArgs?: string[];
  /** Extra kernel command-line arguments, after the ones the guest needs. */
  append?: string;
  /** How long the kernel may take to start /init (default 120 s); /init and the kallsyms dump get 240 s more. */
  initTimeoutMs?: number;
  /** Turns a failed boot (QEMU exited, or /init never ran) and its console into the error message. */
  diagnose?: (failure: BootFailure) => string;
  /** The initramfs' /init (default INIT_SCRIPT); build it with initScript() so the kallsyms dump and the ready marker stay. */
  init?: string;
  /** Let the host type on the console (Guest.type): for sysrq from a serial break. */
  consoleInput?: boolean;
}

export interface BootFailure {
  /** exited: QEMU ended (a panic with panic=-1 and -no-reboot); timeout: /init not started in time; no_kallsyms: /init started but its ready marker or the dump never came. */
  kind: 'exited' | 'timeout' | 'no_kallsyms';
  console: string;
  qemuStderr: string;
  timeoutMs: number;
}

/** The arguments every guest boots with: serial console, link addresses in kallsyms, QEMU exits on panic. */
export function guestAppend(dumpKallsyms: boolean, extra?: string): string {
  return `console=ttyS0 nokaslr panic=-1${dumpKallsyms ? ' stacksanity.kallsyms' : ''}${extra ? ` ${extra}` : ''}`;
}

function defaultDiagnosis(f: BootFailure): string {
  const tail = f.console.slice(-500);
  if (f.kind === 'exited') return `qemu exited early: ${f.qemuStderr.trim()}${tail ? `; console tail: ${tail}` : ''}`;
  return `the guest did not reach /init in time; console tail: ${tail}`;
}

export async function launchGuest(o: LaunchOptions): Promise<Guest> {
  mkdirSync(o.dir, { recursive: true });
  const initrd = join(o.dir, 'initrd.cpio.gz');
  writeFileSync(initrd, buildInitramfs(o.files.busybox, o.init));
  const consoleLog = join(o.dir, 'console.log');
  const kallsymsFile = join(o.dir, 'kallsyms.raw');
  writeFileSync(consoleLog, '');
  writeFileSync(kallsymsFile, '');
  const port = await freePort();
  const append = guestAppend(o.dumpKallsyms, o.append);
  const args = [
    '-accel', 'tcg', '-cpu', 'qemu64', '-m', String(o.memMiB ?? 512), '-smp', '1',
    '-display', 'none', '-monitor', 'none', '-no-reboot',
    // With input, the console is QEMU's stdin/stdout through a mux (Ctrl-A b sends a serial break,
    // as with -nographic), logged to the same file; stdout itself is discarded.
    ...(o.consoleInput
      ? ['-chardev', `stdio,id=con0,mux=on,signal=off,logfile=${consoleLog}`, '-serial', 'chardev:con0']
      : ['-serial', `file:${consoleLog}`]),
    '-serial', `file:${kallsymsFile}`,
    '-kernel', o.files.image, '-initrd', initrd, '-append', append,
    '-gdb', `tcp:127.0.0.1:${port}`,
    ...(o.qemuArgs ?? []),
  ];
  const proc = spawn('qemu-system-x86_64', args, { stdio: [o.consoleInput ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
  // A write after QEMU died must not become an unhandled 'error' event.
  proc.stdin?.on('error', () => {});
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const guest: Guest = {
    proc, port, dir: o.dir, consoleLog, kallsymsFile,
    type: (s: string) => {
      if (!proc.stdin) throw new Error('the guest was launched without console input (LaunchOptions.consoleInput)');
      proc.stdin.write(s);
    },
    stop: () => {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    },
  };
  proc.once('exit', (code) => {
    if (code !== 0 && code !== null) stderr += `\nqemu exited with ${code}`;
    process.off('exit', guest.stop);
  });
  // Never leave a guest running behind a process that ends without close().
  process.once('exit', guest.stop);
  // Wait for /init (and the kallsyms dump): the console says so. The kernel's own "Run /init as
  // init process" (init/main.c) marks the initramfs reached; the dump that follows gets its own
  // allowance (Debian's ~200,000 symbols take most of a minute through the emulated UART).
  const initTimeoutMs = o.initTimeoutMs ?? 120_000;
  const diagnose = o.diagnose ?? defaultDiagnosis;
  const t0 = Date.now();
  let initSeenAt: number | undefined;
  const fail = (kind: BootFailure['kind']): Error => {
    guest.stop();
    return new Error(diagnose({ kind, console: readFileSync(consoleLog, 'latin1'), qemuStderr: stderr, timeoutMs: initTimeoutMs }));
  };
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw fail('exited');
    const con = readFileSync(consoleLog, 'latin1');
    if (initSeenAt === undefined && (con.includes(INIT_READY) || con.includes(KERNEL_RUNS_INIT))) initSeenAt = Date.now();
    if (con.includes(INIT_READY) && (!o.dumpKallsyms || readFileSync(kallsymsFile, 'latin1').includes(KALLSYMS_END))) break;
    if (initSeenAt === undefined && Date.now() - t0 > initTimeoutMs) throw fail('timeout');
    if (initSeenAt !== undefined && Date.now() - initSeenAt > INIT_ALLOWANCE_MS) throw fail('no_kallsyms');
    await new Promise((r) => setTimeout(r, 100));
  }
  return guest;
}

/** The kallsyms dump without CRs and the end marker. */
export function cleanKallsyms(raw: string): string {
  const text = raw.replace(/\r/g, '');
  const end = text.indexOf(KALLSYMS_END);
  return end >= 0 ? text.slice(0, end) : text;
}
