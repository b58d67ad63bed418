//! Doorbells as eventfds, and waiting on one while watching the peer's
//! socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// One direction's doorbell: an eventfd, non-blocking.
#[derive(Debug)]
pub struct EventDoorbell {
    file: OwnedFd,
}

/// What woke a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The doorbell rang (and was reset).
    Rang,
    /// The peer's socket closed or became readable: the peer is gone.
    PeerGone,
    /// The timeout passed.
    TimedOut,
    /// A [`Waker`] of the waiter's own (not the peer) woke it.
    Woken,
}

/// Wakes a thread waiting on a [`Connection`](crate::Connection) from
/// another thread of the same process (see
/// [`Connection::waker`](crate::Connection::waker)): a second eventfd the
/// waiter watches, so the peer's doorbell keeps its meaning.
#[derive(Debug, Clone)]
pub struct Waker {
    file: std::sync::Arc<OwnedFd>,
}

impl Waker {
    /// A fresh waker.
    ///
    /// # Errors
    /// The `eventfd` failure.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            file: std::sync::Arc::new(EventDoorbell::new()?.file),
        })
    }

    /// Wakes the waiter (or its next wait, if it is not waiting now).
    pub fn wake(&self) {
        // EAGAIN: the counter is at its maximum, a wake-up is pending.
        let _ = nix::unistd::write(&*self.file, &1u64.to_ne_bytes());
    }

    pub(crate) fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Resets the counter; returns whether it had been woken.
    pub(crate) fn clear(&self) -> bool {
        let mut buffer = [0u8; 8];
        matches!(nix::unistd::read(&*self.file, &mut buffer), Ok(8))
    }
}

impl EventDoorbell {
    /// A fresh eventfd.
    ///
    /// # Errors
    /// The `eventfd` failure.
    pub fn new() -> io::Result<Self> {
        let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|error| io::Error::from_raw_os_error(error as i32))?;
        Ok(Self {
            file: OwnedFd::from(event),
        })
    }

    /// Wraps an eventfd received from a peer, after checking that it is
    /// one (its `/proc/self/fd` link names an eventfd inode): a doorbell
    /// must never write into some other file the peer chose.
    ///
    /// # Errors
    /// `InvalidInput` when the file is not an eventfd.
    pub fn from_received(file: OwnedFd) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "doorbell is not an eventfd",
            ));
        }
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|error| io::Error::from_raw_os_error(error as i32))?;
        Ok(Self { file })
    }

    /// The eventfd, to send to the peer.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Resets the counter; returns whether it had rung.
    pub fn clear(&self) -> bool {
        let mut buffer = [0u8; 8];
        matches!(nix::unistd::read(&self.file, &mut buffer), Ok(8))
    }

    /// Sleeps until the doorbell rings, `peer` (the connection's socket)
    /// closes or becomes readable, or `timeout` passes (`None`: no limit).
    ///
    /// # Errors
    /// The `poll` failure.
    pub fn wait(&self, peer: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<Wake> {
        self.wait_or_woken(peer, None, timeout)
    }

    /// [`EventDoorbell::wait`], also woken by `waker` ([`Wake::Woken`];
    /// the doorbell is then left as it is, so a ring is not lost).
    ///
    /// # Errors
    /// The `poll` failure.
    pub fn wait_or_woken(
        &self,
        peer: BorrowedFd<'_>,
        waker: Option<&Waker>,
        timeout: Option<Duration>,
    ) -> io::Result<Wake> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(duration) => PollTimeout::try_from(duration).unwrap_or(PollTimeout::MAX),
        };
        let mut descriptors = vec![
            PollFd::new(self.file.as_fd(), PollFlags::POLLIN),
            PollFd::new(peer, PollFlags::POLLIN),
        ];
        if let Some(waker) = waker {
            descriptors.push(PollFd::new(waker.file(), PollFlags::POLLIN));
        }
        loop {
            match poll(&mut descriptors, timeout) {
                Ok(0) => return Ok(Wake::TimedOut),
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(io::Error::from_raw_os_error(error as i32)),
            }
        }
        let peer_events = descriptors[1].revents().unwrap_or(PollFlags::empty());
        if !peer_events.is_empty() {
            return Ok(Wake::PeerGone);
        }
        // Woken wins: a doorbell that rang too stays set, so the next wait
        // returns at once.
        if waker.is_some_and(Waker::clear) {
            return Ok(Wake::Woken);
        }
        self.clear();
        Ok(Wake::Rang)
    }
}

impl vrpc::Doorbell for EventDoorbell {
    fn notify(&self) {
        // EAGAIN means the counter is at its maximum: the peer has a
        // wake-up pending already, which is all a doorbell promises.
        let _ = nix::unistd::write(&self.file, &1u64.to_ne_bytes());
    }
}
