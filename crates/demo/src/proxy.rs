//! The attacker in the path: a TCP proxy that speaks just enough WebSocket to see every sotto
//! frame between a client and the relay, and can record, drop, delay, replay, modify and inject
//! them, or answer as a malicious relay would (for example with a substituted prekey bundle).
//!
//! ```text
//!   client ──TCP leg 1──▶ Proxy (policy, log, capture) ──TCP leg 2──▶ relay
//! ```
//! Every byte of both legs goes into a [`Capture`]. A scenario installs a policy, a closure that
//! sees each decoded frame and returns a [`Verdict`]; with no policy every frame is forwarded
//! byte for byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sotto_protocol::IdentityKey;
use sotto_wire::{ClientFrame, RelayFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::pcap::{Capture, Flow};
use crate::ws;

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From a client towards the relay.
    ToRelay,
    /// From the relay towards a client.
    ToClient,
}

/// One frame the policy is asked about.
#[derive(Debug)]
pub struct Intercept<'a> {
    /// The proxy's connection number.
    pub conn: u64,
    /// The identity that authenticated on this connection (once it has).
    pub who: Option<IdentityKey>,
    /// The direction.
    pub dir: Dir,
    /// The sotto frame (WebSocket payload, unmasked).
    pub payload: &'a [u8],
}

impl Intercept<'_> {
    /// The frame decoded as a client frame (for [`Dir::ToRelay`]).
    pub fn client_frame(&self) -> Option<ClientFrame> {
        (self.dir == Dir::ToRelay)
            .then(|| ClientFrame::decode(self.payload).ok())
            .flatten()
    }

    /// The frame decoded as a relay frame (for [`Dir::ToClient`]).
    pub fn relay_frame(&self) -> Option<RelayFrame> {
        (self.dir == Dir::ToClient)
            .then(|| RelayFrame::decode(self.payload).ok())
            .flatten()
    }
}

/// What the proxy does with a frame.
#[derive(Debug)]
pub enum Verdict {
    /// Pass it on unchanged (the exact original bytes).
    Forward,
    /// Swallow it; the note says why (shown in the log and the report).
    Drop(String),
    /// Pass it on unchanged after a while; later frames in the same direction wait behind it.
    Delay(Duration, String),
    /// Send these frames instead (none, one modified frame, or the original plus replays).
    Replace(Vec<Vec<u8>>, String),
}

/// A policy: decides the fate of every frame.
pub type Policy = Box<dyn FnMut(&Intercept<'_>) -> Verdict + Send>;

/// What the proxy saw and did with one frame.
#[derive(Clone, Debug)]
pub struct FrameLog {
    /// Milliseconds since the proxy started.
    pub t_ms: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Connection number.
    pub conn: u64,
    /// The identity authenticated on the connection, if known.
    pub who: Option<IdentityKey>,
    /// Direction.
    pub dir: Dir,
    /// Frame type (`Send`, `Deliver`, `Bundle`, ...).
    pub kind: &'static str,
    /// Length of the sotto frame in bytes.
    pub len: usize,
    /// For `Send`: the recipient; for `Deliver`: the sender.
    pub peer: Option<IdentityKey>,
    /// For `Send`, `SendMulti` and `Deliver`: the message id.
    pub message_id: Option<[u8; 16]>,
    /// For `Send`, `SendMulti` and `Deliver`: the ciphertext body.
    pub body: Option<Vec<u8>>,
    /// For `SendMulti`: the recipients the relay is asked to store the message for.
    pub recipients: Vec<IdentityKey>,
    /// The whole sotto frame (WebSocket payload, unmasked).
    pub payload: Vec<u8>,
    /// `forwarded`, or the policy's note (`dropped: ...`, `modified: ...`, `injected: ...`).
    pub action: String,
}

/// The [`FrameLog::kind`] of an entry that is an event of the scene, not a frame.
pub const EVENT: &str = "event";

impl FrameLog {
    /// Whether the attacker did something to this frame other than forwarding it.
    pub fn tampered(&self) -> bool {
        self.action != "forwarded" && !self.is_event()
    }

    /// Whether this entry is an event of the scene (a cut connection, a killed relay, a stolen
    /// profile; the text is in [`FrameLog::action`]) rather than a frame.
    pub fn is_event(&self) -> bool {
        self.kind == EVENT
    }
}

/// Names of client frame types.
fn client_kind(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Authenticate(_) => "Authenticate",
        ClientFrame::UploadPrekeys(_) => "UploadPrekeys",
        ClientFrame::FetchBundle(_) => "FetchBundle",
        ClientFrame::Send(_) => "Send",
        ClientFrame::Ack(_) => "Ack",
        ClientFrame::Ping(_) => "Ping",
        ClientFrame::SendMulti(_) => "SendMulti",
        _ => "ClientFrame",
    }
}

/// Names of relay frame types.
fn relay_kind(f: &RelayFrame) -> &'static str {
    match f {
        RelayFrame::Challenge(_) => "Challenge",
        RelayFrame::AuthOk(_) => "AuthOk",
        RelayFrame::Accepted(_) => "Accepted",
        RelayFrame::Deliver(_) => "Deliver",
        RelayFrame::Bundle(_) => "Bundle",
        RelayFrame::PrekeysLow(_) => "PrekeysLow",
        RelayFrame::PrekeysStored(_) => "PrekeysStored",
        RelayFrame::Error(_) => "Error",
        RelayFrame::Pong(_) => "Pong",
        RelayFrame::Drained => "Drained",
        _ => "RelayFrame",
    }
}

enum Out {
    Bytes(Vec<u8>),
    Close,
}

struct Conn {
    who: Option<IdentityKey>,
    to_client: mpsc::UnboundedSender<Out>,
    to_relay: mpsc::UnboundedSender<Out>,
    tasks: Vec<AbortHandle>,
    legs: [Arc<Flow>; 2],
    open: bool,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    capture: Mutex<Capture>,
    policy: Mutex<Option<Policy>>,
    log: Mutex<Vec<FrameLog>>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: AtomicU64,
    start: Instant,
    listen: SocketAddr,
}

/// The attacker proxy. Dropping it stops accepting; open connections are aborted.
pub struct Proxy {
    shared: Arc<Shared>,
    accept: AbortHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut conns) = self.shared.conns.lock() {
            for (_, c) in conns.drain() {
                for t in c.tasks {
                    t.abort();
                }
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            capture: Mutex::new(Capture::new()),
            policy: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            start: Instant::now(),
            listen,
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { handle(s, tcp, peer).await });
            }
        })
        .abort_handle();
        Ok(Self { shared, accept })
    }

    /// The URL clients use to reach the relay through the attacker.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.shared.listen)
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Points new connections at another relay address (after a relay restart).
    pub fn set_upstream(&self, addr: SocketAddr) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            *u = addr;
        }
    }

    /// Installs a policy (replacing any previous one).
    pub fn set_policy(&self, policy: Policy) {
        if let Ok(mut p) = self.shared.policy.lock() {
            *p = Some(policy);
        }
    }

    /// Removes the policy: every frame is forwarded.
    pub fn clear_policy(&self) {
        if let Ok(mut p) = self.shared.policy.lock() {
            *p = None;
        }
    }

    /// The capture so far (shared: later traffic keeps being added).
    pub fn capture(&self) -> Capture {
        self.shared
            .capture
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<FrameLog> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Cuts every connection of `who` at once, as a network failure would (no WebSocket close).
    /// Returns how many connections were cut.
    pub fn sever(&self, who: &IdentityKey) -> usize {
        let Ok(mut conns) = self.shared.conns.lock() else {
            return 0;
        };
        let mut n = 0;
        for c in conns.values_mut() {
            if c.open && c.who.as_ref() == Some(who) {
                for t in c.tasks.drain(..) {
                    t.abort();
                }
                c.legs[0].close(false);
                c.legs[1].close(true);
                c.open = false;
                n += 1;
            }
        }
        drop(conns);
        if n > 0 {
            self.note(
                Some(*who),
                "the attacker cuts the connection (no WebSocket close)",
            );
        }
        n
    }

    /// Writes an event of the scene into the log (a cut connection, a killed relay, a stolen
    /// profile), so that the report's sequence diagram shows it where it happened. `who` is the
    /// client it concerns, if any.
    pub fn note(&self, who: Option<IdentityKey>, text: &str) {
        let entry = FrameLog {
            t_ms: self.shared.start.elapsed().as_millis() as u64,
            unix_ms: unix_ms(),
            conn: 0,
            who,
            dir: Dir::ToRelay,
            kind: EVENT,
            len: 0,
            peer: None,
            message_id: None,
            body: None,
            recipients: Vec::new(),
            payload: Vec::new(),
            action: text.to_owned(),
        };
        if let Ok(mut l) = self.shared.log.lock() {
            l.push(entry);
        }
    }

    /// Sends `payload` as a frame on the newest open connection of `who`, towards the relay or
    /// the client, as if the other side had sent it. Returns whether there was a connection.
    pub fn inject(&self, who: &IdentityKey, dir: Dir, payload: &[u8], note: &str) -> bool {
        let target = {
            let Ok(conns) = self.shared.conns.lock() else {
                return false;
            };
            conns
                .iter()
                .filter(|(_, c)| c.open && c.who.as_ref() == Some(who))
                .max_by_key(|(id, _)| **id)
                .map(|(id, c)| {
                    (
                        *id,
                        match dir {
                            Dir::ToRelay => c.to_relay.clone(),
                            Dir::ToClient => c.to_client.clone(),
                        },
                    )
                })
        };
        let Some((conn, tx)) = target else {
            return false;
        };
        log_frame(
            &self.shared,
            conn,
            Some(*who),
            dir,
            payload,
            note.to_owned(),
        );
        tx.send(Out::Bytes(ws::encode(
            ws::OP_BINARY,
            payload,
            dir == Dir::ToRelay,
        )))
        .is_ok()
    }

    /// Number of currently open connections of `who`.
    pub fn open_connections(&self, who: &IdentityKey) -> usize {
        self.shared
            .conns
            .lock()
            .map(|c| {
                c.values()
                    .filter(|c| c.open && c.who.as_ref() == Some(who))
                    .count()
            })
            .unwrap_or(0)
    }
}

fn log_frame(
    s: &Shared,
    conn: u64,
    who: Option<IdentityKey>,
    dir: Dir,
    payload: &[u8],
    action: String,
) {
    let mut entry = FrameLog {
        t_ms: s.start.elapsed().as_millis() as u64,
        unix_ms: unix_ms(),
        conn,
        who,
        dir,
        kind: "unknown",
        len: payload.len(),
        peer: None,
        message_id: None,
        body: None,
        recipients: Vec::new(),
        payload: payload.to_vec(),
        action,
    };
    match dir {
        Dir::ToRelay => match ClientFrame::decode(payload) {
            Ok(f) => {
                entry.kind = client_kind(&f);
                match f {
                    ClientFrame::Send(s) => {
                        entry.peer = Some(s.recipient);
                        entry.message_id = Some(s.message_id.0);
                        entry.body = Some(s.body);
                    }
                    ClientFrame::SendMulti(s) => {
                        entry.message_id = Some(s.message_id.0);
                        entry.body = Some(s.body);
                        entry.recipients = s.recipients;
                    }
                    _ => {}
                }
            }
            Err(_) => entry.kind = "malformed",
        },
        Dir::ToClient => match RelayFrame::decode(payload) {
            Ok(f) => {
                entry.kind = relay_kind(&f);
                if let RelayFrame::Deliver(d) = f {
                    entry.peer = Some(d.sender);
                    entry.message_id = Some(d.message_id.0);
                    entry.body = Some(d.body);
                }
            }
            Err(_) => entry.kind = "malformed",
        },
    }
    if let Ok(mut l) = s.log.lock() {
        l.push(entry);
    }
}

async fn handle(s: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let upstream = match s.upstream.lock() {
        Ok(u) => *u,
        Err(_) => return,
    };
    let Ok(relay) = TcpStream::connect(upstream).await else {
        // The relay is down: the client sees its connection refused-ish (closed).
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = relay.set_nodelay(true);
    let capture = match s.capture.lock() {
        Ok(c) => c.clone(),
        Err(_) => return,
    };
    let leg1 = capture.open(peer, s.listen);
    let leg2 = capture.open(relay.local_addr().unwrap_or(upstream), upstream);
    let conn = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let (cr, cw) = client.into_split();
    let (rr, rw) = relay.into_split();
    let (tx_c, rx_c) = mpsc::unbounded_channel();
    let (tx_r, rx_r) = mpsc::unbounded_channel();

    let w1 = tokio::spawn(writer(cw, rx_c, leg1.clone(), false)).abort_handle();
    let w2 = tokio::spawn(writer(rw, rx_r, leg2.clone(), true)).abort_handle();
    let r1 = tokio::spawn(reader(
        s.clone(),
        conn,
        cr,
        Dir::ToRelay,
        leg1.clone(),
        tx_r.clone(),
        tx_c.clone(),
    ))
    .abort_handle();
    let r2 = tokio::spawn(reader(
        s.clone(),
        conn,
        rr,
        Dir::ToClient,
        leg2.clone(),
        tx_c.clone(),
        tx_r.clone(),
    ))
    .abort_handle();
    if let Ok(mut conns) = s.conns.lock() {
        conns.insert(
            conn,
            Conn {
                who: None,
                to_client: tx_c,
                to_relay: tx_r,
                tasks: vec![w1, w2, r1, r2],
                legs: [leg1, leg2],
                open: true,
            },
        );
    }
}

async fn writer(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    leg: Arc<Flow>,
    proxy_is_client: bool,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Bytes(b) => {
                // Recorded before the write: the peer may answer before `write_all` returns, and
                // the capture must keep cause before effect.
                leg.data(proxy_is_client, &b);
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            Out::Close => {
                let _ = w.shutdown().await;
                leg.close(proxy_is_client);
                break;
            }
        }
    }
}

/// Reads one direction: records it, splits it into frames, asks the policy, forwards.
async fn reader(
    s: Arc<Shared>,
    conn: u64,
    mut r: tokio::net::tcp::OwnedReadHalf,
    dir: Dir,
    leg: Arc<Flow>,
    forward: mpsc::UnboundedSender<Out>,
    back: mpsc::UnboundedSender<Out>,
) {
    let from_client_of_leg = dir == Dir::ToRelay;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut http_done = false;
    let mut passthrough = false;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        leg.data(from_client_of_leg, &chunk[..n]);
        if passthrough {
            let _ = forward.send(Out::Bytes(chunk[..n].to_vec()));
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !http_done {
            match ws::http_end(&buf) {
                Some(end) => {
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let _ = forward.send(Out::Bytes(head));
                    http_done = true;
                }
                None => continue,
            }
        }
        loop {
            match ws::parse(&buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    // A delayed frame holds back this direction, like a slow link: order is kept.
                    if let Some((d, raw)) = on_frame(&s, conn, dir, frame, &forward) {
                        tokio::time::sleep(d).await;
                        let _ = forward.send(Out::Bytes(raw));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    passthrough = true;
                    let _ = forward.send(Out::Bytes(std::mem::take(&mut buf)));
                    break;
                }
            }
        }
    }
    // The source closed: close the other leg in the same direction, and mark the connection.
    leg.close(from_client_of_leg);
    let _ = forward.send(Out::Close);
    drop(back);
    if let Ok(mut conns) = s.conns.lock()
        && let Some(c) = conns.get_mut(&conn)
    {
        c.open = false;
    }
}

fn on_frame(
    s: &Arc<Shared>,
    conn: u64,
    dir: Dir,
    frame: ws::WsFrame,
    forward: &mpsc::UnboundedSender<Out>,
) -> Option<(Duration, Vec<u8>)> {
    if frame.opcode != ws::OP_BINARY || !frame.fin {
        let _ = forward.send(Out::Bytes(frame.raw));
        return None;
    }
    let mut who = s
        .conns
        .lock()
        .ok()
        .and_then(|c| c.get(&conn).and_then(|c| c.who));
    if dir == Dir::ToRelay
        && let Ok(ClientFrame::Authenticate(a)) = ClientFrame::decode(&frame.payload)
    {
        who = Some(a.identity);
        if let Ok(mut conns) = s.conns.lock()
            && let Some(c) = conns.get_mut(&conn)
        {
            c.who = who;
        }
    }
    let verdict = {
        let ic = Intercept {
            conn,
            who,
            dir,
            payload: &frame.payload,
        };
        match s.policy.lock() {
            Ok(mut p) => match p.as_mut() {
                Some(f) => f(&ic),
                None => Verdict::Forward,
            },
            Err(_) => Verdict::Forward,
        }
    };
    let masked = dir == Dir::ToRelay;
    match verdict {
        Verdict::Forward => {
            log_frame(s, conn, who, dir, &frame.payload, "forwarded".into());
            let _ = forward.send(Out::Bytes(frame.raw));
        }
        Verdict::Drop(note) => {
            log_frame(
                s,
                conn,
                who,
                dir,
                &frame.payload,
                format!("dropped: {note}"),
            );
        }
        Verdict::Delay(d, note) => {
            log_frame(
                s,
                conn,
                who,
                dir,
                &frame.payload,
                format!("delayed {} ms: {note}", d.as_millis()),
            );
            return Some((d, frame.raw));
        }
        Verdict::Replace(frames, note) => {
            if frames.is_empty() {
                log_frame(
                    s,
                    conn,
                    who,
                    dir,
                    &frame.payload,
                    format!("dropped: {note}"),
                );
            }
            let mut original_sent = false;
            for f in &frames {
                let action = if *f == frame.payload {
                    if !original_sent {
                        original_sent = true;
                        "forwarded".to_owned()
                    } else {
                        format!("replayed: {note}")
                    }
                } else {
                    format!("modified: {note}")
                };
                log_frame(s, conn, who, dir, f, action);
                let _ = forward.send(Out::Bytes(ws::encode(ws::OP_BINARY, f, masked)));
            }
        }
    }
    None
}
