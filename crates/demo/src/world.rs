//! The stage: an in-process relay (on its own runtime, so it can be killed outright), the
//! attacker proxy in front of it, and throwaway client profiles in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_client::{Client, Event, KdfParams};
use sotto_relay::store::SqliteStore;
use sotto_relay::store::sqlite::Durability;
use sotto_relay::{Relay, RelayConfig};

use crate::Error;
use crate::proxy::Proxy;

/// How long any one network step may take before the scenario fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A relay running on its own Tokio runtime in its own thread.
pub struct RelayHandle {
    addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayHandle {
    /// Starts a relay on a free loopback port with its SQLite store at `db`.
    pub fn start(db: &Path) -> Result<Self, Error> {
        Self::start_on(
            db,
            "127.0.0.1:0"
                .parse()
                .map_err(|_| Error::Setup("addr".into()))?,
        )
    }

    /// Starts a relay on `addr` (port 0: any free port) with its SQLite store at `db`.
    pub fn start_on(db: &Path, addr: SocketAddr) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let db = db.to_owned();
        let thread = std::thread::Builder::new()
            .name("demo-relay".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let started = rt.block_on(async {
                    let store =
                        SqliteStore::open(&db, Durability::Full).map_err(|e| e.to_string())?;
                    let relay = Relay::new(store, RelayConfig::default());
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| e.to_string())?;
                    let local = listener.local_addr().map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        let _ = relay.serve(listener, None).await;
                    });
                    Ok::<_, String>(local)
                });
                let ok = started.is_ok();
                let _ = ready_tx.send(started);
                if ok {
                    // Park until told to die; then drop the runtime without any graceful step:
                    // every task (connections, the store's writer) stops where it is.
                    let _ = stop_rx.recv();
                }
                rt.shutdown_background();
            })
            .map_err(|e| Error::Setup(e.to_string()))?;
        let addr = ready_rx
            .recv_timeout(STEP_TIMEOUT)
            .map_err(|_| Error::Setup("relay did not start".into()))?
            .map_err(Error::Setup)?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The relay's own address (clients use the proxy's).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the relay: its runtime is dropped at once, with no shutdown procedure.
    pub fn kill(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A relay, the attacker proxy in front of it and a temporary directory for profiles.
pub struct World {
    /// The temporary directory (deleted on drop unless kept).
    pub dir: tempfile::TempDir,
    /// The relay's database file.
    pub db: PathBuf,
    /// The relay (None while it is down).
    pub relay: Option<RelayHandle>,
    /// The attacker.
    pub proxy: Proxy,
}

/// The passphrase of every throwaway profile (the attacker "learns" it in scenes 6 and 7).
pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

impl World {
    /// Starts a relay and the proxy in front of it.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("sotto-demo-")
            .tempdir()
            .map_err(|e| Error::Setup(e.to_string()))?;
        let db = dir.path().join("relay.db");
        let relay = RelayHandle::start(&db)?;
        let proxy = Proxy::start(relay.addr()).await?;
        Ok(Self {
            dir,
            db,
            relay: Some(relay),
            proxy,
        })
    }

    /// A registered client named `name`, connected through the proxy (then disconnected).
    pub async fn client(&self, name: &str) -> Result<Client, Error> {
        let path = self.profile_dir(name);
        let mut c = Client::init(&path, PASSPHRASE, KdfParams::INSECURE_TEST)?;
        timed(c.register(&self.proxy.url())).await??;
        c.disconnect().await;
        Ok(c)
    }

    /// The profile directory of `name`.
    pub fn profile_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Kills the relay (runtime dropped, no graceful shutdown).
    pub fn kill_relay(&mut self) {
        if let Some(r) = self.relay.take() {
            r.kill();
            self.proxy
                .note(None, "the relay is killed (runtime dropped, no shutdown)");
        }
    }

    /// Starts a new relay on the same database file and points the proxy at it.
    pub fn restart_relay(&mut self) -> Result<SocketAddr, Error> {
        let r = RelayHandle::start(&self.db)?;
        let addr = r.addr();
        self.proxy.set_upstream(addr);
        self.relay = Some(r);
        self.proxy
            .note(None, "the relay restarts on the same SQLite file");
        Ok(addr)
    }
}

/// Runs a future with [`STEP_TIMEOUT`].
pub async fn timed<F: std::future::Future>(f: F) -> Result<F::Output, Error> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| Error::Timeout)
}

/// Makes `a` and `b` contacts of each other (names `b_name` in a's book and `a_name` in b's).
pub fn introduce(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) -> Result<(), Error> {
    let ia = a.invite()?;
    let ib = b.invite()?;
    a.add_contact(b_name, &ib)?;
    b.add_contact(a_name, &ia)?;
    Ok(())
}

/// One round with the relay, as the CLI does it: connect, send the outbox, receive everything
/// waiting, send the receipts, disconnect.
pub async fn sync(c: &mut Client) -> Result<Vec<Event>, Error> {
    let r = timed(c.sync()).await?;
    c.disconnect().await;
    Ok(r?)
}

/// Composes `text` to `to` and syncs; returns the message id (hex).
pub async fn send(c: &mut Client, to: &str, text: &str) -> Result<String, Error> {
    let id = c.compose(to, text, false)?;
    sync(c).await?;
    Ok(id)
}

/// Incoming messages of `c` from `from`: (id, text or None, error).
pub fn inbox(c: &Client, from: &str) -> Result<Vec<sotto_client::Message>, Error> {
    Ok(c.messages(Some(from))?
        .into_iter()
        .filter(|m| m.direction == sotto_client::Direction::In)
        .collect())
}

/// An HTTP GET `/healthz` straight to the relay: whether it answers 200.
pub async fn relay_healthy(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}
