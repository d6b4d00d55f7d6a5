//! nginx as a plain reverse proxy in front of the same upstream, the yardstick the
//! issue's latency, throughput and CPU targets are stated against.
//!
//! The config is written into cargo's scratch directory (under `target/`):
//! `worker_processes 1`, `daemon off`, an upstream pool of HTTP/1.1 keep-alive
//! connections, `proxy_buffering off` (SSE replies pass through as they come),
//! access log off; pid, error log and temp paths in the same directory.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Longest wait for nginx to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nginx (master and one worker), stopped when dropped.
pub struct Nginx {
    master: Child,
    address: SocketAddr,
}

impl Nginx {
    /// The nginx binary: `nginx` on PATH, else `/usr/sbin/nginx`; `None` when neither.
    pub fn binary() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .find(|candidate| candidate.is_file())
        });
        on_path.or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nginx");
            sbin.is_file().then_some(sbin)
        })
    }

    /// Starts `binary` proxying to `upstream` (`http://host:port/...`; the path is
    /// kept by the client), with its files in a fresh directory under `scratch`.
    pub fn start(binary: &Path, upstream: SocketAddr, scratch: PathBuf) -> Nginx {
        std::fs::create_dir_all(&scratch).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = scratch.display();
        let config = format!(
            "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mcp {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen {address};
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"
        );
        let config_path = scratch.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let master = Command::new(binary)
            .arg("-p")
            .arg(&scratch)
            .arg("-e")
            .arg(scratch.join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut nginx = Nginx { master, address };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(address).is_err() {
            if let Ok(Some(status)) = nginx.master.try_wait() {
                let log = std::fs::read_to_string(scratch.join("error.log")).unwrap_or_default();
                panic!("nginx exited at start ({status}); its error log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {address} within {STARTUP_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// The proxied MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// The master's process id and those of its children (the worker).
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master.id();
        let mut pids = vec![master];
        pids.extend(crate::cpu::children(master));
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL on the master leaves the worker running until it notices; stop
        // the worker by its id first.
        for pid in crate::cpu::children(self.master.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}
