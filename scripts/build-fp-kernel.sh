#!/usr/bin/env bash
# Small x86-64 frame-pointer kernels from Debian's linux-source-6.1 (issues 13 and 18), for
# `stacksanity host qemu --kernel` and `stacksanity experiment`. Debian packages only.
#
#   scripts/build-fp-kernel.sh [--design encoded|section|kernel_entry|all] [--unwinder stock|patched|all]
#                              [--quiet]
#
# --design picks the entry design (patches/kernel/README.md): encoded (6.1 as shipped, the default),
# section or kernel_entry; several may be given comma-separated, or `all`. --unwinder picks, for
# section and kernel_entry, the kernel's own unwinder: `patched` (the design's unwinder change, the
# default) or `stock` (today's unwinder facing that entry code). encoded has only the stock one.
#
# For each kernel prints KERNEL_IMAGE=… / KERNEL_VMLINUX=… / KERNEL_DESIGN=… lines, also written to
# <cache>/<source package version>/<variant>/kernel.env, where <variant> is `encoded`, or
# `<design>-<unwinder>` (section-patched, kernel_entry-stock, …), beside copies of bzImage, vmlinux
# and config and their sha256sums. The cache is $STACKSANITY_FPKERNEL_CACHE (default
# <repo>/.cache/fpkernel). The builds themselves (one source tree and config; a variant recompiles
# only what its patches touch) are scripts/build-design-kernels.sh's. A variant's key is the source
# package version, the config fragment (scripts/fpkernel/fp.config), its patches and this recipe's
# revision, so editing any of them rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RECIPE=2
SRC_PACKAGE=linux-source-6.1
TARBALL=/usr/src/linux-source-6.1.tar.xz
FRAGMENT=$REPO/scripts/fpkernel/fp.config
CACHE="${STACKSANITY_FPKERNEL_CACHE:-$REPO/.cache/fpkernel}"
JOBS="${STACKSANITY_FPKERNEL_JOBS:-2}"

designs=encoded
unwinders=patched
quiet=0
usage="usage: scripts/build-fp-kernel.sh [--design encoded|section|kernel_entry|all] [--unwinder stock|patched|all] [--quiet]"
while [ $# -gt 0 ]; do
  case "$1" in
    --design) designs="${2:-}"; shift 2 ;;
    --design=*) designs="${1#--design=}"; shift ;;
    --unwinder) unwinders="${2:-}"; shift 2 ;;
    --unwinder=*) unwinders="${1#--unwinder=}"; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-fp-kernel: unknown argument '$1' ($usage)" >&2; exit 2 ;;
  esac
done
log() { [ "$quiet" = 1 ] || echo "build-fp-kernel: $*" >&2; }
die() { echo "build-fp-kernel: $*" >&2; exit 1; }

[ "$designs" = all ] && designs=encoded,section,kernel_entry
[ "$unwinders" = all ] && unwinders=stock,patched
variants=()
for d in ${designs//,/ }; do
  case "$d" in
    encoded) variants+=(encoded) ;;
    section|kernel_entry)
      for u in ${unwinders//,/ }; do
        case "$u" in
          stock|patched) variants+=("$d-$u") ;;
          *) die "unknown unwinder '$u' (expected stock, patched or all)" ;;
        esac
      done ;;
    *) die "unknown design '$d' (expected encoded, section, kernel_entry or all)" ;;
  esac
done

# --- tools and source, from apt; a failed install names the package --------------------------
updated=0
apt_install() {
  local pkgs=("$@")
  if [ "$updated" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; updated=1; fi
  for p in "${pkgs[@]}"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
      || die "could not install the Debian package '$p' (apt-get install $p failed); it is needed to build the kernel"
  done
}
need=()
for pair in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils perl:perl objdump:binutils patch:patch; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -f /usr/include/gelf.h ] || need+=(libelf-dev)   # objtool
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -f "$TARBALL" ] || need+=("$SRC_PACKAGE")
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt_install "${need[@]}"
fi
[ -f "$TARBALL" ] || die "the Debian package '$SRC_PACKAGE' is installed but $TARBALL is missing"
version=$(dpkg-query -W -f='${Version}' "$SRC_PACKAGE" 2>/dev/null) || die "cannot read the version of the Debian package '$SRC_PACKAGE'"

export STACKSANITY_FPKERNEL_CACHE="$CACHE" LINUX_SOURCE_TARBALL="$TARBALL" DK_JOBS="$JOBS"
# shellcheck source=build-design-kernels.sh
source "$REPO/scripts/build-design-kernels.sh"

build_variant() {
  local variant=$1 design unwinder dir key patches=() p sums=""
  if [ "$variant" = encoded ]; then design=encoded; unwinder=stock; else design=${variant%-*}; unwinder=${variant##*-}; fi
  dir="$CACHE/$version/$variant"
  mapfile -t patches < <(dk_patches_for "$design" "$unwinder")
  for p in "${patches[@]}"; do [ -n "$p" ] && sums+="$(sha256sum <"$p" | cut -d' ' -f1) "; done
  key=$(printf 'recipe=%s\nsource=%s %s\nfragment=%s\npatches=%s\n' "$RECIPE" "$SRC_PACKAGE" "$version" \
    "$(sha256sum <"$FRAGMENT" | cut -d' ' -f1)" "${sums:-none}")
  # Trusted only when the key matches and the outputs are the bytes that build wrote (a copy cut
  # short or edited by hand rebuilds).
  if [ -s "$dir/bzImage" ] && [ -s "$dir/vmlinux" ] && [ -f "$dir/key" ] && [ "$(cat "$dir/key")" = "$key" ] \
    && (cd "$dir" && sha256sum --quiet --status -c sha256sums 2>/dev/null); then
    log "cached: $dir (nothing changed)"
  else
    local start line image vmlinux
    start=$(date +%s)
    log "building $variant (make -j$JOBS; logs under $CACHE/<version>/designs/)"
    line=$(build_design_kernel "$design" "$unwinder") || die "building $variant failed (see the lines above)"
    image=$(sed -n 's/.* BZIMAGE=\([^ ]*\).*/\1/p' <<<"$line")
    vmlinux=$(sed -n 's/.* VMLINUX=\([^ ]*\).*/\1/p' <<<"$line")
    mkdir -p "$dir"
    rm -f "$dir/key"
    cp "$image" "$dir/bzImage.tmp" && mv "$dir/bzImage.tmp" "$dir/bzImage"
    cp "$vmlinux" "$dir/vmlinux.tmp" && mv "$dir/vmlinux.tmp" "$dir/vmlinux"
    cp "$(dirname "$vmlinux")/.config" "$dir/config"
    (cd "$dir" && sha256sum bzImage vmlinux >sha256sums)
    printf '%s' "$key" >"$dir/key"
    log "$variant built in $(( $(date +%s) - start )) s: $(du -h "$dir/bzImage" | cut -f1) bzImage, $(du -h "$dir/vmlinux" | cut -f1) vmlinux"
  fi
  cat >"$dir/kernel.env" <<ENV
KERNEL_IMAGE=$dir/bzImage
KERNEL_VMLINUX=$dir/vmlinux
KERNEL_CONFIG=$dir/config
KERNEL_SOURCE=$SRC_PACKAGE $version
KERNEL_DESIGN=$design
KERNEL_UNWINDER=$unwinder
KERNEL_VARIANT=$variant
ENV
  cat "$dir/kernel.env"
}

for v in "${variants[@]}"; do build_variant "$v"; done
