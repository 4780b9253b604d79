use super::utils::{
    get_scale_min_k4, group_for_dequantization, group_for_quantization, make_q3_quants,
    make_qkx1_quants, make_qx_quants, nearest_int,
};
use super::GgmlDType;
use crate::quantized::utils::{make_qkx3_quants, make_qp_quants};
use crate::Result;
use byteorder::{ByteOrder, LittleEndian};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

// Default to QK_K 256 rather than 64.
pub const QK_K: usize = 256;
pub const K_SCALE_SIZE: usize = 12;

pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;

pub trait GgmlType: Sized + Clone + Send + Sync {
    const DTYPE: GgmlDType;
    const BLCK_SIZE: usize;
    const DIRECT_COPY: bool = false;
    type VecDotType: GgmlType;

    // This is only safe for types that include immediate values such as float/int/...
    fn zeros() -> Self {
        unsafe { std::mem::MaybeUninit::zeroed().assume_init() }
    }
    fn to_float(xs: &[Self], ys: &mut [f32]);
    fn from_float(xs: &[f32], ys: &mut [Self]);
    fn from_float_imatrix(
        _xs: &[f32],
        _ys: &mut [Self],
        _imatrix_weights: &[f32],
        _n_per_row: usize,
    ) {
        panic!(
            "`from_float_imatrix` is unimplemented for {:?}",
            Self::DTYPE
        );
    }

    fn direct_copy(_xs: &[f32], _ys: &mut [Self]) {}

    /// Dot product used as a building block for quantized mat-mul.
    /// n is the number of elements to be considered.
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32;

    /// Generic implementation of the dot product without simd optimizations.
    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32;

    /// aiaas patch: what `vec_dot_rows` needs of the input rows `ys` (`blocks` blocks each)
    /// beyond their blocks, computed once per matmul rather than once per weight row (for
    /// Q4_1: the rows' block scales as f32). Nothing by default.
    fn prepare_rows(_blocks: usize, _ys: &[Self::VecDotType]) -> Vec<f32> {
        Vec::new()
    }

    /// aiaas patch: the dot products of one weight row `xs` with `out.len()` input rows laid
    /// out one after another in `ys` (`xs.len()` blocks each); `prepared` is what
    /// `prepare_rows` made of `ys`. A type may share the work of unpacking `xs` between the
    /// rows; each result must equal `vec_dot` bit for bit.
    fn vec_dot_rows(
        n: usize,
        xs: &[Self],
        ys: &[Self::VecDotType],
        _prepared: &[f32],
        out: &mut [f32],
    ) {
        let blocks = xs.len();
        for (row, out) in out.iter_mut().enumerate() {
            *out = Self::vec_dot(n, xs, &ys[row * blocks..(row + 1) * blocks]);
        }
    }

    /// aiaas patch: the product of `m` quantized input rows `ys` with the `n` weight rows `xs`
    /// of `k` values into `dst` (`m` x `n`, row-major) through kernels that take the weight
    /// rows eight at a time, so that each of their operations serves eight outputs; `false`,
    /// with nothing written, where the type has none. Their results are not bit-identical to
    /// `vec_dot`'s (the order of their additions differs), but each output is computed by the
    /// same operations whatever `m` is and wherever its rows sit, so it depends only on its own
    /// input row and weight row.
    fn matmul_panels(
        _mkn: (usize, usize, usize),
        _xs: &[Self],
        _ys: &[Self::VecDotType],
        _dst: &mut [f32],
    ) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub(crate) d: f16,
    pub(crate) qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub(crate) d: f16,
    pub(crate) m: f16,
    pub(crate) qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub(crate) d: f16,
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub(crate) d: f16,
    pub(crate) m: f16,
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub(crate) d: f16,
    pub(crate) qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub(crate) d: f16,
    pub(crate) s: f16,
    pub(crate) qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ2K {
    pub(crate) scales: [u8; QK_K / 16],
    pub(crate) qs: [u8; QK_K / 4],
    pub(crate) d: f16,
    pub(crate) dmin: f16,
}
const _: () = assert!(QK_K / 16 + QK_K / 4 + 2 * 2 == std::mem::size_of::<BlockQ2K>());

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ3K {
    pub(crate) hmask: [u8; QK_K / 8],
    pub(crate) qs: [u8; QK_K / 4],
    pub(crate) scales: [u8; 12],
    pub(crate) d: f16,
}
const _: () = assert!(QK_K / 8 + QK_K / 4 + 12 + 2 == std::mem::size_of::<BlockQ3K>());

#[derive(Debug, Clone, PartialEq)]
// https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/k_quants.h#L82
#[repr(C)]
pub struct BlockQ4K {
    pub(crate) d: f16,
    pub(crate) dmin: f16,
    pub(crate) scales: [u8; K_SCALE_SIZE],
    pub(crate) qs: [u8; QK_K / 2],
}
const _: () = assert!(QK_K / 2 + K_SCALE_SIZE + 2 * 2 == std::mem::size_of::<BlockQ4K>());

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ5K {
    pub(crate) d: f16,
    pub(crate) dmin: f16,
    pub(crate) scales: [u8; K_SCALE_SIZE],
    pub(crate) qh: [u8; QK_K / 8],
    pub(crate) qs: [u8; QK_K / 2],
}
const _: () =
    assert!(QK_K / 8 + QK_K / 2 + 2 * 2 + K_SCALE_SIZE == std::mem::size_of::<BlockQ5K>());

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ6K {
    pub(crate) ql: [u8; QK_K / 2],
    pub(crate) qh: [u8; QK_K / 4],
    pub(crate) scales: [i8; QK_K / 16],
    pub(crate) d: f16,
}
const _: () = assert!(3 * QK_K / 4 + QK_K / 16 + 2 == std::mem::size_of::<BlockQ6K>());

#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub(crate) d: f32,
    pub(crate) qs: [i8; QK_K],
    pub(crate) bsums: [i16; QK_K / 16],
}
const _: () = assert!(4 + QK_K + QK_K / 16 * 2 == std::mem::size_of::<BlockQ8K>());

/// aiaas patch: for `prepare_rows`, the f16 scales `fields` of each group of four input rows
/// (`blocks` blocks each) as f32, block by block: the four rows' first field, then the four
/// rows' second, and so on. Rows after the last whole group of four get none. Converting an
/// f16 to f32 is exact, so kernels using these compute what they would from the blocks.
#[cfg(target_feature = "avx2")]
fn quad_scales<Y>(blocks: usize, ys: &[Y], fields: &[fn(&Y) -> f16]) -> Vec<f32> {
    let quads = ys.len() / blocks / 4;
    let mut scales = Vec::with_capacity(quads * blocks * 4 * fields.len());
    for quad in ys[..quads * 4 * blocks].chunks_exact(4 * blocks) {
        for i in 0..blocks {
            for field in fields {
                scales.extend((0..4).map(|r| f16::to_f32(field(&quad[r * blocks + i]))));
            }
        }
    }
    scales
}

/// aiaas patch: for `vec_dot_rows`, the dot products of one weight row with the input rows
/// `ys`, in groups of four through `quad` (given the group's rows and its part of `prepared`,
/// `per_block` scales per block as `quad_scales` laid them out) and the rest one at a time
/// through `one`.
#[cfg(target_feature = "avx2")]
fn rows_by_quads<X, Y>(
    (xs, ys, prepared, per_block): (&[X], &[Y], &[f32], usize),
    out: &mut [f32],
    quad: impl Fn(&[Y], &[f32]) -> [f32; 4],
    one: impl Fn(&[Y]) -> f32,
) {
    let blocks = xs.len();
    let mut quads = out.chunks_exact_mut(4);
    let mut row = 0;
    for (q, out) in (&mut quads).enumerate() {
        let rows = &ys[row * blocks..(row + 4) * blocks];
        let scales = &prepared[q * blocks * per_block..(q + 1) * blocks * per_block];
        out.copy_from_slice(&quad(rows, scales));
        row += 4;
    }
    for out in quads.into_remainder() {
        *out = one(&ys[row * blocks..(row + 1) * blocks]);
        row += 1;
    }
}

impl GgmlType for BlockQ4_0 {
    const DTYPE: GgmlDType = GgmlDType::Q4_0;
    const BLCK_SIZE: usize = QK4_0;
    type VecDotType = BlockQ8_0;

    // https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/ggml.c#L1525
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        let qk = Self::BLCK_SIZE;
        debug_assert!(
            k.is_multiple_of(qk),
            "dequantize_row_q4_0: {k} is not divisible by {qk}"
        );

        let nb = k / qk;
        for i in 0..nb {
            let d = xs[i].d.to_f32();

            for j in 0..(qk / 2) {
                let x0 = (xs[i].qs[j] & 0x0F) as i16 - 8;
                let x1 = (xs[i].qs[j] >> 4) as i16 - 8;

                ys[i * qk + j] = (x0 as f32) * d;
                ys[i * qk + j + qk / 2] = (x1 as f32) * d;
            }
        }
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q4_0
        let qk = Self::BLCK_SIZE;
        let k = xs.len();
        debug_assert!(k.is_multiple_of(qk), "{k} is not divisible by {qk}");
        debug_assert_eq!(
            ys.len(),
            k / qk,
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            qk,
        );
        for (i, ys) in ys.iter_mut().enumerate() {
            let mut amax = 0f32;
            let mut max = 0f32;

            let xs = &xs[i * qk..(i + 1) * qk];
            for &x in xs.iter() {
                if amax < x.abs() {
                    amax = x.abs();
                    max = x;
                }
            }
            let d = max / -8.0;
            let id = if d != 0f32 { 1. / d } else { 0. };
            ys.d = f16::from_f32(d);

            for (j, q) in ys.qs.iter_mut().enumerate() {
                let x0 = xs[j] * id;
                let x1 = xs[qk / 2 + j] * id;
                let xi0 = u8::min(15, (x0 + 8.5) as u8);
                let xi1 = u8::min(15, (x1 + 8.5) as u8);
                *q = xi0 | (xi1 << 4)
            }
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/b5ffb2849d23afe73647f68eec7b68187af09be6/ggml.c#L2361C10-L2361C122
    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q4_0_q8_0(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q4_0_q8_0(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q4_0_q8_0(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    // aiaas patch: four input rows per pass over a weight row (AVX2 builds), with the rows'
    // scales converted once per matmul.
    #[cfg(target_feature = "avx2")]
    fn prepare_rows(blocks: usize, ys: &[Self::VecDotType]) -> Vec<f32> {
        quad_scales(blocks, ys, &[|y| y.d])
    }

    #[cfg(target_feature = "avx2")]
    fn vec_dot_rows(
        n: usize,
        xs: &[Self],
        ys: &[Self::VecDotType],
        prepared: &[f32],
        out: &mut [f32],
    ) {
        rows_by_quads(
            (xs, ys, prepared, 4),
            out,
            |ys, scales| super::avx::vec_dot_q4_0_q8_0_x4(n, xs, ys, scales),
            |ys| super::avx::vec_dot_q4_0_q8_0(n, xs, ys),
        )
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK8_0),
            "vec_dot_q4_0_q8_0: {n} is not divisible by {QK8_0}"
        );
        // Generic implementation.
        let mut sumf = 0f32;
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let mut sum_i = 0;
            for j in 0..QK8_0 / 2 {
                let v0 = (xs.qs[j] & 0x0F) as i32 - 8;
                let v1 = (xs.qs[j] >> 4) as i32 - 8;
                sum_i += v0 * ys.qs[j] as i32 + v1 * ys.qs[j + QK8_0 / 2] as i32
            }
            sumf += sum_i as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
        }
        sumf
    }
}

impl GgmlType for BlockQ4_1 {
    const DTYPE: GgmlDType = GgmlDType::Q4_1;
    const BLCK_SIZE: usize = QK4_1;
    type VecDotType = BlockQ8_1;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        // aiaas patch: use the AVX2 path when the build enables it.
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q4_1_q8_1(n, xs, ys);

        #[cfg(not(target_feature = "avx2"))]
        Self::vec_dot_unopt(n, xs, ys)
    }

    // aiaas patch: four input rows per pass over a weight row (AVX2 builds), with the rows'
    // scales converted once per matmul: per block the four `d`, then the four `s`.
    #[cfg(target_feature = "avx2")]
    fn prepare_rows(blocks: usize, ys: &[Self::VecDotType]) -> Vec<f32> {
        quad_scales(blocks, ys, &[|y| y.d, |y| y.s])
    }

    #[cfg(target_feature = "avx2")]
    fn vec_dot_rows(
        n: usize,
        xs: &[Self],
        ys: &[Self::VecDotType],
        prepared: &[f32],
        out: &mut [f32],
    ) {
        rows_by_quads(
            (xs, ys, prepared, 8),
            out,
            |ys, scales| super::avx::vec_dot_q4_1_q8_1_x4(n, xs, ys, scales),
            |ys| super::avx::vec_dot_q4_1_q8_1(n, xs, ys),
        )
    }

    #[cfg(target_feature = "avx2")]
    fn matmul_panels(
        mkn: (usize, usize, usize),
        xs: &[Self],
        ys: &[Self::VecDotType],
        dst: &mut [f32],
    ) -> bool {
        matmul_panels_q4_1(mkn, xs, ys, dst, false);
        true
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        // ggml_vec_dot_q4_1_q8_1
        let qk = QK8_1;
        debug_assert!(
            n.is_multiple_of(qk),
            "vec_dot_q4_1_q8_1: {n} is not divisible by {qk}"
        );
        debug_assert!(
            (n / qk).is_multiple_of(2),
            "vec_dot_q4_1_q8_1: {n}, nb is not divisible by 2"
        );

        // Generic implementation.
        let mut sumf = 0f32;

        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let mut sumi = 0i32;

            for j in 0..qk / 2 {
                let v0 = xs.qs[j] as i32 & 0x0F;
                let v1 = xs.qs[j] as i32 >> 4;
                sumi += (v0 * ys.qs[j] as i32) + (v1 * ys.qs[j + qk / 2] as i32);
            }

            sumf += sumi as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
                + f16::to_f32(xs.m) * f16::to_f32(ys.s)
        }
        sumf
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q4_1
        let qk = Self::BLCK_SIZE;

        debug_assert_eq!(
            ys.len() * qk,
            xs.len(),
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            qk,
        );
        for (i, ys) in ys.iter_mut().enumerate() {
            let xs = &xs[i * qk..(i + 1) * qk];

            let mut min = f32::INFINITY;
            let mut max = f32::NEG_INFINITY;
            for &x in xs.iter() {
                min = f32::min(x, min);
                max = f32::max(x, max);
            }
            let d = (max - min) / ((1 << 4) - 1) as f32;
            let id = if d != 0f32 { 1. / d } else { 0. };
            ys.d = f16::from_f32(d);
            ys.m = f16::from_f32(min);

            for (j, q) in ys.qs.iter_mut().take(qk / 2).enumerate() {
                let x0 = (xs[j] - min) * id;
                let x1 = (xs[qk / 2 + j] - min) * id;

                let xi0 = u8::min(15, (x0 + 0.5) as u8);
                let xi1 = u8::min(15, (x1 + 0.5) as u8);

                *q = xi0 | (xi1 << 4);
            }
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/ggml.c#L1545
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK4_1),
            "dequantize_row_q4_1: {k} is not divisible by {QK4_1}"
        );

        let nb = k / QK4_1;
        for i in 0..nb {
            let d = xs[i].d.to_f32();
            let m = xs[i].m.to_f32();

            for j in 0..(QK4_1 / 2) {
                let x0 = xs[i].qs[j] & 0x0F;
                let x1 = xs[i].qs[j] >> 4;

                ys[i * QK4_1 + j] = (x0 as f32) * d + m;
                ys[i * QK4_1 + j + QK4_1 / 2] = (x1 as f32) * d + m;
            }
        }
    }
}

impl GgmlType for BlockQ5_0 {
    const DTYPE: GgmlDType = GgmlDType::Q5_0;
    const BLCK_SIZE: usize = QK5_0;
    type VecDotType = BlockQ8_0;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        let qk = Self::BLCK_SIZE;

        debug_assert!(
            n.is_multiple_of(qk),
            "vec_dot_q5_0_q8_0: {n} is not divisible by {qk}"
        );
        debug_assert!(
            (n / qk).is_multiple_of(2),
            "vec_dot_q5_0_q8_0: {n}, nb is not divisible by 2"
        );
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(_n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        // Generic implementation.
        let mut sumf = 0f32;

        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let qh = LittleEndian::read_u32(&xs.qh);
            let mut sumi = 0i32;

            for j in 0..Self::BLCK_SIZE / 2 {
                let xh_0 = (((qh & (1u32 << j)) >> j) << 4) as u8;
                let xh_1 = ((qh & (1u32 << (j + 16))) >> (j + 12)) as u8;

                let x0 = ((xs.qs[j] & 0x0F) as i32 | xh_0 as i32) - 16;
                let x1 = ((xs.qs[j] >> 4) as i32 | xh_1 as i32) - 16;

                sumi += (x0 * ys.qs[j] as i32) + (x1 * ys.qs[j + Self::BLCK_SIZE / 2] as i32);
            }

            sumf += sumi as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
        }
        sumf
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q5_0
        debug_assert_eq!(
            ys.len() * Self::BLCK_SIZE,
            xs.len(),
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            Self::BLCK_SIZE,
        );
        for (i, ys) in ys.iter_mut().enumerate() {
            let xs = &xs[i * Self::BLCK_SIZE..(i + 1) * Self::BLCK_SIZE];

            let mut amax = 0f32;
            let mut max = 0f32;
            for &x in xs.iter() {
                if amax < x.abs() {
                    amax = x.abs();
                    max = x;
                }
            }
            let d = max / -16.;
            let id = if d != 0f32 { 1. / d } else { 0. };
            ys.d = f16::from_f32(d);
            let mut qh = 0u32;
            for j in 0..Self::BLCK_SIZE / 2 {
                let x0 = xs[j] * id;
                let x1 = xs[j + Self::BLCK_SIZE / 2] * id;
                let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
                let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
                ys.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= ((xi0 as u32 & 0x10) >> 4) << j;
                qh |= ((xi1 as u32 & 0x10) >> 4) << (j + Self::BLCK_SIZE / 2);
            }
            LittleEndian::write_u32(&mut ys.qh, qh)
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/ggml.c#L1566
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK5_0),
            "dequantize_row_q5_0: {k} is not divisible by {QK5_0}"
        );
        let nb = k / QK5_0;
        for i in 0..nb {
            let d = xs[i].d.to_f32();
            let qh: u32 = LittleEndian::read_u32(&xs[i].qh);

            for j in 0..(QK5_0 / 2) {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;

                let x0 = ((xs[i].qs[j] & 0x0F) | xh_0) as i32 - 16;
                let x1 = ((xs[i].qs[j] >> 4) | xh_1) as i32 - 16;

                ys[i * QK5_0 + j] = (x0 as f32) * d;
                ys[i * QK5_0 + j + QK5_0 / 2] = (x1 as f32) * d;
            }
        }
    }
}

impl GgmlType for BlockQ5_1 {
    const DTYPE: GgmlDType = GgmlDType::Q5_1;
    const BLCK_SIZE: usize = QK5_1;
    type VecDotType = BlockQ8_1;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        let qk = Self::BLCK_SIZE;
        debug_assert!(
            n.is_multiple_of(qk),
            "vec_dot_q5_1_q8_1: {n} is not divisible by {qk}"
        );
        debug_assert!(
            (n / qk).is_multiple_of(2),
            "vec_dot_q5_1_q8_1: {n}, nb is not divisible by 2"
        );

        // Generic implementation.
        let mut sumf = 0f32;

        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let qh = LittleEndian::read_u32(&xs.qh);
            let mut sumi = 0i32;

            for j in 0..Self::BLCK_SIZE / 2 {
                let xh_0 = ((qh >> j) << 4) & 0x10;
                let xh_1 = (qh >> (j + 12)) & 0x10;

                let x0 = (xs.qs[j] as i32 & 0xF) | xh_0 as i32;
                let x1 = (xs.qs[j] as i32 >> 4) | xh_1 as i32;

                sumi += (x0 * ys.qs[j] as i32) + (x1 * ys.qs[j + Self::BLCK_SIZE / 2] as i32);
            }

            sumf += sumi as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
                + f16::to_f32(xs.m) * f16::to_f32(ys.s)
        }
        sumf
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q5_1
        let qk = Self::BLCK_SIZE;
        debug_assert_eq!(
            ys.len() * qk,
            xs.len(),
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            qk,
        );
        for (i, ys) in ys.iter_mut().enumerate() {
            let xs = &xs[i * qk..(i + 1) * qk];

            let mut min = f32::INFINITY;
            let mut max = f32::NEG_INFINITY;
            for &x in xs.iter() {
                min = f32::min(x, min);
                max = f32::max(x, max);
            }
            let d = (max - min) / ((1 << 5) - 1) as f32;
            let id = if d != 0f32 { 1. / d } else { 0. };
            ys.d = f16::from_f32(d);
            ys.m = f16::from_f32(min);

            let mut qh = 0u32;
            for (j, q) in ys.qs.iter_mut().take(qk / 2).enumerate() {
                let x0 = (xs[j] - min) * id;
                let x1 = (xs[qk / 2 + j] - min) * id;

                let xi0 = (x0 + 0.5) as u8;
                let xi1 = (x1 + 0.5) as u8;

                *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                // get the 5-th bit and store it in qh at the right position
                qh |= ((xi0 as u32 & 0x10) >> 4) << j;
                qh |= ((xi1 as u32 & 0x10) >> 4) << (j + qk / 2);
            }
            LittleEndian::write_u32(&mut ys.qh, qh);
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/ggml.c#L1592
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK5_1),
            "dequantize_row_q5_1: {k} is not divisible by {QK5_1}"
        );

        let nb = k / QK5_1;
        for i in 0..nb {
            let d = xs[i].d.to_f32();
            let m = xs[i].m.to_f32();
            let qh: u32 = LittleEndian::read_u32(&xs[i].qh);

            for j in 0..(QK5_1 / 2) {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;

                let x0 = (xs[i].qs[j] & 0x0F) | xh_0;
                let x1 = (xs[i].qs[j] >> 4) | xh_1;

                ys[i * QK5_1 + j] = (x0 as f32) * d + m;
                ys[i * QK5_1 + j + QK5_1 / 2] = (x1 as f32) * d + m;
            }
        }
    }
}

/// aiaas patch: quantizes one block of 32 values to 8 bits as `quantize_row_q8_0` /
/// `quantize_row_q8_1` do (scale `d = max |x| / 127`, each value `round(x / d)` with ties away
/// from zero, saturated to `i8`) and returns `d` and the sum of the quantized values. This
/// runs on every input row of every quantized matmul, serially before the parallel part;
/// with AVX2 it takes eight lanes per instruction (`avx::quantize_block_q8`, the same results
/// to the bit).
#[inline]
pub(crate) fn quantize_block_q8(xs: &[f32], qs: &mut [i8; 32]) -> (f32, i32) {
    #[cfg(target_feature = "avx2")]
    {
        super::avx::quantize_block_q8(xs, qs)
    }
    #[cfg(not(target_feature = "avx2"))]
    {
        quantize_block_q8_scalar(xs, qs)
    }
}

/// aiaas patch: upstream's per-block loop of `BlockQ8_0::from_float` / `BlockQ8_1::from_float`.
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
pub(crate) fn quantize_block_q8_scalar(xs: &[f32], qs: &mut [i8; 32]) -> (f32, i32) {
    let mut amax = 0f32;
    for &x in xs.iter() {
        amax = amax.max(x.abs())
    }
    let d = amax / ((1 << 7) - 1) as f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let mut sum = 0i32;
    for (q, &x) in qs.iter_mut().zip(xs.iter()) {
        *q = f32::round(x * id) as i8;
        sum += *q as i32;
    }
    (d, sum)
}

impl GgmlType for BlockQ8_0 {
    const DTYPE: GgmlDType = GgmlDType::Q8_0;
    const BLCK_SIZE: usize = QK8_0;
    type VecDotType = BlockQ8_0;

    // https://github.com/ggerganov/llama.cpp/blob/468ea24fb4633a0d681f7ac84089566c1c6190cb/ggml.c#L1619
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK8_0),
            "dequantize_row_q8_0: {k} is not divisible by {QK8_0}"
        );

        let nb = k / QK8_0;

        for i in 0..nb {
            let d = xs[i].d.to_f32();

            for j in 0..QK8_0 {
                ys[i * QK8_0 + j] = xs[i].qs[j] as f32 * d;
            }
        }
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q8_0
        let k = xs.len();
        debug_assert!(
            k.is_multiple_of(Self::BLCK_SIZE),
            "{k} is not divisible by {}",
            Self::BLCK_SIZE
        );
        debug_assert_eq!(
            ys.len(),
            k / Self::BLCK_SIZE,
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            Self::BLCK_SIZE
        );
        // aiaas patch: one block at a time through `quantize_block_q8` (AVX2 when enabled),
        // eight at a time with AVX2 where there are eight (`avx::quantize_row_q8_0_x8`, the same
        // bytes).
        #[cfg(target_feature = "avx2")]
        let done = super::avx::quantize_row_q8_0_x8(xs, ys);
        #[cfg(not(target_feature = "avx2"))]
        let done = 0;
        let (xs, ys) = (&xs[done * Self::BLCK_SIZE..], &mut ys[done..]);
        for (xs, ys) in xs.chunks_exact(Self::BLCK_SIZE).zip(ys.iter_mut()) {
            let (d, _) = quantize_block_q8(xs, &mut ys.qs);
            ys.d = f16::from_f32(d);
        }
    }

    // aiaas patch: four input rows per pass over a weight row (AVX2 builds), with the rows'
    // scales converted once per matmul.
    #[cfg(target_feature = "avx2")]
    fn prepare_rows(blocks: usize, ys: &[Self::VecDotType]) -> Vec<f32> {
        quad_scales(blocks, ys, &[|y| y.d])
    }

    #[cfg(target_feature = "avx2")]
    fn vec_dot_rows(
        n: usize,
        xs: &[Self],
        ys: &[Self::VecDotType],
        prepared: &[f32],
        out: &mut [f32],
    ) {
        rows_by_quads(
            (xs, ys, prepared, 4),
            out,
            |ys, scales| super::avx::vec_dot_q8_0_q8_0_x4(n, xs, ys, scales),
            |ys| super::avx::vec_dot_q8_0_q8_0(n, xs, ys),
        )
    }

    #[cfg(target_feature = "avx2")]
    fn matmul_panels(
        mkn: (usize, usize, usize),
        xs: &[Self],
        ys: &[Self::VecDotType],
        dst: &mut [f32],
    ) -> bool {
        matmul_panels_q8_0(mkn, xs, ys, dst, false);
        true
    }

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q8_0_q8_0(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q8_0_q8_0(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q8_0_q8_0(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK8_0),
            "vec_dot_q8_0_q8_0: {n} is not divisible by {QK8_0}"
        );

        // Generic implementation.
        let mut sumf = 0f32;
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let sum_i = xs
                .qs
                .iter()
                .zip(ys.qs.iter())
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>();
            sumf += sum_i as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
        }
        sumf
    }
}

impl GgmlType for BlockQ8_1 {
    const DTYPE: GgmlDType = GgmlDType::Q8_1;
    const BLCK_SIZE: usize = QK8_1;
    type VecDotType = BlockQ8_1;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK8_1),
            "vec_dot_q8_1_q8_1: {n} is not divisible by {QK8_1}"
        );

        // Generic implementation.
        let mut sumf = 0f32;
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let sum_i = xs
                .qs
                .iter()
                .zip(ys.qs.iter())
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>();
            sumf += sum_i as f32 * f16::to_f32(xs.d) * f16::to_f32(ys.d)
        }
        sumf
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        // quantize_row_q8_1
        debug_assert_eq!(
            ys.len() * Self::BLCK_SIZE,
            xs.len(),
            "size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            Self::BLCK_SIZE
        );
        // aiaas patch: one block at a time through `quantize_block_q8` (AVX2 when enabled),
        // eight at a time with AVX2 where there are eight (`avx::quantize_row_q8_1_x8`, the same
        // bytes).
        #[cfg(target_feature = "avx2")]
        let done = super::avx::quantize_row_q8_1_x8(xs, ys);
        #[cfg(not(target_feature = "avx2"))]
        let done = 0;
        let (xs, ys) = (&xs[done * Self::BLCK_SIZE..], &mut ys[done..]);
        for (xs, ys) in xs.chunks_exact(Self::BLCK_SIZE).zip(ys.iter_mut()) {
            let (d, sum) = quantize_block_q8(xs, &mut ys.qs);
            ys.d = f16::from_f32(d);
            ys.s = f16::from_f32(sum as f32) * ys.d;
        }
    }

    fn to_float(_xs: &[Self], _ys: &mut [f32]) {
        unimplemented!("no support for vec-dot on Q8_1")
    }
}

impl GgmlType for BlockQ2K {
    const DTYPE: GgmlDType = GgmlDType::Q2K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q2k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q2k_q8k(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q2k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q2k_q8k: {n} is not divisible by {QK_K}"
        );

        let mut sumf = 0.0;
        for (x, y) in xs.iter().zip(ys.iter()) {
            let mut q2: &[_] = &x.qs;
            let mut q8: &[_] = &y.qs;
            let sc = &x.scales;

            let mut summs = 0;
            for (bsum, scale) in y.bsums.iter().zip(sc) {
                summs += *bsum as i32 * ((scale >> 4) as i32);
            }

            let dall = y.d * x.d.to_f32();
            let dmin = y.d * x.dmin.to_f32();

            let mut isum = 0;
            let mut is = 0;
            for _ in 0..(QK_K / 128) {
                let mut shift = 0;
                for _ in 0..4 {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0;
                    for l in 0..16 {
                        isuml += q8[l] as i32 * (((q2[l] >> shift) & 3) as i32);
                    }
                    isum += d * isuml;
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    isuml = 0;
                    for l in 16..32 {
                        isuml += q8[l] as i32 * (((q2[l] >> shift) & 3) as i32);
                    }
                    isum += d * isuml;
                    shift += 2;
                    // adjust the indexing
                    q8 = &q8[32..];
                }
                // adjust the indexing
                q2 = &q2[32..];
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }

        sumf
    }

    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L279
    fn from_float(xs: &[f32], ys: &mut [Self]) {
        const Q4SCALE: f32 = 15.0;

        for (block, x) in group_for_quantization(xs, ys) {
            //calculate scales and mins
            let mut mins: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut scales: [f32; QK_K / 16] = [0.0; QK_K / 16];

            for (j, x_scale_slice) in x.chunks(16).enumerate() {
                (scales[j], mins[j]) = make_qkx1_quants(3, 5, x_scale_slice);
            }
            // get max scale and max min and ensure they are >= 0.0
            let max_scale = scales.iter().fold(0.0, |max, &val| val.max(max));
            let max_min = mins.iter().fold(0.0, |max, &val| val.max(max));

            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for (j, scale) in scales.iter().enumerate().take(QK_K / 16) {
                    block.scales[j] = nearest_int(iscale * scale) as u8;
                }
                block.d = f16::from_f32(max_scale / Q4SCALE);
            } else {
                for j in 0..QK_K / 16 {
                    block.scales[j] = 0;
                }
                block.d = f16::from_f32(0.0);
            }

            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for (j, scale) in block.scales.iter_mut().enumerate() {
                    let l = nearest_int(iscale * mins[j]) as u8;
                    *scale |= l << 4;
                }
                block.dmin = f16::from_f32(max_min / Q4SCALE);
            } else {
                block.dmin = f16::from_f32(0.0);
            }

            let mut big_l: [u8; QK_K] = [0; QK_K];

            for j in 0..QK_K / 16 {
                let d = block.d.to_f32() * (block.scales[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = block.dmin.to_f32() * (block.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let ll = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
                    big_l[16 * j + ii] = ll as u8;
                }
            }

            for j in (0..QK_K).step_by(128) {
                for ll in 0..32 {
                    block.qs[j / 4 + ll] = big_l[j + ll]
                        | (big_l[j + ll + 32] << 2)
                        | (big_l[j + ll + 64] << 4)
                        | (big_l[j + ll + 96] << 6);
                }
            }
        }
    }

    fn from_float_imatrix(xs: &[f32], ys: &mut [Self], imatrix_weights: &[f32], n_per_row: usize) {
        for (sblk_idx, (block, x)) in group_for_quantization(xs, ys).into_iter().enumerate() {
            let mut mins: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut scales: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut weights: [f32; 16] = [0.0; 16];
            let mut sw: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut ls: [u8; QK_K / 16] = [0; QK_K / 16];
            let mut lm: [u8; QK_K / 16] = [0; QK_K / 16];

            let sum_x2 = x.iter().map(|x| x * x).sum::<f32>();
            let sigma2 = sum_x2 / QK_K as f32;
            for (j, x_scale_slice) in x.chunks_exact(16).enumerate() {
                for (l, (w_elem, x_elem)) in weights.iter_mut().zip(x_scale_slice).enumerate() {
                    let imatrix_row = sblk_idx % (n_per_row / QK_K);
                    let imatrix_w = imatrix_weights[imatrix_row * QK_K + 16 * j + l];
                    *w_elem = imatrix_w * (sigma2 + x_elem * x_elem).sqrt();
                }
                let sumw = weights.iter().sum::<f32>();
                sw[j] = sumw;
                (scales[j], mins[j]) =
                    make_qkx3_quants(3, x_scale_slice, Some(&weights), -0.9, 0.05, 36, false);
            }

            let d_block = make_qp_quants(QK_K / 16, 15, &scales, &mut ls, &sw);
            let m_block = make_qp_quants(QK_K / 16, 15, &mins, &mut lm, &sw);

            block.d = f16::from_f32(d_block);
            block.dmin = f16::from_f32(m_block);

            for j in 0..QK_K / 16 {
                block.scales[j] = ls[j] | (lm[j] << 4);
            }

            let mut big_l: [u8; QK_K] = [0; QK_K];

            for j in 0..QK_K / 16 {
                let d = block.d.to_f32() * (block.scales[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = block.dmin.to_f32() * (block.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let ll = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
                    big_l[16 * j + ii] = ll as u8;
                }
            }

            for j in (0..QK_K).step_by(128) {
                for ll in 0..32 {
                    block.qs[j / 4 + ll] = big_l[j + ll]
                        | (big_l[j + ll + 32] << 2)
                        | (big_l[j + ll + 64] << 4)
                        | (big_l[j + ll + 96] << 6);
                }
            }
        }
    }
    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L354
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        for (block, y) in group_for_dequantization(xs, ys) {
            let d = block.d.to_f32();
            let min = block.dmin.to_f32();

            let mut is = 0;

            for (y_block, qs) in y.chunks_exact_mut(128).zip(block.qs.chunks_exact(32)) {
                // Step by 32 over q.
                let mut shift = 0;
                let mut y_block_index = 0;
                for _j in 0..4 {
                    let sc = block.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for q in &qs[..16] {
                        let y = dl * ((q >> shift) & 3) as f32 - ml;
                        y_block[y_block_index] = y;
                        y_block_index += 1;
                    }

                    let sc = block.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for q in &qs[16..] {
                        let y = dl * ((q >> shift) & 3) as f32 - ml;
                        y_block[y_block_index] = y;
                        y_block_index += 1;
                    }

                    shift += 2;
                }
            }
        }
    }
}

impl GgmlType for BlockQ3K {
    const DTYPE: GgmlDType = GgmlDType::Q3K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q3k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q3k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q3k_q8k: {n} is not divisible by {QK_K}"
        );

        const KMASK1: u32 = 0x03030303;
        const KMASK2: u32 = 0x0f0f0f0f;

        let mut aux8: [i8; QK_K] = [0; QK_K];
        let mut aux16: [i16; 8] = [0; 8];
        let mut sums: [f32; 8] = [0.0; 8];
        let mut aux32: [i32; 8] = [0; 8];

        let mut auxs: [u32; 4] = [0; 4];

        for (x, y) in xs.iter().zip(ys.iter()) {
            let mut q3: &[u8] = &x.qs;
            let hmask: &[u8] = &x.hmask;
            let mut q8: &[i8] = &y.qs;

            aux32.fill(0);
            let mut a = &mut aux8[..];

            let mut m = 1;
            //Like the GGML original this is written this way to enable the compiler to vectorize it.
            for _ in 0..QK_K / 128 {
                a.iter_mut()
                    .take(32)
                    .zip(q3)
                    .for_each(|(a_val, q3_val)| *a_val = (q3_val & 3) as i8);
                a.iter_mut()
                    .take(32)
                    .zip(hmask)
                    .for_each(|(a_val, hmask_val)| {
                        *a_val -= if hmask_val & m != 0 { 0 } else { 4 }
                    });
                a = &mut a[32..];
                m <<= 1;

                a.iter_mut()
                    .take(32)
                    .zip(q3)
                    .for_each(|(a_val, q3_val)| *a_val = ((q3_val >> 2) & 3) as i8);
                a.iter_mut()
                    .take(32)
                    .zip(hmask)
                    .for_each(|(a_val, hmask_val)| {
                        *a_val -= if hmask_val & m != 0 { 0 } else { 4 }
                    });
                a = &mut a[32..];
                m <<= 1;

                a.iter_mut()
                    .take(32)
                    .zip(q3)
                    .for_each(|(a_val, q3_val)| *a_val = ((q3_val >> 4) & 3) as i8);
                a.iter_mut()
                    .take(32)
                    .zip(hmask)
                    .for_each(|(a_val, hmask_val)| {
                        *a_val -= if hmask_val & m != 0 { 0 } else { 4 }
                    });
                a = &mut a[32..];
                m <<= 1;

                a.iter_mut()
                    .take(32)
                    .zip(q3)
                    .for_each(|(a_val, q3_val)| *a_val = ((q3_val >> 6) & 3) as i8);
                a.iter_mut()
                    .take(32)
                    .zip(hmask)
                    .for_each(|(a_val, hmask_val)| {
                        *a_val -= if hmask_val & m != 0 { 0 } else { 4 }
                    });
                a = &mut a[32..];
                m <<= 1;
                q3 = &q3[32..];
            }

            a = &mut aux8[..];

            LittleEndian::read_u32_into(&x.scales, &mut auxs[0..3]);

            let tmp = auxs[2];
            auxs[2] = ((auxs[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
            auxs[3] = ((auxs[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
            auxs[0] = (auxs[0] & KMASK2) | (((tmp) & KMASK1) << 4);
            auxs[1] = (auxs[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);

            for aux in auxs {
                for scale in aux.to_le_bytes() {
                    let scale = i8::from_be_bytes([scale]);
                    for l in 0..8 {
                        aux16[l] = q8[l] as i16 * a[l] as i16;
                    }
                    for l in 0..8 {
                        aux32[l] += (scale as i32 - 32) * aux16[l] as i32;
                    }
                    q8 = &q8[8..];
                    a = &mut a[8..];

                    for l in 0..8 {
                        aux16[l] = q8[l] as i16 * a[l] as i16;
                    }
                    for l in 0..8 {
                        aux32[l] += (scale as i32 - 32) * aux16[l] as i32;
                    }
                    q8 = &q8[8..];
                    a = &mut a[8..];
                }
            }
            let d = x.d.to_f32() * y.d;
            for l in 0..8 {
                sums[l] += d * aux32[l] as f32;
            }
        }

        sums.iter().sum()
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        for (block, x) in group_for_quantization(xs, ys) {
            let mut scales: [f32; QK_K / 16] = [0.0; QK_K / 16];
            for (j, x_scale_slice) in x.chunks_exact(16).enumerate() {
                scales[j] = make_q3_quants(x_scale_slice, 4, true);
            }

            // Get max scale by absolute value.
            let mut max_scale: f32 = 0.0;
            for &scale in scales.iter() {
                if scale.abs() > max_scale.abs() {
                    max_scale = scale;
                }
            }

            block.scales.fill(0);

            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for (j, scale) in scales.iter().enumerate() {
                    let l_val = nearest_int(iscale * scale);
                    let l_val = l_val.clamp(-32, 31) + 32;
                    if j < 8 {
                        block.scales[j] = (l_val & 0xF) as u8;
                    } else {
                        block.scales[j - 8] |= ((l_val & 0xF) << 4) as u8;
                    }
                    let l_val = l_val >> 4;
                    block.scales[j % 4 + 8] |= (l_val << (2 * (j / 4))) as u8;
                }
                block.d = f16::from_f32(1.0 / iscale);
            } else {
                block.d = f16::from_f32(0.0);
            }

            let mut l: [i8; QK_K] = [0; QK_K];

            for j in 0..QK_K / 16 {
                let sc = if j < 8 {
                    block.scales[j] & 0xF
                } else {
                    block.scales[j - 8] >> 4
                };
                let sc = (sc | (((block.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
                let d = block.d.to_f32() * sc as f32;
                if d != 0.0 {
                    for ii in 0..16 {
                        let l_val = nearest_int(x[16 * j + ii] / d);
                        l[16 * j + ii] = (l_val.clamp(-4, 3) + 4) as i8;
                    }
                }
            }

            block.hmask.fill(0);
            let mut m = 0;
            let mut hm = 1;

            for ll in l.iter_mut() {
                if *ll > 3 {
                    block.hmask[m] |= hm;
                    *ll -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }

            for j in (0..QK_K).step_by(128) {
                for l_val in 0..32 {
                    block.qs[j / 4 + l_val] = (l[j + l_val]
                        | (l[j + l_val + 32] << 2)
                        | (l[j + l_val + 64] << 4)
                        | (l[j + l_val + 96] << 6))
                        as u8;
                }
            }
        }
    }

    fn from_float_imatrix(xs: &[f32], ys: &mut [Self], imatrix_weights: &[f32], n_per_row: usize) {
        for (sblk_idx, (block, x)) in group_for_quantization(xs, ys).into_iter().enumerate() {
            let mut scales: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut weights: [f32; 16] = [0.0; 16];
            let mut sw: [f32; QK_K / 16] = [0.0; QK_K / 16];
            let mut ls: [i8; QK_K / 16] = [0; QK_K / 16];
            let mut l: [i8; QK_K] = [0; QK_K];

            let sum_x2 = x.iter().map(|x| x * x).sum::<f32>();
            let sigma2 = 2. * sum_x2 / QK_K as f32;

            for (j, x_scale_slice) in x.chunks_exact(16).enumerate() {
                for (l_idx, (w_elem, x_elem)) in weights.iter_mut().zip(x_scale_slice).enumerate() {
                    let imatrix_row = sblk_idx % (n_per_row / QK_K);
                    let imatrix_w = imatrix_weights[imatrix_row * QK_K + 16 * j + l_idx];
                    *w_elem = imatrix_w * (sigma2 + x_elem * x_elem).sqrt();
                }
                let sumw = weights.iter().sum::<f32>();
                sw[j] = sumw;
                scales[j] = unsafe {
                    make_qx_quants(
                        16,
                        4,
                        x_scale_slice.as_ptr(),
                        l.as_mut_ptr().add(16 * j),
                        1,
                        weights.as_ptr(),
                    )
                };
            }

            block.scales.fill(0);
            let d_block = unsafe {
                make_qx_quants(
                    QK_K / 16,
                    32,
                    scales.as_ptr(),
                    ls.as_mut_ptr(),
                    1,
                    sw.as_ptr(),
                )
            };
            block.d = f16::from_f32(d_block);
            for (j, l_val) in ls.iter().enumerate().take(QK_K / 16) {
                if j < 8 {
                    block.scales[j] = (l_val & 0xF) as u8;
                } else {
                    block.scales[j - 8] |= ((l_val & 0xF) << 4) as u8;
                }
                let l_val = l_val >> 4;
                block.scales[j % 4 + 8] |= (l_val << (2 * (j / 4))) as u8;
            }

            for j in 0..QK_K / 16 {
                let sc = if j < 8 {
                    block.scales[j] & 0xF
                } else {
                    block.scales[j - 8] >> 4
                };
                let sc = (sc | (((block.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
                let d = block.d.to_f32() * sc as f32;
                if d != 0.0 {
                    for ii in 0..16 {
                        let l_val = nearest_int(x[16 * j + ii] / d);
                        l[16 * j + ii] = (l_val.clamp(-4, 3) + 4) as i8;
                    }
                }
            }

            block.hmask.fill(0);
            let mut m = 0;
            let mut hm = 1;

            for ll in l.iter_mut() {
                if *ll > 3 {
                    block.hmask[m] |= hm;
                    *ll -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }

            for j in (0..QK_K).step_by(128) {
                for l_val in 0..32 {
                    block.qs[j / 4 + l_val] = (l[j + l_val]
                        | (l[j + l_val + 32] << 2)
                        | (l[j + l_val + 64] << 4)
                        | (l[j + l_val + 96] << 6))
                        as u8;
                }
            }
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L533
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        const KMASK1: u32 = 0x03030303;
        const KMASK2: u32 = 0x0f0f0f0f;

        for (block, y) in group_for_dequantization(xs, ys) {
            //Reconstruct the scales
            let mut aux = [0; 4];
            LittleEndian::read_u32_into(&block.scales, &mut aux[0..3]);

            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
            aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
            aux[0] = (aux[0] & KMASK2) | (((tmp) & KMASK1) << 4);
            aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);

            //Transfer the scales into an i8 array
            let scales: &mut [i8] =
                unsafe { std::slice::from_raw_parts_mut(aux.as_mut_ptr() as *mut i8, 16) };

            let d_all = block.d.to_f32();
            let mut m = 1;
            let mut is = 0;

            // Dequantize both 128 long blocks
            // 32 qs values per 128 long block
            // Each 16 elements get a scale
            for (y, qs) in y.chunks_exact_mut(128).zip(block.qs.chunks_exact(32)) {
                let mut shift = 0;
                for shift_scoped_y in y.chunks_exact_mut(32) {
                    for (scale_index, scale_scoped_y) in
                        shift_scoped_y.chunks_exact_mut(16).enumerate()
                    {
                        let dl = d_all * (scales[is] as f32 - 32.0);
                        for (i, inner_y) in scale_scoped_y.iter_mut().enumerate() {
                            let new_y = dl
                                * (((qs[i + 16 * scale_index] >> shift) & 3) as i8
                                    - if (block.hmask[i + 16 * scale_index] & m) == 0 {
                                        4
                                    } else {
                                        0
                                    }) as f32;
                            *inner_y = new_y;
                        }
                        // 16 block finished => advance scale index
                        is += 1;
                    }
                    // 32 block finished => increase shift and m
                    shift += 2;
                    m <<= 1;
                }
            }
        }
    }
}

impl GgmlType for BlockQ4K {
    const DTYPE: GgmlDType = GgmlDType::Q4K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q4k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q4k_q8k(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q4k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q4k_q8k: {n} is not divisible by {QK_K}"
        );

        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;

        let mut utmp: [u32; 4] = [0; 4];
        let mut scales: [u8; 8] = [0; 8];
        let mut mins: [u8; 8] = [0; 8];

        let mut aux8: [i8; QK_K] = [0; QK_K];
        let mut aux16: [i16; 8] = [0; 8];
        let mut sums: [f32; 8] = [0.0; 8];
        let mut aux32: [i32; 8] = [0; 8];

        let mut sumf = 0.0;
        for (y, x) in ys.iter().zip(xs.iter()) {
            let q4 = &x.qs;
            let q8 = &y.qs;
            aux32.fill(0);

            let mut a = &mut aux8[..];
            let mut q4 = &q4[..];
            for _ in 0..QK_K / 64 {
                for l in 0..32 {
                    a[l] = (q4[l] & 0xF) as i8;
                }
                a = &mut a[32..];
                for l in 0..32 {
                    a[l] = (q4[l] >> 4) as i8;
                }
                a = &mut a[32..];
                q4 = &q4[32..];
            }

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            //extract scales and mins
            LittleEndian::write_u32_into(&utmp[0..2], &mut scales);
            LittleEndian::write_u32_into(&utmp[2..4], &mut mins);

            let mut sumi = 0;
            for j in 0..QK_K / 16 {
                sumi += y.bsums[j] as i32 * mins[j / 2] as i32;
            }

            let mut a = &mut aux8[..];
            let mut q8 = &q8[..];

            for scale in scales {
                let scale = scale as i32;
                for _ in 0..4 {
                    for l in 0..8 {
                        aux16[l] = q8[l] as i16 * a[l] as i16;
                    }
                    for l in 0..8 {
                        aux32[l] += scale * aux16[l] as i32;
                    }
                    q8 = &q8[8..];
                    a = &mut a[8..];
                }
            }
            let d = x.d.to_f32() * y.d;
            for l in 0..8 {
                sums[l] += d * aux32[l] as f32;
            }
            let dmin = x.dmin.to_f32() * y.d;
            sumf -= dmin * sumi as f32;
        }
        sumf + sums.iter().sum::<f32>()
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        for (block, x) in group_for_quantization(xs, ys) {
            let mut mins: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut scales: [f32; QK_K / 32] = [0.0; QK_K / 32];

            for (j, x_scale_slice) in x.chunks_exact(32).enumerate() {
                (scales[j], mins[j]) = make_qkx1_quants(15, 5, x_scale_slice);
            }

            // get max scale and max min and ensure they are >= 0.0
            let max_scale = scales.iter().fold(0.0, |max, &val| val.max(max));
            let max_min = mins.iter().fold(0.0, |max, &val| val.max(max));

            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };

            for j in 0..QK_K / 32 {
                let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
                let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
                if j < 4 {
                    block.scales[j] = ls;
                    block.scales[j + 4] = lm;
                } else {
                    block.scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    block.scales[j - 4] |= (ls >> 4) << 6;
                    block.scales[j] |= (lm >> 4) << 6;
                }
            }

            block.d = f16::from_f32(max_scale / 63.0);
            block.dmin = f16::from_f32(max_min / 63.0);

            let mut l: [u8; QK_K] = [0; QK_K];

            for j in 0..QK_K / 32 {
                let (sc, m) = get_scale_min_k4(j, &block.scales);
                let d = block.d.to_f32() * sc as f32;
                if d != 0.0 {
                    let dm = block.dmin.to_f32() * m as f32;
                    for ii in 0..32 {
                        let l_val = nearest_int((x[32 * j + ii] + dm) / d);
                        l[32 * j + ii] = l_val.clamp(0, 15) as u8;
                    }
                }
            }

            let q = &mut block.qs;
            for j in (0..QK_K).step_by(64) {
                for l_val in 0..32 {
                    let offset_index = (j / 64) * 32 + l_val;
                    q[offset_index] = l[j + l_val] | (l[j + l_val + 32] << 4);
                }
            }
        }
    }

    fn from_float_imatrix(xs: &[f32], ys: &mut [Self], imatrix_weights: &[f32], n_per_row: usize) {
        for (sblk_idx, (block, x)) in group_for_quantization(xs, ys).into_iter().enumerate() {
            let mut mins: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut scales: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut weights: [f32; 32] = [0.0; 32];
            let mut sw: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut ls: [u8; QK_K / 32] = [0; QK_K / 32];
            let mut lm: [u8; QK_K / 32] = [0; QK_K / 32];

            let sum_x2 = x.iter().map(|x| x * x).sum::<f32>();
            let sigma2 = 2. * sum_x2 / QK_K as f32;

            for (j, x_scale_slice) in x.chunks_exact(32).enumerate() {
                for (l, (w_elem, x_elem)) in weights.iter_mut().zip(x_scale_slice).enumerate() {
                    let imatrix_row = sblk_idx % (n_per_row / QK_K);
                    let imatrix_w = imatrix_weights[imatrix_row * QK_K + 32 * j + l];
                    *w_elem = imatrix_w * (sigma2 + x_elem * x_elem).sqrt();
                }
                let sumw = weights.iter().sum::<f32>();
                sw[j] = sumw;
                (scales[j], mins[j]) =
                    make_qkx3_quants(15, x_scale_slice, Some(&weights), -0.9, 0.05, 36, false);
            }

            let d_block = make_qp_quants(QK_K / 32, 63, &scales, &mut ls, &sw);
            let m_block = make_qp_quants(QK_K / 32, 63, &mins, &mut lm, &sw);
            for j in 0..QK_K / 32 {
                let ls_val = ls[j];
                let lm_val = lm[j];
                if j < 4 {
                    block.scales[j] = ls_val;
                    block.scales[j + 4] = lm_val;
                } else {
                    block.scales[j + 4] = (ls_val & 0xF) | ((lm_val & 0xF) << 4);
                    block.scales[j - 4] |= (ls_val >> 4) << 6;
                    block.scales[j] |= (lm_val >> 4) << 6;
                }
            }

            block.d = f16::from_f32(d_block);
            block.dmin = f16::from_f32(m_block);

            let mut l: [u8; QK_K] = [0; QK_K];
            for j in 0..QK_K / 32 {
                let (sc, m) = get_scale_min_k4(j, &block.scales);
                let d = block.d.to_f32() * sc as f32;
                if d != 0.0 {
                    let dm = block.dmin.to_f32() * m as f32;
                    for ii in 0..32 {
                        let l_val = nearest_int((x[32 * j + ii] + dm) / d);
                        l[32 * j + ii] = l_val.clamp(0, 15) as u8;
                    }
                }
            }

            let q = &mut block.qs;
            for j in (0..QK_K).step_by(64) {
                for l_val in 0..32 {
                    let offset_index = (j / 64) * 32 + l_val;
                    q[offset_index] = l[j + l_val] | (l[j + l_val + 32] << 4);
                }
            }
        }
    }
    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L735
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        for (block, y) in group_for_dequantization(xs, ys) {
            let d = block.d.to_f32();
            let min = block.dmin.to_f32();
            let q = &block.qs;
            let mut is = 0;
            let mut ys_index = 0;

            for j in (0..QK_K).step_by(64) {
                let q = &q[j / 2..j / 2 + 32];
                let (sc, m) = get_scale_min_k4(is, &block.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                let (sc, m) = get_scale_min_k4(is + 1, &block.scales);
                let d2 = d * sc as f32;
                let m2 = min * m as f32;
                for q in q {
                    y[ys_index] = d1 * (q & 0xF) as f32 - m1;
                    ys_index += 1;
                }
                for q in q {
                    y[ys_index] = d2 * (q >> 4) as f32 - m2;
                    ys_index += 1;
                }
                is += 2;
            }
        }
    }
}

// https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L928
impl GgmlType for BlockQ5K {
    const DTYPE: GgmlDType = GgmlDType::Q5K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q5k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q5k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q5k_q8k: {n} is not divisible by {QK_K}"
        );

        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;

        let mut utmp: [u32; 4] = [0; 4];
        let mut scales: [u8; 8] = [0; 8];
        let mut mins: [u8; 8] = [0; 8];

        let mut aux8: [i8; QK_K] = [0; QK_K];
        let mut aux16: [i16; 8] = [0; 8];
        let mut sums: [f32; 8] = [0.0; 8];
        let mut aux32: [i32; 8] = [0; 8];

        let mut sumf = 0.0;
        for (y, x) in ys.iter().zip(xs.iter()) {
            let q5 = &x.qs;
            let hm = &x.qh;
            let q8 = &y.qs;
            aux32.fill(0);

            let mut a = &mut aux8[..];
            let mut q5 = &q5[..];
            let mut m = 1u8;

            for _ in 0..QK_K / 64 {
                for l in 0..32 {
                    a[l] = (q5[l] & 0xF) as i8;
                    a[l] += if hm[l] & m != 0 { 16 } else { 0 };
                }
                a = &mut a[32..];
                m <<= 1;
                for l in 0..32 {
                    a[l] = (q5[l] >> 4) as i8;
                    a[l] += if hm[l] & m != 0 { 16 } else { 0 };
                }
                a = &mut a[32..];
                m <<= 1;
                q5 = &q5[32..];
            }

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            //extract scales and mins
            LittleEndian::write_u32_into(&utmp[0..2], &mut scales);
            LittleEndian::write_u32_into(&utmp[2..4], &mut mins);

            let mut sumi = 0;
            for j in 0..QK_K / 16 {
                sumi += y.bsums[j] as i32 * mins[j / 2] as i32;
            }

            let mut a = &mut aux8[..];
            let mut q8 = &q8[..];

            for scale in scales {
                let scale = scale as i32;
                for _ in 0..4 {
                    for l in 0..8 {
                        aux16[l] = q8[l] as i16 * a[l] as i16;
                    }
                    for l in 0..8 {
                        aux32[l] += scale * aux16[l] as i32;
                    }
                    q8 = &q8[8..];
                    a = &mut a[8..];
                }
            }
            let d = x.d.to_f32() * y.d;
            for l in 0..8 {
                sums[l] += d * aux32[l] as f32;
            }
            let dmin = x.dmin.to_f32() * y.d;
            sumf -= dmin * sumi as f32;
        }
        sumf + sums.iter().sum::<f32>()
    }

    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L793
    fn from_float(xs: &[f32], ys: &mut [Self]) {
        for (block, x) in group_for_quantization(xs, ys) {
            let mut mins: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut scales: [f32; QK_K / 32] = [0.0; QK_K / 32];

            for (j, x_scale_slice) in x.chunks_exact(32).enumerate() {
                (scales[j], mins[j]) = make_qkx1_quants(31, 5, x_scale_slice);
            }

            // get max scale and max min and ensure they are >= 0.0
            let max_scale = scales.iter().fold(0.0, |max, &val| val.max(max));
            let max_min = mins.iter().fold(0.0, |max, &val| val.max(max));

            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..QK_K / 32 {
                let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
                let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
                if j < 4 {
                    block.scales[j] = ls;
                    block.scales[j + 4] = lm;
                } else {
                    block.scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    block.scales[j - 4] |= (ls >> 4) << 6;
                    block.scales[j] |= (lm >> 4) << 6;
                }
            }
            block.d = f16::from_f32(max_scale / 63.0);
            block.dmin = f16::from_f32(max_min / 63.0);

            let mut l: [u8; QK_K] = [0; QK_K];
            for j in 0..QK_K / 32 {
                let (sc, m) = get_scale_min_k4(j, &block.scales);
                let d = block.d.to_f32() * sc as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = block.dmin.to_f32() * m as f32;
                for ii in 0..32 {
                    let ll = nearest_int((x[32 * j + ii] + dm) / d);
                    l[32 * j + ii] = ll.clamp(0, 31) as u8;
                }
            }

            let qh = &mut block.qh;
            let ql = &mut block.qs;
            qh.fill(0);

            let mut m1 = 1;
            let mut m2 = 2;
            for n in (0..QK_K).step_by(64) {
                let offset = (n / 64) * 32;
                for j in 0..32 {
                    let mut l1 = l[n + j];
                    if l1 > 15 {
                        l1 -= 16;
                        qh[j] |= m1;
                    }
                    let mut l2 = l[n + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        qh[j] |= m2;
                    }
                    ql[offset + j] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    fn from_float_imatrix(xs: &[f32], ys: &mut [Self], imatrix_weights: &[f32], n_per_row: usize) {
        for (sblk_idx, (block, x)) in group_for_quantization(xs, ys).into_iter().enumerate() {
            let mut mins: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut scales: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut weights: [f32; 32] = [0.0; 32];
            let mut sw: [f32; QK_K / 32] = [0.0; QK_K / 32];
            let mut ls: [u8; QK_K / 32] = [0; QK_K / 32];
            let mut lm: [u8; QK_K / 32] = [0; QK_K / 32];

            let sum_x2 = x.iter().map(|x| x * x).sum::<f32>();
            let sigma2 = 2. * sum_x2 / QK_K as f32;

            for (j, x_scale_slice) in x.chunks_exact(32).enumerate() {
                for (l, (w_elem, x_elem)) in weights.iter_mut().zip(x_scale_slice).enumerate() {
                    let imatrix_row = sblk_idx % (n_per_row / QK_K);
                    let imatrix_w = imatrix_weights[imatrix_row * QK_K + 32 * j + l];
                    *w_elem = imatrix_w * (sigma2 + x_elem * x_elem).sqrt();
                }
                let sumw = weights.iter().sum::<f32>();
                sw[j] = sumw;
                (scales[j], mins[j]) =
                    make_qkx3_quants(31, x_scale_slice, Some(&weights), -0.9, 0.05, 36, false);
            }

            let d_block = make_qp_quants(QK_K / 32, 63, &scales, &mut ls, &sw);
            let m_block = make_qp_quants(QK_K / 32, 63, &mins, &mut lm, &sw);
            for j in 0..QK_K / 32 {
                let ls_val = ls[j].min(63);
                let lm_val = lm[j].min(63);
                if j < 4 {
                    block.scales[j] = ls_val;
                    block.scales[j + 4] = lm_val;
                } else {
                    block.scales[j + 4] = (ls_val & 0xF) | ((lm_val & 0xF) << 4);
                    block.scales[j - 4] |= (ls_val >> 4) << 6;
                    block.scales[j] |= (lm_val >> 4) << 6;
                }
            }

            block.d = f16::from_f32(d_block);
            block.dmin = f16::from_f32(m_block);

            let mut l: [u8; QK_K] = [0; QK_K];
            for j in 0..QK_K / 32 {
                let (sc, m) = get_scale_min_k4(j, &block.scales);
                let d = block.d.to_f32() * sc as f32;
                if d != 0.0 {
                    let dm = block.dmin.to_f32() * m as f32;
                    for ii in 0..32 {
                        let l_val = nearest_int((x[32 * j + ii] + dm) / d);
                        l[32 * j + ii] = l_val.clamp(0, 31) as u8;
                    }
                }
            }

            let qh = &mut block.qh;
            let ql = &mut block.qs;
            qh.fill(0);

            let mut m1 = 1;
            let mut m2 = 2;
            for n in (0..QK_K).step_by(64) {
                let offset = (n / 64) * 32;
                for j in 0..32 {
                    let mut l1 = l[n + j];
                    if l1 > 15 {
                        l1 -= 16;
                        qh[j] |= m1;
                    }
                    let mut l2 = l[n + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        qh[j] |= m2;
                    }
                    ql[offset + j] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L928
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        for (block, y) in group_for_dequantization(xs, ys) {
            let d = block.d.to_f32();
            let min = block.dmin.to_f32();
            let ql = &block.qs;
            let qh = &block.qh;
            let mut is = 0;
            let mut u1 = 1;
            let mut u2 = 2;
            let mut ys_index = 0;

            for j in (0..QK_K).step_by(64) {
                let ql = &ql[j / 2..j / 2 + 32];
                let (sc, m) = get_scale_min_k4(is, &block.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                let (sc, m) = get_scale_min_k4(is + 1, &block.scales);
                let d2 = d * sc as f32;
                let m2 = min * m as f32;
                for (ql, qh) in ql.iter().zip(qh) {
                    let to_add = if qh & u1 != 0 { 16f32 } else { 0f32 };
                    y[ys_index] = d1 * ((ql & 0xF) as f32 + to_add) - m1;
                    ys_index += 1;
                }
                for (ql, qh) in ql.iter().zip(qh) {
                    let to_add = if qh & u2 != 0 { 16f32 } else { 0f32 };
                    y[ys_index] = d2 * ((ql >> 4) as f32 + to_add) - m2;
                    ys_index += 1;
                }
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
        }
    }
}

impl GgmlType for BlockQ6K {
    const DTYPE: GgmlDType = GgmlDType::Q6K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q6k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q6k_q8k(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q6k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q6k_q8k: {n} is not divisible by {QK_K}"
        );

        let mut aux8 = [0i8; QK_K];
        let mut aux16 = [0i16; 8];
        let mut sums = [0f32; 8];
        let mut aux32 = [0f32; 8];

        for (x, y) in xs.iter().zip(ys.iter()) {
            let q4 = &x.ql;
            let qh = &x.qh;
            let q8 = &y.qs;
            aux32.fill(0f32);

            for j in (0..QK_K).step_by(128) {
                let aux8 = &mut aux8[j..];
                let q4 = &q4[j / 2..];
                let qh = &qh[j / 4..];
                for l in 0..32 {
                    aux8[l] = (((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32) as i8;
                    aux8[l + 32] =
                        (((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32) as i8;
                    aux8[l + 64] = (((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32) as i8;
                    aux8[l + 96] =
                        (((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32) as i8;
                }
            }

            for (j, &scale) in x.scales.iter().enumerate() {
                let scale = scale as f32;
                let q8 = &q8[16 * j..];
                let aux8 = &aux8[16 * j..];
                for l in 0..8 {
                    aux16[l] = q8[l] as i16 * aux8[l] as i16;
                }
                for l in 0..8 {
                    aux32[l] += scale * aux16[l] as f32
                }
                let q8 = &q8[8..];
                let aux8 = &aux8[8..];
                for l in 0..8 {
                    aux16[l] = q8[l] as i16 * aux8[l] as i16;
                }
                for l in 0..8 {
                    aux32[l] += scale * aux16[l] as f32
                }
            }

            let d = x.d.to_f32() * y.d;
            for (sum, &a) in sums.iter_mut().zip(aux32.iter()) {
                *sum += a * d;
            }
        }
        sums.iter().sum()
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        debug_assert_eq!(
            xs.len(),
            ys.len() * Self::BLCK_SIZE,
            "quantize_row_q6k: size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            Self::BLCK_SIZE
        );
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut x = xs.as_ptr();
        let l = l.as_mut_ptr();
        unsafe {
            for y in ys.iter_mut() {
                let mut max_scale = 0f32;
                let mut max_abs_scale = 0f32;
                for (ib, scale_) in scales.iter_mut().enumerate() {
                    let scale =
                        make_qx_quants(16, 32, x.add(16 * ib), l.add(16 * ib), 1, std::ptr::null());
                    *scale_ = scale;
                    let abs_scale = scale.abs();
                    if abs_scale > max_abs_scale {
                        max_abs_scale = abs_scale;
                        max_scale = scale
                    }
                }

                let iscale = -128f32 / max_scale;
                y.d = f16::from_f32(1.0 / iscale);

                for (y_scale, scale) in y.scales.iter_mut().zip(scales.iter()) {
                    *y_scale = nearest_int(iscale * scale).min(127) as i8
                }

                for (j, &y_scale) in y.scales.iter().enumerate() {
                    let d = y.d.to_f32() * y_scale as f32;
                    if d == 0. {
                        continue;
                    }
                    for ii in 0..16 {
                        let ll = nearest_int(*x.add(16 * j + ii) / d).clamp(-32, 31);
                        *l.add(16 * j + ii) = (ll + 32) as i8
                    }
                }

                let mut ql = y.ql.as_mut_ptr();
                let mut qh = y.qh.as_mut_ptr();

                for j in (0..QK_K).step_by(128) {
                    for l_idx in 0..32 {
                        let q1 = *l.add(j + l_idx) & 0xF;
                        let q2 = *l.add(j + l_idx + 32) & 0xF;
                        let q3 = *l.add(j + l_idx + 64) & 0xF;
                        let q4 = *l.add(j + l_idx + 96) & 0xF;
                        *ql.add(l_idx) = (q1 | (q3 << 4)) as u8;
                        *ql.add(l_idx + 32) = (q2 | (q4 << 4)) as u8;
                        *qh.add(l_idx) = ((*l.add(j + l_idx) >> 4)
                            | ((*l.add(j + l_idx + 32) >> 4) << 2)
                            | ((*l.add(j + l_idx + 64) >> 4) << 4)
                            | ((*l.add(j + l_idx + 96) >> 4) << 6))
                            as u8;
                    }
                    ql = ql.add(64);
                    qh = qh.add(32);
                }

                x = x.add(QK_K)
            }
        }
    }

    fn from_float_imatrix(xs: &[f32], ys: &mut [Self], imatrix_weights: &[f32], n_per_row: usize) {
        debug_assert_eq!(
            xs.len(),
            ys.len() * Self::BLCK_SIZE,
            "quantize_row_q6k imatrix: size mismatch {} {} {}",
            xs.len(),
            ys.len(),
            Self::BLCK_SIZE
        );
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut x = xs.as_ptr();
        let imatrix_weights = imatrix_weights.as_ptr();
        let l = l.as_mut_ptr();
        unsafe {
            for (sblk_idx, y) in ys.iter_mut().enumerate() {
                let mut max_scale = 0f32;
                let mut max_abs_scale = 0f32;
                for (ib, scale_) in scales.iter_mut().enumerate() {
                    let imatrix_row = sblk_idx % (n_per_row / QK_K);
                    let scale = make_qx_quants(
                        16,
                        32,
                        x.add(16 * ib),
                        l.add(16 * ib),
                        1,
                        imatrix_weights.add(QK_K * imatrix_row + 16 * ib),
                    );
                    *scale_ = scale;
                    let abs_scale = scale.abs();
                    if abs_scale > max_abs_scale {
                        max_abs_scale = abs_scale;
                        max_scale = scale
                    }
                }

                let iscale = -128f32 / max_scale;
                y.d = f16::from_f32(1.0 / iscale);

                for (y_scale, scale) in y.scales.iter_mut().zip(scales.iter()) {
                    *y_scale = nearest_int(iscale * scale).min(127) as i8
                }

                for (j, &y_scale) in y.scales.iter().enumerate() {
                    let d = y.d.to_f32() * y_scale as f32;
                    if d == 0. {
                        continue;
                    }
                    for ii in 0..16 {
                        let ll = nearest_int(*x.add(16 * j + ii) / d).clamp(-32, 31);
                        *l.add(16 * j + ii) = (ll + 32) as i8
                    }
                }

                let mut ql = y.ql.as_mut_ptr();
                let mut qh = y.qh.as_mut_ptr();

                for j in (0..QK_K).step_by(128) {
                    for l_idx in 0..32 {
                        let q1 = *l.add(j + l_idx) & 0xF;
                        let q2 = *l.add(j + l_idx + 32) & 0xF;
                        let q3 = *l.add(j + l_idx + 64) & 0xF;
                        let q4 = *l.add(j + l_idx + 96) & 0xF;
                        *ql.add(l_idx) = (q1 | (q3 << 4)) as u8;
                        *ql.add(l_idx + 32) = (q2 | (q4 << 4)) as u8;
                        *qh.add(l_idx) = ((*l.add(j + l_idx) >> 4)
                            | ((*l.add(j + l_idx + 32) >> 4) << 2)
                            | ((*l.add(j + l_idx + 64) >> 4) << 4)
                            | ((*l.add(j + l_idx + 96) >> 4) << 6))
                            as u8;
                    }
                    ql = ql.add(64);
                    qh = qh.add(32);
                }

                x = x.add(QK_K)
            }
        }
    }

    // https://github.com/ggerganov/llama.cpp/blob/8183159cf3def112f6d1fe94815fce70e1bffa12/k_quants.c#L1067
    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK_K),
            "dequantize_row_q6k: {k} is not divisible by {QK_K}"
        );

        for (idx_x, x) in xs.iter().enumerate() {
            let d = x.d.to_f32();
            let ql = &x.ql;
            let qh = &x.qh;
            let sc = &x.scales;
            for n in (0..QK_K).step_by(128) {
                let idx = n / 128;
                let ys = &mut ys[idx_x * QK_K + n..];
                let sc = &sc[8 * idx..];
                let ql = &ql[64 * idx..];
                let qh = &qh[32 * idx..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    ys[l] = d * sc[is] as f32 * q1 as f32;
                    ys[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    ys[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    ys[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}

impl GgmlType for BlockQ8K {
    const DTYPE: GgmlDType = GgmlDType::Q8K;
    const BLCK_SIZE: usize = QK_K;
    type VecDotType = BlockQ8K;

    #[allow(unreachable_code)]
    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        #[cfg(target_feature = "avx2")]
        return super::avx::vec_dot_q8k_q8k(n, xs, ys);

        #[cfg(target_feature = "neon")]
        return super::neon::vec_dot_q8k_q8k(n, xs, ys);

        #[cfg(target_feature = "simd128")]
        return super::simd128::vec_dot_q8k_q8k(n, xs, ys);

        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(
            n.is_multiple_of(QK_K),
            "vec_dot_q8k_q8k: {n} is not divisible by {QK_K}"
        );
        // Generic implementation.
        let mut sumf = 0f32;
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let sum_i = xs
                .qs
                .iter()
                .zip(ys.qs.iter())
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>();
            sumf += sum_i as f32 * xs.d * ys.d
        }
        sumf
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        let k = xs.len();
        debug_assert!(
            k.is_multiple_of(QK_K),
            "quantize_row_q8k: {k} is not divisible by {QK_K}"
        );
        for (i, y) in ys.iter_mut().enumerate() {
            let mut max = 0f32;
            let mut amax = 0f32;
            let xs = &xs[i * QK_K..(i + 1) * QK_K];
            for &x in xs.iter() {
                if amax < x.abs() {
                    amax = x.abs();
                    max = x;
                }
            }
            if amax == 0f32 {
                y.d = 0f32;
                y.qs.fill(0)
            } else {
                let iscale = -128f32 / max;
                for (j, q) in y.qs.iter_mut().enumerate() {
                    // ggml uses nearest_int with bit magic here, maybe we want the same
                    // but we would have to test and benchmark it.
                    let v = (iscale * xs[j]).round();
                    *q = v.min(127.) as i8
                }
                for j in 0..QK_K / 16 {
                    let mut sum = 0i32;
                    for ii in 0..16 {
                        sum += y.qs[j * 16 + ii] as i32
                    }
                    y.bsums[j] = sum as i16
                }
                y.d = 1.0 / iscale
            }
        }
    }

    fn to_float(xs: &[Self], ys: &mut [f32]) {
        let k = ys.len();
        debug_assert!(
            k.is_multiple_of(QK_K),
            "dequantize_row_q8k: {k} is not divisible by {QK_K}"
        );
        for (i, x) in xs.iter().enumerate() {
            for (j, &q) in x.qs.iter().enumerate() {
                ys[i * QK_K + j] = x.d * q as f32
            }
        }
    }
}

// https://github.com/ggml-org/llama.cpp/blob/aa3ee0eb0b80efca126cedf9bcb4fb5864b46ce3/ggml/src/ggml-cpu/ggml-cpu.c#L1205
pub fn matmul<T: GgmlType>(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs_t: &[T],
    dst: &mut [f32],
) -> Result<()> {
    debug_assert_eq!(
        T::BLCK_SIZE,
        T::VecDotType::BLCK_SIZE,
        "Mismatched block sizes"
    );
    debug_assert_eq!(
        m * k,
        lhs.len(),
        "unexpected lhs length {} ({m},{k},{n})",
        lhs.len()
    );
    let k_in_blocks = k.div_ceil(T::BLCK_SIZE);

    // TODO: Pre-allocate this.
    let mut lhs_b = vec![T::VecDotType::zeros(); m * k_in_blocks];
    // f32, f16, and bf16 support direct copy
    if T::DIRECT_COPY {
        T::VecDotType::direct_copy(lhs, &mut lhs_b);
    } else {
        for row_idx in 0..m {
            let lhs_b_mut = &mut lhs_b[row_idx * k_in_blocks..(row_idx + 1) * k_in_blocks];
            let lhs = &lhs[row_idx * k..(row_idx + 1) * k];
            T::VecDotType::from_float(lhs, lhs_b_mut)
        }
    }

    // aiaas patch: a weight type with panel kernels (Q4_1 and Q8_0 with AVX2) runs every product
    // through them, unless `set_panel_kernels(false)` or `AIAAS_PANEL_KERNELS=off` said
    // otherwise.
    if panel_kernels() {
        assert!(
            dst.len() >= m * n,
            "matmul: {} outputs for {m} x {n}",
            dst.len()
        );
        if T::matmul_panels((m, k, n), rhs_t, &lhs_b, dst) {
            return Ok(());
        }
    }

    // aiaas patch: how many weight rows ahead of its use a weight row is requested from memory
    // where the weights are read once per call (`PREFETCH_BYTES` ahead).
    let weight_rows_ahead =
        PREFETCH_BYTES.div_ceil((k_in_blocks * std::mem::size_of::<T>()).max(1));

    if m == 1 {
        // aiaas patch: each weight row's blocks are requested from memory a few rows before
        // they are used, as one row's dot product is too short for the hardware prefetcher
        // alone to keep up: decoding one sequence streams the whole model from memory once
        // per token.
        let ahead = weight_rows_ahead;
        dst[..n]
            .par_iter_mut()
            .enumerate()
            .with_min_len(128)
            .with_max_len(512)
            .for_each(|(col_idx, dst)| {
                prefetch(rhs_t, (col_idx + ahead) * k_in_blocks, k_in_blocks);
                let rhs_col = &rhs_t[col_idx * k_in_blocks..(col_idx + 1) * k_in_blocks];
                *dst = T::vec_dot(k, rhs_col, &lhs_b);
            });
        return Ok(());
    }

    // aiaas patch: with several rows (a batch of decoding sequences, or a prompt), each weight
    // row is read once per group of input rows and multiplied with every row of the group while
    // it is in cache. Upstream 0.10.2 loops over input rows outside, streaming the whole weight
    // matrix once per row, so a batch of 8 read the weights 8 times. Each task takes a block of
    // weight rows and walks the input in groups small enough to stay in the L1 cache while the
    // block's weight rows meet them (a prompt's input blocks, ~100-260 KB for the demo model,
    // would otherwise come from L2 once per weight row), and writes its results straight into
    // `dst` (its own columns). Every result is computed by the same kernel call as before.
    assert!(
        dst.len() >= m * n,
        "matmul: {} outputs for {m} x {n}",
        dst.len()
    );
    let prepared = T::prepare_rows(k_in_blocks, &lhs_b);
    let row_bytes = (k_in_blocks * std::mem::size_of::<T::VecDotType>()).max(1);
    let group = (L1_INPUT_BYTES / row_bytes / 4 * 4).clamp(4, m.next_multiple_of(4));
    // `prepare_rows` lays its values out per group of four rows.
    let per_quad = if m >= 4 { prepared.len() / (m / 4) } else { 0 };
    let cols = ColumnWriter(dst.as_mut_ptr());
    let blocks_of_cols = n.div_ceil(MATMUL_COLUMN_BLOCK);
    // With one group of input rows (a batch of decoding sequences), each weight row is read
    // once, from memory, as in the one-row path: prefetch it the same way. With several groups
    // (a prompt), the block's weight rows come from L2 after the first group.
    let ahead = if m <= group { weight_rows_ahead } else { 0 };
    (0..blocks_of_cols).into_par_iter().for_each_init(
        || vec![0f32; group],
        |out, block| {
            let cols_of_block =
                block * MATMUL_COLUMN_BLOCK..((block + 1) * MATMUL_COLUMN_BLOCK).min(n);
            for first_row in (0..m).step_by(group) {
                let rows = group.min(m - first_row);
                let ys = &lhs_b[first_row * k_in_blocks..(first_row + rows) * k_in_blocks];
                let quads = first_row / 4..(first_row + rows) / 4;
                let prepared = &prepared[(quads.start * per_quad).min(prepared.len())
                    ..(quads.end * per_quad).min(prepared.len())];
                let out = &mut out[..rows];
                for col_idx in cols_of_block.clone() {
                    if ahead > 0 {
                        prefetch(rhs_t, (col_idx + ahead) * k_in_blocks, k_in_blocks);
                    }
                    let rhs_col = &rhs_t[col_idx * k_in_blocks..(col_idx + 1) * k_in_blocks];
                    T::vec_dot_rows(k, rhs_col, ys, prepared, out);
                    for (row, value) in out.iter().enumerate() {
                        // SAFETY: `(first_row + row) * n + col_idx` is below `m * n <= dst.len()`,
                        // and only the task of this column's block writes this column.
                        unsafe { cols.write((first_row + row) * n + col_idx, *value) };
                    }
                }
            }
        },
    );
    Ok(())
}

/// aiaas patch: `GgmlType::matmul_panels` for Q4_1 weights. Each task takes eight weight rows
/// (a panel) and computes their products with every input row. With fewer than
/// `REPACK_MIN_ROWS` input rows (decoding: each weight row meets a few input rows and comes
/// from memory once), the kernel reads the weight rows where they lie
/// (`avx::gemm_q4_1_q8_1_direct`), requesting the next panel from memory while it computes one;
/// with more (a prompt), each task first repacks its panel (`avx::pack_q4_1_x8`: 320 bytes per
/// block, 5.6 KB for rows of 576 values, in L1), which then serves all the rows
/// (`avx::gemm_q4_1_q8_1`). Both kernels take up to four input rows per pass, with AVX-512 VNNI
/// where `vnni()` says so, and compute each output by the same operations, so which one runs
/// (and which rows share a pass) changes no result. The input rows' block scales are converted
/// to f32 once, before the parallel part. With `interleaved`, `xs` holds the weight rows as
/// `Interleaved<BlockQ4_1>` lays them out (item 11; `n` a multiple of eight), which the direct kernel
/// reads without transposing (`avx::gemm_q4_1x8_q8_1_direct`) and the repacked branch unpacks
/// (`avx::pack_q4_1x8_interleaved`); the results are the same. Interleaved weights take AMX
/// from `AMX_MIN_ROWS` input rows (item 12) and otherwise, where the CPU has AVX-512 VNNI, the
/// same two kernels on 512-bit vectors (item 13, `avx512::matmul_q4_1x16`): the same results.
#[cfg(target_feature = "avx2")]
fn matmul_panels_q4_1(
    (m, k, n): (usize, usize, usize),
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    dst: &mut [f32],
    interleaved: bool,
) {
    use super::avx::{
        gemm_q4_1_q8_1, gemm_q4_1_q8_1_vnni, pack_q4_1_x8, pack_q4_1x8_interleaved,
        PACKED_Q4_1_WORDS,
    };
    assert!(!interleaved || n.is_multiple_of(8));
    // aiaas patch (item 12): several input rows times interleaved weights on AMX where the CPU
    // has it: the same bits.
    #[cfg(target_arch = "x86_64")]
    if interleaved && m >= AMX_MIN_ROWS && super::amx::amx() {
        super::amx::matmul_q4_1x8((m, k, n), xs, ys, dst);
        return;
    }
    let vnni = vnni();
    let blocks = k.div_ceil(QK4_1);
    assert!(xs.len() >= n * blocks && ys.len() >= m * blocks && dst.len() >= m * n);
    let ys_d: Vec<f32> = ys[..m * blocks].iter().map(|y| y.d.to_f32()).collect();
    let ys_s: Vec<f32> = ys[..m * blocks].iter().map(|y| y.s.to_f32()).collect();
    // aiaas patch (item 13): interleaved weights on 512-bit vectors, 16 weight rows per vector,
    // where the CPU has AVX-512 VNNI (and `AIAAS_VNNI` allows it): the same bits.
    #[cfg(target_arch = "x86_64")]
    if interleaved && vnni && super::avx512::avx512() {
        super::avx512::matmul_q4_1x16((m, k, n), xs, ys, &ys_d, &ys_s, dst);
        return;
    }
    if m < REPACK_MIN_ROWS {
        let rows = Q4_1Rows {
            blocks,
            ys,
            ys_d: &ys_d,
            ys_s: &ys_s,
            vnni,
            interleaved,
        };
        direct_panels((m, n, blocks), xs, dst, &rows);
        return;
    }
    let cols = ColumnWriter(dst.as_mut_ptr());
    let write = |first: usize, width: usize, row: usize, values: &[f32; 8]| {
        for (c, value) in values[..width].iter().enumerate() {
            // SAFETY: `row < m` and `first + c < n`, so the index is below `m * n <= dst.len()`,
            // and only the task of this panel writes these columns.
            unsafe { cols.write(row * n + first + c, *value) };
        }
    };
    let panels = n.div_ceil(8);
    (0..panels).into_par_iter().for_each_init(
        || vec![0u32; blocks * PACKED_Q4_1_WORDS],
        |packed, panel| {
            let first = panel * 8;
            let width = 8.min(n - first);
            let panel = &xs[first * blocks..(first + width) * blocks];
            if interleaved {
                pack_q4_1x8_interleaved(panel, blocks, packed);
            } else {
                pack_q4_1_x8(panel, blocks, width, packed);
            }
            let mut row = 0;
            while row < m {
                let range = row * blocks..;
                let (ys, ys_d, ys_s) = (&ys[range.clone()], &ys_d[range.clone()], &ys_s[range]);
                macro_rules! pass {
                    ($r:literal) => {{
                        let out = if vnni {
                            // SAFETY: `vnni()` checked that the CPU has AVX-512 VNNI and VL.
                            unsafe { gemm_q4_1_q8_1_vnni::<$r>(blocks, packed, ys, ys_d, ys_s) }
                        } else {
                            gemm_q4_1_q8_1::<$r, false>(blocks, packed, ys, ys_d, ys_s)
                        };
                        for (r, values) in out.iter().enumerate() {
                            write(first, width, row + r, values);
                        }
                        $r
                    }};
                }
                row += if m - row >= 4 { pass!(4) } else { pass!(1) };
            }
        },
    );
}

/// aiaas patch: a panel kernel that reads its weight rows where they lie, with the input rows
/// it serves: `R` of them, from input row `row`, times a panel of `width` (1..=8) weight rows
/// `xs`; `next` is the next panel, to request from memory meanwhile.
#[cfg(target_feature = "avx2")]
trait DirectPanels: Sync {
    type Weight: Sync;
    fn pass<const R: usize>(
        &self,
        row: usize,
        xs: &[Self::Weight],
        width: usize,
        next: &[Self::Weight],
    ) -> [[f32; 8]; R];
}

/// aiaas patch: the `m` x `n` product of `kernel`'s input rows with the `n` weight rows `xs`
/// (`blocks` blocks each) into `dst`: a task per run of panels of eight weight rows, each panel
/// meeting the input rows up to four at a time. Each panel's first pass requests the next
/// panel from memory.
#[cfg(target_feature = "avx2")]
fn direct_panels<K: DirectPanels>(
    (m, n, blocks): (usize, usize, usize),
    xs: &[K::Weight],
    dst: &mut [f32],
    kernel: &K,
) {
    assert!(xs.len() >= n * blocks && dst.len() >= m * n);
    let cols = ColumnWriter(dst.as_mut_ptr());
    (0..n.div_ceil(8))
        .into_par_iter()
        .with_min_len(16)
        .with_max_len(64)
        .for_each(|panel| {
            let first = panel * 8;
            let width = 8.min(n - first);
            let next = (first + 8) * blocks..(first + 16) * blocks;
            let next = &xs[next.start.min(xs.len())..next.end.min(xs.len())];
            let xs = &xs[first * blocks..(first + width) * blocks];
            let mut row = 0;
            while row < m {
                let next = if row == 0 { next } else { &[] };
                macro_rules! pass {
                    ($r:literal) => {{
                        let out = kernel.pass::<$r>(row, xs, width, next);
                        for (r, values) in out.iter().enumerate() {
                            for (c, value) in values[..width].iter().enumerate() {
                                // SAFETY: `row + r < m` and `first + c < n`, so the index is
                                // below `m * n <= dst.len()`, and only the task of this panel
                                // writes these columns.
                                unsafe { cols.write((row + r) * n + first + c, *value) };
                            }
                        }
                        $r
                    }};
                }
                row += match m - row {
                    1 => pass!(1),
                    2 => pass!(2),
                    3 => pass!(3),
                    _ => pass!(4),
                };
            }
        });
}

/// aiaas patch: Q8_1 input rows for `avx::gemm_q4_1_q8_1_direct`, with their blocks' scales as
/// f32.
#[cfg(target_feature = "avx2")]
struct Q4_1Rows<'a> {
    blocks: usize,
    ys: &'a [BlockQ8_1],
    ys_d: &'a [f32],
    ys_s: &'a [f32],
    vnni: bool,
    /// The weights are laid out as `Interleaved<BlockQ4_1>` (item 11).
    interleaved: bool,
}

#[cfg(target_feature = "avx2")]
impl DirectPanels for Q4_1Rows<'_> {
    type Weight = BlockQ4_1;

    #[inline(always)]
    fn pass<const R: usize>(
        &self,
        row: usize,
        xs: &[BlockQ4_1],
        width: usize,
        next: &[BlockQ4_1],
    ) -> [[f32; 8]; R] {
        use super::avx::{
            gemm_q4_1_q8_1_direct, gemm_q4_1_q8_1_direct_vnni, gemm_q4_1x8_q8_1_direct,
            gemm_q4_1x8_q8_1_direct_vnni,
        };
        let at = row * self.blocks..;
        let (ys, ys_d, ys_s) = (&self.ys[at.clone()], &self.ys_d[at.clone()], &self.ys_s[at]);
        if self.interleaved {
            debug_assert_eq!(width, 8);
            if self.vnni {
                // SAFETY: `vnni()` checked that the CPU has AVX-512 VNNI and VL.
                unsafe { gemm_q4_1x8_q8_1_direct_vnni::<R>(self.blocks, xs, ys, ys_d, ys_s, next) }
            } else {
                gemm_q4_1x8_q8_1_direct::<R, false>(self.blocks, xs, ys, ys_d, ys_s, next)
            }
        } else if self.vnni {
            // SAFETY: `vnni()` checked that the CPU has AVX-512 VNNI and VL.
            unsafe { gemm_q4_1_q8_1_direct_vnni::<R>(self.blocks, xs, width, ys, ys_d, ys_s, next) }
        } else {
            gemm_q4_1_q8_1_direct::<R, false>(self.blocks, xs, width, ys, ys_d, ys_s, next)
        }
    }
}

/// aiaas patch: Q8_0 input rows for `avx::gemm_q8_0_q8_0_direct`, with their blocks' scales as
/// f32 and 128 times the sums of their blocks' values.
#[cfg(target_feature = "avx2")]
struct Q8_0Rows<'a> {
    blocks: usize,
    ys: &'a [BlockQ8_0],
    ys_d: &'a [f32],
    ys_bias: &'a [i32],
    vnni: bool,
    /// The weights are laid out as `Interleaved<BlockQ8_0>` (item 14).
    interleaved: bool,
}

#[cfg(target_feature = "avx2")]
impl DirectPanels for Q8_0Rows<'_> {
    type Weight = BlockQ8_0;

    #[inline(always)]
    fn pass<const R: usize>(
        &self,
        row: usize,
        xs: &[BlockQ8_0],
        width: usize,
        next: &[BlockQ8_0],
    ) -> [[f32; 8]; R] {
        use super::avx::{
            gemm_q8_0_q8_0_direct, gemm_q8_0_q8_0_direct_vnni, gemm_q8_0x8_q8_0_direct,
            gemm_q8_0x8_q8_0_direct_vnni,
        };
        let at = row * self.blocks..;
        let (ys, ys_d, bias) = (&self.ys[at.clone()], &self.ys_d[at.clone()], &self.ys_bias[at]);
        if self.interleaved {
            debug_assert_eq!(width, 8);
            if self.vnni {
                // SAFETY: `vnni()` checked that the CPU has AVX-512 VNNI and VL.
                unsafe { gemm_q8_0x8_q8_0_direct_vnni::<R>(self.blocks, xs, ys, ys_d, bias, next) }
            } else {
                gemm_q8_0x8_q8_0_direct::<R, false>(self.blocks, xs, ys, ys_d, bias, next)
            }
        } else if self.vnni {
            // SAFETY: `vnni()` checked that the CPU has AVX-512 VNNI and VL.
            unsafe { gemm_q8_0_q8_0_direct_vnni::<R>(self.blocks, xs, width, ys, ys_d, bias, next) }
        } else {
            gemm_q8_0_q8_0_direct::<R, false>(self.blocks, xs, width, ys, ys_d, bias, next)
        }
    }
}

/// aiaas patch: `GgmlType::matmul_panels` for Q8_0 weights (in the demo model, the output
/// layer: 49,152 rows of 576 values, 30 MB, read once per decoding step): every product through
/// `avx::gemm_q8_0_q8_0_direct`, eight weight rows per panel, up to four input rows per pass,
/// with AVX-512 VNNI where `vnni()` says so. The output layer meets one input row per sequence
/// (the last position of a prompt), so there is no repacked variant.
#[cfg(target_feature = "avx2")]
fn matmul_panels_q8_0(
    (m, k, n): (usize, usize, usize),
    xs: &[BlockQ8_0],
    ys: &[BlockQ8_0],
    dst: &mut [f32],
    interleaved: bool,
) {
    assert!(!interleaved || n.is_multiple_of(8));
    let blocks = k.div_ceil(QK8_0);
    assert!(ys.len() >= m * blocks);
    let ys = &ys[..m * blocks];
    let ys_d: Vec<f32> = ys.iter().map(|y| y.d.to_f32()).collect();
    let ys_bias: Vec<i32> = ys
        .iter()
        .map(|y| 128 * y.qs.iter().map(|&q| i32::from(q)).sum::<i32>())
        .collect();
    let vnni = vnni();
    // aiaas patch (item 14): interleaved weights on 512-bit vectors, 16 weight rows per vector,
    // where the CPU has AVX-512 VNNI (and `AIAAS_VNNI` allows it): the same bits.
    #[cfg(target_arch = "x86_64")]
    if interleaved && vnni && super::avx512::avx512() {
        super::avx512::matmul_q8_0x16((m, k, n), xs, ys, &ys_d, &ys_bias, dst);
        return;
    }
    let rows = Q8_0Rows {
        blocks,
        ys,
        ys_d: &ys_d,
        ys_bias: &ys_bias,
        vnni,
        interleaved,
    };
    direct_panels((m, n, blocks), xs, dst, &rows);
}

/// aiaas patch: the fewest input rows for which `matmul_panels_q4_1` repacks its panels of
/// weight rows rather than reading them where they lie. `aiaas-qmatmul --fused --prompt
/// --layers 30`, with AVX-512 VNNI (2026-11-30, two runs, µs per row and layer, direct /
/// repacked): 8 rows 33-34 / 50-55, 16 rows 33-36 / 37-42, 32 rows 28-30 / 31-35, 64 rows
/// 26-31 / 25, 150 rows 26 / 22. Without VNNI the crossing is about the same (16 rows 42-44 /
/// 43-46, 32 rows 34-37 / 35-38, 64 rows 32-33 / 30-33).
#[cfg(target_feature = "avx2")]
const REPACK_MIN_ROWS: usize = 48;

/// aiaas patch (item 12): the fewest input rows that `Interleaved<BlockQ4_1>` products quantize in
/// parallel.
#[cfg(target_feature = "avx2")]
const PARALLEL_QUANTIZE_MIN_ROWS: usize = 16;

/// aiaas patch (items 11 and 14): weight rows (`rows`, a multiple of eight, of `blocks` blocks)
/// stored interleaved by panels of eight, for the panel kernels: panel after panel, and within a
/// panel block column after block column, each in the room of eight blocks, as the block type
/// lays it out (`InterleavedBlock`). Q4_1 (item 11, `avx::INTERLEAVED_Q4_1_BYTES`): the eight
/// rows' `d`, their `m`, then four words of 32 bytes, word `g` holding bytes `4g..4g + 4` of
/// each row's values. Q8_0 (item 14, `avx::INTERLEAVED_Q8_0_BYTES`): the eight rows' `d`, then
/// eight words of 32 bytes, word `g` holding values `4g..4g + 4` of each row. The direct kernels
/// then load what they used to assemble from eight rows with shuffles (most of their
/// instructions at one input row), and the memory is the same. `dtype()` stays the block
/// type's; `as_ptr` / `QTensor::data` give the interleaved bytes, so such a tensor is for the
/// CPU matmul (see `interleave_panels`); `dequantize` gives the weights.
#[cfg(target_feature = "avx2")]
pub(crate) struct Interleaved<T> {
    slots: Vec<T>,
    rows: usize,
    blocks: usize,
}

/// aiaas patch (items 11 and 14): a block type whose weight rows `Interleaved` stores: where the
/// block of row `j` of a panel goes in the room of eight blocks of a block column, and how
/// interleaved weights meet f32 input rows.
#[cfg(target_feature = "avx2")]
pub(crate) trait InterleavedBlock: GgmlType + 'static {
    /// The environment variable that, `off`, keeps such weights as stored.
    const SWITCH: &'static str;
    /// Writes `x`, the block of row `j` (`0..8`), to its places in `column`.
    fn place(x: &Self, j: usize, column: &mut [u8]);
    /// Reads the block of row `j` back from `column`.
    fn take(column: &[u8], j: usize) -> Self;
    /// The `m` x `n` product of the f32 rows `lhs` (`k` values each) with the `n` interleaved
    /// weight rows `xs` into `dst`.
    fn matmul_interleaved(mkn: (usize, usize, usize), xs: &[Self], lhs: &[f32], dst: &mut [f32]);
    /// Matrices of this type interleaved so far in this process (`interleave_panels`).
    fn interleaved() -> &'static std::sync::atomic::AtomicUsize;
}

#[cfg(target_feature = "avx2")]
impl InterleavedBlock for BlockQ4_1 {
    const SWITCH: &'static str = "AIAAS_INTERLEAVED_Q4_1";

    fn place(x: &Self, j: usize, column: &mut [u8]) {
        column[2 * j..2 * j + 2].copy_from_slice(&x.d.to_bits().to_le_bytes());
        column[16 + 2 * j..18 + 2 * j].copy_from_slice(&x.m.to_bits().to_le_bytes());
        for g in 0..4 {
            let at = 32 + 32 * g + 4 * j;
            column[at..at + 4].copy_from_slice(&x.qs[4 * g..4 * g + 4]);
        }
    }

    fn take(column: &[u8], j: usize) -> Self {
        let mut qs = [0u8; QK4_1 / 2];
        for g in 0..4 {
            let at = 32 + 32 * g + 4 * j;
            qs[4 * g..4 * g + 4].copy_from_slice(&column[at..at + 4]);
        }
        Self {
            d: f16::from_bits(u16::from_le_bytes([column[2 * j], column[2 * j + 1]])),
            m: f16::from_bits(u16::from_le_bytes([column[16 + 2 * j], column[17 + 2 * j]])),
            qs,
        }
    }

    fn matmul_interleaved(
        (m, k, n): (usize, usize, usize),
        xs: &[Self],
        lhs: &[f32],
        dst: &mut [f32],
    ) {
        let blocks = k / QK4_1;
        let mut lhs_b = vec![BlockQ8_1::zeros(); m * blocks];
        // aiaas patch (item 12): a prompt's rows are quantized in parallel (serially, they were
        // a tenth of a 150-row product on AMX); each row's blocks are the same either way.
        if m >= PARALLEL_QUANTIZE_MIN_ROWS {
            lhs.par_chunks_exact(k)
                .zip(lhs_b.par_chunks_exact_mut(blocks))
                .for_each(|(row, out)| BlockQ8_1::from_float(row, out));
        } else {
            for (row, out) in lhs.chunks_exact(k).zip(lhs_b.chunks_exact_mut(blocks)) {
                BlockQ8_1::from_float(row, out);
            }
        }
        matmul_panels_q4_1((m, k, n), xs, &lhs_b, dst, true);
    }

    fn interleaved() -> &'static std::sync::atomic::AtomicUsize {
        &INTERLEAVED_Q4_1
    }
}

#[cfg(target_feature = "avx2")]
impl InterleavedBlock for BlockQ8_0 {
    const SWITCH: &'static str = "AIAAS_INTERLEAVED_Q8_0";

    fn place(x: &Self, j: usize, column: &mut [u8]) {
        column[2 * j..2 * j + 2].copy_from_slice(&x.d.to_bits().to_le_bytes());
        for g in 0..8 {
            let at = 16 + 32 * g + 4 * j;
            for (to, &v) in column[at..at + 4].iter_mut().zip(&x.qs[4 * g..4 * g + 4]) {
                *to = v as u8;
            }
        }
    }

    fn take(column: &[u8], j: usize) -> Self {
        let mut qs = [0i8; QK8_0];
        for g in 0..8 {
            let at = 16 + 32 * g + 4 * j;
            for (to, &v) in qs[4 * g..4 * g + 4].iter_mut().zip(&column[at..at + 4]) {
                *to = v as i8;
            }
        }
        Self {
            d: f16::from_bits(u16::from_le_bytes([column[2 * j], column[2 * j + 1]])),
            qs,
        }
    }

    fn matmul_interleaved(
        (m, k, n): (usize, usize, usize),
        xs: &[Self],
        lhs: &[f32],
        dst: &mut [f32],
    ) {
        let blocks = k / QK8_0;
        let mut lhs_b = vec![BlockQ8_0::zeros(); m * blocks];
        for (row, out) in lhs.chunks_exact(k).zip(lhs_b.chunks_exact_mut(blocks)) {
            BlockQ8_0::from_float(row, out);
        }
        matmul_panels_q8_0((m, k, n), xs, &lhs_b, dst, true);
    }

    fn interleaved() -> &'static std::sync::atomic::AtomicUsize {
        &INTERLEAVED_Q8_0
    }
}

#[cfg(target_feature = "avx2")]
impl<T: InterleavedBlock> Interleaved<T> {
    pub(crate) fn new(plain: &[T], rows: usize, blocks: usize) -> Self {
        assert!(rows.is_multiple_of(8) && plain.len() == rows * blocks);
        let mut slots = plain.to_vec();
        let size = std::mem::size_of::<T>();
        // SAFETY: the block types are `repr(C)` plain data (f16 scales and bytes, no padding),
        // so their slots may be written as bytes; the slice covers exactly the vector's blocks.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(slots.as_mut_ptr() as *mut u8, slots.len() * size)
        };
        for (p, panel) in plain.chunks_exact(8 * blocks).enumerate() {
            for b in 0..blocks {
                let at = (p * blocks + b) * 8 * size;
                let column = &mut bytes[at..at + 8 * size];
                for j in 0..8 {
                    T::place(&panel[j * blocks + b], j, column);
                }
            }
        }
        Self {
            slots,
            rows,
            blocks,
        }
    }

    /// The weight rows as plain blocks.
    pub(crate) fn plain(&self) -> Vec<T> {
        let size = std::mem::size_of::<T>();
        // SAFETY: as in `new`, read only.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.slots.as_ptr() as *const u8, self.slots.len() * size)
        };
        let mut plain = self.slots.clone();
        for (p, panel) in plain.chunks_exact_mut(8 * self.blocks).enumerate() {
            for b in 0..self.blocks {
                let at = (p * self.blocks + b) * 8 * size;
                let column = &bytes[at..at + 8 * size];
                for j in 0..8 {
                    panel[j * self.blocks + b] = T::take(column, j);
                }
            }
        }
        plain
    }
}

#[cfg(target_feature = "avx2")]
impl<T: InterleavedBlock> super::QuantizedType for Interleaved<T> {
    fn dtype(&self) -> GgmlDType {
        T::DTYPE
    }

    fn matmul_t(&self, (m, k, n): (usize, usize, usize), lhs: &[f32], dst: &mut [f32]) -> Result<()> {
        let blocks = k / T::BLCK_SIZE;
        if k != blocks * T::BLCK_SIZE || blocks != self.blocks || n != self.rows || lhs.len() != m * k
        {
            crate::bail!(
                "interleaved {:?} matmul: {m} x {k} times {} x {} weights",
                T::DTYPE,
                self.rows,
                self.blocks * T::BLCK_SIZE
            );
        }
        if dst.len() < m * n {
            crate::bail!("interleaved {:?} matmul: {} outputs for {m} x {n}", T::DTYPE, dst.len());
        }
        T::matmul_interleaved((m, k, n), &self.slots, lhs, dst);
        Ok(())
    }

    fn matmul_t_f16(&self, mkn: (usize, usize, usize), lhs: &[f16], dst: &mut [f16]) -> Result<()> {
        let lhs: Vec<f32> = lhs.iter().map(|x| x.to_f32()).collect();
        let mut out = vec![0f32; mkn.0 * mkn.2];
        self.matmul_t(mkn, &lhs, &mut out)?;
        for (d, o) in dst.iter_mut().zip(out) {
            *d = f16::from_f32(o);
        }
        Ok(())
    }

    fn dequantize(&self, elem_count: usize) -> Result<super::CpuStorage> {
        let mut ys = vec![0f32; elem_count];
        T::to_float(&self.plain(), &mut ys);
        Ok(super::CpuStorage::F32(ys))
    }

    fn storage_size_in_bytes(&self) -> usize {
        std::mem::size_of_val(self.slots.as_slice())
    }

    fn as_ptr(&self) -> *const u8 {
        self.slots.as_ptr() as *const u8
    }

    fn block_size(&self) -> usize {
        T::BLCK_SIZE
    }

    fn from_float(&mut self, xs: &[f32]) {
        let mut plain = self.plain();
        T::from_float(xs, &mut plain);
        *self = Self::new(&plain, self.rows, self.blocks);
    }

    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        let mut plain = self.plain();
        T::from_float_imatrix(xs, &mut plain, imatrix_weights, n_per_row);
        *self = Self::new(&plain, self.rows, self.blocks);
    }

    fn size(&self) -> usize {
        self.storage_size_in_bytes()
    }
}

/// aiaas patch (item 11): Q4_1 weights interleaved so far (`interleave_panels`), for tests.
static INTERLEAVED_Q4_1: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// aiaas patch (item 14): Q8_0 weights interleaved so far (`interleave_panels`), for tests.
static INTERLEAVED_Q8_0: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// aiaas patch (item 11): how many Q4_1 weight matrices `interleave_panels` has interleaved in
/// this process.
pub fn interleaved_q4_1_count() -> usize {
    INTERLEAVED_Q4_1.load(std::sync::atomic::Ordering::Relaxed)
}

/// aiaas patch (item 14): how many Q8_0 weight matrices `interleave_panels` has interleaved in
/// this process.
pub fn interleaved_q8_0_count() -> usize {
    INTERLEAVED_Q8_0.load(std::sync::atomic::Ordering::Relaxed)
}

/// aiaas patch (items 11 and 14): `w` with its rows stored as `Interleaved` where that applies
/// (Q4_1 or Q8_0 on the CPU, built with AVX2, rows a multiple of eight, panel kernels on, and not
/// `AIAAS_INTERLEAVED_Q4_1=off` / `AIAAS_INTERLEAVED_Q8_0=off` in the environment); otherwise
/// `w` as it is. For weights used only by the CPU matmul: the products are the same to the bit,
/// but the tensor's raw bytes (`QTensor::data`) are the interleaved ones.
pub fn interleave_panels(w: super::QTensor) -> Result<super::QTensor> {
    #[cfg(target_feature = "avx2")]
    return match w.dtype() {
        GgmlDType::Q4_1 => interleave::<BlockQ4_1>(w),
        GgmlDType::Q8_0 => interleave::<BlockQ8_0>(w),
        _ => Ok(w),
    };
    #[cfg(not(target_feature = "avx2"))]
    Ok(w)
}

#[cfg(target_feature = "avx2")]
fn interleave<T: InterleavedBlock>(w: super::QTensor) -> Result<super::QTensor> {
    let dims = w.shape().dims().to_vec();
    let (Some(&k), true) = (dims.last(), dims.len() >= 2) else {
        return Ok(w);
    };
    let rows = w.shape().elem_count() / k.max(1);
    let applies = w.device().is_cpu()
        && k.is_multiple_of(T::BLCK_SIZE)
        && rows.is_multiple_of(8)
        && rows > 0
        && panel_kernels()
        && !matches!(std::env::var(T::SWITCH).as_deref(), Ok("off"));
    if !applies {
        return Ok(w);
    }
    let blocks = k / T::BLCK_SIZE;
    let bytes = w.data()?;
    if bytes.len() != rows * blocks * std::mem::size_of::<T>() {
        return Ok(w);
    }
    let mut plain = vec![T::zeros(); rows * blocks];
    // SAFETY: the block types are `repr(C)` plain data and `plain` has room for exactly
    // `bytes.len()` bytes (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), plain.as_mut_ptr() as *mut u8, bytes.len())
    };
    drop(bytes);
    let shape = w.shape().clone();
    drop(w);
    let storage = super::QStorage::Cpu(Box::new(Interleaved::new(&plain, rows, blocks)));
    T::interleaved().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    super::QTensor::new(storage, shape)
}

/// aiaas patch: whether `matmul` runs through the panel kernels (`GgmlType::matmul_panels`):
/// 0 not read yet, 1 on, 2 off. On unless `AIAAS_PANEL_KERNELS=off` is in the environment.
static PANEL_KERNELS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// aiaas patch: turns the panel kernels on or off (for side-by-side measurements and tests),
/// whatever the environment says. Off, Q4_1 and Q8_0 products take the row kernels
/// (`vec_dot`, `vec_dot_rows`).
pub fn set_panel_kernels(on: bool) {
    PANEL_KERNELS.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

fn panel_kernels() -> bool {
    switch_on(&PANEL_KERNELS, "AIAAS_PANEL_KERNELS")
}

/// aiaas patch: reads a process-wide switch (`state`: 0 not read yet, 1 on, 2 off): on unless
/// the environment variable `var` is `off`, read the first time; a concurrent setter (which
/// stores 1 or 2) wins over the environment.
pub(crate) fn switch_on(state: &std::sync::atomic::AtomicU8, var: &str) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match state.load(Relaxed) {
        0 => {
            let on = !matches!(std::env::var(var).as_deref(), Ok("off"));
            let _ = state.compare_exchange(0, if on { 1 } else { 2 }, Relaxed, Relaxed);
            state.load(Relaxed) == 1
        }
        on => on == 1,
    }
}

/// aiaas patch (item 12): the fewest input rows for which a product with interleaved Q4_1
/// weights runs on AMX (where `amx()`) rather than on the panel kernels. `aiaas-qmatmul --fused
/// --layers 30 --panels interleaved,amx` (Intel Xeon, AMX and AVX-512, 2026-11-30), ms per
/// layer: 8 rows 0.44 / 0.49, 16 rows 0.89 / 0.63, 32 rows 1.82 / 0.90, 48 rows 2.30 / 1.31.
/// Below 16 rows a tile carries padding and the tile unit's fixed cost per block (loads, product
/// and store, one after another) outweighs the vector kernels' work.
pub const AMX_MIN_ROWS: usize = 16;

/// aiaas patch (item 12): lets products of several input rows with interleaved Q4_1 weights
/// run on Intel AMX where the CPU and OS offer it (`true`, the default) or not (for side-by-side
/// measurements and tests), whatever `AIAAS_AMX` says. Either way each output is the same to
/// the bit.
pub fn set_amx(on: bool) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    super::amx::set_amx(on);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    let _ = on;
}

/// aiaas patch (item 12): whether such products run on AMX: `amx_supported()`, and `set_amx` /
/// `AIAAS_AMX` (not `off`) allow it.
pub fn amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::amx::amx();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    false
}

/// aiaas patch (item 12): whether this process can use AMX: the CPU has AMX-TILE, AMX-INT8 and
/// AVX-512 (F, BW, VL), Linux granted the tile state, and a first tile product came out right.
pub fn amx_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::amx::supported();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    false
}

/// aiaas patch (item 12): how many products have run on AMX in this process (for tests).
pub fn amx_products() -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::amx::products();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    0
}

/// aiaas patch (item 13): lets products with interleaved Q4_1 weights take the 512-bit kernels
/// where the CPU has AVX-512 VNNI (`true`, the default) or keep the 256-bit panel kernels (for
/// side-by-side measurements and tests), whatever `AIAAS_AVX512` says. Either way each output
/// is the same to the bit.
pub fn set_avx512(on: bool) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    super::avx512::set_avx512(on);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    let _ = on;
}

/// aiaas patch (item 13): whether products with interleaved Q4_1 weights run on the 512-bit
/// kernels (those AMX does not take): `avx512_supported()`, `vnni()`, and `set_avx512` /
/// `AIAAS_AVX512` (not `off`) allow it.
pub fn avx512() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::avx512::avx512() && vnni();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    false
}

/// aiaas patch (item 13): whether the CPU has what the 512-bit kernels use: AVX-512 F, BW, VL
/// and VNNI.
pub fn avx512_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::avx512::supported();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    false
}

/// aiaas patch (item 13): how many products have run on the 512-bit kernels in this process
/// (for tests).
pub fn avx512_products() -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return super::avx512::products();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    0
}

/// aiaas patch: whether the panel kernels use AVX-512 VNNI where the CPU has it: 0 not read
/// yet, 1 on, 2 off. On unless `AIAAS_VNNI=off` is in the environment. Either way each output
/// is the same to the bit (the integer sums are exact).
static VNNI: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// aiaas patch: lets the panel kernels use AVX-512 VNNI where the CPU has it (`true`, the
/// default) or not (for side-by-side measurements and tests), whatever the environment says.
pub fn set_vnni(on: bool) {
    VNNI.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

/// aiaas patch: whether the panel kernels run with AVX-512 VNNI: the CPU has it (`avx512vnni`
/// and `avx512vl`) and `set_vnni` / `AIAAS_VNNI` allow it.
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    let has = std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl");
    #[cfg(not(target_arch = "x86_64"))]
    let has = false;
    has && switch_on(&VNNI, "AIAAS_VNNI")
}

/// aiaas patch: how far ahead of its use `matmul` prefetches weight rows (one input row, or one
/// group of them). `aiaas-qmatmul --rows 1 --layers 30` (weights streamed from memory,
/// 2026-11-29): Q4_1 ~300 µs per layer without, ~250 with 4-8 KB ahead; Q8_0 ~430 → ~380.
const PREFETCH_BYTES: usize = 4096;

/// aiaas patch: asks the CPU to start loading `len` blocks of `xs` from `start` into its caches.
#[inline(always)]
fn prefetch<T>(xs: &[T], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if start < xs.len() {
        let bytes = len.min(xs.len() - start) * std::mem::size_of::<T>();
        // SAFETY: every address is within `xs`; a prefetch reads nothing into the program.
        unsafe {
            let base = xs.as_ptr().add(start) as *const i8;
            for offset in (0..bytes).step_by(64) {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    base.add(offset),
                );
            }
        }
    }
}

/// aiaas patch: how many bytes of quantized input rows `matmul` keeps in the L1 cache at once
/// (half of a 32 KB L1 data cache, the smallest in common use; the rest holds the weight rows).
const L1_INPUT_BYTES: usize = 16 * 1024;

/// aiaas patch: how many weight rows one task of `matmul` takes (all input rows meet a block of
/// them group by group; the block's weight rows stay in L2 between groups).
const MATMUL_COLUMN_BLOCK: usize = 16;

/// aiaas patch: `dst` of `matmul`, written from its tasks, each to its own columns.
struct ColumnWriter(*mut f32);
// SAFETY: the tasks write disjoint elements (each its own columns) and nothing reads `dst`
// until they have all finished.
unsafe impl Sync for ColumnWriter {}
impl ColumnWriter {
    /// # Safety
    /// `index` is within the destination and no other thread accesses it meanwhile.
    unsafe fn write(&self, index: usize, value: f32) {
        *self.0.add(index) = value;
    }
}

pub fn matmul_f16<T: GgmlType>(
    mkn: (usize, usize, usize),
    lhs: &[f16],
    rhs_t: &[T],
    dst: &mut [f16],
) -> Result<()> {
    let (m, k, n) = mkn;
    if m * k != lhs.len() {
        crate::bail!("unexpected lhs length {} {mkn:?}", lhs.len());
    }

    let k_in_lhs_blocks = k.div_ceil(T::BLCK_SIZE);
    let k_in_rhs_blocks = k.div_ceil(T::VecDotType::BLCK_SIZE);
    let mut lhs_b = vec![T::VecDotType::zeros(); m * k_in_lhs_blocks];
    for row_idx in 0..m {
        let lhs_b = &mut lhs_b[row_idx * k_in_lhs_blocks..(row_idx + 1) * k_in_lhs_blocks];
        let lhs = &lhs[row_idx * k..(row_idx + 1) * k];
        let lhs_f32: Vec<_> = lhs.iter().map(|&x| x.to_f32()).collect();
        T::VecDotType::from_float(&lhs_f32, lhs_b);
    }
    let lhs_b = lhs_b.as_slice();

    for row_idx in 0..m {
        let lhs_row = &lhs_b[row_idx * k_in_lhs_blocks..(row_idx + 1) * k_in_lhs_blocks];
        let dst_row = &mut dst[row_idx * n..(row_idx + 1) * n];

        for (col_idx, dst) in dst_row.iter_mut().enumerate() {
            let rhs_col = &rhs_t[col_idx * k_in_rhs_blocks..(col_idx + 1) * k_in_rhs_blocks];
            let value = T::vec_dot(k, rhs_col, lhs_row);
            *dst = f16::from_f32(value);
        }
    }
    Ok(())
}

impl GgmlType for f32 {
    const DTYPE: GgmlDType = GgmlDType::F32;
    const BLCK_SIZE: usize = 1;
    const DIRECT_COPY: bool = true;
    type VecDotType = f32;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(xs.len() >= n, "size mismatch xs {} < {n}", xs.len());
        debug_assert!(ys.len() >= n, "size mismatch ys {} < {n}", ys.len());
        let mut res = 0f32;
        unsafe { crate::cpu::vec_dot_f32(xs.as_ptr(), ys.as_ptr(), &mut res, n) };
        res
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        ys.copy_from_slice(xs);
    }

    fn to_float(xs: &[Self], ys: &mut [f32]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        ys.copy_from_slice(xs);
    }

    fn direct_copy(xs: &[f32], ys: &mut [Self]) {
        Self::from_float(xs, ys)
    }
}

impl GgmlType for f16 {
    const DTYPE: GgmlDType = GgmlDType::F16;
    const BLCK_SIZE: usize = 1;
    const DIRECT_COPY: bool = true;
    type VecDotType = f16;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(xs.len() >= n, "size mismatch xs {} < {n}", xs.len());
        debug_assert!(ys.len() >= n, "size mismatch ys {} < {n}", ys.len());
        let mut res = 0f32;
        unsafe { crate::cpu::vec_dot_f16(xs.as_ptr(), ys.as_ptr(), &mut res, n) };
        res
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        ys.convert_from_f32_slice(xs);
    }

    fn to_float(xs: &[Self], ys: &mut [f32]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        xs.convert_to_f32_slice(ys);
    }

    fn direct_copy(xs: &[f32], ys: &mut [Self]) {
        Self::from_float(xs, ys)
    }
}

impl GgmlType for bf16 {
    const DTYPE: GgmlDType = GgmlDType::BF16;
    const BLCK_SIZE: usize = 1;
    const DIRECT_COPY: bool = true;
    type VecDotType = bf16;

    fn vec_dot(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        Self::vec_dot_unopt(n, xs, ys)
    }

    fn vec_dot_unopt(n: usize, xs: &[Self], ys: &[Self::VecDotType]) -> f32 {
        debug_assert!(xs.len() >= n, "size mismatch xs {} < {n}", xs.len());
        debug_assert!(ys.len() >= n, "size mismatch ys {} < {n}", ys.len());
        let mut res = 0f32;
        unsafe { crate::cpu::vec_dot_bf16(xs.as_ptr(), ys.as_ptr(), &mut res, n) };
        res
    }

    fn from_float(xs: &[f32], ys: &mut [Self]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        ys.convert_from_f32_slice(xs);
    }

    fn to_float(xs: &[Self], ys: &mut [f32]) {
        debug_assert_eq!(
            xs.len(),
            ys.len(),
            "size mismatch xs {} != ys {}",
            xs.len(),
            ys.len()
        );
        xs.convert_to_f32_slice(ys);
    }

    fn direct_copy(xs: &[f32], ys: &mut [Self]) {
        Self::from_float(xs, ys)
    }
}

macro_rules! verify_block_size {
    ( $block_type:ident ) => {
        const _: () =
            assert!($block_type::BLCK_SIZE == <$block_type as GgmlType>::VecDotType::BLCK_SIZE);
    };
}

macro_rules! verify_block_sizes {
    ( $( $block_type:ident ),* ) => {
        $(
            verify_block_size!($block_type);
        )*
    };
}

verify_block_sizes!(
    BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, BlockQ2K, BlockQ3K, BlockQ4K,
    BlockQ5K, BlockQ6K, BlockQ8K, f32, f16, bf16
);
