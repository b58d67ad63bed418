//! CREATE, MKDIR, SYMLINK and MKNOD: procedures that add a named object to a
//! directory and share one result shape (RFC 1813 sections 3.3.8-3.3.11,
//! <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.8>).

use alloc::vec::Vec;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder};

use crate::attributes::{
    PostOperationAttributes, PostOperationFileHandle, SettableAttributes, WccData,
};
use crate::status::ProcedureResult;
use crate::types::{CreateVerifier, DeviceNumbers, DirectoryOperationArguments, PathCodec};

/// `createhow3`: how CREATE treats an existing name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateHow {
    /// UNCHECKED = 0: create or truncate, no error if it exists.
    Unchecked(SettableAttributes),
    /// GUARDED = 1: fail with `NFS3ERR_EXIST` if it exists.
    Guarded(SettableAttributes),
    /// EXCLUSIVE = 2: idempotent create keyed by the verifier.
    Exclusive(CreateVerifier),
}

impl Encode for CreateHow {
    fn encode(&self, encoder: &mut Encoder) {
        match self {
            CreateHow::Unchecked(attributes) => {
                encoder.u32(0);
                attributes.encode(encoder);
            }
            CreateHow::Guarded(attributes) => {
                encoder.u32(1);
                attributes.encode(encoder);
            }
            CreateHow::Exclusive(verifier) => {
                encoder.u32(2);
                verifier.encode(encoder);
            }
        }
    }
}

impl Decode for CreateHow {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match decoder.u32()? {
            0 => Ok(CreateHow::Unchecked(SettableAttributes::decode(decoder)?)),
            1 => Ok(CreateHow::Guarded(SettableAttributes::decode(decoder)?)),
            2 => Ok(CreateHow::Exclusive(CreateVerifier::decode(decoder)?)),
            value => Err(DecodeError::UnknownDiscriminant {
                type_name: "createmode3",
                value,
            }),
        }
    }
}

xdr::xdr_struct! {
    /// `CREATE3args`.
    pub struct CreateArguments {
        /// `where`.
        pub location: DirectoryOperationArguments,
        /// `how`.
        pub how: CreateHow,
    }
}

xdr::xdr_struct! {
    /// `CREATE3resok`, also `MKDIR3resok`, `SYMLINK3resok`, `MKNOD3resok`.
    pub struct CreatedOk {
        /// `obj`: the new object's handle, if the server returns it.
        pub object: PostOperationFileHandle,
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `dir_wcc`.
        pub directory_wcc: WccData,
    }
}

xdr::xdr_struct! {
    /// The failure body of CREATE, MKDIR, SYMLINK, MKNOD, REMOVE and RMDIR.
    pub struct DirectoryWccFailed {
        /// `dir_wcc`.
        pub directory_wcc: WccData,
    }
}

/// `CREATE3res`, `MKDIR3res`, `SYMLINK3res` and `MKNOD3res`.
pub type CreatedResult = ProcedureResult<CreatedOk, DirectoryWccFailed>;

xdr::xdr_struct! {
    /// `MKDIR3args`.
    pub struct MakeDirectoryArguments {
        /// `where`.
        pub location: DirectoryOperationArguments,
        /// `attributes`.
        pub attributes: SettableAttributes,
    }
}

xdr::xdr_struct! {
    /// `SYMLINK3args` with `symlinkdata3` flattened.
    pub struct SymlinkArguments {
        /// `where`.
        pub location: DirectoryOperationArguments,
        /// `symlink.symlink_attributes`.
        pub attributes: SettableAttributes,
        /// `symlink.symlink_data`: the target path.
        pub target: Vec<u8> as PathCodec,
    }
}

/// `mknoddata3`: what MKNOD creates, by file type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MakeNodeData {
    /// NF3CHR: `devicedata3`.
    CharacterDevice {
        /// `dev_attributes`.
        attributes: SettableAttributes,
        /// `spec`.
        device: DeviceNumbers,
    },
    /// NF3BLK: `devicedata3`.
    BlockDevice {
        /// `dev_attributes`.
        attributes: SettableAttributes,
        /// `spec`.
        device: DeviceNumbers,
    },
    /// NF3SOCK: `pipe_attributes`.
    Socket(SettableAttributes),
    /// NF3FIFO: `pipe_attributes`.
    Fifo(SettableAttributes),
    /// NF3REG, NF3DIR or NF3LNK: void arm; the server answers
    /// `NFS3ERR_BADTYPE`.
    Other(crate::types::FileType),
}

impl Encode for MakeNodeData {
    fn encode(&self, encoder: &mut Encoder) {
        use crate::types::FileType;
        match self {
            MakeNodeData::CharacterDevice { attributes, device } => {
                FileType::CharacterDevice.encode(encoder);
                attributes.encode(encoder);
                device.encode(encoder);
            }
            MakeNodeData::BlockDevice { attributes, device } => {
                FileType::BlockDevice.encode(encoder);
                attributes.encode(encoder);
                device.encode(encoder);
            }
            MakeNodeData::Socket(attributes) => {
                FileType::Socket.encode(encoder);
                attributes.encode(encoder);
            }
            MakeNodeData::Fifo(attributes) => {
                FileType::Fifo.encode(encoder);
                attributes.encode(encoder);
            }
            MakeNodeData::Other(file_type) => file_type.encode(encoder),
        }
    }
}

impl Decode for MakeNodeData {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        use crate::types::FileType;
        Ok(match FileType::decode(decoder)? {
            FileType::CharacterDevice => MakeNodeData::CharacterDevice {
                attributes: SettableAttributes::decode(decoder)?,
                device: DeviceNumbers::decode(decoder)?,
            },
            FileType::BlockDevice => MakeNodeData::BlockDevice {
                attributes: SettableAttributes::decode(decoder)?,
                device: DeviceNumbers::decode(decoder)?,
            },
            FileType::Socket => MakeNodeData::Socket(SettableAttributes::decode(decoder)?),
            FileType::Fifo => MakeNodeData::Fifo(SettableAttributes::decode(decoder)?),
            other @ (FileType::Regular | FileType::Directory | FileType::SymbolicLink) => {
                MakeNodeData::Other(other)
            }
        })
    }
}

xdr::xdr_struct! {
    /// `MKNOD3args`.
    pub struct MakeNodeArguments {
        /// `where`.
        pub location: DirectoryOperationArguments,
        /// `what`.
        pub what: MakeNodeData,
    }
}
