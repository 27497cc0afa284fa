#!/usr/bin/env bash
# Build the three x86-64 entry designs of issue 18 (encoded, section, kernel_entry) from Debian's
# linux-source-6.1 with the small frame-pointer config (scripts/fpkernel/fp.config), each
# with the stock unwinder and, for section and kernel_entry, with the design's own unwinder patch.
#
#   bash scripts/build-design-kernels.sh [--design encoded|section|kernel_entry|all]
#                                        [--unwinder stock|patched|all] [--jobs N]
#
# Prints one line per build: DESIGN=… UNWINDER=… BZIMAGE=… VMLINUX=…
#
# Can also be sourced (e.g. by build-fp-kernel.sh): it then only defines the functions, of which
# build_design_kernel DESIGN UNWINDER is the entry point (prints the same line, returns non-zero on
# failure). STACKSANITY_FPKERNEL_CACHE, LINUX_SOURCE_TARBALL and DK_JOBS are read when it is sourced.
#
# Layout under ${STACKSANITY_FPKERNEL_CACHE:-<repo>/.cache/fpkernel}/<kernel version>/designs/:
#   base/linux             pristine source, built in base/linux/build: the encoded (stock) kernel
#   <design>-<unwinder>/linux  a hardlinked copy of base/linux with the design's patches applied
#                          (patch replaces the files it changes, so base stays pristine) and a full
#                          copy of base's build directory, so the first build of a variant only
#                          recompiles what its patches touch.
# The build directory is a direct subdirectory of the source tree, which makes Kbuild use the
# relative srctree "..": that is what lets a copied tree build incrementally at its new path.
# A stamp (hash of tarball identity, config fragment and patches) makes an unchanged rebuild a no-op;
# any change rebuilds the variant from a fresh copy of base.

DK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DK_PATCHES="$DK_REPO/patches/kernel"
DK_FRAGMENT="$DK_REPO/scripts/fpkernel/fp.config"
DK_TARBALL="${LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}"
DK_CACHE="${STACKSANITY_FPKERNEL_CACHE:-$DK_REPO/.cache/fpkernel}"
DK_JOBS="${DK_JOBS:-2}"

dk_log() { echo "build-design-kernels: $*" >&2; }

# The patches a (design, unwinder) pair applies, in order; empty for encoded.
dk_patches_for() {
  local design=$1 unwinder=$2
  case "$design/$unwinder" in
    encoded/stock) ;;
    section/stock | kernel_entry/stock) echo "$DK_PATCHES/$design/1-entry.patch" ;;
    section/patched | kernel_entry/patched)
      echo "$DK_PATCHES/$design/1-entry.patch"
      echo "$DK_PATCHES/$design/2-unwinder.patch" ;;
    encoded/patched) dk_log "the encoded design is the stock kernel: its unwinder is the stock one"; return 1 ;;
    *) dk_log "unknown design/unwinder '$design/$unwinder' (designs: encoded section kernel_entry; unwinders: stock patched)"; return 1 ;;
  esac
}

dk_check_tools() {
  local missing=() t
  for t in make gcc flex bison bc xz patch sha256sum; do
    command -v "$t" > /dev/null || missing+=("$t")
  done
  [[ -f /usr/include/libelf.h ]] || missing+=("libelf-dev")
  [[ -f /usr/include/openssl/ssl.h ]] || missing+=("libssl-dev")
  if ((${#missing[@]})); then
    dk_log "missing build tools: ${missing[*]} (apt-get install build-essential flex bison bc xz-utils patch libelf-dev libssl-dev)"
    return 1
  fi
  if [[ ! -f "$DK_TARBALL" ]]; then
    dk_log "no kernel source at $DK_TARBALL (apt-get install linux-source-6.1, or set LINUX_SOURCE_TARBALL)"
    return 1
  fi
}

# Identity of the tarball without reading 140 MB: path, size, mtime.
dk_tarball_id() { stat -c '%n %s %Y' "$DK_TARBALL"; }

# Extract the tarball once; sets DK_VERSION and DK_ROOT (<cache>/<version>/designs).
dk_extract() {
  local idfile="$DK_CACHE/designs-source.id" id
  id="$(dk_tarball_id)"
  if [[ -f "$idfile" ]] && [[ "$(head -1 "$idfile")" == "$id" ]]; then
    DK_VERSION="$(sed -n 2p "$idfile")"
    DK_ROOT="$DK_CACHE/$DK_VERSION/designs"
    [[ -f "$DK_ROOT/base/linux/Makefile" ]] && return 0
  fi
  mkdir -p "$DK_CACHE"
  local tmp="$DK_CACHE/.designs-extract.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  dk_log "extracting $DK_TARBALL"
  tar -xJf "$DK_TARBALL" -C "$tmp"
  local top
  top="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -1)"
  [[ -f "$top/Makefile" ]] || { dk_log "no Makefile at the top of $DK_TARBALL"; rm -rf "$tmp"; return 1; }
  DK_VERSION="$(awk -F' = ' '/^VERSION =/{v=$2} /^PATCHLEVEL =/{p=$2} /^SUBLEVEL =/{s=$2} END{print v"."p"."s}' "$top/Makefile")"
  DK_ROOT="$DK_CACHE/$DK_VERSION/designs"
  rm -rf "$DK_ROOT/base" && mkdir -p "$DK_ROOT/base"
  mv "$top" "$DK_ROOT/base/linux"
  rm -rf "$tmp"
  printf '%s\n%s\n' "$id" "$DK_VERSION" > "$idfile"
}

dk_hash() { cat "$@" | sha256sum | cut -c1-16; }

# Configure and build base (the encoded design, stock unwinder).
dk_build_base() {
  local base="$DK_ROOT/base/linux" stamp want
  stamp="$DK_ROOT/base/stamp"
  want="$(dk_tarball_id | sha256sum | cut -c1-8)-$(dk_hash "$DK_FRAGMENT")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$base/build/arch/x86/boot/bzImage" ]]; then
    return 0
  fi
  rm -f "$stamp"
  if [[ ! -f "$base/build/.config" ]] || ! grep -q "^# fragment $want" "$base/build/.fragment-id" 2> /dev/null; then
    rm -rf "$base/build" && mkdir -p "$base/build"
    make -C "$base" O=build tinyconfig > /dev/null
    cat "$DK_FRAGMENT" >> "$base/build/.config"
    # olddefconfig warns about every symbol the fragment overrides: expected, so kept in a log.
    make -C "$base" O=build olddefconfig > "$DK_ROOT/base/config.log" 2>&1 \
      || { tail -20 "$DK_ROOT/base/config.log" >&2; return 1; }
    echo "# fragment $want" > "$base/build/.fragment-id"
  fi
  dk_check_config "$base/build/.config" || return 1
  dk_log "building base (encoded, stock unwinder) in $base/build"
  dk_make "$base" "$DK_ROOT/base/build.log"
  # objtool's own build records absolute paths: the clones rewrite them (see build_design_kernel).
  echo "$base" > "$DK_ROOT/base/built-at"
  echo "$want" > "$stamp"
}

# Every line of the fragment must have survived olddefconfig (an option whose dependency is missing
# is silently dropped), and so must the options the designs themselves depend on.
dk_check_config() {
  local cfg=$1 line opt missing=()
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qx "$line" "$cfg" || missing+=("$line") ;;
      "# CONFIG_"*" is not set")
        opt=${line#\# }; opt=${opt%% *}
        grep -q "^$opt=" "$cfg" && missing+=("$line") ;;
    esac
  done < "$DK_FRAGMENT"
  for opt in CONFIG_64BIT CONFIG_UNWINDER_FRAME_POINTER CONFIG_FRAME_POINTER CONFIG_MAGIC_SYSRQ CONFIG_KALLSYMS_ALL CONFIG_STACKTRACE; do
    grep -q "^$opt=y" "$cfg" || missing+=("$opt=y")
  done
  if ((${#missing[@]})); then
    dk_log "Kconfig did not keep: ${missing[*]} (a dependency of these options is missing from $DK_FRAGMENT)"
    return 1
  fi
}

dk_make() {
  local tree=$1 log=$2 t0 t1
  t0=$(date +%s.%N)
  if ! make -C "$tree" O=build -j"$DK_JOBS" bzImage > "$log" 2>&1; then
    dk_log "build failed in $tree; last lines of $log:"
    tail -20 "$log" >&2
    return 1
  fi
  t1=$(date +%s.%N)
  dk_log "built $tree in $(echo "$t1 - $t0" | bc | xargs printf '%.1f') s"
}

build_design_kernel() {
  local design=$1 unwinder=$2 patches
  patches="$(dk_patches_for "$design" "$unwinder")" || return 1
  dk_check_tools || return 1
  dk_extract || return 1
  dk_build_base || return 1
  local dir tree
  if [[ "$design" == encoded ]]; then
    tree="$DK_ROOT/base/linux"
  else
    dir="$DK_ROOT/$design-$unwinder"
    tree="$dir/linux"
    local want p
    # shellcheck disable=SC2086
    want="$(cat "$DK_ROOT/base/stamp")-$(dk_hash $patches)"
    if ! [[ -f "$dir/stamp" && "$(cat "$dir/stamp")" == "$want" && -f "$tree/build/arch/x86/boot/bzImage" ]]; then
      rm -rf "$dir" && mkdir -p "$dir"
      # Hardlinked source (cheap), real copy of the build directory (make rewrites files in it).
      cp -al "$DK_ROOT/base/linux" "$tree"
      rm -rf "$tree/build"
      cp -a "$DK_ROOT/base/linux/build" "$tree/build"
      # Kbuild itself uses the relative srctree "..", but tools/objtool is built with absolute
      # paths, so at the new path it would be rebuilt - and every object depends on the objtool
      # binary (cmd_gen_objtooldep), so the whole kernel with it. Point its records at the copy.
      local old
      old="$(cat "$DK_ROOT/base/built-at" 2> /dev/null || echo "$DK_ROOT/base/linux")"
      grep -rlZ --include='*.cmd' --include='*.d' "$old/" "$tree/build/tools" 2> /dev/null \
        | xargs -0 -r sed -i "s|$old/|$tree/|g"
      for p in $patches; do
        # patch writes each changed file anew, breaking its hardlink: base is not modified.
        if ! patch -s -p1 -d "$tree" < "$p"; then
          dk_log "$p does not apply to $DK_VERSION"
          return 1
        fi
      done
      dk_log "building $design with the $unwinder unwinder in $tree/build"
      dk_make "$tree" "$dir/build.log" || return 1
      echo "$want" > "$dir/stamp"
    fi
  fi
  echo "DESIGN=$design UNWINDER=$unwinder BZIMAGE=$tree/build/arch/x86/boot/bzImage VMLINUX=$tree/build/vmlinux"
}

dk_main() {
  local designs="encoded section kernel_entry" unwinders="stock patched" d u
  while (($#)); do
    case "$1" in
      --design) [[ "$2" == all ]] || designs="$2"; shift 2 ;;
      --unwinder) [[ "$2" == all ]] || unwinders="$2"; shift 2 ;;
      --jobs) DK_JOBS="$2"; shift 2 ;;
      -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) dk_log "unknown argument '$1' (try --help)"; return 2 ;;
    esac
  done
  local built=0
  for d in $designs; do
    for u in $unwinders; do
      # encoded has only the stock unwinder: skipped in a sweep, an error when it is all that was asked.
      [[ "$d/$u" == encoded/patched && "$designs $unwinders" != "encoded patched" ]] && continue
      build_design_kernel "$d" "$u" || return 1
      built=$((built + 1))
    done
  done
  ((built > 0))
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  dk_main "$@"
fi
