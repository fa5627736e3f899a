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
