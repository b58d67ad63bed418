//! Hypercalls through the page Xen fills at boot (`boot/entry.s`).
//!
//! A 64-bit PV hypercall is `call hypercall_page + 32 * number` with the
//! arguments in rdi, rsi, rdx, r10, r8 and the result in rax. Each public
//! function here wraps one operation with arguments that are sound by
//! construction; `update_va_mapping` is the exception and is `unsafe`.

use core::arch::asm;
use xen_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnClose, EvtchnSend, EVTCHNOP_ALLOC_UNBOUND,
    EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_CLOSE, EVTCHNOP_SEND,
};
use xen_abi::grant_table::{
    GnttabCopy, GnttabMapGrantRef, GnttabSetupTable, GnttabUnmapGrantRef, GNTTABOP_COPY,
    GNTTABOP_MAP_GRANT_REF, GNTTABOP_SETUP_TABLE, GNTTABOP_UNMAP_GRANT_REF,
};
use xen_abi::sched::{
    SchedPoll, SchedShutdown, ShutdownReason, POLL_MAX_PORTS, SCHEDOP_POLL, SCHEDOP_SHUTDOWN,
    SCHEDOP_YIELD,
};
use xen_abi::xen::{hypercall, TrapInfo, UVMF_INVLPG, XENVER_VERSION};
use xen_abi::{DomainId, EventChannelPort};

extern "C" {
    /// The page Xen fills with hypercall stubs (`boot/entry.s`).
    static hypercall_page: [u8; 4096];
}

/// A negative errno from Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallError(pub i64);

impl core::fmt::Display for HypercallError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "hypercall failed with errno {}", -self.0)
    }
}

/// Raw three-argument hypercall.
///
/// # Safety
/// The arguments must be valid for operation `number`: pointers point to
/// live, correctly typed memory for the duration of the call, and the
/// operation must not break memory the compiler relies on.
unsafe fn call3(number: u32, first: u64, second: u64, third: u64) -> i64 {
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    let entry = page + u64::from(number) * 32;
    let result: i64;
    // SAFETY: the stub at `entry` was written by Xen (its ELF note names the
    // page); it preserves every register but rax and those we list, uses
    // the stack below rsp (we have no red zone: x86_64-unknown-none), and
    // the caller vouches for the arguments.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") first => _,
            inlateout("rsi") second => _,
            inlateout("rdx") third => _,
            lateout("r10") _,
            lateout("r8") _,
            lateout("rcx") _,
            lateout("r11") _,
            lateout("rax") result,
        );
    }
    result
}

fn check(result: i64) -> Result<i64, HypercallError> {
    if result < 0 {
        Err(HypercallError(result))
    } else {
        Ok(result)
    }
}

/// `SCHEDOP_yield`.
pub fn yield_now() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { call3(hypercall::SCHED_OP, u64::from(SCHEDOP_YIELD), 0, 0) };
}

/// `SCHEDOP_poll`: block until one of `ports` is pending or the absolute
/// system time `deadline_ns` (0: none) passes. Xen takes at most
/// [`POLL_MAX_PORTS`] ports; ports beyond that are not waited on (callers
/// keep their port count within it).
pub fn poll(ports: &[EventChannelPort], deadline_ns: u64) {
    let raw: [u32; POLL_MAX_PORTS] =
        core::array::from_fn(|index| ports.get(index).map_or(0, |port| port.0));
    let poll = SchedPoll {
        ports: raw.as_ptr() as u64,
        nr_ports: ports.len().min(raw.len()) as u32,
        padding: 0,
        timeout: deadline_ns,
    };
    // SAFETY: `poll` and the port array it points to live across the call;
    // Xen only reads them.
    unsafe {
        call3(
            hypercall::SCHED_OP,
            u64::from(SCHEDOP_POLL),
            core::ptr::addr_of!(poll) as u64,
            0,
        )
    };
}

/// `SCHEDOP_shutdown`: end the domain. Does not return.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let request = SchedShutdown {
        reason: reason as u32,
    };
    loop {
        // SAFETY: `request` lives across the call; Xen only reads it.
        unsafe {
            call3(
                hypercall::SCHED_OP,
                u64::from(SCHEDOP_SHUTDOWN),
                core::ptr::addr_of!(request) as u64,
                0,
            )
        };
        // The vCPU is descheduled for good; should Xen return, ask again.
        yield_now();
    }
}

/// `EVTCHNOP_send`: notify the other end of `port`.
pub fn notify(port: EventChannelPort) {
    let send = EvtchnSend { port: port.0 };
    // SAFETY: `send` lives across the call; Xen only reads it.
    unsafe {
        call3(
            hypercall::EVENT_CHANNEL_OP,
            u64::from(EVTCHNOP_SEND),
            core::ptr::addr_of!(send) as u64,
            0,
        )
    };
}

/// `EVTCHNOP_alloc_unbound`: a port `remote` may bind to.
///
/// # Errors
/// [`HypercallError`] from Xen.
pub fn alloc_unbound(remote: DomainId) -> Result<EventChannelPort, HypercallError> {
    let mut request = EvtchnAllocUnbound {
        dom: DomainId::SELF.0,
        remote_dom: remote.0,
        port: 0,
    };
    // SAFETY: `request` lives across the call; Xen writes only its `port`.
    check(unsafe {
        call3(
            hypercall::EVENT_CHANNEL_OP,
            u64::from(EVTCHNOP_ALLOC_UNBOUND),
            core::ptr::addr_of_mut!(request) as u64,
            0,
        )
    })?;
    Ok(EventChannelPort(request.port))
}

/// `EVTCHNOP_bind_interdomain`: a local port bound to `remote`'s unbound
/// port `remote_port` (Xen sets the new port pending).
///
/// # Errors
/// [`HypercallError`] from Xen (for example when the remote port is not
/// unbound, or does not accept us).
pub fn bind_interdomain(
    remote: DomainId,
    remote_port: EventChannelPort,
) -> Result<EventChannelPort, HypercallError> {
    let mut request = EvtchnBindInterdomain {
        remote_dom: remote.0,
        padding: 0,
        remote_port: remote_port.0,
        local_port: 0,
    };
    // SAFETY: `request` lives across the call; Xen writes only its
    // `local_port`.
    check(unsafe {
        call3(
            hypercall::EVENT_CHANNEL_OP,
            u64::from(EVTCHNOP_BIND_INTERDOMAIN),
            core::ptr::addr_of_mut!(request) as u64,
            0,
        )
    })?;
    Ok(EventChannelPort(request.local_port))
}

/// `EVTCHNOP_close`.
pub fn close(port: EventChannelPort) {
    let request = EvtchnClose { port: port.0 };
    // SAFETY: `request` lives across the call; Xen only reads it.
    unsafe {
        call3(
            hypercall::EVENT_CHANNEL_OP,
            u64::from(EVTCHNOP_CLOSE),
            core::ptr::addr_of!(request) as u64,
            0,
        )
    };
}

/// `GNTTABOP_setup_table` for this domain: fills `frames` with the MFNs
/// of the grant table's frames.
///
/// # Errors
/// [`HypercallError`] when the call or its status fails.
pub fn grant_table_setup(frames: &mut [u64]) -> Result<(), HypercallError> {
    let mut request = GnttabSetupTable {
        dom: DomainId::SELF.0,
        padding0: 0,
        nr_frames: frames.len() as u32,
        status: 0,
        padding1: [0; 6],
        frame_list: frames.as_mut_ptr() as u64,
    };
    // SAFETY: `request` and the `frames` array it points to (exactly
    // `nr_frames` long) live across the call; Xen writes status and frames.
    check(unsafe {
        call3(
            hypercall::GRANT_TABLE_OP,
            u64::from(GNTTABOP_SETUP_TABLE),
            core::ptr::addr_of_mut!(request) as u64,
            1,
        )
    })?;
    if request.status != 0 {
        return Err(HypercallError(i64::from(request.status)));
    }
    Ok(())
}

/// `GNTTABOP_map_grant_ref` for every entry of `operations`; each entry's
/// `status` and `handle` say how it went.
///
/// # Safety
/// Each entry's `host_addr` (with `GNTMAP_host_map`) is a page-aligned
/// virtual address of ours that nothing accesses as its old contents any
/// more: after the call it shows the foreign page instead.
///
/// # Errors
/// [`HypercallError`] when the call as a whole fails (then no entry was
/// mapped past the failing one; check every `status`).
pub unsafe fn grant_map(operations: &mut [GnttabMapGrantRef]) -> Result<(), HypercallError> {
    // SAFETY: the array (exactly `len` entries) lives across the call; Xen
    // writes only the OUT fields; the caller vouches for the addresses.
    check(unsafe {
        call3(
            hypercall::GRANT_TABLE_OP,
            u64::from(GNTTABOP_MAP_GRANT_REF),
            operations.as_mut_ptr() as u64,
            operations.len() as u64,
        )
    })
    .map(|_| ())
}

/// `GNTTABOP_unmap_grant_ref` for every entry of `operations`.
///
/// # Safety
/// Each entry names a mapping made by [`grant_map`] that nothing accesses
/// any more: afterwards its virtual address is not mapped.
///
/// # Errors
/// [`HypercallError`] when the call as a whole fails; check every `status`.
pub unsafe fn grant_unmap(operations: &mut [GnttabUnmapGrantRef]) -> Result<(), HypercallError> {
    // SAFETY: as in grant_map; the caller vouches that the mappings are
    // no longer used.
    check(unsafe {
        call3(
            hypercall::GRANT_TABLE_OP,
            u64::from(GNTTABOP_UNMAP_GRANT_REF),
            operations.as_mut_ptr() as u64,
            operations.len() as u64,
        )
    })
    .map(|_| ())
}

/// `GNTTABOP_copy` for every entry of `operations`; each entry's `status`
/// says how it went.
///
/// # Safety
/// Every side that names a frame of ours (not a grant reference) names the
/// machine frame of memory that may be read (source) or overwritten
/// (destination) at that offset and length for the duration of the call,
/// with no Rust reference to the destination bytes alive.
///
/// # Errors
/// [`HypercallError`] when the call as a whole fails; check every `status`.
pub unsafe fn grant_copy(operations: &mut [GnttabCopy]) -> Result<(), HypercallError> {
    // SAFETY: the array lives across the call and Xen writes only the
    // `status` fields; the caller vouches for the frames. The asm has no
    // `nomem`, so the compiler assumes memory changed.
    check(unsafe {
        call3(
            hypercall::GRANT_TABLE_OP,
            u64::from(GNTTABOP_COPY),
            operations.as_mut_ptr() as u64,
            operations.len() as u64,
        )
    })
    .map(|_| ())
}

/// `XENVER_version`: `(major, minor)`.
pub fn xen_version() -> (u32, u32) {
    // SAFETY: XENVER_version takes no buffer.
    let version = unsafe { call3(hypercall::XEN_VERSION, u64::from(XENVER_VERSION), 0, 0) };
    ((version >> 16) as u32 & 0xffff, version as u32 & 0xffff)
}

/// `update_va_mapping`: point the page at `virtual_address` to the page
/// table entry `entry` (0 unmaps it), flushing that TLB entry.
///
/// # Safety
/// Nothing may hold a reference into the old page, and every later access
/// through `virtual_address` must be valid for the new mapping.
///
/// # Errors
/// [`HypercallError`] when Xen refuses the entry.
pub unsafe fn update_va_mapping(virtual_address: u64, entry: u64) -> Result<(), HypercallError> {
    // SAFETY: the caller's promise covers the change of mapping.
    check(unsafe {
        call3(
            hypercall::UPDATE_VA_MAPPING,
            virtual_address,
            entry,
            UVMF_INVLPG,
        )
    })
    .map(|_| ())
}

/// `set_trap_table`: install the virtual IDT. `table` must end with an
/// entry whose address is 0.
///
/// # Errors
/// [`HypercallError`] when Xen refuses an entry.
pub fn set_trap_table(table: &[TrapInfo]) -> Result<(), HypercallError> {
    assert!(table.last().is_some_and(|entry| entry.address == 0));
    // SAFETY: the array (terminated, asserted) lives across the call and is
    // only read; Xen copies it. The handlers it names are the stubs in
    // boot/entry.s, which never return into interrupted code.
    check(unsafe { call3(hypercall::SET_TRAP_TABLE, table.as_ptr() as u64, 0, 0) }).map(|_| ())
}
