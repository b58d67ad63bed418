//! A test client for the server: encodes calls with the `nfs3` crate, runs
//! them through `Server::handle` + `Server::finish`, decodes the replies.
#![allow(dead_code)] // Each test binary uses a different subset.

use nfs3::mount::Mount3;
use nfs3::procedures::create::{CreateArguments, CreateHow, CreatedOk};
use nfs3::procedures::data::{ReadArguments, WriteArguments};
use nfs3::procedures::inspect::LookupArguments;
use nfs3::{
    Arguments, DirectoryOperationArguments, FileAttributes, FileHandle, Nfs3, NfsError, Results,
    SettableAttributes, StableHow,
};
use nfs_server::{ClientAddress, ExportConfig, Server, ServerConfig};
use sdfs::device::MemoryDevice;
use sdfs::{FormatOptions, Volume};
use vfs::memfs::{MemFs, MemFsLimits};
use vfs::{FileSystem, StepClock};
use xdr::{AuthSys, OpaqueAuth};

pub const SECRET: [u8; 32] = [0x5a; 32];

pub fn config(exports: &[&str]) -> ServerConfig {
    ServerConfig {
        exports: exports
            .iter()
            .map(|line| ExportConfig::parse(line).expect("export line"))
            .collect(),
        handle_secret: SECRET,
        write_verifier: *b"verifier",
        file_system_id: 77,
        port: 2049,
    }
}

pub fn memfs() -> MemFs {
    MemFs::new(
        Box::new(StepClock::new(1_700_000_000)),
        MemFsLimits::default(),
    )
}

pub fn volume(blocks: u64) -> Volume<MemoryDevice> {
    let mut device = MemoryDevice::new(blocks);
    let options = FormatOptions {
        uuid: [3; 16],
        handle_secret: SECRET,
    };
    Volume::format(&mut device, options, &StepClock::new(1_700_000_000)).expect("format");
    Volume::open(device, Box::new(StepClock::new(1_700_000_100)), 1 << 20).expect("open")
}

pub fn sys(uid: u32, gid: u32) -> OpaqueAuth {
    OpaqueAuth::sys(&AuthSys {
        stamp: 1,
        machine_name: b"test-client".to_vec(),
        uid,
        gid,
        gids: vec![gid],
    })
}

/// A client of one server.
pub struct Client<F: FileSystem> {
    pub server: Server<F>,
    pub client: ClientAddress,
    pub credential: OpaqueAuth,
    xid: u32,
}

impl<F: FileSystem> Client<F> {
    /// A server over `filesystem` with `exports`, whose directories are
    /// created first (as the hosted server does).
    pub fn new(mut filesystem: F, exports: &[&str]) -> Self {
        let config = config(exports);
        for export in &config.exports {
            nfs_server::ensure_directory(&mut filesystem, &export.path).expect("export path");
        }
        Client {
            server: Server::new(filesystem, config).expect("server"),
            client: ClientAddress::Ip("127.0.0.1".parse().unwrap()),
            credential: sys(0, 0),
            xid: 1,
        }
    }

    pub fn as_user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.credential = sys(uid, gid);
        self
    }

    pub fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    /// Send raw record bytes; the reply bytes (after any commit).
    pub fn raw(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        let reply = self.server.handle(record, self.client)?;
        Some(self.server.finish(reply))
    }

    pub fn nfs_record(&mut self, arguments: &Arguments) -> Vec<u8> {
        let xid = self.next_xid();
        nfs3::message::encode_call::<Nfs3>(xid, self.credential.clone(), arguments)
    }

    pub fn nfs(&mut self, arguments: Arguments) -> Results {
        let procedure = arguments.procedure().to_u32();
        let record = self.nfs_record(&arguments);
        let reply = self.raw(&record).expect("a reply");
        let (_, results) =
            nfs3::message::decode_reply::<Nfs3>(&reply, procedure).expect("a successful RPC");
        results
    }

    pub fn mount_call(&mut self, arguments: nfs3::mount::Arguments) -> nfs3::mount::Results {
        let procedure = Mount3::procedure_number(&arguments);
        let xid = self.next_xid();
        let record = nfs3::message::encode_call::<Mount3>(xid, self.credential.clone(), &arguments);
        let reply = self.raw(&record).expect("a reply");
        nfs3::message::decode_reply::<Mount3>(&reply, procedure)
            .expect("a successful RPC")
            .1
    }

    pub fn mount(&mut self, export: &str) -> Result<FileHandle, nfs3::mount::MountError> {
        match self.mount_call(nfs3::mount::Arguments::Mount(nfs3::mount::DirectoryPath {
            path: export.as_bytes().to_vec(),
        })) {
            nfs3::mount::Results::Mount(nfs3::mount::MountResult::Ok(ok)) => Ok(ok.handle),
            nfs3::mount::Results::Mount(nfs3::mount::MountResult::Failed(error)) => Err(error),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn root(&mut self) -> FileHandle {
        self.mount("/").expect("mount /")
    }

    pub fn getattr(&mut self, handle: &FileHandle) -> Result<FileAttributes, NfsError> {
        match self.nfs(Arguments::GetAttributes(
            nfs3::procedures::inspect::GetAttributesArguments {
                object: handle.clone(),
            },
        )) {
            Results::GetAttributes(result) => result.into_result().map(|ok| ok.attributes),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn lookup(&mut self, directory: &FileHandle, name: &[u8]) -> Result<FileHandle, NfsError> {
        match self.nfs(Arguments::Lookup(LookupArguments {
            what: location(directory, name),
        })) {
            Results::Lookup(result) => result.into_result().map(|ok| ok.object),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn create_how(
        &mut self,
        directory: &FileHandle,
        name: &[u8],
        how: CreateHow,
    ) -> Result<CreatedOk, NfsError> {
        match self.nfs(Arguments::Create(CreateArguments {
            location: location(directory, name),
            how,
        })) {
            Results::Create(result) => result.into_result(),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn create(&mut self, directory: &FileHandle, name: &[u8]) -> Result<FileHandle, NfsError> {
        let created = self.create_how(
            directory,
            name,
            CreateHow::Guarded(SettableAttributes {
                mode: Some(0o644),
                ..SettableAttributes::default()
            }),
        )?;
        Ok(created.object.expect("a handle"))
    }

    pub fn mkdir(&mut self, directory: &FileHandle, name: &[u8]) -> Result<FileHandle, NfsError> {
        match self.nfs(Arguments::MakeDirectory(
            nfs3::procedures::create::MakeDirectoryArguments {
                location: location(directory, name),
                attributes: SettableAttributes {
                    mode: Some(0o755),
                    ..SettableAttributes::default()
                },
            },
        )) {
            Results::MakeDirectory(result) => {
                result.into_result().map(|ok| ok.object.expect("a handle"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn write(
        &mut self,
        file: &FileHandle,
        offset: u64,
        data: &[u8],
        stable: StableHow,
    ) -> Result<nfs3::procedures::data::WriteOk, NfsError> {
        match self.nfs(Arguments::Write(WriteArguments {
            file: file.clone(),
            offset,
            count: data.len() as u32,
            stable,
            data: data.to_vec(),
        })) {
            Results::Write(result) => result.into_result(),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn read(
        &mut self,
        file: &FileHandle,
        offset: u64,
        count: u32,
    ) -> Result<nfs3::procedures::data::ReadOk, NfsError> {
        match self.nfs(Arguments::Read(ReadArguments {
            file: file.clone(),
            offset,
            count,
        })) {
            Results::Read(result) => result.into_result(),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn remove(&mut self, directory: &FileHandle, name: &[u8]) -> Result<(), NfsError> {
        match self.nfs(Arguments::Remove(
            nfs3::procedures::remove::RemoveArguments {
                object: location(directory, name),
            },
        )) {
            Results::Remove(result) => result.into_result().map(|_| ()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn location(directory: &FileHandle, name: &[u8]) -> DirectoryOperationArguments {
    DirectoryOperationArguments {
        directory: directory.clone(),
        name: name.to_vec(),
    }
}

/// The status of any NFS result.
pub fn status(results: &Results) -> Result<(), NfsError> {
    match results {
        Results::Null(()) => Ok(()),
        Results::GetAttributes(r) => r.status(),
        Results::SetAttributes(r) => r.status(),
        Results::Lookup(r) => r.status(),
        Results::Access(r) => r.status(),
        Results::ReadLink(r) => r.status(),
        Results::Read(r) => r.status(),
        Results::Write(r) => r.status(),
        Results::Create(r) => r.status(),
        Results::MakeDirectory(r) => r.status(),
        Results::Symlink(r) => r.status(),
        Results::MakeNode(r) => r.status(),
        Results::Remove(r) => r.status(),
        Results::RemoveDirectory(r) => r.status(),
        Results::Rename(r) => r.status(),
        Results::Link(r) => r.status(),
        Results::ReadDirectory(r) => r.status(),
        Results::ReadDirectoryPlus(r) => r.status(),
        Results::FileSystemStatistics(r) => r.status(),
        Results::FileSystemInformation(r) => r.status(),
        Results::PathConfiguration(r) => r.status(),
        Results::Commit(r) => r.status(),
    }
}

use nfs3::RpcProgram;
