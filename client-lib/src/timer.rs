//! One-shot timers (`mtcp_settimer`), run by the analyzer's loop.

use crate::ctx::Ctx;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// A timer's callback: the context (no event is being dispatched) and the id given to
/// `settimer`.
pub type TimerCallback = Box<dyn FnMut(&mut Ctx<'_>, i32)>;

/// Which clock timers run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimerClock {
    /// The analyzer's monotonic clock (what mOS used): a timer fires that long after it was
    /// set, whatever the traffic does.
    #[default]
    Wall,
    /// Capture time: the newest timestamp of the events dispatched so far (or the sensor's
    /// clock, when it is newer). A replay fires its timers where they fall in the capture,
    /// however fast it runs; a quiet link moves this clock only with the sensor's ticks.
    Capture,
}

struct Pending {
    id: i32,
    cb: TimerCallback,
}

/// The timers set and not yet fired.
#[derive(Default)]
pub(crate) struct Timers {
    /// (due time in ns on the timer clock, sequence), earliest first.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    /// By sequence.
    pending: std::collections::HashMap<u64, Pending>,
    next_seq: u64,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Timers {
    /// Sets a timer due `after` past `now_ns`.
    pub fn set(&mut self, now_ns: u64, after: Duration, id: i32, cb: TimerCallback) {
        let due = now_ns.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.due.push(Reverse((due, seq)));
        self.pending.insert(seq, Pending { id, cb });
    }

    /// When the earliest timer is due, if any is set.
    pub fn next_due(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((d, _))| *d)
    }

    /// Takes the earliest timer if it is due by `now_ns`.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(i32, TimerCallback)> {
        let &Reverse((due, seq)) = self.due.peek()?;
        if due > now_ns {
            return None;
        }
        self.due.pop();
        let p = self.pending.remove(&seq)?;
        Some((p.id, p.cb))
    }

    /// Timers set and not fired.
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_due_order_once() {
        let mut t = Timers::default();
        t.set(100, Duration::from_nanos(50), 1, Box::new(|_, _| {}));
        t.set(100, Duration::from_nanos(10), 2, Box::new(|_, _| {}));
        t.set(100, Duration::from_nanos(10), 3, Box::new(|_, _| {}));
        assert_eq!(t.next_due(), Some(110));
        assert!(t.pop_due(109).is_none());
        assert_eq!(t.pop_due(110).map(|p| p.0), Some(2));
        assert_eq!(t.pop_due(110).map(|p| p.0), Some(3));
        assert!(t.pop_due(149).is_none());
        assert_eq!(t.pop_due(u64::MAX).map(|p| p.0), Some(1));
        assert!(t.pop_due(u64::MAX).is_none());
        assert_eq!(t.len(), 0);
        t.set(u64::MAX - 1, Duration::MAX, 4, Box::new(|_, _| {}));
        assert_eq!(t.next_due(), Some(u64::MAX));
    }
}
