//! The client-relay frames of sotto, version 1 (sans-IO).
//!
//! Every WebSocket binary message between a sotto client and a relay carries exactly one frame:
//!
//! ```text
//! frame = version:u8 (= 0x01) || type:u8 || body
//! ```
//!
//! The bodies are concatenations of fixed-size fields, big-endian integers and `u32`-length-prefixed
//! byte strings, written and read with [`sotto_protocol::codec`]. Decoding is total and bounded:
//! any input yields a frame or a [`DecodeError`], never a panic, and no length or count can make
//! the decoder allocate more than [`MAX_FRAME_LEN`] bytes. The byte layout is specified in
//! `docs/PROTOCOL.md` (part II).
//!
//! A session, in frames:
//!
//! ```text
//! client                                   relay
//!   |  <---------- Challenge {relay id, nonce}  |   fresh 32-byte nonce per connection
//!   |  Authenticate {identity, sig, invite?} -> |   sig over auth_message(relay id, nonce, identity)
//!   |  <----------------- AuthOk {prekey counts} |   then the stored backlog as Deliver frames,
//!   |  <--------------------- Deliver ... Drained |   then Drained
//!   |  UploadPrekeys / FetchBundle / Send ----->  |
//!   |  <------------ PrekeysStored / Bundle / Accepted (only once the message is durable)
//!   |  <------------------------------- Deliver  |   live, as soon as a message for us is stored
//!   |  Ack {delivery ids} -------------------->  |   the relay deletes only on Ack
//! ```
//!
//! ```
//! use sotto_protocol::IdentityKeyPair;
//! use sotto_wire::{ClientFrame, MessageId, RelayFrame, SendOut};
//!
//! let bob = IdentityKeyPair::from_seed(&[2; 32]).public();
//! let send = ClientFrame::Send(SendOut {
//!     recipient: bob,
//!     message_id: MessageId([7; 16]),
//!     body: b"opaque ciphertext".to_vec(),
//! });
//! let bytes = send.encode();
//! assert_eq!(ClientFrame::decode(&bytes)?, send);
//! assert!(RelayFrame::decode(&bytes).is_err(), "client frames are not relay frames");
//! # Ok::<(), sotto_wire::DecodeError>(())
//! ```
#![forbid(unsafe_code)]

use std::fmt;

use sotto_protocol::codec::{Reader, Writer};
use sotto_protocol::{IdentityKey, IdentityKeyPair};

pub use sotto_protocol::codec::DecodeError;

/// The frame format version this crate speaks.
pub const VERSION: u8 = 1;
/// Maximum size of one encoded frame (one WebSocket message), in bytes: 128 KiB.
pub const MAX_FRAME_LEN: usize = 128 * 1024;
/// Maximum size of an opaque message body (ciphertext), in bytes: 96 KiB.
pub const MAX_BODY_LEN: usize = 96 * 1024;
/// Maximum size of one opaque prekey blob, in bytes.
pub const MAX_PREKEY_BLOB_LEN: usize = 2048;
/// Maximum number of one-time prekeys of one kind in one upload frame (the whole frame must
/// also fit in [`MAX_FRAME_LEN`], so large ML-KEM batches are split over several uploads).
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;
/// Maximum number of delivery ids acknowledged in one frame.
pub const MAX_ACKS_PER_FRAME: usize = 1024;
/// Maximum length of an invite token.
pub const MAX_INVITE_LEN: usize = 64;
/// Maximum recipients of one `SendMulti` (a group of 256 members fans out to 255).
pub const MAX_MULTI_RECIPIENTS: usize = 255;
/// Domain-separation tag that starts every signed relay authentication message. Prekey
/// signatures sign bytes that start with `0x05` or `0x0A`, so the two can never collide.
pub const AUTH_TAG: &[u8; 19] = b"sotto-relay-auth-v1";

/// A client-chosen 16-byte message id, relayed unchanged so recipients can drop duplicates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The relay's stable 32-byte identifier, part of every signed authentication message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RelayId(pub [u8; 32]);

/// The bytes a client signs to authenticate:
/// `"sotto-relay-auth-v1" || relay_id (32) || nonce (32) || identity (32)`.
///
/// Binding the relay id and the per-connection nonce means a signature cannot be replayed on
/// another relay or another connection; binding the identity means it cannot be claimed for
/// another key.
pub fn auth_message(relay_id: &RelayId, nonce: &[u8; 32], identity: &IdentityKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(AUTH_TAG.len() + 96);
    m.extend_from_slice(AUTH_TAG);
    m.extend_from_slice(&relay_id.0);
    m.extend_from_slice(nonce);
    m.extend_from_slice(identity.as_bytes());
    m
}

/// An opaque prekey record `(id, blob)`. The relay never parses the blob.
#[derive(Clone, PartialEq, Eq)]
pub struct PrekeyRecord {
    /// The owner's prekey id.
    pub id: u32,
    /// The protocol crate's encoding of the prekey, at most [`MAX_PREKEY_BLOB_LEN`] bytes.
    pub blob: Vec<u8>,
}

impl fmt::Debug for PrekeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrekeyRecord {{ id: {}, blob: {} bytes }}",
            self.id,
            self.blob.len()
        )
    }
}

/// Why a request was rejected. Every rejection the relay makes carries one of these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame did not decode (garbage, truncated, trailing bytes, wrong version).
    Malformed,
    /// The frame or body exceeds a size limit.
    TooLarge,
    /// Authentication failed (bad signature, wrong identity) or the request needs authentication.
    Unauthorized,
    /// This relay is invite-only and the identity is new: an unused invite token is required.
    InviteRequired,
    /// A rate limit tripped; the request was dropped, retry later.
    RateLimited,
    /// The recipient's mailbox is full (message count or bytes).
    QuotaFull,
    /// The recipient identity is not registered on this relay.
    UnknownRecipient,
    /// The identity has not uploaded a complete prekey bundle.
    NoBundle,
    /// Too many prekeys stored for this identity.
    PrekeyLimit,
    /// The handshake or idle timeout expired.
    Timeout,
    /// The relay is overloaded or the connection's queue is full.
    Overloaded,
    /// The relay's store failed; nothing was accepted.
    Internal,
    /// Another connection authenticated as the same identity; this one is closed.
    Superseded,
    /// The relay is shutting down.
    ShuttingDown,
    /// A frame that is valid but not allowed in this state (e.g. a second Authenticate).
    ProtocolViolation,
    /// Too many unauthenticated connections from this address, or the relay's connection cap.
    TooManyConnections,
    /// The relay's store is at its size cap (or its disk is full): nothing was stored. Acks and
    /// deletes still work; retry later.
    StorageFull,
    /// The sender has used up its byte budget for storing messages on this relay (counted per
    /// recipient copy, over a sliding window); nothing was stored. Retry later.
    SenderQuotaFull,
    /// Too many new identities were registered from this address recently; the connection is
    /// closed. Retry later (or ask the operator for an invite on an invite-only relay).
    RegistrationLimited,
    /// A code this implementation does not know (from a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Malformed => 1,
            Self::TooLarge => 2,
            Self::Unauthorized => 3,
            Self::InviteRequired => 4,
            Self::RateLimited => 5,
            Self::QuotaFull => 6,
            Self::UnknownRecipient => 7,
            Self::NoBundle => 8,
            Self::PrekeyLimit => 9,
            Self::Timeout => 10,
            Self::Overloaded => 11,
            Self::Internal => 12,
            Self::Superseded => 13,
            Self::ShuttingDown => 14,
            Self::ProtocolViolation => 15,
            Self::TooManyConnections => 16,
            Self::StorageFull => 17,
            Self::SenderQuotaFull => 18,
            Self::RegistrationLimited => 19,
            Self::Unknown(v) => v,
        }
    }

    /// Parses a wire value; unknown values are kept as [`ErrorCode::Unknown`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::Malformed,
            2 => Self::TooLarge,
            3 => Self::Unauthorized,
            4 => Self::InviteRequired,
            5 => Self::RateLimited,
            6 => Self::QuotaFull,
            7 => Self::UnknownRecipient,
            8 => Self::NoBundle,
            9 => Self::PrekeyLimit,
            10 => Self::Timeout,
            11 => Self::Overloaded,
            12 => Self::Internal,
            13 => Self::Superseded,
            14 => Self::ShuttingDown,
            15 => Self::ProtocolViolation,
            16 => Self::TooManyConnections,
            17 => Self::StorageFull,
            18 => Self::SenderQuotaFull,
            19 => Self::RegistrationLimited,
            other => Self::Unknown(other),
        }
    }

    /// A short stable label, used as the Prometheus `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Unauthorized => "unauthorized",
            Self::InviteRequired => "invite_required",
            Self::RateLimited => "rate_limited",
            Self::QuotaFull => "quota_full",
            Self::UnknownRecipient => "unknown_recipient",
            Self::NoBundle => "no_bundle",
            Self::PrekeyLimit => "prekey_limit",
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
            Self::Superseded => "superseded",
            Self::ShuttingDown => "shutting_down",
            Self::ProtocolViolation => "protocol_violation",
            Self::TooManyConnections => "too_many_connections",
            Self::StorageFull => "storage_full",
            Self::SenderQuotaFull => "sender_quota_full",
            Self::RegistrationLimited => "registration_limited",
            Self::Unknown(_) => "unknown",
        }
    }

    /// Whether the relay closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::TooLarge
                | Self::Unauthorized
                | Self::InviteRequired
                | Self::Timeout
                | Self::Superseded
                | Self::ShuttingDown
                | Self::ProtocolViolation
                | Self::TooManyConnections
                | Self::RegistrationLimited
        )
    }

    /// Whether the same request may succeed later, unchanged: a client should retry it with
    /// backoff and never report it as a permanent failure. A code this implementation does not
    /// know ([`ErrorCode::Unknown`], from a newer relay) counts as transient.
    ///
    /// Permanent: [`Malformed`](Self::Malformed), [`TooLarge`](Self::TooLarge),
    /// [`Unauthorized`](Self::Unauthorized), [`InviteRequired`](Self::InviteRequired),
    /// [`UnknownRecipient`](Self::UnknownRecipient), [`NoBundle`](Self::NoBundle),
    /// [`PrekeyLimit`](Self::PrekeyLimit) (the relay holds enough prekeys: treat it as full) and
    /// [`ProtocolViolation`](Self::ProtocolViolation). Every other code is transient.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            Self::Malformed
                | Self::TooLarge
                | Self::Unauthorized
                | Self::InviteRequired
                | Self::UnknownRecipient
                | Self::NoBundle
                | Self::PrekeyLimit
                | Self::ProtocolViolation
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What an error frame refers to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorContext {
    /// The connection as a whole.
    None,
    /// The send with this message id.
    Message(MessageId),
    /// A request about this identity (e.g. a bundle fetch).
    Identity(IdentityKey),
}

/// `Authenticate`: proves possession of the identity key for this connection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuthenticateOut {
    /// The identity being authenticated.
    pub identity: IdentityKey,
    /// Ed25519 signature over [`auth_message`].
    pub signature: [u8; 64],
    /// An invite token, needed only to register a new identity on an invite-only relay.
    pub invite: Option<Vec<u8>>,
}

impl AuthenticateOut {
    /// Answers a challenge by signing it with `keypair`.
    pub fn sign(
        keypair: &IdentityKeyPair,
        relay_id: &RelayId,
        nonce: &[u8; 32],
        invite: Option<Vec<u8>>,
    ) -> Self {
        let identity = keypair.public();
        let signature = keypair.sign(&auth_message(relay_id, nonce, &identity));
        Self {
            identity,
            signature,
            invite,
        }
    }

    /// Checks the signature against the challenge this connection was given.
    pub fn verify(&self, relay_id: &RelayId, nonce: &[u8; 32]) -> bool {
        self.identity
            .verify(
                &auth_message(relay_id, nonce, &self.identity),
                &self.signature,
            )
            .is_ok()
    }
}

/// `UploadPrekeys`: adds or replaces the sender's own prekeys (never anybody else's).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct UploadPrekeysOut {
    /// Replaces the signed X25519 prekey, if present.
    pub signed_prekey: Option<PrekeyRecord>,
    /// Replaces the last-resort ML-KEM prekey, if present.
    pub last_resort_kem: Option<PrekeyRecord>,
    /// One-time X25519 prekeys to add (an id already stored is replaced).
    pub one_time_x25519: Vec<PrekeyRecord>,
    /// One-time ML-KEM prekeys to add (an id already stored is replaced).
    pub one_time_kem: Vec<PrekeyRecord>,
}

/// `Send`: one opaque message for one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct SendOut {
    /// The recipient identity.
    pub recipient: IdentityKey,
    /// The sender's message id (for duplicate detection by the recipient).
    pub message_id: MessageId,
    /// Opaque ciphertext, at most [`MAX_BODY_LEN`] bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for SendOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOut")
            .field("recipient", &self.recipient)
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// `SendMulti`: one opaque message (a group message, encrypted once) for several recipients.
/// The relay stores it as one mailbox entry per recipient, in one durable batch.
#[derive(Clone, PartialEq, Eq)]
pub struct SendMultiOut {
    /// The recipients, 1 to [`MAX_MULTI_RECIPIENTS`], no duplicates.
    pub recipients: Vec<IdentityKey>,
    /// The sender's message id (the same for every recipient).
    pub message_id: MessageId,
    /// Opaque ciphertext, at most [`MAX_BODY_LEN`] bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for SendMultiOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendMultiOut")
            .field("recipients", &self.recipients.len())
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A frame from a client to the relay.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ClientFrame {
    /// `0x41`: answer to the relay's challenge.
    Authenticate(AuthenticateOut),
    /// `0x42`: prekey upload.
    UploadPrekeys(UploadPrekeysOut),
    /// `0x43`: fetch (and consume one-time prekeys of) another identity's bundle.
    FetchBundle(IdentityKey),
    /// `0x44`: send one message.
    Send(SendOut),
    /// `0x45`: acknowledge deliveries; the relay deletes them.
    Ack(Vec<u64>),
    /// `0x46`: liveness probe; the relay answers `Pong` with the same value.
    Ping(u64),
    /// `0x47`: send one message to several recipients (group fan-out).
    SendMulti(SendMultiOut),
}

/// One delivered message.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliverIn {
    /// The relay's delivery id; acknowledge it with [`ClientFrame::Ack`].
    pub delivery_id: u64,
    /// The authenticated sender identity.
    pub sender: IdentityKey,
    /// The sender's message id.
    pub message_id: MessageId,
    /// When the relay stored the message, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Opaque ciphertext.
    pub body: Vec<u8>,
}

impl fmt::Debug for DeliverIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliverIn")
            .field("delivery_id", &self.delivery_id)
            .field("sender", &self.sender)
            .field("message_id", &self.message_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Another identity's prekey bundle, returned unparsed; the client verifies it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BundleIn {
    /// Whose bundle this is.
    pub identity: IdentityKey,
    /// The signed X25519 prekey.
    pub signed_prekey: PrekeyRecord,
    /// One one-time X25519 prekey, consumed by this fetch; `None` when exhausted.
    pub one_time_x25519: Option<PrekeyRecord>,
    /// An ML-KEM prekey: a one-time one (consumed by this fetch) or the last-resort one.
    pub kem: PrekeyRecord,
    /// Whether `kem` is the last-resort key (all one-time ML-KEM prekeys were used up).
    pub kem_is_last_resort: bool,
}

/// How many one-time prekeys the relay still holds for an identity.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PrekeyCounts {
    /// One-time X25519 prekeys left.
    pub x25519: u32,
    /// One-time ML-KEM prekeys left.
    pub kem: u32,
}

/// The relay's first frame on every connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChallengeIn {
    /// The relay's stable id.
    pub relay_id: RelayId,
    /// A fresh random nonce for this connection.
    pub nonce: [u8; 32],
    /// The relay's maximum frame length.
    pub max_frame_len: u32,
    /// The relay's maximum message body length.
    pub max_body_len: u32,
}

/// An error frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorIn {
    /// What went wrong.
    pub code: ErrorCode,
    /// What it refers to.
    pub context: ErrorContext,
}

/// A frame from the relay to a client.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RelayFrame {
    /// `0x01`: the authentication challenge.
    Challenge(ChallengeIn),
    /// `0x02`: authentication succeeded; the counts of stored one-time prekeys.
    AuthOk(PrekeyCounts),
    /// `0x03`: the message with this id is durably stored.
    Accepted(MessageId),
    /// `0x04`: a message for this client.
    Deliver(DeliverIn),
    /// `0x05`: the requested bundle.
    Bundle(BundleIn),
    /// `0x06`: unsolicited notice that one-time prekeys are running low.
    PrekeysLow(PrekeyCounts),
    /// `0x07`: a prekey upload was stored; counts after the upload.
    PrekeysStored(PrekeyCounts),
    /// `0x08`: a request was rejected (fatal codes are followed by a close).
    Error(ErrorIn),
    /// `0x09`: answer to `Ping`.
    Pong(u64),
    /// `0x0A`: every message stored before authentication has been delivered.
    Drained,
}

// ---- encoding helpers ----------------------------------------------------------------------

fn put_record(w: &mut Vec<u8>, r: &PrekeyRecord) {
    w.put_u32(r.id);
    w.put_var_bytes(&r.blob);
}

fn put_opt_record(w: &mut Vec<u8>, r: Option<&PrekeyRecord>) {
    w.put_bool(r.is_some());
    if let Some(r) = r {
        put_record(w, r);
    }
}

fn put_records(w: &mut Vec<u8>, rs: &[PrekeyRecord]) {
    w.put_u32(u32::try_from(rs.len()).unwrap_or(u32::MAX));
    for r in rs {
        put_record(w, r);
    }
}

fn read_identity(r: &mut Reader<'_>) -> Result<IdentityKey, DecodeError> {
    IdentityKey::from_bytes(&r.array()?)
}

fn read_record(r: &mut Reader<'_>) -> Result<PrekeyRecord, DecodeError> {
    let id = r.u32()?;
    let blob = r.var_bytes(MAX_PREKEY_BLOB_LEN)?.to_vec();
    Ok(PrekeyRecord { id, blob })
}

fn read_opt_record(r: &mut Reader<'_>) -> Result<Option<PrekeyRecord>, DecodeError> {
    if r.bool()? {
        read_record(r).map(Some)
    } else {
        Ok(None)
    }
}

/// Smallest encoding of a record: id (4) and an empty blob's length (4).
const MIN_RECORD_LEN: usize = 8;

fn read_records(r: &mut Reader<'_>) -> Result<Vec<PrekeyRecord>, DecodeError> {
    let n = r.count(MAX_PREKEYS_PER_UPLOAD, MIN_RECORD_LEN)?;
    (0..n).map(|_| read_record(r)).collect()
}

fn put_counts(w: &mut Vec<u8>, c: PrekeyCounts) {
    w.put_u32(c.x25519);
    w.put_u32(c.kem);
}

fn read_counts(r: &mut Reader<'_>) -> Result<PrekeyCounts, DecodeError> {
    Ok(PrekeyCounts {
        x25519: r.u32()?,
        kem: r.u32()?,
    })
}

/// Checks the frame-level bounds and splits off the version and type bytes.
fn open(bytes: &[u8]) -> Result<(u8, Reader<'_>), DecodeError> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(DecodeError::OutOfRange("frame length"));
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let ty = r.u8()?;
    Ok((ty, r))
}

fn header(ty: u8, capacity: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(2 + capacity);
    w.push(VERSION);
    w.push(ty);
    w
}

impl ClientFrame {
    /// Encodes the frame. Fields over their limits encode, but the relay rejects them.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Authenticate(a) => {
                let mut w = header(0x41, 32 + 64 + 5 + MAX_INVITE_LEN);
                w.extend_from_slice(a.identity.as_bytes());
                w.extend_from_slice(&a.signature);
                w.put_bool(a.invite.is_some());
                if let Some(invite) = &a.invite {
                    w.put_var_bytes(invite);
                }
                w
            }
            Self::UploadPrekeys(u) => {
                let mut w = header(0x42, 64);
                put_opt_record(&mut w, u.signed_prekey.as_ref());
                put_opt_record(&mut w, u.last_resort_kem.as_ref());
                put_records(&mut w, &u.one_time_x25519);
                put_records(&mut w, &u.one_time_kem);
                w
            }
            Self::FetchBundle(id) => {
                let mut w = header(0x43, 32);
                w.extend_from_slice(id.as_bytes());
                w
            }
            Self::Send(s) => {
                let mut w = header(0x44, 32 + 16 + 4 + s.body.len());
                w.extend_from_slice(s.recipient.as_bytes());
                w.extend_from_slice(&s.message_id.0);
                w.put_var_bytes(&s.body);
                w
            }
            Self::Ack(ids) => {
                let mut w = header(0x45, 4 + 8 * ids.len());
                w.put_u32(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                for id in ids {
                    w.put_u64(*id);
                }
                w
            }
            Self::Ping(v) => {
                let mut w = header(0x46, 8);
                w.put_u64(*v);
                w
            }
            Self::SendMulti(s) => {
                let mut w = header(0x47, 4 + 32 * s.recipients.len() + 16 + 4 + s.body.len());
                w.put_u32(u32::try_from(s.recipients.len()).unwrap_or(u32::MAX));
                for r in &s.recipients {
                    w.extend_from_slice(r.as_bytes());
                }
                w.extend_from_slice(&s.message_id.0);
                w.put_var_bytes(&s.body);
                w
            }
        }
    }

    /// Decodes one frame from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (ty, mut r) = open(bytes)?;
        let frame = match ty {
            0x41 => {
                let identity = read_identity(&mut r)?;
                let signature = r.array()?;
                let invite = if r.bool()? {
                    Some(r.var_bytes(MAX_INVITE_LEN)?.to_vec())
                } else {
                    None
                };
                Self::Authenticate(AuthenticateOut {
                    identity,
                    signature,
                    invite,
                })
            }
            0x42 => Self::UploadPrekeys(UploadPrekeysOut {
                signed_prekey: read_opt_record(&mut r)?,
                last_resort_kem: read_opt_record(&mut r)?,
                one_time_x25519: read_records(&mut r)?,
                one_time_kem: read_records(&mut r)?,
            }),
            0x43 => Self::FetchBundle(read_identity(&mut r)?),
            0x44 => {
                let recipient = read_identity(&mut r)?;
                let message_id = MessageId(r.array()?);
                let body = r.var_bytes(MAX_BODY_LEN)?.to_vec();
                Self::Send(SendOut {
                    recipient,
                    message_id,
                    body,
                })
            }
            0x45 => {
                let n = r.count(MAX_ACKS_PER_FRAME, 8)?;
                let ids = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
                Self::Ack(ids)
            }
            0x46 => Self::Ping(r.u64()?),
            0x47 => {
                let n = r.count(MAX_MULTI_RECIPIENTS, 32)?;
                if n == 0 {
                    return Err(DecodeError::OutOfRange("no recipients"));
                }
                let mut recipients: Vec<IdentityKey> = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = read_identity(&mut r)?;
                    if recipients.contains(&id) {
                        return Err(DecodeError::OutOfRange("duplicate recipient"));
                    }
                    recipients.push(id);
                }
                let message_id = MessageId(r.array()?);
                let body = r.var_bytes(MAX_BODY_LEN)?.to_vec();
                Self::SendMulti(SendMultiOut {
                    recipients,
                    message_id,
                    body,
                })
            }
            other => return Err(DecodeError::UnknownVersion(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

/// Encodes a `Deliver` frame (`0x04`) from its parts, so a relay can write a stored body without
/// first copying it into a [`DeliverIn`]. The same bytes as `RelayFrame::Deliver(..).encode()`.
pub fn encode_deliver(
    delivery_id: u64,
    sender: &IdentityKey,
    message_id: &MessageId,
    timestamp_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut w = header(0x04, 8 + 32 + 16 + 8 + 4 + body.len());
    w.put_u64(delivery_id);
    w.extend_from_slice(sender.as_bytes());
    w.extend_from_slice(&message_id.0);
    w.put_u64(timestamp_ms);
    w.put_var_bytes(body);
    w
}

impl RelayFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Challenge(c) => {
                let mut w = header(0x01, 72);
                w.extend_from_slice(&c.relay_id.0);
                w.extend_from_slice(&c.nonce);
                w.put_u32(c.max_frame_len);
                w.put_u32(c.max_body_len);
                w
            }
            Self::AuthOk(c) => {
                let mut w = header(0x02, 8);
                put_counts(&mut w, *c);
                w
            }
            Self::Accepted(id) => {
                let mut w = header(0x03, 16);
                w.extend_from_slice(&id.0);
                w
            }
            Self::Deliver(d) => encode_deliver(
                d.delivery_id,
                &d.sender,
                &d.message_id,
                d.timestamp_ms,
                &d.body,
            ),
            Self::Bundle(b) => {
                let mut w = header(0x05, 64);
                w.extend_from_slice(b.identity.as_bytes());
                put_record(&mut w, &b.signed_prekey);
                put_opt_record(&mut w, b.one_time_x25519.as_ref());
                put_record(&mut w, &b.kem);
                w.put_bool(b.kem_is_last_resort);
                w
            }
            Self::PrekeysLow(c) => {
                let mut w = header(0x06, 8);
                put_counts(&mut w, *c);
                w
            }
            Self::PrekeysStored(c) => {
                let mut w = header(0x07, 8);
                put_counts(&mut w, *c);
                w
            }
            Self::Error(e) => {
                let mut w = header(0x08, 35);
                w.put_u16(e.code.to_u16());
                match &e.context {
                    ErrorContext::None => w.push(0),
                    ErrorContext::Message(id) => {
                        w.push(1);
                        w.extend_from_slice(&id.0);
                    }
                    ErrorContext::Identity(key) => {
                        w.push(2);
                        w.extend_from_slice(key.as_bytes());
                    }
                }
                w
            }
            Self::Pong(v) => {
                let mut w = header(0x09, 8);
                w.put_u64(*v);
                w
            }
            Self::Drained => header(0x0A, 0),
        }
    }

    /// Decodes one frame from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (ty, mut r) = open(bytes)?;
        let frame = match ty {
            0x01 => Self::Challenge(ChallengeIn {
                relay_id: RelayId(r.array()?),
                nonce: r.array()?,
                max_frame_len: r.u32()?,
                max_body_len: r.u32()?,
            }),
            0x02 => Self::AuthOk(read_counts(&mut r)?),
            0x03 => Self::Accepted(MessageId(r.array()?)),
            0x04 => Self::Deliver(DeliverIn {
                delivery_id: r.u64()?,
                sender: read_identity(&mut r)?,
                message_id: MessageId(r.array()?),
                timestamp_ms: r.u64()?,
                body: r.var_bytes(MAX_BODY_LEN)?.to_vec(),
            }),
            0x05 => Self::Bundle(BundleIn {
                identity: read_identity(&mut r)?,
                signed_prekey: read_record(&mut r)?,
                one_time_x25519: read_opt_record(&mut r)?,
                kem: read_record(&mut r)?,
                kem_is_last_resort: r.bool()?,
            }),
            0x06 => Self::PrekeysLow(read_counts(&mut r)?),
            0x07 => Self::PrekeysStored(read_counts(&mut r)?),
            0x08 => {
                let code = ErrorCode::from_u16(r.u16()?);
                let context = match r.u8()? {
                    0 => ErrorContext::None,
                    1 => ErrorContext::Message(MessageId(r.array()?)),
                    2 => ErrorContext::Identity(read_identity(&mut r)?),
                    _ => return Err(DecodeError::OutOfRange("error context")),
                };
                Self::Error(ErrorIn { code, context })
            }
            0x09 => Self::Pong(r.u64()?),
            0x0A => Self::Drained,
            other => return Err(DecodeError::UnknownVersion(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

impl UploadPrekeysOut {
    /// Checks the limits the decoder enforces, so a client can split an upload before sending.
    pub fn fits(&self) -> bool {
        self.one_time_x25519.len() <= MAX_PREKEYS_PER_UPLOAD
            && self.one_time_kem.len() <= MAX_PREKEYS_PER_UPLOAD
            && self
                .signed_prekey
                .iter()
                .chain(&self.last_resort_kem)
                .chain(&self.one_time_x25519)
                .chain(&self.one_time_kem)
                .all(|r| r.blob.len() <= MAX_PREKEY_BLOB_LEN)
            && ClientFrame::UploadPrekeys(self.clone()).encode().len() <= MAX_FRAME_LEN
    }
}
