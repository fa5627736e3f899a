//! # sotto-protocol
//!
//! The cryptographic core of sotto: identities and safety numbers, prekeys, the PQXDH handshake
//! (X25519 + ML-KEM-768) and the Double Ratchet, with length padding and versioned snapshots.
//!
//! This crate is **sans-IO**. It does not open sockets or files, read clocks, or draw from a
//! thread RNG: it takes bytes and a caller-supplied [`rand_core::CryptoRng`] in, and gives bytes
//! and state out. Transport, storage and time are the caller's.
//!
//! ```text
//!   caller (client)                      sotto-protocol
//!   ───────────────                      ──────────────
//!   bundle bytes from relay ──────────▶  PrekeyBundle::decode ─▶ Session::initiate
//!   plaintext ────────────────────────▶  Session::encrypt ─▶ envelope bytes ──▶ relay
//!   envelope bytes from relay ────────▶  Envelope::decode ─▶ Session::decrypt / respond
//!   Session::snapshot ─▶ encrypt at rest ─▶ disk ─▶ Session::restore
//! ```
//!
//! The primitives all come from vetted crates: `x25519-dalek`, `ed25519-dalek`, `ml-kem`,
//! `chacha20poly1305`, `hkdf`, `hmac`, `sha2`. What is implemented here is the *protocol*, and
//! each module names the specification symbols it implements. `docs/PROTOCOL.md` describes every
//! byte.
//!
//! ## A whole conversation
//!
//! ```
//! use sotto_protocol::{Envelope, IdentityKeyPair, PrekeyBundle, PrekeyStore, SafetyNumber, Session};
//! # use rand_core::{TryRng, TryCryptoRng};
//! # struct Rng(u64);
//! # impl TryRng for Rng {
//! #     type Error = core::convert::Infallible;
//! #     fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #     fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #         self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
//! #         Ok(self.0 ^ (self.0 >> 29))
//! #     }
//! #     fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
//! #         for b in dst { *b = self.try_next_u64()? as u8; } Ok(())
//! #     }
//! # }
//! # impl TryCryptoRng for Rng {} // A toy RNG for the example only: use a real CSPRNG.
//! # let mut rng = Rng(7);
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//!
//! // Bob publishes prekeys (the relay serves them while he is offline).
//! let mut bob_prekeys = PrekeyStore::new();
//! let signed_prekey = bob_prekeys.rotate_signed_prekey(&mut rng, &bob);
//! let one_time = bob_prekeys.generate_one_time_prekeys(&mut rng, 1);
//! let kem = bob_prekeys.generate_kem_prekeys(&mut rng, &bob, 1);
//! let bundle = PrekeyBundle {
//!     identity: bob.public(),
//!     signed_prekey,
//!     one_time_prekey: one_time.first().copied(),
//!     kem_prekey: kem[0].clone(),
//! };
//!
//! // Alice: bundle → session → first message (an initial "prekey" message).
//! let mut alice_session = Session::initiate(&mut rng, &alice, &PrekeyBundle::decode(&bundle.encode())?)?;
//! let wire = alice_session.encrypt(b"hi Bob")?;
//!
//! // Bob: initial message → session and plaintext.
//! let Envelope::Prekey(initial) = Envelope::decode(&wire)? else { unreachable!() };
//! let (mut bob_session, text) = Session::respond(&mut rng, &bob, &mut bob_prekeys, &initial)?;
//! assert_eq!(text, b"hi Bob");
//!
//! // And back: a DH ratchet step.
//! let reply = bob_session.encrypt(b"hi Alice")?;
//! assert_eq!(alice_session.decrypt(&mut rng, &Envelope::decode(&reply)?)?, b"hi Alice");
//!
//! // Both see the same safety number.
//! assert_eq!(SafetyNumber::new(&alice.public(), &bob.public()), SafetyNumber::new(&bob.public(), &alice.public()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod aead;
pub mod codec;
pub mod error;
pub mod group;
pub mod handshake;
#[cfg(feature = "hazmat")]
pub mod hazmat;
pub mod identity;
pub mod kdf;
mod keys;
pub mod padding;
pub mod prekeys;
pub mod ratchet;
pub mod roster;
pub mod safety;
pub mod sender_keys;
pub mod session;

pub use error::{DecodeError, DecryptError, EncryptError, HandshakeError, SignatureError};
pub use handshake::{InitialKeys, PREKEY_MESSAGE_VERSION};
pub use identity::{IdentityKey, IdentityKeyPair};
pub use keys::X25519KeyPair;
pub use prekeys::{
    KemPrekeyPublic, OneTimePrekeyPublic, PrekeyBundle, PrekeyStore, SignedPrekeyPublic,
};
pub use safety::SafetyNumber;
pub use session::{Envelope, MAX_RATCHET_MESSAGE_LEN, PrekeyMessage, RatchetMessage, Session};
