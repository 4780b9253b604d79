//! `aiaas-attention`: one decoding step's attention as the demo model runs it on the CPU
//! (SmolLM2-135M: 9 query and 3 key/value heads of 64, 30 layers, an `f16` KV cache), timed
//! through mistral.rs's `Sdpa::run_ragged_decode` (aiaas's mistral.rs patch item 9) for a batch
//! of sequences of different lengths, inside a rayon pool as the engine runs it.
//!
//! Each layer has its own caches (allocated with room for 512 positions, as the engine's grow),
//! so a step reads every sequence's keys and values from memory as decoding does, unless
//! `--distinct-layers 1` keeps one layer's in cache. Prints the median and fastest step, and
//! the keys and values read per second. The values are random; speed does not depend on them.
//! Switches of the kernel (`AIAAS_DECODE_DOTS8=off`) apply as in the server.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use mistralrs_core::layers::{Sdpa, SdpaParams};

#[derive(Parser, Debug)]
#[command(about = "Decoding attention micro-benchmark (the demo model's shapes)")]
struct Args {
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    seqs: usize,
    /// Positions in the shortest sequence's cache; sequence i has `context + i * spread`.
    #[arg(long, default_value_t = 130)]
    context: usize,
    /// Positions added per sequence (the batch's lengths differ, as under real traffic).
    #[arg(long, default_value_t = 15)]
    spread: usize,
    /// Layers per step.
    #[arg(long, default_value_t = 30)]
    layers: usize,
    /// Layers with caches of their own (the rest reuse them): 30 streams the caches from
    /// memory, 1 keeps them in cache.
    #[arg(long, default_value_t = 30)]
    distinct_layers: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Threads of the pool the attention runs in (default: 2, as the engine's on this machine).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const CAPACITY: usize = 512;

/// Per layer: each sequence's query, and its keys and values as views of a larger cache.
type Layer = (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>);

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.distinct_layers >= 1 && args.seqs >= 1 && args.steps >= 1);
    let lens: Vec<usize> = (0..args.seqs)
        .map(|i| args.context + i * args.spread)
        .collect();
    anyhow::ensure!(
        lens.iter().all(|&l| (1..=CAPACITY).contains(&l)),
        "lengths must be 1..={CAPACITY}: {lens:?}"
    );
    let dev = Device::Cpu;
    let random = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Ok(Tensor::randn(0f32, 1.0, shape, &dev)?.to_dtype(DType::F16)?)
    };
    let layers = (0..args.distinct_layers)
        .map(|_| -> Result<Layer> {
            let mut layer: Layer = Default::default();
            for &len in &lens {
                layer.0.push(random((1, HEADS, 1, HEAD_DIM))?);
                layer
                    .1
                    .push(random((1, KV_HEADS, CAPACITY, HEAD_DIM))?.narrow(2, 0, len)?);
                layer
                    .2
                    .push(random((1, KV_HEADS, CAPACITY, HEAD_DIM))?.narrow(2, 0, len)?);
            }
            Ok(layer)
        })
        .collect::<Result<Vec<_>>>()?;
    let params = SdpaParams {
        n_kv_groups: HEADS / KV_HEADS,
        softcap: None,
        softmax_scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        sliding_window: None,
        sinks: None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let mut ms = pool.install(|| -> Result<Vec<f64>> {
        let step = || -> Result<()> {
            for l in 0..args.layers {
                let (qs, ks, vs) = &layers[l % layers.len()];
                std::hint::black_box(Sdpa.run_ragged_decode(qs, ks, vs, &params)?);
            }
            Ok(())
        };
        step()?;
        (0..args.steps)
            .map(|_| {
                let start = Instant::now();
                step()?;
                Ok(start.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    })?;
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let bytes: usize = lens.iter().sum::<usize>() * KV_HEADS * HEAD_DIM * 2 * 2 * args.layers;
    println!(
        "| seqs | lengths | layers (distinct) | step ms, median | fastest | KV read GB/s (median) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {}-{} | {} ({}) | {median:.3} | {:.3} | {:.1} |",
        args.seqs,
        lens[0],
        lens[lens.len() - 1],
        args.layers,
        args.distinct_layers,
        ms[0],
        bytes as f64 / median / 1e6,
    );
    Ok(())
}
