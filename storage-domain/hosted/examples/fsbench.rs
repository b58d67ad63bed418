//! fsbench: sdfs on an image file against kernel ext4 on a loop-mounted
//! image of the same size, side by side in one run.
//!
//! Run as root (it loop-mounts ext4):
//!     cargo run --release -p storage-domain-hosted --example fsbench -- [SCRATCH_DIR]
//!
//! Workloads, each ended by a durable commit (sdfs `commit`, ext4 `syncfs`):
//! small-file create+write (4 KiB files in 50 directories), warm stat of
//! every file, sequential 200 MiB write in 1 MiB calls, and a 200 MiB read
//! after dropping the page cache. Three rounds, the two systems alternating
//! first, medians reported: the ratio is the figure, not the absolute rate.

#[path = "../src/image.rs"]
#[allow(dead_code)]
mod image;

use image::{ImageFile, SystemClock};
use sdfs::{FormatOptions, Volume};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vfs::{FileSystem, InodeId, NewNode, Ownership};

const IMAGE_SIZE: u64 = 1 << 30;
const FILES: usize = 5_000;
const DIRECTORIES: usize = 50;
const SEQUENTIAL: usize = 200 << 20;
const ROUNDS: usize = 3;
const OWNER: Ownership = Ownership {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

struct Figures {
    creates_per_second: f64,
    stats_per_second: f64,
    write_mb_per_second: f64,
    read_mb_per_second: f64,
}

fn run(command: &mut Command) {
    let status = command.status().expect("start command");
    assert!(status.success(), "{command:?} failed");
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn syncfs(path: &Path) {
    run(Command::new("sync").arg("-f").arg(path));
}

fn bench_sdfs(scratch: &Path) -> Figures {
    let path = scratch.join("sdfs.img");
    let mut device = ImageFile::create(&path, IMAGE_SIZE).unwrap();
    Volume::format(
        &mut device,
        FormatOptions {
            uuid: [1; 16],
            handle_secret: [2; 32],
        },
        &SystemClock,
    )
    .unwrap();
    let mut volume = Volume::open(device, Box::new(SystemClock), 256 << 20).unwrap();
    let root = volume.root();
    let data = vec![0x5Au8; 4096];
    let started = Instant::now();
    let mut files: Vec<(InodeId, Vec<u8>)> = Vec::with_capacity(FILES);
    let directories: Vec<InodeId> = (0..DIRECTORIES)
        .map(|index| {
            volume
                .create(
                    root,
                    format!("d{index}").as_bytes(),
                    &NewNode::Directory,
                    &OWNER,
                )
                .unwrap()
                .inode
        })
        .collect();
    for index in 0..FILES {
        let directory = directories[index % DIRECTORIES];
        let name = format!("f{index}").into_bytes();
        let file = volume
            .create(directory, &name, &NewNode::Regular, &OWNER)
            .unwrap()
            .inode;
        volume.write(file, 0, &data).unwrap();
        files.push((directory, name));
    }
    volume.commit().unwrap();
    let creates_per_second = FILES as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut stats = 0;
    for _ in 0..20 {
        for (directory, name) in &files {
            let attributes = volume.lookup(*directory, name).unwrap();
            std::hint::black_box(volume.getattr(attributes.inode).unwrap());
            stats += 1;
        }
    }
    let stats_per_second = stats as f64 / started.elapsed().as_secs_f64();

    let chunk = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    let big = volume
        .create(root, b"big", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    for index in 0..SEQUENTIAL / chunk.len() {
        volume
            .write(big, (index * chunk.len()) as u64, &chunk)
            .unwrap();
    }
    volume.commit().unwrap();
    let write_mb_per_second =
        SEQUENTIAL as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();

    drop_caches();
    let mut buffer = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < SEQUENTIAL as u64 {
        offset += volume.read(big, offset, &mut buffer).unwrap() as u64;
    }
    let read_mb_per_second = SEQUENTIAL as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    drop(volume);
    let _ = std::fs::remove_file(&path);
    Figures {
        creates_per_second,
        stats_per_second,
        write_mb_per_second,
        read_mb_per_second,
    }
}

fn bench_ext4(scratch: &Path) -> Figures {
    let image = scratch.join("ext4.img");
    let mount = scratch.join("ext4-mount");
    std::fs::create_dir_all(&mount).unwrap();
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(IMAGE_SIZE).unwrap();
    drop(file);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mount));
    let data = vec![0x5Au8; 4096];
    let started = Instant::now();
    let mut paths: Vec<PathBuf> = Vec::with_capacity(FILES);
    for index in 0..DIRECTORIES {
        std::fs::create_dir(mount.join(format!("d{index}"))).unwrap();
    }
    for index in 0..FILES {
        let path = mount
            .join(format!("d{}", index % DIRECTORIES))
            .join(format!("f{index}"));
        std::fs::write(&path, &data).unwrap();
        paths.push(path);
    }
    syncfs(&mount);
    let creates_per_second = FILES as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut stats = 0;
    for _ in 0..20 {
        for path in &paths {
            std::hint::black_box(std::fs::metadata(path).unwrap());
            stats += 1;
        }
    }
    let stats_per_second = stats as f64 / started.elapsed().as_secs_f64();

    let chunk = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    {
        use std::io::Write;
        let mut big = std::fs::File::create(mount.join("big")).unwrap();
        for _ in 0..SEQUENTIAL / chunk.len() {
            big.write_all(&chunk).unwrap();
        }
        big.sync_all().unwrap();
    }
    let write_mb_per_second =
        SEQUENTIAL as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();

    drop_caches();
    let started = Instant::now();
    {
        use std::io::Read;
        let mut big = std::fs::File::open(mount.join("big")).unwrap();
        let mut buffer = vec![0u8; 1 << 20];
        while big.read(&mut buffer).unwrap() > 0 {}
    }
    let read_mb_per_second = SEQUENTIAL as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    run(Command::new("umount").arg(&mount));
    let _ = std::fs::remove_file(&image);
    Figures {
        creates_per_second,
        stats_per_second,
        write_mb_per_second,
        read_mb_per_second,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let scratch = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/var/tmp/fsbench".into()),
    );
    std::fs::create_dir_all(&scratch).unwrap();
    let mut sdfs_runs = Vec::new();
    let mut ext4_runs = Vec::new();
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            sdfs_runs.push(bench_sdfs(&scratch));
            ext4_runs.push(bench_ext4(&scratch));
        } else {
            ext4_runs.push(bench_ext4(&scratch));
            sdfs_runs.push(bench_sdfs(&scratch));
        }
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }
    type Pick = fn(&Figures) -> f64;
    let rows: [(&str, &str, Pick); 4] = [
        ("small-file create+write (4 KiB, durable)", "files/s", |f| {
            f.creates_per_second
        }),
        ("warm stat", "stats/s", |f| f.stats_per_second),
        ("sequential write 200 MiB (durable)", "MB/s", |f| {
            f.write_mb_per_second
        }),
        ("sequential read 200 MiB (cold cache)", "MB/s", |f| {
            f.read_mb_per_second
        }),
    ];
    println!("| workload | sdfs | ext4 (loop) | sdfs / ext4 |");
    println!("|---|---|---|---|");
    for (name, unit, pick) in rows {
        let ours = median(sdfs_runs.iter().map(pick).collect());
        let theirs = median(ext4_runs.iter().map(pick).collect());
        println!(
            "| {name} | {ours:.0} {unit} | {theirs:.0} {unit} | {:.2} |",
            ours / theirs
        );
    }
}
