//! Property tests of the path normaliser (SPEC §5) against a small reference
//! model written differently: slashes merged first, then RFC 3986 §5.2.4
//! remove_dot_segments. `PROPTEST_CASES=N` runs more cases (bench/README.md).

use super::*;
use proptest::prelude::*;

/// Pieces that make the interesting paths: dot segments spelled every way,
/// escapes of reserved, unreserved and forbidden bytes, malformed escapes.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", ".", "..", "a", "b", "~", "-", "_", "%2e", "%2E", "%2e%2e", "%41", "%7e", "%7E",
        "%20", "%3F", "%25", "%2f", "%2F", "%5c", "%00", "%", "%zz", "%4", ";", "\\", "é",
        "%C3%A9", "%c3", "?", "#", "+", ":", "@",
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..14).prop_map(|v| format!("/{}", v.concat()))
}

/// The reference: decode unreserved escapes (refusing the ambiguous ones), merge
/// slashes, refuse a climb above the root, then remove dot segments per RFC 3986.
fn model(raw: &str) -> Result<String, ()> {
    if !raw.starts_with('/') {
        return Err(());
    }
    let b = raw.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' | 0 | b';' => return Err(()),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(())?;
                let v = u8::from_str_radix(hex, 16).map_err(|_| ())?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) || matches!(v, b'/' | b'\\' | 0) {
                    return Err(());
                }
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    decoded.push(v as char);
                } else {
                    decoded.push_str(&format!("%{v:02X}"));
                }
                i += 3;
            }
            _ => {
                let c = raw[i..].chars().next().ok_or(())?;
                decoded.push(c);
                i += c.len_utf8();
            }
        }
    }
    let mut merged = String::new();
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    let mut depth: i64 = 0;
    for seg in merged.split('/').skip(1) {
        match seg {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(remove_dot_segments(&merged))
}

/// RFC 3986 §5.2.4, as written there.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_string();
    let mut output = String::new();
    let pop = |o: &mut String| match o.rfind('/') {
        Some(i) => o.truncate(i),
        None => o.clear(),
    };
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop(&mut output);
        } else if input == "/.." {
            input = "/".into();
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |k| k + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    if output.is_empty() {
        output.push('/');
    }
    output
}

proptest! {
    #![proptest_config(crate::test_cases())]

    #[test]
    fn any_string_never_panics(s in any::<String>()) {
        let _ = normalize_path(&s);
    }

    #[test]
    fn agrees_with_the_reference_model(p in path()) {
        prop_assert_eq!(normalize_path(&p).ok(), model(&p).ok(), "{}", p);
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point_and_clean(p in path()) {
        if let Ok(c) = normalize_path(&p) {
            prop_assert_eq!(normalize_path(&c), Ok(c.clone()), "{} → {}", p, c);
            prop_assert!(c.starts_with('/'));
            for bad in ["//", "/./", "/../", "\\", ";", "\0"] {
                prop_assert!(!c.contains(bad), "{} → {} contains {:?}", p, c, bad);
            }
            prop_assert!(!c.ends_with("/.") && !c.ends_with("/.."), "{} → {}", p, c);
            // Only unreserved characters are decoded; what stays escaped is upper-case
            // hex of a byte that is not unreserved (and never / \ or NUL).
            for (i, _) in c.match_indices('%') {
                let hex = &c[i + 1..i + 3];
                prop_assert!(hex.bytes().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)), "{}", c);
                let v = u8::from_str_radix(hex, 16).unwrap_or(0);
                prop_assert!(!is_unreserved(v) && !matches!(v, b'/' | b'\\' | 0), "{}", c);
            }
        }
    }

    #[test]
    fn a_path_that_climbs_above_the_root_is_refused(p in path(), ups in 1usize..4) {
        // However deep `p` goes, more `..` than it has segments escapes the root.
        if let Ok(c) = normalize_path(&p) {
            let depth = c.split('/').filter(|s| !s.is_empty()).count();
            let climb = format!("{}{}", c.trim_end_matches('/'), "/..".repeat(depth + ups));
            prop_assert_eq!(normalize_path(&climb), Err(PathError::EscapesRoot), "{}", climb);
        }
    }
}
