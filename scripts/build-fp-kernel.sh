#!/usr/bin/env bash
# A small x86-64 frame-pointer kernel from Debian's linux-source-6.1 (issue 13), for
# `stacksanity host qemu --kernel`. Debian packages only: no other download.
#
#   scripts/build-fp-kernel.sh [--design encoded] [--quiet]
#
# Prints the paths of the bzImage and vmlinux (KERNEL_IMAGE=… / KERNEL_VMLINUX=… lines, also
# written to <design dir>/kernel.env). Cached in $STACKSANITY_FPKERNEL_CACHE (default
# <repo>/.cache/fpkernel), laid out per source version and per entry design:
#
#   <cache>/<source package version>/<design>/
#       linux/       the source tree, patched for the design, built in place (incremental)
#       bzImage vmlinux config   the outputs of the last successful build
#       key          what that build was made from; equal key and intact outputs ⇒ no-op
#       sha256sums   the outputs' hashes, checked before a cached build is trusted
#       build.log    make's output
#
# The key is the source package version, the config fragment (scripts/fpkernel/fp.config), the
# design's patch and this recipe's revision, so editing any of them rebuilds (incrementally when
# the source version is the same). --design: only `encoded` (the entry code as 6.1 ships it) is
# built today; issue 18 adds `kernel_entry` and `section` as patches in scripts/fpkernel/designs/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RECIPE=1
SRC_PACKAGE=linux-source-6.1
TARBALL=/usr/src/linux-source-6.1.tar.xz
FRAGMENT=$REPO/scripts/fpkernel/fp.config
CACHE="${STACKSANITY_FPKERNEL_CACHE:-$REPO/.cache/fpkernel}"
JOBS="${STACKSANITY_FPKERNEL_JOBS:-2}"

design=encoded
quiet=0
while [ $# -gt 0 ]; do
  case "$1" in
    --design) design="${2:-}"; shift 2 ;;
    --design=*) design="${1#--design=}"; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-fp-kernel: unknown argument '$1' (usage: scripts/build-fp-kernel.sh [--design encoded] [--quiet])" >&2; exit 2 ;;
  esac
done
log() { [ "$quiet" = 1 ] || echo "build-fp-kernel: $*" >&2; }
die() { echo "build-fp-kernel: $*" >&2; exit 1; }

patch_file=
case "$design" in
  encoded) ;;
  kernel_entry|section)
    patch_file="$REPO/scripts/fpkernel/designs/$design.patch"
    [ -f "$patch_file" ] || die "design '$design' has no patch yet ($patch_file is issue 18's work); only 'encoded' builds today" ;;
  *) die "unknown design '$design' (expected encoded, kernel_entry or section)" ;;
esac

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
for pair in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils perl:perl objdump:binutils; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -f /usr/include/gelf.h ] || need+=(libelf-dev)   # objtool
[ -f "$TARBALL" ] || need+=("$SRC_PACKAGE")
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt_install "${need[@]}"
fi
[ -f "$TARBALL" ] || die "the Debian package '$SRC_PACKAGE' is installed but $TARBALL is missing"
version=$(dpkg-query -W -f='${Version}' "$SRC_PACKAGE" 2>/dev/null) || die "cannot read the version of the Debian package '$SRC_PACKAGE'"

dir="$CACHE/$version/$design"
src="$dir/linux"
patch_sum=none
[ -n "$patch_file" ] && patch_sum=$(sha256sum <"$patch_file" | cut -d' ' -f1)
key=$(printf 'recipe=%s\nsource=%s %s\nfragment=%s\npatch=%s\n' "$RECIPE" "$SRC_PACKAGE" "$version" \
  "$(sha256sum <"$FRAGMENT" | cut -d' ' -f1)" "$patch_sum")

emit() {
  cat >"$dir/kernel.env" <<EOF
KERNEL_IMAGE=$dir/bzImage
KERNEL_VMLINUX=$dir/vmlinux
KERNEL_CONFIG=$dir/config
KERNEL_SOURCE=$SRC_PACKAGE $version
KERNEL_DESIGN=$design
EOF
  cat "$dir/kernel.env"
}

# Trusted only when the key matches and the outputs are the bytes that build wrote (a copy cut
# short or edited by hand rebuilds).
if [ -s "$dir/bzImage" ] && [ -s "$dir/vmlinux" ] && [ -f "$dir/key" ] && [ "$(cat "$dir/key")" = "$key" ] \
  && (cd "$dir" && sha256sum --quiet --status -c sha256sums 2>/dev/null); then
  log "cached: $dir (nothing changed)"
  emit
  exit 0
fi

mkdir -p "$dir"
start=$(date +%s)

# The source tree: extracted once per source version and design; re-extracted only when the
# design's patch changed (a patched tree cannot be trusted to un-patch cleanly).
if [ ! -f "$src/Makefile" ] || [ "$(cat "$src/.stacksanity-patch" 2>/dev/null)" != "$patch_sum" ]; then
  log "extracting $TARBALL ($SRC_PACKAGE $version) into $src"
  rm -rf "$src" "$src.tmp"
  mkdir -p "$src.tmp"
  tar -xJf "$TARBALL" -C "$src.tmp" --strip-components=1
  if [ -n "$patch_file" ]; then
    patch -d "$src.tmp" -p1 --forward --batch <"$patch_file" >/dev/null || die "the patch $patch_file does not apply to $SRC_PACKAGE $version"
  fi
  echo "$patch_sum" >"$src.tmp/.stacksanity-patch"
  mv "$src.tmp" "$src"
fi

# The config: tinyconfig plus the fragment, then every fragment line verified.
log "configuring (tinyconfig + $(basename "$FRAGMENT"))"
make -C "$src" -s tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$FRAGMENT" >/dev/null
make -C "$src" -s olddefconfig >/dev/null
missing=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qx "$line" "$src/.config" || missing+=("$line") ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      grep -q "^$opt=" "$src/.config" && missing+=("$line") ;;
  esac
done <"$FRAGMENT"
[ ${#missing[@]} -eq 0 ] || die "Kconfig did not keep: ${missing[*]} (a dependency of these options is missing from $FRAGMENT)"

log "building with make -j$JOBS (log: $dir/build.log)"
if ! make -C "$src" -j"$JOBS" bzImage >"$dir/build.log" 2>&1; then
  tail -n 30 "$dir/build.log" >&2
  die "make failed (full log: $dir/build.log)"
fi
cp "$src/arch/x86/boot/bzImage" "$dir/bzImage.tmp" && mv "$dir/bzImage.tmp" "$dir/bzImage"
cp "$src/vmlinux" "$dir/vmlinux.tmp" && mv "$dir/vmlinux.tmp" "$dir/vmlinux"
cp "$src/.config" "$dir/config"
(cd "$dir" && sha256sum bzImage vmlinux >sha256sums)
printf '%s' "$key" >"$dir/key"
log "built in $(( $(date +%s) - start )) s: $(du -h "$dir/bzImage" | cut -f1) bzImage, $(du -h "$dir/vmlinux" | cut -f1) vmlinux"
emit
