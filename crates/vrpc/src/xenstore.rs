//! The Xen handshake's xenstore keys (`docs/vrpc.md`, "Xen handshake") and
//! the parsing of their values, which the other domain wrote and which are
//! therefore untrusted: every parser returns `None` instead of panicking.
//!
//! The split-driver state machine itself (`XenbusState`) is in `xen-abi`;
//! the platform crates walk it and use these names and parsers.

use crate::layout::RingParameters;

/// Frontend directory, relative to `/local/domain/<guest>/`; the device
/// number follows.
pub const FRONTEND_DIRECTORY: &str = "device/vrpc";
/// Backend directory, relative to `/local/domain/<storage domain>/`; the
/// guest's domain id and the device number follow.
pub const BACKEND_DIRECTORY: &str = "backend/vrpc";

/// Both: the XenbusState number.
pub const STATE: &str = "state";
/// Both (written by the dom0 tool): the export this device mounts.
pub const EXPORT: &str = "export";
/// Frontend: layout version (1).
pub const VERSION: &str = "version";
/// Frontend: slots in the ring.
pub const SLOT_COUNT: &str = "slot-count";
/// Frontend: bytes per slot.
pub const SLOT_SIZE: &str = "slot-size";
/// Frontend: pages in the data pool.
pub const POOL_PAGES: &str = "pool-pages";
/// Frontend: pages of the ring region.
pub const RING_PAGES: &str = "ring-pages";
/// Frontend: prefix of `ring-ref<i>`, the grant reference of ring page `i`.
pub const RING_REFERENCE_PREFIX: &str = "ring-ref";
/// Frontend: pages of the pool's grant directory.
pub const POOL_DIRECTORY_PAGES: &str = "pool-directory-pages";
/// Frontend: prefix of `pool-directory-ref<i>`.
pub const POOL_DIRECTORY_REFERENCE_PREFIX: &str = "pool-directory-ref";
/// Frontend: the event channel port.
pub const EVENT_CHANNEL: &str = "event-channel";
/// Backend: largest slot count accepted.
pub const MAX_SLOT_COUNT: &str = "max-slot-count";
/// Backend: largest slot size accepted.
pub const MAX_SLOT_SIZE: &str = "max-slot-size";
/// Backend: largest pool accepted, in pages.
pub const MAX_POOL_PAGES: &str = "max-pool-pages";
/// Backend: bytes of the export's metadata table.
pub const METATAB_BYTES: &str = "metatab-bytes";
/// Backend: pages of the metadata table's grant directory.
pub const METATAB_DIRECTORY_PAGES: &str = "metatab-directory-pages";
/// Backend: prefix of `metatab-directory-ref<i>`, the read-only grant of
/// directory page `i`; each page holds [`REFERENCES_PER_DIRECTORY_PAGE`]
/// little-endian `u32` read-only grant references of table pages.
pub const METATAB_DIRECTORY_REFERENCE_PREFIX: &str = "metatab-directory-ref";
/// Either side, when it fails: a human-readable reason.
pub const ERROR: &str = "error";

/// Grant references per pool directory page (4096 bytes of `u32`).
pub const REFERENCES_PER_DIRECTORY_PAGE: u32 = 1024;

/// Pages of the pool's grant directory for `pool_pages` pool pages.
pub const fn pool_directory_pages(pool_pages: u32) -> u32 {
    pool_pages.div_ceil(REFERENCES_PER_DIRECTORY_PAGE)
}

/// A xenstore number: ASCII decimal digits only (no sign, no spaces, no
/// leading zeros except "0" itself), within `u32`.
pub fn parse_number(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || (value.len() > 1 && value[0] == b'0') {
        return None;
    }
    let mut number: u32 = 0;
    for digit in value {
        if !digit.is_ascii_digit() {
            return None;
        }
        number = number
            .checked_mul(10)?
            .checked_add(u32::from(digit - b'0'))?;
    }
    Some(number)
}

/// Formats an indexed key (`ring-ref7`) into `buffer`, returning it; `None`
/// when the buffer is too small.
pub fn indexed_key<'a>(prefix: &str, index: u32, buffer: &'a mut [u8]) -> Option<&'a str> {
    let mut digits = [0u8; 10];
    let mut count = 0;
    let mut rest = index;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let length = prefix.len() + count;
    let target = buffer.get_mut(..length)?;
    target[..prefix.len()].copy_from_slice(prefix.as_bytes());
    for (place, digit) in target[prefix.len()..]
        .iter_mut()
        .zip(digits[..count].iter().rev())
    {
        *place = *digit;
    }
    core::str::from_utf8(target).ok()
}

/// The ring parameters from the frontend's `slot-count`, `slot-size` and
/// `pool-pages` values, validated, and within the backend's limits.
pub fn parse_parameters(
    slot_count: &[u8],
    slot_size: &[u8],
    pool_pages: &[u8],
    limits: RingParameters,
) -> Option<RingParameters> {
    let parameters = RingParameters {
        slot_count: parse_number(slot_count)?,
        slot_size: parse_number(slot_size)?,
        pool_pages: parse_number(pool_pages)?,
    }
    .validate()
    .ok()?;
    let within = parameters.slot_count <= limits.slot_count
        && parameters.slot_size <= limits.slot_size
        && parameters.pool_pages <= limits.pool_pages;
    within.then_some(parameters)
}

/// The snapshot control request, relative to `/local/domain/<storage
/// domain>/` (`docs/xenstore.md`, "Snapshots"): dom0 writes `create NAME`,
/// `delete NAME` or `list`; the storage domain answers in
/// [`SNAPSHOT_RESULT`] and then empties this node.
pub const SNAPSHOT_REQUEST: &str = "control/snapshot";
/// The answer to the last snapshot request: `ok` or `error`, a newline,
/// then the text to show.
pub const SNAPSHOT_RESULT: &str = "control/snapshot-result";

/// The storage domain's statistics, relative to `/local/domain/<storage
/// domain>/` (`docs/xenstore.md`, "Statistics"): `name value` lines, the
/// hosted server's `stats` names, rewritten at most every 5 s when they
/// changed; `storage-domain-ctl stats` prints them.
pub const STATS_NODE: &str = "data/storage-domain-stats";

/// A snapshot control request, as parsed from [`SNAPSHOT_REQUEST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotRequest<'a> {
    /// Take snapshot NAME.
    Create(&'a [u8]),
    /// Delete snapshot NAME.
    Delete(&'a [u8]),
    /// List the snapshots.
    List,
}

impl<'a> SnapshotRequest<'a> {
    /// The request in `value`: the operation, one space, the name (any
    /// bytes after that space; `list` takes none). `None` for anything
    /// else, the empty value included (no request).
    pub fn parse(value: &'a [u8]) -> Option<SnapshotRequest<'a>> {
        if value == b"list" {
            return Some(SnapshotRequest::List);
        }
        let space = value.iter().position(|&byte| byte == b' ')?;
        let (operation, name) = (&value[..space], &value[space + 1..]);
        match operation {
            b"create" => Some(SnapshotRequest::Create(name)),
            b"delete" => Some(SnapshotRequest::Delete(name)),
            _ => None,
        }
    }

    /// The value [`SnapshotRequest::parse`] reads back.
    pub fn encode(&self) -> alloc::vec::Vec<u8> {
        let (operation, name): (&[u8], &[u8]) = match self {
            SnapshotRequest::Create(name) => (b"create ", name),
            SnapshotRequest::Delete(name) => (b"delete ", name),
            SnapshotRequest::List => (b"list", b""),
        };
        let mut value = operation.to_vec();
        value.extend_from_slice(name);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_requests() {
        for request in [
            SnapshotRequest::Create(b"nightly"),
            SnapshotRequest::Create(b"with space"),
            SnapshotRequest::Delete(b"x"),
            SnapshotRequest::List,
        ] {
            assert_eq!(SnapshotRequest::parse(&request.encode()), Some(request));
        }
        for bad in [
            &b""[..],
            b"list ",
            b"create",
            b"format x",
            b"LIST",
            b" create x",
        ] {
            assert_eq!(SnapshotRequest::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            SnapshotRequest::parse(b"create "),
            Some(SnapshotRequest::Create(b""))
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0"), Some(0));
        assert_eq!(parse_number(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"4294967296",
            b"99999999999",
            b"-1",
            b"+1",
            b"01",
            b" 1",
            b"1 ",
            b"0x10",
            b"1\0",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_and_parameters() {
        let mut buffer = [0u8; 32];
        assert_eq!(
            indexed_key(RING_REFERENCE_PREFIX, 0, &mut buffer),
            Some("ring-ref0")
        );
        assert_eq!(
            indexed_key(POOL_DIRECTORY_REFERENCE_PREFIX, 4_294_967_295, &mut buffer),
            Some("pool-directory-ref4294967295")
        );
        assert_eq!(
            indexed_key(METATAB_DIRECTORY_REFERENCE_PREFIX, 12, &mut [0u8; 8]),
            None
        );
        assert_eq!(pool_directory_pages(0), 0);
        assert_eq!(pool_directory_pages(1024), 1);
        assert_eq!(pool_directory_pages(1025), 2);
        let limits = RingParameters {
            slot_count: 64,
            slot_size: 4096,
            pool_pages: 4096,
        };
        assert_eq!(
            parse_parameters(b"32", b"2048", b"1024", limits),
            Some(RingParameters::default())
        );
        assert_eq!(
            parse_parameters(b"128", b"2048", b"1024", limits),
            None,
            "over the limit"
        );
        assert_eq!(
            parse_parameters(b"33", b"2048", b"1024", limits),
            None,
            "not a power of two"
        );
        assert_eq!(parse_parameters(b"32", b"2048", b"lots", limits), None);
    }
}
