//! The bounded queue between an analyzer's thread and a network output's sending thread:
//! pushing never blocks (a full queue refuses), taking waits a bounded time.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One record on its way to a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    /// Its log (`conn`, `http`, ...).
    pub log: String,
    /// The connection's uid (empty: none).
    pub key: String,
    /// The JSON line.
    pub line: String,
}

/// At most `cap` items; [`Queue::push`] refuses past that. It also knows how many items the
/// consumer took and has not settled yet ([`Queue::settle`]), so that a waiter sees the
/// queue as empty only when those are done too.
#[derive(Debug)]
pub(crate) struct Queue {
    items: Mutex<State>,
    /// Signalled on every push and every take.
    changed: Condvar,
    cap: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// Taken by the consumer, not settled.
    taken: usize,
}

impl Queue {
    /// An empty queue of at most `cap` items.
    pub(crate) fn new(cap: usize) -> Queue {
        Queue {
            items: Mutex::new(State::default()),
            changed: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue that is still consistent.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `item` unless the queue is full (then gives it back).
    pub(crate) fn push(&self, item: Item) -> Result<(), Item> {
        let mut q = self.lock();
        if q.items.len() >= self.cap {
            return Err(item);
        }
        q.items.push_back(item);
        drop(q);
        self.changed.notify_all();
        Ok(())
    }

    /// Up to `max` items from the front, waiting at most `wait` for the first; they count as
    /// taken until [`Queue::settle`].
    pub(crate) fn take(&self, max: usize, wait: Duration) -> Vec<Item> {
        let deadline = Instant::now() + wait;
        let mut q = self.lock();
        while q.items.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            q = self
                .changed
                .wait_timeout(q, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let n = q.items.len().min(max);
        let out: Vec<Item> = q.items.drain(..n).collect();
        q.taken = n;
        drop(q);
        self.changed.notify_all();
        out
    }

    /// The items last taken are sent or counted.
    pub(crate) fn settle(&self) {
        self.lock().taken = 0;
        self.changed.notify_all();
    }

    /// Items queued now (not counting those taken).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Takes everything queued (to count it as dropped).
    pub(crate) fn clear(&self) -> usize {
        let n = {
            let mut q = self.lock();
            let n = q.items.len();
            q.items.clear();
            n
        };
        self.changed.notify_all();
        n
    }

    /// Waits until `done(n)`, `n` the items queued or taken and not settled, holds (checked
    /// on every change of the queue and at least every 50 ms) or `deadline` passes; says
    /// whether it held.
    pub(crate) fn wait_until(&self, deadline: Instant, done: impl Fn(usize) -> bool) -> bool {
        let mut q = self.lock();
        loop {
            if done(q.items.len() + q.taken) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .changed
                .wait_timeout(q, left.min(Duration::from_millis(50)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Wakes whoever waits in [`Queue::wait_until`] or [`Queue::take`].
    pub(crate) fn poke(&self) {
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize) -> Item {
        Item {
            log: "conn".into(),
            key: format!("C{i}"),
            line: format!("{{\"i\":{i}}}"),
        }
    }

    #[test]
    fn a_full_queue_refuses_and_takes_come_in_order() {
        let q = Queue::new(3);
        for i in 0..3 {
            q.push(item(i)).unwrap();
        }
        assert_eq!(q.push(item(3)), Err(item(3)));
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(2, Duration::ZERO), vec![item(0), item(1)]);
        q.push(item(4)).unwrap();
        assert_eq!(q.take(10, Duration::ZERO), vec![item(2), item(4)]);
        assert!(q.take(10, Duration::from_millis(10)).is_empty());
        q.push(item(5)).unwrap();
        assert_eq!(q.clear(), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_take_waits_for_a_push_from_another_thread() {
        let q = std::sync::Arc::new(Queue::new(10));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.take(5, Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        q.push(item(9)).unwrap();
        assert_eq!(t.join().unwrap(), vec![item(9)]);
        // Taken and not settled still counts.
        assert!(!q.wait_until(Instant::now(), |n| n == 0));
        q.settle();
        assert!(q.wait_until(Instant::now(), |n| n == 0));
        q.push(item(1)).unwrap();
        assert!(!q.wait_until(Instant::now() + Duration::from_millis(20), |n| n == 0));
    }
}
