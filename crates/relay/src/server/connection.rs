//! One WebSocket connection: authentication, then a session of three concurrent parts.
//!
//! ```text
//!  connection task ─ select! ─┬─ shutdown / superseded (kick) ─────────► close with the error
//!                             ├─ reader: frames in ─► limits ─► sequencer / store / replies
//!                             ├─ writer: replies, notices, deliveries ─► socket (write deadline)
//!                             └─ acker:  acknowledged ids ─► store (one batch in flight)
//! ```
//!
//! The parts run concurrently, so none waits on another: a peer that stops reading stalls only
//! its writer, which the write deadline closes (the socket accepted no bytes, or the window of
//! unacknowledged deliveries stayed full with no `Ack`, for `write_timeout`), while idle timeout,
//! supersede and shutdown are always seen. Everything a
//! part holds is bounded: the reader stops reading while its connection has `max_inflight_sends`
//! sends (or `max_inflight_send_bytes`) waiting for the store, or while the relay-wide
//! `send_memory` is spent; replies wait in queues sized by those limits; deliveries are pushed
//! into the connection's [`Outbox`] (bounded in bytes, falling back to the store) and written
//! within a **window** of unacknowledged deliveries (`delivery_window`, `delivery_window_bytes`),
//! with control replies first, so a connection receiving a large backlog keeps being served.
//!
//! An `Ack` counts only for ids this connection was sent and has not acknowledged yet (the
//! window); other ids cost no store work and are charged to the frame rate limit one token
//! each, so random ids flood nothing but the flooder's own budget.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use sotto_protocol::IdentityKey;
use sotto_wire::{
    ChallengeIn, ClientFrame, ErrorCode, ErrorContext, ErrorIn, MAX_BODY_LEN, MAX_FRAME_LEN,
    MessageId, PrekeyCounts, RelayFrame,
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::budget::Charge;
use super::deadline::WriteDeadline;
use super::outbox::{Outbox, Queued, Taken};
use super::sequencer::{HubMsg, Reply, SendRequest};
use super::{Shared, lock, now_ms, nz};
use crate::metrics::Metrics;
use crate::store::{Registration, Store, StoreError, StoredMessage, UploadOutcome};

/// The upgraded connection under the WebSocket, with its write deadline.
pub(super) type Io = WriteDeadline<TokioIo<Upgraded>>;
pub(super) type Ws = WebSocketStream<Io>;
type WsSink = SplitSink<Ws, Message>;
type WsSource = SplitStream<Ws>;

/// Most messages read from the store per page.
const PAGE: usize = 64;
/// Most body bytes read from the store per page (a page may end one body past it).
const PAGE_BYTES: usize = 128 * 1024;
/// What a page read reserves of the relay's delivery memory.
const PAGE_CHARGE: usize = PAGE_BYTES + MAX_BODY_LEN;
/// Replies the reader makes itself (pongs, bundles, errors) waiting for the writer.
const DIRECT_REPLIES: usize = 16;
/// How often a writer waiting for delivery memory tries again (besides being woken).
const BUDGET_RETRY: Duration = Duration::from_millis(20);

/// What the relay's other tasks hold of a live authenticated connection.
pub(super) struct LiveHandle {
    pub(super) conn_id: u64,
    pub(super) outbox: Arc<Outbox>,
    pub(super) kick: Arc<Notify>,
}

/// Why a connection ends.
enum End {
    /// Send this error, then close.
    Fatal(ErrorCode),
    /// The peer went away or the socket failed; nothing more to send.
    Gone,
}

/// One inbound WebSocket message, classified.
enum Inbound {
    Frame(Bytes),
    Bad(ErrorCode),
    Closed,
}

/// Decrements a per-IP count of unauthenticated connections when dropped.
struct UnauthSlot<'a> {
    map: &'a Mutex<HashMap<IpAddr, u32>>,
    ip: IpAddr,
}

impl Drop for UnauthSlot<'_> {
    fn drop(&mut self) {
        let mut map = lock(self.map);
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

fn ws_error(m: &Metrics, e: &tungstenite::Error) -> End {
    if let tungstenite::Error::Io(io) = e
        && io.kind() == std::io::ErrorKind::TimedOut
    {
        m.write_timeouts.inc();
    }
    End::Gone
}

async fn feed<W>(w: &mut W, m: &Metrics, frame: Vec<u8>) -> Result<(), End>
where
    W: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    m.frames_out.inc();
    m.bytes_out.inc_by(frame.len() as u64);
    w.feed(Message::Binary(frame.into()))
        .await
        .map_err(|e| ws_error(m, &e))
}

async fn flush<W>(w: &mut W, m: &Metrics) -> Result<(), End>
where
    W: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    w.flush().await.map_err(|e| ws_error(m, &e))
}

async fn next_inbound<R>(r: &mut R, m: &Metrics) -> Inbound
where
    R: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let Some(msg) = r.next().await else {
            return Inbound::Closed;
        };
        match msg {
            Ok(Message::Binary(b)) => {
                m.frames_in.inc();
                m.bytes_in.inc_by(b.len() as u64);
                return Inbound::Frame(b);
            }
            Ok(Message::Text(_) | Message::Frame(_)) => return Inbound::Bad(ErrorCode::Malformed),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return Inbound::Closed,
            Err(tungstenite::Error::Capacity(_)) => return Inbound::Bad(ErrorCode::TooLarge),
            Err(tungstenite::Error::Protocol(_)) => return Inbound::Bad(ErrorCode::Malformed),
            Err(e) => {
                ws_error(m, &e);
                return Inbound::Closed;
            }
        }
    }
}

/// Sends the error of a fatal end and a close frame, giving up after `grace`.
async fn close<W>(w: &mut W, m: &Metrics, end: End, grace: Duration)
where
    W: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    if let End::Fatal(code) = end {
        m.reject(code);
        let frame = RelayFrame::Error(ErrorIn {
            code,
            context: ErrorContext::None,
        })
        .encode();
        let _ = tokio::time::timeout(grace, async {
            feed(w, m, frame).await?;
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: code.label().into(),
            };
            w.send(Message::Close(Some(close)))
                .await
                .map_err(|e| ws_error(m, &e))
        })
        .await;
    }
}

/// Serves one upgraded WebSocket until it ends.
pub(super) async fn run<S: Store>(
    shared: Arc<Shared<S>>,
    mut ws: Ws,
    ip: IpAddr,
    accepted_at: Instant,
) {
    let m = &shared.metrics;
    let grace = shared.config.write_timeout.min(Duration::from_secs(1));
    let open = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
    let _open = OpenSlot(&shared.open);
    if open > shared.config.max_connections {
        return close(&mut ws, m, End::Fatal(ErrorCode::TooManyConnections), grace).await;
    }
    let slot = {
        let mut map = lock(&shared.unauth);
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.config.max_unauthenticated_per_ip {
            None
        } else {
            *n += 1;
            Some(UnauthSlot {
                map: &shared.unauth,
                ip,
            })
        }
    };
    let Some(slot) = slot else {
        return close(&mut ws, m, End::Fatal(ErrorCode::TooManyConnections), grace).await;
    };
    m.connections_unauthenticated.inc();
    let deadline = accepted_at + shared.config.handshake_timeout;
    let authed = tokio::time::timeout_at(deadline.into(), authenticate(&shared, &mut ws)).await;
    m.connections_unauthenticated.dec();
    drop(slot);
    let identity = match authed {
        Ok(Ok(id)) => id,
        Ok(Err(end)) => return close(&mut ws, m, end, grace).await,
        Err(_) => return close(&mut ws, m, End::Fatal(ErrorCode::Timeout), grace).await,
    };
    m.connections_authenticated.inc();
    session(&shared, ws, identity).await;
    m.connections_authenticated.dec();
}

async fn authenticate<S: Store>(shared: &Shared<S>, ws: &mut Ws) -> Result<IdentityKey, End> {
    let m = &shared.metrics;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| End::Fatal(ErrorCode::Internal))?;
    let relay_id = shared.store.relay_id();
    let challenge = RelayFrame::Challenge(ChallengeIn {
        relay_id,
        nonce,
        max_frame_len: MAX_FRAME_LEN as u32,
        max_body_len: MAX_BODY_LEN as u32,
    });
    feed(ws, m, challenge.encode()).await?;
    flush(ws, m).await?;
    let auth = match next_inbound(ws, m).await {
        Inbound::Frame(b) => match ClientFrame::decode(&b) {
            Ok(ClientFrame::Authenticate(a)) => a,
            Ok(_) => return Err(End::Fatal(ErrorCode::Unauthorized)),
            Err(_) => return Err(End::Fatal(ErrorCode::Malformed)),
        },
        Inbound::Bad(code) => return Err(End::Fatal(code)),
        Inbound::Closed => return Err(End::Gone),
    };
    if !auth.verify(&relay_id, &nonce) {
        tracing::info!(identity = %auth.identity.fingerprint(), "authentication failed: bad signature");
        return Err(End::Fatal(ErrorCode::Unauthorized));
    }
    let c = &shared.config;
    match shared
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

/// Deliveries sent on this connection and not yet acknowledged.
#[derive(Default)]
struct Window {
    unacked: HashMap<u64, usize>,
    bytes: usize,
}

/// The state the reader, writer and acker of one session share.
struct Lane<S: Store> {
    shared: Arc<Shared<S>>,
    identity: IdentityKey,
    outbox: Arc<Outbox>,
    window: Mutex<Window>,
    /// Acknowledgements freed room in the window.
    window_freed: Notify,
    /// Acknowledged ids waiting for the acker.
    acks: Mutex<Vec<u64>>,
    acks_ready: Notify,
    /// One permit per send waiting for the store (returned with its reply).
    slots: Arc<Semaphore>,
    /// Body bytes of this connection's sends waiting for the store.
    send_bytes: Arc<Semaphore>,
    limiter: DefaultDirectRateLimiter,
}

impl<S: Store> Lane<S> {
    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn is_low(&self, c: PrekeyCounts) -> bool {
        let t = self.shared.config.prekeys_low_threshold;
        c.x25519 < t || c.kem < t
    }

    /// Room left in the window: (messages, bytes); zero messages when closed.
    fn window_room(&self) -> (usize, usize) {
        let c = &self.shared.config;
        let w = lock(&self.window);
        if w.unacked.is_empty() {
            return (c.delivery_window.max(1), c.delivery_window_bytes.max(1));
        }
        if w.unacked.len() >= c.delivery_window || w.bytes >= c.delivery_window_bytes {
            return (0, 0);
        }
        (
            c.delivery_window - w.unacked.len(),
            c.delivery_window_bytes - w.bytes,
        )
    }
}

/// Runs an authenticated session and closes it.
async fn session<S: Store>(shared: &Arc<Shared<S>>, ws: Ws, identity: IdentityKey) {
    let c = &shared.config;
    let m = &shared.metrics;
    let outbox = Arc::new(Outbox::default());
    let kick = Arc::new(Notify::new());
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let old = lock(&shared.live).insert(
        identity,
        LiveHandle {
            conn_id,
            outbox: outbox.clone(),
            kick: kick.clone(),
        },
    );
    if let Some(old) = old {
        old.kick.notify_one();
    }
    tracing::debug!(identity = %identity.fingerprint(), conn_id, "authenticated");
    let lane = Lane {
        shared: shared.clone(),
        identity,
        outbox,
        window: Mutex::new(Window::default()),
        window_freed: Notify::new(),
        acks: Mutex::new(Vec::new()),
        acks_ready: Notify::new(),
        slots: Arc::new(Semaphore::new(c.max_inflight_sends.max(1))),
        send_bytes: Arc::new(Semaphore::new(c.max_inflight_send_bytes.max(MAX_BODY_LEN))),
        limiter: RateLimiter::direct(
            Quota::per_second(nz(c.conn_frames_per_sec)).allow_burst(nz(c.conn_frames_burst)),
        ),
    };
    let (replies_tx, mut replies_rx) = mpsc::channel(c.max_inflight_sends.max(1));
    let (direct_tx, mut direct_rx) = mpsc::channel(DIRECT_REPLIES);
    let (mut sink, mut source) = ws.split();
    let end = {
        let reader = read_loop(&lane, &mut source, &direct_tx, &replies_tx);
        let writer = Writer::new(&lane, &mut sink).run(&mut replies_rx, &mut direct_rx);
        let acker = ack_loop(&lane);
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => End::Fatal(ErrorCode::ShuttingDown),
            () = kick.notified() => End::Fatal(ErrorCode::Superseded),
            end = writer => end,
            end = reader => end,
            () = acker => End::Gone,
        }
    };
    {
        let mut live = lock(&shared.live);
        if live.get(&identity).is_some_and(|h| h.conn_id == conn_id) {
            live.remove(&identity);
        }
    }
    // Acknowledgements the acker had not taken yet (the one it was applying is with the store).
    let ids = std::mem::take(&mut *lock(&lane.acks));
    if !ids.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.store.ack(identity, ids)).await;
    }
    drop(lane);
    let grace = c.write_timeout.min(Duration::from_secs(1));
    close(&mut sink, m, end, grace).await;
}

/// Reads and handles frames until the connection ends or the idle timeout passes.
async fn read_loop<S: Store>(
    lane: &Lane<S>,
    source: &mut WsSource,
    direct: &mpsc::Sender<RelayFrame>,
    replies: &mpsc::Sender<Reply>,
) -> End {
    let idle = lane.shared.config.idle_timeout;
    loop {
        let bytes = match tokio::time::timeout(idle, next_inbound(source, lane.metrics())).await {
            Err(_) => return End::Fatal(ErrorCode::Timeout),
            Ok(Inbound::Frame(b)) => b,
            Ok(Inbound::Bad(code)) => return End::Fatal(code),
            Ok(Inbound::Closed) => return End::Gone,
        };
        if let Err(end) = handle(lane, &bytes, direct, replies).await {
            return end;
        }
    }
}

/// Queues a reply for the writer (waiting while its queue is full: the peer is not reading).
async fn reply(direct: &mpsc::Sender<RelayFrame>, frame: RelayFrame) -> Result<(), End> {
    direct.send(frame).await.map_err(|_| End::Gone)
}

async fn error(
    lane: &Lane<impl Store>,
    direct: &mpsc::Sender<RelayFrame>,
    code: ErrorCode,
    context: ErrorContext,
) -> Result<(), End> {
    lane.metrics().reject(code);
    reply(direct, RelayFrame::Error(ErrorIn { code, context })).await
}

async fn handle<S: Store>(
    lane: &Lane<S>,
    bytes: &[u8],
    direct: &mpsc::Sender<RelayFrame>,
    replies: &mpsc::Sender<Reply>,
) -> Result<(), End> {
    let shared = &lane.shared;
    let frame = ClientFrame::decode(bytes).map_err(|_| End::Fatal(ErrorCode::Malformed))?;
    if lane.limiter.check().is_err() {
        let context = match &frame {
            ClientFrame::Send(s) => ErrorContext::Message(s.message_id),
            ClientFrame::SendMulti(s) => ErrorContext::Message(s.message_id),
            _ => ErrorContext::None,
        };
        return error(lane, direct, ErrorCode::RateLimited, context).await;
    }
    match frame {
        ClientFrame::Authenticate(_) => Err(End::Fatal(ErrorCode::ProtocolViolation)),
        ClientFrame::Ping(v) => reply(direct, RelayFrame::Pong(v)).await,
        ClientFrame::Send(s) => {
            submit(
                lane,
                vec![s.recipient],
                s.message_id,
                s.body,
                direct,
                replies,
            )
            .await
        }
        ClientFrame::SendMulti(s) => {
            if s.recipients.contains(&lane.identity) {
                return Err(End::Fatal(ErrorCode::ProtocolViolation));
            }
            submit(lane, s.recipients, s.message_id, s.body, direct, replies).await
        }
        ClientFrame::Ack(ids) => acknowledge(lane, &ids, direct).await,
        ClientFrame::UploadPrekeys(up) => {
            let max = shared.config.max_one_time_prekeys;
            match shared.store.upload_prekeys(lane.identity, up, max).await {
                Ok(UploadOutcome::Stored(counts)) => {
                    reply(direct, RelayFrame::PrekeysStored(counts)).await
                }
                Ok(UploadOutcome::Limit) => {
                    error(lane, direct, ErrorCode::PrekeyLimit, ErrorContext::None).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "prekey upload failed");
                    error(lane, direct, ErrorCode::Internal, ErrorContext::None).await
                }
            }
        }
        ClientFrame::FetchBundle(target) => {
            let context = ErrorContext::Identity(target);
            if shared
                .id_fetches
                .check_key(lane.identity.as_bytes())
                .is_err()
            {
                return error(lane, direct, ErrorCode::RateLimited, context).await;
            }
            match shared.store.take_bundle(target).await {
                Ok(Some((bundle, counts))) => {
                    reply(direct, RelayFrame::Bundle(bundle)).await?;
                    if lane.is_low(counts)
                        && let Some(h) = lock(&shared.live).get(&target)
                    {
                        h.outbox.notice_low(counts);
                    }
                    Ok(())
                }
                Ok(None) => error(lane, direct, ErrorCode::NoBundle, context).await,
                Err(e) => {
                    tracing::error!(error = %e, "bundle fetch failed");
                    error(lane, direct, ErrorCode::Internal, context).await
                }
            }
        }
        _ => Err(End::Fatal(ErrorCode::ProtocolViolation)),
    }
}

/// Admits a send (or fan-out) under the connection's and the relay's limits and hands it to the
/// sequencer. Waits (the reader stops reading) while the limits are reached.
async fn submit<S: Store>(
    lane: &Lane<S>,
    recipients: Vec<IdentityKey>,
    message_id: MessageId,
    body: Vec<u8>,
    direct: &mpsc::Sender<RelayFrame>,
    replies: &mpsc::Sender<Reply>,
) -> Result<(), End> {
    let shared = &lane.shared;
    // Charged to the sender's quota: one send per recipient.
    let n = NonZeroU32::new(u32::try_from(recipients.len()).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN);
    if !matches!(
        shared.id_sends.check_key_n(lane.identity.as_bytes(), n),
        Ok(Ok(()))
    ) {
        return error(
            lane,
            direct,
            ErrorCode::RateLimited,
            ErrorContext::Message(message_id),
        )
        .await;
    }
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let gone = |_| End::Fatal(ErrorCode::ShuttingDown);
    let slot = lane.slots.clone().acquire_owned().await.map_err(gone)?;
    let conn_bytes = lane
        .send_bytes
        .clone()
        .acquire_many_owned(len)
        .await
        .map_err(gone)?;
    let relay_bytes = shared
        .send_memory
        .clone()
        .acquire_many_owned(len)
        .await
        .map_err(gone)?;
    shared.metrics.send_queue_depth.inc();
    shared
        .hub
        .send(HubMsg::Send(SendRequest {
            sender: lane.identity,
            recipients,
            message_id,
            body: Bytes::from(body),
            reply: replies.clone(),
            slot,
            bytes: (conn_bytes, relay_bytes),
        }))
        .await
        .map_err(|_| End::Fatal(ErrorCode::ShuttingDown))
}

/// Applies an `Ack`: ids in the window go to the acker, the others are charged to the rate limit.
async fn acknowledge<S: Store>(
    lane: &Lane<S>,
    ids: &[u64],
    direct: &mpsc::Sender<RelayFrame>,
) -> Result<(), End> {
    let mut valid = Vec::new();
    {
        let mut w = lock(&lane.window);
        for id in ids {
            if let Some(len) = w.unacked.remove(id) {
                w.bytes -= len;
                valid.push(*id);
            }
        }
    }
    let ignored = ids.len() - valid.len();
    if !valid.is_empty() {
        lock(&lane.acks).extend(valid);
        lane.acks_ready.notify_one();
        lane.window_freed.notify_one();
    }
    if ignored > 0 {
        let m = lane.metrics();
        m.ack_ids_ignored.inc_by(ignored as u64);
        let n =
            NonZeroU32::new(u32::try_from(ignored).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if !matches!(lane.limiter.check_n(n), Ok(Ok(()))) {
            return error(lane, direct, ErrorCode::RateLimited, ErrorContext::None).await;
        }
    }
    Ok(())
}

/// Applies acknowledgements, one store operation at a time (those that arrive meanwhile are
/// applied together next).
async fn ack_loop<S: Store>(lane: &Lane<S>) {
    loop {
        lane.acks_ready.notified().await;
        let ids = std::mem::take(&mut *lock(&lane.acks));
        if ids.is_empty() {
            continue;
        }
        match lane.shared.store.ack(lane.identity, ids).await {
            Ok(n) => {
                lane.metrics().messages_acked.inc_by(n);
            }
            Err(e) => tracing::error!(error = %e, "ack failed"),
        }
    }
}

/// Where the writer takes deliveries from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading the mailbox back from the store (at login: the backlog, then `Drained`).
    CatchUp { backlog: bool },
    /// Taking pushes from the outbox.
    Live,
}

/// Why the writer stopped delivering.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocked {
    /// Nothing to deliver.
    Idle,
    /// The window of unacknowledged deliveries is full.
    Window,
    /// The relay's delivery memory is spent.
    Budget,
    /// A page read from the store is under way.
    Fetching,
}

/// A page read from the store: the messages, whether it reached the end of the mailbox, and
/// the memory it holds.
type Page = (Result<Vec<StoredMessage>, StoreError>, bool, Charge);
type PageFuture = Pin<Box<dyn Future<Output = Page> + Send>>;

struct Writer<'a, S: Store> {
    lane: &'a Lane<S>,
    sink: &'a mut WsSink,
    mode: Mode,
    last_delivered: u64,
    /// Something was fed since the last flush.
    dirty: bool,
    /// Charges of delivery frames fed since the last flush (the WebSocket layer holds a copy).
    fed: Vec<Charge>,
    /// The rest of the last page, and whether the mailbox ends with it.
    page: VecDeque<StoredMessage>,
    page_complete: bool,
    page_charge: Option<Charge>,
    fetch: Option<PageFuture>,
    /// A push taken from the outbox that is waiting for delivery memory.
    held: Option<Queued>,
    /// Since when the window has been full with no Ack.
    window_full_since: Option<tokio::time::Instant>,
}

impl<'a, S: Store> Writer<'a, S> {
    fn new(lane: &'a Lane<S>, sink: &'a mut WsSink) -> Self {
        Self {
            lane,
            sink,
            mode: Mode::CatchUp { backlog: true },
            last_delivered: 0,
            dirty: false,
            fed: Vec::new(),
            page: VecDeque::new(),
            page_complete: false,
            page_charge: None,
            fetch: None,
            held: None,
            window_full_since: None,
        }
    }

    async fn run(
        mut self,
        replies: &mut mpsc::Receiver<Reply>,
        direct: &mut mpsc::Receiver<RelayFrame>,
    ) -> End {
        match self.serve(replies, direct).await {
            Ok(()) => End::Gone,
            Err(end) => end,
        }
    }

    async fn feed(&mut self, frame: &RelayFrame) -> Result<(), End> {
        self.dirty = true;
        feed(self.sink, self.lane.metrics(), frame.encode()).await
    }

    async fn serve(
        &mut self,
        replies: &mut mpsc::Receiver<Reply>,
        direct: &mut mpsc::Receiver<RelayFrame>,
    ) -> Result<(), End> {
        let lane = self.lane;
        let counts = lane
            .shared
            .store
            .prekey_counts(lane.identity)
            .await
            .map_err(|_| End::Fatal(ErrorCode::Internal))?;
        self.feed(&RelayFrame::AuthOk(counts)).await?;
        if lane.is_low(counts) {
            self.feed(&RelayFrame::PrekeysLow(counts)).await?;
        }
        lane.outbox.restart();
        loop {
            // Replies first: they are small, and a sender waits for each.
            while let Ok(r) = replies.try_recv() {
                self.feed(&r.frame).await?;
            }
            while let Ok(f) = direct.try_recv() {
                self.feed(&f).await?;
            }
            if let Some(c) = lane.outbox.take_low() {
                self.feed(&RelayFrame::PrekeysLow(c)).await?;
            }
            let blocked = self.deliver().await?;
            if self.dirty {
                flush(self.sink, lane.metrics()).await?;
                self.dirty = false;
                self.fed.clear();
                if self.page.is_empty() {
                    self.page_charge = None;
                }
                continue;
            }
            let budget = &lane.shared.delivery_memory;
            // A full window that no Ack opens within the write deadline is a peer that takes
            // nothing: closed like one whose socket accepts nothing.
            let window_deadline = match (blocked, self.window_full_since) {
                (Blocked::Window, Some(since)) => since,
                (Blocked::Window, None) => {
                    *self.window_full_since.insert(tokio::time::Instant::now())
                }
                _ => {
                    self.window_full_since = None;
                    tokio::time::Instant::now()
                }
            } + lane.shared.config.write_timeout;
            tokio::select! {
                biased;
                Some(r) = replies.recv() => self.feed(&r.frame).await?,
                Some(f) = direct.recv() => self.feed(&f).await?,
                Some(page) = OptionFuture::from(self.fetch.as_mut()) => {
                    self.fetch = None;
                    self.take_page(page)?;
                }
                () = lane.outbox.woken() => {}
                () = lane.window_freed.notified(), if blocked == Blocked::Window => {
                    self.window_full_since = None;
                }
                () = tokio::time::sleep_until(window_deadline), if blocked == Blocked::Window => {
                    lane.metrics().write_timeouts.inc();
                    return Err(End::Fatal(ErrorCode::Timeout));
                }
                () = budget.freed(), if blocked == Blocked::Budget => {}
                () = tokio::time::sleep(BUDGET_RETRY), if blocked == Blocked::Budget => {}
            }
        }
    }

    /// Writes deliveries while the window and the delivery memory allow.
    async fn deliver(&mut self) -> Result<Blocked, End> {
        let lane = self.lane;
        let budget = &lane.shared.delivery_memory;
        loop {
            let (room, room_bytes) = lane.window_room();
            if room == 0 {
                return Ok(Blocked::Window);
            }
            match self.mode {
                Mode::CatchUp { backlog } => {
                    if let Some(m) = self.page.pop_front() {
                        // The page's charge covers its bodies and their copies being written.
                        self.write_delivery(&m, None).await?;
                        continue;
                    }
                    if self.page_complete {
                        self.page_complete = false;
                        self.mode = Mode::Live;
                        if backlog {
                            self.feed(&RelayFrame::Drained).await?;
                        }
                        continue;
                    }
                    if self.fetch.is_some() {
                        return Ok(Blocked::Fetching);
                    }
                    let Some(charge) = budget.try_charge(PAGE_CHARGE) else {
                        return Ok(Blocked::Budget);
                    };
                    self.fetch = Some(Box::pin(fetch_page(
                        lane.shared.clone(),
                        lane.identity,
                        self.last_delivered,
                        room.min(PAGE),
                        room_bytes.min(PAGE_BYTES),
                        charge,
                    )));
                    return Ok(Blocked::Fetching);
                }
                Mode::Live => {
                    let item = match self.held.take() {
                        Some(item) => item,
                        None => match lane.outbox.take() {
                            Taken::Item(item) => item,
                            Taken::Empty => return Ok(Blocked::Idle),
                            Taken::Lagging => {
                                self.catch_up();
                                continue;
                            }
                        },
                    };
                    let id = item.message.delivery_id;
                    if id <= self.last_delivered {
                        continue;
                    }
                    if lane.shared.shared_store && id != self.last_delivered + 1 {
                        // Another relay may have committed the ids in between: read them in order.
                        self.catch_up();
                        continue;
                    }
                    let Some(charge) = budget.try_charge(item.message.body.len()) else {
                        self.held = Some(item);
                        return Ok(Blocked::Budget);
                    };
                    self.write_delivery(&item.message, Some(charge)).await?;
                }
            }
        }
    }

    /// Switches to reading the mailbox from the store (pushes were dropped, or ids are missing).
    fn catch_up(&mut self) {
        self.lane.outbox.restart();
        self.held = None;
        self.mode = Mode::CatchUp { backlog: false };
    }

    fn take_page(&mut self, (page, complete, charge): Page) -> Result<(), End> {
        let page = page.map_err(|e| {
            tracing::error!(error = %e, "reading a mailbox failed");
            End::Fatal(ErrorCode::Internal)
        })?;
        self.page.extend(page);
        self.page_complete = complete;
        self.page_charge = Some(charge);
        Ok(())
    }

    async fn write_delivery(
        &mut self,
        m: &StoredMessage,
        charge: Option<Charge>,
    ) -> Result<(), End> {
        if m.delivery_id <= self.last_delivered {
            return Ok(());
        }
        self.last_delivered = m.delivery_id;
        {
            let mut w = lock(&self.lane.window);
            w.unacked.insert(m.delivery_id, m.body.len());
            w.bytes += m.body.len();
        }
        let lane = self.lane;
        lane.metrics().messages_delivered.inc();
        self.dirty = true;
        self.fed.extend(charge);
        let frame = sotto_wire::encode_deliver(
            m.delivery_id,
            &m.sender,
            &m.message_id,
            m.timestamp_ms,
            &m.body,
        );
        feed(self.sink, lane.metrics(), frame).await
    }
}

/// Reads the next page of `identity`'s mailbox after `after`.
async fn fetch_page<S: Store>(
    shared: Arc<Shared<S>>,
    identity: IdentityKey,
    after: u64,
    limit: usize,
    max_bytes: usize,
    charge: Charge,
) -> Page {
    let started = Instant::now();
    let limit32 = u32::try_from(limit).unwrap_or(u32::MAX);
    let page = shared
        .store
        .pending(identity, after, now_ms(), limit32, max_bytes)
        .await;
    shared
        .metrics
        .store_latency
        .observe(started.elapsed().as_secs_f64());
    let complete = page.as_ref().is_ok_and(|p| {
        p.len() < limit && p.iter().map(|m| m.body.len()).sum::<usize>() < max_bytes
    });
    (page, complete, charge)
}
