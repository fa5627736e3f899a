//! `sotto`: the one binary. Each subcommand lives in its own module under `cmd/`.
#![forbid(unsafe_code)]

mod cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// sotto: end-to-end encrypted chat with an untrusted relay.
#[derive(Parser)]
#[command(name = "sotto", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a relay, or manage its store (`sotto relay invite`).
    Relay(Box<cmd::relay::RelayArgs>),
    /// Measure things (`sotto bench relay`).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Relay(args) => cmd::relay::main(*args, matches.subcommand_matches("relay")),
        Command::Bench(args) => cmd::bench::main(args),
    }
}
