//! The router, compiled once per config: host and method filter, then the
//! longest segment prefix wins (SPEC §2).

use http::Method;

use crate::config::{Config, Route};

pub struct Router {
    /// Route indices, most specific first: longer path, then host set, then methods set.
    order: Vec<usize>,
    routes: Vec<Route>,
    /// Whether any route filters on host: if none does, the Host is never parsed.
    by_host: bool,
}

/// `/protected` matches `/protected` and `/protected/x`, not `/protectedx`.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// `Host` without port, lower case. `None` when absent.
pub fn host_only(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // `*.example.com` matches one or more labels in front of example.com.
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let routes = config.routes.clone();
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| {
            let r = &routes[i];
            (
                std::cmp::Reverse(r.path.len()),
                r.host.is_none(),
                r.methods.is_none(),
                i,
            )
        });
        let by_host = routes.iter().any(|r| r.host.is_some());
        Router {
            order,
            routes,
            by_host,
        }
    }

    /// The route for a request, by its canonical path and its host (port ignored).
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<(usize, &Route)> {
        let host = if self.by_host {
            host.map(host_only)
        } else {
            None
        };
        self.order
            .iter()
            .map(|&i| (i, &self.routes[i]))
            .find(|(_, r)| {
                segment_prefix(&r.path, path)
                    && r.methods.as_ref().is_none_or(|ms| ms.contains(method))
                    && match (&r.host, &host) {
                        (None, _) => true,
                        (Some(p), Some(h)) => host_matches(p, h),
                        (Some(_), None) => false,
                    }
            })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(routes: &str) -> Router {
        let text =
            format!("[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:1\"]\n{routes}");
        Router::new(&Config::load_str(&text, "t.toml", Path::new("/")).unwrap())
    }

    fn path_of(r: &Router, host: Option<&str>, m: Method, p: &str) -> Option<String> {
        r.find(host, &m, p)
            .map(|(_, r)| format!("{}{}", r.host.clone().unwrap_or_default(), r.path))
    }

    #[test]
    fn longest_segment_prefix_wins() {
        let r = router("[[route]]\npath = \"/\"\nupstream = \"app\"\n[[route]]\npath = \"/api\"\nupstream = \"app\"\n[[route]]\npath = \"/api/admin\"\nupstream = \"app\"\n");
        assert_eq!(
            path_of(&r, None, Method::GET, "/api/admin/x").unwrap(),
            "/api/admin"
        );
        assert_eq!(
            path_of(&r, None, Method::GET, "/api/administrator").unwrap(),
            "/api"
        );
        assert_eq!(path_of(&r, None, Method::GET, "/apix").unwrap(), "/");
        assert_eq!(path_of(&r, None, Method::GET, "/api").unwrap(), "/api");
    }

    #[test]
    fn no_match_is_none() {
        let r = router("[[route]]\npath = \"/protected\"\nupstream = \"app\"\n");
        assert!(path_of(&r, None, Method::GET, "/protectedx").is_none());
        assert!(path_of(&r, None, Method::GET, "/PROTECTED").is_none());
        assert!(path_of(&r, None, Method::GET, "/protected/").is_some());
    }

    #[test]
    fn host_and_method_filter_before_prefix() {
        let r = router(
            "[[route]]\npath = \"/a\"\nupstream = \"app\"\nhost = \"*.example.com\"\n\
             [[route]]\npath = \"/a/b\"\nupstream = \"app\"\nmethods = [\"POST\"]\n\
             [[route]]\npath = \"/a\"\nupstream = \"app\"\nhost = \"api.test\"\n",
        );
        assert_eq!(
            path_of(&r, Some("X.Example.COM:8080"), Method::GET, "/a/b").unwrap(),
            "*.example.com/a"
        );
        assert_eq!(
            path_of(&r, Some("a.b.example.com"), Method::GET, "/a").unwrap(),
            "*.example.com/a"
        );
        assert!(path_of(&r, Some("example.com"), Method::GET, "/a").is_none());
        assert_eq!(
            path_of(&r, Some("api.test"), Method::POST, "/a/b").unwrap(),
            "/a/b"
        );
        assert_eq!(
            path_of(&r, Some("api.test"), Method::GET, "/a/b").unwrap(),
            "api.test/a"
        );
        assert!(path_of(&r, None, Method::GET, "/a/b").is_none());
    }

    #[test]
    fn host_only_strips_port_and_case() {
        assert_eq!(host_only("API.Example.com:443"), "api.example.com");
        assert_eq!(host_only("[::1]:8080"), "::1");
        assert_eq!(host_only("example.com."), "example.com");
    }
}
