//! `[[upstream]]`: targets, timeouts, health.

use super::*;

pub(super) fn upstream(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
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
        ],
    );
    let name = r.string(t, p, "name").map(|(s, _)| s);
    if name.is_none() && Reader::field(t, "name").is_none() {
        r.error(&span, &join(p, "name"), "missing");
    }
    let mut targets = Vec::new();
    match r.strings(t, p, "targets") {
        Some((v, tspan)) => {
            if v.is_empty() {
                r.error(&tspan, &join(p, "targets"), "needs at least one target");
            }
            for (i, s) in v.iter().enumerate() {
                match target(s) {
                    Ok(a) => targets.push(a),
                    Err(e) => r.error(&tspan, &format!("{p}.targets[{i}]"), e),
                }
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
    Some(Upstream {
        name: name?,
        targets,
        connect_timeout,
        timeout,
        unhealthy_cooldown,
        retries,
        health_check,
    })
}

/// `http://host:port` → `host:port`. Plain HTTP only: upstreams sit on a trusted network.
pub(super) fn target(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{s:?}: scheme {other:?} is not supported (use http://)"
            ))
        }
        None => return Err(format!("{s:?}: expected http://HOST:PORT")),
    }
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
    let port = auth.port_u16().unwrap_or(80);
    Ok(format!("{}:{port}", auth.host()))
}
