//! Reads of cold blocks made without the server's lock.
//!
//! Design: the hosted server runs every call under one lock. A call that
//! only reads ([`nfs_server::Server::is_read_only_call`]) is first tried
//! with the data cache refusing reads it cannot answer from memory
//! ([`nfs_server::Server::try_without_waiting`], the same parking the Xen
//! storage domain's poll loop uses). When it is refused, the blocks it
//! named are read from the image through a descriptor of their own
//! (`pread`) *after the lock is released*, handed to the cache
//! ([`sdfs::CachedDevice::fill`], which leaves alone any block written
//! since the read was announced, so stale data never replaces newer), and
//! the call is tried again. A thread waiting for the disk therefore holds
//! nothing: other threads' reads, changes and commits go on, and several
//! threads' disk reads overlap. What stays under the lock is work in
//! memory.
//!
//! The hosted cache refuses a sequential stream's reads too, with their
//! read-ahead window (`CachedDevice::park_streams`), so a guest's
//! read-ahead requests are read side by side by the read workers, and it
//! keeps each large fill in the buffer it was read into
//! (`CachedDevice::fill_blocks`): a READ's data is copied once on the
//! server, from that buffer into the reply. A call whose missing blocks a
//! fill already under way brings names none; it waits for a fill
//! ([`ColdReads::filled`], at most [`FILL_WAIT`]) and is tried again
//! rather than reading them twice.
//!
//! A call still refused after [`MAX_TRIES`] tries runs waiting, as do
//! reads the cache never refuses (more than a quarter of the cache):
//! every call ends. With `--fault` the server reads waiting only, so that
//! every read passes the fault plan; with `--data-cache 0` there is
//! nothing to fill.

use crate::image::{AlignedBuffer, DirectFile, DIRECT_READ_MIN};
use crate::serve::{lock, HostedServer};
use nfs_server::{Attempt, ClientAddress, ReadDestination, Reply};
use sdfs::BLOCK_SIZE;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use vfs::WaitControl;
use vrpc_hosted::HostedReplyPages;

std::thread_local! {
    /// A buffer for this thread's next read without the lock: a retired
    /// fill's, handed back by the data cache (a fresh one would be zeroed
    /// first on every read); page-aligned, for reads that bypass the
    /// host's page cache.
    static READ_BUFFER: std::cell::RefCell<AlignedBuffer> = std::cell::RefCell::new(AlignedBuffer::default());
}

/// The largest buffer a thread keeps (a 1 MiB READ with its read-ahead
/// window): every guest connection has three threads that read, so
/// keeping what the largest reads took would hold megabytes each.
const READ_BUFFER_KEPT: usize = 2 << 20;

/// Fills after which a call that is still refused runs waiting (a call
/// reads a few metadata blocks, then its data: each refusal names one
/// range).
pub const MAX_TRIES: u32 = 8;

/// The longest a call waits for another call's fill of its blocks before
/// it is tried again (a fill normally lands within a disk read's time).
const FILL_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// A VRPC guest's reply pages as a READ's destination: the file system
/// hands the data straight from the data cache into the guest's pages.
struct PagesDestination(HostedReplyPages);

impl ReadDestination for PagesDestination {
    fn capacity(&self) -> usize {
        self.0.capacity()
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> bool {
        self.0.write(at, bytes).is_ok()
    }
}

/// Lets `server`'s next call, if a READ, put its data into `pages` (the
/// call's reply pages, for a VRPC guest; `None` for TCP).
pub fn direct_reads(server: &mut HostedServer, pages: Option<&HostedReplyPages>) {
    if let Some(pages) = pages.filter(|pages| pages.capacity() > 0) {
        server.direct_next_read(Box::new(PagesDestination(pages.clone())));
    }
}

/// The image's second descriptor, and what it did.
#[derive(Debug)]
pub struct ColdReads {
    file: File,
    /// Its large reads, when the host allows them.
    direct: Option<DirectFile>,
    /// Before every read (`serve --read-delay-ms`).
    delay: std::time::Duration,
    /// Calls that were refused at least once and then answered.
    parked_calls: AtomicU64,
    /// Calls that ran waiting after [`MAX_TRIES`] fills.
    waited_calls: AtomicU64,
    /// Blocks read without the lock.
    blocks_read: AtomicU64,
    /// Fills made or abandoned, counted under the server's lock.
    fills_made: AtomicU64,
    /// See [`ColdReadCounters::fill_waits`].
    fill_waits: AtomicU64,
    /// Signalled (under the server's lock) after each fill, for calls
    /// whose blocks another call's fill brings.
    filled: Condvar,
}

/// Blocks read without the lock: the first `length` bytes of `buffer`.
struct ReadBlocks {
    buffer: AlignedBuffer,
    length: usize,
}

/// A call as [`ColdReads::finish`] runs it.
#[derive(Clone, Copy)]
struct Call<'a> {
    record: &'a [u8],
    client: ClientAddress,
    session: u64,
    pages: Option<&'a HostedReplyPages>,
}

/// What [`ColdReads::try_now`] came to.
#[derive(Debug)]
pub enum Tried {
    /// Done: the call's reply (`None`: the server dropped the call).
    Answered(Option<Reply>),
    /// The call needs blocks read first (their fill is announced):
    /// [`ColdReads::finish`].
    Cold(Cold),
}

/// A call that waits for blocks, with the blocks it named.
#[derive(Debug)]
pub struct Cold {
    /// The blocks to read; a count of 0: the blocks are being read for
    /// another call, wait for its fill.
    wanted: (u64, u64),
    /// [`ColdReads::fills_made`] when refused.
    fills_seen: u64,
}

/// The counters of [`ColdReads`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColdReadCounters {
    /// Calls answered after reads made without the lock.
    pub parked_calls: u64,
    /// Calls that ran waiting after [`MAX_TRIES`] fills.
    pub waited_calls: u64,
    /// Blocks read without the lock.
    pub blocks_read: u64,
    /// Times a call waited for another call's fill of its blocks instead
    /// of reading them again.
    pub fill_waits: u64,
}

impl ColdReads {
    /// Reads through `file`, a descriptor of the served image (and
    /// `direct`, an `O_DIRECT` one, for reads of [`DIRECT_READ_MIN`] or
    /// more), each after `delay` (a slow disk for tests; zero adds
    /// nothing).
    pub fn new(file: File, direct: Option<DirectFile>, delay: std::time::Duration) -> Self {
        Self {
            file,
            direct,
            delay,
            parked_calls: AtomicU64::new(0),
            waited_calls: AtomicU64::new(0),
            blocks_read: AtomicU64::new(0),
            fills_made: AtomicU64::new(0),
            fill_waits: AtomicU64::new(0),
            filled: Condvar::new(),
        }
    }

    /// What it did so far.
    pub fn counters(&self) -> ColdReadCounters {
        ColdReadCounters {
            parked_calls: self.parked_calls.load(Ordering::Relaxed),
            waited_calls: self.waited_calls.load(Ordering::Relaxed),
            blocks_read: self.blocks_read.load(Ordering::Relaxed),
            fill_waits: self.fill_waits.load(Ordering::Relaxed),
        }
    }

    /// Runs the call `record` from `client` in `session`, reading the
    /// blocks a read-only call misses without holding `server`; any other
    /// call runs as [`nfs_server::Server::handle_in_session`] does.
    pub fn handle(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: ClientAddress,
        session: u64,
    ) -> Option<Reply> {
        match self.try_now(server, record, client, session, None) {
            Tried::Answered(reply) => reply,
            Tried::Cold(cold) => self.finish(server, record, client, session, cold, None),
        }
    }

    /// The first try of [`ColdReads::handle`], under the lock and without
    /// waiting for the disk: the reply, or [`Tried::Cold`] (a call that
    /// only reads and needs blocks the cache does not hold), which
    /// [`ColdReads::finish`] takes on, on this thread or another. A READ's
    /// data goes into `pages` when given (see [`direct_reads`]).
    pub fn try_now(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: ClientAddress,
        session: u64,
        pages: Option<&HostedReplyPages>,
    ) -> Tried {
        if !HostedServer::is_read_only_call(record) {
            return Tried::Answered(lock(server).handle_in_session(record, client, session));
        }
        let mut server = lock(server);
        direct_reads(&mut server, pages);
        match server.try_without_waiting(record, client, session) {
            Attempt::Answered(reply) => return Tried::Answered(reply),
            Attempt::WouldWait => {}
        }
        let filesystem = server.filesystem();
        match filesystem.take_wanted() {
            Some(wanted) => {
                // Announced under the lock that refused the read: a write
                // from now on is one the fill must not undo.
                if wanted.1 > 0 {
                    filesystem.device_mut().fill_started();
                }
                Tried::Cold(Cold {
                    wanted,
                    fills_seen: self.fills_made.load(Ordering::Relaxed),
                })
            }
            // Refused without naming blocks: cannot happen; read waiting.
            None => {
                direct_reads(&mut server, pages);
                Tried::Answered(server.handle_in_session(record, client, session))
            }
        }
    }

    /// Ends a call [`ColdReads::try_now`] found cold: reads the blocks it
    /// named without the lock, fills them in and tries again, up to
    /// [`MAX_TRIES`] reads; then runs it waiting.
    pub fn finish(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: ClientAddress,
        session: u64,
        cold: Cold,
        pages: Option<&HostedReplyPages>,
    ) -> Option<Reply> {
        let call = Call {
            record,
            client,
            session,
            pages,
        };
        self.finish_with(server, &call, cold, |first, count| self.read(first, count))
    }

    /// [`ColdReads::handle`], reading without the lock through `read`.
    #[cfg(test)]
    fn handle_with(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: ClientAddress,
        session: u64,
        read: impl FnMut(u64, u64) -> Option<ReadBlocks>,
    ) -> Option<Reply> {
        match self.try_now(server, record, client, session, None) {
            Tried::Answered(reply) => reply,
            Tried::Cold(cold) => {
                let call = Call {
                    record,
                    client,
                    session,
                    pages: None,
                };
                self.finish_with(server, &call, cold, read)
            }
        }
    }

    /// [`ColdReads::finish`], reading without the lock through `read`
    /// (tests put writes between the read and the fill).
    fn finish_with(
        &self,
        server: &Mutex<HostedServer>,
        call: &Call<'_>,
        cold: Cold,
        mut read: impl FnMut(u64, u64) -> Option<ReadBlocks>,
    ) -> Option<Reply> {
        let Call {
            record,
            client,
            session,
            pages,
        } = *call;
        let mut cold = cold;
        for reads in 1..=MAX_TRIES {
            let (first, count) = cold.wanted;
            if count == 0 {
                // Another call's fill brings the blocks: wait for a fill
                // (bounded: the call is tried again either way).
                self.fill_waits.fetch_add(1, Ordering::Relaxed);
                let guard = lock(server);
                if self.fills_made.load(Ordering::Relaxed) == cold.fills_seen {
                    drop(
                        self.filled
                            .wait_timeout(guard, FILL_WAIT)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    );
                } else {
                    drop(guard);
                }
                match self.try_now(server, record, client, session, pages) {
                    Tried::Answered(reply) => {
                        self.parked_calls.fetch_add(1, Ordering::Relaxed);
                        return reply;
                    }
                    Tried::Cold(next) => cold = next,
                }
                continue;
            }
            let data = read(first, count);
            let read_failed = data.is_none();
            let spare = {
                let mut server = lock(server);
                let device = server.filesystem().device_mut();
                match data {
                    // Handed over in its own buffer: the cache keeps a
                    // stream's window as it was read.
                    Some(data) => device.fill_blocks(first, data.buffer.into_blocks(data.length)),
                    None => device.fill(first, None),
                }
                let spare = device.take_spare();
                self.fills_made.fetch_add(1, Ordering::Relaxed);
                self.filled.notify_all();
                spare
            };
            if let Some(spare) = spare {
                let spare = AlignedBuffer::from_blocks(spare);
                if spare.capacity() <= READ_BUFFER_KEPT {
                    READ_BUFFER.with(|kept| *kept.borrow_mut() = spare);
                }
            }
            if read_failed {
                break;
            }
            if reads == MAX_TRIES {
                break;
            }
            match self.try_now(server, record, client, session, pages) {
                Tried::Answered(reply) => {
                    self.parked_calls.fetch_add(1, Ordering::Relaxed);
                    return reply;
                }
                Tried::Cold(next) => cold = next,
            }
        }
        self.waited_calls.fetch_add(1, Ordering::Relaxed);
        let mut server = lock(server);
        direct_reads(&mut server, pages);
        server.handle_in_session(record, client, session)
    }

    /// Blocks `first..first + count` of the image, or `None` when the
    /// read failed (the fill is abandoned and the call runs waiting: the
    /// device reads again and reports the error).
    fn read(&self, first: u64, count: u64) -> Option<ReadBlocks> {
        let length = usize::try_from(count).ok()?.checked_mul(BLOCK_SIZE)?;
        let offset = first.checked_mul(BLOCK_SIZE as u64)?;
        // The thread's buffer of the last read, so that only growth is
        // zeroed: `read_exact_at` overwrites every byte it returns.
        let mut buffer = READ_BUFFER.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
        crate::image::sleep(self.delay);
        let mut bounce = AlignedBuffer::default();
        let read = match &self.direct {
            // Page-aligned already: no bounce.
            Some(direct) if length >= DIRECT_READ_MIN => {
                direct.read_exact_at(buffer.bytes(length), offset, &mut bounce)
            }
            _ => self.file.read_exact_at(buffer.bytes(length), offset),
        };
        match read {
            Ok(()) => {
                self.blocks_read.fetch_add(count, Ordering::Relaxed);
                Some(ReadBlocks { buffer, length })
            }
            Err(error) => {
                log::debug!("read of blocks {first}..+{count} without the lock failed: {error}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3::procedures::create::{CreateArguments, CreateHow};
    use nfs3::procedures::data::{ReadArguments, WriteArguments};
    use nfs3::{Arguments, DirectoryOperationArguments, FileHandle, Nfs3, Results, StableHow};
    use nfs_server::locks::NO_SESSION;
    use nfs_server::ExportConfig;
    use sdfs::BlockDevice;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use xdr::{AuthSys, OpaqueAuth};

    const CLIENT: ClientAddress = ClientAddress::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn open(image: &Path) -> (HostedServer, Option<ColdReads>) {
        open_with_cache(image, 256 * 1024)
    }

    fn open_with_cache(image: &Path, data_cache: u64) -> (HostedServer, Option<ColdReads>) {
        let exports = vec![ExportConfig::parse("/,no_root_squash").unwrap()];
        let (server, _, cold_reads) = crate::serve::open_server(
            image,
            1 << 20,
            data_cache,
            exports,
            2049,
            None,
            crate::serve::SlowDisk::default(),
        )
        .unwrap();
        (server, cold_reads)
    }

    fn record(arguments: &Arguments) -> Vec<u8> {
        let credential = OpaqueAuth::sys(&AuthSys {
            stamp: 0,
            machine_name: b"test".to_vec(),
            uid: 0,
            gid: 0,
            gids: vec![],
        });
        nfs3::message::encode_call::<Nfs3>(1, credential, arguments)
    }

    fn results(server: &mut HostedServer, reply: Option<Reply>, procedure: u32) -> Results {
        let bytes = server.finish(reply.expect("a reply"));
        nfs3::message::decode_reply::<Nfs3>(&bytes, procedure)
            .expect("an RPC reply")
            .1
    }

    fn root(server: &mut HostedServer) -> FileHandle {
        use nfs3::mount::{Arguments as M, Mount3, MountResult, Results as R};
        let arguments = M::Mount(nfs3::mount::DirectoryPath {
            path: b"/".to_vec(),
        });
        let credential = OpaqueAuth::sys(&AuthSys {
            stamp: 0,
            machine_name: b"test".to_vec(),
            uid: 0,
            gid: 0,
            gids: vec![],
        });
        let call = nfs3::message::encode_call::<Mount3>(1, credential, &arguments);
        let reply = server.handle(&call, CLIENT).expect("a MOUNT reply");
        let bytes = server.finish(reply);
        match nfs3::message::decode_reply::<Mount3>(&bytes, 1).unwrap().1 {
            R::Mount(MountResult::Ok(ok)) => ok.handle,
            other => panic!("{other:?}"),
        }
    }

    /// A block rewritten while the call's read of it runs without the lock
    /// (between the `pread` and the fill) is not filled with what that read
    /// saw: the READ answers what the disk holds now. It fails when the
    /// fill is announced after the read instead of under the refusing lock,
    /// or when the cache's guard is removed.
    #[test]
    fn a_block_written_during_the_read_is_not_filled_stale() {
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("disk.img");
        crate::fstools::format_image(&image, 8 << 20, false).unwrap();
        let file = {
            let (mut server, _) = open(&image);
            let root = root(&mut server);
            let file = create(&mut server, root);
            let written = server.handle(
                &record(&Arguments::Write(WriteArguments {
                    file: file.clone(),
                    offset: 0,
                    count: 128 * BLOCK_SIZE as u32,
                    stable: StableHow::FileSync,
                    data: vec![0xaa; 128 * BLOCK_SIZE],
                })),
                CLIENT,
            );
            assert!(matches!(
                results(&mut server, written, 7),
                Results::Write(result) if result.status().is_ok()
            ));
            file
        };
        // A fresh server: its data cache is cold.
        let (server, cold_reads) = open(&image);
        let cold_reads = cold_reads.expect("reads without the lock are on by default");
        let server = Mutex::new(server);
        // A block far into the file: past what the reads made at open
        // brought in with their read-ahead.
        let read = record(&Arguments::Read(ReadArguments {
            file,
            offset: 100 * BLOCK_SIZE as u64,
            count: BLOCK_SIZE as u32,
        }));
        let mut rewritten = false;
        let reply = cold_reads.handle_with(&server, &read, CLIENT, NO_SESSION, |first, count| {
            let mut data = cold_reads.read(first, count)?;
            if !rewritten && data.buffer.bytes(BLOCK_SIZE)[..] == [0xaa; BLOCK_SIZE] {
                // The file's block: rewritten (under the lock, through the
                // cache, as a commit would) after this read saw it.
                rewritten = true;
                lock(&server)
                    .filesystem()
                    .device_mut()
                    .write_blocks(first, &[0xbb; BLOCK_SIZE])
                    .unwrap();
            }
            Some(data)
        });
        let mut server = server.into_inner().unwrap();
        assert!(
            rewritten,
            "the READ never read the file's block without the lock"
        );
        match results(&mut server, reply, 6) {
            Results::Read(result) => {
                let data = result.into_result().unwrap().data;
                assert_eq!(data.len(), BLOCK_SIZE);
                assert!(
                    data.iter().all(|byte| *byte == 0xbb),
                    "the READ answered the block as it was before the write (0x{:x}...)",
                    data[0]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cold_reads.counters().parked_calls, 1);
    }

    /// Creates `f` in `directory`.
    fn create(server: &mut HostedServer, directory: FileHandle) -> FileHandle {
        let created = server.handle(
            &record(&Arguments::Create(CreateArguments {
                location: DirectoryOperationArguments {
                    directory,
                    name: b"f".to_vec(),
                },
                how: CreateHow::Unchecked(Default::default()),
            })),
            CLIENT,
        );
        match results(server, created, 8) {
            Results::Create(result) => result.into_result().unwrap().object.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// `f` in a fresh image of 16 MiB, `blocks` blocks long, each block
    /// filled with its number's low byte.
    fn image_with_file(image: &Path, blocks: usize) -> FileHandle {
        crate::fstools::format_image(image, 16 << 20, false).unwrap();
        let (mut server, _) = open(image);
        let root = root(&mut server);
        let file = create(&mut server, root);
        // In WRITEs of 64 blocks, under any server's largest.
        for start in (0..blocks).step_by(64) {
            let data: Vec<u8> = (start..blocks.min(start + 64))
                .flat_map(|block| [block as u8; BLOCK_SIZE])
                .collect();
            let written = server.handle(
                &record(&Arguments::Write(WriteArguments {
                    file: file.clone(),
                    offset: (start * BLOCK_SIZE) as u64,
                    count: data.len() as u32,
                    stable: StableHow::FileSync,
                    data,
                })),
                CLIENT,
            );
            assert!(matches!(
                results(&mut server, written, 7),
                Results::Write(result) if result.status().is_ok()
            ));
        }
        file
    }

    /// A stream read by several threads at once, its requests a little out
    /// of order (a guest's read-ahead served by its read workers): every
    /// READ answers the file's bytes, and the blocks each is refused for
    /// are read once, not again by a neighbouring request whose fill
    /// brings them (then the call waits for that fill). It fails when the
    /// cache forgets what fills are under way: the file was then read 3.4
    /// to 3.8 times over (5 runs).
    #[test]
    fn a_stream_read_by_several_threads_reads_each_block_once() {
        const BLOCKS: usize = 1024;
        const CHUNK: usize = 32;
        const THREADS: usize = 4;
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("disk.img");
        let file = image_with_file(&image, BLOCKS);
        let (server, cold_reads) = open_with_cache(&image, 16 << 20);
        let cold_reads = cold_reads.expect("reads without the lock are on by default");
        let server = Mutex::new(server);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let replies: Mutex<Vec<(usize, Option<Reply>)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| loop {
                    let chunk = next.fetch_add(1, Ordering::Relaxed);
                    if chunk >= BLOCKS / CHUNK {
                        return;
                    }
                    let read = record(&Arguments::Read(ReadArguments {
                        file: file.clone(),
                        offset: (chunk * CHUNK * BLOCK_SIZE) as u64,
                        count: (CHUNK * BLOCK_SIZE) as u32,
                    }));
                    let reply = cold_reads.handle(&server, &read, CLIENT, NO_SESSION);
                    replies.lock().unwrap().push((chunk, reply));
                });
            }
        });
        let mut server = server.into_inner().unwrap();
        for (chunk, reply) in replies.into_inner().unwrap() {
            match results(&mut server, reply, 6) {
                Results::Read(result) => {
                    let data = result.into_result().unwrap().data;
                    assert_eq!(data.len(), CHUNK * BLOCK_SIZE, "chunk {chunk}");
                    for (index, block) in data.chunks(BLOCK_SIZE).enumerate() {
                        let number = chunk * CHUNK + index;
                        assert!(
                            block.iter().all(|byte| *byte == number as u8),
                            "chunk {chunk}: block {number} has another block's bytes"
                        );
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        let counters = cold_reads.counters();
        // The file once, with one read-ahead window past its end.
        let most = (BLOCKS as u64) + sdfs::block_cache::READ_AHEAD_MAX + 64;
        assert!(
            counters.blocks_read <= most,
            "{} blocks read without the lock for a file of {BLOCKS} (fill waits: {})",
            counters.blocks_read,
            counters.fill_waits
        );
    }
}
