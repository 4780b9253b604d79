use super::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, QK8_0, QK8_1, QK_K,
};
use byteorder::{ByteOrder, LittleEndian};
use half::f16;

#[cfg(target_arch = "x86")]
use core::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// aiaas patch: `k_quants::quantize_block_q8` eight lanes at a time. Every step computes what
/// the scalar loop computes: the same maximum (a NaN input is skipped, as `f32::max` skips
/// it), the same products `x * (1 / d)`, rounding half away from zero (`f32::round`: truncate,
/// then step away from zero when the dropped fraction is at least one half), NaN to 0 and
/// saturation to `i8` (as `as i8` does), so the blocks are the same to the bit.
#[inline(always)]
pub(crate) fn quantize_block_q8(xs: &[f32], qs: &mut [i8; 32]) -> (f32, i32) {
    assert_eq!(xs.len(), 32);
    // SAFETY: `xs` holds 32 floats (four loads of eight) and `qs` 32 bytes (one store); AVX2
    // is enabled at compile time.
    unsafe {
        let v = load_block(xs.as_ptr());
        let amax = block_abs_max(v);
        let m = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let d = _mm_cvtss_f32(m) / ((1 << 7) - 1) as f32;
        let id = _mm256_set1_ps(if d != 0f32 { 1. / d } else { 0. });
        let total = round_block(v, id, qs);
        let total = _mm_add_epi32(
            _mm256_extracti128_si256(total, 1),
            _mm256_castsi256_si128(total),
        );
        let total = _mm_add_epi32(total, _mm_unpackhi_epi64(total, total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0b01));
        (d, _mm_cvtsi128_si32(total))
    }
}

/// aiaas patch: eight consecutive blocks (`xs`: 256 values) quantized at once: block `b`'s
/// values into `qs[b]`, and in lane `b` its scale `d` and the sum of its quantized values. The
/// same bytes and numbers as eight calls of `quantize_block_q8`: the per-block work it does
/// one block at a time (a horizontal maximum, two scalar divisions, a horizontal sum) is done
/// here for the eight blocks in one vector each.
#[inline(always)]
fn quantize_eight_blocks_q8(xs: &[f32], qs: [&mut [i8; 32]; 8]) -> (__m256, __m256i) {
    assert_eq!(xs.len(), 256);
    // SAFETY: `xs` holds 256 floats (eight blocks of four loads), each `qs[b]` 32 bytes (one
    // store); AVX2 is enabled at compile time.
    unsafe {
        let p = xs.as_ptr();
        let mut amax = [_mm256_setzero_ps(); 8];
        for (b, a) in amax.iter_mut().enumerate() {
            *a = block_abs_max(load_block(p.add(32 * b)));
        }
        // No lane of `amax` is NaN, so the order of the maxima does not matter.
        let m = max_of_each(amax);
        let d = _mm256_div_ps(m, _mm256_set1_ps(((1 << 7) - 1) as f32));
        let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(d, _mm256_setzero_ps());
        let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nonzero);
        let mut ids = [0f32; 8];
        _mm256_storeu_ps(ids.as_mut_ptr(), id);
        let mut totals = [_mm256_setzero_si256(); 8];
        for (b, (q, total)) in qs.into_iter().zip(totals.iter_mut()).enumerate() {
            *total = round_block(load_block(p.add(32 * b)), _mm256_set1_ps(ids[b]), q);
        }
        (d, sum_of_each(totals))
    }
}

/// The 32 values of a block.
#[inline(always)]
unsafe fn load_block(p: *const f32) -> [__m256; 4] {
    [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ]
}

/// Lane by lane, the largest `|x|` of a block's four vectors (NaN skipped: `maxps` returns its
/// second operand when either is NaN, and the running maximum starts at 0).
#[inline(always)]
unsafe fn block_abs_max(v: [__m256; 4]) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let mut amax = _mm256_setzero_ps();
    for x in v {
        amax = _mm256_max_ps(_mm256_andnot_ps(sign, x), amax);
    }
    amax
}

/// A block's values times `id`, rounded half away from zero, NaN to 0, saturated to `i8`, into
/// `qs`; returns the quantized values summed lane by lane (eight partial sums).
#[inline(always)]
unsafe fn round_block(v: [__m256; 4], id: __m256, qs: &mut [i8; 32]) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    let mut ints = [_mm256_setzero_si256(); 4];
    for (int, x) in ints.iter_mut().zip(v) {
        let y = _mm256_mul_ps(x, id);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
        let dropped = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
        let away = _mm256_or_ps(one, _mm256_and_ps(sign, y));
        let r = _mm256_add_ps(
            t,
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(dropped, half), away),
        );
        let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
        *int = _mm256_cvttps_epi32(r);
    }
    // The packs work within 128-bit lanes; the permutation restores the order.
    let q = _mm256_packs_epi16(
        _mm256_packs_epi32(ints[0], ints[1]),
        _mm256_packs_epi32(ints[2], ints[3]),
    );
    let q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, q);
    _mm256_add_epi32(
        _mm256_add_epi32(ints[0], ints[1]),
        _mm256_add_epi32(ints[2], ints[3]),
    )
}

/// Lane `b`: the largest of `v[b]`'s eight lanes (none NaN).
#[inline(always)]
unsafe fn max_of_each(v: [__m256; 8]) -> __m256 {
    // Two vectors to one: lanes [a0 | a2, b0 | b2, a1 | a3, b1 | b3] per 128-bit half.
    let pair = |a: __m256, b: __m256| {
        _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b))
    };
    // Four to one: per half, lane j the maximum of vector j's half.
    let quad = |x: __m256, y: __m256| {
        _mm256_max_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    };
    let low = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    let high = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    _mm256_max_ps(
        _mm256_permute2f128_ps::<0x20>(low, high),
        _mm256_permute2f128_ps::<0x31>(low, high),
    )
}

/// Lane `b`: the sum of `v[b]`'s eight lanes.
#[inline(always)]
unsafe fn sum_of_each(v: [__m256i; 8]) -> __m256i {
    let low = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let high = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(low, high),
        _mm256_permute2x128_si256::<0x31>(low, high),
    )
}

/// aiaas patch: `BlockQ8_1::from_float` for the leading multiple of eight blocks of a row,
/// eight blocks at a time (`quantize_eight_blocks_q8`); returns how many blocks it wrote. Each
/// block gets what the one-block loop gives it: `d` as `f16::from_f32(d)` and `s` as
/// `f16::from_f32(sum as f32) * d` (`half` multiplies in f32 and rounds to f16; F16C rounds to
/// nearest even, as `half` does with it).
pub(crate) fn quantize_row_q8_1_x8(xs: &[f32], ys: &mut [BlockQ8_1]) -> usize {
    let mut done = 0;
    for (x, group) in xs.chunks_exact(256).zip(ys.chunks_exact_mut(8)) {
        let group: &mut [BlockQ8_1; 8] = group.try_into().expect("eight blocks");
        let (d, sums) = quantize_eight_blocks_q8(x, group.each_mut().map(|y| &mut y.qs));
        // SAFETY: lane-wise arithmetic on registers; AVX2 and F16C are enabled at compile time.
        let (d, s) = unsafe {
            let d = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d);
            let sum = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_cvtepi32_ps(sums));
            let s = _mm256_mul_ps(_mm256_cvtph_ps(sum), _mm256_cvtph_ps(d));
            (d, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(s))
        };
        let (d, s) = (u16_lanes(d), u16_lanes(s));
        for (y, (d, s)) in group.iter_mut().zip(d.into_iter().zip(s)) {
            y.d = f16::from_bits(d);
            y.s = f16::from_bits(s);
        }
        done += 8;
    }
    done
}

/// aiaas patch: `BlockQ8_0::from_float` for the leading multiple of eight blocks of a row, as
/// `quantize_row_q8_1_x8` (without `s`); returns how many blocks it wrote.
pub(crate) fn quantize_row_q8_0_x8(xs: &[f32], ys: &mut [BlockQ8_0]) -> usize {
    let mut done = 0;
    for (x, group) in xs.chunks_exact(256).zip(ys.chunks_exact_mut(8)) {
        let group: &mut [BlockQ8_0; 8] = group.try_into().expect("eight blocks");
        let (d, _) = quantize_eight_blocks_q8(x, group.each_mut().map(|y| &mut y.qs));
        // SAFETY: as above.
        let d = u16_lanes(unsafe { _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d) });
        for (y, d) in group.iter_mut().zip(d) {
            y.d = f16::from_bits(d);
        }
        done += 8;
    }
    done
}

/// The eight 16-bit lanes of `v`.
#[inline(always)]
fn u16_lanes(v: __m128i) -> [u16; 8] {
    let mut lanes = [0u16; 8];
    // SAFETY: one 16-byte store into `lanes`.
    unsafe { _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, v) };
    lanes
}

#[inline(always)]
pub(crate) unsafe fn sum_i16_pairs_float(x: __m256i) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    let summed_pairs = _mm256_madd_epi16(ones, x);
    _mm256_cvtepi32_ps(summed_pairs)
}

#[inline(always)]
pub(crate) unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    sum_i16_pairs_float(dot)
}

#[inline(always)]
pub(crate) unsafe fn hsum_float_8(x: __m256) -> f32 {
    let res = _mm256_extractf128_ps(x, 1);
    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[inline(always)]
pub(crate) unsafe fn bytes_from_nibbles_32(rsi: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(rsi as *const __m128i);
    let bytes = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4));
    let low_mask = _mm256_set1_epi8(0xF);
    _mm256_and_si256(low_mask, bytes)
}

#[inline(always)]
pub(crate) unsafe fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_us8_pairs_float(ax, sy)
}

#[inline(always)]
pub(crate) fn vec_dot_q4_0_q8_0(n: usize, xs: &[BlockQ4_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q4_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = _mm256_mul_ps(block_scale(&x.d), block_scale(&y.d));
            let bx = bytes_from_nibbles_32(x.qs.as_ptr());
            let off = _mm256_set1_epi8(8);
            let bx = _mm256_sub_epi8(bx, off);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(bx, by);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }
}

// aiaas patch: one f16 scale as f32 in all eight lanes. It is broadcast as an f16 first
// (`vpbroadcastw`, which writes the whole register) and every lane is used: converting it with
// `f16::to_f32`, or into lane 0 only, compiled to `vpinsrw` into whatever register was at hand,
// a false dependency that chained each block to the previous one (see `block_scales`).
#[inline(always)]
unsafe fn block_scale(scale: *const f16) -> __m256 {
    let bits = (scale as *const i16).read_unaligned();
    let s = _mm_cvtph_ps(_mm_set1_epi16(bits));
    _mm256_set_m128(s, s)
}

// aiaas patch: the two f16 scales at the start of a Q4_1 block (`d`, `m`) or a Q8_1 block
// (`d`, `s`) as f32 in lanes 0 and 1 (lanes 2 and 3 zero). One load and one F16C conversion
// into a fresh register: converting each scale on its own (`f16::to_f32`) compiled to
// `vpinsrw` into whatever register was at hand, which here was the running `m * s` sum, so
// every block's scales waited for the previous block's sum.
#[inline(always)]
unsafe fn block_scales(block: *const f16) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128((block as *const i32).read_unaligned()))
}

// aiaas patch: an AVX2 path for Q4_1 x Q8_1 (upstream 0.10.2 has only the scalar loop).
// Each block: x = d_x * q + m with q in 0..=15 (unsigned), y = d_y * q_y (signed), so
// sum(x * y) = d_x * d_y * sum(q * q_y) + m * s_y, where s_y = d_y * sum(q_y) is stored in the
// Q8_1 block. The unsigned x signed byte products fit `maddubs` without saturation (15 * 128 * 2).
// Both products of scales are one multiplication, `[d_x * d_y, m * s_y]`, whose lane 1 is added
// to a running sum of the `m * s_y` terms (each rounded as a scalar product and sum would be).
#[inline(always)]
pub(crate) fn vec_dot_q4_1_q8_1(n: usize, xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_1),
        "vec_dot_q4_1_q8_1: {n} is not divisible by {QK8_1}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut mins = _mm_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let scales = _mm_mul_ps(block_scales(&x.d), block_scales(&y.d));
            mins = _mm_add_ps(mins, scales);
            let d = _mm256_broadcastss_ps(scales);
            let bx = bytes_from_nibbles_32(x.qs.as_ptr());
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = mul_sum_us8_pairs_float(bx, by);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(mins))
    }
}

// aiaas patch: `vec_dot_q4_1_q8_1` of one weight row with four input rows at once. Each weight
// block is loaded, unpacked and its scales converted once for the four rows; the rows' own
// scales come converted to f32 (`scales`: per block the four `d`, then the four `s`, made once
// per matmul by `BlockQ4_1::prepare_rows`), and the four rows' `m * s` terms are added as one
// vector. Every row keeps its own accumulators and performs the same roundings in the same
// order as `vec_dot_q4_1_q8_1` (a product `xd * yd`, a fused multiply-add per block; a product
// `m * s` and a sum per block, unfused), so each result is the same to the bit.
#[inline(always)]
pub(crate) fn vec_dot_q4_1_q8_1_x4(
    n: usize,
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    scales: &[f32],
) -> [f32; 4] {
    debug_assert!(
        n.is_multiple_of(QK8_1),
        "vec_dot_q4_1_q8_1_x4: {n} is not divisible by {QK8_1}"
    );
    let nb = xs.len();
    assert!(ys.len() >= 4 * nb, "vec_dot_q4_1_q8_1_x4: four rows expected");
    assert!(scales.len() >= 8 * nb, "vec_dot_q4_1_q8_1_x4: scales missing");
    let (y0, rest) = ys.split_at(nb);
    let (y1, rest) = rest.split_at(nb);
    let (y2, y3) = rest.split_at(nb);
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = _mm_setzero_ps();
        for (i, (x, sc)) in xs.iter().zip(scales.chunks_exact(8)).enumerate() {
            let dm = block_scales(&x.d);
            let xd = _mm256_broadcastss_ps(dm);
            let xm = _mm_permute_ps::<0b0101_0101>(dm);
            mins = _mm_add_ps(mins, _mm_mul_ps(xm, _mm_loadu_ps(sc.as_ptr().add(4))));
            let bx = bytes_from_nibbles_32(x.qs.as_ptr());
            for (r, y) in [&y0[i], &y1[i], &y2[i], &y3[i]].into_iter().enumerate() {
                let d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&sc[r]));
                let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                let q = mul_sum_us8_pairs_float(bx, by);
                acc[r] = _mm256_fmadd_ps(d, q, acc[r]);
            }
        }
        let mut m = [0f32; 4];
        _mm_storeu_ps(m.as_mut_ptr(), mins);
        [
            hsum_float_8(acc[0]) + m[0],
            hsum_float_8(acc[1]) + m[1],
            hsum_float_8(acc[2]) + m[2],
            hsum_float_8(acc[3]) + m[3],
        ]
    }
}

// aiaas patch: how many u32 words `pack_q4_1_x8` writes per block of eight weight rows: eight
// vectors of 32 bytes (the values), then the eight rows' `d`, then their `m`, as f32.
pub(crate) const PACKED_Q4_1_WORDS: usize = 80;

// aiaas patch: eight Q4_1 weight rows (`rows` of them, `blocks` blocks each, one after another
// in `xs`; missing rows are zeros) repacked for `gemm_q4_1_q8_1`. Per block, vector `g` holds
// the values `4g..4g + 4` of each row (row `j` in bytes `4j..4j + 4`) as bytes 0..=15, so one
// `maddubs` with four input values broadcast to every lane multiplies them with all eight rows.
pub(crate) fn pack_q4_1_x8(xs: &[BlockQ4_1], blocks: usize, rows: usize, out: &mut [u32]) {
    assert!(rows <= 8 && xs.len() >= rows * blocks);
    assert!(out.len() >= blocks * PACKED_Q4_1_WORDS);
    out[..blocks * PACKED_Q4_1_WORDS].fill(0);
    for j in 0..rows {
        for (b, x) in xs[j * blocks..(j + 1) * blocks].iter().enumerate() {
            let mut values = [0u32; 8];
            // SAFETY: AVX2 is enabled (this module is only built with it); `values` is 32 bytes.
            unsafe {
                let v = bytes_from_nibbles_32(x.qs.as_ptr());
                _mm256_storeu_si256(values.as_mut_ptr() as *mut __m256i, v);
            }
            let block = &mut out[b * PACKED_Q4_1_WORDS..(b + 1) * PACKED_Q4_1_WORDS];
            for (g, v) in values.into_iter().enumerate() {
                block[g * 8 + j] = v;
            }
            block[64 + j] = x.d.to_f32().to_bits();
            block[72 + j] = x.m.to_f32().to_bits();
        }
    }
}

/// aiaas patch: the next panel's `bytes` bytes from `next`, requested from memory a share per
/// block column of the current panel (whole cache lines, the same for every block but the last
/// ones), so that they arrive while this panel is computed: one loop of one prefetch per line,
/// without the per-line range check that cost the one-row kernels eight instructions a line
/// (`AIAAS-PATCH.md`, item 16).
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    next: *const i8,
    bytes: usize,
    share: usize,
}

impl Ahead {
    #[inline(always)]
    pub(crate) fn new(next: *const u8, bytes: usize, blocks: usize) -> Self {
        let share = bytes.div_ceil(64).div_ceil(blocks.max(1)) * 64;
        Self { next: next as *const i8, bytes, share }
    }

    /// Requests block column `b`'s share.
    ///
    /// # Safety
    /// `next` must be valid for `bytes` bytes (a prefetch never faults, but the address must
    /// stay within its allocation).
    #[inline(always)]
    pub(crate) unsafe fn block(self, b: usize) {
        let mut at = b * self.share;
        let end = (at + self.share).min(self.bytes);
        while at < end {
            _mm_prefetch::<_MM_HINT_T0>(self.next.add(at));
            at += 64;
        }
    }
}

// aiaas patch: the integer part of the panel kernels: lanes of 32 bits accumulating products
// of four unsigned bytes (weight values, 0..=15) with four signed bytes (input values). With
// `VNNI` (AVX-512 VNNI), one `vpdpbusd` per step into 32-bit lanes; without, one `maddubs`
// into 16-bit pairs per step, which `dot_sums` adds into 32-bit lanes at the end of a block
// (exact: a pair is at most 2 * 15 * 128 = 3,840 in magnitude and a block has eight steps, so
// a 16-bit lane stays within 8 * 3,840). Both give the same integers.
#[inline(always)]
unsafe fn dot_step<const VNNI: bool>(sum: __m256i, w: __m256i, y: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(sum, w, y)
    } else {
        _mm256_add_epi16(sum, _mm256_maddubs_epi16(w, y))
    }
}

#[inline(always)]
unsafe fn dot_sums<const VNNI: bool>(sum: __m256i) -> __m256i {
    if VNNI {
        sum
    } else {
        _mm256_madd_epi16(sum, _mm256_set1_epi16(1))
    }
}

// aiaas patch: `R` input rows (Q8_1, `blocks` blocks each, one after another in `ys`) times the
// eight weight rows `packed` (`pack_q4_1_x8`): `R` vectors of eight results, one lane per weight
// row. Per block and row, the 32 products are summed exactly as integers (each `maddubs` pair is
// at most 2 * 15 * 128 = 3,840 in magnitude, so the eight groups' sum fits an i16), then
// `acc = fma(sum, d_w * d_y, acc)` and `acc = fma(m_w, s_y, acc)`. `ys_d` / `ys_s` are the
// rows' block scales as f32 (row after row). Each result is computed by the same operations
// whatever `R` is and wherever its row and weight row sit, so a row's results do not depend on
// the rows it is multiplied with.
#[inline(always)]
pub(crate) fn gemm_q4_1_q8_1<const R: usize, const VNNI: bool>(
    blocks: usize,
    packed: &[u32],
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
) -> [[f32; 8]; R] {
    assert!(packed.len() >= blocks * PACKED_Q4_1_WORDS);
    assert!(ys.len() >= R * blocks && ys_d.len() >= R * blocks && ys_s.len() >= R * blocks);
    // SAFETY: AVX2 and FMA are enabled (this module is only built with them); every read is
    // within the slices checked above.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let w = packed.as_ptr().add(b * PACKED_Q4_1_WORDS);
            let mut sums = [_mm256_setzero_si256(); R];
            for g in 0..8 {
                let wg = _mm256_loadu_si256(w.add(g * 8) as *const __m256i);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let y = ys.get_unchecked(r * blocks + b).qs.as_ptr().add(4 * g);
                    let y = _mm256_set1_epi32((y as *const i32).read_unaligned());
                    *sum = dot_step::<VNNI>(*sum, wg, y);
                }
            }
            let wd = _mm256_loadu_ps(w.add(64) as *const f32);
            let wm = _mm256_loadu_ps(w.add(72) as *const f32);
            for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
                let q = _mm256_cvtepi32_ps(dot_sums::<VNNI>(sum));
                let d = _mm256_mul_ps(wd, _mm256_set1_ps(*ys_d.get_unchecked(r * blocks + b)));
                *acc = _mm256_fmadd_ps(q, d, *acc);
                let s = _mm256_set1_ps(*ys_s.get_unchecked(r * blocks + b));
                *acc = _mm256_fmadd_ps(wm, s, *acc);
            }
        }
        let mut out = [[0f32; 8]; R];
        for (out, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
        }
        out
    }
}

// aiaas patch: `gemm_q4_1_q8_1` for eight weight rows read where they lie (`xs`: `rows` of
// them, `blocks` blocks each, one after another; rows `rows..8` repeat the last one and their
// lanes are to be ignored), without `pack_q4_1_x8`: for decoding, where each weight row meets
// only a few input rows and comes from memory once. Per block, the eight rows' 16 bytes of
// values are transposed in registers (two rows per vector, then 32-bit and 64-bit interleaves)
// so that vector `g` holds bytes `4g..4g + 4` of each row, whose low nibbles are the values
// `4g..4g + 4` and high nibbles the values `16 + 4g..`: the vectors `pack_q4_1_x8` would have
// written. The rows' `d` and `m` come the same way from their blocks' first four bytes. Then
// every output is computed by the same operations as in `gemm_q4_1_q8_1` (the integer sums of
// a block are exact in any order), so the two kernels give the same results to the bit.
// `next` (the next panel, or nothing) is requested from memory a few cache lines per block:
// requesting it all at once before the loop, or leaving it to the hardware prefetcher, left
// one-row decoding at about half the speed of the row kernel (`aiaas-qmatmul --layers 30`).
#[inline(always)]
pub(crate) fn gemm_q4_1_q8_1_direct<const R: usize, const VNNI: bool>(
    blocks: usize,
    xs: &[BlockQ4_1],
    rows: usize,
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
    next: &[BlockQ4_1],
) -> [[f32; 8]; R] {
    assert!((1..=8).contains(&rows) && xs.len() >= rows * blocks);
    assert!(ys.len() >= R * blocks && ys_d.len() >= R * blocks && ys_s.len() >= R * blocks);
    // SAFETY: AVX2, FMA and F16C are enabled (this module is only built with them); every
    // block read is one of the `rows * blocks` in `xs` (16 bytes from its start or from byte
    // 4, within its 20), and every input read is within the slices checked above.
    unsafe {
        let row: [*const BlockQ4_1; 8] =
            std::array::from_fn(|j| xs.as_ptr().add(j.min(rows - 1) * blocks));
        let nibble = _mm256_set1_epi8(0xF);
        let half = _mm256_set1_epi32(0xFFFF);
        let mut acc = [_mm256_setzero_ps(); R];
        let ahead = Ahead::new(next.as_ptr() as *const u8, std::mem::size_of_val(next), blocks);
        for b in 0..blocks {
            ahead.block(b);
            // Rows `j` and `j + 4`, 16 bytes from byte `at` of block `b`.
            let pair = |j: usize, at: usize| {
                let lo = (row[j].add(b) as *const u8).add(at) as *const __m128i;
                let hi = (row[j + 4].add(b) as *const u8).add(at) as *const __m128i;
                _mm256_loadu2_m128i(hi, lo)
            };
            let v = [pair(0, 4), pair(1, 4), pair(2, 4), pair(3, 4)];
            let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
            let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
            let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
            let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
            let words = [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ];
            let h0 = _mm256_unpacklo_epi32(pair(0, 0), pair(1, 0));
            let h1 = _mm256_unpacklo_epi32(pair(2, 0), pair(3, 0));
            let dm = _mm256_unpacklo_epi64(h0, h1);
            // [d0..d3, m0..m3 | d4..d7, m4..m7] as f16, then [d0..d7 | m0..m7].
            let dm = _mm256_packus_epi32(_mm256_and_si256(dm, half), _mm256_srli_epi32(dm, 16));
            let dm = _mm256_permute4x64_epi64::<0b11_01_10_00>(dm);
            let wd = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
            let wm = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(dm));
            let mut sums = [_mm256_setzero_si256(); R];
            for (g, word) in words.into_iter().enumerate() {
                let low = _mm256_and_si256(word, nibble);
                let high = _mm256_and_si256(_mm256_srli_epi16(word, 4), nibble);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let y = ys.get_unchecked(r * blocks + b).qs.as_ptr();
                    let y_low = _mm256_set1_epi32((y.add(4 * g) as *const i32).read_unaligned());
                    let y_high =
                        _mm256_set1_epi32((y.add(16 + 4 * g) as *const i32).read_unaligned());
                    *sum = dot_step::<VNNI>(*sum, low, y_low);
                    *sum = dot_step::<VNNI>(*sum, high, y_high);
                }
            }
            for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
                let q = _mm256_cvtepi32_ps(dot_sums::<VNNI>(sum));
                let d = _mm256_mul_ps(wd, _mm256_set1_ps(*ys_d.get_unchecked(r * blocks + b)));
                *acc = _mm256_fmadd_ps(q, d, *acc);
                let s = _mm256_set1_ps(*ys_s.get_unchecked(r * blocks + b));
                *acc = _mm256_fmadd_ps(wm, s, *acc);
            }
        }
        let mut out = [[0f32; 8]; R];
        for (out, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
        }
        out
    }
}

// aiaas patch: the panel kernels compiled with AVX-512 VNNI (`vpdpbusd` on 256-bit vectors),
// for CPUs that have it (`k_quants::vnni`).
//
// # Safety
// The CPU supports `avx512vnni` and `avx512vl`.
#[target_feature(enable = "avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm_q4_1_q8_1_vnni<const R: usize>(
    blocks: usize,
    packed: &[u32],
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
) -> [[f32; 8]; R] {
    gemm_q4_1_q8_1::<R, true>(blocks, packed, ys, ys_d, ys_s)
}

// # Safety
// The CPU supports `avx512vnni` and `avx512vl`.
#[target_feature(enable = "avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm_q4_1_q8_1_direct_vnni<const R: usize>(
    blocks: usize,
    xs: &[BlockQ4_1],
    rows: usize,
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
    next: &[BlockQ4_1],
) -> [[f32; 8]; R] {
    gemm_q4_1_q8_1_direct::<R, true>(blocks, xs, rows, ys, ys_d, ys_s, next)
}

// aiaas patch (item 11): the bytes of one block column of an interleaved Q4_1 panel
// (`k_quants::Interleaved<BlockQ4_1>`), the room of eight blocks: the eight rows' `d` as f16, their
// `m`, then four words of 32 bytes, word `g` holding bytes `4g..4g + 4` of each row's values, row
// after row: what `gemm_q4_1_q8_1_direct` builds in registers from eight rows read where they
// lie.
pub(crate) const INTERLEAVED_Q4_1_BYTES: usize = 8 * std::mem::size_of::<BlockQ4_1>();

// aiaas patch (item 11): `gemm_q4_1_q8_1_direct` for an interleaved panel (`xs`: `blocks` block
// columns of `INTERLEAVED_Q4_1_BYTES`, as `8 * blocks` blocks' room): the same operations on
// the same vectors, without the transposition, so the same results to the bit. One 16-byte load
// gives the eight rows' `d`, one their `m`, one 32-byte load a word. `next` as in
// `gemm_q4_1_q8_1_direct`.
#[inline(always)]
pub(crate) fn gemm_q4_1x8_q8_1_direct<const R: usize, const VNNI: bool>(
    blocks: usize,
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
    next: &[BlockQ4_1],
) -> [[f32; 8]; R] {
    assert!(xs.len() >= 8 * blocks);
    assert!(ys.len() >= R * blocks && ys_d.len() >= R * blocks && ys_s.len() >= R * blocks);
    // SAFETY: AVX2, FMA and F16C are enabled (this module is only built with them); every
    // weight read is within the `8 * blocks` blocks' room of `xs`, and every input read is
    // within the slices checked above.
    unsafe {
        let base = xs.as_ptr() as *const u8;
        let nibble = _mm256_set1_epi8(0xF);
        let mut acc = [_mm256_setzero_ps(); R];
        let ahead = Ahead::new(next.as_ptr() as *const u8, std::mem::size_of_val(next), blocks);
        for b in 0..blocks {
            ahead.block(b);
            let column = base.add(b * INTERLEAVED_Q4_1_BYTES);
            let wd = _mm256_cvtph_ps(_mm_loadu_si128(column as *const __m128i));
            let wm = _mm256_cvtph_ps(_mm_loadu_si128(column.add(16) as *const __m128i));
            let mut sums = [_mm256_setzero_si256(); R];
            for g in 0..4 {
                let word = _mm256_loadu_si256(column.add(32 + 32 * g) as *const __m256i);
                let low = _mm256_and_si256(word, nibble);
                let high = _mm256_and_si256(_mm256_srli_epi16(word, 4), nibble);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let y = ys.get_unchecked(r * blocks + b).qs.as_ptr();
                    let y_low = _mm256_set1_epi32((y.add(4 * g) as *const i32).read_unaligned());
                    let y_high =
                        _mm256_set1_epi32((y.add(16 + 4 * g) as *const i32).read_unaligned());
                    *sum = dot_step::<VNNI>(*sum, low, y_low);
                    *sum = dot_step::<VNNI>(*sum, high, y_high);
                }
            }
            for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
                let q = _mm256_cvtepi32_ps(dot_sums::<VNNI>(sum));
                let d = _mm256_mul_ps(wd, _mm256_set1_ps(*ys_d.get_unchecked(r * blocks + b)));
                *acc = _mm256_fmadd_ps(q, d, *acc);
                let s = _mm256_set1_ps(*ys_s.get_unchecked(r * blocks + b));
                *acc = _mm256_fmadd_ps(wm, s, *acc);
            }
        }
        let mut out = [[0f32; 8]; R];
        for (out, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
        }
        out
    }
}

// # Safety
// The CPU supports `avx512vnni` and `avx512vl`.
#[target_feature(enable = "avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm_q4_1x8_q8_1_direct_vnni<const R: usize>(
    blocks: usize,
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
    next: &[BlockQ4_1],
) -> [[f32; 8]; R] {
    gemm_q4_1x8_q8_1_direct::<R, true>(blocks, xs, ys, ys_d, ys_s, next)
}

// aiaas patch (item 11): `pack_q4_1_x8` for an interleaved panel (`xs`, `blocks` block columns):
// the same `PACKED_Q4_1_WORDS` per block (word `g < 4` the low nibbles of the panel's word `g`,
// word `4 + g` its high nibbles, then `d` and `m` as f32), so prompts run the same kernel.
pub(crate) fn pack_q4_1x8_interleaved(xs: &[BlockQ4_1], blocks: usize, out: &mut [u32]) {
    assert!(xs.len() >= 8 * blocks && out.len() >= blocks * PACKED_Q4_1_WORDS);
    // SAFETY: AVX2 and F16C are enabled (this module is only built with them); every read is
    // within the `8 * blocks` blocks' room of `xs`, every write within `out` (checked above).
    unsafe {
        let base = xs.as_ptr() as *const u8;
        let nibble = _mm256_set1_epi8(0xF);
        for b in 0..blocks {
            let column = base.add(b * INTERLEAVED_Q4_1_BYTES);
            let block = out.as_mut_ptr().add(b * PACKED_Q4_1_WORDS);
            for g in 0..4 {
                let word = _mm256_loadu_si256(column.add(32 + 32 * g) as *const __m256i);
                let low = _mm256_and_si256(word, nibble);
                let high = _mm256_and_si256(_mm256_srli_epi16(word, 4), nibble);
                _mm256_storeu_si256(block.add(8 * g) as *mut __m256i, low);
                _mm256_storeu_si256(block.add(8 * (4 + g)) as *mut __m256i, high);
            }
            let wd = _mm256_cvtph_ps(_mm_loadu_si128(column as *const __m128i));
            let wm = _mm256_cvtph_ps(_mm_loadu_si128(column.add(16) as *const __m128i));
            _mm256_storeu_ps(block.add(64) as *mut f32, wd);
            _mm256_storeu_ps(block.add(72) as *mut f32, wm);
        }
    }
}

// aiaas patch: the panel kernel for Q8_0 weights: eight weight rows read where they lie (`xs`:
// `rows` of them, `blocks` blocks each, one after another; rows `rows..8` repeat the last one
// and their lanes are to be ignored) times `R` Q8_0 input rows (`ys`, `blocks` blocks each, one
// after another): `R` vectors of eight results, one lane per weight row. Per block, the eight
// rows' 32 values are transposed in registers (two rows per vector, then 32-bit and 64-bit
// interleaves) so that vector `g` holds values `4g..4g + 4` of each row, which meet the input
// row's values `4g..4g + 4` broadcast to every lane; the 32 products of a block are summed
// exactly as integers, then `acc = fma(sum, d_w * d_y, acc)`, block after block. Each result is
// therefore computed by the same operations whatever `R` is and wherever its row and weight row
// sit. With `VNNI`, `vpdpbusd` multiplies unsigned by signed bytes: the weights go in plus 128
// and `ys_bias` (128 times the sum of each input block's values) comes off the block's sum;
// without, the weights' signs move onto the input values (`|w| * sign(y, w)`, as
// `vec_dot_q8_0_q8_0` does) and each step's 16-bit pairs are widened to 32 bits (a pair can
// reach 2 * 128 * 127). Both give the same integers, given input values within -127..=127,
// which is all `quantize_block_q8` writes. `ys_d` are the input blocks' scales as f32. `next`
// (the next panel, or nothing) is requested from memory a few cache lines per block, as in
// `gemm_q4_1_q8_1_direct`.
#[inline(always)]
pub(crate) fn gemm_q8_0_q8_0_direct<const R: usize, const VNNI: bool>(
    blocks: usize,
    xs: &[BlockQ8_0],
    rows: usize,
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
    next: &[BlockQ8_0],
) -> [[f32; 8]; R] {
    assert!((1..=8).contains(&rows) && xs.len() >= rows * blocks);
    assert!(ys.len() >= R * blocks && ys_d.len() >= R * blocks && ys_bias.len() >= R * blocks);
    // SAFETY: AVX2, FMA and F16C are enabled (this module is only built with them); every
    // block read is one of the `rows * blocks` in `xs` (16 bytes from byte 2 or 18, within its
    // 34), and every input read is within the slices checked above.
    unsafe {
        let row: [*const BlockQ8_0; 8] =
            std::array::from_fn(|j| xs.as_ptr().add(j.min(rows - 1) * blocks));
        let mut acc = [_mm256_setzero_ps(); R];
        let ahead = Ahead::new(next.as_ptr() as *const u8, std::mem::size_of_val(next), blocks);
        for b in 0..blocks {
            ahead.block(b);
            // Rows `j` and `j + 4`, values `at..at + 16` of block `b`.
            let pair = |j: usize, at: usize| {
                let lo = (*row[j].add(b)).qs.as_ptr().add(at) as *const __m128i;
                let hi = (*row[j + 4].add(b)).qs.as_ptr().add(at) as *const __m128i;
                _mm256_loadu2_m128i(hi, lo)
            };
            let mut words = [_mm256_setzero_si256(); 8];
            for (half, words) in words.chunks_exact_mut(4).enumerate() {
                let v = [
                    pair(0, 16 * half),
                    pair(1, 16 * half),
                    pair(2, 16 * half),
                    pair(3, 16 * half),
                ];
                let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
                let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
                let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
                let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
                words[0] = _mm256_unpacklo_epi64(t0, t2);
                words[1] = _mm256_unpackhi_epi64(t0, t2);
                words[2] = _mm256_unpacklo_epi64(t1, t3);
                words[3] = _mm256_unpackhi_epi64(t1, t3);
            }
            let d: [u16; 8] = std::array::from_fn(|j| (*row[j].add(b)).d.to_bits());
            let wd = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr() as *const __m128i));
            q8_0_block::<R, VNNI>(&mut acc, words, wd, b, blocks, ys, ys_d, ys_bias);
        }
        let mut out = [[0f32; 8]; R];
        for (out, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
        }
        out
    }
}

// aiaas patch: one block of the Q8_0 panel kernels for `R` input rows: `words[g]` holds values
// `4g..4g + 4` of each of the eight weight rows, `wd` their scales; per input row the block's
// exact integer sum, then `acc = fma(sum, d_w * d_y, acc)` (see `gemm_q8_0_q8_0_direct`).
//
// # Safety
// AVX2, FMA (and with `VNNI`, AVX-512 VNNI and VL); `ys`, `ys_d` and `ys_bias` hold `R` rows of
// `blocks` blocks and `b < blocks`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn q8_0_block<const R: usize, const VNNI: bool>(
    acc: &mut [__m256; R],
    words: [__m256i; 8],
    wd: __m256,
    b: usize,
    blocks: usize,
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
) {
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut sums = [_mm256_setzero_si256(); R];
    for (g, w) in words.into_iter().enumerate() {
        let unsigned = if VNNI {
            _mm256_xor_si256(w, flip)
        } else {
            _mm256_sign_epi8(w, w)
        };
        for (r, sum) in sums.iter_mut().enumerate() {
            let y = ys.get_unchecked(r * blocks + b).qs.as_ptr().add(4 * g);
            let y = _mm256_set1_epi32((y as *const i32).read_unaligned());
            *sum = if VNNI {
                _mm256_dpbusd_epi32(*sum, unsigned, y)
            } else {
                let pairs = _mm256_maddubs_epi16(unsigned, _mm256_sign_epi8(y, w));
                _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones))
            };
        }
    }
    for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
        let sum = if VNNI {
            _mm256_sub_epi32(sum, _mm256_set1_epi32(*ys_bias.get_unchecked(r * blocks + b)))
        } else {
            sum
        };
        let q = _mm256_cvtepi32_ps(sum);
        let d = _mm256_mul_ps(wd, _mm256_set1_ps(*ys_d.get_unchecked(r * blocks + b)));
        *acc = _mm256_fmadd_ps(q, d, *acc);
    }
}

// # Safety
// The CPU supports `avx512vnni` and `avx512vl`.
#[target_feature(enable = "avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm_q8_0_q8_0_direct_vnni<const R: usize>(
    blocks: usize,
    xs: &[BlockQ8_0],
    rows: usize,
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
    next: &[BlockQ8_0],
) -> [[f32; 8]; R] {
    gemm_q8_0_q8_0_direct::<R, true>(blocks, xs, rows, ys, ys_d, ys_bias, next)
}

// aiaas patch (item 14): the bytes of one block column of an interleaved Q8_0 panel
// (`k_quants::Interleaved<BlockQ8_0>`), the room of eight blocks: the eight rows' `d` as f16,
// then eight words of 32 bytes, word `g` holding values `4g..4g + 4` of each row, row after row:
// what `gemm_q8_0_q8_0_direct` builds in registers from eight rows read where they lie.
pub(crate) const INTERLEAVED_Q8_0_BYTES: usize = 8 * std::mem::size_of::<BlockQ8_0>();

// aiaas patch (item 14): `gemm_q8_0_q8_0_direct` for an interleaved panel (`xs`: `blocks` block
// columns of `INTERLEAVED_Q8_0_BYTES`, as `8 * blocks` blocks' room): one 16-byte load gives the
// eight rows' `d`, one 32-byte load a word, then the same operations on the same vectors
// (`q8_0_block`), so the same results to the bit. `next` as in `gemm_q8_0_q8_0_direct`.
#[inline(always)]
pub(crate) fn gemm_q8_0x8_q8_0_direct<const R: usize, const VNNI: bool>(
    blocks: usize,
    xs: &[BlockQ8_0],
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
    next: &[BlockQ8_0],
) -> [[f32; 8]; R] {
    assert!(xs.len() >= 8 * blocks);
    assert!(ys.len() >= R * blocks && ys_d.len() >= R * blocks && ys_bias.len() >= R * blocks);
    // SAFETY: AVX2, FMA and F16C are enabled (this module is only built with them), and VNNI
    // where `VNNI` (the callers check it); every weight read is within the `8 * blocks` blocks'
    // room of `xs`, and every input read is within the slices checked above.
    unsafe {
        let base = xs.as_ptr() as *const u8;
        let mut acc = [_mm256_setzero_ps(); R];
        let ahead = Ahead::new(next.as_ptr() as *const u8, std::mem::size_of_val(next), blocks);
        for b in 0..blocks {
            ahead.block(b);
            let column = base.add(b * INTERLEAVED_Q8_0_BYTES);
            let wd = _mm256_cvtph_ps(_mm_loadu_si128(column as *const __m128i));
            let words: [__m256i; 8] = std::array::from_fn(|g| {
                _mm256_loadu_si256(column.add(16 + 32 * g) as *const __m256i)
            });
            q8_0_block::<R, VNNI>(&mut acc, words, wd, b, blocks, ys, ys_d, ys_bias);
        }
        let mut out = [[0f32; 8]; R];
        for (out, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
        }
        out
    }
}

// # Safety
// The CPU supports `avx512vnni` and `avx512vl`.
#[target_feature(enable = "avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm_q8_0x8_q8_0_direct_vnni<const R: usize>(
    blocks: usize,
    xs: &[BlockQ8_0],
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
    next: &[BlockQ8_0],
) -> [[f32; 8]; R] {
    gemm_q8_0x8_q8_0_direct::<R, true>(blocks, xs, ys, ys_d, ys_bias, next)
}

#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0(n: usize, xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = _mm256_mul_ps(block_scale(&x.d), block_scale(&y.d));
            let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(bx, by);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }
}

// aiaas patch: one weight row whose blocks are signed bytes times a scale (`block` gives both:
// Q8_0 as stored, Q4_0 once unpacked) with four Q8_0 input rows at once. Each weight block is
// loaded, its signs taken and its scale converted once for the four rows, whose own scales come
// converted to f32 (`scales`: per block the four `d`, made once per matmul by `prepare_rows`).
// Every row keeps its own accumulator and performs the same roundings in the same order as the
// one-row kernels (`vec_dot_q8_0_q8_0`, `vec_dot_q4_0_q8_0`), so each result is the same to the
// bit.
#[inline(always)]
fn vec_dot_signed_q8_0_x4<X>(
    xs: &[X],
    ys: &[BlockQ8_0],
    scales: &[f32],
    block: impl Fn(&X) -> (__m256, __m256i),
) -> [f32; 4] {
    let nb = xs.len();
    assert!(ys.len() >= 4 * nb, "four rows expected");
    assert!(scales.len() >= 4 * nb, "scales missing");
    let (y0, rest) = ys.split_at(nb);
    let (y1, rest) = rest.split_at(nb);
    let (y2, y3) = rest.split_at(nb);
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, (x, sc)) in xs.iter().zip(scales.chunks_exact(4)).enumerate() {
            let (xd, bx) = block(x);
            let ax = _mm256_sign_epi8(bx, bx);
            for (r, y) in [&y0[i], &y1[i], &y2[i], &y3[i]].into_iter().enumerate() {
                let d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&sc[r]));
                let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                let q = mul_sum_us8_pairs_float(ax, _mm256_sign_epi8(by, bx));
                acc[r] = _mm256_fmadd_ps(d, q, acc[r]);
            }
        }
        [
            hsum_float_8(acc[0]),
            hsum_float_8(acc[1]),
            hsum_float_8(acc[2]),
            hsum_float_8(acc[3]),
        ]
    }
}

// aiaas patch: `vec_dot_q8_0_q8_0` with four input rows at once (see `vec_dot_signed_q8_0_x4`).
#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0_x4(
    n: usize,
    xs: &[BlockQ8_0],
    ys: &[BlockQ8_0],
    scales: &[f32],
) -> [f32; 4] {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0_x4: {n} is not divisible by {QK8_0}"
    );
    vec_dot_signed_q8_0_x4(xs, ys, scales, |x| unsafe {
        (
            block_scale(&x.d),
            _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i),
        )
    })
}

// aiaas patch: `vec_dot_q4_0_q8_0` with four input rows at once (see `vec_dot_signed_q8_0_x4`).
#[inline(always)]
pub(crate) fn vec_dot_q4_0_q8_0_x4(
    n: usize,
    xs: &[BlockQ4_0],
    ys: &[BlockQ8_0],
    scales: &[f32],
) -> [f32; 4] {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q4_0_q8_0_x4: {n} is not divisible by {QK8_0}"
    );
    vec_dot_signed_q8_0_x4(xs, ys, scales, |x| unsafe {
        let bx = bytes_from_nibbles_32(x.qs.as_ptr());
        (
            block_scale(&x.d),
            _mm256_sub_epi8(bx, _mm256_set1_epi8(8)),
        )
    })
}

#[inline(always)]
unsafe fn get_scale_shuffle(i: usize) -> __m128i {
    const K_SHUFFLE: [u8; 128] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7,
        7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10,
        11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13,
        13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15,
    ];
    _mm_loadu_si128((K_SHUFFLE.as_ptr() as *const __m128i).add(i))
}

#[inline(always)]
unsafe fn get_scale_shuffle_k4(i: usize) -> __m256i {
    const K_SHUFFLE: [u8; 256] = [
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
        0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3, 2, 3, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
        4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
        6, 7, 6, 7, 6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
        8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10,
        11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 12, 13, 12, 13, 12, 13,
        12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12,
        13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
        14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
    ];
    _mm256_loadu_si256((K_SHUFFLE.as_ptr() as *const __m256i).add(i))
}

#[inline(always)]
unsafe fn get_scale_shuffle_q3k(i: usize) -> __m256i {
    const K_SHUFFLE: [u8; 128] = [
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
        6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11,
        10, 11, 10, 11, 10, 11, 10, 11, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12,
        13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
    ];
    _mm256_loadu_si256((K_SHUFFLE.as_ptr() as *const __m256i).add(i))
}

#[inline(always)]
pub(crate) fn vec_dot_q6k_q8k(n: usize, xs: &[BlockQ6K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q6k_8k: {n} is not divisible by {QK_K}"
    );

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let m2 = _mm256_set1_epi8(3);
        let m32s = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let mut q4 = x.ql.as_ptr();
            let mut qh = x.qh.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let scales = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 128 {
                let is = j * 4;
                let scale_0 = _mm_shuffle_epi8(scales, get_scale_shuffle(is));
                let scale_1 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 1));
                let scale_2 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 2));
                let scale_3 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 3));

                let q4bits1 = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4bits2 = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4bits_h = _mm256_loadu_si256(qh as *const __m256i);
                qh = qh.add(32);

                let q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m2), 4);
                let q4h_1 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 2), m2), 4);
                let q4h_2 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 4), m2), 4);
                let q4h_3 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 6), m2), 4);

                let q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0);
                let q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1);
                let q4_2 =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), q4h_2);
                let q4_3 =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), q4h_3);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let q8s_0 = _mm256_maddubs_epi16(m32s, q8_0);
                let q8s_1 = _mm256_maddubs_epi16(m32s, q8_1);
                let q8s_2 = _mm256_maddubs_epi16(m32s, q8_2);
                let q8s_3 = _mm256_maddubs_epi16(m32s, q8_3);

                let p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
                let p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
                let p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);

                let p16_0 = _mm256_sub_epi16(p16_0, q8s_0);
                let p16_1 = _mm256_sub_epi16(p16_1, q8s_1);
                let p16_2 = _mm256_sub_epi16(p16_2, q8s_2);
                let p16_3 = _mm256_sub_epi16(p16_3, q8s_3);

                let p16_0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_0), p16_0);
                let p16_1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_1), p16_1);
                let p16_2 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_2), p16_2);
                let p16_3 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_3), p16_3);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
            }
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}

#[inline(always)]
unsafe fn mm256_set_m128i(a: __m128i, b: __m128i) -> __m256i {
    _mm256_insertf128_si256(_mm256_castsi128_si256(b), a, 1)
}

#[inline(always)]
pub(crate) fn vec_dot_q2k_q8k(n: usize, xs: &[BlockQ2K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q2k_q8k: {n} is not divisible by {QK_K}"
    );

    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0xF);

        let mut acc = _mm256_setzero_ps();

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            let mut q2 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
            let scales8 = _mm_and_si128(mins_and_scales, m4);
            let mins8 = _mm_and_si128(_mm_srli_epi16(mins_and_scales, 4), m4);
            let mins = _mm256_cvtepi8_epi16(mins8);
            let prod =
                _mm256_madd_epi16(mins, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));

            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dmin), _mm256_cvtepi32_ps(prod), acc);

            let all_scales = _mm256_cvtepi8_epi16(scales8);
            let l_scales = _mm256_extracti128_si256(all_scales, 0);
            let h_scales = _mm256_extracti128_si256(all_scales, 1);
            let scales = [
                mm256_set_m128i(l_scales, l_scales),
                mm256_set_m128i(h_scales, h_scales),
            ];

            let mut sumi = _mm256_setzero_si256();

            for scale in scales {
                let q2bits = _mm256_loadu_si256(q2 as *const __m256i);
                q2 = q2.add(32);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let q2_0 = _mm256_and_si256(q2bits, m3);
                let q2_1 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 2), m3);
                let q2_2 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 4), m3);
                let q2_3 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 6), m3);

                let p0 = _mm256_maddubs_epi16(q2_0, q8_0);
                let p1 = _mm256_maddubs_epi16(q2_1, q8_1);
                let p2 = _mm256_maddubs_epi16(q2_2, q8_2);
                let p3 = _mm256_maddubs_epi16(q2_3, q8_3);

                let p0 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(0)), p0);
                let p1 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(1)), p1);
                let p2 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(2)), p2);
                let p3 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(3)), p3);

                let p0 = _mm256_add_epi32(p0, p1);
                let p2 = _mm256_add_epi32(p2, p3);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p2));
            }
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }

        hsum_float_8(acc)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q3k_q8k(n: usize, xs: &[BlockQ3K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q3k_q8k: {n} is not divisible by {QK_K}"
    );

    const KMASK1: u32 = 0x03030303;
    const KMASK2: u32 = 0x0f0f0f0f;

    let mut aux = [0u32; 3];

    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let mone = _mm256_set1_epi8(1);
        let m32 = _mm_set1_epi8(32);

        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();

            let mut q3 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            LittleEndian::read_u32_into(&x.scales, &mut aux);
            let scales128 = _mm_set_epi32(
                (((aux[1] >> 4) & KMASK2) | (((aux[2] >> 6) & KMASK1) << 4)) as i32,
                (((aux[0] >> 4) & KMASK2) | (((aux[2] >> 4) & KMASK1) << 4)) as i32,
                ((aux[1] & KMASK2) | (((aux[2] >> 2) & KMASK1) << 4)) as i32,
                ((aux[0] & KMASK2) | (((aux[2]) & KMASK1) << 4)) as i32,
            );
            let scales128 = _mm_sub_epi8(scales128, m32);
            let all_scales = _mm256_cvtepi8_epi16(scales128);
            let l_scales = _mm256_extracti128_si256(all_scales, 0);
            let h_scales = _mm256_extracti128_si256(all_scales, 1);
            let scales = [
                mm256_set_m128i(l_scales, l_scales),
                mm256_set_m128i(h_scales, h_scales),
            ];

            // high bit
            let hbits = _mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i);

            let mut sumi = _mm256_setzero_si256();

            for (j, scale) in scales.iter().enumerate() {
                // load low 2 bits
                let q3bits = _mm256_loadu_si256(q3 as *const __m256i);
                q3 = q3.add(32);

                // Prepare low and high bits
                // We hardcode the shifts here to avoid loading them into a separate register
                let q3l_0 = _mm256_and_si256(q3bits, m3);
                let q3h_0 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 0)), 0)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 4)), 4)
                };
                let q3h_0 = _mm256_slli_epi16(q3h_0, 2);

                let q3l_1 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 2), m3);
                let q3h_1 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 1)), 1)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 5)), 5)
                };
                let q3h_1 = _mm256_slli_epi16(q3h_1, 2);

                let q3l_2 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 4), m3);
                let q3h_2 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 2)), 2)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 6)), 6)
                };
                let q3h_2 = _mm256_slli_epi16(q3h_2, 2);

                let q3l_3 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 6), m3);
                let q3h_3 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 3)), 3)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 7)), 7)
                };
                let q3h_3 = _mm256_slli_epi16(q3h_3, 2);

                // load Q8 quants
                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                // Dot product: we multiply the 2 low bits and 1 high bit part separately, so we
                // can use _mm256_maddubs_epi16, and then subtract. The high bit part has the 2
                // already subtracted (and so, it is zero if the high bit was not set, and 2 if the
                // high bit was set)
                let q8s_0 = _mm256_maddubs_epi16(q3h_0, q8_0);
                let q8s_1 = _mm256_maddubs_epi16(q3h_1, q8_1);
                let q8s_2 = _mm256_maddubs_epi16(q3h_2, q8_2);
                let q8s_3 = _mm256_maddubs_epi16(q3h_3, q8_3);

                let p16_0 = _mm256_maddubs_epi16(q3l_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q3l_1, q8_1);
                let p16_2 = _mm256_maddubs_epi16(q3l_2, q8_2);
                let p16_3 = _mm256_maddubs_epi16(q3l_3, q8_3);

                let p16_0 = _mm256_sub_epi16(p16_0, q8s_0);
                let p16_1 = _mm256_sub_epi16(p16_1, q8s_1);
                let p16_2 = _mm256_sub_epi16(p16_2, q8s_2);
                let p16_3 = _mm256_sub_epi16(p16_3, q8s_3);

                // multiply with scales
                let p16_0 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(0)), p16_0);
                let p16_1 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(1)), p16_1);
                let p16_2 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(2)), p16_2);
                let p16_3 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(3)), p16_3);

                // accumulate
                let p16_0 = _mm256_add_epi32(p16_0, p16_1);
                let p16_2 = _mm256_add_epi32(p16_2, p16_3);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_2));
            }

            // multiply with block scale and accumulate
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q4k_q8k(n: usize, xs: &[BlockQ4K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q4k_q8k: {n} is not divisible by {QK_K}"
    );
    let mut utmp = [0u32; 4];
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);

        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            let mut q4 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                utmp[3] as i32,
                utmp[2] as i32,
                utmp[1] as i32,
                utmp[0] as i32,
            ));

            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

            let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
            let scales = mm256_set_m128i(sc128, sc128);

            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 64 {
                let scale_l = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_h = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));

                let q4bits = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);

                let q8l = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let p16l = _mm256_maddubs_epi16(q4l, q8l);
                let p16l = _mm256_madd_epi16(scale_l, p16l);
                sumi = _mm256_add_epi32(sumi, p16l);

                let q8h = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let p16h = _mm256_maddubs_epi16(q4h, q8h);
                let p16h = _mm256_madd_epi16(scale_h, p16h);
                sumi = _mm256_add_epi32(sumi, p16h);
            }

            let vd = _mm256_set1_ps(d);
            acc = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(sumi), acc);
        }

        let acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));

        hsum_float_8(acc) + _mm_cvtss_f32(acc_m)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q5k_q8k(n: usize, xs: &[BlockQ5K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q5k_q8k: {n} is not divisible by {QK_K}"
    );
    let mut utmp = [0u32; 4];
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let mzero = _mm_setzero_si128();
        let mone = _mm256_set1_epi8(1);

        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0;

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            let mut q5 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                utmp[3] as i32,
                utmp[2] as i32,
                utmp[1] as i32,
                utmp[0] as i32,
            ));

            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            let hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, mzero), mzero);
            summs += dmin * _mm_extract_epi32(hsum, 0) as f32;

            let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
            let scales = mm256_set_m128i(sc128, sc128);

            let hbits = _mm256_loadu_si256(x.qh.as_ptr() as *const __m256i);
            let mut hmask = mone;

            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 64 {
                let scale_0 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_1 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));

                let q5bits = _mm256_loadu_si256(q5 as *const __m256i);
                q5 = q5.add(32);

                //Similar to q3k we hardcode the shifts here to avoid loading them into a separate register
                let q5l_0 = _mm256_and_si256(q5bits, m4);
                let q5l_0_shift_input = _mm256_and_si256(hbits, hmask);
                let q5l_0_right_shift = match j {
                    0 => _mm256_srli_epi16(q5l_0_shift_input, 0),
                    1 => _mm256_srli_epi16(q5l_0_shift_input, 2),
                    2 => _mm256_srli_epi16(q5l_0_shift_input, 4),
                    3 => _mm256_srli_epi16(q5l_0_shift_input, 6),
                    _ => unreachable!(),
                };
                let q5h_0 = _mm256_slli_epi16(q5l_0_right_shift, 4);
                let q5_0 = _mm256_add_epi8(q5l_0, q5h_0);
                hmask = _mm256_slli_epi16(hmask, 1);

                let q5l_1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
                let q5l_1_shift_input = _mm256_and_si256(hbits, hmask);
                let q5l_1_right_shift = match j {
                    0 => _mm256_srli_epi16(q5l_1_shift_input, 1),
                    1 => _mm256_srli_epi16(q5l_1_shift_input, 3),
                    2 => _mm256_srli_epi16(q5l_1_shift_input, 5),
                    3 => _mm256_srli_epi16(q5l_1_shift_input, 7),
                    _ => unreachable!(),
                };

                let q5h_1 = _mm256_slli_epi16(q5l_1_right_shift, 4);
                let q5_1 = _mm256_add_epi8(q5l_1, q5h_1);
                hmask = _mm256_slli_epi16(hmask, 1);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let p16_0 = _mm256_maddubs_epi16(q5_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q5_1, q8_1);

                let p16_0 = _mm256_madd_epi16(scale_0, p16_0);
                let p16_1 = _mm256_madd_epi16(scale_1, p16_1);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            }
            let vd = _mm256_set1_ps(d);
            acc = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc) + summs
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q8k_q8k(n: usize, xs: &[BlockQ8K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q8k_8k: {n} is not divisible by {QK_K}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let mut sumi = _mm256_setzero_si256();
            let x_qs = xs.qs.as_ptr();
            let y_qs = ys.qs.as_ptr();
            for j in (0..QK_K).step_by(32) {
                let xs = _mm256_loadu_si256(x_qs.add(j) as *const __m256i);
                let ys = _mm256_loadu_si256(y_qs.add(j) as *const __m256i);

                let xs0 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xs, 0));
                let ys0 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(ys, 0));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(xs0, ys0));

                let xs1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xs, 1));
                let ys1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(ys, 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(xs1, ys1));
            }
            let d = _mm256_set1_ps(xs.d * ys.d);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}
