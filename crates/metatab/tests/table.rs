//! The metadata table: publish, look up, collide, invalidate, attach
//! checks, and a concurrent writer/reader stress test that never accepts a
//! torn slot.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use metatab::layout::{set_index, slot_offset, table_bytes, HEADER_MAGIC, HEADER_SLOT_COUNT};
use metatab::{handle_digest, Entry, Lookup, Reader, TableError, Writer};
use nfs3::{DeviceNumbers, FileAttributes, FileType, Time};
use vrpc::SharedMemory;

fn region(bytes: usize) -> Vec<AtomicU32> {
    (0..bytes / 4).map(|_| AtomicU32::new(0)).collect()
}

/// An entry whose every field derives from `(file_id, generation)`, so a
/// mix of two generations is detectable.
fn entry(file_id: u64, generation: u32) -> Entry {
    let g = generation;
    let wide = u64::from(g) << 32 | u64::from(!g);
    Entry {
        file_id,
        handle_digest: handle_digest(&file_id.to_be_bytes()),
        attributes: FileAttributes {
            file_type: FileType::ALL[(g % 7) as usize],
            mode: g,
            link_count: g ^ 0x5555,
            uid: g.wrapping_mul(3),
            gid: g.wrapping_mul(5),
            size: wide,
            used: wide.rotate_left(7),
            device: DeviceNumbers {
                major: g.wrapping_add(1),
                minor: g.wrapping_add(2),
            },
            file_system_id: wide ^ 0xabcdef,
            file_id,
            access_time: Time {
                seconds: g,
                nanoseconds: g % 1_000_000_000,
            },
            modify_time: Time {
                seconds: g.wrapping_add(9),
                nanoseconds: 1,
            },
            change_time: Time {
                seconds: g.wrapping_add(10),
                nanoseconds: 2,
            },
        },
        change: u64::from(g) * 1000 + file_id,
    }
}

fn generation_of(found: &Entry) -> u32 {
    found.attributes.mode
}

#[test]
fn publish_lookup_collide_invalidate() {
    let memory = region(table_bytes(64));
    let mut writer = Writer::create(&memory[..], 64, 0x1234_5678_9abc_def0).unwrap();
    let reader = Reader::attach(&memory[..]).unwrap();
    assert_eq!(reader.boot_id(), 0x1234_5678_9abc_def0);
    assert_eq!(reader.slot_count(), 64);
    let first = entry(42, 7);
    assert_eq!(
        reader.lookup(42, first.handle_digest).unwrap(),
        Lookup::Miss
    );
    writer.publish(&first).unwrap();
    assert_eq!(
        reader.lookup(42, first.handle_digest).unwrap(),
        Lookup::Hit(first.clone())
    );
    assert_eq!(
        reader.lookup(42, first.handle_digest ^ 1).unwrap(),
        Lookup::Miss,
        "other handle"
    );
    // Another file id of the same set takes the set's other slot: both
    // are found. A third evicts the one published least recently.
    let mut colliding = (43..).filter(|id| set_index(*id, 64) == set_index(42, 64));
    let (other, third) = (colliding.next().unwrap(), colliding.next().unwrap());
    let second = entry(other, 8);
    writer.publish(&second).unwrap();
    assert_eq!(
        reader.lookup(42, first.handle_digest).unwrap(),
        Lookup::Hit(first.clone())
    );
    assert_eq!(
        reader.lookup(other, second.handle_digest).unwrap(),
        Lookup::Hit(second.clone())
    );
    writer.publish(&first).unwrap(); // 42 is now the more recent one.
    let third_entry = entry(third, 1);
    writer.publish(&third_entry).unwrap();
    assert_eq!(
        reader.lookup(other, second.handle_digest).unwrap(),
        Lookup::Miss,
        "the least recently published is evicted"
    );
    assert_eq!(
        reader.lookup(42, first.handle_digest).unwrap(),
        Lookup::Hit(first.clone())
    );
    assert!(writer.invalidate(third).unwrap());
    writer.publish(&second).unwrap();
    assert!(writer.invalidate(42).unwrap());
    // Invalidating a file that is not in its slot does nothing.
    assert!(!writer.invalidate(42).unwrap());
    assert_eq!(
        reader.lookup(other, second.handle_digest).unwrap(),
        Lookup::Hit(second.clone())
    );
    assert!(writer.invalidate(other).unwrap());
    assert_eq!(
        reader.lookup(other, second.handle_digest).unwrap(),
        Lookup::Miss
    );
    // An update changes the change counter.
    writer.publish(&entry(42, 9)).unwrap();
    let Lookup::Hit(found) = reader.lookup(42, first.handle_digest).unwrap() else {
        panic!()
    };
    assert_ne!(found.change, first.change);
    writer.clear().unwrap();
    assert_eq!(
        reader.lookup(42, first.handle_digest).unwrap(),
        Lookup::Miss
    );
}

#[test]
fn slot_being_written_is_busy() {
    let memory = region(table_bytes(16));
    let mut writer = Writer::create(&memory[..], 16, 1).unwrap();
    let reader = Reader::attach(&memory[..]).unwrap();
    let published = entry(5, 3);
    writer.publish(&published).unwrap();
    let sequence = slot_offset(set_index(5, 16));
    let value = memory.load_u32(sequence, Ordering::Relaxed).unwrap();
    assert_eq!(value % 2, 0);
    memory
        .store_u32(sequence, value + 1, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        reader.lookup(5, published.handle_digest).unwrap(),
        Lookup::Busy
    );
}

#[test]
fn attach_validates_the_header() {
    let memory = region(table_bytes(16));
    assert_eq!(
        Reader::attach(&memory[..]).err(),
        Some(TableError::BadHeader),
        "unformatted"
    );
    Writer::create(&memory[..], 16, 1).unwrap();
    memory
        .store_u32(HEADER_SLOT_COUNT, 1 << 20, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        Reader::attach(&memory[..]).err(),
        Some(TableError::BadSlotCount)
    );
    memory
        .store_u32(HEADER_SLOT_COUNT, 64, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        Reader::attach(&memory[..]).err(),
        Some(TableError::RegionTooSmall)
    );
    memory
        .store_u32(HEADER_SLOT_COUNT, 16, Ordering::Relaxed)
        .unwrap();
    memory
        .store_u32(HEADER_MAGIC, 0, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        Reader::attach(&memory[..]).err(),
        Some(TableError::BadHeader)
    );
    assert_eq!(
        Writer::create(&memory[..], 12, 1).err(),
        Some(TableError::BadSlotCount)
    );
    assert_eq!(
        Writer::create(&memory[..], 64, 1).err(),
        Some(TableError::RegionTooSmall)
    );
}

#[test]
fn garbage_table_never_panics() {
    let memory = region(table_bytes(8));
    Writer::create(&memory[..], 8, 1).unwrap();
    let reader = Reader::attach(&memory[..]).unwrap();
    let mut state = 0x9e37_79b9_u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = 64 + (state as usize % (8 * 128 / 4)) * 4;
        memory
            .store_u32(offset, (state >> 32) as u32 & 0xff, Ordering::Relaxed)
            .unwrap();
        let _ = reader.lookup(state % 16, state >> 40).unwrap();
    }
}

/// One writer thread rewrites a few files (more files than slots, so slots
/// also change owners) while readers look them up; every accepted copy
/// must be one whole generation of one file.
#[test]
fn concurrent_readers_never_see_a_torn_slot() {
    const SLOTS: u32 = 4;
    const FILES: u64 = 6;
    let memory = region(table_bytes(SLOTS));
    let mut writer = Writer::create(&memory[..], SLOTS, 77).unwrap();
    let done = AtomicBool::new(false);
    let hits = AtomicU64::new(0);
    let busy = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for reader_number in 0..2u64 {
            let (memory, done, hits, busy) = (&memory, &done, &hits, &busy);
            scope.spawn(move || {
                let reader = Reader::attach(&memory[..]).unwrap();
                let mut file = reader_number;
                while !done.load(Ordering::Relaxed) {
                    file = (file + 1) % FILES;
                    let digest = handle_digest(&file.to_be_bytes());
                    match reader.lookup(file, digest).unwrap() {
                        Lookup::Hit(found) => {
                            assert_eq!(found, entry(file, generation_of(&found)), "torn slot");
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        Lookup::Busy => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        Lookup::Miss => {}
                    }
                }
            });
        }
        // At least 300,000 updates, and on until the readers (who may be
        // scheduled late on a busy machine) have accepted some copies.
        let start = std::time::Instant::now();
        let mut generation = 0u32;
        while generation < 300_000
            || (hits.load(Ordering::Relaxed) < 1000 && start.elapsed().as_secs() < 60)
        {
            let file = u64::from(generation) % FILES;
            writer.publish(&entry(file, generation)).unwrap();
            if generation % 1000 == 999 {
                writer.invalidate(file).unwrap();
            }
            generation = generation.wrapping_add(1);
        }
        done.store(true, Ordering::Relaxed);
    });
    let hits = hits.load(Ordering::Relaxed);
    eprintln!("hits {hits}, busy {}", busy.load(Ordering::Relaxed));
    assert!(hits > 0, "readers saw published slots");
}

/// Every slot a change was written to, in order, since `cursor`.
fn journal(reader: &Reader<&[AtomicU32]>, cursor: &mut u32) -> Result<Vec<u32>, u32> {
    let mut slots = Vec::new();
    match reader
        .changes_since(*cursor, |slot| slots.push(slot))
        .unwrap()
    {
        metatab::Changes::Slots { head } => {
            *cursor = head;
            Ok(slots)
        }
        metatab::Changes::Overrun { head } => {
            *cursor = head;
            Err(head)
        }
    }
}

#[test]
fn the_journal_names_every_changed_slot_once_per_change() {
    const SLOTS: u32 = 64;
    let memory = region(table_bytes(SLOTS));
    let mut writer = Writer::create(&memory[..], SLOTS, 7).unwrap();
    let reader = Reader::attach(&memory[..]).unwrap();
    let mut cursor = reader.journal_head().unwrap();
    assert_eq!(journal(&reader, &mut cursor), Ok(vec![]));

    writer.publish(&entry(5, 1)).unwrap();
    writer.publish(&entry(9, 1)).unwrap();
    assert_eq!(
        journal(&reader, &mut cursor),
        Ok(vec![set_index(5, SLOTS), set_index(9, SLOTS)])
    );
    assert_eq!(reader.slot_of(5), set_index(5, SLOTS));

    // Publishing what the slot already holds (the server does on every
    // read of the attributes) changes nothing and records nothing.
    let sequence = memory
        .load_u32(slot_offset(set_index(5, SLOTS)), Ordering::Relaxed)
        .unwrap();
    writer.publish(&entry(5, 1)).unwrap();
    assert_eq!(journal(&reader, &mut cursor), Ok(vec![]));
    assert_eq!(
        memory
            .load_u32(slot_offset(set_index(5, SLOTS)), Ordering::Relaxed)
            .unwrap(),
        sequence,
        "an identical publish must not touch the slot"
    );

    // A new generation and an invalidation are changes; invalidating a
    // file the slot does not hold is not.
    writer.publish(&entry(5, 2)).unwrap();
    assert!(writer.invalidate(9).unwrap());
    assert!(!writer.invalidate(9).unwrap());
    assert_eq!(
        journal(&reader, &mut cursor),
        Ok(vec![set_index(5, SLOTS), set_index(9, SLOTS)])
    );

    // Exactly a journal's worth is still complete; one more is an overrun.
    for generation in 0..metatab::layout::JOURNAL_LENGTH {
        writer.publish(&entry(3, generation + 10)).unwrap();
    }
    let all = journal(&reader, &mut cursor).unwrap();
    assert_eq!(all.len(), metatab::layout::JOURNAL_LENGTH as usize);
    assert!(all.iter().all(|slot| *slot == set_index(3, SLOTS)));
    for generation in 0..=metatab::layout::JOURNAL_LENGTH {
        writer.publish(&entry(3, generation + 5000)).unwrap();
    }
    assert!(journal(&reader, &mut cursor).is_err(), "overrun");
    assert_eq!(journal(&reader, &mut cursor), Ok(vec![]), "resumes at head");

    // Clearing the table makes every reader rescan.
    writer.clear().unwrap();
    assert!(journal(&reader, &mut cursor).is_err());
}

#[test]
fn an_entry_overwritten_while_reading_is_an_overrun() {
    const SLOTS: u32 = 16;
    let memory = region(table_bytes(SLOTS));
    let mut writer = Writer::create(&memory[..], SLOTS, 7).unwrap();
    let reader = Reader::attach(&memory[..]).unwrap();
    writer.publish(&entry(1, 1)).unwrap();
    writer.publish(&entry(2, 1)).unwrap();
    // The writer lapped the reader's position 1 after it loaded the head:
    // the entry there carries the next lap.
    let journal_base = metatab::layout::journal_offset(SLOTS);
    memory
        .store_u32(
            journal_base + 4,
            metatab::layout::journal_entry(1 + metatab::layout::JOURNAL_LENGTH, 3),
            Ordering::Relaxed,
        )
        .unwrap();
    let mut cursor = 0;
    assert!(journal(&reader, &mut cursor).is_err());
    // A slot index out of range is never passed on.
    memory
        .store_u32(
            journal_base,
            metatab::layout::journal_entry(0, SLOTS + 3),
            Ordering::Relaxed,
        )
        .unwrap();
    let mut cursor = 0;
    assert!(journal(&reader, &mut cursor).is_err());
    // Garbage heads and entries never panic.
    let mut state = 0x1234_5678_u64;
    for _ in 0..5_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = (state % (metatab::layout::JOURNAL_LENGTH as u64 + 1)) as usize;
        let offset = if word == 0 {
            metatab::layout::HEADER_JOURNAL_HEAD
        } else {
            journal_base + (word - 1) * 4
        };
        memory
            .store_u32(offset, (state >> 32) as u32, Ordering::Relaxed)
            .unwrap();
        let mut cursor = (state >> 20) as u32;
        let _ = journal(&reader, &mut cursor);
    }
}
