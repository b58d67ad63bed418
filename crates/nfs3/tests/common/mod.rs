//! Shared test support: a seeded SplitMix64 generator and `Generate` impls
//! producing random, valid values of every NFSv3, MOUNT and PORTMAP type.

#![allow(dead_code)] // Each test file uses a different subset.

use nfs3::mount::{
    self, DirectoryPath, Export, ExportList, Group, MountEntry, MountError, MountList, MountOk,
    MountResult,
};
use nfs3::portmap::{self, Mapping, MappingList};
use nfs3::procedures::create::{
    CreateArguments, CreateHow, CreatedOk, DirectoryWccFailed, MakeDirectoryArguments,
    MakeNodeArguments, MakeNodeData, SymlinkArguments,
};
use nfs3::procedures::data::{
    CommitArguments, CommitOk, FileWccFailed, ReadArguments, ReadOk, WriteArguments, WriteOk,
};
use nfs3::procedures::directory::{
    Entry, EntryPlus, ReadDirectoryArguments, ReadDirectoryOk, ReadDirectoryPlusArguments,
    ReadDirectoryPlusOk,
};
use nfs3::procedures::filesystem::{
    FileSystemArguments, FileSystemInformationOk, FileSystemStatisticsOk, PathConfigurationOk,
};
use nfs3::procedures::inspect::{
    AccessArguments, AccessOk, AttributesFailed, GetAttributesArguments, GetAttributesOk,
    LookupArguments, LookupFailed, LookupOk, ReadLinkArguments, ReadLinkOk, SetAttributesArguments,
    SetAttributesWcc,
};
use nfs3::procedures::remove::{
    LinkArguments, LinkWcc, RemoveArguments, RenameArguments, RenameWcc,
};
use nfs3::{
    Arguments, DeviceNumbers, DirectoryOperationArguments, FileAttributes, FileHandle, FileType,
    NfsError, Procedure, ProcedureResult, Results, SetTime, SettableAttributes, StableHow, Time,
    WccAttributes, WccData,
};

/// SplitMix64: small, deterministic, good enough for test inputs.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn generate<T: Generate>(&mut self) -> T {
        T::generate(self)
    }

    pub fn choose<T: Copy>(&mut self, values: &[T]) -> T {
        values[self.below(values.len() as u64) as usize]
    }

    pub fn bytes(&mut self, maximum: u64) -> Vec<u8> {
        let length = self.below(maximum + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// A random valid value.
pub trait Generate {
    fn generate(random: &mut Random) -> Self;
}

macro_rules! generate_struct {
    ($($type:ident { $($field:ident),* $(,)? })*) => {
        $(impl Generate for $type {
            fn generate(random: &mut Random) -> Self {
                $type { $($field: random.generate(),)* }
            }
        })*
    };
}

impl Generate for u8 {
    fn generate(random: &mut Random) -> Self {
        random.next() as u8
    }
}
impl Generate for u32 {
    fn generate(random: &mut Random) -> Self {
        random.next() as u32
    }
}
impl Generate for u64 {
    fn generate(random: &mut Random) -> Self {
        random.next()
    }
}
impl Generate for bool {
    fn generate(random: &mut Random) -> Self {
        random.below(2) == 1
    }
}
impl Generate for () {
    fn generate(_random: &mut Random) -> Self {}
}
impl Generate for [u8; 8] {
    fn generate(random: &mut Random) -> Self {
        random.next().to_be_bytes()
    }
}
impl<T: Generate> Generate for Option<T> {
    fn generate(random: &mut Random) -> Self {
        random.generate::<bool>().then(|| random.generate())
    }
}
/// Up to 9 elements: enough to cover every padding length.
impl<T: Generate> Generate for Vec<T> {
    fn generate(random: &mut Random) -> Self {
        (0..random.below(10)).map(|_| random.generate()).collect()
    }
}
impl Generate for FileHandle {
    fn generate(random: &mut Random) -> Self {
        FileHandle(random.bytes(64))
    }
}
impl Generate for FileType {
    fn generate(random: &mut Random) -> Self {
        random.choose(&FileType::ALL)
    }
}
impl Generate for StableHow {
    fn generate(random: &mut Random) -> Self {
        random.choose(&[
            StableHow::Unstable,
            StableHow::DataSync,
            StableHow::FileSync,
        ])
    }
}
impl Generate for NfsError {
    fn generate(random: &mut Random) -> Self {
        random.choose(NfsError::ALL)
    }
}
impl Generate for MountError {
    fn generate(random: &mut Random) -> Self {
        random.choose(&MountError::ALL)
    }
}
impl<Success: Generate, Failure: Generate> Generate for ProcedureResult<Success, Failure> {
    fn generate(random: &mut Random) -> Self {
        if random.generate() {
            ProcedureResult::Ok(random.generate())
        } else {
            ProcedureResult::failed(random.generate(), random.generate())
        }
    }
}
impl Generate for SetTime {
    fn generate(random: &mut Random) -> Self {
        match random.below(3) {
            0 => SetTime::DontChange,
            1 => SetTime::ServerTime,
            _ => SetTime::ClientTime(random.generate()),
        }
    }
}
impl Generate for CreateHow {
    fn generate(random: &mut Random) -> Self {
        match random.below(3) {
            0 => CreateHow::Unchecked(random.generate()),
            1 => CreateHow::Guarded(random.generate()),
            _ => CreateHow::Exclusive(random.generate()),
        }
    }
}
impl Generate for MakeNodeData {
    fn generate(random: &mut Random) -> Self {
        match random.below(5) {
            0 => MakeNodeData::CharacterDevice {
                attributes: random.generate(),
                device: random.generate(),
            },
            1 => MakeNodeData::BlockDevice {
                attributes: random.generate(),
                device: random.generate(),
            },
            2 => MakeNodeData::Socket(random.generate()),
            3 => MakeNodeData::Fifo(random.generate()),
            _ => MakeNodeData::Other(random.choose(&[
                FileType::Regular,
                FileType::Directory,
                FileType::SymbolicLink,
            ])),
        }
    }
}
impl Generate for MountResult {
    fn generate(random: &mut Random) -> Self {
        if random.generate() {
            MountResult::Ok(random.generate())
        } else {
            MountResult::Failed(random.generate())
        }
    }
}

generate_struct! {
    DeviceNumbers { major, minor }
    Time { seconds, nanoseconds }
    DirectoryOperationArguments { directory, name }
    FileAttributes {
        file_type, mode, link_count, uid, gid, size, used, device, file_system_id, file_id,
        access_time, modify_time, change_time,
    }
    WccAttributes { size, modify_time, change_time }
    WccData { before, after }
    SettableAttributes { mode, uid, gid, size, access_time, modify_time }
    GetAttributesArguments { object }
    GetAttributesOk { attributes }
    SetAttributesArguments { object, new_attributes, guard }
    SetAttributesWcc { object_wcc }
    LookupArguments { what }
    LookupOk { object, object_attributes, directory_attributes }
    LookupFailed { directory_attributes }
    AccessArguments { object, access }
    AccessOk { object_attributes, access }
    AttributesFailed { object_attributes }
    ReadLinkArguments { symlink }
    ReadLinkOk { symlink_attributes, data }
    ReadArguments { file, offset, count }
    ReadOk { file_attributes, count, end_of_file, data }
    WriteArguments { file, offset, count, stable, data }
    WriteOk { file_wcc, count, committed, verifier }
    FileWccFailed { file_wcc }
    CommitArguments { file, offset, count }
    CommitOk { file_wcc, verifier }
    CreateArguments { location, how }
    CreatedOk { object, object_attributes, directory_wcc }
    DirectoryWccFailed { directory_wcc }
    MakeDirectoryArguments { location, attributes }
    SymlinkArguments { location, attributes, target }
    MakeNodeArguments { location, what }
    RemoveArguments { object }
    RenameArguments { from, to }
    RenameWcc { from_directory_wcc, to_directory_wcc }
    LinkArguments { file, link }
    LinkWcc { file_attributes, link_directory_wcc }
    ReadDirectoryArguments { directory, cookie, cookie_verifier, count }
    Entry { file_id, name, cookie }
    ReadDirectoryOk { directory_attributes, cookie_verifier, entries, end_of_file }
    ReadDirectoryPlusArguments {
        directory, cookie, cookie_verifier, directory_count, maximum_count,
    }
    EntryPlus { file_id, name, cookie, attributes, handle }
    ReadDirectoryPlusOk { directory_attributes, cookie_verifier, entries, end_of_file }
    FileSystemArguments { object }
    FileSystemStatisticsOk {
        object_attributes, total_bytes, free_bytes, available_bytes, total_files, free_files,
        available_files, invariant_seconds,
    }
    FileSystemInformationOk {
        object_attributes, read_maximum, read_preferred, read_multiple, write_maximum,
        write_preferred, write_multiple, directory_preferred, maximum_file_size, time_delta,
        properties,
    }
    PathConfigurationOk {
        object_attributes, link_maximum, name_maximum, no_truncation, chown_restricted,
        case_insensitive, case_preserving,
    }
    DirectoryPath { path }
    MountOk { handle, auth_flavors }
    MountEntry { host_name, directory }
    MountList { entries }
    Group { name }
    Export { directory, groups }
    ExportList { exports }
    Mapping { program, version, protocol, port }
    MappingList { mappings }
}

/// Random NFS arguments and results for `procedure`.
pub fn nfs_messages(random: &mut Random, procedure: Procedure) -> (Arguments, Results) {
    macro_rules! both {
        ($variant:ident) => {
            (
                Arguments::$variant(random.generate()),
                Results::$variant(random.generate()),
            )
        };
    }
    match procedure {
        Procedure::Null => both!(Null),
        Procedure::GetAttributes => both!(GetAttributes),
        Procedure::SetAttributes => both!(SetAttributes),
        Procedure::Lookup => both!(Lookup),
        Procedure::Access => both!(Access),
        Procedure::ReadLink => both!(ReadLink),
        Procedure::Read => both!(Read),
        Procedure::Write => both!(Write),
        Procedure::Create => both!(Create),
        Procedure::MakeDirectory => both!(MakeDirectory),
        Procedure::Symlink => both!(Symlink),
        Procedure::MakeNode => both!(MakeNode),
        Procedure::Remove => both!(Remove),
        Procedure::RemoveDirectory => both!(RemoveDirectory),
        Procedure::Rename => both!(Rename),
        Procedure::Link => both!(Link),
        Procedure::ReadDirectory => both!(ReadDirectory),
        Procedure::ReadDirectoryPlus => both!(ReadDirectoryPlus),
        Procedure::FileSystemStatistics => both!(FileSystemStatistics),
        Procedure::FileSystemInformation => both!(FileSystemInformation),
        Procedure::PathConfiguration => both!(PathConfiguration),
        Procedure::Commit => both!(Commit),
    }
}

/// Random MOUNT arguments and results for `procedure`.
pub fn mount_messages(
    random: &mut Random,
    procedure: mount::Procedure,
) -> (mount::Arguments, mount::Results) {
    use mount::{Arguments, Procedure, Results};
    macro_rules! both {
        ($variant:ident) => {
            (
                Arguments::$variant(random.generate()),
                Results::$variant(random.generate()),
            )
        };
    }
    match procedure {
        Procedure::Null => both!(Null),
        Procedure::Mount => both!(Mount),
        Procedure::Dump => both!(Dump),
        Procedure::Unmount => both!(Unmount),
        Procedure::UnmountAll => both!(UnmountAll),
        Procedure::Export => both!(Export),
    }
}

/// Random PORTMAP arguments and results for `procedure`.
pub fn portmap_messages(
    random: &mut Random,
    procedure: portmap::Procedure,
) -> (portmap::Arguments, portmap::Results) {
    use portmap::{Arguments, Procedure, Results};
    macro_rules! both {
        ($variant:ident) => {
            (
                Arguments::$variant(random.generate()),
                Results::$variant(random.generate()),
            )
        };
    }
    match procedure {
        Procedure::Null => both!(Null),
        Procedure::Set => both!(Set),
        Procedure::Unset => both!(Unset),
        Procedure::GetPort => both!(GetPort),
        Procedure::Dump => both!(Dump),
    }
}
