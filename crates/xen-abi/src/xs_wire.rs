//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`).
//!
//! A message is a 16-byte [`MessageHeader`] then `len` payload bytes, at
//! most [`PAYLOAD_MAX`]. Headers from the ring are untrusted: decode with
//! [`MessageHeader::decode`], which never panics.

use core::mem::size_of;

/// `XENSTORE_RING_SIZE`: bytes of each direction's ring.
pub const RING_SIZE: usize = 1024;

/// `XENSTORE_PAYLOAD_MAX`.
pub const PAYLOAD_MAX: usize = 4096;

/// Byte offsets in `struct xenstore_domain_interface`.
pub mod offset {
    /// `req[]`: requests to the daemon.
    pub const REQUEST: usize = 0;
    /// `rsp[]`: replies and watch events.
    pub const RESPONSE: usize = 1024;
    /// `req_cons`.
    pub const REQ_CONS: usize = 2048;
    /// `req_prod`.
    pub const REQ_PROD: usize = 2052;
    /// `rsp_cons`.
    pub const RSP_CONS: usize = 2056;
    /// `rsp_prod`.
    pub const RSP_PROD: usize = 2060;
}

/// `enum xsd_sockmsg_type`: the operations the storage domain and `xen-linux` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// `XS_DIRECTORY` (1).
    Directory,
    /// `XS_READ` (2).
    Read,
    /// `XS_GET_PERMS` (3): reply is the NUL-terminated permission entries.
    GetPermissions,
    /// `XS_WATCH` (4).
    Watch,
    /// `XS_UNWATCH` (5).
    Unwatch,
    /// `XS_TRANSACTION_START` (6).
    TransactionStart,
    /// `XS_TRANSACTION_END` (7).
    TransactionEnd,
    /// `XS_GET_DOMAIN_PATH` (10): `/local/domain/<id>` of a domain id.
    GetDomainPath,
    /// `XS_WRITE` (11).
    Write,
    /// `XS_MKDIR` (12).
    MakeDirectory,
    /// `XS_RM` (13).
    Remove,
    /// `XS_SET_PERMS` (14): path then NUL-terminated permission entries.
    SetPermissions,
    /// `XS_WATCH_EVENT` (15): unsolicited.
    WatchEvent,
    /// `XS_ERROR` (16): payload is an errno name such as `"ENOENT"`.
    Error,
    /// Any other number.
    Unknown(u32),
}

impl MessageType {
    /// The wire number.
    pub fn number(self) -> u32 {
        match self {
            MessageType::Directory => 1,
            MessageType::Read => 2,
            MessageType::GetPermissions => 3,
            MessageType::Watch => 4,
            MessageType::Unwatch => 5,
            MessageType::TransactionStart => 6,
            MessageType::TransactionEnd => 7,
            MessageType::GetDomainPath => 10,
            MessageType::Write => 11,
            MessageType::MakeDirectory => 12,
            MessageType::Remove => 13,
            MessageType::SetPermissions => 14,
            MessageType::WatchEvent => 15,
            MessageType::Error => 16,
            MessageType::Unknown(number) => number,
        }
    }

    /// From the wire number.
    pub fn from_number(number: u32) -> MessageType {
        match number {
            1 => MessageType::Directory,
            2 => MessageType::Read,
            3 => MessageType::GetPermissions,
            4 => MessageType::Watch,
            5 => MessageType::Unwatch,
            6 => MessageType::TransactionStart,
            7 => MessageType::TransactionEnd,
            10 => MessageType::GetDomainPath,
            11 => MessageType::Write,
            12 => MessageType::MakeDirectory,
            13 => MessageType::Remove,
            14 => MessageType::SetPermissions,
            15 => MessageType::WatchEvent,
            16 => MessageType::Error,
            other => MessageType::Unknown(other),
        }
    }
}

/// `struct xsd_sockmsg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// 0: `XS_*`.
    pub message_type: u32,
    /// 4: echoed in the reply.
    pub request_id: u32,
    /// 8: transaction id, 0 for none.
    pub transaction_id: u32,
    /// 12: payload bytes that follow.
    pub len: u32,
}
const _: () = assert!(size_of::<MessageHeader>() == 16);

/// Bytes of an encoded [`MessageHeader`].
pub const HEADER_SIZE: usize = size_of::<MessageHeader>();

impl MessageHeader {
    /// Little-endian bytes, as on the ring.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[0..4].copy_from_slice(&self.message_type.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.request_id.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.transaction_id.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.len.to_le_bytes());
        bytes
    }

    /// Decode the first 16 bytes; `None` when fewer are given.
    pub fn decode(bytes: &[u8]) -> Option<MessageHeader> {
        let word = |index: usize| -> Option<u32> {
            let slice = bytes.get(index * 4..index * 4 + 4)?;
            Some(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
        };
        Some(MessageHeader {
            message_type: word(0)?,
            request_id: word(1)?,
            transaction_id: word(2)?,
            len: word(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_golden_bytes() {
        let header = MessageHeader {
            message_type: MessageType::Read.number(),
            request_id: 7,
            transaction_id: 0,
            len: 6,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(MessageHeader::decode(&bytes), Some(header));
        assert_eq!(MessageHeader::decode(&bytes[..15]), None);
    }

    #[test]
    fn numbers_match_xs_wire_h() {
        // `enum xsd_sockmsg_type` in Xen 4.17's `io/xs_wire.h`, counted from
        // XS_CONTROL = 0.
        let expected = [
            (MessageType::Directory, 1),
            (MessageType::Read, 2),
            (MessageType::GetPermissions, 3),
            (MessageType::Watch, 4),
            (MessageType::Unwatch, 5),
            (MessageType::TransactionStart, 6),
            (MessageType::TransactionEnd, 7),
            (MessageType::GetDomainPath, 10),
            (MessageType::Write, 11),
            (MessageType::MakeDirectory, 12),
            (MessageType::Remove, 13),
            (MessageType::SetPermissions, 14),
            (MessageType::WatchEvent, 15),
            (MessageType::Error, 16),
        ];
        for (message_type, number) in expected {
            assert_eq!(message_type.number(), number);
            assert_eq!(MessageType::from_number(number), message_type);
        }
    }

    #[test]
    fn types_round_trip() {
        for number in 0..40 {
            assert_eq!(MessageType::from_number(number).number(), number);
        }
    }
}
