//! Group sessions: the [`GroupSession`] trait and [`SenderKeyGroup`], hardened Sender Keys over a
//! signed [`Roster`].
//!
//! The trait is the seam where another group protocol (MLS, RFC 9420) can land beside Sender Keys
//! later: a client holds `dyn`-free values implementing it and never looks inside.
//!
//! [`SenderKeyGroup`] ties the pieces together, sans-IO:
//! - sender keys are accepted only from members of the verified roster, and only for its current
//!   epoch ("another roster" is rejected); a distribution for a *later* epoch is held back
//!   (bounded) until the roster reaches that epoch through signed changes, then checked again;
//! - every roster change moves the epoch, so every member must start a fresh chain
//!   ([`SenderKeyGroup::needs_rotation`]); a removed or leaving member's chains are forgotten;
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
use crate::roster::{MAX_GROUP_SIZE, MAX_ROSTER_CHANGES, ROSTER_CHANGE_LEN, Roster, RosterChange};
use crate::roster::{RosterError, RosterOp};
use crate::sender_keys::{
    DISTRIBUTION_LEN, GROUP_ID_LEN, GroupDecryptError, GroupEncryptError, MAX_CHAINS_PER_SENDER,
    MAX_SKIPPED_SEEDS, SenderChain, SenderKeyDistribution, SenderKeyRecord,
};

/// An own chain is replaced after this many messages.
pub const ROTATE_AFTER_MESSAGES: u32 = 1000;
/// An own chain is replaced when it is this old (7 days, in milliseconds).
pub const ROTATE_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
/// Distributions for a later epoch held back, at most one per sender.
pub const MAX_DEFERRED: usize = MAX_GROUP_SIZE;
/// Version byte of a [`SenderKeyGroup`] snapshot.
pub const GROUP_SNAPSHOT_VERSION: u8 = 0x01;

const MAX_RECORD_SNAPSHOT: usize = 5 + MAX_CHAINS_PER_SENDER * (100 + MAX_SKIPPED_SEEDS * 36);
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
    /// Verifies and applies a signed roster change.
    fn apply_change(&mut self, change: &RosterChange) -> Result<(), RosterError>;
}

/// What happened to a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionOutcome {
    /// Installed: the sender's messages for the current epoch now decrypt.
    Installed,
    /// For a later epoch: held back until the roster gets there.
    Deferred,
}

/// Why a distribution was refused. The group is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// For another group.
    #[error("sender key is for another group")]
    WrongGroup,
    /// For an earlier epoch than the verified roster's: another roster.
    #[error("sender key is for another roster (an earlier epoch)")]
    AnotherRoster,
    /// The sender is not on the verified roster (or is ourselves).
    #[error("sender key from someone who is not a member of the verified roster")]
    NotMember,
    /// The signing key in it is invalid.
    #[error("malformed sender key: {0}")]
    Malformed(#[from] DecodeError),
}

/// Sender Keys over a signed roster: our own chain, what we know of every other member's chains,
/// and the roster that decides who those members are.
#[derive(Clone)]
pub struct SenderKeyGroup {
    me: IdentityKey,
    roster: Roster,
    own: Option<SenderChain>,
    own_started_ms: u64,
    records: Vec<(IdentityKey, SenderKeyRecord)>,
    deferred: Vec<(IdentityKey, SenderKeyDistribution)>,
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
            own_started_ms: 0,
            records: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Whether we are on the roster.
    pub fn is_active(&self) -> bool {
        self.roster.is_member(&self.me)
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
                c.epoch() != self.roster.epoch()
                    || c.iteration() >= ROTATE_AFTER_MESSAGES
                    || now_ms.saturating_sub(self.own_started_ms) >= ROTATE_AFTER_MS
            }
        }
    }

    /// Starts a fresh own chain for the current epoch. Send the returned distribution to every
    /// member in [`SenderKeyGroup::recipients`] over the pairwise sessions.
    pub fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
    ) -> Result<SenderKeyDistribution, GroupEncryptError> {
        if !self.is_active() {
            return Err(GroupEncryptError::NotMember);
        }
        let chain = SenderChain::new(rng, self.roster.group_id(), self.roster.epoch());
        let d = chain.distribution();
        self.own = Some(chain);
        self.own_started_ms = now_ms;
        Ok(d)
    }

    /// Our current chain's distribution (at its current iteration), if it is for this epoch.
    pub fn current_distribution(&self) -> Option<SenderKeyDistribution> {
        self.own
            .as_ref()
            .filter(|c| c.epoch() == self.roster.epoch())
            .map(SenderChain::distribution)
    }

    /// Whether we hold `member`'s sender key for the current epoch (always true for us once we
    /// have our own chain for it).
    pub fn has_current_key(&self, member: &IdentityKey) -> bool {
        let (id, epoch) = (self.roster.group_id(), self.roster.epoch());
        if *member == self.me {
            return self.own.as_ref().is_some_and(|c| c.epoch() == epoch);
        }
        self.records
            .iter()
            .any(|(s, r)| s == member && r.has_epoch(&id, epoch))
    }

    /// Messages sent on our current chain.
    pub fn own_iteration(&self) -> Option<u32> {
        self.own.as_ref().map(SenderChain::iteration)
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
        if *sender == self.me {
            return Err(DistributionError::NotMember);
        }
        if d.epoch < self.roster.epoch() {
            return Err(DistributionError::AnotherRoster);
        }
        if d.epoch > self.roster.epoch() {
            self.deferred.retain(|(s, _)| s != sender);
            if self.deferred.len() >= MAX_DEFERRED {
                self.deferred.remove(0);
            }
            self.deferred.push((*sender, d.clone()));
            return Ok(DistributionOutcome::Deferred);
        }
        if !self.roster.is_member(sender) {
            return Err(DistributionError::NotMember);
        }
        match self.records.iter_mut().find(|(s, _)| s == sender) {
            Some((_, r)) => r.process_distribution(d)?,
            None => {
                let mut r = SenderKeyRecord::new();
                r.process_distribution(d)?;
                self.records.push((*sender, r));
            }
        }
        Ok(DistributionOutcome::Installed)
    }

    /// Stored skipped seeds over all senders (bounded by 2000 per chain, 5 chains per sender).
    pub fn skipped_count(&self) -> usize {
        self.records.iter().map(|(_, r)| r.skipped_count()).sum()
    }

    /// A versioned snapshot (secrets included: encrypt before storing).
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![GROUP_SNAPSHOT_VERSION]);
        out.extend_from_slice(self.me.as_bytes());
        out.put_var_bytes(&self.roster.encode_log());
        out.put_bool(self.own.is_some());
        if let Some(c) = &self.own {
            out.put_var_bytes(&c.snapshot());
        }
        out.put_u64(self.own_started_ms);
        out.put_u32(self.records.len() as u32);
        for (id, r) in &self.records {
            out.extend_from_slice(id.as_bytes());
            out.put_var_bytes(&r.snapshot());
        }
        out.put_u32(self.deferred.len() as u32);
        for (id, d) in &self.deferred {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&d.encode());
        }
        out
    }

    /// Restores a group from [`SenderKeyGroup::snapshot`] output. A snapshot is this device's own
    /// state, kept in sealed storage: the roster log's structure (epochs, hash chain, operations)
    /// is checked again, its signatures are not ([`Roster::restore_log`]); they were verified
    /// when each change was applied.
    pub fn restore(bytes: &[u8]) -> Result<Self, RosterError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != GROUP_SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let me = IdentityKey::from_bytes(&r.array()?)?;
        let roster = Roster::restore_log(r.var_bytes(MAX_LOG_LEN)?)?;
        let own = if r.bool()? {
            Some(SenderChain::restore(r.var_bytes(256)?)?)
        } else {
            None
        };
        let own_started_ms = r.u64()?;
        let n = r.count(MAX_GROUP_SIZE, 36)?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let id = IdentityKey::from_bytes(&r.array()?)?;
            records.push((
                id,
                SenderKeyRecord::restore(r.var_bytes(MAX_RECORD_SNAPSHOT)?)?,
            ));
        }
        let m = r.count(MAX_DEFERRED, 32 + DISTRIBUTION_LEN)?;
        let mut deferred = Vec::with_capacity(m);
        for _ in 0..m {
            let id = IdentityKey::from_bytes(&r.array()?)?;
            deferred.push((
                id,
                SenderKeyDistribution::decode(r.bytes(DISTRIBUTION_LEN)?)?,
            ));
        }
        r.finish()?;
        Ok(Self {
            me,
            roster,
            own,
            own_started_ms,
            records,
            deferred,
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
        match &mut self.own {
            Some(c) if c.epoch() == self.roster.epoch() => c.encrypt(plaintext),
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
        let record = self
            .records
            .iter_mut()
            .find(|(s, _)| s == sender)
            .map(|(_, r)| r)
            .ok_or(GroupDecryptError::UnknownChain)?;
        record.decrypt(message)
    }

    /// Applies a change; on a removal or leave forgets that member's chains (all chains, if it
    /// is us). Our own chain is dropped: [`SenderKeyGroup::needs_rotation`] is then true.
    fn apply_change(&mut self, change: &RosterChange) -> Result<(), RosterError> {
        self.roster.apply(change)?;
        self.own = None;
        if matches!(change.op, RosterOp::Remove | RosterOp::Leave) {
            if change.member == self.me {
                self.records.clear();
                self.deferred.clear();
                return Ok(());
            }
            self.records.retain(|(s, _)| *s != change.member);
            self.deferred.retain(|(s, _)| *s != change.member);
        }
        let epoch = self.roster.epoch();
        let ready: Vec<_> = self
            .deferred
            .iter()
            .filter(|(_, d)| d.epoch == epoch)
            .cloned()
            .collect();
        self.deferred.retain(|(_, d)| d.epoch > epoch);
        for (sender, d) in ready {
            // A deferred key from someone the roster does not list is dropped here.
            let _ = self.process_distribution(&sender, &d);
        }
        Ok(())
    }
}
