//! NLM version 4: the network lock manager that pairs with NFSv3 (RFC 1813
//! appendix II, <https://www.rfc-editor.org/rfc/rfc1813#appendix-II>).
//!
//! Design: the synchronous procedures a storage domain answers (NULL,
//! TEST, LOCK, CANCEL, UNLOCK) and FREE_ALL; the asynchronous `_MSG` /
//! `_RES` variants, GRANTED (a call from server to client), SHARE /
//! UNSHARE (DOS share modes) and NM_LOCK are left out and answered
//! PROC_UNAVAIL. `nlm4_stats` gets its own enum in which every status is a
//! value (GRANTED included, since TEST and LOCK answer it as a result, not
//! a failure); an unknown value is a decode error.

use alloc::vec::Vec;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder, VariableOpaque};

/// NLM program number.
pub const PROGRAM: u32 = 100_021;
/// NLM version 4 (the one that pairs with NFSv3).
pub const VERSION: u32 = 4;
/// `LM_MAXSTRLEN`: longest caller name.
pub const MAX_STRING: u32 = 1024;
/// `MAXNETOBJ_SZ`: longest `netobj` (cookies, handles, owners).
pub const MAX_NETOBJ: u32 = 1024;

/// Codec for `netobj`.
pub type NetObject = VariableOpaque<MAX_NETOBJ>;
/// Codec for `string caller_name<LM_MAXSTRLEN>`.
pub type CallerName = VariableOpaque<MAX_STRING>;
/// Codec for `string name<MAXNAMELEN>` (`LM_MAXSTRLEN + 1`).
pub type NotifyName = VariableOpaque<{ MAX_STRING + 1 }>;

/// `nlm4_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NlmStatus {
    /// NLM4_GRANTED = 0.
    Granted,
    /// NLM4_DENIED = 1: another owner holds a conflicting lock.
    Denied,
    /// NLM4_DENIED_NOLOCKS = 2: no room for another lock.
    DeniedNoLocks,
    /// NLM4_BLOCKED = 3: a blocking request was queued.
    Blocked,
    /// NLM4_DENIED_GRACE_PERIOD = 4.
    DeniedGracePeriod,
    /// NLM4_DEADLCK = 5.
    Deadlock,
    /// NLM4_ROFS = 6.
    ReadOnlyFileSystem,
    /// NLM4_STALE_FH = 7.
    StaleHandle,
    /// NLM4_FBIG = 8: the range is beyond what the server handles.
    TooBig,
    /// NLM4_FAILED = 9.
    Failed,
}

impl NlmStatus {
    /// Every status, in wire order.
    pub const ALL: [NlmStatus; 10] = [
        NlmStatus::Granted,
        NlmStatus::Denied,
        NlmStatus::DeniedNoLocks,
        NlmStatus::Blocked,
        NlmStatus::DeniedGracePeriod,
        NlmStatus::Deadlock,
        NlmStatus::ReadOnlyFileSystem,
        NlmStatus::StaleHandle,
        NlmStatus::TooBig,
        NlmStatus::Failed,
    ];

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            NlmStatus::Granted => 0,
            NlmStatus::Denied => 1,
            NlmStatus::DeniedNoLocks => 2,
            NlmStatus::Blocked => 3,
            NlmStatus::DeniedGracePeriod => 4,
            NlmStatus::Deadlock => 5,
            NlmStatus::ReadOnlyFileSystem => 6,
            NlmStatus::StaleHandle => 7,
            NlmStatus::TooBig => 8,
            NlmStatus::Failed => 9,
        }
    }
}

impl Encode for NlmStatus {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.to_u32());
    }
}

impl Decode for NlmStatus {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let value = decoder.u32()?;
        NlmStatus::ALL
            .get(value as usize)
            .copied()
            .ok_or(DecodeError::UnknownDiscriminant {
                type_name: "nlm4_stats",
                value,
            })
    }
}

xdr::xdr_struct! {
    /// `nlm4_holder`: who holds a lock that conflicts (TEST's answer).
    pub struct Holder {
        /// `exclusive`.
        pub exclusive: bool,
        /// `svid`: the holder's process id, as its client sent it.
        pub svid: i32,
        /// `oh`: the owner handle.
        pub owner: Vec<u8> as NetObject,
        /// `l_offset`.
        pub offset: u64,
        /// `l_len` (0: to the end of the file and beyond).
        pub length: u64,
    }
}

xdr::xdr_struct! {
    /// `nlm4_lock`: a byte range of a file, and its owner.
    pub struct Lock {
        /// `caller_name`: the client host's name.
        pub caller_name: Vec<u8> as CallerName,
        /// `fh`: the NFSv3 file handle.
        pub handle: Vec<u8> as NetObject,
        /// `oh`: the owner handle (opaque to the server).
        pub owner: Vec<u8> as NetObject,
        /// `svid`: the owning process.
        pub svid: i32,
        /// `l_offset`.
        pub offset: u64,
        /// `l_len` (0: to the end of the file and beyond).
        pub length: u64,
    }
}

xdr::xdr_struct! {
    /// `nlm4_lockargs`: LOCK.
    pub struct LockArguments {
        /// `cookie`: echoed in the result.
        pub cookie: Vec<u8> as NetObject,
        /// `block`: wait for a conflicting lock to go.
        pub block: bool,
        /// `exclusive`: a write lock (else shared, a read lock).
        pub exclusive: bool,
        /// `alock`.
        pub lock: Lock,
        /// `reclaim`: re-taken after a server restart.
        pub reclaim: bool,
        /// `state`: the client's status monitor state.
        pub state: i32,
    }
}

xdr::xdr_struct! {
    /// `nlm4_cancargs`: CANCEL a blocked LOCK.
    pub struct CancelArguments {
        /// `cookie`.
        pub cookie: Vec<u8> as NetObject,
        /// `block`.
        pub block: bool,
        /// `exclusive`.
        pub exclusive: bool,
        /// `alock`.
        pub lock: Lock,
    }
}

xdr::xdr_struct! {
    /// `nlm4_testargs`: TEST.
    pub struct TestArguments {
        /// `cookie`.
        pub cookie: Vec<u8> as NetObject,
        /// `exclusive`.
        pub exclusive: bool,
        /// `alock`.
        pub lock: Lock,
    }
}

xdr::xdr_struct! {
    /// `nlm4_unlockargs`: UNLOCK.
    pub struct UnlockArguments {
        /// `cookie`.
        pub cookie: Vec<u8> as NetObject,
        /// `alock`.
        pub lock: Lock,
    }
}

xdr::xdr_struct! {
    /// `nlm4_notify`: FREE_ALL, a client host that restarted.
    pub struct Notify {
        /// `name`: the host whose locks all go.
        pub name: Vec<u8> as NotifyName,
        /// `state`.
        pub state: i32,
    }
}

xdr::xdr_struct! {
    /// `nlm4_res`: the result of LOCK, CANCEL and UNLOCK.
    pub struct NlmResult {
        /// `cookie`: the call's.
        pub cookie: Vec<u8> as NetObject,
        /// `stat`.
        pub status: NlmStatus,
    }
}

/// `nlm4_testrply`: the holder of a conflicting lock, or a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestReply {
    /// NLM4_DENIED and who holds the conflicting lock.
    Denied(Holder),
    /// Any other status (NLM4_GRANTED: the lock could be had).
    Status(NlmStatus),
}

impl Encode for TestReply {
    fn encode(&self, encoder: &mut Encoder) {
        match self {
            TestReply::Denied(holder) => {
                NlmStatus::Denied.encode(encoder);
                holder.encode(encoder);
            }
            TestReply::Status(status) => status.encode(encoder),
        }
    }
}

impl Decode for TestReply {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match NlmStatus::decode(decoder)? {
            NlmStatus::Denied => TestReply::Denied(Holder::decode(decoder)?),
            status => TestReply::Status(status),
        })
    }
}

xdr::xdr_struct! {
    /// `nlm4_testres`: the result of TEST.
    pub struct TestResult {
        /// `cookie`: the call's.
        pub cookie: Vec<u8> as NetObject,
        /// `stat`.
        pub reply: TestReply,
    }
}

crate::program::program! {
    /// NLM version 4.
    program Nlm4 = PROGRAM, version VERSION;
    /// NLMPROC4_NULL.
    Null = 0, (), ();
    /// NLMPROC4_TEST: whether a lock could be had, and if not, who holds
    /// the conflicting one.
    Test = 1, TestArguments, TestResult;
    /// NLMPROC4_LOCK.
    Lock = 2, LockArguments, NlmResult;
    /// NLMPROC4_CANCEL: withdraw a blocked LOCK.
    Cancel = 3, CancelArguments, NlmResult;
    /// NLMPROC4_UNLOCK.
    Unlock = 4, UnlockArguments, NlmResult;
    /// NLMPROC4_FREE_ALL: every lock of a client host goes.
    FreeAll = 23, Notify, ();
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn lock_arguments_match_hand_encoded_bytes() {
        let arguments = LockArguments {
            cookie: vec![1, 2],
            block: true,
            exclusive: false,
            lock: Lock {
                caller_name: b"guest".to_vec(),
                handle: vec![0xaa; 4],
                owner: vec![9],
                svid: -2,
                offset: 0x1_0000_0002,
                length: 0,
            },
            reclaim: false,
            state: 3,
        };
        let expected: &[u8] = &[
            0, 0, 0, 2, 1, 2, 0, 0, // cookie: length 2, padded
            0, 0, 0, 1, // block
            0, 0, 0, 0, // exclusive
            0, 0, 0, 5, b'g', b'u', b'e', b's', b't', 0, 0, 0, // caller_name
            0, 0, 0, 4, 0xaa, 0xaa, 0xaa, 0xaa, // fh
            0, 0, 0, 1, 9, 0, 0, 0, // oh
            0xff, 0xff, 0xff, 0xfe, // svid -2
            0, 0, 0, 1, 0, 0, 0, 2, // l_offset
            0, 0, 0, 0, 0, 0, 0, 0, // l_len
            0, 0, 0, 0, // reclaim
            0, 0, 0, 3, // state
        ];
        assert_eq!(xdr::to_bytes(&arguments), expected);
        assert_eq!(
            xdr::from_bytes::<LockArguments>(expected).unwrap(),
            arguments
        );
    }

    #[test]
    fn a_denied_test_carries_the_holder_and_other_statuses_do_not() {
        let denied = TestResult {
            cookie: Vec::new(),
            reply: TestReply::Denied(Holder {
                exclusive: true,
                svid: 7,
                owner: vec![1, 2, 3, 4],
                offset: 10,
                length: 5,
            }),
        };
        let bytes = xdr::to_bytes(&denied);
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(bytes.len(), 4 + 4 + 4 + 4 + 8 + 8 + 8);
        assert_eq!(xdr::from_bytes::<TestResult>(&bytes).unwrap(), denied);
        let granted = TestResult {
            cookie: vec![5],
            reply: TestReply::Status(NlmStatus::Granted),
        };
        let bytes = xdr::to_bytes(&granted);
        assert_eq!(bytes, [0, 0, 0, 1, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(xdr::from_bytes::<TestResult>(&bytes).unwrap(), granted);
    }

    #[test]
    fn unknown_statuses_and_long_names_are_decode_errors() {
        assert!(xdr::from_bytes::<NlmStatus>(&[0, 0, 0, 10]).is_err());
        for status in NlmStatus::ALL {
            let bytes = xdr::to_bytes(&status);
            assert_eq!(xdr::from_bytes::<NlmStatus>(&bytes).unwrap(), status);
        }
        let mut long = vec![0, 0, 0x04, 0x01]; // a netobj of 1025 bytes
        long.extend(core::iter::repeat_n(0u8, 1028));
        assert!(xdr::from_bytes::<UnlockArguments>(&long).is_err());
    }
}
