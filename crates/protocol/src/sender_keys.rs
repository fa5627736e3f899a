//! Sender Keys: group messages encrypted once per sender, as in Signal's and WhatsApp's groups,
//! with every message bound to its sender's identity and to the roster it was sent under.
//!
//! Each member owns, per group, a **sender chain**: a chain key `CK_i` advanced by the same KDF as
//! the Double Ratchet's symmetric chain (`seed_i = HMAC-SHA256(CK_i, 0x01)`,
//! `CK_{i+1} = HMAC-SHA256(CK_i, 0x02)`), and a fresh Ed25519 **signing key** for that chain. A
//! chain belongs to one sender identity and one roster (its hash). A group message is padded,
//! encrypted once with XChaCha20-Poly1305 under keys expanded from `seed_i`, and signed with the
//! chain's signing key. Members learn a chain from a [`SenderKeyDistribution`], which travels only
//! inside the pairwise Double Ratchet sessions.
//!
//! ```text
//! header   = 0x07 ‖ group_id [16] ‖ epoch u64 ‖ roster_hash [32] ‖ chain_id u32 ‖ iteration u32   (65 B)
//! AD       = header ‖ sender_identity [32]          (the sender is not on the wire: the receiver
//!                                                    puts in the member it installed the chain for)
//! message  = header ‖ ct ‖ sig [64]                 sig = Ed25519(chain signing key, AD ‖ ct)
//! ```
//!
//! Binding the sender's identity key into the AD and the signed bytes means a ciphertext can
//! only ever be read as its real sender's: re-uploaded by another member, it fails both the AEAD
//! and the signature. A distribution carries the sender's identity and a signature by the chain's
//! signing key over it (a proof of possession), so a member who forwards another's distribution
//! as her own is refused whether she keeps or rewrites the identity in it.
//!
//! Receiving is staged like the Double Ratchet: the signature is verified first, keys are derived
//! into temporaries, and the state changes only once the AEAD has authenticated, so forgeries,
//! replays and over-long jumps leave it unchanged.
//!
//! When a sender starts a new chain, its distribution names its previous chain and how many
//! messages it sent on it (`prev_chain_id`, `prev_end`). The receiver then accepts on that chain
//! only the iterations below `prev_end` (messages still in flight) and forgets every other older
//! chain of that sender: a stolen copy of the sender's old state cannot forge past the rotation.

use std::collections::VecDeque;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::aead;
use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{IdentityKey, strict_ed25519_key};
use crate::kdf::{self, hmac_byte};
use crate::padding;

/// Type and version byte of a group message (version 2: bound to sender and roster).
pub const GROUP_MESSAGE_VERSION: u8 = 0x07;
/// Type and version byte of a sender-key distribution message (version 2).
pub const DISTRIBUTION_VERSION: u8 = 0x08;
/// The type byte of the version-1 group messages of earlier sotto releases (no longer read).
pub const LEGACY_GROUP_MESSAGE_VERSION: u8 = 0x03;
/// `info` of the message-key expansion for group messages.
pub const SENDER_KEY_INFO: &[u8] = b"sotto sender key v2 message keys";
/// Domain-separation prefix of a distribution's binding signature.
pub const BINDING_TAG: &[u8] = b"sotto-sender-key-v2";
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 16;
/// Length of a roster hash.
pub const ROSTER_HASH_LEN: usize = 32;
/// Length of a group message header.
pub const GROUP_HEADER_LEN: usize = 1 + GROUP_ID_LEN + 8 + ROSTER_HASH_LEN + 4 + 4;
/// Length of a group message's AEAD associated data: the header and the sender's identity key.
pub const GROUP_AD_LEN: usize = GROUP_HEADER_LEN + 32;
/// How far ahead of the next expected iteration a message may be (libsignal: 25,000).
pub const MAX_JUMP: u32 = 25_000;
/// Stored skipped message seeds per chain, oldest evicted first (libsignal: 2,000).
pub const MAX_SKIPPED_SEEDS: usize = 2_000;
/// Chains kept per sender: the current one and the previous one (for messages in flight).
pub const MAX_CHAINS_PER_SENDER: usize = 2;
/// Retired chain ids remembered per sender, so an old distribution cannot reinstall one.
pub const MAX_RETIRED_CHAINS: usize = 16;
/// Length of a distribution message.
pub const DISTRIBUTION_LEN: usize =
    1 + GROUP_ID_LEN + 32 + 8 + ROSTER_HASH_LEN + 4 + 4 + 32 + 32 + 4 + 4 + 64;
/// Length of a group message's signature.
pub const GROUP_SIGNATURE_LEN: usize = 64;

type Secret = Box<Zeroizing<[u8; 32]>>;

fn secret(bytes: [u8; 32]) -> Secret {
    Box::new(Zeroizing::new(bytes))
}

/// Why a group message was rejected. The receiving state is unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupDecryptError {
    /// Not a well-formed group message.
    #[error("malformed group message: {0}")]
    Malformed(#[from] DecodeError),
    /// No chain with this id is known for this sender, for the current roster (its key has not
    /// arrived yet, or was rotated out).
    #[error("unknown sender chain")]
    UnknownChain,
    /// The message is for another group than the chain.
    #[error("message is for another group")]
    WrongGroup,
    /// The message names another roster than the chain it claims (a chain reused under another
    /// roster, or a forgery).
    #[error("message is for another roster than its sender chain")]
    WrongRoster,
    /// The message is for a later roster than ours: a roster change has not reached us yet.
    #[error("message is for a later roster than ours")]
    RosterAhead,
    /// The message is for an earlier roster whose chain we no longer (or never) held.
    #[error("message is for an earlier roster")]
    OldRoster,
    /// The message is for a roster we never had (a fork of the roster).
    #[error("message is for a roster this member does not know")]
    UnknownRoster,
    /// The sender started a newer chain and this message is past the end it announced for this
    /// one.
    #[error("sender chain was retired")]
    Retired,
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
    /// No sending chain for the current roster: rotate first.
    #[error("no sender chain for this roster")]
    NoSenderChain,
    /// We are not (or no longer) a member of the group.
    #[error("not a member of this group")]
    NotMember,
    /// Another member showed a later roster than ours (a roster change, maybe a removal, has not
    /// reached us): sending waits until it does, or the owner's roster arrives.
    #[error("the roster moved on and the change has not reached us yet: sending paused")]
    RosterBehind,
}

/// The header fields of a group message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The roster epoch the sender encrypted under.
    pub epoch: u64,
    /// The hash of the roster the sender encrypted under.
    pub roster_hash: [u8; ROSTER_HASH_LEN],
    /// The sender chain.
    pub chain_id: u32,
    /// The chain iteration of this message.
    pub iteration: u32,
}

impl GroupHeader {
    fn encode(&self) -> [u8; GROUP_HEADER_LEN] {
        let mut out = [0u8; GROUP_HEADER_LEN];
        out[0] = GROUP_MESSAGE_VERSION;
        out[1..17].copy_from_slice(&self.group_id);
        out[17..25].copy_from_slice(&self.epoch.to_be_bytes());
        out[25..57].copy_from_slice(&self.roster_hash);
        out[57..61].copy_from_slice(&self.chain_id.to_be_bytes());
        out[61..65].copy_from_slice(&self.iteration.to_be_bytes());
        out
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
            roster_hash: r.array()?,
            chain_id: r.u32()?,
            iteration: r.u32()?,
        })
    }
}

/// `AD = header ‖ sender_identity`.
fn associated_data(header: &[u8], sender: &IdentityKey) -> [u8; GROUP_AD_LEN] {
    let mut ad = [0u8; GROUP_AD_LEN];
    ad[..GROUP_HEADER_LEN].copy_from_slice(header);
    ad[GROUP_HEADER_LEN..].copy_from_slice(sender.as_bytes());
    ad
}

/// The bytes a distribution's binding signature covers.
fn binding_message(
    group_id: &[u8; GROUP_ID_LEN],
    sender: &IdentityKey,
    epoch: u64,
    roster_hash: &[u8; ROSTER_HASH_LEN],
    chain_id: u32,
    signing_key: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(BINDING_TAG.len() + 16 + 32 + 8 + 32 + 4 + 32);
    m.extend_from_slice(BINDING_TAG);
    m.extend_from_slice(group_id);
    m.extend_from_slice(sender.as_bytes());
    m.put_u64(epoch);
    m.extend_from_slice(roster_hash);
    m.put_u32(chain_id);
    m.extend_from_slice(signing_key);
    m
}

/// What a member sends, inside each pairwise session, so others can read its group messages:
///
/// ```text
/// 0x08 ‖ group_id [16] ‖ sender [32] ‖ epoch u64 ‖ roster_hash [32] ‖ chain_id u32 ‖ iteration u32
///      ‖ CK [32] ‖ signing_pub [32] ‖ prev_chain_id u32 ‖ prev_end u32 ‖ binding_sig [64]   (233 B)
/// binding_sig = Ed25519(chain signing key, "sotto-sender-key-v2" ‖ group_id ‖ sender ‖ epoch
///                       ‖ roster_hash ‖ chain_id ‖ signing_pub)
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyDistribution {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The member who owns the chain.
    pub sender: IdentityKey,
    /// The roster epoch this chain belongs to.
    pub epoch: u64,
    /// The hash of the roster this chain belongs to.
    pub roster_hash: [u8; ROSTER_HASH_LEN],
    /// The chain.
    pub chain_id: u32,
    /// The iteration `chain_key` is for.
    pub iteration: u32,
    chain_key: Zeroizing<[u8; 32]>,
    /// The chain's Ed25519 signing public key.
    pub signing_key: [u8; 32],
    /// The sender's previous chain in this group (0 when there was none).
    pub prev_chain_id: u32,
    /// How many messages the sender sent on its previous chain: later iterations of it are refused.
    pub prev_end: u32,
    binding: [u8; 64],
}

impl fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("sender", &self.sender)
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
        out.extend_from_slice(self.sender.as_bytes());
        out.put_u64(self.epoch);
        out.extend_from_slice(&self.roster_hash);
        out.put_u32(self.chain_id);
        out.put_u32(self.iteration);
        out.extend_from_slice(self.chain_key.as_ref());
        out.extend_from_slice(&self.signing_key);
        out.put_u32(self.prev_chain_id);
        out.put_u32(self.prev_end);
        out.extend_from_slice(&self.binding);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != DISTRIBUTION_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let group_id = r.array()?;
        let sender = IdentityKey::from_bytes(&r.array()?)?;
        let epoch = r.u64()?;
        let roster_hash = r.array()?;
        let chain_id = r.u32()?;
        let iteration = r.u32()?;
        let chain_key = Zeroizing::new(r.array()?);
        let signing_key: [u8; 32] = r.array()?;
        let prev_chain_id = r.u32()?;
        let prev_end = r.u32()?;
        let binding: [u8; 64] = r.array()?;
        let d = Self {
            group_id,
            sender,
            epoch,
            roster_hash,
            chain_id,
            iteration,
            chain_key,
            signing_key,
            prev_chain_id,
            prev_end,
            binding,
        };
        d.verifying_key()?
            .verify_strict(
                &binding_message(
                    &group_id,
                    &sender,
                    epoch,
                    &roster_hash,
                    chain_id,
                    &signing_key,
                ),
                &Signature::from_bytes(&binding),
            )
            .map_err(|_| DecodeError::InvalidKey("sender key binding signature"))?;
        Ok(d)
    }

    /// Decodes a distribution message: the signing key must be a valid Ed25519 point and its
    /// binding signature over the sender's identity must verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, DecodeError> {
        signing_public(&self.signing_key)
    }
}

fn signing_public(bytes: &[u8; 32]) -> Result<VerifyingKey, DecodeError> {
    strict_ed25519_key(bytes).map_err(|_| DecodeError::InvalidKey("sender signing key"))
}

/// Our own sending chain in one group.
#[derive(Clone)]
pub struct SenderChain {
    group_id: [u8; GROUP_ID_LEN],
    sender: IdentityKey,
    epoch: u64,
    roster_hash: [u8; ROSTER_HASH_LEN],
    chain_id: u32,
    iteration: u32,
    chain_key: Secret,
    signing: SigningKey,
    prev_chain_id: u32,
    prev_end: u32,
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
pub const SENDER_CHAIN_SNAPSHOT_VERSION: u8 = 0x02;
/// Length of a [`SenderChain`] snapshot.
pub const SENDER_CHAIN_SNAPSHOT_LEN: usize =
    1 + GROUP_ID_LEN + 32 + 8 + 32 + 4 + 4 + 32 + 32 + 4 + 4;

/// Where a chain sits: its group, owner and roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainContext {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The member who owns the chain.
    pub sender: IdentityKey,
    /// The roster epoch.
    pub epoch: u64,
    /// The roster hash.
    pub roster_hash: [u8; ROSTER_HASH_LEN],
}

impl SenderChain {
    /// Starts a fresh chain (new chain key, new signing key) for `ctx`. `previous` is the chain it
    /// replaces, if any: its distribution tells receivers where that one ended.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        ctx: ChainContext,
        previous: Option<&SenderChain>,
    ) -> Self {
        let mut chain_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(chain_key.as_mut());
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let (prev_chain_id, prev_end) = previous.map_or((0, 0), |p| (p.chain_id, p.iteration));
        let mut chain_id = rng.next_u32();
        while chain_id == prev_chain_id || chain_id == 0 {
            chain_id = rng.next_u32();
        }
        Self::from_parts(
            ctx,
            chain_id,
            0,
            *chain_key,
            &seed,
            (prev_chain_id, prev_end),
        )
    }

    /// Builds a chain from explicit parts (for tests and vectors).
    pub fn from_parts(
        ctx: ChainContext,
        chain_id: u32,
        iteration: u32,
        chain_key: [u8; 32],
        signing_seed: &[u8; 32],
        (prev_chain_id, prev_end): (u32, u32),
    ) -> Self {
        Self {
            group_id: ctx.group_id,
            sender: ctx.sender,
            epoch: ctx.epoch,
            roster_hash: ctx.roster_hash,
            chain_id,
            iteration,
            chain_key: secret(chain_key),
            signing: SigningKey::from_bytes(signing_seed),
            prev_chain_id,
            prev_end,
        }
    }

    /// The distribution message for this chain at its current iteration.
    pub fn distribution(&self) -> SenderKeyDistribution {
        let signing_key = self.signing.verifying_key().to_bytes();
        let binding = self
            .signing
            .sign(&binding_message(
                &self.group_id,
                &self.sender,
                self.epoch,
                &self.roster_hash,
                self.chain_id,
                &signing_key,
            ))
            .to_bytes();
        SenderKeyDistribution {
            group_id: self.group_id,
            sender: self.sender,
            epoch: self.epoch,
            roster_hash: self.roster_hash,
            chain_id: self.chain_id,
            iteration: self.iteration,
            chain_key: Zeroizing::new(**self.chain_key),
            signing_key,
            prev_chain_id: self.prev_chain_id,
            prev_end: self.prev_end,
            binding,
        }
    }

    /// The chain's signing public key.
    pub fn signing_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Names the chain this one replaces and how many messages were sent on it (for a chain
    /// started after the previous one was already dropped).
    pub(crate) fn set_previous(&mut self, chain_id: u32, end: u32) {
        if chain_id != self.chain_id {
            self.prev_chain_id = chain_id;
            self.prev_end = end;
        }
    }

    /// Number of messages sent on this chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The chain id.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The roster epoch of this chain.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The roster hash of this chain.
    pub fn roster_hash(&self) -> [u8; ROSTER_HASH_LEN] {
        self.roster_hash
    }

    /// Pads, encrypts and signs one group message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupEncryptError> {
        let next = self
            .iteration
            .checked_add(1)
            .ok_or(GroupEncryptError::ChainExhausted)?;
        let padded_len =
            padding::padded_len(plaintext.len()).map_err(|_| GroupEncryptError::TooLong)?;
        let seed = Zeroizing::new(hmac_byte(&self.chain_key, kdf::MESSAGE_KEY_CONSTANT));
        let header = GroupHeader {
            group_id: self.group_id,
            epoch: self.epoch,
            roster_hash: self.roster_hash,
            chain_id: self.chain_id,
            iteration: self.iteration,
        }
        .encode();
        let ad = associated_data(&header, &self.sender);
        // Sized exactly: the plaintext is encrypted in place and must never be left behind in a
        // freed smaller buffer.
        let mut out =
            Vec::with_capacity(GROUP_HEADER_LEN + padded_len + aead::TAG_LEN + GROUP_SIGNATURE_LEN);
        out.extend_from_slice(&header);
        padding::pad_into(plaintext, &mut out).map_err(|_| GroupEncryptError::TooLong)?;
        let keys = kdf::message_keys(&seed, SENDER_KEY_INFO);
        aead::seal_in_place(&keys, &mut out, GROUP_HEADER_LEN, &[&ad])
            .ok_or(GroupEncryptError::TooLong)?;
        let signature = self
            .signing
            .sign(&signed_part(&ad, &out[GROUP_HEADER_LEN..]));
        out.extend_from_slice(&signature.to_bytes());
        **self.chain_key = hmac_byte(&self.chain_key, kdf::CHAIN_KEY_CONSTANT);
        self.iteration = next;
        Ok(out)
    }

    /// A versioned snapshot (secrets included: encrypt before storing).
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SENDER_CHAIN_SNAPSHOT_LEN));
        out.push(SENDER_CHAIN_SNAPSHOT_VERSION);
        out.extend_from_slice(&self.group_id);
        out.extend_from_slice(self.sender.as_bytes());
        out.put_u64(self.epoch);
        out.extend_from_slice(&self.roster_hash);
        out.put_u32(self.chain_id);
        out.put_u32(self.iteration);
        out.extend_from_slice(self.chain_key.as_ref().as_ref());
        out.extend_from_slice(self.signing.as_bytes());
        out.put_u32(self.prev_chain_id);
        out.put_u32(self.prev_end);
        out
    }

    /// Restores a chain from [`SenderChain::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, |r| {
            let version = r.u8()?;
            if version != SENDER_CHAIN_SNAPSHOT_VERSION {
                return Err(DecodeError::UnknownVersion(version));
            }
            let ctx = ChainContext {
                group_id: r.array()?,
                sender: IdentityKey::from_bytes(&r.array()?)?,
                epoch: r.u64()?,
                roster_hash: r.array()?,
            };
            let (chain_id, iteration) = (r.u32()?, r.u32()?);
            let chain_key: Zeroizing<[u8; 32]> = Zeroizing::new(r.array()?);
            let seed: Zeroizing<[u8; 32]> = Zeroizing::new(r.array()?);
            let prev = (r.u32()?, r.u32()?);
            Ok(Self::from_parts(
                ctx, chain_id, iteration, *chain_key, &seed, prev,
            ))
        })
    }
}

/// `AD ‖ ct`: what a group message's signature covers.
fn signed_part(ad: &[u8; GROUP_AD_LEN], ciphertext: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(GROUP_AD_LEN + ciphertext.len());
    m.extend_from_slice(ad);
    m.extend_from_slice(ciphertext);
    m
}

/// A skipped message seed, boxed so that it never moves inside the collection that holds it.
struct SkippedSeed {
    iteration: u32,
    seed: Secret,
}

impl Clone for SkippedSeed {
    fn clone(&self) -> Self {
        Self {
            iteration: self.iteration,
            seed: secret(**self.seed),
        }
    }
}

/// One remote chain as a receiver knows it.
#[derive(Clone)]
struct ReceiverChain {
    group_id: [u8; GROUP_ID_LEN],
    epoch: u64,
    roster_hash: [u8; ROSTER_HASH_LEN],
    chain_id: u32,
    /// The next iteration expected (one past the highest received).
    iteration: u32,
    chain_key: Secret,
    signing: VerifyingKey,
    /// The chain this one replaced (from its distribution).
    prev_chain_id: u32,
    /// Iterations at or above this are refused: the sender moved to a newer chain.
    limit: Option<u32>,
    /// Oldest first.
    skipped: VecDeque<SkippedSeed>,
}

/// Everything a member knows about one other member's sender chains in one group.
#[derive(Clone)]
pub struct SenderKeyRecord {
    owner: IdentityKey,
    /// Newest last; at most [`MAX_CHAINS_PER_SENDER`].
    chains: Vec<ReceiverChain>,
    /// Chains this sender replaced, oldest first.
    retired: VecDeque<u32>,
}

impl fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyRecord")
            .field("owner", &self.owner)
            .field(
                "chains",
                &self.chains.iter().map(|c| c.chain_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Version byte of a [`SenderKeyRecord`] snapshot.
pub const SENDER_RECORD_SNAPSHOT_VERSION: u8 = 0x02;
/// The largest [`SenderKeyRecord`] snapshot.
pub const MAX_RECORD_SNAPSHOT_LEN: usize = 1
    + 32
    + 4
    + MAX_RETIRED_CHAINS * 4
    + 4
    + MAX_CHAINS_PER_SENDER * (CHAIN_FIXED_LEN + MAX_SKIPPED_SEEDS * 36);
const CHAIN_FIXED_LEN: usize = GROUP_ID_LEN + 8 + 32 + 4 + 4 + 32 + 32 + 4 + 5 + 4;

/// Why a distribution could not be installed in a [`SenderKeyRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The distribution names another sender than the record's.
    #[error("sender key is for another member")]
    WrongSender,
    /// The chain was retired (or is the predecessor of one we hold): an old distribution.
    #[error("sender key is for a retired chain")]
    Retired,
}

impl SenderKeyRecord {
    /// An empty record for `owner`'s chains.
    pub fn new(owner: IdentityKey) -> Self {
        Self {
            owner,
            chains: Vec::new(),
            retired: VecDeque::new(),
        }
    }

    /// The member whose chains these are.
    pub fn owner(&self) -> IdentityKey {
        self.owner
    }

    /// Installs a chain from a distribution received over the owner's pairwise session. A chain
    /// already known is only moved forward, never back (a replayed old distribution cannot reopen
    /// consumed iterations); a new chain caps the one it names as its predecessor at `prev_end`
    /// and forgets every other older chain.
    pub fn process_distribution(&mut self, d: &SenderKeyDistribution) -> Result<(), InstallError> {
        if d.sender != self.owner {
            return Err(InstallError::WrongSender);
        }
        // `decode` checked the key; a distribution built in memory by `SenderChain` is valid too.
        let Ok(signing) = d.verifying_key() else {
            return Err(InstallError::WrongSender);
        };
        let known = self.chains.iter().any(|c| {
            c.chain_id == d.chain_id
                && c.group_id == d.group_id
                && c.signing == signing
                && (c.iteration >= d.iteration || c.roster_hash != d.roster_hash)
        });
        if known {
            return Ok(());
        }
        if self.retired.contains(&d.chain_id)
            || self.chains.iter().any(|c| c.prev_chain_id == d.chain_id)
        {
            return Err(InstallError::Retired);
        }
        let mut kept = Vec::with_capacity(MAX_CHAINS_PER_SENDER);
        for mut c in std::mem::take(&mut self.chains) {
            if c.chain_id == d.chain_id {
                continue; // Replaced by the newer state of the same chain below.
            }
            if c.chain_id == d.prev_chain_id && c.group_id == d.group_id && kept.is_empty() {
                let limit = c.limit.map_or(d.prev_end, |l| l.min(d.prev_end));
                c.limit = Some(limit);
                let unreceived =
                    c.iteration < limit || c.skipped.iter().any(|s| s.iteration < limit);
                if unreceived {
                    kept.push(c);
                    continue;
                }
            }
            self.retire(c.chain_id);
        }
        kept.push(ReceiverChain {
            group_id: d.group_id,
            epoch: d.epoch,
            roster_hash: d.roster_hash,
            chain_id: d.chain_id,
            iteration: d.iteration,
            chain_key: secret(*d.chain_key),
            signing,
            prev_chain_id: d.prev_chain_id,
            limit: None,
            skipped: VecDeque::new(),
        });
        self.chains = kept;
        Ok(())
    }

    fn retire(&mut self, chain_id: u32) {
        if self.retired.len() == MAX_RETIRED_CHAINS {
            self.retired.pop_front();
        }
        self.retired.push_back(chain_id);
    }

    /// Forgets every chain (when the sender is removed from the group).
    pub fn clear(&mut self) {
        self.chains.clear();
    }

    /// Whether a chain for the roster with hash `roster_hash` is known.
    pub fn has_roster(&self, roster_hash: &[u8; ROSTER_HASH_LEN]) -> bool {
        self.chains
            .iter()
            .any(|c| c.roster_hash == *roster_hash && c.limit.is_none())
    }

    /// Whether a chain with this signing public key is held.
    pub fn has_signing_key(&self, key: &[u8; 32]) -> bool {
        self.chains.iter().any(|c| c.signing.as_bytes() == key)
    }

    /// Whether a chain with this id is held.
    pub fn has_chain(&self, chain_id: u32) -> bool {
        self.chains.iter().any(|c| c.chain_id == chain_id)
    }

    /// Whether any chain is known.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Verifies and decrypts one group message from the record's owner. The record changes only
    /// on success.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, GroupDecryptError> {
        let header = GroupHeader::decode(message)?;
        if message.len()
            < GROUP_HEADER_LEN + padding::MIN_PADDED_LEN + aead::TAG_LEN + GROUP_SIGNATURE_LEN
        {
            return Err(DecodeError::Truncated.into());
        }
        let (rest, signature) = message.split_at(message.len() - GROUP_SIGNATURE_LEN);
        let signature = Signature::from_slice(signature)
            .map_err(|_| GroupDecryptError::AuthenticationFailed)?;
        let owner = self.owner;
        let chain = self
            .chains
            .iter_mut()
            .rev()
            .find(|c| c.chain_id == header.chain_id)
            .ok_or(GroupDecryptError::UnknownChain)?;
        if chain.group_id != header.group_id {
            return Err(GroupDecryptError::WrongGroup);
        }
        if chain.roster_hash != header.roster_hash || chain.epoch != header.epoch {
            return Err(GroupDecryptError::WrongRoster);
        }
        if chain.limit.is_some_and(|l| header.iteration >= l) {
            return Err(GroupDecryptError::Retired);
        }
        let (header_bytes, ciphertext) = rest.split_at(GROUP_HEADER_LEN);
        let ad = associated_data(header_bytes, &owner);
        chain
            .signing
            .verify_strict(&signed_part(&ad, ciphertext), &signature)
            .map_err(|_| GroupDecryptError::AuthenticationFailed)?;

        // A message whose seed we kept.
        if let Some(index) = chain
            .skipped
            .iter()
            .position(|s| s.iteration == header.iteration)
        {
            let plaintext = open(&chain.skipped[index].seed, &ad, ciphertext)?;
            // Dropping the box zeroizes the seed where it lies.
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
        let mut ck = Zeroizing::new(**chain.chain_key);
        let skip = (header.iteration - chain.iteration) as usize;
        let mut staged = Vec::with_capacity(skip.min(MAX_SKIPPED_SEEDS));
        for i in chain.iteration..header.iteration {
            // Only the newest MAX_SKIPPED_SEEDS can ever be kept; skip the work for the rest.
            if header.iteration - i <= MAX_SKIPPED_SEEDS as u32 {
                staged.push(SkippedSeed {
                    iteration: i,
                    seed: secret(hmac_byte(&ck, kdf::MESSAGE_KEY_CONSTANT)),
                });
            }
            *ck = hmac_byte(&ck, kdf::CHAIN_KEY_CONSTANT);
        }
        let seed = Zeroizing::new(hmac_byte(&ck, kdf::MESSAGE_KEY_CONSTANT));
        let plaintext = open(&seed, &ad, ciphertext)?;
        let next = header
            .iteration
            .checked_add(1)
            .ok_or(GroupDecryptError::TooFarAhead)?;
        // Commit.
        **chain.chain_key = hmac_byte(&ck, kdf::CHAIN_KEY_CONSTANT);
        chain.iteration = next;
        for s in staged {
            if chain.skipped.len() == MAX_SKIPPED_SEEDS {
                chain.skipped.pop_front();
            }
            // Growing the deque moves only the boxes' pointers, never the seeds.
            chain.skipped.push_back(s);
        }
        Ok(plaintext)
    }

    /// Number of stored skipped seeds over all chains.
    pub fn skipped_count(&self) -> usize {
        self.chains.iter().map(|c| c.skipped.len()).sum()
    }

    pub(crate) fn snapshot_len_hint(&self) -> usize {
        1 + 32
            + 4
            + self.retired.len() * 4
            + 4
            + self
                .chains
                .iter()
                .map(|c| CHAIN_FIXED_LEN + c.skipped.len() * 36)
                .sum::<usize>()
    }

    /// A versioned snapshot (secrets included: encrypt before storing).
    ///
    /// ```text
    /// 0x02 ‖ owner [32] ‖ r u32 (≤ 16) ‖ r × retired chain_id u32 ‖ n u32 (≤ 2) ‖ n × (group_id [16]
    ///   ‖ epoch u64 ‖ roster_hash [32] ‖ chain_id u32 ‖ iteration u32 ‖ CK [32] ‖ signing_pub [32]
    ///   ‖ prev_chain_id u32 ‖ has_limit bool ‖ limit u32 ‖ k u32 (≤ 2000) ‖ k × (iteration u32 ‖ seed [32]))
    /// ```
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.snapshot_len_hint()));
        self.write(&mut out);
        out
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(SENDER_RECORD_SNAPSHOT_VERSION);
        out.extend_from_slice(self.owner.as_bytes());
        out.put_u32(self.retired.len() as u32);
        for id in &self.retired {
            out.put_u32(*id);
        }
        out.put_u32(self.chains.len() as u32);
        for c in &self.chains {
            out.extend_from_slice(&c.group_id);
            out.put_u64(c.epoch);
            out.extend_from_slice(&c.roster_hash);
            out.put_u32(c.chain_id);
            out.put_u32(c.iteration);
            out.extend_from_slice(c.chain_key.as_ref().as_ref());
            out.extend_from_slice(c.signing.as_bytes());
            out.put_u32(c.prev_chain_id);
            out.put_bool(c.limit.is_some());
            out.put_u32(c.limit.unwrap_or(0));
            out.put_u32(c.skipped.len() as u32);
            for s in &c.skipped {
                out.put_u32(s.iteration);
                out.extend_from_slice(s.seed.as_ref().as_ref());
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != SENDER_RECORD_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let owner = IdentityKey::from_bytes(&r.array()?)?;
        let n = r.count(MAX_RETIRED_CHAINS, 4)?;
        let mut retired = VecDeque::with_capacity(n);
        for _ in 0..n {
            retired.push_back(r.u32()?);
        }
        let n = r.count(MAX_CHAINS_PER_SENDER, CHAIN_FIXED_LEN)?;
        let mut chains = Vec::with_capacity(n);
        for _ in 0..n {
            let group_id = r.array()?;
            let epoch = r.u64()?;
            let roster_hash = r.array()?;
            let (chain_id, iteration) = (r.u32()?, r.u32()?);
            let chain_key = secret(r.array()?);
            let signing = signing_public(&r.array()?)?;
            let prev_chain_id = r.u32()?;
            let has_limit = r.bool()?;
            let limit = r.u32()?;
            let k = r.count(MAX_SKIPPED_SEEDS, 36)?;
            let mut skipped = VecDeque::with_capacity(k);
            for _ in 0..k {
                skipped.push_back(SkippedSeed {
                    iteration: r.u32()?,
                    seed: secret(r.array()?),
                });
            }
            chains.push(ReceiverChain {
                group_id,
                epoch,
                roster_hash,
                chain_id,
                iteration,
                chain_key,
                signing,
                prev_chain_id,
                limit: has_limit.then_some(limit),
                skipped,
            });
        }
        Ok(Self {
            owner,
            chains,
            retired,
        })
    }

    /// Restores a record from [`SenderKeyRecord::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }
}

fn open(
    seed: &[u8; 32],
    ad: &[u8; GROUP_AD_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, GroupDecryptError> {
    let padded = aead::open(&kdf::message_keys(seed, SENDER_KEY_INFO), ciphertext, &[ad])
        .ok_or(GroupDecryptError::AuthenticationFailed)?;
    padding::unpad(padded).ok_or(GroupDecryptError::AuthenticationFailed)
}

/// Exposes a chain's current chain key and signing seed, for the published test vectors.
#[cfg(feature = "hazmat")]
impl SenderChain {
    /// The current chain key.
    pub fn hazmat_chain_key(&self) -> [u8; 32] {
        **self.chain_key
    }

    /// The Ed25519 seed of the chain's signing key.
    pub fn hazmat_signing_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
}
