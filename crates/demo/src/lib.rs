//! # sotto-demo
//!
//! `sotto demo` proves sotto's security properties live, against an attacker in the path, and
//! keeps the evidence. Everything runs in one process on loopback with throwaway profiles:
//!
//! ```text
//!   Alice ─┐                                   ┌─ (SQLite)
//!          ├─ws─▶ attacker [`proxy::Proxy`] ─ws─▶ relay (sotto-relay, own runtime)
//!   Bob ───┘        records every byte (pcap), drops, delays, replays, flips bits,
//!                   injects frames, substitutes prekey bundles, steals profiles
//! ```
//!
//! Each property is one [`Scenario`] (one module under [`scenarios`]) that builds its own
//! [`world::World`], attacks, and returns an [`Outcome`]: attack, expected, observed, pass, and
//! evidence (pcap file, hex excerpts, tables, the proxy's frame log). [`report`] turns the
//! outcomes into `report.md` and a self-contained `report.html`.
//!
//! ```no_run
//! # async fn demo() {
//! let ctx = sotto_demo::Ctx::new(Some("report".into()), |line| println!("{line}"));
//! let outcomes = sotto_demo::run(&ctx, None).await;
//! assert!(outcomes.iter().all(|o| o.pass));
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_protocol::IdentityKey;
use thiserror::Error;

pub mod pcap;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod thief;
pub mod world;
pub mod ws;

use proxy::FrameLog;

/// Why a scenario could not run to its verdict (it is then reported as failed).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting the relay, proxy or temporary files failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// A client operation failed unexpectedly.
    #[error("client: {0}")]
    Client(#[from] sotto_client::Error),
    /// A file or socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A step took longer than [`world::STEP_TIMEOUT`].
    #[error("a step timed out")]
    Timeout,
    /// The scene could not go on (what was expected did not happen).
    #[error("{0}")]
    Scene(String),
    /// A written capture could not be read back.
    #[error("reading the capture back: {0}")]
    Pcap(#[from] pcap::ReadError),
}

/// A piece of evidence shown in the report.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Evidence {
    /// A paragraph.
    Text(String),
    /// A hex dump of some bytes.
    Hex {
        /// What the bytes are.
        caption: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A table.
    Table {
        /// What the table shows.
        caption: String,
        /// Column names.
        header: Vec<String>,
        /// Rows.
        rows: Vec<Vec<String>>,
    },
}

/// The result of one scenario: the report's table row and its evidence.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Short id, as accepted by `--only` (`confidentiality`, `integrity`, ...).
    pub id: &'static str,
    /// The property, for humans.
    pub title: &'static str,
    /// What the attacker did.
    pub attack: String,
    /// The attack in a few words, for the terminal table.
    pub headline: String,
    /// What must happen if the property holds.
    pub expected: String,
    /// What was observed, one line per check.
    pub observed: Vec<Check>,
    /// Whether every check held.
    pub pass: bool,
    /// Evidence for the report.
    pub evidence: Vec<Evidence>,
    /// The pcap file written for this scene, with what it holds (counted from the file).
    pub pcap: Option<PcapFile>,
    /// The proxy's log of the scene (for the sequence diagram).
    pub log: Vec<FrameLog>,
    /// Display names of the identities in the log.
    pub names: Vec<(IdentityKey, String)>,
    /// How long the scene took.
    pub duration: Duration,
}

/// A capture written into the report directory, and what the written file holds.
#[derive(Clone, Debug)]
pub struct PcapFile {
    /// The file name inside the report directory.
    pub name: PathBuf,
    /// Packets, payload bytes, size and SHA-256, counted from the file after it was written.
    pub summary: pcap::Summary,
}

/// One observation and whether it is what the property requires.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was observed.
    pub what: String,
    /// Whether it is as expected.
    pub ok: bool,
}

impl Outcome {
    /// A new outcome with no checks yet.
    pub fn new(id: &'static str, title: &'static str, attack: &str, expected: &str) -> Self {
        Self {
            id,
            title,
            attack: attack.to_owned(),
            headline: attack.chars().take(60).collect(),
            expected: expected.to_owned(),
            observed: Vec::new(),
            pass: false,
            evidence: Vec::new(),
            pcap: None,
            log: Vec::new(),
            names: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// Records an observation; the outcome passes only if every observation is ok and there is
    /// at least one.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        self.observed.push(Check {
            what: what.into(),
            ok,
        });
        self.pass = self.observed.iter().all(|c| c.ok);
        ok
    }

    /// The check with text containing `needle`, for tests.
    pub fn find(&self, needle: &str) -> Option<&Check> {
        self.observed.iter().find(|c| c.what.contains(needle))
    }

    /// Display name of an identity in this scene.
    pub fn name_of(&self, id: &IdentityKey) -> String {
        self.names
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| id.fingerprint().chars().take(9).collect())
    }
}

/// A message state in the words the CLI uses (`sotto inbox --json`), for the report.
pub fn state_word(s: sotto_client::DeliveryState) -> &'static str {
    use sotto_client::DeliveryState as S;
    match s {
        S::Queued => "queued",
        S::Accepted => "accepted",
        S::Delivered => "delivered",
        S::Received => "received",
        S::Failed => "failed",
    }
}

/// A message's state and error as the report shows them: `failed: message failed
/// authentication`, `received`.
pub fn describe(m: &sotto_client::Message) -> String {
    match &m.error {
        Some(e) => format!("{}: {e}", state_word(m.state)),
        None => state_word(m.state).to_owned(),
    }
}

/// `n` things in words: `1 session`, `3 sessions`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How often, in words: `once`, `twice`, `3 times`.
pub fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// Where a scenario writes its files and how it tells the user what it is doing.
#[derive(Clone)]
pub struct Ctx {
    out_dir: Option<PathBuf>,
    narrate: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Ctx {
    /// A context writing pcaps into `out_dir` (if any) and narrating through `narrate`.
    pub fn new(out_dir: Option<PathBuf>, narrate: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            out_dir,
            narrate: Arc::new(narrate),
        }
    }

    /// Tells the user about a step.
    pub fn say(&self, line: &str) {
        (self.narrate)(line);
    }

    /// The output directory, if any.
    pub fn out_dir(&self) -> Option<&Path> {
        self.out_dir.as_deref()
    }

    /// Writes `capture` as `name` into the output directory (if there is one) and reads the file
    /// back: returns it with what it holds.
    pub fn save_pcap(
        &self,
        capture: &pcap::Capture,
        name: &str,
    ) -> Result<Option<PcapFile>, Error> {
        Ok(self.save_and_read_pcap(capture, name)?.0)
    }

    /// Like [`Ctx::save_pcap`], and also returns the packets as read back from the file (from
    /// the same bytes in memory when there is no output directory), so a scene searches exactly
    /// the evidence it hands over.
    pub fn save_and_read_pcap(
        &self,
        capture: &pcap::Capture,
        name: &str,
    ) -> Result<(Option<PcapFile>, pcap::Contents), Error> {
        let Some(dir) = &self.out_dir else {
            return Ok((None, pcap::read(&capture.to_pcap()?)?));
        };
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        capture.write_to(&path)?;
        let contents = pcap::read(&std::fs::read(&path)?)?;
        let file = PcapFile {
            name: PathBuf::from(name),
            summary: contents.summary.clone(),
        };
        Ok((Some(file), contents))
    }
}

/// A boxed future of a scenario run.
pub type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + 'a>>;

/// One property demonstration. Implementations live in [`scenarios`], one module each; new
/// scenes (group chats, ...) are added to [`scenarios::all`].
pub trait Scenario {
    /// Short id for `--only`.
    fn id(&self) -> &'static str;
    /// The property, for humans.
    fn title(&self) -> &'static str;
    /// Runs the scene from scratch (its own relay, proxy and profiles).
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a>;
}

/// Runs every scenario (or only the one whose id or title matches `only`, case-insensitive),
/// one after the other. A scenario that errors is reported as failed with the error as its
/// observation.
pub async fn run(ctx: &Ctx, only: Option<&str>) -> Vec<Outcome> {
    let all = scenarios::all();
    let chosen: Vec<&Box<dyn Scenario>> = all
        .iter()
        .filter(|s| only.is_none_or(|o| matches(s.as_ref(), o)))
        .collect();
    let total = chosen.len();
    let mut out = Vec::new();
    for (i, s) in chosen.into_iter().enumerate() {
        ctx.say(&format!("\n[{}/{}] {}", i + 1, total, s.title()));
        let start = Instant::now();
        let mut o = match s.run(ctx).await {
            Ok(o) => o,
            Err(e) => {
                let mut o = Outcome::new(s.id(), s.title(), "(scene aborted)", "(see observed)");
                o.check(false, format!("the scene could not complete: {e}"));
                o
            }
        };
        if o.observed.is_empty() {
            o.check(false, "the scene made no observation");
        }
        o.duration = start.elapsed();
        ctx.say(&format!(
            "      → {} ({:.1} s)",
            if o.pass { "PASS" } else { "FAIL" },
            o.duration.as_secs_f64()
        ));
        out.push(o);
    }
    out
}

/// Whether `only` names scenario `s` (its id, a prefix of it, or its title).
pub fn matches(s: &dyn Scenario, only: &str) -> bool {
    let o = only.to_ascii_lowercase();
    s.id().starts_with(&o) || s.title().to_ascii_lowercase().contains(&o)
}

/// Ids of every scenario, in order.
pub fn scenario_ids() -> Vec<&'static str> {
    scenarios::all().iter().map(|s| s.id()).collect()
}
