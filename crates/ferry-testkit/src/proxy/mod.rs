//! A TCP proxy in front of PostgreSQL that injects network faults, settable while it runs.
//!
//! - **Lost COMMIT answers.** The fault that matters most to a two-sided write is not a
//!   refused COMMIT (the server says so, and nothing happened) but a COMMIT the server carried
//!   out whose answer never reached the client: the connection drops after the commit, and the
//!   client cannot tell whether its write took effect. [`FaultProxy::lose_next_commit_answer`]
//!   produces exactly that: the next `COMMIT` a client sends through the proxy is passed on,
//!   the server's answer up to and including its ReadyForQuery is swallowed, and both
//!   connections are closed.
//! - **Latency** ([`FaultProxy::set_latency`]): every message is forwarded that long after it
//!   was read, per direction; messages keep their order and their delays do not add up.
//! - **Resets** ([`FaultProxy::reset_all`]): every open connection is closed abruptly (RST)
//!   on both ends.
//! - **Blackhole** ([`FaultProxy::set_blackhole`]): nothing is forwarded in either direction
//!   until it is cleared, and sockets stay open, so clients hang (connections opened meanwhile
//!   too); what was read meanwhile is forwarded when it clears, late.
//!
//! - **Down** ([`FaultProxy::set_down`]): every open connection is reset and new ones are
//!   closed as soon as they are accepted, as a server that went away; clients fail fast.
//!
//! [`FaultProxy::counters`] says what the proxy did. The proxy reads the protocol's message
//! framing only (type byte and length), so clients must connect without TLS:
//! [`FaultProxy::options`] sets `sslmode=disable`.

mod relay;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every connection through one proxy shares: the faults to inject and the counters.
struct Faults {
    /// The next COMMIT seen loses its answer.
    lose_commit: AtomicBool,
    /// Added latency in milliseconds, client to server and server to client.
    latency_up: AtomicU64,
    latency_down: AtomicU64,
    /// Whether new connections are closed at once (the server looks down).
    down: AtomicBool,
    /// Whether traffic is blackholed (receivers wait for `false`).
    blackhole: watch::Sender<bool>,
    /// Bumped by every reset; each connection watches it.
    resets: watch::Sender<u64>,
    /// Held by every connection opened since the last reset: the reset waits for the old one
    /// to be gone.
    generation: Mutex<Arc<()>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    open: AtomicU64,
    reset: AtomicU64,
    delayed: AtomicU64,
    held: AtomicU64,
    blackholes: AtomicU64,
    lost: AtomicU64,
}

/// What a proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed by [`FaultProxy::reset_all`].
    pub reset: u64,
    /// Messages forwarded with added latency.
    pub delayed: u64,
    /// Messages held by a blackhole (forwarded late, or never if the connection ended).
    pub held: u64,
    /// Times a blackhole was switched on.
    pub blackholes: u64,
    /// COMMITs whose answers were lost.
    pub answers_lost: u64,
}

/// A proxy listening on 127.0.0.1, forwarding to one PostgreSQL server. Stops when dropped,
/// resetting the connections still open.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: PgConnectOptions,
    faults: Arc<Faults>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of the server `url` names (which must be reached over TCP).
    pub async fn start(url: &str) -> FaultProxy {
        let upstream =
            PgConnectOptions::from_str(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the fault proxy cannot listen: {e}"));
        let listen = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fault proxy's address: {e}"));
        let faults = Arc::new(Faults {
            lose_commit: AtomicBool::new(false),
            down: AtomicBool::new(false),
            latency_up: AtomicU64::new(0),
            latency_down: AtomicU64::new(0),
            blackhole: watch::Sender::new(false),
            resets: watch::Sender::new(0),
            generation: Mutex::new(Arc::new(())),
            counts: Counts::default(),
        });
        let shared = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                shared.counts.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay::relay(client, server, shared.clone()));
            }
        });
        FaultProxy {
            listen,
            upstream,
            faults,
            accept,
        }
    }

    /// Connect options for the same server, database and user, through the proxy.
    pub fn options(&self) -> PgConnectOptions {
        self.upstream
            .clone()
            .host(&self.listen.ip().to_string())
            .port(self.listen.port())
            .ssl_mode(PgSslMode::Disable)
    }

    /// The next COMMIT any client sends through the proxy is carried out, but its answer is
    /// lost: the client sees its connection drop.
    pub fn lose_next_commit_answer(&self) {
        self.faults.lose_commit.store(true, Ordering::SeqCst);
    }

    /// How many COMMIT answers were lost so far.
    pub fn answers_lost(&self) -> u64 {
        self.faults.counts.lost.load(Ordering::SeqCst)
    }

    /// Forwards every message `to_server` (client to server) or `to_client` (server to client)
    /// after it was read; zero for none. Applies to messages read from now on.
    pub fn set_latency(&self, to_server: Duration, to_client: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.faults
            .latency_up
            .store(ms(to_server), Ordering::SeqCst);
        self.faults
            .latency_down
            .store(ms(to_client), Ordering::SeqCst);
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions, on every connection.
    pub fn set_blackhole(&self, on: bool) {
        let was = self.faults.blackhole.send_replace(on);
        if on && !was {
            self.faults.counts.blackholes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Closes every connection open now abruptly (RST to both ends) and returns once they
    /// are all gone. Connections opened afterwards are not affected.
    pub async fn reset_all(&self) {
        let old: Weak<()> = {
            let mut generation = self
                .faults
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let old = Arc::downgrade(&generation);
            *generation = Arc::new(());
            old
        };
        self.faults.resets.send_modify(|n| *n += 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while old.strong_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the fault proxy's connections did not close within 10 s of a reset"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Takes the server away (`true`: open connections reset, new ones closed at once) or
    /// brings it back.
    pub async fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
        if down {
            self.reset_all().await;
        }
    }

    /// Clears every fault: no latency, no blackhole, no pending lost answer, not down.
    pub fn clear(&self) {
        self.faults.down.store(false, Ordering::SeqCst);
        self.set_latency(Duration::ZERO, Duration::ZERO);
        self.set_blackhole(false);
        self.faults.lose_commit.store(false, Ordering::SeqCst);
    }

    /// What the proxy did so far.
    pub fn counters(&self) -> ProxyCounters {
        let c = &self.faults.counts;
        let n = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyCounters {
            connections: n(&c.connections),
            open: n(&c.open),
            reset: n(&c.reset),
            delayed: n(&c.delayed),
            held: n(&c.held),
            blackholes: n(&c.blackholes),
            answers_lost: n(&c.lost),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.faults.blackhole.send_replace(false);
        self.faults.resets.send_modify(|n| *n += 1);
    }
}
