//! [`ClientError`]: why a relay connection or request failed.

use sotto_wire::{ErrorCode, ErrorIn, RelayId};
use thiserror::Error;

use crate::session::SessionError;
use crate::tls::KeyPin;

/// Why a relay connection or request failed. `Display` is one line for a user; it never holds
/// message text or key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `ws://HOST:PORT/...` or `wss://HOST:PORT/...`.
    #[error("invalid relay URL: {0}")]
    Url(String),
    /// The TCP connection or the WebSocket upgrade failed.
    #[error("cannot connect to the relay: {0}")]
    Connect(String),
    /// TLS failed: the certificate is not trusted by the configured roots, is for another name,
    /// or the handshake failed.
    #[error("TLS with the relay failed: {0}")]
    Tls(String),
    /// The CA file given for a self-hosted relay could not be read or holds no certificate.
    #[error("cannot use the CA file: {0}")]
    CaFile(String),
    /// The relay presented another id than the one pinned for it (a different relay, or its
    /// store was re-created). Nothing was signed for it.
    #[error("the relay's id changed (pinned {}, presented {})", short(&pinned.0), short(&presented.0))]
    RelayIdChanged {
        /// The pinned id.
        pinned: RelayId,
        /// The presented id.
        presented: RelayId,
    },
    /// The relay's TLS key differs from the one pinned for it (its certificate was replaced by
    /// one with a new key, or someone else answers). Nothing was sent to it.
    #[error("the relay's TLS key changed (pinned {pinned}, presented {presented})")]
    CertificateChanged {
        /// The pinned key.
        pinned: KeyPin,
        /// The presented key.
        presented: KeyPin,
    },
    /// The relay rejected a request; the connection stays open.
    #[error("relay rejected the request: {}", .0.code)]
    Rejected(ErrorIn),
    /// The relay ended the session with a fatal error.
    #[error("relay closed the session: {0}")]
    Fatal(ErrorCode),
    /// Nothing arrived in time (handshake, or a stall with something outstanding).
    #[error("the relay connection made no progress (timed out)")]
    Timeout,
    /// The connection closed or failed.
    #[error("connection to the relay closed")]
    Closed,
    /// The relay sent something that is not a valid frame, or not allowed here.
    #[error("unexpected reply from the relay: {0}")]
    Protocol(&'static str),
    /// Too many requests in flight, or too many unhandled frames buffered while waiting for a
    /// reply (handle events with `next_event` instead of waiting).
    #[error("too many relay frames or requests outstanding")]
    Overflow,
}

fn short(b: &[u8; 32]) -> String {
    hex::encode(&b[..8])
}

impl ClientError {
    /// The relay's error code, for a rejection or a fatal error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rejected(e) => Some(e.code),
            Self::Fatal(c) => Some(*c),
            _ => None,
        }
    }

    /// Whether the connection is gone (worth reconnecting with backoff). False for a rejected
    /// request (the connection is fine), for a changed pin (reconnecting will not help: the user
    /// must decide) and for a fatal error that needs the user (invite required, unauthorized).
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::Timeout
            | Self::Closed
            | Self::Protocol(_)
            | Self::Overflow => true,
            Self::Fatal(c) => !matches!(c, ErrorCode::InviteRequired | ErrorCode::Unauthorized),
            _ => false,
        }
    }
}

impl From<SessionError> for ClientError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::RelayIdChanged { pinned, presented } => {
                Self::RelayIdChanged { pinned, presented }
            }
            SessionError::Fatal(c) => Self::Fatal(c),
            SessionError::Timeout => Self::Timeout,
            SessionError::Protocol(p) => Self::Protocol(p),
            SessionError::Busy => Self::Overflow,
            SessionError::NotLive => Self::Closed,
        }
    }
}
