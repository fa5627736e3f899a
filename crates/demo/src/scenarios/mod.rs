//! One module per property. Each builds its own relay, proxy and profiles, attacks, and returns
//! an [`Outcome`](crate::Outcome). To add a scene, write a module with a type implementing
//! [`Scenario`](crate::Scenario) and list it in [`all`].

use sotto_client::Client;

use crate::Outcome;

pub mod authentication;
pub mod availability;
pub mod confidentiality;
pub mod forward_secrecy;
pub mod groups;
pub mod integrity;
pub mod metadata;
pub mod post_compromise;
pub mod replay;

/// Every scenario, in the order the demo runs them.
pub fn all() -> Vec<Box<dyn crate::Scenario>> {
    vec![
        Box::new(confidentiality::Confidentiality),
        Box::new(integrity::Integrity),
        Box::new(replay::Replay),
        Box::new(availability::Availability),
        Box::new(authentication::Authentication),
        Box::new(forward_secrecy::ForwardSecrecy),
        Box::new(post_compromise::PostCompromise),
        Box::new(metadata::Metadata),
        Box::new(groups::Groups),
    ]
}

/// Records the display names of clients in the outcome.
pub(crate) fn name(o: &mut Outcome, c: &Client, name: &str) {
    o.names.push((c.identity(), name.to_owned()));
}

/// Whether any 8-byte window of `needle` (or all of it, if shorter) occurs in `hay`.
pub(crate) fn leaks(hay: &[u8], needle: &[u8]) -> bool {
    let w = needle.len().min(8);
    if w == 0 || hay.len() < w {
        return false;
    }
    needle.windows(w).any(|n| hay.windows(w).any(|h| h == n))
}

/// A message id (hex, as `compose` returns it) as bytes.
pub(crate) fn id_bytes(hex_id: &str) -> Result<[u8; 16], crate::Error> {
    hex::decode(hex_id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| crate::Error::Scene(format!("bad message id {hex_id}")))
}
