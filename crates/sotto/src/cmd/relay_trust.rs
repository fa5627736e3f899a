//! `sotto relay-trust`: accept a relay's new id or TLS key after its operator confirmed it.

use clap::Args;

use super::profile::{self, ProfileArgs};

/// Accept the relay's new id or TLS key. Connects to the registered relay without the pins,
/// prints what was pinned and what it presents now, and pins the new values. Do this only when
/// the relay's operator told you the relay was moved, re-created or given a new certificate key
/// (compare the id with the `relay_id` its log shows at start); otherwise someone may be
/// impersonating it.
#[derive(Args)]
pub(crate) struct RelayTrustArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `sotto relay-trust`.
pub(crate) fn main(args: RelayTrustArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    let (old, new) = profile::runtime()?.block_on(client.trust_relay())?;
    if args.json {
        return profile::print_json(&serde_json::json!({
            "relay": client.relay_url(),
            "old": old,
            "new": new,
        }));
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("relay {}", client.relay_url().unwrap_or_default());
    println!(
        "  id:      {} -> {}",
        show(&old.relay_id),
        show(&new.relay_id)
    );
    println!(
        "  TLS key: {} -> {}",
        show(&old.tls_key),
        show(&new.tls_key)
    );
    println!("the new values are pinned");
    Ok(())
}
