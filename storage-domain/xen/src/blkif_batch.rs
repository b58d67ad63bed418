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
}
