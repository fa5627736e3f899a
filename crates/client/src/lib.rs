//! # sotto-client
//!
//! The sotto client as a library: an encrypted profile, contacts and invites, verification with
//! safety numbers, pairwise sessions and reliable delivery through an untrusted relay. The `sotto`
//! CLI is a thin layer over it; the TUI and the demo use it the same way.
//!
//! ```text
//!   compose ─▶ outbox (sealed, tx) ─▶ encrypt + persist session & ciphertext (one tx)
//!          ─▶ relay Send ─▶ Accepted ─▶ state "accepted"       ……  receipt ─▶ "delivered"
//!   relay Deliver ─▶ duplicate check ─▶ Session::respond/decrypt ─▶ history + receipt (one tx)
//!                 ─▶ Ack (after the commit: at-least-once, duplicates dropped by id)
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), sotto_client::Error> {
//! use sotto_client::{Client, KdfParams};
//! let dir = std::path::Path::new("/tmp/alice");
//! let mut alice = Client::init(dir, b"passphrase", KdfParams::DEFAULT)?;
//! alice.register("ws://127.0.0.1:7878/").await?;
//! println!("{}", alice.invite()?);
//! // … after `alice.add_contact("bob", &bobs_invite)?`:
//! alice.compose("bob", "hi Bob", false)?;
//! let events = alice.sync().await?; // sends the outbox, receives the backlog
//! # Ok(()) }
//! ```
//!
//! Events: [`Client::next_events`] waits for one relay frame and returns what it caused; its
//! only await point is the socket read, so it is safe to use in a `tokio::select!` loop.
//!
//! ## Schedules
//! - One-time prekeys: 100 X25519 and 100 ML-KEM are uploaded at registration; whenever the
//!   relay reports fewer than its threshold (or at login), the client tops both up to 100.
//! - The signed prekey and the last-resort ML-KEM prekey rotate at the first connection after
//!   they are 7 days old ([`SIGNED_PREKEY_ROTATION`]); the previous three signed prekeys stay
//!   valid so initial messages already in flight still decrypt.
//! - Reconnection: exponential backoff from 0.5 s doubling to 60 s, with ±50% random jitter.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod client;
pub mod forensics;
mod history;
pub mod invite;
mod payload;
pub mod rng;
pub mod seal;
mod store;

pub use client::group::{GroupInfo, GroupMember, GroupMessage};
pub use client::{
    AddOutcome, Client, Contact, DeliveryState, Direction, Event, Message, SIGNED_PREKEY_ROTATION,
    default_profile_dir,
};
pub use invite::{Invite, InviteError};
pub use seal::KdfParams;
pub use store::DB_FILE;

use thiserror::Error;

/// Why a client operation failed. `Display` never contains message text or key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The passphrase does not open this profile.
    #[error("wrong passphrase for this profile")]
    WrongPassphrase,
    /// There is no profile in the directory.
    #[error("no profile in {0} (run `sotto init` first)")]
    NoProfile(String),
    /// `init` found an existing profile.
    #[error("a profile already exists there")]
    ProfileExists,
    /// The profile is damaged or from an unknown version.
    #[error("profile is corrupt: {0}")]
    Corrupt(&'static str),
    /// SQLite or file-system failure.
    #[error("profile storage error: {0}")]
    Storage(String),
    /// The operating system's random generator failed.
    #[error("no OS randomness")]
    Rng,
    /// No relay configured yet.
    #[error("not registered with a relay (run `sotto register --relay URL`)")]
    NotRegistered,
    /// The relay cannot be reached or the connection dropped.
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// The relay rejected a request.
    #[error("relay rejected the request: {0}")]
    Rejected(String),
    /// No contact has that name.
    #[error("unknown contact {0:?}")]
    UnknownContact(String),
    /// The name is taken, or the identity is already a contact under another name.
    #[error("{0}")]
    ContactConflict(String),
    /// A bad invite string.
    #[error("invalid invite: {0}")]
    Invite(#[from] InviteError),
    /// The contact's key changed after it was verified: sending is refused.
    #[error(
        "{0}'s identity key changed after you verified it; compare safety numbers with `sotto verify {0}` (or pass --accept-new-key)"
    )]
    KeyChangeBlocked(String),
    /// A typed safety number does not match.
    #[error("safety number does not match: do NOT mark this contact verified")]
    SafetyNumberMismatch,
    /// The contact's prekey bundle is missing or invalid.
    #[error("cannot start a session: {0}")]
    Handshake(String),
    /// The message is empty or too long.
    #[error("message is empty or too long")]
    BadMessage,
    /// A group operation was refused (unknown group, not the owner, not a member, ...).
    #[error("{0}")]
    Group(String),
    /// Test hook: the process is to stop right after persisting, before sending.
    #[error("stopped after persisting (test hook)")]
    TestCrash,
}

impl Error {
    /// Whether the error is a lost or impossible connection (worth a retry with backoff).
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}
