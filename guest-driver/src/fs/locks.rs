//! `fcntl` and `flock` locks that exclude processes on every mount of the
//! export: FUSE's getlk/setlk become NLM v4 calls to the server
//! (`docs/guest-driver.md`, "Locks").
//!
//! Design: the kernel names a lock's owner (`lock_owner`: the process's
//! file table for `fcntl`, the open file for `flock`); that number is the
//! NLM owner handle, the process id its `svid`, and the mount's own
//! `caller_name` (see `NfsClient::lock_client_name`) its host. A waiting
//! lock (`F_SETLKW`, `flock` without `LOCK_NB`) is retried by a thread of
//! its own, from 1 ms doubling to 50 ms between tries, until granted or
//! the waiting process is gone: the server queues nothing and calls
//! nobody back. The kernel does not send an unlock when a process closes
//! a file; it sends FLUSH (or, for `flock` and for files opened without
//! flush, RELEASE), and the owner's locks on the file go then. The mount
//! remembers which owners hold locks on which files, so a close costs no
//! call unless a lock was taken.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use fuser::{Errno, ReplyEmpty, ReplyLock};
use nfs3::nlm::{self, NlmStatus, TestReply};

use super::{lock, NfsFilesystem};
use crate::client::{Caller, NfsClient};
use crate::errno;

/// The kernel's "to the end of the file" (`OFFSET_MAX`).
const OFFSET_MAX: u64 = i64::MAX as u64;

/// Longest pause between two tries of a waiting lock.
const RETRY_MAX: Duration = Duration::from_millis(50);

/// Which owners hold locks taken through this mount, per node, and
/// through which open files.
#[derive(Debug, Default)]
pub(super) struct HeldLocks {
    owners: Mutex<HashMap<u64, HashSet<u64>>>,
    files: Mutex<HashMap<u64, HashSet<u64>>>,
}

impl HeldLocks {
    fn note(&self, node: u64, file: u64, owner: u64) {
        lock(&self.owners).entry(node).or_default().insert(owner);
        lock(&self.files).entry(file).or_default().insert(owner);
    }

    /// The owners that took locks through open file `file`; forgets them.
    fn owners_of_file(&self, file: u64) -> HashSet<u64> {
        lock(&self.files).remove(&file).unwrap_or_default()
    }

    /// Whether `owner` may hold locks on `node`; forgets it.
    fn take(&self, node: u64, owner: u64) -> bool {
        let mut owners = lock(&self.owners);
        let Some(held) = owners.get_mut(&node) else {
            return false;
        };
        let found = held.remove(&owner);
        if held.is_empty() {
            owners.remove(&node);
        }
        found
    }

    /// Whether any lock was taken through this mount.
    pub fn any(&self) -> bool {
        !lock(&self.owners).is_empty()
    }
}

/// NLM's `(l_offset, l_len)` of FUSE's inclusive `[start, end]`.
fn nlm_range(start: u64, end: u64) -> (u64, u64) {
    if end >= OFFSET_MAX {
        (start, 0)
    } else {
        (start, end.saturating_sub(start).saturating_add(1))
    }
}

/// FUSE's inclusive `[start, end]` of NLM's `(l_offset, l_len)`.
fn fuse_range(offset: u64, length: u64) -> (u64, u64) {
    if length == 0 {
        (offset, OFFSET_MAX)
    } else {
        (offset, offset.saturating_add(length - 1).min(OFFSET_MAX))
    }
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// One LOCK; `Ok(false)`: another owner holds a conflicting lock.
fn try_lock(client: &NfsClient, request: &Request) -> Result<bool, Errno> {
    let result = client.lock_call(
        &request.caller,
        nlm::Arguments::Lock(nlm::LockArguments {
            cookie: Vec::new(),
            block: false,
            exclusive: request.exclusive,
            lock: request.lock.clone(),
            reclaim: false,
            state: 0,
        }),
    );
    match result {
        Ok(nlm::Results::Lock(result)) => match result.status {
            NlmStatus::Granted => Ok(true),
            NlmStatus::Denied | NlmStatus::Blocked => Ok(false),
            other => Err(status_errno(other)),
        },
        Ok(_) => Err(Errno::EIO),
        Err(error) => Err(errno::from_client(&error)),
    }
}

/// Retries `request` until granted, or until the process `pid` that waits
/// for it is gone.
fn wait_for_lock(client: &NfsClient, request: &Request, pid: u32, reply: ReplyEmpty) {
    let mut pause = Duration::from_millis(1);
    loop {
        thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
        if !alive(pid) {
            return reply.error(Errno::EINTR);
        }
        match try_lock(client, request) {
            Ok(true) => return reply.ok(),
            Ok(false) => {}
            Err(error) => return reply.error(error),
        }
    }
}

/// A lock request, as the server gets it.
#[derive(Debug, Clone)]
struct Request {
    caller: Caller,
    lock: nlm::Lock,
    exclusive: bool,
}

impl NfsFilesystem {
    fn nlm_lock(
        &self,
        node: u64,
        owner: u64,
        pid: u32,
        start: u64,
        end: u64,
    ) -> Result<nlm::Lock, Errno> {
        let handle = self.handle_of(fuser::INodeNo(node))?;
        let (offset, length) = nlm_range(start, end);
        Ok(nlm::Lock {
            caller_name: self.client.lock_client_name(),
            handle: handle.0,
            owner: owner.to_be_bytes().to_vec(),
            svid: pid as i32,
            offset,
            length,
        })
    }

    fn unlock(&self, caller: &Caller, lock: nlm::Lock) -> Result<(), Errno> {
        match self.client.lock_call(
            caller,
            nlm::Arguments::Unlock(nlm::UnlockArguments {
                cookie: Vec::new(),
                lock,
            }),
        ) {
            Ok(nlm::Results::Unlock(result)) => match result.status {
                NlmStatus::Granted => Ok(()),
                other => Err(status_errno(other)),
            },
            Ok(_) => Err(Errno::EIO),
            Err(error) => Err(errno::from_client(&error)),
        }
    }

    /// getlk: the first conflicting lock, or `F_UNLCK`.
    #[allow(clippy::too_many_arguments)] // As FUSE sends them.
    pub(super) fn do_getlk(
        &self,
        caller: &Caller,
        node: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let lock = match self.nlm_lock(node, owner, pid, start, end) {
            Ok(lock) => lock,
            Err(error) => return reply.error(error),
        };
        let result = self.client.lock_call(
            caller,
            nlm::Arguments::Test(nlm::TestArguments {
                cookie: Vec::new(),
                exclusive: kind == libc::F_WRLCK,
                lock,
            }),
        );
        match result {
            Ok(nlm::Results::Test(result)) => match result.reply {
                TestReply::Status(NlmStatus::Granted) => reply.locked(start, end, libc::F_UNLCK, 0),
                TestReply::Denied(holder) => {
                    let (start, end) = fuse_range(holder.offset, holder.length);
                    let kind = if holder.exclusive {
                        libc::F_WRLCK
                    } else {
                        libc::F_RDLCK
                    };
                    reply.locked(start, end, kind, holder.svid.max(0) as u32);
                }
                TestReply::Status(other) => reply.error(status_errno(other)),
            },
            Ok(_) => reply.error(Errno::EIO),
            Err(error) => reply.error(errno::from_client(&error)),
        }
    }

    /// setlk: take, change or release a lock; a waiting one is retried on
    /// a thread of its own until granted.
    #[allow(clippy::too_many_arguments)] // As FUSE sends them.
    pub(super) fn do_setlk(
        &self,
        caller: &Caller,
        node: u64,
        file: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let lock = match self.nlm_lock(node, owner, pid, start, end) {
            Ok(lock) => lock,
            Err(error) => return reply.error(error),
        };
        if kind == libc::F_UNLCK {
            return match self.unlock(caller, lock) {
                Ok(()) => reply.ok(),
                Err(error) => reply.error(error),
            };
        }
        let request = Request {
            caller: caller.clone(),
            lock,
            exclusive: kind == libc::F_WRLCK,
        };
        // Noted before the call: a lock granted to a process interrupted
        // meanwhile is still released by its close.
        self.locks.note(node, file, owner);
        match try_lock(&self.client, &request) {
            Ok(true) => reply.ok(),
            Ok(false) if !sleep => reply.error(Errno::EAGAIN),
            Ok(false) => {
                // Waited for on a thread of its own: FUSE's workers stay
                // free for every other request.
                let client = Arc::clone(&self.client);
                let spawned = thread::Builder::new()
                    .name("lock-wait".into())
                    .spawn(move || wait_for_lock(&client, &request, pid, reply));
                if let Err(error) = spawned {
                    log::warn!("no thread to wait for a lock: {error}");
                }
            }
            Err(error) => reply.error(error),
        }
    }

    /// A close (FLUSH, or RELEASE of a file opened without flush, or the
    /// end of a `flock`): every lock `owner` holds on `node` goes.
    /// `caller` is asked for only then: a close that took no lock costs
    /// nothing here.
    pub(super) fn release_locks(&self, node: u64, owner: u64, caller: impl Fn() -> Caller) {
        if !self.locks.take(node, owner) {
            return;
        }
        match self.nlm_lock(node, owner, 0, 0, OFFSET_MAX) {
            Ok(lock) => {
                if let Err(error) = self.unlock(&caller(), lock) {
                    log::warn!("releasing the locks of a closed file failed: {error:?}");
                }
            }
            Err(error) => log::warn!("releasing the locks of a closed file: {error:?}"),
        }
    }

    /// The open file `file` of `node` is released: the locks taken through
    /// it go (for files whose close sends no FLUSH, and `flock`s).
    pub(super) fn release_file_locks(&self, node: u64, file: u64, caller: impl Fn() -> Caller) {
        for owner in self.locks.owners_of_file(file) {
            self.release_locks(node, owner, &caller);
        }
    }

    /// At unmount: every lock of this mount goes (FREE_ALL).
    pub(super) fn free_all_locks(&self) {
        if !self.locks.any() {
            return;
        }
        let result = self.client.lock_call(
            &Caller::root(),
            nlm::Arguments::FreeAll(nlm::Notify {
                name: self.client.lock_client_name(),
                state: 0,
            }),
        );
        if let Err(error) = result {
            log::warn!("releasing this mount's locks at unmount failed: {error}");
        }
    }
}

/// The errno of an NLM status other than GRANTED and DENIED.
fn status_errno(status: NlmStatus) -> Errno {
    match status {
        // Not an error; never asked.
        NlmStatus::Granted => Errno::EIO,
        NlmStatus::Denied | NlmStatus::Blocked => Errno::EAGAIN,
        NlmStatus::DeniedNoLocks => Errno::ENOLCK,
        NlmStatus::Deadlock => Errno::EDEADLK,
        NlmStatus::ReadOnlyFileSystem => Errno::EROFS,
        NlmStatus::StaleHandle => Errno::ESTALE,
        NlmStatus::TooBig => Errno::EOVERFLOW,
        NlmStatus::DeniedGracePeriod | NlmStatus::Failed => Errno::ENOLCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_convert_between_fuse_and_nlm() {
        assert_eq!(nlm_range(0, OFFSET_MAX), (0, 0));
        assert_eq!(nlm_range(10, 19), (10, 10));
        assert_eq!(nlm_range(5, 5), (5, 1));
        assert_eq!(fuse_range(10, 10), (10, 19));
        assert_eq!(fuse_range(7, 0), (7, OFFSET_MAX));
        for (start, end) in [(0, 0), (3, 4096), (1 << 40, OFFSET_MAX)] {
            let (offset, length) = nlm_range(start, end);
            assert_eq!(fuse_range(offset, length), (start, end));
        }
    }

    #[test]
    fn held_locks_remember_owners_per_node() {
        let held = HeldLocks::default();
        assert!(!held.any());
        held.note(3, 9, 100);
        held.note(3, 9, 101);
        assert!(held.any());
        assert!(held.take(3, 100));
        assert!(!held.take(3, 100), "taken once");
        assert!(!held.take(4, 101));
        assert!(held.take(3, 101));
        assert!(!held.any());
        assert_eq!(held.owners_of_file(9).len(), 2);
        assert!(held.owners_of_file(9).is_empty());
        assert!(alive(std::process::id()));
    }
}
