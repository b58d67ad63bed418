//! The backend (storage domain) end of a VRPC connection.
//!
//! Design: everything the frontend wrote is hostile until checked. The
//! backend reads `req_prod` once per batch and bounds it by the ring size,
//! copies each request slot out whole, then validates the private copy:
//! flags, descriptor count, inline length against the slot, every
//! descriptor against the pool, the splice against the record and the
//! descriptors, and the rebuilt record against a size limit. Any failure is
//! a [`ProtocolError`]: the platform drops the connection. No input makes
//! this code panic or touch memory outside the two regions (the fuzz target
//! `vrpc_backend` checks exactly that).

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{fence, Ordering};

use crate::error::ProtocolError;
use crate::layout::{
    get_u16, get_u32, put_u32, Descriptor, ResponseStatus, RingParameters, DESCRIPTOR_SIZE,
    HEADER_MAGIC, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE, HEADER_VERSION, MAGIC, MAX_DESCRIPTORS,
    REQUEST_EVENT, REQUEST_FLAGS, REQUEST_PAYLOAD_COUNT, REQUEST_PRODUCER, REQUEST_RECORD_LENGTH,
    REQUEST_REPLY_COUNT, REQUEST_SPLICE_LENGTH, REQUEST_SPLICE_OFFSET, REQUEST_XID, RESPONSE_EVENT,
    RESPONSE_PRODUCER, RESPONSE_RECORD_LENGTH, RESPONSE_SPLICE_LENGTH, RESPONSE_SPLICE_OFFSET,
    RESPONSE_STATUS, RESPONSE_XID, SLOT_HEADER_SIZE, VERSION,
};
use crate::memory::{Doorbell, SharedMemory};

/// Default limit on a rebuilt request record: a 1 MiB WRITE plus headers.
pub const DEFAULT_MAX_RECORD: usize = (1 << 20) + 4096;

/// Request records of at least this capacity are kept for the next
/// request once answered ([`Backend::recycle_record`]); smaller ones cost
/// little to allocate.
const SPARE_RECORD_MIN: usize = 64 << 10;

/// A validated request, copied out of shared memory.
///
/// Answer it exactly once with [`Backend::respond`] or
/// [`Backend::respond_no_reply`]; both take it by value. A request dropped
/// unanswered is answered NO_REPLY by the backend's next call, so the
/// frontend's caller is never left waiting.
#[derive(Debug)]
pub struct Request {
    xid: u32,
    /// Shared with the backend's list of unanswered requests: when only the
    /// backend holds it, the request was dropped.
    ticket: Arc<()>,
    record: Vec<u8>,
    /// `(pool byte offset, length)` of each reply range, validated.
    reply_ranges: Vec<(usize, usize)>,
    reply_capacity: usize,
}

impl Request {
    /// The xid the slot carried.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The full, standard ONC RPC call record (payload spliced back in).
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// Bytes of reply payload the frontend offered pages for.
    pub fn reply_capacity(&self) -> usize {
        self.reply_capacity
    }
}

/// The backend of one connection over ring memory `R`, pool memory `P`
/// and doorbell `D`.
#[derive(Debug)]
pub struct Backend<R, P, D> {
    ring: R,
    pool: P,
    doorbell: D,
    parameters: RingParameters,
    max_record: usize,
    /// `req_cons`: requests consumed.
    request_consumer: u32,
    /// The last `req_prod` read, already validated.
    request_producer_seen: u32,
    /// `rsp_prod_pvt`: responses written.
    response_producer: u32,
    /// Consumed, unanswered requests: xid and ticket.
    unanswered: Vec<(u32, Arc<()>)>,
    slot: Vec<u8>,
    /// Emptied records of answered requests, reused for the next large
    /// ones: a 1 MiB WRITE's record is otherwise a fresh allocation per
    /// call, which a process whose allocator maps large blocks on their
    /// own (the hosted server's) pays for in page faults.
    spare_records: Vec<Vec<u8>>,
    /// Most records kept in `spare_records` ([`Backend::keep_spare_records`]).
    spare_limit: usize,
}

/// The reply pages of one request ([`Backend::reply_pages`]): the bulk
/// data of its reply, written where the frontend will read it.
#[derive(Debug, Clone)]
pub struct ReplyPages<P> {
    pool: P,
    /// `(pool byte offset, length)` of each reply range, validated.
    ranges: Vec<(usize, usize)>,
    capacity: usize,
    /// The range the last write ended in, and the bytes of the ranges
    /// before it: writes in order find their place at once.
    cursor: (usize, usize),
}

impl<P: SharedMemory> ReplyPages<P> {
    /// The bytes the pages hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes `bytes` at `at` of the reply's bulk data.
    ///
    /// # Errors
    /// [`ProtocolError::SegmentOutOfReply`] for bytes past the capacity;
    /// [`ProtocolError::Memory`] when the region refused the access.
    pub fn write(&mut self, at: usize, bytes: &[u8]) -> Result<(), ProtocolError> {
        if at
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.capacity)
        {
            return Err(ProtocolError::SegmentOutOfReply);
        }
        if at < self.cursor.1 {
            self.cursor = (0, 0);
        }
        let (mut index, mut before) = self.cursor;
        let mut rest = bytes;
        while let Some(&(offset, length)) = self.ranges.get(index) {
            if rest.is_empty() {
                break;
            }
            let position = at + (bytes.len() - rest.len());
            if position >= before + length {
                before += length;
                index += 1;
                continue;
            }
            let within = position - before;
            let count = (length - within).min(rest.len());
            self.pool.write(offset + within, &rest[..count])?;
            rest = &rest[count..];
            self.cursor = (index, before);
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::SegmentOutOfReply)
        }
    }
}

impl<R: SharedMemory, P: SharedMemory, D: Doorbell> Backend<R, P, D> {
    /// Attaches to a ring the frontend initialised. `parameters` come from
    /// the handshake; the ring header must repeat them (read once, here).
    /// Rebuilt request records longer than `max_record` are refused.
    ///
    /// # Errors
    /// [`ProtocolError::BadHeader`] when parameters, header or region sizes
    /// disagree.
    pub fn new(
        ring: R,
        pool: P,
        doorbell: D,
        parameters: RingParameters,
        max_record: usize,
    ) -> Result<Self, ProtocolError> {
        let parameters = parameters
            .validate()
            .map_err(|_| ProtocolError::BadHeader)?;
        if ring.size() < parameters.ring_bytes() || pool.size() < parameters.pool_bytes() {
            return Err(ProtocolError::BadHeader);
        }
        // Acquire pairs with the frontend's release store of the slot size.
        let slot_size = ring.load_u32(HEADER_SLOT_SIZE, Ordering::Acquire)?;
        let header_ok = ring.load_u32(HEADER_MAGIC, Ordering::Relaxed)? == MAGIC
            && ring.load_u32(HEADER_VERSION, Ordering::Relaxed)? == VERSION
            && ring.load_u32(HEADER_SLOT_COUNT, Ordering::Relaxed)? == parameters.slot_count
            && slot_size == parameters.slot_size;
        if !header_ok {
            return Err(ProtocolError::BadHeader);
        }
        // Start where the frontend's indices are: a fresh ring has both at
        // zero; anything else would already have been produced into.
        let producer = ring.load_u32(RESPONSE_PRODUCER, Ordering::Relaxed)?;
        Ok(Self {
            ring,
            pool,
            doorbell,
            parameters,
            max_record,
            request_consumer: producer,
            request_producer_seen: producer,
            response_producer: producer,
            unanswered: Vec::with_capacity(parameters.slot_count as usize),
            slot: vec![0; parameters.slot_size as usize],
            spare_records: Vec::new(),
            spare_limit: 0,
        })
    }

    /// The connection's parameters.
    pub fn parameters(&self) -> RingParameters {
        self.parameters
    }

    /// Requests consumed and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.request_consumer.wrapping_sub(self.response_producer)
    }

    /// Reads and bounds `req_prod`: at most one ring of requests beyond the
    /// responses written (Xen's `RING_REQUEST_PROD_OVERFLOW`).
    fn request_producer(&mut self) -> Result<u32, ProtocolError> {
        if self.request_producer_seen != self.request_consumer {
            return Ok(self.request_producer_seen);
        }
        // Acquire: slots up to the index are read after the index (Xen's
        // rmb() after reading req_prod).
        let producer = self.ring.load_u32(REQUEST_PRODUCER, Ordering::Acquire)?;
        let unconsumed = producer.wrapping_sub(self.request_consumer);
        let unanswered = producer.wrapping_sub(self.response_producer);
        if unanswered > self.parameters.slot_count || unconsumed > unanswered {
            return Err(ProtocolError::IndexOverrun { producer });
        }
        self.request_producer_seen = producer;
        Ok(producer)
    }

    /// Takes the next request, validated and rebuilt, if one was published.
    ///
    /// # Errors
    /// [`ProtocolError`] when the frontend broke the protocol: drop the
    /// connection.
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        self.answer_dropped()?;
        let producer = self.request_producer()?;
        if producer == self.request_consumer {
            return Ok(None);
        }
        let slot_offset = self.parameters.slot_offset(self.request_consumer);
        self.ring.read(slot_offset, &mut self.slot)?;
        // From here on only the private copy is read.
        let request = self.parse_slot()?;
        self.request_consumer = self.request_consumer.wrapping_add(1);
        self.unanswered
            .push((request.xid, Arc::clone(&request.ticket)));
        Ok(Some(request))
    }

    /// Answers NO_REPLY for every request dropped unanswered.
    fn answer_dropped(&mut self) -> Result<(), ProtocolError> {
        while let Some(index) = self
            .unanswered
            .iter()
            .position(|(_, ticket)| Arc::strong_count(ticket) == 1)
        {
            let (xid, _) = self.unanswered.swap_remove(index);
            self.push_response(xid, ResponseStatus::NoReply, &[], &[], 0, 0)?;
        }
        Ok(())
    }

    fn parse_slot(&mut self) -> Result<Request, ProtocolError> {
        let slot = &self.slot;
        let xid = get_u32(slot, REQUEST_XID);
        if get_u32(slot, REQUEST_FLAGS) != 0 {
            return Err(ProtocolError::UnknownFlags);
        }
        let record_length = get_u32(slot, REQUEST_RECORD_LENGTH) as usize;
        let splice_offset = get_u32(slot, REQUEST_SPLICE_OFFSET) as usize;
        let splice_length = get_u32(slot, REQUEST_SPLICE_LENGTH) as usize;
        let payload_count = get_u16(slot, REQUEST_PAYLOAD_COUNT) as usize;
        let reply_count = get_u16(slot, REQUEST_REPLY_COUNT) as usize;
        let descriptor_count = payload_count + reply_count;
        if descriptor_count > MAX_DESCRIPTORS {
            return Err(ProtocolError::TooManyDescriptors);
        }
        if record_length > self.parameters.request_capacity(descriptor_count) {
            return Err(ProtocolError::RecordOverflowsSlot);
        }
        if splice_offset > record_length {
            return Err(ProtocolError::SpliceOutOfRecord);
        }
        if record_length.saturating_add(splice_length) > self.max_record {
            return Err(ProtocolError::RecordTooLarge);
        }
        let mut ranges = [(0usize, 0usize); MAX_DESCRIPTORS];
        let mut payload_total = 0usize;
        let mut reply_capacity = 0usize;
        for (index, range) in ranges.iter_mut().enumerate().take(descriptor_count) {
            let position = SLOT_HEADER_SIZE + index * DESCRIPTOR_SIZE;
            let mut bytes = [0; DESCRIPTOR_SIZE];
            bytes.copy_from_slice(&slot[position..position + DESCRIPTOR_SIZE]);
            let descriptor = Descriptor::from_bytes(bytes);
            let offset = descriptor
                .pool_offset(self.parameters.pool_pages)
                .ok_or(ProtocolError::DescriptorOutOfPool)?;
            *range = (offset, descriptor.length as usize);
            if index < payload_count {
                payload_total = payload_total.saturating_add(descriptor.length as usize);
            } else {
                reply_capacity = reply_capacity.saturating_add(descriptor.length as usize);
            }
        }
        if payload_total != splice_length {
            return Err(ProtocolError::SpliceLengthMismatch);
        }
        let inline_start = SLOT_HEADER_SIZE + descriptor_count * DESCRIPTOR_SIZE;
        let inline = &slot[inline_start..inline_start + record_length];
        let mut record = take_spare(&mut self.spare_records, record_length + splice_length);
        record.extend_from_slice(&inline[..splice_offset]);
        for &(offset, length) in &ranges[..payload_count] {
            self.pool.read_append(offset, length, &mut record)?;
        }
        record.extend_from_slice(&inline[splice_offset..]);
        Ok(Request {
            xid,
            ticket: Arc::new(()),
            record,
            reply_ranges: ranges[payload_count..descriptor_count].to_vec(),
            reply_capacity,
        })
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: asks for a doorbell at the next
    /// request and reports whether one arrived meanwhile. Call before
    /// sleeping on the doorbell; sleep only when it returns `false`.
    ///
    /// # Errors
    /// [`ProtocolError`] as for [`Backend::next_request`].
    pub fn enable_notifications(&mut self) -> Result<bool, ProtocolError> {
        self.answer_dropped()?;
        if self.request_producer()? != self.request_consumer {
            return Ok(true);
        }
        self.ring.store_u32(
            REQUEST_EVENT,
            self.request_consumer.wrapping_add(1),
            Ordering::Relaxed,
        )?;
        // SeqCst fence: the req_event store is ordered before the re-read of
        // req_prod. Otherwise a request pushed between our first read and
        // the store could be missed by both: the frontend reads the old
        // req_event (no doorbell) and we read the old req_prod (sleep).
        fence(Ordering::SeqCst);
        Ok(self.request_producer()? != self.request_consumer)
    }

    /// Answers `request` with the reply record `reply`, whose bulk data
    /// (READ data, a directory list), if any, is the range `segment` of it,
    /// as the caller's encoder placed it.
    ///
    /// The segment goes to the request's reply pages when they hold it and
    /// the rest fits the slot; otherwise a reply longer than the slot sends
    /// its tail there; a reply that fits neither way is answered with
    /// [`ResponseStatus::ReplyTooLarge`], which is returned.
    ///
    /// # Errors
    /// [`ProtocolError::SegmentOutOfReply`] for a `segment` outside `reply`
    /// (the request is answered NO_REPLY);
    /// [`ProtocolError::Memory`] when a region refused an access;
    /// [`ProtocolError::UnknownXid`] for a request another backend handed
    /// out.
    pub fn respond(
        &mut self,
        request: Request,
        reply: &[u8],
        segment: Option<Range<usize>>,
    ) -> Result<ResponseStatus, ProtocolError> {
        self.take_unanswered(&request)?;
        let mut request = request;
        self.recycle_record(&mut request);
        if segment
            .as_ref()
            .is_some_and(|segment| segment.start > segment.end || segment.end > reply.len())
        {
            self.push_response(request.xid, ResponseStatus::NoReply, &[], &[], 0, 0)?;
            return Err(ProtocolError::SegmentOutOfReply);
        }
        let capacity = self.parameters.response_capacity();
        let preferred = segment.filter(|range| {
            range.len() <= request.reply_capacity && reply.len() - range.len() <= capacity
        });
        let splice = match preferred {
            Some(range) => Some(range),
            None if reply.len() <= capacity => None,
            None if reply.len() - capacity <= request.reply_capacity => Some(capacity..reply.len()),
            None => {
                self.push_response(request.xid, ResponseStatus::ReplyTooLarge, &[], &[], 0, 0)?;
                return Ok(ResponseStatus::ReplyTooLarge);
            }
        };
        let (splice_offset, spliced) = match &splice {
            Some(range) => (range.start, &reply[range.clone()]),
            None => (reply.len(), &[][..]),
        };
        let mut written = 0;
        for &(offset, length) in &request.reply_ranges {
            if written == spliced.len() {
                break;
            }
            let count = length.min(spliced.len() - written);
            self.pool
                .write(offset, &spliced[written..written + count])?;
            written += count;
        }
        // The inline record: the reply around the spliced bytes, written
        // into the slot in two pieces.
        self.push_response(
            request.xid,
            ResponseStatus::Ok,
            &reply[..splice_offset],
            &reply[splice_offset + spliced.len()..],
            splice_offset,
            spliced.len(),
        )?;
        Ok(ResponseStatus::Ok)
    }

    /// The reply pages `request` offered, as a handle the server can write
    /// a reply's bulk data through itself, on any thread, before answering
    /// with [`Backend::respond_placed`]: the bytes then cross into the
    /// pages once, from where the server holds them.
    pub fn reply_pages(&self, request: &Request) -> ReplyPages<P>
    where
        P: Clone,
    {
        ReplyPages {
            pool: self.pool.clone(),
            ranges: request.reply_ranges.clone(),
            capacity: request.reply_capacity,
            cursor: (0, 0),
        }
    }

    /// Answers `request` with the reply record `reply` whose bulk data,
    /// `placed` bytes belonging at offset `at` of it, the caller already
    /// wrote through [`Backend::reply_pages`] (from the start of the
    /// pages). The frontend rebuilds `reply[..at]`, the data, `reply[at..]`.
    ///
    /// # Errors
    /// [`ProtocolError::SegmentOutOfReply`] for `at` past the record or
    /// more data than the pages hold (the request is answered NO_REPLY);
    /// otherwise as [`Backend::respond`]. A record that does not fit the
    /// slot is answered [`ResponseStatus::ReplyTooLarge`], which is
    /// returned.
    pub fn respond_placed(
        &mut self,
        request: Request,
        reply: &[u8],
        at: usize,
        placed: usize,
    ) -> Result<ResponseStatus, ProtocolError> {
        self.take_unanswered(&request)?;
        let mut request = request;
        self.recycle_record(&mut request);
        if at > reply.len() || placed > request.reply_capacity {
            self.push_response(request.xid, ResponseStatus::NoReply, &[], &[], 0, 0)?;
            return Err(ProtocolError::SegmentOutOfReply);
        }
        if reply.len() > self.parameters.response_capacity() {
            self.push_response(request.xid, ResponseStatus::ReplyTooLarge, &[], &[], 0, 0)?;
            return Ok(ResponseStatus::ReplyTooLarge);
        }
        self.push_response(
            request.xid,
            ResponseStatus::Ok,
            &reply[..at],
            &reply[at..],
            at,
            placed,
        )?;
        Ok(ResponseStatus::Ok)
    }

    /// Answers `request` with no reply record (the server dropped the call).
    ///
    /// # Errors
    /// As [`Backend::respond`].
    pub fn respond_no_reply(&mut self, mut request: Request) -> Result<(), ProtocolError> {
        self.take_unanswered(&request)?;
        self.recycle_record(&mut request);
        self.push_response(request.xid, ResponseStatus::NoReply, &[], &[], 0, 0)
    }

    /// Keep up to `count` records of answered requests (each at most
    /// `max_record` bytes) for the next requests to be rebuilt in; none
    /// by default (a small heap, the Xen domain's, frees them at once).
    /// Two cover a request being rebuilt while another is answered.
    pub fn keep_spare_records(&mut self, count: usize) {
        self.spare_limit = count;
        self.spare_records.truncate(count);
    }

    /// Takes `request`'s record (leaving it empty) for a later request's:
    /// call it once the record has been read, for instance when the
    /// request's answer must wait for a commit. The answers call it
    /// themselves. Records below 64 KiB, and any beyond the number
    /// [`Backend::keep_spare_records`] allows, are freed.
    pub fn recycle_record(&mut self, request: &mut Request) {
        let mut record = core::mem::take(&mut request.record);
        if record.capacity() >= SPARE_RECORD_MIN
            && record.capacity() <= self.max_record
            && self.spare_records.len() < self.spare_limit
        {
            record.clear();
            self.spare_records.push(record);
        }
    }

    /// Removes `request` from the unanswered list; a request this backend
    /// did not hand out is refused (answering it would produce more
    /// responses than requests).
    fn take_unanswered(&mut self, request: &Request) -> Result<(), ProtocolError> {
        let index = self
            .unanswered
            .iter()
            .position(|(_, ticket)| Arc::ptr_eq(ticket, &request.ticket))
            .ok_or(ProtocolError::UnknownXid { xid: request.xid })?;
        self.unanswered.swap_remove(index);
        Ok(())
    }

    /// Publishes a response whose inline record is `head ++ tail` (which
    /// the caller made fit the slot).
    fn push_response(
        &mut self,
        xid: u32,
        status: ResponseStatus,
        head: &[u8],
        tail: &[u8],
        splice_offset: usize,
        splice_length: usize,
    ) -> Result<(), ProtocolError> {
        let slot = &mut self.slot;
        let inline_length = head.len() + tail.len();
        slot[..SLOT_HEADER_SIZE].fill(0);
        put_u32(slot, RESPONSE_XID, xid);
        put_u32(slot, RESPONSE_STATUS, status.to_wire());
        put_u32(slot, RESPONSE_RECORD_LENGTH, inline_length as u32);
        put_u32(slot, RESPONSE_SPLICE_OFFSET, splice_offset as u32);
        put_u32(slot, RESPONSE_SPLICE_LENGTH, splice_length as u32);
        let middle = SLOT_HEADER_SIZE + head.len();
        slot[SLOT_HEADER_SIZE..middle].copy_from_slice(head);
        slot[middle..middle + tail.len()].copy_from_slice(tail);
        let used = SLOT_HEADER_SIZE + inline_length;
        let slot_offset = self.parameters.slot_offset(self.response_producer);
        self.ring.write(slot_offset, &self.slot[..used])?;
        self.response_producer = self.response_producer.wrapping_add(1);
        // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
        let new = self.response_producer;
        let old = new.wrapping_sub(1);
        // Release: the slot and reply pages written above are visible before
        // the frontend can see the new producer index (Xen's wmb()).
        self.ring
            .store_u32(RESPONSE_PRODUCER, new, Ordering::Release)?;
        // SeqCst fence: the producer store is ordered before the rsp_event
        // load (Xen's mb()); see `Frontend::enable_notifications` for the
        // race it closes.
        fence(Ordering::SeqCst);
        let event = self.ring.load_u32(RESPONSE_EVENT, Ordering::Relaxed)?;
        // `event` is the frontend's to write: a wrong value only costs it a
        // spurious or a missing doorbell.
        if new.wrapping_sub(event) < new.wrapping_sub(old) {
            self.doorbell.notify();
        }
        Ok(())
    }
}

/// An empty vector with room for `length` bytes: a spare that has the room
/// when `length` is large enough to have kept one, a new one otherwise.
fn take_spare(spares: &mut Vec<Vec<u8>>, length: usize) -> Vec<u8> {
    if length >= SPARE_RECORD_MIN {
        if let Some(index) = spares.iter().position(|spare| spare.capacity() >= length) {
            return spares.swap_remove(index);
        }
    }
    Vec::with_capacity(length)
}
