//! An in-memory xenstored for host tests (feature `test-utils`).
//!
//! Enough of the daemon to run the dom0 tool and the frontends' xenstore
//! logic on the host: nodes with values and permissions, implicit parents,
//! recursive remove, permission checks for unprivileged connections,
//! transactions (a private copy per transaction, `EAGAIN` on commit when
//! the store changed meanwhile, or when the test asks for it), and watches
//! (one event on registration, then one per change at or below the path).
//! Each [`FakeXenstored::connect`] serves one connection on a thread, as
//! one domain; domain 0 is privileged.
//!
//! NOTE: no quotas, no `XS_DIRECTORY_PART`, no `@introduceDomain` style
//! special watches; relative paths resolve against `/local/domain/<id>`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use xen_abi::xenstore_wire::{encode_permissions, nul_terminated, parse_permissions};
use xen_abi::xs_wire::{MessageHeader, MessageType, HEADER_SIZE};

use super::{Access, Permission, Xenstore};

/// Node path -> (value, permissions).
type Tree = BTreeMap<String, (String, Vec<Permission>)>;

#[derive(Debug)]
struct Watch {
    path: String,
    token: String,
    connection: Arc<Mutex<UnixStream>>,
}

#[derive(Debug)]
struct Pending {
    base_generation: u64,
    tree: Tree,
    changed: Vec<String>,
}

#[derive(Debug, Default)]
struct Store {
    tree: Tree,
    generation: u64,
    next_transaction: u32,
    transactions: HashMap<u32, Pending>,
    watches: Vec<Watch>,
    failing_commits: usize,
}

/// The fake daemon; clones share one store.
#[derive(Clone, Debug)]
pub struct FakeXenstored {
    store: Arc<Mutex<Store>>,
}

impl Default for FakeXenstored {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(index) => Some(&path[..index]),
    }
}

fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// The access `domain` has to a node with `permissions`
/// (`perm_for_conn` in xenstored).
fn access_of(domain: u16, permissions: &[Permission]) -> Access {
    if domain == 0 || permissions.first().map(|owner| owner.domain) == Some(domain) {
        return Access::Both;
    }
    permissions[1..]
        .iter()
        .find(|permission| permission.domain == domain)
        .or(permissions.first())
        .map_or(Access::None, |permission| permission.access)
}

fn may_read(access: Access) -> bool {
    matches!(access, Access::Read | Access::Both)
}

fn may_write(access: Access) -> bool {
    matches!(access, Access::Write | Access::Both)
}

impl FakeXenstored {
    /// A store holding `/` and `/local/domain` (owned by dom0, unreadable
    /// by others, as xenstored starts).
    pub fn new() -> FakeXenstored {
        let mut store = Store::default();
        let root = vec![Permission {
            domain: 0,
            access: Access::None,
        }];
        for path in ["/", "/local", "/local/domain"] {
            store
                .tree
                .insert(path.to_owned(), (String::new(), root.clone()));
        }
        FakeXenstored {
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Adds a running domain as xl does: `/local/domain/<id>` readable by
    /// it, with `name` and `domid`, and a `device` directory it owns.
    pub fn add_domain(&self, domain: u16, name: &str) {
        let mut store = lock(&self.store);
        let base = format!("/local/domain/{domain}");
        let read_only = vec![
            Permission {
                domain: 0,
                access: Access::None,
            },
            Permission {
                domain,
                access: Access::Read,
            },
        ];
        let owned = vec![Permission {
            domain,
            access: Access::None,
        }];
        store
            .tree
            .insert(base.clone(), (String::new(), read_only.clone()));
        store
            .tree
            .insert(format!("{base}/name"), (name.to_owned(), read_only.clone()));
        store
            .tree
            .insert(format!("{base}/domid"), (domain.to_string(), read_only));
        store
            .tree
            .insert(format!("{base}/device"), (String::new(), owned));
        store.generation += 1;
    }

    /// Removes a domain's whole subtree (the domain was destroyed).
    pub fn remove_domain(&self, domain: u16) {
        let base = format!("/local/domain/{domain}");
        let mut store = lock(&self.store);
        store.tree.retain(|path, _| !is_at_or_below(path, &base));
        store.generation += 1;
        notify(&store, &base);
    }

    /// The value at `path`, bypassing permissions.
    pub fn value(&self, path: &str) -> Option<String> {
        lock(&self.store)
            .tree
            .get(path)
            .map(|(value, _)| value.clone())
    }

    /// The permissions of `path`.
    pub fn permissions(&self, path: &str) -> Option<Vec<Permission>> {
        lock(&self.store)
            .tree
            .get(path)
            .map(|(_, permissions)| permissions.clone())
    }

    /// Every path at or below `path`, sorted.
    pub fn paths_below(&self, path: &str) -> Vec<String> {
        lock(&self.store)
            .tree
            .keys()
            .filter(|node| is_at_or_below(node, path))
            .cloned()
            .collect()
    }

    /// Sets `path` as dom0 would, firing watches: what another party does
    /// while a test runs.
    pub fn set(&self, path: &str, value: &str) {
        let mut store = lock(&self.store);
        let mut tree = std::mem::take(&mut store.tree);
        let _ = write_node(&mut tree, 0, path, Some(value));
        store.tree = tree;
        store.generation += 1;
        notify(&store, path);
    }

    /// Removes `path` and below, firing watches.
    pub fn remove(&self, path: &str) {
        let mut store = lock(&self.store);
        store.tree.retain(|node, _| !is_at_or_below(node, path));
        store.generation += 1;
        notify(&store, path);
    }

    /// The next `count` commits answer `EAGAIN`.
    pub fn fail_next_commits(&self, count: usize) {
        lock(&self.store).failing_commits = count;
    }

    /// Listens on a unix socket at `path` (as xenstored does in dom0) and
    /// serves every connection as `domain`, each on its own thread, for
    /// the rest of the process: for tests that run a binary with the
    /// socket's path.
    ///
    /// # Errors
    /// The bind failure.
    pub fn listen(&self, path: &std::path::Path, domain: u16) -> std::io::Result<()> {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        let store = Arc::clone(&self.store);
        thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else {
                    break;
                };
                let store = Arc::clone(&store);
                thread::spawn(move || serve(&store, domain, connection));
            }
        });
        Ok(())
    }

    /// A client connected as `domain`, served on a new thread until the
    /// client hangs up.
    pub fn connect(&self, domain: u16) -> Xenstore {
        let (client, server) = UnixStream::pair().expect("socketpair");
        let store = Arc::clone(&self.store);
        thread::spawn(move || serve(&store, domain, server));
        Xenstore::from_connection(client.into())
    }
}

/// Creates or updates `path` (and missing parents, inheriting
/// permissions) as `domain`; `value` `None` leaves an existing value.
fn write_node(
    tree: &mut Tree,
    domain: u16,
    path: &str,
    value: Option<&str>,
) -> Result<(), &'static str> {
    if let Some((old, permissions)) = tree.get_mut(path) {
        if !may_write(access_of(domain, permissions)) {
            return Err("EACCES");
        }
        if let Some(value) = value {
            *old = value.to_owned();
        }
        return Ok(());
    }
    let parent_path = parent(path).ok_or("EINVAL")?;
    if !tree.contains_key(parent_path) {
        write_node(tree, domain, parent_path, None)?;
    }
    let parent_permissions = tree
        .get(parent_path)
        .map(|(_, permissions)| permissions.clone())
        .ok_or("ENOENT")?;
    if !may_write(access_of(domain, &parent_permissions)) {
        return Err("EACCES");
    }
    let mut permissions = parent_permissions;
    if domain != 0 {
        permissions[0].domain = domain;
    }
    tree.insert(
        path.to_owned(),
        (value.unwrap_or_default().to_owned(), permissions),
    );
    Ok(())
}

fn notify(store: &Store, changed: &str) {
    for watch in &store.watches {
        if is_at_or_below(changed, &watch.path) || is_at_or_below(&watch.path, changed) {
            send_event(watch, changed);
        }
    }
}

fn send_event(watch: &Watch, path: &str) {
    let mut payload = nul_terminated(path);
    payload.extend(nul_terminated(&watch.token));
    let mut connection = watch
        .connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = send(&mut connection, MessageType::WatchEvent, 0, 0, &payload);
}

fn send(
    stream: &mut UnixStream,
    message_type: MessageType,
    request_id: u32,
    transaction_id: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let header = MessageHeader {
        message_type: message_type.number(),
        request_id,
        transaction_id,
        len: payload.len() as u32,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes)
}

fn serve(store: &Arc<Mutex<Store>>, domain: u16, mut stream: UnixStream) {
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone socket")));
    loop {
        let mut head = [0u8; HEADER_SIZE];
        if stream.read_exact(&mut head).is_err() {
            break;
        }
        let Some(header) = MessageHeader::decode(&head) else {
            break;
        };
        let mut payload = vec![0u8; header.len as usize];
        if stream.read_exact(&mut payload).is_err() {
            break;
        }
        let message_type = MessageType::from_number(header.message_type);
        let answer = handle(
            store,
            domain,
            &writer,
            message_type,
            header.transaction_id,
            &payload,
        );
        let mut connection = writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent = match answer {
            Ok(reply) => send(
                &mut connection,
                message_type,
                header.request_id,
                header.transaction_id,
                &reply,
            ),
            Err(name) => send(
                &mut connection,
                MessageType::Error,
                header.request_id,
                header.transaction_id,
                &nul_terminated(name),
            ),
        };
        drop(connection);
        if message_type == MessageType::Watch && sent.is_ok() {
            // xenstored fires every new watch once, after the reply.
            let store = lock(store);
            if let Some(watch) = store.watches.last() {
                send_event(watch, &watch.path.clone());
            }
        }
    }
    let mut store = lock(store);
    store
        .watches
        .retain(|watch| !Arc::ptr_eq(&watch.connection, &writer));
}

fn handle(
    store: &Arc<Mutex<Store>>,
    domain: u16,
    writer: &Arc<Mutex<UnixStream>>,
    message_type: MessageType,
    transaction: u32,
    payload: &[u8],
) -> Result<Vec<u8>, &'static str> {
    let mut parts = payload.split(|&byte| byte == 0);
    let first = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let path = if first.starts_with('/') {
        first.clone()
    } else {
        format!("/local/domain/{domain}/{first}")
    };
    let mut store = lock(store);
    let store = &mut *store;
    match message_type {
        MessageType::TransactionStart => {
            store.next_transaction += 1;
            let id = store.next_transaction;
            let pending = Pending {
                base_generation: store.generation,
                tree: store.tree.clone(),
                changed: Vec::new(),
            };
            store.transactions.insert(id, pending);
            return Ok(nul_terminated(&id.to_string()));
        }
        MessageType::TransactionEnd => {
            let pending = store.transactions.remove(&transaction).ok_or("ENOENT")?;
            if first != "T" {
                return Ok(b"OK\0".to_vec());
            }
            if store.failing_commits > 0 {
                store.failing_commits -= 1;
                return Err("EAGAIN");
            }
            if pending.base_generation != store.generation {
                return Err("EAGAIN");
            }
            if !pending.changed.is_empty() {
                store.tree = pending.tree;
                store.generation += 1;
                for changed in &pending.changed {
                    notify(store, changed);
                }
            }
            return Ok(b"OK\0".to_vec());
        }
        MessageType::Watch => {
            let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            store.watches.push(Watch {
                path,
                token,
                connection: Arc::clone(writer),
            });
            return Ok(b"OK\0".to_vec());
        }
        MessageType::Unwatch => {
            let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            store.watches.retain(|watch| {
                !(Arc::ptr_eq(&watch.connection, writer)
                    && watch.path == path
                    && watch.token == token)
            });
            return Ok(b"OK\0".to_vec());
        }
        MessageType::GetDomainPath => {
            return Ok(nul_terminated(&format!("/local/domain/{first}")));
        }
        _ => {}
    }
    let in_transaction = transaction != 0;
    let (tree, generation_changed) = if in_transaction {
        let pending = store.transactions.get_mut(&transaction).ok_or("ENOENT")?;
        (&mut pending.tree, None)
    } else {
        (&mut store.tree, Some(()))
    };
    let readable = |tree: &Tree, path: &str| -> Result<(), &'static str> {
        let (_, permissions) = tree.get(path).ok_or("ENOENT")?;
        if may_read(access_of(domain, permissions)) {
            Ok(())
        } else {
            Err("EACCES")
        }
    };
    let result = match message_type {
        MessageType::Read => {
            readable(tree, &path)?;
            Ok(tree[&path].0.clone().into_bytes())
        }
        MessageType::Directory => {
            readable(tree, &path)?;
            let mut names = Vec::new();
            for node in tree.keys() {
                if node != &path && parent(node) == Some(path.as_str()) {
                    let name = &node[node.rfind('/').map_or(0, |index| index + 1)..];
                    names.extend_from_slice(name.as_bytes());
                    names.push(0);
                }
            }
            Ok(names)
        }
        MessageType::GetPermissions => {
            readable(tree, &path)?;
            Ok(encode_permissions(&tree[&path].1))
        }
        MessageType::Write => {
            let value = payload.get(first.len() + 1..).unwrap_or_default();
            let value = std::str::from_utf8(value).map_err(|_| "EINVAL")?;
            write_node(tree, domain, &path, Some(value)).map(|()| b"OK\0".to_vec())
        }
        MessageType::MakeDirectory => {
            write_node(tree, domain, &path, None).map(|()| b"OK\0".to_vec())
        }
        MessageType::Remove => {
            match tree.get(&path) {
                None => {
                    // xenstored: fine when the parent exists.
                    let parent_exists =
                        parent(&path).is_some_and(|parent| tree.contains_key(parent));
                    if parent_exists {
                        return Ok(b"OK\0".to_vec());
                    }
                    Err("ENOENT")
                }
                Some((_, permissions)) if !may_write(access_of(domain, permissions)) => {
                    Err("EACCES")
                }
                Some(_) => {
                    tree.retain(|node, _| !is_at_or_below(node, &path));
                    Ok(b"OK\0".to_vec())
                }
            }
        }
        MessageType::SetPermissions => {
            let (_, permissions) = tree.get(&path).ok_or("ENOENT")?;
            let owner = permissions.first().map(|owner| owner.domain);
            if domain != 0 && owner != Some(domain) {
                return Err("EACCES");
            }
            let new = parse_permissions(payload.get(first.len() + 1..).unwrap_or_default())
                .ok_or("EINVAL")?;
            if let Some((_, permissions)) = tree.get_mut(&path) {
                *permissions = new;
            }
            Ok(b"OK\0".to_vec())
        }
        _ => Err("ENOSYS"),
    };
    let changes = matches!(
        message_type,
        MessageType::Write
            | MessageType::MakeDirectory
            | MessageType::Remove
            | MessageType::SetPermissions
    );
    if result.is_ok() && changes {
        if generation_changed.is_some() {
            store.generation += 1;
            notify(store, &path);
        } else if let Some(pending) = store.transactions.get_mut(&transaction) {
            pending.changed.push(path);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::XenstoreErrno;
    use std::time::Duration;

    #[test]
    fn permissions_keep_guests_apart() {
        let daemon = FakeXenstored::new();
        daemon.add_domain(1, "one");
        daemon.add_domain(2, "two");
        let dom0 = daemon.connect(0);
        let one = daemon.connect(1);
        dom0.write("/local/domain/1/device/x", b"v").unwrap();
        // Inherited from `device`, owned by domain 1.
        assert_eq!(one.read_string("device/x").unwrap().as_deref(), Some("v"));
        let two = daemon.connect(2);
        let error = two.read("/local/domain/1/device/x").unwrap_err();
        assert_eq!(error.errno(), Some(&XenstoreErrno::PermissionDenied));
        let error = two.write("/local/domain/1/device/y", b"v").unwrap_err();
        assert_eq!(error.errno(), Some(&XenstoreErrno::PermissionDenied));
        assert_eq!(one.domain_id().unwrap(), 1);
        assert_eq!(dom0.domain_id_by_name("two").unwrap(), Some(2));
    }

    #[test]
    fn transactions_conflict_and_watches_fire() {
        let daemon = FakeXenstored::new();
        let store = daemon.connect(0);
        store.watch("/w", "token").unwrap();
        let first = store
            .next_watch_event(Some("token"), Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        assert_eq!(first.path, "/w");
        let transaction = store.transaction_start().unwrap();
        transaction.write("/w/a", b"1").unwrap();
        assert_eq!(daemon.value("/w/a"), None);
        daemon.set("/elsewhere", "x");
        assert!(!transaction.commit().unwrap());
        assert_eq!(daemon.value("/w/a"), None);
        let mut runs = 0;
        store
            .transaction(|transaction| -> Result<(), crate::XenstoreError> {
                runs += 1;
                transaction.write("/w/a", b"2")
            })
            .unwrap();
        assert_eq!((runs, daemon.value("/w/a").as_deref()), (1, Some("2")));
        // A transaction dropped without commit changes nothing.
        {
            let transaction = store.transaction_start().unwrap();
            transaction.write("/w/dropped", b"x").unwrap();
        }
        assert_eq!(daemon.value("/w/dropped"), None);
        store
            .write_all_in_transaction(&[
                ("/w/b".to_owned(), b"1".to_vec()),
                ("/w/c".to_owned(), b"2".to_vec()),
            ])
            .unwrap();
        assert_eq!(daemon.value("/w/c").as_deref(), Some("2"));
        let event = store
            .next_watch_event(Some("token"), Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        assert_eq!(event.path, "/w/a");
    }
}
