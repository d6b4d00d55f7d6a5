//! A redis-server of the bench's own on a free loopback port, killed on drop, so
//! no other process's traffic mixes into the numbers and no failure path leaves a
//! server running.

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a fresh redis-server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server --bind 127.0.0.1 --port <free> --save '' --appendonly no`.
pub struct DedicatedRedis {
    child: Child,
    port: u16,
}

impl DedicatedRedis {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free loopback port for redis-server: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it on PATH?): {e}"))?;
        // From here on, Drop kills the child on every path.
        let server = DedicatedRedis { child, port };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "redis-server on 127.0.0.1:{port} did not accept connections within {START_TIMEOUT:?}"
        ))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for DedicatedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
