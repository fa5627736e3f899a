//! A relay-wide budget of bytes: memory that deliveries waiting to be written may hold.
//!
//! Every body the relay holds for a connection that has not yet taken it (a pushed delivery, a
//! page read back from the store, a frame handed to the WebSocket layer but not yet accepted by
//! the socket) is charged here first; when a charge cannot be made, the relay does not queue:
//! pushes fall back to the store and writers wait. So the memory all connections together can pin
//! is bounded, whatever they do, and a charge is returned the moment its bytes are gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes that may be held at once.
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Woken (all waiters) whenever a charge is returned.
    freed: Notify,
}

/// Bytes held against a [`Budget`], returned when dropped.
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Charges `bytes` if they fit, else `None`. A charge of more than the whole limit never fits.
    pub(crate) fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|n| *n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Charge {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Resolves when some charge is returned after this call (pair it with a short timer: a
    /// release between a failed [`Budget::try_charge`] and this call is not seen).
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_are_returned_on_drop() {
        let b = Budget::new(100);
        let a = b.try_charge(60);
        assert!(a.is_some());
        assert!(b.try_charge(41).is_none());
        let c = b.try_charge(40);
        assert!(c.is_some());
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 40);
        assert!(b.try_charge(usize::MAX).is_none());
        drop(c);
        assert_eq!(b.used(), 0);
    }
}
