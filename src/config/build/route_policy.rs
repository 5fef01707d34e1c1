//! `rate_limit` and `cors` on a `[[route]]` (SPEC §17): each bad value is
//! reported at its own key, `route[N].rate_limit.burst: ...`.

use http::HeaderValue;

use super::super::route_policy::{Cors, LimitPer, RouteLimit};
use super::*;

pub(super) fn rate_limit(r: &mut Reader, t: &DeTable, route: &str) -> Option<RouteLimit> {
    let (lt, span) = r.table(t, route, "rate_limit")?;
    let p = join(route, "rate_limit");
    r.only_known(lt, &p, &["rate", "burst", "per"]);
    let rate = match r.string(lt, &p, "rate") {
        Some((s, sp)) => match parse_rate(&s) {
            Ok(Some(rate)) => Some(rate),
            Ok(None) => {
                r.error(
                    &sp,
                    &join(&p, "rate"),
                    "\"off\" here: remove rate_limit to turn it off",
                );
                None
            }
            Err(e) => {
                r.error(&sp, &join(&p, "rate"), e);
                None
            }
        },
        None => {
            if Reader::field(lt, "rate").is_none() {
                r.error(
                    &span,
                    &join(&p, "rate"),
                    "missing (e.g. rate = \"100/min\")",
                );
            }
            None
        }
    };
    // Bounded so that burst × interval cannot overflow; far past any real burst.
    let burst = match Reader::field(lt, "burst") {
        Some(_) => Some(r.bounded(lt, &p, "burst", 1, 1_000_000)?),
        None => None,
    };
    let per = match r.string(lt, &p, "per") {
        Some((s, sp)) => match s.as_str() {
            "user" => Some(LimitPer::User),
            "ip" => Some(LimitPer::Ip),
            "route" => Some(LimitPer::Route),
            _ => {
                r.error(
                    &sp,
                    &join(&p, "per"),
                    format!("{s:?}: expected \"user\", \"ip\" or \"route\""),
                );
                None
            }
        },
        None if Reader::field(lt, "per").is_some() => None,
        None => Some(LimitPer::User),
    };
    let rate = rate?;
    Some(RouteLimit {
        rate,
        // Default: the rate's whole count may arrive at once, as the login limits allow.
        burst: burst.map_or(rate.count, |b| b as u32),
        per: per?,
    })
}

pub(super) fn cors(r: &mut Reader, t: &DeTable, route: &str) -> Option<Cors> {
    let (ct, span) = r.table(t, route, "cors")?;
    let p = join(route, "cors");
    r.only_known(
        ct,
        &p,
        &[
            "origins",
            "methods",
            "headers",
            "credentials",
            "max_age",
            "expose",
        ],
    );
    let mut ok = true;
    let credentials = r.boolean(ct, &p, "credentials").unwrap_or(false);
    let mut origins = Vec::new();
    let mut any_origin = false;
    match r.strings(ct, &p, "origins") {
        Some((v, sp)) => {
            for (i, s) in v.iter().enumerate() {
                let at = format!("{p}.origins[{i}]");
                if s == "*" {
                    if credentials {
                        // Fetch refuses `*` on a credentialed response; echoing every
                        // origin instead would hand any site the user's session.
                        r.error(&sp, &at, "\"*\" with credentials = true would let every site read responses with the user's credentials; list the origins");
                        ok = false;
                    }
                    any_origin = true;
                    continue;
                }
                match crate::config::parse_origin(s) {
                    Ok(o) if !origins.contains(&o) => origins.push(o),
                    Ok(_) => {}
                    Err(e) => {
                        r.error(&sp, &at, e);
                        ok = false;
                    }
                }
            }
            if v.is_empty() {
                r.error(
                    &sp,
                    &join(&p, "origins"),
                    "an empty list allows no origin; remove cors instead",
                );
                ok = false;
            }
        }
        None => {
            if Reader::field(ct, "origins").is_none() {
                r.error(
                    &span,
                    &join(&p, "origins"),
                    "missing (e.g. origins = [\"https://app.example.com\"])",
                );
            }
            ok = false;
        }
    }
    // Default: the CORS-safelisted methods (Fetch standard).
    let mut methods = vec![Method::GET, Method::HEAD, Method::POST];
    if let Some((v, sp)) = r.strings(ct, &p, "methods") {
        methods.clear();
        for (i, m) in v.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) if !methods.contains(&m) => methods.push(m),
                Ok(_) => {}
                Err(_) => {
                    r.error(
                        &sp,
                        &format!("{p}.methods[{i}]"),
                        format!("{m:?} is not an HTTP method"),
                    );
                    ok = false;
                }
            }
        }
    }
    let mut names = |r: &mut Reader, key: &str| -> Vec<HeaderName> {
        let mut out = Vec::new();
        if let Some((v, sp)) = r.strings(ct, &p, key) {
            for (i, h) in v.iter().enumerate() {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) if !out.contains(&n) => out.push(n),
                    Ok(_) => {}
                    Err(_) => {
                        r.error(
                            &sp,
                            &format!("{p}.{key}[{i}]"),
                            format!("{h:?} is not a header name"),
                        );
                        ok = false;
                    }
                }
            }
        }
        out
    };
    let headers = names(r, "headers");
    let expose = names(r, "expose");
    let max_age = match r.string(ct, &p, "max_age") {
        Some((s, sp)) => parse_duration(&s).unwrap_or_else(|e| {
            r.error(&sp, &join(&p, "max_age"), e);
            ok = false;
            Duration::ZERO
        }),
        None => Duration::from_secs(600),
    };
    if !ok {
        return None;
    }
    let joined = |v: &mut dyn Iterator<Item = &str>| {
        let s = v.collect::<Vec<_>>().join(", ");
        // Tokens joined by ", ": always a valid header value.
        HeaderValue::from_str(&s).ok()
    };
    Some(Cors {
        allow_methods: joined(&mut methods.iter().map(|m| m.as_str()))?,
        allow_headers: (!headers.is_empty())
            .then(|| joined(&mut headers.iter().map(|h| h.as_str())))
            .flatten(),
        max_age_value: HeaderValue::from(max_age.as_secs()),
        expose_value: (!expose.is_empty())
            .then(|| joined(&mut expose.iter().map(|h| h.as_str())))
            .flatten(),
        origins,
        any_origin,
        methods,
        headers,
        credentials,
        max_age,
        expose,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LimitPer};
    use std::path::Path;
    use std::time::Duration;

    fn route(extra: &str) -> crate::config::Route {
        let text = format!(
            "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n\
             [[route]]\npath = \"/api\"\nupstream = \"app\"\n{extra}\n"
        );
        let c = Config::load_str(&text, "t.toml", Path::new("/")).unwrap();
        c.routes[0].clone()
    }

    #[test]
    fn a_route_limit_defaults_to_per_user_with_the_rates_count_as_burst() {
        let l = route("rate_limit = { rate = \"30/min\" }")
            .rate_limit
            .unwrap();
        assert_eq!((l.rate.count, l.rate.per), (30, Duration::from_secs(60)));
        assert_eq!((l.burst, l.per), (30, LimitPer::User));
        let l = route("rate_limit = { rate = \"5/sec\", burst = 2, per = \"ip\" }")
            .rate_limit
            .unwrap();
        assert_eq!((l.burst, l.per), (2, LimitPer::Ip));
        assert!(route("").rate_limit.is_none());
    }

    #[test]
    fn cors_defaults_are_the_safelisted_methods_no_headers_no_credentials_ten_minutes() {
        let c = route("cors = { origins = [\"https://App.Example.com:443\"] }")
            .cors
            .unwrap();
        assert_eq!(c.origins, vec!["https://app.example.com"]);
        assert_eq!(c.allow_methods, "GET, HEAD, POST");
        assert!(c.allow_headers.is_none() && c.expose_value.is_none());
        assert!(!c.credentials && !c.any_origin);
        assert_eq!(c.max_age_value, "600");
        let c = route("cors = { origins = [\"*\"], headers = [\"X-Trace\"] }")
            .cors
            .unwrap();
        assert!(c.any_origin && c.origins.is_empty());
        assert_eq!(c.allow_headers.unwrap(), "x-trace");
    }
}
