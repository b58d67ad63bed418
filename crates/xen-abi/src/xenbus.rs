//! Split-driver connection states (`xen/include/public/io/xenbus.h`).

/// `enum xenbus_state`, as written in a device's `state` xenstore node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenbusState {
    /// `XenbusStateUnknown` (0).
    Unknown,
    /// `XenbusStateInitialising` (1).
    Initialising,
    /// `XenbusStateInitWait` (2): backend waits for the frontend's details.
    InitWait,
    /// `XenbusStateInitialised` (3): frontend published ring and channel.
    Initialised,
    /// `XenbusStateConnected` (4).
    Connected,
    /// `XenbusStateClosing` (5).
    Closing,
    /// `XenbusStateClosed` (6).
    Closed,
    /// `XenbusStateReconfiguring` (7).
    Reconfiguring,
    /// `XenbusStateReconfigured` (8).
    Reconfigured,
}

impl XenbusState {
    /// The number written to xenstore.
    pub fn number(self) -> u32 {
        match self {
            XenbusState::Unknown => 0,
            XenbusState::Initialising => 1,
            XenbusState::InitWait => 2,
            XenbusState::Initialised => 3,
            XenbusState::Connected => 4,
            XenbusState::Closing => 5,
            XenbusState::Closed => 6,
            XenbusState::Reconfiguring => 7,
            XenbusState::Reconfigured => 8,
        }
    }

    /// Parse a `state` node's value (decimal, surrounding whitespace and a
    /// trailing NUL tolerated); `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        let text = core::str::from_utf8(value).ok()?;
        let number: u32 = text
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .parse()
            .ok()?;
        Some(match number {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for number in 0..=8u32 {
            let text = alloc_free_decimal(number);
            let state = XenbusState::parse(text.as_bytes()).unwrap();
            assert_eq!(state.number(), number);
        }
        assert_eq!(XenbusState::parse(b"4\0"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"9"), None);
        assert_eq!(XenbusState::parse(b""), None);
        assert_eq!(XenbusState::parse(b"\xff"), None);
    }

    fn alloc_free_decimal(number: u32) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][number as usize]
    }
}
