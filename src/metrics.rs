//! Prometheus metrics (SPEC §8 names), rendered by the admin listener.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("authgate_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder (tests in one process): render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

pub fn render() -> String {
    install().render()
}

/// Drains histogram buckets periodically; the exporter starts no task of its own.
pub fn spawn_upkeep() {
    let h = install();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            t.tick().await;
            h.run_upkeep();
        }
    });
}

/// Per-route request metrics with their handles resolved once per config, so
/// the hot path does no label allocation or registry lookup.
pub struct RouteMetrics {
    route: String,
    duration: metrics::Histogram,
    /// One counter per status code 100..=599, registered on first use.
    by_status: Box<[std::sync::OnceLock<metrics::Counter>]>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            duration: metrics::histogram!("authgate_request_duration_seconds", "route" => route.to_string()),
            by_status: (100..600).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    pub fn label(&self) -> &str {
        &self.route
    }

    pub fn record(&self, status: u16, seconds: f64) {
        self.duration.record(seconds);
        let i = (status.clamp(100, 599) - 100) as usize;
        self.by_status[i]
            .get_or_init(|| {
                metrics::counter!("authgate_requests_total", "route" => self.route.clone(), "status" => status.to_string())
            })
            .increment(1);
    }
}
