//! Username rules (SPEC §3), shared by the endpoints, the CLI and the login throttles.

use crate::error::ApiError;

/// SPEC §3: usernames are 3–64 characters of `a-z 0-9 . _ @ -`, lowercased on input.
pub fn normalize_username(raw: &str) -> Result<String, ApiError> {
    // ASCII folding only: Unicode lowercasing maps KELVIN SIGN (U+212A) to 'k',
    // which would let a character outside the allowed set through.
    let u = raw.to_ascii_lowercase();
    let ok = (3..=64).contains(&u.chars().count())
        && u.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'@' | b'-')
        });
    if ok {
        Ok(u)
    } else {
        Err(ApiError::InvalidRequest(
            "username must be 3-64 characters of a-z, 0-9, '.', '_', '@', '-'".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username("ALICE").unwrap(), "alice");
        assert_eq!(normalize_username("a.b_c@d-e").unwrap(), "a.b_c@d-e");
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username(&"a".repeat(65)).is_err());
        assert!(normalize_username("alice smith").is_err());
        assert!(normalize_username("ålice").is_err());
        assert!(normalize_username("alice\n").is_err());
        assert!(normalize_username("\u{212A}elvin").is_err());
    }
}
