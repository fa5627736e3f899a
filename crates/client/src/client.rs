//! [`Client`]: the profile, contacts, sessions, outbox and the relay connection.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::Rng;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sotto_protocol::{
    Envelope, IdentityKey, IdentityKeyPair, KemPrekeyPublic, OneTimePrekeyPublic, PrekeyBundle,
    PrekeyStore, SafetyNumber, Session, SignedPrekeyPublic,
};
use sotto_transport::{ClientError, Outcome, RelayClient};
use sotto_wire::{BundleIn, DeliverIn, ErrorCode, MessageId, SendOut};
use zeroize::Zeroizing;

use crate::Error;
use crate::invite::Invite;
use crate::payload::Payload;
use crate::seal::KdfParams;
use crate::store::Store;

#[path = "group.rs"]
pub(crate) mod group;

/// The signed prekey (and last-resort ML-KEM prekey) is replaced when older than this.
pub const SIGNED_PREKEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// For the group code's own waits (`flush_group_entry`); everything else waits on the
/// connection's progress, not per request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default profile directory: `$XDG_DATA_HOME/sotto/profile`, else
/// `~/.local/share/sotto/profile`.
pub fn default_profile_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("sotto").join("profile")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex_id(id: &[u8; 16]) -> String {
    hex::encode(id)
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Account {
    pub(crate) relay: Option<String>,
    pub(crate) signed_prekey_rotated_ms: u64,
    /// A rotated signed prekey not yet accepted by the relay (publish it before rotating again).
    #[serde(default)]
    pub(crate) signed_prekey_unpublished: bool,
    /// TLS roots and the relay's pinned id and key.
    #[serde(default)]
    pub(crate) trust: crate::link::RelayTrust,
}

/// How to register (see [`Client::register_with`]).
#[derive(Clone, Debug, Default)]
pub struct RegisterOptions<'a> {
    /// An invite token for an invite-only relay (`sotto relay invite`).
    pub invite: Option<&'a str>,
    /// The CAs a `wss://` relay's certificate must chain to (default: Mozilla's roots; kept
    /// when registering again with the same relay).
    pub roots: Option<sotto_transport::TrustRoots>,
    /// Forget the pinned relay id and TLS key first (the operator confirmed a change).
    pub accept_new_relay_key: bool,
}

/// A contact and its verification state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The local name.
    pub name: String,
    /// The identity key (hex).
    pub identity: String,
    /// The identity fingerprint, for display.
    pub fingerprint: String,
    /// The relay from their invite.
    pub relay: String,
    /// Whether the safety number was compared and confirmed.
    pub verified: bool,
    /// The identity key changed since the contact was added or last verified.
    pub key_changed: bool,
    /// The key changed after the contact was verified: sending is refused until re-verified
    /// (or `accept_new_key`).
    pub blocked: bool,
    /// Created automatically for a message from an identity that was not a contact.
    pub unknown: bool,
}

impl Contact {
    fn identity_key(&self) -> Result<IdentityKey, Error> {
        let bytes = hex::decode(&self.identity).map_err(|_| Error::Corrupt("contact key"))?;
        IdentityKey::from_slice(&bytes).map_err(|_| Error::Corrupt("contact key"))
    }
}

/// Which way a message went.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received.
    In,
    /// Sent by us.
    Out,
}

/// Where a message is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Composed, waiting in the outbox.
    Queued,
    /// Stored by the relay.
    Accepted,
    /// The recipient's client confirmed it (encrypted receipt).
    Delivered,
    /// An incoming message, decrypted and stored.
    Received,
    /// Could not be sent, or an incoming message that could not be decrypted (see `error`).
    Failed,
}

/// One entry of the history.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id (hex).
    pub id: String,
    /// The contact's local name (filled in when read).
    #[serde(default)]
    pub contact: String,
    /// In or out.
    pub direction: Direction,
    /// When it was composed (as claimed by the sender, for incoming messages).
    pub sent_ms: u64,
    /// When we stored it (incoming) or `None`.
    pub received_ms: Option<u64>,
    /// The delivery state.
    pub state: DeliveryState,
    /// The text; `None` for a failed incoming message (never shown as text).
    pub text: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Whether `recv` already showed it.
    #[serde(default)]
    pub seen: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("state", &self.state)
            .field("text", &self.text.as_ref().map(|_| "***"))
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// Something that happened, for a UI to show.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Connected and authenticated to the relay.
    Connected,
    /// The relay sent everything it held for us.
    Synced,
    /// A message arrived (or failed to decrypt: `state` is `failed`).
    Message(Message),
    /// One of our messages changed state.
    Delivery {
        /// The contact name.
        contact: String,
        /// The message id (hex).
        id: String,
        /// The new state.
        state: DeliveryState,
    },
    /// A message came from an identity that is not a contact; it was filed under `contact`.
    UnknownSender {
        /// The generated contact name.
        contact: String,
    },
    /// One-time prekeys were uploaded.
    PrekeysReplenished {
        /// X25519 prekeys added.
        x25519: u32,
        /// ML-KEM prekeys added.
        kem: u32,
    },
    /// The signed prekey was rotated.
    SignedPrekeyRotated,
    /// A group message arrived (or could not be decrypted: `state` is `failed`).
    GroupMessage(group::GroupMessage),
    /// A group's verified roster changed (or we joined, left or were removed).
    GroupChanged {
        /// The group's local name.
        group: String,
        /// The new roster epoch.
        epoch: u64,
        /// What happened, e.g. "bob was removed".
        change: String,
    },
    /// Something about a group was refused: a relay-injected sender, a forged or conflicting
    /// roster change, a sender key for another roster.
    GroupWarning {
        /// The group's local name (empty if unknown).
        group: String,
        /// What was refused.
        warning: String,
    },
    /// Someone who is not a verified contact invited us to a group: held until accepted
    /// (`group_accept`) or declined; nothing was created or sent for it.
    GroupInvite {
        /// The name the group will have here.
        group: String,
        /// Who invited us.
        inviter: String,
        /// How many members the signed roster lists, us included.
        members: usize,
    },
}

/// What `add_contact` did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddOutcome {
    /// A new contact.
    Added,
    /// Same name, same key: nothing changed.
    Unchanged,
    /// An auto-created "unknown" contact got its name.
    Named,
    /// The name existed with a different identity key: the key was replaced and the contact
    /// marked unverified; `blocked` when it had been verified.
    KeyChanged {
        /// Sending is refused until re-verified.
        blocked: bool,
    },
}

#[derive(Serialize, Deserialize)]
enum OutboxBody {
    /// Plaintext payload not yet encrypted (no session yet, or not yet reached).
    Pending(Vec<u8>),
    /// The encrypted envelope; the session state that produced it is already on disk.
    Ready(Vec<u8>),
    /// A group message, encrypted once, for the relay to fan out (`SendMulti`).
    Group {
        /// The group id.
        group: [u8; 16],
        /// The members it goes to.
        recipients: Vec<[u8; 32]>,
        /// The group message.
        body: Vec<u8>,
    },
}

#[derive(Serialize, Deserialize)]
struct OutboxEntry {
    contact: i64,
    message_id: [u8; 16],
    message_row: Option<i64>,
    body: OutboxBody,
}

impl Drop for OutboxEntry {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match &mut self.body {
            OutboxBody::Pending(v) | OutboxBody::Ready(v) => v.zeroize(),
            OutboxBody::Group { .. } => {}
        }
    }
}

/// Reads the identity key pair and the prekey store out of an open profile.
pub(crate) fn read_keys(store: &Store) -> Result<(IdentityKeyPair, PrekeyStore), Error> {
    let seed = store
        .kv_get("identity")?
        .ok_or(Error::Corrupt("identity missing"))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt("identity malformed"))?;
    let seed = Zeroizing::new(seed);
    let identity = IdentityKeyPair::from_seed(&seed);
    let prekeys = PrekeyStore::restore(
        &store
            .kv_get("prekeys")?
            .ok_or(Error::Corrupt("prekeys missing"))?,
    )
    .map_err(|_| Error::Corrupt("prekeys malformed"))?;
    Ok((identity, prekeys))
}

/// The client: an open profile and, when online, an authenticated relay connection.
pub struct Client {
    dir: PathBuf,
    pub(crate) store: Store,
    pub(crate) identity: IdentityKeyPair,
    pub(crate) prekeys: PrekeyStore,
    pub(crate) account: Account,
    pub(crate) relay: Option<RelayClient>,
    pub(crate) failures: u32,
    /// Events caused while a request waited for its reply, for the next caller.
    pub(crate) pending: Vec<Event>,
    /// A one-time prekey top-up is due (from `AuthOk` or `PrekeysLow`).
    pub(crate) prekeys_due: bool,
    /// The relay said `Drained` on this connection.
    pub(crate) drained: bool,
    crash_after_persist: bool,
    /// An invite token for an invite-only relay, used by the next connection.
    pub(crate) pending_invite: Option<Vec<u8>>,
    /// Decoded group states of recently read or written rows (see [`group::GroupCache`]).
    group_cache: group::GroupCache,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("dir", &self.dir)
            .field("identity", &self.identity.public())
            .field("connected", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

type SessionRow = (i64, Session);

enum Decrypted {
    Ok {
        plaintext: Zeroizing<Vec<u8>>,
        session: Box<Session>,
        row: Option<i64>,
        /// The prekey store with the one-time prekeys this initial message used removed:
        /// applied only once the session and the message are committed, so a failed commit
        /// leaves the keys (and the message, redelivered) decryptable.
        prekeys: Option<Box<PrekeyStore>>,
    },
    Failed(String),
}

impl Client {
    /// Creates a new profile in `dir` with a fresh identity.
    pub fn init(dir: &Path, passphrase: &[u8], params: KdfParams) -> Result<Self, Error> {
        let mut store = Store::create(dir, passphrase, params)?;
        let identity = IdentityKeyPair::generate(&mut store.rng);
        let mut prekeys = PrekeyStore::new();
        prekeys.rotate_signed_prekey(&mut store.rng, &identity);
        prekeys.rotate_last_resort_kem_prekey(&mut store.rng, &identity);
        let account = Account {
            signed_prekey_rotated_ms: now_ms(),
            ..Account::default()
        };
        let mut client = Self {
            dir: dir.to_owned(),
            store,
            identity,
            prekeys,
            account,
            relay: None,
            failures: 0,
            pending: Vec::new(),
            prekeys_due: false,
            drained: false,
            crash_after_persist: false,
            pending_invite: None,
            group_cache: group::GroupCache::default(),
        };
        let seed = client.identity.to_seed();
        let sealed_id = client
            .store
            .key
            .seal(&mut client.store.rng, "identity", seed.as_ref())?;
        let tx = client.store.conn.transaction()?;
        Store::kv_put_tx(&tx, "identity", &sealed_id)?;
        tx.commit()?;
        client.save_prekeys_and_account()?;
        Ok(client)
    }

    /// Opens the profile in `dir`. A wrong passphrase is [`Error::WrongPassphrase`].
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, Error> {
        let store = Store::open(dir, passphrase)?;
        let (identity, prekeys) = read_keys(&store)?;
        let account: Account = match store.kv_get("account")? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|_| Error::Corrupt("account malformed"))?
            }
            None => Account::default(),
        };
        Ok(Self {
            dir: dir.to_owned(),
            store,
            identity,
            prekeys,
            account,
            relay: None,
            failures: 0,
            pending: Vec::new(),
            prekeys_due: false,
            drained: false,
            crash_after_persist: false,
            pending_invite: None,
            group_cache: group::GroupCache::default(),
        })
    }

    /// Test hook: make the next send stop with [`Error::TestCrash`] right after the session
    /// state and ciphertext are committed, before anything goes to the relay.
    #[doc(hidden)]
    pub fn set_crash_after_persist(&mut self, on: bool) {
        self.crash_after_persist = on;
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Our identity key.
    pub fn identity(&self) -> IdentityKey {
        self.identity.public()
    }

    /// The relay URL we registered with.
    pub fn relay_url(&self) -> Option<&str> {
        self.account.relay.as_deref()
    }

    /// Whether a relay connection is open.
    pub fn is_connected(&self) -> bool {
        self.relay.is_some()
    }

    pub(crate) fn save_prekeys_and_account(&mut self) -> Result<(), Error> {
        let snap = self.prekeys.snapshot();
        let sealed_pk = self.store.key.seal(&mut self.store.rng, "prekeys", &snap)?;
        let acc = serde_json::to_vec(&self.account).map_err(|_| Error::Corrupt("account"))?;
        let sealed_acc = self.store.key.seal(&mut self.store.rng, "account", &acc)?;
        let tx = self.store.conn.transaction()?;
        Store::kv_put_tx(&tx, "prekeys", &sealed_pk)?;
        Store::kv_put_tx(&tx, "account", &sealed_acc)?;
        tx.commit()?;
        Ok(())
    }

    // ---------------------------------------------------------------- relay account

    /// Sets the relay, connects, and uploads a full set of prekeys.
    pub async fn register(&mut self, url: &str) -> Result<Vec<Event>, Error> {
        self.register_with(url, RegisterOptions::default()).await
    }

    /// [`Client::register`] on an invite-only relay, with the token its operator created
    /// (`sotto relay invite`).
    pub async fn register_with_invite(
        &mut self,
        url: &str,
        invite: Option<&str>,
    ) -> Result<Vec<Event>, Error> {
        self.register_with(
            url,
            RegisterOptions {
                invite,
                ..RegisterOptions::default()
            },
        )
        .await
    }

    /// Registers with the relay at `url` (`ws://` or `wss://`): connects (pinning the relay's
    /// id and TLS key on first use; a new URL starts a new pin), then publishes prekeys.
    /// Registering again with the same relay keeps its pins unless
    /// [`RegisterOptions::accept_new_relay_key`].
    pub async fn register_with(
        &mut self,
        url: &str,
        opts: RegisterOptions<'_>,
    ) -> Result<Vec<Event>, Error> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(Error::Unreachable(
                "relay URL must start with ws:// or wss://".into(),
            ));
        }
        self.disconnect().await;
        self.pending_invite = opts.invite.map(|t| t.as_bytes().to_vec());
        let same_relay = self.account.relay.as_deref() == Some(url);
        if !same_relay || opts.accept_new_relay_key {
            self.account.trust.relay_id = None;
            self.account.trust.tls_key = None;
        }
        if let Some(roots) = &opts.roots {
            self.account.trust.roots = crate::link::Roots::from_transport(roots)?;
        } else if !same_relay {
            self.account.trust.roots = crate::link::Roots::default();
        }
        self.account.relay = Some(url.to_owned());
        self.save_prekeys_and_account()?;
        let mut events = self.connect_only().await?;
        events.extend(self.publish_all().await?);
        Ok(events)
    }

    /// For the group code: a waited request's result (a timeout drops the connection).
    fn relay_result<T>(
        &mut self,
        r: Result<Result<T, ClientError>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(ClientError::Rejected(e))) => Err(Error::Rejected(e.code)),
            Ok(Err(e)) => {
                self.relay = None;
                Err(Error::Unreachable(e.to_string()))
            }
            Err(_) => {
                self.relay = None;
                Err(Error::Unreachable("timed out".into()))
            }
        }
    }

    // ---------------------------------------------------------------- contacts

    /// All contacts, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, Error> {
        let mut v: Vec<Contact> = self.contact_rows()?.into_iter().map(|(_, c)| c).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    fn contact_rows(&self) -> Result<Vec<(i64, Contact)>, Error> {
        let mut st = self
            .store
            .conn
            .prepare("SELECT id, sealed FROM contacts ORDER BY id")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, s)| Ok((id, self.store.open_json("contact", &s)?)))
            .collect()
    }

    pub(crate) fn contact_by_name(&self, name: &str) -> Result<(i64, Contact), Error> {
        self.contact_rows()?
            .into_iter()
            .find(|(_, c)| c.name == name)
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))
    }

    fn contact_by_identity(&self, key: &IdentityKey) -> Result<Option<(i64, Contact)>, Error> {
        let hex = hex::encode(key.as_bytes());
        Ok(self
            .contact_rows()?
            .into_iter()
            .find(|(_, c)| c.identity == hex))
    }

    fn contact_name(&self, id: i64) -> Result<String, Error> {
        Ok(self
            .contact_rows()?
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, c)| c.name)
            .unwrap_or_default())
    }

    fn put_contact(&mut self, id: Option<i64>, c: &Contact) -> Result<i64, Error> {
        let sealed = self.store.seal_json("contact", c)?;
        match id {
            Some(id) => {
                self.store.conn.execute(
                    "UPDATE contacts SET sealed = ?1 WHERE id = ?2",
                    params![sealed, id],
                )?;
                Ok(id)
            }
            None => {
                self.store
                    .conn
                    .execute("INSERT INTO contacts(sealed) VALUES (?1)", [sealed])?;
                Ok(self.store.conn.last_insert_rowid())
            }
        }
    }

    /// Our invite string.
    pub fn invite(&self) -> Result<String, Error> {
        let relay = self.account.relay.clone().ok_or(Error::NotRegistered)?;
        Ok(Invite {
            identity: self.identity.public(),
            relay,
        }
        .encode()?)
    }

    /// Adds (or updates) a contact from an invite string. A known name with a different key is
    /// a key change: see [`AddOutcome::KeyChanged`].
    pub fn add_contact(&mut self, name: &str, invite: &str) -> Result<AddOutcome, Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::ContactConflict(
                "contact names are 1-64 printable characters".into(),
            ));
        }
        let invite = Invite::decode(invite)?;
        if invite.identity == self.identity.public() {
            return Err(Error::ContactConflict("that is your own invite".into()));
        }
        let rows = self.contact_rows()?;
        let hex_key = hex::encode(invite.identity.as_bytes());
        if let Some((id, mut c)) = rows.iter().find(|(_, c)| c.identity == hex_key).cloned() {
            if c.name == name {
                return Ok(AddOutcome::Unchanged);
            }
            if c.unknown && !rows.iter().any(|(_, o)| o.name == name) {
                c.name = name.to_owned();
                c.unknown = false;
                c.relay = invite.relay;
                self.put_contact(Some(id), &c)?;
                return Ok(AddOutcome::Named);
            }
            return Err(Error::ContactConflict(format!(
                "that identity is already your contact {:?}",
                c.name
            )));
        }
        if let Some((id, mut c)) = rows.into_iter().find(|(_, c)| c.name == name) {
            let blocked = c.verified || c.blocked;
            c.identity = hex_key;
            c.fingerprint = invite.identity.fingerprint();
            c.relay = invite.relay;
            c.verified = false;
            c.key_changed = true;
            c.blocked = blocked;
            c.unknown = false;
            let tx_sealed = self.store.seal_json("contact", &c)?;
            let tx = self.store.conn.transaction()?;
            tx.execute(
                "UPDATE contacts SET sealed = ?1 WHERE id = ?2",
                params![tx_sealed, id],
            )?;
            // Sessions with the old identity can never be used for the new one.
            tx.execute("DELETE FROM sessions WHERE contact = ?1", [id])?;
            tx.commit()?;
            return Ok(AddOutcome::KeyChanged { blocked });
        }
        let c = Contact {
            name: name.to_owned(),
            identity: hex_key,
            fingerprint: invite.identity.fingerprint(),
            relay: invite.relay,
            verified: false,
            key_changed: false,
            blocked: false,
            unknown: false,
        };
        self.put_contact(None, &c)?;
        Ok(AddOutcome::Added)
    }

    /// The safety number with a contact.
    pub fn safety_number(&self, name: &str) -> Result<SafetyNumber, Error> {
        let (_, c) = self.contact_by_name(name)?;
        Ok(SafetyNumber::new(
            &self.identity.public(),
            &c.identity_key()?,
        ))
    }

    /// Marks a contact verified (after the user compared the safety numbers). With `typed`,
    /// only if it matches.
    pub fn verify(&mut self, name: &str, typed: Option<&str>) -> Result<(), Error> {
        let (id, mut c) = self.contact_by_name(name)?;
        if let Some(t) = typed {
            let sn = SafetyNumber::new(&self.identity.public(), &c.identity_key()?);
            if !sn.matches_digits(t) {
                return Err(Error::SafetyNumberMismatch);
            }
        }
        c.verified = true;
        c.key_changed = false;
        c.blocked = false;
        self.put_contact(Some(id), &c)?;
        Ok(())
    }

    /// Marks a contact unverified.
    pub fn unverify(&mut self, name: &str) -> Result<(), Error> {
        let (id, mut c) = self.contact_by_name(name)?;
        c.verified = false;
        self.put_contact(Some(id), &c)?;
        Ok(())
    }

    // ---------------------------------------------------------------- history

    /// The history (all contacts, or one), oldest first.
    pub fn messages(&self, contact: Option<&str>) -> Result<Vec<Message>, Error> {
        let names: std::collections::HashMap<i64, String> = self
            .contact_rows()?
            .into_iter()
            .map(|(i, c)| (i, c.name))
            .collect();
        let filter = match contact {
            Some(n) => Some(
                *names
                    .iter()
                    .find(|(_, v)| v.as_str() == n)
                    .ok_or_else(|| Error::UnknownContact(n.to_owned()))?
                    .0,
            ),
            None => None,
        };
        let mut st = self
            .store
            .conn
            .prepare("SELECT contact, sealed FROM messages ORDER BY id")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for (cid, sealed) in rows {
            if filter.is_some_and(|f| f != cid) {
                continue;
            }
            let mut m: Message = self.store.open_json("message", &sealed)?;
            m.contact = names.get(&cid).cloned().unwrap_or_default();
            out.push(m);
        }
        Ok(out)
    }

    /// Incoming messages not yet marked seen; marks them seen.
    pub fn take_unseen(&mut self) -> Result<Vec<Message>, Error> {
        let mut st = self
            .store
            .conn
            .prepare("SELECT id, contact, sealed FROM messages ORDER BY id")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(st);
        let mut out = Vec::new();
        for (row, cid, sealed) in rows {
            let mut m: Message = self.store.open_json("message", &sealed)?;
            if m.direction == Direction::In && !m.seen {
                m.seen = true;
                let s = self.store.seal_json("message", &m)?;
                self.store.conn.execute(
                    "UPDATE messages SET sealed = ?1 WHERE id = ?2",
                    params![s, row],
                )?;
                m.contact = self.contact_name(cid)?;
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Number of entries waiting in the outbox.
    pub fn outbox_len(&self) -> Result<usize, Error> {
        let n: i64 = self
            .store
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    // ---------------------------------------------------------------- sending

    /// Composes a message to `name` and puts it in the outbox (no network). Refused for a
    /// contact whose key changed after verification unless `accept_new_key`, which clears the
    /// block (the contact stays unverified). Returns the message id (hex).
    pub fn compose(
        &mut self,
        name: &str,
        text: &str,
        accept_new_key: bool,
    ) -> Result<String, Error> {
        let (cid, mut c) = self.contact_by_name(name)?;
        if c.blocked {
            if !accept_new_key {
                return Err(Error::KeyChangeBlocked(c.name));
            }
            c.blocked = false;
            self.put_contact(Some(cid), &c)?;
        }
        if text.is_empty() || text.len() > 60_000 {
            return Err(Error::BadMessage);
        }
        let mut id = [0u8; 16];
        self.store.rng.fill_bytes(&mut id);
        let sent_ms = now_ms();
        let payload = Zeroizing::new(
            Payload::Text {
                id,
                sent_ms,
                text: text.to_owned(),
            }
            .encode(),
        );
        let m = Message {
            id: hex_id(&id),
            contact: String::new(),
            direction: Direction::Out,
            sent_ms,
            received_ms: None,
            state: DeliveryState::Queued,
            text: Some(text.to_owned()),
            error: None,
            seen: true,
        };
        let tag = self.store.key.tag(&[b"msg", c.identity.as_bytes(), &id]);
        let sealed_m = self.store.seal_json("message", &m)?;
        let tx = self.store.conn.transaction()?;
        tx.execute(
            "INSERT INTO messages(contact, tag, sealed) VALUES (?1, ?2, ?3)",
            params![cid, tag, sealed_m],
        )?;
        let row = tx.last_insert_rowid();
        let entry = OutboxEntry {
            contact: cid,
            message_id: id,
            message_row: Some(row),
            body: OutboxBody::Pending(payload.to_vec()),
        };
        let sealed_e = {
            let bytes =
                Zeroizing::new(serde_json::to_vec(&entry).map_err(|_| Error::Corrupt("outbox"))?);
            self.store.key.seal(&mut self.store.rng, "outbox", &bytes)?
        };
        tx.execute("INSERT INTO outbox(sealed) VALUES (?1)", [sealed_e])?;
        tx.commit()?;
        Ok(hex_id(&id))
    }

    fn queue_receipt_tx(
        key: &crate::seal::ProfileKey,
        rng: &mut crate::rng::OsRng,
        tx: &rusqlite::Transaction<'_>,
        contact: i64,
        ids: Vec<[u8; 16]>,
    ) -> Result<(), Error> {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let entry = OutboxEntry {
            contact,
            message_id: id,
            message_row: None,
            body: OutboxBody::Pending(Payload::Receipt(ids).encode()),
        };
        let bytes =
            Zeroizing::new(serde_json::to_vec(&entry).map_err(|_| Error::Corrupt("outbox"))?);
        let sealed = key.seal(rng, "outbox", &bytes)?;
        tx.execute("INSERT INTO outbox(sealed) VALUES (?1)", [sealed])?;
        Ok(())
    }

    fn sessions(&self, contact: i64) -> Result<Vec<SessionRow>, Error> {
        let mut st = self
            .store
            .conn
            .prepare("SELECT id, sealed FROM sessions WHERE contact = ?1 ORDER BY seq DESC")?;
        let rows = st
            .query_map([contact], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, s)| {
                let snap = self.store.key.open("session", &s)?;
                let session =
                    Session::restore(&snap).map_err(|_| Error::Corrupt("session malformed"))?;
                Ok((id, session))
            })
            .collect()
    }

    /// Writes a session inside `tx`: updates `row`, or inserts a new one. `activate` makes it the
    /// one used for sending.
    fn save_session_tx(
        key: &crate::seal::ProfileKey,
        rng: &mut crate::rng::OsRng,
        tx: &rusqlite::Transaction<'_>,
        contact: i64,
        row: Option<i64>,
        session: &Session,
        activate: bool,
    ) -> Result<(), Error> {
        let snap = session.snapshot();
        let sealed = key.seal(rng, "session", &snap)?;
        let next_seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM sessions", [], |r| {
                r.get(0)
            })?;
        match row {
            Some(id) if activate => tx.execute(
                "UPDATE sessions SET sealed = ?1, seq = ?2 WHERE id = ?3",
                params![sealed, next_seq, id],
            )?,
            Some(id) => tx.execute(
                "UPDATE sessions SET sealed = ?1 WHERE id = ?2",
                params![sealed, id],
            )?,
            None => tx.execute(
                "INSERT INTO sessions(contact, seq, sealed) VALUES (?1, ?2, ?3)",
                params![contact, next_seq, sealed],
            )?,
        };
        Ok(())
    }

    async fn fetch_bundle(&mut self, identity: IdentityKey) -> Result<PrekeyBundle, Error> {
        let b: BundleIn = match self.call(|s| s.fetch_bundle(identity)).await? {
            Outcome::Bundle(b) => b,
            Outcome::Rejected(e) => return Err(Error::Rejected(e.code)),
            _ => return Err(Error::Unreachable("unexpected reply to a fetch".into())),
        };
        if b.identity != identity {
            return Err(Error::Handshake(
                "relay returned another identity's bundle".into(),
            ));
        }
        let bad = |_| Error::Handshake("malformed prekey bundle".into());
        let bundle = PrekeyBundle {
            identity,
            signed_prekey: SignedPrekeyPublic::decode(&b.signed_prekey.blob).map_err(bad)?,
            one_time_prekey: b
                .one_time_x25519
                .as_ref()
                .map(|r| OneTimePrekeyPublic::decode(&r.blob))
                .transpose()
                .map_err(bad)?,
            kem_prekey: KemPrekeyPublic::decode(&b.kem.blob).map_err(bad)?,
        };
        bundle
            .verify()
            .map_err(|e| Error::Handshake(e.to_string()))?;
        Ok(bundle)
    }

    fn load_outbox(&self) -> Result<Vec<(i64, OutboxEntry)>, Error> {
        let mut st = self
            .store
            .conn
            .prepare("SELECT id, sealed FROM outbox ORDER BY id")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, s)| Ok((id, self.store.open_json("outbox", &s)?)))
            .collect()
    }

    fn set_message_state(
        &mut self,
        row: i64,
        state: DeliveryState,
        error: Option<String>,
    ) -> Result<Option<Event>, Error> {
        let found: Option<(i64, Vec<u8>)> = self
            .store
            .conn
            .query_row(
                "SELECT contact, sealed FROM messages WHERE id = ?1",
                [row],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((cid, sealed)) = found else {
            return Ok(None);
        };
        let mut m: Message = self.store.open_json("message", &sealed)?;
        // States only move forward (a receipt may overtake the relay's acceptance).
        if m.state >= state && state != DeliveryState::Failed {
            return Ok(None);
        }
        m.state = state;
        m.error = error;
        let s = self.store.seal_json("message", &m)?;
        self.store.conn.execute(
            "UPDATE messages SET sealed = ?1 WHERE id = ?2",
            params![s, row],
        )?;
        Ok(Some(Event::Delivery {
            contact: self.contact_name(cid)?,
            id: m.id,
            state,
        }))
    }

    fn drop_outbox(&mut self, row: i64) -> Result<(), Error> {
        self.store
            .conn
            .execute("DELETE FROM outbox WHERE id = ?1", [row])?;
        Ok(())
    }

    /// Sends the outbox in order: each entry is encrypted (session state and ciphertext
    /// committed together) before it is sent, and removed once the relay accepted it.
    pub async fn flush(&mut self) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        if self.relay.is_none() {
            return Ok(events);
        }
        let mut blocked_contacts = Vec::new();
        // Read (and unseal) the contacts once per flush, not once per entry: a rotation queues
        // one entry per member, and flush runs after every delivery.
        let contacts = self.contact_rows()?;
        for (row, mut entry) in self.load_outbox()? {
            if matches!(entry.body, OutboxBody::Group { .. }) {
                if !self.flush_group_entry(row, &entry).await? {
                    break;
                }
                continue;
            }
            if blocked_contacts.contains(&entry.contact) {
                continue;
            }
            let contact = contacts
                .iter()
                .find(|(i, _)| *i == entry.contact)
                .map(|(_, c)| c.clone());
            let Some(contact) = contact else {
                self.drop_outbox(row)?;
                continue;
            };
            if contact.blocked {
                blocked_contacts.push(entry.contact);
                continue;
            }
            let remote = contact.identity_key()?;
            if let OutboxBody::Pending(payload) = &entry.body {
                let (srow, mut session) = match self.sessions(entry.contact)?.into_iter().next() {
                    Some((r, s)) => (Some(r), s),
                    None => match self.fetch_bundle(remote).await {
                        Ok(bundle) => {
                            let s = Session::initiate(&mut self.store.rng, &self.identity, &bundle)
                                .map_err(|e| Error::Handshake(e.to_string()));
                            match s {
                                Ok(s) => (None, s),
                                Err(e) => {
                                    events.extend(self.fail_entry(row, &entry, e.to_string())?);
                                    continue;
                                }
                            }
                        }
                        Err(Error::Rejected(code)) if code.is_transient() => {
                            // Try again later (rate limited, overloaded); keep the order.
                            blocked_contacts.push(entry.contact);
                            continue;
                        }
                        Err(Error::Rejected(code)) => {
                            events.extend(self.fail_entry(
                                row,
                                &entry,
                                format!("cannot start a session: relay says {code}"),
                            )?);
                            continue;
                        }
                        Err(e @ Error::Handshake(_)) => {
                            events.extend(self.fail_entry(row, &entry, e.to_string())?);
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                };
                let body = match session.encrypt(payload) {
                    Ok(b) => b,
                    Err(e) => {
                        events.extend(self.fail_entry(
                            row,
                            &entry,
                            format!("cannot encrypt: {e}"),
                        )?);
                        continue;
                    }
                };
                entry.body = OutboxBody::Ready(body);
                let bytes = Zeroizing::new(
                    serde_json::to_vec(&entry).map_err(|_| Error::Corrupt("outbox"))?,
                );
                let sealed = self.store.key.seal(&mut self.store.rng, "outbox", &bytes)?;
                // Session state and ciphertext in one transaction, before anything is sent: a
                // crash after this resends the same ciphertext; no message key is used twice.
                let tx = self.store.conn.unchecked_transaction()?;
                Self::save_session_tx(
                    &self.store.key,
                    &mut self.store.rng,
                    &tx,
                    entry.contact,
                    srow,
                    &session,
                    srow.is_none(),
                )?;
                tx.execute(
                    "UPDATE outbox SET sealed = ?1 WHERE id = ?2",
                    params![sealed, row],
                )?;
                tx.commit()?;
                if self.crash_after_persist {
                    return Err(Error::TestCrash);
                }
            }
            let OutboxBody::Ready(body) = &entry.body else {
                continue;
            };
            let out = SendOut {
                recipient: remote,
                message_id: MessageId(entry.message_id),
                body: body.clone(),
            };
            match self.call(|s| s.send(out)).await? {
                Outcome::Accepted(_) => {
                    self.drop_outbox(row)?;
                    if let Some(mrow) = entry.message_row {
                        events.extend(self.set_message_state(
                            mrow,
                            DeliveryState::Accepted,
                            None,
                        )?);
                    }
                }
                Outcome::Rejected(e) if e.code == ErrorCode::RateLimited => {
                    // Our own rate: stop for now, keep the order of everything.
                    break;
                }
                Outcome::Rejected(e) if e.code.is_transient() => {
                    // This recipient's mailbox (or the relay) is full for now: later, in order;
                    // other contacts' messages still go.
                    blocked_contacts.push(entry.contact);
                }
                Outcome::Rejected(e) => {
                    events.extend(self.fail_entry(
                        row,
                        &entry,
                        format!("relay rejected it: {}", e.code),
                    )?);
                }
                _ => return Err(Error::Unreachable("unexpected reply to a send".into())),
            }
        }
        Ok(events)
    }

    fn fail_entry(
        &mut self,
        row: i64,
        entry: &OutboxEntry,
        reason: String,
    ) -> Result<Vec<Event>, Error> {
        self.drop_outbox(row)?;
        Ok(match entry.message_row {
            Some(m) => self
                .set_message_state(m, DeliveryState::Failed, Some(reason))?
                .into_iter()
                .collect(),
            None => vec![],
        })
    }

    // ---------------------------------------------------------------- receiving

    fn decrypt(
        &mut self,
        contact: i64,
        sender: IdentityKey,
        body: &[u8],
    ) -> Result<Decrypted, Error> {
        let envelope = match Envelope::decode(body) {
            Ok(e) => e,
            Err(e) => return Ok(Decrypted::Failed(format!("malformed message: {e}"))),
        };
        let sessions = self.sessions(contact)?;
        match &envelope {
            Envelope::Prekey(p) => {
                if p.keys.identity != sender {
                    return Ok(Decrypted::Failed(
                        "initial message names another identity than its sender".into(),
                    ));
                }
                if let Some((row, mut s)) = sessions
                    .into_iter()
                    .find(|(_, s)| s.base_key() == p.base_key())
                {
                    return Ok(match s.decrypt(&mut self.store.rng, &envelope) {
                        Ok(pt) => Decrypted::Ok {
                            plaintext: Zeroizing::new(pt),
                            session: Box::new(s),
                            row: Some(row),
                            prekeys: None,
                        },
                        Err(e) => Decrypted::Failed(e.to_string()),
                    });
                }
                let mut staged = self.prekeys.clone();
                match Session::respond(&mut self.store.rng, &self.identity, &mut staged, p) {
                    Ok((s, pt)) => Ok(Decrypted::Ok {
                        plaintext: Zeroizing::new(pt),
                        session: Box::new(s),
                        row: None,
                        prekeys: Some(Box::new(staged)),
                    }),
                    Err(e) => Ok(Decrypted::Failed(e.to_string())),
                }
            }
            Envelope::Ratchet(_) => {
                if sessions.is_empty() {
                    return Ok(Decrypted::Failed(
                        "no session with this sender (its first message was lost or is from an old identity)".into(),
                    ));
                }
                let mut last = String::new();
                for (row, mut s) in sessions {
                    match s.decrypt(&mut self.store.rng, &envelope) {
                        Ok(pt) => {
                            return Ok(Decrypted::Ok {
                                plaintext: Zeroizing::new(pt),
                                session: Box::new(s),
                                row: Some(row),
                                prekeys: None,
                            });
                        }
                        Err(e) => {
                            if last.is_empty() {
                                last = e.to_string();
                            }
                        }
                    }
                }
                Ok(Decrypted::Failed(last))
            }
        }
    }

    /// Handles one delivery: everything it changes is one transaction.
    pub(crate) fn receive(&mut self, d: &DeliverIn) -> Result<Vec<Event>, Error> {
        let seen_tag = self
            .store
            .key
            .tag(&[b"seen", d.sender.as_bytes(), &d.message_id.0]);
        let dup: Option<i64> = self
            .store
            .conn
            .query_row("SELECT 1 FROM seen WHERE tag = ?1", [&seen_tag], |r| {
                r.get(0)
            })
            .optional()?;
        if dup.is_some() {
            return Ok(vec![]);
        }
        let mut events = Vec::new();
        let (cid, contact) = match self.contact_by_identity(&d.sender)? {
            Some(c) => c,
            None => {
                let fp: String = d
                    .sender
                    .fingerprint()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(8)
                    .collect();
                let c = Contact {
                    name: format!("unknown-{fp}"),
                    identity: hex::encode(d.sender.as_bytes()),
                    fingerprint: d.sender.fingerprint(),
                    relay: self.account.relay.clone().unwrap_or_default(),
                    verified: false,
                    key_changed: false,
                    blocked: false,
                    unknown: true,
                };
                let id = self.put_contact(None, &c)?;
                events.push(Event::UnknownSender {
                    contact: c.name.clone(),
                });
                (id, c)
            }
        };
        if matches!(
            d.body.first(),
            Some(
                &sotto_protocol::sender_keys::GROUP_MESSAGE_VERSION
                    | &sotto_protocol::sender_keys::LEGACY_GROUP_MESSAGE_VERSION
            )
        ) {
            let fx = self.receive_group_message(d)?;
            let tx = self.store.conn.unchecked_transaction()?;
            tx.execute("INSERT INTO seen(tag) VALUES (?1)", [&seen_tag])?;
            fx.write_tx(&tx)?;
            tx.commit()?;
            events.extend(fx.events);
            return Ok(events);
        }
        let decrypted = self.decrypt(cid, d.sender, &d.body)?;
        let now = now_ms();
        let mut message: Option<Message> = None;
        let mut delivered: Vec<[u8; 16]> = Vec::new();
        let mut session_write = None;
        let mut staged_prekeys = None;
        let mut receipt = None;
        let mut group_fx = None;
        match decrypted {
            Decrypted::Ok {
                plaintext,
                session,
                row,
                prekeys,
            } => {
                session_write = Some((row, session));
                staged_prekeys = prekeys;
                match Payload::decode(&plaintext) {
                    Some(Payload::Text { id, sent_ms, text }) if id == d.message_id.0 => {
                        message = Some(Message {
                            id: hex_id(&id),
                            contact: contact.name.clone(),
                            direction: Direction::In,
                            sent_ms,
                            received_ms: Some(now),
                            state: DeliveryState::Received,
                            text: Some(text),
                            error: None,
                            seen: false,
                        });
                        receipt = Some(vec![id]);
                    }
                    Some(Payload::Receipt(ids)) => delivered = ids,
                    Some(Payload::Group(control)) => {
                        group_fx = Some(self.handle_group_control(&d.sender, &control)?);
                    }
                    Some(Payload::Text { .. }) => {
                        message = Some(failed(
                            d,
                            &contact,
                            now,
                            "message id does not match its envelope",
                        ));
                    }
                    None => {
                        message = Some(failed(d, &contact, now, "unknown or malformed content"));
                    }
                }
            }
            Decrypted::Failed(reason) => {
                message = Some(failed(d, &contact, now, &reason));
            }
        }
        let sealed_msg = message
            .as_ref()
            .map(|m| self.store.seal_json("message", m))
            .transpose()?;
        let pk_sealed = staged_prekeys
            .as_ref()
            .map(|p| {
                self.store
                    .key
                    .seal(&mut self.store.rng, "prekeys", &p.snapshot())
            })
            .transpose()?;
        let tx = self.store.conn.unchecked_transaction()?;
        tx.execute("INSERT INTO seen(tag) VALUES (?1)", [&seen_tag])?;
        if let Some((row, session)) = &session_write {
            Self::save_session_tx(
                &self.store.key,
                &mut self.store.rng,
                &tx,
                cid,
                *row,
                session,
                true,
            )?;
        }
        if let Some(pk) = pk_sealed {
            Store::kv_put_tx(&tx, "prekeys", &pk)?;
        }
        if let Some(sealed) = sealed_msg {
            let tag = self
                .store
                .key
                .tag(&[b"msg", contact.identity.as_bytes(), &d.message_id.0]);
            tx.execute(
                "INSERT OR IGNORE INTO messages(contact, tag, sealed) VALUES (?1, ?2, ?3)",
                params![cid, tag, sealed],
            )?;
        }
        if let Some(ids) = receipt {
            Self::queue_receipt_tx(&self.store.key, &mut self.store.rng, &tx, cid, ids)?;
        }
        if let Some(fx) = &group_fx {
            fx.write_tx(&tx)?;
        }
        tx.commit()?;
        if let Some(p) = staged_prekeys {
            self.prekeys = *p;
        }
        if let Some(fx) = group_fx {
            events.extend(fx.events);
        }
        if let Some(m) = message {
            events.push(Event::Message(m));
        }
        for id in delivered {
            let tag = self
                .store
                .key
                .tag(&[b"msg", contact.identity.as_bytes(), &id]);
            let row: Option<i64> = self
                .store
                .conn
                .query_row("SELECT id FROM messages WHERE tag = ?1", [tag], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(row) = row {
                events.extend(self.set_message_state(row, DeliveryState::Delivered, None)?);
            }
        }
        Ok(events)
    }
}

fn failed(d: &DeliverIn, contact: &Contact, now: u64, reason: &str) -> Message {
    Message {
        id: hex_id(&d.message_id.0),
        contact: contact.name.clone(),
        direction: Direction::In,
        sent_ms: d.timestamp_ms,
        received_ms: Some(now),
        state: DeliveryState::Failed,
        text: None,
        error: Some(reason.to_owned()),
        seen: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// An initial message whose commit fails (the database is locked by another writer) is
    /// not lost: the one-time prekeys it used stay until a commit succeeds, so the relay's
    /// redelivery decrypts.
    #[test]
    fn a_failed_commit_keeps_the_one_time_prekey_for_the_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let mut bob = Client::init(&dir.path().join("b"), b"pw", KdfParams::INSECURE_TEST).unwrap();
        let alice = IdentityKeyPair::from_seed(&[3; 32]);
        let opk = bob
            .prekeys
            .generate_one_time_prekeys(&mut bob.store.rng, 1)
            .remove(0);
        let kem = bob
            .prekeys
            .generate_kem_prekeys(&mut bob.store.rng, &bob.identity, 1)
            .remove(0);
        bob.save_prekeys_and_account().unwrap();
        let invite = Invite {
            identity: alice.public(),
            relay: "ws://127.0.0.1:1/".into(),
        }
        .encode()
        .unwrap();
        // A known contact: nothing is written before the delivery's one transaction.
        bob.add_contact("alice", &invite).unwrap();
        let bundle = PrekeyBundle {
            identity: bob.identity(),
            signed_prekey: bob.prekeys.signed_prekey().unwrap(),
            one_time_prekey: Some(opk),
            kem_prekey: kem,
        };
        let mut rng = crate::rng::OsRng::new().unwrap();
        let mut s = Session::initiate(&mut rng, &alice, &bundle).unwrap();
        let id = [4; 16];
        let body = s
            .encrypt(
                &Payload::Text {
                    id,
                    sent_ms: 1,
                    text: "first words".into(),
                }
                .encode(),
            )
            .unwrap();
        let d = DeliverIn {
            delivery_id: 1,
            sender: alice.public(),
            message_id: MessageId(id),
            timestamp_ms: 1,
            body,
        };
        // Another writer holds the database: Bob's commit fails.
        let other = rusqlite::Connection::open(dir.path().join("b").join(crate::DB_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE;").unwrap();
        bob.store
            .conn
            .busy_timeout(Duration::from_millis(50))
            .unwrap();
        assert!(matches!(bob.receive(&d), Err(Error::Storage(_))));
        other.execute_batch("ROLLBACK;").unwrap();
        // The relay delivers it again (it was never acknowledged).
        let events = bob.receive(&d).unwrap();
        let texts: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some((m.state, m.text.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            vec![(DeliveryState::Received, Some("first words".to_owned()))]
        );
        assert_eq!(
            bob.prekeys.one_time_prekey_count(),
            0,
            "consumed after the commit"
        );
    }

    #[test]
    fn profile_holds_no_plaintext_or_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Client::init(dir.path(), b"pw", KdfParams::INSECURE_TEST).unwrap();
        c.account.relay = Some("ws://127.0.0.1:1/".into());
        c.save_prekeys_and_account().unwrap();
        let other = IdentityKeyPair::from_seed(&[5; 32]);
        let invite = Invite {
            identity: other.public(),
            relay: "ws://127.0.0.1:1/".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(
            c.add_contact("zed-the-contact", &invite).unwrap(),
            AddOutcome::Added
        );
        c.compose("zed-the-contact", "very-secret-plaintext", false)
            .unwrap();
        let seed = c.identity.to_seed();
        let prekey_snapshot = c.prekeys.snapshot();
        drop(c);
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            files.push(std::fs::read(e.unwrap().path()).unwrap());
        }
        for f in &files {
            assert!(!contains(f, b"very-secret-plaintext"));
            assert!(!contains(f, b"zed-the-contact"));
            assert!(!contains(f, seed.as_ref()));
            // Every 32-byte window of the prekey snapshot's secret part.
            for w in prekey_snapshot[5..].chunks(32).filter(|w| w.len() == 32) {
                assert!(!contains(f, w));
            }
        }
        // Reopens with the passphrase; a wrong one is a clean error.
        assert!(matches!(
            Client::open(dir.path(), b"wrong"),
            Err(Error::WrongPassphrase)
        ));
        let c = Client::open(dir.path(), b"pw").unwrap();
        assert_eq!(c.contacts().unwrap()[0].name, "zed-the-contact");
        assert_eq!(c.outbox_len().unwrap(), 1);
        let m = &c.messages(None).unwrap()[0];
        assert_eq!(m.text.as_deref(), Some("very-secret-plaintext"));
        assert!(!format!("{m:?}").contains("very-secret"));
    }
}
