//! NFS file handles: opaque to clients, checked on every call.
//!
//! Two layouts, big-endian. Objects of the live file system (40 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version, 1 |
//! | 1 | 3 | zero |
//! | 4 | 4 | export id ([`ExportId`], a hash of the export's name) |
//! | 8 | 8 | inode number |
//! | 16 | 8 | inode generation |
//! | 24 | 16 | SipHash-2-4-128 of bytes 0..24, keyed by the volume's handle secret |
//!
//! Objects under an export's `.snapshots` directory (48 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version, 2 |
//! | 1 | 3 | zero |
//! | 4 | 4 | export id |
//! | 8 | 8 | snapshot id (the commit it preserves); 0 = the `.snapshots` directory itself |
//! | 16 | 8 | inode number in that snapshot (0 for the directory) |
//! | 24 | 8 | inode generation in that snapshot (0 for the directory) |
//! | 32 | 16 | SipHash-2-4-128 of bytes 0..32, keyed by the volume's handle secret |
//!
//! Design: the MAC means a client cannot make a handle the server did not
//! hand out (no inode guessing, no escape from an export by editing the
//! export id); the generation means a handle to a removed and reused inode
//! is stale, never another file. The export id is a hash of the name rather
//! than an index so reordering the export table does not change what old
//! handles mean. The secret lives in the volume, so handles survive
//! restarts. A snapshot's inode numbers repeat live ones, so its handles
//! carry the snapshot id and another version and length: no handle of a
//! snapshot object can name a live one, nor one of another snapshot (ids
//! are never reused); once the snapshot is deleted its handles are stale.

use core::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};
use vfs::{Generation, InodeId};

/// Bytes in a handle of a live object.
pub const HANDLE_SIZE: usize = 40;
/// Bytes in a handle of a snapshot object (or the `.snapshots` directory).
pub const SNAPSHOT_HANDLE_SIZE: usize = 48;
/// The longest handle this server makes.
pub const MAX_HANDLE_SIZE: usize = SNAPSHOT_HANDLE_SIZE;
const VERSION: u8 = 1;
const SNAPSHOT_VERSION: u8 = 2;
const MAC_OFFSET: usize = 24;
const SNAPSHOT_MAC_OFFSET: usize = 32;

/// Which tree a handle's inode belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// The live file system.
    Live,
    /// The `.snapshots` directory of an export (no inode of its own).
    SnapshotDirectory,
    /// The snapshot with this id (never 0).
    Snapshot(u64),
}

/// Identifies an export inside handles: FNV-1a of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportId(pub u32);

impl ExportId {
    /// The id of the export named `name`.
    pub fn of_name(name: &str) -> Self {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in name.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        ExportId(hash)
    }
}

/// What a valid handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleContents {
    /// The export it was issued under.
    pub export: ExportId,
    /// The inode.
    pub inode: InodeId,
    /// The inode's generation when the handle was issued.
    pub generation: Generation,
}

/// Why a handle was refused before the file system was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Wrong length or version, or a MAC that does not match: not a handle
    /// this server made (NFS3ERR_BADHANDLE).
    Malformed,
}

/// Makes and checks handles with one secret.
#[derive(Clone)]
pub struct HandleKey {
    key: [u8; 16],
    salt: [u8; 16],
}

impl core::fmt::Debug for HandleKey {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str("HandleKey(..)")
    }
}

impl HandleKey {
    /// A key from the volume's 32-byte handle secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        // SipHash takes a 128-bit key; the other half of the secret is
        // hashed ahead of every handle, so all 256 bits matter.
        let mut key = [0; 16];
        let mut salt = [0; 16];
        key.copy_from_slice(&secret[..16]);
        salt.copy_from_slice(&secret[16..]);
        HandleKey { key, salt }
    }

    fn mac(&self, body: &[u8]) -> [u8; 16] {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(&self.salt);
        hasher.write(body);
        hasher.finish128().as_bytes()
    }

    /// The handle for `contents`.
    pub fn make(&self, contents: &HandleContents) -> [u8; HANDLE_SIZE] {
        let mut handle = [0u8; HANDLE_SIZE];
        handle[0] = VERSION;
        handle[4..8].copy_from_slice(&contents.export.0.to_be_bytes());
        handle[8..16].copy_from_slice(&contents.inode.0.to_be_bytes());
        handle[16..24].copy_from_slice(&contents.generation.0.to_be_bytes());
        let mac = self.mac(&handle[..MAC_OFFSET]);
        handle[MAC_OFFSET..].copy_from_slice(&mac);
        handle
    }

    /// A handle of `contents` in `tree`: [`HandleKey::make`]'s bytes for
    /// [`Tree::Live`], the 48-byte layout otherwise.
    pub fn make_in(&self, tree: Tree, contents: &HandleContents) -> alloc::vec::Vec<u8> {
        let snapshot = match tree {
            Tree::Live => return self.make(contents).to_vec(),
            Tree::SnapshotDirectory => 0,
            Tree::Snapshot(id) => id,
        };
        let mut handle = [0u8; SNAPSHOT_HANDLE_SIZE];
        handle[0] = SNAPSHOT_VERSION;
        handle[4..8].copy_from_slice(&contents.export.0.to_be_bytes());
        handle[8..16].copy_from_slice(&snapshot.to_be_bytes());
        handle[16..24].copy_from_slice(&contents.inode.0.to_be_bytes());
        handle[24..32].copy_from_slice(&contents.generation.0.to_be_bytes());
        let mac = self.mac(&handle[..SNAPSHOT_MAC_OFFSET]);
        handle[SNAPSHOT_MAC_OFFSET..].copy_from_slice(&mac);
        handle.to_vec()
    }

    /// What `bytes` names, and in which tree, if this key made it.
    ///
    /// # Errors
    /// [`HandleError::Malformed`] for anything this key did not make.
    pub fn open(&self, bytes: &[u8]) -> Result<(Tree, HandleContents), HandleError> {
        let (mac_offset, version) = match bytes.len() {
            HANDLE_SIZE => (MAC_OFFSET, VERSION),
            SNAPSHOT_HANDLE_SIZE => (SNAPSHOT_MAC_OFFSET, SNAPSHOT_VERSION),
            _ => return Err(HandleError::Malformed),
        };
        if bytes[0] != version || bytes[1..4] != [0, 0, 0] {
            return Err(HandleError::Malformed);
        }
        let expected = self.mac(&bytes[..mac_offset]);
        // Compare every byte whatever the first difference: no timing hint
        // about how much of a forged MAC was right.
        let difference = expected
            .iter()
            .zip(&bytes[mac_offset..])
            .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
        if difference != 0 {
            return Err(HandleError::Malformed);
        }
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut export = [0u8; 4];
        export.copy_from_slice(&bytes[4..8]);
        let export = ExportId(u32::from_be_bytes(export));
        let (tree, inode_at) = if version == VERSION {
            (Tree::Live, 8)
        } else {
            match word(8) {
                0 => (Tree::SnapshotDirectory, 16),
                id => (Tree::Snapshot(id), 16),
            }
        };
        Ok((
            tree,
            HandleContents {
                export,
                inode: InodeId(word(inode_at)),
                generation: Generation(word(inode_at + 8)),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> HandleContents {
        HandleContents {
            export: ExportId::of_name("/"),
            inode: InodeId(42),
            generation: Generation(7),
        }
    }

    #[test]
    fn round_trip() {
        let key = HandleKey::new(&[9; 32]);
        let handle = key.make(&contents());
        assert_eq!(key.open(&handle), Ok((Tree::Live, contents())));
        assert_eq!(key.make_in(Tree::Live, &contents()), handle.to_vec());
        for tree in [
            Tree::SnapshotDirectory,
            Tree::Snapshot(5),
            Tree::Snapshot(u64::MAX),
        ] {
            let handle = key.make_in(tree, &contents());
            assert_eq!(handle.len(), SNAPSHOT_HANDLE_SIZE);
            assert_eq!(key.open(&handle), Ok((tree, contents())));
        }
    }

    #[test]
    fn snapshot_handles_never_alias_live_ones_or_each_other() {
        let key = HandleKey::new(&[4; 32]);
        let live = key.make(&contents()).to_vec();
        let first = key.make_in(Tree::Snapshot(1), &contents());
        let second = key.make_in(Tree::Snapshot(2), &contents());
        let directory = key.make_in(Tree::SnapshotDirectory, &contents());
        let all = [&live, &first, &second, &directory];
        for (index, handle) in all.iter().enumerate() {
            for other in &all[index + 1..] {
                assert_ne!(handle, other);
            }
        }
        // A snapshot handle cut to the live length, or a live one padded,
        // is refused: the version and the MAC cover the layout.
        assert!(key.open(&first[..HANDLE_SIZE]).is_err());
        let mut padded = live.clone();
        padded.resize(SNAPSHOT_HANDLE_SIZE, 0);
        assert!(key.open(&padded).is_err());
        for bit in 0..SNAPSHOT_HANDLE_SIZE * 8 {
            let mut forged = first.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(key.open(&forged), Err(HandleError::Malformed), "bit {bit}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let key = HandleKey::new(&[3; 32]);
        let handle = key.make(&contents());
        for bit in 0..HANDLE_SIZE * 8 {
            let mut forged = handle;
            forged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(key.open(&forged), Err(HandleError::Malformed), "bit {bit}");
        }
    }

    #[test]
    fn another_key_and_other_lengths_are_refused() {
        let handle = HandleKey::new(&[1; 32]).make(&contents());
        assert!(HandleKey::new(&[2; 32]).open(&handle).is_err());
        let key = HandleKey::new(&[1; 32]);
        assert!(key.open(&handle[..39]).is_err());
        assert!(key.open(&[0u8; SNAPSHOT_HANDLE_SIZE]).is_err());
        assert!(key.open(&[]).is_err());
        let mut longer = handle.to_vec();
        longer.push(0);
        assert!(key.open(&longer).is_err());
    }

    #[test]
    fn export_ids_differ_by_name() {
        assert_ne!(ExportId::of_name("/"), ExportId::of_name("/data"));
        assert_eq!(ExportId::of_name("/data"), ExportId::of_name("/data"));
    }
}
