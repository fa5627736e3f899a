//! The attacker after stealing a device: the profile directory and its passphrase. It reads the
//! key material out of the profile ([`sotto_client::forensics::steal_profile`]) and tries to
//! decrypt the ciphertexts it recorded on the wire, following the conversation along the way a
//! real client would (initial messages through the prekeys, the rest through the sessions).

use std::path::Path;

use sotto_client::forensics::steal_profile;
use sotto_client::rng::OsRng;
use sotto_protocol::{Envelope, IdentityKeyPair, PrekeyStore, Session};
use zeroize::Zeroizing;

use crate::Error;

/// Stolen key material, ready to decrypt recorded messages addressed to its owner.
pub struct Thief {
    identity: IdentityKeyPair,
    prekeys: PrekeyStore,
    sessions: Vec<Session>,
    rng: OsRng,
}

impl std::fmt::Debug for Thief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thief")
            .field("identity", &self.identity.public())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Thief {
    /// Copies everything secret out of the profile at `dir`, opened with `passphrase`.
    pub fn steal(dir: &Path, passphrase: &[u8]) -> Result<Self, Error> {
        let p = steal_profile(dir, passphrase)?;
        Ok(Self {
            identity: p.identity,
            prekeys: p.prekeys,
            sessions: p.sessions,
            rng: OsRng::new()?,
        })
    }

    /// Number of sessions in the stolen state.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Tries to decrypt one recorded envelope addressed to the victim. On success the stolen
    /// state advances, as the victim's own would (so the thief can follow a conversation).
    pub fn try_open(&mut self, body: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let env = Envelope::decode(body).ok()?;
        if let Envelope::Prekey(p) = &env {
            if let Some(s) = self
                .sessions
                .iter_mut()
                .find(|s| s.base_key() == p.base_key())
            {
                let mut trial = s.clone();
                let pt = trial.decrypt(&mut self.rng, &env).ok()?;
                *s = trial;
                return Some(Zeroizing::new(pt));
            }
            let mut store = self.prekeys.clone();
            let (s, pt) = Session::respond(&mut self.rng, &self.identity, &mut store, p).ok()?;
            self.prekeys = store;
            self.sessions.insert(0, s);
            return Some(Zeroizing::new(pt));
        }
        for s in &mut self.sessions {
            let mut trial = s.clone();
            if let Ok(pt) = trial.decrypt(&mut self.rng, &env) {
                *s = trial;
                return Some(Zeroizing::new(pt));
            }
        }
        None
    }
}

/// Whether `plaintext` contains `needle` (the client's payload wraps the text with an id and a
/// timestamp, so the text is a substring).
pub fn contains(plaintext: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && plaintext.windows(needle.len()).any(|w| w == needle)
}

/// The attacker holding a stolen copy of one member's Sender Keys state for a group (read out of
/// the profile with [`sotto_client::forensics::steal_groups`]). It tries recorded group messages
/// the way the member's client would, as sent by the member the relay names.
pub struct GroupThief {
    group: sotto_protocol::group::SenderKeyGroup,
}

impl std::fmt::Debug for GroupThief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupThief")
            .field("group", &self.group)
            .finish()
    }
}

impl GroupThief {
    /// Copies the state of the group named `group` out of the profile at `dir`.
    pub fn steal(dir: &Path, passphrase: &[u8], group: &str) -> Result<Self, Error> {
        let g = sotto_client::forensics::steal_groups(dir, passphrase)?
            .into_iter()
            .find(|g| g.name == group)
            .ok_or_else(|| Error::Scene(format!("no group {group:?} in the stolen profile")))?;
        Ok(Self { group: g.group })
    }

    /// The roster epoch of the stolen state.
    pub fn epoch(&self) -> u64 {
        use sotto_protocol::group::GroupSession;
        self.group.roster().epoch()
    }

    /// Tries to decrypt one recorded group message from `sender`; on success the stolen state
    /// advances as the member's would. The error says why it failed.
    pub fn try_open(
        &mut self,
        sender: &sotto_protocol::IdentityKey,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        use sotto_protocol::group::GroupSession;
        self.group
            .decrypt(sender, body)
            .map(Zeroizing::new)
            .map_err(|e| e.to_string())
    }
}
