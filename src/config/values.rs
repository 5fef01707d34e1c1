//! Value types of gateway.toml: durations, sizes, rates, secret references, CIDRs.
//! Each parser returns a reason string; the reader adds file, line and key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// SPEC §8: integer with `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration (e.g. \"250ms\", \"30s\", \"15m\", \"14d\")")
    })?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "{s:?} is not a duration: unit must be ms, s, m, h or d"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// SPEC §8: integer bytes or with `KiB`, `MiB`, `GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. \"64KiB\", \"1MiB\")"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size: unit must be KiB, MiB or GiB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A rate limit: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// SPEC §8: `N/sec|min|hour`, or `"off"` (None).
pub fn parse_rate(s: &str) -> Result<Option<Rate>, String> {
    let s = s.trim();
    if s == "off" {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not a rate (e.g. \"20/min\", \"10/hour\", \"off\")");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!(
            "{s:?}: the count must be at least 1 (use \"off\" to disable)"
        ));
    }
    let per = match unit.trim() {
        "sec" | "s" | "second" => Duration::from_secs(1),
        "min" | "m" | "minute" => Duration::from_secs(60),
        "hour" | "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok(Some(Rate { count, per }))
}

/// Where a secret lives: never inline in the config (SPEC §2).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

pub fn parse_secret_ref(s: &str, base: &Path) -> Result<SecretRef, String> {
    if let Some(name) = s.strip_prefix("env:") {
        if name.is_empty() {
            return Err("\"env:\" needs a variable name".into());
        }
        Ok(SecretRef::Env(name.to_string()))
    } else if let Some(p) = s.strip_prefix("file:") {
        if p.is_empty() {
            return Err("\"file:\" needs a path".into());
        }
        Ok(SecretRef::File(base.join(p)))
    } else {
        Err("secrets are never inline: write \"env:NAME\" or \"file:PATH\"".into())
    }
}

impl SecretRef {
    /// Reads the secret's bytes, a trailing newline trimmed (SPEC §8).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let mut bytes = match self {
            SecretRef::Env(name) => std::env::var_os(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?
                .into_encoded_bytes(),
            SecretRef::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
            }
        };
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Ok(bytes)
    }
}

/// An IP network in CIDR notation; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10 years").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1MB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn rates_parse_or_turn_off() {
        assert_eq!(
            parse_rate("20/min").unwrap(),
            Some(Rate {
                count: 20,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(parse_rate("off").unwrap(), None);
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("5/fortnight").is_err());
    }

    #[test]
    fn secrets_are_never_inline() {
        let base = Path::new("/etc/authgate");
        assert_eq!(
            parse_secret_ref("env:X", base).unwrap(),
            SecretRef::Env("X".into())
        );
        assert_eq!(
            parse_secret_ref("file:k.pem", base).unwrap(),
            SecretRef::File("/etc/authgate/k.pem".into())
        );
        assert!(parse_secret_ref("hunter2hunter2", base).is_err());
    }

    #[test]
    fn cidrs_match_their_members() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }
}

/// An origin as browsers serialise it (RFC 6454 §6.2): `scheme://host[:port]`,
/// scheme `http` or `https`, nothing else (no path, no trailing `/`, no
/// userinfo, no wildcard). Returned lowercased, the scheme's default port
/// dropped, so that two spellings of one origin compare equal. `null` is not one.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an origin (scheme://host[:port]): {why}"
        ))
    };
    let lower = s.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return bad("no scheme");
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return bad("the scheme must be http or https"),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad("unclosed IPv6 literal");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return bad("only a port may follow the host"),
            },
        };
        (format!("[{addr}]"), port)
    } else {
        let (h, p) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if h.len() > 253 || !h.split('.').all(label_ok) {
            return bad("the host must be a DNS name or an IP address, with no path");
        }
        (h.to_string(), p)
    };
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => {
                if n == default_port {
                    Ok(format!("{scheme}://{host}"))
                } else {
                    Ok(format!("{scheme}://{host}:{n}"))
                }
            }
            _ => bad("invalid port"),
        },
    }
}

#[cfg(test)]
mod origin_tests {
    use super::parse_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let ok = |s: &str| parse_origin(s).unwrap();
        assert_eq!(ok("https://App.Example.com"), "https://app.example.com");
        assert_eq!(ok("https://app.example.com:443"), "https://app.example.com");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://[::1]:80"), "http://[::1]");
        for bad in [
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/x",
            "https://user@app.example.com",
            "https://*.example.com",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app.example.com:+80",
            "https://",
            "https://a..b",
            "https://[::1",
            "https://app.example.com?x",
            "https://app.example.com#x",
            "https://app example.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
