//! Where the UI gets its data: the [`Source`] trait, implemented by [`sotto_client::Client`]
//! (the real profile) and by [`crate::memory::MemorySource`] (tests and benchmarks).
//!
//! Every method is synchronous and local (the profile database): the network is only touched
//! by the event loop's client branch, so handling a key never waits for the relay.

use sotto_client::{AddOutcome, Client, Contact, Message};

/// What the UI shows for a failed action: one line, no secrets.
pub type SourceError = String;

/// What kind of conversation an id names. Group chats will add a variant here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvKind {
    /// A one-to-one conversation with a contact.
    Direct,
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
    /// Trust state.
    pub badge: Badge,
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
                unread: self.unread_count(&c.name, UNREAD_CAP).map_err(err)?,
                last_ms,
            });
        }
        Ok(out)
    }

    fn count(&mut self, id: &ConvId) -> Result<usize, SourceError> {
        self.message_count(&id.key).map_err(err)
    }

    fn page(
        &mut self,
        id: &ConvId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, SourceError> {
        Ok(self
            .messages_page(&id.key, before, limit)
            .map_err(err)?
            .into_iter()
            .map(|(row, message)| Entry { row, message })
            .collect())
    }

    fn mark_read(&mut self, id: &ConvId) -> Result<(), SourceError> {
        Client::mark_read(self, &id.key, None).map_err(err)
    }

    fn send(&mut self, id: &ConvId, text: &str) -> Result<(), SourceError> {
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
        let sn = self.safety_number(&id.key).map_err(err)?;
        Ok(Safety {
            grouped: sn.grouped(),
            qr: sn.qr_payload().to_vec(),
        })
    }

    fn set_verified(&mut self, id: &ConvId, verified: bool) -> Result<(), SourceError> {
        if verified {
            self.verify(&id.key, None).map_err(err)
        } else {
            self.unverify(&id.key).map_err(err)
        }
    }
}
