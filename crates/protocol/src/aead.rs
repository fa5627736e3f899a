//! ENCRYPT and DECRYPT: XChaCha20-Poly1305 under a key and nonce expanded from a message key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::kdf::AeadKeys;

/// Seals `plaintext` with `AD = ad_parts` concatenated. `None` only if the input exceeds the
/// AEAD's limits, which our padding bound makes impossible.
pub(crate) fn seal(keys: &AeadKeys, plaintext: &[u8], ad_parts: &[&[u8]]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new((&*keys.key).into());
    let aad = ad_parts.concat();
    cipher
        .encrypt(
            &XNonce::from(keys.nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .ok()
}

/// Opens `ciphertext ‖ tag`; `None` when authentication fails.
pub(crate) fn open(keys: &AeadKeys, ciphertext: &[u8], ad_parts: &[&[u8]]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new((&*keys.key).into());
    let aad = ad_parts.concat();
    cipher
        .decrypt(
            &XNonce::from(keys.nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .ok()
}
