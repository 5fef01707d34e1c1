//! `[[upstream]]`: targets, timeouts, health.

use super::*;

pub(super) fn upstream(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
    base: &Path,
) -> Option<Upstream> {
    r.only_known(
        t,
        p,
        &[
            "name",
            "targets",
            "connect_timeout",
            "timeout",
            "unhealthy_cooldown",
            "retries",
            "health_check",
            "tls",
        ],
    );
    let name = r.string(t, p, "name").map(|(s, _)| s);
    if name.is_none() && Reader::field(t, "name").is_none() {
        r.error(&span, &join(p, "name"), "missing");
    }
    let mut targets = Vec::new();
    let mut schemes = HashSet::new();
    match r.strings(t, p, "targets") {
        Some((v, tspan)) => {
            if v.is_empty() {
                r.error(&tspan, &join(p, "targets"), "needs at least one target");
            }
            for (i, s) in v.iter().enumerate() {
                match target(s) {
                    Ok((a, https)) => {
                        targets.push(a);
                        schemes.insert(https);
                    }
                    Err(e) => r.error(&tspan, &format!("{p}.targets[{i}]"), e),
                }
            }
            if schemes.len() > 1 {
                r.error(
                    &tspan,
                    &join(p, "targets"),
                    "mixes http:// and https:// targets; use one upstream for each",
                );
            }
        }
        None if Reader::field(t, "targets").is_none() => {
            r.error(&span, &join(p, "targets"), "missing")
        }
        None => {}
    }
    let connect_timeout = duration(r, t, p, "connect_timeout", "2s");
    let timeout = duration(r, t, p, "timeout", "30s");
    let unhealthy_cooldown = duration(r, t, p, "unhealthy_cooldown", "10s");
    let retries = r.bounded(t, p, "retries", 0, 10).unwrap_or(1) as u32;
    let health_check = r.table(t, p, "health_check").and_then(|(ht, hspan)| {
        let hp = join(p, "health_check");
        r.only_known(ht, &hp, &["path", "interval"]);
        let path = match r.string(ht, &hp, "path") {
            Some((s, _)) if s.starts_with('/') => s,
            Some((_, sp)) => {
                r.error(&sp, &join(&hp, "path"), "must start with /");
                return None;
            }
            None => {
                r.error(&hspan, &join(&hp, "path"), "missing");
                return None;
            }
        };
        let interval = duration(r, ht, &hp, "interval", "5s");
        Some(HealthCheck { path, interval })
    });
    let https = schemes.contains(&true);
    let tls = upstream_tls(r, t, p, base);
    let tls = match (https, tls) {
        (true, tls) => Some(tls.unwrap_or_default()),
        (false, None) => None,
        (false, Some(_)) => {
            let sp = Reader::field(t, "tls").map(|f| f.span).unwrap_or(span);
            r.error(
                &sp,
                &join(p, "tls"),
                "applies to https:// targets only (these targets are http://)",
            );
            None
        }
    };
    Some(Upstream {
        tls,
        name: name?,
        targets,
        connect_timeout,
        timeout,
        unhealthy_cooldown,
        retries,
        health_check,
    })
}

/// SPEC §11: `tls = { ca, server_name, client_cert, client_key }`, all optional;
/// a client certificate needs its key and the other way round.
fn upstream_tls(r: &mut Reader, t: &DeTable, p: &str, base: &Path) -> Option<UpstreamTls> {
    let (tt, span) = r.table(t, p, "tls")?;
    let tp = join(p, "tls");
    r.only_known(tt, &tp, &["ca", "server_name", "client_cert", "client_key"]);
    let secret = |r: &mut Reader, key: &str| {
        let (s, sp) = r.string(tt, &tp, key)?;
        parse_secret_ref(&s, base)
            .map_err(|e| r.error(&sp, &join(&tp, key), e))
            .ok()
    };
    let ca = secret(r, "ca");
    let client_cert = secret(r, "client_cert");
    let client_key = secret(r, "client_key");
    let server_name = match r.string(tt, &tp, "server_name") {
        Some((s, sp)) => match rustls::pki_types::ServerName::try_from(s.as_str()) {
            Ok(_) => Some(s),
            Err(_) => {
                r.error(
                    &sp,
                    &join(&tp, "server_name"),
                    format!("{s:?} is not a DNS name or IP address"),
                );
                None
            }
        },
        None => None,
    };
    match (
        Reader::field(tt, "client_cert").is_some(),
        Reader::field(tt, "client_key").is_some(),
    ) {
        (true, false) => r.error(
            &span,
            &join(&tp, "client_key"),
            "missing (client_cert needs its key)",
        ),
        (false, true) => r.error(
            &span,
            &join(&tp, "client_cert"),
            "missing (client_key needs its certificate)",
        ),
        _ => {}
    }
    Some(UpstreamTls {
        ca,
        server_name,
        client_cert,
        client_key,
    })
}

/// `http://host:port` → (`host:port`, false); `https://host:port` → (…, true).
pub(super) fn target(s: &str) -> Result<(String, bool), String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "{s:?}: scheme {other:?} is not supported (use http:// or https://)"
            ))
        }
        None => {
            return Err(format!(
                "{s:?}: expected http://HOST:PORT or https://HOST:PORT"
            ))
        }
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "{s:?}: a target is scheme://host:port only, no path"
        ));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{s:?}: missing host"))?;
    if auth.as_str().contains('@') {
        return Err(format!("{s:?}: credentials in the URL are not allowed"));
    }
    let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((format!("{}:{port}", auth.host()), https))
}
