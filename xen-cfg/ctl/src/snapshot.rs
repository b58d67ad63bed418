//! `snapshot create|delete|list`: asks the storage domain through xenstore
//! (`docs/xenstore.md`, "Snapshots").
//!
//! dom0 writes the request to `/local/domain/<sd>/control/snapshot` and
//! empties `control/snapshot-result` in one transaction, both owned by
//! the storage domain (nobody else may read them), then waits until the
//! storage domain has written its answer and emptied the request. One
//! request at a time: a request still pending is refused.

use std::time::{Duration, Instant};

use vrpc::xenstore::{SnapshotRequest, SNAPSHOT_REQUEST, SNAPSHOT_RESULT, STATS_NODE};
use xen_linux::{Access, Permission, Xenstore};

use crate::commands::{resolve, CtlError, DomainSpec};

/// `stats`: what the storage domain `backend` last published in
/// xenstore (`docs/xenstore.md`, "Statistics").
///
/// # Errors
/// [`CtlError::StorageDomainNotRunning`], [`CtlError::NoStatistics`],
/// [`CtlError::Store`].
pub fn statistics(store: &Xenstore, backend: &DomainSpec) -> Result<String, CtlError> {
    let storage_domain = resolve(store, backend)?
        .ok_or_else(|| CtlError::StorageDomainNotRunning(backend.clone()))?;
    let path = format!("/local/domain/{}/{STATS_NODE}", storage_domain.id);
    match store.read(&path)? {
        Some(text) if !text.is_empty() => Ok(String::from_utf8_lossy(&text).into_owned()),
        _ => Err(CtlError::NoStatistics(storage_domain)),
    }
}

/// How often the answer is looked for.
const POLL: Duration = Duration::from_millis(20);

/// Send `request` to the storage domain `backend` and wait up to
/// `timeout` for its answer: the text to print.
///
/// # Errors
/// [`CtlError::StorageDomainNotRunning`], [`CtlError::SnapshotPending`],
/// [`CtlError::SnapshotTimeout`], [`CtlError::Snapshot`] (the storage
/// domain's refusal, e.g. a name in use), [`CtlError::Store`].
pub fn snapshot(
    store: &Xenstore,
    backend: &DomainSpec,
    request: SnapshotRequest<'_>,
    timeout: Duration,
) -> Result<String, CtlError> {
    let storage_domain = resolve(store, backend)?
        .ok_or_else(|| CtlError::StorageDomainNotRunning(backend.clone()))?;
    let home = format!("/local/domain/{}", storage_domain.id);
    let request_path = format!("{home}/{SNAPSHOT_REQUEST}");
    let result_path = format!("{home}/{SNAPSHOT_RESULT}");
    // The storage domain owns both nodes; nobody else may see them.
    let owner = [Permission {
        domain: storage_domain.id,
        access: Access::None,
    }];
    let value = request.encode();
    store.transaction(|transaction| {
        if transaction
            .read(&request_path)?
            .is_some_and(|pending| !pending.is_empty())
        {
            return Err(CtlError::SnapshotPending(storage_domain.clone()));
        }
        transaction.write(&result_path, b"")?;
        transaction.set_permissions(&result_path, &owner)?;
        transaction.write(&request_path, &value)?;
        transaction.set_permissions(&request_path, &owner)?;
        Ok(())
    })?;
    let started = Instant::now();
    loop {
        let answered = store.read(&result_path)?.unwrap_or_default();
        let pending = store.read(&request_path)?.unwrap_or_default();
        if !answered.is_empty() && pending.is_empty() {
            let answered = String::from_utf8_lossy(&answered).into_owned();
            return match answered.split_once('\n') {
                Some(("ok", text)) => Ok(text.to_owned()),
                Some(("error", text)) => Err(CtlError::Snapshot(text.trim_end().to_owned())),
                _ => Err(CtlError::Snapshot(format!(
                    "unexpected answer from {storage_domain}: {answered:?}"
                ))),
            };
        }
        if started.elapsed() >= timeout {
            // Withdraw the request, so that it is not run later by surprise.
            let _ = store.write(&request_path, b"");
            return Err(CtlError::SnapshotTimeout {
                storage_domain,
                seconds: timeout.as_secs_f64(),
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use xen_linux::xenstore::fake::FakeXenstored;

    const SD: u16 = 1;

    fn daemon() -> FakeXenstored {
        let daemon = FakeXenstored::new();
        daemon.add_domain(0, "Domain-0");
        daemon.add_domain(SD, "storage-domain");
        daemon.add_domain(5, "vm5");
        daemon
    }

    /// Plays the storage domain's part (as `storage-domain/xen`'s kernel
    /// does, through its own, unprivileged connection) until stopped.
    fn answering(
        daemon: &FakeXenstored,
        answer: &'static str,
    ) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
        let own = daemon.connect(SD);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let worker = thread::spawn(move || {
            let request = format!("/local/domain/{SD}/{SNAPSHOT_REQUEST}");
            let result = format!("/local/domain/{SD}/{SNAPSHOT_RESULT}");
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(Some(value)) = own.read(&request) {
                    if SnapshotRequest::parse(&value).is_some() {
                        own.write(&result, answer.as_bytes()).unwrap();
                        own.write(&request, b"").unwrap();
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        (stop, worker)
    }

    #[test]
    fn a_request_is_answered_through_nodes_only_the_storage_domain_sees() {
        let daemon = daemon();
        let dom0 = daemon.connect(0);
        let (stop, worker) = answering(&daemon, "ok\nsnapshot \"nightly\" of commit 7\n");
        let text = snapshot(
            &dom0,
            &"storage-domain".parse().unwrap(),
            SnapshotRequest::Create(b"nightly"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(text, "snapshot \"nightly\" of commit 7\n");
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        let owner = vec![Permission {
            domain: SD,
            access: Access::None,
        }];
        for node in [SNAPSHOT_REQUEST, SNAPSHOT_RESULT] {
            let path = format!("/local/domain/{SD}/{node}");
            assert_eq!(daemon.permissions(&path), Some(owner.clone()), "{node}");
            // Another guest may not read it.
            assert!(daemon.connect(5).read(&path).is_err(), "{node}");
        }
        assert_eq!(
            daemon.value(&format!("/local/domain/{SD}/{SNAPSHOT_REQUEST}")),
            Some(String::new())
        );
    }

    #[test]
    fn statistics_are_what_the_storage_domain_published() {
        let daemon = daemon();
        let dom0 = daemon.connect(0);
        let backend = "storage-domain".parse().unwrap();
        assert!(matches!(
            statistics(&dom0, &backend),
            Err(CtlError::NoStatistics(_))
        ));
        // The toolstack makes the domain's data/ directory its own (as xl
        // does); the storage domain writes there through its own
        // connection, as its kernel does every 5 s.
        let data = format!("/local/domain/{SD}/data");
        dom0.write(&data, b"").unwrap();
        dom0.set_permissions(
            &data,
            &[Permission {
                domain: SD,
                access: Access::None,
            }],
        )
        .unwrap();
        let own = daemon.connect(SD);
        own.write(
            &format!("/local/domain/{SD}/{STATS_NODE}"),
            b"connections.vrpc 2\nrpc.WRITE 7\n",
        )
        .unwrap();
        assert_eq!(
            statistics(&dom0, &backend).unwrap(),
            "connections.vrpc 2\nrpc.WRITE 7\n"
        );
        assert!(matches!(
            statistics(&dom0, &"nobody".parse().unwrap()),
            Err(CtlError::StorageDomainNotRunning(_))
        ));
    }

    #[test]
    fn refusals_timeouts_and_pending_requests_are_errors() {
        let daemon = daemon();
        let dom0 = daemon.connect(0);
        let backend: DomainSpec = "storage-domain".parse().unwrap();
        let (stop, worker) = answering(&daemon, "error\nno snapshot named \"x\"\n");
        let refused = snapshot(
            &dom0,
            &backend,
            SnapshotRequest::Delete(b"x"),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(refused.to_string(), "no snapshot named \"x\"");
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();

        // Nobody answers: a timeout, and the request is withdrawn.
        let silent = snapshot(
            &dom0,
            &backend,
            SnapshotRequest::List,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(
            matches!(silent, CtlError::SnapshotTimeout { .. }),
            "{silent}"
        );
        let request = format!("/local/domain/{SD}/{SNAPSHOT_REQUEST}");
        assert_eq!(daemon.value(&request), Some(String::new()));

        // A request still pending is not overwritten.
        daemon.set(&request, "create other");
        let busy = snapshot(
            &dom0,
            &backend,
            SnapshotRequest::List,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(busy, CtlError::SnapshotPending(_)), "{busy}");
        assert_eq!(daemon.value(&request).as_deref(), Some("create other"));

        let missing = snapshot(
            &dom0,
            &"nothing".parse().unwrap(),
            SnapshotRequest::List,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(missing, CtlError::StorageDomainNotRunning(_)),
            "{missing}"
        );
    }
}
