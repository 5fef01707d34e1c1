//! A typed walk over toml's spanned document tree that collects every error.
//!
//! serde's derive stops at the first unknown key or wrong type; `authgate check`
//! must report every error with its line (SPEC §1), so the schema is read by hand
//! from `toml::de::DeTable`, which keeps the span of every key and value.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file, located at the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: usize,
    pub col: usize,
    pub path: String,
    pub reason: String,
}

pub type Value<'i> = Spanned<DeValue<'i>>;

pub struct Reader<'s> {
    src: &'s str,
    pub issues: Vec<Issue>,
}

/// A key's position and its value, as found in a table.
pub struct Field<'t, 'i> {
    pub span: Range<usize>,
    pub value: &'t Value<'i>,
}

impl<'s> Reader<'s> {
    pub fn new(src: &'s str) -> Self {
        Reader {
            src,
            issues: Vec::new(),
        }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
        (line, col)
    }

    pub fn error(&mut self, span: &Range<usize>, path: &str, reason: impl Into<String>) {
        let (line, col) = self.line_col(span.start);
        self.issues.push(Issue {
            line,
            col,
            path: path.to_string(),
            reason: reason.into(),
        });
    }

    /// Reports every key of `t` not in `known` (typo protection, SPEC §2).
    pub fn only_known(&mut self, t: &DeTable<'_>, path: &str, known: &[&str]) {
        for (k, _) in t.iter() {
            if !known.contains(&k.get_ref().as_ref()) {
                let p = join(path, k.get_ref());
                self.error(
                    &k.span(),
                    &p,
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    pub fn field<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<Field<'t, 'i>> {
        t.iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, v)| Field {
                span: k.span(),
                value: v,
            })
    }

    pub fn string(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<(String, Range<usize>)> {
        let f = Self::field(t, key)?;
        match f.value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), f.span)),
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn integer(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<(i64, Range<usize>)> {
        let f = Self::field(t, key)?;
        match f.value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, f.span)),
                Err(_) => {
                    self.error(&f.span, &join(path, key), "integer out of range");
                    None
                }
            },
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected an integer, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An integer within `range`, reported against its key otherwise.
    pub fn bounded(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let (n, span) = self.integer(t, path, key)?;
        if n < min || n > max {
            self.error(
                &span,
                &join(path, key),
                format!("must be between {min} and {max}, got {n}"),
            );
            return None;
        }
        Some(n)
    }

    pub fn boolean(&mut self, t: &DeTable<'_>, path: &str, key: &str) -> Option<bool> {
        let f = Self::field(t, key)?;
        match f.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An array of strings; each element keeps the key's span for errors.
    pub fn strings(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<(Vec<String>, Range<usize>)> {
        let f = Self::field(t, key)?;
        match f.value.get_ref() {
            DeValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, v) in a.iter().enumerate() {
                    match v.get_ref() {
                        DeValue::String(s) => out.push(s.to_string()),
                        other => self.error(
                            &f.span,
                            &format!("{}[{i}]", join(path, key)),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                Some((out, f.span))
            }
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected an array of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn table<'t, 'i>(
        &mut self,
        t: &'t DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Option<(&'t DeTable<'i>, Range<usize>)> {
        let f = Self::field(t, key)?;
        match f.value.get_ref() {
            DeValue::Table(inner) => Some((inner, f.span)),
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected a table, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// `[[key]]` entries, with each entry's span.
    pub fn tables<'t, 'i>(
        &mut self,
        t: &'t DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Vec<(&'t DeTable<'i>, Range<usize>)> {
        let Some(f) = Self::field(t, key) else {
            return Vec::new();
        };
        match f.value.get_ref() {
            DeValue::Array(a) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.get_ref() {
                        DeValue::Table(inner) => out.push((inner, v.span())),
                        other => self.error(
                            &v.span(),
                            &format!("{key}[{i}]"),
                            format!("expected a table, found {}", kind(other)),
                        ),
                    }
                }
                out
            }
            other => {
                self.error(
                    &f.span,
                    &join(path, key),
                    format!("expected [[{key}]] tables, found {}", kind(other)),
                );
                Vec::new()
            }
        }
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
