//! The official TypeScript MCP SDK (1.x, a handshake-era peer) and the reference
//! server `@modelcontextprotocol/server-everything` for the end-to-end tests and
//! benches: `npm ci` of the lockfile committed in `xtask/npm/` into
//! `target/npm-mcp`, redone only when that lockfile changes, and named to the
//! tests by [`NPM_DIR_VAR`].
//!
//! Start the reference server from a test as
//! `node -r $TEST_MCP_NPM_DIR/loopback.cjs $TEST_MCP_NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp`
//! with `PORT` set: the preload makes its `listen(PORT)` bind 127.0.0.1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process;

/// Variable naming the folder holding `node_modules/` and `loopback.cjs`.
pub const NPM_DIR_VAR: &str = "TEST_MCP_NPM_DIR";
/// The pinned reference server, as in `xtask/npm/package.json`.
pub const SERVER_EVERYTHING_VERSION: &str = "2026.8.31";
/// The pinned TypeScript SDK, as in `xtask/npm/package.json`.
pub const TYPESCRIPT_SDK_VERSION: &str = "1.32.2";

/// Files copied from `xtask/npm/` next to the installed `node_modules/`.
const FILES: [&str; 3] = ["package.json", "package-lock.json", "loopback.cjs"];
/// Longest `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The install folder, after `npm ci` when the pinned packages are missing or
/// their lockfile changed.
pub fn ensure_packages() -> Result<PathBuf> {
    let source = crate::workspace_root().join("xtask").join("npm");
    let dir = crate::target_dir().join("npm-mcp");
    let lock = fs::read(source.join("package-lock.json"))
        .with_context(|| format!("could not read {}/package-lock.json", source.display()))?;
    let stamp = dir.join("node_modules").join(".xtask-lock");
    if fs::read(&stamp).is_ok_and(|installed| installed == lock)
        && dir.join("node_modules").is_dir()
    {
        copy_files(&source, &dir)?;
        return Ok(dir);
    }
    let Some(npm) = process::find_on_path("npm") else {
        bail!("npm is not on PATH: install Node.js 20 or later with npm (apt-get install -y nodejs npm) for the TypeScript SDK and server-everything tests");
    };
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    copy_files(&source, &dir)?;
    println!(
        "xtask: installing @modelcontextprotocol/server-everything@{SERVER_EVERYTHING_VERSION} and @modelcontextprotocol/sdk@{TYPESCRIPT_SDK_VERSION} into {}",
        dir.display()
    );
    let mut install = Command::new(npm);
    install
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir);
    let captured = process::run_captured(&mut install, INSTALL_TIMEOUT)
        .context("could not run npm ci for the pinned MCP packages")?;
    if !captured.status.success() {
        bail!(
            "npm ci in {} failed ({}):\n{}",
            dir.display(),
            captured.status,
            captured.text
        );
    }
    fs::write(&stamp, &lock).with_context(|| format!("could not write {}", stamp.display()))?;
    Ok(dir)
}

fn copy_files(source: &Path, dir: &Path) -> Result<()> {
    for file in FILES {
        fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("could not copy {file} into {}", dir.display()))?;
    }
    Ok(())
}
