//! NFSv3, MOUNT v3 and PORTMAP v2 dispatch over the `FileSystem` trait.
//!
//! Design: one [`Server`] owns the file system and turns one ONC RPC call
//! record into one reply record; it knows nothing of sockets, rings or
//! clocks, so the hosted process, the Xen unikernel and the tests drive the
//! same code. Every call is decoded and bounds-checked once, then dispatched
//! by a single exhaustive `match` per program.
//!
//! Durability is split from execution so transports get group commit for
//! free: [`Server::handle`] applies a call in memory and returns a [`Reply`]
//! that may say its effects must be durable before it is sent;
//! [`Server::finish`] commits only if no other commit has covered it since.
//! A transport serving several clients runs `handle` for each under its
//! lock, then `finish`: calls applied while one commit runs share the next.
//! A threaded transport that must not hold its lock across device flushes
//! stages the commit instead ([`Server::commit_begin`],
//! [`Server::commit_continue`], then [`Server::settle`] for each reply).
//!
//! - NFSv3: RFC 1813, <https://www.rfc-editor.org/rfc/rfc1813>
//! - MOUNT v3: RFC 1813 appendix I
//! - PORTMAP v2: RFC 1833 section 3
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod config;
mod convert;
mod directory;
pub mod duplicate_cache;
pub mod handle;
pub mod identity;
pub mod locks;
mod mount;
mod namespace;
mod procedures;
pub mod snapshots;
pub mod table;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use nfs3::message::{self, CallRejection};
use nfs3::mount::Mount3;
use nfs3::portmap::Portmap2;
use nfs3::RpcProgram;
use vfs::{Attributes, FileSystem, Generation, InodeId};
use xdr::{AuthStatus, CallHeader, Credential, RejectedReply, ReplyHeader};

pub use config::{
    ClientAddress, ClientFilter, ConfigError, ExportConfig, LocalPeer, ServerConfig, Squash,
};
pub use convert::file_attributes;
pub use handle::{ExportId, HandleContents, HandleKey, Tree};

/// Largest READ or WRITE payload (FSINFO `rtmax` / `wtmax`), and the
/// largest READDIR reply.
pub const MAX_IO_SIZE: u32 = 1024 * 1024;

/// Largest call record a transport should accept: a maximal WRITE plus its
/// headers, with room to spare.
pub const MAX_RECORD_SIZE: usize = MAX_IO_SIZE as usize + 64 * 1024;

/// Told about every attribute change the server makes or sees, so it can be
/// published (the shared metadata table).
pub trait AttributeObserver {
    /// `attributes` are current for the file `handle` names in `export`;
    /// `change` is the file's change counter (it moves on every change).
    fn updated(
        &mut self,
        export: ExportId,
        handle: &[u8],
        change: u64,
        attributes: &nfs3::FileAttributes,
    );
    /// `inode` no longer exists in `export`.
    fn removed(&mut self, export: ExportId, inode: InodeId);
}

/// A reply, possibly waiting for a commit.
#[derive(Debug)]
pub struct Reply {
    bytes: Vec<u8>,
    /// The range of `bytes` holding the bulk data (see [`ReplyRecord`]).
    segment: Option<Range<usize>>,
    /// Bytes of bulk data put into the call's read destination instead
    /// (see [`ReplyRecord::placed`]).
    placed: usize,
    pending: Option<PendingCommit>,
}

/// Where a READ may put its data directly: a transport's own room for the
/// reply's bulk data (a VRPC guest's reply pages), so that the data never
/// passes through the reply record (see [`Server::direct_next_read`]).
pub trait ReadDestination {
    /// The bytes it holds.
    fn capacity(&self) -> usize;

    /// Puts `bytes` at `at` (within the capacity); `false` when it cannot,
    /// and the READ then carries its data in the record as usual.
    fn put(&mut self, at: usize, bytes: &[u8]) -> bool;
}

/// A reply record ready to send, and the range of it that holds its bulk
/// data: the READ data (`data<>` of `READ3resok`, without its padding) or
/// the READDIR/READDIRPLUS directory list, as the encoder placed them. A
/// transport that carries bulk data apart (VRPC's data pages) or writes the
/// record in pieces takes the range from here and never parses the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    /// The standard ONC RPC reply record.
    pub bytes: Vec<u8>,
    /// The bulk data's range of `bytes`, always within it; `None` for
    /// replies without bulk data.
    pub segment: Option<Range<usize>>,
    /// Bytes of bulk data the server put into the call's read destination
    /// ([`Server::direct_next_read`]) instead of the record: when not 0,
    /// `segment` is the empty range where they belong in `bytes`, and the
    /// record is whole only with them there. Always 0 for a transport that
    /// gave no destination.
    pub placed: usize,
}

impl ReplyRecord {
    /// The record in three pieces: before the bulk data, the bulk data,
    /// after it (the whole record first, and empty pieces, when there is no
    /// segment or it does not lie within the record).
    pub fn pieces(&self) -> (&[u8], &[u8], &[u8]) {
        let pieces = self.segment.as_ref().and_then(|segment| {
            Some((
                self.bytes.get(..segment.start)?,
                self.bytes.get(segment.clone())?,
                self.bytes.get(segment.end..)?,
            ))
        });
        pieces.unwrap_or((&self.bytes, &[], &[]))
    }
}

/// What [`Server::try_without_waiting`] came to.
#[derive(Debug)]
pub enum Attempt {
    /// The call was handled: its reply, if it has one.
    Answered(Option<Reply>),
    /// The call needed blocks the file system would have waited for:
    /// nothing happened; make it again once they are there.
    WouldWait,
}

#[derive(Debug)]
struct PendingCommit {
    sequence: u64,
    /// What the NFS3ERR_IO reply sent instead of a failed commit's needs
    /// (encoded only then: commits rarely fail).
    xid: u32,
    procedure: nfs3::Procedure,
}

impl Reply {
    /// Whether [`Server::finish`] must run before the reply is sent.
    pub fn needs_commit(&self) -> bool {
        self.pending.is_some()
    }

    /// The reply record, for a reply that needs no commit and carries its
    /// bulk data in the record (none was placed: no read destination was
    /// given).
    pub fn into_bytes_unchecked_durability(self) -> Vec<u8> {
        self.bytes
    }

    /// The record to send: this reply once its effects are `durable`,
    /// the procedure's NFS3ERR_IO (no bulk data) when its commit failed.
    fn into_record(self, durable: bool) -> ReplyRecord {
        match self.pending {
            Some(pending) if !durable => ReplyRecord {
                bytes: message::encode_reply(
                    pending.xid,
                    &procedures::failure(pending.procedure, nfs3::NfsError::Io),
                    Vec::new(),
                ),
                segment: None,
                placed: 0,
            },
            _ => ReplyRecord {
                bytes: self.bytes,
                segment: self.segment,
                placed: self.placed,
            },
        }
    }

    /// The operation sequence that must be durable before the reply is
    /// sent (see [`Server::settle`]), if any.
    pub fn durable_at(&self) -> Option<u64> {
        self.pending.as_ref().map(|pending| pending.sequence)
    }

    /// The reply record and its bulk data's range, for a reply that needs
    /// no commit.
    pub fn into_record_unchecked_durability(self) -> ReplyRecord {
        ReplyRecord {
            bytes: self.bytes,
            segment: self.segment,
            placed: self.placed,
        }
    }
}

/// Counters a transport can log or expose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Calls per NFS procedure number (0..=21).
    pub nfs_calls: [u64; 22],
    /// MOUNT calls.
    pub mount_calls: u64,
    /// PORTMAP calls.
    pub portmap_calls: u64,
    /// Calls answered with an RPC-level rejection or dropped.
    pub rejected: u64,
    /// Replies replayed from the duplicate request cache.
    pub duplicates: u64,
    /// Commits run by [`Server::finish`].
    pub commits: u64,
    /// NLM (lock) calls.
    pub lock_calls: u64,
}

impl Statistics {
    /// The counters as `name value` lines, named as guest-driver's
    /// `stats` names them (`rpc.PROCEDURE` by RFC 1813 name, `rpc.total`,
    /// then the other programs, replays and commits): what the hosted
    /// server's `stats` and the Xen storage domain's published statistics
    /// both print.
    pub fn render(&self, locks_held: usize, text: &mut String) {
        use core::fmt::Write;
        for procedure in nfs3::Procedure::ALL {
            let calls = self
                .nfs_calls
                .get(procedure.to_u32() as usize)
                .copied()
                .unwrap_or(0);
            let _ = writeln!(text, "rpc.{} {calls}", nfs3::procedure_name(*procedure));
        }
        let _ = writeln!(text, "rpc.total {}", self.nfs_calls.iter().sum::<u64>());
        let _ = writeln!(text, "mount.calls {}", self.mount_calls);
        let _ = writeln!(text, "nlm.calls {}", self.lock_calls);
        let _ = writeln!(text, "locks.held {locks_held}");
        let _ = writeln!(text, "portmap.calls {}", self.portmap_calls);
        let _ = writeln!(text, "rpc.rejected {}", self.rejected);
        let _ = writeln!(text, "rpc.replayed {}", self.duplicates);
        let _ = writeln!(text, "commits {}", self.commits);
    }
}

pub(crate) struct Export {
    config: ExportConfig,
    id: ExportId,
    root: InodeId,
    root_generation: Generation,
}

/// Who made a call, after authentication.
pub(crate) struct Caller {
    client: ClientAddress,
    credential: Credential,
}

/// The server state besides the file system (split so procedures can
/// borrow both at once).
pub(crate) struct Core {
    exports: Vec<Export>,
    key: HandleKey,
    write_verifier: [u8; 8],
    cookie_verifier: [u8; 8],
    file_system_id: u64,
    port: u16,
    mounts: Vec<(ClientAddress, Vec<u8>)>,
    cache: duplicate_cache::DuplicateCache,
    observer: Option<Box<dyn AttributeObserver + Send>>,
    statistics: Statistics,
    /// The export of the call being run (set when its first handle
    /// resolves): decides whether its reply waits for a commit.
    call_export: Option<usize>,
    /// Byte-range locks (NLM).
    locks: locks::LockTable,
    /// The last session handed out.
    last_session: u64,
    /// The tree the call being run reads: the live file system, or a
    /// snapshot (`snapshots.rs`); handles made during it name that tree.
    call_tree: Tree,
    /// In a snapshot call: the export's directory in the snapshot (where
    /// `..` leads to `.snapshots`).
    snapshot_root: Option<InodeId>,
    /// In a snapshot call: the snapshots (for the attributes of
    /// `.snapshots`, the parent of the snapshot's root).
    call_listing: Option<vfs::SnapshotListing>,
    /// The xid of the NFS call being run (a READ builds its reply record
    /// itself).
    call_xid: u32,
    /// The whole reply record of the call being run, when it is a READ that
    /// succeeded: built in place, the file system reading straight into it
    /// or into `read_destination` (its `Results::Read` then carries no
    /// data).
    read_record: Option<ReplyRecord>,
    /// Where the call being run, if a READ, may put its data
    /// ([`Server::direct_next_read`]).
    read_destination: Option<Box<dyn ReadDestination + Send>>,
    /// Emptied records of READ replies the transport has sent, for the
    /// next READs' records ([`Server::recycle_reply`]).
    reply_spares: Vec<Vec<u8>>,
    /// Most records kept in `reply_spares` ([`Server::keep_reply_records`]).
    reply_spare_limit: usize,
}

/// Reply records of at least this capacity are kept by
/// [`Server::recycle_reply`]; smaller ones cost little to allocate.
const REPLY_SPARE_MIN: usize = 64 << 10;

/// The NFS server over one file system.
pub struct Server<F: FileSystem> {
    filesystem: F,
    core: Core,
}

impl<F: FileSystem> core::fmt::Debug for Server<F> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("exports", &self.export_names())
            .finish_non_exhaustive()
    }
}

impl<F: FileSystem> Server<F> {
    /// A server for `filesystem` with `config`'s exports, whose paths must
    /// name existing directories (see [`ensure_directory`]).
    ///
    /// # Errors
    /// [`ConfigError`] for no exports, duplicate names, or an export path
    /// that is not a directory.
    pub fn new(mut filesystem: F, config: ServerConfig) -> Result<Self, ConfigError> {
        if config.exports.is_empty() {
            return Err(ConfigError::NoExports);
        }
        let mut exports: Vec<Export> = Vec::new();
        for export in config.exports {
            if exports.iter().any(|known| known.config.name == export.name) {
                return Err(ConfigError::DuplicateExport(export.name));
            }
            let path_error = |error| ConfigError::ExportPath {
                export: export.name.clone(),
                error,
            };
            let mut directory = filesystem.getattr(filesystem.root()).map_err(path_error)?;
            for component in export.path_components() {
                directory = filesystem
                    .lookup(directory.inode, component)
                    .map_err(path_error)?;
            }
            if directory.file_type != vfs::FileType::Directory {
                return Err(path_error(vfs::FsError::NotDirectory));
            }
            exports.push(Export {
                id: ExportId::of_name(&export.name),
                root: directory.inode,
                root_generation: directory.generation,
                config: export,
            });
        }
        let mut cookie_verifier = [0u8; 8];
        cookie_verifier.copy_from_slice(&config.handle_secret[24..32]);
        if cookie_verifier == [0; 8] {
            cookie_verifier[7] = 1;
        }
        Ok(Server {
            filesystem,
            core: Core {
                exports,
                key: HandleKey::new(&config.handle_secret),
                write_verifier: config.write_verifier,
                cookie_verifier,
                file_system_id: config.file_system_id,
                port: config.port,
                mounts: Vec::new(),
                cache: duplicate_cache::DuplicateCache::default(),
                observer: None,
                statistics: Statistics::default(),
                call_export: None,
                locks: locks::LockTable::default(),
                last_session: locks::NO_SESSION,
                call_tree: Tree::Live,
                snapshot_root: None,
                call_listing: None,
                call_xid: 0,
                read_record: None,
                read_destination: None,
                reply_spares: Vec::new(),
                reply_spare_limit: 0,
            },
        })
    }

    /// Publish attribute changes to `observer` from now on.
    pub fn set_observer(&mut self, observer: Box<dyn AttributeObserver + Send>) {
        self.core.observer = Some(observer);
    }

    /// The export names, in configuration order.
    pub fn export_names(&self) -> Vec<String> {
        self.core
            .exports
            .iter()
            .map(|export| export.config.name.clone())
            .collect()
    }

    /// The export configurations.
    pub fn exports(&self) -> impl Iterator<Item = (&ExportConfig, ExportId)> {
        self.core
            .exports
            .iter()
            .map(|export| (&export.config, export.id))
    }

    /// The root file handle of the export named `name`, if `client` may use
    /// it (what MOUNT MNT answers).
    pub fn root_handle(&self, name: &str, client: &ClientAddress) -> Option<nfs3::FileHandle> {
        let index = self
            .core
            .exports
            .iter()
            .position(|export| export.config.name == name)?;
        if !self.core.exports[index].config.admits(client) {
            return None;
        }
        Some(self.core.root_handle(index))
    }

    /// The counters so far.
    pub fn statistics(&self) -> Statistics {
        let mut statistics = self.core.statistics;
        statistics.duplicates = self.core.cache.hits();
        statistics
    }

    /// The file system.
    pub fn filesystem(&mut self) -> &mut F {
        &mut self.filesystem
    }

    /// Give the file system back (after a final [`Server::sync`]).
    pub fn into_filesystem(self) -> F {
        self.filesystem
    }

    /// Whether changes were applied that are not durable yet.
    pub fn has_uncommitted(&self) -> bool {
        self.filesystem.durable_sequence() < self.filesystem.applied_sequence()
    }

    /// Make everything applied so far durable.
    ///
    /// # Errors
    /// The file system's commit error.
    pub fn sync(&mut self) -> Result<(), vfs::FsError> {
        if self.filesystem.durable_sequence() < self.filesystem.applied_sequence() {
            self.core.statistics.commits += 1;
            self.filesystem.commit()?;
        }
        Ok(())
    }

    /// The snapshots of the file system, oldest first.
    ///
    /// # Errors
    /// [`vfs::FsError::NotSupported`] for a file system without them.
    pub fn snapshots(&mut self) -> Result<vfs::SnapshotListing, vfs::FsError> {
        self.filesystem.list_snapshots()
    }

    /// Take snapshot `name` of everything applied so far (this commits),
    /// readable at once under every export's `.snapshots/NAME`.
    ///
    /// # Errors
    /// [`vfs::FsError::Exists`] for a name in use, name errors
    /// ([`vfs::FsError::InvalidName`], [`vfs::FsError::NameTooLong`]),
    /// [`vfs::FsError::NoSpace`], [`vfs::FsError::Io`],
    /// [`vfs::FsError::NotSupported`].
    pub fn create_snapshot(&mut self, name: &[u8]) -> Result<vfs::SnapshotSummary, vfs::FsError> {
        let taken = self.filesystem.create_snapshot(name)?;
        self.core.statistics.commits += 1;
        if let Ok(listing) = self.filesystem.list_snapshots() {
            self.core.publish_snapshot_directories(&listing);
        }
        Ok(taken)
    }

    /// Delete snapshot `name` (this commits): handles into it answer
    /// NFS3ERR_STALE from now on, and its blocks that nothing else holds
    /// are free.
    ///
    /// # Errors
    /// [`vfs::FsError::NotFound`], [`vfs::FsError::Io`],
    /// [`vfs::FsError::NotSupported`].
    pub fn delete_snapshot(&mut self, name: &[u8]) -> Result<(), vfs::FsError> {
        self.filesystem.delete_snapshot(name)?;
        self.core.statistics.commits += 1;
        if let Ok(listing) = self.filesystem.list_snapshots() {
            self.core.publish_snapshot_directories(&listing);
        }
        Ok(())
    }

    /// Run one call record from `client`. `None` means send nothing (the
    /// bytes are not a call, or not even an xid could be read). Locks it
    /// takes belong to no session (see [`Server::handle_in_session`]).
    pub fn handle(&mut self, record: &[u8], client: ClientAddress) -> Option<Reply> {
        self.handle_in_session(record, client, locks::NO_SESSION)
    }

    /// Lets the next call handled, if it is a READ whose data fits
    /// `destination`, put its data there: its reply record then leaves the
    /// data out ([`ReplyRecord::placed`]), saving a pass over it. Whatever
    /// the call, the destination is dropped when it ends; a READ that does
    /// not fit it, or that it refuses, carries its data in the record.
    pub fn direct_next_read(&mut self, destination: Box<dyn ReadDestination + Send>) {
        self.core.read_destination = Some(destination);
    }

    /// Keep up to `count` READ reply records (each at most a 1 MiB READ's)
    /// for later READs to be built in; none by default (a small heap, the
    /// Xen domain's, frees them at once).
    pub fn keep_reply_records(&mut self, count: usize) {
        self.core.reply_spare_limit = count;
        self.core.reply_spares.truncate(count);
    }

    /// Hands back a reply record the transport has sent, for a later
    /// READ's record to be built in: a 1 MiB READ then allocates nothing.
    /// Records under 64 KiB, and any beyond the number
    /// [`Server::keep_reply_records`] allows, are freed.
    pub fn recycle_reply(&mut self, record: Vec<u8>) {
        self.core.keep_reply_spare(record);
    }

    /// A new session: a client whose departure its transport sees (a VRPC
    /// guest). The locks its calls take go when [`Server::end_session`]
    /// says it went.
    pub fn begin_session(&mut self) -> u64 {
        self.core.last_session += 1;
        self.core.last_session
    }

    /// The client of `session` is gone: its locks are released.
    pub fn end_session(&mut self, session: u64) {
        self.core.locks.end_session(session);
    }

    /// The locks held now.
    pub fn locks(&self) -> &locks::LockTable {
        &self.core.locks
    }

    /// Whether `record` is an NFSv3 call that only reads: NULL, GETATTR,
    /// LOOKUP, ACCESS, READLINK, READ, READDIR, READDIRPLUS, FSSTAT,
    /// FSINFO or PATHCONF. Such a call changes nothing, so a transport
    /// that must not wait for the disk may try it and make it again
    /// ([`Server::try_without_waiting`]). Only the call header's program,
    /// version and procedure are looked at.
    pub fn is_read_only_call(record: &[u8]) -> bool {
        let word = |at: usize| {
            record
                .get(at..at + 4)
                .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        word(4) == Some(0)
            && word(12) == Some(nfs3::PROGRAM)
            && word(16) == Some(3)
            && matches!(
                word(20),
                Some(0 | 1 | 3 | 4 | 5 | 6 | 16 | 17 | 18 | 19 | 20)
            )
    }

    /// Handle a call in `session` without waiting for the disk, for a
    /// transport that serves everyone from one thread (the Xen domain): a
    /// call that only reads ([`Server::is_read_only_call`]) runs with the
    /// file system refusing reads it cannot answer from memory
    /// ([`vfs::WaitControl`]); if it needed such a read it failed with
    /// nothing changed, and the attempt leaves no trace (no reply, the
    /// counters as before): [`Attempt::WouldWait`], to be made again once
    /// the blocks are there (the file system names them). Any other call
    /// is handled as by [`Server::handle_in_session`], waiting.
    pub fn try_without_waiting(
        &mut self,
        record: &[u8],
        client: ClientAddress,
        session: u64,
    ) -> Attempt
    where
        F: vfs::WaitControl,
    {
        if !Self::is_read_only_call(record) {
            return Attempt::Answered(self.handle_in_session(record, client, session));
        }
        let counters = self.core.statistics;
        self.filesystem.refuse_waits(true);
        let reply = self.handle_in_session(record, client, session);
        self.filesystem.refuse_waits(false);
        if self.filesystem.wants_blocks() {
            self.core.statistics = counters;
            return Attempt::WouldWait;
        }
        Attempt::Answered(reply)
    }

    /// [`Server::handle`] for a call made in `session` (from
    /// [`Server::begin_session`], or [`locks::NO_SESSION`]).
    pub fn handle_in_session(
        &mut self,
        record: &[u8],
        client: ClientAddress,
        session: u64,
    ) -> Option<Reply> {
        let reply = self.run_call(record, client, session);
        self.core.read_destination = None;
        reply
    }

    fn run_call(&mut self, record: &[u8], client: ClientAddress, session: u64) -> Option<Reply> {
        let program = record
            .get(12..16)
            .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        match program {
            Some(nfs3::PROGRAM) => self.nfs(record, client),
            Some(nfs3::mount::PROGRAM) => {
                let (header, arguments, caller) = match self.core.accept::<Mount3>(record, client) {
                    Ok(call) => call,
                    Err(rejection) => return rejection.map(plain),
                };
                self.core.statistics.mount_calls += 1;
                let results = self.core.mount(&mut self.filesystem, &caller, arguments);
                Some(plain(message::encode_reply(
                    header.xid,
                    &results,
                    Vec::new(),
                )))
            }
            Some(nfs3::portmap::PROGRAM) => {
                let (header, arguments, _) = match self.core.accept::<Portmap2>(record, client) {
                    Ok(call) => call,
                    Err(rejection) => return rejection.map(plain),
                };
                self.core.statistics.portmap_calls += 1;
                let results = self.core.portmap(arguments);
                Some(plain(message::encode_reply(
                    header.xid,
                    &results,
                    Vec::new(),
                )))
            }
            Some(nfs3::nlm::PROGRAM) => {
                let (header, arguments, caller) =
                    match self.core.accept::<nfs3::nlm::Nlm4>(record, client) {
                        Ok(call) => call,
                        Err(rejection) => return rejection.map(plain),
                    };
                self.core.statistics.lock_calls += 1;
                let results = self
                    .core
                    .nlm(&mut self.filesystem, &caller, arguments, session);
                self.core.call_export = None;
                Some(plain(message::encode_reply(
                    header.xid,
                    &results,
                    Vec::new(),
                )))
            }
            // Any other program, or a record too short to name one: the NFS
            // path answers PROG_UNAVAIL or GARBAGE_ARGS, or drops it.
            _ => self.nfs(record, client),
        }
    }

    /// Begin a staged commit of everything applied so far (see
    /// [`vfs::FileSystem::commit_begin`]): run each step it returns without
    /// holding the server and hand the outcome to
    /// [`Server::commit_continue`]; other calls run meanwhile.
    ///
    /// # Errors
    /// The file system's commit error.
    pub fn commit_begin(&mut self) -> Result<Option<Box<dyn vfs::CommitFlush>>, vfs::FsError> {
        if self.filesystem.durable_sequence() < self.filesystem.applied_sequence() {
            self.core.statistics.commits += 1;
        }
        self.filesystem.commit_begin()
    }

    /// The next step of the staged commit (see [`Server::commit_begin`]).
    ///
    /// # Errors
    /// The file system's commit error.
    pub fn commit_continue(
        &mut self,
        token: u64,
        flushed: Result<(), vfs::FsError>,
    ) -> Result<Option<Box<dyn vfs::CommitFlush>>, vfs::FsError> {
        self.filesystem.commit_continue(token, flushed)
    }

    /// Move commits on without waiting for the device (see
    /// [`vfs::FileSystem::commit_advance`]), for a transport that serves
    /// every client from one thread: replies waiting for durability
    /// ([`Reply::durable_at`]) are held meanwhile and released with
    /// [`Server::settle_record`] once [`Server::is_durable`] says so, or
    /// once this fails (they then become NFS3ERR_IO). Returns whether a
    /// commit is still in flight.
    ///
    /// # Errors
    /// The file system's commit error (it then refuses further changes).
    pub fn commit_advance(&mut self) -> Result<bool, vfs::FsError> {
        let durable = self.filesystem.durable_sequence();
        let result = self.filesystem.commit_advance();
        if self.filesystem.durable_sequence() > durable {
            self.core.statistics.commits += 1;
        }
        result
    }

    /// Whether every operation up to `sequence` is durable.
    pub fn is_durable(&self, sequence: u64) -> bool {
        self.filesystem.durable_sequence() >= sequence
    }

    /// The last operation applied (durable or not).
    pub fn applied_sequence(&self) -> u64 {
        self.filesystem.applied_sequence()
    }

    /// Make `reply` sendable once the transport ran the commits it waits
    /// for ([`Reply::durable_at`]): the reply itself when they made it
    /// durable, the procedure's NFS3ERR_IO when they failed.
    pub fn settle(&self, reply: Reply) -> Vec<u8> {
        self.settle_record(reply).bytes
    }

    /// [`Server::settle`], keeping the bulk data's range of the record.
    pub fn settle_record(&self, reply: Reply) -> ReplyRecord {
        let durable = reply
            .pending
            .as_ref()
            .is_none_or(|pending| self.is_durable(pending.sequence));
        reply.into_record(durable)
    }

    /// Make `reply` sendable: commit if its effects are not durable yet
    /// (one commit covers every call applied before it). On a failed
    /// commit the reply becomes the procedure's NFS3ERR_IO.
    pub fn finish(&mut self, reply: Reply) -> Vec<u8> {
        self.finish_record(reply).bytes
    }

    /// [`Server::finish`], keeping the bulk data's range of the record.
    pub fn finish_record(&mut self, reply: Reply) -> ReplyRecord {
        let durable = match &reply.pending {
            None => true,
            Some(pending) if self.filesystem.durable_sequence() >= pending.sequence => true,
            Some(_) => {
                self.core.statistics.commits += 1;
                self.filesystem.commit().is_ok()
            }
        };
        reply.into_record(durable)
    }

    fn nfs(&mut self, record: &[u8], client: ClientAddress) -> Option<Reply> {
        // A WRITE's data stays in the record: the file system takes it from
        // there.
        let (header, arguments, write_data) = match message::decode_nfs_call(record) {
            Ok((header, arguments, data)) => (header, arguments, data),
            Err(rejection) => return self.core.refuse(rejection).map(plain),
        };
        let write_data = write_data.map_or(&[][..], |range| &record[range]);
        let caller = match self.core.authenticate(&header, client) {
            Ok(caller) => caller,
            Err(rejection) => return rejection.map(plain),
        };
        let procedure = arguments.procedure();
        if let Some(counter) = self
            .core
            .statistics
            .nfs_calls
            .get_mut(procedure.to_u32() as usize)
        {
            *counter += 1;
        }
        let cached = procedures::is_non_idempotent(procedure);
        let key = cached.then(|| duplicate_cache::CallKey::new(&client, record));
        if let Some(key) = &key {
            if let Some(reply) = self.core.cache.get(key) {
                return Some(with_fallback(
                    header.xid,
                    procedure,
                    reply.sequence,
                    reply.bytes,
                ));
            }
        }
        self.core.call_xid = header.xid;
        self.core.read_record = None;
        let (results, durable) =
            self.core
                .nfs(&mut self.filesystem, &caller, arguments, write_data);
        // A successful READ built its record in place (the file system read
        // straight into it); everything else is encoded here.
        let (bytes, segment, placed) = match (self.core.read_record.take(), &results) {
            (Some(record), nfs3::Results::Read(nfs3::ProcedureResult::Ok(_))) => {
                (record.bytes, record.segment, record.placed)
            }
            _ => {
                let (bytes, segment) = message::encode_nfs_reply(header.xid, &results, Vec::new());
                (bytes, segment, 0)
            }
        };
        let sequence = durable.then(|| self.filesystem.applied_sequence());
        if let Some(key) = key {
            self.core.cache.insert(
                key,
                duplicate_cache::CachedReply {
                    bytes: bytes.clone(),
                    sequence,
                },
            );
        }
        // (READ is not cached: `bytes` always holds the data when it is.)
        let mut reply = with_fallback(header.xid, procedure, sequence, bytes);
        reply.segment = segment;
        reply.placed = placed;
        Some(reply)
    }
}

/// A reply whose commit, if any, falls back to the procedure's
/// NFS3ERR_IO when the commit fails.
fn with_fallback(
    xid: u32,
    procedure: nfs3::Procedure,
    sequence: Option<u64>,
    bytes: Vec<u8>,
) -> Reply {
    Reply {
        bytes,
        segment: None,
        placed: 0,
        pending: sequence.map(|sequence| PendingCommit {
            sequence,
            xid,
            procedure,
        }),
    }
}

fn plain(bytes: Vec<u8>) -> Reply {
    Reply {
        bytes,
        segment: None,
        placed: 0,
        pending: None,
    }
}

impl Core {
    /// An empty vector for a READ reply record of about `capacity` data
    /// bytes: a kept one ([`Server::recycle_reply`]) for a large reply,
    /// a new one otherwise.
    fn reply_spare(&mut self, capacity: usize) -> Vec<u8> {
        if capacity >= REPLY_SPARE_MIN {
            if let Some(index) = self
                .reply_spares
                .iter()
                .position(|spare| spare.capacity() >= capacity)
            {
                return self.reply_spares.swap_remove(index);
            }
        }
        Vec::new()
    }

    /// Keeps `record` for a later READ's reply record (see
    /// [`Server::recycle_reply`]).
    fn keep_reply_spare(&mut self, mut record: Vec<u8>) {
        if record.capacity() >= REPLY_SPARE_MIN && self.reply_spares.len() < self.reply_spare_limit
        {
            record.clear();
            self.reply_spares.push(record);
        }
    }

    /// Decode a call to `P` and authenticate it.
    ///
    /// # Errors
    /// The rejection reply to send, or `None` to send nothing.
    fn accept<P: RpcProgram>(
        &mut self,
        record: &[u8],
        client: ClientAddress,
    ) -> Result<(CallHeader, P::Arguments, Caller), Option<Vec<u8>>> {
        match message::decode_call::<P>(record) {
            Ok((header, arguments)) => {
                let caller = self.authenticate(&header, client)?;
                Ok((header, arguments, caller))
            }
            Err(rejection) => Err(self.refuse(rejection)),
        }
    }

    /// The caller of a decoded call, or the rejection to send when its
    /// credential is not one the server takes.
    fn authenticate(
        &mut self,
        header: &CallHeader,
        client: ClientAddress,
    ) -> Result<Caller, Option<Vec<u8>>> {
        match header.credential.credential() {
            Ok(credential @ (Credential::None | Credential::Sys(_))) => {
                Ok(Caller { client, credential })
            }
            Ok(Credential::Other(_)) | Err(_) => {
                Err(self.refuse(CallRejection::Reply(ReplyHeader::denied(
                    header.xid,
                    RejectedReply::AuthError(AuthStatus::BadCredential),
                ))))
            }
        }
    }

    /// Counts a rejected call; the reply to send, if any.
    fn refuse(&mut self, rejection: CallRejection) -> Option<Vec<u8>> {
        self.statistics.rejected += 1;
        match rejection {
            CallRejection::Drop => None,
            CallRejection::Reply(header) => Some(message::encode_rejection(&header, Vec::new())),
        }
    }

    fn root_handle(&self, index: usize) -> nfs3::FileHandle {
        let export = &self.exports[index];
        nfs3::FileHandle(
            self.key
                .make(&HandleContents {
                    export: export.id,
                    inode: export.root,
                    generation: export.root_generation,
                })
                .to_vec(),
        )
    }

    /// The handle of `attributes`' inode in the tree the call reads.
    fn handle_for(&self, export: usize, attributes: &Attributes) -> nfs3::FileHandle {
        nfs3::FileHandle(self.key.make_in(
            self.call_tree,
            &HandleContents {
                export: self.exports[export].id,
                inode: attributes.inode,
                generation: attributes.generation,
            },
        ))
    }
}

/// Create the directories of `path` (absolute, `/`-separated) that do not
/// exist yet, owned by root with mode 0755, and return the last one's
/// attributes. Used to prepare export paths before [`Server::new`].
///
/// # Errors
/// What the file system said (e.g. `NotDirectory` when a component is a
/// file).
pub fn ensure_directory<F: FileSystem>(
    filesystem: &mut F,
    path: &str,
) -> Result<Attributes, vfs::FsError> {
    let mut directory = filesystem.getattr(filesystem.root())?;
    for component in path.split('/').filter(|component| !component.is_empty()) {
        directory = match filesystem.lookup(directory.inode, component.as_bytes()) {
            Ok(found) => found,
            Err(vfs::FsError::NotFound) => filesystem.create(
                directory.inode,
                component.as_bytes(),
                &vfs::NewNode::Directory,
                &vfs::Ownership {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
            )?,
            Err(error) => return Err(error),
        };
    }
    if directory.file_type != vfs::FileType::Directory {
        return Err(vfs::FsError::NotDirectory);
    }
    Ok(directory)
}
