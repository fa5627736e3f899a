//! Error types, one per operation.

use thiserror::Error;

pub use crate::codec::DecodeError;

/// An Ed25519 signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("signature verification failed")]
pub struct SignatureError;
