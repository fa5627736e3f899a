//! Encryption at rest: the profile key from Argon2id(passphrase, salt), and sealed values.
//!
//! ```text
//!   master  = Argon2id(passphrase, salt; m, t, p) → 32 bytes       (parameters stored per profile)
//!   K_enc   = HMAC-SHA256(master, "sotto profile v1 encryption")
//!   K_tag   = HMAC-SHA256(master, "sotto profile v1 lookup tags")
//!   sealed  = 0x01 ‖ nonce (24, random) ‖ XChaCha20-Poly1305(K_enc, nonce, value, AD = label)
//!   tag(x)  = HMAC-SHA256(K_tag, x)[..16]      (opaque lookup keys: message ids, dedup)
//! ```
//!
//! The label binds a value to its place (`"identity"`, `"contact"`, `"message"`…), so a row
//! cannot be moved to another table and decrypt there.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;

/// Version byte of a sealed value.
const SEALED_VERSION: u8 = 0x01;
const NONCE_LEN: usize = 24;

/// Argon2id cost parameters, stored in the profile so that it opens with the parameters it was
/// created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The default for real profiles: 64 MiB, 3 passes, 1 lane (RFC 9106 §4 "second recommended
    /// option" memory with the OWASP pass count; about 0.3 s on a laptop core).
    pub const DEFAULT: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Deliberately weak parameters (64 KiB, 1 pass) for tests only: chosen by `init` when the
    /// environment variable `SOTTO_INSECURE_TEST_KDF=1` is set. Never use them for real data.
    pub const INSECURE_TEST: Self = Self {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// `DEFAULT`, or `INSECURE_TEST` when `SOTTO_INSECURE_TEST_KDF=1`.
    pub fn from_env() -> Self {
        if std::env::var("SOTTO_INSECURE_TEST_KDF").is_ok_and(|v| v == "1") {
            Self::INSECURE_TEST
        } else {
            Self::DEFAULT
        }
    }
}

/// The keys derived from the passphrase. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct ProfileKey {
    enc: [u8; 32],
    tag: [u8; 32],
}

impl std::fmt::Debug for ProfileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileKey(***)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl ProfileKey {
    /// Runs Argon2id over the passphrase.
    pub(crate) fn derive(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Self, Error> {
        let p = Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|_| Error::Corrupt("invalid key-derivation parameters"))?;
        let mut master = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password_into(passphrase, salt, master.as_mut())
            .map_err(|_| Error::Corrupt("key derivation failed"))?;
        Ok(Self {
            enc: hmac(master.as_ref(), &[b"sotto profile v1 encryption"]),
            tag: hmac(master.as_ref(), &[b"sotto profile v1 lookup tags"]),
        })
    }

    /// Encrypts `value` under `label`.
    pub(crate) fn seal<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        label: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&self.enc).into());
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value,
                    aad: label.as_bytes(),
                },
            )
            .map_err(|_| Error::Corrupt("value too large to seal"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a sealed value; any failure is one error (no oracle).
    pub(crate) fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_VERSION {
            return Err(Error::Corrupt("sealed value malformed"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let cipher = XChaCha20Poly1305::new((&self.enc).into());
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: label.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Corrupt("sealed value failed authentication"))
    }

    /// An opaque 16-byte lookup tag for `parts`.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> Vec<u8> {
        hmac(&self.tag, parts)[..16].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_label_binding() {
        let k = ProfileKey::derive(b"pw", &[7; 16], KdfParams::INSECURE_TEST).unwrap();
        let mut rng = crate::rng::OsRng::new().unwrap();
        let s = k.seal(&mut rng, "a", b"secret").unwrap();
        assert_eq!(&**k.open("a", &s).unwrap(), b"secret");
        assert!(k.open("b", &s).is_err());
        let k2 = ProfileKey::derive(b"px", &[7; 16], KdfParams::INSECURE_TEST).unwrap();
        assert!(k2.open("a", &s).is_err());
        assert_eq!(format!("{k:?}"), "ProfileKey(***)");
    }
}
