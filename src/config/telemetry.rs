//! `[telemetry]` and `[audit]` (SPEC §18) as the runtime reads them.

use std::path::PathBuf;

/// `[telemetry]`: span export over OTLP/HTTP and the share of new traces sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// `None`: export off (the default).
    pub otlp_endpoint: Option<String>,
    /// 0..=1, default 1.0: the share of new traces marked sampled.
    pub sample_ratio: f64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: None,
            sample_ratio: 1.0,
        }
    }
}

/// `[audit] path`: where security events go (absent: nowhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// `file:PATH`, relative to the config's folder; appended to.
    File(PathBuf),
    /// `stderr`: through the log, under the tracing target `authgate::audit`.
    Stderr,
}
