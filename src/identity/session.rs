//! Browser sessions (SPEC §12): the two `__Host-` cookies in and out, the CSRF
//! rule, `return_to`, and the redirect of a browser navigation to the sign-in page.
//!
//! Pure functions over headers and strings; the endpoints that set and clear the
//! cookies are in `identity::browser` and `identity::cookies`, the edge calls
//! [`access_cookie`], [`check_csrf`] and [`strip_cookies`].

use http::header::{HeaderMap, HeaderValue, ACCEPT, COOKIE, LOCATION, ORIGIN};
use http::{Method, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::body::{empty, Body};
use crate::config::{parse_origin, Session};
use crate::error::ApiError;
use crate::header_names::{X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// The access token (SameSite=Lax: sent on top-level navigations from other sites,
/// so a link into the app works; never on their sub-requests or form posts).
pub const ACCESS_COOKIE: &str = "__Host-authgate";
/// The refresh token (SameSite=Strict: only ever sent by the gateway's own pages).
pub const REFRESH_COOKIE: &str = "__Host-authgate-refresh";
/// SPEC §14: binds a sign-in flow to the browser that started it (random, 10 minutes).
pub const BINDING_COOKIE: &str = "__Host-authgate-oidc";

/// A `return_to` longer than this is not a path a user was on.
const MAX_RETURN_TO: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The CSRF rule refused the request; the reason goes to the log only.
    Csrf(&'static str),
    /// Two different values for one session cookie: which one would be checked?
    DuplicateCookie(&'static str),
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::Csrf(why) => {
                tracing::info!(reason = why, "csrf_rejected");
                ApiError::CsrfRejected
            }
            SessionError::DuplicateCookie(name) => {
                ApiError::InvalidRequest(format!("more than one {name} cookie"))
            }
        }
    }
}

/// One `name=value` pair of a `Cookie` header, as the bytes sent: `whole` is the
/// pair trimmed, `value` is empty when there is no `=`.
struct Pair<'a> {
    whole: &'a [u8],
    name: &'a [u8],
    value: &'a [u8],
}

/// The pairs of one `Cookie` header value, in order. Bytes, not `str`: a session
/// cookie must be found (and stripped) whatever else the header carries, and
/// `memchr` keeps a long header (a token is ~300 bytes) a few word-wide scans.
fn pairs(v: &[u8]) -> impl Iterator<Item = Pair<'_>> {
    let mut rest = Some(v);
    std::iter::from_fn(move || loop {
        let r = rest?;
        let (pair, tail) = match memchr::memchr(b';', r) {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = tail;
        let whole = pair.trim_ascii();
        if whole.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', whole) {
            Some(i) => (whole[..i].trim_ascii(), whole[i + 1..].trim_ascii()),
            None => (whole, &b""[..]),
        };
        return Some(Pair { whole, name, value });
    })
}

/// The value of one cookie across every `Cookie` header (HTTP/2 clients may send
/// one header per cookie); an empty value counts as absent, a value that is not
/// UTF-8 is not ours. Cookie names are case-sensitive (RFC 6265 §5.4), so
/// `__host-authgate` is someone else's cookie.
pub fn cookie<'a>(h: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, SessionError> {
    let mut found: Option<&str> = None;
    for v in h.get_all(COOKIE) {
        for p in pairs(v.as_bytes()) {
            if p.name != name.as_bytes() || p.value.is_empty() {
                continue;
            }
            let Ok(v) = std::str::from_utf8(p.value) else {
                continue;
            };
            match found {
                Some(prev) if prev != v => return Err(SessionError::DuplicateCookie(name)),
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

/// The access token from `__Host-authgate`, when sessions are on and the request
/// has no `Authorization` header at all (SPEC §12: the header wins, whatever its
/// scheme; the cookie is then ignored).
pub fn access_cookie<'a>(s: &Session, h: &'a HeaderMap) -> Result<Option<&'a str>, SessionError> {
    if !s.cookie || h.contains_key(http::header::AUTHORIZATION) {
        return Ok(None);
    }
    cookie(h, ACCESS_COOKIE)
}

/// Removes both session cookies from `Cookie` before forwarding (SPEC §12); the
/// other cookies stay, in their order, joined into one header as RFC 9113 §8.2.3
/// asks of a proxy. Done whatever `session.cookie` says: a browser that still has
/// the cookies from before they were turned off must not hand tokens to backends.
pub fn strip_cookies(h: &mut HeaderMap) {
    let ours = |p: &Pair| {
        p.name == ACCESS_COOKIE.as_bytes()
            || p.name == REFRESH_COOKIE.as_bytes()
            || p.name == BINDING_COOKIE.as_bytes()
    };
    let values = h.get_all(COOKIE);
    // Most requests carry none of ours: no copy then.
    if !values.iter().any(|v| pairs(v.as_bytes()).any(|p| ours(&p))) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for v in values.iter() {
        for p in pairs(v.as_bytes()).filter(|p| !ours(p)) {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(p.whole);
        }
    }
    // The kept bytes came from valid header values, joined by "; ": still valid.
    // `insert` replaces every Cookie header with the one joined value.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
        Ok(v) if !v.is_empty() => {
            h.insert(COOKIE, v);
        }
        _ => {
            h.remove(COOKIE);
        }
    }
}

/// `Set-Cookie` for one session cookie: `HttpOnly; Secure; Path=/`, no `Domain`
/// (the `__Host-` prefix demands all three), `Max-Age` the token's lifetime.
pub fn set_cookie(name: &'static str, value: &str, max_age: u64) -> HeaderValue {
    let same_site = if name == REFRESH_COOKIE {
        "Strict"
    } else {
        "Lax"
    };
    let s = format!(
        "{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite={same_site}"
    );
    // Tokens are base64url and JWS compact strings: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that deletes one session cookie (`Max-Age=0`, same attributes).
pub fn clear_cookie(name: &'static str) -> HeaderValue {
    set_cookie(name, "", 0)
}

/// The gateway's own origin for this request: the scheme of the listener (or
/// `X-Forwarded-Proto` from a trusted proxy) and the `Host` the request was sent
/// to (or `X-Forwarded-Host` from a trusted proxy). A browser cannot choose the
/// `Host` it sends to us, and our `__Host-` cookies are bound to that host, so
/// this is the origin the cookies belong to. `None` when it is not a valid origin.
pub fn own_origin(h: &HeaderMap, host: Option<&str>, tls: bool, trusted: bool) -> Option<String> {
    let first = |name| {
        h.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match first(&X_FORWARDED_PROTO).filter(|_| trusted) {
        Some(p) => p.to_ascii_lowercase(),
        None => if tls { "https" } else { "http" }.to_string(),
    };
    let host = first(&X_FORWARDED_HOST).filter(|_| trusted).or(host)?;
    parse_origin(&format!("{scheme}://{host}")).ok()
}

/// Does the CSRF rule apply? Cookie-authenticated requests with an unsafe method,
/// and every cookie-authenticated WebSocket handshake (SPEC §12).
pub fn needs_csrf_check(method: &Method, websocket: bool) -> bool {
    websocket || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// SPEC §12: `Origin` is our own origin or an allowed one; without `Origin`, only
/// `Sec-Fetch-Site: same-origin` passes. `Origin: null` (sandboxed frames,
/// privacy-stripped redirects) never does.
pub fn check_csrf(
    h: &HeaderMap,
    own: Option<&str>,
    allowed: &[String],
) -> Result<(), SessionError> {
    let mut origins = h.get_all(ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(_), Some(_)) => Err(SessionError::Csrf("more than one Origin header")),
        (Some(v), None) => {
            let o = v
                .to_str()
                .ok()
                .and_then(|s| parse_origin(s).ok())
                .ok_or(SessionError::Csrf("Origin is null or malformed"))?;
            if own == Some(o.as_str()) || allowed.contains(&o) {
                Ok(())
            } else {
                Err(SessionError::Csrf("cross-origin request"))
            }
        }
        (None, _) => {
            let mut sites = h.get_all("sec-fetch-site").iter();
            match (sites.next(), sites.next()) {
                (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"same-origin") => Ok(()),
                _ => Err(SessionError::Csrf(
                    "no Origin and no Sec-Fetch-Site: same-origin",
                )),
            }
        }
    }
}

/// `return_to` when it is a path on this gateway, else `None` (the caller then
/// uses `/`). Only what RFC 3986 allows in a path and query passes, so no
/// whitespace, control character, backslash or non-ASCII byte — browsers drop
/// tabs and newlines and read `\` as `/`, which turns `/\evil` or `/<TAB>/evil`
/// into `//evil`, another host. `//x` is a network-path reference, `x:` a URL.
pub fn safe_return_to(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let path_char = |c: u8| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            )
    };
    let ok = b.len() <= MAX_RETURN_TO
        && b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && b.iter().all(|c| path_char(*c));
    ok.then_some(s)
}

/// Is this a browser navigation (SPEC §12: `GET` with `Accept` containing
/// `text/html`) that should go to the sign-in page rather than get a 401?
pub fn is_navigation(method: &Method, h: &HeaderMap) -> bool {
    *method == Method::GET
        && h.get_all(ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
        })
}

/// What a query value must escape: all but the unreserved characters and `/`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// 302 to `login_path?return_to=<path and query>`, encoded.
pub fn login_redirect(login_path: &str, path: &str, query: Option<&str>) -> Response<Body> {
    redirect_with_return_to(login_path, '?', path, query)
}

/// SPEC §14: with no password form and one sign-in provider, a navigation goes
/// straight to it: 302 to `/oauth2/start?issuer=NAME&return_to=<path and query>`.
pub fn provider_redirect(issuer: &str, path: &str, query: Option<&str>) -> Response<Body> {
    let start = format!(
        "{}?issuer={}",
        crate::config::issuer::START_PATH,
        utf8_percent_encode(issuer, QUERY_VALUE)
    );
    redirect_with_return_to(&start, '&', path, query)
}

/// 302 to `base` plus `return_to=<path and query>` (after `sep`), when that is a
/// safe path; else to `base` alone.
fn redirect_with_return_to(
    base: &str,
    sep: char,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    let mut target = path.to_string();
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let location = match safe_return_to(&target) {
        Some(t) => format!(
            "{base}{sep}return_to={}",
            utf8_percent_encode(t, QUERY_VALUE)
        ),
        None => base.to_string(),
    };
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name_across_headers() {
        let h = headers(&[
            ("cookie", "a=1; __Host-authgate-refresh=r"),
            ("cookie", "__host-authgate=x; __Host-authgate=tok"),
        ]);
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), Some("tok"));
        assert_eq!(cookie(&h, REFRESH_COOKIE).unwrap(), Some("r"));
        let h = headers(&[("cookie", "__Host-authgate=a; __Host-authgate=b")]);
        assert!(cookie(&h, ACCESS_COOKIE).is_err());
        let h = headers(&[("cookie", "__Host-authgate=a; __Host-authgate=a")]);
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), Some("a"));
        let h = headers(&[("cookie", "__Host-authgate=")]);
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), None);
    }

    #[test]
    fn the_authorization_header_wins_over_the_cookie() {
        let on = Session {
            cookie: true,
            login_page: false,
            allowed_origins: vec![],
        };
        let h = headers(&[("cookie", "__Host-authgate=tok")]);
        assert_eq!(access_cookie(&on, &h).unwrap(), Some("tok"));
        let h = headers(&[
            ("cookie", "__Host-authgate=tok"),
            ("authorization", "Basic eDp5"),
        ]);
        assert_eq!(access_cookie(&on, &h).unwrap(), None);
        let off = Session::default();
        let h = headers(&[("cookie", "__Host-authgate=tok")]);
        assert_eq!(access_cookie(&off, &h).unwrap(), None);
    }

    #[test]
    fn only_session_cookies_are_stripped_and_order_is_kept() {
        let mut h = headers(&[
            ("cookie", "a=1; __Host-authgate=t;b=2"),
            ("cookie", "__Host-authgate-refresh=r; c=3"),
        ]);
        strip_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2; c=3");
        let mut h = headers(&[("cookie", "__Host-authgate=t; __Host-authgate-refresh=r")]);
        strip_cookies(&mut h);
        assert!(!h.contains_key(COOKIE));
        let mut h = headers(&[("cookie", "x=__Host-authgate; __Host-authgatex=1")]);
        strip_cookies(&mut h);
        assert_eq!(h[COOKIE], "x=__Host-authgate; __Host-authgatex=1");
    }

    #[test]
    fn cookie_pairs_are_read_as_bytes() {
        // Bytes outside visible ASCII elsewhere in the header hide nothing of ours.
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"n=caf\xe9; ;; __Host-authgate = tok ;x").unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), Some("tok"));
        strip_cookies(&mut h);
        assert_eq!(h[COOKIE].as_bytes(), b"n=caf\xe9; x");
        // A pair without '=' is a name with an empty value: never a token, still ours.
        let mut h = headers(&[("cookie", "__Host-authgate; a=1")]);
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), None);
        strip_cookies(&mut h);
        assert_eq!(h[COOKIE], "a=1");
        // A value that is not UTF-8 is not a token.
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"__Host-authgate=\xff").unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE).unwrap(), None);
        strip_cookies(&mut h);
        assert!(!h.contains_key(COOKIE));
        // Only a Cookie header that held none of ours is left untouched, byte for byte.
        let mut h = headers(&[("cookie", " a=1 ;b=2"), ("cookie", "c=3")]);
        strip_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 2);
        assert_eq!(h[COOKIE], " a=1 ;b=2");
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        assert_eq!(
            set_cookie(ACCESS_COOKIE, "a.b.c", 900),
            "__Host-authgate=a.b.c; Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            clear_cookie(REFRESH_COOKIE),
            "__Host-authgate-refresh=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn own_origin_trusts_forwarded_headers_only_from_trusted_proxies() {
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        assert_eq!(
            own_origin(&h, Some("gw:8080"), false, false).as_deref(),
            Some("http://gw:8080")
        );
        assert_eq!(
            own_origin(&h, Some("gw:8080"), false, true).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            own_origin(&HeaderMap::new(), Some("GW:443"), true, false).as_deref(),
            Some("https://gw")
        );
        assert_eq!(own_origin(&HeaderMap::new(), None, true, false), None);
    }

    #[test]
    fn csrf_rule() {
        let own = Some("http://gw:8080");
        let allowed = vec!["https://app.example.com".to_string()];
        let ok = |pairs: &[(&str, &str)]| check_csrf(&headers(pairs), own, &allowed).is_ok();
        assert!(ok(&[("origin", "http://gw:8080")]));
        assert!(ok(&[("origin", "HTTP://GW:8080")]));
        assert!(ok(&[("origin", "https://app.example.com:443")]));
        assert!(!ok(&[("origin", "http://evil.test")]));
        assert!(!ok(&[("origin", "null")]));
        assert!(!ok(&[
            ("origin", "http://gw:8080"),
            ("origin", "http://gw:8080")
        ]));
        assert!(!ok(&[("origin", "http://gw:8080.evil.test")]));
        assert!(!ok(&[
            ("origin", "http://evil.test"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[]));
    }

    #[test]
    fn return_to_is_a_path_on_this_gateway_or_nothing() {
        for good in ["/", "/protected", "/a/b?x=1&y=%2F", "/x;y=1", "/@user"] {
            assert_eq!(safe_return_to(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "//evil",
            "///evil",
            "/\\evil",
            "\\\\evil",
            "https://evil",
            "http:evil",
            "javascript:alert(1)",
            " /x",
            "\t/x",
            "/\t/evil",
            "/\n/evil",
            "/x y",
            "/é",
            "/x#frag",
            "/\"><script>",
            "evil",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad:?}");
        }
        assert_eq!(
            safe_return_to(&format!("/{}", "a".repeat(MAX_RETURN_TO))),
            None
        );
    }

    #[test]
    fn navigations_are_gets_that_accept_html() {
        let html = headers(&[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")]);
        assert!(is_navigation(&Method::GET, &html));
        assert!(!is_navigation(&Method::POST, &html));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "application/json")])
        ));
        assert!(!is_navigation(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn the_redirect_carries_the_encoded_path_and_query() {
        let r = login_redirect("/login", "/protected/a", Some("x=1&y=2"));
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()[LOCATION],
            "/login?return_to=/protected/a%3Fx%3D1%26y%3D2"
        );
    }
}
