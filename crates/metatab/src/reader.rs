//! The guest's side: a read-only view of a table.

use core::sync::atomic::{fence, Ordering};

use nfs3::{DeviceNumbers, FileAttributes, FileType, Time};

use crate::layout::{
    journal_lap, journal_offset, set_index, slot_offset, table_bytes, HEADER_BOOT_ID,
    HEADER_JOURNAL_HEAD, HEADER_JOURNAL_LENGTH, HEADER_MAGIC, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE,
    HEADER_VERSION, JOURNAL_LAP_SHIFT, JOURNAL_LENGTH, JOURNAL_SLOT_MASK, MAGIC, SLOT_ACCESS_TIME,
    SLOT_CHANGE, SLOT_CHANGE_TIME, SLOT_DATA_END, SLOT_DEVICE_MAJOR, SLOT_DEVICE_MINOR,
    SLOT_FILE_ID, SLOT_FILE_SYSTEM_ID, SLOT_GID, SLOT_HANDLE_DIGEST, SLOT_KEY, SLOT_LINK_COUNT,
    SLOT_MODE, SLOT_MODIFY_TIME, SLOT_SEQUENCE, SLOT_SIZE, SLOT_SIZE_BYTES, SLOT_TYPE, SLOT_UID,
    SLOT_USED, VERSION, WAYS,
};
use crate::{valid_slot_count, Entry, TableError};
use vrpc::SharedMemory;

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A consistent copy of the file's slot.
    Hit(Entry),
    /// The slot holds another file, or nothing: ask the server.
    Miss,
    /// The server was writing the slot during the copy: retry or ask the
    /// server.
    Busy,
}

/// What [`Reader::changes_since`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// Every slot written since the cursor was passed to the callback
    /// (some more than once); continue from `head`.
    Slots {
        /// The cursor for the next call.
        head: u32,
    },
    /// More was written than the journal holds (or the writer cleared the
    /// table): any slot may have changed. Continue from `head`.
    Overrun {
        /// The cursor for the next call.
        head: u32,
    },
}

/// A read-only view of a table, attached once.
#[derive(Debug)]
pub struct Reader<M> {
    memory: M,
    slot_count: u32,
    boot_id: u64,
}

impl<M: SharedMemory> Reader<M> {
    /// Attaches to a table the server formatted. The header is read once
    /// here and validated; later reads never trust it again.
    ///
    /// # Errors
    /// [`TableError`] when the header is not a table's or the region is too
    /// small for it.
    pub fn attach(memory: M) -> Result<Self, TableError> {
        // Acquire pairs with the writer's release store of the magic.
        if memory.load_u32(HEADER_MAGIC, Ordering::Acquire)? != MAGIC
            || memory.load_u32(HEADER_VERSION, Ordering::Relaxed)? != VERSION
            || memory.load_u32(HEADER_SLOT_SIZE, Ordering::Relaxed)? != SLOT_SIZE as u32
            || memory.load_u32(HEADER_JOURNAL_LENGTH, Ordering::Relaxed)? != JOURNAL_LENGTH
        {
            return Err(TableError::BadHeader);
        }
        let slot_count = memory.load_u32(HEADER_SLOT_COUNT, Ordering::Relaxed)?;
        if !valid_slot_count(slot_count) {
            return Err(TableError::BadSlotCount);
        }
        if memory.size() < table_bytes(slot_count) {
            return Err(TableError::RegionTooSmall);
        }
        let low = memory.load_u32(HEADER_BOOT_ID, Ordering::Relaxed)?;
        let high = memory.load_u32(HEADER_BOOT_ID + 4, Ordering::Relaxed)?;
        Ok(Self {
            memory,
            slot_count,
            boot_id: u64::from(high) << 32 | u64::from(low),
        })
    }

    /// The server's boot id: a different one after reconnecting means every
    /// cached attribute and change counter is stale.
    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// Slots in the table.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The first slot of the set `file_id` maps to (the file is in that
    /// slot or the next).
    pub fn slot_of(&self, file_id: u64) -> u32 {
        set_index(file_id, self.slot_count)
    }

    /// The journal's head now: a cursor for [`Reader::changes_since`] that
    /// skips everything written so far.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn journal_head(&self) -> Result<u32, TableError> {
        Ok(self
            .memory
            .load_u32(HEADER_JOURNAL_HEAD, Ordering::Acquire)?)
    }

    /// Calls `changed` with every slot the writer wrote since `cursor` (a
    /// head from an earlier call or [`Reader::journal_head`]), in order.
    /// Slots whose entry the writer overwrote meanwhile are not lost: the
    /// answer is then [`Changes::Overrun`], after which the caller must
    /// treat every slot as changed. Values read are never trusted beyond
    /// that: a slot index out of range is an overrun too.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn changes_since(
        &self,
        cursor: u32,
        mut changed: impl FnMut(u32),
    ) -> Result<Changes, TableError> {
        // Acquire pairs with the writer's release store of the head: the
        // entries below it, and the slots written before them, are visible.
        let head = self.journal_head()?;
        let pending = head.wrapping_sub(cursor);
        if pending > JOURNAL_LENGTH {
            return Ok(Changes::Overrun { head });
        }
        let base = journal_offset(self.slot_count);
        let mut position = cursor;
        while position != head {
            let entry = self.memory.load_u32(
                base + (position % JOURNAL_LENGTH) as usize * 4,
                Ordering::Relaxed,
            )?;
            let slot = entry & JOURNAL_SLOT_MASK;
            if entry >> JOURNAL_LAP_SHIFT != journal_lap(position) || slot >= self.slot_count {
                // Overwritten by a later lap while we read.
                return Ok(Changes::Overrun { head });
            }
            changed(slot);
            position = position.wrapping_add(1);
        }
        Ok(Changes::Slots { head })
    }

    /// Looks up the file `file_id` whose handle has digest `handle_digest`.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access (it cannot
    /// for a region that passed [`Reader::attach`]).
    pub fn lookup(&self, file_id: u64, handle_digest: u64) -> Result<Lookup, TableError> {
        let set = set_index(file_id, self.slot_count);
        let mut busy = false;
        for index in set..set + WAYS {
            match self.lookup_slot(index, file_id, handle_digest)? {
                Lookup::Hit(entry) => return Ok(Lookup::Hit(entry)),
                Lookup::Busy => busy = true,
                Lookup::Miss => {}
            }
        }
        Ok(if busy { Lookup::Busy } else { Lookup::Miss })
    }

    /// [`Reader::lookup`] in slot `index` alone.
    fn lookup_slot(
        &self,
        index: u32,
        file_id: u64,
        handle_digest: u64,
    ) -> Result<Lookup, TableError> {
        let base = slot_offset(index);
        // Acquire: the field loads below happen after this read.
        let before = self
            .memory
            .load_u32(base + SLOT_SEQUENCE, Ordering::Acquire)?;
        if before & 1 == 1 {
            return Ok(Lookup::Busy);
        }
        let mut words = [0u32; SLOT_DATA_END / 4];
        for (index, word) in words.iter_mut().enumerate().skip(1) {
            *word = self.memory.load_u32(base + index * 4, Ordering::Relaxed)?;
        }
        // Acquire fence: the field loads above are ordered before the
        // sequence re-read below, so a field written after `before` forces
        // the re-read to see the writer's odd or later sequence.
        fence(Ordering::Acquire);
        let after = self
            .memory
            .load_u32(base + SLOT_SEQUENCE, Ordering::Relaxed)?;
        if after != before {
            return Ok(Lookup::Busy);
        }
        // The copy is consistent; validate it.
        let word = |offset: usize| words[offset / 4];
        let double = |offset: usize| u64::from(word(offset + 4)) << 32 | u64::from(word(offset));
        let Ok(file_type) = FileType::from_u32(word(SLOT_TYPE)) else {
            return Ok(Lookup::Miss);
        };
        if double(SLOT_KEY) != file_id || double(SLOT_HANDLE_DIGEST) != handle_digest {
            return Ok(Lookup::Miss);
        }
        let time = |offset: usize| Time {
            seconds: word(offset),
            nanoseconds: word(offset + 4),
        };
        Ok(Lookup::Hit(Entry {
            file_id,
            handle_digest,
            attributes: FileAttributes {
                file_type,
                mode: word(SLOT_MODE),
                link_count: word(SLOT_LINK_COUNT),
                uid: word(SLOT_UID),
                gid: word(SLOT_GID),
                size: double(SLOT_SIZE_BYTES),
                used: double(SLOT_USED),
                device: DeviceNumbers {
                    major: word(SLOT_DEVICE_MAJOR),
                    minor: word(SLOT_DEVICE_MINOR),
                },
                file_system_id: double(SLOT_FILE_SYSTEM_ID),
                file_id: double(SLOT_FILE_ID),
                access_time: time(SLOT_ACCESS_TIME),
                modify_time: time(SLOT_MODIFY_TIME),
                change_time: time(SLOT_CHANGE_TIME),
            },
            change: double(SLOT_CHANGE),
        }))
    }
}
