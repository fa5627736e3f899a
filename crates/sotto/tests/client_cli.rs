//! The client CLI as a user runs it: real `sotto relay` processes, real `sotto` client processes,
//! temporary profiles, `SOTTO_PASSPHRASE`, and cheap Argon2 parameters (`SOTTO_INSECURE_TEST_KDF`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const PW: &str = "correct horse battery staple";

struct Relay {
    child: Child,
}

impl Relay {
    fn start(db: &Path, port: u16) -> Self {
        Self::start_with(db, port, &[])
    }
    fn start_with(db: &Path, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["relay", "--listen", &format!("127.0.0.1:{port}"), "--store"])
            .arg(format!("sqlite:{}", db.display()))
            .args(["--sync", "normal"])
            .args(extra)
            .env("SOTTO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening"), "relay banner {line:?}");
        Self { child }
    }
    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct User {
    dir: PathBuf,
}

impl User {
    fn run_with(&self, args: &[&str], pw: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
        c.args(args)
            .env("SOTTO_PROFILE", &self.dir)
            .env("SOTTO_PASSPHRASE", pw)
            .env("SOTTO_INSECURE_TEST_KDF", "1")
            // Errors must stay one line even where users enable backtraces.
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run_with(args, PW, &[]);
        assert!(
            o.status.success(),
            "sotto {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run_with(args, PW, &[]);
        assert!(!o.status.success(), "sotto {args:?} should fail");
        String::from_utf8(o.stderr).unwrap()
    }
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
    fn recv(&self) -> Vec<Value> {
        self.ok(&["recv", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"] == "message")
            .collect()
    }
    fn setup(root: &Path, name: &str, url: &str) -> Self {
        let u = Self {
            dir: root.join(name),
        };
        u.ok(&["init"]);
        u.ok(&["register", "--relay", url]);
        u
    }
    fn invite(&self) -> String {
        self.ok(&["invite", "--plain"]).trim().to_owned()
    }
}

fn texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["text"].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

#[test]
fn two_people_chat_offline_restart_crash_and_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("relay.db");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let relay = Relay::start(&db, port);

    let alice = User::setup(tmp.path(), "alice", &url);
    let bob = User::setup(tmp.path(), "bob", &url);
    alice.ok(&["contact", "add", "bob", &bob.invite()]);
    bob.ok(&["contact", "add", "alice", &alice.invite()]);

    // Verification: Bob reads his number to Alice, who pastes it; Bob confirms.
    let sn = bob.json(&["verify", "alice", "--json"]);
    let digits = sn["grouped"].as_str().unwrap().to_owned();
    assert_eq!(
        alice.json(&["verify", "bob", "--json"])["safety_number"],
        sn["safety_number"]
    );
    let shown = alice.ok(&["verify", "bob"]);
    assert!(
        shown.contains(&digits) && shown.contains("Compare all 12 groups"),
        "{shown}"
    );
    alice.ok(&["verify", "bob", &digits]);
    bob.ok(&["verify", "alice", "--confirm"]);
    let wrong = "12345 ".repeat(12);
    assert!(
        alice
            .fails(&["verify", "bob", &wrong])
            .contains("does not match")
    );
    let contacts = alice.json(&["contacts", "--json"]);
    assert_eq!(contacts[0]["name"], "bob");
    assert_eq!(contacts[0]["verified"], true);

    // Both directions.
    alice.ok(&["send", "bob", "hello Bob, this is secret-text-one"]);
    assert_eq!(texts(&bob.recv()), ["hello Bob, this is secret-text-one"]);
    bob.ok(&["send", "alice", "hi Alice: secret-text-two"]);
    assert_eq!(texts(&alice.recv()), ["hi Alice: secret-text-two"]);
    // Bob's receipt reached Alice: her first message is delivered.
    let hist = alice.json(&["inbox", "--json"]);
    assert_eq!(hist[0]["state"], "delivered", "{hist}");
    assert_eq!(hist[1]["direction"], "in");

    // Bob offline while Alice sends 100 messages; then all 100, in order.
    for i in 0..100 {
        alice.ok(&["send", "bob", &format!("offline message {i:03}")]);
    }
    let got = bob.recv();
    let want: Vec<String> = (0..100)
        .map(|i| format!("offline message {i:03}"))
        .collect();
    assert_eq!(texts(&got), want);

    // Duplicates: receiving again shows nothing new.
    assert!(bob.recv().is_empty());

    // Relay restarted (same store) between messages: the conversation continues.
    relay.stop();
    // Relay down: a clear error, the message waits in the outbox.
    let err = alice.fails(&["send", "bob", "sent while the relay is down"]);
    assert!(
        err.contains("relay unreachable") && err.contains("queued"),
        "{err}"
    );
    let _relay = Relay::start(&db, port);
    alice.ok(&["send", "bob", "after the restart"]);
    assert_eq!(
        texts(&bob.recv()),
        ["sent while the relay is down", "after the restart"]
    );
    bob.ok(&["send", "alice", "still here"]);
    assert_eq!(texts(&alice.recv()), ["still here"]);

    // Killed between persisting and sending: the ciphertext is resent as it was, and the next
    // message uses the next key. Bob decrypts both, with no failures.
    let o = alice.run_with(
        &["send", "bob", "crash-in-flight"],
        PW,
        &[("SOTTO_TEST_CRASH_AFTER_PERSIST", "1")],
    );
    assert_eq!(o.status.code(), Some(86));
    alice.ok(&["send", "bob", "after the crash"]);
    let got = bob.recv();
    assert_eq!(texts(&got), ["crash-in-flight", "after the crash"]);
    let hist = bob.json(&["inbox", "--json"]);
    assert!(
        hist.as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] != "failed"),
        "{hist}"
    );

    // Profiles on disk hold no plaintext.
    for user in [&alice, &bob] {
        for entry in std::fs::read_dir(&user.dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for needle in [
                "secret-text-one",
                "secret-text-two",
                "offline message 042",
                "after the crash",
                "bob",
                "alice",
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle:?} found in plaintext in {}",
                    user.dir.display()
                );
            }
        }
    }

    // Wrong passphrase: clean error, profile intact.
    let o = alice.run_with(&["contacts"], "not the passphrase", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));
    alice.ok(&["contacts"]);

    // Bob re-creates his identity: Alice is warned and blocked until she re-verifies.
    std::fs::remove_dir_all(&bob.dir).unwrap();
    let bob = User::setup(tmp.path(), "bob", &url);
    bob.ok(&["contact", "add", "alice", &alice.invite()]);
    let o = alice.run_with(&["contact", "add", "bob", &bob.invite()], PW, &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("IDENTITY KEY HAS CHANGED"));
    let err = alice.fails(&["send", "bob", "are you really bob?"]);
    assert!(err.contains("changed") && err.contains("verify"), "{err}");
    let c = alice.json(&["contacts", "--json"]);
    assert_eq!(c[0]["blocked"], true);
    assert_eq!(c[0]["verified"], false);
    alice.ok(&["verify", "bob", "--confirm"]);
    alice.ok(&["send", "bob", "welcome back"]);
    assert_eq!(texts(&bob.recv()), ["welcome back"]);
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let u = User {
        dir: tmp.path().join("carol"),
    };
    u.ok(&["init"]);
    // Unreachable relay.
    let err = u.fails(&["register", "--relay", &url]);
    assert!(err.contains("relay unreachable"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Malformed and truncated invites.
    let inv = sotto_client::Invite {
        identity: sotto_protocol::IdentityKeyPair::from_seed(&[9; 32]).public(),
        relay: url.clone(),
    }
    .encode()
    .unwrap();
    assert!(
        u.fails(&["contact", "add", "dave", &inv[..inv.len() - 6]])
            .contains("invite")
    );
    assert!(
        u.fails(&["contact", "add", "dave", "hello"])
            .contains("not a sotto invite")
    );
    u.ok(&["contact", "add", "dave", &inv]);
    // Unknown contact.
    let err = u.fails(&["send", "erin", "hi"]);
    assert!(err.contains("unknown contact"));
    // One line, even with RUST_BACKTRACE set: a user needs the reason, not a stack trace.
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(u.fails(&["verify", "erin"]).contains("unknown contact"));
    // Wrong passphrase.
    let o = u.run_with(&["inbox", "--offline"], "nope", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));
    // Init twice is refused.
    assert!(u.fails(&["init"]).contains("already exists"));
}

#[test]
fn register_on_an_invite_only_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("relay.db");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let relay = Relay::start_with(&db, port, &["--invite-only"]);
    let u = User {
        dir: tmp.path().join("frank"),
    };
    u.ok(&["init"]);
    let err = u.fails(&["register", "--relay", &url]);
    assert!(
        err.starts_with("error: ") && err.trim().lines().count() == 1,
        "{err}"
    );
    // The operator makes a token (the store is shared with the running relay, WAL mode).
    let o = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["relay", "invite", "--store"])
        .arg(format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    u.ok(&["register", "--relay", &url, "--invite", &token]);
    // Registered: later connections need no token.
    u.ok(&["inbox"]);
    relay.stop();
}

mod support;

/// A `sotto recv --follow --json` child whose stdout lines are collected by a thread.
struct Follow {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follow {
    fn start(user: &User) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["recv", "--follow", "--json"])
            .env("SOTTO_PROFILE", &user.dir)
            .env("SOTTO_PASSPHRASE", PW)
            .env("SOTTO_INSECURE_TEST_KDF", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    /// Waits up to `secs` for a printed message with `text`.
    fn wait_for_text(&mut self, text: &str, secs: u64) -> bool {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["text"] == text)
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn identity_of(user: &User) -> sotto_protocol::IdentityKey {
    sotto_client::Invite::decode(&user.invite())
        .unwrap()
        .identity
}

/// Five registered strangers fetch the victim's bundle as fast as the relay lets them, for a
/// bounded time, while the victim runs `sotto recv --follow`. The follow must survive every
/// rejection its top-ups meet, the victim must keep one-time prekeys, and a new contact must
/// start a session with the victim as usual.
#[test]
fn prekey_drain_by_five_identities_neither_stops_recv_follow_nor_starves_the_victim() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = support::RelayProc::start(&tmp.path().join("relay.db"), &[]);
    let victim = User::setup(tmp.path(), "victim", &relay.url);
    let target = identity_of(&victim);
    let mut follow = Follow::start(&victim);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let attack = std::time::Duration::from_secs(6);
    let (fetched, refused) = rt.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..5u32 {
            let url = relay.url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = support::connect_as(&url, &support::kp_n(1000 + n)).await;
                let (mut ok, mut no) = (0u32, 0u32);
                let end = tokio::time::Instant::now() + attack;
                while tokio::time::Instant::now() < end {
                    match tokio::time::timeout(support::T, c.fetch_bundle(target)).await {
                        Ok(Ok(_)) => ok += 1,
                        Ok(Err(e)) if e.code().is_some() => no += 1,
                        Ok(Err(e)) => panic!("attacker connection failed: {e}"),
                        Err(_) => panic!("a fetch took more than {:?}", support::T),
                    }
                }
                (ok, no)
            }));
        }
        let mut total = (0, 0);
        for t in tasks {
            let (ok, no) = t.await.unwrap();
            total = (total.0 + ok, total.1 + no);
        }
        total
    });
    support::say(&format!(
        "drain: {fetched} bundles fetched, {refused} fetches refused in {attack:?}"
    ));
    assert!(
        fetched > 200,
        "the attack should drain more than a full set"
    );
    assert!(
        follow.running(),
        "sotto recv --follow stopped during the drain"
    );

    // A new contact starts a session with the victim; the follow shows the message.
    let carol = User::setup(tmp.path(), "carol", &relay.url);
    carol.ok(&["contact", "add", "victim", &victim.invite()]);
    carol.ok(&["send", "victim", "hello after the drain"]);
    assert!(
        follow.wait_for_text("hello after the drain", 20),
        "the victim did not show the new contact's first message"
    );
    assert!(follow.running(), "sotto recv --follow stopped");

    // The victim still holds one-time prekeys (it kept making new ones).
    let stolen = sotto_client::forensics::steal_profile(&victim.dir, PW.as_bytes()).unwrap();
    assert!(
        stolen.prekeys.one_time_prekey_count() > 0
            && stolen.prekeys.one_time_kem_prekey_count() > 0,
        "the victim holds no one-time prekeys: {:?}",
        stolen.prekeys
    );
    drop(follow);
}

/// A CA the test makes, issuing relay certificates for 127.0.0.1 with fresh keys.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sotto test CA");
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(
                params,
                rcgen::KeyPair::generate().unwrap(),
            )
            .unwrap(),
        }
    }
    /// Writes the CA certificate, and a relay certificate and key named `name`, to `dir`.
    fn files(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, self.issuer.pem()).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (ca, c, k)
    }
}

/// Over wss:// with a self-hosted CA: register (`--ca-file`), send and receive; the relay's
/// certificate replaced by one with a new key (valid for the same CA) is refused with a clear
/// error naming the way out; `sotto relay-trust` accepts it and the conversation continues.
#[test]
fn tls_with_a_self_hosted_ca_then_a_changed_relay_key_refused_and_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("relay.db");
    let ca = TestCa::new();
    let (ca_file, cert, key) = ca.files(tmp.path(), "one");
    let port = free_port();
    let url = format!("wss://127.0.0.1:{port}/");
    let tls = |c: &Path, k: &Path| {
        vec![
            "--tls-cert".to_owned(),
            c.display().to_string(),
            "--tls-key".to_owned(),
            k.display().to_string(),
        ]
    };
    let args = tls(&cert, &key);
    let relay = Relay::start_with(
        &db,
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let alice = User {
        dir: tmp.path().join("alice"),
    };
    alice.ok(&["init"]);
    // Without the CA: the certificate is not trusted, and the error says what to do.
    let err = alice.fails(&["register", "--relay", &url]);
    assert!(
        err.contains("--ca-file") && err.trim().lines().count() == 1,
        "{err}"
    );
    let out = alice.ok(&[
        "register",
        "--relay",
        &url,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ]);
    assert!(out.contains("relay TLS key (pinned)"), "{out}");
    let bob = User {
        dir: tmp.path().join("bob"),
    };
    bob.ok(&["init"]);
    bob.ok(&[
        "register",
        "--relay",
        &url,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ]);
    alice.ok(&["contact", "add", "bob", &bob.invite()]);
    bob.ok(&["contact", "add", "alice", &alice.invite()]);
    alice.ok(&["send", "bob", "over TLS"]);
    assert_eq!(texts(&bob.recv()), ["over TLS"]);

    // The relay restarts with a new key (a valid certificate from the same CA).
    relay.stop();
    let (_, cert2, key2) = ca.files(tmp.path(), "two");
    let args = tls(&cert2, &key2);
    let _relay = Relay::start_with(
        &db,
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = alice.fails(&["send", "bob", "to a relay with a new key"]);
    assert!(
        err.contains("TLS key changed") && err.contains("sotto relay-trust"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Accepted the documented way; the message queued meanwhile goes out.
    let out = alice.ok(&["relay-trust"]);
    assert!(out.contains("TLS key:") && out.contains("pinned"), "{out}");
    alice.ok(&["send", "bob", "after accepting the new key"]);
    // Bob accepts it with the other documented way.
    let err = bob.fails(&["recv"]);
    assert!(err.contains("TLS key changed"), "{err}");
    bob.ok(&["register", "--relay", &url, "--accept-new-relay-key"]);
    assert_eq!(
        texts(&bob.recv()),
        ["to a relay with a new key", "after accepting the new key"]
    );
}

/// Plain ws:// pins the relay id: a relay re-created with a new store on the same address is
/// refused, and accepted with `sotto relay-trust`.
#[test]
fn a_relay_with_a_new_id_is_refused_until_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let relay = Relay::start(&tmp.path().join("one.db"), port);
    let alice = User::setup(tmp.path(), "alice", &url);
    let pinned = alice.json(&["relay-trust", "--json"]);
    relay.stop();
    let _relay = Relay::start(&tmp.path().join("two.db"), port);
    let err = alice.fails(&["inbox"]);
    // `inbox` shows stored messages when the relay fails; a changed id is an error of its own.
    assert!(err.contains("relay's id changed"), "{err}");
    let out = alice.json(&["relay-trust", "--json"]);
    assert_eq!(out["old"]["relay_id"], pinned["new"]["relay_id"]);
    assert_ne!(out["new"]["relay_id"], out["old"]["relay_id"]);
    // A new relay knows nothing of her: registering there publishes her prekeys.
    alice.ok(&["register", "--relay", &url]);
    alice.ok(&["inbox"]);
}

/// A stranger's message full of terminal control sequences (ANSI CSI, OSC 52 clipboard write,
/// BEL, a carriage return, the one-byte C1 CSI, a bidi override) reaches the terminal only as
/// visible escapes, through `recv`, `inbox` and the sender's own history; JSON keeps the text
/// exact for programs.
#[test]
fn terminal_control_sequences_from_a_peer_are_shown_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = support::RelayProc::start(&tmp.path().join("relay.db"), &[]);
    let alice = User::setup(tmp.path(), "alice", &relay.url);
    let bob = User::setup(tmp.path(), "bob", &relay.url);
    alice.ok(&["contact", "add", "bob", &bob.invite()]);
    let hostile =
        "hi\u{1b}]52;c;cm0gLXJmIH4=\u{7} \u{1b}[2J\u{1b}[31mred\r\u{9b}1m \u{202e}gnp.exe\tend";
    alice.ok(&["send", "bob", hostile]);
    let forbidden = |out: &str| -> Vec<char> {
        out.chars()
            .filter(|c| sotto_client::text::is_unsafe_char(*c))
            .collect()
    };
    let recv = bob.ok(&["recv"]);
    assert!(
        forbidden(&recv).is_empty(),
        "raw controls in recv: {recv:?}"
    );
    assert!(
        recv.contains("hi\\x1b]52;c;cm0gLXJmIH4=\\x07 \\x1b[2J\\x1b[31mred\\x0d\\u{9b}1m \\u{202e}gnp.exe\tend"),
        "{recv:?}"
    );
    for (who, args) in [
        (&bob, &["inbox"][..]),
        (&alice, &["inbox", "bob"][..]),
        (&bob, &["contacts"][..]),
    ] {
        let out = who.ok(args);
        assert!(
            forbidden(&out).is_empty(),
            "raw controls in {args:?}: {out:?}"
        );
    }
    let json = bob.json(&["inbox", "--json"]);
    assert_eq!(json[0]["text"], hostile, "JSON keeps the exact text");
}
