//! Sign-in through an identity provider (SPEC §14) in a real browser against a real,
//! certified provider: headless Chromium (chromedriver) and panva's oidc-provider
//! (tests/idp/op.mjs) with its own login and consent pages, RP-initiated logout and
//! back-channel logout.
//!
//! `.ci/run` installs chromium, chromium-driver and (npm ci) oidc-provider; without
//! Chromium the tests fail under CI=true and say they were skipped otherwise.
//!
//! Assumptions (agreed with the implementer, or where §14 is silent):
//! - the sign-in page has an `<a>` or `<button>` whose text is the `display_name`
//!   ("Corp SSO") that starts the flow;
//! - the flow cookie is SameSite=Lax (or None): the provider's redirect back to the
//!   callback is a cross-site top-level GET and must carry it;
//! - the provider's `sub` is the login name ("alice"), not the email: a back-channel
//!   logout token names that `sub` and the `sid` of the sign-in, and the gateway maps it
//!   to the sessions it made from that sign-in;
//! - the logout token's header has `typ: logout+jwt` (oidc-provider sends that);
//! - `POST /logout` as a form from the gateway's own page, with `logout_at_provider`,
//!   answers 303 to the provider's end-session endpoint (§14), whose confirmation page
//!   returns to `post_logout_redirect_uri` = the gateway's `/login`.
mod common;

use std::time::Duration;

use common::cluster::eventually;
use common::oidc::*;
use common::webdriver::{tools, Browser, Driver};
use common::*;

struct World {
    up: Upstream,
    op: Op,
    gw: Gateway,
    _files: Secrets,
}

impl World {
    fn start(login_extra: &str) -> World {
        let up = Upstream::start();
        let port = free_port();
        let op = Op::start(&[OpClient::gateway(port)], &test_accounts());
        let files = Secrets::new(&op.ca_pem);
        let issuer = LoginIssuer {
            name: "corp".into(),
            issuer: op.issuer.clone(),
            ca_file: files.ca_file.clone(),
            algorithms: "[\"RS256\"]".into(),
            secret_file: files.secret_file.clone(),
            redirect_uri: redirect_uri(port),
            display_name: "Corp SSO".into(),
            issuer_extra: String::new(),
            login_extra: login_extra.into(),
        };
        let mut cfg = login_cfg(up.addr, port, &login_issuer_toml(&issuer));
        cfg.identity.push_str("revocation_poll = \"1s\"\n");
        let gw = Gateway::start(&cfg);
        World {
            up,
            op,
            gw,
            _files: files,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.gw.addr)
    }
}

/// At the provider's login page: signs in as `login`, then consents.
async fn provider_login_and_consent(b: &Browser<'_>, op: &Op, login: &str) {
    b.wait_url(&format!("{}/interaction/", op.issuer), "Sign-in")
        .await;
    b.fill("input[name=login]", login).await;
    b.fill("input[name=password]", "any password").await;
    b.click("button[type=submit]").await;
    b.wait_url(&format!("{}/interaction/", op.issuer), "Continue")
        .await;
    b.click("button[type=submit]").await;
}

async fn access_cookie(b: &Browser<'_>) -> String {
    b.cookies()
        .await
        .iter()
        .find(|c| c["name"] == ACCESS_COOKIE)
        .and_then(|c| c["value"].as_str().map(str::to_string))
        .expect("the access cookie in the browser")
}

const CORP_BUTTON: &str = "//*[self::a or self::button][contains(normalize-space(.), 'Corp SSO')]";

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_signs_in_through_the_provider_pages_and_lands_where_it_was_going() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let w = World::start("");
    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("oidc-chromium");
    let b = Browser::open(&driver, &chromium, profile.path()).await;

    b.goto(&w.gw.url("/protected/page?x=1")).await;
    b.wait_url(&format!("{}/login", w.origin()), "Corp SSO")
        .await;
    b.click_xpath(CORP_BUTTON).await;
    provider_login_and_consent(&b, &w.op, "alice").await;
    b.wait_url(
        &format!("{}/protected/page?x=1", w.origin()),
        "/protected/page",
    )
    .await;
    let seen = w.up.last();
    assert_eq!(seen.header("x-user").as_deref(), Some("alice@example.com"));
    assert_eq!(seen.header("x-user-issuer").as_deref(), Some("corp"));

    // The session is in HttpOnly cookies: page script sees nothing.
    let cookies = b.cookies().await;
    for name in [ACCESS_COOKIE, REFRESH_COOKIE] {
        let c = cookies
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {cookies:?}"));
        assert_eq!(c["httpOnly"], true, "{name}");
        assert_eq!(c["secure"], true, "{name}");
    }
    assert_eq!(b.script("return document.cookie;").await, "");
    let claims = jwt_claims(&access_cookie(&b).await);
    assert_eq!(claims["idp"], "corp");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tabs_each_start_a_flow_and_both_finish() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let w = World::start("");
    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("oidc-chromium-tabs");
    let b = Browser::open(&driver, &chromium, profile.path()).await;
    let one = b.window().await;
    b.goto(
        &w.gw
            .url("/oauth2/start?issuer=corp&return_to=/protected/one"),
    )
    .await;
    b.wait_url(&format!("{}/interaction/", w.op.issuer), "Sign-in")
        .await;
    let two = b.new_tab().await;
    b.goto(
        &w.gw
            .url("/oauth2/start?issuer=corp&return_to=/protected/two"),
    )
    .await;
    // The second tab finishes first.
    provider_login_and_consent(&b, &w.op, "alice").await;
    b.wait_url(&format!("{}/protected/two", w.origin()), "/protected/two")
        .await;
    // Then the first: the provider may now skip its login page (its session exists).
    b.switch_to(&one).await;
    b.fill("input[name=login]", "alice").await;
    b.fill("input[name=password]", "any password").await;
    b.click("button[type=submit]").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let url = b.url().await;
        if url.starts_with(&format!("{}/protected/one", w.origin())) {
            break;
        }
        if url.starts_with(&format!("{}/interaction/", w.op.issuer))
            && b.text().await.contains("Continue")
        {
            b.click("button[type=submit]").await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first tab never finished: at {url}: {}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.switch_to(&two).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_at_provider_ends_both_sessions_and_returns_to_the_sign_in_page() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let w = World::start("logout_at_provider = true");
    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("oidc-chromium-logout");
    let b = Browser::open(&driver, &chromium, profile.path()).await;
    b.goto(&w.gw.url("/oauth2/start?issuer=corp&return_to=/protected"))
        .await;
    provider_login_and_consent(&b, &w.op, "alice").await;
    b.wait_url(&format!("{}/protected", w.origin()), "/protected")
        .await;
    let access = access_cookie(&b).await;

    // A logout form on the gateway's own page (same origin, as the sign-in page's is).
    b.script(
        "document.body.innerHTML = '<form method=post action=/logout><button id=out>out</button></form>'; \
         document.getElementById('out').click(); return null;",
    )
    .await;
    b.wait_url(&format!("{}/session/end", w.op.issuer), "sign-out")
        .await;
    b.click("button[name=logout]").await;
    b.wait_url(&format!("{}/login", w.origin()), "Corp SSO")
        .await;
    assert!(b.cookies().await.iter().all(|c| !c["name"]
        .as_str()
        .unwrap_or("")
        .starts_with("__Host-authgate")));
    let revoked = eventually(Duration::from_secs(5), || async {
        bearer_status(&w.gw, "/protected", &access).await == 401
    })
    .await;
    assert!(revoked, "the old access token is refused after logout");

    // Signed out at the provider too: the next sign-in asks for the login again.
    b.goto(&w.gw.url("/oauth2/start?issuer=corp&return_to=/protected"))
        .await;
    b.wait_url(&format!("{}/interaction/", w.op.issuer), "Sign-in")
        .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_at_the_provider_reaches_the_gateway_by_back_channel_and_ends_the_session() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let w = World::start("");
    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("oidc-chromium-bcl");
    let b = Browser::open(&driver, &chromium, profile.path()).await;
    b.goto(&w.gw.url("/oauth2/start?issuer=corp&return_to=/protected"))
        .await;
    provider_login_and_consent(&b, &w.op, "alice").await;
    b.wait_url(&format!("{}/protected", w.origin()), "/protected")
        .await;
    let access = access_cookie(&b).await;
    assert_eq!(bearer_status(&w.gw, "/protected", &access).await, 200);

    // The user signs out at the provider itself (not through the gateway): the provider
    // POSTs a logout_token to /oauth2/backchannel-logout.
    b.goto(&format!("{}/session/end", w.op.issuer)).await;
    b.wait_url(&format!("{}/session/end", w.op.issuer), "sign-out")
        .await;
    b.click("button[name=logout]").await;
    let ended = eventually(Duration::from_secs(10), || async {
        bearer_status(&w.gw, "/protected", &access).await == 401
    })
    .await;
    assert!(
        ended,
        "the session ends within revocation_poll; gateway logs:\n{}",
        w.gw.logs()
    );
    // The browser's own cookie is refused too: /protected asks for a sign-in again.
    b.goto(&w.gw.url("/protected")).await;
    b.wait_url(&format!("{}/login", w.origin()), "Corp SSO")
        .await;

    // The provider's admin sends one for a sub with no session: accepted, nothing ends.
    assert!(w
        .op
        .backchannel_logout(CLIENT_ID, "nobody", None)
        .await
        .is_ok());
    b.close().await;
}
