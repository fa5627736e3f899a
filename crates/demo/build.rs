//! Embeds the git commit the binary is built from, for the report's provenance line:
//! `SOTTO_GIT_COMMIT` (40 hex digits, or `unknown`) and `SOTTO_GIT_DIRTY` (`true`, `false` or
//! `unknown`: whether tracked files differ from that commit).
//!
//! A build outside a git checkout (a source tarball, a vendored copy) is not an error: set
//! `SOTTO_GIT_COMMIT` in the environment to name the commit, or the report says "unknown".

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SOTTO_GIT_COMMIT");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest);
    if let Ok(c) = std::env::var("SOTTO_GIT_COMMIT")
        && !c.trim().is_empty()
    {
        println!("cargo:rustc-env=SOTTO_GIT_COMMIT={}", c.trim());
        println!("cargo:rustc-env=SOTTO_GIT_DIRTY=unknown");
        return;
    }
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"])
        .filter(|c| c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()));
    let Some(commit) = commit else {
        println!("cargo:rustc-env=SOTTO_GIT_COMMIT=unknown");
        println!("cargo:rustc-env=SOTTO_GIT_DIRTY=unknown");
        return;
    };
    // Rerun when HEAD moves (a commit, a checkout) or the index changes, and when any source of
    // the workspace changes (so "dirty" is true of what is being compiled).
    let mut watch = vec![
        "HEAD".to_owned(),
        "index".to_owned(),
        "packed-refs".to_owned(),
    ];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        // (A path that does not exist would make cargo rerun this script on every build.)
        if let Some(p) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &w],
        ) && Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(top) = git(dir, &["rev-parse", "--show-toplevel"]) {
        for p in ["crates", "Cargo.toml", "Cargo.lock", "tools/wireshark"] {
            println!("cargo:rerun-if-changed={top}/{p}");
        }
    }
    let dirty = match git(dir, &["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) => (!s.is_empty()).to_string(),
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=SOTTO_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SOTTO_GIT_DIRTY={dirty}");
}
