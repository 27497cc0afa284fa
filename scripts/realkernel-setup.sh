#!/usr/bin/env bash
# Real-kernel host setup (issue 7), from Debian's packages only; CI runs it too.
#  - installs qemu-system-x86, busybox-static and xz-utils when missing (tools, not the kernel);
#  - downloads the linux-image-*-amd64 package that linux-image-amd64 currently depends on and
#    extracts only its /boot files into the cache (never installs a kernel into the system);
#  - writes .cache/realkernel/current.env naming the kernel image the TypeScript side boots.
# Idempotent: a cached kernel is reused; only `apt-get update` and the .deb download touch the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${STACKSANITY_REALKERNEL_CACHE:-$PWD/.cache/realkernel}"
mkdir -p "$CACHE/debs"

updated=0
apt_update() { if [ "$updated" = 0 ]; then apt-get update -qq; updated=1; fi; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The versioned image package the meta package points at (package versions drift: ask apt).
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt_update
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "realkernel-setup: linux-image-amd64 depends on no linux-image-*-amd64 package" >&2; exit 1; }
kver=${pkg#linux-image-}
root="$CACHE/$pkg"
image="$root/boot/vmlinuz-$kver"

if [ ! -s "$image" ]; then
  # Not cached yet (or a new kernel): download and extract.
  deb=$(ls "$CACHE"/debs/"${pkg}"_*_amd64.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ] && [ "$updated" = 0 ]; then
    # Fresh lists before downloading: a stale list may name a kernel the mirror no longer has.
    apt_update
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    kver=${pkg#linux-image-}
    root="$CACHE/$pkg"
    image="$root/boot/vmlinuz-$kver"
    deb=$(ls "$CACHE"/debs/"${pkg}"_*_amd64.deb 2>/dev/null | head -n1 || true)
  fi
  if [ -z "$deb" ]; then
    (cd "$CACHE/debs" && apt-get download -qq "$pkg" 2>&1 | grep -v 'unsandboxed' || true)
    deb=$(ls "$CACHE"/debs/"${pkg}"_*_amd64.deb 2>/dev/null | head -n1 || true)
  fi
  [ -n "$deb" ] || { echo "realkernel-setup: could not download $pkg" >&2; exit 1; }
  mkdir -p "$root.tmp"
  # Only /boot: the 400 MB of modules are not needed (the guest runs a busybox initramfs).
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$root.tmp" --wildcards './boot/*'
  rm -rf "$root" && mv "$root.tmp" "$root"
fi

cat >"$CACHE/current.env" <<EOF
KERNEL_PACKAGE=$pkg
KERNEL_RELEASE=$kver
KERNEL_IMAGE=$image
KERNEL_CONFIG=$root/boot/config-$kver
BUSYBOX=/bin/busybox
EOF
echo "realkernel-setup: $pkg ready in $root ($(qemu-system-x86_64 --version | head -n1))"
