//! `token inspect`: decode and verify a token, and say why it would be rejected.

use super::*;

pub(super) fn inspect(path: &Path, token: &str) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let verifier = offline_verifier(&config)?;
    match jsonwebtoken::decode_header(token) {
        Ok(h) => println!("header: {}", serde_json::to_string(&h).unwrap_or_default()),
        Err(e) => println!(
            "header: unreadable ({})",
            crate::verify::jwt::describe(e.kind())
        ),
    }
    match jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token) {
        Ok(c) => println!("claims: {c}"),
        Err(e) => println!(
            "claims: unreadable ({})",
            crate::verify::jwt::describe(e.kind())
        ),
    }
    match verify_now(&verifier, token)? {
        Ok(v) => {
            let by = match v.source {
                crate::config::IssuerRef::SelfIssued => "authgate (self)".to_string(),
                crate::config::IssuerRef::External(i) => {
                    format!("issuer {:?}", config.issuers[i].name)
                }
            };
            println!(
                "valid: accepted for sub {:?}, issued by {by}, expires {}",
                v.sub,
                format_time(v.exp)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("rejected: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
