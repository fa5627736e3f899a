//! Group sessions: the [`GroupSession`] trait and [`SenderKeyGroup`], hardened Sender Keys over a
//! signed [`Roster`].
//!
//! The trait is the seam where another group protocol (MLS, RFC 9420) can land beside Sender Keys
//! later: a client holds values implementing it and never looks inside.
//!
//! [`SenderKeyGroup`] ties the pieces together, sans-IO:
//! - a sender key is accepted only from a member of the verified roster, over that member's own
//!   pairwise session (the distribution names the member and the pairwise peer must be it), with
//!   a signing key no other member holds, and only for the current roster **hash**. One for a
//!   *later* roster (epoch ahead) is held back (one per member) until signed changes bring the
//!   roster there; it also shows that the roster moved on without us (a change, maybe a removal,
//!   was withheld or is late), so sending pauses ([`GroupEncryptError::RosterBehind`]) until the
//!   roster catches up or the owner's log arrives ([`SenderKeyGroup::sync_from_owner`]). One for an
//!   earlier roster of ours is stale; one for a roster we never had is a fork, refused;
//! - every roster change moves the roster hash, so every member must start a fresh chain
//!   ([`SenderKeyGroup::needs_rotation`]); a removed or leaving member's chains are forgotten;
//! - once a member's chain for the current roster is installed, its older chains stop working
//!   past the end its distribution announced (see [`crate::sender_keys`]);
//! - forks: an owner-signed change that extends one of our earlier states replaces a suffix of
//!   other members' leaves ([`SenderKeyGroup::receive_change`], [`Roster::adopt`]);
//! - own chains also rotate on a schedule: after [`ROTATE_AFTER_MESSAGES`] messages or
//!   [`ROTATE_AFTER_MS`], whichever comes first, so a stolen state stops working.
//!
//! The caller sends the distribution returned by [`SenderKeyGroup::rotate`] to every other
//! member ([`SenderKeyGroup::recipients`]) inside the pairwise sessions, then its group messages.

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::IdentityKey;
use crate::roster::{Adopted, MAX_GROUP_SIZE, MAX_ROSTER_CHANGES, ROSTER_CHANGE_LEN, Roster};
use crate::roster::{RosterChange, RosterError, RosterOp};
use crate::sender_keys::{
    ChainContext, DISTRIBUTION_LEN, GROUP_ID_LEN, GroupDecryptError, GroupEncryptError,
    GroupHeader, InstallError, MAX_RECORD_SNAPSHOT_LEN, ROSTER_HASH_LEN, SENDER_CHAIN_SNAPSHOT_LEN,
    SenderChain, SenderKeyDistribution, SenderKeyRecord,
};

/// An own chain is replaced after this many messages.
pub const ROTATE_AFTER_MESSAGES: u32 = 1000;
/// An own chain is replaced when it is this old (7 days, in milliseconds).
pub const ROTATE_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
/// Distributions for a later roster held back: at most one per member.
pub const MAX_DEFERRED: usize = MAX_GROUP_SIZE;
/// Version byte of a [`SenderKeyGroup`] snapshot.
pub const GROUP_SNAPSHOT_VERSION: u8 = 0x02;
/// Version byte of the first format's group snapshots (read for migration only).
pub const LEGACY_GROUP_SNAPSHOT_VERSION: u8 = 0x01;

const MAX_LOG_LEN: usize = 5 + MAX_ROSTER_CHANGES * ROSTER_CHANGE_LEN;

/// A group protocol as a client drives it. Sender Keys implement it now; MLS could later.
pub trait GroupSession {
    /// The group id.
    fn group_id(&self) -> [u8; GROUP_ID_LEN];
    /// The verified roster.
    fn roster(&self) -> &Roster;
    /// Encrypts one group message to the current roster.
    fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupEncryptError>;
    /// Decrypts a group message that the relay says came from `sender`.
    fn decrypt(
        &mut self,
        sender: &IdentityKey,
        message: &[u8],
    ) -> Result<Vec<u8>, GroupDecryptError>;
    /// Verifies and applies a signed roster change that extends the roster.
    fn apply_change(&mut self, change: &RosterChange) -> Result<(), RosterError>;
}

/// What happened to a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionOutcome {
    /// Installed: the sender's messages for the current roster now decrypt.
    Installed,
    /// For a later roster: held back until the roster gets there; sending is paused meanwhile.
    Deferred,
}

/// Why a distribution was refused. The group is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// For another group.
    #[error("sender key is for another group")]
    WrongGroup,
    /// It names another member than the one whose pairwise session delivered it (a member
    /// forwarding someone else's key as her own).
    #[error("sender key names another member than the one who sent it")]
    WrongSender,
    /// Its signing key is already installed for another member (or is our own).
    #[error("sender key's signing key belongs to another member")]
    SigningKeyInUse,
    /// For an earlier roster of ours: the sender had not seen the latest changes (stale).
    #[error("sender key is for an earlier roster")]
    AnotherRoster,
    /// For a roster we never had at an epoch we passed: the sender is on another branch (fork).
    #[error("sender key is for a roster this member does not know (a fork)")]
    UnknownRoster,
    /// For a chain the sender already replaced (an old distribution delivered again).
    #[error("sender key is for a retired chain")]
    Retired,
    /// The sender is not on the verified roster (or is ourselves).
    #[error("sender key from someone who is not a member of the verified roster")]
    NotMember,
    /// The signing key in it is invalid.
    #[error("malformed sender key: {0}")]
    Malformed(#[from] DecodeError),
}

/// What [`SenderKeyGroup::receive_change`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// The change extended the roster.
    Applied,
    /// Already in the roster.
    AlreadyApplied,
    /// An owner change from another branch replaced our latest changes (leaves by other
    /// members, listed): the owner's log is authoritative.
    Adopted(Vec<RosterChange>),
}

/// A member that showed us a roster we are not at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    member: IdentityKey,
    epoch: u64,
    hash: [u8; ROSTER_HASH_LEN],
}

/// Sender Keys over a signed roster: our own chain, what we know of every other member's chains,
/// and the roster that decides who those members are.
#[derive(Clone)]
pub struct SenderKeyGroup {
    me: IdentityKey,
    roster: Roster,
    own: Option<SenderChain>,
    /// Our last chain, kept only for its id and end after the roster moved (a new chain names it).
    previous: Option<(u32, u32)>,
    own_started_ms: u64,
    records: Vec<SenderKeyRecord>,
    deferred: Vec<SenderKeyDistribution>,
    /// Members who showed a later roster than ours (one each): sending pauses.
    ahead: Vec<Claim>,
}

impl std::fmt::Debug for SenderKeyGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyGroup")
            .field("me", &self.me)
            .field("epoch", &self.roster.epoch())
            .field("members", &self.roster.members().len())
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl SenderKeyGroup {
    /// A group as `me` sees it, with no chains yet.
    pub fn new(me: IdentityKey, roster: Roster) -> Self {
        Self {
            me,
            roster,
            own: None,
            previous: None,
            own_started_ms: 0,
            records: Vec::new(),
            deferred: Vec::new(),
            ahead: Vec::new(),
        }
    }

    /// Whether we are on the roster.
    pub fn is_active(&self) -> bool {
        self.roster.is_member(&self.me)
    }

    /// Whether we own the group.
    pub fn is_owner(&self) -> bool {
        self.roster.owner() == self.me
    }

    /// The members other than us: who gets our distributions and group messages.
    pub fn recipients(&self) -> Vec<IdentityKey> {
        self.roster
            .members()
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect()
    }

    /// Whether our chain must be replaced before the next message: none yet, the roster moved
    /// on, or the schedule ([`ROTATE_AFTER_MESSAGES`], [`ROTATE_AFTER_MS`]) says so.
    pub fn needs_rotation(&self, now_ms: u64) -> bool {
        if !self.is_active() {
            return false;
        }
        match &self.own {
            None => true,
            Some(c) => {
                c.roster_hash() != self.roster.hash()
                    || c.iteration() >= ROTATE_AFTER_MESSAGES
                    || now_ms.saturating_sub(self.own_started_ms) >= ROTATE_AFTER_MS
            }
        }
    }

    /// Starts a fresh own chain for the current roster. Send the returned distribution to every
    /// member in [`SenderKeyGroup::recipients`] over the pairwise sessions.
    pub fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
    ) -> Result<SenderKeyDistribution, GroupEncryptError> {
        if !self.is_active() {
            return Err(GroupEncryptError::NotMember);
        }
        let ctx = ChainContext {
            group_id: self.roster.group_id(),
            sender: self.me,
            epoch: self.roster.epoch(),
            roster_hash: self.roster.hash(),
        };
        let previous = self.own.take();
        let chain = match (&previous, self.previous) {
            (Some(p), _) => SenderChain::new(rng, ctx, Some(p)),
            (None, Some((id, end))) => {
                let mut c = SenderChain::new(rng, ctx, None);
                c.set_previous(id, end);
                c
            }
            (None, None) => SenderChain::new(rng, ctx, None),
        };
        let d = chain.distribution();
        self.previous = None;
        self.own = Some(chain);
        self.own_started_ms = now_ms;
        Ok(d)
    }

    /// Our current chain's distribution (at its current iteration), if it is for this roster.
    pub fn current_distribution(&self) -> Option<SenderKeyDistribution> {
        self.own
            .as_ref()
            .filter(|c| c.roster_hash() == self.roster.hash())
            .map(SenderChain::distribution)
    }

    fn record(&self, member: &IdentityKey) -> Option<&SenderKeyRecord> {
        self.records.iter().find(|r| r.owner() == *member)
    }

    /// Whether we hold `member`'s sender key for the current roster (always true for us once we
    /// have our own chain for it).
    pub fn has_current_key(&self, member: &IdentityKey) -> bool {
        let hash = self.roster.hash();
        if *member == self.me {
            return self.own.as_ref().is_some_and(|c| c.roster_hash() == hash);
        }
        self.record(member).is_some_and(|r| r.has_roster(&hash))
    }

    /// Messages sent on our current chain.
    pub fn own_iteration(&self) -> Option<u32> {
        self.own.as_ref().map(SenderChain::iteration)
    }

    /// Whether sending is paused: a member showed a later roster than ours (see the module
    /// documentation). The owner never pauses: its log is authoritative.
    pub fn is_paused(&self) -> bool {
        !self.is_owner() && !self.ahead.is_empty()
    }

    /// The member and epoch of the latest roster another member showed us, when ahead of ours.
    pub fn roster_ahead(&self) -> Option<(IdentityKey, u64)> {
        self.ahead
            .iter()
            .max_by_key(|c| c.epoch)
            .map(|c| (c.member, c.epoch))
    }

    /// Installs a distribution received from `sender` over its pairwise session.
    pub fn process_distribution(
        &mut self,
        sender: &IdentityKey,
        d: &SenderKeyDistribution,
    ) -> Result<DistributionOutcome, DistributionError> {
        if d.group_id != self.roster.group_id() {
            return Err(DistributionError::WrongGroup);
        }
        if *sender == self.me || !self.roster.is_member(sender) {
            return Err(DistributionError::NotMember);
        }
        if d.sender != *sender {
            return Err(DistributionError::WrongSender);
        }
        let signing_in_use = self
            .records
            .iter()
            .any(|r| r.owner() != *sender && r.has_signing_key(&d.signing_key))
            || self
                .own
                .as_ref()
                .is_some_and(|c| c.signing_public() == d.signing_key)
            || self
                .deferred
                .iter()
                .any(|o| o.sender != *sender && o.signing_key == d.signing_key);
        if signing_in_use {
            return Err(DistributionError::SigningKeyInUse);
        }
        if d.roster_hash == self.roster.hash() {
            if d.epoch != self.roster.epoch() {
                return Err(DistributionError::UnknownRoster);
            }
            self.install(d)?;
            self.ahead.retain(|c| c.member != *sender);
            return Ok(DistributionOutcome::Installed);
        }
        if d.epoch > self.roster.epoch() {
            self.deferred.retain(|o| o.sender != *sender);
            self.deferred.push(d.clone());
            self.ahead.retain(|c| c.member != *sender);
            self.ahead.push(Claim {
                member: *sender,
                epoch: d.epoch,
                hash: d.roster_hash,
            });
            return Ok(DistributionOutcome::Deferred);
        }
        if self.roster.hash_at(d.epoch) == Some(d.roster_hash) {
            return Err(DistributionError::AnotherRoster);
        }
        Err(DistributionError::UnknownRoster)
    }

    fn install(&mut self, d: &SenderKeyDistribution) -> Result<(), DistributionError> {
        let index = match self.records.iter().position(|r| r.owner() == d.sender) {
            Some(i) => i,
            None => {
                self.records.push(SenderKeyRecord::new(d.sender));
                self.records.len() - 1
            }
        };
        let mut record = self.records[index].clone();
        record.process_distribution(d).map_err(|e| match e {
            InstallError::Retired => DistributionError::Retired,
            _ => DistributionError::WrongSender,
        })?;
        self.records[index] = record;
        Ok(())
    }

    /// Receives a signed roster change from the network: applied if it extends the roster; if it
    /// is an owner change that extends one of our earlier states and our later changes are only
    /// other members' leaves, the owner's branch replaces ours. On error nothing changes.
    pub fn receive_change(&mut self, change: &RosterChange) -> Result<ChangeOutcome, RosterError> {
        if self.roster.hash_at(change.epoch) == Some(change.hash()) {
            return Ok(ChangeOutcome::AlreadyApplied);
        }
        match self.apply_change(change) {
            Ok(()) => Ok(ChangeOutcome::Applied),
            Err(e @ (RosterError::WrongPreviousHash | RosterError::WrongEpoch)) => {
                let Some(branch) = self.roster.branch_with(change) else {
                    return Err(e);
                };
                match self.adopt(&branch)? {
                    Adopted::Replaced(undone) => Ok(ChangeOutcome::Adopted(undone)),
                    _ => Ok(ChangeOutcome::Applied),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the owner's whole log (already verified from its creation, and delivered by the
    /// owner's own pairwise session): extends or, for a suffix of others' leaves, replaces ours.
    /// Either way the owner's roster is now known, so pauses caused by other members' claims end.
    pub fn sync_from_owner(&mut self, owner_log: &Roster) -> Result<Adopted, RosterError> {
        if owner_log.owner() != self.roster.owner() {
            return Err(RosterError::WrongGroup);
        }
        let adopted = self.adopt(owner_log)?;
        self.ahead.clear();
        Ok(adopted)
    }

    fn adopt(&mut self, other: &Roster) -> Result<Adopted, RosterError> {
        let mut roster = self.roster.clone();
        let adopted = roster.adopt(other, &self.me)?;
        if adopted != Adopted::Unchanged {
            let before = std::mem::replace(&mut self.roster, roster);
            for m in before.members() {
                if !self.roster.is_member(m) {
                    self.forget(m);
                }
            }
            self.after_roster_change();
        }
        Ok(adopted)
    }

    /// Whether `change` is a member's leave that raced one of our own changes (we are the owner):
    /// re-issue it as a removal ([`Roster::forked_leave`]).
    pub fn forked_leave(&self, change: &RosterChange) -> bool {
        self.is_owner() && self.roster.forked_leave(change)
    }

    fn forget(&mut self, member: &IdentityKey) {
        if *member == self.me {
            self.records.clear();
            self.deferred.clear();
            self.ahead.clear();
            self.own = None;
            return;
        }
        self.records.retain(|r| r.owner() != *member);
        self.deferred.retain(|d| d.sender != *member);
        self.ahead.retain(|c| c.member != *member);
    }

    /// After the roster moved: our chain is retired (noting where it ended, for the next
    /// distribution), claims now reached are settled, deferred keys for this roster installed.
    fn after_roster_change(&mut self) {
        if let Some(own) = self.own.take() {
            self.previous = Some((own.chain_id(), own.iteration()));
        }
        let (epoch, hash) = (self.roster.epoch(), self.roster.hash());
        self.ahead.retain(|c| c.epoch > epoch);
        let ready: Vec<_> = self
            .deferred
            .iter()
            .filter(|d| d.roster_hash == hash)
            .cloned()
            .collect();
        self.deferred.retain(|d| d.epoch > epoch);
        for d in ready {
            // A deferred key from someone the roster no longer lists is dropped here.
            let sender = d.sender;
            let _ = self.process_distribution(&sender, &d);
        }
    }

    /// Stored skipped seeds over all senders (bounded by 2000 per chain, 2 chains per sender).
    pub fn skipped_count(&self) -> usize {
        self.records
            .iter()
            .map(SenderKeyRecord::skipped_count)
            .sum()
    }

    /// Where a group message that could not be decrypted stands: for a later roster (it may
    /// decrypt once the roster catches up), for ours (its key may still come), or neither.
    pub fn message_roster(&self, header: &GroupHeader) -> GroupDecryptError {
        if header.roster_hash == self.roster.hash() {
            GroupDecryptError::UnknownChain
        } else if header.epoch > self.roster.epoch() {
            GroupDecryptError::RosterAhead
        } else if self.roster.hash_at(header.epoch) == Some(header.roster_hash) {
            GroupDecryptError::OldRoster
        } else {
            GroupDecryptError::UnknownRoster
        }
    }

    fn snapshot_len(&self) -> usize {
        1 + 32
            + 4
            + self.roster.encoded_log_len()
            + 1
            + self.own.as_ref().map_or(0, |_| SENDER_CHAIN_SNAPSHOT_LEN)
            + 9
            + 8
            + 4
            + self
                .records
                .iter()
                .map(|r| 4 + r.snapshot_len_hint())
                .sum::<usize>()
            + 4
            + self.deferred.len() * DISTRIBUTION_LEN
            + 4
            + self.ahead.len() * (32 + 8 + 32)
    }

    /// A versioned snapshot (secrets included: encrypt before storing). Sized exactly, so no
    /// copy of a key is left behind in a smaller buffer that grew.
    ///
    /// ```text
    /// 0x02 ‖ me [32] ‖ var(log) ‖ has_own bool ‖ [own chain snapshot [125]] ‖ has_previous bool
    ///   ‖ previous chain_id u32 ‖ previous end u32 ‖ own_started_ms u64
    ///   ‖ n u32 (≤ 256) ‖ n × var(record snapshot) ‖ m u32 (≤ 256) ‖ m × distribution [233]
    ///   ‖ k u32 (≤ 256) ‖ k × (member [32] ‖ epoch u64 ‖ roster_hash [32])
    /// ```
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.snapshot_len()));
        out.push(GROUP_SNAPSHOT_VERSION);
        out.extend_from_slice(self.me.as_bytes());
        out.put_var_bytes(&self.roster.encode_log());
        out.put_bool(self.own.is_some());
        if let Some(c) = &self.own {
            out.extend_from_slice(&c.snapshot());
        }
        out.put_bool(self.previous.is_some());
        let (pid, pend) = self.previous.unwrap_or((0, 0));
        out.put_u32(pid);
        out.put_u32(pend);
        out.put_u64(self.own_started_ms);
        out.put_u32(self.records.len() as u32);
        for r in &self.records {
            let start = out.len();
            out.put_u32(0);
            r.write(&mut out);
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.put_u32(self.deferred.len() as u32);
        for d in &self.deferred {
            out.extend_from_slice(&d.encode());
        }
        out.put_u32(self.ahead.len() as u32);
        for c in &self.ahead {
            out.extend_from_slice(c.member.as_bytes());
            out.put_u64(c.epoch);
            out.extend_from_slice(&c.hash);
        }
        out
    }

    /// Restores a group from [`SenderKeyGroup::snapshot`] output. A snapshot is this device's own
    /// state, kept in sealed storage: the roster log's structure (epochs, hash chain, operations)
    /// is checked again, its signatures are not ([`Roster::restore_log`]); they were verified
    /// when each change was applied.
    ///
    /// A snapshot of the first format (version `0x01`) restores its roster and nothing else: its
    /// chains are of the first group-message format, which is no longer read, so every member
    /// starts a new chain ([`SenderKeyGroup::needs_rotation`] is true).
    pub fn restore(bytes: &[u8]) -> Result<Self, RosterError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version == LEGACY_GROUP_SNAPSHOT_VERSION {
            // `0x01 ‖ me ‖ var(log) ‖ …`: the rest holds only first-format chains.
            let me = IdentityKey::from_bytes(&r.array()?)?;
            let roster = Roster::restore_log(r.var_bytes(MAX_LOG_LEN)?)?;
            return Ok(Self::new(me, roster));
        }
        if version != GROUP_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let me = IdentityKey::from_bytes(&r.array()?)?;
        let roster = Roster::restore_log(r.var_bytes(MAX_LOG_LEN)?)?;
        let own = if r.bool()? {
            Some(SenderChain::restore(r.bytes(SENDER_CHAIN_SNAPSHOT_LEN)?)?)
        } else {
            None
        };
        let has_previous = r.bool()?;
        let previous = (r.u32()?, r.u32()?);
        let own_started_ms = r.u64()?;
        let n = r.count(MAX_GROUP_SIZE, 4)?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let record = SenderKeyRecord::restore(r.var_bytes(MAX_RECORD_SNAPSHOT_LEN)?)?;
            if records
                .iter()
                .any(|o: &SenderKeyRecord| o.owner() == record.owner())
            {
                return Err(DecodeError::OutOfRange("duplicate sender record").into());
            }
            records.push(record);
        }
        let m = r.count(MAX_DEFERRED, DISTRIBUTION_LEN)?;
        let mut deferred = Vec::with_capacity(m);
        for _ in 0..m {
            deferred.push(SenderKeyDistribution::decode(r.bytes(DISTRIBUTION_LEN)?)?);
        }
        let k = r.count(MAX_GROUP_SIZE, 72)?;
        let mut ahead = Vec::with_capacity(k);
        for _ in 0..k {
            ahead.push(Claim {
                member: IdentityKey::from_bytes(&r.array()?)?,
                epoch: r.u64()?,
                hash: r.array()?,
            });
        }
        r.finish()?;
        Ok(Self {
            me,
            roster,
            own,
            previous: has_previous.then_some(previous),
            own_started_ms,
            records,
            deferred,
            ahead,
        })
    }
}

impl GroupSession for SenderKeyGroup {
    fn group_id(&self) -> [u8; GROUP_ID_LEN] {
        self.roster.group_id()
    }

    fn roster(&self) -> &Roster {
        &self.roster
    }

    fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupEncryptError> {
        if !self.is_active() {
            return Err(GroupEncryptError::NotMember);
        }
        if self.is_paused() {
            return Err(GroupEncryptError::RosterBehind);
        }
        match &mut self.own {
            Some(c) if c.roster_hash() == self.roster.hash() => c.encrypt(plaintext),
            _ => Err(GroupEncryptError::NoSenderChain),
        }
    }

    fn decrypt(
        &mut self,
        sender: &IdentityKey,
        message: &[u8],
    ) -> Result<Vec<u8>, GroupDecryptError> {
        if !self.roster.is_member(sender) || *sender == self.me {
            return Err(GroupDecryptError::NotMember);
        }
        let header = GroupHeader::decode(message)?;
        if header.group_id != self.roster.group_id() {
            return Err(GroupDecryptError::WrongGroup);
        }
        let record = self.records.iter_mut().find(|r| r.owner() == *sender);
        match record {
            Some(r) if r.has_chain(header.chain_id) => r.decrypt(message),
            _ => Err(self.message_roster(&header)),
        }
    }

    /// Applies a change; on a removal or leave forgets that member's chains (all chains, if it
    /// is us). Our own chain is retired: [`SenderKeyGroup::needs_rotation`] is then true.
    fn apply_change(&mut self, change: &RosterChange) -> Result<(), RosterError> {
        self.roster.apply(change)?;
        if matches!(change.op, RosterOp::Remove | RosterOp::Leave) {
            self.forget(&change.member);
        }
        self.after_roster_change();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;

    #[test]
    fn a_first_format_snapshot_keeps_its_roster_and_starts_new_chains() {
        let (owner, bob) = (
            IdentityKeyPair::from_seed(&[1; 32]),
            IdentityKeyPair::from_seed(&[2; 32]),
        );
        let log = crate::roster::tests::legacy_log(&owner, &bob);
        // `0x01 ‖ me ‖ var(log) ‖ has_own 0 ‖ own_started_ms ‖ 0 records ‖ 0 deferred`.
        let mut snap = vec![LEGACY_GROUP_SNAPSHOT_VERSION];
        snap.extend_from_slice(bob.public().as_bytes());
        snap.put_var_bytes(&log);
        snap.push(0);
        snap.put_u64(5);
        snap.put_u32(0);
        snap.put_u32(0);
        let mut g = SenderKeyGroup::restore(&snap).unwrap();
        assert_eq!(g.roster().members().len(), 2);
        assert!(g.needs_rotation(0));
        let mut rng = rand_chacha_rng();
        g.rotate(&mut rng, 0).unwrap();
        assert!(g.encrypt(b"hello").is_ok());
        let again = SenderKeyGroup::restore(&g.snapshot()).unwrap();
        assert_eq!(again.snapshot(), g.snapshot());
    }

    fn rand_chacha_rng() -> impl CryptoRng {
        use rand_core::SeedableRng;
        rand_chacha::ChaCha20Rng::from_seed([3; 32])
    }
}
