//! Several clients at once against the real `storage-domain-hosted serve`
//! on a `sync` export: every change's reply waits for a commit, so commits
//! run all the time, each staged (its flushes outside the server's lock)
//! while the other clients' calls, reads included, go on. Each client
//! works in a directory of its own and keeps a model of it; every READ is
//! checked against the model as it goes. Then the server is SIGKILLed:
//! every change was acknowledged after its commit, so after `fsck` (clean)
//! and a restart each directory must equal its client's model exactly.

mod common;

use std::collections::BTreeMap;

use common::{block_on, mount_root, nfs, scratch, status, Io, ServerProcess};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::Nfs3Client;

const CLIENTS: u64 = 4;
const OPERATIONS: u64 = 150;
const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];

/// splitmix64, enough for test sequences.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    fn below(&mut self, limit: u64) -> u64 {
        self.next() % limit
    }
}

fn at(directory: &nfs_fh3, name: &[u8]) -> diropargs3<'static> {
    diropargs3 {
        dir: directory.clone(),
        name: filename3::from(name.to_vec()),
    }
}

async fn lookup(client: &mut Nfs3Client<Io>, directory: &nfs_fh3, name: &[u8]) -> Option<nfs_fh3> {
    match client
        .lookup(&LOOKUP3args {
            what: at(directory, name),
        })
        .await
        .expect("LOOKUP")
    {
        Nfs3Result::Ok(found) => Some(found.object),
        Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => None,
        Nfs3Result::Err((other, _)) => panic!("LOOKUP: {other:?}"),
    }
}

async fn read_all(client: &mut Nfs3Client<Io>, file: &nfs_fh3) -> Vec<u8> {
    client
        .read(&READ3args {
            file: file.clone(),
            offset: 0,
            count: 1 << 20,
        })
        .await
        .expect("READ")
        .unwrap()
        .data
        .to_vec()
}

/// One client's random work in `directory`; returns its model.
async fn work(
    client: &mut Nfs3Client<Io>,
    directory: &nfs_fh3,
    seed: u64,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut random = Random(seed);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for step in 0..OPERATIONS {
        let name = NAMES[random.below(NAMES.len() as u64) as usize];
        let context = format!("client {seed} step {step}");
        match random.below(10) {
            0..=2 => {
                let created = client
                    .create(&CREATE3args {
                        where_: at(directory, name),
                        how: createhow3::UNCHECKED(sattr3 {
                            mode: Nfs3Option::Some(0o644),
                            ..sattr3::default()
                        }),
                    })
                    .await
                    .expect("CREATE");
                assert_eq!(status(&created), nfsstat3::NFS3_OK, "{context}: CREATE");
                // UNCHECKED on an existing file keeps it as it is.
                model.entry(name.to_vec()).or_default();
            }
            3..=5 => {
                let Some(file) = lookup(client, directory, name).await else {
                    assert!(!model.contains_key(name), "{context}: lost {name:?}");
                    continue;
                };
                let offset = random.below(20_000);
                let length = 1 + random.below(12_000) as usize;
                let byte = random.next() as u8;
                let data = vec![byte; length];
                let written = client
                    .write(&WRITE3args {
                        file: file.clone(),
                        offset,
                        count: length as u32,
                        stable: stable_how::FILE_SYNC,
                        data: Opaque::owned(data.clone()),
                    })
                    .await
                    .expect("WRITE")
                    .unwrap();
                assert_eq!(written.committed, stable_how::FILE_SYNC, "{context}");
                let contents = model.get_mut(name).expect("a file the model has");
                let end = offset as usize + length;
                if contents.len() < end {
                    contents.resize(end, 0);
                }
                contents[offset as usize..end].copy_from_slice(&data);
            }
            6 => {
                let removed = client
                    .remove(&REMOVE3args {
                        object: at(directory, name),
                    })
                    .await
                    .expect("REMOVE");
                let expected = if model.remove(name).is_some() {
                    nfsstat3::NFS3_OK
                } else {
                    nfsstat3::NFS3ERR_NOENT
                };
                assert_eq!(status(&removed), expected, "{context}: REMOVE");
            }
            7 => {
                let target = NAMES[random.below(NAMES.len() as u64) as usize];
                let renamed = client
                    .rename(&RENAME3args {
                        from: at(directory, name),
                        to: at(directory, target),
                    })
                    .await
                    .expect("RENAME");
                if let Some(contents) = model.remove(name) {
                    assert_eq!(status(&renamed), nfsstat3::NFS3_OK, "{context}: RENAME");
                    model.insert(target.to_vec(), contents);
                } else {
                    assert_eq!(status(&renamed), nfsstat3::NFS3ERR_NOENT, "{context}");
                }
            }
            _ => {
                // A read while the other clients' commits are in flight.
                let found = lookup(client, directory, name).await;
                match (found, model.get(name)) {
                    (Some(file), Some(contents)) => {
                        assert_eq!(&read_all(client, &file).await, contents, "{context}: READ");
                    }
                    (None, None) => {}
                    (found, expected) => panic!(
                        "{context}: {name:?} found {} but the model says {}",
                        found.is_some(),
                        expected.is_some()
                    ),
                }
            }
        }
    }
    model
}

#[test]
fn concurrent_clients_on_a_sync_export_keep_every_acknowledged_change() {
    concurrent_clients(&[]);
}

/// As above, with a data cache of 256 KiB: most calls that read miss it,
/// so their blocks are read without the server's lock while the other
/// clients change files and commit (blocks freed by one commit are
/// written again by the next), then handed to the cache. Every READ is
/// still checked against its client's model.
#[test]
fn reads_made_without_the_lock_never_see_stale_blocks() {
    let parked = concurrent_clients(&["--data-cache", "256K"]);
    assert!(
        parked > 0,
        "no call read its blocks without the lock: the test did not test that"
    );
}

/// Runs the clients, checks the crash and the models; returns how many
/// calls were answered after reads made without the server's lock.
fn concurrent_clients(more: &[&str]) -> u64 {
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let mut arguments = vec!["--export", "/,no_root_squash"];
    arguments.extend_from_slice(more);
    let server = ServerProcess::start(&image, "64M", &arguments);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let address = server.address();
            std::thread::spawn(move || {
                block_on(async move {
                    let mut client = nfs_at(address).await;
                    let root = mount_at(address).await;
                    let name = format!("client{index}").into_bytes();
                    let made = client
                        .mkdir(&MKDIR3args {
                            where_: at(&root, &name),
                            attributes: sattr3::default(),
                        })
                        .await
                        .expect("MKDIR")
                        .unwrap();
                    let mine = made.obj.unwrap();
                    (name, work(&mut client, &mine, 0xC0C0_0000 + index).await)
                })
            })
        })
        .collect();
    let models: Vec<_> = workers
        .into_iter()
        .map(|worker| worker.join().expect("a client panicked"))
        .collect();
    let stats = common::tool(&["stats".as_ref(), image.as_os_str()]);
    assert!(stats.status.success(), "stats: {}", common::text(&stats));
    let parked = common::text(&stats)
        .lines()
        .find_map(|line| line.strip_prefix("disk.parked_calls "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .expect("stats names disk.parked_calls");
    // Everything was acknowledged after its commit: a crash now loses
    // nothing.
    server.kill();
    common::fsck(&image);
    let server = ServerProcess::start(&image, "64M", &arguments);
    block_on(async {
        let mut client = nfs(&server, 0, 0).await;
        let root = mount_root(&server, "/").await;
        for (name, model) in &models {
            let mine = lookup(&mut client, &root, name)
                .await
                .expect("the client's directory");
            for file in NAMES {
                let found = lookup(&mut client, &mine, file).await;
                match (found, model.get(file)) {
                    (Some(handle), Some(contents)) => assert_eq!(
                        &read_all(&mut client, &handle).await,
                        contents,
                        "{name:?}/{file:?} after the crash"
                    ),
                    (None, None) => {}
                    (found, expected) => panic!(
                        "{name:?}/{file:?} after the crash: found {} but the model says {}",
                        found.is_some(),
                        expected.is_some()
                    ),
                }
            }
        }
    });
    let log = server.stop_and_fsck();
    assert!(log.contains("stopped cleanly"), "{log}");
    parked
}

async fn nfs_at(address: std::net::SocketAddr) -> Nfs3Client<Io> {
    Nfs3Client::new_with_auth(
        common::connect_from(address, std::net::Ipv4Addr::LOCALHOST).await,
        common::unix_credential(0, 0),
        nfs3_client::nfs3_types::rpc::opaque_auth::default(),
    )
}

async fn mount_at(address: std::net::SocketAddr) -> nfs_fh3 {
    let mut mount = nfs3_client::MountClient::new_with_auth(
        common::connect_from(address, std::net::Ipv4Addr::LOCALHOST).await,
        common::unix_credential(0, 0),
        nfs3_client::nfs3_types::rpc::opaque_auth::default(),
    );
    let mounted = mount
        .mnt(nfs3_client::nfs3_types::mount::dirpath(Opaque::borrowed(
            b"/",
        )))
        .await
        .expect("MNT /");
    nfs_fh3 {
        data: Opaque::owned(mounted.fhandle.0.to_vec()),
    }
}
