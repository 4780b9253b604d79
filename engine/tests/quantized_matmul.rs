//! The quantized CPU matmul that GGUF models run on, including the paths aiaas patches into
//! candle-core (vendor/candle-core): the AVX2 Q4_1 dot product and the batched loop that reads
//! each weight row once for all input rows. Each case is checked against the same weights
//! dequantized and multiplied in f32, for one input row (decoding one sequence) and for several
//! (a batch, or a prompt), and the batched results against the one-row ones.

#![allow(clippy::unwrap_used)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

mod common;

use common::values;

fn check(dtype: GgmlDType, rows: usize, k: usize, n: usize) {
    let device = Device::Cpu;
    let weights = Tensor::from_vec(values(n * k, 7), (n, k), &device).unwrap();
    let quantized = QTensor::quantize(&weights, dtype).unwrap();
    // The reference: the weights as the quantized tensor holds them, in f32.
    let dequantized = quantized.dequantize(&device).unwrap();
    let input = Tensor::from_vec(values(rows * k, 11 + rows as u64), (rows, k), &device).unwrap();
    let expected: Vec<Vec<f32>> = input
        .matmul(&dequantized.t().unwrap())
        .unwrap()
        .to_vec2()
        .unwrap();
    let got: Vec<Vec<f32>> = QMatMul::from_qtensor(quantized)
        .unwrap()
        .forward(&input)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(got.len(), rows);
    let scale = expected
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-6);
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
/// batched loop, and the Q4_1, Q4_0 and Q8_0 kernels that take four input rows per pass over a
/// weight row, add in the same order as the one-row path. So a sequence decodes the same whether it is
/// batched with others or not (up to what attention does).
#[test]
fn batched_rows_equal_single_rows_exactly() {
    let device = Device::Cpu;
    let (k, n) = (576, 64);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0] {
        let weights = Tensor::from_vec(values(n * k, 3), (n, k), &device).unwrap();
        let matmul = QMatMul::from_qtensor(QTensor::quantize(&weights, dtype).unwrap()).unwrap();
        for rows in 2..=9 {
            let input =
                Tensor::from_vec(values(rows * k, 100 + rows as u64), (rows, k), &device).unwrap();
            let batched: Vec<Vec<f32>> = matmul.forward(&input).unwrap().to_vec2().unwrap();
            for (r, got) in batched.iter().enumerate() {
                let alone: Vec<Vec<f32>> = matmul
                    .forward(&input.narrow(0, r, 1).unwrap())
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                let same = got
                    .iter()
                    .zip(&alone[0])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{dtype:?}, {rows} rows: row {r} differs from its product alone"
                );
            }
        }
    }
}
