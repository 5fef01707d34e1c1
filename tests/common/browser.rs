//! Helpers for the browser-session suites (SPEC §12): a gateway with `[session]`,
//! a client that shows redirects, form bodies, and Set-Cookie parsing.

use super::*;
use reqwest::header::HeaderMap;

pub const PW: &str = "correct horse battery";

/// A gateway with `[session]` as given (appended to the harness's config).
pub fn gateway(session: &str, rate_limit: Option<&str>) -> (Upstream, Gateway) {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    if let Some(rl) = rate_limit {
        cfg.rate_limit = rl.into();
    }
    cfg.rest.push_str(&format!("\n[session]\n{session}\n"));
    let gw = Gateway::start(&cfg);
    (up, gw)
}

/// `application/x-www-form-urlencoded` bodies, as a browser's form post sends them.
pub trait FormBody {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

pub const ON: &str = "cookie = true\nlogin_page = true";

/// A client that shows redirects instead of following them.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn origin(gw: &Gateway) -> String {
    format!("http://{}", gw.addr)
}

pub fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `name=value` of the Set-Cookie line for `name`, and the attributes after it.
pub fn cookie_parts(h: &HeaderMap, name: &str) -> (String, String) {
    let line = set_cookies(h)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {h:?}"));
    let (kv, attrs) = line.split_once(';').unwrap();
    (kv[name.len() + 1..].to_string(), attrs.to_string())
}

/// Signs in by form; returns (access cookie, refresh cookie).
pub async fn form_sign_in(gw: &Gateway, user: &str) -> (String, String) {
    let r = register(gw, user, PW).await;
    assert!(r.status() == 201 || r.status() == 409);
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(gw))
        .form_body(&[("username", user), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    (
        cookie_parts(r.headers(), "__Host-authgate").0,
        cookie_parts(r.headers(), "__Host-authgate-refresh").0,
    )
}
