//! Event channels through `/dev/xen/evtchn`.
//!
//! Each [`EventChannel`] opens the device once and binds one port on it.
//! When an event arrives the kernel masks the port and queues its number;
//! `read(2)` returns queued ports and writing them back unmasks them, so
//! after each wake-up the port must be read and written back or no further
//! event is delivered. Header: `include/uapi/xen/evtchn.h`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::ioctl;

/// What ended a [`EventChannel::wait`]; both false means the timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// The event channel fired (and was unmasked again).
    pub event: bool,
    /// The other file descriptor became readable, hung up or failed. It is
    /// not read: draining it is the caller's business.
    pub also_wake: bool,
}

impl Woken {
    /// Neither woke us: the timeout passed.
    pub fn timed_out(&self) -> bool {
        !self.event && !self.also_wake
    }
}

/// One bound event channel port; dropping it unbinds the port.
#[derive(Debug)]
pub struct EventChannel {
    device: OwnedFd,
    port: u32,
}

impl EventChannel {
    /// Allocates a port that `remote` may bind to (the frontend's half of
    /// the handshake: the port number goes into xenstore).
    ///
    /// # Errors
    /// The open or ioctl failure.
    pub fn bind_unbound(remote: u16) -> io::Result<EventChannel> {
        let device = crate::open_device("/dev/xen/evtchn", true)?;
        let mut argument = ioctl::EvtchnBindUnboundPort {
            remote_domain: u32::from(remote),
        };
        // SAFETY: `argument` is the struct IOCTL_EVTCHN_BIND_UNBOUND_PORT
        // reads, alive for the call.
        let port = unsafe {
            ioctl::call(
                device.as_fd(),
                ioctl::IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                (&raw mut argument).cast(),
            )
        }?;
        Ok(EventChannel {
            device,
            port: port as u32,
        })
    }

    /// Binds to `remote_port`, which `remote` allocated unbound for us (the
    /// backend's half).
    ///
    /// # Errors
    /// The open or ioctl failure.
    pub fn bind_interdomain(remote: u16, remote_port: u32) -> io::Result<EventChannel> {
        let device = crate::open_device("/dev/xen/evtchn", true)?;
        let mut argument = ioctl::EvtchnBindInterdomain {
            remote_domain: u32::from(remote),
            remote_port,
        };
        // SAFETY: `argument` is the struct IOCTL_EVTCHN_BIND_INTERDOMAIN
        // reads, alive for the call.
        let port = unsafe {
            ioctl::call(
                device.as_fd(),
                ioctl::IOCTL_EVTCHN_BIND_INTERDOMAIN,
                (&raw mut argument).cast(),
            )
        }?;
        Ok(EventChannel {
            device,
            port: port as u32,
        })
    }

    /// The local port number.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Signals the remote end.
    ///
    /// # Errors
    /// The ioctl failure (the port was closed by the other side, ...).
    pub fn notify(&self) -> io::Result<()> {
        let mut argument = ioctl::EvtchnPort { port: self.port };
        // SAFETY: `argument` is the struct IOCTL_EVTCHN_NOTIFY reads, alive
        // for the call.
        unsafe {
            ioctl::call(
                self.device.as_fd(),
                ioctl::IOCTL_EVTCHN_NOTIFY,
                (&raw mut argument).cast(),
            )
        }?;
        Ok(())
    }

    /// Takes the pending events off the device and unmasks the port again;
    /// whether any was pending. Never blocks.
    ///
    /// # Errors
    /// The read or write failure.
    pub fn clear_pending(&self) -> io::Result<bool> {
        let mut buffer = [0u8; 64];
        let mut any = false;
        loop {
            match nix::unistd::read(&self.device, &mut buffer) {
                Ok(0) => break,
                Ok(length) => {
                    any = true;
                    if length < buffer.len() {
                        break;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                // The device's queue overflowed (it cannot with one port
                // per file, but the device says so until reset): empty it
                // and count an event; the port is unmasked below.
                Err(nix::errno::Errno::EFBIG) => {
                    // SAFETY: IOCTL_EVTCHN_RESET takes no argument.
                    unsafe {
                        ioctl::call(
                            self.device.as_fd(),
                            ioctl::IOCTL_EVTCHN_RESET,
                            std::ptr::null_mut(),
                        )
                    }?;
                    any = true;
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if any {
            // Unmask: only our port is bound on this file, so writing it back
            // once answers every queued copy.
            nix::unistd::write(&self.device, &self.port.to_ne_bytes())?;
        }
        Ok(any)
    }

    /// Sleeps until the event channel fires, `also_wake` becomes readable
    /// (an eventfd saying "peer gone" or "stop", a socket), or `timeout`
    /// passes (`None`: no timeout). A fired event is cleared and the port
    /// unmasked before returning.
    ///
    /// # Errors
    /// The poll, read or write failure.
    pub fn wait(&self, timeout: Option<Duration>, also_wake: BorrowedFd<'_>) -> io::Result<Woken> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            let poll_timeout = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut descriptors = [
                PollFd::new(self.device.as_fd(), PollFlags::POLLIN),
                PollFd::new(also_wake, PollFlags::POLLIN),
            ];
            match poll(&mut descriptors, poll_timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => return Err(error.into()),
            }
            let ready = |descriptor: &PollFd<'_>| {
                descriptor
                    .revents()
                    .is_some_and(|events| !events.is_empty())
            };
            let event_ready = ready(&descriptors[0]);
            let woken = Woken {
                event: event_ready && self.clear_pending()?,
                also_wake: ready(&descriptors[1]),
            };
            let expired = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            if !woken.timed_out() || expired {
                return Ok(woken);
            }
        }
    }
}

impl AsFd for EventChannel {
    /// The device file, readable when an event is pending: for callers that
    /// poll many files themselves (then call [`EventChannel::clear_pending`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
}

impl vrpc::Doorbell for EventChannel {
    fn notify(&self) {
        // A failed notify means the remote end closed the channel; the ring
        // protocol learns that through xenstore, not through the doorbell.
        let _ = EventChannel::notify(self);
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        let mut argument = ioctl::EvtchnPort { port: self.port };
        // SAFETY: `argument` is the struct IOCTL_EVTCHN_UNBIND reads, alive
        // for the call. (Closing the file would unbind too; unbinding first
        // makes the intent explicit.)
        let _ = unsafe {
            ioctl::call(
                self.device.as_fd(),
                ioctl::IOCTL_EVTCHN_UNBIND,
                (&raw mut argument).cast(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woken_classifies() {
        assert!(Woken::default().timed_out());
        assert!(!Woken {
            event: true,
            also_wake: false
        }
        .timed_out());
    }

    #[test]
    fn loops_back_under_xen() {
        if !std::path::Path::new("/dev/xen/evtchn").exists() {
            eprintln!("skipped: /dev/xen/evtchn absent (not running under Xen)");
            return;
        }
        let Ok(domain) = crate::Xenstore::open().and_then(|store| store.domain_id()) else {
            eprintln!("skipped: no xenstore to learn our domain id");
            return;
        };
        let unbound = EventChannel::bind_unbound(domain).unwrap();
        let bound = EventChannel::bind_interdomain(domain, unbound.port()).unwrap();
        let stop = nix::sys::eventfd::EventFd::new().unwrap();
        bound.notify().unwrap();
        let woken = unbound
            .wait(Some(Duration::from_secs(5)), stop.as_fd())
            .unwrap();
        assert!(woken.event);
        let woken = unbound
            .wait(Some(Duration::from_millis(50)), stop.as_fd())
            .unwrap();
        assert!(woken.timed_out());
    }
}
