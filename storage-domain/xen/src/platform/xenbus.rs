//! The xenbus split-driver handshake on top of xenstore: reading and
//! switching a device end's `state` node and waiting for the other end.

use super::events;
use super::xenstore::{Transaction, Xenstore, XenstoreError};
use alloc::format;
use xen_abi::xenbus::XenbusState;

/// Why a handshake step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XenbusError {
    /// Xenstore failed.
    Xenstore(XenstoreError),
    /// A `state` node did not hold a state number.
    BadState,
    /// The other end did not reach the wanted state in time.
    Timeout(XenbusState),
}

impl From<XenstoreError> for XenbusError {
    fn from(error: XenstoreError) -> Self {
        XenbusError::Xenstore(error)
    }
}

impl core::fmt::Display for XenbusError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenbusError::Xenstore(error) => write!(formatter, "{error}"),
            XenbusError::BadState => formatter.write_str("unparsable xenbus state"),
            XenbusError::Timeout(state) => write!(formatter, "peer stuck in state {state:?}"),
        }
    }
}

/// The state in `<device>/state`.
///
/// # Errors
/// [`XenbusError`].
pub fn read_state(xenstore: &mut Xenstore, device: &str) -> Result<XenbusState, XenbusError> {
    let value = xenstore.read(Transaction::NONE, &format!("{device}/state"))?;
    XenbusState::parse(&value).ok_or(XenbusError::BadState)
}

/// Write our own `<device>/state`.
///
/// # Errors
/// [`XenbusError`].
pub fn switch_state(
    xenstore: &mut Xenstore,
    transaction: Transaction,
    device: &str,
    state: XenbusState,
) -> Result<(), XenbusError> {
    let value = format!("{}", state.number());
    xenstore.write(transaction, &format!("{device}/state"), value.as_bytes())?;
    Ok(())
}

/// Wait (watching `<device>/state`) until `accept` likes the state, for at
/// most `milliseconds`; returns the state seen.
///
/// # Errors
/// [`XenbusError::Timeout`] with the last state seen.
pub fn wait_for_state(
    xenstore: &mut Xenstore,
    device: &str,
    milliseconds: u64,
    accept: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState, XenbusError> {
    let path = format!("{device}/state");
    let token = format!("state:{device}");
    xenstore.watch(&path, &token)?;
    let deadline = events::deadline_after_ms(milliseconds);
    let result = loop {
        let state = match read_state(xenstore, device) {
            Ok(state) => state,
            Err(XenbusError::Xenstore(XenstoreError::Errno(_))) => XenbusState::Unknown,
            Err(error) => break Err(error),
        };
        if accept(state) {
            break Ok(state);
        }
        match xenstore.next_watch_event(Some(&token), deadline) {
            Ok(Some(_)) => continue,
            Ok(None) => break Err(XenbusError::Timeout(state)),
            Err(error) => break Err(error.into()),
        }
    };
    let _ = xenstore.unwatch(&path, &token);
    result
}
