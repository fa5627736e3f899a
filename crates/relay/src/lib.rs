//! The sotto relay: an untrusted WebSocket relay with authenticated identities, a prekey
//! directory and a durable store-and-forward mailbox.
//!
//! The relay only ever sees ciphertext and opaque prekey blobs. It is trusted for delivery, not
//! for content: what it accepts is durable before it says so, only the authenticated recipient can
//! read or delete a mailbox, and bad input or floods are rejected with a typed error frame and a
//! counter while everyone else keeps being served. Frames are defined in [`sotto_wire`]; the byte
//! layout is in `docs/PROTOCOL.md` (part II), the threat model in `docs/THREAT_MODEL.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sotto_relay::{Relay, RelayConfig, store::{SqliteStore, sqlite::Durability}};
//!
//! let store = SqliteStore::open("relay.db".as_ref(), Durability::Full)?;
//! let relay = Relay::new(store, RelayConfig::default());
//! let stop = relay.shutdown_token(); // cancel() for a graceful shutdown
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! relay.serve(listener, None).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod server;
pub mod store;

pub use config::{RelayConfig, StoreLocation};
pub use server::{Relay, TlsError, now_ms, tls_acceptor};
