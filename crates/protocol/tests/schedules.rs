//! Property tests: two parties exchange messages under random delivery schedules with delay,
//! reordering, loss and duplication across many direction changes.
//!
//! Invariants: every message delivered for the first time decrypts exactly once, to the
//! plaintext that was sent; every redelivery is rejected and changes nothing; the session keeps
//! working whatever was lost.

mod common;

use common::{established, open};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Alice (`true`) or Bob sends a new message.
    Send(bool),
    /// Deliver one in-flight message to Alice (`true`) or Bob: the index picks which.
    Deliver(bool, usize),
    /// The network loses one in-flight message for good.
    Drop(bool, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(Op::Send),
        5 => (any::<bool>(), any::<usize>()).prop_map(|(to, i)| Op::Deliver(to, i)),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to, i)| Op::Drop(to, i)),
    ]
}

struct InFlight {
    wire: Vec<u8>,
    plaintext: Vec<u8>,
    delivered: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_deliver_exactly_once(ops in prop::collection::vec(op(), 1..160)) {
        let (mut alice, mut a, mut bob, mut b) = established();
        // pools[0]: messages travelling to Alice; pools[1]: to Bob.
        let mut pools: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
        let mut counter = 0u32;

        for op in ops {
            match op {
                Op::Send(from_alice) => {
                    counter += 1;
                    let plaintext = format!("{} #{counter}", if from_alice { "alice" } else { "bob" }).into_bytes();
                    let wire = if from_alice { a.encrypt(&plaintext) } else { b.encrypt(&plaintext) }.unwrap();
                    pools[usize::from(from_alice)].push(InFlight { wire, plaintext, delivered: false });
                }
                Op::Deliver(to_alice, i) => {
                    let pool = &mut pools[usize::from(!to_alice)];
                    if pool.is_empty() {
                        continue;
                    }
                    let n = pool.len();
                    let msg = &mut pool[i % n];
                    let (session, rng) = if to_alice { (&mut a, &mut alice.rng) } else { (&mut b, &mut bob.rng) };
                    let before = session.snapshot();
                    let result = open(session, rng, &msg.wire);
                    if msg.delivered {
                        prop_assert!(result.is_err(), "a duplicate was accepted");
                        prop_assert_eq!(session.snapshot(), before, "a duplicate changed the state");
                    } else {
                        prop_assert_eq!(result.as_deref().ok(), Some(msg.plaintext.as_slice()), "delivery failed: {:?}", result);
                        msg.delivered = true;
                    }
                }
                Op::Drop(to_alice, i) => {
                    let pool = &mut pools[usize::from(!to_alice)];
                    if !pool.is_empty() {
                        let n = pool.len();
                        pool.remove(i % n);
                    }
                }
            }
        }

        // Whatever happened, both directions still work afterwards.
        let m = a.encrypt(b"final from alice").unwrap();
        prop_assert_eq!(open(&mut b, &mut bob.rng, &m).unwrap(), b"final from alice".to_vec());
        let m = b.encrypt(b"final from bob").unwrap();
        prop_assert_eq!(open(&mut a, &mut alice.rng, &m).unwrap(), b"final from bob".to_vec());
    }
}

/// A fixed, long schedule with many direction changes, checked to have them, so the property
/// above is known to cover what it claims even if proptest's generation drifts.
#[test]
fn many_direction_changes_with_reordering() {
    let (mut alice, mut a, mut bob, mut b) = established();
    for round in 0..40 {
        let burst = 1 + round % 4;
        let (sender, receiver, rrng) = if round % 2 == 0 {
            (&mut a, &mut b, &mut bob.rng)
        } else {
            (&mut b, &mut a, &mut alice.rng)
        };
        let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..burst)
            .map(|i| {
                let pt = format!("r{round} m{i}").into_bytes();
                (sender.encrypt(&pt).unwrap(), pt)
            })
            .collect();
        // Deliver in reverse order.
        for (wire, pt) in msgs.iter().rev() {
            assert_eq!(&open(receiver, rrng, wire).unwrap(), pt);
        }
        for (wire, _) in &msgs {
            assert!(open(receiver, rrng, wire).is_err());
        }
    }
}
