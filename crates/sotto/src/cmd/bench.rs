//! `sotto bench relay`: a load generator for a running relay (or the `sotto-ws-floor` forwarder).
//!
//! Every client is a real authenticated WebSocket connection. In `live` mode client `i` sends to
//! client `i+1`; each 256-byte body starts with its send time, so the recipient measures the
//! end-to-end latency (send, durable commit, push) itself. `idle` holds connections open and
//! reports the relay's memory per connection; `offline` enqueues to disconnected recipients and
//! then drains. With `--relay-pid` the relay's RSS and CPU time come from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::{FutureExt, SinkExt, StreamExt};
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_transport::{ClientSocket, RelayClient, socket_config};
use sotto_wire::{ClientFrame, ErrorContext, MessageId, RelayFrame, SendOut};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// What to measure.
#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Load-test a running relay: throughput, latency, relay memory and CPU per message.
    Relay(RelayBench),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Mode {
    /// Clients send to each other while all are connected.
    Live,
    /// Clients connect, authenticate and stay idle.
    Idle,
    /// Senders enqueue for offline recipients, then the recipients connect and drain.
    Offline,
    /// `--clients` recipients authenticate, drain and stop reading (a 4 KiB receive buffer)
    /// while one sender fans out `--messages` `SendMulti` of `--size` bytes to all of them;
    /// reports the relay's RSS before, at its peak and for `--duration` after (the relay closes
    /// the stalled connections at its write deadline). Needs `--relay-pid`.
    Stalled,
}

#[derive(Args)]
pub(crate) struct RelayBench {
    /// The relay's WebSocket URL; several, comma-separated, spread the clients over relays that
    /// share one store (client `i` uses URL `i mod n`, so in live mode every message crosses).
    #[arg(long, default_value = "ws://127.0.0.1:7878/", value_delimiter = ',')]
    url: Vec<String>,
    /// Scenario.
    #[arg(long, value_enum, default_value = "live")]
    mode: Mode,
    /// Number of clients (in offline mode: senders and, as many again, recipients).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Target total message rate in messages per second; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Unacknowledged sends per client (1 = each client waits for its previous message).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Message body size in bytes (at least 16).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// How long to measure (live and idle modes).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Messages to enqueue in offline mode.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// The relay's process id, to read its RSS and CPU time from /proc (several, comma-separated:
    /// the sums).
    #[arg(long, value_delimiter = ',')]
    relay_pid: Vec<u32>,
    /// Parallel connection attempts while connecting.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Worker threads for the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Runs `sotto bench ...`.
pub(crate) fn main(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Relay(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(args)),
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

/// RSS (bytes) and CPU time (seconds) of a process, from /proc.
fn proc_usage(pids: &[u32]) -> Option<(u64, f64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0, 0.0), |(rss, cpu), pid| {
        let (r, c) = one_proc_usage(*pid)?;
        Some((rss + r, cpu + c))
    })
}

fn one_proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((rss_kb * 1024, (utime + stime) / 100.0))
}

fn identity(run: &[u8; 16], i: usize) -> IdentityKeyPair {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(run);
    seed[24..].copy_from_slice(&(i as u64).to_be_bytes());
    IdentityKeyPair::from_seed(&seed)
}

async fn connect_all(
    args: &RelayBench,
    keys: &[IdentityKeyPair],
) -> anyhow::Result<Vec<ClientSocket>> {
    let started = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(keys.iter().cloned().enumerate())
        .map(|(i, k)| {
            let url = args
                .url
                .get(i % args.url.len().max(1))
                .cloned()
                .unwrap_or_default();
            async move {
                RelayClient::connect(&url, &k, None)
                    .await
                    .map(RelayClient::into_socket)
            }
        })
        .buffered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let sockets = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("connecting clients")?;
    eprintln!(
        "connected {} clients in {:.1} s",
        sockets.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(sockets)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run(args: RelayBench) -> anyhow::Result<()> {
    if args.size < 16 {
        bail!("--size must be at least 16");
    }
    let mut run_id = [0u8; 16];
    getrandom::fill(&mut run_id).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    match args.mode {
        Mode::Idle => idle(&args, &run_id).await,
        Mode::Live => live(&args, &run_id).await,
        Mode::Offline => offline(&args, &run_id).await,
        Mode::Stalled => stalled(&args, &run_id).await,
    }
}

async fn idle(args: &RelayBench, run_id: &[u8; 16]) -> anyhow::Result<()> {
    let before = proc_usage(&args.relay_pid);
    let keys: Vec<_> = (0..args.clients).map(|i| identity(run_id, i)).collect();
    let sockets = connect_all(args, &keys).await?;
    tokio::time::sleep(args.duration).await;
    let after = proc_usage(&args.relay_pid);
    println!("idle connections: {}", sockets.len());
    if let (Some((rss0, _)), Some((rss1, _))) = (before, after) {
        let per = (rss1.saturating_sub(rss0)) as f64 / sockets.len().max(1) as f64;
        println!(
            "relay RSS: {:.1} MiB before, {:.1} MiB with clients; {:.1} KiB per connection",
            rss0 as f64 / 1048576.0,
            rss1 as f64 / 1048576.0,
            per / 1024.0
        );
    }
    Ok(())
}

/// One client in live mode: sends to `to`, records latencies of what it receives.
async fn live_client(
    ws: ClientSocket,
    to: IdentityKey,
    args: Arc<(usize, usize, Option<Duration>)>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
    start: Arc<Barrier>,
) -> Vec<u64> {
    let (size, window, interval) = *args;
    let (mut sink, mut stream) = ws.split();
    let mut lat = Vec::new();
    let mut inflight = 0usize;
    let mut seq = 0u64;
    let mut acks = Vec::new();
    let mut tick = interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    start.wait().await;
    let fill = |seq: &mut u64| {
        *seq += 1;
        let mut body = vec![0u8; size];
        body[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        ClientFrame::Send(SendOut {
            recipient: to,
            message_id: MessageId(id),
            body,
        })
        .encode()
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && inflight == 0 {
            break;
        }
        // Closed loop: keep the window full.
        if tick.is_none() && !stopping {
            while inflight < window {
                if sink
                    .feed(Message::Binary(fill(&mut seq).into()))
                    .await
                    .is_err()
                {
                    return lat;
                }
                inflight += 1;
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = sink.flush().await;
        }
        let frame = tokio::select! {
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } }, if !stopping => {
                if inflight < window {
                    if sink.send(Message::Binary(fill(&mut seq).into())).await.is_err() {
                        return lat;
                    }
                    inflight += 1;
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            f = stream.next() => f,
            () = tokio::time::sleep(Duration::from_millis(200)), if stopping => break,
        };
        let mut next = frame;
        loop {
            match next {
                Some(Ok(Message::Binary(b))) => match RelayFrame::decode(&b) {
                    Ok(RelayFrame::Accepted(_)) => {
                        inflight = inflight.saturating_sub(1);
                        c.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(RelayFrame::Deliver(d)) => {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(&d.body[..8.min(d.body.len())]);
                        let sent = u64::from_be_bytes(t);
                        lat.push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000);
                        c.delivered.fetch_add(1, Ordering::Relaxed);
                        acks.push(d.delivery_id);
                    }
                    Ok(RelayFrame::Error(e)) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        if matches!(e.context, ErrorContext::Message(_)) {
                            inflight = inflight.saturating_sub(1);
                        }
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => return lat,
            }
            match stream.next().now_or_never() {
                Some(f) => next = f,
                None => break,
            }
        }
        if !acks.is_empty() {
            let ids = std::mem::take(&mut acks);
            if sink
                .send(Message::Binary(ClientFrame::Ack(ids).encode().into()))
                .await
                .is_err()
            {
                return lat;
            }
        }
    }
    lat
}

fn progress(c: Arc<Counters>, stop: Arc<AtomicBool>, pid: Vec<u32>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut t = tokio::time::interval(Duration::from_secs(1));
        t.tick().await;
        let mut secs = 0;
        while !stop.load(Ordering::Relaxed) {
            t.tick().await;
            secs += 1;
            let d = c.delivered.load(Ordering::Relaxed);
            let rss = proc_usage(&pid)
                .map(|(r, _)| format!(", relay RSS {:.0} MiB", r as f64 / 1048576.0))
                .unwrap_or_default();
            eprintln!(
                "[{secs:>3}s] sent {} accepted {} delivered {} ({} msg/s) errors {}{rss}",
                c.sent.load(Ordering::Relaxed),
                c.accepted.load(Ordering::Relaxed),
                d,
                d - last,
                c.errors.load(Ordering::Relaxed)
            );
            last = d;
        }
    })
}

async fn live(args: &RelayBench, run_id: &[u8; 16]) -> anyhow::Result<()> {
    let n = args.clients.max(2);
    let keys: Vec<_> = (0..n).map(|i| identity(run_id, i)).collect();
    let sockets = connect_all(args, &keys).await?;
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(n as f64 / args.rate as f64));
    let shared = Arc::new((args.size, args.window.max(1), interval));
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counters::default());
    let start = Arc::new(Barrier::new(n + 1));
    let epoch = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, ws) in sockets.into_iter().enumerate() {
        let to = keys[(i + 1) % n].public();
        tasks.push(tokio::spawn(live_client(
            ws,
            to,
            shared.clone(),
            epoch,
            stop.clone(),
            c.clone(),
            start.clone(),
        )));
    }
    start.wait().await;
    let progress = progress(c.clone(), stop.clone(), args.relay_pid.clone());
    let u0 = proc_usage(&args.relay_pid);
    let t0 = Instant::now();
    let d0 = c.delivered.load(Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    let d1 = c.delivered.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let u1 = proc_usage(&args.relay_pid);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    progress.abort();
    lat.sort_unstable();
    let delivered = d1 - d0;
    let rate = delivered as f64 / elapsed;
    println!(
        "mode live: {n} clients, window {}, target {} msg/s, {} B bodies, {:.1} s measured",
        args.window,
        if args.rate == 0 {
            "max".to_string()
        } else {
            args.rate.to_string()
        },
        args.size,
        elapsed
    );
    println!("throughput: {rate:.0} msg/s delivered ({delivered} messages)");
    println!(
        "latency send->deliver: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        lat.len()
    );
    println!("errors: {}", c.errors.load(Ordering::Relaxed));
    if let (Some((_, cpu0)), Some((rss, cpu1))) = (u0, u1) {
        println!(
            "relay: RSS {:.1} MiB, CPU {:.2} s over the window = {:.1} us per message, {:.0}% of one core",
            rss as f64 / 1048576.0,
            cpu1 - cpu0,
            (cpu1 - cpu0) * 1e6 / delivered.max(1) as f64,
            (cpu1 - cpu0) * 100.0 / elapsed
        );
    }
    Ok(())
}

async fn offline(args: &RelayBench, run_id: &[u8; 16]) -> anyhow::Result<()> {
    let n = args.clients.max(1);
    let recipients: Vec<_> = (0..n).map(|i| identity(run_id, 1_000_000 + i)).collect();
    // Register the recipients, then disconnect them.
    for ws in connect_all(args, &recipients).await? {
        let mut ws = ws;
        let _ = ws.close(None).await;
    }
    let senders: Vec<_> = (0..n).map(|i| identity(run_id, i)).collect();
    let sockets = connect_all(args, &senders).await?;
    let per_sender = args.messages / n as u64;
    let total = per_sender * n as u64;
    let c = Arc::new(Counters::default());
    let u0 = proc_usage(&args.relay_pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let to = recipients[i].public();
        let c = c.clone();
        let (size, window) = (args.size, args.window.max(1));
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let (mut sent, mut done, mut inflight) = (0u64, 0u64, 0usize);
            while done < per_sender {
                while inflight < window && sent < per_sender {
                    sent += 1;
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&sent.to_be_bytes());
                    let f = ClientFrame::Send(SendOut {
                        recipient: to,
                        message_id: MessageId(id),
                        body: vec![7; size],
                    });
                    if sink.feed(Message::Binary(f.encode().into())).await.is_err() {
                        return;
                    }
                    inflight += 1;
                }
                let _ = sink.flush().await;
                match stream.next().await {
                    Some(Ok(Message::Binary(b))) => match RelayFrame::decode(&b) {
                        Ok(RelayFrame::Accepted(_)) => {
                            inflight -= 1;
                            done += 1;
                            c.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(RelayFrame::Error(_)) => {
                            inflight = inflight.saturating_sub(1);
                            done += 1;
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let u1 = proc_usage(&args.relay_pid);
    let accepted = c.accepted.load(Ordering::Relaxed);
    // Drain: recipients connect, receive everything, acknowledge it.
    let t1 = Instant::now();
    let sockets = connect_all(args, &recipients).await?;
    let mut tasks = Vec::new();
    for ws in sockets {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut acks = Vec::new();
            loop {
                match stream.next().await {
                    Some(Ok(Message::Binary(b))) => match RelayFrame::decode(&b) {
                        Ok(RelayFrame::Deliver(d)) => {
                            acks.push(d.delivery_id);
                            c.delivered.fetch_add(1, Ordering::Relaxed);
                            if acks.len() >= 64 {
                                let _ = sink
                                    .send(Message::Binary(
                                        ClientFrame::Ack(std::mem::take(&mut acks)).encode().into(),
                                    ))
                                    .await;
                            }
                        }
                        Ok(RelayFrame::Drained) => break,
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            if !acks.is_empty() {
                let _ = sink
                    .send(Message::Binary(ClientFrame::Ack(acks).encode().into()))
                    .await;
            }
            let _ = sink.close().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let drain_s = t1.elapsed().as_secs_f64();
    let u2 = proc_usage(&args.relay_pid);
    let delivered = c.delivered.load(Ordering::Relaxed);
    println!(
        "mode offline: {n} senders -> {n} offline recipients, window {}, {} B bodies",
        args.window, args.size
    );
    println!(
        "durable enqueue: {accepted} of {total} accepted in {enqueue_s:.2} s = {:.0} msg/s (errors {})",
        accepted as f64 / enqueue_s,
        c.errors.load(Ordering::Relaxed)
    );
    println!(
        "drain (connect, deliver, ack): {delivered} in {drain_s:.2} s = {:.0} msg/s",
        delivered as f64 / drain_s
    );
    if let (Some((_, a)), Some((_, b)), Some((rss, cc))) = (u0, u1, u2) {
        println!(
            "relay CPU: {:.1} us per enqueued message, {:.1} us per drained message; RSS {:.1} MiB",
            (b - a) * 1e6 / accepted.max(1) as f64,
            (cc - b) * 1e6 / delivered.max(1) as f64,
            rss as f64 / 1048576.0
        );
    }
    Ok(())
}

/// Authenticates on a socket with a 4 KiB receive buffer, reads the backlog, and returns the
/// connection, which the caller then never reads again.
async fn stalled_client(url: &str, key: &IdentityKeyPair) -> anyhow::Result<RelayClient> {
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse::<std::net::SocketAddr>()
        .context("stalled mode needs a ws://IP:PORT/ URL")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        Some(socket_config()),
    )
    .await?;
    let mut c = RelayClient::authenticate(ws, key, None).await?;
    while !matches!(c.recv_frame().await?, RelayFrame::Drained) {}
    Ok(c)
}

/// GETs the relay's authenticated-connection gauge (a plain HTTP/1.1 request to the URL's port).
async fn authenticated_connections(url: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("sotto_relay_connections_authenticated "))
        .and_then(|v| v.trim().parse().ok())
}

async fn stalled(args: &RelayBench, run_id: &[u8; 16]) -> anyhow::Result<()> {
    const MIB: f64 = 1048576.0;
    let n = args.clients.clamp(1, sotto_wire::MAX_MULTI_RECIPIENTS);
    let url = args.url.first().context("no --url")?.clone();
    let rss = || proc_usage(&args.relay_pid).map(|(r, _)| r);
    let Some(before) = rss() else {
        bail!("stalled mode needs --relay-pid");
    };
    let keys: Vec<_> = (0..n).map(|i| identity(run_id, 2_000_000 + i)).collect();
    let mut stalled = Vec::with_capacity(n);
    for k in &keys {
        stalled.push(stalled_client(&url, k).await?);
    }
    let sender = RelayClient::connect(&url, &identity(run_id, 0), None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss().unwrap_or(0);
    let recipients: Vec<IdentityKey> = keys.iter().map(IdentityKeyPair::public).collect();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pids) = (peak.clone(), stop.clone(), args.relay_pid.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some((r, _)) = proc_usage(&pids) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut ws = sender.into_socket();
    let (mut sent, mut accepted, mut errors) = (0u64, 0u64, 0u64);
    let window = args.window.max(1) as u64;
    while accepted + errors < args.messages {
        while sent < args.messages && sent - accepted - errors < window {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&sent.to_be_bytes());
            let f = ClientFrame::SendMulti(sotto_wire::SendMultiOut {
                recipients: recipients.clone(),
                message_id: MessageId(id),
                body: vec![(sent % 251) as u8; args.size],
            });
            ws.send(Message::Binary(f.encode().into())).await?;
            sent += 1;
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match RelayFrame::decode(&b) {
                Ok(RelayFrame::Accepted(_)) => accepted += 1,
                Ok(RelayFrame::Error(_)) => errors += 1,
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => bail!("the sender's connection closed"),
        }
    }
    let fanned = started.elapsed();
    let at_end = rss().unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    println!(
        "mode stalled: {n} stalled recipients, {} x {} B SendMulti ({accepted} accepted, {errors} rejected) in {:.1} s",
        args.messages,
        args.size,
        fanned.as_secs_f64()
    );
    println!(
        "relay RSS: {:.1} MiB before, {:.1} MiB with the clients (baseline), peak {:.1} MiB (+{:.1} MiB), {:.1} MiB when the fan-out ended",
        before as f64 / MIB,
        baseline as f64 / MIB,
        peak.load(Ordering::Relaxed) as f64 / MIB,
        peak.load(Ordering::Relaxed).saturating_sub(baseline) as f64 / MIB,
        at_end as f64 / MIB
    );
    // After: the relay closes the stalled connections at its write deadline.
    let after = Instant::now();
    let mut closed_at = None;
    let mut back_at = None;
    let mut series = Vec::new();
    while after.elapsed() < args.duration {
        let r = rss().unwrap_or(0);
        let open = authenticated_connections(&url).await.unwrap_or(f64::NAN);
        series.push(format!(
            "{:.1}s {:.0} MiB/{open}",
            after.elapsed().as_secs_f64(),
            r as f64 / MIB
        ));
        if closed_at.is_none() && open <= 1.0 {
            closed_at = Some(after.elapsed());
        }
        if back_at.is_none() && r <= baseline + baseline / 10 {
            back_at = Some(after.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "after the fan-out (RSS / authenticated connections): {}",
        series.join(", ")
    );
    println!(
        "stalled connections closed by the relay after {}; RSS within 10% of baseline after {}",
        closed_at.map_or("(not within --duration)".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        back_at.map_or("(not within --duration)".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    drop(stalled);
    Ok(())
}
