// SPDX-License-Identifier: GPL-2.0
/* stacksanity's live-host sampler (issue 16). On every CPU's cpu-clock event it records the
 * interrupted registers, the kernel's own unwind of that instant (bpf_get_stack: the same
 * perf_callchain_kernel() that `perf record -g` and bpftrace's kstack use), and the raw memory of
 * every stack the sample is on, from the stack pointer to that stack's end, following the link
 * from an IRQ or exception stack to the stack it interrupted. Stack bounds come from BTF-typed
 * reads: task_struct->stack, the per-CPU hardirq_stack_ptr and cea_exception_stacks. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sampler.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 thread_size = 16384;
const volatile __u64 irq_stack_size = 16384;

/* Offsets inside the per-CPU area (BTF's .data..percpu section), set by the loader. Typed __ksym
 * per-CPU variables would be simpler, but the kernel resolves them through kallsyms, which holds
 * no data symbols without CONFIG_KALLSYMS_ALL (this machine's case). So this CPU's per-CPU base
 * comes from a BTF-typed pointer that leads into it: current->se.cfs_rq->rq is this CPU's
 * `runqueues` (cpu_rq()), whose offset in the area BTF gives. */
struct ss_config ss_cfg = { .runqueues_off = ~0ull };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

#define SCRATCH_SIZE (sizeof(struct ss_record) + SS_MAX_STACKS * SS_MAX_STACK_BYTES)

struct scratch { char b[SCRATCH_SIZE]; };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

struct readbuf { char b[SS_READ_CHUNK]; };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct readbuf);
} read_map SEC(".maps");

struct ss_counters counters = {};

struct bounds { __u64 begin, end; __u32 type; };

static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
	return v;
}

/* The stack that holds addr, with its bounds: the task stack, this CPU's IRQ stack, or one of its
 * IST exception stacks. Returns 0 when addr is on none of them. */
static __always_inline int find_stack(__u64 addr, __u64 task_stack, __u64 irq_top, __u64 ces, struct bounds *out)
{
	if (task_stack && addr >= task_stack && addr < task_stack + thread_size) {
		out->begin = task_stack; out->end = task_stack + thread_size; out->type = SS_TASK; return 1;
	}
	if (irq_top && addr >= irq_top - irq_stack_size && addr < irq_top) {
		out->begin = irq_top - irq_stack_size; out->end = irq_top; out->type = SS_IRQ; return 1;
	}
	if (!ces)
		return 0;
#define IST(field, t) do { \
		__u64 b = ces + bpf_core_field_offset(struct cea_exception_stacks, field); \
		__u64 e = b + bpf_core_field_size(struct cea_exception_stacks, field); \
		if (addr >= b && addr < e) { out->begin = b; out->end = e; out->type = t; return 1; } \
	} while (0)
	IST(NMI_stack, SS_NMI);
	IST(DB_stack, SS_DB);
	IST(MCE_stack, SS_MCE);
	IST(DF_stack, SS_DF);
#undef IST
	return 0;
}

SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &cpu);
	if (!s)
		return 0;
	struct ss_record *r = (struct ss_record *)s->b;
	__u64 id = bpf_get_current_pid_tgid();

	__sync_fetch_and_add(&counters.samples, 1);
	r->magic = SS_MAGIC;
	r->time_ns = bpf_ktime_get_ns();
	r->cpu = cpu;
	r->pid = id >> 32;
	r->tid = (__u32)id;
	r->flags = 0;
	r->nstacks = 0;
	r->kstack_bytes = 0;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	/* Direct context loads: the verifier rewrites them to the interrupted pt_regs (a probe read
	 * of &ctx->regs would read the kernel's bpf_perf_event_data_kern instead). */
	const __u64 *regs = (const __u64 *)&ctx->regs;
#pragma unroll
	for (int i = 0; i < 21; i++)
		r->regs[i] = regs[i];

	__u64 sp = r->regs[19];
	if (r->regs[17] & 3) {
		/* User mode: the registers say where, the kernel has no stack to judge here. */
		r->flags |= SS_FLAG_USER;
		__sync_fetch_and_add(&counters.user, 1);
		r->size = sizeof(*r);
		if (bpf_ringbuf_output(&events, r, sizeof(*r), 0))
			__sync_fetch_and_add(&counters.lost, 1);
		return 0;
	}
	__sync_fetch_and_add(&counters.kernel, 1);
	r->kstack_bytes = bpf_get_stack(ctx, r->kstack, sizeof(r->kstack), 0);

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 task_stack = (__u64)BPF_CORE_READ(task, stack);
	__u64 irq_top = 0, ces = 0;
	struct rq *rq = BPF_CORE_READ(task, se.cfs_rq, rq);
	if (rq && ss_cfg.runqueues_off != ~0ull && BPF_CORE_READ(rq, cpu) == (int)cpu) {
		__u64 base = (__u64)rq - ss_cfg.runqueues_off;
		__u64 hsp = read_u64(base + ss_cfg.hardirq_stack_ptr_off);
		if (hsp)
			irq_top = hsp + 8; /* hardirq_stack_ptr points at the top word, which holds the link */
		ces = read_u64(base + ss_cfg.cea_exception_stacks_off);
	} else {
		__sync_fetch_and_add(&counters.no_percpu, 1);
	}

	__u32 off = 0;
	__u32 seen = 0;
	__u64 cur = sp;
	for (int i = 0; i < SS_MAX_STACKS; i++) {
		struct bounds b = {};
		if (!find_stack(cur, task_stack, irq_top, ces, &b)) {
			if (i == 0)
				r->flags |= SS_FLAG_OFF_STACK;
			break;
		}
		if (seen & (1u << b.type))
			break;
		seen |= 1u << b.type;
		__u64 len = b.end - cur;
		if (len > SS_MAX_STACK_BYTES) {
			len = SS_MAX_STACK_BYTES;
			r->flags |= SS_FLAG_CUT;
			__sync_fetch_and_add(&counters.cut, 1);
		}
		if (off > (SS_MAX_STACKS - 1) * SS_MAX_STACK_BYTES)
			break;
		char *dst = s->b + sizeof(struct ss_record) + off;
		if (bpf_probe_read_kernel(dst, (__u32)len, (void *)cur)) {
			__sync_fetch_and_add(&counters.read_errors, 1);
			break;
		}
		struct ss_stack *st = &r->stacks[i];
		st->begin = b.begin;
		st->end = b.end;
		st->start = cur;
		st->len = len;
		st->type = b.type;
		r->nstacks = i + 1;
		off += len;
		if (b.type == SS_TASK)
			break;
		/* The stack this one interrupted: the IRQ stack's top word is the previous sp
		 * (call_on_irqstack); an IST stack's top holds the hardware iret frame, sp at top - 16. */
		cur = read_u64(b.end - (b.type == SS_IRQ ? 8 : 16));
	}
	__u32 size = sizeof(struct ss_record) + off;
	r->size = size;
	if (size > SCRATCH_SIZE)
		return 0;
	if (bpf_ringbuf_output(&events, r, size, 0))
		__sync_fetch_and_add(&counters.lost, 1);
	return 0;
}

/* One-shot reads of kernel memory (the ORC tables, text bytes) into read_map, run by the loader
 * through BPF_PROG_TEST_RUN: no vmlinux and no /proc/kcore needed. */
SEC("syscall")
int read_kernel(struct ss_read_args *a)
{
	__u32 zero = 0;
	struct readbuf *b = bpf_map_lookup_elem(&read_map, &zero);
	if (!b)
		return 0;
	__u32 len = a->len;
	if (len > SS_READ_CHUNK)
		len = SS_READ_CHUNK;
	a->ret = bpf_probe_read_kernel(b->b, len, (void *)a->addr);
	return 0;
}
