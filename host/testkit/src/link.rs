//! A network link the tests and benchmarks control: a TCP proxy between a client (an edge) and
//! what it talks to (central's PostgreSQL, NATS, a peer edge), which adds a latency each way,
//! refuses connections, or blackholes them: accepts, then never answers, the half-open link that
//! real networks produce and that a refused connection does not test.
//!
//! A mode applies at once to the connections already open: `Refused` closes them, `Blackholed`
//! stops moving their bytes (for good: a real half-open connection does not come back), and
//! back to `Open` new connections work again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the link does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass, each direction `latency` late.
    Open { latency: Duration },
    /// New connections are closed at once, and open ones are cut.
    Refused,
    /// Connections are accepted and never answered; open ones stop moving bytes.
    Blackholed,
}

/// A proxy on `127.0.0.1`, forwarding to one address.
pub struct Link {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Link {
    /// Listens on a free port and forwards to `target`, open and without added latency.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watching) = watch::channel(Mode::Open {
            latency: Duration::ZERO,
        });
        let task = tokio::spawn(accept(listener, target, watching));
        Ok(Self { addr, mode, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` (the target's) replaced by this link's.
    pub fn url(&self, url: &str, target: SocketAddr) -> String {
        url.replacen(&target.to_string(), &self.addr.to_string(), 1)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Open, with `latency` added each way.
    pub fn delay(&self, latency: Duration) {
        self.set(Mode::Open { latency });
    }

    pub fn heal(&self) {
        self.delay(Duration::ZERO);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut held = Vec::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let now = *mode.borrow();
        match now {
            Mode::Refused => drop(client),
            // Kept open and never read: the client waits for an answer that does not come.
            Mode::Blackholed => held.push(client),
            Mode::Open { .. } => {
                tokio::spawn(relay(client, target, mode.clone()));
            }
        }
    }
}

/// One connection, both ways, for as long as the mode lets it live.
async fn relay(client: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, mode.clone()));
    let down = tokio::spawn(pump(server_read, client_write, mode));
    let _ = tokio::join!(up, down);
}

/// Moves bytes from `from` to `to`, each chunk `latency` after it was read, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut writer_mode = mode.clone();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = due.recv().await {
            // Not a timer for no latency: tokio's round up to the next millisecond, which
            // would add up to 2 ms to every round trip of a link meant to add nothing.
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            let now = *writer_mode.borrow_and_update();
            match now {
                Mode::Open { .. } => {}
                Mode::Refused => return,
                Mode::Blackholed => {
                    // Half-open for good: nothing more is delivered, and the connection stays
                    // open until the link is cut or the test ends.
                    while writer_mode.changed().await.is_ok() {
                        if *writer_mode.borrow() == Mode::Refused {
                            return;
                        }
                    }
                    return;
                }
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Refused {
                    break;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let latency = match *mode.borrow() {
            Mode::Open { latency } => latency,
            Mode::Refused => break,
            Mode::Blackholed => Duration::ZERO,
        };
        if queue
            .send((Instant::now() + latency, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(queue);
    if *mode.borrow() == Mode::Refused {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let attempt = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"ping").then_some(())
        };
        tokio::time::timeout(within, attempt).await.ok()??;
        Some(started.elapsed())
    }

    #[tokio::test]
    async fn a_link_delays_refuses_blackholes_and_heals() {
        let link = Link::start(echo().await).await.expect("link");
        // No latency asked for, none added (a timer would add a millisecond each way).
        let mut open = TcpStream::connect(link.addr()).await.expect("connect");
        let started = Instant::now();
        for _ in 0..100 {
            let mut buf = [0u8; 4];
            open.write_all(b"ping").await.expect("write");
            open.read_exact(&mut buf).await.expect("read");
        }
        let each = started.elapsed() / 100;
        assert!(each < Duration::from_micros(500), "{each:?} a round trip");
        link.delay(Duration::from_millis(100));
        let took = round_trip(link.addr(), Duration::from_secs(2))
            .await
            .expect("an answer");
        assert!(took >= Duration::from_millis(200), "{took:?}");
        link.set(Mode::Refused);
        assert_eq!(round_trip(link.addr(), Duration::from_secs(2)).await, None);
        link.heal();
        let mut open = TcpStream::connect(link.addr()).await.expect("connect");
        let mut buf = [0u8; 4];
        open.write_all(b"ping").await.expect("write");
        open.read_exact(&mut buf).await.expect("read");
        link.set(Mode::Blackholed);
        // Accepted, and no answer at all: the caller's own deadline is all it has.
        let connected = TcpStream::connect(link.addr()).await;
        assert!(connected.is_ok());
        assert_eq!(
            round_trip(link.addr(), Duration::from_millis(500)).await,
            None
        );
        // What an open connection sends while blackholed is lost, and it stays dead after.
        open.write_all(b"lost").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.heal();
        let after = tokio::time::timeout(Duration::from_millis(500), open.read_exact(&mut buf));
        assert!(after.await.is_err(), "a blackholed connection came back");
        assert!(
            round_trip(link.addr(), Duration::from_secs(2))
                .await
                .is_some()
        );
    }
}
