# Helpers for qemu-tests/run.sh: building initramfs trees from the host's
# Debian packages. Sourced, not run.

# Copy executable $2 (and every library ldd names) into root $1 as $3.
initramfs_copy_program() {
    local root=$1 source=$2 target=${3:-$2} library
    mkdir -p "$root$(dirname "$target")"
    cp -L "$source" "$root$target"
    for library in $(ldd "$source" 2>/dev/null | grep -o '/[^ ]*'); do
        if [ ! -e "$root$library" ]; then
            mkdir -p "$root$(dirname "$library")"
            cp -L "$library" "$root$library"
        fi
    done
}

# Copy kernel modules $3... of kernel $2 with their dependencies into root $1.
initramfs_copy_modules() {
    local root=$1 release=$2 module file
    shift 2
    for module in "$@"; do
        for file in $(modprobe -S "$release" --show-depends "$module" | awk '$1 == "insmod" {print $2}'); do
            mkdir -p "$root$(dirname "$file")"
            cp "$file" "$root$file"
        done
    done
    cp /lib/modules/"$release"/modules.order /lib/modules/"$release"/modules.builtin* "$root/lib/modules/$release/"
    depmod -b "$root" "$release"
}

# busybox-static with a link per applet.
initramfs_install_busybox() {
    local root=$1 applet
    mkdir -p "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
}

# newc cpio of root $1, gzip'ed into $2.
initramfs_pack() {
    (cd "$1" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$2"
}

# Debian's bzImage carries an XZ-compressed vmlinux; Xen loads the plain
# ELF too and skips seconds of decompression under TCG.
extract_vmlinux() {
    local bzimage=$1 output=$2 offset
    offset=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$bzimage" | head -1 | cut -d: -f1)
    [ -n "$offset" ] || return 1
    tail -c +$((offset + 1)) "$bzimage" | xz -dc > "$output" 2>/dev/null || true
    file "$output" | grep -q 'ELF 64-bit'
}
