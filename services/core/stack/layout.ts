// Layout constants of x86-64 Linux that both the emulator and the unwinders use, and nothing else.
// Sources: arch/x86/include/asm/ptrace.h (struct pt_regs), page_64_types.h (stack sizes),
// arch/x86/include/asm/stacktrace.h (enum stack_type), unwind.h (IRET_FRAME_OFFSET).

/** struct pt_regs field order; offset = index * 8. */
export const PT_REGS_FIELDS = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8',
  'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip', 'cs', 'flags', 'sp', 'ss',
] as const;
export type PtRegsField = (typeof PT_REGS_FIELDS)[number];

export const PT_REGS_SIZE = 168;
export const PT_REGS_WORDS = 21;
export const PT_REGS_OFFSET: Readonly<Record<PtRegsField, number>> = Object.freeze(
  Object.fromEntries(PT_REGS_FIELDS.map((f, i) => [f, i * 8])) as Record<PtRegsField, number>,
);
/** offsetof(struct pt_regs, ip): where the hardware (IRET) frame starts. */
export const IRET_FRAME_OFFSET = 128;
export const IRET_FRAME_SIZE = 40;

/** struct stack_frame { next_frame; return_address; } */
export const FRAME_HEADER_SIZE = 16;
export const WORD = 8;

export const KERNEL_CS = 0x10n;
export const KERNEL_DS = 0x18n;
export const USER_CS = 0x33n;
export const USER_DS = 0x2bn;
/** X86_EFLAGS_FIXED: bit 1 of RFLAGS always reads as 1. */
export const EFLAGS_FIXED = 0x2n;
export const EFLAGS_IF = 0x200n;

/** Stack types, in the kernel's words. x86-64 has no separate softirq stack. */
export const STACK_TYPES = ['task', 'irq', 'nmi', 'db', 'mce', 'df', 'entry'] as const;
export type StackType = (typeof STACK_TYPES)[number];

/** Names the kernel prints between < > in a trace (stack_type_name()). */
export const STACK_TYPE_NAME: Readonly<Record<StackType, string>> = {
  task: 'TASK', irq: 'IRQ', nmi: 'NMI', db: '#DB', mce: '#MC', df: '#DF', entry: 'ENTRY_TRAMPOLINE',
};

/** Exception stacks reached through the IST: the hardware frame sits at their very top. */
export const IST_STACK_TYPES: ReadonlySet<StackType> = new Set(['nmi', 'db', 'mce', 'df']);

export const PAGE_SIZE = 4096;

/**
 * Stack sizes: THREAD_SIZE and IRQ_STACK_SIZE are PAGE_SIZE << (2 + KASAN_STACK_ORDER),
 * EXCEPTION_STKSZ is PAGE_SIZE << KASAN_STACK_ORDER; the entry stack is one page.
 */
export function stackSize(type: StackType, kasan = false): number {
  const k = kasan ? 1 : 0;
  switch (type) {
    case 'task':
    case 'irq':
      return PAGE_SIZE << (2 + k);
    case 'entry':
      return PAGE_SIZE;
    default:
      return PAGE_SIZE << k;
  }
}

/**
 * How a stack links to the one it interrupted, as bytes below the stack's end (top):
 * - IRQ stack: the interrupted rsp is written to its top word before the switch
 *   (arch/x86/include/asm/irq_stack.h; dumpstack_64.c in_irq_stack: next_sp = *(end - 1));
 * - IST stacks: the CPU pushes the hardware frame (ss, rsp, rflags, cs, rip) at the very top;
 *   its saved rsp is the second word from the top (in_exception_stack: ((pt_regs *)end - 1)->sp).
 * Task and entry stacks link to nothing.
 */
export const IRQ_LINK_FROM_TOP = 8;
export const IST_LINK_FROM_TOP = 16;

export function linkFromTop(type: StackType): number | undefined {
  if (type === 'irq') return IRQ_LINK_FROM_TOP;
  if (IST_STACK_TYPES.has(type)) return IST_LINK_FROM_TOP;
  return undefined;
}

/** user_mode(regs) on x86-64: the requested privilege level in cs is not 0. */
export function userMode(cs: bigint): boolean {
  return (cs & 3n) !== 0n;
}
