//! `sotto bench ...`: load generators.

use clap::Subcommand;

/// What to measure.
#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Load-test a running relay.
    Relay,
}

/// Runs `sotto bench ...`.
pub(crate) fn main(_cmd: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
