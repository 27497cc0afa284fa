// The kernel image model: functions made of x86-64 instructions with real lengths, laid out in
// .text, .entry.text (IDT stubs between the __irqentry_text markers, v5.8+) and
// .softirqentry.text, emitted as kallsyms text so that a build goes through the same parser as a
// real kernel's. Only the instructions that touch rsp, rbp or stack memory have semantics; the
// rest are bodies of the right length. Entry stubs are written per entry layout (reference
// kernel-unwinders.md §0, §2.3–2.5).
import { createHash } from 'node:crypto';
import { PT_REGS_FIELDS, type StackType } from '../core/stack/layout.ts';
import { Rng, hashString } from './rng.ts';

export type Layout = 'kernel_entry' | 'section' | 'encoded_fp';
export const LAYOUTS: readonly Layout[] = ['kernel_entry', 'section', 'encoded_fp'];

// Opcodes. Lengths are those of the real encodings (push %rbp = 55, mov %rsp,%rbp = 48 89 e5, ...).
export const NOP = 0; // body instruction without stack effect
export const MEM = 1; // body instruction that touches memory: a page fault can be raised here
export const PUSH_RBP = 2;
export const MOV_RBP = 3; // mov %rsp,%rbp
export const SUB_RSP = 4;
export const ADD_RSP = 5;
export const PUSH_REG = 6; // push of a callee-saved register (or a stub's scratch push)
export const POP_REG = 7;
export const LEAVE = 8;
export const POP_RBP = 9;
export const RET = 10;
export const CALL = 11;
export const PUSH_IMM = 12; // pushq $imm (orig_ax slot)
export const PUSH_GPR = 13; // PUSH_AND_CLEAR_REGS, one register (arg = pt_regs field index)
export const ENCODE = 14; // lea 1(%rsp),%rbp — ENCODE_FRAME_POINTER
export const PUSH_KE = 15; // pushq $kernel_entry — the 2016 fake return address
export const POP_GPR = 16; // POP_REGS, one register
export const IRET = 17;
export const PUSH_HW_COPY = 18; // NMI: pushq N(%rsp) copying a hardware-frame word (arg = field offset)
export const IRQ_LINK = 19; // mov %rsp,(%r11): the link word at the IRQ stack top
export const IRQ_SWITCH = 20; // mov %r11,%rsp
export const POP_RSP = 21; // popq %rsp: back to the interrupted stack
export const SWITCH_TASK = 22; // movq PER_CPU(cpu_current_top_of_stack),%rsp
export const PUSH_USER = 23; // syscall entry pushes the user iret frame (arg = pt_regs field index)
export const CLEAR_RBP = 24; // xor %ebp,%ebp
export const SYSRET = 25;
export const JMP = 26;
export const USER_STACK_OP = 27; // syscall entry before the stack switch (rsp is still the user's)
export const SYNC_REGS = 28; // from user mode: call sync_regs; mov %rax,%rsp — pt_regs move from the entry stack to the task stack

/**
 * The opcodes as one object: modules that switch on them destructure it once at load, because
 * under tsx (esbuild, CommonJS interop) every imported binding is a getter call per use.
 */
export const OPS = { NOP, MEM, PUSH_RBP, MOV_RBP, SUB_RSP, ADD_RSP, PUSH_REG, POP_REG, LEAVE, POP_RBP, RET, CALL, PUSH_IMM, PUSH_GPR, ENCODE, PUSH_KE, POP_GPR, IRET, PUSH_HW_COPY, IRQ_LINK, IRQ_SWITCH, POP_RSP, SWITCH_TASK, PUSH_USER, CLEAR_RBP, SYSRET, JMP, USER_STACK_OP, SYNC_REGS } as const;

const OP_NAMES = [
  'nop', 'mem', 'push %rbp', 'mov %rsp,%rbp', 'sub $n,%rsp', 'add $n,%rsp', 'push %reg', 'pop %reg', 'leave',
  'pop %rbp', 'ret', 'call', 'pushq $imm', 'push %gpr', 'lea 1(%rsp),%rbp', 'pushq $kernel_entry', 'pop %gpr',
  'iretq', 'pushq N(%rsp)', 'mov %rsp,(%r11)', 'mov %r11,%rsp', 'popq %rsp', 'mov top,%rsp', 'push user',
  'xor %ebp,%ebp', 'sysretq', 'jmp', 'swapgs/mov', 'call sync_regs',
];
export function opName(op: number): string {
  return OP_NAMES[op] ?? `op${op}`;
}

export type Section = 'text' | 'entry' | 'irqentry' | 'softirqentry';

/** What an entry stub is, for the CPU and the ground truth. */
export interface StubInfo {
  /** Entry type as the truth names it (services/core/symbols/entry-types.ts). */
  entry: string;
  /** IST stack the CPU switches to, if any. */
  ist?: StackType;
  /** The CPU pushes an error code (page fault, double fault). */
  errorCode: boolean;
  /** Instruction index of the call to the C handler. */
  callIdx: number;
  /**
   * Boundaries [markFrom, markTo] in which this layout's marker is in place (rbp = &pt_regs|1, or
   * the kernel_entry frame is the current frame); -1 when the layout has none (section).
   */
  markFrom: number;
  markTo: number;
  /** Offset from the handler's return slot to pt_regs (section layout). */
  regsOffset: number;
}

export interface Func {
  name: string;
  section: Section;
  /** Address in signed form (exact: text is in the top 2 GiB). */
  addr: number;
  size: number;
  ops: number[];
  offs: number[];
  lens: number[];
  args: number[];
  /** Callee names of CALL instructions (resolved to functions in `targets`). */
  callNames: (string | undefined)[];
  targets: (Func | undefined)[];
  /** A C function with push %rbp; mov %rsp,%rbp. */
  framed: boolean;
  /** Boundary at which the frame is complete (after mov %rsp,%rbp), and the teardown instruction. */
  frameFrom: number;
  frameTo: number;
  /** Entry stubs (IDT, syscall, ret_from_fork_asm, head code). */
  stub?: StubInfo;
  /** Runs the rest of the handler on the IRQ stack (call_on_irqstack). */
  irqSwitch: boolean;
  /** Indices of CALL instructions. */
  calls: number[];
  /** Indices of MEM instructions. */
  mems: number[];
}

/** Shapes of the C side: callees, locals, callee-saved pushes. */
interface Shape {
  calls: string[];
  locals?: number;
  leaf?: boolean;
  mem?: number;
  irqSwitch?: boolean;
  section?: Section;
  /** Recursive function (stack overflow scenario): calls itself. */
  recursive?: boolean;
}

// A kernel-like call graph: syscall paths, page-fault handling, timer and device IRQs, softirq,
// NMI, #DB/#MC/#DF handlers, kthreads ending at ret_from_fork, the idle loop.
const C_FUNCS: [string, Shape][] = [
  ['do_syscall_64', { calls: ['x64_sys_call'], locals: 0x18 }],
  ['x64_sys_call', { calls: ['__x64_sys_read', '__x64_sys_write', '__x64_sys_openat', '__x64_sys_futex', '__x64_sys_getdents64'] }],
  ['__x64_sys_read', { calls: ['ksys_read'] }],
  ['ksys_read', { calls: ['fdget_pos', 'vfs_read'], locals: 0x10 }],
  ['fdget_pos', { calls: [], mem: 2 }],
  ['vfs_read', { calls: ['rw_verify_area', 'seq_read', 'new_sync_read'], locals: 0x28, mem: 1 }],
  ['rw_verify_area', { calls: ['security_file_permission'] }],
  ['security_file_permission', { calls: [], mem: 1 }],
  ['seq_read', { calls: ['seq_read_iter'], locals: 0x20 }],
  ['seq_read_iter', { calls: ['proc_single_show', 'copy_page_to_iter'], locals: 0x30, mem: 1 }],
  ['proc_single_show', { calls: ['seq_printf'] }],
  ['seq_printf', { calls: ['seq_vprintf'], locals: 0x50 }],
  ['seq_vprintf', { calls: ['vsnprintf'] }],
  ['vsnprintf', { calls: ['memcpy'], locals: 0x40, mem: 2 }],
  ['new_sync_read', { calls: ['ext4_file_read_iter'], locals: 0x48 }],
  ['ext4_file_read_iter', { calls: ['filemap_read'] }],
  ['filemap_read', { calls: ['filemap_get_pages', 'copy_page_to_iter'], locals: 0x88, mem: 1 }],
  ['filemap_get_pages', { calls: ['folio_wait_bit_common'], locals: 0x20 }],
  ['folio_wait_bit_common', { calls: ['io_schedule'], locals: 0x38 }],
  ['io_schedule', { calls: ['schedule'] }],
  ['copy_page_to_iter', { calls: ['copy_user_generic'], mem: 1 }],
  ['__x64_sys_write', { calls: ['ksys_write'] }],
  ['ksys_write', { calls: ['vfs_write'], locals: 0x10 }],
  ['vfs_write', { calls: ['ext4_buffered_write_iter'], locals: 0x28 }],
  ['ext4_buffered_write_iter', { calls: ['generic_perform_write'] }],
  ['generic_perform_write', { calls: ['copy_page_from_iter_atomic', 'ext4_da_write_end'], locals: 0x40 }],
  ['copy_page_from_iter_atomic', { calls: ['copy_user_generic'], mem: 1 }],
  ['ext4_da_write_end', { calls: ['mark_buffer_dirty'] }],
  ['mark_buffer_dirty', { calls: [], mem: 2 }],
  ['__x64_sys_openat', { calls: ['do_sys_openat2'] }],
  ['do_sys_openat2', { calls: ['getname_flags', 'do_filp_open'], locals: 0x30 }],
  ['getname_flags', { calls: ['kmem_cache_alloc', 'copy_user_generic'] }],
  ['kmem_cache_alloc', { calls: [], mem: 3 }],
  ['do_filp_open', { calls: ['path_openat'], locals: 0xc8 }],
  ['path_openat', { calls: ['link_path_walk', 'do_open'], locals: 0x18 }],
  ['link_path_walk', { calls: ['walk_component'], locals: 0x30, mem: 1 }],
  ['walk_component', { calls: ['lookup_fast'] }],
  ['lookup_fast', { calls: [], mem: 2 }],
  ['do_open', { calls: ['vfs_open'] }],
  ['vfs_open', { calls: [], mem: 1 }],
  ['__x64_sys_getdents64', { calls: ['iterate_dir'] }],
  ['iterate_dir', { calls: ['dentry_walk_nested'] }],
  // Recursive with a large on-stack buffer: the stack overflow scenario.
  ['dentry_walk_nested', { calls: ['dentry_walk_nested'], locals: 0x3f0, mem: 1, recursive: true }],
  ['__x64_sys_futex', { calls: ['do_futex'] }],
  ['do_futex', { calls: ['futex_wait'], locals: 0x10 }],
  ['futex_wait', { calls: ['futex_wait_queue'], locals: 0x60 }],
  ['futex_wait_queue', { calls: ['schedule'] }],
  ['schedule', { calls: ['__schedule'] }],
  ['__schedule', { calls: ['__switch_to_asm'], locals: 0x30, mem: 1 }],
  // Page faults.
  ['exc_page_fault', { calls: ['do_user_addr_fault'], locals: 0x10 }],
  ['do_user_addr_fault', { calls: ['handle_mm_fault'], locals: 0x20 }],
  ['handle_mm_fault', { calls: ['__handle_mm_fault'] }],
  ['__handle_mm_fault', { calls: ['do_anonymous_page'], locals: 0x70 }],
  ['do_anonymous_page', { calls: ['clear_page_erms'], locals: 0x10 }],
  // Timer interrupt (runs on the IRQ stack), softirq on irq exit.
  ['sysvec_apic_timer_interrupt', { calls: ['__sysvec_apic_timer_interrupt', 'irq_exit_rcu'], irqSwitch: true }],
  ['__sysvec_apic_timer_interrupt', { calls: ['hrtimer_interrupt'] }],
  ['hrtimer_interrupt', { calls: ['__hrtimer_run_queues'], locals: 0x18 }],
  ['__hrtimer_run_queues', { calls: ['tick_sched_timer'], locals: 0x20 }],
  ['tick_sched_timer', { calls: ['update_process_times'] }],
  ['update_process_times', { calls: ['scheduler_tick'] }],
  ['scheduler_tick', { calls: ['task_tick_fair'], locals: 0x10 }],
  ['task_tick_fair', { calls: [], mem: 2 }],
  ['irq_exit_rcu', { calls: ['__do_softirq'] }],
  ['__do_softirq', { calls: ['run_timer_softirq', 'net_rx_action'], locals: 0x28, section: 'softirqentry' }],
  ['run_timer_softirq', { calls: ['call_timer_fn'] }],
  ['call_timer_fn', { calls: [], mem: 1 }],
  ['net_rx_action', { calls: ['e1000_clean'], locals: 0x38 }],
  ['e1000_clean', { calls: [], mem: 2 }],
  // Device interrupt.
  ['common_interrupt', { calls: ['__common_interrupt'], irqSwitch: true }],
  ['__common_interrupt', { calls: ['handle_edge_irq'] }],
  ['handle_edge_irq', { calls: ['handle_irq_event'] }],
  ['handle_irq_event', { calls: ['__handle_irq_event_percpu'] }],
  ['__handle_irq_event_percpu', { calls: ['e1000_intr'], locals: 0x10 }],
  ['e1000_intr', { calls: [], mem: 2 }],
  // NMI, #DB, #MC, #DF.
  ['exc_nmi', { calls: ['default_do_nmi'] }],
  ['default_do_nmi', { calls: ['nmi_handle'], locals: 0x10 }],
  ['nmi_handle', { calls: ['perf_event_nmi_handler'] }],
  ['perf_event_nmi_handler', { calls: ['x86_pmu_handle_irq'] }],
  ['x86_pmu_handle_irq', { calls: ['native_read_msr'], locals: 0x20 }],
  ['exc_debug', { calls: ['notify_debug'] }],
  ['notify_debug', { calls: [], mem: 1 }],
  ['exc_machine_check', { calls: ['do_machine_check'] }],
  ['do_machine_check', { calls: [], locals: 0x40, mem: 1 }],
  ['exc_double_fault', { calls: ['handle_stack_overflow'] }],
  ['handle_stack_overflow', { calls: [], mem: 1 }],
  // kthreads.
  ['ret_from_fork', { calls: ['kthread'] }],
  ['kthread', { calls: ['worker_thread', 'smpboot_thread_fn'], locals: 0x10 }],
  ['worker_thread', { calls: ['process_one_work', 'schedule'], locals: 0x10 }],
  ['process_one_work', { calls: ['vmstat_update', 'flush_to_ldisc'], locals: 0x30 }],
  ['vmstat_update', { calls: ['refresh_cpu_vm_stats'] }],
  ['refresh_cpu_vm_stats', { calls: [], locals: 0x20, mem: 2 }],
  ['flush_to_ldisc', { calls: ['memcpy'], mem: 1 }],
  ['smpboot_thread_fn', { calls: ['run_ksoftirqd', 'schedule'] }],
  ['run_ksoftirqd', { calls: ['__do_softirq'] }],
  // The idle loop.
  ['start_secondary', { calls: ['cpu_startup_entry'] }],
  ['cpu_startup_entry', { calls: ['do_idle'] }],
  ['do_idle', { calls: ['cpuidle_idle_call'], locals: 0x10 }],
  ['cpuidle_idle_call', { calls: ['default_idle_call'] }],
  ['default_idle_call', { calls: ['arch_cpu_idle'] }],
  ['arch_cpu_idle', { calls: ['default_idle'] }],
  ['default_idle', { calls: ['native_safe_halt'] }],
  // Frameless leaves (asm or frame omitted).
  ['copy_user_generic', { calls: [], leaf: true, mem: 3 }],
  ['memcpy', { calls: [], leaf: true, mem: 2 }],
  ['clear_page_erms', { calls: [], leaf: true, mem: 1 }],
  ['native_read_msr', { calls: [], leaf: true }],
  ['native_safe_halt', { calls: [], leaf: true }],
];

/** An asm function that calls on without a frame (objtool rule 3): inserted by the no_frame_pointer fault. */
const NOFP_THUNKS: [string, string, string][] = [
  // [thunk, caller, callee]
  ['seq_show_thunk', 'seq_read_iter', 'proc_single_show'],
  ['futex_asm_thunk', 'do_futex', 'futex_wait'],
  ['work_asm_thunk', 'process_one_work', 'vmstat_update'],
];

/** IDT stubs: [symbol, entry type, C handler, error code, IST stack]. */
const IDT_STUBS: [string, string, string, boolean, StackType | undefined][] = [
  ['asm_exc_page_fault', 'page_fault', 'exc_page_fault', true, undefined],
  ['asm_exc_debug', 'debug', 'exc_debug', false, 'db'],
  ['asm_exc_double_fault', 'double_fault', 'exc_double_fault', true, 'df'],
  ['asm_exc_machine_check', 'machine_check', 'exc_machine_check', false, 'mce'],
  ['asm_common_interrupt', 'irq', 'common_interrupt', false, undefined],
  ['asm_sysvec_apic_timer_interrupt', 'timer', 'sysvec_apic_timer_interrupt', false, undefined],
  ['asm_exc_nmi', 'nmi', 'exc_nmi', false, 'nmi'],
];

export interface BuildFaults {
  /** Asm thunks without frames on some call paths. */
  noFramePointer?: boolean;
  /** kernel_entry builds: the device-IRQ stub does not push the kernel_entry frame. */
  missingKernelEntry?: boolean;
  /** The timer stub is linked into plain .text, outside the entry section. */
  stubOutsideSection?: boolean;
}

export interface ProfileJson {
  layouts: Layout[];
  stubs?: Record<string, { entry?: string; offset?: number; indirect?: boolean }>;
}

export interface KernelImage {
  buildId: string;
  /** The entry code this build runs. */
  layout: Layout;
  /** What the build's profile declares (the encoded_fp build of 'all' fleets also has 'section'). */
  profile: ProfileJson;
  faults: BuildFaults;
  kallsyms: string;
  funcs: Func[];
  byName: Map<string, Func>;
  /** Address (signed) of the dummy kernel_entry, when the build has one. */
  kernelEntry: number;
  /** Entry-text range (signed), for "is this ip in entry code". */
  entryStart: number;
  entryEnd: number;
  fn(name: string): Func;
}

const TEXT_BASE = -0x7f000000; // 0xffffffff81000000
const ENTRY_BASE = -0x7e200000; // 0xffffffff81e00000
const ETEXT = -0x7e1f0000; // 0xffffffff81e10000

/** Lengths of plain body instructions: what compilers emit, 2..7 bytes. */
const BODY_LENS = [2, 3, 3, 4, 4, 5, 7];

class FuncBuilder {
  ops: number[] = [];
  lens: number[] = [];
  args: number[] = [];
  callNames: (string | undefined)[] = [];
  constructor(readonly name: string) {}
  add(op: number, len: number, arg = 0, call?: string): number {
    this.ops.push(op);
    this.lens.push(len);
    this.args.push(arg);
    this.callNames.push(call);
    return this.ops.length - 1;
  }
}

function finish(b: FuncBuilder, section: Section, extra: Partial<Func>): Func {
  const offs: number[] = [];
  let o = 0;
  for (const l of b.lens) {
    offs.push(o);
    o += l;
  }
  const calls: number[] = [];
  const mems: number[] = [];
  b.ops.forEach((op, i) => {
    if (op === CALL) calls.push(i);
    if (op === MEM) mems.push(i);
  });
  return {
    name: b.name, section, addr: 0, size: o, ops: b.ops, offs, lens: b.lens, args: b.args,
    callNames: b.callNames, targets: [], framed: false, frameFrom: -1, frameTo: -1, irqSwitch: false,
    calls, mems, ...extra,
  };
}

function body(b: FuncBuilder, rng: Rng, n: number, mem: number): number {
  let memLeft = mem;
  for (let i = 0; i < n; i++) {
    if (memLeft > 0 && rng.chance(0.5)) {
      b.add(MEM, rng.pick([3, 4, 4, 5, 7]));
      memLeft--;
    } else b.add(NOP, rng.pick(BODY_LENS));
  }
  return memLeft;
}

function cFunction(name: string, s: Shape, callees: string[]): Func {
  const rng = new Rng(hashString(name));
  const b = new FuncBuilder(name);
  if (s.leaf) {
    // Frameless leaf: no frame, perhaps a callee-saved register (asm leaves, omitted frames).
    const save = rng.chance(0.4);
    if (save) b.add(PUSH_REG, 2);
    let m = body(b, rng, rng.range(2, 4), s.mem ?? 0);
    while (m-- > 0) b.add(MEM, 3);
    if (save) b.add(POP_REG, 2);
    b.add(RET, 1);
    return finish(b, s.section ?? 'text', {});
  }
  b.add(PUSH_RBP, 1);
  b.add(MOV_RBP, 3);
  const frameFrom = 2;
  const saveRbx = rng.chance(0.5);
  if (saveRbx) b.add(PUSH_REG, 1);
  const locals = s.locals ?? 0;
  if (locals) b.add(SUB_RSP, locals >= 0x80 ? 7 : 4, locals);
  let memLeft = s.mem ?? 0;
  if (s.recursive) {
    // Touch the on-stack buffer first: with the stack exhausted, this is where the fault hits.
    b.add(MEM, 4);
    memLeft = Math.max(0, memLeft - 1);
  }
  for (const c of callees) {
    memLeft = body(b, rng, rng.range(1, 3), memLeft);
    if (s.irqSwitch && c === callees[0]) {
      b.add(IRQ_LINK, 3);
      b.add(IRQ_SWITCH, 3);
      b.add(CALL, 5, 0, c);
      b.add(POP_RSP, 1);
    } else b.add(CALL, 5, 0, c);
  }
  memLeft = body(b, rng, rng.range(1, 3), memLeft);
  while (memLeft-- > 0) b.add(MEM, 4);
  let frameTo: number;
  if (saveRbx) {
    if (locals) b.add(ADD_RSP, locals >= 0x80 ? 7 : 4, locals);
    b.add(POP_REG, 1);
    frameTo = b.add(POP_RBP, 1);
  } else if (locals) {
    frameTo = b.add(LEAVE, 1);
  } else {
    frameTo = b.add(POP_RBP, 1);
  }
  b.add(RET, 1);
  return finish(b, s.section ?? 'text', { framed: true, frameFrom, frameTo, irqSwitch: s.irqSwitch ?? false });
}

/** The asm thunk of the no_frame_pointer fault: saves a register and calls on without a frame. */
function nofpThunk(name: string, callee: string): Func {
  const b = new FuncBuilder(name);
  b.add(PUSH_REG, 2);
  b.add(NOP, 3);
  b.add(CALL, 5, 0, callee);
  b.add(POP_REG, 2);
  b.add(RET, 1);
  return finish(b, 'text', {});
}

const GPR_PUSH_ORDER = ['di', 'si', 'dx', 'cx', 'ax', 'r8', 'r9', 'r10', 'r11', 'bx', 'bp', 'r12', 'r13', 'r14', 'r15'] as const;
const FIELD = (f: string): number => (PT_REGS_FIELDS as readonly string[]).indexOf(f);

/**
 * An IDT stub. The CPU has pushed the hardware frame (and the error code); the stub completes
 * pt_regs (PUSH_AND_CLEAR_REGS), marks the entry the layout's way, calls the C handler with rsp
 * = &pt_regs (or below the kernel_entry frame), and on return undoes it all and irets.
 */
function idtStub(name: string, entry: string, handler: string, errorCode: boolean, ist: StackType | undefined, layout: Layout, markEntry: boolean): Func {
  const b = new FuncBuilder(name);
  b.add(NOP, 4); // endbr64
  b.add(NOP, 3); // clac
  if (entry === 'nmi') {
    // Kernel-mode NMI on its IST stack (entry_64.S): temp rdx, "NMI executing", then the "iret"
    // and "outermost" copies of the hardware frame; pt_regs->ip..ss is the outermost copy, so
    // pt_regs end up at the NMI stack top − 264.
    b.add(PUSH_REG, 1); // push %rdx
    b.add(PUSH_IMM, 2, 1); // pushq $1
    for (let copy = 0; copy < 2; copy++) for (let f = 4; f >= 0; f--) b.add(PUSH_HW_COPY, 4, f);
  }
  if (!errorCode) b.add(PUSH_IMM, 2, -1); // orig_ax = -1
  for (const r of GPR_PUSH_ORDER) b.add(PUSH_GPR, r.startsWith('r') && r.length > 2 ? 2 : 1, FIELD(r));
  // error_entry: an entry from user mode ran on the entry (trampoline) stack so far; sync_regs
  // copies pt_regs to the top of the task stack and the stub continues there. A branch not taken
  // for entries from kernel mode.
  if (!ist) b.add(SYNC_REGS, 8);
  let markFrom = -1;
  let regsOffset = 8;
  if (markEntry && layout === 'encoded_fp') {
    markFrom = b.add(ENCODE, 5) + 1;
  } else if (markEntry && layout === 'kernel_entry') {
    b.add(PUSH_KE, 5);
    b.add(PUSH_RBP, 1);
    markFrom = b.add(MOV_RBP, 3) + 1;
    regsOffset = 24;
  }
  b.add(NOP, 3); // mov %rsp,%rdi
  if (errorCode) b.add(NOP, 5); // mov ORIG_RAX(%rsp),%rsi
  if (errorCode) b.add(NOP, 9); // movq $-1,ORIG_RAX(%rsp)
  const callIdx = b.add(CALL, 5, 0, handler);
  let markTo = -1;
  if (markEntry && layout === 'kernel_entry') {
    markTo = b.add(POP_RBP, 1);
    b.add(ADD_RSP, 4, 8);
  }
  for (let i = GPR_PUSH_ORDER.length - 1; i >= 0; i--) {
    const r = GPR_PUSH_ORDER[i]!;
    const idx = b.add(POP_GPR, r.startsWith('r') && r.length > 2 ? 2 : 1, FIELD(r));
    if (r === 'bp' && markEntry && layout === 'encoded_fp') markTo = idx;
  }
  b.add(ADD_RSP, 4, 8); // orig_ax
  if (entry === 'nmi') b.add(ADD_RSP, 4, 12 * 8); // the two copies, "NMI executing", temp rdx
  b.add(IRET, 2);
  const stub: StubInfo = { entry, errorCode, callIdx, markFrom, markTo, regsOffset };
  if (ist) stub.ist = ist;
  return finish(b, 'irqentry', { stub });
}

/** entry_SYSCALL_64: switch to the task stack, build user pt_regs at its top, call do_syscall_64. */
function syscallStub(): Func {
  const b = new FuncBuilder('entry_SYSCALL_64');
  b.add(USER_STACK_OP, 3); // swapgs
  b.add(USER_STACK_OP, 9); // mov %rsp,PER_CPU(cpu_tss_rw + TSS_sp2)
  b.add(SWITCH_TASK, 9);
  for (const f of ['ss', 'sp', 'flags', 'cs', 'ip', 'orig_ax'] as const) b.add(PUSH_USER, f === 'ss' || f === 'sp' ? 7 : 2, FIELD(f));
  for (const r of GPR_PUSH_ORDER) b.add(PUSH_GPR, r.startsWith('r') && r.length > 2 ? 2 : 1, FIELD(r));
  // PUSH_AND_CLEAR_REGS zeroes the registers; syscall entry does not encode rbp (§2.3).
  b.add(CLEAR_RBP, 2);
  b.add(NOP, 3); // mov %rsp,%rdi
  const callIdx = b.add(CALL, 5, 0, 'do_syscall_64');
  for (let i = GPR_PUSH_ORDER.length - 1; i >= 0; i--) {
    const r = GPR_PUSH_ORDER[i]!;
    b.add(POP_GPR, r.startsWith('r') && r.length > 2 ? 2 : 1, FIELD(r));
  }
  b.add(ADD_RSP, 4, 8);
  b.add(SYSRET, 3);
  return finish(b, 'entry', { stub: { entry: 'syscall', errorCode: false, callIdx, markFrom: -1, markTo: -1, regsOffset: 8 } });
}

/** ret_from_fork_asm: the first code a new task runs, with rsp = task_pt_regs. */
function forkStub(): Func {
  const b = new FuncBuilder('ret_from_fork_asm');
  b.add(NOP, 3); // mov %rax,%rdi
  b.add(NOP, 3); // mov %r12,%rsi
  b.add(NOP, 3); // mov %rbx,%rdx
  const callIdx = b.add(CALL, 5, 0, 'ret_from_fork');
  b.add(JMP, 5);
  return finish(b, 'entry', { stub: { entry: 'fork', errorCode: false, callIdx, markFrom: -1, markTo: -1, regsOffset: 8 } });
}

/** secondary_startup_64: head code that starts a CPU's idle task with no frame. */
function headStub(): Func {
  const b = new FuncBuilder('secondary_startup_64');
  b.add(NOP, 7);
  b.add(CLEAR_RBP, 2);
  const callIdx = b.add(CALL, 5, 0, 'start_secondary');
  b.add(JMP, 2);
  return finish(b, 'text', { stub: { entry: 'head', errorCode: false, callIdx, markFrom: -1, markTo: -1, regsOffset: 8 } });
}

/** __switch_to_asm: pushes the inactive_task_frame (rbp, rbx, r12–r15) and switches stacks. */
function switchToAsm(): Func {
  const b = new FuncBuilder('__switch_to_asm');
  b.add(PUSH_RBP, 1);
  for (let i = 0; i < 5; i++) b.add(PUSH_REG, i === 0 ? 1 : 2);
  b.add(NOP, 7); // movq %rsp, TASK_threadsp(%rdi)
  b.add(NOP, 7);
  b.add(RET, 1);
  return finish(b, 'entry', {});
}

export interface BuildOptions {
  layout: Layout;
  /** Profile layouts; defaults to [layout]. */
  profileLayouts?: Layout[];
  faults?: BuildFaults;
  /** Varies addresses between builds of the same shape (a different kernel version). */
  variant?: number;
}

export function buildKernel(o: BuildOptions): KernelImage {
  const layout = o.layout;
  const faults = o.faults ?? {};
  // Head code comes first in .text, as in a real vmlinux.
  const funcs: Func[] = [headStub()];
  const thunkFor = new Map<string, [string, string]>();
  if (faults.noFramePointer) for (const [t, caller, callee] of NOFP_THUNKS) thunkFor.set(caller, [callee, t]);
  for (const [name, s] of C_FUNCS) {
    let callees = s.calls;
    const th = thunkFor.get(name);
    if (th) callees = callees.map((c) => (c === th[0] ? th[1] : c));
    funcs.push(cFunction(name, s, callees));
  }
  if (faults.noFramePointer) for (const [t, , callee] of NOFP_THUNKS) funcs.push(nofpThunk(t, callee));
  if (layout === 'kernel_entry') {
    // The dummy function whose address the 2016 entry code pushes as a fake return address.
    const b = new FuncBuilder('kernel_entry');
    b.add(NOP, 1);
    b.add(NOP, 15);
    funcs.push(finish(b, 'text', {}));
  }
  funcs.push(syscallStub(), forkStub(), switchToAsm());
  for (const [name, entry, handler, err, ist] of IDT_STUBS) {
    const missing = faults.missingKernelEntry && layout === 'kernel_entry' && name === 'asm_common_interrupt';
    const f = idtStub(name, entry, handler, err, ist, layout, !missing);
    if (faults.stubOutsideSection && name === 'asm_sysvec_apic_timer_interrupt') f.section = 'text';
    funcs.push(f);
  }

  // Layout: .text from _stext, .softirqentry.text, .entry.text with the IDT stubs bracketed by
  // __irqentry_text_start/_end; functions 16-byte aligned as the compiler aligns them.
  const variant = o.variant ?? 0;
  const lines: [number, string, string][] = [];
  let addr = TEXT_BASE;
  lines.push([addr, 'T', '_stext']);
  addr += 0x1000 + variant * 0x40;
  const place = (f: Func): void => {
    f.addr = addr;
    lines.push([addr, f.name.startsWith('__') || f.name.endsWith('_thunk') ? 't' : 'T', f.name]);
    addr += f.size;
    addr = Math.ceil(addr / 16) * 16;
  };
  for (const f of funcs) if (f.section === 'text') place(f);
  addr = Math.ceil((addr + 0x100) / 0x1000) * 0x1000;
  lines.push([addr, 'T', '__softirqentry_text_start']);
  for (const f of funcs) if (f.section === 'softirqentry') place(f);
  lines.push([addr, 'T', '__softirqentry_text_end']);
  addr = ENTRY_BASE;
  const entryStart = addr;
  lines.push([addr, 'T', '__entry_text_start']);
  for (const f of funcs) if (f.section === 'entry') place(f);
  lines.push([addr, 'T', '__irqentry_text_start']);
  for (const f of funcs) if (f.section === 'irqentry') place(f);
  lines.push([addr, 'T', '__irqentry_text_end']);
  lines.push([addr, 'T', '__entry_text_end']);
  const entryEnd = addr;
  lines.push([ETEXT, 'T', '_etext']);
  lines.push([ETEXT + 0x1200000, 'D', 'jiffies']);
  lines.push([ETEXT + 0x1200040, 'd', 'init_task']);
  lines.sort((a, b) => a[0] - b[0]);
  const kallsyms = lines.map(([a, t, n]) => `${hex16(a)} ${t} ${n}\n`).join('');

  const byName = new Map(funcs.map((f) => [f.name, f]));
  for (const f of funcs) {
    f.targets = f.callNames.map((n) => {
      if (n === undefined) return undefined;
      const t = byName.get(n);
      if (!t) throw new Error(`${f.name} calls unknown ${n}`);
      return t;
    });
  }
  const profile: ProfileJson = { layouts: o.profileLayouts ?? [layout] };
  const buildId = createHash('sha1').update(kallsyms).update(JSON.stringify(profile)).digest('hex');
  return {
    buildId, layout, profile, faults, kallsyms, funcs, byName,
    kernelEntry: byName.get('kernel_entry')?.addr ?? NaN,
    entryStart, entryEnd,
    fn(name: string): Func {
      const f = byName.get(name);
      if (!f) throw new Error(`no function ${name} in build`);
      return f;
    },
  };
}

/** 16 hex digits of a signed-form address. */
export function hex16(s: number): string {
  return BigInt.asUintN(64, BigInt(s)).toString(16).padStart(16, '0');
}

/** The function containing a signed address, and the offset (for messages and tables). */
export function symbolize(k: KernelImage, s: number): string {
  for (const f of k.funcs) if (s >= f.addr && s < f.addr + f.size) return `${f.name}+0x${(s - f.addr).toString(16)}`;
  return hex16(s);
}
