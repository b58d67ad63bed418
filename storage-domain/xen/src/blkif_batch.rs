//! blkif request batches: how a run of file-system blocks becomes ring
//! requests, and the bookkeeping that validates the backend's responses.
//!
//! Kept free of shared memory so the host tests cover it; the platform's
//! blkfront copies requests into the ring and responses out of it.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use xen_abi::blkif::{
    BlkifRequest, BlkifRequestSegment, BlkifResponse, MAX_SEGMENTS_PER_REQUEST, RSP_OKAY,
    SECTOR_SIZE,
};

/// Bytes of a file-system block (`sdfs::BLOCK_SIZE`), one page per segment.
pub const BLOCK_BYTES: u64 = 4096;
/// 512-byte sectors per block.
pub const SECTORS_PER_BLOCK: u64 = BLOCK_BYTES / SECTOR_SIZE;

/// The requests that move `grants.len()` consecutive blocks starting at
/// `first_block`, block `i` through the page granted as `grants[i]`: up to
/// 11 blocks per request, request ids `0..n` in order.
pub fn build_requests(
    operation: u8,
    handle: u16,
    first_block: u64,
    grants: &[u32],
) -> Vec<BlkifRequest> {
    grants
        .chunks(MAX_SEGMENTS_PER_REQUEST)
        .enumerate()
        .map(|(index, chunk)| {
            let mut request = BlkifRequest {
                operation,
                nr_segments: chunk.len() as u8,
                handle,
                id: index as u64,
                sector_number: (first_block + (index * MAX_SEGMENTS_PER_REQUEST) as u64)
                    * SECTORS_PER_BLOCK,
                ..BlkifRequest::default()
            };
            for (segment, &gref) in request.seg.iter_mut().zip(chunk) {
                *segment = BlkifRequestSegment {
                    gref,
                    first_sect: 0,
                    last_sect: (SECTORS_PER_BLOCK - 1) as u8,
                    padding: 0,
                };
            }
            request
        })
        .collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::blkif::{OP_WRITE, RSP_ERROR};

    #[test]
    fn a_run_of_25_blocks_is_three_requests() {
        let grants: Vec<u32> = (100..125).collect();
        let requests = build_requests(OP_WRITE, 51712, 1000, &grants);
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests
                .iter()
                .map(|request| request.nr_segments)
                .collect::<Vec<_>>(),
            [11, 11, 3]
        );
        assert_eq!(requests[0].sector_number, 8000);
        assert_eq!(requests[1].sector_number, 8000 + 11 * 8);
        assert_eq!(requests[2].sector_number, 8000 + 22 * 8);
        assert_eq!(requests[2].id, 2);
        assert_eq!(requests[1].seg[0].gref, 111);
        assert_eq!(requests[2].seg[2].gref, 124);
        assert_eq!(requests[2].seg[3], BlkifRequestSegment::default());
        assert!(requests
            .iter()
            .all(|request| request.handle == 51712 && request.operation == OP_WRITE));
        assert!(requests[0]
            .seg
            .iter()
            .all(|segment| segment.first_sect == 0 && segment.last_sect == 7));
        assert!(build_requests(OP_WRITE, 0, 0, &[]).is_empty());
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
}
