//! `[forward]`: the identity and claim headers set from a verified token.

use super::*;

pub(super) fn header_name(
    r: &mut Reader,
    s: &str,
    span: &std::ops::Range<usize>,
    path: &str,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(h) if !crate::header_names::is_reserved(&h) => Some(h),
        Ok(_) => {
            r.error(
                span,
                path,
                format!("{s:?} is a header the gateway manages itself"),
            );
            None
        }
        Err(_) => {
            r.error(span, path, format!("{s:?} is not a valid header name"));
            None
        }
    }
}

pub(super) fn forward(r: &mut Reader, t: &DeTable) -> Option<Forward> {
    let p = "forward";
    r.only_known(t, p, &["identity_header", "claim_headers", "issuer_header"]);
    let identity_header = match r.string(t, p, "identity_header") {
        Some((s, span)) => header_name(r, &s, &span, "forward.identity_header"),
        None => Some(HeaderName::from_static("x-user")),
    };
    let mut claim_headers = Vec::new();
    if let Some((ct, _)) = r.table(t, p, "claim_headers") {
        for (k, v) in ct.iter() {
            let path = format!("forward.claim_headers.{}", k.get_ref());
            let Some(h) = header_name(r, k.get_ref(), &k.span(), &path) else {
                continue;
            };
            match v.get_ref() {
                DeValue::String(c) if !c.is_empty() => claim_headers.push((h, c.to_string())),
                _ => r.error(
                    &k.span(),
                    &path,
                    "expected the name of a claim (a non-empty string)",
                ),
            }
        }
    }
    // SPEC §14: `self`, an [[issuer]]'s name, for backends that see several sources.
    let issuer_header = match r.string(t, p, "issuer_header") {
        Some((s, span)) => match header_name(r, &s, &span, "forward.issuer_header") {
            Some(h)
                if identity_header.as_ref() == Some(&h)
                    || claim_headers.iter().any(|(c, _)| *c == h) =>
            {
                r.error(
                    &span,
                    "forward.issuer_header",
                    format!("{h} is already set from a claim"),
                );
                None
            }
            other => other,
        },
        None => None,
    };
    let identity_header = identity_header?;
    for (h, _) in &claim_headers {
        if *h == identity_header {
            let span = Reader::field(t, "claim_headers")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "forward.claim_headers",
                format!("{h} is already the identity header"),
            );
        }
    }
    Some(Forward {
        identity_header,
        claim_headers,
        issuer_header,
    })
}
