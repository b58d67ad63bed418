//! Scheduler operations (`xen/include/public/sched.h`).

use core::mem::size_of;

/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u32 = 0;
/// `SCHEDOP_shutdown`: argument is a [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// `SCHEDOP_poll`: argument is a [`SchedPoll`].
pub const SCHEDOP_POLL: u32 = 3;

/// `enum sched_shutdown_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`: exited normally.
    Poweroff = 0,
    /// `SHUTDOWN_reboot`: restart.
    Reboot = 1,
    /// `SHUTDOWN_suspend`: save state (not supported by this kernel).
    Suspend = 2,
    /// `SHUTDOWN_crash`: tell the toolstack we crashed.
    Crash = 3,
}

/// `struct sched_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedShutdown {
    /// 0: a [`ShutdownReason`].
    pub reason: u32,
}
const _: () = assert!(size_of::<SchedShutdown>() == 4);

/// `struct sched_poll`: block until one of `ports` is pending or the
/// absolute system time `timeout` (nanoseconds, 0 = none) passes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedPoll {
    /// 0: guest handle (virtual address) of an array of `evtchn_port_t`.
    pub ports: u64,
    /// 8: number of ports in the array.
    pub nr_ports: u32,
    /// 12: padding.
    pub padding: u32,
    /// 16: absolute timeout in system-time nanoseconds, 0 for none.
    pub timeout: u64,
}
const _: () = assert!(size_of::<SchedPoll>() == 24);

/// Most ports one `SCHEDOP_poll` accepts (Xen's `do_poll` refuses more
/// with `-EINVAL`; the header does not name the limit).
pub const POLL_MAX_PORTS: usize = 128;
