//! A hosted VRPC mount survives a restart of its server: the hosted server
//! is SIGKILLed while a writer (write + fsync, chunk after chunk) and a
//! reader (an open file, its page cache dropped before every read) run on
//! the mount, and restarted. Calls in the outage fail with EIO (none is
//! resent); then the same mount point works again, the reader's open file
//! still reads through the driver, the writer's open file takes writes,
//! and every chunk whose write and fsync both succeeded is intact.
//!
//! `HOSTED_RESTARTS=N` (default 1) kills and restarts the server N times
//! under the same load.

mod common;

use common::{Mount, Server};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
/// The writer goes round this many chunk slots (16 MiB), so long runs do
/// not fill the disk.
const SLOTS: u32 = 256;
const STEADY: usize = 1 << 20;

fn pattern(length: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn errno(error: &std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

/// What the writer saw for one chunk.
struct Chunk {
    index: u32,
    /// Its write and the fsync after it both succeeded.
    durable: bool,
    at: Instant,
}

/// What the reader saw.
#[derive(Default)]
struct Reads {
    good: Vec<Instant>,
    failed: u64,
}

#[test]
fn a_hosted_mount_survives_a_server_restart_under_load() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    let mount = Mount::start_hosted(&server, scratch.path(), "mnt", &[]);
    let steady_path = mount.path.join("steady");
    let steady = pattern(STEADY, 7);
    {
        let file = File::create(&steady_path).unwrap();
        file.write_all_at(&steady, 0).unwrap();
        file.sync_all().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let path = mount.path.join("log");
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut chunks = Vec::new();
            let mut index = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let written = file.write_all_at(
                    &pattern(CHUNK, 1000 + index),
                    u64::from(index % SLOTS) * CHUNK as u64,
                );
                let synced = file.sync_all();
                for result in [&written, &synced] {
                    if let Err(error) = result {
                        assert_eq!(errno(error), libc::EIO, "writer: {error}");
                    }
                }
                chunks.push(Chunk {
                    index,
                    durable: written.is_ok() && synced.is_ok(),
                    at: Instant::now(),
                });
                index += 1;
                thread::sleep(Duration::from_millis(5));
            }
            chunks
        })
    };

    let reads = Arc::new(Mutex::new(Reads::default()));
    let reader = {
        let file = File::open(&steady_path).unwrap();
        let stop = Arc::clone(&stop);
        let reads = Arc::clone(&reads);
        let steady = steady.clone();
        thread::spawn(move || {
            let mut buffer = vec![0u8; CHUNK];
            let mut round = 0usize;
            while !stop.load(Ordering::SeqCst) {
                // Drop the kernel's cached pages: the read must reach the
                // driver and the server.
                let _ = nix::fcntl::posix_fadvise(
                    &file,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
                let offset = (round * 7919 * 4096) % (STEADY - CHUNK);
                round += 1;
                match file.read_exact_at(&mut buffer, offset as u64) {
                    Ok(()) => {
                        assert!(
                            buffer == steady[offset..offset + CHUNK],
                            "the open file read wrong data at {offset}"
                        );
                        reads.lock().unwrap().good.push(Instant::now());
                    }
                    Err(error) => {
                        assert_eq!(errno(&error), libc::EIO, "reader: {error}");
                        reads.lock().unwrap().failed += 1;
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let restarts: u32 = std::env::var("HOSTED_RESTARTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1);
    let mut server = server;
    let mut first_kill = None;
    let mut outages = Vec::new();
    let mut recovered = Instant::now();
    for _ in 0..restarts.max(1) {
        thread::sleep(Duration::from_millis(800));
        let killed = Instant::now();
        first_kill.get_or_insert(killed);
        server = server.kill_and_restart(scratch.path());
        // The same mount point works again once the driver reconnected.
        let probe = mount.path.join("probe");
        let deadline = Instant::now() + Duration::from_secs(15);
        recovered = loop {
            match fs::write(&probe, b"back").and_then(|()| fs::read(&probe)) {
                Ok(content) if content == b"back" => break Instant::now(),
                Ok(other) => panic!("probe read {other:?}"),
                Err(error) => {
                    assert_eq!(errno(&error), libc::EIO, "during the outage: {error}");
                    assert!(
                        Instant::now() < deadline,
                        "the mount did not come back within 15 s"
                    );
                    thread::sleep(Duration::from_millis(50));
                }
            }
        };
        outages.push(recovered.duration_since(killed).as_millis());
    }
    let first_kill = first_kill.expect("at least one kill");
    let reads_at_recovery = mount.stats()["rpc.READ"];
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let chunks = writer.join().expect("writer");
    reader.join().expect("reader");
    let reads = reads.lock().unwrap();
    outages.sort_unstable();
    eprintln!(
        "restart: {} kills, the mount came back within {} ms (median {} ms); \
         {} chunks written ({} durable), {} reads ({} failed in the outages)",
        outages.len(),
        outages[outages.len() - 1],
        outages[outages.len() / 2],
        chunks.len(),
        chunks.iter().filter(|chunk| chunk.durable).count(),
        reads.good.len() + reads.failed as usize,
        reads.failed
    );
    assert!(
        chunks
            .iter()
            .any(|chunk| chunk.durable && chunk.at < first_kill),
        "no chunk made durable before the kill"
    );
    assert!(
        chunks
            .iter()
            .any(|chunk| chunk.durable && chunk.at > recovered),
        "the writer's open file took no durable write after the restart"
    );
    assert!(
        reads.good.iter().any(|at| *at > recovered),
        "the reader's open file did not read after the restart"
    );
    assert!(
        mount.stats()["rpc.READ"] > reads_at_recovery,
        "the reads after the restart never reached the server"
    );
    // Nothing acknowledged as durable is lost: each slot holds its last
    // durable chunk, or a later one whose fsync failed (it may still have
    // been written).
    let log = fs::read(mount.path.join("log")).unwrap();
    for slot in 0..SLOTS {
        let in_slot: Vec<&Chunk> = chunks
            .iter()
            .filter(|chunk| chunk.index % SLOTS == slot)
            .collect();
        let Some(last_durable) = in_slot.iter().rposition(|chunk| chunk.durable) else {
            continue;
        };
        let at = slot as usize * CHUNK;
        let found = log.get(at..at + CHUNK);
        assert!(
            in_slot[last_durable..]
                .iter()
                .any(|chunk| found == Some(&pattern(CHUNK, 1000 + chunk.index)[..])),
            "durable chunk {} lost or damaged",
            in_slot[last_durable].index
        );
    }
    mount.stop();
    server.stop_and_check();
}
