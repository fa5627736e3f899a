//! Dangerous inspection of live protocol state, for test vectors and debugging only.
//!
//! Enabled by the `hazmat` feature. Everything here exposes secrets; nothing in sotto's client or
//! relay enables it.

use rand_core::CryptoRng;

use crate::error::HandshakeError;
use crate::identity::IdentityKeyPair;
use crate::prekeys::PrekeyBundle;
use crate::session::Session;

/// A copy of one party's Double Ratchet state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatchetView {
    /// RK.
    pub root_key: [u8; 32],
    /// CKs.
    pub send_chain_key: Option<[u8; 32]>,
    /// CKr.
    pub recv_chain_key: Option<[u8; 32]>,
    /// Ns.
    pub ns: u32,
    /// Nr.
    pub nr: u32,
    /// PN.
    pub pn: u32,
    /// DHs public key.
    pub dh_pub: [u8; 32],
    /// DHs private key.
    pub dh_priv: [u8; 32],
    /// DHr.
    pub remote_dh_pub: Option<[u8; 32]>,
    /// Number of stored skipped-message keys.
    pub skipped_count: usize,
}

/// The initiator's handshake secrets, as the real code path derived them.
#[derive(Debug, Clone)]
pub struct InitiatorTranscript {
    /// EK_A private key.
    pub ephemeral_priv: [u8; 32],
    /// SS from ML-KEM encapsulation.
    pub kem_shared_secret: [u8; 32],
    /// CT.
    pub kem_ciphertext: Vec<u8>,
    /// SK.
    pub shared_secret: [u8; 32],
    /// AD.
    pub associated_data: Vec<u8>,
}

/// [`Session::initiate`], also returning the handshake secrets.
pub fn initiate_with_transcript<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ours: &IdentityKeyPair,
    bundle: &PrekeyBundle,
) -> Result<(Session, InitiatorTranscript), HandshakeError> {
    let (session, init) = Session::initiate_inner(rng, ours, bundle)?;
    let transcript = InitiatorTranscript {
        ephemeral_priv: *init.ephemeral_secret,
        kem_shared_secret: *init.kem_shared_secret,
        kem_ciphertext: init.keys.kem_ciphertext.to_vec(),
        shared_secret: *init.shared_secret.as_bytes(),
        associated_data: init.associated_data.clone(),
    };
    Ok((session, transcript))
}

/// The session's ratchet state.
pub fn ratchet_state(session: &Session) -> RatchetView {
    session.ratchet().inspect()
}

/// The session's associated data.
pub fn associated_data(session: &Session) -> Vec<u8> {
    session.associated_data().to_vec()
}

/// The private halves of a responder's prekeys, as the test vectors publish them.
#[derive(Debug, Clone)]
pub struct PrekeySecrets {
    /// SPK private scalar.
    pub signed_prekey_priv: [u8; 32],
    /// OPK private scalar, if asked for and present.
    pub one_time_prekey_priv: Option<[u8; 32]>,
    /// The 64-byte FIPS 203 seed `d ‖ z` of the ML-KEM prekey.
    pub kem_seed: [u8; 64],
}

/// Looks up prekey secrets by id; `None` if any named key is missing.
pub fn prekey_secrets(
    store: &crate::PrekeyStore,
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_id: u32,
) -> Option<PrekeySecrets> {
    let signed_prekey_priv = store.signed_prekey_pair(signed_prekey_id)?.secret_bytes();
    let one_time_prekey_priv = match one_time_prekey_id {
        Some(id) => Some(store.one_time_pair(id)?.secret_bytes()),
        None => None,
    };
    Some(PrekeySecrets {
        signed_prekey_priv,
        one_time_prekey_priv,
        kem_seed: store.kem_seed(kem_prekey_id)?,
    })
}
