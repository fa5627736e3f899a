//! Each property of `sotto demo`, run as its scene and checked on its outcome: not only that the
//! scene passed, but the specific observations that make it pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sotto_demo::{Ctx, Outcome, scenarios};

async fn scene(id: &str) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(Some(dir.path().to_owned()), |_| {});
    let all = scenarios::all();
    let s = all.iter().find(|s| s.id() == id).unwrap();
    let o = s.run(&ctx).await.unwrap();
    for c in &o.observed {
        eprintln!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
    }
    (o, dir)
}

fn ok(o: &Outcome, needle: &str) {
    let c = o
        .find(needle)
        .unwrap_or_else(|| panic!("no observation containing {needle:?}"));
    assert!(c.ok, "observation not as expected: {}", c.what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidentiality_no_plaintext_on_the_wire() {
    let (o, dir) = scene("confidentiality").await;
    assert!(o.pass);
    ok(&o, "raw capture");
    ok(&o, ": 0 of 5 texts found");
    ok(&o, "control: the same search finds");
    assert!(dir.path().join("confidentiality.pcap").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_every_flip_is_rejected_and_the_session_survives() {
    let (o, _dir) = scene("integrity").await;
    assert!(o.pass);
    ok(&o, "tampered bundle");
    ok(&o, "initial message: one bit of EK_A");
    ok(&o, "ratchet header");
    ok(&o, "ciphertext: one bit");
    ok(&o, "forged message");
    ok(&o, "the relay kept running");
    ok(&o, "the session keeps working");
    // The proxy really modified frames on the way.
    assert!(
        o.log
            .iter()
            .filter(|f| f.action.starts_with("modified"))
            .count()
            >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_rejected_as_a_duplicate() {
    let (o, _dir) = scene("replay").await;
    assert!(o.pass);
    ok(&o, "3 times");
    ok(&o, "shows the request once");
    ok(&o, "rejected by the ratchet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_survives_a_dropped_client_and_a_killed_relay() {
    let (o, _dir) = scene("availability").await;
    assert!(o.pass);
    ok(
        &o,
        "after reconnecting Bob has 6/6 messages, in the order sent",
    );
    ok(
        &o,
        "after the restart Bob has 9/9 messages, in the order sent",
    );
    ok(&o, "the relay process is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_mitm_is_visible_in_safety_numbers() {
    let (o, _dir) = scene("authentication").await;
    assert!(o.pass);
    ok(&o, "safety numbers match");
    ok(&o, "substituted bundle refused");
    ok(&o, "safety numbers differ");
    ok(&o, "refuses to send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_secrecy_stolen_profile_cannot_read_the_past() {
    let (o, _dir) = scene("forward-secrecy").await;
    assert!(o.pass);
    let c = o.find("with Bob's stolen current state").unwrap();
    assert!(c.ok && c.what.contains("decrypts 0 of"), "{}", c.what);
    ok(&o, "control:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_compromise_heals_after_a_round_trip() {
    let (o, _dir) = scene("post-compromise").await;
    assert!(o.pass);
    ok(&o, "decrypted the next message");
    ok(&o, "decrypted 0 of 3 new messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_relay_sees_who_when_and_size_but_not_content() {
    let (o, _dir) = scene("metadata").await;
    assert!(o.pass);
    ok(&o, "content: 0 of");
    ok(&o, "hidden within a bucket");
    assert!(o.evidence.iter().any(|e| matches!(
        e,
        sotto_demo::Evidence::Table { caption, rows, .. }
            if caption.contains("relay's-eye") && rows.len() >= 5
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_selects_one_scene_and_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(Some(dir.path().to_owned()), |_| {});
    let out = sotto_demo::run(&ctx, Some("replay")).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, "replay");
    sotto_demo::report::write(dir.path(), &out).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(md.contains("| # | property | attack | checks | result |"));
    assert!(md.contains("**PASS**"));
    assert!(html.contains("<svg") && html.contains("replay.pcap"));
    assert!(sotto_demo::report::summary(&out).contains("1/1 properties hold"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_removal_late_member_injection_and_stolen_state() {
    let (o, dir) = scene("groups").await;
    ok(&o, "1. Bob and Carol read Alice's first group message");
    ok(&o, "2. control: before the removal");
    ok(&o, "Alice and Bob both rotated");
    ok(&o, "2. Bob reads the first message after the removal");
    ok(&o, "her client cannot read it");
    ok(&o, "pre-removal state cannot read it either");
    ok(&o, "3. control: Dave, added later, reads");
    let c = o.find("replayed to Dave's client").unwrap();
    assert!(c.ok && c.what.contains(": 0 read"), "{}", c.what);
    let c = o.find("with Dave's whole group state").unwrap();
    assert!(c.ok && c.what.contains("decrypt 0 of 3"), "{}", c.what);
    ok(&o, "4. Eve, added to the fan-out by the relay");
    let c = o.find("dropped with a GroupWarning").unwrap();
    assert!(
        c.ok && c.what.contains("not on the verified roster"),
        "{}",
        c.what
    );
    let c = o.find("sent Eve").unwrap();
    assert!(c.ok && c.what.contains("sent Eve 0 pairwise"), "{}", c.what);
    ok(&o, "reads the next group message");
    ok(&o, "everyone rotated");
    ok(&o, "after the rotation the thief");
    assert!(o.pass);
    // The relay really did it: a fan-out modified twice (carol, eve), frames injected.
    assert_eq!(
        o.log
            .iter()
            .filter(|f| f.kind == "SendMulti" && f.action.starts_with("modified"))
            .count(),
        2
    );
    assert!(dir.path().join("groups.pcap").exists());
}
