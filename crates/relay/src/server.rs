//! The WebSocket server: HTTP routing, authentication, the per-connection state machine, and the
//! send sequencer that turns accepted sends into durable batches and live pushes.
//!
//! ```text
//!  TCP accept ─► (TLS) ─► hyper HTTP/1 ─┬─ GET /healthz, GET /metrics
//!                                       └─ GET / + Upgrade: websocket ─► connection task
//!  connection task:  Challenge ─► Authenticate ─► register live handle ─► backlog ─► Drained ─► loop
//!      Send ──► sequencer queue ──► Store::enqueue (one transaction per batch)
//!                                    └► Accepted to the sender, Deliver pushed to the recipient's
//!                                       live handle (in commit order), or left in the store
//! ```
//!
//! Ordering: the sequencer is the only task that enqueues messages; it stores each batch in the
//! order the frames arrived (fan-outs at their place) and pushes in commit order, so each
//! recipient sees ascending delivery ids, which preserves per-sender order. A
//! connection registers its live handle *before* reading its backlog, so every message is either
//! in the backlog, pushed, or both (the connection skips ids it has already sent).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sotto_protocol::IdentityKey;
use sotto_wire::{
    ChallengeIn, ClientFrame, DeliverIn, ErrorCode, ErrorContext, ErrorIn, MAX_BODY_LEN,
    MAX_FRAME_LEN, PrekeyCounts, RelayFrame,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RelayConfig;
use crate::metrics::Metrics;
use crate::store::{
    EnqueueOutcome, EnqueuePolicy, NewMessage, Registration, RemoteEvent, Store, StoredMessage,
    UploadOutcome,
};

/// Messages per page when reading a mailbox from the store.
const PAGE: u32 = 64;
/// Most sends committed in one durable batch.
const MAX_SEND_BATCH: usize = 2048;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the sequencer sends back to a connection (one per submitted send).
type Reply = RelayFrame;

#[allow(
    clippy::large_enum_variant,
    reason = "sends are nearly every message; flushes are rare"
)]
enum HubMsg {
    Send {
        message: NewMessage,
        reply: mpsc::Sender<Reply>,
    },
    Flush(oneshot::Sender<()>),
    /// A group fan-out (frame `0x47`): one body, one mailbox entry per recipient.
    SendMulti {
        sender: IdentityKey,
        recipients: Vec<IdentityKey>,
        message_id: sotto_wire::MessageId,
        body: Vec<u8>,
        reply: mpsc::Sender<Reply>,
    },
}

enum Push {
    Deliver(Arc<StoredMessage>),
    Notice(Box<RelayFrame>),
    /// Another relay process stored messages for this connection's identity: re-read the store
    /// (the sender of this set `lagging`).
    Wake,
}

struct LiveHandle {
    conn_id: u64,
    pushes: mpsc::Sender<Push>,
    lagging: Arc<AtomicBool>,
    kick: Arc<Notify>,
}

struct Shared<S> {
    store: S,
    config: RelayConfig,
    metrics: Metrics,
    live: Mutex<HashMap<IdentityKey, LiveHandle>>,
    hub: mpsc::Sender<HubMsg>,
    unauth: Arc<Mutex<HashMap<IpAddr, u32>>>,
    open: AtomicU32,
    next_conn_id: AtomicU64,
    id_sends: DefaultKeyedRateLimiter<[u8; 32]>,
    id_fetches: DefaultKeyedRateLimiter<[u8; 32]>,
    shutdown: CancellationToken,
    ws_config: WebSocketConfig,
    /// Other relay processes write to the same store: a pushed message is delivered directly only
    /// if its id follows the last one delivered (see [`Store::subscribe`]).
    shared_store: bool,
}

/// A relay over one store. Create it inside a Tokio runtime, then [`Relay::serve`].
pub struct Relay<S: Store> {
    shared: Arc<Shared<S>>,
    tracker: TaskTracker,
}

impl<S: Store> Relay<S> {
    /// Creates the relay and starts its background tasks (send sequencer, TTL expiry).
    pub fn new(store: S, config: RelayConfig) -> Self {
        let (hub, hub_rx) = mpsc::channel(16 * 1024);
        let remote = store.subscribe();
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size)
            // Frames fed between flushes go out in one write; an idle connection keeps none.
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(MAX_FRAME_LEN * 4)
            .max_message_size(Some(MAX_FRAME_LEN))
            .max_frame_size(Some(MAX_FRAME_LEN));
        let shared = Arc::new(Shared {
            store,
            metrics: Metrics::new(),
            live: Mutex::new(HashMap::new()),
            hub,
            unauth: Arc::new(Mutex::new(HashMap::new())),
            open: AtomicU32::new(0),
            next_conn_id: AtomicU64::new(1),
            id_sends: RateLimiter::keyed(
                Quota::per_second(nz(config.identity_sends_per_sec))
                    .allow_burst(nz(config.identity_sends_burst)),
            ),
            id_fetches: RateLimiter::keyed(
                Quota::per_second(nz(config.identity_fetches_per_sec))
                    .allow_burst(nz(config.identity_fetches_burst)),
            ),
            shutdown: CancellationToken::new(),
            ws_config,
            shared_store: remote.is_some(),
            config,
        });
        if let Some(remote) = remote {
            tokio::spawn(remote_wakeups(shared.clone(), remote));
        }
        tokio::spawn(sequencer(shared.clone(), hub_rx));
        tokio::spawn(housekeeping(shared.clone()));
        Self {
            shared,
            tracker: TaskTracker::new(),
        }
    }

    /// Cancel this token to shut the relay down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// The relay's metrics.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Accepts connections until the shutdown token is cancelled, then stops accepting, tells
    /// every client, waits (up to the grace period) for connections to close, and commits every
    /// send still queued before returning.
    pub async fn serve(self, listener: TcpListener, tls: Option<TlsAcceptor>) -> io::Result<()> {
        let shared = self.shared;
        loop {
            let accepted = tokio::select! {
                () = shared.shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (tcp, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            shared.metrics.connections_total.inc();
            let shared = shared.clone();
            let tls = tls.clone();
            let tracker = self.tracker.clone();
            self.tracker.spawn(async move {
                let accepted_at = Instant::now();
                match tls {
                    None => serve_http(shared, tcp, addr, accepted_at, tracker).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(
                            shared.config.handshake_timeout,
                            acceptor.accept(tcp),
                        )
                        .await
                        {
                            Ok(Ok(io)) => serve_http(shared, io, addr, accepted_at, tracker).await,
                            _ => shared.metrics.reject(ErrorCode::Timeout),
                        }
                    }
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: closing connections");
        self.tracker.close();
        if tokio::time::timeout(shared.config.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        let (tx, rx) = oneshot::channel();
        if shared.hub.send(HubMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn serve_http<S: Store, I>(
    shared: Arc<Shared<S>>,
    io: I,
    addr: SocketAddr,
    accepted_at: Instant,
    tracker: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.config.handshake_timeout;
    let cancel = shared.shutdown.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let tracker = tracker.clone();
        async move { Ok::<_, Infallible>(route(shared, req, addr, accepted_at, &tracker)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        () = cancel.cancelled() => {}
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn route<S: Store>(
    shared: Arc<Shared<S>>,
    req: Request<Incoming>,
    addr: SocketAddr,
    accepted_at: Instant,
    tracker: &TaskTracker,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            let mut r = text(StatusCode::OK, shared.metrics.encode());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/" | "/v1" => {
            let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
            let version_ok = req
                .headers()
                .get(SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
            let (Some(key), true, true, true) = (
                key,
                version_ok,
                header_has(&req, CONNECTION, "upgrade"),
                header_has(&req, UPGRADE, "websocket"),
            ) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "sotto relay: WebSocket upgrade expected\n",
                );
            };
            let accept = derive_accept_key(key.as_bytes());
            tracker.spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => {
                        let ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(shared.ws_config),
                        )
                        .await;
                        run_connection(shared, ws, addr.ip(), accepted_at).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            // No Sec-WebSocket-Extensions header: permessage-deflate is never negotiated.
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            let h = r.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Decrements the per-IP count of unauthenticated connections when dropped.
struct UnauthSlot {
    map: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl Drop for UnauthSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Decrements the open-connection count when dropped.
struct OpenSlot<'a>(&'a AtomicU32);

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Why a connection loop ended.
enum End {
    /// Send this error, then close.
    Fatal(ErrorCode),
    /// The peer went away or the socket failed; nothing more to send.
    Gone,
}

/// One inbound WebSocket message, classified.
#[allow(clippy::large_enum_variant, reason = "short-lived, on the stack")]
enum Inbound {
    Frame(ClientFrame),
    Bad(ErrorCode),
    Closed,
}

struct Conn<S: Store> {
    shared: Arc<Shared<S>>,
    ws: Ws,
}

impl<S: Store> Conn<S> {
    async fn write(&mut self, frame: &RelayFrame) -> Result<(), End> {
        self.feed(frame).await?;
        self.ws.flush().await.map_err(|_| End::Gone)
    }

    async fn feed(&mut self, frame: &RelayFrame) -> Result<(), End> {
        let bytes = frame.encode();
        let m = &self.shared.metrics;
        m.frames_out.inc();
        m.bytes_out.inc_by(bytes.len() as u64);
        self.ws
            .feed(Message::Binary(bytes.into()))
            .await
            .map_err(|_| End::Gone)
    }

    async fn error(&mut self, code: ErrorCode, context: ErrorContext) -> Result<(), End> {
        self.shared.metrics.reject(code);
        self.write(&RelayFrame::Error(ErrorIn { code, context }))
            .await
    }

    async fn close(mut self, end: End) {
        if let End::Fatal(code) = end {
            let _ = self.error(code, ErrorContext::None).await;
            let frame = CloseFrame {
                code: CloseCode::Policy,
                reason: code.label().into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(Some(frame))).await;
        }
    }

    async fn next(&mut self) -> Inbound {
        loop {
            let Some(msg) = self.ws.next().await else {
                return Inbound::Closed;
            };
            let m = &self.shared.metrics;
            match msg {
                Ok(Message::Binary(b)) => {
                    m.frames_in.inc();
                    m.bytes_in.inc_by(b.len() as u64);
                    return match ClientFrame::decode(&b) {
                        Ok(f) => Inbound::Frame(f),
                        Err(_) => Inbound::Bad(ErrorCode::Malformed),
                    };
                }
                Ok(Message::Text(_) | Message::Frame(_)) => {
                    return Inbound::Bad(ErrorCode::Malformed);
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return Inbound::Closed,
                Err(tungstenite::Error::Capacity(_)) => return Inbound::Bad(ErrorCode::TooLarge),
                Err(tungstenite::Error::Protocol(_)) => return Inbound::Bad(ErrorCode::Malformed),
                Err(_) => return Inbound::Closed,
            }
        }
    }
}

async fn run_connection<S: Store>(
    shared: Arc<Shared<S>>,
    ws: Ws,
    ip: IpAddr,
    accepted_at: Instant,
) {
    let open = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
    let _open = OpenSlot(&shared.open);
    let mut conn = Conn {
        shared: shared.clone(),
        ws,
    };
    if open > shared.config.max_connections {
        return conn.close(End::Fatal(ErrorCode::TooManyConnections)).await;
    }
    let slot = {
        let mut map = lock(&shared.unauth);
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.config.max_unauthenticated_per_ip {
            None
        } else {
            *n += 1;
            Some(UnauthSlot {
                map: shared.unauth.clone(),
                ip,
            })
        }
    };
    let Some(slot) = slot else {
        return conn.close(End::Fatal(ErrorCode::TooManyConnections)).await;
    };
    shared.metrics.connections_unauthenticated.inc();
    let deadline = accepted_at + shared.config.handshake_timeout;
    let authed = tokio::time::timeout_at(deadline.into(), authenticate(&mut conn)).await;
    shared.metrics.connections_unauthenticated.dec();
    drop(slot);
    let identity = match authed {
        Ok(Ok(id)) => id,
        Ok(Err(end)) => return conn.close(end).await,
        Err(_) => return conn.close(End::Fatal(ErrorCode::Timeout)).await,
    };
    shared.metrics.connections_authenticated.inc();
    let end = Session::start(conn, identity).await;
    shared.metrics.connections_authenticated.dec();
    let (conn, end) = end;
    conn.close(end).await;
}

async fn authenticate<S: Store>(conn: &mut Conn<S>) -> Result<IdentityKey, End> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| End::Fatal(ErrorCode::Internal))?;
    let relay_id = conn.shared.store.relay_id();
    conn.write(&RelayFrame::Challenge(ChallengeIn {
        relay_id,
        nonce,
        max_frame_len: MAX_FRAME_LEN as u32,
        max_body_len: MAX_BODY_LEN as u32,
    }))
    .await?;
    let auth = match conn.next().await {
        Inbound::Frame(ClientFrame::Authenticate(a)) => a,
        Inbound::Frame(_) => return Err(End::Fatal(ErrorCode::Unauthorized)),
        Inbound::Bad(code) => return Err(End::Fatal(code)),
        Inbound::Closed => return Err(End::Gone),
    };
    if !auth.verify(&relay_id, &nonce) {
        tracing::info!(identity = %auth.identity.fingerprint(), "authentication failed: bad signature");
        return Err(End::Fatal(ErrorCode::Unauthorized));
    }
    let c = &conn.shared.config;
    match conn
        .shared
        .store
        .register(auth.identity, auth.invite, c.invite_only, now_ms())
        .await
    {
        Ok(Registration::Known) => {}
        Ok(Registration::Registered) => {
            tracing::info!(identity = %auth.identity.fingerprint(), "registered new identity");
        }
        Ok(Registration::InviteRequired) => return Err(End::Fatal(ErrorCode::InviteRequired)),
        Err(e) => {
            tracing::error!(error = %e, "store failed during registration");
            return Err(End::Fatal(ErrorCode::Internal));
        }
    }
    Ok(auth.identity)
}

/// An authenticated connection.
struct Session<S: Store> {
    conn: Conn<S>,
    identity: IdentityKey,
    pushes: mpsc::Receiver<Push>,
    lagging: Arc<AtomicBool>,
    kick: Arc<Notify>,
    replies_tx: mpsc::Sender<Reply>,
    replies: mpsc::Receiver<Reply>,
    inflight: usize,
    last_delivered: u64,
    limiter: DefaultDirectRateLimiter,
}

impl<S: Store> Session<S> {
    async fn start(conn: Conn<S>, identity: IdentityKey) -> (Conn<S>, End) {
        let shared = conn.shared.clone();
        let c = &shared.config;
        let (push_tx, pushes) = mpsc::channel(c.delivery_queue.max(1));
        let (replies_tx, replies) = mpsc::channel(c.max_inflight_sends.max(1) + 1);
        let lagging = Arc::new(AtomicBool::new(false));
        let kick = Arc::new(Notify::new());
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let old = lock(&shared.live).insert(
            identity,
            LiveHandle {
                conn_id,
                pushes: push_tx,
                lagging: lagging.clone(),
                kick: kick.clone(),
            },
        );
        if let Some(old) = old {
            old.kick.notify_one();
        }
        tracing::debug!(identity = %identity.fingerprint(), conn_id, "authenticated");
        let mut s = Session {
            conn,
            identity,
            pushes,
            lagging,
            kick,
            replies_tx,
            replies,
            inflight: 0,
            last_delivered: 0,
            limiter: RateLimiter::direct(
                Quota::per_second(nz(c.conn_frames_per_sec)).allow_burst(nz(c.conn_frames_burst)),
            ),
        };
        let end = match s.run().await {
            Ok(()) => End::Gone,
            Err(e) => e,
        };
        {
            let mut live = lock(&shared.live);
            if live.get(&identity).is_some_and(|h| h.conn_id == conn_id) {
                live.remove(&identity);
            }
        }
        (s.conn, end)
    }

    async fn run(&mut self) -> Result<(), End> {
        let shared = self.conn.shared.clone();
        let counts = shared
            .store
            .prekey_counts(self.identity)
            .await
            .map_err(|_| End::Fatal(ErrorCode::Internal))?;
        self.conn.write(&RelayFrame::AuthOk(counts)).await?;
        if self.is_low(counts) {
            self.conn.write(&RelayFrame::PrekeysLow(counts)).await?;
        }
        self.catch_up().await?;
        self.conn.write(&RelayFrame::Drained).await?;

        let idle = shared.config.idle_timeout;
        let mut last_inbound = Instant::now();
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        let max_inflight = shared.config.max_inflight_sends;
        loop {
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return Err(End::Fatal(ErrorCode::ShuttingDown)),
                () = self.kick.notified() => return Err(End::Fatal(ErrorCode::Superseded)),
                Some(reply) = self.replies.recv() => {
                    self.inflight = self.inflight.saturating_sub(1);
                    self.conn.feed(&reply).await?;
                    while let Ok(reply) = self.replies.try_recv() {
                        self.inflight = self.inflight.saturating_sub(1);
                        self.conn.feed(&reply).await?;
                    }
                    self.conn.ws.flush().await.map_err(|_| End::Gone)?;
                }
                Some(push) = self.pushes.recv() => {
                    self.push(push).await?;
                    while let Ok(push) = self.pushes.try_recv() {
                        self.push(push).await?;
                    }
                    self.conn.ws.flush().await.map_err(|_| End::Gone)?;
                    if self.lagging.load(Ordering::Acquire) {
                        self.catch_up().await?;
                    }
                }
                inbound = self.conn.next(), if self.inflight < max_inflight => {
                    last_inbound = Instant::now();
                    match inbound {
                        Inbound::Frame(f) => self.handle(f).await?,
                        Inbound::Bad(code) => return Err(End::Fatal(code)),
                        Inbound::Closed => return Ok(()),
                    }
                }
                () = &mut sleep => {
                    let deadline = last_inbound + idle;
                    if Instant::now() >= deadline {
                        return Err(End::Fatal(ErrorCode::Timeout));
                    }
                    sleep.as_mut().reset(deadline.into());
                }
            }
        }
    }

    fn is_low(&self, c: PrekeyCounts) -> bool {
        let t = self.conn.shared.config.prekeys_low_threshold;
        c.x25519 < t || c.kem < t
    }

    async fn push(&mut self, push: Push) -> Result<(), End> {
        match push {
            Push::Deliver(m) => {
                if m.delivery_id <= self.last_delivered {
                    Ok(())
                } else if self.conn.shared.shared_store && m.delivery_id != self.last_delivered + 1
                {
                    // Another relay may have committed the ids in between: read them in order.
                    self.lagging.store(true, Ordering::Release);
                    Ok(())
                } else {
                    self.deliver(&m).await
                }
            }
            Push::Notice(frame) => self.conn.feed(&frame).await,
            Push::Wake => Ok(()),
        }
    }

    async fn deliver(&mut self, m: &StoredMessage) -> Result<(), End> {
        self.last_delivered = m.delivery_id;
        self.conn.shared.metrics.messages_delivered.inc();
        self.conn
            .feed(&RelayFrame::Deliver(DeliverIn {
                delivery_id: m.delivery_id,
                sender: m.sender,
                message_id: m.message_id,
                timestamp_ms: m.timestamp_ms,
                body: m.body.clone(),
            }))
            .await
    }

    /// Sends everything in the store above `last_delivered` (the backlog at login, or what was
    /// not pushed while the delivery queue was full).
    async fn catch_up(&mut self) -> Result<(), End> {
        self.lagging.store(false, Ordering::Release);
        let shared = self.conn.shared.clone();
        loop {
            let started = Instant::now();
            let page = shared
                .store
                .pending(self.identity, self.last_delivered, now_ms(), PAGE)
                .await
                .map_err(|_| End::Fatal(ErrorCode::Internal))?;
            shared
                .metrics
                .store_latency
                .observe(started.elapsed().as_secs_f64());
            for m in &page {
                self.deliver(m).await?;
            }
            self.conn.ws.flush().await.map_err(|_| End::Gone)?;
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), End> {
        let shared = self.conn.shared.clone();
        if self.limiter.check().is_err() {
            let context = match &frame {
                ClientFrame::Send(s) => ErrorContext::Message(s.message_id),
                ClientFrame::SendMulti(s) => ErrorContext::Message(s.message_id),
                _ => ErrorContext::None,
            };
            return self.conn.error(ErrorCode::RateLimited, context).await;
        }
        match frame {
            ClientFrame::Authenticate(_) => Err(End::Fatal(ErrorCode::ProtocolViolation)),
            ClientFrame::Ping(v) => self.conn.write(&RelayFrame::Pong(v)).await,
            ClientFrame::Send(s) => {
                if shared.id_sends.check_key(self.identity.as_bytes()).is_err() {
                    return self
                        .conn
                        .error(ErrorCode::RateLimited, ErrorContext::Message(s.message_id))
                        .await;
                }
                let message = NewMessage {
                    recipient: s.recipient,
                    sender: self.identity,
                    message_id: s.message_id,
                    body: s.body,
                };
                self.inflight += 1;
                shared.metrics.send_queue_depth.inc();
                if shared
                    .hub
                    .send(HubMsg::Send {
                        message,
                        reply: self.replies_tx.clone(),
                    })
                    .await
                    .is_err()
                {
                    return Err(End::Fatal(ErrorCode::ShuttingDown));
                }
                Ok(())
            }
            ClientFrame::SendMulti(s) => {
                // Charged to the sender's quota: one send per recipient.
                let n = NonZeroU32::new(u32::try_from(s.recipients.len()).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN);
                if !matches!(
                    shared.id_sends.check_key_n(self.identity.as_bytes(), n),
                    Ok(Ok(()))
                ) {
                    return self
                        .conn
                        .error(ErrorCode::RateLimited, ErrorContext::Message(s.message_id))
                        .await;
                }
                if s.recipients.contains(&self.identity) {
                    return self
                        .conn
                        .error(
                            ErrorCode::ProtocolViolation,
                            ErrorContext::Message(s.message_id),
                        )
                        .await;
                }
                self.inflight += 1;
                shared.metrics.send_queue_depth.inc();
                if shared
                    .hub
                    .send(HubMsg::SendMulti {
                        sender: self.identity,
                        recipients: s.recipients,
                        message_id: s.message_id,
                        body: s.body,
                        reply: self.replies_tx.clone(),
                    })
                    .await
                    .is_err()
                {
                    return Err(End::Fatal(ErrorCode::ShuttingDown));
                }
                Ok(())
            }
            ClientFrame::Ack(ids) => {
                if !ids.is_empty() {
                    let identity = self.identity;
                    tokio::spawn(async move {
                        match shared.store.ack(identity, ids).await {
                            Ok(n) => {
                                shared.metrics.messages_acked.inc_by(n);
                            }
                            Err(e) => tracing::error!(error = %e, "ack failed"),
                        }
                    });
                }
                Ok(())
            }
            ClientFrame::UploadPrekeys(up) => {
                let max = shared.config.max_one_time_prekeys;
                match shared.store.upload_prekeys(self.identity, up, max).await {
                    Ok(UploadOutcome::Stored(counts)) => {
                        self.conn.write(&RelayFrame::PrekeysStored(counts)).await
                    }
                    Ok(UploadOutcome::Limit) => {
                        self.conn
                            .error(ErrorCode::PrekeyLimit, ErrorContext::None)
                            .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "prekey upload failed");
                        self.conn
                            .error(ErrorCode::Internal, ErrorContext::None)
                            .await
                    }
                }
            }
            ClientFrame::FetchBundle(target) => {
                if shared
                    .id_fetches
                    .check_key(self.identity.as_bytes())
                    .is_err()
                {
                    return self
                        .conn
                        .error(ErrorCode::RateLimited, ErrorContext::Identity(target))
                        .await;
                }
                match shared.store.take_bundle(target).await {
                    Ok(Some((bundle, counts))) => {
                        self.conn.write(&RelayFrame::Bundle(bundle)).await?;
                        if self.is_low(counts) {
                            notify(&shared, &target, RelayFrame::PrekeysLow(counts));
                        }
                        Ok(())
                    }
                    Ok(None) => {
                        self.conn
                            .error(ErrorCode::NoBundle, ErrorContext::Identity(target))
                            .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bundle fetch failed");
                        self.conn
                            .error(ErrorCode::Internal, ErrorContext::Identity(target))
                            .await
                    }
                }
            }
            _ => {
                self.conn
                    .error(ErrorCode::ProtocolViolation, ErrorContext::None)
                    .await
            }
        }
    }
}

/// Sends a best-effort notice to `identity`'s live connection, if any.
fn notify<S>(shared: &Shared<S>, identity: &IdentityKey, frame: RelayFrame) {
    if let Some(h) = lock(&shared.live).get(identity) {
        let _ = h.pushes.try_send(Push::Notice(Box::new(frame)));
    }
}

/// Pushes a stored message to its recipient's live connection, or marks that connection as
/// lagging (it re-reads the store) when its queue is full.
fn push_live<S>(shared: &Shared<S>, m: Arc<StoredMessage>) {
    let live = lock(&shared.live);
    let Some(h) = live.get(&m.recipient) else {
        return;
    };
    if h.lagging.load(Ordering::Acquire) {
        return;
    }
    if let Err(mpsc::error::TrySendError::Full(_)) = h.pushes.try_send(Push::Deliver(m)) {
        h.lagging.store(true, Ordering::Release);
        shared.metrics.delivery_queue_overflows.inc();
    }
}

/// Wakes the live connections of recipients that other relay processes stored messages for: each
/// re-reads its mailbox from the store.
async fn remote_wakeups<S: Store>(shared: Arc<Shared<S>>, mut events: mpsc::Receiver<RemoteEvent>) {
    let wake = |h: &LiveHandle| {
        // Whoever set `lagging` first has queued a push, so the connection will catch up.
        if !h.lagging.swap(true, Ordering::AcqRel) {
            let _ = h.pushes.try_send(Push::Wake);
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            RemoteEvent::NewMessages(identity) => {
                if let Some(h) = lock(&shared.live).get(&identity) {
                    wake(h);
                }
            }
            RemoteEvent::Resync => lock(&shared.live).values().for_each(wake),
        }
    }
}

/// The only task that enqueues messages: batches sends into one store transaction and then, in
/// commit order, answers each sender and pushes each message to its recipient.
///
/// A batch is stored in **arrival order**, fan-outs included (a `SendMulti` becomes one entry per
/// recipient at its place in the batch), so the delivery ids of one sender's messages increase in
/// the order its frames were read: per-sender order holds however `Send` and `SendMulti` are
/// pipelined.
async fn sequencer<S: Store>(shared: Arc<Shared<S>>, mut rx: mpsc::Receiver<HubMsg>) {
    let mut inbox = Vec::with_capacity(256);
    while rx.recv_many(&mut inbox, MAX_SEND_BATCH).await > 0 {
        let mut messages = Vec::with_capacity(inbox.len());
        // One entry per send frame: its message id, reply channel and how many store entries.
        let mut requests = Vec::with_capacity(inbox.len());
        let mut flushes = Vec::new();
        for msg in inbox.drain(..) {
            match msg {
                HubMsg::Send { message, reply } => {
                    requests.push((message.message_id, reply, 1));
                    messages.push(message);
                }
                HubMsg::SendMulti {
                    sender,
                    recipients,
                    message_id,
                    body,
                    reply,
                } => {
                    requests.push((message_id, reply, recipients.len()));
                    messages.extend(recipients.into_iter().map(|recipient| NewMessage {
                        recipient,
                        sender,
                        message_id,
                        body: body.clone(),
                    }));
                }
                HubMsg::Flush(done) => flushes.push(done),
            }
        }
        let n = messages.len();
        if n > 0 {
            let c = &shared.config;
            let policy = EnqueuePolicy {
                now_ms: now_ms(),
                ttl_ms: c.ttl.as_millis() as u64,
                max_messages: c.mailbox_max_messages,
                max_bytes: c.mailbox_max_bytes,
            };
            let started = Instant::now();
            let result = shared.store.enqueue(messages, policy).await;
            let m = &shared.metrics;
            m.store_latency.observe(started.elapsed().as_secs_f64());
            m.store_batch_size.observe(n as f64);
            m.send_queue_depth.dec_by(requests.len() as i64);
            match result {
                Ok(outcomes) => {
                    let mut outcomes = outcomes.into_iter();
                    for (message_id, reply, entries) in requests {
                        // A fan-out is accepted if every recipient's entry is stored, else it
                        // reports the first failure (the other entries are stored all the same).
                        let mut failure = None;
                        for outcome in outcomes.by_ref().take(entries) {
                            match outcome {
                                EnqueueOutcome::Stored(stored) => {
                                    m.messages_accepted.inc();
                                    push_live(&shared, Arc::new(stored));
                                }
                                EnqueueOutcome::QuotaFull => {
                                    failure.get_or_insert(ErrorCode::QuotaFull);
                                }
                                EnqueueOutcome::UnknownRecipient => {
                                    failure.get_or_insert(ErrorCode::UnknownRecipient);
                                }
                            }
                        }
                        let frame = match failure {
                            None => RelayFrame::Accepted(message_id),
                            Some(code) => rejection(m, code, message_id),
                        };
                        let _ = reply.try_send(frame);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, messages = n, "durable enqueue failed");
                    for (message_id, reply, _) in requests {
                        let _ = reply.try_send(rejection(m, ErrorCode::Internal, message_id));
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn rejection(m: &Metrics, code: ErrorCode, message_id: sotto_wire::MessageId) -> RelayFrame {
    m.reject(code);
    RelayFrame::Error(ErrorIn {
        code,
        context: ErrorContext::Message(message_id),
    })
}

/// Periodic work: TTL expiry and forgetting idle rate-limiter keys.
async fn housekeeping<S: Store>(shared: Arc<Shared<S>>) {
    let mut tick = tokio::time::interval(shared.config.expiry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared.store.expire(now_ms()).await {
            Ok(n) if n > 0 => {
                shared.metrics.messages_expired.inc_by(n);
                tracing::info!(expired = n, "deleted expired messages");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "expiry failed"),
        }
        shared.id_sends.retain_recent();
        shared.id_fetches.retain_recent();
    }
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, TlsError> {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading certificate {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("reading key {}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup failed: {0}")]
pub struct TlsError(String);
