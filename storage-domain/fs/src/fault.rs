//! A block device that fails on purpose: read, write and flush errors at
//! chosen or random requests, torn writes, and a device that dies.
//!
//! Design: [`FaultDevice`] wraps any [`BlockDevice`] and follows a
//! [`FaultPlan`], parsed from the text the hosted server's `--fault` flag
//! takes (syntax in [`FaultPlan::parse`] and `docs/reliability.md`).
//! Requests are counted only while the shared [`FaultControl`] is armed,
//! so a test (or the server, once it is ready) decides where counting
//! starts, and disarming clears every fault: the device then passes
//! everything through, as a disk whose trouble went away. Random choices
//! come from a seeded generator, so a failing run replays.

use crate::layout::BLOCK_SIZE;
use crate::{BlockDevice, DeviceError};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A kind of device request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `read_block` or `read_blocks`.
    Read,
    /// `write_block` or `write_blocks`.
    Write,
    /// `flush`.
    Flush,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Flush => "flush",
        }
    }
}

/// One rule of a [`FaultPlan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultRule {
    /// The `number`-th request of this kind fails (1 = the first after
    /// arming); a failed write writes nothing.
    Nth {
        /// Which requests are counted.
        operation: Operation,
        /// Which one fails.
        number: u64,
    },
    /// The `number`-th write request writes part of its data (whole blocks,
    /// then part of one block) and fails.
    Tear {
        /// Which write request tears.
        number: u64,
    },
    /// Each request of this kind fails with this probability, in parts per
    /// million.
    Random {
        /// Which requests may fail.
        operation: Operation,
        /// The probability, 0..=1,000,000.
        per_million: u32,
    },
    /// Every request after the first `number` (of any kind) fails: the
    /// device died.
    After {
        /// Requests that still succeed.
        number: u64,
    },
}

/// What a fault device does wrong, and the seed of its random choices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The rules; a request fails when any rule says so.
    pub rules: Vec<FaultRule>,
    /// Seeds the probabilities and where writes tear.
    pub seed: u64,
}

/// Why a fault specification was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpecError(pub String);

impl fmt::Display for FaultSpecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl core::error::Error for FaultSpecError {}

fn spec_error(message: impl Into<String>) -> FaultSpecError {
    FaultSpecError(message.into())
}

fn parse_count(key: &str, value: &str) -> Result<u64, FaultSpecError> {
    match value.parse::<u64>() {
        Ok(number) if number >= 1 => Ok(number),
        _ => Err(spec_error(alloc::format!(
            "`{key}={value}`: expected a request number from 1 (or, for read, write and flush, a percentage such as 0.5%)"
        ))),
    }
}

impl FaultPlan {
    /// Parses a specification: clauses separated by commas.
    ///
    /// ```text
    /// read=N | write=N | flush=N   the N-th such request fails (from 1; repeatable)
    /// read=P% | write=P% | flush=P%  each such request fails with probability P percent
    /// tear=N                       the N-th write request writes part of its data, then fails
    /// after=N                      every request after the first N (any kind) fails
    /// seed=S                       seed of the random choices (default 1)
    /// ```
    ///
    /// # Errors
    /// [`FaultSpecError`] naming the clause that is wrong and why.
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let mut plan = FaultPlan {
            rules: Vec::new(),
            seed: 1,
        };
        if spec.trim().is_empty() {
            return Err(spec_error(
                "empty fault specification (expected clauses such as `flush=3` or `write=1%,seed=7`)",
            ));
        }
        for clause in spec.split(',') {
            let clause = clause.trim();
            let Some((key, value)) = clause.split_once('=') else {
                return Err(spec_error(alloc::format!(
                    "`{clause}`: expected KEY=VALUE (keys: read, write, flush, tear, after, seed)"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let operation = match key {
                "read" => Some(Operation::Read),
                "write" => Some(Operation::Write),
                "flush" => Some(Operation::Flush),
                _ => None,
            };
            let rule = match (key, operation) {
                (_, Some(operation)) => match value.strip_suffix('%') {
                    Some(percent) => {
                        let per_million = percent
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|percent| (0.0..=100.0).contains(percent))
                            .map(|percent| (percent * 10_000.0 + 0.5) as u32)
                            .ok_or_else(|| {
                                spec_error(alloc::format!(
                                    "`{clause}`: the percentage must be a number from 0 to 100"
                                ))
                            })?;
                        FaultRule::Random {
                            operation,
                            per_million,
                        }
                    }
                    None => FaultRule::Nth {
                        operation,
                        number: parse_count(key, value)?,
                    },
                },
                ("tear", None) => FaultRule::Tear {
                    number: parse_count(key, value)?,
                },
                ("after", None) => FaultRule::After {
                    number: value.parse::<u64>().map_err(|_| {
                        spec_error(alloc::format!(
                            "`{clause}`: expected how many requests still succeed (0 or more)"
                        ))
                    })?,
                },
                ("seed", None) => {
                    plan.seed = value.parse::<u64>().map_err(|_| {
                        spec_error(alloc::format!(
                            "`{clause}`: the seed must be a whole number"
                        ))
                    })?;
                    continue;
                }
                _ => {
                    return Err(spec_error(alloc::format!(
                    "`{clause}`: unknown key `{key}` (keys: read, write, flush, tear, after, seed)"
                )))
                }
            };
            plan.rules.push(rule);
        }
        Ok(plan)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.rules {
            match *rule {
                FaultRule::Nth { operation, number } => {
                    write!(formatter, "{}={number},", operation.name())?
                }
                FaultRule::Tear { number } => write!(formatter, "tear={number},")?,
                FaultRule::Random {
                    operation,
                    per_million,
                } => write!(
                    formatter,
                    "{}={}%,",
                    operation.name(),
                    f64::from(per_million) / 10_000.0
                )?,
                FaultRule::After { number } => write!(formatter, "after={number},")?,
            }
        }
        write!(formatter, "seed={}", self.seed)
    }
}

/// The switch and counters of a [`FaultDevice`], shared with whoever
/// decides when faults start and stop.
#[derive(Debug, Default)]
pub struct FaultControl {
    armed: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    injected: AtomicU64,
}

impl FaultControl {
    /// Start counting requests from zero and apply the plan.
    pub fn arm(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.writes.store(0, Ordering::SeqCst);
        self.flushes.store(0, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Clear every fault: requests pass through, uncounted, until the
    /// control is armed or resumed again.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Apply the plan again, counting on from where [`FaultControl::disarm`]
    /// stopped (a test pauses the faults while it inspects the volume).
    pub fn resume(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Whether the plan applies now.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// Requests counted since arming: (reads, writes, flushes).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.reads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
            self.flushes.load(Ordering::SeqCst),
        )
    }

    /// Faults injected since the device was made.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

/// One injected fault, as reported to the device's report function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// The request's kind.
    pub operation: Operation,
    /// Its number among requests of its kind since arming.
    pub number: u64,
    /// The first block it named (0 for a flush).
    pub block: u64,
    /// For a torn write: how many of its bytes were written.
    pub torn_at: Option<usize>,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "injected fault: {} request {} failed",
            self.operation.name(),
            self.number
        )?;
        if self.operation != Operation::Flush {
            write!(formatter, " (block {})", self.block)?;
        }
        if let Some(bytes) = self.torn_at {
            write!(formatter, " after writing its first {bytes} bytes (torn)")?;
        }
        Ok(())
    }
}

/// A [`BlockDevice`] that fails as its [`FaultPlan`] says while armed.
pub struct FaultDevice<D> {
    inner: D,
    plan: FaultPlan,
    control: Arc<FaultControl>,
    random: u64,
    report: Option<fn(&InjectedFault)>,
}

impl<D: fmt::Debug> fmt::Debug for FaultDevice<D> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FaultDevice")
            .field("inner", &self.inner)
            .field("plan", &self.plan)
            .field("control", &self.control)
            .finish()
    }
}

/// What to do with one request.
enum Verdict {
    Pass,
    Fail,
    Tear,
}

impl<D: BlockDevice> FaultDevice<D> {
    /// Wraps `inner`; disarmed until [`FaultControl::arm`].
    pub fn new(inner: D, plan: FaultPlan) -> Self {
        let random = plan.seed ^ 0x9E37_79B9_7F4A_7C15;
        FaultDevice {
            inner,
            plan,
            control: Arc::new(FaultControl::default()),
            random,
            report: None,
        }
    }

    /// Calls `report` for every fault injected (the hosted server logs
    /// them).
    pub fn with_report(mut self, report: fn(&InjectedFault)) -> Self {
        self.report = Some(report);
        self
    }

    /// The shared switch and counters.
    pub fn control(&self) -> Arc<FaultControl> {
        Arc::clone(&self.control)
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Unwraps the device.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.random;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    /// Counts one request and judges it.
    fn judge(&mut self, operation: Operation) -> (Verdict, u64) {
        if !self.control.is_armed() {
            return (Verdict::Pass, 0);
        }
        let counter = match operation {
            Operation::Read => &self.control.reads,
            Operation::Write => &self.control.writes,
            Operation::Flush => &self.control.flushes,
        };
        let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let (reads, writes, flushes) = self.control.counts();
        let total = reads + writes + flushes;
        let mut verdict = Verdict::Pass;
        for index in 0..self.plan.rules.len() {
            let rule = self.plan.rules[index];
            let fails = match rule {
                FaultRule::Nth {
                    operation: wanted,
                    number: which,
                } => wanted == operation && which == number,
                FaultRule::Tear { number: which } => {
                    if operation == Operation::Write
                        && which == number
                        && matches!(verdict, Verdict::Pass)
                    {
                        verdict = Verdict::Tear;
                    }
                    false
                }
                FaultRule::Random {
                    operation: wanted,
                    per_million,
                } => {
                    wanted == operation && (self.next_random() % 1_000_000) < u64::from(per_million)
                }
                FaultRule::After { number: succeed } => total > succeed,
            };
            if fails {
                verdict = Verdict::Fail;
            }
        }
        (verdict, number)
    }

    fn injected(&self, operation: Operation, number: u64, block: u64, torn_at: Option<usize>) {
        self.control.injected.fetch_add(1, Ordering::SeqCst);
        if let Some(report) = self.report {
            report(&InjectedFault {
                operation,
                number,
                block,
                torn_at,
            });
        }
    }

    /// Writes the first part of `data` (whole blocks, then a prefix of one
    /// block merged over its old contents) and fails.
    fn tear(&mut self, number: u64, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        let blocks = data.len().div_ceil(BLOCK_SIZE).max(1);
        let torn_block = (self.next_random() % blocks as u64) as usize;
        let within = 1 + (self.next_random() % (BLOCK_SIZE as u64 - 1)) as usize;
        let whole = &data[..(torn_block * BLOCK_SIZE).min(data.len())];
        if !whole.is_empty() {
            self.inner.write_blocks(first, whole)?;
        }
        let block = first + torn_block as u64;
        let mut merged = [0u8; BLOCK_SIZE];
        // A block whose old contents cannot be read tears over zeros.
        let _ = self.inner.read_block(block, &mut merged);
        let start = torn_block * BLOCK_SIZE;
        let end = (start + within).min(data.len());
        if start < end {
            merged[..end - start].copy_from_slice(&data[start..end]);
        }
        self.inner.write_block(block, &merged)?;
        self.injected(Operation::Write, number, first, Some(start + within));
        Err(DeviceError::Io)
    }
}

impl<D: BlockDevice> BlockDevice for FaultDevice<D> {
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        match self.judge(Operation::Read) {
            (Verdict::Pass, _) => self.inner.read_block(block, buffer),
            (Verdict::Fail | Verdict::Tear, number) => {
                self.injected(Operation::Read, number, block, None);
                Err(DeviceError::Io)
            }
        }
    }

    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        match self.judge(Operation::Read) {
            (Verdict::Pass, _) => self.inner.read_blocks(first, buffer),
            (Verdict::Fail | Verdict::Tear, number) => {
                self.injected(Operation::Read, number, first, None);
                Err(DeviceError::Io)
            }
        }
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        match self.judge(Operation::Write) {
            (Verdict::Pass, _) => self.inner.write_block(block, data),
            (Verdict::Fail, number) => {
                self.injected(Operation::Write, number, block, None);
                Err(DeviceError::Io)
            }
            (Verdict::Tear, number) => self.tear(number, block, data),
        }
    }

    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        match self.judge(Operation::Write) {
            (Verdict::Pass, _) => self.inner.write_blocks(first, data),
            (Verdict::Fail, number) => {
                self.injected(Operation::Write, number, first, None);
                Err(DeviceError::Io)
            }
            (Verdict::Tear, number) => self.tear(number, first, data),
        }
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        match self.judge(Operation::Flush) {
            (Verdict::Pass, _) => self.inner.flush(),
            (Verdict::Fail | Verdict::Tear, number) => {
                self.injected(Operation::Flush, number, 0, None);
                Err(DeviceError::Io)
            }
        }
    }

    /// Only without a plan: a planned flush fault must be judged in the
    /// order of the device's own requests, so commits with faults planned
    /// stay whole.
    fn flusher(&mut self) -> Option<alloc::boxed::Box<dyn crate::DeviceFlush>> {
        if self.plan.rules.is_empty() {
            self.inner.flusher()
        } else {
            None
        }
    }

    /// Likewise only without a plan.
    fn start_flush(&mut self) -> Result<Option<crate::FlushTicket>, DeviceError> {
        if self.plan.rules.is_empty() {
            self.inner.start_flush()
        } else {
            Ok(None)
        }
    }

    fn poll_flush(&mut self, ticket: crate::FlushTicket) -> Option<Result<(), DeviceError>> {
        self.inner.poll_flush(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use alloc::string::ToString;

    #[test]
    fn specifications_parse_and_print_back() {
        let plan = FaultPlan::parse("write=3, flush=1,read=0.5%,tear=2,after=100,seed=9").unwrap();
        assert_eq!(plan.seed, 9);
        assert_eq!(
            plan.rules,
            [
                FaultRule::Nth {
                    operation: Operation::Write,
                    number: 3
                },
                FaultRule::Nth {
                    operation: Operation::Flush,
                    number: 1
                },
                FaultRule::Random {
                    operation: Operation::Read,
                    per_million: 5_000
                },
                FaultRule::Tear { number: 2 },
                FaultRule::After { number: 100 },
            ]
        );
        assert_eq!(
            plan.to_string(),
            "write=3,flush=1,read=0.5%,tear=2,after=100,seed=9"
        );
        assert_eq!(FaultPlan::parse(&plan.to_string()).unwrap(), plan);
    }

    #[test]
    fn bad_specifications_say_what_is_wrong() {
        for (spec, says) in [
            ("", "empty"),
            ("write", "KEY=VALUE"),
            ("write=0", "from 1"),
            ("write=x", "from 1"),
            ("flush=101%", "from 0 to 100"),
            ("read=-1%", "from 0 to 100"),
            ("explode=1", "unknown key `explode`"),
            ("seed=abc", "whole number"),
            ("after=-3", "0 or more"),
        ] {
            let error = FaultPlan::parse(spec).unwrap_err().to_string();
            assert!(error.contains(says), "{spec:?}: {error}");
        }
    }

    fn device(spec: &str) -> FaultDevice<MemoryDevice> {
        FaultDevice::new(MemoryDevice::new(16), FaultPlan::parse(spec).unwrap())
    }

    #[test]
    fn nth_requests_fail_only_while_armed() {
        let mut device = device("write=2,flush=1,read=3");
        let block = [7u8; BLOCK_SIZE];
        let mut buffer = [0u8; BLOCK_SIZE];
        // Disarmed: nothing counts, nothing fails.
        for _ in 0..4 {
            device.write_block(1, &block).unwrap();
            device.flush().unwrap();
        }
        let control = device.control();
        control.arm();
        device.write_block(2, &block).unwrap();
        assert_eq!(device.write_block(3, &block), Err(DeviceError::Io));
        device.write_block(3, &block).unwrap();
        assert_eq!(device.flush(), Err(DeviceError::Io));
        device.flush().unwrap();
        device.read_block(2, &mut buffer).unwrap();
        device.read_blocks(2, &mut buffer).unwrap();
        assert_eq!(device.read_block(2, &mut buffer), Err(DeviceError::Io));
        assert_eq!(control.counts(), (3, 3, 2));
        assert_eq!(control.injected(), 3);
        control.disarm();
        device.read_block(2, &mut buffer).unwrap();
        assert_eq!(buffer, block);
    }

    #[test]
    fn a_dead_device_fails_everything_after_its_last_good_request() {
        let mut device = device("after=2");
        device.control().arm();
        let block = [1u8; BLOCK_SIZE];
        device.write_block(1, &block).unwrap();
        device.flush().unwrap();
        let mut buffer = [0u8; BLOCK_SIZE];
        assert!(device.read_block(1, &mut buffer).is_err());
        assert!(device.write_block(1, &block).is_err());
        assert!(device.flush().is_err());
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_and_fails() {
        for seed in 0..20 {
            let mut device = device(&alloc::format!("tear=1,seed={seed}"));
            device.write_blocks(0, &[0xaa; 4 * BLOCK_SIZE]).unwrap();
            device.control().arm();
            let data = alloc::vec![0x55u8; 4 * BLOCK_SIZE];
            assert_eq!(device.write_blocks(0, &data), Err(DeviceError::Io));
            let mut image = alloc::vec![0u8; 4 * BLOCK_SIZE];
            device.control().disarm();
            device.read_blocks(0, &mut image).unwrap();
            let written = image.iter().take_while(|&&byte| byte == 0x55).count();
            assert!(written < image.len(), "seed {seed}: everything written");
            assert!(written % BLOCK_SIZE != 0, "seed {seed}: no block torn");
            assert!(image[written..].iter().all(|&byte| byte == 0xaa));
        }
    }

    #[test]
    fn probabilities_follow_the_seed() {
        let failures = |seed: u64| -> Vec<bool> {
            let mut device = device(&alloc::format!("flush=25%,seed={seed}"));
            device.control().arm();
            (0..400).map(|_| device.flush().is_err()).collect()
        };
        let first = failures(3);
        assert_eq!(first, failures(3));
        assert_ne!(first, failures(4));
        let count = first.iter().filter(|&&failed| failed).count();
        assert!((60..140).contains(&count), "{count} of 400 at 25%");
    }
}
