//! A small async client for the relay protocol, used by the tests, the load generator and the
//! sotto client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sotto_relay::client::ClientError> {
//! use sotto_protocol::IdentityKeyPair;
//! use sotto_relay::client::RelayClient;
//! use sotto_wire::MessageId;
//!
//! let alice = IdentityKeyPair::from_seed(&[1; 32]);
//! let bob = IdentityKeyPair::from_seed(&[2; 32]);
//! let mut a = RelayClient::connect("ws://127.0.0.1:7878/", &alice, None).await?;
//! let mut b = RelayClient::connect("ws://127.0.0.1:7878/", &bob, None).await?;
//! a.send(bob.public(), MessageId([1; 16]), b"ciphertext".to_vec()).await?; // durable now
//! let m = b.next_delivery().await?;
//! b.ack(vec![m.delivery_id]).await?; // the relay deletes it
//! # Ok(()) }
//! ```

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_wire::{
    AuthenticateOut, BundleIn, ClientFrame, DeliverIn, ErrorCode, ErrorContext, ErrorIn,
    MAX_FRAME_LEN, MessageId, PrekeyCounts, RelayFrame, RelayId, SendOut, UploadPrekeysOut,
};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The client's WebSocket.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP or WebSocket connection could not be made.
    #[error("cannot connect to the relay: {0}")]
    Connect(String),
    /// The connection closed or failed.
    #[error("connection to the relay closed")]
    Closed,
    /// The relay rejected the request.
    #[error("relay rejected the request: {}", .0.code)]
    Rejected(ErrorIn),
    /// The relay sent something that is not a valid frame, or not the expected one.
    #[error("unexpected reply from the relay: {0}")]
    Protocol(&'static str),
}

impl ClientError {
    /// The relay's error code, if this is a rejection.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rejected(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The WebSocket settings the client uses: frames up to the protocol limit, a small read buffer.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// An authenticated connection to a relay.
pub struct RelayClient {
    ws: ClientSocket,
    identity: IdentityKey,
    relay_id: RelayId,
    counts: PrekeyCounts,
    inbox: VecDeque<RelayFrame>,
}

impl RelayClient {
    /// Opens a WebSocket to `url` (`ws://host:port/`) without authenticating.
    pub async fn connect_raw(url: &str) -> Result<ClientSocket, ClientError> {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(socket_config()), true)
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(ws)
    }

    /// Connects and authenticates as `keypair` (with `invite` for a new identity on an
    /// invite-only relay). Returns once the relay has said `AuthOk`; the backlog follows.
    pub async fn connect(
        url: &str,
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
    ) -> Result<Self, ClientError> {
        let ws = Self::connect_raw(url).await?;
        Self::authenticate(ws, keypair, invite).await
    }

    /// Authenticates on an open socket.
    pub async fn authenticate(
        ws: ClientSocket,
        keypair: &IdentityKeyPair,
        invite: Option<Vec<u8>>,
    ) -> Result<Self, ClientError> {
        let mut c = Self {
            ws,
            identity: keypair.public(),
            relay_id: RelayId([0; 32]),
            counts: PrekeyCounts::default(),
            inbox: VecDeque::new(),
        };
        let challenge = match c.read().await? {
            RelayFrame::Challenge(ch) => ch,
            RelayFrame::Error(e) => return Err(ClientError::Rejected(e)),
            _ => return Err(ClientError::Protocol("expected a challenge")),
        };
        c.relay_id = challenge.relay_id;
        let auth = AuthenticateOut::sign(keypair, &challenge.relay_id, &challenge.nonce, invite);
        c.send_frame(&ClientFrame::Authenticate(auth)).await?;
        match c.read().await? {
            RelayFrame::AuthOk(counts) => c.counts = counts,
            RelayFrame::Error(e) => return Err(ClientError::Rejected(e)),
            _ => return Err(ClientError::Protocol("expected AuthOk")),
        }
        Ok(c)
    }

    /// The authenticated identity.
    pub fn identity(&self) -> IdentityKey {
        self.identity
    }

    /// The relay's id (pin it to detect a different relay).
    pub fn relay_id(&self) -> RelayId {
        self.relay_id
    }

    /// One-time prekey counts reported at authentication.
    pub fn prekey_counts(&self) -> PrekeyCounts {
        self.counts
    }

    /// Sends one frame.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.ws
            .send(Message::Binary(frame.encode().into()))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Reads the next frame from the socket (ignoring the inbox).
    async fn read(&mut self) -> Result<RelayFrame, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    return RelayFrame::decode(&b)
                        .map_err(|_| ClientError::Protocol("malformed frame"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    return Err(ClientError::Closed);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next frame: first any buffered while waiting for a reply, then from the socket.
    pub async fn recv_frame(&mut self) -> Result<RelayFrame, ClientError> {
        match self.inbox.pop_front() {
            Some(f) => Ok(f),
            None => self.read().await,
        }
    }

    /// Reads until `pick` accepts a frame; other frames are kept for [`Self::recv_frame`].
    /// A fatal error frame ends the wait.
    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&RelayFrame) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        loop {
            let f = self.read().await?;
            if let Some(r) = pick(&f) {
                return r;
            }
            if let RelayFrame::Error(e) = &f
                && e.code.is_fatal()
            {
                return Err(ClientError::Rejected(*e));
            }
            self.inbox.push_back(f);
        }
    }

    /// Sends one message to several recipients (frame `0x47`, a group fan-out) and waits until
    /// the relay stored it for all of them (`Ok`), or reports the first failure (the entries for
    /// the other recipients are stored all the same).
    pub async fn send_multi(
        &mut self,
        recipients: Vec<IdentityKey>,
        message_id: MessageId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::SendMulti(sotto_wire::SendMultiOut {
            recipients,
            message_id,
            body,
        }))
        .await?;
        self.wait_for(|f| match f {
            RelayFrame::Accepted(id) if *id == message_id => Some(Ok(())),
            RelayFrame::Error(e) if e.context == ErrorContext::Message(message_id) => {
                Some(Err(ClientError::Rejected(*e)))
            }
            _ => None,
        })
        .await
    }

    /// Sends a message and waits until the relay has stored it durably.
    pub async fn send(
        &mut self,
        recipient: IdentityKey,
        message_id: MessageId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Send(SendOut {
            recipient,
            message_id,
            body,
        }))
        .await?;
        self.wait_for(|f| match f {
            RelayFrame::Accepted(id) if *id == message_id => Some(Ok(())),
            RelayFrame::Error(e) if e.context == ErrorContext::Message(message_id) => {
                Some(Err(ClientError::Rejected(*e)))
            }
            _ => None,
        })
        .await
    }

    /// Uploads prekeys and returns the counts stored afterwards.
    pub async fn upload_prekeys(
        &mut self,
        upload: UploadPrekeysOut,
    ) -> Result<PrekeyCounts, ClientError> {
        self.send_frame(&ClientFrame::UploadPrekeys(upload)).await?;
        self.wait_for(|f| match f {
            RelayFrame::PrekeysStored(c) => Some(Ok(*c)),
            RelayFrame::Error(e) if e.context == ErrorContext::None => {
                Some(Err(ClientError::Rejected(*e)))
            }
            _ => None,
        })
        .await
    }

    /// Fetches `identity`'s bundle (consuming one of its one-time prekeys).
    pub async fn fetch_bundle(&mut self, identity: IdentityKey) -> Result<BundleIn, ClientError> {
        self.send_frame(&ClientFrame::FetchBundle(identity)).await?;
        self.wait_for(|f| match f {
            RelayFrame::Bundle(b) if b.identity == identity => Some(Ok(b.clone())),
            RelayFrame::Error(e) if e.context == ErrorContext::Identity(identity) => {
                Some(Err(ClientError::Rejected(*e)))
            }
            _ => None,
        })
        .await
    }

    /// The next delivered message. Notices (`Drained`, `PrekeysLow`, `Pong`) are skipped;
    /// an error frame is returned as an error.
    pub async fn next_delivery(&mut self) -> Result<DeliverIn, ClientError> {
        loop {
            match self.recv_frame().await? {
                RelayFrame::Deliver(d) => return Ok(d),
                RelayFrame::Error(e) => return Err(ClientError::Rejected(e)),
                _ => continue,
            }
        }
    }

    /// Acknowledges deliveries; the relay deletes them. There is no reply.
    pub async fn ack(&mut self, delivery_ids: Vec<u64>) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack(delivery_ids)).await
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The underlying socket, for callers that pipeline frames themselves.
    pub fn into_socket(self) -> ClientSocket {
        self.ws
    }
}
