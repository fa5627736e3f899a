//! The input box: a multi-line text buffer with a cursor, the usual editing keys and a history
//! of what was sent.

/// A multi-line editor. The cursor is a byte offset that always sits on a char boundary.
#[derive(Clone, Debug, Default)]
pub struct Input {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Position while browsing the history (`None`: editing a new entry).
    browsing: Option<usize>,
    /// The new entry saved while browsing.
    draft: String,
}

impl Input {
    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as (line, column in chars).
    pub fn cursor_line_col(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].chars().count())
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.text.matches('\n').count() + 1
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text and puts the cursor at its end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
    }

    /// Takes the text out (for sending), remembering it in the history.
    pub fn take(&mut self) -> String {
        let t = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        if !t.trim().is_empty() && self.history.last() != Some(&t) {
            self.history.push(t.clone());
        }
        t
    }

    /// Inserts a character at the cursor.
    pub fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts a string at the cursor (a paste).
    pub fn insert_str(&mut self, s: &str) {
        let s: String = s
            .chars()
            .filter(|c| *c == '\n' || !c.is_control())
            .collect();
        self.text.insert_str(self.cursor, &s);
        self.cursor += s.len();
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .chars()
            .next()
            .map_or(self.cursor, |c| self.cursor + c.len_utf8())
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        let p = self.prev_boundary();
        self.text.replace_range(p..self.cursor, "");
        self.cursor = p;
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        let n = self.next_boundary();
        self.text.replace_range(self.cursor..n, "");
    }

    /// Moves left one character.
    pub fn left(&mut self) {
        self.cursor = self.prev_boundary();
    }

    /// Moves right one character.
    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    /// Moves to the start of the line.
    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// Moves to the end of the line.
    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Moves back one word.
    pub fn word_left(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        self.cursor = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
    }

    /// Moves forward one word.
    pub fn word_right(&mut self) {
        let after = &self.text[self.cursor..];
        let skip_ws = after.len() - after.trim_start().len();
        let rest = &after[skip_ws..];
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.cursor += skip_ws + word;
    }

    /// Deletes the word before the cursor (Ctrl+W).
    pub fn delete_word(&mut self) {
        let end = self.cursor;
        self.word_left();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes from the start of the line to the cursor (Ctrl+U).
    pub fn kill_to_start(&mut self) {
        let s = self.line_start();
        self.text.replace_range(s..self.cursor, "");
        self.cursor = s;
    }

    /// Deletes from the cursor to the end of the line (Ctrl+K).
    pub fn kill_to_end(&mut self) {
        let e = self.line_end();
        self.text.replace_range(self.cursor..e, "");
    }

    /// Moves up a line; returns false on the first line.
    pub fn up(&mut self) -> bool {
        let (line, col) = self.cursor_line_col();
        if line == 0 {
            return false;
        }
        self.cursor = self.line_start().saturating_sub(1);
        let s = self.line_start();
        self.cursor = s;
        self.advance_cols(col);
        true
    }

    /// Moves down a line; returns false on the last line.
    pub fn down(&mut self) -> bool {
        let (_, col) = self.cursor_line_col();
        let e = self.line_end();
        if e >= self.text.len() {
            return false;
        }
        self.cursor = e + 1;
        self.advance_cols(col);
        true
    }

    fn advance_cols(&mut self, col: usize) {
        let end = self.line_end();
        for _ in 0..col {
            if self.cursor >= end {
                break;
            }
            self.cursor = self.next_boundary();
        }
    }

    /// Shows the previous history entry.
    pub fn history_prev(&mut self) {
        let i = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(0) => 0,
            Some(i) => i - 1,
        };
        self.browsing = Some(i);
        if let Some(h) = self.history.get(i) {
            let h = h.clone();
            self.set(&h);
        }
    }

    /// Shows the next history entry (or the draft after the newest).
    pub fn history_next(&mut self) {
        let Some(i) = self.browsing else { return };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            let h = self.history[i + 1].clone();
            self.set(&h);
        } else {
            self.browsing = None;
            let d = std::mem::take(&mut self.draft);
            self.set(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_keys() {
        let mut i = Input::default();
        for c in "héllo world".chars() {
            i.insert(c);
        }
        i.delete_word();
        assert_eq!(i.text(), "héllo ");
        i.home();
        i.right();
        i.right();
        i.delete();
        assert_eq!(i.text(), "hélo ");
        i.backspace();
        assert_eq!(i.text(), "hlo ");
        i.end();
        i.insert('\n');
        i.insert_str("second\u{7}");
        assert_eq!(i.text(), "hlo \nsecond");
        assert_eq!(i.cursor_line_col(), (1, 6));
        assert!(i.up());
        assert_eq!(i.cursor_line_col(), (0, 4));
        assert!(!i.up());
        assert!(i.down());
        assert_eq!(i.cursor_line_col(), (1, 4));
        i.end();
        i.kill_to_start();
        assert_eq!(i.text(), "hlo \n");
        i.up();
        i.home();
        i.kill_to_end();
        assert_eq!(i.text(), "\n");
        i.word_right();
        assert_eq!(i.cursor_line_col(), (1, 0));
    }

    #[test]
    fn history_browsing_keeps_the_draft() {
        let mut i = Input::default();
        i.set("one");
        i.take();
        i.set("two");
        i.take();
        i.set("draft");
        i.history_prev();
        assert_eq!(i.text(), "two");
        i.history_prev();
        i.history_prev();
        assert_eq!(i.text(), "one");
        i.history_next();
        assert_eq!(i.text(), "two");
        i.history_next();
        assert_eq!(i.text(), "draft");
    }
}
