//! `sotto verify NAME`: show the safety number and mark the contact verified.

use anyhow::bail;
use clap::Args;

use super::profile::{self, ProfileArgs};

/// Show the safety number with a contact (digits and QR); mark verified with `--confirm` or by
/// pasting the number they read to you.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The contact.
    name: String,
    /// The safety number as shown on their device (marks verified if it matches).
    number: Vec<String>,
    /// Mark verified: you compared the numbers and they match.
    #[arg(long, conflicts_with = "number")]
    confirm: bool,
    /// Mark unverified.
    #[arg(long, conflicts_with_all = ["number", "confirm"])]
    reset: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `sotto verify`.
pub(crate) fn main(args: VerifyArgs) -> anyhow::Result<()> {
    let mut client = profile::open(&args.profile)?;
    let sn = client.safety_number(&args.name)?;
    if args.reset {
        client.unverify(&args.name)?;
        println!("{} marked unverified", args.name);
        return Ok(());
    }
    let typed = args.number.join(" ");
    if args.confirm || !typed.trim().is_empty() {
        let typed = (!typed.trim().is_empty()).then_some(typed.as_str());
        client.verify(&args.name, typed)?;
        if args.json {
            return profile::print_json(
                &serde_json::json!({"contact": args.name, "verified": true}),
            );
        }
        println!("{} is now verified", args.name);
        return Ok(());
    }
    let contact = client.contacts()?.into_iter().find(|c| c.name == args.name);
    let Some(contact) = contact else {
        bail!("unknown contact {:?}", args.name)
    };
    if args.json {
        return profile::print_json(&serde_json::json!({
            "contact": args.name,
            "safety_number": sn.digits(),
            "grouped": sn.grouped(),
            "verified": contact.verified,
            "key_changed": contact.key_changed,
        }));
    }
    println!("{}", profile::qr(&sn.qr_payload()));
    println!("Safety number with {}:\n\n  {}\n", args.name, sn.grouped());
    println!(
        "Compare it with the number on {}'s screen (in person or on a call you trust).",
        args.name
    );
    println!(
        "Compare all 12 groups: each half is one person's key, so a man in the middle changes only one half."
    );
    println!(
        "If they match: sotto verify {} --confirm   (or paste their number after the name)",
        args.name
    );
    if contact.key_changed {
        println!(
            "NOTE: {}'s key changed; this is the safety number for the NEW key.",
            args.name
        );
    }
    Ok(())
}
