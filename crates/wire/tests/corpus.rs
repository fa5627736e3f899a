//! Replays the `wire_frame` fuzz corpus through the fuzz target's own check, on stable Rust.
//!
//! The check lives in `fuzz/src/wire_checks.rs` and is compiled here unchanged. The ignored
//! `write_seed_corpus` regenerates the seed frames the corpus started from (`docs/FUZZING.md`).

#[path = "../../../fuzz/src/wire_checks.rs"]
mod checks;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use sotto_protocol::IdentityKeyPair;
use sotto_wire::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire_frame")
}

#[test]
fn wire_frame_corpus() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for file in &files {
        let data = fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| checks::frame(&data))).is_err() {
            panic!("wire_frame: {} fails its check", file.display());
        }
    }
}

/// Writes one valid frame of every type into `fuzz/corpus/wire_frame/seed-*`. Run it with
/// `cargo test -p sotto-wire --test corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let keypair = IdentityKeyPair::from_seed(&[1; 32]);
    let key = IdentityKeyPair::from_seed(&[2; 32]).public();
    let relay = RelayId([9; 32]);
    let record = |id: u32, len: usize| PrekeyRecord {
        id,
        blob: vec![id as u8; len],
    };
    let counts = PrekeyCounts { x25519: 3, kem: 1 };
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "authenticate",
            ClientFrame::Authenticate(AuthenticateOut::sign(
                &keypair,
                &relay,
                &[3; 32],
                Some(b"invite".to_vec()),
            ))
            .encode(),
        ),
        (
            "upload",
            ClientFrame::UploadPrekeys(UploadPrekeysOut {
                signed_prekey: Some(record(1, 100)),
                last_resort_kem: None,
                one_time_x25519: (2..4).map(|i| record(i, 36)).collect(),
                one_time_kem: vec![record(5, 40)],
            })
            .encode(),
        ),
        ("fetch", ClientFrame::FetchBundle(key).encode()),
        (
            "send",
            ClientFrame::Send(SendOut {
                recipient: key,
                message_id: MessageId([5; 16]),
                body: vec![0xAB; 40],
            })
            .encode(),
        ),
        ("ack", ClientFrame::Ack(vec![1, 2, u64::MAX]).encode()),
        ("ping", ClientFrame::Ping(42).encode()),
        (
            "challenge",
            RelayFrame::Challenge(ChallengeIn {
                relay_id: relay,
                nonce: [3; 32],
                max_frame_len: MAX_FRAME_LEN as u32,
                max_body_len: MAX_BODY_LEN as u32,
            })
            .encode(),
        ),
        ("auth-ok", RelayFrame::AuthOk(counts).encode()),
        (
            "accepted",
            RelayFrame::Accepted(MessageId([6; 16])).encode(),
        ),
        (
            "deliver",
            RelayFrame::Deliver(DeliverIn {
                delivery_id: 7,
                sender: key,
                message_id: MessageId([6; 16]),
                timestamp_ms: 1_700_000_000_000,
                body: vec![0xCD; 40],
            })
            .encode(),
        ),
        (
            "bundle",
            RelayFrame::Bundle(BundleIn {
                identity: key,
                signed_prekey: record(1, 100),
                one_time_x25519: Some(record(2, 36)),
                kem: record(3, 40),
                kem_is_last_resort: true,
            })
            .encode(),
        ),
        ("prekeys-low", RelayFrame::PrekeysLow(counts).encode()),
        ("prekeys-stored", RelayFrame::PrekeysStored(counts).encode()),
        (
            "error-message",
            RelayFrame::Error(ErrorIn {
                code: ErrorCode::QuotaFull,
                context: ErrorContext::Message(MessageId([6; 16])),
            })
            .encode(),
        ),
        (
            "error-identity",
            RelayFrame::Error(ErrorIn {
                code: ErrorCode::Unknown(999),
                context: ErrorContext::Identity(key),
            })
            .encode(),
        ),
        ("pong", RelayFrame::Pong(42).encode()),
        ("drained", RelayFrame::Drained.encode()),
    ];
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in frames {
        checks::frame(&bytes);
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
