//! Device faults under the NFS server: WRITE (FILE_SYNC, and UNSTABLE then
//! COMMIT), CREATE and REMOVE on an sdfs volume whose device fails at each
//! of the call's writes, tears each of them, or fails each flush. The
//! reply must be NFS3ERR_IO, never success; afterwards every change is
//! refused with NFS3ERR_IO while committed data still reads; once the
//! fault clears the image passes fsck and the committed file is intact.

mod common;

use common::Client;
use nfs3::procedures::data::CommitArguments;
use nfs3::{Arguments, NfsError, Results, StableHow};
use nfs_server::Server;
use sdfs::device::MemoryDevice;
use sdfs::fault::{FaultRule, Operation};
use sdfs::{FaultDevice, FaultPlan, FormatOptions, Volume};
use vfs::StepClock;

type Faulty = Volume<FaultDevice<MemoryDevice>>;

const KEPT: &[u8] = &[0x6b; 9000];

fn faulty_volume(plan: FaultPlan) -> Faulty {
    let mut device = MemoryDevice::new(1024);
    let options = FormatOptions {
        uuid: [3; 16],
        handle_secret: common::SECRET,
    };
    Volume::format(&mut device, options, &StepClock::new(1_700_000_000)).expect("format");
    Volume::open(
        FaultDevice::new(device, plan),
        Box::new(StepClock::new(1_700_000_100)),
        1 << 20,
    )
    .expect("open")
}

#[derive(Clone, Copy, Debug)]
enum Call {
    WriteFileSync,
    WriteUnstableThenCommit,
    Create,
    Remove,
}

fn commit(client: &mut Client<Faulty>, file: &nfs3::FileHandle) -> Result<(), NfsError> {
    match client.nfs(Arguments::Commit(CommitArguments {
        file: file.clone(),
        offset: 0,
        count: 0,
    })) {
        Results::Commit(result) => result.into_result().map(|_| ()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Sets up a committed file `kept` and a file `victim`, arms `plan`, makes
/// `call`; returns the call's result, the requests it made (reads, writes,
/// flushes) and the client.
fn run(call: Call, plan: FaultPlan) -> (Result<(), NfsError>, (u64, u64, u64), Client<Faulty>) {
    let volume = faulty_volume(plan);
    let control = volume.device().control();
    let mut client = Client::new(volume, &["/,no_root_squash"]);
    let root = client.root();
    let kept = client.create(&root, b"kept").unwrap();
    client.write(&kept, 0, KEPT, StableHow::FileSync).unwrap();
    let victim = client.create(&root, b"victim").unwrap();
    client
        .write(&victim, 0, &[0x76; 5000], StableHow::FileSync)
        .unwrap();
    control.arm();
    let result = match call {
        Call::WriteFileSync => client
            .write(&victim, 4096, &[0x77; 9000], StableHow::FileSync)
            .map(|_| ()),
        Call::WriteUnstableThenCommit => client
            .write(&victim, 4096, &[0x77; 9000], StableHow::Unstable)
            .and_then(|_| commit(&mut client, &victim)),
        Call::Create => client.create(&root, b"new").map(|_| ()),
        Call::Remove => client.remove(&root, b"victim"),
    };
    let counts = control.counts();
    control.disarm();
    (result, counts, client)
}

fn check_after_fault(label: &str, mut client: Client<Faulty>) {
    let root = client.root();
    // Changes are refused, as by a file system remounted read-only.
    assert_eq!(
        client.create(&root, b"later").map(|_| ()),
        Err(NfsError::Io),
        "{label}: a change after the fault"
    );
    // Committed data still reads.
    let kept = client.lookup(&root, b"kept").expect("lookup of kept");
    let read = client.read(&kept, 0, KEPT.len() as u32).expect("read kept");
    assert_eq!(read.data, KEPT, "{label}: kept");
    // The fault clears (the server restarts): the image is a commit.
    let volume = Server::into_filesystem(client.server);
    let image = volume.into_device().into_inner();
    let report = sdfs::fsck(image.clone(), Box::new(StepClock::new(1_700_000_200)));
    assert!(report.is_clean(), "{label}: fsck: {:?}", report.problems);
    let mut restarted = Client::new(
        Volume::open(image, Box::new(StepClock::new(1_700_000_300)), 1 << 20).expect("reopen"),
        &["/,no_root_squash"],
    );
    let root = restarted.root();
    let kept = restarted
        .lookup(&root, b"kept")
        .expect("kept after restart");
    assert_eq!(
        restarted.read(&kept, 0, KEPT.len() as u32).unwrap().data,
        KEPT,
        "{label}: kept after restart"
    );
}

#[test]
fn every_fault_in_a_call_is_an_io_error_and_committed_data_survives() {
    let mut checked = 0;
    for call in [
        Call::WriteFileSync,
        Call::WriteUnstableThenCommit,
        Call::Create,
        Call::Remove,
    ] {
        let (result, (_, writes, flushes), client) = run(call, FaultPlan::default());
        assert_eq!(result, Ok(()), "{call:?} without faults");
        assert!(flushes >= 2, "{call:?} made no commit");
        drop(client);
        let mut plans = Vec::new();
        for number in 1..=flushes {
            plans.push(vec![FaultRule::Nth {
                operation: Operation::Flush,
                number,
            }]);
        }
        for number in 1..=writes {
            plans.push(vec![FaultRule::Nth {
                operation: Operation::Write,
                number,
            }]);
            plans.push(vec![FaultRule::Tear { number }]);
        }
        plans.push(vec![FaultRule::After { number: 0 }]);
        for rules in plans {
            let plan = FaultPlan {
                rules,
                seed: checked,
            };
            let label = format!("{call:?} with faults {plan}");
            let (result, _, client) = run(call, plan);
            assert_eq!(result, Err(NfsError::Io), "{label}");
            check_after_fault(&label, client);
            checked += 1;
        }
    }
    eprintln!("{checked} faulted calls answered NFS3ERR_IO");
}

#[test]
fn a_failed_read_is_an_io_error_and_changes_nothing() {
    let volume = faulty_volume(FaultPlan::parse("read=1").unwrap());
    let control = volume.device().control();
    let mut client = Client::new(volume, &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"file").unwrap();
    client
        .write(&file, 0, &[9; 8192], StableHow::FileSync)
        .unwrap();
    control.arm();
    assert_eq!(
        client.read(&file, 0, 8192).map(|read| read.data),
        Err(NfsError::Io)
    );
    // A read that failed changed nothing: the server goes on.
    assert_eq!(client.read(&file, 0, 8192).unwrap().data, vec![9; 8192]);
    client.create(&root, b"after").unwrap();
}
