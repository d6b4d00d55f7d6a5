//! `cargo xtask demo`: the proxy at work in under a minute, with nothing to set
//! up. It builds the binaries, starts the demo upstream and the proxy (one on the
//! memory store, or two on one Redis) on free loopback ports, runs the scripted
//! client through them, and stops everything, also on failure or Ctrl-C.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::integration;
use crate::process;
use crate::redis::{RedisServer, Role, TempDir};

pub const HELP: &str = "\
cargo xtask demo [--storage memory|redis]

Builds mcp-proxy, demo-upstream and demo-client (cargo build -p mcp-proxy --bins,
debug profile: the quickest build from a clean clone), starts the demo upstream
(an MCP server with the tools echo, add and countdown) and mcp-proxy in front of
it on free 127.0.0.1 ports, runs the scripted MCP client through the proxy, and
prints the session and frames the proxy recorded (its admin listener's
/sessions/{id}). Everything it started is stopped afterwards, also on failure or
Ctrl-C.

  --storage memory   one proxy on the in-process memory store (default; needs
                     nothing installed)
  --storage redis    a redis-server (from PATH) and two proxies A and B on it: the
                     session is initialized through A and used through B, and
                     both show the same recorded session
";

/// Where the proxies keep their sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// One proxy on the memory store.
    Memory,
    /// Two proxies sharing one local Redis.
    Redis,
}

impl Storage {
    /// Parses the `--storage` value.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "memory" => Ok(Storage::Memory),
            "redis" => Ok(Storage::Redis),
            other => bail!(
                "unknown storage `{other}` for `cargo xtask demo --storage`; use memory or redis"
            ),
        }
    }
}

/// Longest wait for a started binary to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines shown when a binary fails to start.
const LOG_TAIL_LINES: usize = 20;
const INSTALL_REDIS: &str = "apt-get update && apt-get install -y redis-server";

/// `cargo xtask demo`.
pub fn run(storage: Storage) -> Result<()> {
    let binaries = build_binaries()?;
    let scratch = TempDir::new("demo")?;
    let upstream = Service::start(
        Command::new(&binaries.upstream).args(["--listen", "127.0.0.1:0"]),
        "demo-upstream",
        scratch.path(),
    )?;
    println!(
        "xtask demo: demo-upstream (an MCP server: echo, add, countdown) on {}",
        upstream.address
    );
    let upstream_url = upstream.mcp_url();
    let mut client = Command::new(&binaries.client);
    // Declared before the services so that it outlives them: dropped last.
    let redis;
    let proxies = match storage {
        Storage::Memory => {
            let storage_toml = "[storage]\nbackend = \"memory\"\n";
            let proxy = start_proxy(&binaries, &upstream_url, storage_toml, scratch.path(), "")?;
            println!(
                "xtask demo: mcp-proxy on {}, memory store, admin listener on {}",
                proxy.address,
                proxy.admin_address()?
            );
            client
                .arg("--url")
                .arg(proxy.mcp_url())
                .arg("--admin-url")
                .arg(proxy.admin_url()?);
            vec![proxy]
        }
        Storage::Redis => {
            let binary = process::find_on_path("redis-server").with_context(|| {
                format!(
                    "`--storage redis` needs redis-server on PATH; install it with:\n    {INSTALL_REDIS}\n\
                     or run `cargo xtask demo` for the memory store"
                )
            })?;
            redis = RedisServer::start(&binary, Role::Standalone)
                .context("starting redis-server for the demo")?;
            println!(
                "xtask demo: redis {} on {}",
                redis.version()?,
                redis.address()
            );
            let storage_toml = format!(
                "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{}\"\nkey_prefix = \"mcp-demo\"\n",
                redis.url()
            );
            let a = start_proxy(&binaries, &upstream_url, &storage_toml, scratch.path(), "a")?;
            let b = start_proxy(&binaries, &upstream_url, &storage_toml, scratch.path(), "b")?;
            println!(
                "xtask demo: mcp-proxy A on {} and B on {}, both on that Redis, admin listeners on {} and {}",
                a.address,
                b.address,
                a.admin_address()?,
                b.admin_address()?
            );
            client
                .arg("--url")
                .arg(a.mcp_url())
                .arg("--admin-url")
                .arg(a.admin_url()?)
                .arg("--then-url")
                .arg(b.mcp_url())
                .arg("--then-admin-url")
                .arg(b.admin_url()?);
            vec![a, b]
        }
    };
    println!();
    let outcome = process::run_checked(&mut client);
    println!();
    if outcome.is_err() && !process::interrupted() {
        for service in proxies.iter().chain([&upstream]) {
            eprintln!(
                "xtask demo: the end of {}'s log:\n{}",
                service.name,
                service.log_tail()
            );
        }
    }
    drop(proxies);
    drop(upstream);
    let stopped = match storage {
        Storage::Memory => "mcp-proxy and demo-upstream",
        Storage::Redis => "both proxies, demo-upstream and redis-server",
    };
    match &outcome {
        Ok(()) => println!("xtask demo: passed; stopped {stopped}"),
        Err(_) => println!("xtask demo: FAILED; stopped {stopped}"),
    }
    outcome.context("the demo client failed")
}

/// The three binaries of the demo.
struct Binaries {
    proxy: PathBuf,
    upstream: PathBuf,
    client: PathBuf,
}

fn build_binaries() -> Result<Binaries> {
    let mut build = Command::new(integration::cargo());
    build
        .current_dir(crate::workspace_root())
        .args(["build", "--package", "mcp-proxy", "--bins"]);
    println!(
        "xtask demo: {} (debug profile: the quickest from a clean clone)",
        process::display(&build)
    );
    let started = Instant::now();
    process::run_checked(&mut build)?;
    println!(
        "xtask demo: built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let dir = crate::target_dir().join("debug");
    let binaries = Binaries {
        proxy: dir.join("mcp-proxy"),
        upstream: dir.join("demo-upstream"),
        client: dir.join("demo-client"),
    };
    for binary in [&binaries.proxy, &binaries.upstream, &binaries.client] {
        if !process::is_executable(binary) {
            bail!(
                "`cargo build` succeeded but {} is missing; is CARGO_TARGET_DIR or build.target set?",
                binary.display()
            );
        }
    }
    Ok(binaries)
}

/// Starts `mcp-proxy` with its own config file: a free port, the upstream, an
/// admin listener on another free port, and `storage_toml`.
fn start_proxy(
    binaries: &Binaries,
    upstream_url: &str,
    storage_toml: &str,
    scratch: &Path,
    instance: &str,
) -> Result<Service> {
    let config = scratch.join(format!("mcp-proxy{instance}.toml"));
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream_url}\"\n\
         upstream_timeout = \"10s\"\nshutdown_grace = \"1s\"\nadmin_listen = \"127.0.0.1:0\"\n\n{storage_toml}"
    );
    fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    let mut command = Command::new(&binaries.proxy);
    // MCP_PROXY_* and SESSION_STORE_* in the user's shell must not change the demo.
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(&config);
    let name = if instance.is_empty() {
        "mcp-proxy".to_string()
    } else {
        format!("mcp-proxy-{instance}")
    };
    Service::start(&mut command, &name, scratch)
}

/// A server the demo started: killed (with its process group) on drop.
struct Service {
    name: String,
    child: Child,
    address: SocketAddr,
    /// The `... admin listening on <addr>` line's address, once read.
    admin: Cell<Option<SocketAddr>>,
    /// Further `listening on` lines: (is an admin listener, address).
    listening: mpsc::Receiver<(bool, String)>,
    log: PathBuf,
}

impl Service {
    /// Starts `command` in its own process group, its stderr into `<dir>/<name>.log`,
    /// and waits (bounded, interruptible) for the `... listening on <addr>` line it
    /// prints on stdout.
    fn start(command: &mut Command, name: &str, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let line = process::display(command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start `{line}`"))?;
        let (sender, receiver) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for output in BufReader::new(stdout).lines() {
                    let Ok(output) = output else { return };
                    if let Some((what, address)) = output.split_once("listening on ") {
                        let _ = sender.send((what.contains("admin"), address.trim().to_string()));
                    }
                }
            });
        }
        let mut service = Service {
            name: name.to_string(),
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: Cell::new(None),
            listening: receiver,
            log,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok((admin, address)) = service.listening.recv_timeout(Duration::from_millis(50))
            {
                let parsed = address
                    .parse()
                    .with_context(|| format!("{name} printed an unreadable address `{address}`"))?;
                if admin {
                    service.admin.set(Some(parsed));
                    continue;
                }
                service.address = parsed;
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "`{line}` exited at start ({status}); its log:\n{}",
                    service.log_tail()
                );
            }
            process::bail_if_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "`{line}` did not print its address within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    service.log_tail()
                );
            }
        }
    }

    fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// The address of the proxy's admin listener, from its
    /// `mcp-proxy admin listening on <addr>` line (printed right after the MCP one).
    fn admin_address(&self) -> Result<SocketAddr> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while self.admin.get().is_none() {
            if let Ok((true, address)) = self.listening.recv_timeout(Duration::from_millis(50)) {
                let parsed = address.parse().with_context(|| {
                    format!(
                        "{} printed an unreadable admin address `{address}`",
                        self.name
                    )
                })?;
                self.admin.set(Some(parsed));
            }
            process::bail_if_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "{} printed no admin listening line within {STARTUP_TIMEOUT:?}",
                    self.name
                );
            }
        }
        self.admin.get().context("the admin address was just read")
    }

    fn admin_url(&self) -> Result<String> {
        Ok(format!("http://{}", self.admin_address()?))
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_memory_or_redis() {
        assert_eq!(Storage::parse("memory").unwrap(), Storage::Memory);
        assert_eq!(Storage::parse("redis").unwrap(), Storage::Redis);
        let error = Storage::parse("postgres").unwrap_err().to_string();
        assert!(error.contains("`postgres`") && error.contains("memory or redis"));
    }

    #[test]
    fn a_service_that_exits_at_start_reports_its_log() {
        let dir = TempDir::new("demo-test").unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'bad config' >&2; exit 2"]);
        let error = Service::start(&mut command, "broken", dir.path())
            .err()
            .unwrap();
        let message = format!("{error:#}");
        assert!(message.contains("exited at start"), "{message}");
        assert!(message.contains("bad config"), "{message}");
    }

    #[test]
    fn a_service_is_found_by_its_listening_line_and_killed_on_drop() {
        let dir = TempDir::new("demo-test").unwrap();
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'fake listening on 127.0.0.1:4321'; echo 'fake admin listening on 127.0.0.1:4322'; exec sleep 30",
        ]);
        let service = Service::start(&mut command, "fake", dir.path()).unwrap();
        assert_eq!(service.address.port(), 4321);
        assert_eq!(service.mcp_url(), "http://127.0.0.1:4321/mcp");
        assert_eq!(service.admin_url().unwrap(), "http://127.0.0.1:4322");
        let pid = service.child.id();
        drop(service);
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "process {pid} survived the drop");
    }
}
