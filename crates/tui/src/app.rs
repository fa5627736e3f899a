//! The application state and everything that changes it: keys, mouse, client events, ticks.
//! Nothing here draws; [`crate::ui`] reads an [`App`] and draws it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::layout::Rect;
use sotto_client::{DeliveryState, Direction, Event as ClientEvent};

use crate::input::Input;
use crate::source::{Badge, ConvId, Conversation, Entry, GroupOp, GroupView, Safety, Source};

/// Entries loaded per page of history.
pub const PAGE: usize = 200;

/// The conversation list is re-read every this many ticks.
const LIST_REFRESH_TICKS: u64 = 5;

/// The relay connection as the status bar shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// Opening the connection.
    Connecting,
    /// Connected and authenticated.
    Connected,
    /// Disconnected; the next attempt is at this instant.
    Retrying(Instant),
    /// The profile has no relay (`sotto register` first).
    NotRegistered,
}

/// Where keys go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Typing in the input box.
    Insert,
    /// vi-style movement: `j`/`k` scroll, `J`/`K` switch conversations, `i` to type.
    Normal,
}

/// A full-screen view over the chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    /// The conversation list and messages.
    Chat,
    /// The safety number of a conversation, with `v`/`u` to mark it.
    Verify {
        /// Which conversation.
        id: ConvId,
        /// The number.
        safety: Safety,
    },
    /// A group's members and their verification state (`/members`).
    Members {
        /// The group's roster.
        view: GroupView,
    },
}

/// A system line shown inline in a conversation: a roster change or a relay warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The roster changed ("you added carol", "bob left"), with the new epoch.
    Roster(String),
    /// Something was refused (a relay-injected sender, a forged change).
    Warning(String),
}

/// System lines of a conversation, keyed by the row of the newest entry when they happened
/// (0: before any entry): drawn right after that entry.
pub type Notes = BTreeMap<i64, Vec<Note>>;

/// A line under the input box: the outcome of the last command or action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Something worked.
    Info(String),
    /// Something failed (the UI goes on).
    Error(String),
}

/// A dismissable box over everything (the invite).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Popup {
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
}

/// The loaded part of the open conversation: the newest entries, contiguous, oldest first.
#[derive(Clone, Debug)]
pub struct History {
    /// Which conversation.
    pub id: ConvId,
    /// Entries in the conversation (loaded or not).
    pub total: usize,
    /// The loaded entries: the newest `entries.len()` of `total`.
    pub entries: VecDeque<Entry>,
    /// How many entries are hidden below the bottom of the pane (0: following the newest).
    pub scroll: usize,
}

impl History {
    /// Whether older entries exist that are not loaded.
    pub fn more_above(&self) -> bool {
        self.entries.len() < self.total
    }
}

/// The whole UI state.
#[derive(Debug)]
pub struct App {
    /// All conversations, most recent first.
    pub conversations: Vec<Conversation>,
    /// Index of the selected conversation.
    pub selected: usize,
    /// The open conversation's loaded history.
    pub history: Option<History>,
    /// The input box.
    pub input: Input,
    /// Insert or normal mode.
    pub mode: Mode,
    /// Chat or verification.
    pub screen: Screen,
    /// The `?` overlay is shown.
    pub help: bool,
    /// A popup (the invite).
    pub popup: Option<Popup>,
    /// The last outcome line.
    pub notice: Option<Notice>,
    /// Relay connection state.
    pub relay: RelayState,
    /// Our fingerprint.
    pub fingerprint: String,
    /// Now, as of the last tick (for countdowns).
    pub now: Instant,
    /// Wall-clock now in ms since the epoch, as of the last tick (for timestamps).
    pub now_ms: u64,
    /// Terminal size (columns, rows), for mouse clicks.
    pub size: (u16, u16),
    /// Rows of the message pane at the last resize (PageUp/PageDown step).
    pub pane_rows: usize,
    /// The user asked to quit.
    pub quit: bool,
    /// A message was queued: the event loop should flush the outbox.
    pub flush_wanted: bool,
    /// Roster changes and warnings per conversation, kept for this session (the client
    /// reports them as events and does not store them).
    pub notes: HashMap<ConvId, Notes>,
    /// The last read mark written (conversation, newest row then).
    read_mark: Option<(ConvId, Option<i64>)>,
    /// Ticks so far.
    ticks: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The help text: the key bindings and commands.
pub const HELP: &[(&str, &str)] = &[
    ("Enter", "send the message (or run a /command)"),
    ("Alt+Enter, Ctrl+J", "new line in the message"),
    ("←→ Home End", "move in the input; Ctrl+←→ by word"),
    (
        "Ctrl+W Ctrl+U Ctrl+K",
        "delete word / to line start / to line end",
    ),
    ("↑ ↓", "previous / next sent message (history)"),
    ("PgUp PgDn, wheel", "scroll the conversation"),
    ("Tab, Shift+Tab", "next / previous conversation"),
    ("Esc", "normal mode: j k scroll, J K conversation,"),
    ("", "  g G oldest/newest, v verify, i type, q quit"),
    ("?", "this help (when the input is empty)"),
    ("Ctrl+C", "quit"),
    ("/add NAME INVITE", "add a contact from their invite"),
    ("/invite", "show your invite to give to a friend"),
    ("/verify", "compare safety numbers, mark verified"),
    ("/group create NAME", "create a group you own (and open it)"),
    ("/group add|remove C", "add / remove contact C (owner only)"),
    (
        "/group leave  /members",
        "leave the open group / its members and trust",
    ),
    ("/help  /quit", "this help / leave"),
];

impl App {
    /// A new app for `src`: loads the conversations and opens the first one.
    pub fn new(src: &mut dyn Source) -> Self {
        let mut app = Self {
            conversations: Vec::new(),
            selected: 0,
            history: None,
            input: Input::default(),
            mode: Mode::Insert,
            screen: Screen::Chat,
            help: false,
            popup: None,
            notice: None,
            relay: RelayState::Connecting,
            fingerprint: src.own_fingerprint(),
            now: Instant::now(),
            now_ms: now_ms(),
            size: (80, 24),
            pane_rows: 20,
            quit: false,
            flush_wanted: false,
            notes: HashMap::new(),
            read_mark: None,
            ticks: 0,
        };
        app.reload_conversations(src);
        app.open_selected(src);
        app
    }

    /// The selected conversation.
    pub fn current(&self) -> Option<&Conversation> {
        self.conversations.get(self.selected)
    }

    fn error(&mut self, e: impl Into<String>) {
        self.notice = Some(Notice::Error(e.into()));
    }

    fn info(&mut self, e: impl Into<String>) {
        self.notice = Some(Notice::Info(e.into()));
    }

    /// Reloads the conversation list, keeping the selection on the same conversation.
    pub fn reload_conversations(&mut self, src: &mut dyn Source) {
        let keep = self.current().map(|c| c.id.clone());
        match src.conversations() {
            Ok(mut v) => {
                v.sort_by(|a, b| {
                    b.last_ms
                        .cmp(&a.last_ms)
                        .then_with(|| a.title.cmp(&b.title))
                });
                self.conversations = v;
            }
            Err(e) => self.error(e),
        }
        self.selected = keep
            .and_then(|id| self.conversations.iter().position(|c| c.id == id))
            .unwrap_or(0)
            .min(self.conversations.len().saturating_sub(1));
    }

    /// Opens the selected conversation: counts it, loads the newest page, marks it read.
    pub fn open_selected(&mut self, src: &mut dyn Source) {
        let Some(id) = self.current().map(|c| c.id.clone()) else {
            self.history = None;
            return;
        };
        let total = match src.count(&id) {
            Ok(n) => n,
            Err(e) => return self.error(e),
        };
        let entries = match src.page(&id, None, PAGE) {
            Ok(p) => p.into(),
            Err(e) => return self.error(e),
        };
        self.history = Some(History {
            id: id.clone(),
            total,
            entries,
            scroll: 0,
        });
        self.mark_read(src);
    }

    /// Marks the open conversation read when it shows the newest entry. The mark is written
    /// once per newest entry (also for our own messages, so the unread count never rescans
    /// them).
    fn mark_read(&mut self, src: &mut dyn Source) {
        let Some(h) = &self.history else { return };
        if h.scroll != 0 {
            return;
        }
        let id = h.id.clone();
        let newest = h.entries.back().map(|e| e.row);
        if let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) {
            c.unread = 0;
        }
        let mark = (id, newest);
        if self.read_mark.as_ref() == Some(&mark) {
            return;
        }
        if let Err(e) = src.mark_read(&mark.0) {
            self.error(e);
        }
        self.read_mark = Some(mark);
    }

    /// Makes sure `n` entries from the bottom are loaded (lazy history).
    fn ensure_loaded(&mut self, n: usize, src: &mut dyn Source) {
        let Some(h) = &mut self.history else { return };
        while h.entries.len() < n && h.more_above() {
            let before = h.entries.front().map(|e| e.row);
            match src.page(&h.id, before, PAGE) {
                Ok(p) if p.is_empty() => {
                    h.total = h.entries.len();
                    break;
                }
                Ok(p) => {
                    for e in p.into_iter().rev() {
                        h.entries.push_front(e);
                    }
                }
                Err(e) => {
                    self.notice = Some(Notice::Error(e));
                    break;
                }
            }
        }
    }

    /// Scrolls the message pane by `delta` entries (positive: older).
    pub fn scroll(&mut self, delta: isize, src: &mut dyn Source) {
        let Some(h) = &self.history else { return };
        let target = h.scroll.saturating_add_signed(delta);
        // Keep a page loaded above the top of the pane.
        self.ensure_loaded(target + self.pane_rows + PAGE, src);
        let Some(h) = &mut self.history else { return };
        h.scroll = target.min(h.entries.len().saturating_sub(1));
        if h.scroll == 0 {
            self.mark_read(src);
        }
    }

    fn select(&mut self, index: usize, src: &mut dyn Source) {
        if self.conversations.is_empty() {
            return;
        }
        self.selected = index % self.conversations.len();
        self.open_selected(src);
    }

    fn select_next(&mut self, forward: bool, src: &mut dyn Source) {
        let n = self.conversations.len();
        if n == 0 {
            return;
        }
        let i = if forward {
            self.selected + 1
        } else {
            self.selected + n - 1
        };
        self.select(i, src);
    }

    /// Handles a terminal event.
    pub fn handle_terminal(&mut self, ev: TermEvent, src: &mut dyn Source) {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.handle_key(k, src),
            TermEvent::Mouse(m) => self.handle_mouse(m, src),
            TermEvent::Paste(s) if self.screen == Screen::Chat => {
                self.mode = Mode::Insert;
                self.input.insert_str(&s);
            }
            TermEvent::Resize(w, h) => {
                self.size = (w, h);
                self.resize(h);
            }
            _ => {}
        }
    }

    /// Records the terminal height (the message pane is about 8 rows less).
    pub fn resize(&mut self, height: u16) {
        self.pane_rows = usize::from(height.saturating_sub(8)).max(1);
    }

    /// Handles a mouse event: the wheel scrolls the conversation, a click in the list opens
    /// that conversation.
    pub fn handle_mouse(&mut self, m: MouseEvent, src: &mut dyn Source) {
        match m.kind {
            MouseEventKind::ScrollUp => self.scroll(3, src),
            MouseEventKind::ScrollDown => self.scroll(-3, src),
            MouseEventKind::Down(MouseButton::Left) if self.screen == Screen::Chat => {
                let list = crate::ui::areas(Rect::new(0, 0, self.size.0, self.size.1), self).list;
                let inside = m.column > list.x
                    && m.column + 1 < list.x + list.width
                    && m.row > list.y
                    && m.row + 1 < list.y + list.height;
                if inside {
                    let rows = usize::from(list.height.saturating_sub(2));
                    let first = crate::ui::list_first(self.selected, rows);
                    let i = first + usize::from(m.row - list.y - 1);
                    if i < self.conversations.len() && i != self.selected {
                        self.select(i, src);
                    }
                }
            }
            _ => {}
        }
    }

    /// Handles a key.
    pub fn handle_key(&mut self, k: KeyEvent, src: &mut dyn Source) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c')) {
            self.quit = true;
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if self.popup.is_some() {
            if matches!(k.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                self.popup = None;
            }
            return;
        }
        if let Screen::Verify { id, .. } = &self.screen {
            let id = id.clone();
            return self.verify_key(k, &id, src);
        }
        if let Screen::Members { .. } = &self.screen {
            if matches!(k.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                self.screen = Screen::Chat;
            }
            return;
        }
        match self.mode {
            Mode::Insert => self.insert_key(k, src),
            Mode::Normal => self.normal_key(k, src),
        }
    }

    fn verify_key(&mut self, k: KeyEvent, id: &ConvId, src: &mut dyn Source) {
        match k.code {
            KeyCode::Char('v') => match src.set_verified(id, true) {
                Ok(()) => {
                    self.info(format!("{} is now verified", id.key));
                    self.screen = Screen::Chat;
                    self.reload_conversations(src);
                }
                Err(e) => self.error(e),
            },
            KeyCode::Char('u') => match src.set_verified(id, false) {
                Ok(()) => {
                    self.info(format!("{} marked unverified", id.key));
                    self.screen = Screen::Chat;
                    self.reload_conversations(src);
                }
                Err(e) => self.error(e),
            },
            KeyCode::Esc | KeyCode::Char('q') => self.screen = Screen::Chat,
            _ => {}
        }
    }

    fn normal_key(&mut self, k: KeyEvent, src: &mut dyn Source) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let half = isize::try_from(self.pane_rows / 2).unwrap_or(10).max(1);
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => self.scroll(-1, src),
            KeyCode::Char('k') | KeyCode::Up => self.scroll(1, src),
            KeyCode::Char('d') if ctrl => self.scroll(-half, src),
            KeyCode::Char('u') if ctrl => self.scroll(half, src),
            KeyCode::PageUp => self.scroll(half * 2, src),
            KeyCode::PageDown => self.scroll(-half * 2, src),
            KeyCode::Char('J') | KeyCode::Tab => self.select_next(true, src),
            KeyCode::Char('K') | KeyCode::BackTab => self.select_next(false, src),
            KeyCode::Char('G') | KeyCode::End => self.scroll(isize::MIN / 2, src),
            KeyCode::Char('g') | KeyCode::Home => {
                let loaded = self.history.as_ref().map_or(0, |h| h.entries.len());
                self.scroll(isize::try_from(loaded).unwrap_or(0), src);
            }
            KeyCode::Char('v') => self.command("/verify", src),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('i' | 'a') | KeyCode::Enter => self.mode = Mode::Insert,
            KeyCode::Char('/') => {
                self.mode = Mode::Insert;
                self.input.insert('/');
            }
            _ => {}
        }
    }

    fn insert_key(&mut self, k: KeyEvent, src: &mut dyn Source) {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        let shift = k.modifiers.contains(KeyModifiers::SHIFT);
        let page = isize::try_from(self.pane_rows).unwrap_or(10).max(1);
        match k.code {
            KeyCode::Enter if alt || shift => self.input.insert('\n'),
            KeyCode::Char('j') if ctrl => self.input.insert('\n'),
            KeyCode::Enter => self.submit(src),
            KeyCode::Esc => self.mode = Mode::Normal,
            KeyCode::Char('?') if self.input.is_empty() => self.help = true,
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('u') if ctrl => self.input.kill_to_start(),
            KeyCode::Char('k') if ctrl => self.input.kill_to_end(),
            KeyCode::Char('p') if ctrl => self.input.history_prev(),
            KeyCode::Char('n') if ctrl => self.input.history_next(),
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace if ctrl || alt => self.input.delete_word(),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left if ctrl => self.input.word_left(),
            KeyCode::Right if ctrl => self.input.word_right(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up if alt => self.select_next(false, src),
            KeyCode::Down if alt => self.select_next(true, src),
            KeyCode::Up if !self.input.up() => self.input.history_prev(),
            KeyCode::Down if !self.input.down() => self.input.history_next(),
            KeyCode::PageUp => self.scroll(page, src),
            KeyCode::PageDown => self.scroll(-page, src),
            KeyCode::Tab => self.select_next(true, src),
            KeyCode::BackTab => self.select_next(false, src),
            _ => {}
        }
    }

    /// Sends the input (or runs it as a command).
    fn submit(&mut self, src: &mut dyn Source) {
        let text = self.input.text().trim_end().to_owned();
        if text.trim().is_empty() {
            return;
        }
        if text.starts_with('/') {
            self.input.take();
            return self.command(&text, src);
        }
        let Some(conv) = self.current().cloned() else {
            return self.error("no conversation: add a contact with /add NAME INVITE");
        };
        if conv.badge == (Badge::KeyChanged { blocked: true }) {
            return self.error(format!(
                "not sent: {}'s key changed; /verify to compare the new safety number",
                conv.title
            ));
        }
        match src.send(&conv.id, &text) {
            Ok(()) => {
                self.input.take();
                self.flush_wanted = true;
                self.notice = None;
                self.refresh_tail(src);
                self.reload_conversations(src);
            }
            Err(e) => self.error(e),
        }
    }

    /// Runs a `/command`. Errors become a notice; nothing here exits except `/quit`.
    pub fn command(&mut self, line: &str, src: &mut dyn Source) {
        let mut parts = line.split_whitespace();
        let cmd = parts.next().unwrap_or("");
        let args: Vec<&str> = parts.collect();
        match (cmd, args.as_slice()) {
            ("/quit" | "/q", []) => self.quit = true,
            ("/help" | "/h", []) => self.help = true,
            ("/invite", []) => match src.invite() {
                Ok(inv) => {
                    self.popup = Some(Popup {
                        title: "Your invite (Esc to close)".into(),
                        body: format!(
                            "Give this to a friend; they type /add YOURNAME INVITE.\n\n{inv}"
                        ),
                    });
                }
                Err(e) => self.error(e),
            },
            ("/add", [name, invite]) => match src.add_contact(name, invite) {
                Ok(msg) => {
                    self.info(msg);
                    self.reload_conversations(src);
                    if let Some(i) = self.conversations.iter().position(|c| c.title == *name) {
                        self.select(i, src);
                    }
                }
                Err(e) => self.error(e),
            },
            ("/add", _) => self.error("usage: /add NAME INVITE"),
            ("/verify", []) | ("/members", []) => {
                let Some(id) = self.current().map(|c| c.id.clone()) else {
                    return self.error("no conversation to verify");
                };
                if id.is_group() {
                    return match src.group_view(&id.key) {
                        Ok(view) => self.screen = Screen::Members { view },
                        Err(e) => self.error(e),
                    };
                }
                if cmd == "/members" {
                    return self.error("/members works in a group; /verify for a contact");
                }
                match src.safety(&id) {
                    Ok(safety) => self.screen = Screen::Verify { id, safety },
                    Err(e) => self.error(e),
                }
            }
            ("/group", ["create", name @ ..]) if !name.is_empty() => {
                let name = name.join(" ");
                match src.group_create(&name) {
                    Ok(()) => {
                        self.info(format!(
                            "created group {name}; /group add CONTACT to invite members"
                        ));
                        self.reload_conversations(src);
                        let id = ConvId::group(&name);
                        if let Some(i) = self.conversations.iter().position(|c| c.id == id) {
                            self.select(i, src);
                        }
                    }
                    Err(e) => self.error(e),
                }
            }
            ("/group", ["add", contact]) => self.group_op(GroupOp::Add((*contact).to_owned()), src),
            ("/group", ["remove", contact]) => {
                self.group_op(GroupOp::Remove((*contact).to_owned()), src);
            }
            ("/group", ["leave"]) => self.group_op(GroupOp::Leave, src),
            ("/group", [answer @ ("accept" | "decline"), name @ ..]) if !name.is_empty() => {
                let name = name.join(" ");
                match src.group_invite_answer(&name, *answer == "accept") {
                    Ok(events) => {
                        self.flush_wanted = true;
                        self.info(format!("group invite {name}: {answer}ed"));
                        self.handle_client_events(&events, src);
                        self.reload_conversations(src);
                    }
                    Err(e) => self.error(e),
                }
            }
            ("/group", _) => self.error(
                "usage: /group create NAME | /group add CONTACT | /group remove CONTACT | /group leave | /group accept|decline INVITE",
            ),
            _ => self.error(format!("unknown command {line:?}: type /help")),
        }
    }

    /// Applies a roster change to the open group.
    fn group_op(&mut self, op: GroupOp, src: &mut dyn Source) {
        let Some(id) = self
            .current()
            .map(|c| c.id.clone())
            .filter(ConvId::is_group)
        else {
            return self.error("open a group first (Tab), or /group create NAME");
        };
        match src.group_change(&id.key, &op) {
            Ok(events) => {
                self.flush_wanted = true;
                self.notice = None;
                self.handle_client_events(&events, src);
            }
            Err(e) => self.error(e),
        }
    }

    /// Records a system line in a conversation, after its newest entry.
    fn add_note(&mut self, id: ConvId, note: Note, src: &mut dyn Source) {
        let after = src
            .page(&id, None, 1)
            .ok()
            .and_then(|p| p.last().map(|e| e.row))
            .unwrap_or(0);
        self.notes
            .entry(id)
            .or_default()
            .entry(after)
            .or_default()
            .push(note);
    }

    /// Reloads the newest entries of the open conversation (after sending or receiving).
    pub fn refresh_tail(&mut self, src: &mut dyn Source) {
        let Some(h) = &mut self.history else { return };
        let total = match src.count(&h.id) {
            Ok(n) => n,
            Err(e) => return self.error(e),
        };
        if total == h.total {
            if h.id.is_group() {
                // Group sends report no delivery event: pick up the states of our newest
                // messages from the history.
                let n = h.entries.len().min(PAGE);
                if let Ok(p) = src.page(&h.id, None, n) {
                    for fresh in p {
                        if let Some(e) = h.entries.iter_mut().rev().find(|e| e.row == fresh.row) {
                            e.message.state = fresh.message.state;
                            e.message.error = fresh.message.error;
                        }
                    }
                }
            }
            return;
        }
        let newest = h.entries.back().map(|e| e.row);
        let added = total.saturating_sub(h.total);
        match src.page(&h.id, None, added.min(PAGE)) {
            Ok(p) => {
                let fresh: Vec<Entry> = p
                    .into_iter()
                    .filter(|e| newest.is_none_or(|n| e.row > n))
                    .collect();
                if h.scroll > 0 {
                    h.scroll += fresh.len();
                }
                h.entries.extend(fresh);
                h.total = total;
            }
            Err(e) => return self.error(e),
        }
        self.mark_read(src);
    }

    /// Applies what the client reported.
    pub fn handle_client_events(&mut self, events: &[ClientEvent], src: &mut dyn Source) {
        let mut reload = false;
        for ev in events {
            match ev {
                ClientEvent::Connected | ClientEvent::Synced => self.relay = RelayState::Connected,
                ClientEvent::Message(_)
                | ClientEvent::UnknownSender { .. }
                | ClientEvent::GroupMessage(_) => reload = true,
                ClientEvent::GroupChanged {
                    group,
                    epoch,
                    change,
                } => {
                    self.add_note(
                        ConvId::group(group),
                        Note::Roster(format!("{change} (roster epoch {epoch})")),
                        src,
                    );
                    reload = true;
                }
                ClientEvent::GroupWarning { group, warning } if !group.is_empty() => {
                    self.add_note(ConvId::group(group), Note::Warning(warning.clone()), src);
                    reload = true;
                }
                ClientEvent::GroupWarning { warning, .. } => {
                    self.error(format!("group warning: {warning}"));
                }
                ClientEvent::GroupInvite {
                    group,
                    inviter,
                    members,
                } => self.info(format!(
                    "{inviter} invites you to group {group} ({members} members): /group accept {group} or /group decline {group}"
                )),
                ClientEvent::Delivery { id, state, .. } => self.set_delivery(id, *state),
                _ => {}
            }
        }
        if reload {
            self.refresh_tail(src);
            self.reload_conversations(src);
            if self.history.is_none() {
                self.open_selected(src);
            }
            // The open conversation is read when it is showing the newest entries.
            self.mark_read(src);
        }
    }

    fn set_delivery(&mut self, id: &str, state: DeliveryState) {
        let Some(h) = &mut self.history else { return };
        if let Some(e) = h
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.message.id == id && e.message.direction == Direction::Out)
        {
            e.message.state = state;
        }
    }

    /// A tick: updates the clocks and picks up anything stored meanwhile.
    pub fn tick(&mut self, src: &mut dyn Source) {
        self.now = Instant::now();
        self.now_ms = now_ms();
        self.refresh_tail(src);
        // A safety net for events lost when the network branch was interrupted after storing a
        // message: every few ticks the list (unread counts, last times) is read again.
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(LIST_REFRESH_TICKS) {
            self.reload_conversations(src);
        }
    }

    /// Seconds until the next reconnection attempt, when waiting for one.
    pub fn retry_in(&self) -> Option<Duration> {
        match self.relay {
            RelayState::Retrying(at) => Some(at.saturating_duration_since(self.now)),
            _ => None,
        }
    }
}
