//! `sotto inbox`: fetch from the relay and show the history with delivery states.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// Fetch new messages and show the conversation history (both directions, delivery states,
/// and messages that could not be decrypted).
#[derive(Args)]
pub(crate) struct InboxArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Only this contact, or this group.
    name: Option<String>,
    /// Do not contact the relay; show what is stored.
    #[arg(long)]
    offline: bool,
    /// JSON output (one array of messages).
    #[arg(long)]
    json: bool,
}

/// Runs `sotto inbox`.
pub(crate) fn main(args: InboxArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    if !args.offline {
        let r = profile::runtime()?.block_on(async {
            let r = client.sync().await;
            client.disconnect().await;
            r
        });
        match r {
            Ok(_) => {}
            Err(e) if e.is_connection() => eprintln!(
                "warning: {}; showing stored messages",
                profile::shown(&e.to_string())
            ),
            Err(e) => return Err(e.into()),
        }
    }
    // `inbox NAME` takes a contact's name or a group's (a contact wins if both exist).
    let group = match args.name.as_deref() {
        Some(n) if client.group(n).is_ok() && client.messages(Some(n)).is_err() => Some(n),
        _ => None,
    };
    if let Some(group) = group {
        if args.json {
            let messages = client.group_messages(Some(group))?;
            client.take_unseen_group()?;
            return profile::print_json(&messages);
        }
        super::group::print_history(&mut client, Some(group))?;
        return Ok(());
    }
    let messages = client.messages(args.name.as_deref())?;
    // `inbox` shows everything, so nothing stays "new" for `recv`.
    client.take_unseen()?;
    if args.json {
        return profile::print_json(&messages);
    }
    if messages.is_empty() {
        println!("no messages");
    }
    for m in &messages {
        println!("{}", profile::message_line(m));
    }
    super::group::print_history(&mut client, args.name.as_deref())?;
    let queued = client.outbox_len()?;
    if queued > 0 {
        println!("({queued} item(s) waiting in the outbox)");
    }
    Ok(())
}
