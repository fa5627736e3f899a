//! Scene 6, forward secrecy: after the conversation the attacker steals Bob's whole profile and
//! passphrase and tries to decrypt everything it recorded. As a control, copies of Bob's state
//! stolen just before each delivery decrypt the same recordings (so the tool works, and what
//! protects the past is that the keys are gone).

use sotto_client::Client;
use sotto_protocol::IdentityKey;

use crate::thief::{Thief, contains};
use crate::world::{PASSPHRASE, World, inbox, introduce, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::name;

/// Scene 6.
pub struct ForwardSecrecy;

impl Scenario for ForwardSecrecy {
    fn id(&self) -> &'static str {
        "forward-secrecy"
    }
    fn title(&self) -> &'static str {
        "Forward secrecy"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "forward-secrecy",
        "Forward secrecy",
        "record the whole conversation; afterwards steal Bob's complete profile directory and his passphrase, extract every key (identity, prekeys, sessions) and decrypt the recordings",
        "none of the recorded messages to Bob decrypts with his current keys (as a control, copies of his state stolen just before each delivery decrypt them)",
    );
    o.headline = "steal Bob's profile + passphrase afterwards".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let (a_key, b_key) = (alice.identity(), bob.identity());
    let bob_dir = w.profile_dir("bob");
    let mut control = Control::default();

    ctx.say("      a conversation of 4 rounds, recorded by the attacker");
    let mut texts = Vec::new();
    for round in 1..=4 {
        for i in 1..=2 {
            let t = format!("fs round {round} message {i}: secret #{}", round * 10 + i);
            send(&mut alice, "bob", &t).await?;
            texts.push(t);
        }
        control.bob_sync(&w, &mut bob, &texts).await?;
        send(&mut bob, "alice", &format!("fs round {round}: reply")).await?;
        sync(&mut alice).await?;
    }
    control.bob_sync(&w, &mut bob, &texts).await?;
    let got = inbox(&bob, "alice")?
        .iter()
        .filter(|m| m.text.is_some())
        .count();
    o.check(
        got == texts.len(),
        format!("Bob read all {got} messages live"),
    );

    let recorded: Vec<Vec<u8>> = w
        .proxy
        .log()
        .into_iter()
        .filter(|f| f.kind == "Deliver" && f.who == Some(b_key) && f.peer == Some(a_key))
        .filter_map(|f| f.body)
        .collect();
    ctx.say(&format!(
        "      the attacker steals Bob's profile and passphrase; {} recorded ciphertexts to Bob",
        recorded.len()
    ));
    w.proxy.note(
        Some(b_key),
        "the attacker steals the profile and its passphrase",
    );
    let mut thief = Thief::steal(&bob_dir, PASSPHRASE)?;
    let sessions = thief.session_count();
    let after = recorded
        .iter()
        .filter(|b| thief.try_open(b).is_some())
        .count();
    o.check(
        after == 0 && !recorded.is_empty(),
        format!(
            "with Bob's stolen current state ({}, identity and prekeys) the attacker decrypts {after} of {} recorded messages",
            crate::count(sessions, "session", "sessions"),
            recorded.len()
        ),
    );
    o.check(
        control.opened == recorded.len() && control.texts == texts.len(),
        format!(
            "control: the same tool on copies of Bob's state stolen just before each delivery decrypts {} of {} (all {} texts found): the keys existed, and were deleted after use",
            control.opened,
            recorded.len(),
            control.texts
        ),
    );
    // Honesty: the profile also holds the history, which the passphrase opens.
    let history = Client::open(&bob_dir, PASSPHRASE)?
        .messages(None)?
        .iter()
        .filter(|m| m.text.is_some())
        .count();
    o.evidence.push(Evidence::Text(format!(
        "Residual risk, stated plainly: the stolen profile also contains Bob's local history ({history} messages in and out), which the passphrase opens. Forward secrecy protects the recorded ciphertexts, not what a client chose to keep; deleting history (or disappearing messages, not implemented) is what limits that."
    )));
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "forward-secrecy.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}

/// The control experiment: before each of Bob's syncs, steal his state and decrypt what that
/// sync delivers with it.
#[derive(Default)]
struct Control {
    opened: usize,
    texts: usize,
}

impl Control {
    async fn bob_sync(
        &mut self,
        w: &World,
        bob: &mut Client,
        texts: &[String],
    ) -> Result<(), Error> {
        let b_key: IdentityKey = bob.identity();
        let mut pre = Thief::steal(bob.dir(), PASSPHRASE)?;
        let mark = w.proxy.log().len();
        sync(bob).await?;
        for f in w.proxy.log()[mark..]
            .iter()
            .filter(|f| f.kind == "Deliver" && f.who == Some(b_key))
        {
            if let Some(b) = &f.body
                && let Some(pt) = pre.try_open(b)
            {
                self.opened += 1;
                if texts.iter().any(|t| contains(&pt, t.as_bytes())) {
                    self.texts += 1;
                }
            }
        }
        Ok(())
    }
}
