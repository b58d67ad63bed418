//! GETATTR, SETATTR, LOOKUP, ACCESS and READLINK: procedures that read or
//! change one object's attributes or resolve a name (RFC 1813 sections
//! 3.3.1-3.3.5, <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.1>).

use alloc::vec::Vec;

use crate::attributes::{FileAttributes, PostOperationAttributes, SettableAttributes, WccData};
use crate::status::ProcedureResult;
use crate::types::{DirectoryOperationArguments, FileHandle, PathCodec, Time};

/// ACCESS3_READ: read data or list a directory.
pub const ACCESS_READ: u32 = 0x0001;
/// ACCESS3_LOOKUP: look up a name in a directory.
pub const ACCESS_LOOKUP: u32 = 0x0002;
/// ACCESS3_MODIFY: rewrite data or directory entries.
pub const ACCESS_MODIFY: u32 = 0x0004;
/// ACCESS3_EXTEND: append data or add directory entries.
pub const ACCESS_EXTEND: u32 = 0x0008;
/// ACCESS3_DELETE: delete a directory entry.
pub const ACCESS_DELETE: u32 = 0x0010;
/// ACCESS3_EXECUTE: execute a file.
pub const ACCESS_EXECUTE: u32 = 0x0020;

xdr::xdr_struct! {
    /// `GETATTR3args`.
    pub struct GetAttributesArguments {
        /// `object`.
        pub object: FileHandle,
    }
}

xdr::xdr_struct! {
    /// `GETATTR3resok`.
    pub struct GetAttributesOk {
        /// `obj_attributes`.
        pub attributes: FileAttributes,
    }
}

/// `GETATTR3res`: the failure arm is void.
pub type GetAttributesResult = ProcedureResult<GetAttributesOk, ()>;

xdr::xdr_struct! {
    /// `SETATTR3args`.
    pub struct SetAttributesArguments {
        /// `object`.
        pub object: FileHandle,
        /// `new_attributes`.
        pub new_attributes: SettableAttributes,
        /// `guard`: if present, the object's ctime must equal it.
        pub guard: Option<Time>,
    }
}

xdr::xdr_struct! {
    /// `SETATTR3resok` and `SETATTR3resfail`.
    pub struct SetAttributesWcc {
        /// `obj_wcc`.
        pub object_wcc: WccData,
    }
}

/// `SETATTR3res`.
pub type SetAttributesResult = ProcedureResult<SetAttributesWcc, SetAttributesWcc>;

xdr::xdr_struct! {
    /// `LOOKUP3args`.
    pub struct LookupArguments {
        /// `what`.
        pub what: DirectoryOperationArguments,
    }
}

xdr::xdr_struct! {
    /// `LOOKUP3resok`.
    pub struct LookupOk {
        /// `object`.
        pub object: FileHandle,
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `dir_attributes`.
        pub directory_attributes: PostOperationAttributes,
    }
}

xdr::xdr_struct! {
    /// `LOOKUP3resfail`.
    pub struct LookupFailed {
        /// `dir_attributes`.
        pub directory_attributes: PostOperationAttributes,
    }
}

/// `LOOKUP3res`.
pub type LookupResult = ProcedureResult<LookupOk, LookupFailed>;

xdr::xdr_struct! {
    /// `ACCESS3args`.
    pub struct AccessArguments {
        /// `object`.
        pub object: FileHandle,
        /// `access`: `ACCESS_*` bits to check.
        pub access: u32,
    }
}

xdr::xdr_struct! {
    /// `ACCESS3resok`.
    pub struct AccessOk {
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `access`: the granted subset of the requested bits.
        pub access: u32,
    }
}

xdr::xdr_struct! {
    /// The failure body of several procedures: just `post_op_attr`
    /// (`ACCESS3resfail`, `READLINK3resfail`, `READ3resfail`,
    /// `READDIR3resfail`, `FSSTAT3resfail`, `FSINFO3resfail`,
    /// `PATHCONF3resfail`).
    pub struct AttributesFailed {
        /// The object's attributes, if the server has them.
        pub object_attributes: PostOperationAttributes,
    }
}

/// `ACCESS3res`.
pub type AccessResult = ProcedureResult<AccessOk, AttributesFailed>;

xdr::xdr_struct! {
    /// `READLINK3args`.
    pub struct ReadLinkArguments {
        /// `symlink`.
        pub symlink: FileHandle,
    }
}

xdr::xdr_struct! {
    /// `READLINK3resok`.
    pub struct ReadLinkOk {
        /// `symlink_attributes`.
        pub symlink_attributes: PostOperationAttributes,
        /// `data`: the link's target.
        pub data: Vec<u8> as PathCodec,
    }
}

/// `READLINK3res`.
pub type ReadLinkResult = ProcedureResult<ReadLinkOk, AttributesFailed>;
