//! `sotto contact add NAME INVITE`: store a contact.

use anyhow::Context;
use clap::{Args, Subcommand};
use sotto_client::AddOutcome;

use super::profile::{self, ProfileArgs};

/// Manage contacts.
#[derive(Args)]
pub(crate) struct ContactArgs {
    #[command(subcommand)]
    command: ContactCommand,
}

#[derive(Subcommand)]
enum ContactCommand {
    /// Add a contact from their invite (`sotto invite` on their side).
    Add(AddArgs),
}

#[derive(Args)]
struct AddArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// A local name for the contact.
    name: String,
    /// Their invite string (SOTTO1:...).
    invite: String,
}

/// Runs `sotto contact`.
pub(crate) fn main(args: ContactArgs) -> anyhow::Result<()> {
    match args.command {
        ContactCommand::Add(a) => {
            let mut client = profile::open(&a.profile)?;
            let outcome = client
                .add_contact(&a.name, &a.invite)
                .with_context(|| format!("cannot add contact {:?}", a.name))?;
            match outcome {
                AddOutcome::Added => println!("added {}", a.name),
                AddOutcome::Named => {
                    println!("named {} (messages already received are kept)", a.name)
                }
                AddOutcome::Unchanged => println!("{} is already a contact with this key", a.name),
                AddOutcome::KeyChanged { blocked } => {
                    eprintln!("WARNING: {}'s IDENTITY KEY HAS CHANGED.", a.name);
                    eprintln!(
                        "WARNING: this is expected only if they re-installed; otherwise someone may be impersonating them."
                    );
                    if blocked {
                        eprintln!(
                            "WARNING: sending to {0} is blocked until you compare safety numbers again: sotto verify {0}",
                            a.name
                        );
                    } else {
                        eprintln!(
                            "WARNING: {} is unverified; compare safety numbers: sotto verify {}",
                            a.name, a.name
                        );
                    }
                    println!("updated {} (new key, unverified)", a.name);
                }
                _ => println!("updated {}", a.name),
            }
            Ok(())
        }
    }
}
