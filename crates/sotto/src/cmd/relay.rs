//! `sotto relay`: run the relay; `sotto relay invite`: create an invite token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand, ValueEnum};
use serde::Deserialize;
use sotto_relay::store::sqlite::Durability;
use sotto_relay::store::{PgOptions, PostgresStore, SqliteStore, Store};
use sotto_relay::{Relay, RelayConfig, StoreLocation};

/// Run the sotto relay: an untrusted WebSocket relay that stores ciphertext for offline
/// recipients and serves prekey bundles.
///
/// Settings come from flags, then `SOTTO_RELAY_*` environment variables, then the optional
/// config file (TOML, keys named like the long flags with `_` for `-`), then the defaults.
/// Metrics are at `GET /metrics`, liveness at `GET /healthz`, WebSocket at `GET /`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum RelayCommand {
    /// Create an invite token for `--invite-only` relays and print it.
    Invite(InviteArgs),
}

#[derive(Args)]
struct InviteArgs {
    /// The relay's store.
    #[arg(long, env = "SOTTO_RELAY_STORE", value_name = "URL")]
    store: Option<String>,
    /// How long the invite stays valid (e.g. `7d`, `12h`).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    expires: Duration,
}

/// How hard SQLite pushes each commit to disk.
#[derive(Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Sync {
    /// fsync every commit (survives power loss).
    Full,
    /// fsync at checkpoints only (survives a crash of the relay process, not of the machine).
    Normal,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (HTTP and WebSocket). Use port 0 for any free port.
    #[arg(
        long,
        env = "SOTTO_RELAY_LISTEN",
        default_value = "127.0.0.1:7878",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// Where messages and prekeys are kept: `sqlite:PATH` for one relay process, or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for several relays sharing one database
    /// [default: sqlite:$XDG_DATA_HOME/sotto/relay.db].
    #[arg(long, env = "SOTTO_RELAY_STORE", value_name = "URL")]
    store: Option<String>,
    /// PostgreSQL connections per relay process (plus one for LISTEN).
    #[arg(long, env = "SOTTO_RELAY_PG_POOL", default_value_t = 16)]
    pg_pool: usize,
    /// Time to live of undelivered messages (e.g. `30d`, `12h`, `90s`).
    #[arg(long, env = "SOTTO_RELAY_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Require an invite token (see `sotto relay invite`) to register a new identity.
    #[arg(long, env = "SOTTO_RELAY_INVITE_ONLY")]
    invite_only: bool,
    /// PEM certificate chain; with --tls-key, serve wss:// instead of ws://.
    #[arg(
        long,
        env = "SOTTO_RELAY_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "SOTTO_RELAY_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    tls_key: Option<PathBuf>,
    /// Optional TOML config file.
    #[arg(long, env = "SOTTO_RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite durability.
    #[arg(long, env = "SOTTO_RELAY_SYNC", value_enum, default_value = "full")]
    sync: Sync,
    /// Maximum undelivered messages per recipient.
    #[arg(long, env = "SOTTO_RELAY_MAILBOX_MESSAGES", default_value_t = 10_000)]
    mailbox_messages: u64,
    /// Maximum undelivered bytes per recipient.
    #[arg(long, env = "SOTTO_RELAY_MAILBOX_BYTES", default_value_t = 256 * 1024 * 1024)]
    mailbox_bytes: u64,
    /// Maximum unauthenticated connections per IP address.
    #[arg(long, env = "SOTTO_RELAY_MAX_UNAUTH_PER_IP", default_value_t = 64)]
    max_unauth_per_ip: u32,
    /// Frames per second per connection (token bucket rate; the burst is twice this).
    #[arg(long, env = "SOTTO_RELAY_CONN_RATE", default_value_t = 2000)]
    conn_rate: u32,
    /// Sends per second per identity (token bucket rate; the burst is twice this).
    #[arg(long, env = "SOTTO_RELAY_IDENTITY_RATE", default_value_t = 2000)]
    identity_rate: u32,
    /// Close an authenticated connection after this long without a frame from the client.
    #[arg(long, env = "SOTTO_RELAY_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Close a connection whose socket accepts no bytes for this long (a peer that stopped
    /// reading).
    #[arg(long, env = "SOTTO_RELAY_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
    /// Memory (bytes) all connections together may hold for delivery: queued pushes, mailbox
    /// pages read back, frames being written. Over it, deliveries wait in the store.
    #[arg(long, env = "SOTTO_RELAY_DELIVERY_MEMORY", default_value_t = 32 * 1024 * 1024)]
    delivery_memory: usize,
    /// Time from TCP accept to successful authentication.
    #[arg(long, env = "SOTTO_RELAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// How often expired messages are deleted.
    #[arg(long, env = "SOTTO_RELAY_EXPIRY_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    expiry_interval: Duration,
    /// Worker threads (default: one per core).
    #[arg(long, env = "SOTTO_RELAY_THREADS")]
    threads: Option<usize>,
}

/// The config file: every key optional, named like the long flags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    store: Option<String>,
    pg_pool: Option<usize>,
    ttl: Option<String>,
    invite_only: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    sync: Option<Sync>,
    mailbox_messages: Option<u64>,
    mailbox_bytes: Option<u64>,
    max_unauth_per_ip: Option<u32>,
    conn_rate: Option<u32>,
    identity_rate: Option<u32>,
    idle_timeout: Option<String>,
    write_timeout: Option<String>,
    delivery_memory: Option<usize>,
    handshake_timeout: Option<String>,
    expiry_interval: Option<String>,
    threads: Option<usize>,
}

/// Fills every setting that was not given by flag or environment from the config file.
fn apply_file(args: &mut ServeArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: ConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let unset = |id: &str| {
        !matches!(
            matches.and_then(|m| m.value_source(id)),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let dur = |s: &str| {
        humantime::parse_duration(s).with_context(|| format!("bad duration {s:?} in config file"))
    };
    macro_rules! take {
        ($field:ident) => {
            if let Some(v) = file.$field
                && unset(stringify!($field))
            {
                args.$field = v;
            }
        };
        (opt $field:ident) => {
            if file.$field.is_some() && unset(stringify!($field)) {
                args.$field = file.$field;
            }
        };
        (dur $field:ident) => {
            if let Some(v) = &file.$field
                && unset(stringify!($field))
            {
                args.$field = dur(v)?;
            }
        };
    }
    take!(listen);
    take!(opt store);
    take!(pg_pool);
    take!(dur ttl);
    take!(invite_only);
    take!(opt tls_cert);
    take!(opt tls_key);
    take!(sync);
    take!(mailbox_messages);
    take!(mailbox_bytes);
    take!(max_unauth_per_ip);
    take!(conn_rate);
    take!(identity_rate);
    take!(dur idle_timeout);
    take!(dur write_timeout);
    take!(delivery_memory);
    take!(dur handshake_timeout);
    take!(dur expiry_interval);
    take!(opt threads);
    Ok(())
}

/// `$XDG_DATA_HOME/sotto/relay.db`, or `~/.local/share/sotto/relay.db`.
fn default_store() -> anyhow::Result<String> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .context("neither XDG_DATA_HOME nor HOME is set; pass --store")?;
            PathBuf::from(home).join(".local/share")
        }
    };
    Ok(format!("sqlite:{}", base.join("sotto/relay.db").display()))
}

/// An opened store of either kind.
enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

async fn open_store(
    url: Option<&str>,
    durability: Durability,
    pg_pool: usize,
) -> anyhow::Result<AnyStore> {
    let url = match url {
        Some(u) => u.to_owned(),
        None => default_store()?,
    };
    match url.parse::<StoreLocation>()? {
        StoreLocation::Sqlite(path) => {
            let path = Path::new(&path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let store = SqliteStore::open(path, durability)
                .with_context(|| format!("opening store {}", path.display()))?;
            Ok(AnyStore::Sqlite(store))
        }
        StoreLocation::Postgres(url) => {
            let options = PgOptions {
                pool_size: pg_pool,
                ..PgOptions::default()
            };
            let store = PostgresStore::connect(&url, options)
                .await
                .with_context(|| {
                    format!("opening store {}", sotto_relay::config::redact_url(&url))
                })?;
            Ok(AnyStore::Postgres(Box::new(store)))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `sotto relay ...`.
pub(crate) fn main(mut args: RelayArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    init_logging();
    match args.command.take() {
        Some(RelayCommand::Invite(inv)) => invite(inv),
        None => {
            apply_file(&mut args.serve, matches)?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.serve.threads {
                rt.worker_threads(n.max(1));
            }
            rt.enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(args.serve))
        }
    }
}

fn invite(args: InviteArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match open_store(args.store.as_deref(), Durability::Full, 1).await? {
            AnyStore::Sqlite(s) => create_invite(&s, args.expires).await,
            AnyStore::Postgres(s) => create_invite(&*s, args.expires).await,
        }
    })
}

async fn create_invite<S: Store>(store: &S, expires: Duration) -> anyhow::Result<()> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("sotto-invite-{token}");
    let until = sotto_relay::now_ms().saturating_add(expires.as_millis() as u64);
    store
        .create_invite(token.clone().into_bytes(), until)
        .await
        .context("storing the invite")?;
    println!("{token}");
    eprintln!(
        "valid for {}; give it to one new user (it registers one identity)",
        humantime::format_duration(expires)
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let durability = match args.sync {
        Sync::Full => Durability::Full,
        Sync::Normal => Durability::Normal,
    };
    match open_store(args.store.as_deref(), durability, args.pg_pool).await? {
        AnyStore::Sqlite(store) => serve_with(store, args).await,
        AnyStore::Postgres(store) => serve_with(*store, args).await,
    }
}

async fn serve_with<S: Store>(store: S, args: ServeArgs) -> anyhow::Result<()> {
    let relay_id = store.relay_id();
    let config = RelayConfig {
        invite_only: args.invite_only,
        ttl: args.ttl,
        mailbox_max_messages: args.mailbox_messages,
        mailbox_max_bytes: args.mailbox_bytes,
        max_unauthenticated_per_ip: args.max_unauth_per_ip,
        conn_frames_per_sec: args.conn_rate,
        conn_frames_burst: args.conn_rate.saturating_mul(2),
        identity_sends_per_sec: args.identity_rate,
        identity_sends_burst: args.identity_rate.saturating_mul(2),
        idle_timeout: args.idle_timeout,
        write_timeout: args.write_timeout,
        delivery_memory: args.delivery_memory,
        handshake_timeout: args.handshake_timeout,
        expiry_interval: args.expiry_interval,
        ..RelayConfig::default()
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(sotto_relay::tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let relay = Relay::new(store, config);
    let stop = relay.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        stop.cancel();
    });
    let id: String = relay_id.0[..8].iter().map(|b| format!("{b:02x}")).collect();
    tracing::info!(relay_id = %id, invite_only = args.invite_only, "relay starting");
    // Scripts and tests read this line to learn the port.
    println!("sotto relay listening on {scheme}://{addr}/");
    relay.serve(listener, tls).await.context("serving")?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
