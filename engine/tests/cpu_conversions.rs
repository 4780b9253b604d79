//! candle's CPU `to_dtype` between `f32` and `f16` (which aiaas patches to convert contiguous
//! runs eight values per instruction, vendor/candle-core item 15) against `half`'s conversion of
//! one value at a time, to the bit: contiguous tensors, a view at an offset, and transposed views
//! (runs of one value, and runs of several), with values that round to even, overflow to
//! infinity, fall to subnormals or zero, and are infinite or NaN.

#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor, WithDType};
use half::f16;

mod common;

/// Values that exercise every branch of the rounding, then ordinary ones.
fn f32_values(len: usize) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        1.0 + f32::EPSILON,
        1.0 + 2f32.powi(-11),       // a tie: rounds to even (1.0)
        1.0 + 3.0 * 2f32.powi(-11), // a tie: rounds to even (up)
        65504.0,                    // the largest f16
        65520.0,                    // rounds to infinity
        -1e6,                       // overflows
        6.0e-8,                     // f16 subnormal
        -2.0e-8,                    // rounds to -0
        f32::MIN_POSITIVE,          // f32 normal, f16 zero
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        3.0e-5,
        -7.5,
    ];
    let random = common::values(len, 7);
    v.extend(
        random
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1 << (i % 12)) as f32),
    );
    v.truncate(len);
    v
}

/// A converted value's bits, and whether it is a NaN (whose payload is not compared).
trait Converted: WithDType + std::fmt::Debug {
    fn bits(self) -> u32;
    fn nan(self) -> bool;
}

impl Converted for f16 {
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
}

impl Converted for f32 {
    fn bits(self) -> u32 {
        self.to_bits()
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// Every view of `t` (`views`) converted to `D` by `to_dtype`, against `one` applied to each
/// of its values, to the bit.
fn check_views<S: WithDType + std::fmt::Debug, D: Converted>(t: &Tensor, one: impl Fn(S) -> D) {
    for (what, view) in views(t) {
        let got = view.to_dtype(D::DTYPE).unwrap().flatten_all().unwrap();
        let got = got.to_vec1::<D>().unwrap();
        let values = view.flatten_all().unwrap().to_vec1::<S>().unwrap();
        assert_eq!(got.len(), values.len(), "{what}: lengths");
        for (i, (g, v)) in got.into_iter().zip(values).enumerate() {
            let w = one(v);
            assert!(
                g.bits() == w.bits() || (g.nan() && w.nan()),
                "{what}: value {i} ({v:?}): {g:?} ({:#x}) instead of {w:?} ({:#x})",
                g.bits(),
                w.bits()
            );
        }
    }
}

/// Every layout of `t` (shape `[rows, cols]`) that the conversion can meet.
fn views(t: &Tensor) -> Vec<(&'static str, Tensor)> {
    vec![
        ("contiguous", t.clone()),
        ("at an offset", t.narrow(0, 1, 3).unwrap()),
        ("transposed", t.t().unwrap()),
        // Runs of `cols - 2` values, each at its own offset.
        (
            "column slice",
            t.narrow(1, 1, t.dim(1).unwrap() - 2).unwrap(),
        ),
    ]
}

#[test]
fn f32_to_f16_matches_one_value_at_a_time() {
    // 5 x 37: runs that are not multiples of eight, so every tail is converted too.
    let values = f32_values(5 * 37);
    let t = Tensor::from_vec(values, (5, 37), &Device::Cpu).unwrap();
    check_views(&t, f16::from_f32);
}

#[test]
fn f16_to_f32_matches_one_value_at_a_time() {
    // Every f16 bit pattern, so subnormals, infinities and NaNs are all widened.
    let halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let t = Tensor::from_vec(halves, (256, 256), &Device::Cpu).unwrap();
    check_views(&t, f16::to_f32);
}
