//! Prekeys: what a responder publishes so that others can start sessions while it is offline.
//!
//! * a **signed prekey** (SPK): an X25519 key signed by the identity, rotated on a schedule;
//! * **one-time prekeys** (OPK): X25519 keys, each handed out once by the relay and deleted here
//!   once used;
//! * **ML-KEM-768 prekeys** (PQPK): signed; one-time ones plus a **last-resort** one that the
//!   relay hands out when the one-time ones have run out.
//!
//! [`PrekeyStore`] keeps the private halves; the `*Public` records are what gets uploaded, and a
//! [`PrekeyBundle`] is what an initiator downloads and verifies.

use std::collections::BTreeMap;
use std::fmt;

use ml_kem::kem::{Decapsulate, KeyExport, TryKeyInit};
use ml_kem::{DecapsulationKey768, EncapsulationKey768, Seed};
use rand_core::CryptoRng;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::error::HandshakeError;
use crate::identity::{IDENTITY_KEY_LEN, IdentityKey, IdentityKeyPair, SIGNATURE_LEN};
use crate::keys::{X25519KeyPair, x25519_public};

/// Domain tag of a signed X25519 prekey: the signature covers `0x05 ‖ SPK`.
pub const X25519_KEY_TAG: u8 = 0x05;
/// Domain tag of a signed ML-KEM-768 prekey: the signature covers `0x0A ‖ PQPK`.
pub const MLKEM768_KEY_TAG: u8 = 0x0A;
/// Length of an ML-KEM-768 encapsulation key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Version byte of an encoded [`PrekeyBundle`].
pub const BUNDLE_VERSION: u8 = 0x01;
/// Length of an encoded [`SignedPrekeyPublic`].
pub const SIGNED_PREKEY_LEN: usize = 4 + 32 + SIGNATURE_LEN;
/// Length of an encoded [`OneTimePrekeyPublic`].
pub const ONE_TIME_PREKEY_LEN: usize = 4 + 32;
/// Length of an encoded [`KemPrekeyPublic`].
pub const KEM_PREKEY_LEN: usize = 4 + 1 + KEM_PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// Signed prekeys kept after rotation, so initial messages in flight still decrypt.
pub const RETAINED_SIGNED_PREKEYS: usize = 3;
/// Upper bound on stored one-time prekeys of each kind (bounds snapshot decoding too).
pub const MAX_ONE_TIME_PREKEYS: usize = 10_000;

/// The public record of a signed X25519 prekey: `id (u32be) ‖ key (32) ‖ signature (64)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPrekeyPublic {
    /// Identifier chosen by the owner.
    pub id: u32,
    /// SPK.
    pub key: PublicKey,
    /// Ed25519 signature by the identity over `0x05 ‖ key`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// The public record of a one-time X25519 prekey: `id (u32be) ‖ key (32)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OneTimePrekeyPublic {
    /// Identifier chosen by the owner.
    pub id: u32,
    /// OPK.
    pub key: PublicKey,
}

/// The public record of an ML-KEM-768 prekey:
/// `id (u32be) ‖ last_resort (u8) ‖ key (1184) ‖ signature (64)`.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPrekeyPublic {
    /// Identifier chosen by the owner.
    pub id: u32,
    /// Whether this is the last-resort key (reused until replaced) rather than a one-time key.
    pub last_resort: bool,
    /// PQPK, as its FIPS 203 encoding. Validated (modulus check) on decode.
    pub key: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
    /// Ed25519 signature by the identity over `0x0A ‖ key`.
    pub signature: [u8; SIGNATURE_LEN],
}

macro_rules! debug_id {
    ($t:ty, $name:literal) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($name, "(id {})"), self.id)
            }
        }
    };
}
debug_id!(SignedPrekeyPublic, "SignedPrekeyPublic");
debug_id!(OneTimePrekeyPublic, "OneTimePrekeyPublic");
debug_id!(KemPrekeyPublic, "KemPrekeyPublic");

fn signed_message(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + key.len());
    m.push(tag);
    m.extend_from_slice(key);
    m
}

impl SignedPrekeyPublic {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_PREKEY_LEN);
        out.put_u32(self.id);
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a record (the signature is checked by [`PrekeyBundle::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32()?,
            key: x25519_public(r.bytes(32)?)?,
            signature: r.array()?,
        })
    }

    /// Checks the signature against `identity`.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), HandshakeError> {
        identity
            .verify(
                &signed_message(X25519_KEY_TAG, self.key.as_bytes()),
                &self.signature,
            )
            .map_err(|_| HandshakeError::BadSignature("signed prekey"))
    }
}

impl OneTimePrekeyPublic {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ONE_TIME_PREKEY_LEN);
        out.put_u32(self.id);
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    /// Decodes a record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32()?,
            key: x25519_public(r.bytes(32)?)?,
        })
    }
}

impl KemPrekeyPublic {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEM_PREKEY_LEN);
        out.put_u32(self.id);
        out.put_bool(self.last_resort);
        out.extend_from_slice(self.key.as_ref());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a record, checking that the key is a valid ML-KEM-768 encapsulation key.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u32()?;
        let last_resort = r.bool()?;
        let key: Box<[u8; KEM_PUBLIC_KEY_LEN]> = Box::new(r.array()?);
        encapsulation_key(&key)?;
        Ok(Self {
            id,
            last_resort,
            key,
            signature: r.array()?,
        })
    }

    /// Checks the signature against `identity`.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), HandshakeError> {
        identity
            .verify(
                &signed_message(MLKEM768_KEY_TAG, self.key.as_ref()),
                &self.signature,
            )
            .map_err(|_| HandshakeError::BadSignature("ML-KEM prekey"))
    }

    pub(crate) fn encapsulation_key(&self) -> Result<EncapsulationKey768, DecodeError> {
        encapsulation_key(&self.key)
    }
}

fn encapsulation_key(bytes: &[u8; KEM_PUBLIC_KEY_LEN]) -> Result<EncapsulationKey768, DecodeError> {
    EncapsulationKey768::new_from_slice(bytes)
        .map_err(|_| DecodeError::InvalidKey("ML-KEM-768 encapsulation key"))
}

/// Everything an initiator needs to start a PQXDH session with the owner of `identity`.
///
/// Encoding: `0x01 ‖ identity (32) ‖ signed prekey (100) ‖ has_opk (u8) ‖ [one-time prekey (36)]
/// ‖ ML-KEM prekey (1253)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrekeyBundle {
    /// IK of the responder.
    pub identity: IdentityKey,
    /// SPK and its signature.
    pub signed_prekey: SignedPrekeyPublic,
    /// OPK, if the relay still had one.
    pub one_time_prekey: Option<OneTimePrekeyPublic>,
    /// PQPK (one-time or last-resort) and its signature.
    pub kem_prekey: KemPrekeyPublic,
}

impl PrekeyBundle {
    /// Verifies both prekey signatures against the bundle's identity key.
    pub fn verify(&self) -> Result<(), HandshakeError> {
        self.signed_prekey.verify(&self.identity)?;
        self.kem_prekey.verify(&self.identity)
    }

    /// Encodes the bundle.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BUNDLE_VERSION];
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.signed_prekey.encode());
        out.put_bool(self.one_time_prekey.is_some());
        if let Some(opk) = &self.one_time_prekey {
            out.extend_from_slice(&opk.encode());
        }
        out.extend_from_slice(&self.kem_prekey.encode());
        out
    }

    /// Decodes a bundle (signatures are checked by [`PrekeyBundle::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != BUNDLE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let identity = IdentityKey::from_bytes(&r.array::<IDENTITY_KEY_LEN>()?)?;
        let signed_prekey = SignedPrekeyPublic::read(&mut r)?;
        let one_time_prekey = if r.bool()? {
            Some(OneTimePrekeyPublic::read(&mut r)?)
        } else {
            None
        };
        let kem_prekey = KemPrekeyPublic::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            identity,
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        })
    }
}

/// An ML-KEM-768 key pair, stored as its 64-byte FIPS 203 seed `d ‖ z`.
#[derive(Clone)]
struct KemSecret {
    seed: Zeroizing<[u8; 64]>,
    last_resort: bool,
    signature: [u8; SIGNATURE_LEN],
}

impl KemSecret {
    fn decapsulation_key(&self) -> DecapsulationKey768 {
        DecapsulationKey768::from_seed(Seed::from(*self.seed))
    }

    fn public(&self, id: u32) -> KemPrekeyPublic {
        let ek = self.decapsulation_key().encapsulation_key().to_bytes();
        let mut key = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        key.copy_from_slice(&ek);
        KemPrekeyPublic {
            id,
            last_resort: self.last_resort,
            key,
            signature: self.signature,
        }
    }
}

#[derive(Clone)]
struct SignedPrekeySecret {
    id: u32,
    pair: X25519KeyPair,
    signature: [u8; SIGNATURE_LEN],
}

/// The private halves of one identity's prekeys. The owner persists it with
/// [`PrekeyStore::snapshot`] (and encrypts that at rest).
#[derive(Clone, Default)]
pub struct PrekeyStore {
    /// Newest last.
    signed: Vec<SignedPrekeySecret>,
    one_time: BTreeMap<u32, X25519KeyPair>,
    kem: BTreeMap<u32, KemSecret>,
    next_id: u32,
}

impl fmt::Debug for PrekeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeyStore")
            .field(
                "signed",
                &self.signed.iter().map(|s| s.id).collect::<Vec<_>>(),
            )
            .field("one_time", &self.one_time.len())
            .field("kem", &self.kem.len())
            .finish_non_exhaustive()
    }
}

/// Version byte of a [`PrekeyStore`] snapshot.
pub const PREKEY_STORE_VERSION: u8 = 0x01;

impl PrekeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn allocate_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Generates a new signed prekey and makes it current; the previous ones are retained for a
    /// while ([`RETAINED_SIGNED_PREKEYS`]) so that initial messages already in flight decrypt.
    pub fn rotate_signed_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
    ) -> SignedPrekeyPublic {
        let pair = X25519KeyPair::generate(rng);
        let signature = identity.sign(&signed_message(X25519_KEY_TAG, pair.public().as_bytes()));
        let id = self.allocate_id();
        self.signed.push(SignedPrekeySecret {
            id,
            pair,
            signature,
        });
        if self.signed.len() > RETAINED_SIGNED_PREKEYS {
            self.signed.remove(0);
        }
        SignedPrekeyPublic {
            id,
            key: self.signed[self.signed.len() - 1].pair.public(),
            signature,
        }
    }

    /// The current signed prekey, if one was generated.
    pub fn signed_prekey(&self) -> Option<SignedPrekeyPublic> {
        self.signed.last().map(|s| SignedPrekeyPublic {
            id: s.id,
            key: s.pair.public(),
            signature: s.signature,
        })
    }

    /// Generates `count` one-time X25519 prekeys (fewer if the store would exceed its cap).
    pub fn generate_one_time_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        count: usize,
    ) -> Vec<OneTimePrekeyPublic> {
        let count = count.min(MAX_ONE_TIME_PREKEYS.saturating_sub(self.one_time.len()));
        (0..count)
            .map(|_| {
                let pair = X25519KeyPair::generate(rng);
                let id = self.allocate_id();
                let public = OneTimePrekeyPublic {
                    id,
                    key: pair.public(),
                };
                self.one_time.insert(id, pair);
                public
            })
            .collect()
    }

    /// Generates `count` signed one-time ML-KEM-768 prekeys (fewer if at the cap).
    pub fn generate_kem_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
        count: usize,
    ) -> Vec<KemPrekeyPublic> {
        let count = count.min(MAX_ONE_TIME_PREKEYS.saturating_sub(self.kem.len()));
        (0..count)
            .map(|_| self.new_kem(rng, identity, false))
            .collect()
    }

    /// Generates a new signed last-resort ML-KEM-768 prekey, replacing the previous one.
    pub fn rotate_last_resort_kem_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
    ) -> KemPrekeyPublic {
        // Keep the previous last-resort key too, for initial messages already in flight; only
        // the two newest survive.
        let mut last_resort: Vec<u32> = self
            .kem
            .iter()
            .filter(|(_, k)| k.last_resort)
            .map(|(id, _)| *id)
            .collect();
        while last_resort.len() > 1 {
            let id = last_resort.remove(0);
            self.kem.remove(&id);
        }
        self.new_kem(rng, identity, true)
    }

    /// The current (newest) last-resort ML-KEM prekey.
    pub fn last_resort_kem_prekey(&self) -> Option<KemPrekeyPublic> {
        self.kem
            .iter()
            .rev()
            .find(|(_, k)| k.last_resort)
            .map(|(id, k)| k.public(*id))
    }

    fn new_kem<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
        last_resort: bool,
    ) -> KemPrekeyPublic {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        let dk = DecapsulationKey768::from_seed(Seed::from(*seed));
        let ek = dk.encapsulation_key().to_bytes();
        let signature = identity.sign(&signed_message(MLKEM768_KEY_TAG, &ek));
        let id = self.allocate_id();
        let secret = KemSecret {
            seed,
            last_resort,
            signature,
        };
        let public = secret.public(id);
        self.kem.insert(id, secret);
        public
    }

    /// Deletes the oldest unused one-time prekeys (lowest ids first) so that at most
    /// `max_x25519` X25519 and `max_kem` ML-KEM one-time prekeys remain; the signed and
    /// last-resort keys are never evicted. Returns how many of each were deleted.
    ///
    /// The relay hands out the lowest id first, so the oldest keys are the ones already handed
    /// out (or never published): evicting them lets an owner whose keys are drained by strangers
    /// keep making new ones, at the cost of an initial message that arrives after its key was
    /// evicted.
    pub fn evict_oldest_one_time_prekeys(
        &mut self,
        max_x25519: usize,
        max_kem: usize,
    ) -> (usize, usize) {
        let mut x = 0;
        while self.one_time.len() > max_x25519 {
            self.one_time.pop_first();
            x += 1;
        }
        let excess = self.one_time_kem_prekey_count().saturating_sub(max_kem);
        let oldest: Vec<u32> = self
            .kem
            .iter()
            .filter(|(_, s)| !s.last_resort)
            .map(|(id, _)| *id)
            .take(excess)
            .collect();
        for id in &oldest {
            self.kem.remove(id);
        }
        (x, oldest.len())
    }

    /// Number of unused one-time X25519 prekeys.
    pub fn one_time_prekey_count(&self) -> usize {
        self.one_time.len()
    }

    /// Number of unused one-time ML-KEM prekeys.
    pub fn one_time_kem_prekey_count(&self) -> usize {
        self.kem.values().filter(|k| !k.last_resort).count()
    }

    pub(crate) fn signed_prekey_pair(&self, id: u32) -> Option<&X25519KeyPair> {
        self.signed.iter().find(|s| s.id == id).map(|s| &s.pair)
    }

    pub(crate) fn one_time_pair(&self, id: u32) -> Option<&X25519KeyPair> {
        self.one_time.get(&id)
    }

    pub(crate) fn decapsulate(
        &self,
        id: u32,
        ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let secret = self.kem.get(&id)?;
        let ct = ml_kem::ml_kem_768::Ciphertext::from(*ciphertext);
        let shared = secret.decapsulation_key().decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&shared);
        Some(out)
    }

    #[cfg(feature = "hazmat")]
    pub(crate) fn kem_seed(&self, id: u32) -> Option<[u8; 64]> {
        self.kem.get(&id).map(|k| *k.seed)
    }

    /// Deletes the one-time keys an accepted initial message used (the last-resort one stays).
    pub(crate) fn consume(&mut self, one_time_id: Option<u32>, kem_id: u32) {
        if let Some(id) = one_time_id {
            self.one_time.remove(&id);
        }
        if self.kem.get(&kem_id).is_some_and(|k| !k.last_resort) {
            self.kem.remove(&kem_id);
        }
    }

    /// A versioned snapshot of the store, secrets included: encrypt it before it touches disk.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![PREKEY_STORE_VERSION]);
        out.put_u32(self.next_id);
        out.put_u32(self.signed.len() as u32);
        for s in &self.signed {
            out.put_u32(s.id);
            out.extend_from_slice(&s.pair.secret_bytes());
            out.extend_from_slice(&s.signature);
        }
        out.put_u32(self.one_time.len() as u32);
        for (id, pair) in &self.one_time {
            out.put_u32(*id);
            out.extend_from_slice(&pair.secret_bytes());
        }
        out.put_u32(self.kem.len() as u32);
        for (id, k) in &self.kem {
            out.put_u32(*id);
            out.put_bool(k.last_resort);
            out.extend_from_slice(k.seed.as_ref());
            out.extend_from_slice(&k.signature);
        }
        out
    }

    /// Restores a store from [`PrekeyStore::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PREKEY_STORE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let next_id = r.u32()?;
        let n = r.count(RETAINED_SIGNED_PREKEYS, 100)?;
        let mut signed = Vec::with_capacity(n);
        for _ in 0..n {
            signed.push(SignedPrekeySecret {
                id: r.u32()?,
                pair: X25519KeyPair::from_secret_bytes(r.array()?),
                signature: r.array()?,
            });
        }
        let n = r.count(MAX_ONE_TIME_PREKEYS, 36)?;
        let mut one_time = BTreeMap::new();
        for _ in 0..n {
            one_time.insert(r.u32()?, X25519KeyPair::from_secret_bytes(r.array()?));
        }
        let n = r.count(MAX_ONE_TIME_PREKEYS + 2, 133)?;
        let mut kem = BTreeMap::new();
        for _ in 0..n {
            let id = r.u32()?;
            let last_resort = r.bool()?;
            let seed = Zeroizing::new(r.array()?);
            kem.insert(
                id,
                KemSecret {
                    seed,
                    last_resort,
                    signature: r.array()?,
                },
            );
        }
        r.finish()?;
        Ok(Self {
            signed,
            one_time,
            kem,
            next_id,
        })
    }
}
