//! A TCP proxy placed between the server and PostgreSQL, so tests can do to the network
//! what real networks do: cut every connection mid-query, refuse new ones, and add latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// While false, new connections are closed as soon as they are accepted.
    open: AtomicBool,
    /// Added before every chunk is forwarded, in each direction.
    latency_ms: AtomicU64,
    /// Bumped to drop every live connection at once.
    cuts: watch::Sender<u64>,
    /// Chunks read from clients and forwarded to the server: with TCP_NODELAY, each is
    /// one write of the client's (a round trip's worth of protocol messages).
    to_server: AtomicU64,
}

impl Proxy {
    /// Listens on a free local port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            open: AtomicBool::new(true),
            latency_ms: AtomicU64::new(0),
            cuts: watch::channel(0).0,
            to_server: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !shared.open.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                            forward(client, server, shared).await;
                        }
                    });
                }
            }
        });
        Self { port, shared, task }
    }

    /// Drops every live connection (queries in flight lose their socket) and refuses
    /// new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }

    /// How many chunks clients have sent the server so far, over every connection.
    pub fn sent_to_server(&self) -> u64 {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let mut cut = shared.cuts.subscribe();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, &shared, Some(&shared.to_server)) => {}
        _ = pump(server_read, client_write, &shared, None) => {}
        _ = cut.changed() => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    count: Option<&AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(count) = count {
            count.fetch_add(1, Ordering::SeqCst);
        }
        let latency = shared.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
