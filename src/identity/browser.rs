//! The browser side of the identity endpoints (SPEC §12): the sign-in page, the
//! form login, and refresh and logout by cookie. The rules themselves (cookies,
//! CSRF, `return_to`) are in `session.rs`; the cookies of a token pair and the CSRF check of a
//! request in `cookies.rs`, which the JSON login shares.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};

use super::cookies::{clear_session_cookies, csrf, session_response, set_session_cookies};
use super::core::{
    authenticate, check_login_ip, count_login, issue_pair, revoke_session, rotate, TokenPair,
};
use super::input::{has_media_type, read_body};
use super::session::{clear_cookie, cookie, safe_return_to, BINDING_COOKIE, REFRESH_COOKIE};
use crate::body::{empty, full, Body};
use crate::error::ApiError;
use crate::request::ConnInfo;
use crate::state::Snapshot;
use crate::store::User;

const PAGE: &str = include_str!("page.html");

/// SPEC §12, exactly: no script, no external anything, only inline style, the
/// form may post only to us, and no one may frame the page (clickjacking).
pub const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// A request without a body: refresh and logout then use the cookies.
pub fn bodiless(req: &Request<Incoming>) -> bool {
    req.body().is_end_stream()
}

/// HTML-escapes text for an element or a quoted attribute.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Fills `{{name}}` slots in one pass: an inserted value is never scanned again,
/// so a `return_to` holding `{{error}}` stays text.
fn render(slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(PAGE.len() + 256);
    let mut rest = PAGE;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}").and_then(|j| {
            let name = &after[..j];
            slots.iter().find(|(n, _)| *n == name).map(|(_, v)| (j, *v))
        }) {
            Some((j, v)) => {
                out.push_str(v);
                rest = &after[j + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// SPEC §14: one button (a link to `/oauth2/start`) per sign-in provider, carrying
/// `return_to`; empty without providers.
fn provider_buttons(rt: &Snapshot, return_to: &str) -> String {
    let mut out = String::new();
    for (_, c, l) in rt.config.login_issuers() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("issuer", &c.name);
        if !return_to.is_empty() {
            q.append_pair("return_to", return_to);
        }
        let href = format!("{}?{}", crate::config::issuer::START_PATH, q.finish());
        out.push_str(&format!(
            "<a class=\"provider\" href=\"{}\">{}</a>\n",
            escape(&href),
            escape(&l.display_name)
        ));
    }
    if out.is_empty() {
        out
    } else {
        format!("<nav class=\"providers\" aria-label=\"Sign in with\">\n{out}</nav>\n")
    }
}

/// The sign-in page, every value escaped; `error` is shown above the form. With
/// `[identity] enabled = false` there are no password accounts: the page holds only
/// the providers' buttons (SPEC §14).
pub fn page_html(rt: &Snapshot, return_to: &str, username: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let html = render(&[
        ("action", &escape(&rt.config.identity.paths.login)),
        ("return_to", &escape(return_to)),
        ("username", &escape(username)),
        ("error", &error),
        ("providers", &provider_buttons(rt, return_to)),
    ]);
    if rt.config.identity.enabled {
        return html;
    }
    // Every inserted value is escaped, so the template's own form is the only one.
    match (html.find("<form"), html.find("</form>\n")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &html[..a], &html[b + "</form>\n".len()..]),
        _ => html,
    }
}

/// The headers every rendition of the page carries.
pub(crate) fn page_headers(h: &mut HeaderMap) {
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the form post
    // (Fetch §3.1 "serializing a request origin"), which the CSRF rule refuses.
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// `return_to` from a query string, when it is a safe path.
fn query_return_to(query: Option<&str>) -> String {
    query
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "return_to")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|v| safe_return_to(v).is_some())
        .unwrap_or_default()
}

/// `GET /login`: the form, carrying `return_to` from the query (SPEC §12).
pub fn page<B>(rt: &Snapshot, req: &Request<B>) -> Response<Body> {
    let return_to = query_return_to(req.uri().query());
    let mut r = Response::new(full(page_html(rt, &return_to, "", None)));
    page_headers(r.headers_mut());
    r
}

/// The fields of a sign-in form post.
#[derive(Default)]
struct Form {
    username: String,
    password: String,
    return_to: String,
}

/// The form, or what was read of it (for the page) and why it is refused.
fn parse_form(body: &[u8]) -> Result<Form, (Form, ApiError)> {
    let mut f = Form::default();
    let (mut u, mut p, mut r) = (0, 0, 0);
    for (k, v) in form_urlencoded::parse(body) {
        let (slot, n) = match k.as_ref() {
            "username" => (&mut f.username, &mut u),
            "password" => (&mut f.password, &mut p),
            "return_to" => (&mut f.return_to, &mut r),
            _ => continue,
        };
        *n += 1;
        *slot = v.into_owned();
    }
    if u > 1 || p > 1 || r > 1 {
        let e = ApiError::InvalidRequest("a form field appears more than once".into());
        return Err((f, e));
    }
    if u == 0 || p == 0 {
        let e = ApiError::InvalidRequest("username and password are required".into());
        return Err((f, e));
    }
    Ok(f)
}

fn see_other(location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// `POST /login` as a form (SPEC §12): 303 to a same-origin `return_to` (else
/// `/`) with the cookies set; on failure the form again with the error (401,
/// 429 when throttled — the JSON login's throttles, unchanged).
pub async fn form_login(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    // Login CSRF: another site must not sign this browser in as someone else.
    csrf(rt, &req, conn)?;
    let mut echo = Form::default();
    let r = form_login_inner(rt, req, conn, &mut echo).await;
    count_login(&r);
    let return_to = safe_return_to(&echo.return_to).unwrap_or("");
    match r {
        Ok((user, pair)) => {
            let mut resp = see_other(if return_to.is_empty() { "/" } else { return_to });
            set_session_cookies(rt, resp.headers_mut(), &pair);
            Ok((resp, Some(user.username)))
        }
        Err(e) => {
            let html = page_html(rt, return_to, &echo.username, Some(&e.message()));
            let mut resp = e.into_page(html);
            page_headers(resp.headers_mut());
            Ok((resp, None))
        }
    }
}

async fn form_login_inner(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
    echo: &mut Form,
) -> Result<(User, TokenPair), ApiError> {
    // `login_per_ip` is charged first, as for a JSON login: malformed and oversized
    // posts count too. The body is still read when throttled, so that the page
    // shown with the 429 keeps the username and return_to.
    let limited = check_login_ip(rt, conn.peer.ip()).await;
    let body = read_body(rt, req).await?;
    let form = parse_form(&body);
    let (Ok(f) | Err((f, _))) = &form;
    echo.username = f.username.clone();
    echo.return_to = f.return_to.clone();
    limited?;
    let form = form.map_err(|(_, e)| e)?;
    let user = authenticate(rt, &form.username, form.password).await?;
    let pair = issue_pair(rt, &user.username, &user.roles, None).await?;
    Ok((user, pair))
}

/// `POST /token/refresh` without a body: the refresh cookie is spent and both
/// cookies are set anew (SPEC §12).
pub async fn refresh(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    csrf(rt, &req, conn)?;
    let old = cookie(req.headers(), REFRESH_COOKIE)?.ok_or(ApiError::InvalidGrant)?;
    let (username, pair) = rotate(rt, old).await?;
    Ok((session_response(rt, &pair, &username), Some(username)))
}

/// `POST /logout` without a body: revokes the refresh cookie's family and clears
/// both cookies — on failure too, since the browser's session ends either way. A
/// form post (a "Sign out" button) is sent on to the sign-in page.
pub async fn logout(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    csrf(rt, &req, conn)?;
    let form = has_media_type(&req, "application/x-www-form-urlencoded");
    let revoked = match cookie(req.headers(), REFRESH_COOKIE)? {
        Some(t) => revoke_session(rt, t).await,
        None => Err(ApiError::InvalidGrant),
    };
    let (mut resp, user) = match (revoked, form) {
        (r, true) => {
            // SPEC §14 `logout_at_provider`: a session signed in through a provider
            // that asks for it ends there too (RP-initiated logout).
            let at_provider = match &r {
                Ok((_, session)) if session.is_sso() => {
                    let trusted = rt.rules.is_trusted(conn.peer.ip());
                    let origin = super::session::own_origin(
                        req.headers(),
                        crate::request::request_host(&req),
                        conn.tls,
                        trusted,
                    );
                    super::oidc::logout::end_session_location(rt, session, origin.as_deref()).await
                }
                _ => None,
            };
            let s = &rt.config.session;
            let to = match &at_provider {
                Some(url) => url.as_str(),
                None if s.login_page => rt.config.identity.paths.login.as_str(),
                None => "/",
            };
            (see_other(to), r.ok().map(|(u, _)| u))
        }
        (Ok((u, _)), false) => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            (r, Some(u))
        }
        // Only the store's own faults keep their status; the rest is invalid_grant.
        (Err(e), false) => (e.into_response(), None),
    };
    clear_session_cookies(resp.headers_mut());
    // SPEC §14: a sign-in flow this browser left open ends with its session.
    if matches!(cookie(req.headers(), BINDING_COOKIE), Ok(Some(_)) | Err(_)) {
        resp.headers_mut()
            .append(SET_COOKIE, clear_cookie(BINDING_COOKIE));
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((resp, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("\"><script>alert('x')</script>&"),
            "&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn the_page_has_no_script_no_external_asset_and_labelled_fields() {
        let lower = PAGE.to_ascii_lowercase();
        for banned in [
            "<script",
            "javascript:",
            "http://",
            "https://",
            "src=",
            "<link",
            "@import",
            "url(",
        ] {
            assert!(!lower.contains(banned), "{banned}");
        }
        for needed in [
            "<label for=\"username\">",
            "<label for=\"password\">",
            "autocomplete=\"username\"",
            "autocomplete=\"current-password\"",
            "name=\"return_to\"",
            "method=\"post\"",
        ] {
            assert!(PAGE.contains(needed), "{needed}");
        }
    }

    #[test]
    fn slots_are_filled_once() {
        let out = render(&[
            ("action", "/login"),
            ("return_to", "{{error}}"),
            ("username", ""),
            ("error", "E"),
        ]);
        assert!(out.contains("value=\"{{error}}\""));
        assert!(!out.contains("{{action}}"));
    }

    #[test]
    fn forms_need_both_fields_once() {
        let Ok(f) = parse_form(b"username=alice&password=a+b%26c&return_to=%2Fx&submit=1") else {
            panic!("a good form refused")
        };
        assert_eq!(
            (
                f.username.as_str(),
                f.password.as_str(),
                f.return_to.as_str()
            ),
            ("alice", "a b&c", "/x")
        );
        assert!(parse_form(b"username=a&username=b&password=x").is_err());
        assert!(parse_form(b"username=a").is_err());
        assert!(parse_form(b"").is_err());
    }

    #[test]
    fn query_return_to_keeps_only_safe_paths() {
        assert_eq!(
            query_return_to(Some("return_to=%2Fprotected%3Fa%3D1")),
            "/protected?a=1"
        );
        assert_eq!(query_return_to(Some("return_to=%2F%2Fevil")), "");
        assert_eq!(query_return_to(Some("x=1")), "");
        assert_eq!(query_return_to(None), "");
    }
}
