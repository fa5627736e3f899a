//! Group messages (Sender Keys through `SenderKeyGroup`): encrypt and decrypt one message at
//! 100 B and 1 KiB. Targets on the reference machine: encrypt ≤ 50 µs, decrypt ≤ 80 µs (one
//! Ed25519 signature or strict verification dominates). Run with
//! `cargo bench -p sotto-protocol --bench groups`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_protocol::IdentityKeyPair;
use sotto_protocol::group::{GroupSession, SenderKeyGroup};
use sotto_protocol::roster::Roster;

fn pair() -> (SenderKeyGroup, SenderKeyGroup, sotto_protocol::IdentityKey) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let alice = IdentityKeyPair::from_seed(&[1; 32]);
    let bob = IdentityKeyPair::from_seed(&[2; 32]);
    let mut roster = Roster::create_with_nonce(&alice, [7; 32]);
    roster
        .apply(&roster.propose_add(&alice, bob.public()).unwrap())
        .unwrap();
    let mut a = SenderKeyGroup::new(alice.public(), roster.clone());
    let mut b = SenderKeyGroup::new(bob.public(), roster);
    let d = a.rotate(&mut rng, 0).unwrap();
    b.process_distribution(&alice.public(), &d).unwrap();
    (a, b, alice.public())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("group");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for size in [100usize, 1024] {
        let pt = vec![0x61u8; size];
        let (mut a, _, _) = pair();
        group.bench_function(format!("encrypt_{size}"), |bench| {
            bench.iter(|| black_box(a.encrypt(black_box(&pt)).unwrap()));
        });
        // A fresh pair: Bob's state knows iteration 0 of Alice's chain.
        let (mut a, b, sender) = pair();
        let msg = a.encrypt(&pt).unwrap();
        group.bench_function(format!("decrypt_{size}"), |bench| {
            bench.iter_batched(
                || b.clone(),
                // The state is returned so that dropping it is not timed.
                |mut r| {
                    let out = r.decrypt(&sender, black_box(&msg)).unwrap();
                    (r, out)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
