//! `aiaas-qmatmul`: the quantized matmuls of one transformer layer of the demo model
//! (SmolLM2-135M: hidden 576, MLP 1536, 9 query and 3 key/value heads of 64), as candle runs
//! them on CPU, timed for one input row (one sequence decoding), a batch (sequences decoded
//! together) and a prompt's rows.
//!
//! Prints, per quantisation type and row count, the median time of one layer's seven matmuls
//! (four with `--fused`) over several runs, per row, and the multiply-adds per second that
//! makes. The weights are random; speed does not depend on their values.

use std::time::Instant;

use anyhow::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Quantized matmul micro-benchmark (one layer of the demo model)")]
struct Args {
    /// Comma-separated input row counts.
    #[arg(long, default_value = "1,8,128", value_delimiter = ',')]
    rows: Vec<usize>,
    /// Comma-separated quantisation types (q4_1, q4_0, q8_0; the K-quants need widths divisible by 256, which 576 is not).
    #[arg(long, default_value = "q4_1", value_delimiter = ',')]
    dtypes: Vec<String>,
    /// Timed runs per case (the median is reported).
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Threads of the pool the matmuls run in (default: as many as candle uses, at least 2).
    #[arg(long)]
    threads: Option<usize>,
    /// Copies of the layer's weights, run one after another: 1 keeps them in cache between
    /// runs; 30 (the demo model's layers, ~66 MB of Q4_1) streams them from memory as decoding does.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Milliseconds of work per timed run (whole layers, at least one).
    #[arg(long, default_value_t = 200)]
    run_ms: u64,
    /// The layer's matmuls as the GGUF Llama model runs them since aiaas's mistral.rs patch
    /// item 8: query, key and value as one matmul, gate and up as one (four calls, not seven;
    /// the same multiply-adds).
    #[arg(long)]
    fused: bool,
    /// The rows as one prompt's (an input of shape 1 x rows x k, as the model runs a prompt)
    /// rather than independent rows (rows x k, as a decoding batch). The kernels chosen depend
    /// only on the number of rows, not on this.
    #[arg(long)]
    prompt: bool,
    /// The output layer instead of a transformer layer: one matmul of 576 → 49,152 (the
    /// vocabulary; Q8_0 in the demo GGUF, 30 MB).
    #[arg(long, conflicts_with = "fused")]
    output: bool,
    /// Comma-separated settings of the panel kernels (aiaas's candle patch items 8 to 10, Q4_1
    /// and Q8_0) to time, one after the other for each row count (`on`; `off`: the row kernels, as
    /// before item 8; `interleaved`: the panel kernels with Q4_1 weights stored interleaved by
    /// eight rows, as the GGUF Llama model stores them since item 11, on 256-bit vectors;
    /// `avx512`: the same on 512-bit vectors where the CPU has AVX-512 VNNI, item 13; `amx`:
    /// that with AMX where the CPU has it, item 12, as served).
    #[arg(long, default_value = "on", value_delimiter = ',')]
    panels: Vec<String>,
    /// Time only what every quantized matmul does first, serially: quantizing its input rows
    /// to 8-bit blocks (Q8_1 for Q4_1 weights, Q8_0 for Q8_0), row by row as the matmul calls
    /// it, for `--rows` rows of widths 224 (seven blocks: one block at a time), 256 (eight:
    /// eight at a time since candle patch item 17), 576 and 1536 (the demo model's).
    #[arg(long, conflicts_with_all = ["fused", "output", "prompt"])]
    quantize: bool,
}

/// One `--panels` setting: which kernels the products may take.
#[derive(Clone, Copy)]
struct Setting {
    panels: bool,
    interleaved: bool,
    avx512: bool,
    amx: bool,
    name: &'static str,
}

impl Setting {
    fn parse(name: &str) -> Result<Self> {
        let (panels, interleaved, avx512, amx, name) = match name {
            "on" => (true, false, false, false, "panels"),
            "off" => (false, false, false, false, "row kernels"),
            "interleaved" => (true, true, false, false, "panels, interleaved"),
            "avx512" => (true, true, true, false, "interleaved, AVX-512"),
            "amx" => (true, true, true, true, "interleaved, AVX-512, AMX"),
            other => {
                anyhow::bail!("--panels takes on, off, interleaved, avx512 or amx, not {other}")
            }
        };
        Ok(Self {
            panels,
            interleaved,
            avx512,
            amx,
            name,
        })
    }
}

/// (input width, output width) of the seven matmuls of one layer.
const LAYER: [(usize, usize); 7] = [
    (576, 576),  // q
    (576, 192),  // k
    (576, 192),  // v
    (576, 576),  // o
    (576, 1536), // gate
    (576, 1536), // up
    (1536, 576), // down
];

/// The same layer with the query, key and value weights stacked into one matrix, and the gate
/// and up weights into another.
const FUSED_LAYER: [(usize, usize); 4] = [
    (576, 960),  // q | k | v
    (576, 576),  // o
    (576, 3072), // gate | up
    (1536, 576), // down
];

/// The output layer: hidden width to vocabulary.
const OUTPUT_LAYER: [(usize, usize); 1] = [(576, 49152)];

fn dtype(name: &str) -> Result<GgmlDType> {
    Ok(match name {
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q8_0" => GgmlDType::Q8_0,
        other => anyhow::bail!("unknown quantisation type {other}"),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    // As mistral.rs's engine thread runs the model (aiaas's patch): as worker 0 of a rayon
    // pool of its own, so each matmul forks and joins from inside the pool.
    let threads = args
        .threads
        .unwrap_or_else(|| candle_core::utils::get_num_threads().max(2));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .build()?
        .install(|| run(&args))
}

fn run(args: &Args) -> Result<()> {
    if args.quantize {
        return quantize(args);
    }
    let device = Device::Cpu;
    let layer_shapes: &[(usize, usize)] = if args.output {
        &OUTPUT_LAYER
    } else if args.fused {
        &FUSED_LAYER
    } else {
        &LAYER
    };
    let macs_per_row: usize = layer_shapes.iter().map(|(k, n)| k * n).sum();
    let panels: Vec<Setting> = args
        .panels
        .iter()
        .map(|p| Setting::parse(p))
        .collect::<Result<_>>()?;
    let interleave = panels.iter().any(|s| s.interleaved);
    if panels.iter().any(|s| s.amx) && !candle_core::quantized::k_quants::amx_supported() {
        eprintln!("note: this CPU or OS offers no AMX: `amx` runs the panel kernels");
    }
    if panels.iter().any(|s| s.avx512) && !candle_core::quantized::k_quants::avx512_supported() {
        eprintln!("note: this CPU has no AVX-512 VNNI: `avx512` runs the 256-bit panel kernels");
    }
    println!("| type | rows | input | layer ms (median) | per row µs | GMAC/s |");
    println!("|---|---|---|---|---|---|");
    for name in &args.dtypes {
        let dtype = dtype(name)?;
        // Each layer's matrices as stored, and (with `--panels interleaved`) interleaved.
        let mut mats = Vec::new();
        let mut interleaved_mats = Vec::new();
        for _ in 0..args.layers.max(1) {
            let (mut plain, mut interleaved) = (Vec::new(), Vec::new());
            for &(k, n) in layer_shapes {
                let w = Tensor::rand(-1f32, 1f32, (n, k), &device)?;
                plain.push(QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?);
                if interleave {
                    let q = candle_core::quantized::k_quants::interleave_panels(
                        QTensor::quantize(&w, dtype)?,
                    )?;
                    interleaved.push(QMatMul::from_qtensor(q)?);
                }
            }
            mats.push(plain);
            interleaved_mats.push(interleaved);
        }
        for (&rows, &panels) in args
            .rows
            .iter()
            .flat_map(|rows| panels.iter().map(move |panels| (rows, panels)))
        {
            candle_core::quantized::k_quants::set_panel_kernels(panels.panels);
            candle_core::quantized::k_quants::set_avx512(panels.avx512);
            candle_core::quantized::k_quants::set_amx(panels.amx);
            let input = format!(
                "{}, {}",
                if args.prompt { "prompt" } else { "rows" },
                panels.name
            );
            let mats = if panels.interleaved {
                &interleaved_mats
            } else {
                &mats
            };
            let inputs = layer_shapes
                .iter()
                .map(|&(k, _)| {
                    let x = Tensor::rand(-1f32, 1f32, (rows, k), &device)?;
                    if args.prompt {
                        x.unsqueeze(0)
                    } else {
                        Ok(x)
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let layer = || -> candle_core::Result<()> {
                for mats in mats {
                    for (m, x) in mats.iter().zip(&inputs) {
                        std::hint::black_box(m.forward(x)?);
                    }
                }
                Ok(())
            };
            // Per layer.
            let median = median_seconds(args, layer)? / mats.len() as f64;
            println!(
                "| {name} | {rows} | {input} | {:.3} | {:.1} | {:.1} |",
                median * 1e3,
                median * 1e6 / rows as f64,
                (macs_per_row * rows) as f64 / median / 1e9
            );
        }
    }
    Ok(())
}

/// The median time of one call of `pass` over `--runs` timed runs, after a warm-up call that
/// sizes each run to about `--run-ms`.
fn median_seconds(
    args: &Args,
    mut pass: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    let start = Instant::now();
    pass()?;
    let one = start.elapsed().as_secs_f64().max(1e-7);
    let per_run = ((args.run_ms as f64 / 1e3 / one) as usize).max(1);
    let mut times: Vec<f64> = (0..args.runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_run {
                pass()?;
            }
            Ok(start.elapsed().as_secs_f64() / per_run as f64)
        })
        .collect::<candle_core::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `--quantize`: ns per 32-value block of the input rows' quantization, median of the runs.
fn quantize(args: &Args) -> Result<()> {
    use candle_core::quantized::k_quants::{BlockQ8_0, BlockQ8_1, GgmlType};
    fn rows_of<B: GgmlType>(args: &Args, rows: usize, k: usize) -> Result<f64> {
        let xs = Tensor::rand(-1f32, 1f32, (rows, k), &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let blocks = k / 32;
        let mut ys = vec![B::zeros(); rows * blocks];
        let pass = || {
            for (row, out) in xs.chunks_exact(k).zip(ys.chunks_exact_mut(blocks)) {
                B::from_float(row, out);
            }
            std::hint::black_box(&mut ys);
            Ok(())
        };
        Ok(median_seconds(args, pass)? * 1e9 / (rows * blocks) as f64)
    }
    println!("| blocks | rows | width | ns per block (median) |");
    println!("|---|---|---|---|");
    for &rows in &args.rows {
        for k in [224, 256, 576, 1536] {
            let q8_1 = rows_of::<BlockQ8_1>(args, rows, k)?;
            println!("| Q8_1 | {rows} | {k} | {q8_1:.2} |");
        }
        for k in [224, 256, 576] {
            let q8_0 = rows_of::<BlockQ8_0>(args, rows, k)?;
            println!("| Q8_0 | {rows} | {k} | {q8_0:.2} |");
        }
    }
    Ok(())
}
