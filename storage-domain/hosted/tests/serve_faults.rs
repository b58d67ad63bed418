//! End to end: `serve --fault` makes the real server's disk fail. A failed
//! flush turns the call into NFS3ERR_IO, every later change is refused
//! with NFS3ERR_IO while committed data still reads, and after a restart
//! without the fault the image is clean and holds what was committed.

mod common;

use common::{block_on, fsck, mount_root, nfs, scratch, status, Io, ServerProcess};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::Nfs3Client;
use std::time::{Duration, Instant};

const KEPT: &[u8] = &[0x6b; 20_000];

async fn create(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, text: &[u8]) -> CREATE3res {
    client
        .create(&CREATE3args {
            where_: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(text.to_vec()),
            },
            how: createhow3::UNCHECKED(sattr3::default()),
        })
        .await
        .expect("CREATE")
}

async fn write(client: &mut Nfs3Client<Io>, file: &nfs_fh3, data: &[u8]) -> WRITE3res {
    client
        .write(&WRITE3args {
            file: file.clone(),
            offset: 0,
            count: data.len() as u32,
            stable: stable_how::FILE_SYNC,
            data: Opaque::borrowed(data),
        })
        .await
        .expect("WRITE")
}

async fn read(client: &mut Nfs3Client<Io>, file: &nfs_fh3) -> Vec<u8> {
    client
        .read(&READ3args {
            file: file.clone(),
            offset: 0,
            count: KEPT.len() as u32,
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
            what: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(text.to_vec()),
            },
        })
        .await
        .expect("LOOKUP")
}

#[test]
fn a_failed_flush_refuses_changes_and_keeps_what_was_committed() {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    // Each change on a sync export is one commit of two flushes: the
    // fifth flush is the third change's.
    let server = ServerProcess::start(
        &image,
        "32M",
        &["--export", "/,no_root_squash", "--fault", "flush=5"],
    );
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let kept = create(&mut client, &root, b"kept")
            .await
            .unwrap()
            .obj
            .unwrap();
        assert_eq!(
            status(&write(&mut client, &kept, KEPT).await),
            nfsstat3::NFS3_OK
        );
        assert_eq!(
            status(&create(&mut client, &root, b"lost").await),
            nfsstat3::NFS3ERR_IO,
            "the call whose commit failed"
        );
        assert_eq!(
            status(&create(&mut client, &root, b"later").await),
            nfsstat3::NFS3ERR_IO,
            "a change after the failure"
        );
        assert_eq!(
            status(&write(&mut client, &kept, b"overwrite").await),
            nfsstat3::NFS3ERR_IO
        );
        assert_eq!(read(&mut client, &kept).await, KEPT, "committed data reads");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("refusing every change") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert!(log.contains("fault injection armed"), "{log}");
    assert!(
        log.contains("injected fault: flush request 5 failed"),
        "{log}"
    );
    assert!(
        log.contains("the disk failed: refusing every change"),
        "{log}"
    );
    server.kill();

    // The fault clears with the restart: the image is clean and holds
    // every committed change, and nothing else.
    fsck(&image);
    let server = ServerProcess::start(&image, "32M", &["--export", "/,no_root_squash"]);
    block_on(async {
        let root = mount_root(&server, "/").await;
        let mut client = nfs(&server, 0, 0).await;
        let kept = lookup(&mut client, &root, b"kept").await.unwrap().object;
        assert_eq!(read(&mut client, &kept).await, KEPT);
        for name in [&b"lost"[..], b"later"] {
            assert_eq!(
                status(&lookup(&mut client, &root, name).await),
                nfsstat3::NFS3ERR_NOENT
            );
        }
        assert_eq!(
            status(&create(&mut client, &root, b"again").await),
            nfsstat3::NFS3_OK
        );
    });
    server.stop_and_fsck();
}

#[test]
fn a_bad_fault_specification_is_refused_with_the_reason() {
    let directory = scratch();
    let error = match ServerProcess::try_start(
        &directory.path().join("disk.img"),
        "32M",
        &["--fault", "flush=often"],
    ) {
        Ok(_) => panic!("serve accepted --fault flush=often"),
        Err(error) => error,
    };
    assert!(
        error.contains("`flush=often`: expected a request number"),
        "{error}"
    );
}
