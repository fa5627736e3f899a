//! `sotto invite`: print our invite string and its QR code.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// Print your invite (a string and a QR code) for a contact to add.
#[derive(Args)]
pub(crate) struct InviteArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Print only the invite string (no QR code).
    #[arg(long)]
    plain: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `sotto invite`.
pub(crate) fn main(args: InviteArgs) -> anyhow::Result<()> {
    let client = profile::open(&args.profile)?;
    let invite = client.invite()?;
    if args.json {
        return profile::print_json(&serde_json::json!({
            "invite": invite,
            "fingerprint": client.identity().fingerprint(),
            "relay": client.relay_url(),
        }));
    }
    if !args.plain {
        println!("{}", profile::qr(invite.as_bytes()));
    }
    println!("{invite}");
    Ok(())
}
