//! `sotto send NAME [TEXT]`: queue a message and send the outbox.

use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;

use super::profile::{self, ProfileArgs};

/// Send a message (TEXT, or standard input). It waits in the outbox if the relay is unreachable
/// and goes out with the next command that reaches it.
#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The contact.
    name: String,
    /// The message; read from standard input when absent.
    text: Option<String>,
    /// Send although the contact's key changed after you verified it (stays unverified).
    #[arg(long)]
    accept_new_key: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `sotto send`.
pub(crate) fn main(args: SendArgs) -> anyhow::Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the message from standard input")?;
            s.trim_end_matches('\n').to_owned()
        }
    };
    if text.is_empty() {
        bail!("empty message");
    }
    let mut client = profile::open(&args.profile)?;
    if std::env::var("SOTTO_TEST_CRASH_AFTER_PERSIST").is_ok_and(|v| v == "1") {
        client.set_crash_after_persist(true);
    }
    let id = client.compose(&args.name, &text, args.accept_new_key)?;
    let result = profile::runtime()?.block_on(async {
        let r = client.sync().await;
        client.disconnect().await;
        r
    });
    let events = match result {
        Ok(events) => events,
        Err(sotto_client::Error::TestCrash) => {
            // Simulates a crash between persisting and sending: no cleanup at all.
            std::process::exit(86);
        }
        Err(e) if e.is_connection() => {
            bail!(
                "{e}; the message is queued in the outbox and goes out with the next send, inbox or recv"
            );
        }
        Err(e) => return Err(e.into()),
    };
    let state = client
        .messages(Some(&args.name))?
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.state);
    if args.json {
        return profile::print_json(&serde_json::json!({"id": id, "state": state}));
    }
    for e in &events {
        if let sotto_client::Event::Message(_) = e {
            println!("{}", profile::describe(e).unwrap_or_default());
        }
    }
    match state {
        Some(s) => println!("{} → {}: {}", &id[..8], args.name, profile::state_name(s)),
        None => println!("{} → {}", &id[..8], args.name),
    }
    if state == Some(sotto_client::DeliveryState::Failed) {
        bail!("the message could not be sent (see `sotto inbox`)");
    }
    Ok(())
}
