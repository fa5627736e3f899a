//! What the relay integration tests share: the real `sotto relay` as a child process, identities,
//! and a few protocol helpers over `sotto_transport::RelayClient`.
//!
//! Each test binary uses part of it (`mod support;`), hence the `dead_code` allowance.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers, each binary uses a part"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use sotto_protocol::IdentityKeyPair;
use sotto_transport::{ClientSocket, RelayClient};
use sotto_wire::{DeliverIn, ErrorCode, MessageId, RelayFrame};
use tokio_tungstenite::tungstenite::Message;

/// How long any single wait in these tests may take.
pub const T: Duration = Duration::from_secs(20);

/// Prints past the harness's capture, so it shows in `cargo test` output.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A `sotto relay` child process, killed when dropped.
pub struct RelayProc {
    pub child: Child,
    /// `ws://127.0.0.1:PORT/`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl RelayProc {
    /// Starts `sotto relay` on an SQLite store at `db` with `extra` flags.
    pub fn start(db: &Path, extra: &[&str]) -> Self {
        Self::start_store(&format!("sqlite:{}", db.display()), extra)
    }

    /// Starts `sotto relay --store STORE` with `extra` flags, on a free loopback port.
    pub fn start_store(store: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["relay", "--listen", "127.0.0.1:0", "--store", store])
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
        assert!(
            url.starts_with("ws://127.0.0.1:"),
            "unexpected banner {line:?}"
        );
        let addr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        Self { child, url, addr }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The relay's resident set size in bytes (Linux `/proc`).
    pub fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// `GET path` over HTTP/1.1; the whole response.
    pub fn http_get(&self, path: &str) -> String {
        http_get(&self.addr, path)
    }

    /// The value of one un-labelled metric (or one exact `name{labels}` series), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.http_get("/metrics"), series)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident set size in bytes (Linux `/proc`), 0 once it is gone.
pub fn rss_of(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kb * 1024
}

/// The value of `series` in a Prometheus text exposition, 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// `GET path` over HTTP/1.1 to `addr`; the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A temporary directory and a store path inside it.
pub fn tmpdb() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    (dir, db)
}

/// The identity with seed `[seed; 32]`.
pub fn kp(seed: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[seed; 32])
}

/// An identity from a wider seed space (for tests that need many distinct identities).
pub fn kp_n(n: u32) -> IdentityKeyPair {
    let mut seed = [0xa5u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    IdentityKeyPair::from_seed(&seed)
}

/// Message id `n` (big-endian in the first four bytes).
pub fn mid(n: u32) -> MessageId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

/// Connects and authenticates as `keypair`.
pub async fn connect_as(url: &str, keypair: &IdentityKeyPair) -> RelayClient {
    tokio::time::timeout(T, RelayClient::connect(url, keypair, None))
        .await
        .unwrap()
        .unwrap()
}

/// Connects and authenticates as `kp(seed)`.
pub async fn connect(url: &str, seed: u8) -> RelayClient {
    connect_as(url, &kp(seed)).await
}

/// Reads frames until `Drained`, returning the deliveries before it.
pub async fn drain(c: &mut RelayClient) -> Vec<DeliverIn> {
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

/// Reads frames until `Drained`, acknowledging each delivery (as a client must for a backlog
/// larger than the relay's window of unacknowledged deliveries), returning them.
pub async fn drain_acking(c: &mut RelayClient) -> Vec<DeliverIn> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(T, c.recv_frame())
            .await
            .unwrap()
            .unwrap()
        {
            RelayFrame::Drained => return out,
            RelayFrame::Deliver(d) => {
                c.ack(vec![d.delivery_id]).await.unwrap();
                out.push(d);
            }
            _ => {}
        }
    }
}

/// The next delivery (notices skipped).
pub async fn next_delivery(c: &mut RelayClient) -> DeliverIn {
    tokio::time::timeout(T, c.next_delivery())
        .await
        .unwrap()
        .unwrap()
}

/// Reads raw frames until an error frame arrives, then expects the connection to close.
pub async fn expect_error_then_close(ws: &mut ClientSocket) -> ErrorCode {
    let mut code = None;
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                if let Ok(RelayFrame::Error(e)) = RelayFrame::decode(&b) {
                    code.get_or_insert(e.code);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    code.expect("an error frame before the close")
}
