// Verdict tests on hand-built stack images. Each expectation is read off the image the builder
// wrote (test/support/stack-image.ts) and the kernel's rules (reference/kernel-unwinders.md §1.2
// unwind_frame.c, §2 entry code, §4 reliable stack traces, §7 per-IP frame states, §9 invariants)
// — never from the checker's own output.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unwind } from '../../../services/core/unwind/index.ts';
import { checkSample, type SampleCheck, type StrategyCheck } from '../../../services/core/check/checker.ts';
import { STRATEGIES, type StrategyName } from '../../../services/core/unwind/types.ts';
import type { Sample } from '../../../services/core/dump/sample.ts';
import { KernelProfile } from '../../../services/core/symbols/profile.ts';
import {
  DATA_ADDRESS,
  Machine,
  cloneSample,
  taskGeometry,
  type BuiltSample,
  type ExpectedFrame,
  type SyntheticKernel,
} from '../../support/stack-image.ts';
import {
  ENCODED,
  FLAVOURS,
  IRQ_SAMPLE_AT,
  K,
  KENTRY,
  K_NO_MARKERS,
  NMI_SAMPLE_AT,
  SECTION,
  assertHex,
  irqInSyscall,
  kthread,
  nmiInIrq,
  pageFault,
  recoverable,
  showAll,
  syscallToVfsRead,
  type Flavour,
} from './fixtures.ts';

const ALL = STRATEGIES as readonly StrategyName[];

function check(sample: Sample, f: Flavour, strategies: readonly StrategyName[] = ALL): SampleCheck {
  return checkSample(sample, f.profile, strategies);
}

function of(c: SampleCheck, s: StrategyName): StrategyCheck {
  const r = c.results.find((x) => x.strategy === s);
  assert.ok(r, `no result for strategy ${s}`);
  return r;
}

/** The strategy reported exactly the expected frames, each from the expected stack word. */
function assertFrames(k: SyntheticKernel, r: StrategyCheck, expected: readonly ExpectedFrame[]): void {
  const frames = r.unwind.frames;
  assert.deepEqual(showAll(k, frames), showAll(k, expected), `${r.strategy}: frames`);
  expected.forEach((e, i) => {
    const f = frames[i]!;
    assert.equal(f.stack, e.stack, `${r.strategy}: frame ${i} (${e.fn}) stack`);
    if (e.kind === 'call') assertHex(f.slot, e.slot, `${r.strategy}: frame ${i} (${e.fn}) slot`);
    if (e.kind === 'regs') assertHex(f.regsAt, e.regsAt, `${r.strategy}: frame ${i} (${e.fn}) pt_regs address`);
  });
}

function assertExact(k: SyntheticKernel, r: StrategyCheck, b: BuiltSample): void {
  assertFrames(k, r, b.expected);
  assert.equal(r.verdict, 'exact', `${r.strategy}: verdict (reason ${r.reason})`);
  assert.equal(r.reason, undefined, `${r.strategy}: reason`);
  assert.equal(r.unwind.outcome, b.end, `${r.strategy}: outcome`);
  assert.deepEqual(r.missing, [], `${r.strategy}: missing`);
  assert.deepEqual(r.extra, [], `${r.strategy}: extra`);
}

/** A correct prefix of the truth, then a stop for `reason`. */
function assertTruncated(k: SyntheticKernel, r: StrategyCheck, b: BuiltSample, prefix: number, reason: string): void {
  assert.deepEqual(showAll(k, r.unwind.frames), showAll(k, b.expected.slice(0, prefix)), `${r.strategy}: frames`);
  assert.equal(r.verdict, 'truncated', `${r.strategy}: verdict`);
  assert.equal(r.reason, reason, `${r.strategy}: reason`);
  assert.equal(r.unwind.outcome, reason === 'depth_limit' ? 'depth_limit' : 'error', `${r.strategy}: outcome`);
  assert.equal(r.unwind.reliable, false, `${r.strategy}: a walk that stopped on an error is never reliable (§4.1 rule 3)`);
  assert.equal(r.falseReliable, false, `${r.strategy}: falseReliable`);
}

function assertError(r: StrategyCheck, reason: string): void {
  assert.equal(r.verdict, 'error', `${r.strategy}: verdict (frames ${r.unwind.frames.length}, outcome ${r.unwind.outcome})`);
  assert.equal(r.reason, reason, `${r.strategy}: reason`);
  assert.equal(r.unwind.reliable, false, `${r.strategy}: reliable`);
  assert.equal(r.falseReliable, false, `${r.strategy}: falseReliable`);
}

/** A plain body sample: read(2) down to vfs_read, sampled at vfs_read+0x3c with its frame set up. */
function bodySample(f: Flavour, trigger = 'nmi'): { m: Machine; b: BuiltSample } {
  const m = new Machine(f.kernel, f.layout);
  syscallToVfsRead(m);
  return { m, b: m.sample({ at: 0x3c, trigger }) };
}

// ---------------------------------------------------------------------------------------------

describe('the builder lays out what the kernel lays out (self-checks, no unwinder involved)', () => {
  test('syscall: the first C frame sits at task_pt_regs - 16, its return address in entry_SYSCALL_64', () => {
    const m = new Machine(K, 'encoded_fp');
    syscallToVfsRead(m);
    const g = taskGeometry(m.get('task'));
    assertHex(g.ptRegs, m.get('task').end - 168n, 'task_pt_regs');
    assertHex(m.act('do_syscall_64').bp, g.lastFrame, 'do_syscall_64 frame');
    assertHex(m.peek(g.lastFrame + 8n), K.at('entry_SYSCALL_64', 0x4e), 'return address into entry_SYSCALL_64');
    assertHex(m.peek(g.ptRegs + 136n), 0x33n, 'user cs in task_pt_regs');
  });

  test('IDT pt_regs base is ≡ 8 (mod 16); encoded_fp saves &pt_regs|1 right below the stub return', () => {
    const { m, ptRegs } = pageFault(ENCODED);
    assert.equal(ptRegs % 16n, 8n);
    assertHex(m.peek(ptRegs - 8n), K.at('asm_exc_page_fault', 0x1e), 'return into the stub');
    assertHex(m.peek(ptRegs - 16n), ptRegs | 1n, 'encoded bp');
    assertHex(m.act('exc_page_fault').bp, ptRegs - 16n, 'handler frame');
    assertHex(m.peek(ptRegs + 128n), K.at('vfs_read', 0x7b), 'regs->ip');
    assertHex(m.peek(ptRegs + 32n), m.act('vfs_read').bp, 'regs->bp = the interrupted rbp');
  });

  test('section layout: the handler saves the interrupted rbp; kernel_entry layout: a fake frame at P-16', () => {
    const s = pageFault(SECTION);
    assertHex(s.m.peek(s.ptRegs - 16n), s.m.act('vfs_read').bp, 'section: saved rbp');
    const ke = pageFault(KENTRY);
    assertHex(ke.m.peek(ke.ptRegs - 8n), KENTRY.kernel.sym('kernel_entry'), 'fake return address');
    assertHex(ke.m.peek(ke.ptRegs - 16n), ke.m.act('vfs_read').bp, 'interrupted rbp');
    assertHex(ke.m.peek(ke.ptRegs - 24n), KENTRY.kernel.at('asm_exc_page_fault', 0x1e), 'return into the stub');
    assertHex(ke.m.peek(ke.ptRegs - 32n), ke.ptRegs - 16n, 'handler saved bp = the fake frame');
  });

  test('IRQ stack link word and NMI hardware frame', () => {
    const m = nmiInIrq(ENCODED);
    const irq = m.get('irq');
    const nmi = m.get('nmi');
    const link = m.peek(irq.end - 8n);
    assert.ok(m.get('task').contains(link), 'IRQ top-8 holds an rsp on the task stack');
    assert.ok(irq.contains(m.peek(nmi.end - 16n)), 'NMI hardware frame: saved RSP (top-16) is on the IRQ stack');
    assertHex(m.peek(nmi.end - 40n), K.at('handle_irq_event', 0x44), 'NMI hardware frame RIP at top-40');
    const nmiRegs = nmi.end - 264n;
    assertHex(m.peek(nmiRegs + 128n), K.at('handle_irq_event', 0x44), 'NMI pt_regs at top-264');
    assertHex(m.peek(m.act('exc_nmi').bp!), nmiRegs | 1n, 'exc_nmi saved the encoded pointer');
  });

  test('truth marks exactly the frames an FP unwinder cannot see', () => {
    const m = new Machine(K, 'encoded_fp');
    syscallToVfsRead(m);
    m.call('copy_user_generic', { returnTo: 0x71 });
    m.noFrame();
    const b = m.sample({ at: 0x12 });
    assert.deepEqual(b.expected.map((f) => f.tolerated ?? '-'), ['-', 'leaf', '-', '-', '-', '-']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a sample in a function body', () => {
  for (const f of FLAVOURS) {
    test(`${f.layout} kernel: every strategy reports the true chain and ends at user regs`, () => {
      const { b } = bodySample(f);
      const c = check(b.sample, f);
      for (const s of ALL) {
        const r = of(c, s);
        assertExact(f.kernel, r, b);
        assert.deepEqual(r.unwind.stacks, ['task'], `${s}: stacks`);
        // §4.3 / contract: the sampled regs of an NMI are kernel-mode pt_regs → never reliable on FP.
        assert.equal(r.unwind.reliable, false, `${s}: reliable`);
        assert.equal(r.falseReliable, false, `${s}: falseReliable`);
      }
      assert.deepEqual(c.disagreements, []);
    });
  }

  test('a sleeping task (trigger sched) that unwinds to user regs is reliable', () => {
    const m = new Machine(K, 'encoded_fp');
    syscallToVfsRead(m);
    m.enter('folio_wait_bit_common', 0x12e, 0x30);
    m.enter('io_schedule', 0x22f, 0);
    m.enter('schedule', 0x1b, 0x08);
    const b = m.sample({ at: 0x3f, trigger: 'sched' });
    const c = check(b.sample, ENCODED);
    for (const s of ALL) {
      const r = of(c, s);
      assertExact(K, r, b);
      // §4.1: user regs reached, no kernel-mode pt_regs crossed, no error ⇒ reliable.
      assert.equal(r.unwind.reliable, true, `${s}: reliable`);
      assert.equal(r.falseReliable, false, `${s}: falseReliable`);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('prologue, epilogue and frameless leaf: exactly one caller skipped (§7, §9 rule 18)', () => {
  const cases: [string, (m: Machine) => number, string][] = [
    ['first instruction (after call, before push %rbp)', (m) => (m.call('vfs_read', { returnTo: 0x5a }), 0), 'prologue'],
    ['after push %rbp, before mov %rsp,%rbp', (m) => (m.call('vfs_read', { returnTo: 0x5a }), m.pushRbp(), 1), 'prologue'],
    ['after leave, at ret', (m) => (m.enter('vfs_read', 0x5a, 0x28), m.leave(), K.fn('vfs_read').size - 1), 'epilogue'],
    ['in a frameless asm leaf', (m) => (m.enter('vfs_read', 0x5a, 0x28), m.call('copy_user_generic', { returnTo: 0x71 }), m.noFrame([0n], 0), 0x12), 'leaf'],
  ];
  for (const [name, build, tolerance] of cases) {
    test(name, () => {
      const m = new Machine(K, 'encoded_fp');
      m.syscall();
      m.call('do_syscall_64', { returnTo: 0x4e });
      m.frame(0x18);
      m.enter('__x64_sys_read', 0xa1, 0);
      m.enter('ksys_read', 0x1c, 0x10);
      const at = build(m);
      const b = m.sample({ at });
      // The builder marks the one frame whose return address is off the bp chain.
      const lost = b.expected.filter((e) => e.tolerated !== undefined);
      assert.equal(lost.length, 1);
      assert.equal(lost[0]!.tolerated, tolerance);
      const c = check(b.sample, ENCODED);
      for (const s of ALL) {
        const r = of(c, s);
        assertFrames(K, r, recoverable(b.expected));
        assert.equal(r.verdict, 'tolerated', `${s}: verdict (reason ${r.reason})`);
        assert.equal(r.unwind.outcome, 'user', `${s}: outcome`);
        assert.equal(r.falseReliable, false, `${s}: falseReliable`);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('a page fault in vfs_read, once per entry layout', () => {
  // Expected per (layout, strategy), from §0/§2.3 and the contract: the decoder(s) of the layout
  // recover vfs_read from pt_regs; a decoder that meets a layout it cannot read stops with
  // pt_regs_not_decoded; fp loses vfs_read (only in regs->ip) in its own way per layout.
  for (const f of FLAVOURS) {
    const decoders: StrategyName[] = f.layout === 'encoded_fp' ? ['encoded_fp', 'section'] : [f.decoder];
    const built = (): { b: BuiltSample; c: SampleCheck } => {
      const { b, ptRegs } = pageFault(f);
      const vfsRead = b.expected.find((e) => e.kind === 'regs')!;
      assert.equal(vfsRead.fn, 'vfs_read');
      assertHex(vfsRead.regsAt, ptRegs, 'truth pt_regs');
      return { b, c: check(b.sample, f) };
    };
    for (const s of decoders) {
      test(`${f.layout} kernel: ${s} recovers vfs_read and names the entry page_fault`, () => {
        const { b, c } = built();
        const r = of(c, s);
        assertExact(f.kernel, r, b);
        assert.equal(r.unwind.frames.find((x) => x.kind === 'regs')?.entry, 'page_fault', `${s}: entry`);
        assert.equal(r.unwind.reliable, false, `${s}: crossed kernel-mode pt_regs`);
        assert.deepEqual(c.disagreements, [], 'the decoders that did not error agree');
      });
    }
    for (const s of ALL.filter((x) => x !== 'fp' && !decoders.includes(x))) {
      test(`${f.layout} kernel: ${s} cannot decode this entry → error pt_regs_not_decoded`, () => {
        const { c } = built();
        assertError(of(c, s), 'pt_regs_not_decoded');
      });
    }
    test(`${f.layout} kernel: fp loses vfs_read`, () => {
      const { b, c } = built();
      const fp = of(c, 'fp');
      const upToStub = b.expected.findIndex((e) => e.kind === 'regs'); // start, exc_page_fault, asm_exc_page_fault
      if (f.layout === 'encoded_fp') {
        // The plain walk meets [P-16] = P|1, an odd "frame pointer" on no stack.
        assertTruncated(K, fp, b, upToStub, 'bad_frame_pointer');
      } else if (f.layout === 'section') {
        // [P-16] is vfs_read's rbp: the walk continues into vfs_read's callers, without vfs_read.
        assert.deepEqual(showAll(K, fp.unwind.frames), showAll(K, b.expected.filter((e) => e.kind !== 'regs')));
        assert.equal(fp.verdict, 'missing_frames');
        assert.equal(fp.reason, 'missing_interrupted_frame');
        assert.deepEqual(fp.missing, ['vfs_read']);
        assert.equal(fp.unwind.outcome, 'user');
      } else {
        // The fake frame at P-16 is walked like any frame: its return address &kernel_entry is
        // reported, and its saved bp leads to vfs_read's frame, so vfs_read itself is lost.
        const ke = KENTRY.kernel.sym('kernel_entry');
        const want = b.expected.map((e) => (e.kind === 'regs' ? { ip: ke, kind: 'call' } : e));
        assert.deepEqual(showAll(KENTRY.kernel, fp.unwind.frames), showAll(KENTRY.kernel, want));
        assert.equal(fp.verdict, 'wrong_frames', 'both a frame missing (vfs_read) and one extra (kernel_entry)');
        assert.equal(fp.reason, 'wrong_frame');
        assert.deepEqual(fp.missing, ['vfs_read']);
        assert.equal(fp.extra.length, 1);
      }
    });
  }

  test('section strategy on a profile without entry-section markers cannot find pt_regs', () => {
    const { b } = pageFault(SECTION);
    const profile = K_NO_MARKERS.profile(['section']);
    const r = of(checkSample(b.sample, profile, ['section']), 'section');
    assertError(r, 'pt_regs_not_decoded');
  });
});

// ---------------------------------------------------------------------------------------------

describe('stack switches', () => {
  for (const f of FLAVOURS) {
    test(`${f.layout} kernel: an IRQ on the IRQ stack interrupting a syscall (irq → task, ends at user)`, () => {
      const m = irqInSyscall(f);
      const b = m.sample({ at: IRQ_SAMPLE_AT });
      assert.deepEqual(b.expected.map((e) => e.stack), ['irq', 'irq', 'irq', 'task', 'task', 'task', 'task', 'task', 'task']);
      const c = check(b.sample, f);
      const r = of(c, f.decoder);
      assertExact(f.kernel, r, b);
      assert.deepEqual(r.unwind.stacks, ['irq', 'task']);
      assert.equal(r.unwind.frames.find((x) => x.kind === 'regs')?.entry, 'irq');
      assert.equal(r.unwind.reliable, false);
      if (f.layout === 'encoded_fp') assertExact(K, of(c, 'section'), b);
      if (f.layout === 'section') {
        const fp = of(c, 'fp');
        assert.equal(fp.verdict, 'missing_frames');
        assert.equal(fp.reason, 'missing_interrupted_frame');
        assert.deepEqual(fp.missing, ['vfs_read']);
      }
    });

    test(`${f.layout} kernel: an NMI on the NMI stack inside that IRQ (nmi → irq → task)`, () => {
      const m = nmiInIrq(f);
      const b = m.sample({ at: NMI_SAMPLE_AT, trigger: 'single-step' });
      assert.deepEqual(
        b.expected.map((e) => `${e.stack}:${e.kind}`),
        ['nmi:start', 'nmi:call', 'nmi:call', 'nmi:regs', 'irq:call', 'irq:call', 'task:call', 'task:regs', 'task:call', 'task:call', 'task:call', 'task:call'],
      );
      const c = check(b.sample, f);
      const r = of(c, f.decoder);
      assertExact(f.kernel, r, b);
      assert.deepEqual(r.unwind.stacks, ['nmi', 'irq', 'task']);
      assert.deepEqual(r.unwind.frames.filter((x) => x.kind === 'regs').map((x) => x.entry), ['nmi', 'irq']);
      assert.equal(r.unwind.reliable, false);
      assert.equal(r.falseReliable, false);
      if (f.layout === 'encoded_fp') {
        assertExact(K, of(c, 'section'), b);
        assert.deepEqual(c.disagreements, []);
      }
    });
  }

  for (const f of FLAVOURS) {
    const others = ALL.filter((s) => s !== 'fp' && s !== f.decoder && !(f.layout === 'encoded_fp' && s === 'section'));
    test(`${f.layout} kernel: ${others.join(', ')} stop at the IRQ and NMI entries with pt_regs_not_decoded`, () => {
      const irq = irqInSyscall(f).sample({ at: IRQ_SAMPLE_AT });
      const nmi = nmiInIrq(f).sample({ at: NMI_SAMPLE_AT, trigger: 'single-step' });
      for (const b of [irq, nmi]) {
        const c = check(b.sample, f, others);
        for (const s of others) assertError(of(c, s), 'pt_regs_not_decoded');
      }
    });
  }

  test('a corrupted IRQ link word that leads back onto the IRQ stack: stack_recursion', () => {
    const m = irqInSyscall(ENCODED);
    const irq = m.get('irq');
    m.poke(irq.end - 8n, irq.end - 0x200n);
    const b = m.sample({ at: IRQ_SAMPLE_AT });
    const c = check(b.sample, ENCODED);
    // handle_irq_event, ret into __common_interrupt, ret into common_interrupt (read at top-16);
    // the next bp is common_interrupt's frame on the task stack, reachable only through the link.
    for (const s of ALL) assertTruncated(K, of(c, s), b, 3, 'stack_recursion');
  });

  test('an IRQ link word that points to no known stack: bad_stack_link', () => {
    const m = irqInSyscall(ENCODED);
    m.poke(m.get('irq').end - 8n, 0xffff888000123000n);
    const b = m.sample({ at: IRQ_SAMPLE_AT });
    const c = check(b.sample, ENCODED);
    for (const s of ALL) assertTruncated(K, of(c, s), b, 3, 'bad_stack_link');
  });

  test('an IRQ link word equal to the task stack\'s end: bad_stack_link (an sp at a stack\'s end is on no stack, §9 rules 1-3)', () => {
    // get_stack_info(next_sp) → in_task_stack(): begin <= sp < end. The end itself is one past
    // the stack's last byte: the kernel finds no next stack there, and neither may the checker.
    const m = irqInSyscall(ENCODED);
    m.poke(m.get('irq').end - 8n, m.get('task').end);
    const b = m.sample({ at: IRQ_SAMPLE_AT });
    const c = check(b.sample, ENCODED);
    for (const s of ALL) assertTruncated(K, of(c, s), b, 3, 'bad_stack_link');
  });

  test('section, indirect stub (the 2016 IRQ path): pt_regs at the address the stub pushed on the IRQ stack', () => {
    // v4.4 `interrupt` macro (reference §2.4): movq %rsp,%rdi (rdi = &pt_regs); switch to the IRQ
    // stack; pushq %rdi; call the handler. The IRQ stack's top word is both the pt_regs pointer
    // and the link back to the task stack; the handler's return into the stub sits right below it.
    const m = new Machine(K, 'section');
    syscallToVfsRead(m);
    const ptRegs = m.interrupt('asm_common_interrupt', { at: 0x93 });
    const link = m.switchToIrqStack(m.stack('irq'));
    assertHex(m.peek(link), ptRegs, 'the IRQ stack top holds &pt_regs');
    m.call('common_interrupt', { returnTo: 0x1e });
    m.frame(0x10);
    m.enter('handle_irq_event', 0x9a, 0x10);
    const b = m.sample({ at: IRQ_SAMPLE_AT });
    const stubRet = b.expected.find((e) => e.kind === 'call' && e.fn === 'asm_common_interrupt')!;
    assert.equal(stubRet.stack, 'irq');
    assertHex(stubRet.slot! + 8n, link, 'pointer word right above the stub return slot');
    const profile = K.profile(['section']);
    const indirect = KernelProfile.fromKallsyms(K.kallsyms, { layouts: ['section'], stubs: { asm_common_interrupt: { offset: 8, indirect: true } } });
    const r = of(checkSample(b.sample, indirect, ['section']), 'section');
    assertExact(K, r, b);
    assert.deepEqual(r.unwind.stacks, ['irq', 'task']);
    assert.equal(r.unwind.frames.find((x) => x.kind === 'regs')?.entry, 'irq');
    // Read directly (not indirectly), the word at slot + 8 is a pointer, not pt_regs: no cs there.
    const direct = of(checkSample(b.sample, profile, ['section']), 'section');
    assert.notEqual(direct.verdict, 'exact');
    // An indirect pointer to no stack is refused.
    const bad = cloneSample(b.sample);
    const irqWin = bad.stacks.find((st) => st.type === 'irq')!.windows[0]!;
    new DataView(irqWin.bytes.buffer, irqWin.bytes.byteOffset).setBigUint64(Number(link - irqWin.start), 0xffff888000123000n, true);
    const rb = of(checkSample(bad, indirect, ['section']), 'section');
    assert.equal(rb.verdict, 'error');
    assert.equal(rb.reason, 'pt_regs_not_decoded');
  });
});

// ---------------------------------------------------------------------------------------------

describe('kthreads end at ret_from_fork', () => {
  for (const f of FLAVOURS) {
    test(`${f.layout} kernel: outcome kthread, last frame = ret_from_fork_asm`, () => {
      const { m, b } = kthread(f);
      const g = taskGeometry(m.get('task'));
      assertHex(m.act('ret_from_fork').bp, g.lastFrame, 'ret_from_fork frame at task_pt_regs - 16');
      // On encoded kernels copy_thread() stored encode_frame_pointer(childregs) as frame->bp, so
      // ret_from_fork saved P|1 — the last-frame rule (checked first, §1.2) must end the walk there.
      assertHex(m.peek(g.lastFrame), f.layout === 'encoded_fp' ? g.ptRegs | 1n : 0n, 'saved bp at the last frame');
      const c = check(b.sample, f);
      for (const s of ALL) {
        const r = of(c, s);
        assertExact(f.kernel, r, b);
        assert.equal(r.unwind.outcome, 'kthread');
      }
    });
  }

  for (const f of FLAVOURS) {
    test(`${f.layout} kernel: a timer interrupt in a kworker (sysvec on the IRQ stack) ends at kthread`, () => {
      const { m } = kthread(f);
      m.interrupt('asm_sysvec_apic_timer_interrupt', { at: 0x214 });
      m.call('sysvec_apic_timer_interrupt', { returnTo: 0x12 });
      m.frame(0x10);
      m.switchToIrqStack(m.stack('irq'));
      m.call('hrtimer_interrupt', { returnTo: 0x61 });
      m.frame(0x28);
      const b = m.sample({ at: 0x118 });
      const r = of(check(b.sample, f, [f.decoder]), f.decoder);
      assertExact(f.kernel, r, b);
      assert.equal(r.unwind.outcome, 'kthread');
      assert.deepEqual(r.unwind.stacks, ['irq', 'task']);
      assert.deepEqual(r.unwind.frames.filter((x) => x.kind === 'regs').map((x) => x.entry), ['timer']);
    });
  }

  test('a sleeping kthread (trigger sched) is reliably unwound', () => {
    const { b } = kthread(ENCODED, 'sched');
    const c = check(b.sample, ENCODED);
    for (const s of ALL) {
      const r = of(c, s);
      assertExact(K, r, b);
      assert.equal(r.unwind.reliable, true, `${s}: §4.1 unwind_done && !unwind_error is success`);
      assert.equal(r.falseReliable, false);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('corrupted chains stop with the kernel check that fails', () => {
  // The chain is vfs_read ← ksys_read ← __x64_sys_read ← do_syscall_64 ← entry_SYSCALL_64.
  // Corrupting the saved bp in ksys_read's frame: vfs_read's frame still yields "ret into
  // ksys_read", ksys_read's frame still yields "ret into __x64_sys_read", then the next bp is bad —
  // three frames (start included) and a stop.
  const savedBpCases: [string, (m: Machine) => bigint, string][] = [
    ['overwritten with ASCII "BBBBBBBB" (even, non-canonical)', () => 0x4242424242424242n, 'bad_frame_pointer'],
    ['pointing off every stack (direct map)', () => 0xffff888003a4be00n, 'bad_frame_pointer'],
    ['straddling the end of the task stack', (m) => m.get('task').end - 8n, 'frame_out_of_bounds'],
    ['null before the bottom of the task stack', () => 0n, 'did_not_reach_end'],
    ['pointing back down to vfs_read’s frame (a loop)', (m) => m.act('vfs_read').bp!, 'frame_not_ascending'],
  ];
  for (const [name, bad, reason] of savedBpCases) {
    test(`saved bp ${name}: ${reason}`, () => {
      const { m } = bodySample(ENCODED);
      m.poke(m.act('ksys_read').bp!, bad(m));
      const b = m.sample({ at: 0x3c });
      const c = check(b.sample, ENCODED);
      for (const s of ALL) assertTruncated(K, of(c, s), b, 3, reason);
    });
  }

  test('saved bp overwritten with odd garbage: a pt_regs tag to FP decoders, undecodable to the others', () => {
    // "AAAAAAAA" has bit 0 set. unwind_frame.c decodes it as pt_regs at 0x4141414141414140, which
    // lies on no stack ⇒ bad_frame_pointer for fp/encoded_fp (update_stack_state fails). By the
    // contract, kernel_entry and section stop with pt_regs_not_decoded on an encoded bp they have
    // no stub return for — never a silently wrong chain.
    const { m } = bodySample(ENCODED);
    m.poke(m.act('ksys_read').bp!, 0x4141414141414141n);
    const b = m.sample({ at: 0x3c });
    const c = check(b.sample, ENCODED);
    for (const s of ['fp', 'encoded_fp'] as const) assertTruncated(K, of(c, s), b, 3, 'bad_frame_pointer');
    for (const s of ['kernel_entry', 'section'] as const) assertError(of(c, s), 'pt_regs_not_decoded');
  });

  test('a return address into data: non_text_return_address, the bogus address is not reported', () => {
    const { m } = bodySample(ENCODED);
    m.poke(m.act('__x64_sys_read').retSlot!, DATA_ADDRESS + 0x10n);
    const b = m.sample({ at: 0x3c });
    const c = check(b.sample, ENCODED);
    for (const s of ALL) {
      const r = of(c, s);
      assertTruncated(K, r, b, 3, 'non_text_return_address');
      assert.ok(!r.unwind.frames.some((x) => x.ip === DATA_ADDRESS + 0x10n));
    }
  });

  test('a window that stops short of the callers: not_captured', () => {
    const { m } = bodySample(ENCODED);
    const task = m.get('task');
    const vfsBp = m.act('vfs_read').bp!;
    // Capture up to the end of vfs_read's frame header: ksys_read's frame is not in the sample.
    const b = m.sample({ at: 0x3c, capture: { task: { from: task.low & ~63n, to: vfsBp + 16n } } });
    const c = check(b.sample, ENCODED);
    for (const s of ALL) assertTruncated(K, of(c, s), b, 2, 'not_captured');
  });

  test('more frames than the limit: depth_limit', () => {
    const { b } = bodySample(ENCODED);
    for (const s of ALL) {
      const u = unwind(b.sample, ENCODED.profile, s, { maxFrames: 3 });
      assert.deepEqual(showAll(K, u.frames), showAll(K, b.expected.slice(0, 3)), `${s}: frames`);
      assert.equal(u.outcome, 'depth_limit', s);
      assert.equal(u.reason, 'depth_limit', s);
      assert.equal(u.reliable, false, `${s}: §4.1 rule 4 (buffer full) is unreliable`);
    }
    const c = checkSample(b.sample, ENCODED.profile, ALL, { maxFrames: 3 });
    for (const s of ALL) assertTruncated(K, of(c, s), b, 3, 'depth_limit');
  });

  test('a sample without registers: no_regs', () => {
    const { b } = bodySample(ENCODED);
    const s = cloneSample(b.sample);
    delete s.regs;
    const c = check(s, ENCODED);
    for (const st of ALL) assertError(of(c, st), 'no_regs');
  });
});

// ---------------------------------------------------------------------------------------------

describe('reliability claims against the truth', () => {
  test('objtool rule violation: an FP-less asm function calls C — reliable, but a frame is silently missing', () => {
    // vfs_read calls nofp_asm_helper, which pushes rbx and calls folio_wait_bit_common without a
    // frame of its own (objtool.txt: "call without frame pointer save/setup"). The return address
    // into vfs_read lives in nofp_asm_helper's area, off the bp chain: folio_wait_bit_common's
    // saved bp is vfs_read's frame, so every walk goes from "ret into nofp_asm_helper" straight to
    // "ret into ksys_read". The task sleeps (trigger sched): no pt_regs crossed, user regs reached
    // ⇒ the strategies claim reliable (§4.1) — wrongly.
    const m = new Machine(K, 'encoded_fp');
    syscallToVfsRead(m);
    m.call('nofp_asm_helper', { returnTo: 0x10b });
    m.noFrame([0xffff888003c1e400n], 8);
    m.enter('folio_wait_bit_common', 0x2b, 0x30);
    m.enter('io_schedule', 0x22f, 0);
    m.enter('schedule', 0x1b, 0x08);
    const b = m.sample({ at: 0x3f, trigger: 'sched' });
    const lost = b.expected.find((e) => e.kind === 'call' && e.fn === 'vfs_read')!;
    assert.equal(lost.tolerated, undefined, 'an objtool violation is not a tolerated window');
    const c = check(b.sample, ENCODED);
    for (const s of ALL) {
      const r = of(c, s);
      assert.deepEqual(showAll(K, r.unwind.frames), showAll(K, b.expected.filter((e) => e !== lost)), `${s}: frames`);
      assert.equal(r.unwind.outcome, 'user', s);
      assert.equal(r.verdict, 'missing_frames', s);
      assert.equal(r.reason, 'missing_caller', s);
      assert.deepEqual(r.missing, ['vfs_read'], s);
      assert.equal(r.unwind.reliable, true, `${s}: claims reliable`);
      assert.equal(r.falseReliable, true, `${s}: falseReliable`);
    }
  });

  test('a sleeping task whose encoded bp was overwritten to point at the syscall pt_regs: encoded_fp and section disagree', () => {
    // The task sleeps inside a page fault (vfs_read faulted, handle_mm_fault waits for the page).
    // The word exc_page_fault saved at P-16 (P|1) is overwritten with task_pt_regs|1.
    // encoded_fp follows the tag (as unwind_frame.c does: decode_frame_pointer, no check that
    // regs == bp + 16) to the user regs and ends there — vfs_read and its callers lost, no kernel
    // pt_regs crossed, valid end ⇒ it claims reliable. section finds pt_regs at the stub return
    // slot + 8, ignoring the tag: exact, but it crossed kernel-mode pt_regs ⇒ unreliable.
    const m = new Machine(K, 'encoded_fp');
    syscallToVfsRead(m);
    const p = m.interrupt('asm_exc_page_fault', { at: 0x7b, errorCode: 0n });
    m.call('exc_page_fault', { returnTo: 0x1e });
    m.frame(0x20);
    m.enter('handle_mm_fault', 0xd4, 0x30);
    m.enter('folio_wait_bit_common', 0x117, 0x30);
    m.enter('io_schedule', 0x22f, 0);
    m.enter('schedule', 0x1b, 0x08);
    m.poke(p - 16n, taskGeometry(m.get('task')).ptRegs | 1n);
    const b = m.sample({ at: 0x3f, trigger: 'sched' });
    const c = check(b.sample, ENCODED);

    const section = of(c, 'section');
    assertExact(K, section, b);
    assert.equal(section.unwind.reliable, false);

    const enc = of(c, 'encoded_fp');
    const stub = b.expected.findIndex((e) => e.kind === 'regs');
    assert.deepEqual(showAll(K, enc.unwind.frames), showAll(K, b.expected.slice(0, stub)));
    assert.equal(enc.unwind.outcome, 'user');
    assert.equal(enc.verdict, 'missing_frames');
    assert.equal(enc.reason, 'missing_interrupted_frame');
    assert.equal(enc.unwind.reliable, true);
    assert.equal(enc.falseReliable, true);

    assertError(of(c, 'kernel_entry'), 'pt_regs_not_decoded');
    const pairs = c.disagreements.map((d) => [...d].sort().join('/'));
    assert.deepEqual(pairs, ['encoded_fp/section']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('invariants over every clean scenario, every strategy, every kernel flavour', () => {
  const scenarios: [string, (f: Flavour) => BuiltSample][] = [
    ['body', (f) => bodySample(f).b],
    ['page fault', (f) => pageFault(f).b],
    ['irq in syscall', (f) => irqInSyscall(f).sample({ at: IRQ_SAMPLE_AT })],
    ['nmi in irq', (f) => nmiInIrq(f).sample({ at: NMI_SAMPLE_AT, trigger: 'single-step' })],
    ['kthread', (f) => kthread(f).b],
  ];
  for (const f of FLAVOURS) {
    for (const [name, build] of scenarios) {
      test(`${f.layout} kernel, ${name}: every reported ip is kernel text; a stop is never reliable`, () => {
        const b = build(f);
        const c = check(b.sample, f);
        for (const r of c.results) {
          // §9 rule 9/10: a reported address must satisfy __kernel_text_address(); regs->ip of
          // kernel-mode pt_regs too. The synthetic kernel's text is exactly its functions.
          for (const fr of r.unwind.frames) {
            assert.ok(f.kernel.nameAt(fr.kind === 'call' ? fr.ip - 1n : fr.ip) !== undefined, `${r.strategy}: ${fr.kind} frame at 0x${fr.ip.toString(16)} is not text`);
          }
          // Every reported frame is a truth frame, in truth order (no invention on clean images).
          const truth = b.expected.map((e) => e.ip);
          let j = 0;
          const fake = f.kernel.functions.get('kernel_entry')?.start;
          for (const fr of r.unwind.frames) {
            if (r.strategy === 'fp' && fr.ip === fake) continue; // fp walks the kernel_entry fake frame (tested above)
            while (j < truth.length && truth[j] !== fr.ip) j++;
            assert.ok(j < truth.length, `${r.strategy}: frame 0x${fr.ip.toString(16)} is not in the truth (in order)`);
            j++;
          }
          if (r.unwind.outcome === 'error') assert.equal(r.unwind.reliable, false, `${r.strategy}: reliable after an error`);
          // Contract: a decoding strategy never returns a silently wrong chain. If it claims a
          // valid end (user regs / kthread top), it must not have lost a non-tolerated frame.
          if (r.strategy !== 'fp' && (r.unwind.outcome === 'user' || r.unwind.outcome === 'kthread')) {
            assert.ok(r.verdict === 'exact' || r.verdict === 'tolerated', `${r.strategy}: ended '${r.unwind.outcome}' with verdict ${r.verdict} (${r.reason})`);
          }
        }
      });
    }
  }
});
