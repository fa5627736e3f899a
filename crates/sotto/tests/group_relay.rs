//! The relay's group fan-out (`SendMulti`, frame 0x47) against the real `sotto relay` process:
//! one upload stored as one mailbox entry per recipient, charged to the sender's send quota,
//! each recipient's mailbox limits applied.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sotto_protocol::IdentityKeyPair;
use sotto_transport::{ClientError, RelayClient};
use sotto_wire::*;

const T: Duration = Duration::from_secs(10);

struct RelayProc {
    child: Child,
    url: String,
}

impl RelayProc {
    fn start(db: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["relay", "--listen", "127.0.0.1:0", "--store"])
            .arg(format!("sqlite:{}", db.display()))
            .args(extra)
            .env("SOTTO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(url.starts_with("ws://127.0.0.1:"), "banner {line:?}");
        Self { child, url }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kp(seed: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[seed; 32])
}

fn mid(n: u8) -> MessageId {
    MessageId([n; 16])
}

async fn connect(url: &str, seed: u8) -> RelayClient {
    tokio::time::timeout(T, RelayClient::connect(url, &kp(seed), None))
        .await
        .unwrap()
        .unwrap()
}

async fn drain(c: &mut RelayClient) -> Vec<DeliverIn> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(T, c.recv_frame())
            .await
            .unwrap()
            .unwrap()
        {
            RelayFrame::Drained => return out,
            RelayFrame::Deliver(d) => out.push(d),
            _ => {}
        }
    }
}

fn rejected(r: Result<(), ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Rejected(e)) => e.code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_becomes_one_mailbox_entry_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&dir.path().join("r.db"), &[]);
    for seed in [2, 3, 4] {
        connect(&relay.url, seed).await.close().await;
    }
    // Carol is online (live push), Bob and Dave offline (stored).
    let mut carol = connect(&relay.url, 3).await;
    assert!(drain(&mut carol).await.is_empty());
    let mut alice = connect(&relay.url, 1).await;
    let body = vec![0x03; 300];
    let to = vec![kp(2).public(), kp(3).public(), kp(4).public()];
    tokio::time::timeout(T, alice.send_multi(to, mid(1), body.clone()))
        .await
        .unwrap()
        .unwrap();
    let live = tokio::time::timeout(T, carol.next_delivery())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (live.sender, live.message_id, &live.body),
        (kp(1).public(), mid(1), &body)
    );
    let mut bob = connect(&relay.url, 2).await;
    let got = drain(&mut bob).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].sender, got[0].message_id, &got[0].body),
        (kp(1).public(), mid(1), &body)
    );
    // Separate entries: Bob's ack does not remove Dave's.
    bob.ack(vec![got[0].delivery_id]).await.unwrap();
    bob.send_frame(&ClientFrame::Ping(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut dave = connect(&relay.url, 4).await;
    let d = drain(&mut dave).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].body, body);
    // (Delivery ids are per mailbox, so the two entries may well have the same id.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_is_charged_per_recipient_and_mailbox_limits_apply() {
    let dir = tempfile::tempdir().unwrap();
    // 2 sends/s per identity, burst 4; at most 1 undelivered message per mailbox.
    let relay = RelayProc::start(
        &dir.path().join("r.db"),
        &["--identity-rate", "2", "--mailbox-messages", "1"],
    );
    for seed in [2, 3, 4, 5, 6] {
        connect(&relay.url, seed).await.close().await;
    }
    let mut alice = connect(&relay.url, 1).await;
    let five: Vec<_> = (2..=6).map(|s| kp(s).public()).collect();
    // Five recipients cost five sends: more than the burst of four.
    assert_eq!(
        rejected(alice.send_multi(five, mid(1), vec![1; 10]).await),
        ErrorCode::RateLimited
    );
    // Three fit; the fourth token is left, so a second fan-out to two is refused.
    let three: Vec<_> = (2..=4).map(|s| kp(s).public()).collect();
    alice.send_multi(three, mid(2), vec![2; 10]).await.unwrap();
    assert_eq!(
        rejected(
            alice
                .send_multi(vec![kp(5).public(), kp(6).public()], mid(3), vec![3; 10])
                .await
        ),
        ErrorCode::RateLimited
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Bob's mailbox is full (one message): he is reported, Eve still gets hers.
    assert_eq!(
        rejected(
            alice
                .send_multi(vec![kp(2).public(), kp(5).public()], mid(4), vec![4; 10])
                .await
        ),
        ErrorCode::QuotaFull
    );
    let mut eve = connect(&relay.url, 5).await;
    let got = drain(&mut eve).await;
    assert_eq!(
        got.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        vec![mid(4)]
    );
    // An unregistered recipient is reported; the registered one is stored.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        rejected(
            alice
                .send_multi(vec![kp(99).public(), kp(6).public()], mid(5), vec![5; 10])
                .await
        ),
        ErrorCode::UnknownRecipient
    );
    let mut frank = connect(&relay.url, 6).await;
    assert_eq!(drain(&mut frank).await.len(), 1);
}

/// Registers `id` with a signed prekey and a last-resort ML-KEM prekey (enough for a bundle).
async fn register_with_bundle(url: &str, id: &IdentityKeyPair) {
    let mut rng =
        <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(id.public().to_bytes());
    let mut store = sotto_protocol::PrekeyStore::new();
    let spk = store.rotate_signed_prekey(&mut rng, id);
    let kem = store.rotate_last_resort_kem_prekey(&mut rng, id);
    let mut c = tokio::time::timeout(T, RelayClient::connect(url, id, None))
        .await
        .unwrap()
        .unwrap();
    c.upload_prekeys(UploadPrekeysOut {
        signed_prekey: Some(PrekeyRecord {
            id: spk.id,
            blob: spk.encode(),
        }),
        last_resort_kem: Some(PrekeyRecord {
            id: kem.id,
            blob: kem.encode(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    c.close().await;
}

/// Issue 12 item 7: a `rate_limited` bundle fetch dropped the sender-key outbox entry, so groups
/// over ~200 members lost keys. Now it means "retry later, in order". An in-process relay with a
/// low fetch limit (burst 10, 40/s) and a group of 210 members: each member gets exactly its
/// invite and the owner's sender key.
#[test]
fn a_group_of_210_loses_no_keys_under_fetch_rate_limits() {
    const MEMBERS: usize = 210;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let store = sotto_relay::store::SqliteStore::open(
            &dir.path().join("r.db"),
            sotto_relay::store::sqlite::Durability::Normal,
        )
        .unwrap();
        let config = sotto_relay::RelayConfig {
            identity_fetches_per_sec: 40,
            identity_fetches_burst: 10,
            ..Default::default()
        };
        let relay = sotto_relay::Relay::new(store, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { relay.serve(listener, None).await });
        url
    });
    let members: Vec<IdentityKeyPair> = (0..MEMBERS)
        .map(|i| {
            let mut seed = [0x50; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            IdentityKeyPair::from_seed(&seed)
        })
        .collect();
    rt.block_on(async {
        for m in &members {
            register_with_bundle(&url, m).await;
        }
    });
    let mut owner = sotto_client::Client::init(
        &dir.path().join("owner"),
        b"pw",
        sotto_client::KdfParams::INSECURE_TEST,
    )
    .unwrap();
    rt.block_on(owner.register(&url)).unwrap();
    let mut names = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let invite = sotto_client::Invite {
            identity: m.public(),
            relay: url.clone(),
        }
        .encode()
        .unwrap();
        names.push(format!("m{i}"));
        owner.add_contact(&names[i], &invite).unwrap();
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    owner.group_create_with("big", &refs).unwrap();
    assert_eq!(owner.outbox_len().unwrap(), 2 * MEMBERS);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while owner.outbox_len().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "outbox never drained");
        rt.block_on(async {
            let _ = owner.sync().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
    }
    rt.block_on(async {
        owner.disconnect().await;
        let mut short = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let mut c = tokio::time::timeout(T, RelayClient::connect(&url, m, None))
                .await
                .unwrap()
                .unwrap();
            let from_owner = drain(&mut c)
                .await
                .iter()
                .filter(|d| d.sender == owner.identity())
                .count();
            if from_owner != 2 {
                short.push((i, from_owner));
            }
            c.close().await;
        }
        assert!(
            short.is_empty(),
            "members missing their invite or key: {short:?}"
        );
    });
}
