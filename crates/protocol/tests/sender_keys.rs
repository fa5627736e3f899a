//! Sender Keys: group messages, their rejections, and the published `sender-key-vectors/1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{Value, json};
use sotto_protocol::kdf::{CHAIN_KEY_CONSTANT, MESSAGE_KEY_CONSTANT};
use sotto_protocol::padding::pad;
use sotto_protocol::sender_keys::{
    GROUP_HEADER_LEN, GroupDecryptError, MAX_JUMP, MAX_SKIPPED_SEEDS, SENDER_KEY_INFO, SenderChain,
    SenderKeyDistribution, SenderKeyRecord,
};

const GROUP: [u8; 16] = *b"sotto test group";
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/sender-keys.json"
);

fn pair() -> (SenderChain, SenderKeyRecord) {
    let chain = SenderChain::new(&mut common::rng(40), GROUP, 1);
    let mut record = SenderKeyRecord::new();
    let wire = chain.distribution().encode();
    record
        .process_distribution(&SenderKeyDistribution::decode(&wire).unwrap())
        .unwrap();
    (chain, record)
}

#[test]
fn out_of_order_within_bound_decrypts_once() {
    let (mut chain, mut record) = pair();
    let msgs: Vec<Vec<u8>> = (0..20)
        .map(|i| chain.encrypt(format!("m{i}").as_bytes()).unwrap())
        .collect();
    for i in [5usize, 0, 19, 3, 4, 1, 2] {
        assert_eq!(
            record.decrypt(&msgs[i]).unwrap(),
            format!("m{i}").as_bytes()
        );
        assert_eq!(
            record.decrypt(&msgs[i]).unwrap_err(),
            GroupDecryptError::Duplicate
        );
    }
    for (i, m) in msgs.iter().enumerate().skip(6).take(13) {
        assert_eq!(record.decrypt(m).unwrap(), format!("m{i}").as_bytes());
    }
    assert_eq!(record.skipped_count(), 0);
}

#[test]
fn every_bit_flip_is_rejected_and_state_unchanged() {
    let (mut chain, mut record) = pair();
    let msg = chain.encrypt(b"group hello").unwrap();
    let before = record.snapshot();
    for bit in 0..msg.len() * 8 {
        let mut t = msg.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(record.decrypt(&t).is_err(), "bit {bit} accepted");
    }
    assert_eq!(record.snapshot(), before);
    assert_eq!(record.decrypt(&msg).unwrap(), b"group hello");
}

#[test]
fn jumps_wrong_signers_and_unknown_chains_are_rejected() {
    let (mut chain, mut record) = pair();
    // Beyond MAX_JUMP: a chain advanced far without the receiver.
    let mut far = SenderChain::restore(&chain.snapshot()).unwrap();
    let first = chain.encrypt(b"0").unwrap();
    let mut far_msg = Vec::new();
    // Iteration MAX_JUMP + 1 while the receiver is at 0.
    for _ in 0..MAX_JUMP + 2 {
        far_msg = far.encrypt(b"x").unwrap();
    }
    let before = record.snapshot();
    assert_eq!(
        record.decrypt(&far_msg).unwrap_err(),
        GroupDecryptError::TooFarAhead
    );
    assert_eq!(record.snapshot(), before);
    assert_eq!(record.decrypt(&first).unwrap(), b"0");

    // Same chain id and chain key but another signing key: a member forging as another.
    let d = chain.distribution();
    let mut impostor =
        SenderChain::from_parts(GROUP, 1, d.chain_id, d.iteration, [0; 32], &[7; 32]);
    assert_eq!(
        record
            .decrypt(&impostor.encrypt(b"forged").unwrap())
            .unwrap_err(),
        GroupDecryptError::AuthenticationFailed
    );

    // A chain nobody distributed.
    let mut stranger = SenderChain::new(&mut common::rng(41), GROUP, 1);
    assert_eq!(
        record
            .decrypt(&stranger.encrypt(b"?").unwrap())
            .unwrap_err(),
        GroupDecryptError::UnknownChain
    );
}

#[test]
fn skipped_seeds_stay_bounded_and_restore_works() {
    let (mut chain, mut record) = pair();
    let first = chain.encrypt(b"first").unwrap();
    let mut last = Vec::new();
    for _ in 0..(MAX_SKIPPED_SEEDS + 500) {
        last = chain.encrypt(b"x").unwrap();
    }
    record.decrypt(&last).unwrap();
    assert_eq!(record.skipped_count(), MAX_SKIPPED_SEEDS);
    assert_eq!(
        record.decrypt(&first).unwrap_err(),
        GroupDecryptError::Duplicate,
        "evicted"
    );
    let mut restored = SenderKeyRecord::restore(&record.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), record.snapshot());
    let next = chain.encrypt(b"after restore").unwrap();
    assert_eq!(restored.decrypt(&next).unwrap(), b"after restore");
    for len in 0..64 {
        assert!(SenderKeyRecord::restore(&record.snapshot()[..len]).is_err());
    }
}

#[test]
fn stolen_state_reads_until_rotation() {
    let (mut chain, mut record) = pair();
    let mut thief = record.clone();
    let m = chain.encrypt(b"before rotation").unwrap();
    assert_eq!(thief.decrypt(&m).unwrap(), b"before rotation");
    record.decrypt(&m).unwrap();
    // Rotation: a fresh chain, distributed to the remaining members only.
    let mut rotated = SenderChain::new(&mut common::rng(42), GROUP, 2);
    record
        .process_distribution(&rotated.distribution())
        .unwrap();
    let m = rotated.encrypt(b"after rotation").unwrap();
    assert_eq!(record.decrypt(&m).unwrap(), b"after rotation");
    assert_eq!(
        thief.decrypt(&m).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
}

#[test]
fn replayed_old_distribution_cannot_rewind() {
    let (mut chain, mut record) = pair();
    let old = chain.distribution();
    let m = chain.encrypt(b"once").unwrap();
    record.decrypt(&m).unwrap();
    record.process_distribution(&old).unwrap();
    assert_eq!(
        record.decrypt(&m).unwrap_err(),
        GroupDecryptError::Duplicate
    );
}

fn hmac(key: &[u8; 32], c: u8) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(&[c]);
    m.finalize().into_bytes().into()
}

fn generate() -> Value {
    use sha2::{Digest, Sha256};
    let seed =
        |l: &str| -> [u8; 32] { Sha256::digest(format!("sotto sender-key vectors: {l}")).into() };
    let chain_key = seed("chain key");
    let signing_seed = seed("signing seed");
    let mut chain = SenderChain::from_parts(GROUP, 3, 0x5077_0001, 0, chain_key, &signing_seed);
    let distribution = chain.distribution();
    let mut record = SenderKeyRecord::new();
    record.process_distribution(&distribution).unwrap();

    // Message seeds by iteration, from the chain's own KDF (checked against the hazmat view).
    let mut messages = Vec::new();
    let mut wires = Vec::new();
    let mut ck = chain_key;
    let mut iteration = 0u32;
    for (target, text) in [
        (0u32, "group message 0"),
        (1, "group message 1"),
        (2, "group message 2"),
        (1000, "far ahead: 1000"),
    ] {
        while iteration < target {
            chain.encrypt(b"skipped").unwrap();
            ck = hmac(&ck, CHAIN_KEY_CONSTANT);
            iteration += 1;
        }
        assert_eq!(chain.hazmat_chain_key(), ck);
        let wire = chain.encrypt(text.as_bytes()).unwrap();
        let message_key = hmac(&ck, MESSAGE_KEY_CONSTANT);
        ck = hmac(&ck, CHAIN_KEY_CONSTANT);
        iteration += 1;
        assert_eq!(record.decrypt(&wire).unwrap(), text.as_bytes());
        let signed = &wire[..wire.len() - 64];
        messages.push(json!({
            "iteration": target,
            "message_key": hex::encode(message_key),
            "plaintext": hex::encode(pad(text.as_bytes()).unwrap()),
            "unpadded_utf8": text,
            "ad": hex::encode(&wire[..GROUP_HEADER_LEN]),
            "ciphertext": hex::encode(&signed[GROUP_HEADER_LEN..]),
            "signed_part": hex::encode(signed),
            "signature": hex::encode(&wire[wire.len() - 64..]),
            "message": hex::encode(&wire),
        }));
        wires.push(wire);
    }
    let mut tampered = wires[1].clone();
    tampered[GROUP_HEADER_LEN + 2] ^= 1;
    let d = chain.distribution();
    let mut impostor =
        SenderChain::from_parts(GROUP, 3, d.chain_id, 0, chain_key, &seed("impostor"));
    let wrong_signer = impostor.encrypt(b"group message 0").unwrap();
    let mut jump = SenderChain::from_parts(
        GROUP,
        3,
        d.chain_id,
        1001 + MAX_JUMP + 1,
        [1; 32],
        &signing_seed,
    );
    let jump_msg = jump.encrypt(b"too far").unwrap();
    let rejects = vec![
        json!({"message": hex::encode(&tampered), "chain": 0, "why": "tampered"}),
        json!({"message": hex::encode(&wrong_signer), "chain": 0, "why": "wrong-signer"}),
        json!({"message": hex::encode(&wires[2]), "chain": 0, "why": "replay"}),
        json!({"message": hex::encode(&jump_msg), "chain": 0, "why": "jump"}),
    ];
    for r in &rejects {
        let before = record.snapshot();
        assert!(
            record
                .decrypt(&hex::decode(r["message"].as_str().unwrap()).unwrap())
                .is_err(),
            "{}",
            r["why"]
        );
        assert_eq!(record.snapshot(), before);
    }
    json!({
        "format": "sender-key-vectors/1",
        "description": "sotto Sender Keys: one chain, iterations 0, 1, 2 and 1000, four rejected messages",
        "generator": "sotto-protocol tests/sender_keys.rs (the real code path, fixed seeds)",
        "kdf_ck": {"type": "hmac", "hash": "sha256", "mk_const": "01", "ck_const": "02"},
        "aead": {"name": "xchacha20poly1305", "key_derivation": {"type": "hkdf", "hash": "sha256",
            "info_utf8": std::str::from_utf8(SENDER_KEY_INFO).unwrap(), "output": ["key", "nonce"]}},
        "signature": "ed25519",
        "chains": [{
            "initial_chain_key": hex::encode(chain_key),
            "initial_iteration": 0,
            "signing_seed": hex::encode(signing_seed),
            "signing_pub": hex::encode(distribution.signing_key),
            "messages": messages,
        }],
        "rejects": rejects,
        "distribution": [{
            "message": hex::encode(distribution.encode().as_slice()),
            "group_id": hex::encode(GROUP),
            "epoch": 3,
            "chain_id": distribution.chain_id,
            "iteration": 0,
            "chain_key": hex::encode(chain_key),
            "signing_pub": hex::encode(distribution.signing_key),
        }],
    })
}

#[test]
fn sender_key_vectors_match_the_committed_file() {
    let generated = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    assert_eq!(
        generated,
        serde_json::to_string_pretty(&generate()).unwrap() + "\n"
    );
    if std::env::var_os("SOTTO_REGENERATE_VECTORS").is_some() {
        std::fs::write(VECTORS, &generated).unwrap();
    }
    let committed =
        std::fs::read_to_string(VECTORS).expect("run with SOTTO_REGENERATE_VECTORS=1 to create");
    assert!(
        committed == generated,
        "sender-key output changed (regenerate deliberately with SOTTO_REGENERATE_VECTORS=1)"
    );
}
