//! How RPC records reach the server: the [`Transport`] trait and its TCP
//! implementation with ONC RPC record marking (RFC 5531 section 11).
//!
//! Design: a transport moves whole RPC records and nothing else. The client
//! above it encodes calls, picks the xid and decodes replies, so the same
//! client runs over TCP, over hosted VRPC rings and over Xen rings. Many
//! calls may be in flight at once from several threads; a transport matches
//! each reply to its call by xid ([`xdr::rpc::peek_xid`]) and may complete
//! them out of order.
//!
//! The TCP transport has one writer lock (a record is written whole, so
//! records never interleave) and one reader thread that reassembles reply
//! records and hands each to the thread waiting for its xid. A broken
//! connection fails every waiting call with
//! [`TransportError::Disconnected`]; the next call connects again.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use xdr::record::RecordReassembler;

/// Largest reply record accepted: a READ of 1 MiB plus headers and
/// attributes, with room to spare. A larger announcement drops the
/// connection (the stream cannot be resynchronised).
pub const MAX_REPLY_RECORD: usize = 4 * 1024 * 1024;

/// Why a call got no reply record.
#[derive(Debug)]
pub enum TransportError {
    /// The connection is gone (closed by the peer, reset, or a malformed
    /// stream); no reply will come.
    Disconnected(String),
    /// Sending the call failed.
    Send(io::Error),
    /// The same xid is already waiting for a reply (the client reused one).
    DuplicateXid(u32),
    /// A payload was given but the record has no empty trailing opaque.
    NoPayloadField,
    /// The transport refused the call (too large for its ring, ...).
    Refused(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Disconnected(reason) => write!(formatter, "disconnected: {reason}"),
            TransportError::Send(error) => write!(formatter, "send failed: {error}"),
            TransportError::DuplicateXid(xid) => {
                write!(formatter, "xid {xid:#x} already in flight")
            }
            TransportError::NoPayloadField => {
                formatter.write_str("the record has no empty opaque for the payload")
            }
            TransportError::Refused(reason) => write!(formatter, "call refused: {reason}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// One call as a transport carries it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The call's xid (the record's first word).
    pub xid: u32,
    /// The ONC RPC call record, without any record mark.
    pub record: &'a [u8],
    /// Bulk data for the record's last field, a variable-length opaque the
    /// record carries empty (WRITE data); empty for other calls. A ring
    /// transport sends it in data pages; a stream transport splices it in.
    pub write_payload: &'a [u8],
    /// Bytes of bulk data the reply may bring (READ data, READDIRPLUS
    /// lists): what a ring transport offers in data pages; 0 for small
    /// replies.
    pub read_capacity: usize,
}

/// Moves one RPC call to the server and brings back the reply record with
/// the same xid. Implementations are shared by every FUSE worker thread
/// and must allow many calls in flight at once.
pub trait Transport: Send + Sync {
    /// Sends `call` and blocks until its reply record arrives.
    ///
    /// # Errors
    /// [`TransportError`] when no reply can come.
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, TransportError>;
}

/// The standard record for `call`: the payload written into the record's
/// trailing empty opaque (length word, bytes, padding), as a stream
/// carries it (the TCP transport sends the same bytes without gathering
/// them, [`StreamPieces`]); what tests compare replies with.
///
/// # Errors
/// [`TransportError::NoPayloadField`] when a payload is given but the
/// record does not end in an empty opaque.
#[cfg(test)]
pub fn spliced_record(call: &Call<'_>) -> Result<Vec<u8>, TransportError> {
    Ok(StreamPieces::of(call)?.slices()[1..].concat())
}

/// A call as a stream carries it, in pieces written where they lie (no copy
/// of the record or of the payload): the record mark (one last fragment),
/// the record (without its trailing empty opaque's length word when a
/// payload fills it), the payload's length word, the payload, its padding.
struct StreamPieces<'a> {
    mark: [u8; 4],
    head: &'a [u8],
    length: [u8; 4],
    payload: &'a [u8],
    padding: &'static [u8],
}

impl<'a> StreamPieces<'a> {
    fn of(call: &Call<'a>) -> Result<StreamPieces<'a>, TransportError> {
        let (head, length) = if call.write_payload.is_empty() {
            (call.record, None)
        } else {
            let length = u32::try_from(call.write_payload.len())
                .map_err(|_| TransportError::NoPayloadField)?;
            let word = call
                .record
                .len()
                .checked_sub(4)
                .filter(|start| call.record[*start..] == [0, 0, 0, 0])
                .ok_or(TransportError::NoPayloadField)?;
            (&call.record[..word], Some(length))
        };
        let padding = xdr::padding_length(call.write_payload.len());
        let total = head.len() + length.map_or(0, |_| 4) + call.write_payload.len() + padding;
        let total = u32::try_from(total)
            .ok()
            .filter(|&total| total as usize <= xdr::record::MAX_FRAGMENT_LENGTH)
            .ok_or(TransportError::NoPayloadField)?;
        Ok(StreamPieces {
            mark: (xdr::record::LAST_FRAGMENT | total).to_be_bytes(),
            head,
            length: length.unwrap_or(0).to_be_bytes(),
            payload: call.write_payload,
            padding: &[0; 3][..padding],
        })
    }

    /// The pieces in order: mark, record, and (with a payload) its length,
    /// bytes and padding.
    fn slices(&self) -> Vec<&[u8]> {
        if self.payload.is_empty() {
            vec![&self.mark, self.head]
        } else {
            vec![
                &self.mark,
                self.head,
                &self.length,
                self.payload,
                self.padding,
            ]
        }
    }
}

/// Writes every byte of `pieces`, with as few system calls as the socket
/// allows.
fn write_all_vectored(stream: &mut TcpStream, pieces: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

type ReplySlot = SyncSender<Result<Vec<u8>, String>>;

/// State shared between callers and the reader thread.
#[derive(Debug, Default)]
struct Pending {
    waiting: HashMap<u32, ReplySlot>,
    /// Set once the connection broke: why.
    broken: Option<String>,
}

/// ONC RPC over TCP with record marking, reconnecting when the connection
/// broke: calls in flight at the break fail (they are never sent twice, so
/// a non-idempotent call cannot run twice); later calls go over a new
/// connection, so a restarted server is reached again (its new write
/// verifier then fails the close of files with lost unstable writes).
#[derive(Debug)]
pub struct TcpTransport {
    address: SocketAddr,
    connection: Mutex<Arc<Connection>>,
}

/// One TCP connection and its reply reader.
#[derive(Debug)]
struct Connection {
    writer: Mutex<TcpStream>,
    pending: Arc<Mutex<Pending>>,
}

impl Connection {
    fn open(address: SocketAddr) -> io::Result<Arc<Connection>> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let reader = stream.try_clone()?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = Arc::clone(&pending);
        thread::Builder::new()
            .name("rpc-tcp-reader".into())
            .spawn(move || read_replies(reader, &shared))?;
        Ok(Arc::new(Connection {
            writer: Mutex::new(stream),
            pending,
        }))
    }

    fn is_broken(&self) -> bool {
        lock(&self.pending).broken.is_some()
    }

    fn register(&self, xid: u32) -> Result<Receiver<Result<Vec<u8>, String>>, TransportError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let mut pending = lock(&self.pending);
        if let Some(reason) = &pending.broken {
            return Err(TransportError::Disconnected(reason.clone()));
        }
        if pending.waiting.contains_key(&xid) {
            return Err(TransportError::DuplicateXid(xid));
        }
        pending.waiting.insert(xid, sender);
        Ok(receiver)
    }

    fn call(&self, xid: u32, pieces: &[&[u8]]) -> Result<Vec<u8>, TransportError> {
        let receiver = self.register(xid)?;
        let sent = write_all_vectored(&mut lock(&self.writer), pieces);
        if let Err(error) = sent {
            lock(&self.pending).waiting.remove(&xid);
            return Err(TransportError::Send(error));
        }
        match receiver.recv() {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(reason)) => Err(TransportError::Disconnected(reason)),
            Err(mpsc::RecvError) => Err(TransportError::Disconnected(
                "reader thread ended".to_string(),
            )),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the reader thread: its read returns 0 or an error.
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }
}

impl TcpTransport {
    /// Connects to `address` and starts the reply reader thread.
    ///
    /// # Errors
    /// When the address does not resolve or the connection cannot be made.
    pub fn connect(address: impl ToSocketAddrs) -> io::Result<TcpTransport> {
        let address = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        Ok(TcpTransport {
            address,
            connection: Mutex::new(Connection::open(address)?),
        })
    }

    /// The current connection, replaced by a new one if it broke.
    fn connection(&self) -> Arc<Connection> {
        let mut current = lock(&self.connection);
        if current.is_broken() {
            match Connection::open(self.address) {
                Ok(fresh) => {
                    log::info!("reconnected to {}", self.address);
                    *current = fresh;
                }
                Err(error) => log::debug!("reconnecting to {}: {error}", self.address),
            }
        }
        Arc::clone(&current)
    }
}

impl Transport for TcpTransport {
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, TransportError> {
        // The mark, the record and the WRITE payload go out as they lie, in
        // one vectored write.
        let pieces = StreamPieces::of(&call)?;
        self.connection().call(call.xid, &pieces.slices())
    }
}

/// A mutex guard even if a panicking thread poisoned the lock: the guarded
/// maps stay consistent (every update is a single insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reader thread: reassembles records and wakes their callers.
fn read_replies(mut stream: TcpStream, pending: &Mutex<Pending>) {
    let reason = match pump(&mut stream, pending) {
        Ok(()) => "connection closed by the server".to_string(),
        Err(reason) => reason,
    };
    let mut pending = lock(pending);
    for (_, waiter) in pending.waiting.drain() {
        let _ = waiter.try_send(Err(reason.clone()));
    }
    pending.broken = Some(reason);
}

fn pump(stream: &mut TcpStream, pending: &Mutex<Pending>) -> Result<(), String> {
    let mut reassembler = RecordReassembler::new(MAX_REPLY_RECORD);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("read failed: {error}")),
        };
        let mut input = &buffer[..read];
        while !input.is_empty() {
            let pushed = reassembler
                .push(input)
                .map_err(|error| format!("bad record stream: {error}"))?;
            input = &input[pushed.consumed..];
            if let Some(record) = pushed.record {
                deliver(pending, record);
            }
        }
    }
}

/// Hands a reply to its caller; a reply nobody waits for (a late or forged
/// xid) is dropped.
fn deliver(pending: &Mutex<Pending>, record: Vec<u8>) {
    let Some(xid) = xdr::rpc::peek_xid(&record) else {
        log::warn!("dropping a reply record of {} bytes", record.len());
        return;
    };
    match lock(pending).waiting.remove(&xid) {
        Some(waiter) => {
            let _ = waiter.try_send(Ok(record));
        }
        None => log::warn!("dropping a reply to unknown xid {xid:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn plain(xid: u32, record: &[u8]) -> Call<'_> {
        Call {
            xid,
            record,
            write_payload: &[],
            read_capacity: 0,
        }
    }

    #[test]
    fn a_payload_is_spliced_into_the_trailing_opaque() {
        let record = [0, 0, 0, 5, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0];
        let call = Call {
            xid: 5,
            record: &record,
            write_payload: b"hello",
            read_capacity: 0,
        };
        let spliced = spliced_record(&call).unwrap();
        assert_eq!(
            spliced,
            [
                0, 0, 0, 5, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0,
                0
            ]
        );
        let no_field = Call {
            record: &record[..8],
            ..call
        };
        assert!(matches!(
            spliced_record(&no_field),
            Err(TransportError::NoPayloadField)
        ));
        assert_eq!(spliced_record(&plain(5, &record)).unwrap(), record);
    }

    /// WRITE payloads (of lengths that need each amount of padding, and
    /// one larger than a socket buffer) reach the server spliced into the
    /// record, though the transport sends record and payload as they lie.
    #[test]
    fn payloads_reach_the_server_spliced_into_the_record() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let lengths = [1usize, 2, 3, 4, 4097, 3_000_001];
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reassembler = RecordReassembler::new(4 << 20);
            let mut buffer = vec![0u8; 65_536];
            let mut answered = 0;
            while answered < lengths.len() {
                let read = stream.read(&mut buffer).unwrap();
                let mut input = &buffer[..read];
                while !input.is_empty() {
                    let pushed = reassembler.push(input).unwrap();
                    input = &input[pushed.consumed..];
                    if let Some(record) = pushed.record {
                        // The record as it arrived comes back.
                        let mut framed = Vec::new();
                        xdr::record::encode_record(
                            &record,
                            xdr::record::MAX_FRAGMENT_LENGTH,
                            &mut framed,
                        );
                        stream.write_all(&framed).unwrap();
                        answered += 1;
                    }
                }
            }
        });
        let transport = TcpTransport::connect(address).unwrap();
        for (index, length) in lengths.into_iter().enumerate() {
            let xid = 40 + index as u32;
            let mut record = xid.to_be_bytes().to_vec();
            record.extend_from_slice(&[7; 8]);
            record.extend_from_slice(&[0; 4]);
            let payload: Vec<u8> = (0..length).map(|byte| (byte % 251) as u8 + 1).collect();
            let call = Call {
                xid,
                record: &record,
                write_payload: &payload,
                read_capacity: 0,
            };
            let expected = spliced_record(&call).unwrap();
            assert_eq!(transport.call(call).unwrap(), expected);
        }
        server.join().unwrap();
    }

    /// A server that answers calls in reverse order of arrival, echoing
    /// each record back with a marker byte, so out-of-order completion is
    /// exercised.
    #[test]
    fn replies_are_matched_by_xid_out_of_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reassembler = RecordReassembler::new(1 << 20);
            let mut records = Vec::new();
            let mut buffer = [0u8; 7];
            while records.len() < 3 {
                let read = stream.read(&mut buffer).unwrap();
                let mut input = &buffer[..read];
                while !input.is_empty() {
                    let pushed = reassembler.push(input).unwrap();
                    input = &input[pushed.consumed..];
                    records.extend(pushed.record);
                }
            }
            for mut record in records.into_iter().rev() {
                record.push(0xee);
                let mut framed = Vec::new();
                // Two-byte fragments: the client must reassemble.
                xdr::record::encode_record(&record, 2, &mut framed);
                stream.write_all(&framed).unwrap();
            }
        });
        let transport = Arc::new(TcpTransport::connect(address).unwrap());
        let callers: Vec<_> = (1u32..=3)
            .map(|xid| {
                let transport = Arc::clone(&transport);
                thread::spawn(move || {
                    let mut record = xid.to_be_bytes().to_vec();
                    record.extend_from_slice(&[xid as u8; 5]);
                    let reply = transport.call(plain(xid, &record)).unwrap();
                    record.push(0xee);
                    assert_eq!(reply, record);
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        server.join().unwrap();
    }

    #[test]
    fn a_closed_connection_fails_waiting_and_later_calls() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 64];
            let _ = stream.read(&mut buffer).unwrap();
            // Close without answering.
        });
        let transport = TcpTransport::connect(address).unwrap();
        let error = transport.call(plain(7, &7u32.to_be_bytes())).unwrap_err();
        assert!(matches!(error, TransportError::Disconnected(_)), "{error}");
        server.join().unwrap();
        let error = transport.call(plain(8, &8u32.to_be_bytes())).unwrap_err();
        assert!(
            matches!(
                error,
                TransportError::Disconnected(_) | TransportError::Send(_)
            ),
            "{error}"
        );
    }

    #[test]
    fn a_new_connection_serves_calls_after_a_break() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            // First connection: read one call and hang up unanswered.
            let (mut first, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 64];
            let _ = first.read(&mut buffer).unwrap();
            drop(first);
            // Second connection: echo one record.
            let (mut second, _) = listener.accept().unwrap();
            let mut reassembler = RecordReassembler::new(1 << 20);
            loop {
                let read = second.read(&mut buffer).unwrap();
                let pushed = reassembler.push(&buffer[..read]).unwrap();
                if let Some(record) = pushed.record {
                    let mut framed = Vec::new();
                    xdr::record::encode_record(&record, 1 << 20, &mut framed);
                    second.write_all(&framed).unwrap();
                    return;
                }
            }
        });
        let transport = TcpTransport::connect(address).unwrap();
        let error = transport.call(plain(1, &1u32.to_be_bytes())).unwrap_err();
        assert!(matches!(error, TransportError::Disconnected(_)), "{error}");
        let reply = transport.call(plain(2, &2u32.to_be_bytes())).unwrap();
        assert_eq!(reply, 2u32.to_be_bytes());
        server.join().unwrap();
    }

    #[test]
    fn an_oversize_record_mark_breaks_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 64];
            let _ = stream.read(&mut buffer).unwrap();
            let mark = xdr::record::LAST_FRAGMENT | (MAX_REPLY_RECORD as u32 + 1);
            stream.write_all(&mark.to_be_bytes()).unwrap();
            // Keep the socket open so only the mark can end the call.
            thread::sleep(std::time::Duration::from_millis(500));
        });
        let transport = TcpTransport::connect(address).unwrap();
        let error = transport.call(plain(9, &9u32.to_be_bytes())).unwrap_err();
        assert!(
            matches!(&error, TransportError::Disconnected(reason) if reason.contains("record")),
            "{error}"
        );
        server.join().unwrap();
    }
}
