//! The UI through ratatui's `TestBackend`: the important screens as text snapshots
//! (`tests/snapshots/*.txt`; regenerate with `UPDATE_SNAPSHOTS=1` and review the diff), and
//! interaction through `App::handle_terminal` against an in-memory source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto_client::{DeliveryState, Direction};
use sotto_tui::app::{App, Mode, Notice, RelayState, Screen};
use sotto_tui::memory::MemorySource;
use sotto_tui::source::{Badge, Source};
use sotto_tui::ui;

/// 2026-11-26 12:00:00 UTC.
const NOW: u64 = 1_795_694_400_000;
const MIN: u64 = 60_000;

fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "screen {name} differs from its snapshot:\n{actual}"
    );
}

fn fixed(app: &mut App) {
    app.now_ms = NOW;
    app.relay = RelayState::Connected;
}

fn key(app: &mut App, src: &mut MemorySource, code: KeyCode) {
    app.handle_terminal(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)), src);
}

fn ctrl(app: &mut App, src: &mut MemorySource, c: char) {
    app.handle_terminal(
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)),
        src,
    );
}

fn typed(app: &mut App, src: &mut MemorySource, s: &str) {
    for c in s.chars() {
        key(app, src, KeyCode::Char(c));
    }
}

fn conversation() -> MemorySource {
    let mut s = MemorySource::new();
    s.add("alice", Badge::Verified);
    s.add("bob", Badge::Unverified);
    s.push(
        "bob",
        Direction::In,
        NOW - 300 * MIN,
        Some("old news"),
        DeliveryState::Received,
        None,
    );
    s.push(
        "alice",
        Direction::In,
        NOW - 10 * MIN,
        Some("hi! are you there?"),
        DeliveryState::Received,
        None,
    );
    s.push(
        "alice",
        Direction::Out,
        NOW - 9 * MIN,
        Some("yes, here"),
        DeliveryState::Delivered,
        None,
    );
    s.push(
        "alice",
        Direction::Out,
        NOW - 8 * MIN,
        Some("a longer message that has to wrap over more than one line of the message pane"),
        DeliveryState::Accepted,
        None,
    );
    s.push(
        "alice",
        Direction::In,
        NOW - 7 * MIN,
        None,
        DeliveryState::Failed,
        Some("message could not be authenticated"),
    );
    s.push(
        "alice",
        Direction::Out,
        NOW - MIN,
        Some("still there?"),
        DeliveryState::Queued,
        None,
    );
    s
}

#[test]
fn empty_state() {
    let mut src = MemorySource::new();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("No conversations yet."));
    assert!(screen.contains("/add NAME INVITE"));
    assert!(screen.contains("you: 0123456789abcdef"));
    snapshot("empty", &screen);
}

#[test]
fn conversation_screen() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    // Most recent first: alice, then bob (with its unread message).
    assert_eq!(app.conversations[0].title, "alice");
    assert_eq!(app.conversations[1].unread, 1);
    let screen = render(&app, 80, 24);
    for want in [
        "11:50 alice: hi! are you there?",
        "11:51 me: yes, here · delivered",
        "· accepted",
        "alice: ⚠ could not decrypt: message could not",
        "11:59 me: still there? · queued",
        "alice ✓ verified",
        "● connected",
    ] {
        assert!(screen.contains(want), "missing {want:?} in\n{screen}");
    }
    snapshot("conversation", &screen);
}

#[test]
fn send_deliver_and_switch() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    typed(&mut app, &mut src, "hello");
    key(&mut app, &mut src, KeyCode::Enter);
    assert_eq!(src.sent, vec![("alice".to_owned(), "hello".to_owned())]);
    assert!(app.flush_wanted);
    assert!(app.input.is_empty());
    let screen = render(&app, 80, 24);
    assert!(screen.contains("me: hello · queued"), "{screen}");
    // The relay confirms; the entry changes state in place.
    let id = app
        .history
        .as_ref()
        .unwrap()
        .entries
        .back()
        .unwrap()
        .message
        .id
        .clone();
    app.handle_client_events(
        &[sotto_client::Event::Delivery {
            contact: "alice".into(),
            id,
            state: DeliveryState::Delivered,
        }],
        &mut src,
    );
    assert!(render(&app, 80, 24).contains("me: hello · delivered"));
    // History: Up brings the sent text back.
    key(&mut app, &mut src, KeyCode::Up);
    assert_eq!(app.input.text(), "hello");
    ctrl(&mut app, &mut src, 'u');
    assert!(app.input.is_empty());
    // Tab opens bob and marks him read.
    key(&mut app, &mut src, KeyCode::Tab);
    assert_eq!(app.current().unwrap().title, "bob");
    assert_eq!(app.current().unwrap().unread, 0);
    assert!(render(&app, 80, 24).contains("bob: old news"));
}

#[test]
fn incoming_message_while_open_and_elsewhere() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    let m = src.push(
        "bob",
        Direction::In,
        NOW,
        Some("ping"),
        DeliveryState::Received,
        None,
    );
    app.handle_client_events(&[sotto_client::Event::Message(m.message)], &mut src);
    let bob = app.conversations.iter().find(|c| c.title == "bob").unwrap();
    assert_eq!(bob.unread, 2);
    // bob is now the most recent conversation; the selection stays on alice.
    assert_eq!(app.conversations[0].title, "bob");
    assert_eq!(app.current().unwrap().title, "alice");
    let m = src.push(
        "alice",
        Direction::In,
        NOW,
        Some("pong"),
        DeliveryState::Received,
        None,
    );
    app.handle_client_events(&[sotto_client::Event::Message(m.message)], &mut src);
    assert!(render(&app, 80, 24).contains("alice: pong"));
    assert_eq!(app.current().unwrap().unread, 0);
}

#[test]
fn verification_screen_with_qr() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    typed(&mut app, &mut src, "/verify");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(matches!(app.screen, Screen::Verify { .. }));
    let screen = render(&app, 100, 45);
    assert!(screen.contains("01234  56789  01234  56789"), "{screen}");
    assert!(
        screen.contains('▀') || screen.contains('▄'),
        "no QR drawn:\n{screen}"
    );
    snapshot("verify", &screen);
    // Too small for the QR: the digits stay, with a hint.
    let small = render(&app, 60, 20);
    assert!(small.contains("01234  56789"));
    assert!(small.contains("enlarge the terminal"));
    key(&mut app, &mut src, KeyCode::Char('u'));
    assert_eq!(app.screen, Screen::Chat);
    assert_eq!(app.current().unwrap().badge, Badge::Unverified);
    assert!(render(&app, 80, 24).contains("alice · unverified"));
    key(&mut app, &mut src, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
    key(&mut app, &mut src, KeyCode::Char('v'));
    key(&mut app, &mut src, KeyCode::Char('v'));
    assert_eq!(app.current().unwrap().badge, Badge::Verified);
}

#[test]
fn key_change_banner_blocks_sending() {
    let mut src = conversation();
    src.convs.get_mut("alice").unwrap().badge = Badge::KeyChanged { blocked: true };
    let mut app = App::new(&mut src);
    fixed(&mut app);
    typed(&mut app, &mut src, "secret");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(src.sent.is_empty());
    assert_eq!(app.input.text(), "secret", "the draft is kept");
    assert!(
        matches!(&app.notice, Some(Notice::Error(e)) if e.contains("blocked") || e.contains("not sent"))
    );
    let screen = render(&app, 80, 24);
    assert!(screen.contains("Sending is blocked"), "{screen}");
    assert!(screen.contains("alice ! key changed"));
    snapshot("key_change", &screen);
    // Re-verifying lifts the block.
    ctrl(&mut app, &mut src, 'u');
    typed(&mut app, &mut src, "/verify");
    key(&mut app, &mut src, KeyCode::Enter);
    key(&mut app, &mut src, KeyCode::Char('v'));
    typed(&mut app, &mut src, "secret");
    key(&mut app, &mut src, KeyCode::Enter);
    assert_eq!(src.sent.len(), 1);
    assert!(!render(&app, 80, 24).contains("Sending is blocked"));
}

#[test]
fn help_overlay() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    key(&mut app, &mut src, KeyCode::Char('?'));
    assert!(app.help);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("/add NAME INVITE"));
    assert!(screen.contains("/group add|remove C"));
    assert!(screen.contains("/members"));
    assert!(screen.contains("Keys and commands"));
    snapshot("help", &screen);
    key(&mut app, &mut src, KeyCode::Char('x'));
    assert!(!app.help);
    assert!(app.input.is_empty(), "the closing key is not typed");
    // `?` inside a message is just a character.
    typed(&mut app, &mut src, "ok?");
    assert!(!app.help);
    assert_eq!(app.input.text(), "ok?");
}

#[test]
fn bad_commands_show_errors_and_never_quit() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    for cmd in [
        "/frobnicate",
        "/add onlyname",
        "/add carol not-an-invite",
        "/verify extra",
    ] {
        typed(&mut app, &mut src, cmd);
        key(&mut app, &mut src, KeyCode::Enter);
        assert!(!app.quit, "{cmd} quit");
        assert!(
            matches!(app.notice, Some(Notice::Error(_))),
            "{cmd}: {:?}",
            app.notice
        );
        let screen = render(&app, 80, 24);
        assert!(screen.contains("error: "), "{cmd}:\n{screen}");
    }
    typed(&mut app, &mut src, "/add carol sotto-invite-CAROL");
    key(&mut app, &mut src, KeyCode::Enter);
    assert_eq!(app.current().unwrap().title, "carol");
    assert!(matches!(app.notice, Some(Notice::Info(_))));
    typed(&mut app, &mut src, "/invite");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(render(&app, 80, 24).contains("sotto-invite-EXAMPLE"));
    key(&mut app, &mut src, KeyCode::Esc);
    assert!(app.popup.is_none());
    typed(&mut app, &mut src, "/quit");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(app.quit);
}

#[test]
fn small_terminal_60x20() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    app.handle_terminal(Event::Resize(60, 20), &mut src);
    let screen = render(&app, 60, 20);
    assert!(screen.contains("still there? · queued"), "{screen}");
    assert!(screen.contains("Conversations"));
    assert!(screen.contains("you: 0123456789abcdef"));
    snapshot("small_60x20", &screen);
    // Smaller still: no panic, a hint.
    assert!(render(&app, 15, 5).contains("too small"));
}

#[test]
fn multi_line_input_and_vi_keys() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    typed(&mut app, &mut src, "line one");
    app.handle_terminal(
        Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)),
        &mut src,
    );
    typed(&mut app, &mut src, "line two");
    assert_eq!(app.input.line_count(), 2);
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("│line one") && screen.contains("│line two"),
        "{screen}"
    );
    key(&mut app, &mut src, KeyCode::Enter);
    assert_eq!(src.sent[0].1, "line one\nline two");
    // Normal mode: j/k scroll, J switches, i types again.
    key(&mut app, &mut src, KeyCode::Esc);
    key(&mut app, &mut src, KeyCode::Char('k'));
    assert_eq!(app.history.as_ref().unwrap().scroll, 1);
    key(&mut app, &mut src, KeyCode::Char('j'));
    assert_eq!(app.history.as_ref().unwrap().scroll, 0);
    key(&mut app, &mut src, KeyCode::Char('J'));
    assert_eq!(app.current().unwrap().title, "bob");
    key(&mut app, &mut src, KeyCode::Char('i'));
    typed(&mut app, &mut src, "j");
    assert_eq!(app.input.text(), "j");
}

#[test]
fn lazy_history_and_mouse_scroll() {
    let mut src = MemorySource::new();
    src.add("big", Badge::Verified);
    for i in 0..5_000u64 {
        src.push(
            "big",
            Direction::In,
            NOW - 5_000 * MIN + i * MIN,
            Some(&format!("message {i}")),
            DeliveryState::Received,
            None,
        );
    }
    let mut app = App::new(&mut src);
    fixed(&mut app);
    let h = app.history.as_ref().unwrap();
    assert_eq!(h.total, 5_000);
    assert_eq!(
        h.entries.len(),
        sotto_tui::app::PAGE,
        "only one page loaded at open"
    );
    assert!(render(&app, 80, 24).contains("big: message 4999"));
    for _ in 0..100 {
        app.handle_terminal(
            Event::Mouse(MouseEvent {
                kind: MouseEventKind::ScrollUp,
                column: 40,
                row: 5,
                modifiers: KeyModifiers::NONE,
            }),
            &mut src,
        );
    }
    let h = app.history.as_ref().unwrap();
    assert_eq!(h.scroll, 300);
    assert!(h.entries.len() < 5_000 && h.entries.len() >= 300 + sotto_tui::app::PAGE);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("big: message 4699"), "{screen}");
    assert!(screen.contains("300 newer"));
    key(&mut app, &mut src, KeyCode::Esc);
    key(&mut app, &mut src, KeyCode::Char('G'));
    assert_eq!(app.history.as_ref().unwrap().scroll, 0);
}

#[test]
fn status_bar_shows_reconnect_countdown() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    app.now = std::time::Instant::now();
    app.relay = RelayState::Retrying(app.now + std::time::Duration::from_millis(4_500));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("○ offline, retrying in 5s"), "{screen}");
    app.relay = RelayState::Connecting;
    assert!(render(&app, 80, 24).contains("◌ connecting…"));
    app.relay = RelayState::NotRegistered;
    assert!(render(&app, 80, 24).contains("not registered"));
}

#[test]
fn ticks_pick_up_messages_stored_without_an_event() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    // Stored by the client while no event reached the UI.
    src.push(
        "alice",
        Direction::In,
        NOW,
        Some("quietly stored"),
        DeliveryState::Received,
        None,
    );
    src.push(
        "bob",
        Direction::In,
        NOW,
        Some("for bob"),
        DeliveryState::Received,
        None,
    );
    app.tick(&mut src);
    fixed(&mut app);
    assert!(render(&app, 80, 24).contains("alice: quietly stored"));
    for _ in 0..5 {
        app.tick(&mut src);
    }
    let bob = app.conversations.iter().find(|c| c.title == "bob").unwrap();
    assert_eq!(bob.unread, 2);
}

#[test]
fn clicking_a_conversation_opens_it() {
    let mut src = conversation();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    app.handle_terminal(Event::Resize(80, 24), &mut src);
    let click = |column, row| {
        Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    // Row 0 is the border; bob is the second entry (row 2).
    app.handle_terminal(click(5, 2), &mut src);
    assert_eq!(app.current().unwrap().title, "bob");
    app.handle_terminal(click(5, 1), &mut src);
    assert_eq!(app.current().unwrap().title, "alice");
    // Below the entries, on the border, in the message pane: nothing changes.
    for (c, r) in [(5, 10), (0, 2), (50, 2)] {
        app.handle_terminal(click(c, r), &mut src);
        assert_eq!(app.current().unwrap().title, "alice");
    }
}

/// A group "team" owned by us with alice (verified) and bob (unverified), three messages.
fn group() -> MemorySource {
    let mut s = conversation();
    s.add_group("team", &["alice", "bob"]);
    s.push_group(
        "team",
        "alice",
        NOW - 6 * MIN,
        "welcome to the team",
        DeliveryState::Received,
    );
    s.push_group(
        "team",
        "you",
        NOW - 5 * MIN,
        "thanks!",
        DeliveryState::Accepted,
    );
    s.push_group(
        "team",
        "bob",
        NOW - 4 * MIN,
        "hello all",
        DeliveryState::Received,
    );
    s
}

fn open_group(app: &mut App, src: &mut MemorySource) {
    let i = app
        .conversations
        .iter()
        .position(|c| c.title == "team")
        .unwrap();
    while app.selected != i {
        key(app, src, KeyCode::Tab);
    }
}

#[test]
fn group_conversation_with_roster_change() {
    let mut src = group();
    src.add("carol", Badge::Verified);
    let mut app = App::new(&mut src);
    fixed(&mut app);
    // The group is listed with its member count and unread messages.
    let team = app
        .conversations
        .iter()
        .find(|c| c.title == "team")
        .unwrap();
    assert_eq!(team.unread, 2);
    assert_eq!(team.members, Some(3));
    assert_eq!(team.badge, Badge::Unverified, "bob is not verified");
    open_group(&mut app, &mut src);
    assert!(app.current().unwrap().id.is_group());

    // A roster change and a relay warning, shown inline after the newest message.
    typed(&mut app, &mut src, "/group add carol");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(app.flush_wanted, "the control messages must be sent");
    assert_eq!(app.notice, None, "{:?}", app.notice);
    assert_eq!(app.current().unwrap().members, Some(4));
    app.handle_client_events(
        &[sotto_client::Event::GroupWarning {
            group: "team".into(),
            warning: "the relay delivered a message from mallory, who is not on the roster".into(),
        }],
        &mut src,
    );
    // A message sent afterwards comes below the system lines.
    typed(&mut app, &mut src, "hi carol");
    key(&mut app, &mut src, KeyCode::Enter);
    assert_eq!(src.sent, vec![("team".to_owned(), "hi carol".to_owned())]);

    let screen = render(&app, 80, 24);
    for want in [
        "#team (4)",
        "#team · 4 members · not all verified",
        "11:54 alice: welcome to the team",
        "11:55 me: thanks! · accepted",
        "11:56 bob: hello all",
        "— you added carol (roster epoch 3) —",
        "⚠ the relay delivered a message from mallory",
        "me: hi carol · queued",
    ] {
        assert!(screen.contains(want), "missing {want:?} in\n{screen}");
    }
    let pos = |s: &str| screen.find(s).unwrap();
    assert!(pos("bob: hello all") < pos("you added carol"));
    assert!(pos("you added carol") < pos("⚠ the relay"));
    assert!(pos("⚠ the relay") < pos("me: hi carol"));
    snapshot("group", &screen);

    // The roster change stays with the group when switching away and back.
    key(&mut app, &mut src, KeyCode::Tab);
    assert!(!render(&app, 80, 24).contains("you added carol"));
    open_group(&mut app, &mut src);
    assert!(render(&app, 80, 24).contains("you added carol"));
}

#[test]
fn group_members_view() {
    let mut src = group();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    open_group(&mut app, &mut src);
    typed(&mut app, &mut src, "/members");
    key(&mut app, &mut src, KeyCode::Enter);
    assert!(matches!(app.screen, Screen::Members { .. }));
    let screen = render(&app, 80, 24);
    for want in [
        "Members of #team",
        "3 members · roster epoch 2 · you own this group",
        "you  ",
        "✓ alice",
        "verified",
        "! bob",
        "NOT verified",
        "Verify a member in their own conversation",
    ] {
        assert!(screen.contains(want), "missing {want:?} in\n{screen}");
    }
    snapshot("members", &screen);
    key(&mut app, &mut src, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Chat);

    // Verifying bob (in his conversation) makes the whole group verified.
    src.set_verified(&sotto_tui::source::ConvId::direct("bob"), true)
        .unwrap();
    app.reload_conversations(&mut src);
    assert_eq!(app.current().unwrap().badge, Badge::Verified);
    assert!(render(&app, 80, 24).contains("#team · 3 members ✓ all verified"));
    // In normal mode, v opens the members view of a group.
    key(&mut app, &mut src, KeyCode::Esc);
    key(&mut app, &mut src, KeyCode::Char('v'));
    assert!(render(&app, 80, 24).contains("Every member's safety number is verified."));
}

#[test]
fn group_commands_report_errors_and_never_quit() {
    let mut src = group();
    let mut app = App::new(&mut src);
    fixed(&mut app);
    let run = |app: &mut App, src: &mut MemorySource, line: &str| {
        typed(app, src, line);
        key(app, src, KeyCode::Enter);
        app.notice.clone()
    };
    // On a direct conversation the roster commands need a group.
    let alice = app
        .conversations
        .iter()
        .position(|c| c.title == "alice")
        .unwrap();
    while app.selected != alice {
        key(&mut app, &mut src, KeyCode::Tab);
    }
    assert!(matches!(
        run(&mut app, &mut src, "/group add bob"),
        Some(Notice::Error(e)) if e.contains("open a group first")
    ));
    assert!(matches!(
        run(&mut app, &mut src, "/members"),
        Some(Notice::Error(_))
    ));
    assert!(matches!(
        run(&mut app, &mut src, "/group frobnicate"),
        Some(Notice::Error(e)) if e.starts_with("usage: /group")
    ));
    open_group(&mut app, &mut src);
    assert!(matches!(
        run(&mut app, &mut src, "/group add nobody"),
        Some(Notice::Error(e)) if e.contains("nobody")
    ));
    assert!(matches!(
        run(&mut app, &mut src, "/group leave"),
        Some(Notice::Error(e)) if e.contains("owner cannot leave")
    ));
    // Removing works and shows as an event in the conversation.
    assert_eq!(run(&mut app, &mut src, "/group remove bob"), None);
    assert_eq!(app.current().unwrap().members, Some(2));
    assert!(render(&app, 80, 24).contains("— you removed bob (roster epoch 3) —"));
    // Creating a group opens it.
    assert!(matches!(
        run(&mut app, &mut src, "/group create night owls"),
        Some(Notice::Info(i)) if i.contains("created group night owls")
    ));
    assert_eq!(app.current().unwrap().title, "night owls");
    assert_eq!(app.current().unwrap().members, Some(1));
    assert!(matches!(
        run(&mut app, &mut src, "/group create night owls"),
        Some(Notice::Error(_))
    ));
    assert!(!app.quit);
}

/// A peer's name and message carrying terminal control sequences (OSC 52 clipboard write, CSI,
/// BEL, C1 CSI, a bidi override) are shown as visible escapes, and no cell the terminal gets
/// holds a control character.
#[test]
fn hostile_peer_text_never_reaches_the_terminal_raw() {
    let mut src = MemorySource::new();
    let name = "eve\u{1b}[8m";
    src.add(name, Badge::Unverified);
    src.push(
        name,
        Direction::In,
        NOW - MIN,
        Some("copy\u{1b}]52;c;cm0gLXJm\u{7} \u{9b}2J \u{202e}gnp.exe"),
        DeliveryState::Received,
        None,
    );
    src.push(
        name,
        Direction::In,
        NOW,
        None,
        DeliveryState::Failed,
        Some("bad \u{1b}[2J"),
    );
    let mut app = App::new(&mut src);
    fixed(&mut app);
    let mut t = Terminal::new(TestBackend::new(100, 24)).unwrap();
    t.draw(|f| ui::draw(f, &app)).unwrap();
    let buf = t.backend().buffer();
    for cell in &buf.content {
        assert!(
            !cell
                .symbol()
                .chars()
                .any(sotto_client::text::is_unsafe_char),
            "raw control in a cell: {:?}",
            cell.symbol()
        );
    }
    let screen = render(&app, 100, 24);
    for want in [
        "copy\\x1b]52;c;cm0gLXJm\\x07 \\u{9b}2J",
        "\\u{202e}gnp.exe",
        "eve\\x1b[8m",
        "bad \\x1b[2J",
    ] {
        assert!(screen.contains(want), "missing {want:?} in\n{screen}");
    }
}
