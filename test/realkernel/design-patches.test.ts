// The entry-design patches (patches/kernel/, issue 18) against the real linux-source-6.1, and the
// kernel traces captured from the five builds (test/realkernel/fixtures/designs/, written by
// scripts/capture-design-traces.ts). Expectations come from how the kernel works, not from the
// fixtures: what ENCODE_FRAME_POINTER looks like in the source, what the stock frame-pointer
// unwinder does when a handler's saved %rbp is 0 (its "bad value" warning), that a pt_regs found by
// the unwinder is printed as a "RIP:" block (show_regs_if_on_stack), and how %pB prints an address
// that is the first byte of a symbol (it looks up address - 1: the previous symbol, at its end).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const REPO = join(import.meta.dirname, '..', '..');
const PATCHES = join(REPO, 'patches', 'kernel');
const FIXTURES = join(import.meta.dirname, 'fixtures', 'designs');
const TARBALL = process.env.LINUX_SOURCE_TARBALL ?? '/usr/src/linux-source-6.1.tar.xz';
const ENTRY = 'arch/x86/entry/entry_64.S';
const UNWIND = 'arch/x86/kernel/unwind_frame.c';
const DESIGNS = ['section', 'kernel_entry'] as const;

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const count = (text: string, re: RegExp): number => (text.match(re) ?? []).length;

describe('the design patches apply to the installed linux-source-6.1', () => {
  let src: string | undefined;
  let why = '';
  if (!existsSync(TARBALL)) why = `${TARBALL} is absent (apt-get install linux-source-6.1)`;
  else if (!has('patch') || !has('xz')) why = 'patch or xz is not installed';
  else {
    const dir = mkdtempSync(join(tmpdir(), 'designs-'));
    const r = spawnSync('tar', ['-xJf', TARBALL, '-C', dir, '--wildcards', `*/${ENTRY}`, `*/${UNWIND}`], { encoding: 'utf8' });
    const top = r.status === 0 ? readdirSync(dir)[0] : undefined;
    if (top) src = join(dir, top);
    else why = `could not extract ${ENTRY} from ${TARBALL}: ${r.stderr}`;
  }
  const pristine = (): string => readFileSync(join(src!, ENTRY), 'utf8');
  /** Applies a design's patches (1-entry, then 2-unwinder if asked) to a copy; returns the copy. */
  const applied = (design: string, withUnwinder: boolean): string => {
    const copy = mkdtempSync(join(tmpdir(), `designs-${design}-`));
    cpSync(join(src!, 'arch'), join(copy, 'arch'), { recursive: true });
    for (const p of withUnwinder ? ['1-entry.patch', '2-unwinder.patch'] : ['1-entry.patch']) {
      const r = spawnSync('patch', ['-p1', '--forward', '--batch', '-d', copy, '-i', join(PATCHES, design, p)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${design}/${p} does not apply cleanly: ${r.stdout}${r.stderr}`);
      assert.doesNotMatch(r.stdout, /offset|fuzz/i, `${design}/${p} applies only with offset or fuzz: ${r.stdout}`);
    }
    return copy;
  };

  test('6.1 encodes pt_regs in %rbp at seven sites (the count the section design removes)', (t) => {
    if (!src) return t.skip(why);
    assert.equal(count(pristine(), /^\s*ENCODE_FRAME_POINTER\b/gm), 7);
  });

  test('section: the entry patch removes every encoding and adds no instruction', (t) => {
    if (!src) return t.skip(why);
    const copy = applied('section', true);
    try {
      const entry = readFileSync(join(copy, ENTRY), 'utf8');
      assert.equal(count(entry, /^\s*ENCODE_FRAME_POINTER\b/gm), 0);
      // Only the seven lines go (comments aside): every other instruction line is untouched.
      const code = (s: string): string[] => s.split('\n').filter((l) => !/^\s*(\*|\/\*|$)/.test(l) && !/ENCODE_FRAME_POINTER/.test(l));
      assert.deepEqual(code(entry), code(pristine()));
      assert.match(readFileSync(join(copy, UNWIND), 'utf8'), /in_entry_code\(state->ip\)\)\s*\n\s*next_bp = /);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test('kernel_entry: every C-handler call site of the stubs gets the fake frame; encodings left only where not built', (t) => {
    if (!src) return t.skip(why);
    const copy = applied('kernel_entry', true);
    try {
      const entry = readFileSync(join(copy, ENTRY), 'utf8');
      // Sites: idtentry_body, kernel-mode #DB/#MC, #DF, NMI from user, NMI from kernel.
      assert.equal(count(entry, /^\s*PUSH_KERNEL_ENTRY_FRAME\s*$/gm), 5);
      assert.equal(count(entry, /^\s*POP_KERNEL_ENTRY_FRAME\s*$/gm), 5);
      // The frame needs pt_regs in %rdi: each push follows the argument loads, never precedes them.
      const lines = entry.split('\n');
      lines.forEach((l, i) => {
        if (/^\s*PUSH_KERNEL_ENTRY_FRAME\s*$/.test(l)) {
          const before = lines.slice(Math.max(0, i - 10), i).join('\n');
          assert.match(before, /movq\s+%rsp, %rdi/, `line ${i + 1}: no pt_regs load before the fake frame`);
          assert.match(lines[i + 1] ?? '', /^\s*call\s/, `line ${i + 2}: the fake frame must be right before the handler call`);
        }
      });
      // Left: idtentry_vc (CONFIG_AMD_MEM_ENCRYPT) and xen_failsafe_callback (CONFIG_XEN_PV).
      assert.equal(count(entry, /^\s*ENCODE_FRAME_POINTER\b/gm), 2);
      assert.match(entry, /SYM_CODE_START\(kernel_entry\)/);
      assert.match(readFileSync(join(copy, UNWIND), 'utf8'), /state->ip == \(unsigned long\)kernel_entry\)/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test('each entry patch applies alone (the stock-unwinder builds)', (t) => {
    if (!src) return t.skip(why);
    for (const d of DESIGNS) {
      const copy = applied(d, false);
      assert.equal(readFileSync(join(copy, UNWIND), 'utf8'), readFileSync(join(src, UNWIND), 'utf8'));
      rmSync(copy, { recursive: true, force: true });
    }
  });
});

// ---- the captured traces ----

interface Capture {
  body: string;
  lines: string[];
}
function capture(build: string, file: string): Capture | undefined {
  const p = join(FIXTURES, build, file);
  if (!existsSync(p)) return undefined;
  const body = readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('\n');
  return { body, lines: body.split('\n') };
}
const BAD_BP = /WARNING: kernel stack frame pointer at \S+ in \S+ has bad value 0+\b/;
/** A "RIP: 0010:" line after the interrupt stub's line: the interrupted kernel context's regs. */
function interruptedRip(c: Capture): string | undefined {
  const stub = c.lines.findIndex((l) => /\basm_common_interrupt\+/.test(l) && !/\?/.test(l));
  if (stub < 0) return undefined;
  return c.lines.slice(stub).find((l) => /RIP: 0010:/.test(l));
}
/** Frames the unwinder vouched for (no "?") after the interrupt stub. */
function reliableAfterStub(c: Capture): string[] {
  const stub = c.lines.findIndex((l) => /\basm_common_interrupt\+/.test(l));
  return stub < 0 ? [] : c.lines.slice(stub + 1).filter((l) => /^\s+[a-z_][\w.]*\+0x[0-9a-f]+\/0x[0-9a-f]+/.test(l));
}

describe('kernel traces through an interrupt taken in kernel mode (sysrq t from the serial IRQ while dd reads /dev/zero)', () => {
  const need = (t: { skip: (m: string) => void }, build: string): Capture | undefined => {
    const c = capture(build, 'sysrq-irq.txt');
    if (!c) t.skip(`no fixture for ${build}: run scripts/capture-design-traces.ts`);
    return c;
  };

  test('every build was stable: ≥ 50 s of uptime, every injected NMI handled, no oops', (t) => {
    const builds = existsSync(FIXTURES) ? readdirSync(FIXTURES) : [];
    if (!builds.length) return t.skip('no captured builds');
    for (const b of builds) {
      const s = readFileSync(join(FIXTURES, b, 'stability.txt'), 'utf8');
      const field = (k: string): number => Number(new RegExp(`^${k}: (\\S+)`, 'm').exec(s)?.[1]);
      assert.ok(field('uptime_seconds') >= 50, `${b}: uptime ${field('uptime_seconds')}`);
      assert.ok(field('nmis_injected') >= 1 && field('nmis_reported_handled') >= field('nmis_injected'), `${b}: NMIs`);
      assert.equal(field('kernel_trouble_lines'), 0, `${b}: kernel trouble`);
    }
  });

  test('every dump runs in the serial interrupt, on the IRQ stack, for dd (the task the IRQ interrupted)', (t) => {
    const builds = existsSync(FIXTURES) ? readdirSync(FIXTURES) : [];
    if (!builds.length) return t.skip('no captured builds');
    for (const b of builds) {
      const c = capture(b, 'sysrq-irq.txt');
      assert.ok(c, `${b}: no sysrq-irq.txt`);
      assert.match(c.lines[0] ?? '', /^task:dd\s/, b);
      assert.match(c.body, /<IRQ>[\s\S]*serial8250_interrupt[\s\S]*<\/IRQ>/, b);
    }
  });

  test('encoded-stock: dd was interrupted in kernel mode (CS 0010) while reading /dev/zero', (t) => {
    const c = need(t, 'encoded-stock');
    if (!c) return;
    assert.match(interruptedRip(c) ?? '', /RIP: 0010:/);
  });

  for (const build of ['encoded-stock', 'section-patched', 'kernel_entry-patched']) {
    test(`${build}: the unwinder finds pt_regs: a RIP: block for the interrupted context, no warning, dd's syscall path reliable`, (t) => {
      const c = need(t, build);
      if (!c) return;
      assert.doesNotMatch(c.body + (capture(build, 'unwinder-warning.txt')?.body ?? ''), BAD_BP);
      assert.ok(interruptedRip(c), 'no RIP: block after asm_common_interrupt');
      const rel = reliableAfterStub(c).join('\n');
      // dd's syscall path below the interrupt, vouched for by the unwinder.
      assert.match(rel, /ksys_read\+/);
      assert.match(rel, /do_syscall_64\+/);
    });
  }

  test('section-stock: the handler frame ends in %rbp = 0: the warning, no RIP: block, the rest only guesses', (t) => {
    const c = need(t, 'section-stock');
    if (!c) return;
    // printk_deferred_once: the warning is printed once per boot, wherever the console puts it.
    assert.match(c.body + (capture('section-stock', 'unwinder-warning.txt')?.body ?? ''), BAD_BP);
    assert.equal(interruptedRip(c), undefined);
    // dd's syscall path is still on the stack, so the scan prints it, but only as "?" guesses.
    // (trace lines only: the raw stack dump after the warning names symbols too, in parentheses)
    const sys = c.lines.filter((l) => /^\s+(\?\s+)?ksys_read\+/.test(l));
    assert.ok(sys.length > 0, 'ksys_read not printed at all');
    for (const l of sys) assert.match(l, /\?\s+ksys_read/);
  });

  test('kernel_entry-stock: no RIP: block; the fake frame prints as the end of the symbol before kernel_entry', (t) => {
    const c = need(t, 'kernel_entry-stock');
    if (!c) return;
    assert.doesNotMatch(c.body, BAD_BP);
    assert.equal(interruptedRip(c), undefined);
    // %pB prints address-1's symbol with the offset put back: for the first byte of a symbol that
    // is the previous symbol at offset == its size ("sym+0x50/0x50"), and never "kernel_entry".
    const afterStub = reliableAfterStub(c);
    const fake = afterStub[0] ?? '';
    const m = /([\w.]+)\+0x([0-9a-f]+)\/0x([0-9a-f]+)/.exec(fake);
    assert.ok(m, `no frame after the stub: ${afterStub.join(' | ')}`);
    assert.equal(m[2], m[3], `the frame after the stub is not at a symbol's end: ${fake}`);
    assert.doesNotMatch(c.body, /kernel_entry\+0x0\//);
    // …and the walk goes on from the interrupted %rbp, reliably, down dd's syscall path.
    assert.match(afterStub.join('\n'), /ksys_read\+/);
  });
});

describe('traces without an interrupt in kernel mode are the same in every design', () => {
  test('sysrq from a syscall and /proc/PID/stack of a user-preempted task: no warning, no "?" frames', (t) => {
    const builds = existsSync(FIXTURES) ? readdirSync(FIXTURES) : [];
    if (!builds.length) return t.skip('no captured builds');
    for (const b of builds) {
      const sys = capture(b, 'sysrq-syscall.txt');
      const ps = capture(b, 'proc-stack.txt');
      assert.ok(sys && ps, `${b}: fixtures missing`);
      assert.doesNotMatch(sys.body, BAD_BP, b);
      assert.match(sys.body, /write_sysrq_trigger|__handle_sysrq/, b);
      assert.match(sys.body, /entry_SYSCALL_64/, b);
      // A task preempted in user mode: the walk ends at its user pt_regs, through the timer stub.
      assert.match(ps.body, /asm_(common_interrupt|sysvec_apic_timer_interrupt)\+/, `${b}: the preempted task's stack does not reach an interrupt stub`);
      assert.doesNotMatch(ps.body, /\?/, b);
      // In the kernel_entry builds the fake frame is the walk's last frame from user mode too:
      // %pB names it as the end of the symbol before kernel_entry.
      const firstRead = ps.lines.slice(0, ps.lines.findIndex((l) => l.startsWith('PROC-STACK-END')));
      const last = firstRead.filter((l) => /^\[</.test(l)).pop() ?? '';
      const m = /\] ([\w.]+)\+0x([0-9a-f]+)\/0x([0-9a-f]+)/.exec(last);
      if (b.startsWith('kernel_entry')) assert.ok(m && m[2] === m[3], `${b}: last frame ${last}`);
      else assert.match(last, /asm_common_interrupt\+|asm_sysvec_apic_timer_interrupt\+/, `${b}: last frame ${last}`);
    }
  });
});
