//! Logs go to stderr, one line per event, text or JSON; level from AUTHGATE_LOG.
//!
//! Every line is appended to one pending buffer and written by the log thread:
//! access-log lines (one per request) in batches at most 100 ms or 32 KiB apart,
//! so a busy gateway makes one `write` per batch instead of one per request; any
//! other event wakes the log thread at once. No worker thread ever writes to
//! stderr itself (SPEC §13). Access lines are written straight into a reused
//! per-thread buffer (`access.rs`), not through tracing's formatter.

mod access;

pub(crate) use access::civil;
pub use access::{access_enabled, write_access, AccessLine};

use std::io::{IsTerminal, Write};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Written out once this much is pending, whatever the timer says.
const BATCH_BYTES: usize = 32 * 1024;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

struct Pending {
    buf: Mutex<Vec<u8>>,
    /// Wakes the log thread early: a non-access event, or a full batch.
    wake: Condvar,
    /// Whether the log thread runs (else lines are written by their thread).
    threaded: std::sync::atomic::AtomicBool,
}

static PENDING: OnceLock<Pending> = OnceLock::new();
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn pending() -> &'static Pending {
    PENDING.get_or_init(|| Pending {
        buf: Mutex::new(Vec::with_capacity(BATCH_BYTES)),
        wake: Condvar::new(),
        threaded: std::sync::atomic::AtomicBool::new(false),
    })
}

pub(crate) fn format() -> LogFormat {
    *FORMAT.get().unwrap_or(&LogFormat::Text)
}

/// Appends whole lines; `urgent` lines are written at once (by the log thread
/// when it runs, else here).
pub(crate) fn append(data: &[u8], urgent: bool) {
    let p = pending();
    let Ok(mut b) = p.buf.lock() else { return };
    b.extend_from_slice(data);
    if !p.threaded.load(std::sync::atomic::Ordering::Relaxed) {
        if urgent || b.len() >= BATCH_BYTES {
            write_out(&mut b);
        }
    } else if urgent || b.len() >= BATCH_BYTES {
        p.wake.notify_one();
    }
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// Writes out pending lines (also called on shutdown).
pub fn flush() {
    if let Ok(mut b) = pending().buf.lock() {
        write_out(&mut b);
    }
}

/// The log thread: swaps the pending buffer for an empty one and writes it
/// outside the lock, so request threads never wait on stderr.
fn log_thread() {
    let p = pending();
    let mut out: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    loop {
        {
            let Ok(b) = p.buf.lock() else { return };
            let Ok((mut b, _)) = p.wake.wait_timeout(b, BATCH_INTERVAL) else {
                return;
            };
            std::mem::swap(&mut *b, &mut out);
        }
        write_out(&mut out);
        // Keep the buffers' capacity, but not a burst's worth forever.
        if out.capacity() > 4 * BATCH_BYTES {
            out = Vec::with_capacity(BATCH_BYTES);
        }
    }
}

/// tracing's fmt layer hands each event's whole line to one `write_all`.
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        append(data, true);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Writers;

impl<'a> MakeWriter<'a> for Writers {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let spec = std::env::var("AUTHGATE_LOG").unwrap_or_else(|_| "info".into());
    // The readiness line is what supervisors and scripts wait for: always on.
    let filter = EnvFilter::try_new(format!("{spec},authgate::ready=info"))
        .unwrap_or_else(|_| EnvFilter::new("info,authgate::ready=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Writers)
        .with_ansi(std::io::stderr().is_terminal());
    let ok = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if ok.is_ok() {
        let started = std::thread::Builder::new()
            .name("authgate-log".into())
            .spawn(log_thread)
            .is_ok();
        pending()
            .threaded
            .store(started, std::sync::atomic::Ordering::Relaxed);
    }
}
