//! The commands against the in-memory xenstored.

use super::*;
use std::thread;
use xen_linux::xenstore::fake::FakeXenstored;
use xen_linux::{Access, Permission, XenstoreErrno};

const SD: u16 = 1;

fn daemon() -> FakeXenstored {
    let daemon = FakeXenstored::new();
    daemon.add_domain(0, "Domain-0");
    daemon.add_domain(SD, "storage-domain");
    daemon.add_domain(5, "vm5");
    daemon.add_domain(6, "vm6");
    daemon
}

fn attach_request(guest: &str, device: Option<u32>) -> AttachRequest {
    AttachRequest {
        guest: guest.parse().unwrap(),
        backend: "storage-domain".parse().unwrap(),
        export: "/data".to_owned(),
        device,
    }
}

fn detach_request(guest: &str, devices: DeviceChoice, timeout: Duration) -> DetachRequest {
    DetachRequest {
        guest: guest.parse().unwrap(),
        backend: "storage-domain".parse().unwrap(),
        devices,
        timeout,
    }
}

#[test]
fn attach_writes_both_sides_with_permissions() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    let attached = attach(&dom0, &attach_request("vm5", None)).unwrap();
    assert_eq!(attached.device, 0);
    assert_eq!(
        attached.to_string(),
        "attached vm5 (id 5) as vrpc device 0 of storage domain storage-domain (id 1), export /data"
    );
    let frontend = "/local/domain/5/device/vrpc/0";
    let backend = "/local/domain/1/backend/vrpc/5/0";
    assert_eq!(
        daemon.value(&format!("{frontend}/backend")).as_deref(),
        Some(backend)
    );
    assert_eq!(
        daemon.value(&format!("{frontend}/backend-id")).as_deref(),
        Some("1")
    );
    assert_eq!(
        daemon.value(&format!("{frontend}/export")).as_deref(),
        Some("/data")
    );
    assert_eq!(
        daemon.value(&format!("{frontend}/state")).as_deref(),
        Some("1")
    );
    assert_eq!(
        daemon.value(&format!("{backend}/frontend")).as_deref(),
        Some(frontend)
    );
    assert_eq!(
        daemon.value(&format!("{backend}/frontend-id")).as_deref(),
        Some("5")
    );
    assert_eq!(
        daemon.value(&format!("{backend}/export")).as_deref(),
        Some("/data")
    );
    assert_eq!(
        daemon.value(&format!("{backend}/state")).as_deref(),
        Some("1")
    );
    let guest_owned = vec![
        Permission {
            domain: 5,
            access: Access::None,
        },
        Permission {
            domain: SD,
            access: Access::Read,
        },
    ];
    assert_eq!(daemon.permissions(frontend), Some(guest_owned.clone()));
    assert_eq!(
        daemon.permissions(&format!("{frontend}/state")),
        Some(guest_owned)
    );
    assert_eq!(
        daemon.permissions(&format!("{backend}/export")),
        Some(vec![
            Permission {
                domain: SD,
                access: Access::None
            },
            Permission {
                domain: 5,
                access: Access::Read
            },
        ])
    );

    // The guest reads both sides of its own device and writes only its own.
    let guest = daemon.connect(5);
    assert!(guest.read(&format!("{backend}/export")).unwrap().is_some());
    guest.write(&format!("{frontend}/state"), b"3").unwrap();
    let refused = guest.write(&format!("{backend}/export"), b"/").unwrap_err();
    assert_eq!(refused.errno(), Some(&XenstoreErrno::PermissionDenied));
    // Another guest sees neither side, nor which guests are attached.
    let other = daemon.connect(6);
    for path in [frontend, backend, "/local/domain/1/backend/vrpc"] {
        let refused = other.read(path).unwrap_err();
        assert_eq!(
            refused.errno(),
            Some(&XenstoreErrno::PermissionDenied),
            "{path}"
        );
    }
    // The storage domain reads the frontend and writes its backend.
    let storage = daemon.connect(SD);
    assert!(storage
        .read(&format!("{frontend}/state"))
        .unwrap()
        .is_some());
    storage.write(&format!("{backend}/state"), b"2").unwrap();
    assert!(storage.write(&format!("{frontend}/state"), b"6").is_err());
}

#[test]
fn attach_picks_free_numbers_and_refuses_taken_ones() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    assert_eq!(attach(&dom0, &attach_request("5", None)).unwrap().device, 0);
    assert_eq!(attach(&dom0, &attach_request("5", None)).unwrap().device, 1);
    let refused = attach(&dom0, &attach_request("vm5", Some(1))).unwrap_err();
    assert!(matches!(
        refused,
        CtlError::AlreadyAttached { device: 1, .. }
    ));
    assert_eq!(
        refused.to_string(),
        "vm5 (id 5) already has vrpc device 1 (detach it first, or leave out --device)"
    );
    assert_eq!(
        attach(&dom0, &attach_request("vm5", Some(7)))
            .unwrap()
            .device,
        7
    );
    assert_eq!(
        attach(&dom0, &attach_request("vm5", None)).unwrap().device,
        2
    );
    // dom0 itself may be a client.
    assert_eq!(attach(&dom0, &attach_request("0", None)).unwrap().device, 0);
}

#[test]
fn attach_refuses_unknown_domains_and_bad_exports() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    let error = attach(&dom0, &attach_request("nobody", None)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown domain nobody: no running domain has that name or id"
    );
    assert!(matches!(
        attach(&dom0, &attach_request("42", None)),
        Err(CtlError::UnknownDomain(DomainSpec::Id(42)))
    ));
    let mut request = attach_request("vm5", None);
    request.backend = "other-sd".parse().unwrap();
    let error = attach(&dom0, &request).unwrap_err();
    assert_eq!(error.to_string(), "storage domain other-sd is not running");
    assert!(matches!(
        attach(&dom0, &attach_request("storage-domain", None)),
        Err(CtlError::SameDomain(_))
    ));
    let mut request = attach_request("vm5", None);
    request.export = "data".to_owned();
    assert!(matches!(
        attach(&dom0, &request),
        Err(CtlError::BadExport(_))
    ));
    // Nothing was written by the refusals.
    assert!(daemon.paths_below("/local/domain/5/device/vrpc").is_empty());
}

#[test]
fn attach_runs_again_when_the_commit_conflicts() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    daemon.fail_next_commits(2);
    assert_eq!(
        attach(&dom0, &attach_request("vm5", None)).unwrap().device,
        0
    );
    assert_eq!(
        daemon
            .value("/local/domain/5/device/vrpc/0/state")
            .as_deref(),
        Some("1")
    );
}

#[test]
fn list_shows_every_device() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    attach(&dom0, &attach_request("vm6", None)).unwrap();
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    daemon.set("/local/domain/1/backend/vrpc/6/0/state", "5");
    daemon.set(
        "/local/domain/1/backend/vrpc/6/0/error",
        "export /data does not admit domain:6",
    );
    daemon.set("/local/domain/5/device/vrpc/0/state", "4");
    let rows = list(&dom0, &"storage-domain".parse().unwrap()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].guest, rows[0].device), (5, 0));
    assert_eq!(
        rows[1].error.as_deref(),
        Some("export /data does not admit domain:6")
    );
    let text = format_list(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("GUEST"));
    assert!(lines[1].starts_with("vm5"), "{text}");
    assert!(lines[1].contains("Initialising") && lines[1].contains("Connected"));
    assert!(
        lines[2].contains("Closing")
            && lines[2].contains("\"export /data does not admit domain:6\"")
    );
}

#[test]
fn detach_of_an_unconnected_device_removes_both_sides_at_once() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    let detached = detach(
        &dom0,
        &detach_request("vm5", DeviceChoice::Only, Duration::from_secs(10)),
    )
    .unwrap();
    assert_eq!(detached.len(), 1);
    assert_eq!(detached[0].frontend, FrontendEnd::NotConnected);
    assert!(daemon
        .paths_below("/local/domain/5/device/vrpc/0")
        .is_empty());
    assert!(daemon
        .paths_below("/local/domain/1/backend/vrpc/5")
        .is_empty());
    assert!(matches!(
        detach(
            &dom0,
            &detach_request("vm5", DeviceChoice::Only, Duration::ZERO)
        ),
        Err(CtlError::NotAttached { device: None, .. })
    ));
}

#[test]
fn detach_waits_for_the_guest_to_close() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    daemon.set("/local/domain/5/device/vrpc/0/state", "4");
    daemon.set("/local/domain/1/backend/vrpc/5/0/state", "4");
    let guest = {
        let daemon = daemon.clone();
        thread::spawn(move || {
            // The guest-driver: the backend directory vanishes, it closes.
            while daemon.value("/local/domain/1/backend/vrpc/5/0").is_some() {
                thread::sleep(Duration::from_millis(5));
            }
            thread::sleep(Duration::from_millis(50));
            daemon.set("/local/domain/5/device/vrpc/0/state", "6");
        })
    };
    let detached = detach(
        &dom0,
        &detach_request("5", DeviceChoice::One(0), Duration::from_secs(10)),
    )
    .unwrap();
    guest.join().unwrap();
    assert_eq!(detached[0].frontend, FrontendEnd::Closed);
    assert_eq!(
        detached[0].to_string(),
        "detached vrpc device 0 of vm5 (id 5): the guest closed its side"
    );
    assert!(daemon
        .paths_below("/local/domain/5/device/vrpc/0")
        .is_empty());
}

#[test]
fn detach_gives_up_after_the_timeout_and_removes_anyway() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    daemon.set("/local/domain/5/device/vrpc/1/state", "4");
    let several = detach(
        &dom0,
        &detach_request("vm5", DeviceChoice::Only, Duration::ZERO),
    )
    .unwrap_err();
    assert_eq!(
        several.to_string(),
        "vm5 (id 5) has vrpc devices 0, 1: name one with --device N, or use --all"
    );
    let started = Instant::now();
    let detached = detach(
        &dom0,
        &detach_request("vm5", DeviceChoice::All, Duration::from_millis(200)),
    )
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(detached[0].frontend, FrontendEnd::NotConnected);
    assert_eq!(
        detached[1].frontend,
        FrontendEnd::TimedOut("Connected".into())
    );
    assert!(detached[1]
        .to_string()
        .contains("still Connected after 0.2 s"));
    assert!(daemon
        .paths_below("/local/domain/5/device/vrpc/1")
        .is_empty());
    assert!(daemon
        .paths_below("/local/domain/1/backend/vrpc/5")
        .is_empty());
}

#[test]
fn detach_notices_a_destroyed_guest() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    attach(&dom0, &attach_request("vm5", None)).unwrap();
    daemon.set("/local/domain/5/device/vrpc/0/state", "4");
    let destroyer = {
        let daemon = daemon.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            daemon.remove("/local/domain/5/device/vrpc/0");
        })
    };
    let detached = detach(
        &dom0,
        &detach_request("vm5", DeviceChoice::One(0), Duration::from_secs(10)),
    )
    .unwrap();
    destroyer.join().unwrap();
    assert_eq!(detached[0].frontend, FrontendEnd::Gone);
}

#[test]
fn domain_specs_parse() {
    assert_eq!("0".parse::<DomainSpec>(), Ok(DomainSpec::Id(0)));
    assert_eq!("65535".parse::<DomainSpec>(), Ok(DomainSpec::Id(65535)));
    assert!("65536".parse::<DomainSpec>().is_err());
    assert!("".parse::<DomainSpec>().is_err());
    assert_eq!(
        "vm-1".parse::<DomainSpec>(),
        Ok(DomainSpec::Name("vm-1".into()))
    );
}

#[test]
fn attach_again_reuses_the_device_of_a_destroyed_storage_domain() {
    let daemon = daemon();
    let dom0 = daemon.connect(0);
    assert_eq!(
        attach(&dom0, &attach_request("vm5", None)).unwrap().device,
        0
    );
    // While the storage domain lives, the device is taken.
    assert_eq!(
        attach(&dom0, &attach_request("vm5", None)).unwrap().device,
        1
    );
    assert!(matches!(
        attach(&dom0, &attach_request("vm5", Some(0))),
        Err(CtlError::AlreadyAttached { device: 0, .. })
    ));
    // The guest's driver had written its keys (readable by the storage
    // domain of the time).
    daemon.set("/local/domain/5/device/vrpc/0/ring-ref0", "8");
    // The storage domain is destroyed (its xenstore directory goes) and
    // started again under a new id: the guest's device 0 still names the
    // old backend, and attaching the same export reuses that number.
    daemon.remove("/local/domain/1");
    daemon.add_domain(7, "storage-domain");
    let attached = attach(&dom0, &attach_request("vm5", None)).unwrap();
    assert_eq!(attached.device, 0);
    assert_eq!(
        daemon
            .value("/local/domain/5/device/vrpc/0/backend")
            .as_deref(),
        Some("/local/domain/7/backend/vrpc/5/0")
    );
    assert_eq!(
        daemon
            .value("/local/domain/5/device/vrpc/0/backend-id")
            .as_deref(),
        Some("7")
    );
    // The old driver's keys are gone (they carried the old permissions).
    assert_eq!(
        daemon.value("/local/domain/5/device/vrpc/0/ring-ref0"),
        None
    );
    // Device 1 is stale too but already taken care of by the first match;
    // a different export gets a fresh number.
    let mut other = attach_request("vm5", None);
    other.export = "/other".to_owned();
    assert_eq!(attach(&dom0, &other).unwrap().device, 2);
}
