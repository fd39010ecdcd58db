//! One client connection relayed to the server, message by message, with the faults applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::Faults;

/// Which way a message goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Relays one client connection until either end closes, a COMMIT's answer is lost, or the
/// proxy resets every connection (then both ends get an RST).
pub(super) async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    faults.counts.open.fetch_add(1, Ordering::SeqCst);
    let generation = faults
        .generation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Messages are forwarded one write each: without TCP_NODELAY, Nagle's algorithm and the
    // peer's delayed ACK would add tens of milliseconds to every round trip.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = faults.resets.subscribe();
    resets.borrow_and_update();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallowing = AtomicBool::new(false);
    let reset = {
        let up = pipe(
            &mut client_read,
            &mut server_write,
            Direction::ToServer,
            &faults,
            &swallowing,
        );
        let down = pipe(
            &mut server_read,
            &mut client_write,
            Direction::ToClient,
            &faults,
            &swallowing,
        );
        tokio::select! {
            () = up => false,
            () = down => false,
            _ = resets.changed() => true,
        }
    };
    if reset {
        // SO_LINGER 0: dropping the socket sends an RST instead of a FIN.
        let _ = client_write.as_ref().set_zero_linger();
        let _ = server_write.as_ref().set_zero_linger();
        faults.counts.reset.fetch_add(1, Ordering::SeqCst);
    }
    drop((client_read, client_write, server_read, server_write));
    faults.counts.open.fetch_sub(1, Ordering::SeqCst);
    drop(generation);
}

/// Forwards one direction: a reader takes whole messages off the socket as they come, and a
/// writer forwards each one when its latency is up and no blackhole holds it. Ends when the
/// reader's end closed and everything read was forwarded, when a write fails, or when a lost
/// COMMIT answer was swallowed.
async fn pipe(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    faults: &Faults,
    swallowing: &AtomicBool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        // The client's first message (startup or SSL request) has no type byte.
        let mut typed = direction == Direction::ToClient;
        while let Some(message) = read_message(from, typed).await {
            typed = true;
            if tx.send((Instant::now(), message)).is_err() {
                return;
            }
        }
    };
    let write = async move {
        let mut blackhole = faults.blackhole.subscribe();
        while let Some((read_at, message)) = rx.recv().await {
            let latency = match direction {
                Direction::ToServer => &faults.latency_up,
                Direction::ToClient => &faults.latency_down,
            };
            delay(read_at, latency, &faults.counts.delayed).await;
            if *blackhole.borrow_and_update() {
                faults.counts.held.fetch_add(1, Ordering::SeqCst);
                if blackhole.wait_for(|on| !on).await.is_err() {
                    return;
                }
            }
            let forward = match direction {
                Direction::ToServer => {
                    if is_commit(&message) && faults.lose_commit.swap(false, Ordering::SeqCst) {
                        swallowing.store(true, Ordering::SeqCst);
                    }
                    true
                }
                Direction::ToClient if swallowing.load(Ordering::SeqCst) => {
                    // The COMMIT's answer ends with ReadyForQuery: the server is done with it.
                    if message.first() == Some(&b'Z') {
                        faults.counts.lost.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    false
                }
                Direction::ToClient => true,
            };
            if forward && to.write_all(&message).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(write);
    tokio::select! {
        () = read => write.await,
        () = &mut write => {}
    }
}

/// Waits until `latency` (milliseconds, read now) after `read_at`, counting a delayed message.
async fn delay(read_at: Instant, latency: &AtomicU64, delayed: &AtomicU64) {
    let ms = latency.load(Ordering::SeqCst);
    if ms > 0 {
        delayed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep_until((read_at + Duration::from_millis(ms)).into()).await;
    }
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
