//! Relay limits and policies.

use std::time::Duration;

/// Everything the relay can be tuned with. [`RelayConfig::default`] is what `sotto relay` uses.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Require an operator-made invite token to register a new identity.
    pub invite_only: bool,
    /// How long an undelivered message is kept.
    pub ttl: Duration,
    /// Maximum undelivered messages per recipient.
    pub mailbox_max_messages: u64,
    /// Maximum undelivered body bytes per recipient.
    pub mailbox_max_bytes: u64,
    /// Maximum one-time prekeys of each kind stored per identity.
    pub max_one_time_prekeys: u32,
    /// A `PrekeysLow` notice is sent when fewer one-time X25519 or ML-KEM prekeys remain.
    pub prekeys_low_threshold: u32,
    /// Time allowed from TCP accept to a successful `Authenticate` (TLS, HTTP upgrade, challenge).
    pub handshake_timeout: Duration,
    /// An authenticated connection with no inbound frame for this long is closed.
    pub idle_timeout: Duration,
    /// Maximum connections per IP address that have not (yet) authenticated.
    pub max_unauthenticated_per_ip: u32,
    /// Maximum connections in total.
    pub max_connections: u32,
    /// Frames per second allowed per connection (token bucket refill rate).
    pub conn_frames_per_sec: u32,
    /// Token bucket size per connection.
    pub conn_frames_burst: u32,
    /// Sends per second allowed per identity, over all its connections.
    pub identity_sends_per_sec: u32,
    /// Token bucket size for sends per identity.
    pub identity_sends_burst: u32,
    /// Bundle fetches per second per identity (each consumes someone's one-time prekeys).
    pub identity_fetches_per_sec: u32,
    /// Token bucket size for bundle fetches per identity.
    pub identity_fetches_burst: u32,
    /// Sends a connection may have waiting for the store before the relay stops reading from it.
    pub max_inflight_sends: usize,
    /// Deliveries queued for a connection before the relay stops queuing and re-reads the store
    /// once the connection catches up.
    pub delivery_queue: usize,
    /// WebSocket read buffer per connection (tungstenite's default of 128 KiB costs about
    /// 140 KB per idle connection).
    pub read_buffer_size: usize,
    /// How often expired messages are deleted.
    pub expiry_interval: Duration,
    /// How long shutdown waits for connections to close.
    pub shutdown_grace: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            invite_only: false,
            ttl: Duration::from_secs(30 * 24 * 3600),
            mailbox_max_messages: 10_000,
            mailbox_max_bytes: 256 * 1024 * 1024,
            max_one_time_prekeys: 1000,
            prekeys_low_threshold: 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_unauthenticated_per_ip: 64,
            max_connections: 100_000,
            conn_frames_per_sec: 2_000,
            conn_frames_burst: 4_000,
            identity_sends_per_sec: 2_000,
            identity_sends_burst: 4_000,
            identity_fetches_per_sec: 20,
            identity_fetches_burst: 200,
            max_inflight_sends: 256,
            delivery_queue: 512,
            read_buffer_size: 4096,
            expiry_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
