//! Group chat measurements on loopback (ignored: run explicitly, once, on an idle machine):
//!
//! ```text
//! SOTTO_GROUP_BENCH_SIZES=10,50,100 cargo test -p sotto --test group_bench -- --ignored --nocapture
//! ```
//!
//! For each group size: a real `sotto relay` process (SQLite, default `--sync full`), N in-process
//! `sotto_client::Client`s with their own profiles (cheap test Argon2 parameters), the owner adds
//! everyone, every member sends once (so all pairwise sessions and sender keys exist). Then:
//! - one send: relay-accepted mailbox entries and relay frames/bytes (from `/metrics`) until every
//!   member has received it;
//! - one removal: the same counts, and the wall time from the owner's `group_remove` until every
//!   remaining member holds every remaining member's new sender key (all members online, each on
//!   its own thread with its own runtime, as on separate devices).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sotto_client::{Client, Event, KdfParams};

struct RelayProc {
    child: Child,
    url: String,
    addr: String,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(db: &std::path::Path) -> RelayProc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["relay", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("sqlite:{}", db.display()))
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
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    RelayProc { child, url, addr }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    accepted: f64,
    frames_in: f64,
    frames_out: f64,
    bytes_in: f64,
    bytes_out: f64,
}

fn metrics(addr: &str) -> Counters {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let get = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Counters {
        accepted: get("sotto_relay_messages_accepted_total"),
        frames_in: get("sotto_relay_frames_total{direction=\"in\"}"),
        frames_out: get("sotto_relay_frames_total{direction=\"out\"}"),
        bytes_in: get("sotto_relay_frame_bytes_total{direction=\"in\"}"),
        bytes_out: get("sotto_relay_frame_bytes_total{direction=\"out\"}"),
    }
}

fn delta(a: Counters, b: Counters) -> String {
    format!(
        "mailbox entries {:.0}, frames in {:.0} / out {:.0}, bytes in {:.0} / out {:.0}",
        b.accepted - a.accepted,
        b.frames_in - a.frames_in,
        b.frames_out - a.frames_out,
        b.bytes_in - a.bytes_in,
        b.bytes_out - a.bytes_out
    )
}

/// Fresh connections for everyone, sync (send outbox, receive until drained, send again),
/// repeated until a round in which the relay accepted nothing and nothing happened.
async fn settle(clients: &mut [Client], addr: &str) {
    for _ in 0..30 {
        let before = metrics(addr).accepted;
        // One client after another: this process has one thread for all of them, and a relay
        // closes connections that do not authenticate within 10 s.
        let mut results = Vec::new();
        for c in clients.iter_mut() {
            c.disconnect().await;
            let ev = c.sync().await.unwrap();
            results.push(
                ev.iter()
                    .any(|e| !matches!(e, Event::Connected | Event::Synced))
                    || c.outbox_len().unwrap() > 0,
            );
            c.disconnect().await;
        }
        if !results.into_iter().any(|b| b) && metrics(addr).accepted == before {
            return;
        }
    }
    panic!("did not settle");
}

fn all_keys(c: &Client) -> bool {
    c.group("g").unwrap().members.iter().all(|m| m.has_key)
}

async fn measure(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start_relay(&tmp.path().join("relay.db"));
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let mut c = Client::init(
            &tmp.path().join(format!("c{i}")),
            b"pw",
            KdfParams::INSECURE_TEST,
        )
        .unwrap();
        c.register(&relay.url).await.unwrap();
        c.disconnect().await;
        clients.push(c);
    }
    let invites: Vec<String> = clients.iter().map(|c| c.invite().unwrap()).collect();
    // Every member compared safety numbers with the owner: its invite is accepted at once.
    for c in clients.iter_mut().skip(1) {
        c.add_contact("owner", &invites[0]).unwrap();
        c.verify("owner", None).unwrap();
    }
    {
        let owner = &mut clients[0];
        owner.group_create("g").unwrap();
        for (i, inv) in invites.iter().enumerate().skip(1) {
            owner.add_contact(&format!("m{i}"), inv).unwrap();
            owner.group_add("g", &format!("m{i}")).unwrap();
        }
    }
    settle(&mut clients, &relay.addr).await;
    for c in clients.iter_mut() {
        c.group_compose("g", "warm-up").unwrap();
    }
    settle(&mut clients, &relay.addr).await;
    assert!(clients.iter().all(all_keys), "everyone holds every key");
    println!(
        "n={n}: setup (register, add all, everyone sends once) {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One send.
    let before = metrics(&relay.addr);
    clients[0]
        .group_compose("g", "one message to everyone")
        .unwrap();
    settle(&mut clients, &relay.addr).await;
    let after = metrics(&relay.addr);
    println!("n={n}: one send: {}", delta(before, after));

    // One removal: every member on its own thread with its own runtime, as on separate
    // devices (each client's SQLite commits block only its own thread), all online.
    for c in clients.iter_mut() {
        c.disconnect().await;
    }
    let before = metrics(&relay.addr);
    let removed = format!("m{}", n - 1);
    let gone = clients.pop().unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients.len()));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            let removed = removed.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let rotated_at = rt.block_on(async {
                    c.connect().await.unwrap();
                    // Read the backlog marker so that every connection is idle before the removal.
                    c.sync().await.unwrap();
                    barrier.wait();
                    let t0 = Instant::now();
                    if i == 0 {
                        c.group_remove("g", &removed).unwrap();
                        c.flush().await.unwrap();
                    }
                    // Until this member holds every key of the new epoch and has sent its own.
                    let mut rotated_at = None;
                    while t0.elapsed() < Duration::from_secs(300) {
                        if rotated_at.is_none()
                            && c.group("g").unwrap().epoch == n as u64
                            && all_keys(&c)
                        {
                            rotated_at = Some(t0.elapsed());
                        }
                        if rotated_at.is_some() && c.outbox_len().unwrap() == 0 {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_secs(2), c.next_events()).await {
                            Ok(r) => {
                                r.unwrap();
                            }
                            Err(_) => {
                                c.flush().await.unwrap();
                            }
                        }
                    }
                    c.disconnect().await;
                    rotated_at
                });
                (c, rotated_at)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    let mut times = Vec::new();
    for h in handles {
        let (c, t) = h.join().unwrap();
        clients.push(c);
        times.push(t);
    }
    clients.push(gone);
    let missing = times.iter().filter(|t| t.is_none()).count();
    if missing > 0 {
        println!("n={n}: {missing} member(s) had not rotated after 300 s");
    }
    let times: Vec<Duration> = times.into_iter().flatten().collect();
    let all_rotated = times.iter().max().copied().unwrap_or_default();
    let gone = &mut clients[n - 1];
    let _ = gone.sync().await;
    settle(&mut clients, &relay.addr).await;
    let after = metrics(&relay.addr);
    println!(
        "n={n}: one removal: every remaining member rotated after {:.2} s (median member {:.2} s); {}",
        all_rotated.as_secs_f64(),
        {
            let mut t: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        },
        delta(before, after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement harness: run explicitly, see the module docs"]
async fn group_send_and_removal_costs() {
    let sizes = std::env::var("SOTTO_GROUP_BENCH_SIZES").unwrap_or_else(|_| "10".into());
    for n in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
        measure(n).await;
    }
}
