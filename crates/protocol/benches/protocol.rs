//! sotto-protocol against vodozemac (Matrix's Olm) and against the bare primitives.
//!
//! `cargo bench -p sotto-protocol` (optionally `-- --warm-up-time 1 --measurement-time 3`).
//! Results and their reading are in docs/BENCHMARKS.md, "Protocol (sotto-protocol)".
//!
//! | group | sotto | vodozemac | primitives |
//! |---|---|---|---|
//! | `chain_encrypt` (a) | `Session::encrypt` of 100 B | `Session::encrypt` | 2 HMAC + HKDF + AEAD seal of 128 B |
//! | `chain_decrypt` (b) | `Session::decrypt` of a decoded envelope | `Session::decrypt` | 2 HMAC + HKDF + AEAD open of 128 B |
//! | `ping_pong` (c) | encrypt, decode, decrypt, alternating direction | encrypt, decrypt | (a) + (b) + 2 DH + 1 keygen + 2 KDF_RK |
//! | `setup` (d) | bundle → first plaintext | 3DH outbound → first plaintext | the sum in [`setup_primitives`] |
//!
//! Decryption is timed alone: messages are encrypted outside the timer in chunks of
//! [`CHUNK`], then decrypted in order.

// A benchmark measures wall-clock time; the sans-IO clock ban is for the library.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use ml_kem::{DecapsulationKey768, EncapsulationKey768, Seed};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::Sha256;
use sotto_protocol::kdf::{MESSAGE_KEYS_INFO, PQXDH_INFO, ROOT_INFO};
use sotto_protocol::{Envelope, IdentityKeyPair, PrekeyBundle, PrekeyStore, Session};
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

/// The message size of every benchmark; sotto pads it to 128 bytes.
const MESSAGE: [u8; 100] = [0x5a; 100];
/// Padded size of [`MESSAGE`].
const PADDED: usize = 128;
/// Messages encrypted ahead of each timed decryption run.
const CHUNK: u64 = 256;

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

fn random<const N: usize>(rng: &mut ChaCha20Rng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

// ───────────────────────────── sotto set-up ─────────────────────────────

struct Bob {
    identity: IdentityKeyPair,
    /// A store holding only the signed prekey; cloned and topped up per handshake.
    store: PrekeyStore,
}

impl Bob {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let mut store = PrekeyStore::new();
        store.rotate_signed_prekey(rng, &identity);
        Self { identity, store }
    }

    /// A fresh bundle with a one-time prekey and a one-time ML-KEM prekey, and the store that
    /// holds their private halves.
    fn bundle(&self, rng: &mut ChaCha20Rng) -> (PrekeyBundle, PrekeyStore) {
        let mut store = self.store.clone();
        let one_time = store.generate_one_time_prekeys(rng, 1)[0];
        let kem = store.generate_kem_prekeys(rng, &self.identity, 1).remove(0);
        let bundle = PrekeyBundle {
            identity: self.identity.public(),
            signed_prekey: store.signed_prekey().unwrap(),
            one_time_prekey: Some(one_time),
            kem_prekey: kem,
        };
        (bundle, store)
    }
}

/// Alice's and Bob's sessions after one message each way, so that both send bare ratchet
/// messages.
fn sotto_pair(rng: &mut ChaCha20Rng) -> (Session, Session) {
    let alice = IdentityKeyPair::generate(rng);
    let bob = Bob::new(rng);
    let (bundle, mut store) = bob.bundle(rng);
    let mut a = Session::initiate(rng, &alice, &bundle).unwrap();
    let Envelope::Prekey(initial) = Envelope::decode(&a.encrypt(&MESSAGE).unwrap()).unwrap() else {
        panic!("expected an initial message")
    };
    let (mut b, _) = Session::respond(rng, &bob.identity, &mut store, &initial).unwrap();
    let reply = Envelope::decode(&b.encrypt(&MESSAGE).unwrap()).unwrap();
    a.decrypt(rng, &reply).unwrap();
    (a, b)
}

/// The same for vodozemac.
fn olm_pair() -> (OlmSession, OlmSession) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = bob.one_time_keys().into_values().next().unwrap();
    bob.mark_keys_as_published();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(first) = a.encrypt(MESSAGE).unwrap() else {
        panic!("expected a pre-key message")
    };
    let mut b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .unwrap()
        .session;
    let reply = b.encrypt(MESSAGE).unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

// ───────────────────────────── primitives ─────────────────────────────

fn hmac_byte(key: &[u8; 32], byte: u8) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(&[byte]);
    mac.finalize().into_bytes().into()
}

fn hkdf<const L: usize>(salt: &[u8; 32], ikm: &[u8], info: &[u8]) -> [u8; L] {
    let mut okm = [0u8; L];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut okm)
        .unwrap();
    okm
}

/// KDF_CK and the message-key expansion: two HMACs and one HKDF.
fn chain_step(ck: &[u8; 32]) -> ([u8; 32], [u8; 56]) {
    let next = hmac_byte(ck, 0x02);
    let mk = hmac_byte(ck, 0x01);
    (next, hkdf::<56>(&[0; 32], &mk, MESSAGE_KEYS_INFO))
}

fn aead(keys: &[u8; 56]) -> (XChaCha20Poly1305, XNonce) {
    let cipher = XChaCha20Poly1305::new_from_slice(&keys[..32]).unwrap();
    let nonce = XNonce::try_from(&keys[32..]).unwrap();
    (cipher, nonce)
}

/// The AAD of a ratchet message: 64 bytes of identities and a 41-byte header.
const AAD: [u8; 105] = [0x33; 105];

fn seal(keys: &[u8; 56], buf: &mut [u8; PADDED]) -> Tag {
    let (cipher, nonce) = aead(keys);
    cipher
        .encrypt_inout_detached(&nonce, &AAD, buf.as_mut_slice().into())
        .unwrap()
}

fn open(keys: &[u8; 56], buf: &mut [u8; PADDED], tag: &Tag) {
    let (cipher, nonce) = aead(keys);
    cipher
        .decrypt_inout_detached(&nonce, &AAD, buf.as_mut_slice().into(), tag)
        .unwrap();
}

fn x25519_keygen(bytes: [u8; 32]) -> (StaticSecret, PublicKey) {
    let secret = StaticSecret::from(bytes);
    let public = PublicKey::from(&secret);
    (secret, public)
}

/// Inputs for [`setup_primitives`] (all but the operations themselves).
struct SetupInputs {
    identity: SigningKey,
    signed_prekey_message: Vec<u8>,
    signed_prekey_signature: Signature,
    kem_message: Vec<u8>,
    kem_signature: Signature,
    kem_public: Box<[u8; 1184]>,
    kem_seed: Seed,
    remote: PublicKey,
    rng: ChaCha20Rng,
}

impl SetupInputs {
    fn new() -> Self {
        let mut rng = rng(9);
        let identity = SigningKey::from_bytes(&random(&mut rng));
        let spk = x25519_keygen(random(&mut rng)).1;
        let signed_prekey_message = [&[0x05][..], spk.as_bytes()].concat();
        let kem_seed = Seed::from(random::<64>(&mut rng));
        let kem_public: Box<[u8; 1184]> = Box::new(
            DecapsulationKey768::from_seed(kem_seed)
                .encapsulation_key()
                .to_bytes()
                .into(),
        );
        let kem_message = [&[0x0a][..], kem_public.as_slice()].concat();
        Self {
            signed_prekey_signature: identity.sign(&signed_prekey_message),
            kem_signature: identity.sign(&kem_message),
            identity,
            signed_prekey_message,
            kem_message,
            kem_public,
            kem_seed,
            remote: spk,
            rng,
        }
    }
}

/// Everything PQXDH with a one-time prekey, RatchetInitAlice, one encryption, the responder's
/// PQXDH and its first decryption (with the DH ratchet step) compute, as bare primitive calls:
///
/// | operation | initiator | responder |
/// |---|---|---|
/// | Ed25519 verify (SPK, PQPK signatures) | 2 | |
/// | Ed25519 → X25519 public (IK_B, IK_A) | 1 | 1 |
/// | Ed25519 seed → X25519 scalar (SHA-512) | 1 | 1 |
/// | X25519 key generation (EK_A, DHs_A; DHs_B') | 2 | 1 |
/// | X25519 DH (DH1-4, ratchet init; DH1-4, DH ratchet step ×2) | 5 | 6 |
/// | ML-KEM-768 encapsulation key decode + encapsulate | 1 | |
/// | ML-KEM-768 key generation from seed + decapsulate | | 1 |
/// | HKDF PQXDH (192-byte IKM) | 1 | 1 |
/// | HKDF KDF_RK | 1 | 2 |
/// | 2 HMAC (KDF_CK) + HKDF (message keys) | 1 | 1 |
/// | XChaCha20-Poly1305 of 128 B (AAD 105 B) | seal | open |
fn setup_primitives(inputs: &mut SetupInputs) {
    let remote = black_box(inputs.remote);
    let vk = inputs.identity.verifying_key();
    // Initiator.
    vk.verify_strict(
        &inputs.signed_prekey_message,
        &inputs.signed_prekey_signature,
    )
    .unwrap();
    vk.verify_strict(&inputs.kem_message, &inputs.kem_signature)
        .unwrap();
    black_box(vk.to_montgomery());
    let ik = StaticSecret::from(inputs.identity.to_scalar_bytes());
    let ek = x25519_keygen(random(&mut inputs.rng)).0;
    let ek_kem = EncapsulationKey768::new(inputs.kem_public.as_ref().into()).unwrap();
    let (ct, ss) = ek_kem.encapsulate_with_rng(&mut inputs.rng);
    let mut ikm = [0xffu8; 192];
    for (i, secret) in [&ik, &ek, &ek, &ek].into_iter().enumerate() {
        ikm[32 * (i + 1)..32 * (i + 2)].copy_from_slice(secret.diffie_hellman(&remote).as_bytes());
    }
    ikm[160..].copy_from_slice(&ss);
    let sk = hkdf::<32>(&[0; 32], &ikm, PQXDH_INFO);
    let ratchet = x25519_keygen(random(&mut inputs.rng)).0;
    let dh = ratchet.diffie_hellman(&remote);
    let rk = hkdf::<64>(&sk, dh.as_bytes(), ROOT_INFO);
    let (_, keys) = chain_step(rk[32..].try_into().unwrap());
    let mut buf = [0x5au8; PADDED];
    let tag = seal(&keys, &mut buf);
    // Responder.
    black_box(vk.to_montgomery());
    let ik_b = StaticSecret::from(inputs.identity.to_scalar_bytes());
    let dk = DecapsulationKey768::from_seed(inputs.kem_seed);
    black_box(dk.decapsulate(&ct));
    // (The same scalars as the initiator's, so that the keys and the tag agree.)
    for (i, secret) in [&ik_b, &ek, &ek, &ek].into_iter().enumerate() {
        ikm[32 * (i + 1)..32 * (i + 2)].copy_from_slice(secret.diffie_hellman(&remote).as_bytes());
    }
    let sk = hkdf::<32>(&[0; 32], &ikm, PQXDH_INFO);
    let dh = ratchet.diffie_hellman(&remote);
    let rk = hkdf::<64>(&sk, dh.as_bytes(), ROOT_INFO);
    let (_, keys) = chain_step(rk[32..].try_into().unwrap());
    open(&keys, &mut buf, &tag);
    let next = x25519_keygen(random(&mut inputs.rng)).0;
    let dh = next.diffie_hellman(&remote);
    black_box(hkdf::<64>(
        &rk[..32].try_into().unwrap(),
        dh.as_bytes(),
        ROOT_INFO,
    ));
}

// ───────────────────────────── benchmarks ─────────────────────────────

fn chain_encrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain_encrypt");
    let (mut a, _) = sotto_pair(&mut rng(1));
    group.bench_function("sotto", |b| {
        b.iter(|| a.encrypt(black_box(&MESSAGE)).unwrap())
    });
    let (mut a, _) = olm_pair();
    group.bench_function("vodozemac", |b| {
        b.iter(|| a.encrypt(black_box(MESSAGE)).unwrap())
    });
    let mut ck = [7u8; 32];
    group.bench_function("primitives", |b| {
        b.iter(|| {
            let (next, keys) = chain_step(&ck);
            ck = next;
            let mut buf = black_box([0x5au8; PADDED]);
            (seal(&keys, &mut buf), buf)
        })
    });
    group.finish();
}

/// Times `decrypt` over messages that `encrypt` produced outside the timer, in order.
fn timed_in_chunks<M>(
    iters: u64,
    mut encrypt: impl FnMut() -> M,
    mut decrypt: impl FnMut(&M),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let messages: Vec<M> = (0..n).map(|_| encrypt()).collect();
        let start = Instant::now();
        for m in &messages {
            decrypt(m);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn chain_decrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain_decrypt");
    let mut r = rng(2);
    let (mut a, mut b) = sotto_pair(&mut r);
    group.bench_function("sotto", |bench| {
        bench.iter_custom(|iters| {
            timed_in_chunks(
                iters,
                || Envelope::decode(&a.encrypt(&MESSAGE).unwrap()).unwrap(),
                |m| {
                    black_box(b.decrypt(&mut r, m).unwrap());
                },
            )
        })
    });
    let (mut a, mut b) = olm_pair();
    group.bench_function("vodozemac", |bench| {
        bench.iter_custom(|iters| {
            timed_in_chunks(
                iters,
                || a.encrypt(MESSAGE).unwrap(),
                |m| {
                    black_box(b.decrypt(m).unwrap());
                },
            )
        })
    });
    let mut ck = [7u8; 32];
    let mut receiver = ck;
    group.bench_function("primitives", |bench| {
        bench.iter_custom(|iters| {
            timed_in_chunks(
                iters,
                || {
                    let (next, keys) = chain_step(&ck);
                    ck = next;
                    let mut buf = [0x5au8; PADDED];
                    (seal(&keys, &mut buf), buf)
                },
                |(tag, ciphertext)| {
                    let (next, keys) = chain_step(&receiver);
                    receiver = next;
                    let mut buf = *ciphertext;
                    open(&keys, &mut buf, tag);
                    black_box(buf);
                },
            )
        })
    });
    group.finish();
}

fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong");
    let mut r = rng(3);
    let (a, b) = sotto_pair(&mut r);
    let mut pair = [a, b];
    let mut turn = 0;
    group.bench_function("sotto", |bench| {
        bench.iter(|| {
            let [a, b] = &mut pair;
            let (from, to) = if turn == 0 { (a, b) } else { (b, a) };
            turn ^= 1;
            let wire = from.encrypt(black_box(&MESSAGE)).unwrap();
            to.decrypt(&mut r, &Envelope::decode(&wire).unwrap())
                .unwrap()
        })
    });
    let (a, b) = olm_pair();
    let mut pair = [a, b];
    let mut turn = 0;
    group.bench_function("vodozemac", |bench| {
        bench.iter(|| {
            let [a, b] = &mut pair;
            let (from, to) = if turn == 0 { (a, b) } else { (b, a) };
            turn ^= 1;
            let message = from.encrypt(black_box(MESSAGE)).unwrap();
            to.decrypt(&message).unwrap()
        })
    });
    // (a) + (b) + the DH ratchet step of the receiver: DH, KDF_RK, then a new key pair, DH,
    // KDF_RK.
    let mut ck = [7u8; 32];
    let mut rk = [8u8; 32];
    let (secret, remote) = x25519_keygen([9; 32]);
    group.bench_function("primitives", |bench| {
        bench.iter(|| {
            let dh = secret.diffie_hellman(&remote);
            let okm = hkdf::<64>(&rk, dh.as_bytes(), ROOT_INFO);
            let (_, keys) = chain_step(&ck);
            let mut buf = black_box([0x5au8; PADDED]);
            let tag = seal(&keys, &mut buf);
            open(&keys, &mut buf, &tag);
            let next = x25519_keygen(random(&mut r)).0;
            let dh = next.diffie_hellman(&remote);
            let okm2 = hkdf::<64>(okm[..32].try_into().unwrap(), dh.as_bytes(), ROOT_INFO);
            rk.copy_from_slice(&okm2[..32]);
            ck.copy_from_slice(&okm2[32..]);
        })
    });
    group.finish();
}

fn setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("setup");
    let mut r = rng(4);
    let alice = IdentityKeyPair::generate(&mut r);
    let bob = Bob::new(&mut r);
    let mut setup_rng = rng(5);
    group.bench_function("sotto", |bench| {
        bench.iter_batched(
            || bob.bundle(&mut setup_rng),
            |(bundle, mut store)| {
                let mut a = Session::initiate(&mut r, &alice, &bundle).unwrap();
                let wire = a.encrypt(&MESSAGE).unwrap();
                let Envelope::Prekey(initial) = Envelope::decode(&wire).unwrap() else {
                    panic!("expected an initial message")
                };
                let (b, plaintext) =
                    Session::respond(&mut r, &bob.identity, &mut store, &initial).unwrap();
                (a, b, plaintext, store)
            },
            BatchSize::SmallInput,
        )
    });
    let olm_alice = Account::new();
    group.bench_function("vodozemac", |bench| {
        bench.iter_batched(
            || {
                let mut bob = Account::new();
                bob.generate_one_time_keys(1);
                let otk = bob.one_time_keys().into_values().next().unwrap();
                bob.mark_keys_as_published();
                (bob, otk)
            },
            |(mut bob, otk)| {
                let mut a = olm_alice
                    .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                    .unwrap();
                let OlmMessage::PreKey(first) = a.encrypt(MESSAGE).unwrap() else {
                    panic!("expected a pre-key message")
                };
                let inbound = bob
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        olm_alice.curve25519_key(),
                        &first,
                    )
                    .unwrap();
                (a, inbound.session, inbound.plaintext, bob)
            },
            BatchSize::SmallInput,
        )
    });
    let mut inputs = SetupInputs::new();
    group.bench_function("primitives", |bench| {
        bench.iter(|| setup_primitives(&mut inputs))
    });
    group.finish();
}

/// Each primitive alone, for the breakdown of the floors in docs/BENCHMARKS.md.
fn primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("primitive");
    let key = [7u8; 32];
    group.bench_function("hmac_sha256", |b| b.iter(|| hmac_byte(black_box(&key), 1)));
    group.bench_function("hkdf_sha256_56", |b| {
        b.iter(|| hkdf::<56>(&[0; 32], black_box(&key), MESSAGE_KEYS_INFO))
    });
    let keys = [9u8; 56];
    group.bench_function("xchacha20poly1305_seal_128", |b| {
        b.iter(|| {
            let mut buf = black_box([0x5au8; PADDED]);
            (seal(black_box(&keys), &mut buf), buf)
        })
    });
    let mut sealed = [0x5au8; PADDED];
    let tag = seal(&keys, &mut sealed);
    group.bench_function("xchacha20poly1305_open_128", |b| {
        b.iter(|| {
            let mut buf = black_box(sealed);
            open(black_box(&keys), &mut buf, &tag);
            buf
        })
    });
    let (secret, public) = x25519_keygen([3; 32]);
    group.bench_function("x25519_keygen", |b| {
        b.iter(|| x25519_keygen(black_box([4; 32])).1)
    });
    group.bench_function("x25519_dh", |b| {
        b.iter(|| black_box(&secret).diffie_hellman(black_box(&public)))
    });
    let inputs = SetupInputs::new();
    let vk = inputs.identity.verifying_key();
    group.bench_function("ed25519_verify_strict_kem_prekey", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(&inputs.kem_message), &inputs.kem_signature)
                .unwrap()
        })
    });
    group.bench_function("ed25519_to_x25519_public", |b| {
        b.iter(|| black_box(&vk).to_montgomery())
    });
    let mut r = rng(6);
    group.bench_function("mlkem768_encapsulate_from_bytes", |b| {
        b.iter(|| {
            EncapsulationKey768::new(black_box(inputs.kem_public.as_ref()).into())
                .unwrap()
                .encapsulate_with_rng(&mut r)
        })
    });
    let dk = DecapsulationKey768::from_seed(inputs.kem_seed);
    let (ct, _) = dk.encapsulation_key().encapsulate_with_rng(&mut r);
    group.bench_function("mlkem768_keygen_from_seed", |b| {
        b.iter(|| DecapsulationKey768::from_seed(black_box(inputs.kem_seed)))
    });
    group.bench_function("mlkem768_decapsulate", |b| {
        b.iter(|| black_box(&dk).decapsulate(black_box(&ct)))
    });
    group.finish();
}

criterion_group!(
    benches,
    chain_encrypt,
    chain_decrypt,
    ping_pong,
    setup,
    primitives
);
criterion_main!(benches);
