//! End to end: error paths of the hosted server, each with its exact
//! status. Names and handles, export filters, read-only exports, file size
//! and disk space limits, a damaged image, RPC-level rejections of raw
//! bytes, the duplicate request cache, and what survives a restart. Every
//! test that serves stops the server with SIGTERM and runs `fsck`.

mod common;

use std::net::Ipv4Addr;

use common::{
    assert_serving, block_on, call_record, mount_root, nfs, nfs_from, null_call, scratch, status,
    unix_credential, word, Io, RawConnection, ServerProcess, MOUNT_PROGRAM, NFS_PROGRAM,
    PORTMAP_PROGRAM,
};
use nfs3_client::nfs3_types::mount::{dirpath, mountstat3};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountError, Nfs3Client};

fn at(directory: &nfs_fh3, text: &[u8]) -> diropargs3<'static> {
    diropargs3 {
        dir: directory.clone(),
        name: filename3::from(text.to_vec()),
    }
}

async fn getattr_status(client: &mut Nfs3Client<Io>, object: &nfs_fh3) -> nfsstat3 {
    status(
        &client
            .getattr(&GETATTR3args {
                object: object.clone(),
            })
            .await
            .expect("GETATTR"),
    )
}

async fn fileid(client: &mut Nfs3Client<Io>, object: &nfs_fh3) -> u64 {
    client
        .getattr(&GETATTR3args {
            object: object.clone(),
        })
        .await
        .expect("GETATTR")
        .unwrap()
        .obj_attributes
        .fileid
}

async fn create(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, text: &[u8]) -> CREATE3res {
    client
        .create(&CREATE3args {
            where_: at(directory, text),
            how: createhow3::UNCHECKED(sattr3 {
                mode: Nfs3Option::Some(0o644),
                ..sattr3::default()
            }),
        })
        .await
        .expect("CREATE")
}

async fn write(
    client: &mut Nfs3Client<Io>,
    file: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> WRITE3res {
    client
        .write(&WRITE3args {
            file: file.clone(),
            offset,
            count: data.len() as u32,
            stable,
            data: Opaque::borrowed(data),
        })
        .await
        .expect("WRITE")
}

async fn read(client: &mut Nfs3Client<Io>, file: &nfs_fh3, count: u32) -> Vec<u8> {
    client
        .read(&READ3args {
            file: file.clone(),
            offset: 0,
            count,
        })
        .await
        .expect("READ")
        .unwrap()
        .data
        .to_vec()
}

async fn lookup(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, text: &[u8]) -> LOOKUP3res {
    client
        .lookup(&LOOKUP3args {
            what: at(directory, text),
        })
        .await
        .expect("LOOKUP")
}

#[test]
fn bad_names_dot_dot_forged_and_stale_handles() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &[
            "--export",
            "/,no_root_squash",
            "--export",
            "/sub,path=/a/b,no_root_squash",
        ],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let long = vec![b'n'; 256];
        let longest = vec![b'n'; 255];

        // namespace.rs: '/' and NUL are INVAL, past 255 bytes NAMETOOLONG,
        // '.' and '..' EXIST for the creating procedures, INVAL for removal.
        for (text, expected) in [
            (&b"a/b"[..], nfsstat3::NFS3ERR_INVAL),
            (b"nul\0name", nfsstat3::NFS3ERR_INVAL),
            (b"", nfsstat3::NFS3ERR_INVAL),
            (&long[..], nfsstat3::NFS3ERR_NAMETOOLONG),
            (b".", nfsstat3::NFS3ERR_EXIST),
            (b"..", nfsstat3::NFS3ERR_EXIST),
        ] {
            let shown = String::from_utf8_lossy(text);
            assert_eq!(
                status(&create(&mut client, &root, text).await),
                expected,
                "CREATE {shown:?}"
            );
            let made = client
                .mkdir(&MKDIR3args {
                    where_: at(&root, text),
                    attributes: sattr3::default(),
                })
                .await
                .expect("MKDIR");
            assert_eq!(status(&made), expected, "MKDIR {shown:?}");
            let linked = client
                .symlink(&SYMLINK3args {
                    where_: at(&root, text),
                    symlink: symlinkdata3 {
                        symlink_attributes: sattr3::default(),
                        symlink_data: nfspath3::from(b"target".to_vec()),
                    },
                })
                .await
                .expect("SYMLINK");
            assert_eq!(status(&linked), expected, "SYMLINK {shown:?}");
            let removal = if expected == nfsstat3::NFS3ERR_EXIST {
                nfsstat3::NFS3ERR_INVAL
            } else {
                expected
            };
            let removed = client
                .remove(&REMOVE3args {
                    object: at(&root, text),
                })
                .await
                .expect("REMOVE");
            assert_eq!(status(&removed), removal, "REMOVE {shown:?}");
            let removed = client
                .rmdir(&RMDIR3args {
                    object: at(&root, text),
                })
                .await
                .expect("RMDIR");
            assert_eq!(status(&removed), removal, "RMDIR {shown:?}");
        }
        // LINK and MKNOD create; RENAME treats both names as removals.
        let target = create(&mut client, &root, b"link-target")
            .await
            .unwrap()
            .obj
            .unwrap();
        for (text, expected) in [
            (&b"a/b"[..], nfsstat3::NFS3ERR_INVAL),
            (b"nul\0name", nfsstat3::NFS3ERR_INVAL),
            (&long[..], nfsstat3::NFS3ERR_NAMETOOLONG),
            (b"..", nfsstat3::NFS3ERR_EXIST),
        ] {
            let shown = String::from_utf8_lossy(text);
            let linked = client
                .link(&LINK3args {
                    file: target.clone(),
                    link: at(&root, text),
                })
                .await
                .expect("LINK");
            assert_eq!(status(&linked), expected, "LINK {shown:?}");
            let made = client
                .mknod(&MKNOD3args {
                    where_: at(&root, text),
                    what: mknoddata3::NF3FIFO(sattr3::default()),
                })
                .await
                .expect("MKNOD");
            assert_eq!(status(&made), expected, "MKNOD {shown:?}");
            let removal = if expected == nfsstat3::NFS3ERR_EXIST {
                nfsstat3::NFS3ERR_INVAL
            } else {
                expected
            };
            let renamed = client
                .rename(&RENAME3args {
                    from: at(&root, b"link-target"),
                    to: at(&root, text),
                })
                .await
                .expect("RENAME");
            assert_eq!(status(&renamed), removal, "RENAME to {shown:?}");
            let renamed = client
                .rename(&RENAME3args {
                    from: at(&root, text),
                    to: at(&root, b"elsewhere"),
                })
                .await
                .expect("RENAME");
            assert_eq!(status(&renamed), removal, "RENAME from {shown:?}");
        }
        for (text, expected) in [
            (&b"a/b"[..], nfsstat3::NFS3ERR_INVAL),
            (b"nul\0name", nfsstat3::NFS3ERR_INVAL),
            (&long[..], nfsstat3::NFS3ERR_NAMETOOLONG),
        ] {
            let shown = String::from_utf8_lossy(text);
            assert_eq!(
                status(&lookup(&mut client, &root, text).await),
                expected,
                "LOOKUP {shown:?}"
            );
        }
        // 255 bytes is fine.
        assert_eq!(
            status(&create(&mut client, &root, &longest).await),
            nfsstat3::NFS3_OK
        );
        assert_eq!(
            status(&lookup(&mut client, &root, &longest).await),
            nfsstat3::NFS3_OK
        );

        // Symlink targets: empty or with NUL is INVAL, past 4095 bytes
        // NAMETOOLONG, 4095 fine.
        for (index, (target, expected)) in [
            (Vec::new(), nfsstat3::NFS3ERR_INVAL),
            (b"a\0b".to_vec(), nfsstat3::NFS3ERR_INVAL),
            (vec![b't'; 4096], nfsstat3::NFS3ERR_NAMETOOLONG),
            (vec![b't'; 4095], nfsstat3::NFS3_OK),
        ]
        .into_iter()
        .enumerate()
        {
            let length = target.len();
            let linked = client
                .symlink(&SYMLINK3args {
                    where_: at(&root, format!("symlink-{index}").as_bytes()),
                    symlink: symlinkdata3 {
                        symlink_attributes: sattr3::default(),
                        symlink_data: nfspath3::from(target),
                    },
                })
                .await
                .expect("SYMLINK");
            assert_eq!(status(&linked), expected, "a {length}-byte target");
        }

        // '..' at an export's root is the root itself.
        let up = lookup(&mut client, &root, b"..").await.unwrap();
        assert_eq!(up.object, root);
        let sub = mount_root(&server, "/sub").await;
        let sub_id = fileid(&mut client, &sub).await;
        let up = lookup(&mut client, &sub, b"..").await.unwrap();
        assert_eq!(up.object, sub, "'..' of /sub's root must not escape to /a");
        assert_eq!(up.obj_attributes.unwrap().fileid, sub_id);
        let listing = client
            .readdir(&READDIR3args {
                dir: sub.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                count: 4096,
            })
            .await
            .expect("READDIR")
            .unwrap();
        let parent = listing
            .reply
            .entries
            .into_inner()
            .into_iter()
            .find(|entry| entry.name.as_ref() == b"..")
            .expect("a '..' entry");
        assert_eq!(parent.fileid, sub_id, "READDIR '..' of an export root");

        // Forged handles: a flipped MAC bit, a short one, an empty one.
        let mut flipped = root.data.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        let mut bumped = root.data.to_vec();
        bumped[15] ^= 1; // the inode number
        for forged in [flipped, bumped, root.data[..10].to_vec(), Vec::new()] {
            let forged = nfs_fh3 {
                data: Opaque::owned(forged),
            };
            assert_eq!(
                getattr_status(&mut client, &forged).await,
                nfsstat3::NFS3ERR_BADHANDLE
            );
            let written = write(&mut client, &forged, 0, b"x", stable_how::FILE_SYNC).await;
            assert_eq!(status(&written), nfsstat3::NFS3ERR_BADHANDLE);
        }

        // Stale: remove a file, create others (the inode may be reused);
        // the old handle never names the new file.
        let victim = create(&mut client, &root, b"victim")
            .await
            .unwrap()
            .obj
            .unwrap();
        let victim_id = fileid(&mut client, &victim).await;
        let removed = client
            .remove(&REMOVE3args {
                object: at(&root, b"victim"),
            })
            .await
            .expect("REMOVE");
        assert_eq!(status(&removed), nfsstat3::NFS3_OK);
        let mut reused = false;
        for index in 0..4 {
            let text = format!("successor-{index}");
            let successor = create(&mut client, &root, text.as_bytes())
                .await
                .unwrap()
                .obj
                .unwrap();
            reused |= fileid(&mut client, &successor).await == victim_id;
            assert_ne!(successor, victim);
        }
        println!("inode number reused after removal: {reused}");
        assert_eq!(
            getattr_status(&mut client, &victim).await,
            nfsstat3::NFS3ERR_STALE
        );
        let written = write(&mut client, &victim, 0, b"x", stable_how::FILE_SYNC).await;
        assert_eq!(status(&written), nfsstat3::NFS3ERR_STALE);
        let looked = lookup(&mut client, &victim, b"x").await;
        assert_eq!(status(&looked), nfsstat3::NFS3ERR_STALE);
    });
    server.stop_and_fsck();
}

#[test]
fn clients_outside_an_export_are_refused() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &["--export", "/,no_root_squash,allow=127.0.0.2"],
    );
    block_on(async {
        let allowed = Ipv4Addr::new(127, 0, 0, 2);
        let mut mount = common::mount_client(&server, allowed).await;
        let root = mount
            .mnt(dirpath(Opaque::borrowed(b"/")))
            .await
            .expect("MNT from an allowed client");
        let root = nfs_fh3 {
            data: Opaque::owned(root.fhandle.0.to_vec()),
        };
        let mut inside = nfs_from(&server, allowed, 0, 0).await;
        assert_eq!(getattr_status(&mut inside, &root).await, nfsstat3::NFS3_OK);

        let mut mount = common::mount_client(&server, Ipv4Addr::LOCALHOST).await;
        match mount.mnt(dirpath(Opaque::borrowed(b"/"))).await {
            Err(MountError::Denied(mountstat3::MNT3ERR_ACCES)) => {}
            other => panic!("MNT from 127.0.0.1: {other:?}"),
        }
        // A handle learnt elsewhere does not help.
        let mut outside = nfs(&server, 0, 0).await;
        assert_eq!(
            getattr_status(&mut outside, &root).await,
            nfsstat3::NFS3ERR_ACCES
        );
        assert_eq!(
            status(&create(&mut outside, &root, b"f").await),
            nfsstat3::NFS3ERR_ACCES
        );
        let listed = outside
            .readdirplus(&READDIRPLUS3args {
                dir: root.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                dircount: 4096,
                maxcount: 4096,
            })
            .await
            .expect("READDIRPLUS");
        assert_eq!(status(&listed), nfsstat3::NFS3ERR_ACCES);
    });
    server.stop_and_fsck();
}

#[test]
fn read_only_export_refuses_every_change() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &[
            "--export",
            "/,no_root_squash",
            "--export",
            "/pub,path=/pub,ro,no_root_squash",
        ],
    );
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        let root = mount_root(&server, "/").await;
        let writable = lookup(&mut client, &root, b"pub").await.unwrap().object;
        let file = create(&mut client, &writable, b"file")
            .await
            .unwrap()
            .obj
            .unwrap();
        assert_eq!(
            status(&write(&mut client, &file, 0, b"published", stable_how::FILE_SYNC).await),
            nfsstat3::NFS3_OK
        );

        let public = mount_root(&server, "/pub").await;
        let file = lookup(&mut client, &public, b"file").await.unwrap().object;
        assert_eq!(read(&mut client, &file, 100).await, b"published");
        let rofs = nfsstat3::NFS3ERR_ROFS;
        assert_eq!(
            status(&write(&mut client, &file, 0, b"x", stable_how::FILE_SYNC).await),
            rofs
        );
        assert_eq!(status(&create(&mut client, &public, b"new").await), rofs);
        let set = client
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: sattr3 {
                    mode: Nfs3Option::Some(0o600),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .expect("SETATTR");
        assert_eq!(status(&set), rofs, "SETATTR");
        let made = client
            .mkdir(&MKDIR3args {
                where_: at(&public, b"d"),
                attributes: sattr3::default(),
            })
            .await
            .expect("MKDIR");
        assert_eq!(status(&made), rofs, "MKDIR");
        let removed = client
            .remove(&REMOVE3args {
                object: at(&public, b"file"),
            })
            .await
            .expect("REMOVE");
        assert_eq!(status(&removed), rofs, "REMOVE");
        let renamed = client
            .rename(&RENAME3args {
                from: at(&public, b"file"),
                to: at(&public, b"other"),
            })
            .await
            .expect("RENAME");
        assert_eq!(status(&renamed), rofs, "RENAME");
        let linked = client
            .link(&LINK3args {
                file: file.clone(),
                link: at(&public, b"hard"),
            })
            .await
            .expect("LINK");
        assert_eq!(status(&linked), rofs, "LINK");
        let access = client
            .access(&ACCESS3args {
                object: file.clone(),
                access: ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND,
            })
            .await
            .expect("ACCESS")
            .unwrap();
        assert_eq!(access.access, ACCESS3_READ, "ACCESS grants no change");
    });
    server.stop_and_fsck();
}

#[test]
fn writes_past_the_maximum_file_size_are_fbig() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &["--export", "/,no_root_squash"],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let file = create(&mut client, &root, b"huge")
            .await
            .unwrap()
            .obj
            .unwrap();
        let maximum = 1u64 << 62;
        let written = write(
            &mut client,
            &file,
            maximum - 4,
            b"12345678",
            stable_how::FILE_SYNC,
        )
        .await;
        assert_eq!(status(&written), nfsstat3::NFS3ERR_FBIG);
        let written = write(
            &mut client,
            &file,
            u64::MAX - 2,
            b"12345678",
            stable_how::UNSTABLE,
        )
        .await;
        assert_eq!(status(&written), nfsstat3::NFS3ERR_FBIG);
        let set = client
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: sattr3 {
                    size: Nfs3Option::Some(maximum + 1),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .expect("SETATTR");
        assert_eq!(status(&set), nfsstat3::NFS3ERR_FBIG);
        // The file is untouched and still usable.
        let written = write(&mut client, &file, 0, b"small", stable_how::FILE_SYNC).await;
        assert_eq!(status(&written), nfsstat3::NFS3_OK);
        assert_eq!(read(&mut client, &file, 100).await, b"small");
    });
    server.stop_and_fsck();
}

#[test]
fn a_full_disk_is_nospc_and_the_server_keeps_serving() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "1M",
        &["--export", "/,no_root_squash"],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let file = create(&mut client, &root, b"filler")
            .await
            .unwrap()
            .obj
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        let mut full = false;
        for _ in 0..32 {
            let result = write(&mut client, &file, written, &chunk, stable_how::FILE_SYNC).await;
            match status(&result) {
                nfsstat3::NFS3_OK => written += chunk.len() as u64,
                nfsstat3::NFS3ERR_NOSPC => {
                    full = true;
                    break;
                }
                other => panic!("WRITE at {written}: {other:?}"),
            }
        }
        assert!(full, "1 MiB image took {written} bytes without NOSPC");
        assert!(written > 0, "not even one 64 KiB write fitted");

        // Still serving: the file holds what was acknowledged.
        client.null().await.expect("NULL after NOSPC");
        let attributes = client
            .getattr(&GETATTR3args {
                object: file.clone(),
            })
            .await
            .expect("GETATTR")
            .unwrap()
            .obj_attributes;
        assert_eq!(attributes.size, written);
        let data = read(&mut client, &file, 64 * 1024).await;
        assert!(data.iter().all(|&byte| byte == 0xa5) && data.len() == 64 * 1024);
        let removed = client
            .remove(&REMOVE3args {
                object: at(&root, b"filler"),
            })
            .await
            .expect("REMOVE");
        assert_eq!(status(&removed), nfsstat3::NFS3_OK);
        // The space comes back.
        let again = create(&mut client, &root, b"after")
            .await
            .unwrap()
            .obj
            .unwrap();
        let result = write(&mut client, &again, 0, &chunk, stable_how::FILE_SYNC).await;
        assert_eq!(status(&result), nfsstat3::NFS3_OK);
    });
    assert_serving(&server);
    server.stop_and_fsck();
}

#[test]
fn a_damaged_image_is_refused_at_start_and_left_unchanged() {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let server = ServerProcess::start(&image, "4M", &[]);
    server.stop_and_fsck();

    // Damage every superblock copy (a byte inside the checksummed part).
    let mut bytes = std::fs::read(&image).unwrap();
    let mut damaged = 0;
    for block in bytes.chunks_mut(4096) {
        if block.starts_with(b"SDFSv001") {
            block[40] ^= 0xff;
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no superblock found");
    std::fs::write(&image, &bytes).unwrap();

    let output = match ServerProcess::try_start(&image, "4M", &[]) {
        Ok(_) => panic!("serve started on a damaged image"),
        Err(output) => output,
    };
    assert!(output.contains("exited: exit status: 2"), "{output}");
    assert!(
        output.contains(&image.display().to_string()),
        "names the image: {output}"
    );
    assert!(output.contains("fsck"), "points at fsck: {output}");
    assert_eq!(
        std::fs::read(&image).unwrap(),
        bytes,
        "the image was changed"
    );
    let checked = common::tool(&["fsck".as_ref(), image.as_os_str()]);
    assert!(
        !checked.status.success(),
        "fsck calls a damaged image clean"
    );
}

/// Everything in `directory`, by name.
fn entries(directory: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_size_too_small_is_refused_before_anything_is_created() {
    let directory = scratch();
    let image = directory.path().join("new.img");
    let output = match ServerProcess::try_start(&image, "10", &[]) {
        Ok(_) => panic!("serve started on a 10-byte image"),
        Err(output) => output,
    };
    assert!(output.contains("exited: exit status: 2"), "{output}");
    assert!(
        output.contains("too small for a file system: the smallest is 256 KiB (262144 bytes)"),
        "names the minimum: {output}"
    );
    assert!(
        !output.contains("no space"),
        "the old ENOSPC message: {output}"
    );
    assert_eq!(entries(directory.path()), Vec::<String>::new());
    // One block short of the minimum, in another spelling.
    let output = match ServerProcess::try_start(&image, "252KiB", &[]) {
        Ok(_) => panic!("serve started on a 63-block image"),
        Err(output) => output,
    };
    assert!(
        output.contains("a size of 252 KiB is too small"),
        "{output}"
    );
    assert_eq!(entries(directory.path()), Vec::<String>::new());

    // A start that fails after formatting (the VRPC socket cannot be
    // bound) removes the image it made.
    let unbindable = directory.path().join("missing-directory/vrpc.sock");
    let output = match ServerProcess::try_start(
        &image,
        "1MiB",
        &["--vrpc-socket", unbindable.to_str().unwrap()],
    ) {
        Ok(_) => panic!("serve started with an unbindable VRPC socket"),
        Err(output) => output,
    };
    assert!(output.contains("cannot listen on"), "{output}");
    assert!(output.contains("the server did not start"), "{output}");
    assert_eq!(entries(directory.path()), Vec::<String>::new());

    // The next start, at a size that fits, makes the image as asked.
    let server = ServerProcess::start(&image, "1MiB", &[]);
    assert_serving(&server);
    server.stop_and_fsck();
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 1 << 20);
    assert_eq!(entries(directory.path()), ["new.img"]);
}

/// Words of a raw record, big-endian.
fn words(values: &[u32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect()
}

/// A call header with AUTH_NONE credential and verifier.
fn raw_call(xid: u32, rpc_version: u32, program: u32, version: u32, procedure: u32) -> Vec<u8> {
    words(&[xid, 0, rpc_version, program, version, procedure, 0, 0, 0, 0])
}

fn reply_words(reply: &[u8]) -> Vec<u32> {
    assert_eq!(reply.len() % 4, 0, "{reply:02x?}");
    (0..reply.len() / 4)
        .map(|index| word(reply, index))
        .collect()
}

#[test]
fn raw_rpc_rejections_and_broken_records() {
    let directory = scratch();
    let server = ServerProcess::start(&directory.path().join("disk.img"), "8M", &[]);
    let mut connection = RawConnection::open(&server);
    // Accepted replies: xid, REPLY, MSG_ACCEPTED, AUTH_NONE verifier, stat.
    let accepted = |xid, rest: &[u32]| {
        let mut expected = vec![xid, 1, 0, 0, 0];
        expected.extend_from_slice(rest);
        expected
    };
    let cases: [(&str, Vec<u8>, Vec<u32>); 9] = [
        (
            "unknown program",
            raw_call(1, 2, 0x2000_0001, 1, 0),
            accepted(1, &[1]),
        ),
        (
            "NFS version 2",
            raw_call(2, 2, NFS_PROGRAM, 2, 0),
            accepted(2, &[2, 3, 3]),
        ),
        (
            "NFS version 4",
            raw_call(3, 2, NFS_PROGRAM, 4, 0),
            accepted(3, &[2, 3, 3]),
        ),
        (
            "MOUNT version 1",
            raw_call(4, 2, MOUNT_PROGRAM, 1, 0),
            accepted(4, &[2, 3, 3]),
        ),
        (
            "PORTMAP version 3",
            raw_call(5, 2, PORTMAP_PROGRAM, 3, 0),
            accepted(5, &[2, 2, 2]),
        ),
        (
            "NFS procedure 22",
            raw_call(6, 2, NFS_PROGRAM, 3, 22),
            accepted(6, &[3]),
        ),
        (
            "MOUNT procedure 6",
            raw_call(7, 2, MOUNT_PROGRAM, 3, 6),
            accepted(7, &[3]),
        ),
        (
            "GETATTR with a truncated handle",
            {
                let mut call = raw_call(8, 2, NFS_PROGRAM, 3, 1);
                call.extend_from_slice(&words(&[40, 1, 2]));
                call
            },
            accepted(8, &[4]),
        ),
        (
            // Denied: xid, REPLY, MSG_DENIED, RPC_MISMATCH, low, high.
            "RPC version 3",
            raw_call(9, 3, NFS_PROGRAM, 3, 0),
            vec![9, 1, 1, 0, 2, 2],
        ),
    ];
    for (what, call, expected) in cases {
        assert_eq!(reply_words(&connection.call(&call)), expected, "{what}");
    }
    // An unknown auth flavor, and AUTH_SYS with a body that is not one:
    // MSG_DENIED, AUTH_ERROR, AUTH_BADCRED.
    let unknown_flavor = words(&[10, 0, 2, NFS_PROGRAM, 3, 0, 99, 4, 0xdead_beef, 0, 0]);
    assert_eq!(
        reply_words(&connection.call(&unknown_flavor)),
        [10, 1, 1, 1, 1]
    );
    let bad_sys = words(&[11, 0, 2, NFS_PROGRAM, 3, 0, 1, 4, 0xffff_ffff, 0, 0]);
    assert_eq!(reply_words(&connection.call(&bad_sys)), [11, 1, 1, 1, 1]);

    // A call cut after its type: the xid is known, so GARBAGE_ARGS.
    assert_eq!(
        reply_words(&connection.call(&words(&[13, 0]))),
        accepted(13, &[4])
    );
    // Not calls at all: no reply, and the connection goes on.
    connection.send(&words(&[12, 1, 0, 0, 0, 0])); // a REPLY
    connection.send(&[1, 2, 3]); // shorter than an xid
    let reply = connection.call(&null_call(14));
    assert_eq!(
        reply_words(&reply),
        [14, 1, 0, 0, 0, 0],
        "NULL after garbage"
    );
    // A record in two fragments is one call.
    let call = null_call(15);
    let (first, second) = call.split_at(12);
    let mut framed = (first.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(first);
    framed.extend_from_slice(&(0x8000_0000 | second.len() as u32).to_be_bytes());
    framed.extend_from_slice(second);
    connection.send_raw(&framed);
    assert_eq!(reply_words(&connection.receive()), [15, 1, 0, 0, 0, 0]);

    // A record cut short: the others are served meanwhile and afterwards.
    let mut truncated = RawConnection::open(&server);
    truncated.send_raw(&(0x8000_0000u32 | 100).to_be_bytes());
    truncated.send_raw(&[0u8; 50]);
    assert_serving(&server);
    truncated
        .stream
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    truncated.assert_closed();
    assert_serving(&server);

    // Over the size limit (1 MiB + 64 KiB) in one fragment, then across
    // fragments: the server closes that connection only.
    let limit = 1024 * 1024 + 64 * 1024;
    let mut oversize = RawConnection::open(&server);
    oversize.send_raw(&(0x8000_0000u32 | (limit + 1)).to_be_bytes());
    oversize.assert_closed();
    let mut oversize = RawConnection::open(&server);
    let fragment = vec![0u8; 700 * 1024];
    let mut sent = Vec::new();
    for _ in 0..2 {
        sent.extend_from_slice(&(fragment.len() as u32).to_be_bytes());
        sent.extend_from_slice(&fragment);
    }
    // The server may close before it has read everything.
    let _ = std::io::Write::write_all(&mut oversize.stream, &sent);
    oversize.assert_closed();

    // The first connection was never disturbed.
    let reply = connection.call(&null_call(16));
    assert_eq!(reply_words(&reply), [16, 1, 0, 0, 0, 0]);
    assert_serving(&server);
    let log = server.stop_and_fsck();
    assert!(log.contains("closing the connection"), "{log}");
}

#[test]
fn retransmitted_calls_get_the_cached_reply() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "8M",
        &["--export", "/,no_root_squash"],
    );
    let root = block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        create(&mut client, &root, b"doomed").await.unwrap();
        root
    });
    let credential = unix_credential(0, 0);
    let remove = |xid| {
        call_record(
            xid,
            NFS_PROGRAM,
            3,
            12,
            &credential,
            &REMOVE3args {
                object: at(&root, b"doomed"),
            },
        )
    };
    let mut connection = RawConnection::open(&server);
    let first = connection.call(&remove(0x00c0_ffee));
    // xid, REPLY, accepted, AUTH_NONE verifier, SUCCESS, NFS3_OK.
    assert_eq!(&reply_words(&first)[..7], [0x00c0_ffee, 1, 0, 0, 0, 0, 0]);
    let second = connection.call(&remove(0x00c0_ffee));
    assert_eq!(second, first, "the retransmission's reply differs");
    // A client that reconnects and retransmits (same address, same xid).
    let mut reconnected = RawConnection::open(&server);
    assert_eq!(reconnected.call(&remove(0x00c0_ffee)), first);
    // A new call (new xid) really runs: the file is gone.
    let fresh = connection.call(&remove(0x00c0_fff0));
    assert_eq!(&reply_words(&fresh)[..7], [0x00c0_fff0, 1, 0, 0, 0, 0, 2]);

    // The same for a GUARDED CREATE, which would otherwise say EXIST.
    let create_call = call_record(
        77,
        NFS_PROGRAM,
        3,
        8,
        &credential,
        &CREATE3args {
            where_: at(&root, b"once"),
            how: createhow3::GUARDED(sattr3::default()),
        },
    );
    let first = connection.call(&create_call);
    assert_eq!(word(&first, 6), 0, "CREATE");
    assert_eq!(connection.call(&create_call), first);
    server.stop_and_fsck();
}

#[test]
fn a_restart_keeps_data_and_handles_and_changes_the_write_verifier() {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let arguments = ["--export", "/,no_root_squash"];
    let server = ServerProcess::start(&image, "16M", &arguments);
    let (file, unstable_file, before) = block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let file = create(&mut client, &root, b"kept")
            .await
            .unwrap()
            .obj
            .unwrap();
        let synced = write(
            &mut client,
            &file,
            0,
            b"file-sync data, ",
            stable_how::FILE_SYNC,
        )
        .await
        .unwrap();
        let unstable = write(
            &mut client,
            &file,
            16,
            b"committed unstable data",
            stable_how::UNSTABLE,
        )
        .await
        .unwrap();
        assert_eq!(synced.verf, unstable.verf);
        let committed = client
            .commit(&COMMIT3args {
                file: file.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .expect("COMMIT")
            .unwrap();
        assert_eq!(committed.verf, unstable.verf);
        // Unstable and never committed: a clean shutdown still keeps it.
        let other = create(&mut client, &root, b"unstable")
            .await
            .unwrap()
            .obj
            .unwrap();
        write(
            &mut client,
            &other,
            0,
            b"never committed",
            stable_how::UNSTABLE,
        )
        .await
        .unwrap();
        (file, other, unstable.verf)
    });
    server.stop_and_fsck();

    let server = ServerProcess::start(&image, "16M", &arguments);
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        // The old handles still work (the MAC key lives in the volume).
        assert_eq!(
            read(&mut client, &file, 1000).await,
            b"file-sync data, committed unstable data"
        );
        assert_eq!(
            read(&mut client, &unstable_file, 1000).await,
            b"never committed"
        );
        let after = write(&mut client, &file, 0, b"F", stable_how::UNSTABLE)
            .await
            .unwrap();
        assert_ne!(after.verf, before, "the write verifier survived a restart");
        let committed = client
            .commit(&COMMIT3args {
                file: file.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .expect("COMMIT")
            .unwrap();
        assert_eq!(committed.verf, after.verf);
    });
    server.stop_and_fsck();
}

#[test]
fn pipelined_calls_on_one_connection_are_all_answered() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "8M",
        &["--export", "/,no_root_squash"],
    );
    let file = block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let file = create(&mut client, &root, b"shared")
            .await
            .unwrap()
            .obj
            .unwrap();
        let data: Vec<u8> = (0..64u8).collect();
        write(&mut client, &file, 0, &data, stable_how::FILE_SYNC)
            .await
            .unwrap();
        file
    });
    let credential = unix_credential(0, 0);
    // 32 NULLs and 32 READs of one byte each, sent in one burst; the
    // replies may come back in any order (a worker pool runs them).
    let mut burst = Vec::new();
    for xid in 1000..1064u32 {
        let record = if xid % 2 == 0 {
            null_call(xid)
        } else {
            call_record(
                xid,
                NFS_PROGRAM,
                3,
                6,
                &credential,
                &READ3args {
                    file: file.clone(),
                    offset: u64::from(xid - 1000),
                    count: 1,
                },
            )
        };
        burst.extend_from_slice(&(0x8000_0000u32 | record.len() as u32).to_be_bytes());
        burst.extend_from_slice(&record);
    }
    let mut connection = RawConnection::open(&server);
    connection.send_raw(&burst);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let reply = connection.receive();
        let xid = word(&reply, 0);
        assert!((1000..1064).contains(&xid), "unknown xid {xid}");
        assert!(seen.insert(xid), "xid {xid} answered twice");
        // xid, REPLY, accepted, AUTH_NONE verifier, SUCCESS.
        assert_eq!(reply_words(&reply)[1..6], [1, 0, 0, 0, 0], "xid {xid}");
        if xid % 2 == 1 {
            // nfsstat3, post_op_attr (present: 1 + 84 bytes), count, eof,
            // data length, data byte.
            assert_eq!(word(&reply, 6), 0, "READ {xid}");
            let after_attributes = 6 + 1 + 1 + 21;
            assert_eq!(word(&reply, after_attributes), 1, "READ count");
            assert_eq!(word(&reply, after_attributes + 2), 1, "data length");
            assert_eq!(
                u32::from(reply[(after_attributes + 3) * 4]),
                xid - 1000,
                "READ {xid} data"
            );
        }
    }
    server.stop_and_fsck();
}

/// Procedures on the wrong kind of object, and an ordinary user in a
/// root-owned directory: the statuses a local kernel would give.
#[test]
fn wrong_object_types_and_permissions() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &["--export", "/,no_root_squash"],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        fn check<T, E>(result: &Nfs3Result<T, E>, expected: nfsstat3, what: &str) {
            assert_eq!(status(result), expected, "{what}");
        }
        let make_directory = |name: &'static [u8], parent: nfs_fh3| MKDIR3args {
            where_: at(&parent, name),
            attributes: sattr3::default(),
        };
        let outer = client
            .mkdir(&make_directory(b"a", root.clone()))
            .await
            .unwrap()
            .unwrap()
            .obj
            .unwrap();
        let inner = client
            .mkdir(&make_directory(b"b", outer.clone()))
            .await
            .unwrap()
            .unwrap()
            .obj
            .unwrap();
        let _innermost = client
            .mkdir(&make_directory(b"x", inner.clone()))
            .await
            .unwrap()
            .unwrap()
            .obj
            .unwrap();
        let file = client
            .create(&CREATE3args {
                where_: at(&root, b"f"),
                how: createhow3::UNCHECKED(sattr3::default()),
            })
            .await
            .unwrap()
            .unwrap()
            .obj
            .unwrap();
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"a"),
                to: at(&inner, b"inside"),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_INVAL,
            "rename dir into own subdir",
        );
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"f"),
                to: at(&outer, b"b"),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_ISDIR,
            "rename file over non-empty dir",
        );
        let _empty = client
            .mkdir(&make_directory(b"e", root.clone()))
            .await
            .unwrap()
            .unwrap()
            .obj
            .unwrap();
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"f"),
                to: at(&root, b"e"),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_ISDIR,
            "rename file over empty dir",
        );
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"e"),
                to: at(&root, b"f"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOTDIR, "rename dir over file");
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"e"),
                to: at(&outer, b"b"),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_NOTEMPTY,
            "rename dir over non-empty dir",
        );
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"f"),
                to: at(&root, b"f"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3_OK, "rename onto itself");
        let result = client
            .rename(&RENAME3args {
                from: at(&root, b"missing"),
                to: at(&root, b"z"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOENT, "rename missing");
        let result = client
            .rmdir(&RMDIR3args {
                object: at(&root, b"f"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOTDIR, "rmdir file");
        let result = client
            .remove(&REMOVE3args {
                object: at(&root, b"e"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ISDIR, "remove dir");
        let result = client
            .link(&LINK3args {
                file: outer.clone(),
                link: at(&root, b"dirlink"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ISDIR, "link dir");
        let result = client
            .link(&LINK3args {
                file: file.clone(),
                link: at(&root, b"e"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_EXIST, "link onto existing");
        let result = client
            .lookup(&LOOKUP3args {
                what: at(&file, b"x"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOTDIR, "lookup in file");
        let result = client
            .create(&CREATE3args {
                where_: at(&file, b"x"),
                how: createhow3::UNCHECKED(sattr3::default()),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOTDIR, "create in file");
        let result = client
            .read(&READ3args {
                file: outer.clone(),
                offset: 0,
                count: 10,
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ISDIR, "read dir");
        let result = client
            .write(&WRITE3args {
                file: outer.clone(),
                offset: 0,
                count: 1,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"x"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ISDIR, "write dir");
        let result = client
            .readdir(&READDIR3args {
                dir: file.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                count: 4096,
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_NOTDIR, "readdir file");
        let result = client
            .setattr(&SETATTR3args {
                object: outer.clone(),
                new_attributes: sattr3 {
                    size: Nfs3Option::Some(0),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ISDIR, "truncate dir");
        let result = client
            .commit(&COMMIT3args {
                file: outer.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .unwrap();
        // A COMMIT of a directory commits (names made durable: the fsync
        // of a directory); docs/nfs-server.md, "Procedure notes".
        check(&result, nfsstat3::NFS3_OK, "commit dir");
        let result = client
            .readdir(&READDIR3args {
                dir: root.clone(),
                cookie: 99999,
                cookieverf: cookieverf3::default(),
                count: 4096,
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_BAD_COOKIE,
            "readdir bogus cookie zero verifier",
        );
        let mut user = nfs(&server, 1000, 1000).await;
        let result = user
            .create(&CREATE3args {
                where_: at(&root, b"userfile"),
                how: createhow3::UNCHECKED(sattr3::default()),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_ACCES,
            "user create in root-owned 0755",
        );
        let result = user
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: sattr3 {
                    mode: Nfs3Option::Some(0o777),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_PERM, "user chmod root file");
        let result = user
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: sattr3 {
                    uid: Nfs3Option::Some(1000),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_PERM, "user chown root file");
        let result = user
            .write(&WRITE3args {
                file: file.clone(),
                offset: 0,
                count: 1,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"x"),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_ACCES,
            "user write root 0644 file",
        );
        let result = user
            .remove(&REMOVE3args {
                object: at(&root, b"f"),
            })
            .await
            .unwrap();
        check(&result, nfsstat3::NFS3ERR_ACCES, "user remove in root dir");
        let result = user
            .mknod(&MKNOD3args {
                where_: at(&root, b"c"),
                what: mknoddata3::NF3CHR(devicedata3 {
                    dev_attributes: sattr3::default(),
                    spec: specdata3 {
                        specdata1: 1,
                        specdata2: 1,
                    },
                }),
            })
            .await
            .unwrap();
        check(
            &result,
            nfsstat3::NFS3ERR_ACCES,
            "user mknod chr in root dir",
        );
    });
    server.stop_and_fsck();
}

#[test]
fn a_killed_server_leaves_a_consistent_image() {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let arguments = ["--export", "/,no_root_squash"];
    let server = ServerProcess::start(&image, "32M", &arguments);
    let (durable, verifier, root, busy) = block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let durable = create(&mut client, &root, b"durable")
            .await
            .unwrap()
            .obj
            .unwrap();
        let synced = write(
            &mut client,
            &durable,
            0,
            b"acknowledged as durable",
            stable_how::FILE_SYNC,
        )
        .await
        .unwrap();
        let busy = create(&mut client, &root, b"busy")
            .await
            .unwrap()
            .obj
            .unwrap();
        (durable, synced.verf, root, busy)
    });
    // A burst of pipelined calls (4 MiB of writes, FILE_SYNC and
    // UNSTABLE, and creates), and SIGKILL while the server works on them.
    let credential = unix_credential(0, 0);
    let chunk = vec![0x3cu8; 64 * 1024];
    let mut burst = Vec::new();
    for index in 0..64u32 {
        let record = if index % 4 == 3 {
            call_record(
                index,
                NFS_PROGRAM,
                3,
                8,
                &credential,
                &CREATE3args {
                    where_: at(&root, format!("entry-{index}").as_bytes()),
                    how: createhow3::GUARDED(sattr3::default()),
                },
            )
        } else {
            call_record(
                index,
                NFS_PROGRAM,
                3,
                7,
                &credential,
                &WRITE3args {
                    file: busy.clone(),
                    offset: u64::from(index) * chunk.len() as u64,
                    count: chunk.len() as u32,
                    stable: if index % 2 == 0 {
                        stable_how::FILE_SYNC
                    } else {
                        stable_how::UNSTABLE
                    },
                    data: Opaque::borrowed(&chunk),
                },
            )
        };
        burst.extend_from_slice(&(0x8000_0000u32 | record.len() as u32).to_be_bytes());
        burst.extend_from_slice(&record);
    }
    let mut connection = RawConnection::open(&server);
    connection.send_raw(&burst);
    // Take a few replies, so the server is surely at work, and remember
    // what it acknowledged as durable.
    let mut acknowledged = Vec::new();
    for _ in 0..8 {
        let reply = connection.receive();
        assert_eq!(word(&reply, 6), 0, "{:?}", reply_words(&reply));
        acknowledged.push(word(&reply, 0));
    }
    server.kill();
    common::fsck(&image);

    let server = ServerProcess::start(&image, "32M", &arguments);
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        assert_eq!(
            read(&mut client, &durable, 100).await,
            b"acknowledged as durable"
        );
        // Every acknowledged FILE_SYNC write and create is there.
        for xid in acknowledged {
            if xid % 4 == 3 {
                let found = lookup(&mut client, &root, format!("entry-{xid}").as_bytes()).await;
                assert_eq!(status(&found), nfsstat3::NFS3_OK, "entry-{xid}");
            } else if xid % 2 == 0 {
                let got = client
                    .read(&READ3args {
                        file: busy.clone(),
                        offset: u64::from(xid) * 64 * 1024,
                        count: 64 * 1024,
                    })
                    .await
                    .expect("READ")
                    .unwrap();
                assert!(
                    got.data.len() == 64 * 1024 && got.data.iter().all(|&byte| byte == 0x3c),
                    "FILE_SYNC write {xid} lost"
                );
            }
        }
        let after = write(&mut client, &durable, 0, b"A", stable_how::UNSTABLE)
            .await
            .unwrap();
        assert_ne!(after.verf, verifier, "a client must learn of the crash");
    });
    server.stop_and_fsck();
}

#[test]
fn an_async_export_answers_unstable_and_commit_makes_data_durable() {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let arguments = ["--export", "/,no_root_squash,async"];
    let server = ServerProcess::start(&image, "16M", &arguments);
    let file = block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let file = create(&mut client, &root, b"async")
            .await
            .unwrap()
            .obj
            .unwrap();
        let written = write(
            &mut client,
            &file,
            0,
            b"asked FILE_SYNC",
            stable_how::FILE_SYNC,
        )
        .await
        .unwrap();
        assert_eq!(
            written.committed,
            stable_how::UNSTABLE,
            "an async export must not claim FILE_SYNC"
        );
        let committed = client
            .commit(&COMMIT3args {
                file: file.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .expect("COMMIT")
            .unwrap();
        assert_eq!(committed.verf, written.verf);
        file
    });
    // COMMIT answered: the data must survive a crash right after it.
    server.kill();
    common::fsck(&image);
    let server = ServerProcess::start(&image, "16M", &arguments);
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        assert_eq!(read(&mut client, &file, 100).await, b"asked FILE_SYNC");
    });
    server.stop_and_fsck();
}
