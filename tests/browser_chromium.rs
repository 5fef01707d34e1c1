//! One real browser (SPEC §12): Debian's headless Chromium, driven through
//! chromedriver's WebDriver protocol (W3C, JSON over HTTP) by a small client
//! written on reqwest. `authgate demo` with the shipped gateway.toml; the browser
//! opens /protected, lands on the sign-in page, signs in, reads the greeting, and
//! its page script cannot see the token.
//!
//! `.ci/run` installs `chromium` and `chromium-driver`. Without them the test
//! fails when `CI=true` and says it was skipped otherwise. With
//! `AUTHGATE_UPDATE_SCREENSHOT=1` it writes the sign-in page to docs/sign-in.png.
mod common;
use common::webdriver::{tools, Browser, Driver};
use common::*;

use std::path::{Path, PathBuf};

#[tokio::test]
async fn a_real_browser_signs_in_through_the_page_and_its_script_never_sees_the_token() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    // `authgate demo` with the shipped config: sessions and the page are on by itself.
    let backend = dead_addr();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let config = shipped
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace("http://127.0.0.1:9000", &format!("http://{backend}"));
    assert_ne!(config, shipped, "the shipped gateway.toml changed shape");
    let gw = Gateway::start_in(TempDir::new("chromium"), &config, &[], "demo").unwrap();
    let r = register(&gw, "alice", "correct horse").await;
    assert_eq!(r.status(), 201);
    let origin = format!("http://{}", gw.addr);

    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("chromium-profile");
    let b = Browser::open(&driver, &chromium, profile.path()).await;

    // Not signed in: /protected sends the browser to the sign-in page.
    b.goto(&gw.url("/protected")).await;
    b.wait_for(&origin, "/login?return_to=/protected", "Sign in")
        .await;
    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sign-in.png");
    std::fs::write(&out, &png).unwrap();
    if std::env::var("AUTHGATE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sign-in.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(docs, &png).unwrap();
    }

    // A wrong password: the form again, with the error.
    b.fill("#username", "alice").await;
    b.fill("#password", "not the password").await;
    b.click("button[type=submit]").await;
    b.wait_for(&origin, "/login", "Invalid username or password")
        .await;

    // The right one: back on /protected, greeted by the demo backend.
    b.fill("#username", "alice").await;
    b.fill("#password", "correct horse").await;
    b.click("button[type=submit]").await;
    b.wait_for(&origin, "/protected", "Hello, alice!").await;
    assert_eq!(b.url().await, format!("{origin}/protected"));

    // The browser holds both cookies (Secure cookies over http://127.0.0.1: Chromium
    // counts loopback as a secure context), and page script sees neither.
    let cookies = b.cookies().await;
    for name in ["__Host-authgate", "__Host-authgate-refresh"] {
        let c = cookies
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the browser: {cookies:?}"));
        assert_eq!(c["httpOnly"], true, "{name}");
        assert_eq!(c["secure"], true, "{name}");
        assert_eq!(c["path"], "/", "{name}");
    }
    let visible = b.script("return document.cookie;").await;
    assert_eq!(visible, "", "document.cookie shows nothing: {visible}");

    // Sign out: both cookies go, and /protected asks for a sign-in again.
    b.click("button[type=submit]").await;
    b.wait_for(&origin, "/login", "Sign in").await;
    assert!(b.cookies().await.iter().all(|c| !c["name"]
        .as_str()
        .unwrap_or("")
        .starts_with("__Host-authgate")));
    b.goto(&gw.url("/protected")).await;
    b.wait_for(&origin, "/login?return_to=/protected", "Sign in")
        .await;
    b.close().await;
}
