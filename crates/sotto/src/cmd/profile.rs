//! Shared by the client subcommands: where the profile is, the passphrase, the async runtime.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use sotto_client::{Client, KdfParams};
use zeroize::Zeroizing;

/// `--profile DIR` (or `SOTTO_PROFILE`); default `$XDG_DATA_HOME/sotto/profile`.
#[derive(Args, Clone)]
pub(crate) struct ProfileArgs {
    /// Profile directory [default: $XDG_DATA_HOME/sotto/profile].
    #[arg(long, env = "SOTTO_PROFILE", value_name = "DIR", global = true)]
    pub(crate) profile: Option<PathBuf>,
}

impl ProfileArgs {
    /// The profile directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.profile
            .clone()
            .unwrap_or_else(sotto_client::default_profile_dir)
    }
}

/// The passphrase: `SOTTO_PASSPHRASE`, else an interactive prompt (twice when `confirm`).
pub(crate) fn passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("SOTTO_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("Passphrase: ").context("cannot read the passphrase")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat passphrase: ")
                .context("cannot read the passphrase")?,
        );
        if *again != *p {
            bail!("passphrases do not match");
        }
        if p.is_empty() {
            bail!("an empty passphrase would leave the profile unprotected");
        }
    }
    Ok(p)
}

/// Opens the profile.
pub(crate) fn open(args: &ProfileArgs) -> anyhow::Result<Client> {
    let pw = passphrase(false)?;
    Ok(Client::open(&args.dir(), pw.as_bytes())?)
}

/// Creates a profile.
pub(crate) fn create(args: &ProfileArgs) -> anyhow::Result<Client> {
    let pw = passphrase(true)?;
    Ok(Client::init(
        &args.dir(),
        pw.as_bytes(),
        KdfParams::from_env(),
    )?)
}

/// A small runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Renders `data` as a QR code with Unicode half blocks.
pub(crate) fn qr(data: &[u8]) -> String {
    match qrcode::QrCode::new(data) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(_) => String::from("(too long for a QR code)"),
    }
}

/// Peer-controlled text as it may be printed: terminal controls shown escaped
/// (`sotto_client::text`).
pub(crate) fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    sotto_client::text::escape_controls(s)
}

/// Prints an event line for `recv`/`send` (human form). Every line is escaped: events name
/// contacts, groups and warnings that peers choose.
pub(crate) fn describe(e: &sotto_client::Event) -> Option<String> {
    describe_raw(e).map(|l| shown(&l).into_owned())
}

fn describe_raw(e: &sotto_client::Event) -> Option<String> {
    use sotto_client::{DeliveryState, Event};
    match e {
        Event::Message(m) => Some(message_line(m)),
        Event::Delivery { contact, id, state } => Some(format!(
            "{} message {} to {contact}: {}",
            match state {
                DeliveryState::Failed => "!",
                _ => "·",
            },
            &id[..8.min(id.len())],
            state_name(*state)
        )),
        Event::UnknownSender { contact } => Some(format!(
            "! message from an identity that is not a contact (filed as {contact}; add their invite under a name to keep it)"
        )),
        _ => super::group::describe(e),
    }
}

/// A state's name.
pub(crate) fn state_name(s: sotto_client::DeliveryState) -> &'static str {
    use sotto_client::DeliveryState::*;
    match s {
        Queued => "queued",
        Accepted => "accepted",
        Delivered => "delivered",
        Received => "received",
        Failed => "failed",
    }
}

/// One history line, escaped for the terminal (message text and errors come from peers).
pub(crate) fn message_line(m: &sotto_client::Message) -> String {
    shown(&message_line_raw(m)).into_owned()
}

fn message_line_raw(m: &sotto_client::Message) -> String {
    use sotto_client::Direction;
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.sent_ms),
    );
    match (&m.text, m.direction) {
        (Some(t), Direction::In) => format!("[{when}] {}: {t}", m.contact),
        (Some(t), Direction::Out) => match &m.error {
            Some(e) => format!("[{when}] me → {}: {t}  (failed: {e})", m.contact),
            None => format!(
                "[{when}] me → {}: {t}  ({})",
                m.contact,
                state_name(m.state)
            ),
        },
        (None, _) => format!(
            "[{when}] {}: ⚠ could not decrypt: {}",
            m.contact,
            m.error.as_deref().unwrap_or("unknown reason")
        ),
    }
}

/// Prints JSON.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}
