//! `[session]` (SPEC §12): browser sessions — cookies, the sign-in page, and the
//! other origins allowed to send cookie-authenticated unsafe requests.

use super::*;

pub(super) fn session(r: &mut Reader, t: &DeTable) -> Option<Session> {
    let p = "session";
    r.only_known(t, p, &["cookie", "login_page", "allowed_origins"]);
    let cookie = r.boolean(t, p, "cookie").unwrap_or(false);
    let login_page = r.boolean(t, p, "login_page").unwrap_or(false);
    if login_page && !cookie {
        if let Some(f) = Reader::field(t, "login_page") {
            r.error(
                &f.span,
                "session.login_page",
                "needs session.cookie = true: the sign-in form puts the tokens in cookies",
            );
        }
    }
    let mut allowed_origins = Vec::new();
    if let Some((v, span)) = r.strings(t, p, "allowed_origins") {
        for (i, s) in v.iter().enumerate() {
            match crate::config::parse_origin(s) {
                Ok(o) if !allowed_origins.contains(&o) => allowed_origins.push(o),
                Ok(_) => {}
                Err(e) => r.error(&span, &format!("session.allowed_origins[{i}]"), e),
            }
        }
    }
    Some(Session {
        cookie,
        login_page,
        allowed_origins,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n\n";

    #[test]
    fn session_keys_are_read_and_origins_canonicalised() {
        let text = format!(
            "{BASE}[session]\ncookie = true\nlogin_page = true\nallowed_origins = [\"https://App.Example.com:443\", \"http://127.0.0.1:3000\", \"https://app.example.com\"]\n"
        );
        let c = Config::load_str(&text, "t.toml", Path::new("/")).unwrap();
        assert!(c.session.cookie && c.session.login_page);
        assert_eq!(
            c.session.allowed_origins,
            vec!["https://app.example.com", "http://127.0.0.1:3000"]
        );
    }

    #[test]
    fn session_errors_name_their_key() {
        let text = format!(
            "{BASE}[session]\ncookie = \"yes\"\nlogin_page = true\nallowed_origins = [\"https://app.example.com/\", \"*\"]\n"
        );
        let e = Config::load_str(&text, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:10:1: session.cookie: expected true or false"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:11:1: session.login_page: needs session.cookie = true"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:12:1: session.allowed_origins[0]:"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:12:1: session.allowed_origins[1]:"),
            "{e}"
        );
    }
}
