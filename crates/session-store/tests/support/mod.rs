//! Harness of the fault tests: redis-server processes the test controls (kill,
//! restart on the same port) and a TCP fault proxy (latency, stall, cut).
//! Everything binds 127.0.0.1 on free ports; processes die on drop; every wait
//! is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[cfg(feature = "redis")]
pub mod stores;

/// The redis-server binary: `TEST_REDIS_SERVER`, else `redis-server`.
pub fn server_binary() -> PathBuf {
    std::env::var_os("TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "session-store-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server on 127.0.0.1:`port`, killed on drop.
pub struct RedisProcess {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    pub dir: TempDir,
}

impl RedisProcess {
    /// Starts a server without persistence, plus `extra` arguments
    /// (`["--appendonly", "yes"]`, ...).
    pub fn start(extra: &[&str]) -> Self {
        for _ in 0..3 {
            let port = free_port();
            let mut process = RedisProcess {
                port,
                args: extra.iter().map(|a| (*a).to_owned()).collect(),
                child: None,
                dir: TempDir::new("redis"),
            };
            if process.spawn() {
                return process;
            }
        }
        panic!(
            "could not start {} on a free port",
            server_binary().display()
        );
    }

    fn spawn(&mut self) -> bool {
        let mut command = Command::new(server_binary());
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(self.dir.0.join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server_binary().display()));
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(15))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            // NOAUTH: the server answers, but only to an authenticated user.
            if command(self.port, &["PING"])
                .is_ok_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            self.kill();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one inline command and returns the first reply line (bounded by a
/// 2s timeout).
pub fn command(port: u16, words: &[&str]) -> std::io::Result<String> {
    let mut stream = StdStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = vec![0u8; 64 * 1024];
    let n = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

/// Sends `AUTH user password` and then `words` on one connection; returns the
/// second reply's first line.
pub fn command_as(
    port: u16,
    user: &str,
    password: &str,
    words: &[&str],
) -> std::io::Result<String> {
    let mut stream = StdStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = String::new();
    for command in [&["AUTH", user, password][..], words] {
        request.push_str(&format!("*{}\r\n", command.len()));
        for word in command {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.windows(2).filter(|w| w == b"\r\n").count() < 2 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    Ok(text.lines().nth(1).unwrap_or_default().to_owned())
}

/// What the fault proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward at once.
    None,
    /// Forward each chunk after this delay.
    Latency(Duration),
    /// Stop forwarding (bytes wait in the kernel until healed): commands get no
    /// reply, as with a hung server or a black-holed route.
    Stall,
}

/// A TCP proxy on 127.0.0.1 in front of an upstream address.
pub struct FaultProxy {
    pub port: u16,
    fault: watch::Sender<Fault>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, fault_rx) = watch::channel(Fault::None);
        let (cut, cut_rx) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (fault_rx, cut_rx) = (fault_rx.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut cut_watch = cut_rx.clone();
                    let generation = *cut_watch.borrow_and_update();
                    tokio::select! {
                        _ = pump(client_read, server_write, fault_rx.clone()) => {}
                        _ = pump(server_read, client_write, fault_rx) => {}
                        _ = async {
                            while cut_watch.changed().await.is_ok() {
                                if *cut_watch.borrow() != generation { break; }
                            }
                        } => {}
                    }
                });
            }
        });
        FaultProxy {
            port,
            fault,
            cut,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every open connection (new ones are accepted).
    pub fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // While stalled, read nothing: the sender's bytes wait in the kernel.
        loop {
            let current = *fault.borrow_and_update();
            if current != Fault::Stall {
                break;
            }
            if fault.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let current = *fault.borrow();
        match current {
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Stall => {
                // Stalled after this chunk was read: hold it until healed.
                while *fault.borrow_and_update() == Fault::Stall {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
            Fault::None => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Polls `condition` every 20ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Shared between load tasks: a stop flag.
pub type Stop = Arc<std::sync::atomic::AtomicBool>;
