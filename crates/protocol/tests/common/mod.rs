//! Shared helpers for the protocol integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_protocol::{Envelope, IdentityKeyPair, PrekeyBundle, PrekeyStore, Session};

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

pub struct Party {
    pub identity: IdentityKeyPair,
    pub prekeys: PrekeyStore,
    pub rng: ChaCha20Rng,
}

impl Party {
    pub fn new(seed: u8) -> Self {
        let mut rng = rng(seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        Self {
            identity,
            prekeys: PrekeyStore::new(),
            rng,
        }
    }

    /// Publishes a full bundle (with a one-time prekey if `one_time`).
    pub fn bundle(&mut self, one_time: bool) -> PrekeyBundle {
        let signed_prekey = match self.prekeys.signed_prekey() {
            Some(spk) => spk,
            None => self
                .prekeys
                .rotate_signed_prekey(&mut self.rng, &self.identity),
        };
        let one_time_prekey =
            one_time.then(|| self.prekeys.generate_one_time_prekeys(&mut self.rng, 1)[0]);
        let kem_prekey = self
            .prekeys
            .generate_kem_prekeys(&mut self.rng, &self.identity, 1)
            .remove(0);
        PrekeyBundle {
            identity: self.identity.public(),
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        }
    }
}

/// Alice and Bob with an established session in both directions (one message each way).
pub fn established() -> (Party, Session, Party, Session) {
    let mut alice = Party::new(1);
    let mut bob = Party::new(2);
    let bundle = bob.bundle(true);
    let mut a = Session::initiate(&mut alice.rng, &alice.identity, &bundle).unwrap();
    let first = a.encrypt(b"first").unwrap();
    let Envelope::Prekey(initial) = Envelope::decode(&first).unwrap() else {
        panic!("expected prekey message")
    };
    let (mut b, pt) =
        Session::respond(&mut bob.rng, &bob.identity, &mut bob.prekeys, &initial).unwrap();
    assert_eq!(pt, b"first");
    let reply = b.encrypt(b"reply").unwrap();
    assert_eq!(
        a.decrypt(&mut alice.rng, &Envelope::decode(&reply).unwrap())
            .unwrap(),
        b"reply"
    );
    (alice, a, bob, b)
}

pub fn open(
    session: &mut Session,
    rng: &mut ChaCha20Rng,
    wire: &[u8],
) -> Result<Vec<u8>, sotto_protocol::DecryptError> {
    let envelope = Envelope::decode(wire)?;
    session.decrypt(rng, &envelope)
}
