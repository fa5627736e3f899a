//! `sotto recv [--follow]`: print new incoming messages.

use anyhow::bail;
use clap::Args;
use sotto_client::Event;

use super::profile::{self, ProfileArgs};

/// Print new incoming messages (and delivery updates); with --follow, keep listening and
/// reconnect with backoff when the relay goes away.
#[derive(Args)]
pub(crate) struct RecvArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Keep running and print messages as they arrive.
    #[arg(long, short)]
    follow: bool,
    /// JSON output (one object per line).
    #[arg(long)]
    json: bool,
}

fn print(json: bool, e: &Event) -> anyhow::Result<()> {
    if json {
        if matches!(
            e,
            Event::Message(_)
                | Event::Delivery { .. }
                | Event::UnknownSender { .. }
                | Event::GroupMessage(_)
                | Event::GroupChanged { .. }
                | Event::GroupWarning { .. }
                | Event::GroupInvite { .. }
        ) {
            profile::print_json(e)?;
        }
    } else if let Some(line) = profile::describe(e) {
        println!("{line}");
    }
    Ok(())
}

/// Runs `sotto recv`.
pub(crate) fn main(args: RecvArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    let rt = profile::runtime()?;
    if !args.follow {
        let r = rt.block_on(async {
            let r = client.sync().await;
            client.disconnect().await;
            r
        });
        let events = match r {
            Ok(ev) => ev,
            Err(e) if e.is_connection() => bail!("{e}"),
            Err(e) => return Err(e.into()),
        };
        for m in client.take_unseen()? {
            print(args.json, &Event::Message(m))?;
        }
        for m in client.take_unseen_group()? {
            print(args.json, &Event::GroupMessage(m))?;
        }
        for e in events
            .iter()
            .filter(|e| !matches!(e, Event::Message(_) | Event::GroupMessage(_)))
        {
            print(args.json, e)?;
        }
        return Ok(());
    }
    // Anything stored but not shown yet first.
    for m in client.take_unseen()? {
        print(args.json, &Event::Message(m))?;
    }
    rt.block_on(async {
        loop {
            tokio::select! {
                r = client.next_events() => match r {
                    Ok(events) => {
                        for e in &events {
                            print(args.json, e)?;
                            if let Event::Message(_) = e {
                                client.take_unseen()?;
                            }
                            if let Event::GroupMessage(_) = e {
                                client.take_unseen_group()?;
                            }
                        }
                        use std::io::Write;
                        std::io::stdout().flush()?;
                    }
                    // A lost connection, or a transient refusal (the client handles the others
                    // itself: a message fails or waits): retry with backoff, never exit.
                    Err(e) if e.is_transient() => {
                        let wait = client.backoff();
                        eprintln!(
                            "{}; reconnecting in {:.1}s",
                            profile::shown(&e.to_string()),
                            wait.as_secs_f64()
                        );
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(anyhow::Error::from(e)),
                },
                _ = tokio::signal::ctrl_c() => {
                    client.disconnect().await;
                    return Ok(());
                }
            }
        }
    })
}
