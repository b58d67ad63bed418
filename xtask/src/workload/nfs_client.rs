//! A client of the independent `nfs3_client` crate over TCP, and the
//! reader of the whole tree that checks the server after a restart.
//!
//! The client reconnects after a lost connection and then looks its files
//! up again (a handle it held may name nothing after a restart that lost
//! the file's creation).

use super::check::Tree;
use super::client::{Files, Step};
use super::{Failure, FileKey};
use nfs3_client::nfs3_types::mount::dirpath;
use nfs3_client::nfs3_types::nfs3::{
    cookieverf3, createhow3, diropargs3, filename3, ftype3, nfs_fh3, nfsstat3, sattr3, stable_how,
    COMMIT3args, CREATE3args, LOOKUP3args, MKDIR3args, Nfs3Option, Nfs3Result, READ3args,
    READDIR3args, REMOVE3args, WRITE3args,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, Nfs3Client};
use std::collections::HashMap;
use std::time::Duration;

/// A TCP connection whose end of stream is an error.
///
/// `nfs3_client` 0.9.1 reads a reply with a loop that goes round for ever
/// when a read returns 0 bytes (the server closed the connection, as a
/// killed server does), so a call to a dead server would spin until our
/// timeout. Reporting the end as `UnexpectedEof` fails the call at once.
struct Io(tokio::net::TcpStream);

impl nfs3_client::io::AsyncRead for Io {
    async fn async_read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = tokio::io::AsyncReadExt::read(&mut self.0, buffer).await?;
        if read == 0 && !buffer.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(read)
    }
}

impl nfs3_client::io::AsyncWrite for Io {
    async fn async_write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        tokio::io::AsyncWriteExt::write(&mut self.0, buffer).await
    }
}

/// How long one call may take before the connection counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn credential() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 13,
        machinename: Opaque::owned(b"xtask-torture".to_vec()),
        uid: 0,
        gid: 0,
        gids: vec![0],
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn connect(address: &str) -> std::io::Result<Io> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(Io(stream))
}

/// The export's root handle (MNT of `/`).
async fn root_handle(address: &str) -> anyhow::Result<nfs_fh3> {
    let mut mount = MountClient::new_with_auth(
        connect(address).await?,
        credential(),
        opaque_auth::default(),
    );
    let mounted = mount
        .mnt(dirpath(Opaque::borrowed(b"/")))
        .await
        .map_err(|error| anyhow::anyhow!("MNT /: {error:?}"))?;
    Ok(nfs_fh3 {
        data: Opaque::owned(mounted.fhandle.0.to_vec()),
    })
}

fn at(directory: &nfs_fh3, name: &str) -> diropargs3<'static> {
    diropargs3 {
        dir: directory.clone(),
        name: filename3::from(name.as_bytes().to_vec()),
    }
}

fn status_failure(status: nfsstat3) -> Failure {
    match status {
        nfsstat3::NFS3ERR_IO => Failure::Io,
        nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE => Failure::Gone,
        nfsstat3::NFS3ERR_NOSPC => Failure::NoSpace,
        other => Failure::Unexpected(format!("{other:?}")),
    }
}

/// Files of one client through its own NFS connection.
pub struct NfsFiles {
    address: String,
    runtime: tokio::runtime::Runtime,
    client: Option<Nfs3Client<Io>>,
    root: nfs_fh3,
    handles: HashMap<String, nfs_fh3>,
    /// Each write asks FILE_SYNC with this percentage, UNSTABLE otherwise.
    file_sync_percent: u64,
    random: super::Random,
}

macro_rules! call {
    ($self:ident, $method:ident, $arguments:expr) => {{
        match $self.connect_if_needed() {
            Err(failure) => Err(failure),
            Ok(()) => {
                let arguments = $arguments;
                let client = $self.client.as_mut().expect("connected");
                let future = client.$method(&arguments);
                match $self
                    .runtime
                    .block_on(async { tokio::time::timeout(CALL_TIMEOUT, future).await })
                {
                    Ok(Ok(Nfs3Result::Ok(ok))) => Ok(ok),
                    Ok(Ok(Nfs3Result::Err((status, _)))) => Err(status_failure(status)),
                    Ok(Err(_)) | Err(_) => {
                        $self.disconnect();
                        Err(Failure::Io)
                    }
                }
            }
        }
    }};
}

impl NfsFiles {
    /// A client of the server at `address`.
    ///
    /// # Errors
    /// When MNT fails.
    pub fn new(address: &str, seed: u64) -> anyhow::Result<NfsFiles> {
        let runtime = runtime();
        let root = runtime.block_on(root_handle(address))?;
        Ok(NfsFiles {
            address: address.to_string(),
            runtime,
            client: None,
            root,
            handles: HashMap::new(),
            file_sync_percent: 40,
            random: super::Random::new(seed ^ 0xF11E),
        })
    }

    fn connect_if_needed(&mut self) -> Result<(), Failure> {
        if self.client.is_none() {
            let io = self
                .runtime
                .block_on(connect(&self.address))
                .map_err(|_| Failure::Io)?;
            self.client = Some(Nfs3Client::new_with_auth(
                io,
                credential(),
                opaque_auth::default(),
            ));
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.client = None;
        self.handles.clear();
    }

    fn lookup(&mut self, path: &str) -> Result<nfs_fh3, Failure> {
        if let Some(handle) = self.handles.get(path) {
            return Ok(handle.clone());
        }
        let mut handle = self.root.clone();
        for part in path.split('/') {
            let what = at(&handle, part);
            let found = call!(self, lookup, LOOKUP3args { what })?;
            handle = found.object;
        }
        self.handles.insert(path.to_string(), handle.clone());
        Ok(handle)
    }

    /// Creates the client's directory `c{client}` (durable on the reply:
    /// the export is `sync`).
    ///
    /// # Errors
    /// When MKDIR fails.
    pub fn make_directory(&mut self, client: u32) -> anyhow::Result<()> {
        let root = self.root.clone();
        let where_ = at(&root, &format!("c{client}"));
        call!(
            self,
            mkdir,
            MKDIR3args {
                where_,
                attributes: sattr3::default()
            }
        )
        .map(drop)
        .map_err(|failure| anyhow::anyhow!("MKDIR c{client}: {failure:?}"))
    }

    fn write_once(
        &mut self,
        key: FileKey,
        offset: u64,
        data: &[u8],
    ) -> Result<(Option<&'static str>, Option<[u8; 8]>), Failure> {
        let file = self.lookup(&key.path())?;
        let stable = if self.random.chance(self.file_sync_percent) {
            stable_how::FILE_SYNC
        } else {
            stable_how::UNSTABLE
        };
        let reply = call!(
            self,
            write,
            WRITE3args {
                file,
                offset,
                count: data.len() as u32,
                stable,
                data: Opaque::borrowed(data),
            }
        )?;
        if reply.count as usize != data.len() {
            return Err(Failure::Unexpected(format!(
                "WRITE of {} bytes wrote {}",
                data.len(),
                reply.count
            )));
        }
        Ok(match reply.committed {
            stable_how::FILE_SYNC => (Some("WRITE FILE_SYNC"), None),
            stable_how::DATA_SYNC | stable_how::UNSTABLE => (None, Some(reply.verf.0)),
        })
    }

    fn commit(&mut self, key: FileKey) -> Result<Option<[u8; 8]>, Failure> {
        let file = self.lookup(&key.path())?;
        let reply = call!(
            self,
            commit,
            COMMIT3args {
                file,
                offset: 0,
                count: 0
            }
        )?;
        Ok(Some(reply.verf.0))
    }
}

impl Files for NfsFiles {
    fn create(&mut self, key: FileKey) -> Result<(), Failure> {
        let directory = self.lookup(&format!("c{}", key.client))?;
        let where_ = at(&directory, &format!("f{}", key.file));
        let created = call!(
            self,
            create,
            CREATE3args {
                where_,
                how: createhow3::GUARDED(sattr3 {
                    mode: Nfs3Option::Some(0o644),
                    ..sattr3::default()
                }),
            }
        )?;
        if let Nfs3Option::Some(handle) = created.obj {
            self.handles.insert(key.path(), handle);
        }
        Ok(())
    }

    fn write(&mut self, key: FileKey, offset: u64, data: &[u8], sync: Option<bool>) -> Vec<Step> {
        let mut steps = vec![Step::Wrote(self.write_once(key, offset, data))];
        if sync.is_some() {
            steps.push(Step::Synced("COMMIT", self.commit(key)));
        }
        steps
    }

    fn sync(&mut self, key: FileKey, _data_only: bool) -> Vec<Step> {
        vec![Step::Synced("COMMIT", self.commit(key))]
    }

    fn sync_directory(&mut self, _client: u32) -> Option<Result<(), Failure>> {
        None
    }

    fn remove(&mut self, key: FileKey) -> Result<(), Failure> {
        let directory = self.lookup(&format!("c{}", key.client))?;
        let object = at(&directory, &format!("f{}", key.file));
        self.handles.remove(&key.path());
        call!(self, remove, REMOVE3args { object }).map(drop)
    }

    fn read(&mut self, key: FileKey) -> Result<Vec<u8>, Failure> {
        let file = self.lookup(&key.path())?;
        let mut bytes = Vec::new();
        loop {
            let reply = call!(
                self,
                read,
                READ3args {
                    file: file.clone(),
                    offset: bytes.len() as u64,
                    count: 256 * 1024,
                }
            )?;
            bytes.extend_from_slice(&reply.data);
            if reply.eof || reply.data.is_empty() {
                return Ok(bytes);
            }
        }
    }
}

/// Reads every directory and file of the export (two levels: `cN/fM`)
/// through a new connection.
///
/// # Errors
/// When a call fails or something other than a directory or regular file
/// is found.
pub fn read_tree(address: &str) -> anyhow::Result<Tree> {
    let runtime = runtime();
    runtime.block_on(async {
        let root = root_handle(address).await?;
        let mut client = Nfs3Client::new_with_auth(
            connect(address).await?,
            credential(),
            opaque_auth::default(),
        );
        let mut tree = Tree::new();
        for (name, directory, kind) in list(&mut client, &root).await? {
            if kind != ftype3::NF3DIR {
                tree.entry(name.clone()).or_default();
                anyhow::bail!("/{name} is not a directory ({kind:?})");
            }
            let mut entries = std::collections::BTreeMap::new();
            for (file_name, file, kind) in list(&mut client, &directory).await? {
                if kind != ftype3::NF3REG {
                    anyhow::bail!("/{name}/{file_name} is not a regular file ({kind:?})");
                }
                let mut bytes = Vec::new();
                loop {
                    let reply = client
                        .read(&READ3args {
                            file: file.clone(),
                            offset: bytes.len() as u64,
                            count: 256 * 1024,
                        })
                        .await?;
                    let Nfs3Result::Ok(reply) = reply else {
                        anyhow::bail!("READ /{name}/{file_name} failed: {reply:?}");
                    };
                    bytes.extend_from_slice(&reply.data);
                    if reply.eof || reply.data.is_empty() {
                        break;
                    }
                }
                entries.insert(file_name, bytes);
            }
            tree.insert(name, entries);
        }
        Ok(tree)
    })
}

/// The entries of a directory (without `.` and `..`): name, handle, type.
async fn list(
    client: &mut Nfs3Client<Io>,
    directory: &nfs_fh3,
) -> anyhow::Result<Vec<(String, nfs_fh3, ftype3)>> {
    let mut names = Vec::new();
    let mut cookie = 0;
    let mut cookieverf = cookieverf3::default();
    loop {
        let reply = client
            .readdir(&READDIR3args {
                dir: directory.clone(),
                cookie,
                cookieverf,
                count: 64 * 1024,
            })
            .await?;
        let Nfs3Result::Ok(reply) = reply else {
            anyhow::bail!("READDIR failed: {reply:?}");
        };
        cookieverf = reply.cookieverf;
        for entry in &reply.reply.entries.0 {
            cookie = entry.cookie;
            let name = String::from_utf8_lossy(&entry.name.0).into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        if reply.reply.eof || reply.reply.entries.0.is_empty() {
            break;
        }
    }
    let mut entries = Vec::new();
    for name in names {
        let found = client
            .lookup(&LOOKUP3args {
                what: at(directory, &name),
            })
            .await?;
        let Nfs3Result::Ok(found) = found else {
            anyhow::bail!("LOOKUP {name} failed: {found:?}");
        };
        let kind = match &found.obj_attributes {
            Nfs3Option::Some(attributes) => attributes.type_,
            Nfs3Option::None => anyhow::bail!("LOOKUP {name} gave no attributes"),
        };
        entries.push((name, found.object, kind));
    }
    Ok(entries)
}
