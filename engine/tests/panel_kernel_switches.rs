//! The switches of candle patch items 8 to 13, kept for side-by-side measurements:
//! - `AIAAS_VNNI=off` (`k_quants::set_vnni(false)`): the panel kernels without AVX-512 VNNI
//!   compute the same bits as with it (and as `panel_q4_1_reference` / `panel_q8_0_reference`);
//! - `AIAAS_AMX=off` (`k_quants::set_amx(false)`, item 12): interleaved Q4_1 products of several
//!   rows without AMX, on the panel kernels: the same bits again;
//! - `AIAAS_AVX512=off` (`k_quants::set_avx512(false)`, item 13): interleaved Q4_1 products on
//!   the 256-bit panel kernels rather than the 512-bit ones: the same bits again;
//! - `AIAAS_PANEL_KERNELS=off` (`k_quants::set_panel_kernels(false)`): Q4_1 and Q8_0 products
//!   take the row kernels again (`vec_dot`, and the four-row kernels of a batch), which still
//!   match the dequantized weights and give each row of a batch exactly what it gets alone.
//!
//! A test binary of its own with one test, since the switches are process-wide.

#![allow(clippy::unwrap_used)]

use candle_core::quantized::k_quants::{
    amx, amx_supported, avx512, avx512_supported, set_amx, set_avx512, set_panel_kernels, set_vnni,
    vnni,
};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

mod common;

use common::{check_panel_arithmetic, dequantized_product, same_bits, values};

#[test]
fn the_panel_kernel_switches() {
    // Without VNNI (on a CPU without it, this repeats the other test binary's check).
    if !vnni() {
        eprintln!("this CPU has no AVX-512 VNNI: both settings run the same kernels");
    }
    set_vnni(false);
    assert!(!vnni());
    check_panel_arithmetic("without VNNI: ");
    set_vnni(true);

    // Without AMX (on a CPU without it, this repeats the other test binary's check too).
    if !amx_supported() {
        eprintln!("this CPU or OS offers no AMX: both settings run the same kernels");
    }
    set_amx(false);
    assert!(!amx());
    check_panel_arithmetic("without AMX: ");
    set_amx(true);
    assert_eq!(amx(), amx_supported());

    // Without the 512-bit kernels (item 13), and without AMX either, so that every interleaved
    // product takes the 256-bit panel kernels.
    if !avx512_supported() {
        eprintln!("this CPU has no AVX-512 VNNI: both settings run the same kernels");
    }
    set_avx512(false);
    set_amx(false);
    assert!(!avx512());
    check_panel_arithmetic("without AVX-512 or AMX: ");
    set_amx(true);
    set_avx512(true);
    assert_eq!(avx512(), avx512_supported() && vnni());

    let device = Device::Cpu;
    for (dtype, k, n, rows) in [GgmlDType::Q4_1, GgmlDType::Q8_0]
        .into_iter()
        .flat_map(|t| [(t, 576, 64, 9), (t, 1536, 67, 13)])
    {
        let weights = Tensor::from_vec(values(n * k, 3), (n, k), &device).unwrap();
        let quantized = QTensor::quantize(&weights, dtype).unwrap();
        let dequantized = quantized.dequantize(&device).unwrap();
        let matmul = QMatMul::from_qtensor(quantized).unwrap();
        let input = Tensor::from_vec(values(rows * k, 100), (rows, k), &device).unwrap();
        let product =
            |input: &Tensor| -> Vec<Vec<f32>> { matmul.forward(input).unwrap().to_vec2().unwrap() };
        set_panel_kernels(true);
        let panels = product(&input);
        set_panel_kernels(false);
        let batched = product(&input);
        let (expected, scale) = dequantized_product(&input, &dequantized);
        for (r, got) in batched.iter().enumerate() {
            let alone = product(&input.narrow(0, r, 1).unwrap());
            assert!(
                same_bits(got, &alone[0]),
                "{dtype:?} {k} x {n}: row {r} of {rows} differs from its product alone"
            );
            for (c, (g, e)) in got.iter().zip(&expected[r]).enumerate() {
                assert!(
                    (g - e).abs() <= 0.02 * scale,
                    "{dtype:?} {k} x {n}: [{r}][{c}] = {g}, dequantized product {e} (scale {scale})"
                );
            }
        }
        // The row kernels add in another order than the panel kernels: the switch took effect.
        assert_ne!(
            batched, panels,
            "{dtype:?} {k} x {n}: switching the panel kernels off changed nothing"
        );
        set_panel_kernels(true);
        assert_eq!(
            product(&input),
            panels,
            "{dtype:?} {k} x {n}: switched back on"
        );
    }
}
