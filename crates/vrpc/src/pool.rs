//! The frontend's allocator of data pages.
//!
//! Design: a bitmap over the pool with a next-fit cursor. A request takes one
//! run of consecutive pages when it can (one descriptor), otherwise several
//! runs up to the descriptor budget; pages return when the response is
//! collected. The backend never allocates: it only checks that descriptors
//! lie inside the pool.

use alloc::vec;
use alloc::vec::Vec;

use crate::layout::{Descriptor, PAGE_SIZE};

/// Consecutive pages `first..first + count` of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First page.
    pub first: u32,
    /// Number of pages, at least 1.
    pub count: u32,
}

/// Free/used bitmap of the data pool.
#[derive(Debug, Clone)]
pub struct PagePool {
    used: Vec<bool>,
    free: usize,
    cursor: usize,
}

impl PagePool {
    /// A pool of `pages` free pages.
    pub fn new(pages: u32) -> Self {
        Self {
            used: vec![false; pages as usize],
            free: pages as usize,
            cursor: 0,
        }
    }

    /// Pages in the pool.
    pub fn pages(&self) -> usize {
        self.used.len()
    }

    /// Pages free now.
    pub fn free_pages(&self) -> usize {
        self.free
    }

    /// Allocates pages for `bytes` in at most `max_extents` runs. `None`
    /// when the free pages do not suffice in that many runs (nothing is then
    /// taken). Zero bytes take nothing.
    pub fn allocate(&mut self, bytes: usize, max_extents: usize) -> Option<Vec<Extent>> {
        let needed = bytes.div_ceil(PAGE_SIZE);
        let mut extents = Vec::new();
        if needed == 0 {
            return Some(extents);
        }
        if needed > self.free || self.used.is_empty() {
            return None;
        }
        // First choice: one run, searched from the cursor with wrap-around.
        if let Some(first) = self.find_run(needed) {
            extents.push(Extent {
                first: first as u32,
                count: needed as u32,
            });
        } else {
            // Otherwise runs in address order from the cursor.
            let mut remaining = needed;
            let total = self.used.len();
            let mut scanned = 0;
            let mut page = self.cursor % total;
            while remaining > 0 && scanned < total && extents.len() < max_extents {
                if self.used[page] {
                    page = (page + 1) % total;
                    scanned += 1;
                    continue;
                }
                let first = page;
                let mut count = 0;
                while count < remaining && page < total && !self.used[page] && scanned < total {
                    count += 1;
                    page += 1;
                    scanned += 1;
                }
                extents.push(Extent {
                    first: first as u32,
                    count: count as u32,
                });
                remaining -= count;
                page %= total;
            }
            if remaining > 0 {
                return None;
            }
        }
        if extents.len() > max_extents {
            return None;
        }
        for extent in &extents {
            for page in extent.first..extent.first + extent.count {
                self.used[page as usize] = true;
            }
            self.free -= extent.count as usize;
            self.cursor = (extent.first + extent.count) as usize % self.used.len();
        }
        Some(extents)
    }

    fn find_run(&self, needed: usize) -> Option<usize> {
        let total = self.used.len();
        let mut start = self.cursor % total;
        let mut checked = 0;
        while checked < total {
            if start + needed > total {
                // A run cannot wrap; continue from page 0.
                checked += total - start;
                start = 0;
                continue;
            }
            match self.used[start..start + needed]
                .iter()
                .rposition(|used| *used)
            {
                None => return Some(start),
                Some(last_used) => {
                    checked += last_used + 1;
                    start += last_used + 1;
                    if start >= total {
                        start = 0;
                    }
                }
            }
        }
        None
    }

    /// Returns pages to the pool. Freeing a page twice is a caller bug and
    /// is ignored.
    pub fn release(&mut self, extents: &[Extent]) {
        for extent in extents {
            for page in extent.first..extent.first.saturating_add(extent.count) {
                if let Some(used) = self.used.get_mut(page as usize) {
                    if *used {
                        *used = false;
                        self.free += 1;
                    }
                }
            }
        }
    }
}

/// Descriptors covering `bytes` bytes of `extents`, in order.
pub fn descriptors(extents: &[Extent], bytes: usize) -> Vec<Descriptor> {
    let mut remaining = bytes;
    let mut list = Vec::with_capacity(extents.len());
    for extent in extents {
        if remaining == 0 {
            break;
        }
        let length = remaining.min(extent.count as usize * PAGE_SIZE);
        list.push(Descriptor {
            page: extent.first,
            offset: 0,
            length: length as u32,
        });
        remaining -= length;
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_one_run_then_fragments() {
        let mut pool = PagePool::new(8);
        let a = pool.allocate(3 * PAGE_SIZE, 4).unwrap();
        assert_eq!(a, [Extent { first: 0, count: 3 }]);
        let b = pool.allocate(1, 4).unwrap();
        assert_eq!(b, [Extent { first: 3, count: 1 }]);
        let c = pool.allocate(4 * PAGE_SIZE, 4).unwrap();
        assert_eq!(c, [Extent { first: 4, count: 4 }]);
        assert_eq!(pool.free_pages(), 0);
        assert!(pool.allocate(1, 4).is_none());
        pool.release(&a);
        pool.release(&c[..]);
        // Free: 0..3 and 4..8; 5 pages need two runs.
        let d = pool.allocate(5 * PAGE_SIZE, 4).unwrap();
        assert_eq!(d.iter().map(|e| e.count).sum::<u32>(), 5);
        assert!(d.len() == 2);
        pool.release(&d);
        // With one extent allowed, 5 fragmented pages cannot be had.
        pool.release(&b);
        let _hole = pool.allocate(PAGE_SIZE, 1).unwrap();
        assert_eq!(pool.free_pages(), 7);
    }

    #[test]
    fn refuses_when_extent_budget_is_too_small() {
        let mut pool = PagePool::new(6);
        let all: Vec<_> = (0..6).map(|_| pool.allocate(1, 1).unwrap()).collect();
        pool.release(&all[0]);
        pool.release(&all[2]);
        pool.release(&all[4]);
        assert!(pool.allocate(3 * PAGE_SIZE, 2).is_none());
        assert_eq!(pool.free_pages(), 3);
        let three = pool.allocate(3 * PAGE_SIZE, 3).unwrap();
        assert_eq!(three.len(), 3);
        assert_eq!(descriptors(&three, 2 * PAGE_SIZE + 5).len(), 3);
        assert_eq!(descriptors(&three, 2 * PAGE_SIZE + 5)[2].length, 5);
    }
}
