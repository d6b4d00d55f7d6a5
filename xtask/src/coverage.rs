//! `cargo xtask coverage`: line coverage of the workspace's crates, measured by
//! cargo-tarpaulin's LLVM engine with the Redis and end-to-end suites included,
//! summed per crate.
//!
//! The LLVM engine (`-C instrument-coverage`) needs no `llvm-tools` component:
//! tarpaulin reads the `.profraw` files itself. Every instrumented process
//! writes one, named by `LLVM_PROFILE_FILE` (tarpaulin sets it per test binary
//! with `%p` in it), so the `mcp-proxy` binary the end-to-end tests start,
//! built instrumented by the same run, counts too: the tests keep that variable
//! in its environment and stop it with SIGTERM, after which it exits and writes
//! its profile. tarpaulin merges every profile written during a test binary's
//! run and maps it through the test binary and the workspace's binaries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::integration::{self, TestServices};
use crate::process;

pub const HELP: &str = "\
cargo xtask coverage [--package <crate>[,<crate>...]] [--skip-services] [-- <tarpaulin flags>]

Measures line coverage with cargo-tarpaulin (LLVM engine), pinned at 0.37.5 and
installed into target/tools when missing (cargo install --locked: crates.io,
a few minutes of compiling once). Starts what `cargo xtask integration` starts
(Redis standalone + cluster, the Python and npm MCP peers) and runs every
test, the ignored ones included, built instrumented into target/coverage/build.
The mcp-proxy binary the end-to-end tests start is instrumented as well, and
its profiles are counted.

Prints line coverage per crate (files under src/, a crate's src/bin/ counted
apart; with --package only those crates) against the 90% target, and writes
under target/coverage/:
  summary.md               the table, and per file its uncovered lines
  tarpaulin-report.json    tarpaulin's report, lcov.info, tarpaulin-report.html

Slow: a whole-workspace build and test run, instrumented, takes tens of
minutes on two cores, which is why `cargo xtask ci` does not run it.

Flags:
  --package <crates>   only these crates' tests (comma-separated)
  --skip-services      start nothing and leave the ignored tests out
  -- <flags>           passed to cargo-tarpaulin (e.g. -- --exclude-files 'x/*')

Examples:
  cargo xtask coverage
  cargo xtask coverage --package session-store --skip-services
";

/// The cargo-tarpaulin release this command installs and runs.
pub const TARPAULIN_VERSION: &str = "0.37.5";
/// Longest run of one test binary, in seconds (tarpaulin's `--timeout`).
const TEST_BINARY_TIMEOUT_SECS: &str = "1800";
/// The line coverage each crate is held to, in percent.
pub const TARGET_PERCENT: f64 = 90.0;

/// What `cargo xtask coverage` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Crates whose tests run (empty: the workspace but xtask).
    pub packages: Vec<String>,
    /// Start no services and run no ignored tests.
    pub skip_services: bool,
    /// Extra cargo-tarpaulin flags.
    pub tarpaulin_args: Vec<String>,
}

/// `cargo xtask coverage`.
pub fn run(options: &Options) -> Result<()> {
    let root = crate::workspace_root();
    let out_dir = crate::target_dir().join("coverage");
    let tarpaulin = ensure_tarpaulin()?;
    let services = if options.skip_services {
        None
    } else {
        let services = TestServices::start()?;
        println!(
            "xtask: coverage of the suites against: {}",
            services.redis.description
        );
        Some(services)
    };
    let report_path = out_dir.join("tarpaulin-report.json");
    // A report of an earlier run must not pass for this one's.
    let _ = fs::remove_file(&report_path);
    let mut command = tarpaulin_command(&tarpaulin, options, &out_dir);
    if let Some(services) = &services {
        command.envs(services.env());
    }
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        // tarpaulin's LLVM engine would run each test binary on one thread.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        command.env("RUST_TEST_THREADS", threads.to_string());
    }
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command.current_dir(&root);
    println!("xtask: {}", process::display(&command));
    let outcome = process::run_checked(&mut command);
    drop(services);
    // tarpaulin points build scripts' profiles at the workspace root.
    let _ = fs::remove_file(root.join("build_rs_cov.profraw"));
    if !report_path.is_file() {
        outcome?;
        bail!("cargo-tarpaulin wrote no {}", report_path.display());
    }
    let text = fs::read_to_string(&report_path)
        .with_context(|| format!("could not read {}", report_path.display()))?;
    let units = only_packages(summarize(&text, &root)?, &options.packages);
    let table = table(&units);
    print!("{table}");
    let summary_path = out_dir.join("summary.md");
    fs::write(&summary_path, summary_markdown(&units))
        .with_context(|| format!("could not write {}", summary_path.display()))?;
    println!(
        "xtask: per-file figures in {}, lines in {}",
        summary_path.display(),
        out_dir.join("tarpaulin-report.html").display()
    );
    outcome.context("some tests failed; the figures above count the ones that ran")
}

/// The pinned cargo-tarpaulin under `target/tools`, installed when missing.
fn ensure_tarpaulin() -> Result<PathBuf> {
    let root = crate::target_dir().join("tools");
    let binary = root.join("bin").join("cargo-tarpaulin");
    let mut version = Command::new(&binary);
    version.args(["tarpaulin", "--version"]);
    let installed = process::run_captured(&mut version, std::time::Duration::from_secs(30))
        .is_ok_and(|captured| captured.text.contains(TARPAULIN_VERSION));
    if installed {
        return Ok(binary);
    }
    println!(
        "xtask: installing cargo-tarpaulin {TARPAULIN_VERSION} into {}",
        root.display()
    );
    let mut install = Command::new(integration::cargo());
    install
        .args(["install", "--locked", "--no-default-features", "--root"])
        .arg(&root)
        .arg(format!("cargo-tarpaulin@{TARPAULIN_VERSION}"));
    process::run_checked(&mut install).context("could not install cargo-tarpaulin")?;
    Ok(binary)
}

/// The cargo-tarpaulin command line.
fn tarpaulin_command(tarpaulin: &Path, options: &Options, out_dir: &Path) -> Command {
    let mut command = Command::new(tarpaulin);
    command.args(["tarpaulin", "--engine", "llvm"]);
    if options.packages.is_empty() {
        // xtask is left out: --all-features would compile its Docker dependencies.
        command.args(["--workspace", "--exclude", "xtask"]);
    } else {
        command.arg("--packages").args(&options.packages);
    }
    command
        // Every suite runs and reports, even after one fails.
        .args(["--all-features", "--no-fail-fast", "--skip-clean"])
        // tarpaulin stops a test binary after 60 s by default; the end-to-end
        // and fault suites run longer than that, instrumented on two cores.
        .args(["--timeout", TEST_BINARY_TIMEOUT_SECS])
        // Its own target directory: instrumented artifacts would otherwise
        // replace the ordinary build's. No debug info: coverage needs none, and
        // it would double the disk and link time.
        .arg("--target-dir")
        .arg(out_dir.join("build"))
        .arg("--rustflags=-Cdebuginfo=0")
        .arg("--output-dir")
        .arg(out_dir)
        .args(["--out", "Json", "--out", "Lcov", "--out", "Html"])
        .args(&options.tarpaulin_args);
    if !options.skip_services {
        command.args(["--", "--include-ignored"]);
    }
    command
}

/// tarpaulin's JSON report (only the fields read here).
#[derive(Deserialize)]
struct Report {
    files: Vec<ReportFile>,
}

#[derive(Deserialize)]
struct ReportFile {
    /// The absolute path, one element per component.
    path: Vec<String>,
    traces: Vec<Trace>,
    covered: u64,
    coverable: u64,
}

#[derive(Deserialize)]
struct Trace {
    line: u64,
    /// `{"Line": <hits>}` for line coverage.
    stats: serde_json::Value,
}

/// Line coverage of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    /// Relative to the workspace root.
    pub path: String,
    /// Lines that ran at least once.
    pub covered: u64,
    /// Lines that could run.
    pub coverable: u64,
    /// The coverable lines that never ran, ascending.
    pub uncovered: Vec<u64>,
}

/// Line coverage of one crate (or of a crate's `src/bin/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitCoverage {
    /// The crate's name, with ` src/bin` for its binaries' own files.
    pub name: String,
    /// Its files, most uncovered lines first.
    pub files: Vec<FileCoverage>,
}

impl UnitCoverage {
    /// Lines that ran, of all its files.
    pub fn covered(&self) -> u64 {
        self.files.iter().map(|file| file.covered).sum()
    }

    /// Lines that could run, of all its files.
    pub fn coverable(&self) -> u64 {
        self.files.iter().map(|file| file.coverable).sum()
    }

    /// Covered lines in percent (100 for a unit without coverable lines).
    pub fn percent(&self) -> f64 {
        percent(self.covered(), self.coverable())
    }
}

fn percent(covered: u64, coverable: u64) -> f64 {
    if coverable == 0 {
        return 100.0;
    }
    // Line counts are far below 2^52: exact as f64.
    100.0 * covered as f64 / coverable as f64
}

/// The unit a file counts in: `crates/<crate>/src/...` counts in `<crate>`,
/// `crates/<crate>/src/bin/...` in `<crate> src/bin`; anything else (tests,
/// benches, xtask) in none.
fn unit_of(relative: &Path) -> Option<String> {
    let parts: Vec<&str> = relative.iter().filter_map(|part| part.to_str()).collect();
    match parts.as_slice() {
        ["crates", name, "src", "bin", _, ..] => Some(format!("{name} src/bin")),
        ["crates", name, "src", _, ..] => Some((*name).to_string()),
        _ => None,
    }
}

/// Per-crate coverage from tarpaulin's JSON report, in name order.
pub fn summarize(report_json: &str, root: &Path) -> Result<Vec<UnitCoverage>> {
    let report: Report =
        serde_json::from_str(report_json).context("tarpaulin's JSON report does not parse")?;
    let mut units: BTreeMap<String, Vec<FileCoverage>> = BTreeMap::new();
    for file in report.files {
        let absolute: PathBuf = file.path.iter().collect();
        let relative = absolute.strip_prefix(root).unwrap_or(&absolute);
        let Some(unit) = unit_of(relative) else {
            continue;
        };
        let mut uncovered: Vec<u64> = file
            .traces
            .iter()
            .filter(|trace| trace.stats.get("Line").and_then(|hits| hits.as_u64()) == Some(0))
            .map(|trace| trace.line)
            .collect();
        uncovered.sort_unstable();
        uncovered.dedup();
        units.entry(unit).or_default().push(FileCoverage {
            path: relative.display().to_string(),
            covered: file.covered,
            coverable: file.coverable,
            uncovered,
        });
    }
    Ok(units
        .into_iter()
        .map(|(name, mut files)| {
            files.sort_by(|a, b| {
                (b.coverable - b.covered.min(b.coverable))
                    .cmp(&(a.coverable - a.covered.min(a.coverable)))
                    .then_with(|| a.path.cmp(&b.path))
            });
            UnitCoverage { name, files }
        })
        .collect())
}

/// With packages picked, only their units: another crate's files are then
/// counted only as far as the picked crates' tests reach them (tarpaulin lists
/// the rest with a few lines each), which says nothing about that crate.
fn only_packages(units: Vec<UnitCoverage>, packages: &[String]) -> Vec<UnitCoverage> {
    if packages.is_empty() {
        return units;
    }
    units
        .into_iter()
        .filter(|unit| {
            let name = unit.name.split(' ').next().unwrap_or_default();
            packages.iter().any(|package| package == name)
        })
        .collect()
}

/// The per-crate table as printed.
pub fn table(units: &[UnitCoverage]) -> String {
    let mut text = format!(
        "{:<32} {:>9} {:>9} {:>9}  >= {TARGET_PERCENT}%\n",
        "crate", "lines", "covered", "coverage"
    );
    for unit in units {
        let _ = writeln!(
            text,
            "{:<32} {:>9} {:>9} {:>8.1}%  {}",
            unit.name,
            unit.coverable(),
            unit.covered(),
            unit.percent(),
            if unit.percent() >= TARGET_PERCENT {
                "yes"
            } else {
                "no"
            }
        );
    }
    text
}

/// `target/coverage/summary.md`: the table, then per crate its files with
/// their uncovered lines.
pub fn summary_markdown(units: &[UnitCoverage]) -> String {
    let mut text = String::from(
        "# Line coverage (cargo xtask coverage)\n\n\
         | crate | lines | covered | coverage |\n|---|---:|---:|---:|\n",
    );
    for unit in units {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.1}% |",
            unit.name,
            unit.coverable(),
            unit.covered(),
            unit.percent()
        );
    }
    for unit in units {
        let _ = write!(
            text,
            "\n## {}\n\n| file | lines | covered | coverage | uncovered lines |\n|---|---:|---:|---:|---|\n",
            unit.name
        );
        for file in &unit.files {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {:.1}% | {} |",
                file.path,
                file.coverable,
                file.covered,
                percent(file.covered, file.coverable),
                line_ranges(&file.uncovered)
            );
        }
    }
    text
}

/// Ascending line numbers as ranges: `[3, 4, 5, 9]` is `3-5, 9`.
pub fn line_ranges(lines: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &line in lines {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == line => *end = line,
            _ => ranges.push((line, line)),
        }
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::args_of;

    const REPORT: &str = r#"{
      "files": [
        {"path": ["/", "w", "crates", "session-store", "src", "fallback", "store.rs"],
         "content": "…", "covered": 2, "coverable": 4,
         "traces": [
           {"line": 7, "address": [], "length": 1, "stats": {"Line": 0}},
           {"line": 3, "address": [], "length": 1, "stats": {"Line": 5}},
           {"line": 8, "address": [], "length": 1, "stats": {"Line": 0}},
           {"line": 4, "address": [], "length": 1, "stats": {"Line": 1}}]},
        {"path": ["/", "w", "crates", "session-store", "src", "lib.rs"],
         "content": "", "covered": 6, "coverable": 6, "traces": []},
        {"path": ["/", "w", "crates", "session-store", "src", "bin", "child.rs"],
         "content": "", "covered": 0, "coverable": 10, "traces": []},
        {"path": ["/", "w", "crates", "session-store", "tests", "open.rs"],
         "content": "", "covered": 1, "coverable": 100, "traces": []},
        {"path": ["/", "w", "xtask", "src", "main.rs"],
         "content": "", "covered": 0, "coverable": 50, "traces": []}
      ],
      "coverage": 10.0, "covered": 9, "coverable": 170
    }"#;

    #[test]
    fn files_are_summed_by_crate_and_tests_benches_and_xtask_left_out() {
        let units = summarize(REPORT, Path::new("/w")).unwrap();
        let names: Vec<&str> = units.iter().map(|unit| unit.name.as_str()).collect();
        assert_eq!(names, ["session-store", "session-store src/bin"]);
        assert_eq!((units[0].covered(), units[0].coverable()), (8, 10));
        assert!((units[0].percent() - 80.0).abs() < 1e-9);
        assert_eq!((units[1].covered(), units[1].coverable()), (0, 10));
    }

    #[test]
    fn a_crates_files_come_most_uncovered_first_with_their_uncovered_lines() {
        let units = summarize(REPORT, Path::new("/w")).unwrap();
        let first = &units[0].files[0];
        assert_eq!(first.path, "crates/session-store/src/fallback/store.rs");
        assert_eq!(first.uncovered, [7, 8]);
        assert_eq!(units[0].files[1].path, "crates/session-store/src/lib.rs");
    }

    #[test]
    fn a_report_that_does_not_parse_is_an_error_naming_tarpaulin() {
        let error = summarize("{\"files\": 3}", Path::new("/w")).unwrap_err();
        assert!(format!("{error:#}").contains("tarpaulin"), "{error:#}");
    }

    #[test]
    fn the_table_gives_each_crate_its_verdict() {
        let units = summarize(REPORT, Path::new("/w")).unwrap();
        let table = table(&units);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("session-store "), "{table}");
        assert!(
            lines[1].contains("80.0%") && lines[1].ends_with("no"),
            "{table}"
        );
        let full = UnitCoverage {
            name: "x".into(),
            files: vec![FileCoverage {
                path: "crates/x/src/lib.rs".into(),
                covered: 9,
                coverable: 10,
                uncovered: vec![1],
            }],
        };
        assert!(super::table(&[full])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("yes"));
    }

    #[test]
    fn the_summary_lists_each_file_with_its_uncovered_ranges() {
        let units = summarize(REPORT, Path::new("/w")).unwrap();
        let markdown = summary_markdown(&units);
        assert!(
            markdown.contains("| session-store | 10 | 8 | 80.0% |"),
            "{markdown}"
        );
        assert!(
            markdown
                .contains("| crates/session-store/src/fallback/store.rs | 4 | 2 | 50.0% | 7-8 |"),
            "{markdown}"
        );
    }

    #[test]
    fn picked_packages_show_only_their_own_crates() {
        let units = summarize(REPORT, Path::new("/w")).unwrap();
        let picked = only_packages(units.clone(), &["session-store".into()]);
        assert_eq!(picked.len(), 2, "the crate and its src/bin");
        assert!(only_packages(units.clone(), &["mcp-proxy".into()]).is_empty());
        assert_eq!(only_packages(units, &[]).len(), 2);
    }

    #[test]
    fn line_ranges_join_consecutive_lines() {
        assert_eq!(line_ranges(&[3, 4, 5, 9, 11, 12]), "3-5, 9, 11-12");
        assert_eq!(line_ranges(&[]), "");
    }

    #[test]
    fn a_crate_without_coverable_lines_is_not_a_division_by_zero() {
        let empty = UnitCoverage {
            name: "empty".into(),
            files: vec![],
        };
        assert_eq!(empty.percent(), 100.0);
    }

    #[test]
    fn the_whole_workspace_but_xtask_runs_with_ignored_tests() {
        let command = tarpaulin_command(
            Path::new("/t/cargo-tarpaulin"),
            &Options::default(),
            Path::new("/w/target/coverage"),
        );
        let args = args_of(&command);
        assert_eq!(args[..3], ["tarpaulin", "--engine", "llvm"]);
        assert_eq!(args[3..6], ["--workspace", "--exclude", "xtask"]);
        assert!(
            args.contains(&"/w/target/coverage/build".to_string()),
            "{args:?}"
        );
        let timeout = args.iter().position(|arg| arg == "--timeout").unwrap();
        assert_eq!(args[timeout + 1], TEST_BINARY_TIMEOUT_SECS);
        assert_eq!(args[args.len() - 2..], ["--", "--include-ignored"]);
    }

    #[test]
    fn picked_packages_without_services_run_no_ignored_tests() {
        let options = Options {
            packages: vec!["session-store".into(), "mcp-proxy".into()],
            skip_services: true,
            tarpaulin_args: vec!["--verbose".into()],
        };
        let args = args_of(&tarpaulin_command(
            Path::new("cargo-tarpaulin"),
            &options,
            Path::new("out"),
        ));
        assert!(!args.contains(&"--workspace".to_string()), "{args:?}");
        let packages = args.iter().position(|arg| arg == "--packages").unwrap();
        assert_eq!(
            args[packages + 1..packages + 3],
            ["session-store", "mcp-proxy"]
        );
        assert_eq!(args.last().map(String::as_str), Some("--verbose"));
        assert!(!args.contains(&"--include-ignored".to_string()), "{args:?}");
    }
}
