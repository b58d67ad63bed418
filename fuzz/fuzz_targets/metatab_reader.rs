//! The guest's reader of the metadata table against a table another
//! domain writes: the storage domain (or anything that got hold of the
//! pages) may put any bytes there at any time. `Reader::attach`,
//! `lookup` and `changes_since` must never panic, loop or reach outside
//! the region; a hit must be the file asked for; the journal must name
//! only slots of the table, at most a journal's length of them.
//!
//! Input: a mode byte, a slot-count byte (`2 << (b % 5)`: 2 to 32 slots),
//! then:
//! - mode even (raw): the region's first bytes, the rest zeros; the four
//!   header words the reader checks are set right when bit 1 of the mode
//!   is set, so the rest of the input reaches the slots and the journal;
//! - mode odd (written): the table made by `metatab::Writer`, with one
//!   entry published per 16 input bytes (file id, handle digest and
//!   attributes from them) until a 0xFF byte; after it, pairs of (word
//!   index `u16`, value `u32`) overwrite words, as a hostile or torn
//!   writer would. With no overwrite, the last entry published must be
//!   found exactly as published, and the journal must name its slot.
#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};

use libfuzzer_sys::fuzz_target;
use metatab::layout::{
    table_bytes, HEADER_JOURNAL_LENGTH, HEADER_MAGIC, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE,
    HEADER_VERSION, JOURNAL_LENGTH, MAGIC, SLOT_SIZE, VERSION,
};
use metatab::{Changes, Entry, Lookup, Reader, Writer};
use nfs3::{DeviceNumbers, FileAttributes, FileType, Time};
use vrpc::{OutOfBounds, SharedMemory};

/// Memory that treats any refused access as a bug of the reader.
struct Strict<'a>(&'a [AtomicU32]);

impl Strict<'_> {
    fn check<T>(result: Result<T, OutOfBounds>) -> Result<T, OutOfBounds> {
        if let Err(error) = &result {
            panic!("the reader asked for an access outside the table: {error}");
        }
        result
    }
}

impl SharedMemory for Strict<'_> {
    fn size(&self) -> usize {
        self.0.size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        Self::check(self.0.load_u32(offset, order))
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        Self::check(self.0.store_u32(offset, value, order))
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        Self::check(self.0.read(offset, destination))
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        Self::check(self.0.write(offset, source))
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    let mut value = [0u8; 4];
    for (index, byte) in value.iter_mut().enumerate() {
        *byte = bytes.get(at + index).copied().unwrap_or(0);
    }
    u32::from_le_bytes(value)
}

/// An entry made of 16 input bytes (ids spread so they collide often in
/// a small table).
fn entry(bytes: &[u8]) -> Entry {
    let first = word(bytes, 0);
    let second = word(bytes, 4);
    let third = word(bytes, 8);
    let fourth = word(bytes, 12);
    let file_id = u64::from(first % 64);
    Entry {
        file_id,
        handle_digest: u64::from(second) << 32 | u64::from(first),
        attributes: FileAttributes {
            file_type: FileType::from_u32(1 + third % 7).unwrap_or(FileType::Regular),
            mode: third >> 3,
            link_count: fourth & 0xFF,
            uid: fourth >> 8,
            gid: second,
            size: u64::from(fourth) << 20,
            used: u64::from(third),
            device: DeviceNumbers {
                major: first,
                minor: second,
            },
            file_system_id: 1,
            file_id,
            access_time: Time {
                seconds: first,
                nanoseconds: second,
            },
            modify_time: Time {
                seconds: third,
                nanoseconds: fourth,
            },
            change_time: Time {
                seconds: fourth,
                nanoseconds: third,
            },
        },
        change: u64::from(fourth) << 8 | u64::from(third & 0xFF),
    }
}

/// Everything a guest does with a table; `expected`: the last entry
/// published, when nothing overwrote the table.
fn read_all(region: &[AtomicU32], ids: &[u8], expected: Option<&Entry>) {
    let Ok(reader) = Reader::attach(Strict(region)) else {
        assert!(expected.is_none(), "a table the writer made does not attach");
        return;
    };
    let slot_count = reader.slot_count();
    assert!(table_bytes(slot_count) <= region.size());
    let mut asked: Vec<(u64, u64)> = ids
        .chunks(4)
        .map(|chunk| {
            let id = word(chunk, 0);
            (u64::from(id % 64), u64::from(id))
        })
        .take(64)
        .collect();
    if let Some(entry) = expected {
        asked.push((entry.file_id, entry.handle_digest));
    }
    for (file_id, digest) in asked {
        match reader.lookup(file_id, digest).expect("lookup in a checked region") {
            Lookup::Hit(found) => {
                assert_eq!(found.file_id, file_id, "a hit for another file");
                assert_eq!(found.handle_digest, digest, "a hit for another handle");
            }
            Lookup::Miss | Lookup::Busy => {}
        }
    }
    if let Some(entry) = expected {
        assert_eq!(
            reader.lookup(entry.file_id, entry.handle_digest),
            Ok(Lookup::Hit(entry.clone())),
            "the entry just published"
        );
    }
    let head = reader.journal_head().expect("head");
    let mut cursors = vec![0, head, head.wrapping_sub(1), head.wrapping_sub(JOURNAL_LENGTH)];
    cursors.extend(ids.chunks(4).take(4).map(|chunk| word(chunk, 0)));
    for cursor in cursors {
        let mut count = 0u32;
        let mut named = Vec::new();
        let changes = reader
            .changes_since(cursor, |slot| {
                assert!(slot < slot_count, "the journal named slot {slot}");
                count += 1;
                assert!(count <= JOURNAL_LENGTH, "more changes than the journal holds");
                named.push(slot);
            })
            .expect("journal in a checked region");
        if let (Some(entry), 0, Changes::Slots { .. }) = (expected, cursor, changes) {
            let set = reader.slot_of(entry.file_id);
            if head <= JOURNAL_LENGTH {
                assert!(
                    named.iter().any(|&slot| slot == set || slot == set + 1),
                    "the journal does not name the slot just published"
                );
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&[mode, slots], rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let slot_count = 2u32 << (slots % 5);
    let bytes = table_bytes(slot_count);
    let region: Vec<AtomicU32> = (0..bytes / 4).map(|_| AtomicU32::new(0)).collect();
    if mode & 1 == 0 {
        let image = &rest[..rest.len().min(bytes)];
        region
            .write(0, image)
            .expect("the image fits the region");
        if mode & 2 != 0 {
            for (offset, value) in [
                (HEADER_MAGIC, MAGIC),
                (HEADER_VERSION, VERSION),
                (HEADER_SLOT_SIZE, SLOT_SIZE as u32),
                (HEADER_JOURNAL_LENGTH, JOURNAL_LENGTH),
                (HEADER_SLOT_COUNT, slot_count),
            ] {
                region
                    .store_u32(offset, value, Ordering::Relaxed)
                    .expect("header word");
            }
        }
        read_all(&region, rest, None);
        return;
    }
    let mut writer = Writer::create(&region[..], slot_count, 7).expect("a table");
    let (entries, overwrites) = match rest.iter().position(|&byte| byte == 0xFF) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let mut last = None;
    for chunk in entries.chunks(16).take(4096) {
        let published = entry(chunk);
        writer.publish(&published).expect("publish");
        last = Some(published);
    }
    if let Some(overwrites) = overwrites {
        for pair in overwrites.chunks_exact(6) {
            let index = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (bytes / 4);
            region[index].store(word(pair, 2), Ordering::Relaxed);
        }
    }
    let expected = if overwrites.is_some_and(|overwrites| overwrites.len() >= 6) {
        None
    } else {
        last.as_ref()
    };
    read_all(&region, entries, expected);
});
