#!/bin/sh
# /init of the test dom0 (busybox): start the Xen toolstack, run the
# storage domain through its lifecycle, print every console log, power
# off. Each step prints "SDT-OK <step> ..." or "SDT-FAIL <step> ..." on
# the serial console; qemu-tests/run.sh judges by those lines.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# Xen's hotplug locking stats /dev/stdin: devtmpfs lacks these links.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /var/lock /var/log/xen/console

uptime_s() { cut -d' ' -f1 /proc/uptime; }
ok() { echo "SDT-OK $* t=$(uptime_s)"; }
fail() { echo "SDT-FAIL $* t=$(uptime_s)"; }

for module in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback bridge nfsv3 ata_piix sd_mod fuse; do
    modprobe "$module" || fail "modprobe $module"
done
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
xenstored --pid-file=/run/xenstored.pid || fail "xenstored"
xen-init-dom0 >/dev/null || fail "xen-init-dom0"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || fail "xenconsoled"
xl info >/dev/null 2>&1 && ok toolstack || fail toolstack

# The virtual network: dom0 is 10.0.0.1 on the bridge the vifs join.
ip link set lo up
if brctl addbr xenbr0 && ip addr add 10.0.0.1/24 dev xenbr0 && ip link set xenbr0 up; then
    ok "bridge xenbr0"
else
    fail "bridge xenbr0"
fi

# The disk image made on the host is QEMU's IDE disk.
DISK=/dev/sda
for i in $(seq 1 50); do [ -b $DISK ] && break; sleep 0.2; done
[ -b $DISK ] && ok "disk $DISK $(cat /sys/block/sda/size) sectors" || fail "no $DISK"

CONFIG=/etc/xen/storage-domain.cfg
# QEMU_TESTS_DISK_SEGMENTS (sdt_disk_segments=): the NFS and VRPC boots'
# disk_segments=, appended to their command lines.
DISK_SEGMENTS=$(sed -n 's/.*sdt_disk_segments=\([0-9]*\).*/ disk_segments=\1/p' /proc/cmdline)
log_of() { echo "/var/log/xen/console/guest-$1.log"; }

# create NAME EXTRA [VAR=VALUE...]: xl create with the project's config,
# without its vif unless the arguments give one (a vif's hotplug script
# costs seconds under TCG).
create() {
    name=$1 extra=$2
    shift 2
    xl create "$CONFIG" "name=\"$name\"" "extra=\"$extra\"" \
        "disk=['format=raw,vdev=xvda,access=rw,target=$DISK']" "vif=[]" "$@" >/tmp/xl-$name.log 2>&1 || {
        sed "s/^/SDT-INFO xl create $name: /" /tmp/xl-$name.log
        return 1
    }
}

# wait_for NAME PATTERN SECONDS: until the domain's console shows PATTERN.
wait_for() {
    i=0
    while [ $i -lt $(($3 * 5)) ]; do
        grep -q "$2" "$(log_of "$1")" 2>/dev/null && return 0
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}

# gone NAME SECONDS: until xl no longer lists the domain.
gone() {
    i=0
    while [ $i -lt $(($2 * 5)) ]; do
        xl list "$1" >/dev/null 2>&1 || return 0
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}

elapsed() { awk "BEGIN{printf \"%.1f\", $2 - $1}"; }

# 1. First boot on the fresh image: seed the known files, self-check,
#    then a clean `xl shutdown`.
start=$(uptime_s)
if create sd-seed "export=/ export=/known,ro test=seed"; then
    if wait_for sd-seed "^fs ok:" 180; then
        ok "seed boot: create-to-self-check $(elapsed "$start" "$(uptime_s)") s"
        xl list sd-seed
        grep -q "^seed: wrote" "$(log_of sd-seed)" && ok "seed files" || fail "seed files"
    else
        fail "seed boot: no self-check line"
    fi
    timeout 60 xl shutdown -w sd-seed >/dev/null 2>&1
    if gone sd-seed 30; then ok "seed shutdown: domain gone"; else fail "seed shutdown: domain still there"; xl destroy sd-seed; fi
    grep -q "disk flush ok" "$(log_of sd-seed)" && ok "seed shutdown: flushed" || fail "seed shutdown: no flush line"
else
    fail "xl create sd-seed"
fi

# 2. Crash mid-write: commit in a loop, `xl destroy` after a few commits.
#    With plain disk requests only (disk_segments=11): the other boots use
#    indirect ones, so each reads what the other way wrote.
if create sd-churn "test=churn disk_segments=11"; then
    if wait_for sd-churn "^churn: committed 5" 180; then
        xl destroy sd-churn
        last=$(grep -o 'churn: committed [0-9]*' "$(log_of sd-churn)" | tail -1 | awk '{print $3}')
        ok "churn destroyed after commit $last"
        echo "SDT-CHURN-LAST $last"
    else
        fail "churn: no commits"
        xl destroy sd-churn
    fi
    gone sd-churn 30 || fail "churn: domain not reaped"
else
    fail "xl create sd-churn"
fi

# 3. Reboot after the crash: the volume opens at its last commit and the
#    known files are intact; clean shutdown again. Before opening it, the
#    domain reads the disk with plain and with indirect requests side by
#    side (test=diskbench): the same bytes both ways, and the ratio.
start=$(uptime_s)
if create sd-verify "test=verify,diskbench"; then
    if wait_for sd-verify "^fs ok:" 240; then
        ok "verify boot: create-to-self-check $(elapsed "$start" "$(uptime_s)") s"
        grep -q "^disk: .* 256 segments a request (the backend offers [0-9]* in indirect requests), grants kept mapped" "$(log_of sd-verify)" \
            && ok "disk: indirect requests and persistent grants negotiated" \
            || fail "disk: no indirect requests or persistent grants: $(grep '^disk:' "$(log_of sd-verify)")"
        grep -q "^disk: .* 11 segments a request" "$(log_of sd-churn)" \
            && ok "disk: disk_segments=11 kept the churn boot to plain requests" \
            || fail "disk: churn boot not on plain requests: $(grep '^disk:' "$(log_of sd-churn)")"
        bench=$(grep "^disk bench:" "$(log_of sd-verify)" || true)
        case "$bench" in
            *"data identical"*) ok "$bench"; echo "SDT-DISK-BENCH $bench" ;;
            *) fail "disk bench: '$bench'" ;;
        esac
        grep -q "^verify: known files intact" "$(log_of sd-verify)" && ok "verify known files" || fail "verify known files"
        recovered=$(grep -o 'churn.log holds commits 1\.\.[0-9]*' "$(log_of sd-verify)" | sed 's/.*\.\.//')
        if [ -n "$recovered" ] && [ -n "$last" ] && [ "$recovered" -ge "$last" ]; then
            ok "recovered churn commits 1..$recovered (last acknowledged $last)"
        else
            fail "recovered churn commits '$recovered' < last acknowledged '$last'"
        fi
    else
        fail "verify boot: no self-check line"
    fi
    timeout 60 xl shutdown -w sd-verify >/dev/null 2>&1
    gone sd-verify 30 && ok "verify shutdown: domain gone" || { fail "verify shutdown"; xl destroy sd-verify; }
    grep -q "disk flush ok" "$(log_of sd-verify)" && ok "verify shutdown: flushed" || fail "verify shutdown: no flush line"
else
    fail "xl create sd-verify"
fi

# 3b. NFS over TCP: the domain on the bridge with an address leased by
#     dnsmasq (ip=dhcp) and published in xenstore (data/ip), dom0 as the
#     client with libnfs (nfs-cp, nfs-cat, nfs-ls): a file copied in, read
#     back and listed; the read-only export readable and not writable;
#     the kernel client; then 64 clients held open (48 idle, 16 stopped
#     in the middle of a record) and a 65th that still mounts, reads and
#     writes; then `xl shutdown`, and run.sh checks the files on the image.
NFS_OPTIONS="version=3&nfsport=2049&mountport=2049"
SD_IP=
url() { echo "nfs://$SD_IP$1?$NFS_OPTIONS"; }
if dnsmasq --conf-file=/dev/null --port=0 --interface=xenbr0 --bind-interfaces \
        --dhcp-range=10.0.0.100,10.0.0.150,255.255.255.0,10m --dhcp-leasefile=/tmp/dnsmasq.leases \
        --pid-file=/run/dnsmasq.pid --user=root --group=root --log-dhcp --log-facility=/tmp/dnsmasq.log; then
    ok "dhcp server on xenbr0"
else
    fail "dhcp server on xenbr0"
fi
start=$(uptime_s)
if create sd-nfs "export=/ export=/known,ro export=/nfs,path=/nfs,rw,no_root_squash ip=dhcp port=2049$DISK_SEGMENTS" \
        "vif=['bridge=xenbr0,mac=00:16:3e:5d:00:02']"; then
    sd_domid=$(xl domid sd-nfs)
    for i in $(seq 1 300); do
        SD_IP=$(xenstore-read "/local/domain/$sd_domid/data/ip" 2>/dev/null)
        [ -n "$SD_IP" ] && break
        sleep 0.2
    done
    if [ -n "$SD_IP" ] && wait_for sd-nfs "^nfs: serving" 10; then
        ok "nfs boot: serving at $SD_IP (leased by DHCP, read from data/ip) $(elapsed "$start" "$(uptime_s)") s"
        grep -q "^dhcp: leased $SD_IP/24" "$(log_of sd-nfs)" && ok "nfs: dhcp lease on the console" || fail "nfs: no dhcp line for $SD_IP"
        ping -c 2 -W 5 $SD_IP >/tmp/ping.log 2>&1 && ok "nfs: ping" || { fail "nfs: ping"; sed 's/^/SDT-INFO ping: /' /tmp/ping.log; }
        # busybox seq has no -f: the same lines as run.sh's seq -f.
        awk 'BEGIN { for (i = 0; i < 50000; i++) printf "payload line %07d\n", i }' > /tmp/payload.txt
        size=$(wc -c < /tmp/payload.txt)
        [ "$size" = 1050000 ] || fail "nfs: payload is $size bytes, not 1050000"
        t0=$(uptime_s)
        if timeout 120 nfs-cp /tmp/payload.txt "$(url /nfs/payload.txt)" >/tmp/nfs-cp.log 2>&1; then
            ok "nfs: nfs-cp in $size bytes in $(elapsed "$t0" "$(uptime_s)") s"
        else
            fail "nfs: nfs-cp in"; sed 's/^/SDT-INFO nfs-cp: /' /tmp/nfs-cp.log
        fi
        t0=$(uptime_s)
        if timeout 120 nfs-cat "$(url /nfs/payload.txt)" >/tmp/payload.back 2>/tmp/nfs-cat.log \
                && [ -s /tmp/payload.back ] && cmp -s /tmp/payload.txt /tmp/payload.back; then
            ok "nfs: nfs-cat back $size bytes in $(elapsed "$t0" "$(uptime_s)") s"
        else
            fail "nfs: nfs-cat back ($(wc -c < /tmp/payload.back) bytes)"; sed 's/^/SDT-INFO nfs-cat: /' /tmp/nfs-cat.log
        fi
        timeout 60 nfs-ls "$(url /nfs)" >/tmp/nfs-ls.log 2>&1
        grep -q "payload.txt" /tmp/nfs-ls.log && ok "nfs: nfs-ls lists the file" || { fail "nfs: nfs-ls"; sed 's/^/SDT-INFO nfs-ls: /' /tmp/nfs-ls.log; }
        hello=$(timeout 60 nfs-cat "$(url /known/hello.txt)" 2>/tmp/nfs-ro.log)
        [ "$hello" = "hello from the storage domain" ] && ok "nfs: read-only export read" || { fail "nfs: read-only export read '$hello'"; sed 's/^/SDT-INFO nfs-cat ro: /' /tmp/nfs-ro.log; }
        if timeout 60 nfs-cp /tmp/ping.log "$(url /known/refused.txt)" >/tmp/nfs-ro.log 2>&1; then
            fail "nfs: write to read-only export refused (it was accepted)"
        else
            ok "nfs: write to read-only export refused"
        fi
        # The Linux kernel client, with the options docs/xen.md gives.
        mkdir -p /mnt/nfs
        if timeout 60 mount.nfs $SD_IP:/nfs /mnt/nfs -o vers=3,proto=tcp,port=2049,mountport=2049,nolock >/tmp/mount.log 2>&1; then
            ok "nfs: kernel mount"
            t0=$(uptime_s)
            if timeout 60 cmp /tmp/payload.txt /mnt/nfs/payload.txt >/tmp/kernel-read.log 2>&1; then
                ok "nfs: kernel read $size bytes in $(elapsed "$t0" "$(uptime_s)") s"
            else
                fail "nfs: kernel read"; sed 's/^/SDT-INFO kernel read: /' /tmp/kernel-read.log
            fi
            t0=$(uptime_s)
            if timeout 60 cp /tmp/payload.txt /mnt/nfs/kernel.txt && timeout 60 sync; then
                ok "nfs: kernel write $size bytes in $(elapsed "$t0" "$(uptime_s)") s"
            else
                fail "nfs: kernel write"
            fi
            # Scaling: 1, 8 and 32 clients (processes on the kernel
            # mount, many calls in flight on its connection) each write a
            # 256 KiB file (fsync) and read it back uncached, all at once.
            # Ratios only (TCG): aggregate throughput against one client,
            # the mean client's time, and the storage domain's CPU seconds
            # (xl list) over each phase.
            head -c 262144 /tmp/payload.txt > /tmp/chunk
            elapsed_ms() { awk "BEGIN{printf \"%.3f\", $2 - $1}"; }
            sd_cpu() { xl list sd-nfs 2>/dev/null | awk 'NR == 2 { print $6 }'; }
            mean_of() { cat "$@" 2>/dev/null | awk '{ sum += $1; n++ } END { printf "%.3f", n ? sum / n : 0 }'; }
            for n in 1 8 32; do
                rm -f /tmp/scale-*.time
                cpu0=$(sd_cpu); t0=$(uptime_s); pids=
                for i in $(seq 1 $n); do
                    ( s=$(uptime_s); timeout 120 dd if=/tmp/chunk of=/mnt/nfs/scale-$n-$i bs=65536 conv=fsync 2>/dev/null \
                        && elapsed_ms "$s" "$(uptime_s)" > /tmp/scale-w-$i.time ) &
                    pids="$pids $!"
                done
                wait $pids
                tw=$(elapsed_ms "$t0" "$(uptime_s)"); cpu1=$(sd_cpu)
                echo 3 > /proc/sys/vm/drop_caches
                t0=$(uptime_s); pids=
                for i in $(seq 1 $n); do
                    ( s=$(uptime_s); timeout 120 cmp -s /tmp/chunk /mnt/nfs/scale-$n-$i \
                        && elapsed_ms "$s" "$(uptime_s)" > /tmp/scale-r-$i.time ) &
                    pids="$pids $!"
                done
                wait $pids
                tr=$(elapsed_ms "$t0" "$(uptime_s)"); cpu2=$(sd_cpu)
                done_w=$(ls /tmp/scale-w-*.time 2>/dev/null | wc -l)
                done_r=$(ls /tmp/scale-r-*.time 2>/dev/null | wc -l)
                cpu_w=$(awk "BEGIN{printf \"%.1f\", $cpu1 - $cpu0}")
                cpu_r=$(awk "BEGIN{printf \"%.1f\", $cpu2 - $cpu1}")
                if [ "$done_w" = "$n" ] && [ "$done_r" = "$n" ]; then
                    ok "tcp scaling: $n clients wrote 256 KiB each in $tw s (mean client $(mean_of /tmp/scale-w-*.time) s, domain CPU $cpu_w s), read back in $tr s (mean client $(mean_of /tmp/scale-r-*.time) s, domain CPU $cpu_r s)"
                    echo "SDT-SCALE $n $tw $tr $(mean_of /tmp/scale-w-*.time) $(mean_of /tmp/scale-r-*.time) $cpu_w $cpu_r"
                else
                    fail "tcp scaling: $n clients: $done_w of $n writes and $done_r of $n reads completed"
                fi
            done
            rm -f /mnt/nfs/scale-*
            ls -l /mnt/nfs | sed 's/^/SDT-INFO kernel ls: /'
            timeout 60 umount /mnt/nfs && ok "nfs: kernel umount" || fail "nfs: kernel umount"
        else
            fail "nfs: kernel mount"; sed 's/^/SDT-INFO mount.nfs: /' /tmp/mount.log
        fi
        # 64 clients held open: 48 idle, then 16 that sent a record mark
        # (a 65,793-byte record) and 100 bytes of it, and stopped.
        t_hold=$(uptime_s)
        holders=
        for i in $(seq 1 64); do
            if [ "$i" -le 48 ]; then
                sleep 300 | nc "$SD_IP" 2049 >/dev/null 2>&1 &
            else
                { printf '\200\001\001\001'; head -c 100 /dev/zero; sleep 300; } | nc "$SD_IP" 2049 >/dev/null 2>&1 &
            fi
            holders="$holders $!"
        done
        # ESTABLISHED (01) connections from dom0 to port 2049 (0801).
        held() { awk '$3 ~ /:0801$/ && $4 == "01"' /proc/net/tcp | wc -l; }
        for i in $(seq 1 100); do [ "$(held)" -ge 64 ] && break; sleep 0.2; done
        count=$(held)
        [ "$count" = 64 ] && ok "tcp: 64 connections held" || fail "tcp: $count connections held, not 64"
        echo "SDT-TCP-HELD $count"
        # The 65th client: the kernel's, with a file written and read back.
        mkdir -p /mnt/nfs65
        if timeout 60 mount.nfs "$SD_IP":/nfs /mnt/nfs65 -o vers=3,proto=tcp,port=2049,mountport=2049,nolock >/tmp/mount65.log 2>&1; then
            ok "tcp: 65th client mounted"
            timeout 60 cmp /tmp/payload.txt /mnt/nfs65/payload.txt && ok "tcp: 65th client read" || fail "tcp: 65th client read"
            if echo "written by the 65th client" > /mnt/nfs65/client65.txt && timeout 60 sync \
                    && [ "$(cat /mnt/nfs65/client65.txt)" = "written by the 65th client" ]; then
                ok "tcp: 65th client write"
            else
                fail "tcp: 65th client write"
            fi
            timeout 60 umount /mnt/nfs65 || fail "tcp: 65th client umount"
        else
            fail "tcp: 65th client mount"; sed 's/^/SDT-INFO mount.nfs 65: /' /tmp/mount65.log
        fi
        # The stalled clients are dropped after the stall timeout (20 s
        # from their last bytes); the idle ones stay (less those closed
        # for the 65th client's connections).
        while [ "$(held)" -gt 48 ] && [ "$(awk "BEGIN{print ($(uptime_s) - $t_hold < 40)}")" = 1 ]; do
            sleep 0.5
        done
        count=$(held)
        [ "$count" -le 48 ] && [ "$count" -ge 40 ] \
            && ok "tcp: stalled clients dropped, $count idle connections left $(elapsed "$t_hold" "$(uptime_s)") s after they opened" \
            || fail "tcp: $count connections left after 16 stalled mid-record (want 40 to 48)"
        kill $holders 2>/dev/null
    else
        fail "nfs boot: no address published in data/ip ('$SD_IP') or not serving"
        sed 's/^/SDT-INFO dnsmasq: /' /tmp/dnsmasq.log
    fi
    timeout 60 xl shutdown -w sd-nfs >/dev/null 2>&1
    gone sd-nfs 30 && ok "nfs shutdown: domain gone" || { fail "nfs shutdown"; xl destroy sd-nfs; }
    grep -q "disk flush ok" "$(log_of sd-nfs)" && ok "nfs shutdown: flushed" || fail "nfs shutdown: no flush line"
else
    fail "xl create sd-nfs"
fi

# 3c. VRPC: a Linux domU mounts the storage domain over grant rings
#     with guest-driver (stat from the shared metadata table), dom0 mounts
#     it too, the storage domain is destroyed and recreated under the
#     guest's mount, then the guest is destroyed while mounted. The guest
#     reports on its console (GDT-OK/GDT-FAIL); dom0 and the guest take
#     turns through xenstore keys in the guest's data/ directory.
VRPC_EXPORTS="export=/ export=/vrpc,path=/,rw,no_root_squash export=/private,path=/private,rw,allow=domain:999 ip=10.0.0.2/24 port=2049 test=many$DISK_SEGMENTS"
guest_step() { xenstore-read "/local/domain/$1/data/guest-step" 2>/dev/null; }
# wait_guest DOMID VALUE SECONDS
wait_guest() {
    i=0
    while [ $i -lt $(($3 * 5)) ]; do
        [ "$(guest_step "$1")" = "$2" ] && return 0
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}
vrpc_sd_up() {  # create the storage domain (name sd-vrpc) and wait for VRPC
    rm -f "$(log_of sd-vrpc)"
    create sd-vrpc "$VRPC_EXPORTS" "vif=['bridge=xenbr0,mac=00:16:3e:5d:00:02']" \
        && wait_for sd-vrpc "^vrpc: serving guests" 180
}
start=$(uptime_s)
# The storage domain's console as it comes (printed whole again at the
# end), through its restart.
touch "$(log_of sd-vrpc)"
tail -F "$(log_of sd-vrpc)" 2>/dev/null | sed 's/^/[live sd-vrpc] /' &
sd_tail=$!
if vrpc_sd_up; then
    ok "vrpc boot: serving guests $(elapsed "$start" "$(uptime_s)") s"
    mkdir -p /mnt/private /mnt/dom0share
    # An export that does not admit dom0: refused at attach, with the
    # reason in the guest (here dom0's own guest-driver).
    if storage-domain-ctl attach 0 --export /private --backend sd-vrpc --device 1 >/tmp/attach-private.log 2>&1; then
        if timeout 60 guest-driver mount --xen --device 1 /mnt/private >/tmp/refused.log 2>&1; then
            fail "vrpc: export not admitting domain 0 was mounted"
        elif grep -q "domain:0" /tmp/refused.log; then
            ok "vrpc: export refused with the reason: $(tail -1 /tmp/refused.log)"
        else
            fail "vrpc: refusal without the reason"; sed 's/^/SDT-INFO refused: /' /tmp/refused.log
        fi
        storage-domain-ctl detach 0 --device 1 --backend sd-vrpc >/dev/null 2>&1
    else
        fail "vrpc: attach dom0 to /private"; sed 's/^/SDT-INFO attach: /' /tmp/attach-private.log
    fi
    # The guest: xl create, then attach it; its /init mounts.
    t0=$(uptime_s)
    if xl create /etc/xen/guest.cfg >/tmp/xl-guest1.log 2>&1; then
        gid=$(xl domid guest1)
        # The guest's console as it comes (the full log is printed again
        # at the end): shows where a slow or stuck step is.
        tail -F "$(log_of guest1)" 2>/dev/null | sed 's/^/[live guest1] /' &
        live_tail=$!
        if storage-domain-ctl attach guest1 --export /vrpc --backend sd-vrpc >/tmp/attach.log 2>&1; then
            ok "vrpc: attached guest1 (domain $gid) $(elapsed "$t0" "$(uptime_s)") s after xl create"
        else
            fail "vrpc: attach guest1"; sed 's/^/SDT-INFO attach: /' /tmp/attach.log
        fi
        storage-domain-ctl list --backend sd-vrpc | sed 's/^/SDT-INFO list: /'
        if wait_for guest1 "GDT-OK mount" 150; then
            ok "vrpc: guest1 mounted $(elapsed "$t0" "$(uptime_s)") s after xl create"
        else
            fail "vrpc: guest1 did not mount"
        fi
        # dom0 mounts the same export over VRPC and changes a file the
        # guest has looked at.
        storage-domain-ctl attach 0 --export /vrpc --backend sd-vrpc >/tmp/attach0.log 2>&1 \
            || { fail "vrpc: attach dom0"; sed 's/^/SDT-INFO attach: /' /tmp/attach0.log; }
        guest-driver mount --xen --export /vrpc /mnt/dom0share >/tmp/guest-driver-dom0.log 2>&1 &
        dom0_driver=$!
        for i in $(seq 1 300); do grep -q ' /mnt/dom0share fuse' /proc/mounts && break; sleep 0.2; done
        grep -q ' /mnt/dom0share fuse' /proc/mounts && ok "vrpc: dom0 mounted" \
            || { fail "vrpc: dom0 mount"; sed 's/^/SDT-INFO dom0 guest-driver: /' /tmp/guest-driver-dom0.log; }
        if wait_guest "$gid" ready-for-dom0-change 300; then
            printf 'changed in domain 0\n' > /mnt/dom0share/shared.txt
            xenstore-write "/local/domain/$gid/data/dom0-step" changed
            ok "vrpc: dom0 changed shared.txt"
        else
            fail "vrpc: guest never got ready for dom0's change (step '$(guest_step "$gid")')"
        fi
        if wait_guest "$gid" ready-for-sd-destroy 300; then
            kill -TERM $dom0_driver; wait $dom0_driver
            storage-domain-ctl detach 0 --backend sd-vrpc >/dev/null 2>&1
            grep -q "domain 0 device 0 detached" "$(log_of sd-vrpc)" && ok "vrpc: dom0 detached" || fail "vrpc: dom0 detach not seen"
            cp "$(log_of sd-vrpc)" /tmp/sd-vrpc-first.log
            xl destroy sd-vrpc
            gone sd-vrpc 30 || fail "vrpc: sd-vrpc not reaped"
            xenstore-write "/local/domain/$gid/data/dom0-step" sd-destroyed
            ok "vrpc: storage domain destroyed under the guest's mount"
            wait_guest "$gid" saw-sd-gone 60 || fail "vrpc: guest did not see the storage domain go"
            t0=$(uptime_s)
            if vrpc_sd_up && storage-domain-ctl attach guest1 --export /vrpc --backend sd-vrpc >/tmp/attach2.log 2>&1; then
                xenstore-write "/local/domain/$gid/data/dom0-step" sd-recreated
                ok "vrpc: storage domain recreated and guest1 re-attached $(elapsed "$t0" "$(uptime_s)") s"
            else
                fail "vrpc: recreate and re-attach"; sed 's/^/SDT-INFO attach: /' /tmp/attach2.log
            fi
        else
            fail "vrpc: guest never got ready for the storage domain's destruction (step '$(guest_step "$gid")')"
        fi
        wait_for guest1 "GDT-OK guest done" 120 || fail "vrpc: guest did not finish"
        # 20 attach / mount / kill -9 / detach cycles of a dom0 device:
        # the storage domain must free everything of it each time.
        mkdir -p /mnt/cycle
        cycles=0
        for cycle in $(seq 1 20); do
            storage-domain-ctl attach 0 --export /vrpc --backend sd-vrpc --device 2 >/tmp/cycle-attach.log 2>&1 \
                || { sed 's/^/SDT-INFO cycle attach: /' /tmp/cycle-attach.log; break; }
            guest-driver mount --xen --device 2 /mnt/cycle >/tmp/cycle.log 2>&1 &
            pid=$!
            for i in $(seq 1 150); do grep -q ' /mnt/cycle fuse' /proc/mounts && break; sleep 0.2; done
            ls /mnt/cycle >/dev/null 2>&1 || { sed 's/^/SDT-INFO cycle mount: /' /tmp/cycle.log; kill -9 $pid; break; }
            kill -9 $pid
            wait $pid 2>/dev/null
            umount -l /mnt/cycle 2>/dev/null
            storage-domain-ctl detach 0 --device 2 --backend sd-vrpc --timeout 1 >/dev/null 2>&1
            for i in $(seq 1 150); do
                [ "$(grep -c 'domain 0 device 2 detached' "$(log_of sd-vrpc)")" -ge "$cycle" ] && break
                sleep 0.2
            done
            [ "$(grep -c 'domain 0 device 2 detached' "$(log_of sd-vrpc)")" -ge "$cycle" ] || break
            cycles=$cycle
        done
        heaps=$(grep 'domain 0 device 2 detached' "$(log_of sd-vrpc)" | sed -n 's/.*heap \([0-9]*\) KiB used.*/\1/p')
        heap_first=$(echo "$heaps" | head -1)
        heap_last=$(echo "$heaps" | tail -1)
        if [ "$cycles" = 20 ] && [ -n "$heap_first" ] && [ "$heap_last" -le $((heap_first + 64)) ]; then
            ok "vrpc: 20 attach/kill/detach cycles, heap $heap_first KiB after the first, $heap_last KiB after the last"
        else
            fail "vrpc: attach cycles: $cycles done, heap '$heap_first' -> '$heap_last' KiB"
        fi
        # As many devices as the storage domain serves at once with the
        # default table (docs/xen.md, "Budget": 61). With guest1 still
        # mounted, dom0 attaches devices of its own (in batches of 10)
        # until the storage domain refuses one for lack of grant entries:
        # each attached device is offered at once (the table granted to
        # it), so at least 60 of dom0's must be offered and the next
        # refused. The first MANY_MOUNTS of them (sdt_many_mounts= on
        # dom0's command line, from QEMU_TESTS_MANY_MOUNTS: 8 in CI, 60 for
        # every device connected at once, about 2.4 s a mount under TCG)
        # are mounted at once, each by its own guest-driver with a 16-page
        # pool (gntalloc's limit raised); each writes a file of its own and
        # one reads them all; then all are stopped and detached, and the
        # heap must come back to within 192 KiB (3.2 KiB a device: a page
        # kept per device would fail) of what it was after a warm-up;
        # 92 and 141 KiB were measured, structures that keep the room they
        # grew to (the device list, xenstore's watch events).
        many_mounts=$(sed -n 's/.*sdt_many_mounts=\([0-9]*\).*/\1/p' /proc/cmdline)
        many_mounts=${many_mounts:-8}
        many_start=$(uptime_s)
        echo 8192 > /sys/module/xen_gntalloc/parameters/limit 2>/dev/null \
            || echo "SDT-INFO many: gntalloc limit not raised: $(cat /sys/module/xen_gntalloc/parameters/limit 2>&1)"
        sd_id=$(xl domid sd-vrpc)
        backend_state() { xenstore-read "/local/domain/$sd_id/backend/vrpc/0/$1/state" 2>/dev/null; }
        # Warm-up: the same file-system work through one mount (device 9)
        # first, so that the heap measured after its detach holds the file
        # system's caches and duplicate request cache as they will be
        # after the many devices' work; the comparison below then sees
        # what the devices themselves keep.
        mkdir -p /mnt/many/9
        storage-domain-ctl attach 0 --export /vrpc --backend sd-vrpc --device 9 >/tmp/many-attach.log 2>&1 \
            || sed 's/^/SDT-INFO many warm-up attach: /' /tmp/many-attach.log
        guest-driver mount --xen --device 9 --pool-pages 16 /mnt/many/9 >/tmp/many-9.log 2>&1 &
        warm=$!
        for i in $(seq 1 300); do grep -q " /mnt/many/9 fuse" /proc/mounts && break; sleep 0.2; done
        for d in $(seq 10 $((9 + many_mounts))); do
            echo "written through device $d" > /mnt/many/9/many/f$d && cat /mnt/many/9/many/f$d >/dev/null && : > /mnt/many/9/many/f$d
        done
        kill -TERM $warm; wait $warm
        storage-domain-ctl detach 0 --device 9 --backend sd-vrpc --timeout 2 >/dev/null 2>&1
        for i in $(seq 1 150); do grep -q 'vrpc: domain 0 device 9 detached' "$(log_of sd-vrpc)" && break; sleep 0.2; done
        heap_before_many=$(grep 'vrpc: domain 0 device 9 detached' "$(log_of sd-vrpc)" | tail -1 | sed -n 's/.*heap \([0-9]*\) KiB used.*/\1/p')
        # Attach until one is refused.
        offered=""
        many_refused=""
        device=10
        while [ -z "$many_refused" ] && [ $device -lt 100 ]; do
            batch=""
            for n in $(seq 1 10); do
                storage-domain-ctl attach 0 --export /vrpc --backend sd-vrpc --device $device >/tmp/many-attach.log 2>&1 \
                    || { sed 's/^/SDT-INFO many attach: /' /tmp/many-attach.log; many_refused="attach failed"; break; }
                batch="$batch $device"
                device=$((device + 1))
            done
            for d in $batch; do
                state=
                for i in $(seq 1 150); do
                    state=$(backend_state $d)
                    [ "$state" = 2 ] || [ "$state" = 5 ] || [ "$state" = 6 ] && break
                    sleep 0.2
                done
                if [ "$state" = 2 ]; then
                    offered="$offered $d"
                elif grep -q "vrpc: domain 0 device $d refused: out of grant entries" "$(log_of sd-vrpc)"; then
                    [ -n "$many_refused" ] || many_refused="$(grep -o "vrpc: domain 0 device $d refused: .*" "$(log_of sd-vrpc)" | tail -1 | sed 's/^vrpc: domain 0 //')"
                else
                    [ -n "$many_refused" ] || many_refused="device $d in backend state '$state'"
                fi
            done
        done
        offered_count=$(echo $offered | wc -w)
        if [ "$((offered_count + 1))" -ge 61 ] && echo "$many_refused" | grep -q "out of grant entries"; then
            ok "vrpc many: $((offered_count + 1)) devices offered at once (guest1 and $offered_count of dom0's, the table granted to each); the next refused: $many_refused"
        else
            fail "vrpc many: $offered_count dom0 devices offered, stopped by '$many_refused'"
        fi
        # Mount the first many_mounts of them, 10 at a time.
        free -m | sed 's/^/SDT-INFO many: dom0 memory before: /'
        many_pids=""
        many_devices=""
        to_mount=$(echo $offered | tr ' ' '\n' | head -n "$many_mounts" | tr '\n' ' ')
        while [ -n "$(echo $to_mount)" ]; do
            batch=""
            for d in $(echo $to_mount | tr ' ' '\n' | head -n 10); do
                mkdir -p /mnt/many/$d
                guest-driver mount --xen --device $d --pool-pages 16 /mnt/many/$d >/tmp/many-$d.log 2>&1 &
                batch="$batch $d:$!"
            done
            to_mount=$(echo $to_mount | tr ' ' '\n' | tail -n +11 | tr '\n' ' ')
            for entry in $batch; do
                d=${entry%%:*}; pid=${entry##*:}
                for i in $(seq 1 300); do
                    grep -q " /mnt/many/$d fuse" /proc/mounts && break
                    kill -0 $pid 2>/dev/null || break
                    sleep 0.2
                done
                if grep -q " /mnt/many/$d fuse" /proc/mounts; then
                    many_pids="$many_pids $pid"
                    many_devices="$many_devices $d"
                else
                    sed "s/^/SDT-INFO many mount $d: /" /tmp/many-$d.log
                    kill -9 $pid 2>/dev/null
                fi
            done
        done
        many_count=$(echo $many_devices | wc -w)
        served=$(storage-domain-ctl list --backend sd-vrpc 2>/dev/null | grep -c "Connected *Connected")
        free -m | sed 's/^/SDT-INFO many: dom0 memory with all mounted: /'
        heap_many=$(grep 'vrpc: domain 0 device [1-9][0-9] connected' "$(log_of sd-vrpc)" | tail -1 | sed -n 's/.*heap \([0-9]*\) KiB used.*/\1/p')
        if [ "$many_count" = "$many_mounts" ] && [ "$served" = "$((many_count + 1))" ]; then
            ok "vrpc many: $served devices connected at once (guest1 and $many_count dom0 mounts), heap $heap_many KiB with them and the offered ones"
        else
            fail "vrpc many: $many_count of $many_mounts dom0 devices mounted, $served connected"
        fi
        # Each mount looks up and writes into a file of its own (the seeded,
        # empty /many/fN: no new inode, so the file system's caches do not
        # grow and the heap can be compared below); one mount reads them
        # all back; then they are emptied again.
        written=0
        for d in $many_devices; do
            [ -f /mnt/many/$d/many/f$d ] && echo "written through device $d" > /mnt/many/$d/many/f$d && written=$((written + 1))
        done
        first=$(echo $many_devices | cut -d' ' -f1)
        seen=0
        for d in $many_devices; do
            [ "$(cat /mnt/many/$first/many/f$d 2>/dev/null)" = "written through device $d" ] && seen=$((seen + 1))
        done
        if [ "$written" = "$many_count" ] && [ "$seen" = "$many_count" ] && [ "$many_count" -gt 0 ]; then
            ok "vrpc many: each of the $written mounts wrote a file of its own, all read back through one"
        else
            fail "vrpc many: $written of $many_count wrote, $seen read back through device $first"
        fi
        # Locks across mounts over the rings (NLM v4): a flock taken
        # through one mount excludes a process on another, and goes with
        # its holder.
        second=$(echo $many_devices | cut -d' ' -f2)
        if [ -n "$second" ]; then
            flock -o -x /mnt/many/$first/many/f$first sleep 120 &
            lock_holder=$!
            excluded=""
            for i in $(seq 1 100); do
                flock -n -x /mnt/many/$second/many/f$first true 2>/dev/null || { excluded=yes; break; }
                sleep 0.1
            done
            kill $lock_holder 2>/dev/null; wait $lock_holder 2>/dev/null
            released=""
            for i in $(seq 1 100); do
                flock -n -x /mnt/many/$second/many/f$first true 2>/dev/null && { released=yes; break; }
                sleep 0.1
            done
            if [ -n "$excluded" ] && [ -n "$released" ]; then
                ok "vrpc locks: a flock through device $first excluded a process on device $second, and went with its holder"
            else
                fail "vrpc locks: excluded '${excluded:-no}', released after the holder died '${released:-no}' (devices $first and $second)"
            fi
        fi
        # A live snapshot on request from dom0 (storage-domain-ctl writes
        # control/snapshot): read through another mount under .snapshots,
        # unchanged by a later write, read-only, gone once deleted (its
        # view's heap is given back before the heap check below).
        if [ -n "$second" ]; then
            echo "before the snapshot" > /mnt/many/$first/many/f$first
            snap_old="" snap_ro="" snap_gone=""
            if storage-domain-ctl snapshot create qemu-snap --backend sd-vrpc >/tmp/snap.log 2>&1; then
                echo "after the snapshot" > /mnt/many/$first/many/f$first
                snap_old=$(cat /mnt/many/$second/.snapshots/qemu-snap/many/f$first 2>&1)
                if ! echo x 2>/dev/null > /mnt/many/$second/.snapshots/qemu-snap/many/new; then
                    snap_ro=yes
                fi
                storage-domain-ctl snapshot delete qemu-snap --backend sd-vrpc >>/tmp/snap.log 2>&1
                for i in $(seq 1 50); do
                    [ -e /mnt/many/$second/.snapshots/qemu-snap ] || { snap_gone=yes; break; }
                    sleep 0.1
                done
            fi
            if [ "$snap_old" = "before the snapshot" ] && [ -n "$snap_ro" ] && [ -n "$snap_gone" ] \
                && [ "$(cat /mnt/many/$second/many/f$first)" = "after the snapshot" ]; then
                ok "vrpc snapshots: taken from dom0, read unchanged through device $second, read-only, gone once deleted"
            else
                sed 's/^/SDT-INFO snapshot: /' /tmp/snap.log
                fail "vrpc snapshots: read '$snap_old', read-only '${snap_ro:-no}', gone '${snap_gone:-no}'"
            fi
        fi
        # The storage domain's statistics, published in xenstore every 5 s.
        stats_text=$(storage-domain-ctl stats --backend sd-vrpc 2>&1)
        stats_writes=$(echo "$stats_text" | sed -n 's/^rpc.WRITE //p')
        stats_guests=$(echo "$stats_text" | sed -n 's/^connections.vrpc //p')
        stats_heap=$(echo "$stats_text" | sed -n 's/^heap.used_kib //p')
        if [ "${stats_writes:-0}" -gt 0 ] && [ "${stats_guests:-0}" -ge 2 ] && [ -n "$stats_heap" ]; then
            ok "vrpc stats: storage-domain-ctl stats shows $stats_guests guests connected, $stats_writes WRITEs, heap $stats_heap KiB"
        else
            echo "$stats_text" | sed 's/^/SDT-INFO stats: /'
            fail "vrpc stats: guests '$stats_guests', WRITEs '$stats_writes', heap '$stats_heap'"
        fi
        for d in $many_devices; do : > /mnt/many/$first/many/f$d; done
        for pid in $many_pids; do kill -TERM $pid 2>/dev/null; done
        for pid in $many_pids; do wait $pid 2>/dev/null; done
        storage-domain-ctl detach 0 --all --backend sd-vrpc --timeout 2 >/dev/null 2>&1
        for i in $(seq 1 300); do
            [ "$(grep -c 'vrpc: domain 0 device [1-9][0-9] detached' "$(log_of sd-vrpc)")" -ge "$offered_count" ] && break
            sleep 0.2
        done
        heap_after_many=$(grep 'vrpc: domain 0 device [1-9][0-9] detached' "$(log_of sd-vrpc)" | tail -1 | sed -n 's/.*heap \([0-9]*\) KiB used.*/\1/p')
        if [ -n "$heap_after_many" ] && [ -n "$heap_before_many" ] && [ "$heap_after_many" -le $((heap_before_many + 192)) ]; then
            ok "vrpc many: all detached in $(elapsed "$many_start" "$(uptime_s)") s from the warm-up, heap $heap_before_many KiB before, $heap_after_many KiB after"
        else
            fail "vrpc many: heap '$heap_before_many' KiB before, '$heap_after_many' KiB after detaching all"
        fi
        echo 1024 > /sys/module/xen_gntalloc/parameters/limit 2>/dev/null
        # The guest destroyed while mounted: the storage domain notices and
        # frees everything of it.
        kill $live_tail 2>/dev/null
        xl destroy guest1
        if wait_for sd-vrpc "domain $gid device 0 detached" 60; then
            ok "vrpc: guest destroyed while mounted, storage domain detached it"
        else
            fail "vrpc: storage domain did not notice the guest's destruction"
        fi
    else
        fail "xl create guest1"; sed 's/^/SDT-INFO xl create guest1: /' /tmp/xl-guest1.log
    fi
    # Guest destroy cycles: a Linux domU created, attached, mounted with a
    # file held open, then destroyed with xl destroy; the storage domain
    # must detach it and free what it had. CI runs GUEST_CYCLES of them
    # (sdt_guest_cycles= on dom0's command line, from QEMU_TESTS_GUEST_CYCLES;
    # about 25 s each under TCG); the long run is documented in docs/xen.md.
    guest_cycles=$(sed -n 's/.*sdt_guest_cycles=\([0-9]*\).*/\1/p' /proc/cmdline)
    guest_cycles=${guest_cycles:-2}
    done_cycles=0
    cycles_start=$(uptime_s)
    for cycle in $(seq 1 "$guest_cycles"); do
        name=cycle$cycle
        xl create /etc/xen/guest.cfg "name=\"$name\"" "extra=\"console=hvc0 loglevel=4 gdt=cycle\"" "vif=[]" \
            >/tmp/xl-$name.log 2>&1 || { sed "s/^/SDT-INFO xl create $name: /" /tmp/xl-$name.log; break; }
        id=$(xl domid $name)
        storage-domain-ctl attach $name --export /vrpc --backend sd-vrpc >/tmp/attach-$name.log 2>&1 \
            || { sed 's/^/SDT-INFO cycle attach: /' /tmp/attach-$name.log; xl destroy $name; break; }
        if ! wait_for $name "GDT-OK cycle mounted" 150; then
            sed "s/^/SDT-INFO $name console: /" "$(log_of $name)"
            xl destroy $name
            break
        fi
        xl destroy $name
        if ! wait_for sd-vrpc "domain $id device 0 detached (domain gone)" 60; then
            echo "SDT-INFO cycle $cycle: domain $id not detached"
            break
        fi
        storage-domain-ctl detach $id --backend sd-vrpc --timeout 1 >/dev/null 2>&1
        done_cycles=$cycle
    done
    heaps=$(grep 'device 0 detached (domain gone)' "$(log_of sd-vrpc)" | sed -n 's/.*heap \([0-9]*\) KiB used.*/\1/p' | tail -n "$done_cycles")
    heap_first=$(echo "$heaps" | head -1)
    heap_last=$(echo "$heaps" | tail -1)
    if [ "$done_cycles" = "$guest_cycles" ] && [ -n "$heap_first" ] && [ "$heap_last" -le $((heap_first + 64)) ]; then
        ok "vrpc: $guest_cycles guest create/attach/mount/destroy cycles in $(elapsed "$cycles_start" "$(uptime_s)") s, heap $heap_first KiB after the first, $heap_last KiB after the last"
    else
        fail "vrpc: guest destroy cycles: $done_cycles of $guest_cycles done, heap '$heap_first' -> '$heap_last' KiB"
    fi
    timeout 60 xl shutdown -w sd-vrpc >/dev/null 2>&1
    gone sd-vrpc 30 && ok "vrpc shutdown: domain gone" || { fail "vrpc shutdown"; xl destroy sd-vrpc; }
    grep -q "disk flush ok" "$(log_of sd-vrpc)" && ok "vrpc shutdown: flushed" || fail "vrpc shutdown: no flush line"
else
    fail "vrpc boot: not serving guests"
fi
kill $sd_tail 2>/dev/null

# 4. A panic reaches the console and crashes the domain (kept by
#    on_crash="preserve" so its state shows as crashed).
if create sd-panic "test=panic"; then
    state=
    for i in $(seq 1 300); do
        state=$(xl list sd-panic 2>/dev/null | awk 'NR == 2 {print $5}')
        case "$state" in *c*) break ;; esac
        sleep 0.2
    done
    case "$state" in *c*) ok "panic: domain crashed (state $state)" ;; *) fail "panic: state '$state'" ;; esac
    wait_for sd-panic "panicked at" 10 && ok "panic: message on console" || fail "panic: no message"
    xl destroy sd-panic
else
    fail "xl create sd-panic"
fi

# 5. A CPU fault (a read of the unmapped stack guard page) is reported on
#    the console by the kernel's trap handler, then the domain crashes.
if create sd-fault "test=fault"; then
    state=
    for i in $(seq 1 300); do
        state=$(xl list sd-fault 2>/dev/null | awk 'NR == 2 {print $5}')
        case "$state" in *c*) break ;; esac
        sleep 0.2
    done
    case "$state" in *c*) ok "fault: domain crashed (state $state)" ;; *) fail "fault: state '$state'" ;; esac
    wait_for sd-fault "fault: page fault" 10 && ok "fault: report on console" || fail "fault: no report"
    xl destroy sd-fault
else
    fail "xl create sd-fault"
fi

[ -e /tmp/sd-vrpc-first.log ] && sed -e 's/^/[sd-vrpc-first] /' -e 's/\r$//' /tmp/sd-vrpc-first.log
for name in sd-seed sd-churn sd-verify sd-nfs sd-vrpc guest1 sd-panic sd-fault; do
    echo "----- console of $name -----"
    sed -e "s/^/[$name] /" -e 's/\r$//' "$(log_of "$name")" 2>/dev/null | grep -v '^\[sd-churn\] churn: committed' || true
    grep 'churn: committed' "$(log_of "$name")" 2>/dev/null | tail -2 | sed "s/^/[$name] /"
done
echo "----- xl dmesg (tail) -----"
xl dmesg | tail -n 15
sync
echo 3 > /proc/sys/vm/drop_caches
ok "dom0 done"
poweroff -f
