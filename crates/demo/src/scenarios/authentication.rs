//! Scene 5, authentication: an honest run with matching safety numbers; then a malicious relay
//! substitutes its own prekey bundle for Bob's (rejected: the bundle is not signed by Bob); then
//! a man in the middle who also swapped the invites at first contact (it works against users
//! who never compare numbers, and the safety numbers show it); and a verified contact whose
//! key changes is blocked from sending.

use std::sync::{Arc, Mutex};

use sotto_client::rng::OsRng;
use sotto_client::{AddOutcome, DeliveryState};
use sotto_protocol::{IdentityKeyPair, PrekeyStore};
use sotto_wire::{BundleIn, PrekeyRecord, RelayFrame};

use crate::proxy::{Dir, Verdict};
use crate::world::{World, inbox, introduce, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::name;

/// Scene 5.
pub struct Authentication;

impl Scenario for Authentication {
    fn id(&self) -> &'static str {
        "authentication"
    }
    fn title(&self) -> &'static str {
        "Authentication / MITM"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

const SECRET: &str = "Dave, the meeting moved to Friday";

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "authentication",
        "Authentication / MITM",
        "as a malicious relay, substitute Mallory's prekey bundle for Bob's; as a full man in the middle, also swap the invites at first contact; push a new key for a verified contact",
        "the honest run shows matching safety numbers; a substituted bundle is refused; under the full MITM the two sides' safety numbers differ and typing the peer's number fails; a verified contact with a changed key refuses to send",
    );
    o.headline = "substitute Bob's bundle; swap invites (MITM)".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    let mut carol = w.client("carol").await?;
    let mut dave = w.client("dave").await?;
    let mut mallory = w.client("mallory").await?;
    for (c, n) in [
        (&alice, "alice"),
        (&bob, "bob"),
        (&carol, "carol"),
        (&dave, "dave"),
        (&mallory, "mallory"),
    ] {
        name(&mut o, c, n);
    }
    let mut table = Vec::new();

    // A. The honest run.
    ctx.say("      honest run: Alice and Bob compare safety numbers and verify each other");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let sn_ab = alice.safety_number("bob")?;
    let sn_ba = bob.safety_number("alice")?;
    table.push(vec![
        "honest: Alice's number for bob".into(),
        sn_ab.grouped(),
    ]);
    table.push(vec![
        "honest: Bob's number for alice".into(),
        sn_ba.grouped(),
    ]);
    o.check(
        sn_ab.digits() == sn_ba.digits(),
        "honest run: Alice's and Bob's safety numbers match",
    );
    let v1 = alice.verify("bob", Some(sn_ba.digits())).is_ok();
    let v2 = bob.verify("alice", Some(sn_ab.digits())).is_ok();
    o.check(
        v1 && v2,
        "honest run: each typed the other's number and verification succeeded",
    );
    send(&mut alice, "bob", "auth: verified hello").await?;
    sync(&mut bob).await?;
    o.check(
        inbox(&bob, "alice")?
            .iter()
            .any(|m| m.text.as_deref() == Some("auth: verified hello")),
        "honest run: the verified conversation works",
    );

    // B. Bundle substitution by a malicious relay.
    ctx.say("      malicious relay: Carol asks for Bob's bundle and gets Mallory's keys instead");
    introduce(&mut carol, "carol", &mut bob, "bob")?;
    let (c_key, b_key) = (carol.identity(), bob.identity());
    let mut rng = OsRng::new()?;
    let m_id = IdentityKeyPair::generate(&mut rng);
    let mut m_store = PrekeyStore::new();
    let spk = m_store.rotate_signed_prekey(&mut rng, &m_id);
    let otk = m_store.generate_one_time_prekeys(&mut rng, 1);
    let kem = m_store.rotate_last_resort_kem_prekey(&mut rng, &m_id);
    let fake = RelayFrame::Bundle(BundleIn {
        identity: b_key,
        signed_prekey: PrekeyRecord {
            id: spk.id,
            blob: spk.encode(),
        },
        one_time_x25519: otk.first().map(|k| PrekeyRecord {
            id: k.id,
            blob: k.encode(),
        }),
        kem: PrekeyRecord {
            id: kem.id,
            blob: kem.encode(),
        },
        kem_is_last_resort: true,
    })
    .encode();
    let substituted = Arc::new(Mutex::new(0u32));
    {
        let substituted = substituted.clone();
        w.proxy.set_policy(Box::new(move |ic| {
            if ic.dir == Dir::ToClient
                && ic.who == Some(c_key)
                && let Some(RelayFrame::Bundle(b)) = ic.relay_frame()
                && b.identity == b_key
            {
                if let Ok(mut n) = substituted.lock() {
                    *n += 1;
                }
                return Verdict::Replace(
                    vec![fake.clone()],
                    "substituted Mallory's prekeys for Bob's".into(),
                );
            }
            Verdict::Forward
        }));
    }
    let id = carol.compose("bob", "auth: hello Bob, it's Carol", false)?;
    sync(&mut carol).await?;
    w.proxy.clear_policy();
    let m = carol
        .messages(Some("bob"))?
        .into_iter()
        .find(|m| m.id == id);
    let desc = m
        .as_ref()
        .map(crate::describe)
        .unwrap_or_else(|| "missing".into());
    let n_sub = substituted.lock().map(|n| *n).unwrap_or(0);
    let sends_from_carol = w
        .proxy
        .log()
        .iter()
        .filter(|f| f.kind == "Send" && f.who == Some(c_key))
        .count();
    o.check(
        n_sub >= 1
            && m.as_ref().is_some_and(|m| {
                m.state == DeliveryState::Failed
                    && m.error.as_deref().is_some_and(|e| e.contains("signature"))
            })
            && sends_from_carol == 0,
        format!("substituted bundle refused: Carol's message {desc}; nothing was encrypted or sent ({sends_from_carol} Send frames)"),
    );

    // C. Full man in the middle: invites swapped at first contact, Mallory's real bundle.
    ctx.say("      full MITM: Carol and Dave received Mallory's invites instead of each other's");
    ctx.say("      (their safety numbers then share Mallory's half: compare all 12 groups)");
    let mallory_invite = mallory.invite()?;
    carol.add_contact("dave", &mallory_invite)?;
    dave.add_contact("carol", &mallory_invite)?;
    let ci = carol.invite()?;
    let di = dave.invite()?;
    mallory.add_contact("carol", &ci)?;
    mallory.add_contact("dave", &di)?;
    send(&mut carol, "dave", SECRET).await?;
    sync(&mut mallory).await?;
    let read = inbox(&mallory, "carol")?
        .iter()
        .any(|m| m.text.as_deref() == Some(SECRET));
    send(&mut mallory, "dave", SECRET).await?;
    sync(&mut dave).await?;
    let relayed = inbox(&dave, "carol")?
        .iter()
        .any(|m| m.text.as_deref() == Some(SECRET));
    o.check(
        read && relayed,
        "without verification the MITM works: Mallory read Carol's message and passed it on to Dave (why safety numbers matter)",
    );
    let sn_cd = carol.safety_number("dave")?;
    let sn_dc = dave.safety_number("carol")?;
    table.push(vec![
        "MITM: Carol's number for dave".into(),
        sn_cd.grouped(),
    ]);
    table.push(vec![
        "MITM: Dave's number for carol".into(),
        sn_dc.grouped(),
    ]);
    // Each half of a safety number is one party's fingerprint (the smaller first): both numbers
    // contain Mallory's half, so they partly match, in the same or in different groups.
    let halves = |d: &str| [d[..30].to_owned(), d[30..].to_owned()];
    let (hc, hd) = (halves(sn_cd.digits()), halves(sn_dc.digits()));
    let groups = |i: usize| if i == 0 { "groups 1-6" } else { "groups 7-12" };
    let shared: Vec<String> = (0..2)
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .filter(|&(i, j)| hc[i] == hd[j])
        .map(|(i, j)| {
            format!(
                "{} of Carol's number are {} of Dave's",
                groups(i),
                groups(j)
            )
        })
        .collect();
    o.check(
        sn_cd.digits() != sn_dc.digits() && shared.len() == 1,
        format!(
            "under the MITM Carol's and Dave's safety numbers differ, yet half of them is the same: {} (Mallory's fingerprint, the key each of them was given), so compare all 12 groups",
            shared.join("; ")
        ),
    );
    let refused = matches!(
        carol.verify("dave", Some(sn_dc.digits())),
        Err(sotto_client::Error::SafetyNumberMismatch)
    );
    let still_unverified = carol
        .contacts()?
        .iter()
        .any(|c| c.name == "dave" && !c.verified);
    o.check(
        refused && still_unverified,
        "Carol typing Dave's number is refused (\"safety number does not match\"); dave stays unverified",
    );

    // D. A verified contact's key changes: sending is refused.
    ctx.say("      the attacker gets Alice to accept a new key for her verified contact bob");
    let outcome = alice.add_contact("bob", &mallory_invite)?;
    let blocked = matches!(
        alice.compose("bob", "auth: are you still you?", false),
        Err(sotto_client::Error::KeyChangeBlocked(_))
    );
    o.check(
        outcome == AddOutcome::KeyChanged { blocked: true } && blocked,
        format!(
            "verified contact with a new key: {}, and Alice's client refuses to send to bob",
            match outcome {
                AddOutcome::KeyChanged { blocked: true } =>
                    "the key change is recorded and sending is blocked until bob is verified again",
                AddOutcome::KeyChanged { blocked: false } =>
                    "the key was replaced WITHOUT blocking",
                _ => "the new key was NOT recognised as a key change",
            }
        ),
    );
    o.evidence.push(Evidence::Table {
        caption: "Safety numbers (60 digits) each side computed".into(),
        header: vec!["who".into(), "safety number".into()],
        rows: table,
    });
    o.evidence.push(Evidence::Text(
        "Compare all 12 groups. A safety number is the two parties' 30-digit fingerprints side by side, the smaller first: groups 1-6 are one person's key, groups 7-12 the other's. A man in the middle gives each victim his own key, so each victim's number still contains the attacker's fingerprint in one half: the two numbers share six groups (in the same place or not) and can still be a MITM. `sotto verify` says the same.".into(),
    ));
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "authentication.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}
