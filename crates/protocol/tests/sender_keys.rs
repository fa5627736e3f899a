//! Sender Keys: group messages, their rejections, and the published `sender-key-vectors/2`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use curve25519_dalek::edwards::CompressedEdwardsY;
use serde_json::{Value, json};
use sotto_protocol::kdf::{CHAIN_KEY_CONSTANT, MESSAGE_KEY_CONSTANT};
use sotto_protocol::padding::pad;
use sotto_protocol::roster::Roster;
use sotto_protocol::sender_keys::{
    BINDING_TAG, ChainContext, DISTRIBUTION_VERSION, GROUP_HEADER_LEN, GROUP_MESSAGE_VERSION,
    GroupDecryptError, MAX_JUMP, MAX_SKIPPED_SEEDS, SENDER_KEY_INFO, SenderChain,
    SenderKeyDistribution, SenderKeyRecord,
};
use sotto_protocol::{IdentityKey, IdentityKeyPair};

const GROUP: [u8; 16] = *b"sotto test group";
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/sender-keys.json"
);

fn id(seed: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[seed; 32])
}

fn ctx(sender: &IdentityKeyPair, hash: [u8; 32]) -> ChainContext {
    ChainContext {
        group_id: GROUP,
        sender: sender.public(),
        epoch: 1,
        roster_hash: hash,
    }
}

const ROSTER: [u8; 32] = [0x11; 32];

/// Bob's chain and a record of it (as another member holds it).
fn pair() -> (SenderChain, SenderKeyRecord) {
    let bob = id(2);
    let chain = SenderChain::new(&mut common::rng(40), ctx(&bob, ROSTER), None);
    let mut record = SenderKeyRecord::new(bob.public());
    let wire = chain.distribution().encode();
    record
        .process_distribution(&SenderKeyDistribution::decode(&wire).unwrap())
        .unwrap();
    (chain, record)
}

fn hmac(key: &[u8; 32], c: u8) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(&[c]);
    m.finalize().into_bytes().into()
}

/// The chain key `n` steps after `ck`.
fn advance(mut ck: [u8; 32], n: u32) -> [u8; 32] {
    for _ in 0..n {
        ck = hmac(&ck, CHAIN_KEY_CONSTANT);
    }
    ck
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
fn a_genuine_jump_past_the_limit_is_refused_and_one_within_it_is_not() {
    let (chain, mut record) = pair();
    let d = chain.distribution();
    let ck0 = chain.hazmat_chain_key();
    let seed = chain.hazmat_signing_seed();
    let bob = id(2);
    // The real chain, genuine except for its distance: MAX_JUMP + 1 past the next expected (0).
    let at = |n: u32| {
        SenderChain::from_parts(
            ctx(&bob, ROSTER),
            d.chain_id,
            n,
            advance(ck0, n),
            &seed,
            (0, 0),
        )
    };
    let far = at(MAX_JUMP + 1).encrypt(b"too far").unwrap();
    let before = record.snapshot();
    assert_eq!(
        record.decrypt(&far).unwrap_err(),
        GroupDecryptError::TooFarAhead
    );
    assert_eq!(record.snapshot(), before);
    // Exactly MAX_JUMP ahead is accepted.
    let edge = at(MAX_JUMP).encrypt(b"at the limit").unwrap();
    assert_eq!(record.decrypt(&edge).unwrap(), b"at the limit");
}

#[test]
fn forgery_with_the_real_chain_key_and_another_signing_key_is_refused() {
    let (mut chain, mut record) = pair();
    let first = chain.encrypt(b"genuine").unwrap();
    assert_eq!(record.decrypt(&first).unwrap(), b"genuine");
    // A member who holds the chain key (every member does) but not the signing key: the message
    // is encrypted exactly as the real chain would at its current iteration, so the AEAD alone
    // would accept it; only the signature refuses it.
    let d = chain.distribution();
    let mut impostor = SenderChain::from_parts(
        ctx(&id(2), ROSTER),
        d.chain_id,
        d.iteration,
        chain.hazmat_chain_key(),
        &[7; 32],
        (0, 0),
    );
    let forged = impostor.encrypt(b"forged").unwrap();
    let genuine_next = chain.encrypt(b"forged").unwrap();
    let ct = GROUP_HEADER_LEN..forged.len() - 64;
    assert_eq!(
        forged[ct.clone()],
        genuine_next[ct],
        "same key, same nonce: the AEAD cannot tell them apart"
    );
    let before = record.snapshot();
    assert_eq!(
        record.decrypt(&forged).unwrap_err(),
        GroupDecryptError::AuthenticationFailed
    );
    assert_eq!(record.snapshot(), before);
    assert_eq!(record.decrypt(&genuine_next).unwrap(), b"forged");
}

#[test]
fn a_ciphertext_reads_only_as_its_real_senders() {
    // Bob's chain key and even his signing key installed as Mallory's: the AD and the signed
    // bytes carry the sender's identity, so Bob's message never reads as Mallory's.
    let (mut chain, _) = pair();
    let mallory = id(3);
    let d = chain.distribution();
    let as_mallory = SenderChain::from_parts(
        ctx(&mallory, ROSTER),
        d.chain_id,
        0,
        chain.hazmat_chain_key(),
        &chain.hazmat_signing_seed(),
        (0, 0),
    );
    let mut record = SenderKeyRecord::new(mallory.public());
    record
        .process_distribution(&as_mallory.distribution())
        .unwrap();
    let m = chain.encrypt(b"bob's words").unwrap();
    assert_eq!(
        record.decrypt(&m).unwrap_err(),
        GroupDecryptError::AuthenticationFailed
    );
}

#[test]
fn a_distribution_binds_its_sender() {
    let (chain, _) = pair();
    let wire = chain.distribution().encode();
    assert_eq!(wire[0], DISTRIBUTION_VERSION);
    // Mallory rewrites the sender to herself, keeping Bob's chain and signing key: the binding
    // signature (by Bob's chain signing key) no longer verifies.
    let mut rewritten = wire.to_vec();
    rewritten[17..49].copy_from_slice(id(3).public().as_bytes());
    assert!(SenderKeyDistribution::decode(&rewritten).is_err());
    // Kept as Bob's, it installs only in Bob's record.
    let d = SenderKeyDistribution::decode(&wire).unwrap();
    assert!(
        SenderKeyRecord::new(id(3).public())
            .process_distribution(&d)
            .is_err()
    );
    // Every truncation and every bit flip is refused.
    for n in 0..wire.len() {
        assert!(SenderKeyDistribution::decode(&wire[..n]).is_err());
    }
    for bit in 0..wire.len() * 8 {
        let mut t = wire.to_vec();
        t[bit / 8] ^= 1 << (bit % 8);
        // The chain key and iteration are not covered by the binding (the pairwise session
        // authenticates them); everything else is.
        let ck_or_iteration = (93..97).contains(&(bit / 8)) || (97..129).contains(&(bit / 8));
        let prev = (161..169).contains(&(bit / 8));
        if !ck_or_iteration && !prev {
            assert!(SenderKeyDistribution::decode(&t).is_err(), "bit {bit}");
        }
    }
}

/// `IK + T` for the point `T = (0, -1)` of order 2.
fn torsion_twin(key: &[u8; 32]) -> [u8; 32] {
    let mut t = [0xff; 32];
    t[0] = 0xec;
    t[31] = 0x7f;
    let t = CompressedEdwardsY(t).decompress().unwrap();
    let p = CompressedEdwardsY(*key).decompress().unwrap();
    (p + t).compress().to_bytes()
}

#[test]
fn torsion_twins_of_identity_and_signing_keys_are_refused() {
    let bob = id(2);
    let twin = torsion_twin(bob.public().as_bytes());
    assert_ne!(twin, bob.public().to_bytes());
    assert!(IdentityKey::from_bytes(&twin).is_err());
    let (chain, _) = pair();
    let wire = chain.distribution().encode();
    let mut t = wire.to_vec();
    t[17..49].copy_from_slice(&twin);
    assert!(SenderKeyDistribution::decode(&t).is_err());
    let mut t = wire.to_vec();
    let signing: [u8; 32] = t[129..161].try_into().unwrap();
    t[129..161].copy_from_slice(&torsion_twin(&signing));
    assert!(SenderKeyDistribution::decode(&t).is_err());
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
fn rotation_caps_the_previous_chain_so_a_stolen_copy_cannot_forge_past_it() {
    let bob = id(2);
    let mut rng = common::rng(44);
    let mut c1 = SenderChain::new(&mut rng, ctx(&bob, ROSTER), None);
    let mut record = SenderKeyRecord::new(bob.public());
    record.process_distribution(&c1.distribution()).unwrap();
    let sent: Vec<Vec<u8>> = (0..5)
        .map(|i| c1.encrypt(format!("old {i}").as_bytes()).unwrap())
        .collect();
    record.decrypt(&sent[0]).unwrap();
    record.decrypt(&sent[1]).unwrap();
    let mut thief = c1.clone();
    // Bob rotates: his new chain says the old one ended after 5 messages.
    let mut c2 = SenderChain::new(&mut rng, ctx(&bob, [0x22; 32]), Some(&c1));
    let d2 = c2.distribution();
    assert_eq!((d2.prev_chain_id, d2.prev_end), (c1.chain_id(), 5));
    record.process_distribution(&d2).unwrap();
    // Messages in flight on the old chain still read, once each.
    for (i, m) in sent.iter().enumerate().skip(2) {
        assert_eq!(record.decrypt(m).unwrap(), format!("old {i}").as_bytes());
    }
    // The thief's copy of the old chain: iteration 5 and on are refused as retired.
    let forged = thief.encrypt(b"forged after rotation").unwrap();
    let before = record.snapshot();
    assert_eq!(
        record.decrypt(&forged).unwrap_err(),
        GroupDecryptError::Retired
    );
    assert_eq!(record.snapshot(), before);
    assert_eq!(
        record.decrypt(&c2.encrypt(b"new").unwrap()).unwrap(),
        b"new"
    );
    // A third chain drops the first altogether, and the old distributions cannot come back.
    let mut c3 = SenderChain::new(&mut rng, ctx(&bob, [0x33; 32]), Some(&c2));
    record.process_distribution(&c3.distribution()).unwrap();
    assert_eq!(
        record.decrypt(&sent[4]).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
    assert!(record.process_distribution(&c1.distribution()).is_err());
    assert!(record.process_distribution(&d2).is_err());
    assert_eq!(record.decrypt(&c3.encrypt(b"3").unwrap()).unwrap(), b"3");
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

#[test]
fn a_message_under_another_roster_than_its_chain_is_refused() {
    let (chain, mut record) = pair();
    let d = chain.distribution();
    let mut other = SenderChain::from_parts(
        ChainContext {
            roster_hash: [0x99; 32],
            ..ctx(&id(2), ROSTER)
        },
        d.chain_id,
        0,
        chain.hazmat_chain_key(),
        &chain.hazmat_signing_seed(),
        (0, 0),
    );
    assert_eq!(
        record
            .decrypt(&other.encrypt(b"other roster").unwrap())
            .unwrap_err(),
        GroupDecryptError::WrongRoster
    );
}

/// `sender-key-vectors/2` (see `shared/VECTORS.md` and docs/PROTOCOL.md §10).
fn generate() -> Value {
    use sha2::{Digest, Sha256};
    let seed =
        |l: &str| -> [u8; 32] { Sha256::digest(format!("sotto sender-key vectors: {l}")).into() };
    let alice = IdentityKeyPair::from_seed(&seed("alice identity"));
    let bob = IdentityKeyPair::from_seed(&seed("bob identity"));
    let mallory = IdentityKeyPair::from_seed(&seed("mallory identity"));
    // A real roster: Alice creates the group and adds Bob and Mallory.
    let mut roster = Roster::create_with_nonce(&alice, seed("group nonce"));
    for m in [&bob, &mallory] {
        roster
            .apply(&roster.propose_add(&alice, m.public()).unwrap())
            .unwrap();
    }
    let previous_hash = roster.hash_at(1).unwrap();
    let group_id = roster.group_id();
    let chain_ctx = |who: &IdentityKeyPair| ChainContext {
        group_id,
        sender: who.public(),
        epoch: roster.epoch(),
        roster_hash: roster.hash(),
    };

    let mut chains = Vec::new();
    let mut rejects = Vec::new();
    let mut distributions = Vec::new();
    for (index, (who, label)) in [(&bob, "bob"), (&mallory, "mallory")]
        .into_iter()
        .enumerate()
    {
        let chain_key = seed(&format!("{label} chain key"));
        let signing_seed = seed(&format!("{label} signing seed"));
        let chain_id = 0x5077_0001 + index as u32;
        let make = |n: u32| {
            SenderChain::from_parts(
                chain_ctx(who),
                chain_id,
                n,
                advance(chain_key, n),
                &signing_seed,
                (0, 0),
            )
        };
        let mut chain = make(0);
        let distribution = chain.distribution();
        let mut record = SenderKeyRecord::new(who.public());
        record
            .process_distribution(&SenderKeyDistribution::decode(&distribution.encode()).unwrap())
            .unwrap();
        let mut messages = Vec::new();
        let mut wires = Vec::new();
        for (target, text) in [
            (0u32, "group message 0"),
            (1, "group message 1"),
            (2, "group message 2"),
            (1000, "far ahead: 1000"),
        ] {
            if chain.iteration() < target {
                chain = make(target);
            }
            let wire = chain
                .encrypt(format!("{label}: {text}").as_bytes())
                .unwrap();
            let ck = advance(chain_key, target);
            assert_eq!(
                record.decrypt(&wire).unwrap(),
                format!("{label}: {text}").as_bytes()
            );
            let ct = &wire[GROUP_HEADER_LEN..wire.len() - 64];
            let ad = [&wire[..GROUP_HEADER_LEN], who.public().as_bytes()].concat();
            messages.push(json!({
                "iteration": target,
                "message_key": hex::encode(hmac(&ck, MESSAGE_KEY_CONSTANT)),
                "roster_hash": hex::encode(roster.hash()),
                "plaintext": hex::encode(pad(format!("{label}: {text}").as_bytes()).unwrap()),
                "unpadded_utf8": format!("{label}: {text}"),
                "ad": hex::encode(&ad),
                "ciphertext": hex::encode(ct),
                "signed_part": hex::encode([&ad[..], ct].concat()),
                "signature": hex::encode(&wire[wire.len() - 64..]),
                "message": hex::encode(&wire),
            }));
            wires.push(wire);
        }
        chains.push(json!({
            "sender_identity": hex::encode(who.public().as_bytes()),
            "initial_chain_key": hex::encode(chain_key),
            "initial_iteration": 0,
            "signing_seed": hex::encode(signing_seed),
            "signing_pub": hex::encode(distribution.signing_key),
            "chain_id": chain_id,
            "messages": messages,
        }));
        distributions.push(json!({
            "message": hex::encode(distribution.encode().as_slice()),
            "group_id": hex::encode(group_id),
            "sender_identity": hex::encode(who.public().as_bytes()),
            "epoch": roster.epoch(),
            "roster_hash": hex::encode(roster.hash()),
            "chain_id": chain_id,
            "iteration": 0,
            "chain_key": hex::encode(chain_key),
            "signing_pub": hex::encode(distribution.signing_key),
            "prev_chain_id": 0,
            "prev_end": 0,
        }));
        if index != 0 {
            continue;
        }
        // Rejects for Bob's chain, presented after all its messages (highest received: 1000).
        let mut tampered = wires[1].clone();
        tampered[GROUP_HEADER_LEN + 2] ^= 1;
        let mut impostor = SenderChain::from_parts(
            chain_ctx(who),
            chain_id,
            1001,
            advance(chain_key, 1001),
            &seed("impostor"),
            (0, 0),
        );
        let wrong_signer = impostor.encrypt(b"bob: not really").unwrap();
        let jump = make(1001 + MAX_JUMP + 1).encrypt(b"bob: too far").unwrap();
        let wrong_sender = make(1002).encrypt(b"bob: shown as mallory's").unwrap();
        let mut old = SenderChain::from_parts(
            ChainContext {
                epoch: 1,
                roster_hash: previous_hash,
                ..chain_ctx(who)
            },
            chain_id,
            1003,
            advance(chain_key, 1003),
            &signing_seed,
            (0, 0),
        );
        let old_roster = old.encrypt(b"bob: under the previous roster").unwrap();
        let entries = [
            json!({"message": hex::encode(&tampered), "chain": 0, "why": "tampered"}),
            json!({"message": hex::encode(&wrong_signer), "chain": 0, "why": "wrong-signer"}),
            json!({"message": hex::encode(&wires[2]), "chain": 0, "why": "replay"}),
            json!({"message": hex::encode(&jump), "chain": 0, "why": "jump"}),
            json!({"message": hex::encode(&wrong_sender), "chain": 0, "why": "wrong-sender",
                   "claimed_sender": hex::encode(mallory.public().as_bytes())}),
            json!({"message": hex::encode(&old_roster), "chain": 0, "why": "old-roster",
                   "roster_hash": hex::encode(previous_hash),
                   "current_roster_hash": hex::encode(roster.hash())}),
        ];
        // Each is refused by the real receiver, for its own reason, leaving it unchanged.
        let expected = [
            GroupDecryptError::AuthenticationFailed,
            GroupDecryptError::AuthenticationFailed,
            GroupDecryptError::Duplicate,
            GroupDecryptError::TooFarAhead,
            GroupDecryptError::AuthenticationFailed,
            GroupDecryptError::WrongRoster,
        ];
        let mut as_mallory = SenderKeyRecord::new(mallory.public());
        as_mallory
            .process_distribution(
                &SenderChain::from_parts(
                    chain_ctx(&mallory),
                    chain_id,
                    0,
                    chain_key,
                    &signing_seed,
                    (0, 0),
                )
                .distribution(),
            )
            .unwrap();
        for (r, want) in entries.iter().zip(expected) {
            let bytes = hex::decode(r["message"].as_str().unwrap()).unwrap();
            let target = if r["why"] == "wrong-sender" {
                &mut as_mallory
            } else {
                &mut record
            };
            let before = target.snapshot();
            assert_eq!(target.decrypt(&bytes).unwrap_err(), want, "{}", r["why"]);
            assert_eq!(target.snapshot(), before);
        }
        // The genuine ones decrypt for the right receiver: only their stated flaw refuses them.
        let mut fresh = SenderKeyRecord::new(who.public());
        fresh
            .process_distribution(&make(1001).distribution())
            .unwrap();
        assert!(fresh.clone().decrypt(&wrong_sender).is_ok());
        rejects.extend(entries);
    }

    // Distribution rejects: Bob's forwarded by Mallory with the sender rewritten (binding fails),
    // and torsion twins of the sender identity and of the signing key.
    let bob_dist = hex::decode(distributions[0]["message"].as_str().unwrap()).unwrap();
    let mut rewritten = bob_dist.clone();
    rewritten[17..49].copy_from_slice(mallory.public().as_bytes());
    let mut twin_sender = bob_dist.clone();
    twin_sender[17..49].copy_from_slice(&torsion_twin(bob.public().as_bytes()));
    let mut twin_signing = bob_dist.clone();
    let signing: [u8; 32] = bob_dist[129..161].try_into().unwrap();
    twin_signing[129..161].copy_from_slice(&torsion_twin(&signing));
    let distribution_rejects = vec![
        json!({"message": hex::encode(&rewritten), "why": "bad-binding",
               "note": "Bob's distribution with the sender rewritten to Mallory"}),
        json!({"message": hex::encode(&twin_sender), "why": "torsion-sender",
               "note": "sender identity = Bob's key + the order-2 point"}),
        json!({"message": hex::encode(&twin_signing), "why": "torsion-signing-key",
               "note": "signing key + the order-2 point"}),
    ];
    for r in &distribution_rejects {
        let bytes = hex::decode(r["message"].as_str().unwrap()).unwrap();
        assert!(
            SenderKeyDistribution::decode(&bytes).is_err(),
            "{}",
            r["why"]
        );
    }

    json!({
        "format": "sender-key-vectors/2",
        "description": "sotto Sender Keys bound to the sender and the roster: Bob's and Mallory's chains, iterations 0, 1, 2 and 1000; six rejected messages (tampered, wrong signer, replay, jump, wrong sender, old roster) and three rejected distributions",
        "generator": "sotto-protocol tests/sender_keys.rs (the real code path, fixed seeds)",
        "max_jump": MAX_JUMP,
        "kdf_ck": {"type": "hmac", "hash": "sha256", "mk_const": "01", "ck_const": "02"},
        "aead": {"name": "xchacha20poly1305", "key_derivation": {"type": "hkdf", "hash": "sha256",
            "info_utf8": std::str::from_utf8(SENDER_KEY_INFO).unwrap(), "output": ["key", "nonce"]}},
        "signature": "ed25519",
        "binding_tag_utf8": std::str::from_utf8(BINDING_TAG).unwrap(),
        "message_type": GROUP_MESSAGE_VERSION,
        "roster": {
            "log": hex::encode(roster.encode_log()),
            "group_id": hex::encode(group_id),
            "owner": hex::encode(alice.public().as_bytes()),
            "hash": hex::encode(roster.hash()),
            "epoch": roster.epoch(),
        },
        "chains": chains,
        "rejects": rejects,
        "distribution": distributions,
        "distribution_rejects": distribution_rejects,
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
