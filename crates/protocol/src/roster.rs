//! Signed group rosters: who is in a group is what its owner signed, not what the relay says.
//!
//! A roster is a hash-chained log of **changes**. The first change creates the group (epoch 0,
//! previous hash all zeros, member = the owner) and fixes the owner. Every later change moves the
//! roster to `epoch + 1`, names the hash of the previous change, and is signed by the owner's
//! identity key — except `Leave`, which the leaving member signs themself.
//!
//! ```text
//! change  = 0x05 ‖ group_id [16] ‖ epoch u64 ‖ prev_hash [32] ‖ op u8 ‖ member [32] ‖ sig [64]
//! signed  = "sotto-roster-v1" ‖ change without sig              (domain-separated)
//! hash    = SHA-256(change)                                      (the roster hash at that epoch)
//! op      = 0x01 create | 0x02 add | 0x03 remove | 0x04 leave
//! log     = 0x06 ‖ n u32 (1 ≤ n ≤ MAX_ROSTER_CHANGES) ‖ n × change
//! ```
//!
//! Verification ([`Roster::apply`]) rejects a change for another group, with an epoch other than
//! `epoch + 1`, with a previous hash other than the current roster hash, signed by anyone but the
//! owner (or, for `Leave`, the member), adding a member twice, removing or leaving a non-member,
//! removing the owner, or growing the group beyond [`MAX_GROUP_SIZE`]. A rejected change leaves the
//! roster unchanged. Clients hand sender keys only to the members of a roster they verified this
//! way (the defence against the member-addition attack of "More is Less", Rösler et al. 2018).

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{IdentityKey, IdentityKeyPair, SIGNATURE_LEN};
use crate::sender_keys::GROUP_ID_LEN;

/// Type and version byte of one roster change.
pub const ROSTER_CHANGE_VERSION: u8 = 0x05;
/// Type and version byte of a roster log.
pub const ROSTER_LOG_VERSION: u8 = 0x06;
/// Domain-separation prefix of the signed part of a roster change.
pub const ROSTER_SIGNATURE_TAG: &[u8] = b"sotto-roster-v1";
/// Length of an encoded roster change.
pub const ROSTER_CHANGE_LEN: usize = 1 + GROUP_ID_LEN + 8 + 32 + 1 + 32 + SIGNATURE_LEN;
/// Most members in a group, the owner included.
pub const MAX_GROUP_SIZE: usize = 256;
/// Most changes in a roster log (the log must fit in one pairwise message: 400 × 154 bytes).
pub const MAX_ROSTER_CHANGES: usize = 400;

/// What a roster change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RosterOp {
    /// Creates the group; the member is the owner.
    Create,
    /// The owner adds a member.
    Add,
    /// The owner removes a member.
    Remove,
    /// A member leaves (signed by that member).
    Leave,
}

impl RosterOp {
    fn to_byte(self) -> u8 {
        match self {
            Self::Create => 0x01,
            Self::Add => 0x02,
            Self::Remove => 0x03,
            Self::Leave => 0x04,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::Create),
            0x02 => Ok(Self::Add),
            0x03 => Ok(Self::Remove),
            0x04 => Ok(Self::Leave),
            _ => Err(DecodeError::OutOfRange("roster operation")),
        }
    }
}

/// Why a roster change was rejected. The roster is unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RosterError {
    /// Not a well-formed change or log.
    #[error("malformed roster: {0}")]
    Malformed(#[from] DecodeError),
    /// The change is for another group.
    #[error("roster change is for another group")]
    WrongGroup,
    /// The epoch is not the current epoch + 1 (a replay, a fork or a gap).
    #[error("roster change has the wrong epoch")]
    WrongEpoch,
    /// The previous hash is not the current roster hash.
    #[error("roster change does not extend this roster (wrong previous hash)")]
    WrongPreviousHash,
    /// Not signed by the owner (or, for a leave, by the leaving member).
    #[error("roster change is not signed by the group owner or the leaving member")]
    BadSignature,
    /// The operation does not fit the roster (adding a member twice, removing a non-member,
    /// removing the owner, a second create).
    #[error("roster change is not valid for this roster")]
    InvalidOperation,
    /// The group would have more than [`MAX_GROUP_SIZE`] members, or the log more than
    /// [`MAX_ROSTER_CHANGES`] changes.
    #[error("group or roster log is full")]
    Full,
}

/// One signed roster change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterChange {
    /// The group.
    pub group_id: [u8; GROUP_ID_LEN],
    /// The roster epoch after this change (0 for the creation).
    pub epoch: u64,
    /// The hash of the previous change (zeros for the creation).
    pub prev_hash: [u8; 32],
    /// The operation.
    pub op: RosterOp,
    /// The member added, removed or leaving (the owner for the creation).
    pub member: IdentityKey,
    /// Ed25519 signature by the owner (by `member` for a leave).
    pub signature: [u8; SIGNATURE_LEN],
}

impl RosterChange {
    fn unsigned(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROSTER_CHANGE_LEN);
        out.push(ROSTER_CHANGE_VERSION);
        out.extend_from_slice(&self.group_id);
        out.put_u64(self.epoch);
        out.extend_from_slice(&self.prev_hash);
        out.push(self.op.to_byte());
        out.extend_from_slice(self.member.as_bytes());
        out
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = ROSTER_SIGNATURE_TAG.to_vec();
        m.extend_from_slice(&self.unsigned());
        m
    }

    /// Builds and signs a change. Whether it is *valid* is decided by [`Roster::apply`].
    pub fn sign(
        signer: &IdentityKeyPair,
        group_id: [u8; GROUP_ID_LEN],
        epoch: u64,
        prev_hash: [u8; 32],
        op: RosterOp,
        member: IdentityKey,
    ) -> Self {
        let mut c = Self {
            group_id,
            epoch,
            prev_hash,
            op,
            member,
            signature: [0; SIGNATURE_LEN],
        };
        c.signature = signer.sign(&c.signed_message());
        c
    }

    /// The 154-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != ROSTER_CHANGE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        Ok(Self {
            group_id: r.array()?,
            epoch: r.u64()?,
            prev_hash: r.array()?,
            op: RosterOp::from_byte(r.u8()?)?,
            member: IdentityKey::from_bytes(&r.array()?)?,
            signature: r.array()?,
        })
    }

    /// Decodes one change (exactly [`ROSTER_CHANGE_LEN`] bytes). Signatures are checked by
    /// [`Roster::apply`], which knows who must have signed.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::decode_all(bytes, Self::read)
    }

    /// SHA-256 of the encoding: the roster hash once this change is applied.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// The key that must have signed this change.
    fn required_signer(&self, owner: &IdentityKey) -> IdentityKey {
        match self.op {
            RosterOp::Leave => self.member,
            _ => *owner,
        }
    }
}

/// Whether replaying a log checks the signatures (always, except for our own sealed snapshots).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signatures {
    Verify,
    Skip,
}

/// A verified roster: the owner, the current epoch and hash, the members, and the signed log
/// that proves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    group_id: [u8; GROUP_ID_LEN],
    owner: IdentityKey,
    epoch: u64,
    hash: [u8; 32],
    members: Vec<IdentityKey>,
    log: Vec<RosterChange>,
}

impl Roster {
    /// Creates a group owned by `owner` (epoch 0, the owner its only member).
    pub fn create(owner: &IdentityKeyPair, group_id: [u8; GROUP_ID_LEN]) -> Self {
        let change = RosterChange::sign(
            owner,
            group_id,
            0,
            [0; 32],
            RosterOp::Create,
            owner.public(),
        );
        Self {
            group_id,
            owner: owner.public(),
            epoch: 0,
            hash: change.hash(),
            members: vec![owner.public()],
            log: vec![change],
        }
    }

    /// Verifies a whole log from its creation and returns the roster it proves.
    pub fn from_log(log: &[RosterChange]) -> Result<Self, RosterError> {
        Self::replay(log, Signatures::Verify)
    }

    /// Replays a log; `Signatures::Skip` is only for a log this device verified before and kept
    /// in its own sealed storage (see [`Roster::restore_log`]).
    fn replay(log: &[RosterChange], signatures: Signatures) -> Result<Self, RosterError> {
        let (first, rest) = log.split_first().ok_or(DecodeError::Truncated)?;
        if log.len() > MAX_ROSTER_CHANGES {
            return Err(RosterError::Full);
        }
        if first.op != RosterOp::Create || first.epoch != 0 || first.prev_hash != [0; 32] {
            return Err(RosterError::InvalidOperation);
        }
        if signatures == Signatures::Verify {
            first
                .member
                .verify(&first.signed_message(), &first.signature)
                .map_err(|_| RosterError::BadSignature)?;
        }
        let mut roster = Self {
            group_id: first.group_id,
            owner: first.member,
            epoch: 0,
            hash: first.hash(),
            members: vec![first.member],
            log: vec![*first],
        };
        for c in rest {
            roster.check(c, signatures)?;
            roster.push(c);
        }
        Ok(roster)
    }

    /// Checks a change against this roster without applying it.
    pub fn verify(&self, c: &RosterChange) -> Result<(), RosterError> {
        self.check(c, Signatures::Verify)
    }

    fn check(&self, c: &RosterChange, signatures: Signatures) -> Result<(), RosterError> {
        if c.group_id != self.group_id {
            return Err(RosterError::WrongGroup);
        }
        if Some(c.epoch) != self.epoch.checked_add(1) {
            return Err(RosterError::WrongEpoch);
        }
        if c.prev_hash != self.hash {
            return Err(RosterError::WrongPreviousHash);
        }
        if signatures == Signatures::Verify {
            c.required_signer(&self.owner)
                .verify(&c.signed_message(), &c.signature)
                .map_err(|_| RosterError::BadSignature)?;
        }
        let present = self.is_member(&c.member);
        match c.op {
            RosterOp::Create => return Err(RosterError::InvalidOperation),
            RosterOp::Add if present => return Err(RosterError::InvalidOperation),
            RosterOp::Add if self.members.len() >= MAX_GROUP_SIZE => return Err(RosterError::Full),
            RosterOp::Remove | RosterOp::Leave if !present || c.member == self.owner => {
                return Err(RosterError::InvalidOperation);
            }
            _ => {}
        }
        if self.log.len() >= MAX_ROSTER_CHANGES {
            return Err(RosterError::Full);
        }
        Ok(())
    }

    /// Verifies and applies a change. On error the roster is unchanged.
    pub fn apply(&mut self, c: &RosterChange) -> Result<(), RosterError> {
        self.verify(c)?;
        self.push(c);
        Ok(())
    }

    /// Applies a change that [`Roster::check`] accepted.
    fn push(&mut self, c: &RosterChange) {
        match c.op {
            RosterOp::Add => self.members.push(c.member),
            _ => self.members.retain(|m| *m != c.member),
        }
        self.epoch = c.epoch;
        self.hash = c.hash();
        self.log.push(*c);
    }

    fn next(&self, signer: &IdentityKeyPair, op: RosterOp, member: IdentityKey) -> RosterChange {
        RosterChange::sign(
            signer,
            self.group_id,
            self.epoch.saturating_add(1),
            self.hash,
            op,
            member,
        )
    }

    /// The owner's change adding `member` (verified, not applied).
    pub fn propose_add(
        &self,
        owner: &IdentityKeyPair,
        member: IdentityKey,
    ) -> Result<RosterChange, RosterError> {
        let c = self.next(owner, RosterOp::Add, member);
        self.verify(&c)?;
        Ok(c)
    }

    /// The owner's change removing `member` (verified, not applied).
    pub fn propose_remove(
        &self,
        owner: &IdentityKeyPair,
        member: IdentityKey,
    ) -> Result<RosterChange, RosterError> {
        let c = self.next(owner, RosterOp::Remove, member);
        self.verify(&c)?;
        Ok(c)
    }

    /// A member's own leave change (verified, not applied). The owner cannot leave.
    pub fn propose_leave(&self, me: &IdentityKeyPair) -> Result<RosterChange, RosterError> {
        let c = self.next(me, RosterOp::Leave, me.public());
        self.verify(&c)?;
        Ok(c)
    }

    /// The group id.
    pub fn group_id(&self) -> [u8; GROUP_ID_LEN] {
        self.group_id
    }

    /// The owner.
    pub fn owner(&self) -> IdentityKey {
        self.owner
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current roster hash (the hash of the last change).
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The members, the owner first, then in order of addition.
    pub fn members(&self) -> &[IdentityKey] {
        &self.members
    }

    /// Whether `key` is a member.
    pub fn is_member(&self, key: &IdentityKey) -> bool {
        self.members.contains(key)
    }

    /// The signed log, creation first.
    pub fn log(&self) -> &[RosterChange] {
        &self.log
    }

    /// Encodes the log (`0x06 ‖ n u32 ‖ n × change`).
    pub fn encode_log(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.log.len() * ROSTER_CHANGE_LEN);
        out.push(ROSTER_LOG_VERSION);
        out.put_u32(self.log.len() as u32);
        for c in &self.log {
            out.extend_from_slice(&c.encode());
        }
        out
    }

    /// Decodes a log and verifies it with [`Roster::from_log`].
    pub fn decode_log(bytes: &[u8]) -> Result<Self, RosterError> {
        Self::from_log(&Self::decode_changes(bytes)?)
    }

    /// Decodes a log that this device verified before and kept in its own sealed (authenticated)
    /// storage, as in a [`crate::group::SenderKeyGroup`] snapshot: group id, epochs, hash chain and
    /// operations are checked again, the signatures are not. Re-verifying one Ed25519 signature
    /// per roster change on every load made a 100-member group's state cost ~100 verifications
    /// each time it was read. Never use it for a log that came from the network.
    pub fn restore_log(bytes: &[u8]) -> Result<Self, RosterError> {
        Self::replay(&Self::decode_changes(bytes)?, Signatures::Skip)
    }

    fn decode_changes(bytes: &[u8]) -> Result<Vec<RosterChange>, RosterError> {
        let log: Vec<RosterChange> = Reader::decode_all(bytes, |r| {
            let version = r.u8()?;
            if version != ROSTER_LOG_VERSION {
                return Err(DecodeError::UnknownVersion(version));
            }
            let n = r.count(MAX_ROSTER_CHANGES, ROSTER_CHANGE_LEN)?;
            (0..n).map(|_| RosterChange::read(r)).collect()
        })?;
        Ok(log)
    }
}
