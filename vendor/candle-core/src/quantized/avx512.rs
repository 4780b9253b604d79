//! aiaas patch (items 13 and 14): Q4_1 and Q8_0 products on 512-bit vectors, for weights stored
//! interleaved by panels of eight rows (items 11 and 14), where the CPU has AVX-512 with VNNI
//! (Intel from Ice Lake, AMD from Zen 4).
//!
//! The panel kernels of items 9 to 11 take eight weight rows per 256-bit vector. Here a task
//! takes two interleaved panels at once, 16 weight rows per 512-bit vector: per block and group
//! of four values one `vpdpbusd` serves the 16 rows where the 256-bit kernels need two, and the
//! block's scaling (a conversion, a product and one or two fused multiply-adds per input row)
//! serves 16 outputs where they serve eight. Each lane does exactly what a lane of the 256-bit
//! kernels does: per block the exact integer sum of the 32 products, then for Q4_1 `acc =
//! fma(sum, d_w * d_y, acc)` and `acc = fma(m_w, s_y, acc)`, for Q8_0 the first only, block
//! after block. So every output is the same to the bit (tests), whichever kernel ran.
//!
//! With fewer than `REPACK_MIN_ROWS` input rows (decoding, short prompts; Q8_0, the output
//! layer, always) the kernel reads the two panels where they lie (`direct`), requesting the next two from memory while it computes;
//! with more, each task first unpacks its two panels into 16-lane vectors (`amx::prepare`, the
//! layout of AMX's B tiles, which is exactly one vector per group of four values) that then
//! serve every input row (`packed`). A last single panel of eight rows (the weight rows an odd
//! multiple of eight) is computed on the same 16 lanes with its upper half ignored.

use super::amx::PREPARED_BYTES;
use super::avx::{Ahead, INTERLEAVED_Q4_1_BYTES, INTERLEAVED_Q8_0_BYTES};
use super::k_quants::{switch_on, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK4_1, QK8_0};
use core::arch::x86_64::*;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

/// The fewest input rows for which a task unpacks its panels once (`packed`) rather than
/// reading them where they lie for every pass (`direct`).
const REPACK_MIN_ROWS: usize = 48;

/// Whether the CPU has what these kernels use: AVX-512 F, BW, VL and VNNI, with F16C and FMA.
/// Checked once.
pub(crate) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("fma")
    })
}

/// Whether Q4_1 products may take these kernels where `supported()` (0 not read yet, 1 on, 2
/// off). On unless `AIAAS_AVX512=off` is in the environment.
static AVX512: AtomicU8 = AtomicU8::new(0);

/// Lets interleaved Q4_1 products take the 512-bit kernels where the CPU has them (`true`, the
/// default) or not (for side-by-side measurements and tests), whatever the environment says.
pub(crate) fn set_avx512(on: bool) {
    AVX512.store(if on { 1 } else { 2 }, Relaxed);
}

/// Whether interleaved Q4_1 products run on these kernels: `supported()`, and `set_avx512` /
/// `AIAAS_AVX512` allow it.
pub(crate) fn avx512() -> bool {
    switch_on(&AVX512, "AIAAS_AVX512") && supported()
}

/// Products computed by `matmul_q4_1x16` so far.
static PRODUCTS: AtomicUsize = AtomicUsize::new(0);

/// How many products `matmul_q4_1x16` has computed in this process (for tests).
pub(crate) fn products() -> usize {
    PRODUCTS.load(Relaxed)
}

struct Dst(*mut f32);
// SAFETY: the tasks write disjoint columns of the destination (see `matmul_q4_1x16`).
unsafe impl Sync for Dst {}

/// The `m` x `n` product of the Q8_1 input rows `ys` (`k / 32` blocks each; `ys_d` and `ys_s`
/// their blocks' `d` and `s` as f32) with the `n` interleaved Q4_1 weight rows `xs`
/// (`Interleaved<BlockQ4_1>`'s slots, `n` a multiple of eight) into `dst` (`m` rows of `n`).
///
/// # Panics
/// If `supported()` is false, or the slices are shorter than the shapes say.
pub(crate) fn matmul_q4_1x16(
    (m, k, n): (usize, usize, usize),
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    ys_d: &[f32],
    ys_s: &[f32],
    dst: &mut [f32],
) {
    assert!(supported(), "AVX-512 Q4_1 matmul without AVX-512 VNNI");
    let blocks = k / QK4_1;
    assert!(k == blocks * QK4_1 && n.is_multiple_of(8));
    assert!(xs.len() >= n * blocks && dst.len() >= m * n);
    assert!(ys.len() >= m * blocks && ys_d.len() >= m * blocks && ys_s.len() >= m * blocks);
    PRODUCTS.fetch_add(1, Relaxed);
    let panel_bytes = blocks * INTERLEAVED_Q4_1_BYTES;
    if m < REPACK_MIN_ROWS {
        let inputs = Q4_1Inputs {
            blocks,
            ys,
            ys_d,
            ys_s,
        };
        direct_pairs((m, n), weight_bytes(xs), panel_bytes, &inputs, dst);
        return;
    }
    let out = Dst(dst.as_mut_ptr());
    // SAFETY: `supported()` (asserted above). Pair `p` covers weight rows `16p..16p + width`
    // (`width` 16, or 8 for a last single panel, whose upper lanes are zeros), so every weight
    // read lies within the `n * blocks` blocks of `xs`; every input read lies within the first
    // `m` rows; every write goes to rows below `m` and the columns `16p..16p + width` of `dst`,
    // which only this pair's task writes.
    (0..n.div_ceil(16)).into_par_iter().for_each_init(
        || vec![[0u8; 64]; blocks * PREPARED_BYTES / 64],
        |prepared, pair| unsafe {
            let (base, out) = (xs.as_ptr() as *const u8, &out);
            let first = pair * 16;
            let width = 16.min(n - first);
            let low = base.add(pair * 2 * panel_bytes);
            let high = (width == 16).then(|| low.add(panel_bytes));
            let prepared = prepared.as_mut_ptr() as *mut u8;
            super::amx::prepare(blocks, low, high, prepared);
            let columns = if width == 16 { 0xFFFF } else { 0x00FF };
            let mut row = 0;
            while row < m {
                let (ys, ys_d, ys_s) = (
                    ys.as_ptr().add(row * blocks),
                    ys_d.as_ptr().add(row * blocks),
                    ys_s.as_ptr().add(row * blocks),
                );
                let dst = out.0.add(row * n + first);
                macro_rules! pass {
                    ($r:literal) => {{
                        packed::<$r>(blocks, prepared, ys, ys_d, ys_s, dst, n, columns);
                        $r
                    }};
                }
                row += match m - row {
                    1 => pass!(1),
                    2 => pass!(2),
                    3 => pass!(3),
                    4..=7 => pass!(4),
                    _ => pass!(8),
                };
            }
        },
    );
}

/// The `m` x `n` product of Q8_0 input rows `ys` (`k / 32` blocks each; `ys_d` their blocks'
/// `d` as f32, `ys_bias` 128 times the sums of their blocks' values) with the `n` interleaved
/// Q8_0 weight rows `xs` (item 14, `n` a multiple of eight) into `dst` (`m` rows of `n`): the
/// output layer of a decoding step, one input row per sequence, so always read where the
/// weights lie.
///
/// # Panics
/// If `supported()` is false, or the slices are shorter than the shapes say.
pub(crate) fn matmul_q8_0x16(
    (m, k, n): (usize, usize, usize),
    xs: &[BlockQ8_0],
    ys: &[BlockQ8_0],
    ys_d: &[f32],
    ys_bias: &[i32],
    dst: &mut [f32],
) {
    assert!(supported(), "AVX-512 Q8_0 matmul without AVX-512 VNNI");
    let blocks = k / QK8_0;
    assert!(k == blocks * QK8_0 && n.is_multiple_of(8));
    assert!(xs.len() >= n * blocks && dst.len() >= m * n);
    assert!(ys.len() >= m * blocks && ys_d.len() >= m * blocks && ys_bias.len() >= m * blocks);
    PRODUCTS.fetch_add(1, Relaxed);
    let inputs = Q8_0Inputs {
        blocks,
        ys,
        ys_d,
        ys_bias,
    };
    let panel_bytes = blocks * INTERLEAVED_Q8_0_BYTES;
    direct_pairs((m, n), weight_bytes(xs), panel_bytes, &inputs, dst);
}

/// The bytes of the weight blocks `xs`.
fn weight_bytes<T>(xs: &[T]) -> &[u8] {
    // SAFETY: the block types are `repr(C)` plain data without padding; the slice covers exactly
    // the blocks' bytes, borrowed as long as `xs`.
    unsafe { std::slice::from_raw_parts(xs.as_ptr() as *const u8, std::mem::size_of_val(xs)) }
}

/// Input rows that meet two interleaved panels read where they lie: `pass` computes `R` of
/// them, from input row `row`, and writes the lanes of `columns` of their outputs to `dst` (row
/// stride `stride`).
trait PairInputs: Sync {
    /// # Safety
    /// `supported()`; `weights` valid for the rows' blocks; rows `row..row + R` exist; `dst`
    /// valid for `R` rows of the lanes of `columns`.
    unsafe fn pass<const R: usize>(
        &self,
        row: usize,
        weights: &Panels,
        dst: *mut f32,
        stride: usize,
        columns: u16,
    );
}

/// The `m` x `n` product of `inputs` with the weight rows whose interleaved panels of eight are
/// `weights` (`panel_bytes` each, `n` a multiple of eight) into `dst`: a task per run of pairs
/// of panels, each pair meeting the input rows up to eight at a time; a pair's first pass
/// requests the next pair from memory.
fn direct_pairs<K: PairInputs>(
    (m, n): (usize, usize),
    weights: &[u8],
    panel_bytes: usize,
    inputs: &K,
    dst: &mut [f32],
) {
    assert!(n.is_multiple_of(8) && weights.len() >= n / 8 * panel_bytes && dst.len() >= m * n);
    let out = Dst(dst.as_mut_ptr());
    let total = n / 8 * panel_bytes;
    // SAFETY: `supported()` (the callers assert it). Pair `p` covers weight rows `16p..16p +
    // width` (`width` 16, or 8 for a last single panel, whose upper lanes read the same panel
    // again and are not written), so every weight read lies within `total` bytes of `weights`,
    // and `next` too; the callers' inputs have `m` rows; every write goes to rows below `m` and
    // the columns `16p..16p + width` of `dst`, which only this pair's task writes.
    (0..n.div_ceil(16))
        .into_par_iter()
        .with_min_len(8)
        .with_max_len(32)
        .for_each(|pair| unsafe {
            let (base, out) = (weights.as_ptr(), &out);
            let first = pair * 16;
            let width = 16.min(n - first);
            let low = base.add(pair * 2 * panel_bytes);
            let high = if width == 16 {
                low.add(panel_bytes)
            } else {
                low
            };
            let next_at = ((pair + 1) * 2 * panel_bytes).min(total);
            let columns = if width == 16 { 0xFFFF } else { 0x00FF };
            let mut row = 0;
            while row < m {
                let weights = Panels {
                    low,
                    high,
                    next: base.add(next_at),
                    next_bytes: if row == 0 {
                        (total - next_at).min(2 * panel_bytes)
                    } else {
                        0
                    },
                };
                let dst = out.0.add(row * n + first);
                macro_rules! pass {
                    ($r:literal) => {{
                        inputs.pass::<$r>(row, &weights, dst, n, columns);
                        $r
                    }};
                }
                row += match m - row {
                    1 => pass!(1),
                    2 => pass!(2),
                    3 => pass!(3),
                    4 => pass!(4),
                    5 => pass!(5),
                    6 => pass!(6),
                    7 => pass!(7),
                    _ => pass!(8),
                };
            }
        });
}

/// Q8_1 input rows for `direct`, with their blocks' `d` and `s` as f32.
struct Q4_1Inputs<'a> {
    blocks: usize,
    ys: &'a [BlockQ8_1],
    ys_d: &'a [f32],
    ys_s: &'a [f32],
}

impl PairInputs for Q4_1Inputs<'_> {
    unsafe fn pass<const R: usize>(
        &self,
        row: usize,
        weights: &Panels,
        dst: *mut f32,
        stride: usize,
        columns: u16,
    ) {
        let at = row * self.blocks;
        let (ys, ys_d, ys_s) = (self.ys.as_ptr(), self.ys_d.as_ptr(), self.ys_s.as_ptr());
        let (ys, ys_d, ys_s) = (ys.add(at), ys_d.add(at), ys_s.add(at));
        direct::<R>(self.blocks, weights, ys, ys_d, ys_s, dst, stride, columns);
    }
}

/// Q8_0 input rows for `direct_q8_0`, with their blocks' `d` as f32 and 128 times the sums of
/// their values.
struct Q8_0Inputs<'a> {
    blocks: usize,
    ys: &'a [BlockQ8_0],
    ys_d: &'a [f32],
    ys_bias: &'a [i32],
}

impl PairInputs for Q8_0Inputs<'_> {
    unsafe fn pass<const R: usize>(
        &self,
        row: usize,
        weights: &Panels,
        dst: *mut f32,
        stride: usize,
        columns: u16,
    ) {
        let at = row * self.blocks;
        let (ys, ys_d, bias) = (self.ys.as_ptr(), self.ys_d.as_ptr(), self.ys_bias.as_ptr());
        let (ys, ys_d, bias) = (ys.add(at), ys_d.add(at), bias.add(at));
        direct_q8_0::<R>(self.blocks, weights, ys, ys_d, bias, dst, stride, columns);
    }
}

/// Two interleaved panels of eight weight rows read where they lie (`low` and `high`, `blocks`
/// block columns each), and `next_bytes` bytes from `next` to request from memory meanwhile.
struct Panels {
    low: *const u8,
    high: *const u8,
    next: *const u8,
    next_bytes: usize,
}

/// `R` input rows times the 16 weight rows of `weights`: per block, the panels' four words are
/// joined (eight rows of `low` in the lower half, eight of `high` in the upper) and split into
/// low and high nibbles, each meeting the input row's four values broadcast to every lane in one
/// `vpdpbusd`; the rows' `d` and `m` are converted from f16. Writes the lanes of `columns` of
/// the `R` output rows to `dst` (row stride `stride`).
///
/// # Safety
/// `supported()`; `weights` valid for `blocks` block columns each and `next_bytes` bytes;
/// `ys`, `ys_d` and `ys_s` for `R` rows of `blocks` blocks; `dst` for `R` rows of the lanes of
/// `columns`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn direct<const R: usize>(
    blocks: usize,
    weights: &Panels,
    ys: *const BlockQ8_1,
    ys_d: *const f32,
    ys_s: *const f32,
    dst: *mut f32,
    stride: usize,
    columns: u16,
) {
    let nibble = _mm512_set1_epi8(0xF);
    let mut acc = [_mm512_setzero_ps(); R];
    let ahead = Ahead::new(weights.next, weights.next_bytes, blocks);
    for b in 0..blocks {
        ahead.block(b);
        let l = weights.low.add(b * INTERLEAVED_Q4_1_BYTES);
        let h = weights.high.add(b * INTERLEAVED_Q4_1_BYTES);
        let scales = |at: usize| {
            let lower = _mm_loadu_si128(l.add(at) as *const __m128i);
            let upper = _mm_loadu_si128(h.add(at) as *const __m128i);
            _mm512_cvtph_ps(_mm256_set_m128i(upper, lower))
        };
        let (wd, wm) = (scales(0), scales(16));
        let mut sums = [_mm512_setzero_si512(); R];
        for g in 0..4 {
            let at = 32 + 32 * g;
            let lower = _mm256_loadu_si256(l.add(at) as *const __m256i);
            let upper = _mm256_loadu_si256(h.add(at) as *const __m256i);
            let word = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lower), upper);
            let low = _mm512_and_si512(word, nibble);
            let high = _mm512_and_si512(_mm512_srli_epi16::<4>(word), nibble);
            for (r, sum) in sums.iter_mut().enumerate() {
                let y = (*ys.add(r * blocks + b)).qs.as_ptr();
                let y_low = _mm512_set1_epi32((y.add(4 * g) as *const i32).read_unaligned());
                let y_high = _mm512_set1_epi32((y.add(16 + 4 * g) as *const i32).read_unaligned());
                *sum = _mm512_dpbusd_epi32(*sum, low, y_low);
                *sum = _mm512_dpbusd_epi32(*sum, high, y_high);
            }
        }
        scale(&mut acc, sums, wd, wm, ys_d.add(b), ys_s.add(b), blocks);
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(r * stride), columns, *acc);
    }
}

/// `R` input rows times 16 weight rows unpacked by `amx::prepare` (`prepared`, `PREPARED_BYTES`
/// per block): per block and group of four values, one load of the 16 rows' values and one
/// `vpdpbusd` per input row. Writes as `direct` does.
///
/// # Safety
/// `supported()`; `prepared` valid for `blocks * PREPARED_BYTES` bytes; `ys`, `ys_d`, `ys_s`
/// and `dst` as for `direct`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn packed<const R: usize>(
    blocks: usize,
    prepared: *const u8,
    ys: *const BlockQ8_1,
    ys_d: *const f32,
    ys_s: *const f32,
    dst: *mut f32,
    stride: usize,
    columns: u16,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let w = prepared.add(b * PREPARED_BYTES);
        let mut sums = [_mm512_setzero_si512(); R];
        for g in 0..8 {
            let values = _mm512_loadu_si512(w.add(64 * g) as *const _);
            for (r, sum) in sums.iter_mut().enumerate() {
                let y = (*ys.add(r * blocks + b)).qs.as_ptr().add(4 * g);
                *sum = _mm512_dpbusd_epi32(
                    *sum,
                    values,
                    _mm512_set1_epi32((y as *const i32).read_unaligned()),
                );
            }
        }
        let wd = _mm512_loadu_ps(w.add(512) as *const f32);
        let wm = _mm512_loadu_ps(w.add(576) as *const f32);
        scale(&mut acc, sums, wd, wm, ys_d.add(b), ys_s.add(b), blocks);
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(r * stride), columns, *acc);
    }
}

/// One block's scaling for `R` input rows, as the 256-bit kernels do it per lane: `acc =
/// fma(sum, d_w * d_y, acc)`, then `acc = fma(m_w, s_y, acc)`; row `r`'s `d_y` and `s_y` are
/// `ys_d[r * blocks]` and `ys_s[r * blocks]`.
///
/// # Safety
/// `supported()`; `ys_d` and `ys_s` valid for `R` rows of `blocks`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn scale<const R: usize>(
    acc: &mut [__m512; R],
    sums: [__m512i; R],
    wd: __m512,
    wm: __m512,
    ys_d: *const f32,
    ys_s: *const f32,
    blocks: usize,
) {
    for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
        let q = _mm512_cvtepi32_ps(sum);
        let d = _mm512_mul_ps(wd, _mm512_set1_ps(*ys_d.add(r * blocks)));
        *acc = _mm512_fmadd_ps(q, d, *acc);
        *acc = _mm512_fmadd_ps(wm, _mm512_set1_ps(*ys_s.add(r * blocks)), *acc);
    }
}

/// `R` Q8_0 input rows times the 16 interleaved Q8_0 weight rows of `weights` (item 14): per
/// block, each of the panels' eight words (values `4g..4g + 4` of each row) joined across the
/// two panels, plus 128 so that `vpdpbusd` can take them as unsigned bytes, meets the input
/// row's four values broadcast to every lane; 128 times the input block's sum comes off
/// (`ys_bias`), then `acc = fma(sum, d_w * d_y, acc)`: per lane what `avx::q8_0_block` does, so
/// the same bits. Writes as `direct` does.
///
/// # Safety
/// `supported()`; `weights` valid for `blocks` block columns each and `next_bytes` bytes; `ys`,
/// `ys_d` and `ys_bias` for `R` rows of `blocks` blocks; `dst` for `R` rows of the lanes of
/// `columns`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn direct_q8_0<const R: usize>(
    blocks: usize,
    weights: &Panels,
    ys: *const BlockQ8_0,
    ys_d: *const f32,
    ys_bias: *const i32,
    dst: *mut f32,
    stride: usize,
    columns: u16,
) {
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); R];
    let ahead = Ahead::new(weights.next, weights.next_bytes, blocks);
    for b in 0..blocks {
        ahead.block(b);
        let l = weights.low.add(b * INTERLEAVED_Q8_0_BYTES);
        let h = weights.high.add(b * INTERLEAVED_Q8_0_BYTES);
        let wd = _mm512_cvtph_ps(_mm256_loadu2_m128i(
            h as *const __m128i,
            l as *const __m128i,
        ));
        let mut sums = [_mm512_setzero_si512(); R];
        for g in 0..8 {
            let at = 16 + 32 * g;
            let lower = _mm256_loadu_si256(l.add(at) as *const __m256i);
            let upper = _mm256_loadu_si256(h.add(at) as *const __m256i);
            let word = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lower), upper);
            let unsigned = _mm512_xor_si512(word, flip);
            for (r, sum) in sums.iter_mut().enumerate() {
                let y = (*ys.add(r * blocks + b)).qs.as_ptr().add(4 * g);
                let y = _mm512_set1_epi32((y as *const i32).read_unaligned());
                *sum = _mm512_dpbusd_epi32(*sum, unsigned, y);
            }
        }
        for (r, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
            let sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(*ys_bias.add(r * blocks + b)));
            let q = _mm512_cvtepi32_ps(sum);
            let d = _mm512_mul_ps(wd, _mm512_set1_ps(*ys_d.add(r * blocks + b)));
            *acc = _mm512_fmadd_ps(q, d, *acc);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(r * stride), columns, *acc);
    }
}
