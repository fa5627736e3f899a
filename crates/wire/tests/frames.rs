//! Round trips of every frame, truncation of every prefix, and random input never panicking.

use proptest::prelude::*;
use sotto_protocol::IdentityKeyPair;
use sotto_wire::*;

fn key(seed: u8) -> sotto_protocol::IdentityKey {
    IdentityKeyPair::from_seed(&[seed; 32]).public()
}

fn key_n(i: usize, tag: u8) -> sotto_protocol::IdentityKey {
    let mut seed = [tag; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    IdentityKeyPair::from_seed(&seed).public()
}

fn rec(id: u32, len: usize) -> PrekeyRecord {
    PrekeyRecord {
        id,
        blob: vec![id as u8; len],
    }
}

fn client_samples() -> Vec<ClientFrame> {
    let kp = IdentityKeyPair::from_seed(&[1; 32]);
    let relay = RelayId([9; 32]);
    vec![
        ClientFrame::Authenticate(AuthenticateOut::sign(&kp, &relay, &[3; 32], None)),
        ClientFrame::Authenticate(AuthenticateOut::sign(
            &kp,
            &relay,
            &[3; 32],
            Some(b"inv".to_vec()),
        )),
        ClientFrame::UploadPrekeys(UploadPrekeysOut::default()),
        ClientFrame::UploadPrekeys(UploadPrekeysOut {
            signed_prekey: Some(rec(1, 100)),
            last_resort_kem: Some(rec(2, MAX_PREKEY_BLOB_LEN)),
            one_time_x25519: (0..5).map(|i| rec(i, 33)).collect(),
            one_time_kem: (0..3).map(|i| rec(i, 1200)).collect(),
        }),
        ClientFrame::FetchBundle(key(2)),
        ClientFrame::Send(SendOut {
            recipient: key(2),
            message_id: MessageId([5; 16]),
            body: vec![],
        }),
        ClientFrame::Send(SendOut {
            recipient: key(2),
            message_id: MessageId([6; 16]),
            body: vec![0xab; MAX_BODY_LEN],
        }),
        ClientFrame::Ack(vec![]),
        ClientFrame::Ack((0..MAX_ACKS_PER_FRAME as u64).collect()),
        ClientFrame::Ping(u64::MAX),
        ClientFrame::SendMulti(SendMultiOut {
            recipients: vec![key(2)],
            message_id: MessageId([7; 16]),
            body: vec![1, 2, 3],
        }),
    ]
}

#[test]
fn send_multi_bounds() {
    let one = |recipients: Vec<sotto_protocol::IdentityKey>| {
        ClientFrame::SendMulti(SendMultiOut {
            recipients,
            message_id: MessageId([1; 16]),
            body: vec![9],
        })
        .encode()
    };
    // The largest fan-out with the largest body fits one frame and round-trips. (Not among the
    // samples: decoding every prefix of it would take minutes.)
    let max = ClientFrame::SendMulti(SendMultiOut {
        recipients: (0..MAX_MULTI_RECIPIENTS).map(|i| key_n(i, 1)).collect(),
        message_id: MessageId([8; 16]),
        body: vec![0xcd; MAX_BODY_LEN],
    });
    let bytes = max.encode();
    assert!(bytes.len() <= MAX_FRAME_LEN);
    assert_eq!(ClientFrame::decode(&bytes), Ok(max));
    assert_eq!(
        ClientFrame::decode(&one(vec![])),
        Err(DecodeError::OutOfRange("no recipients"))
    );
    assert_eq!(
        ClientFrame::decode(&one(vec![key(2), key(3), key(2)])),
        Err(DecodeError::OutOfRange("duplicate recipient"))
    );
    let too_many: Vec<_> = (0..=MAX_MULTI_RECIPIENTS).map(|i| key_n(i, 9)).collect();
    assert_eq!(
        ClientFrame::decode(&one(too_many)),
        Err(DecodeError::OutOfRange("element count"))
    );
}

fn relay_samples() -> Vec<RelayFrame> {
    let counts = PrekeyCounts { x25519: 7, kem: 0 };
    vec![
        RelayFrame::Challenge(ChallengeIn {
            relay_id: RelayId([1; 32]),
            nonce: [2; 32],
            max_frame_len: MAX_FRAME_LEN as u32,
            max_body_len: MAX_BODY_LEN as u32,
        }),
        RelayFrame::AuthOk(counts),
        RelayFrame::Accepted(MessageId([4; 16])),
        RelayFrame::Deliver(DeliverIn {
            delivery_id: 42,
            sender: key(3),
            message_id: MessageId([8; 16]),
            timestamp_ms: 1_700_000_000_000,
            body: vec![1, 2, 3],
        }),
        RelayFrame::Bundle(BundleIn {
            identity: key(4),
            signed_prekey: rec(1, 40),
            one_time_x25519: Some(rec(2, 33)),
            kem: rec(3, 1200),
            kem_is_last_resort: false,
        }),
        RelayFrame::Bundle(BundleIn {
            identity: key(4),
            signed_prekey: rec(1, 40),
            one_time_x25519: None,
            kem: rec(3, 1200),
            kem_is_last_resort: true,
        }),
        RelayFrame::PrekeysLow(counts),
        RelayFrame::PrekeysStored(counts),
        RelayFrame::Error(ErrorIn {
            code: ErrorCode::QuotaFull,
            context: ErrorContext::Message(MessageId([1; 16])),
        }),
        RelayFrame::Error(ErrorIn {
            code: ErrorCode::NoBundle,
            context: ErrorContext::Identity(key(5)),
        }),
        RelayFrame::Error(ErrorIn {
            code: ErrorCode::Unknown(999),
            context: ErrorContext::None,
        }),
        RelayFrame::Pong(7),
        RelayFrame::Drained,
    ]
}

#[test]
fn every_frame_round_trips() {
    for f in client_samples() {
        let bytes = f.encode();
        assert!(bytes.len() <= MAX_FRAME_LEN);
        assert_eq!(ClientFrame::decode(&bytes).unwrap(), f);
    }
    for f in relay_samples() {
        let bytes = f.encode();
        assert_eq!(RelayFrame::decode(&bytes).unwrap(), f);
    }
}

#[test]
fn every_error_code_round_trips() {
    for v in 0..=40u16 {
        assert_eq!(ErrorCode::from_u16(v).to_u16(), v);
    }
}

#[test]
fn error_codes_have_stable_values_labels_and_retry_classes() {
    let known = [
        (1, "malformed", false),
        (2, "too_large", false),
        (3, "unauthorized", false),
        (4, "invite_required", false),
        (5, "rate_limited", true),
        (6, "quota_full", true),
        (7, "unknown_recipient", false),
        (8, "no_bundle", false),
        (9, "prekey_limit", false),
        (10, "timeout", true),
        (11, "overloaded", true),
        (12, "internal", true),
        (13, "superseded", true),
        (14, "shutting_down", true),
        (15, "protocol_violation", false),
        (16, "too_many_connections", true),
        (17, "storage_full", true),
        (18, "sender_quota_full", true),
        (19, "registration_limited", true),
    ];
    for (v, label, transient) in known {
        let code = ErrorCode::from_u16(v);
        assert_eq!(
            (code.label(), code.is_transient()),
            (label, transient),
            "code {v}"
        );
    }
    // A newer relay's code is never a permanent failure for an older client.
    assert!(ErrorCode::from_u16(20).is_transient());
    assert_eq!(ErrorCode::from_u16(20), ErrorCode::Unknown(20));
    assert!(!ErrorCode::StorageFull.is_fatal() && !ErrorCode::SenderQuotaFull.is_fatal());
    assert!(ErrorCode::RegistrationLimited.is_fatal());
}

#[test]
fn every_truncation_and_extension_fails() {
    for f in client_samples() {
        let bytes = f.encode();
        for n in 0..bytes.len() {
            assert!(
                ClientFrame::decode(&bytes[..n]).is_err(),
                "{f:?} truncated to {n}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ClientFrame::decode(&longer),
            Err(DecodeError::TrailingBytes)
        );
    }
    for f in relay_samples() {
        let bytes = f.encode();
        for n in 0..bytes.len() {
            assert!(
                RelayFrame::decode(&bytes[..n]).is_err(),
                "{f:?} truncated to {n}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RelayFrame::decode(&longer), Err(DecodeError::TrailingBytes));
    }
}

#[test]
fn limits_are_enforced() {
    let too_big = ClientFrame::Send(SendOut {
        recipient: key(2),
        message_id: MessageId([6; 16]),
        body: vec![0; MAX_BODY_LEN + 1],
    });
    assert!(ClientFrame::decode(&too_big.encode()).is_err());
    let too_many = ClientFrame::Ack((0..=MAX_ACKS_PER_FRAME as u64).collect());
    assert!(ClientFrame::decode(&too_many.encode()).is_err());
    let big_blob = UploadPrekeysOut {
        signed_prekey: Some(rec(1, MAX_PREKEY_BLOB_LEN + 1)),
        ..Default::default()
    };
    assert!(!big_blob.fits());
    assert!(ClientFrame::decode(&ClientFrame::UploadPrekeys(big_blob).encode()).is_err());
    let many = UploadPrekeysOut {
        one_time_kem: (0..100).map(|i| rec(i, 2048)).collect(),
        ..Default::default()
    };
    assert!(!many.fits(), "100 x 2 KiB exceeds the frame limit");
    assert!(ClientFrame::decode(&vec![VERSION; MAX_FRAME_LEN + 1]).is_err());
    assert_eq!(
        ClientFrame::decode(&[2, 0x46]),
        Err(DecodeError::UnknownVersion(2))
    );
    assert_eq!(
        ClientFrame::decode(&[1, 0x48]),
        Err(DecodeError::UnknownVersion(0x48))
    );
    // An invalid identity point is rejected at decode time.
    let mut fetch = ClientFrame::FetchBundle(key(2)).encode();
    fetch[2..].fill(0);
    assert!(ClientFrame::decode(&fetch).is_err());
}

#[test]
fn auth_is_bound_to_relay_nonce_and_identity() {
    let kp = IdentityKeyPair::from_seed(&[1; 32]);
    let relay = RelayId([9; 32]);
    let a = AuthenticateOut::sign(&kp, &relay, &[3; 32], None);
    assert!(a.verify(&relay, &[3; 32]));
    assert!(!a.verify(&relay, &[4; 32]));
    assert!(!a.verify(&RelayId([8; 32]), &[3; 32]));
    let mut other = a.clone();
    other.identity = key(2);
    assert!(!other.verify(&relay, &[3; 32]));
    let m = auth_message(&relay, &[3; 32], &kp.public());
    assert!(m.starts_with(b"sotto-relay-auth-v1"));
    assert_ne!(m[0], 0x05);
    assert_ne!(m[0], 0x0A);
}

#[test]
fn debug_never_shows_bodies() {
    let s = ClientFrame::Send(SendOut {
        recipient: key(2),
        message_id: MessageId([6; 16]),
        body: b"SECRETBODY".to_vec(),
    });
    assert!(!format!("{s:?}").contains("SECRETBODY"));
    assert!(!format!("{s:?}").contains("83, 69"));
}

static SAMPLES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    client_samples()
        .iter()
        .map(ClientFrame::encode)
        .chain(relay_samples().iter().map(RelayFrame::encode))
        .collect()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = ClientFrame::decode(&bytes);
        let _ = RelayFrame::decode(&bytes);
    }

    #[test]
    fn random_bodies_after_valid_headers_never_panic(
        ty in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![VERSION, ty];
        bytes.extend_from_slice(&body);
        let _ = ClientFrame::decode(&bytes);
        let _ = RelayFrame::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic_and_reencode(idx in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), val in any::<u8>()) {
        let samples = &*SAMPLES;
        let mut bytes = samples[idx.index(samples.len())].clone();
        let p = pos.index(bytes.len());
        bytes[p] = val;
        if let Ok(f) = ClientFrame::decode(&bytes) { prop_assert_eq!(f.encode(), bytes.clone()); }
        if let Ok(f) = RelayFrame::decode(&bytes) { prop_assert_eq!(f.encode(), bytes); }
    }
}
