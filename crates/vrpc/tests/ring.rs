//! Frontend and backend against each other over safe shared memory: round
//! trips, splices, wrap-around, a full ring, out-of-order completion,
//! notification suppression, and the missed-notification race across
//! threads.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{call_record, regions, submit_with_payload, Rng, Strict};
use nfs3::procedures::data::{ReadArguments, ReadOk, WriteArguments};
use nfs3::{Arguments, FileHandle, Nfs3, ProcedureResult, Results};
use vrpc::{
    Backend, CallFailure, CountingDoorbell, Frontend, ResponseStatus, RingParameters, SubmitError,
    DEFAULT_MAX_RECORD,
};

const SMALL: RingParameters = RingParameters {
    slot_count: 4,
    slot_size: 256,
    pool_pages: 8,
};

type Front<'a> = Frontend<&'a [AtomicU32], &'a [AtomicU32], &'a CountingDoorbell>;
type Back<'a> = Backend<&'a [AtomicU32], &'a [AtomicU32], &'a CountingDoorbell>;

fn pair<'a>(
    ring: &'a [AtomicU32],
    pool: &'a [AtomicU32],
    to_back: &'a CountingDoorbell,
    to_front: &'a CountingDoorbell,
    parameters: RingParameters,
    first_index: u32,
) -> (Front<'a>, Back<'a>) {
    let front = Frontend::with_first_index(ring, pool, to_back, parameters, first_index).unwrap();
    let back = Backend::new(ring, pool, to_front, parameters, DEFAULT_MAX_RECORD).unwrap();
    (front, back)
}

/// Echo server: the reply is the call record with its "CALL" turned into
/// "REPLY", so each reply names its call.
fn echo(record: &[u8]) -> Vec<u8> {
    let mut reply = record.to_vec();
    reply[4..8].copy_from_slice(&1u32.to_be_bytes());
    reply
}

#[test]
fn round_trip_and_wrap_around_of_slots_and_indices() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    // Start just below 2^32 so the free-running indices wrap mid-test.
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, u32::MAX - 5);
    for round in 0..40u32 {
        let xid = front.allocate_xid();
        let record = call_record(xid, 7, round, &round.to_be_bytes());
        assert_eq!(front.submit(&record, None, 0), Ok(xid));
        let request = back.next_request().unwrap().expect("request published");
        assert_eq!(request.record(), record);
        assert!(back.next_request().unwrap().is_none());
        assert_eq!(
            back.respond(request, &echo(&record), None).unwrap(),
            ResponseStatus::Ok
        );
        let completion = front.poll_response().unwrap().expect("response published");
        assert_eq!(completion.xid, xid);
        assert_eq!(completion.reply.unwrap(), echo(&record));
        assert!(front.poll_response().unwrap().is_none());
    }
    assert_eq!(front.in_flight(), 0);
    assert_eq!(front.free_pages(), 8);
}

#[test]
fn full_ring_refuses_then_recovers() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    let mut records = Vec::new();
    for _ in 0..SMALL.slot_count {
        let record = call_record(front.allocate_xid(), 7, 1, b"");
        front.submit(&record, None, 0).unwrap();
        records.push(record);
    }
    let extra = call_record(front.allocate_xid(), 7, 1, b"");
    assert_eq!(front.submit(&extra, None, 0), Err(SubmitError::RingFull));
    // Consuming requests does not free slots; only collected responses do.
    let request = back.next_request().unwrap().unwrap();
    assert_eq!(front.submit(&extra, None, 0), Err(SubmitError::RingFull));
    back.respond(request, &echo(&records[0]), None).unwrap();
    assert_eq!(front.submit(&extra, None, 0), Err(SubmitError::RingFull));
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        echo(&records[0])
    );
    front.submit(&extra, None, 0).unwrap();
    records.push(extra);
    let mut answered = 1;
    while let Some(request) = back.next_request().unwrap() {
        let reply = echo(request.record());
        back.respond(request, &reply, None).unwrap();
        answered += 1;
    }
    assert_eq!(answered, records.len());
    for record in &records[1..] {
        assert_eq!(
            front.poll_response().unwrap().unwrap().reply.unwrap(),
            echo(record)
        );
    }
}

#[test]
fn many_in_flight_complete_out_of_order() {
    let parameters = RingParameters {
        slot_count: 16,
        slot_size: 512,
        pool_pages: 128,
    };
    let (ring, pool) = regions(parameters);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
    let mut rng = Rng(0x5eed);
    for _ in 0..20 {
        let count = 1 + rng.below(16) as usize;
        let mut sent = std::collections::HashMap::new();
        for _ in 0..count {
            let xid = front.allocate_xid();
            let length = rng.below(9000) as usize;
            let payload = rng.bytes(length);
            let record = call_record(xid, 7, 2, &[0, 0, 0, 0]);
            let full = submit_with_payload(&mut front, record, &payload, 3 * 4096);
            sent.insert(xid, full);
        }
        let mut requests = Vec::new();
        while let Some(request) = back.next_request().unwrap() {
            assert_eq!(
                request.record(),
                sent[&request.xid()],
                "payload spliced back in"
            );
            requests.push(request);
        }
        assert_eq!(requests.len(), count);
        // Answer in a shuffled order.
        while !requests.is_empty() {
            let request = requests.swap_remove(rng.below(requests.len() as u64) as usize);
            let reply = echo(request.record());
            back.respond(request, &reply, None).unwrap();
        }
        for _ in 0..count {
            let completion = front.poll_response().unwrap().unwrap();
            let call = sent
                .remove(&completion.xid)
                .expect("each xid answered once");
            assert_eq!(completion.reply.unwrap(), echo(&call));
        }
        assert!(sent.is_empty());
        assert_eq!(front.free_pages(), 128, "pages all returned");
    }
}

fn read_call(xid: u32, count: u32) -> Vec<u8> {
    let arguments = Arguments::Read(ReadArguments {
        file: FileHandle(vec![1; 16]),
        offset: 0,
        count,
    });
    nfs3::message::encode_call::<Nfs3>(xid, xdr::OpaqueAuth::none(), &arguments)
}

/// A READ reply carrying `data`, and the data's range in it as the encoder
/// placed it.
fn read_reply(xid: u32, data: Vec<u8>) -> (Vec<u8>, Option<std::ops::Range<usize>>) {
    let results = Results::Read(ProcedureResult::Ok(ReadOk {
        file_attributes: None,
        count: data.len() as u32,
        end_of_file: true,
        data,
    }));
    nfs3::message::encode_nfs_reply(xid, &results, Vec::new())
}

#[test]
fn read_data_travels_in_reply_pages_and_write_data_in_payload_pages() {
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 512,
        pool_pages: 32,
    };
    let (ring, pool) = regions(parameters);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);

    // READ of 10,000 bytes: the data goes to the reply pages, the record
    // rebuilt by the frontend is the server's reply byte for byte.
    let call = read_call(11, 10_000);
    front.submit(&call, None, 10_000).unwrap();
    let request = back.next_request().unwrap().unwrap();
    assert_eq!(request.record(), call);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let (reply, segment) = read_reply(11, data.clone());
    assert_eq!(
        back.respond(request, &reply, segment).unwrap(),
        ResponseStatus::Ok
    );
    // The slot itself carries only the header part.
    let slot = vrpc::layout::HEADER_SIZE;
    let mut inline_length = [0u8; 4];
    vrpc::SharedMemory::read(
        &&ring[..],
        slot + vrpc::layout::RESPONSE_RECORD_LENGTH,
        &mut inline_length,
    )
    .unwrap();
    assert_eq!(
        u32::from_le_bytes(inline_length) as usize,
        reply.len() - data.len()
    );
    let completion = front.poll_response().unwrap().unwrap();
    let rebuilt = completion.reply.unwrap();
    assert_eq!(rebuilt, reply);
    let (_, results) = nfs3::message::decode_reply::<Nfs3>(&rebuilt, 6).unwrap();
    match results {
        Results::Read(ProcedureResult::Ok(ok)) => assert_eq!(ok.data, data),
        other => panic!("unexpected {other:?}"),
    }

    // WRITE of 5,000 bytes: the guest encodes empty data and splices.
    let payload: Vec<u8> = (0..5_000u32).map(|i| (i * 13) as u8).collect();
    let empty = Arguments::Write(WriteArguments {
        file: FileHandle(vec![2; 16]),
        offset: 4096,
        count: payload.len() as u32,
        stable: nfs3::StableHow::Unstable,
        data: Vec::new(),
    });
    let record = nfs3::message::encode_call::<Nfs3>(12, xdr::OpaqueAuth::none(), &empty);
    submit_with_payload(&mut front, record, &payload, 0);
    let request = back.next_request().unwrap().unwrap();
    let full = Arguments::Write(WriteArguments {
        file: FileHandle(vec![2; 16]),
        offset: 4096,
        count: payload.len() as u32,
        stable: nfs3::StableHow::Unstable,
        data: payload.clone(),
    });
    assert_eq!(
        request.record(),
        nfs3::message::encode_call::<Nfs3>(12, xdr::OpaqueAuth::none(), &full)
    );
    back.respond_no_reply(request).unwrap();
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply,
        Err(CallFailure::NoReply)
    );
}

fn slot_word(ring: &[AtomicU32], offset: usize) -> usize {
    let mut word = [0u8; 4];
    vrpc::SharedMemory::read(&ring, offset, &mut word).unwrap();
    u32::from_le_bytes(word) as usize
}

/// The backend carries exactly the range it is given in the reply pages
/// (wherever it lies, of any length, empty included) and the frontend
/// rebuilds the identical record.
#[test]
fn the_backend_carries_exactly_the_given_segment() {
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 512,
        pool_pages: 8,
    };
    let reply = Rng(21).bytes(1_501);
    let segments = [
        100..1_301,
        0..1_200,
        301..1_501,
        50..1_077,
        // Too long for the pages offered, or leaving too much for the slot:
        // the generic tail rule instead.
        0..1_501,
        1_000..1_499,
    ];
    for segment in segments {
        let (ring, pool) = regions(parameters);
        let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
        let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
        let call = call_record(3, 7, 1, b"");
        front.submit(&call, None, 1_400).unwrap();
        // The request's one reply descriptor, read before the response
        // overwrites the slot.
        let slot = vrpc::layout::HEADER_SIZE;
        let mut descriptor = [0u8; vrpc::layout::DESCRIPTOR_SIZE];
        vrpc::SharedMemory::read(
            &&ring[..],
            slot + vrpc::layout::SLOT_HEADER_SIZE,
            &mut descriptor,
        )
        .unwrap();
        let descriptor = vrpc::Descriptor::from_bytes(descriptor);
        let request = back.next_request().unwrap().unwrap();
        assert_eq!(
            back.respond(request, &reply, Some(segment.clone()))
                .unwrap(),
            ResponseStatus::Ok
        );
        let inline = slot_word(&ring, slot + vrpc::layout::RESPONSE_RECORD_LENGTH);
        let offset = slot_word(&ring, slot + vrpc::layout::RESPONSE_SPLICE_OFFSET);
        let length = slot_word(&ring, slot + vrpc::layout::RESPONSE_SPLICE_LENGTH);
        let fits =
            segment.len() <= 1_400 && reply.len() - segment.len() <= parameters.response_capacity();
        let spliced = if fits {
            segment.clone()
        } else {
            // The tail past the slot's capacity.
            parameters.response_capacity()..reply.len()
        };
        assert_eq!((offset, length), (spliced.start, spliced.len()));
        assert_eq!(inline, reply.len() - spliced.len());
        let mut pages = vec![0u8; spliced.len()];
        let start = descriptor.pool_offset(parameters.pool_pages).unwrap();
        vrpc::SharedMemory::read(&&pool[..], start, &mut pages).unwrap();
        assert_eq!(pages, &reply[spliced]);
        assert_eq!(
            front.poll_response().unwrap().unwrap().reply.unwrap(),
            reply
        );
    }
    // Short replies with an empty segment, or one at either end.
    let (ring, pool) = regions(parameters);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
    let short = Rng(22).bytes(37);
    for segment in [0..0, 5..5, 37..37, 0..37, 3..10, 30..37] {
        let xid = front.allocate_xid();
        front
            .submit(&call_record(xid, 7, 1, b""), None, 4096)
            .unwrap();
        let request = back.next_request().unwrap().unwrap();
        assert_eq!(
            back.respond(request, &short, Some(segment)).unwrap(),
            ResponseStatus::Ok
        );
        assert_eq!(
            front.poll_response().unwrap().unwrap().reply.unwrap(),
            short
        );
    }
}

/// A segment outside the reply is refused without a panic: the call is
/// answered NO_REPLY, and the connection goes on.
#[test]
fn a_segment_outside_the_reply_is_refused() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    let reply = Rng(23).bytes(100);
    #[allow(clippy::reversed_empty_ranges)]
    let hostile = [
        10..101,
        101..101,
        50..40,
        usize::MAX - 1..usize::MAX,
        0..usize::MAX,
    ];
    for segment in hostile {
        let xid = front.allocate_xid();
        front
            .submit(&call_record(xid, 7, 1, b""), None, 4096)
            .unwrap();
        let request = back.next_request().unwrap().unwrap();
        assert_eq!(
            back.respond(request, &reply, Some(segment)),
            Err(vrpc::ProtocolError::SegmentOutOfReply)
        );
        let completion = front.poll_response().unwrap().unwrap();
        assert_eq!(completion.xid, xid);
        assert_eq!(completion.reply, Err(CallFailure::NoReply));
    }
    let xid = front.allocate_xid();
    front.submit(&call_record(xid, 7, 1, b""), None, 0).unwrap();
    let request = back.next_request().unwrap().unwrap();
    back.respond(request, &reply, Some(0..100)).unwrap();
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        reply
    );
    assert_eq!(front.in_flight(), 0);
}

#[test]
fn oversized_records_spill_and_too_large_replies_are_refused() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    // A 3,000-byte call in 256-byte slots: the tail travels in pages.
    let body = Rng(3).bytes(3_000);
    let record = call_record(5, 7, 1, &body);
    front.submit(&record, None, 4096).unwrap();
    let request = back.next_request().unwrap().unwrap();
    assert_eq!(request.record(), record);
    // A reply longer than slot plus offered pages: ReplyTooLarge.
    let huge = vec![9u8; 9000];
    assert_eq!(
        back.respond(request, &huge, None).unwrap(),
        ResponseStatus::ReplyTooLarge
    );
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply,
        Err(CallFailure::ReplyTooLarge)
    );
    // A reply that needs the pages but fits them.
    front
        .submit(&call_record(6, 7, 1, b""), None, 4096)
        .unwrap();
    let request = back.next_request().unwrap().unwrap();
    let long = Rng(4).bytes(4000);
    back.respond(request, &long, None).unwrap();
    assert_eq!(front.poll_response().unwrap().unwrap().reply.unwrap(), long);
}

#[test]
fn pool_exhaustion_is_transient_and_oversize_is_not() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    assert_eq!(
        front.submit(&call_record(1, 7, 1, b""), None, 9 * 4096),
        Err(SubmitError::PoolTooSmall)
    );
    front
        .submit(&call_record(2, 7, 1, b""), None, 6 * 4096)
        .unwrap();
    let refused = front.submit(&call_record(3, 7, 1, b""), None, 3 * 4096);
    assert_eq!(refused, Err(SubmitError::PoolExhausted));
    assert!(refused.unwrap_err().is_transient());
    assert_eq!(
        front.submit(&call_record(2, 7, 1, b""), None, 0),
        Err(SubmitError::DuplicateXid)
    );
    assert_eq!(front.submit(&[1, 2], None, 0), Err(SubmitError::BadRecord));
    let request = back.next_request().unwrap().unwrap();
    back.respond(request, b"reply", None).unwrap();
    front.poll_response().unwrap().unwrap();
    front
        .submit(&call_record(3, 7, 1, b""), None, 3 * 4096)
        .unwrap();
}

#[test]
fn notifications_are_suppressed_until_requested() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    front.submit(&call_record(1, 7, 1, b""), None, 0).unwrap();
    assert_eq!(
        to_back.rings(),
        1,
        "a fresh ring asks for the first request"
    );
    front.submit(&call_record(2, 7, 1, b""), None, 0).unwrap();
    assert_eq!(to_back.rings(), 1, "the backend has not asked again");
    let first = back.next_request().unwrap().unwrap();
    let second = back.next_request().unwrap().unwrap();
    assert!(!back.enable_notifications().unwrap(), "nothing pending");
    front.submit(&call_record(3, 7, 1, b""), None, 0).unwrap();
    assert_eq!(to_back.rings(), 2);
    assert!(
        back.enable_notifications().unwrap(),
        "the final check sees the request"
    );

    back.respond(first, b"one", None).unwrap();
    assert_eq!(to_front.rings(), 1);
    back.respond(second, b"two", None).unwrap();
    assert_eq!(to_front.rings(), 1, "the frontend has not asked again");
    assert!(front.enable_notifications().unwrap());
    front.poll_response().unwrap().unwrap();
    front.poll_response().unwrap().unwrap();
    assert!(!front.enable_notifications().unwrap());
    let third = back.next_request().unwrap().unwrap();
    back.respond(third, b"three", None).unwrap();
    assert_eq!(to_front.rings(), 2);
}

/// A doorbell a thread can sleep on.
#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    condition: Condvar,
}

impl vrpc::Doorbell for Bell {
    fn notify(&self) {
        *self.rung.lock().unwrap() = true;
        self.condition.notify_all();
    }
}

impl Bell {
    /// Sleeps until rung; a missed notification shows as a timeout.
    fn wait(&self) {
        let guard = self.rung.lock().unwrap();
        let (mut guard, timeout) = self
            .condition
            .wait_timeout_while(guard, Duration::from_secs(20), |rung| !*rung)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "missed notification: both ends asleep"
        );
        *guard = false;
    }
}

#[test]
fn threads_never_miss_a_notification() {
    let parameters = RingParameters {
        slot_count: 8,
        slot_size: 256,
        pool_pages: 16,
    };
    let (ring, pool) = regions(parameters);
    let (ring, pool) = (Arc::new(ring), Arc::new(pool));
    let (to_back, to_front) = (Arc::new(Bell::default()), Arc::new(Bell::default()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut front = Frontend::new(&ring[..], &pool[..], &*to_back, parameters).unwrap();
    const CALLS: u32 = 3000;
    std::thread::scope(|scope| {
        let (ring, pool, to_back, to_front, refused) =
            (&ring, &pool, &to_back, &to_front, &refused);
        scope.spawn(move || {
            let ring = Strict {
                inner: &ring[..],
                refused,
            };
            let pool = Strict {
                inner: &pool[..],
                refused,
            };
            let mut back =
                Backend::new(ring, pool, &**to_front, parameters, DEFAULT_MAX_RECORD).unwrap();
            let mut answered = 0;
            while answered < CALLS {
                match back.next_request().unwrap() {
                    Some(request) => {
                        let reply = echo(request.record());
                        back.respond(request, &reply, None).unwrap();
                        answered += 1;
                    }
                    None => {
                        if !back.enable_notifications().unwrap() {
                            to_back.wait();
                        }
                    }
                }
            }
        });
        let mut sent = 0;
        let mut received = 0;
        while received < CALLS {
            while sent < CALLS && front.has_free_slot() {
                let record = call_record(front.allocate_xid(), 7, sent, &sent.to_be_bytes());
                front
                    .submit(&record, None, if sent % 3 == 0 { 4096 } else { 0 })
                    .unwrap();
                sent += 1;
            }
            match front.poll_response().unwrap() {
                Some(completion) => {
                    completion.reply.unwrap();
                    received += 1;
                }
                None => {
                    if !front.enable_notifications().unwrap() {
                        to_front.wait();
                    }
                }
            }
        }
    });
    assert_eq!(refused.load(Ordering::SeqCst), 0);
}

#[test]
fn dropped_requests_are_answered_no_reply() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    front
        .submit(&call_record(1, 7, 1, b""), None, 4096)
        .unwrap();
    front.submit(&call_record(2, 7, 1, b""), None, 0).unwrap();
    let first = back.next_request().unwrap().unwrap();
    let second = back.next_request().unwrap().unwrap();
    assert_eq!(back.outstanding(), 2);
    drop(first);
    // The next call of the backend answers it.
    assert!(!back.enable_notifications().unwrap());
    assert_eq!(back.outstanding(), 1);
    let completion = front.poll_response().unwrap().unwrap();
    assert_eq!(
        (completion.xid, completion.reply),
        (1, Err(CallFailure::NoReply))
    );
    back.respond(second, b"two", None).unwrap();
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        b"two"
    );
    assert_eq!(front.free_pages(), 8);
    // A request of another backend is refused, not answered.
    let (other_ring, other_pool) = regions(SMALL);
    let (mut other_front, mut other_back) =
        pair(&other_ring, &other_pool, &to_back, &to_front, SMALL, 0);
    other_front
        .submit(&call_record(3, 7, 1, b""), None, 0)
        .unwrap();
    let foreign = other_back.next_request().unwrap().unwrap();
    assert_eq!(
        back.respond(foreign, b"x", None),
        Err(vrpc::ProtocolError::UnknownXid { xid: 3 })
    );
    assert_eq!(back.outstanding(), 0);
}

/// Bulk data a server writes through a request's reply pages itself, in
/// pieces of any size and in any order, with several calls in flight
/// answered out of order (so the pages of a call need not be one run of the
/// pool), arrives in the frontend's rebuilt record between the two parts
/// of the record the backend sends.
#[test]
fn data_written_through_the_reply_pages_arrives_in_place() {
    let parameters = RingParameters {
        slot_count: 8,
        slot_size: 512,
        pool_pages: 16,
    };
    let (ring, pool) = regions(parameters);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
    let mut rng = Rng(31);
    let mut waiting = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..200 {
        let xid = front.allocate_xid();
        let capacity = 1 + rng.below(3 * 4096) as usize;
        front
            .submit(&call_record(xid, 7, 6, b""), None, capacity)
            .unwrap();
        waiting.push(back.next_request().unwrap().expect("request published"));
        if waiting.len() < 3 && round < 199 {
            continue;
        }
        while !waiting.is_empty() {
            let request = waiting.swap_remove(rng.below(waiting.len() as u64) as usize);
            let mut pages = back.reply_pages(&request);
            assert_eq!(pages.capacity(), request.reply_capacity());
            let length = rng.below(pages.capacity() as u64 + 1) as usize;
            let data = rng.bytes(length);
            // Pieces of random sizes, written in order, then some again
            // out of order (the same bytes: the writes may repeat).
            let mut at = 0;
            while at < length {
                let piece = (1 + rng.below(5_000) as usize).min(length - at);
                pages.write(at, &data[at..at + piece]).unwrap();
                at += piece;
            }
            for _ in 0..3 {
                if length > 0 {
                    let start = rng.below(length as u64) as usize;
                    let end = start + rng.below((length - start) as u64 + 1) as usize;
                    pages.write(start, &data[start..end]).unwrap();
                }
            }
            let head_length = 4 + rng.below(60) as usize;
            let head = rng.bytes(head_length);
            let tail_length = rng.below(4) as usize;
            let tail = rng.bytes(tail_length);
            let mut record = head.clone();
            record.extend_from_slice(&tail);
            record[..4].copy_from_slice(&request.xid().to_be_bytes());
            let mut whole = record[..head.len()].to_vec();
            whole.extend_from_slice(&data);
            whole.extend_from_slice(&tail);
            expected.insert(request.xid(), whole);
            assert_eq!(
                back.respond_placed(request, &record, head.len(), length)
                    .unwrap(),
                ResponseStatus::Ok
            );
        }
        while let Some(completion) = front.poll_response().unwrap() {
            let whole = expected.remove(&completion.xid).expect("a call in flight");
            assert_eq!(completion.reply.unwrap(), whole);
        }
    }
    assert!(expected.is_empty());

    // Pages in several runs: eight one-page calls fill a pool of eight,
    // every other one is answered, and the next call's three pages are
    // three runs.
    let parameters = RingParameters {
        slot_count: 16,
        slot_size: 512,
        pool_pages: 8,
    };
    let (ring, pool) = regions(parameters);
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
    let mut held = Vec::new();
    for index in 0..8 {
        let xid = front.allocate_xid();
        front
            .submit(&call_record(xid, 7, 6, b""), None, 4096)
            .unwrap();
        let request = back.next_request().unwrap().unwrap();
        if index % 2 == 0 {
            back.respond(request, &xid.to_be_bytes(), None).unwrap();
            front.poll_response().unwrap().unwrap();
        } else {
            held.push(request);
        }
    }
    let xid = front.allocate_xid();
    front
        .submit(&call_record(xid, 7, 6, b""), None, 3 * 4096)
        .unwrap();
    let request = back.next_request().unwrap().unwrap();
    let mut pages = back.reply_pages(&request);
    let data = rng.bytes(3 * 4096 - 5);
    // Backwards, a block at a time, then a piece across two runs again.
    for start in (0..data.len()).step_by(1000).rev() {
        let end = (start + 1000).min(data.len());
        pages.write(start, &data[start..end]).unwrap();
    }
    pages.write(4000, &data[4000..8300]).unwrap();
    let record = xid.to_be_bytes();
    back.respond_placed(request, &record, 4, data.len())
        .unwrap();
    let mut whole = record.to_vec();
    whole.extend_from_slice(&data);
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        whole
    );
    drop(held);
}

/// Writes past the reply pages, and answers that name data past the record
/// or more than the pages hold, are refused without a panic; the frontend
/// gets NO_REPLY and the connection goes on.
#[test]
fn placed_data_outside_the_reply_pages_is_refused() {
    let (ring, pool) = regions(SMALL);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, SMALL, 0);
    for (at, placed) in [(11, 0), (0, 4097), (usize::MAX, 1), (5, usize::MAX)] {
        let xid = front.allocate_xid();
        front
            .submit(&call_record(xid, 7, 6, b""), None, 4096)
            .unwrap();
        let request = back.next_request().unwrap().unwrap();
        let mut pages = back.reply_pages(&request);
        for (offset, length) in [(4096, 1), (4000, 97), (usize::MAX, 2), (0, 4097)] {
            assert_eq!(
                pages.write(offset, &vec![7; length]),
                Err(vrpc::ProtocolError::SegmentOutOfReply)
            );
        }
        assert_eq!(
            back.respond_placed(request, &[0; 10], at, placed),
            Err(vrpc::ProtocolError::SegmentOutOfReply)
        );
        let completion = front.poll_response().unwrap().unwrap();
        assert_eq!(completion.xid, xid);
        assert_eq!(completion.reply, Err(CallFailure::NoReply));
    }
    let xid = front.allocate_xid();
    front
        .submit(&call_record(xid, 7, 6, b""), None, 4096)
        .unwrap();
    let request = back.next_request().unwrap().unwrap();
    let mut pages = back.reply_pages(&request);
    pages.write(0, b"data").unwrap();
    let mut record = xid.to_be_bytes().to_vec();
    record.extend_from_slice(b"head");
    back.respond_placed(request, &record, 8, 4).unwrap();
    let mut whole = record.clone();
    whole.extend_from_slice(b"data");
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        whole
    );
}

/// A call whose WRITE-like payload of `length` bytes travels in pool
/// pages; returns the record the backend must rebuild.
fn submit_payload(front: &mut Front<'_>, rng: &mut Rng, length: usize) -> Vec<u8> {
    let xid = front.allocate_xid();
    let payload = rng.bytes(length);
    submit_with_payload(front, call_record(xid, 7, 2, &[0, 0, 0, 0]), &payload, 0)
}

#[test]
fn answered_large_records_are_reused_and_carry_only_their_own_bytes() {
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 512,
        pool_pages: 128,
    };
    let (ring, pool) = regions(parameters);
    let (to_back, to_front) = (CountingDoorbell::new(), CountingDoorbell::new());
    let (mut front, mut back) = pair(&ring, &pool, &to_back, &to_front, parameters, 0);
    back.keep_spare_records(2);
    let mut rng = Rng(0x5eed);

    let sent = submit_payload(&mut front, &mut rng, 200 << 10);
    let first = back.next_request().unwrap().unwrap();
    assert_eq!(first.record(), sent);
    let buffer = first.record().as_ptr();
    back.respond(first, b"reply", None).unwrap();
    front.poll_response().unwrap().unwrap();

    // A smaller large record goes into the answered one's buffer, and
    // holds exactly its own bytes (none of the longer one's tail).
    let sent = submit_payload(&mut front, &mut rng, 100 << 10);
    let mut second = back.next_request().unwrap().unwrap();
    assert_eq!(second.record(), sent);
    assert_eq!(second.record().as_ptr(), buffer, "the spare was reused");

    // Recycled before its answer (a reply held for a commit): the request
    // keeps no bytes, is still answered, and the next call reuses its
    // buffer.
    back.recycle_record(&mut second);
    assert!(second.record().is_empty());
    back.respond(second, b"reply", None).unwrap();
    assert_eq!(
        front.poll_response().unwrap().unwrap().reply.unwrap(),
        b"reply"
    );
    let sent = submit_payload(&mut front, &mut rng, 150 << 10);
    let third = back.next_request().unwrap().unwrap();
    assert_eq!(third.record(), sent);
    assert_eq!(third.record().as_ptr(), buffer);

    // A record larger than every spare gets a buffer of its own.
    let sent = submit_payload(&mut front, &mut rng, 240 << 10);
    let fourth = back.next_request().unwrap().unwrap();
    assert_eq!(fourth.record(), sent);
    assert_ne!(fourth.record().as_ptr(), buffer);
    back.respond(third, b"reply", None).unwrap();
    back.respond(fourth, b"reply", None).unwrap();
}
