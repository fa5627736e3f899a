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
    /// Create an identity and an encrypted profile.
    Init(cmd::init::InitArgs),
    /// Register with a relay and upload prekeys (pins the relay's id and TLS key).
    Register(cmd::register::RegisterArgs),
    /// Accept the relay's new id or TLS key after its operator confirmed the change.
    RelayTrust(cmd::relay_trust::RelayTrustArgs),
    /// Print your invite (string and QR code).
    Invite(cmd::invite::InviteArgs),
    /// Manage contacts (`sotto contact add NAME INVITE`).
    Contact(cmd::contact::ContactArgs),
    /// List contacts and their verification state.
    Contacts(cmd::contacts::ContactsArgs),
    /// Compare safety numbers and mark a contact verified.
    Verify(cmd::verify::VerifyArgs),
    /// Send a message.
    Send(cmd::send::SendArgs),
    /// Fetch and show the conversation history.
    Inbox(cmd::inbox::InboxArgs),
    /// Print new incoming messages (`--follow` to keep listening).
    Recv(cmd::recv::RecvArgs),
    /// Group chats (`sotto group create|add|remove|leave|members|send`).
    Group(cmd::group::GroupArgs),
    /// Prove each security property live against an attacker in the path, with evidence.
    Demo(cmd::demo::DemoArgs),
    /// Chat in the terminal (a full-screen UI; `?` shows the keys).
    Chat(cmd::chat::ChatArgs),
}

/// Errors are printed as one line, `error: what failed: why`, whatever `RUST_BACKTRACE` says:
/// a user needs the reason, not a stack trace.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Errors may quote peer data (names, group names): shown escaped.
            let line = format!("{err:#}");
            eprintln!("error: {}", sotto_client::text::escape_controls(&line));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Relay(args) => cmd::relay::main(*args, matches.subcommand_matches("relay")),
        Command::Bench(args) => cmd::bench::main(args),
        Command::Init(a) => cmd::init::main(a),
        Command::Register(a) => cmd::register::main(a),
        Command::RelayTrust(a) => cmd::relay_trust::main(a),
        Command::Invite(a) => cmd::invite::main(a),
        Command::Contact(a) => cmd::contact::main(a),
        Command::Contacts(a) => cmd::contacts::main(a),
        Command::Verify(a) => cmd::verify::main(a),
        Command::Send(a) => cmd::send::main(a),
        Command::Inbox(a) => cmd::inbox::main(a),
        Command::Recv(a) => cmd::recv::main(a),
        Command::Group(a) => cmd::group::main(a),
        Command::Demo(a) => cmd::demo::main(a),
        Command::Chat(a) => cmd::chat::main(a),
    }
}
