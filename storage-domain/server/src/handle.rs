//! NFS file handles: opaque to clients, checked on every call.
//!
//! Layout (40 bytes, big-endian):
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
//! Design: the MAC means a client cannot make a handle the server did not
//! hand out (no inode guessing, no escape from an export by editing the
//! export id); the generation means a handle to a removed and reused inode
//! is stale, never another file. The export id is a hash of the name rather
//! than an index so reordering the export table does not change what old
//! handles mean. The secret lives in the volume, so handles survive
//! restarts.

use core::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};
use vfs::{Generation, InodeId};

/// Bytes in a handle.
pub const HANDLE_SIZE: usize = 40;
const VERSION: u8 = 1;
const MAC_OFFSET: usize = 24;

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

    /// What `bytes` names, if this key made it.
    ///
    /// # Errors
    /// [`HandleError::Malformed`] for anything this key did not make.
    pub fn open(&self, bytes: &[u8]) -> Result<HandleContents, HandleError> {
        let handle: &[u8; HANDLE_SIZE] = bytes.try_into().map_err(|_| HandleError::Malformed)?;
        if handle[0] != VERSION || handle[1..4] != [0, 0, 0] {
            return Err(HandleError::Malformed);
        }
        let expected = self.mac(&handle[..MAC_OFFSET]);
        // Compare every byte whatever the first difference: no timing hint
        // about how much of a forged MAC was right.
        let difference = expected
            .iter()
            .zip(&handle[MAC_OFFSET..])
            .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
        if difference != 0 {
            return Err(HandleError::Malformed);
        }
        let word = |range: core::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&handle[range]);
            u64::from_be_bytes(bytes)
        };
        let mut export = [0u8; 4];
        export.copy_from_slice(&handle[4..8]);
        Ok(HandleContents {
            export: ExportId(u32::from_be_bytes(export)),
            inode: InodeId(word(8..16)),
            generation: Generation(word(16..24)),
        })
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
        assert_eq!(key.open(&handle), Ok(contents()));
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
