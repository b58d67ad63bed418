//! Throughput of the hosted VRPC transport: small-call round trips per
//! second (one caller and four) and bulk MB/s (1 MiB READ replies through
//! the reply pages, 1 MiB WRITE payloads through the payload pages), each
//! next to the same exchange over a unix stream socket with length-prefixed
//! records (what NFS over TCP on loopback would do), as a ratio.
//!
//! `cargo run --release -p vrpc-hosted --example vrpc_bench [ROUNDS]`

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use nfs3::procedures::data::{ReadArguments, ReadOk, WriteArguments};
use nfs3::{Arguments, FileHandle, Nfs3, ProcedureResult, Results, StableHow};
use vrpc_hosted::Listener;

const MIB: usize = 1 << 20;

fn read_call(xid: u32) -> Vec<u8> {
    let arguments = Arguments::Read(ReadArguments {
        file: FileHandle(vec![1; 32]),
        offset: 0,
        count: MIB as u32,
    });
    nfs3::message::encode_call::<Nfs3>(xid, xdr::OpaqueAuth::none(), &arguments)
}

fn write_call(xid: u32, count: usize, data: Vec<u8>) -> Vec<u8> {
    let arguments = Arguments::Write(WriteArguments {
        file: FileHandle(vec![1; 32]),
        offset: 0,
        count: count as u32,
        stable: StableHow::Unstable,
        data,
    });
    nfs3::message::encode_call::<Nfs3>(xid, xdr::OpaqueAuth::none(), &arguments)
}

/// The benchmark server: READ gets 1 MiB of data, anything else a short
/// reply.
fn serve(call: &[u8], data: &[u8]) -> Vec<u8> {
    let xid = u32::from_be_bytes([call[0], call[1], call[2], call[3]]);
    let procedure = u32::from_be_bytes([call[20], call[21], call[22], call[23]]);
    if procedure == 6 {
        let results = Results::Read(ProcedureResult::Ok(ReadOk {
            file_attributes: None,
            count: data.len() as u32,
            end_of_file: false,
            data: data.to_vec(),
        }));
        nfs3::message::encode_reply(xid, &results, Vec::new())
    } else {
        nfs3::message::encode_reply(xid, &Results::Null(()), Vec::new())
    }
}

fn rate(label: &str, count: usize, bytes: usize, vrpc: Duration, socket: Duration) {
    let per_second = |elapsed: Duration| count as f64 / elapsed.as_secs_f64();
    let megabytes = |elapsed: Duration| bytes as f64 / MIB as f64 / elapsed.as_secs_f64();
    if bytes == 0 {
        println!(
            "{label:<28} vrpc {:>10.0}/s   socket {:>10.0}/s   ratio {:.2}",
            per_second(vrpc),
            per_second(socket),
            socket.as_secs_f64() / vrpc.as_secs_f64()
        );
    } else {
        println!(
            "{label:<28} vrpc {:>8.0} MiB/s   socket {:>8.0} MiB/s   ratio {:.2}",
            megabytes(vrpc),
            megabytes(socket),
            socket.as_secs_f64() / vrpc.as_secs_f64()
        );
    }
}

/// Length-prefixed records over a stream socket, one server thread.
fn socket_pair(data: Vec<u8>) -> UnixStream {
    let (client, mut server) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut length = [0u8; 4];
        while server.read_exact(&mut length).is_ok() {
            let mut call = vec![0; u32::from_be_bytes(length) as usize];
            if server.read_exact(&mut call).is_err() {
                return;
            }
            let reply = serve(&call, &data);
            let mut message = (reply.len() as u32).to_be_bytes().to_vec();
            message.extend_from_slice(&reply);
            if server.write_all(&message).is_err() {
                return;
            }
        }
    });
    client
}

fn socket_call(stream: &mut UnixStream, call: &[u8]) -> Vec<u8> {
    let mut message = (call.len() as u32).to_be_bytes().to_vec();
    message.extend_from_slice(call);
    stream.write_all(&message).unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut reply = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut reply).unwrap();
    reply
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000);
    let bulk_rounds = (rounds / 100).max(20);
    let data: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8).collect();
    let path = std::env::temp_dir().join(format!("vrpc-bench-{}.sock", std::process::id()));
    let listener = Listener::bind(&path).unwrap();
    let server_data = data.clone();
    thread::spawn(move || loop {
        let incoming = listener.accept().unwrap();
        let data = server_data.clone();
        thread::spawn(move || {
            let pending = incoming.handshake(Duration::from_secs(5)).unwrap();
            let connection = pending.accept(None, vrpc::DEFAULT_MAX_RECORD).unwrap();
            let _ = connection.serve(|call| Some(serve(call, &data)));
        });
    });
    let client = vrpc_hosted::connect(&path, "/export").unwrap();
    let null = nfs3::message::encode_call::<Nfs3>(1, xdr::OpaqueAuth::none(), &Arguments::Null(()));

    // Small calls, one caller.
    let start = Instant::now();
    for _ in 0..rounds {
        client.call(&null, &[], 0).unwrap();
    }
    let vrpc = start.elapsed();
    let mut stream = socket_pair(data.clone());
    let start = Instant::now();
    for _ in 0..rounds {
        socket_call(&mut stream, &null);
    }
    rate("NULL, 1 caller", rounds, 0, vrpc, start.elapsed());

    // Small calls, four callers on one connection / four sockets.
    let start = Instant::now();
    thread::scope(|scope| {
        for caller in 0..4u32 {
            let client = &client;
            scope.spawn(move || {
                // Calls in flight together need xids of their own.
                let null = nfs3::message::encode_call::<Nfs3>(
                    100 + caller,
                    xdr::OpaqueAuth::none(),
                    &Arguments::Null(()),
                );
                for _ in 0..rounds / 4 {
                    client.call(&null, &[], 0).unwrap();
                }
            });
        }
    });
    let vrpc = start.elapsed();
    let start = Instant::now();
    thread::scope(|scope| {
        for _ in 0..4 {
            let mut stream = socket_pair(data.clone());
            let null = &null;
            scope.spawn(move || {
                for _ in 0..rounds / 4 {
                    socket_call(&mut stream, null);
                }
            });
        }
    });
    rate("NULL, 4 callers", rounds / 4 * 4, 0, vrpc, start.elapsed());

    // 1 MiB READs: data through the reply pages.
    let call = read_call(2);
    let start = Instant::now();
    for _ in 0..bulk_rounds {
        let reply = client.call(&call, &[], MIB + 4096).unwrap();
        assert!(reply.len() > MIB);
    }
    let vrpc = start.elapsed();
    let start = Instant::now();
    for _ in 0..bulk_rounds {
        socket_call(&mut stream, &call);
    }
    rate(
        "READ 1 MiB",
        bulk_rounds,
        bulk_rounds * MIB,
        vrpc,
        start.elapsed(),
    );

    // 1 MiB WRITEs: data through the payload pages.
    let empty = write_call(3, MIB, Vec::new());
    let full = write_call(3, MIB, data.clone());
    let start = Instant::now();
    for _ in 0..bulk_rounds {
        client.call(&empty, &data, 0).unwrap();
    }
    let vrpc = start.elapsed();
    let start = Instant::now();
    for _ in 0..bulk_rounds {
        socket_call(&mut stream, &full);
    }
    rate(
        "WRITE 1 MiB",
        bulk_rounds,
        bulk_rounds * MIB,
        vrpc,
        start.elapsed(),
    );
    drop(client);
    let _ = std::fs::remove_file(&path);
}
