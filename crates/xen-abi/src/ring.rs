//! Shared request/response rings (`xen/include/public/io/ring.h`).
//!
//! The header's macros become a layout constant and one function; the
//! producer/consumer logic lives with the platform code that owns the page.

/// Bytes before the first entry of a shared ring (`req_prod`, `req_event`,
/// `rsp_prod`, `rsp_event`, the 4-byte `pvt` union and 44 bytes of padding).
pub const SRING_HEADER_SIZE: usize = 64;

/// Byte offsets of the shared ring header's indices.
pub mod offset {
    /// `req_prod`, advanced by the frontend.
    pub const REQ_PROD: usize = 0;
    /// `req_event`, set by the backend.
    pub const REQ_EVENT: usize = 4;
    /// `rsp_prod`, advanced by the backend.
    pub const RSP_PROD: usize = 8;
    /// `rsp_event`, set by the frontend.
    pub const RSP_EVENT: usize = 12;
}

/// `__RING_SIZE`: entries of `entry_size` bytes that fit after the header
/// in `ring_bytes`, rounded down to a power of two.
pub const fn ring_size(ring_bytes: usize, entry_size: usize) -> usize {
    let fit = (ring_bytes - SRING_HEADER_SIZE) / entry_size;
    if fit == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

/// `RING_PUSH_*_AND_CHECK_NOTIFY`: whether the peer asked to be notified
/// (its event index lies in the newly produced range `(old, new]`).
pub fn needs_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkif_ring_has_32_entries() {
        assert_eq!(ring_size(4096, 112), 32);
        assert_eq!(ring_size(4096, 16), 128);
        assert_eq!(ring_size(4096, 5000), 0);
    }

    #[test]
    fn notify_when_event_in_new_range() {
        assert!(needs_notify(0, 1, 1));
        assert!(!needs_notify(1, 2, 5));
        assert!(needs_notify(u32::MAX, 1, 0));
        assert!(!needs_notify(3, 3, 3));
    }
}
