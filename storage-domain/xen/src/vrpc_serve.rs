//! One serving pass over every guest's VRPC ring: bounded work per guest,
//! one commit for all.
//!
//! Design: the kernel's poll loop calls [`serve_pass`] once per round with
//! the rings of every connected guest. Each guest gives at most a ring's
//! worth of requests per pass, so a guest whose requests never stop cannot
//! starve the others (or the TCP clients served in the same loop). Each
//! record goes through `Server::try_without_waiting(record,
//! ClientAddress::Domain(..), ..)`: a call that only reads and needs
//! blocks the data cache does not hold is parked on its ring (the request
//! keeps its slot) with its blocks queued in [`DiskReads`], and tried
//! again after the platform has read them (or run waiting after
//! `disk_reads::MAX_TRIES` refusals); replies that need no commit are
//! answered at once; the others are held
//! on their guest's ring (the request keeps its slot) until the poll loop's
//! commit, moved on with `Server::commit_advance` and never waited for,
//! covers them: [`release_durable`] then answers them, one commit for
//! every guest's changes (group commit across guests), NFS3ERR_IO for
//! each if the commit failed. A guest that
//! breaks the protocol, or whose pool copy fails, only gets its
//! [`GuestRing::failure`] set; the platform then drops that guest.
//!
//! Nothing here touches Xen: the rings are any [`vrpc::SharedMemory`]
//! (mapped grants in the kernel, `[AtomicU32]` in the tests).
#![forbid(unsafe_code)]

use crate::disk_reads::{DiskReads, Parked};
use alloc::vec::Vec;
use nfs_server::{Attempt, ClientAddress, Reply, ReplyRecord, Server};
use vfs::{FileSystem, WaitControl};
use vrpc::{Backend, Doorbell, ProtocolError, Request, SharedMemory};

/// One connected guest's ring, with its counters.
#[derive(Debug)]
pub struct GuestRing<R, P, D> {
    backend: Backend<R, P, D>,
    client: ClientAddress,
    /// The server session of the guest's calls (begun at its first call;
    /// ended by the platform when the device goes, releasing its locks).
    pub session: u64,
    failure: Option<ProtocolError>,
    /// Requests taken off the ring.
    pub requests: u64,
    /// Responses written (replies, NO_REPLY and REPLY_TOO_LARGE).
    pub replies: u64,
    /// Replies held until a commit makes their changes durable, in the
    /// order of their calls.
    held: Vec<(Request, Reply)>,
    /// Calls waiting for blocks the disk is reading, in arrival order.
    parked: Vec<(Request, Parked)>,
}

impl<R: SharedMemory, P: SharedMemory, D: Doorbell> GuestRing<R, P, D> {
    /// Serve `backend` for `client` (the guest's `ClientAddress::Domain`).
    pub fn new(backend: Backend<R, P, D>, client: ClientAddress) -> Self {
        GuestRing {
            backend,
            client,
            session: nfs_server::locks::NO_SESSION,
            failure: None,
            requests: 0,
            replies: 0,
            held: Vec::new(),
            parked: Vec::new(),
        }
    }

    /// Calls parked for the disk.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Make `request`'s call without waiting for the disk if it only
    /// reads: answer it, hold its reply for a commit, or park it until
    /// the blocks it needs are read (`before`: how it was parked).
    fn attempt<F: FileSystem + WaitControl>(
        &mut self,
        request: Request,
        before: Option<Parked>,
        server: &mut Server<F>,
        reads: &mut DiskReads,
    ) {
        let reply = match server.try_without_waiting(request.record(), self.client, self.session) {
            Attempt::Answered(reply) => reply,
            Attempt::WouldWait => {
                let wanted = server.filesystem().take_wanted();
                match reads.refused(wanted, before) {
                    Some(parked) => {
                        self.parked.push((request, parked));
                        return;
                    }
                    None => server.handle_in_session(request.record(), self.client, self.session),
                }
            }
        };
        match reply {
            None => match self.backend.respond_no_reply(request) {
                Ok(()) => self.replies += 1,
                Err(error) => self.failure = Some(error),
            },
            Some(reply) if reply.needs_commit() => self.held.push((request, reply)),
            Some(reply) => self.answer(request, &reply.into_record_unchecked_durability()),
        }
    }

    /// Replies held for a commit.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The protocol error that stopped this ring, if any: the platform
    /// drops the guest. A failed ring is no longer served.
    pub fn failure(&self) -> Option<ProtocolError> {
        self.failure
    }

    /// The final check before sleeping (`RING_FINAL_CHECK_FOR_REQUESTS`):
    /// whether a request arrived (or the ring failed) since the last pass.
    pub fn final_check(&mut self) -> bool {
        if self.failure.is_some() {
            return true;
        }
        match self.backend.enable_notifications() {
            Ok(pending) => pending,
            Err(error) => {
                self.failure = Some(error);
                true
            }
        }
    }

    fn answer(&mut self, request: Request, reply: &ReplyRecord) {
        match self
            .backend
            .respond(request, &reply.bytes, reply.segment.clone())
        {
            Ok(_) => self.replies += 1,
            Err(error) => self.failure = Some(error),
        }
    }
}

/// Serve every ring in `rings` once (see the module doc). Returns whether
/// a guest may have more requests right away (it used its whole share, or
/// failed), so the caller should not sleep.
pub fn serve_pass<'a, F, R, P, D>(
    rings: impl IntoIterator<Item = &'a mut GuestRing<R, P, D>>,
    server: &mut Server<F>,
    reads: &mut DiskReads,
) -> bool
where
    F: FileSystem + WaitControl,
    R: SharedMemory + 'a,
    P: SharedMemory + 'a,
    D: Doorbell + 'a,
{
    let mut rings: Vec<&mut GuestRing<R, P, D>> = rings
        .into_iter()
        .filter(|ring| ring.failure.is_none())
        .collect();
    // Parked calls first, every guest's, before new calls' reads can
    // crowd their blocks out of the cache.
    retry_parked(rings.iter_mut().map(|ring| &mut **ring), server, reads);
    let mut busy = false;
    for ring in rings.iter_mut() {
        let share = ring.backend.parameters().slot_count;
        let mut taken = 0;
        while taken < share {
            let request = match ring.backend.next_request() {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    ring.failure = Some(error);
                    break;
                }
            };
            taken += 1;
            ring.requests += 1;
            if ring.session == nfs_server::locks::NO_SESSION {
                ring.session = server.begin_session();
            }
            ring.attempt(request, None, server, reads);
            if ring.failure.is_some() {
                break;
            }
        }
        busy |= taken == share || ring.failure.is_some();
    }
    busy
}

/// Try again, in their order, the parked calls whose blocks have been
/// read (the platform calls this right after a fill, before anything
/// else can evict them).
pub fn retry_parked<'a, F, R, P, D>(
    rings: impl IntoIterator<Item = &'a mut GuestRing<R, P, D>>,
    server: &mut Server<F>,
    reads: &mut DiskReads,
) where
    F: FileSystem + WaitControl,
    R: SharedMemory + 'a,
    P: SharedMemory + 'a,
    D: Doorbell + 'a,
{
    for ring in rings {
        for (request, parked) in core::mem::take(&mut ring.parked) {
            if ring.failure.is_some() {
                break;
            }
            if reads.ready(&parked) {
                ring.attempt(request, Some(parked), server, reads);
            } else {
                ring.parked.push((request, parked));
            }
        }
    }
}

/// Answer the held replies whose changes are durable now; with
/// `commit_failed` (the last `Server::commit_advance` failed) every held
/// reply not covered by an earlier commit becomes its NFS3ERR_IO. Returns
/// how many replies are still held.
pub fn release_durable<'a, F, R, P, D>(
    rings: impl IntoIterator<Item = &'a mut GuestRing<R, P, D>>,
    server: &Server<F>,
    commit_failed: bool,
) -> usize
where
    F: FileSystem,
    R: SharedMemory + 'a,
    P: SharedMemory + 'a,
    D: Doorbell + 'a,
{
    let mut still_held = 0;
    for ring in rings {
        if ring.held.is_empty() {
            continue;
        }
        let held = core::mem::take(&mut ring.held);
        for (request, reply) in held {
            let ready = commit_failed
                || reply
                    .durable_at()
                    .is_none_or(|sequence| server.is_durable(sequence));
            if !ready {
                ring.held.push((request, reply));
            } else if ring.failure.is_none() {
                ring.answer(request, &server.settle_record(reply));
            }
        }
        still_held += ring.held.len();
    }
    still_held
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use alloc::vec;
    use core::cell::Cell;
    use core::sync::atomic::{AtomicU32, Ordering};
    use nfs3::procedures::create::MakeDirectoryArguments;
    use nfs3::{Arguments, DirectoryOperationArguments, FileHandle, Nfs3, Results};
    use nfs_server::{ExportConfig, ServerConfig};
    use sdfs::device::MemoryDevice;
    use sdfs::{BlockDevice, CachedDevice, DeviceError, FlushTicket, FormatOptions, Volume};
    use vfs::StepClock;
    use vrpc::{CountingDoorbell, Frontend, RingParameters};

    const PARAMETERS: RingParameters = RingParameters {
        slot_count: 4,
        slot_size: 1024,
        pool_pages: 4,
    };

    fn server() -> Server<Volume<CachedDevice<MemoryDevice>>> {
        let mut device = MemoryDevice::new(512);
        format(&mut device);
        server_on(device, 0)
    }

    fn format(device: &mut MemoryDevice) {
        let options = FormatOptions {
            uuid: [3; 16],
            handle_secret: [9; 32],
        };
        Volume::format(device, options, &StepClock::new(1_700_000_000)).unwrap();
    }

    /// A disk whose started flushes are answered (with `outcome`) only
    /// once `answer` is set, as the Xen disk's are when its backend
    /// responds.
    struct SlowDisk {
        inner: MemoryDevice,
        answer: Rc<Cell<bool>>,
        outcome: Result<(), DeviceError>,
        started: u64,
    }

    impl BlockDevice for SlowDisk {
        fn block_count(&self) -> u64 {
            self.inner.block_count()
        }

        fn read_block(
            &mut self,
            block: u64,
            buffer: &mut [u8; sdfs::BLOCK_SIZE],
        ) -> Result<(), DeviceError> {
            self.inner.read_block(block, buffer)
        }

        fn write_block(
            &mut self,
            block: u64,
            data: &[u8; sdfs::BLOCK_SIZE],
        ) -> Result<(), DeviceError> {
            self.inner.write_block(block, data)
        }

        fn flush(&mut self) -> Result<(), DeviceError> {
            self.inner.flush()
        }

        fn start_flush(&mut self) -> Result<Option<FlushTicket>, DeviceError> {
            self.started += 1;
            Ok(Some(FlushTicket(self.started)))
        }

        fn poll_flush(&mut self, ticket: FlushTicket) -> Option<Result<(), DeviceError>> {
            assert_eq!(
                ticket,
                FlushTicket(self.started),
                "only the last flush is polled"
            );
            self.answer.get().then_some(self.outcome)
        }
    }

    #[allow(clippy::type_complexity)] // a test's wiring
    fn slow_server(
        outcome: Result<(), DeviceError>,
    ) -> (Server<Volume<CachedDevice<SlowDisk>>>, Rc<Cell<bool>>) {
        let mut inner = MemoryDevice::new(512);
        format(&mut inner);
        let answer = Rc::new(Cell::new(false));
        let disk = SlowDisk {
            inner,
            answer: answer.clone(),
            outcome,
            started: 0,
        };
        (server_on(disk, 0), answer)
    }

    /// A server over `device` behind a data cache of `room` blocks.
    fn server_on<D: BlockDevice>(device: D, room: u64) -> Server<Volume<CachedDevice<D>>> {
        let volume = Volume::open(
            CachedDevice::new(device, room * sdfs::BLOCK_SIZE as u64),
            Box::new(StepClock::new(1_700_000_100)),
            1 << 20,
        )
        .unwrap();
        let config = ServerConfig {
            // Group commit is what is tested: VRPC calls follow NFS rules here.
            exports: vec![ExportConfig::parse("/,no_root_squash,vrpc=sync").unwrap()],
            handle_secret: [9; 32],
            write_verifier: *b"verifier",
            file_system_id: 1,
            port: 0,
        };
        Server::new(volume, config).unwrap()
    }

    fn region(bytes: usize) -> Vec<AtomicU32> {
        (0..bytes / 4).map(|_| AtomicU32::new(0)).collect()
    }

    /// One guest's shared memory and doorbells.
    struct Guest {
        ring: Vec<AtomicU32>,
        pool: Vec<AtomicU32>,
        to_backend: CountingDoorbell,
        to_frontend: CountingDoorbell,
    }

    impl Guest {
        fn new() -> Guest {
            Guest {
                ring: region(PARAMETERS.ring_bytes()),
                pool: region(PARAMETERS.pool_bytes()),
                to_backend: CountingDoorbell::new(),
                to_frontend: CountingDoorbell::new(),
            }
        }

        #[allow(clippy::type_complexity)] // the test's whole wiring in one place
        fn connect(
            &self,
            domain: u32,
        ) -> (
            Frontend<&[AtomicU32], &[AtomicU32], &CountingDoorbell>,
            GuestRing<&[AtomicU32], &[AtomicU32], &CountingDoorbell>,
        ) {
            let frontend =
                Frontend::new(&self.ring[..], &self.pool[..], &self.to_backend, PARAMETERS)
                    .unwrap();
            let backend = Backend::new(
                &self.ring[..],
                &self.pool[..],
                &self.to_frontend,
                PARAMETERS,
                nfs_server::MAX_RECORD_SIZE,
            )
            .unwrap();
            (
                frontend,
                GuestRing::new(backend, ClientAddress::Domain(domain)),
            )
        }
    }

    fn mkdir(xid: u32, root: &FileHandle, name: &[u8]) -> Vec<u8> {
        let credential = xdr::OpaqueAuth::sys(&xdr::AuthSys {
            stamp: 1,
            machine_name: b"guest".to_vec(),
            uid: 0,
            gid: 0,
            gids: vec![0],
        });
        nfs3::message::encode_call::<Nfs3>(
            xid,
            credential,
            &Arguments::MakeDirectory(MakeDirectoryArguments {
                location: DirectoryOperationArguments {
                    directory: root.clone(),
                    name: name.to_vec(),
                },
                attributes: Default::default(),
            }),
        )
    }

    fn null_call(xid: u32) -> Vec<u8> {
        [xid, 0, 2, 100_003, 3, 0, 0, 0, 0, 0]
            .iter()
            .flat_map(|word| word.to_be_bytes())
            .collect()
    }

    /// Every response the frontend can collect: (xid, reply record).
    fn responses(
        frontend: &mut Frontend<&[AtomicU32], &[AtomicU32], &CountingDoorbell>,
    ) -> Vec<(u32, Vec<u8>)> {
        let mut collected = Vec::new();
        while let Some(completion) = frontend.poll_response().unwrap() {
            collected.push((completion.xid, completion.reply.unwrap()));
        }
        collected
    }

    /// A file `name` in the root holding `contents`.
    fn write_file<F: FileSystem>(fs: &mut F, name: &[u8], contents: &[u8]) {
        let root = fs.root();
        let file = fs
            .create(
                root,
                name,
                &vfs::NewNode::Regular,
                &vfs::Ownership {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            )
            .unwrap();
        fs.write(file.inode, 0, contents).unwrap();
    }

    /// The handle of `name` in `directory`, looked up as guest 1.
    fn lookup<F: FileSystem>(
        server: &mut Server<F>,
        directory: FileHandle,
        name: &[u8],
    ) -> FileHandle {
        let call = nfs3::message::encode_call::<Nfs3>(
            1,
            xdr::OpaqueAuth::none(),
            &Arguments::Lookup(nfs3::procedures::inspect::LookupArguments {
                what: DirectoryOperationArguments {
                    directory,
                    name: name.to_vec(),
                },
            }),
        );
        let reply = server.handle(&call, ClientAddress::Domain(1)).unwrap();
        let reply = server.finish(reply);
        match nfs3::message::decode_reply::<Nfs3>(&reply, 3).unwrap().1 {
            Results::Lookup(result) => result.into_result().unwrap().object,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn made_directory(reply: &[u8]) -> bool {
        let (_, results) = nfs3::message::decode_reply::<Nfs3>(reply, 9).unwrap();
        match results {
            Results::MakeDirectory(result) => result.into_result().is_ok(),
            _ => false,
        }
    }

    /// A READ's data travels in the guest's reply pages, exactly the range
    /// the server named, and the guest rebuilds the server's record.
    #[test]
    fn read_data_goes_to_the_reply_pages() {
        use nfs3::procedures::data::ReadArguments;
        let mut server = server();
        let client = ClientAddress::Domain(1);
        let root = server.root_handle("/", &client).unwrap();
        let contents: Vec<u8> = (0..10_001u32).map(|index| (index % 241) as u8).collect();
        write_file(server.filesystem(), b"data", &contents);
        let handle = lookup(&mut server, root, b"data");
        let guest = Guest::new();
        let (mut frontend, mut ring) = guest.connect(1);
        let read = nfs3::message::encode_call::<Nfs3>(
            7,
            xdr::OpaqueAuth::none(),
            &Arguments::Read(ReadArguments {
                file: handle,
                offset: 0,
                count: 12_000,
            }),
        );
        frontend.submit(&read, None, 12_000).unwrap();
        serve_pass([&mut ring], &mut server, &mut DiskReads::new(0));
        let mut inline = [0u8; 4];
        vrpc::SharedMemory::read(
            &&guest.ring[..],
            vrpc::layout::HEADER_SIZE + vrpc::layout::RESPONSE_RECORD_LENGTH,
            &mut inline,
        )
        .unwrap();
        let replies = responses(&mut frontend);
        assert_eq!(replies.len(), 1);
        let record = &replies[0].1;
        let (xid, result, range) = nfs3::message::decode_read_reply(record).unwrap();
        assert_eq!(xid, 7);
        assert!(result.into_result().unwrap().end_of_file);
        assert_eq!(&record[range], &contents[..]);
        // Only the record around the data was in the slot.
        assert_eq!(
            u32::from_le_bytes(inline) as usize,
            record.len() - contents.len()
        );
    }

    #[test]
    fn two_guests_share_one_commit() {
        let mut server = server();
        let root = server.root_handle("/", &ClientAddress::Domain(1)).unwrap();
        let (first, second) = (Guest::new(), Guest::new());
        let (mut front_a, mut ring_a) = first.connect(1);
        let (mut front_b, mut ring_b) = second.connect(2);
        let a1 = front_a.submit(&mkdir(1, &root, b"a1"), None, 0).unwrap();
        let a2 = front_a.submit(&null_call(2), None, 0).unwrap();
        let a3 = front_a.submit(&mkdir(3, &root, b"a3"), None, 0).unwrap();
        let b1 = front_b.submit(&mkdir(1, &root, b"b1"), None, 0).unwrap();
        let commits = server.statistics().commits;
        let busy = serve_pass(
            [&mut ring_a, &mut ring_b],
            &mut server,
            &mut DiskReads::new(0),
        );
        assert!(!busy, "nobody used a whole ring");
        assert_eq!((ring_a.held(), ring_b.held()), (2, 1));
        // A disk without started flushes commits whole.
        assert_eq!(server.commit_advance(), Ok(false));
        assert_eq!(
            release_durable([&mut ring_a, &mut ring_b], &server, false),
            0
        );
        assert_eq!(
            server.statistics().commits,
            commits + 1,
            "one commit for all"
        );
        let from_a = responses(&mut front_a);
        let xids: Vec<u32> = from_a.iter().map(|(xid, _)| *xid).collect();
        // The NULL reply needs no commit and goes first.
        assert_eq!(xids, [a2, a1, a3]);
        assert!(made_directory(&from_a[1].1) && made_directory(&from_a[2].1));
        let from_b = responses(&mut front_b);
        assert_eq!(from_b.len(), 1);
        assert_eq!(from_b[0].0, b1);
        assert!(made_directory(&from_b[0].1));
        assert_eq!((ring_a.requests, ring_a.replies), (3, 3));
        assert_eq!((ring_b.requests, ring_b.replies), (1, 1));
        assert!(!ring_a.final_check() && !ring_b.final_check());
    }

    #[test]
    fn a_full_ring_is_one_share_and_keeps_the_loop_busy() {
        let mut server = server();
        let guest = Guest::new();
        let (mut frontend, mut ring) = guest.connect(1);
        for xid in 0..PARAMETERS.slot_count {
            frontend.submit(&null_call(xid + 10), None, 0).unwrap();
        }
        assert!(ring.final_check(), "requests are pending");
        assert!(
            serve_pass([&mut ring], &mut server, &mut DiskReads::new(0)),
            "a whole share was used"
        );
        assert_eq!(
            responses(&mut frontend).len(),
            PARAMETERS.slot_count as usize
        );
        assert!(!serve_pass(
            [&mut ring],
            &mut server,
            &mut DiskReads::new(0)
        ));
        assert!(!ring.final_check());
        frontend.submit(&null_call(99), None, 0).unwrap();
        assert!(ring.final_check(), "a request after the check is seen");
    }

    #[test]
    fn a_hostile_guest_fails_alone() {
        let mut server = server();
        let (good, bad) = (Guest::new(), Guest::new());
        let (mut front_good, mut ring_good) = good.connect(1);
        let (mut front_bad, mut ring_bad) = bad.connect(2);
        front_good.submit(&null_call(1), None, 0).unwrap();
        front_bad.submit(&null_call(1), None, 0).unwrap();
        // The bad guest claims far more requests than its ring holds.
        bad.ring[0].store(1000u32.to_le(), Ordering::Release);
        assert!(serve_pass(
            [&mut ring_bad, &mut ring_good],
            &mut server,
            &mut DiskReads::new(0)
        ));
        assert!(matches!(
            ring_bad.failure(),
            Some(ProtocolError::IndexOverrun { producer: 1000 })
        ));
        assert_eq!(responses(&mut front_good).len(), 1);
        assert_eq!(ring_good.failure(), None);
        // A failed ring is skipped from then on.
        assert!(!serve_pass(
            [&mut ring_bad, &mut ring_good],
            &mut server,
            &mut DiskReads::new(0)
        ));
        assert!(ring_bad.final_check(), "a failed ring keeps the loop awake");
        drop(front_bad);
    }

    #[test]
    fn a_garbage_slot_is_a_protocol_error() {
        let mut server = server();
        let guest = Guest::new();
        let (mut frontend, mut ring) = guest.connect(3);
        frontend.submit(&null_call(1), None, 0).unwrap();
        // Flags word of slot 0 (offset 64 + 4): must be zero.
        guest.ring[(64 + 4) / 4].store(7, Ordering::Relaxed);
        assert!(serve_pass([&mut ring], &mut server, &mut DiskReads::new(0)));
        assert_eq!(ring.failure(), Some(ProtocolError::UnknownFlags));
        assert_eq!(ring.requests, 0);
    }

    fn made_directory_failed_with_io(reply: &[u8]) -> bool {
        let (_, results) = nfs3::message::decode_reply::<Nfs3>(reply, 9).unwrap();
        match results {
            Results::MakeDirectory(result) => {
                result.into_result().err() == Some(nfs3::NfsError::Io)
            }
            _ => false,
        }
    }

    /// The loop never waits for a commit's flush: a reply that promises
    /// durability is held while its guest's and other guests' calls that
    /// need no commit are answered, and goes out when the disk answers.
    #[test]
    fn held_replies_wait_for_the_disk_while_other_calls_are_answered() {
        let (mut server, answer) = slow_server(Ok(()));
        let root = server.root_handle("/", &ClientAddress::Domain(1)).unwrap();
        let (first, second) = (Guest::new(), Guest::new());
        let (mut front_a, mut ring_a) = first.connect(1);
        let (mut front_b, mut ring_b) = second.connect(2);
        let made = front_a.submit(&mkdir(1, &root, b"made"), None, 0).unwrap();
        let null_b = front_b.submit(&null_call(1), None, 0).unwrap();
        serve_pass(
            [&mut ring_a, &mut ring_b],
            &mut server,
            &mut DiskReads::new(0),
        );
        assert_eq!(
            server.commit_advance(),
            Ok(true),
            "the flush is on the disk"
        );
        assert_eq!(
            release_durable([&mut ring_a, &mut ring_b], &server, false),
            1
        );
        assert!(
            responses(&mut front_a).is_empty(),
            "answered before durable"
        );
        assert_eq!(responses(&mut front_b)[0].0, null_b);
        // Meanwhile both guests are served.
        let null_a = front_a.submit(&null_call(2), None, 0).unwrap();
        let again_b = front_b.submit(&null_call(2), None, 0).unwrap();
        serve_pass(
            [&mut ring_a, &mut ring_b],
            &mut server,
            &mut DiskReads::new(0),
        );
        assert_eq!(server.commit_advance(), Ok(true));
        assert_eq!(
            release_durable([&mut ring_a, &mut ring_b], &server, false),
            1
        );
        assert_eq!(responses(&mut front_a)[0].0, null_a);
        assert_eq!(responses(&mut front_b)[0].0, again_b);
        // The disk answers: the superblock's flush, then done.
        answer.set(true);
        while server.commit_advance() == Ok(true) {}
        assert_eq!(
            release_durable([&mut ring_a, &mut ring_b], &server, false),
            0
        );
        let from_a = responses(&mut front_a);
        assert_eq!(from_a.len(), 1);
        assert_eq!(from_a[0].0, made);
        assert!(made_directory(&from_a[0].1));
        assert!(!server.has_uncommitted());
    }

    /// A failed flush answers every held reply with NFS3ERR_IO, never
    /// with a success for a change that is not durable.
    #[test]
    fn a_failed_flush_answers_held_replies_with_io_errors() {
        let (mut server, answer) = slow_server(Err(DeviceError::Io));
        let root = server.root_handle("/", &ClientAddress::Domain(1)).unwrap();
        let guest = Guest::new();
        let (mut front, mut ring) = guest.connect(1);
        front.submit(&mkdir(1, &root, b"lost"), None, 0).unwrap();
        serve_pass([&mut ring], &mut server, &mut DiskReads::new(0));
        assert_eq!(server.commit_advance(), Ok(true));
        assert_eq!(release_durable([&mut ring], &server, false), 1);
        answer.set(true);
        assert!(server.commit_advance().is_err());
        assert_eq!(release_durable([&mut ring], &server, true), 0);
        let replies = responses(&mut front);
        assert_eq!(replies.len(), 1);
        assert!(made_directory_failed_with_io(&replies[0].1));
    }

    /// A READ of data the cache does not hold is parked while the disk
    /// reads it, another guest is answered meanwhile, and the READ is
    /// answered with the right bytes once the blocks are filled in.
    #[test]
    fn a_read_of_cold_data_is_parked_while_other_guests_are_answered() {
        use nfs3::procedures::data::ReadArguments;
        let contents: Vec<u8> = (0..2_000_000u32).map(|index| (index % 239) as u8).collect();
        let image = {
            let mut device = MemoryDevice::new(8192);
            format(&mut device);
            let mut warm = server_on(device, 0);
            write_file(warm.filesystem(), b"data", &contents);
            warm.filesystem().commit().unwrap();
            warm.into_filesystem().into_device().into_inner()
        };
        let mut server = server_on(image, 256);
        let root = server.root_handle("/", &ClientAddress::Domain(1)).unwrap();
        let handle = lookup(&mut server, root, b"data");
        let (first, second) = (Guest::new(), Guest::new());
        let (mut front_a, mut ring_a) = first.connect(1);
        let (mut front_b, mut ring_b) = second.connect(2);
        let read = nfs3::message::encode_call::<Nfs3>(
            7,
            xdr::OpaqueAuth::none(),
            &Arguments::Read(ReadArguments {
                file: handle,
                offset: 1_500_000,
                count: 12_000,
            }),
        );
        front_a.submit(&read, None, 12_000).unwrap();
        let null_b = front_b.submit(&null_call(1), None, 0).unwrap();
        let mut reads = DiskReads::new(256);
        serve_pass([&mut ring_a, &mut ring_b], &mut server, &mut reads);
        let counters = server.filesystem().device().counters();
        assert_eq!(ring_a.parked(), 1, "the cold READ is parked: {counters:?}");
        assert!(responses(&mut front_a).is_empty());
        assert_eq!(
            responses(&mut front_b)[0].0,
            null_b,
            "the other guest is answered"
        );
        // The platform's part: read what is queued, fill, serve again.
        let mut fills = 0;
        let mut answered = Vec::new();
        while answered.is_empty() {
            let (start, count) = reads.next().expect("a read queued for the parked call");
            let blocks = count.min(33);
            let cache = server.filesystem().device_mut();
            cache.fill_started();
            reads.started(blocks);
            let mut data = vec![0u8; blocks as usize * sdfs::BLOCK_SIZE];
            cache.inner_mut().read_blocks(start, &mut data).unwrap();
            cache.fill(start, Some(&data));
            reads.finished(start, blocks);
            fills += 1;
            assert!(fills < 20, "never answered");
            serve_pass([&mut ring_a, &mut ring_b], &mut server, &mut reads);
            answered = responses(&mut front_a);
        }
        assert_eq!(ring_a.parked(), 0);
        let record = &answered[0].1;
        let (xid, result, range) = nfs3::message::decode_read_reply(record).unwrap();
        assert_eq!(xid, 7);
        result.into_result().unwrap();
        assert_eq!(&record[range], &contents[1_500_000..1_512_000]);
        assert_eq!(reads.parked, 1);
        assert_eq!(reads.waited, 0);
    }
}
