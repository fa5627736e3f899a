//! Reading a profile's key material the way a thief who copied the device and learned the
//! passphrase would. `sotto demo` uses it to show forward secrecy and post-compromise security
//! against real stolen state, not a hand-made copy.
//!
//! Nothing in the client calls this: it exists so the demo (and tests) can act as the attacker.
//! Everything it returns is secret; it zeroizes on drop and prints nothing secret.

use std::path::Path;

use sotto_protocol::{IdentityKeyPair, PrekeyStore, Session};
use zeroize::Zeroizing;

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
    let seed = store
        .kv_get("identity")?
        .ok_or(Error::Corrupt("identity missing"))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt("identity malformed"))?;
    let seed = Zeroizing::new(seed);
    let identity = IdentityKeyPair::from_seed(&seed);
    let prekeys = PrekeyStore::restore(
        &store
            .kv_get("prekeys")?
            .ok_or(Error::Corrupt("prekeys missing"))?,
    )
    .map_err(|_| Error::Corrupt("prekeys malformed"))?;
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
