//! The server's side: the single writer of a table.

use core::sync::atomic::{fence, Ordering};

use crate::layout::{
    journal_entry, journal_offset, set_index, slot_offset, table_bytes, HEADER_BOOT_ID,
    HEADER_JOURNAL_HEAD, HEADER_JOURNAL_LENGTH, HEADER_MAGIC, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE,
    HEADER_VERSION, JOURNAL_LENGTH, MAGIC, SLOT_ACCESS_TIME, SLOT_CHANGE, SLOT_CHANGE_TIME,
    SLOT_DATA_END, SLOT_DEVICE_MAJOR, SLOT_DEVICE_MINOR, SLOT_FILE_ID, SLOT_FILE_SYSTEM_ID,
    SLOT_GID, SLOT_HANDLE_DIGEST, SLOT_KEY, SLOT_LAST_USED, SLOT_LINK_COUNT, SLOT_MODE,
    SLOT_MODIFY_TIME, SLOT_SEQUENCE, SLOT_SIZE, SLOT_SIZE_BYTES, SLOT_TYPE, SLOT_UID, SLOT_USED,
    VERSION, WAYS,
};
use crate::{valid_slot_count, Entry, TableError};
use vrpc::SharedMemory;

/// The writer of one table. There must be exactly one per table: the
/// seqlock protocol assumes no concurrent writers.
#[derive(Debug)]
pub struct Writer<M> {
    memory: M,
    slot_count: u32,
    /// The journal's head (entries ever written, wrapping).
    head: u32,
    /// Publishes so far (wrapping): the recency stamped in each slot.
    tick: u32,
}

impl<M: SharedMemory> Writer<M> {
    /// Formats `memory` as an empty table of `slot_count` slots for a server
    /// that booted with `boot_id`.
    ///
    /// # Errors
    /// [`TableError`] when the slot count or region size is wrong.
    pub fn create(memory: M, slot_count: u32, boot_id: u64) -> Result<Self, TableError> {
        if !valid_slot_count(slot_count) {
            return Err(TableError::BadSlotCount);
        }
        if memory.size() < table_bytes(slot_count) {
            return Err(TableError::RegionTooSmall);
        }
        let zeros = [0u8; 4096];
        let mut offset = 0;
        let end = journal_offset(slot_count) + JOURNAL_LENGTH as usize * 4;
        while offset < end {
            let length = zeros.len().min(end - offset);
            memory.write(offset, &zeros[..length])?;
            offset += length;
        }
        memory.store_u32(HEADER_VERSION, VERSION, Ordering::Relaxed)?;
        memory.store_u32(HEADER_SLOT_COUNT, slot_count, Ordering::Relaxed)?;
        memory.store_u32(HEADER_SLOT_SIZE, SLOT_SIZE as u32, Ordering::Relaxed)?;
        memory.store_u32(HEADER_JOURNAL_LENGTH, JOURNAL_LENGTH, Ordering::Relaxed)?;
        memory.store_u32(HEADER_BOOT_ID, boot_id as u32, Ordering::Relaxed)?;
        memory.store_u32(
            HEADER_BOOT_ID + 4,
            (boot_id >> 32) as u32,
            Ordering::Relaxed,
        )?;
        // Release: a reader that sees the magic sees the rest of the header
        // and the zeroed slots.
        memory.store_u32(HEADER_MAGIC, MAGIC, Ordering::Release)?;
        Ok(Self {
            memory,
            slot_count,
            head: 0,
            tick: 0,
        })
    }

    /// Slots in the table.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Publishes `entry` in its slot, replacing whatever file was there.
    /// A slot that already holds exactly this entry is left alone (the
    /// server publishes on every read of a file's attributes): neither its
    /// sequence nor the journal moves.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn publish(&mut self, entry: &Entry) -> Result<(), TableError> {
        let index = self.choose(entry.file_id)?;
        let base = slot_offset(index);
        self.tick = self.tick.wrapping_add(1);
        self.memory
            .store_u32(base + SLOT_LAST_USED, self.tick, Ordering::Relaxed)?;
        let words = slot_words(entry);
        // The table is written only by this writer: reading it back is
        // reading our own data.
        let mut same = true;
        for (position, word) in words.iter().enumerate().skip(1) {
            if self
                .memory
                .load_u32(base + position * 4, Ordering::Relaxed)?
                != *word
            {
                same = false;
                break;
            }
        }
        if same {
            return Ok(());
        }
        self.update(base, |memory| {
            for (position, word) in words.iter().enumerate().skip(1) {
                memory.store_u32(base + position * 4, *word, Ordering::Relaxed)?;
            }
            Ok(())
        })?;
        self.record(index)
    }

    /// The slot of `file_id`'s set that holds it, else an empty one, else
    /// the one published least recently.
    fn choose(&self, file_id: u64) -> Result<u32, TableError> {
        let set = set_index(file_id, self.slot_count);
        let mut empty = None;
        let mut oldest = (set, 0u32);
        for index in set..set + WAYS {
            let base = slot_offset(index);
            let kind = self.memory.load_u32(base + SLOT_TYPE, Ordering::Relaxed)?;
            if kind == 0 {
                empty.get_or_insert(index);
                continue;
            }
            if self.key(base)? == file_id {
                return Ok(index);
            }
            let age = self.tick.wrapping_sub(
                self.memory
                    .load_u32(base + SLOT_LAST_USED, Ordering::Relaxed)?,
            );
            if age >= oldest.1 {
                oldest = (index, age);
            }
        }
        Ok(empty.unwrap_or(oldest.0))
    }

    /// The key of the slot at `base` (our own data).
    fn key(&self, base: usize) -> Result<u64, TableError> {
        let low = self.memory.load_u32(base + SLOT_KEY, Ordering::Relaxed)?;
        let high = self
            .memory
            .load_u32(base + SLOT_KEY + 4, Ordering::Relaxed)?;
        Ok(u64::from(high) << 32 | u64::from(low))
    }

    /// Empties the slot of `file_id` if it holds that file (a removed file
    /// must not be answered from the table). Returns whether it did.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn invalidate(&mut self, file_id: u64) -> Result<bool, TableError> {
        let set = set_index(file_id, self.slot_count);
        for index in set..set + WAYS {
            let base = slot_offset(index);
            let kind = self.memory.load_u32(base + SLOT_TYPE, Ordering::Relaxed)?;
            if kind == 0 || self.key(base)? != file_id {
                continue;
            }
            self.update(base, |memory| {
                let mut offset = SLOT_TYPE;
                while offset < SLOT_DATA_END {
                    memory.store_u32(base + offset, 0, Ordering::Relaxed)?;
                    offset += 4;
                }
                Ok(())
            })?;
            self.record(index)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Empties every slot (for example when the export's file system was
    /// replaced under the server).
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn clear(&mut self) -> Result<(), TableError> {
        for index in 0..self.slot_count {
            let base = slot_offset(index);
            if self.memory.load_u32(base + SLOT_TYPE, Ordering::Relaxed)? != 0 {
                self.update(base, |memory| {
                    memory.store_u32(base + SLOT_TYPE, 0, Ordering::Relaxed)
                })?;
            }
        }
        // Every slot may have changed: move the head a whole journal on, so
        // every reader rescans.
        self.head = self.head.wrapping_add(JOURNAL_LENGTH + 1);
        self.memory
            .store_u32(HEADER_JOURNAL_HEAD, self.head, Ordering::Release)?;
        Ok(())
    }

    /// Appends slot `index` to the change journal. The entry is stored
    /// before the head that counts it (release), so a reader that loads the
    /// head with acquire sees the entry, and the slot written before it.
    fn record(&mut self, index: u32) -> Result<(), TableError> {
        let position = self.head;
        let offset = journal_offset(self.slot_count) + (position % JOURNAL_LENGTH) as usize * 4;
        self.memory
            .store_u32(offset, journal_entry(position, index), Ordering::Relaxed)?;
        self.head = position.wrapping_add(1);
        self.memory
            .store_u32(HEADER_JOURNAL_HEAD, self.head, Ordering::Release)?;
        Ok(())
    }

    /// The seqlock write side around `write`.
    fn update(
        &mut self,
        base: usize,
        write: impl FnOnce(&M) -> Result<(), vrpc::OutOfBounds>,
    ) -> Result<(), TableError> {
        let sequence = self
            .memory
            .load_u32(base + SLOT_SEQUENCE, Ordering::Relaxed)?
            & !1;
        self.memory.store_u32(
            base + SLOT_SEQUENCE,
            sequence.wrapping_add(1),
            Ordering::Relaxed,
        )?;
        // Release fence: the odd sequence store above is ordered before
        // every field store below, so a reader that sees any new field value
        // and then re-reads the sequence (after its acquire fence) sees it
        // odd or advanced.
        fence(Ordering::Release);
        write(&self.memory)?;
        // Release store: the field stores are visible before the even
        // sequence that declares the slot consistent.
        self.memory.store_u32(
            base + SLOT_SEQUENCE,
            sequence.wrapping_add(2),
            Ordering::Release,
        )?;
        Ok(())
    }
}

/// The words of a slot holding `entry` (word 0, the sequence, left zero).
fn slot_words(entry: &Entry) -> [u32; SLOT_DATA_END / 4] {
    let mut words = [0u32; SLOT_DATA_END / 4];
    let attributes = &entry.attributes;
    let mut word = |offset: usize, value: u32| words[offset / 4] = value;
    word(SLOT_TYPE, attributes.file_type.to_u32());
    let mut pairs = [
        (SLOT_KEY, entry.file_id),
        (SLOT_HANDLE_DIGEST, entry.handle_digest),
        (SLOT_SIZE_BYTES, attributes.size),
        (SLOT_USED, attributes.used),
        (SLOT_FILE_SYSTEM_ID, attributes.file_system_id),
        (SLOT_FILE_ID, attributes.file_id),
        (SLOT_CHANGE, entry.change),
    ];
    for (offset, value) in pairs.iter_mut() {
        word(*offset, *value as u32);
        word(*offset + 4, (*value >> 32) as u32);
    }
    for (offset, value) in [
        (SLOT_MODE, attributes.mode),
        (SLOT_LINK_COUNT, attributes.link_count),
        (SLOT_UID, attributes.uid),
        (SLOT_GID, attributes.gid),
        (SLOT_DEVICE_MAJOR, attributes.device.major),
        (SLOT_DEVICE_MINOR, attributes.device.minor),
    ] {
        word(offset, value);
    }
    for (offset, time) in [
        (SLOT_ACCESS_TIME, attributes.access_time),
        (SLOT_MODIFY_TIME, attributes.modify_time),
        (SLOT_CHANGE_TIME, attributes.change_time),
    ] {
        word(offset, time.seconds);
        word(offset + 4, time.nanoseconds);
    }
    words
}
