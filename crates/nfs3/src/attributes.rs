//! File attributes: `fattr3`, the weak cache consistency types and `sattr3`
//! (RFC 1813 section 2.6, <https://www.rfc-editor.org/rfc/rfc1813#section-2.6>).
//!
//! Design: the RFC's `discriminated union { TRUE: T; FALSE: void }` types
//! (`post_op_attr`, `pre_op_attr`, `set_mode3`, ...) are exactly XDR optional
//! data on the wire, so they are `Option<T>` here; only `set_atime` /
//! `set_mtime`, which have three arms, get their own enum.

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder};

use crate::types::{DeviceNumbers, FileHandle, FileType, Time};

/// Encoded size of a [`FileAttributes`] in bytes.
pub const FILE_ATTRIBUTES_SIZE: usize = 84;

xdr::xdr_struct! {
    /// `fattr3`: the attributes of a file.
    pub struct FileAttributes {
        /// `type`.
        pub file_type: FileType,
        /// `mode`: permission and set-id bits (not the type).
        pub mode: u32,
        /// `nlink`.
        pub link_count: u32,
        /// `uid`.
        pub uid: u32,
        /// `gid`.
        pub gid: u32,
        /// `size` in bytes.
        pub size: u64,
        /// `used`: bytes of disk space used.
        pub used: u64,
        /// `rdev`: device numbers for device files.
        pub device: DeviceNumbers,
        /// `fsid`.
        pub file_system_id: u64,
        /// `fileid`: the inode number.
        pub file_id: u64,
        /// `atime`.
        pub access_time: Time,
        /// `mtime`.
        pub modify_time: Time,
        /// `ctime`.
        pub change_time: Time,
    }
}

xdr::xdr_struct! {
    /// `wcc_attr`: the attributes a client compares before an update.
    pub struct WccAttributes {
        /// `size`.
        pub size: u64,
        /// `mtime`.
        pub modify_time: Time,
        /// `ctime`.
        pub change_time: Time,
    }
}

/// `pre_op_attr`.
pub type PreOperationAttributes = Option<WccAttributes>;
/// `post_op_attr`.
pub type PostOperationAttributes = Option<FileAttributes>;
/// `post_op_fh3`.
pub type PostOperationFileHandle = Option<FileHandle>;

xdr::xdr_struct! {
    /// `wcc_data`: attributes before and after an update.
    #[derive(Default)]
    pub struct WccData {
        /// `before`.
        pub before: PreOperationAttributes,
        /// `after`.
        pub after: PostOperationAttributes,
    }
}

/// `set_atime` / `set_mtime` (`time_how`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetTime {
    /// DONT_CHANGE = 0.
    #[default]
    DontChange,
    /// SET_TO_SERVER_TIME = 1.
    ServerTime,
    /// SET_TO_CLIENT_TIME = 2.
    ClientTime(Time),
}

impl Encode for SetTime {
    fn encode(&self, encoder: &mut Encoder) {
        match self {
            SetTime::DontChange => encoder.u32(0),
            SetTime::ServerTime => encoder.u32(1),
            SetTime::ClientTime(time) => {
                encoder.u32(2);
                time.encode(encoder);
            }
        }
    }
}

impl Decode for SetTime {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match decoder.u32()? {
            0 => Ok(SetTime::DontChange),
            1 => Ok(SetTime::ServerTime),
            2 => Ok(SetTime::ClientTime(Time::decode(decoder)?)),
            value => Err(DecodeError::UnknownDiscriminant {
                type_name: "time_how",
                value,
            }),
        }
    }
}

xdr::xdr_struct! {
    /// `sattr3`: attributes a client asks to set; `None` leaves one alone.
    #[derive(Default)]
    pub struct SettableAttributes {
        /// `set_mode3`.
        pub mode: Option<u32>,
        /// `set_uid3`.
        pub uid: Option<u32>,
        /// `set_gid3`.
        pub gid: Option<u32>,
        /// `set_size3`.
        pub size: Option<u64>,
        /// `set_atime`.
        pub access_time: SetTime,
        /// `set_mtime`.
        pub modify_time: SetTime,
    }
}
