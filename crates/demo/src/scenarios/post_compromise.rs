//! Scene 7, post-compromise security: the attacker copies Alice's state mid-conversation and
//! follows along passively, decrypting what Alice receives; after one round trip (Alice's next
//! DH ratchet step with a fresh key) it is locked out again.

use crate::thief::{Thief, contains};
use crate::world::{PASSPHRASE, World, introduce, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::name;

/// Scene 7.
pub struct PostCompromise;

impl Scenario for PostCompromise {
    fn id(&self) -> &'static str {
        "post-compromise"
    }
    fn title(&self) -> &'static str {
        "Post-compromise security"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "post-compromise",
        "Post-compromise security",
        "steal Alice's state (profile + passphrase) mid-conversation, then passively decrypt every recorded message to her, following the ratchet",
        "the next message to Alice decrypts; after one round trip (Alice → Bob → Alice) new messages no longer do",
    );
    o.headline = "steal Alice's state mid-conversation".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let (a_key, b_key) = (alice.identity(), bob.identity());

    for i in 1..=2 {
        send(&mut alice, "bob", &format!("pcs warm-up {i} from Alice")).await?;
        sync(&mut bob).await?;
        send(&mut bob, "alice", &format!("pcs warm-up {i} from Bob")).await?;
        sync(&mut alice).await?;
    }
    sync(&mut bob).await?;
    ctx.say("      the attacker copies Alice's profile and passphrase mid-conversation");
    w.proxy.note(
        Some(a_key),
        "the attacker copies the profile and its passphrase",
    );
    let mut thief = Thief::steal(&w.profile_dir("alice"), PASSPHRASE)?;
    let seen = w.proxy.log().len();

    // Messages to Alice after the theft, in order; the thief follows each one.
    let mut rows = Vec::new();
    let mut cursor = seen;
    let mut follow =
        |log: &[crate::proxy::FrameLog], label: &str, text: &str, thief: &mut Thief| {
            let mut read_text = false;
            let mut opened = 0;
            let mut total = 0;
            for f in log[cursor..]
                .iter()
                .filter(|f| f.kind == "Deliver" && f.who == Some(a_key) && f.peer == Some(b_key))
            {
                total += 1;
                if let Some(b) = &f.body
                    && let Some(pt) = thief.try_open(b)
                {
                    opened += 1;
                    if contains(&pt, text.as_bytes()) {
                        read_text = true;
                    }
                }
            }
            cursor = log.len();
            rows.push(vec![
                label.to_owned(),
                text.to_owned(),
                format!("{opened}/{total}"),
                if read_text { "READ" } else { "no" }.to_owned(),
            ]);
            read_text
        };

    ctx.say("      Bob sends the next message; the thief tries it");
    let next = "pcs 1: the next message after the theft";
    send(&mut bob, "alice", next).await?;
    sync(&mut alice).await?;
    let read_next = follow(&w.proxy.log(), "next message to Alice", next, &mut thief);
    o.check(
        read_next,
        "the thief decrypted the next message to Alice (the compromise is real)",
    );

    ctx.say("      one round trip: Alice answers, Bob answers");
    send(&mut alice, "bob", "pcs: Alice answers").await?;
    sync(&mut bob).await?;
    let rt = "pcs 2: Bob's answer in the round trip";
    send(&mut bob, "alice", rt).await?;
    sync(&mut alice).await?;
    let read_rt = follow(
        &w.proxy.log(),
        "Bob's answer (closes the round trip)",
        rt,
        &mut thief,
    );

    ctx.say("      after the round trip: Bob sends 3 more; the thief tries them");
    let mut later_read = 0;
    for i in 3..=5 {
        let t = format!("pcs {i}: after the healing step");
        send(&mut bob, "alice", &t).await?;
        sync(&mut alice).await?;
        if follow(&w.proxy.log(), "after the round trip", &t, &mut thief) {
            later_read += 1;
        }
        send(&mut alice, "bob", &format!("pcs: Alice's reply {i}")).await?;
        sync(&mut bob).await?;
    }
    o.check(
        later_read == 0,
        format!("after the round trip the thief decrypted {later_read} of 3 new messages to Alice"),
    );
    o.check(
        true,
        format!(
            "measured: Bob's answer that closed the round trip was {} by the thief",
            if read_rt {
                "still read"
            } else {
                "already unreadable"
            }
        ),
    );
    o.evidence.push(Evidence::Table {
        caption: "What the thief with Alice's stolen state could decrypt (frames include receipts)"
            .into(),
        header: vec![
            "when".into(),
            "text".into(),
            "frames to Alice decrypted".into(),
            "text read".into(),
        ],
        rows,
    });
    o.evidence.push(Evidence::Text(
        "The thief here is passive. An active attacker holding the state could also impersonate Alice until her next ratchet step; a step needs a fresh key the thief never sees, so both end with the round trip.".into(),
    ));
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "post-compromise.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}
