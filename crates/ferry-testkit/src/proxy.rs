//! A TCP proxy in front of PostgreSQL that can lose the answer to a COMMIT.
//!
//! The fault that matters most to a two-sided write is not a refused COMMIT (the server says
//! so, and nothing happened) but a COMMIT the server carried out whose answer never reached
//! the client: the connection drops after the commit. The client then cannot tell whether
//! its write took effect. [`FaultProxy::lose_next_commit_answer`] produces exactly that: the
//! next `COMMIT` a client sends through the proxy is passed on, the server's answer up to
//! and including its ReadyForQuery is swallowed, and both connections are closed.
//!
//! The proxy reads the protocol's message framing only (type byte and length), so clients
//! must connect without TLS: [`FaultProxy::options`] sets `sslmode=disable`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What every connection through one proxy shares.
#[derive(Default)]
struct Faults {
    /// The next COMMIT seen loses its answer.
    lose_commit: AtomicBool,
    /// COMMITs whose answers were lost so far.
    lost: AtomicU64,
}

/// A proxy listening on 127.0.0.1, forwarding to one PostgreSQL server. Stops when dropped.
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
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, shared.clone()));
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
        self.faults.lost.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays one client connection until either end closes or a COMMIT's answer is lost.
async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let swallowing = Arc::new(AtomicBool::new(false));
    let upstream = tokio::spawn(client_to_server(
        client_read,
        server_write,
        faults.clone(),
        swallowing.clone(),
    ));
    server_to_client(server_read, client_write, &faults, &swallowing).await;
    // Dropping the halves closes both connections.
    upstream.abort();
}

/// One protocol message: its type byte (none for the startup message) and the rest.
async fn read_message(from: &mut OwnedReadHalf, typed: bool) -> Option<Vec<u8>> {
    let header = if typed { 5 } else { 4 };
    let mut message = vec![0u8; header];
    from.read_exact(&mut message).await.ok()?;
    let at = header - 4;
    let length = u32::from_be_bytes(message[at..header].try_into().ok()?) as usize;
    let body = length.checked_sub(4)?;
    message.resize(header + body, 0);
    from.read_exact(&mut message[header..]).await.ok()?;
    Some(message)
}

/// Whether a frontend message is a simple-protocol `COMMIT` (how sqlx commits).
fn is_commit(message: &[u8]) -> bool {
    message.first() == Some(&b'Q') && {
        let sql = String::from_utf8_lossy(&message[5..]);
        sql.trim_end_matches('\0')
            .trim()
            .trim_end_matches(';')
            .eq_ignore_ascii_case("commit")
    }
}

async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: Arc<Faults>,
    swallowing: Arc<AtomicBool>,
) {
    let mut typed = false;
    while let Some(message) = read_message(&mut from, typed).await {
        typed = true;
        if is_commit(&message) && faults.lose_commit.swap(false, Ordering::SeqCst) {
            swallowing.store(true, Ordering::SeqCst);
        }
        if to.write_all(&message).await.is_err() {
            return;
        }
    }
}

async fn server_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: &Faults,
    swallowing: &AtomicBool,
) {
    while let Some(message) = read_message(&mut from, true).await {
        if swallowing.load(Ordering::SeqCst) {
            // The COMMIT's answer ends with ReadyForQuery: the server is done with it.
            if message.first() == Some(&b'Z') {
                faults.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            continue;
        }
        if to.write_all(&message).await.is_err() {
            return;
        }
    }
}
