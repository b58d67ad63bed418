#!/usr/bin/env bash
# The storage domain's boot test: Xen 4.17 + a Debian dom0 under QEMU
# (TCG), the PV kernel created with `xl create xen-cfg/storage-domain.cfg`
# on a disk image made by `storage-domain-hosted mkfs`, then checked from
# the host with `storage-domain-hosted fsck/ls/get`.
#
# Steps (dom0 side in qemu-tests/dom0-init.sh): seed known files + clean
# `xl shutdown`; commit loop + `xl destroy`; reboot that must find the
# last commit and the known files; NFS over TCP from dom0 across the
# xenbr0 bridge, the domain's address leased by dnsmasq in dom0
# (ip=dhcp) and read from xenstore (data/ip), with libnfs's
# nfs-cp/nfs-cat/nfs-ls (a file copied in, read back, listed) and the
# Linux kernel client (mount.nfs, read, write, umount), then 64 TCP
# clients held open (16 of them stalled mid-record) and a 65th kernel
# client that still mounts, reads and writes, the files then checked on
# the image from the host); a deliberate panic; a page fault. Exits
# non-zero if any step is missing; the serial log is kept and its path
# printed.
#
# Needs root-free QEMU only, but the packages of `scripts/bootstrap.sh
# test`. Environment: QEMU_TESTS_WORK (work directory), QEMU_TIMEOUT
# (seconds, default 2400 plus 60 per guest destroy cycle beyond 2 and 10
# per mount beyond 8: the run takes 6-8 minutes on a quiet 2-core
# machine, twice that beside another build, and took 1,465 s on a host
# whose hypervisor stole 30% of the time; the timeout catches a hang,
# not slowness),
# QEMU_TESTS_GUEST_CYCLES (Linux guests created, attached, mounted and
# destroyed one after another; default 2), QEMU_TESTS_MANY_MOUNTS (of the
# 60 devices dom0 attaches to reach the storage domain's limit, how many
# are mounted at once; default 8, 60 connects every one),
# QEMU_TESTS_DISK_SEGMENTS (disk_segments= for the NFS and VRPC boots'
# storage domains, to compare plain disk requests, 11, with the default
# indirect ones; unset: the domain's default), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/qemu-tests/lib.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
WORK=${QEMU_TESTS_WORK:-$TARGET/qemu-tests}
GUEST_CYCLES=${QEMU_TESTS_GUEST_CYCLES:-2}
case "$GUEST_CYCLES" in ''|*[!0-9]*) echo "QEMU_TESTS_GUEST_CYCLES must be a number, not '$GUEST_CYCLES'" >&2; exit 2 ;; esac
MANY_MOUNTS=${QEMU_TESTS_MANY_MOUNTS:-8}
DISK_SEGMENTS=${QEMU_TESTS_DISK_SEGMENTS:-}
case "$DISK_SEGMENTS" in *[!0-9]*) echo "QEMU_TESTS_DISK_SEGMENTS must be a number, not '$DISK_SEGMENTS'" >&2; exit 2 ;; esac
case "$MANY_MOUNTS" in ''|*[!0-9]*) echo "QEMU_TESTS_MANY_MOUNTS must be a number, not '$MANY_MOUNTS'" >&2; exit 2 ;; esac
[ "$MANY_MOUNTS" -ge 1 ] && [ "$MANY_MOUNTS" -le 60 ] || { echo "QEMU_TESTS_MANY_MOUNTS must be 1 to 60, not $MANY_MOUNTS" >&2; exit 2; }
TIMEOUT=${QEMU_TIMEOUT:-$((2400 + 60 * (GUEST_CYCLES > 2 ? GUEST_CYCLES - 2 : 0) + 10 * (MANY_MOUNTS > 8 ? MANY_MOUNTS - 8 : 0)))}
XEN_VERSION=4.17
XEN_BIN=/usr/lib/xen-$XEN_VERSION/bin
SERIAL=$WORK/serial.log
started=$(date +%s)

say() { echo "[qemu-tests $(date +%T)] $*" >&2; }
failures=0
check() {  # check DESCRIPTION COMMAND...
    if "${@:2}"; then echo "ok    $1"; else echo "FAIL  $1"; failures=$((failures + 1)); fi
}

for tool in qemu-system-x86_64 busybox cpio xz modprobe depmod nfs-cp nfs-cat nfs-ls mount.nfs dnsmasq; do
    command -v "$tool" >/dev/null || { say "missing $tool: run scripts/bootstrap.sh test"; exit 2; }
done
[ -e /boot/xen-$XEN_VERSION-amd64.gz ] || { say "missing Xen $XEN_VERSION: run scripts/bootstrap.sh test"; exit 2; }

rm -rf "$WORK"
mkdir -p "$WORK/dom0"

# 1. Build the PV kernel (bare metal) and the hosted image tools.
say "building the PV kernel and the hosted tools"
(cd "$ROOT/storage-domain/xen" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --target x86_64-unknown-none)
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --quiet -p storage-domain-hosted)
# guest-driver and the attach command run inside the emulated machine:
# release builds (a debug build is several times slower under TCG).
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --release -p guest-driver -p storage-domain-ctl)
GUEST_DRIVER=$TARGET/release/guest-driver
CTL=$TARGET/release/storage-domain-ctl
KERNEL=$TARGET/x86_64-unknown-none/release/storage-domain-xen
HOSTED=$TARGET/debug/storage-domain-hosted
objcopy --strip-debug "$KERNEL" "$WORK/storage-domain-xen"
say "kernel image: $(stat -c %s "$WORK/storage-domain-xen") bytes stripped ($(stat -c %s "$KERNEL") with debug info)"

# 2. The disk: an empty file system.
IMAGE=$WORK/disk.img
"$HOSTED" mkfs "$IMAGE" --size 64M >/dev/null

# 3. dom0: Debian's kernel, busybox, the toolstack, the storage domain.
RELEASE=$(ls /boot/vmlinuz-*-amd64 | sed 's|^/boot/vmlinuz-||' | sort -V | tail -1)
zcat /boot/xen-$XEN_VERSION-amd64.gz > "$WORK/xen.elf"
if ! extract_vmlinux /boot/vmlinuz-"$RELEASE" "$WORK/vmlinux"; then
    cp /boot/vmlinuz-"$RELEASE" "$WORK/vmlinux"
fi
# The Linux test guest (a PV domU): busybox, guest-driver, the xenstore
# tools for its turns with dom0, pjdfstest, and the modules it loads.
G=$WORK/guest
initramfs_install_busybox "$G"
mkdir -p "$G"/{proc,sys,dev,tmp,etc,mnt}
initramfs_copy_program "$G" "$GUEST_DRIVER" /usr/bin/guest-driver
for program in xenstore-read xenstore-write; do
    initramfs_copy_program "$G" /usr/bin/$program
done
if command -v pjdfstest >/dev/null; then
    initramfs_copy_program "$G" "$(command -v pjdfstest)" /usr/bin/pjdfstest
    cp "$ROOT/guest-driver/tests/pjdfstest.toml" "$G/etc/pjdfstest.toml"
fi
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$G/lib/x86_64-linux-gnu/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\ntests:x:1000:1000:tests:/:/bin/false\n' > "$G/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\ntests:x:1000:\n' > "$G/etc/group"
initramfs_copy_modules "$G" "$RELEASE" xen-evtchn xen-gntdev xen-gntalloc fuse xen-netfront nfsv3
# The kernel NFS client the ratios compare against.
initramfs_copy_program "$G" "$(command -v mount.nfs)" /sbin/mount.nfs
cp /etc/netconfig /etc/services /etc/protocols "$G/etc/"
install -m 0755 "$ROOT/qemu-tests/guest-init.sh" "$G/init"
initramfs_pack "$G" "$WORK/guest.cpio.gz"
say "guest initramfs: $(stat -c %s "$WORK/guest.cpio.gz") bytes"

R=$WORK/dom0
initramfs_install_busybox "$R"
mkdir -p "$R"/{proc,sys,dev,run,tmp,etc/xen,boot,var/lib/xen,var/lib/xenstored,var/log/xen/console,usr/lib/storage-domain}
ln -s ../run "$R/var/run"
initramfs_copy_program "$R" /bin/bash
initramfs_copy_program "$R" /usr/bin/flock
# glibc loads libgcc_s for thread cancellation; xl aborts without it.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$R/lib/x86_64-linux-gnu/"
for program in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
    initramfs_copy_program "$R" "$XEN_BIN/$program"
done
# The NFS clients of the network step: libnfs's tools (user space) and
# the kernel's client through mount.nfs (libtirpc reads /etc/netconfig).
for program in nfs-cp nfs-cat nfs-ls mount.nfs; do
    initramfs_copy_program "$R" "$(command -v $program)"
done
cp /etc/netconfig /etc/services /etc/protocols "$R/etc/"
# The DHCP server the storage domain's ip=dhcp leases from.
initramfs_copy_program "$R" "$(command -v dnsmasq)"
# The hotplug scripts (bash) talk to xenstore through these.
for program in xenstore-read xenstore-write xenstore-exists xenstore-rm xenstore-list xenstore-ls; do
    initramfs_copy_program "$R" /usr/bin/$program
done
cp -a /etc/xen/scripts "$R/etc/xen/"
[ -e /etc/xen/xl.conf ] && cp /etc/xen/xl.conf "$R/etc/xen/"
initramfs_copy_modules "$R" "$RELEASE" xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback bridge nfsv3 ata_piix sd_mod fuse
# VRPC: dom0 attaches guests (storage-domain-ctl) and mounts too.
initramfs_copy_program "$R" "$CTL" /usr/bin/storage-domain-ctl
initramfs_copy_program "$R" "$GUEST_DRIVER" /usr/bin/guest-driver
cp "$WORK/vmlinux" "$WORK/guest.cpio.gz" "$R/usr/lib/storage-domain/"
cp "$ROOT/qemu-tests/guest.cfg" "$R/etc/xen/guest.cfg"
echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"
echo "root:x:0:" > "$R/etc/group"
cp "$WORK/storage-domain-xen" "$R/usr/lib/storage-domain/storage-domain-xen"
cp "$ROOT/xen-cfg/storage-domain.cfg" "$R/etc/xen/storage-domain.cfg"
cp "$ROOT/qemu-tests/dom0-init.sh" "$R/init"
initramfs_pack "$R" "$WORK/dom0.cpio.gz"

# 4. Boot. Xen is a multiboot kernel; dom0's kernel and initramfs are its
#    modules. -no-reboot turns dom0's poweroff (or a Xen panic) into exit.
say "booting Xen under QEMU (timeout ${TIMEOUT}s); serial log: $SERIAL"
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=768M,max:768M loglvl=all guest_loglvl=all"
DOM0_ARGS="console=hvc0 loglevel=4 sdt_guest_cycles=$GUEST_CYCLES sdt_many_mounts=$MANY_MOUNTS${DISK_SEGMENTS:+ sdt_disk_segments=$DISK_SEGMENTS}"
boot_started=$(date +%s)
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu qemu64 -smp 2 -m 1536 \
    -display none -monitor none -serial stdio -no-reboot \
    -drive file="$IMAGE",format=raw,if=ide,index=0,media=disk \
    -kernel "$WORK/xen.elf" -append "$XEN_ARGS" \
    -initrd "$WORK/vmlinux $DOM0_ARGS,$WORK/dom0.cpio.gz" </dev/null 2>&1 \
    | stdbuf -oL tr -d '\r' > "$SERIAL"
qemu_status=${PIPESTATUS[0]}
set -e
boot_seconds=$(( $(date +%s) - boot_started ))
say "QEMU exited with status $qemu_status after ${boot_seconds}s"

# 5. Verdict: the dom0 steps, then the image from the host.
echo "=== storage domain on Xen under QEMU"
grep -E '^SDT-(OK|FAIL)' "$SERIAL" || true
check "qemu exited by itself (status $qemu_status)" test "$qemu_status" = 0
check "Xen booted" grep -q "Xen version $XEN_VERSION" "$SERIAL"
for step in "toolstack" "disk /dev/sda" "seed boot: create-to-self-check" "seed files" \
            "seed shutdown: domain gone" "seed shutdown: flushed" "churn destroyed after commit" \
            "verify boot: create-to-self-check" "verify known files" "recovered churn commits" \
            "verify shutdown: domain gone" "verify shutdown: flushed" \
            "bridge xenbr0" "dhcp server on xenbr0" "nfs boot: serving" "nfs: dhcp lease on the console" "nfs: ping" "nfs: nfs-cp in" "nfs: nfs-cat back" \
            "nfs: nfs-ls lists the file" "nfs: read-only export read" "nfs: write to read-only export refused" \
            "nfs: kernel mount" "nfs: kernel read" "nfs: kernel write" "nfs: kernel umount" \
            "tcp: 64 connections held" "tcp: 65th client mounted" "tcp: 65th client read" \
            "tcp scaling: 1 clients" "tcp scaling: 8 clients" "tcp scaling: 32 clients" \
            "tcp: 65th client write" "tcp: stalled clients dropped" \
            "nfs shutdown: domain gone" "nfs shutdown: flushed" \
            "vrpc boot: serving guests" "vrpc: export refused with the reason" "vrpc: attached guest1" \
            "vrpc: guest1 mounted" "vrpc: dom0 mounted" "vrpc: dom0 changed shared.txt" "vrpc: dom0 detached" \
            "vrpc: 20 attach/kill/detach cycles" "vrpc locks: a flock through device" "vrpc snapshots: taken from dom0" "vrpc stats: storage-domain-ctl stats shows" "vrpc many: all detached" "vrpc: $GUEST_CYCLES guest create/attach/mount/destroy cycles" \
            "vrpc: storage domain destroyed under the guest's mount" \
            "vrpc: storage domain recreated and guest1 re-attached" \
            "vrpc: guest destroyed while mounted, storage domain detached it" \
            "vrpc shutdown: domain gone" "vrpc shutdown: flushed" "panic: domain crashed" \
            "panic: message on console" "fault: domain crashed" "fault: report on console" "dom0 done"; do
    check "dom0: $step" grep -q "^SDT-OK $step" "$SERIAL"
done
check "no failed dom0 step" bash -c "! grep -q '^SDT-FAIL' '$SERIAL'"
# The Linux guest's own checks, from its console.
for step in "boot" "mount: attach-to-mounted" "16MiB write" "16MiB read back identical" "stat pass: 1000 files" \
            "dom0's change seen" "kernel NFS mount over the vif" "ratios VRPC/NFS" "mixed: stat 1000 files over NFS" "pjdfstest subset" "calls fail after the storage domain died" \
            "reconnected after the storage domain restarted" "a file opened before the restart is still readable" \
            "guest done"; do
    check "guest1: $step" grep -q "^\[guest1\] GDT-OK $step" "$SERIAL"
done
check "no failed guest step" bash -c "! grep -q '^\[guest1\] GDT-FAIL' '$SERIAL'"
check "vrpc connection line" grep -qE '^\[sd-vrpc(-first)?\] vrpc: domain [0-9]+ device 0 connected to export /vrpc' "$SERIAL"
big_md5=$(sed -n 's/^\[guest1\] GDT-BIG-MD5 \([0-9a-f]*\).*/\1/p' "$SERIAL" | head -1)
check "get /big (written by the guest over VRPC)" bash -c "'$HOSTED' get '$IMAGE' /big '$WORK/big' >/dev/null 2>&1"
check "big's content equals the guest's (md5 $big_md5)" bash -c "[ -n '$big_md5' ] && [ \"\$(md5sum < '$WORK/big' | cut -d' ' -f1)\" = '$big_md5' ]"

check "banner printed" grep -q '^\[sd-seed\] storage-domain .* on Xen' "$SERIAL"
check "self-check line" grep -qE '^\[sd-seed\] fs ok: [0-9]+ inodes, [0-9]+ free blocks' "$SERIAL"
check "nfs server constructed over the volume" grep -q '^\[sd-seed\] nfs: server constructed' "$SERIAL"
check "read-only export listed" grep -q '^\[sd-seed\] export: /known -> /known (read-only' "$SERIAL"
check "network line printed" grep -qE '^\[sd-nfs\] network: vif 0 .*address by DHCP' "$SERIAL"
check "static address line printed" grep -qE '^\[sd-vrpc\] network: vif 0 .*10\.0\.0\.2/24' "$SERIAL"
check "network counters at shutdown (64 at most, some evicted, 16 stalled)" \
    grep -qE '^\[sd-nfs\] network: [1-9][0-9]* connections \(at most 64 at once, [1-9][0-9]* evicted, 16 stalled\), [1-9][0-9]* records' "$SERIAL"
check "panic location printed" grep -q '^\[sd-panic\] storage-domain panicked at .*kernel.rs' "$SERIAL"

check "page fault reported with its address" grep -qE '^\[sd-fault\] storage-domain fault: page fault \(vector 14\) at rip 0xffffffff8[0-9a-f]+, .*address 0xffffffff8' "$SERIAL"
check "fsck clean" "$HOSTED" fsck "$IMAGE"
get() { "$HOSTED" get "$IMAGE" "$1" "$WORK/$2" >/dev/null 2>&1; }
check "get /known/hello.txt" get /known/hello.txt hello.txt
check "hello.txt content" bash -c "[ \"\$(cat '$WORK/hello.txt')\" = 'hello from the storage domain' ]"
check "get /known/lines.txt" get /known/lines.txt lines.txt
seq -f 'line %06g' 0 19999 > "$WORK/lines.expected"
check "lines.txt content" cmp -s "$WORK/lines.txt" "$WORK/lines.expected"
check "get /nfs/payload.txt (written over NFS)" get /nfs/payload.txt payload.txt
seq -f 'payload line %07g' 0 49999 > "$WORK/payload.expected"
check "payload.txt content (1050000 bytes)" cmp -s "$WORK/payload.txt" "$WORK/payload.expected"
check "get /nfs/kernel.txt (written by the kernel client)" get /nfs/kernel.txt kernel.txt
check "kernel.txt content" cmp -s "$WORK/kernel.txt" "$WORK/payload.expected"
check "get /nfs/client65.txt (written by the 65th client)" get /nfs/client65.txt client65.txt
check "client65.txt content" bash -c "[ \"\$(cat '$WORK/client65.txt')\" = 'written by the 65th client' ]"
check "nothing written in the read-only export" bash -c "! '$HOSTED' ls '$IMAGE' /known | grep -q refused"
check "self-check probe removed" bash -c "! '$HOSTED' ls '$IMAGE' / | grep -q storage-domain-self-check"
last=$(sed -n 's/^SDT-CHURN-LAST //p' "$SERIAL" | tail -1)
check "get /churn.log" get /churn.log churn.log
churn_ok() {
    local count
    count=$(wc -l < "$WORK/churn.log")
    seq -f 'commit %g' 1 "$count" | cmp -s - "$WORK/churn.log" && [ -n "$last" ] && [ "$count" -ge "$last" ]
}
check "churn.log is commits 1..K with K >= $last" churn_ok

echo "--- measurements"
echo "kernel image: $(stat -c %s "$WORK/storage-domain-xen") bytes (stripped)"
grep -o 'create-to-self-check [0-9.]* s' "$SERIAL" | sed 's/^/xl create to self-check: /' || true
sed -n 's/^SDT-OK nfs: nfs-cp in \([0-9]* bytes in [0-9.]* s\).*/nfs-cp into the domain: \1/p' "$SERIAL" || true
sed -n 's/^SDT-OK nfs: nfs-cat back \([0-9]* bytes in [0-9.]* s\).*/nfs-cat from the domain: \1/p' "$SERIAL" || true
sed -n 's/^SDT-OK nfs: kernel \(read\|write\) \([0-9]* bytes in [0-9.]* s\).*/kernel NFS client \1: \2/p' "$SERIAL" || true
grep -m1 -o '^\[sd-nfs\] shutdown.*heap [0-9]* KiB used' "$SERIAL" | sed 's/.*heap/sd-nfs heap at shutdown:/' || true
grep -m1 -o 'heap [0-9]* KiB used of [0-9]* KiB' "$SERIAL" | sed 's/^/sd-seed /' || true
grep -m1 -E '^sd-seed +[0-9]+ +[0-9]+' "$SERIAL" | awk '{print "xl list memory: " $3 " MiB"}' || true
sed -n 's/^SDT-DISK-BENCH disk bench: /disk bench (sd-verify): /p' "$SERIAL" | head -1 || true
sed -n 's/^\[guest1\] GDT-OK \(mount: attach-to-mounted [0-9.]* s\).*/guest1 \1/p; s/^\[guest1\] GDT-OK \(16MiB [a-z ]* [0-9.]* s\).*/guest1 \1/p; s/^\[guest1\] GDT-OK \(stat pass: .*LOOKUP RPCs\).*/guest1 \1/p; s/^\[guest1\] GDT-OK \(dom0.s change seen .*\) t=.*/guest1 \1/p; s/^\[guest1\] GDT-OK \(pjdfstest subset: .*\) t=.*/guest1 \1/p' "$SERIAL" || true
sed -n 's/^\[guest1\] GDT-OK \(mixed: .*\) t=.*/guest1 \1/p' "$SERIAL" || true
sed -n 's/^\[guest1\] GDT-RATIO \([A-Za-z0-9]*\) \([0-9.]*\) \([0-9.]*\).*/ratio \1: VRPC \2 s, kernel NFS \3 s/p' "$SERIAL" | awk '{ printf "%s (NFS/VRPC %.2f)\n", $0, ($8 > 0 && $4 > 0) ? $8 / $4 : 0 }' || true
grep -hoE '^\[sd-vrpc(-first)?\] vrpc: domain [0-9]+ device [0-9]+ (connected|detached).*' "$SERIAL" || true
echo "QEMU run: ${boot_seconds}s; whole qemu-tests run: $(( $(date +%s) - started ))s"
if [ "$failures" = 0 ]; then
    attach=$(sed -n 's/^\[guest1\] GDT-OK mount: attach-to-mounted \([0-9.]*\) s.*/\1/p' "$SERIAL" | head -1)
    stats=$(sed -n 's/^\[guest1\] GDT-OK stat pass: 1000 files in \([0-9.]*\) s, \([0-9]*\) table hits, \([0-9]*\) kernel cache, \([0-9]*\) GETATTR, \([0-9]*\) LOOKUP.*/\1 s, \2 table hits, \3 from the kernel cache, \4 GETATTR and \5 LOOKUP RPCs/p' "$SERIAL" | head -1)
    seen=$(sed -n 's/^\[guest1\] GDT-OK dom0.s change seen (size [0-9]* -> [0-9]*) \([0-9.]*\) s after.*/\1 s/p' "$SERIAL" | head -1)
    cycles=$(sed -n 's/^SDT-OK vrpc: 20 attach\/kill\/detach cycles, \(heap .*\) t=.*/\1/p' "$SERIAL" | head -1)
    many=$(sed -n 's/^SDT-OK vrpc many: \([0-9]* devices offered at once\) (guest1 and \([0-9]*\) of dom0.s.*; the next refused: .*\(out of grant entries\).*/\1 (guest1 and \2 of dom0), the next refused: \3/p' "$SERIAL" | head -1)
    connected=$(sed -n 's/^SDT-OK vrpc many: \([0-9]* devices connected at once\) (guest1 and \([0-9]*\) dom0 mounts), \(heap [0-9]* KiB\) .*/\1 (\2 dom0 mounts, \3)/p' "$SERIAL" | head -1)
    guest_cycles=$(sed -n 's/^SDT-OK vrpc: \([0-9]* guest create\/attach\/mount\/destroy cycles\) in [0-9.]* s, \(heap .*\) t=.*/\1, \2/p' "$SERIAL" | head -1)
    ratios=$(sed -n 's/^\[guest1\] GDT-RATIO \([A-Za-z0-9]*\) \([0-9.]*\) \([0-9.]*\).*/\1 \2 \3/p' "$SERIAL" \
        | awk '{ printf "%s%s NFS/VRPC %.2f", (NR > 1 ? ", " : ""), $1, ($2 > 0 ? $3 / $2 : 0) }')
    mixed=$(awk '$1 == "[guest1]" && $2 == "GDT-MIXED" { printf "NFS stat pass beside a VRPC fsync loop %.2fx of alone (%s fsyncs, %.1f a second), beside scattered cold VRPC reads %.2fx (%s reads, %.1f a second), beside a streaming VRPC read %.2fx (%s MiB, %.1f MiB a second)", ($3 > 0 ? $4 / $3 : 0), $5, ($4 > 0 ? $5 / $4 : 0), ($3 > 0 ? $6 / $3 : 0), $7, ($6 > 0 ? $7 / $6 : 0), ($3 > 0 ? $8 / $3 : 0), $9, ($8 > 0 ? $9 / $8 : 0) }' "$SERIAL" | head -1)
    held=$(sed -n 's/^SDT-TCP-HELD \([0-9]*\).*/\1/p' "$SERIAL" | head -1)
    leased=$(sed -n 's/^\[sd-nfs\] dhcp: leased \([0-9./]*\).*/\1/p' "$SERIAL" | head -1)
    tcp_counts=$(grep -m1 -oE '^\[sd-nfs\] network: [0-9]+ connections \(at most [0-9]+ at once, [0-9]+ evicted, [0-9]+ stalled\)' "$SERIAL" \
        | sed 's/^\[sd-nfs\] network: //')
    # Aggregate throughput of n clients against one: n * t(1) / t(n).
    scaling=$(awk '$1 == "SDT-SCALE" { n[$2] = 1; w[$2] = $3; r[$2] = $4; mw[$2] = $5; mr[$2] = $6; cw[$2] = $7; cr[$2] = $8 }
        END { if (w[1] > 0 && r[1] > 0) for (k = 8; k <= 32; k *= 4) if (k in n)
            printf "%s%d clients: throughput %.2fx write, %.2fx read of one client; mean client time %.2fx write, %.2fx read; domain CPU %s s write, %s s read",
                (k > 8 ? "; " : ""), k, k * w[1] / w[k], k * r[1] / r[k], mw[k] / (mw[1] > 0 ? mw[1] : 1), mr[k] / (mr[1] > 0 ? mr[1] : 1), cw[k], cr[k] }' "$SERIAL")
    disk=$(sed -n 's/^SDT-DISK-BENCH disk bench: [0-9]* MiB x[0-9]* each way; .*indirect\/plain \([0-9.]*\); .*indirect\/plain \([0-9.]*\); data identical.*/waiting reads indirect\/plain \1, started reads \2/p' "$SERIAL" | head -1)
    echo "xen-disk ok: indirect requests and persistent grants negotiated with blkback, the churn boot on plain requests read back by indirect ones; ${disk}"
    echo "xen-tcp ok: ${held} connections held from dom0 (48 idle, 16 stalled mid-record), a 65th kernel client mounted, read and wrote; ${tcp_counts}; ip=dhcp leased ${leased}, published in data/ip and mounted by it; scaling: ${scaling}"
    echo "xen-vrpc ok: guest1 attach-to-mounted ${attach} s; 16 MiB byte for byte; stat of 1000 files ${stats}; dom0's change seen within ${seen}; ratios ${ratios}; ${mixed}; 20 attach/detach cycles, ${cycles}; ${many}; ${connected}; ${guest_cycles}; storage domain destroyed and recreated under the mount; guest destroyed while mounted; fsck clean"
fi
echo "serial log: $SERIAL"
if [ "$failures" -gt 0 ]; then
    echo "qemu-tests: $failures check(s) failed; read $SERIAL"
    exit 1
fi
echo "qemu-tests: all checks passed"
