//! `sotto contacts`: list contacts with their verification state.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// List contacts and their verification state.
#[derive(Args)]
pub(crate) struct ContactsArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// JSON output (one array).
    #[arg(long)]
    json: bool,
}

/// Runs `sotto contacts`.
pub(crate) fn main(args: ContactsArgs) -> anyhow::Result<()> {
    let client = profile::open(&args.profile)?;
    let contacts = client.contacts()?;
    if args.json {
        return profile::print_json(&contacts);
    }
    if contacts.is_empty() {
        println!("no contacts yet: sotto contact add NAME INVITE");
    }
    for c in contacts {
        let state = if c.blocked {
            "KEY CHANGED - blocked until re-verified"
        } else if c.key_changed {
            "KEY CHANGED - unverified"
        } else if c.verified {
            "verified"
        } else {
            "unverified"
        };
        println!("{:<20} {}  {state}", profile::shown(&c.name), c.fingerprint);
    }
    Ok(())
}
