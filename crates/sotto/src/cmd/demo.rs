//! `sotto demo`: prove each security property live against an attacker in the path, and write
//! the evidence (report, pcap files, diagrams).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

/// Start a relay, Alice, Bob and an attacker proxy between them on loopback (throwaway profiles
/// in a temporary directory), attack each security property in turn, and report: a table in
/// the terminal, and report.md, report.html, pcap captures, sequence diagrams, the Wireshark
/// dissector sotto.lua and SHA256SUMS in DIR. The report names the version and commit, and how to
/// check every capture (sha256sum, capinfos, tshark with sotto.lua).
///
/// Exits with a non-zero status if any property fails.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where to write the report, the pcap files and the diagrams.
    #[arg(long, value_name = "DIR", default_value = "sotto-demo-report")]
    report: PathBuf,
    /// Run only this property (its id, e.g. `integrity`, or a prefix of it).
    #[arg(long, value_name = "PROPERTY")]
    only: Option<String>,
}

pub(crate) fn main(args: DemoArgs) -> anyhow::Result<()> {
    let ids = sotto_demo::scenario_ids();
    if let Some(o) = &args.only
        && !sotto_demo::scenarios::all()
            .iter()
            .any(|s| sotto_demo::matches(s.as_ref(), o))
    {
        bail!("unknown property {o:?}; one of: {}", ids.join(", "));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    println!(
        "sotto demo: a relay, Alice, Bob and an attacker in the path, all on loopback; evidence goes to {}",
        args.report.display()
    );
    let ctx = sotto_demo::Ctx::new(Some(args.report.clone()), |line| println!("{line}"));
    let outcomes = rt.block_on(sotto_demo::run(&ctx, args.only.as_deref()));
    sotto_demo::report::write(&args.report, &outcomes)
        .with_context(|| format!("writing the report to {}", args.report.display()))?;
    println!();
    print!("{}", sotto_demo::report::summary(&outcomes));
    println!(
        "  report: {} (and report.md, pcap files, diagrams, sotto.lua, SHA256SUMS beside it)",
        args.report.join("report.html").display()
    );
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 {
        bail!("{failed} of {} properties failed", outcomes.len());
    }
    Ok(())
}
