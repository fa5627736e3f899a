//! Secret byte types and X25519 key pairs.
//!
//! Every secret is a newtype that zeroizes on drop and prints as `***`. Public and secret bytes
//! never share a type.

use std::fmt;

use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codec::DecodeError;

macro_rules! secret_bytes {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub(crate) struct $name(Box<[u8; 32]>);

        impl $name {
            pub(crate) fn new(bytes: [u8; 32]) -> Self {
                let mut boxed = Box::new([0u8; 32]);
                *boxed = bytes;
                Self(boxed)
            }

            pub(crate) fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(***)"))
            }
        }
    };
}

secret_bytes!(
    /// RK in the Double Ratchet specification: the root chain key.
    RootKey
);
secret_bytes!(
    /// CKs or CKr: a sending or receiving chain key.
    ChainKey
);
secret_bytes!(
    /// MK: a key for exactly one message.
    MessageKey
);
secret_bytes!(
    /// SK: the shared secret a handshake produces.
    SharedSecret
);

/// An X25519 key pair: a ratchet key, an ephemeral key or a prekey.
#[derive(Clone)]
pub struct X25519KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl X25519KeyPair {
    /// Draws a fresh key pair from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret_bytes(secret_from_rng(rng))
    }

    /// Rebuilds a key pair from its 32-byte private scalar (clamped when used).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private scalar as stored (for snapshots and test vectors).
    pub(crate) fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// X25519 with a remote public key; non-contributory (all-zero) results are refused.
    pub(crate) fn dh(&self, remote: &PublicKey) -> Result<SharedSecretBytes, NonContributory> {
        dh(&self.secret, remote)
    }
}

impl fmt::Debug for X25519KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "X25519KeyPair {{ public: {}, secret: *** }}",
            crate::identity::hex_lower(self.public.as_bytes())
        )
    }
}

/// A Diffie-Hellman output, zeroized on drop.
pub(crate) type SharedSecretBytes = zeroize::Zeroizing<[u8; 32]>;

/// The Diffie-Hellman output was all zeros: the remote key had small order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonContributory;

pub(crate) fn dh(
    secret: &StaticSecret,
    remote: &PublicKey,
) -> Result<SharedSecretBytes, NonContributory> {
    let shared = secret.diffie_hellman(remote);
    if !shared.was_contributory() {
        return Err(NonContributory);
    }
    Ok(zeroize::Zeroizing::new(shared.to_bytes()))
}

pub(crate) fn secret_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Decodes a 32-byte X25519 public key, accepting only the canonical encoding of `u` (below
/// 2^255 - 19, top bit clear). X25519 itself ignores the top bit and reduces `u` modulo p, so
/// without this check several encodings would name one key and a modified message could still be
/// accepted. Low-order points are caught where they are used, by the contributory check.
pub(crate) fn x25519_public(bytes: &[u8]) -> Result<PublicKey, DecodeError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| DecodeError::OutOfRange("X25519 key length"))?;
    let top_bit_set = array[31] & 0x80 != 0;
    let at_least_p =
        array[31] == 0x7f && array[1..31].iter().all(|&b| b == 0xff) && array[0] >= 0xed;
    if top_bit_set || at_least_p {
        return Err(DecodeError::InvalidKey("non-canonical X25519 key"));
    }
    Ok(PublicKey::from(array))
}
