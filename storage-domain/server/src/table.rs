//! Publishing attributes into the per-export metadata tables.
//!
//! Design: the server reports attributes through [`AttributeObserver`];
//! [`TablePublisher`] turns those reports into `metatab::Writer::publish`
//! and `invalidate` calls on the table of the export the handle belongs to
//! (`docs/metatab.md`, "When the server writes"). It is generic over the
//! table memory ([`metatab::SharedMemory`]), so the hosted build (memfd
//! mappings) and the Xen storage domain (heap pages granted read-only)
//! run the same code, and host tests run it over `[AtomicU32]`.
//!
//! A table write fails only when the region is smaller than the table,
//! which [`metatab::Writer::create`] already refused; failures are counted
//! and passed to an optional report function, never fatal: the table is a
//! cache, and a guest falls back to the RPC.

use alloc::collections::BTreeMap;

use crate::{AttributeObserver, ExportId};
use metatab::{Entry, SharedMemory, TableError, Writer};
use vfs::InodeId;

/// Called when a table refused a write: the export, the file id, the error.
pub type ErrorReport = fn(ExportId, u64, TableError);

/// Counters of a [`TablePublisher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStatistics {
    /// Entries published.
    pub published: u64,
    /// Slots emptied for removed files.
    pub invalidated: u64,
    /// Writes a table refused.
    pub failures: u64,
}

/// Writes the attributes the server reports into one table per export.
#[derive(Debug)]
pub struct TablePublisher<M> {
    writers: BTreeMap<ExportId, Writer<M>>,
    report: Option<ErrorReport>,
    statistics: PublisherStatistics,
}

impl<M: SharedMemory> TablePublisher<M> {
    /// A publisher with no tables (reports for exports without a table are
    /// ignored).
    pub fn new() -> Self {
        Self {
            writers: BTreeMap::new(),
            report: None,
            statistics: PublisherStatistics::default(),
        }
    }

    /// Publish `export`'s attributes through `writer` (replacing any
    /// earlier writer of that export).
    pub fn insert(&mut self, export: ExportId, writer: Writer<M>) {
        self.writers.insert(export, writer);
    }

    /// Call `report` whenever a table refuses a write.
    pub fn with_error_report(mut self, report: ErrorReport) -> Self {
        self.report = Some(report);
        self
    }

    /// The counters so far.
    pub fn statistics(&self) -> PublisherStatistics {
        self.statistics
    }

    fn failed(&mut self, export: ExportId, file_id: u64, error: TableError) {
        self.statistics.failures += 1;
        if let Some(report) = self.report {
            report(export, file_id, error);
        }
    }
}

impl<M: SharedMemory> Default for TablePublisher<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: SharedMemory> AttributeObserver for TablePublisher<M> {
    fn updated(
        &mut self,
        export: ExportId,
        handle: &[u8],
        change: u64,
        attributes: &nfs3::FileAttributes,
    ) {
        let Some(writer) = self.writers.get_mut(&export) else {
            return;
        };
        let entry = Entry {
            file_id: attributes.file_id,
            handle_digest: metatab::handle_digest(handle),
            attributes: attributes.clone(),
            change,
        };
        match writer.publish(&entry) {
            Ok(()) => self.statistics.published += 1,
            Err(error) => self.failed(export, entry.file_id, error),
        }
    }

    fn removed(&mut self, export: ExportId, inode: InodeId) {
        let Some(writer) = self.writers.get_mut(&export) else {
            return;
        };
        match writer.invalidate(inode.0) {
            Ok(true) => self.statistics.invalidated += 1,
            Ok(false) => {}
            Err(error) => self.failed(export, inode.0, error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::sync::atomic::AtomicU32;
    use metatab::{Lookup, Reader};
    use nfs3::{DeviceNumbers, FileAttributes, FileType, Time};

    fn region(slot_count: u32) -> Vec<AtomicU32> {
        (0..metatab::layout::table_bytes(slot_count) / 4)
            .map(|_| AtomicU32::new(0))
            .collect()
    }

    fn attributes(file_id: u64, size: u64) -> FileAttributes {
        FileAttributes {
            file_type: FileType::Regular,
            mode: 0o644,
            link_count: 1,
            uid: 1000,
            gid: 1000,
            size,
            used: size,
            device: DeviceNumbers::default(),
            file_system_id: 7,
            file_id,
            access_time: Time::default(),
            modify_time: Time::default(),
            change_time: Time::default(),
        }
    }

    fn failure_report(_: ExportId, _: u64, _: TableError) {}

    #[test]
    fn publishes_into_the_export_table_and_invalidates() {
        let first = region(16);
        let second = region(16);
        let mut publisher = TablePublisher::new().with_error_report(failure_report);
        publisher.insert(ExportId(1), Writer::create(&first[..], 16, 99).unwrap());
        publisher.insert(ExportId(2), Writer::create(&second[..], 16, 99).unwrap());
        let handle = [5u8; 40];
        let digest = metatab::handle_digest(&handle);
        publisher.updated(ExportId(1), &handle, 3, &attributes(42, 100));
        // An export without a table is ignored.
        publisher.updated(ExportId(9), &handle, 3, &attributes(42, 100));
        let reader = Reader::attach(&first[..]).unwrap();
        match reader.lookup(42, digest).unwrap() {
            Lookup::Hit(entry) => {
                assert_eq!(entry.attributes.size, 100);
                assert_eq!(entry.change, 3);
            }
            other => panic!("expected a hit, got {other:?}"),
        }
        let other = Reader::attach(&second[..]).unwrap();
        assert!(matches!(other.lookup(42, digest).unwrap(), Lookup::Miss));
        publisher.removed(ExportId(1), InodeId(42));
        publisher.removed(ExportId(1), InodeId(43));
        assert!(matches!(reader.lookup(42, digest).unwrap(), Lookup::Miss));
        assert_eq!(
            publisher.statistics(),
            PublisherStatistics {
                published: 1,
                invalidated: 1,
                failures: 0
            }
        );
    }
}
