//! docs/grafana/authgate.json and docs/prometheus/alerts.yml only query what the
//! gateway exports: every `authgate_*` metric they name, every label they select or
//! group by, and every label value they match is checked against a real gateway's
//! `/metrics` after traffic that makes the series exist. Both files' PromQL goes
//! through `promtool check rules`; without promtool the test fails under `CI=true`
//! (`.ci/run` installs the `prometheus` package) and skips that part otherwise.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Metrics the dashboard may use before this build exports them: they are registered by
/// the features of SPEC §14–§18, which land separately. A name here that the gateway
/// does export is checked like any other; one it does not is accepted as declared.
const DECLARED: &[&str] = &[
    "authgate_rate_limited_total",
    "authgate_oidc_logins_total",
    "authgate_api_key_auth_total",
    "authgate_forward_auth_total",
    "authgate_audit_events_total",
];

/// Labels Prometheus adds at scrape time, and the histogram bucket label.
const SCRAPE_LABELS: &[&str] = &["job", "instance", "le"];

/// name → (label → values seen), from the Prometheus text format.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every `authgate_[a-z_]+` name in `text` (recording rules are `authgate:...`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("authgate_") {
        if text[..i].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        out.insert(name.trim_end_matches('_').to_string());
    }
    out
}

/// The exported metric a queried name means: histograms are queried as
/// `_bucket`/`_sum`/`_count`.
fn base_name(name: &str, exported: &Exported) -> String {
    if exported.contains_key(name) || DECLARED.contains(&name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if exported.contains_key(base) || DECLARED.contains(&base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Parses `/metrics` (the Prometheus text format).
fn parse_exposition(body: &str) -> Exported {
    let mut types = BTreeMap::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_string(), t.to_string());
            }
        }
    }
    let mut out = Exported::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = l.find(['{', ' ']).unwrap_or(l.len());
        let series = &l[..name_end];
        let mut base = series.to_string();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(b) = series.strip_suffix(suffix) {
                if types
                    .get(b)
                    .is_some_and(|t| t == "histogram" || t == "summary")
                {
                    base = b.to_string();
                }
            }
        }
        let labels = out.entry(base).or_default();
        if l[name_end..].starts_with('{') {
            let inner = &l[name_end + 1..l.rfind('}').unwrap_or(l.len())];
            for m in matchers(inner) {
                labels.entry(m.label).or_default().insert(m.value);
            }
        }
    }
    out
}

struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// `a="x", b=~"y|z"` → matchers (no escaped quotes occur in these files).
fn matchers(inner: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let label_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let label = rest[..label_end].to_string();
        let after = rest[label_end..].trim_start();
        let op_len = after.find('"').unwrap_or(after.len());
        let op = after[..op_len].trim().to_string();
        let Some(v) = after.get(op_len + 1..) else {
            panic!("cannot parse the selector {{{inner}}}");
        };
        let Some(close) = v.find('"') else {
            panic!("cannot parse the selector {{{inner}}}");
        };
        out.push(Matcher {
            label,
            op,
            value: v[..close].to_string(),
        });
        rest = v[close + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

/// The `expr:` values of a rules file written in this repository's style: inline, or
/// a `|` block of more-indented lines. (promtool checks the YAML itself.)
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let indent = l.len() - l.trim_start().len();
        let key = l.trim_start();
        // `- expr:` puts the key two columns further in than the dash.
        let (key, indent) = match key.strip_prefix("- ") {
            Some(k) => (k, indent + 2),
            None => (key, indent),
        };
        if let Some(v) = key.strip_prefix("expr:") {
            let v = v.trim();
            if v.starts_with('|') || v.starts_with('>') {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let n = lines[i + 1];
                    let ni = n.len() - n.trim_start().len();
                    if !n.trim().is_empty() && ni <= indent {
                        break;
                    }
                    block.push(n.trim());
                    i += 1;
                }
                out.push(block.join("\n"));
            } else {
                out.push(v.to_string());
            }
        }
        i += 1;
    }
    out
}

/// Every `expr` string in the dashboard, at any depth.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Label names in `by (...)`, `without (...)`, `on (...)` and `ignoring (...)`.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kw in ["by", "without", "on", "ignoring"] {
        for (i, _) in expr.match_indices(kw) {
            if expr[..i].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let rest = expr[i + kw.len()..].trim_start();
            let Some(list) = rest.strip_prefix('(') else {
                continue;
            };
            let Some(close) = list.find(')') else {
                continue;
            };
            for l in list[..close].split(',') {
                let l = l.trim();
                if !l.is_empty() {
                    out.insert(l.to_string());
                }
            }
        }
    }
    out
}

/// Checks one PromQL expression against what the gateway exports; returns problems.
fn check_expr(expr: &str, exported: &Exported, src: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // Selectors: `name{...}` and `{__name__=~"a|b", ...}`.
    let mut used = BTreeSet::new();
    for (open, _) in expr.match_indices('{') {
        let Some(len) = expr[open..].find('}') else {
            problems.push(format!("unclosed selector in {expr}"));
            continue;
        };
        let ms = matchers(&expr[open + 1..open + len]);
        let before: String = expr[..open]
            .chars()
            .rev()
            .take_while(|c| is_ident(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut names: Vec<String> = Vec::new();
        if !before.is_empty() {
            names.push(before);
        }
        for m in &ms {
            if m.label == "__name__" {
                names.extend(m.value.split('|').map(str::to_string));
            }
        }
        for name in names {
            let base = base_name(&name, exported);
            used.insert(base.clone());
            let Some(labels) = exported.get(&base) else {
                continue; // a declared metric, or reported below as unknown
            };
            for m in ms.iter().filter(|m| m.label != "__name__") {
                if SCRAPE_LABELS.contains(&m.label.as_str()) {
                    continue;
                }
                let Some(seen) = labels.get(&m.label) else {
                    problems.push(format!("{base} has no label {:?} ({expr})", m.label));
                    continue;
                };
                // Values: those the scrape showed, else (for outcomes that only
                // follow failures, like "error") a string literal in src.
                if m.op == "=" || m.op == "=~" || m.op == "!=" {
                    let words: Vec<&str> = m.value.split('|').collect();
                    if !words.iter().all(|w| {
                        !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    }) {
                        continue; // a real regex such as 5..
                    }
                    for w in words {
                        if !seen.contains(w) && !src.contains(&format!("\"{w}\"")) {
                            problems.push(format!(
                                "{base}{{{}}} never has the value {w:?}: seen {seen:?} ({expr})",
                                m.label
                            ));
                        }
                    }
                }
            }
        }
    }
    for name in metric_names(expr) {
        used.insert(base_name(&name, exported));
    }
    // Grouping labels must exist on one of the expression's metrics.
    for label in grouping_labels(expr) {
        if SCRAPE_LABELS.contains(&label.as_str()) {
            continue;
        }
        let on_any = used.iter().any(|m| {
            DECLARED.contains(&m.as_str())
                || exported.get(m).is_some_and(|l| l.contains_key(&label))
        });
        if !on_any {
            problems.push(format!(
                "no metric of this expression has the label {label:?}: {expr}"
            ));
        }
    }
    problems
}

fn require_promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true but promtool is missing: .ci/run installs the `prometheus` package; \
             the rules must not pass unchecked"
        );
        eprintln!("SKIPPED: promtool not installed (apt-get install prometheus)");
    }
    found
}

fn promtool_check(promtool: &Path, file: &Path) {
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway with an admin listener, an upstream that refuses connections and an
/// issuer whose JWKS cannot be fetched, after traffic that creates every series:
/// requests, auth failures, logins and registrations, an upstream error, a JWKS
/// fetch, a good and a refused reload.
async fn scrape_after_traffic() -> String {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    cfg.rest.push_str(&format!(
        "\n[[upstream]]\nname = \"gone\"\ntargets = [\"http://{}\"]\n\n\
         [[route]]\npath = \"/gone\"\nupstream = \"gone\"\nauth = \"public\"\n\n\
         [[issuer]]\nname = \"corp\"\nissuer = \"https://corp.example\"\n\
         jwks_uri = \"http://{}/keys\"\naudiences = [\"api\"]\njwks_wait = \"1s\"\n",
        dead_addr(),
        dead_addr()
    ));
    let config = cfg.render();
    let gw = Gateway::start_text(&config, &[]);
    let c = client();
    assert_eq!(register(&gw, "alice", "correct horse").await.status(), 201);
    assert_eq!(login(&gw, "alice", "correct horse").await.status(), 200);
    assert_eq!(login(&gw, "alice", "wrong horse!").await.status(), 401);
    let status = |p: &str| {
        let c = c.clone();
        let url = gw.url(p);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/public/x").await, 200);
    assert_eq!(status("/protected").await, 401);
    assert_eq!(status("/gone/x").await, 502);
    assert!(
        gw.reload(&config),
        "a valid reload was refused:\n{}",
        gw.logs()
    );
    assert!(
        !gw.reload("[server]\nlisten = 1\n"),
        "an invalid reload was taken"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = c
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("authgate_jwks_fetches_total") || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every string literal of src/, for label values that only appear after failures.
fn src_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut s = String::new();
    walk(&Path::new(REPO).join("src"), &mut s);
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_query_only_what_the_gateway_exports() {
    let dashboard_text = read("docs/grafana/authgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("docs/grafana/authgate.json is JSON");
    let alerts = read("docs/prometheus/alerts.yml");

    // The dashboard's shape: a Prometheus datasource variable that every query uses.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus datasource variable: {vars:?}"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
    }
    let mut dash_exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut dash_exprs);
    let rule_exprs = rule_exprs(&alerts);
    assert!(rule_exprs.len() >= 10, "{rule_exprs:?}");

    let body = scrape_after_traffic().await;
    let exported = parse_exposition(&body);
    let ours: BTreeSet<&String> = exported
        .keys()
        .filter(|k| k.starts_with("authgate_"))
        .collect();

    eprintln!("exported after the traffic: {ours:?}");

    // 1. Every name either file mentions, anywhere, is exported (or declared).
    let mut unknown = Vec::new();
    for (file, text) in [("authgate.json", &dashboard_text), ("alerts.yml", &alerts)] {
        for name in metric_names(text) {
            let base = base_name(&name, &exported);
            if !exported.contains_key(&base) && !DECLARED.contains(&base.as_str()) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the gateway does not export: {unknown:?}\nexported: {ours:?}"
    );

    // 2. Labels and values.
    let src = src_text();
    // A declared name must at least be one the gateway's code registers.
    for name in DECLARED {
        assert!(
            src.contains(&format!("\"{name}\"")),
            "{name} is declared for the dashboard but no code in src/ registers it"
        );
    }
    let problems: Vec<String> = dash_exprs
        .iter()
        .chain(&rule_exprs)
        .flat_map(|e| check_expr(e, &exported, &src))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // 3. The dashboard shows every metric the gateway exported here.
    let dash_names: BTreeSet<String> = metric_names(&dashboard_text)
        .iter()
        .map(|n| base_name(n, &exported))
        .collect();
    let missing: Vec<_> = ours.iter().filter(|m| !dash_names.contains(**m)).collect();
    assert!(missing.is_empty(), "no dashboard panel for {missing:?}");

    // 4. promtool parses the rules, and the dashboard's queries as recording rules.
    let Some(promtool) = require_promtool() else {
        return;
    };
    promtool_check(
        &promtool,
        &Path::new(REPO).join("docs/prometheus/alerts.yml"),
    );
    let dir = TempDir::new("dashboard-rules");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dash_exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        // A JSON string is a valid YAML double-quoted scalar.
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    promtool_check(&promtool, &file);
}

#[test]
fn the_checker_catches_unknown_names_labels_and_values() {
    // The checks above must be able to fail: a fixed exposition and bad queries.
    let exported = parse_exposition(
        "# TYPE authgate_logins_total counter\n\
         authgate_logins_total{outcome=\"success\"} 1\n\
         # TYPE authgate_request_duration_seconds histogram\n\
         authgate_request_duration_seconds_bucket{route=\"/x\",le=\"0.1\"} 1\n\
         authgate_request_duration_seconds_count{route=\"/x\"} 1\n",
    );
    let src = "\"invalid_credentials\"";
    let ok = |e: &str| check_expr(e, &exported, src);
    assert!(
        ok("sum by (outcome) (rate(authgate_logins_total{outcome=\"success\"}[5m]))").is_empty()
    );
    assert!(ok("rate(authgate_logins_total{outcome=\"invalid_credentials\"}[5m])").is_empty());
    assert!(
        ok("sum by (route, le) (rate(authgate_request_duration_seconds_bucket[5m]))").is_empty()
    );
    assert_eq!(
        ok("rate(authgate_logins_total{outcome=\"sucess\"}[5m])").len(),
        1
    );
    assert_eq!(ok("rate(authgate_logins_total{reason=\"x\"}[5m])").len(), 1);
    assert_eq!(
        ok("sum by (outcomes) (rate(authgate_logins_total[5m]))").len(),
        1
    );
    assert_eq!(
        ok("rate({__name__=~\"authgate_logins_total\", outcome=\"nope\"}[5m])").len(),
        1
    );
    let names = metric_names("rate(authgate_loginz_total[5m]) + authgate:recorded:x");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["authgate_loginz_total"]
    );
    assert_eq!(
        base_name("authgate_request_duration_seconds_count", &exported),
        "authgate_request_duration_seconds"
    );
    assert_eq!(
        rule_exprs("  - expr: a\n  - expr: |\n      b\n      c\n    labels: {}\n"),
        ["a", "b\nc"]
    );
}
