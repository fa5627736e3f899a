//! Sessions: a PQXDH handshake followed by the Double Ratchet, with padding and envelopes.
//!
//! An initiator's session wraps every message in a [`PrekeyMessage`] (the handshake keys plus the
//! ratchet message) until it has received its first reply, because the responder may not have
//! seen any of the earlier ones. After that, messages are bare [`Envelope::Ratchet`] messages.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::error::{DecryptError, EncryptError, HandshakeError};
use crate::handshake::{self, InitialKeys, PREKEY_MESSAGE_VERSION};
use crate::identity::{IDENTITY_KEY_LEN, IdentityKey, IdentityKeyPair};
use crate::padding::{self, MAX_PADDED_LEN};
use crate::prekeys::{PrekeyBundle, PrekeyStore};
use crate::ratchet::{HEADER_LEN, HEADER_VERSION, RatchetState, TAG_LEN};

/// Version byte of a session snapshot.
pub const SESSION_SNAPSHOT_VERSION: u8 = 0x01;
/// The largest ratchet message: a header and the largest padded plaintext with its tag.
pub const MAX_RATCHET_MESSAGE_LEN: usize = HEADER_LEN + MAX_PADDED_LEN + TAG_LEN;

/// A Double Ratchet message: `header (41) ‖ ciphertext`. Its first byte is `0x01`.
#[derive(Clone, PartialEq, Eq)]
pub struct RatchetMessage(Vec<u8>);

impl RatchetMessage {
    /// Checks the outer shape (version, header, length bounds) of an untrusted message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN + padding::MIN_PADDED_LEN + TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > MAX_RATCHET_MESSAGE_LEN {
            return Err(DecodeError::OutOfRange("ratchet message length"));
        }
        crate::ratchet::Header::decode(&mut Reader::new(bytes))?;
        Ok(Self(bytes.to_vec()))
    }

    /// The encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The decoded header.
    pub fn header(&self) -> crate::ratchet::Header {
        // `decode` and our own encryption both guarantee a valid header; fall back to a
        // placeholder rather than panic if that invariant were ever broken.
        crate::ratchet::Header::decode(&mut Reader::new(&self.0)).unwrap_or(
            crate::ratchet::Header {
                dh: x25519_dalek::PublicKey::from([0; 32]),
                pn: 0,
                n: 0,
            },
        )
    }
}

impl fmt::Debug for RatchetMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RatchetMessage({} bytes)", self.0.len())
    }
}

/// An initial message: `0x02 ‖ IK_A (32) ‖ EK_A (32) ‖ SPK id (u32) ‖ has_opk (u8) ‖ [OPK id
/// (u32)] ‖ PQPK id (u32) ‖ CT (1088) ‖ ratchet message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrekeyMessage {
    /// The PQXDH keys.
    pub keys: InitialKeys,
    /// The Double Ratchet message that rides along.
    pub message: RatchetMessage,
}

impl PrekeyMessage {
    /// The base key (EK_A) naming the session this message belongs to.
    pub fn base_key(&self) -> [u8; 32] {
        self.keys.ephemeral.to_bytes()
    }
}

/// Any message of a pairwise session, as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// An initial message that can establish a session.
    Prekey(Box<PrekeyMessage>),
    /// A message on an established session.
    Ratchet(RatchetMessage),
}

impl Envelope {
    /// Decodes an untrusted envelope. Total: never panics, allocates at most the input length.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&HEADER_VERSION) => Ok(Self::Ratchet(RatchetMessage::decode(bytes)?)),
            Some(&PREKEY_MESSAGE_VERSION) => {
                let mut r = Reader::new(&bytes[1..]);
                let keys = InitialKeys::read(&mut r)?;
                let message = RatchetMessage::decode(r.rest())?;
                Ok(Self::Prekey(Box::new(PrekeyMessage { keys, message })))
            }
            Some(&other) => Err(DecodeError::UnknownVersion(other)),
            None => Err(DecodeError::Truncated),
        }
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Ratchet(m) => m.0.clone(),
            Self::Prekey(p) => encode_prekey_message(&p.keys, &p.message),
        }
    }
}

fn encode_prekey_message(keys: &InitialKeys, message: &RatchetMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 1200 + message.0.len());
    out.push(PREKEY_MESSAGE_VERSION);
    keys.write(&mut out);
    out.extend_from_slice(&message.0);
    out
}

/// A pairwise end-to-end encrypted session.
#[derive(Clone)]
pub struct Session {
    local: IdentityKey,
    remote: IdentityKey,
    base_key: [u8; 32],
    associated_data: Vec<u8>,
    ratchet: RatchetState,
    /// Present on the initiator's side until the first message from the responder arrives.
    pending: Option<InitialKeys>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("initial_message_pending", &self.pending.is_some())
            .field("ratchet", &self.ratchet)
            .finish()
    }
}

impl Session {
    /// Starts a session with the owner of `bundle` (PQXDH initiator, then RatchetInitAlice).
    /// Verifies both prekey signatures first.
    pub fn initiate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        ours: &IdentityKeyPair,
        bundle: &PrekeyBundle,
    ) -> Result<Self, HandshakeError> {
        Ok(Self::initiate_inner(rng, ours, bundle)?.0)
    }

    pub(crate) fn initiate_inner<R: CryptoRng + ?Sized>(
        rng: &mut R,
        ours: &IdentityKeyPair,
        bundle: &PrekeyBundle,
    ) -> Result<(Self, handshake::Initiated), HandshakeError> {
        let init = handshake::initiate(rng, ours, bundle)?;
        let ratchet = RatchetState::init_alice(rng, &init.shared_secret, bundle.signed_prekey.key)
            .map_err(|_| HandshakeError::NonContributory)?;
        let session = Self {
            local: ours.public(),
            remote: bundle.identity,
            base_key: init.keys.ephemeral.to_bytes(),
            associated_data: init.associated_data.clone(),
            ratchet,
            pending: Some(init.keys.clone()),
        };
        Ok((session, init))
    }

    /// Answers an initial message (PQXDH responder, then RatchetInitBob and the first decrypt).
    /// Returns the new session and the first plaintext. The one-time prekeys the message used
    /// are deleted from `store` only if the message authenticated, so forgeries cannot burn them.
    pub fn respond<R: CryptoRng + ?Sized>(
        rng: &mut R,
        ours: &IdentityKeyPair,
        store: &mut PrekeyStore,
        message: &PrekeyMessage,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let responded = handshake::respond(ours, store, &message.keys)?;
        let ratchet = RatchetState::init_bob(&responded.shared_secret, responded.signed_prekey);
        let mut session = Self {
            local: ours.public(),
            remote: message.keys.identity,
            base_key: message.base_key(),
            associated_data: responded.associated_data,
            ratchet,
            pending: None,
        };
        let plaintext = session.decrypt_ratchet(rng, &message.message)?;
        store.consume(message.keys.one_time_prekey_id, message.keys.kem_prekey_id);
        Ok((session, plaintext))
    }

    /// Pads and encrypts `plaintext`, returning the encoded [`Envelope`] to send.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let padded = Zeroizing::new(padding::pad(plaintext)?);
        let message = RatchetMessage(self.ratchet.encrypt(&padded, &self.associated_data)?);
        Ok(match &self.pending {
            Some(keys) => encode_prekey_message(keys, &message),
            None => message.0,
        })
    }

    /// Decrypts an envelope of this session. On any error the session is unchanged.
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        envelope: &Envelope,
    ) -> Result<Vec<u8>, DecryptError> {
        match envelope {
            Envelope::Ratchet(m) => self.decrypt_ratchet(rng, m),
            Envelope::Prekey(p)
                if p.base_key() == self.base_key && p.keys.identity == self.remote =>
            {
                self.decrypt_ratchet(rng, &p.message)
            }
            Envelope::Prekey(_) => Err(DecryptError::AuthenticationFailed),
        }
    }

    fn decrypt_ratchet<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        message: &RatchetMessage,
    ) -> Result<Vec<u8>, DecryptError> {
        // Padding is inside the authenticated plaintext; a bad one (a buggy or malicious peer) is
        // rejected like a forgery, before the ratchet commits.
        let plaintext =
            self.ratchet
                .decrypt(rng, &message.0, &self.associated_data, padding::unpad)?;
        self.pending = None;
        Ok(plaintext)
    }

    /// Our identity.
    pub fn local_identity(&self) -> IdentityKey {
        self.local
    }

    /// The peer's identity, as authenticated by the handshake.
    pub fn remote_identity(&self) -> IdentityKey {
        self.remote
    }

    /// EK_A, which names this session on both sides (to match incoming initial messages).
    pub fn base_key(&self) -> [u8; 32] {
        self.base_key
    }

    /// Whether messages still carry the handshake (no reply received yet).
    pub fn is_initial_message_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Number of skipped-message keys currently stored.
    pub fn skipped_key_count(&self) -> usize {
        self.ratchet.skipped_count()
    }

    /// Our current ratchet public key (public; useful in logs and demos).
    pub fn ratchet_public_key(&self) -> [u8; 32] {
        self.ratchet.dh_public().to_bytes()
    }

    /// A versioned snapshot of the whole session, secrets included: encrypt it before storing.
    /// [`Session::restore`] continues exactly where this left off.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        out.push(SESSION_SNAPSHOT_VERSION);
        out.extend_from_slice(self.local.as_bytes());
        out.extend_from_slice(self.remote.as_bytes());
        out.extend_from_slice(&self.base_key);
        out.put_var_bytes(&self.associated_data);
        out.put_bool(self.pending.is_some());
        if let Some(keys) = &self.pending {
            keys.write(&mut out);
        }
        self.ratchet.encode(&mut out);
        out
    }

    /// Restores a session from [`Session::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != SESSION_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let local = IdentityKey::from_bytes(&r.array::<IDENTITY_KEY_LEN>()?)?;
        let remote = IdentityKey::from_bytes(&r.array::<IDENTITY_KEY_LEN>()?)?;
        let base_key = r.array()?;
        let associated_data = r.var_bytes(2 * IDENTITY_KEY_LEN)?.to_vec();
        let pending = if r.bool()? {
            Some(InitialKeys::read(&mut r)?)
        } else {
            None
        };
        let ratchet = RatchetState::decode(&mut r)?;
        r.finish()?;
        Ok(Self {
            local,
            remote,
            base_key,
            associated_data,
            ratchet,
            pending,
        })
    }

    #[cfg(feature = "hazmat")]
    pub(crate) fn ratchet(&self) -> &RatchetState {
        &self.ratchet
    }

    #[cfg(feature = "hazmat")]
    pub(crate) fn associated_data(&self) -> &[u8] {
        &self.associated_data
    }
}
