//! `[server]` and `[admin]`: listeners, connection limits, timeouts.

use super::*;

pub(super) fn listen_addr(
    r: &mut Reader,
    s: &str,
    span: &std::ops::Range<usize>,
    path: &str,
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(
                span,
                path,
                format!("{s:?} is not an address:port (e.g. \"127.0.0.1:8080\" or \"[::]:443\")"),
            );
            None
        }
    }
}

pub(super) fn server(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Server> {
    let p = "server";
    r.only_known(
        t,
        p,
        &[
            "listen",
            "tls",
            "header_read_timeout",
            "idle_timeout",
            "max_connections",
            "max_header_bytes",
            "shutdown_grace",
            "trusted_proxies",
            "workers",
        ],
    );
    let mut listen = Vec::new();
    match Reader::field(t, "listen")
        .map(|f| (f.span, matches!(f.value.get_ref(), DeValue::String(_))))
    {
        Some((span, true)) => {
            if let Some((s, _)) = r.string(t, p, "listen") {
                listen.extend(listen_addr(r, &s, &span, "server.listen"));
            }
        }
        Some((span, false)) => {
            if let Some((v, _)) = r.strings(t, p, "listen") {
                for (i, s) in v.iter().enumerate() {
                    listen.extend(listen_addr(r, s, &span, &format!("server.listen[{i}]")));
                }
                if v.is_empty() {
                    r.error(&span, "server.listen", "needs at least one address");
                }
            }
        }
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 8080))),
    }
    let tls = r.table(t, p, "tls").and_then(|(tt, span)| {
        let tp = "server.tls";
        r.only_known(tt, tp, &["cert", "key"]);
        let get = |r: &mut Reader, key: &str| match r.string(tt, tp, key) {
            Some((s, sp)) => parse_secret_ref(&s, base)
                .map_err(|e| r.error(&sp, &join(tp, key), e))
                .ok(),
            None => {
                r.error(
                    &span,
                    &join(tp, key),
                    "missing (\"file:PATH\" of a PEM file)",
                );
                None
            }
        };
        let cert = get(r, "cert");
        let key = get(r, "key");
        Some(Tls {
            cert: cert?,
            key: key?,
        })
    });
    let header_read_timeout = duration(r, t, p, "header_read_timeout", "10s");
    let idle_timeout = duration(r, t, p, "idle_timeout", "60s");
    let shutdown_grace = duration(r, t, p, "shutdown_grace", "30s");
    let max_connections = r
        .bounded(t, p, "max_connections", 1, 1_000_000)
        .unwrap_or(10_000) as usize;
    let max_header_bytes = size(r, t, p, "max_header_bytes", 64 * 1024);
    if Reader::field(t, "max_header_bytes").is_some()
        && !(1024..=16 << 20).contains(&max_header_bytes)
    {
        let span = Reader::field(t, "max_header_bytes")
            .map(|f| f.span)
            .unwrap_or(0..0);
        r.error(
            &span,
            "server.max_header_bytes",
            "must be between 1KiB and 16MiB",
        );
    }
    if header_read_timeout.is_zero() {
        if let Some(f) = Reader::field(t, "header_read_timeout") {
            r.error(
                &f.span,
                "server.header_read_timeout",
                "must be greater than zero",
            );
        }
    }
    let mut trusted_proxies = Vec::new();
    if let Some((v, span)) = r.strings(t, p, "trusted_proxies") {
        for (i, s) in v.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => trusted_proxies.push(c),
                Err(e) => r.error(&span, &format!("server.trusted_proxies[{i}]"), e),
            }
        }
    }
    let workers = workers(r, t, p);
    Some(Server {
        listen,
        tls,
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_header_bytes: max_header_bytes as usize,
        shutdown_grace,
        trusted_proxies,
        workers,
    })
}

/// SPEC §13: `workers = "auto"` (one per core, the default) or a number of threads.
fn workers(r: &mut Reader, t: &DeTable, p: &str) -> Workers {
    let Some(f) = Reader::field(t, "workers") else {
        return Workers::Auto;
    };
    let span = f.span.clone();
    match f.value.get_ref() {
        DeValue::String(s) if s.as_ref() == "auto" => Workers::Auto,
        DeValue::Integer(_) => match r.bounded(t, p, "workers", 1, 1024) {
            Some(n) => Workers::Count(n as usize),
            None => Workers::Auto,
        },
        _ => {
            r.error(
                &span,
                "server.workers",
                "must be \"auto\" or a number of threads (1 to 1024)",
            );
            Workers::Auto
        }
    }
}

pub(super) fn admin(r: &mut Reader, t: &DeTable) -> Option<Admin> {
    r.only_known(t, "admin", &["listen"]);
    let (s, span) = r.string(t, "admin", "listen")?;
    Some(Admin {
        listen: listen_addr(r, &s, &span, "admin.listen")?,
    })
}
