//! [`RelayClient`]: the tokio driver around a [`Session`]. It owns the WebSocket, writes what
//! the session queues, feeds it what arrives and the time, and hands back [`Event`]s.
//!
//! Reads and writes make progress together (one `poll` drives both), so a relay that streams a
//! long backlog while a request waits never stalls the request's frame, and a relay that stops
//! reading never stops us from reading. There is no per-request timeout: the session fails the
//! connection when nothing arrives for [`Timeouts::progress`] with something outstanding.
//!
//! Two ways to use it:
//! - **event-driven** (the sotto client): start requests with [`RelayClient::session_mut`] and
//!   handle every [`Event`] from [`RelayClient::next_event`] as it comes (deliveries stored and
//!   acknowledged at once), so nothing piles up;
//! - **request/response** (tests, the load generator): [`RelayClient::send`],
//!   [`RelayClient::fetch_bundle`]... wait for their reply and keep the other events for
//!   [`RelayClient::recv_frame`] / [`RelayClient::next_delivery`], in a buffer bounded in bytes
//!   ([`MAX_UNHANDLED_BYTES`]): past it, the wait fails with [`ClientError::Overflow`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{Sink, Stream};
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_wire::{
    BundleIn, ClientFrame, DeliverIn, MAX_FRAME_LEN, MessageId, PrekeyCounts, RelayFrame, RelayId,
    SendMultiOut, SendOut, UploadPrekeysOut,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::session::{Event, Outcome, RequestId, Session, Timeouts};
use crate::tls::{self, KeyPin, TrustRoots};

/// The client's WebSocket.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes of message bodies the request/response methods keep for later while they wait.
pub const MAX_UNHANDLED_BYTES: usize = 8 * 1024 * 1024;
/// Frames the request/response methods keep for later while they wait.
pub const MAX_UNHANDLED_FRAMES: usize = 4096;

/// The WebSocket settings the client uses: frames up to the protocol limit, a small read buffer.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// How to reach and trust a relay.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Roots for `wss://` (ignored for `ws://`).
    pub roots: TrustRoots,
    /// The relay id pinned for this relay; another one is refused before anything is signed.
    pub relay_id: Option<RelayId>,
    /// The TLS key pinned for this relay; another one is refused before the WebSocket opens.
    pub tls_key: Option<KeyPin>,
    /// Handshake, progress and keepalive timings.
    pub timeouts: Timeouts,
}

enum Step {
    Frame(Vec<u8>),
    Timer,
}

/// An authenticated connection to a relay.
pub struct RelayClient {
    ws: ClientSocket,
    session: Session,
    tls_key: Option<KeyPin>,
    unhandled: VecDeque<Event>,
    unhandled_bytes: usize,
    flush_pending: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("session", &self.session)
            .field("tls_key", &self.tls_key)
            .finish_non_exhaustive()
    }
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn target(url: &str) -> Result<Target, ClientError> {
    let req = url
        .into_client_request()
        .map_err(|e| ClientError::Url(e.to_string()))?;
    let uri = req.uri();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(ClientError::Url(
                "it must start with ws:// or wss://".into(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url("no host".into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target { tls, host, port })
}

/// Opens TCP (and TLS, checking the key pin) and upgrades to a WebSocket; no protocol yet.
async fn open(
    url: &str,
    opts: &ConnectOptions,
) -> Result<(ClientSocket, Option<KeyPin>), ClientError> {
    let t = target(url)?;
    let host = t.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, t.port))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (stream, key) = if t.tls {
        let config = tls::client_config(&opts.roots)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
        let stream = connector
            .connect(tls::server_name(&t.host)?, tcp)
            .await
            .map_err(|e| tls::explain(&e))?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| ClientError::Tls("the relay sent no certificate".into()))?;
        let presented = KeyPin::of_certificate(leaf.as_ref())?;
        if let Some(pinned) = opts.tls_key
            && pinned != presented
        {
            return Err(ClientError::CertificateChanged { pinned, presented });
        }
        (MaybeTlsStream::Rustls(stream), Some(presented))
    } else {
        (MaybeTlsStream::Plain(tcp), None)
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(socket_config()))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    Ok((ws, key))
}

impl RelayClient {
    /// Opens a WebSocket to `url` (`ws://` or `wss://` with Mozilla's roots) without
    /// authenticating.
    pub async fn connect_raw(url: &str) -> Result<ClientSocket, ClientError> {
        Ok(open(url, &ConnectOptions::default()).await?.0)
    }

    /// Connects and authenticates as `keypair` (with `invite` for a new identity on an
    /// invite-only relay), with default options (Mozilla's roots, nothing pinned). Returns once
    /// the relay has said `AuthOk`; the backlog follows.
    pub async fn connect(
        url: &str,
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(url, keypair, invite, &ConnectOptions::default()).await
    }

    /// Connects with `opts`: its roots for TLS and its pins (a relay presenting another id or
    /// TLS key is refused with [`ClientError::RelayIdChanged`] or
    /// [`ClientError::CertificateChanged`]). The whole handshake is bounded by
    /// [`Timeouts::handshake`].
    pub async fn connect_with(
        url: &str,
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
        opts: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + opts.timeouts.handshake);
        let (ws, key) = tokio::time::timeout_at(deadline, open(url, opts))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let session = Session::new(keypair, invite, opts.relay_id, opts.timeouts, started);
        let mut c = Self::with_session(ws, session);
        c.tls_key = key;
        c.handshake().await?;
        Ok(c)
    }

    /// Authenticates on an open socket (default timeouts, nothing pinned).
    pub async fn authenticate(
        ws: ClientSocket,
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
    ) -> Result<Self, ClientError> {
        let session = Session::new(keypair, invite, None, Timeouts::default(), Instant::now());
        let mut c = Self::with_session(ws, session);
        c.handshake().await?;
        Ok(c)
    }

    fn with_session(ws: ClientSocket, session: Session) -> Self {
        Self {
            ws,
            session,
            tls_key: None,
            unhandled: VecDeque::new(),
            unhandled_bytes: 0,
            flush_pending: false,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
        }
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        match self.poll_event().await? {
            Event::Authenticated(_) => Ok(()),
            _ => Err(ClientError::Protocol("expected AuthOk")),
        }
    }

    /// The authenticated identity.
    pub fn identity(&self) -> IdentityKey {
        self.session.identity()
    }

    /// The relay's id (pin it to detect a different relay).
    pub fn relay_id(&self) -> RelayId {
        self.session.relay_id().unwrap_or(RelayId([0; 32]))
    }

    /// The relay's TLS key (`wss://` only; pin it like the id).
    pub fn tls_key(&self) -> Option<KeyPin> {
        self.tls_key
    }

    /// One-time prekey counts reported at authentication.
    pub fn prekey_counts(&self) -> PrekeyCounts {
        self.session.prekey_counts()
    }

    /// The protocol state, to start requests without waiting for them
    /// ([`Session::send`], [`Session::fetch_bundle`], ...); the frames go out with the next
    /// [`RelayClient::next_event`] or [`RelayClient::flush`].
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The protocol state.
    pub fn session(&self) -> &Session {
        &self.session
    }

    // ------------------------------------------------------------ the driver

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        while self.session.wants_transmit() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(frame) = self.session.poll_transmit() else {
                        break;
                    };
                    Pin::new(&mut self.ws)
                        .start_send(Message::Binary(frame.into()))
                        .map_err(|_| ClientError::Closed)?;
                    self.flush_pending = true;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(ClientError::Closed)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.flush_pending {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush_pending = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(ClientError::Closed)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, ClientError>> {
        if let Poll::Ready(Err(e)) = self.poll_write(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Binary(b)))) => {
                    return Poll::Ready(Ok(Step::Frame(b.to_vec())));
                }
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(Err(ClientError::Closed));
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(ClientError::Closed)),
                // Pings are answered by tungstenite; text is not part of the protocol.
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Pending => break,
            }
        }
        if let Some(at) = self.session.poll_timeout() {
            let at = tokio::time::Instant::from_std(at);
            if self.sleep.deadline() != at {
                self.sleep.as_mut().reset(at);
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(Step::Timer));
            }
        }
        Poll::Pending
    }

    /// Drives the connection until the session has an event: writes what is queued, reads,
    /// keeps time. Cancel-safe: dropping the future loses nothing (a frame read is handled in
    /// the same poll that read it).
    async fn poll_event(&mut self) -> Result<Event, ClientError> {
        loop {
            match poll_fn(|cx| self.poll_step(cx)).await? {
                Step::Frame(bytes) => {
                    let frame = RelayFrame::decode(&bytes)
                        .map_err(|_| ClientError::Protocol("malformed frame"))?;
                    if let Some(ev) = self.session.handle_frame(frame, Instant::now())? {
                        return Ok(ev);
                    }
                }
                Step::Timer => self.session.handle_timeout(Instant::now())?,
            }
        }
    }

    /// The next event: first any kept while a request/response method waited, then from the
    /// connection. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(ev) = self.unhandled.pop_front() {
            self.unhandled_bytes -= ev.body_len();
            return Ok(ev);
        }
        self.poll_event().await
    }

    /// Writes everything queued (bounded by the progress timeout; reads nothing).
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let limit = self.session_timeouts().progress;
        tokio::time::timeout(limit, poll_fn(|cx| self.poll_write(cx)))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    fn session_timeouts(&self) -> Timeouts {
        self.session.timeouts()
    }

    fn keep(&mut self, ev: Event) -> Result<(), ClientError> {
        let len = ev.body_len();
        if self.unhandled.len() >= MAX_UNHANDLED_FRAMES
            || self.unhandled_bytes + len > MAX_UNHANDLED_BYTES
        {
            return Err(ClientError::Overflow);
        }
        self.unhandled_bytes += len;
        self.unhandled.push_back(ev);
        Ok(())
    }

    /// Waits for the reply to `id`, keeping other events for later (bounded).
    pub async fn wait(&mut self, id: RequestId) -> Result<Outcome, ClientError> {
        loop {
            match self.poll_event().await? {
                Event::Reply { id: got, outcome } if got == id => return Ok(outcome),
                other => self.keep(other)?,
            }
        }
    }

    // ------------------------------------------------------------ request/response

    /// Sends one frame as it is (no reply tracked: replies come back as frames).
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.session.queue_frame(frame);
        self.flush().await
    }

    /// The next frame: first any kept while waiting for a reply, then from the socket. A fatal
    /// error ends the session: [`ClientError::Fatal`].
    pub async fn recv_frame(&mut self) -> Result<RelayFrame, ClientError> {
        Ok(self.next_event().await?.into_frame())
    }

    fn sent(outcome: Outcome) -> Result<(), ClientError> {
        match outcome {
            Outcome::Accepted(_) => Ok(()),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            _ => Err(ClientError::Protocol("unexpected reply to a send")),
        }
    }

    /// Sends one message to several recipients (frame `0x47`, a group fan-out) and waits until
    /// the relay stored it for all of them (`Ok`), or reports the first failure (the entries for
    /// the other recipients are stored all the same).
    pub async fn send_multi(
        &mut self,
        recipients: Vec<IdentityKey>,
        message_id: MessageId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        let id = self.session.send_multi(SendMultiOut {
            recipients,
            message_id,
            body,
        })?;
        Self::sent(self.wait(id).await?)
    }

    /// Sends a message and waits until the relay has stored it durably.
    pub async fn send(
        &mut self,
        recipient: IdentityKey,
        message_id: MessageId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        let id = self.session.send(SendOut {
            recipient,
            message_id,
            body,
        })?;
        Self::sent(self.wait(id).await?)
    }

    /// Uploads prekeys and returns the counts stored afterwards (an empty upload asks for the
    /// current counts).
    pub async fn upload_prekeys(
        &mut self,
        upload: UploadPrekeysOut,
    ) -> Result<PrekeyCounts, ClientError> {
        let id = self.session.upload_prekeys(upload)?;
        match self.wait(id).await? {
            Outcome::PrekeysStored(c) => Ok(c),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            _ => Err(ClientError::Protocol("unexpected reply to an upload")),
        }
    }

    /// Fetches `identity`'s bundle (consuming one of its one-time prekeys).
    pub async fn fetch_bundle(&mut self, identity: IdentityKey) -> Result<BundleIn, ClientError> {
        let id = self.session.fetch_bundle(identity)?;
        match self.wait(id).await? {
            Outcome::Bundle(b) => Ok(b),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            _ => Err(ClientError::Protocol("unexpected reply to a fetch")),
        }
    }

    /// Sends a `Ping` and waits for its `Pong`.
    pub async fn ping(&mut self, value: u64) -> Result<(), ClientError> {
        let id = self.session.ping(value)?;
        match self.wait(id).await? {
            Outcome::Pong(_) => Ok(()),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            _ => Err(ClientError::Protocol("unexpected reply to a ping")),
        }
    }

    /// The next delivered message. Notices (`Drained`, `PrekeysLow`, `Pong`) are skipped; an
    /// error frame is returned as an error.
    pub async fn next_delivery(&mut self) -> Result<DeliverIn, ClientError> {
        loop {
            match self.next_event().await? {
                Event::Deliver(d) => return Ok(d),
                Event::Unsolicited(RelayFrame::Error(e))
                | Event::Reply {
                    outcome: Outcome::Rejected(e),
                    ..
                } => return Err(ClientError::Rejected(e)),
                _ => continue,
            }
        }
    }

    /// Acknowledges deliveries; the relay deletes them. There is no reply.
    pub async fn ack(&mut self, delivery_ids: Vec<u64>) -> Result<(), ClientError> {
        self.session.ack(delivery_ids)?;
        self.flush().await
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.ws.close(None).await;
    }

    /// The underlying socket, for callers that pipeline frames themselves.
    pub fn into_socket(self) -> ClientSocket {
        self.ws
    }
}
