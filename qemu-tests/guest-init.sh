#!/bin/sh
# /init of the test Linux domU (busybox): mount the storage domain's
# export with guest-driver over VRPC (grant rings + the metadata table),
# run the checks, and report each as "GDT-OK <step> ..." or "GDT-FAIL
# <step> ..." on the console (dom0 reads the console log; run.sh judges).
# dom0 and this guest take turns through xenstore keys under this
# domain's data/ directory: `data/guest-step` (written here) and
# `data/dom0-step` (written by dom0).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

uptime_s() { cut -d' ' -f1 /proc/uptime; }
ok() { echo "GDT-OK $* t=$(uptime_s)"; }
fail() { echo "GDT-FAIL $* t=$(uptime_s)"; }
elapsed() { awk "BEGIN{printf \"%.2f\", $2 - $1}"; }
step() { xenstore-write "data/guest-step" "$1"; }
# wait_dom0 VALUE SECONDS: until dom0 wrote VALUE to data/dom0-step.
wait_dom0() {
    i=0
    while [ $i -lt $(($2 * 5)) ]; do
        [ "$(xenstore-read data/dom0-step 2>/dev/null)" = "$1" ] && return 0
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}
stat_count() { guest-driver stats /mnt/share 2>/dev/null | awk -v key="$1" '$1 == key {print $2}'; }

for module in xen-evtchn xen-gntdev xen-gntalloc fuse xen-netfront nfsv3; do
    modprobe "$module" || fail "modprobe $module"
done
ok "boot $(uname -r)"
mkdir -p /mnt/share

# Destroy cycles (gdt=cycle on the kernel command line): mount, write a
# file and keep it open, say so, and wait for dom0's xl destroy.
if grep -q 'gdt=cycle' /proc/cmdline; then
    guest-driver mount --xen --export /vrpc /mnt/share >/tmp/guest-driver.log 2>&1 &
    for i in $(seq 1 300); do
        grep -q ' /mnt/share fuse' /proc/mounts && break
        sleep 0.2
    done
    name=$(xenstore-read name 2>/dev/null)
    if echo "written by $name" > "/mnt/share/$name.txt" && exec 3< "/mnt/share/$name.txt" \
        && [ "$(cat <&3)" = "written by $name" ]; then
        ok "cycle mounted, wrote and holds /$name.txt open"
    else
        fail "cycle mount"
        sed 's/^/GDT-INFO guest-driver: /' /tmp/guest-driver.log
    fi
    while true; do sleep 3600; done
fi

# 1. Mount: guest-driver finds device/vrpc/0 (written by dom0's
#    storage-domain-ctl attach) and connects.
t0=$(uptime_s)
guest-driver mount --xen --export /vrpc /mnt/share >/tmp/guest-driver.log 2>&1 &
driver=$!
mounted=
for i in $(seq 1 300); do
    grep -q ' /mnt/share fuse' /proc/mounts && { mounted=1; break; }
    kill -0 $driver 2>/dev/null || break
    sleep 0.2
done
if [ -n "$mounted" ]; then
    ok "mount: attach-to-mounted $(elapsed "$t0" "$(uptime_s)") s"
else
    fail "mount"
    sed 's/^/GDT-INFO guest-driver: /' /tmp/guest-driver.log
fi

if [ -n "$mounted" ]; then
    # 2. 16 MiB written and read back byte for byte (the read after
    #    dropping the page cache goes to the storage domain).
    dd if=/dev/urandom of=/tmp/big bs=1M count=16 2>/dev/null
    t0=$(uptime_s)
    if cp /tmp/big /mnt/share/big && sync; then
        ok "16MiB write $(elapsed "$t0" "$(uptime_s)") s"
    else
        fail "16MiB write"
    fi
    echo 3 > /proc/sys/vm/drop_caches
    t0=$(uptime_s)
    if cmp /tmp/big /mnt/share/big; then
        ok "16MiB read back identical $(elapsed "$t0" "$(uptime_s)") s"
        echo "GDT-BIG-MD5 $(md5sum < /tmp/big | cut -d' ' -f1)"
    else
        fail "16MiB read back"
    fi

    # 3. A stat pass over 1,000 files (the storage domain seeded
    #    /many/f0..f999 at boot, test=many): no RPC at all. The listing
    #    (READDIRPLUS) fills the kernel's caches, which the metadata table
    #    keeps coherent, so each stat is answered by the kernel itself or,
    #    once its attributes were invalidated, from the table: never by a
    #    GETATTR or LOOKUP call.
    listed=$(uptime_s)
    ls /mnt/share/many >/dev/null
    getattr0=$(stat_count rpc.GETATTR)
    lookup0=$(stat_count rpc.LOOKUP)
    hits0=$(stat_count metatab.hits)
    t0=$(uptime_s)
    i=0
    while [ $i -lt 1000 ]; do stat -c %s /mnt/share/many/f$i >/dev/null || break; i=$((i + 1)); done
    t1=$(uptime_s)
    getattr=$(( $(stat_count rpc.GETATTR) - getattr0 ))
    lookup=$(( $(stat_count rpc.LOOKUP) - lookup0 ))
    hits=$(( $(stat_count metatab.hits) - hits0 ))
    # The names the listing cached live 60 s (--entry-timeout) from the
    # listing: a pass that ends later than that (a host busy with other
    # work; reading the counters takes time too) looks names up again.
    slow=$(awk "BEGIN{print ($t1 - $listed > 55) ? 1 : 0}")
    if [ "$i" = 1000 ] && [ "$getattr" = 0 ] && [ "$lookup" = 0 ]; then
        ok "stat pass: 1000 files in $(elapsed "$t0" "$t1") s, $hits table hits, $((1000 - hits)) kernel cache, $getattr GETATTR, $lookup LOOKUP RPCs"
    elif [ "$i" = 1000 ] && [ "$getattr" = 0 ] && [ "$slow" = 1 ]; then
        ok "stat pass: 1000 files in $(elapsed "$t0" "$t1") s (slower than the 60 s name cache: $lookup LOOKUPs for names it forgot), $hits table hits, $getattr GETATTR"
    else
        fail "stat pass: $i files, $hits table hits, $getattr GETATTR, $lookup LOOKUP RPCs"
    fi
    guest-driver stats /mnt/share | sed 's/^/GDT-INFO stats: /'

    # 4. A change made in dom0 (its own guest-driver mount of the same
    #    export over VRPC) is seen here through the table: the watcher
    #    invalidates the kernel's cached attributes within milliseconds
    #    (natively; slower under TCG), allowed 5 s here.
    echo before > /mnt/share/shared.txt
    size0=$(stat -c %s /mnt/share/shared.txt)
    step ready-for-dom0-change
    if wait_dom0 changed 300; then
        t0=$(uptime_s)
        size1=$(stat -c %s /mnt/share/shared.txt)
        tries=0
        while [ "$size1" != 20 ] && [ $tries -lt 500 ]; do
            sleep 0.01
            size1=$(stat -c %s /mnt/share/shared.txt)
            tries=$((tries + 1))
        done
        t1=$(uptime_s)
        content=$(cat /mnt/share/shared.txt)
        if [ "$size0" = 7 ] && [ "$size1" = 20 ] && [ "$content" = "changed in domain 0" ]; then
            ok "dom0's change seen (size $size0 -> $size1) $(elapsed "$t0" "$t1") s after dom0 said so"
        else
            fail "dom0's change: size $size0 -> $size1, content '$content'"
        fi
    else
        fail "dom0's change: dom0 never said it changed the file"
    fi

    # 4b. Ratios (absolute times mean nothing under emulation): the same
    #     work on the VRPC mount and on the Linux kernel NFS client over
    #     the vif, against the same storage domain, in this one run.
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.0.3/24 dev eth0
    ping -c 1 -W 10 10.0.0.2 >/dev/null 2>&1 || echo "GDT-INFO no ping reply from 10.0.0.2"
    mkdir -p /mnt/nfs
    if timeout 60 mount.nfs 10.0.0.2:/vrpc /mnt/nfs -o vers=3,proto=tcp,port=2049,mountport=2049,nolock,soft,timeo=100,retrans=2 >/tmp/mount-nfs.log 2>&1; then
        ok "kernel NFS mount over the vif"
        # work DIR NAME: prints "stat create write read" seconds: a stat
        # pass over the 1,000 seeded files, 100 small files created, 16 MiB
        # written and read back (after dropping the page cache).
        work() {
            echo 3 > /proc/sys/vm/drop_caches
            ls "$1/many" >/dev/null
            a=$(uptime_s)
            i=0
            while [ $i -lt 1000 ]; do stat -c %s "$1/many/f$i" >/dev/null; i=$((i + 1)); done
            b=$(uptime_s)
            mkdir -p "$1/ratio-$2"
            i=0
            while [ $i -lt 100 ]; do echo "file $i" > "$1/ratio-$2/c$i"; i=$((i + 1)); done
            sync
            c=$(uptime_s)
            cp /tmp/big "$1/ratio-$2/big" && sync
            d=$(uptime_s)
            echo 3 > /proc/sys/vm/drop_caches
            cat "$1/ratio-$2/big" > /dev/null
            e=$(uptime_s)
            cmp -s /tmp/big "$1/ratio-$2/big" || echo "MISMATCH"
            echo "$(elapsed "$a" "$b") $(elapsed "$b" "$c") $(elapsed "$c" "$d") $(elapsed "$d" "$e")"
        }
        vrpc=$(work /mnt/share vrpc)
        nfs=$(work /mnt/nfs nfs)
        case "$vrpc$nfs" in
            *MISMATCH*) fail "ratios: data mismatch ($vrpc / $nfs)" ;;
            *) set -- $vrpc $nfs
               ok "ratios VRPC/NFS: stat 1000 files $1/$5 s, create 100 files $2/$6 s, 16MiB write $3/$7 s, 16MiB read $4/$8 s"
               echo "GDT-RATIO stat1000 $1 $5"
               echo "GDT-RATIO create100 $2 $6"
               echo "GDT-RATIO write16M $3 $7"
               echo "GDT-RATIO read16M $4 $8" ;;
        esac
        # 4c. The storage domain's loop never waits for a commit's disk
        #     flush: a stat pass over the kernel NFS mount (LOOKUPs and
        #     GETATTRs over TCP after dropping the caches) alone, then
        #     while this guest's VRPC mount commits over and over (64 KiB
        #     written and fsynced in a loop). Ratio with/without; the
        #     writer's count shows it ran throughout.
        stat_pass() {
            echo 3 > /proc/sys/vm/drop_caches
            a=$(uptime_s)
            i=0
            while [ $i -lt 1000 ]; do stat -c %s "/mnt/nfs/many/f$i" >/dev/null; i=$((i + 1)); done
            elapsed "$a" "$(uptime_s)"
        }
        # beside STEP: the stat pass while the function STEP runs over
        # and over in the background (each run prints how many units of
        # work it did; a failed run ends the loop); prints "seconds units".
        beside() {
            rm -f /tmp/stop-loop /tmp/loop-count
            (
                n=0
                while [ ! -e /tmp/stop-loop ]; do
                    units=$("$1") || break
                    n=$((n + ${units:-0}))
                done
                echo $n > /tmp/loop-count
            ) &
            loop=$!
            sleep 1
            seconds=$(stat_pass)
            touch /tmp/stop-loop
            wait $loop
            echo "$seconds $(cat /tmp/loop-count 2>/dev/null || echo 0)"
        }
        # 64 KiB written and fsynced: one fsync.
        fsync_step() {
            dd if=/dev/zero of=/mnt/share/fsync-loop bs=64k count=1 conv=fsync 2>/dev/null && echo 1
        }
        # 4 KiB at a scattered offset of /big (16 MiB; the storage domain's
        # data cache holds 1 MiB), this guest's page cache dropped after
        # it, so most reads reach the disk: one read.
        cold_read_step() {
            dd if=/mnt/share/big of=/dev/null bs=4k count=1 skip=$(( (n * 2654435761) % 4096 )) 2>/dev/null \
                && echo 1 > /proc/sys/vm/drop_caches && echo 1
        }
        # The whole of /big streamed, the page cache dropped first: the
        # storage domain reads a sequential stream's read-ahead window
        # waiting (docs/xen.md, "Calls that read cold blocks"), so the
        # stat pass meets those waits. Units: 1 MiB blocks read.
        stream_step() {
            echo 1 > /proc/sys/vm/drop_caches
            dd if=/mnt/share/big of=/dev/null bs=1M 2>/tmp/streamer-dd || return 1
            sed -n 's/^\([0-9]*\)+[0-9]* records in$/\1/p' /tmp/streamer-dd
        }
        alone=$(stat_pass)
        set -- $(beside fsync_step)
        beside=$1 fsyncs=$2
        set -- $(beside cold_read_step)
        beside_reads=$1 cold_reads=$2
        set -- $(beside stream_step)
        beside_stream=$1 streamed=$2
        if [ "${fsyncs:-0}" -gt 0 ] && [ "${cold_reads:-0}" -gt 0 ] && [ "${streamed:-0}" -gt 0 ]; then
            ok "mixed: stat 1000 files over NFS alone $alone s, beside an fsync loop on VRPC $beside s ($fsyncs fsyncs), beside scattered cold reads on VRPC $beside_reads s ($cold_reads reads), beside a streaming read on VRPC $beside_stream s ($streamed MiB)"
            echo "GDT-MIXED $alone $beside $fsyncs $beside_reads $cold_reads $beside_stream $streamed"
        else
            fail "mixed: the fsync loop ($fsyncs), the reader ($cold_reads) or the streamer ($streamed) on VRPC made no progress"
        fi
        umount /mnt/nfs || fail "kernel NFS umount"
    else
        fail "kernel NFS mount over the vif"; sed 's/^/GDT-INFO mount.nfs: /' /tmp/mount-nfs.log
    fi

    # 5. pjdfstest: a subset that fits the time budget under emulation.
    if command -v pjdfstest >/dev/null; then
        mkdir -p /mnt/share/pjd
        chmod 0777 /mnt/share/pjd
        cd /mnt/share/pjd
        t0=$(uptime_s)
        pjdfstest -c /etc/pjdfstest.toml -p /mnt/share/pjd mkdir chmod >/tmp/pjd.log 2>&1
        status=$?
        cd /
        summary=$(grep '^Summary:' /tmp/pjd.log | tail -1)
        if [ "$status" = 0 ]; then
            ok "pjdfstest subset: $summary in $(elapsed "$t0" "$(uptime_s)") s"
        else
            fail "pjdfstest subset (status $status): $summary"
            grep 'FAILED' /tmp/pjd.log | head -20 | sed 's/^/GDT-INFO pjdfstest: /'
        fi
    fi

    # 6. The storage domain is destroyed while mounted: calls fail (EIO)
    #    within 5 s and nothing hangs; then it is recreated and
    #    re-attached, and the same mount point works again, with a file
    #    opened before the crash still readable through its handle.
    exec 3</mnt/share/big
    step ready-for-sd-destroy
    if wait_dom0 sd-destroyed 300; then
        t0=$(uptime_s)
        result=$(timeout 10 stat -c %s /mnt/share/failing 2>&1; echo "status $?")
        t1=$(uptime_s)
        case "$result" in
            *"status 124"*) fail "calls after the storage domain died: hung" ;;
            *"I/O error"*|*"Input/output"*|*"Transport endpoint"*) ok "calls fail after the storage domain died ($(elapsed "$t0" "$t1") s)" ;;
            *) fail "calls after the storage domain died: $result" ;;
        esac
        step saw-sd-gone
        if wait_dom0 sd-recreated 300; then
            back=
            t0=$(uptime_s)
            for i in $(seq 1 300); do
                [ -s /mnt/share/shared.txt ] && [ "$(cat /mnt/share/shared.txt 2>/dev/null)" = "changed in domain 0" ] && { back=1; break; }
                sleep 0.2
            done
            if [ -n "$back" ]; then
                ok "reconnected after the storage domain restarted ($(elapsed "$t0" "$(uptime_s)") s)"
            else
                fail "no reconnection after the storage domain restarted"
                tail -20 /tmp/guest-driver.log | sed 's/^/GDT-INFO guest-driver: /'
            fi
            if head -c 65536 <&3 > /tmp/head && head -c 65536 /tmp/big | cmp -s - /tmp/head; then
                ok "a file opened before the restart is still readable"
            else
                fail "a file opened before the restart is not readable"
            fi
        else
            fail "dom0 never recreated the storage domain"
        fi
    else
        fail "dom0 never destroyed the storage domain"
    fi
    exec 3<&-
    step done
fi
tail -5 /tmp/guest-driver.log | sed 's/^/GDT-INFO guest-driver: /'
ok "guest done"
# Stay up: dom0 destroys this guest while it is mounted (the lifecycle
# check) once it read the console.
while true; do sleep 3600; done
