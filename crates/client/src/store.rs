//! The profile on disk: one SQLite file whose rows are sealed values (see [`crate::seal`]).
//!
//! ```text
//!   meta(name PRIMARY KEY, value)               plaintext: format, salt, KDF parameters, check
//!   kv(name PRIMARY KEY, sealed)                identity seed, prekey store, account
//!   contacts(id PRIMARY KEY, sealed)            one Contact each
//!   sessions(id PRIMARY KEY, contact, seq, sealed)   Session snapshots (seq: most recent active)
//!   messages(id PRIMARY KEY, contact, tag UNIQUE, sealed)   history, in arrival order
//!   outbox(id PRIMARY KEY, sealed)              frames waiting for the relay, in order
//!   seen(tag PRIMARY KEY)                       message ids already processed (duplicates)
//! ```
//! What is not sealed: the row counts, the contact row a message or session belongs to (an
//! integer), and lookup tags (HMACs under a profile key). Every change that belongs together is
//! one SQLite transaction, so a crash leaves either the old or the new state.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::Error;
use crate::rng::OsRng;
use crate::seal::{KdfParams, ProfileKey};

/// The profile format version (in `meta`).
pub(crate) const FORMAT_VERSION: i64 = 1;
const CHECK_LABEL: &str = "check";
const CHECK_VALUE: &[u8] = b"sotto profile check v1";

/// The file name of the profile database inside the profile directory.
pub const DB_FILE: &str = "profile.db";

pub(crate) struct Store {
    pub(crate) conn: Connection,
    pub(crate) key: ProfileKey,
    pub(crate) rng: OsRng,
}

fn db(e: rusqlite::Error) -> Error {
    Error::Storage(e.to_string())
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        db(e)
    }
}

impl Store {
    /// Creates a new, empty profile database (fails if one exists).
    pub(crate) fn create(dir: &Path, passphrase: &[u8], params: KdfParams) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Storage(e.to_string()))?;
        let path = dir.join(DB_FILE);
        if path.exists() {
            return Err(Error::ProfileExists);
        }
        let conn = Connection::open(&path)?;
        Self::pragmas(&conn)?;
        let mut rng = OsRng::new()?;
        let mut salt = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng, &mut salt);
        let key = ProfileKey::derive(passphrase, &salt, params)?;
        let check = key.seal(&mut rng, CHECK_LABEL, CHECK_VALUE)?;
        let params_json = serde_json::to_vec(&params).map_err(|e| Error::Storage(e.to_string()))?;
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE meta(name TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE kv(name TEXT PRIMARY KEY, sealed BLOB NOT NULL);
             CREATE TABLE contacts(id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
             CREATE TABLE sessions(id INTEGER PRIMARY KEY, contact INTEGER NOT NULL,
                                   seq INTEGER NOT NULL, sealed BLOB NOT NULL);
             CREATE TABLE messages(id INTEGER PRIMARY KEY, contact INTEGER NOT NULL,
                                   tag BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);
             CREATE INDEX messages_contact ON messages(contact, id);
             CREATE TABLE outbox(id INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
             CREATE TABLE seen(tag BLOB PRIMARY KEY);",
        )?;
        let tx = || -> Result<(), rusqlite::Error> {
            let mut ins = conn.prepare("INSERT INTO meta(name, value) VALUES (?1, ?2)")?;
            ins.execute(params!["format", FORMAT_VERSION.to_string().into_bytes()])?;
            ins.execute(params!["salt", salt.to_vec()])?;
            ins.execute(params!["kdf", params_json])?;
            ins.execute(params!["check", check])?;
            Ok(())
        };
        tx().map_err(db)?;
        conn.execute_batch("COMMIT;")?;
        Ok(Self { conn, key, rng })
    }

    /// Opens an existing profile with `passphrase`.
    pub(crate) fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, Error> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(Error::NoProfile(dir.display().to_string()));
        }
        let conn = Connection::open(&path)?;
        Self::pragmas(&conn)?;
        let meta = |name: &str| -> Result<Vec<u8>, Error> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(Error::Corrupt("profile metadata missing"))
        };
        let format = meta("format")?;
        if format != FORMAT_VERSION.to_string().into_bytes() {
            return Err(Error::Corrupt("unsupported profile format"));
        }
        let salt = meta("salt")?;
        let params: KdfParams = serde_json::from_slice(&meta("kdf")?)
            .map_err(|_| Error::Corrupt("profile metadata malformed"))?;
        let key = ProfileKey::derive(passphrase, &salt, params)?;
        let check = meta("check")?;
        match key.open(CHECK_LABEL, &check) {
            Ok(v) if v.as_slice() == CHECK_VALUE => {}
            _ => return Err(Error::WrongPassphrase),
        }
        Ok(Self {
            conn,
            key,
            rng: OsRng::new()?,
        })
    }

    fn pragmas(conn: &Connection) -> Result<(), Error> {
        // WAL + FULL: a committed transaction survives a crash of the process or the machine.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(())
    }

    pub(crate) fn seal_json<T: Serialize>(&mut self, label: &str, v: &T) -> Result<Vec<u8>, Error> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(v).map_err(|_| Error::Corrupt("cannot serialize value"))?,
        );
        self.key.seal(&mut self.rng, label, &bytes)
    }

    pub(crate) fn open_json<T: DeserializeOwned>(
        &self,
        label: &str,
        sealed: &[u8],
    ) -> Result<T, Error> {
        let bytes = self.key.open(label, sealed)?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Corrupt("sealed value malformed"))
    }

    pub(crate) fn kv_get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT sealed FROM kv WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        sealed.map(|s| self.key.open(name, &s)).transpose()
    }

    pub(crate) fn kv_put_tx(tx: &Transaction<'_>, name: &str, sealed: &[u8]) -> Result<(), Error> {
        tx.execute(
            "INSERT INTO kv(name, sealed) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed",
            params![name, sealed],
        )?;
        Ok(())
    }
}
