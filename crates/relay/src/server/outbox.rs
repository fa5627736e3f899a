//! A live connection's delivery queue: what the sequencer pushes for it, bounded in bytes.
//!
//! The sequencer never waits on a connection. If the queue is over its byte bound, or the relay's
//! delivery memory is spent, the push is dropped and the queue is marked **lagging**: its writer
//! then re-reads the mailbox from the store (where every pushed message already is, committed)
//! when it has room. So a slow or stalled reader costs at most its bound, never the sender a
//! wait, and never a lost message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sotto_wire::PrekeyCounts;
use tokio::sync::Notify;

use super::budget::Charge;
use super::lock;
use crate::store::StoredMessage;

/// A pushed delivery and its share of the relay's delivery memory (one charge per body, shared
/// by every recipient's entry of a fan-out).
pub(super) struct Queued {
    pub(super) message: StoredMessage,
    pub(super) _charge: Arc<Charge>,
}

/// What a push did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pushed {
    /// Queued for the writer.
    Queued,
    /// Not queued; the queue has just become lagging.
    Overflow,
    /// Not queued; the queue was already lagging.
    Lagging,
}

/// What the writer takes next.
#[allow(
    clippy::large_enum_variant,
    reason = "returned by value and matched at once; nearly every take is an item"
)]
pub(super) enum Taken {
    /// The next delivery in commit order.
    Item(Queued),
    /// Pushes were dropped: re-read the store (call [`Outbox::restart`] first).
    Lagging,
    /// Nothing queued.
    Empty,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    bytes: usize,
    lagging: bool,
    low: Option<PrekeyCounts>,
}

/// One connection's queue, shared by the sequencer (producer) and its writer (consumer).
#[derive(Default)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Outbox {
    /// Queues `message` unless the queue is lagging or would exceed `max_bytes` (one message is
    /// always allowed), or `charge` cannot reserve its body in the relay's delivery memory.
    pub(super) fn push(
        &self,
        message: StoredMessage,
        charge: impl FnOnce() -> Option<Arc<Charge>>,
        max_bytes: usize,
    ) -> Pushed {
        let mut q = lock(&self.queue);
        if q.lagging {
            return Pushed::Lagging;
        }
        let len = message.body.len();
        let fits = q.items.is_empty() || q.bytes.saturating_add(len) <= max_bytes;
        let charge = if fits { charge() } else { None };
        let Some(charge) = charge else {
            q.lagging = true;
            drop(q);
            self.wake.notify_one();
            return Pushed::Overflow;
        };
        q.bytes += len;
        q.items.push_back(Queued {
            message,
            _charge: charge,
        });
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Another relay process stored messages for this connection: re-read the store.
    pub(super) fn lag(&self) {
        let mut q = lock(&self.queue);
        if !q.lagging {
            q.lagging = true;
            drop(q);
            self.wake.notify_one();
        }
    }

    /// Records a `PrekeysLow` notice (the latest counts replace an unsent one).
    pub(super) fn notice_low(&self, counts: PrekeyCounts) {
        lock(&self.queue).low = Some(counts);
        self.wake.notify_one();
    }

    /// The next delivery, or that the writer must re-read the store.
    pub(super) fn take(&self) -> Taken {
        let mut q = lock(&self.queue);
        if q.lagging {
            return Taken::Lagging;
        }
        match q.items.pop_front() {
            Some(item) => {
                q.bytes -= item.message.body.len();
                Taken::Item(item)
            }
            None => Taken::Empty,
        }
    }

    /// Starts a pass over the store: clears `lagging` and drops what is queued (the pass reads
    /// it back). Pushes from now on are queued again; those the pass also reads are skipped by
    /// delivery id.
    pub(super) fn restart(&self) {
        let mut q = lock(&self.queue);
        q.lagging = false;
        q.items.clear();
        q.bytes = 0;
    }

    /// The pending `PrekeysLow` notice, if any.
    pub(super) fn take_low(&self) -> Option<PrekeyCounts> {
        lock(&self.queue).low.take()
    }

    /// Resolves after the next push or notice (or at once if one came since the last call).
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }
}
