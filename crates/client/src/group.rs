//! Group chats: Sender Keys over the pairwise sessions, with a signed roster and key rotation.
//!
//! ```text
//!   group_create ─▶ Roster (owner-signed) ─▶ SenderKeyGroup, sealed in `groups`
//!   group_add    ─▶ signed change ─▶ Invite(name, log) to the new member, Change to the others,
//!                   then a fresh sender key to every member          (all pairwise, via the outbox)
//!   group_compose─▶ rotate if due ─▶ encrypt once ─▶ outbox Group entry ─▶ relay SendMulti (0x47)
//!   Deliver 0x03 ─▶ sender on the verified roster? ─▶ decrypt ─▶ `group_messages` + event
//! ```
//!
//! Control messages travel only inside the pairwise Double Ratchet sessions, as the `0x03`
//! payload kind (see `payload.rs`):
//!
//! ```text
//!   Invite    = 0x01 ‖ name_len u8 ‖ name (UTF-8, ≤ 64) ‖ roster log      owner → new member
//!   Change    = 0x02 ‖ roster change [154]                                 to every member
//!   SenderKey = 0x03 ‖ sender-key distribution [104]                       to every member
//! ```
//!
//! Sender keys go only to members of the roster this client verified; a key from someone who is
//! not on it, or for an earlier roster epoch, is refused with a [`Event::GroupWarning`], and so is
//! a group message the relay delivers from a non-member. Every roster change makes every member
//! start a fresh chain; chains also rotate after 1,000 messages or 7 days (see
//! `sotto_protocol::group`). The state lives in the encrypted profile (tables `groups` and
//! `group_messages`, created on first use) and survives restarts.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sotto_protocol::IdentityKey;
use sotto_protocol::group::{DistributionError, DistributionOutcome, GroupSession, SenderKeyGroup};
use sotto_protocol::roster::{Roster, RosterChange, RosterError, RosterOp};
use sotto_protocol::sender_keys::{
    GROUP_ID_LEN, GroupDecryptError, GroupHeader, SenderKeyDistribution,
};
use sotto_wire::{DeliverIn, MessageId};
use zeroize::{Zeroize, Zeroizing};

use super::{
    Client, Contact, DeliveryState, Direction, Event, OutboxBody, OutboxEntry, hex_id, now_ms,
};
use crate::Error;
use crate::payload::Payload;

/// Group messages kept while waiting for the sender's key (per group, oldest dropped first).
const MAX_PENDING: usize = 500;
const INVITE: u8 = 0x01;
const CHANGE: u8 = 0x02;
const SENDER_KEY: u8 = 0x03;

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
    /// Whether we hold this member's sender key for the current roster epoch (for us: whether
    /// our own chain is current). Members send a new key before their first message after a
    /// roster change, and at once after a removal or leave.
    pub has_key: bool,
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

#[derive(Serialize, Deserialize, Clone)]
struct Pending {
    sender: [u8; 32],
    message_id: [u8; 16],
    timestamp_ms: u64,
    body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct GroupRow {
    name: String,
    /// `SenderKeyGroup` snapshot, hex (sealed with the profile key like every row).
    state: String,
    pending: Vec<Pending>,
}

impl Drop for GroupRow {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

#[derive(Clone)]
struct Loaded {
    name: String,
    group: SenderKeyGroup,
    pending: Vec<Pending>,
}

/// What handling a group control payload or group message changes: written by the caller in the
/// same transaction as the delivery it came with.
#[derive(Default)]
pub(super) struct GroupEffects {
    pub(super) events: Vec<Event>,
    groups: Vec<(Vec<u8>, Vec<u8>)>,
    outbox: Vec<Vec<u8>>,
    messages: Vec<(Vec<u8>, Vec<u8>)>,
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
        Ok(())
    }

    fn warn(&mut self, group: &str, warning: impl Into<String>) {
        self.events.push(Event::GroupWarning {
            group: group.to_owned(),
            warning: warning.into(),
        });
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

impl Client {
    fn group_tables(&self) -> Result<(), Error> {
        self.store.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS groups(tag BLOB PRIMARY KEY, sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS group_messages(id INTEGER PRIMARY KEY,
                 tag BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);",
        )?;
        Ok(())
    }

    fn group_tag(&self, id: &[u8; GROUP_ID_LEN]) -> Vec<u8> {
        self.store.key.tag(&[b"group", id])
    }

    fn open_group_row(&self, sealed: &[u8]) -> Result<Loaded, Error> {
        if let Some(loaded) = self.group_cache.get(sealed) {
            return Ok(loaded);
        }
        let loaded = self.decode_group_row(sealed)?;
        self.group_cache.put(sealed.to_vec(), &loaded);
        Ok(loaded)
    }

    fn decode_group_row(&self, sealed: &[u8]) -> Result<Loaded, Error> {
        let row: GroupRow = self.store.open_json("group", sealed)?;
        let bytes = Zeroizing::new(
            hex::decode(&row.state).map_err(|_| Error::Corrupt("group state malformed"))?,
        );
        let group =
            SenderKeyGroup::restore(&bytes).map_err(|_| Error::Corrupt("group state malformed"))?;
        Ok(Loaded {
            name: row.name.clone(),
            group,
            pending: row.pending.clone(),
        })
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
        let row = GroupRow {
            name: g.name.clone(),
            state: hex::encode(g.group.snapshot().as_slice()),
            pending: g.pending.clone(),
        };
        let sealed = self.store.seal_json("group", &row)?;
        self.group_cache.put(sealed.clone(), g);
        Ok((self.group_tag(&g.group.group_id()), sealed))
    }

    fn seal_outbox_entry(&mut self, entry: &OutboxEntry) -> Result<Vec<u8>, Error> {
        let bytes =
            Zeroizing::new(serde_json::to_vec(entry).map_err(|_| Error::Corrupt("outbox"))?);
        self.store.key.seal(&mut self.store.rng, "outbox", &bytes)
    }

    /// Queues a group control payload to one member over the pairwise session.
    fn queue_control(
        &mut self,
        fx: &mut GroupEffects,
        member: &IdentityKey,
        control: Vec<u8>,
    ) -> Result<(), Error> {
        let contact = self.ensure_member_contact(member)?;
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut self.store.rng, &mut id);
        let entry = OutboxEntry {
            contact,
            message_id: id,
            message_row: None,
            body: OutboxBody::Pending(Payload::Group(Zeroizing::new(control)).encode()),
        };
        let sealed = self.seal_outbox_entry(&entry)?;
        fx.outbox.push(sealed);
        Ok(())
    }

    /// Starts a fresh own chain and queues its key to every other member of the verified roster.
    fn rotate_and_distribute(
        &mut self,
        fx: &mut GroupEffects,
        g: &mut Loaded,
    ) -> Result<(), Error> {
        if !g.group.is_active() {
            return Ok(());
        }
        let d = g
            .group
            .rotate(&mut self.store.rng, now_ms())
            .map_err(bad_group)?;
        let mut control = vec![SENDER_KEY];
        control.extend_from_slice(&d.encode());
        for member in g.group.recipients() {
            self.queue_control(fx, &member, control.clone())?;
        }
        control.zeroize();
        Ok(())
    }

    /// The contact row for a group member, creating an "unknown" contact (as for an unknown
    /// sender) if the member is not a contact yet: pairwise sessions need one.
    fn ensure_member_contact(&mut self, member: &IdentityKey) -> Result<i64, Error> {
        if let Some((id, _)) = self.contact_by_identity(member)? {
            return Ok(id);
        }
        let fp: String = member.fingerprint().chars().take(8).collect();
        let c = Contact {
            name: format!("unknown-{fp}"),
            identity: hex::encode(member.as_bytes()),
            fingerprint: member.fingerprint(),
            relay: self.account.relay.clone().unwrap_or_default(),
            verified: false,
            key_changed: false,
            blocked: false,
            unknown: true,
        };
        self.put_contact(None, &c)
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

    fn info(&self, g: &Loaded) -> Result<GroupInfo, Error> {
        let roster = g.group.roster();
        let me = self.identity.public();
        // One read of the contacts for all members (not one scan per member: at 100 members that
        // was 10,000 unsealed rows per call, and UIs call this on every refresh).
        let contacts: std::collections::HashMap<String, Contact> = self
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
            members,
        })
    }

    fn commit_effects(&mut self, fx: &GroupEffects) -> Result<(), Error> {
        let tx = self.store.conn.unchecked_transaction()?;
        fx.write_tx(&tx)?;
        tx.commit()?;
        Ok(())
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
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Group(
                "group names are 1-64 printable characters".into(),
            ));
        }
        if self.all_groups()?.iter().any(|g| g.name == name) {
            return Err(Error::Group(format!("a group named {name:?} exists")));
        }
        let mut id = [0u8; GROUP_ID_LEN];
        rand_core::Rng::fill_bytes(&mut self.store.rng, &mut id);
        let roster = Roster::create(&self.identity, id);
        let mut g = Loaded {
            name: name.to_owned(),
            group: SenderKeyGroup::new(self.identity.public(), roster),
            pending: Vec::new(),
        };
        let mut fx = GroupEffects::default();
        self.rotate_and_distribute(&mut fx, &mut g)?;
        fx.groups.push(self.seal_group(&g)?);
        self.commit_effects(&fx)?;
        self.info(&g)
    }

    /// Adds a contact to a group we own: signs the change, sends the new member the whole signed
    /// roster, the others the change, and everyone a fresh sender key (queued; `flush` sends).
    pub fn group_add(&mut self, group: &str, contact: &str) -> Result<Vec<Event>, Error> {
        let mut g = self.group_by_name(group)?;
        let (_, c) = self.contact_by_name(contact)?;
        if c.blocked {
            return Err(Error::KeyChangeBlocked(c.name));
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
        let mut invite = vec![INVITE, g.name.len() as u8];
        invite.extend_from_slice(g.name.as_bytes());
        invite.extend_from_slice(&g.group.roster().encode_log());
        self.queue_control(&mut fx, &member, invite)?;
        for m in &before {
            self.queue_control(&mut fx, m, change_control(&change))?;
        }
        // Our new key goes out with our next message (`group_compose` rotates first): an
        // addition needs no immediate rotation, unlike a removal.
        fx.groups.push(self.seal_group(&g)?);
        fx.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: format!("you added {}", c.name),
        });
        self.commit_effects(&fx)?;
        Ok(fx.events)
    }

    /// Removes a member from a group we own; every remaining member rotates its sender key.
    pub fn group_remove(&mut self, group: &str, contact: &str) -> Result<Vec<Event>, Error> {
        let mut g = self.group_by_name(group)?;
        let (_, c) = self.contact_by_name(contact)?;
        let member = c.identity_key()?;
        let change = g
            .group
            .roster()
            .propose_remove(&self.identity, member)
            .map_err(|e| owner_error(e, &g))?;
        let notify = g.group.recipients();
        g.group.apply_change(&change).map_err(bad_group)?;
        let mut fx = GroupEffects::default();
        for m in &notify {
            self.queue_control(&mut fx, m, change_control(&change))?;
        }
        self.rotate_and_distribute(&mut fx, &mut g)?;
        fx.groups.push(self.seal_group(&g)?);
        fx.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: format!("you removed {}", c.name),
        });
        self.commit_effects(&fx)?;
        Ok(fx.events)
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
        for m in &notify {
            self.queue_control(&mut fx, m, change_control(&change))?;
        }
        fx.groups.push(self.seal_group(&g)?);
        fx.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: "you left".into(),
        });
        self.commit_effects(&fx)?;
        Ok(fx.events)
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
        let mut fx = GroupEffects::default();
        if g.group.needs_rotation(now_ms()) {
            self.rotate_and_distribute(&mut fx, &mut g)?;
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
        let body = g.group.encrypt(&payload).map_err(bad_group)?;
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
        let names: std::collections::HashMap<String, String> = self
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
            Some((&SENDER_KEY, rest)) => match SenderKeyDistribution::decode(rest) {
                Ok(d) => self.on_sender_key(&mut fx, sender, &who, &d)?,
                Err(e) => fx.warn("", format!("malformed sender key from {who}: {e}")),
            },
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
        let (name, log) = (rest.get(..n), rest.get(n..));
        let (Some(name), Some(log)) = (name, log) else {
            fx.warn("", format!("malformed group invite from {who}"));
            return Ok(());
        };
        let name: String = String::from_utf8_lossy(name)
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
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
        let mut g = match self.group_by_id(&roster.group_id())? {
            Some(mut g) => {
                // Known group: the invite must extend the roster we verified.
                let known = g.group.roster().epoch();
                let extends = roster.epoch() > known
                    && roster
                        .log()
                        .get(known as usize)
                        .is_some_and(|c| c.hash() == g.group.roster().hash());
                if !extends {
                    if roster.epoch() > known {
                        fx.warn(&g.name, format!("refused a conflicting roster from {who}"));
                    }
                    return Ok(());
                }
                for c in &roster.log()[known as usize + 1..] {
                    g.group.apply_change(c).map_err(bad_group)?;
                }
                g
            }
            None => {
                let mut unique = if name.is_empty() {
                    "group".into()
                } else {
                    name
                };
                let taken: Vec<String> = self
                    .all_groups()?
                    .into_iter()
                    .map(|g| g.name.clone())
                    .collect();
                let base = unique.clone();
                let mut i = 2;
                while taken.contains(&unique) {
                    unique = format!("{base}-{i}");
                    i += 1;
                }
                Loaded {
                    name: unique,
                    group: SenderKeyGroup::new(self.identity.public(), roster),
                    pending: Vec::new(),
                }
            }
        };
        for m in g.group.recipients() {
            self.ensure_member_contact(&m)?;
        }
        self.rotate_and_distribute(fx, &mut g)?;
        fx.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: format!("{who} added you"),
        });
        self.retry_pending(fx, &mut g)?;
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    fn on_change(
        &mut self,
        fx: &mut GroupEffects,
        who: &str,
        c: &RosterChange,
    ) -> Result<(), Error> {
        let Some(mut g) = self.group_by_id(&c.group_id)? else {
            fx.warn(
                "",
                format!("roster change from {who} for a group you are not in"),
            );
            return Ok(());
        };
        let before = g.group.roster().epoch();
        if c.epoch <= before {
            return Ok(()); // Already applied (a change is sent by its signer and maybe others).
        }
        if let Err(e) = g.group.apply_change(c) {
            fx.warn(&g.name, format!("refused a roster change from {who}: {e}"));
            return Ok(());
        }
        let member = self.member_name(&c.member)?;
        let me = c.member == self.identity.public();
        let text = match (c.op, me) {
            (RosterOp::Add, _) => {
                self.ensure_member_contact(&c.member)?;
                format!("{member} was added")
            }
            (RosterOp::Remove, true) => "you were removed".to_owned(),
            (RosterOp::Remove, false) => format!("{member} was removed"),
            (RosterOp::Leave, _) => format!("{member} left"),
            (RosterOp::Create, _) => "created".to_owned(),
        };
        fx.events.push(Event::GroupChanged {
            group: g.name.clone(),
            epoch: g.group.roster().epoch(),
            change: text,
        });
        if me {
            g.pending.clear();
        } else if matches!(c.op, RosterOp::Remove | RosterOp::Leave) {
            // Removal: rotate now, so the removed member's knowledge stops working at once.
            // (After an addition the new key goes out with our next message.)
            self.rotate_and_distribute(fx, &mut g)?;
        }
        self.retry_pending(fx, &mut g)?;
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    fn on_sender_key(
        &mut self,
        fx: &mut GroupEffects,
        sender: &IdentityKey,
        who: &str,
        d: &SenderKeyDistribution,
    ) -> Result<(), Error> {
        let Some(mut g) = self.group_by_id(&d.group_id)? else {
            fx.warn(
                "",
                format!("sender key from {who} for a group you are not in"),
            );
            return Ok(());
        };
        match g.group.process_distribution(sender, d) {
            Ok(DistributionOutcome::Installed) => self.retry_pending(fx, &mut g)?,
            Ok(DistributionOutcome::Deferred) => {}
            // A key for an earlier epoch from a member: they rotated before a roster change
            // reached them and have sent a newer key since. Refused without a warning.
            Err(DistributionError::AnotherRoster) if g.group.roster().is_member(sender) => {}
            Err(e) => fx.warn(&g.name, format!("refused a sender key from {who}: {e}")),
        }
        fx.groups.push(self.seal_group(&g)?);
        Ok(())
    }

    /// Tries the group messages that were waiting for a key.
    fn retry_pending(&mut self, fx: &mut GroupEffects, g: &mut Loaded) -> Result<(), Error> {
        let pending = std::mem::take(&mut g.pending);
        for p in pending {
            let Ok(sender) = IdentityKey::from_bytes(&p.sender) else {
                continue;
            };
            let epoch = GroupHeader::decode(&p.body).map_or(0, |h| h.epoch);
            match g.group.decrypt(&sender, &p.body) {
                Err(e) if should_wait(g, epoch, e) => g.pending.push(p),
                r => self.record_group_result(fx, g, &sender, &p, r)?,
            }
        }
        Ok(())
    }

    fn record_group_result(
        &mut self,
        fx: &mut GroupEffects,
        g: &Loaded,
        sender: &IdentityKey,
        p: &Pending,
        result: Result<Vec<u8>, GroupDecryptError>,
    ) -> Result<(), Error> {
        let who = self.member_name(sender)?;
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

    /// A relay delivery whose body is a group message (`0x03`).
    pub(super) fn receive_group_message(&mut self, d: &DeliverIn) -> Result<GroupEffects, Error> {
        self.group_tables()?;
        let mut fx = GroupEffects::default();
        let who = self.member_name(&d.sender)?;
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
            sender: d.sender.to_bytes(),
            message_id: d.message_id.0,
            timestamp_ms: d.timestamp_ms,
            body: d.body.clone(),
        };
        match g.group.decrypt(&d.sender, &d.body) {
            Err(e) if should_wait(&g, header.epoch, e) => {
                // The sender's key (or the roster change behind it) has not arrived yet.
                if g.pending.len() >= MAX_PENDING {
                    g.pending.remove(0);
                }
                g.pending.push(p);
            }
            r => self.record_group_result(&mut fx, &g, &d.sender, &p, r)?,
        }
        fx.groups.push(self.seal_group(&g)?);
        Ok(fx)
    }
}

/// Whether a group message that failed with `e` may still decrypt later: its sender's key, or
/// the roster change that makes the sender a member, has not arrived yet.
fn should_wait(g: &Loaded, epoch: u64, e: GroupDecryptError) -> bool {
    let current = g.group.roster().epoch();
    g.group.is_active()
        && match e {
            GroupDecryptError::UnknownChain => epoch >= current,
            GroupDecryptError::NotMember | GroupDecryptError::WrongGroup => epoch > current,
            _ => false,
        }
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
}
