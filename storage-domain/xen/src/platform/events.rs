//! Event channels and time, through the shared info page.
//!
//! The kernel never takes an event upcall: vCPU 0's upcall mask stays set
//! (no callback is even registered), and waiting is `SCHEDOP_poll` on the
//! ports of interest. Callers clear a port's pending bit, look at their
//! ring, and only then poll, so an event that arrives in between leaves
//! the bit set and the poll returns at once (no lost wake-up).

use super::hypercall;
use super::memory::{self, StaticPages};
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use vfs::Timestamp;
use xen_abi::xen::{scale_tsc_delta, shared_info_offset as offset, StartInfo};
use xen_abi::EventChannelPort;

static SHARED_INFO: StaticPages<4096> = StaticPages::new();

fn shared() -> *mut u8 {
    SHARED_INFO.as_ptr()
}

/// Map the shared info page and mask upcalls.
pub fn init(start_info: &StartInfo) {
    // SAFETY: SHARED_INFO is a static page used only here, and from now on
    // accessed only as the shared info layout, through atomics.
    unsafe { memory::map_machine_page(shared() as u64, start_info.shared_info) }
        .unwrap_or_else(|_| hypercall::shutdown(xen_abi::sched::ShutdownReason::Crash));
    // SAFETY: in-bounds byte of the mapped shared info page.
    let mask = unsafe { AtomicU8::from_ptr(shared().add(offset::VCPU0_UPCALL_MASK)) };
    mask.store(1, Ordering::SeqCst);
}

fn pending_word(port: EventChannelPort) -> Option<&'static AtomicU64> {
    let word = port.0 as usize / 64;
    if word >= 64 {
        return None;
    }
    // SAFETY: word < 64 keeps the 8-byte-aligned access inside
    // evtchn_pending; Xen updates it with atomic bit operations too.
    Some(unsafe { AtomicU64::from_ptr(shared().add(offset::EVTCHN_PENDING + word * 8).cast()) })
}

/// Clear `port`'s pending bit.
pub fn clear_pending(port: EventChannelPort) {
    if let Some(word) = pending_word(port) {
        word.fetch_and(!(1u64 << (port.0 % 64)), Ordering::SeqCst);
    }
}

/// The faulting address of the last page fault (`vcpu_info[0].arch.cr2`).
pub fn page_fault_address() -> u64 {
    read_u64(xen_abi::xen::VCPU0_CR2_OFFSET)
}

/// Block until a port is pending or `deadline_ns` (system time) passes.
pub fn wait(ports: &[EventChannelPort], deadline_ns: u64) {
    hypercall::poll(ports, deadline_ns);
}

fn read_u32(byte_offset: usize) -> u32 {
    // SAFETY: callers pass aligned offsets inside the shared info page.
    unsafe { AtomicU32::from_ptr(shared().add(byte_offset).cast()) }.load(Ordering::Acquire)
}

fn read_u64(byte_offset: usize) -> u64 {
    // SAFETY: callers pass 8-aligned offsets inside the shared info page.
    unsafe { AtomicU64::from_ptr(shared().add(byte_offset).cast()) }.load(Ordering::Acquire)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; PV guests may execute it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Nanoseconds since the host booted (vCPU 0's PV clock).
pub fn system_time_ns() -> u64 {
    let time = offset::VCPU0_TIME;
    loop {
        let version = read_u32(time);
        fence(Ordering::Acquire);
        let tsc_timestamp = read_u64(time + 8);
        let system_time = read_u64(time + 16);
        let multiplier = read_u32(time + 24);
        let shift = (read_u32(time + 28) & 0xff) as u8 as i8;
        fence(Ordering::Acquire);
        if version & 1 == 0 && read_u32(time) == version {
            let delta = rdtsc().wrapping_sub(tsc_timestamp);
            return system_time.wrapping_add(scale_tsc_delta(delta, shift, multiplier));
        }
    }
}

/// The wall clock: Xen's boot-time wall clock plus system time.
pub fn wall_clock() -> Timestamp {
    let (seconds, nanoseconds) = loop {
        let version = read_u32(offset::WC_VERSION);
        fence(Ordering::Acquire);
        let low = read_u32(offset::WC_SEC);
        let nanoseconds = read_u32(offset::WC_NSEC);
        let high = read_u32(offset::WC_SEC_HI);
        fence(Ordering::Acquire);
        if version & 1 == 0 && read_u32(offset::WC_VERSION) == version {
            break ((u64::from(high) << 32) | u64::from(low), nanoseconds);
        }
    };
    let total = u128::from(seconds) * 1_000_000_000
        + u128::from(nanoseconds)
        + u128::from(system_time_ns());
    Timestamp {
        seconds: (total / 1_000_000_000) as i64,
        nanoseconds: (total % 1_000_000_000) as u32,
    }
}

/// The PV clock as the file system's [`vfs::Clock`].
#[derive(Debug)]
pub struct PvClock;

impl vfs::Clock for PvClock {
    fn now(&self) -> Timestamp {
        wall_clock()
    }
}

/// A deadline `milliseconds` from now, for [`wait`].
pub fn deadline_after_ms(milliseconds: u64) -> u64 {
    system_time_ns().saturating_add(milliseconds * 1_000_000)
}
