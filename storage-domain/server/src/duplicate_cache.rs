//! The duplicate request cache for non-idempotent procedures.
//!
//! Design: a client that loses a reply retransmits the call with the same
//! xid. Running a REMOVE, RENAME, CREATE (GUARDED or EXCLUSIVE), MKDIR,
//! SYMLINK, MKNOD, LINK, RMDIR, SETATTR or WRITE twice would answer the
//! retransmission with a spurious error (NOENT, EXIST) or apply it twice, so
//! their replies are kept and replayed. An entry is keyed by the client, the
//! xid and a digest of the call after the xid (its length and first
//! kilobyte), so an unrelated call that reuses an xid (another process, a
//! rebooted client) is not answered with someone else's reply. Capacity is fixed; the oldest entry goes first
//! (a retransmission arrives within seconds; thousands of newer calls in
//! between mean the client has long given up).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::config::ClientAddress;

/// Entries kept.
pub const CAPACITY: usize = 1024;

/// Bytes of a call (after its xid) that enter its digest.
const DIGESTED_BYTES: usize = 1024;

/// What identifies a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallKey {
    client: ClientKey,
    xid: u32,
    digest: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ClientKey {
    V4(u32),
    V6(u128),
    Local(u64),
    Domain(u32),
}

impl CallKey {
    /// The key of `record` (a whole RPC call) from `client`.
    pub fn new(client: &ClientAddress, record: &[u8]) -> Self {
        let client = match client {
            ClientAddress::Ip(core::net::IpAddr::V4(address)) => ClientKey::V4(u32::from(*address)),
            ClientAddress::Ip(core::net::IpAddr::V6(address)) => {
                ClientKey::V6(u128::from(*address))
            }
            ClientAddress::Local(peer) => ClientKey::Local(peer.connection),
            ClientAddress::Domain(domain) => ClientKey::Domain(*domain),
        };
        let xid = xdr::rpc::peek_xid(record).unwrap_or(0);
        // FNV-1a over the record's length and its first bytes after the
        // xid: the header, credential, handles, names, offsets and counts
        // all come first; hashing a 1 MiB WRITE's data whole would cost a
        // millisecond per call and tell nothing the rest does not.
        let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
        let body = record.get(4..).unwrap_or_default();
        let length = (body.len() as u64).to_be_bytes();
        for &byte in length.iter().chain(body.iter().take(DIGESTED_BYTES)) {
            digest ^= u64::from(byte);
            digest = digest.wrapping_mul(0x0000_0100_0000_01b3);
        }
        CallKey {
            client,
            xid,
            digest,
        }
    }
}

/// A reply kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// The reply record.
    pub bytes: Vec<u8>,
    /// The file-system sequence the reply's effects need durable.
    pub sequence: Option<u64>,
}

/// The cache itself.
#[derive(Debug, Default)]
pub struct DuplicateCache {
    entries: BTreeMap<CallKey, CachedReply>,
    order: VecDeque<CallKey>,
    hits: u64,
}

impl DuplicateCache {
    /// The reply kept for `key`, if any.
    pub fn get(&mut self, key: &CallKey) -> Option<CachedReply> {
        let found = self.entries.get(key).cloned();
        if found.is_some() {
            self.hits += 1;
        }
        found
    }

    /// Keep `reply` for `key`, dropping the oldest entry when full.
    pub fn insert(&mut self, key: CallKey, reply: CachedReply) {
        if self.entries.insert(key, reply).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Replies served from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_client_xid_and_body() {
        let one = ClientAddress::Ip("10.0.0.1".parse().unwrap());
        let two = ClientAddress::Ip("10.0.0.2".parse().unwrap());
        let call = [0, 0, 0, 7, 0, 0, 0, 0, 1, 2, 3];
        let mut other_body = call;
        other_body[10] = 4;
        let mut other_xid = call;
        other_xid[3] = 8;
        assert_eq!(CallKey::new(&one, &call), CallKey::new(&one, &call));
        assert_ne!(CallKey::new(&one, &call), CallKey::new(&two, &call));
        // Two hosted connections number their xids independently.
        assert_ne!(
            CallKey::new(
                &ClientAddress::Local(crate::LocalPeer {
                    connection: 1,
                    uid: 0,
                    gid: 0
                }),
                &call
            ),
            CallKey::new(
                &ClientAddress::Local(crate::LocalPeer {
                    connection: 2,
                    uid: 0,
                    gid: 0
                }),
                &call
            )
        );
        assert_ne!(CallKey::new(&one, &call), CallKey::new(&one, &other_body));
        assert_ne!(CallKey::new(&one, &call), CallKey::new(&one, &other_xid));
    }

    #[test]
    fn bounded_oldest_first() {
        let mut cache = DuplicateCache::default();
        let client = ClientAddress::Local(crate::LocalPeer {
            connection: 1,
            uid: 0,
            gid: 0,
        });
        let key = |index: u32| CallKey::new(&client, &index.to_be_bytes());
        for index in 0..(CAPACITY as u32 + 10) {
            cache.insert(
                key(index),
                CachedReply {
                    bytes: index.to_be_bytes().to_vec(),
                    sequence: None,
                },
            );
        }
        assert!(cache.get(&key(0)).is_none());
        assert!(cache.get(&key(9)).is_none());
        assert_eq!(cache.get(&key(10)).unwrap().bytes, 10u32.to_be_bytes());
        assert_eq!(cache.hits(), 1);
    }
}
