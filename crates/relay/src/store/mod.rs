//! Durable storage behind one trait, so backends (embedded SQLite for one relay process,
//! PostgreSQL for several sharing one database) plug in without touching the protocol handling in
//! [`crate::server`].
//!
//! The relay relies on these guarantees from every backend:
//!
//! - [`Store::enqueue`] returns only once the whole batch is durable (committed), and assigns
//!   delivery ids that increase, per recipient, in commit order (and in batch order within one
//!   batch: a fan-out is a run of entries sharing one body).
//! - [`Store::take_bundle`] consumes a one-time prekey atomically: two concurrent calls never
//!   return the same one.
//! - Every operation that names an identity acts on that identity's rows only (the caller passes
//!   the *authenticated* identity for acks and uploads).

pub mod postgres;
pub mod sqlite;

use std::future::Future;

use bytes::Bytes;
use sotto_protocol::IdentityKey;
use sotto_wire::{BundleIn, MessageId, PrekeyCounts, RelayId, UploadPrekeysOut};
use thiserror::Error;

pub use postgres::{PgOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// A storage failure. Its `Display` never contains message bodies or keys.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// The stored data is inconsistent (e.g. an invalid stored key), or the database is not a
    /// sotto store.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The store was made by a newer sotto: its schema version is above the newest this build
    /// knows.
    #[error("store schema {found}, this relay supports 1-{supported}: upgrade sotto")]
    Schema {
        /// The store's schema version.
        found: i64,
        /// The newest version this build can use.
        supported: i64,
    },
}

/// A message to enqueue.
#[derive(Clone)]
pub struct NewMessage {
    /// The recipient whose mailbox receives it.
    pub recipient: IdentityKey,
    /// The authenticated sender.
    pub sender: IdentityKey,
    /// The sender's message id.
    pub message_id: MessageId,
    /// Opaque ciphertext. Shared, not copied, between the entries of one fan-out.
    pub body: Bytes,
}

/// A stored message, as delivered.
#[derive(Clone)]
pub struct StoredMessage {
    /// The relay-assigned delivery id.
    pub delivery_id: u64,
    /// The mailbox it is in.
    pub recipient: IdentityKey,
    /// The authenticated sender.
    pub sender: IdentityKey,
    /// The sender's message id.
    pub message_id: MessageId,
    /// When it was stored, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Opaque ciphertext (shared with the [`NewMessage`] it was stored from).
    pub body: Bytes,
}

/// Mailbox limits applied by [`Store::enqueue`].
#[derive(Clone, Copy, Debug)]
pub struct EnqueuePolicy {
    /// Current time, milliseconds since the Unix epoch (the message timestamp).
    pub now_ms: u64,
    /// Time to live, in milliseconds.
    pub ttl_ms: u64,
    /// Maximum number of undelivered messages per recipient.
    pub max_messages: u64,
    /// Maximum total body bytes of undelivered messages per recipient.
    pub max_bytes: u64,
}

/// The result of enqueuing one message.
#[derive(Clone)]
#[allow(clippy::large_enum_variant, reason = "nearly every outcome is Stored")]
pub enum EnqueueOutcome {
    /// Durably stored.
    Stored(StoredMessage),
    /// The recipient's mailbox is full.
    QuotaFull,
    /// The recipient is not registered.
    UnknownRecipient,
}

/// The result of presenting an identity at authentication.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Registration {
    /// The identity was already registered.
    Known,
    /// The identity was registered now.
    Registered,
    /// The relay is invite-only and no valid, unused invite was presented.
    InviteRequired,
}

/// The result of a prekey upload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UploadOutcome {
    /// Stored; the counts after the upload.
    Stored(PrekeyCounts),
    /// Storing would exceed the per-identity limit; nothing was stored.
    Limit,
}

/// What the other relay processes sharing a store did (see [`Store::subscribe`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RemoteEvent {
    /// Another process stored new messages for this recipient.
    NewMessages(IdentityKey),
    /// Events may have been missed (the subscription was just (re)established): every connected
    /// recipient should re-read its mailbox.
    Resync,
}

/// Durable relay state. All methods are safe to call concurrently.
pub trait Store: Send + Sync + 'static {
    /// The relay's stable id (created with the store).
    fn relay_id(&self) -> RelayId;

    /// Registers `identity` if new. On an invite-only relay a new identity needs an unused invite
    /// token, which this call consumes atomically.
    fn register(
        &self,
        identity: IdentityKey,
        invite: Option<Vec<u8>>,
        invite_only: bool,
        now_ms: u64,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;

    /// Stores a new invite token (the caller generates it), valid until `expires_ms`.
    fn create_invite(
        &self,
        token: Vec<u8>,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds or replaces `identity`'s own prekeys, keeping at most `max_one_time` of each kind.
    fn upload_prekeys(
        &self,
        identity: IdentityKey,
        upload: UploadPrekeysOut,
        max_one_time: u32,
    ) -> impl Future<Output = Result<UploadOutcome, StoreError>> + Send;

    /// Returns `identity`'s bundle, consuming one one-time X25519 and one one-time ML-KEM prekey
    /// if any are left, with the counts left afterwards. `None` if the identity has no complete
    /// bundle (signed prekey and ML-KEM prekey).
    fn take_bundle(
        &self,
        identity: IdentityKey,
    ) -> impl Future<Output = Result<Option<(BundleIn, PrekeyCounts)>, StoreError>> + Send;

    /// How many one-time prekeys of each kind `identity` has left.
    fn prekey_counts(
        &self,
        identity: IdentityKey,
    ) -> impl Future<Output = Result<PrekeyCounts, StoreError>> + Send;

    /// Durably stores a batch of messages (one transaction), in order, applying the policy.
    fn enqueue(
        &self,
        messages: Vec<NewMessage>,
        policy: EnqueuePolicy,
    ) -> impl Future<Output = Result<Vec<EnqueueOutcome>, StoreError>> + Send;

    /// Up to `limit` unexpired messages for `recipient` with a delivery id above `after`, in
    /// delivery-id order, stopping after the message that brings their body bytes to `max_bytes`
    /// or more (so a page holds at least one message, and at most `max_bytes` plus one body).
    fn pending(
        &self,
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<StoredMessage>, StoreError>> + Send;

    /// Deletes the listed messages from `recipient`'s mailbox (ids of other mailboxes are
    /// ignored). Returns how many were deleted.
    fn ack(
        &self,
        recipient: IdentityKey,
        delivery_ids: Vec<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes every message whose TTL has passed. Returns how many were deleted.
    fn expire(&self, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// For a store that several relay processes share: starts watching for messages the other
    /// processes store and returns those events; `None` (the default) for a store only this
    /// process writes. Call it once, from within a Tokio runtime.
    ///
    /// When this returns `Some`, the relay pushes a message it enqueued itself only if its
    /// delivery id follows the last one delivered on that connection, and otherwise re-reads the
    /// mailbox (another process may have committed the ids in between). Backends should therefore
    /// assign consecutive ids per recipient, so the common case needs no read.
    fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<RemoteEvent>> {
        None
    }
}
