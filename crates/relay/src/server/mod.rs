//! The WebSocket server: HTTP routing, the relay's shared state and its background tasks.
//!
//! ```text
//!  TCP accept ─► (TLS) ─► hyper HTTP/1 ─┬─ GET /healthz, GET /metrics
//!                                       └─ GET / + Upgrade: websocket ─► connection::run
//!  connection (one task): Challenge ─► Authenticate ─► register live handle ─► session:
//!      reader ──► Send / SendMulti ──► sequencer ──► Store::enqueue (one transaction per batch)
//!                                         └► Reply to the sender's writer; pushes into each
//!                                            recipient's Outbox (bounded), else the store
//!      writer ──► replies, notices, deliveries (backlog pages, then pushes) within a window
//!      acker  ──► Store::ack
//! ```
//!
//! Ordering: the sequencer is the only task that enqueues messages; it stores each batch in the
//! order the frames arrived (fan-outs at their place) and pushes in commit order, so each
//! recipient sees ascending delivery ids, which preserves per-sender order. A connection registers
//! its live handle *before* reading its backlog, so every message is either in the backlog,
//! pushed, or both (the writer skips ids it has already sent).
//!
//! Memory: every queue is bounded in bytes (see [`connection`] and [`outbox`]); bodies are
//! shared, never copied per recipient; and the bytes all connections hold for delivery come out
//! of one relay-wide [`budget::Budget`], so no set of slow or stalled peers can pin more.

mod budget;
mod connection;
mod deadline;
mod outbox;
mod sequencer;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sotto_protocol::IdentityKey;
use sotto_wire::{ErrorCode, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RelayConfig;
use crate::metrics::Metrics;
use crate::store::{RemoteEvent, Store};
use connection::LiveHandle;
use deadline::WriteDeadline;
use sequencer::HubMsg;

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

/// What every connection and background task of one relay shares.
struct Shared<S> {
    store: S,
    config: RelayConfig,
    metrics: Metrics,
    live: Mutex<HashMap<IdentityKey, LiveHandle>>,
    hub: mpsc::Sender<HubMsg>,
    unauth: Mutex<HashMap<IpAddr, u32>>,
    open: AtomicU32,
    next_conn_id: AtomicU64,
    id_sends: DefaultKeyedRateLimiter<[u8; 32]>,
    id_fetches: DefaultKeyedRateLimiter<[u8; 32]>,
    /// Body bytes held for delivery by all connections (queued pushes, pages, frames being
    /// written).
    delivery_memory: Arc<budget::Budget>,
    /// Body bytes of sends waiting for the store, all connections together.
    send_memory: Arc<Semaphore>,
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
            unauth: Mutex::new(HashMap::new()),
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
            delivery_memory: budget::Budget::new(config.delivery_memory),
            send_memory: Arc::new(Semaphore::new(
                config
                    .send_memory
                    .clamp(sotto_wire::MAX_BODY_LEN, Semaphore::MAX_PERMITS),
            )),
            shutdown: CancellationToken::new(),
            ws_config,
            shared_store: remote.is_some(),
            config,
        });
        if let Some(remote) = remote {
            tokio::spawn(remote_wakeups(shared.clone(), remote));
        }
        tokio::spawn(sequencer::run(shared.clone(), hub_rx));
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
            let m = &shared.metrics;
            m.delivery_memory_bytes
                .set(i64::try_from(shared.delivery_memory.used()).unwrap_or(i64::MAX));
            m.send_memory_bytes.set(
                i64::try_from(
                    shared
                        .config
                        .send_memory
                        .saturating_sub(shared.send_memory.available_permits()),
                )
                .unwrap_or(i64::MAX),
            );
            let mut r = text(StatusCode::OK, m.encode());
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
                        let io =
                            WriteDeadline::new(TokioIo::new(upgraded), shared.config.write_timeout);
                        let ws = WebSocketStream::from_raw_socket(
                            io,
                            Role::Server,
                            Some(shared.ws_config),
                        )
                        .await;
                        connection::run(shared, ws, addr.ip(), accepted_at).await;
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

/// Wakes the live connections of recipients that other relay processes stored messages for: each
/// re-reads its mailbox from the store.
async fn remote_wakeups<S: Store>(shared: Arc<Shared<S>>, mut events: mpsc::Receiver<RemoteEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            RemoteEvent::NewMessages(identity) => {
                if let Some(h) = lock(&shared.live).get(&identity) {
                    h.outbox.lag();
                }
            }
            RemoteEvent::Resync => lock(&shared.live).values().for_each(|h| h.outbox.lag()),
        }
    }
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
