//! Prometheus metrics: requests by route / model / status, latency and time-to-first-token
//! histograms, tokens in and out, queue depth, running sequences, refused credentials.

use std::sync::{Arc, Mutex};

use aiaas_engine::ModelStats;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    pub engine_sequences: IntGaugeVec,
    pub engine_sequences_total: IntCounterVec,
    pub prefix_cache_hits: IntCounterVec,
    pub prefix_cache_hit_tokens: IntCounterVec,
    pub decode_steps: IntCounterVec,
    pub decode_tokens: IntCounterVec,
    pub kv_cache_blocks: IntGaugeVec,
    pub kv_cache_usage: GaugeVec,
    /// Serialises the copy of the engines' cumulative figures into the counters.
    engine_sync: Arc<Mutex<()>>,
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
        let engine_sequences = IntGaugeVec::new(
            Opts::new(
                "engine_sequences",
                "Sequences in the model's engine scheduler, by state (running / waiting); a \
                 request with n choices is n sequences.",
            ),
            &["model", "state"],
        )?;
        let engine_sequences_total = IntCounterVec::new(
            Opts::new(
                "engine_sequences_total",
                "Sequences the model's engine has taken in.",
            ),
            &["model"],
        )?;
        let prefix_cache_hits = IntCounterVec::new(
            Opts::new(
                "prefix_cache_hits_total",
                "Sequences that started from a cached prompt prefix.",
            ),
            &["model"],
        )?;
        let prefix_cache_hit_tokens = IntCounterVec::new(
            Opts::new(
                "prefix_cache_hit_tokens_total",
                "Prompt tokens taken from the prefix cache instead of computed.",
            ),
            &["model"],
        )?;
        let decode_steps = IntCounterVec::new(
            Opts::new(
                "engine_decode_steps_total",
                "Decode steps the model's engine ran (one forward pass over the sequences past \
                 their prompt).",
            ),
            &["model"],
        )?;
        let decode_tokens = IntCounterVec::new(
            Opts::new(
                "engine_decode_tokens_total",
                "Tokens those decode steps produced, one per sequence per step; divided by the \
                 steps, the mean decode batch.",
            ),
            &["model"],
        )?;
        let kv_cache_blocks = IntGaugeVec::new(
            Opts::new(
                "kv_cache_blocks",
                "Paged-attention KV-cache blocks, by state (total / used).",
            ),
            &["model", "state"],
        )?;
        let kv_cache_usage = GaugeVec::new(
            Opts::new(
                "kv_cache_usage_ratio",
                "Used share of the paged-attention KV-cache blocks (0 to 1).",
            ),
            &["model"],
        )?;
        registry.register(Box::new(engine_sequences.clone()))?;
        registry.register(Box::new(engine_sequences_total.clone()))?;
        registry.register(Box::new(prefix_cache_hits.clone()))?;
        registry.register(Box::new(prefix_cache_hit_tokens.clone()))?;
        registry.register(Box::new(decode_steps.clone()))?;
        registry.register(Box::new(decode_tokens.clone()))?;
        registry.register(Box::new(kv_cache_blocks.clone()))?;
        registry.register(Box::new(kv_cache_usage.clone()))?;
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
            engine_sequences,
            engine_sequences_total,
            prefix_cache_hits,
            prefix_cache_hit_tokens,
            decode_steps,
            decode_tokens,
            kv_cache_blocks,
            kv_cache_usage,
            engine_sync: Arc::new(Mutex::new(())),
        })
    }

    /// Copy the engines' figures into the gauges and counters (before a scrape).
    pub fn observe_engine(&self, models: &[ModelStats]) {
        // The engines' counts are cumulative: each counter is raised to the engine's value, one
        // scrape at a time so that two scrapes never add the same difference twice.
        let _serial = self.engine_sync.lock().unwrap_or_else(|e| e.into_inner());
        for stats in models {
            let model = stats.model.as_str();
            self.queue_depth
                .with_label_values(&[model])
                .set(stats.waiting as i64);
            self.running
                .with_label_values(&[model])
                .set(stats.running as i64);
            let Some(engine) = &stats.engine else {
                continue;
            };
            self.engine_sequences
                .with_label_values(&[model, "running"])
                .set(engine.running_sequences as i64);
            self.engine_sequences
                .with_label_values(&[model, "waiting"])
                .set(engine.waiting_sequences as i64);
            raise(
                &self.engine_sequences_total.with_label_values(&[model]),
                engine.sequences,
            );
            raise(
                &self.prefix_cache_hits.with_label_values(&[model]),
                engine.prefix_cache_hits,
            );
            raise(
                &self.prefix_cache_hit_tokens.with_label_values(&[model]),
                engine.prefix_cache_hit_tokens,
            );
            raise(
                &self.decode_steps.with_label_values(&[model]),
                engine.decode_steps,
            );
            raise(
                &self.decode_tokens.with_label_values(&[model]),
                engine.decode_tokens,
            );
            if let Some(kv) = engine.kv_cache {
                self.kv_cache_blocks
                    .with_label_values(&[model, "total"])
                    .set(kv.blocks as i64);
                self.kv_cache_blocks
                    .with_label_values(&[model, "used"])
                    .set(kv.used_blocks() as i64);
                self.kv_cache_usage
                    .with_label_values(&[model])
                    .set(kv.usage());
            }
        }
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

/// Raise a counter to a cumulative value read elsewhere (never lowers it).
fn raise(counter: &IntCounter, value: usize) {
    let value = value as u64;
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}
