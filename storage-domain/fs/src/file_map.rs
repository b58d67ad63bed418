//! A regular file's block map held as runs of consecutive blocks.
//!
//! The map is kept in the same shape it has on disk (runs of file blocks
//! that are consecutive on the device too), so its memory and its record
//! size grow with the file's fragmentation, not its length: a gigabyte
//! written sequentially is one run. Runs are always kept merged, so two
//! maps that map the same blocks compare equal.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Device blocks backing one run of file blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The device block of the run's first file block.
    pub physical: u64,
    /// Blocks in the run (at least one).
    pub length: u64,
}

/// Why a run could not be added while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlapError;

/// File block -> device block, as merged runs keyed by first file block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileMap {
    runs: BTreeMap<u64, Run>,
    mapped: u64,
}

impl FileMap {
    /// File blocks mapped (holes excluded).
    pub fn mapped_blocks(&self) -> u64 {
        self.mapped
    }

    /// Runs held (what the record and the memory cost grow with).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The runs in file order: (first file block, run).
    pub fn runs(&self) -> impl Iterator<Item = (u64, Run)> + '_ {
        self.runs.iter().map(|(&logical, &run)| (logical, run))
    }

    /// One past the last mapped file block (0 when nothing is mapped).
    pub fn end(&self) -> u64 {
        self.runs
            .iter()
            .next_back()
            .map_or(0, |(&logical, run)| logical.saturating_add(run.length))
    }

    /// The device block holding file block `logical`.
    pub fn get(&self, logical: u64) -> Option<u64> {
        let (&start, run) = self.runs.range(..=logical).next_back()?;
        let offset = logical - start;
        (offset < run.length).then(|| run.physical + offset)
    }

    /// Map file block `logical` to device block `physical`, replacing any
    /// earlier mapping; returns the device block it replaced.
    pub fn insert(&mut self, logical: u64, physical: u64) -> Option<u64> {
        let replaced = self
            .remove_range(logical, logical + 1)
            .first()
            .map(|run| run.0);
        self.mapped += 1;
        let mut start = logical;
        let mut run = Run {
            physical,
            length: 1,
        };
        // Merge with the run just before, when it continues on the device.
        if let Some((&before, previous)) = self.runs.range(..logical).next_back() {
            if before + previous.length == logical
                && previous.physical + previous.length == physical
            {
                start = before;
                run = Run {
                    physical: previous.physical,
                    length: previous.length + 1,
                };
            }
        }
        // And with the run just after.
        if let Some(next) = self.runs.get(&(logical + 1)).copied() {
            if physical + 1 == next.physical {
                self.runs.remove(&(logical + 1));
                run.length += next.length;
            }
        }
        self.runs.insert(start, run);
        replaced
    }

    /// Unmap every file block at or past `keep`; returns the freed device
    /// blocks as (first device block, length) runs.
    pub fn truncate(&mut self, keep: u64) -> Vec<(u64, u64)> {
        self.remove_range(keep, u64::MAX)
    }

    /// Unmap file blocks in `start..end`; returns the freed device blocks.
    fn remove_range(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut freed = Vec::new();
        if start >= end {
            return freed;
        }
        let first = match self.runs.range(..=start).next_back() {
            Some((&logical, run)) if logical + run.length > start => logical,
            _ => start,
        };
        let affected: Vec<(u64, Run)> = self
            .runs
            .range(first..end)
            .map(|(&logical, &run)| (logical, run))
            .collect();
        for (logical, run) in affected {
            self.runs.remove(&logical);
            let run_end = logical + run.length;
            let cut_start = logical.max(start);
            let cut_end = run_end.min(end);
            if logical < cut_start {
                self.runs.insert(
                    logical,
                    Run {
                        physical: run.physical,
                        length: cut_start - logical,
                    },
                );
            }
            if cut_end < run_end {
                self.runs.insert(
                    cut_end,
                    Run {
                        physical: run.physical + (cut_end - logical),
                        length: run_end - cut_end,
                    },
                );
            }
            let length = cut_end - cut_start;
            self.mapped -= length;
            freed.push((run.physical + (cut_start - logical), length));
        }
        freed
    }

    /// Append a run while decoding: runs must come in file order, must not
    /// overlap, and are merged with the previous one when they continue it.
    ///
    /// # Errors
    /// [`OverlapError`] when the run starts before the end of the last one.
    pub fn push_run(&mut self, logical: u64, run: Run) -> Result<(), OverlapError> {
        if logical < self.end() || run.length == 0 {
            return Err(OverlapError);
        }
        self.mapped += run.length;
        if let Some((&before, previous)) = self.runs.iter_mut().next_back() {
            if before + previous.length == logical
                && previous.physical + previous.length == run.physical
            {
                previous.length += run.length;
                return Ok(());
            }
        }
        self.runs.insert(logical, run);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(map: &FileMap) -> Vec<(u64, u64)> {
        map.runs()
            .flat_map(|(logical, run)| {
                (0..run.length).map(move |step| (logical + step, run.physical + step))
            })
            .collect()
    }

    #[test]
    fn inserts_merge_and_split_like_a_per_block_map() {
        let mut map = FileMap::default();
        let mut reference = BTreeMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let logical = state % 64;
            let physical = 100 + (state >> 8) % 64;
            if state.is_multiple_of(11) {
                let keep = (state >> 20) % 64;
                let freed: u64 = map.truncate(keep).iter().map(|run| run.1).sum();
                let before = reference.len();
                reference.retain(|&key, _| key < keep);
                assert_eq!(freed as usize, before - reference.len());
            } else {
                assert_eq!(
                    map.insert(logical, physical),
                    reference.insert(logical, physical)
                );
            }
            let expected: Vec<(u64, u64)> = reference.iter().map(|(&a, &b)| (a, b)).collect();
            assert_eq!(blocks(&map), expected);
            assert_eq!(map.mapped_blocks(), reference.len() as u64);
            // Always merged: no run continues the one before it.
            let runs: Vec<(u64, Run)> = map.runs().collect();
            for pair in runs.windows(2) {
                let ((first, a), (second, b)) = (pair[0], pair[1]);
                assert!(!(first + a.length == second && a.physical + a.length == b.physical));
            }
        }
    }

    #[test]
    fn decoding_refuses_overlaps_and_merges_continuations() {
        let mut map = FileMap::default();
        let run = |physical, length| Run { physical, length };
        assert_eq!(map.push_run(0, run(10, 4)), Ok(()));
        assert_eq!(map.push_run(4, run(14, 4)), Ok(()));
        assert_eq!(map.run_count(), 1);
        assert_eq!(map.push_run(7, run(50, 1)), Err(OverlapError));
        assert_eq!(map.push_run(9, run(50, 0)), Err(OverlapError));
        assert_eq!(map.push_run(1 << 40, run(60, 1 << 30)), Ok(()));
        assert_eq!(map.mapped_blocks(), 8 + (1 << 30));
        assert_eq!(map.get(5), Some(15));
        assert_eq!(map.get(8), None);
        assert_eq!(map.get((1 << 40) + 7), Some(67));
    }
}
