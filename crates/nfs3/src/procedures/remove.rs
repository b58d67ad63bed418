//! REMOVE, RMDIR, RENAME and LINK: procedures that drop, move or add a name
//! for an existing object (RFC 1813 sections 3.3.12-3.3.15,
//! <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.12>).

use crate::attributes::{PostOperationAttributes, WccData};
use crate::procedures::create::DirectoryWccFailed;
use crate::status::ProcedureResult;
use crate::types::{DirectoryOperationArguments, FileHandle};

xdr::xdr_struct! {
    /// `REMOVE3args` and `RMDIR3args`.
    pub struct RemoveArguments {
        /// `object`.
        pub object: DirectoryOperationArguments,
    }
}

/// `REMOVE3res` and `RMDIR3res`: both arms carry `dir_wcc`.
pub type RemoveResult = ProcedureResult<DirectoryWccFailed, DirectoryWccFailed>;

xdr::xdr_struct! {
    /// `RENAME3args`.
    pub struct RenameArguments {
        /// `from`.
        pub from: DirectoryOperationArguments,
        /// `to`.
        pub to: DirectoryOperationArguments,
    }
}

xdr::xdr_struct! {
    /// `RENAME3resok` and `RENAME3resfail`.
    pub struct RenameWcc {
        /// `fromdir_wcc`.
        pub from_directory_wcc: WccData,
        /// `todir_wcc`.
        pub to_directory_wcc: WccData,
    }
}

/// `RENAME3res`.
pub type RenameResult = ProcedureResult<RenameWcc, RenameWcc>;

xdr::xdr_struct! {
    /// `LINK3args`.
    pub struct LinkArguments {
        /// `file`: the existing object.
        pub file: FileHandle,
        /// `link`: the new name.
        pub link: DirectoryOperationArguments,
    }
}

xdr::xdr_struct! {
    /// `LINK3resok` and `LINK3resfail`.
    pub struct LinkWcc {
        /// `file_attributes`.
        pub file_attributes: PostOperationAttributes,
        /// `linkdir_wcc`.
        pub link_directory_wcc: WccData,
    }
}

/// `LINK3res`.
pub type LinkResult = ProcedureResult<LinkWcc, LinkWcc>;
