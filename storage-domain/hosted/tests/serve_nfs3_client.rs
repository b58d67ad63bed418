//! End to end: every NFSv3 procedure, every MOUNT v3 procedure and PORTMAP
//! GETPORT/DUMP, called by the independent `nfs3_client` crate against the
//! real `storage-domain-hosted serve` process; each test stops the server
//! with SIGTERM and runs `fsck` on the image.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::{block_on, mount_root, nfs, scratch, status, Io, ServerProcess};
use nfs3_client::nfs3_types::mount::{dirpath, mountstat3};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountError, Nfs3Client, PortmapError};

fn name(text: &[u8]) -> filename3<'static> {
    filename3::from(text.to_vec())
}

fn at(directory: &nfs_fh3, text: &[u8]) -> diropargs3<'static> {
    diropargs3 {
        dir: directory.clone(),
        name: name(text),
    }
}

fn mode(bits: u32) -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(bits),
        ..sattr3::default()
    }
}

async fn getattr(client: &mut Nfs3Client<Io>, object: &nfs_fh3) -> fattr3 {
    client
        .getattr(&GETATTR3args {
            object: object.clone(),
        })
        .await
        .expect("GETATTR")
        .unwrap()
        .obj_attributes
}

async fn lookup(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, text: &[u8]) -> LOOKUP3res {
    client
        .lookup(&LOOKUP3args {
            what: at(directory, text),
        })
        .await
        .expect("LOOKUP")
}

async fn create(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, text: &[u8]) -> nfs_fh3 {
    client
        .create(&CREATE3args {
            where_: at(directory, text),
            how: createhow3::UNCHECKED(mode(0o644)),
        })
        .await
        .expect("CREATE")
        .unwrap()
        .obj
        .unwrap()
}

async fn write(
    client: &mut Nfs3Client<Io>,
    file: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> WRITE3resok {
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
        .unwrap()
}

async fn read(
    client: &mut Nfs3Client<Io>,
    file: &nfs_fh3,
    offset: u64,
    count: u32,
) -> READ3resok<'static> {
    client
        .read(&READ3args {
            file: file.clone(),
            offset,
            count,
        })
        .await
        .expect("READ")
        .unwrap()
}

#[test]
fn every_nfs3_procedure() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "32M",
        &["--export", "/,no_root_squash"],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;

        // NULL, GETATTR, FSSTAT, FSINFO, PATHCONF.
        client.null().await.expect("NULL");
        let root_attributes = getattr(&mut client, &root).await;
        assert_eq!(root_attributes.type_, ftype3::NF3DIR);
        assert_eq!(root_attributes.mode, 0o755);
        let statistics = client
            .fsstat(&FSSTAT3args {
                fsroot: root.clone(),
            })
            .await
            .expect("FSSTAT")
            .unwrap();
        assert!(statistics.tbytes >= 30 << 20, "{statistics:?}");
        assert!(statistics.fbytes > 0 && statistics.fbytes <= statistics.tbytes);
        assert!(statistics.ffiles > 0);
        let information = client
            .fsinfo(&FSINFO3args {
                fsroot: root.clone(),
            })
            .await
            .expect("FSINFO")
            .unwrap();
        assert_eq!(information.rtmax, 1 << 20);
        assert_eq!(information.wtmax, 1 << 20);
        assert_eq!(information.maxfilesize, 1 << 62);
        assert_eq!(
            information.properties,
            FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
        );
        let configuration = client
            .pathconf(&PATHCONF3args {
                object: root.clone(),
            })
            .await
            .expect("PATHCONF")
            .unwrap();
        assert_eq!(configuration.name_max, 255);
        assert!(configuration.no_trunc);
        assert!(configuration.case_preserving && !configuration.case_insensitive);

        // MKDIR.
        let made = client
            .mkdir(&MKDIR3args {
                where_: at(&root, b"dir"),
                attributes: mode(0o750),
            })
            .await
            .expect("MKDIR")
            .unwrap();
        let subdirectory = made.obj.unwrap();
        let attributes = made.obj_attributes.unwrap();
        assert_eq!(attributes.type_, ftype3::NF3DIR);
        assert_eq!(attributes.mode, 0o750);
        assert!(made.dir_wcc.before.is_some() && made.dir_wcc.after.is_some());

        // CREATE: UNCHECKED (twice: the second truncates), GUARDED, EXCLUSIVE.
        let file = create(&mut client, &root, b"file").await;
        write(
            &mut client,
            &file,
            0,
            b"to be truncated",
            stable_how::FILE_SYNC,
        )
        .await;
        let again = client
            .create(&CREATE3args {
                where_: at(&root, b"file"),
                how: createhow3::UNCHECKED(sattr3 {
                    size: Nfs3Option::Some(0),
                    ..sattr3::default()
                }),
            })
            .await
            .expect("CREATE unchecked on an existing file")
            .unwrap();
        assert_eq!(again.obj.unwrap(), file, "UNCHECKED finds the same file");
        assert_eq!(getattr(&mut client, &file).await.size, 0);
        let guarded = |text: &'static [u8]| CREATE3args {
            where_: at(&root, text),
            how: createhow3::GUARDED(mode(0o600)),
        };
        let existing = client.create(&guarded(b"file")).await.expect("CREATE");
        assert_eq!(status(&existing), nfsstat3::NFS3ERR_EXIST);
        let fresh = client.create(&guarded(b"guarded")).await.expect("CREATE");
        let guarded_file = fresh.unwrap().obj.unwrap();
        assert_eq!(getattr(&mut client, &guarded_file).await.mode, 0o600);
        let exclusive = |verifier: [u8; 8]| CREATE3args {
            where_: at(&root, b"exclusive"),
            how: createhow3::EXCLUSIVE(createverf3(verifier)),
        };
        let first = client
            .create(&exclusive(*b"verifier"))
            .await
            .expect("CREATE")
            .unwrap()
            .obj
            .unwrap();
        let retransmitted = client
            .create(&exclusive(*b"verifier"))
            .await
            .expect("CREATE")
            .unwrap()
            .obj
            .unwrap();
        assert_eq!(
            first, retransmitted,
            "a retransmitted EXCLUSIVE create succeeds"
        );
        let other = client
            .create(&exclusive(*b"another!"))
            .await
            .expect("CREATE");
        assert_eq!(status(&other), nfsstat3::NFS3ERR_EXIST);

        // WRITE with each stability, COMMIT, READ.
        let unstable = write(&mut client, &file, 0, b"hello ", stable_how::UNSTABLE).await;
        assert_eq!(unstable.count, 6);
        assert_eq!(unstable.committed, stable_how::UNSTABLE);
        let data_sync = write(&mut client, &file, 6, b"nfs ", stable_how::DATA_SYNC).await;
        assert_ne!(data_sync.committed, stable_how::UNSTABLE);
        let file_sync = write(&mut client, &file, 10, b"world", stable_how::FILE_SYNC).await;
        assert_eq!(file_sync.committed, stable_how::FILE_SYNC);
        assert_eq!(unstable.verf, data_sync.verf);
        assert_eq!(unstable.verf, file_sync.verf);
        let after = file_sync.file_wcc.after.unwrap();
        assert_eq!(after.size, 15);
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
        let whole = read(&mut client, &file, 0, 1000).await;
        assert_eq!(&whole.data[..], b"hello nfs world");
        assert_eq!(whole.count, 15);
        assert!(whole.eof);
        let middle = read(&mut client, &file, 6, 3).await;
        assert_eq!(&middle.data[..], b"nfs");
        assert!(!middle.eof);
        let past = read(&mut client, &file, 100, 10).await;
        assert!(past.data.is_empty() && past.eof);

        // SETATTR: mode and size; a guard that does not match.
        let set = client
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: sattr3 {
                    mode: Nfs3Option::Some(0o640),
                    size: Nfs3Option::Some(5),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .expect("SETATTR")
            .unwrap();
        let changed = set.obj_wcc.after.unwrap();
        assert_eq!((changed.mode, changed.size), (0o640, 5));
        let mismatch = client
            .setattr(&SETATTR3args {
                object: file.clone(),
                new_attributes: mode(0o600),
                guard: Nfs3Option::Some(nfstime3 {
                    seconds: 1,
                    nseconds: 0,
                }),
            })
            .await
            .expect("SETATTR");
        assert_eq!(status(&mismatch), nfsstat3::NFS3ERR_NOT_SYNC);
        assert_eq!(getattr(&mut client, &file).await.mode, 0o640);

        // LOOKUP and ACCESS.
        let found = lookup(&mut client, &root, b"file").await.unwrap();
        assert_eq!(found.object, file);
        assert_eq!(
            found.obj_attributes.unwrap().fileid,
            getattr(&mut client, &file).await.fileid
        );
        assert_eq!(
            status(&lookup(&mut client, &root, b"missing").await),
            nfsstat3::NFS3ERR_NOENT
        );
        let access = client
            .access(&ACCESS3args {
                object: file.clone(),
                access: ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_EXECUTE,
            })
            .await
            .expect("ACCESS")
            .unwrap();
        assert_eq!(
            access.access,
            ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND
        );

        // SYMLINK and READLINK.
        let link = client
            .symlink(&SYMLINK3args {
                where_: at(&root, b"link"),
                symlink: symlinkdata3 {
                    symlink_attributes: sattr3::default(),
                    symlink_data: nfspath3::from(b"dir/../file".to_vec()),
                },
            })
            .await
            .expect("SYMLINK")
            .unwrap();
        let link = link.obj.unwrap();
        assert_eq!(getattr(&mut client, &link).await.type_, ftype3::NF3LNK);
        let target = client
            .readlink(&READLINK3args {
                symlink: link.clone(),
            })
            .await
            .expect("READLINK")
            .unwrap();
        assert_eq!(target.data.as_ref(), b"dir/../file");
        let not_a_link = client
            .readlink(&READLINK3args {
                symlink: file.clone(),
            })
            .await
            .expect("READLINK");
        assert_eq!(status(&not_a_link), nfsstat3::NFS3ERR_INVAL);

        // MKNOD of every special type.
        let device = |major, minor| devicedata3 {
            dev_attributes: mode(0o600),
            spec: specdata3 {
                specdata1: major,
                specdata2: minor,
            },
        };
        let nodes: [(&[u8], mknoddata3, ftype3); 4] = [
            (b"fifo", mknoddata3::NF3FIFO(mode(0o644)), ftype3::NF3FIFO),
            (b"socket", mknoddata3::NF3SOCK(mode(0o644)), ftype3::NF3SOCK),
            (
                b"character",
                mknoddata3::NF3CHR(device(1, 3)),
                ftype3::NF3CHR,
            ),
            (b"block", mknoddata3::NF3BLK(device(8, 1)), ftype3::NF3BLK),
        ];
        for (text, what, expected) in nodes {
            let made = client
                .mknod(&MKNOD3args {
                    where_: at(&root, text),
                    what,
                })
                .await
                .expect("MKNOD")
                .unwrap();
            let attributes = made.obj_attributes.unwrap();
            assert_eq!(attributes.type_, expected);
            if expected == ftype3::NF3CHR {
                assert_eq!(
                    (attributes.rdev.specdata1, attributes.rdev.specdata2),
                    (1, 3)
                );
            }
        }

        // LINK, RENAME, REMOVE, RMDIR.
        let linked = client
            .link(&LINK3args {
                file: file.clone(),
                link: at(&subdirectory, b"hard"),
            })
            .await
            .expect("LINK")
            .unwrap();
        assert_eq!(linked.file_attributes.unwrap().nlink, 2);
        let renamed = client
            .rename(&RENAME3args {
                from: at(&root, b"guarded"),
                to: at(&subdirectory, b"moved"),
            })
            .await
            .expect("RENAME");
        assert_eq!(status(&renamed), nfsstat3::NFS3_OK);
        assert_eq!(
            status(&lookup(&mut client, &root, b"guarded").await),
            nfsstat3::NFS3ERR_NOENT
        );
        let moved = lookup(&mut client, &subdirectory, b"moved").await.unwrap();
        assert_eq!(moved.object, guarded_file, "a handle survives RENAME");
        let not_empty = client
            .rmdir(&RMDIR3args {
                object: at(&root, b"dir"),
            })
            .await
            .expect("RMDIR");
        assert_eq!(status(&not_empty), nfsstat3::NFS3ERR_NOTEMPTY);
        for text in [&b"hard"[..], b"moved"] {
            let removed = client
                .remove(&REMOVE3args {
                    object: at(&subdirectory, text),
                })
                .await
                .expect("REMOVE");
            assert_eq!(status(&removed), nfsstat3::NFS3_OK);
        }
        assert_eq!(getattr(&mut client, &file).await.nlink, 1);
        let removed = client
            .rmdir(&RMDIR3args {
                object: at(&root, b"dir"),
            })
            .await
            .expect("RMDIR");
        assert_eq!(status(&removed), nfsstat3::NFS3_OK);

        // READDIR of what is left.
        let listing = client
            .readdir(&READDIR3args {
                dir: root.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                count: 8192,
            })
            .await
            .expect("READDIR")
            .unwrap();
        assert!(listing.reply.eof);
        let names: Vec<Vec<u8>> = listing
            .reply
            .entries
            .into_inner()
            .into_iter()
            .map(|entry| entry.name.as_ref().to_vec())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        let mut expected: Vec<Vec<u8>> = [
            &b"."[..],
            b"..",
            b"file",
            b"exclusive",
            b"link",
            b"fifo",
            b"socket",
            b"character",
            b"block",
        ]
        .iter()
        .map(|name| name.to_vec())
        .collect();
        expected.sort();
        assert_eq!(sorted, expected);
    });
    server.stop_and_fsck();
}

#[test]
fn directory_listings_page_with_cookies() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "32M",
        &["--export", "/,no_root_squash"],
    );
    const FILES: usize = 150;
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let made = client
            .mkdir(&MKDIR3args {
                where_: at(&root, b"many"),
                attributes: mode(0o755),
            })
            .await
            .expect("MKDIR")
            .unwrap()
            .obj
            .unwrap();
        let mut expected = BTreeMap::new();
        for index in 0..FILES {
            let text = format!("a-rather-long-file-name-to-fill-pages-{index:04}");
            let handle = create(&mut client, &made, text.as_bytes()).await;
            expected.insert(
                text.into_bytes(),
                getattr(&mut client, &handle).await.fileid,
            );
        }

        // READDIRPLUS in small pages.
        let mut seen = BTreeMap::new();
        let mut cookie = 0;
        let mut verifier = cookieverf3::default();
        let mut pages = 0;
        loop {
            let page = client
                .readdirplus(&READDIRPLUS3args {
                    dir: made.clone(),
                    cookie,
                    cookieverf: verifier,
                    dircount: 1024,
                    maxcount: 4096,
                })
                .await
                .expect("READDIRPLUS")
                .unwrap();
            pages += 1;
            verifier = page.cookieverf;
            let entries = page.reply.entries.into_inner();
            assert!(
                !entries.is_empty() || page.reply.eof,
                "an empty page before the end"
            );
            for entry in entries {
                cookie = entry.cookie;
                let name = entry.name.as_ref().to_vec();
                let attributes = entry.name_attributes.unwrap();
                assert_eq!(attributes.fileid, entry.fileid);
                let handle = entry.name_handle.unwrap();
                assert_eq!(getattr(&mut client, &handle).await.fileid, entry.fileid);
                assert!(
                    seen.insert(name.clone(), entry.fileid).is_none(),
                    "{} listed twice",
                    String::from_utf8_lossy(&name)
                );
            }
            if page.reply.eof {
                break;
            }
            assert!(pages < 1000, "READDIRPLUS never ends");
        }
        assert!(pages >= 3, "only {pages} READDIRPLUS pages");
        let directory_id = getattr(&mut client, &made).await.fileid;
        assert_eq!(seen.remove(b".".as_slice()), Some(directory_id));
        assert_eq!(
            seen.remove(b"..".as_slice()),
            Some(getattr(&mut client, &root).await.fileid)
        );
        assert_eq!(seen, expected);

        // READDIR in small pages.
        let mut names = Vec::new();
        let mut cookie = 0;
        let mut verifier = cookieverf3::default();
        let mut pages = 0;
        loop {
            let page = client
                .readdir(&READDIR3args {
                    dir: made.clone(),
                    cookie,
                    cookieverf: verifier,
                    count: 1024,
                })
                .await
                .expect("READDIR")
                .unwrap();
            pages += 1;
            verifier = page.cookieverf;
            for entry in page.reply.entries.into_inner() {
                cookie = entry.cookie;
                names.push(entry.name.as_ref().to_vec());
            }
            if page.reply.eof {
                break;
            }
            assert!(pages < 1000, "READDIR never ends");
        }
        assert!(pages >= 3, "only {pages} READDIR pages");
        assert_eq!(names.len(), FILES + 2);

        // A cookie with a verifier this server never gave out.
        let stale = client
            .readdir(&READDIR3args {
                dir: made.clone(),
                cookie,
                cookieverf: cookieverf3(*b"notmine!"),
                count: 1024,
            })
            .await
            .expect("READDIR");
        assert_eq!(status(&stale), nfsstat3::NFS3ERR_BAD_COOKIE);
        // A reply too small for one entry.
        let tiny = client
            .readdir(&READDIR3args {
                dir: made.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                count: 10,
            })
            .await
            .expect("READDIR");
        assert_eq!(status(&tiny), nfsstat3::NFS3ERR_TOOSMALL);
    });
    server.stop_and_fsck();
}

#[test]
fn mount_and_portmap_procedures() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &[
            "--export",
            "/",
            "--export",
            "/data,path=/srv/data,ro,allow=127.0.0.1,allow=10.0.0.0/8",
        ],
    );
    block_on(async {
        let mut mount = common::mount_client(&server, Ipv4Addr::LOCALHOST).await;
        mount.null().await.expect("MOUNT NULL");

        let exports = mount.export().await.expect("EXPORT").into_inner();
        let listed: Vec<(Vec<u8>, Vec<Vec<u8>>)> = exports
            .into_iter()
            .map(|export| {
                (
                    export.ex_dir.0.to_vec(),
                    export
                        .ex_groups
                        .into_inner()
                        .into_iter()
                        .map(|group| group.0.to_vec())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                (b"/".to_vec(), vec![b"*".to_vec()]),
                (
                    b"/data".to_vec(),
                    vec![b"127.0.0.1/32".to_vec(), b"10.0.0.0/8".to_vec()]
                ),
            ]
        );

        let path = |text: &'static str| dirpath(Opaque::borrowed(text.as_bytes()));
        let root = mount.mnt(path("/")).await.expect("MNT /");
        assert!(root.auth_flavors.contains(&1), "AUTH_SYS offered");
        let data = mount.mnt(path("/data/")).await.expect("MNT /data/");
        assert_ne!(root.fhandle.0, data.fhandle.0);
        match mount.mnt(path("/nowhere")).await {
            Err(MountError::Denied(mountstat3::MNT3ERR_NOENT)) => {}
            other => panic!("MNT /nowhere: {other:?}"),
        }

        let dump = |list: nfs3_client::nfs3_types::mount::mountlist| {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = list
                .into_inner()
                .into_iter()
                .map(|entry| (entry.ml_hostname.0.to_vec(), entry.ml_directory.0.to_vec()))
                .collect();
            entries.sort();
            entries
        };
        assert_eq!(
            dump(mount.dump().await.expect("DUMP")),
            vec![
                (b"127.0.0.1".to_vec(), b"/".to_vec()),
                (b"127.0.0.1".to_vec(), b"/data".to_vec()),
            ]
        );
        mount.umnt(path("/")).await.expect("UMNT");
        assert_eq!(
            dump(mount.dump().await.expect("DUMP")),
            vec![(b"127.0.0.1".to_vec(), b"/data".to_vec())]
        );
        mount.umntall().await.expect("UMNTALL");
        assert_eq!(dump(mount.dump().await.expect("DUMP")), vec![]);

        // The handle MNT gave works for NFS calls.
        let mut client = nfs(&server, 1000, 1000).await;
        let handle = nfs_fh3 {
            data: Opaque::owned(data.fhandle.0.to_vec()),
        };
        assert_eq!(getattr(&mut client, &handle).await.type_, ftype3::NF3DIR);

        let mut portmap = common::portmap_client(&server).await;
        portmap.null().await.expect("PORTMAP NULL");
        const TCP: u32 = 6;
        let port = portmap.getport(100_003, 3, TCP).await.expect("GETPORT NFS");
        assert_eq!(port, server.port);
        let port = portmap
            .getport(100_005, 3, TCP)
            .await
            .expect("GETPORT MOUNT");
        assert_eq!(port, server.port);
        match portmap.getport(100_003, 4, TCP).await {
            Err(PortmapError::ProgramUnavailable) => {}
            other => panic!("GETPORT NFSv4: {other:?}"),
        }
        match portmap.getport(100_003, 3, 17).await {
            Err(PortmapError::ProgramUnavailable) => {}
            other => panic!("GETPORT NFSv3 over UDP: {other:?}"),
        }
        let mut mappings: Vec<(u32, u32, u32, u32)> = portmap
            .dump()
            .await
            .expect("PORTMAP DUMP")
            .into_iter()
            .map(|mapping| (mapping.prog, mapping.vers, mapping.prot, mapping.port))
            .collect();
        mappings.sort();
        let port = u32::from(server.port);
        assert_eq!(
            mappings,
            vec![
                (100_000, 2, TCP, port),
                (100_003, 3, TCP, port),
                (100_005, 3, TCP, port),
                (100_021, 4, TCP, port),
            ]
        );
    });
    server.stop_and_fsck();
}

#[test]
fn squash_rules_decide_owners() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "16M",
        &[
            "--export",
            "/,no_root_squash",
            "--export",
            "/squashed,path=/squashed",
            "--export",
            "/all,path=/all,all_squash,anonuid=4242,anongid=4343",
        ],
    );
    block_on(async {
        let whole = mount_root(&server, "/").await;
        let mut root = nfs(&server, 0, 0).await;
        // Open both directories to everyone, as root (not squashed here).
        for text in [&b"squashed"[..], b"all"] {
            let found = lookup(&mut root, &whole, text).await.unwrap();
            let set = root
                .setattr(&SETATTR3args {
                    object: found.object,
                    new_attributes: mode(0o777),
                    guard: Nfs3Option::None,
                })
                .await
                .expect("SETATTR");
            assert_eq!(status(&set), nfsstat3::NFS3_OK);
        }
        let as_root = create(&mut root, &whole, b"by-root").await;
        let owner = getattr(&mut root, &as_root).await;
        assert_eq!((owner.uid, owner.gid), (0, 0), "no_root_squash keeps root");

        // root_squash (the default): root becomes 65534, others stay.
        let squashed = mount_root(&server, "/squashed").await;
        let created = create(&mut root, &squashed, b"by-root").await;
        let owner = getattr(&mut root, &created).await;
        assert_eq!((owner.uid, owner.gid), (65_534, 65_534));
        let made = root
            .mkdir(&MKDIR3args {
                where_: at(&squashed, b"directory-by-root"),
                attributes: sattr3 {
                    // Root may not choose owners once squashed.
                    uid: Nfs3Option::Some(0),
                    ..mode(0o755)
                },
            })
            .await
            .expect("MKDIR")
            .unwrap();
        assert_eq!(made.obj_attributes.unwrap().uid, 65_534);
        let mut user = nfs(&server, 1000, 100).await;
        let created = create(&mut user, &squashed, b"by-user").await;
        let owner = getattr(&mut user, &created).await;
        assert_eq!((owner.uid, owner.gid), (1000, 100));

        // all_squash with anonuid/anongid: everyone becomes 4242:4343.
        let all = mount_root(&server, "/all").await;
        for (client, text) in [(&mut root, &b"root"[..]), (&mut user, b"user")] {
            let created = create(client, &all, text).await;
            let owner = getattr(client, &created).await;
            assert_eq!((owner.uid, owner.gid), (4242, 4343));
        }
    });
    server.stop_and_fsck();
}

#[test]
fn largest_io_and_concurrent_clients() {
    let directory = scratch();
    let server = ServerProcess::start(
        &directory.path().join("disk.img"),
        "64M",
        &["--export", "/,no_root_squash"],
    );
    let root = block_on(mount_root(&server, "/"));
    // Four clients, each on its own connection and thread, write their own
    // file in 64 KiB UNSTABLE writes, COMMIT, and read it back.
    let writers: Vec<(u8, Vec<u8>, nfs_fh3)> = (0..4u8)
        .map(|index| {
            let pattern = (0..2 * 1024 * 1024u32)
                .map(|offset| (offset.wrapping_mul(31) as u8) ^ index)
                .collect();
            (index, pattern, root.clone())
        })
        .collect();
    std::thread::scope(|scope| {
        for (index, pattern, root) in &writers {
            let server = &server;
            scope.spawn(move || {
                block_on(async {
                    let mut client = nfs(server, 0, 0).await;
                    let name = format!("writer-{index}");
                    let file = create(&mut client, root, name.as_bytes()).await;
                    let mut verifier = None;
                    for (number, chunk) in pattern.chunks(64 * 1024).enumerate() {
                        let offset = (number * 64 * 1024) as u64;
                        let written =
                            write(&mut client, &file, offset, chunk, stable_how::UNSTABLE).await;
                        assert_eq!(written.count as usize, chunk.len());
                        assert_eq!(*verifier.get_or_insert(written.verf), written.verf);
                    }
                    let committed = client
                        .commit(&COMMIT3args {
                            file: file.clone(),
                            offset: 0,
                            count: 0,
                        })
                        .await
                        .expect("COMMIT")
                        .unwrap();
                    assert_eq!(Some(committed.verf), verifier);
                    let mut back = Vec::new();
                    while back.len() < pattern.len() {
                        let got = read(&mut client, &file, back.len() as u64, 256 * 1024).await;
                        assert!(!got.data.is_empty(), "short file");
                        back.extend_from_slice(&got.data);
                    }
                    assert!(back == *pattern, "writer {index} reads back other bytes");
                });
            });
        }
    });
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        // The largest WRITE (wtmax, 1 MiB) in one call, and a READ asking
        // for more than rtmax gets rtmax.
        let file = create(&mut client, &root, b"largest").await;
        let data: Vec<u8> = (0..(1u32 << 20) + 4096).map(|byte| byte as u8).collect();
        let written = write(
            &mut client,
            &file,
            0,
            &data[..1 << 20],
            stable_how::FILE_SYNC,
        )
        .await;
        assert_eq!(written.count, 1 << 20);
        write(
            &mut client,
            &file,
            1 << 20,
            &data[1 << 20..],
            stable_how::FILE_SYNC,
        )
        .await;
        let got = read(&mut client, &file, 0, 4 << 20).await;
        assert_eq!(got.count, 1 << 20, "READ is capped at rtmax");
        assert!(!got.eof);
        assert!(got.data[..] == data[..1 << 20]);
        // A WRITE whose count promises more data than it carries.
        let lying = client
            .write(&WRITE3args {
                file: file.clone(),
                offset: 0,
                count: 10,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"short"),
            })
            .await
            .expect("WRITE");
        assert_eq!(status(&lying), nfsstat3::NFS3ERR_INVAL);
        // One that carries more than its count writes only count bytes.
        let generous = client
            .write(&WRITE3args {
                file: file.clone(),
                offset: 0,
                count: 2,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"XYZW"),
            })
            .await
            .expect("WRITE")
            .unwrap();
        assert_eq!(generous.count, 2);
        assert_eq!(
            &read(&mut client, &file, 0, 4).await.data[..],
            &[b'X', b'Y', 2, 3]
        );
    });
    server.stop_and_fsck();
}
