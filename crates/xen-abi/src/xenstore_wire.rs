//! Xenstore messages (needs `alloc`): framing, reassembly from ring bytes, and payloads.
//!
//! Ring bytes are untrusted (the daemon runs in another domain): the
//! [`Reassembler`] bounds every message by `XENSTORE_PAYLOAD_MAX` and
//! nothing here panics on any input.

use crate::xs_wire::{MessageHeader, MessageType, HEADER_SIZE, PAYLOAD_MAX};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A whole message taken off the response ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The decoded header.
    pub header: MessageHeader,
    /// `header.len` payload bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// The header's type.
    pub fn message_type(&self) -> MessageType {
        MessageType::from_number(self.header.message_type)
    }
}

/// Why the wire protocol broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A header announced more than `XENSTORE_PAYLOAD_MAX` bytes.
    PayloadTooLong(u32),
}

impl fmt::Display for WireError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::PayloadTooLong(len) => {
                write!(
                    formatter,
                    "xenstore message of {len} bytes exceeds {PAYLOAD_MAX}"
                )
            }
        }
    }
}

impl core::error::Error for WireError {}

/// Collects ring bytes and yields whole messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    buffer: Vec<u8>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Reassembler { buffer: Vec::new() }
    }

    /// Append bytes read from the ring.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    ///
    /// # Errors
    /// [`WireError::PayloadTooLong`]: the stream cannot be trusted further.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(header) = MessageHeader::decode(&self.buffer) else {
            return Ok(None);
        };
        if header.len as usize > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong(header.len));
        }
        let total = HEADER_SIZE + header.len as usize;
        if self.buffer.len() < total {
            return Ok(None);
        }
        let payload = self.buffer[HEADER_SIZE..total].to_vec();
        self.buffer.drain(..total);
        Ok(Some(Message { header, payload }))
    }
}

/// Encode a request whose payload is `parts` concatenated.
///
/// # Errors
/// [`WireError::PayloadTooLong`] past `XENSTORE_PAYLOAD_MAX`.
pub fn encode_request(
    message_type: MessageType,
    request_id: u32,
    transaction_id: u32,
    parts: &[&[u8]],
) -> Result<Vec<u8>, WireError> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong(
            u32::try_from(len).unwrap_or(u32::MAX),
        ));
    }
    let header = MessageHeader {
        message_type: message_type.number(),
        request_id,
        transaction_id,
        len: len as u32,
    };
    let mut bytes = Vec::with_capacity(HEADER_SIZE + len);
    bytes.extend_from_slice(&header.encode());
    for part in parts {
        bytes.extend_from_slice(part);
    }
    Ok(bytes)
}

/// A path with the NUL terminator the protocol wants.
pub fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(0);
    bytes
}

/// `XS_DIRECTORY` reply: NUL-separated child names.
pub fn split_directory(payload: &[u8]) -> Vec<String> {
    payload
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect()
}

/// `XS_WATCH_EVENT` payload: `path\0token\0`.
pub fn parse_watch_event(payload: &[u8]) -> Option<(String, String)> {
    let mut parts = payload.split(|&byte| byte == 0);
    let path = parts.next().filter(|path| !path.is_empty())?;
    let token = parts.next()?;
    Some((
        String::from_utf8_lossy(path).into_owned(),
        String::from_utf8_lossy(token).into_owned(),
    ))
}

/// A value with trailing NULs removed (replies to `XS_READ` carry none,
/// `XS_ERROR` and `XS_TRANSACTION_START` carry one).
pub fn trim_nul(payload: &[u8]) -> &[u8] {
    let end = payload
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |index| index + 1);
    &payload[..end]
}

/// `XS_TRANSACTION_START` reply: a decimal id.
pub fn parse_transaction_id(payload: &[u8]) -> Option<u32> {
    core::str::from_utf8(trim_nul(payload)).ok()?.parse().ok()
}

/// What a domain may do with a node (one letter on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read and watch.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    /// From the wire letter; `None` for any other byte.
    pub fn from_letter(letter: u8) -> Option<Access> {
        match letter {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }
}

/// One entry of a node's permission list (`struct xs_permissions`).
///
/// In a list, the first entry names the node's owner (who may always read,
/// write and change permissions) and, in `access`, what every domain not
/// listed may do; later entries grant `access` to one domain each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The domain id.
    pub domain: u16,
    /// Its access (for the first entry: everyone else's).
    pub access: Access,
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}{}",
            char::from(self.access.letter()),
            self.domain
        )
    }
}

/// `XS_SET_PERMS` payload after the path: each entry as letter, decimal
/// domain id, NUL (`n0\0r5\0`).
pub fn encode_permissions(permissions: &[Permission]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for permission in permissions {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = fmt::write(&mut text, format_args!("{permission}"));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// `XS_GET_PERMS` reply: NUL-terminated entries; `None` when an entry is
/// not a letter followed by a domain id below 65536, or the list is empty.
pub fn parse_permissions(payload: &[u8]) -> Option<Vec<Permission>> {
    let mut permissions = Vec::new();
    for entry in payload.split(|&byte| byte == 0) {
        if entry.is_empty() {
            continue;
        }
        let access = Access::from_letter(entry[0])?;
        let digits = core::str::from_utf8(&entry[1..]).ok()?;
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let domain = digits.parse().ok()?;
        permissions.push(Permission { domain, access });
    }
    if permissions.is_empty() {
        None
    } else {
        Some(permissions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(message_type: u32, request_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = MessageHeader {
            message_type,
            request_id,
            transaction_id: 0,
            len: payload.len() as u32,
        }
        .encode()
        .to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn reassembles_byte_at_a_time_and_back_to_back() {
        let mut stream = reply(2, 1, b"value");
        stream.extend(reply(15, 0, b"control/shutdown\0tok\0"));
        let mut reassembler = Reassembler::new();
        let mut messages = Vec::new();
        for byte in &stream {
            reassembler.push(core::slice::from_ref(byte));
            while let Some(message) = reassembler.next_message().unwrap() {
                messages.push(message);
            }
        }
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].message_type(), MessageType::Read);
        assert_eq!(messages[0].payload, b"value");
        assert_eq!(
            parse_watch_event(&messages[1].payload),
            Some(("control/shutdown".into(), "tok".into()))
        );
    }

    #[test]
    fn oversize_is_an_error_not_a_panic() {
        let mut reassembler = Reassembler::new();
        let header = MessageHeader {
            message_type: 2,
            request_id: 1,
            transaction_id: 0,
            len: 5000,
        };
        reassembler.push(&header.encode());
        assert_eq!(
            reassembler.next_message(),
            Err(WireError::PayloadTooLong(5000))
        );
        assert!(encode_request(MessageType::Write, 1, 0, &[&[0u8; 4097]]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678u32;
        for _ in 0..200 {
            let mut reassembler = Reassembler::new();
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            reassembler.push(&bytes);
            while let Ok(Some(_)) = reassembler.next_message() {}
            let _ = parse_watch_event(&bytes);
            let _ = split_directory(&bytes);
            let _ = parse_transaction_id(&bytes);
            let _ = parse_permissions(&bytes);
        }
    }

    #[test]
    fn permissions_golden_bytes() {
        let permissions = [
            Permission {
                domain: 0,
                access: Access::None,
            },
            Permission {
                domain: 5,
                access: Access::Read,
            },
            Permission {
                domain: 65535,
                access: Access::Both,
            },
            Permission {
                domain: 7,
                access: Access::Write,
            },
        ];
        let bytes = encode_permissions(&permissions);
        assert_eq!(bytes, b"n0\0r5\0b65535\0w7\0");
        assert_eq!(parse_permissions(&bytes).unwrap(), permissions);
        assert_eq!(parse_permissions(b"n0\0r5"), parse_permissions(b"n0\0r5\0"));
        assert_eq!(parse_permissions(b""), None);
        assert_eq!(parse_permissions(b"x0\0"), None);
        assert_eq!(parse_permissions(b"r\0"), None);
        assert_eq!(parse_permissions(b"r65536\0"), None);
        assert_eq!(parse_permissions(b"r+5\0"), None);
        assert_eq!(parse_permissions(b"r5 \0"), None);
    }

    #[test]
    fn payload_helpers() {
        assert_eq!(
            split_directory(b"51712\0\x35\x31\x37\x32\x38\0"),
            ["51712", "51728"]
        );
        assert!(split_directory(b"").is_empty());
        assert_eq!(parse_transaction_id(b"17\0"), Some(17));
        assert_eq!(parse_transaction_id(b"x"), None);
        assert_eq!(trim_nul(b"ENOENT\0"), b"ENOENT");
        assert_eq!(trim_nul(b"\0\0"), b"");
        assert_eq!(parse_watch_event(b"\0tok\0"), None);
        assert_eq!(parse_watch_event(b"path"), None);
        let request = encode_request(MessageType::Read, 3, 9, &[b"a/b", b"\0"]).unwrap();
        assert_eq!(
            &request[..16],
            &[2, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0]
        );
        assert_eq!(&request[16..], b"a/b\0");
        assert_eq!(nul_terminated("x"), b"x\0");
    }
}
