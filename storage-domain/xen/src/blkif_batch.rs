//! blkif request batches: how a run of file-system blocks becomes ring
//! requests, and the bookkeeping that validates the backend's responses.
//!
//! Kept free of shared memory so the host tests cover it; the platform's
//! blkfront copies requests into the ring and responses out of it.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use xen_abi::blkif::{
    BlkifRequest, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    MAX_SEGMENTS_PER_REQUEST, OP_INDIRECT, RSP_OKAY, SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};

/// Bytes of a file-system block (`sdfs::BLOCK_SIZE`), one page per segment.
pub const BLOCK_BYTES: u64 = 4096;
/// 512-byte sectors per block.
pub const SECTORS_PER_BLOCK: u64 = BLOCK_BYTES / SECTOR_SIZE;

/// A read or write request as it goes on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingRequest {
    /// Up to [`MAX_SEGMENTS_PER_REQUEST`] segments, in the ring slot.
    Direct(BlkifRequest),
    /// More (`BLKIF_OP_INDIRECT`): the segments go into one indirect page,
    /// whose grant the caller puts into `indirect_grefs[0]` when it places
    /// them ([`IndirectPages`]).
    Indirect {
        /// The slot's part.
        request: BlkifRequestIndirect,
        /// The indirect page's part, in order.
        segments: Vec<BlkifRequestSegment>,
    },
}

impl RingRequest {
    /// The id the response will echo.
    pub fn id(&self) -> u64 {
        match self {
            RingRequest::Direct(request) => request.id,
            RingRequest::Indirect { request, .. } => request.id,
        }
    }

    /// Replace the id.
    pub fn set_id(&mut self, id: u64) {
        match self {
            RingRequest::Direct(request) => request.id = id,
            RingRequest::Indirect { request, .. } => request.id = id,
        }
    }
}

/// What the tests look at.
#[cfg(test)]
impl RingRequest {
    /// The first 512-byte sector.
    pub fn sector_number(&self) -> u64 {
        match self {
            RingRequest::Direct(request) => request.sector_number,
            RingRequest::Indirect { request, .. } => request.sector_number,
        }
    }

    /// The segments, wherever they go.
    pub fn segments(&self) -> &[BlkifRequestSegment] {
        match self {
            RingRequest::Direct(request) => &request.seg[..usize::from(request.nr_segments)],
            RingRequest::Indirect { segments, .. } => segments,
        }
    }

    /// Whether it needs an indirect page.
    pub fn is_indirect(&self) -> bool {
        matches!(self, RingRequest::Indirect { .. })
    }
}

/// The most segments one request of ours carries: one indirect page's
/// worth (a request never needs a second page: a batch is 88 blocks).
pub const MAX_SEGMENTS_PER_INDIRECT_REQUEST: usize = SEGMENTS_PER_INDIRECT_PAGE;

/// Segments per request for a backend that offers `offered`
/// (`feature-max-indirect-segments`, `None` when absent) and a
/// configured limit `wanted` (`disk_segments=`): indirect requests only
/// when both allow more than the [`MAX_SEGMENTS_PER_REQUEST`] of a plain
/// one (fewer would only cost an indirect page per request), and never
/// more than one indirect page holds.
pub fn segments_per_request(offered: Option<u32>, wanted: usize) -> usize {
    let offered = offered.map_or(0, |offered| offered as usize);
    let limit = offered.min(wanted).min(MAX_SEGMENTS_PER_INDIRECT_REQUEST);
    if limit > MAX_SEGMENTS_PER_REQUEST {
        limit
    } else {
        MAX_SEGMENTS_PER_REQUEST
    }
}

/// The requests that move `grants.len()` consecutive blocks starting at
/// `first_block`, block `i` through the page granted as `grants[i]`: up to
/// `per_request` blocks per request ([`segments_per_request`]), indirect
/// where more than [`MAX_SEGMENTS_PER_REQUEST`], request ids `0..n` in
/// order.
pub fn build_requests(
    operation: u8,
    handle: u16,
    first_block: u64,
    grants: &[u32],
    per_request: usize,
) -> Vec<RingRequest> {
    let per_request = per_request.clamp(1, MAX_SEGMENTS_PER_INDIRECT_REQUEST);
    let segment = |gref: u32| BlkifRequestSegment {
        gref,
        first_sect: 0,
        last_sect: (SECTORS_PER_BLOCK - 1) as u8,
        padding: 0,
    };
    grants
        .chunks(per_request)
        .enumerate()
        .map(|(index, chunk)| {
            let id = index as u64;
            let sector_number = (first_block + (index * per_request) as u64) * SECTORS_PER_BLOCK;
            if chunk.len() <= MAX_SEGMENTS_PER_REQUEST {
                let mut request = BlkifRequest {
                    operation,
                    nr_segments: chunk.len() as u8,
                    handle,
                    id,
                    sector_number,
                    ..BlkifRequest::default()
                };
                for (slot, &gref) in request.seg.iter_mut().zip(chunk) {
                    *slot = segment(gref);
                }
                RingRequest::Direct(request)
            } else {
                RingRequest::Indirect {
                    request: BlkifRequestIndirect {
                        operation: OP_INDIRECT,
                        indirect_op: operation,
                        nr_segments: chunk.len() as u16,
                        id,
                        sector_number,
                        handle,
                        ..BlkifRequestIndirect::default()
                    },
                    segments: chunk.iter().map(|&gref| segment(gref)).collect(),
                }
            }
        })
        .collect()
}

/// The indirect pages, each lent to one request on the ring from when it
/// is pushed until its response is taken (the backend reads the page
/// while it works on the request). As many as the ring's slots: a request
/// in flight holds a slot, so a page is always free for the next one.
#[derive(Debug)]
pub struct IndirectPages {
    /// Per page: the id of the request holding it.
    holders: Vec<Option<u64>>,
    /// Most pages ever lent at once.
    pub most_lent: usize,
}

impl IndirectPages {
    /// `count` pages, none lent.
    pub fn new(count: usize) -> Self {
        IndirectPages {
            holders: vec![None; count],
            most_lent: 0,
        }
    }

    /// Lend a free page to the request with `id` (unique among requests
    /// in flight); `None` when every page is lent.
    pub fn lend(&mut self, id: u64) -> Option<usize> {
        let page = self.holders.iter().position(Option::is_none)?;
        self.holders[page] = Some(id);
        self.most_lent = self.most_lent.max(self.lent());
        Some(page)
    }

    /// Take back the page of the request with `id`, if it holds one (for
    /// every response taken: a plain request holds none).
    pub fn take_back(&mut self, id: u64) -> Option<usize> {
        let page = self.holders.iter().position(|&holder| holder == Some(id))?;
        self.holders[page] = None;
        Some(page)
    }

    /// Pages lent now.
    pub fn lent(&self) -> usize {
        self.holders.iter().flatten().count()
    }
}

/// A response that cannot belong to the batch: the backend is broken or
/// hostile, and the ring can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnexpectedResponse {
    /// The id the backend sent.
    pub id: u64,
}

/// The outstanding requests of one batch (ids `0..count`).
#[derive(Debug)]
pub struct Outstanding {
    done: Vec<bool>,
    remaining: usize,
    first_failure: Option<i16>,
}

impl Outstanding {
    /// `count` requests in flight.
    pub fn new(count: usize) -> Self {
        Outstanding {
            done: vec![false; count],
            remaining: count,
            first_failure: None,
        }
    }

    /// Account for one response copied out of the ring.
    ///
    /// # Errors
    /// [`UnexpectedResponse`] for an id outside the batch or answered twice.
    pub fn complete(&mut self, response: &BlkifResponse) -> Result<(), UnexpectedResponse> {
        let unexpected = UnexpectedResponse { id: response.id };
        let index = usize::try_from(response.id).map_err(|_| unexpected)?;
        match self.done.get_mut(index) {
            Some(done) if !*done => *done = true,
            _ => return Err(unexpected),
        }
        self.remaining -= 1;
        if response.status != RSP_OKAY && self.first_failure.is_none() {
            self.first_failure = Some(response.status);
        }
        Ok(())
    }

    /// Requests still without a response.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The first non-okay status seen, if any.
    pub fn first_failure(&self) -> Option<i16> {
        self.first_failure
    }
}

/// The id bit of a started flush (`Blkfront`'s `start_flush`): a batch's
/// ids are `0..count`, so the two never meet.
pub const STARTED_FLUSH_ID: u64 = 1 << 63;

/// Started flushes in flight at most: with a batch's 8 requests and the
/// started reads' 9 they always fit the 32-slot ring.
pub const MAX_STARTED_FLUSHES: usize = 4;

/// Outcomes kept of started flushes nobody asked about (a plain commit
/// finished the commit that started them).
const KEPT_OUTCOMES: usize = 4;

/// The flushes started without waiting, and their outcomes until taken.
#[derive(Debug, Default)]
pub struct StartedFlushes {
    issued: u64,
    /// (id, deadline in ns, status once answered), oldest first.
    entries: Vec<(u64, u64, Option<i16>)>,
    /// Started flushes not yet on the ring, each waiting for the writes
    /// issued before it: (id, the writes' mark).
    held: Vec<(u64, u64)>,
}

impl StartedFlushes {
    /// Whether `id` names a started flush rather than a batch's request.
    pub fn owns(id: u64) -> bool {
        id & STARTED_FLUSH_ID != 0
    }

    /// The id for a new started flush that must be answered by `deadline`,
    /// or `None` when [`MAX_STARTED_FLUSHES`] are already in flight.
    pub fn start(&mut self, deadline: u64) -> Option<u64> {
        if self.in_flight() >= MAX_STARTED_FLUSHES {
            return None;
        }
        self.issued += 1;
        let id = STARTED_FLUSH_ID | self.issued;
        self.entries.push((id, deadline, None));
        Some(id)
    }

    /// Flushes started and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, _, status)| status.is_none())
            .count()
    }

    /// Account for a response to a started flush.
    ///
    /// # Errors
    /// [`UnexpectedResponse`] for an id never started or answered twice.
    pub fn complete(&mut self, response: &BlkifResponse) -> Result<(), UnexpectedResponse> {
        let unexpected = UnexpectedResponse { id: response.id };
        match self
            .entries
            .iter_mut()
            .find(|(id, _, _)| *id == response.id)
        {
            Some((_, _, status)) if status.is_none() => *status = Some(response.status),
            _ => return Err(unexpected),
        }
        // Outcomes nobody took are dropped, oldest first.
        while self
            .entries
            .iter()
            .filter(|(_, _, status)| status.is_some())
            .count()
            > KEPT_OUTCOMES
        {
            if let Some(oldest) = self
                .entries
                .iter()
                .position(|(_, _, status)| status.is_some())
            {
                self.entries.remove(oldest);
            }
        }
        Ok(())
    }

    /// How started flush `id` stands: `None` when unknown (never started,
    /// already taken, or dropped), `Some(None)` while it runs, and its
    /// status once (the entry is then forgotten).
    pub fn take(&mut self, id: u64) -> Option<Option<i16>> {
        let index = self.entries.iter().position(|(known, _, _)| *known == id)?;
        let status = self.entries[index].2;
        if status.is_some() {
            self.entries.remove(index);
        }
        Some(status)
    }

    /// Whether a flush in flight has passed its deadline at `now`.
    pub fn overdue(&self, now: u64) -> bool {
        self.entries
            .iter()
            .any(|(_, deadline, status)| status.is_none() && now > *deadline)
    }

    /// Hold started flush `id` off the ring until the writes issued up to
    /// `mark` ([`StartedWrites::issued_mark`]) have completed.
    pub fn hold(&mut self, id: u64, mark: u64) {
        self.held.push((id, mark));
    }

    /// The held flushes whose writes have completed, taken off hold in the
    /// order they were started, to go on the ring; one behind a failed
    /// write is answered here, with that write's status, instead.
    pub fn release(&mut self, writes: &StartedWrites) -> Vec<u64> {
        let mut ready = Vec::new();
        let mut index = 0;
        while index < self.held.len() {
            let (id, mark) = self.held[index];
            if !writes.done_through(mark) {
                index += 1;
                continue;
            }
            self.held.remove(index);
            match writes.failure() {
                Some(status) => {
                    let _ = self.complete(&BlkifResponse {
                        id,
                        status,
                        ..BlkifResponse::default()
                    });
                }
                None => ready.push(id),
            }
        }
        ready
    }
}

/// The id bit of a write started without waiting ([`StartedWrites`]);
/// below it, the write's issue number.
pub const STARTED_WRITE_ID: u64 = 1 << 61;

/// Write requests in flight at most: the batch's share of the ring (a
/// batch first waits for every started write, so the two never meet).
pub const MAX_STARTED_WRITES: usize = 8;

/// A write request on the ring.
#[derive(Debug)]
struct WriteInFlight {
    /// Its issue number (1, 2, ...; the id is `STARTED_WRITE_ID | issue`).
    issue: u64,
    first: u64,
    /// Its pages (indices into the pool), block `i` in `pages[i]`.
    pages: Vec<usize>,
    /// When it must be answered by (ns).
    deadline: u64,
}

/// Writes that return before they complete: the blocks of a run of
/// consecutive writes are gathered into one request of up to its run
/// limit of pages ([`MAX_SEGMENTS_PER_REQUEST`] in a plain request, more in
/// an indirect one; a commit writes its records and
/// index nodes one block at a time, mostly into consecutive fresh
/// blocks), issued when the run breaks or fills, or before a flush or a
/// read that needs it, with at most [`MAX_STARTED_WRITES`] requests on the
/// ring. A flush covers the writes issued before it only once they have
/// completed ([`StartedWrites::done_through`]); a write the backend fails
/// fails every later flush ([`StartedWrites::failure`]).
///
/// Kept free of shared memory: the caller copies each block into the page
/// [`StartedWrites::take_page`] gives, pushes the requests
/// [`StartedWrites::issue`] builds, and hands back the responses.
#[derive(Debug)]
pub struct StartedWrites {
    free_pages: Vec<usize>,
    /// The most blocks of a run: of one request.
    max_run: usize,
    /// The run being gathered: its first block and pages.
    forming: Option<(u64, Vec<usize>)>,
    in_flight: Vec<WriteInFlight>,
    issued: u64,
    failure: Option<i16>,
    /// Requests issued and blocks written, for the shutdown counters.
    pub requests: u64,
    /// Blocks written through started writes.
    pub blocks: u64,
}

impl StartedWrites {
    /// Writes through the pool's pages `pages`, up to `max_run` blocks
    /// (at least 1) in a request ([`build_requests`]'s `per_request`).
    pub fn new(pages: core::ops::Range<usize>, max_run: usize) -> Self {
        StartedWrites {
            free_pages: pages.rev().collect(),
            max_run: max_run.clamp(1, MAX_SEGMENTS_PER_INDIRECT_REQUEST),
            forming: None,
            in_flight: Vec::new(),
            issued: 0,
            failure: None,
            requests: 0,
            blocks: 0,
        }
    }

    /// Gather up to `max_run` blocks (at least 1) into the next requests.
    pub fn set_max_run(&mut self, max_run: usize) {
        self.max_run = max_run.clamp(1, MAX_SEGMENTS_PER_INDIRECT_REQUEST);
    }

    /// Whether `id` names a started write (check the flush and read tags
    /// first: this bit is below theirs).
    pub fn owns(id: u64) -> bool {
        id & STARTED_WRITE_ID != 0
    }

    /// Whether `block` must start a run of its own: the gathered run does
    /// not end just before it, or is full.
    pub fn breaks_run(&self, block: u64) -> bool {
        self.forming.as_ref().is_some_and(|(first, pages)| {
            pages.len() >= self.max_run || *first + pages.len() as u64 != block
        })
    }

    /// A free page for the next block, `None` when every page is in a run
    /// or on the ring (issue the run, then wait for a response).
    pub fn take_page(&mut self) -> Option<usize> {
        self.free_pages.pop()
    }

    /// Add `block`, copied into `page` ([`StartedWrites::take_page`]), to
    /// the run (which must not break there).
    pub fn gather(&mut self, block: u64, page: usize) {
        debug_assert!(!self.breaks_run(block));
        match &mut self.forming {
            Some((_, pages)) => pages.push(page),
            None => self.forming = Some((block, alloc::vec![page])),
        }
        self.blocks += 1;
    }

    /// Whether the gathered run holds its limit of blocks (issue it:
    /// nothing more can join it).
    pub fn run_full(&self) -> bool {
        self.forming
            .as_ref()
            .is_some_and(|(_, pages)| pages.len() >= self.max_run)
    }

    /// Whether a run is being gathered.
    pub fn gathering(&self) -> bool {
        self.forming.is_some()
    }

    /// Whether a page is free for the next block.
    pub fn has_free_page(&self) -> bool {
        !self.free_pages.is_empty()
    }

    /// Whether another request may go on the ring.
    pub fn has_slot(&self) -> bool {
        self.in_flight.len() < MAX_STARTED_WRITES
    }

    /// The request writing the gathered run, which is then in flight until
    /// `deadline`; `None` when nothing is gathered or no slot is free
    /// ([`StartedWrites::has_slot`]). `grant` names each page's grant.
    pub fn issue(
        &mut self,
        handle: u16,
        deadline: u64,
        grant: impl Fn(usize) -> u32,
    ) -> Option<RingRequest> {
        if !self.has_slot() {
            return None;
        }
        let (first, pages) = self.forming.take()?;
        let grants: Vec<u32> = pages.iter().map(|&page| grant(page)).collect();
        // One request for the run, whatever its length (a run gathered
        // before `set_max_run` lowered the limit goes out as it is).
        let mut request = build_requests(
            xen_abi::blkif::OP_WRITE,
            handle,
            first,
            &grants,
            grants.len(),
        )
        .into_iter()
        .next()?;
        self.issued += 1;
        request.set_id(STARTED_WRITE_ID | self.issued);
        self.in_flight.push(WriteInFlight {
            issue: self.issued,
            first,
            pages,
            deadline,
        });
        self.requests += 1;
        Some(request)
    }

    /// Account for a response to a started write: its pages are free again,
    /// a failure is kept.
    ///
    /// # Errors
    /// [`UnexpectedResponse`] for an id not in flight.
    pub fn complete(&mut self, response: &BlkifResponse) -> Result<(), UnexpectedResponse> {
        let index = self
            .in_flight
            .iter()
            .position(|write| STARTED_WRITE_ID | write.issue == response.id)
            .ok_or(UnexpectedResponse { id: response.id })?;
        let write = self.in_flight.swap_remove(index);
        self.free_pages.extend(write.pages);
        if response.status != RSP_OKAY && self.failure.is_none() {
            self.failure = Some(response.status);
        }
        Ok(())
    }

    /// The mark of every write issued so far, for [`StartedWrites::done_through`]
    /// (a gathered run is not issued: issue it first).
    pub fn issued_mark(&self) -> u64 {
        self.issued
    }

    /// Whether every write issued up to `mark` has been answered.
    pub fn done_through(&self, mark: u64) -> bool {
        self.in_flight.iter().all(|write| write.issue > mark)
    }

    /// Requests on the ring.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is gathered or in flight.
    pub fn idle(&self) -> bool {
        self.forming.is_none() && self.in_flight.is_empty()
    }

    /// Whether a write gathered or in flight touches blocks
    /// `first..first + count`.
    pub fn overlaps(&self, first: u64, count: u64) -> bool {
        let end = first.saturating_add(count);
        let touches = |start: u64, blocks: usize| start < end && first < start + blocks as u64;
        self.forming
            .as_ref()
            .is_some_and(|(start, pages)| touches(*start, pages.len()))
            || self
                .in_flight
                .iter()
                .any(|write| touches(write.first, write.pages.len()))
    }

    /// The first failed write's status, if any: the data of a write that
    /// failed is unknown, so no later flush may succeed.
    pub fn failure(&self) -> Option<i16> {
        self.failure
    }

    /// Whether a write in flight has passed its deadline at `now`.
    pub fn overdue(&self, now: u64) -> bool {
        self.in_flight.iter().any(|write| now > write.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::blkif::{OP_READ, OP_WRITE, RSP_ERROR};

    #[test]
    fn a_run_of_25_blocks_is_three_requests() {
        let grants: Vec<u32> = (100..125).collect();
        let requests = build_requests(OP_WRITE, 51712, 1000, &grants, MAX_SEGMENTS_PER_REQUEST);
        let plain: Vec<&BlkifRequest> = requests
            .iter()
            .map(|request| match request {
                RingRequest::Direct(request) => request,
                RingRequest::Indirect { .. } => panic!("11 segments fit a plain request"),
            })
            .collect();
        assert_eq!(
            plain
                .iter()
                .map(|request| request.nr_segments)
                .collect::<Vec<_>>(),
            [11, 11, 3]
        );
        assert_eq!(requests[0].sector_number(), 8000);
        assert_eq!(requests[1].sector_number(), 8000 + 11 * 8);
        assert_eq!(requests[2].sector_number(), 8000 + 22 * 8);
        assert_eq!(requests[2].id(), 2);
        assert_eq!(plain[1].seg[0].gref, 111);
        assert_eq!(plain[2].seg[2].gref, 124);
        assert_eq!(plain[2].seg[3], BlkifRequestSegment::default());
        assert_eq!(requests[2].segments().len(), 3);
        assert!(plain
            .iter()
            .all(|request| request.handle == 51712 && request.operation == OP_WRITE));
        assert!(plain[0]
            .seg
            .iter()
            .all(|segment| segment.first_sect == 0 && segment.last_sect == 7));
        assert!(build_requests(OP_WRITE, 0, 0, &[], MAX_SEGMENTS_PER_REQUEST).is_empty());
    }

    #[test]
    fn a_run_beyond_11_blocks_becomes_indirect_requests_and_a_short_tail_a_plain_one() {
        let grants: Vec<u32> = (100..188).collect();
        let requests = build_requests(OP_READ, 51712, 1000, &grants, 40);
        // 40 + 40 indirect, the last 8 in a plain request.
        assert_eq!(
            requests
                .iter()
                .map(|request| (request.is_indirect(), request.segments().len()))
                .collect::<Vec<_>>(),
            [(true, 40), (true, 40), (false, 8)]
        );
        let RingRequest::Indirect { request, segments } = &requests[1] else {
            unreachable!()
        };
        assert_eq!(request.operation, OP_INDIRECT);
        assert_eq!(request.indirect_op, OP_READ);
        assert_eq!(request.nr_segments, 40);
        assert_eq!(request.handle, 51712);
        assert_eq!(request.id, 1);
        assert_eq!(request.sector_number, (1000 + 40) * 8);
        assert_eq!(request.indirect_grefs, [0; 8], "the caller places the page");
        assert_eq!(segments[0].gref, 140);
        assert_eq!(segments[39].gref, 179);
        assert!(segments
            .iter()
            .all(|segment| segment.first_sect == 0 && segment.last_sect == 7));
        assert_eq!(requests[2].sector_number(), (1000 + 80) * 8);
        assert_eq!(requests[2].segments()[7].gref, 187);
        // One request for a whole batch, however large the limit asked.
        let whole = build_requests(OP_READ, 0, 0, &grants, 100_000);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].segments().len(), 88);
        // A limit of 0 is taken as 1.
        assert_eq!(build_requests(OP_READ, 0, 0, &grants[..3], 0).len(), 3);
    }

    #[test]
    fn indirect_requests_only_when_the_backend_and_the_setting_allow_more_than_11() {
        assert_eq!(segments_per_request(None, 256), MAX_SEGMENTS_PER_REQUEST);
        assert_eq!(segments_per_request(Some(256), 256), 256);
        assert_eq!(segments_per_request(Some(32), 256), 32);
        assert_eq!(segments_per_request(Some(256), 64), 64);
        // Off by setting, or a backend offering no more than a plain request.
        assert_eq!(
            segments_per_request(Some(256), 11),
            MAX_SEGMENTS_PER_REQUEST
        );
        assert_eq!(segments_per_request(Some(256), 0), MAX_SEGMENTS_PER_REQUEST);
        assert_eq!(segments_per_request(Some(8), 256), MAX_SEGMENTS_PER_REQUEST);
        assert_eq!(segments_per_request(Some(12), 256), 12);
        // Never more than one indirect page holds.
        assert_eq!(segments_per_request(Some(u32::MAX), usize::MAX), 512);
    }

    #[test]
    fn indirect_pages_are_lent_to_one_request_each_until_its_response() {
        let mut pages = IndirectPages::new(3);
        let a = pages.lend(10).unwrap();
        let b = pages.lend(STARTED_WRITE_ID | 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(pages.take_back(7), None, "a plain request holds no page");
        let c = pages.lend(11).unwrap();
        assert_eq!(pages.lend(12), None, "every page is lent");
        assert_eq!((pages.lent(), pages.most_lent), (3, 3));
        assert_eq!(pages.take_back(STARTED_WRITE_ID | 1), Some(b));
        assert_eq!(
            pages.take_back(STARTED_WRITE_ID | 1),
            None,
            "taken back once"
        );
        assert_eq!(pages.lend(12), Some(b));
        assert_eq!(pages.take_back(10), Some(a));
        assert_eq!(pages.take_back(11), Some(c));
        assert_eq!(pages.lent(), 1);
        assert_eq!(pages.most_lent, 3);
    }

    fn response(id: u64, status: i16) -> BlkifResponse {
        BlkifResponse {
            id,
            status,
            ..BlkifResponse::default()
        }
    }

    #[test]
    fn responses_complete_in_any_order() {
        let mut outstanding = Outstanding::new(3);
        outstanding.complete(&response(2, RSP_OKAY)).unwrap();
        outstanding.complete(&response(0, RSP_ERROR)).unwrap();
        assert_eq!(outstanding.remaining(), 1);
        outstanding.complete(&response(1, RSP_OKAY)).unwrap();
        assert_eq!(outstanding.remaining(), 0);
        assert_eq!(outstanding.first_failure(), Some(RSP_ERROR));
    }

    #[test]
    fn foreign_and_repeated_ids_are_refused() {
        let mut outstanding = Outstanding::new(2);
        assert_eq!(
            outstanding.complete(&response(2, RSP_OKAY)),
            Err(UnexpectedResponse { id: 2 })
        );
        assert!(outstanding.complete(&response(u64::MAX, RSP_OKAY)).is_err());
        outstanding.complete(&response(1, RSP_OKAY)).unwrap();
        assert!(outstanding.complete(&response(1, RSP_OKAY)).is_err());
        assert_eq!(outstanding.remaining(), 1);
        assert_eq!(outstanding.first_failure(), None);
    }

    #[test]
    fn started_flushes_are_answered_apart_from_batches() {
        let mut started = StartedFlushes::default();
        let first = started.start(100).unwrap();
        let second = started.start(100).unwrap();
        assert!(StartedFlushes::owns(first) && first != second);
        assert!(!StartedFlushes::owns(0) && !StartedFlushes::owns(10));
        // A batch's ids are not theirs, nor a flush never started.
        assert!(started.complete(&response(0, RSP_OKAY)).is_err());
        assert!(started
            .complete(&response(STARTED_FLUSH_ID | 99, RSP_OKAY))
            .is_err());
        assert_eq!(started.take(first), Some(None));
        started.complete(&response(second, RSP_ERROR)).unwrap();
        assert!(started.complete(&response(second, RSP_OKAY)).is_err());
        assert_eq!(started.take(second), Some(Some(RSP_ERROR)));
        assert_eq!(started.take(second), None, "an outcome is taken once");
        assert!(!started.overdue(100));
        assert!(started.overdue(101));
        started.complete(&response(first, RSP_OKAY)).unwrap();
        assert!(!started.overdue(1_000));
        assert_eq!(started.take(first), Some(Some(RSP_OKAY)));
    }

    #[test]
    fn started_flushes_are_bounded_and_forgotten_outcomes_dropped() {
        let mut started = StartedFlushes::default();
        let ids: Vec<u64> = (0..MAX_STARTED_FLUSHES)
            .map(|_| started.start(0).unwrap())
            .collect();
        assert_eq!(started.start(0), None, "the ring keeps room for a batch");
        assert_eq!(started.in_flight(), MAX_STARTED_FLUSHES);
        for &id in &ids {
            started.complete(&response(id, RSP_OKAY)).unwrap();
        }
        // Outcomes nobody takes do not pile up.
        for _ in 0..20 {
            let id = started.start(0).unwrap();
            started.complete(&response(id, RSP_OKAY)).unwrap();
        }
        assert!(started.entries.len() <= KEPT_OUTCOMES);
        assert_eq!(started.take(ids[0]), None);
    }

    /// Gathers `blocks` written one at a time, issuing whenever the run
    /// breaks, as blkfront does; returns the requests issued.
    fn write_each(writes: &mut StartedWrites, blocks: &[u64]) -> Vec<RingRequest> {
        let mut issued = Vec::new();
        for &block in blocks {
            if writes.breaks_run(block) {
                issued.extend(writes.issue(7, 100, |page| 1000 + page as u32));
            }
            let page = writes.take_page().expect("a free page");
            writes.gather(block, page);
        }
        issued
    }

    #[test]
    fn consecutive_block_writes_become_one_request_of_up_to_11_pages() {
        let mut writes = StartedWrites::new(0..88, MAX_SEGMENTS_PER_REQUEST);
        let mut issued = write_each(&mut writes, &(500..514).collect::<Vec<_>>());
        assert_eq!(
            issued.len(),
            1,
            "the first 11 blocks went out when the 12th broke the run"
        );
        assert!(writes.gathering());
        issued.extend(writes.issue(7, 100, |page| 1000 + page as u32));
        assert!(!writes.gathering() && writes.issue(7, 100, |_| 0).is_none());
        assert_eq!(
            issued
                .iter()
                .map(|request| request.segments().len())
                .collect::<Vec<_>>(),
            [11, 3]
        );
        let [RingRequest::Direct(first), RingRequest::Direct(second)] = &issued[..] else {
            panic!("11 blocks go in plain requests")
        };
        assert_eq!(first.operation, xen_abi::blkif::OP_WRITE);
        assert_eq!(first.handle, 7);
        assert_eq!(first.sector_number, 500 * SECTORS_PER_BLOCK);
        assert_eq!(second.sector_number, 511 * SECTORS_PER_BLOCK);
        assert!(StartedWrites::owns(first.id) && StartedWrites::owns(second.id));
        assert!(!StartedFlushes::owns(first.id));
        assert_ne!(first.id, second.id);
        // Pages are handed out from the start of the pool, each once.
        assert_eq!(first.seg[0].gref, 1000);
        assert_eq!(first.seg[10].gref, 1010);
        assert_eq!(second.seg[2].gref, 1013);
        assert_eq!((writes.requests, writes.blocks), (2, 14));
        // Full at 11 blocks: blkfront issues it then.
        let mut full = StartedWrites::new(0..88, MAX_SEGMENTS_PER_REQUEST);
        write_each(&mut full, &(0..10).collect::<Vec<_>>());
        assert!(!full.run_full());
        write_each(&mut full, &[10]);
        assert!(full.run_full() && full.breaks_run(11));
        assert!(full.issue(0, 100, |_| 0).is_some() && !full.run_full());
    }

    #[test]
    fn with_indirect_requests_a_run_gathers_up_to_its_limit() {
        let mut writes = StartedWrites::new(0..88, 22);
        let mut issued = write_each(&mut writes, &(0..30).collect::<Vec<_>>());
        assert!(writes.gathering() && !writes.run_full());
        issued.extend(writes.issue(7, 100, |page| 1000 + page as u32));
        assert_eq!(
            issued
                .iter()
                .map(|request| (request.is_indirect(), request.segments().len()))
                .collect::<Vec<_>>(),
            [(true, 22), (false, 8)]
        );
        assert!(StartedWrites::owns(issued[0].id()) && StartedWrites::owns(issued[1].id()));
        assert_eq!(issued[1].sector_number(), 22 * SECTORS_PER_BLOCK);
        assert_eq!(issued[0].segments()[21].gref, 1021);
        let mut full = StartedWrites::new(0..88, 22);
        write_each(&mut full, &(0..22).collect::<Vec<_>>());
        assert!(full.run_full() && full.breaks_run(22));
    }

    #[test]
    fn a_scattered_write_breaks_the_run() {
        let mut writes = StartedWrites::new(0..88, MAX_SEGMENTS_PER_REQUEST);
        let issued = write_each(&mut writes, &[10, 11, 30, 29, 31]);
        // 10-11, then 30, then 29 (not after 30); 31 (not after 29) is
        // gathered.
        assert_eq!(
            issued
                .iter()
                .map(|request| (
                    request.sector_number() / SECTORS_PER_BLOCK,
                    request.segments().len()
                ))
                .collect::<Vec<_>>(),
            [(10, 2), (30, 1), (29, 1)]
        );
        assert!(writes.breaks_run(31) && writes.breaks_run(33));
        assert!(!writes.breaks_run(32));
        assert!(writes.overlaps(29, 1) && writes.overlaps(0, 11) && writes.overlaps(31, 100));
        assert!(!writes.overlaps(12, 17) && !writes.overlaps(32, 5) && !writes.overlaps(0, 10));
    }

    #[test]
    fn the_ring_share_and_the_pages_bound_started_writes() {
        let mut writes = StartedWrites::new(0..12, MAX_SEGMENTS_PER_REQUEST);
        let mut ids = Vec::new();
        for block in 0..MAX_STARTED_WRITES as u64 {
            let page = writes.take_page().unwrap();
            writes.gather(block * 2, page);
            ids.push(writes.issue(0, 100, |_| 0).unwrap().id());
        }
        let page = writes.take_page().unwrap();
        writes.gather(100, page);
        assert!(!writes.has_slot());
        assert!(
            writes.issue(0, 100, |_| 0).is_none(),
            "the ring share is full"
        );
        assert!(writes.gathering(), "the run waits for a slot");
        // 9 of 12 pages are taken; 3 more and then none.
        assert!((0..3).all(|_| writes.take_page().is_some()));
        assert_eq!(writes.take_page(), None);
        writes.complete(&response(ids[3], RSP_OKAY)).unwrap();
        assert!(writes.has_slot());
        assert!(
            writes.take_page().is_some(),
            "an answered write frees its page"
        );
        assert!(writes.issue(0, 100, |_| 0).is_some());
        assert_eq!(writes.in_flight(), MAX_STARTED_WRITES);
    }

    #[test]
    fn a_flush_waits_for_the_writes_before_it_and_a_failure_stays() {
        let mut writes = StartedWrites::new(0..88, MAX_SEGMENTS_PER_REQUEST);
        assert!(writes.done_through(writes.issued_mark()) && writes.idle());
        write_each(&mut writes, &[1]);
        let first = writes.issue(0, 100, |_| 0).unwrap().id();
        write_each(&mut writes, &[5]);
        let second = writes.issue(0, 100, |_| 0).unwrap().id();
        let mark = writes.issued_mark();
        write_each(&mut writes, &[9]);
        let later = writes.issue(0, 100, |_| 0).unwrap().id();
        assert!(!writes.done_through(mark));
        writes.complete(&response(second, RSP_OKAY)).unwrap();
        assert!(!writes.done_through(mark), "the first is still in flight");
        assert!(!writes.overdue(100) && writes.overdue(101));
        writes.complete(&response(first, RSP_OKAY)).unwrap();
        assert!(
            writes.done_through(mark),
            "a later write does not hold it back"
        );
        assert!(!writes.done_through(writes.issued_mark()));
        assert_eq!(writes.failure(), None);
        // A foreign id, a repeated one, a flush's: refused.
        assert!(writes.complete(&response(first, RSP_OKAY)).is_err());
        assert!(writes
            .complete(&response(STARTED_WRITE_ID | 99, RSP_OKAY))
            .is_err());
        assert!(writes
            .complete(&response(STARTED_FLUSH_ID | 1, RSP_OKAY))
            .is_err());
        writes.complete(&response(later, RSP_ERROR)).unwrap();
        assert_eq!(writes.failure(), Some(RSP_ERROR));
        assert!(writes.idle());
        write_each(&mut writes, &[2]);
        let after = writes.issue(0, 100, |_| 0).unwrap().id();
        writes.complete(&response(after, RSP_OKAY)).unwrap();
        assert_eq!(
            writes.failure(),
            Some(RSP_ERROR),
            "a failure is never forgotten"
        );
    }

    #[test]
    fn a_held_flush_goes_out_once_its_writes_are_done_or_fails_behind_a_failed_one() {
        let mut writes = StartedWrites::new(0..88, MAX_SEGMENTS_PER_REQUEST);
        let mut flushes = StartedFlushes::default();
        // No write before it: out at once.
        let idle = flushes.start(100).unwrap();
        flushes.hold(idle, writes.issued_mark());
        assert_eq!(flushes.release(&writes), [idle]);
        write_each(&mut writes, &[4]);
        let write = writes.issue(0, 100, |_| 0).unwrap().id();
        let behind = flushes.start(100).unwrap();
        flushes.hold(behind, writes.issued_mark());
        // A write issued after it does not hold it back.
        write_each(&mut writes, &[8]);
        let later = writes.issue(0, 100, |_| 0).unwrap().id();
        assert!(
            flushes.release(&writes).is_empty(),
            "its write is in flight"
        );
        assert_eq!(flushes.in_flight(), 2, "held flushes count as in flight");
        writes.complete(&response(write, RSP_OKAY)).unwrap();
        assert_eq!(flushes.release(&writes), [behind]);
        assert!(flushes.release(&writes).is_empty(), "released once");
        // Behind a failed write: answered as failed, never put on the ring.
        let failing = flushes.start(100).unwrap();
        flushes.hold(failing, writes.issued_mark());
        writes.complete(&response(later, RSP_ERROR)).unwrap();
        assert!(flushes.release(&writes).is_empty());
        assert_eq!(flushes.take(failing), Some(Some(RSP_ERROR)));
    }
}
