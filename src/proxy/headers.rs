//! Header hygiene for forwarded requests (SPEC §4, §5): hop-by-hop removal,
//! strip-then-set identity headers, X-Forwarded-* and Forwarded.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{Cidr, Forward};
use crate::header_names::{HOP_BY_HOP, KEEP_ALIVE, PROXY_CONNECTION};
use crate::header_names::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};

/// Compiled once per config: the names to strip from every client request.
pub struct HeaderRules {
    /// Lower case, '_' folded to '-'.
    protected: Vec<String>,
    trusted: Vec<Cidr>,
}

/// Connection tokens a client may not use to make us drop a header.
fn undroppable(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
            | "x-request-id"
            // SPEC §18: the gateway's own traceparent always reaches the upstream.
            | "traceparent"
    )
}

pub struct ClientInfo<'a> {
    pub peer: IpAddr,
    /// The peer address as text, computed once per connection.
    pub peer_text: &'a HeaderValue,
    pub tls: bool,
    /// `Host` as received (or HTTP/2 `:authority`): the value itself, so that
    /// forwarding it shares the received bytes instead of copying them.
    pub host: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
}

impl HeaderRules {
    pub fn new(forward: &Forward, trusted: &[Cidr]) -> HeaderRules {
        let mut protected = vec![forward.identity_header.as_str().replace('_', "-")];
        // SPEC §14: the issuer header is an identity header like the others.
        protected.extend(
            forward
                .issuer_header
                .iter()
                .map(|h| h.as_str().replace('_', "-")),
        );
        protected.extend(
            forward
                .claim_headers
                .iter()
                .map(|(h, _)| h.as_str().replace('_', "-")),
        );
        HeaderRules {
            protected,
            trusted: trusted.to_vec(),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Is this a configured identity header, under any case or `_` alias?
    pub fn is_protected(&self, name: &str) -> bool {
        if name.contains('_') {
            let folded = name.replace('_', "-");
            self.protected.contains(&folded)
        } else {
            self.protected.iter().any(|p| p == name)
        }
    }

    /// Every header that will be removed from this request, for `explain`.
    pub fn removed(&self, headers: &HeaderMap) -> Vec<String> {
        let mut h = headers.clone();
        let before: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        self.clean(&mut h, false);
        before
            .into_iter()
            .filter(|k| !h.contains_key(k.as_str()))
            .collect()
    }

    /// Removes hop-by-hop headers, those named in `Connection`, and every identity
    /// header (any case, `_` aliases). Keeps the WebSocket handshake when asked.
    pub fn clean(&self, h: &mut HeaderMap, websocket: bool) {
        // One pass to see whether anything needs removing: usually nothing does.
        let dirty = h
            .keys()
            .any(|k| is_hop_by_hop(k) || self.is_protected(k.as_str()));
        if !dirty {
            if websocket {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            return;
        }
        remove_hop_by_hop(h, |n| undroppable(n.as_str()));
        // Identity headers: strip every spelling the client might use.
        let spoofed: Vec<HeaderName> = h
            .keys()
            .filter(|k| self.is_protected(k.as_str()))
            .cloned()
            .collect();
        for n in spoofed {
            h.remove(n);
        }
        if websocket {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
    }

    /// X-Forwarded-For/Proto/Host, Forwarded and X-Request-Id: replaced unless the
    /// peer is a trusted proxy, whose values are kept (and XFF appended to).
    pub fn set_forwarded(&self, h: &mut HeaderMap, c: &ClientInfo) {
        let trusted = !self.trusted.is_empty() && self.is_trusted(c.peer);
        let ip = c.peer_text.to_str().unwrap_or("");
        // Only a trusted proxy's values are read (and joined: an allocation).
        match trusted.then(|| joined(h, &X_FORWARDED_FOR)).flatten() {
            Some(prev) => {
                if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {ip}")) {
                    h.insert(X_FORWARDED_FOR.clone(), v);
                }
            }
            None => {
                h.insert(X_FORWARDED_FOR.clone(), c.peer_text.clone());
            }
        }
        let proto = if c.tls { "https" } else { "http" };
        if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        let host_text = c.host.and_then(|v| v.to_str().ok());
        let host = host_text.filter(|s| s.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
        if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
            match c.host.filter(|_| host_text.is_some()) {
                Some(v) => {
                    h.insert(X_FORWARDED_HOST.clone(), v.clone());
                }
                None => {
                    h.remove(&X_FORWARDED_HOST);
                }
            }
        }
        let mut fwd = String::with_capacity(48 + host.map_or(0, str::len));
        // Built in place and handed over (no copy by HeaderValue::from_str).
        if trusted {
            if let Some(prev) = joined(h, &header::FORWARDED) {
                fwd.push_str(&prev);
                fwd.push_str(", ");
            }
        }
        fwd.push_str("for=");
        if c.peer.is_ipv6() {
            fwd.push_str("\"[");
            fwd.push_str(ip);
            fwd.push_str("]\"");
        } else {
            fwd.push_str(ip);
        }
        fwd.push_str(";proto=");
        fwd.push_str(proto);
        if let Some(host) = host {
            fwd.push_str(";host=\"");
            fwd.push_str(host);
            fwd.push('"');
        }
        if let Ok(v) =
            HeaderValue::from_maybe_shared(Bytes::from(fwd.into_bytes().into_boxed_slice()))
        {
            h.insert(header::FORWARDED, v);
        }
        h.insert(X_REQUEST_ID.clone(), c.request_id.clone());
    }
}

/// All values of a header joined with ", ", if present and visible ASCII.
fn joined(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn is_hop_by_hop(k: &HeaderName) -> bool {
    HOP_BY_HOP.contains(k) || k == KEEP_ALIVE || k == PROXY_CONNECTION
}

/// Hop-by-hop headers of an upstream response, plus those its `Connection` names.
pub fn clean_response(h: &mut HeaderMap, websocket: bool) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    // A 101 answer to a WebSocket handshake keeps its Connection/Upgrade pair.
    remove_hop_by_hop(h, |n| {
        websocket && (n == header::CONNECTION || n == header::UPGRADE)
    });
}

/// Removes the headers named in `Connection`, then the hop-by-hop ones (RFC 9110
/// §7.6.1), sparing those `keep` says to keep. One mechanism for both directions.
/// Runs on most responses (upstreams send `Connection: keep-alive`), so only
/// names that are there are removed, and `keep-alive`, removed anyway, is not
/// parsed as a name.
fn remove_hop_by_hop(h: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !keep(n))
        .collect();
    for n in named {
        h.remove(n);
    }
    let mut present = [false; HOP_BY_HOP.len() + 2];
    let all = || HOP_BY_HOP.iter().chain([&KEEP_ALIVE, &PROXY_CONNECTION]);
    for k in h.keys() {
        if let Some(i) = all().position(|n| n == k) {
            present[i] = true;
        }
    }
    for (n, _) in all().zip(present).filter(|&(_, p)| p) {
        if !keep(n) {
            h.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(trusted: &[&str]) -> HeaderRules {
        let f = Forward {
            identity_header: HeaderName::from_static("x-user"),
            claim_headers: vec![(HeaderName::from_static("x-user-roles"), "roles".into())],
            issuer_header: None,
        };
        let t: Vec<Cidr> = trusted.iter().map(|s| Cidr::parse(s).unwrap()).collect();
        HeaderRules::new(&f, &t)
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_headers_are_stripped_in_every_spelling() {
        let r = rules(&[]);
        let mut h = map(&[
            ("X-User", "a"),
            ("x-user", "b"),
            ("X_User", "c"),
            ("x_USER-roles", "admin"),
            ("X-User-Roles", "admin"),
            ("x-username", "keep"),
        ]);
        r.clean(&mut h, false);
        assert!(h.get("x-user").is_none());
        assert!(h.get("x_user").is_none());
        assert!(h.get("x-user-roles").is_none());
        assert!(h.get("x_user-roles").is_none());
        assert_eq!(h["x-username"], "keep");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let r = rules(&[]);
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("host", "example.com"),
        ]);
        r.clean(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["host"]);
    }

    #[test]
    fn a_response_loses_its_hop_by_hop_headers_but_a_websocket_101_keeps_its_pair() {
        let mut h = map(&[
            ("connection", "keep-alive, x-internal"),
            ("keep-alive", "timeout=5"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ]);
        clean_response(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type"]);

        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "x"),
        ]);
        clean_response(&mut h, true);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["connection", "upgrade"]);

        let mut h = map(&[("content-type", "text/plain")]);
        clean_response(&mut h, false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarded_headers_are_replaced_for_strangers_and_appended_for_proxies() {
        let id = HeaderValue::from_static("rid");
        let s_ip = HeaderValue::from_static("1.2.3.4");
        let p_ip = HeaderValue::from_static("10.1.1.1");
        let gw = HeaderValue::from_static("gw.test");
        let stranger = ClientInfo {
            peer: "1.2.3.4".parse().unwrap(),
            peer_text: &s_ip,
            tls: false,
            host: Some(&gw),
            request_id: &id,
        };
        let r = rules(&["10.0.0.0/8"]);
        let mut h = map(&[
            ("x-forwarded-for", "9.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        r.set_forwarded(&mut h, &stranger);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw.test");
        assert_eq!(h["forwarded"], "for=1.2.3.4;proto=http;host=\"gw.test\"");
        let proxy = ClientInfo {
            peer: "10.1.1.1".parse().unwrap(),
            peer_text: &p_ip,
            ..stranger
        };
        let mut h = map(&[
            ("x-forwarded-for", "9.9.9.9"),
            ("x-forwarded-proto", "https"),
        ]);
        r.set_forwarded(&mut h, &proxy);
        assert_eq!(h["x-forwarded-for"], "9.9.9.9, 10.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"], "rid");
    }
}
