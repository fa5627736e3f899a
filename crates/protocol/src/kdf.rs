//! The key derivation functions, with every label in one place.
//!
//! | function | computation | spec name |
//! |---|---|---|
//! | [`kdf_rk`] | `HKDF-SHA256(salt = RK, ikm = DH_out, info = "sotto ratchet v1 root", L = 64)` split into `RK' ‖ CK` | KDF_RK |
//! | [`kdf_ck`] | `MK = HMAC-SHA256(CK, 0x01)`, `CK' = HMAC-SHA256(CK, 0x02)` | KDF_CK |
//! | [`message_keys`] | `HKDF-SHA256(salt = 0^32, ikm = MK, info = "sotto ratchet v1 message keys", L = 56)` split into `key(32) ‖ nonce(24)` | ENCRYPT's key schedule |
//! | [`pqxdh_secret`] | `HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, info = "sotto_PQXDH_CURVE25519_SHA-256_ML-KEM-768", L = 32)` | PQXDH KDF |

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{ChainKey, MessageKey, RootKey, SharedSecret};

/// `info` of KDF_RK.
pub const ROOT_INFO: &[u8] = b"sotto ratchet v1 root";
/// `info` of the message-key expansion.
pub const MESSAGE_KEYS_INFO: &[u8] = b"sotto ratchet v1 message keys";
/// `info` of the PQXDH KDF, in the form the PQXDH specification recommends.
pub const PQXDH_INFO: &[u8] = b"sotto_PQXDH_CURVE25519_SHA-256_ML-KEM-768";
/// KDF_CK input constant for the message key.
pub const MESSAGE_KEY_CONSTANT: u8 = 0x01;
/// KDF_CK input constant for the next chain key.
pub const CHAIN_KEY_CONSTANT: u8 = 0x02;
/// XChaCha20-Poly1305 key length.
pub const AEAD_KEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce length.
pub const AEAD_NONCE_LEN: usize = 24;

/// KDF_RK(RK, DH_out) = (RK', CK).
pub(crate) fn kdf_rk(root: &RootKey, dh_out: &[u8; 32]) -> (RootKey, ChainKey) {
    let hk = Hkdf::<Sha256>::new(Some(root.as_bytes()), dh_out);
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(ROOT_INFO, okm.as_mut());
    (
        RootKey::new(first_half(&okm)),
        ChainKey::new(second_half(&okm)),
    )
}

/// KDF_CK(CK) = (CK', MK).
pub(crate) fn kdf_ck(chain: &ChainKey) -> (ChainKey, MessageKey) {
    // Both MACs share the key CK: absorb it (the ipad and opad blocks) once and clone the state.
    let keyed = hmac(chain.as_bytes());
    (
        ChainKey::new(hmac_finish(keyed.clone(), CHAIN_KEY_CONSTANT)),
        MessageKey::new(hmac_finish(keyed, MESSAGE_KEY_CONSTANT)),
    )
}

/// HMAC-SHA256(key, [byte]).
pub(crate) fn hmac_byte(key: &[u8; 32], byte: u8) -> [u8; 32] {
    hmac_finish(hmac(key), byte)
}

fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac())
}

fn hmac_finish(mut mac: Hmac<Sha256>, byte: u8) -> [u8; 32] {
    mac.update(&[byte]);
    mac.finalize().into_bytes().into()
}

// HMAC accepts keys of every length; this branch cannot run.
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new(&Default::default())
}

/// The AEAD key and nonce for one message key.
pub(crate) struct AeadKeys {
    pub(crate) key: Zeroizing<[u8; AEAD_KEY_LEN]>,
    pub(crate) nonce: [u8; AEAD_NONCE_LEN],
}

/// Expands a message key (or a sender-key message seed) into an XChaCha20-Poly1305 key and nonce.
pub(crate) fn message_keys(mk: &[u8; 32], info: &[u8]) -> AeadKeys {
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), mk);
    let mut okm = Zeroizing::new([0u8; AEAD_KEY_LEN + AEAD_NONCE_LEN]);
    let _ = hk.expand(info, okm.as_mut());
    let mut key = Zeroizing::new([0u8; AEAD_KEY_LEN]);
    key.copy_from_slice(&okm[..AEAD_KEY_LEN]);
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    nonce.copy_from_slice(&okm[AEAD_KEY_LEN..]);
    AeadKeys { key, nonce }
}

impl MessageKey {
    pub(crate) fn aead_keys(&self) -> AeadKeys {
        message_keys(self.as_bytes(), MESSAGE_KEYS_INFO)
    }
}

/// The PQXDH KDF: SK = HKDF(0^32, F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS).
pub(crate) fn pqxdh_secret(dh_outputs: &[&[u8; 32]], kem_secret: &[u8; 32]) -> SharedSecret {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dh_outputs.len() + 2)));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dh_outputs {
        ikm.extend_from_slice(*dh);
    }
    ikm.extend_from_slice(kem_secret);
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm);
    let mut sk = [0u8; 32];
    let _ = hk.expand(PQXDH_INFO, &mut sk);
    let out = SharedSecret::new(sk);
    zeroize::Zeroize::zeroize(&mut sk);
    out
}

fn first_half(okm: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&okm[..32]);
    out
}

fn second_half(okm: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&okm[32..]);
    out
}
