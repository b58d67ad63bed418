//! The FUSE file system: each kernel request becomes NFSv3 calls.
//!
//! Design: [`NfsFilesystem`] implements `fuser::Filesystem`; every method
//! here only unpacks the request, calls an inherent `do_*` method (in the
//! facet files `namespace.rs`, `io.rs`, `directory.rs`) that returns a
//! `Result<_, Errno>`, and answers the reply exactly once. Requests run on
//! several FUSE worker threads at once; shared state sits behind short
//! mutexes that are never held across an RPC (except the node table while
//! a READDIRPLUS reply is filled, which makes no RPC).
//!
//! Caching: the kernel caches attributes and names for the configured
//! timeouts. With a metadata table those are long and the watcher
//! (`watch.rs`) keeps them coherent, failed lookups included; without one
//! they are short. Data pages are kept across opens only when the file's
//! `(mtime, size)` at open equals what the cached pages match
//! (close-to-open consistency, see [`nodes::Node::data_version`]). Writes
//! go to the server as UNSTABLE; fsync commits them, and so does close
//! unless `Settings::commit_on_close` is off.

mod attributes;
mod callers;
mod directory;
mod io;
mod locks;
mod namespace;
pub mod nodes;
pub mod table;
mod watch;
mod writes;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileHandle as FuseHandle, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use nfs3::procedures::filesystem::FileSystemArguments;
use nfs3::procedures::inspect::{
    AccessArguments, GetAttributesArguments, LookupArguments, SetAttributesArguments,
};
use nfs3::{DirectoryOperationArguments, FileAttributes, FileHandle, ProcedureResult};

use crate::client::{CallResult, Caller, NfsClient};
use crate::errno;
use crate::stats::Stats;
use nodes::NodeTable;
use table::TableEntry;

/// Tunables fixed at mount time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the kernel may cache attributes.
    pub attribute_timeout: Duration,
    /// How long the kernel may cache names.
    pub entry_timeout: Duration,
    /// How long the kernel may remember that a name does not exist (zero:
    /// not at all). Used only where the watcher keeps names coherent.
    pub negative_timeout: Duration,
    /// Largest READ sent (the server's `rtmax`, at most 1 MiB).
    pub read_size: u32,
    /// Largest WRITE sent and FUSE's `max_write` (`wtmax`, at most 1 MiB).
    pub write_size: u32,
    /// Longest name (PATHCONF `name_max`), for `statfs`.
    pub name_maximum: u32,
    /// The kernel checks permissions from the attributes (mount option
    /// `default_permissions`); otherwise `access` and `open` ask the
    /// server with ACCESS.
    pub kernel_permissions: bool,
    /// Writes are queued and sent by worker threads (`writes.rs`).
    pub write_behind: bool,
    /// `close` waits for a COMMIT of the file's UNSTABLE writes (the NFS
    /// client convention). Off: close returns once the writes reached the
    /// server (where every client already sees them); only `fsync` waits
    /// for durability, as on a local file system.
    pub commit_on_close: bool,
}

/// A file opened through FUSE.
#[derive(Debug)]
struct OpenFile {
    node: u64,
    handle: FileHandle,
    /// The opener, used for data calls the kernel makes on its behalf.
    caller: Caller,
}

/// The FUSE side of a mount.
#[derive(Debug)]
pub struct NfsFilesystem {
    client: Arc<NfsClient>,
    settings: Settings,
    nodes: Arc<Mutex<NodeTable>>,
    files: Arc<Mutex<HashMap<u64, OpenFile>>>,
    /// Writes queued and in flight.
    writes: writes::WriteBehind,
    directories: Mutex<HashMap<u64, directory::DirectoryStream>>,
    next_handle: AtomicU64,
    silly_counter: AtomicU64,
    notifier: Arc<OnceLock<Notifier>>,
    table: Option<Arc<dyn table::AttributeTable>>,
    stats: Arc<Stats>,
    callers: callers::CallerCache,
    /// Ends the table watcher, if one runs.
    watcher: Option<watch::WatcherHandle>,
    /// The watcher's invalidation epoch, when a watcher runs.
    coherence: Option<Arc<watch::Coherence>>,
    /// The server answers NLM: `fcntl` and `flock` locks go to it.
    locking: bool,
    /// Which owners hold locks through this mount (`locks.rs`).
    locks: locks::HeldLocks,
}

/// Calls in flight that may change some nodes (see
/// [`NfsFilesystem::own_calls`]).
#[derive(Debug)]
struct OwnCalls {
    nodes: Arc<Mutex<NodeTable>>,
    ids: Vec<u64>,
}

impl Drop for OwnCalls {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut nodes = lock(&self.nodes);
        for id in &self.ids {
            if let Some(found) = nodes.get_mut(*id) {
                found.own.in_flight = found.own.in_flight.saturating_sub(1);
            }
        }
    }
}

/// Names in a directory whose changes cannot be followed (no table, or a
/// directory tracking too many names) are cached at most this long, and
/// failed lookups not at all: the behaviour without a metadata table.
pub const UNWATCHED_ENTRY_TIMEOUT: Duration = Duration::from_secs(1);

/// A mutex guard even after a panic elsewhere: every critical section here
/// leaves the maps consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An NFS call's outcome as the errno FUSE answers with.
fn nfs<Success, Failure>(
    result: CallResult<ProcedureResult<Success, Failure>>,
) -> Result<Success, Errno> {
    match result {
        Ok(ProcedureResult::Ok(success)) => Ok(success),
        Ok(ProcedureResult::Failed { status, .. }) => Err(errno::from_nfs(status)),
        Err(error) => {
            log::warn!("RPC failed: {error}");
            Err(errno::from_client(&error))
        }
    }
}

fn name_bytes(name: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().to_vec()
}

impl NfsFilesystem {
    /// A file system over `client` rooted at `root`. `notifier` is filled
    /// in once the FUSE session exists.
    /// `table`, when given, answers GETATTR before the server is asked.
    pub fn new(
        client: Arc<NfsClient>,
        root: FileHandle,
        settings: Settings,
        notifier: Arc<OnceLock<Notifier>>,
        table: Option<Arc<dyn table::AttributeTable>>,
        stats: Arc<Stats>,
    ) -> NfsFilesystem {
        let nodes = Arc::new(Mutex::new(NodeTable::new(root.clone())));
        // The root's file id keys its names in the table: without it, names
        // at the top would not be followed.
        match client.get_attributes(
            &Caller::root(),
            GetAttributesArguments {
                object: root.clone(),
            },
        ) {
            Ok(ProcedureResult::Ok(ok)) => {
                lock(&nodes).set_file_id(nodes::ROOT, ok.attributes.file_id);
            }
            other => {
                log::warn!("GETATTR of the root failed ({other:?}): its names are cached briefly")
            }
        }
        // A table keeps cached attributes and names coherent: the watcher
        // tells the kernel what another guest changed.
        let coherence = table
            .as_ref()
            .map(|_| Arc::new(watch::Coherence::default()));
        let files = Arc::new(Mutex::new(HashMap::new()));
        let writes = writes::WriteBehind::new(
            writes::Sender {
                client: Arc::clone(&client),
                nodes: Arc::clone(&nodes),
                coherent: coherence.is_some(),
                write_size: settings.write_size,
                notifier: Arc::clone(&notifier),
            },
            settings.write_behind,
        );
        let watcher = match (&table, &coherence) {
            (Some(table), Some(coherence)) => Some(watch::spawn(watch::Watcher {
                nodes: Arc::clone(&nodes),
                table: Arc::clone(table),
                notifier: Arc::clone(&notifier),
                coherence: Arc::clone(coherence),
                stats: Arc::clone(&stats),
            })),
            _ => None,
        };
        // Locks exclude other mounts only where the server keeps them;
        // elsewhere the kernel keeps them for this guest, as before.
        let locking = matches!(
            client.lock_call(&Caller::root(), nfs3::nlm::Arguments::Null(())),
            Ok(nfs3::nlm::Results::Null(()))
        );
        if !locking {
            log::info!(
                "the server has no lock manager (NLM v4): locks hold within this guest only"
            );
        }
        NfsFilesystem {
            locking,
            locks: locks::HeldLocks::default(),
            client,
            settings,
            nodes,
            files,
            writes,
            directories: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            silly_counter: AtomicU64::new(0),
            notifier,
            table,
            stats,
            callers: callers::CallerCache::new(callers::GROUP_LIFETIME),
            watcher,
            coherence,
        }
    }

    fn request_caller(&self, request: &Request) -> Caller {
        self.callers
            .caller(request.uid(), request.gid(), request.pid())
    }

    fn handle_of(&self, node: INodeNo) -> Result<FileHandle, Errno> {
        lock(&self.nodes)
            .get(node.0)
            .map(|node| node.handle.clone())
            .ok_or(Errno::ESTALE)
    }

    fn new_file_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn get_attributes(
        &self,
        caller: &Caller,
        handle: &FileHandle,
    ) -> Result<FileAttributes, Errno> {
        nfs(self.client.get_attributes(
            caller,
            GetAttributesArguments {
                object: handle.clone(),
            },
        ))
        .map(|ok| ok.attributes)
    }

    /// A node's current attributes: from the metadata table when it holds
    /// them, else GETATTR (the table's copy is the server's own, so no
    /// permission is involved; GETATTR needs none either), with the caller
    /// made only when the server is asked: a table hit costs no `/proc`
    /// read. Also returns the table entry when the answer came from it.
    fn current_attributes_for(
        &self,
        caller: impl FnOnce() -> Caller,
        handle: &FileHandle,
        file_id: Option<u64>,
    ) -> Result<(FileAttributes, Option<TableEntry>), Errno> {
        // A snapshot's objects are never in the table: ask the server.
        let file_id = file_id.filter(|&file_id| !io::is_snapshot_object(file_id));
        if let (Some(table), Some(file_id)) = (&self.table, file_id) {
            match table.lookup(file_id, handle) {
                Some(entry) => {
                    self.stats.count_table_hit();
                    return Ok((entry.attributes.clone(), Some(entry)));
                }
                None => self.stats.count_table_miss(),
            }
        }
        let attributes = self.get_attributes(&caller(), handle)?;
        let mut nodes = lock(&self.nodes);
        if let Some(id) = nodes.find(handle) {
            nodes.set_file_id(id, attributes.file_id);
        }
        Ok((attributes, None))
    }

    /// The epoch before a request reads anything (see `watch.rs`).
    fn mark(&self) -> u64 {
        self.coherence
            .as_ref()
            .map_or(0, |coherence| coherence.mark())
    }

    /// After a reply gave the kernel attributes of `node`: matches the
    /// state the watcher compares with what the kernel now holds. `entry`
    /// is the table copy the attributes came from, if they did; otherwise
    /// the table must show the same attributes, or the reply may already
    /// be stale and is invalidated after it went out.
    fn handed(&self, node: u64, attributes: &FileAttributes, entry: Option<TableEntry>) {
        let (Some(table), Some(coherence)) = (&self.table, &self.coherence) else {
            return;
        };
        // A snapshot's objects never change and are never in the table:
        // the kernel keeps them until the snapshots change (the watcher
        // then drops them all, see `watch.rs`).
        if io::is_snapshot_object(attributes.file_id) {
            return;
        }
        let entry = match entry {
            Some(entry) => Some(entry),
            None => {
                let handle = match lock(&self.nodes).get(node) {
                    Some(found) => found.handle.clone(),
                    None => return,
                };
                table.lookup(attributes.file_id, &handle)
            }
        };
        let mut nodes = lock(&self.nodes);
        let Some(found) = nodes.get_mut(node) else {
            return;
        };
        match entry {
            Some(entry) if nodes::same_attributes(&entry, attributes) => found.learn(&entry),
            _ => found.stale_at = coherence.next(),
        }
    }

    /// Before a call that may change `nodes`: the watcher puts off
    /// judging their slots until the call's change is recorded (or the
    /// guard drops without one: then it counts as another guest's).
    fn own_calls(&self, nodes: &[u64]) -> OwnCalls {
        if self.coherence.is_none() {
            // No watcher: nothing to put off, no lock taken.
            return OwnCalls {
                nodes: Arc::clone(&self.nodes),
                ids: Vec::new(),
            };
        }
        self.own_calls_locked(&mut lock(&self.nodes), nodes)
    }

    /// [`NfsFilesystem::own_calls`] with the node table already locked,
    /// for a mount with a watcher.
    fn own_calls_locked(&self, table: &mut NodeTable, nodes: &[u64]) -> OwnCalls {
        for node in nodes {
            if let Some(found) = table.get_mut(*node) {
                found.own.in_flight += 1;
            }
        }
        OwnCalls {
            nodes: Arc::clone(&self.nodes),
            ids: nodes.to_vec(),
        }
    }

    /// Records this driver's change of `node` (wcc data from the reply), so
    /// that the watcher does not take it for another guest's: the kernel
    /// applied its own change already.
    fn own_change(&self, node: u64, wcc: &nfs3::WccData) {
        self.own_directory_change(node, wcc, |_| {});
    }

    /// [`Self::own_change`], and `apply` to the directory's complete name
    /// set if it has one.
    fn own_directory_change(
        &self,
        directory: u64,
        wcc: &nfs3::WccData,
        apply: impl FnOnce(&mut nodes::Children),
    ) {
        if self.coherence.is_none() {
            return;
        }
        record_own_change(&self.nodes, directory, wcc, apply);
    }

    /// What this driver knows of `name` in `directory` without a call: it
    /// knows every name there (see [`nodes::Node::children`]). Only where
    /// the watcher follows the directory, and the kernel checks
    /// permissions (`default_permissions`: the kernel checked the search
    /// permission the server's LOOKUP would), and never for `.snapshots`
    /// at the root, which no listing shows but the server answers. Found
    /// names only while the kernel may cache names, failed ones only while
    /// it may cache failed lookups (`--entry-timeout 0`, `--negative-timeout
    /// 0`: every lookup asks the server, at once current).
    fn known_name(&self, directory: u64, name: &OsStr) -> nodes::NameKnown {
        if !self.names_known_locally()
            || name.len() > self.settings.name_maximum as usize
            || (directory == nodes::ROOT && name == io::SNAPSHOT_DIRECTORY_NAME)
        {
            return nodes::NameKnown::Unknown;
        }
        use std::os::unix::ffi::OsStrExt;
        let known = lock(&self.nodes)
            .get(directory)
            .and_then(|found| found.children.as_ref())
            .map_or(nodes::NameKnown::Unknown, |children| {
                children.known(name.as_bytes())
            });
        match known {
            nodes::NameKnown::Absent if self.settings.negative_timeout.is_zero() => {
                nodes::NameKnown::Unknown
            }
            known => known,
        }
    }

    /// Whether lookups may be answered from known names at all (see
    /// [`Self::known_name`]).
    fn names_known_locally(&self) -> bool {
        self.coherence.is_some()
            && self.settings.kernel_permissions
            && !self.settings.entry_timeout.is_zero()
    }

    /// After a reply with attributes of `node`: invalidates them again if
    /// the watcher found them stale after `mark`.
    ///
    /// The attributes only: a reply with attributes fills no page, and a
    /// page drop of the watcher's already covers any READ that was in
    /// flight (the kernel keeps the READ's pages locked until its reply
    /// lands, and the drop waits for them). Dropping the pages here would
    /// lose what the program wrote since the reply: a CREATE's reply is
    /// followed at once by the program's writes, and a watcher pass that
    /// met the new file before its reply was handed to the kernel (any
    /// pass in between stamps it stale) would drop them.
    fn recheck(&self, mark: u64, node: u64) {
        if self.coherence.is_none() {
            return;
        }
        let stale = lock(&self.nodes)
            .get(node)
            .is_some_and(|found| found.stale_at > mark);
        if stale {
            if let Some(notifier) = self.notifier.get() {
                let _ = watch::deliver(notifier.inval_inode(INodeNo(node), -1, 0));
            }
        }
    }

    /// After a reply about `name` in `directory`: invalidates it again if
    /// the watcher invalidated the directory's names after `mark`.
    fn recheck_name(&self, mark: u64, directory: u64, name: &OsStr) {
        if self.coherence.is_none() {
            return;
        }
        // The directory's attributes invalidated since is a change of it
        // too: a pass that found no cached name to drop (the kernel had
        // none there yet) stamps only those.
        let stale = lock(&self.nodes)
            .get(directory)
            .is_some_and(|found| found.names_stale_at > mark || found.stale_at > mark);
        if stale {
            if let Some(notifier) = self.notifier.get() {
                let _ = watch::deliver(notifier.inval_entry(INodeNo(directory), name));
            }
        }
    }

    /// How long the kernel may cache `name` in `directory`, which is then
    /// tracked for the watcher: long where changes are followed, else the
    /// short fallback.
    fn name_timeout(&self, directory: u64, name: &OsStr) -> Duration {
        if self.coherence.is_some() && lock(&self.nodes).track(directory, &name_bytes(name)) {
            self.settings.entry_timeout
        } else {
            self.settings.entry_timeout.min(UNWATCHED_ENTRY_TIMEOUT)
        }
    }

    /// How long the kernel may remember that `name` is not in `directory`
    /// (zero: not at all).
    fn negative_timeout(&self, directory: u64, name: &OsStr) -> Duration {
        if self.settings.negative_timeout.is_zero() || self.coherence.is_none() {
            return Duration::ZERO;
        }
        if lock(&self.nodes).track(directory, &name_bytes(name)) {
            self.settings.negative_timeout
        } else {
            Duration::ZERO
        }
    }

    /// An entry reply's attributes for `handle`: the node gains a kernel
    /// reference. `attributes` are fetched when the server sent none.
    fn entry(
        &self,
        caller: &Caller,
        handle: &FileHandle,
        attributes: Option<FileAttributes>,
    ) -> Result<fuser::FileAttr, Errno> {
        self.entry_with(caller, handle, attributes, None)
    }

    /// [`Self::entry`], with the table entry the attributes came from if
    /// they did (`handed` then need not read the table again).
    fn entry_with(
        &self,
        caller: &Caller,
        handle: &FileHandle,
        attributes: Option<FileAttributes>,
        mut from_table: Option<TableEntry>,
    ) -> Result<fuser::FileAttr, Errno> {
        let attributes = match attributes {
            Some(attributes) => attributes,
            None => self.get_attributes(caller, handle)?,
        };
        let (node, _handing) = {
            let mut nodes = lock(&self.nodes);
            let (node, created) = nodes.reference(handle);
            nodes.set_file_id(node, attributes.file_id);
            // A node new to the kernel: the watcher leaves it alone until
            // `handed` has set what the kernel holds. A pass in between
            // would find nothing known and invalidate it all, and the
            // notice could reach the kernel after the reply, once the
            // program's first writes to a file it just created are in its
            // pages.
            let handing = (created && self.coherence.is_some())
                .then(|| self.own_calls_locked(&mut nodes, &[node]));
            (node, handing)
        };
        // The kernel must not get a size older than the writes it queued.
        let attributes = if self.writes.pending(node) {
            self.writes.drain(node);
            from_table = None;
            self.current_attributes_for(|| caller.clone(), handle, Some(attributes.file_id))?
                .0
        } else {
            attributes
        };
        self.handed(node, &attributes, from_table);
        Ok(attributes::to_fuse(node, &attributes))
    }

    fn do_lookup(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<fuser::FileAttr, Errno> {
        if let Some(answer) = self.answer_known(caller, parent.0, name) {
            return answer;
        }
        if self.list_for_lookup(caller, parent.0) {
            if let Some(answer) = self.answer_known(caller, parent.0, name) {
                return answer;
            }
        }
        let directory = self.handle_of(parent)?;
        let found = nfs(self.client.lookup(
            caller,
            LookupArguments {
                what: DirectoryOperationArguments {
                    directory,
                    name: name_bytes(name),
                },
            },
        ))?;
        self.entry(caller, &found.object, found.object_attributes)
    }

    /// A lookup answered without a call where the directory's names are
    /// known ([`Self::known_name`]): "not found", or the listed file with
    /// the table's attributes. `None`: ask the server (the names are not
    /// known, or the file is not in the table).
    fn answer_known(
        &self,
        caller: &Caller,
        directory: u64,
        name: &OsStr,
    ) -> Option<Result<fuser::FileAttr, Errno>> {
        match self.known_name(directory, name) {
            nodes::NameKnown::Unknown => None,
            nodes::NameKnown::Absent => {
                self.stats.count_local_miss();
                Some(Err(Errno::ENOENT))
            }
            nodes::NameKnown::Present(child) => {
                let found = self.table.as_ref()?.lookup(child.file_id, &child.handle)?;
                self.stats.count_local_hit();
                let attributes = found.attributes.clone();
                Some(self.entry_with(caller, &child.handle, Some(attributes), Some(found)))
            }
        }
    }

    /// GETATTR, and how long the kernel may cache the answer.
    fn do_getattr(
        &self,
        request: &Request,
        node: INodeNo,
    ) -> Result<(fuser::FileAttr, Duration), Errno> {
        if let Some(attributes) = self.attributes_while_deferred(node.0) {
            // Not cached: the server's ctime will differ.
            return Ok((attributes::to_fuse(node.0, &attributes), Duration::ZERO));
        }
        self.writes.drain(node.0);
        let (handle, hidden, file_id) = {
            let nodes = lock(&self.nodes);
            let entry = nodes.get(node.0).ok_or(Errno::ESTALE)?;
            (
                entry.handle.clone(),
                entry.silly_name.is_some(),
                entry.file_id(),
            )
        };
        let (mut attributes, entry) =
            self.current_attributes_for(|| self.request_caller(request), &handle, file_id)?;
        self.handed(node.0, &attributes, entry);
        if hidden {
            // Unlinked while open: the hidden name is not a link a program
            // made, so fstat shows the count without it, as for a local file.
            attributes.link_count = attributes.link_count.saturating_sub(1);
        }
        Ok((
            attributes::to_fuse(node.0, &attributes),
            self.settings.attribute_timeout,
        ))
    }

    /// The attributes of a file whose deferred attribute changes wait
    /// (see `writes.rs`), without sending them; `None` when none wait (or
    /// the table cannot say, or the file is unlinked while open).
    fn attributes_while_deferred(&self, node: u64) -> Option<FileAttributes> {
        let table = self.table.as_ref()?;
        let (handle, file_id) = {
            let nodes = lock(&self.nodes);
            let found = nodes.get(node)?;
            if found.silly_name.is_some() {
                return None;
            }
            (found.handle.clone(), found.file_id()?)
        };
        self.writes.attributes_while_deferred(node, || {
            table.lookup(file_id, &handle).map(|entry| entry.attributes)
        })
    }

    /// SETATTR. Returns the attributes and how long the kernel may cache
    /// them: not at all when the change was deferred (`writes.rs`), since
    /// the server's ctime will differ from the one answered.
    #[allow(clippy::too_many_arguments)] // One argument per settable attribute, as FUSE sends them.
    fn do_setattr(
        &self,
        caller: &Caller,
        node: INodeNo,
        file: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        access_time: Option<TimeOrNow>,
        modify_time: Option<TimeOrNow>,
    ) -> Result<(fuser::FileAttr, Duration), Errno> {
        let handle = self.handle_of(node)?;
        let new_attributes = nfs3::SettableAttributes {
            mode: mode.map(|mode| mode & 0o7777),
            uid,
            gid,
            size,
            access_time: attributes::to_set_time(access_time),
            modify_time: attributes::to_set_time(modify_time),
        };
        if let Some(predicted) = self.defer_setattr(caller, node.0, file, &handle, &new_attributes)
        {
            self.stats.count_deferred_setattr();
            return Ok((attributes::to_fuse(node.0, &predicted), Duration::ZERO));
        }
        self.writes.drain(node.0);
        let _own = self.own_calls(&[node.0]);
        let result = nfs(self.client.set_attributes(
            caller,
            SetAttributesArguments {
                object: handle.clone(),
                new_attributes,
                guard: None,
            },
        ))?;
        // A truncate drops the kernel's pages past the new size itself; a
        // change of times, mode or owner leaves the data alone. Either
        // way the pages still match the file unless someone else changed
        // it first.
        self.note_own_change(node.0, &result.object_wcc);
        self.own_change(node.0, &result.object_wcc);
        let attributes = match result.object_wcc.after {
            Some(attributes) => attributes,
            None => self.get_attributes(caller, &handle)?,
        };
        self.handed(node.0, &attributes, None);
        Ok((
            attributes::to_fuse(node.0, &attributes),
            self.settings.attribute_timeout,
        ))
    }

    /// Defers a SETATTR (see `writes.rs`) when the server will certainly
    /// allow it and its outcome is known: a regular file this mount
    /// created (so the export is writable to it), no size change, the
    /// metadata table holding the file's attributes, and a caller who is
    /// root (not squashed: the file was created by root and owned by root)
    /// or the owner changing mode (without set-group-id, which the server
    /// may drop) or times. Returns the attributes the change gives.
    fn defer_setattr(
        &self,
        caller: &Caller,
        node: u64,
        file: Option<u64>,
        handle: &FileHandle,
        new: &nfs3::SettableAttributes,
    ) -> Option<FileAttributes> {
        let table = self.table.as_ref()?;
        if new.size.is_some() || !self.writes.enabled() {
            return None;
        }
        let (root_effective, file_id) = {
            let nodes = lock(&self.nodes);
            let found = nodes.get(node)?;
            (found.made_here?, found.file_id()?)
        };
        let own = self.own_calls(&[node]);
        self.writes.defer_attributes(
            node,
            file,
            handle.clone(),
            caller.clone(),
            new.clone(),
            own,
            || table.lookup(file_id, handle).map(|entry| entry.attributes),
            |before| {
                before.file_type == nfs3::FileType::Regular
                    && attributes::certainly_permitted(caller.uid, root_effective, before, new)
            },
        )
    }

    /// After this driver changed a file (its data or its attributes): the
    /// cached pages still match the file if nobody else changed it in
    /// between (the wcc `before` equals what they matched).
    fn note_own_change(&self, node: u64, wcc: &nfs3::WccData) {
        note_data_version(&self.nodes, node, wcc);
    }

    fn do_statfs(&self, caller: &Caller) -> Result<[u64; 5], Errno> {
        let root = self.handle_of(INodeNo(nodes::ROOT))?;
        let statistics = nfs(self
            .client
            .file_system_statistics(caller, FileSystemArguments { object: root }))?;
        let block = u64::from(attributes::BLOCK_SIZE);
        Ok([
            statistics.total_bytes / block,
            statistics.free_bytes / block,
            statistics.available_bytes / block,
            statistics.total_files,
            statistics.free_files,
        ])
    }

    /// ACCESS: whether `caller` may do all of `mask` (`R_OK`, `W_OK`,
    /// `X_OK`) to `node`; `F_OK` only checks existence.
    fn do_access(&self, caller: &Caller, node: INodeNo, mask: AccessFlags) -> Result<(), Errno> {
        use nfs3::procedures::inspect::{
            ACCESS_DELETE, ACCESS_EXECUTE, ACCESS_EXTEND, ACCESS_LOOKUP, ACCESS_MODIFY, ACCESS_READ,
        };
        let handle = self.handle_of(node)?;
        if mask.is_empty() {
            return self.get_attributes(caller, &handle).map(|_| ());
        }
        let attributes = self.get_attributes(caller, &handle)?;
        let directory = attributes.file_type == nfs3::FileType::Directory;
        let mut wanted = 0;
        if mask.contains(AccessFlags::R_OK) {
            wanted |= ACCESS_READ;
        }
        if mask.contains(AccessFlags::W_OK) {
            wanted |= if directory {
                ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE
            } else {
                ACCESS_MODIFY | ACCESS_EXTEND
            };
        }
        if mask.contains(AccessFlags::X_OK) {
            wanted |= if directory {
                ACCESS_LOOKUP
            } else {
                ACCESS_EXECUTE
            };
        }
        let granted = nfs(self.client.access(
            caller,
            AccessArguments {
                object: handle,
                access: wanted,
            },
        ))?;
        if granted.access & wanted == wanted {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }
}

impl Filesystem for NfsFilesystem {
    fn destroy(&mut self) {
        // Deferred attribute changes of files nobody holds open go out.
        self.writes.drain_all();
        self.free_all_locks();
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
    }

    fn init(&mut self, _request: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(self.settings.write_size);
        let _ = config.set_max_readahead(self.settings.read_size);
        let _ = config.set_max_background(64);
        // Without a table the kernel's own check keeps cached pages honest:
        // it drops them when a file's attributes come back with another
        // mtime. With one, the watcher drops them when another guest
        // changes the file and the open checks the file's version, so the
        // kernel's check would only drop pages this mount wrote itself (its
        // cached mtime predates its own writes): every object file a
        // compiler wrote would be read again by the linker.
        let inval_on_mtime = self
            .coherence
            .is_none()
            .then_some(InitFlags::FUSE_AUTO_INVAL_DATA);
        for capability in [
            Some(InitFlags::FUSE_DO_READDIRPLUS),
            inval_on_mtime,
            Some(InitFlags::FUSE_PARALLEL_DIROPS),
            Some(InitFlags::FUSE_CACHE_SYMLINKS),
        ]
        .into_iter()
        .flatten()
        {
            if config.add_capabilities(capability).is_err() {
                log::info!("the kernel lacks {capability:?}");
            }
        }
        let locking = if self.locking {
            &[InitFlags::FUSE_POSIX_LOCKS, InitFlags::FUSE_FLOCK_LOCKS][..]
        } else {
            &[]
        };
        for &capability in locking {
            if config.add_capabilities(capability).is_err() {
                log::info!("the kernel lacks {capability:?}");
            }
        }
        Ok(())
    }

    fn lookup(&self, request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mark = self.mark();
        match self.do_lookup(&self.request_caller(request), parent, name) {
            Ok(attributes) => {
                let node = attributes.ino.0;
                reply.entry_with_ttls(
                    &self.settings.attribute_timeout,
                    &self.name_timeout(parent.0, name),
                    &attributes,
                    Generation(0),
                );
                self.recheck(mark, node);
                self.recheck_name(mark, parent.0, name);
            }
            Err(error) if error == Errno::ENOENT => {
                let timeout = self.negative_timeout(parent.0, name);
                if timeout.is_zero() {
                    return reply.error(error);
                }
                // Node 0: a negative entry the kernel keeps for `timeout`.
                reply.entry_with_ttls(
                    &Duration::ZERO,
                    &timeout,
                    &attributes::negative(),
                    Generation(0),
                );
                self.recheck_name(mark, parent.0, name);
            }
            Err(error) => reply.error(error),
        }
    }

    fn forget(&self, _request: &Request, node: INodeNo, count: u64) {
        lock(&self.nodes).forget(node.0, count);
    }

    fn getattr(
        &self,
        request: &Request,
        node: INodeNo,
        _file: Option<FuseHandle>,
        reply: ReplyAttr,
    ) {
        let mark = self.mark();
        match self.do_getattr(request, node) {
            Ok((attributes, timeout)) => {
                reply.attr(&timeout, &attributes);
                self.recheck(mark, node.0);
            }
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        request: &Request,
        node: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        access_time: Option<TimeOrNow>,
        modify_time: Option<TimeOrNow>,
        _change_time: Option<SystemTime>,
        file: Option<FuseHandle>,
        _creation_time: Option<SystemTime>,
        _change_time_macos: Option<SystemTime>,
        _backup_time: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mark = self.mark();
        match self.do_setattr(
            &self.request_caller(request),
            node,
            file.map(|file| file.0),
            mode,
            uid,
            gid,
            size,
            access_time,
            modify_time,
        ) {
            Ok((attributes, timeout)) => {
                reply.attr(&timeout, &attributes);
                self.recheck(mark, node.0);
            }
            Err(error) => reply.error(error),
        }
    }

    fn readlink(&self, request: &Request, node: INodeNo, reply: ReplyData) {
        match self.do_readlink(&self.request_caller(request), node) {
            Ok(target) => reply.data(&target),
            Err(error) => reply.error(error),
        }
    }

    fn mknod(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        device: u32,
        reply: ReplyEntry,
    ) {
        let mark = self.mark();
        let result = self.do_mknod(&self.request_caller(request), parent, name, mode, device);
        self.reply_entry(mark, parent, name, result, reply);
    }

    fn mkdir(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mark = self.mark();
        let result = self.do_mkdir(&self.request_caller(request), parent, name, mode);
        self.reply_entry(mark, parent, name, result, reply);
    }

    fn unlink(&self, request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(&self.request_caller(request), parent, name) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_rmdir(&self.request_caller(request), parent, name) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn symlink(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let mark = self.mark();
        let result = self.do_symlink(&self.request_caller(request), parent, name, target);
        self.reply_entry(mark, parent, name, result, reply);
    }

    fn rename(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // NFSv3 has no RENAME_NOREPLACE or RENAME_EXCHANGE.
        if !flags.is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        match self.do_rename(
            &self.request_caller(request),
            parent,
            name,
            new_parent,
            new_name,
        ) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn link(
        &self,
        request: &Request,
        node: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
        reply: ReplyEntry,
    ) {
        let mark = self.mark();
        let result = self.do_link(&self.request_caller(request), node, new_parent, new_name);
        self.reply_entry(mark, new_parent, new_name, result, reply);
    }

    fn open(&self, request: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(&self.request_caller(request), node, flags) {
            Ok((file, open_flags, changed)) => {
                reply.opened(FuseHandle(file), open_flags);
                if changed {
                    self.invalidate_attributes(node);
                }
            }
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _request: &Request,
        _node: INodeNo,
        file: FuseHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(file.0, offset, size) {
            Ok(data) => reply.data(data.bytes()),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _request: &Request,
        _node: INodeNo,
        file: FuseHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(file.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        request: &Request,
        node: INodeNo,
        file: FuseHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Every close sends the queued data (close-to-open); only with
        // commit on close does it wait for durability too.
        let settled = if self.settings.commit_on_close {
            self.do_commit(file.0, false)
        } else {
            self.settle_writes(file.0)
        };
        // A close releases the closing process's locks on the file (after
        // its data reached the server, for the next holder to see).
        self.release_locks(node.0, lock_owner.0, || self.request_caller(request));
        match settled {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn release(
        &self,
        request: &Request,
        node: INodeNo,
        file: FuseHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Locks taken through this open file that no FLUSH released: its
        // `flock`s, and those of a file opened without flush.
        self.release_file_locks(node.0, file.0, || self.request_caller(request));
        match self.do_release(file.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn fsync(
        &self,
        _request: &Request,
        _node: INodeNo,
        file: FuseHandle,
        _data_only: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_commit(file.0, true) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn getlk(
        &self,
        request: &Request,
        node: INodeNo,
        _file: FuseHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        self.do_getlk(
            &self.request_caller(request),
            node.0,
            lock_owner.0,
            start,
            end,
            kind,
            pid,
            reply,
        );
    }

    fn setlk(
        &self,
        request: &Request,
        node: INodeNo,
        file: FuseHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.do_setlk(
            &self.request_caller(request),
            node.0,
            file.0,
            lock_owner.0,
            start,
            end,
            kind,
            pid,
            sleep,
            reply,
        );
    }

    fn opendir(&self, request: &Request, node: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(&self.request_caller(request), node) {
            Ok(file) => reply.opened(FuseHandle(file), fuser::FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn readdirplus(
        &self,
        request: &Request,
        node: INodeNo,
        file: FuseHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.do_readdirplus(&self.request_caller(request), node, file.0, offset, reply);
    }

    fn readdir(
        &self,
        request: &Request,
        _node: INodeNo,
        file: FuseHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(&self.request_caller(request), file.0, offset, reply);
    }

    fn releasedir(
        &self,
        _request: &Request,
        _node: INodeNo,
        file: FuseHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.directories).remove(&file.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        request: &Request,
        node: INodeNo,
        _file: FuseHandle,
        _data_only: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_sync_directory(&self.request_caller(request), node) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, request: &Request, _node: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs(&self.request_caller(request)) {
            Ok([blocks, free, available, files, free_files]) => reply.statfs(
                blocks,
                free,
                available,
                files,
                free_files,
                attributes::BLOCK_SIZE,
                self.settings.name_maximum,
                attributes::BLOCK_SIZE,
            ),
            Err(error) => reply.error(error),
        }
    }

    fn access(&self, request: &Request, node: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.do_access(&self.request_caller(request), node, mask) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    // NFSv3 has no extended attributes. ENOSYS (not EOPNOTSUPP) makes the
    // kernel stop asking: it then answers EOPNOTSUPP itself, and the
    // security.capability check on every write costs nothing.
    fn getxattr(
        &self,
        _request: &Request,
        _node: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _request: &Request, _node: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _request: &Request,
        _node: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _request: &Request, _node: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mark = self.mark();
        match self.do_create(&self.request_caller(request), parent, name, mode, flags) {
            Ok((attributes, file)) => {
                // One timeout for both: the shorter.
                let timeout = self
                    .name_timeout(parent.0, name)
                    .min(self.settings.attribute_timeout.max(UNWATCHED_ENTRY_TIMEOUT));
                reply.created(
                    &timeout,
                    &attributes,
                    Generation(0),
                    FuseHandle(file),
                    fuser::FopenFlags::FOPEN_KEEP_CACHE,
                );
                self.recheck(mark, attributes.ino.0);
                self.recheck_name(mark, parent.0, name);
            }
            Err(error) => reply.error(error),
        }
    }
}

impl NfsFilesystem {
    /// An entry reply for `name` in `parent`, then the rechecks of `mark`.
    fn reply_entry(
        &self,
        mark: u64,
        parent: INodeNo,
        name: &OsStr,
        result: Result<fuser::FileAttr, Errno>,
        reply: ReplyEntry,
    ) {
        match result {
            Ok(attributes) => {
                reply.entry_with_ttls(
                    &self.settings.attribute_timeout,
                    &self.name_timeout(parent.0, name),
                    &attributes,
                    Generation(0),
                );
                self.recheck(mark, attributes.ino.0);
                self.recheck_name(mark, parent.0, name);
            }
            Err(error) => reply.error(error),
        }
    }

    /// Tells the kernel its cached attributes of `node` are stale (after the
    /// reply that found out, so the notification cannot deadlock with it).
    fn invalidate_attributes(&self, node: INodeNo) {
        if self.settings.attribute_timeout.is_zero() {
            return;
        }
        self.notify_attributes_stale(node);
    }

    fn notify_attributes_stale(&self, node: INodeNo) {
        if let Some(notifier) = self.notifier.get() {
            if let Err(error) = notifier.inval_inode(node, -1, 0) {
                log::debug!("attribute invalidation of {node} failed: {error}");
            }
        }
    }
}

/// Records a change this driver made to `node` (a wcc transition for the
/// watcher) and applies it to the directory's complete name set.
fn record_own_change(
    nodes: &Mutex<NodeTable>,
    node: u64,
    wcc: &nfs3::WccData,
    apply: impl FnOnce(&mut nodes::Children),
) {
    let mut nodes = lock(nodes);
    let Some(found) = nodes.get_mut(node) else {
        return;
    };
    found.own_changes += 1;
    let (Some(before), Some(after)) = (&wcc.before, &wcc.after) else {
        // Nothing to match: the watcher will see another's change.
        found.children = None;
        return;
    };
    found
        .own
        .record(nodes::Key::of_wcc(before), nodes::Key::of(after));
    if let Some(children) = &mut found.children {
        apply(children);
        if children.len() > nodes::MAX_TRACKED_NAMES {
            found.children = None;
        }
    }
}

/// After this driver changed a file (a WRITE, or a SETATTR: a change of
/// times, mode or owner leaves the data as it was, and a truncate's pages
/// the kernel drops itself): the cached pages still match the file if
/// nobody else changed it in between (the wcc `before` equals what they
/// matched).
fn note_data_version(nodes: &Mutex<NodeTable>, node: u64, wcc: &nfs3::WccData) {
    let mut nodes = lock(nodes);
    let Some(node) = nodes.get_mut(node) else {
        return;
    };

    let before = wcc
        .before
        .as_ref()
        .map(|before| (before.modify_time, before.size));
    let after = wcc
        .after
        .as_ref()
        .map(|after| (after.modify_time, after.size));
    node.data_version = match (node.data_version, before, after) {
        (Some(known), Some(before), Some(after)) if known == before => Some(after),
        _ => None,
    };
}
