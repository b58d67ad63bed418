//! The server's side: the single writer of a table.

use core::sync::atomic::{fence, Ordering};

use crate::layout::{
    slot_index, slot_offset, table_bytes, HEADER_BOOT_ID, HEADER_MAGIC, HEADER_SIZE,
    HEADER_SLOT_COUNT, HEADER_SLOT_SIZE, HEADER_VERSION, MAGIC, SLOT_ACCESS_TIME, SLOT_CHANGE,
    SLOT_CHANGE_TIME, SLOT_DATA_END, SLOT_DEVICE_MAJOR, SLOT_DEVICE_MINOR, SLOT_FILE_ID,
    SLOT_FILE_SYSTEM_ID, SLOT_GID, SLOT_HANDLE_DIGEST, SLOT_KEY, SLOT_LINK_COUNT, SLOT_MODE,
    SLOT_MODIFY_TIME, SLOT_SEQUENCE, SLOT_SIZE, SLOT_SIZE_BYTES, SLOT_TYPE, SLOT_UID, SLOT_USED,
    VERSION,
};
use crate::{valid_slot_count, Entry, TableError};
use vrpc::SharedMemory;

/// The writer of one table. There must be exactly one per table: the
/// seqlock protocol assumes no concurrent writers.
#[derive(Debug)]
pub struct Writer<M> {
    memory: M,
    slot_count: u32,
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
        let end = HEADER_SIZE + slot_count as usize * SLOT_SIZE;
        while offset < end {
            let length = zeros.len().min(end - offset);
            memory.write(offset, &zeros[..length])?;
            offset += length;
        }
        memory.store_u32(HEADER_VERSION, VERSION, Ordering::Relaxed)?;
        memory.store_u32(HEADER_SLOT_COUNT, slot_count, Ordering::Relaxed)?;
        memory.store_u32(HEADER_SLOT_SIZE, SLOT_SIZE as u32, Ordering::Relaxed)?;
        memory.store_u32(HEADER_BOOT_ID, boot_id as u32, Ordering::Relaxed)?;
        memory.store_u32(
            HEADER_BOOT_ID + 4,
            (boot_id >> 32) as u32,
            Ordering::Relaxed,
        )?;
        // Release: a reader that sees the magic sees the rest of the header
        // and the zeroed slots.
        memory.store_u32(HEADER_MAGIC, MAGIC, Ordering::Release)?;
        Ok(Self { memory, slot_count })
    }

    /// Slots in the table.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Publishes `entry` in its slot, replacing whatever file was there.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn publish(&mut self, entry: &Entry) -> Result<(), TableError> {
        let base = slot_offset(slot_index(entry.file_id, self.slot_count));
        let attributes = &entry.attributes;
        self.update(base, |memory| {
            let word = |offset: usize, value: u32| {
                memory.store_u32(base + offset, value, Ordering::Relaxed)
            };
            let double = |offset: usize, value: u64| {
                word(offset, value as u32)?;
                word(offset + 4, (value >> 32) as u32)
            };
            word(SLOT_TYPE, attributes.file_type.to_u32())?;
            double(SLOT_KEY, entry.file_id)?;
            double(SLOT_HANDLE_DIGEST, entry.handle_digest)?;
            word(SLOT_MODE, attributes.mode)?;
            word(SLOT_LINK_COUNT, attributes.link_count)?;
            word(SLOT_UID, attributes.uid)?;
            word(SLOT_GID, attributes.gid)?;
            double(SLOT_SIZE_BYTES, attributes.size)?;
            double(SLOT_USED, attributes.used)?;
            word(SLOT_DEVICE_MAJOR, attributes.device.major)?;
            word(SLOT_DEVICE_MINOR, attributes.device.minor)?;
            double(SLOT_FILE_SYSTEM_ID, attributes.file_system_id)?;
            double(SLOT_FILE_ID, attributes.file_id)?;
            for (offset, time) in [
                (SLOT_ACCESS_TIME, attributes.access_time),
                (SLOT_MODIFY_TIME, attributes.modify_time),
                (SLOT_CHANGE_TIME, attributes.change_time),
            ] {
                word(offset, time.seconds)?;
                word(offset + 4, time.nanoseconds)?;
            }
            double(SLOT_CHANGE, entry.change)
        })
    }

    /// Empties the slot of `file_id` if it holds that file (a removed file
    /// must not be answered from the table). Returns whether it did.
    ///
    /// # Errors
    /// [`TableError::Memory`] when the region refused an access.
    pub fn invalidate(&mut self, file_id: u64) -> Result<bool, TableError> {
        let base = slot_offset(slot_index(file_id, self.slot_count));
        // The table is written only by this writer, so reading it back is
        // reading our own data.
        let low = self.memory.load_u32(base + SLOT_KEY, Ordering::Relaxed)?;
        let high = self
            .memory
            .load_u32(base + SLOT_KEY + 4, Ordering::Relaxed)?;
        let kind = self.memory.load_u32(base + SLOT_TYPE, Ordering::Relaxed)?;
        if kind == 0 || (u64::from(high) << 32 | u64::from(low)) != file_id {
            return Ok(false);
        }
        self.update(base, |memory| {
            let mut offset = SLOT_TYPE;
            while offset < SLOT_DATA_END {
                memory.store_u32(base + offset, 0, Ordering::Relaxed)?;
                offset += 4;
            }
            Ok(())
        })?;
        Ok(true)
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
