//! An in-memory [`Source`] for tests and benchmarks: no profile, no relay, fixed data.

use std::collections::BTreeMap;

use sotto_client::{DeliveryState, Direction, Message};

use crate::source::{Badge, ConvId, Conversation, Entry, Safety, Source, SourceError};

/// One conversation of a [`MemorySource`].
#[derive(Clone, Debug)]
pub struct MemoryConv {
    /// Title (the contact name).
    pub title: String,
    /// Trust state.
    pub badge: Badge,
    /// The history, oldest first.
    pub entries: Vec<Entry>,
    /// Row of the newest read entry.
    pub read_row: i64,
}

/// Conversations held in memory. Rows are global and increasing, like the profile database.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    /// The conversations by key.
    pub convs: BTreeMap<String, MemoryConv>,
    /// What `invite` returns.
    pub invite: String,
    /// Our fingerprint.
    pub fingerprint: String,
    next_row: i64,
    /// Every text passed to `send`, with its conversation key.
    pub sent: Vec<(String, String)>,
}

impl MemorySource {
    /// An empty source with a fixed fingerprint and invite.
    pub fn new() -> Self {
        Self {
            fingerprint: "0123456789abcdef".into(),
            invite: "sotto-invite-EXAMPLE".into(),
            next_row: 1,
            ..Self::default()
        }
    }

    /// Adds a contact.
    pub fn add(&mut self, name: &str, badge: Badge) {
        self.convs.insert(
            name.to_owned(),
            MemoryConv {
                title: name.to_owned(),
                badge,
                entries: Vec::new(),
                read_row: 0,
            },
        );
    }

    /// Appends a message to `name`'s history and returns it.
    pub fn push(
        &mut self,
        name: &str,
        direction: Direction,
        sent_ms: u64,
        text: Option<&str>,
        state: DeliveryState,
        error: Option<&str>,
    ) -> Entry {
        let row = self.next_row;
        self.next_row += 1;
        let e = Entry {
            row,
            message: Message {
                id: format!("{row:032x}"),
                contact: name.to_owned(),
                direction,
                sent_ms,
                received_ms: None,
                state,
                text: text.map(str::to_owned),
                error: error.map(str::to_owned),
                seen: false,
            },
        };
        if let Some(c) = self.convs.get_mut(name) {
            c.entries.push(e.clone());
        }
        e
    }

    fn conv(&self, id: &ConvId) -> Result<&MemoryConv, SourceError> {
        self.convs
            .get(&id.key)
            .ok_or_else(|| format!("unknown contact {:?}", id.key))
    }
}

impl Source for MemorySource {
    fn own_fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn conversations(&mut self) -> Result<Vec<Conversation>, SourceError> {
        Ok(self
            .convs
            .iter()
            .map(|(k, c)| Conversation {
                id: ConvId::direct(k),
                title: c.title.clone(),
                badge: c.badge,
                unread: c
                    .entries
                    .iter()
                    .rev()
                    .take_while(|e| e.row > c.read_row)
                    .filter(|e| e.message.direction == Direction::In)
                    .count()
                    .min(crate::source::UNREAD_CAP),
                last_ms: c.entries.last().map(|e| e.message.sent_ms),
            })
            .collect())
    }

    fn count(&mut self, id: &ConvId) -> Result<usize, SourceError> {
        Ok(self.conv(id)?.entries.len())
    }

    fn page(
        &mut self,
        id: &ConvId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, SourceError> {
        let c = self.conv(id)?;
        let end = match before {
            Some(b) => c.entries.partition_point(|e| e.row < b),
            None => c.entries.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(c.entries[start..end].to_vec())
    }

    fn mark_read(&mut self, id: &ConvId) -> Result<(), SourceError> {
        if let Some(c) = self.convs.get_mut(&id.key) {
            c.read_row = c.entries.last().map_or(0, |e| e.row);
        }
        Ok(())
    }

    fn send(&mut self, id: &ConvId, text: &str) -> Result<(), SourceError> {
        if let Badge::KeyChanged { blocked: true } = self.conv(id)?.badge {
            return Err(format!(
                "not sent: {}'s key changed; /verify to compare the new safety number",
                id.key
            ));
        }
        self.sent.push((id.key.clone(), text.to_owned()));
        self.push(
            &id.key,
            Direction::Out,
            0,
            Some(text),
            DeliveryState::Queued,
            None,
        );
        Ok(())
    }

    fn add_contact(&mut self, name: &str, invite: &str) -> Result<String, SourceError> {
        if !invite.starts_with("sotto") {
            return Err("invalid invite: not a sotto invite".into());
        }
        self.add(name, Badge::Unverified);
        Ok(format!("added {name}; /verify to compare safety numbers"))
    }

    fn invite(&mut self) -> Result<String, SourceError> {
        Ok(self.invite.clone())
    }

    fn safety(&mut self, id: &ConvId) -> Result<Safety, SourceError> {
        self.conv(id)?;
        let digits: String = (0..60).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
        let grouped: Vec<&str> = (0..12).map(|i| &digits[i * 5..i * 5 + 5]).collect();
        Ok(Safety {
            grouped: grouped.join(" "),
            qr: vec![7; 65],
        })
    }

    fn set_verified(&mut self, id: &ConvId, verified: bool) -> Result<(), SourceError> {
        let c = self
            .convs
            .get_mut(&id.key)
            .ok_or_else(|| format!("unknown contact {:?}", id.key))?;
        c.badge = if verified {
            Badge::Verified
        } else {
            Badge::Unverified
        };
        Ok(())
    }
}
