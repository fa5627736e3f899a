//! End-to-end behaviour of handshakes and sessions through the public API.

mod common;

use common::{Party, established, open};
use sotto_protocol::hazmat;
use sotto_protocol::ratchet::{MAX_SKIP, MAX_STORED_SKIPPED};
use sotto_protocol::{DecryptError, Envelope, HandshakeError, PrekeyBundle, Session};

#[test]
fn handshake_with_and_without_one_time_prekey() {
    for one_time in [true, false] {
        let mut alice = Party::new(10);
        let mut bob = Party::new(11);
        let bundle = PrekeyBundle::decode(&bob.bundle(one_time).encode()).unwrap();
        assert_eq!(bundle.one_time_prekey.is_some(), one_time);
        let mut a = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
        let wire = a.encrypt(b"hello").unwrap();
        let Ok(Envelope::Prekey(initial)) = Envelope::decode(&wire) else {
            panic!()
        };
        let before = bob.prekeys.one_time_prekey_count();
        let (b, pt) =
            Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &initial).unwrap();
        assert_eq!(pt, b"hello");
        assert_eq!(
            bob.prekeys.one_time_prekey_count(),
            before - usize::from(one_time)
        );
        assert_eq!(b.remote_identity(), alice.identity.public());
        assert_eq!(a.remote_identity(), bob.identity.public());
        assert_eq!(hazmat::associated_data(&a), hazmat::associated_data(&b));
        let ad = hazmat::associated_data(&a);
        assert_eq!(
            &ad[..32],
            alice.identity.public().as_bytes(),
            "AD binds the initiator first"
        );
        assert_eq!(&ad[32..], bob.identity.public().as_bytes());
    }
}

#[test]
fn bad_signatures_are_rejected() {
    let mut alice = Party::new(12);
    let mut bob = Party::new(13);
    let good = bob.bundle(true);

    let mut bundle = good.clone();
    bundle.signed_prekey.signature[0] ^= 1;
    assert_eq!(
        Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap_err(),
        HandshakeError::BadSignature("signed prekey")
    );
    let mut bundle = good.clone();
    bundle.kem_prekey.signature[63] ^= 0x80;
    assert_eq!(
        Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap_err(),
        HandshakeError::BadSignature("ML-KEM prekey")
    );
    // A bundle claiming another identity (a relay substituting keys it cannot sign).
    let mut bundle = good.clone();
    bundle.identity = Party::new(14).identity.public();
    assert!(matches!(
        Session::initiate(&mut alice.rng, &alice.identity, &bundle),
        Err(HandshakeError::BadSignature(_))
    ));
    // A signed prekey signed over a *different* key.
    let mut bundle = good;
    bundle.signed_prekey.key = x25519_dalek::PublicKey::from([9; 32]);
    assert!(Session::initiate(&mut alice.rng, &alice.identity, &bundle).is_err());
}

#[test]
fn low_order_keys_are_rejected() {
    let mut alice = Party::new(15);
    let mut bob = Party::new(16);
    let mut bundle = bob.bundle(true);
    // Signed by Bob, so the signature verifies, but the key is the all-zero (low-order) point.
    let zero = x25519_dalek::PublicKey::from([0; 32]);
    bundle.one_time_prekey = Some(sotto_protocol::OneTimePrekeyPublic { id: 99, key: zero });
    assert_eq!(
        Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap_err(),
        HandshakeError::NonContributory
    );
}

#[test]
fn one_time_prekey_cannot_be_reused() {
    let mut alice = Party::new(17);
    let mut bob = Party::new(18);
    let bundle = bob.bundle(true);
    let mut a1 = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
    let mut a2 = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
    let Ok(Envelope::Prekey(m1)) = Envelope::decode(&a1.encrypt(b"one").unwrap()) else {
        panic!()
    };
    let Ok(Envelope::Prekey(m2)) = Envelope::decode(&a2.encrypt(b"two").unwrap()) else {
        panic!()
    };
    Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &m1).unwrap();
    assert_eq!(
        Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &m2).unwrap_err(),
        HandshakeError::UnknownPrekey
    );
    // Replaying the first initial message also fails: its one-time keys are gone.
    assert_eq!(
        Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &m1).unwrap_err(),
        HandshakeError::UnknownPrekey
    );
}

#[test]
fn forged_initial_message_does_not_burn_prekeys() {
    let mut alice = Party::new(19);
    let mut bob = Party::new(20);
    let bundle = bob.bundle(true);
    let mut a = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
    let mut wire = a.encrypt(b"hello").unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let Ok(Envelope::Prekey(forged)) = Envelope::decode(&wire) else {
        panic!()
    };
    let before = (
        bob.prekeys.one_time_prekey_count(),
        bob.prekeys.one_time_kem_prekey_count(),
    );
    assert_eq!(
        Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &forged).unwrap_err(),
        HandshakeError::Decrypt(DecryptError::AuthenticationFailed)
    );
    assert_eq!(
        (
            bob.prekeys.one_time_prekey_count(),
            bob.prekeys.one_time_kem_prekey_count()
        ),
        before
    );
}

#[test]
fn initiator_repeats_handshake_until_reply() {
    let mut alice = Party::new(21);
    let mut bob = Party::new(22);
    let bundle = bob.bundle(false);
    let mut a = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
    let m1 = a.encrypt(b"1").unwrap();
    let m2 = a.encrypt(b"2").unwrap();
    assert!(matches!(Envelope::decode(&m2), Ok(Envelope::Prekey(_))));
    // Bob gets message 2 first: it establishes the session on its own.
    let Ok(Envelope::Prekey(p2)) = Envelope::decode(&m2) else {
        panic!()
    };
    let (mut b, pt) = Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &p2).unwrap();
    assert_eq!(pt, b"2");
    assert_eq!(open(&mut b, &mut bob.rng, &m1).unwrap(), b"1");
    let reply = b.encrypt(b"ok").unwrap();
    assert_eq!(open(&mut a, &mut alice.rng, &reply).unwrap(), b"ok");
    assert!(!a.is_initial_message_pending());
    assert!(matches!(
        Envelope::decode(&a.encrypt(b"3").unwrap()),
        Ok(Envelope::Ratchet(_))
    ));
}

#[test]
fn replay_is_rejected_and_state_unchanged() {
    let (mut alice, mut a, mut bob, mut b) = established();
    let m = a.encrypt(b"once").unwrap();
    assert_eq!(open(&mut b, &mut bob.rng, &m).unwrap(), b"once");
    let before = b.snapshot();
    assert_eq!(
        open(&mut b, &mut bob.rng, &m).unwrap_err(),
        DecryptError::Duplicate
    );
    assert_eq!(b.snapshot(), before);
    // Replays of a skipped-then-delivered message and of an old chain are rejected too.
    let m1 = a.encrypt(b"m1").unwrap();
    let m2 = a.encrypt(b"m2").unwrap();
    assert_eq!(open(&mut b, &mut bob.rng, &m2).unwrap(), b"m2");
    assert_eq!(open(&mut b, &mut bob.rng, &m1).unwrap(), b"m1");
    assert_eq!(
        open(&mut b, &mut bob.rng, &m1).unwrap_err(),
        DecryptError::Duplicate
    );
    let r = b.encrypt(b"turn").unwrap();
    open(&mut a, &mut alice.rng, &r).unwrap();
    let new_chain = a.encrypt(b"new chain").unwrap();
    open(&mut b, &mut bob.rng, &new_chain).unwrap();
    assert_eq!(
        open(&mut b, &mut bob.rng, &m2).unwrap_err(),
        DecryptError::Duplicate
    );
}

#[test]
fn beyond_max_skip_is_rejected_and_state_unchanged() {
    let (_alice, mut a, mut bob, mut b) = established();
    let mut last = Vec::new();
    for _ in 0..=MAX_SKIP + 1 {
        last = a.encrypt(b"x").unwrap();
    }
    let before = b.snapshot();
    assert_eq!(
        open(&mut b, &mut bob.rng, &last).unwrap_err(),
        DecryptError::TooFarAhead
    );
    assert_eq!(b.snapshot(), before);
    // Exactly MAX_SKIP ahead is fine.
    let (_alice, mut a, mut bob, mut b) = established();
    let mut last = Vec::new();
    for _ in 0..=MAX_SKIP {
        last = a.encrypt(b"x").unwrap();
    }
    assert_eq!(open(&mut b, &mut bob.rng, &last).unwrap(), b"x");
    assert_eq!(b.skipped_key_count(), MAX_SKIP as usize);
}

#[test]
fn skipped_keys_are_capped_oldest_first() {
    let (mut alice, mut a, mut bob, mut b) = established();
    let mut first_of_chains = Vec::new();
    // Three chains of MAX_SKIP + 1 messages, only the last of each delivered: 3000 skipped keys
    // would be stored without the cap.
    for _ in 0..3 {
        let mut chain: Vec<Vec<u8>> = (0..=MAX_SKIP).map(|_| a.encrypt(b"y").unwrap()).collect();
        let last = chain.pop().unwrap();
        open(&mut b, &mut bob.rng, &last).unwrap();
        first_of_chains.push(chain.swap_remove(0));
        let r = b.encrypt(b"r").unwrap();
        open(&mut a, &mut alice.rng, &r).unwrap();
        assert!(b.skipped_key_count() <= MAX_STORED_SKIPPED);
    }
    assert_eq!(b.skipped_key_count(), MAX_STORED_SKIPPED);
    // The oldest chain's keys were evicted; the newest chain's are still there.
    assert!(open(&mut b, &mut bob.rng, &first_of_chains[0]).is_err());
    assert_eq!(
        open(&mut b, &mut bob.rng, &first_of_chains[2]).unwrap(),
        b"y"
    );
}

/// Flips every bit of a sample message (header and ciphertext) and checks each copy is rejected
/// with the state unchanged, and the genuine message still decrypts afterwards.
#[test]
fn every_single_bit_flip_is_rejected() {
    for initial in [false, true] {
        let (mut alice, mut a, mut bob, mut b) = if initial {
            let mut alice = Party::new(30);
            let mut bob = Party::new(31);
            let bundle = bob.bundle(true);
            let a = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
            let b_dummy = a.clone();
            (alice, a, bob, b_dummy)
        } else {
            established()
        };
        // Also cover a message that carries a new ratchet key (the first of a new chain).
        let msg = a.encrypt(b"flip me").unwrap();
        if initial {
            for bit in 0..msg.len() * 8 {
                let mut t = msg.clone();
                t[bit / 8] ^= 1 << (bit % 8);
                let mut prekeys = bob.prekeys.clone();
                let accepted = match Envelope::decode(&t) {
                    Ok(Envelope::Prekey(p)) => {
                        Session::respond(&mut bob.rng, &bob.identity, &mut prekeys, &p).is_ok()
                    }
                    _ => false,
                };
                assert!(
                    !accepted,
                    "flipped bit {bit} of an initial message was accepted"
                );
            }
            let Ok(Envelope::Prekey(p)) = Envelope::decode(&msg) else {
                panic!()
            };
            let (_, pt) =
                Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &p).unwrap();
            assert_eq!(pt, b"flip me");
        } else {
            let before = b.snapshot();
            for bit in 0..msg.len() * 8 {
                let mut t = msg.clone();
                t[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    open(&mut b, &mut bob.rng, &t).is_err(),
                    "flipped bit {bit} was accepted"
                );
            }
            assert_eq!(b.snapshot(), before, "a rejected message changed the state");
            assert_eq!(open(&mut b, &mut bob.rng, &msg).unwrap(), b"flip me");
            let reply = b.encrypt(b"still works").unwrap();
            assert_eq!(
                open(&mut a, &mut alice.rng, &reply).unwrap(),
                b"still works"
            );
        }
    }
}

#[test]
fn snapshot_restore_continues_exactly() {
    let (mut alice, mut a, mut bob, b) = established();
    let pending = a.encrypt(b"in flight").unwrap();
    let mut b2 = Session::restore(&b.snapshot()).unwrap();
    let mut a2 = Session::restore(&a.snapshot()).unwrap();
    assert_eq!(a2.snapshot(), a.snapshot());
    assert_eq!(open(&mut b2, &mut bob.rng, &pending).unwrap(), b"in flight");
    let reply = b2.encrypt(b"after restore").unwrap();
    assert_eq!(
        open(&mut a2, &mut alice.rng, &reply).unwrap(),
        b"after restore"
    );
    // Truncated or padded snapshots are errors, never panics.
    let snap = a.snapshot();
    for len in 0..snap.len() {
        assert!(Session::restore(&snap[..len]).is_err());
    }
    let mut longer = snap.to_vec();
    longer.push(0);
    assert!(Session::restore(&longer).is_err());
    // The prekey store round-trips as well.
    let restored = sotto_protocol::PrekeyStore::restore(&bob.prekeys.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), bob.prekeys.snapshot());
}

/// Forward secrecy: a complete snapshot of Bob's state taken after a conversation cannot decrypt
/// the ciphertexts recorded earlier, whether delivered in order or not.
#[test]
fn forward_secrecy_snapshot_cannot_decrypt_the_past() {
    let (mut alice, mut a, mut bob, mut b) = established();
    let mut recorded = Vec::new();
    for round in 0..5 {
        for i in 0..3 {
            let m = a.encrypt(format!("a{round}{i}").as_bytes()).unwrap();
            open(&mut b, &mut bob.rng, &m).unwrap();
            recorded.push(m);
        }
        let r = b.encrypt(format!("b{round}").as_bytes()).unwrap();
        open(&mut a, &mut alice.rng, &r).unwrap();
        recorded.push(r);
    }
    let stolen_b = Session::restore(&b.snapshot()).unwrap();
    let stolen_a = Session::restore(&a.snapshot()).unwrap();
    let mut thief_rng = common::rng(99);
    for m in &recorded {
        assert!(open(&mut stolen_b.clone(), &mut thief_rng, m).is_err());
        assert!(open(&mut stolen_a.clone(), &mut thief_rng, m).is_err());
    }
}

/// Post-compromise security: a passive attacker holding a snapshot of Alice's state reads what
/// she receives until her next DH ratchet step with a fresh key, and nothing after it.
#[test]
fn post_compromise_security_heals_after_a_round_trip() {
    let (mut alice, mut a, mut bob, mut b) = established();
    let mut thief = Session::restore(&a.snapshot()).unwrap();
    let mut thief_rng = common::rng(98);

    // The next message to Alice: the thief reads it.
    let m = b.encrypt(b"compromised").unwrap();
    assert_eq!(
        open(&mut thief, &mut thief_rng, &m).unwrap(),
        b"compromised"
    );
    open(&mut a, &mut alice.rng, &m).unwrap();

    // One round trip. Alice still sends with the ratchet key the thief stole, so Bob's answer is
    // readable too; receiving it makes Alice generate a fresh key the thief never sees.
    let ping = a.encrypt(b"ping").unwrap();
    open(&mut b, &mut bob.rng, &ping).unwrap();
    let pong = b.encrypt(b"pong").unwrap();
    assert_eq!(open(&mut thief, &mut thief_rng, &pong).unwrap(), b"pong");
    open(&mut a, &mut alice.rng, &pong).unwrap();

    // From here on the conversation is secret again, even to a thief that follows along.
    for i in 0..3 {
        let m = a.encrypt(format!("secret {i}").as_bytes()).unwrap();
        open(&mut b, &mut bob.rng, &m).unwrap();
        let r = b.encrypt(format!("reply {i}").as_bytes()).unwrap();
        assert!(
            open(&mut thief, &mut thief_rng, &r).is_err(),
            "thief read reply {i}"
        );
        assert_eq!(
            open(&mut a, &mut alice.rng, &r).unwrap(),
            format!("reply {i}").as_bytes()
        );
    }
}

#[test]
fn debug_output_shows_no_secrets() {
    let (alice, a, _bob, _b) = established();
    let view = hazmat::ratchet_state(&a);
    let debug = format!("{a:?} {:?} {:?}", alice.identity, alice.prekeys);
    for secret in [
        view.root_key.to_vec(),
        view.dh_priv.to_vec(),
        alice.identity.to_seed().to_vec(),
    ] {
        assert!(!debug.contains(&hex::encode(&secret)));
        assert!(!debug.contains(&format!("{:?}", &secret[..4])));
    }
    assert!(debug.contains(&alice.identity.public().fingerprint()));
}

#[test]
fn padding_hides_short_lengths() {
    let (_alice, mut a, _bob, _b) = established();
    let short = a.encrypt(b"").unwrap().len();
    assert_eq!(
        a.encrypt(b"a somewhat longer message, still under 64")
            .unwrap()
            .len(),
        short
    );
    assert!(a.encrypt(&[0; 64]).unwrap().len() > short);
    assert!(a.encrypt(&vec![0; 70_000]).is_err());
}
