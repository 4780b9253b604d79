//! Prometheus metrics: requests by route / model / status, latency and time-to-first-token
//! histograms, tokens in and out, queue depth, running sequences, refused credentials.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub ttft: HistogramVec,
    pub tokens: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub running: IntGaugeVec,
    pub auth_refusals: IntCounterVec,
    pub admission_refusals: IntCounterVec,
    pub queue_wait: HistogramVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("aiaas".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests by route, model and status.",
            ),
            &["route", "model", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Request latency, to the last byte.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "model"],
        )?;
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "time_to_first_token_seconds",
                "Time to the first generated token.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "tokens_total",
                "Tokens processed, by model and direction (prompt / completion).",
            ),
            &["model", "direction"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "queue_depth",
                "Requests admitted and waiting for or in the engine, per model.",
            ),
            &["model"],
        )?;
        let running = IntGaugeVec::new(
            Opts::new("running_sequences", "Sequences being generated, per model."),
            &["model"],
        )?;
        let auth_refusals = IntCounterVec::new(
            Opts::new(
                "auth_refusals_total",
                "Requests refused with 401, by reason (never shown to the client).",
            ),
            &["reason"],
        )?;
        let admission_refusals = IntCounterVec::new(
            Opts::new(
                "admission_refusals_total",
                "Requests refused before the engine, by reason (requests, tokens, concurrency, \
                 too_large, budget, queue_full, queue_timeout).",
            ),
            &["reason"],
        )?;
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "queue_wait_seconds",
                "Time from submission to the engine until the request started producing.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        registry.register(Box::new(admission_refusals.clone()))?;
        registry.register(Box::new(queue_wait.clone()))?;
        registry.register(Box::new(auth_refusals.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ttft.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(running.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            ttft,
            tokens,
            queue_depth,
            running,
            auth_refusals,
            admission_refusals,
            queue_wait,
        })
    }

    pub fn refused(&self, reason: &str) {
        self.admission_refusals.with_label_values(&[reason]).inc();
    }

    pub fn record_usage(&self, model: &str, prompt: usize, completion: usize) {
        self.tokens
            .with_label_values(&[model, "prompt"])
            .inc_by(prompt as u64);
        self.tokens
            .with_label_values(&[model, "completion"])
            .inc_by(completion as u64);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
