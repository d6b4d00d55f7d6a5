//! The session browser (`/ui/` on the admin listener) in a real headless
//! Chromium driven over WebDriver: token entry, the list, a filter, a session's
//! timeline with its JSON on demand, and the live tail receiving a frame that a
//! client causes while the page is open. Saves a screenshot to
//! `target/session-browser.png` (and to `docs/session-browser.png` with
//! `UPDATE_SCREENSHOT=1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{start_proxy, start_upstream, RawClient};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";
const TOKEN: &str = "browser-test-admin-token";
/// Longest wait for anything to appear in the page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// `chromedriver` on a free loopback port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let program = std::env::var("TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} (apt-get install chromium-driver): {e}")
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver { child, url }
    }

    async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        let mut options = json!({"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--window-size=1400,1200",
        ]});
        if let Ok(binary) = std::env::var("TEST_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver refused a session: {e}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client whose `initialize` names it `name`.
async fn client_named(url: &str, name: &str) -> RawClient {
    let mut client = RawClient::new();
    client.initialize_as(url, name).await;
    client
}

/// Waits (bounded) until `css` matches `count` elements or more; their number.
async fn wait_for_count(browser: &Client, css: &str, count: usize) -> usize {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let found = browser.find_all(Locator::Css(css)).await.unwrap().len();
        if found >= count {
            return found;
        }
        if Instant::now() > deadline {
            let text = browser
                .find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap_or_default();
            panic!("waited for {count} of {css}, found {found}; page:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (bounded) until the element `css` says `expected`.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let text = text_of(browser, css).await;
        if text.contains(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} says {text:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver: cargo xtask integration"]
async fn session_browser_lists_filters_opens_and_tails_a_session_in_chromium() {
    let upstream = start_upstream();
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        &format!("admin_token = \"{TOKEN}\"\n"),
        MEMORY,
    );
    let url = proxy.mcp_url();
    let inspector = client_named(&url, "inspector-browser-test").await;
    let _other = client_named(&url, "another-client").await;
    let reply = inspector
        .call_tool(&url, 1, "echo", json!({"text": "<b>not markup</b>"}))
        .await;
    assert_eq!(reply.status, 200);
    let session = inspector.session.clone().unwrap();

    let driver = ChromeDriver::start();
    let browser = driver.session().await;
    browser.goto(&proxy.admin_url("/ui/")).await.unwrap();

    // The listener has an admin_token: the page asks for it once.
    browser
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css("#token-input"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let listed = wait_for_count(&browser, "#sessions tbody tr", 2).await;
    println!("session browser: {listed} sessions listed");
    assert_eq!(listed, 2);

    // Filter by client name: only the inspector's session is left.
    browser
        .find(Locator::Css("#filter-q"))
        .await
        .unwrap()
        .send_keys("inspector")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#filter-apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + PAGE_TIMEOUT;
    let rows = loop {
        let rows = browser
            .find_all(Locator::Css("#sessions tbody tr"))
            .await
            .unwrap();
        if rows.len() == 1 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 1, "the filter leaves one session");
    assert_eq!(
        rows[0].attr("data-session").await.unwrap().as_deref(),
        Some(session.as_str())
    );
    assert!(text_of(&browser, "#sessions tbody td.client")
        .await
        .contains("inspector-browser-test"));

    // Open it: initialize, initialized, the call and its result on the timeline.
    rows[0]
        .find(Locator::Css("a.session-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let frames = wait_for_count(&browser, "#timeline li.frame", 4).await;
    println!("session browser: {frames} frames on the timeline");
    let methods = text_of(&browser, "#timeline").await;
    assert!(methods.contains("initialize"), "{methods}");
    assert!(methods.contains("tools/call"), "{methods}");

    // A frame's JSON on demand, as text (the markup in it is not rendered).
    let call = browser
        .find(Locator::XPath(
            "//li[contains(@class,'frame')][.//span[text()='tools/call']]",
        ))
        .await
        .unwrap();
    call.find(Locator::Css("button.json-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let payload = call
        .find(Locator::Css("pre.payload"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        payload.contains("\"text\": \"<b>not markup</b>\""),
        "{payload}"
    );
    assert!(browser
        .find_all(Locator::Css("#timeline b"))
        .await
        .unwrap()
        .is_empty());

    // Live tail: a call made now shows up without reloading.
    browser
        .find(Locator::Css("#tail-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "#tail-status", "live").await;
    let before = browser
        .find_all(Locator::Css("#timeline li.frame"))
        .await
        .unwrap()
        .len();
    let reply = inspector
        .call_tool(&url, 2, "add", json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(reply.status, 200);
    let after = wait_for_count(&browser, "#timeline li.frame", before + 2).await;
    println!("session browser: live tail added {} frames", after - before);
    let fresh = browser
        .find_all(Locator::Css("#timeline li.frame.new"))
        .await
        .unwrap();
    assert!(fresh.len() >= 2, "the tailed frames are marked new");

    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    // CARGO_TARGET_TMPDIR is `<target>/tmp`.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("session-browser.png");
    std::fs::write(&target, &png).unwrap();
    println!(
        "session browser: screenshot {} ({} bytes)",
        target.display(),
        png.len()
    );
    if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/session-browser.png");
        std::fs::write(&docs, &png).unwrap();
    }

    // End the session with its button (and the page's confirmation): back on the
    // list, which (still filtered) is empty, and the client's session is gone.
    browser
        .find(Locator::Css("#end-session"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.accept_alert().await.unwrap();
    let deadline = Instant::now() + PAGE_TIMEOUT;
    while !browser
        .find(Locator::Css("#list-empty"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the list did not come back empty"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = inspector
        .call_tool(&url, 3, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(after.status, 404, "the ended session is gone");
    browser.close().await.unwrap();
}
