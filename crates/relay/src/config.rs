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
    /// Body bytes of one connection's sends waiting for the store before the relay stops reading
    /// from it (at least one maximal body).
    pub max_inflight_send_bytes: usize,
    /// Body bytes of all connections' sends waiting for the store before readers wait.
    pub send_memory: usize,
    /// Body bytes queued for one connection before the relay stops queuing and re-reads the
    /// store once the connection catches up (one message is always queued).
    pub delivery_queue_bytes: usize,
    /// Body bytes all connections together may hold for delivery (queued pushes, pages read
    /// back from the store, frames being written); over it pushes fall back to the store and
    /// writers wait.
    pub delivery_memory: usize,
    /// Deliveries a connection may have unacknowledged before the relay waits for an `Ack`.
    pub delivery_window: usize,
    /// Body bytes a connection may have unacknowledged before the relay waits for an `Ack`
    /// (one delivery is always allowed).
    pub delivery_window_bytes: usize,
    /// A connection whose socket accepts no bytes for this long is closed.
    pub write_timeout: Duration,
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
            max_inflight_send_bytes: 512 * 1024,
            send_memory: 64 * 1024 * 1024,
            delivery_queue_bytes: 256 * 1024,
            delivery_memory: 32 * 1024 * 1024,
            delivery_window: 256,
            delivery_window_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            read_buffer_size: 4096,
            expiry_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Where a relay keeps its state, as given to `sotto relay --store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite:PATH`: one SQLite file, for a single relay process.
    Sqlite(std::path::PathBuf),
    /// `postgres://...` or `postgresql://...`: a PostgreSQL database that several relay processes
    /// may share. The URL is kept whole (it is passed to the driver).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    /// Shows the PostgreSQL URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Postgres(url) => write!(f, "{}", redact_url(url)),
        }
    }
}

/// The URL with any password between `user:` and `@` replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// A `--store` value that is neither `sqlite:PATH` nor a PostgreSQL URL.
#[derive(Debug, thiserror::Error)]
#[error("unknown store {0:?}: expected sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")]
pub struct BadStoreLocation(String);

impl std::str::FromStr for StoreLocation {
    type Err = BadStoreLocation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            return Ok(Self::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        Err(BadStoreLocation(redact_url(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse() {
        assert_eq!(
            "sqlite:/var/lib/sotto/relay.db"
                .parse::<StoreLocation>()
                .ok(),
            Some(StoreLocation::Sqlite("/var/lib/sotto/relay.db".into()))
        );
        assert_eq!(
            "postgresql://u@h/db".parse::<StoreLocation>().ok(),
            Some(StoreLocation::Postgres("postgresql://u@h/db".into()))
        );
        assert!("sqlite:".parse::<StoreLocation>().is_err());
        assert!("mysql://u@h/db".parse::<StoreLocation>().is_err());
        assert!("relay.db".parse::<StoreLocation>().is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://sotto:s3cret@db.example:5432/sotto?sslmode=disable";
        let shown = format!("{:?}", url.parse::<StoreLocation>().ok());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sotto:***@db.example:5432/sotto"), "{shown}");
        let err = "postgre://a:pw@h/db".parse::<StoreLocation>().err();
        assert!(!format!("{err:?}").contains("pw@"));
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
