//! Prometheus metrics (SPEC §8), served on the ops listener.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub tokens_issued: IntCounterVec,
    pub token_rejections: IntCounterVec,
    pub cert_failures: IntCounterVec,
    pub audit_events: IntCounter,
    pub cert_expiry: GaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "obgate_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "obgate_http_request_duration_seconds",
                "Time from request to response, including the audit commit",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["route", "method"],
        )?;
        let tokens_issued = IntCounterVec::new(
            Opts::new(
                "obgate_tokens_issued_total",
                "Access tokens issued by grant type",
            ),
            &["grant_type"],
        )?;
        let token_rejections = IntCounterVec::new(
            Opts::new(
                "obgate_token_rejections_total",
                "Access tokens refused at resource endpoints, by reason",
            ),
            &["reason"],
        )?;
        let cert_failures = IntCounterVec::new(
            Opts::new(
                "obgate_client_cert_failures_total",
                "Client certificates refused at the TLS handshake, by reason",
            ),
            &["reason"],
        )?;
        let audit_events = IntCounter::new(
            "obgate_audit_events_total",
            "Audit events durably committed",
        )?;
        let cert_expiry = GaugeVec::new(
            Opts::new(
                "obgate_client_cert_expiry_seconds",
                "Expiry (Unix time) of the earliest-expiring active certificate of each client",
            ),
            &["client_id"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(token_rejections.clone()))?;
        registry.register(Box::new(cert_failures.clone()))?;
        registry.register(Box::new(audit_events.clone()))?;
        registry.register(Box::new(cert_expiry.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            tokens_issued,
            token_rejections,
            cert_failures,
            audit_events,
            cert_expiry,
        })
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
