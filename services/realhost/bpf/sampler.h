/* Shared between the BPF programs and their loader: the binary record one sample becomes.
 * services/realhost/bpf-record.ts decodes the same layout; change both together. */
#ifndef STACKSANITY_SAMPLER_H
#define STACKSANITY_SAMPLER_H

#define SS_MAGIC 0x53534231u /* "1BSS" little-endian: record version 1 */
#define SS_MAX_STACKS 3
#define SS_MAX_STACK_BYTES 16384 /* THREAD_SIZE / IRQ_STACK_SIZE without KASAN; longer stacks are cut */
#define SS_KSTACK_MAX 64
#define SS_READ_CHUNK 65536

/* Stack kinds, in the order of the dump format's STACK_TYPES. */
enum ss_stack_type { SS_TASK = 0, SS_IRQ = 1, SS_NMI = 2, SS_DB = 3, SS_MCE = 4, SS_DF = 5 };

#define SS_FLAG_USER 1u        /* the sample interrupted user mode: registers only */
#define SS_FLAG_OFF_STACK 2u   /* sp on none of the known stacks (entry code before the switch) */
#define SS_FLAG_CUT 4u         /* a stack was longer than SS_MAX_STACK_BYTES */

struct ss_stack {
	__u64 begin;  /* the whole stack: [begin, end) */
	__u64 end;
	__u64 start;  /* captured bytes: [start, start + len) */
	__u32 len;
	__u32 type;
};

struct ss_record {
	__u32 magic;
	__u32 size;       /* bytes of the whole record, stack bytes included */
	__u64 time_ns;    /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u32 cpu;
	__u32 pid;        /* tgid */
	__u32 tid;
	__u32 flags;
	char comm[16];
	__u64 regs[21];   /* struct pt_regs, in its own order */
	__s32 kstack_bytes; /* bpf_get_stack's answer: bytes of kstack[] used, or -errno */
	__u32 nstacks;
	__u64 kstack[SS_KSTACK_MAX];
	struct ss_stack stacks[SS_MAX_STACKS];
	/* then the stacks' bytes, one after the other */
};

/* The one-shot reader's argument (a BPF_PROG_TYPE_SYSCALL context). */
struct ss_read_args {
	__u64 addr;
	__u32 len;
	__s32 ret;
};

/* Counters the sampler keeps in its .bss, read by the loader at the end. */
struct ss_counters {
	__u64 samples;
	__u64 user;
	__u64 kernel;
	__u64 lost;       /* ring buffer full: the sample was dropped */
	__u64 read_errors;
	__u64 cut;
	__u64 no_percpu;  /* this CPU's per-CPU base could not be found: IRQ/IST stacks unknown */
};

/* Set by the loader from BTF before the sampler runs. */
struct ss_config {
	__u64 runqueues_off;
	__u64 hardirq_stack_ptr_off;
	__u64 cea_exception_stacks_off;
};

#endif
