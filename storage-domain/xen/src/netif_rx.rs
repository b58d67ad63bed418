//! Turning netfront's RX responses into Ethernet frames: the part of the
//! receive path that judges what the backend wrote, kept free of shared
//! memory so the host tests can feed it anything.
//!
//! The platform code copies each response out of the ring once and hands
//! it here with the buffer it had posted at that ring slot. Every outcome
//! is bounded: a response whose id is not that buffer is a protocol
//! violation (the caller stops the interface); an error status, an
//! offset or length outside the page, a frame over [`MAX_FRAME_BYTES`]
//! or a runt drops the frame (every slot of it); extra-info slots
//! (`NETRXF_extra_info`, never requested) are skipped.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use xen_abi::netif::{NetifRxResponse, EXTRA_FLAG_MORE, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA};
use xen_abi::PAGE_SIZE;

/// Largest frame accepted over several slots (`NETRXF_more_data`).
pub const MAX_FRAME_BYTES: usize = 65535;
/// Smallest frame delivered: an Ethernet header.
pub const MIN_FRAME_BYTES: usize = 14;

/// What one response slot produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxStep {
    /// Nothing yet (a slot of an unfinished frame, a skipped slot, or a
    /// dropped frame).
    Nothing,
    /// A complete frame.
    Frame(Vec<u8>),
    /// The backend broke the protocol; stop using the interface.
    Broken(&'static str),
}

/// Frame reassembly state across slots.
#[derive(Debug, Default)]
pub struct RxAssembler {
    partial: Vec<u8>,
    /// The frame being collected is dropped when complete.
    bad: bool,
    /// The next slot is an extra-info slot.
    extra_next: bool,
    /// Frames dropped.
    pub dropped: u64,
}

impl RxAssembler {
    /// A fresh assembler.
    pub fn new() -> RxAssembler {
        RxAssembler::default()
    }

    /// Take the response copied from a slot whose posted buffer was
    /// `buffer`; `read(offset, out)` copies bytes of that buffer's page
    /// (called only with `offset + out.len() <= PAGE_SIZE`). The buffer
    /// may be posted again afterwards whatever the outcome.
    pub fn take(
        &mut self,
        buffer: u16,
        response: NetifRxResponse,
        read: impl FnOnce(usize, &mut [u8]),
    ) -> RxStep {
        if self.extra_next {
            // A `netif_extra_info` slot: byte 0 the type, byte 1 the flags.
            let flags = (response.id >> 8) as u8;
            self.extra_next = flags & EXTRA_FLAG_MORE != 0;
            return RxStep::Nothing;
        }
        if response.id != buffer {
            return RxStep::Broken("rx response id does not match the request");
        }
        self.extra_next = response.flags & NETRXF_EXTRA_INFO != 0;
        let start = usize::from(response.offset);
        let fits = match usize::try_from(response.status) {
            Ok(length) if length > 0 && start + length <= PAGE_SIZE => Some(length),
            _ => None,
        };
        match fits {
            Some(length) if !self.bad && self.partial.len() + length <= MAX_FRAME_BYTES => {
                let old = self.partial.len();
                self.partial.resize(old + length, 0);
                read(start, &mut self.partial[old..]);
            }
            _ => {
                self.bad = true;
                // Free the bytes of a frame that is dropped anyway.
                self.partial = Vec::new();
            }
        }
        if response.flags & NETRXF_MORE_DATA != 0 {
            return RxStep::Nothing;
        }
        let frame = core::mem::take(&mut self.partial);
        let bad = core::mem::replace(&mut self.bad, false);
        if bad || frame.len() < MIN_FRAME_BYTES {
            self.dropped += 1;
            return RxStep::Nothing;
        }
        RxStep::Frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn response(id: u16, offset: u16, flags: u16, status: i16) -> NetifRxResponse {
        NetifRxResponse {
            id,
            offset,
            flags,
            status,
        }
    }

    /// A page whose byte i is i mod 251.
    fn page_read(offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= PAGE_SIZE, "read outside the page");
        for (index, byte) in out.iter_mut().enumerate() {
            *byte = ((offset + index) % 251) as u8;
        }
    }

    fn expected(offset: usize, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        page_read(offset, &mut bytes);
        bytes
    }

    #[test]
    fn single_slot_frame() {
        let mut rx = RxAssembler::new();
        assert_eq!(
            rx.take(3, response(3, 10, 0, 60), page_read),
            RxStep::Frame(expected(10, 60))
        );
        assert_eq!(rx.dropped, 0);
    }

    #[test]
    fn wrong_id_breaks_the_interface() {
        let mut rx = RxAssembler::new();
        assert!(matches!(
            rx.take(3, response(4, 0, 0, 60), page_read),
            RxStep::Broken(_)
        ));
    }

    #[test]
    fn bad_status_offset_or_length_drops_without_reading_outside() {
        let mut rx = RxAssembler::new();
        for bad in [
            response(1, 0, 0, -1),
            response(1, 0, 0, -2),
            response(1, 0, 0, 0),
            response(1, 4000, 0, 200),
            response(1, 0, 0, i16::MAX),
            response(1, u16::MAX, 0, 1),
        ] {
            assert_eq!(rx.take(1, bad, page_read), RxStep::Nothing, "{bad:?}");
        }
        assert_eq!(rx.dropped, 6);
        // Then a good frame goes through again.
        assert_eq!(
            rx.take(1, response(1, 0, 0, 20), page_read),
            RxStep::Frame(expected(0, 20))
        );
    }

    #[test]
    fn runt_frames_are_dropped() {
        let mut rx = RxAssembler::new();
        assert_eq!(
            rx.take(0, response(0, 0, 0, 13), page_read),
            RxStep::Nothing
        );
        assert_eq!(rx.dropped, 1);
    }

    #[test]
    fn more_data_chains_are_joined_and_a_bad_slot_drops_the_chain() {
        let mut rx = RxAssembler::new();
        assert_eq!(
            rx.take(0, response(0, 0, NETRXF_MORE_DATA, 100), page_read),
            RxStep::Nothing
        );
        let mut frame = expected(0, 100);
        frame.extend(expected(5, 50));
        assert_eq!(
            rx.take(1, response(1, 5, 0, 50), page_read),
            RxStep::Frame(frame)
        );
        // A chain with an error in its middle is dropped as a whole.
        rx.take(2, response(2, 0, NETRXF_MORE_DATA, 100), page_read);
        rx.take(3, response(3, 0, NETRXF_MORE_DATA, -1), page_read);
        assert_eq!(
            rx.take(4, response(4, 0, 0, 100), page_read),
            RxStep::Nothing
        );
        assert_eq!(rx.dropped, 1);
    }

    #[test]
    fn frames_over_the_limit_are_dropped() {
        let mut rx = RxAssembler::new();
        let mut steps = Vec::new();
        // 17 full pages: 69632 bytes > 65535.
        for slot in 0..17u16 {
            let flags = if slot < 16 { NETRXF_MORE_DATA } else { 0 };
            steps.push(rx.take(slot, response(slot, 0, flags, 4096), page_read));
        }
        assert!(steps.iter().all(|step| *step == RxStep::Nothing));
        assert_eq!(rx.dropped, 1);
    }

    #[test]
    fn extra_info_slots_are_skipped() {
        let mut rx = RxAssembler::new();
        // A frame with two extra-info slots (the first says "more").
        assert_eq!(
            rx.take(0, response(0, 0, NETRXF_EXTRA_INFO, 40), page_read),
            RxStep::Frame(expected(0, 40))
        );
        let first_extra = response(1 | (u16::from(EXTRA_FLAG_MORE) << 8), 0, 0, 0);
        assert_eq!(rx.take(1, first_extra, page_read), RxStep::Nothing);
        // Its id is not checked: an extra-info slot has none.
        assert_eq!(
            rx.take(2, response(0x0001, 0, 0, 0), page_read),
            RxStep::Nothing
        );
        assert_eq!(
            rx.take(3, response(3, 0, 0, 30), page_read),
            RxStep::Frame(expected(0, 30))
        );
        assert_eq!(rx.dropped, 0);
    }
}
