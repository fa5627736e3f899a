//! The PQXDH key agreement (Signal's PQXDH specification, revision 3) with X25519 and ML-KEM-768.
//!
//! ```text
//!  Alice (initiator)                                          Bob (responder, maybe offline)
//!  ─────────────────                                          ──────────────────────────────
//!                         ◀── bundle: IK_B, SPK_B+sig, [OPK_B], PQPK_B+sig  (from the relay)
//!  verify both signatures with IK_B
//!  EK_A ← fresh;  (CT, SS) ← ML-KEM.Encaps(PQPK_B)
//!  DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)
//!  DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B)   (if OPK_B)
//!  SK = KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS);  AD = IK_A ‖ IK_B
//!  first Double Ratchet message under SK, AD
//!                         ── initial message: IK_A, EK_A, ids, CT, ratchet message ──▶
//!                                                   SS = ML-KEM.Decaps(CT), same DHs → SK
//!                                                   decrypt; only then delete OPK_B, PQPK_B
//! ```
//!
//! Every DH output is checked to be contributory (not all zeros). Identity keys are Ed25519 and
//! take part in DH through their X25519 form (see [`crate::identity`]).

use ml_kem::kem::Encapsulate;
use rand_core::CryptoRng;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::error::HandshakeError;
use crate::identity::{IDENTITY_KEY_LEN, IdentityKey, IdentityKeyPair};
use crate::kdf::pqxdh_secret;
use crate::keys::{SharedSecret, X25519KeyPair, dh, x25519_public};
use crate::prekeys::{KEM_CIPHERTEXT_LEN, PrekeyBundle, PrekeyStore};

/// Type and version byte of an encoded [`PrekeyMessage`].
pub const PREKEY_MESSAGE_VERSION: u8 = 0x02;

/// The handshake part of an initial message: what the responder needs to derive SK.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialKeys {
    /// IK_A.
    pub identity: IdentityKey,
    /// EK_A: also the session's *base key*, which names it on both sides.
    pub ephemeral: PublicKey,
    /// Which signed prekey was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// Which ML-KEM prekey was used.
    pub kem_prekey_id: u32,
    /// CT: the ML-KEM-768 ciphertext.
    pub kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialKeys")
            .field("identity", &self.identity)
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("one_time_prekey_id", &self.one_time_prekey_id)
            .field("kem_prekey_id", &self.kem_prekey_id)
            .finish_non_exhaustive()
    }
}

impl InitialKeys {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(self.ephemeral.as_bytes());
        out.put_u32(self.signed_prekey_id);
        out.put_bool(self.one_time_prekey_id.is_some());
        if let Some(id) = self.one_time_prekey_id {
            out.put_u32(id);
        }
        out.put_u32(self.kem_prekey_id);
        out.extend_from_slice(self.kem_ciphertext.as_ref());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let identity = IdentityKey::from_bytes(&r.array::<IDENTITY_KEY_LEN>()?)?;
        let ephemeral = x25519_public(r.bytes(32)?)?;
        let signed_prekey_id = r.u32()?;
        let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
        let kem_prekey_id = r.u32()?;
        let kem_ciphertext = Box::new(r.array()?);
        Ok(Self {
            identity,
            ephemeral,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            kem_ciphertext,
        })
    }
}

/// What the initiator's side of PQXDH produces.
pub(crate) struct Initiated {
    pub(crate) shared_secret: SharedSecret,
    pub(crate) associated_data: Vec<u8>,
    pub(crate) keys: InitialKeys,
    /// Kept for the test vectors only.
    #[cfg_attr(not(feature = "hazmat"), allow(dead_code))]
    pub(crate) ephemeral_secret: Zeroizing<[u8; 32]>,
    #[cfg_attr(not(feature = "hazmat"), allow(dead_code))]
    pub(crate) kem_shared_secret: Zeroizing<[u8; 32]>,
}

/// AD = Encode(IK_A) ‖ Encode(IK_B), with identity keys encoded as their 32 raw Ed25519 bytes.
pub(crate) fn associated_data(initiator: &IdentityKey, responder: &IdentityKey) -> Vec<u8> {
    [
        initiator.as_bytes().as_slice(),
        responder.as_bytes().as_slice(),
    ]
    .concat()
}

/// Alice's side: verifies the bundle and derives SK, AD and the initial-message keys.
pub(crate) fn initiate<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ours: &IdentityKeyPair,
    bundle: &PrekeyBundle,
) -> Result<Initiated, HandshakeError> {
    bundle.verify()?;
    let ek = X25519KeyPair::generate(rng);
    let ek_kem = bundle.kem_prekey.encapsulation_key()?;
    let (ct, ss) = ek_kem.encapsulate_with_rng(rng);

    let spk = &bundle.signed_prekey.key;
    let nc = |_| HandshakeError::NonContributory;
    let dh1 = dh(&ours.x25519_secret(), spk).map_err(nc)?;
    let dh2 = ek.dh(&bundle.identity.to_x25519()).map_err(nc)?;
    let dh3 = ek.dh(spk).map_err(nc)?;
    let dh4 = match &bundle.one_time_prekey {
        Some(opk) => Some(ek.dh(&opk.key).map_err(nc)?),
        None => None,
    };
    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    let mut kem_shared_secret = Zeroizing::new([0u8; 32]);
    kem_shared_secret.copy_from_slice(&ss);
    let shared_secret = pqxdh_secret(&dhs, &kem_shared_secret);

    let mut kem_ciphertext = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    kem_ciphertext.copy_from_slice(&ct);
    Ok(Initiated {
        shared_secret,
        associated_data: associated_data(&ours.public(), &bundle.identity),
        keys: InitialKeys {
            identity: ours.public(),
            ephemeral: ek.public(),
            signed_prekey_id: bundle.signed_prekey.id,
            one_time_prekey_id: bundle.one_time_prekey.map(|o| o.id),
            kem_prekey_id: bundle.kem_prekey.id,
            kem_ciphertext,
        },
        ephemeral_secret: Zeroizing::new(ek.secret_bytes()),
        kem_shared_secret,
    })
}

/// What the responder's side of PQXDH produces.
pub(crate) struct Responded {
    pub(crate) shared_secret: SharedSecret,
    pub(crate) associated_data: Vec<u8>,
    pub(crate) signed_prekey: X25519KeyPair,
}

/// Bob's side: derives SK and AD from an initial message and the prekeys it names. Nothing is
/// consumed here; the caller deletes the one-time prekeys once the first message decrypted.
pub(crate) fn respond(
    ours: &IdentityKeyPair,
    store: &PrekeyStore,
    keys: &InitialKeys,
) -> Result<Responded, HandshakeError> {
    let spk = store
        .signed_prekey_pair(keys.signed_prekey_id)
        .ok_or(HandshakeError::UnknownPrekey)?;
    let ss = store
        .decapsulate(keys.kem_prekey_id, &keys.kem_ciphertext)
        .ok_or(HandshakeError::UnknownPrekey)?;
    let nc = |_| HandshakeError::NonContributory;
    let dh1 = spk.dh(&keys.identity.to_x25519()).map_err(nc)?;
    let dh2 = dh(&ours.x25519_secret(), &keys.ephemeral).map_err(nc)?;
    let dh3 = spk.dh(&keys.ephemeral).map_err(nc)?;
    let dh4 = match keys.one_time_prekey_id {
        Some(id) => {
            let opk = store
                .one_time_pair(id)
                .ok_or(HandshakeError::UnknownPrekey)?;
            Some(opk.dh(&keys.ephemeral).map_err(nc)?)
        }
        None => None,
    };
    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    Ok(Responded {
        shared_secret: pqxdh_secret(&dhs, &ss),
        associated_data: associated_data(&keys.identity, &ours.public()),
        signed_prekey: spk.clone(),
    })
}
