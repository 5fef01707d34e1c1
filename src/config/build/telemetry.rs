//! `[telemetry]` and `[audit]` (SPEC §18): span export, sampling, the audit log.

use super::*;
use crate::config::telemetry::{AuditTarget, Telemetry};

pub(super) fn telemetry(r: &mut Reader, t: &DeTable) -> Telemetry {
    let p = "telemetry";
    r.only_known(t, p, &["otlp_endpoint", "sample_ratio"]);
    let mut out = Telemetry::default();
    if let Some((s, span)) = r.string(t, p, "otlp_endpoint") {
        match s.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                out.otlp_endpoint = Some(s.trim_end_matches('/').to_string());
            }
            _ => r.error(
                &span,
                "telemetry.otlp_endpoint",
                "expected an http:// or https:// URL, e.g. \"http://127.0.0.1:4318\"",
            ),
        }
    }
    if let Some(f) = Reader::field(t, "sample_ratio") {
        let v = match f.value.get_ref() {
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match v {
            Some(x) if (0.0..=1.0).contains(&x) => out.sample_ratio = x,
            _ => r.error(
                &f.span,
                "telemetry.sample_ratio",
                "expected a number from 0 to 1",
            ),
        }
    }
    out
}

pub(super) fn audit(r: &mut Reader, t: &DeTable, base: &Path) -> Option<AuditTarget> {
    let p = "audit";
    r.only_known(t, p, &["path"]);
    let (s, span) = r.string(t, p, "path")?;
    match (s.as_str(), s.strip_prefix("file:")) {
        ("stderr", _) => Some(AuditTarget::Stderr),
        (_, Some(f)) if !f.is_empty() => Some(AuditTarget::File(base.join(f))),
        _ => {
            r.error(&span, "audit.path", "expected \"file:PATH\" or \"stderr\"");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::telemetry::AuditTarget;
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n\n";

    #[test]
    fn telemetry_and_audit_are_off_by_default() {
        let c = Config::load_str(BASE, "t.toml", Path::new("/etc/ag")).unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, None);
        assert_eq!(c.telemetry.sample_ratio, 1.0);
        assert_eq!(c.audit, None);
    }

    #[test]
    fn telemetry_and_audit_keys_are_read() {
        let text = format!("{BASE}[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25\n\n[audit]\npath = \"file:log/audit.log\"\n");
        let c = Config::load_str(&text, "t.toml", Path::new("/etc/ag")).unwrap();
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(c.telemetry.sample_ratio, 0.25);
        assert_eq!(
            c.audit,
            Some(AuditTarget::File("/etc/ag/log/audit.log".into()))
        );
    }

    #[test]
    fn a_bad_ratio_endpoint_or_audit_path_is_refused_at_its_line() {
        let text = format!("{BASE}[telemetry]\notlp_endpoint = \"localhost:4318\"\nsample_ratio = 1.5\n\n[audit]\npath = \"/var/log/audit.log\"\n");
        let e = Config::load_str(&text, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:10:1: telemetry.otlp_endpoint:"), "{e}");
        assert!(
            e.contains("t.toml:11:1: telemetry.sample_ratio: expected a number from 0 to 1"),
            "{e}"
        );
        assert!(e.contains("t.toml:14:1: audit.path:"), "{e}");
    }
}
