//! Long-term identities.
//!
//! A sotto identity is one Ed25519 key pair. It signs (prekeys, relay challenges, group rosters)
//! as Ed25519, and takes part in Diffie-Hellman through its birationally equivalent X25519 form:
//! the X25519 private scalar is `clamp(SHA-512(seed)[0..32])` (the scalar Ed25519 itself signs
//! with) and the X25519 public key is the Montgomery `u` coordinate of the Ed25519 point. This is
//! the `"ed25519"` identity key format of the published test vectors.

use std::fmt;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::DecodeError;
use crate::error::SignatureError;

/// Length of an encoded identity key.
pub const IDENTITY_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Decodes an Ed25519 public key and accepts it only if it is the canonical encoding of a point
/// of prime order `L`: a curve point, not of small order, without a torsion component (`[L]P` is
/// the identity), and encoded as the curve library re-encodes it. `IK + T` for a small-order `T`
/// signs like `IK` under cofactored verification and gives the same X25519 results, yet is a
/// different byte string; accepting it would give one identity two names.
pub(crate) fn strict_ed25519_key(bytes: &[u8; 32]) -> Result<VerifyingKey, DecodeError> {
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| DecodeError::InvalidKey("not an Ed25519 curve point"))?;
    if key.is_weak() {
        return Err(DecodeError::InvalidKey("Ed25519 key has small order"));
    }
    let point = key.to_edwards();
    if !point.is_torsion_free() {
        return Err(DecodeError::InvalidKey(
            "Ed25519 key has a torsion component",
        ));
    }
    if point.compress().as_bytes() != bytes {
        return Err(DecodeError::InvalidKey("non-canonical Ed25519 encoding"));
    }
    Ok(key)
}

/// The public half of an identity: an Ed25519 verifying key known to be the canonical encoding
/// of a point of prime order (see [`strict_ed25519_key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey(VerifyingKey);

impl IdentityKey {
    /// Decodes and validates an identity key.
    pub fn from_bytes(bytes: &[u8; IDENTITY_KEY_LEN]) -> Result<Self, DecodeError> {
        strict_ed25519_key(bytes).map(Self)
    }

    /// Decodes an identity key from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        let array: &[u8; IDENTITY_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| DecodeError::OutOfRange("identity key length"))?;
        Self::from_bytes(array)
    }

    /// The 32-byte Ed25519 encoding.
    pub fn to_bytes(&self) -> [u8; IDENTITY_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The 32-byte Ed25519 encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; IDENTITY_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Verifies an Ed25519 signature (RFC 8032, with the strict checks of `verify_strict`).
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureError> {
        let signature = Signature::from_bytes(signature);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| SignatureError)
    }

    /// The X25519 form of this key, used in the PQXDH Diffie-Hellman computations.
    pub fn to_x25519(&self) -> X25519Public {
        X25519Public::from(self.0.to_montgomery().to_bytes())
    }

    /// A short, public, human-oriented fingerprint for logs and lists: the first 8 bytes of
    /// SHA-256 of the key, in hex. It identifies; it does not authenticate (use a safety number).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.as_bytes());
        hex_lower(&digest[..8])
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.fingerprint())
    }
}

/// A long-term identity key pair. The private half is zeroized on drop and never printed.
#[derive(Clone)]
pub struct IdentityKeyPair {
    signing: SigningKey,
}

impl IdentityKeyPair {
    /// Generates a new identity from the caller's random number generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Rebuilds an identity from its 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte Ed25519 seed: the whole secret. Handle with care.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public identity key.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.signing.verifying_key())
    }

    /// Signs `message` with Ed25519. Callers prefix every message with a domain-separation tag
    /// (see docs/PROTOCOL.md, "Signatures").
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 form of the private key.
    pub(crate) fn x25519_secret(&self) -> StaticSecret {
        StaticSecret::from(self.signing.to_scalar_bytes())
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IdentityKeyPair {{ public: {:?}, secret: *** }}",
            self.public()
        )
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_forms_agree() {
        // DH between the converted forms of two identities is symmetric, which holds only if the
        // private scalar and the public Montgomery point are the two halves of one key.
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let b = IdentityKeyPair::from_seed(&[2; 32]);
        let ab = a.x25519_secret().diffie_hellman(&b.public().to_x25519());
        let ba = b.x25519_secret().diffie_hellman(&a.public().to_x25519());
        assert_eq!(ab.as_bytes(), ba.as_bytes());
        assert_eq!(
            X25519Public::from(&a.x25519_secret()),
            a.public().to_x25519()
        );
    }

    #[test]
    fn rejects_bad_keys_and_signatures() {
        assert!(
            IdentityKey::from_bytes(&[0; 32]).is_err(),
            "identity point is small order"
        );
        let id = IdentityKeyPair::from_seed(&[3; 32]);
        let sig = id.sign(b"hello");
        assert!(id.public().verify(b"hello", &sig).is_ok());
        assert!(id.public().verify(b"hellp", &sig).is_err());
        let debug = format!("{id:?}");
        assert!(!debug.contains(&hex_lower(id.to_seed().as_ref())));
    }
}
