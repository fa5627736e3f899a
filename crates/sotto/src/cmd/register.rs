//! `sotto register --relay URL`: authenticate to a relay and upload prekeys.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// Register with a relay: authenticate and upload prekeys.
#[derive(Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The relay's WebSocket URL, e.g. ws://127.0.0.1:7878/.
    #[arg(long, value_name = "URL")]
    relay: String,
    /// An invite token from the relay's operator (`sotto relay invite`), needed to register a
    /// new identity on a relay started with `--invite-only`.
    #[arg(long, value_name = "TOKEN", env = "SOTTO_INVITE_TOKEN")]
    invite: Option<String>,
}

/// Runs `sotto register`.
pub(crate) fn main(args: RegisterArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    profile::runtime()?.block_on(async {
        client
            .register_with_invite(&args.relay, args.invite.as_deref())
            .await?;
        client.disconnect().await;
        anyhow::Ok(())
    })?;
    println!("registered with {}", args.relay);
    println!("next: sotto invite  (give the invite to a contact)");
    Ok(())
}
