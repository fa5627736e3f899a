//! Several relay processes on one PostgreSQL database, started as an operator starts them
//! (`sotto relay --store postgres://...`, the built binary), driven over real sockets.
//!
//! Runs when `SOTTO_TEST_POSTGRES_URL` is set (`.ci/run` sets it); each test creates its own
//! schema and drops it at the end. Without the variable every test says it was skipped, and passes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers"
)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_protocol::IdentityKeyPair;
use sotto_transport::ClientSocket;
use sotto_wire::*;
use support::{RelayProc, connect, drain, drain_acking, kp, mid, next_delivery, say};
use tokio_tungstenite::tungstenite::Message;

const ENV: &str = "SOTTO_TEST_POSTGRES_URL";
const T: Duration = Duration::from_secs(20);

/// A fresh schema on the test database, dropped when this is dropped.
struct Db {
    base: String,
    schema: String,
    url: String,
}

impl Db {
    async fn create(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(ENV) else {
            say(&format!(
                "SKIPPED {test}: {ENV} is not set (set it to run the multi-relay PostgreSQL tests)"
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
            "{test}: two relay processes on {} schema {schema}",
            sotto_relay::config::redact_url(&base)
        ));
        Some(Self { base, schema, url })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
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

/// A relay process on the test schema.
fn start(db: &Db) -> RelayProc {
    RelayProc::start_store(&db.url, &["--pg-pool", "4"])
}

fn record(id: u32, len: usize) -> PrekeyRecord {
    PrekeyRecord {
        id,
        blob: vec![(id % 251) as u8; len],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_and_acks_across_relays() {
    let Some(db) = Db::create("live_delivery_and_acks_across_relays").await else {
        return;
    };
    let a = start(&db);
    let b = start(&db);
    let mut alice = connect(&a.url, 1).await;
    let mut bob = connect(&b.url, 2).await;
    drain(&mut alice).await;
    drain(&mut bob).await;
    assert_eq!(
        alice.relay_id(),
        bob.relay_id(),
        "relays on one database are one relay to clients"
    );

    // Alice on A, Bob on B: pushed live, in order, including pipelined sends.
    alice
        .send(kp(2).public(), mid(1), b"via A".to_vec())
        .await
        .unwrap();
    let d = next_delivery(&mut bob).await;
    assert_eq!(
        (d.sender, d.body.as_slice()),
        (kp(1).public(), &b"via A"[..])
    );
    let mut ws = alice.into_socket();
    for i in 0..100u32 {
        let f = ClientFrame::Send(SendOut {
            recipient: kp(2).public(),
            message_id: mid(100 + i),
            body: i.to_be_bytes().to_vec(),
        });
        ws.send(Message::Binary(f.encode().into())).await.unwrap();
    }
    let mut ids = vec![d.delivery_id];
    for i in 0..100u32 {
        let d = next_delivery(&mut bob).await;
        assert_eq!(d.message_id, mid(100 + i), "per-sender order across relays");
        ids.push(d.delivery_id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Bob acknowledges on B; the reply goes to Alice, back on A.
    bob.ack(ids).await.unwrap();
    bob.send(kp(1).public(), mid(2), b"via B".to_vec())
        .await
        .unwrap();
    let mut alice = connect(&a.url, 1).await; // a fresh connection (the old one is a raw socket)
    let got = drain(&mut alice).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"via B");
    drop(ws);
    // Acknowledged on B = deleted for A too. Acks have no reply frame: poll until committed.
    bob.close().await;
    let mut left = usize::MAX;
    for _ in 0..50 {
        let mut bob = connect(&a.url, 2).await;
        left = drain(&mut bob).await.len();
        bob.close().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "acks delete on every relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_delivery_across_relays() {
    let Some(db) = Db::create("offline_delivery_across_relays").await else {
        return;
    };
    let a = start(&db);
    let b = start(&db);
    connect(&a.url, 2).await.close().await; // bob registers on A, goes offline
    let mut alice = connect(&b.url, 1).await;
    for i in 0..5 {
        alice
            .send(kp(2).public(), mid(i), vec![i as u8; 64])
            .await
            .unwrap();
    }
    let mut bob = connect(&a.url, 2).await;
    let got = drain(&mut bob).await;
    assert_eq!(
        got.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        (0..5).map(mid).collect::<Vec<_>>()
    );
    // Not acknowledged: offered again, by the other relay too.
    bob.close().await;
    let mut bob = connect(&b.url, 2).await;
    let again = drain(&mut bob).await;
    assert_eq!(again.len(), 5);
    bob.ack(again.iter().map(|d| d.delivery_id).collect())
        .await
        .unwrap();
    bob.send_frame(&ClientFrame::Ping(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.close().await;
    let mut bob = connect(&a.url, 2).await;
    assert!(drain(&mut bob).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_are_handed_out_once_across_relays() {
    let Some(db) = Db::create("one_time_prekeys_are_handed_out_once_across_relays").await else {
        return;
    };
    let relays = [start(&db), start(&db)];
    let mut bob = connect(&relays[0].url, 2).await;
    drain(&mut bob).await;
    let n = 60u32;
    let counts = bob
        .upload_prekeys(UploadPrekeysOut {
            signed_prekey: Some(record(1, 64)),
            last_resort_kem: Some(record(2, 1200)),
            one_time_x25519: (100..100 + n).map(|i| record(i, 32)).collect(),
            one_time_kem: (500..500 + n).map(|i| record(i, 1200)).collect(),
        })
        .await
        .unwrap();
    assert_eq!(counts, PrekeyCounts { x25519: n, kem: n });
    // Ten fetchers, half through each relay, 8 fetches each, all at once.
    let mut tasks = Vec::new();
    for seed in 20..30u8 {
        let url = relays[seed as usize % 2].url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url, seed).await;
            let mut got = Vec::new();
            for _ in 0..8 {
                got.push(c.fetch_bundle(kp(2).public()).await.unwrap());
            }
            got
        }));
    }
    let (mut x, mut kem, mut last_resort) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        for b in t.await.unwrap() {
            if let Some(otp) = b.one_time_x25519 {
                x.push(otp.id);
            }
            if b.kem_is_last_resort {
                last_resort += 1;
            } else {
                kem.push(b.kem.id);
            }
        }
    }
    for ids in [&mut x, &mut kem] {
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(
            (ids.len(), total),
            (n as usize, n as usize),
            "every one-time prekey handed out exactly once over both relays"
        );
    }
    assert_eq!(last_resort, 80 - n as usize);
}

/// Sends `ids` pipelined on `ws`, then collects the `Accepted` ids until all are in or the
/// connection dies (its relay was killed).
async fn send_all(mut ws: ClientSocket, to: IdentityKeyPair, ids: Vec<u32>) -> Vec<MessageId> {
    let mut accepted = Vec::new();
    let total = ids.len();
    for i in ids {
        let f = ClientFrame::Send(SendOut {
            recipient: to.public(),
            message_id: mid(i),
            body: vec![9; 200],
        });
        if ws.send(Message::Binary(f.encode().into())).await.is_err() {
            break;
        }
        // Keep reading replies so neither side's buffers fill.
        while let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::ZERO, ws.next()).await
        {
            if let Ok(RelayFrame::Accepted(id)) = RelayFrame::decode(&b) {
                accepted.push(id);
            }
        }
        tokio::task::yield_now().await;
    }
    while accepted.len() < total {
        match tokio::time::timeout(T, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Ok(RelayFrame::Accepted(id)) = RelayFrame::decode(&b) {
                    accepted.push(id);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_relay_under_load_loses_no_accepted_message() {
    let Some(db) = Db::create("sigkill_of_one_relay_under_load_loses_no_accepted_message").await
    else {
        return;
    };
    let mut a = start(&db);
    let b = start(&db);
    let bob = kp(2);
    connect(&a.url, 2).await.close().await;
    // Alice sends through B (survives), Carol through A (killed), both to Bob on A.
    let alice = connect(&b.url, 1).await.into_socket();
    let carol = connect(&a.url, 3).await.into_socket();
    let mut bob_a = connect(&a.url, 2).await;
    drain(&mut bob_a).await;
    let alice_task = tokio::spawn(send_all(alice, kp(2), (0..400).collect()));
    let carol_task = tokio::spawn(send_all(carol, kp(2), (10_000..10_400).collect()));

    // Bob receives and acknowledges on A until about 150 arrived, then A is SIGKILLed.
    let mut received: Vec<MessageId> = Vec::new();
    while received.len() < 150 {
        let d = next_delivery(&mut bob_a).await;
        received.push(d.message_id);
        bob_a.ack(vec![d.delivery_id]).await.unwrap();
    }
    a.kill9();
    drop(bob_a);

    let carol_accepted = carol_task.await.unwrap();
    // Carol reconnects to the surviving relay and carries on.
    let mut carol = connect(&b.url, 3).await;
    drain(&mut carol).await;
    carol
        .send(bob.public(), mid(20_000), b"after the crash".to_vec())
        .await
        .unwrap();
    let alice_accepted = alice_task.await.unwrap();
    assert_eq!(alice_accepted.len(), 400, "B kept accepting throughout");
    say(&format!(
        "sigkill test: bob had {} before the kill; accepted: {} via B, {} via A before it died",
        received.len(),
        alice_accepted.len(),
        carol_accepted.len()
    ));

    // Bob reconnects to B: everything accepted by either relay is there, exactly what was not
    // yet delivered and acknowledged, and nothing is lost.
    let mut bob_b = connect(&b.url, 2).await;
    let mut got: HashSet<MessageId> = received.iter().copied().collect();
    for d in drain_acking(&mut bob_b).await {
        got.insert(d.message_id);
    }
    let mut expected: Vec<MessageId> = alice_accepted;
    expected.extend(carol_accepted);
    expected.push(mid(20_000));
    let deadline = tokio::time::Instant::now() + T;
    while expected.iter().any(|id| !got.contains(id)) && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), bob_b.next_delivery()).await
        {
            bob_b.ack(vec![d.delivery_id]).await.unwrap();
            got.insert(d.message_id);
        }
    }
    let lost: Vec<_> = expected.iter().filter(|id| !got.contains(id)).collect();
    assert!(lost.is_empty(), "accepted but never delivered: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fan_out_reaches_members_on_both_relays() {
    let Some(db) = Db::create("group_fan_out_reaches_members_on_both_relays").await else {
        return;
    };
    let a = start(&db);
    let b = start(&db);
    let mut alice = connect(&a.url, 1).await;
    let mut bob = connect(&b.url, 2).await; // live on the other relay
    let mut carol = connect(&a.url, 3).await; // live on the same relay
    connect(&b.url, 4).await.close().await; // dave: registered, offline
    for c in [&mut alice, &mut bob, &mut carol] {
        drain(c).await;
    }
    let members = vec![kp(2).public(), kp(3).public(), kp(4).public()];
    alice
        .send_multi(members, mid(7), b"to the group".to_vec())
        .await
        .unwrap();
    for c in [&mut bob, &mut carol] {
        let d = next_delivery(c).await;
        assert_eq!(
            (d.sender, d.message_id, d.body.as_slice()),
            (kp(1).public(), mid(7), &b"to the group"[..])
        );
    }
    let mut dave = connect(&a.url, 4).await;
    let got = drain(&mut dave).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"to the group");
}
