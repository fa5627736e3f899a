//! Checks for the `sotto-wire` frame decoders, shared by the `wire_frame` fuzz target and
//! `crates/wire/tests/corpus.rs`.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sotto_wire::{ClientFrame, RelayFrame};

/// `ClientFrame::decode` and `RelayFrame::decode` on the same bytes: each decoded frame encodes
/// back to the same bytes, and no bytes are both a client and a relay frame.
pub fn frame(data: &[u8]) {
    let client = ClientFrame::decode(data);
    let relay = RelayFrame::decode(data);
    if let Ok(frame) = &client {
        assert_eq!(frame.encode(), data, "client frame round trip");
        let _ = format!("{frame:?}");
    }
    if let Ok(frame) = &relay {
        assert_eq!(frame.encode(), data, "relay frame round trip");
        let _ = format!("{frame:?}");
    }
    assert!(
        client.is_err() || relay.is_err(),
        "bytes decode as both kinds of frame"
    );
}
