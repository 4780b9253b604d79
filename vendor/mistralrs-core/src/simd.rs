//! aiaas patch: eight-lane `f32` kernels shared by the CPU attention (`max`, `exp_sub_sum`) and
//! the MLP's activation (`silu_mul`). With AVX2 + FMA (x86-64-v3 builds) they compute `e^x`
//! eight lanes at a time (`exp8`); elsewhere they are plain loops over `f32::exp`.

/// The largest of `x`'s values that are not NaN (`-inf` if there is none), as a fold with
/// `f32::max` gives it, but eight lanes at a time: only the sign of a zero maximum may differ,
/// which no use of it can tell (`x - m`, `exp(m' - m)`, comparisons). With AVX2 `x.len()` must
/// be a multiple of eight.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
pub(crate) fn max(x: &[f32]) -> f32 {
    use core::arch::x86_64::*;
    assert!(x.len() % 8 == 0);
    // SAFETY: every load reads eight values below `x.len()`; AVX2 is enabled at compile time.
    // `_mm256_max_ps(a, b)` returns `b` where either is NaN, so with the running maximum as `b`
    // (never NaN: it starts at `-inf`) NaN values are skipped, as `f32::max` skips them.
    unsafe {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..x.len()).step_by(8) {
            m = _mm256_max_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m);
        }
        let q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let q = _mm_max_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_max_ss(q, _mm_movehdup_ps(q)))
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
pub(crate) fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `x[j] = exp(x[j] - m)` for every `j`, returning their sum; `-inf` gives exactly 0. With AVX2
/// `x.len()` must be a multiple of eight.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
pub(crate) fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    use core::arch::x86_64::*;
    assert!(x.len() % 8 == 0);
    // SAFETY: every load and store reads or writes eight values below `x.len()`; AVX2 and FMA
    // are enabled at compile time.
    unsafe {
        let vm = _mm256_set1_ps(m);
        let mut sum = _mm256_setzero_ps();
        for i in (0..x.len()).step_by(8) {
            let at = x.as_mut_ptr().add(i);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(at), vm));
            _mm256_storeu_ps(at, e);
            sum = _mm256_add_ps(sum, e);
        }
        let q = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
pub(crate) fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    let mut sum = 0f32;
    for x in x.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    sum
}

/// `out[j] = silu(a[j]) · b[j]`, `silu(x) = x / (1 + e^-x)`, for `j < out.len()` (`a` and `b`
/// at least as long). Every element goes through the same eight-lane arithmetic, the last
/// few through a zero-padded block, so a value's result does not depend on where it lies.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
pub(crate) fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    use core::arch::x86_64::*;
    let n = out.len();
    assert!(a.len() >= n && b.len() >= n);
    // SAFETY: loads and stores of eight values below `n8 <= n` (or of the eight-value
    // buffers); AVX2 and FMA are enabled at compile time.
    unsafe {
        let one = _mm256_set1_ps(1.0);
        let lanes = |a: __m256, b: __m256| {
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), a));
            _mm256_mul_ps(_mm256_div_ps(a, _mm256_add_ps(one, e)), b)
        };
        let n8 = n - n % 8;
        for i in (0..n8).step_by(8) {
            let y = lanes(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
        }
        if n8 < n {
            let (mut ta, mut tb, mut ty) = ([0f32; 8], [0f32; 8], [0f32; 8]);
            ta[..n - n8].copy_from_slice(&a[n8..n]);
            tb[..n - n8].copy_from_slice(&b[n8..n]);
            _mm256_storeu_ps(
                ty.as_mut_ptr(),
                lanes(_mm256_loadu_ps(ta.as_ptr()), _mm256_loadu_ps(tb.as_ptr())),
            );
            out[n8..].copy_from_slice(&ty[..n - n8]);
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
pub(crate) fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a / (1.0 + (-a).exp()) * b;
    }
}

/// `e^x` in eight lanes: Cody-Waite reduction by ln 2 and a degree-6 polynomial (the classic
/// single-precision scheme, within a couple of ulps of the exact value). Inputs below about
/// -87.3 (and `-inf`) give 0 or a value below the smallest normal; inputs above about 88 are
/// clamped.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn exp8(x: core::arch::x86_64::__m256) -> core::arch::x86_64::__m256 {
    use core::arch::x86_64::*;
    const LIMIT: f32 = 88.376_26;
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-LIMIT)),
        _mm256_set1_ps(LIMIT),
    );
    // n = round(x / ln 2), as floor(x·log2(e) + 1/2), kept where the exponent bits below are
    // in range whatever the rounding at the clamps.
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let n = _mm256_min_ps(
        _mm256_max_ps(n, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    // r = x - n·ln 2, with ln 2 split in two so that the first product is exact.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5.000_000_1e-1,
    ] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        y,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    // 2^n from the exponent bits; n = -127 gives the bits of 0.0.
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(y, pow2n)
}

/// aiaas patch (item 16): one row of candle-nn's interleaved rope (`rope_i`): for each pair
/// `p`, `dst[2p] = x0·c − x1·s` and `dst[2p + 1] = x0·s + x1·c` with `x0, x1 = src[2p],
/// src[2p + 1]` and `c, s = cos[p], sin[p]`, each product and sum rounded to the element type
/// as candle-nn's loop rounds it (an `f16` product is exact in `f32`, then rounded to `f16`;
/// Rust forms no fused multiply-add), so the same bits. With AVX2 and F16C, four pairs per
/// iteration: the row times the duplicated cosines, its pairs swapped times the duplicated
/// sines, and `addsub` (even lanes subtract, odd lanes add).
pub(crate) trait RopeRow: Copy + Send + Sync {
    fn rope_row(src: &[Self], cos: &[Self], sin: &[Self], dst: &mut [Self]);
}

/// The scalar form of `RopeRow::rope_row` from pair `from` on, exactly candle-nn's expression.
fn rope_pairs<T>(src: &[T], cos: &[T], sin: &[T], dst: &mut [T], from: usize)
where
    T: Copy + std::ops::Mul<Output = T> + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
{
    for p in from..src.len() / 2 {
        let (x0, x1) = (src[2 * p], src[2 * p + 1]);
        dst[2 * p] = x0 * cos[p] - x1 * sin[p];
        dst[2 * p + 1] = x0 * sin[p] + x1 * cos[p];
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c"
))]
mod rope_lanes {
    use core::arch::x86_64::*;

    /// Four cosines or sines, each twice: `[c0, c0, c1, c1, c2, c2, c3, c3]`.
    #[inline]
    pub(super) unsafe fn pairs(four: __m128) -> __m256 {
        _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(four),
            _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
        )
    }

    /// The row's four pairs with each pair's two values swapped.
    #[inline]
    pub(super) unsafe fn swapped(x: __m256) -> __m256 {
        _mm256_permute_ps::<0b10_11_00_01>(x)
    }

    /// `f32` rounded to `f16` and back (round to nearest even, as `half` converts).
    #[inline]
    pub(super) unsafe fn round_f16(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
    }
}

impl RopeRow for f32 {
    fn rope_row(src: &[f32], cos: &[f32], sin: &[f32], dst: &mut [f32]) {
        let half = src.len() / 2;
        assert!(cos.len() >= half && sin.len() >= half && dst.len() >= 2 * half);
        #[allow(unused_mut)]
        let mut p = 0;
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "f16c"
        ))]
        // SAFETY: pairs `p..p + 4` lie below `half`: eight values of `src` and `dst` and four
        // of `cos` and `sin` are in bounds (asserted above); AVX2 is enabled at compile time.
        unsafe {
            use core::arch::x86_64::*;
            while p + 4 <= half {
                let x = _mm256_loadu_ps(src.as_ptr().add(2 * p));
                let c = rope_lanes::pairs(_mm_loadu_ps(cos.as_ptr().add(p)));
                let s = rope_lanes::pairs(_mm_loadu_ps(sin.as_ptr().add(p)));
                let xc = _mm256_mul_ps(x, c);
                let xs = _mm256_mul_ps(rope_lanes::swapped(x), s);
                _mm256_storeu_ps(dst.as_mut_ptr().add(2 * p), _mm256_addsub_ps(xc, xs));
                p += 4;
            }
        }
        rope_pairs(src, cos, sin, dst, p);
    }
}

impl RopeRow for half::f16 {
    fn rope_row(src: &[Self], cos: &[Self], sin: &[Self], dst: &mut [Self]) {
        let half = src.len() / 2;
        assert!(cos.len() >= half && sin.len() >= half && dst.len() >= 2 * half);
        #[allow(unused_mut)]
        let mut p = 0;
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "f16c"
        ))]
        // SAFETY: as for `f32`, with halves: 16 bytes of `src` and `dst`, 8 of `cos` and `sin`;
        // AVX2 and F16C are enabled at compile time.
        unsafe {
            use core::arch::x86_64::*;
            while p + 4 <= half {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(2 * p) as *const __m128i));
                let four =
                    |t: &[Self]| _mm_cvtph_ps(_mm_loadl_epi64(t.as_ptr().add(p) as *const __m128i));
                let (c, s) = (rope_lanes::pairs(four(cos)), rope_lanes::pairs(four(sin)));
                let xc = rope_lanes::round_f16(_mm256_mul_ps(x, c));
                let xs = rope_lanes::round_f16(_mm256_mul_ps(rope_lanes::swapped(x), s));
                let r = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_addsub_ps(xc, xs));
                _mm_storeu_si128(dst.as_mut_ptr().add(2 * p) as *mut __m128i, r);
                p += 4;
            }
        }
        rope_pairs(src, cos, sin, dst, p);
    }
}
