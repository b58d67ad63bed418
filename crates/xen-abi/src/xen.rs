//! Start of day and shared info (`xen/include/public/xen.h`,
//! `arch-x86/xen.h`, `arch-x86/xen-x86_64.h`).
//!
//! NOTE: only the x86_64 layout is mirrored (`unsigned long` = `u64`).

use core::mem::size_of;

/// Hypercall numbers (`__HYPERVISOR_*`). Each is `hypercall_page + 32 * n`.
pub mod hypercall {
    /// `__HYPERVISOR_set_trap_table`.
    pub const SET_TRAP_TABLE: u32 = 0;
    /// `__HYPERVISOR_mmu_update`.
    pub const MMU_UPDATE: u32 = 1;
    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u32 = 12;
    /// `__HYPERVISOR_update_va_mapping`.
    pub const UPDATE_VA_MAPPING: u32 = 14;
    /// `__HYPERVISOR_xen_version`.
    pub const XEN_VERSION: u32 = 17;
    /// `__HYPERVISOR_console_io`.
    pub const CONSOLE_IO: u32 = 18;
    /// `__HYPERVISOR_grant_table_op`.
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `__HYPERVISOR_sched_op` (the current one, not `sched_op_compat`).
    pub const SCHED_OP: u32 = 29;
    /// `__HYPERVISOR_event_channel_op` (not `event_channel_op_compat`).
    pub const EVENT_CHANNEL_OP: u32 = 32;
}

/// `UVMF_INVLPG`: flush only the one TLB entry after `update_va_mapping`.
pub const UVMF_INVLPG: u64 = 2;

/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u32 = 0;

/// `CONSOLEIO_write`: write to Xen's own console (serial), where allowed.
pub const CONSOLEIO_WRITE: u32 = 0;

/// Virtual address of the read-only machine-to-physical table
/// (`MACH2PHYS_VIRT_START`, x86_64).
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;

/// Page-table entry bits (x86): present, writable, user, accessed, dirty.
pub mod page_table_entry {
    /// `_PAGE_PRESENT`.
    pub const PRESENT: u64 = 1 << 0;
    /// `_PAGE_RW`.
    pub const WRITABLE: u64 = 1 << 1;
    /// `_PAGE_USER` (64-bit PV kernels run in ring 3; Xen requires it).
    pub const USER: u64 = 1 << 2;
    /// `_PAGE_ACCESSED`.
    pub const ACCESSED: u64 = 1 << 5;
    /// `_PAGE_DIRTY`.
    pub const DIRTY: u64 = 1 << 6;
}

/// `FLAT_KERNEL_CS` (x86_64): the code selector of a PV kernel.
pub const FLAT_KERNEL_CS: u16 = 0xe033;

/// `struct trap_info` (`arch-x86/xen.h`): one entry of the virtual IDT
/// given to `set_trap_table`; an entry with `address == 0` ends the array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapInfo {
    /// 0: exception vector.
    pub vector: u8,
    /// 1: bits 0-1: privilege level that may raise it with `int`; bit 2:
    /// mask events on entry.
    pub flags: u8,
    /// 2: code selector ([`FLAT_KERNEL_CS`]).
    pub cs: u16,
    /// 4: padding.
    pub padding: u32,
    /// 8: handler address.
    pub address: u64,
}
const _: () = assert!(size_of::<TrapInfo>() == 16);

/// `TI_SET_IF` bit of [`TrapInfo::flags`]: mask events while handling.
pub const TRAP_MASK_EVENTS: u8 = 4;

/// Byte offset of `vcpu_info[0].arch.cr2` in the shared info page: the
/// faulting address of the last page fault.
pub const VCPU0_CR2_OFFSET: usize = 16;

/// `MAX_GUEST_CMDLINE`.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// The console part of `start_info` for an unprivileged domain.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfoConsole {
    /// 0: MACHINE page number of the console page.
    pub mfn: u64,
    /// 8: event channel of the console.
    pub evtchn: u32,
    /// 12: padding to the union's size.
    pub padding: u32,
}
const _: () = assert!(size_of::<StartInfoConsole>() == 16);

/// `struct start_info`: handed to the kernel in `rsi` at entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// 0: `"xen-<version>-<platform>"`.
    pub magic: [u8; 32],
    /// 32: total pages allocated to this domain.
    pub nr_pages: u64,
    /// 40: MACHINE address of the shared info page.
    pub shared_info: u64,
    /// 48: `SIF_*` flags.
    pub flags: u32,
    /// 52: padding before the 8-byte `store_mfn`.
    pub padding0: u32,
    /// 56: MACHINE page number of the xenstore ring.
    pub store_mfn: u64,
    /// 64: event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// 68: padding before the console union.
    pub padding1: u32,
    /// 72: the console page and its event channel.
    pub console: StartInfoConsole,
    /// 88: VIRTUAL address of the bootstrap page directory.
    pub pt_base: u64,
    /// 96: number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// 104: VIRTUAL address of the pseudo-physical to machine list.
    pub mfn_list: u64,
    /// 112: VIRTUAL address of a pre-loaded module (ramdisk).
    pub mod_start: u64,
    /// 120: size of that module in bytes.
    pub mod_len: u64,
    /// 128: the guest command line (`extra=`), NUL-terminated.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// 1152: first pfn of the initial P->M table.
    pub first_p2m_pfn: u64,
    /// 1160: number of pfns of the initial P->M table.
    pub nr_p2m_frames: u64,
}
const _: () = assert!(size_of::<StartInfo>() == 1168);

impl StartInfo {
    /// The command line up to its first NUL (or all of it).
    pub fn command_line(&self) -> &[u8] {
        let end = self
            .cmd_line
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(self.cmd_line.len());
        &self.cmd_line[..end]
    }
}

/// `struct vcpu_time_info`: the PV clock of one vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VcpuTimeInfo {
    /// 0: odd while Xen updates the fields (a seqlock).
    pub version: u32,
    /// 4: padding.
    pub pad0: u32,
    /// 8: TSC at the last update.
    pub tsc_timestamp: u64,
    /// 16: nanoseconds since boot at `tsc_timestamp`.
    pub system_time: u64,
    /// 24: TSC ticks to nanoseconds multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// 28: shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
    /// 29: `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// 30: padding.
    pub pad1: [u8; 2],
}
const _: () = assert!(size_of::<VcpuTimeInfo>() == 32);

/// `struct vcpu_info` (x86_64: 64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VcpuInfo {
    /// 0: an upcall is pending.
    pub evtchn_upcall_pending: u8,
    /// 1: non-zero masks upcalls (the kernel never unmasks them).
    pub evtchn_upcall_mask: u8,
    /// 2: padding.
    pub padding: [u8; 6],
    /// 8: which words of `evtchn_pending` to scan.
    pub evtchn_pending_sel: u64,
    /// 16: `arch_vcpu_info.cr2` (faulting address of a page fault).
    pub cr2: u64,
    /// 24: `arch_vcpu_info.pad`.
    pub arch_pad: u64,
    /// 32: the vCPU's clock.
    pub time: VcpuTimeInfo,
}
const _: () = assert!(size_of::<VcpuInfo>() == 64);

/// `XEN_LEGACY_MAX_VCPUS` on x86.
pub const LEGACY_MAX_VCPUS: usize = 32;

/// `struct shared_info`: one page Xen and the guest both write.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo {
    /// 0: per-vCPU info.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// 2048: pending bit per event channel port.
    pub evtchn_pending: [u64; 64],
    /// 2560: mask bit per event channel port.
    pub evtchn_mask: [u64; 64],
    /// 3072: wall clock seqlock.
    pub wc_version: u32,
    /// 3076: wall clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// 3080: wall clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// 3084: wall clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// 3088: `arch_shared_info` (max_pfn, p2m lists, nmi_reason...).
    pub arch: [u64; 6],
}
const _: () = assert!(size_of::<SharedInfo>() == 3136);

/// Byte offsets in [`SharedInfo`], for volatile access to the shared page.
pub mod shared_info_offset {
    /// `vcpu_info[0].evtchn_upcall_mask`.
    pub const VCPU0_UPCALL_MASK: usize = 1;
    /// `vcpu_info[0].time`.
    pub const VCPU0_TIME: usize = 32;
    /// `evtchn_pending`.
    pub const EVTCHN_PENDING: usize = 2048;
    /// `evtchn_mask`.
    pub const EVTCHN_MASK: usize = 2560;
    /// `wc_version`.
    pub const WC_VERSION: usize = 3072;
    /// `wc_sec`.
    pub const WC_SEC: usize = 3076;
    /// `wc_nsec`.
    pub const WC_NSEC: usize = 3080;
    /// `wc_sec_hi`.
    pub const WC_SEC_HI: usize = 3084;
}

/// Convert a PV clock TSC delta to nanoseconds (`xen.h` comment on
/// `vcpu_time_info`: shift, then multiply by a 32.32 fraction).
pub fn scale_tsc_delta(delta: u64, shift: i8, multiplier: u32) -> u64 {
    let shifted = if shift >= 0 {
        delta
            .checked_shl(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    } else {
        delta
            .checked_shr(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    };
    ((u128::from(shifted) * u128::from(multiplier)) >> 32) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_scaling_follows_the_header_formula() {
        // 1 GHz TSC: mul = 2^32 (does not fit), so shift -1 and mul 2^32-ish.
        assert_eq!(scale_tsc_delta(1000, 0, 0x8000_0000), 500);
        assert_eq!(scale_tsc_delta(1000, 1, 0x8000_0000), 1000);
        assert_eq!(scale_tsc_delta(1000, -1, 0x8000_0000), 250);
        assert_eq!(scale_tsc_delta(u64::MAX, 100, 1), 0);
    }

    #[test]
    fn command_line_stops_at_nul() {
        let mut info = StartInfo {
            magic: [0; 32],
            nr_pages: 0,
            shared_info: 0,
            flags: 0,
            padding0: 0,
            store_mfn: 0,
            store_evtchn: 0,
            padding1: 0,
            console: StartInfoConsole {
                mfn: 0,
                evtchn: 0,
                padding: 0,
            },
            pt_base: 0,
            nr_pt_frames: 0,
            mfn_list: 0,
            mod_start: 0,
            mod_len: 0,
            cmd_line: [0; MAX_GUEST_CMDLINE],
            first_p2m_pfn: 0,
            nr_p2m_frames: 0,
        };
        info.cmd_line[..5].copy_from_slice(b"a=b c");
        assert_eq!(info.command_line(), b"a=b c");
        info.cmd_line = [b'x'; MAX_GUEST_CMDLINE];
        assert_eq!(info.command_line().len(), MAX_GUEST_CMDLINE);
    }
}
