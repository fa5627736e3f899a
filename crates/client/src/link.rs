//! The connection engine: connecting with the profile's trust settings and pins, waiting for a
//! reply while handling whatever else arrives, and the entry points a UI drives
//! ([`Client::next_events`], [`Client::sync`]).
//!
//! ```text
//!   connect ─▶ TLS roots + pinned relay id and TLS key (refused if changed) ─▶ AuthOk
//!           ─▶ first connection: pin the id and key (trust on first use)
//!   call(request) ─▶ loop relay.next_event():
//!        reply to it ─▶ return            Deliver ─▶ receive (one tx) ─▶ queue Ack
//!        PrekeysLow ─▶ top-up due         Drained ─▶ Event::Synced     anything else ─▶ ignored
//! ```
//!
//! Nothing the relay sends is buffered while a request waits: deliveries are stored and
//! acknowledged as they come, so a long backlog on a slow link cannot pile up in memory or starve
//! a send. The connection (not a request) times out when nothing arrives for the transport's
//! progress deadline with something outstanding.

use std::time::Duration;

use rand_core::Rng;
use serde::{Deserialize, Serialize};
use sotto_transport::{
    ClientError, ConnectOptions, Event as RelayEvent, KeyPin, Outcome, RelayClient, RequestId,
    Session, SessionError, TrustRoots,
};
use sotto_wire::RelayId;

use crate::Error;
use crate::client::{Client, Event};

const BACKOFF_MIN_MS: u64 = 500;
const BACKOFF_MAX_MS: u64 = 60_000;

/// Which CAs a `wss://` relay's certificate must chain to, as stored in the profile.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Roots {
    /// Mozilla's roots (compiled in).
    #[default]
    Webpki,
    /// The operating system's store.
    System,
    /// A self-hosted CA (PEM, kept in the sealed account so the file may move).
    CaPem(String),
}

impl Roots {
    fn to_transport(&self) -> TrustRoots {
        match self {
            Self::Webpki => TrustRoots::WebPki,
            Self::System => TrustRoots::System,
            Self::CaPem(p) => TrustRoots::CaPem(p.as_bytes().to_vec()),
        }
    }

    pub(crate) fn from_transport(r: &TrustRoots) -> Result<Self, Error> {
        Ok(match r {
            TrustRoots::WebPki => Self::Webpki,
            TrustRoots::System => Self::System,
            TrustRoots::CaPem(p) => {
                // Checked now, so a bad file is refused at `register`, not at every connection.
                sotto_transport::tls::ca_store(p).map_err(|e| Error::Tls(e.to_string()))?;
                Self::CaPem(
                    String::from_utf8(p.clone())
                        .map_err(|_| Error::Tls("the CA file is not PEM text".into()))?,
                )
            }
            _ => Self::Webpki,
        })
    }
}

/// What the profile trusts about its relay: the roots for TLS, and the id and TLS key pinned on
/// the first successful connection.
#[derive(Serialize, Deserialize, Clone, Default)]
pub(crate) struct RelayTrust {
    #[serde(default)]
    pub(crate) roots: Roots,
    /// The relay id (hex), pinned on first use.
    #[serde(default)]
    pub(crate) relay_id: Option<String>,
    /// SHA-256 of the relay certificate's public key (hex), pinned on first use (`wss://`).
    #[serde(default)]
    pub(crate) tls_key: Option<String>,
}

fn parse32(h: &Option<String>) -> Option<[u8; 32]> {
    let b = hex::decode(h.as_deref()?).ok()?;
    b.try_into().ok()
}

impl RelayTrust {
    fn options(&self) -> ConnectOptions {
        ConnectOptions {
            roots: self.roots.to_transport(),
            relay_id: parse32(&self.relay_id).map(RelayId),
            tls_key: parse32(&self.tls_key).map(KeyPin),
            ..ConnectOptions::default()
        }
    }
}

/// The relay's identity as pinned or as presented: its id and (for `wss://`) its TLS key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelayPins {
    /// The relay id, hex.
    pub relay_id: Option<String>,
    /// SHA-256 of its TLS certificate's public key, hex (`wss://` only).
    pub tls_key: Option<String>,
}

fn prefix(h: &[u8; 32]) -> String {
    hex::encode(&h[..8])
}

/// Maps a transport error to the client's, dropping the connection when it is gone.
fn relay_error(e: ClientError) -> Error {
    match e {
        ClientError::Rejected(e) => Error::Rejected(e.code),
        ClientError::RelayIdChanged { pinned, presented } => Error::RelayChanged {
            what: "id",
            pinned: prefix(&pinned.0),
            presented: prefix(&presented.0),
        },
        ClientError::CertificateChanged { pinned, presented } => Error::RelayChanged {
            what: "TLS key",
            pinned: prefix(&pinned.0),
            presented: prefix(&presented.0),
        },
        e @ (ClientError::Tls(_) | ClientError::CaFile(_)) => Error::Tls(e.to_string()),
        ClientError::Url(u) => Error::Unreachable(format!("invalid relay URL: {u}")),
        ClientError::Fatal(code) if !e.is_connection() => Error::Rejected(code),
        e => Error::Unreachable(e.to_string()),
    }
}

impl Client {
    /// The relay's pinned id and TLS key (none before the first connection).
    pub fn relay_pins(&self) -> RelayPins {
        RelayPins {
            relay_id: self.account.trust.relay_id.clone(),
            tls_key: self.account.trust.tls_key.clone(),
        }
    }

    /// Connects and authenticates if not connected (refusing a relay whose id or TLS key differs
    /// from the pinned ones, pinning them on the first connection); then rotates the signed
    /// prekey when due and tops up one-time prekeys when low. Does not send the outbox.
    pub async fn connect(&mut self) -> Result<Vec<Event>, Error> {
        if self.relay.is_some() {
            return Ok(vec![]);
        }
        let mut events = self.connect_only().await?;
        events.extend(self.rotate_if_due().await?);
        events.extend(self.upkeep().await?);
        events.append(&mut self.pending);
        Ok(events)
    }

    /// Connects and authenticates (with the pins; pinning on first use), nothing else.
    pub(crate) async fn connect_only(&mut self) -> Result<Vec<Event>, Error> {
        let url = self.account.relay.clone().ok_or(Error::NotRegistered)?;
        let opts = self.account.trust.options();
        let invite = self.pending_invite.take();
        let relay = match RelayClient::connect_with(&url, &self.identity, invite, &opts).await {
            Ok(c) => c,
            Err(e) => {
                let e = relay_error(e);
                if e.is_connection() {
                    self.failures = self.failures.saturating_add(1);
                }
                return Err(e);
            }
        };
        // Trust on first use: the first connection pins the id, and the first TLS connection
        // the key (a profile may have met its relay over ws:// on loopback first).
        let mut pinned = false;
        if self.account.trust.relay_id.is_none() {
            self.account.trust.relay_id = Some(hex::encode(relay.relay_id().0));
            pinned = true;
        }
        if self.account.trust.tls_key.is_none()
            && let Some(k) = relay.tls_key()
        {
            self.account.trust.tls_key = Some(k.to_hex());
            pinned = true;
        }
        if pinned {
            self.save_prekeys_and_account()?;
        }
        let counts = relay.prekey_counts();
        self.relay = Some(relay);
        self.failures = 0;
        self.drained = false;
        if counts.x25519 < crate::upkeep::PREKEY_LOW || counts.kem < crate::upkeep::PREKEY_LOW {
            self.prekeys_due = true;
        }
        Ok(vec![Event::Connected])
    }

    /// Connects to the registered relay without the pins, shows what it presents, and pins
    /// that: for when the relay's operator confirmed a new id or certificate key. Returns the
    /// old and the new pins.
    pub async fn trust_relay(&mut self) -> Result<(RelayPins, RelayPins), Error> {
        let old = self.relay_pins();
        self.disconnect().await;
        self.account.trust.relay_id = None;
        self.account.trust.tls_key = None;
        let r = self.connect().await;
        if let Err(e) = r {
            // Nothing new was pinned: put the old pins back.
            self.account.trust.relay_id = old.relay_id.clone();
            self.account.trust.tls_key = old.tls_key.clone();
            self.save_prekeys_and_account()?;
            return Err(e);
        }
        self.disconnect().await;
        Ok((old, self.relay_pins()))
    }

    /// The delay before the next reconnection attempt: exponential backoff from 0.5 s doubling
    /// to 60 s, with ±50% random jitter.
    pub fn backoff(&mut self) -> Duration {
        let exp = self.failures.min(8);
        let base = (BACKOFF_MIN_MS << exp).min(BACKOFF_MAX_MS);
        let jitter = self.store.rng.next_u64() % (base + 1);
        Duration::from_millis(base / 2 + jitter)
    }

    /// Closes the relay connection (after writing the acknowledgements still queued).
    pub async fn disconnect(&mut self) {
        if let Some(r) = self.relay.take() {
            r.close().await;
        }
    }

    /// Starts a request with `start` and waits for its reply, handling every other event as it
    /// arrives (the events it causes are kept for the caller in `self.pending`).
    pub(crate) async fn call(
        &mut self,
        start: impl FnOnce(&mut Session) -> Result<RequestId, SessionError>,
    ) -> Result<Outcome, Error> {
        let relay = self.relay.as_mut().ok_or(Error::NotRegistered)?;
        let id = start(relay.session_mut()).map_err(|e| self.lost(e.into()))?;
        loop {
            let ev = self.next_relay_event().await?;
            match ev {
                RelayEvent::Reply { id: got, outcome } if got == id => return Ok(outcome),
                other => {
                    let mut evs = self.handle_relay_event(other)?;
                    self.pending.append(&mut evs);
                }
            }
        }
    }

    fn lost(&mut self, e: ClientError) -> Error {
        let e = relay_error(e);
        if e.is_connection() {
            self.relay = None;
        }
        e
    }

    async fn next_relay_event(&mut self) -> Result<RelayEvent, Error> {
        let relay = self.relay.as_mut().ok_or(Error::NotRegistered)?;
        match relay.next_event().await {
            Ok(ev) => Ok(ev),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Handles one event that answers no waiting request. Only local work: never waits.
    fn handle_relay_event(&mut self, ev: RelayEvent) -> Result<Vec<Event>, Error> {
        match ev {
            RelayEvent::Deliver(d) => {
                let id = d.delivery_id;
                let events = self.receive(&d)?;
                // Acknowledged only after the delivery's effects are committed.
                if let Some(relay) = self.relay.as_mut() {
                    relay
                        .session_mut()
                        .ack(vec![id])
                        .map_err(|e| Error::Unreachable(e.to_string()))?;
                }
                Ok(events)
            }
            RelayEvent::PrekeysLow(_) => {
                // The counts in the notice may be stale by now: the top-up asks for fresh ones.
                self.prekeys_due = true;
                Ok(vec![])
            }
            RelayEvent::Drained => {
                self.drained = true;
                Ok(vec![Event::Synced])
            }
            _ => Ok(vec![]),
        }
    }

    /// Connects, sends the outbox, and receives everything the relay holds (until it says
    /// `Drained`), then sends the receipts that caused. Returns what happened.
    pub async fn sync(&mut self) -> Result<Vec<Event>, Error> {
        let mut events = self.connect().await?;
        events.extend(self.flush().await?);
        while !self.drained {
            let ev = self.next_relay_event().await?;
            events.extend(self.handle_relay_event(ev)?);
        }
        events.extend(self.flush().await?);
        events.extend(self.upkeep().await?);
        events.append(&mut self.pending);
        if !events.iter().any(|e| matches!(e, Event::Synced)) {
            events.push(Event::Synced);
        }
        Ok(events)
    }

    /// Waits for the next event from the relay (connecting first if needed) and handles it,
    /// then sends what it caused (receipts, the outbox) and tops up prekeys when due. Safe to
    /// cancel in a `tokio::select!` loop: what was received is committed before its event is
    /// returned, and an interrupted send is redone from the outbox. On a connection error, wait
    /// [`Client::backoff`] and call again. Relay refusals never end it: they are handled (a
    /// message fails, or waits in the outbox to be retried).
    pub async fn next_events(&mut self) -> Result<Vec<Event>, Error> {
        let mut events = std::mem::take(&mut self.pending);
        if self.relay.is_none() {
            events.extend(self.connect().await?);
            events.extend(self.flush().await?);
            return Ok(events);
        }
        if events.is_empty() {
            let ev = self.next_relay_event().await?;
            events.extend(self.handle_relay_event(ev)?);
        }
        events.extend(self.flush().await?);
        events.extend(self.upkeep().await?);
        events.append(&mut self.pending);
        Ok(events)
    }
}
