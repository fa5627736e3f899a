//! `sotto group ...`: group chats (Sender Keys over the pairwise sessions, signed roster).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sotto_client::{Client, Event, GroupInvite, GroupMessage};

use super::profile::{self, ProfileArgs};

/// Group chats: create a group, add and remove members (owner only), leave, list members, send.
/// Membership is what the group owner signed, never what the relay says.
#[derive(Args)]
pub(crate) struct GroupArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group that you own, with these contacts as its first members.
    Create {
        /// A local name for the group (members see it too).
        name: String,
        /// Contacts to add at once (each gets one invite with the whole signed roster).
        members: Vec<String>,
    },
    /// Add a contact to a group you own (they get the signed roster; everyone rotates keys).
    Add {
        /// The group.
        name: String,
        /// The contact to add.
        contact: String,
    },
    /// Remove a member from a group you own (every remaining member rotates its key).
    Remove {
        /// The group.
        name: String,
        /// The contact to remove.
        contact: String,
    },
    /// Leave a group (the owner cannot leave).
    Leave {
        /// The group.
        name: String,
    },
    /// List the members of the verified roster (or every group, without NAME).
    Members {
        /// The group.
        name: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List group invites waiting for your consent (from anyone who is not a verified
    /// contact): until you accept, nothing is created or sent for them.
    Invites {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Accept a waiting group invite: join, and send the members your key.
    Accept {
        /// The invite's name (see `sotto group invites`).
        name: String,
    },
    /// Decline a waiting group invite (nothing is sent).
    Decline {
        /// The invite's name.
        name: String,
    },
    /// Send a message to a group.
    Send {
        /// The group.
        name: String,
        /// The message.
        text: String,
    },
}

/// Connects, sends the outbox and receives everything; a relay that cannot be reached leaves
/// the queued items for the next command.
fn sync(client: &mut Client) -> anyhow::Result<Vec<Event>> {
    let r = profile::runtime()?.block_on(async {
        let r = client.sync().await;
        client.disconnect().await;
        r
    });
    match r {
        Ok(ev) => Ok(ev),
        Err(e) if e.is_connection() => {
            eprintln!("warning: {e}; queued in the outbox for the next command");
            Ok(vec![])
        }
        Err(e) => Err(e.into()),
    }
}

fn print_events(events: &[Event]) {
    for e in events {
        if let Some(line) = describe(e) {
            println!("{line}");
        }
    }
}

/// Runs `sotto group`.
pub(crate) fn main(args: GroupArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    match args.command {
        GroupCommand::Create { name, members } => {
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            let g = client
                .group_create_with(&name, &refs)
                .with_context(|| format!("cannot create group {name:?}"))?;
            println!("created group {} (id {})", g.name, &g.id[..8]);
            if !members.is_empty() {
                print_events(&sync(&mut client)?);
            }
        }
        GroupCommand::Invites { json } => {
            let invites = client.group_invites()?;
            if json {
                return profile::print_json(&invites);
            }
            if invites.is_empty() {
                println!("no group invites waiting");
            }
            for i in invites {
                println!("{}", invite_line(&i));
            }
        }
        GroupCommand::Accept { name } => {
            let mut events = client
                .group_accept(&name)
                .with_context(|| format!("cannot accept the group invite {name:?}"))?;
            events.extend(sync(&mut client)?);
            print_events(&events);
        }
        GroupCommand::Decline { name } => {
            client
                .group_decline(&name)
                .with_context(|| format!("cannot decline the group invite {name:?}"))?;
            println!("declined the group invite {name}");
        }
        GroupCommand::Add { name, contact } => {
            let mut events = client
                .group_add(&name, &contact)
                .with_context(|| format!("cannot add {contact} to {name}"))?;
            events.extend(sync(&mut client)?);
            print_events(&events);
        }
        GroupCommand::Remove { name, contact } => {
            let mut events = client
                .group_remove(&name, &contact)
                .with_context(|| format!("cannot remove {contact} from {name}"))?;
            events.extend(sync(&mut client)?);
            print_events(&events);
        }
        GroupCommand::Leave { name } => {
            let mut events = client
                .group_leave(&name)
                .with_context(|| format!("cannot leave {name}"))?;
            events.extend(sync(&mut client)?);
            print_events(&events);
        }
        GroupCommand::Members { name, json } => {
            let groups = match &name {
                Some(n) => vec![client.group(n)?],
                None => client.groups()?,
            };
            if json {
                return profile::print_json(&groups);
            }
            if groups.is_empty() {
                println!("no groups");
            }
            for g in groups {
                println!(
                    "{} (epoch {}{}{})",
                    g.name,
                    g.epoch,
                    if g.active {
                        ""
                    } else {
                        ", you are not a member"
                    },
                    if g.paused {
                        ", sending paused until a roster change arrives"
                    } else {
                        ""
                    }
                );
                for m in g.members {
                    println!(
                        "  {}{}  {}  {}",
                        m.name,
                        if m.is_owner { " (owner)" } else { "" },
                        m.fingerprint,
                        if m.verified { "verified" } else { "unverified" }
                    );
                }
            }
        }
        GroupCommand::Send { name, text } => {
            if text.is_empty() {
                bail!("empty message");
            }
            let id = client.group_compose(&name, &text)?;
            let events = sync(&mut client)?;
            print_events(
                &events
                    .into_iter()
                    .filter(|e| !matches!(e, Event::Message(_) | Event::GroupMessage(_)))
                    .collect::<Vec<_>>(),
            );
            let state = client
                .group_messages(Some(&name))?
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.state);
            match state {
                Some(s) => println!("{} → {name}: {}", &id[..8], profile::state_name(s)),
                None => println!("{} → {name}", &id[..8]),
            }
            if state == Some(sotto_client::DeliveryState::Failed) {
                bail!("the group message could not be sent to every member (see `sotto inbox`)");
            }
        }
    }
    Ok(())
}

/// One group history line.
pub(crate) fn group_line(m: &GroupMessage) -> String {
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.sent_ms),
    );
    match (&m.text, &m.error) {
        (Some(t), _) => format!("[{when}] #{} {}: {t}", m.group, m.sender),
        (None, e) => format!(
            "[{when}] #{} ! message from {} could not be decrypted: {}",
            m.group,
            m.sender,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// A line for a group event (`None` for other events).
pub(crate) fn describe(e: &Event) -> Option<String> {
    match e {
        Event::GroupMessage(m) => Some(group_line(m)),
        Event::GroupChanged {
            group,
            epoch,
            change,
        } => Some(format!("#{group}: {change} (roster epoch {epoch})")),
        Event::GroupWarning { group, warning } => Some(format!(
            "! group {}: {warning}",
            if group.is_empty() { "?" } else { group }
        )),
        Event::GroupInvite {
            group,
            inviter,
            members,
        } => Some(format!(
            "! {inviter} invites you to group {group} ({members} members); nothing is sent until you answer: `sotto group accept {group}` or `sotto group decline {group}`"
        )),
        _ => None,
    }
}

fn invite_line(i: &GroupInvite) -> String {
    format!(
        "{}  from {}{} ({})  {} members  id {}",
        i.name,
        i.inviter,
        if i.inviter_known {
            ""
        } else {
            " (not a contact)"
        },
        i.inviter_fingerprint,
        i.members,
        &i.id[..8.min(i.id.len())]
    )
}

/// Prints the group history (for `sotto inbox`) and marks it seen.
pub(crate) fn print_history(client: &mut Client, group: Option<&str>) -> anyhow::Result<()> {
    let messages = match client.group_messages(group) {
        Ok(m) => m,
        Err(sotto_client::Error::Group(_)) if group.is_some() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    client.take_unseen_group()?;
    for m in &messages {
        println!("{}", group_line(m));
    }
    if group.is_none() {
        for i in client.group_invites()? {
            println!(
                "! group invite waiting: {} (`sotto group accept {}`)",
                invite_line(&i),
                i.name
            );
        }
    }
    Ok(())
}
