//! The relay started as a user starts it (`sotto relay ...`, the built binary), driven over real
//! sockets with `sotto_transport::RelayClient`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers"
)]

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_transport::{ClientError, ClientSocket, RelayClient};
use sotto_wire::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Opens a socket and answers the challenge with `auth` built from it.
async fn raw_authenticated(url: &str, seed: u8) -> ClientSocket {
    let c = connect(url, seed).await;
    c.into_socket()
}

fn record(id: u32, len: usize) -> PrekeyRecord {
    PrekeyRecord {
        id,
        blob: vec![(id % 251) as u8; len],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_messages_live() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    let mut alice = connect(&relay.url, 1).await;
    let mut bob = connect(&relay.url, 2).await;
    assert!(drain(&mut alice).await.is_empty());
    assert!(drain(&mut bob).await.is_empty());
    assert_eq!(alice.relay_id(), bob.relay_id());

    alice
        .send(kp(2).public(), mid(1), b"hello bob".to_vec())
        .await
        .unwrap();
    let d = next_delivery(&mut bob).await;
    assert_eq!(
        (d.sender, d.message_id, d.body.as_slice()),
        (kp(1).public(), mid(1), &b"hello bob"[..])
    );
    bob.ack(vec![d.delivery_id]).await.unwrap();
    bob.send(kp(1).public(), mid(2), b"hi alice".to_vec())
        .await
        .unwrap();
    let d = next_delivery(&mut alice).await;
    assert_eq!(d.body, b"hi alice");

    // Per-sender order, pipelined: 200 sends without waiting, delivered in order.
    let mut ws = alice.into_socket();
    for i in 0..200u32 {
        let f = ClientFrame::Send(SendOut {
            recipient: kp(2).public(),
            message_id: mid(1000 + i),
            body: i.to_be_bytes().to_vec(),
        });
        ws.send(Message::Binary(f.encode().into())).await.unwrap();
    }
    for i in 0..200u32 {
        let d = next_delivery(&mut bob).await;
        assert_eq!(d.message_id, mid(1000 + i), "per-sender order");
    }
    let text = http_get(&relay.addr, "/metrics");
    assert!(
        text.contains("sotto_relay_messages_accepted_total 202"),
        "{text}"
    );
    assert!(http_get(&relay.addr, "/healthz").contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_messages_after_connecting_in_order() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    connect(&relay.url, 2).await.close().await; // bob registers, goes offline
    let mut alice = connect(&relay.url, 1).await;
    for i in 0..5 {
        alice
            .send(kp(2).public(), mid(i), vec![i as u8; 100])
            .await
            .unwrap();
    }
    let mut bob = connect(&relay.url, 2).await;
    let got = drain(&mut bob).await;
    assert_eq!(
        got.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        (0..5).map(mid).collect::<Vec<_>>()
    );
    // Not acknowledged: delivered again on the next connection (at-least-once).
    bob.close().await;
    let mut bob = connect(&relay.url, 2).await;
    let again = drain(&mut bob).await;
    assert_eq!(again.len(), 5);
    bob.ack(again.iter().map(|d| d.delivery_id).collect())
        .await
        .unwrap();
    bob.send_frame(&ClientFrame::Ping(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.close().await;
    let mut bob = connect(&relay.url, 2).await;
    assert!(
        drain(&mut bob).await.is_empty(),
        "acknowledged messages are deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_no_accepted_message() {
    let (_d, db) = tmpdb();
    let mut relay = RelayProc::start(&db, &[]);
    connect(&relay.url, 2).await.close().await;
    let mut alice = connect(&relay.url, 1).await;
    for i in 0..100 {
        alice
            .send(kp(2).public(), mid(i), vec![7; 256])
            .await
            .unwrap();
    }
    // Pipelined sends: count what was accepted when the relay dies.
    let mut ws = alice.into_socket();
    for i in 100..400u32 {
        let f = ClientFrame::Send(SendOut {
            recipient: kp(2).public(),
            message_id: mid(i),
            body: vec![8; 256],
        });
        ws.send(Message::Binary(f.encode().into())).await.unwrap();
    }
    let mut accepted = (0..100).map(mid).collect::<Vec<_>>();
    while accepted.len() < 250 {
        if let Some(Ok(Message::Binary(b))) = ws.next().await
            && let Ok(RelayFrame::Accepted(id)) = RelayFrame::decode(&b)
        {
            accepted.push(id);
        }
    }
    relay.kill9();
    let relay = RelayProc::start(&db, &[]);
    let mut bob = connect(&relay.url, 2).await;
    let got: Vec<_> = drain_acking(&mut bob)
        .await
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    for id in &accepted {
        assert!(got.contains(id), "accepted message {id:?} lost");
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "order preserved across restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let (_d, db) = tmpdb();
    let mut relay = RelayProc::start(&db, &[]);
    let mut alice = connect(&relay.url, 1).await;
    drain(&mut alice).await;
    Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status()
        .unwrap();
    let f = tokio::time::timeout(T, alice.recv_frame()).await.unwrap();
    assert!(matches!(
        f,
        Ok(RelayFrame::Error(ErrorIn {
            code: ErrorCode::ShuttingDown,
            ..
        })) | Err(_)
    ));
    let status = relay.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_to_another_identitys_mailbox_or_prekeys() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    let mut bob = connect(&relay.url, 2).await;
    drain(&mut bob).await;
    bob.upload_prekeys(UploadPrekeysOut {
        signed_prekey: Some(record(1, 64)),
        last_resort_kem: Some(record(2, 1200)),
        one_time_x25519: vec![record(10, 32)],
        one_time_kem: vec![],
    })
    .await
    .unwrap();
    bob.close().await;
    let mut alice = connect(&relay.url, 1).await;
    alice
        .send(kp(2).public(), mid(1), b"for bob only".to_vec())
        .await
        .unwrap();

    // Mallory (seed 3) learns the delivery id somehow and tries to ack (delete) it, and uploads
    // her own prekeys: uploads carry no identity, so they can only ever touch her own.
    let mut mallory = connect(&relay.url, 3).await;
    let got = drain(&mut mallory).await;
    assert!(got.is_empty(), "mallory sees nothing of bob's mailbox");
    mallory.ack((0..100).collect()).await.unwrap();
    mallory
        .upload_prekeys(UploadPrekeysOut {
            signed_prekey: Some(record(666, 64)),
            last_resort_kem: Some(record(667, 64)),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bundle = alice.fetch_bundle(kp(2).public()).await.unwrap();
    assert_eq!(
        bundle.signed_prekey,
        record(1, 64),
        "bob's signed prekey untouched"
    );
    assert_eq!(bundle.kem, record(2, 1200));

    // Mallory cannot authenticate as bob: she can sign only with her own key.
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut ws = answer_challenge(ws, |relay_id, nonce| {
        let mut a = AuthenticateOut::sign(&kp(3), relay_id, nonce, None);
        a.identity = kp(2).public();
        a
    })
    .await;
    assert_eq!(
        expect_error_then_close(&mut ws).await,
        ErrorCode::Unauthorized
    );

    let mut bob = connect(&relay.url, 2).await;
    let got = drain(&mut bob).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"for bob only");
}

async fn answer_challenge(
    mut ws: ClientSocket,
    make: impl FnOnce(&RelayId, &[u8; 32]) -> AuthenticateOut,
) -> ClientSocket {
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("no challenge")
    };
    let RelayFrame::Challenge(ch) = RelayFrame::decode(&b).unwrap() else {
        panic!("not a challenge")
    };
    let auth = make(&ch.relay_id, &ch.nonce);
    ws.send(Message::Binary(
        ClientFrame::Authenticate(auth).encode().into(),
    ))
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_replayed_challenge_signature_is_refused() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    // Signature over a different nonce.
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut ws = answer_challenge(ws, |relay_id, _| {
        AuthenticateOut::sign(&kp(1), relay_id, &[0; 32], None)
    })
    .await;
    assert_eq!(
        expect_error_then_close(&mut ws).await,
        ErrorCode::Unauthorized
    );
    // Signature for another relay id.
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut ws = answer_challenge(ws, |_, nonce| {
        AuthenticateOut::sign(&kp(1), &RelayId([1; 32]), nonce, None)
    })
    .await;
    assert_eq!(
        expect_error_then_close(&mut ws).await,
        ErrorCode::Unauthorized
    );
    // A valid signature from an earlier connection, replayed.
    let mut saved = None;
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let _ok = answer_challenge(ws, |relay_id, nonce| {
        let a = AuthenticateOut::sign(&kp(1), relay_id, nonce, None);
        saved = Some(a.clone());
        a
    })
    .await;
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut ws = answer_challenge(ws, |_, _| saved.unwrap()).await;
    assert_eq!(
        expect_error_then_close(&mut ws).await,
        ErrorCode::Unauthorized
    );
    // Any other first frame.
    let ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut ws = ws;
    let _ = ws.next().await;
    ws.send(Message::Binary(ClientFrame::Ping(1).encode().into()))
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_close(&mut ws).await,
        ErrorCode::Unauthorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_an_error_and_close_while_others_keep_working() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    let mut alice = connect(&relay.url, 1).await;
    let mut bob = connect(&relay.url, 2).await;
    drain(&mut alice).await;
    drain(&mut bob).await;

    let valid = ClientFrame::Send(SendOut {
        recipient: kp(2).public(),
        message_id: mid(9),
        body: vec![1; 64],
    })
    .encode();
    let cases: Vec<(Message, ErrorCode)> = vec![
        (
            Message::Binary(vec![1u8; MAX_FRAME_LEN + 1].into()),
            ErrorCode::TooLarge,
        ),
        (
            Message::Binary(valid[..valid.len() - 3].to_vec().into()),
            ErrorCode::Malformed,
        ),
        (
            Message::Binary(b"\x00garbage\xff\xfe".to_vec().into()),
            ErrorCode::Malformed,
        ),
        (Message::Binary(vec![].into()), ErrorCode::Malformed),
        (Message::Text("hello".into()), ErrorCode::Malformed),
    ];
    for (i, (msg, code)) in cases.into_iter().enumerate() {
        let mut ws = raw_authenticated(&relay.url, 10 + i as u8).await;
        ws.send(msg).await.unwrap();
        assert_eq!(expect_error_then_close(&mut ws).await, code, "case {i}");
        // Everyone else is still served.
        alice
            .send(kp(2).public(), mid(i as u32), b"still here".to_vec())
            .await
            .unwrap();
        assert_eq!(next_delivery(&mut bob).await.body, b"still here");
    }
    // Garbage before authentication.
    let mut ws = RelayClient::connect_raw(&relay.url).await.unwrap();
    ws.send(Message::Binary(b"nonsense".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(expect_error_then_close(&mut ws).await, ErrorCode::Malformed);
    let metrics = http_get(&relay.addr, "/metrics");
    assert!(
        metrics.contains("sotto_relay_rejections_total{reason=\"too_large\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"malformed\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_trip_and_the_connection_survives() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &["--conn-rate", "5", "--identity-rate", "1000"]);
    let mut alice = connect(&relay.url, 1).await;
    drain(&mut alice).await;
    for i in 0..40 {
        alice.send_frame(&ClientFrame::Ping(i)).await.unwrap();
    }
    let mut limited = 0;
    let mut pongs = 0;
    while limited + pongs < 40 {
        match tokio::time::timeout(T, alice.recv_frame())
            .await
            .unwrap()
            .unwrap()
        {
            RelayFrame::Error(ErrorIn {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            RelayFrame::Pong(_) => pongs += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 20, "only {limited} rate limited");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    alice.send_frame(&ClientFrame::Ping(99)).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, alice.recv_frame())
            .await
            .unwrap()
            .unwrap(),
        RelayFrame::Pong(99)
    );

    // Per identity: two connections of one identity share the send budget.
    drop(relay);
    let (_d2, db2) = tmpdb();
    let relay = RelayProc::start(&db2, &["--identity-rate", "5"]);
    connect(&relay.url, 2).await.close().await;
    let mut alice = connect(&relay.url, 1).await;
    drain(&mut alice).await;
    let mut rejected = 0;
    for i in 0..30 {
        match alice.send(kp(2).public(), mid(i), vec![0; 10]).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => rejected += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(rejected >= 15, "only {rejected} sends rate limited");
    assert!(http_get(&relay.addr, "/metrics").contains("reason=\"rate_limited\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bundle_fetches_never_share_a_one_time_prekey() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    let mut bob = connect(&relay.url, 2).await;
    drain(&mut bob).await;
    let n = 60u32;
    let counts = bob
        .upload_prekeys(UploadPrekeysOut {
            signed_prekey: Some(record(1, 64)),
            last_resort_kem: Some(record(2, 1200)),
            one_time_x25519: (100..100 + n).map(|i| record(i, 32)).collect(),
            one_time_kem: (0..30).map(|i| record(500 + i, 1200)).collect(),
        })
        .await
        .unwrap();
    assert_eq!(counts, PrekeyCounts { x25519: n, kem: 30 });
    let counts = bob
        .upload_prekeys(UploadPrekeysOut {
            one_time_kem: (30..n).map(|i| record(500 + i, 1200)).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(counts, PrekeyCounts { x25519: n, kem: n });

    let mut tasks = Vec::new();
    for seed in 20..30u8 {
        let url = relay.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url, seed).await;
            let mut got = Vec::new();
            for _ in 0..8 {
                got.push(c.fetch_bundle(kp(2).public()).await.unwrap());
            }
            got
        }));
    }
    let mut x_ids = Vec::new();
    let mut kem_ids = Vec::new();
    let mut last_resort = 0;
    for t in tasks {
        for b in t.await.unwrap() {
            if let Some(otp) = b.one_time_x25519 {
                x_ids.push(otp.id);
            }
            if b.kem_is_last_resort {
                assert_eq!(b.kem.id, 2);
                last_resort += 1;
            } else {
                kem_ids.push(b.kem.id);
            }
        }
    }
    let total = x_ids.len();
    x_ids.sort();
    x_ids.dedup();
    assert_eq!(
        (x_ids.len(), total),
        (n as usize, n as usize),
        "every one-time prekey handed out exactly once"
    );
    let total = kem_ids.len();
    kem_ids.sort();
    kem_ids.dedup();
    assert_eq!((kem_ids.len(), total), (n as usize, n as usize));
    assert_eq!(last_resort, 80 - n as usize);
    // Bob was told his prekeys ran low.
    let mut low = false;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(500), bob.recv_frame()).await {
            Ok(Ok(RelayFrame::PrekeysLow(_))) => {
                low = true;
                break;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(low, "no PrekeysLow notice");
    // An identity without a bundle.
    let mut alice = connect(&relay.url, 1).await;
    let err = alice.fetch_bundle(kp(44).public()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoBundle));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_and_quota_are_enforced() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(
        &db,
        &[
            "--ttl",
            "1s",
            "--expiry-interval",
            "500ms",
            "--mailbox-messages",
            "3",
        ],
    );
    connect(&relay.url, 2).await.close().await;
    let mut alice = connect(&relay.url, 1).await;
    for i in 0..3 {
        alice
            .send(kp(2).public(), mid(i), vec![1; 10])
            .await
            .unwrap();
    }
    let err = alice
        .send(kp(2).public(), mid(3), vec![1; 10])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::QuotaFull));
    assert!(
        matches!(err, ClientError::Rejected(ErrorIn { context: ErrorContext::Message(m), .. }) if m == mid(3))
    );
    let err = alice
        .send(kp(99).public(), mid(4), vec![1; 10])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRecipient));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut bob = connect(&relay.url, 2).await;
    assert!(
        drain(&mut bob).await.is_empty(),
        "expired messages are not delivered"
    );
    // Expiry freed the quota.
    alice
        .send(kp(2).public(), mid(5), vec![1; 10])
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut bob).await.message_id, mid(5));
    assert!(http_get(&relay.addr, "/metrics").contains("sotto_relay_messages_expired_total 3"));

    // Byte quota.
    drop(relay);
    let (_d2, db2) = tmpdb();
    let relay = RelayProc::start(&db2, &["--mailbox-bytes", "1000"]);
    connect(&relay.url, 2).await.close().await;
    let mut alice = connect(&relay.url, 1).await;
    alice
        .send(kp(2).public(), mid(1), vec![1; 600])
        .await
        .unwrap();
    let err = alice
        .send(kp(2).public(), mid(2), vec![1; 600])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::QuotaFull));
    // Acknowledging frees the quota.
    let mut bob = connect(&relay.url, 2).await;
    let got = drain(&mut bob).await;
    bob.ack(vec![got[0].delivery_id]).await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if alice
            .send(kp(2).public(), mid(3), vec![1; 600])
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "quota not freed by ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_only_needs_a_fresh_invite() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &["--invite-only"]);
    let err = RelayClient::connect(&relay.url, &kp(1), None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InviteRequired));
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["relay", "invite", "--store"])
        .arg(format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .as_bytes()
        .to_vec();
    let err = RelayClient::connect(&relay.url, &kp(1), Some(b"sotto-invite-wrong".to_vec()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InviteRequired));
    RelayClient::connect(&relay.url, &kp(1), Some(token.clone()))
        .await
        .unwrap()
        .close()
        .await;
    // Registered now: no invite needed any more; the token is used up for anyone else.
    RelayClient::connect(&relay.url, &kp(1), None)
        .await
        .unwrap()
        .close()
        .await;
    let err = RelayClient::connect(&relay.url, &kp(2), Some(token))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InviteRequired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_and_unauthenticated_connection_limit() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(
        &db,
        &["--handshake-timeout", "1s", "--max-unauth-per-ip", "2"],
    );
    let mut a = RelayClient::connect_raw(&relay.url).await.unwrap();
    let mut b = RelayClient::connect_raw(&relay.url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = RelayClient::connect_raw(&relay.url).await.unwrap();
    assert_eq!(
        expect_error_then_close(&mut c).await,
        ErrorCode::TooManyConnections
    );
    assert_eq!(expect_error_then_close(&mut a).await, ErrorCode::Timeout);
    assert_eq!(expect_error_then_close(&mut b).await, ErrorCode::Timeout);
    // Slots are free again.
    connect(&relay.url, 1).await;
    // A slowloris that never finishes its HTTP request is cut off too.
    let mut s = std::net::TcpStream::connect(&relay.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let _ = s.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_supersedes_the_first() {
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &[]);
    let mut first = connect(&relay.url, 2).await;
    drain(&mut first).await;
    let mut second = connect(&relay.url, 2).await;
    drain(&mut second).await;
    let err = tokio::time::timeout(T, first.next_delivery())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Superseded));
    let mut alice = connect(&relay.url, 1).await;
    alice
        .send(kp(2).public(), mid(1), b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut second).await.message_id, mid(1));
}

/// One sender's pipelined request in [`per_sender_order_holds_for_any_interleaving_of_send_and_send_multi`].
#[derive(Clone, Debug)]
enum OrderOp {
    /// `Send` to recipient `i`.
    Send(usize),
    /// `SendMulti` to these recipients.
    Multi(Vec<usize>),
}

const ORDER_SENDERS: usize = 3;
const ORDER_RECIPIENTS: usize = 3;

/// Runs one case: every sender writes all its frames without waiting, then every recipient
/// checks that it got each sender's messages complete and in the order that sender sent them.
async fn order_case(
    url: &str,
    case: u32,
    ops: Vec<Vec<OrderOp>>,
    live: bool,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert_eq;
    let id = |i: usize| kp_n(case * 16 + i as u32);
    let recipient = |r: usize| id(ORDER_SENDERS + r);
    let mut recipients = Vec::new();
    for r in 0..ORDER_RECIPIENTS {
        let mut c = connect_as(url, &recipient(r)).await;
        drain(&mut c).await;
        if live {
            recipients.push(Some(c));
        } else {
            c.close().await;
            recipients.push(None);
        }
    }
    let mut senders = Vec::new();
    for (s, ops) in ops.iter().enumerate() {
        let mut c = connect_as(url, &id(s)).await;
        drain(&mut c).await;
        let frames: Vec<ClientFrame> = ops
            .iter()
            .enumerate()
            .map(|(n, op)| {
                let message_id = mid((s * 1000 + n) as u32);
                let body = vec![s as u8; 16];
                match op {
                    OrderOp::Send(r) => ClientFrame::Send(SendOut {
                        recipient: recipient(*r).public(),
                        message_id,
                        body,
                    }),
                    OrderOp::Multi(rs) => ClientFrame::SendMulti(SendMultiOut {
                        recipients: rs.iter().map(|r| recipient(*r).public()).collect(),
                        message_id,
                        body,
                    }),
                }
            })
            .collect();
        senders.push(tokio::spawn(async move {
            let mut ws = c.into_socket();
            for f in &frames {
                ws.send(Message::Binary(f.encode().into())).await.unwrap();
            }
            let mut accepted = 0;
            while accepted < frames.len() {
                let Some(Ok(Message::Binary(b))) =
                    tokio::time::timeout(T, ws.next()).await.unwrap()
                else {
                    panic!("sender connection closed")
                };
                match RelayFrame::decode(&b).unwrap() {
                    RelayFrame::Accepted(_) => accepted += 1,
                    RelayFrame::Error(e) => panic!("send rejected: {e:?}"),
                    _ => {}
                }
            }
        }));
    }
    for t in senders {
        t.await.unwrap();
    }
    for (r, conn) in recipients.into_iter().enumerate() {
        let expected: Vec<Vec<MessageId>> = ops
            .iter()
            .enumerate()
            .map(|(s, ops)| {
                ops.iter()
                    .enumerate()
                    .filter(|(_, op)| match op {
                        OrderOp::Send(to) => *to == r,
                        OrderOp::Multi(to) => to.contains(&r),
                    })
                    .map(|(n, _)| mid((s * 1000 + n) as u32))
                    .collect()
            })
            .collect();
        let total: usize = expected.iter().map(Vec::len).sum();
        let got = match conn {
            Some(mut c) => {
                let mut got = Vec::new();
                while got.len() < total {
                    got.push(next_delivery(&mut c).await);
                }
                got
            }
            None => drain(&mut connect_as(url, &recipient(r)).await).await,
        };
        for (s, want) in expected.iter().enumerate() {
            let from_s: Vec<MessageId> = got
                .iter()
                .filter(|d| d.sender == id(s).public())
                .map(|d| d.message_id)
                .collect();
            prop_assert_eq!(&from_s, want, "recipient {} from sender {}", r, s);
        }
    }
    Ok(())
}

#[test]
fn per_sender_order_holds_for_any_interleaving_of_send_and_send_multi() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &["--sync", "normal"]);
    let op = prop_oneof![
        (0..ORDER_RECIPIENTS).prop_map(OrderOp::Send),
        proptest::sample::subsequence(
            (0..ORDER_RECIPIENTS).collect::<Vec<_>>(),
            1..=ORDER_RECIPIENTS
        )
        .prop_map(OrderOp::Multi),
    ];
    let strategy = (
        proptest::collection::vec(proptest::collection::vec(op, 1..12), ORDER_SENDERS),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |(ops, live)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(order_case(&relay.url, n, ops, live))
        })
        .unwrap();
}
