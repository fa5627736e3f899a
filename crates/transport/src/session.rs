//! The relay session as a sans-IO state machine: frames in, frames and events out, time passed
//! in by the caller. No sockets, no clocks, no async (the driver in [`crate::driver`] does I/O).
//!
//! ```text
//!   AwaitChallenge ──Challenge (relay id checked against the pin)──▶ sign, queue Authenticate
//!   AwaitAuthOk ─────AuthOk──────────────────────────────────────────▶ Live { drained: false }
//!   Live ────────────Drained─────────────────────────────────────────▶ Live { drained: true }
//!   any ─────────────fatal Error / timeout / protocol violation──────▶ Closed
//! ```
//!
//! Requests are correlated with replies the way part II of `docs/PROTOCOL.md` lets a client do
//! it: a `Send`/`SendMulti` by its message id (`Accepted(id)` or `Error` with that id as
//! context), a `FetchBundle` by the identity (`Bundle` or `Error` with the identity), an
//! `UploadPrekeys` by the next `PrekeysStored`, a `Ping` by its value, and an `Error` without
//! context by the oldest request that is not a send (the relay answers those in order). Frames
//! that answer nothing in flight (deliveries, notices, stray replies) are events for the caller.
//!
//! Time: the session never times out a request on its own; it times out the *connection* when
//! nothing arrives for [`Timeouts::progress`] while something is outstanding, so a slow link that
//! keeps delivering a long backlog never fails a request waiting behind it. When nothing arrives
//! for [`Timeouts::keepalive`] it queues a `Ping` (reverse proxies close connections that are
//! silent for 60 s), which also makes a dead connection outstanding, hence detected.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_wire::{
    AuthenticateOut, BundleIn, ClientFrame, DeliverIn, ErrorCode, ErrorContext, ErrorIn, MessageId,
    PrekeyCounts, RelayFrame, RelayId, SendMultiOut, SendOut, UploadPrekeysOut,
};

/// At most this many sends may wait for `Accepted` (the relay's default back-pressure point).
pub const MAX_SENDS_IN_FLIGHT: usize = 256;
/// At most this many other requests (fetches, uploads, pings) may wait for their reply.
pub const MAX_OTHERS_IN_FLIGHT: usize = 64;
/// Keepalive ping values have this bit set, so they never collide with a caller's own pings.
const KEEPALIVE_BIT: u64 = 1 << 63;

/// The session's deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From the start to `AuthOk`.
    pub handshake: Duration,
    /// With a request or a keepalive outstanding, the connection fails when no frame arrives for
    /// this long.
    pub progress: Duration,
    /// When no frame arrives for this long, a keepalive `Ping` is sent.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    /// 10 s handshake, 30 s without progress, a keepalive after 20 s of silence (below the 60 s
    /// read timeout of nginx and most load balancers).
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            progress: Duration::from_secs(30),
            keepalive: Duration::from_secs(20),
        }
    }
}

/// Identifies one request for the reply that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// What a reply says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `Accepted`: the send is durably stored.
    Accepted(MessageId),
    /// `PrekeysStored`: the counts after an upload.
    PrekeysStored(PrekeyCounts),
    /// `Bundle`: the fetched identity's bundle.
    Bundle(BundleIn),
    /// `Pong` with the ping's value.
    Pong(u64),
    /// A non-fatal `Error` frame for this request; the connection stays open.
    Rejected(ErrorIn),
}

impl Outcome {
    /// The frame this outcome came from.
    pub fn into_frame(self) -> RelayFrame {
        match self {
            Self::Accepted(id) => RelayFrame::Accepted(id),
            Self::PrekeysStored(c) => RelayFrame::PrekeysStored(c),
            Self::Bundle(b) => RelayFrame::Bundle(b),
            Self::Pong(v) => RelayFrame::Pong(v),
            Self::Rejected(e) => RelayFrame::Error(e),
        }
    }
}

/// Something the relay said that the caller must see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `AuthOk`: authenticated; the counts of our one-time prekeys on the relay.
    Authenticated(PrekeyCounts),
    /// The reply to a request.
    Reply {
        /// Which request.
        id: RequestId,
        /// What the relay said.
        outcome: Outcome,
    },
    /// A message for us; acknowledge it once it is stored.
    Deliver(DeliverIn),
    /// `PrekeysLow`: the relay holds few of our one-time prekeys (the counts may be stale by the
    /// time they are read: ask for fresh ones before topping up).
    PrekeysLow(PrekeyCounts),
    /// Everything stored before we authenticated has been delivered.
    Drained,
    /// A frame that answers no request in flight (a stray reply, a reply to a frame sent with
    /// [`Session::queue_frame`], or a non-fatal error without a matching request).
    Unsolicited(RelayFrame),
}

impl Event {
    /// The frame this event came from.
    pub fn into_frame(self) -> RelayFrame {
        match self {
            Self::Authenticated(c) => RelayFrame::AuthOk(c),
            Self::Reply { outcome, .. } => outcome.into_frame(),
            Self::Deliver(d) => RelayFrame::Deliver(d),
            Self::PrekeysLow(c) => RelayFrame::PrekeysLow(c),
            Self::Drained => RelayFrame::Drained,
            Self::Unsolicited(f) => f,
        }
    }

    /// Bytes of message body this event holds (what a buffer of unhandled events must count).
    pub fn body_len(&self) -> usize {
        match self {
            Self::Deliver(d) => d.body.len(),
            Self::Unsolicited(RelayFrame::Deliver(d)) => d.body.len(),
            _ => 0,
        }
    }
}

/// Why the session ended or refused an action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The relay presented another id than the one pinned for it: nothing was sent to it.
    #[error("the relay's id changed")]
    RelayIdChanged {
        /// The pinned id.
        pinned: RelayId,
        /// The id the relay presented.
        presented: RelayId,
    },
    /// The relay sent a fatal error and closes the connection.
    #[error("the relay closed the session: {0}")]
    Fatal(ErrorCode),
    /// Nothing arrived in time: the handshake took too long, or the connection stalled with
    /// something outstanding.
    #[error("no progress on the relay connection")]
    Timeout,
    /// The relay sent a frame that is not allowed in this state.
    #[error("relay protocol violation: {0}")]
    Protocol(&'static str),
    /// Too many requests wait for a reply; wait for some first.
    #[error("too many requests in flight")]
    Busy,
    /// The session is not live (not yet authenticated, or closed).
    #[error("the relay session is not open")]
    NotLive,
}

enum Phase {
    AwaitChallenge {
        signer: Box<IdentityKeyPair>,
        invite: Option<Vec<u8>>,
    },
    AwaitAuthOk,
    Live {
        drained: bool,
    },
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Bundle(IdentityKey),
    Upload,
    Ping(u64),
}

/// One connection's protocol state.
pub struct Session {
    identity: IdentityKey,
    pinned: Option<RelayId>,
    relay_id: Option<RelayId>,
    counts: PrekeyCounts,
    phase: Phase,
    timeouts: Timeouts,
    started: Instant,
    last_received: Instant,
    transmit: VecDeque<Vec<u8>>,
    sends: Vec<(MessageId, RequestId)>,
    others: VecDeque<(RequestId, Awaiting)>,
    next_request: u64,
    /// Our own keepalive ping in flight (its value).
    keepalive: Option<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("identity", &self.identity)
            .field("relay_id", &self.relay_id)
            .field("live", &self.is_live())
            .field("in_flight", &(self.sends.len() + self.others.len()))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that will authenticate as `keypair` (with `invite` for a new identity on an
    /// invite-only relay), refusing a relay whose id is not `pinned` (when given). `now` starts
    /// the handshake deadline.
    pub fn new(
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
        pinned: Option<RelayId>,
        timeouts: Timeouts,
        now: Instant,
    ) -> Self {
        Self {
            identity: keypair.public(),
            pinned,
            relay_id: None,
            counts: PrekeyCounts::default(),
            phase: Phase::AwaitChallenge {
                signer: Box::new(keypair.clone()),
                invite,
            },
            timeouts,
            started: now,
            last_received: now,
            transmit: VecDeque::new(),
            sends: Vec::new(),
            others: VecDeque::new(),
            next_request: 0,
            keepalive: None,
        }
    }

    /// The identity this session authenticates as.
    pub fn identity(&self) -> IdentityKey {
        self.identity
    }

    /// The relay's id, once its challenge arrived.
    pub fn relay_id(&self) -> Option<RelayId> {
        self.relay_id
    }

    /// Our one-time prekey counts as reported by `AuthOk`.
    pub fn prekey_counts(&self) -> PrekeyCounts {
        self.counts
    }

    /// The deadlines this session keeps.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Whether the session is authenticated and open.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live { .. })
    }

    /// Whether the relay said `Drained` on this connection.
    pub fn is_drained(&self) -> bool {
        matches!(self.phase, Phase::Live { drained: true })
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Number of requests waiting for a reply (keepalives included).
    pub fn in_flight(&self) -> usize {
        self.sends.len() + self.others.len()
    }

    /// The next encoded frame to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Puts a frame back at the front (the driver could not write it yet).
    pub fn unpoll_transmit(&mut self, frame: Vec<u8>) {
        self.transmit.push_front(frame);
    }

    /// Whether frames wait to be written.
    pub fn wants_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.transmit.clear();
        self.sends.clear();
        self.others.clear();
        self.keepalive = None;
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.close();
        e
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn live(&self) -> Result<(), SessionError> {
        if self.is_live() {
            Ok(())
        } else {
            Err(SessionError::NotLive)
        }
    }

    fn queue(&mut self, frame: &ClientFrame) {
        self.transmit.push_back(frame.encode());
    }

    /// Queues a frame without tracking a reply to it (tests and tools that speak the protocol
    /// themselves; replies come back as [`Event::Unsolicited`]).
    pub fn queue_frame(&mut self, frame: &ClientFrame) {
        self.queue(frame);
    }

    fn track_send(&mut self, message_id: MessageId) -> Result<RequestId, SessionError> {
        self.live()?;
        if self.sends.len() >= MAX_SENDS_IN_FLIGHT {
            return Err(SessionError::Busy);
        }
        let id = self.request_id();
        self.sends.push((message_id, id));
        Ok(id)
    }

    fn track_other(&mut self, what: Awaiting) -> Result<RequestId, SessionError> {
        self.live()?;
        if self.others.len() >= MAX_OTHERS_IN_FLIGHT {
            return Err(SessionError::Busy);
        }
        let id = self.request_id();
        self.others.push_back((id, what));
        Ok(id)
    }

    /// Queues a `Send`; its reply is [`Outcome::Accepted`] or [`Outcome::Rejected`].
    pub fn send(&mut self, out: SendOut) -> Result<RequestId, SessionError> {
        let id = self.track_send(out.message_id)?;
        self.queue(&ClientFrame::Send(out));
        Ok(id)
    }

    /// Queues a `SendMulti` (group fan-out); the reply is like a send's.
    pub fn send_multi(&mut self, out: SendMultiOut) -> Result<RequestId, SessionError> {
        let id = self.track_send(out.message_id)?;
        self.queue(&ClientFrame::SendMulti(out));
        Ok(id)
    }

    /// Queues a `FetchBundle`; the reply is [`Outcome::Bundle`] or [`Outcome::Rejected`].
    pub fn fetch_bundle(&mut self, identity: IdentityKey) -> Result<RequestId, SessionError> {
        let id = self.track_other(Awaiting::Bundle(identity))?;
        self.queue(&ClientFrame::FetchBundle(identity));
        Ok(id)
    }

    /// Queues an `UploadPrekeys`; the reply is [`Outcome::PrekeysStored`] (with the counts now
    /// stored: an empty upload asks for them) or [`Outcome::Rejected`] (`PrekeyLimit`).
    pub fn upload_prekeys(&mut self, upload: UploadPrekeysOut) -> Result<RequestId, SessionError> {
        let id = self.track_other(Awaiting::Upload)?;
        self.queue(&ClientFrame::UploadPrekeys(upload));
        Ok(id)
    }

    /// Queues a `Ping`; the reply is [`Outcome::Pong`].
    pub fn ping(&mut self, value: u64) -> Result<RequestId, SessionError> {
        let id = self.track_other(Awaiting::Ping(value & !KEEPALIVE_BIT))?;
        self.queue(&ClientFrame::Ping(value & !KEEPALIVE_BIT));
        Ok(id)
    }

    /// Queues an `Ack` (no reply).
    pub fn ack(&mut self, delivery_ids: Vec<u64>) -> Result<(), SessionError> {
        self.live()?;
        for chunk in delivery_ids.chunks(sotto_wire::MAX_ACKS_PER_FRAME) {
            self.queue(&ClientFrame::Ack(chunk.to_vec()));
        }
        Ok(())
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitChallenge { .. } | Phase::AwaitAuthOk => {
                Some(self.started + self.timeouts.handshake)
            }
            Phase::Live { .. } => {
                if self.in_flight() > 0 {
                    Some(self.last_received + self.timeouts.progress)
                } else {
                    Some(self.last_received + self.timeouts.keepalive)
                }
            }
            Phase::Closed => None,
        }
    }

    /// Advances time: fails a stalled connection, or queues a keepalive.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.phase {
            Phase::AwaitChallenge { .. } | Phase::AwaitAuthOk => {
                if now >= self.started + self.timeouts.handshake {
                    return Err(self.fail(SessionError::Timeout));
                }
            }
            Phase::Live { .. } => {
                if self.in_flight() > 0 {
                    if now >= self.last_received + self.timeouts.progress {
                        return Err(self.fail(SessionError::Timeout));
                    }
                } else if now >= self.last_received + self.timeouts.keepalive {
                    self.next_request += 1;
                    let value = KEEPALIVE_BIT | self.next_request;
                    let id = RequestId(self.next_request);
                    self.others.push_back((id, Awaiting::Ping(value)));
                    self.keepalive = Some(value);
                    self.queue(&ClientFrame::Ping(value));
                }
            }
            Phase::Closed => return Err(SessionError::NotLive),
        }
        Ok(())
    }

    /// Handles one frame from the relay (already decoded). Returns the event it causes for the
    /// caller, if any.
    pub fn handle_frame(
        &mut self,
        frame: RelayFrame,
        now: Instant,
    ) -> Result<Option<Event>, SessionError> {
        self.last_received = now;
        if let RelayFrame::Error(e) = &frame
            && e.code.is_fatal()
        {
            return Err(self.fail(SessionError::Fatal(e.code)));
        }
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Closed => Err(SessionError::NotLive),
            Phase::AwaitChallenge { signer, invite } => match frame {
                RelayFrame::Challenge(ch) => {
                    if let Some(pinned) = self.pinned
                        && pinned != ch.relay_id
                    {
                        return Err(self.fail(SessionError::RelayIdChanged {
                            pinned,
                            presented: ch.relay_id,
                        }));
                    }
                    self.relay_id = Some(ch.relay_id);
                    let auth = AuthenticateOut::sign(&signer, &ch.relay_id, &ch.nonce, invite);
                    self.queue(&ClientFrame::Authenticate(auth));
                    self.phase = Phase::AwaitAuthOk;
                    Ok(None)
                }
                _ => Err(self.fail(SessionError::Protocol("expected a challenge"))),
            },
            Phase::AwaitAuthOk => match frame {
                RelayFrame::AuthOk(counts) => {
                    self.counts = counts;
                    self.phase = Phase::Live { drained: false };
                    Ok(Some(Event::Authenticated(counts)))
                }
                _ => Err(self.fail(SessionError::Protocol("expected AuthOk"))),
            },
            Phase::Live { drained } => {
                self.phase = Phase::Live { drained };
                self.live_frame(frame)
            }
        }
    }

    fn take_send(&mut self, message_id: MessageId) -> Option<RequestId> {
        let i = self.sends.iter().position(|(m, _)| *m == message_id)?;
        Some(self.sends.remove(i).1)
    }

    fn take_other(&mut self, pick: impl Fn(Awaiting) -> bool) -> Option<(RequestId, Awaiting)> {
        let i = self.others.iter().position(|(_, a)| pick(*a))?;
        self.others.remove(i)
    }

    fn reply(&mut self, found: Option<RequestId>, outcome: Outcome) -> Option<Event> {
        match found {
            Some(id) => Some(Event::Reply { id, outcome }),
            None => Some(Event::Unsolicited(outcome.into_frame())),
        }
    }

    fn live_frame(&mut self, frame: RelayFrame) -> Result<Option<Event>, SessionError> {
        Ok(match frame {
            RelayFrame::Deliver(d) => Some(Event::Deliver(d)),
            RelayFrame::PrekeysLow(c) => Some(Event::PrekeysLow(c)),
            RelayFrame::Drained => {
                self.phase = Phase::Live { drained: true };
                Some(Event::Drained)
            }
            RelayFrame::Accepted(m) => {
                let found = self.take_send(m);
                self.reply(found, Outcome::Accepted(m))
            }
            RelayFrame::Bundle(b) => {
                let who = b.identity;
                let found = self
                    .take_other(|a| a == Awaiting::Bundle(who))
                    .map(|(id, _)| id);
                self.reply(found, Outcome::Bundle(b))
            }
            RelayFrame::PrekeysStored(c) => {
                let found = self.take_other(|a| a == Awaiting::Upload).map(|(id, _)| id);
                self.reply(found, Outcome::PrekeysStored(c))
            }
            RelayFrame::Pong(v) => match self.take_other(|a| a == Awaiting::Ping(v)) {
                Some(_) if self.keepalive == Some(v) => {
                    self.keepalive = None;
                    None
                }
                found => self.reply(found.map(|(id, _)| id), Outcome::Pong(v)),
            },
            RelayFrame::Error(e) => {
                let found = match e.context {
                    ErrorContext::Message(m) => self.take_send(m),
                    ErrorContext::Identity(who) => self
                        .take_other(|a| a == Awaiting::Bundle(who))
                        .map(|(id, _)| id),
                    ErrorContext::None => match self.others.pop_front() {
                        Some((_, Awaiting::Ping(v))) if self.keepalive == Some(v) => {
                            // Our keepalive was refused (rate limited): it still made progress.
                            self.keepalive = None;
                            return Ok(None);
                        }
                        other => other.map(|(id, _)| id),
                    },
                };
                self.reply(found, Outcome::Rejected(e))
            }
            RelayFrame::Challenge(_) | RelayFrame::AuthOk(_) => {
                return Err(self.fail(SessionError::Protocol("a second handshake")));
            }
            other => Some(Event::Unsolicited(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_wire::ChallengeIn;

    fn kp(seed: u8) -> IdentityKeyPair {
        IdentityKeyPair::from_seed(&[seed; 32])
    }

    fn challenge(id: u8) -> RelayFrame {
        RelayFrame::Challenge(ChallengeIn {
            relay_id: RelayId([id; 32]),
            nonce: [7; 32],
            max_frame_len: 131072,
            max_body_len: 98304,
        })
    }

    fn live(t0: Instant) -> Session {
        let mut s = Session::new(&kp(1), None, None, Timeouts::default(), t0);
        assert_eq!(s.handle_frame(challenge(9), t0).unwrap(), None);
        let auth = ClientFrame::decode(&s.poll_transmit().unwrap()).unwrap();
        let ClientFrame::Authenticate(a) = auth else {
            panic!("{auth:?}")
        };
        assert!(a.verify(&RelayId([9; 32]), &[7; 32]));
        assert_eq!(
            s.handle_frame(RelayFrame::AuthOk(PrekeyCounts::default()), t0)
                .unwrap(),
            Some(Event::Authenticated(PrekeyCounts::default()))
        );
        s
    }

    #[test]
    fn a_changed_relay_id_is_refused_before_anything_is_signed() {
        let t0 = Instant::now();
        let mut s = Session::new(
            &kp(1),
            None,
            Some(RelayId([1; 32])),
            Timeouts::default(),
            t0,
        );
        let e = s.handle_frame(challenge(2), t0).unwrap_err();
        assert_eq!(
            e,
            SessionError::RelayIdChanged {
                pinned: RelayId([1; 32]),
                presented: RelayId([2; 32])
            }
        );
        assert!(
            s.poll_transmit().is_none(),
            "no Authenticate for an impostor"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn replies_are_matched_by_id_identity_and_order() {
        let t0 = Instant::now();
        let mut s = live(t0);
        let body = |n| SendOut {
            recipient: kp(2).public(),
            message_id: MessageId([n; 16]),
            body: vec![n],
        };
        let a = s.send(body(1)).unwrap();
        let b = s.send(body(2)).unwrap();
        let f = s.fetch_bundle(kp(3).public()).unwrap();
        let u = s.upload_prekeys(UploadPrekeysOut::default()).unwrap();
        assert_eq!(s.in_flight(), 4);
        // Replies out of order for sends; a delivery in between is an event of its own.
        let r = s
            .handle_frame(RelayFrame::Accepted(MessageId([2; 16])), t0)
            .unwrap();
        assert_eq!(
            r,
            Some(Event::Reply {
                id: b,
                outcome: Outcome::Accepted(MessageId([2; 16]))
            })
        );
        let quota = ErrorIn {
            code: ErrorCode::QuotaFull,
            context: ErrorContext::Message(MessageId([1; 16])),
        };
        assert_eq!(
            s.handle_frame(RelayFrame::Error(quota), t0).unwrap(),
            Some(Event::Reply {
                id: a,
                outcome: Outcome::Rejected(quota)
            })
        );
        // A context-free error answers the oldest request that is not a send (the fetch).
        let limited = ErrorIn {
            code: ErrorCode::RateLimited,
            context: ErrorContext::None,
        };
        assert_eq!(
            s.handle_frame(RelayFrame::Error(limited), t0).unwrap(),
            Some(Event::Reply {
                id: f,
                outcome: Outcome::Rejected(limited)
            })
        );
        let counts = PrekeyCounts { x25519: 5, kem: 6 };
        assert_eq!(
            s.handle_frame(RelayFrame::PrekeysStored(counts), t0)
                .unwrap(),
            Some(Event::Reply {
                id: u,
                outcome: Outcome::PrekeysStored(counts)
            })
        );
        assert_eq!(s.in_flight(), 0);
        // Nothing in flight: a stray reply is unsolicited, not a crash.
        assert_eq!(
            s.handle_frame(RelayFrame::Accepted(MessageId([9; 16])), t0)
                .unwrap(),
            Some(Event::Unsolicited(RelayFrame::Accepted(MessageId([9; 16]))))
        );
        // A fatal error closes the session.
        let e = s
            .handle_frame(
                RelayFrame::Error(ErrorIn {
                    code: ErrorCode::Superseded,
                    context: ErrorContext::None,
                }),
                t0,
            )
            .unwrap_err();
        assert_eq!(e, SessionError::Fatal(ErrorCode::Superseded));
        assert!(s.send(body(3)).is_err());
    }

    #[test]
    fn silence_sends_a_keepalive_and_a_stall_times_out_but_progress_never_does() {
        let t0 = Instant::now();
        let t = Timeouts::default();
        let mut s = live(t0);
        // Idle: the deadline is the keepalive.
        assert_eq!(s.poll_timeout(), Some(t0 + t.keepalive));
        s.handle_timeout(t0 + t.keepalive).unwrap();
        let ping = ClientFrame::decode(&s.poll_transmit().unwrap()).unwrap();
        let ClientFrame::Ping(v) = ping else {
            panic!("{ping:?}")
        };
        // The pong is consumed: the caller never sees our keepalive.
        let t1 = t0 + t.keepalive + Duration::from_millis(5);
        assert_eq!(s.handle_frame(RelayFrame::Pong(v), t1).unwrap(), None);
        assert_eq!(s.in_flight(), 0);
        // A request waits behind a long backlog: every delivery is progress, so it never fails,
        // however long the whole backlog takes.
        let id = s
            .send(SendOut {
                recipient: kp(2).public(),
                message_id: MessageId([1; 16]),
                body: vec![1],
            })
            .unwrap();
        let mut now = t1;
        for i in 0..100u64 {
            now += t.progress / 2;
            s.handle_timeout(now).unwrap();
            let d = DeliverIn {
                delivery_id: i,
                sender: kp(3).public(),
                message_id: MessageId([0; 16]),
                timestamp_ms: 0,
                body: vec![0; 10],
            };
            assert!(matches!(
                s.handle_frame(RelayFrame::Deliver(d), now).unwrap(),
                Some(Event::Deliver(_))
            ));
        }
        assert!(now > t1 + t.progress * 40);
        let r = s
            .handle_frame(RelayFrame::Accepted(MessageId([1; 16])), now)
            .unwrap();
        assert!(matches!(r, Some(Event::Reply { id: got, .. }) if got == id));
        // Something outstanding and nothing arriving: the connection fails.
        s.ping(1).unwrap();
        assert_eq!(s.poll_timeout(), Some(now + t.progress));
        s.handle_timeout(now + t.progress - Duration::from_millis(1))
            .unwrap();
        assert_eq!(
            s.handle_timeout(now + t.progress).unwrap_err(),
            SessionError::Timeout
        );
        assert!(s.is_closed());
    }

    #[test]
    fn handshake_deadline_and_bounds() {
        let t0 = Instant::now();
        let t = Timeouts::default();
        let mut s = Session::new(&kp(1), None, None, t, t0);
        assert!(
            s.send_multi(SendMultiOut {
                recipients: vec![kp(2).public()],
                message_id: MessageId([1; 16]),
                body: vec![],
            })
            .is_err()
        );
        assert_eq!(
            s.handle_timeout(t0 + t.handshake).unwrap_err(),
            SessionError::Timeout
        );
        let mut s = live(t0);
        for i in 0..MAX_OTHERS_IN_FLIGHT {
            s.ping(i as u64).unwrap();
        }
        assert_eq!(s.ping(0).unwrap_err(), SessionError::Busy);
        // Frames in the wrong phase are protocol violations.
        let mut s = Session::new(&kp(1), None, None, t, t0);
        assert!(matches!(
            s.handle_frame(RelayFrame::Drained, t0),
            Err(SessionError::Protocol(_))
        ));
    }
}
