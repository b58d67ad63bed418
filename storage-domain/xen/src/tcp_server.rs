//! NFSv3, MOUNT and PORTMAP over TCP on smoltcp, driven by the kernel's
//! poll loop.
//!
//! A fixed set of [`CONNECTIONS`] smoltcp TCP sockets listens on one port;
//! a connected socket serves one client until it closes, then listens
//! again. Each connection reassembles RPC records (record marking,
//! RFC 5531 section 11) with a [`RecordReassembler`] bounded by
//! [`nfs_server::MAX_RECORD_SIZE`]; an oversized record aborts the
//! connection. A complete record goes through `Server::handle` and
//! `Server::finish` (which commits when the reply promises durability);
//! the reply is queued with its record mark and sent as the socket's
//! buffer drains. While a reply is pending, the connection reads no
//! further records (back-pressure on the client through TCP's window).
//!
//! Memory: records being reassembled are bounded together by
//! [`RECORD_BUDGET`]. The connection with the most bytes of an unfinished
//! record always reads (so some record always completes); the others read
//! only while the total stays within the budget, and otherwise wait in
//! TCP's window. Without this, four clients writing 1 MiB records at once
//! could take most of the kernel's 16 MiB heap (a growing `Vec` briefly
//! holds its old and new buffers).
//!
//! Nothing here blocks or touches Xen: the device is any smoltcp
//! `phy::Device` (netfront in the kernel, an in-memory wire in the tests),
//! and the caller decides when to poll and how long to sleep
//! ([`TcpServer::poll_delay`]).
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use nfs_server::{ClientAddress, Server, MAX_RECORD_SIZE};
use smoltcp::iface::{Config as InterfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use vfs::FileSystem;
use xdr::record::{encode_record, MAX_FRAGMENT_LENGTH};
use xdr::{Pushed, RecordReassembler};

/// Connections served at once (each holds socket buffers and, during a
/// large WRITE, up to one record of [`MAX_RECORD_SIZE`] bytes).
pub const CONNECTIONS: usize = 4;
/// Bytes of each socket's receive buffer (the advertised window).
pub const RECEIVE_BUFFER: usize = 64 * 1024;
/// Bytes of each socket's send buffer.
pub const SEND_BUFFER: usize = 64 * 1024;
/// Bytes of unfinished records held by all connections together, beyond
/// which only the connection furthest along reads (so at most twice this
/// is ever buffered).
pub const RECORD_BUDGET: usize = MAX_RECORD_SIZE;
/// Idle connections are probed this often (TCP keep-alive)...
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// ...and aborted when the peer leaves data or probes unanswered this
/// long, so a vanished client does not hold one of the sockets forever.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);
/// Rounds of poll-and-serve per [`TcpServer::poll`] call before the
/// caller gets control back (to look at xenstore).
const ROUNDS: usize = 64;

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
    /// Most bytes of unfinished records held at once.
    pub most_buffered: usize,
}

#[derive(Debug)]
struct Connection {
    handle: SocketHandle,
    reassembler: RecordReassembler,
    /// Bytes consumed into the unfinished record (marks included).
    buffered: usize,
    /// The reply being sent (with its record mark) and how much of it went.
    output: Vec<u8>,
    sent: usize,
    peer: Option<IpAddr>,
}

impl Connection {
    fn reset(&mut self) {
        self.reassembler = RecordReassembler::new(MAX_RECORD_SIZE);
        self.buffered = 0;
        self.output = Vec::new();
        self.sent = 0;
        self.peer = None;
    }
}

/// The IPv4 interface and the listening sockets.
pub struct TcpServer {
    interface: Interface,
    sockets: SocketSet<'static>,
    connections: Vec<Connection>,
    port: u16,
    /// Counters.
    pub statistics: TcpStatistics,
}

impl core::fmt::Debug for TcpServer {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("TcpServer")
            .field("port", &self.port)
            .field("statistics", &self.statistics)
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    /// An interface with `mac` and the static `address`/`prefix`, an
    /// optional default `gateway`, and [`CONNECTIONS`] sockets listening
    /// on `port`. `seed` feeds TCP's initial sequence numbers and ports:
    /// it must differ between boots.
    pub fn new<D: Device + ?Sized>(
        device: &mut D,
        seed: u64,
        mac: [u8; 6],
        (address, prefix): (Ipv4Addr, u8),
        gateway: Option<Ipv4Addr>,
        port: u16,
        now: Instant,
    ) -> TcpServer {
        let mut config = InterfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut interface = Interface::new(config, device, now);
        interface.update_ip_addrs(|addresses| {
            // One address in an empty list always fits.
            let _ = addresses.push(IpCidr::new(IpAddress::Ipv4(address), prefix));
        });
        if let Some(gateway) = gateway {
            // Only fails when the route table is full; it is empty here.
            let _ = interface.routes_mut().add_default_ipv4_route(gateway);
        }
        let mut sockets = SocketSet::new(Vec::new());
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RECEIVE_BUFFER]),
                tcp::SocketBuffer::new(vec![0; SEND_BUFFER]),
            );
            socket.set_nagle_enabled(false);
            // Kept across resets and re-listens.
            socket.set_keep_alive(Some(KEEP_ALIVE));
            socket.set_timeout(Some(PEER_TIMEOUT));
            // The port is non-zero (the command line refuses 0), so
            // listening on a fresh socket cannot fail.
            let _ = socket.listen(port);
            connections.push(Connection {
                handle: sockets.add(socket),
                reassembler: RecordReassembler::new(MAX_RECORD_SIZE),
                buffered: 0,
                output: Vec::new(),
                sent: 0,
                peer: None,
            });
        }
        TcpServer {
            interface,
            sockets,
            connections,
            port,
            statistics: TcpStatistics::default(),
        }
    }

    /// Move frames in and out and serve every connection with work, until
    /// nothing progresses (or a bounded number of rounds). Returns whether
    /// anything happened.
    pub fn poll<D: Device + ?Sized, F: FileSystem>(
        &mut self,
        now: impl Fn() -> Instant,
        device: &mut D,
        server: &mut Server<F>,
    ) -> bool {
        let mut any = false;
        for _ in 0..ROUNDS {
            let changed = self.interface.poll(now(), device, &mut self.sockets)
                == PollResult::SocketStateChanged;
            let mut served = false;
            for index in 0..self.connections.len() {
                served |= self.serve(index, server);
            }
            if !changed && !served {
                break;
            }
            any = true;
        }
        any
    }

    /// How long the caller may sleep before the next [`TcpServer::poll`]
    /// (TCP timers); `None` when only a frame can create work.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.interface.poll_delay(now, &self.sockets)
    }

    /// Serve one connection: re-listen when closed, send pending reply
    /// bytes, and handle at most the records that can be answered now.
    fn serve<F: FileSystem>(&mut self, index: usize, server: &mut Server<F>) -> bool {
        let buffered_total: usize = self
            .connections
            .iter()
            .map(|connection| connection.buffered)
            .sum();
        // The first connection with the most buffered bytes may always read.
        let leader = self
            .connections
            .iter()
            .enumerate()
            .max_by_key(|&(position, connection)| (connection.buffered, usize::MAX - position))
            .map_or(index, |(position, _)| position);
        let others = buffered_total - self.connections[index].buffered;
        let connection = &mut self.connections[index];
        let socket = self.sockets.get_mut::<tcp::Socket>(connection.handle);
        if !socket.is_open() {
            // Closed (or in TIME-WAIT, which listening abandons).
            connection.reset();
            return socket.listen(self.port).is_ok();
        }
        if connection.peer.is_none() {
            match socket.remote_endpoint() {
                Some(endpoint) => {
                    connection.peer = Some(IpAddr::from(endpoint.addr));
                    self.statistics.connections += 1;
                }
                // Still listening.
                None => return false,
            }
        }
        let Some(peer) = connection.peer else {
            return false;
        };
        let mut progress = false;
        loop {
            if connection.sent < connection.output.len() {
                if !socket.can_send() {
                    break;
                }
                let sent = socket
                    .send_slice(&connection.output[connection.sent..])
                    .unwrap_or(0);
                connection.sent += sent;
                progress |= sent > 0;
                if connection.sent < connection.output.len() {
                    break;
                }
                connection.output = Vec::new();
                connection.sent = 0;
            }
            if !socket.can_recv() {
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
            self.statistics.records += 1;
            if let Some(reply) = server.handle(&record, ClientAddress::Ip(peer)) {
                let bytes = server.finish(reply);
                let mut output = Vec::with_capacity(bytes.len() + 4);
                encode_record(&bytes, MAX_FRAGMENT_LENGTH, &mut output);
                connection.output = output;
                connection.sent = 0;
                self.statistics.replies += 1;
            }
        }
        // The client closed its side and every reply went out: close ours.
        if !socket.may_recv()
            && connection.sent >= connection.output.len()
            && socket.state() == tcp::State::CloseWait
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
            let mut sockets = SocketSet::new(Vec::new());
            let mut handles = Vec::new();
            for index in 0..count {
                let mut socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 256 * 1024]),
                    tcp::SocketBuffer::new(vec![0; 256 * 1024]),
                );
                socket
                    .connect(
                        interface.context(),
                        (IpAddress::Ipv4(SERVER_IP), PORT),
                        40_000 + index as u16,
                    )
                    .unwrap();
                handles.push(sockets.add(socket));
            }
            Client {
                interface,
                sockets,
                handles,
                device,
            }
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
            let (server_end, client_end) = wire();
            let mut device = server_end;
            let tcp = TcpServer::new(
                &mut device,
                1,
                [2, 0, 0, 0, 0, 2],
                (SERVER_IP, 24),
                None,
                PORT,
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
            for _ in 0..steps {
                self.clock += 1;
                let now = Instant::from_millis(self.clock);
                let client = &mut self.client;
                client
                    .interface
                    .poll(now, &mut client.device, &mut client.sockets);
                self.tcp.poll(|| now, &mut self.device, &mut self.server);
            }
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
        assert!(bench.tcp.connections[0].peer.is_some());
        // The client stops answering; only the server runs, 500 ms a step.
        for _ in 0..((PEER_TIMEOUT + KEEP_ALIVE * 2).total_millis() / 500) {
            bench.clock += 500;
            let now = Instant::from_millis(bench.clock);
            bench.tcp.poll(|| now, &mut bench.device, &mut bench.server);
            bench.client.device.incoming.borrow_mut().clear();
        }
        assert!(bench.tcp.connections[0].peer.is_none());
        let handle = bench.tcp.connections[0].handle;
        let socket = bench.tcp.sockets.get::<tcp::Socket>(handle);
        assert_eq!(socket.state(), tcp::State::Listen);
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
}
