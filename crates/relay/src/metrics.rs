//! Prometheus metrics, served at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (an [`sotto_wire::ErrorCode`] label).
    pub reason: &'static str,
}

/// A `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabel {
    /// `in` (client to relay) or `out`.
    pub direction: &'static str,
}

/// All relay metrics.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted (TCP).
    pub connections_total: Counter,
    /// Open WebSocket connections not yet authenticated.
    pub connections_unauthenticated: Gauge,
    /// Open authenticated connections.
    pub connections_authenticated: Gauge,
    /// Frames by direction.
    pub frames: Family<DirLabel, Counter>,
    /// Frame bytes by direction.
    pub bytes: Family<DirLabel, Counter<u64, AtomicU64>>,
    /// `frames{direction="in"}`, resolved once.
    pub frames_in: Counter,
    /// `frames{direction="out"}`, resolved once.
    pub frames_out: Counter,
    /// `frame_bytes{direction="in"}`, resolved once.
    pub bytes_in: Counter<u64, AtomicU64>,
    /// `frame_bytes{direction="out"}`, resolved once.
    pub bytes_out: Counter<u64, AtomicU64>,
    /// Rejections by reason (each one also sent to the client as an error frame).
    pub rejections: Family<ReasonLabel, Counter>,
    /// Messages durably accepted.
    pub messages_accepted: Counter,
    /// Messages sent to recipients (live or from the backlog; redeliveries count again).
    pub messages_delivered: Counter,
    /// Messages deleted by acknowledgement.
    pub messages_acked: Counter,
    /// Messages deleted because their TTL passed.
    pub messages_expired: Counter,
    /// Live pushes dropped because a connection's delivery queue was full (re-read from store).
    pub delivery_queue_overflows: Counter,
    /// Sends waiting for the next durable batch.
    pub send_queue_depth: Gauge,
    /// Connections closed because their socket accepted no bytes within the write deadline.
    pub write_timeouts: Counter,
    /// Acknowledged ids that named no delivery outstanding on their connection (ignored).
    pub ack_ids_ignored: Counter,
    /// Body bytes held for delivery (the relay-wide delivery memory in use).
    pub delivery_memory_bytes: Gauge,
    /// Body bytes of sends waiting for the store.
    pub send_memory_bytes: Gauge,
    /// Messages per durable batch.
    pub store_batch_size: Histogram,
    /// Latency of store operations, in seconds.
    pub store_latency: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sotto_relay");
        let frames: Family<DirLabel, Counter> = Family::default();
        let bytes: Family<DirLabel, Counter<u64, AtomicU64>> = Family::default();
        let frames_in = frames.get_or_create(&DirLabel { direction: "in" }).clone();
        let frames_out = frames.get_or_create(&DirLabel { direction: "out" }).clone();
        let bytes_in = bytes.get_or_create(&DirLabel { direction: "in" }).clone();
        let bytes_out = bytes.get_or_create(&DirLabel { direction: "out" }).clone();
        let m = Self {
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            frames,
            bytes,
            connections_total: Counter::default(),
            connections_unauthenticated: Gauge::default(),
            connections_authenticated: Gauge::default(),
            rejections: Family::default(),
            messages_accepted: Counter::default(),
            messages_delivered: Counter::default(),
            messages_acked: Counter::default(),
            messages_expired: Counter::default(),
            delivery_queue_overflows: Counter::default(),
            send_queue_depth: Gauge::default(),
            write_timeouts: Counter::default(),
            ack_ids_ignored: Counter::default(),
            delivery_memory_bytes: Gauge::default(),
            send_memory_bytes: Gauge::default(),
            store_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            store_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "TCP connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_unauthenticated",
            "Open connections not yet authenticated",
            m.connections_unauthenticated.clone(),
        );
        registry.register(
            "connections_authenticated",
            "Open authenticated connections",
            m.connections_authenticated.clone(),
        );
        registry.register("frames", "WebSocket frames by direction", m.frames.clone());
        registry.register(
            "frame_bytes",
            "WebSocket frame bytes by direction",
            m.bytes.clone(),
        );
        registry.register(
            "rejections",
            "Rejected requests by reason",
            m.rejections.clone(),
        );
        registry.register(
            "messages_accepted",
            "Messages durably accepted",
            m.messages_accepted.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages sent to recipients",
            m.messages_delivered.clone(),
        );
        registry.register(
            "messages_acked",
            "Messages deleted on acknowledgement",
            m.messages_acked.clone(),
        );
        registry.register(
            "messages_expired",
            "Messages deleted after their TTL",
            m.messages_expired.clone(),
        );
        registry.register(
            "delivery_queue_overflows",
            "Live pushes dropped on a full per-connection queue",
            m.delivery_queue_overflows.clone(),
        );
        registry.register(
            "send_queue_depth",
            "Sends waiting for the next durable batch",
            m.send_queue_depth.clone(),
        );
        registry.register(
            "write_timeouts",
            "Connections closed after their socket accepted no bytes within the write deadline",
            m.write_timeouts.clone(),
        );
        registry.register(
            "ack_ids_ignored",
            "Acknowledged ids that named no delivery outstanding on their connection",
            m.ack_ids_ignored.clone(),
        );
        registry.register(
            "delivery_memory_bytes",
            "Body bytes held for delivery (queued pushes, store pages, frames being written)",
            m.delivery_memory_bytes.clone(),
        );
        registry.register(
            "send_memory_bytes",
            "Body bytes of sends waiting for the store",
            m.send_memory_bytes.clone(),
        );
        registry.register(
            "store_batch_messages",
            "Messages per durable batch",
            m.store_batch_size.clone(),
        );
        registry.register(
            "store_latency_seconds",
            "Store operation latency",
            m.store_latency.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one rejection.
    pub fn reject(&self, code: sotto_wire::ErrorCode) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: code.label(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
