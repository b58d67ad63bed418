//! The 22 NFSv3 procedures (RFC 1813 section 3,
//! <https://www.rfc-editor.org/rfc/rfc1813#section-3>), split by facet, and
//! the [`Procedure`] / [`Arguments`] / [`Results`] enums over all of them.

pub mod create;
pub mod data;
pub mod directory;
pub mod filesystem;
pub mod inspect;
pub mod remove;

use create::{
    CreateArguments, CreatedResult, MakeDirectoryArguments, MakeNodeArguments, SymlinkArguments,
};
use data::{CommitArguments, CommitResult, ReadArguments, ReadResult, WriteArguments, WriteResult};
use directory::{
    ReadDirectoryArguments, ReadDirectoryPlusArguments, ReadDirectoryPlusResult,
    ReadDirectoryResult,
};
use filesystem::{
    FileSystemArguments, FileSystemInformationResult, FileSystemStatisticsResult,
    PathConfigurationResult,
};
use inspect::{
    AccessArguments, AccessResult, GetAttributesArguments, GetAttributesResult, LookupArguments,
    LookupResult, ReadLinkArguments, ReadLinkResult, SetAttributesArguments, SetAttributesResult,
};
use remove::{
    LinkArguments, LinkResult, RemoveArguments, RemoveResult, RenameArguments, RenameResult,
};

crate::program::program! {
    /// NFS version 3 (RFC 1813).
    program Nfs3 = crate::PROGRAM, version crate::VERSION;
    /// NFSPROC3_NULL: does nothing; pings the server.
    Null = 0, (), ();
    /// NFSPROC3_GETATTR.
    GetAttributes = 1, GetAttributesArguments, GetAttributesResult;
    /// NFSPROC3_SETATTR.
    SetAttributes = 2, SetAttributesArguments, SetAttributesResult;
    /// NFSPROC3_LOOKUP.
    Lookup = 3, LookupArguments, LookupResult;
    /// NFSPROC3_ACCESS.
    Access = 4, AccessArguments, AccessResult;
    /// NFSPROC3_READLINK.
    ReadLink = 5, ReadLinkArguments, ReadLinkResult;
    /// NFSPROC3_READ.
    Read = 6, ReadArguments, ReadResult;
    /// NFSPROC3_WRITE.
    Write = 7, WriteArguments, WriteResult;
    /// NFSPROC3_CREATE.
    Create = 8, CreateArguments, CreatedResult;
    /// NFSPROC3_MKDIR.
    MakeDirectory = 9, MakeDirectoryArguments, CreatedResult;
    /// NFSPROC3_SYMLINK.
    Symlink = 10, SymlinkArguments, CreatedResult;
    /// NFSPROC3_MKNOD.
    MakeNode = 11, MakeNodeArguments, CreatedResult;
    /// NFSPROC3_REMOVE.
    Remove = 12, RemoveArguments, RemoveResult;
    /// NFSPROC3_RMDIR.
    RemoveDirectory = 13, RemoveArguments, RemoveResult;
    /// NFSPROC3_RENAME.
    Rename = 14, RenameArguments, RenameResult;
    /// NFSPROC3_LINK.
    Link = 15, LinkArguments, LinkResult;
    /// NFSPROC3_READDIR.
    ReadDirectory = 16, ReadDirectoryArguments, ReadDirectoryResult;
    /// NFSPROC3_READDIRPLUS.
    ReadDirectoryPlus = 17, ReadDirectoryPlusArguments, ReadDirectoryPlusResult;
    /// NFSPROC3_FSSTAT.
    FileSystemStatistics = 18, FileSystemArguments, FileSystemStatisticsResult;
    /// NFSPROC3_FSINFO.
    FileSystemInformation = 19, FileSystemArguments, FileSystemInformationResult;
    /// NFSPROC3_PATHCONF.
    PathConfiguration = 20, FileSystemArguments, PathConfigurationResult;
    /// NFSPROC3_COMMIT.
    Commit = 21, CommitArguments, CommitResult;
}
