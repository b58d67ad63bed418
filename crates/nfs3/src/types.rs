//! NFSv3 basic data types (RFC 1813 section 2.5,
//! <https://www.rfc-editor.org/rfc/rfc1813#section-2.5>).
//!
//! Design: names, paths and handles are bytes (`Vec<u8>`), never `String`:
//! NFS does not promise UTF-8. The decode bounds below are wire bounds, set
//! generously so that a long name reaches the server and earns
//! `NFS3ERR_NAMETOOLONG` instead of `GARBAGE_ARGS`; the server applies its
//! own, smaller limits (PATHCONF `name_max`, FSINFO `rtmax`/`wtmax`).

use alloc::vec::Vec;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder, VariableOpaque};

/// `NFS3_FHSIZE`: the largest file handle.
pub const MAX_FILE_HANDLE: u32 = 64;
/// `NFS3_COOKIEVERFSIZE`, `NFS3_CREATEVERFSIZE`, `NFS3_WRITEVERFSIZE`.
pub const VERIFIER_SIZE: usize = 8;
/// Decode bound for a `filename3` (RFC 1813 leaves it unbounded).
pub const MAX_FILENAME_WIRE: u32 = 4096;
/// Decode bound for an `nfspath3` (RFC 1813 leaves it unbounded).
pub const MAX_PATH_WIRE: u32 = 4096;
/// Decode bound for READ/WRITE data; the record size limit applies first.
pub const MAX_DATA_WIRE: u32 = 16 * 1024 * 1024;

/// Codec for `filename3` fields held as `Vec<u8>`.
pub type FilenameCodec = VariableOpaque<MAX_FILENAME_WIRE>;
/// Codec for `nfspath3` fields held as `Vec<u8>`.
pub type PathCodec = VariableOpaque<MAX_PATH_WIRE>;
/// Codec for READ/WRITE data held as `Vec<u8>`.
pub type DataCodec = VariableOpaque<MAX_DATA_WIRE>;

/// `cookieverf3`: identifies a READDIR cookie's generation.
pub type CookieVerifier = [u8; VERIFIER_SIZE];
/// `createverf3`: the EXCLUSIVE CREATE token.
pub type CreateVerifier = [u8; VERIFIER_SIZE];
/// `writeverf3`: changes when the server loses uncommitted writes.
pub type WriteVerifier = [u8; VERIFIER_SIZE];

/// `nfs_fh3`: an opaque file handle of at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FileHandle(pub Vec<u8>);

impl Encode for FileHandle {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.variable_opaque(&self.0);
    }
}

impl Decode for FileHandle {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(FileHandle(decoder.variable_opaque_vec(MAX_FILE_HANDLE)?))
    }
}

/// `ftype3`. Unknown values are a decode error: the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// NF3REG = 1.
    Regular,
    /// NF3DIR = 2.
    Directory,
    /// NF3BLK = 3.
    BlockDevice,
    /// NF3CHR = 4.
    CharacterDevice,
    /// NF3LNK = 5.
    SymbolicLink,
    /// NF3SOCK = 6.
    Socket,
    /// NF3FIFO = 7.
    Fifo,
}

impl FileType {
    /// Every file type, in wire order.
    pub const ALL: [FileType; 7] = [
        FileType::Regular,
        FileType::Directory,
        FileType::BlockDevice,
        FileType::CharacterDevice,
        FileType::SymbolicLink,
        FileType::Socket,
        FileType::Fifo,
    ];

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::BlockDevice => 3,
            FileType::CharacterDevice => 4,
            FileType::SymbolicLink => 5,
            FileType::Socket => 6,
            FileType::Fifo => 7,
        }
    }

    /// The type for a wire value.
    ///
    /// # Errors
    /// [`DecodeError::UnknownDiscriminant`] outside 1..=7.
    pub fn from_u32(value: u32) -> Result<Self, DecodeError> {
        value
            .checked_sub(1)
            .and_then(|index| FileType::ALL.get(index as usize).copied())
            .ok_or(DecodeError::UnknownDiscriminant {
                type_name: "ftype3",
                value,
            })
    }
}

impl Encode for FileType {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.to_u32());
    }
}

impl Decode for FileType {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        FileType::from_u32(decoder.u32()?)
    }
}

xdr::xdr_struct! {
    /// `specdata3`: device numbers.
    #[derive(Copy, Default, Hash)]
    pub struct DeviceNumbers {
        /// `specdata1`.
        pub major: u32,
        /// `specdata2`.
        pub minor: u32,
    }
}

xdr::xdr_struct! {
    /// `nfstime3`: seconds and nanoseconds since the epoch.
    #[derive(Copy, Default, Hash, PartialOrd, Ord)]
    pub struct Time {
        /// `seconds`.
        pub seconds: u32,
        /// `nseconds`.
        pub nanoseconds: u32,
    }
}

xdr::xdr_struct! {
    /// `diropargs3`: a name in a directory.
    pub struct DirectoryOperationArguments {
        /// `dir`.
        pub directory: FileHandle,
        /// `name`.
        pub name: Vec<u8> as FilenameCodec,
    }
}

/// `stable_how`: how durable a WRITE must be before the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StableHow {
    /// UNSTABLE = 0: may be cached until COMMIT.
    Unstable,
    /// DATA_SYNC = 1: data durable, metadata may not be.
    DataSync,
    /// FILE_SYNC = 2: data and metadata durable.
    FileSync,
}

impl Encode for StableHow {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(match self {
            StableHow::Unstable => 0,
            StableHow::DataSync => 1,
            StableHow::FileSync => 2,
        });
    }
}

impl Decode for StableHow {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match decoder.u32()? {
            0 => Ok(StableHow::Unstable),
            1 => Ok(StableHow::DataSync),
            2 => Ok(StableHow::FileSync),
            value => Err(DecodeError::UnknownDiscriminant {
                type_name: "stable_how",
                value,
            }),
        }
    }
}
