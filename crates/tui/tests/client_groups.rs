//! The [`Source`] implementation of the real client for groups, against offline profiles (no
//! relay): the list entry, sending, the members view and a roster change shown in the pane.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto_client::{Client, DeliveryState, Direction, Invite, KdfParams};
use sotto_tui::app::{App, Notice, Screen};
use sotto_tui::source::{Badge, ConvId, GroupOp, Source};
use sotto_tui::ui;

fn render(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    (0..24)
        .map(|y| (0..80).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect()
}

#[test]
fn client_groups_through_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Client::init(dir.path(), b"pw", KdfParams::INSECURE_TEST).unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bob = Client::init(bdir.path(), b"pw", KdfParams::INSECURE_TEST).unwrap();
    let invite = Invite {
        identity: bob.identity(),
        relay: "ws://127.0.0.1:1/".into(),
    }
    .encode()
    .unwrap();
    alice.add_contact("bob", &invite).unwrap();

    let mut app = App::new(&mut alice);
    app.command("/group create team", &mut alice);
    assert!(
        matches!(&app.notice, Some(Notice::Info(i)) if i.contains("created group team")),
        "{:?}",
        app.notice
    );
    let team = app.current().unwrap().clone();
    assert_eq!(team.id, ConvId::group("team"));
    assert_eq!(team.members, Some(1));
    // Alone in the group: trivially all verified.
    assert_eq!(team.badge, Badge::Verified);

    app.command("/group add bob", &mut alice);
    assert!(app.flush_wanted, "the invite and change must be flushed");
    let team = app.current().unwrap().clone();
    assert_eq!(team.members, Some(2));
    assert_eq!(team.badge, Badge::Unverified, "bob is not verified");

    // Sending queues a group message (bob is a recipient, so it waits for the relay).
    app.input.insert_str("hello team");
    app.handle_key(
        crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Enter),
        &mut alice,
    );
    assert_eq!(app.notice, None, "{:?}", app.notice);
    let sent = alice.group_messages(Some("team")).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].direction, Direction::Out);
    assert_eq!(sent[0].state, DeliveryState::Queued);
    assert_eq!(alice.count(&ConvId::group("team")).unwrap(), 1);

    let screen = render(&app);
    for want in [
        "#team (2)",
        "#team · 2 members · not all verified",
        "— you added bob (roster epoch 1) —",
        "me: hello team · queued",
    ] {
        assert!(screen.contains(want), "missing {want:?} in\n{screen}");
    }
    assert!(screen.find("you added bob").unwrap() < screen.find("hello team").unwrap());

    app.command("/members", &mut alice);
    let Screen::Members { view } = &app.screen else {
        panic!("not the members view: {:?}", app.screen)
    };
    assert_eq!(view.members.len(), 2);
    assert!(view.members[0].is_you && view.members[0].is_owner);
    assert_eq!(view.members[1].name, "bob");
    assert!(!view.members[1].verified);
    let screen = render(&app);
    assert!(screen.contains("NOT verified"), "{screen}");

    // Owner rules come from the client and show on the error line.
    app.screen = Screen::Chat;
    app.command("/group leave", &mut alice);
    assert!(
        matches!(&app.notice, Some(Notice::Error(e)) if e.contains("owner cannot leave")),
        "{:?}",
        app.notice
    );
    let events = alice
        .group_change("team", &GroupOp::Remove("bob".into()))
        .unwrap();
    app.handle_client_events(&events, &mut alice);
    assert_eq!(app.current().unwrap().members, Some(1));
    assert!(render(&app).contains("— you removed bob (roster epoch 2) —"));
    assert!(!app.quit);
}
