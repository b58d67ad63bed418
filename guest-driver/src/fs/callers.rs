//! The caller of each FUSE request, with its supplementary groups read from
//! `/proc/<pid>/status` at most once a second per process and identity.
//!
//! Design: generating `/proc/<pid>/status` costs the kernel tens of
//! microseconds (more than a whole metadata-table GETATTR), and a process's
//! groups rarely change. Entries are keyed by (pid, uid, gid), so a process
//! that switches identity (setuid/setgid, as daemons and pjdfstest do) is
//! looked up afresh; a `setgroups` that keeps uid and gid is seen within
//! [`GROUP_LIFETIME`]. The kernel still checks permissions with the live
//! groups before any request (default_permissions); the server's own
//! group-dependent decisions (chown to a group, setgid inheritance) use
//! these.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::attributes::caller;
use super::lock;
use crate::client::Caller;

/// How long a process's groups are reused.
pub const GROUP_LIFETIME: Duration = Duration::from_secs(1);
/// Entries kept before old ones are dropped.
const CAPACITY: usize = 4096;

/// A process and the identity it called with: `(pid, uid, gid)`.
type CallerKey = (u32, u32, u32);

/// When a caller's groups were read, and what they were.
type SeenGroups = (Instant, Vec<u32>);

/// Recently seen callers.
#[derive(Debug)]
pub struct CallerCache {
    lifetime: Duration,
    entries: Mutex<HashMap<CallerKey, SeenGroups>>,
}

impl CallerCache {
    /// A cache keeping groups for `lifetime`.
    pub fn new(lifetime: Duration) -> CallerCache {
        CallerCache {
            lifetime,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The caller with file-system ids `uid`/`gid` in process `pid`.
    pub fn caller(&self, uid: u32, gid: u32, pid: u32) -> Caller {
        if pid == 0 {
            return caller(uid, gid, pid);
        }
        let key = (pid, uid, gid);
        let now = Instant::now();
        if let Some((seen, groups)) = lock(&self.entries).get(&key) {
            if now.duration_since(*seen) < self.lifetime {
                return Caller {
                    uid,
                    gid,
                    groups: groups.clone(),
                };
            }
        }
        let fresh = caller(uid, gid, pid);
        let mut entries = lock(&self.entries);
        if entries.len() >= CAPACITY {
            let lifetime = self.lifetime;
            entries.retain(|_, (seen, _)| now.duration_since(*seen) < lifetime);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (now, fresh.groups.clone()));
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_groups() -> Vec<u32> {
        caller(0, 0, std::process::id()).groups
    }

    #[test]
    fn groups_are_reused_within_the_lifetime_and_keyed_by_identity() {
        let cache = CallerCache::new(Duration::from_secs(3600));
        let pid = std::process::id();
        let first = cache.caller(5, 6, pid);
        assert_eq!((first.uid, first.gid), (5, 6));
        assert_eq!(first.groups, my_groups());
        // A planted entry is what a later call within the lifetime sees.
        lock(&cache.entries).insert((pid, 5, 6), (Instant::now(), vec![77]));
        assert_eq!(cache.caller(5, 6, pid).groups, vec![77]);
        // Another identity in the same process is read afresh.
        assert_eq!(cache.caller(5, 7, pid).groups, my_groups());
        // The kernel's own requests carry no groups.
        assert!(cache.caller(0, 0, 0).groups.is_empty());
    }

    #[test]
    fn expired_groups_are_read_again() {
        let cache = CallerCache::new(Duration::ZERO);
        let pid = std::process::id();
        lock(&cache.entries).insert((pid, 1, 1), (Instant::now(), vec![77]));
        assert_eq!(cache.caller(1, 1, pid).groups, my_groups());
    }
}
