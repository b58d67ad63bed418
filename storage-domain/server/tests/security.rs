//! Exports, identities and permissions: what a client may see and change.

mod common;

use common::{location, status, sys, Client};
use nfs3::procedures::inspect::SetAttributesArguments;
use nfs3::procedures::remove::RenameArguments;
use nfs3::{Arguments, NfsError, Results, SettableAttributes, StableHow};
use nfs_server::ClientAddress;

fn owner_of(client: &mut Client<vfs::memfs::MemFs>, handle: &nfs3::FileHandle) -> (u32, u32) {
    let attributes = client.getattr(handle).unwrap();
    (attributes.uid, attributes.gid)
}

#[test]
fn root_is_squashed_by_default_and_not_with_no_root_squash() {
    let mut client = Client::new(common::memfs(), &["/"]);
    client.credential = sys(0, 0);
    let root = client.root();
    // The root directory is root's, 0755: squashed root may not create.
    assert_eq!(client.create(&root, b"file"), Err(NfsError::Access));

    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    let directory = client.mkdir(&root, b"open").unwrap();
    set_mode(&mut client, &directory, 0o777);
    let file = client.create(&directory, b"by-root").unwrap();
    assert_eq!(owner_of(&mut client, &file), (0, 0));
    client.as_user(1000, 100);
    let file = client.create(&directory, b"by-user").unwrap();
    assert_eq!(owner_of(&mut client, &file), (1000, 100));
}

#[test]
fn all_squash_maps_everyone_to_the_anonymous_ids() {
    let mut client = Client::new(
        common::memfs(),
        &[
            "/,no_root_squash",
            "/shared,path=/,all_squash,anonuid=4242,anongid=4343",
        ],
    );
    let root = client.root();
    let open = client.mkdir(&root, b"open").unwrap();
    set_mode(&mut client, &open, 0o777);
    let shared = client.mount("/shared").unwrap();
    client.as_user(1000, 1000);
    let open_shared = client.lookup(&shared, b"open").unwrap();
    let file = client.create(&open_shared, b"file").unwrap();
    assert_eq!(owner_of(&mut client, &file), (4242, 4343));
}

fn set_mode(client: &mut Client<vfs::memfs::MemFs>, handle: &nfs3::FileHandle, mode: u32) {
    let result = client.nfs(Arguments::SetAttributes(SetAttributesArguments {
        object: handle.clone(),
        new_attributes: SettableAttributes {
            mode: Some(mode),
            ..SettableAttributes::default()
        },
        guard: None,
    }));
    assert_eq!(status(&result), Ok(()));
}

#[test]
fn mode_bits_are_enforced_for_ordinary_users() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    let private = client.create(&root, b"private").unwrap();
    client
        .write(&private, 0, b"secret", StableHow::FileSync)
        .unwrap();
    set_mode(&mut client, &private, 0o600);
    client.as_user(1000, 1000);
    assert_eq!(
        client.read(&private, 0, 10).map(|_| ()),
        Err(NfsError::Access)
    );
    assert_eq!(
        client
            .write(&private, 0, b"x", StableHow::FileSync)
            .map(|_| ()),
        Err(NfsError::Access)
    );
    assert_eq!(client.create(&root, b"mine"), Err(NfsError::Access));
    assert_eq!(client.remove(&root, b"private"), Err(NfsError::Access));
    // chmod and chown of someone else's file.
    let chmod = client.nfs(Arguments::SetAttributes(SetAttributesArguments {
        object: private.clone(),
        new_attributes: SettableAttributes {
            mode: Some(0o666),
            ..SettableAttributes::default()
        },
        guard: None,
    }));
    assert_eq!(status(&chmod), Err(NfsError::Permission));
    let chown = client.nfs(Arguments::SetAttributes(SetAttributesArguments {
        object: private,
        new_attributes: SettableAttributes {
            uid: Some(1000),
            ..SettableAttributes::default()
        },
        guard: None,
    }));
    assert_eq!(status(&chown), Err(NfsError::Permission));
}

#[test]
fn owners_write_their_read_only_files_and_sticky_directories_protect_others() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    let temporary = client.mkdir(&root, b"tmp").unwrap();
    set_mode(&mut client, &temporary, 0o1777);
    client.as_user(1000, 1000);
    let mine = client.create(&temporary, b"mine").unwrap();
    set_mode(&mut client, &mine, 0o444);
    // An open-then-chmod file still takes its owner's writes.
    assert!(client.write(&mine, 0, b"ok", StableHow::Unstable).is_ok());
    client.as_user(2000, 2000);
    assert_eq!(client.remove(&temporary, b"mine"), Err(NfsError::Access));
    let renamed = client.nfs(Arguments::Rename(RenameArguments {
        from: location(&temporary, b"mine"),
        to: location(&temporary, b"stolen"),
    }));
    assert_eq!(status(&renamed), Err(NfsError::Access));
    client.as_user(1000, 1000);
    assert_eq!(client.remove(&temporary, b"mine"), Ok(()));
}

#[test]
fn read_only_exports_refuse_every_change() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash", "/ro,path=/,ro"]);
    let root = client.root();
    let file = client.create(&root, b"file").unwrap();
    let read_only = client.mount("/ro").unwrap();
    let file_ro = client.lookup(&read_only, b"file").unwrap();
    assert_ne!(file, file_ro, "handles carry their export");
    assert_eq!(
        client.create(&read_only, b"new"),
        Err(NfsError::ReadOnlyFileSystem)
    );
    assert_eq!(
        client.mkdir(&read_only, b"new"),
        Err(NfsError::ReadOnlyFileSystem)
    );
    assert_eq!(
        client
            .write(&file_ro, 0, b"x", StableHow::FileSync)
            .map(|_| ()),
        Err(NfsError::ReadOnlyFileSystem)
    );
    assert_eq!(
        client.remove(&read_only, b"file"),
        Err(NfsError::ReadOnlyFileSystem)
    );
    assert!(client.read(&file_ro, 0, 1).is_ok());
    // Renaming between exports of one file system is a cross-device move.
    let renamed = client.nfs(Arguments::Rename(RenameArguments {
        from: location(&root, b"file"),
        to: location(&read_only, b"moved"),
    }));
    assert!(matches!(
        status(&renamed),
        Err(NfsError::ReadOnlyFileSystem | NfsError::CrossDevice)
    ));
}

#[test]
fn subdirectory_exports_confine_their_clients() {
    let mut client = Client::new(
        common::memfs(),
        &["/,no_root_squash", "/data,path=/srv/data,no_root_squash"],
    );
    let root = client.root();
    let server = client.mkdir(&root, b"srv");
    // The export's directory had to exist before the server started.
    assert_eq!(server, Err(NfsError::Exist));
    let data = client.mount("/data").unwrap();
    assert_eq!(client.mount("/data/").unwrap(), data);
    assert_eq!(client.mount("//data").unwrap(), data);
    let secret = client.create(&root, b"outside").unwrap();
    let _ = secret;
    // `..` at the export's root stays there.
    assert_eq!(client.lookup(&data, b"..").unwrap(), data);
    assert_eq!(client.lookup(&data, b"outside"), Err(NfsError::NoEntry));
    assert_eq!(
        client.mount("/nothing"),
        Err(nfs3::mount::MountError::NoEntry)
    );
}

#[test]
fn clients_outside_the_allowed_list_are_refused() {
    let mut client = Client::new(
        common::memfs(),
        &[
            "/,no_root_squash,allow=127.0.0.1",
            "/lan,path=/,allow=10.0.0.0/8",
        ],
    );
    let root = client.root();
    assert_eq!(client.mount("/lan"), Err(nfs3::mount::MountError::Access));
    client.client = ClientAddress::Ip("10.1.2.3".parse().unwrap());
    let lan = client.mount("/lan").unwrap();
    assert!(client.getattr(&lan).is_ok());
    // A handle of an export this client may not use, even though valid.
    assert_eq!(client.getattr(&root), Err(NfsError::Access));
    assert_eq!(client.mount("/"), Err(nfs3::mount::MountError::Access));
    client.client = ClientAddress::Ip("::ffff:10.9.9.9".parse().unwrap());
    assert!(client.getattr(&lan).is_ok(), "IPv4-mapped IPv6 matches");
    client.client = ClientAddress::Local(nfs_server::LocalPeer {
        connection: 1,
        uid: 0,
        gid: 0,
    });
    assert_eq!(client.getattr(&lan), Err(NfsError::Access));
}

#[test]
fn local_peers_are_admitted_by_their_uid_or_group() {
    let mut client = Client::new(
        common::memfs(),
        &[
            "/,no_root_squash,allow=uid:1000,allow=gid:50",
            "/any-local,path=/,allow=local",
        ],
    );
    let peer = |uid, gid| {
        ClientAddress::Local(nfs_server::LocalPeer {
            connection: 9,
            uid,
            gid,
        })
    };
    client.client = peer(1000, 1000);
    let root = client.mount("/").unwrap();
    assert!(client.getattr(&root).is_ok());
    client.client = peer(2000, 50);
    assert!(client.getattr(&root).is_ok(), "admitted by its group");
    for refused in [peer(0, 0), peer(2000, 2000)] {
        client.client = refused;
        assert_eq!(client.getattr(&root), Err(NfsError::Access), "{refused}");
        assert_eq!(client.mount("/"), Err(nfs3::mount::MountError::Access));
        assert!(client.mount("/any-local").is_ok());
    }
    // A TCP client never matches a uid filter.
    client.client = ClientAddress::Ip("127.0.0.1".parse().unwrap());
    assert_eq!(client.getattr(&root), Err(NfsError::Access));
    for bad in [
        "/,allow=uid:",
        "/,allow=uid:x",
        "/,allow=gid:-1",
        "/,allow=user:bob",
    ] {
        assert!(nfs_server::ExportConfig::parse(bad).is_err(), "{bad}");
    }
    let filter = nfs_server::ExportConfig::parse("/,allow=uid:7,allow=gid:8").unwrap();
    assert_eq!(
        filter
            .clients
            .iter()
            .map(|client| client.to_string())
            .collect::<Vec<_>>(),
        ["uid:7", "gid:8"]
    );
}

#[test]
fn chown_drops_set_id_bits() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"program").unwrap();
    set_mode(&mut client, &file, 0o6755);
    let chown = client.nfs(Arguments::SetAttributes(SetAttributesArguments {
        object: file.clone(),
        new_attributes: SettableAttributes {
            uid: Some(1000),
            ..SettableAttributes::default()
        },
        guard: None,
    }));
    assert_eq!(status(&chown), Ok(()));
    assert_eq!(client.getattr(&file).unwrap().mode, 0o755);
    match client.nfs(Arguments::Null(())) {
        Results::Null(()) => {}
        other => panic!("{other:?}"),
    }
}
