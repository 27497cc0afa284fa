#!/usr/bin/env bash
# Builds the live-host BPF sampler (issue 16) into .cache/bpf/: vmlinux.h from the running
# kernel's BTF, sampler.bpf.o (clang -target bpf, CO-RE) and the stacksanity-bpf loader (libbpf).
# Needs clang, libbpf-dev, bpftool, gcc (Debian: apt-get install clang libbpf-dev bpftool gcc).
# With --install, installs those with apt first. Exits non-zero with a message when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
src=services/realhost/bpf
out=${STACKSANITY_BPF_DIR:-.cache/bpf}
if [ "${1:-}" = "--install" ]; then
  missing=()
  command -v clang >/dev/null || missing+=(clang)
  command -v bpftool >/dev/null || missing+=(bpftool)
  command -v gcc >/dev/null || missing+=(gcc)
  [ -f /usr/include/bpf/libbpf.h ] || missing+=(libbpf-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
for t in clang bpftool gcc; do
  command -v "$t" >/dev/null || { echo "bpf-build: $t not found (Debian: apt-get install clang libbpf-dev bpftool gcc)" >&2; exit 1; }
done
[ -f /usr/include/bpf/libbpf.h ] || { echo "bpf-build: libbpf headers not found (Debian: apt-get install libbpf-dev)" >&2; exit 1; }
[ -r /sys/kernel/btf/vmlinux ] || { echo "bpf-build: /sys/kernel/btf/vmlinux missing: the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)" >&2; exit 1; }
mkdir -p "$out"
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$out/vmlinux.h"
clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I"$out" -I"$src" -c "$src/sampler.bpf.c" -o "$out/sampler.bpf.o"
gcc -O2 -Wall -I"$src" "$src/loader.c" -o "$out/stacksanity-bpf" -lbpf -lelf -lz
echo "bpf-build: $out/sampler.bpf.o and $out/stacksanity-bpf built" >&2
