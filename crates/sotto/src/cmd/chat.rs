//! `sotto chat`: the terminal UI (the `sotto-tui` crate).

use anyhow::{Context, bail};
use clap::Args;
use std::io::IsTerminal;

use super::profile::{self, ProfileArgs};

/// Chat in the terminal: conversations, messages, verification, all keyboard-driven (`?` shows
/// the keys).
#[derive(Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    profile: ProfileArgs,
}

/// Runs `sotto chat`.
pub(crate) fn main(args: ChatArgs) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("sotto chat needs a terminal (use `sotto recv` and `sotto send` in scripts)");
    }
    // The passphrase prompt happens before the screen switches to the UI.
    let mut client = profile::open(&args.profile)?;
    let rt = profile::runtime()?;
    rt.block_on(sotto_tui::run(&mut client))
        .context("the terminal UI failed")?;
    Ok(())
}
