//! Logs go to stderr, one line per event, text or JSON; level from AUTHGATE_LOG.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let spec = std::env::var("AUTHGATE_LOG").unwrap_or_else(|_| "info".into());
    // The readiness line is what supervisors and scripts wait for: always on.
    let filter = EnvFilter::try_new(format!("{spec},authgate::ready=info"))
        .unwrap_or_else(|_| EnvFilter::new("info,authgate::ready=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
