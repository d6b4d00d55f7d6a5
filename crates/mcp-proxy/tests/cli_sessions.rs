//! The operator's commands (`mcp-proxy sessions ...`, `check-config`): in-process
//! against a memory store, and as the migration path between backends: memory ->
//! JSON Lines -> Redis standalone -> JSON Lines -> Redis cluster, ids and frame
//! bytes identical (`cargo xtask integration -- -p mcp-proxy --test cli_sessions`),
//! once through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{http::HeaderMap, routing::delete, Router};
use common::SharedOutput;
use indicatif::ProgressBar;
use mcp_proxy::{
    commands::{
        check_config::{check, effective_settings, CheckConfigArgs},
        export::export,
        import::{import, open_redis},
        sessions::{self, DeleteArgs, ListArgs, RevokeArgs, ShowArgs, TailArgs},
        OnConflict,
    },
    config::{Overrides, ProxyConfig},
};
use session_store::{
    Direction, Frame, MemoryStore, NewSession, SessionId, SessionStatus, SessionStore,
    StoreSettings, Timestamp,
};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";
const CLUSTER_VAR: &str = "TEST_REDIS_CLUSTER_NODES";

fn now() -> Timestamp {
    Timestamp::from_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
}

/// Three sessions with frames of every shape: JSON in both directions, on
/// streams with event ids and headers, and one payload that is not UTF-8.
async fn sample_store() -> Arc<dyn SessionStore> {
    let store: Arc<dyn SessionStore> =
        Arc::new(MemoryStore::new(StoreSettings::default()).unwrap());
    for (n, (client, binding)) in [
        ("claude", "sub:aa"),
        ("cursor", "sub:bb"),
        ("claude", "sub:aa"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = SessionId::random().unwrap();
        let mut new = NewSession::new(id.clone())
            .with_protocol_version("2025-06-18")
            .with_upstream_session_id(format!("up-{n}"))
            .with_tag("binding", binding);
        new.client_info = Some(serde_json::json!({"clientInfo": {"name": client, "version": "1"}}));
        new.status = SessionStatus::Active;
        store.create(new).await.unwrap();
        for k in 0..(3 + n) {
            let request = format!(
                r#"{{"jsonrpc":"2.0","id":{k},"method":"tools/call","params":{{"name":"écho"}}}}"#
            );
            store
                .append_frame(&id, Frame::new(Direction::ClientToServer, now(), request))
                .await
                .unwrap();
            let reply = Frame::new(
                Direction::ServerToClient,
                now(),
                format!(r#"{{"jsonrpc":"2.0","id":{k},"result":{{}}}}"#),
            )
            .with_stream_id(format!("s{k}"))
            .with_header("content-type", "text/event-stream");
            store.append_frame(&id, reply).await.unwrap();
        }
        store
            .append_frame(
                &id,
                Frame::new(
                    Direction::ServerToClient,
                    now(),
                    vec![0xff, 0x00, 0xfe, b'{'],
                ),
            )
            .await
            .unwrap();
    }
    store
}

async fn export_bytes(store: &dyn SessionStore) -> Vec<u8> {
    let mut out = Vec::new();
    let report = export(store, &mut out, &ProgressBar::hidden())
        .await
        .unwrap();
    println!(
        "exported {} sessions, {} frames",
        report.sessions, report.frames
    );
    out
}

/// The session and frame lines of an export, order-free (each backend lists
/// sessions in its own order).
fn body_lines(export: &[u8]) -> BTreeSet<String> {
    let text = std::str::from_utf8(export).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["format"], "mcp-proxy-sessions");
    assert_eq!(header["version"], 1);
    lines.map(str::to_owned).collect()
}

/// Every session of `from` is in `to` with the same fields, times, counts and
/// revision, and the same frames under the same ids, byte for byte.
async fn assert_same_sessions(from: &dyn SessionStore, to: &dyn SessionStore) {
    let page = from.list(None, 100).await.unwrap();
    assert_eq!(page.items.len() as u64, to.count().await.unwrap());
    for session in page.items {
        let copy = to.get(&session.id).await.unwrap();
        assert_eq!(copy, session, "session {}", session.id);
        let frames = from.read_frames(&session.id, None, 1_000).await.unwrap();
        let copied = to.read_frames(&session.id, None, 1_000).await.unwrap();
        assert!(!frames.is_empty());
        assert_eq!(copied, frames, "frames of {}", session.id);
    }
}

async fn import_all(
    store: &session_store::RedisStore,
    export: &[u8],
    on_conflict: OnConflict,
) -> mcp_proxy::commands::import::ImportReport {
    import(store, &mut &export[..], on_conflict, &ProgressBar::hidden())
        .await
        .unwrap()
}

fn redis_config(topology_toml: &str) -> ProxyConfig {
    let prefix = format!("cli-sessions-{:08x}", rand::random::<u32>());
    let toml = format!(
        "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n[storage]\nbackend = \"redis\"\n\
         [storage.redis]\nkey_prefix = \"{prefix}\"\n{topology_toml}"
    );
    ProxyConfig::from_toml_str(&toml, &Overrides::default()).unwrap()
}

fn standalone_toml() -> String {
    let url = std::env::var(REDIS_URL_VAR)
        .unwrap_or_else(|_| panic!("{REDIS_URL_VAR} is not set: run `cargo xtask integration`"));
    format!("url = \"{url}\"\n")
}

fn cluster_toml() -> String {
    let raw = std::env::var(CLUSTER_VAR)
        .unwrap_or_else(|_| panic!("{CLUSTER_VAR} is not set: run `cargo xtask integration`"));
    let nodes: Vec<String> = raw
        .split(',')
        .filter(|node| !node.trim().is_empty())
        .map(|node| format!("\"redis://{}\"", node.trim()))
        .collect();
    format!("[storage.redis.cluster]\nnodes = [{}]\n", nodes.join(", "))
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn sessions_move_memory_to_redis_to_cluster_with_ids_and_bytes_identical() {
    let memory = sample_store().await;
    let first = export_bytes(memory.as_ref()).await;

    let standalone = open_redis(&redis_config(&standalone_toml())).await.unwrap();
    let report = import_all(&standalone, &first, OnConflict::Skip).await;
    println!("into standalone: {report:?}");
    assert_eq!(report.sessions_imported, 3);
    assert_same_sessions(memory.as_ref(), &standalone).await;

    let second = export_bytes(&standalone).await;
    assert_eq!(body_lines(&second), body_lines(&first));

    let cluster = open_redis(&redis_config(&cluster_toml())).await.unwrap();
    let report = import_all(&cluster, &second, OnConflict::Skip).await;
    println!("into cluster: {report:?}");
    assert_eq!(report.sessions_imported, 3);
    assert_same_sessions(memory.as_ref(), &cluster).await;
    assert_eq!(
        body_lines(&export_bytes(&cluster).await),
        body_lines(&first)
    );

    // Again: skip leaves every session as it is; overwrite replaces fields and
    // frames, and the frames are still the exported ones.
    let again = import_all(&cluster, &second, OnConflict::Skip).await;
    assert_eq!((again.sessions_imported, again.sessions_skipped), (0, 3));
    let id = memory.list(None, 1).await.unwrap().items[0].id.clone();
    cluster
        .append_frame(&id, Frame::new(Direction::ClientToServer, now(), "{}"))
        .await
        .unwrap();
    let over = import_all(&cluster, &second, OnConflict::Overwrite).await;
    assert_eq!(over.sessions_imported, 3);
    assert_eq!(
        cluster.read_frames(&id, None, 1_000).await.unwrap(),
        memory.read_frames(&id, None, 1_000).await.unwrap()
    );
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_binary_exports_imports_lists_and_revokes_between_redis_deployments() {
    let memory = sample_store().await;
    let scratch = scratch_dir();
    let source = scratch.join("source.toml");
    let target = scratch.join("target.toml");
    let prefix = |name: &str| format!("cli-bin-{name}-{:08x}", rand::random::<u32>());
    let upstream = "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n";
    std::fs::write(
        &source,
        format!(
            "{upstream}[storage]\nbackend = \"redis\"\n[storage.redis]\nkey_prefix = \"{}\"\n{}",
            prefix("a"),
            standalone_toml()
        ),
    )
    .unwrap();
    std::fs::write(
        &target,
        format!(
            "{upstream}[storage]\nbackend = \"redis\"\n[storage.redis]\nkey_prefix = \"{}\"\n{}",
            prefix("b"),
            cluster_toml()
        ),
    )
    .unwrap();
    // Seed the source deployment in-process (a memory store lives only here).
    let seed = scratch.join("seed.jsonl");
    std::fs::write(&seed, export_bytes(memory.as_ref()).await).unwrap();
    run_ok(
        &["sessions", "import", "--input", seed.to_str().unwrap()],
        &source,
    );

    let dump = scratch.join("dump.jsonl");
    run_ok(
        &["sessions", "export", "--output", dump.to_str().unwrap()],
        &source,
    );
    run_ok(
        &["sessions", "import", "--input", dump.to_str().unwrap()],
        &target,
    );
    let target_store =
        open_redis(&ProxyConfig::load(Some(&target), &Overrides::default()).unwrap())
            .await
            .unwrap();
    assert_same_sessions(memory.as_ref(), &target_store).await;

    let listed = run_ok(&["sessions", "list", "--client", "claude"], &target);
    println!("{listed}");
    assert_eq!(
        listed.lines().count(),
        1 + 2,
        "header and the two claude sessions"
    );
    let revoked = run_ok(
        &["sessions", "revoke", "--binding", "sub:aa", "--no-upstream"],
        &target,
    );
    assert!(revoked.contains("sessions ended 2"), "{revoked}");
    assert_eq!(target_store.count().await.unwrap(), 1);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn an_import_of_a_cut_file_says_how_many_sessions_it_imported_before_the_cut() {
    let memory = sample_store().await;
    let text = String::from_utf8(export_bytes(memory.as_ref()).await).unwrap();
    // The header, every line of the first two sessions, and half of the third
    // session's line. The second session is not imported: the cut line might
    // have been one of its frames.
    let lines: Vec<&str> = text.lines().collect();
    let third = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("{\"type\":\"session\""))
        .nth(2)
        .map(|(at, _)| at)
        .unwrap();
    let mut cut: String = lines[..third].iter().map(|l| format!("{l}\n")).collect();
    cut.push_str(&lines[third][..lines[third].len() / 2]);
    let store = open_redis(&redis_config(&standalone_toml())).await.unwrap();
    let error = import(
        &store,
        &mut cut.as_bytes(),
        OnConflict::Skip,
        &ProgressBar::hidden(),
    )
    .await
    .expect_err("a cut file is refused");
    let message = error.to_string();
    println!("{message}");
    assert!(message.contains("in the middle of its JSON"), "{message}");
    assert!(
        message.contains("sessions imported before it: 1 ("),
        "{message}"
    );
    assert!(message.contains("--on-conflict skip"), "{message}");
    assert_eq!(store.count().await.unwrap(), 1);
}

/// Runs the binary with `--config`, asserts success, returns stdout.
fn run_ok(args: &[&str], config: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mcp-proxy {args:?}: {stderr}");
    eprintln!("{stderr}");
    String::from_utf8(output.stdout).unwrap()
}

fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-sessions-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn list_filters_by_client_and_binding_and_show_prints_every_frame() {
    let store = sample_store().await;
    let mut out = Vec::new();
    let args = ListArgs {
        client: Some("CLAUDE".to_owned()),
        ..ListArgs::default()
    };
    assert_eq!(
        sessions::list(store.as_ref(), &args, &mut out)
            .await
            .unwrap(),
        2
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.contains("claude") && !text.contains("cursor"),
        "{text}"
    );

    let mut out = Vec::new();
    let args = ListArgs {
        binding: Some("sub:bb".to_owned()),
        json: true,
        ..ListArgs::default()
    };
    assert_eq!(
        sessions::list(store.as_ref(), &args, &mut out)
            .await
            .unwrap(),
        1
    );
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let id = line["id"].as_str().unwrap().to_owned();

    let mut out = Vec::new();
    let args = ShowArgs {
        id: id.clone(),
        payload: true,
    };
    sessions::show(store.as_ref(), &args, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    assert_eq!(
        text.matches("tools/call").count(),
        4 * 2,
        "summary and payload of 4 requests"
    );
    assert!(
        text.contains("result #3") && text.contains("(not JSON)"),
        "{text}"
    );
}

#[tokio::test]
async fn tail_prints_the_newest_frames_then_a_new_one() {
    let store = sample_store().await;
    let id = store.list(None, 1).await.unwrap().items[0].id.clone();
    let appender = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let message = r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#;
            store
                .append_frame(&id, Frame::new(Direction::ServerToClient, now(), message))
                .await
                .unwrap();
        })
    };
    let args = TailArgs {
        id: id.to_string(),
        lines: 2,
        interval: Duration::from_millis(20),
        count: Some(1),
        payload: false,
    };
    let mut out = Vec::new();
    let printed = tokio::time::timeout(
        Duration::from_secs(20),
        sessions::tail(store.as_ref(), &args, &mut out),
    )
    .await
    .unwrap()
    .unwrap();
    appender.await.unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    assert_eq!(printed.printed, 1);
    assert_eq!(printed.ended, None, "--count reached, the session lives on");
    assert_eq!(
        text.lines().count(),
        4,
        "the header, two old frames, one new"
    );
    assert!(text
        .lines()
        .last()
        .unwrap()
        .contains("notifications/progress"));
}

#[tokio::test]
async fn revoke_ends_every_session_of_a_principal_and_deletes_their_upstream_sessions() {
    let deletes = Arc::new(AtomicU64::new(0));
    let seen = deletes.clone();
    let app = Router::new().route(
        "/mcp",
        delete(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                assert!(headers.contains_key("mcp-session-id"));
                seen.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = ProxyConfig::from_toml_str(
        &format!("[proxy]\nupstream = \"http://{address}/mcp\"\n"),
        &Overrides::default(),
    )
    .unwrap();

    let store = sample_store().await;
    let args = RevokeArgs {
        binding: Some("sub:aa".to_owned()),
        ..RevokeArgs::default()
    };
    let mut out = Vec::new();
    let report = sessions::revoke(store.clone(), &config.proxy, &args, &mut out)
        .await
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out));
    assert_eq!(report.sessions_ended, 2);
    assert_eq!(report.upstream_ended, 2);
    assert_eq!(deletes.load(Ordering::SeqCst), 2);
    assert_eq!(store.count().await.unwrap(), 1);

    let left = store.list(None, 1).await.unwrap().items[0].id.to_string();
    let args = DeleteArgs {
        ids: vec![left, SessionId::random().unwrap().to_string()],
    };
    let (deleted, missing) = sessions::delete(store.as_ref(), &args, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((deleted, missing), (1, 1));
    assert_eq!(store.count().await.unwrap(), 0);
    server.abort();
}

#[tokio::test]
async fn check_config_redacts_every_secret_and_names_the_unreachable_store() {
    let toml = r#"
        [proxy]
        upstream = "http://operator:s3cret-upstream@127.0.0.1:9/mcp"
        admin_listen = "127.0.0.1:0"
        admin_token = "s3cret-admin-token-0123"
        binding_secret = "s3cret-binding-key-01234"
        [storage]
        backend = "redis"
        [storage.redis]
        url = "redis://:s3cret-redis@127.0.0.1:9/0"
        password = "s3cret-password"
        connect_timeout = "300ms"
    "#;
    let config = ProxyConfig::from_toml_str(toml, &Overrides::default()).unwrap();
    let printed = effective_settings(&config);
    assert!(!printed.contains("s3cret"), "{printed}");
    for line in [
        "admin_token = \"***\"",
        "binding_secret = \"***\"",
        "password = \"***\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in {printed}");
    }

    let mut out = Vec::new();
    let report = check(&config, &CheckConfigArgs { offline: false }, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    assert!(
        report.failures[0].starts_with("store:"),
        "{:?}",
        report.failures
    );
    assert!(
        report.failures[1].contains("127.0.0.1:9/mcp"),
        "{:?}",
        report.failures
    );
}

#[test]
fn the_deploy_config_passes_check_config() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mcp-proxy.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["check-config", "--offline", "--config"])
        .arg(&deploy)
        .env_remove("MCP_PROXY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("configuration: parsed\n"), "{stdout}");
    assert!(
        stdout
            .ends_with("\nresult: valid (offline: the store and the upstream were not checked)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n[storage]\nbackend = \"redis\"\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("ProxySettings {") && !stdout.contains("Some("),
        "a readable listing, not Rust's Debug form: {stdout}"
    );
}

/// Runs `mcp-proxy check-config` on `toml` (environment cleared): exit code,
/// stdout, stderr.
fn check_config_binary(toml: &str) -> (Option<i32>, String, String) {
    let (code, stdout, stderr, _) = check_config_binary_with(toml, &[], &[]);
    (code, stdout, stderr)
}

/// [`check_config_binary`] with environment variables `env` and more flags
/// `args`; also returns the configuration file's path.
fn check_config_binary_with(
    toml: &str,
    env: &[(&str, String)],
    args: &[String],
) -> (Option<i32>, String, String, PathBuf) {
    let dir = scratch_dir();
    let file = dir.join("check.toml");
    std::fs::write(&file, toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .args(["check-config", "--config"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        file,
    )
}

/// The check lines of a check-config output (`<check>: <outcome>`, one space:
/// the summary's `store:         redis ...` is not one), for `checks`, in order.
fn verdict_lines<'a>(stdout: &'a str, checks: &[&str]) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|line| {
            line.split_once(": ")
                .is_some_and(|(check, rest)| checks.contains(&check) && !rest.starts_with(' '))
        })
        .collect()
}

#[test]
fn check_config_gives_its_verdict_after_the_store_check_with_one_hint() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stdout, stderr) = check_config_binary(&format!(
        "[proxy]\nupstream = \"http://127.0.0.1:{closed}/mcp\"\n\
         [storage]\nbackend = \"redis\"\n[storage.redis]\n\
         url = \"redis://:s3cret@127.0.0.1:{closed}\"\nconnect_timeout = \"300ms\"\n"
    ));
    println!("{stdout}");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let lines = verdict_lines(&stdout, &["configuration", "store", "upstream", "result"]);
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "configuration: parsed");
    assert!(lines[1].starts_with("store: FAILED: "), "{stdout}");
    assert!(lines[2].starts_with("upstream: FAILED: "), "{stdout}");
    assert_eq!(lines[3], "result: NOT valid (failed: store, upstream)");
    // Unreachable: one hint at where the store is configured.
    assert_eq!(lines[1].matches("(check ").count(), 1, "{}", lines[1]);
    assert!(
        lines[1].contains(&format!(
            "(check storage.redis.url = \"redis://:***@127.0.0.1:{closed}\", from "
        )),
        "{}",
        lines[1]
    );
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

#[test]
fn check_config_hints_name_the_source_of_the_upstream_and_the_redis_url() {
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (upstream_port, redis_port) = (closed(), closed());
    let upstream = format!("http://127.0.0.1:{upstream_port}/mcp");
    let redis = format!("redis://127.0.0.1:{redis_port}");
    // The file names other (also closed) addresses where a layer above overrides it.
    let file_values = |upstream: &str, redis: &str| {
        format!(
            "[proxy]\nupstream = \"{upstream}\"\n[storage]\nbackend = \"redis\"\n\
             [storage.redis]\nurl = \"{redis}\"\nconnect_timeout = \"300ms\"\n"
        )
    };
    let beneath = file_values("http://127.0.0.1:9/mcp", "redis://127.0.0.1:9");
    /// The layer, the file, the environment and the flags of one run.
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, Vec<String>);
    let cases: [Case; 3] = [
        ("file", file_values(&upstream, &redis), vec![], vec![]),
        (
            "environment",
            beneath.clone(),
            vec![
                ("MCP_PROXY_UPSTREAM", upstream.clone()),
                ("SESSION_STORE_REDIS__URL", redis.clone()),
            ],
            vec![],
        ),
        (
            "flags",
            beneath,
            vec![],
            vec![
                "--upstream".to_owned(),
                upstream.clone(),
                "--redis-url".to_owned(),
                redis.clone(),
            ],
        ),
    ];
    for (layer, toml, env, args) in cases {
        let (code, stdout, stderr, file) = check_config_binary_with(&toml, &env, &args);
        let lines = verdict_lines(&stdout, &["store", "upstream"]);
        println!("{layer}:\n  {}", lines.join("\n  "));
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        assert_eq!(lines.len(), 2, "{stdout}");
        let (upstream_source, redis_source) = match layer {
            "file" => (
                format!("{}: proxy.upstream", file.display()),
                format!("{}: storage.redis.url", file.display()),
            ),
            "environment" => (
                "environment variable MCP_PROXY_UPSTREAM".to_owned(),
                "environment variable SESSION_STORE_REDIS__URL".to_owned(),
            ),
            _ => (
                "command-line override proxy.upstream".to_owned(),
                "command-line override storage.redis.url".to_owned(),
            ),
        };
        assert!(
            lines[0].contains(&format!(
                "(check storage.redis.url = \"{redis}\", from {redis_source}; and storage.redis.tls)"
            )),
            "{layer}: {}",
            lines[0]
        );
        assert!(
            lines[1].contains(&format!(
                "(check proxy.upstream = \"{upstream}\", from {upstream_source})"
            )),
            "{layer}: {}",
            lines[1]
        );
        assert!(!stdout.contains("[proxy] upstream"), "{stdout}");
    }
}

#[test]
#[ignore = "needs Redis: cargo xtask integration"]
fn check_config_names_refused_credentials_with_their_own_hint_only() {
    let url = std::env::var(REDIS_URL_VAR).expect("TEST_REDIS_URL (cargo xtask integration)");
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let (code, stdout, stderr) = check_config_binary(&format!(
        "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n\
         [storage]\nbackend = \"redis\"\n[storage.redis]\n\
         url = \"redis://nobody:s3cret@{address}\"\n"
    ));
    println!("{stdout}");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let lines = verdict_lines(&stdout, &["configuration", "store", "result"]);
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "configuration: parsed");
    assert!(lines[1].contains("refused the credentials"), "{stdout}");
    assert_eq!(lines[1].matches("(check ").count(), 1, "{}", lines[1]);
    assert!(
        lines[1].contains("(check storage.redis.username"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("result: NOT valid (failed: store"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

#[test]
fn a_url_not_written_scheme_slash_slash_is_refused_naming_its_source() {
    let dir = scratch_dir();
    let file = dir.join("one-slash.toml");
    std::fs::write(&file, "[proxy]\nupstream = \"http:/user:s3cret@h/mcp\"\n").unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[proxy]\nupstream = \"http://h/mcp\"\n").unwrap();
    let run = |config: &PathBuf, args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
            .env_clear()
            .envs(env.iter().copied())
            .args(["check-config", "--offline", "--config"])
            .arg(config)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
        println!("{stderr}");
        stderr
    };
    let one_slash =
        "`http:` is followed by 1 slash(es), not two (expected `http://` or `https://` and a host";
    let stderr = run(&file, &[], &[]);
    let from_file = format!(
        "proxy.upstream = \"***@h/mcp\" (from {}: proxy.upstream): {one_slash}",
        file.display()
    );
    assert!(stderr.contains(&from_file), "{stderr}");
    let stderr = run(
        &good,
        &[],
        &[("MCP_PROXY_UPSTREAM", "http:/user:s3cret@h/mcp")],
    );
    assert!(
        stderr.contains(&format!(
            "proxy.upstream = \"***@h/mcp\" (from environment variable MCP_PROXY_UPSTREAM): {one_slash}"
        )),
        "{stderr}"
    );
    let stderr = run(&good, &["--upstream", "http:/user:s3cret@h/mcp"], &[]);
    assert!(
        stderr.contains(&format!(
            "proxy.upstream = \"***@h/mcp\" (from command-line override proxy.upstream): {one_slash}"
        )),
        "{stderr}"
    );
    // The storage URL has the same check and names its source the same way.
    let stderr = run(
        &good,
        &[],
        &[("SESSION_STORE_REDIS__URL", "redis:/user:s3cret@h:6379")],
    );
    assert!(
        stderr.contains(
            "storage.redis.url (from environment variable SESSION_STORE_REDIS__URL): \
             `redis:` is followed by 1 slash(es), not two (expected `redis://` or `rediss://` and a host"
        ),
        "{stderr}"
    );
}

#[test]
fn check_config_fails_with_the_key_on_an_invalid_file() {
    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[proxy]\nupstream = \"not a url\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["check-config", "--offline", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("upstream"), "{stderr}");
}

#[test]
fn import_into_a_memory_store_is_refused_with_the_reason() {
    let dir = scratch_dir();
    let empty = dir.join("empty.jsonl");
    std::fs::write(
        &empty,
        "{\"format\":\"mcp-proxy-sessions\",\"version\":1,\"exported_at\":0}\n{\"type\":\"end\",\"sessions\":0,\"frames\":0}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["sessions", "import", "--storage", "memory", "--input"])
        .arg(&empty)
        .args(["--upstream", "http://127.0.0.1:9/mcp"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Redis only"), "{stderr}");
}

#[test]
fn checking_an_export_needs_no_configuration() {
    let dir = scratch_dir();
    let empty = dir.join("empty.jsonl");
    std::fs::write(
        &empty,
        "{\"format\":\"mcp-proxy-sessions\",\"version\":1,\"exported_at\":0}\n{\"type\":\"end\",\"sessions\":0,\"frames\":0}\n",
    )
    .unwrap();
    // No --config, no upstream, no store: the file alone is checked.
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["sessions", "import", "--check", "--input"])
        .arg(&empty)
        .env_remove("MCP_PROXY_UPSTREAM")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("a complete export: 0 sessions, 0 frames"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_export_cut_short_or_of_another_format_is_refused_naming_the_line() {
    let store = sample_store().await;
    let full = export_bytes(store.as_ref()).await;
    let counts = mcp_proxy::commands::import::check_format(&mut full.as_slice())
        .await
        .unwrap();
    assert_eq!(counts, (3, 27));
    let text = String::from_utf8(full).unwrap();
    let cut: String = text
        .lines()
        .take(3)
        .map(|line| format!("{line}\n"))
        .collect();
    // Cut in the middle of the fourth line (a frame): the JSON ends early.
    let fourth = text.lines().nth(3).unwrap();
    let mid_line = format!("{cut}{}", &fourth[..fourth.len() / 2]);
    for (input, expected) in [
        (cut.as_str(), "without its `end` line"),
        (cut.as_str(), "nothing was written"),
        (
            mid_line.as_str(),
            "line 4: the line ends in the middle of its JSON",
        ),
        (
            "{\"format\":\"other\",\"version\":1,\"exported_at\":0}\n",
            "line 1",
        ),
        ("", "empty input"),
    ] {
        let error = mcp_proxy::commands::import::check_format(&mut input.as_bytes())
            .await
            .err()
            .unwrap_or_else(|| panic!("{input:?} was accepted"));
        assert!(error.to_string().contains(expected), "{error} / {expected}");
    }
}

/// A session whose frames carry the stream ids the proxy records (`r<frame id>`,
/// `g<16 hex>`) and long method names, in a store whose read pages are cut by
/// `max_read_bytes` after two or three frames.
async fn store_with_long_columns_and_short_pages() -> (Arc<dyn SessionStore>, SessionId, usize) {
    let settings = StoreSettings {
        max_read_bytes: 200,
        ..StoreSettings::default()
    };
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(settings).unwrap());
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let methods = [
        "initialize",
        "notifications/resources/list_changed",
        "tools/call",
        "notifications/message",
    ];
    let frames = 12;
    for n in 0..frames {
        let method = methods[n % methods.len()];
        let message = format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"{method}"}}"#);
        let stream = if n % 2 == 0 {
            format!("r{}-{n}", now().as_millis())
        } else {
            "g0123456789abcdef".to_owned()
        };
        let frame = Frame::new(Direction::ServerToClient, now(), message).with_stream_id(stream);
        store.append_frame(&id, frame).await.unwrap();
    }
    (store, id, frames)
}

#[tokio::test]
async fn show_lines_up_its_columns_and_reads_past_pages_cut_short_by_bytes() {
    let (store, id, frames) = store_with_long_columns_and_short_pages().await;
    let first_page = store.read_frames(&id, None, 1_000).await.unwrap().len();
    assert!(first_page < frames, "pages are cut by bytes: {first_page}");

    let mut out = Vec::new();
    let args = ShowArgs {
        id: id.to_string(),
        payload: false,
    };
    sessions::show(store.as_ref(), &args, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    let header = text
        .lines()
        .find(|line| line.starts_with("FRAME"))
        .unwrap_or_else(|| panic!("no header: {text}"));
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("FRAME"))
        .skip(1)
        .collect();
    println!("first page {first_page} frames; {} rows shown", rows.len());
    assert_eq!(rows.len(), frames, "every frame, not only the first page");
    // Left-aligned columns start where their header word starts; SIZE ends where
    // each size ends.
    let starts: Vec<usize> = ["DIRECTION", "STREAM", "TIME", "MESSAGE"]
        .iter()
        .map(|word| header.find(word).unwrap())
        .collect();
    let size_end = header.find("SIZE").unwrap() + "SIZE".len();
    for row in &rows {
        for &start in &starts {
            assert!(
                row.as_bytes()[start - 1] == b' ' && row.as_bytes()[start] != b' ',
                "column at {start} of {row:?} under {header:?}"
            );
        }
        assert_eq!(&row[size_end - 2..=size_end], " B ", "{row:?}");
    }
}

/// The tail polls on tokio's paused clock: what happens between two polls is
/// decided by the test, not by timing.
#[tokio::test(start_paused = true)]
async fn a_tail_whose_session_is_deleted_between_polls_says_the_last_frames_may_be_missing() {
    let store = sample_store().await;
    let id = store.list(None, 1).await.unwrap().items[0].id.clone();
    let interval = Duration::from_secs(1);
    let args = TailArgs {
        id: id.to_string(),
        lines: 1,
        interval,
        count: None,
        payload: false,
    };
    let output = SharedOutput::default();
    let mut writer = output.clone();
    let progress = |method: &str| {
        let message = format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#);
        Frame::new(Direction::ServerToClient, now(), message)
    };
    let session = async {
        // The tail printed the newest frame and sleeps until its next poll.
        while !output.text().contains("FRAME") {
            tokio::task::yield_now().await;
        }
        let read = store
            .append_frame(&id, progress("read/before"))
            .await
            .unwrap();
        tokio::time::advance(interval).await;
        for _ in 0..10_000 {
            if output.text().contains("read/before") {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Recorded after that poll, then the session ends before the next one.
        for method in ["lost/one", "lost/two"] {
            store.append_frame(&id, progress(method)).await.unwrap();
        }
        assert!(store.delete(&id).await.unwrap());
        read
    };
    let (tailed, read) = tokio::join!(sessions::tail(store.as_ref(), &args, &mut writer), session);
    let tailed = tailed.unwrap();
    let text = output.text();
    println!("{text}{:?}", tailed.ended);
    assert_eq!(
        tailed.printed, 1,
        "the frame read before the end is printed: {text}"
    );
    assert!(text.contains("read/before"), "{text}");
    assert!(!text.contains("lost/"), "{text}");
    let ended = tailed.ended.expect("the tail says the session ended");
    assert!(
        ended.contains(&format!("session `{id}` ended"))
            && ended.contains(&format!("frames recorded after frame {read}"))
            && ended.contains("may be missing"),
        "{ended}"
    );
}

#[tokio::test]
async fn export_and_tail_read_past_pages_cut_short_by_bytes() {
    let (store, id, frames) = store_with_long_columns_and_short_pages().await;
    let exported = export_bytes(store.as_ref()).await;
    let frame_lines = body_lines(&exported)
        .iter()
        .filter(|line| line.contains("\"type\":\"frame\""))
        .count();
    assert_eq!(frame_lines, frames);

    let args = TailArgs {
        id: id.to_string(),
        lines: frames,
        interval: Duration::from_millis(20),
        count: Some(0),
        payload: false,
    };
    let mut out = Vec::new();
    sessions::tail(store.as_ref(), &args, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1 + frames, "{text}");
}
