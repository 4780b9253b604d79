//! `aiaas-load`: a streaming load generator for any OpenAI-compatible server.
//!
//! For each concurrency level it runs a bounded number of streaming chat completions and reports
//! time to first token, inter-token latency, output tokens/s and p50/p99, as a markdown table
//! (and JSON with `--json`). Loopback targets only, unless `--allow-remote`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Streaming load generator for OpenAI-compatible servers")]
struct Args {
    /// Base URL including /v1, e.g. http://127.0.0.1:8080/v1
    #[arg(long)]
    url: String,
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "unused")]
    api_key: String,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,2,4,8", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Requests per level (at least the concurrency).
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Output tokens per request (max_tokens; the server may stop earlier at EOS).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Approximate prompt length in words.
    #[arg(long, default_value_t = 32)]
    prompt_words: usize,
    /// Vary prompt lengths: request `i` adds `i % (spread + 1)` words to `--prompt-words`, so
    /// concurrent sequences have different lengths (as real traffic does).
    #[arg(long, default_value_t = 0)]
    prompt_spread: usize,
    /// Start the concurrent clients this many milliseconds apart (client k waits k times it
    /// before its first request), so that their sequences are not in lockstep, as requests of
    /// real traffic are not: in a closed loop with equal prompts and outputs, requests that
    /// start together also finish together and the next ones start together again.
    #[arg(long, default_value_t = 0)]
    stagger_ms: u64,
    /// Warm-up requests before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Label for the table (e.g. the server's name).
    #[arg(long, default_value = "server")]
    label: String,
    /// Repetition number, copied into the JSON lines (for medians over repetitions).
    #[arg(long, default_value_t = 0)]
    rep: u32,
    /// Also print the results as JSON lines.
    #[arg(long)]
    json: bool,
    /// An aiaas `/metrics` URL to sample every 100 ms during each level: the peaks of the
    /// model's KV-cache use and of its engine's running and waiting sequences are reported.
    #[arg(long)]
    metrics_url: Option<String>,
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Debug, Default, Clone)]
struct Sample {
    ttft: Duration,
    itl: Vec<Duration>,
    tokens: usize,
    /// As the server counted them (0 when it does not report usage).
    prompt_tokens: usize,
    latency: Duration,
}

#[derive(Debug, Serialize)]
struct LevelReport {
    label: String,
    rep: u32,
    concurrency: usize,
    requests: usize,
    errors: usize,
    requests_per_s: f64,
    output_tokens_per_s: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    itl_p50_ms: f64,
    itl_p99_ms: f64,
    latency_p50_ms: f64,
    mean_output_tokens: f64,
    mean_prompt_tokens: f64,
    /// Peaks sampled from `--metrics-url` (absent without it, or when the server has no
    /// such figure: the KV-cache share needs paged attention).
    #[serde(skip_serializing_if = "Option::is_none")]
    kv_cache_peak: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running_peak: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_peak: Option<f64>,
}

/// The largest values seen of a few of aiaas's engine gauges for one model.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    kv_cache: Option<f64>,
    running: Option<f64>,
    waiting: Option<f64>,
}

impl Peaks {
    fn observe(&mut self, text: &str, model: &str) {
        let value = |series: String| {
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
        };
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.kv_cache = max(
            self.kv_cache,
            value(format!("aiaas_kv_cache_usage_ratio{{model=\"{model}\"}}")),
        );
        self.running = max(
            self.running,
            value(format!(
                "aiaas_engine_sequences{{model=\"{model}\",state=\"running\"}}"
            )),
        );
        self.waiting = max(
            self.waiting,
            value(format!(
                "aiaas_engine_sequences{{model=\"{model}\",state=\"waiting\"}}"
            )),
        );
    }
}

/// Sample `url` every 100 ms until `stop` is set; the peaks seen.
async fn sample_metrics(
    client: reqwest::Client,
    url: String,
    model: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Peaks {
    let mut peaks = Peaks::default();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(res) = client.get(&url).send().await {
            if let Ok(text) = res.text().await {
                peaks.observe(&text, &model);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peaks
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// A request for a long text (so that greedy decoding runs to `max_tokens` rather than stopping
/// early) about a list of common words; `words` sets the prompt's length (about one token each).
fn prompt(words: usize, salt: usize) -> String {
    let vocab = [
        "the", "model", "server", "token", "stream", "fast", "river", "stone", "light", "count",
    ];
    let mut s =
        format!("Story {salt}. Write a very long and detailed story that uses these words: ");
    for i in 0..words {
        s.push_str(vocab[(i * 7 + salt) % vocab.len()]);
        s.push(' ');
    }
    s
}

async fn one_request(client: &reqwest::Client, args: &Args, salt: usize) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": prompt(args.prompt_words + salt % (args.prompt_spread + 1), salt)}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let res = client
        .post(format!("{}/chat/completions", args.url))
        .bearer_auth(&args.api_key)
        .json(&body)
        .send()
        .await?;
    if !res.status().is_success() {
        bail!(
            "HTTP {}: {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }
    let mut sample = Sample::default();
    let mut last: Option<Instant> = None;
    let mut pieces = 0usize;
    let mut buf = Vec::new();
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            let Some(data) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let data = &data[..data.len() - 2];
            if data == b"[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(data)?;
            if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                let count = |field: &str| usage[field].as_u64().unwrap_or(0) as usize;
                sample.tokens = count("completion_tokens");
                sample.prompt_tokens = count("prompt_tokens");
            }
            let has_content = v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty());
            if has_content {
                let now = Instant::now();
                match last {
                    None => sample.ttft = now - started,
                    Some(prev) => sample.itl.push(now - prev),
                }
                last = Some(now);
                pieces += 1;
            }
        }
    }
    if sample.tokens == 0 {
        sample.tokens = pieces;
    }
    sample.latency = started.elapsed();
    Ok(sample)
}

async fn run_level(client: &reqwest::Client, args: Arc<Args>, concurrency: usize) -> LevelReport {
    let total = args.requests.max(concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = args.metrics_url.clone().map(|url| {
        tokio::spawn(sample_metrics(
            client.clone(),
            url,
            args.model.clone(),
            stop.clone(),
        ))
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (client, args, next) = (client.clone(), args.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(args.stagger_ms * worker as u64)).await;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                out.push(one_request(&client, &args, i).await);
            }
            out
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for w in workers {
        for r in w.await.unwrap_or_default() {
            match r {
                Ok(s) => samples.push(s),
                Err(e) => {
                    errors += 1;
                    eprintln!("request failed: {e:#}");
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let peaks = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Peaks::default(),
    };
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut ttft: Vec<Duration> = samples.iter().map(|s| s.ttft).collect();
    let mut itl: Vec<Duration> = samples.iter().flat_map(|s| s.itl.iter().copied()).collect();
    let mut latency: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    ttft.sort();
    itl.sort();
    latency.sort();
    let prompt_tokens: usize = samples.iter().map(|s| s.prompt_tokens).sum();
    LevelReport {
        label: args.label.clone(),
        rep: args.rep,
        concurrency,
        requests: samples.len(),
        errors,
        requests_per_s: samples.len() as f64 / wall,
        output_tokens_per_s: tokens as f64 / wall,
        ttft_p50_ms: percentile(&ttft, 50.0),
        ttft_p99_ms: percentile(&ttft, 99.0),
        itl_p50_ms: percentile(&itl, 50.0),
        itl_p99_ms: percentile(&itl, 99.0),
        latency_p50_ms: percentile(&latency, 50.0),
        mean_output_tokens: tokens as f64 / samples.len().max(1) as f64,
        mean_prompt_tokens: prompt_tokens as f64 / samples.len().max(1) as f64,
        kv_cache_peak: peaks.kv_cache,
        running_peak: peaks.running,
        waiting_peak: peaks.waiting,
    }
}

fn check_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).context("invalid --url")?;
    let host = parsed.host_str().unwrap_or_default();
    let ok = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("refusing non-loopback target {host} (pass --allow-remote)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if !args.allow_remote {
        check_loopback(&args.url)?;
        if let Some(url) = &args.metrics_url {
            check_loopback(url)?;
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    for i in 0..args.warmup {
        one_request(&client, &args, 10_000 + i)
            .await
            .context("warm-up request")?;
    }
    let peaks = args.metrics_url.is_some();
    println!(
        "| server | conc | reqs | err | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | latency p50 ms |{}",
        if peaks { " KV cache peak | running peak | waiting peak |" } else { "" }
    );
    println!(
        "|---|---|---|---|---|---|---|---|---|---|---|{}",
        if peaks { "---|---|---|" } else { "" }
    );
    for &c in &args.concurrency {
        let r = run_level(&client, args.clone(), c).await;
        let show = |v: Option<f64>, percent: bool| match v {
            Some(v) if percent => format!(" {:.1}% |", v * 100.0),
            Some(v) => format!(" {v:.0} |"),
            None => " - |".to_string(),
        };
        let extra = if peaks {
            format!(
                "{}{}{}",
                show(r.kv_cache_peak, true),
                show(r.running_peak, false),
                show(r.waiting_peak, false)
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |{extra}",
            r.label,
            r.concurrency,
            r.requests,
            r.errors,
            r.requests_per_s,
            r.output_tokens_per_s,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.itl_p50_ms,
            r.itl_p99_ms,
            r.latency_p50_ms
        );
        if args.json {
            eprintln!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
