//! An in-memory [`Source`] for tests and benchmarks: no profile, no relay, fixed data.

use std::collections::BTreeMap;

use sotto_client::{DeliveryState, Direction, Event, Message};

use crate::source::{
    Badge, ConvId, Conversation, Entry, GroupOp, GroupView, Member, Safety, Source, SourceError,
};

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
    /// For a group: its roster.
    pub group: Option<GroupView>,
}

/// Conversations held in memory. Rows are global and increasing, like the profile database.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    /// The conversations by key.
    pub convs: BTreeMap<String, MemoryConv>,
    /// The group chats by name.
    pub groups: BTreeMap<String, MemoryConv>,
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
                group: None,
            },
        );
    }

    /// Adds a group owned by us whose other members are the contacts `members` (added as
    /// contacts when missing); each member's verification follows its contact's badge.
    pub fn add_group(&mut self, name: &str, members: &[&str]) {
        let mut view = GroupView {
            name: name.to_owned(),
            epoch: 0,
            is_owner: true,
            active: true,
            members: vec![member("you", true, true, true)],
        };
        for m in members {
            if !self.convs.contains_key(*m) {
                self.add(m, Badge::Unverified);
            }
            view.members.push(self.member(m));
            view.epoch += 1;
        }
        self.groups.insert(
            name.to_owned(),
            MemoryConv {
                title: name.to_owned(),
                badge: Badge::Unverified,
                entries: Vec::new(),
                read_row: 0,
                group: Some(view),
            },
        );
    }

    fn member(&self, name: &str) -> Member {
        let verified = self
            .convs
            .get(name)
            .is_some_and(|c| c.badge == Badge::Verified);
        member(name, false, false, verified)
    }

    /// Appends a message from `sender` ("you" for ours) to a group's history and returns it.
    pub fn push_group(
        &mut self,
        group: &str,
        sender: &str,
        sent_ms: u64,
        text: &str,
        state: DeliveryState,
    ) -> Entry {
        let direction = if sender == "you" {
            Direction::Out
        } else {
            Direction::In
        };
        let e = self.entry(sender, direction, sent_ms, Some(text), state, None);
        if let Some(c) = self.groups.get_mut(group) {
            c.entries.push(e.clone());
        }
        e
    }

    fn entry(
        &mut self,
        who: &str,
        direction: Direction,
        sent_ms: u64,
        text: Option<&str>,
        state: DeliveryState,
        error: Option<&str>,
    ) -> Entry {
        let row = self.next_row;
        self.next_row += 1;
        Entry {
            row,
            message: Message {
                id: format!("{row:032x}"),
                contact: who.to_owned(),
                direction,
                sent_ms,
                received_ms: None,
                state,
                text: text.map(str::to_owned),
                error: error.map(str::to_owned),
                seen: false,
            },
        }
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
        let e = self.entry(name, direction, sent_ms, text, state, error);
        if let Some(c) = self.convs.get_mut(name) {
            c.entries.push(e.clone());
        }
        e
    }

    fn conv(&self, id: &ConvId) -> Result<&MemoryConv, SourceError> {
        if id.is_group() {
            return self
                .groups
                .get(&id.key)
                .ok_or_else(|| format!("no group named {:?}", id.key));
        }
        self.convs
            .get(&id.key)
            .ok_or_else(|| format!("unknown contact {:?}", id.key))
    }

    fn conv_mut(&mut self, id: &ConvId) -> Option<&mut MemoryConv> {
        if id.is_group() {
            self.groups.get_mut(&id.key)
        } else {
            self.convs.get_mut(&id.key)
        }
    }
}

fn member(name: &str, is_you: bool, is_owner: bool, verified: bool) -> Member {
    Member {
        name: name.to_owned(),
        fingerprint: format!("{:0<16}", hex_of(name)).chars().take(16).collect(),
        is_you,
        is_owner,
        verified,
        has_key: true,
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn summary(id: ConvId, c: &MemoryConv) -> Conversation {
    let badge = match &c.group {
        Some(g) if g.all_verified() => Badge::Verified,
        Some(_) => Badge::Unverified,
        None => c.badge,
    };
    Conversation {
        id,
        title: c.title.clone(),
        badge,
        members: c.group.as_ref().map(|g| g.members.len()),
        unread: c
            .entries
            .iter()
            .rev()
            .take_while(|e| e.row > c.read_row)
            .filter(|e| e.message.direction == Direction::In)
            .count()
            .min(crate::source::UNREAD_CAP),
        last_ms: c.entries.last().map(|e| e.message.sent_ms),
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
            .map(|(k, c)| summary(ConvId::direct(k), c))
            .chain(
                self.groups
                    .iter()
                    .map(|(k, c)| summary(ConvId::group(k), c)),
            )
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
        if let Some(c) = self.conv_mut(id) {
            c.read_row = c.entries.last().map_or(0, |e| e.row);
        }
        Ok(())
    }

    fn send(&mut self, id: &ConvId, text: &str) -> Result<(), SourceError> {
        if id.is_group() {
            if !self.conv(id)?.group.as_ref().is_some_and(|g| g.active) {
                return Err(format!("you are not a member of {:?}", id.key));
            }
            self.sent.push((id.key.clone(), text.to_owned()));
            self.push_group(&id.key, "you", 0, text, DeliveryState::Queued);
            return Ok(());
        }
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
        if id.is_group() {
            return Err("a group has no safety number: /members lists its members".into());
        }
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
        for g in self.groups.values_mut().filter_map(|c| c.group.as_mut()) {
            for m in g.members.iter_mut().filter(|m| m.name == id.key) {
                m.verified = verified;
            }
        }
        Ok(())
    }

    fn group_view(&mut self, name: &str) -> Result<GroupView, SourceError> {
        self.groups
            .get(name)
            .and_then(|c| c.group.clone())
            .ok_or_else(|| format!("no group named {name:?}"))
    }

    fn group_create(&mut self, name: &str) -> Result<(), SourceError> {
        if name.is_empty() || self.groups.contains_key(name) {
            return Err(format!("a group named {name:?} exists"));
        }
        self.add_group(name, &[]);
        Ok(())
    }

    fn group_change(&mut self, group: &str, op: &GroupOp) -> Result<Vec<Event>, SourceError> {
        let new = match op {
            GroupOp::Add(c) if self.convs.contains_key(c) => Some(self.member(c)),
            GroupOp::Add(c) => return Err(format!("no contact named {c:?}")),
            _ => None,
        };
        let g = self
            .groups
            .get_mut(group)
            .and_then(|c| c.group.as_mut())
            .ok_or_else(|| format!("no group named {group:?}"))?;
        let change = match op {
            GroupOp::Add(c) => {
                if !g.is_owner {
                    return Err("only the owner changes the roster".into());
                }
                if g.members.iter().any(|m| m.name == *c) {
                    return Err(format!("{c} is already a member"));
                }
                g.members.extend(new);
                format!("you added {c}")
            }
            GroupOp::Remove(c) => {
                if !g.is_owner {
                    return Err("only the owner changes the roster".into());
                }
                let before = g.members.len();
                g.members.retain(|m| m.is_you || m.name != *c);
                if g.members.len() == before {
                    return Err(format!("{c} is not a member"));
                }
                format!("you removed {c}")
            }
            GroupOp::Leave => {
                if g.is_owner {
                    return Err("the owner cannot leave the group".into());
                }
                g.members.retain(|m| !m.is_you);
                g.active = false;
                "you left".into()
            }
        };
        g.epoch += 1;
        Ok(vec![Event::GroupChanged {
            group: group.to_owned(),
            epoch: g.epoch,
            change,
        }])
    }
}
