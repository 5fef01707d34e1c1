//! Logs go to stderr, one line per event, text or JSON; level from AUTHGATE_LOG.
//!
//! Access-log lines (one per request) are buffered and written in batches at
//! most 100 ms apart, so a busy gateway makes one `write` per batch instead of
//! one per request; every other event is written at once.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
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

static ACCESS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// Writes out pending access-log lines (also called on shutdown).
pub fn flush() {
    if let Some(b) = ACCESS.get() {
        if let Ok(mut b) = b.lock() {
            write_out(&mut b);
        }
    }
}

pub struct Batch(Arc<Mutex<Vec<u8>>>);

impl Write for Batch {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
            if b.len() >= BATCH_BYTES {
                write_out(&mut b);
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub enum LineWriter {
    Now(std::io::Stderr),
    Batched(Batch),
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Now(s) => s.write(data),
            LineWriter::Batched(b) => b.write(data),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LineWriter::Now(s) => s.flush(),
            LineWriter::Batched(b) => b.flush(),
        }
    }
}

struct Writers(Arc<Mutex<Vec<u8>>>);

impl<'a> MakeWriter<'a> for Writers {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter::Now(std::io::stderr())
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        if meta.target() == "authgate::access" {
            LineWriter::Batched(Batch(self.0.clone()))
        } else {
            // Whatever is not an access line goes out at once, in order with the
            // batches written before it.
            flush();
            LineWriter::Now(std::io::stderr())
        }
    }
}

pub fn init(format: LogFormat) {
    let spec = std::env::var("AUTHGATE_LOG").unwrap_or_else(|_| "info".into());
    // The readiness line is what supervisors and scripts wait for: always on.
    let filter = EnvFilter::try_new(format!("{spec},authgate::ready=info"))
        .unwrap_or_else(|_| EnvFilter::new("info,authgate::ready=info"));
    let buf = ACCESS
        .get_or_init(|| Arc::new(Mutex::new(Vec::with_capacity(BATCH_BYTES))))
        .clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Writers(buf))
        .with_ansi(std::io::stderr().is_terminal());
    let ok = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if ok.is_ok() {
        let _ = std::thread::Builder::new()
            .name("authgate-log".into())
            .spawn(|| loop {
                std::thread::sleep(BATCH_INTERVAL);
                flush();
            });
    }
}
