//! The NFSv3 client: typed calls over any [`Transport`].
//!
//! Design: one [`NfsClient`] is shared by every FUSE worker thread. A call
//! takes the caller's identity ([`Caller`], sent as AUTH_SYS), picks a fresh
//! xid, encodes with `nfs3::message::encode_call`, hands the record to the
//! transport and decodes the reply for the procedure it called. RPC-level
//! failures ([`ClientError`]) and NFS statuses ([`nfs3::NfsError`]) stay
//! apart until [`crate::errno`] turns either into an errno at the FUSE
//! boundary. Counters per procedure live in [`crate::stats`].

pub mod hosted;
pub mod mount;
pub mod transport;
pub mod xen;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nfs3::message::{decode_reply, encode_call, ReplyFailure};
use nfs3::procedures::{create, data, directory, filesystem, inspect, remove};
use nfs3::{Arguments, Nfs3, Results, RpcProgram};
use xdr::{AuthSys, OpaqueAuth};

use crate::stats::Stats;
pub use transport::{Call, TcpTransport, Transport, TransportError};

/// Who makes a call: the identity sent as AUTH_SYS (RFC 5531 appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary groups; only the first 16 are sent.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The superuser, for calls no process asked for (mount, unmount).
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// AUTH_SYS for this caller. `stamp` is the client's arbitrary id
    /// (RFC 5531 appendix A); each mount picks its own, so that two mounts
    /// sending the same call with the same xid (ring transports number
    /// their xids per connection) never look like a retransmission to the
    /// server's duplicate request cache.
    fn credential(&self, machine_name: &[u8], stamp: u32) -> OpaqueAuth {
        let mut groups = self.groups.clone();
        groups.truncate(xdr::auth::MAX_AUTH_SYS_GROUPS as usize);
        OpaqueAuth::sys(&AuthSys {
            stamp,
            machine_name: machine_name.to_vec(),
            uid: self.uid,
            gid: self.gid,
            gids: groups,
        })
    }
}

/// Why a call produced no NFS result at all.
#[derive(Debug)]
pub enum ClientError {
    /// The transport could not carry the call or its reply.
    Transport(TransportError),
    /// The reply was denied, not executed, or malformed.
    Reply(ReplyFailure),
    /// The reply decoded as another procedure's results (cannot happen with
    /// `decode_reply`, but is never trusted blindly).
    WrongResults,
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(error) => write!(formatter, "{error}"),
            ClientError::Reply(error) => write!(formatter, "{error}"),
            ClientError::WrongResults => formatter.write_str("reply for another procedure"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The result of one typed NFS call: `Err` for RPC failures, otherwise the
/// procedure's own result (which may carry an `nfsstat3` failure).
pub type CallResult<T> = Result<T, ClientError>;

/// A source of xids shared by every call on one client.
#[derive(Debug)]
pub struct XidSource(AtomicU32);

impl XidSource {
    /// Starts from a value derived from the clock, so a remount does not
    /// reuse the previous mount's xids (the server's duplicate request cache
    /// keys on them).
    pub fn new() -> XidSource {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos() ^ (elapsed.as_secs() as u32).rotate_left(16))
            .unwrap_or(1);
        XidSource(AtomicU32::new(seed))
    }

    /// The next xid.
    pub fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for XidSource {
    fn default() -> Self {
        XidSource::new()
    }
}

/// One RPC to program `P` over `transport`.
///
/// # Errors
/// [`ClientError`] when no results arrived.
pub fn call_program<P: RpcProgram>(
    transport: &dyn Transport,
    xid: u32,
    credential: OpaqueAuth,
    arguments: &P::Arguments,
) -> CallResult<P::Results> {
    call_program_with::<P>(transport, xid, credential, arguments, &[], 0)
}

/// One RPC to program `P` with bulk data: `write_payload` for the record's
/// trailing empty opaque, room for `read_capacity` bytes in the reply.
///
/// # Errors
/// [`ClientError`] when no results arrived.
pub fn call_program_with<P: RpcProgram>(
    transport: &dyn Transport,
    xid: u32,
    credential: OpaqueAuth,
    arguments: &P::Arguments,
    write_payload: &[u8],
    read_capacity: usize,
) -> CallResult<P::Results> {
    let procedure = P::procedure_number(arguments);
    let reply = call_record::<P>(
        transport,
        xid,
        credential,
        arguments,
        write_payload,
        read_capacity,
    )?;
    let (reply_xid, results) = decode_reply::<P>(&reply, procedure).map_err(ClientError::Reply)?;
    check_xid(xid, reply_xid)?;
    Ok(results)
}

/// One RPC to program `P`; the reply record, not decoded.
fn call_record<P: RpcProgram>(
    transport: &dyn Transport,
    xid: u32,
    credential: OpaqueAuth,
    arguments: &P::Arguments,
    write_payload: &[u8],
    read_capacity: usize,
) -> CallResult<Vec<u8>> {
    let record = encode_call::<P>(xid, credential, arguments);
    transport
        .call(Call {
            xid,
            record: &record,
            write_payload,
            read_capacity,
        })
        .map_err(ClientError::Transport)
}

fn check_xid(sent: u32, received: u32) -> CallResult<()> {
    if received == sent {
        Ok(())
    } else {
        Err(ClientError::Reply(ReplyFailure::Header(
            xdr::ReplyError::NotAReply { xid: received },
        )))
    }
}

/// READ data where it arrived: the reply record and the range of it the
/// data occupies, so that it is handed on (to FUSE) without a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadData {
    record: Vec<u8>,
    range: std::ops::Range<usize>,
}

impl ReadData {
    /// Data already gathered in a buffer of its own.
    pub fn from_vec(data: Vec<u8>) -> ReadData {
        ReadData {
            range: 0..data.len(),
            record: data,
        }
    }

    /// The data.
    pub fn bytes(&self) -> &[u8] {
        &self.record[self.range.clone()]
    }

    /// Keeps the first `length` bytes at most.
    pub fn truncate(&mut self, length: usize) {
        self.range.end = self.range.end.min(self.range.start + length);
    }
}

/// An NFSv3 client bound to one transport.
pub struct NfsClient {
    transport: Arc<dyn Transport>,
    xids: XidSource,
    machine_name: Vec<u8>,
    stamp: u32,
    stats: Arc<Stats>,
}

impl fmt::Debug for NfsClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NfsClient")
            .field("machine_name", &String::from_utf8_lossy(&self.machine_name))
            .finish_non_exhaustive()
    }
}

macro_rules! procedures {
    ($( $(#[$meta:meta])* $method:ident => $variant:ident($arguments:ty) -> $results:ty; )*) => {
        impl NfsClient {
            $(
                $(#[$meta])*
                ///
                /// # Errors
                /// [`ClientError`] when the call failed below NFS.
                pub fn $method(&self, caller: &Caller, arguments: $arguments) -> CallResult<$results> {
                    match self.call(caller, Arguments::$variant(arguments))? {
                        Results::$variant(results) => Ok(results),
                        _ => Err(ClientError::WrongResults),
                    }
                }
            )*
        }
    };
}

impl NfsClient {
    /// A client over `transport`, counting calls in `stats`.
    pub fn new(transport: Arc<dyn Transport>, stats: Arc<Stats>) -> NfsClient {
        let xids = XidSource::new();
        NfsClient {
            transport,
            stamp: xids.next() ^ std::process::id().rotate_left(16),
            xids,
            machine_name: machine_name(),
            stats,
        }
    }

    /// One NFS call.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn call(&self, caller: &Caller, arguments: Arguments) -> CallResult<Results> {
        self.stats.count_call(arguments.procedure());
        let credential = caller.credential(&self.machine_name, self.stamp);
        // Bulk replies get room in a ring transport's data pages: the
        // requested count plus headers and attributes.
        let read_capacity = match &arguments {
            Arguments::Read(read) => read.count as usize + 512,
            Arguments::ReadDirectoryPlus(listing) => listing.maximum_count as usize + 512,
            Arguments::ReadDirectory(listing) => listing.count as usize + 512,
            _ => 0,
        };
        // A WRITE's data travels in the record here; `write_from` sends it
        // beside the record (in data pages on a ring) instead.
        call_program_with::<Nfs3>(
            self.transport.as_ref(),
            self.xids.next(),
            credential,
            &arguments,
            &[],
            read_capacity,
        )
    }

    /// READ, the data left where it arrived: the results carry `data`
    /// empty and [`ReadData`] holds it (empty for a failed READ).
    ///
    /// # Errors
    /// [`ClientError`] when the call failed below NFS.
    pub fn read_in_place(
        &self,
        caller: &Caller,
        arguments: data::ReadArguments,
    ) -> CallResult<(data::ReadResult, ReadData)> {
        self.stats.count_call(nfs3::Procedure::Read);
        let credential = caller.credential(&self.machine_name, self.stamp);
        let read_capacity = arguments.count as usize + 512;
        let xid = self.xids.next();
        let record = call_record::<Nfs3>(
            self.transport.as_ref(),
            xid,
            credential,
            &Arguments::Read(arguments),
            &[],
            read_capacity,
        )?;
        let (reply_xid, result, range) =
            nfs3::message::decode_read_reply(&record).map_err(ClientError::Reply)?;
        check_xid(xid, reply_xid)?;
        Ok((result, ReadData { record, range }))
    }

    /// WRITE of `payload`, sent from where it lies (a ring transport copies
    /// it straight into its data pages); `arguments.data` is ignored (the
    /// record carries it empty, the payload beside it).
    ///
    /// # Errors
    /// [`ClientError`] when the call failed below NFS.
    pub fn write_from(
        &self,
        caller: &Caller,
        mut arguments: data::WriteArguments,
        payload: &[u8],
    ) -> CallResult<data::WriteResult> {
        self.stats.count_call(nfs3::Procedure::Write);
        let credential = caller.credential(&self.machine_name, self.stamp);
        arguments.data = Vec::new();
        match call_program_with::<Nfs3>(
            self.transport.as_ref(),
            self.xids.next(),
            credential,
            &Arguments::Write(arguments),
            payload,
            0,
        )? {
            Results::Write(results) => Ok(results),
            _ => Err(ClientError::WrongResults),
        }
    }
}

impl NfsClient {
    /// One NLM (lock manager) call, to the same server over the same
    /// transport.
    ///
    /// # Errors
    /// [`ClientError`]; a server without NLM answers PROG_UNAVAIL.
    pub fn lock_call(
        &self,
        caller: &Caller,
        arguments: nfs3::nlm::Arguments,
    ) -> CallResult<nfs3::nlm::Results> {
        self.stats.count_lock_call();
        let credential = caller.credential(&self.machine_name, self.stamp);
        call_program::<nfs3::nlm::Nlm4>(
            self.transport.as_ref(),
            self.xids.next(),
            credential,
            &arguments,
        )
    }

    /// This mount's NLM `caller_name`: the host, the daemon and a number
    /// of its own, so that two mounts on one host are two lock clients
    /// (FREE_ALL of one leaves the other's locks alone).
    pub fn lock_client_name(&self) -> Vec<u8> {
        let mut name = self.machine_name.clone();
        name.extend_from_slice(
            format!(":guest-driver:{}:{:08x}", std::process::id(), self.stamp).as_bytes(),
        );
        name
    }
}

procedures! {
    /// GETATTR.
    get_attributes => GetAttributes(inspect::GetAttributesArguments) -> inspect::GetAttributesResult;
    /// SETATTR.
    set_attributes => SetAttributes(inspect::SetAttributesArguments) -> inspect::SetAttributesResult;
    /// LOOKUP.
    lookup => Lookup(inspect::LookupArguments) -> inspect::LookupResult;
    /// ACCESS.
    access => Access(inspect::AccessArguments) -> inspect::AccessResult;
    /// READLINK.
    read_link => ReadLink(inspect::ReadLinkArguments) -> inspect::ReadLinkResult;
    /// CREATE.
    create => Create(create::CreateArguments) -> create::CreatedResult;
    /// MKDIR.
    make_directory => MakeDirectory(create::MakeDirectoryArguments) -> create::CreatedResult;
    /// SYMLINK.
    symlink => Symlink(create::SymlinkArguments) -> create::CreatedResult;
    /// MKNOD.
    make_node => MakeNode(create::MakeNodeArguments) -> create::CreatedResult;
    /// REMOVE.
    remove => Remove(remove::RemoveArguments) -> remove::RemoveResult;
    /// RMDIR.
    remove_directory => RemoveDirectory(remove::RemoveArguments) -> remove::RemoveResult;
    /// RENAME.
    rename => Rename(remove::RenameArguments) -> remove::RenameResult;
    /// LINK.
    link => Link(remove::LinkArguments) -> remove::LinkResult;
    /// READDIRPLUS.
    read_directory_plus => ReadDirectoryPlus(directory::ReadDirectoryPlusArguments) -> directory::ReadDirectoryPlusResult;
    /// FSSTAT.
    file_system_statistics => FileSystemStatistics(filesystem::FileSystemArguments) -> filesystem::FileSystemStatisticsResult;
    /// FSINFO.
    file_system_information => FileSystemInformation(filesystem::FileSystemArguments) -> filesystem::FileSystemInformationResult;
    /// PATHCONF.
    path_configuration => PathConfiguration(filesystem::FileSystemArguments) -> filesystem::PathConfigurationResult;
    /// COMMIT.
    commit => Commit(data::CommitArguments) -> data::CommitResult;
}

/// This host's name for AUTH_SYS, at most 255 bytes.
fn machine_name() -> Vec<u8> {
    let mut name = std::fs::read("/proc/sys/kernel/hostname").unwrap_or_default();
    while name.last().is_some_and(|byte| byte.is_ascii_whitespace()) {
        name.pop();
    }
    name.truncate(xdr::auth::MAX_MACHINE_NAME as usize);
    if name.is_empty() {
        name = b"guest".to_vec();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3::procedures::inspect::{GetAttributesArguments, GetAttributesOk};
    use nfs3::{FileAttributes, FileHandle, FileType, ProcedureResult, Time};
    use std::sync::Mutex;

    /// A transport that decodes the call like a server and answers from a
    /// closure, recording the credentials it saw.
    struct Loopback {
        seen: Arc<Mutex<Vec<xdr::Credential>>>,
        answer: fn(&Arguments) -> Results,
    }

    impl Transport for Loopback {
        fn call(&self, call: Call<'_>) -> Result<Vec<u8>, TransportError> {
            let xid = call.xid;
            let record = transport::spliced_record(&call)?;
            let (header, arguments) = nfs3::message::decode_call::<Nfs3>(&record)
                .map_err(|_| TransportError::Disconnected("bad call".into()))?;
            assert_eq!(header.xid, xid);
            self.seen
                .lock()
                .unwrap()
                .push(header.credential.credential().unwrap());
            Ok(nfs3::message::encode_reply(
                xid,
                &(self.answer)(&arguments),
                Vec::new(),
            ))
        }
    }

    fn attributes() -> FileAttributes {
        FileAttributes {
            file_type: FileType::Regular,
            mode: 0o644,
            link_count: 1,
            uid: 1000,
            gid: 1000,
            size: 12,
            used: 4096,
            device: Default::default(),
            file_system_id: 1,
            file_id: 42,
            access_time: Time::default(),
            modify_time: Time {
                seconds: 5,
                nanoseconds: 6,
            },
            change_time: Time::default(),
        }
    }

    #[test]
    fn a_call_carries_the_callers_credential_and_decodes_the_results() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let transport = Loopback {
            seen: Arc::clone(&seen),
            answer: |arguments| match arguments {
                Arguments::GetAttributes(_) => {
                    Results::GetAttributes(ProcedureResult::Ok(GetAttributesOk {
                        attributes: attributes(),
                    }))
                }
                _ => Results::Null(()),
            },
        };
        let stats = Arc::new(Stats::default());
        let client = NfsClient::new(Arc::new(transport), Arc::clone(&stats));
        let caller = Caller {
            uid: 1000,
            gid: 100,
            groups: (0..20).collect(),
        };
        let result = client
            .get_attributes(
                &caller,
                GetAttributesArguments {
                    object: FileHandle(vec![1, 2, 3]),
                },
            )
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(result.attributes, attributes());
        assert_eq!(stats.calls(nfs3::Procedure::GetAttributes), 1);
        let seen = seen.lock().unwrap();
        let sys = match &seen[..] {
            [xdr::Credential::Sys(sys)] => sys,
            other => panic!("not one AUTH_SYS credential: {other:?}"),
        };
        assert_eq!((sys.uid, sys.gid), (1000, 100));
        assert_eq!(sys.gids, (0..16).collect::<Vec<u32>>(), "at most 16 groups");
    }

    #[test]
    fn two_clients_send_different_stamps() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<NfsClient> = (0..2)
            .map(|_| {
                let transport = Loopback {
                    seen: Arc::clone(&seen),
                    answer: |_| Results::Null(()),
                };
                NfsClient::new(Arc::new(transport), Arc::new(Stats::default()))
            })
            .collect();
        for client in &clients {
            let _ = client.call(&Caller::root(), Arguments::Null(()));
        }
        let stamps: Vec<u32> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|credential| match credential {
                xdr::Credential::Sys(sys) => sys.stamp,
                other => panic!("not AUTH_SYS: {other:?}"),
            })
            .collect();
        assert_eq!(stamps.len(), 2);
        assert_ne!(
            stamps[0], stamps[1],
            "identical calls must not look like retransmissions"
        );
    }

    #[test]
    fn results_of_another_procedure_are_refused() {
        let transport = Loopback {
            seen: Arc::default(),
            // Answers NULL's empty results to a GETATTR: GETATTR results
            // then fail to decode.
            answer: |_| Results::Null(()),
        };
        let client = NfsClient::new(Arc::new(transport), Arc::new(Stats::default()));
        let error = client
            .get_attributes(
                &Caller::root(),
                GetAttributesArguments {
                    object: FileHandle(vec![1]),
                },
            )
            .unwrap_err();
        assert!(matches!(error, ClientError::Reply(_)), "{error}");
    }
}
