#!/usr/bin/env bash
# Install what the project needs on Debian 12, only where it is missing.
#
#   scripts/bootstrap.sh quickstart   # FUSE and NFS client tools, Rust
#   scripts/bootstrap.sh test         # + QEMU, Xen and a dom0 kernel for the VM tests
#   scripts/bootstrap.sh bench        # + what cargo xtask bench runs and compares against
#
# Uses apt-get as root (or through sudo). Installs Rust with rustup when no
# cargo is on PATH, and adds the x86_64-unknown-none target the Xen kernel
# and the no_std checks build for.
set -euo pipefail

profile=${1:-quickstart}
packages=(fuse3 libfuse3-dev pkg-config libnfs-utils e2fsprogs util-linux curl ca-certificates gcc libc6-dev)
if [ "$profile" = test ]; then
    packages+=(qemu-system-x86 xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils
               linux-image-amd64 busybox-static cpio file kmod bash gzip xz-utils libxen-dev binutils
               nfs-common dnsmasq-base)
fi
if [ "$profile" = bench ]; then
    packages+=(fio postmark bindfs nfs-ganesha nfs-ganesha-vfs iproute2 make
               libapr1-dev libaprutil1-dev libpcre2-dev bison flex)
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "bootstrap: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "bootstrap: installing Rust with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx x86_64-unknown-none; then
    rustup target add x86_64-unknown-none >&2
fi
if [ "$profile" = test ]; then
    # The POSIX suite that guest-driver/tests/pjdfstest.rs runs on a mount.
    if ! command -v pjdfstest >/dev/null; then
        echo "bootstrap: installing pjdfstest" >&2
        cargo install pjdfstest --version 0.2.2 --locked >&2
    fi
    # Its second dummy user (Debian has nobody, not tests).
    if ! id tests >/dev/null 2>&1; then
        as_root groupadd -f tests
        as_root useradd -M -g tests -s /usr/sbin/nologin -d / tests
    fi
fi
