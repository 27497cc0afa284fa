// Entry types: the closed list that labels entry boundaries in frames, verdicts and metrics.
// Named from the entry stub's symbol, as the kernel's own traces show it (asm_exc_page_fault+0x22/0x30).

export const ENTRY_TYPES = [
  'syscall', 'page_fault', 'irq', 'timer', 'nmi', 'debug', 'int3', 'machine_check', 'double_fault',
  'general_protection', 'exception', 'unknown',
] as const;
export type EntryType = (typeof ENTRY_TYPES)[number];

/** How the kernel's messages say it: "page fault, RIP=..." */
export const ENTRY_TITLE: Readonly<Record<EntryType, string>> = {
  syscall: 'syscall', page_fault: 'page fault', irq: 'interrupt', timer: 'timer interrupt', nmi: 'NMI',
  debug: 'debug exception', int3: 'int3', machine_check: 'machine check', double_fault: 'double fault',
  general_protection: 'general protection fault', exception: 'exception', unknown: 'kernel entry',
};

// Modern stubs are asm_exc_* / asm_sysvec_* / asm_common_interrupt (v5.8+); older kernels named
// them page_fault, apic_timer_interrupt, common_interrupt, nmi, general_protection, ... (v4.4).
const RULES: [RegExp, EntryType][] = [
  [/page_fault/, 'page_fault'],
  [/apic_timer|timer_interrupt/, 'timer'],
  [/nmi/, 'nmi'],
  [/int3/, 'int3'],
  [/debug/, 'debug'],
  [/machine_check/, 'machine_check'],
  [/double_fault/, 'double_fault'],
  [/general_protection/, 'general_protection'],
  [/syscall|system_call/i, 'syscall'],
  [/interrupt|irq_entries|sysvec/, 'irq'],
  [/^(?:asm_exc_|exc_)/, 'exception'],
];

export function entryTypeOfStub(name: string): EntryType {
  for (const [re, t] of RULES) if (re.test(name)) return t;
  return 'exception';
}

export function isEntryType(s: string): s is EntryType {
  return (ENTRY_TYPES as readonly string[]).includes(s);
}
