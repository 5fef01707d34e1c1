//! A JWT taken apart once: header parsed a single time (never again by
//! jsonwebtoken), payload read into typed slots instead of a `serde_json::Map`.
//!
//! Nothing here is trusted: the signature is checked by the verifier over the bytes
//! as sent, and only then are the claims used.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

fn bad(s: impl Into<String>) -> TokenError {
    TokenError(s.into())
}

/// The three parts of a compact JWS.
pub struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signed: &'a str,
}

pub fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad("malformed token"));
    };
    Ok(Parts {
        header: h,
        payload: p,
        signature: s,
        signed: &token[..h.len() + 1 + p.len()],
    })
}

pub fn b64(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| bad("malformed base64"))
}

/// The token's `alg`: known to jsonwebtoken, or the raw text of one that is not
/// (`none`, `None`, ...), kept only to say what the token tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alg {
    Known(Algorithm),
    Unknown(String),
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alg::Known(a) => f.write_str(super::jwk::alg_name(*a)),
            Alg::Unknown(s) => write!(f, "{:?}", s.chars().take(32).collect::<String>()),
        }
    }
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

/// Header segments longer than this are not remembered.
const REMEMBERED_HEADER_MAX: usize = 512;

thread_local! {
    /// The last header segment this thread parsed without fault, and the result.
    /// Tokens of one issuer share their header bytes, so a token the verified-token
    /// cache has never seen usually brings a header that was parsed a moment ago
    /// The same bytes parse to the same header; nothing else is kept.
    static LAST_HEADER: RefCell<Option<(Box<str>, Header)>> = const { RefCell::new(None) };
}

/// Parses the header once. Duplicate members are malformed (serde refuses them).
pub fn header(part: &str) -> Result<Header, TokenError> {
    let seen = LAST_HEADER.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(p, _)| **p == *part)
            .map(|(_, h)| h.clone())
    });
    if let Some(h) = seen {
        return Ok(h);
    }
    let h = parse_header(part)?;
    if part.len() <= REMEMBERED_HEADER_MAX {
        LAST_HEADER.with(|l| *l.borrow_mut() = Some((part.into(), h.clone())));
    }
    Ok(h)
}

fn parse_header(part: &str) -> Result<Header, TokenError> {
    let json = b64(part)?;
    let raw: RawHeader =
        serde_json::from_slice(&json).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    if raw.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        return Err(bad(
            "malformed token: crit header parameters are not supported",
        ));
    }
    let alg = match raw.alg.parse::<Algorithm>() {
        Ok(a) => Alg::Known(a),
        Err(_) => Alg::Unknown(raw.alg.into_owned()),
    };
    Ok(Header {
        alg,
        kid: raw.kid.map(Cow::into_owned),
    })
}

/// The registered claims the verifier reads, by slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Slot {
    Sub,
    Iss,
    Aud,
    Exp,
    Nbf,
    Iat,
    Roles,
}

const SLOT_NAMES: [&str; 7] = ["sub", "iss", "aud", "exp", "nbf", "iat", "roles"];

/// The payload: the registered claims in fixed slots, plus only those other claims the
/// config names (identity claims, claim headers, route requirements).
#[derive(Debug, Default)]
pub struct Claims {
    pub slots: [Option<Value>; 7],
    pub extra: Vec<(usize, Value)>,
}

impl Claims {
    pub fn slot(&self, s: Slot) -> Option<&Value> {
        self.slots[s as usize].as_ref()
    }

    /// A claim by name, whether in a slot or among the extras of `plan`.
    pub fn get<'a>(&'a self, plan: &ClaimPlan, name: &str) -> Option<&'a Value> {
        if let Some(i) = SLOT_NAMES.iter().position(|n| *n == name) {
            return self.slots[i].as_ref();
        }
        let idx = plan.names.iter().position(|n| n == name)?;
        self.extra.iter().find(|(i, _)| *i == idx).map(|(_, v)| v)
    }
}

/// The claim names beyond the registered ones that the config reads.
#[derive(Debug, Default, Clone)]
pub struct ClaimPlan {
    pub names: Vec<String>,
}

impl ClaimPlan {
    pub fn add(&mut self, name: &str) {
        if !SLOT_NAMES.contains(&name) && !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_string());
        }
    }
}

/// A key as read: borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct Seed<'p>(&'p ClaimPlan);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Claims;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Claims;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Claims, A::Error> {
        let mut out = Claims::default();
        // Every key, so that `{"sub":"a","sub":"admin"}` is refused whatever the claim:
        // different JSON parsers would read different values.
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(12);
        while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
            if seen.contains(&k) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate claim {:?}",
                    k.chars().take(64).collect::<String>()
                )));
            }
            if let Some(i) = SLOT_NAMES.iter().position(|n| *n == k) {
                out.slots[i] = Some(m.next_value::<Value>()?);
            } else if let Some(i) = self.0.names.iter().position(|n| *n == k) {
                out.extra.push((i, m.next_value::<Value>()?));
            } else {
                m.next_value::<IgnoredAny>()?;
            }
            seen.push(k);
        }
        Ok(out)
    }
}

/// Reads the payload part into [`Claims`].
pub fn claims(part: &str, plan: &ClaimPlan) -> Result<Claims, TokenError> {
    let json = b64(part)?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    let c = Seed(plan)
        .deserialize(&mut de)
        .and_then(|c| de.end().map(|_| c))
        .map_err(|e| bad(format!("malformed JSON: {e}")))?;
    Ok(c)
}

/// A time claim: absent, or a whole number of seconds. SPEC §4: a time claim of the
/// wrong JSON type is invalid, not absent.
pub fn time(c: &Claims, s: Slot) -> Result<Option<u64>, TokenError> {
    match c.slot(s) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad(format!(
                "claim {} must be a whole number of seconds",
                SLOT_NAMES[s as usize]
            ))
        }),
    }
}

/// `aud` as a string or an array of strings; true when it names one of `wanted`.
pub fn audience_matches(aud: &Value, wanted: &[String]) -> Result<bool, TokenError> {
    match aud {
        Value::String(s) => Ok(wanted.iter().any(|w| w == s)),
        Value::Array(a) if a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(Value::as_str)
            .any(|s| wanted.iter().any(|w| w == s))),
        _ => Err(bad("claim aud must be a string or an array of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn a_remembered_header_is_only_reused_for_the_same_bytes() {
        let enc = |j: &str| URL_SAFE_NO_PAD.encode(j);
        let ed = enc(r#"{"alg":"EdDSA","kid":"k1"}"#);
        let hs = enc(r#"{"alg":"HS256","kid":"k2"}"#);
        let crit = enc(r#"{"alg":"EdDSA","kid":"k1","crit":["b64"]}"#);
        for _ in 0..2 {
            let h = header(&ed).unwrap();
            assert_eq!(h.alg, Alg::Known(Algorithm::EdDSA));
            assert_eq!(h.kid.as_deref(), Some("k1"));
            let h = header(&hs).unwrap();
            assert_eq!(h.alg, Alg::Known(Algorithm::HS256));
            assert_eq!(h.kid.as_deref(), Some("k2"));
            // A refused header is never remembered, and does not replace the last one.
            assert!(header(&crit).is_err());
            assert!(header(&crit).is_err());
            assert_eq!(header(&hs).unwrap(), parse_header(&hs).unwrap());
        }
        let none = enc(r#"{"alg":"none"}"#);
        assert_eq!(header(&none).unwrap().alg, Alg::Unknown("none".into()));
        assert_eq!(header(&none).unwrap().alg, Alg::Unknown("none".into()));
    }

    #[test]
    fn split_wants_exactly_three_parts() {
        for t in ["garbage", "a.b", "a.b.c.d", "...", "eyJhbGciOiJFZERTQSJ9"] {
            assert!(split(t).is_err(), "{t}");
        }
        let p = split("h.p.s").unwrap();
        assert_eq!(
            (p.header, p.payload, p.signature, p.signed),
            ("h", "p", "s", "h.p")
        );
    }

    #[test]
    fn header_is_parsed_once_with_unknown_algs_kept_for_the_message() {
        let h = header(&enc(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)).unwrap();
        assert_eq!(h.alg, Alg::Known(Algorithm::RS256));
        assert_eq!(h.kid.as_deref(), Some("k1"));
        let h = header(&enc(r#"{"alg":"nOnE"}"#)).unwrap();
        assert_eq!(h.alg, Alg::Unknown("nOnE".into()));
        assert!(h.kid.is_none());
        let e = header(&enc(r#"{"alg":"RS256","kid":"a","kid":"b"}"#)).unwrap_err();
        assert!(e.0.contains("malformed"), "{e}");
        assert!(header(&enc(r#"{"alg":"RS256","kid":"a","crit":["exp"]}"#)).is_err());
        assert!(header("!!").unwrap_err().0.contains("malformed base64"));
        assert!(header(&enc("not json"))
            .unwrap_err()
            .0
            .contains("malformed JSON"));
    }

    #[test]
    fn claims_keep_the_registered_slots_and_only_the_planned_extras() {
        let mut plan = ClaimPlan::default();
        plan.add("email");
        plan.add("sub");
        let c = claims(
            &enc(r#"{"sub":"a","email":"a@x","big":{"x":[1,2,3]},"aud":["x","y"],"exp":5}"#),
            &plan,
        )
        .unwrap();
        assert_eq!(c.slot(Slot::Sub), Some(&Value::from("a")));
        assert_eq!(c.get(&plan, "email"), Some(&Value::from("a@x")));
        assert_eq!(c.get(&plan, "big"), None);
        assert_eq!(time(&c, Slot::Exp), Ok(Some(5)));
        assert!(audience_matches(c.slot(Slot::Aud).unwrap(), &["y".into()]).unwrap());
        assert!(!audience_matches(c.slot(Slot::Aud).unwrap(), &["z".into()]).unwrap());
    }

    #[test]
    fn duplicate_claims_are_refused_even_unplanned_and_escaped_ones() {
        let plan = ClaimPlan::default();
        for p in [
            r#"{"sub":"a","sub":"admin"}"#,
            r#"{"x":1,"x":2}"#,
            r#"{"sub":"a","s\u0075b":"admin"}"#,
        ] {
            let e = claims(&enc(p), &plan).unwrap_err();
            assert!(e.0.contains("duplicate"), "{p}: {e}");
        }
        assert!(claims(&enc(r#"{"sub":"a"} x"#), &plan).is_err());
        assert!(claims(&enc(r#"["sub"]"#), &plan).is_err());
    }

    #[test]
    fn time_claims_of_the_wrong_type_are_errors_not_absent() {
        let plan = ClaimPlan::default();
        for (c, v) in [
            ("exp", r#""10""#),
            ("exp", "null"),
            ("exp", "1.5"),
            ("exp", "-1"),
            ("nbf", "[5]"),
            ("iat", r#""yesterday""#),
        ] {
            let parsed = claims(&enc(&format!(r#"{{"{c}":{v}}}"#)), &plan).unwrap();
            let slot = match c {
                "exp" => Slot::Exp,
                "nbf" => Slot::Nbf,
                _ => Slot::Iat,
            };
            let e = time(&parsed, slot).unwrap_err();
            assert!(e.0.contains(c), "{e}");
        }
    }

    #[test]
    fn aud_of_another_type_is_an_error() {
        assert!(audience_matches(&serde_json::json!(5), &["api".into()]).is_err());
        assert!(audience_matches(&serde_json::json!(["api", 5]), &["api".into()]).is_err());
    }
}
