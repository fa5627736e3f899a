//! Signed group rosters: who is in a group is what its owner signed, not what the relay says.
//!
//! A roster is a hash-chained log of **changes**. The first change creates the group (epoch 0) and
//! fixes the owner; its `prev_hash` field carries a random 32-byte nonce, and the group id is
//! derived from it, so nobody but the owner can make a log for a group id. Every later change moves
//! the roster to `epoch + 1`, names the hash of the previous change, and is signed by the owner's
//! identity key — except `Leave`, which the leaving member signs themself.
//!
//! ```text
//! change   = 0x09 ‖ group_id [16] ‖ epoch u64 ‖ prev_hash [32] ‖ op u8 ‖ member [32] ‖ sig [64]
//! signed   = "sotto-roster-v2" ‖ change without sig              (domain-separated)
//! hash     = SHA-256(change)                                      (the roster hash at that epoch)
//! op       = 0x01 create | 0x02 add | 0x03 remove | 0x04 leave
//! group_id = SHA-256("sotto group id v2" ‖ owner [32] ‖ nonce [32])[0..16]   (creation: prev_hash = nonce)
//! log      = 0x0A ‖ n u32 (1 ≤ n ≤ MAX_ROSTER_CHANGES) ‖ n × change
//! ```
//!
//! Verification ([`Roster::apply`]) rejects a change for another group, with an epoch other than
//! `epoch + 1`, with a previous hash other than the current roster hash, signed by anyone but the
//! owner (or, for `Leave`, the member), adding a member twice, removing or leaving a non-member,
//! removing the owner, or growing the group beyond [`MAX_GROUP_SIZE`]. A rejected change leaves the
//! roster unchanged. Clients hand sender keys only to the members of a roster they verified this
//! way (the defence against the member-addition attack of "More is Less", Rösler et al. 2018).
//!
//! **Forks.** A leave and an owner change can both extend the same roster. The owner's log is
//! authoritative: [`Roster::adopt`] replaces a suffix of *leaves by other members* with the
//! owner's branch (the owner re-issues a raced leave as a removal on top of its own log, see
//! [`Roster::forked_leave`]); a suffix that holds an owner-signed change is never replaced (two
//! owner changes for one position is equivocation, refused).
//!
//! Logs of sotto's first group format (`0x05` changes, `0x06` logs, tag `sotto-roster-v1`, random
//! group ids) are still read from a device's own sealed storage ([`Roster::restore_log`]) so that
//! existing groups keep their members, and are refused from the network.

use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{IdentityKey, IdentityKeyPair, SIGNATURE_LEN};
use crate::sender_keys::GROUP_ID_LEN;

/// Type and version byte of one roster change.
pub const ROSTER_CHANGE_VERSION: u8 = 0x09;
/// Type and version byte of a roster log.
pub const ROSTER_LOG_VERSION: u8 = 0x0A;
/// Domain-separation prefix of the signed part of a roster change.
pub const ROSTER_SIGNATURE_TAG: &[u8] = b"sotto-roster-v2";
/// Domain-separation prefix of the group id derivation.
pub const GROUP_ID_TAG: &[u8] = b"sotto group id v2";
/// Type byte of a change in the first group format (read from own storage only).
pub const LEGACY_ROSTER_CHANGE_VERSION: u8 = 0x05;
/// Type byte of a log in the first group format.
pub const LEGACY_ROSTER_LOG_VERSION: u8 = 0x06;
/// Signature tag of the first group format.
pub const LEGACY_ROSTER_SIGNATURE_TAG: &[u8] = b"sotto-roster-v1";
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
    /// The creation's group id is not the one derived from its owner and nonce (a squatted id).
    #[error("group id does not match its creation")]
    WrongGroupId,
    /// A log or change of the first group format, which is not accepted from the network.
    #[error("roster from an older sotto version")]
    Legacy,
    /// The owner signed two different changes for one position of the log.
    #[error("the group owner signed two conflicting roster changes")]
    OwnerEquivocation,
    /// The other roster would undo an owner-signed change, or our own leave.
    #[error("roster conflicts with the verified one")]
    Conflict,
}

/// What [`Roster::adopt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// The other roster adds nothing to ours.
    Unchanged,
    /// Ours was extended by the other roster's later changes.
    Extended,
    /// Our last changes (leaves by other members only, listed) were replaced by the owner's branch.
    Replaced(Vec<RosterChange>),
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
    /// Whether this is a change of the first group format.
    legacy: bool,
}

/// The group id a creation with `owner` and `nonce` must carry.
pub fn derive_group_id(owner: &IdentityKey, nonce: &[u8; 32]) -> [u8; GROUP_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(GROUP_ID_TAG)
        .chain_update(owner.as_bytes())
        .chain_update(nonce)
        .finalize();
    let mut id = [0u8; GROUP_ID_LEN];
    id.copy_from_slice(&digest[..GROUP_ID_LEN]);
    id
}

impl RosterChange {
    fn unsigned(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROSTER_CHANGE_LEN);
        out.push(if self.legacy {
            LEGACY_ROSTER_CHANGE_VERSION
        } else {
            ROSTER_CHANGE_VERSION
        });
        out.extend_from_slice(&self.group_id);
        out.put_u64(self.epoch);
        out.extend_from_slice(&self.prev_hash);
        out.push(self.op.to_byte());
        out.extend_from_slice(self.member.as_bytes());
        out
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = if self.legacy {
            LEGACY_ROSTER_SIGNATURE_TAG
        } else {
            ROSTER_SIGNATURE_TAG
        }
        .to_vec();
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
        Self::sign_format(signer, group_id, epoch, prev_hash, op, member, false)
    }

    fn sign_format(
        signer: &IdentityKeyPair,
        group_id: [u8; GROUP_ID_LEN],
        epoch: u64,
        prev_hash: [u8; 32],
        op: RosterOp,
        member: IdentityKey,
        legacy: bool,
    ) -> Self {
        let mut c = Self {
            group_id,
            epoch,
            prev_hash,
            op,
            member,
            signature: [0; SIGNATURE_LEN],
            legacy,
        };
        c.signature = signer.sign(&c.signed_message());
        c
    }

    /// Whether this change is of the first group format.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The key that signed this change, if its signature verifies as the owner's or, for a leave,
    /// the leaving member's.
    fn verify_signature(&self, owner: &IdentityKey) -> Result<(), RosterError> {
        self.required_signer(owner)
            .verify(&self.signed_message(), &self.signature)
            .map_err(|_| RosterError::BadSignature)
    }

    /// The 154-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let legacy = match r.u8()? {
            ROSTER_CHANGE_VERSION => false,
            LEGACY_ROSTER_CHANGE_VERSION => true,
            v => return Err(DecodeError::UnknownVersion(v)),
        };
        Ok(Self {
            group_id: r.array()?,
            epoch: r.u64()?,
            prev_hash: r.array()?,
            op: RosterOp::from_byte(r.u8()?)?,
            member: IdentityKey::from_bytes(&r.array()?)?,
            signature: r.array()?,
            legacy,
        })
    }

    /// Decodes one change (exactly [`ROSTER_CHANGE_LEN`] bytes; either format, which
    /// [`Roster::apply`] checks against the roster's). Signatures are checked by
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
    /// Creates a group owned by `owner` (epoch 0, the owner its only member), with a fresh nonce
    /// from which the group id is derived.
    pub fn create<R: CryptoRng + ?Sized>(rng: &mut R, owner: &IdentityKeyPair) -> Self {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Self::create_with_nonce(owner, nonce)
    }

    /// [`Roster::create`] with a given nonce (for tests and vectors).
    pub fn create_with_nonce(owner: &IdentityKeyPair, nonce: [u8; 32]) -> Self {
        let group_id = derive_group_id(&owner.public(), &nonce);
        let change =
            RosterChange::sign(owner, group_id, 0, nonce, RosterOp::Create, owner.public());
        Self::genesis(&change)
    }

    fn genesis(first: &RosterChange) -> Self {
        Self {
            group_id: first.group_id,
            owner: first.member,
            epoch: 0,
            hash: first.hash(),
            members: vec![first.member],
            log: vec![*first],
        }
    }

    /// Verifies a whole log from its creation and returns the roster it proves. Logs of the first
    /// group format are refused ([`RosterError::Legacy`]).
    pub fn from_log(log: &[RosterChange]) -> Result<Self, RosterError> {
        if log.iter().any(|c| c.legacy) {
            return Err(RosterError::Legacy);
        }
        Self::replay(log, Signatures::Verify)
    }

    /// Replays a log; `Signatures::Skip` is only for a log this device verified before and kept
    /// in its own sealed storage (see [`Roster::restore_log`]).
    fn replay(log: &[RosterChange], signatures: Signatures) -> Result<Self, RosterError> {
        let (first, rest) = log.split_first().ok_or(DecodeError::Truncated)?;
        if log.len() > MAX_ROSTER_CHANGES {
            return Err(RosterError::Full);
        }
        if first.op != RosterOp::Create || first.epoch != 0 {
            return Err(RosterError::InvalidOperation);
        }
        if first.legacy {
            if first.prev_hash != [0; 32] {
                return Err(RosterError::InvalidOperation);
            }
        } else if derive_group_id(&first.member, &first.prev_hash) != first.group_id {
            return Err(RosterError::WrongGroupId);
        }
        if signatures == Signatures::Verify {
            first.verify_signature(&first.member)?;
        }
        let mut roster = Self::genesis(first);
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
        if c.group_id != self.group_id || c.legacy != self.is_legacy() {
            return Err(RosterError::WrongGroup);
        }
        if Some(c.epoch) != self.epoch.checked_add(1) {
            return Err(RosterError::WrongEpoch);
        }
        if c.prev_hash != self.hash {
            return Err(RosterError::WrongPreviousHash);
        }
        if signatures == Signatures::Verify {
            c.verify_signature(&self.owner)?;
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

    /// Verifies and applies a change that extends this roster. On error the roster is unchanged.
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

    /// The roster as it was after its first `len` changes (our own, verified log: no signatures
    /// checked again).
    fn prefix(&self, len: usize) -> Result<Self, RosterError> {
        Self::replay(
            self.log.get(..len).ok_or(RosterError::WrongEpoch)?,
            Signatures::Skip,
        )
    }

    /// Makes the owner's branch ours where the two differ (see the module documentation): `other`
    /// is a verified roster of the same group (from the owner's log, or our own prefix extended by
    /// an owner-signed change). Our changes after the common prefix may be replaced only if every
    /// one of them is a leave by a member other than `me`; `other` must then add something.
    pub fn adopt(&mut self, other: &Roster, me: &IdentityKey) -> Result<Adopted, RosterError> {
        if other.log.first() != self.log.first() {
            return Err(RosterError::WrongGroup);
        }
        let common = self
            .log
            .iter()
            .zip(&other.log)
            .take_while(|(a, b)| a == b)
            .count();
        let ours = &self.log[common..];
        let theirs = &other.log[common..];
        if theirs.is_empty() {
            return Ok(Adopted::Unchanged);
        }
        if ours.is_empty() {
            *self = other.clone();
            return Ok(Adopted::Extended);
        }
        if let Some(c) = ours.iter().find(|c| c.op != RosterOp::Leave) {
            return Err(
                if theirs[0].op != RosterOp::Leave && c.epoch == theirs[0].epoch {
                    RosterError::OwnerEquivocation
                } else {
                    RosterError::Conflict
                },
            );
        }
        if ours.iter().any(|c| c.member == *me) {
            return Err(RosterError::Conflict);
        }
        let replaced = ours.to_vec();
        *self = other.clone();
        Ok(Adopted::Replaced(replaced))
    }

    /// Receives an owner-signed change that does not extend this roster but extends one of its
    /// earlier states: the roster as of `change.epoch - 1` plus `change`, ready for
    /// [`Roster::adopt`]. `None` if `change` is not such a change.
    pub fn branch_with(&self, change: &RosterChange) -> Option<Roster> {
        if change.op == RosterOp::Leave || change.epoch == 0 || change.epoch > self.epoch {
            return None;
        }
        let base = usize::try_from(change.epoch).ok()?;
        if self.log.get(base - 1)?.hash() != change.prev_hash {
            return None;
        }
        let mut branch = self.prefix(base).ok()?;
        branch.apply(change).ok()?;
        Some(branch)
    }

    /// Whether `change` is a leave that forks off this (the owner's) log: signed by the leaving
    /// member, built on one of our earlier states after the member's latest addition, and the
    /// member still on the roster. The owner re-issues such a leave as a removal on top of its
    /// log, so that the leave takes effect on the authoritative branch. A leave replayed from
    /// before the member was (re-)added does not qualify.
    pub fn forked_leave(&self, change: &RosterChange) -> bool {
        if change.op != RosterOp::Leave
            || change.group_id != self.group_id
            || change.legacy != self.is_legacy()
            || change.epoch == 0
            || change.epoch > self.epoch
            || !self.is_member(&change.member)
            || change.verify_signature(&self.owner).is_err()
        {
            return false;
        }
        let Ok(base) = usize::try_from(change.epoch) else {
            return false;
        };
        let forks_here = self
            .log
            .get(base - 1)
            .is_some_and(|c| c.hash() == change.prev_hash)
            && self.log.get(base) != Some(change);
        let re_added_since = self.log[base..]
            .iter()
            .any(|c| c.op == RosterOp::Add && c.member == change.member);
        forks_here && !re_added_since
    }

    /// The roster hash at `epoch`, if this log reaches it.
    pub fn hash_at(&self, epoch: u64) -> Option<[u8; 32]> {
        self.log
            .get(usize::try_from(epoch).ok()?)
            .map(RosterChange::hash)
    }

    fn next(&self, signer: &IdentityKeyPair, op: RosterOp, member: IdentityKey) -> RosterChange {
        RosterChange::sign_format(
            signer,
            self.group_id,
            self.epoch.saturating_add(1),
            self.hash,
            op,
            member,
            self.is_legacy(),
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

    /// The last change (the one whose hash is the roster hash).
    pub fn last_change(&self) -> &RosterChange {
        // A roster always holds its creation.
        &self.log[self.log.len() - 1]
    }

    /// Whether this group was created in the first group format (its members cannot invite
    /// anyone new: such logs are refused from the network).
    pub fn is_legacy(&self) -> bool {
        self.log.first().is_some_and(|c| c.legacy)
    }

    /// The length of [`Roster::encode_log`]'s output.
    pub fn encoded_log_len(&self) -> usize {
        5 + self.log.len() * ROSTER_CHANGE_LEN
    }

    /// Encodes the log (`0x0A ‖ n u32 ‖ n × change`; `0x06 …` for the first format).
    pub fn encode_log(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_log_len());
        out.push(if self.is_legacy() {
            LEGACY_ROSTER_LOG_VERSION
        } else {
            ROSTER_LOG_VERSION
        });
        out.put_u32(self.log.len() as u32);
        for c in &self.log {
            out.extend_from_slice(&c.encode());
        }
        out
    }

    /// Decodes a log from the network and verifies it with [`Roster::from_log`].
    pub fn decode_log(bytes: &[u8]) -> Result<Self, RosterError> {
        Self::from_log(&Self::decode_changes(bytes)?)
    }

    /// Decodes a log that this device verified before and kept in its own sealed (authenticated)
    /// storage, as in a [`crate::group::SenderKeyGroup`] snapshot: group id, epochs, hash chain and
    /// operations are checked again, the signatures are not. Re-verifying one Ed25519 signature
    /// per roster change on every load made a 100-member group's state cost ~100 verifications
    /// each time it was read. Never use it for a log that came from the network. Logs of the first
    /// group format are accepted here.
    pub fn restore_log(bytes: &[u8]) -> Result<Self, RosterError> {
        Self::replay(&Self::decode_changes(bytes)?, Signatures::Skip)
    }

    fn decode_changes(bytes: &[u8]) -> Result<Vec<RosterChange>, RosterError> {
        let log: Vec<RosterChange> = Reader::decode_all(bytes, |r| {
            let legacy = match r.u8()? {
                ROSTER_LOG_VERSION => false,
                LEGACY_ROSTER_LOG_VERSION => true,
                v => return Err(DecodeError::UnknownVersion(v)),
            };
            let n = r.count(MAX_ROSTER_CHANGES, ROSTER_CHANGE_LEN)?;
            (0..n)
                .map(|_| {
                    let c = RosterChange::read(r)?;
                    if c.legacy != legacy {
                        return Err(DecodeError::OutOfRange("roster change format"));
                    }
                    Ok(c)
                })
                .collect()
        })?;
        Ok(log)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log of the first group format, as sotto's first releases signed it.
    pub(crate) fn legacy_log(owner: &IdentityKeyPair, member: &IdentityKeyPair) -> Vec<u8> {
        let id = [0x42; GROUP_ID_LEN];
        let create = RosterChange::sign_format(
            owner,
            id,
            0,
            [0; 32],
            RosterOp::Create,
            owner.public(),
            true,
        );
        let add = RosterChange::sign_format(
            owner,
            id,
            1,
            create.hash(),
            RosterOp::Add,
            member.public(),
            true,
        );
        let mut out = vec![LEGACY_ROSTER_LOG_VERSION, 0, 0, 0, 2];
        out.extend_from_slice(&create.encode());
        out.extend_from_slice(&add.encode());
        out
    }

    #[test]
    fn first_format_logs_restore_from_our_storage_only() {
        let (owner, bob) = (
            IdentityKeyPair::from_seed(&[1; 32]),
            IdentityKeyPair::from_seed(&[2; 32]),
        );
        let bytes = legacy_log(&owner, &bob);
        assert_eq!(bytes[5], LEGACY_ROSTER_CHANGE_VERSION);
        assert_eq!(Roster::decode_log(&bytes), Err(RosterError::Legacy));
        let mut r = Roster::restore_log(&bytes).unwrap();
        assert!(r.is_legacy());
        assert_eq!(r.members().len(), 2);
        assert_eq!(r.encode_log(), bytes);
        // Changes continue in the first format (members keep working), checked as before.
        let leave = r.propose_leave(&bob).unwrap();
        assert!(leave.is_legacy());
        let mut r2 = r.clone();
        r2.apply(&RosterChange::decode(&leave.encode()).unwrap())
            .unwrap();
        assert!(!r2.is_member(&bob.public()));
        // A second-format change cannot extend a first-format log.
        let v2 = RosterChange::sign(
            &bob,
            r.group_id(),
            2,
            r.hash(),
            RosterOp::Leave,
            bob.public(),
        );
        assert_eq!(r.apply(&v2), Err(RosterError::WrongGroup));
    }
}
