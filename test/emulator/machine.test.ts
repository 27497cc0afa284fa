// The emulated CPU against the hardware and entry-code rules it models, read from its own machine
// state (stack bytes, the entry records), with no unwinder involved:
// - an IDT entry without IST aligns RSP to 16 before pushing the iret frame (Intel SDM §6.14.2),
//   so pt_regs of such an entry sit at ≡ 8 (mod 16) (reference kernel-unwinders.md §9 rule 8);
// - a kernel-mode NMI's pt_regs are the "outermost" copy of the hardware frame, at the NMI stack
//   top − 264, not − 168 (§2.5).
// Each test failed once with its rule removed from services/emulator/machine.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildKernel, LAYOUTS, type KernelImage } from '../../services/emulator/image.ts';
import { Machine, type Act } from '../../services/emulator/machine.ts';
import { KERNEL_CS, KERNEL_DS, PT_REGS_OFFSET, PT_REGS_SIZE } from '../../services/core/stack/layout.ts';

const mod16 = (x: number): number => ((x % 16) + 16) % 16;
const HW_FRAME = 5 * 8; // SS, RSP, RFLAGS, CS, RIP

/** A machine in a syscall, stopped at instruction k of do_syscall_64. */
function inSyscall(k: KernelImage, insn: number): Machine {
  const m = new Machine(k);
  m.reset(0, 4242);
  m.syscall();
  m.callAt(k.fn('entry_SYSCALL_64').stub!.callIdx);
  m.runTo(insn);
  return m;
}

for (const stub of ['asm_exc_page_fault', 'asm_common_interrupt'] as const) {
  test(`${stub} from kernel mode: rsp aligned to 16 before the iret frame; pt_regs at ≡ 8 (mod 16)`, () => {
    const k = buildKernel({ layout: 'section' });
    const f = k.fn('do_syscall_64');
    const parities = new Set<number>();
    for (let insn = 0; insn < f.ops.length; insn++) {
      const m = inSyscall(k, insn);
      const fromSp = m.rsp;
      const ip = m.ip();
      parities.add(mod16(fromSp));
      const s: Act = m.interrupt(stub, 2);
      const e = s.entry!;
      const aligned = fromSp - mod16(fromSp);
      // The CPU's pushes start at the aligned rsp: SS at aligned − 8, the interrupted (unaligned)
      // RSP below it, …, RIP at aligned − 40; pt_regs->ip is that RIP.
      assert.equal(m.cur.read(aligned - 8), Number(KERNEL_DS), `insn ${insn}: SS at the aligned top`);
      assert.equal(m.cur.read(aligned - 16), fromSp, `insn ${insn}: the saved RSP is the interrupted rsp, unaligned`);
      assert.equal(m.cur.read(aligned - 32), Number(KERNEL_CS), `insn ${insn}: CS`);
      assert.equal(m.cur.read(aligned - 40), ip, `insn ${insn}: RIP`);
      assert.equal(e.regsAt, aligned - HW_FRAME - PT_REGS_OFFSET.ip, `insn ${insn}: pt_regs right below the iret frame`);
      assert.equal(mod16(e.regsAt), 8, `insn ${insn}: pt_regs base ≡ 8 (mod 16)`);
      assert.equal(e.regsAt + PT_REGS_SIZE, aligned);
    }
    assert.deepEqual([...parities].sort(), [0, 8], 'entries taken at both rsp alignments');
  });
}

for (const layout of LAYOUTS) {
  test(`${layout}: a kernel-mode NMI's pt_regs are the outermost copy, at the NMI stack top − 264, as the stub builds them`, () => {
    const k = buildKernel({ layout });
    const f = k.fn('do_syscall_64');
    const insn = f.frameFrom + 1;
    const m = inSyscall(k, insn);
    const fromSp = m.rsp;
    const ip = m.ip();
    const rbp = m.rbp;
    const s = m.interrupt('asm_exc_nmi');
    const e = s.entry!;
    const nmi = m.stacks.nmi;
    // Top down (entry_64.S): hardware frame (5 words), temp rdx, "NMI executing", the "iret"
    // copy (5), the "outermost" copy (5) = pt_regs->ip..ss; the rest of pt_regs below that.
    assert.equal(e.regsAt, nmi.end - (5 + 2 + 5 + 5) * 8 - PT_REGS_OFFSET.ip);
    assert.equal(e.regsAt, nmi.end - 264);
    // Run the stub up to its call of the C handler: pt_regs must then be complete at regsAt.
    m.runTo(s.fn.stub!.callIdx);
    const field = (name: keyof typeof PT_REGS_OFFSET): number => nmi.read(e.regsAt + PT_REGS_OFFSET[name]);
    assert.equal(field('ip'), ip);
    assert.equal(field('cs'), Number(KERNEL_CS));
    assert.equal(field('sp'), fromSp);
    assert.equal(field('ss'), Number(KERNEL_DS));
    assert.equal(field('orig_ax'), -1, 'orig_ax = -1: the NMI stub pushed it right below the outermost copy');
    assert.equal(field('bp'), rbp, 'pt_regs->bp holds the interrupted rbp');
    if (layout === 'encoded_fp') assert.equal(m.rbp, e.regsAt + 1, 'ENCODE_FRAME_POINTER: rbp = &pt_regs | 1');
  });
}
