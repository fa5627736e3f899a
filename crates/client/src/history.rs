//! Paged history and read marks, for user interfaces that show long conversations (the TUI).
//!
//! [`Client::messages`] decrypts the whole history; a conversation of 100,000 entries needs
//! pages instead. Entries are addressed by their row number in the profile database (`row`),
//! which grows with every stored entry, so "the 200 entries before row R" is one index range
//! scan (`messages_contact(contact, id)`) and decrypts only what is shown.
//!
//! Read marks (the newest row a user has seen, per contact) live in their own table,
//! `read_marks`, created on first use. It holds only row numbers and contact ids, which the
//! `messages` table already shows in the clear.

use rusqlite::{OptionalExtension, params};

use crate::Error;
use crate::client::{Client, Direction, Message};

impl Client {
    fn ensure_read_marks(&self) -> Result<(), Error> {
        self.store.conn.execute(
            "CREATE TABLE IF NOT EXISTS read_marks(contact INTEGER PRIMARY KEY, row INTEGER NOT NULL)",
            [],
        )?;
        Ok(())
    }

    /// Number of history entries with the contact `name`.
    pub fn message_count(&self, name: &str) -> Result<usize, Error> {
        let (cid, _) = self.contact_by_name(name)?;
        let n: i64 = self.store.conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE contact = ?1",
            [cid],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` history entries with the contact `name` stored before row `before` (the
    /// newest ones when `None`), oldest first, each with its row number.
    pub fn messages_page(
        &self,
        name: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Message)>, Error> {
        let (cid, c) = self.contact_by_name(name)?;
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut st = self.store.conn.prepare(
            "SELECT id, sealed FROM messages WHERE contact = ?1 AND id < ?2
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![cid, before, limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, sealed) in rows.into_iter().rev() {
            let mut m: Message = self.store.open_json("message", &sealed)?;
            m.contact.clone_from(&c.name);
            out.push((row, m));
        }
        Ok(out)
    }

    /// The row number of the newest entry the user has read with `name` (0 if none).
    pub fn read_mark(&self, name: &str) -> Result<i64, Error> {
        let (cid, _) = self.contact_by_name(name)?;
        self.ensure_read_marks()?;
        Ok(self
            .store
            .conn
            .query_row(
                "SELECT row FROM read_marks WHERE contact = ?1",
                [cid],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Incoming entries from `name` after the read mark, counting at most `cap` (a UI shows
    /// "99+" rather than decrypting a whole unread backlog).
    pub fn unread_count(&self, name: &str, cap: usize) -> Result<usize, Error> {
        let mark = self.read_mark(name)?;
        let (cid, _) = self.contact_by_name(name)?;
        let mut st = self.store.conn.prepare(
            "SELECT sealed FROM messages WHERE contact = ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let cap_rows = i64::try_from(cap.saturating_mul(4).max(cap)).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![cid, mark, cap_rows], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut n = 0;
        for sealed in rows {
            let m: Message = self.store.open_json("message", &sealed)?;
            if m.direction == Direction::In {
                n += 1;
                if n >= cap {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Marks everything with `name` up to row `row` (the newest entry when `None`) as read.
    pub fn mark_read(&mut self, name: &str, row: Option<i64>) -> Result<(), Error> {
        let (cid, _) = self.contact_by_name(name)?;
        self.ensure_read_marks()?;
        let row = match row {
            Some(r) => r,
            None => self.store.conn.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM messages WHERE contact = ?1",
                [cid],
                |r| r.get(0),
            )?,
        };
        self.store.conn.execute(
            "INSERT INTO read_marks(contact, row) VALUES (?1, ?2)
             ON CONFLICT(contact) DO UPDATE SET row = MAX(row, excluded.row)",
            params![cid, row],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KdfParams;

    #[test]
    fn pages_counts_and_read_marks() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Client::init(&dir.path().join("a"), b"pw", KdfParams::INSECURE_TEST).unwrap();
        let b = Client::init(&dir.path().join("b"), b"pw", KdfParams::INSECURE_TEST).unwrap();
        let inv = crate::Invite {
            identity: b.identity(),
            relay: "ws://127.0.0.1:1/".into(),
        }
        .encode()
        .unwrap();
        a.add_contact("bob", &inv).unwrap();
        for i in 0..25 {
            a.compose("bob", &format!("m{i}"), false).unwrap();
        }
        assert_eq!(a.message_count("bob").unwrap(), 25);
        let last = a.messages_page("bob", None, 10).unwrap();
        assert_eq!(last.len(), 10);
        assert_eq!(last[0].1.text.as_deref(), Some("m15"));
        assert_eq!(last[9].1.text.as_deref(), Some("m24"));
        assert_eq!(last[0].1.contact, "bob");
        let before = a.messages_page("bob", Some(last[0].0), 10).unwrap();
        assert_eq!(before[9].1.text.as_deref(), Some("m14"));
        let first = a.messages_page("bob", Some(before[0].0), 10).unwrap();
        assert_eq!(first.len(), 5);
        assert_eq!(first[0].1.text.as_deref(), Some("m0"));
        // Outgoing entries are never unread.
        assert_eq!(a.unread_count("bob", 99).unwrap(), 0);
        assert_eq!(a.read_mark("bob").unwrap(), 0);
        a.mark_read("bob", None).unwrap();
        assert_eq!(a.read_mark("bob").unwrap(), last[9].0);
        // Marks never move back.
        a.mark_read("bob", Some(1)).unwrap();
        assert_eq!(a.read_mark("bob").unwrap(), last[9].0);
        assert!(matches!(
            a.message_count("carol"),
            Err(Error::UnknownContact(_))
        ));
    }
}
