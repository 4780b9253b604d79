//! The quantized CPU matmul that GGUF models run on, including the paths aiaas patches into
//! candle-core (vendor/candle-core): the AVX2 Q4_1 dot product and the batched loop that reads
//! each weight row once for all input rows. Each case is checked against the same weights
//! dequantized and multiplied in f32, for one input row (decoding one sequence) and for several
//! (a batch, or a prompt), and the batched results against the one-row ones.

#![allow(clippy::unwrap_used)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

mod common;

use common::{check_panel_arithmetic, cpu_has, dequantized_product, same_bits, values};

fn check(dtype: GgmlDType, rows: usize, k: usize, n: usize) {
    let device = Device::Cpu;
    let weights = Tensor::from_vec(values(n * k, 7), (n, k), &device).unwrap();
    let quantized = QTensor::quantize(&weights, dtype).unwrap();
    // The reference: the weights as the quantized tensor holds them, in f32.
    let dequantized = quantized.dequantize(&device).unwrap();
    let input = Tensor::from_vec(values(rows * k, 11 + rows as u64), (rows, k), &device).unwrap();
    let (expected, scale) = dequantized_product(&input, &dequantized);
    let scale = scale.max(1e-6);
    let got: Vec<Vec<f32>> = QMatMul::from_qtensor(quantized)
        .unwrap()
        .forward(&input)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(got.len(), rows);
    for (r, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.len(), n);
        for (c, (g, e)) in g.iter().zip(e).enumerate() {
            // The input is quantized to 8 bits per block on the way in: ~1% of the largest
            // output is the expected error; a wrong layout or a missed term is far larger.
            assert!(
                (g - e).abs() <= 0.02 * scale,
                "{dtype:?} rows={rows}: [{r}][{c}] = {g}, expected {e} (scale {scale})"
            );
        }
    }
}

#[test]
fn q4_1_matches_its_dequantized_weights_for_one_and_many_rows() {
    for rows in [1, 2, 8, 33] {
        check(GgmlDType::Q4_1, rows, 576, 192);
    }
    // Wider rows and an odd number of weight rows: the input is walked in several groups of
    // rows (as many as fit the L1 cache), and the last block of weight rows is a short one.
    for rows in [1, 3, 40] {
        check(GgmlDType::Q4_1, rows, 1536, 67);
    }
}

#[test]
fn other_block_types_keep_matching_through_the_batched_loop() {
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        for rows in [1, 5, 8] {
            check(dtype, rows, 512, 96);
        }
    }
}

/// Each row of a batched product is exactly (bit for bit) the product of that row alone: the
/// Q4_1 panel kernels compute each output by the same operations whatever the rows; the
/// batched loop, and the Q4_0 and Q8_0 kernels that take four input rows per pass over a
/// weight row, add in the same order as the one-row path. So a sequence decodes the same
/// whether it is batched with others or not (up to what attention does).
#[test]
fn batched_rows_equal_single_rows_exactly() {
    let device = Device::Cpu;
    // The second shape has rows too wide for more than a few of them to be walked at once,
    // and an odd number of weight rows.
    for (dtype, k, n, rows) in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0]
        .into_iter()
        .flat_map(|dtype| {
            [
                (576, 64, (2..=9).collect::<Vec<_>>()),
                (1536, 67, vec![13, 30]),
            ]
            .into_iter()
            .map(move |(k, n, rows)| (dtype, k, n, rows))
        })
    {
        let weights = Tensor::from_vec(values(n * k, 3), (n, k), &device).unwrap();
        let matmul = QMatMul::from_qtensor(QTensor::quantize(&weights, dtype).unwrap()).unwrap();
        for rows in rows {
            let input =
                Tensor::from_vec(values(rows * k, 100 + rows as u64), (rows, k), &device).unwrap();
            let batched: Vec<Vec<f32>> = matmul.forward(&input).unwrap().to_vec2().unwrap();
            for (r, got) in batched.iter().enumerate() {
                let alone: Vec<Vec<f32>> = matmul
                    .forward(&input.narrow(0, r, 1).unwrap())
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                assert!(
                    same_bits(got, &alone[0]),
                    "{dtype:?}, {k} x {n}, {rows} rows: row {r} differs from its product alone"
                );
            }
        }
    }
}

/// Upstream candle's scalar quantizer of input blocks (`BlockQ8_0::from_float`,
/// `BlockQ8_1::from_float`, as `quantize_row_q8_0` / `_q8_1` in ggml): the bytes each block
/// should hold. Q8_1 blocks also hold `s`, the scale times the sum of the quantized values.
fn reference_q8_blocks(xs: &[f32], with_sum: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    for block in xs.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let qs: Vec<i8> = block.iter().map(|&x| (x * id).round() as i8).collect();
        let d = half::f16::from_f32(d);
        bytes.extend(d.to_le_bytes());
        if with_sum {
            let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
            bytes.extend((half::f16::from_f32(sum as f32) * d).to_le_bytes());
        }
        bytes.extend(qs.iter().map(|&q| q.to_le_bytes()[0]));
    }
    bytes
}

/// Every input row of a quantized matmul is first quantized to 8-bit blocks (Q8_1 for Q4_1
/// weights, Q8_0 for Q8_0 and Q4_0); aiaas's AVX2 quantizer (candle patch item 6) must write
/// the same bytes as upstream's scalar loop, including halves rounded away from zero, blocks
/// of zeros, of subnormals (whose inverse scale overflows), and with infinities or NaN.
#[test]
fn input_blocks_are_quantized_as_upstream_does() {
    let mut xs = Vec::new();
    for (seed, scale) in [(1, 1.0f32), (2, 1e-3), (3, 1e3), (4, 37.5)] {
        xs.extend(values(32 * 16, seed).iter().map(|v| v * scale));
    }
    // Scale 1 (max 127): every half-way case rounds away from zero.
    let mut ties = vec![
        127.0f32,
        -126.5,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        -0.49999997,
    ];
    ties.resize(32, 63.5);
    xs.extend(ties);
    xs.extend([0.0f32; 32]);
    xs.extend((0..32).map(|i| f32::from_bits(i + 1) * if i % 2 == 0 { 1.0 } else { -1.0 }));
    let mut odd = values(32, 9);
    odd[3] = f32::INFINITY;
    odd[7] = f32::NEG_INFINITY;
    xs.extend(odd);
    let mut nan = values(32, 10);
    nan[5] = f32::NAN;
    xs.extend(nan);
    xs.extend(values(32, 11).iter().map(|v| v * 1e30));

    // Rows of eight blocks or more are quantized eight blocks at a time (candle patch item
    // 17), the rest one by one: with 0 to 8 ordinary blocks in front, every case above meets
    // both ways and every lane of an eight-block group.
    let device = Device::Cpu;
    for shift in 0..=8 {
        let mut row = values(32 * shift, 12);
        row.extend(&xs);
        let input = Tensor::from_vec(row.clone(), (1, row.len()), &device).unwrap();
        for (dtype, with_sum) in [(GgmlDType::Q8_0, false), (GgmlDType::Q8_1, true)] {
            let got = QTensor::quantize(&input, dtype)
                .unwrap()
                .data()
                .unwrap()
                .to_vec();
            let expected = reference_q8_blocks(&row, with_sum);
            let block = if with_sum { 36 } else { 34 };
            assert_eq!(got.len(), expected.len(), "{dtype:?}");
            for (i, (g, e)) in got.chunks(block).zip(expected.chunks(block)).enumerate() {
                assert_eq!(
                    g,
                    e,
                    "{dtype:?}, {shift} in front, block {i} of {:?}",
                    &row[i * 32..][..32]
                );
            }
        }
    }
}

/// Every Q4_1 and Q8_0 product goes through the panel kernels: one row (decoding one
/// sequence), a few (a decoding batch: weight rows read where they lie, one to four input rows
/// per pass) and many (a prompt, or a large batch: Q4_1 weight rows repacked first), as a
/// matrix or as prompts of shape `(batch, rows, k)`. Each output is exactly the arithmetic of
/// `panel_q4_1_reference` / `panel_q8_0_reference`, so it does not depend on the rows beside
/// it, on how many there are or on which kernel ran, and it matches the dequantized weights.
/// (With AVX-512 VNNI where the CPU has it; `panel_kernel_switches.rs` runs the same check
/// without.)
#[test]
fn every_q4_1_and_q8_0_product_is_the_panel_arithmetic() {
    check_panel_arithmetic("");
}

/// AMX (candle patch item 12) is used exactly where Linux says the CPU has it: the CPU flags
/// `amx_tile`, `amx_int8` and AVX-512 F, BW and VL in `/proc/cpuinfo` (which lists AMX only
/// when the kernel supports its state). So a host with AMX cannot quietly run (and test) only
/// the panel kernels.
#[test]
fn amx_is_used_where_the_cpu_has_it() {
    use candle_core::quantized::k_quants::amx_supported;
    let Some(has) = cpu_has(&["amx_tile", "amx_int8", "avx512f", "avx512bw", "avx512vl"]) else {
        return;
    };
    assert_eq!(amx_supported(), has, "AMX in /proc/cpuinfo: {has}");
}

/// The 512-bit kernels (candle patch item 13) are used exactly where `/proc/cpuinfo` lists
/// AVX-512 F, BW, VL and VNNI (with VNNI allowed, as by default), so that a host with them
/// cannot quietly run (and test) only the 256-bit kernels; `check_panel_arithmetic` counts that
/// the products it expects there ran on them.
#[test]
fn avx512_is_used_where_the_cpu_has_it() {
    use candle_core::quantized::k_quants::{avx512, avx512_supported};
    let Some(has) = cpu_has(&["avx512f", "avx512bw", "avx512vl", "avx512_vnni"]) else {
        return;
    };
    assert_eq!(
        avx512_supported(),
        has,
        "AVX-512 VNNI in /proc/cpuinfo: {has}"
    );
    assert_eq!(avx512(), has);
}
