//! The network device protocol (`xen/include/public/io/netif.h`).
//!
//! Only what a single-queue, copy-mode frontend without scatter-gather,
//! GSO or checksum offload needs: the four ring entry layouts, their flag
//! bits and status codes.

use crate::ring::ring_size;
use core::mem::size_of;

/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: an extra-info slot follows.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`: the checksum was verified.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`: the checksum is not filled in.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: the next slot is a `netif_extra_info`, not a response.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;

/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `NETIF_RSP_DROPPED`.
pub const RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: a response slot for an auxiliary request.
pub const RSP_NULL: i16 = 1;

/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet one TX request chain carries.
pub const MAX_TX_SIZE: usize = 0xffff;

/// `struct netif_tx_request`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxRequest {
    /// 0: grant of the page holding the data.
    pub gref: u32,
    /// 4: offset of the data in the page.
    pub offset: u16,
    /// 6: `NETTXF_*`.
    pub flags: u16,
    /// 8: echoed in the response.
    pub id: u16,
    /// 10: packet size (first request of a chain: the whole packet).
    pub size: u16,
}
const _: () = assert!(size_of::<NetifTxRequest>() == 12);

/// `struct netif_tx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxResponse {
    /// 0: the request's id.
    pub id: u16,
    /// 2: `RSP_*`.
    pub status: i16,
}
const _: () = assert!(size_of::<NetifTxResponse>() == 4);

/// `struct netif_rx_request`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxRequest {
    /// 0: echoed in the response.
    pub id: u16,
    /// 2: padding.
    pub pad: u16,
    /// 4: grant of the (writable) page the backend copies a packet into.
    pub gref: u32,
}
const _: () = assert!(size_of::<NetifRxRequest>() == 8);

/// `struct netif_rx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxResponse {
    /// 0: the request's id.
    pub id: u16,
    /// 2: offset of the data in the page.
    pub offset: u16,
    /// 4: `NETRXF_*`.
    pub flags: u16,
    /// 6: bytes received if positive, else `RSP_*`.
    pub status: i16,
}
const _: () = assert!(size_of::<NetifRxResponse>() == 8);

/// `struct netif_extra_info`: the first two bytes are its type and flags.
pub const EXTRA_INFO_SIZE: usize = 8;

const _: () = assert!(EXTRA_INFO_SIZE <= RX_ENTRY_SIZE);

/// Bytes of one TX ring entry (the union of request and response).
pub const TX_ENTRY_SIZE: usize = 12;
/// Bytes of one RX ring entry.
pub const RX_ENTRY_SIZE: usize = 8;
/// Entries of a one-page TX ring (`NET_TX_RING_SIZE`).
pub const TX_RING_SIZE: usize = ring_size(4096, TX_ENTRY_SIZE);
/// Entries of a one-page RX ring (`NET_RX_RING_SIZE`).
pub const RX_RING_SIZE: usize = ring_size(4096, RX_ENTRY_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_rings_hold_256_entries() {
        assert_eq!(TX_RING_SIZE, 256);
        assert_eq!(RX_RING_SIZE, 256);
    }
}
