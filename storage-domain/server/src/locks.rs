//! Byte-range locks across clients: the lock table behind NLM v4
//! (`nfs3::nlm`), carried over TCP and, unchanged, over VRPC rings.
//!
//! Design: POSIX `fcntl` semantics between owners. An owner is the
//! client's `caller_name` and its owner handle `oh` (NLM's `svid` is only
//! reported back in TEST's answer: a client may use several processes for
//! one owner, as an inherited `flock` does); its locks on a file never conflict with each other: a new lock
//! replaces the owner's locks where it overlaps them (an upgrade, a
//! downgrade or a split), and an unlock trims or splits them. Two owners
//! conflict where their ranges overlap and either lock is exclusive.
//! Ranges are `[start, end)` with `end == u64::MAX` for NLM's length 0 (to
//! the end of the file and beyond).
//!
//! Each lock remembers the session it was taken in: a transport that knows
//! when a client is gone (a VRPC guest's connection, a Xen guest's device)
//! ends its session and every lock taken through it goes, so a guest that
//! dies or detaches releases its locks. TCP clients have no session (their
//! connections come and go while the client lives): their locks go with
//! UNLOCK, FREE_ALL or a server restart.
//!
//! A blocking LOCK that conflicts is answered NLM4_BLOCKED and not queued:
//! the server never calls clients back (no NLM GRANTED callbacks), so a
//! client waits by asking again (guest-driver polls; a kernel lockd re-sends
//! a blocked LOCK every 30 s). Locks live in memory: a server restart drops
//! them all, and there is no grace period for reclaims.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use nfs3::nlm::{self, NlmStatus};
use vfs::{Generation, InodeId};

/// Most locks held at once (NLM4_DENIED_NOLOCKS beyond).
pub const MAX_LOCKS: usize = 65_536;

/// The session of calls whose transport cannot tell when the client goes
/// (TCP): their locks are never released by a session's end.
pub const NO_SESSION: u64 = 0;

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// NLM `caller_name`: the client host.
    pub caller_name: Vec<u8>,
    /// NLM `oh`: the owner on that host.
    pub owner: Vec<u8>,
}

/// A file, as locks key it (a new file reusing the inode number has
/// another generation).
pub type LockFile = (InodeId, Generation);

/// One lock held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// The file.
    pub file: LockFile,
    /// Who holds it.
    pub owner: LockOwner,
    /// NLM `svid` of the call that took it: the process, as the client
    /// names it (reported by TEST).
    pub svid: i32,
    /// First byte.
    pub start: u64,
    /// One past the last byte; `u64::MAX`: to the end and beyond.
    pub end: u64,
    /// Exclusive (write) or shared (read).
    pub exclusive: bool,
    /// The session it was taken in.
    pub session: u64,
}

impl HeldLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// Why a lock was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockRefusal {
    /// Another owner holds this conflicting lock.
    Conflict(HeldLock),
    /// The table is full.
    NoLocks,
}

/// `[start, end)` of NLM's `l_offset` and `l_len` (0: to the end and
/// beyond; a range past 2^64 is clamped to the same).
pub fn range(offset: u64, length: u64) -> (u64, u64) {
    match length {
        0 => (offset, u64::MAX),
        length => (offset, offset.saturating_add(length)),
    }
}

/// Every lock held, by file.
#[derive(Debug, Default)]
pub struct LockTable {
    files: BTreeMap<LockFile, Vec<HeldLock>>,
    count: usize,
}

impl LockTable {
    /// Locks held now.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The locks held, for tests and status.
    pub fn iter(&self) -> impl Iterator<Item = &HeldLock> {
        self.files.values().flatten()
    }

    /// The first lock of another owner that conflicts with `owner` taking
    /// `[start, end)` of `file` (`exclusive` or shared).
    pub fn conflict(
        &self,
        file: LockFile,
        owner: &LockOwner,
        start: u64,
        end: u64,
        exclusive: bool,
    ) -> Option<&HeldLock> {
        self.files.get(&file)?.iter().find(|held| {
            held.owner != *owner && (exclusive || held.exclusive) && held.overlaps(start, end)
        })
    }

    /// Takes `[start, end)` of `file` for `owner` in `session`, replacing
    /// the owner's own locks where they overlap (adjacent or overlapping
    /// ones of the same kind are merged).
    ///
    /// # Errors
    /// [`LockRefusal`]: a conflicting lock of another owner, or no room.
    #[allow(clippy::too_many_arguments)] // One per part of a lock.
    pub fn lock(
        &mut self,
        file: LockFile,
        owner: &LockOwner,
        svid: i32,
        start: u64,
        end: u64,
        exclusive: bool,
        session: u64,
    ) -> Result<(), LockRefusal> {
        if start >= end {
            return Ok(());
        }
        if let Some(held) = self.conflict(file, owner, start, end, exclusive) {
            return Err(LockRefusal::Conflict(held.clone()));
        }
        // A split can add one lock beyond the new one.
        if self.count + 2 > MAX_LOCKS {
            return Err(LockRefusal::NoLocks);
        }
        self.unlock(file, owner, start, end);
        let mut new = HeldLock {
            file,
            owner: owner.clone(),
            svid,
            start,
            end,
            exclusive,
            session,
        };
        let locks = self.files.entry(file).or_default();
        let before = locks.len();
        // Merge with the owner's touching locks of the same kind.
        locks.retain(|held| {
            let touching = held.owner == *owner
                && held.exclusive == exclusive
                && held.start <= new.end
                && new.start <= held.end;
            if touching {
                new.start = new.start.min(held.start);
                new.end = new.end.max(held.end);
            }
            !touching
        });
        locks.push(new);
        self.count = self.count + locks.len() - before;
        Ok(())
    }

    /// Releases `[start, end)` of `file` held by `owner`: its locks there
    /// are trimmed, split or removed. Unlocking what is not held is fine.
    pub fn unlock(&mut self, file: LockFile, owner: &LockOwner, start: u64, end: u64) {
        let Some(locks) = self.files.get_mut(&file) else {
            return;
        };
        let before = locks.len();
        let mut kept = Vec::with_capacity(locks.len() + 1);
        for held in locks.drain(..) {
            if held.owner != *owner || !held.overlaps(start, end) {
                kept.push(held);
                continue;
            }
            if held.start < start {
                kept.push(HeldLock {
                    end: start,
                    ..held.clone()
                });
            }
            if end < held.end {
                kept.push(HeldLock { start: end, ..held });
            }
        }
        self.count = self.count + kept.len() - before;
        if kept.is_empty() {
            self.files.remove(&file);
        } else {
            *locks = kept;
        }
    }

    /// Releases every lock of the client host `caller_name` (FREE_ALL).
    pub fn free_all(&mut self, caller_name: &[u8]) {
        self.release(|held| held.owner.caller_name == caller_name);
    }

    /// Releases every lock taken in `session` (the client is gone).
    pub fn end_session(&mut self, session: u64) {
        if session != NO_SESSION {
            self.release(|held| held.session == session);
        }
    }

    fn release(&mut self, gone: impl Fn(&HeldLock) -> bool) {
        let mut count = 0;
        self.files.retain(|_, locks| {
            locks.retain(|held| !gone(held));
            count += locks.len();
            !locks.is_empty()
        });
        self.count = count;
    }
}

impl crate::Core {
    /// Runs one NLM call made in `session`.
    pub(crate) fn nlm<F: vfs::FileSystem>(
        &mut self,
        fs: &mut F,
        caller: &crate::Caller,
        arguments: nlm::Arguments,
        session: u64,
    ) -> nlm::Results {
        match arguments {
            nlm::Arguments::Null(()) => nlm::Results::Null(()),
            nlm::Arguments::Test(arguments) => {
                let reply = match self.lock_target(fs, caller, &arguments.lock) {
                    Err(status) => nlm::TestReply::Status(status),
                    Ok((file, owner)) => {
                        let (start, end) = range(arguments.lock.offset, arguments.lock.length);
                        match self
                            .locks
                            .conflict(file, &owner, start, end, arguments.exclusive)
                        {
                            None => nlm::TestReply::Status(NlmStatus::Granted),
                            Some(held) => nlm::TestReply::Denied(holder(held)),
                        }
                    }
                };
                nlm::Results::Test(nlm::TestResult {
                    cookie: arguments.cookie,
                    reply,
                })
            }
            nlm::Arguments::Lock(arguments) => {
                let status = match self.lock_target(fs, caller, &arguments.lock) {
                    Err(status) => status,
                    Ok((file, owner)) => {
                        let (start, end) = range(arguments.lock.offset, arguments.lock.length);
                        match self.locks.lock(
                            file,
                            &owner,
                            arguments.lock.svid,
                            start,
                            end,
                            arguments.exclusive,
                            session,
                        ) {
                            Ok(()) => NlmStatus::Granted,
                            // Not queued: the client asks again (see above).
                            Err(LockRefusal::Conflict(_)) if arguments.block => NlmStatus::Blocked,
                            Err(LockRefusal::Conflict(_)) => NlmStatus::Denied,
                            Err(LockRefusal::NoLocks) => NlmStatus::DeniedNoLocks,
                        }
                    }
                };
                nlm::Results::Lock(nlm::NlmResult {
                    cookie: arguments.cookie,
                    status,
                })
            }
            nlm::Arguments::Cancel(arguments) => {
                // Nothing is ever queued, so there is nothing to withdraw;
                // the lock is not held either.
                let status = match self.lock_target(fs, caller, &arguments.lock) {
                    Err(status) => status,
                    Ok(_) => NlmStatus::Granted,
                };
                nlm::Results::Cancel(nlm::NlmResult {
                    cookie: arguments.cookie,
                    status,
                })
            }
            nlm::Arguments::Unlock(arguments) => {
                let status = match self.lock_target(fs, caller, &arguments.lock) {
                    Err(status) => status,
                    Ok((file, owner)) => {
                        let (start, end) = range(arguments.lock.offset, arguments.lock.length);
                        self.locks.unlock(file, &owner, start, end);
                        NlmStatus::Granted
                    }
                };
                nlm::Results::Unlock(nlm::NlmResult {
                    cookie: arguments.cookie,
                    status,
                })
            }
            nlm::Arguments::FreeAll(notify) => {
                self.locks.free_all(&notify.name);
                nlm::Results::FreeAll(())
            }
        }
    }

    /// The file and owner of an NLM lock: the handle must name a file of
    /// an export the client may use.
    fn lock_target<F: vfs::FileSystem>(
        &mut self,
        fs: &mut F,
        caller: &crate::Caller,
        lock: &nlm::Lock,
    ) -> Result<(LockFile, LockOwner), NlmStatus> {
        let handle = nfs3::FileHandle(lock.handle.clone());
        let resolved = self
            .resolve(fs, caller, &handle)
            .map_err(|error| match error {
                nfs3::NfsError::Stale | nfs3::NfsError::BadHandle => NlmStatus::StaleHandle,
                _ => NlmStatus::Failed,
            })?;
        Ok((
            (resolved.attributes.inode, resolved.attributes.generation),
            LockOwner {
                caller_name: lock.caller_name.clone(),
                owner: lock.owner.clone(),
            },
        ))
    }
}

/// `nlm4_holder` of a lock held.
fn holder(held: &HeldLock) -> nlm::Holder {
    nlm::Holder {
        exclusive: held.exclusive,
        svid: held.svid,
        owner: held.owner.owner.clone(),
        offset: held.start,
        length: if held.end == u64::MAX {
            0
        } else {
            held.end - held.start
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn owner(name: &[u8], number: u8) -> LockOwner {
        LockOwner {
            caller_name: name.to_vec(),
            owner: vec![number],
        }
    }

    const FILE: LockFile = (InodeId(5), Generation(1));

    fn ranges(table: &LockTable, who: &LockOwner) -> Vec<(u64, u64, bool)> {
        let mut found: Vec<_> = table
            .iter()
            .filter(|held| held.owner == *who)
            .map(|held| (held.start, held.end, held.exclusive))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn owners_conflict_where_ranges_overlap_and_one_is_exclusive() {
        let (a, b) = (owner(b"a", 1), owner(b"b", 2));
        let mut table = LockTable::default();
        table.lock(FILE, &a, 0, 0, 100, false, 1).unwrap();
        // Shared with shared: fine; exclusive over it: refused.
        table.lock(FILE, &b, 0, 50, 150, false, 2).unwrap();
        let refused = table.lock(FILE, &b, 0, 90, 200, true, 2).unwrap_err();
        assert!(matches!(refused, LockRefusal::Conflict(held) if held.owner == a));
        // Past a's range, b may take it exclusively; another file is free.
        table.lock(FILE, &b, 0, 100, 200, true, 2).unwrap();
        let other = (InodeId(6), Generation(1));
        table.lock(other, &b, 0, 0, u64::MAX, true, 2).unwrap();
        // A new file in the same inode number is another file.
        table
            .lock((InodeId(5), Generation(2)), &a, 0, 0, 10, true, 1)
            .unwrap();
        assert!(table.conflict(FILE, &a, 120, 130, false).is_some());
        assert!(table.conflict(FILE, &a, 200, 300, true).is_none());
    }

    #[test]
    fn an_owner_s_locks_split_upgrade_and_merge() {
        let a = owner(b"a", 1);
        let mut table = LockTable::default();
        table.lock(FILE, &a, 0, 0, 100, false, 1).unwrap();
        // Upgrading the middle splits the shared lock in three.
        table.lock(FILE, &a, 0, 40, 60, true, 1).unwrap();
        assert_eq!(
            ranges(&table, &a),
            [(0, 40, false), (40, 60, true), (60, 100, false)]
        );
        // Unlocking across the boundary trims both sides.
        table.unlock(FILE, &a, 30, 50);
        assert_eq!(
            ranges(&table, &a),
            [(0, 30, false), (50, 60, true), (60, 100, false)]
        );
        // Downgrading brings the shared pieces together again.
        table.lock(FILE, &a, 0, 30, 60, false, 1).unwrap();
        assert_eq!(ranges(&table, &a), [(0, 100, false)]);
        // Unlocking the whole file clears it.
        table.unlock(FILE, &a, 0, u64::MAX);
        assert!(table.is_empty());
    }

    #[test]
    fn an_owner_is_its_host_and_handle_whatever_process_calls() {
        // An inherited flock: taken by one process, released by another.
        let a = owner(b"a", 1);
        let mut table = LockTable::default();
        table.lock(FILE, &a, 100, 0, 10, true, 1).unwrap();
        assert!(table.conflict(FILE, &a, 0, 10, true).is_none());
        assert_eq!(table.iter().next().unwrap().svid, 100);
        table.unlock(FILE, &a, 0, u64::MAX);
        assert!(table.is_empty());
    }

    #[test]
    fn sessions_and_free_all_release_only_their_own() {
        let (a, b, c) = (owner(b"a", 1), owner(b"b", 2), owner(b"tcp", 3));
        let mut table = LockTable::default();
        table.lock(FILE, &a, 0, 0, 10, true, 7).unwrap();
        table.lock(FILE, &b, 0, 10, 20, true, 8).unwrap();
        table.lock(FILE, &c, 0, 20, 30, true, NO_SESSION).unwrap();
        table.end_session(7);
        assert!(ranges(&table, &a).is_empty());
        assert_eq!(ranges(&table, &b), [(10, 20, true)]);
        // Ending "no session" releases nothing.
        table.end_session(NO_SESSION);
        assert_eq!(table.len(), 2);
        table.free_all(b"tcp");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn nlm_ranges_and_a_full_table() {
        assert_eq!(range(5, 0), (5, u64::MAX));
        assert_eq!(range(5, 10), (5, 15));
        assert_eq!(range(u64::MAX - 1, 10), (u64::MAX - 1, u64::MAX));
        let mut table = LockTable::default();
        let who = owner(b"many", 1);
        for index in 0..(MAX_LOCKS as u64 - 1) {
            let file = (InodeId(index), Generation(1));
            table.lock(file, &who, 0, 0, 1, true, 1).unwrap();
        }
        assert_eq!(table.len(), MAX_LOCKS - 1);
        let refused = table.lock(FILE, &owner(b"late", 9), 0, u64::MAX - 5, u64::MAX, true, 1);
        assert_eq!(refused, Err(LockRefusal::NoLocks));
    }
}
