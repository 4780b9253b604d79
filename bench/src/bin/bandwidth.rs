//! `aiaas-bandwidth`: a STREAM-like probe of this machine's memory read bandwidth, the ceiling
//! of CPU decoding (each generated token reads every weight once).
//!
//! Each thread sums its own share of a buffer far larger than the caches, several passes; the
//! best pass counts (as in STREAM). Prints GB/s per thread count, and with `--model-bytes` the
//! tokens/s that bandwidth allows for a model of that size.

use std::time::Instant;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Memory read bandwidth probe")]
struct Args {
    /// Buffer size in MiB (well above the last-level cache).
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Passes per thread count (the best is reported).
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Bytes read per generated token (the model file's size), for the tokens/s ceiling.
    #[arg(long)]
    model_bytes: Option<u64>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// Sum of a slice with eight independent accumulators, so that the loop is bound by loads
/// rather than by one add chain (and vectorises).
fn sum(chunk: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = chunk.chunks_exact(8);
    for block in &mut blocks {
        for (a, x) in acc.iter_mut().zip(block) {
            *a = a.wrapping_add(*x);
        }
    }
    let tail: u64 = blocks.remainder().iter().fold(0, |a, x| a.wrapping_add(*x));
    acc.iter().fold(tail, |a, x| a.wrapping_add(*x))
}

fn read_pass(buffer: &[u64], threads: usize) -> (f64, u64) {
    let share = buffer.len().div_ceil(threads);
    let started = Instant::now();
    let total = std::thread::scope(|scope| {
        let handles: Vec<_> = buffer
            .chunks(share)
            .map(|chunk| scope.spawn(move || sum(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .fold(0u64, u64::wrapping_add)
    });
    (started.elapsed().as_secs_f64(), total)
}

fn main() {
    let args = Args::parse();
    let words = args.mib * 1024 * 1024 / 8;
    // Written once, so that every page is really backed by memory before timing.
    let buffer: Vec<u64> = (0..words as u64).collect();
    let bytes = (words * 8) as f64;
    for &threads in &args.threads {
        let threads = threads.max(1);
        let mut best = f64::INFINITY;
        let mut check = 0;
        for _ in 0..args.passes.max(1) {
            let (secs, total) = read_pass(&buffer, threads);
            best = best.min(secs);
            check = total;
        }
        let gbs = bytes / best / 1e9;
        let ceiling = args.model_bytes.map(|b| gbs * 1e9 / b as f64);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "threads": threads,
                    "read_gb_per_s": gbs,
                    "tokens_per_s_ceiling": ceiling,
                })
            );
        } else {
            let ceiling = ceiling
                .map(|c| format!(", ceiling {c:.0} tokens/s"))
                .unwrap_or_default();
            // `check` keeps the sums observable (and is the same every pass).
            println!(
                "{threads} thread(s): read {gbs:.1} GB/s{ceiling} (checksum {})",
                check % 1000
            );
        }
    }
}
