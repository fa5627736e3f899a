//! One behavioural test suite over the [`Store`] trait, run against every backend: SQLite always,
//! PostgreSQL when `SOTTO_TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` sets it). Each PostgreSQL test works in
//! its own freshly created schema, dropped at the end, so runs never collide. Without the variable
//! the PostgreSQL tests say on stderr that they were skipped, and pass.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers"
)]

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_relay::store::sqlite::Durability;
use sotto_relay::store::{
    EnqueueOutcome, EnqueuePolicy, NewMessage, PgOptions, PostgresStore, Registration, RemoteEvent,
    SqliteStore, Store, UploadOutcome,
};
use sotto_wire::{MessageId, PrekeyCounts, PrekeyRecord, UploadPrekeysOut};

const ENV: &str = "SOTTO_TEST_POSTGRES_URL";
const NOW: u64 = 1_700_000_000_000;

/// Writes past the test harness's output capture, so the line shows in `cargo test` output.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn key(seed: u8) -> IdentityKey {
    IdentityKeyPair::from_seed(&[seed; 32]).public()
}

fn mid(n: u32) -> MessageId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

fn msg(to: u8, from: u8, n: u32, len: usize) -> NewMessage {
    NewMessage {
        recipient: key(to),
        sender: key(from),
        message_id: mid(n),
        body: vec![(n % 251) as u8; len].into(),
    }
}

fn policy() -> EnqueuePolicy {
    EnqueuePolicy {
        now_ms: NOW,
        ttl_ms: 60_000,
        max_messages: 1000,
        max_bytes: 1 << 20,
    }
}

fn rec(id: u32, len: usize) -> PrekeyRecord {
    PrekeyRecord {
        id,
        blob: vec![(id % 251) as u8; len],
    }
}

fn stored_id(o: &EnqueueOutcome) -> u64 {
    match o {
        EnqueueOutcome::Stored(m) => m.delivery_id,
        EnqueueOutcome::QuotaFull => panic!("unexpected QuotaFull"),
        EnqueueOutcome::UnknownRecipient => panic!("unexpected UnknownRecipient"),
    }
}

async fn register<S: Store>(s: &S, seeds: &[u8]) {
    for &seed in seeds {
        s.register(key(seed), None, false, NOW).await.unwrap();
    }
}

/// A fresh PostgreSQL schema for one test; dropped (with everything in it) when this is dropped.
struct PgSchema {
    base: String,
    schema: String,
    url: String,
}

impl PgSchema {
    async fn create(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(ENV) else {
            say(&format!(
                "SKIPPED postgres {test}: {ENV} is not set (set it to run the PostgreSQL store tests)"
            ));
            return None;
        };
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).unwrap();
        let schema = format!(
            "sotto_test_{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{ENV} is set but PostgreSQL is not reachable: {e}"));
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        drop(client);
        let _ = conn.await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        say(&format!(
            "postgres {test}: running against {} in schema {schema}",
            sotto_relay::config::redact_url(&base)
        ));
        Some(Self { base, schema, url })
    }

    async fn connect(&self) -> PostgresStore {
        PostgresStore::connect(
            &self.url,
            PgOptions {
                pool_size: 8,
                ..PgOptions::default()
            },
        )
        .await
        .unwrap()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let schema = self.schema.clone();
        // Off the test's runtime: a blocking drop inside an async test is not allowed.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                {
                    let conn = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                        .await;
                    drop(client);
                    let _ = conn.await;
                }
            });
        })
        .join();
    }
}

/// How a test gets stores: `open` opens the store (again, after the previous handle is dropped:
/// a restart), `another` gives a second handle for concurrent use: for SQLite, which one process
/// owns, a clone; for PostgreSQL a new connection pool, i.e. what another relay process has.
trait Backend {
    type S: Store;
    fn open(&self) -> impl Future<Output = Self::S>;
    fn another(&self, s: &Self::S) -> impl Future<Output = Self::S>;
}

struct Sqlite(std::path::PathBuf);

impl Backend for Sqlite {
    type S = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0, Durability::Normal).unwrap()
    }
    async fn another(&self, s: &SqliteStore) -> SqliteStore {
        s.clone()
    }
}

impl Backend for PgSchema {
    type S = PostgresStore;
    async fn open(&self) -> PostgresStore {
        self.connect().await
    }
    async fn another(&self, _: &PostgresStore) -> PostgresStore {
        self.connect().await
    }
}

/// Defines `sqlite::NAME` and `postgres::NAME` tests, each running `NAME(&backend)`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(&super::Sqlite(dir.path().join("relay.db"))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::PgSchema::create(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

suite!(
    relay_id_is_stable,
    registration_and_invites,
    enqueue_pending_ack,
    delivery_ids_are_never_reused,
    quotas,
    ttl_expiry,
    prekeys,
    one_time_prekeys_are_taken_once_under_concurrency,
    concurrent_enqueues_keep_per_recipient_order,
    multi_recipient_enqueue,
);

async fn relay_id_is_stable(be: &impl Backend) {
    let s = be.open().await;
    let id = s.relay_id();
    assert_ne!(id.0, [0; 32]);
    assert_eq!(
        be.another(&s).await.relay_id(),
        id,
        "shared by every handle"
    );
    drop(s);
    assert_eq!(be.open().await.relay_id(), id, "kept across a reopen");
}

async fn registration_and_invites(be: &impl Backend) {
    let s = be.open().await;
    assert_eq!(
        s.register(key(1), None, false, NOW).await.unwrap(),
        Registration::Registered
    );
    assert_eq!(
        s.register(key(1), None, false, NOW).await.unwrap(),
        Registration::Known
    );
    // Invite-only: known identities need nothing, new ones a valid unused invite.
    assert_eq!(
        s.register(key(1), None, true, NOW).await.unwrap(),
        Registration::Known
    );
    assert_eq!(
        s.register(key(2), None, true, NOW).await.unwrap(),
        Registration::InviteRequired
    );
    s.create_invite(b"good".to_vec(), NOW + 1000).await.unwrap();
    s.create_invite(b"old".to_vec(), NOW - 1).await.unwrap();
    for token in [&b"wrong"[..], b"old"] {
        assert_eq!(
            s.register(key(2), Some(token.to_vec()), true, NOW)
                .await
                .unwrap(),
            Registration::InviteRequired
        );
    }
    assert_eq!(
        s.register(key(2), Some(b"good".to_vec()), true, NOW)
            .await
            .unwrap(),
        Registration::Registered
    );
    assert_eq!(
        s.register(key(3), Some(b"good".to_vec()), true, NOW)
            .await
            .unwrap(),
        Registration::InviteRequired,
        "an invite registers one identity"
    );
}

async fn enqueue_pending_ack(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2, 3]).await;
    let out = s
        .enqueue(
            vec![msg(2, 1, 1, 10), msg(99, 1, 2, 10), msg(2, 3, 3, 20)],
            policy(),
        )
        .await
        .unwrap();
    assert!(matches!(out[1], EnqueueOutcome::UnknownRecipient));
    let (a, b) = (stored_id(&out[0]), stored_id(&out[2]));
    assert!(a < b, "ids increase in batch order");
    let EnqueueOutcome::Stored(m) = &out[2] else {
        unreachable!()
    };
    assert_eq!(
        (m.recipient, m.sender, m.message_id, m.timestamp_ms),
        (key(2), key(3), mid(3), NOW)
    );

    let got = s.pending(key(2), 0, NOW, 10, usize::MAX).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|m| (m.delivery_id, m.sender, m.message_id, m.body.clone()))
            .collect::<Vec<_>>(),
        vec![
            (a, key(1), mid(1), Bytes::from(vec![1; 10])),
            (b, key(3), mid(3), Bytes::from(vec![3; 20]))
        ]
    );
    assert_eq!(got[0].timestamp_ms, NOW);
    assert_eq!(
        s.pending(key(2), a, NOW, 10, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.pending(key(2), 0, NOW, 1, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.pending(key(1), 0, NOW, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );

    // Another identity cannot delete bob's messages.
    assert_eq!(s.ack(key(3), vec![a, b]).await.unwrap(), 0);
    assert_eq!(s.ack(key(2), vec![a, a, 12345]).await.unwrap(), 1);
    assert_eq!(s.ack(key(2), vec![a]).await.unwrap(), 0, "acking twice");
    let left = s.pending(key(2), 0, NOW, 10, usize::MAX).await.unwrap();
    assert_eq!(left.iter().map(|m| m.delivery_id).collect::<Vec<_>>(), [b]);
    // Durable: another handle (a reopen, or another relay process) sees the same mailbox.
    let again = be
        .another(&s)
        .await
        .pending(key(2), 0, NOW, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, vec![3; 20]);
    // Pages are cut by bytes too: at least one message, ending at the one that reaches the cap.
    s.enqueue(
        vec![msg(2, 1, 4, 100), msg(2, 1, 5, 100), msg(2, 1, 6, 100)],
        policy(),
    )
    .await
    .unwrap();
    let sizes = |p: Vec<sotto_relay::store::StoredMessage>| -> Vec<usize> {
        p.iter().map(|m| m.body.len()).collect()
    };
    assert_eq!(sizes(s.pending(key(2), 0, NOW, 10, 1).await.unwrap()), [20]);
    assert_eq!(
        sizes(s.pending(key(2), 0, NOW, 10, 21).await.unwrap()),
        [20, 100]
    );
    assert_eq!(
        sizes(s.pending(key(2), 0, NOW, 10, 120).await.unwrap()),
        [20, 100]
    );
    assert_eq!(
        sizes(s.pending(key(2), 0, NOW, 10, 121).await.unwrap()),
        [20, 100, 100]
    );
}

async fn delivery_ids_are_never_reused(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2]).await;
    let out = s
        .enqueue(vec![msg(2, 1, 1, 5), msg(2, 1, 2, 5)], policy())
        .await
        .unwrap();
    let last = stored_id(&out[1]);
    assert_eq!(
        s.ack(key(2), vec![stored_id(&out[0]), last]).await.unwrap(),
        2
    );
    drop(s);
    let s = be.open().await;
    let out = s.enqueue(vec![msg(2, 1, 3, 5)], policy()).await.unwrap();
    assert!(
        stored_id(&out[0]) > last,
        "an id is not reused after the highest one was deleted, even after a reopen"
    );
}

async fn quotas(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2, 3]).await;
    let p = EnqueuePolicy {
        max_messages: 3,
        max_bytes: 1000,
        ..policy()
    };
    let out = s
        .enqueue(
            (0..5)
                .map(|i| msg(2, 1, i, 10))
                .chain([msg(3, 1, 9, 10)])
                .collect(),
            p,
        )
        .await
        .unwrap();
    let full = out
        .iter()
        .filter(|o| matches!(o, EnqueueOutcome::QuotaFull))
        .count();
    assert_eq!(
        full, 2,
        "the fourth and fifth message exceed the count quota"
    );
    assert!(
        matches!(out[5], EnqueueOutcome::Stored(_)),
        "quotas are per recipient"
    );
    // Acknowledging frees the quota.
    let first = s.pending(key(2), 0, NOW, 1, usize::MAX).await.unwrap()[0].delivery_id;
    assert_eq!(s.ack(key(2), vec![first]).await.unwrap(), 1);
    let out = s.enqueue(vec![msg(2, 1, 10, 10)], p).await.unwrap();
    assert!(matches!(out[0], EnqueueOutcome::Stored(_)));

    // Bytes: 600 fits, a second 600 does not, a small one still does.
    let out = s
        .enqueue(
            vec![msg(3, 1, 20, 600), msg(3, 1, 21, 600), msg(3, 1, 22, 100)],
            p,
        )
        .await
        .unwrap();
    assert!(matches!(out[0], EnqueueOutcome::Stored(_)));
    assert!(matches!(out[1], EnqueueOutcome::QuotaFull));
    assert!(matches!(out[2], EnqueueOutcome::Stored(_)));
    // The quota is enforced across handles (another relay process) too.
    let other = be.another(&s).await;
    let out = other.enqueue(vec![msg(3, 1, 23, 10)], p).await.unwrap();
    assert!(matches!(out[0], EnqueueOutcome::QuotaFull));
}

async fn ttl_expiry(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2, 3]).await;
    let short = EnqueuePolicy {
        ttl_ms: 1000,
        max_messages: 2,
        ..policy()
    };
    s.enqueue(vec![msg(2, 1, 1, 10), msg(3, 1, 2, 10)], short)
        .await
        .unwrap();
    s.enqueue(
        vec![msg(2, 1, 3, 10)],
        EnqueuePolicy {
            now_ms: NOW + 500,
            ..short
        },
    )
    .await
    .unwrap();
    // Expired messages are not delivered even before expiry runs.
    let at = NOW + 1200;
    let got = s.pending(key(2), 0, at, 10, usize::MAX).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [mid(3)]
    );
    assert_eq!(s.expire(NOW + 999).await.unwrap(), 0);
    assert_eq!(s.expire(at).await.unwrap(), 2);
    assert_eq!(s.expire(at).await.unwrap(), 0);
    // Expiry freed bob's quota (2 messages: one left, one more fits).
    let out = s
        .enqueue(
            vec![msg(2, 1, 4, 10), msg(2, 1, 5, 10)],
            EnqueuePolicy {
                now_ms: at,
                ..short
            },
        )
        .await
        .unwrap();
    assert!(matches!(out[0], EnqueueOutcome::Stored(_)));
    assert!(matches!(out[1], EnqueueOutcome::QuotaFull));
    assert_eq!(
        s.pending(key(2), 0, at, 10, usize::MAX)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn prekeys(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2]).await;
    assert!(
        s.take_bundle(key(2)).await.unwrap().is_none(),
        "no bundle yet"
    );
    let up = UploadPrekeysOut {
        signed_prekey: Some(rec(1, 64)),
        last_resort_kem: None,
        one_time_x25519: vec![rec(10, 32), rec(11, 32)],
        one_time_kem: vec![rec(20, 1200)],
    };
    assert_eq!(
        s.upload_prekeys(key(2), up, 5).await.unwrap(),
        UploadOutcome::Stored(PrekeyCounts { x25519: 2, kem: 1 })
    );
    assert!(
        s.take_bundle(key(2)).await.unwrap().is_none(),
        "a bundle needs the last-resort ML-KEM prekey too"
    );
    assert_eq!(
        s.prekey_counts(key(2)).await.unwrap(),
        PrekeyCounts { x25519: 2, kem: 1 },
        "an incomplete bundle consumes nothing"
    );
    let over = UploadPrekeysOut {
        last_resort_kem: Some(rec(2, 1200)),
        one_time_x25519: (100..104).map(|i| rec(i, 32)).collect(),
        ..Default::default()
    };
    assert_eq!(
        s.upload_prekeys(key(2), over, 5).await.unwrap(),
        UploadOutcome::Limit
    );
    assert_eq!(
        s.prekey_counts(key(2)).await.unwrap(),
        PrekeyCounts { x25519: 2, kem: 1 },
        "a refused upload stores nothing"
    );
    let up = UploadPrekeysOut {
        last_resort_kem: Some(rec(2, 1200)),
        one_time_x25519: vec![rec(11, 33)], // replaces id 11
        ..Default::default()
    };
    assert_eq!(
        s.upload_prekeys(key(2), up, 5).await.unwrap(),
        UploadOutcome::Stored(PrekeyCounts { x25519: 2, kem: 1 })
    );

    let (b, c) = s.take_bundle(key(2)).await.unwrap().unwrap();
    assert_eq!(b.identity, key(2));
    assert_eq!(b.signed_prekey, rec(1, 64));
    assert_eq!(b.one_time_x25519, Some(rec(10, 32)));
    assert_eq!(
        (b.kem.clone(), b.kem_is_last_resort),
        (rec(20, 1200), false)
    );
    assert_eq!(c, PrekeyCounts { x25519: 1, kem: 0 });
    let (b, c) = s.take_bundle(key(2)).await.unwrap().unwrap();
    assert_eq!(b.one_time_x25519, Some(rec(11, 33)));
    assert_eq!((b.kem, b.kem_is_last_resort), (rec(2, 1200), true));
    assert_eq!(c, PrekeyCounts { x25519: 0, kem: 0 });
    let (b, _) = s.take_bundle(key(2)).await.unwrap().unwrap();
    assert_eq!(b.one_time_x25519, None, "exhausted");
    assert!(
        b.kem_is_last_resort,
        "the last-resort key is never consumed"
    );
    assert_eq!(
        s.prekey_counts(key(1)).await.unwrap(),
        PrekeyCounts { x25519: 0, kem: 0 }
    );
}

async fn one_time_prekeys_are_taken_once_under_concurrency(be: &impl Backend) {
    let owner = be.open().await;
    register(&owner, &[2]).await;
    let n = 40u32;
    let up = UploadPrekeysOut {
        signed_prekey: Some(rec(1, 64)),
        last_resort_kem: Some(rec(2, 64)),
        one_time_x25519: (100..100 + n).map(|i| rec(i, 32)).collect(),
        one_time_kem: (500..500 + n).map(|i| rec(i, 64)).collect(),
    };
    owner.upload_prekeys(key(2), up, 1000).await.unwrap();
    // Two handles (for PostgreSQL: two relay processes' pools), 60 fetches in parallel.
    let handles = [
        Arc::new(be.another(&owner).await),
        Arc::new(be.another(&owner).await),
    ];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = handles[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.take_bundle(key(2)).await.unwrap().unwrap().0
        }));
    }
    let (mut x, mut kem, mut last_resort) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let b = t.await.unwrap();
        if let Some(r) = b.one_time_x25519 {
            x.push(r.id);
        }
        if b.kem_is_last_resort {
            last_resort += 1;
        } else {
            kem.push(b.kem.id);
        }
    }
    for (name, ids) in [("x25519", &mut x), ("kem", &mut kem)] {
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            total,
            "a one-time {name} prekey was handed out twice"
        );
        assert_eq!(
            total, n as usize,
            "every one-time {name} prekey was handed out"
        );
    }
    assert_eq!(last_resort, 60 - n as usize);
    assert_eq!(
        owner.prekey_counts(key(2)).await.unwrap(),
        PrekeyCounts { x25519: 0, kem: 0 }
    );
}

async fn concurrent_enqueues_keep_per_recipient_order(be: &impl Backend) {
    let first = be.open().await;
    register(&first, &[1, 2, 3, 4]).await;
    let second = be.another(&first).await;
    let handles = [Arc::new(first), Arc::new(second)];
    // 8 writers (on two handles) each enqueue 10 batches of 5 messages to bobs 2, 3 and 4.
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let s = handles[w as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for b in 0..10u32 {
                let batch: Vec<_> = (0..5u32)
                    .map(|i| {
                        let n = w * 1000 + b * 10 + i;
                        msg(2 + (n % 3) as u8, 1, n, 8)
                    })
                    .collect();
                let out = s.enqueue(batch.clone(), policy()).await.unwrap();
                for (m, o) in batch.iter().zip(&out) {
                    mine.push((m.recipient, m.message_id, stored_id(o)));
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // Each writer's messages to one recipient get increasing ids (per-sender order).
        for r in [2u8, 3, 4] {
            let ids: Vec<u64> = mine
                .iter()
                .filter(|(k, _, _)| *k == key(r))
                .map(|(_, _, id)| *id)
                .collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        }
        all.extend(mine);
    }
    assert_eq!(all.len(), 400);
    for r in [2u8, 3, 4] {
        let mut expected: Vec<(u64, MessageId)> = all
            .iter()
            .filter(|(k, _, _)| *k == key(r))
            .map(|(_, m, id)| (*id, *m))
            .collect();
        expected.sort();
        let ids: HashSet<u64> = expected.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids.len(),
            expected.len(),
            "delivery ids are unique per recipient"
        );
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = handles[1]
                .pending(key(r), after, NOW, 7, usize::MAX)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.delivery_id;
            got.extend(page.iter().map(|m| (m.delivery_id, m.message_id)));
        }
        assert_eq!(
            got, expected,
            "paged reads return every message in id order"
        );
    }
}

async fn multi_recipient_enqueue(be: &impl Backend) {
    let s = be.open().await;
    register(&s, &[1, 2, 3]).await;
    // A fan-out is a run of entries sharing one body, in one batch with other sends.
    let body = Bytes::from_static(b"group");
    let fan_out = [2, 99, 3].map(|r| NewMessage {
        recipient: key(r),
        sender: key(1),
        message_id: mid(7),
        body: body.clone(),
    });
    let mut batch = vec![msg(2, 1, 6, 4)];
    batch.extend(fan_out);
    batch.push(msg(2, 1, 8, 4));
    let out = s.enqueue(batch, policy()).await.unwrap();
    assert_eq!(out.len(), 5);
    assert!(matches!(out[2], EnqueueOutcome::UnknownRecipient));
    let got = s.pending(key(2), 0, NOW, 10, usize::MAX).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [mid(6), mid(7), mid(8)],
        "stored in batch order"
    );
    for r in [2, 3] {
        let got = s.pending(key(r), 0, NOW, 10, usize::MAX).await.unwrap();
        let m = got.iter().find(|m| m.message_id == mid(7)).unwrap();
        assert_eq!((m.sender, &m.body[..]), (key(1), &b"group"[..]));
    }
}

/// PostgreSQL only: migrations, and the notifications that carry live delivery across relays.
mod postgres_only {
    use super::*;

    async fn next_event(
        events: &mut tokio::sync::mpsc::Receiver<RemoteEvent>,
    ) -> Option<RemoteEvent> {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no event in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_are_versioned_and_idempotent() {
        let Some(db) = PgSchema::create("migrations_are_versioned_and_idempotent").await else {
            return;
        };
        // Two relays starting at once both succeed; the schema is migrated once.
        let (a, b) = tokio::join!(db.connect(), db.connect());
        assert_eq!(a.relay_id(), b.relay_id());
        assert_eq!(
            a.schema_version().await.unwrap(),
            sotto_relay::store::postgres::SCHEMA_VERSION
        );
        let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM sotto_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        // A database migrated by a newer relay is refused, not used half-understood.
        client
            .execute(
                "INSERT INTO sotto_migrations (version, applied_ms) VALUES (999, 0)",
                &[],
            )
            .await
            .unwrap();
        let err = PostgresStore::connect(&db.url, PgOptions::default())
            .await
            .err()
            .expect("a newer schema is refused");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_processes_enqueues_are_announced() {
        let Some(db) = PgSchema::create("other_processes_enqueues_are_announced").await else {
            return;
        };
        let a = db.connect().await;
        let b = db.connect().await;
        register(&a, &[1, 2, 3]).await;
        let mut events = b.subscribe().expect("PostgreSQL stores are shared");
        let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap();
        assert_eq!(
            first,
            Some(RemoteEvent::Resync),
            "a re-check once LISTEN is active"
        );
        // B's own enqueues are not announced back to B; A's are, per recipient, after commit.
        b.enqueue(vec![msg(3, 1, 1, 5)], policy()).await.unwrap();
        a.enqueue(
            vec![msg(2, 1, 2, 5), msg(2, 1, 3, 5), msg(99, 1, 4, 5)],
            policy(),
        )
        .await
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(RemoteEvent::NewMessages(key(2))));
        // Nothing more: one event per recipient and batch, none for B's own or unknown ones.
        let more = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
        assert!(more.is_err(), "unexpected event {more:?}");
        // Many recipients in one batch (more than one NOTIFY payload holds).
        let seeds: Vec<u8> = (10..=250).collect();
        register(&a, &seeds).await;
        a.enqueue(seeds.iter().map(|&r| msg(r, 1, 9, 1)).collect(), policy())
            .await
            .unwrap();
        let mut woken = HashSet::new();
        while woken.len() < seeds.len() {
            match tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap()
            {
                Some(RemoteEvent::NewMessages(k)) => {
                    woken.insert(k);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(woken, seeds.iter().map(|&s| key(s)).collect());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_listener_connection_is_replaced_and_followed_by_a_resync() {
        let Some(db) = PgSchema::create("a_lost_listener_connection_is_replaced").await else {
            return;
        };
        let a = db.connect().await;
        let b = db.connect().await;
        register(&a, &[1, 2]).await;
        let mut events = b.subscribe().unwrap();
        assert_eq!(next_event(&mut events).await, Some(RemoteEvent::Resync));
        // The database drops B's LISTEN connection (restart, failover, idle kill...).
        let (admin, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let killed: i64 = admin
            .query_one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE query = 'LISTEN ' || $1::TEXT",
                &[&b.notify_channel()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "exactly B's listener");
        // Whatever A commits while B is not listening is not announced; B reconnects, LISTENs
        // again and then asks for a re-read of every connected mailbox.
        a.enqueue(vec![msg(2, 1, 1, 5)], policy()).await.unwrap();
        assert_eq!(next_event(&mut events).await, Some(RemoteEvent::Resync));
        a.enqueue(vec![msg(2, 1, 2, 5)], policy()).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            Some(RemoteEvent::NewMessages(key(2))),
            "announced again after the reconnection"
        );
    }
}

/// SQLite only: the schema versions and their migrations.
mod sqlite_only {
    use super::*;
    use sotto_relay::store::StoreError;
    use sotto_relay::store::sqlite::{MIGRATIONS, SCHEMA_VERSION};

    /// A store as the first release wrote it: relay-wide delivery ids, the last one in `meta`.
    fn version_1_store(path: &std::path::Path) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('schema_version', 1);
             INSERT INTO meta (key, value) VALUES ('relay_id', x'0707070707070707070707070707070707070707070707070707070707070707');
             INSERT INTO meta (key, value) VALUES ('last_delivery_id', 41);",
        )
        .unwrap();
        for seed in [1u8, 2, 3] {
            conn.execute(
                "INSERT INTO identities (key, registered_ms) VALUES (?1, 0)",
                [&key(seed).as_bytes()[..]],
            )
            .unwrap();
        }
        // Bob's mailbox holds 12 and 40; 41 (carol's) was acknowledged.
        for (id, to) in [(12i64, 2u8), (40, 2)] {
            conn.execute(
                "INSERT INTO messages (id, recipient, sender, msg_id, ts, expires, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    id,
                    &key(to).as_bytes()[..],
                    &key(1).as_bytes()[..],
                    &mid(id as u32).0[..],
                    NOW as i64,
                    (NOW + 60_000) as i64,
                    &b"old"[..]
                ],
            )
            .unwrap();
        }
    }

    #[tokio::test]
    async fn a_version_1_store_is_migrated_keeping_its_messages_and_never_reusing_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        version_1_store(&path);
        let s = SqliteStore::open(&path, Durability::Normal).unwrap();
        assert_eq!(s.relay_id().0, [7; 32], "relay id kept");
        let old = s.pending(key(2), 0, NOW, 10, usize::MAX).await.unwrap();
        assert_eq!(
            old.iter()
                .map(|m| (m.delivery_id, m.message_id))
                .collect::<Vec<_>>(),
            [(12, mid(12)), (40, mid(40))]
        );
        // Every mailbox continues above the old relay-wide counter.
        for to in [2u8, 3] {
            let out = s.enqueue(vec![msg(to, 1, 100, 4)], policy()).await.unwrap();
            assert_eq!(stored_id(&out[0]), 42, "mailbox {to}");
        }
        drop(s);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_newer_or_foreign_database_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.db");
        version_1_store(&newer);
        rusqlite::Connection::open(&newer)
            .unwrap()
            .execute_batch("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
            .unwrap();
        let err = SqliteStore::open(&newer, Durability::Normal).err().unwrap();
        assert!(matches!(err, StoreError::Schema { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("upgrade sotto"), "{err}");

        let foreign = dir.path().join("customers.db");
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE customers (name TEXT)")
            .unwrap();
        drop(conn);
        assert!(SqliteStore::open(&foreign, Durability::Normal).is_err());
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "no sotto table was added to a foreign database");
    }
}
