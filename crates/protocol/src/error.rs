//! Error types, one per operation.
//!
//! Cryptographic failures collapse into one variant ([`DecryptError::AuthenticationFailed`]) so
//! an attacker learns nothing about *why* a forgery failed. The remaining variants are decided
//! from public header fields alone and give away nothing the attacker did not already know.

use thiserror::Error;

pub use crate::codec::DecodeError;
pub use crate::padding::TooLong;

/// An Ed25519 signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("signature verification failed")]
pub struct SignatureError;

/// Why a message could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The plaintext is longer than the largest padding bucket.
    #[error("plaintext too long")]
    TooLong,
    /// The session has no sending chain yet (a responder before its first received message).
    #[error("session cannot send yet")]
    NoSendingChain,
    /// 2^32 messages were sent on one chain; the peer must reply before we can send again.
    #[error("sending chain exhausted")]
    ChainExhausted,
    /// The peer's ratchet key is degenerate.
    #[error("remote ratchet key is invalid")]
    InvalidRemoteKey,
}

impl From<TooLong> for EncryptError {
    fn from(_: TooLong) -> Self {
        Self::TooLong
    }
}

/// Why a received message was rejected. In every case the session state is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The bytes are not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// The message was already received (a replay), or its key is no longer kept.
    #[error("duplicate or expired message")]
    Duplicate,
    /// The header asks us to skip more than MAX_SKIP message keys.
    #[error("message is too far ahead in its chain")]
    TooFarAhead,
    /// The message is forged, tampered with, or not for this session.
    #[error("message failed authentication")]
    AuthenticationFailed,
}

/// Why a handshake could not be started or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a well-formed bundle or initial message.
    #[error("malformed handshake data: {0}")]
    Malformed(#[from] DecodeError),
    /// A prekey signature does not verify under the bundle's identity key.
    #[error("bad {0} signature")]
    BadSignature(&'static str),
    /// A Diffie-Hellman output was all zeros (a small-order key).
    #[error("non-contributory Diffie-Hellman output")]
    NonContributory,
    /// The initial message names a prekey we do not hold (never issued, or already used).
    #[error("unknown or already used prekey")]
    UnknownPrekey,
    /// The first message inside the initial message did not decrypt.
    #[error("initial message rejected: {0}")]
    Decrypt(#[from] DecryptError),
}
