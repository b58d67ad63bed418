//! Damaged images, a full disk, space accounting and very large offsets.

mod common;

use common::*;
use sdfs::device::MemoryDevice;
use sdfs::{Volume, BLOCK_SIZE};
use vfs::{FileSystem, FsError, InodeId, NewNode, Ownership, SetAttributes};

const OWNER: Ownership = Ownership {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

/// A small populated image.
fn populated() -> Vec<u8> {
    let mut volume = Volume::open(formatted(512), clock(), 1 << 20).unwrap();
    let mut random = Random(42);
    let mut tree = dump(&mut volume);
    for _ in 0..120 {
        let (directories, files) = targets(&tree);
        random_operation(&mut volume, &mut random, &directories, &files);
        tree = dump(&mut volume);
    }
    volume.commit().unwrap();
    volume.into_device().to_image()
}

/// Open, walk and fsck a damaged image: any outcome but a panic or hang is
/// acceptable, and fsck must not call a damaged image clean when the
/// damage hit a block the file system uses.
fn exercise(image: &[u8]) {
    let _ = sdfs::fsck(MemoryDevice::from_image(image), clock());
    if let Ok(mut volume) = Volume::open(MemoryDevice::from_image(image), clock(), 1 << 16) {
        let mut stack = vec![volume.root()];
        let mut visited = 0;
        while let Some(directory) = stack.pop() {
            visited += 1;
            if visited > 10_000 {
                break;
            }
            let Ok(page) = volume.readdir(directory, 0, 1000) else {
                continue;
            };
            for entry in page.entries {
                let mut buffer = vec![0u8; 70_000];
                let _ = volume.read(entry.inode, 0, &mut buffer);
                let _ = volume.readlink(entry.inode);
                if volume.getattr(entry.inode).map(|a| a.file_type) == Ok(vfs::FileType::Directory)
                {
                    stack.push(entry.inode);
                }
            }
        }
        let _ = volume.create(volume.root(), b"after-damage", &NewNode::Regular, &OWNER);
        let _ = volume.commit();
    }
}

#[test]
fn damaged_images_give_errors_not_panics() {
    let image = populated();
    let mut random = Random(7);
    let used_blocks: Vec<usize> = (0..image.len() / BLOCK_SIZE)
        .filter(|&block| {
            image[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                .iter()
                .any(|&b| b != 0)
        })
        .collect();
    let rounds = env_number("SDFS_CORRUPTION_ROUNDS", 300);
    let mut detected = 0;
    for round in 0..rounds {
        let mut damaged = image.clone();
        let block = used_blocks[random.below(used_blocks.len() as u64) as usize];
        match round % 3 {
            0 => {
                let at = block * BLOCK_SIZE + random.below(BLOCK_SIZE as u64) as usize;
                damaged[at] ^= 1 << random.below(8);
            }
            1 => {
                let at = block * BLOCK_SIZE + random.below(BLOCK_SIZE as u64 - 8) as usize;
                damaged[at..at + 8].copy_from_slice(&random.next().to_le_bytes());
            }
            _ => damaged.truncate(random.below(image.len() as u64) as usize),
        }
        exercise(&damaged);
        if !sdfs::fsck(MemoryDevice::from_image(&damaged), clock()).is_clean() {
            detected += 1;
        }
    }
    // Damage to a used block (metadata is checksummed; data blocks are
    // not) is mostly caught; the point here is that nothing panicked.
    assert!(
        detected > rounds / 3,
        "only {detected} of {rounds} damaged images were reported"
    );
}

/// Forged images: metadata damaged and then resealed with valid
/// checksums, so every decoder and tree walk meets hostile values (huge
/// counts, loops, out-of-range blocks, wrong types). Nothing may panic or
/// hang; fsck must not call an image clean if the volume refuses to open.
/// `SDFS_FORGED_ROUNDS` (default 400).
#[test]
fn forged_images_with_valid_checksums_give_errors_not_panics() {
    let image = populated();
    let mut random = Random(11);
    let metadata_blocks: Vec<usize> = (0..image.len() / BLOCK_SIZE)
        .filter(|&block| {
            let bytes = &image[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
            [&b"SDFS"[..], b"SDIX", b"SDLF", b"SDRC", b"SDST"]
                .iter()
                .any(|magic| bytes.starts_with(magic))
        })
        .collect();
    let rounds = env_number("SDFS_FORGED_ROUNDS", 400);
    let mut refused = 0;
    for _ in 0..rounds {
        let mut forged = image.clone();
        for _ in 0..1 + random.below(3) {
            let block = metadata_blocks[random.below(metadata_blocks.len() as u64) as usize];
            // Past the magic, mostly within the first few hundred bytes
            // where headers, attributes and counts live.
            let span = if random.chance(70) {
                400
            } else {
                BLOCK_SIZE as u64 - 16
            };
            let at = block * BLOCK_SIZE + 8 + random.below(span) as usize;
            match random.below(4) {
                0 => forged[at] ^= 1 << random.below(8),
                1 => forged[at] = random.next() as u8,
                2 => forged[at..at + 8].copy_from_slice(&random.next().to_le_bytes()),
                _ => {
                    // A small plausible number: a block, inode or count.
                    let value = random.below(image.len() as u64 / BLOCK_SIZE as u64 + 4);
                    forged[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
        }
        reseal(&mut forged);
        exercise(&forged);
        let opens = Volume::open(MemoryDevice::from_image(&forged), clock(), 1 << 16).is_ok();
        let clean = sdfs::fsck(MemoryDevice::from_image(&forged), clock()).is_clean();
        assert!(
            opens || !clean,
            "fsck called an image clean that does not open"
        );
        if !opens {
            refused += 1;
        }
    }
    assert!(refused > 0, "no forged image was refused");
}

#[test]
fn foreign_and_empty_images_are_named() {
    let zeros = vec![0u8; 64 * BLOCK_SIZE];
    let error = Volume::open(MemoryDevice::from_image(&zeros), clock(), 0).unwrap_err();
    assert!(
        matches!(&error, FsError::Corrupt(text) if text.contains("not an sdfs image")),
        "{error}"
    );
    let mut truncated = populated();
    truncated.truncate(100 * BLOCK_SIZE);
    let error = Volume::open(MemoryDevice::from_image(&truncated), clock(), 0).unwrap_err();
    assert!(
        matches!(&error, FsError::Corrupt(text) if text.contains("truncated")),
        "{error}"
    );
}

#[test]
fn space_returns_exactly_after_deleting_everything() {
    let mut volume = Volume::open(formatted(2048), clock(), 1 << 20).unwrap();
    volume.commit().unwrap();
    let before = volume.statfs().unwrap();
    let root = volume.root();
    let directory = volume
        .create(root, b"d", &NewNode::Directory, &OWNER)
        .unwrap()
        .inode;
    for index in 0..50u32 {
        let name = format!("file-{index}");
        let file = volume
            .create(directory, name.as_bytes(), &NewNode::Regular, &OWNER)
            .unwrap()
            .inode;
        volume
            .write(file, u64::from(index) * 1000, &vec![index as u8; 9000])
            .unwrap();
        if index % 7 == 0 {
            volume.commit().unwrap();
        }
    }
    volume.commit().unwrap();
    assert!(volume.statfs().unwrap().free_blocks < before.free_blocks);
    for index in 0..50u32 {
        volume
            .unlink(directory, format!("file-{index}").as_bytes())
            .unwrap();
    }
    volume.rmdir(root, b"d").unwrap();
    volume.commit().unwrap();
    // One more commit so blocks freed by the last one are counted free.
    let after = volume.statfs().unwrap();
    assert_eq!(after.free_blocks, before.free_blocks);
    assert_eq!(after.free_inodes, before.free_inodes);
    let report = sdfs::fsck(volume.into_device(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_what_was_written() {
    let mut volume = Volume::open(formatted(256), clock(), 1 << 20).unwrap();
    let root = volume.root();
    let keep = volume
        .create(root, b"keep", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    volume.write(keep, 0, b"precious").unwrap();
    volume.commit().unwrap();
    let filler = volume
        .create(root, b"filler", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    let chunk = vec![0xAB; 64 * 1024];
    let mut offset = 0;
    let error = loop {
        match volume.write(filler, offset, &chunk) {
            Ok(_) => offset += chunk.len() as u64,
            Err(error) => break error,
        }
        assert!(offset < 2 << 20, "a 1 MiB disk accepted 2 MiB");
    };
    assert_eq!(error, FsError::NoSpace);
    let size_before = volume.getattr(filler).unwrap().size;
    assert_eq!(size_before, offset, "a failed write changed the file");
    let mut created = 0;
    while volume
        .create(
            root,
            format!("n{created}").as_bytes(),
            &NewNode::Regular,
            &OWNER,
        )
        .is_ok()
    {
        created += 1;
        assert!(created < 10_000);
    }
    volume.commit().expect("a commit always fits after NoSpace");
    let mut buffer = [0u8; 8];
    volume.read(keep, 0, &mut buffer).unwrap();
    assert_eq!(&buffer, b"precious");
    let device = volume.into_device();
    let report = sdfs::fsck(device.clone(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);
    let mut reopened = Volume::open(device, clock(), 1 << 20).unwrap();
    assert_eq!(reopened.getattr(filler).unwrap().size, offset);
    // Deleting frees the space again.
    reopened.unlink(root, b"filler").unwrap();
    reopened.commit().unwrap();
    reopened
        .create(root, b"again", &NewNode::Regular, &OWNER)
        .unwrap();
}

#[test]
fn huge_sparse_offsets_and_zeros_after_shrink() {
    let mut volume = Volume::open(formatted(1024), clock(), 1 << 20).unwrap();
    let root = volume.root();
    let file = volume
        .create(root, b"sparse", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    let far = (1u64 << 62) - 10;
    volume.write(file, far, b"0123456789").unwrap();
    assert_eq!(
        volume.write(file, far + 1, b"0123456789"),
        Err(FsError::FileTooBig)
    );
    volume.write(file, 5000, &[9u8; 10_000]).unwrap();
    volume
        .setattr(
            file,
            &SetAttributes {
                size: Some(6000),
                ..Default::default()
            },
        )
        .unwrap();
    volume
        .setattr(
            file,
            &SetAttributes {
                size: Some(20_000),
                ..Default::default()
            },
        )
        .unwrap();
    volume.commit().unwrap();
    let mut reopened = Volume::open(volume.into_device(), clock(), 1 << 20).unwrap();
    let mut buffer = vec![1u8; 20_000];
    assert_eq!(reopened.read(file, 0, &mut buffer).unwrap(), 20_000);
    assert!(buffer[..5000].iter().all(|&b| b == 0));
    assert!(buffer[5000..6000].iter().all(|&b| b == 9));
    assert!(
        buffer[6000..].iter().all(|&b| b == 0),
        "old data reappeared past a shrink"
    );
    // Only file block 1 (bytes 4096..8192) survives the shrink to 6000.
    assert_eq!(
        reopened.getattr(InodeId(file.0)).unwrap().used,
        BLOCK_SIZE as u64
    );
}

/// A file written in order stays one run however long it is, and reopens.
/// `SDFS_LARGE_FILE_MIB` (default 48) sets its size; 600 or more
/// reproduces a since-fixed bug where such a volume no longer opened.
#[test]
fn a_large_sequential_file_survives_a_remount() {
    let mebibytes = env_number("SDFS_LARGE_FILE_MIB", 48);
    // Room for the data plus what each write reserves for its record.
    let blocks = mebibytes * 264 + 1024;
    let mut volume = Volume::open(formatted(blocks), clock(), 1 << 20).unwrap();
    let root = volume.root();
    let file = volume
        .create(root, b"large", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    let mut chunk = vec![0u8; 1 << 20];
    for index in 0..mebibytes {
        chunk.fill(index as u8 ^ 0x5a);
        volume.write(file, index << 20, &chunk).unwrap();
    }
    volume.commit().unwrap();
    let mut reopened = Volume::open(volume.into_device(), clock(), 1 << 20).unwrap();
    assert_eq!(reopened.getattr(file).unwrap().size, mebibytes << 20);
    let mut buffer = vec![0u8; 1 << 20];
    for index in [0, mebibytes / 2, mebibytes - 1] {
        assert_eq!(
            reopened.read(file, index << 20, &mut buffer).unwrap(),
            1 << 20
        );
        assert!(buffer.iter().all(|&byte| byte == index as u8 ^ 0x5a));
    }
    assert!(sdfs::fsck(reopened.into_device(), clock()).is_clean());
}

#[test]
fn reused_inodes_get_new_generations_across_remounts() {
    let mut volume = Volume::open(formatted(256), clock(), 1 << 20).unwrap();
    let root = volume.root();
    let first = volume
        .create(root, b"x", &NewNode::Regular, &OWNER)
        .unwrap();
    volume.commit().unwrap();
    volume.unlink(root, b"x").unwrap();
    volume.commit().unwrap();
    let mut volume = Volume::open(volume.into_device(), clock(), 1 << 20).unwrap();
    assert_eq!(
        volume.getattr_checked(first.inode, first.generation),
        Err(FsError::Stale)
    );
    let second = volume
        .create(root, b"y", &NewNode::Regular, &OWNER)
        .unwrap();
    assert_eq!(second.inode, first.inode);
    assert!(second.generation > first.generation);
}

#[test]
fn snapshots_keep_old_data_and_give_space_back_on_delete() {
    let mut volume = Volume::open(formatted(2048), clock(), 1 << 20).unwrap();
    volume.commit().unwrap();
    let empty = volume.statfs().unwrap().free_blocks;
    let root = volume.root();
    let file = volume
        .create(root, b"f", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    volume.write(file, 0, &vec![1u8; 100_000]).unwrap();
    volume.snapshot_create(b"before").unwrap();
    assert_eq!(
        volume.snapshot_create(b"before").unwrap_err(),
        FsError::Exists
    );
    volume.write(file, 0, &vec![2u8; 100_000]).unwrap();
    volume.unlink(root, b"f").unwrap();
    volume.commit().unwrap();
    // The snapshot still holds the first version, so space is not back yet.
    assert!(volume.statfs().unwrap().free_blocks < empty - 20);
    let device = volume.into_device();
    let mut view = Volume::open_snapshot(device.clone(), clock(), 1 << 20, b"before").unwrap();
    let mut buffer = vec![0u8; 100_000];
    let inode = view.lookup(view.root(), b"f").unwrap().inode;
    view.read(inode, 0, &mut buffer).unwrap();
    assert!(buffer.iter().all(|&b| b == 1));
    assert_eq!(view.unlink(view.root(), b"f"), Err(FsError::ReadOnly));
    assert_eq!(view.write(inode, 0, b"x"), Err(FsError::ReadOnly));
    assert!(matches!(
        Volume::open_snapshot(device.clone(), clock(), 0, b"nope"),
        Err(FsError::NotFound)
    ));
    let report = sdfs::fsck(device.clone(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);

    let mut volume = Volume::open(device, clock(), 1 << 20).unwrap();
    assert_eq!(volume.snapshots().len(), 1);
    volume.snapshot_delete(b"before").unwrap();
    assert_eq!(volume.snapshot_delete(b"before"), Err(FsError::NotFound));
    assert_eq!(volume.statfs().unwrap().free_blocks, empty);
    let device = volume.into_device();
    let report = sdfs::fsck(device.clone(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);
    let mut reopened = Volume::open(device, clock(), 1 << 20).unwrap();
    assert_eq!(reopened.statfs().unwrap().free_blocks, empty);
}

/// Snapshots read while the volume stays live (`with_snapshot`, what the
/// NFS server serves under `.snapshots`): old data survives the live tree
/// overwriting, deleting and reusing space; more snapshots than views
/// kept open reopen correctly; a deleted one is stale and gives its space
/// back exactly; fsck stays clean.
#[test]
fn live_snapshot_views_see_their_tree_while_the_volume_changes() {
    live_snapshot_views(None);
}

/// The same with one view open at a time and no inode cache in it (what
/// the Xen storage domain sets, and smaller): every switch reopens a view.
#[test]
fn live_snapshot_views_with_one_view_and_no_cache() {
    live_snapshot_views(Some((1, 0)));
}

fn live_snapshot_views(limit: Option<(usize, usize)>) {
    let mut volume = Volume::open(formatted(4096), clock(), 1 << 20).unwrap();
    if let Some((views, cache_bytes)) = limit {
        volume.limit_snapshot_views(views, cache_bytes);
    }
    volume.commit().unwrap();
    let empty = volume.statfs().unwrap().free_blocks;
    let root = volume.root();
    let file = volume
        .create(root, b"f", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    let mut ids = Vec::new();
    let views = sdfs::MAX_OPEN_VIEWS as u8 + 2;
    for round in 0..views {
        volume.write(file, 0, &vec![round; 200_000]).unwrap();
        // Uncommitted changes are part of the snapshot (it commits).
        ids.push(volume.create_snapshot(&[b'v', b'0' + round]).unwrap().id);
    }
    let read_all = |volume: &mut Volume<MemoryDevice>, id: u64| {
        volume
            .with_snapshot(id, |view| {
                let inode = view.lookup(view.root(), b"f").unwrap().inode;
                let mut buffer = vec![0u8; 200_000];
                assert_eq!(view.read(inode, 0, &mut buffer).unwrap(), 200_000);
                assert_eq!(
                    view.write(inode, 0, b"x").map(|_| ()),
                    Err(FsError::ReadOnly)
                );
                assert_eq!(view.unlink(view.root(), b"f"), Err(FsError::ReadOnly));
                buffer
            })
            .unwrap()
    };
    // Change the live tree: overwrite, remove, and fill the space it
    // freed, committing in between so released blocks are reused.
    volume.write(file, 0, &vec![0xee; 200_000]).unwrap();
    volume.commit().unwrap();
    volume.unlink(root, b"f").unwrap();
    volume.commit().unwrap();
    for index in 0..3u8 {
        let other = volume
            .create(root, &[b'g', b'0' + index], &NewNode::Regular, &OWNER)
            .unwrap()
            .inode;
        volume.write(other, 0, &vec![0xdd; 300_000]).unwrap();
        volume.commit().unwrap();
        // Every snapshot, in an order that closes and reopens views.
        for (round, &id) in ids.iter().enumerate().rev() {
            let data = read_all(&mut volume, id);
            assert!(data.iter().all(|&byte| byte == round as u8), "view {round}");
        }
    }
    assert_eq!(volume.lookup(root, b"f").unwrap_err(), FsError::NotFound);
    // Delete them all: each becomes stale at once.
    for (round, &id) in ids.iter().enumerate() {
        volume.delete_snapshot(&[b'v', b'0' + round as u8]).unwrap();
        assert_eq!(
            volume.with_snapshot(id, |_| ()).unwrap_err(),
            FsError::Stale
        );
        for &later in &ids[round + 1..] {
            read_all(&mut volume, later);
        }
    }
    assert!(volume.list_snapshots().unwrap().snapshots.is_empty());
    for index in 0..3u8 {
        volume.unlink(root, &[b'g', b'0' + index]).unwrap();
    }
    volume.commit().unwrap();
    assert_eq!(volume.statfs().unwrap().free_blocks, empty);
    let report = sdfs::fsck(volume.into_device(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// Fills the disk as a `sync` export does (a commit after every write),
/// in `chunk`-byte writes spread over `files` files in directory `at`;
/// returns the files and how many writes were refused.
fn fill_committing(
    volume: &mut Volume<MemoryDevice>,
    at: InodeId,
    files: usize,
    chunk: usize,
) -> Vec<InodeId> {
    let handles: Vec<InodeId> = (0..files)
        .map(|index| {
            let node = volume
                .create(
                    at,
                    format!("fill-{index}").as_bytes(),
                    &NewNode::Regular,
                    &OWNER,
                )
                .unwrap()
                .inode;
            volume.commit().unwrap();
            node
        })
        .collect();
    let data = vec![0x5Au8; chunk];
    let mut offsets = vec![0u64; files];
    let mut refused = 0;
    let mut turn = 0;
    while refused < files * 2 {
        let index = turn % files;
        turn += 1;
        match volume.write(handles[index], offsets[index], &data) {
            Ok(_) => {
                offsets[index] += chunk as u64;
                volume.commit().unwrap();
            }
            Err(FsError::NoSpace) => refused += 1,
            Err(other) => panic!("write: {other:?}"),
        }
        assert!(turn < 1_000_000, "the disk never filled");
    }
    volume.commit().unwrap();
    handles
}

#[test]
fn a_disk_filled_by_small_committed_writes_still_allows_deletes() {
    for (files, chunk) in [(1, 4096), (3, 4096), (4, 10_000), (2, 64 * 1024)] {
        let mut volume = Volume::open(formatted(2048), clock(), 1 << 20).unwrap();
        let root = volume.root();
        // A directory with many names: its record spans several blocks.
        let crowded = volume
            .create(root, b"crowded", &NewNode::Directory, &OWNER)
            .unwrap()
            .inode;
        for index in 0..600 {
            let name = format!("a-rather-long-name-to-grow-the-directory-{index:04}");
            volume
                .create(crowded, name.as_bytes(), &NewNode::Regular, &OWNER)
                .unwrap();
            volume.commit().unwrap();
        }
        fill_committing(&mut volume, crowded, files, chunk);
        // Every delete works on the full disk, each one committed as a
        // sync export does.
        for index in 0..files {
            volume
                .unlink(crowded, format!("fill-{index}").as_bytes())
                .unwrap_or_else(|error| {
                    panic!("{files} files of {chunk}-byte writes: unlink fill-{index}: {error:?}")
                });
            volume.commit().unwrap();
        }
        for index in 0..20 {
            let name = format!("a-rather-long-name-to-grow-the-directory-{index:04}");
            volume.unlink(crowded, name.as_bytes()).unwrap();
            volume.commit().unwrap();
        }
        // The space is back.
        let again = volume
            .create(root, b"again", &NewNode::Regular, &OWNER)
            .unwrap()
            .inode;
        volume.write(again, 0, &vec![1u8; 256 * 1024]).unwrap();
        volume.commit().unwrap();
        let report = sdfs::fsck(volume.into_device(), clock());
        assert!(report.is_clean(), "{:?}", report.problems);
    }
}

#[test]
fn a_removal_on_a_full_disk_makes_room_for_the_next_write_before_any_commit() {
    let mut volume = Volume::open(formatted(2048), clock(), 1 << 20).unwrap();
    let root = volume.root();
    fill_committing(&mut volume, root, 2, 64 * 1024);
    let sequence = volume.commit_sequence();
    // No commit between the removal and the write (an `async` export, a
    // VRPC guest's `vrpc=local` calls): the removed file's blocks are
    // free only once the removal is committed, so the write commits it.
    volume.unlink(root, b"fill-0").unwrap();
    let file = volume
        .create(root, b"after", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    volume.write(file, 0, &vec![3u8; 1 << 20]).unwrap();
    assert!(volume.commit_sequence() > sequence, "no commit made room");
    volume.commit().unwrap();
    let report = sdfs::fsck(volume.into_device(), clock());
    assert!(report.is_clean(), "{:?}", report.problems);
}
