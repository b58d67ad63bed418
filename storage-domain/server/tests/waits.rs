//! Calls made without waiting for the disk (`Server::try_without_waiting`,
//! the Xen domain's way): on a volume whose data cache is cold and refuses
//! reads it cannot answer, a call that only reads fails quietly and names
//! the blocks it needs; once they are filled in, the same call gives the
//! same reply a waiting server gives. A call that changes something is
//! never refused.

mod common;

use common::Client;
use nfs3::procedures::data::{ReadArguments, WriteArguments};
use nfs3::procedures::directory::ReadDirectoryPlusArguments;
use nfs3::procedures::inspect::{GetAttributesArguments, LookupArguments};
use nfs3::{Arguments, FileHandle, StableHow};
use nfs_server::{locks::NO_SESSION, Attempt, Server};
use sdfs::device::MemoryDevice;
use sdfs::{BlockDevice, CachedDevice, FormatOptions, Volume, BLOCK_SIZE};
use vfs::StepClock;

type Cold = Volume<CachedDevice<MemoryDevice>>;

/// A committed image holding `/d/data` (300 KiB) among other names.
fn image() -> MemoryDevice {
    let mut device = MemoryDevice::new(2048);
    let options = FormatOptions {
        uuid: [3; 16],
        handle_secret: common::SECRET,
    };
    Volume::format(&mut device, options, &StepClock::new(1_700_000_000)).expect("format");
    let volume =
        Volume::open(device, Box::new(StepClock::new(1_700_000_100)), 1 << 20).expect("open");
    let mut client = Client::new(volume, &["/,no_root_squash"]);
    let root = client.root();
    let directory = client.mkdir(&root, b"d").expect("mkdir");
    for index in 0..40 {
        client
            .create(&directory, format!("f{index}").as_bytes())
            .expect("create");
    }
    let file = client.create(&directory, b"data").expect("create");
    let data: Vec<u8> = (0..300 * 1024u32)
        .map(|index| (index % 251) as u8)
        .collect();
    client
        .write(&file, 0, &data, StableHow::FileSync)
        .expect("write");
    let mut volume = client.server.into_filesystem();
    vfs::FileSystem::commit(&mut volume).expect("commit");
    volume.into_device()
}

/// A server over `image` behind a cold data cache of `room` blocks.
fn cold_server(image: MemoryDevice, room: u64) -> Client<Cold> {
    let volume = Volume::open(
        CachedDevice::new(image, room * BLOCK_SIZE as u64),
        Box::new(StepClock::new(1_700_000_200)),
        1 << 20,
    )
    .expect("open");
    Client::new(volume, &["/,no_root_squash"])
}

/// Makes `record` without waiting until it is answered, filling what each
/// refused attempt names; returns the reply and the attempts refused.
fn without_waiting(client: &mut Client<Cold>, record: &[u8]) -> (Vec<u8>, u32) {
    let mut refused = 0;
    loop {
        let counters = client.server.statistics();
        match client
            .server
            .try_without_waiting(record, client.client, NO_SESSION)
        {
            Attempt::Answered(reply) => {
                let reply = reply.expect("a reply");
                return (client.server.finish(reply), refused);
            }
            Attempt::WouldWait => {
                refused += 1;
                assert!(refused < 100, "never answered");
                assert_eq!(
                    client.server.statistics(),
                    counters,
                    "a refused try leaves no trace"
                );
                let cache = client.server.filesystem().device_mut();
                let (first, count) = cache.take_wanted().expect("the blocks are named");
                let mut data = vec![0u8; count as usize * BLOCK_SIZE];
                cache.fill_started();
                cache
                    .inner_mut()
                    .read_blocks(first, &mut data)
                    .expect("read");
                cache.fill(first, Some(&data));
            }
        }
    }
}

fn handles(client: &mut Client<Cold>) -> (FileHandle, FileHandle) {
    let root = client.root();
    let directory = client.lookup(&root, b"d").expect("d");
    let file = client.lookup(&directory, b"data").expect("data");
    (directory, file)
}

#[test]
fn read_only_calls_on_a_cold_cache_are_refused_then_answered_as_by_a_waiting_server() {
    let image = image();
    // The handles, from a server that waits.
    let (directory, file) = handles(&mut cold_server(image.clone(), 0));
    let calls = [
        Arguments::GetAttributes(GetAttributesArguments {
            object: file.clone(),
        }),
        Arguments::Lookup(LookupArguments {
            what: common::location(&directory, b"f17"),
        }),
        Arguments::Read(ReadArguments {
            file: file.clone(),
            offset: 100_000,
            count: 65_536,
        }),
        Arguments::ReadDirectoryPlus(ReadDirectoryPlusArguments {
            directory: directory.clone(),
            cookie: 0,
            cookie_verifier: [0; 8],
            directory_count: 4096,
            maximum_count: 32_768,
        }),
    ];
    for arguments in calls {
        let procedure = arguments.procedure();
        // Each call on its own cold server (its lookups of the handles
        // warm nothing), and the same call on a server that waits.
        let mut cold = cold_server(image.clone(), 256);
        let record = cold.nfs_record(&arguments);
        let mut waiting = cold_server(image.clone(), 0);
        let expected = waiting.raw(&record).expect("a reply");
        let (reply, refused) = without_waiting(&mut cold, &record);
        assert_eq!(reply, expected, "{procedure:?}");
        // What the volume keeps in memory from opening (its index and
        // the records it read) needs no read; a file's data does.
        if procedure == nfs3::Procedure::Read {
            assert!(refused > 0, "{procedure:?}: a cold cache refused nothing");
        }
        // Warm now: answered at once.
        let again = cold.nfs_record(&arguments);
        let (_, refused) = without_waiting(&mut cold, &again);
        assert_eq!(refused, 0, "{procedure:?}: refused on a warm cache");
        // Refused reads are not failures of the volume: it still changes.
        assert!(!cold.server.filesystem().is_failed(), "{procedure:?}");
        let root = cold.root();
        cold.mkdir(&root, b"after")
            .expect("a change after refused reads");
    }
}

#[test]
fn a_call_that_changes_something_is_never_refused() {
    let image = image();
    let mut cold = cold_server(image, 256);
    let (_, file) = {
        // Handles made by a server that waits on the same volume.
        let root = cold.root();
        let directory = cold.lookup(&root, b"d").expect("d");
        let file = cold.lookup(&directory, b"data").expect("data");
        (directory, file)
    };
    let record = cold.nfs_record(&Arguments::Write(WriteArguments {
        file,
        offset: 1_000_000,
        count: 5,
        stable: StableHow::FileSync,
        data: b"hello".to_vec(),
    }));
    assert!(!Server::<Cold>::is_read_only_call(&record));
    let (reply, refused) = without_waiting(&mut cold, &record);
    assert_eq!(refused, 0);
    assert!(!reply.is_empty());
    assert_eq!(cold.server.filesystem().device_mut().take_wanted(), None);
}

#[test]
fn only_nfs_calls_that_only_read_are_read_only() {
    let mut client = cold_server(image(), 0);
    let root = client.root();
    let read_only = client.nfs_record(&Arguments::GetAttributes(GetAttributesArguments {
        object: root.clone(),
    }));
    assert!(Server::<Cold>::is_read_only_call(&read_only));
    let mkdir = client.nfs_record(&Arguments::MakeDirectory(
        nfs3::procedures::create::MakeDirectoryArguments {
            location: common::location(&root, b"x"),
            attributes: Default::default(),
        },
    ));
    assert!(!Server::<Cold>::is_read_only_call(&mkdir));
    // Truncated, a reply, another program: not read-only calls.
    assert!(!Server::<Cold>::is_read_only_call(&read_only[..20]));
    let mut reply = read_only.clone();
    reply[7] = 1;
    assert!(!Server::<Cold>::is_read_only_call(&reply));
    let mut other = read_only.clone();
    other[12..16].copy_from_slice(&100_005u32.to_be_bytes());
    assert!(!Server::<Cold>::is_read_only_call(&other));
}
