//! Known-answer test vectors in the `ratchet-vectors/1` format (`shared/VECTORS.md`).
//!
//! The vectors are produced here by the real code path (`Session`, `PrekeyStore`, the hazmat
//! inspection API) from fixed seeds, and compared byte for byte with the committed file
//! `tests/vectors/ratchet.json`. Set `SOTTO_REGENERATE_VECTORS=1` to rewrite the file after a
//! deliberate protocol change; without it, any difference fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use sotto_protocol::hazmat::{self, RatchetView};
use sotto_protocol::kdf::{MESSAGE_KEYS_INFO, PQXDH_INFO, ROOT_INFO};
use sotto_protocol::padding::pad;
use sotto_protocol::ratchet::{HEADER_LEN, MAX_SKIP, MAX_STORED_SKIPPED};
use sotto_protocol::{Envelope, IdentityKeyPair, PrekeyBundle, PrekeyStore, Session};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/ratchet.json");

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Alice,
    Bob,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Alice => "alice",
            Who::Bob => "bob",
        }
    }
}

struct Conversation {
    alice: Session,
    bob: Option<Session>,
    alice_rng: ChaCha20Rng,
    bob_rng: ChaCha20Rng,
    bob_identity: IdentityKeyPair,
    bob_prekeys: PrekeyStore,
    /// Wire bytes of every message by id.
    wire: Vec<Vec<u8>>,
    messages: Vec<Value>,
    schedule: Vec<Value>,
    alice_privs: Vec<[u8; 32]>,
    bob_privs: Vec<[u8; 32]>,
}

fn state_json(v: &RatchetView) -> Value {
    json!({
        "root_key": hex::encode(v.root_key),
        "send_chain_key": v.send_chain_key.map(hex::encode),
        "recv_chain_key": v.recv_chain_key.map(hex::encode),
        "ns": v.ns,
        "nr": v.nr,
        "pn": v.pn,
        "dh_pub": hex::encode(v.dh_pub),
        "remote_dh_pub": v.remote_dh_pub.map(hex::encode),
        "skipped_count": v.skipped_count,
    })
}

fn ratchet_part(wire: &[u8]) -> Vec<u8> {
    match Envelope::decode(wire).unwrap() {
        Envelope::Prekey(p) => p.message.as_bytes().to_vec(),
        Envelope::Ratchet(m) => m.as_bytes().to_vec(),
    }
}

fn header_fields(ratchet: &[u8]) -> Value {
    json!({
        "dh": hex::encode(&ratchet[1..33]),
        "pn": u32::from_be_bytes(ratchet[33..37].try_into().unwrap()),
        "n": u32::from_be_bytes(ratchet[37..41].try_into().unwrap()),
    })
}

impl Conversation {
    fn view(&self, who: Who) -> RatchetView {
        match who {
            Who::Alice => hazmat::ratchet_state(&self.alice),
            Who::Bob => hazmat::ratchet_state(self.bob.as_ref().unwrap()),
        }
    }

    fn send(&mut self, who: Who, text: &str, note: &str) -> usize {
        let wire = match who {
            Who::Alice => self.alice.encrypt(text.as_bytes()).unwrap(),
            Who::Bob => self.bob.as_mut().unwrap().encrypt(text.as_bytes()).unwrap(),
        };
        let id = self.wire.len();
        self.push_message(who, &wire, Some(text), note);
        self.schedule
            .push(json!({"op": "send", "msg": id, "state_after": state_json(&self.view(who))}));
        id
    }

    fn push_message(&mut self, who: Who, wire: &[u8], text: Option<&str>, note: &str) {
        let id = self.wire.len();
        let ratchet = ratchet_part(wire);
        let mut m = json!({
            "id": id,
            "from": who.name(),
            "header": hex::encode(&ratchet[..HEADER_LEN]),
            "header_fields": header_fields(&ratchet),
            "ciphertext": hex::encode(&ratchet[HEADER_LEN..]),
            "note": note,
        });
        if let Some(text) = text {
            m["plaintext"] = json!(hex::encode(pad(text.as_bytes()).unwrap()));
            m["unpadded_utf8"] = json!(text);
        } else {
            // Forged messages have no meaningful plaintext; an empty one keeps the schema.
            m["plaintext"] = json!("");
        }
        self.messages.push(m);
        self.wire.push(wire.to_vec());
    }

    /// The receiver of message `id` decrypts it; `expect_ok` says whether that must succeed.
    fn recv(&mut self, id: usize, expect_ok: bool) {
        let from = if self.messages[id]["from"] == "alice" {
            Who::Alice
        } else {
            Who::Bob
        };
        let to = if from == Who::Alice {
            Who::Bob
        } else {
            Who::Alice
        };
        let wire = self.wire[id].clone();
        let before = (to == Who::Alice || self.bob.is_some()).then(|| self.view(to));
        let result = match (to, Envelope::decode(&wire)) {
            (Who::Bob, Ok(Envelope::Prekey(p))) if self.bob.is_none() => Session::respond(
                &mut self.bob_rng,
                &self.bob_identity,
                &mut self.bob_prekeys,
                &p,
            )
            .map(|(session, pt)| {
                self.bob = Some(session);
                pt
            })
            .map_err(|e| e.to_string()),
            (Who::Bob, Ok(env)) => self
                .bob
                .as_mut()
                .unwrap()
                .decrypt(&mut self.bob_rng, &env)
                .map_err(|e| e.to_string()),
            (Who::Alice, Ok(env)) => self
                .alice
                .decrypt(&mut self.alice_rng, &env)
                .map_err(|e| e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        let after = self.view(to);
        match (&result, expect_ok) {
            (Ok(pt), true) => {
                assert_eq!(
                    self.messages[id]["unpadded_utf8"]
                        .as_str()
                        .unwrap()
                        .as_bytes(),
                    pt.as_slice()
                );
            }
            (Err(_), false) => assert_eq!(Some(after.clone()), before, "rejection changed state"),
            _ => panic!("message {id}: unexpected result {result:?}"),
        }
        let privs = if to == Who::Alice {
            &mut self.alice_privs
        } else {
            &mut self.bob_privs
        };
        if privs.last() != Some(&after.dh_priv)
            && (to == Who::Alice || before.is_some() || expect_ok)
        {
            privs.push(after.dh_priv);
        }
        let mut event = json!({"op": "recv", "msg": id, "state_after": state_json(&after)});
        if !expect_ok {
            event["expect"] = json!("fail");
            event["note"] = json!(result.unwrap_err());
        }
        self.schedule.push(event);
    }

    /// A copy of message `id` with one bit flipped, listed as a new (forged) message.
    fn forge(&mut self, id: usize, byte_in_ratchet: usize, note: &str) -> usize {
        let from = if self.messages[id]["from"] == "alice" {
            Who::Alice
        } else {
            Who::Bob
        };
        let mut wire = self.wire[id].clone();
        let offset = wire.len() - ratchet_part(&wire).len();
        wire[offset + byte_in_ratchet] ^= 0x01;
        let new_id = self.wire.len();
        self.push_message(from, &wire, None, note);
        new_id
    }
}

fn seed(label: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("sotto test vectors: {label}")).into()
}

fn generate() -> Value {
    let alice_identity = IdentityKeyPair::from_seed(&seed("alice identity"));
    let bob_identity = IdentityKeyPair::from_seed(&seed("bob identity"));
    let mut bob_rng = ChaCha20Rng::from_seed(seed("bob rng"));
    let mut alice_rng = ChaCha20Rng::from_seed(seed("alice rng"));

    let mut bob_prekeys = PrekeyStore::new();
    let signed_prekey = bob_prekeys.rotate_signed_prekey(&mut bob_rng, &bob_identity);
    let one_time_prekey = bob_prekeys.generate_one_time_prekeys(&mut bob_rng, 1)[0];
    let kem_prekey = bob_prekeys
        .generate_kem_prekeys(&mut bob_rng, &bob_identity, 1)
        .remove(0);
    let bundle = PrekeyBundle {
        identity: bob_identity.public(),
        signed_prekey: signed_prekey.clone(),
        one_time_prekey: Some(one_time_prekey),
        kem_prekey: kem_prekey.clone(),
    };
    let secrets = hazmat::prekey_secrets(
        &bob_prekeys,
        signed_prekey.id,
        Some(one_time_prekey.id),
        kem_prekey.id,
    )
    .unwrap();

    let (alice, transcript) =
        hazmat::initiate_with_transcript(&mut alice_rng, &alice_identity, &bundle).unwrap();
    let alice_first_priv = hazmat::ratchet_state(&alice).dh_priv;

    let mut c = Conversation {
        alice,
        bob: None,
        alice_rng,
        bob_rng,
        bob_identity: bob_identity.clone(),
        bob_prekeys,
        wire: Vec::new(),
        messages: Vec::new(),
        schedule: Vec::new(),
        alice_privs: vec![alice_first_priv],
        bob_privs: Vec::new(),
    };

    use Who::{Alice, Bob};
    let a0 = c.send(
        Alice,
        "Hi Bob, this is the first message (a PQXDH initial message).",
        "carries the handshake",
    );
    c.recv(a0, true);
    let a1 = c.send(Alice, "a1", "");
    let a2 = c.send(Alice, "a2: delivered late, across a DH ratchet step", "");
    let a3 = c.send(Alice, "a3", "");
    c.recv(a3, true); // out of order inside one chain: a1 and a2 skipped
    c.recv(a1, true);
    let b0 = c.send(
        Bob,
        "b0: delivered late, across a DH ratchet step",
        "Bob's first chain",
    );
    let b1 = c.send(Bob, "b1", "");
    c.recv(b1, true);
    let a4 = c.send(Alice, "a4, on Alice's second chain", "pn = 4");
    c.recv(a4, true);
    c.recv(a2, true); // a skipped key from Bob's previous receiving chain
    c.recv(b0, true); // a skipped key from Alice's previous receiving chain
    let b2 = c.send(Bob, "b2", "");
    let b3 = c.send(Bob, "b3", "");
    c.recv(b3, true);
    c.recv(b2, true);
    // A replay is the very same bytes, listed again under a new id.
    let replay = c.wire.len();
    let mut copy = c.messages[a1].clone();
    copy["id"] = json!(replay);
    copy["note"] = json!("replay of message 2 (a1)");
    c.messages.push(copy);
    c.wire.push(c.wire[a1].clone());
    c.recv(replay, false);
    let a5 = c.send(Alice, "a5", "");
    let tampered_ct = c.forge(a5, HEADER_LEN + 3, "a5 with one ciphertext bit flipped");
    c.recv(tampered_ct, false);
    let tampered_header = c.forge(a5, 36, "a5 with one bit of PN flipped in the header");
    c.recv(tampered_header, false);
    c.recv(a5, true);
    // Beyond MAX_SKIP: a header claiming N = Nr + MAX_SKIP + 1 on the current chain.
    let far = {
        let mut wire = c.wire[a5].clone();
        let offset = wire.len() - ratchet_part(&wire).len();
        let n =
            u32::from_be_bytes(wire[offset + 37..offset + 41].try_into().unwrap()) + MAX_SKIP + 2;
        wire[offset + 37..offset + 41].copy_from_slice(&n.to_be_bytes());
        let id = c.wire.len();
        c.push_message(Alice, &wire, None, "header N beyond MAX_SKIP");
        id
    };
    c.recv(far, false);
    let b4 = c.send(Bob, "b4", "");
    c.recv(b4, true);
    let a6 = c.send(Alice, "a6", "");
    c.recv(a6, true);
    let b5 = c.send(Bob, "b5, the last message", "");
    c.recv(b5, true);

    let bob_view_initial = secrets.signed_prekey_priv;
    json!({
        "format": "ratchet-vectors/1",
        "description": "sotto: PQXDH (X25519 + ML-KEM-768, Ed25519 identities) into the Double Ratchet; \
            16 messages, 8 direction changes, out-of-order delivery within a chain and across DH ratchet steps, \
            a replay, a tampered ciphertext, a tampered header and a header beyond MAX_SKIP",
        "generator": "sotto-protocol tests/vectors.rs (the real code path, fixed seeds)",
        "curve": "x25519",
        "kdf_rk": {"type": "hkdf", "hash": "sha256", "info_utf8": std::str::from_utf8(ROOT_INFO).unwrap(), "output": ["root_key", "chain_key"]},
        "kdf_ck": {"type": "hmac", "hash": "sha256", "mk_const": "01", "ck_const": "02"},
        "aead": {
            "name": "xchacha20poly1305",
            "key_derivation": {"type": "hkdf", "hash": "sha256", "info_utf8": std::str::from_utf8(MESSAGE_KEYS_INFO).unwrap(), "output": ["key", "nonce"]}
        },
        "header": {"encoding": "fixed", "prefix": "01", "fields": ["dh", "pn", "n"], "int": "u32be"},
        "aead_ad": ["ad", "header"],
        "limits": {"max_skip": MAX_SKIP, "max_stored_skipped": MAX_STORED_SKIPPED},
        "x3dh": {
            "hash": "sha256",
            "info_utf8": std::str::from_utf8(PQXDH_INFO).unwrap(),
            "identity_key_format": "ed25519",
            "pubkey_encoding": {"curve25519_prefix": "05", "ed25519_prefix": ""},
            "ad_appendix": "",
            "alice": {
                "identity_secret": hex::encode(alice_identity.to_seed().as_ref()),
                "identity_secret_type": "seed",
                "ephemeral_priv": hex::encode(transcript.ephemeral_priv),
            },
            "bob": {
                "identity_secret": hex::encode(bob_identity.to_seed().as_ref()),
                "identity_secret_type": "seed",
                "signed_prekey_priv": hex::encode(secrets.signed_prekey_priv),
                "signed_prekey_sig": hex::encode(signed_prekey.signature),
                "one_time_prekey_priv": secrets.one_time_prekey_priv.map(hex::encode),
            },
            "kem": "ml-kem-768",
            "kem_public_key": hex::encode(kem_prekey.key.as_ref()),
            "kem_ciphertext": hex::encode(&transcript.kem_ciphertext),
            "kem_secret_key_seed": hex::encode(secrets.kem_seed),
            "kem_shared_secret": hex::encode(transcript.kem_shared_secret),
            "link_to_ratchet": true,
            "expected": {
                "shared_secret": hex::encode(transcript.shared_secret),
                "associated_data": hex::encode(&transcript.associated_data),
                "alice_identity_pub": hex::encode(alice_identity.public().as_bytes()),
                "bob_identity_pub": hex::encode(bob_identity.public().as_bytes()),
                "signed_prekey_pub": hex::encode(signed_prekey.key.as_bytes()),
                "ephemeral_pub": hex::encode(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(transcript.ephemeral_priv)).as_bytes()),
                "one_time_prekey_pub": hex::encode(one_time_prekey.key.as_bytes()),
            }
        },
        "initial_root_key": hex::encode(transcript.shared_secret),
        "ad": hex::encode(&transcript.associated_data),
        "alice": {"ratchet_privs": c.alice_privs.iter().map(hex::encode).collect::<Vec<_>>()},
        "bob": {
            "initial_ratchet_priv": hex::encode(bob_view_initial),
            "ratchet_privs": c.bob_privs.iter().map(hex::encode).collect::<Vec<_>>(),
        },
        "messages": c.messages,
        "schedule": c.schedule,
    })
}

#[test]
fn vectors_match_the_committed_file() {
    let generated = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    // Generation is deterministic: twice gives the same bytes.
    assert_eq!(
        generated,
        serde_json::to_string_pretty(&generate()).unwrap() + "\n"
    );
    if std::env::var_os("SOTTO_REGENERATE_VECTORS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(VECTORS).parent().unwrap()).unwrap();
        std::fs::write(VECTORS, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(VECTORS)
        .expect("tests/vectors/ratchet.json missing: run with SOTTO_REGENERATE_VECTORS=1");
    assert!(
        committed == generated,
        "the protocol's output changed: the vectors no longer match (regenerate deliberately with SOTTO_REGENERATE_VECTORS=1)"
    );
}

#[test]
fn vectors_cover_what_vectors_md_asks_for() {
    let v = generate();
    let messages = v["messages"].as_array().unwrap();
    let schedule = v["schedule"].as_array().unwrap();
    let sends: Vec<&str> = schedule
        .iter()
        .filter(|e| e["op"] == "send")
        .map(|e| {
            messages[e["msg"].as_u64().unwrap() as usize]["from"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(sends.len() >= 10);
    assert!(sends.windows(2).filter(|w| w[0] != w[1]).count() >= 3);
    assert_eq!(schedule.iter().filter(|e| e["expect"] == "fail").count(), 4);
    assert!(v["x3dh"]["kem_shared_secret"].is_string());
    // The handshake links to the ratchet as VECTORS.md requires.
    assert_eq!(
        v["initial_root_key"],
        v["x3dh"]["expected"]["shared_secret"]
    );
    assert_eq!(
        v["bob"]["initial_ratchet_priv"],
        v["x3dh"]["bob"]["signed_prekey_priv"]
    );
    assert_eq!(v["ad"], v["x3dh"]["expected"]["associated_data"]);
}
