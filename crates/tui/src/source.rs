//! Where the UI gets its data: the [`Source`] trait, implemented by [`sotto_client::Client`]
//! (the real profile) and by [`crate::memory::MemorySource`] (tests and benchmarks).
//!
//! Every method is synchronous and local (the profile database): the network is only touched
//! by the event loop's client branch, so handling a key never waits for the relay.

use sotto_client::{AddOutcome, Client, Contact, Event, GroupInfo, GroupMessage, Message};

/// What the UI shows for a failed action: one line, no secrets.
pub type SourceError = String;

/// What kind of conversation an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvKind {
    /// A one-to-one conversation with a contact.
    Direct,
    /// A group chat (Sender Keys over the pairwise sessions).
    Group,
}

/// A conversation's identity: its kind and a key unique within that kind (for
/// [`ConvKind::Direct`], the contact's local name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvId {
    /// The kind.
    pub kind: ConvKind,
    /// The key within the kind.
    pub key: String,
}

impl ConvId {
    /// The conversation with the contact `name`.
    pub fn direct(name: &str) -> Self {
        Self {
            kind: ConvKind::Direct,
            key: name.to_owned(),
        }
    }

    /// The group chat named `name`.
    pub fn group(name: &str) -> Self {
        Self {
            kind: ConvKind::Group,
            key: name.to_owned(),
        }
    }

    /// Whether this is a group chat.
    pub fn is_group(&self) -> bool {
        self.kind == ConvKind::Group
    }
}

/// The trust state shown next to a conversation's title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Badge {
    /// Safety number compared and confirmed.
    Verified,
    /// Never verified.
    Unverified,
    /// The contact's identity key changed; `blocked` when it had been verified before, so
    /// sending is refused until the new safety number is verified.
    KeyChanged {
        /// Sending is refused.
        blocked: bool,
    },
}

/// One row of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// Which conversation.
    pub id: ConvId,
    /// What to call it.
    pub title: String,
    /// Trust state (for a group: [`Badge::Verified`] when every other member is verified).
    pub badge: Badge,
    /// For a group: the number of members on the verified roster (us included).
    pub members: Option<usize>,
    /// Unread incoming messages (capped at [`UNREAD_CAP`]).
    pub unread: usize,
    /// When the newest message was sent (ms since the epoch), if any.
    pub last_ms: Option<u64>,
}

/// Unread counts stop here (shown as "99+").
pub const UNREAD_CAP: usize = 100;

/// One history entry and its position (grows with every stored entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the history; pages are "entries before this row".
    pub row: i64,
    /// The message.
    pub message: Message,
}

/// A safety number ready to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Safety {
    /// 60 digits in 12 groups of 5.
    pub grouped: String,
    /// The bytes for the QR code.
    pub qr: Vec<u8>,
}

/// One member of a group, as the members view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Contact name ("you" for us).
    pub name: String,
    /// Identity fingerprint.
    pub fingerprint: String,
    /// This member is us.
    pub is_you: bool,
    /// This member owns the group.
    pub is_owner: bool,
    /// The contact's safety number was verified.
    pub verified: bool,
    /// We hold this member's sender key for the current roster epoch.
    pub has_key: bool,
}

/// A group's verified roster, as the members view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The group's local name.
    pub name: String,
    /// Roster epoch (number of changes since creation).
    pub epoch: u64,
    /// We own the group (only the owner adds and removes).
    pub is_owner: bool,
    /// We are still a member.
    pub active: bool,
    /// The members, the owner first.
    pub members: Vec<Member>,
}

impl GroupView {
    /// Whether every member other than us has a verified safety number.
    pub fn all_verified(&self) -> bool {
        self.members.iter().all(|m| m.is_you || m.verified)
    }
}

/// A change to a group's roster, applied to the open group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOp {
    /// Add a contact (owner only).
    Add(String),
    /// Remove a member (owner only).
    Remove(String),
    /// Leave the group.
    Leave,
}

/// The data and actions the UI needs. All methods are local and quick.
pub trait Source {
    /// Our identity fingerprint.
    fn own_fingerprint(&self) -> String;
    /// All conversations.
    fn conversations(&mut self) -> Result<Vec<Conversation>, SourceError>;
    /// Number of history entries in a conversation.
    fn count(&mut self, id: &ConvId) -> Result<usize, SourceError>;
    /// Up to `limit` entries before row `before` (the newest when `None`), oldest first.
    fn page(
        &mut self,
        id: &ConvId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, SourceError>;
    /// Marks the conversation read.
    fn mark_read(&mut self, id: &ConvId) -> Result<(), SourceError>;
    /// Queues a message (the event loop sends it).
    fn send(&mut self, id: &ConvId, text: &str) -> Result<(), SourceError>;
    /// Adds a contact from an invite; returns a line describing what happened.
    fn add_contact(&mut self, name: &str, invite: &str) -> Result<String, SourceError>;
    /// Our invite string.
    fn invite(&mut self) -> Result<String, SourceError>;
    /// The safety number for a conversation.
    fn safety(&mut self, id: &ConvId) -> Result<Safety, SourceError>;
    /// Marks the conversation's contact verified or unverified.
    fn set_verified(&mut self, id: &ConvId, verified: bool) -> Result<(), SourceError>;
    /// A group's verified roster.
    fn group_view(&mut self, name: &str) -> Result<GroupView, SourceError>;
    /// Creates a group owned by us.
    fn group_create(&mut self, name: &str) -> Result<(), SourceError>;
    /// Changes a group's roster; returns the events it produced (roster changes), which the
    /// caller applies like the client's. The control messages are queued (flush sends them).
    fn group_change(&mut self, group: &str, op: &GroupOp) -> Result<Vec<Event>, SourceError>;
    /// Accepts (`true`) or declines a group invite held for consent; returns the events.
    fn group_invite_answer(&mut self, name: &str, accept: bool) -> Result<Vec<Event>, SourceError> {
        let _ = (name, accept);
        Err("group invites are not supported by this source".into())
    }
}

/// The view of a client [`GroupInfo`].
pub fn group_view(g: &GroupInfo) -> GroupView {
    GroupView {
        name: g.name.clone(),
        epoch: g.epoch,
        is_owner: g.is_owner,
        active: g.active,
        members: g
            .members
            .iter()
            .map(|m| Member {
                name: m.name.clone(),
                fingerprint: m.fingerprint.clone(),
                is_you: m.is_you,
                is_owner: m.is_owner,
                verified: m.verified,
                has_key: m.has_key,
            })
            .collect(),
    }
}

/// A group message as a history entry (the sender's name in `contact`).
fn group_entry(row: usize, m: GroupMessage) -> Entry {
    Entry {
        row: i64::try_from(row).unwrap_or(i64::MAX),
        message: Message {
            id: m.id,
            contact: m.sender,
            direction: m.direction,
            sent_ms: m.sent_ms,
            received_ms: m.received_ms,
            state: m.state,
            text: m.text,
            error: m.error,
            seen: m.seen,
        },
    }
}

fn badge(c: &Contact) -> Badge {
    if c.key_changed || c.blocked {
        Badge::KeyChanged { blocked: c.blocked }
    } else if c.verified {
        Badge::Verified
    } else {
        Badge::Unverified
    }
}

fn err(e: sotto_client::Error) -> SourceError {
    e.to_string()
}

impl Source for Client {
    fn own_fingerprint(&self) -> String {
        self.identity().fingerprint()
    }

    fn conversations(&mut self) -> Result<Vec<Conversation>, SourceError> {
        let mut out = Vec::new();
        for c in self.contacts().map_err(err)? {
            let last_ms = self
                .messages_page(&c.name, None, 1)
                .map_err(err)?
                .first()
                .map(|(_, m)| m.sent_ms);
            out.push(Conversation {
                id: ConvId::direct(&c.name),
                title: c.name.clone(),
                badge: badge(&c),
                members: None,
                unread: self.unread_count(&c.name, UNREAD_CAP).map_err(err)?,
                last_ms,
            });
        }
        let groups = self.groups().map_err(err)?;
        if !groups.is_empty() {
            // One pass over the group history for every group.
            let messages = self.group_messages(None).map_err(err)?;
            for g in groups {
                let mut mine = messages.iter().filter(|m| m.group == g.name);
                let unread = mine
                    .clone()
                    .filter(|m| m.direction == sotto_client::Direction::In && !m.seen)
                    .count()
                    .min(UNREAD_CAP);
                let view = group_view(&g);
                out.push(Conversation {
                    id: ConvId::group(&g.name),
                    title: g.name.clone(),
                    badge: if view.all_verified() {
                        Badge::Verified
                    } else {
                        Badge::Unverified
                    },
                    members: Some(g.members.len()),
                    unread,
                    last_ms: mine.next_back().map(|m| m.sent_ms),
                });
            }
        }
        Ok(out)
    }

    fn count(&mut self, id: &ConvId) -> Result<usize, SourceError> {
        if id.is_group() {
            return Ok(self.group_messages(Some(&id.key)).map_err(err)?.len());
        }
        self.message_count(&id.key).map_err(err)
    }

    fn page(
        &mut self,
        id: &ConvId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, SourceError> {
        if id.is_group() {
            // Rows of a group are positions in its history (1-based), which only grows.
            let all = self.group_messages(Some(&id.key)).map_err(err)?;
            let end = before.map_or(all.len(), |b| {
                usize::try_from(b.saturating_sub(1).max(0))
                    .unwrap_or(0)
                    .min(all.len())
            });
            let start = end.saturating_sub(limit);
            return Ok(all
                .into_iter()
                .enumerate()
                .skip(start)
                .take(end - start)
                .map(|(i, m)| group_entry(i + 1, m))
                .collect());
        }
        Ok(self
            .messages_page(&id.key, before, limit)
            .map_err(err)?
            .into_iter()
            .map(|(row, message)| Entry { row, message })
            .collect())
    }

    fn mark_read(&mut self, id: &ConvId) -> Result<(), SourceError> {
        if id.is_group() {
            // The client keeps one "seen" flag per group message and marks them all at once,
            // so opening one group also clears the others' unread counts.
            return self.take_unseen_group().map(|_| ()).map_err(err);
        }
        Client::mark_read(self, &id.key, None).map_err(err)
    }

    fn send(&mut self, id: &ConvId, text: &str) -> Result<(), SourceError> {
        if id.is_group() {
            return self.group_compose(&id.key, text).map(|_| ()).map_err(err);
        }
        match self.compose(&id.key, text, false) {
            Ok(_) => Ok(()),
            Err(sotto_client::Error::KeyChangeBlocked(n)) => Err(format!(
                "not sent: {n}'s key changed; /verify to compare the new safety number"
            )),
            Err(e) => Err(err(e)),
        }
    }

    fn add_contact(&mut self, name: &str, invite: &str) -> Result<String, SourceError> {
        Ok(
            match Client::add_contact(self, name, invite).map_err(err)? {
                AddOutcome::Added => format!("added {name}; /verify to compare safety numbers"),
                AddOutcome::Unchanged => format!("{name} is already a contact with that key"),
                AddOutcome::Named => format!("named the unknown sender {name}"),
                AddOutcome::KeyChanged { blocked: true } => {
                    format!("{name}'s key changed; sending is blocked until you /verify again")
                }
                AddOutcome::KeyChanged { blocked: false } => {
                    format!("{name}'s key changed; /verify to compare the new safety number")
                }
                _ => format!("updated {name}"),
            },
        )
    }

    fn invite(&mut self) -> Result<String, SourceError> {
        Client::invite(self).map_err(err)
    }

    fn safety(&mut self, id: &ConvId) -> Result<Safety, SourceError> {
        if id.is_group() {
            return Err("a group has no safety number: /members lists its members".into());
        }
        let sn = self.safety_number(&id.key).map_err(err)?;
        Ok(Safety {
            grouped: sn.grouped(),
            qr: sn.qr_payload().to_vec(),
        })
    }

    fn set_verified(&mut self, id: &ConvId, verified: bool) -> Result<(), SourceError> {
        if id.is_group() {
            return Err("verify each member in their own conversation".into());
        }
        if verified {
            self.verify(&id.key, None).map_err(err)
        } else {
            self.unverify(&id.key).map_err(err)
        }
    }

    fn group_view(&mut self, name: &str) -> Result<GroupView, SourceError> {
        Ok(group_view(&self.group(name).map_err(err)?))
    }

    fn group_create(&mut self, name: &str) -> Result<(), SourceError> {
        Client::group_create(self, name).map(|_| ()).map_err(err)
    }

    fn group_change(&mut self, group: &str, op: &GroupOp) -> Result<Vec<Event>, SourceError> {
        match op {
            GroupOp::Add(c) => self.group_add(group, c),
            GroupOp::Remove(c) => self.group_remove(group, c),
            GroupOp::Leave => self.group_leave(group),
        }
        .map_err(err)
    }

    fn group_invite_answer(&mut self, name: &str, accept: bool) -> Result<Vec<Event>, SourceError> {
        if accept {
            self.group_accept(name).map_err(err)
        } else {
            self.group_decline(name).map(|()| Vec::new()).map_err(err)
        }
    }
}
