//! The PV console ring (`xen/include/public/io/console.h`).

use core::mem::size_of;

/// Bytes of the guest-to-console (`out`) ring.
pub const OUT_RING_SIZE: usize = 2048;
/// Bytes of the console-to-guest (`in`) ring.
pub const IN_RING_SIZE: usize = 1024;

/// `struct xencons_interface`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConsoleInterface {
    /// 0: input from the console to the guest.
    pub input: [u8; IN_RING_SIZE],
    /// 1024: output from the guest.
    pub output: [u8; OUT_RING_SIZE],
    /// 3072: `in_cons`, advanced by the guest.
    pub in_cons: u32,
    /// 3076: `in_prod`, advanced by the console daemon.
    pub in_prod: u32,
    /// 3080: `out_cons`, advanced by the console daemon.
    pub out_cons: u32,
    /// 3084: `out_prod`, advanced by the guest.
    pub out_prod: u32,
}
const _: () = assert!(size_of::<ConsoleInterface>() == 3088);

/// Byte offsets in [`ConsoleInterface`].
pub mod offset {
    /// `out`.
    pub const OUTPUT: usize = 1024;
    /// `out_cons`.
    pub const OUT_CONS: usize = 3080;
    /// `out_prod`.
    pub const OUT_PROD: usize = 3084;
}

/// `MASK_XENCONS_IDX` for the output ring.
pub fn output_index(index: u32) -> usize {
    index as usize & (OUT_RING_SIZE - 1)
}
