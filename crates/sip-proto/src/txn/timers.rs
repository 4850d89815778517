//! One deadline queue for every transaction timer (RFC 3261 section 17, Timers A..K and
//! RFC 6026's L and M).
//!
//! A binary heap ordered by deadline, with lazy deletion: a transaction keeps the deadline
//! it expects in each of its three [`Slot`]s, and an entry popped from the heap only fires
//! when its transaction still exists and still expects exactly that deadline in that slot.
//! Cancelling or re-arming a timer is therefore O(1) (overwrite the slot) and firing is
//! O(log n); nothing ever scans all transactions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Which transaction a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum TxnRef {
    Server(u64),
    Client(u64),
}

/// The three timers a transaction can have running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Slot {
    /// A (client INVITE), E (client non-INVITE), G (server INVITE).
    Retransmit,
    /// B (client INVITE, Calling), F (client non-INVITE), H (server INVITE), and the
    /// 64*T1 wait for a final response after a CANCEL (RFC 3261 section 9.1).
    Timeout,
    /// D, K (client), I, J (server), and RFC 6026's M (client) and L (server): how long a
    /// finished transaction stays to absorb retransmissions.
    Linger,
}

/// The deadlines a transaction currently expects, one per [`Slot`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Slots {
    retransmit: Option<Instant>,
    timeout: Option<Instant>,
    linger: Option<Instant>,
}

impl Slots {
    pub(super) fn get(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Retransmit => self.retransmit,
            Slot::Timeout => self.timeout,
            Slot::Linger => self.linger,
        }
    }
    fn get_mut(&mut self, slot: Slot) -> &mut Option<Instant> {
        match slot {
            Slot::Retransmit => &mut self.retransmit,
            Slot::Timeout => &mut self.timeout,
            Slot::Linger => &mut self.linger,
        }
    }
    /// Stops a timer (its heap entry becomes stale).
    pub(super) fn clear(&mut self, slot: Slot) {
        *self.get_mut(slot) = None;
    }
}

#[derive(Debug, Default)]
pub(super) struct TimerQueue {
    /// (deadline, insertion number, owner, slot); the insertion number keeps timers with
    /// equal deadlines in the order they were armed.
    heap: BinaryHeap<Reverse<(Instant, u64, TxnRef, Slot)>>,
    seq: u64,
}

impl TimerQueue {
    /// Arms `slot` of a transaction at `at`: records it in `slots` and queues it.
    pub(super) fn arm(&mut self, slots: &mut Slots, txn: TxnRef, slot: Slot, at: Instant) {
        *slots.get_mut(slot) = Some(at);
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, txn, slot)));
    }

    /// The earliest queued entry, live or stale.
    pub(super) fn peek(&self) -> Option<(Instant, TxnRef, Slot)> {
        self.heap
            .peek()
            .map(|Reverse((at, _, txn, slot))| (*at, *txn, *slot))
    }

    /// Removes the earliest entry.
    pub(super) fn pop(&mut self) {
        self.heap.pop();
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TxnRef, Slot)> {
        match self.peek() {
            Some(e) if e.0 <= now => {
                self.heap.pop();
                Some(e)
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_in_deadline_then_arming_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let mut s = [Slots::default(), Slots::default(), Slots::default()];
        q.arm(
            &mut s[0],
            TxnRef::Client(0),
            Slot::Timeout,
            t0 + Duration::from_secs(2),
        );
        q.arm(
            &mut s[1],
            TxnRef::Server(1),
            Slot::Retransmit,
            t0 + Duration::from_secs(1),
        );
        q.arm(
            &mut s[2],
            TxnRef::Client(2),
            Slot::Linger,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop_due(t0), None);
        let first = q.pop_due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((first.1, first.2), (TxnRef::Server(1), Slot::Retransmit));
        let second = q.pop_due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((second.1, second.2), (TxnRef::Client(2), Slot::Linger));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(q.peek().unwrap().0, t0 + Duration::from_secs(2));
    }

    #[test]
    fn slots_remember_the_armed_deadline_until_cleared() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let mut s = Slots::default();
        q.arm(&mut s, TxnRef::Client(0), Slot::Retransmit, t0);
        assert_eq!(s.get(Slot::Retransmit), Some(t0));
        assert_eq!(s.get(Slot::Timeout), None);
        // Re-arming makes the first entry stale: the slot no longer expects it.
        q.arm(
            &mut s,
            TxnRef::Client(0),
            Slot::Retransmit,
            t0 + Duration::from_secs(1),
        );
        let (at, _, slot) = q.pop_due(t0).unwrap();
        assert_ne!(s.get(slot), Some(at));
        s.clear(Slot::Retransmit);
        assert_eq!(s.get(Slot::Retransmit), None);
    }
}
