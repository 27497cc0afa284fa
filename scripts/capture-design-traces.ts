// Boots one entry-design kernel (scripts/build-design-kernels.sh) under QEMU/TCG and captures the
// kernel's own stack traces, for patches/kernel/README.md and test/realkernel/fixtures/designs/:
//   - sysrq-irq:     a serial-break sysrq 't' while `dd if=/dev/zero of=/dev/null` runs (almost all
//                    of its time in the kernel, clearing the user buffer): show_stack() of the
//                    current task runs in the 8250 interrupt handler, so dd's trace crosses an
//                    interrupt taken in kernel mode — the case the three entry designs differ on.
//                    (sysrq 'l', the usual choice, would on the guest's one CPU only call
//                    dump_stack() in the same interrupt: nmi_trigger_cpumask_backtrace sends
//                    no NMI to itself);
//   - sysrq-syscall: `echo t > /proc/sysrq-trigger`: the writing shell's trace from a syscall;
//   - proc-stack:    /proc/PID/stack of a busy user-mode loop while it is preempted (a timer
//                    interrupt taken in user mode);
// and proves the kernel runs stably: ≥ 50 s of uptime with heartbeats, NMIs injected from the
// QEMU monitor handled, no oops/BUG/panic.
//
// Usage: node --import tsx scripts/capture-design-traces.ts --name section-stock \
//          --bzimage …/bzImage [--out test/realkernel/fixtures/designs] [--log-dir DIR] [--seconds 55]
// Exit 0 when the run was stable and every trace was captured, 1 otherwise (reasons printed).
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildInitramfs } from '../services/realkernel/guest.ts';

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    bzimage: { type: 'string' },
    out: { type: 'string', default: 'test/realkernel/fixtures/designs' },
    'log-dir': { type: 'string', default: '.cache/design-traces' },
    seconds: { type: 'string', default: '52' },
    busybox: { type: 'string', default: '/bin/busybox' },
    note: { type: 'string', default: '' },
  },
});
if (!values.name || !values.bzimage) {
  console.error('capture-design-traces: --name and --bzimage are required');
  process.exit(2);
}
for (const [what, file] of [['--bzimage', values.bzimage], ['--busybox', values.busybox]] as const) {
  if (!existsSync(file)) {
    console.error(`capture-design-traces: ${what} ${file} does not exist`);
    process.exit(2);
  }
}
const name = values.name;
const runSeconds = Number(values.seconds);

// The guest's /init: markers around each capture so the host can cut them out of the console.
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo 0 > /proc/sys/kernel/kptr_restrict
echo 1 > /proc/sys/kernel/sysrq
echo 8 > /proc/sys/kernel/printk
echo DESIGNS-READY
sh -c 'while :; do :; done' &
spin=$!
sleep 1
for i in 1 2 3; do
  echo "PROC-STACK-BEGIN $i"
  cat /proc/$spin/stack
  echo "PROC-STACK-END $i"
done
kill $spin
echo SYSRQ-SYSCALL-BEGIN
echo t > /proc/sysrq-trigger
echo SYSRQ-SYSCALL-END
dd if=/dev/zero of=/dev/null bs=1M 2>/dev/null &
echo IDLE-BEGIN
n=0
while true; do
  sleep 2
  n=$((n+2))
  echo "HEARTBEAT $n $(cut -d' ' -f1 /proc/uptime)"
done
`;


const logDir = values['log-dir'];
mkdirSync(logDir, { recursive: true });
const initrd = join(logDir, 'initrd.cpio.gz');
writeFileSync(initrd, buildInitramfs(values.busybox, INIT));

// -nographic multiplexes the serial console and the monitor on stdio: Ctrl-A b sends a serial
// break (the 8250 driver turns break + next key into a sysrq), Ctrl-A c toggles the monitor.
const qemu = spawn('qemu-system-x86_64', [
  '-accel', 'tcg', '-cpu', 'qemu64', '-m', '256', '-smp', '1', '-nographic', '-no-reboot',
  '-kernel', values.bzimage, '-initrd', initrd,
  '-append', 'console=ttyS0 nokaslr panic=-1 loglevel=8',
], { stdio: ['pipe', 'pipe', 'pipe'] });
let out = '';
qemu.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
qemu.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
const killQemu = (): void => {
  if (qemu.exitCode === null) qemu.kill('SIGKILL');
};
process.once('exit', killQemu);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function waitFor(marker: string | RegExp, ms: number, from = 0): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const tail = out.slice(from);
    if (typeof marker === 'string' ? tail.includes(marker) : marker.test(tail)) return true;
    if (qemu.exitCode !== null) return false;
    await sleep(100);
  }
  return false;
}
const send = (s: string): boolean => qemu.stdin.write(s);
async function monitor(cmd: string): Promise<void> {
  send('\x01c');
  await sleep(300);
  send(cmd + '\n');
  await sleep(500);
  send('\x01c');
  await sleep(300);
}
async function breakSysrq(key: string): Promise<number> {
  const at = out.length;
  send('\x01b');
  await sleep(400);
  send(key);
  return at;
}

const problems: string[] = [];
const t0 = Date.now();
if (!(await waitFor('IDLE-BEGIN', 120_000))) problems.push('the guest did not reach the idle loop');
const sysrqIrqAt: number[] = [];
let nmis = 0;
if (!problems.length) {
  await sleep(3000);
  sysrqIrqAt.push(await breakSysrq('t'));
  await waitFor(/HEARTBEAT/, 10_000, sysrqIrqAt[0]);
  for (let i = 0; i < 3; i++) {
    await sleep(4000);
    await monitor('nmi');
    nmis++;
  }
  await sleep(3000);
  sysrqIrqAt.push(await breakSysrq('t'));
  // Run until the guest itself reports ≥ runSeconds of uptime.
  // TCG on a loaded host runs the guest slower than the wall clock: be generous.
  const deadline = Date.now() + 900_000;
  for (;;) {
    const beats = [...out.matchAll(/HEARTBEAT \d+ (\d+)\.\d+/g)].map((m) => Number(m[1]));
    if (beats.length && beats[beats.length - 1]! >= runSeconds) break;
    if (qemu.exitCode !== null || Date.now() > deadline) {
      problems.push(`the guest stopped before ${runSeconds} s of uptime (exit ${qemu.exitCode})`);
      break;
    }
    await sleep(500);
  }
}
send('\x01x');
await sleep(500);
killQemu();
const wallSeconds = (Date.now() - t0) / 1000;
const text = out.replace(/\r/g, '');
writeFileSync(join(logDir, `${name}.console.log`), text);

const lines = text.split('\n');
function between(begin: string, end: string): string[] {
  const b = lines.findIndex((l) => l.includes(begin));
  const e = lines.findIndex((l, i) => i > b && l.includes(end));
  return b >= 0 && e > b ? lines.slice(b + 1, e) : [];
}
// One task's block of a sysrq 't' dump ("task:NAME state:…" up to the next task or the end),
// the first one whose trace matches `mark` (the task that was current when the dump ran).
function taskBlock(fromChar: number, mark: RegExp): string[] {
  const sub = out.slice(fromChar).replace(/\r/g, '').split('\n');
  const start = sub.findIndex((l) => l.includes('sysrq: Show State'));
  if (start < 0) return [];
  let block: string[] = [];
  for (const l of sub.slice(start + 1)) {
    if (/^(HEARTBEAT|IDLE-BEGIN|SYSRQ-SYSCALL-END|PROC-STACK)/.test(l) || /^task:/.test(l)) {
      if (block.length && block.some((b) => mark.test(b))) return block;
      if (/^task:/.test(l)) block = [l];
      else break;
      continue;
    }
    if (block.length) block.push(l);
  }
  return block.some((b) => mark.test(b)) ? block : [];
}
// The stock unwinder's warning is printed once per boot (printk_deferred_once), wherever it lands.
const warning = (): string[] => text.split('\n').filter((l) => /WARNING: kernel stack|unwind stack type/.test(l));

const uptimes = [...text.matchAll(/HEARTBEAT \d+ (\d+\.\d+)/g)].map((m) => Number(m[1]));
const lastUptime = uptimes.length ? uptimes[uptimes.length - 1]! : 0;
const nmiHandled = (text.match(/NMI received for unknown reason/g) ?? []).length;
// Case-sensitive on purpose: "MP-BIOS bug: 8254 timer not connected" is a harmless QEMU boot line.
const bad = lines.filter((l) => /Oops|BUG:|Kernel panic|general protection fault|double fault|unable to handle/.test(l));
if (lastUptime < runSeconds) problems.push(`uptime reached ${lastUptime} s < ${runSeconds} s`);
if (nmiHandled < nmis) problems.push(`${nmiHandled} of ${nmis} injected NMIs reported handled`);
if (bad.length) problems.push(`kernel trouble: ${bad.slice(0, 3).join(' | ')}`);

const release = /Linux version (\S+) .*?(#\d+)/.exec(text);
const header = (what: string): string =>
  [
    `# build: ${name}`,
    `# kernel: ${release ? `${release[1]} ${release[2]}` : 'unknown'}  bzImage: ${values.bzimage}`,
    `# capture: ${what}`,
    `# qemu: TCG, -cpu qemu64, -smp 1, 256 MiB; captured by scripts/capture-design-traces.ts`,
    ...(values.note ? [`# note: ${values.note}`] : []),
    '',
  ].join('\n');

const dir = join(values.out, name);
mkdirSync(dir, { recursive: true });
const captures: [string, string, string[]][] = [
  ['sysrq-irq.txt', "serial-break sysrq 't' while dd runs: dd's block (the current task): show_stack() in the 8250 IRQ, dd interrupted in the kernel", sysrqIrqAt.length ? taskBlock(sysrqIrqAt[0]!, /^task:dd /) : []],
  ['sysrq-irq-2.txt', "the same, about 20 s later (after the injected NMIs)", sysrqIrqAt.length > 1 ? taskBlock(sysrqIrqAt[1]!, /^task:dd /) : []],
  ['sysrq-syscall.txt', "echo t > /proc/sysrq-trigger: the writing shell's block, a syscall, no interrupt", taskBlock(text.indexOf('SYSRQ-SYSCALL-BEGIN'), /write_sysrq_trigger/)],
  ['unwinder-warning.txt', 'every stack-unwinder WARNING / unwind_dump header line of the whole boot (none is expected)', warning()],
  ['proc-stack.txt', '/proc/PID/stack of a busy user-mode shell loop, three reads (preempted by the timer in user mode)', between('PROC-STACK-BEGIN 1', 'PROC-STACK-END 3')],
];
for (const [file, what, body] of captures) {
  if (!body.length && file !== 'unwinder-warning.txt') problems.push(`no ${file} captured`);
  writeFileSync(join(dir, file), header(what) + body.join('\n') + '\n');
}
const stability = [
  `# build: ${name}`,
  `uptime_seconds: ${lastUptime}`,
  `heartbeats: ${uptimes.length}`,
  `nmis_injected: ${nmis}`,
  `nmis_reported_handled: ${nmiHandled}`,
  `kernel_trouble_lines: ${bad.length}`,
  `wall_seconds: ${wallSeconds.toFixed(1)}`,
  `stable: ${problems.length === 0}`,
  '',
].join('\n');
writeFileSync(join(dir, 'stability.txt'), stability);
process.stdout.write(stability);
if (problems.length) {
  for (const p of problems) console.error(`capture-design-traces: ${name}: ${p}`);
  process.exit(1);
}
