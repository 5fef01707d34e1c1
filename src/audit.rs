//! The audit log (SPEC §18): one JSON object per security event — registrations,
//! logins, refresh-token reuse, logouts, revocations, CLI changes to users and API
//! keys, config reloads — with `time`, `event`, `user`, `peer`, `request_id`.
//!
//! Events are built from typed fields only (`&'static str` outcomes, the already
//! validated username and roles), so no password, token, key or cookie can reach
//! the file. The gateway's events go through a channel to a writer thread that
//! appends to the file (opened `O_APPEND`, reopened on SIGHUP for logrotate);
//! `stderr` goes through the log under the tracing target `authgate::audit`. CLI
//! commands append their lines directly (`cli_event`).

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, RwLock};

use http::HeaderValue;
use serde::Serialize;

use crate::config::telemetry::AuditTarget;

/// Events waiting for the writer thread; beyond this they are dropped and counted
/// rather than making a request wait on the disk.
const QUEUE: usize = 4096;

/// What happened. Every field is a closed set of words or a validated name.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Register,
    /// `ok`, `bad_credentials`, `throttled`, `invalid_request`, `error`; for a
    /// sign-in through a provider `ok`, `sso_denied`, `sso_failed`.
    Login {
        outcome: &'static str,
    },
    RefreshReuse,
    Logout,
    /// `by`: `cli`, `reuse`, `logout`, `backchannel`.
    Revoke {
        by: &'static str,
    },
    /// From `authgate users`: `add`, `remove`, `set-password`, `set-roles`, `revoke`.
    UserChange {
        action: &'static str,
        roles: Option<&'a [String]>,
    },
    /// From `authgate apikeys` (SPEC §16): `create`, `revoke`; `key_id` is the key's
    /// public id, never the key.
    ApiKeyChange {
        action: &'static str,
        key_id: &'a str,
    },
    /// `ok` or `failed`.
    ConfigReload {
        outcome: &'static str,
    },
}

impl Event<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Register => "register",
            Event::Login { .. } => "login",
            Event::RefreshReuse => "refresh_reuse",
            Event::Logout => "logout",
            Event::Revoke { .. } => "revoke",
            Event::UserChange { .. } => "user_change",
            Event::ApiKeyChange { .. } => "api_key_change",
            Event::ConfigReload { .. } => "config_reload",
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'static str,
    user: Option<&'a str>,
    peer: Option<&'a str>,
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let date = crate::logging::civil(now.as_secs());
    format!(
        "{}.{:03}Z",
        String::from_utf8_lossy(&date),
        now.subsec_millis()
    )
}

fn render(ev: &Event<'_>, user: Option<&str>, peer: Option<&str>, rid: Option<&str>) -> String {
    let mut l = Line {
        time: now_rfc3339(),
        event: ev.kind(),
        user,
        peer,
        request_id: rid,
        outcome: None,
        by: None,
        action: None,
        roles: None,
        key_id: None,
    };
    match *ev {
        Event::Login { outcome } | Event::ConfigReload { outcome } => l.outcome = Some(outcome),
        Event::Revoke { by } => l.by = Some(by),
        Event::UserChange { action, roles } => {
            l.action = Some(action);
            l.roles = roles;
        }
        Event::ApiKeyChange { action, key_id } => {
            l.action = Some(action);
            l.key_id = Some(key_id);
        }
        Event::Register | Event::RefreshReuse | Event::Logout => {}
    }
    serde_json::to_string(&l).unwrap_or_default()
}

enum Msg {
    Line(String),
    Reopen(PathBuf),
}

enum Sink {
    Off,
    Stderr,
    File(SyncSender<Msg>),
}

static SINK: RwLock<Sink> = RwLock::new(Sink::Off);
/// The writer thread's queue, kept once started so that a reload to another
/// file reuses the thread.
static WRITER: Mutex<Option<SyncSender<Msg>>> = Mutex::new(None);

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
    o.open(path)
}

fn writer_thread(rx: std::sync::mpsc::Receiver<Msg>) {
    let mut file: Option<std::fs::File> = None;
    for msg in rx {
        match msg {
            Msg::Reopen(p) => match open_append(&p) {
                Ok(f) => file = Some(f),
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "audit log: cannot open");
                    file = None;
                }
            },
            Msg::Line(mut l) => {
                l.push('\n');
                let written = file.as_mut().map(|f| f.write_all(l.as_bytes()));
                if !matches!(written, Some(Ok(()))) {
                    metrics::counter!("authgate_audit_write_errors_total").increment(1);
                }
            }
        }
    }
}

/// Points the gateway's audit log at `target` (at start and on every reload):
/// a file is (re)opened, so SIGHUP after logrotate's rename starts a new file.
pub fn configure(target: Option<&AuditTarget>) {
    let sink = match target {
        None => Sink::Off,
        Some(AuditTarget::Stderr) => Sink::Stderr,
        Some(AuditTarget::File(p)) => {
            let Ok(mut w) = WRITER.lock() else { return };
            let tx = match &*w {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = sync_channel(QUEUE);
                    if let Err(e) = std::thread::Builder::new()
                        .name("authgate-audit".into())
                        .spawn(move || writer_thread(rx))
                    {
                        tracing::error!(error = %e, "audit log: cannot start its writer");
                        return;
                    }
                    *w = Some(tx.clone());
                    tx
                }
            };
            // Blocking send: reopening is rare and must not be dropped.
            let _ = tx.send(Msg::Reopen(p.clone()));
            Sink::File(tx)
        }
    };
    if let Ok(mut s) = SINK.write() {
        *s = sink;
    }
}

/// SIGHUP with a config that did not load: the same file, reopened.
pub fn reopen(target: Option<&AuditTarget>) {
    if let (Some(AuditTarget::File(p)), Ok(s)) = (target, SINK.read()) {
        if let Sink::File(tx) = &*s {
            let _ = tx.send(Msg::Reopen(p.clone()));
        }
    }
}

/// Who is asking, for the events of one identity request (set by the edge).
struct Ctx {
    request_id: HeaderValue,
    peer: HeaderValue,
    /// The validated username a login attempt named (noted by `authenticate`).
    user: RefCell<Option<String>>,
}

tokio::task_local! {
    static CTX: Ctx;
}

/// Runs an identity endpoint with its request id and peer at hand for its events.
pub fn scope<F: std::future::Future>(
    request_id: &HeaderValue,
    peer: &HeaderValue,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    CTX.scope(
        Ctx {
            request_id: request_id.clone(),
            peer: peer.clone(),
            user: RefCell::new(None),
        },
        f,
    )
}

/// Notes the (validated) username a login attempt named, for its `login` event.
pub fn note_user(user: Option<&str>) {
    let _ = CTX.try_with(|c| *c.user.borrow_mut() = user.map(str::to_string));
}

/// One event of the running gateway, from within `scope` (else peer and request
/// id are null).
pub fn emit(ev: Event<'_>, user: &str) {
    emit_opt(ev, Some(user));
}

fn emit_opt(ev: Event<'_>, user: Option<&str>) {
    let Ok(sink) = SINK.read() else { return };
    if matches!(*sink, Sink::Off) {
        return;
    }
    let line = CTX
        .try_with(|c| {
            let noted = c.user.borrow();
            render(
                &ev,
                user.or(noted.as_deref()),
                c.peer.to_str().ok(),
                c.request_id.to_str().ok(),
            )
        })
        .unwrap_or_else(|_| render(&ev, user, None, None));
    metrics::counter!("authgate_audit_events_total", "kind" => ev.kind()).increment(1);
    match &*sink {
        Sink::Off => {}
        Sink::Stderr => tracing::info!(target: "authgate::audit", "{line}"),
        Sink::File(tx) => match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("authgate_audit_dropped_total").increment(1);
            }
        },
    }
}

/// The `login` event of one attempt, from its metric outcome; the user is the
/// one `authenticate` noted (none when the attempt never got that far).
pub fn login(metric_outcome: &'static str) {
    let outcome = match metric_outcome {
        "success" => "ok",
        "invalid_credentials" => "bad_credentials",
        "rate_limited" => "throttled",
        other => other,
    };
    emit_opt(Event::Login { outcome }, None);
}

/// A sign-in through a provider (SPEC §14): `ok` with the identity as
/// `issuer:sub`, else `sso_denied` (the `allow` rules or the provider said no) or
/// `sso_failed` (state, provider error or outage: the log has the detail).
pub fn sso_login(class: &'static str, identity: Option<&str>) {
    let outcome = match class {
        "success" => "ok",
        "access_denied" => "sso_denied",
        _ => "sso_failed",
    };
    emit_opt(Event::Login { outcome }, identity);
}

/// A spent refresh token came back: its family and every token of the user die.
pub fn refresh_reuse(user: &str) {
    emit(Event::RefreshReuse, user);
    emit(Event::Revoke { by: "reuse" }, user);
}

/// A config reload's outcome.
pub fn config_reload(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    emit_opt(Event::ConfigReload { outcome }, None);
}

/// An event from a CLI command: appended by this process straight to the
/// configured audit log (one `write` per line, `O_APPEND`, so lines from the
/// gateway and the CLI never interleave within a line).
pub fn cli_event(target: Option<&AuditTarget>, ev: Event<'_>, user: Option<&str>) {
    let Some(target) = target else { return };
    let line = render(&ev, user, None, None);
    match target {
        AuditTarget::Stderr => tracing::info!(target: "authgate::audit", "{line}"),
        AuditTarget::File(p) => {
            let r = open_append(p).and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = r {
                // The change itself is done; say that its record is missing.
                eprintln!("audit log {}: {e}", p.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_common_fields_and_only_the_events_own() {
        let v: serde_json::Value = serde_json::from_str(&render(
            &Event::Login {
                outcome: "bad_credentials",
            },
            Some("alice"),
            Some("127.0.0.1"),
            Some("rid-1"),
        ))
        .unwrap();
        assert_eq!(v["event"], "login");
        assert_eq!(v["outcome"], "bad_credentials");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["peer"], "127.0.0.1");
        assert_eq!(v["request_id"], "rid-1");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("by").is_none() && v.get("roles").is_none());
        let v: serde_json::Value = serde_json::from_str(&render(
            &Event::ApiKeyChange {
                action: "add",
                key_id: "k_1",
            },
            Some("svc"),
            None,
            None,
        ))
        .unwrap();
        assert_eq!(v["event"], "api_key_change");
        assert_eq!(v["key_id"], "k_1");
        assert!(v["peer"].is_null());
    }
}
