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
mod link;
mod payload;
pub mod rng;
pub mod seal;
mod store;
pub mod text;
mod upkeep;

pub use client::group::{GroupInfo, GroupInvite, GroupMember, GroupMessage};
pub use client::{
    AddOutcome, Client, Contact, DeliveryState, Direction, Event, Message, RegisterOptions,
    SIGNED_PREKEY_ROTATION, default_profile_dir,
};
pub use invite::{Invite, InviteError};
pub use link::RelayPins;
pub use seal::KdfParams;
pub use store::DB_FILE;

pub use sotto_transport::TrustRoots;
pub use sotto_wire::ErrorCode;
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
    /// The relay refused a request with this code (the connection stays open, except for the
    /// codes that end it, such as `invite_required`).
    #[error("relay rejected the request: {}", describe_code(*.0))]
    Rejected(ErrorCode),
    /// The relay presents another id or TLS key than the one pinned when this profile first
    /// connected to it: another relay, or someone in between. Nothing was sent to it.
    #[error(
        "the relay's {what} changed since this profile first connected (pinned {pinned}, presented {presented}): it may be another relay or someone in between; if its operator confirms the change, accept it with `sotto relay-trust`"
    )]
    RelayChanged {
        /// `"id"` or `"TLS key"`.
        what: &'static str,
        /// The pinned value (hex prefix).
        pinned: String,
        /// The presented value (hex prefix).
        presented: String,
    },
    /// TLS with the relay failed (an untrusted or mismatched certificate, a bad CA file).
    #[error("{0}")]
    Tls(String),
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

    /// Whether waiting and trying again can help: a lost connection, or a relay refusal that is
    /// transient (rate limits, full quotas or store, overload). A changed relay key, a wrong
    /// passphrase or a refusal for good is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Rejected(code) => code.is_transient(),
            _ => false,
        }
    }
}

/// A relay error code as a user reads it.
fn describe_code(code: ErrorCode) -> String {
    match code {
        ErrorCode::InviteRequired => {
            "invite_required (this relay is invite-only: register with --invite TOKEN from its operator)".into()
        }
        other => other.to_string(),
    }
}
