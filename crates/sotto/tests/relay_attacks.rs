//! Attacks by registered identities on the relay's availability, each run against the real
//! `sotto relay` binary over loopback sockets, bounded in count and time (issue 12). Each test
//! asserts the limit that defeats the attack; the figures under load are benchmarks
//! (docs/BENCHMARKS.md), not these tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers"
)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_transport::{ClientSocket, RelayClient, socket_config};
use sotto_wire::*;
use support::*;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// Authenticates as `keypair` on a socket with a tiny receive buffer, so that a client that stops
/// reading stalls the relay's writes after a few frames instead of after megabytes.
async fn small_window_client(url: &str, keypair: &IdentityKeyPair) -> RelayClient {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(tcp),
        Some(socket_config()),
    )
    .await
    .unwrap();
    tokio::time::timeout(T, RelayClient::authenticate(ws, keypair, None))
        .await
        .unwrap()
        .unwrap()
}

/// Sends `count` `SendMulti` frames of `len` bytes to `recipients`, keeping up to `in_flight`
/// unanswered; returns when every one was accepted.
async fn fan_out(
    ws: &mut ClientSocket,
    recipients: &[IdentityKey],
    count: u32,
    len: usize,
    in_flight: u32,
) {
    let (mut sent, mut accepted) = (0u32, 0u32);
    while accepted < count {
        while sent < count && sent - accepted < in_flight {
            let f = ClientFrame::SendMulti(SendMultiOut {
                recipients: recipients.to_vec(),
                message_id: mid(sent),
                body: vec![(sent % 251) as u8; len],
            });
            ws.send(Message::Binary(f.encode().into())).await.unwrap();
            sent += 1;
        }
        let Some(Ok(Message::Binary(b))) = tokio::time::timeout(T, ws.next()).await.unwrap() else {
            panic!("sender connection closed")
        };
        match RelayFrame::decode(&b).unwrap() {
            RelayFrame::Accepted(_) => accepted += 1,
            RelayFrame::Error(e) => panic!("fan-out rejected: {e:?}"),
            _ => {}
        }
    }
}

/// Sends one message on a raw socket and waits for its `Accepted`.
async fn send_raw(ws: &mut ClientSocket, to: IdentityKey, id: MessageId, body: &[u8]) {
    let f = ClientFrame::Send(SendOut {
        recipient: to,
        message_id: id,
        body: body.to_vec(),
    });
    ws.send(Message::Binary(f.encode().into())).await.unwrap();
    loop {
        let Some(Ok(Message::Binary(b))) = tokio::time::timeout(T, ws.next()).await.unwrap() else {
            panic!("connection closed")
        };
        match RelayFrame::decode(&b).unwrap() {
            RelayFrame::Accepted(a) if a == id => return,
            RelayFrame::Error(e) => panic!("send rejected: {e:?}"),
            _ => {}
        }
    }
}

/// Samples the relay's RSS every 20 ms until `stop`; returns the peak.
fn rss_sampler(
    pid: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_of(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    (stop, handle)
}

/// Item 1: recipients that authenticate, drain and then stop reading while a sender fans out
/// 96 KiB bodies to them. The relay's memory stays bounded (bodies shared, queues bounded in
/// bytes, a relay-wide delivery budget), the stalled connections are closed within the write
/// deadline, and a stalled connection is superseded at once (the writer's stall does not hide
/// the kick), while the sender and a live recipient are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_recipients_pin_no_memory_and_are_closed_at_the_write_deadline() {
    const STALLED: u32 = 16;
    const MESSAGES: u32 = 120;
    let write_timeout = Duration::from_secs(2);
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &["--sync", "normal", "--write-timeout", "2s"]);
    let stalled_ids: Vec<IdentityKeyPair> = (0..STALLED).map(|i| kp_n(100 + i)).collect();
    let mut stalled = Vec::new();
    for id in &stalled_ids {
        let mut c = small_window_client(&relay.url, id).await;
        drain(&mut c).await;
        stalled.push(c); // never read again
    }
    let mut live = connect(&relay.url, 2).await;
    drain(&mut live).await;
    let mut recipients: Vec<IdentityKey> = stalled_ids.iter().map(|k| k.public()).collect();
    recipients.push(kp(2).public());
    let mut sender = connect(&relay.url, 1).await;
    drain(&mut sender).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = relay.rss();
    let (stop, sampler) = rss_sampler(relay.child.id());
    let started = Instant::now();
    // The live recipient keeps reading (and acknowledging) throughout.
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < MESSAGES {
            let d = next_delivery(&mut live).await;
            live.ack(vec![d.delivery_id]).await.unwrap();
            n += 1;
        }
        live
    });
    let mut sender = sender.into_socket();
    fan_out(&mut sender, &recipients, MESSAGES, MAX_BODY_LEN, 4).await;
    let mut live = reader.await.unwrap();
    let sent_at = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    say(&format!(
        "stalled: {STALLED} x {MESSAGES} x 96 KiB fanned out in {:.1?}; relay RSS {} -> peak {} MiB",
        sent_at - started,
        baseline / MIB,
        peak / MIB
    ));
    assert!(
        peak.saturating_sub(baseline) <= 64 * MIB,
        "relay RSS grew by {} MiB with {STALLED} stalled recipients",
        peak.saturating_sub(baseline) / MIB
    );

    // A stalled identity connects again: its old connection is superseded at once, and the new
    // one receives the whole backlog (acknowledging as it goes).
    let victim = stalled.pop().unwrap();
    let mut again = connect_as(&relay.url, &stalled_ids[STALLED as usize - 1]).await;
    let kicked = Instant::now();
    let mut old = victim.into_socket();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = old.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the superseded stalled connection stayed open"
    );
    say(&format!(
        "superseded stalled connection closed after {:.1?}",
        kicked.elapsed()
    ));
    let backlog = drain_acking(&mut again).await;
    assert_eq!(backlog.len(), MESSAGES as usize, "backlog after the stall");

    // Every other stalled connection is closed by the write deadline.
    let deadline = sent_at + write_timeout + Duration::from_secs(4);
    loop {
        let open = relay.metric("sotto_relay_connections_authenticated");
        if open <= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still open {:.1?} after the fan-out (write deadline {write_timeout:?})",
            sent_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(relay.metric("sotto_relay_write_timeouts_total") >= f64::from(STALLED - 1));
    // The relay still serves the live pair.
    send_raw(&mut sender, kp(2).public(), mid(9999), b"still here").await;
    assert_eq!(next_delivery(&mut live).await.message_id, mid(9999));
    drop(stalled);
}

/// Fans out `count` 96 KiB messages to the stalled identity `victim` from a fresh sender, then
/// closes the sender: afterwards the stalled connection is the only authenticated one.
async fn stall(relay: &RelayProc, victim: &IdentityKeyPair, count: u32) -> RelayClient {
    let mut stalled = small_window_client(&relay.url, victim).await;
    drain(&mut stalled).await;
    let mut sender = connect(&relay.url, 1).await;
    drain(&mut sender).await;
    let mut ws = sender.into_socket();
    fan_out(&mut ws, &[victim.public()], count, MAX_BODY_LEN, 4).await;
    drop(ws);
    wait_for_metric(relay, "sotto_relay_connections_authenticated", 1.0, T).await;
    stalled
}

/// Polls `series` until it equals `want`; panics after `within`.
async fn wait_for_metric(relay: &RelayProc, series: &str, want: f64, within: Duration) {
    let started = Instant::now();
    loop {
        let v = relay.metric(series);
        if v == want {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{series} is {v}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 1: a connection whose writer is stalled (its peer stopped reading) still sees its idle
/// timeout, a newer connection of its identity, and the relay's shutdown. (Before, the
/// connection's loop was stuck in the write and saw none of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_still_times_out_is_superseded_and_shut_down() {
    // Idle timeout: the stalled peer sends nothing; the write deadline is far away.
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(
        &db,
        &[
            "--sync",
            "normal",
            "--write-timeout",
            "60s",
            "--idle-timeout",
            "3s",
        ],
    );
    let _stalled = stall(&relay, &kp(10), 60).await;
    wait_for_metric(
        &relay,
        "sotto_relay_connections_authenticated",
        0.0,
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(
        relay.metric("sotto_relay_rejections_total{reason=\"timeout\"}"),
        1.0
    );

    // Superseded: the same identity connects again; the stalled connection goes at once.
    let (_d, db) = tmpdb();
    let relay = RelayProc::start(&db, &["--sync", "normal", "--write-timeout", "60s"]);
    let _stalled = stall(&relay, &kp(10), 60).await;
    let mut again = connect(&relay.url, 10).await;
    wait_for_metric(
        &relay,
        "sotto_relay_connections_authenticated",
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(drain_acking(&mut again).await.len(), 60);

    // Shut down: SIGTERM ends the relay promptly, stalled connection or not.
    let (_d, db) = tmpdb();
    let mut relay = RelayProc::start(&db, &["--sync", "normal", "--write-timeout", "60s"]);
    let _stalled = stall(&relay, &kp(10), 60).await;
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status()
        .unwrap();
    let status = relay.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:.1?} with a stalled connection",
        started.elapsed()
    );
}
