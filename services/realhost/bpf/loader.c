// SPDX-License-Identifier: GPL-2.0
/* stacksanity-bpf: loads sampler.bpf.o and either
 *   sample --freq HZ --duration S --out FILE   records ss_record's from every CPU into FILE and
 *                                              prints one JSON line of counters and costs;
 *   read                                       reads "ADDR LEN" lines (hex, decimal) from stdin and
 *                                              writes, per line, an s32 status then LEN bytes.
 * The TypeScript side (services/realhost/bpf-*.ts) drives it; it holds no logic of its own. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/perf_event.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <bpf/btf.h>
#include "sampler.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static FILE *out;
static unsigned long long records, bytes;

static int on_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (fwrite(data, 1, size, out) != size)
		return -EIO;
	records++;
	bytes += size;
	return 0;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static struct bpf_object *open_obj(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
		exit(3);
	}
	return obj;
}

/* Offsets of the per-CPU variables the sampler needs, from the DATASEC ".data..percpu" of the
 * kernel's BTF. Returns 0 when all three were found. */
static int percpu_offsets(struct ss_config *c)
{
	struct btf *btf = btf__load_vmlinux_btf();
	if (!btf)
		return -1;
	int id = btf__find_by_name_kind(btf, ".data..percpu", BTF_KIND_DATASEC);
	if (id < 0)
		return -1;
	const struct btf_type *t = btf__type_by_id(btf, id);
	const struct btf_var_secinfo *v = btf_var_secinfos(t);
	int found = 0;
	for (int i = 0; i < btf_vlen(t); i++, v++) {
		const char *name = btf__name_by_offset(btf, btf__type_by_id(btf, v->type)->name_off);
		if (!strcmp(name, "runqueues")) { c->runqueues_off = v->offset; found |= 1; }
		else if (!strcmp(name, "hardirq_stack_ptr")) { c->hardirq_stack_ptr_off = v->offset; found |= 2; }
		else if (!strcmp(name, "cea_exception_stacks")) { c->cea_exception_stacks_off = v->offset; found |= 4; }
	}
	btf__free(btf);
	return found == 7 ? 0 : -1;
}

static int do_sample(const char *objpath, int freq, double duration, const char *outpath)
{
	struct bpf_object *obj = open_obj(objpath);
	bpf_program__set_autoload(bpf_object__find_program_by_name(obj, "read_kernel"), false);
	/* One scratch record per possible CPU, not the 256 the object declares (~50 KiB each). */
	bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "scratch_map"), libbpf_num_possible_cpus());
	int err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "loading the sampler failed (%s): BPF needs root or CAP_BPF+CAP_PERFMON, and a kernel with BTF\n", strerror(-err));
		return 3;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "sample");
	struct ss_config cfg = { .runqueues_off = ~0ull };
	if (percpu_offsets(&cfg)) {
		fprintf(stderr, "warning: the kernel's BTF does not give the per-CPU offsets of runqueues, hardirq_stack_ptr and cea_exception_stacks: IRQ and exception stacks will not be captured\n");
		cfg.runqueues_off = ~0ull;
	}
	struct bpf_map *data = bpf_object__find_map_by_name(obj, ".data");
	int zero0 = 0;
	if (!data || bpf_map_update_elem(bpf_map__fd(data), &zero0, &cfg, 0)) {
		fprintf(stderr, "cannot set the sampler's configuration: %s\n", strerror(errno));
		return 3;
	}
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME); /* run_time_ns per program: the BPF side's cost */
	out = fopen(outpath, "wb");
	if (!out) {
		fprintf(stderr, "cannot write %s: %s\n", outpath, strerror(errno));
		return 2;
	}
	setvbuf(out, NULL, _IOFBF, 1 << 20);
	int ncpu = libbpf_num_possible_cpus();
	struct bpf_link **links = calloc(ncpu, sizeof(*links));
	int *pfds = calloc(ncpu, sizeof(int));
	int attached = 0;
	for (int cpu = 0; cpu < ncpu; cpu++) {
		struct perf_event_attr a = { .size = sizeof(a), .type = PERF_TYPE_SOFTWARE, .config = PERF_COUNT_SW_CPU_CLOCK,
			.freq = 1, .sample_freq = freq };
		pfds[cpu] = syscall(__NR_perf_event_open, &a, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
		if (pfds[cpu] < 0)
			continue; /* an offline CPU */
		links[cpu] = bpf_program__attach_perf_event(prog, pfds[cpu]);
		if (!links[cpu]) {
			fprintf(stderr, "attaching to cpu %d failed: %s\n", cpu, strerror(errno));
			return 3;
		}
		attached++;
	}
	if (!attached) {
		fprintf(stderr, "perf_event_open failed on every CPU: %s (a --frequency over kernel.perf_event_max_sample_rate is refused)\n", strerror(errno));
		return 3;
	}
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")), on_record, NULL, NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	double t0 = now_s(), c0 = cpu_s();
	while (!stop && now_s() - t0 < duration) {
		int n = ring_buffer__poll(rb, 100);
		if (n < 0 && n != -EINTR) {
			fprintf(stderr, "ring buffer: %s\n", strerror(-n));
			break;
		}
	}
	for (int cpu = 0; cpu < ncpu; cpu++) {
		if (links[cpu]) bpf_link__destroy(links[cpu]);
		if (pfds[cpu] >= 0) close(pfds[cpu]);
	}
	ring_buffer__consume(rb);
	double wall = now_s() - t0, loader_cpu = cpu_s() - c0;
	fflush(out);
	fclose(out);
	struct ss_counters c = {};
	struct bpf_map *bss = bpf_object__find_map_by_name(obj, ".bss");
	int zero = 0;
	if (bss) {
		char *v = calloc(1, bpf_map__value_size(bss));
		if (bpf_map_lookup_elem(bpf_map__fd(bss), &zero, v) == 0) memcpy(&c, v, sizeof(c));
		free(v);
	}
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len);
	printf("{\"cpus\":%d,\"wall_s\":%.3f,\"samples\":%llu,\"user\":%llu,\"kernel\":%llu,\"lost\":%llu,\"read_errors\":%llu,\"cut\":%llu,\"no_percpu\":%llu,"
	       "\"records\":%llu,\"bytes\":%llu,\"bpf_runs\":%llu,\"bpf_ns\":%llu,\"bpf_stats\":%s,\"loader_cpu_s\":%.3f}\n",
	       attached, wall, (unsigned long long)c.samples, (unsigned long long)c.user, (unsigned long long)c.kernel,
	       (unsigned long long)c.lost, (unsigned long long)c.read_errors, (unsigned long long)c.cut, (unsigned long long)c.no_percpu, records, bytes,
	       (unsigned long long)info.run_cnt, (unsigned long long)info.run_time_ns, stats_fd >= 0 ? "true" : "false", loader_cpu);
	return 0;
}

static int do_read(const char *objpath)
{
	struct bpf_object *obj = open_obj(objpath);
	bpf_program__set_autoload(bpf_object__find_program_by_name(obj, "sample"), false);
	int err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "loading the reader failed (%s): BPF needs root or CAP_BPF+CAP_PERFMON\n", strerror(-err));
		return 3;
	}
	int pfd = bpf_program__fd(bpf_object__find_program_by_name(obj, "read_kernel"));
	int mfd = bpf_map__fd(bpf_object__find_map_by_name(obj, "read_map"));
	char *buf = malloc(SS_READ_CHUNK);
	char line[128];
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long addr;
		unsigned long len;
		if (sscanf(line, "%llx %lu", &addr, &len) != 2) {
			fprintf(stderr, "bad request line: %s", line);
			return 2;
		}
		int status = 0;
		char *all = calloc(1, len ? len : 1);
		for (unsigned long done = 0; done < len && status == 0;) {
			unsigned long n = len - done > SS_READ_CHUNK ? SS_READ_CHUNK : len - done;
			struct ss_read_args a = { .addr = addr + done, .len = n };
			LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &a, .ctx_size_in = sizeof(a));
			int e = bpf_prog_test_run_opts(pfd, &o);
			if (e) { status = e; break; }
			if (a.ret) { status = a.ret; break; }
			int zero = 0;
			if (bpf_map_lookup_elem(mfd, &zero, buf)) { status = -errno; break; }
			memcpy(all + done, buf, n);
			done += n;
		}
		fwrite(&status, 4, 1, stdout);
		fwrite(all, 1, len, stdout);
		free(all);
	}
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s OBJ sample --freq HZ --duration S --out FILE | %s OBJ read < requests\n", argv[0], argv[0]);
		return 2;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	if (!strcmp(argv[2], "read"))
		return do_read(argv[1]);
	if (strcmp(argv[2], "sample")) {
		fprintf(stderr, "unknown mode %s\n", argv[2]);
		return 2;
	}
	int freq = 99;
	double duration = 10;
	const char *path = NULL;
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--freq")) freq = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--out")) path = argv[i + 1];
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	if (!path || freq < 1 || duration <= 0) {
		fprintf(stderr, "sample needs --out FILE, --freq >= 1 and --duration > 0\n");
		return 2;
	}
	return do_sample(argv[1], freq, duration, path);
}
