//! `sotto-ws-floor`: the benchmark floor. A bare tokio-tungstenite forwarder that speaks just
//! enough of the relay framing for `sotto bench relay` to drive it: it sends a dummy challenge,
//! trusts any `Authenticate` without checking the signature, forwards each `Send` to the named
//! recipient's socket as a `Deliver` and answers `Accepted` at once. No auth, no storage, no
//! limits: whatever the relay costs above this is the price of its guarantees.
//!
//! Usage: `sotto-ws-floor [ADDR]` (default `127.0.0.1:7879`).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use sotto_wire::{ChallengeIn, ClientFrame, DeliverIn, PrekeyCounts, RelayFrame, RelayId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Routes = Arc<Mutex<HashMap<[u8; 32], mpsc::Sender<Vec<u8>>>>>;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7879".into());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&addr).await?;
            println!(
                "sotto-ws-floor listening on ws://{}/",
                listener.local_addr()?
            );
            let routes: Routes = Arc::default();
            loop {
                let (tcp, _) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp, routes.clone()));
            }
        })
}

async fn connection(tcp: tokio::net::TcpStream, routes: Routes) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let challenge = RelayFrame::Challenge(ChallengeIn {
        relay_id: RelayId([0; 32]),
        nonce: [0; 32],
        max_frame_len: 0,
        max_body_len: 0,
    });
    if sink
        .send(Message::Binary(challenge.encode().into()))
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Binary(first.into())).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Binary(more.into())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut me = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(b) = msg else { continue };
        match ClientFrame::decode(&b) {
            Ok(ClientFrame::Authenticate(a)) => {
                let key = a.identity.to_bytes();
                routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, tx.clone());
                me = Some(a.identity);
                let _ = tx
                    .send(RelayFrame::AuthOk(PrekeyCounts::default()).encode())
                    .await;
                let _ = tx.send(RelayFrame::Drained.encode()).await;
            }
            Ok(ClientFrame::Send(s)) => {
                let Some(sender) = me else { continue };
                let to = routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(s.recipient.as_bytes())
                    .cloned();
                let id = s.message_id;
                if let Some(to) = to {
                    let d = RelayFrame::Deliver(DeliverIn {
                        delivery_id: 0,
                        sender,
                        message_id: s.message_id,
                        timestamp_ms: 0,
                        body: s.body,
                    });
                    let _ = to.send(d.encode()).await;
                }
                let _ = tx.send(RelayFrame::Accepted(id).encode()).await;
            }
            _ => {}
        }
    }
    if let Some(me) = me {
        routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(me.as_bytes());
    }
    writer.abort();
}
