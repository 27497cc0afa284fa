// `host qemu --kernel` before and around the boot: files refused with a message naming them, a
// --vmlinux from another build refused, and a boot that never reaches the project's /init turned
// into an error that names the config options its console points at. The console lines are the
// kernel's own messages (init/do_mounts.c, init/main.c), not ones the code under test produced.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diagnoseBoot, GUEST_CONFIG, loadOwnKernel, ownKernelUnavailable, OwnKernelError } from '../../services/realkernel/own-kernel.ts';
import { builtFpKernel } from '../../services/realkernel/fp-kernel.ts';
import { kernelFiles } from '../../services/realkernel/guest.ts';
import { RealHostSession } from '../../services/realkernel/session.ts';
import { runCli } from '../support/cli.ts';

const fp = builtFpKernel();
const fpSkip = fp ? false : 'skipped: no frame-pointer kernel built (run scripts/build-fp-kernel.sh; see docs/real-kernel.md)';
const qemuSkip = ownKernelUnavailable();

function failure(kind: 'exited' | 'timeout' | 'no_kallsyms', console: string) {
  return { kind, console, qemuStderr: '', timeoutMs: 60_000 };
}

test('a kernel that finds no initramfs: the message names BLK_DEV_INITRD and RD_GZIP, every option the guest needs, and the console', () => {
  const con = 'Linux version 6.1.0 ...\nVFS: Cannot open root device "(null)" or unknown-block(0,0): error -6\n'
    + 'Please append a correct "root=" boot option; here are the available partitions:\n'
    + 'Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n';
  const m = diagnoseBoot('/k/bzImage', failure('exited', con));
  assert.match(m, /^\/k\/bzImage: QEMU exited before the kernel reached the project's initramfs/);
  assert.match(m, /the initramfs was not used.*CONFIG_BLK_DEV_INITRD and CONFIG_RD_GZIP/);
  for (const g of GUEST_CONFIG) assert.ok(m.includes(g.options), g.options);
  assert.match(m, /\| Kernel panic - not syncing: VFS: Unable to mount root fs/);
});

test('/init that cannot be executed (ENOEXEC: no script or ELF support) names BINFMT_SCRIPT and BINFMT_ELF', () => {
  const m = diagnoseBoot('k', failure('exited', 'Run /init as init process\nFailed to execute /init (error -8)\nKernel panic - not syncing: No working init found.\n'));
  assert.match(m, /ENOEXEC.*CONFIG_BINFMT_SCRIPT and CONFIG_BINFMT_ELF/);
});

test('a silent console (no serial console compiled in) names the serial options; a timeout says how to wait longer', () => {
  const m = diagnoseBoot('k', failure('timeout', ''));
  assert.match(m, /within 60 s \(STACKSANITY_BOOT_TIMEOUT_S raises the limit\)/);
  assert.match(m, /nothing was printed on the serial console: check CONFIG_PRINTK, CONFIG_TTY, CONFIG_SERIAL_8250, CONFIG_SERIAL_8250_CONSOLE/);
  assert.match(m, /\(the console was empty\)/);
});

test('/init ran but /proc/kallsyms is missing: names KALLSYMS', () => {
  const m = diagnoseBoot('k', failure('no_kallsyms', 'stacksanity-init-ready\ncat: can\'t open \'/proc/kallsyms\': No such file or directory\n'));
  assert.match(m, /the kernel started \/init, but \/init did not report ready/);
  assert.match(m, /no \/proc\/kallsyms: check CONFIG_KALLSYMS/);
});

test('--kernel that is not a bzImage, or missing, is refused before anything boots', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stacksanity-own-'));
  try {
    const junk = join(dir, 'vmlinux.txt');
    writeFileSync(junk, 'not a kernel\n'.repeat(100));
    assert.throws(() => loadOwnKernel({ kernel: junk }), (e: Error) => e instanceof OwnKernelError && e.message.startsWith(`${junk}: not a bzImage`));
    assert.throws(() => loadOwnKernel({ kernel: join(dir, 'nope') }), /nope: no such file \(--kernel\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: --vmlinux without --kernel is a usage error; a bad --kernel exits 2 with the file named', async () => {
  const r = await runCli(['host', 'qemu', '--vmlinux', '/x']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--vmlinux and --append go with --kernel/);
  assert.match(r.err, /usage: stacksanity host qemu \[--kernel BZIMAGE/);
  const r2 = await runCli(['host', 'qemu', '--kernel', '/nonexistent/bzImage']);
  assert.equal(r2.code, 2);
  assert.match(r2.err, /\/nonexistent\/bzImage: no such file \(--kernel\)/);
});

test('the FP kernel\'s image alone says: frame pointers (its embedded config), no ORC tables', { skip: fpSkip }, () => {
  const b = loadOwnKernel({ kernel: fp!.image, vmlinux: fp!.vmlinux });
  assert.equal(b.framePointers, true, b.notes.join('\n'));
  assert.equal(b.provenance?.framePointers?.source, 'config');
  assert.match(b.provenance!.framePointers!.detail, /FRAME_POINTER=y/);
  assert.equal(b.orc, undefined);
  assert.match(b.buildId, /^[0-9a-f]{40}$/);
  // Without --vmlinux the ELF inside the bzImage gives the same build id and answer.
  const inner = loadOwnKernel({ kernel: fp!.image });
  assert.equal(inner.buildId, b.buildId);
  assert.equal(inner.framePointers, true);
});

test('a --vmlinux from another build is refused by build id', { skip: fpSkip || (!kernelFiles() ? 'skipped: no Debian kernel cached (scripts/realkernel-setup.sh)' : false) }, () => {
  const debian = kernelFiles()!;
  const debianElf = join(debian.cache, debian.package, 'vmlinux');
  assert.throws(() => loadOwnKernel({ kernel: fp!.image, vmlinux: debianElf }), /is not the vmlinux of .*bzImage \(build id [0-9a-f]+\): pass the vmlinux from the same build/);
});

test('a real boot that cannot reach /init (rdinit names no file): QEMU exits on the panic, the error names the init options and shows the console', { skip: fpSkip || (qemuSkip ? `skipped: ${qemuSkip}` : false) }, async () => {
  const cache = mkdtempSync(join(tmpdir(), 'stacksanity-own-cache-'));
  try {
    // With rdinit= naming no file the kernel skips the initramfs' /init and tries /sbin/init,
    // /etc/init, /bin/init, /bin/sh, none of which the initramfs has before /init ran: init/main.c
    // panics "No working init found", and panic=-1 with -no-reboot ends QEMU.
    await assert.rejects(
      RealHostSession.open({ own: { kernel: fp!.image, vmlinux: fp!.vmlinux, append: 'rdinit=/no/such/init', cache } }),
      (e: Error) => /QEMU exited before the kernel reached the project's initramfs/.test(e.message)
        && /no init could run: check CONFIG_BLK_DEV_INITRD, CONFIG_BINFMT_SCRIPT, CONFIG_BINFMT_ELF/.test(e.message)
        && /\| Kernel panic - not syncing: No working init found/.test(e.message),
    );
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});
