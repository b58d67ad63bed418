//! Every NFSv3 procedure through the server, on both backends (the MemFs
//! model and sdfs over an in-memory disk): results, error statuses and
//! wcc data.

mod common;

use common::{location, status, Client};
use nfs3::procedures::create::{CreateHow, MakeNodeArguments, MakeNodeData, SymlinkArguments};
use nfs3::procedures::data::CommitArguments;
use nfs3::procedures::directory::{ReadDirectoryArguments, ReadDirectoryPlusArguments};
use nfs3::procedures::filesystem::FileSystemArguments;
use nfs3::procedures::inspect::{
    AccessArguments, ReadLinkArguments, SetAttributesArguments, ACCESS_DELETE, ACCESS_EXECUTE,
    ACCESS_LOOKUP, ACCESS_MODIFY, ACCESS_READ,
};
use nfs3::procedures::remove::{LinkArguments, RemoveArguments, RenameArguments};
use nfs3::{
    Arguments, DeviceNumbers, FileHandle, FileType, NfsError, Results, SetTime, SettableAttributes,
    StableHow, Time,
};
use vfs::FileSystem;

fn both(
    scenario: fn(&mut Client<vfs::memfs::MemFs>),
    on_disk: fn(&mut Client<sdfs::Volume<sdfs::device::MemoryDevice>>),
) {
    scenario(&mut Client::new(common::memfs(), &["/,no_root_squash"]));
    on_disk(&mut Client::new(
        common::volume(4096),
        &["/,no_root_squash"],
    ));
}

macro_rules! on_both {
    ($name:ident, $body:ident) => {
        #[test]
        fn $name() {
            both(
                $body::<vfs::memfs::MemFs>,
                $body::<sdfs::Volume<sdfs::device::MemoryDevice>>,
            );
        }
    };
}

fn null_and_getattr<F: FileSystem>(client: &mut Client<F>) {
    assert_eq!(status(&client.nfs(Arguments::Null(()))), Ok(()));
    let root = client.root();
    let attributes = client.getattr(&root).unwrap();
    assert_eq!(attributes.file_type, FileType::Directory);
    assert_eq!(attributes.mode, 0o755);
    assert_eq!(attributes.file_system_id, 77);
}
on_both!(null_and_getattr_answer, null_and_getattr);

fn create_write_read<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let file = client.create(&root, b"hello").unwrap();
    let written = client
        .write(&file, 0, b"hello, world", StableHow::FileSync)
        .unwrap();
    assert_eq!(written.count, 12);
    assert_eq!(written.committed, StableHow::FileSync);
    assert_eq!(&written.verifier, b"verifier");
    let before = written.file_wcc.before.expect("pre-op attributes");
    let after = written.file_wcc.after.expect("post-op attributes");
    assert_eq!(before.size, 0);
    assert_eq!(after.size, 12);
    let read = client.read(&file, 7, 100).unwrap();
    assert_eq!(read.data, b"world");
    assert!(read.end_of_file);
    let read = client.read(&file, 0, 5).unwrap();
    assert_eq!(read.data, b"hello");
    assert!(!read.end_of_file);
    let unstable = client.write(&file, 12, b"!", StableHow::Unstable).unwrap();
    assert_eq!(unstable.committed, StableHow::Unstable);
    match client.nfs(Arguments::Commit(CommitArguments {
        file: file.clone(),
        offset: 0,
        count: 0,
    })) {
        Results::Commit(result) => {
            assert_eq!(&result.into_result().unwrap().verifier, b"verifier")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.getattr(&file).unwrap().size, 13);
    // GUARDED create of an existing name.
    assert_eq!(client.create(&root, b"hello"), Err(NfsError::Exist));
    // READ of a directory, WRITE to a directory.
    assert_eq!(
        client.read(&root, 0, 10).map(|_| ()),
        Err(NfsError::IsDirectory)
    );
    assert_eq!(
        client
            .write(&root, 0, b"x", StableHow::FileSync)
            .map(|_| ()),
        Err(NfsError::IsDirectory)
    );
    // Past the largest file size.
    assert_eq!(
        client
            .write(&file, vfs::MAX_FILE_SIZE, b"x", StableHow::Unstable)
            .map(|_| ()),
        Err(NfsError::FileTooLarge)
    );
}
on_both!(create_write_read_commit, create_write_read);

fn unchecked_and_exclusive_create<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let file = client.create(&root, b"data").unwrap();
    client
        .write(&file, 0, b"contents", StableHow::FileSync)
        .unwrap();
    // UNCHECKED over an existing file with size 0 truncates it.
    let created = client
        .create_how(
            &root,
            b"data",
            CreateHow::Unchecked(SettableAttributes {
                size: Some(0),
                ..SettableAttributes::default()
            }),
        )
        .unwrap();
    assert_eq!(created.object_attributes.unwrap().size, 0);
    // EXCLUSIVE: the same verifier again is the same file; another is EXIST.
    let verifier = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
    let first = client
        .create_how(&root, b"exclusive", CreateHow::Exclusive(verifier))
        .unwrap();
    let again = client
        .create_how(&root, b"exclusive", CreateHow::Exclusive(verifier))
        .unwrap();
    assert_eq!(first.object, again.object);
    assert_eq!(
        client
            .create_how(&root, b"exclusive", CreateHow::Exclusive(*b"otherver"))
            .map(|_| ()),
        Err(NfsError::Exist)
    );
}
on_both!(
    unchecked_and_exclusive_create_semantics,
    unchecked_and_exclusive_create
);

fn names<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let long = vec![b'a'; 256];
    assert_eq!(client.create(&root, &long), Err(NfsError::NameTooLong));
    assert_eq!(client.lookup(&root, &long), Err(NfsError::NameTooLong));
    assert_eq!(client.create(&root, &vec![b'b'; 255]).map(|_| ()), Ok(()));
    assert_eq!(client.create(&root, b"a/b"), Err(NfsError::Invalid));
    assert_eq!(client.create(&root, b"a\0b"), Err(NfsError::Invalid));
    assert_eq!(client.create(&root, b""), Err(NfsError::Invalid));
    assert_eq!(client.create(&root, b"."), Err(NfsError::Exist));
    assert_eq!(client.mkdir(&root, b".."), Err(NfsError::Exist));
    assert_eq!(client.remove(&root, b".."), Err(NfsError::Invalid));
    assert_eq!(client.lookup(&root, b"missing"), Err(NfsError::NoEntry));
    // `..` of the export's root is the root.
    assert_eq!(client.lookup(&root, b"..").unwrap(), root);
    assert_eq!(client.lookup(&root, b".").unwrap(), root);
}
on_both!(name_rules, names);

fn namespace<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let directory = client.mkdir(&root, b"dir").unwrap();
    let file = client.create(&directory, b"file").unwrap();
    // LINK, then the link count.
    match client.nfs(Arguments::Link(LinkArguments {
        file: file.clone(),
        link: location(&root, b"hard"),
    })) {
        Results::Link(result) => {
            let wcc = result.into_result().unwrap();
            assert_eq!(wcc.file_attributes.unwrap().link_count, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(&client.nfs(Arguments::Link(LinkArguments {
            file: directory.clone(),
            link: location(&root, b"dirlink"),
        }))),
        Err(NfsError::IsDirectory)
    );
    // RENAME within and across directories, over an existing file.
    let other = client.create(&root, b"other").unwrap();
    let renamed = client.nfs(Arguments::Rename(RenameArguments {
        from: location(&root, b"other"),
        to: location(&directory, b"file"),
    }));
    match renamed {
        Results::Rename(result) => {
            let wcc = result.into_result().unwrap();
            assert!(wcc.from_directory_wcc.before.is_some());
            assert!(wcc.to_directory_wcc.after.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.lookup(&directory, b"file").unwrap(), other);
    // The replaced file survives through its other link.
    assert_eq!(client.getattr(&file).unwrap().link_count, 1);
    // A directory into its own subtree.
    let inner = client.mkdir(&directory, b"inner").unwrap();
    assert_eq!(
        status(&client.nfs(Arguments::Rename(RenameArguments {
            from: location(&root, b"dir"),
            to: location(&inner, b"loop"),
        }))),
        Err(NfsError::Invalid)
    );
    // RMDIR of a non-empty directory, REMOVE of a directory.
    let rmdir = |client: &mut Client<F>, directory: &FileHandle, name: &[u8]| {
        status(&client.nfs(Arguments::RemoveDirectory(RemoveArguments {
            object: location(directory, name),
        })))
    };
    assert_eq!(rmdir(client, &root, b"dir"), Err(NfsError::NotEmpty));
    assert_eq!(client.remove(&root, b"dir"), Err(NfsError::IsDirectory));
    assert_eq!(
        rmdir(client, &directory, b"file"),
        Err(NfsError::NotDirectory)
    );
    assert_eq!(rmdir(client, &directory, b"inner"), Ok(()));
    assert_eq!(client.getattr(&inner), Err(NfsError::Stale));
    // SYMLINK and READLINK.
    let link = match client.nfs(Arguments::Symlink(SymlinkArguments {
        location: location(&root, b"link"),
        attributes: SettableAttributes::default(),
        target: b"dir/file".to_vec(),
    })) {
        Results::Symlink(result) => result.into_result().unwrap().object.unwrap(),
        other => panic!("{other:?}"),
    };
    match client.nfs(Arguments::ReadLink(ReadLinkArguments {
        symlink: link.clone(),
    })) {
        Results::ReadLink(result) => assert_eq!(result.into_result().unwrap().data, b"dir/file"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(&client.nfs(Arguments::ReadLink(ReadLinkArguments {
            symlink: root.clone(),
        }))),
        Err(NfsError::Invalid)
    );
    // MKNOD: a FIFO and a character device; a regular file is BADTYPE.
    let mknod = |client: &mut Client<F>, name: &[u8], what| {
        status(&client.nfs(Arguments::MakeNode(MakeNodeArguments {
            location: location(&root, name),
            what,
        })))
    };
    assert_eq!(
        mknod(
            client,
            b"fifo",
            MakeNodeData::Fifo(SettableAttributes::default())
        ),
        Ok(())
    );
    assert_eq!(
        mknod(
            client,
            b"tty",
            MakeNodeData::CharacterDevice {
                attributes: SettableAttributes::default(),
                device: DeviceNumbers { major: 4, minor: 1 }
            }
        ),
        Ok(())
    );
    let tty = client.lookup(&root, b"tty").unwrap();
    let attributes = client.getattr(&tty).unwrap();
    assert_eq!(attributes.file_type, FileType::CharacterDevice);
    assert_eq!(attributes.device, DeviceNumbers { major: 4, minor: 1 });
    assert_eq!(
        mknod(client, b"regular", MakeNodeData::Other(FileType::Regular)),
        Err(NfsError::BadType)
    );
}
on_both!(namespace_procedures, namespace);

fn stale<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let file = client.create(&root, b"victim").unwrap();
    client.remove(&root, b"victim").unwrap();
    assert_eq!(client.getattr(&file), Err(NfsError::Stale));
    // The inode number may be reused: the old handle stays stale.
    let reused = client.create(&root, b"newcomer").unwrap();
    assert_ne!(reused, file);
    assert_eq!(client.getattr(&file), Err(NfsError::Stale));
    assert_eq!(client.read(&file, 0, 1).map(|_| ()), Err(NfsError::Stale));
    // A forged handle: every byte flipped in turn.
    for index in 0..reused.0.len() {
        let mut forged = reused.clone();
        forged.0[index] ^= 0x40;
        assert_eq!(
            client.getattr(&forged),
            Err(NfsError::BadHandle),
            "byte {index}"
        );
    }
    assert_eq!(
        client.getattr(&FileHandle(vec![])),
        Err(NfsError::BadHandle)
    );
    assert_eq!(
        client.getattr(&FileHandle(vec![1; 64])),
        Err(NfsError::BadHandle)
    );
}
on_both!(stale_and_forged_handles, stale);

fn setattr<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let file = client.create(&root, b"file").unwrap();
    client
        .write(&file, 0, b"0123456789", StableHow::FileSync)
        .unwrap();
    let set =
        |client: &mut Client<F>, attributes: SettableAttributes, guard: Option<Time>| match client
            .nfs(Arguments::SetAttributes(SetAttributesArguments {
                object: file.clone(),
                new_attributes: attributes,
                guard,
            })) {
            Results::SetAttributes(result) => result,
            other => panic!("{other:?}"),
        };
    let result = set(
        client,
        SettableAttributes {
            mode: Some(0o600),
            size: Some(4),
            modify_time: SetTime::ClientTime(Time {
                seconds: 1_000_000,
                nanoseconds: 5,
            }),
            ..SettableAttributes::default()
        },
        None,
    );
    let wcc = result.into_result().unwrap().object_wcc;
    assert_eq!(wcc.before.unwrap().size, 10);
    let after = wcc.after.unwrap();
    assert_eq!((after.size, after.mode), (4, 0o600));
    assert_eq!(after.modify_time.seconds, 1_000_000);
    // A guard that does not match the ctime.
    let stale_guard = Time {
        seconds: 1,
        nanoseconds: 0,
    };
    assert_eq!(
        set(client, SettableAttributes::default(), Some(stale_guard)).status(),
        Err(NfsError::NotSynchronized)
    );
    // Size on a directory.
    match client.nfs(Arguments::SetAttributes(SetAttributesArguments {
        object: root.clone(),
        new_attributes: SettableAttributes {
            size: Some(0),
            ..SettableAttributes::default()
        },
        guard: None,
    })) {
        Results::SetAttributes(result) => assert_eq!(result.status(), Err(NfsError::IsDirectory)),
        other => panic!("{other:?}"),
    }
}
on_both!(setattr_rules, setattr);

fn listing<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let directory = client.mkdir(&root, b"many").unwrap();
    let mut expected: Vec<Vec<u8>> = (0..300)
        .map(|index| format!("file-with-a-longish-name-{index:04}").into_bytes())
        .collect();
    for name in &expected {
        client.create(&directory, name).unwrap();
    }
    expected.push(b".".to_vec());
    expected.push(b"..".to_vec());
    expected.sort();
    // READDIR in small pages, following cookies.
    let mut seen = Vec::new();
    let mut cookie = 0;
    let mut verifier = [0u8; 8];
    let mut pages = 0;
    loop {
        let page = match client.nfs(Arguments::ReadDirectory(ReadDirectoryArguments {
            directory: directory.clone(),
            cookie,
            cookie_verifier: verifier,
            count: 1024,
        })) {
            Results::ReadDirectory(result) => result.into_result().unwrap(),
            other => panic!("{other:?}"),
        };
        pages += 1;
        verifier = page.cookie_verifier;
        for entry in &page.entries {
            seen.push(entry.name.clone());
            cookie = entry.cookie;
        }
        if page.end_of_file {
            break;
        }
        assert!(!page.entries.is_empty());
    }
    assert!(pages > 5, "{pages} pages");
    seen.sort();
    assert_eq!(seen, expected);
    // READDIRPLUS: attributes and handles for every entry.
    let mut seen = Vec::new();
    let mut cookie = 0;
    loop {
        let page = match client.nfs(Arguments::ReadDirectoryPlus(ReadDirectoryPlusArguments {
            directory: directory.clone(),
            cookie,
            cookie_verifier: verifier,
            directory_count: 4096,
            maximum_count: 8192,
        })) {
            Results::ReadDirectoryPlus(result) => result.into_result().unwrap(),
            other => panic!("{other:?}"),
        };
        for entry in &page.entries {
            let attributes = entry.attributes.as_ref().expect("attributes");
            assert_eq!(attributes.file_id, entry.file_id);
            let handle = entry.handle.as_ref().expect("handle");
            assert_eq!(client.getattr(handle).unwrap().file_id, entry.file_id);
            seen.push(entry.name.clone());
            cookie = entry.cookie;
        }
        if page.end_of_file {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, expected);
    // A wrong verifier with a non-zero cookie, a tiny count, a file.
    let readdir = |client: &mut Client<F>, handle: &FileHandle, cookie, verifier, count| {
        status(
            &client.nfs(Arguments::ReadDirectory(ReadDirectoryArguments {
                directory: handle.clone(),
                cookie,
                cookie_verifier: verifier,
                count,
            })),
        )
    };
    assert_eq!(
        readdir(client, &directory, 5, *b"badbadba", 4096),
        Err(NfsError::BadCookie)
    );
    assert_eq!(
        readdir(client, &directory, 0, [0; 8], 10),
        Err(NfsError::TooSmall)
    );
    let file = client
        .lookup(&directory, b"file-with-a-longish-name-0001")
        .unwrap();
    assert_eq!(
        readdir(client, &file, 0, [0; 8], 4096),
        Err(NfsError::NotDirectory)
    );
}
on_both!(readdir_and_readdirplus_paging, listing);

fn file_system_information<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let arguments = FileSystemArguments {
        object: root.clone(),
    };
    match client.nfs(Arguments::FileSystemStatistics(arguments.clone())) {
        Results::FileSystemStatistics(result) => {
            let totals = result.into_result().unwrap();
            assert!(totals.total_bytes > 0);
            assert!(totals.free_bytes <= totals.total_bytes);
            assert!(totals.free_files <= totals.total_files);
        }
        other => panic!("{other:?}"),
    }
    match client.nfs(Arguments::FileSystemInformation(arguments.clone())) {
        Results::FileSystemInformation(result) => {
            let information = result.into_result().unwrap();
            assert_eq!(information.read_maximum, nfs_server::MAX_IO_SIZE);
            assert_eq!(information.maximum_file_size, vfs::MAX_FILE_SIZE);
        }
        other => panic!("{other:?}"),
    }
    match client.nfs(Arguments::PathConfiguration(arguments)) {
        Results::PathConfiguration(result) => {
            let configuration = result.into_result().unwrap();
            assert_eq!(configuration.name_maximum, 255);
            assert!(configuration.no_truncation);
        }
        other => panic!("{other:?}"),
    }
}
on_both!(fsstat_fsinfo_pathconf, file_system_information);

fn access<F: FileSystem>(client: &mut Client<F>) {
    let root = client.root();
    let file = client.create(&root, b"mine").unwrap();
    let everything = ACCESS_READ
        | ACCESS_LOOKUP
        | ACCESS_MODIFY
        | nfs3::procedures::inspect::ACCESS_EXTEND
        | ACCESS_DELETE
        | ACCESS_EXECUTE;
    let ask = |client: &mut Client<F>, handle: &FileHandle| match client.nfs(Arguments::Access(
        AccessArguments {
            object: handle.clone(),
            access: everything,
        },
    )) {
        Results::Access(result) => result.into_result().unwrap().access,
        other => panic!("{other:?}"),
    };
    // Root on a 0644 file: everything but execute.
    let granted = ask(client, &file);
    assert_eq!(granted & ACCESS_EXECUTE, 0);
    assert_ne!(granted & ACCESS_MODIFY, 0);
    // Another user on the same file: read only.
    client.as_user(1000, 1000);
    let granted = ask(client, &file);
    assert_eq!(granted, ACCESS_READ);
    // On the root directory (0755, root's): read and lookup.
    assert_eq!(ask(client, &root), ACCESS_READ | ACCESS_LOOKUP);
}
on_both!(access_reports_mode_bits, access);
