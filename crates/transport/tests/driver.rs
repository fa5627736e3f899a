//! The driver against the real relay (in-process, loopback sockets): TLS with a certificate the
//! test makes, the key and id pins, the keepalive against the relay's idle timeout, and
//! progress while a backlog streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sotto_protocol::IdentityKeyPair;
use sotto_relay::store::SqliteStore;
use sotto_relay::store::sqlite::Durability;
use sotto_relay::{Relay, RelayConfig};
use sotto_transport::{
    ClientError, ConnectOptions, Event, Outcome, RelayClient, Timeouts, TrustRoots,
};
use sotto_wire::{ErrorCode, MessageId, SendOut};

const T: Duration = Duration::from_secs(10);

fn kp(seed: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[seed; 32])
}

/// A CA and a way to issue relay certificates for 127.0.0.1 with fresh keys.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }
    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }
    /// Writes a leaf certificate and its key to `dir`; returns their paths.
    fn leaf(&self, dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A relay serving on a loopback port; stopped (gracefully) when dropped.
struct RelayHandle {
    addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

async fn relay(db: &Path, tls: Option<(&Path, &Path)>, config: RelayConfig) -> RelayHandle {
    let store = SqliteStore::open(db, Durability::Normal).unwrap();
    let relay = Relay::new(store, config);
    let token = relay.shutdown_token();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|(c, k)| sotto_relay::tls_acceptor(c, k).unwrap());
    tokio::spawn(relay.serve(listener, acceptor));
    RelayHandle {
        addr,
        stop: Some(Box::new(move || token.cancel())),
    }
}

fn opts(roots: TrustRoots) -> ConnectOptions {
    ConnectOptions {
        roots,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_hosted_ca_and_the_key_and_id_pins() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("sotto test CA");
    let (cert, key) = ca.leaf(dir.path(), "one");
    let db = dir.path().join("relay.db");
    let r = relay(&db, Some((&cert, &key)), RelayConfig::default()).await;
    let url = format!("wss://127.0.0.1:{}/", r.addr.port());

    // Mozilla's roots do not know the test CA: a clear error, nothing pinned.
    let err = RelayClient::connect_with(&url, &kp(1), None, &opts(TrustRoots::WebPki))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Tls(m) if m.contains("not signed by a trusted CA")),
        "{err}"
    );

    // With the CA file: register, send, receive over TLS.
    let with_ca = opts(TrustRoots::CaPem(ca.pem()));
    let mut alice = RelayClient::connect_with(&url, &kp(1), None, &with_ca)
        .await
        .unwrap();
    let mut bob = RelayClient::connect_with(&url, &kp(2), None, &with_ca)
        .await
        .unwrap();
    let key_pin = alice.tls_key().expect("a wss connection has a key");
    assert_eq!(bob.tls_key(), Some(key_pin));
    alice
        .send(kp(2).public(), MessageId([1; 16]), b"over tls".to_vec())
        .await
        .unwrap();
    let d = tokio::time::timeout(T, bob.next_delivery())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body, b"over tls");
    let relay_id = alice.relay_id();
    alice.close().await;
    bob.close().await;

    // Pinned: the same key and id pass.
    let pinned = ConnectOptions {
        relay_id: Some(relay_id),
        tls_key: Some(key_pin),
        ..with_ca.clone()
    };
    RelayClient::connect_with(&url, &kp(1), None, &pinned)
        .await
        .unwrap()
        .close()
        .await;

    // The relay gets a certificate with a new key from the same CA (valid!): refused by the
    // pin before the WebSocket opens.
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (cert2, key2) = ca.leaf(dir.path(), "two");
    let r = relay(&db, Some((&cert2, &key2)), RelayConfig::default()).await;
    let url = format!("wss://127.0.0.1:{}/", r.addr.port());
    let err = RelayClient::connect_with(&url, &kp(1), None, &pinned)
        .await
        .unwrap_err();
    let ClientError::CertificateChanged {
        pinned: p,
        presented,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(p, key_pin);
    assert_ne!(presented, key_pin);

    // A relay with another store (another id) behind the old key's pin: refused by the id pin.
    drop(r);
    let db2 = dir.path().join("other.db");
    let r = relay(&db2, Some((&cert, &key)), RelayConfig::default()).await;
    let url = format!("wss://127.0.0.1:{}/", r.addr.port());
    let err = RelayClient::connect_with(&url, &kp(1), None, &pinned)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RelayIdChanged { pinned: p, .. } if p == relay_id),
        "{err}"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_holds_an_idle_connection_open_past_the_relays_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        idle_timeout: Duration::from_millis(800),
        ..RelayConfig::default()
    };
    let r = relay(&dir.path().join("relay.db"), None, config).await;
    let url = format!("ws://127.0.0.1:{}/", r.addr.port());
    let idle_for = Duration::from_millis(2500);

    // Without keepalive (one far in the future) the relay closes the idle connection.
    let never = ConnectOptions {
        timeouts: Timeouts {
            keepalive: Duration::from_secs(3600),
            ..Timeouts::default()
        },
        ..Default::default()
    };
    let mut c = RelayClient::connect_with(&url, &kp(1), None, &never)
        .await
        .unwrap();
    let r1 = tokio::time::timeout(idle_for, async {
        loop {
            if let Err(e) = c.next_event().await {
                return e;
            }
        }
    })
    .await
    .expect("the relay should have closed the idle connection");
    assert_eq!(r1.code(), Some(ErrorCode::Timeout), "{r1}");

    // With a keepalive shorter than the idle timeout it stays open, and the keepalive pongs are
    // never shown to the caller.
    let often = ConnectOptions {
        timeouts: Timeouts {
            keepalive: Duration::from_millis(250),
            ..Timeouts::default()
        },
        ..Default::default()
    };
    let mut c = RelayClient::connect_with(&url, &kp(1), None, &often)
        .await
        .unwrap();
    let seen = tokio::time::timeout(idle_for, async {
        let mut seen = Vec::new();
        loop {
            match c.next_event().await {
                Ok(e) => seen.push(e),
                Err(e) => panic!("keepalive failed to hold the connection: {e}"),
            }
        }
    })
    .await;
    assert!(seen.is_err(), "still waiting when the time was up");
    c.ping(5).await.unwrap();
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_completes_while_a_long_backlog_streams_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        identity_sends_per_sec: 10_000,
        identity_sends_burst: 10_000,
        conn_frames_per_sec: 10_000,
        conn_frames_burst: 10_000,
        ..RelayConfig::default()
    };
    let r = relay(&dir.path().join("relay.db"), None, config).await;
    let url = format!("ws://127.0.0.1:{}/", r.addr.port());
    RelayClient::connect(&url, &kp(2), None)
        .await
        .unwrap()
        .close()
        .await;
    let mut alice = RelayClient::connect(&url, &kp(1), None).await.unwrap();
    let n = 300u32;
    for i in 0..n {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        alice
            .send(kp(2).public(), MessageId(id), vec![7; 64 * 1024])
            .await
            .unwrap();
    }
    // Bob connects to ~19 MiB of backlog and sends at once, event-driven: he stores and acks
    // each delivery as it comes, and his send is answered somewhere in the stream.
    let mut bob = RelayClient::connect(&url, &kp(2), None).await.unwrap();
    let sent = bob
        .session_mut()
        .send(SendOut {
            recipient: kp(1).public(),
            message_id: MessageId([9; 16]),
            body: b"hi".to_vec(),
        })
        .unwrap();
    let (mut got, mut accepted, mut drained) = (0, false, false);
    tokio::time::timeout(Duration::from_secs(60), async {
        while !(accepted && drained) {
            match bob.next_event().await.unwrap() {
                Event::Deliver(d) => {
                    got += 1;
                    bob.session_mut().ack(vec![d.delivery_id]).unwrap();
                }
                Event::Reply { id, outcome } if id == sent => {
                    assert_eq!(outcome, Outcome::Accepted(MessageId([9; 16])));
                    accepted = true;
                }
                Event::Drained => drained = true,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, n);
    drop(r);
}
