//! Checks for the `sotto-protocol` decoders, shared by the fuzz targets and
//! `crates/protocol/tests/corpus.rs`.
//!
//! Every function takes arbitrary bytes and panics only if a property is broken: a decoder
//! panicked, a decoded value does not encode back to the same bytes, or a rejected message
//! changed a session. Errors are the expected outcome for most inputs.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_protocol::{
    DecryptError, Envelope, IdentityKeyPair, KemPrekeyPublic, OneTimePrekeyPublic, PrekeyBundle,
    PrekeyStore, SafetyNumber, Session, SignedPrekeyPublic,
};

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// `Envelope::decode`: decode → encode gives the same bytes.
pub fn envelope(data: &[u8]) {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    assert_eq!(envelope.encode(), data, "envelope round trip");
    match &envelope {
        Envelope::Ratchet(m) => {
            assert_eq!(m.as_bytes(), data);
            assert_eq!(m.header().encode(), data[..41], "header round trip");
        }
        Envelope::Prekey(p) => {
            assert_eq!(p.base_key(), data[33..65], "base key is EK_A");
            assert_eq!(p.message.header().encode(), p.message.as_bytes()[..41]);
        }
    }
    let _ = format!("{envelope:?}");
}

/// The identity that initiates sessions with fuzzed bundles.
fn initiator() -> &'static IdentityKeyPair {
    static INITIATOR: OnceLock<IdentityKeyPair> = OnceLock::new();
    INITIATOR.get_or_init(|| IdentityKeyPair::from_seed(&[0xA1; 32]))
}

/// `PrekeyBundle::decode`: round trip, then what a client does next (verify and initiate; only
/// bundles with valid signatures get as far as ML-KEM encapsulation and the DH checks).
pub fn bundle(data: &[u8]) {
    let Ok(bundle) = PrekeyBundle::decode(data) else {
        return;
    };
    assert_eq!(bundle.encode(), data, "bundle round trip");
    let verified = bundle.verify().is_ok();
    let initiated = Session::initiate(&mut rng(3), initiator(), &bundle);
    if !verified {
        assert!(
            initiated.is_err(),
            "initiate accepted a bundle that does not verify"
        );
    }
    if let Ok(mut session) = initiated {
        let wire = session.encrypt(b"hello").expect("a new session can send");
        assert!(matches!(Envelope::decode(&wire), Ok(Envelope::Prekey(_))));
    }
}

/// The three prekey record decoders, chosen by the first byte (mod 3); the rest is the record.
pub fn prekey_records(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(spk) = SignedPrekeyPublic::decode(rest) {
                assert_eq!(spk.encode(), rest, "signed prekey round trip");
            }
        }
        1 => {
            if let Ok(opk) = OneTimePrekeyPublic::decode(rest) {
                assert_eq!(opk.encode(), rest, "one-time prekey round trip");
            }
        }
        _ => {
            if let Ok(kem) = KemPrekeyPublic::decode(rest) {
                assert_eq!(kem.encode(), rest, "ML-KEM prekey round trip");
            }
        }
    }
}

/// `Session::restore`: snapshot → restore → snapshot gives the same bytes, and the restored
/// session can still encrypt a message that decodes.
pub fn session_restore(data: &[u8]) {
    let Ok(session) = Session::restore(data) else {
        return;
    };
    assert_eq!(&session.snapshot()[..], data, "session snapshot round trip");
    let _ = format!("{session:?}");
    let mut session = session;
    if let Ok(wire) = session.encrypt(b"after restore") {
        let envelope = Envelope::decode(&wire).expect("our own message decodes");
        assert_eq!(
            matches!(envelope, Envelope::Prekey(_)),
            session.is_initial_message_pending()
        );
    }
}

/// `PrekeyStore::restore`: the store's snapshot is a fixed point (ids are kept in maps, so a
/// snapshot with unsorted or repeated ids restores but re-encodes canonically, never longer).
pub fn prekey_store_restore(data: &[u8]) {
    let Ok(store) = PrekeyStore::restore(data) else {
        return;
    };
    let canonical = store.snapshot();
    assert!(canonical.len() <= data.len(), "snapshot grew");
    let again = PrekeyStore::restore(&canonical).expect("a snapshot restores");
    assert_eq!(again.snapshot(), canonical, "store snapshot round trip");
    let _ = format!("{store:?}");
    let _ = (store.signed_prekey(), store.last_resort_kem_prekey());
    let _ = (
        store.one_time_prekey_count(),
        store.one_time_kem_prekey_count(),
    );
}

/// The safety number the QR target compares against.
pub fn safety_number() -> &'static SafetyNumber {
    static NUMBER: OnceLock<SafetyNumber> = OnceLock::new();
    NUMBER.get_or_init(|| {
        let a = IdentityKeyPair::from_seed(&[0x51; 32]).public();
        let b = IdentityKeyPair::from_seed(&[0x52; 32]).public();
        SafetyNumber::new(&a, &b)
    })
}

/// `SafetyNumber::matches_qr`: a match exactly when the bytes are our payload, an error
/// exactly when they are not a version-1 payload of the right length. Also `matches_digits`.
pub fn safety_qr(data: &[u8]) {
    let number = safety_number();
    let payload = number.qr_payload();
    match number.matches_qr(data) {
        Ok(matched) => {
            assert_eq!(data.len(), payload.len());
            assert_eq!(data[0], payload[0]);
            assert_eq!(matched, data == payload, "QR comparison");
        }
        Err(_) => assert!(data.len() != payload.len() || data[0] != payload[0]),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let matched = number.matches_digits(text);
        let cleaned: String = text.chars().filter(|c| !" -\t\n".contains(*c)).collect();
        assert_eq!(matched, cleaned == number.digits(), "digit comparison");
    }
}

/// Two established sessions, and messages that were sent but not yet delivered.
pub struct Conversation {
    /// Alice's session: Bob's first chain is still open (two keys skipped on it), and she has
    /// moved on to his second.
    pub alice: Session,
    /// Bob's session.
    pub bob: Session,
    /// Ratchet public keys seen in the conversation: Bob's current and previous, Alice's current
    /// and previous. Fuzz inputs that do not start with a version byte get one as header DH key.
    pub ratchet_keys: [[u8; 32]; 4],
    /// Valid messages not yet delivered: Bob's two skipped ones, one later on his current chain,
    /// one from Alice to Bob.
    pub undelivered: Vec<Vec<u8>>,
}

/// Builds the [`Conversation`] deterministically (the same bytes on every run and platform).
pub fn conversation() -> &'static Conversation {
    static CONVERSATION: OnceLock<Conversation> = OnceLock::new();
    CONVERSATION.get_or_init(|| {
        let mut ar = rng(1);
        let mut br = rng(2);
        let alice_id = IdentityKeyPair::generate(&mut ar);
        let bob_id = IdentityKeyPair::generate(&mut br);
        let mut store = PrekeyStore::new();
        let bundle = PrekeyBundle {
            identity: bob_id.public(),
            signed_prekey: store.rotate_signed_prekey(&mut br, &bob_id),
            one_time_prekey: store.generate_one_time_prekeys(&mut br, 1).first().copied(),
            kem_prekey: store.generate_kem_prekeys(&mut br, &bob_id, 1).remove(0),
        };
        let open = |s: &mut Session, r: &mut ChaCha20Rng, wire: &[u8]| {
            s.decrypt(r, &Envelope::decode(wire).unwrap()).unwrap()
        };

        let mut alice = Session::initiate(&mut ar, &alice_id, &bundle).unwrap();
        let first = alice.encrypt(b"first").unwrap();
        let alice_old = alice.ratchet_public_key();
        let Ok(Envelope::Prekey(initial)) = Envelope::decode(&first) else {
            panic!("expected an initial message");
        };
        let (mut bob, _) = Session::respond(&mut br, &bob_id, &mut store, &initial).unwrap();

        // Bob's first chain: Alice receives only the last of three.
        let bob_old = bob.ratchet_public_key();
        let r0 = bob.encrypt(b"r0").unwrap();
        let r1 = bob
            .encrypt(b"r1 is a longer message that pads to the next bucket size, 128")
            .unwrap();
        let r2 = bob.encrypt(b"r2").unwrap();
        assert_eq!(open(&mut alice, &mut ar, &r2), b"r2");

        // Alice answers; Bob starts a second chain, Alice receives its first message.
        let a1 = alice.encrypt(b"a1").unwrap();
        assert_eq!(open(&mut bob, &mut br, &a1), b"a1");
        let b0 = bob.encrypt(b"b0").unwrap();
        let b1 = bob.encrypt(b"b1").unwrap();
        let b2 = bob.encrypt(b"b2").unwrap();
        assert_eq!(open(&mut alice, &mut ar, &b0), b"b0");
        let a2 = alice.encrypt(b"a2").unwrap();
        assert_eq!(alice.skipped_key_count(), 2);

        Conversation {
            ratchet_keys: [
                bob.ratchet_public_key(),
                bob_old,
                alice.ratchet_public_key(),
                alice_old,
            ],
            alice,
            bob,
            undelivered: vec![r0, r1, b2, b1, a2],
        }
    })
}

/// `Session::decrypt` of arbitrary bytes at both ends of an established conversation.
///
/// Inputs starting with a version byte (`0x01`, `0x02`) are envelopes as they are. Any other
/// first byte `k` picks ratchet key `k % 4` of the conversation and the message becomes
/// `0x01 ‖ key ‖ data[1..]`, delivered to the party that key was sent to, so the fuzzer explores
/// PN, N and ciphertexts on real chains.
///
/// Each session is a clone of the established one. A rejected message must leave it exactly as
/// it was (same snapshot); an accepted one must not be accepted twice.
pub fn decrypt(data: &[u8]) {
    let Some(&first) = data.first() else {
        return;
    };
    let conversation = conversation();
    let message;
    let both = [&conversation.alice, &conversation.bob];
    let (wire, recipients) = if first == 0x01 || first == 0x02 {
        (data, &both[..])
    } else {
        // Bob's keys (0, 1) go to Alice, Alice's (2, 3) to Bob.
        let key = usize::from(first % 4);
        let mut m = Vec::with_capacity(33 + data.len());
        m.push(0x01);
        m.extend_from_slice(&conversation.ratchet_keys[key]);
        m.extend_from_slice(&data[1..]);
        message = m;
        (&message[..], &both[key / 2..key / 2 + 1])
    };
    let Ok(envelope) = Envelope::decode(wire) else {
        return;
    };
    for &established in recipients {
        let mut session = established.clone();
        let mut r = rng(9);
        match session.decrypt(&mut r, &envelope) {
            Err(_) => assert_eq!(
                session.snapshot(),
                established.snapshot(),
                "a rejected message changed the session"
            ),
            Ok(_) => {
                let after = session.snapshot();
                assert!(
                    matches!(
                        session.decrypt(&mut r, &envelope),
                        Err(DecryptError::Duplicate | DecryptError::AuthenticationFailed)
                    ),
                    "a message was accepted twice"
                );
                assert_eq!(session.snapshot(), after, "a replay changed the session");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Groups: Sender Keys messages and distributions, roster logs and changes, group snapshots.

use sotto_protocol::group::{GroupSession, SenderKeyGroup};
use sotto_protocol::roster::{Roster, RosterChange};
use sotto_protocol::sender_keys::{
    GROUP_HEADER_LEN, GroupHeader, SenderChain, SenderKeyDistribution, SenderKeyRecord,
};

/// Alice owns a group with Bob and Carol; Bob holds Alice's chain (one message received, one
/// skipped); `undelivered` are genuine messages from Alice that Bob has not received yet.
pub struct GroupFixture {
    /// Alice's group (she sent the messages).
    pub alice: SenderKeyGroup,
    /// Bob's group.
    pub bob: SenderKeyGroup,
    /// Alice's identity.
    pub alice_id: sotto_protocol::IdentityKey,
    /// Alice's messages Bob has not received.
    pub undelivered: Vec<Vec<u8>>,
    /// Carol's distribution (not yet given to Bob) and Alice's current one.
    pub distributions: Vec<Vec<u8>>,
    /// The roster log and a change that extends it (Carol leaving).
    pub log: Vec<u8>,
    /// Carol's leave.
    pub leave: RosterChange,
}

/// Builds the [`GroupFixture`] deterministically.
pub fn group_fixture() -> &'static GroupFixture {
    static FIXTURE: OnceLock<GroupFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut r = rng(20);
        let (a, b, c) = (
            IdentityKeyPair::from_seed(&[0x61; 32]),
            IdentityKeyPair::from_seed(&[0x62; 32]),
            IdentityKeyPair::from_seed(&[0x63; 32]),
        );
        let mut roster = Roster::create_with_nonce(&a, [0x64; 32]);
        for m in [&b, &c] {
            roster
                .apply(&roster.propose_add(&a, m.public()).unwrap())
                .unwrap();
        }
        let mut alice = SenderKeyGroup::new(a.public(), roster.clone());
        let mut bob = SenderKeyGroup::new(b.public(), roster.clone());
        let mut carol = SenderKeyGroup::new(c.public(), roster.clone());
        let d = alice.rotate(&mut r, 0).unwrap();
        bob.process_distribution(&a.public(), &d).unwrap();
        let m0 = alice.encrypt(b"m0").unwrap();
        let m1 = alice
            .encrypt(b"m1 is a longer group message, padded to 128 bytes")
            .unwrap();
        let m2 = alice.encrypt(b"m2").unwrap();
        let m3 = alice.encrypt(b"m3").unwrap();
        assert_eq!(bob.decrypt(&a.public(), &m2).unwrap(), b"m2");
        let carol_d = carol.rotate(&mut r, 0).unwrap();
        GroupFixture {
            alice_id: a.public(),
            undelivered: vec![m0, m1, m3],
            distributions: vec![
                carol_d.encode().to_vec(),
                alice.current_distribution().unwrap().encode().to_vec(),
            ],
            log: roster.encode_log(),
            leave: roster.propose_leave(&c).unwrap(),
            alice,
            bob,
        }
    })
}

/// `SenderKeyGroup::decrypt` of arbitrary bytes as from Alice, at Bob's.
///
/// Inputs starting with `0x07` are messages as they are. Any other input is `iteration u32 ‖
/// rest`: the message becomes the header of Alice's real chain at that iteration followed by
/// `rest`, so the fuzzer reaches the signature, skipping and `MAX_JUMP` on a real chain. A
/// rejected message must leave Bob's state exactly as it was; an accepted one is never accepted
/// twice.
pub fn group_message(data: &[u8]) {
    let f = group_fixture();
    let built;
    let wire = if data.first() == Some(&0x07) {
        data
    } else {
        let Some((iteration, rest)) = data.split_first_chunk::<4>() else {
            return;
        };
        let real = GroupHeader::decode(&f.undelivered[0]).unwrap();
        let mut m = f.undelivered[0][..GROUP_HEADER_LEN].to_vec();
        m[61..65].copy_from_slice(iteration);
        let _ = real;
        m.extend_from_slice(rest);
        built = m;
        &built[..]
    };
    let mut bob = f.bob.clone();
    match bob.decrypt(&f.alice_id, wire) {
        Err(_) => assert_eq!(
            bob.snapshot(),
            f.bob.snapshot(),
            "a rejected group message changed the state"
        ),
        Ok(_) => {
            let after = bob.snapshot();
            assert!(bob.decrypt(&f.alice_id, wire).is_err(), "accepted twice");
            assert_eq!(bob.snapshot(), after, "a replay changed the state");
        }
    }
}

/// `SenderKeyDistribution::decode`: round trip; then Bob processes it as from the member it
/// names. Refused: Bob's state unchanged.
pub fn distribution(data: &[u8]) {
    let Ok(d) = SenderKeyDistribution::decode(data) else {
        return;
    };
    assert_eq!(d.encode().as_slice(), data, "distribution round trip");
    let _ = format!("{d:?}");
    let f = group_fixture();
    let mut bob = f.bob.clone();
    if bob.process_distribution(&d.sender, &d).is_err() {
        assert_eq!(
            bob.snapshot(),
            f.bob.snapshot(),
            "a refused key changed the state"
        );
    }
    let mut record = SenderKeyRecord::new(d.sender);
    let _ = record.process_distribution(&d);
    let restored = SenderKeyRecord::restore(&record.snapshot()).expect("a record restores");
    assert_eq!(restored.snapshot(), record.snapshot());
}

/// Roster decoders, chosen by the first byte: `0` a log (`Roster::decode_log`), `1` one change
/// (`RosterChange::decode`, then Bob receives it; refused: unchanged), `2` our own storage
/// (`Roster::restore_log`). Round trips for what decodes.
pub fn roster(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(r) = Roster::decode_log(rest) {
                assert_eq!(r.encode_log(), rest, "log round trip");
                assert_eq!(Roster::restore_log(rest).unwrap(), r);
            }
        }
        1 => {
            let Ok(c) = RosterChange::decode(rest) else {
                return;
            };
            assert_eq!(c.encode(), rest, "change round trip");
            let f = group_fixture();
            let mut bob = f.bob.clone();
            if bob.receive_change(&c).is_err() {
                assert_eq!(
                    bob.snapshot(),
                    f.bob.snapshot(),
                    "a refused change changed the state"
                );
            }
        }
        _ => {
            if let Ok(r) = Roster::restore_log(rest) {
                assert_eq!(r.encode_log(), rest, "stored log round trip");
            }
        }
    }
}

/// Group snapshots, chosen by the first byte: `0` `SenderKeyGroup`, `1` `SenderKeyRecord`, `2`
/// `SenderChain`. What restores re-encodes to a fixed point (a first-format group snapshot
/// becomes a second-format one).
pub fn group_restore(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(g) = SenderKeyGroup::restore(rest) {
                let snap = g.snapshot();
                if rest.first() == Some(&0x02) {
                    assert_eq!(snap.as_slice(), rest, "group snapshot round trip");
                }
                let again = SenderKeyGroup::restore(&snap).expect("a snapshot restores");
                assert_eq!(again.snapshot(), snap);
                let _ = format!("{g:?}");
            }
        }
        1 => {
            if let Ok(r) = SenderKeyRecord::restore(rest) {
                assert_eq!(r.snapshot().as_slice(), rest, "record round trip");
            }
        }
        _ => {
            if let Ok(mut c) = SenderChain::restore(rest) {
                assert_eq!(c.snapshot().as_slice(), rest, "chain round trip");
                let _ = c.encrypt(b"after restore");
            }
        }
    }
}
