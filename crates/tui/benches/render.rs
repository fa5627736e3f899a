//! Rendering a conversation of 100,000 messages: opening it (count, newest page, first frame)
//! and scrolling it (one PageUp plus a frame, deep into lazily loaded history). The target is
//! under 16 ms per frame (60 frames per second).
//!
//! `cargo bench -p sotto-tui --bench render`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto_client::{Client, DeliveryState, Direction, Invite, KdfParams};
use sotto_tui::app::App;
use sotto_tui::memory::MemorySource;
use sotto_tui::source::Badge;
use sotto_tui::ui;

const MESSAGES: u64 = 100_000;
const W: u16 = 160;
const H: u16 = 50;

fn source() -> MemorySource {
    let mut s = MemorySource::new();
    s.add("bob", Badge::Verified);
    s.add("carol", Badge::Unverified);
    let start = 1_795_694_400_000 - MESSAGES * 60_000;
    for i in 0..MESSAGES {
        let (dir, state) = if i % 3 == 0 {
            (Direction::Out, DeliveryState::Delivered)
        } else {
            (Direction::In, DeliveryState::Received)
        };
        let text = format!(
            "message {i}: {}",
            "lorem ipsum dolor sit amet ".repeat(1 + (i % 7) as usize)
        );
        s.push("bob", dir, start + i * 60_000, Some(&text), state, None);
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut src = source();
    let mut term = Terminal::new(TestBackend::new(W, H)).unwrap();
    let mut g = c.benchmark_group("tui_100k");
    g.bench_function("open_and_first_frame", |b| {
        b.iter(|| {
            let mut app = App::new(&mut src);
            app.resize(H);
            term.draw(|f| ui::draw(f, &app)).unwrap();
            black_box(app.history.as_ref().map(|h| h.total));
        });
    });
    let mut app = App::new(&mut src);
    app.resize(H);
    let page_up = Event::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    g.bench_function("page_up_and_frame", |b| {
        b.iter(|| {
            // Wrap around before the oldest message so every iteration really scrolls.
            if app
                .history
                .as_ref()
                .is_some_and(|h| h.scroll + 100 >= h.total)
            {
                app = App::new(&mut src);
                app.resize(H);
            }
            app.handle_terminal(page_up.clone(), &mut src);
            term.draw(|f| ui::draw(f, &app)).unwrap();
        });
    });
    g.bench_function("frame_only_deep_in_history", |b| {
        b.iter(|| {
            term.draw(|f| ui::draw(f, &app)).unwrap();
        });
    });
    g.finish();
    let h = app.history.as_ref().unwrap();
    eprintln!(
        "after the run: scrolled {} entries up, {} of {} loaded",
        h.scroll,
        h.entries.len(),
        h.total
    );
}

/// The same with the real profile database (`sotto_client::Client` as the source): pages come
/// from SQLite and are decrypted. The profile lives in /dev/shm when there is one, so composing
/// the 100,000 messages does not wait for 100,000 disk syncs.
fn bench_profile(c: &mut Criterion) {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let mut client = Client::init(&base.path().join("a"), b"pw", KdfParams::INSECURE_TEST).unwrap();
    let other = Client::init(&base.path().join("b"), b"pw", KdfParams::INSECURE_TEST).unwrap();
    let invite = Invite {
        identity: other.identity(),
        relay: "ws://127.0.0.1:1/".into(),
    }
    .encode()
    .unwrap();
    client.add_contact("bob", &invite).unwrap();
    let t = std::time::Instant::now();
    for i in 0..MESSAGES {
        let text = format!(
            "message {i}: {}",
            "lorem ipsum dolor sit amet ".repeat(1 + (i % 7) as usize)
        );
        client.compose("bob", &text, false).unwrap();
    }
    eprintln!("composed {MESSAGES} messages in {:?}", t.elapsed());
    let mut term = Terminal::new(TestBackend::new(W, H)).unwrap();
    let mut g = c.benchmark_group("tui_100k_profile");
    g.sample_size(20);
    g.bench_function("open_and_first_frame", |b| {
        b.iter(|| {
            let mut app = App::new(&mut client);
            app.resize(H);
            term.draw(|f| ui::draw(f, &app)).unwrap();
            black_box(app.history.as_ref().map(|h| h.total));
        });
    });
    let mut app = App::new(&mut client);
    app.resize(H);
    let page_up = Event::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    g.bench_function("page_up_and_frame", |b| {
        b.iter(|| {
            if app
                .history
                .as_ref()
                .is_some_and(|h| h.scroll + 100 >= h.total)
            {
                app = App::new(&mut client);
                app.resize(H);
            }
            app.handle_terminal(page_up.clone(), &mut client);
            term.draw(|f| ui::draw(f, &app)).unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench, bench_profile);
criterion_main!(benches);
