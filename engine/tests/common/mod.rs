//! Helpers shared by the engine's integration tests.

/// Deterministic values in [-1, 1) without a random-number dependency.
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The reference for a quantized product: `input` (rows x k) times the dequantized weights
/// (`n` x `k`) in f32, row by row, and the largest magnitude among its values (the scale of
/// the tolerance).
#[allow(dead_code)] // not every test binary uses it
pub fn dequantized_product(
    input: &candle_core::Tensor,
    dequantized: &candle_core::Tensor,
) -> (Vec<Vec<f32>>, f32) {
    let expected: Vec<Vec<f32>> = input
        .matmul(&dequantized.t().unwrap())
        .unwrap()
        .to_vec2()
        .unwrap();
    let scale = expected.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    (expected, scale)
}

/// Whether two rows of results are the same to the bit.
#[allow(dead_code)] // not every test binary uses it
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// What the Q4_1 panel kernels (candle patch items 8 and 9) compute for one output, from the
/// weight row's Q4_1 blocks and the input row's Q8_1 blocks: per block the exact integer sum
/// of the 32 products, then `acc = fma(sum, d_w * d_y, acc)` and `acc = fma(m_w, s_y, acc)`.
#[allow(dead_code)] // not every test binary uses it
pub fn panel_q4_1_reference(weight_row: &[u8], input_row: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (w, y) in weight_row.chunks_exact(20).zip(input_row.chunks_exact(36)) {
        let sum: i32 = (0..32)
            .map(|i| {
                let q = if i < 16 {
                    w[4 + i] & 0xF
                } else {
                    w[4 + i - 16] >> 4
                };
                i32::from(q) * i32::from(y[4 + i] as i8)
            })
            .sum();
        let (d_w, m_w) = (f16_at(w, 0), f16_at(w, 2));
        let (d_y, s_y) = (f16_at(y, 0), f16_at(y, 2));
        acc = (sum as f32).mul_add(d_w * d_y, acc);
        acc = m_w.mul_add(s_y, acc);
    }
    acc
}

/// What the Q8_0 panel kernel (candle patch item 10) computes for one output, from the weight
/// row's and the input row's Q8_0 blocks: per block the exact integer sum of the 32 products,
/// then `acc = fma(sum, d_w * d_y, acc)`.
#[allow(dead_code)] // not every test binary uses it
pub fn panel_q8_0_reference(weight_row: &[u8], input_row: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (w, y) in weight_row.chunks_exact(34).zip(input_row.chunks_exact(34)) {
        let sum: i32 = (0..32)
            .map(|i| i32::from(w[2 + i] as i8) * i32::from(y[2 + i] as i8))
            .sum();
        acc = (sum as f32).mul_add(f16_at(w, 0) * f16_at(y, 0), acc);
    }
    acc
}

/// Checks every output of Q4_1 and Q8_0 products of several shapes (one to nine rows, prompts
/// of 6 to 33 rows; rows of 576 and 1536 values; 200 weight rows, and 67, whose last panel of
/// eight is short) bit for bit against `panel_q4_1_reference` / `panel_q8_0_reference` and
/// within tolerance of the dequantized weights; `label` names the setting in failures. Weights
/// whose rows are a multiple of eight are also interleaved (candle patch items 11 and 14,
/// `interleave_panels`): their products must be the same bits, their dequantized weights the
/// same. Q4_1 products of `AMX_MIN_ROWS` rows or more (21 and 66 here: tiles of 16 rows, then a
/// short one) run on AMX where `amx()` says so (item 12; 200 weight rows end with a tile of
/// eight, not sixteen), and only then: counted by `amx_products`. The other interleaved
/// products, Q4_1 and Q8_0, run on the 512-bit kernels where `avx512()` says so (items 13 and
/// 14: twelve pairs of panels, then a single one), and only then: counted by `avx512_products`.
#[allow(dead_code)] // not every test binary uses it
pub fn check_panel_arithmetic(label: &str) {
    use candle_core::quantized::k_quants::{
        amx, amx_products, avx512, avx512_products, interleave_panels, interleaved_q4_1_count,
        interleaved_q8_0_count, AMX_MIN_ROWS,
    };
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    type Reference = fn(&[u8], &[u8]) -> f32;
    let device = Device::Cpu;
    // Weight type, input type, their block sizes in bytes, and the reference.
    let types: [(GgmlDType, GgmlDType, usize, usize, Reference); 2] = [
        (
            GgmlDType::Q4_1,
            GgmlDType::Q8_1,
            20,
            36,
            panel_q4_1_reference,
        ),
        (
            GgmlDType::Q8_0,
            GgmlDType::Q8_0,
            34,
            34,
            panel_q8_0_reference,
        ),
    ];
    // 67 weight rows: the last panel of eight is short (three rows).
    for ((dtype, input_type, weight_block, input_block, reference), (k, n)) in types
        .into_iter()
        .flat_map(|t| [(t, (576, 200)), (t, (1536, 67))])
    {
        let weights = Tensor::from_vec(values(n * k, 5), (n, k), &device).unwrap();
        let quantized = QTensor::quantize(&weights, dtype).unwrap();
        let weight_bytes = quantized.data().unwrap().to_vec();
        let dequantized = quantized.dequantize(&device).unwrap();
        let matmul = QMatMul::from_qtensor(quantized).unwrap();
        let interleaved_count = || match dtype {
            GgmlDType::Q4_1 => interleaved_q4_1_count(),
            _ => interleaved_q8_0_count(),
        };
        let before = interleaved_count();
        let interleaved = interleave_panels(QTensor::quantize(&weights, dtype).unwrap()).unwrap();
        let interleaves = n % 8 == 0;
        assert_eq!(
            interleaved_count() - before,
            usize::from(interleaves),
            "{label}{dtype:?} {k} x {n}: interleaved or not"
        );
        if interleaves {
            assert_ne!(interleaved.data().unwrap().to_vec(), weight_bytes);
            let again = interleaved.dequantize(&device).unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) = (
                again.flatten_all().unwrap().to_vec1().unwrap(),
                dequantized.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(
                same_bits(&a, &b),
                "{label}{k} x {n}: interleaved weights dequantize differently"
            );
        }
        let interleaved = QMatMul::from_qtensor(interleaved).unwrap();
        let shapes: Vec<Vec<usize>> = (1..=9)
            .map(|rows| vec![rows, k])
            .chain([vec![1, 6, k], vec![3, 7, k], vec![2, 33, k], vec![4, 2, k]])
            .collect();
        for (i, shape) in shapes.iter().enumerate() {
            let count: usize = shape.iter().product();
            let input =
                Tensor::from_vec(values(count, 40 + i as u64), shape.as_slice(), &device).unwrap();
            let flat = input.reshape((count / k, k)).unwrap();
            let out = matmul.forward(&input).unwrap();
            let got: Vec<Vec<f32>> = out.reshape((count / k, n)).unwrap().to_vec2().unwrap();
            let (amx_before, avx512_before) = (amx_products(), avx512_products());
            let other = interleaved.forward(&input).unwrap();
            let on_amx =
                interleaves && dtype == GgmlDType::Q4_1 && amx() && count / k >= AMX_MIN_ROWS;
            assert_eq!(
                amx_products() - amx_before,
                usize::from(on_amx),
                "{label}{dtype:?} {k} x {n}, input {shape:?}: on AMX or not"
            );
            let on_avx512 = interleaves && !on_amx && avx512();
            assert_eq!(
                avx512_products() - avx512_before,
                usize::from(on_avx512),
                "{label}{dtype:?} {k} x {n}, input {shape:?}: on the 512-bit kernels or not"
            );
            let other: Vec<Vec<f32>> = other.reshape((count / k, n)).unwrap().to_vec2().unwrap();
            for (r, (a, b)) in got.iter().zip(&other).enumerate() {
                assert!(
                    same_bits(a, b),
                    "{label}{dtype:?} {k} x {n}, input {shape:?}: row {r} differs with interleaved weights"
                );
            }
            let input_bytes = QTensor::quantize(&flat, input_type)
                .unwrap()
                .data()
                .unwrap()
                .to_vec();
            let (expected, scale) = dequantized_product(&flat, &dequantized);
            let (row_bytes, weight_row_bytes) = ((k / 32) * input_block, (k / 32) * weight_block);
            for (r, got) in got.iter().enumerate() {
                let input_row = &input_bytes[r * row_bytes..(r + 1) * row_bytes];
                for (c, g) in got.iter().enumerate() {
                    let weight_row =
                        &weight_bytes[c * weight_row_bytes..(c + 1) * weight_row_bytes];
                    let exact = reference(weight_row, input_row);
                    assert_eq!(
                        g.to_bits(),
                        exact.to_bits(),
                        "{label}{dtype:?} {k} x {n}, input {shape:?}: [{r}][{c}] = {g}, expected {exact}"
                    );
                    let e = expected[r][c];
                    assert!(
                        (g - e).abs() <= 0.02 * scale,
                        "{label}{dtype:?} {k} x {n}: [{r}][{c}] = {g}, dequantized product {e} (scale {scale})"
                    );
                }
            }
        }
    }
}

/// Whether the first CPU's flags in `/proc/cpuinfo` include all of `wanted`; `None` without
/// that file.
#[allow(dead_code)] // not every test binary uses it
pub fn cpu_has(wanted: &[&str]) -> Option<bool> {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("no /proc/cpuinfo: nothing to compare with");
        return None;
    };
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    Some(wanted.iter().all(|flag| flags.contains(flag)))
}
