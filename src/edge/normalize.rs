//! The one canonical path (SPEC §5): unreserved percent-escapes decoded, dot
//! segments resolved, repeated slashes merged. Route matching, the auth decision
//! and the forwarded request all use it, so no backend sees a path that matched
//! differently at the gateway.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSlash,
    Backslash,
    Nul,
    BadEscape,
    EscapesRoot,
    PathParameter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the request path must start with /",
            PathError::EncodedSlash => "the path contains an encoded / or \\",
            PathError::Backslash => "the path contains a backslash",
            PathError::Nul => "the path contains a NUL byte",
            PathError::BadEscape => "the path contains a malformed percent-escape",
            PathError::EscapesRoot => "the path's dot segments climb above the root",
            PathError::PathParameter => {
                "the path contains ';' (path parameters are read differently by different backends)"
            }
        })
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Already canonical: no escapes, no empty or dot segments, nothing to refuse.
/// This is the common case, checked in one pass without allocating.
fn is_canonical(b: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b'\\' | 0 | b';' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." starts a dot segment only if it ends at "/" or the end ("/.", "/..").
                let rest = &b[i..];
                if rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    return false;
                }
            }
            _ => {}
        }
        prev = c;
    }
    true
}

/// Canonical form of a request path (no query). Fast path: an already-canonical
/// path is returned without decoding work beyond one scan.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes) {
        return Ok(raw.to_owned());
    }
    // 1. Decode unreserved escapes; reject the ambiguous ones.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).and_then(|&c| hex(c)),
                    bytes.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEscape),
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => decoded.push(v),
                    v => {
                        // Keep reserved and non-ASCII escapes encoded, in upper case.
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[
                            b'%',
                            HEX[(v >> 4) as usize],
                            HEX[(v & 15) as usize],
                        ]);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b';' => return Err(PathError::PathParameter),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // 2. Merge slashes and resolve dot segments.
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Every byte is ASCII: the input was a &str and only ASCII was decoded.
        out.push_str(std::str::from_utf8(s).map_err(|_| PathError::BadEscape)?);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, PathError> {
        normalize_path(s)
    }

    #[test]
    fn canonical_paths_pass_unchanged() {
        for p in [
            "/",
            "/protected",
            "/protected/",
            "/a/b/c",
            "/a-b_c.d~e",
            "/%C3%A9",
        ] {
            assert_eq!(n(p).unwrap(), p);
        }
    }

    #[test]
    fn slashes_merge_and_dots_resolve() {
        assert_eq!(n("//protected").unwrap(), "/protected");
        assert_eq!(n("/a//b///c").unwrap(), "/a/b/c");
        assert_eq!(n("/public/../protected").unwrap(), "/protected");
        assert_eq!(n("/public/./x").unwrap(), "/public/x");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/..a/b").unwrap(), "/..a/b");
    }

    #[test]
    fn unreserved_escapes_decode_and_then_resolve() {
        assert_eq!(n("/public/%2e%2e/protected").unwrap(), "/protected");
        assert_eq!(n("/public/%2E%2E/protected").unwrap(), "/protected");
        assert_eq!(n("/%70rotected").unwrap(), "/protected");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
    }

    #[test]
    fn ambiguous_paths_are_rejected() {
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/.."), Err(PathError::EscapesRoot));
        assert_eq!(n("/a/../../b"), Err(PathError::EscapesRoot));
        assert_eq!(n("/%2e%2e/x"), Err(PathError::EscapesRoot));
        assert_eq!(n("/protected;x"), Err(PathError::PathParameter));
        assert_eq!(n("protected"), Err(PathError::NotAbsolute));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
    }
}

#[cfg(test)]
#[path = "normalize_props.rs"]
mod props;
