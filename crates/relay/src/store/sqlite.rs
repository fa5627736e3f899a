//! The embedded SQLite store: one file, WAL mode, group commit.
//!
//! One dedicated writer thread owns the connection. Every operation is sent to it over a
//! **bounded** channel (a caller waits when it is full: back-pressure, not memory); the thread
//! takes everything that is waiting (up to [`MAX_BATCH_OPS`]), runs it in one `BEGIN IMMEDIATE`
//! transaction, commits, and only then answers each caller. So a message is durable before its
//! caller hears "stored", many concurrent writes share one commit (and one `fsync` with
//! `synchronous=FULL`), and operations are atomic with respect to each other (two bundle fetches
//! can never take the same one-time prekey). If a transaction fails, every operation in it gets
//! the error and none of it is applied. Operations run in arrival order; the relay keeps at most a
//! few outstanding per connection, so one connection cannot crowd the others out of a batch.
//!
//! Delivery ids are per mailbox: `identities.last_delivery_id` is the last id assigned in that
//! recipient's mailbox, so ids are consecutive per recipient and say nothing about the relay's
//! total volume. The schema is versioned (`meta.schema_version`) and upgraded by the numbered
//! [`MIGRATIONS`], checked before anything is written.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use sotto_protocol::IdentityKey;
use sotto_wire::{BundleIn, MessageId, PrekeyCounts, PrekeyRecord, RelayId, UploadPrekeysOut};
use tokio::sync::{mpsc, oneshot};

use super::{
    EnqueueOutcome, EnqueuePolicy, NewMessage, Registration, Store, StoreError, StoredMessage,
    UploadOutcome,
};

/// The most operations committed in one transaction.
pub const MAX_BATCH_OPS: usize = 4096;
/// Operations waiting for the writer thread before callers wait.
const QUEUE: usize = 1024;
/// Expired messages deleted per operation (so expiry never holds the writer for long).
const EXPIRE_CHUNK: i64 = 5000;

const KIND_X25519: i64 = 0;
const KIND_KEM: i64 = 1;

/// The schema migrations, in order; a released one is never edited. A new store runs them all.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
         CREATE TABLE identities (key BLOB PRIMARY KEY, registered_ms INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE invites (hash BLOB PRIMARY KEY, expires_ms INTEGER NOT NULL, used_by BLOB) WITHOUT ROWID;
         CREATE TABLE signed_prekeys (identity BLOB PRIMARY KEY, id INTEGER NOT NULL, blob BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE last_resort_kem (identity BLOB PRIMARY KEY, id INTEGER NOT NULL, blob BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE one_time_prekeys (identity BLOB NOT NULL, kind INTEGER NOT NULL, id INTEGER NOT NULL,
             blob BLOB NOT NULL, PRIMARY KEY (identity, kind, id)) WITHOUT ROWID;
         CREATE TABLE messages (id INTEGER PRIMARY KEY, recipient BLOB NOT NULL, sender BLOB NOT NULL,
             msg_id BLOB NOT NULL, ts INTEGER NOT NULL, expires INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE INDEX messages_by_recipient ON messages (recipient, id);
         CREATE INDEX messages_by_expiry ON messages (expires);",
    ),
    (
        // Per-mailbox delivery ids. Every mailbox continues from the old relay-wide counter, so
        // no id is ever reused in a mailbox.
        2,
        "ALTER TABLE identities ADD COLUMN last_delivery_id INTEGER NOT NULL DEFAULT 0;
         UPDATE identities SET last_delivery_id = MAX(
             COALESCE((SELECT MAX(id) FROM messages), 0),
             COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_delivery_id'), 0));
         CREATE TABLE messages_v2 (seq INTEGER PRIMARY KEY, recipient BLOB NOT NULL, id INTEGER NOT NULL,
             sender BLOB NOT NULL, msg_id BLOB NOT NULL, ts INTEGER NOT NULL, expires INTEGER NOT NULL,
             body BLOB NOT NULL);
         INSERT INTO messages_v2 (seq, recipient, id, sender, msg_id, ts, expires, body)
             SELECT id, recipient, id, sender, msg_id, ts, expires, body FROM messages;
         DROP TABLE messages;
         ALTER TABLE messages_v2 RENAME TO messages;
         CREATE UNIQUE INDEX messages_by_recipient ON messages (recipient, id);
         CREATE INDEX messages_by_sender ON messages (recipient, sender);
         CREATE INDEX messages_by_expiry ON messages (expires);
         DELETE FROM meta WHERE key = 'last_delivery_id';",
    ),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 2;

/// How hard SQLite pushes commits to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced; survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash (SIGKILL), may lose the last commits on
    /// power loss or OS crash.
    Normal,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Register {
        identity: [u8; 32],
        invite: Option<Vec<u8>>,
        invite_only: bool,
        now_ms: u64,
        tx: Reply<Registration>,
    },
    CreateInvite {
        token: Vec<u8>,
        expires_ms: u64,
        tx: Reply<()>,
    },
    Upload {
        identity: [u8; 32],
        upload: UploadPrekeysOut,
        max: u32,
        tx: Reply<UploadOutcome>,
    },
    TakeBundle {
        identity: IdentityKey,
        tx: Reply<Option<(BundleIn, PrekeyCounts)>>,
    },
    Counts {
        identity: [u8; 32],
        tx: Reply<PrekeyCounts>,
    },
    Enqueue {
        messages: Vec<NewMessage>,
        policy: EnqueuePolicy,
        tx: Reply<Vec<EnqueueOutcome>>,
    },
    Pending {
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
        tx: Reply<Vec<StoredMessage>>,
    },
    Ack {
        recipient: [u8; 32],
        ids: Vec<u64>,
        tx: Reply<u64>,
    },
    Expire {
        now_ms: u64,
        tx: Reply<u64>,
    },
}

/// A finished operation waiting for the commit: sends its result, or the commit error.
type Done = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn done<T: Send + 'static>(tx: Reply<T>, result: Result<T, StoreError>) -> Done {
    Box::new(move |commit_error| {
        let _ = tx.send(match commit_error {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A cloneable handle to the SQLite store. The writer thread stops when the last handle drops.
#[derive(Clone)]
pub struct SqliteStore {
    ops: mpsc::Sender<Op>,
    relay_id: RelayId,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(db)?;
        Self::start(conn, durability)
    }

    fn start(conn: Connection, durability: Durability) -> Result<Self, StoreError> {
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF;
             PRAGMA busy_timeout=5000; PRAGMA cache_size=-16000;"
        ))
        .map_err(db)?;
        migrate(&conn)?;
        let relay_id: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'relay_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        let relay_id = match relay_id {
            Some(v) => RelayId(v.try_into().map_err(|_| StoreError::Corrupt("relay id"))?),
            None => {
                let mut id = [0u8; 32];
                getrandom::fill(&mut id)
                    .map_err(|_| StoreError::Database("no OS randomness".into()))?;
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('relay_id', ?1)",
                    [&id[..]],
                )
                .map_err(db)?;
                RelayId(id)
            }
        };
        let (ops, mut rx) = mpsc::channel(QUEUE);
        let mut writer = Writer {
            conn,
            mailboxes: HashMap::new(),
            dirty: Vec::new(),
        };
        std::thread::Builder::new()
            .name("sotto-sqlite".into())
            .spawn(move || writer.run(&mut rx))
            .map_err(|e| StoreError::Database(format!("cannot start writer thread: {e}")))?;
        Ok(Self { ops, relay_id })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] (creating it in an empty database), in one
/// transaction, after checking the version: a newer schema, or a database that is not a sotto
/// store, is refused before anything is written.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let has_meta: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?
        > 0;
    let current: i64 = if tables == 0 {
        0
    } else if !has_meta {
        return Err(StoreError::Corrupt(
            "the database has tables but is not a sotto relay store",
        ));
    } else {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::Corrupt("the store has no schema version"))?
    };
    if current > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
    let result = (|| {
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tracing::info!(version, "applying SQLite schema migration");
            conn.execute_batch(sql).map_err(db)?;
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
                [version],
            )
            .map_err(db)?;
        }
        conn.execute_batch("COMMIT").map_err(db)
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// One recipient's mailbox as the writer (the only writer) knows it: usage and the last delivery
/// id assigned. Cached; dropped on a failed transaction and recomputed from the tables.
#[derive(Clone, Copy)]
struct Mailbox {
    count: u64,
    bytes: u64,
    last_id: i64,
    /// `last_id` changed in the open transaction: write it back before commit.
    dirty: bool,
}

/// The most cached mailboxes before the cache is emptied.
const MAILBOX_CACHE: usize = 100_000;

struct Writer {
    conn: Connection,
    mailboxes: HashMap<[u8; 32], Mailbox>,
    /// Mailboxes whose `last_id` changed in the open transaction.
    dirty: Vec<[u8; 32]>,
}

impl Writer {
    fn run(&mut self, rx: &mut mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&mut self, batch: Vec<Op>) {
        let mut finished: Vec<Done> = Vec::with_capacity(batch.len());
        let result = (|| -> Result<(), StoreError> {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
            for op in batch {
                finished.push(self.exec(op)?);
            }
            self.write_back_last_ids()?;
            self.conn.execute_batch("COMMIT").map_err(db)
        })();
        match result {
            Ok(()) => finished.into_iter().for_each(|f| f(None)),
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed; rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.mailboxes.clear();
                self.dirty.clear();
                finished.into_iter().for_each(|f| f(Some(&e)));
                // Operations not reached were dropped; their callers see `Closed`-like errors.
            }
        }
    }

    /// Stores the last delivery id of every mailbox that received messages in this transaction.
    fn write_back_last_ids(&mut self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE identities SET last_delivery_id = ?1 WHERE key = ?2")
            .map_err(db)?;
        for key in self.dirty.drain(..) {
            if let Some(mb) = self.mailboxes.get_mut(&key) {
                stmt.execute(params![mb.last_id, &key[..]]).map_err(db)?;
                mb.dirty = false;
            }
        }
        Ok(())
    }

    /// Runs one operation inside the open transaction. An `Err` aborts the whole batch.
    fn exec(&mut self, op: Op) -> Result<Done, StoreError> {
        Ok(match op {
            Op::Register {
                identity,
                invite,
                invite_only,
                now_ms,
                tx,
            } => {
                let r = self.register(&identity, invite.as_deref(), invite_only, now_ms)?;
                done(tx, Ok(r))
            }
            Op::CreateInvite {
                token,
                expires_ms,
                tx,
            } => {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO invites (hash, expires_ms, used_by) VALUES (?1, ?2, NULL)",
                        params![&Sha256::digest(&token)[..], to_i64(expires_ms)],
                    )
                    .map_err(db)?;
                done(tx, Ok(()))
            }
            Op::Upload {
                identity,
                upload,
                max,
                tx,
            } => {
                let r = self.upload(&identity, &upload, max)?;
                done(tx, Ok(r))
            }
            Op::TakeBundle { identity, tx } => {
                let r = self.take_bundle(identity)?;
                done(tx, Ok(r))
            }
            Op::Counts { identity, tx } => {
                let r = self.counts(&identity)?;
                done(tx, Ok(r))
            }
            Op::Enqueue {
                messages,
                policy,
                tx,
            } => {
                let r = self.enqueue(messages, policy)?;
                done(tx, Ok(r))
            }
            Op::Pending {
                recipient,
                after,
                now_ms,
                limit,
                max_bytes,
                tx,
            } => {
                let r = self.pending(recipient, after, now_ms, limit, max_bytes)?;
                done(tx, Ok(r))
            }
            Op::Ack { recipient, ids, tx } => {
                let r = self.ack(&recipient, &ids)?;
                done(tx, Ok(r))
            }
            Op::Expire { now_ms, tx } => {
                let n = self.expire(now_ms)?;
                done(tx, Ok(n))
            }
        })
    }

    fn register(
        &mut self,
        identity: &[u8; 32],
        invite: Option<&[u8]>,
        invite_only: bool,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        if self.is_registered(identity)? {
            return Ok(Registration::Known);
        }
        if invite_only {
            let Some(token) = invite else {
                return Ok(Registration::InviteRequired);
            };
            let used = self
                .conn
                .execute(
                    "UPDATE invites SET used_by = ?1 WHERE hash = ?2 AND used_by IS NULL AND expires_ms > ?3",
                    params![&identity[..], &Sha256::digest(token)[..], to_i64(now_ms)],
                )
                .map_err(db)?;
            if used != 1 {
                return Ok(Registration::InviteRequired);
            }
        }
        self.conn
            .execute(
                "INSERT INTO identities (key, registered_ms) VALUES (?1, ?2)",
                params![&identity[..], to_i64(now_ms)],
            )
            .map_err(db)?;
        Ok(Registration::Registered)
    }

    fn is_registered(&self, identity: &[u8; 32]) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM identities WHERE key = ?1")
            .and_then(|mut s| s.exists([&identity[..]]))
            .map_err(db)
    }

    fn upload(
        &mut self,
        identity: &[u8; 32],
        up: &UploadPrekeysOut,
        max: u32,
    ) -> Result<UploadOutcome, StoreError> {
        self.conn.execute_batch("SAVEPOINT upload").map_err(db)?;
        if let Some(r) = &up.signed_prekey {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO signed_prekeys (identity, id, blob) VALUES (?1, ?2, ?3)",
                    params![&identity[..], r.id, &r.blob],
                )
                .map_err(db)?;
        }
        if let Some(r) = &up.last_resort_kem {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO last_resort_kem (identity, id, blob) VALUES (?1, ?2, ?3)",
                    params![&identity[..], r.id, &r.blob],
                )
                .map_err(db)?;
        }
        for (kind, records) in [
            (KIND_X25519, &up.one_time_x25519),
            (KIND_KEM, &up.one_time_kem),
        ] {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO one_time_prekeys (identity, kind, id, blob) VALUES (?1, ?2, ?3, ?4)")
                .map_err(db)?;
            for r in records {
                stmt.execute(params![&identity[..], kind, r.id, &r.blob])
                    .map_err(db)?;
            }
        }
        let counts = self.counts(identity)?;
        if counts.x25519 > max || counts.kem > max {
            self.conn
                .execute_batch("ROLLBACK TO upload; RELEASE upload")
                .map_err(db)?;
            return Ok(UploadOutcome::Limit);
        }
        self.conn.execute_batch("RELEASE upload").map_err(db)?;
        Ok(UploadOutcome::Stored(counts))
    }

    fn counts(&self, identity: &[u8; 32]) -> Result<PrekeyCounts, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE identity = ?1 AND kind = ?2",
            )
            .map_err(db)?;
        let mut count = |kind: i64| -> Result<u32, StoreError> {
            let n: i64 = stmt
                .query_row(params![&identity[..], kind], |r| r.get(0))
                .map_err(db)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        Ok(PrekeyCounts {
            x25519: count(KIND_X25519)?,
            kem: count(KIND_KEM)?,
        })
    }

    fn record(&self, sql: &str, identity: &[u8; 32]) -> Result<Option<PrekeyRecord>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row([&identity[..]], |r| {
                    Ok(PrekeyRecord {
                        id: r.get(0)?,
                        blob: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db)
    }

    fn take_one_time(
        &self,
        identity: &[u8; 32],
        kind: i64,
    ) -> Result<Option<PrekeyRecord>, StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM one_time_prekeys WHERE identity = ?1 AND kind = ?2 AND id = (
                     SELECT MIN(id) FROM one_time_prekeys WHERE identity = ?1 AND kind = ?2)
                 RETURNING id, blob",
            )
            .and_then(|mut s| {
                s.query_row(params![&identity[..], kind], |r| {
                    Ok(PrekeyRecord {
                        id: r.get(0)?,
                        blob: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db)
    }

    fn take_bundle(
        &mut self,
        identity: IdentityKey,
    ) -> Result<Option<(BundleIn, PrekeyCounts)>, StoreError> {
        let key = identity.as_bytes();
        let Some(signed_prekey) = self.record(
            "SELECT id, blob FROM signed_prekeys WHERE identity = ?1",
            key,
        )?
        else {
            return Ok(None);
        };
        let Some(last_resort) = self.record(
            "SELECT id, blob FROM last_resort_kem WHERE identity = ?1",
            key,
        )?
        else {
            return Ok(None);
        };
        let one_time_x25519 = self.take_one_time(key, KIND_X25519)?;
        let (kem, kem_is_last_resort) = match self.take_one_time(key, KIND_KEM)? {
            Some(k) => (k, false),
            None => (last_resort, true),
        };
        let counts = self.counts(key)?;
        Ok(Some((
            BundleIn {
                identity,
                signed_prekey,
                one_time_x25519,
                kem,
                kem_is_last_resort,
            },
            counts,
        )))
    }

    /// The cached mailbox of `recipient`, loaded from the tables on a miss; `None` if the
    /// identity is not registered.
    fn mailbox(&mut self, recipient: &[u8; 32]) -> Result<Option<&mut Mailbox>, StoreError> {
        if !self.mailboxes.contains_key(recipient) {
            let Some(last_id) = self
                .conn
                .prepare_cached("SELECT last_delivery_id FROM identities WHERE key = ?1")
                .and_then(|mut s| s.query_row([&recipient[..]], |r| r.get(0)).optional())
                .map_err(db)?
            else {
                return Ok(None);
            };
            let (count, bytes): (i64, i64) = self
                .conn
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages WHERE recipient = ?1",
                )
                .and_then(|mut s| s.query_row([&recipient[..]], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(db)?;
            if self.mailboxes.len() >= MAILBOX_CACHE {
                // Keep the ones with an unwritten id; the rest are reloaded when needed.
                self.mailboxes.retain(|_, mb| mb.dirty);
            }
            self.mailboxes.insert(
                *recipient,
                Mailbox {
                    count: count.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                    last_id,
                    dirty: false,
                },
            );
        }
        Ok(self.mailboxes.get_mut(recipient))
    }

    fn enqueue(
        &mut self,
        messages: Vec<NewMessage>,
        p: EnqueuePolicy,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut out = Vec::with_capacity(messages.len());
        let expires = to_i64(p.now_ms.saturating_add(p.ttl_ms));
        for m in messages {
            let key = *m.recipient.as_bytes();
            let len = m.body.len() as u64;
            let Some(mb) = self.mailbox(&key)? else {
                out.push(EnqueueOutcome::UnknownRecipient);
                continue;
            };
            if mb.count >= p.max_messages || mb.bytes.saturating_add(len) > p.max_bytes {
                out.push(EnqueueOutcome::QuotaFull);
                continue;
            }
            let id = mb.last_id + 1;
            mb.last_id = id;
            mb.count += 1;
            mb.bytes += len;
            if !mb.dirty {
                mb.dirty = true;
                self.dirty.push(key);
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO messages (recipient, id, sender, msg_id, ts, expires, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        &key[..],
                        id,
                        &m.sender.as_bytes()[..],
                        &m.message_id.0[..],
                        to_i64(p.now_ms),
                        expires,
                        &m.body[..]
                    ])
                })
                .map_err(db)?;
            out.push(EnqueueOutcome::Stored(StoredMessage {
                delivery_id: id as u64,
                recipient: m.recipient,
                sender: m.sender,
                message_id: m.message_id,
                timestamp_ms: p.now_ms,
                body: m.body,
            }));
        }
        Ok(out)
    }

    fn pending(
        &mut self,
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, sender, msg_id, ts, body FROM messages
                 WHERE recipient = ?1 AND id > ?2 AND expires > ?3 ORDER BY id LIMIT ?4",
            )
            .map_err(db)?;
        let mut rows = stmt
            .query(params![
                &recipient.as_bytes()[..],
                to_i64(after),
                to_i64(now_ms),
                limit
            ])
            .map_err(db)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while bytes < max_bytes
            && let Some(row) = rows.next().map_err(db)?
        {
            let id: i64 = row.get(0).map_err(db)?;
            let sender: Vec<u8> = row.get(1).map_err(db)?;
            let msg_id: Vec<u8> = row.get(2).map_err(db)?;
            let ts: i64 = row.get(3).map_err(db)?;
            let body: Vec<u8> = row.get(4).map_err(db)?;
            let sender =
                IdentityKey::from_slice(&sender).map_err(|_| StoreError::Corrupt("sender key"))?;
            let message_id = MessageId(
                msg_id
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("message id"))?,
            );
            bytes += body.len();
            out.push(StoredMessage {
                delivery_id: id.max(0) as u64,
                recipient,
                sender,
                message_id,
                timestamp_ms: ts.max(0) as u64,
                body: Bytes::from(body),
            });
        }
        Ok(out)
    }

    /// Deletes the listed messages of `recipient`'s mailbox in one statement.
    fn ack(&mut self, recipient: &[u8; 32], ids: &[u64]) -> Result<u64, StoreError> {
        let mut list = String::with_capacity(2 + ids.len() * 8);
        list.push('[');
        for id in ids.iter().filter(|id| **id <= i64::MAX as u64) {
            if list.len() > 1 {
                list.push(',');
            }
            let _ = write!(list, "{id}");
        }
        list.push(']');
        let mut stmt = self
            .conn
            .prepare_cached(
                "DELETE FROM messages WHERE recipient = ?1
                     AND id IN (SELECT value FROM json_each(?2))
                 RETURNING LENGTH(body)",
            )
            .map_err(db)?;
        let mut rows = stmt.query(params![&recipient[..], list]).map_err(db)?;
        let (mut deleted, mut freed) = (0u64, 0u64);
        while let Some(row) = rows.next().map_err(db)? {
            deleted += 1;
            freed += row.get::<_, i64>(0).map_err(db)?.max(0) as u64;
        }
        if let Some(mb) = self.mailboxes.get_mut(recipient) {
            mb.count = mb.count.saturating_sub(deleted);
            mb.bytes = mb.bytes.saturating_sub(freed);
        }
        Ok(deleted)
    }

    /// Deletes up to [`EXPIRE_CHUNK`] expired messages, keeping the cached usage right.
    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "DELETE FROM messages WHERE seq IN
                     (SELECT seq FROM messages WHERE expires <= ?1 LIMIT ?2)
                 RETURNING recipient, LENGTH(body)",
            )
            .map_err(db)?;
        let mut rows = stmt
            .query(params![to_i64(now_ms), EXPIRE_CHUNK])
            .map_err(db)?;
        let mut deleted = 0u64;
        while let Some(row) = rows.next().map_err(db)? {
            deleted += 1;
            let key: Vec<u8> = row.get(0).map_err(db)?;
            let len = row.get::<_, i64>(1).map_err(db)?.max(0) as u64;
            if let Some(mb) = <[u8; 32]>::try_from(key.as_slice())
                .ok()
                .and_then(|k| self.mailboxes.get_mut(&k))
            {
                mb.count = mb.count.saturating_sub(1);
                mb.bytes = mb.bytes.saturating_sub(len);
            }
        }
        Ok(deleted)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn relay_id(&self) -> RelayId {
        self.relay_id
    }

    async fn register(
        &self,
        identity: IdentityKey,
        invite: Option<Vec<u8>>,
        invite_only: bool,
        now_ms: u64,
    ) -> Result<Registration, StoreError> {
        self.call(|tx| Op::Register {
            identity: identity.to_bytes(),
            invite,
            invite_only,
            now_ms,
            tx,
        })
        .await
    }

    async fn create_invite(&self, token: Vec<u8>, expires_ms: u64) -> Result<(), StoreError> {
        self.call(|tx| Op::CreateInvite {
            token,
            expires_ms,
            tx,
        })
        .await
    }

    async fn upload_prekeys(
        &self,
        identity: IdentityKey,
        upload: UploadPrekeysOut,
        max_one_time: u32,
    ) -> Result<UploadOutcome, StoreError> {
        self.call(|tx| Op::Upload {
            identity: identity.to_bytes(),
            upload,
            max: max_one_time,
            tx,
        })
        .await
    }

    async fn take_bundle(
        &self,
        identity: IdentityKey,
    ) -> Result<Option<(BundleIn, PrekeyCounts)>, StoreError> {
        self.call(|tx| Op::TakeBundle { identity, tx }).await
    }

    async fn prekey_counts(&self, identity: IdentityKey) -> Result<PrekeyCounts, StoreError> {
        self.call(|tx| Op::Counts {
            identity: identity.to_bytes(),
            tx,
        })
        .await
    }

    async fn enqueue(
        &self,
        messages: Vec<NewMessage>,
        policy: EnqueuePolicy,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.call(|tx| Op::Enqueue {
            messages,
            policy,
            tx,
        })
        .await
    }

    async fn pending(
        &self,
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.call(|tx| Op::Pending {
            recipient,
            after,
            now_ms,
            limit,
            max_bytes,
            tx,
        })
        .await
    }

    async fn ack(&self, recipient: IdentityKey, delivery_ids: Vec<u64>) -> Result<u64, StoreError> {
        self.call(|tx| Op::Ack {
            recipient: recipient.to_bytes(),
            ids: delivery_ids,
            tx,
        })
        .await
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.call(|tx| Op::Expire { now_ms, tx }).await?;
            total += n;
            if n < EXPIRE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}
