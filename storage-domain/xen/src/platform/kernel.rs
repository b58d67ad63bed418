//! The storage domain's main: wire the platform to the file system.
//!
//! Boot: banner, xenstore, grant table, blkfront, `sdfs::Volume::open`,
//! boot-test actions, the self-check, netfront and the TCP server (when
//! the domain has a vif and an `ip=`; a DHCP lease is printed and
//! published as `data/ip`), the metadata tables and the VRPC
//! backend, then the poll loop: serve NFS over TCP and over every guest's
//! VRPC ring, walk the guests' xenstore state machines and watch
//! `control/shutdown`, sleeping in `SCHEDOP_poll` on the xenstore,
//! netfront and guests' event channels until a frame, a request, a TCP
//! timer or a watch. Shutdown detaches the guests, commits the file
//! system, flushes the disk, closes the devices and ends the domain with
//! `SCHEDOP_shutdown`.

use super::blkfront::{Blkfront, READ_PAGES};
use super::disk_bench;
use super::events::{self, PvClock};
use super::netfront::Netfront;
use super::vrpc_backend::{self, VrpcService};
use super::xenstore::{Transaction, Xenstore, XenstoreError};
use super::{console, grants, hypercall, memory};
use crate::command_line::{Address, Config, TestAction};
use crate::disk_reads::DiskReads;
use crate::fs_tasks;
use crate::println;
use crate::tcp_server::{
    self, AddressEvent, Addressing, Limits, TcpServer, CONNECTION_BYTES, DEFAULT_MAX_CONNECTIONS,
};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use vfs::FileSystem;
use xen_abi::sched::ShutdownReason;
use xen_abi::xen::StartInfo;
use xen_abi::EventChannelPort;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SHUTDOWN_NODE: &str = "control/shutdown";
const SHUTDOWN_TOKEN: &str = "shutdown";
/// The token of the watch on `control/snapshot`
/// ([`vrpc::xenstore::SNAPSHOT_REQUEST`]).
const SNAPSHOT_TOKEN: &str = "snapshot";
/// Where the address leased by DHCP is published (relative to the
/// domain's own xenstore directory; empty while there is none).
const ADDRESS_NODE: &str = "data/ip";
/// Rounds of xenstore work (watch events, device state changes) per loop
/// pass before serving again.
const XENSTORE_ROUNDS: usize = 16;
/// Most time a change answered before its commit stays volatile (ext4's
/// default journal commit interval is also 5 s).
const COMMIT_INTERVAL_NS: u64 = 5_000_000_000;

/// How often the statistics in xenstore are brought up to date.
const STATS_INTERVAL_NS: u64 = 5_000_000_000;

/// Boot, serve, shut down. Never returns.
pub fn main(start_info: &StartInfo) -> ! {
    let started = events::system_time_ns();
    let (major, minor) = hypercall::xen_version();
    let config = Config::parse(start_info.command_line());
    let pages = memory::domain_pages();
    println!(
        "storage-domain {VERSION} on Xen {major}.{minor}: {} MiB ({pages} pages), image {} KiB, heap {} MiB",
        (pages * 4096) >> 20,
        memory::image_bytes() >> 10,
        memory::HEAP_BYTES >> 20
    );
    for warning in &config.warnings {
        println!("config: {warning}");
    }
    match run(start_info, &config, started) {
        Ok(reason) => {
            console::drain(2000);
            hypercall::shutdown(reason)
        }
        Err(error) => {
            println!("storage-domain: fatal: {error}");
            console::drain(2000);
            hypercall::shutdown(ShutdownReason::Crash)
        }
    }
}

fn run(start_info: &StartInfo, config: &Config, started: u64) -> Result<ShutdownReason, String> {
    let mut xenstore = Xenstore::new(start_info).map_err(|error| format!("{error}"))?;
    grants::init().map_err(|error| format!("grant table: {error:?}"))?;
    let domain = xenstore
        .read_string(Transaction::NONE, "domid")
        .unwrap_or_else(|_| String::from("?"));
    let devices = xenstore
        .directory(Transaction::NONE, "device/vbd")
        .map_err(|error| format!("no disk (give the domain a disk= in its xl config): {error}"))?;
    let device = devices
        .first()
        .ok_or_else(|| String::from("no disk (give the domain a disk= in its xl config)"))?;
    let mut disk = Blkfront::connect(&mut xenstore, device, config.disk_segments)
        .map_err(|error| format!("{error}"))?;
    // Commits started by the poll loop are answered on it.
    let disk_port = disk.port();
    println!(
        "disk: vbd {device} (backend {}): {} MiB{}, flush by {:?}, {} segments a request{}{}",
        disk.backend(),
        disk.size_bytes() >> 20,
        if disk.read_only() { ", read-only" } else { "" },
        disk.flush_method(),
        disk.segments_per_request(),
        match disk.offered_segments() {
            Some(offered) => format!(" (the backend offers {offered} in indirect requests)"),
            None => String::from(" (the backend offers no indirect requests)"),
        },
        if disk.persistent() {
            ", grants kept mapped"
        } else {
            ""
        }
    );
    if config.wants(TestAction::DiskBench) {
        println!("{}", disk_bench::run(&mut disk, config.disk_segments));
    }

    // The data cache's room is taken now, before the heap is budgeted for
    // connections and tables, and never more than a quarter of what is
    // free.
    let (heap_used, heap_size) = memory::heap_usage();
    let data_cache = config
        .data_cache_bytes
        .min((heap_size.saturating_sub(heap_used) / 4) as u64);
    let cached = sdfs::CachedDevice::new(&mut disk, data_cache);
    let data_cache_blocks = cached.capacity_bytes() / sdfs::BLOCK_SIZE as u64;
    println!(
        "data cache: {} KiB{}",
        cached.capacity_bytes() >> 10,
        if cached.capacity_bytes() < config.data_cache_bytes {
            " (less than asked: a quarter of the free heap at most)"
        } else {
            ""
        }
    );
    let mut volume = sdfs::Volume::open(cached, Box::new(PvClock), config.cache_bytes)
        .map_err(|error| format!("opening the file system: {error:?}"))?;
    // Guests reading `.snapshots` share the 16 MiB heap: one snapshot view
    // open at a time, with a small inode cache (reopening one reads only
    // its index).
    volume.limit_snapshot_views(1, 256 << 10);
    println!(
        "file system: {} blocks of 4096 bytes, at commit {}",
        volume.block_count(),
        volume.commit_sequence()
    );
    if config.wants(TestAction::Verify) {
        match fs_tasks::verify_known_files(&mut volume) {
            Ok(()) => println!("verify: known files intact"),
            Err(error) => println!("verify: FAILED: {error}"),
        }
        match fs_tasks::verify_churn_log(&mut volume) {
            Ok(count) => println!("verify: churn.log holds commits 1..{count}"),
            Err(error) => println!("verify: churn.log FAILED: {error}"),
        }
    }
    if config.wants(TestAction::Seed) {
        match fs_tasks::seed_known_files(&mut volume) {
            Ok(()) => println!("seed: wrote /known/hello.txt and /known/lines.txt"),
            Err(error) => println!("seed: FAILED: {error}"),
        }
    }
    if config.wants(TestAction::Many) {
        match fs_tasks::seed_many_files(&mut volume) {
            Ok(()) => println!("seed: /many holds f0..f{}", fs_tasks::MANY_FILES - 1),
            Err(error) => println!("seed: /many FAILED: {error}"),
        }
    }
    match fs_tasks::self_check(&mut volume) {
        Ok(check) => println!(
            "fs ok: {} inodes, {} free blocks",
            check.inodes_in_use, check.free_blocks
        ),
        Err(error) => println!("fs self-check FAILED: {error}"),
    }
    let network = start_network(&mut xenstore, config)?;
    let mut server = start_server(volume, config, network.is_some())?;
    for export in &config.exports {
        println!(
            "export: {} -> {} ({}, {:?} squash, {} client filter(s))",
            export.name,
            export.path,
            if export.read_only {
                "read-only"
            } else {
                "read-write"
            },
            export.squash,
            export.clients.len()
        );
    }
    // The metadata tables (their boot id must differ between boots, like
    // the write verifier) and the VRPC backend.
    let boot_id = events::system_time_ns() ^ (events::wall_clock().seconds as u64).rotate_left(17);
    let mut vrpc = VrpcService::new(&mut server, config.metatab_slots, boot_id)?;
    vrpc.start(&mut xenstore)
        .map_err(|error| format!("watching backend/vrpc: {error}"))?;

    // After the tables, so the connection limit sees the heap they left.
    let mut network = match (network, config.address) {
        (Some(mut netfront), Some(address)) => {
            let addressing = match address {
                Address::Static(address, prefix) => Addressing::Static {
                    address,
                    prefix,
                    gateway: config.gateway,
                },
                Address::Dhcp => Addressing::Dhcp,
            };
            let limits = connection_limits(config);
            let mac = netfront.mac();
            let seed =
                events::system_time_ns() ^ (events::wall_clock().seconds as u64).rotate_left(32);
            let tcp = TcpServer::new(
                &mut netfront,
                seed,
                mac,
                addressing,
                config.port,
                limits,
                now(),
            );
            println!(
                "nfs: serving NFSv3, MOUNT and PORTMAP on {}:{} over TCP (up to {} clients, {} KiB each; the idle longest gives way)",
                match address {
                    Address::Static(address, _) => format!("{address}"),
                    Address::Dhcp => String::from("the DHCP address"),
                },
                config.port,
                limits.max_connections,
                CONNECTION_BYTES >> 10
            );
            if address == Address::Dhcp {
                // Nothing stale for dom0 to find before the first lease.
                let _ = xenstore.write(Transaction::NONE, ADDRESS_NODE, b"");
            }
            Some((netfront, tcp))
        }
        _ => {
            println!("nfs: server constructed; not reachable: no network (needs a vif and ip=)");
            None
        }
    };

    let (heap_used, heap_size) = memory::heap_usage();
    println!(
        "ready: domain {domain}, {} ms after entry, heap {} KiB used of {} KiB",
        (events::system_time_ns() - started) / 1_000_000,
        heap_used >> 10,
        heap_size >> 10
    );
    if config.wants(TestAction::Panic) {
        panic!("test=panic asked for a crash after the self-check");
    }
    if config.wants(TestAction::Fault) {
        memory::fault_on_purpose();
    }

    xenstore
        .watch(SHUTDOWN_NODE, SHUTDOWN_TOKEN)
        .map_err(|error| format!("watching {SHUTDOWN_NODE}: {error}"))?;
    // Snapshots on request from dom0 (`storage-domain-ctl snapshot`); the
    // domain serves without them if the watch is refused.
    if let Err(error) = xenstore.watch(vrpc::xenstore::SNAPSHOT_REQUEST, SNAPSHOT_TOKEN) {
        println!(
            "snapshots: watching {}: {error}; dom0 cannot take snapshots",
            vrpc::xenstore::SNAPSHOT_REQUEST
        );
    }
    let churn = config.wants(TestAction::Churn);
    let mut churn_number = fs_tasks::verify_churn_log(server.filesystem()).unwrap_or(0);
    let store_port = xenstore.port();
    let mut ports: Vec<EventChannelPort> = Vec::new();
    // When the oldest uncommitted change must be committed (ns).
    let mut commit_due: Option<u64> = None;
    // Whether a commit's flush is on the disk (the loop sleeps on its port).
    let mut commit_in_flight = false;
    // The blocks parked calls wait for, read without waiting.
    let mut reads = DiskReads::new(data_cache_blocks);
    let mut commit_failure_reported = false;
    // What was last published in xenstore, and when next to look.
    let mut published = String::new();
    let mut publish_at = 0u64;
    let reason = 'serve: loop {
        // Work to do now means the wait below only looks (deadline 1).
        let mut busy = churn;
        if churn {
            churn_number += 1;
            match fs_tasks::churn_step(server.filesystem(), churn_number) {
                Ok(()) => println!("churn: committed {churn_number}"),
                Err(error) => {
                    println!("churn: FAILED: {error}");
                    break ShutdownReason::Crash;
                }
            }
        }
        // 0: no timer, sleep until an event.
        let mut deadline = 0;
        ports.clear();
        ports.push(store_port);
        if let Some((netfront, tcp)) = &mut network {
            netfront.service();
            // Between its rounds (many clients keep it busy for a while),
            // the disk's reads go on and their parked calls are answered.
            let mut disk = |server: &mut Server, reads: &mut DiskReads| {
                let ended = drive_reads(server.filesystem().device_mut(), reads);
                if ended {
                    vrpc.retry_parked(server, reads);
                }
                ended
            };
            busy |= tcp.poll(now, netfront, &mut server, &mut reads, &mut disk);
            while let Some(event) = tcp.take_address_event() {
                publish_address(&mut xenstore, event);
            }
            busy |= netfront.has_responses();
            if let Some(delay) = tcp.poll_delay(now()) {
                deadline = events::system_time_ns()
                    .saturating_add(delay.total_micros().saturating_mul(1000))
                    .max(1);
            }
            ports.push(netfront.port());
        }
        // Every guest's ready requests, one commit for all.
        busy |= vrpc.serve(&mut server, &mut reads);
        // Xenstore: the guests' state machines (which make requests of
        // their own) and every watch event, until no event is queued, so
        // none waits in the client's queue while the loop sleeps. The
        // watches are checked without blocking; the sleep is below (a
        // pending bit set since the checks makes it return at once).
        let mut settled = false;
        for _ in 0..XENSTORE_ROUNDS {
            if vrpc.needs_settle() {
                vrpc.settle(&mut xenstore);
            }
            match xenstore.next_watch_event(None, 1) {
                Ok(Some(event)) if event.token == SHUTDOWN_TOKEN => {
                    if let Some(reason) = shutdown_request(&mut xenstore) {
                        break 'serve reason;
                    }
                }
                Ok(Some(event)) if event.token == vrpc_backend::TOKEN => vrpc.watch_fired(),
                Ok(Some(event)) if event.token == SNAPSHOT_TOKEN => {
                    snapshot_request(&mut xenstore, &mut server);
                }
                // Another watch's late event (a device handshake's).
                Ok(Some(_)) => {}
                Ok(None) if !vrpc.needs_settle() => {
                    settled = true;
                    break;
                }
                Ok(None) => {}
                Err(error) => return Err(format!("xenstore: {error}")),
            }
        }
        busy |= !settled;
        if let Some(linger) = vrpc.deadline() {
            deadline = if deadline == 0 {
                linger
            } else {
                deadline.min(linger)
            };
        }
        let now_ns = events::system_time_ns();
        if now_ns >= publish_at {
            let tcp = network.as_ref().map(|(_, tcp)| tcp);
            let text = statistics_text(&mut server, &vrpc, tcp, &reads);
            if text != published {
                if let Err(error) = xenstore.write(
                    Transaction::NONE,
                    vrpc::xenstore::STATS_NODE,
                    text.as_bytes(),
                ) {
                    println!("stats: publishing {}: {error}", vrpc::xenstore::STATS_NODE);
                }
                published = text;
            }
            publish_at = now_ns.saturating_add(STATS_INTERVAL_NS);
        }
        deadline = if deadline == 0 {
            publish_at
        } else {
            deadline.min(publish_at)
        };
        // Commits, last of the disk's work in a round (so a completion
        // the round's reads took off the ring is seen before sleeping).
        // The loop never waits for them: `commit_advance` writes a
        // commit's blocks, starts the disk's flush and comes back; later
        // rounds, woken by the disk, take its next step. Replies that
        // promise durability (sync exports, COMMIT) are held until then
        // and start a commit at once; changes answered before their
        // commit (`async` exports, and VRPC guests on `vrpc=local` ones)
        // start one within the interval.
        // The disk's event is cleared before its ring is looked at below:
        // a response published from now on wakes the sleep at the end,
        // and one published before is seen by the polls (left pending, an
        // old event would make every sleep return at once while a read or
        // flush runs).
        events::clear_pending(disk_port);
        let held = vrpc.held() + network.as_ref().map_or(0, |(_, tcp)| tcp.held());
        let now_ns = events::system_time_ns();
        let interval_due = if server.has_uncommitted() && held == 0 && !commit_in_flight {
            let due = *commit_due.get_or_insert(now_ns.saturating_add(COMMIT_INTERVAL_NS));
            deadline = deadline.min(due);
            now_ns >= due
        } else {
            commit_due = None;
            false
        };
        if commit_in_flight || held > 0 || interval_due {
            if interval_due {
                commit_due = None;
            }
            let failed = match server.commit_advance() {
                Ok(still) => {
                    commit_in_flight = still;
                    false
                }
                Err(error) => {
                    commit_in_flight = false;
                    if !commit_failure_reported {
                        println!("commit: FAILED: {error}: further changes are refused");
                        commit_failure_reported = true;
                    }
                    true
                }
            };
            vrpc.release(&server, failed);
            if let Some((_, tcp)) = &mut network {
                busy |= tcp.release(&server, failed) > 0;
            }
        }
        // The reads parked calls wait for, after the commit (no batch the
        // loop waits for runs after these two polls, so no completion is
        // taken off the ring unseen before sleeping): one read on the disk
        // at a time, its blocks filled into the data cache when it is
        // done, and the parked calls tried again in the next round.
        if drive_reads(server.filesystem().device_mut(), &mut reads) {
            // A fill: its calls go now, before other calls' reads could
            // crowd its blocks out of the cache.
            vrpc.retry_parked(&mut server, &mut reads);
            if let Some((_, tcp)) = &mut network {
                tcp.retry_parked(&mut server, &mut reads);
            }
            busy = true;
        }
        // RING_FINAL_CHECK_FOR_REQUESTS on every guest's ring, last.
        if !busy && !vrpc.final_check() {
            ports.extend(vrpc.ports());
            if commit_in_flight || reads.reading() {
                ports.push(disk_port);
            }
            events::wait(&ports, deadline);
        }
    };

    vrpc.shutdown(&mut xenstore);
    if let Some((netfront, tcp)) = network {
        let statistics = netfront.statistics;
        println!(
            "network: {} connections (at most {} at once, {} evicted, {} stalled), {} records, {} replies, {} oversized, at most {} KiB of records buffered; frames {} in, {} out, {} dropped, {} malformed{}",
            tcp.statistics.connections,
            tcp.statistics.most_connected,
            tcp.statistics.evicted,
            tcp.statistics.stalled,
            tcp.statistics.records,
            tcp.statistics.replies,
            tcp.statistics.oversized,
            tcp.statistics.most_buffered >> 10,
            statistics.received,
            statistics.sent,
            statistics.dropped,
            statistics.dropped_malformed,
            match netfront.broken() {
                Some(why) => format!("; interface stopped: {why}"),
                None => String::new(),
            }
        );
        drop(tcp);
        match netfront.disconnect(&mut xenstore) {
            Ok(state) => println!("network: disconnected (backend {state:?})"),
            Err(error) => println!("network: disconnect incomplete: {error}"),
        }
    }

    let mut volume = server.into_filesystem();
    let committed = volume.commit();
    let sequence = volume.commit_sequence();
    drop(volume);
    let flushed = sdfs::BlockDevice::flush(&mut disk);
    let (heap_used, _) = memory::heap_usage();
    println!(
        "shutdown ({reason:?}): commit {sequence} {}, disk flush {}, {} requests ({} blocks in {} started writes), at most {} in flight ({} indirect), heap {} KiB used",
        if committed.is_ok() { "written" } else { "FAILED" },
        if flushed.is_ok() { "ok" } else { "FAILED" },
        disk.requests,
        disk.writes.blocks,
        disk.writes.requests,
        disk.most_in_flight,
        disk.most_indirect(),
        heap_used >> 10
    );
    match disk.disconnect(&mut xenstore) {
        Ok(state) => println!("disk: disconnected (backend {state:?})"),
        Err(error) => println!("disk: disconnect incomplete: {error}"),
    }
    // A shutdown that could not make the disk durable is reported as a
    // crash, so the toolstack (and on_crash) sees it.
    if committed.is_err() || flushed.is_err() {
        return Ok(ShutdownReason::Crash);
    }
    Ok(reason)
}

/// The NFS server the domain runs.
type Server<'disk> = nfs_server::Server<sdfs::Volume<sdfs::CachedDevice<&'disk mut Blkfront>>>;

/// Take the blocks of every started read that is done into the data
/// cache, and start the next reads parked calls wait for (up to
/// `MAX_READING` at once). Returns whether a read ended (parked calls
/// should be tried again now).
fn drive_reads(cache: &mut sdfs::CachedDevice<&mut Blkfront>, reads: &mut DiskReads) -> bool {
    let mut ended = false;
    while reads.reading() {
        let Some((first, blocks, result)) = cache.inner_mut().poll_read() else {
            break;
        };
        match result {
            Ok(data) => cache.fill(first, Some(&data)),
            // The calls try again and, refused often enough, run waiting:
            // they get the disk's error then.
            Err(_) => cache.fill(0, None),
        }
        reads.finished(first, blocks as u64);
        ended = true;
    }
    while let Some((first, count)) = reads.next() {
        let blocks = usize::try_from(count).unwrap_or(READ_PAGES).min(READ_PAGES);
        match cache.inner_mut().start_read(first, blocks) {
            Ok(0) => break,
            Ok(started) => {
                cache.fill_started();
                reads.started(started as u64);
            }
            Err(_) => {
                reads.started(blocks as u64);
                reads.finished(first, blocks as u64);
                ended = true;
            }
        }
    }
    ended
}

/// The NFS server over the volume, with the configured exports (their
/// directories created when missing).
fn start_server<'disk>(
    mut volume: sdfs::Volume<sdfs::CachedDevice<&'disk mut Blkfront>>,
    config: &Config,
    on_tcp: bool,
) -> Result<nfs_server::Server<sdfs::Volume<sdfs::CachedDevice<&'disk mut Blkfront>>>, String> {
    for export in &config.exports {
        nfs_server::ensure_directory(&mut volume, &export.path)
            .map_err(|error| format!("export {}: {error:?}", export.name))?;
    }
    volume
        .commit()
        .map_err(|error| format!("committing export directories: {error:?}"))?;
    let uuid = volume.uuid();
    let mut file_system_id = [0u8; 8];
    file_system_id.copy_from_slice(&uuid[..8]);
    let server_config = nfs_server::ServerConfig {
        exports: config.exports.clone(),
        handle_secret: volume.handle_secret(),
        // Must differ between server starts (RFC 1813 3.3.7): the clock
        // at boot, which never repeats on one host.
        write_verifier: events::system_time_ns()
            .wrapping_add(events::wall_clock().seconds as u64)
            .to_be_bytes(),
        file_system_id: u64::from_be_bytes(file_system_id),
        port: if on_tcp { config.port } else { 0 },
    };
    nfs_server::Server::new(volume, server_config).map_err(|error| format!("nfs server: {error}"))
}

/// The stack's clock: system time in microseconds.
fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((events::system_time_ns() / 1000) as i64)
}

/// netfront on the first `device/vif`, when the command line gives an
/// address; `None` (with a console line saying why) otherwise.
fn start_network(xenstore: &mut Xenstore, config: &Config) -> Result<Option<Netfront>, String> {
    let vifs = xenstore
        .directory(Transaction::NONE, "device/vif")
        .unwrap_or_default();
    let Some(vif) = vifs.first() else {
        if config.address.is_some() {
            println!("network: ip= given but the domain has no vif; not serving over TCP");
        }
        return Ok(None);
    };
    let Some(address) = config.address else {
        println!("network: vif {vif} present but no ip= on the command line; left unused");
        return Ok(None);
    };
    let netfront = Netfront::connect(xenstore, vif).map_err(|error| format!("{error}"))?;
    let [a, b, c, d, e, f] = netfront.mac();
    println!(
        "network: vif {vif} (backend {}), mac {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}, {}",
        netfront.backend(),
        match (address, config.gateway) {
            (Address::Static(address, prefix), Some(gateway)) =>
                format!("{address}/{prefix}, gateway {gateway}"),
            (Address::Static(address, prefix), None) => format!("{address}/{prefix}"),
            (Address::Dhcp, _) => String::from("address by DHCP"),
        }
    );
    Ok(Some(netfront))
}

/// The TCP connection limits: `connections=` (or the default), lowered
/// to what the heap's free bytes hold next to the shared budgets.
fn connection_limits(config: &Config) -> Limits {
    let wanted = config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let (used, size) = memory::heap_usage();
    let fits = tcp_server::connections_that_fit(size.saturating_sub(used)).max(1);
    if wanted > fits {
        println!(
            "network: {wanted} connections do not fit in the {} KiB of free heap ({} KiB each, plus {} KiB of record and reply budgets); serving at most {fits}",
            size.saturating_sub(used) >> 10,
            CONNECTION_BYTES >> 10,
            tcp_server::SHARED_BYTES >> 10
        );
    }
    Limits {
        max_connections: wanted.min(fits),
        ..Limits::default()
    }
}

/// Print a change of the DHCP lease and publish the address in
/// `data/ip` (emptied when the lease is lost).
/// The statistics published in xenstore: the hosted server's `stats`
/// names where they apply (guests, calls per procedure, commits, caches,
/// space), and the heap.
fn statistics_text(
    server: &mut nfs_server::Server<sdfs::Volume<sdfs::CachedDevice<&mut Blkfront>>>,
    vrpc: &VrpcService,
    tcp: Option<&TcpServer>,
    reads: &DiskReads,
) -> String {
    let tcp_connections = tcp.map(|tcp| tcp.statistics.connections);
    use core::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "connections.vrpc {}", vrpc.connected());
    if let Some(total) = tcp_connections {
        let _ = writeln!(text, "connections.tcp.total {total}");
    }
    let locks_held = server.locks().len();
    server.statistics().render(locks_held, &mut text);
    let volume = server.filesystem();
    let (hits, misses) = volume.cache_statistics();
    let data = volume.device().counters();
    let _ = writeln!(text, "snapshots {}", volume.snapshots().len());
    let _ = writeln!(text, "cache.hits {hits}\ncache.misses {misses}");
    let _ = writeln!(
        text,
        "data_cache.hits {}\ndata_cache.misses {}\ndata_cache.read_ahead {}",
        data.hits, data.misses, data.read_ahead
    );
    let _ = writeln!(
        text,
        "disk.parked_calls {}\ndisk.waited_calls {}\ndisk.parked_now {}\ndisk.reads_queued {}",
        reads.parked,
        reads.waited,
        vrpc.parked() + tcp.map_or(0, TcpServer::parked),
        reads.queued()
    );
    if let Ok(space) = volume.statfs() {
        let block = u64::from(space.block_size);
        let _ = writeln!(
            text,
            "space.total_bytes {}\nspace.free_bytes {}",
            space.total_blocks * block,
            space.free_blocks * block
        );
    }
    let (heap_used, heap_size) = memory::heap_usage();
    let _ = writeln!(
        text,
        "heap.used_kib {}\nheap.size_kib {}",
        heap_used >> 10,
        heap_size >> 10
    );
    text
}

fn publish_address(xenstore: &mut Xenstore, event: AddressEvent) {
    let value = match event {
        AddressEvent::Leased {
            address,
            prefix,
            router,
        } => {
            println!(
                "dhcp: leased {address}/{prefix}{}",
                match router {
                    Some(router) => format!(", router {router}"),
                    None => String::new(),
                }
            );
            format!("{address}")
        }
        AddressEvent::Lost => {
            println!("dhcp: lease lost; no address until the next lease");
            String::new()
        }
    };
    if let Err(error) = xenstore.write(Transaction::NONE, ADDRESS_NODE, value.as_bytes()) {
        println!("dhcp: publishing {ADDRESS_NODE}: {error}");
    }
}

/// Run the snapshot request dom0 wrote to `control/snapshot`, if any:
/// answer in `control/snapshot-result`, then empty the request (dom0
/// waits for both; `docs/xenstore.md`, "Snapshots").
fn snapshot_request<F: FileSystem>(xenstore: &mut Xenstore, server: &mut nfs_server::Server<F>) {
    use vrpc::xenstore::{SNAPSHOT_REQUEST, SNAPSHOT_RESULT};
    let mut value = match xenstore.read(Transaction::NONE, SNAPSHOT_REQUEST) {
        Ok(value) => value,
        // Not there (yet): nothing asked.
        Err(XenstoreError::Errno(_)) => return,
        Err(error) => {
            println!("{SNAPSHOT_REQUEST}: {error}");
            return;
        }
    };
    while value.last() == Some(&0) {
        value.pop();
    }
    let Some(answer) = crate::snapshot_control::answer(server, &value) else {
        return;
    };
    println!(
        "snapshots: {:?}: {}",
        String::from_utf8_lossy(&value),
        answer.lines().nth(1).unwrap_or_default()
    );
    if let Err(error) = xenstore.write(Transaction::NONE, SNAPSHOT_RESULT, answer.as_bytes()) {
        println!("{SNAPSHOT_RESULT}: {error}");
    }
    if let Err(error) = xenstore.write(Transaction::NONE, SNAPSHOT_REQUEST, b"") {
        println!("{SNAPSHOT_REQUEST}: {error}");
    }
}

/// Read and acknowledge `control/shutdown`; `None` when there is nothing
/// to act on (the watch's first firing, an empty node, or `suspend`,
/// which this kernel cannot do).
fn shutdown_request(xenstore: &mut Xenstore) -> Option<ShutdownReason> {
    let request = match xenstore.read_string(Transaction::NONE, SHUTDOWN_NODE) {
        Ok(request) => request,
        Err(XenstoreError::Errno(_)) => return None,
        Err(error) => {
            println!("control/shutdown: {error}");
            return None;
        }
    };
    let reason = match request.as_str() {
        "" => return None,
        "poweroff" | "halt" => ShutdownReason::Poweroff,
        "reboot" => ShutdownReason::Reboot,
        other => {
            println!("control/shutdown: `{other}` is not supported, ignored");
            let _ = xenstore.write(Transaction::NONE, SHUTDOWN_NODE, b"");
            return None;
        }
    };
    // Acknowledge: the toolstack waits for the node to be cleared.
    let _ = xenstore.write(Transaction::NONE, SHUTDOWN_NODE, b"");
    println!("control/shutdown: {request} requested");
    Some(reason)
}
