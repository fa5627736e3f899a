//! Reading a profile's key material the way a thief who copied the device and learned the
//! passphrase would. `sotto demo` uses it to show forward secrecy, post-compromise security and
//! group key rotation against real stolen state, not a hand-made copy.
//!
//! Nothing in the client calls this: it exists so the demo (and tests) can act as the attacker.
//! Everything it returns is secret; it zeroizes on drop and prints nothing secret.

use std::path::Path;

use sotto_protocol::group::SenderKeyGroup;
use sotto_protocol::{IdentityKeyPair, PrekeyStore, Session};

use crate::Error;
use crate::store::Store;

/// Everything secret in a profile that matters for decrypting messages: the identity key, the
/// prekey store (signed, last-resort and unused one-time prekeys) and every session snapshot.
pub struct StolenProfile {
    /// The identity key pair.
    pub identity: IdentityKeyPair,
    /// All prekey private keys still held.
    pub prekeys: PrekeyStore,
    /// Every stored session, most recently used first.
    pub sessions: Vec<Session>,
}

impl std::fmt::Debug for StolenProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StolenProfile")
            .field("identity", &self.identity.public())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Opens the profile in `dir` with `passphrase` (read-only use; it may be open elsewhere) and
/// returns its key material.
pub fn steal_profile(dir: &Path, passphrase: &[u8]) -> Result<StolenProfile, Error> {
    let store = Store::open(dir, passphrase)?;
    let (identity, prekeys) = crate::client::read_keys(&store)?;
    let mut st = store
        .conn
        .prepare("SELECT sealed FROM sessions ORDER BY seq DESC")?;
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut sessions = Vec::with_capacity(rows.len());
    for sealed in rows {
        let snap = store.key.open("session", &sealed)?;
        sessions.push(Session::restore(&snap).map_err(|_| Error::Corrupt("session malformed"))?);
    }
    Ok(StolenProfile {
        identity,
        prekeys,
        sessions,
    })
}

/// One group's Sender Keys state as stored in a profile: the verified roster, the owner's own
/// chain and every other member's chains (what decrypts the group's messages).
pub struct StolenGroup {
    /// The group's local name.
    pub name: String,
    /// The whole group state.
    pub group: SenderKeyGroup,
}

impl std::fmt::Debug for StolenGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StolenGroup")
            .field("name", &self.name)
            .field("group", &self.group)
            .finish()
    }
}

/// Opens the profile in `dir` with `passphrase` and returns the state of every group in it
/// (none if the profile never used groups).
pub fn steal_groups(dir: &Path, passphrase: &[u8]) -> Result<Vec<StolenGroup>, Error> {
    let store = Store::open(dir, passphrase)?;
    let exists: i64 = store.conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'groups'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut st = store.conn.prepare("SELECT sealed FROM groups")?;
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for sealed in rows {
        // The same decoder the client reads its rows with.
        let bytes = store.key.open("group", &sealed)?;
        let (name, group) = crate::client::group::decode_group_row(&bytes)?;
        out.push(StolenGroup { name, group });
    }
    Ok(out)
}
