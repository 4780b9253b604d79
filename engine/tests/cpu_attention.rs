//! mistral.rs's CPU attention (`Sdpa::run_attention` on the CPU device, the kernels in
//! vendor/mistralrs-core/src/attention/backends/cpu.rs that aiaas patches) against attention
//! written out here with plain candle operations in f32: a decoding step (one query row per
//! sequence, several sequences in a batch, as continuous batching runs them) and prompts (many
//! query rows, a causal mask, a prompt continuing a cached prefix), with grouped-query heads,
//! K/V read through a strided view of a larger cache, padding masks, logit soft-capping, and
//! every activation dtype the engine uses on CPU (f32, f16, bf16). Prompts are checked on both
//! prompt kernels: the tiled one (the default) and the one of one query row at a time; decoding
//! steps on both decoding kernels where the CPU has AVX-512 (the 512-bit one, which reads `f16`
//! caches where they lie, and the one that widens them), each with a batch cut into a task per
//! (sequence, head group) and into a task per chunk of positions, both forced whatever the
//! number of threads. The
//! MLP's activation (`mul_and_act`, SiLU of the gate times the up projection), which shares the
//! attention's eight-lane `exp`, is checked here too, and so is the CPU rope (`rope_i_lanes`,
//! against candle-nn's `rope_i`, to the bit, and `RotaryEmbedding::forward` on a batch at
//! different positions against each sequence alone).

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, D};
use mistralrs_core::layers::{
    decode_avx512, decode_direct, mul_and_act, rope_i_lanes, set_decode_avx512, set_decode_direct,
    set_decode_tasks, set_prompt_tiles, Activation, DecodeTasks, RotaryEmbedding, Sdpa, SdpaParams,
};
use std::sync::Mutex;

mod common;

/// Deterministic values in [-2, 2): twice `common::values` (exact in f32).
fn values(len: usize, seed: u64) -> Vec<f32> {
    common::values(len, seed)
        .into_iter()
        .map(|v| v * 2.0)
        .collect()
}

struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
    softcap: Option<f32>,
    /// Mask of shape (batch, 1, q_len, kv_len) or (q_len, kv_len), `-inf` where masked.
    mask: Option<Tensor>,
}

/// Attention in f32 with candle's matmul and softmax: the reference.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, case: &Case, scale: f32) -> Tensor {
    let groups = case.heads / case.kv_heads;
    let repeat = |t: &Tensor| {
        let (b, kh, len, d) = t.dims4().unwrap();
        t.to_dtype(DType::F32)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
            .expand((b, kh, groups, len, d))
            .unwrap()
            .reshape((b, kh * groups, len, d))
            .unwrap()
    };
    let q = q.to_dtype(DType::F32).unwrap();
    let (k, v) = (repeat(k), repeat(v));
    let mut att = (q.matmul(&k.t().unwrap()).unwrap() * f64::from(scale)).unwrap();
    if let Some(cap) = case.softcap {
        att = ((att / f64::from(cap)).unwrap().tanh().unwrap() * f64::from(cap)).unwrap();
    }
    if let Some(mask) = &case.mask {
        att = att
            .broadcast_add(&mask.to_dtype(DType::F32).unwrap())
            .unwrap();
    }
    let att = candle_nn::ops::softmax(&att, D::Minus1).unwrap();
    att.matmul(&v).unwrap()
}

/// Runs `case` in `dtype` through the engine's CPU attention and the reference; returns the
/// largest absolute difference.
fn max_difference(case: &Case, dtype: DType) -> f32 {
    let device = Device::Cpu;
    let (b, h, kh, d) = (case.batch, case.heads, case.kv_heads, case.head_dim);
    let q = Tensor::from_vec(
        values(b * h * case.q_len * d, 1),
        (b, h, case.q_len, d),
        &device,
    )
    .unwrap()
    .to_dtype(dtype)
    .unwrap();
    // K and V as a KV cache holds them: a view of the first `kv_len` positions of a larger
    // buffer, so rows are strided.
    let capacity = case.kv_len + 11;
    let cache = |seed| {
        Tensor::from_vec(
            values(b * kh * capacity * d, seed),
            (b, kh, capacity, d),
            &device,
        )
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .narrow(2, 0, case.kv_len)
        .unwrap()
    };
    let (k, v) = (cache(2), cache(3));
    let scale = 1.0 / (d as f32).sqrt();
    let params = SdpaParams {
        n_kv_groups: h / kh,
        softcap: case.softcap,
        softmax_scale: scale,
        sliding_window: None,
        sinks: None,
    };
    let mask = case.mask.as_ref().map(|m| m.to_dtype(dtype).unwrap());
    let got = Sdpa
        .run_attention(&q, &k, &v, mask.as_ref(), None, &params)
        .unwrap();
    assert_eq!(got.dims(), &[b, h, case.q_len, d]);
    let expected = reference(&q, &k, &v, case, scale);
    let diff = max_abs_difference(&got, &expected);
    assert!(diff.is_finite(), "non-finite output");
    diff
}

/// The largest absolute difference between `got` (any dtype) and `expected` (f32).
fn max_abs_difference(got: &Tensor, expected: &Tensor) -> f32 {
    (got.to_dtype(DType::F32).unwrap() - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A tensor's values as f32, flattened.
fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Held while a test runs the attention: `set_prompt_tiles`, `set_decode_avx512` and
/// `set_decode_direct` switch a kernel for the whole process, and each case is checked on every
/// kernel of its kind.
static KERNELS: Mutex<()> = Mutex::new(());

/// A decoding step's kernel for `f16` caches (the others always take the widening one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Decode {
    /// 512-bit vectors reading the rows where they lie (where the CPU has AVX-512 F).
    Avx512,
    /// 256-bit vectors reading the rows where they lie (AVX2 builds).
    Direct,
    /// Rows widened to `f32` first.
    Widening,
}

impl Decode {
    fn set(self) {
        set_decode_avx512(self == Decode::Avx512);
        set_decode_direct(self == Decode::Direct);
    }
}

/// The kernel switches a case runs under: prompts (several query rows) on the tiled kernel and
/// on the one-row kernel, decoding steps on each decoding kernel the build and CPU have. Each
/// entry is `(prompt tiles, decoding kernel)`.
fn kernels(q_len: usize) -> Vec<(bool, Decode)> {
    if q_len > 1 {
        return vec![(true, Decode::Avx512), (false, Decode::Avx512)];
    }
    let mut kernels = vec![(true, Decode::Widening)];
    for kernel in [Decode::Direct, Decode::Avx512] {
        kernel.set();
        let available = match kernel {
            Decode::Avx512 => decode_avx512(),
            _ => decode_direct(),
        };
        if available {
            kernels.insert(0, (true, kernel));
        }
    }
    set_decode_avx512(true);
    set_decode_direct(true);
    kernels
}

/// The switches as a process starts with them.
fn default_kernels() {
    set_prompt_tiles(true);
    set_decode_avx512(true);
    set_decode_direct(true);
    set_decode_tasks(DecodeTasks::Auto);
}

/// The ways a decoding step may be cut into tasks, each forced whatever the number of threads
/// (`DecodeTasks::Auto` picks one of them by the number of (sequence, group) pairs per thread).
const TASKS: [DecodeTasks; 2] = [DecodeTasks::Whole, DecodeTasks::Chunks];

fn check(case: &Case) {
    let _kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    let tasks: &[DecodeTasks] = if case.q_len == 1 {
        &TASKS
    } else {
        &[DecodeTasks::Auto]
    };
    for ((tiles, decode), &tasks) in kernels(case.q_len)
        .into_iter()
        .flat_map(|k| tasks.iter().map(move |t| (k, t)))
    {
        set_prompt_tiles(tiles);
        decode.set();
        set_decode_tasks(tasks);
        for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::F16, 4e-3), (DType::BF16, 3e-2)] {
            let diff = max_difference(case, dtype);
            assert!(
                diff <= tolerance,
                "{dtype:?}, prompt tiles {tiles}, decoding kernel {decode:?}, {tasks:?} tasks: max |difference| {diff} > {tolerance} (batch {}, heads {}/{}, q_len {}, kv_len {}, head_dim {})",
                case.batch,
                case.heads,
                case.kv_heads,
                case.q_len,
                case.kv_len,
                case.head_dim
            );
        }
    }
    default_kernels();
}

fn causal_mask(q_len: usize, kv_len: usize) -> Tensor {
    // Query row i sits at position kv_len - q_len + i and sees every position up to it.
    let offset = kv_len - q_len;
    let data: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(data, (q_len, kv_len), &Device::Cpu).unwrap()
}

#[test]
fn decoding_a_batch_gives_each_sequence_its_own_attention() {
    // Three sequences with different K and V: each must get its own output, not another's.
    check(&Case {
        batch: 3,
        heads: 6,
        kv_heads: 2,
        q_len: 1,
        kv_len: 37,
        head_dim: 64,
        softcap: None,
        mask: None,
    });
}

#[test]
fn decoding_one_sequence_over_a_long_context() {
    check(&Case {
        batch: 1,
        heads: 9,
        kv_heads: 3,
        q_len: 1,
        kv_len: 300,
        head_dim: 64,
        softcap: None,
        mask: None,
    });
}

#[test]
fn decoding_with_padding_masks_softcap_and_odd_head_sizes() {
    // Sequence 1 is shorter: its first 20 positions are padding.
    let (batch, kv_len) = (2, 45);
    let data: Vec<f32> = (0..batch)
        .flat_map(|b| {
            (0..kv_len).map(move |j| {
                if b == 1 && j < 20 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(data, (batch, 1, 1, kv_len), &Device::Cpu).unwrap();
    // 36 is scored one position at a time, 40 eight positions at a time (`lanes::dots8`), 48
    // also on 512-bit vectors where the CPU has AVX-512 (`f16`).
    for head_dim in [36, 40, 48] {
        check(&Case {
            batch,
            heads: 4,
            kv_heads: 4,
            q_len: 1,
            kv_len,
            head_dim,
            softcap: Some(5.0),
            mask: Some(mask.clone()),
        });
    }
}

#[test]
fn a_prompt_with_a_causal_mask() {
    for (q_len, head_dim) in [(9, 64), (70, 64), (17, 20)] {
        check(&Case {
            batch: 2,
            heads: 6,
            kv_heads: 2,
            q_len,
            kv_len: q_len,
            head_dim,
            softcap: None,
            mask: Some(causal_mask(q_len, q_len)),
        });
    }
}

#[test]
fn a_prompt_continuing_a_cached_prefix() {
    // Five new tokens after 140 cached ones (a prefix-cache hit, or a chat's next turn).
    check(&Case {
        batch: 1,
        heads: 9,
        kv_heads: 3,
        q_len: 5,
        kv_len: 145,
        head_dim: 64,
        softcap: None,
        mask: Some(causal_mask(5, 145)),
    });
}

#[test]
fn a_batch_of_prompts_with_padding_masks_softcap_and_odd_head_sizes() {
    // Two prompts of 23 rows over 83 positions (60 cached): the second is left-padded by 30
    // positions, and the causal part hides each row's later positions. A head of 36 values
    // takes the tiled kernel's remainder columns; 23 rows end in a partial tile.
    let (batch, q_len, kv_len, pad) = (2, 23, 83, 30);
    let offset = kv_len - q_len;
    let data: Vec<f32> = (0..batch)
        .flat_map(|b| {
            (0..q_len).flat_map(move |i| {
                (0..kv_len).map(move |j| {
                    if j > offset + i || (b == 1 && j < pad) {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
        })
        .collect();
    let mask = Tensor::from_vec(data, (batch, 1, q_len, kv_len), &Device::Cpu).unwrap();
    check(&Case {
        batch,
        heads: 4,
        kv_heads: 2,
        q_len,
        kv_len,
        head_dim: 36,
        softcap: Some(5.0),
        mask: Some(mask),
    });
}

#[test]
fn a_long_prompt_without_a_mask() {
    // Every row sees all 150 positions: no block is skipped.
    check(&Case {
        batch: 1,
        heads: 3,
        kv_heads: 1,
        q_len: 150,
        kv_len: 150,
        head_dim: 64,
        softcap: None,
        mask: None,
    });
}

#[test]
fn decode_avx512_is_used_where_the_cpu_has_it() {
    let Some(has) = common::cpu_has(&["avx512f"]) else {
        return;
    };
    let _kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    set_decode_avx512(true);
    assert_eq!(decode_avx512(), has, "AVX-512 F in /proc/cpuinfo: {has}");
    set_decode_avx512(false);
    assert!(!decode_avx512());
    set_decode_avx512(true);
}

/// The 256-bit kernels that read `f16` caches where they lie (mistral.rs patch item 23) are
/// what an AVX2 build (the project's x86-64-v3 target) runs unless switched off.
#[test]
fn decode_direct_is_used_in_avx2_builds() {
    let built = cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ));
    let _kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    set_decode_direct(true);
    assert_eq!(
        decode_direct(),
        built,
        "built with AVX2, FMA and F16C: {built}"
    );
    set_decode_direct(false);
    assert!(!decode_direct());
    set_decode_direct(true);
}

/// A decoding step of a ragged batch (sequences of different lengths, each with its own K and
/// V, as continuous batching runs them): `Sdpa::run_ragged_decode` attends them all in one
/// parallel loop, and each sequence gets exactly (bit for bit) what `run_attention` gives it
/// alone, which matches the reference. Lengths cross the kernel's 64-position chunks; a head
/// width of 20 takes the weighted sum's remainder path, and one of 40 the 256-bit
/// kernel's eight-column pass. With `f16` caches, the 256-bit kernel that reads them where they
/// lie gives the widening kernel's bits.
#[test]
fn decoding_a_ragged_batch_gives_each_sequence_what_it_gets_alone() {
    let device = Device::Cpu;
    let _kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    // Each sequence's output alone, by (dtype, kernel, heads, width, sequence).
    let mut outputs = std::collections::HashMap::new();
    for ((dtype, tolerance), (_, decode)) in [(DType::F32, 1e-4), (DType::F16, 4e-3)]
        .into_iter()
        .flat_map(|t| kernels(1).into_iter().map(move |k| (t, k)))
    {
        decode.set();
        // Groups of three heads (one pass of the 512-bit kernel), four (a pass of three and one
        // of one), two, and heads of their own with widths that are not multiples of 16.
        for (heads, kv_heads, d) in [(9, 3, 64), (8, 2, 32), (6, 3, 48), (4, 4, 20), (6, 2, 40)] {
            let lens = [5, 70, 131, 64];
            let tensor = |len: usize, heads: usize, seed: u64, capacity: usize| {
                Tensor::from_vec(
                    values(heads * capacity * d, seed),
                    (1, heads, capacity, d),
                    &device,
                )
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .narrow(2, 0, len)
                .unwrap()
            };
            let qs: Vec<Tensor> = (0..lens.len())
                .map(|i| tensor(1, heads, 10 + i as u64, 1))
                .collect();
            let ks: Vec<Tensor> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| tensor(len, kv_heads, 20 + i as u64, len + 7))
                .collect();
            let vs: Vec<Tensor> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| tensor(len, kv_heads, 30 + i as u64, len + 7))
                .collect();
            let scale = 1.0 / (d as f32).sqrt();
            let params = SdpaParams {
                n_kv_groups: heads / kv_heads,
                softcap: None,
                softmax_scale: scale,
                sliding_window: None,
                sinks: None,
            };
            // The batch and each sequence alone, with the step cut both ways (a task per
            // sequence and group, a task per chunk) whatever the number of threads.
            let runs: Vec<(DecodeTasks, Tensor, Vec<Tensor>)> = TASKS
                .iter()
                .map(|&tasks| {
                    set_decode_tasks(tasks);
                    let together = Sdpa.run_ragged_decode(&qs, &ks, &vs, &params).unwrap();
                    assert_eq!(together.dims(), &[lens.len(), heads, 1, d]);
                    let alone = (0..lens.len())
                        .map(|i| {
                            Sdpa.run_attention(&qs[i], &ks[i], &vs[i], None, None, &params)
                                .unwrap()
                        })
                        .collect();
                    (tasks, together, alone)
                })
                .collect();
            set_decode_tasks(DecodeTasks::Auto);
            for (i, &len) in lens.iter().enumerate() {
                let case = Case {
                    batch: 1,
                    heads,
                    kv_heads,
                    q_len: 1,
                    kv_len: len,
                    head_dim: d,
                    softcap: None,
                    mask: None,
                };
                let expected = reference(&qs[i], &ks[i], &vs[i], &case, scale);
                let (first_tasks, first) = (runs[0].0, flat_f32(&runs[0].2[i]));
                outputs.insert((format!("{dtype:?}"), decode, heads, d, i), first.clone());
                for (tasks, together, alone) in &runs {
                    let batched = together.narrow(0, i, 1).unwrap();
                    for (how, got) in [("batched", &batched), ("alone", &alone[i])] {
                        assert!(
                            common::same_bits(&flat_f32(got), &first),
                            "{dtype:?}, {decode:?} kernel, {heads} heads of {d}: sequence {i} ({len} positions) {how} in {tasks:?} tasks differs from it alone in {first_tasks:?} tasks"
                        );
                        let diff = max_abs_difference(got, &expected);
                        assert!(
                            diff <= tolerance,
                            "{dtype:?}, {decode:?} kernel, {heads} heads of {d}: sequence {i} {how} in {tasks:?} tasks is {diff} from the reference"
                        );
                    }
                }
            }
        }
    }
    default_kernels();
    // The 256-bit kernel reads `f16` rows where they lie and gives the widening kernel's bits.
    // It takes `f16` caches whose head widths are multiples of eight; the other cases run the
    // widening kernel under either switch, so comparing them could not fail.
    let mut compared = 0;
    for ((dtype, decode, heads, d, i), got) in &outputs {
        if *decode != Decode::Direct || dtype != "F16" || !d.is_multiple_of(8) {
            continue;
        }
        let widening = &outputs[&(dtype.clone(), Decode::Widening, *heads, *d, *i)];
        assert!(
            common::same_bits(got, widening),
            "{dtype}, {heads} heads of {d}: sequence {i} differs between the 256-bit and the widening kernels"
        );
        compared += 1;
    }
    // Where the build has the 256-bit kernel: every sequence of the four shapes it takes.
    if decode_direct() {
        assert_eq!(compared, 4 * 4);
    }
}

/// `mul_and_act(gate, up, SiLU)` on views of one matrix, as the MLP's stacked projections give
/// them (rows not contiguous with each other), against `silu(gate) · up` in f64, over inputs
/// from -100 to 100 (where `e^-x` overflows f32), for one row (a decoding step) and many (a
/// prompt, taken in parallel), with widths that end in a partial group of eight.
#[test]
fn the_mlp_activation_on_strided_views() {
    for (rows, width) in [(1, 1536), (3, 13), (40, 1000)] {
        let n = rows * 2 * width;
        let data: Vec<f32> = (0..n)
            .map(|i| -100.0 + 200.0 * ((i * 7919) % n) as f32 / n as f32)
            .collect();
        let both = Tensor::from_vec(data.clone(), (1, rows, 2 * width), &Device::Cpu).unwrap();
        let gate = both.narrow(D::Minus1, 0, width).unwrap();
        let up = both.narrow(D::Minus1, width, width).unwrap();
        let got = flat_f32(&mul_and_act(&gate, &up, Activation::Silu).unwrap());
        assert_eq!(got.len(), rows * width);
        for r in 0..rows {
            for c in 0..width {
                let (x, y) = (
                    f64::from(data[r * 2 * width + c]),
                    f64::from(data[r * 2 * width + width + c]),
                );
                let want = x / (1.0 + (-x).exp()) * y;
                let got = f64::from(got[r * width + c]);
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "silu({x}) * {y}: got {got}, want {want} (rows {rows}, width {width})"
                );
            }
        }
    }
}

/// `rope_i_lanes` (mistral.rs patch item 16) against candle-nn's `rope_i`, bit for bit, in f32
/// and f16: one position per sequence with per-sequence tables (a ragged decoding step), a
/// prompt with one table, per-sequence tables for prompts, and a head width whose pairs end in
/// a partial group of four (the scalar tail). Inputs and angles span signs and magnitudes so
/// that the f16 roundings of each product and sum are exercised.
#[test]
fn the_cpu_rope_is_candle_nns_to_the_bit() {
    let values = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i * 7919 + salt * 104_729) % 2001) as f32 / 1000.0 - 1.0;
                x * (1.0 + (i % 13) as f32)
            })
            .collect()
    };
    let angles = |n: usize, salt: usize| -> (Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..n).map(|i| (i * 31 + salt) as f32 * 0.173).collect();
        (
            a.iter().map(|a| a.cos()).collect(),
            a.iter().map(|a| a.sin()).collect(),
        )
    };
    // (batch, heads, positions, head width, tables per batch entry)
    let cases = [
        (8, 9, 1, 64, true),
        (1, 9, 37, 64, false),
        (3, 3, 21, 64, true),
        (2, 2, 5, 22, false),
        (300, 9, 1, 64, true),
    ];
    for (salt, &(b, h, t, d, per_batch)) in cases.iter().enumerate() {
        let xs = Tensor::from_vec(values(b * h * t * d, salt), (b, h, t, d), &Device::Cpu).unwrap();
        let rows = if per_batch { b * t } else { t };
        let (cos, sin) = angles(rows * d / 2, salt);
        let shape: Vec<usize> = if per_batch {
            vec![b, t, d / 2]
        } else {
            vec![t, d / 2]
        };
        let cos = Tensor::from_vec(cos, shape.as_slice(), &Device::Cpu).unwrap();
        let sin = Tensor::from_vec(sin, shape.as_slice(), &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F16] {
            let (xs, cos, sin) = (
                xs.to_dtype(dtype).unwrap(),
                cos.to_dtype(dtype).unwrap(),
                sin.to_dtype(dtype).unwrap(),
            );
            let want = candle_nn::rotary_emb::rope_i(&xs, &cos, &sin).unwrap();
            let got = rope_i_lanes(&xs, &cos, &sin).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(got.dtype(), dtype);
            let (got, want) = (flat_f32(&got), flat_f32(&want));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits(),
                    "{dtype:?} {b}x{h}x{t}x{d} (tables per entry: {per_batch}): element {i} is {g}, candle-nn gives {w}"
                );
            }
        }
    }
    // What it does not take, it refuses rather than computing something else.
    let xs = Tensor::zeros((1, 2, 3, 8), DType::F32, &Device::Cpu).unwrap();
    let short = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(rope_i_lanes(&xs, &short, &short).is_err());
    let bf16 = Tensor::zeros((3, 4), DType::BF16, &Device::Cpu).unwrap();
    assert!(rope_i_lanes(&xs.to_dtype(DType::BF16).unwrap(), &bf16, &bf16).is_err());
}

/// `RotaryEmbedding::forward` on a batch whose sequences sit at different positions (a ragged
/// decoding step, or prompts of one length) ropes each sequence as it ropes that sequence
/// alone, to the bit: called again with the same positions (every layer of a step does, and
/// the stacked tables are kept from the last call), with other positions, and with other
/// tables at the same positions (another model's), each against the sequences alone.
#[test]
fn a_batch_is_roped_at_each_sequences_own_positions() {
    let device = Device::Cpu;
    let (heads, kv_heads, d) = (9, 3, 64);
    let ropes = [10_000f32, 500_000.0]
        .map(|base| RotaryEmbedding::new(base, d, 512, &device, false, DType::F32).unwrap());
    for (t, calls) in [
        (1, [[5, 17, 40, 0], [5, 17, 40, 0], [6, 18, 41, 1]]),
        (3, [[100, 7, 7, 300], [100, 7, 7, 300], [100, 7, 8, 300]]),
    ] {
        let q = Tensor::from_vec(values(4 * heads * t * d, 1), (4, heads, t, d), &device).unwrap();
        let k = Tensor::from_vec(
            values(4 * kv_heads * t * d, 2),
            (4, kv_heads, t, d),
            &device,
        )
        .unwrap();
        for offsets in &calls {
            for (r, rope) in [0, 0, 1, 0].into_iter().map(|r| (r, &ropes[r])) {
                let (q_rot, k_rot) = rope.forward(&q, &k, offsets).unwrap();
                for (i, &offset) in offsets.iter().enumerate() {
                    let (q_one, k_one) = rope
                        .forward(
                            &q.narrow(0, i, 1).unwrap(),
                            &k.narrow(0, i, 1).unwrap(),
                            &[offset],
                        )
                        .unwrap();
                    for (what, batched, alone) in [("q", &q_rot, q_one), ("k", &k_rot, k_one)] {
                        assert!(
                            common::same_bits(
                                &flat_f32(&batched.narrow(0, i, 1).unwrap()),
                                &flat_f32(&alone)
                            ),
                            "table {r}, {t} positions from {offsets:?}: {what} of sequence {i} differs from it alone"
                        );
                    }
                }
            }
        }
    }
}
