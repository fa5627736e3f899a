//! Drawing: a pure function of the [`App`] state. Nothing here changes state or does I/O.
//!
//! ```text
//! ┌ Conversations ┐┌ bob ✓ verified ─────────────────────┐
//! │✓ bob     2 15:34││ 15:34 bob: hi                     │
//! │  carol     09:12││ 15:35 me: hello · delivered        │
//! └────────────────┘└─────────────────────────────────────┘
//! ┌ Message to bob ───────────────────────────────────────┐
//! └───────────────────────────────────────────────────────┘
//!  notice line (errors in red)
//!  status bar: relay state · reconnect countdown · your fingerprint
//! ```

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use sotto_client::{DeliveryState, Direction, Message};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::{App, HELP, Mode, Note, Notes, Notice, RelayState, Screen};
use crate::source::{Badge, Conversation, GroupView};

/// The smallest terminal the layout is designed for.
pub const MIN_SIZE: (u16, u16) = (60, 20);

/// Where each part of the chat screen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    /// The conversation list (with its border).
    pub list: Rect,
    /// The message pane or the verification screen.
    pub pane: Rect,
    /// The input box.
    pub input: Rect,
    /// The notice line.
    pub notice: Rect,
    /// The status bar.
    pub status: Rect,
}

/// The layout of a terminal of size `area` (shared by drawing and mouse handling).
pub fn areas(area: Rect, app: &App) -> Areas {
    let input_lines = u16::try_from(app.input.line_count()).unwrap_or(u16::MAX);
    let input_h = input_lines.clamp(1, (area.height / 4).max(1)) + 2;
    let [main, input, notice, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(input_h),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let list_w = (area.width / 3).clamp(18, 30);
    let [list, pane] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(10)]).areas(main);
    Areas {
        list,
        pane,
        input,
        notice,
        status,
    }
}

/// The first conversation shown in a list of `rows` rows (keeps the selection visible).
pub fn list_first(selected: usize, rows: usize) -> usize {
    selected.saturating_sub(rows.saturating_sub(1))
}

/// Peer text with terminal controls shown as escapes (`sotto_client::text`).
fn shown(s: &str) -> String {
    sotto_client::text::escape_controls(s).into_owned()
}

/// The last line of defence: no cell may carry a terminal control or bidi override to the
/// terminal, whatever text a widget was given (peer text is also escaped visibly where it is
/// laid out; this removes anything a path forgot).
fn scrub(buf: &mut ratatui::buffer::Buffer) {
    for cell in &mut buf.content {
        if cell
            .symbol()
            .chars()
            .any(sotto_client::text::is_unsafe_char)
        {
            let clean: String = cell
                .symbol()
                .chars()
                .filter(|c| !sotto_client::text::is_unsafe_char(*c))
                .collect();
            cell.set_symbol(if clean.is_empty() { " " } else { &clean });
        }
    }
}

/// Draws the whole UI.
pub fn draw(f: &mut Frame<'_>, app: &App) {
    draw_all(f, app);
    scrub(f.buffer_mut());
}

fn draw_all(f: &mut Frame<'_>, app: &App) {
    let area = f.area();
    if area.width < 20 || area.height < 8 {
        f.render_widget(
            Paragraph::new("too small for sotto chat (60x20)").wrap(Wrap { trim: false }),
            area,
        );
        return;
    }
    let Areas {
        list,
        pane,
        input,
        notice,
        status,
    } = areas(area, app);

    draw_list(f, app, list);
    match &app.screen {
        Screen::Chat => draw_messages(f, app, pane),
        Screen::Verify { id, safety } => draw_verify(f, &id.key, safety, pane),
        Screen::Members { view } => draw_members(f, view, pane),
    }
    draw_input(f, app, input);
    draw_notice(f, app, notice);
    draw_status(f, app, status);
    if let Some(p) = &app.popup {
        let r = centered(area, 70, 12);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(p.body.as_str())
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(p.title.as_str())),
            r,
        );
    }
    if app.help {
        draw_help(f, area);
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// `HH:MM` today, else `MM-DD` (UTC).
pub fn short_time(ms: u64, now_ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
    .to_string();
    let n = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms),
    )
    .to_string();
    if t.get(..10) == n.get(..10) {
        t.get(11..16).unwrap_or("").to_owned()
    } else {
        t.get(5..10).unwrap_or("").to_owned()
    }
}

fn badge_span(b: Badge) -> Span<'static> {
    match b {
        Badge::Verified => Span::styled("✓", Style::new().fg(Color::Green)),
        Badge::Unverified => Span::raw(" "),
        Badge::KeyChanged { .. } => Span::styled(
            "!",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    }
}

fn truncate(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width {
            break;
        }
        w += cw;
        out.push(c);
    }
    out
}

fn list_line(c: &Conversation, width: usize, now_ms: u64, selected: bool) -> Line<'static> {
    let unread = match c.unread {
        0 => String::new(),
        n if n >= crate::source::UNREAD_CAP => "99+".into(),
        n => n.to_string(),
    };
    let time = c.last_ms.map(|t| short_time(t, now_ms)).unwrap_or_default();
    // badge + space, name, " " unread, " " time
    let right = format!("{unread:>3} {time:>5}");
    let name_w = width.saturating_sub(2 + right.width());
    // A group shows as "#name (members)".
    let title = match c.members {
        Some(n) => format!("#{} ({n})", shown(&c.title)),
        None => shown(&c.title),
    };
    let name = truncate(&title, name_w);
    let pad = name_w.saturating_sub(name.width());
    let mut style = Style::new();
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    if c.unread > 0 {
        style = style.add_modifier(Modifier::BOLD);
    }
    Line::from(vec![
        badge_span(c.badge),
        // The marker keeps the selection visible without colours (and in text captures).
        Span::styled(
            format!(
                "{}{name}{}",
                if selected { '▸' } else { ' ' },
                " ".repeat(pad)
            ),
            style,
        ),
        Span::styled(right, style),
    ])
}

fn draw_list(f: &mut Frame<'_>, app: &App, area: Rect) {
    let block = Block::bordered().title("Conversations");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = usize::from(inner.height);
    // Keep the selection visible.
    let first = list_first(app.selected, rows);
    let lines: Vec<Line<'_>> = app
        .conversations
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, c)| list_line(c, usize::from(inner.width), app.now_ms, i == app.selected))
        .collect();
    if lines.is_empty() {
        f.render_widget(
            Paragraph::new("(no contacts)").style(Style::new().fg(Color::DarkGray)),
            inner,
        );
    } else {
        f.render_widget(Paragraph::new(lines), inner);
    }
}

/// Breaks `text` into lines of at most `width` columns, at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut w = 0;
        for word in para.split_inclusive(' ') {
            let ww = word.width();
            if w + ww > width && !line.is_empty() {
                out.push(std::mem::take(&mut line).trim_end().to_owned());
                w = 0;
            }
            if ww > width {
                for c in word.chars() {
                    let cw = c.width().unwrap_or(0);
                    if w + cw > width {
                        out.push(std::mem::take(&mut line));
                        w = 0;
                    }
                    line.push(c);
                    w += cw;
                }
            } else {
                line.push_str(word);
                w += ww;
            }
        }
        out.push(line.trim_end().to_owned());
    }
    out
}

fn state_label(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Queued => "queued",
        DeliveryState::Accepted => "accepted",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Received => "received",
        DeliveryState::Failed => "failed",
    }
}

/// The lines of one history entry at `width` columns.
pub fn message_lines(m: &Message, width: usize, now_ms: u64) -> Vec<Line<'static>> {
    let time = short_time(m.sent_ms, now_ms);
    let (who, who_style) = match m.direction {
        Direction::In => (shown(&m.contact), Style::new().fg(Color::Cyan)),
        Direction::Out => ("me".to_owned(), Style::new().fg(Color::Yellow)),
    };
    let prefix = format!("{time:>5} {who}: ");
    let indent = prefix.width().min(width / 2);
    let (body, body_style, suffix) = match (&m.text, m.direction) {
        (None, _) => (
            format!(
                "⚠ could not decrypt: {}",
                shown(m.error.as_deref().unwrap_or("unknown reason"))
            ),
            Style::new().fg(Color::Red),
            None,
        ),
        (Some(t), Direction::Out) => match (&m.error, m.state) {
            (Some(e), _) => (
                shown(t),
                Style::new(),
                Some((
                    format!(" · failed: {}", shown(e)),
                    Style::new().fg(Color::Red),
                )),
            ),
            (None, s) => (
                shown(t),
                Style::new(),
                Some((
                    format!(" · {}", state_label(s)),
                    Style::new().fg(if s == DeliveryState::Delivered {
                        Color::Green
                    } else {
                        Color::DarkGray
                    }),
                )),
            ),
        },
        (Some(t), Direction::In) => (shown(t), Style::new(), None),
    };
    let avail = width.saturating_sub(indent).max(1);
    let mut rows = wrap(&body, avail);
    let mut lines = Vec::with_capacity(rows.len());
    let suffix_fits = suffix
        .as_ref()
        .is_some_and(|(s, _)| rows.last().is_some_and(|l| l.width() + s.width() <= avail));
    let last = rows.len().saturating_sub(1);
    for (i, row) in rows.drain(..).enumerate() {
        let mut spans = Vec::with_capacity(4);
        if i == 0 {
            spans.push(Span::styled(
                format!("{time:>5} "),
                Style::new().fg(Color::DarkGray),
            ));
            spans.push(Span::styled(
                format!("{who}: "),
                who_style.add_modifier(Modifier::BOLD),
            ));
        } else {
            spans.push(Span::raw(" ".repeat(indent)));
        }
        spans.push(Span::styled(row, body_style));
        if i == last
            && suffix_fits
            && let Some((s, st)) = &suffix
        {
            spans.push(Span::styled(s.clone(), *st));
        }
        lines.push(Line::from(spans));
    }
    if !suffix_fits && let Some((s, st)) = suffix {
        lines.push(Line::from(vec![
            Span::raw(" ".repeat(indent)),
            Span::styled(s.trim_start().to_owned(), st),
        ]));
    }
    lines
}

fn draw_messages(f: &mut Frame<'_>, app: &App, area: Rect) {
    let conv = app.current();
    let title = match conv {
        Some(c) if c.members.is_some() => {
            let n = c.members.unwrap_or(0);
            let trust = match c.badge {
                Badge::Verified => "✓ all verified",
                _ => "· not all verified",
            };
            let plural = if n == 1 { "" } else { "s" };
            format!(
                "#{} · {n} member{plural} {trust} · /members",
                shown(&c.title)
            )
        }
        Some(c) => {
            let trust = match c.badge {
                Badge::Verified => " ✓ verified",
                Badge::Unverified => " · unverified",
                Badge::KeyChanged { .. } => " ! key changed",
            };
            format!("{}{trust}", shown(&c.title))
        }
        None => "sotto".to_owned(),
    };
    let block = Block::bordered().title(title);
    let mut inner = block.inner(area);
    f.render_widget(block, area);
    let Some(c) = conv else {
        let text = vec![
            Line::from("No conversations yet."),
            Line::from(""),
            Line::from("1. Type /invite and send your invite to a friend."),
            Line::from("2. Add theirs: /add NAME INVITE"),
            Line::from("3. Compare safety numbers: /verify"),
            Line::from(""),
            Line::from("Press ? for the keys."),
        ];
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
        return;
    };
    if let Badge::KeyChanged { blocked } = c.badge {
        let msg = if blocked {
            format!(
                "⚠ {}'s key changed since you verified it. Sending is blocked until you /verify again.",
                shown(&c.title)
            )
        } else {
            format!(
                "⚠ {}'s key changed. Compare the new safety number: /verify",
                shown(&c.title)
            )
        };
        let lines = wrap(&msg, usize::from(inner.width));
        let h = u16::try_from(lines.len())
            .unwrap_or(1)
            .min(inner.height / 2)
            .max(1);
        let banner = Rect { height: h, ..inner };
        f.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).style(
                Style::new()
                    .fg(Color::White)
                    .bg(Color::Red)
                    .add_modifier(Modifier::BOLD),
            ),
            banner,
        );
        inner.y += h;
        inner.height -= h;
    }
    let Some(h) = &app.history else { return };
    let empty = Notes::new();
    let notes = app.notes.get(&h.id).unwrap_or(&empty);
    if h.entries.is_empty() && notes.is_empty() {
        f.render_widget(
            Paragraph::new("No messages yet. Say hello!").style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let width = usize::from(inner.width);
    let rows = usize::from(inner.height);
    // Walk up from the bottom entry until the pane is full: only visible entries are laid out.
    // System lines (roster changes, warnings) follow the entry they were recorded after.
    let bottom = h.entries.len().saturating_sub(1 + h.scroll);
    let mut lines: Vec<Line<'static>> = Vec::with_capacity(rows + 8);
    let mut idx = bottom + 1;
    while idx > 0 && lines.len() < rows {
        idx -= 1;
        if let Some(e) = h.entries.get(idx) {
            let next = h.entries.get(idx + 1).map_or(i64::MAX, |n| n.row);
            push_notes_rev(&mut lines, notes.range(e.row..next), width);
            let mut ls = message_lines(&e.message, width, app.now_ms);
            ls.reverse();
            lines.extend(ls);
        }
    }
    let at_top = idx == 0 && !h.more_above();
    if at_top {
        let first = h.entries.front().map_or(i64::MAX, |e| e.row);
        push_notes_rev(&mut lines, notes.range(..first), width);
    }
    if lines.len() < rows && at_top {
        lines.push(Line::styled(
            "— start of the conversation —",
            Style::new().fg(Color::DarkGray),
        ));
    }
    lines.truncate(rows);
    lines.reverse();
    let pad = rows.saturating_sub(lines.len());
    let para_area = Rect {
        y: inner.y + u16::try_from(pad).unwrap_or(0),
        height: u16::try_from(lines.len()).unwrap_or(inner.height),
        ..inner
    };
    f.render_widget(Paragraph::new(lines), para_area);
    if h.scroll > 0 {
        let label = format!(" {} newer ↓ ", h.scroll);
        let w = u16::try_from(label.width()).unwrap_or(0).min(area.width);
        let r = Rect {
            x: area.x + area.width.saturating_sub(w + 1),
            y: area.y + area.height.saturating_sub(1),
            width: w,
            height: 1,
        };
        f.render_widget(
            Paragraph::new(label).style(Style::new().add_modifier(Modifier::REVERSED)),
            r,
        );
    }
}

/// The lines of a system line (roster change or warning) at `width` columns.
pub fn note_lines(note: &Note, width: usize) -> Vec<Line<'static>> {
    let (text, style) = match note {
        Note::Roster(t) => (
            format!("— {t} —"),
            Style::new()
                .fg(Color::Magenta)
                .add_modifier(Modifier::ITALIC),
        ),
        Note::Warning(t) => (
            format!("⚠ {t}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    wrap(&text, width)
        .into_iter()
        .map(|l| Line::styled(l, style))
        .collect()
}

/// Appends the lines of `notes`, last first (the pane is built bottom up).
fn push_notes_rev<'a>(
    lines: &mut Vec<Line<'static>>,
    notes: impl DoubleEndedIterator<Item = (&'a i64, &'a Vec<Note>)>,
    width: usize,
) {
    for (_, ns) in notes.rev() {
        for n in ns.iter().rev() {
            let mut ls = note_lines(n, width);
            ls.reverse();
            lines.extend(ls);
        }
    }
}

fn draw_members(f: &mut Frame<'_>, view: &GroupView, area: Rect) {
    let block = Block::bordered().title(format!("Members of #{}", shown(&view.name)));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let n = view.members.len();
    let mut lines = vec![Line::from(format!(
        "{n} member{} · roster epoch {} · {}{}",
        if n == 1 { "" } else { "s" },
        view.epoch,
        if view.is_owner {
            "you own this group"
        } else {
            "owned by another member"
        },
        if view.active {
            ""
        } else {
            " · you are no longer a member"
        },
    ))];
    lines.push(Line::from(""));
    let name_w = view
        .members
        .iter()
        .map(|m| m.name.width())
        .max()
        .unwrap_or(0)
        .clamp(4, 20);
    for m in &view.members {
        let (mark, trust, style) = if m.is_you {
            (" ", "(this is you)", Style::new())
        } else if m.verified {
            ("✓", "verified", Style::new().fg(Color::Green))
        } else {
            ("!", "NOT verified", Style::new().fg(Color::Yellow))
        };
        let mut spans = vec![
            Span::styled(format!("{mark} "), style.add_modifier(Modifier::BOLD)),
            Span::styled(
                format!("{:<name_w$}  ", truncate(&shown(&m.name), name_w)),
                bold,
            ),
            Span::styled(format!("{trust:<13}"), style),
            Span::styled(
                format!(" {}", m.fingerprint.get(..16).unwrap_or(&m.fingerprint)),
                Style::new().fg(Color::DarkGray),
            ),
        ];
        if m.is_owner {
            spans.push(Span::raw(" owner"));
        }
        if !m.has_key {
            spans.push(Span::styled(
                " · no sender key yet",
                Style::new().fg(Color::DarkGray),
            ));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(""));
    if view.all_verified() {
        lines.push(Line::styled(
            "Every member's safety number is verified.",
            Style::new().fg(Color::Green),
        ));
    } else {
        lines.push(Line::from(
            "Verify a member in their own conversation (/verify) before trusting the group.",
        ));
    }
    lines.push(Line::from(vec![
        Span::styled("Esc", bold),
        Span::raw(" back   /group add CONTACT · /group remove CONTACT · /group leave"),
    ]));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// The QR code as lines of half blocks (two modules per character cell).
pub fn qr_lines(data: &[u8]) -> Vec<String> {
    match qrcode::QrCode::new(data) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build()
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(_) => vec!["(too long for a QR code)".into()],
    }
}

fn draw_verify(f: &mut Frame<'_>, name: &str, safety: &crate::source::Safety, area: Rect) {
    let block = Block::bordered().title(format!("Verify {name}"));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let groups: Vec<&str> = safety.grouped.split(' ').collect();
    let mut lines = vec![
        Line::from(format!("Safety number with {name}:")),
        Line::from(""),
    ];
    for row in groups.chunks(4) {
        lines.push(Line::styled(
            format!("  {}", row.join("  ")),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(format!(
        "Compare with {name}'s screen (in person or on a call you trust),"
    )));
    lines.push(Line::from("or scan the QR code."));
    lines.push(Line::from(vec![
        Span::styled("v", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" they match: mark verified   "),
        Span::styled("u", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" mark unverified   "),
        Span::styled("Esc", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" back"),
    ]));
    lines.push(Line::from(""));
    let qr = qr_lines(&safety.qr);
    let qr_w = qr.first().map_or(0, |l| l.width());
    let room = usize::from(inner.height).saturating_sub(lines.len());
    if qr.len() <= room && qr_w <= usize::from(inner.width) {
        lines.extend(qr.into_iter().map(Line::from));
    } else {
        lines.push(Line::styled(
            "(enlarge the terminal to see the QR code)",
            Style::new().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn draw_input(f: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match (app.mode, app.current()) {
        (Mode::Normal, _) => "NORMAL — i to type, ? for keys".to_owned(),
        (Mode::Insert, Some(c)) => format!("Message to {} — Enter sends, ? help", shown(&c.title)),
        (Mode::Insert, None) => "Command — /invite, /add NAME INVITE, ? help".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (line, col) = app.input.cursor_line_col();
    let text = app.input.text();
    let cur_line = text.split('\n').nth(line).unwrap_or("");
    let col_w = cur_line
        .chars()
        .take(col)
        .map(|c| c.width().unwrap_or(0))
        .sum::<usize>();
    let w = usize::from(inner.width).max(1);
    let h = usize::from(inner.height).max(1);
    let scroll_x = col_w.saturating_sub(w - 1);
    let scroll_y = line.saturating_sub(h - 1);
    f.render_widget(
        Paragraph::new(text).scroll((
            u16::try_from(scroll_y).unwrap_or(0),
            u16::try_from(scroll_x).unwrap_or(0),
        )),
        inner,
    );
    if app.mode == Mode::Insert && app.screen == Screen::Chat && !app.help && app.popup.is_none() {
        f.set_cursor_position(Position {
            x: inner.x + u16::try_from(col_w - scroll_x).unwrap_or(0),
            y: inner.y + u16::try_from(line - scroll_y).unwrap_or(0),
        });
    }
}

fn draw_notice(f: &mut Frame<'_>, app: &App, area: Rect) {
    let line = match &app.notice {
        Some(Notice::Error(e)) => Line::styled(format!("error: {e}"), Style::new().fg(Color::Red)),
        Some(Notice::Info(i)) => Line::styled(i.clone(), Style::new().fg(Color::Green)),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_status(f: &mut Frame<'_>, app: &App, area: Rect) {
    let (relay, style) = match app.relay {
        RelayState::Connected => ("● connected".to_owned(), Style::new().fg(Color::Green)),
        RelayState::Connecting => ("◌ connecting…".to_owned(), Style::new().fg(Color::Yellow)),
        RelayState::Retrying(_) => {
            let s = app.retry_in().map_or(0, |d| d.as_secs() + 1);
            (
                format!("○ offline, retrying in {s}s"),
                Style::new().fg(Color::Red),
            )
        }
        RelayState::NotRegistered => (
            "○ not registered (sotto register)".to_owned(),
            Style::new().fg(Color::Red),
        ),
    };
    let right = format!("you: {} ", app.fingerprint);
    let pad = usize::from(area.width).saturating_sub(relay.width() + right.width() + 1);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!(" {relay}"), style),
            Span::raw(" ".repeat(pad)),
            Span::styled(right, Style::new().fg(Color::DarkGray)),
        ]))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn draw_help(f: &mut Frame<'_>, area: Rect) {
    let key_w = HELP.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<key_w$}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*d),
            ])
        })
        .collect();
    let h = u16::try_from(lines.len()).unwrap_or(20) + 2;
    let r = centered(area, 72, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title("Keys and commands (any key closes)")),
        r,
    );
}
