//! ENCRYPT and DECRYPT: XChaCha20-Poly1305 under a key and nonce expanded from a message key.

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::kdf::AeadKeys;

/// Length of the Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// Encrypts `buffer[start..]` in place with `AD = ad_parts` concatenated and appends the tag, so
/// that a caller can write `header ‖ plaintext` into one buffer and send it as it comes out.
/// `None` only if the input exceeds the AEAD's limits, which our padding bound makes impossible.
pub(crate) fn seal_in_place(
    keys: &AeadKeys,
    buffer: &mut Vec<u8>,
    start: usize,
    ad_parts: &[&[u8]],
) -> Option<()> {
    let cipher = XChaCha20Poly1305::new((&*keys.key).into());
    let plaintext = buffer.get_mut(start..)?;
    let tag = with_concatenated(ad_parts, |aad| {
        cipher.encrypt_inout_detached(&XNonce::from(keys.nonce), aad, plaintext.into())
    })
    .ok()?;
    buffer.extend_from_slice(&tag);
    Some(())
}

/// Opens `ciphertext ‖ tag`; `None` when authentication fails.
pub(crate) fn open(keys: &AeadKeys, ciphertext: &[u8], ad_parts: &[&[u8]]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new((&*keys.key).into());
    with_concatenated(ad_parts, |aad| {
        cipher.decrypt(
            &XNonce::from(keys.nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
    })
    .ok()
}

/// Calls `f` with `parts` concatenated: on the stack when they fit, as the ratchet's 64-byte AD
/// and 41-byte header do, so that a message costs no allocation for its AAD.
fn with_concatenated<T>(parts: &[&[u8]], f: impl FnOnce(&[u8]) -> T) -> T {
    const INLINE: usize = 128;
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    if len > INLINE {
        return f(&parts.concat());
    }
    let mut inline = [0u8; INLINE];
    let mut at = 0;
    for part in parts {
        inline[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    f(&inline[..len])
}
