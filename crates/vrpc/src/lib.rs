//! VRPC: ONC RPC records on shared-memory request/response rings.
//!
//! Design: a connection is one ring of fixed-size slots in the style of
//! Xen's `io/ring.h` (producer indices, `req_event`/`rsp_event` notification
//! suppression, the final check against the missed-notification race), a
//! doorbell each way, and a pool of data pages the guest owns. A request
//! slot carries a standard ONC RPC call record (the bytes TCP would carry,
//! without record marking) with at most one byte range spliced out into data
//! pages, plus descriptors naming the pages of that payload and the pages the
//! server may fill with the reply's payload. Many calls are in flight; replies
//! complete in any order and are matched by xid. The wire layout, splice
//! rules, handshake and state machine are specified in `docs/vrpc.md`.
//!
//! - [`memory`]: the [`SharedMemory`] and [`Doorbell`] traits the platform
//!   implements (all `unsafe` lives in those implementations);
//! - [`layout`]: offsets, parameters, descriptors;
//! - [`front`]: the guest end ([`Frontend`]); [`back`]: the server end
//!   ([`Backend`]), which treats every byte of shared memory as hostile;
//! - [`splice`]: which bytes of a record travel in pages;
//! - [`xenstore`]: the Xen handshake's key names and value parsers;
//! - [`client`] (feature `std`): the blocking, multi-threaded client every
//!   platform's guest side uses over a [`client::Link`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod back;
#[cfg(feature = "std")]
pub mod client;
mod error;
pub mod front;
pub mod layout;
pub mod memory;
pub mod pool;
pub mod splice;
pub mod xenstore;

pub use back::{Backend, ReplyPages, Request, DEFAULT_MAX_RECORD};
pub use error::{ProtocolError, SubmitError};
pub use front::{CallFailure, Completion, Frontend, Payload, SetupError};
pub use layout::{Descriptor, ResponseStatus, RingParameters, PAGE_SIZE};
pub use memory::{CountingDoorbell, Doorbell, OutOfBounds, SharedMemory};
