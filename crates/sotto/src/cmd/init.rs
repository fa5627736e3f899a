//! `sotto init`: create an identity and an encrypted profile.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// Create a new identity and an encrypted profile.
#[derive(Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    profile: ProfileArgs,
}

/// Runs `sotto init`.
pub(crate) fn main(args: InitArgs) -> anyhow::Result<()> {
    let client = profile::create(&args.profile)?;
    println!("created profile in {}", client.dir().display());
    println!("identity fingerprint: {}", client.identity().fingerprint());
    println!("next: sotto register --relay ws://HOST:PORT/");
    Ok(())
}
