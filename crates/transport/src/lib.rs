//! # sotto-transport
//!
//! The client side of the sotto relay protocol (`docs/PROTOCOL.md`, part II), split as rustls
//! splits TLS: a sans-IO state machine that does no I/O, and a thin tokio driver.
//!
//! ```text
//!                 ┌──────────────── RelayClient (driver.rs, tokio) ─────────────────┐
//!   TCP ─▶ TLS ───┤ key pinned? ─▶ WebSocket ─▶ bytes ─▶ RelayFrame::decode ─┐      │
//!   (tls.rs:      │                                                           ▼      │
//!    rustls,      │     ┌──────────── Session (session.rs, sans-IO) ─────────────┐  │
//!    roots)       │     │ AwaitChallenge ─(relay id pinned?)─▶ AwaitAuthOk ─▶ Live│  │
//!                 │     │ requests ⇄ replies (by message id, identity, order)     │  │
//!                 │     │ progress deadline · keepalive Ping                      │  │
//!                 │     └───────────────┬─────────────────────────▲───────────────┘  │
//!                 │          Events ◀───┘      frames to write ───┘  ◀── now         │
//!                 └──────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - [`session::Session`] takes decoded frames and the time, and gives frames to write and
//!   [`Event`]s: the handshake (refusing a relay whose id differs from the pinned one before
//!   anything is signed), request/reply correlation, `Drained`, deliveries, notices, and the
//!   deadlines. It is tested without sockets.
//! - [`RelayClient`] opens TCP, TLS ([`TrustRoots`]; the relay's key checked against its
//!   [`KeyPin`]) and the WebSocket, and drives the session: reads and writes progress together,
//!   and the connection (not a request) times out when nothing arrives for
//!   [`Timeouts::progress`] while something is outstanding.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sotto_transport::ClientError> {
//! use sotto_protocol::IdentityKeyPair;
//! use sotto_transport::{ConnectOptions, Event, RelayClient};
//! use sotto_wire::{MessageId, SendOut};
//!
//! let alice = IdentityKeyPair::from_seed(&[1; 32]);
//! let bob = IdentityKeyPair::from_seed(&[2; 32]);
//! // Request/response: simple, for tools and tests.
//! let mut a = RelayClient::connect("ws://127.0.0.1:7878/", &alice, None).await?;
//! a.send(bob.public(), MessageId([1; 16]), b"ciphertext".to_vec()).await?; // durable now
//! // Event-driven, with pins from the previous connection: handle whatever comes.
//! let opts = ConnectOptions { relay_id: Some(a.relay_id()), ..Default::default() };
//! let mut b = RelayClient::connect_with("ws://127.0.0.1:7878/", &bob, None, &opts).await?;
//! let sent = b.session_mut().send(SendOut {
//!     recipient: alice.public(),
//!     message_id: MessageId([2; 16]),
//!     body: b"reply".to_vec(),
//! })?;
//! loop {
//!     match b.next_event().await? {
//!         Event::Deliver(d) => b.session_mut().ack(vec![d.delivery_id])?, // after storing it
//!         Event::Reply { id, .. } if id == sent => break, // Accepted or Rejected
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// `ClientError::Rejected` carries the relay's `ErrorIn` whole (its context may be an identity key,
// a decompressed point of ~200 bytes), so callers match on it as they did: errors are the cold
// path, and boxing would only move the cost.
#![allow(clippy::result_large_err)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod driver;
pub mod error;
pub mod session;
pub mod tls;

pub use driver::{ClientSocket, ConnectOptions, RelayClient, socket_config};
pub use error::ClientError;
pub use session::{Event, Outcome, RequestId, Session, SessionError, Timeouts};
pub use tls::{KeyPin, TrustRoots};
