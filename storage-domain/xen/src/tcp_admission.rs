//! Which TCP connection gives way: the TCP server's eviction rules.
//!
//! The server admits every new client. When its table is full, the
//! connection idle longest is closed to make room (a Linux NFS client
//! reconnects transparently, and the duplicate request cache keeps a
//! retried call from running twice). Apart from that, a connection is
//! dropped only when its client stalls: it stopped in the middle of a
//! record, or does not take a reply, for longer than the stall timeout.
//! A connection that waits because *the server* holds it back (its
//! unread bytes wait in the socket while the record budget is spent by
//! others) is not stalled.
//!
//! These are pure functions of what the server knows about each
//! connection and the time it is handed, so the host tests drive them
//! directly; `tcp_server` applies them to its smoltcp sockets.
#![forbid(unsafe_code)]

use smoltcp::time::{Duration, Instant};

/// What the eviction rules look at in one connected client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// The last time bytes moved between the client and the server
    /// (a record's bytes consumed, reply bytes queued, or the connection
    /// accepted).
    pub last_activity: Instant,
    /// Some bytes of a record have been consumed and the rest has not.
    pub mid_record: bool,
    /// Bytes the client sent wait unread in the socket (the server, not
    /// the client, holds the connection back).
    pub input_waiting: bool,
    /// A reply waits for room in the socket's send buffer.
    pub output_pending: bool,
}

impl ConnectionView {
    /// Whether the client owes the server progress: it stopped in the
    /// middle of a record with nothing left unread, or it does not take
    /// its reply.
    pub fn owes_progress(&self) -> bool {
        (self.mid_record && !self.input_waiting) || self.output_pending
    }

    /// Whether the client has owed progress for `timeout` or longer.
    pub fn is_stalled(&self, now: Instant, timeout: Duration) -> bool {
        self.owes_progress() && now >= self.last_activity + timeout
    }
}

/// The connection to close for a newcomer: the one idle longest (the
/// oldest `last_activity`; the first of equals). `None` for no
/// connections.
pub fn idle_longest<I>(connections: I) -> Option<usize>
where
    I: IntoIterator<Item = (usize, ConnectionView)>,
{
    connections
        .into_iter()
        .min_by_key(|&(position, view)| (view.last_activity, position))
        .map(|(position, _)| position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(seconds: u64) -> ConnectionView {
        ConnectionView {
            last_activity: Instant::from_secs(seconds as i64),
            mid_record: false,
            input_waiting: false,
            output_pending: false,
        }
    }

    #[test]
    fn idle_longest_is_the_oldest_activity_first_of_equals() {
        assert_eq!(idle_longest([]), None);
        let views = [(0, view(50)), (1, view(10)), (2, view(30)), (3, view(10))];
        assert_eq!(idle_longest(views), Some(1));
        assert_eq!(idle_longest([(7, view(5))]), Some(7));
        // Positions need not be dense or ordered.
        assert_eq!(idle_longest([(9, view(3)), (4, view(3))]), Some(4));
    }

    #[test]
    fn an_idle_client_between_records_is_never_stalled() {
        let idle = view(0);
        assert!(!idle.owes_progress());
        assert!(!idle.is_stalled(Instant::from_secs(100_000), Duration::from_secs(1)));
    }

    #[test]
    fn half_a_record_stalls_after_the_timeout() {
        let timeout = Duration::from_secs(20);
        let half = ConnectionView {
            mid_record: true,
            ..view(100)
        };
        assert!(!half.is_stalled(Instant::from_secs(119), timeout));
        assert!(half.is_stalled(Instant::from_secs(120), timeout));
    }

    #[test]
    fn held_back_by_the_server_is_not_stalled() {
        let held = ConnectionView {
            mid_record: true,
            input_waiting: true,
            ..view(0)
        };
        assert!(!held.is_stalled(Instant::from_secs(3600), Duration::from_secs(20)));
    }

    #[test]
    fn a_reply_not_taken_stalls_after_the_timeout() {
        let timeout = Duration::from_secs(20);
        let deaf = ConnectionView {
            output_pending: true,
            input_waiting: true,
            ..view(10)
        };
        assert!(!deaf.is_stalled(Instant::from_secs(29), timeout));
        assert!(deaf.is_stalled(Instant::from_secs(30), timeout));
    }
}
