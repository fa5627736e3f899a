//! The PostgreSQL store: one database shared by any number of relay processes.
//!
//! Every operation is one PostgreSQL transaction on a pooled connection, committed before the
//! caller hears the result (with PostgreSQL's default `synchronous_commit = on`, a commit is on
//! disk before it returns), so what a relay accepts is durable whichever relay process dies.
//!
//! How the guarantees of [`Store`] hold across processes:
//!
//! - **Delivery ids** are per recipient: each identity row carries its mailbox's last delivery id
//!   and usage (message count, bytes). An enqueue locks the recipients' rows (`FOR UPDATE`, in key
//!   order, so two batches cannot deadlock), assigns `last + 1, last + 2, ...` and writes the new
//!   values back in the same transaction. The lock is held until commit, so ids increase in commit
//!   order and, because a rolled-back transaction rolls back the counter too, they are
//!   consecutive: a reader never sees id 12 committed while id 11 is still to come.
//! - **Quotas** are checked against those counters under the same lock; acknowledgements and
//!   expiry lock the row first (same order) and decrement them.
//! - **One-time prekeys** are taken with `DELETE ... WHERE (..) IN (SELECT .. FOR UPDATE SKIP
//!   LOCKED LIMIT 1) RETURNING`: two concurrent fetches, through the same relay or two, lock
//!   different rows, so a prekey is handed out once.
//! - **Live delivery across relays**: an enqueue sends `NOTIFY` (transactional: delivered only on
//!   commit) on a channel named after the schema, with the recipients' keys as payload. Each relay
//!   `LISTEN`s on a dedicated connection ([`Store::subscribe`]) and wakes the connections of those
//!   recipients, which read their mailboxes. After every (re)connection of the listener the relay
//!   is told to re-read every connected mailbox, so nothing committed while it was not listening is
//!   left waiting.
//!
//! The schema is created and upgraded by numbered migrations applied at start-up, under an
//! advisory lock so relays started together do not race. Tables live in the connection's
//! `search_path` schema (`?options=-csearch_path%3DNAME` in the URL selects another one).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sotto_protocol::IdentityKey;
use sotto_wire::{BundleIn, MessageId, PrekeyCounts, PrekeyRecord, RelayId, UploadPrekeysOut};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    EnqueueOutcome, EnqueuePolicy, NewMessage, Registration, RemoteEvent, Store, StoreError,
    StoredMessage, UploadOutcome,
};

const KIND_X25519: i16 = 0;
const KIND_KEM: i16 = 1;
/// Recipients named in one `NOTIFY` payload (64 hex characters each; PostgreSQL allows 8000 bytes).
const NOTIFY_RECIPIENTS: usize = 100;
/// Recipients whose expired messages are deleted per transaction.
const EXPIRE_CHUNK: i64 = 500;
/// How often a transaction that PostgreSQL aborted as a deadlock victim is retried.
const ATTEMPTS: u32 = 3;
/// Advisory lock key held while migrating ("sotto" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6f74_746f;

/// The schema migrations, in order. A released migration is never edited: changes are new
/// entries. The applied versions are recorded in `sotto_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
     CREATE TABLE identities (
         key BYTEA PRIMARY KEY,
         registered_ms BIGINT NOT NULL,
         last_delivery_id BIGINT NOT NULL DEFAULT 0,
         mailbox_count BIGINT NOT NULL DEFAULT 0,
         mailbox_bytes BIGINT NOT NULL DEFAULT 0);
     CREATE TABLE invites (hash BYTEA PRIMARY KEY, expires_ms BIGINT NOT NULL, used_by BYTEA);
     CREATE TABLE signed_prekeys (identity BYTEA PRIMARY KEY, id BIGINT NOT NULL, blob BYTEA NOT NULL);
     CREATE TABLE last_resort_kem (identity BYTEA PRIMARY KEY, id BIGINT NOT NULL, blob BYTEA NOT NULL);
     CREATE TABLE one_time_prekeys (
         identity BYTEA NOT NULL, kind SMALLINT NOT NULL, id BIGINT NOT NULL, blob BYTEA NOT NULL,
         PRIMARY KEY (identity, kind, id));
     CREATE TABLE messages (
         recipient BYTEA NOT NULL, id BIGINT NOT NULL, sender BYTEA NOT NULL, msg_id BYTEA NOT NULL,
         ts BIGINT NOT NULL, expires BIGINT NOT NULL, body BYTEA NOT NULL,
         PRIMARY KEY (recipient, id));
     CREATE INDEX messages_by_expiry ON messages (expires);",
)];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most pooled connections (the `LISTEN` connection is extra).
    pub pool_size: usize,
    /// How long an operation waits for a pooled connection or for a new one to open.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A failed attempt: the error, and whether the transaction may simply be run again.
struct Failure {
    error: StoreError,
    retry: bool,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        );
        Self {
            error: StoreError::Database(e.to_string()),
            retry,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            retry: false,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or was a deadlock victim [`ATTEMPTS`] times.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            match $attempt.await {
                Ok(v) => break Ok(v),
                Err(Failure { retry: true, .. }) if tries < ATTEMPTS => continue,
                Err(f) => break Err(f.error),
            }
        }
    }};
}

/// A cloneable handle to the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    relay_id: RelayId,
    /// The `LISTEN`/`NOTIFY` channel of this schema.
    channel: String,
    /// Identifies this process's notifications (hex), so its own listener skips them.
    instance: String,
    /// Acknowledgements go to one writer task that commits all waiting ones together.
    acks: mpsc::Sender<AckRequest>,
}

/// An acknowledgement waiting for [`ack_writer`].
struct AckRequest {
    recipient: [u8; 32],
    ids: Vec<i64>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Most acknowledgements committed in one transaction.
const MAX_ACK_BATCH: usize = 1024;

/// Commits acknowledgements in batches: everything waiting goes into one transaction (group
/// commit, as the SQLite writer does), so a client acknowledging each message as it arrives costs
/// one row lock and one commit per batch instead of per message.
async fn ack_writer(pool: Pool, mut requests: mpsc::Receiver<AckRequest>) {
    let mut batch = Vec::with_capacity(64);
    while requests.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        let result = retrying!(ack_batch(&pool, &batch));
        match result {
            Ok(counts) => {
                for (request, n) in batch.drain(..).zip(counts) {
                    let _ = request.reply.send(Ok(n));
                }
            }
            Err(e) => {
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Deletes the acknowledged messages of a batch in one transaction; returns the count per request.
async fn ack_batch(pool: &Pool, batch: &[AckRequest]) -> Result<Vec<u64>, Failure> {
    // Each (recipient, id) once; the first request naming it is credited with the deletion.
    let mut owner: HashMap<([u8; 32], i64), usize> = HashMap::new();
    for (i, r) in batch.iter().enumerate() {
        for id in &r.ids {
            owner.entry((r.recipient, *id)).or_insert(i);
        }
    }
    let mut mailboxes: Vec<&[u8]> = batch.iter().map(|r| &r.recipient[..]).collect();
    mailboxes.sort_unstable();
    mailboxes.dedup();
    let recipients: Vec<&[u8]> = owner.keys().map(|(k, _)| &k[..]).collect();
    let ids: Vec<i64> = owner.keys().map(|(_, id)| *id).collect();
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Database(format!("no database connection: {e}")))?;
    let tx = client.transaction().await?;
    // The mailbox rows are locked first, in key order, as enqueue and expiry do.
    tx.execute(
        &tx.prepare_cached("SELECT 1 FROM identities WHERE key = ANY($1) ORDER BY key FOR UPDATE")
            .await?,
        &[&mailboxes],
    )
    .await?;
    let rows = tx
        .query(
            &tx.prepare_cached(
                "WITH gone AS (DELETE FROM messages m
                               USING UNNEST($1::BYTEA[], $2::BIGINT[]) AS u(recipient, id)
                               WHERE m.recipient = u.recipient AND m.id = u.id
                               RETURNING m.recipient, m.id, octet_length(m.body) AS len),
                      total AS (SELECT recipient, COUNT(*) AS n, SUM(len)::BIGINT AS b
                                FROM gone GROUP BY recipient),
                      counters AS (UPDATE identities
                                   SET mailbox_count = mailbox_count - total.n,
                                       mailbox_bytes = mailbox_bytes - total.b
                                   FROM total WHERE key = total.recipient)
                 SELECT recipient, id FROM gone",
            )
            .await?,
            &[&recipients, &ids],
        )
        .await?;
    tx.commit().await?;
    let mut counts = vec![0u64; batch.len()];
    for r in rows {
        let key: &[u8] = r.try_get(0)?;
        let id: i64 = r.try_get(1)?;
        if let Some(&i) = <[u8; 32]>::try_from(key)
            .ok()
            .and_then(|k| owner.get(&(k, id)))
        {
            counts[i] += 1;
        }
    }
    Ok(counts)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let d = |c: u8| (c as char).to_digit(16);
        *o = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt(what)
}

fn record(id: i64, blob: Vec<u8>) -> Result<PrekeyRecord, StoreError> {
    Ok(PrekeyRecord {
        id: u32::try_from(id).map_err(|_| corrupt("prekey id"))?,
        blob,
    })
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), applies pending
    /// migrations and reads (or creates) the relay id that every relay on this database shares.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot build the connection pool: {e}")))?;
        let mut instance = [0u8; 8];
        getrandom::fill(&mut instance)
            .map_err(|_| StoreError::Database("no OS randomness".into()))?;
        let (acks, ack_requests) = mpsc::channel(16 * 1024);
        tokio::spawn(ack_writer(pool.clone(), ack_requests));
        let mut store = Self {
            pool,
            config,
            relay_id: RelayId([0; 32]),
            channel: String::new(),
            instance: hex(&instance),
            acks,
        };
        let mut client = store.client().await?;
        let schema: Option<String> = client
            .query_one("SELECT current_schema()", &[])
            .await
            .map_err(|e| Failure::from(e).error)?
            .get(0);
        let Some(schema) = schema else {
            return Err(StoreError::Database(
                "no schema to create tables in: create the schema named in search_path".into(),
            ));
        };
        store.channel = format!("sotto_{}", &hex(&Sha256::digest(schema.as_bytes()))[..16]);
        migrate(&mut client).await.map_err(|f| f.error)?;
        store.relay_id = relay_id(&mut client).await.map_err(|f| f.error)?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Database(format!("no database connection: {e}")))
    }

    /// The `LISTEN`/`NOTIFY` channel this store's relays use (derived from the schema name), e.g.
    /// to find the listener connections in `pg_stat_activity`.
    pub fn notify_channel(&self) -> &str {
        &self.channel
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT MAX(version) FROM sotto_migrations", &[])
            .await
            .map_err(|e| Failure::from(e).error)?;
        Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
    }

    async fn register_once(
        &self,
        identity: &[u8; 32],
        invite: Option<&[u8]>,
        invite_only: bool,
        now_ms: u64,
    ) -> Result<Registration, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let known = tx
            .query_opt("SELECT 1 FROM identities WHERE key = $1", &[&&identity[..]])
            .await?
            .is_some();
        if known {
            return Ok(Registration::Known);
        }
        if invite_only {
            let Some(token) = invite else {
                return Ok(Registration::InviteRequired);
            };
            let used = tx
                .execute(
                    "UPDATE invites SET used_by = $1
                     WHERE hash = $2 AND used_by IS NULL AND expires_ms > $3",
                    &[&&identity[..], &&Sha256::digest(token)[..], &to_i64(now_ms)],
                )
                .await?;
            if used != 1 {
                return Ok(Registration::InviteRequired);
            }
        }
        let inserted = tx
            .execute(
                "INSERT INTO identities (key, registered_ms) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&&identity[..], &to_i64(now_ms)],
            )
            .await?;
        if inserted == 0 {
            // Registered concurrently through another connection: keep the invite unused.
            tx.rollback().await?;
            return Ok(Registration::Known);
        }
        tx.commit().await?;
        Ok(Registration::Registered)
    }

    async fn upload_once(
        &self,
        identity: &[u8; 32],
        up: &UploadPrekeysOut,
        max: u32,
    ) -> Result<UploadOutcome, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = &identity[..];
        for (table, r) in [
            ("signed_prekeys", &up.signed_prekey),
            ("last_resort_kem", &up.last_resort_kem),
        ] {
            if let Some(r) = r {
                tx.execute(
                    &format!(
                        "INSERT INTO {table} (identity, id, blob) VALUES ($1, $2, $3)
                         ON CONFLICT (identity) DO UPDATE SET id = EXCLUDED.id, blob = EXCLUDED.blob"
                    ),
                    &[&key, &i64::from(r.id), &r.blob],
                )
                .await?;
            }
        }
        for (kind, records) in [
            (KIND_X25519, &up.one_time_x25519),
            (KIND_KEM, &up.one_time_kem),
        ] {
            if records.is_empty() {
                continue;
            }
            let ids: Vec<i64> = records.iter().map(|r| i64::from(r.id)).collect();
            let blobs: Vec<&[u8]> = records.iter().map(|r| r.blob.as_slice()).collect();
            tx.execute(
                "INSERT INTO one_time_prekeys (identity, kind, id, blob)
                 SELECT $1, $2, u.id, u.blob FROM UNNEST($3::BIGINT[], $4::BYTEA[]) AS u(id, blob)
                 ON CONFLICT (identity, kind, id) DO UPDATE SET blob = EXCLUDED.blob",
                &[&key, &kind, &ids, &blobs],
            )
            .await?;
        }
        let counts = counts(&tx, identity).await?;
        if counts.x25519 > max || counts.kem > max {
            tx.rollback().await?;
            return Ok(UploadOutcome::Limit);
        }
        tx.commit().await?;
        Ok(UploadOutcome::Stored(counts))
    }

    async fn take_bundle_once(
        &self,
        identity: IdentityKey,
    ) -> Result<Option<(BundleIn, PrekeyCounts)>, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = &identity.as_bytes()[..];
        let Some(row) = tx
            .query_opt(
                "SELECT s.id, s.blob, l.id, l.blob FROM signed_prekeys s
                 JOIN last_resort_kem l ON l.identity = s.identity WHERE s.identity = $1",
                &[&key],
            )
            .await?
        else {
            return Ok(None);
        };
        let signed_prekey = record(row.try_get(0)?, row.try_get(1)?)?;
        let last_resort = record(row.try_get(2)?, row.try_get(3)?)?;
        let take = "DELETE FROM one_time_prekeys WHERE (identity, kind, id) IN (
                        SELECT identity, kind, id FROM one_time_prekeys
                        WHERE identity = $1 AND kind = $2 ORDER BY id LIMIT 1
                        FOR UPDATE SKIP LOCKED)
                    RETURNING id, blob";
        let one_time_x25519 = match tx.query_opt(take, &[&key, &KIND_X25519]).await? {
            Some(r) => Some(record(r.try_get(0)?, r.try_get(1)?)?),
            None => None,
        };
        let (kem, kem_is_last_resort) = match tx.query_opt(take, &[&key, &KIND_KEM]).await? {
            Some(r) => (record(r.try_get(0)?, r.try_get(1)?)?, false),
            None => (last_resort, true),
        };
        let counts = counts(&tx, identity.as_bytes()).await?;
        tx.commit().await?;
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

    /// Decides and writes one enqueue batch; returns the delivery id per stored message.
    async fn enqueue_once(
        &self,
        messages: &[NewMessage],
        p: &EnqueuePolicy,
    ) -> Result<Vec<Plan>, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Lock the recipients' mailbox rows in key order: concurrent batches cannot deadlock.
        let mut mailboxes: BTreeMap<[u8; 32], Mailbox> = messages
            .iter()
            .map(|m| (m.recipient.to_bytes(), Mailbox::default()))
            .collect();
        let keys: Vec<&[u8]> = mailboxes.keys().map(|k| &k[..]).collect();
        let rows = tx
            .query(
                &tx.prepare_cached(
                    "SELECT key, last_delivery_id, mailbox_count, mailbox_bytes FROM identities
                 WHERE key = ANY($1) ORDER BY key FOR UPDATE",
                )
                .await?,
                &[&keys],
            )
            .await?;
        for row in rows {
            let key: &[u8] = row.try_get(0)?;
            let key: [u8; 32] = key.try_into().map_err(|_| corrupt("identity key"))?;
            if let Some(mb) = mailboxes.get_mut(&key) {
                *mb = Mailbox {
                    registered: true,
                    last_id: row.try_get(1)?,
                    count: row.try_get(2)?,
                    bytes: row.try_get(3)?,
                    touched: false,
                };
            }
        }
        let mut plan = Vec::with_capacity(messages.len());
        let (mut recipients, mut ids, mut senders, mut msg_ids, mut bodies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for m in messages {
            let Some(mb) = mailboxes
                .get_mut(m.recipient.as_bytes())
                .filter(|mb| mb.registered)
            else {
                plan.push(Plan::UnknownRecipient);
                continue;
            };
            let len = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
            if to_u64(mb.count) >= p.max_messages
                || to_u64(mb.bytes.saturating_add(len)) > p.max_bytes
            {
                plan.push(Plan::QuotaFull);
                continue;
            }
            mb.last_id += 1;
            mb.count += 1;
            mb.bytes = mb.bytes.saturating_add(len);
            mb.touched = true;
            plan.push(Plan::Stored(to_u64(mb.last_id)));
            recipients.push(&m.recipient.as_bytes()[..]);
            ids.push(mb.last_id);
            senders.push(&m.sender.as_bytes()[..]);
            msg_ids.push(&m.message_id.0[..]);
            bodies.push(&m.body[..]);
        }
        if ids.is_empty() {
            return Ok(plan);
        }
        let ts = to_i64(p.now_ms);
        let expires = to_i64(p.now_ms.saturating_add(p.ttl_ms));
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO messages (recipient, id, sender, msg_id, ts, expires, body)
             SELECT u.recipient, u.id, u.sender, u.msg_id, $6, $7, u.body
             FROM UNNEST($1::BYTEA[], $2::BIGINT[], $3::BYTEA[], $4::BYTEA[], $5::BYTEA[])
                 AS u(recipient, id, sender, msg_id, body)",
            )
            .await?,
            &[
                &recipients,
                &ids,
                &senders,
                &msg_ids,
                &bodies,
                &ts,
                &expires,
            ],
        )
        .await?;
        let touched: Vec<(&[u8; 32], &Mailbox)> =
            mailboxes.iter().filter(|(_, mb)| mb.touched).collect();
        let keys: Vec<&[u8]> = touched.iter().map(|(k, _)| &k[..]).collect();
        let last: Vec<i64> = touched.iter().map(|(_, mb)| mb.last_id).collect();
        let count: Vec<i64> = touched.iter().map(|(_, mb)| mb.count).collect();
        let bytes: Vec<i64> = touched.iter().map(|(_, mb)| mb.bytes).collect();
        tx.execute(
            &tx.prepare_cached(
                "UPDATE identities AS i
             SET last_delivery_id = u.last, mailbox_count = u.count, mailbox_bytes = u.bytes
             FROM UNNEST($1::BYTEA[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                 AS u(key, last, count, bytes)
             WHERE i.key = u.key",
            )
            .await?,
            &[&keys, &last, &count, &bytes],
        )
        .await?;
        for chunk in touched.chunks(NOTIFY_RECIPIENTS) {
            let mut payload = self.instance.clone();
            for (key, _) in chunk {
                payload.push_str(&hex(&key[..]));
            }
            tx.execute(
                &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
                &[&self.channel, &payload],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(plan)
    }

    async fn pending_once(
        &self,
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, Failure> {
        let client = self.client().await?;
        // The page is cut where the bodies before a message reach max_bytes (octet_length reads
        // a TOASTed body's size without fetching it).
        let stmt = client
            .prepare_cached(
                "SELECT id, sender, msg_id, ts, body FROM (
                     SELECT *, (SUM(len) OVER (ORDER BY id))::BIGINT - len AS before FROM (
                         SELECT id, sender, msg_id, ts, body, octet_length(body)::BIGINT AS len
                         FROM messages WHERE recipient = $1 AND id > $2 AND expires > $3
                         ORDER BY id LIMIT $4) page) cut
                 WHERE before < $5 ORDER BY id",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &&recipient.as_bytes()[..],
                    &to_i64(after),
                    &to_i64(now_ms),
                    &i64::from(limit),
                    &i64::try_from(max_bytes).unwrap_or(i64::MAX).max(1),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| stored(recipient, r))
            .collect::<Result<_, _>>()
    }

    /// Deletes expired messages of up to [`EXPIRE_CHUNK`] recipients; returns (deleted, recipients).
    async fn expire_chunk(&self, now_ms: i64) -> Result<(u64, usize), Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let recipients: Vec<Vec<u8>> = tx
            .query(
                "SELECT DISTINCT recipient FROM messages WHERE expires <= $1
                 ORDER BY recipient LIMIT $2",
                &[&now_ms, &EXPIRE_CHUNK],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if recipients.is_empty() {
            return Ok((0, 0));
        }
        tx.execute(
            "SELECT 1 FROM identities WHERE key = ANY($1) ORDER BY key FOR UPDATE",
            &[&recipients],
        )
        .await?;
        let rows = tx
            .query(
                "WITH gone AS (DELETE FROM messages WHERE recipient = ANY($1) AND expires <= $2
                               RETURNING recipient, octet_length(body) AS len),
                      total AS (SELECT recipient, COUNT(*) AS n, SUM(len)::BIGINT AS b
                                FROM gone GROUP BY recipient)
                 UPDATE identities SET mailbox_count = mailbox_count - total.n,
                                       mailbox_bytes = mailbox_bytes - total.b
                 FROM total WHERE key = total.recipient
                 RETURNING total.n",
                &[&recipients, &now_ms],
            )
            .await?;
        let mut deleted = 0u64;
        for r in rows {
            deleted += to_u64(r.try_get(0)?);
        }
        tx.commit().await?;
        Ok((deleted, recipients.len()))
    }
}

/// A recipient's mailbox row, as locked by an enqueue.
#[derive(Default)]
struct Mailbox {
    registered: bool,
    last_id: i64,
    count: i64,
    bytes: i64,
    touched: bool,
}

/// What an enqueue decided for one message.
enum Plan {
    Stored(u64),
    QuotaFull,
    UnknownRecipient,
}

fn stored(recipient: IdentityKey, r: &Row) -> Result<StoredMessage, Failure> {
    let sender: &[u8] = r.try_get(1)?;
    let msg_id: &[u8] = r.try_get(2)?;
    Ok(StoredMessage {
        delivery_id: to_u64(r.try_get(0)?),
        recipient,
        sender: IdentityKey::from_slice(sender).map_err(|_| corrupt("sender key"))?,
        message_id: MessageId(msg_id.try_into().map_err(|_| corrupt("message id"))?),
        timestamp_ms: to_u64(r.try_get(3)?),
        body: Bytes::from(r.try_get::<_, Vec<u8>>(4)?),
    })
}

async fn counts(
    tx: &deadpool_postgres::Transaction<'_>,
    identity: &[u8; 32],
) -> Result<PrekeyCounts, Failure> {
    let row = tx
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE kind = 0), COUNT(*) FILTER (WHERE kind = 1)
             FROM one_time_prekeys WHERE identity = $1",
            &[&&identity[..]],
        )
        .await?;
    let n = |i: usize| -> Result<u32, Failure> {
        Ok(u32::try_from(row.try_get::<_, i64>(i)?).unwrap_or(u32::MAX))
    };
    Ok(PrekeyCounts {
        x25519: n(0)?,
        kem: n(1)?,
    })
}

/// Applies every migration newer than the database, in one transaction, under an advisory lock.
async fn migrate(client: &mut Object) -> Result<(), Failure> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sotto_migrations (
             version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .await?;
    let current: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM sotto_migrations", &[])
        .await?
        .try_get(0)?;
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(
            "the database schema is newer than this relay: upgrade the relay",
        )
        .into());
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tracing::info!(version, "applying PostgreSQL schema migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO sotto_migrations (version, applied_ms) VALUES ($1, $2)",
            &[version, &to_i64(crate::now_ms())],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn relay_id(client: &mut Object) -> Result<RelayId, Failure> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id).map_err(|_| StoreError::Database("no OS randomness".into()))?;
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ('relay_id', $1) ON CONFLICT (key) DO NOTHING",
            &[&&id[..]],
        )
        .await?;
    let v: Vec<u8> = client
        .query_one("SELECT value FROM meta WHERE key = 'relay_id'", &[])
        .await?
        .try_get(0)?;
    Ok(RelayId(v.try_into().map_err(|_| corrupt("relay id"))?))
}

/// Keeps a `LISTEN` connection open (reconnecting with back-off) and forwards other processes'
/// notifications until the receiver is dropped.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    instance: String,
    events: mpsc::Sender<RemoteEvent>,
) {
    let mut backoff = Duration::from_millis(100);
    while !events.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let forward = events.clone();
                let me = instance.clone();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if !forward_payload(n.payload(), &me, &forward).await {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL listener connection failed");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        tracing::debug!(channel, "listening for other relays' messages");
                        // Anything committed before LISTEN took effect was not announced to us.
                        if events.send(RemoteEvent::Resync).await.is_err() {
                            return;
                        }
                        let _ = driver.await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "PostgreSQL LISTEN failed");
                        driver.abort();
                    }
                }
                drop(client);
            }
            Err(e) => tracing::warn!(error = %e, "PostgreSQL listener cannot connect"),
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Forwards the recipients named in a notification from another process. `false` once the
/// receiver is gone.
async fn forward_payload(payload: &str, me: &str, events: &mpsc::Sender<RemoteEvent>) -> bool {
    let Some((from, keys)) = payload.split_at_checked(16) else {
        return true;
    };
    if from == me {
        return true;
    }
    let mut rest = keys;
    while let Some((key, tail)) = rest.split_at_checked(64) {
        rest = tail;
        let Some(key) = unhex32(key).and_then(|k| IdentityKey::from_bytes(&k).ok()) else {
            continue;
        };
        if events.send(RemoteEvent::NewMessages(key)).await.is_err() {
            return false;
        }
    }
    true
}

impl Store for PostgresStore {
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
        let key = identity.to_bytes();
        retrying!(self.register_once(&key, invite.as_deref(), invite_only, now_ms))
    }

    async fn create_invite(&self, token: Vec<u8>, expires_ms: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO invites (hash, expires_ms, used_by) VALUES ($1, $2, NULL)
                 ON CONFLICT (hash) DO UPDATE SET expires_ms = EXCLUDED.expires_ms, used_by = NULL",
                &[&&Sha256::digest(&token)[..], &to_i64(expires_ms)],
            )
            .await
            .map_err(|e| Failure::from(e).error)?;
        Ok(())
    }

    async fn upload_prekeys(
        &self,
        identity: IdentityKey,
        upload: UploadPrekeysOut,
        max_one_time: u32,
    ) -> Result<UploadOutcome, StoreError> {
        let key = identity.to_bytes();
        retrying!(self.upload_once(&key, &upload, max_one_time))
    }

    async fn take_bundle(
        &self,
        identity: IdentityKey,
    ) -> Result<Option<(BundleIn, PrekeyCounts)>, StoreError> {
        retrying!(self.take_bundle_once(identity))
    }

    async fn prekey_counts(&self, identity: IdentityKey) -> Result<PrekeyCounts, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Failure::from(e).error)?;
        let c = counts(&tx, identity.as_bytes())
            .await
            .map_err(|f| f.error)?;
        tx.commit().await.map_err(|e| Failure::from(e).error)?;
        Ok(c)
    }

    async fn enqueue(
        &self,
        messages: Vec<NewMessage>,
        policy: EnqueuePolicy,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let plan = retrying!(self.enqueue_once(&messages, &policy))?;
        Ok(plan
            .into_iter()
            .zip(messages)
            .map(|(plan, m)| match plan {
                Plan::Stored(delivery_id) => EnqueueOutcome::Stored(StoredMessage {
                    delivery_id,
                    recipient: m.recipient,
                    sender: m.sender,
                    message_id: m.message_id,
                    timestamp_ms: policy.now_ms,
                    body: m.body,
                }),
                Plan::QuotaFull => EnqueueOutcome::QuotaFull,
                Plan::UnknownRecipient => EnqueueOutcome::UnknownRecipient,
            })
            .collect())
    }

    async fn pending(
        &self,
        recipient: IdentityKey,
        after: u64,
        now_ms: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        retrying!(self.pending_once(recipient, after, now_ms, limit, max_bytes))
    }

    async fn ack(&self, recipient: IdentityKey, delivery_ids: Vec<u64>) -> Result<u64, StoreError> {
        let ids: Vec<i64> = delivery_ids
            .iter()
            .filter_map(|id| i64::try_from(*id).ok())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let (reply, result) = oneshot::channel();
        self.acks
            .send(AckRequest {
                recipient: recipient.to_bytes(),
                ids,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let now = to_i64(now_ms);
        let mut total = 0;
        loop {
            let (deleted, recipients) = retrying!(self.expire_chunk(now))?;
            total += deleted;
            if recipients < EXPIRE_CHUNK as usize {
                return Ok(total);
            }
        }
    }

    fn subscribe(&self) -> Option<mpsc::Receiver<RemoteEvent>> {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(listen(
            self.config.clone(),
            self.channel.clone(),
            self.instance.clone(),
            tx,
        ));
        Some(rx)
    }
}

impl PostgresStore {
    /// How many undelivered messages and bytes `recipient`'s mailbox holds (from the counters
    /// that quotas are checked against).
    pub async fn mailbox_usage(&self, recipient: IdentityKey) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT mailbox_count, mailbox_bytes FROM identities WHERE key = $1",
                &[&&recipient.as_bytes()[..]],
            )
            .await
            .map_err(|e| Failure::from(e).error)?;
        Ok(match row {
            Some(r) => (
                to_u64(r.try_get(0).map_err(|e| Failure::from(e).error)?),
                to_u64(r.try_get(1).map_err(|e| Failure::from(e).error)?),
            ),
            None => (0, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let k = [0xa5u8; 32];
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}
