//! Group chats: Sender Keys over the pairwise sessions, with a signed roster and key rotation.
//!
//! ```text
//!   group_create ─▶ Roster (owner-signed, id derived from it) ─▶ SenderKeyGroup, sealed in `groups`
//!   group_add    ─▶ signed change ─▶ Invite(name, log) to the new member, Change to the others
//!                   (all pairwise, via the outbox); every member starts a new key before its next
//!                   message (at once after a removal)
//!   group_compose─▶ rotate if due ─▶ encrypt once ─▶ outbox Group entry ─▶ relay SendMulti (0x47)
//!   Deliver 0x07 ─▶ sender on the verified roster? ─▶ decrypt ─▶ `group_messages` + event
//! ```
//!
//! Control messages travel only inside the pairwise Double Ratchet sessions, as the `0x03`
//! payload kind (see `payload.rs`):
//!
//! ```text
//!   Invite        = 0x01 ‖ name_len u8 ‖ name (UTF-8, ≤ 64) ‖ roster log       owner → new member
//!   Change        = 0x02 ‖ roster change [154]                                  signer → every member
//!   SenderKey     = 0x03 ‖ flags u8 ‖ distribution [233] ‖ [roster change [154]] member → every member
//!                   flags bit 0: "send me your current key" (after accepting a held invite);
//!                   the change, when present, is the one that made the distribution's roster
//!   RosterRequest = 0x04 ‖ group_id [16]                                        member → owner
//!   Roster        = 0x05 ‖ roster log                                           owner → member
//! ```
//!
//! Sender keys go only to members of the roster this client verified; a key from someone who is
//! not on it, one that names another member than its pairwise sender, or one for a roster we never
//! had is refused with an [`Event::GroupWarning`], and so is a group message the relay delivers
//! from a non-member. A key for a later roster (it carries the change that made that roster, so a
//! withheld change arrives with it) pauses sending until the roster catches up: the client asks the
//! owner for its log. The owner's log is authoritative when a leave races an owner change; the
//! owner re-issues the leave as a removal.
//!
//! **Consent.** An invite from anyone but a verified contact is held (`group_invites`) until the
//! user accepts it (`group_accept`) or declines it: until then no contact is created and no bundle
//! fetched for the members it lists, and nothing is sent.
//!
//! The state lives in the encrypted profile: `groups` (one sealed binary row per group: name and
//! `SenderKeyGroup` snapshot), `group_messages`, `group_pending` (group messages waiting for a key,
//! one sealed row each, only from roster members, bounded per sender and per group in count and
//! bytes) and `group_invites` (held invites, bounded per inviter and in all). Tables are created
//! on first use.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sotto_protocol::IdentityKey;
use sotto_protocol::group::{
    ChangeOutcome, DistributionError, DistributionOutcome, GroupSession, SenderKeyGroup,
};
use sotto_protocol::roster::{
    Adopted, ROSTER_CHANGE_LEN, Roster, RosterChange, RosterError, RosterOp,
};
use sotto_protocol::sender_keys::{
    DISTRIBUTION_LEN, GROUP_ID_LEN, GroupDecryptError, GroupEncryptError, GroupHeader,
    LEGACY_GROUP_MESSAGE_VERSION, SenderKeyDistribution,
};
use sotto_wire::{DeliverIn, MessageId};
use zeroize::{Zeroize, Zeroizing};

use super::{
    Client, Contact, DeliveryState, Direction, Event, OutboxBody, OutboxEntry, hex_id, now_ms,
};
use crate::Error;
use crate::payload::Payload;

/// Group messages kept while waiting for a key, per group (oldest dropped first).
pub(crate) const MAX_PENDING: usize = 500;
/// Bytes of group messages kept waiting, per group.
pub(crate) const MAX_PENDING_BYTES: usize = 8 << 20;
/// Group messages kept waiting from one sender, per group.
pub(crate) const MAX_PENDING_PER_SENDER: usize = 64;
/// Bytes of group messages kept waiting from one sender, per group.
pub(crate) const MAX_PENDING_BYTES_PER_SENDER: usize = 1 << 20;
/// Invites held for consent, in all.
pub(crate) const MAX_HELD_INVITES: usize = 32;
/// Invites held for consent from one inviter.
pub(crate) const MAX_HELD_INVITES_PER_INVITER: usize = 4;

const INVITE: u8 = 0x01;
const CHANGE: u8 = 0x02;
const SENDER_KEY: u8 = 0x03;
const ROSTER_REQUEST: u8 = 0x04;
const ROSTER: u8 = 0x05;
/// `SenderKey` flag: the sender asks for our current key in return.
const REPLY_WITH_KEY: u8 = 0x01;
/// Version byte of a sealed group row (name and snapshot, binary).
const GROUP_ROW_VERSION: u8 = 0x02;

/// A group as the UI shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// The local name.
    pub name: String,
    /// The group id (hex).
    pub id: String,
    /// The roster epoch (number of changes since creation).
    pub epoch: u64,
    /// Whether we are the owner (only the owner adds and removes).
    pub is_owner: bool,
    /// Whether we are still a member.
    pub active: bool,
    /// Whether sending is paused: another member showed a later roster (a change has not
    /// reached us yet); the owner's roster was requested.
    pub paused: bool,
    /// Group messages waiting for their sender's key.
    pub pending: usize,
    /// The members of the verified roster, the owner first.
    pub members: Vec<GroupMember>,
}

/// One member of a group's verified roster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupMember {
    /// The contact name, "you", or the auto-created contact name for a member who is not a
    /// contact.
    pub name: String,
    /// The identity fingerprint.
    pub fingerprint: String,
    /// Whether this member is us.
    pub is_you: bool,
    /// Whether this member owns the group.
    pub is_owner: bool,
    /// Whether the contact's safety number was verified.
    pub verified: bool,
    /// Whether we hold this member's sender key for the current roster (for us: whether our own
    /// chain is current). Members send a new key before their first message after a roster
    /// change, and at once after a removal or leave.
    pub has_key: bool,
}

/// A group invite held until the user accepts or declines it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupInvite {
    /// The name it will have here (unique among groups and held invites).
    pub name: String,
    /// The group id (hex).
    pub id: String,
    /// Who invited us (contact name, or fingerprint).
    pub inviter: String,
    /// The inviter's fingerprint (the inviter owns the group).
    pub inviter_fingerprint: String,
    /// Whether the inviter is a contact at all.
    pub inviter_known: bool,
    /// Number of members the signed roster lists, us included.
    pub members: usize,
    /// When it arrived.
    pub received_ms: u64,
}

/// One group message of the history.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMessage {
    /// The message id (hex).
    pub id: String,
    /// The group's local name (filled in when read).
    #[serde(default)]
    pub group: String,
    /// The sender's contact name ("you" for ours).
    pub sender: String,
    /// In or out.
    pub direction: Direction,
    /// When it was composed (as claimed by the sender, for incoming messages).
    pub sent_ms: u64,
    /// When we stored it (incoming).
    pub received_ms: Option<u64>,
    /// `queued`/`accepted` (ours), `received` or `failed`.
    pub state: DeliveryState,
    /// The text; `None` when it failed.
    pub text: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether `recv` already showed it.
    #[serde(default)]
    pub seen: bool,
}

impl std::fmt::Debug for GroupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMessage")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("state", &self.state)
            .field("text", &self.text.as_ref().map(|_| "***"))
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A group message waiting for its sender's key: sealed as
/// `sender [32] ‖ message_id [16] ‖ timestamp_ms u64 ‖ body`.
struct Pending {
    sender: IdentityKey,
    message_id: [u8; 16],
    timestamp_ms: u64,
    body: Vec<u8>,
}

impl Pending {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56 + self.body.len());
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = sotto_protocol::codec::Reader::new(b);
        Some(Self {
            sender: IdentityKey::from_bytes(&r.array().ok()?).ok()?,
            message_id: r.array().ok()?,
            timestamp_ms: r.u64().ok()?,
            body: r.rest().to_vec(),
        })
    }
}

/// The legacy (first-release) group row: JSON with the snapshot in hex.
#[derive(Deserialize)]
struct LegacyGroupRow {
    name: String,
    state: String,
}

impl Drop for LegacyGroupRow {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

#[derive(Clone)]
struct Loaded {
    name: String,
    group: SenderKeyGroup,
}

/// Decodes a sealed group row's plaintext: `0x02 ‖ name_len u8 ‖ name ‖ snapshot`, or the JSON
/// row of sotto's first releases (its waiting messages were of the first group-message format
/// and are dropped).
pub(crate) fn decode_group_row(bytes: &[u8]) -> Result<(String, SenderKeyGroup), Error> {
    let bad = || Error::Corrupt("group state malformed");
    match bytes.split_first() {
        Some((&GROUP_ROW_VERSION, rest)) => {
            let (&n, rest) = rest.split_first().ok_or_else(bad)?;
            let n = usize::from(n);
            let name = std::str::from_utf8(rest.get(..n).ok_or_else(bad)?).map_err(|_| bad())?;
            let group = SenderKeyGroup::restore(&rest[n..]).map_err(|_| bad())?;
            Ok((name.to_owned(), group))
        }
        Some((b'{', _)) => {
            let row: LegacyGroupRow = serde_json::from_slice(bytes).map_err(|_| bad())?;
            let state = Zeroizing::new(hex::decode(&row.state).map_err(|_| bad())?);
            let group = SenderKeyGroup::restore(&state).map_err(|_| bad())?;
            Ok((row.name.clone(), group))
        }
        _ => Err(bad()),
    }
}

fn encode_group_row(g: &Loaded) -> Zeroizing<Vec<u8>> {
    let snapshot = g.group.snapshot();
    let mut out = Zeroizing::new(Vec::with_capacity(2 + g.name.len() + snapshot.len()));
    out.push(GROUP_ROW_VERSION);
    out.push(g.name.len() as u8);
    out.extend_from_slice(g.name.as_bytes());
    out.extend_from_slice(&snapshot);
    out
}

/// A held invite, sealed as `inviter [32] ‖ received_ms u64 ‖ name_len u8 ‖ name ‖ roster log`.
struct HeldInvite {
    inviter: IdentityKey,
    received_ms: u64,
    name: String,
    log: Vec<u8>,
}

impl HeldInvite {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41 + self.name.len() + self.log.len());
        out.extend_from_slice(self.inviter.as_bytes());
        out.extend_from_slice(&self.received_ms.to_be_bytes());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.log);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = sotto_protocol::codec::Reader::new(b);
        let inviter = IdentityKey::from_bytes(&r.array().ok()?).ok()?;
        let received_ms = r.u64().ok()?;
        let n = usize::from(r.u8().ok()?);
        let name = std::str::from_utf8(r.bytes(n).ok()?).ok()?.to_owned();
        Some(Self {
            inviter,
            received_ms,
            name,
            log: r.rest().to_vec(),
        })
    }
}

/// A new `group_pending` row: group tag, sender tag, size and the sealed [`Pending`].
struct PendingRow {
    grp: Vec<u8>,
    sender: Vec<u8>,
    size: usize,
    sealed: Vec<u8>,
}

/// What handling a group control payload or group message changes: written by the caller in the
/// same transaction as the delivery it came with.
#[derive(Default)]
pub(super) struct GroupEffects {
    pub(super) events: Vec<Event>,
    groups: Vec<(Vec<u8>, Vec<u8>)>,
    outbox: Vec<Vec<u8>>,
    messages: Vec<(Vec<u8>, Vec<u8>)>,
    /// New waiting messages.
    pending_add: Vec<PendingRow>,
    /// Rows of waiting messages now handled.
    pending_done: Vec<i64>,
    /// Groups whose waiting messages are all dropped (we were removed).
    pending_clear: Vec<Vec<u8>>,
    /// (group tag, inviter tag, sealed) of held invites.
    invites_put: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    invites_delete: Vec<Vec<u8>>,
}

impl GroupEffects {
    pub(super) fn write_tx(&self, tx: &Transaction<'_>) -> Result<(), Error> {
        for (tag, sealed) in &self.groups {
            tx.execute(
                "INSERT INTO groups(tag, sealed) VALUES (?1, ?2)
                 ON CONFLICT(tag) DO UPDATE SET sealed = excluded.sealed",
                params![tag, sealed],
            )?;
        }
        for (tag, sealed) in &self.messages {
            tx.execute(
                "INSERT OR IGNORE INTO group_messages(tag, sealed) VALUES (?1, ?2)",
                params![tag, sealed],
            )?;
        }
        for sealed in &self.outbox {
            tx.execute("INSERT INTO outbox(sealed) VALUES (?1)", [sealed])?;
        }
        for id in &self.pending_done {
            tx.execute("DELETE FROM group_pending WHERE id = ?1", [id])?;
        }
        for grp in &self.pending_clear {
            tx.execute("DELETE FROM group_pending WHERE grp = ?1", [grp])?;
        }
        for PendingRow {
            grp,
            sender,
            size,
            sealed,
        } in &self.pending_add
        {
            tx.execute(
                "INSERT INTO group_pending(grp, sender, size, sealed) VALUES (?1, ?2, ?3, ?4)",
                params![grp, sender, *size as i64, sealed],
            )?;
            // Oldest first, the sender's own entries before anyone else's.
            evict(
                tx,
                "grp = ?1 AND sender = ?2",
                &[grp, sender],
                MAX_PENDING_PER_SENDER,
                MAX_PENDING_BYTES_PER_SENDER,
            )?;
            evict(tx, "grp = ?1", &[grp], MAX_PENDING, MAX_PENDING_BYTES)?;
        }
        for tag in &self.invites_delete {
            tx.execute("DELETE FROM group_invites WHERE tag = ?1", [tag])?;
        }
        for (tag, inviter, sealed) in &self.invites_put {
            tx.execute(
                "INSERT INTO group_invites(tag, inviter, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT(tag) DO UPDATE SET inviter = excluded.inviter, sealed = excluded.sealed",
                params![tag, inviter, sealed],
            )?;
            tx.execute(
                "DELETE FROM group_invites WHERE inviter = ?1 AND id NOT IN
                 (SELECT id FROM group_invites WHERE inviter = ?1 ORDER BY id DESC LIMIT ?2)",
                params![inviter, MAX_HELD_INVITES_PER_INVITER as i64],
            )?;
            tx.execute(
                "DELETE FROM group_invites WHERE id NOT IN
                 (SELECT id FROM group_invites ORDER BY id DESC LIMIT ?1)",
                [MAX_HELD_INVITES as i64],
            )?;
        }
        Ok(())
    }

    fn warn(&mut self, group: &str, warning: impl Into<String>) {
        self.events.push(Event::GroupWarning {
            group: group.to_owned(),
            warning: warning.into(),
        });
    }

    fn changed(&mut self, g: &Loaded, change: impl Into<String>) {
        self.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: change.into(),
        });
    }
}

/// Deletes the oldest waiting messages matching `filter` until at most `count` rows and `bytes`
/// bytes are left.
fn evict(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&Vec<u8>],
    count: usize,
    bytes: usize,
) -> Result<(), Error> {
    loop {
        let (n, total): (i64, i64) = tx.query_row(
            &format!("SELECT count(*), coalesce(sum(size), 0) FROM group_pending WHERE {filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if n as usize <= count && total as usize <= bytes {
            return Ok(());
        }
        tx.execute(
            &format!(
                "DELETE FROM group_pending WHERE id = (SELECT min(id) FROM group_pending WHERE {filter})"
            ),
            rusqlite::params_from_iter(args.iter()),
        )?;
    }
}

/// How many decoded group states [`GroupCache`] keeps.
const GROUP_CACHE_ENTRIES: usize = 8;

/// Decoded group states keyed by the exact sealed row they were read from or written as.
///
/// A group's row holds every member's sender-key record and the signed roster log (tens of KiB at
/// 100 members); opening, parsing and restoring it on every delivery and every `group()` call
/// dominated the CPU time of a rotation. The key is the sealed bytes themselves, so a hit is
/// exactly the state that is on disk: a row written by a transaction that then failed is never
/// read back, hence never hit. Holds key material only as long as the client does.
#[derive(Default)]
pub(crate) struct GroupCache(std::sync::Mutex<Vec<(Vec<u8>, Loaded)>>);

impl GroupCache {
    fn get(&self, sealed: &[u8]) -> Option<Loaded> {
        let cache = self.0.lock().ok()?;
        cache
            .iter()
            .find(|(s, _)| s.as_slice() == sealed)
            .map(|(_, l)| l.clone())
    }

    fn put(&self, sealed: Vec<u8>, loaded: &Loaded) {
        if let Ok(mut cache) = self.0.lock() {
            cache.retain(|(s, l)| *s != sealed && l.group.group_id() != loaded.group.group_id());
            if cache.len() >= GROUP_CACHE_ENTRIES {
                cache.remove(0);
            }
            cache.push((sealed, loaded.clone()));
        }
    }
}

fn bad_group(e: impl std::fmt::Display) -> Error {
    Error::Group(e.to_string())
}

/// A group name from the network: printable characters only, at most 64 bytes.
fn clean_name(raw: &[u8]) -> String {
    let mut name = String::new();
    for c in String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
    {
        if name.len() + c.len_utf8() > 64 {
            break;
        }
        name.push(c);
    }
    name
}

impl Client {
    fn group_tables(&self) -> Result<(), Error> {
        self.store.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS groups(tag BLOB PRIMARY KEY, sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS group_messages(id INTEGER PRIMARY KEY,
                 tag BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS group_pending(id INTEGER PRIMARY KEY, grp BLOB NOT NULL,
                 sender BLOB NOT NULL, size INTEGER NOT NULL, sealed BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS group_pending_grp ON group_pending(grp, sender);
             CREATE TABLE IF NOT EXISTS group_invites(id INTEGER PRIMARY KEY,
                 tag BLOB NOT NULL UNIQUE, inviter BLOB NOT NULL, sealed BLOB NOT NULL);",
        )?;
        Ok(())
    }

    fn group_tag(&self, id: &[u8; GROUP_ID_LEN]) -> Vec<u8> {
        self.store.key.tag(&[b"group", id])
    }

    fn pending_sender_tag(&self, id: &[u8; GROUP_ID_LEN], sender: &IdentityKey) -> Vec<u8> {
        self.store.key.tag(&[b"gpending", id, sender.as_bytes()])
    }

    fn invite_tag(&self, id: &[u8; GROUP_ID_LEN]) -> Vec<u8> {
        self.store.key.tag(&[b"ginvite", id])
    }

    fn inviter_tag(&self, inviter: &IdentityKey) -> Vec<u8> {
        self.store.key.tag(&[b"ginviter", inviter.as_bytes()])
    }

    fn open_group_row(&self, sealed: &[u8]) -> Result<Loaded, Error> {
        if let Some(loaded) = self.group_cache.get(sealed) {
            return Ok(loaded);
        }
        let bytes = self.store.key.open("group", sealed)?;
        let (name, group) = decode_group_row(&bytes)?;
        let loaded = Loaded { name, group };
        self.group_cache.put(sealed.to_vec(), &loaded);
        Ok(loaded)
    }

    fn all_groups(&self) -> Result<Vec<Loaded>, Error> {
        self.group_tables()?;
        let mut st = self.store.conn.prepare("SELECT sealed FROM groups")?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Vec<Loaded> = rows
            .iter()
            .map(|s| self.open_group_row(s))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn group_by_name(&self, name: &str) -> Result<Loaded, Error> {
        self.all_groups()?
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| Error::Group(format!("no group named {name:?}")))
    }

    fn group_by_id(&self, id: &[u8; GROUP_ID_LEN]) -> Result<Option<Loaded>, Error> {
        self.group_tables()?;
        let sealed: Option<Vec<u8>> = self
            .store
            .conn
            .query_row(
                "SELECT sealed FROM groups WHERE tag = ?1",
                [self.group_tag(id)],
                |r| r.get(0),
            )
            .optional()?;
        sealed.map(|s| self.open_group_row(&s)).transpose()
    }

    fn seal_group(&mut self, g: &Loaded) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let sealed = self
            .store
            .key
            .seal(&mut self.store.rng, "group", &encode_group_row(g))?;
        self.group_cache.put(sealed.clone(), g);
        Ok((self.group_tag(&g.group.group_id()), sealed))
    }

    fn seal_outbox_entry(&mut self, entry: &OutboxEntry) -> Result<Vec<u8>, Error> {
        let bytes =
            Zeroizing::new(serde_json::to_vec(entry).map_err(|_| Error::Corrupt("outbox"))?);
        self.store.key.seal(&mut self.store.rng, "outbox", &bytes)
    }

    /// Queues a group control payload to one member (whose contact row is `contact`) over the
    /// pairwise session.
    fn queue_control_to(
        &mut self,
        fx: &mut GroupEffects,
        contact: i64,
        control: &[u8],
    ) -> Result<(), Error> {
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut self.store.rng, &mut id);
        let entry = OutboxEntry {
            contact,
            message_id: id,
            message_row: None,
            body: OutboxBody::Pending(Payload::Group(Zeroizing::new(control.to_vec())).encode()),
        };
        let sealed = self.seal_outbox_entry(&entry)?;
        fx.outbox.push(sealed);
        Ok(())
    }

    /// Queues `control` to each of `members`, creating contacts for members who are not one yet
    /// (members of a group we created or consented to join; pairwise sessions need a contact).
    fn queue_control(
        &mut self,
        fx: &mut GroupEffects,
        members: &[IdentityKey],
        control: &[u8],
    ) -> Result<(), Error> {
        let ids = self.member_contacts(members)?;
        for m in members {
            if let Some(&cid) = ids.get(m) {
                self.queue_control_to(fx, cid, control)?;
            }
        }
        Ok(())
    }

    /// The contact row of every member, creating an "unknown" contact (as for an unknown sender)
    /// for each member who is not a contact yet. Reads the contacts once.
    fn member_contacts(
        &mut self,
        members: &[IdentityKey],
    ) -> Result<HashMap<IdentityKey, i64>, Error> {
        let mut known: HashMap<String, i64> = self
            .contact_rows()?
            .into_iter()
            .map(|(id, c)| (c.identity, id))
            .collect();
        let mut out = HashMap::with_capacity(members.len());
        for m in members {
            let hex = hex::encode(m.as_bytes());
            let id = match known.get(&hex) {
                Some(&id) => id,
                None => {
                    let fp: String = m.fingerprint().chars().take(8).collect();
                    let c = Contact {
                        name: format!("unknown-{fp}"),
                        identity: hex.clone(),
                        fingerprint: m.fingerprint(),
                        relay: self.account.relay.clone().unwrap_or_default(),
                        verified: false,
                        key_changed: false,
                        blocked: false,
                        unknown: true,
                    };
                    let id = self.put_contact(None, &c)?;
                    known.insert(hex, id);
                    id
                }
            };
            out.insert(*m, id);
        }
        Ok(out)
    }

    /// `SenderKey` control for our current chain: flags, the distribution and the change that made
    /// its roster.
    fn sender_key_control(g: &Loaded, d: &SenderKeyDistribution, flags: u8) -> Zeroizing<Vec<u8>> {
        let roster = g.group.roster();
        let mut control =
            Zeroizing::new(Vec::with_capacity(2 + DISTRIBUTION_LEN + ROSTER_CHANGE_LEN));
        control.push(SENDER_KEY);
        control.push(flags);
        control.extend_from_slice(&d.encode());
        if roster.epoch() > 0 {
            control.extend_from_slice(&roster.last_change().encode());
        }
        control
    }

    /// Starts a fresh own chain and queues its key to every other member of the verified roster.
    fn rotate_and_distribute(
        &mut self,
        fx: &mut GroupEffects,
        g: &mut Loaded,
        flags: u8,
    ) -> Result<(), Error> {
        if !g.group.is_active() {
            return Ok(());
        }
        let d = g
            .group
            .rotate(&mut self.store.rng, now_ms())
            .map_err(bad_group)?;
        let control = Self::sender_key_control(g, &d, flags);
        let members = g.group.recipients();
        self.queue_control(fx, &members, &control)
    }

    /// Asks the group's owner for its roster (we saw a later or another roster).
    fn request_roster(&mut self, fx: &mut GroupEffects, g: &Loaded) -> Result<(), Error> {
        if g.group.is_owner() || !g.group.is_active() {
            return Ok(());
        }
        let mut control = vec![ROSTER_REQUEST];
        control.extend_from_slice(&g.group.group_id());
        let owner = g.group.roster().owner();
        self.queue_control(fx, &[owner], &control)
    }

    /// Sends our (the owner's) log to a member.
    fn send_roster(
        &mut self,
        fx: &mut GroupEffects,
        g: &Loaded,
        to: &IdentityKey,
    ) -> Result<(), Error> {
        let mut control = vec![ROSTER];
        control.extend_from_slice(&g.group.roster().encode_log());
        self.queue_control(fx, &[*to], &control)
    }

    fn member_name(&self, key: &IdentityKey) -> Result<String, Error> {
        if *key == self.identity.public() {
            return Ok("you".into());
        }
        Ok(self
            .contact_by_identity(key)?
            .map(|(_, c)| c.name)
            .unwrap_or_else(|| key.fingerprint()))
    }

    fn pending_count(&self, id: &[u8; GROUP_ID_LEN]) -> Result<usize, Error> {
        let n: i64 = self.store.conn.query_row(
            "SELECT count(*) FROM group_pending WHERE grp = ?1",
            [self.group_tag(id)],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn info(&self, g: &Loaded) -> Result<GroupInfo, Error> {
        let roster = g.group.roster();
        let me = self.identity.public();
        // One read of the contacts for all members (not one scan per member: at 100 members that
        // was 10,000 unsealed rows per call, and UIs call this on every refresh).
        let contacts: HashMap<String, Contact> = self
            .contact_rows()?
            .into_iter()
            .map(|(_, c)| (c.identity.clone(), c))
            .collect();
        let mut members = Vec::new();
        for m in roster.members() {
            let contact = contacts.get(&hex::encode(m.as_bytes()));
            let name = if *m == me {
                "you".to_owned()
            } else {
                contact.map_or_else(|| m.fingerprint(), |c| c.name.clone())
            };
            members.push(GroupMember {
                name,
                fingerprint: m.fingerprint(),
                is_you: *m == me,
                is_owner: *m == roster.owner(),
                verified: *m == me || contact.is_some_and(|c| c.verified),
                has_key: g.group.has_current_key(m),
            });
        }
        Ok(GroupInfo {
            name: g.name.clone(),
            id: hex::encode(roster.group_id()),
            epoch: roster.epoch(),
            is_owner: roster.owner() == me,
            active: g.group.is_active(),
            paused: g.group.is_paused(),
            pending: self.pending_count(&roster.group_id())?,
            members,
        })
    }

    fn commit_effects(&mut self, fx: &GroupEffects) -> Result<(), Error> {
        let tx = self.store.conn.unchecked_transaction()?;
        fx.write_tx(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// A name no group and no held invite has yet, from `base`.
    fn unique_group_name(&self, base: &str) -> Result<String, Error> {
        let base = if base.is_empty() { "group" } else { base };
        let mut taken: Vec<String> = self.all_groups()?.into_iter().map(|g| g.name).collect();
        taken.extend(self.held_invites()?.into_iter().map(|(_, i)| i.name));
        let mut name = base.to_owned();
        let mut i = 2;
        while taken.contains(&name) {
            name = format!("{}-{i}", base.chars().take(60).collect::<String>());
            i += 1;
        }
        Ok(name)
    }

    fn held_invites(&self) -> Result<Vec<(Vec<u8>, HeldInvite)>, Error> {
        self.group_tables()?;
        let mut st = self
            .store
            .conn
            .prepare("SELECT tag, sealed FROM group_invites ORDER BY id")?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(tag, s)| {
                let bytes = self.store.key.open("group_invite", &s)?;
                let invite = HeldInvite::decode(&bytes).ok_or(Error::Corrupt("held invite"))?;
                Ok((tag, invite))
            })
            .collect()
    }

    // ------------------------------------------------------------ public API

    /// All groups, by name, with their verified members.
    pub fn groups(&self) -> Result<Vec<GroupInfo>, Error> {
        self.all_groups()?.iter().map(|g| self.info(g)).collect()
    }

    /// One group, with its verified members.
    pub fn group(&self, name: &str) -> Result<GroupInfo, Error> {
        self.info(&self.group_by_name(name)?)
    }

    /// Creates a group owned by us (no network).
    pub fn group_create(&mut self, name: &str) -> Result<GroupInfo, Error> {
        self.group_create_with(name, &[])
    }

    /// Creates a group owned by us with these contacts as its first members: one signed change
    /// per member, one invite (the whole log) to each, and our first key to all (queued).
    pub fn group_create_with(&mut self, name: &str, contacts: &[&str]) -> Result<GroupInfo, Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Group(
                "group names are 1-64 printable characters".into(),
            ));
        }
        if self.unique_group_name(name)? != name {
            return Err(Error::Group(format!("a group named {name:?} exists")));
        }
        let mut roster = Roster::create(&mut self.store.rng, &self.identity);
        for contact in contacts {
            let (_, c) = self.contact_by_name(contact)?;
            if c.blocked {
                return Err(Error::KeyChangeBlocked(c.name));
            }
            let change = roster
                .propose_add(&self.identity, c.identity_key()?)
                .map_err(|e| match e {
                    RosterError::InvalidOperation => {
                        Error::Group(format!("{contact} is listed twice"))
                    }
                    e => bad_group(e),
                })?;
            roster.apply(&change).map_err(bad_group)?;
        }
        let mut g = Loaded {
            name: name.to_owned(),
            group: SenderKeyGroup::new(self.identity.public(), roster),
        };
        let mut fx = GroupEffects::default();
        let recipients = g.group.recipients();
        if !recipients.is_empty() {
            let invite = invite_control(&g);
            self.queue_control(&mut fx, &recipients, &invite)?;
        }
        self.rotate_and_distribute(&mut fx, &mut g, 0)?;
        fx.groups.push(self.seal_group(&g)?);
        self.commit_effects(&fx)?;
        self.info(&g)
    }

    /// Adds a contact to a group we own: signs the change, sends the new member the whole signed
    /// roster, the others the change (queued; `flush` sends). Every member's new key goes out with
    /// its next message.
    pub fn group_add(&mut self, group: &str, contact: &str) -> Result<Vec<Event>, Error> {
        let mut g = self.group_by_name(group)?;
        let (_, c) = self.contact_by_name(contact)?;
        if c.blocked {
            return Err(Error::KeyChangeBlocked(c.name));
        }
        if g.group.roster().is_legacy() {
            return Err(Error::Group(format!(
                "{group:?} was created by an older sotto and cannot take new members: create a new group"
            )));
        }
        let member = c.identity_key()?;
        let change = g
            .group
            .roster()
            .propose_add(&self.identity, member)
            .map_err(|e| owner_error(e, &g))?;
        let before = g.group.recipients();
        g.group.apply_change(&change).map_err(bad_group)?;
        let mut fx = GroupEffects::default();
        self.queue_control(&mut fx, &[member], &invite_control(&g))?;
        self.queue_control(&mut fx, &before, &change_control(&change))?;
        fx.groups.push(self.seal_group(&g)?);
        fx.changed(&g, format!("you added {}", c.name));
        self.commit_effects(&fx)?;
        Ok(fx.events)
    }

    /// Removes a member from a group we own; every remaining member rotates its sender key.
    pub fn group_remove(&mut self, group: &str, contact: &str) -> Result<Vec<Event>, Error> {
        let g = self.group_by_name(group)?;
        let (_, c) = self.contact_by_name(contact)?;
        let mut fx = GroupEffects::default();
        let g = self.remove_member(&mut fx, g, c.identity_key()?)?;
        fx.groups.push(self.seal_group(&g)?);
        fx.changed(&g, format!("you removed {}", c.name));
        self.commit_effects(&fx)?;
        Ok(fx.events)
    }

    fn remove_member(
        &mut self,
        fx: &mut GroupEffects,
        mut g: Loaded,
        member: IdentityKey,
    ) -> Result<Loaded, Error> {
        let change = g
            .group
            .roster()
            .propose_remove(&self.identity, member)
            .map_err(|e| owner_error(e, &g))?;
        let notify = g.group.recipients();
        g.group.apply_change(&change).map_err(bad_group)?;
        self.queue_control(fx, &notify, &change_control(&change))?;
        self.rotate_and_distribute(fx, &mut g, 0)?;
        Ok(g)
    }

    /// Leaves a group (a change we sign ourselves); the others rotate. The owner cannot leave.
    pub fn group_leave(&mut self, group: &str) -> Result<Vec<Event>, Error> {
        let mut g = self.group_by_name(group)?;
        let change = g
            .group
            .roster()
            .propose_leave(&self.identity)
            .map_err(|e| match e {
                RosterError::InvalidOperation if g.group.roster().owner() == self.identity() => {
                    Error::Group("the owner cannot leave the group".into())
                }
                RosterError::InvalidOperation => Error::Group("not a member any more".into()),
                e => bad_group(e),
            })?;
        let notify = g.group.recipients();
        g.group.apply_change(&change).map_err(bad_group)?;
        let mut fx = GroupEffects::default();
        self.queue_control(&mut fx, &notify, &change_control(&change))?;
        fx.pending_clear.push(self.group_tag(&g.group.group_id()));
        fx.groups.push(self.seal_group(&g)?);
        fx.changed(&g, "you left");
        self.commit_effects(&fx)?;
        Ok(fx.events)
    }

    /// Group invites held for consent (from anyone but a verified contact), oldest first.
    pub fn group_invites(&self) -> Result<Vec<GroupInvite>, Error> {
        let contacts: HashMap<String, Contact> = self
            .contact_rows()?
            .into_iter()
            .map(|(_, c)| (c.identity.clone(), c))
            .collect();
        self.held_invites()?
            .into_iter()
            .map(|(_, i)| {
                let contact = contacts
                    .get(&hex::encode(i.inviter.as_bytes()))
                    .filter(|c| !c.unknown);
                let (id, members) = invite_summary(&i.log).ok_or(Error::Corrupt("held invite"))?;
                Ok(GroupInvite {
                    name: i.name.clone(),
                    id: hex::encode(id),
                    inviter: contact.map_or_else(|| i.inviter.fingerprint(), |c| c.name.clone()),
                    inviter_fingerprint: i.inviter.fingerprint(),
                    inviter_known: contact.is_some(),
                    members,
                    received_ms: i.received_ms,
                })
            })
            .collect()
    }

    /// Accepts a held invite: joins the group, creates contacts for its members and sends them
    /// our key (asking for theirs). This is the consent a stranger's invite waits for.
    pub fn group_accept(&mut self, name: &str) -> Result<Vec<Event>, Error> {
        let (tag, held) = self.held_invite(name)?;
        let roster = Roster::decode_log(&held.log).map_err(bad_group)?;
        let mut fx = GroupEffects::default();
        fx.invites_delete.push(tag);
        if self.group_by_id(&roster.group_id())?.is_some() {
            self.commit_effects(&fx)?;
            return Err(Error::Group(format!(
                "already in the group of invite {name:?}"
            )));
        }
        let who = self.member_name(&held.inviter)?;
        let mut g = Loaded {
            name: held.name.clone(),
            group: SenderKeyGroup::new(self.identity.public(), roster),
        };
        self.rotate_and_distribute(&mut fx, &mut g, REPLY_WITH_KEY)?;
        fx.changed(&g, format!("you joined ({who} invited you)"));
        fx.groups.push(self.seal_group(&g)?);
        self.commit_effects(&fx)?;
        Ok(fx.events)
    }

    /// Declines (forgets) a held invite; nothing is sent.
    pub fn group_decline(&mut self, name: &str) -> Result<(), Error> {
        let (tag, _) = self.held_invite(name)?;
        let fx = GroupEffects {
            invites_delete: vec![tag],
            ..GroupEffects::default()
        };
        self.commit_effects(&fx)
    }

    fn held_invite(&self, name: &str) -> Result<(Vec<u8>, HeldInvite), Error> {
        self.held_invites()?
            .into_iter()
            .find(|(_, i)| i.name == name)
            .ok_or_else(|| Error::Group(format!("no group invite named {name:?}")))
    }

    /// Encrypts a message to the group once and queues it (rotating first when due, so the new
    /// key is queued before the message). Returns the message id (hex); `flush`/`sync` sends.
    pub fn group_compose(&mut self, group: &str, text: &str) -> Result<String, Error> {
        if text.is_empty() || text.len() > 60_000 {
            return Err(Error::BadMessage);
        }
        let mut g = self.group_by_name(group)?;
        if !g.group.is_active() {
            return Err(Error::Group(format!("you are not a member of {group:?}")));
        }
        if g.group.is_paused() {
            let (who, epoch) = g
                .group
                .roster_ahead()
                .unwrap_or((g.group.roster().owner(), 0));
            return Err(Error::Group(format!(
                "sending to {group:?} is paused: {} is at roster epoch {epoch}, you at {}; a roster change has not reached you (the owner's roster was requested)",
                self.member_name(&who)?,
                g.group.roster().epoch()
            )));
        }
        let mut fx = GroupEffects::default();
        if g.group.needs_rotation(now_ms()) {
            self.rotate_and_distribute(&mut fx, &mut g, 0)?;
        }
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut self.store.rng, &mut id);
        let sent_ms = now_ms();
        let payload = Zeroizing::new(
            Payload::Text {
                id,
                sent_ms,
                text: text.to_owned(),
            }
            .encode(),
        );
        let body = g.group.encrypt(&payload).map_err(|e| match e {
            GroupEncryptError::RosterBehind => {
                Error::Group(format!("sending to {group:?} is paused: {e}"))
            }
            e => bad_group(e),
        })?;
        let recipients: Vec<[u8; 32]> = g
            .group
            .recipients()
            .iter()
            .map(IdentityKey::to_bytes)
            .collect();
        let m = GroupMessage {
            id: hex_id(&id),
            group: String::new(),
            sender: "you".into(),
            direction: Direction::Out,
            sent_ms,
            received_ms: None,
            state: if recipients.is_empty() {
                DeliveryState::Accepted
            } else {
                DeliveryState::Queued
            },
            text: Some(text.to_owned()),
            error: None,
            seen: true,
        };
        let gid = g.group.group_id();
        fx.messages.push((
            self.group_message_tag(&gid, &id),
            self.store
                .seal_json("group_message", &(hex::encode(gid), &m))?,
        ));
        if !recipients.is_empty() {
            let entry = OutboxEntry {
                contact: 0,
                message_id: id,
                message_row: None,
                body: OutboxBody::Group {
                    group: gid,
                    recipients,
                    body,
                },
            };
            fx.outbox.push(self.seal_outbox_entry(&entry)?);
        }
        fx.groups.push(self.seal_group(&g)?);
        self.commit_effects(&fx)?;
        Ok(hex_id(&id))
    }

    fn group_message_tag(&self, gid: &[u8; GROUP_ID_LEN], id: &[u8; 16]) -> Vec<u8> {
        self.store.key.tag(&[b"gmsg", gid, id])
    }

    fn group_message_rows(&self) -> Result<Vec<(i64, String, GroupMessage)>, Error> {
        self.group_tables()?;
        let names: HashMap<String, String> = self
            .all_groups()?
            .into_iter()
            .map(|g| (hex::encode(g.group.group_id()), g.name.clone()))
            .collect();
        let mut st = self
            .store
            .conn
            .prepare("SELECT id, sealed FROM group_messages ORDER BY id")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(row, s)| {
                let (gid, mut m): (String, GroupMessage) =
                    self.store.open_json("group_message", &s)?;
                m.group = names.get(&gid).cloned().unwrap_or_default();
                Ok((row, gid, m))
            })
            .collect()
    }

    /// The group history (all groups, or one), oldest first.
    pub fn group_messages(&self, group: Option<&str>) -> Result<Vec<GroupMessage>, Error> {
        if let Some(name) = group {
            self.group_by_name(name)?;
        }
        Ok(self
            .group_message_rows()?
            .into_iter()
            .map(|(_, _, m)| m)
            .filter(|m| group.is_none_or(|n| m.group == n))
            .collect())
    }

    /// Incoming group messages not yet marked seen; marks them seen.
    pub fn take_unseen_group(&mut self) -> Result<Vec<GroupMessage>, Error> {
        let mut out = Vec::new();
        for (row, gid, mut m) in self.group_message_rows()? {
            if m.direction == Direction::In && !m.seen {
                m.seen = true;
                let group = std::mem::take(&mut m.group);
                let sealed = self.store.seal_json("group_message", &(&gid, &m))?;
                self.store.conn.execute(
                    "UPDATE group_messages SET sealed = ?1 WHERE id = ?2",
                    params![sealed, row],
                )?;
                m.group = group;
                out.push(m);
            }
        }
        Ok(out)
    }

    fn set_group_message_state(
        &mut self,
        gid: &[u8; GROUP_ID_LEN],
        id: &[u8; 16],
        state: DeliveryState,
        error: Option<String>,
    ) -> Result<(), Error> {
        let tag = self.group_message_tag(gid, id);
        let found: Option<Vec<u8>> = self
            .store
            .conn
            .query_row(
                "SELECT sealed FROM group_messages WHERE tag = ?1",
                [&tag],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(s) = found {
            let (g, mut m): (String, GroupMessage) = self.store.open_json("group_message", &s)?;
            m.state = state;
            m.error = error;
            let sealed = self.store.seal_json("group_message", &(g, &m))?;
            self.store.conn.execute(
                "UPDATE group_messages SET sealed = ?1 WHERE tag = ?2",
                params![sealed, tag],
            )?;
        }
        Ok(())
    }

    /// Sends one queued group fan-out. `Ok(false)`: stop flushing for now (rate or quota).
    pub(super) async fn flush_group_entry(
        &mut self,
        row: i64,
        entry: &OutboxEntry,
    ) -> Result<bool, Error> {
        let OutboxBody::Group {
            group,
            recipients,
            body,
        } = &entry.body
        else {
            return Ok(true);
        };
        let to: Vec<IdentityKey> = recipients
            .iter()
            .filter_map(|r| IdentityKey::from_bytes(r).ok())
            .collect();
        let relay = self.relay.as_mut().ok_or(Error::NotRegistered)?;
        let r = tokio::time::timeout(
            super::REQUEST_TIMEOUT,
            relay.send_multi(to, MessageId(entry.message_id), body.clone()),
        )
        .await;
        let (state, error) = match self.relay_result(r) {
            Ok(()) => (DeliveryState::Accepted, None),
            Err(Error::Rejected(code)) if code.is_transient() => return Ok(false),
            Err(Error::Rejected(code)) => (
                DeliveryState::Failed,
                Some(format!("relay did not store it for every member: {code}")),
            ),
            Err(e) => return Err(e),
        };
        self.drop_outbox(row)?;
        self.set_group_message_state(group, &entry.message_id, state, error)?;
        Ok(true)
    }

    // ------------------------------------------------------------ receiving

    /// A pairwise payload of kind `0x03` from `sender` (already authenticated by the session).
    pub(super) fn handle_group_control(
        &mut self,
        sender: &IdentityKey,
        control: &[u8],
    ) -> Result<GroupEffects, Error> {
        self.group_tables()?;
        let mut fx = GroupEffects::default();
        let who = self.member_name(sender)?;
        match control.split_first() {
            Some((&INVITE, rest)) => self.on_invite(&mut fx, sender, &who, rest)?,
            Some((&CHANGE, rest)) => match RosterChange::decode(rest) {
                Ok(c) => self.on_change(&mut fx, &who, &c)?,
                Err(e) => fx.warn("", format!("malformed roster change from {who}: {e}")),
            },
            Some((&SENDER_KEY, rest)) => {
                let parsed = rest.split_first().and_then(|(&flags, rest)| {
                    let (d, change) = rest.split_at_checked(DISTRIBUTION_LEN)?;
                    let change = match change.len() {
                        0 => None,
                        ROSTER_CHANGE_LEN => Some(RosterChange::decode(change).ok()?),
                        _ => return None,
                    };
                    Some((flags, SenderKeyDistribution::decode(d).ok()?, change))
                });
                match parsed {
                    Some((flags, d, change)) => {
                        self.on_sender_key(&mut fx, sender, &who, flags, &d, change.as_ref())?;
                    }
                    None => fx.warn("", format!("malformed sender key from {who}")),
                }
            }
            Some((&ROSTER_REQUEST, rest)) => {
                if let Ok(id) = <[u8; GROUP_ID_LEN]>::try_from(rest) {
                    self.on_roster_request(&mut fx, sender, &id)?;
                }
            }
            Some((&ROSTER, rest)) => self.on_roster(&mut fx, sender, &who, rest)?,
            _ => fx.warn("", format!("unknown group control message from {who}")),
        }
        Ok(fx)
    }

    fn on_invite(
        &mut self,
        fx: &mut GroupEffects,
        sender: &IdentityKey,
        who: &str,
        rest: &[u8],
    ) -> Result<(), Error> {
        let Some((&n, rest)) = rest.split_first() else {
            fx.warn("", format!("malformed group invite from {who}"));
            return Ok(());
        };
        let n = usize::from(n);
        let (Some(name), Some(log)) = (rest.get(..n), rest.get(n..)) else {
            fx.warn("", format!("malformed group invite from {who}"));
            return Ok(());
        };
        let name = clean_name(name);
        let roster = match Roster::decode_log(log) {
            Ok(r) => r,
            Err(e) => {
                fx.warn(&name, format!("refused a group invite from {who}: {e}"));
                return Ok(());
            }
        };
        if roster.owner() != *sender {
            fx.warn(
                &name,
                format!("refused a group invite from {who}, who does not own that group"),
            );
            return Ok(());
        }
        if !roster.is_member(&self.identity.public()) {
            fx.warn(
                &name,
                format!("refused a group invite from {who} that does not list you"),
            );
            return Ok(());
        }
        if let Some(g) = self.group_by_id(&roster.group_id())? {
            // A group we are in: the owner's log, as a roster sync.
            return self.take_owner_log(fx, g, who, &roster);
        }
        let trusted = self
            .contact_by_identity(sender)?
            .is_some_and(|(_, c)| c.verified && !c.unknown && !c.blocked);
        if !trusted {
            // Held for consent: no contacts, no bundles, nothing sent until accepted.
            let tag = self.invite_tag(&roster.group_id());
            let existing = self.held_invites()?.into_iter().find(|(t, _)| *t == tag);
            let name = match existing {
                Some((_, old)) => old.name,
                None => self.unique_group_name(&name)?,
            };
            let held = HeldInvite {
                inviter: *sender,
                received_ms: now_ms(),
                name: name.clone(),
                log: log.to_vec(),
            };
            let sealed =
                self.store
                    .key
                    .seal(&mut self.store.rng, "group_invite", &held.encode())?;
            fx.invites_put.push((tag, self.inviter_tag(sender), sealed));
            fx.events.push(Event::GroupInvite {
                group: name,
                inviter: who.to_owned(),
                members: roster.members().len(),
            });
            return Ok(());
        }
        let mut g = Loaded {
            name: self.unique_group_name(&name)?,
            group: SenderKeyGroup::new(self.identity.public(), roster),
        };
        self.rotate_and_distribute(fx, &mut g, 0)?;
        fx.changed(&g, format!("{who} added you"));
        self.retry_pending(fx, &mut g, None)?;
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    /// The owner's whole log, for a group we are in (an invite for it, or a roster sync).
    fn take_owner_log(
        &mut self,
        fx: &mut GroupEffects,
        mut g: Loaded,
        who: &str,
        roster: &Roster,
    ) -> Result<(), Error> {
        let before = g.group.roster().clone();
        match g.group.sync_from_owner(roster) {
            Ok(Adopted::Unchanged) => {}
            Ok(Adopted::Extended) => self.roster_moved(fx, &mut g, &before, None)?,
            Ok(Adopted::Replaced(undone)) => {
                let names = self.leave_names(&undone)?;
                self.roster_moved(fx, &mut g, &before, Some(format!(
                    "the owner's roster replaced yours: {names} left only on another branch (the owner re-issues it)"
                )))?;
            }
            Err(e) => {
                fx.warn(&g.name, format!("refused the roster from {who}: {e}"));
                return Ok(());
            }
        }
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    /// A change for the group of a held invite: the held log follows it, so that accepting
    /// joins the current roster. Returns whether such an invite is held.
    fn extend_held_invite(
        &mut self,
        fx: &mut GroupEffects,
        c: &RosterChange,
    ) -> Result<bool, Error> {
        let tag = self.invite_tag(&c.group_id);
        let Some((_, mut held)) = self.held_invites()?.into_iter().find(|(t, _)| *t == tag) else {
            return Ok(false);
        };
        if let Ok(mut roster) = Roster::restore_log(&held.log)
            && roster.apply(c).is_ok()
        {
            held.log = roster.encode_log();
            let sealed =
                self.store
                    .key
                    .seal(&mut self.store.rng, "group_invite", &held.encode())?;
            fx.invites_put
                .push((tag, self.inviter_tag(&held.inviter), sealed));
        }
        Ok(true)
    }

    fn leave_names(&self, changes: &[RosterChange]) -> Result<String, Error> {
        let names: Vec<String> = changes
            .iter()
            .map(|c| self.member_name(&c.member))
            .collect::<Result<_, _>>()?;
        Ok(names.join(", "))
    }

    /// After the roster moved (`before` is the old one): events, contacts for new members,
    /// rotation at once if someone left or was removed, waiting messages retried.
    fn roster_moved(
        &mut self,
        fx: &mut GroupEffects,
        g: &mut Loaded,
        before: &Roster,
        summary: Option<String>,
    ) -> Result<(), Error> {
        let me = self.identity.public();
        let now = g.group.roster().clone();
        let common = before
            .log()
            .iter()
            .zip(now.log())
            .take_while(|(a, b)| a == b)
            .count();
        if let Some(text) = summary {
            fx.changed(g, text);
        }
        for c in now.log().iter().skip(common) {
            let member = self.member_name(&c.member)?;
            let mine = c.member == me;
            fx.changed(
                g,
                match (c.op, mine) {
                    (RosterOp::Add, true) => "you were added".to_owned(),
                    (RosterOp::Add, false) => format!("{member} was added"),
                    (RosterOp::Remove, true) => "you were removed".to_owned(),
                    (RosterOp::Remove, false) => format!("{member} was removed"),
                    (RosterOp::Leave, _) => format!("{member} left"),
                    (RosterOp::Create, _) => "created".to_owned(),
                },
            );
        }
        if !g.group.is_active() {
            fx.pending_clear.push(self.group_tag(&g.group.group_id()));
            return Ok(());
        }
        let added: Vec<IdentityKey> = now
            .members()
            .iter()
            .filter(|m| !before.is_member(m) && **m != me)
            .copied()
            .collect();
        self.member_contacts(&added)?;
        let removed = before.members().iter().any(|m| !now.is_member(m));
        if removed || !before.is_member(&me) {
            // Rotate now, so a removed member's knowledge stops working at once. (After an
            // addition the new key goes out with our next message.)
            self.rotate_and_distribute(fx, g, 0)?;
        }
        self.retry_pending(fx, g, None)
    }

    fn on_change(
        &mut self,
        fx: &mut GroupEffects,
        who: &str,
        c: &RosterChange,
    ) -> Result<(), Error> {
        let Some(mut g) = self.group_by_id(&c.group_id)? else {
            if !self.extend_held_invite(fx, c)? {
                fx.warn(
                    "",
                    format!("roster change from {who} for a group you are not in"),
                );
            }
            return Ok(());
        };
        if self.receive_change(fx, &mut g, who, c)? {
            fx.groups.push(self.seal_group(&g)?);
        }
        Ok(())
    }

    /// A signed change from the network (sent alone, or carried by a sender key). Returns whether
    /// the group changed.
    fn receive_change(
        &mut self,
        fx: &mut GroupEffects,
        g: &mut Loaded,
        who: &str,
        c: &RosterChange,
    ) -> Result<bool, Error> {
        let before = g.group.roster().clone();
        match g.group.receive_change(c) {
            Ok(ChangeOutcome::AlreadyApplied) => Ok(false),
            Ok(ChangeOutcome::Applied) => {
                self.roster_moved(fx, g, &before, None)?;
                Ok(true)
            }
            Ok(ChangeOutcome::Adopted(undone)) => {
                let names = self.leave_names(&undone)?;
                self.roster_moved(fx, g, &before, Some(format!(
                    "the owner's roster replaced yours: {names} left only on another branch (the owner re-issues it)"
                )))?;
                Ok(true)
            }
            Err(_) if g.group.forked_leave(c) => {
                // We own the group: the leave raced one of our changes; it takes effect as a
                // removal on top of our (authoritative) log.
                let name = self.member_name(&c.member)?;
                *g = self.remove_member(fx, g.clone(), c.member)?;
                fx.changed(g, format!("{name} left (re-issued on your roster)"));
                Ok(true)
            }
            Err(RosterError::WrongEpoch) if c.epoch > before.epoch() => {
                // A later change than the next one: some in between have not reached us.
                self.request_roster(fx, g)?;
                Ok(false)
            }
            Err(e) => {
                fx.warn(&g.name, format!("refused a roster change from {who}: {e}"));
                Ok(false)
            }
        }
    }

    fn on_sender_key(
        &mut self,
        fx: &mut GroupEffects,
        sender: &IdentityKey,
        who: &str,
        flags: u8,
        d: &SenderKeyDistribution,
        change: Option<&RosterChange>,
    ) -> Result<(), Error> {
        let Some(mut g) = self.group_by_id(&d.group_id)? else {
            let held = self
                .held_invites()?
                .iter()
                .any(|(t, _)| *t == self.invite_tag(&d.group_id));
            if !held {
                fx.warn(
                    "",
                    format!("sender key from {who} for a group you are not in"),
                );
            }
            return Ok(());
        };
        // The change that made the key's roster, if we lack it (withheld, or still on its way).
        if let Some(c) = change
            && d.roster_hash != g.group.roster().hash()
            && c.hash() == d.roster_hash
        {
            self.receive_change(fx, &mut g, who, c)?;
        }
        match g.group.process_distribution(sender, d) {
            Ok(DistributionOutcome::Installed) => {
                self.retry_pending(fx, &mut g, Some(sender))?;
                if flags & REPLY_WITH_KEY != 0
                    && let Some(ours) = g.group.current_distribution()
                {
                    let control = Self::sender_key_control(&g, &ours, 0);
                    self.queue_control(fx, &[*sender], &control)?;
                }
            }
            Ok(DistributionOutcome::Deferred) => {
                if g.group.is_paused() {
                    fx.warn(
                        &g.name,
                        format!(
                            "{who} is at roster epoch {} (you are at {}): a roster change has not reached you; sending is paused until it does (asked the owner for the roster)",
                            d.epoch,
                            g.group.roster().epoch()
                        ),
                    );
                    self.request_roster(fx, &g)?;
                }
            }
            Err(DistributionError::UnknownRoster) => {
                fx.warn(
                    &g.name,
                    format!("{who} is on another version of the roster (a fork); the owner's roster decides"),
                );
                if g.group.is_owner() {
                    self.send_roster(fx, &g, sender)?;
                } else {
                    self.request_roster(fx, &g)?;
                }
            }
            // A key for an earlier roster from a member (they rotated before a change reached
            // them and will send a newer key), or an old key delivered again: no warning.
            Err(DistributionError::AnotherRoster | DistributionError::Retired) => {}
            Err(e) => fx.warn(&g.name, format!("refused a sender key from {who}: {e}")),
        }
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    fn on_roster_request(
        &mut self,
        fx: &mut GroupEffects,
        sender: &IdentityKey,
        id: &[u8; GROUP_ID_LEN],
    ) -> Result<(), Error> {
        if let Some(g) = self.group_by_id(id)?
            && g.group.is_owner()
            && g.group.roster().is_member(sender)
        {
            self.send_roster(fx, &g, sender)?;
        }
        Ok(())
    }

    fn on_roster(
        &mut self,
        fx: &mut GroupEffects,
        sender: &IdentityKey,
        who: &str,
        log: &[u8],
    ) -> Result<(), Error> {
        let roster = match Roster::decode_log(log) {
            Ok(r) => r,
            Err(e) => {
                fx.warn("", format!("refused a roster from {who}: {e}"));
                return Ok(());
            }
        };
        match self.group_by_id(&roster.group_id())? {
            Some(g) if roster.owner() == *sender => self.take_owner_log(fx, g, who, &roster),
            Some(g) => {
                fx.warn(
                    &g.name,
                    format!("refused a roster from {who}, who does not own the group"),
                );
                Ok(())
            }
            None => Ok(()), // A roster never creates a group.
        }
    }

    /// Tries the waiting group messages (of one sender, or all) again.
    fn retry_pending(
        &mut self,
        fx: &mut GroupEffects,
        g: &mut Loaded,
        sender: Option<&IdentityKey>,
    ) -> Result<(), Error> {
        let gid = g.group.group_id();
        let grp = self.group_tag(&gid);
        let rows: Vec<(i64, Vec<u8>)> = match sender {
            Some(s) => {
                let stag = self.pending_sender_tag(&gid, s);
                let mut st = self.store.conn.prepare(
                    "SELECT id, sealed FROM group_pending WHERE grp = ?1 AND sender = ?2 ORDER BY id",
                )?;
                st.query_map(params![grp, stag], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            }
            None => {
                let mut st = self
                    .store
                    .conn
                    .prepare("SELECT id, sealed FROM group_pending WHERE grp = ?1 ORDER BY id")?;
                st.query_map([&grp], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            }
        };
        for (row, sealed) in rows {
            if fx.pending_done.contains(&row) {
                continue;
            }
            let bytes = self.store.key.open("group_pending", &sealed)?;
            let Some(p) = Pending::decode(&bytes) else {
                fx.pending_done.push(row);
                continue;
            };
            match g.group.decrypt(&p.sender, &p.body) {
                Err(e) if should_wait(g, e) => {} // Still waiting; the row stays as it is.
                r => {
                    fx.pending_done.push(row);
                    self.record_group_result(fx, g, &p, r)?;
                }
            }
        }
        Ok(())
    }

    fn record_group_result(
        &mut self,
        fx: &mut GroupEffects,
        g: &Loaded,
        p: &Pending,
        result: Result<Vec<u8>, GroupDecryptError>,
    ) -> Result<(), Error> {
        let who = self.member_name(&p.sender)?;
        let now = now_ms();
        let mut m = GroupMessage {
            id: hex_id(&p.message_id),
            group: String::new(),
            sender: who.clone(),
            direction: Direction::In,
            sent_ms: p.timestamp_ms,
            received_ms: Some(now),
            state: DeliveryState::Failed,
            text: None,
            error: None,
            seen: false,
        };
        match result {
            Ok(pt) => {
                let pt = Zeroizing::new(pt);
                match Payload::decode(&pt) {
                    Some(Payload::Text { id, sent_ms, text }) if id == p.message_id => {
                        m.sent_ms = sent_ms;
                        m.state = DeliveryState::Received;
                        m.text = Some(text);
                    }
                    _ => m.error = Some("unknown or malformed group content".into()),
                }
            }
            Err(GroupDecryptError::NotMember) => {
                fx.warn(
                    &g.name,
                    format!(
                        "the relay delivered a group message from {who}, who is not on the verified roster: dropped"
                    ),
                );
                return Ok(());
            }
            Err(e) => m.error = Some(e.to_string()),
        }
        let gid = g.group.group_id();
        fx.messages.push((
            self.group_message_tag(&gid, &p.message_id),
            self.store
                .seal_json("group_message", &(hex::encode(gid), &m))?,
        ));
        m.group = g.name.clone();
        fx.events.push(Event::GroupMessage(m));
        Ok(())
    }

    /// A relay delivery whose body is a group message (`0x07`, or `0x03` from an older sotto).
    pub(super) fn receive_group_message(&mut self, d: &DeliverIn) -> Result<GroupEffects, Error> {
        self.group_tables()?;
        let mut fx = GroupEffects::default();
        let who = self.member_name(&d.sender)?;
        if d.body.first() == Some(&LEGACY_GROUP_MESSAGE_VERSION) {
            fx.warn(
                "",
                format!("a group message from {who} in the format of an older sotto version: it cannot be read"),
            );
            return Ok(fx);
        }
        let header = match GroupHeader::decode(&d.body) {
            Ok(h) => h,
            Err(e) => {
                fx.warn("", format!("malformed group message from {who}: {e}"));
                return Ok(fx);
            }
        };
        let Some(mut g) = self.group_by_id(&header.group_id)? else {
            fx.warn(
                "",
                format!(
                    "the relay delivered a group message from {who} for a group you are not in"
                ),
            );
            return Ok(fx);
        };
        let p = Pending {
            sender: d.sender,
            message_id: d.message_id.0,
            timestamp_ms: d.timestamp_ms,
            body: d.body.clone(),
        };
        match g.group.decrypt(&d.sender, &d.body) {
            Err(e) if should_wait(&g, e) => {
                // From a member whose key (or the roster change behind it) has not arrived yet:
                // one sealed row, bounded per sender and per group, never resealed.
                let gid = g.group.group_id();
                let sealed =
                    self.store
                        .key
                        .seal(&mut self.store.rng, "group_pending", &p.encode())?;
                fx.pending_add.push(PendingRow {
                    grp: self.group_tag(&gid),
                    sender: self.pending_sender_tag(&gid, &d.sender),
                    size: sealed.len(),
                    sealed,
                });
                return Ok(fx);
            }
            r => self.record_group_result(&mut fx, &g, &p, r)?,
        }
        fx.groups.push(self.seal_group(&g)?);
        Ok(fx)
    }
}

/// Whether a group message that failed with `e` may still decrypt later: its sender (a member)
/// has not sent its key for our roster yet, or the message is for a roster we have not reached.
fn should_wait(g: &Loaded, e: GroupDecryptError) -> bool {
    g.group.is_active()
        && matches!(
            e,
            GroupDecryptError::UnknownChain | GroupDecryptError::RosterAhead
        )
}

fn invite_control(g: &Loaded) -> Vec<u8> {
    let mut invite = vec![INVITE, g.name.len() as u8];
    invite.extend_from_slice(g.name.as_bytes());
    invite.extend_from_slice(&g.group.roster().encode_log());
    invite
}

/// The group id and member count of a held invite's log (verified when it was held).
fn invite_summary(log: &[u8]) -> Option<([u8; GROUP_ID_LEN], usize)> {
    let r = Roster::restore_log(log).ok()?;
    Some((r.group_id(), r.members().len()))
}

fn change_control(c: &RosterChange) -> Vec<u8> {
    let mut v = vec![CHANGE];
    v.extend_from_slice(&c.encode());
    v
}

fn owner_error(e: RosterError, g: &Loaded) -> Error {
    match e {
        RosterError::BadSignature => Error::Group(format!(
            "only the owner of {:?} can add or remove members",
            g.name
        )),
        RosterError::InvalidOperation => Error::Group(
            "not possible for this roster (already a member, not a member, or the owner)".into(),
        ),
        e => bad_group(e),
    }
}

#[cfg(test)]
mod tests {
    //! Group chats between in-process clients: the tests play the relay by moving the queued
    //! pairwise payloads and group messages between profiles, so they can also play a malicious
    //! relay (deliver to removed members, inject senders, forward forged changes).

    use super::*;
    use crate::KdfParams;
    use crate::invite::Invite;

    struct Peer {
        _dir: tempfile::TempDir,
        c: Client,
    }

    fn peer() -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Client::init(dir.path(), b"pw", KdfParams::INSECURE_TEST).unwrap();
        c.account.relay = Some("ws://127.0.0.1:1/".into());
        Peer { _dir: dir, c }
    }

    fn befriend(a: &mut Peer, name: &str, b: &Peer) {
        let invite = Invite {
            identity: b.c.identity(),
            relay: "ws://127.0.0.1:1/".into(),
        }
        .encode()
        .unwrap();
        a.c.add_contact(name, &invite).unwrap();
    }

    /// Accepts every held invite of `p`.
    fn accept_all(p: &mut Peer) {
        for i in p.c.group_invites().unwrap() {
            p.c.group_accept(&i.name).unwrap();
        }
    }

    /// Takes `from`'s outbox: (recipient identity, group control) pairwise payloads and
    /// (recipients, message id, body) group fan-outs.
    #[allow(clippy::type_complexity)]
    fn take_outbox(
        from: &mut Client,
    ) -> (
        Vec<(IdentityKey, Vec<u8>)>,
        Vec<(Vec<IdentityKey>, [u8; 16], Vec<u8>)>,
    ) {
        let mut controls = Vec::new();
        let mut groups = Vec::new();
        let contacts = from.contact_rows().unwrap();
        for (row, e) in from.load_outbox().unwrap() {
            match &e.body {
                OutboxBody::Pending(p) => {
                    if let Some(Payload::Group(c)) = Payload::decode(p) {
                        let (_, contact) = contacts.iter().find(|(i, _)| *i == e.contact).unwrap();
                        controls.push((contact.identity_key().unwrap(), c.to_vec()));
                    }
                }
                OutboxBody::Group {
                    recipients, body, ..
                } => groups.push((
                    recipients
                        .iter()
                        .map(|r| IdentityKey::from_bytes(r).unwrap())
                        .collect(),
                    e.message_id,
                    body.clone(),
                )),
                OutboxBody::Ready(_) => {}
            }
            from.drop_outbox(row).unwrap();
        }
        (controls, groups)
    }

    fn control(to: &mut Client, from: &IdentityKey, bytes: &[u8]) -> Vec<Event> {
        let fx = to.handle_group_control(from, bytes).unwrap();
        to.commit_effects(&fx).unwrap();
        fx.events
    }

    fn deliver(to: &mut Client, from: &IdentityKey, id: [u8; 16], body: &[u8]) -> Vec<Event> {
        let d = DeliverIn {
            delivery_id: 1,
            sender: *from,
            message_id: MessageId(id),
            timestamp_ms: 0,
            body: body.to_vec(),
        };
        let fx = to.receive_group_message(&d).unwrap();
        to.commit_effects(&fx).unwrap();
        fx.events
    }

    /// Delivers every queued control payload until all outboxes are empty (pairwise order kept).
    fn settle(peers: &mut [&mut Peer]) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..peers.len() {
                let me = peers[i].c.identity();
                let (controls, _) = take_outbox(&mut peers[i].c);
                for (to, bytes) in controls {
                    moved = true;
                    if let Some(p) = peers.iter_mut().find(|p| p.c.identity() == to) {
                        events.extend(control(&mut p.c, &me, &bytes));
                    }
                }
            }
            if !moved {
                return events;
            }
        }
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::GroupMessage(m) => m.text.clone(),
                _ => None,
            })
            .collect()
    }

    fn warnings(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::GroupWarning { warning, .. } => Some(warning.clone()),
                _ => None,
            })
            .collect()
    }

    /// Composes a group message; hands any new sender key (queued first) to `others`.
    fn send(
        from: &mut Peer,
        others: &mut [&mut Peer],
        group: &str,
        text: &str,
    ) -> (Vec<IdentityKey>, [u8; 16], Vec<u8>) {
        from.c.group_compose(group, text).unwrap();
        let me = from.c.identity();
        let (controls, mut groups) = take_outbox(&mut from.c);
        for (to, bytes) in controls {
            if let Some(p) = others.iter_mut().find(|p| p.c.identity() == to) {
                let ev = control(&mut p.c, &me, &bytes);
                assert!(warnings(&ev).is_empty(), "{ev:?}");
            }
        }
        groups.pop().unwrap()
    }

    #[test]
    fn three_members_removal_addition_forgery_and_restart() {
        let (mut alice, mut bob, mut carol, mut dave) = (peer(), peer(), peer(), peer());
        for (name, other) in [("bob", &bob), ("carol", &carol), ("dave", &dave)] {
            befriend(&mut alice, name, other);
        }
        alice.c.group_create("team").unwrap();
        alice.c.group_add("team", "bob").unwrap();
        alice.c.group_add("team", "carol").unwrap();
        let ev = settle(&mut [&mut alice, &mut bob, &mut carol]);
        assert!(warnings(&ev).is_empty(), "{ev:?}");
        // Alice is no verified contact of theirs: the invites wait for consent.
        assert!(bob.c.groups().unwrap().is_empty());
        accept_all(&mut bob);
        accept_all(&mut carol);
        let ev = settle(&mut [&mut alice, &mut bob, &mut carol]);
        assert!(warnings(&ev).is_empty(), "{ev:?}");
        let a = alice.c.identity();
        assert_eq!(bob.c.group("team").unwrap().members.len(), 3);
        assert_eq!(carol.c.group("team").unwrap().epoch, 2);

        // A message to three members reaches the other two.
        let (to, id, early) = send(
            &mut alice,
            &mut [&mut bob, &mut carol],
            "team",
            "hello team",
        );
        assert_eq!(to.len(), 2);
        assert_eq!(texts(&deliver(&mut bob.c, &a, id, &early)), ["hello team"]);
        assert_eq!(
            texts(&deliver(&mut carol.c, &a, id, &early)),
            ["hello team"]
        );
        let (_, bid, from_bob) = send(
            &mut bob,
            &mut [&mut alice, &mut carol],
            "team",
            "hi from bob",
        );
        let b = bob.c.identity();
        assert_eq!(
            texts(&deliver(&mut carol.c, &b, bid, &from_bob)),
            ["hi from bob"]
        );

        // Roster forgery: Bob (not the owner) signs "add dave" and sends it to Carol.
        let r = carol
            .c
            .group_by_name("team")
            .unwrap()
            .group
            .roster()
            .clone();
        let bob_key = sotto_protocol::IdentityKeyPair::from_seed(&bob.c.identity.to_seed());
        let forged = RosterChange::sign(
            &bob_key,
            r.group_id(),
            r.epoch() + 1,
            r.hash(),
            RosterOp::Add,
            dave.c.identity(),
        );
        let ev = control(&mut carol.c, &b, &change_control(&forged));
        assert!(
            warnings(&ev)[0].contains("refused a roster change"),
            "{ev:?}"
        );
        assert_eq!(carol.c.group("team").unwrap().epoch, 2);
        assert!(
            bob.c.group_add("team", "carol").is_err(),
            "only the owner adds"
        );

        // A relay-injected sender (Dave, not on the roster) is refused with a warning.
        dave.c.group_tables().unwrap();
        let ev = deliver(&mut carol.c, &dave.c.identity(), [9; 16], &early);
        assert!(
            warnings(&ev)[0].contains("not on the verified roster"),
            "{ev:?}"
        );
        assert!(texts(&ev).is_empty());

        // Carol is removed; a malicious relay still hands her the next message: unreadable.
        alice.c.group_remove("team", "carol").unwrap();
        let ev = settle(&mut [&mut alice, &mut bob, &mut carol]);
        assert!(ev.iter().any(
            |e| matches!(e, Event::GroupChanged { change, .. } if change == "you were removed")
        ));
        assert!(!carol.c.group("team").unwrap().active);
        let (to, id2, after) = send(&mut alice, &mut [&mut bob], "team", "carol is gone");
        assert_eq!(to, vec![b]);
        assert_eq!(
            texts(&deliver(&mut bob.c, &a, id2, &after)),
            ["carol is gone"]
        );
        let ev = deliver(&mut carol.c, &a, id2, &after);
        assert!(
            texts(&ev).is_empty(),
            "removed member read a message: {ev:?}"
        );
        assert!(carol.c.group_compose("team", "x").is_err());

        // Dave is added later and gets the old ciphertexts: unreadable; new ones read.
        alice.c.group_add("team", "dave").unwrap();
        settle(&mut [&mut alice, &mut bob, &mut dave]);
        accept_all(&mut dave);
        let ev = settle(&mut [&mut alice, &mut bob, &mut dave]);
        assert!(warnings(&ev).is_empty(), "{ev:?}");
        for (i, old) in [(id, &early), (id2, &after)] {
            assert!(texts(&deliver(&mut dave.c, &a, i, old)).is_empty());
        }
        let (_, id3, welcome) = send(
            &mut alice,
            &mut [&mut bob, &mut dave],
            "team",
            "welcome dave",
        );
        assert_eq!(
            texts(&deliver(&mut dave.c, &a, id3, &welcome)),
            ["welcome dave"]
        );

        let m = dave.c.group("team").unwrap().members;
        assert!(m.iter().all(|x| !x.is_owner || x.has_key));
        assert!(
            m.iter().any(|x| !x.is_owner && !x.is_you && !x.has_key),
            "bob has not sent since the addition: no key for this epoch yet"
        );
        // State survives a restart: Bob reopens his profile and still reads.
        let dir = bob.c.dir().to_owned();
        drop(std::mem::replace(
            &mut bob.c,
            Client::init(
                tempfile::tempdir().unwrap().path(),
                b"pw",
                KdfParams::INSECURE_TEST,
            )
            .unwrap(),
        ));
        bob.c = Client::open(&dir, b"pw").unwrap();
        assert_eq!(
            texts(&deliver(&mut bob.c, &a, id3, &welcome)),
            ["welcome dave"]
        );
        let history = bob.c.group_messages(Some("team")).unwrap();
        assert_eq!(history.len(), 4, "{history:?}");
        assert_eq!(
            bob.c.take_unseen_group().unwrap().len(),
            3,
            "ours is never unseen"
        );
    }

    #[test]
    fn schedule_rotation_queues_a_new_key_before_the_message() {
        let (mut alice, mut bob) = (peer(), peer());
        befriend(&mut alice, "bob", &bob);
        alice.c.group_create("pair").unwrap();
        alice.c.group_add("pair", "bob").unwrap();
        settle(&mut [&mut alice, &mut bob]);
        accept_all(&mut bob);
        settle(&mut [&mut alice, &mut bob]);
        let a = alice.c.identity();
        for i in 0..sotto_protocol::group::ROTATE_AFTER_MESSAGES {
            let (_, id, body) = send(&mut alice, &mut [&mut bob], "pair", &format!("m{i}"));
            if i % 250 == 0 {
                assert_eq!(
                    texts(&deliver(&mut bob.c, &a, id, &body)),
                    [format!("m{i}")]
                );
            }
        }
        alice.c.group_compose("pair", "after the schedule").unwrap();
        let (controls, mut groups) = take_outbox(&mut alice.c);
        assert_eq!(
            controls.len(),
            1,
            "a fresh sender key for bob, queued first"
        );
        let ev = control(&mut bob.c, &a, &controls[0].1);
        assert!(warnings(&ev).is_empty());
        let (_, id, body) = groups.pop().unwrap();
        assert_eq!(
            texts(&deliver(&mut bob.c, &a, id, &body)),
            ["after the schedule"]
        );
    }

    fn identities(n: usize) -> Vec<sotto_protocol::IdentityKeyPair> {
        (0..n)
            .map(|i| sotto_protocol::IdentityKeyPair::from_seed(&[i as u8 + 100; 32]))
            .collect()
    }

    #[test]
    fn a_strangers_invite_waits_for_consent_and_creates_nothing_until_then() {
        let (mut eve, mut bob) = (peer(), peer());
        befriend(&mut eve, "bob", &bob);
        // Eve lists 40 third parties besides Bob.
        let others = identities(40);
        for (i, o) in others.iter().enumerate() {
            let invite = Invite {
                identity: o.public(),
                relay: "ws://127.0.0.1:1/".into(),
            }
            .encode()
            .unwrap();
            eve.c.add_contact(&format!("x{i}"), &invite).unwrap();
        }
        let mut names: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
        names.push("bob".into());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        eve.c.group_create_with("bait", &refs).unwrap();
        let e = eve.c.identity();
        let (controls, _) = take_outbox(&mut eve.c);
        let to_bob: Vec<_> = controls
            .iter()
            .filter(|(to, _)| *to == bob.c.identity())
            .collect();
        assert_eq!(to_bob.len(), 2, "an invite and a sender key");
        let contacts_before = bob.c.contacts().unwrap().len();
        let mut events = Vec::new();
        for (_, bytes) in &to_bob {
            events.extend(control(&mut bob.c, &e, bytes));
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::GroupInvite { members: 42, .. })),
            "{events:?}"
        );
        assert!(
            warnings(&events).is_empty(),
            "the key for a held invite is dropped quietly: {events:?}"
        );
        assert_eq!(
            bob.c.contacts().unwrap().len(),
            contacts_before,
            "no contacts created"
        );
        assert_eq!(
            bob.c.outbox_len().unwrap(),
            0,
            "nothing queued, so no bundle fetched"
        );
        assert!(bob.c.groups().unwrap().is_empty());
        let invites = bob.c.group_invites().unwrap();
        assert_eq!(invites.len(), 1);
        assert_eq!((invites[0].name.as_str(), invites[0].members), ("bait", 42));
        assert!(!invites[0].inviter_known);
        // The same invite again does not add a second one.
        control(&mut bob.c, &e, &to_bob[0].1);
        assert_eq!(bob.c.group_invites().unwrap().len(), 1);
        // Declined: gone, nothing sent.
        bob.c.group_decline("bait").unwrap();
        assert!(bob.c.group_invites().unwrap().is_empty());
        assert_eq!(bob.c.outbox_len().unwrap(), 0);
        // Accepted (after a new invite): contacts for the members and our key to each of them.
        control(&mut bob.c, &e, &to_bob[0].1);
        bob.c.group_accept("bait").unwrap();
        assert_eq!(bob.c.contacts().unwrap().len(), contacts_before + 41);
        assert_eq!(bob.c.outbox_len().unwrap(), 41);
        assert_eq!(bob.c.group("bait").unwrap().members.len(), 42);
    }

    #[test]
    fn held_invites_are_bounded_per_inviter() {
        let (mut eve, mut bob) = (peer(), peer());
        befriend(&mut eve, "bob", &bob);
        let e = eve.c.identity();
        for i in 0..(MAX_HELD_INVITES_PER_INVITER + 3) {
            eve.c.group_create_with(&format!("g{i}"), &["bob"]).unwrap();
        }
        let (controls, _) = take_outbox(&mut eve.c);
        for (to, bytes) in &controls {
            if *to == bob.c.identity() {
                control(&mut bob.c, &e, bytes);
            }
        }
        let held = bob.c.group_invites().unwrap();
        assert_eq!(held.len(), MAX_HELD_INVITES_PER_INVITER);
        assert_eq!(
            held.last().unwrap().name,
            format!("g{}", MAX_HELD_INVITES_PER_INVITER + 2),
            "the newest kept"
        );
    }

    /// Alice owns "team" with Bob and Mallory (all joined, keys exchanged).
    fn team() -> (Peer, Peer, Peer) {
        let (mut alice, mut bob, mut mallory) = (peer(), peer(), peer());
        befriend(&mut alice, "bob", &bob);
        befriend(&mut alice, "mallory", &mallory);
        alice
            .c
            .group_create_with("team", &["bob", "mallory"])
            .unwrap();
        settle(&mut [&mut alice, &mut bob, &mut mallory]);
        accept_all(&mut bob);
        accept_all(&mut mallory);
        let ev = settle(&mut [&mut alice, &mut bob, &mut mallory]);
        assert!(warnings(&ev).is_empty(), "{ev:?}");
        (alice, bob, mallory)
    }

    #[test]
    fn non_members_cannot_fill_the_pending_list_and_members_only_their_share() {
        let (mut alice, mut bob, _mallory) = team();
        let stranger = peer();
        let (_, _, body) = send(&mut alice, &mut [], "team", "hello");
        // A non-member (or the relay naming one) delivers many group messages for the group.
        for i in 0..50u8 {
            let ev = deliver(&mut bob.c, &stranger.c.identity(), [i; 16], &body);
            assert!(!warnings(&ev).is_empty());
        }
        assert_eq!(bob.c.group("team").unwrap().pending, 0);
        // A member whose key has not arrived yet: kept, but at most its share.
        let mut header = body.clone();
        header[57] ^= 0xff; // another chain id: no key for it yet
        for i in 0..(MAX_PENDING_PER_SENDER as u8 + 10) {
            deliver(&mut bob.c, &alice.c.identity(), [i; 16], &header);
        }
        assert_eq!(bob.c.group("team").unwrap().pending, MAX_PENDING_PER_SENDER);
    }

    #[test]
    fn a_forwarded_sender_key_is_refused_and_reuploads_are_not_shown_as_the_forwarders() {
        let (mut alice, mut bob, mut mallory) = team();
        let (_, _, from_bob) = send(
            &mut bob,
            &mut [&mut alice, &mut mallory],
            "team",
            "bob's words",
        );
        // Mallory forwards Bob's latest key (the control she received) as her own.
        let m = mallory.c.identity();
        bob.c.group_compose("team", "again").unwrap();
        let _ = from_bob;
        let gid = {
            let g = bob.c.group_by_name("team").unwrap();
            g.group.current_distribution().unwrap()
        };
        let control_bytes =
            Client::sender_key_control(&bob.c.group_by_name("team").unwrap(), &gid, 0);
        let ev = control(&mut alice.c, &m, &control_bytes);
        assert!(warnings(&ev)[0].contains("names another member"), "{ev:?}");
        // Mallory re-uploads Bob's ciphertext as hers: not shown as Mallory's.
        let (_, id, body) = take_outbox(&mut bob.c).1.pop().unwrap();
        let ev = deliver(&mut alice.c, &m, id, &body);
        assert!(texts(&ev).is_empty(), "{ev:?}");
        let shown: Vec<_> = alice
            .c
            .group_messages(Some("team"))
            .unwrap()
            .into_iter()
            .filter(|x| x.text.as_deref() == Some("again"))
            .collect();
        assert!(shown.is_empty(), "{shown:?}");
    }

    #[test]
    fn a_sender_key_carries_the_change_the_relay_withheld() {
        let (mut alice, mut bob, mut mallory) = team();
        alice.c.group_remove("team", "mallory").unwrap();
        // The relay withholds the Change from Bob and delivers only Alice's new key.
        let a = alice.c.identity();
        let (controls, _) = take_outbox(&mut alice.c);
        let key_to_bob = controls
            .iter()
            .find(|(to, c)| *to == bob.c.identity() && c[0] == SENDER_KEY)
            .unwrap();
        let ev = control(&mut bob.c, &a, &key_to_bob.1);
        assert!(ev.iter().any(|e| matches!(e, Event::GroupChanged { change, .. } if change.contains("was removed"))), "{ev:?}");
        let info = bob.c.group("team").unwrap();
        assert_eq!(info.members.len(), 2);
        assert!(!info.paused);
        // Bob's next message does not go to Mallory.
        let (to, _, _) = send(&mut bob, &mut [&mut alice], "team", "just us");
        assert_eq!(to, vec![a]);
        let _ = &mut mallory;
    }
}
