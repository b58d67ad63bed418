//! NFSv3, MOUNT and PORTMAP over TCP on smoltcp, driven by the kernel's
//! poll loop.
//!
//! One socket always listens on the port; when it takes a client, a new
//! one is made to listen, so the number of clients is bounded only by
//! [`Limits::max_connections`] (sized from the heap at boot:
//! [`connections_that_fit`]). Each connected socket holds
//! [`CONNECTION_BYTES`]; a closed one is freed. When the table is full,
//! the next client is still admitted: the connection idle longest is
//! closed first (`tcp_admission` holds the rules). A client that stops in
//! the middle of a record, or does not take its reply, for
//! [`Limits::stall_timeout`] is dropped.
//!
//! Each connection reassembles RPC records (record marking, RFC 5531
//! section 11) with a [`RecordReassembler`] bounded by
//! [`nfs_server::MAX_RECORD_SIZE`]; an oversized record aborts the
//! connection. A complete record goes through `Server::handle`; a reply
//! that promises durability is held until the poll loop's commit covers
//! it ([`TcpServer::release`]: the loop never waits for the disk's
//! flushes), and the connection reads no further record meanwhile. A
//! reply is queued as it came from the server, behind its record mark
//! (kept apart, so the reply is not copied to prepend it), and sent as the
//! socket's buffer drains. While a reply is pending, the connection reads no
//! further records (back-pressure on the client through TCP's window).
//!
//! Memory beyond the sockets is bounded across all connections together.
//! Records being reassembled: by [`RECORD_BUDGET`]; the connection with
//! the most bytes of an unfinished record always reads (so some record
//! always completes); the others read only while the total stays within
//! the budget, and otherwise wait in TCP's window. Replies waiting to be
//! sent: a connection handles a record only while the replies queued by
//! all connections total less than [`REPLY_BUDGET`].
//!
//! Addresses: static (`ip=`, `gw=`) or leased by DHCPv4 (smoltcp's
//! client, which renews the lease itself); a change is handed to the
//! caller as an [`AddressEvent`] to print and publish.
//!
//! Nothing here blocks or touches Xen: the device is any smoltcp
//! `phy::Device` (netfront in the kernel, an in-memory wire in the tests),
//! and the caller decides when to poll and how long to sleep
//! ([`TcpServer::poll_delay`]).
#![forbid(unsafe_code)]

use crate::disk_reads::{DiskReads, Parked};
use crate::tcp_admission::{self, ConnectionView};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use nfs_server::locks::NO_SESSION;
use nfs_server::{Attempt, ClientAddress, Reply, Server, MAX_RECORD_SIZE};
use smoltcp::iface::{
    Config as InterfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle,
    SocketSet,
};
use smoltcp::phy::Device;
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr};
use vfs::FileSystem;
use vfs::WaitControl;
use xdr::record::{LAST_FRAGMENT, MAX_FRAGMENT_LENGTH};
use xdr::{Pushed, RecordReassembler};

/// Bytes of each socket's receive buffer (the advertised window).
pub const RECEIVE_BUFFER: usize = 32 * 1024;
/// Bytes of each socket's send buffer.
pub const SEND_BUFFER: usize = 32 * 1024;
/// Heap bytes one connection holds on its own: its socket with both
/// buffers and its bookkeeping (its share of the record and reply budgets
/// is counted in [`SHARED_BYTES`]).
pub const CONNECTION_BYTES: usize = RECEIVE_BUFFER
    + SEND_BUFFER
    + core::mem::size_of::<tcp::Socket<'static>>()
    + core::mem::size_of::<Connection>()
    + 64;
/// Bytes of unfinished records held by all connections together, beyond
/// which only the connection furthest along reads (so at most twice this
/// is ever buffered).
pub const RECORD_BUDGET: usize = MAX_RECORD_SIZE;
/// Bytes of queued replies of all connections together at which no
/// connection handles a further record until some drain (so at most this
/// plus one reply is ever queued).
pub const REPLY_BUDGET: usize = MAX_RECORD_SIZE;
/// Heap bytes the record and reply budgets can take at worst, whatever
/// the number of connections.
pub const SHARED_BYTES: usize = 2 * RECORD_BUDGET + 2 * REPLY_BUDGET;
/// Clients served at once unless the command line says otherwise
/// (`connections=`): 64 take 4 MiB of the 16 MiB heap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A client that owes progress (half a record sent, or a reply not
/// taken) this long is dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle connections are probed this often (TCP keep-alive)...
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// ...and aborted when the peer leaves data or probes unanswered this
/// long, so a vanished client does not hold its socket forever.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an aborted socket is kept for its RST to go out (which needs
/// the peer's link-layer address: a vanished peer never answers ARP).
const RESET_GRACE: Duration = Duration::from_secs(1);
/// Rounds of poll-and-serve per [`TcpServer::poll`] call before the
/// caller gets control back (to look at xenstore).
const ROUNDS: usize = 64;

/// How many connections fit in `free_heap` bytes, next to the shared
/// budgets ([`SHARED_BYTES`]) and one listening socket.
pub fn connections_that_fit(free_heap: usize) -> usize {
    (free_heap.saturating_sub(SHARED_BYTES) / CONNECTION_BYTES).saturating_sub(1)
}

/// The interface's IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// A fixed address and prefix length, and an optional default gateway.
    Static {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length (1 to 32).
        prefix: u8,
        /// The default gateway.
        gateway: Option<Ipv4Addr>,
    },
    /// Leased from a DHCPv4 server (and renewed).
    Dhcp,
}

/// A change of the interface's address, for the console and xenstore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressEvent {
    /// An address was leased (or the lease changed).
    Leased {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
        /// The router the server named, now the default route.
        router: Option<Ipv4Addr>,
    },
    /// The lease ran out or the server refused its renewal: the
    /// interface has no address until a new lease.
    Lost,
}

/// The limits of the connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients connected at once; a further one evicts the idle longest.
    pub max_connections: usize,
    /// How long a client may owe progress before it is dropped.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            stall_timeout: STALL_TIMEOUT,
        }
    }
}

/// Counters for the console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStatistics {
    /// Connections accepted.
    pub connections: u64,
    /// Records handled.
    pub records: u64,
    /// Replies sent (records that were not calls get none).
    pub replies: u64,
    /// Connections aborted for an oversized record.
    pub oversized: u64,
    /// Connections closed (idle longest) to admit a new client.
    pub evicted: u64,
    /// Connections dropped for owing progress past the stall timeout.
    pub stalled: u64,
    /// Most clients connected at once.
    pub most_connected: usize,
    /// Most bytes of unfinished records held at once.
    pub most_buffered: usize,
}

#[derive(Debug)]
struct Connection {
    handle: SocketHandle,
    reassembler: RecordReassembler,
    /// Bytes consumed into the unfinished record (marks included).
    buffered: usize,
    /// The record mark of the reply being sent, the reply, and how much of
    /// the two went (the mark counts first).
    mark: [u8; 4],
    output: Vec<u8>,
    sent: usize,
    /// The client, from the moment the socket left Listen until it is
    /// closed (`None`: listening, or aborted and sending its RST).
    peer: Option<IpAddr>,
    /// See [`ConnectionView::last_activity`].
    last_activity: Instant,
    /// When the socket was first seen aborted with its RST still to send.
    aborted_at: Option<Instant>,
    /// A reply held until a commit makes its changes durable
    /// ([`TcpServer::release`]); no further record is read meanwhile, so
    /// replies keep the order of their calls.
    held: Option<Reply>,
    /// A call waiting for blocks the disk is reading (its record); no
    /// further record is read meanwhile.
    parked: Option<(Vec<u8>, Parked)>,
}

impl Connection {
    fn new(handle: SocketHandle, now: Instant) -> Connection {
        Connection {
            handle,
            reassembler: RecordReassembler::new(MAX_RECORD_SIZE),
            buffered: 0,
            mark: [0; 4],
            output: Vec::new(),
            sent: 0,
            peer: None,
            last_activity: now,
            aborted_at: None,
            held: None,
            parked: None,
        }
    }

    /// Forget the client and free its record and reply.
    fn reset(&mut self) {
        self.reassembler = RecordReassembler::new(MAX_RECORD_SIZE);
        self.buffered = 0;
        self.output = Vec::new();
        self.sent = 0;
        self.peer = None;
        self.held = None;
        self.parked = None;
    }

    /// Bytes of the queued reply (mark included) not yet sent.
    fn unsent(&self) -> usize {
        if self.output.is_empty() {
            0
        } else {
            (self.mark.len() + self.output.len()).saturating_sub(self.sent)
        }
    }

    /// Queues `reply` behind its record mark: one last fragment (a reply is
    /// far below the 2 GiB a fragment may hold). The server's replies are
    /// never empty; an empty one would be nothing to send.
    fn queue(&mut self, reply: Vec<u8>) {
        let length = u32::try_from(reply.len())
            .unwrap_or(u32::MAX)
            .min(MAX_FRAGMENT_LENGTH as u32);
        self.mark = (LAST_FRAGMENT | length).to_be_bytes();
        self.output = reply;
        self.sent = 0;
    }

    fn view(&self, socket: &tcp::Socket<'_>) -> ConnectionView {
        ConnectionView {
            last_activity: self.last_activity,
            mid_record: self.buffered > 0,
            input_waiting: socket.recv_queue() > 0,
            output_pending: self.unsent() > 0,
        }
    }
}

/// The IPv4 interface, its listening socket and its connections.
pub struct TcpServer {
    interface: Interface,
    sockets: SocketSet<'static>,
    connections: Vec<Connection>,
    port: u16,
    limits: Limits,
    dhcp: Option<SocketHandle>,
    /// Whether a DHCP lease is in force.
    leased: bool,
    address_events: Vec<AddressEvent>,
    /// Counters.
    pub statistics: TcpStatistics,
}

impl core::fmt::Debug for TcpServer {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("TcpServer")
            .field("port", &self.port)
            .field("limits", &self.limits)
            .field("statistics", &self.statistics)
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    /// An interface with `mac` and `addressing`, and one socket listening
    /// on `port` (which must not be 0). `seed` feeds TCP's initial
    /// sequence numbers and ports and DHCP's transaction ids: it must
    /// differ between boots. `limits.max_connections` below 1 counts as 1.
    pub fn new<D: Device + ?Sized>(
        device: &mut D,
        seed: u64,
        mac: [u8; 6],
        addressing: Addressing,
        port: u16,
        limits: Limits,
        now: Instant,
    ) -> TcpServer {
        let mut config = InterfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut interface = Interface::new(config, device, now);
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = match addressing {
            Addressing::Static {
                address,
                prefix,
                gateway,
            } => {
                interface.update_ip_addrs(|addresses| {
                    // One address in an empty list always fits.
                    let _ = addresses.push(IpCidr::new(IpAddress::Ipv4(address), prefix));
                });
                if let Some(gateway) = gateway {
                    // Only fails when the route table is full; it is empty here.
                    let _ = interface.routes_mut().add_default_ipv4_route(gateway);
                }
                None
            }
            Addressing::Dhcp => Some(sockets.add(dhcpv4::Socket::new())),
        };
        let mut server = TcpServer {
            interface,
            sockets,
            connections: Vec::new(),
            port,
            limits: Limits {
                max_connections: limits.max_connections.max(1),
                ..limits
            },
            dhcp,
            leased: false,
            address_events: Vec::new(),
            statistics: TcpStatistics::default(),
        };
        server.listen(now);
        server
    }

    /// The next change of the interface's address, oldest first (DHCP
    /// only).
    pub fn take_address_event(&mut self) -> Option<AddressEvent> {
        (!self.address_events.is_empty()).then(|| self.address_events.remove(0))
    }

    /// Clients connected now.
    #[cfg(test)]
    fn connected(&self) -> usize {
        self.connections
            .iter()
            .filter(|connection| connection.peer.is_some())
            .count()
    }

    /// Move frames in and out and serve every connection with work, until
    /// nothing progresses (or a bounded number of rounds); after each
    /// round `disk` moves the disk's reads on (true when one ended: the
    /// calls parked for it are tried again). Returns whether anything
    /// happened.
    pub fn poll<D: Device + ?Sized, F: FileSystem + WaitControl>(
        &mut self,
        now: impl Fn() -> Instant,
        device: &mut D,
        server: &mut Server<F>,
        reads: &mut DiskReads,
        disk: &mut dyn FnMut(&mut Server<F>, &mut DiskReads) -> bool,
    ) -> bool {
        let mut any = false;
        for _ in 0..ROUNDS {
            let time = now();
            let mut changed = false;
            // One frame at a time, so that a burst of SYNs finds a new
            // listening socket behind each one it takes (smoltcp answers a
            // SYN no socket listens for with RST: connection refused).
            loop {
                match self
                    .interface
                    .poll_ingress_single(time, device, &mut self.sockets)
                {
                    PollIngressSingleResult::None => break,
                    PollIngressSingleResult::PacketProcessed => {}
                    PollIngressSingleResult::SocketStateChanged => {
                        changed = true;
                        self.keep_listening(time);
                    }
                }
            }
            changed |= self.interface.poll_egress(time, device, &mut self.sockets)
                == PollResult::SocketStateChanged;
            let mut served = self.poll_dhcp();
            for index in 0..self.connections.len() {
                served |= self.serve(index, server, reads, time);
            }
            // The disk between rounds: a read that ended lets its parked
            // calls go now, not after every other client's turn.
            if disk(server, reads) {
                self.retry_parked(server, reads);
                served = true;
            }
            served |= self.tidy(time);
            if !changed && !served {
                break;
            }
            any = true;
        }
        any
    }

    /// How long the caller may sleep before the next [`TcpServer::poll`]
    /// (TCP and DHCP timers, and the earliest stall deadline); `None` when
    /// only a frame can create work.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let stack = self.interface.poll_delay(now, &self.sockets);
        let stall = self
            .connections
            .iter()
            .filter(|connection| connection.peer.is_some())
            .filter(|connection| {
                let socket = self.sockets.get::<tcp::Socket>(connection.handle);
                connection.view(socket).owes_progress()
            })
            .map(|connection| {
                let deadline = connection.last_activity + self.limits.stall_timeout;
                if deadline > now {
                    deadline - now
                } else {
                    Duration::ZERO
                }
            })
            .min();
        match (stack, stall) {
            (Some(stack), Some(stall)) => Some(stack.min(stall)),
            (stack, stall) => stack.or(stall),
        }
    }

    /// Add a socket listening on the port.
    fn listen(&mut self, now: Instant) {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; RECEIVE_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SEND_BUFFER]),
        );
        socket.set_nagle_enabled(false);
        socket.set_keep_alive(Some(KEEP_ALIVE));
        socket.set_timeout(Some(PEER_TIMEOUT));
        // The port is non-zero (the command line refuses 0), so listening
        // on a fresh socket cannot fail.
        let _ = socket.listen(self.port);
        let handle = self.sockets.add(socket);
        self.connections.push(Connection::new(handle, now));
    }

    /// Act on the DHCP client's news: set or clear the address and the
    /// default route, and queue the event.
    fn poll_dhcp(&mut self) -> bool {
        let Some(handle) = self.dhcp else {
            return false;
        };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            None => return false,
            Some(dhcpv4::Event::Configured(config)) => AddressEvent::Leased {
                address: config.address.address(),
                prefix: config.address.prefix_len(),
                router: config.router,
            },
            // The client's first word, before any lease, is also
            // "deconfigured": nothing was lost then.
            Some(dhcpv4::Event::Deconfigured) if !self.leased => return false,
            Some(dhcpv4::Event::Deconfigured) => AddressEvent::Lost,
        };
        self.leased = matches!(event, AddressEvent::Leased { .. });
        self.interface.update_ip_addrs(|addresses| {
            addresses.clear();
            if let AddressEvent::Leased {
                address, prefix, ..
            } = event
            {
                // One address in an empty list always fits.
                let _ = addresses.push(IpCidr::Ipv4(Ipv4Cidr::new(address, prefix)));
            }
        });
        self.interface.routes_mut().remove_default_ipv4_route();
        if let AddressEvent::Leased {
            router: Some(router),
            ..
        } = event
        {
            // The table was just emptied of its only route.
            let _ = self.interface.routes_mut().add_default_ipv4_route(router);
        }
        self.address_events.push(event);
        true
    }

    /// Free closed sockets, drop stalled clients, and keep one socket
    /// listening.
    fn tidy(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let sockets = &mut self.sockets;
        self.connections.retain_mut(|connection| {
            let socket = sockets.get::<tcp::Socket>(connection.handle);
            // An aborted socket keeps its peer until its RST is sent, or
            // for a grace period when it cannot be.
            let keep = socket.is_open()
                || (socket.state() == tcp::State::Closed
                    && socket.remote_endpoint().is_some()
                    && now < *connection.aborted_at.get_or_insert(now) + RESET_GRACE);
            if !keep {
                sockets.remove(connection.handle);
                progress = true;
            }
            keep
        });
        for connection in &mut self.connections {
            if connection.peer.is_none() {
                continue;
            }
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.handle);
            if connection
                .view(socket)
                .is_stalled(now, self.limits.stall_timeout)
            {
                socket.abort();
                connection.reset();
                self.statistics.stalled += 1;
                progress = true;
            }
        }
        progress |= self.keep_listening(now);
        // Counted after the eviction a newcomer may have caused: the
        // newcomer is served (and so counted) before the listening socket
        // is replaced, which is when the idle longest gives way.
        let connected = self
            .connections
            .iter()
            .filter(|connection| connection.peer.is_some())
            .count();
        self.statistics.most_connected = self.statistics.most_connected.max(connected);
        progress
    }

    /// Keep one socket listening: when the last one took a client, make
    /// another, first closing the client idle longest if that client made
    /// one too many.
    fn keep_listening(&mut self, now: Instant) -> bool {
        let mut taken = 0;
        for connection in &self.connections {
            let socket = self.sockets.get::<tcp::Socket>(connection.handle);
            if socket.state() == tcp::State::Listen {
                return false;
            }
            taken += usize::from(socket.is_active());
        }
        if taken > self.limits.max_connections {
            // Served clients only: the newcomer has no peer yet.
            let victim = tcp_admission::idle_longest(
                self.connections
                    .iter()
                    .enumerate()
                    .filter(|(_, connection)| connection.peer.is_some())
                    .map(|(position, connection)| {
                        let socket = self.sockets.get::<tcp::Socket>(connection.handle);
                        (position, connection.view(socket))
                    }),
            );
            if let Some(victim) = victim {
                let connection = &mut self.connections[victim];
                self.sockets
                    .get_mut::<tcp::Socket>(connection.handle)
                    .abort();
                connection.reset();
                self.statistics.evicted += 1;
            }
        }
        self.listen(now);
        true
    }

    /// Make `record`'s call without waiting for the disk if it only reads
    /// (`before`: how it was parked): queue its reply, hold it for a
    /// commit, or park the call until the blocks it needs are read.
    /// Returns whether it was answered.
    fn attempt<F: FileSystem + WaitControl>(
        connection: &mut Connection,
        record: &[u8],
        before: Option<Parked>,
        peer: IpAddr,
        server: &mut Server<F>,
        reads: &mut DiskReads,
        statistics: &mut TcpStatistics,
    ) -> bool {
        let client = ClientAddress::Ip(peer);
        let reply = match server.try_without_waiting(record, client, NO_SESSION) {
            Attempt::Answered(reply) => reply,
            Attempt::WouldWait => {
                let wanted = server.filesystem().take_wanted();
                match reads.refused(wanted, before) {
                    Some(parked) => {
                        connection.parked = Some((record.to_vec(), parked));
                        return false;
                    }
                    None => server.handle(record, client),
                }
            }
        };
        if let Some(reply) = reply {
            statistics.replies += 1;
            if reply.needs_commit() {
                connection.held = Some(reply);
            } else {
                connection.queue(reply.into_bytes_unchecked_durability());
            }
        }
        true
    }

    /// Try again the parked calls whose blocks have been read (right
    /// after a fill, before anything else can evict them); their replies
    /// go out in the next [`TcpServer::poll`].
    pub fn retry_parked<F: FileSystem + WaitControl>(
        &mut self,
        server: &mut Server<F>,
        reads: &mut DiskReads,
    ) {
        for connection in &mut self.connections {
            let Some(peer) = connection.peer else {
                continue;
            };
            if let Some((record, parked)) = connection.parked.take() {
                if reads.ready(&parked) {
                    Self::attempt(
                        connection,
                        &record,
                        Some(parked),
                        peer,
                        server,
                        reads,
                        &mut self.statistics,
                    );
                } else {
                    connection.parked = Some((record, parked));
                }
            }
        }
    }

    /// Calls parked for the disk.
    pub fn parked(&self) -> usize {
        self.connections
            .iter()
            .filter(|connection| connection.parked.is_some())
            .count()
    }

    /// Replies held for a commit.
    pub fn held(&self) -> usize {
        self.connections
            .iter()
            .filter(|connection| connection.held.is_some())
            .count()
    }

    /// Queue the held replies the last commit made durable (all of them,
    /// as NFS3ERR_IO, when `commit_failed`); returns how many were
    /// released (the next [`TcpServer::poll`] sends them).
    pub fn release<F: FileSystem>(&mut self, server: &Server<F>, commit_failed: bool) -> usize {
        let mut released = 0;
        for connection in &mut self.connections {
            let ready = connection.held.as_ref().is_some_and(|reply| {
                commit_failed
                    || reply
                        .durable_at()
                        .is_none_or(|sequence| server.is_durable(sequence))
            });
            if let Some(reply) = connection.held.take_if(|_| ready) {
                connection.queue(server.settle(reply));
                released += 1;
            }
        }
        released
    }

    /// Serve one connection: note a new client, send pending reply bytes,
    /// and handle at most the records that can be answered now.
    fn serve<F: FileSystem + WaitControl>(
        &mut self,
        index: usize,
        server: &mut Server<F>,
        reads: &mut DiskReads,
        now: Instant,
    ) -> bool {
        let buffered_total: usize = self
            .connections
            .iter()
            .map(|connection| connection.buffered)
            .sum();
        let queued_total: usize = self.connections.iter().map(Connection::unsent).sum();
        // The first connection with the most buffered bytes may always read.
        let leader = self
            .connections
            .iter()
            .enumerate()
            .max_by_key(|&(position, connection)| (connection.buffered, usize::MAX - position))
            .map_or(index, |(position, _)| position);
        let others = buffered_total - self.connections[index].buffered;
        let queued_others = queued_total - self.connections[index].unsent();
        let connection = &mut self.connections[index];
        let socket = self.sockets.get_mut::<tcp::Socket>(connection.handle);
        if connection.peer.is_none() {
            // A listening socket that took a client (SYN-RECEIVED or
            // later); closed and aborted ones have no peer to serve.
            if !socket.is_active() {
                return false;
            }
            let Some(endpoint) = socket.remote_endpoint() else {
                return false;
            };
            connection.peer = Some(IpAddr::from(endpoint.addr));
            connection.last_activity = now;
            self.statistics.connections += 1;
            return true;
        }
        let Some(peer) = connection.peer else {
            return false;
        };
        let mut progress = false;
        loop {
            if connection.unsent() > 0 {
                if !socket.can_send() {
                    break;
                }
                let mark = connection.mark.len();
                let rest = if connection.sent < mark {
                    &connection.mark[connection.sent..]
                } else {
                    &connection.output[connection.sent - mark..]
                };
                let sent = socket.send_slice(rest).unwrap_or(0);
                connection.sent += sent;
                if sent > 0 {
                    progress = true;
                    connection.last_activity = now;
                }
                if connection.unsent() > 0 {
                    // The mark went and the socket may take the reply now.
                    if sent > 0 && connection.sent == mark {
                        continue;
                    }
                    break;
                }
                connection.output = Vec::new();
                connection.sent = 0;
            }
            if let Some((record, parked)) = connection.parked.take() {
                // A call waiting for the disk goes first, once a read may
                // have brought its blocks; until then nothing else is read.
                if !reads.ready(&parked) {
                    connection.parked = Some((record, parked));
                    break;
                }
                progress |= Self::attempt(
                    connection,
                    &record,
                    Some(parked),
                    peer,
                    server,
                    reads,
                    &mut self.statistics,
                );
                continue;
            }
            if connection.held.is_some() || !socket.can_recv() || queued_others >= REPLY_BUDGET {
                break;
            }
            let allowed = if index == leader {
                usize::MAX
            } else {
                RECORD_BUDGET.saturating_sub(others + connection.buffered)
            };
            if allowed == 0 {
                break;
            }
            let reassembler = &mut connection.reassembler;
            let buffered = &mut connection.buffered;
            let pushed = socket.recv(|bytes| {
                let bytes = &bytes[..bytes.len().min(allowed)];
                match reassembler.push(bytes) {
                    Ok(Pushed { consumed, record }) => {
                        *buffered = if record.is_some() {
                            0
                        } else {
                            *buffered + consumed
                        };
                        (consumed, Ok(record))
                    }
                    Err(error) => (bytes.len(), Err(error)),
                }
            });
            self.statistics.most_buffered = self
                .statistics
                .most_buffered
                .max(others + connection.buffered);
            let record = match pushed {
                Ok(Ok(Some(record))) => record,
                Ok(Ok(None)) => {
                    progress = true;
                    connection.last_activity = now;
                    continue;
                }
                Ok(Err(_)) => {
                    // The stream cannot be resynchronised: drop the client.
                    self.statistics.oversized += 1;
                    socket.abort();
                    connection.reset();
                    return true;
                }
                Err(_) => break,
            };
            progress = true;
            connection.last_activity = now;
            self.statistics.records += 1;
            Self::attempt(
                connection,
                &record,
                None,
                peer,
                server,
                reads,
                &mut self.statistics,
            );
            if connection.held.is_some() || connection.parked.is_some() {
                break;
            }
        }
        // The client closed its side and every reply went out: close ours.
        if !socket.may_recv() && connection.unsent() == 0 && socket.state() == tcp::State::CloseWait
        {
            socket.close();
            progress = true;
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use nfs_server::{ExportConfig, ServerConfig};
    use smoltcp::phy::{self, DeviceCapabilities, Medium};
    use vfs::memfs::{MemFs, MemFsLimits};
    use vfs::StepClock;
    use xdr::record::encode_record;

    type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

    /// One end of an in-memory Ethernet wire.
    struct WireEnd {
        incoming: Queue,
        outgoing: Queue,
    }

    fn wire() -> (WireEnd, WireEnd) {
        let a: Queue = Rc::default();
        let b: Queue = Rc::default();
        (
            WireEnd {
                incoming: Rc::clone(&a),
                outgoing: Rc::clone(&b),
            },
            WireEnd {
                incoming: b,
                outgoing: a,
            },
        )
    }

    struct Rx(Vec<u8>);
    struct Tx(Queue);

    impl phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl phy::TxToken for Tx {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
            let mut frame = vec![0; length];
            let result = f(&mut frame);
            self.0.borrow_mut().push_back(frame);
            result
        }
    }

    impl Device for WireEnd {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx;

        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
            let frame = self.incoming.borrow_mut().pop_front()?;
            Some((Rx(frame), Tx(Rc::clone(&self.outgoing))))
        }

        fn transmit(&mut self, _: Instant) -> Option<Tx> {
            Some(Tx(Rc::clone(&self.outgoing)))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut capabilities = DeviceCapabilities::default();
            capabilities.medium = Medium::Ethernet;
            capabilities.max_transmission_unit = 1514;
            capabilities
        }
    }

    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PORT: u16 = 2049;

    fn nfs_server() -> Server<MemFs> {
        let fs = MemFs::new(
            alloc::boxed::Box::new(StepClock::new(1_700_000_000)),
            MemFsLimits::default(),
        );
        let config = ServerConfig {
            exports: vec![ExportConfig::whole_file_system()],
            handle_secret: [7; 32],
            write_verifier: *b"verifier",
            file_system_id: 1,
            port: PORT,
        };
        Server::new(fs, config).expect("server")
    }

    /// A client interface with `count` sockets connecting to the server.
    struct Client {
        interface: Interface,
        sockets: SocketSet<'static>,
        handles: Vec<SocketHandle>,
        device: WireEnd,
    }

    impl Client {
        fn new(mut device: WireEnd, count: usize) -> Client {
            let config = InterfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress([
                2, 0, 0, 0, 0, 1,
            ])));
            let mut interface = Interface::new(config, &mut device, Instant::ZERO);
            interface.update_ip_addrs(|addresses| {
                addresses
                    .push(IpCidr::new(IpAddress::Ipv4(CLIENT_IP), 24))
                    .unwrap();
            });
            let mut client = Client {
                interface,
                sockets: SocketSet::new(Vec::new()),
                handles: Vec::new(),
                device,
            };
            for _ in 0..count {
                client.connect();
            }
            client
        }

        /// One more socket connecting to the server; its index.
        fn connect(&mut self) -> usize {
            let index = self.handles.len();
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 256 * 1024]),
                tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            );
            socket
                .connect(
                    self.interface.context(),
                    (IpAddress::Ipv4(SERVER_IP), PORT),
                    40_000 + index as u16,
                )
                .unwrap();
            self.handles.push(self.sockets.add(socket));
            index
        }

        fn socket(&mut self, index: usize) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(self.handles[index])
        }
    }

    struct Bench {
        tcp: TcpServer,
        device: WireEnd,
        server: Server<MemFs>,
        client: Client,
        clock: i64,
    }

    impl Bench {
        fn new(connections: usize) -> Bench {
            Bench::with_limits(connections, Limits::default())
        }

        fn with_limits(connections: usize, limits: Limits) -> Bench {
            let (server_end, client_end) = wire();
            let mut device = server_end;
            let addressing = Addressing::Static {
                address: SERVER_IP,
                prefix: 24,
                gateway: None,
            };
            let tcp = TcpServer::new(
                &mut device,
                1,
                [2, 0, 0, 0, 0, 2],
                addressing,
                PORT,
                limits,
                Instant::ZERO,
            );
            Bench {
                tcp,
                device,
                server: nfs_server(),
                client: Client::new(client_end, connections),
                clock: 0,
            }
        }

        /// Run both ends for `steps` milliseconds of simulated time.
        fn run(&mut self, steps: usize) {
            self.run_every(steps, 1);
        }

        /// Run both ends for `steps` steps of `millis` simulated time.
        fn run_every(&mut self, steps: usize, millis: i64) {
            for _ in 0..steps {
                self.clock += millis;
                let now = Instant::from_millis(self.clock);
                let client = &mut self.client;
                client
                    .interface
                    .poll(now, &mut client.device, &mut client.sockets);
                self.tcp.poll(
                    || now,
                    &mut self.device,
                    &mut self.server,
                    &mut DiskReads::new(0),
                    &mut |_, _| false,
                );
            }
        }

        fn assert_listening(&self) {
            let listening = self
                .tcp
                .connections
                .iter()
                .filter(|connection| {
                    self.tcp
                        .sockets
                        .get::<tcp::Socket>(connection.handle)
                        .state()
                        == tcp::State::Listen
                })
                .count();
            assert_eq!(listening, 1, "exactly one socket listens");
        }

        /// Everything received on client connection `index`.
        fn received(&mut self, index: usize) -> Vec<u8> {
            let mut bytes = Vec::new();
            let socket = self.client.socket(index);
            while socket.can_recv() {
                socket
                    .recv(|chunk| {
                        bytes.extend_from_slice(chunk);
                        (chunk.len(), ())
                    })
                    .unwrap();
            }
            bytes
        }
    }

    /// An RPC call record (without its mark): NFSv3 NULL, AUTH_NONE.
    fn null_call(xid: u32) -> Vec<u8> {
        [xid, 0, 2, 100_003, 3, 0, 0, 0, 0, 0]
            .iter()
            .flat_map(|word| word.to_be_bytes())
            .collect()
    }

    fn marked(record: &[u8]) -> Vec<u8> {
        let mut output = Vec::new();
        encode_record(record, MAX_FRAGMENT_LENGTH, &mut output);
        output
    }

    /// Parse a stream of marked single-fragment replies into (xid, accept
    /// status) pairs.
    fn replies(mut stream: &[u8]) -> Vec<(u32, u32)> {
        let word = |bytes: &[u8], index: usize| {
            u32::from_be_bytes(bytes[index * 4..index * 4 + 4].try_into().unwrap())
        };
        let mut replies = Vec::new();
        while !stream.is_empty() {
            let mark = word(stream, 0);
            assert!(mark & 0x8000_0000 != 0, "single-fragment replies");
            let length = (mark & 0x7fff_ffff) as usize;
            let record = &stream[4..4 + length];
            // xid, REPLY, MSG_ACCEPTED, verifier (flavor, length 0), status.
            assert_eq!((word(record, 1), word(record, 2)), (1, 0));
            replies.push((word(record, 0), word(record, 5)));
            stream = &stream[4 + length..];
        }
        replies
    }

    #[test]
    fn serves_calls_on_several_connections_with_split_records() {
        let mut bench = Bench::new(2);
        bench.run(20);
        // Connection 0: two calls in one write; connection 1: one call
        // split at every byte boundary of its mark across writes.
        let mut both = marked(&null_call(11));
        both.extend(marked(&null_call(12)));
        bench.client.socket(0).send_slice(&both).unwrap();
        let single = marked(&null_call(21));
        bench.client.socket(1).send_slice(&single[..2]).unwrap();
        bench.run(5);
        bench.client.socket(1).send_slice(&single[2..7]).unwrap();
        bench.run(5);
        bench.client.socket(1).send_slice(&single[7..]).unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(0)), [(11, 0), (12, 0)]);
        assert_eq!(replies(&bench.received(1)), [(21, 0)]);
        assert_eq!(bench.tcp.statistics.connections, 2);
        assert_eq!(bench.tcp.statistics.records, 3);
        assert_eq!(bench.tcp.statistics.replies, 3);
    }

    /// A READ reply several times the socket's send buffer goes out whole
    /// behind its mark (queued without copying it behind the mark), byte
    /// for byte what the server encoded.
    #[test]
    fn a_large_read_reply_is_sent_whole_behind_its_mark() {
        use nfs3::procedures::data::ReadArguments;
        let mut bench = Bench::new(1);
        bench.run(20);
        let contents: Vec<u8> = (0..200_001u32).map(|index| (index % 253) as u8).collect();
        let client = ClientAddress::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
        let root = bench
            .server
            .root_handle("/", &client)
            .expect("the root export");
        {
            let fs = bench.server.filesystem();
            let root_inode = fs.root();
            let created = fs
                .create(
                    root_inode,
                    b"big",
                    &vfs::NewNode::Regular,
                    &vfs::Ownership {
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                )
                .unwrap();
            fs.write(created.inode, 0, &contents).unwrap();
        }
        // The file's handle, from a LOOKUP run directly (not over TCP).
        let lookup = nfs3::message::encode_call::<nfs3::Nfs3>(
            1,
            xdr::OpaqueAuth::none(),
            &nfs3::Arguments::Lookup(nfs3::procedures::inspect::LookupArguments {
                what: nfs3::DirectoryOperationArguments {
                    directory: root,
                    name: b"big".to_vec(),
                },
            }),
        );
        let reply = bench
            .server
            .handle(&lookup, client)
            .map(|reply| bench.server.finish(reply))
            .unwrap();
        let handle = match nfs3::message::decode_reply::<nfs3::Nfs3>(&reply, 3)
            .unwrap()
            .1
        {
            nfs3::Results::Lookup(nfs3::ProcedureResult::Ok(ok)) => ok.object,
            other => panic!("unexpected {other:?}"),
        };
        let read = nfs3::message::encode_call::<nfs3::Nfs3>(
            77,
            xdr::OpaqueAuth::none(),
            &nfs3::Arguments::Read(ReadArguments {
                file: handle,
                offset: 0,
                count: 1 << 20,
            }),
        );
        bench.client.socket(0).send_slice(&marked(&read)).unwrap();
        let mut received = Vec::new();
        for _ in 0..2000 {
            bench.run(1);
            received.extend(bench.received(0));
        }
        let mark = u32::from_be_bytes([received[0], received[1], received[2], received[3]]);
        assert_eq!(mark & LAST_FRAGMENT, LAST_FRAGMENT);
        assert_eq!((mark & !LAST_FRAGMENT) as usize, received.len() - 4);
        let (xid, results) = nfs3::message::decode_reply::<nfs3::Nfs3>(&received[4..], 6).unwrap();
        assert_eq!(xid, 77);
        match results {
            nfs3::Results::Read(nfs3::ProcedureResult::Ok(ok)) => {
                assert_eq!(ok.data, contents);
                assert!(ok.end_of_file);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn concurrent_large_records_stay_within_the_budget() {
        let mut bench = Bench::new(3);
        bench.run(20);
        let record_bytes = 1_000_000;
        let streams: Vec<Vec<u8>> = (0..3)
            .map(|xid| {
                let mut record = null_call(xid);
                record.resize(record_bytes, 0);
                marked(&record)
            })
            .collect();
        let mut offsets = [0usize; 3];
        let mut received = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..3000 {
            for index in 0..3 {
                if offsets[index] < streams[index].len() {
                    offsets[index] += bench
                        .client
                        .socket(index)
                        .send_slice(&streams[index][offsets[index]..])
                        .unwrap();
                }
            }
            bench.run(1);
            for (index, bytes) in received.iter_mut().enumerate() {
                bytes.extend(bench.received(index));
            }
        }
        for (index, bytes) in received.iter().enumerate() {
            let got = replies(bytes);
            assert_eq!(got.len(), 1, "connection {index}");
            assert_eq!(got[0].0, index as u32);
        }
        // Unbounded, the three records would have been buffered together.
        let most = bench.tcp.statistics.most_buffered;
        assert!(most > record_bytes, "{most}");
        assert!(
            most <= 2 * RECORD_BUDGET && most < 3 * record_bytes,
            "{most}"
        );
    }

    #[test]
    fn vanished_client_is_timed_out_and_its_socket_listens_again() {
        let mut bench = Bench::new(1);
        bench.run(20);
        assert_eq!(bench.tcp.connected(), 1);
        // The client stops answering; only the server runs, 500 ms a step.
        for _ in 0..((PEER_TIMEOUT + KEEP_ALIVE * 2).total_millis() / 500) {
            bench.clock += 500;
            let now = Instant::from_millis(bench.clock);
            bench.tcp.poll(
                || now,
                &mut bench.device,
                &mut bench.server,
                &mut DiskReads::new(0),
                &mut |_, _| false,
            );
            bench.client.device.incoming.borrow_mut().clear();
        }
        assert_eq!(bench.tcp.connected(), 0);
        assert_eq!(bench.tcp.statistics.stalled, 0, "idle, not stalled");
        // Only the listening socket is left: the closed one was freed.
        assert_eq!(bench.tcp.connections.len(), 1);
        bench.assert_listening();
    }

    #[test]
    fn oversized_record_aborts_only_that_connection() {
        let mut bench = Bench::new(2);
        bench.run(20);
        let mark = (0x8000_0000u32 | (MAX_RECORD_SIZE as u32 + 1)).to_be_bytes();
        bench.client.socket(0).send_slice(&mark).unwrap();
        bench.run(20);
        assert_eq!(bench.tcp.statistics.oversized, 1);
        assert!(!bench.client.socket(0).is_open(), "reset by the server");
        bench
            .client
            .socket(1)
            .send_slice(&marked(&null_call(5)))
            .unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(1)), [(5, 0)]);
    }

    #[test]
    fn pipelined_calls_answered_in_order_then_socket_reused() {
        let mut bench = Bench::new(1);
        bench.run(20);
        // 2000 pipelined calls (80 KB, more than the server's window): the
        // server reads a record only once the previous reply is queued.
        let mut calls = Vec::new();
        for xid in 0..2000 {
            calls.extend(marked(&null_call(xid)));
        }
        let mut offset = 0;
        let mut stream = Vec::new();
        for _ in 0..2000 {
            if offset < calls.len() {
                offset += bench.client.socket(0).send_slice(&calls[offset..]).unwrap();
            }
            bench.run(2);
            stream.extend(bench.received(0));
        }
        let got = replies(&stream);
        assert_eq!(got.len(), 2000);
        assert!(got
            .iter()
            .enumerate()
            .all(|(index, &(xid, status))| xid == index as u32 && status == 0));
        // Client closes: the server closes too and listens again.
        bench.client.socket(0).close();
        bench.run(50);
        let socket = bench
            .client
            .sockets
            .get_mut::<tcp::Socket>(bench.client.handles[0]);
        socket.abort();
        bench.run(10);
        let context = bench.client.interface.context();
        let socket = bench
            .client
            .sockets
            .get_mut::<tcp::Socket>(bench.client.handles[0]);
        socket
            .connect(context, (IpAddress::Ipv4(SERVER_IP), PORT), 41_000)
            .unwrap();
        bench.run(20);
        bench
            .client
            .socket(0)
            .send_slice(&marked(&null_call(99)))
            .unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(0)), [(99, 0)]);
        assert_eq!(bench.tcp.statistics.connections, 2);
    }

    #[test]
    fn full_table_admits_a_newcomer_by_closing_the_idle_longest() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let mut bench = Bench::with_limits(1, limits);
        bench.run(20);
        bench.client.connect();
        bench.run(20);
        assert_eq!(bench.tcp.connected(), 2);
        bench.assert_listening();
        // Connection 0 calls after connection 1 connected: 1 is idle longest.
        bench
            .client
            .socket(0)
            .send_slice(&marked(&null_call(1)))
            .unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(0)), [(1, 0)]);
        let newcomer = bench.client.connect();
        bench.run(20);
        assert_eq!(bench.tcp.statistics.evicted, 1);
        assert_eq!(bench.tcp.connected(), 2);
        assert_eq!(
            bench.tcp.statistics.most_connected, 2,
            "the newcomer is counted after the eviction it caused"
        );
        assert!(!bench.client.socket(1).is_open(), "reset by the server");
        assert!(bench.client.socket(0).is_open());
        bench.assert_listening();
        for (index, xid) in [(0, 2), (newcomer, 3)] {
            bench
                .client
                .socket(index)
                .send_slice(&marked(&null_call(xid)))
                .unwrap();
        }
        bench.run(20);
        assert_eq!(replies(&bench.received(0)), [(2, 0)]);
        assert_eq!(replies(&bench.received(newcomer)), [(3, 0)]);
        assert_eq!(bench.tcp.statistics.most_connected, 2);
    }

    #[test]
    fn sixty_four_idle_clients_do_not_lock_out_the_sixty_fifth() {
        let mut bench = Bench::new(DEFAULT_MAX_CONNECTIONS);
        bench.run(50);
        assert_eq!(bench.tcp.connected(), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(bench.tcp.statistics.evicted, 0);
        bench.assert_listening();
        let newcomer = bench.client.connect();
        bench.run(20);
        bench
            .client
            .socket(newcomer)
            .send_slice(&marked(&null_call(65)))
            .unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(newcomer)), [(65, 0)]);
        assert_eq!(bench.tcp.statistics.evicted, 1);
        assert_eq!(bench.tcp.connected(), DEFAULT_MAX_CONNECTIONS);
        // The first to connect (all idle since) made room.
        assert!(!bench.client.socket(0).is_open());
        assert!((1..newcomer).all(|index| bench.client.socket(index).is_open()));
    }

    #[test]
    fn a_client_stalled_mid_record_is_dropped_after_the_timeout() {
        let mut bench = Bench::new(2);
        bench.run(20);
        // Connection 0: the mark of a 100-byte record and 40 of its bytes.
        let mut half = (0x8000_0000u32 | 100).to_be_bytes().to_vec();
        half.extend([0; 40]);
        bench.client.socket(0).send_slice(&half).unwrap();
        bench.run(20);
        // It holds its own 44 bytes and nothing more.
        assert_eq!(bench.tcp.statistics.most_buffered, 44);
        let step = 100;
        let steps = (STALL_TIMEOUT.total_millis() as usize) / step;
        bench.run_every(steps - 5, step as i64);
        assert_eq!(bench.tcp.statistics.stalled, 0);
        assert_eq!(bench.tcp.connected(), 2);
        bench.run_every(10, step as i64);
        assert_eq!(bench.tcp.statistics.stalled, 1);
        assert_eq!(bench.tcp.connected(), 1);
        assert!(!bench.client.socket(0).is_open(), "reset by the server");
        // The idle connection (between records) stays and is served.
        bench
            .client
            .socket(1)
            .send_slice(&marked(&null_call(8)))
            .unwrap();
        bench.run(20);
        assert_eq!(replies(&bench.received(1)), [(8, 0)]);
        bench.assert_listening();
        // Nothing of the dropped record is held.
        let buffered: usize = bench.tcp.connections.iter().map(|c| c.buffered).sum();
        assert_eq!(buffered, 0);
    }

    // docs/xen.md gives the cost per connection as 64.6 KiB.
    const _: () = assert!(CONNECTION_BYTES > 64 << 10 && CONNECTION_BYTES < 65 << 10);

    #[test]
    fn the_default_maximum_fits_a_32_mib_domain() {
        // About 10.7 MiB of the 16 MiB heap is free when the TCP server
        // starts in a `memory=32` domain with default settings.
        assert!(connections_that_fit(10 << 20) >= DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connections_that_fit(SHARED_BYTES), 0);
        assert_eq!(connections_that_fit(0), 0);
        assert_eq!(
            connections_that_fit(SHARED_BYTES + 11 * CONNECTION_BYTES),
            10
        );
    }

    /// A reply that promises durability waits for the poll loop's commit
    /// ([`TcpServer::release`]) and holds its connection's later calls
    /// behind it; other connections are served meanwhile.
    #[test]
    fn a_reply_waiting_for_its_commit_holds_only_its_connection() {
        use nfs3::procedures::create::MakeDirectoryArguments;
        use nfs3::{Arguments, DirectoryOperationArguments, Nfs3};
        let mut bench = Bench::new(2);
        bench.run(20);
        let root = bench
            .server
            .root_handle("/", &ClientAddress::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)))
            .expect("root");
        let credential = xdr::OpaqueAuth::sys(&xdr::AuthSys {
            stamp: 1,
            machine_name: b"client".to_vec(),
            uid: 0,
            gid: 0,
            gids: vec![0],
        });
        let mkdir = nfs3::message::encode_call::<Nfs3>(
            31,
            credential,
            &Arguments::MakeDirectory(MakeDirectoryArguments {
                location: DirectoryOperationArguments {
                    directory: root,
                    name: b"made".to_vec(),
                },
                attributes: Default::default(),
            }),
        );
        let mut pipelined = marked(&mkdir);
        pipelined.extend(marked(&null_call(32)));
        bench.client.socket(0).send_slice(&pipelined).unwrap();
        bench
            .client
            .socket(1)
            .send_slice(&marked(&null_call(41)))
            .unwrap();
        bench.run(30);
        assert_eq!(replies(&bench.received(1)), [(41, 0)]);
        assert!(bench.received(0).is_empty(), "answered before its commit");
        assert_eq!(bench.tcp.held(), 1);
        assert_eq!(bench.server.commit_advance(), Ok(false));
        assert_eq!(bench.tcp.release(&bench.server, false), 1);
        assert_eq!(bench.tcp.held(), 0);
        bench.run(30);
        assert_eq!(replies(&bench.received(0)), [(31, 0), (32, 0)]);
        assert!(!bench.server.has_uncommitted());
    }
}
