//! The PV console: bytes into the `out` ring of the console page, then a
//! notification; xenconsoled copies them to `xl console` and its log.
//!
//! Output never blocks for long: with no console daemon draining the
//! ring, a write gives up after about a second and drops the rest.

use super::{events, hypercall, memory};
use core::fmt;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use spin::Mutex;
use xen_abi::console::{offset, output_index, OUT_RING_SIZE};
use xen_abi::xen::StartInfo;
use xen_abi::{EventChannelPort, MachineFrame};

/// The console ring and its event channel.
#[derive(Debug)]
pub struct Console {
    ring: *mut u8,
    port: EventChannelPort,
}

// SAFETY: the ring pointer is the console page, valid for the domain's life.
unsafe impl Send for Console {}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Find the console page (mapped by Xen's bootstrap tables).
pub fn init(start_info: &StartInfo) {
    let Some(address) = memory::virtual_address_of(MachineFrame(start_info.console.mfn)) else {
        return;
    };
    *CONSOLE.lock() = Some(Console {
        ring: address as *mut u8,
        port: EventChannelPort(start_info.console.evtchn),
    });
}

impl Console {
    fn index(&self, byte_offset: usize) -> &AtomicU32 {
        // SAFETY: out_cons/out_prod are aligned u32s inside the console
        // page; xenconsoled updates out_cons concurrently, hence atomics.
        unsafe { AtomicU32::from_ptr(self.ring.add(byte_offset).cast()) }
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        let mut remaining = bytes;
        let mut deadline = 0;
        while !remaining.is_empty() {
            let consumer = self.index(offset::OUT_CONS).load(Ordering::Acquire);
            let mut producer = self.index(offset::OUT_PROD).load(Ordering::Relaxed);
            let used = producer.wrapping_sub(consumer) as usize;
            if used >= OUT_RING_SIZE {
                // Full (or a daemon gone wrong): nudge it, wait a little.
                if deadline == 0 {
                    deadline = events::deadline_after_ms(1000);
                } else if events::system_time_ns() > deadline {
                    return;
                }
                events::clear_pending(self.port);
                hypercall::notify(self.port);
                events::wait(&[self.port], events::deadline_after_ms(10));
                continue;
            }
            let count = (OUT_RING_SIZE - used).min(remaining.len());
            for &byte in &remaining[..count] {
                // SAFETY: output_index keeps the write inside `out`.
                unsafe {
                    self.ring
                        .add(offset::OUTPUT + output_index(producer))
                        .write_volatile(byte)
                };
                producer = producer.wrapping_add(1);
            }
            // The bytes must be visible before the new producer index.
            fence(Ordering::Release);
            self.index(offset::OUT_PROD)
                .store(producer, Ordering::Release);
            hypercall::notify(self.port);
            remaining = &remaining[count..];
        }
    }

    /// Wait (at most `milliseconds`) until the daemon has taken everything,
    /// re-notifying: the first notification can be lost if xenconsoled had
    /// not bound the channel yet.
    fn drain(&mut self, milliseconds: u64) {
        let deadline = events::deadline_after_ms(milliseconds);
        loop {
            let consumer = self.index(offset::OUT_CONS).load(Ordering::Acquire);
            let producer = self.index(offset::OUT_PROD).load(Ordering::Relaxed);
            if consumer == producer || events::system_time_ns() > deadline {
                return;
            }
            hypercall::notify(self.port);
            events::wait(&[self.port], events::deadline_after_ms(20));
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for piece in text.split_inclusive('\n') {
            if let Some(line) = piece.strip_suffix('\n') {
                self.write_bytes(line.as_bytes());
                self.write_bytes(b"\r\n");
            } else {
                self.write_bytes(piece.as_bytes());
            }
        }
        Ok(())
    }
}

/// Print formatted text (used by the `println!` macro).
pub fn print(arguments: fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        let _ = fmt::Write::write_fmt(console, arguments);
    }
}

/// Wait until the console daemon has everything printed so far.
pub fn drain(milliseconds: u64) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.drain(milliseconds);
    }
}

/// Print from the panic handler: takes the console even if the panicking
/// code held its lock.
pub fn print_in_panic(arguments: fmt::Arguments<'_>) {
    if CONSOLE.is_locked() {
        // SAFETY: one vCPU and no interrupts: the holder is the code that
        // panicked, which will never run again.
        unsafe { CONSOLE.force_unlock() };
    }
    print(arguments);
    drain(2000);
}

/// `println!` onto the PV console.
#[macro_export]
macro_rules! println {
    () => { $crate::platform::console::print(format_args!("\n")) };
    ($($argument:tt)*) => {
        $crate::platform::console::print(format_args!("{}\n", format_args!($($argument)*)))
    };
}
