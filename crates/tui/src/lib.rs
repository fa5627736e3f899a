//! # sotto-tui
//!
//! `sotto chat`: a terminal UI over [`sotto_client::Client`], built with ratatui.
//!
//! ```text
//!   crossterm EventStream ─┐
//!   client.next_events() ──┼─▶ tokio::select! ─▶ App::handle_* (state, app.rs)
//!   tick (1 s) ────────────┘                         │
//!                                                    ▼
//!                                     ui::draw(&App) (pure drawing, ui.rs)
//! ```
//!
//! - [`app`]: the state and event handling ([`app::App`]), testable without a terminal.
//! - [`ui`]: drawing, a pure function of the state.
//! - [`source`]: the data the UI reads and the actions it takes, a trait implemented by the
//!   client (and by [`memory::MemorySource`] for tests and benchmarks).
//! - [`run`]: the event loop. The network only runs inside one `select!` branch, so drawing
//!   never waits for the relay; all other client calls are local database work.
//!
//! History loads lazily, a page of [`app::PAGE`] entries at a time, and only the entries that
//! are visible are laid out on each frame.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod input;
pub mod memory;
pub mod source;
pub mod terminal;
pub mod ui;

use std::time::Duration;

use futures_util::StreamExt;
use sotto_client::{Client, Error as ClientError};
use tokio::time::Instant;

use crate::app::{App, RelayState};

/// How often the clock and countdown refresh, and stored changes are picked up.
const TICK: Duration = Duration::from_secs(1);

/// Test hook: when this variable is set, `run` panics right after drawing the first frame, so
/// the end-to-end test can check that the panic hook restores the terminal.
pub const CRASH_TEST_ENV: &str = "SOTTO_TUI_CRASH_TEST";

#[allow(clippy::panic)]
fn crash_for_test() -> ! {
    panic!("{CRASH_TEST_ENV} is set: deliberate panic to test terminal restoration")
}

/// Why `sotto chat` stopped other than by the user quitting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The terminal could not be set up or written.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Runs `sotto chat` on the terminal until the user quits. The terminal is restored on return
/// and on panic.
pub async fn run(client: &mut Client) -> Result<(), RunError> {
    let mut guard = terminal::Guard::enter()?;
    let r = event_loop(&mut guard, client).await;
    drop(guard);
    r
}

async fn event_loop(guard: &mut terminal::Guard, client: &mut Client) -> Result<(), RunError> {
    let mut app = App::new(client);
    let size = guard.terminal.size()?;
    app.size = (size.width, size.height);
    app.resize(size.height);
    let mut events = crossterm::event::EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // When to try the relay next (None: now).
    let mut retry_at: Option<Instant> = None;
    let mut flush = true;
    let crash_test = std::env::var_os(CRASH_TEST_ENV).is_some();
    loop {
        guard.terminal.draw(|f| ui::draw(f, &app))?;
        if crash_test {
            crash_for_test();
        }
        if app.quit {
            break;
        }
        // Connecting now (not waiting for a retry): ticks pause so they do not interrupt the
        // handshake; keys still do (a dropped attempt is simply started again).
        let connecting = !client.is_connected() && retry_at.is_none_or(|t| t <= Instant::now());
        if connecting && app.relay != RelayState::Connecting {
            app.relay = RelayState::Connecting;
            continue;
        }
        // The only branch that touches the network. Dropping it (when a key or a tick comes
        // first) is safe: `next_events` waits on the socket read, and an interrupted send is
        // redone from the outbox.
        let net = async {
            if let Some(at) = retry_at {
                tokio::time::sleep_until(at).await;
            }
            if flush && client.is_connected() {
                client.flush().await
            } else {
                client.next_events().await
            }
        };
        tokio::select! {
            r = net => match r {
                Ok(evs) => {
                    retry_at = None;
                    flush = false;
                    app.relay = RelayState::Connected;
                    app.handle_client_events(&evs, client);
                }
                Err(ClientError::NotRegistered) => {
                    app.relay = RelayState::NotRegistered;
                    retry_at = Some(Instant::now() + Duration::from_secs(24 * 3600));
                }
                Err(e) => {
                    let wait = client.backoff();
                    let at = Instant::now() + wait;
                    retry_at = Some(at);
                    app.relay = RelayState::Retrying(at.into_std());
                    if !e.is_connection() {
                        app.notice = Some(app::Notice::Error(e.to_string()));
                    }
                    app.now = std::time::Instant::now();
                }
            },
            ev = events.next() => match ev {
                Some(Ok(ev)) => app.handle_terminal(ev, client),
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            _ = tick.tick(), if !connecting => app.tick(client),
        }
        if std::mem::take(&mut app.flush_wanted) {
            flush = true;
        }
    }
    Ok(())
}
