//! Block devices for tests and tools: in memory, and one that records
//! every write and flush so tests can replay any prefix as a crash.

use crate::layout::BLOCK_SIZE;
use crate::{BlockDevice, DeviceError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A device held in memory; unwritten blocks read as zeros.
#[derive(Clone, Debug, Default)]
pub struct MemoryDevice {
    blocks: BTreeMap<u64, Box<[u8; BLOCK_SIZE]>>,
    block_count: u64,
}

impl MemoryDevice {
    /// A zeroed device of `block_count` blocks.
    pub fn new(block_count: u64) -> Self {
        MemoryDevice {
            blocks: BTreeMap::new(),
            block_count,
        }
    }

    /// A device holding `image` (padded with zeros to whole blocks).
    pub fn from_image(image: &[u8]) -> Self {
        let mut device = MemoryDevice::new(image.len().div_ceil(BLOCK_SIZE) as u64);
        for (index, chunk) in image.chunks(BLOCK_SIZE).enumerate() {
            let mut block = Box::new([0u8; BLOCK_SIZE]);
            block[..chunk.len()].copy_from_slice(chunk);
            device.blocks.insert(index as u64, block);
        }
        device
    }

    /// The whole device as bytes.
    pub fn to_image(&self) -> Vec<u8> {
        let mut image = alloc::vec![0u8; self.block_count as usize * BLOCK_SIZE];
        for (&index, block) in &self.blocks {
            let at = index as usize * BLOCK_SIZE;
            image[at..at + BLOCK_SIZE].copy_from_slice(&block[..]);
        }
        image
    }
}

impl BlockDevice for MemoryDevice {
    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if block >= self.block_count {
            return Err(DeviceError::OutOfRange);
        }
        match self.blocks.get(&block) {
            Some(data) => buffer.copy_from_slice(&data[..]),
            None => buffer.fill(0),
        }
        Ok(())
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if block >= self.block_count {
            return Err(DeviceError::OutOfRange);
        }
        self.blocks.insert(block, Box::new(*data));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// One recorded device event.
#[derive(Clone, Debug)]
pub enum Event {
    /// A block write.
    Write(u64, Box<[u8; BLOCK_SIZE]>),
    /// A flush barrier.
    Flush,
}

/// A device that applies writes to a [`MemoryDevice`] and records them,
/// so a test can rebuild the device as a crash would have left it.
#[derive(Clone, Debug)]
pub struct RecordingDevice {
    /// The device state with every write applied.
    pub current: MemoryDevice,
    /// The state when recording started.
    pub base: MemoryDevice,
    /// Every write and flush since then.
    pub events: Vec<Event>,
}

impl RecordingDevice {
    /// Start recording on top of `base`.
    pub fn new(base: MemoryDevice) -> Self {
        RecordingDevice {
            current: base.clone(),
            base,
            events: Vec::new(),
        }
    }

    /// Indexes of the flush events.
    pub fn flush_points(&self) -> Vec<usize> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, event)| matches!(event, Event::Flush))
            .map(|(index, _)| index)
            .collect()
    }

    /// The device after a crash: every event before `cut` applied, and of
    /// the writes after the last flush before `cut`, only those `keep`
    /// chooses (writes not yet flushed may or may not have reached media).
    pub fn crash_image(&self, cut: usize, mut keep: impl FnMut(usize) -> bool) -> MemoryDevice {
        let mut device = self.base.clone();
        let last_flush = self.events[..cut.min(self.events.len())]
            .iter()
            .rposition(|event| matches!(event, Event::Flush))
            .map_or(0, |index| index + 1);
        for (index, event) in self.events.iter().enumerate().take(cut) {
            if let Event::Write(block, data) = event {
                if index < last_flush || keep(index) {
                    let _ = device.write_block(*block, data);
                }
            }
        }
        device
    }
}

impl BlockDevice for RecordingDevice {
    fn block_count(&self) -> u64 {
        self.current.block_count()
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.current.read_block(block, buffer)
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.current.write_block(block, data)?;
        self.events.push(Event::Write(block, Box::new(*data)));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.events.push(Event::Flush);
        Ok(())
    }
}
