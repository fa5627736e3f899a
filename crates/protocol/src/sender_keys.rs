//! Sender Keys: group messages encrypted once per sender, as in Signal's and WhatsApp's groups.
//!
//! Each member owns, per group, a **sender chain**: a chain key `CK_i` advanced by the same KDF as
//! the Double Ratchet's symmetric chain (`seed_i = HMAC-SHA256(CK_i, 0x01)`,
//! `CK_{i+1} = HMAC-SHA256(CK_i, 0x02)`), and a fresh Ed25519 **signing key** for that chain. A
//! group message is padded, encrypted once with XChaCha20-Poly1305 under keys expanded from
//! `seed_i`, and signed with the chain's signing key. Members learn a chain (its id, current
//! iteration, chain key and signing public key) from a [`SenderKeyDistribution`], which travels
//! only inside the pairwise Double Ratchet sessions.
//!
//! ```text
//! message  = 0x03 ‖ group_id [16] ‖ epoch u64 ‖ chain_id u32 ‖ iteration u32 ‖ ct ‖ sig [64]
//! AD       = 0x03 ‖ group_id ‖ epoch ‖ chain_id ‖ iteration        (the 33-byte header)
//! sig      = Ed25519(chain signing key, header ‖ ct)
//! ```
//!
//! Receiving is staged like the Double Ratchet: the signature is verified first, keys are derived
//! into temporaries, and the state changes only once the AEAD has authenticated, so forgeries,
//! replays and over-long jumps leave it unchanged. Authentication is per *chain*: the signature
//! proves the message came from whoever holds the chain's signing key, which the distribution
//! message (authenticated by the pairwise session) ties to one member.

use std::collections::VecDeque;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::aead;
use crate::codec::{DecodeError, Reader, Writer};
use crate::kdf::{self, hmac_byte};
use crate::padding;

/// Type and version byte of a group message.
pub const GROUP_MESSAGE_VERSION: u8 = 0x03;
/// Type and version byte of a sender-key distribution message.
pub const DISTRIBUTION_VERSION: u8 = 0x04;
/// `info` of the message-key expansion for group messages.
pub const SENDER_KEY_INFO: &[u8] = b"sotto sender key v1 message keys";
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 16;
/// Length of a group message header (also its AEAD associated data).
pub const GROUP_HEADER_LEN: usize = 1 + GROUP_ID_LEN + 8 + 4 + 4;
/// How far ahead of the current iteration a message may be (libsignal: 25,000).
pub const MAX_JUMP: u32 = 25_000;
/// Stored skipped message seeds per chain, oldest evicted first (libsignal: 2,000).
pub const MAX_SKIPPED_SEEDS: usize = 2_000;
/// Chains remembered per sender (libsignal keeps 5 old states).
pub const MAX_CHAINS_PER_SENDER: usize = 5;
/// Length of a distribution message.
pub const DISTRIBUTION_LEN: usize = 1 + GROUP_ID_LEN + 8 + 4 + 4 + 32 + 32;

/// Why a group message was rejected. The receiving state is unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupDecryptError {
    /// Not a well-formed group message.
    #[error("malformed group message: {0}")]
    Malformed(#[from] DecodeError),
    /// No chain with this id is known for this sender (no distribution received, or rotated out).
    #[error("unknown sender chain")]
    UnknownChain,
    /// The message is for another group or roster epoch than the chain.
    #[error("message is for another group or epoch")]
    WrongGroup,
    /// Already received, or its key is no longer kept.
    #[error("duplicate or expired group message")]
    Duplicate,
    /// The iteration is more than [`MAX_JUMP`] ahead.
    #[error("group message too far ahead")]
    TooFarAhead,
    /// Bad signature, bad tag or bad padding.
    #[error("group message failed authentication")]
    AuthenticationFailed,
    /// The sender is not on the verified roster (the relay delivered for a non-member).
    #[error("sender is not a member of the verified roster")]
    NotMember,
}

/// Why a group message could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupEncryptError {
    /// The plaintext is longer than the largest padding bucket.
    #[error("plaintext too long")]
    TooLong,
    /// 2^32 messages were sent on this chain; start a new one.
    #[error("sender chain exhausted")]
    ChainExhausted,
    /// No sending chain for the current roster epoch: rotate first.
    #[error("no sender chain for this roster epoch")]
    NoSenderChain,
    /// We are not (or no longer) a member of the group.
    #[error("not a member of this group")]
    NotMember,
}

/// The header fields of a group message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The roster epoch the sender encrypted under.
    pub epoch: u64,
    /// The sender chain.
    pub chain_id: u32,
    /// The chain iteration of this message.
    pub iteration: u32,
}

impl GroupHeader {
    fn encode(&self) -> [u8; GROUP_HEADER_LEN] {
        let mut out = Vec::with_capacity(GROUP_HEADER_LEN);
        out.push(GROUP_MESSAGE_VERSION);
        out.extend_from_slice(&self.group_id);
        out.put_u64(self.epoch);
        out.put_u32(self.chain_id);
        out.put_u32(self.iteration);
        let mut array = [0u8; GROUP_HEADER_LEN];
        array.copy_from_slice(&out);
        array
    }

    /// Decodes the header at the start of a group message.
    pub fn decode(message: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(message);
        let version = r.u8()?;
        if version != GROUP_MESSAGE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        Ok(Self {
            group_id: r.array()?,
            epoch: r.u64()?,
            chain_id: r.u32()?,
            iteration: r.u32()?,
        })
    }
}

/// What a member sends, inside each pairwise session, so others can read its group messages:
/// `0x04 ‖ group_id [16] ‖ epoch u64 ‖ chain_id u32 ‖ iteration u32 ‖ CK [32] ‖ signing_pub [32]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyDistribution {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The roster epoch this chain belongs to.
    pub epoch: u64,
    /// The chain.
    pub chain_id: u32,
    /// The iteration `chain_key` is for.
    pub iteration: u32,
    chain_key: Zeroizing<[u8; 32]>,
    /// The chain's Ed25519 signing public key.
    pub signing_key: [u8; 32],
}

impl fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("epoch", &self.epoch)
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl SenderKeyDistribution {
    /// Encodes the message. It contains a chain key: send it only inside a pairwise session.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(DISTRIBUTION_LEN));
        out.push(DISTRIBUTION_VERSION);
        out.extend_from_slice(&self.group_id);
        out.put_u64(self.epoch);
        out.put_u32(self.chain_id);
        out.put_u32(self.iteration);
        out.extend_from_slice(self.chain_key.as_ref());
        out.extend_from_slice(&self.signing_key);
        out
    }

    /// Decodes a distribution message, checking that the signing key is a valid Ed25519 point.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DISTRIBUTION_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let group_id = r.array()?;
        let epoch = r.u64()?;
        let chain_id = r.u32()?;
        let iteration = r.u32()?;
        let chain_key = Zeroizing::new(r.array()?);
        let signing_key: [u8; 32] = r.array()?;
        verifying_key(&signing_key)?;
        r.finish()?;
        Ok(Self {
            group_id,
            epoch,
            chain_id,
            iteration,
            chain_key,
            signing_key,
        })
    }
}

fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, DecodeError> {
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| DecodeError::InvalidKey("sender signing key"))?;
    if key.is_weak() {
        return Err(DecodeError::InvalidKey(
            "sender signing key has small order",
        ));
    }
    Ok(key)
}

/// Our own sending chain in one group.
#[derive(Clone)]
pub struct SenderChain {
    group_id: [u8; GROUP_ID_LEN],
    epoch: u64,
    chain_id: u32,
    iteration: u32,
    chain_key: Zeroizing<[u8; 32]>,
    signing: SigningKey,
}

impl fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderChain")
            .field("epoch", &self.epoch)
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

/// Version byte of a [`SenderChain`] snapshot.
pub const SENDER_CHAIN_SNAPSHOT_VERSION: u8 = 0x01;

impl SenderChain {
    /// Starts a fresh chain (new chain key, new signing key) for `group_id` at roster `epoch`.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        group_id: [u8; GROUP_ID_LEN],
        epoch: u64,
    ) -> Self {
        let mut chain_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(chain_key.as_mut());
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_parts(group_id, epoch, rng.next_u32(), 0, *chain_key, &seed)
    }

    /// Builds a chain from explicit parts (for tests and vectors).
    pub fn from_parts(
        group_id: [u8; GROUP_ID_LEN],
        epoch: u64,
        chain_id: u32,
        iteration: u32,
        chain_key: [u8; 32],
        signing_seed: &[u8; 32],
    ) -> Self {
        Self {
            group_id,
            epoch,
            chain_id,
            iteration,
            chain_key: Zeroizing::new(chain_key),
            signing: SigningKey::from_bytes(signing_seed),
        }
    }

    /// The distribution message for this chain at its current iteration.
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            group_id: self.group_id,
            epoch: self.epoch,
            chain_id: self.chain_id,
            iteration: self.iteration,
            chain_key: self.chain_key.clone(),
            signing_key: self.signing.verifying_key().to_bytes(),
        }
    }

    /// Number of messages sent on this chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The roster epoch of this chain.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Pads, encrypts and signs one group message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupEncryptError> {
        let next = self
            .iteration
            .checked_add(1)
            .ok_or(GroupEncryptError::ChainExhausted)?;
        let padded =
            Zeroizing::new(padding::pad(plaintext).map_err(|_| GroupEncryptError::TooLong)?);
        let seed = Zeroizing::new(hmac_byte(&self.chain_key, kdf::MESSAGE_KEY_CONSTANT));
        let header = GroupHeader {
            group_id: self.group_id,
            epoch: self.epoch,
            chain_id: self.chain_id,
            iteration: self.iteration,
        }
        .encode();
        let mut out = Vec::with_capacity(GROUP_HEADER_LEN + padded.len() + 16 + 64);
        out.extend_from_slice(&header);
        out.extend_from_slice(&padded);
        let keys = kdf::message_keys(&seed, SENDER_KEY_INFO);
        aead::seal_in_place(&keys, &mut out, GROUP_HEADER_LEN, &[&header])
            .ok_or(GroupEncryptError::TooLong)?;
        let signature = self.signing.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        *self.chain_key = hmac_byte(&self.chain_key, kdf::CHAIN_KEY_CONSTANT);
        self.iteration = next;
        Ok(out)
    }

    /// A versioned snapshot (secrets included: encrypt before storing).
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![SENDER_CHAIN_SNAPSHOT_VERSION]);
        out.extend_from_slice(&self.group_id);
        out.put_u64(self.epoch);
        out.put_u32(self.chain_id);
        out.put_u32(self.iteration);
        out.extend_from_slice(self.chain_key.as_ref());
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// Restores a chain from [`SenderChain::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != SENDER_CHAIN_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let (group_id, epoch, chain_id, iteration) = (r.array()?, r.u64()?, r.u32()?, r.u32()?);
        let chain_key: Zeroizing<[u8; 32]> = Zeroizing::new(r.array()?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(r.array()?);
        r.finish()?;
        Ok(Self::from_parts(
            group_id, epoch, chain_id, iteration, *chain_key, &seed,
        ))
    }
}

/// One remote chain as a receiver knows it.
#[derive(Clone)]
struct ReceiverChain {
    group_id: [u8; GROUP_ID_LEN],
    epoch: u64,
    chain_id: u32,
    iteration: u32,
    chain_key: Zeroizing<[u8; 32]>,
    signing: VerifyingKey,
    /// (iteration, message seed), oldest first.
    skipped: VecDeque<(u32, Zeroizing<[u8; 32]>)>,
}

/// Everything a member knows about one other member's sender chains in one group.
#[derive(Clone, Default)]
pub struct SenderKeyRecord {
    /// Newest last; at most [`MAX_CHAINS_PER_SENDER`].
    chains: Vec<ReceiverChain>,
}

impl fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyRecord")
            .field(
                "chains",
                &self.chains.iter().map(|c| c.chain_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Version byte of a [`SenderKeyRecord`] snapshot.
pub const SENDER_RECORD_SNAPSHOT_VERSION: u8 = 0x01;

impl SenderKeyRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a chain from a distribution message received over the sender's pairwise
    /// session. A chain already known is only moved forward, never back (a replayed old
    /// distribution cannot reopen consumed iterations).
    pub fn process_distribution(&mut self, d: &SenderKeyDistribution) -> Result<(), DecodeError> {
        let signing = verifying_key(&d.signing_key)?;
        let already_ahead = self.chains.iter().any(|c| {
            c.chain_id == d.chain_id
                && c.group_id == d.group_id
                && c.signing == signing
                && c.iteration >= d.iteration
        });
        if already_ahead {
            return Ok(());
        }
        self.chains
            .retain(|c| !(c.chain_id == d.chain_id && c.group_id == d.group_id));
        self.chains.push(ReceiverChain {
            group_id: d.group_id,
            epoch: d.epoch,
            chain_id: d.chain_id,
            iteration: d.iteration,
            chain_key: d.chain_key.clone(),
            signing,
            skipped: VecDeque::new(),
        });
        if self.chains.len() > MAX_CHAINS_PER_SENDER {
            self.chains.remove(0);
        }
        Ok(())
    }

    /// Forgets every chain (when the sender is removed from the group).
    pub fn clear(&mut self) {
        self.chains.clear();
    }

    /// Whether a chain for `group_id` at roster `epoch` is known.
    pub fn has_epoch(&self, group_id: &[u8; GROUP_ID_LEN], epoch: u64) -> bool {
        self.chains
            .iter()
            .any(|c| c.group_id == *group_id && c.epoch == epoch)
    }

    /// Whether any chain is known.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Verifies and decrypts one group message. The record changes only on success.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, GroupDecryptError> {
        let header = GroupHeader::decode(message)?;
        if message.len() < GROUP_HEADER_LEN + padding::MIN_PADDED_LEN + 16 + 64 {
            return Err(DecodeError::Truncated.into());
        }
        let (signed, signature) = message.split_at(message.len() - 64);
        let signature = Signature::from_slice(signature)
            .map_err(|_| GroupDecryptError::AuthenticationFailed)?;
        let chain = self
            .chains
            .iter_mut()
            .rev()
            .find(|c| c.chain_id == header.chain_id && c.group_id == header.group_id)
            .ok_or(GroupDecryptError::UnknownChain)?;
        if chain.epoch != header.epoch {
            return Err(GroupDecryptError::WrongGroup);
        }
        chain
            .signing
            .verify_strict(signed, &signature)
            .map_err(|_| GroupDecryptError::AuthenticationFailed)?;
        let (header_bytes, ciphertext) = signed.split_at(GROUP_HEADER_LEN);

        // A message whose seed we kept.
        if let Some(index) = chain
            .skipped
            .iter()
            .position(|(i, _)| *i == header.iteration)
        {
            let plaintext = open(&chain.skipped[index].1, header_bytes, ciphertext)?;
            chain.skipped.remove(index);
            return Ok(plaintext);
        }
        if header.iteration < chain.iteration {
            return Err(GroupDecryptError::Duplicate);
        }
        if header.iteration - chain.iteration > MAX_JUMP {
            return Err(GroupDecryptError::TooFarAhead);
        }
        // Stage: derive forward into temporaries.
        let mut ck = chain.chain_key.clone();
        let mut staged = Vec::new();
        for i in chain.iteration..header.iteration {
            // Only the newest MAX_SKIPPED_SEEDS can ever be kept; skip the work for the rest.
            if header.iteration - i <= MAX_SKIPPED_SEEDS as u32 {
                staged.push((i, Zeroizing::new(hmac_byte(&ck, kdf::MESSAGE_KEY_CONSTANT))));
            }
            *ck = hmac_byte(&ck, kdf::CHAIN_KEY_CONSTANT);
        }
        let seed = Zeroizing::new(hmac_byte(&ck, kdf::MESSAGE_KEY_CONSTANT));
        let plaintext = open(&seed, header_bytes, ciphertext)?;
        let next = header
            .iteration
            .checked_add(1)
            .ok_or(GroupDecryptError::TooFarAhead)?;
        // Commit.
        *chain.chain_key = hmac_byte(&ck, kdf::CHAIN_KEY_CONSTANT);
        chain.iteration = next;
        for s in staged {
            if chain.skipped.len() == MAX_SKIPPED_SEEDS {
                chain.skipped.pop_front();
            }
            chain.skipped.push_back(s);
        }
        Ok(plaintext)
    }

    /// Number of stored skipped seeds over all chains.
    pub fn skipped_count(&self) -> usize {
        self.chains.iter().map(|c| c.skipped.len()).sum()
    }

    /// A versioned snapshot (secrets included: encrypt before storing).
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![SENDER_RECORD_SNAPSHOT_VERSION]);
        out.put_u32(self.chains.len() as u32);
        for c in &self.chains {
            out.extend_from_slice(&c.group_id);
            out.put_u64(c.epoch);
            out.put_u32(c.chain_id);
            out.put_u32(c.iteration);
            out.extend_from_slice(c.chain_key.as_ref());
            out.extend_from_slice(c.signing.as_bytes());
            out.put_u32(c.skipped.len() as u32);
            for (i, seed) in &c.skipped {
                out.put_u32(*i);
                out.extend_from_slice(seed.as_ref());
            }
        }
        out
    }

    /// Restores a record from [`SenderKeyRecord::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != SENDER_RECORD_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let n = r.count(MAX_CHAINS_PER_SENDER, 100)?;
        let mut chains = Vec::with_capacity(n);
        for _ in 0..n {
            let (group_id, epoch, chain_id, iteration) = (r.array()?, r.u64()?, r.u32()?, r.u32()?);
            let chain_key = Zeroizing::new(r.array()?);
            let signing = verifying_key(&r.array()?)?;
            let k = r.count(MAX_SKIPPED_SEEDS, 36)?;
            let mut skipped = VecDeque::with_capacity(k);
            for _ in 0..k {
                skipped.push_back((r.u32()?, Zeroizing::new(r.array()?)));
            }
            chains.push(ReceiverChain {
                group_id,
                epoch,
                chain_id,
                iteration,
                chain_key,
                signing,
                skipped,
            });
        }
        r.finish()?;
        Ok(Self { chains })
    }
}

fn open(seed: &[u8; 32], header: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, GroupDecryptError> {
    let padded = aead::open(
        &kdf::message_keys(seed, SENDER_KEY_INFO),
        ciphertext,
        &[header],
    )
    .ok_or(GroupDecryptError::AuthenticationFailed)?;
    padding::unpad(padded).ok_or(GroupDecryptError::AuthenticationFailed)
}

/// Exposes a chain's current chain key and signing seed, for the published test vectors.
#[cfg(feature = "hazmat")]
impl SenderChain {
    /// The current chain key.
    pub fn hazmat_chain_key(&self) -> [u8; 32] {
        *self.chain_key
    }

    /// The Ed25519 seed of the chain's signing key.
    pub fn hazmat_signing_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
}
