//! Replays the fuzz corpora through the fuzz targets' own checks, on stable Rust, so CI keeps
//! them honest.
//!
//! The checks live in `fuzz/src/protocol_checks.rs` and are compiled here unchanged: every file
//! under `fuzz/corpus/<target>/` must decode without a panic and satisfy the same round-trip and
//! state properties the fuzzer asserted. `write_seed_corpora` (ignored) regenerates the seed
//! inputs the corpora started from; see `docs/FUZZING.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/protocol_checks.rs"]
mod checks;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_protocol::sender_keys::{
    ChainContext, SenderChain, SenderKeyDistribution, SenderKeyRecord,
};
use sotto_protocol::{IdentityKeyPair, PrekeyBundle, PrekeyStore, Session};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of the target's corpus; fails naming the file that broke it.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for file in &files {
        let data = fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            panic!("{target}: {} fails its check", file.display());
        }
    }
}

#[test]
fn envelope_corpus() {
    replay("envelope", checks::envelope);
}

#[test]
fn bundle_corpus() {
    replay("bundle", checks::bundle);
}

#[test]
fn prekey_records_corpus() {
    replay("prekey_records", checks::prekey_records);
}

#[test]
fn session_restore_corpus() {
    replay("session_restore", checks::session_restore);
}

#[test]
fn prekey_store_restore_corpus() {
    replay("prekey_store_restore", checks::prekey_store_restore);
}

#[test]
fn safety_qr_corpus() {
    replay("safety_qr", checks::safety_qr);
}

#[test]
fn decrypt_corpus() {
    replay("decrypt", checks::decrypt);
}

#[test]
fn group_message_corpus() {
    replay("group_message", checks::group_message);
}

#[test]
fn distribution_corpus() {
    replay("distribution", checks::distribution);
}

#[test]
fn roster_corpus() {
    replay("roster", checks::roster);
}

#[test]
fn group_restore_corpus() {
    replay("group_restore", checks::group_restore);
}

/// Writes valid inputs for every protocol target into `fuzz/corpus/<target>/seed-*`. Run it with
/// `cargo test -p sotto-protocol --test corpus -- --ignored write_seed_corpora`; the output is
/// deterministic.
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seed_corpora() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };

    let mut rng = ChaCha20Rng::from_seed([0x33; 32]);
    let bob = IdentityKeyPair::generate(&mut rng);
    let mut store = PrekeyStore::new();
    for _ in 0..4 {
        store.rotate_signed_prekey(&mut rng, &bob);
    }
    let signed_prekey = store.signed_prekey().unwrap();
    let one_time = store.generate_one_time_prekeys(&mut rng, 4);
    let kem = store.generate_kem_prekeys(&mut rng, &bob, 2);
    let last_resort = store.rotate_last_resort_kem_prekey(&mut rng, &bob);
    write("prekey_store_restore", "full", &store.snapshot());
    write(
        "prekey_store_restore",
        "empty",
        &PrekeyStore::new().snapshot(),
    );

    write(
        "prekey_records",
        "signed",
        &[&[0], &signed_prekey.encode()[..]].concat(),
    );
    write(
        "prekey_records",
        "one-time",
        &[&[1], &one_time[0].encode()[..]].concat(),
    );
    write(
        "prekey_records",
        "kem",
        &[&[2], &kem[0].encode()[..]].concat(),
    );
    write(
        "prekey_records",
        "last-resort",
        &[&[2], &last_resort.encode()[..]].concat(),
    );

    let with_opk = PrekeyBundle {
        identity: bob.public(),
        signed_prekey: signed_prekey.clone(),
        one_time_prekey: Some(one_time[1]),
        kem_prekey: kem[1].clone(),
    };
    let without_opk = PrekeyBundle {
        identity: bob.public(),
        signed_prekey,
        one_time_prekey: None,
        kem_prekey: last_resort,
    };
    write("bundle", "with-opk", &with_opk.encode());
    write("bundle", "without-opk", &without_opk.encode());

    let alice = IdentityKeyPair::generate(&mut rng);
    let mut pending = Session::initiate(&mut rng, &alice, &with_opk).unwrap();
    let initial = pending.encrypt(b"an initial message").unwrap();
    write("session_restore", "pending", &pending.snapshot());
    write("envelope", "prekey", &initial);
    write("decrypt", "prekey", &initial);

    let conversation = checks::conversation();
    write("session_restore", "alice", &conversation.alice.snapshot());
    write("session_restore", "bob", &conversation.bob.snapshot());
    for (i, message) in conversation.undelivered.iter().enumerate() {
        write("envelope", &format!("ratchet-{i}"), message);
        write("decrypt", &format!("ratchet-{i}"), message);
        // The same message in the decrypt target's "known ratchet key" form.
        let key = conversation
            .ratchet_keys
            .iter()
            .position(|k| k[..] == message[1..33])
            .unwrap();
        let short = [&[4 + key as u8][..], &message[33..]].concat();
        write("decrypt", &format!("known-key-{i}"), &short);
    }

    let number = checks::safety_number();
    write("safety_qr", "payload", &number.qr_payload());
    write("safety_qr", "grouped", number.grouped().as_bytes());

    let g = checks::group_fixture();
    for (i, m) in g.undelivered.iter().enumerate() {
        write("group_message", &format!("message-{i}"), m);
        // The same message in the "iteration ‖ rest" form.
        let short = [&m[61..65], &m[65..]].concat();
        write("group_message", &format!("short-{i}"), &short);
    }
    for (i, d) in g.distributions.iter().enumerate() {
        write("distribution", &format!("key-{i}"), d);
    }
    write("roster", "log", &[&[0], &g.log[..]].concat());
    write("roster", "leave", &[&[1], &g.leave.encode()[..]].concat());
    write("roster", "stored-log", &[&[2], &g.log[..]].concat());
    write(
        "group_restore",
        "alice",
        &[&[0], &g.alice.snapshot()[..]].concat(),
    );
    write(
        "group_restore",
        "bob",
        &[&[0], &g.bob.snapshot()[..]].concat(),
    );
    let d = SenderKeyDistribution::decode(&g.distributions[1]).unwrap();
    let mut record = SenderKeyRecord::new(d.sender);
    record.process_distribution(&d).unwrap();
    write(
        "group_restore",
        "record",
        &[&[1], &record.snapshot()[..]].concat(),
    );
    let ctx = ChainContext {
        group_id: d.group_id,
        sender: d.sender,
        epoch: d.epoch,
        roster_hash: d.roster_hash,
    };
    let chain = SenderChain::new(&mut rng, ctx, None);
    write(
        "group_restore",
        "chain",
        &[&[2], &chain.snapshot()[..]].concat(),
    );
}
