//! The official Python MCP SDK for the end-to-end tests that need a 2026-07-28
//! client and server (`crates/mcp-proxy/tests/e2e_python.rs`): a venv under
//! `target/py-mcp` with `mcp` pinned to [`MCP_SDK_VERSION`], installed from PyPI
//! by pip when missing or of another version, and named to the tests by
//! [`PYTHON_VAR`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process;

/// The SDK release the tests are written against.
pub const MCP_SDK_VERSION: &str = "2.3.0";
/// Variable naming the venv's interpreter for the tests.
pub const PYTHON_VAR: &str = "TEST_MCP_PYTHON";

/// Longest a check of the installed version may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the venv creation and the pip install may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The venv's interpreter, after installing the pinned SDK when it is missing.
pub fn ensure_sdk() -> Result<PathBuf> {
    let venv = crate::target_dir().join("py-mcp");
    let python = venv.join("bin").join("python");
    if has_pinned_sdk(&python) {
        return Ok(python);
    }
    let Some(system_python) = process::find_on_path("python3") else {
        bail!("python3 is not on PATH: install Python 3.10 or later (apt-get install -y python3 python3-venv) for the Python MCP SDK tests");
    };
    println!(
        "xtask: installing the Python MCP SDK mcp=={MCP_SDK_VERSION} into {}",
        venv.display()
    );
    let mut create = Command::new(system_python);
    create.arg("-m").arg("venv").arg(&venv);
    run(&mut create, "create the venv (is python3-venv installed?)")?;
    let mut install = Command::new(venv.join("bin").join("pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("mcp=={MCP_SDK_VERSION}"));
    run(&mut install, "install the Python MCP SDK from PyPI")?;
    if !has_pinned_sdk(&python) {
        bail!(
            "{} still lacks mcp=={MCP_SDK_VERSION} after pip install",
            python.display()
        );
    }
    Ok(python)
}

fn has_pinned_sdk(python: &Path) -> bool {
    let mut check = Command::new(python);
    check.args([
        "-c",
        &format!("import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '{MCP_SDK_VERSION}')"),
    ]);
    python.is_file() && process::succeeds_within(&mut check, CHECK_TIMEOUT)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let captured = process::run_captured(command, INSTALL_TIMEOUT)
        .with_context(|| format!("could not {what}"))?;
    if !captured.status.success() {
        bail!("could not {what} ({}):\n{}", captured.status, captured.text);
    }
    Ok(())
}
