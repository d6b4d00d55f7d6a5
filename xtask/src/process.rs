//! Child processes that stop when the user presses Ctrl-C (or CI sends SIGTERM).
//!
//! The signal handler only raises a flag: every wait in xtask polls it, kills
//! what it is waiting on and returns an error, so the stack unwinds normally and
//! the `Drop` of every Redis server and temp dir still runs.
//!
//! Each child gets its own process group, so stopping it also stops what it
//! started (the test binaries under `cargo test`), even when only xtask got the
//! signal.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Routes SIGINT and SIGTERM to the [`interrupted`] flag instead of killing xtask.
pub fn install_interrupt_handler() {
    if let Err(error) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
        eprintln!("xtask: warning: Ctrl-C will not tear Redis down cleanly: {error}");
    }
}

/// True once SIGINT or SIGTERM has been received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with a clear message when an interrupt has been received.
pub fn bail_if_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// The command line as a user would type it, for logs and error messages.
pub fn display(command: &Command) -> String {
    // `cargo` rather than the toolchain path in $CARGO: shorter and copy-pasteable.
    let program = Path::new(command.get_program());
    let mut line = if program.file_name() == Some(OsStr::new("cargo")) {
        "cargo".to_string()
    } else {
        program.to_string_lossy().into_owned()
    };
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&shell_word(arg));
    }
    line
}

fn shell_word(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The arguments of `command`, lossily decoded (tests of command lines).
#[cfg(test)]
pub fn args_of(command: &Command) -> Vec<String> {
    command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect()
}

/// Runs `command` with inherited stdio and fails unless it exits successfully.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let line = display(command);
    let mut child = command
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let status = wait_interruptibly(&mut child, None).with_context(|| format!("`{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Output of a command run to completion with captured stdout and stderr.
#[derive(Debug)]
pub struct Captured {
    /// How the command ended.
    pub status: ExitStatus,
    /// stdout followed by stderr, lossily decoded.
    pub text: String,
}

/// Runs `command` with captured output, killing it after `timeout`.
pub fn run_captured(command: &mut Command, timeout: Duration) -> Result<Captured> {
    let line = display(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let pid = child.id();
    // Readers on their own threads so a chatty child never blocks on a full pipe.
    let (mut child, stdout, stderr) = take_pipes(child);
    let status = wait_interruptibly(&mut child, Some(timeout))
        .with_context(|| format!("`{line}` (pid {pid})"))?;
    let mut text = stdout.join().unwrap_or_default();
    text.push_str(&stderr.join().unwrap_or_default());
    Ok(Captured { status, text })
}

type PipeReader = thread::JoinHandle<String>;

fn take_pipes(mut child: Child) -> (Child, PipeReader, PipeReader) {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> PipeReader {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    (child, stdout, stderr)
}

/// True when `command` exits successfully within `timeout`; any failure is false.
pub fn succeeds_within(command: &mut Command, timeout: Duration) -> bool {
    run_captured(command, timeout).is_ok_and(|captured| captured.status.success())
}

fn wait_interruptibly(child: &mut Child, timeout: Option<Duration>) -> Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(status);
        }
        let timed_out = timeout.is_some_and(|limit| started.elapsed() > limit);
        if interrupted() || timed_out {
            kill_group(child);
            if timed_out {
                bail!("killed after {:?} without finishing", started.elapsed());
            }
            bail!("interrupted");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Kills `child` and every process in its group, then reaps `child`.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The first executable named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// True for a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--dir", "/tmp/a b"]);
        assert_eq!(display(&command), "redis-server --save '' --dir '/tmp/a b'");
    }

    #[test]
    fn captured_output_includes_stdout_and_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let captured = run_captured(&mut command, Duration::from_secs(30)).unwrap();
        assert_eq!(captured.status.code(), Some(3));
        assert!(captured.text.contains("out") && captured.text.contains("err"));
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let error = run_captured(&mut command, Duration::from_millis(100)).unwrap_err();
        assert!(format!("{error:#}").contains("killed after"), "{error:#}");
    }

    #[test]
    fn sh_is_found_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("no-such-binary-for-xtask").is_none());
    }
}
