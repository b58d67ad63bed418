//! Transactions: the client's operations on a private snapshot, applied
//! at commit all at once or not at all.

use xen_abi::xenstore_wire::split_directory;
use xen_abi::xs_wire::MessageType;

use super::{Permission, Result, Xenstore};

/// An open transaction ([`Xenstore::transaction_start`]): the same
/// operations as [`Xenstore`], applied at [`Transaction::commit`] all at
/// once or not at all. Dropped without `commit`, it is abandoned.
#[derive(Debug)]
pub struct Transaction<'a> {
    store: &'a Xenstore,
    id: u32,
    ended: bool,
}

impl<'a> Transaction<'a> {
    /// A transaction the daemon opened as `id`.
    pub(super) fn new(store: &'a Xenstore, id: u32) -> Transaction<'a> {
        Transaction {
            store,
            id,
            ended: false,
        }
    }

    /// The daemon's transaction id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// [`Xenstore::read`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError) other than `ENOENT`.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.store.read_in(self.id, path)
    }

    /// [`Xenstore::read_string`] in the transaction.
    ///
    /// # Errors
    /// As `read`; [`ProtocolError::NotUtf8`](super::ProtocolError::NotUtf8).
    pub fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.store.read_string_in(self.id, path)
    }

    /// [`Xenstore::write`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn write(&self, path: &str, value: &[u8]) -> Result<()> {
        self.store.write_in(self.id, path, value)
    }

    /// [`Xenstore::mkdir`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.store
            .simple_in(MessageType::MakeDirectory, "mkdir", self.id, path)?;
        Ok(())
    }

    /// [`Xenstore::remove`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn remove(&self, path: &str) -> Result<()> {
        self.store
            .simple_in(MessageType::Remove, "remove", self.id, path)?;
        Ok(())
    }

    /// [`Xenstore::directory`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        let payload = self
            .store
            .simple_in(MessageType::Directory, "directory", self.id, path)?;
        Ok(split_directory(&payload))
    }

    /// [`Xenstore::get_permissions`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn get_permissions(&self, path: &str) -> Result<Vec<Permission>> {
        self.store.get_permissions_in(self.id, path)
    }

    /// [`Xenstore::set_permissions`] in the transaction.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn set_permissions(&self, path: &str, permissions: &[Permission]) -> Result<()> {
        self.store.set_permissions_in(self.id, path, permissions)
    }

    /// `XS_TRANSACTION_END` committing: `Ok(false)` when the daemon answers
    /// `EAGAIN` (another change conflicted: run the transaction again).
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError) other than `EAGAIN`.
    pub fn commit(mut self) -> Result<bool> {
        self.ended = true;
        self.store.transaction_end(self.id, true)
    }

    /// `XS_TRANSACTION_END` abandoning every change.
    ///
    /// # Errors
    /// [`XenstoreError`](super::XenstoreError).
    pub fn abort(mut self) -> Result<()> {
        self.ended = true;
        self.store.transaction_end(self.id, false)?;
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // Abandon; a failure leaves the daemon to time the transaction
            // out, which is all an abort could achieve anyway.
            let _ = self.store.transaction_end(self.id, false);
        }
    }
}
