// The kernel's own trace against the project's unwind of the same instant (issue 18, part 2): one
// boot each of the encoded and the section-stock kernels (scripts/build-fp-kernel.sh), sysrq 't'
// from a serial break while dd runs in the kernel, the guest stopped at show_stack for dd.
// The expectations are the kernel's rules, checked against the sampled memory: the interrupt's
// pt_regs sit where the entry stub's call to its C handler put them (the stub's return address
// right below them), their cs says kernel mode and their ip is the interrupted instruction; a
// RIP block is the unwinder having found those pt_regs; on the section design the C handler's
// saved %rbp is 0 (CLEAR_REGS, no encoding), so the stock unwinder's chain ends there with its
// "bad value" warning.
// Skips when a kernel is not built or QEMU is missing (STACKSANITY_FPKERNEL_CACHE names the cache).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { builtFpKernel } from '../../services/realkernel/fp-kernel.ts';
import { ownKernelUnavailable } from '../../services/realkernel/own-kernel.ts';
import { captureInstant, type InstantCapture } from '../../services/realkernel/instant-trace.ts';

const BAD_BP = /WARNING: kernel stack frame pointer at \S+ in \S+ has bad value 0+$/;

function skipReason(variant: string): string | undefined {
  const k = builtFpKernel(variant);
  if (!k) return `skipped: the ${variant} kernel is not built (STACKSANITY_FPKERNEL_CACHE=… bash scripts/build-fp-kernel.sh --design all --unwinder all)`;
  const q = ownKernelUnavailable();
  return q ? `skipped: ${q}` : undefined;
}

async function capture(variant: string): Promise<InstantCapture> {
  const k = builtFpKernel(variant)!;
  const r = await captureInstant({ kernel: k.image, vmlinux: k.vmlinux, variant });
  assert.equal(r.skipped, undefined, `${variant}: ${r.skipped}`);
  return r;
}

/** The reliable lines below the interrupt stub: frames and RIP blocks, no guesses, no marker. */
const reliable = (trace: readonly string[]): string[] => trace.slice(1).filter((l) => !l.startsWith('? ') && !/\(kernel_entry\)$/.test(l));

describe('encoded: the kernel and the project read the same instant alike', { skip: skipReason('encoded') ?? false }, () => {
  test('the kernel\'s reliable frames below the interrupt are the project\'s encoded_fp frames, down to the syscall\'s user pt_regs', async (t) => {
    const r = await capture('encoded');
    t.diagnostic(r.verdict);
    const i = r.interrupted!;
    // The interrupt came in on dd in kernel mode: the stub's return address is into the IRQ stub,
    // and the pt_regs above it hold a kernel cs.
    assert.match(i.stubReturn, /^asm_common_interrupt\+/);
    assert.equal(BigInt(`0x${i.cs}`) & 3n, 0n);
    // The encoded design's entry code wrote &pt_regs|1 into %rbp: the stock unwinder finds the
    // pt_regs and prints their ip as the RIP block, first below the stub.
    assert.equal(r.kernelRipBlock, true);
    const kernel = reliable(r.kernelTrace);
    assert.equal(kernel[0], `RIP: ${i.fn}`);
    // …and walks on from regs->bp to the syscall's user pt_regs at the top of dd's stack.
    assert.equal(r.kernelTrace.at(-1), '(user)');
    assert.ok(kernel.includes('do_syscall_64'), kernel.join(' | '));
    assert.deepEqual(r.kernelWarnings, []);
    // The project's encoded_fp walk of the sampled memory: the same frames, in the same order.
    assert.deepEqual(reliable(r.projectTrace), kernel);
    const enc = r.strategies!.find((s) => s.strategy === 'encoded_fp')!;
    assert.equal(enc.outcome, 'user');
    assert.equal(enc.agree, true);
  });
});

describe('section-stock: the stock unwinder loses the interrupted context, the section strategy does not', { skip: skipReason('section-stock') ?? false }, () => {
  test('the kernel warns about the 0 frame pointer and prints no RIP block; the project\'s section strategy recovers the interrupted function', async (t) => {
    const r = await capture('section-stock');
    t.diagnostic(r.verdict);
    const i = r.interrupted!;
    assert.match(i.stubReturn, /^asm_common_interrupt\+/);
    assert.equal(BigInt(`0x${i.cs}`) & 3n, 0n, 'the interrupt was taken in kernel mode');
    // common_interrupt's saved %rbp is 0: the chain ends there, with the warning (printed once per
    // boot: this boot's first kernel-mode dump is this one).
    assert.ok(r.kernelWarnings.some((w) => BAD_BP.test(w)), r.kernelWarnings.join(' | '));
    assert.equal(r.kernelRipBlock, false);
    assert.ok(!r.kernelTrace.some((l) => l.startsWith('RIP: ')));
    // Everything below the stub is a guess; the interrupted function at best one of them.
    assert.deepEqual(reliable(r.kernelTrace), []);
    // The section rule: the stub's return address is in the entry text, so pt_regs are right above
    // it — where the sampled memory has them, holding the interrupted ip.
    const proj = reliable(r.projectTrace);
    assert.equal(proj[0], `RIP: ${i.fn}`);
    assert.ok(proj.includes('do_syscall_64'), proj.join(' | '));
    assert.equal(r.projectTrace.at(-1), '(user)');
    const sec = r.strategies!.find((s) => s.strategy === 'section')!;
    assert.equal(sec.outcome, 'user');
    // Its frames below the RIP are the ones the kernel could only guess at: the scan prints every
    // text word on the stack, the pt_regs' ip word and each return slot included.
    const guessed = new Set(r.kernelTrace.filter((l) => l.startsWith('? ')).map((l) => l.slice(2)));
    const ip = BigInt(`0x${i.ip}`);
    assert.ok(r.kernelElements!.some((e) => e.kind === 'guess' && BigInt(`0x${e.addr}`) === ip), `the interrupted ${i.fn} (${i.ip}) is not even a guess`);
    for (const f of proj.slice(1).filter((l) => l !== '(user)')) assert.ok(guessed.has(f), `${f} is not among the kernel's guesses`);
  });
});
