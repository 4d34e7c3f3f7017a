//! Logs (tracing, text or JSON) and Prometheus metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_env("LEADGATE_LOG")
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// One registry per running app, so tests in one process do not share counters.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub inbound_accepted: IntCounterVec,
    pub inbound_replayed: IntCounterVec,
    pub inbound_rejected: IntCounterVec,
    pub inbound_processed: IntCounterVec,
    pub inbound_failed: IntCounterVec,
    pub stage_seconds: HistogramVec,
    pub group_commit_seconds: Histogram,
    pub group_commit_items: Histogram,
    pub inbox_depth: IntGaugeVec,
    /// Nurturing: email send attempts by mailer and outcome.
    pub emails: IntCounterVec,
    /// Nurturing: tracked fetches (open, click) and whether they counted (not a scanner's).
    pub email_events: IntCounterVec,
    /// SLA timers breached, by timer (`first_response`, `resolution`) and priority.
    pub sla_breaches: IntCounterVec,
    pub sla_evaluation_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let http_requests = counter(
            "leadgate_http_requests_total",
            "HTTP requests by route and status",
            &["method", "route", "status"],
        );
        let inbound_accepted = counter(
            "leadgate_inbound_accepted_total",
            "Inbound records made durable",
            &["source"],
        );
        let inbound_replayed = counter(
            "leadgate_inbound_replayed_total",
            "Replays answered from an earlier acceptance",
            &["source"],
        );
        let inbound_rejected = counter(
            "leadgate_inbound_rejected_total",
            "Inbound requests refused (auth, signature, validation)",
            &["channel", "reason"],
        );
        let inbound_processed = counter(
            "leadgate_inbound_processed_total",
            "Inbox rows processed into records",
            &["source"],
        );
        let inbound_failed = counter(
            "leadgate_inbound_failed_total",
            "Inbox rows whose processing failed",
            &["source"],
        );
        let emails = counter(
            "leadgate_emails_total",
            "Email send attempts by mailer and outcome (sent, retry, failed, suppressed, deferred)",
            &["mailer", "outcome"],
        );
        let email_events = counter(
            "leadgate_email_events_total",
            "Tracked email fetches by event; counted = no for scanners' fetches and unknown messages",
            &["event", "counted"],
        );
        let sla_breaches = counter(
            "leadgate_sla_breaches_total",
            "Ticket SLA timers breached",
            &["timer", "priority"],
        );
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let latency = prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets");
        let http_seconds = histogram(
            "leadgate_http_request_seconds",
            "HTTP request latency",
            &["route"],
            latency.clone(),
        );
        let stage_seconds = histogram(
            "leadgate_stage_seconds",
            "Pipeline stage latency per inbox batch",
            &["stage"],
            latency.clone(),
        );
        let group_commit_seconds = histogram(
            "leadgate_group_commit_seconds",
            "Time of one inbox group commit",
            &[],
            latency,
        )
        .with_label_values(&[]);
        let group_commit_items = histogram(
            "leadgate_group_commit_items",
            "Inbound records per group commit",
            &[],
            prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets"),
        )
        .with_label_values(&[]);
        let sla_evaluation_seconds = histogram(
            "leadgate_sla_evaluation_seconds",
            "Time of one SLA evaluation pass",
            &[],
            prometheus::exponential_buckets(0.0001, 2.0, 20).expect("valid buckets"),
        )
        .with_label_values(&[]);
        let inbox_depth = IntGaugeVec::new(
            Opts::new("leadgate_inbox_rows", "Inbox rows by status"),
            &["status"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(inbox_depth.clone()))
            .expect("metric names are unique");
        Self {
            registry,
            http_requests,
            http_seconds,
            inbound_accepted,
            inbound_replayed,
            inbound_rejected,
            inbound_processed,
            inbound_failed,
            stage_seconds,
            group_commit_seconds,
            group_commit_items,
            emails,
            email_events,
            inbox_depth,
            sla_breaches,
            sla_evaluation_seconds,
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
