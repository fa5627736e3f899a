//! The send sequencer: the only task that enqueues messages. It commits sends in durable batches
//! and then, in commit order, answers each sender and pushes each stored message to its
//! recipient's live connection.
//!
//! A batch is stored in **arrival order**, fan-outs included (a `SendMulti` becomes one entry per
//! recipient at its place in the batch), so the delivery ids of one sender's messages increase in
//! the order its frames were read: per-sender order holds however `Send` and `SendMulti` are
//! pipelined.
//!
//! What the sequencer holds is bounded before it gets here: each connection has at most
//! `max_inflight_sends` sends and `max_inflight_send_bytes` of bodies waiting (its reader stops
//! reading at the limit), and all connections together at most `send_memory` bytes. A batch is
//! therefore at most a few sends from each busy connection: one connection flooding sends
//! delays itself, and others by at most one batch.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sotto_protocol::IdentityKey;
use sotto_wire::{ErrorCode, ErrorContext, ErrorIn, MessageId, RelayFrame};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::budget::Charge;
use super::outbox::Pushed;
use super::{Shared, lock, now_ms};
use crate::metrics::Metrics;
use crate::store::{EnqueueOutcome, EnqueuePolicy, NewMessage, Store, StoredMessage};

/// Most sends committed in one durable batch.
const MAX_SEND_BATCH: usize = 2048;

/// The answer to one send, for the sender's writer. The permit is the sender's slot for one send
/// in flight: it is returned when the writer has taken the reply, so a connection's reply queue
/// never holds more than its in-flight limit.
pub(super) struct Reply {
    pub(super) frame: RelayFrame,
    pub(super) _slot: OwnedSemaphorePermit,
}

/// What a connection's reader hands to the sequencer.
#[allow(
    clippy::large_enum_variant,
    reason = "sends are nearly every message; flushes are rare"
)]
pub(super) enum HubMsg {
    /// A `Send` (one recipient) or `SendMulti` (a fan-out sharing one body).
    Send(SendRequest),
    /// Answered once everything queued before it is committed (used at shutdown).
    Flush(oneshot::Sender<()>),
}

/// One send frame, admitted by its connection's limits.
pub(super) struct SendRequest {
    pub(super) sender: IdentityKey,
    pub(super) recipients: Vec<IdentityKey>,
    pub(super) message_id: MessageId,
    pub(super) body: Bytes,
    pub(super) reply: mpsc::Sender<Reply>,
    /// The sender's in-flight slot, returned with the reply.
    pub(super) slot: OwnedSemaphorePermit,
    /// The body's share of the connection's and the relay's in-flight bytes, returned at commit.
    pub(super) bytes: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Commits sends in batches until every connection (and the relay) has dropped its sender.
pub(super) async fn run<S: Store>(shared: Arc<Shared<S>>, mut rx: mpsc::Receiver<HubMsg>) {
    let mut inbox = Vec::with_capacity(256);
    while rx.recv_many(&mut inbox, MAX_SEND_BATCH).await > 0 {
        let mut messages = Vec::with_capacity(inbox.len());
        let mut requests = Vec::with_capacity(inbox.len());
        let mut flushes = Vec::new();
        for msg in inbox.drain(..) {
            match msg {
                HubMsg::Send(mut r) => {
                    let recipients = std::mem::take(&mut r.recipients);
                    messages.extend(recipients.into_iter().map(|recipient| NewMessage {
                        recipient,
                        sender: r.sender,
                        message_id: r.message_id,
                        body: r.body.clone(),
                    }));
                    requests.push((r, messages.len()));
                }
                HubMsg::Flush(done) => flushes.push(done),
            }
        }
        if !messages.is_empty() {
            commit(&shared, messages, requests).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Stores one batch, then answers and pushes in commit order. `requests` pairs each send with
/// the end of its entries in `messages`.
async fn commit<S: Store>(
    shared: &Arc<Shared<S>>,
    messages: Vec<NewMessage>,
    requests: Vec<(SendRequest, usize)>,
) {
    let c = &shared.config;
    let policy = EnqueuePolicy {
        now_ms: now_ms(),
        ttl_ms: c.ttl.as_millis() as u64,
        max_messages: c.mailbox_max_messages,
        max_bytes: c.mailbox_max_bytes,
    };
    let n = messages.len();
    let started = Instant::now();
    let result = shared.store.enqueue(messages, policy).await;
    let m = &shared.metrics;
    m.store_latency.observe(started.elapsed().as_secs_f64());
    m.store_batch_size.observe(n as f64);
    m.send_queue_depth.dec_by(requests.len() as i64);
    let mut outcomes = match result {
        Ok(outcomes) => Some(outcomes.into_iter()),
        Err(e) => {
            tracing::error!(error = %e, messages = n, "durable enqueue failed");
            None
        }
    };
    let mut start = 0;
    for (request, end) in requests {
        let SendRequest {
            message_id,
            body,
            reply,
            slot,
            bytes,
            ..
        } = request;
        // Committed (or failed): the body no longer counts as in flight.
        drop(bytes);
        let frame = match outcomes.as_mut() {
            None => rejection(m, ErrorCode::Internal, message_id),
            Some(outcomes) => {
                let mine = outcomes.by_ref().take(end - start);
                // A fan-out is accepted if every recipient's entry is stored, else it reports
                // the first failure (the other entries are stored all the same).
                match push_all(shared, mine, &body) {
                    None => RelayFrame::Accepted(message_id),
                    Some(code) => rejection(m, code, message_id),
                }
            }
        };
        start = end;
        // Cannot be full: the reply queue holds one slot per send in flight.
        let _ = reply.try_send(Reply { frame, _slot: slot });
    }
}

/// Pushes the stored entries of one send to their recipients; returns the first failure.
fn push_all<S: Store>(
    shared: &Shared<S>,
    outcomes: impl Iterator<Item = EnqueueOutcome>,
    body: &Bytes,
) -> Option<ErrorCode> {
    let m = &shared.metrics;
    let mut failure = None;
    // One charge for the body, however many recipients' queues share it.
    let mut charge: Option<Option<Arc<Charge>>> = None;
    for outcome in outcomes {
        match outcome {
            EnqueueOutcome::Stored(stored) => {
                m.messages_accepted.inc();
                push_live(shared, stored, || {
                    charge
                        .get_or_insert_with(|| {
                            shared.delivery_memory.try_charge(body.len()).map(Arc::new)
                        })
                        .clone()
                });
            }
            EnqueueOutcome::QuotaFull => {
                failure.get_or_insert(ErrorCode::QuotaFull);
            }
            EnqueueOutcome::UnknownRecipient => {
                failure.get_or_insert(ErrorCode::UnknownRecipient);
            }
        }
    }
    failure
}

/// Queues a stored message on its recipient's live connection, if any. When the connection's
/// queue is over its byte bound or the relay's delivery memory is spent, nothing is queued: the
/// connection is marked lagging and reads the message back from the store when it can.
fn push_live<S>(
    shared: &Shared<S>,
    message: StoredMessage,
    charge: impl FnOnce() -> Option<Arc<Charge>>,
) {
    let live = lock(&shared.live);
    let Some(handle) = live.get(&message.recipient) else {
        return;
    };
    if handle
        .outbox
        .push(message, charge, shared.config.delivery_queue_bytes)
        == Pushed::Overflow
    {
        shared.metrics.delivery_queue_overflows.inc();
    }
}

pub(super) fn rejection(m: &Metrics, code: ErrorCode, message_id: MessageId) -> RelayFrame {
    m.reject(code);
    RelayFrame::Error(ErrorIn {
        code,
        context: ErrorContext::Message(message_id),
    })
}
