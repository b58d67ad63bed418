//! The blocks parked calls wait for: what the poll loop reads from the
//! disk without waiting, while it serves everyone else.
//!
//! A call that only reads is tried with the file system refusing reads it
//! cannot answer from the data cache (`nfs_server::Server::
//! try_without_waiting`); when it is refused, the blocks it named are
//! queued here and the call is parked (on its guest's ring, or its TCP
//! connection). The platform starts up to [`MAX_READING`] reads of the
//! queue at once (blkfront's `start_read`), fills the cache as each
//! completes, and a parked call is tried again once the range it waits
//! for is read. What
//! is queued or being read stays within half the cache, so parked calls
//! do not evict each other's blocks; a call whose blocks would not fit,
//! or one refused [`MAX_TRIES`] times, runs waiting, so every call ends
//! even when the cache cannot hold all it needs or the disk fails.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Tries without waiting before a call runs waiting.
pub const MAX_TRIES: u8 = 8;

/// Reads on the disk at once: the scattered blocks of several parked
/// calls (other guests, other TCP clients) are read side by side instead
/// of one after another.
pub const MAX_READING: usize = 4;

/// The reads parked calls wait for.
#[derive(Debug)]
pub struct DiskReads {
    queue: VecDeque<(u64, u64)>,
    /// The ranges on the disk now, at most [`MAX_READING`].
    reading: Vec<(u64, u64)>,
    /// Blocks queued or being read at most: half the data cache, so what
    /// the parked calls wait for fits in it together with what else they
    /// read (a read that would crowd it out makes its call run waiting).
    budget: u64,
    /// Fills completed (or failed) so far.
    fills: u64,
    /// Calls parked, over all time.
    pub parked: u64,
    /// Calls that ran waiting after [`MAX_TRIES`] refusals or with the
    /// budget spent.
    pub waited: u64,
}

/// A call waiting for blocks: how often it was refused, the range it
/// waits for, and the fills counted when it was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    /// Refusals so far.
    pub tries: u8,
    range: Option<(u64, u64)>,
    fills_seen: u64,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

impl DiskReads {
    /// Reads for a data cache of `cache_blocks` blocks.
    pub fn new(cache_blocks: u64) -> Self {
        DiskReads {
            queue: VecDeque::new(),
            reading: Vec::new(),
            budget: cache_blocks / 2,
            fills: 0,
            parked: 0,
            waited: 0,
        }
    }

    fn pending_blocks(&self) -> u64 {
        self.queue.iter().map(|&(_, count)| count).sum::<u64>()
            + self.reading.iter().map(|&(_, count)| count).sum::<u64>()
    }

    /// A call was refused for `wanted` (first block, count): queue the
    /// read (once) and return how it is parked, or `None` when it should
    /// now run waiting (refused too often, or the blocks it wants would
    /// not fit the budget).
    pub fn refused(
        &mut self,
        wanted: Option<(u64, u64)>,
        before: Option<Parked>,
    ) -> Option<Parked> {
        let tries = before.map_or(0, |parked| parked.tries).saturating_add(1);
        if tries >= MAX_TRIES {
            self.waited += 1;
            return None;
        }
        let wanted = wanted.map(|(first, count)| (first, count.max(1)));
        if let Some((first, count)) = wanted {
            let within = |&(start, length): &(u64, u64)| {
                first >= start && first.saturating_add(count) <= start.saturating_add(length)
            };
            let known = self.queue.iter().any(within) || self.reading.iter().any(within);
            if !known {
                if self.pending_blocks() + count > self.budget {
                    self.waited += 1;
                    return None;
                }
                self.queue.push_back((first, count));
            }
        }
        if before.is_none() {
            self.parked += 1;
        }
        Some(Parked {
            tries,
            range: wanted,
            fills_seen: self.fills,
        })
    }

    /// Whether a call parked as `parked` should be tried again: what it
    /// waits for is neither queued nor on the disk any more (a call that
    /// named nothing: after any fill, or once nothing is pending).
    pub fn ready(&self, parked: &Parked) -> bool {
        match parked.range {
            Some(range) => {
                !self.queue.iter().any(|&queued| overlaps(queued, range))
                    && !self.reading.iter().any(|&reading| overlaps(reading, range))
            }
            None => {
                parked.fills_seen != self.fills
                    || (self.reading.is_empty() && self.queue.is_empty())
            }
        }
    }

    /// The next range to read (the platform calls [`DiskReads::started`]
    /// once its read is on the disk), if fewer than [`MAX_READING`] are.
    pub fn next(&self) -> Option<(u64, u64)> {
        if self.reading.len() >= MAX_READING {
            return None;
        }
        self.queue.front().copied()
    }

    /// The read of `blocks` blocks from the front of the queue is on the
    /// disk: the rest of that range stays queued.
    pub fn started(&mut self, blocks: u64) {
        if let Some((first, count)) = self.queue.pop_front() {
            let blocks = blocks.min(count);
            self.reading.push((first, blocks));
            if blocks < count {
                self.queue.push_front((first + blocks, count - blocks));
            }
        }
    }

    /// The read of `blocks` blocks from `first` ended (its blocks filled
    /// into the cache, or it failed): the calls waiting for it may be
    /// tried again.
    pub fn finished(&mut self, first: u64, blocks: u64) {
        if let Some(index) = self
            .reading
            .iter()
            .position(|&range| range == (first, blocks))
        {
            self.reading.swap_remove(index);
        }
        self.fills += 1;
    }

    /// Whether a read is on the disk.
    pub fn reading(&self) -> bool {
        !self.reading.is_empty()
    }

    /// Ranges queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_queues_its_blocks_once_and_is_ready_once_they_are_read() {
        let mut reads = DiskReads::new(256);
        let first = reads.refused(Some((100, 40)), None).unwrap();
        let inside = reads.refused(Some((110, 10)), None).unwrap();
        let elsewhere = reads.refused(Some((500, 8)), None).unwrap();
        assert_eq!(
            reads.queued(),
            2,
            "a range inside a queued one is not queued again"
        );
        assert!(!reads.ready(&first) && !reads.ready(&inside) && !reads.ready(&elsewhere));
        assert_eq!(reads.next(), Some((100, 40)));
        reads.started(33);
        // Blocks 100..133 are on the disk; 133..140 are next in the queue.
        assert_eq!(reads.next(), Some((133, 7)));
        reads.finished(100, 33);
        // Blocks 100..133 are in: the call for 110..120 may go; the one
        // for 100..140 still waits for 133..140.
        assert!(reads.ready(&inside));
        assert!(!reads.ready(&first) && !reads.ready(&elsewhere));
        assert_eq!(reads.next(), Some((133, 7)));
        reads.started(33);
        reads.finished(133, 7);
        assert!(reads.ready(&first));
        assert_eq!(reads.next(), Some((500, 8)));
        assert_eq!(reads.parked, 3);
    }

    #[test]
    fn a_call_refused_too_often_runs_waiting() {
        let mut reads = DiskReads::new(256);
        let mut parked = None;
        let mut tries = 0;
        while let Some(again) = reads.refused(Some((7, 1)), parked) {
            parked = Some(again);
            tries += 1;
            assert!(tries < 100);
        }
        assert_eq!(tries, MAX_TRIES as usize - 1);
        assert_eq!(reads.waited, 1);
        assert_eq!(reads.parked, 1);
    }

    #[test]
    fn what_is_pending_stays_within_half_the_cache() {
        let mut reads = DiskReads::new(256);
        assert!(reads.refused(Some((0, 64)), None).is_some());
        assert!(reads.refused(Some((1000, 64)), None).is_some());
        assert_eq!(
            reads.refused(Some((2000, 1)), None),
            None,
            "over the budget"
        );
        assert_eq!(reads.waited, 1);
        // Within a pending range costs nothing.
        assert!(reads.refused(Some((1010, 4)), None).is_some());
        reads.started(33);
        reads.finished(0, 33);
        assert!(
            reads.refused(Some((3000, 33)), None).is_some(),
            "room again"
        );
        // A call that named nothing: ready once nothing is pending.
        let mut idle = DiskReads::new(256);
        let parked = idle.refused(None, None).unwrap();
        assert!(idle.ready(&parked));
    }

    #[test]
    fn several_reads_are_on_the_disk_at_once_and_end_in_any_order() {
        let mut reads = DiskReads::new(1024);
        let calls: Vec<Parked> = (0..6u64)
            .map(|index| reads.refused(Some((index * 100, 4)), None).unwrap())
            .collect();
        for index in 0..MAX_READING as u64 {
            assert_eq!(reads.next(), Some((index * 100, 4)));
            reads.started(4);
        }
        assert_eq!(reads.next(), None, "at most MAX_READING at once");
        assert!(calls.iter().all(|call| !reads.ready(call)));
        // The third read ends first: only its call may go, and a fifth
        // read may start.
        reads.finished(200, 4);
        let ready: Vec<bool> = calls.iter().map(|call| reads.ready(call)).collect();
        assert_eq!(ready, [false, false, true, false, false, false]);
        assert_eq!(reads.next(), Some((400, 4)));
        reads.started(4);
        assert_eq!(reads.next(), None);
        // A read that ended unknown to the queue changes nothing but the
        // count of fills.
        reads.finished(9_999, 1);
        assert_eq!(reads.next(), None);
        for (first, call) in [(0, 0), (100, 1), (300, 3), (400, 4)] {
            reads.finished(first, 4);
            assert!(reads.ready(&calls[call]), "call {call}");
        }
        assert!(!reads.reading());
        assert_eq!(reads.next(), Some((500, 4)));
    }
}
