//! Group chats through the CLI as users run them: a real `sotto relay` process and real `sotto`
//! client processes. Three members talk; one is removed and reads nothing more; a member added
//! later sees nothing from before; only the owner can change the roster. (The cryptographic
//! versions of these claims, with a malicious relay handing ciphertexts to the removed or late
//! member, are in `crates/client/src/group.rs` and `crates/protocol/tests/groups.rs`.)

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

fn group_texts(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "group_message")
        .map(|m| m["text"].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

fn group_events(out: &str, kind: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == kind)
        .collect()
}

#[test]
fn three_members_send_remove_add_and_only_the_owner_changes_the_roster() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let _relay = Relay::start(&tmp.path().join("relay.db"), port);
    let alice = User::setup(tmp.path(), "alice", &url);
    let bob = User::setup(tmp.path(), "bob", &url);
    let carol = User::setup(tmp.path(), "carol", &url);
    let dave = User::setup(tmp.path(), "dave", &url);
    for (name, u) in [("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        alice.ok(&["contact", "add", name, &u.invite()]);
    }
    bob.ok(&["contact", "add", "dave", &dave.invite()]);

    alice.ok(&["group", "create", "team"]);
    alice.ok(&["group", "add", "team", "bob"]);
    alice.ok(&["group", "add", "team", "carol"]);
    // Alice is not a verified contact of theirs: the invite waits for their consent.
    for u in [&bob, &carol] {
        let out = u.ok(&["recv", "--json"]);
        assert_eq!(group_events(&out, "group_invite").len(), 1, "{out}");
        assert!(u.ok(&["group", "invites"]).contains("team"));
        u.ok(&["group", "accept", "team"]);
    }
    // Everyone receives the roster and hands out sender keys (pairwise), until settled.
    for u in [&bob, &carol, &alice, &bob] {
        let out = u.ok(&["recv", "--json"]);
        assert!(group_events(&out, "group_warning").is_empty(), "{out}");
    }
    let members = bob.json(&["group", "members", "team", "--json"]);
    assert_eq!(
        members[0]["members"].as_array().unwrap().len(),
        3,
        "{members}"
    );
    assert_eq!(members[0]["members"][0]["is_owner"], true);

    alice.ok(&["group", "send", "team", "hello team"]);
    assert_eq!(group_texts(&bob.ok(&["recv", "--json"])), ["hello team"]);
    assert_eq!(group_texts(&carol.ok(&["recv", "--json"])), ["hello team"]);
    bob.ok(&["group", "send", "team", "hi from bob"]);
    assert_eq!(group_texts(&alice.ok(&["recv", "--json"])), ["hi from bob"]);
    assert_eq!(group_texts(&carol.ok(&["recv", "--json"])), ["hi from bob"]);

    // Only the owner changes the roster.
    assert!(
        bob.fails(&["group", "add", "team", "dave"])
            .contains("only the owner")
    );

    // Carol is removed: she is told, and reads nothing sent afterwards.
    alice.ok(&["group", "remove", "team", "carol"]);
    let out = carol.ok(&["recv", "--json"]);
    let changed = group_events(&out, "group_changed");
    assert_eq!(changed[0]["change"], "you were removed", "{out}");
    bob.ok(&["recv"]); // applies the removal, rotates, sends his new key to Alice
    alice.ok(&["recv"]);
    alice.ok(&["group", "send", "team", "carol cannot read this"]);
    bob.ok(&["group", "send", "team", "nor this"]);
    assert_eq!(
        group_texts(&bob.ok(&["recv", "--json"])),
        ["carol cannot read this"]
    );
    assert_eq!(group_texts(&alice.ok(&["recv", "--json"])), ["nor this"]);
    assert!(group_texts(&carol.ok(&["recv", "--json"])).is_empty());
    assert!(
        carol
            .fails(&["group", "send", "team", "x"])
            .contains("not a member")
    );
    let inbox = carol.ok(&["inbox"]);
    assert!(!inbox.contains("cannot read this"), "{inbox}");

    // Dave joins later: he reads what is sent from now on, nothing from before.
    alice.ok(&["group", "add", "team", "dave"]);
    let out = dave.ok(&["recv", "--json"]);
    assert_eq!(group_events(&out, "group_invite").len(), 1, "{out}");
    dave.ok(&["group", "accept", "team"]);
    for u in [&dave, &bob, &alice, &dave] {
        let out = u.ok(&["recv", "--json"]);
        assert!(group_events(&out, "group_warning").is_empty(), "{out}");
    }
    alice.ok(&["group", "send", "team", "welcome dave"]);
    bob.ok(&["group", "send", "team", "hi dave"]);
    let got = group_texts(&dave.ok(&["recv", "--json"]));
    assert_eq!(got, ["welcome dave", "hi dave"]);
    let inbox = dave.ok(&["inbox"]);
    assert!(
        !inbox.contains("hello team") && !inbox.contains("carol cannot"),
        "{inbox}"
    );
    // `inbox GROUP` shows that group's history, also as JSON.
    let inbox = dave.ok(&["inbox", "team", "--offline"]);
    assert!(
        inbox.contains("welcome dave") && inbox.contains("hi dave"),
        "{inbox}"
    );
    let json = dave.json(&["inbox", "team", "--offline", "--json"]);
    let texts: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["welcome dave", "hi dave"], "{json}");
    let roster = alice.json(&["group", "members", "team", "--json"]);
    let names: Vec<&str> = roster[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["you", "bob", "dave"]);

    // Bob leaves; the group goes on without him.
    bob.ok(&["group", "leave", "team"]);
    for u in [&alice, &dave, &alice] {
        u.ok(&["recv"]);
    }
    alice.ok(&["group", "send", "team", "just us"]);
    assert_eq!(group_texts(&dave.ok(&["recv", "--json"])), ["just us"]);
    // Bob still gets what was sent while he was a member, not what came after he left.
    assert_eq!(group_texts(&bob.ok(&["recv", "--json"])), ["welcome dave"]);
}

fn relay_metric(port: u16, series: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const NO_BUNDLE: &str = "sotto_relay_rejections_total{reason=\"no_bundle\"}";

/// Issue 12 item 7: a stranger's invite listing 255 identities. Before the fix the victim joined
/// at once, created 254 contacts, fetched 254 bundles (draining third parties' one-time keys)
/// and sent each a sender key.
#[test]
fn a_strangers_invite_listing_255_identities_creates_nothing_until_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let _relay = Relay::start(&tmp.path().join("relay.db"), port);
    let victim = User::setup(tmp.path(), "victim", &url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The stranger: an in-process client listing the victim and 253 identities nobody knows.
    let mut stranger = sotto_client::Client::init(
        &tmp.path().join("stranger"),
        b"pw",
        sotto_client::KdfParams::INSECURE_TEST,
    )
    .unwrap();
    rt.block_on(stranger.register(&url)).unwrap();
    stranger.add_contact("victim", &victim.invite()).unwrap();
    let mut names = vec!["victim".to_owned()];
    for i in 0..253u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        seed[4] = 0xAB;
        let id = sotto_protocol::IdentityKeyPair::from_seed(&seed).public();
        let invite = sotto_client::Invite {
            identity: id,
            relay: url.clone(),
        }
        .encode()
        .unwrap();
        let name = format!("third-{i}");
        stranger.add_contact(&name, &invite).unwrap();
        names.push(name);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    stranger.group_create_with("free-stuff", &refs).unwrap();
    // Its invite to the victim is the first entry of its outbox.
    rt.block_on(async {
        stranger.sync().await.unwrap();
        stranger.disconnect().await;
    });
    let fetch_failures = relay_metric(port, NO_BUNDLE);

    let out = victim.ok(&["recv", "--json"]);
    let invites = group_events(&out, "group_invite");
    assert_eq!(invites.len(), 1, "{out}");
    assert_eq!(invites[0]["members"], 255);
    let contacts = victim.json(&["contacts", "--json"]);
    assert_eq!(
        contacts.as_array().unwrap().len(),
        1,
        "only the stranger itself, filed as an unknown sender: {contacts}"
    );
    assert_eq!(
        relay_metric(port, NO_BUNDLE),
        fetch_failures,
        "the victim fetched no bundle"
    );
    assert!(
        victim
            .json(&["group", "members", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let held = victim.json(&["group", "invites", "--json"]);
    assert_eq!(held[0]["members"], 255, "{held}");
    assert!(
        victim
            .ok(&["inbox"])
            .contains("group invite waiting: free-stuff")
    );
    // A second recv changes nothing.
    victim.ok(&["recv"]);
    assert_eq!(
        victim
            .json(&["contacts", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Accepting is the consent: now it joins, makes contacts and fetches bundles.
    victim.ok(&["group", "accept", "free-stuff"]);
    assert_eq!(
        victim
            .json(&["contacts", "--json"])
            .as_array()
            .unwrap()
            .len(),
        254
    );
    assert!(
        relay_metric(port, NO_BUNDLE) >= fetch_failures + 100.0,
        "after consent the victim fetches the members' bundles (the check above can fail)"
    );
    assert_eq!(
        victim.json(&["group", "members", "free-stuff", "--json"])[0]["members"]
            .as_array()
            .unwrap()
            .len(),
        255
    );
}

fn fake_group_message(group_id: &[u8], epoch: u64, len: usize) -> Vec<u8> {
    let mut m = vec![0x07];
    m.extend_from_slice(group_id);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&[0x5A; 32]);
    m.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0]);
    m.resize(len, 0xEE);
    m
}

/// Issue 12 item 7: non-members filled a member's pending list (500 × 96 KiB, resealed on every
/// group event). Now only roster members' messages wait, at most 64 per sender.
#[test]
fn non_members_cannot_fill_the_pending_list_over_a_real_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let _relay = Relay::start(&tmp.path().join("relay.db"), port);
    let victim = User::setup(tmp.path(), "victim", &url);
    let member = sotto_protocol::IdentityKeyPair::from_seed(&[0x31; 32]);
    let outsider = sotto_protocol::IdentityKeyPair::from_seed(&[0x32; 32]);
    let invite = sotto_client::Invite {
        identity: member.public(),
        relay: url.clone(),
    }
    .encode()
    .unwrap();
    victim.ok(&["contact", "add", "m", &invite]);
    victim.ok(&["group", "create", "mine", "m"]);
    let info = victim.json(&["group", "members", "mine", "--json"]);
    let gid = hex_decode(info[0]["id"].as_str().unwrap());
    let victim_id = victim_identity(&victim);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (who, n) in [(&outsider, 120u8), (&member, 100u8)] {
            let mut c = sotto_transport::RelayClient::connect(&url, who, None)
                .await
                .unwrap();
            for i in 0..n {
                c.send_multi(
                    vec![victim_id],
                    sotto_wire::MessageId([i; 16]),
                    fake_group_message(&gid, 40, 300),
                )
                .await
                .unwrap();
            }
            c.close().await;
        }
    });
    let out = victim.ok(&["recv", "--json"]);
    let warnings = group_events(&out, "group_warning");
    assert!(
        warnings.len() >= 120
            && warnings.iter().all(|w| w["warning"]
                .as_str()
                .unwrap()
                .contains("not on the verified roster")),
        "{} warnings",
        warnings.len()
    );
    let info = victim.json(&["group", "members", "mine", "--json"]);
    assert_eq!(
        info[0]["pending"], 64,
        "the member's share, and nothing of the outsider's"
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The user's identity key, from their invite.
fn victim_identity(u: &User) -> sotto_protocol::IdentityKey {
    sotto_client::Invite::decode(&u.invite()).unwrap().identity
}
