// Writes examples/demo.kallsyms and examples/demo.dump: a small synthetic modern kernel (entry code
// encodes &pt_regs|1 in rbp and the IDT stubs sit between the __irqentry_text markers, so both the
// encoded_fp and the section strategies apply) and a dozen hand-built samples with ground truth
// that show what the checker finds — exact traces, documented FP blind spots, entries crossed,
// corrupted stacks, and one trace that claims to be reliable and is not.
//
//   node --import tsx examples/make-demo.ts
//
// Feed the two files to the checker (the CLI, or checkSample() with KernelProfile.fromKallsyms and
// parseTextDump). The symbols alone make the profile infer the section and encoded_fp layouts.
//
// The images come from test/support/stack-image.ts, the same builder the verdict tests use: it
// writes the bytes the way the CPU and entry code would, and reads the truth off its own call chain.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { formatTextDump } from '../services/core/dump/text.ts';
import type { Sample } from '../services/core/dump/sample.ts';
import { Machine, type BuiltSample } from '../test/support/stack-image.ts';
import { ENCODED, IRQ_SAMPLE_AT, NMI_SAMPLE_AT, irqInSyscall, kthread, nmiInIrq, pageFault, syscallToVfsRead } from '../test/core/unwind/fixtures.ts';

const kernel = ENCODED.kernel;
const BUILD_ID = 'demo-encoded-fp';

/** read(2): entry_SYSCALL_64 → do_syscall_64 → __x64_sys_read → ksys_read (→ vfs_read). */
function readSyscall(m: Machine, withVfsRead = true): void {
  if (withVfsRead) return syscallToVfsRead(m);
  m.syscall();
  m.call('do_syscall_64', { returnTo: 0x4e });
  m.frame(0x18);
  m.enter('__x64_sys_read', 0xa1, 0);
  m.enter('ksys_read', 0x1c, 0x10);
}

function fresh(): Machine {
  return new Machine(kernel, 'encoded_fp');
}

interface DemoSample {
  what: string;
  comm: string;
  pid: number;
  build: () => BuiltSample;
}

const samples: DemoSample[] = [
  {
    what: 'body of vfs_read: every strategy exact',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      return m.sample({ at: 0x3c, trigger: 'nmi' });
    },
  },
  {
    what: 'first instruction of vfs_read (before push %rbp): ksys_read skipped, tolerated as prologue',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m, false);
      m.call('vfs_read', { returnTo: 0x5a });
      return m.sample({ at: 0, trigger: 'nmi' });
    },
  },
  {
    what: 'vfs_read at its ret (after leave): ksys_read skipped, tolerated as epilogue',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      m.leave();
      return m.sample({ at: kernel.fn('vfs_read').size - 1, trigger: 'nmi' });
    },
  },
  {
    what: 'page fault in vfs_read: fp stops at the encoded bp; section and encoded_fp recover vfs_read',
    comm: 'cat', pid: 4242,
    build: () => pageFault(ENCODED).b,
  },
  {
    what: 'device interrupt during read(2): IRQ stack, then the task stack, to user regs',
    comm: 'cat', pid: 4242,
    build: () => irqInSyscall(ENCODED).sample({ at: IRQ_SAMPLE_AT, trigger: 'nmi' }),
  },
  {
    what: 'inside an NMI handler that hit the IRQ handler: NMI → IRQ → task stacks',
    comm: 'cat', pid: 4242,
    build: () => nmiInIrq(ENCODED).sample({ at: NMI_SAMPLE_AT, trigger: 'single-step' }),
  },
  {
    what: 'a kworker: the walk ends at ret_from_fork_asm (kthread)',
    comm: 'kworker/0:1', pid: 27,
    build: () => kthread(ENCODED).b,
  },
  {
    what: 'timer interrupt in a kworker: sysvec on the IRQ stack, entry named timer',
    comm: 'kworker/0:1', pid: 27,
    build: () => {
      const { m } = kthread(ENCODED);
      m.interrupt('asm_sysvec_apic_timer_interrupt', { at: 0x214 });
      m.call('sysvec_apic_timer_interrupt', { returnTo: 0x12 });
      m.frame(0x10);
      m.switchToIrqStack(m.stack('irq'));
      m.call('hrtimer_interrupt', { returnTo: 0x61 });
      m.frame(0x28);
      return m.sample({ at: 0x118, trigger: 'nmi' });
    },
  },
  {
    what: 'a sleeping task (sched) in schedule(): reliable and exact',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      m.enter('folio_wait_bit_common', 0x12e, 0x30);
      m.enter('io_schedule', 0x22f, 0);
      m.enter('schedule', 0x1b, 0x08);
      return m.sample({ at: 0x3f, trigger: 'sched' });
    },
  },
  {
    what: 'an asm function without a frame calls C (objtool violation): vfs_read silently lost, yet claimed reliable',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      m.call('nofp_asm_helper', { returnTo: 0x10b });
      m.noFrame([0xffff888003c1e400n], 8);
      m.enter('folio_wait_bit_common', 0x2b, 0x30);
      m.enter('io_schedule', 0x22f, 0);
      m.enter('schedule', 0x1b, 0x08);
      return m.sample({ at: 0x3f, trigger: 'sched' });
    },
  },
  {
    what: 'ksys_read’s saved rbp overwritten with "BBBBBBBB": truncated, bad frame pointer',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      m.poke(m.act('ksys_read').bp!, 0x4242424242424242n);
      return m.sample({ at: 0x3c, trigger: 'nmi' });
    },
  },
  {
    what: 'ksys_read’s saved rbp points back down to vfs_read’s frame: a loop, frame not ascending',
    comm: 'cat', pid: 4242,
    build: () => {
      const m = fresh();
      readSyscall(m);
      m.poke(m.act('ksys_read').bp!, m.act('vfs_read').bp!);
      return m.sample({ at: 0x3c, trigger: 'nmi' });
    },
  },
];

const out: Sample[] = samples.map((d, i) => {
  const { sample } = d.build();
  return {
    ...sample,
    comm: d.comm,
    pid: d.pid,
    tid: d.pid,
    cpu: i % 4,
    time: `5123.${String(100 + i * 250).padStart(6, '0')}`,
    host: 'demo-host',
    kernel: BUILD_ID,
  };
});

const dir = fileURLToPath(new URL('.', import.meta.url));
writeFileSync(dir + 'demo.kallsyms', kernel.kallsyms);
writeFileSync(dir + 'demo.dump', formatTextDump(out));
samples.forEach((d, i) => console.log(`${String(i + 1).padStart(2)}  ${d.what}`));
console.log(`wrote ${dir}demo.kallsyms and ${dir}demo.dump (${out.length} samples)`);
