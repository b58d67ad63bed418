//! The blocks parked calls wait for: what the poll loop reads from the
//! disk without waiting, while it serves everyone else.
//!
//! A call that only reads is tried with the file system refusing reads it
//! cannot answer from the data cache (`nfs_server::Server::
//! try_without_waiting`); when it is refused, the blocks it named are
//! queued here and the call is parked (on its guest's ring, or its TCP
//! connection). The platform starts one read of the queue at a time
//! (blkfront's `start_read`), fills the cache when it completes, and
//! counts the fill: a parked call is tried again after a fill since it
//! was parked. A call refused [`MAX_TRIES`] times runs waiting, so every
//! call ends even when the cache is too small to hold all it needs or the
//! disk fails.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;

/// Tries without waiting before a call runs waiting.
pub const MAX_TRIES: u8 = 8;

/// Ranges queued at most; beyond, a refused call runs waiting.
pub const MAX_QUEUED: usize = 64;

/// The reads parked calls wait for.
#[derive(Debug, Default)]
pub struct DiskReads {
    queue: VecDeque<(u64, u64)>,
    /// Fills completed (or failed) so far.
    fills: u64,
    /// Whether a read is on the disk.
    reading: bool,
    /// Calls parked, over all time.
    pub parked: u64,
    /// Calls that ran waiting after [`MAX_TRIES`] refusals or a full queue.
    pub waited: u64,
}

/// A call waiting for blocks: how often it was refused, and the fills
/// counted when it last was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    /// Refusals so far.
    pub tries: u8,
    fills_seen: u64,
}

impl DiskReads {
    /// A call was refused for `wanted` (first block, count): queue the
    /// read (once) and return how it is parked, or `None` when it should
    /// now run waiting (refused too often, or the queue is full).
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
        if let Some((first, count)) = wanted {
            let known = self
                .queue
                .iter()
                .any(|&(start, length)| first >= start && first + count <= start + length);
            if !known {
                if self.queue.len() >= MAX_QUEUED {
                    self.waited += 1;
                    return None;
                }
                self.queue.push_back((first, count.max(1)));
            }
        }
        if before.is_none() {
            self.parked += 1;
        }
        Some(Parked {
            tries,
            fills_seen: self.fills,
        })
    }

    /// Whether a call parked as `parked` should be tried again: a fill
    /// completed since, or nothing is queued or on the disk any more.
    pub fn ready(&self, parked: &Parked) -> bool {
        parked.fills_seen != self.fills || (!self.reading && self.queue.is_empty())
    }

    /// The next range to read (the platform calls [`DiskReads::started`]
    /// once its read is on the disk), if none is being read.
    pub fn next(&self) -> Option<(u64, u64)> {
        if self.reading {
            return None;
        }
        self.queue.front().copied()
    }

    /// The read of `blocks` blocks from the front of the queue is on the
    /// disk: the rest of that range stays queued.
    pub fn started(&mut self, blocks: u64) {
        self.reading = true;
        if let Some((first, count)) = self.queue.pop_front() {
            if blocks < count {
                self.queue.push_front((first + blocks, count - blocks));
            }
        }
    }

    /// The read on the disk ended (its blocks filled into the cache, or
    /// it failed): parked calls may be tried again.
    pub fn finished(&mut self) {
        self.reading = false;
        self.fills += 1;
    }

    /// Whether a read is on the disk.
    pub fn reading(&self) -> bool {
        self.reading
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
    fn a_refused_call_queues_its_blocks_once_and_is_ready_after_a_fill() {
        let mut reads = DiskReads::default();
        let first = reads.refused(Some((100, 40)), None).unwrap();
        let second = reads.refused(Some((110, 10)), None).unwrap();
        assert_eq!(
            reads.queued(),
            1,
            "a range inside a queued one is not queued again"
        );
        assert!(!reads.ready(&first) && !reads.ready(&second));
        assert_eq!(reads.next(), Some((100, 40)));
        reads.started(33);
        assert_eq!(reads.next(), None, "one read at a time");
        assert_eq!(reads.queued(), 1);
        reads.finished();
        assert!(reads.ready(&first) && reads.ready(&second));
        assert_eq!(reads.next(), Some((133, 7)));
        assert_eq!(reads.parked, 2);
    }

    #[test]
    fn a_call_refused_too_often_runs_waiting() {
        let mut reads = DiskReads::default();
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
    fn a_full_queue_makes_calls_wait_and_an_idle_one_lets_them_retry() {
        let mut reads = DiskReads::default();
        for index in 0..MAX_QUEUED as u64 {
            assert!(reads.refused(Some((index * 100, 1)), None).is_some());
        }
        assert_eq!(reads.refused(Some((1_000_000, 1)), None), None);
        // Nothing named (a refusal without blocks): ready once idle.
        let mut idle = DiskReads::default();
        let parked = idle.refused(None, None).unwrap();
        assert!(idle.ready(&parked));
    }
}
