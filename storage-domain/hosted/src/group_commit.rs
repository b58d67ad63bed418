//! Group commit for the hosted server's threads, with every device flush
//! outside the server's lock.
//!
//! Design: a thread whose reply must wait for durability calls
//! [`GroupCommit::make_durable`] with the operation sequence it needs.
//! Done if a commit already covered it; if another thread is running a
//! commit, it waits for that one to end and looks again (calls applied
//! while one commit runs share the next); otherwise it runs one itself.
//! A commit is staged ([`vfs::FileSystem::commit_begin`]): each step that
//! needs the file system takes the server's lock, each device flush runs
//! without it, so reads, other changes and other guests go on meanwhile.
//! At most one commit runs at a time. The coordination is a flag and a
//! condition variable; `tests` below check it against a file system
//! stand-in under many threads, failures included.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use vfs::{CommitFlush, FsError};

/// What the group commit needs of the server.
pub trait Commits {
    /// Whether every operation up to `sequence` is durable.
    fn is_durable(&self, sequence: u64) -> bool;
    /// Whether changes were applied that are not durable yet.
    fn has_uncommitted(&self) -> bool;
    /// Whether the file system failed (it refuses every commit now).
    fn has_failed(&mut self) -> bool;
    /// Begin a staged commit (see [`vfs::FileSystem::commit_begin`]).
    ///
    /// # Errors
    /// The commit's error.
    fn begin(&mut self) -> Result<Option<Box<dyn CommitFlush>>, FsError>;
    /// The next step (see [`vfs::FileSystem::commit_continue`]).
    ///
    /// # Errors
    /// The commit's error.
    fn resume(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<Box<dyn CommitFlush>>, FsError>;
}

impl Commits for crate::serve::HostedServer {
    fn is_durable(&self, sequence: u64) -> bool {
        nfs_server::Server::is_durable(self, sequence)
    }

    fn has_uncommitted(&self) -> bool {
        nfs_server::Server::has_uncommitted(self)
    }

    fn has_failed(&mut self) -> bool {
        self.filesystem().is_failed()
    }

    fn begin(&mut self) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
        self.commit_begin()
    }

    fn resume(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
        self.commit_continue(token, flushed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The commit coordinator shared by the hosted server's threads.
#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Whether a thread is running a commit now.
    committing: Mutex<bool>,
    /// Signalled (under `committing`) when a commit ends.
    ended: Condvar,
}

impl GroupCommit {
    /// Make every operation up to `sequence` durable: wait for the commit
    /// running now, or run one. `timed` is told when a commit this thread
    /// ran (and that had something to write) began. Returns whether
    /// `sequence` is durable: false once a commit failed.
    pub fn make_durable<S: Commits>(
        &self,
        server: &Mutex<S>,
        sequence: u64,
        timed: impl FnOnce(Instant),
    ) -> bool {
        let mut timed = Some(timed);
        loop {
            {
                let mut server = lock(server);
                if server.is_durable(sequence) {
                    return true;
                }
                if server.has_failed() {
                    return false;
                }
            }
            {
                let mut committing = lock(&self.committing);
                if *committing {
                    // The end is signalled under this lock: not missed.
                    drop(
                        self.ended
                            .wait(committing)
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                    continue;
                }
                *committing = true;
            }
            let started = Instant::now();
            let result = run(server);
            *lock(&self.committing) = false;
            self.ended.notify_all();
            if let (Ok(true), Some(timed)) = (&result, timed.take()) {
                timed(started);
            }
            if result.is_err() {
                return lock(server).is_durable(sequence);
            }
        }
    }
}

/// One staged commit: its steps under the lock, its flushes without.
/// Returns whether it had anything to write.
fn run<S: Commits>(server: &Mutex<S>) -> Result<bool, FsError> {
    let (mut step, wrote) = {
        let mut server = lock(server);
        let wrote = server.has_uncommitted();
        (server.begin(), wrote)
    };
    loop {
        match step {
            Ok(Some(mut flush)) => {
                let token = flush.token();
                let flushed = flush.run();
                step = lock(server).resume(token, flushed);
            }
            Ok(None) => return Ok(wrote),
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The coordinator against a stand-in whose commits take a random
    //! while and can fail; many threads apply operations and wait for
    //! them. What must hold: a thread is told its operation is durable only
    //! when a finished commit covers it; at most one commit runs at a
    //! time; no thread waits for ever (a wake-up lost would hang the test,
    //! which a watchdog turns into a failure); after a failed commit no
    //! thread is told that an operation it did not cover is durable.

    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// splitmix64.
    fn mix(seed: u64) -> u64 {
        let mut value = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    #[derive(Default)]
    struct Shared {
        /// Commits whose steps are running now (outside the lock).
        running: AtomicUsize,
        most_running: AtomicUsize,
        commits: AtomicU64,
        /// The commit (by number, from 1) whose flush fails; 0: none.
        fail_commit: AtomicU64,
        failed: AtomicBool,
    }

    struct Stand {
        applied: u64,
        durable: u64,
        /// What the commit in flight covers, and its step's token.
        in_flight: Option<(u64, u64)>,
        tokens: u64,
        shared: Arc<Shared>,
    }

    struct Flush {
        token: u64,
        number: u64,
        shared: Arc<Shared>,
    }

    impl CommitFlush for Flush {
        fn token(&self) -> u64 {
            self.token
        }

        fn run(&mut self) -> Result<(), FsError> {
            let now = self.shared.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.shared.most_running.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(mix(self.token) % 300));
            self.shared.running.fetch_sub(1, Ordering::SeqCst);
            if self.number == self.shared.fail_commit.load(Ordering::SeqCst) {
                Err(FsError::Io)
            } else {
                Ok(())
            }
        }
    }

    impl Commits for Stand {
        fn is_durable(&self, sequence: u64) -> bool {
            self.durable >= sequence
        }

        fn has_uncommitted(&self) -> bool {
            self.durable < self.applied
        }

        fn has_failed(&mut self) -> bool {
            self.shared.failed.load(Ordering::SeqCst)
        }

        fn begin(&mut self) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
            if self.has_failed() {
                return Err(FsError::Io);
            }
            assert!(self.in_flight.is_none(), "a commit began while one ran");
            if self.durable == self.applied {
                return Ok(None);
            }
            self.tokens += 1;
            let number = self.shared.commits.fetch_add(1, Ordering::SeqCst) + 1;
            self.in_flight = Some((self.applied, self.tokens));
            Ok(Some(Box::new(Flush {
                token: self.tokens,
                number,
                shared: Arc::clone(&self.shared),
            })))
        }

        fn resume(
            &mut self,
            token: u64,
            flushed: Result<(), FsError>,
        ) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
            let (covers, expected) = self.in_flight.take().expect("a step of no commit");
            assert_eq!(token, expected);
            flushed.inspect_err(|_| self.shared.failed.store(true, Ordering::SeqCst))?;
            self.durable = covers;
            Ok(None)
        }
    }

    /// `threads` threads apply `each` operations and wait for each; a
    /// commit fails if `fail_commit` says which. Returns per thread the
    /// (sequence, told durable) answers, the stand-in and its counters.
    fn campaign(threads: u64, each: u64, fail_commit: u64) -> (Vec<(u64, bool)>, Arc<Shared>, u64) {
        let shared = Arc::new(Shared::default());
        shared.fail_commit.store(fail_commit, Ordering::SeqCst);
        let stand = Arc::new(Mutex::new(Stand {
            applied: 0,
            durable: 0,
            in_flight: None,
            tokens: 0,
            shared: Arc::clone(&shared),
        }));
        let group = Arc::new(GroupCommit::default());
        let (done, finished) = mpsc::channel();
        for thread in 0..threads {
            let stand = Arc::clone(&stand);
            let group = Arc::clone(&group);
            let done = done.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for step in 0..each {
                    let sequence = {
                        let mut stand = lock(&stand);
                        stand.applied += 1;
                        stand.applied
                    };
                    if mix(thread * 1000 + step).is_multiple_of(4) {
                        std::thread::yield_now();
                    }
                    let durable = group.make_durable(&stand, sequence, |_| {});
                    // Told durable: a finished commit covers it now.
                    if durable {
                        assert!(lock(&stand).durable >= sequence);
                    }
                    answers.push((sequence, durable));
                }
                let _ = done.send(answers);
            });
        }
        drop(done);
        let mut answers = Vec::new();
        for _ in 0..threads {
            let thread_answers = finished
                .recv_timeout(Duration::from_secs(60))
                .expect("a thread waited for ever (a lost wake-up?) or panicked");
            answers.extend(thread_answers);
        }
        let durable = lock(&stand).durable;
        (answers, shared, durable)
    }

    #[test]
    fn every_waiter_is_covered_and_commits_never_overlap() {
        let (answers, shared, durable) = campaign(8, 200, 0);
        assert_eq!(answers.len(), 1600);
        assert!(answers.iter().all(|&(_, durable)| durable));
        assert_eq!(durable, 1600);
        assert_eq!(shared.most_running.load(Ordering::SeqCst), 1);
        // Group commit: fewer commits than operations.
        let commits = shared.commits.load(Ordering::SeqCst);
        assert!(commits < 1600, "{commits} commits for 1,600 operations");
    }

    #[test]
    fn after_a_failed_commit_nothing_it_did_not_cover_is_called_durable() {
        let (answers, shared, durable) = campaign(6, 100, 5);
        assert!(shared.failed.load(Ordering::SeqCst));
        for &(sequence, told) in &answers {
            assert_eq!(told, sequence <= durable, "operation {sequence}");
        }
        assert!(answers.iter().any(|&(_, told)| !told));
        assert_eq!(shared.most_running.load(Ordering::SeqCst), 1);
    }
}
