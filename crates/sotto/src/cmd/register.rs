//! `sotto register --relay URL`: authenticate to a relay and upload prekeys.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sotto_client::{RegisterOptions, TrustRoots};

use super::profile::{self, ProfileArgs};

/// Register with a relay: authenticate and upload prekeys. The relay's id (and, over wss://,
/// its TLS key) is pinned on the first connection; a relay that later presents another one is
/// refused until you accept it (`sotto relay-trust`, or `--accept-new-relay-key` here).
#[derive(Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The relay's WebSocket URL: ws://HOST:PORT/ (loopback, tests) or wss://HOST[:PORT]/ (TLS).
    #[arg(long, value_name = "URL")]
    relay: String,
    /// An invite token from the relay's operator (`sotto relay invite`), needed to register a
    /// new identity on a relay started with `--invite-only`.
    #[arg(long, value_name = "TOKEN", env = "SOTTO_INVITE_TOKEN")]
    invite: Option<String>,
    /// Trust only the CA certificates in this PEM file for the relay's TLS certificate (a
    /// self-hosted CA). The file's content is kept in the profile.
    #[arg(long, value_name = "FILE", conflicts_with = "system_roots")]
    ca_file: Option<PathBuf>,
    /// Trust the operating system's CA store instead of the built-in Mozilla roots.
    #[arg(long)]
    system_roots: bool,
    /// Forget the relay id and TLS key pinned for this relay and pin what it presents now
    /// (only when its operator confirmed the change).
    #[arg(long)]
    accept_new_relay_key: bool,
}

/// Runs `sotto register`.
pub(crate) fn main(args: RegisterArgs) -> anyhow::Result<()> {
    let roots = match (&args.ca_file, args.system_roots) {
        (Some(path), _) => Some(TrustRoots::CaPem(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        (None, true) => Some(TrustRoots::System),
        (None, false) => None,
    };
    let mut client = profile::open(&args.profile)?;
    profile::runtime()?.block_on(async {
        let r = client
            .register_with(
                &args.relay,
                RegisterOptions {
                    invite: args.invite.as_deref(),
                    roots,
                    accept_new_relay_key: args.accept_new_relay_key,
                },
            )
            .await;
        client.disconnect().await;
        r
    })?;
    println!("registered with {}", args.relay);
    let pins = client.relay_pins();
    if let Some(id) = &pins.relay_id {
        println!("relay id (pinned): {id}");
    }
    if let Some(key) = &pins.tls_key {
        println!("relay TLS key (pinned): {key}");
    }
    println!("next: sotto invite  (give the invite to a contact)");
    Ok(())
}
