#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use candle_core::{Context, Device, Result, Storage, Tensor, WithDType};

use half::bf16;
use half::f16;
use rayon::prelude::*;
use rayon::ThreadPool;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::LazyLock;
use std::{f32, iter::Sum};

// aiaas patch: upstream's prefetch helper is gone with the per-position loops that used it.

use crate::attention::SdpaParams;

#[cfg(target_os = "macos")]
/// Elevate the thread QoS so macOS prefers running it on Performance (P) cores.
unsafe fn set_thread_affinity() {
    // USER_INTERACTIVE has the highest scheduling priority that user code
    // can request and is most likely to be scheduled on P‑cores.
    use libc::{pthread_set_qos_class_self_np, qos_class_t::QOS_CLASS_USER_INTERACTIVE};
    // The second argument is a relative priority within the QoS class (0 = default).
    pthread_set_qos_class_self_np(QOS_CLASS_USER_INTERACTIVE, 0);
}

#[cfg(not(target_os = "macos"))]
#[inline(always)]
unsafe fn set_thread_affinity() {
    // On non‑macOS platforms we currently leave affinity untouched.
}

/// Rayon pool used by the flash‑attention CPU kernels, with a per‑thread
/// start handler that applies our affinity hint exactly once.
static FLASH_ATTN_POOL: LazyLock<ThreadPool> = LazyLock::new(|| {
    rayon::ThreadPoolBuilder::new()
        .start_handler(|_| unsafe {
            set_thread_affinity();
        })
        .build()
        .expect("Failed to build custom Rayon thread‑pool for flash‑attention")
});

/// aiaas patch: run `op` in the rayon pool the calling thread already works in (the engine
/// thread is a worker of its own pool, see `lib.rs`), and only enter `FLASH_ATTN_POOL` from
/// threads outside any pool. Handing every attention call from one pool to another costs two
/// thread wake-ups per layer and token, and two pools spinning on two cores starve each other.
fn in_attention_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        op()
    } else {
        FLASH_ATTN_POOL.install(op)
    }
}

/// aiaas patch: key positions scored together in the prompt kernel before their softmax weights
/// are applied (one running-max update per chunk instead of one per position).
const CHUNK_KV: usize = 64;

/// aiaas patch: query rows of one head scored together in the prompt kernel (each key value
/// loaded serves them all).
const PROMPT_ROWS: usize = 4;

/// aiaas patch: rows of Q, K and V are widened to `f32` once, in bulk, instead of element by
/// element inside every dot product and weighted sum (upstream called the scalar half-to-float
/// conversion twice per multiply-add). With F16C (x86-64-v3 builds) eight halves convert in one
/// instruction.
pub(crate) trait WidenF32: Copy {
    fn widen(src: &[Self], dst: &mut [f32]);

    /// Whether `Self` is `f16` (whose rows some kernels read where they lie).
    const IS_F16: bool = false;
}

impl WidenF32 for f32 {
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl WidenF32 for bf16 {
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}

impl WidenF32 for f16 {
    const IS_F16: bool = true;

    #[cfg(all(target_arch = "x86_64", target_feature = "f16c", target_feature = "avx"))]
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        use core::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
        assert_eq!(src.len(), dst.len());
        let mut src8 = src.chunks_exact(8);
        let mut dst8 = dst.chunks_exact_mut(8);
        for (s, d) in (&mut src8).zip(&mut dst8) {
            // SAFETY: both chunks hold exactly eight elements; F16C is enabled at compile time.
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr() as *const __m128i);
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        for (d, s) in dst8.into_remainder().iter_mut().zip(src8.remainder()) {
            *d = s.to_f32();
        }
    }

    #[cfg(not(all(target_arch = "x86_64", target_feature = "f16c", target_feature = "avx")))]
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

/// aiaas patch: `f32` kernels of the attention loops: dot product and `y += a·x` (`y *= a` is
/// `scale_in_place`, a plain loop). With AVX2 + FMA (x86-64-v3 builds) they run eight lanes per
/// instruction with two independent accumulators; elsewhere they are plain loops.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod lanes {
    use super::{CHUNK_KV, PROMPT_ROWS};
    use core::arch::x86_64::*;

    #[inline]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let n8 = n - n % 8;
        // SAFETY: every load reads eight elements below `n8 <= len`; AVX2 and FMA are enabled at
        // compile time.
        unsafe {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n8 {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i < n8 {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_movehdup_ps(q));
            let mut sum = _mm_cvtss_f32(q);
            for j in n8..n {
                sum += a[j] * b[j];
            }
            sum
        }
    }

    /// `[q · k_0, …, q · k_7]` for eight consecutive rows of `k` (row `j` at `k[j·d..]`), `d` a
    /// multiple of eight: each row's products go to lane `c mod 8` of its own accumulator (eight
    /// independent chains), and the eight accumulators are summed horizontally together, three
    /// `hadd`s deep, instead of one horizontal sum per row.
    pub(super) fn dots8(q: &[f32], k: &[f32], d: usize) -> [f32; 8] {
        assert!(d % 8 == 0 && q.len() >= d && k.len() >= 8 * d);
        let mut out = [0f32; 8];
        // SAFETY: Q loads read `q[c..c + 8]`, `c + 8 <= d`; K loads `k[j·d + c..][..8]`, `j < 8`,
        // within `8·d`, both checked above; AVX2 and FMA are enabled at compile time.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in (0..d).step_by(8) {
                let qv = _mm256_loadu_ps(q.as_ptr().add(c));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.as_ptr().add(j * d + c)), *a);
                }
            }
            _mm256_storeu_ps(out.as_mut_ptr(), sum8(&acc));
        }
        out
    }

    /// `[Σ acc[0], …, Σ acc[7]]`: the lanes of each of eight vectors summed, three `hadd`s
    /// deep for all eight.
    #[inline]
    pub(super) fn sum8(acc: &[__m256; 8]) -> __m256 {
        // SAFETY: register operations only; AVX is enabled at compile time.
        unsafe {
            // [r0 01, r0 23, r1 01, r1 23 | r0 45, r0 67, r1 45, r1 67], and so on.
            let s01 = _mm256_hadd_ps(acc[0], acc[1]);
            let s23 = _mm256_hadd_ps(acc[2], acc[3]);
            let s45 = _mm256_hadd_ps(acc[4], acc[5]);
            let s67 = _mm256_hadd_ps(acc[6], acc[7]);
            // [r0 0-3, r1 0-3, r2 0-3, r3 0-3 | r0 4-7, r1 4-7, r2 4-7, r3 4-7].
            let s0123 = _mm256_hadd_ps(s01, s23);
            let s4567 = _mm256_hadd_ps(s45, s67);
            let lo = _mm256_permute2f128_ps(s0123, s4567, 0x20);
            let hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
            _mm256_add_ps(lo, hi)
        }
    }

    /// `acc[..dv] += Σ_j p[j] · v[j·dv..][..dv]`, positions in order (zero weights, masked
    /// positions, skipped), each lane one fused multiply-add per position (as `axpy` per
    /// position would do), with the accumulators of 64 columns at a time held in registers
    /// across the positions.
    pub(super) fn weighted_sum(p: &[f32], v: &[f32], dv: usize, acc: &mut [f32]) {
        assert!(v.len() >= p.len() * dv && acc.len() >= dv);
        let blocks = dv / 64;
        // SAFETY: every load and store is within `v` (position `j < p.len()`, column below
        // `dv`) or `acc` (column below `dv`); AVX2 and FMA are enabled at compile time.
        unsafe {
            for blk in 0..blocks {
                let col = blk * 64;
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm256_loadu_ps(acc.as_ptr().add(col + 8 * i));
                }
                for (j, &pj) in p.iter().enumerate() {
                    if pj == 0.0 {
                        continue;
                    }
                    let pj = _mm256_set1_ps(pj);
                    let row = v.as_ptr().add(j * dv + col);
                    for (i, r) in r.iter_mut().enumerate() {
                        *r = _mm256_fmadd_ps(pj, _mm256_loadu_ps(row.add(8 * i)), *r);
                    }
                }
                for (i, r) in r.iter().enumerate() {
                    _mm256_storeu_ps(acc.as_mut_ptr().add(col + 8 * i), *r);
                }
            }
        }
        let rest = blocks * 64;
        if rest < dv {
            for (j, &pj) in p.iter().enumerate() {
                if pj != 0.0 {
                    axpy(&mut acc[rest..dv], pj, &v[j * dv + rest..(j + 1) * dv]);
                }
            }
        }
    }

    #[inline]
    pub(super) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let n8 = n - n % 8;
        // SAFETY: as in `dot`.
        unsafe {
            let (py, px) = (y.as_mut_ptr(), x.as_ptr());
            let va = _mm256_set1_ps(a);
            let mut i = 0;
            while i < n8 {
                let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
        }
        for j in n8..n {
            y[j] += a * x[j];
        }
    }

    /// `out[i][j] = q_i · k_j` for the `PROMPT_ROWS` query rows of `q` (row `i` at `q[i·d..]`)
    /// and 16 key positions whose rows are stored transposed: component `c` of key `j` at
    /// `kt[c·stride + j]`. Eight lanes hold eight keys, so no horizontal sums; each K value loaded
    /// serves every query row.
    pub(super) fn scores_block(q: &[f32], d: usize, kt: &[f32], stride: usize, out: &mut [[f32; 16]; PROMPT_ROWS]) {
        assert!(d > 0 && q.len() >= PROMPT_ROWS * d && kt.len() >= (d - 1) * stride + 16);
        // SAFETY: K loads read 16 values from `kt[c·stride..]`, `c < d`, within the length just
        // checked; Q reads `q[i·d + c]`, `i < PROMPT_ROWS`, `c < d`; AVX2 and FMA are enabled at
        // compile time.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; PROMPT_ROWS];
            for c in 0..d {
                let row = kt.as_ptr().add(c * stride);
                let k0 = _mm256_loadu_ps(row);
                let k1 = _mm256_loadu_ps(row.add(8));
                for (i, a) in a.iter_mut().enumerate() {
                    let qi = _mm256_broadcast_ss(&*q.as_ptr().add(i * d + c));
                    a[0] = _mm256_fmadd_ps(qi, k0, a[0]);
                    a[1] = _mm256_fmadd_ps(qi, k1, a[1]);
                }
            }
            for (o, a) in out.iter_mut().zip(a.iter()) {
                _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
            }
        }
    }

    /// `acc[i·dv..][..dv] += Σ_{j<n} p[i][j] · v[j·dv..][..dv]` for the `PROMPT_ROWS` rows,
    /// positions in order, with 16 columns of every row held in registers across the positions.
    pub(super) fn weighted_rows(p: &[[f32; CHUNK_KV]; PROMPT_ROWS], n: usize, v: &[f32], dv: usize, acc: &mut [f32]) {
        assert!(n <= CHUNK_KV && v.len() >= n * dv && acc.len() >= PROMPT_ROWS * dv);
        let blocks = dv / 16;
        // SAFETY: V loads read 16 values of row `j < n` below column `dv`; accumulator loads and
        // stores 16 values of row `i < PROMPT_ROWS` below column `dv`; AVX2 and FMA are enabled
        // at compile time.
        unsafe {
            for blk in 0..blocks {
                let col = blk * 16;
                let mut a = [[_mm256_setzero_ps(); 2]; PROMPT_ROWS];
                for (i, a) in a.iter_mut().enumerate() {
                    let at = acc.as_ptr().add(i * dv + col);
                    *a = [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))];
                }
                for j in 0..n {
                    let row = v.as_ptr().add(j * dv + col);
                    let v0 = _mm256_loadu_ps(row);
                    let v1 = _mm256_loadu_ps(row.add(8));
                    for (i, a) in a.iter_mut().enumerate() {
                        let pi = _mm256_broadcast_ss(&p[i][j]);
                        a[0] = _mm256_fmadd_ps(pi, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(pi, v1, a[1]);
                    }
                }
                for (i, a) in a.iter().enumerate() {
                    let at = acc.as_mut_ptr().add(i * dv + col);
                    _mm256_storeu_ps(at, a[0]);
                    _mm256_storeu_ps(at.add(8), a[1]);
                }
            }
        }
        let rest = blocks * 16;
        if rest < dv {
            for (i, p) in p.iter().enumerate() {
                for (j, &pj) in p[..n].iter().enumerate() {
                    if pj != 0.0 {
                        axpy(&mut acc[i * dv + rest..(i + 1) * dv], pj, &v[j * dv + rest..(j + 1) * dv]);
                    }
                }
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
mod lanes {
    use super::{CHUNK_KV, PROMPT_ROWS};

    #[inline]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let mut a8 = a.chunks_exact(8);
        let mut b8 = b.chunks_exact(8);
        for (x, y) in (&mut a8).zip(&mut b8) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }

    #[inline]
    pub(super) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (v, x) in y.iter_mut().zip(x) {
            *v += a * x;
        }
    }

    /// `[q · k_0, …, q · k_7]` for eight consecutive rows of `k`, `d` a multiple of eight,
    /// summed in the AVX2 version's order (which fuses each multiply-add; this does not).
    pub(super) fn dots8(q: &[f32], k: &[f32], d: usize) -> [f32; 8] {
        assert!(d % 8 == 0 && q.len() >= d && k.len() >= 8 * d);
        std::array::from_fn(|j| {
            let mut acc = [0f32; 8];
            for (x, y) in q[..d].chunks_exact(8).zip(k[j * d..(j + 1) * d].chunks_exact(8)) {
                for l in 0..8 {
                    acc[l] += x[l] * y[l];
                }
            }
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        })
    }

    /// `acc[..dv] += Σ_j p[j] · v[j·dv..][..dv]`, positions in order (zero weights skipped).
    pub(super) fn weighted_sum(p: &[f32], v: &[f32], dv: usize, acc: &mut [f32]) {
        for (j, &pj) in p.iter().enumerate() {
            if pj != 0.0 {
                axpy(&mut acc[..dv], pj, &v[j * dv..(j + 1) * dv]);
            }
        }
    }

    /// `out[i][j] = q_i · k_j` for the `PROMPT_ROWS` query rows of `q` and 16 key positions
    /// stored transposed (component `c` of key `j` at `kt[c·stride + j]`).
    pub(super) fn scores_block(q: &[f32], d: usize, kt: &[f32], stride: usize, out: &mut [[f32; 16]; PROMPT_ROWS]) {
        for (i, o) in out.iter_mut().enumerate() {
            o.fill(0.0);
            for c in 0..d {
                let qi = q[i * d + c];
                for (o, k) in o.iter_mut().zip(&kt[c * stride..][..16]) {
                    *o += qi * k;
                }
            }
        }
    }

    /// `acc[i·dv..][..dv] += Σ_{j<n} p[i][j] · v[j·dv..][..dv]` for the `PROMPT_ROWS` rows.
    pub(super) fn weighted_rows(p: &[[f32; CHUNK_KV]; PROMPT_ROWS], n: usize, v: &[f32], dv: usize, acc: &mut [f32]) {
        for (i, p) in p.iter().enumerate() {
            weighted_sum(&p[..n], v, dv, &mut acc[i * dv..]);
        }
    }
}

/// aiaas patch (item 18): the decoding attention on 512-bit vectors, reading `f16` keys and
/// values where they lie in the cache (no widened copies), several query heads of a group per
/// pass, where the CPU has AVX-512 F (detected at run time: the build targets x86-64-v3).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod wide {
    use super::{Ahead, DECODE_CHUNK};
    use core::arch::x86_64::*;
    use half::f16;

    /// Query heads per pass over a chunk's keys: `HEADS × 8` accumulators of 16 lanes, plus the
    /// key vector and the queries, fit the 32 registers.
    pub(super) const HEADS: usize = 3;

    /// Whether the CPU has AVX-512 F.
    pub(super) fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// `out[h][j] = q_h · k_j` for the `H` query rows of `q` (row `h` at `q[h·d..]`) and the
    /// key rows `rows[j]` (`d` halves each), `j < rows.len()`, eight at a time: each key row is
    /// converted once for the `H` heads, every (head, row) pair has its own accumulator (lane
    /// `c mod 16`), and the eight rows of a head are summed together as `lanes::sum8` does.
    /// A last block of fewer than eight rows repeats its first row and drops those results.
    /// Each block of eight rows requests the same eight of `ahead` from memory (item 25).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; every `rows[j]` must point to `d` readable halves, `d` a
    /// multiple of 16, and `q` must hold `H·d` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores<const H: usize>(
        q: &[f32],
        d: usize,
        rows: &[*const f16],
        out: &mut [[f32; DECODE_CHUNK]; HEADS],
        ahead: Ahead<'_>,
    ) {
        assert!(H <= HEADS && d % 16 == 0 && q.len() >= H * d && rows.len() <= DECODE_CHUNK);
        for blk in (0..rows.len()).step_by(8) {
            for j in blk..blk + 8 {
                ahead.request(j);
            }
            let n = (rows.len() - blk).min(8);
            let mut r = [rows[blk]; 8];
            r[..n].copy_from_slice(&rows[blk..blk + n]);
            let mut acc = [[_mm512_setzero_ps(); 8]; H];
            for c in (0..d).step_by(16) {
                let mut qv = [_mm512_setzero_ps(); H];
                for (h, qv) in qv.iter_mut().enumerate() {
                    *qv = _mm512_loadu_ps(q.as_ptr().add(h * d + c));
                }
                for (j, row) in r.iter().enumerate() {
                    let kv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c) as *const __m256i));
                    for h in 0..H {
                        acc[h][j] = _mm512_fmadd_ps(qv[h], kv, acc[h][j]);
                    }
                }
            }
            for h in 0..H {
                let mut halves = [_mm256_setzero_ps(); 8];
                for (half, a) in halves.iter_mut().zip(&acc[h]) {
                    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*a), 1));
                    *half = _mm256_add_ps(_mm512_castps512_ps256(*a), hi);
                }
                let mut sums = [0f32; 8];
                _mm256_storeu_ps(sums.as_mut_ptr(), super::lanes::sum8(&halves));
                out[h][blk..blk + n].copy_from_slice(&sums[..n]);
            }
        }
    }

    /// `acc[h·dv..][..dv] += Σ_j p[h][j] · v_j` for the `H` heads, value rows `rows[j]` (`dv`
    /// halves each), positions in order: each lane one fused multiply-add per position (as
    /// `lanes::weighted_sum`), zero weights skipped per head; each value row converted once
    /// for the `H` heads, 64 columns per pass. The first pass requests `ahead`'s row `j` from
    /// memory at position `j` (item 25).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; every `rows[j]` must point to `dv` readable halves, `dv` a
    /// multiple of 16, and `acc` must hold `H·dv` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted<const H: usize>(
        p: &[[f32; DECODE_CHUNK]; HEADS],
        rows: &[*const f16],
        dv: usize,
        acc: &mut [f32],
        ahead: Ahead<'_>,
    ) {
        assert!(H <= HEADS && dv % 16 == 0 && acc.len() >= H * dv && rows.len() <= DECODE_CHUNK);
        let mut col = 0;
        while dv - col >= 64 {
            let ahead = if col == 0 { ahead } else { Ahead::NONE };
            weighted_cols::<H, 4>(p, rows, dv, col, acc, ahead);
            col += 64;
        }
        while col < dv {
            let ahead = if col == 0 { ahead } else { Ahead::NONE };
            weighted_cols::<H, 1>(p, rows, dv, col, acc, ahead);
            col += 16;
        }
    }

    /// `weighted`'s pass over columns `col..col + 16·W`, its accumulators in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weighted_cols<const H: usize, const W: usize>(
        p: &[[f32; DECODE_CHUNK]; HEADS],
        rows: &[*const f16],
        dv: usize,
        col: usize,
        acc: &mut [f32],
        ahead: Ahead<'_>,
    ) {
        let mut r = [[_mm512_setzero_ps(); W]; H];
        for (h, r) in r.iter_mut().enumerate() {
            for (i, r) in r.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(acc.as_ptr().add(h * dv + col + 16 * i));
            }
        }
        for (j, row) in rows.iter().enumerate() {
            ahead.request(j);
            let mut vv = [_mm512_setzero_ps(); W];
            for (i, vv) in vv.iter_mut().enumerate() {
                *vv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(col + 16 * i) as *const __m256i));
            }
            for h in 0..H {
                let pj = p[h][j];
                if pj == 0.0 {
                    continue;
                }
                let pj = _mm512_set1_ps(pj);
                for i in 0..W {
                    r[h][i] = _mm512_fmadd_ps(pj, vv[i], r[h][i]);
                }
            }
        }
        for (h, r) in r.iter().enumerate() {
            for (i, r) in r.iter().enumerate() {
                _mm512_storeu_ps(acc.as_mut_ptr().add(h * dv + col + 16 * i), *r);
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
mod wide {
    use super::{Ahead, DECODE_CHUNK};
    use half::f16;

    pub(super) const HEADS: usize = 3;

    pub(super) fn supported() -> bool {
        false
    }

    pub(super) unsafe fn scores<const H: usize>(
        _: &[f32],
        _: usize,
        _: &[*const f16],
        _: &mut [[f32; DECODE_CHUNK]; HEADS],
        _: Ahead<'_>,
    ) {
        unreachable!("AVX-512 decoding kernels on a build without AVX2")
    }

    pub(super) unsafe fn weighted<const H: usize>(
        _: &[[f32; DECODE_CHUNK]; HEADS],
        _: &[*const f16],
        _: usize,
        _: &mut [f32],
        _: Ahead<'_>,
    ) {
        unreachable!("AVX-512 decoding kernels on a build without AVX2")
    }
}

/// aiaas patch (item 23): the decoding attention on 256-bit vectors for CPUs without AVX-512
/// (the build's x86-64-v3: AVX2, FMA, F16C), reading `f16` keys and values where they lie in
/// the cache as item 18's `wide` does, several query heads of a group per pass. Each score and
/// each weighted value is computed by the same operations as the widening path's
/// (`lanes::dots8`, `lanes::weighted_sum` on rows widened first), so the same bits.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod narrow {
    use super::wide::HEADS;
    use super::{Ahead, DECODE_CHUNK};
    use core::arch::x86_64::*;
    use half::f16;

    /// Whether the build has these kernels.
    pub(super) fn supported() -> bool {
        true
    }

    /// `out[h][j] = q_h · k_j` for the `H` query rows of `q` (row `h` at `q[h·d..]`) and the
    /// key rows `rows[j]` (`d` halves each), four rows at a time (`H × 4` accumulators, which
    /// with the key vector fit the 16 registers): each key row is converted once for the `H`
    /// heads, each (head, row) pair accumulates lane `c mod 8` in order of `c`, and the four
    /// rows of a head are summed together in `lanes::sum8`'s order. A last block of fewer than
    /// four rows repeats its first row and drops those results. Each block of four rows
    /// requests the same four of `ahead` from memory.
    ///
    /// # Safety
    /// Every `rows[j]` must point to `d` readable halves, `d` a multiple of 8, and `q` must
    /// hold `H·d` values.
    pub(super) unsafe fn scores<const H: usize>(
        q: &[f32],
        d: usize,
        rows: &[*const f16],
        out: &mut [[f32; DECODE_CHUNK]; HEADS],
        ahead: Ahead<'_>,
    ) {
        assert!(H <= HEADS && d % 8 == 0 && q.len() >= H * d && rows.len() <= DECODE_CHUNK);
        for blk in (0..rows.len()).step_by(4) {
            for j in blk..blk + 4 {
                ahead.request(j);
            }
            let n = (rows.len() - blk).min(4);
            let mut r = [rows[blk]; 4];
            r[..n].copy_from_slice(&rows[blk..blk + n]);
            let mut acc = [[_mm256_setzero_ps(); 4]; H];
            for c in (0..d).step_by(8) {
                for (j, row) in r.iter().enumerate() {
                    let kv = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c) as *const __m128i));
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let qv = _mm256_loadu_ps(q.as_ptr().add(h * d + c));
                        acc[j] = _mm256_fmadd_ps(qv, kv, acc[j]);
                    }
                }
            }
            for (h, acc) in acc.iter().enumerate() {
                let mut sums = [0f32; 4];
                _mm_storeu_ps(sums.as_mut_ptr(), sum4(acc));
                out[h][blk..blk + n].copy_from_slice(&sums[..n]);
            }
        }
    }

    /// `[Σ acc[0], …, Σ acc[3]]`: each vector's lanes summed as `lanes::sum8` sums them,
    /// `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`.
    #[inline]
    unsafe fn sum4(acc: &[__m256; 4]) -> __m128 {
        // [r0 01, r0 23, r1 01, r1 23 | r0 45, r0 67, r1 45, r1 67], and so on.
        let s01 = _mm256_hadd_ps(acc[0], acc[1]);
        let s23 = _mm256_hadd_ps(acc[2], acc[3]);
        // [r0 0-3, r1 0-3, r2 0-3, r3 0-3 | r0 4-7, r1 4-7, r2 4-7, r3 4-7].
        let s = _mm256_hadd_ps(s01, s23);
        _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
    }

    /// `acc[h·dv..][..dv] += Σ_j p[h][j] · v_j` for the `H` heads, value rows `rows[j]` (`dv`
    /// halves each), positions in order: each lane one fused multiply-add per position (as
    /// `lanes::weighted_sum`), zero weights skipped per head; each value row converted once
    /// for the `H` heads, 16 columns per pass (`H × 2` accumulators). The first pass requests
    /// `ahead`'s row `j` from memory at position `j`.
    ///
    /// # Safety
    /// Every `rows[j]` must point to `dv` readable halves, `dv` a multiple of 8, and `acc` must
    /// hold `H·dv` values.
    pub(super) unsafe fn weighted<const H: usize>(
        p: &[[f32; DECODE_CHUNK]; HEADS],
        rows: &[*const f16],
        dv: usize,
        acc: &mut [f32],
        ahead: Ahead<'_>,
    ) {
        assert!(H <= HEADS && dv % 8 == 0 && acc.len() >= H * dv && rows.len() <= DECODE_CHUNK);
        let mut col = 0;
        while dv - col >= 16 {
            let ahead = if col == 0 { ahead } else { Ahead::NONE };
            weighted_cols::<H, 2>(p, rows, dv, col, acc, ahead);
            col += 16;
        }
        if col < dv {
            let ahead = if col == 0 { ahead } else { Ahead::NONE };
            weighted_cols::<H, 1>(p, rows, dv, col, acc, ahead);
        }
    }

    /// `weighted`'s pass over columns `col..col + 8·W`, its accumulators in registers.
    #[inline]
    unsafe fn weighted_cols<const H: usize, const W: usize>(
        p: &[[f32; DECODE_CHUNK]; HEADS],
        rows: &[*const f16],
        dv: usize,
        col: usize,
        acc: &mut [f32],
        ahead: Ahead<'_>,
    ) {
        let mut r = [[_mm256_setzero_ps(); W]; H];
        for (h, r) in r.iter_mut().enumerate() {
            for (i, r) in r.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(acc.as_ptr().add(h * dv + col + 8 * i));
            }
        }
        for (j, row) in rows.iter().enumerate() {
            ahead.request(j);
            let mut vv = [_mm256_setzero_ps(); W];
            for (i, vv) in vv.iter_mut().enumerate() {
                *vv = _mm256_cvtph_ps(_mm_loadu_si128(row.add(col + 8 * i) as *const __m128i));
            }
            for (h, r) in r.iter_mut().enumerate() {
                let pj = p[h][j];
                if pj == 0.0 {
                    continue;
                }
                let pj = _mm256_set1_ps(pj);
                for (r, vv) in r.iter_mut().zip(vv) {
                    *r = _mm256_fmadd_ps(pj, vv, *r);
                }
            }
        }
        for (h, r) in r.iter().enumerate() {
            for (i, r) in r.iter().enumerate() {
                _mm256_storeu_ps(acc.as_mut_ptr().add(h * dv + col + 8 * i), *r);
            }
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
mod narrow {
    use super::wide::HEADS;
    use super::{Ahead, DECODE_CHUNK};
    use half::f16;

    pub(super) fn supported() -> bool {
        false
    }

    pub(super) unsafe fn scores<const H: usize>(
        _: &[f32],
        _: usize,
        _: &[*const f16],
        _: &mut [[f32; DECODE_CHUNK]; HEADS],
        _: Ahead<'_>,
    ) {
        unreachable!("256-bit decoding kernels on a build without AVX2, FMA and F16C")
    }

    pub(super) unsafe fn weighted<const H: usize>(
        _: &[[f32; DECODE_CHUNK]; HEADS],
        _: &[*const f16],
        _: usize,
        _: &mut [f32],
        _: Ahead<'_>,
    ) {
        unreachable!("256-bit decoding kernels on a build without AVX2, FMA and F16C")
    }
}

/// aiaas patch (items 23, 25): rows for a decoding kernel to request from memory while it computes
/// (`rows[j]` at its `j`-th key row or position), `bytes` bytes each: the next rows its task
/// reads, so that they arrive meanwhile rather than all being waited for when it starts on them.
#[derive(Clone, Copy)]
struct Ahead<'r> {
    rows: &'r [*const f16],
    bytes: usize,
}

impl Ahead<'_> {
    const NONE: Self = Self { rows: &[], bytes: 0 };

    /// Requests `rows[j]`'s lines, if there is such a row.
    #[inline(always)]
    fn request(self, j: usize) {
        if let Some(&row) = self.rows.get(j) {
            prefetch([row.cast()], self.bytes);
        }
    }
}

/// aiaas patch: requests the `bytes` bytes at each of `rows` from memory, one request per cache
/// line (a prefetch never faults; a no-op off x86-64).
fn prefetch(rows: impl IntoIterator<Item = *const u8>, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // A counted loop per row (a `step_by` range costs more than the prefetch itself).
        let lines = bytes.div_ceil(64);
        for row in rows {
            for line in 0..lines {
                // SAFETY: SSE is part of x86-64; a prefetch reads nothing architecturally.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                        row.wrapping_add(64 * line) as *const i8,
                    )
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (rows, bytes);
}

/// aiaas patch: `y *= a`.
#[inline]
fn scale_in_place(y: &mut [f32], a: f32) {
    for v in y.iter_mut() {
        *v *= a;
    }
}

/// aiaas patch: one query row meets a chunk of key positions. `scores` holds their logits
/// (scaled, capped and masked; `-inf` where masked); `v` their value rows, `dv` values each.
/// Updates the row's online-softmax state: running maximum `m`, running sum `s` and the
/// weighted sum of value rows `acc` (zero while `m` is `-inf`).
#[inline]
fn softmax_accumulate(scores: &[f32], v: &[f32], dv: usize, acc: &mut [f32], s: &mut f32, m: &mut f32) {
    let chunk_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if chunk_max == f32::NEG_INFINITY {
        return;
    }
    if chunk_max > *m {
        if *m != f32::NEG_INFINITY {
            let factor = (*m - chunk_max).exp();
            scale_in_place(acc, factor);
            *s *= factor;
        }
        *m = chunk_max;
    }
    for (j, &score) in scores.iter().enumerate() {
        let p = (score - *m).exp();
        if p == 0.0 {
            continue;
        }
        *s += p;
        lanes::axpy(acc, p, &v[j * dv..(j + 1) * dv]);
    }
}

/// aiaas patch: the logit of one query row against one key row.
#[inline]
fn logit(q: &[f32], k: &[f32], scale: f32, logit_softcap: f32) -> f32 {
    softcap(lanes::dot(q, k) * scale, logit_softcap)
}

/// aiaas patch: `x` soft-capped at `logit_softcap` (0: not capped).
#[inline]
fn softcap(x: f32, logit_softcap: f32) -> f32 {
    if logit_softcap != 0.0 {
        logit_softcap * (x / logit_softcap).tanh()
    } else {
        x
    }
}


#[inline]
fn clamp_index(idx: usize, dim: usize) -> usize {
    if dim == 0 {
        0
    } else if idx >= dim {
        dim - 1
    } else {
        idx
    }
}

#[inline]
fn mask_offset(
    dims: &[usize],
    b: usize,
    h: usize,
    b_i: usize,
    h_i: usize,
    q_pos: usize,
    kv_pos: usize,
) -> Option<usize> {
    if dims.is_empty() {
        return Some(0);
    }

    match dims.len() {
        1 => {
            let kv_dim = dims[0];
            if kv_dim == 0 {
                None
            } else {
                Some(clamp_index(kv_pos, kv_dim))
            }
        }
        2 => {
            let q_dim = dims[0];
            let kv_dim = dims[1];
            if q_dim == 0 || kv_dim == 0 {
                None
            } else {
                let q_idx = clamp_index(q_pos, q_dim);
                let kv_idx = clamp_index(kv_pos, kv_dim);
                Some(q_idx * kv_dim + kv_idx)
            }
        }
        3 => {
            let d0 = dims[0];
            let d1 = dims[1];
            let d2 = dims[2];
            if d0 == 0 || d1 == 0 || d2 == 0 {
                return None;
            }
            let q_idx = clamp_index(q_pos, d1);
            let kv_idx = clamp_index(kv_pos, d2);
            if d0 == b || d0 == 1 {
                let b_idx = if d0 == 1 { 0 } else { clamp_index(b_i, d0) };
                Some((b_idx * d1 + q_idx) * d2 + kv_idx)
            } else if d0 == h || d0 == 1 {
                let h_idx = if d0 == 1 { 0 } else { clamp_index(h_i, d0) };
                Some((h_idx * d1 + q_idx) * d2 + kv_idx)
            } else if d0 == b.saturating_mul(h) {
                let combined_idx = clamp_index(b_i * h + h_i, d0);
                Some((combined_idx * d1 + q_idx) * d2 + kv_idx)
            } else {
                Some(q_idx * d2 + kv_idx)
            }
        }
        4 => {
            let d0 = dims[0];
            let d1 = dims[1];
            let d2 = dims[2];
            let d3 = dims[3];
            if d0 == 0 || d1 == 0 || d2 == 0 || d3 == 0 {
                return None;
            }
            let b_idx = if d0 == 1 {
                0
            } else if d0 == b {
                clamp_index(b_i, d0)
            } else if d0 == b.saturating_mul(h) {
                clamp_index(b_i * h + h_i, d0)
            } else {
                clamp_index(b_i, d0)
            };
            let h_idx = if d1 == 1 {
                0
            } else if d1 == h {
                clamp_index(h_i, d1)
            } else if d1 == b {
                clamp_index(b_i, d1)
            } else {
                clamp_index(h_i, d1)
            };
            let q_idx = clamp_index(q_pos, d2);
            let kv_idx = clamp_index(kv_pos, d3);
            Some(((b_idx * d1 + h_idx) * d2 + q_idx) * d3 + kv_idx)
        }
        _ => {
            let q_dim = *dims.get(dims.len().saturating_sub(2))?;
            let kv_dim = *dims.last()?;
            if q_dim == 0 || kv_dim == 0 {
                return None;
            }
            let q_idx = clamp_index(q_pos, q_dim);
            let kv_idx = clamp_index(kv_pos, kv_dim);
            let mut prefix_dim = 1usize;
            for &dim in &dims[..dims.len() - 2] {
                if dim == 0 {
                    return None;
                }
                prefix_dim = prefix_dim.saturating_mul(dim);
            }
            let combined_idx = if prefix_dim == 0 {
                0
            } else {
                let idx_val = b_i * h + h_i;
                idx_val.min(prefix_dim - 1)
            };
            Some((combined_idx * q_dim + q_idx) * kv_dim + kv_idx)
        }
    }
}

struct MaskInfo<'a> {
    data: &'a [f32],
    dims: &'a [usize],
    b: usize,
    h: usize,
}

impl<'a> MaskInfo<'a> {
    /// aiaas patch: the mask values of one query row for key positions `0..kv_len`, where they
    /// lie one after another (mask of one to four dimensions whose last one, the key positions',
    /// has at least `kv_len` entries: `mask_offset` then adds `kv_pos` last, with stride one), so
    /// the prompt kernel reads `row[kv_pos]` instead of calling `value` per key position. The
    /// same values as `value`.
    #[inline]
    fn row(&self, b_i: usize, h_i: usize, q_pos: usize, kv_len: usize) -> Option<&'a [f32]> {
        if !(1..=4).contains(&self.dims.len()) || *self.dims.last()? < kv_len {
            return None;
        }
        let base = mask_offset(self.dims, self.b, self.h, b_i, h_i, q_pos, 0)?;
        self.data.get(base..base + kv_len)
    }

    #[inline]
    fn value(&self, b_i: usize, h_i: usize, q_pos: usize, kv_pos: usize) -> f32 {
        if let Some(idx) = mask_offset(self.dims, self.b, self.h, b_i, h_i, q_pos, kv_pos) {
            *self.data.get(idx).unwrap_or(&0.0)
        } else {
            0.0
        }
    }
}

pub(crate) trait DowncastF32 {
    fn cast(x: f32) -> Self;
}

impl DowncastF32 for f32 {
    fn cast(x: f32) -> Self {
        x
    }
}

impl DowncastF32 for f16 {
    fn cast(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl DowncastF32 for bf16 {
    fn cast(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Up‑cast helper: convert any supported element type to `f32` once so that the
/// hot kernels can run entirely in `f32` and only down‑cast when writing out.
pub trait UpcastF32 {
    fn to_f32(self) -> f32;
}

impl UpcastF32 for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl UpcastF32 for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
}

impl UpcastF32 for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
}

pub fn run_flash_attn_cpu<T>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Tensor>
where
    T: WithDType + Sum + num_traits::real::Real + DowncastF32 + UpcastF32 + WidenF32 + Copy,
{
    // Inline CPU slice extraction for q, k, v, and optional mask
    let (q_guard, q_layout) = q.storage_and_layout();
    let q_data: &[T] = if let Storage::Cpu(cpu) = &*q_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for q")?;
        &data[q_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for q".into()));
    };
    let (k_guard, k_layout) = k.storage_and_layout();
    let k_data: &[T] = if let Storage::Cpu(cpu) = &*k_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for k")?;
        &data[k_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for k".into()));
    };
    let (v_guard, v_layout) = v.storage_and_layout();
    let v_data: &[T] = if let Storage::Cpu(cpu) = &*v_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for v")?;
        &data[v_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for v".into()));
    };
    let mut mask_buffer: Option<Vec<f32>> = None;
    let mut mask_dims: Option<Vec<usize>> = None;
    if let Some(mask_tensor) = mask {
        mask_dims = Some(mask_tensor.shape().dims().to_vec());
        let buffer = {
            let (guard, layout) = mask_tensor.storage_and_layout();
            if let Storage::Cpu(cpu) = &*guard {
                let data = cpu
                    .as_slice::<T>()
                    .context("Expected CPU storage for mask")?;
                data[layout.start_offset()..]
                    .iter()
                    .map(|v| (*v).to_f32())
                    .collect::<Vec<f32>>()
            } else {
                return Err(candle_core::Error::Msg(
                    "Expected CPU storage for mask".into(),
                ));
            }
        };
        mask_buffer = Some(buffer);
    }
    // q_guard, k_guard, v_guard, and m_guard (if any) are kept in scope to hold storage alive

    let q_stride = q.stride();
    let k_stride = k.stride();
    let v_stride = v.stride();

    // Fast path for decode: q_len == 1
    let mask_dims_ref = mask_dims.as_deref();
    let mask_slice = mask_buffer.as_deref();

    if q.shape().dims()[1] == 1 {
        return flash_attn_cpu_single_q(
            q_data,
            k_data,
            v_data,
            mask_slice,
            mask_dims_ref,
            q.shape().dims(),
            k.shape().dims(),
            v.shape().dims(),
            q_stride,
            k_stride,
            v_stride,
            sdpa_params.softmax_scale,
            0.0,
            sdpa_params.softcap.unwrap_or(0.0),
        );
    }

    flash_attn_cpu(
        q_data,
        k_data,
        v_data,
        mask_slice,
        mask_dims_ref,
        q.shape().dims(),
        k.shape().dims(),
        v.shape().dims(),
        q_stride,
        k_stride,
        v_stride,
        sdpa_params.softmax_scale,
        0.0,
        sdpa_params.softcap.unwrap_or(0.0),
    )
}

/// Optimised path for the common decode case: q_len == 1 but kv_len ≫ 1.
/// All intermediate maths is done in `f32`; we down‑cast to `T` exactly once
/// when writing the output buffer.
///
/// aiaas patch: every batch entry is a `DecodeSeq` of the same tensors, attended by
/// `decode_attention` (see there); upstream kept one scratch slot per tile and head for all
/// batch entries, so with several sequences decoding together every sequence received the
/// attention output of the last one in the batch.
#[allow(clippy::too_many_arguments)]
fn flash_attn_cpu_single_q<T>(
    q_data: &[T],
    k_data: &[T],
    v_data: &[T],
    mask_vec: Option<&[f32]>,
    mask_dims: Option<&[usize]>,
    qshape: &[usize],
    kshape: &[usize],
    vshape: &[usize],
    qstride: &[usize],
    kstride: &[usize],
    vstride: &[usize],
    scale: f32,
    max_bias: f32,
    logit_softcap: f32,
) -> Result<Tensor>
where
    T: WithDType + Copy + UpcastF32 + DowncastF32 + WidenF32,
{
    let (b, _q_len, h, d) = (qshape[0], qshape[1], qshape[2], qshape[3]);
    let seqs: Vec<DecodeSeq<'_, T>> = (0..b)
        .map(|b_i| DecodeSeq {
            q: q_data,
            k: k_data,
            v: v_data,
            qstride,
            kstride,
            vstride,
            b_i,
            kv_len: kshape[1],
        })
        .collect();
    let mask_info = match (mask_vec, mask_dims) {
        (Some(data), Some(dims)) => Some(MaskInfo { data, dims, b, h }),
        _ => None,
    };
    let heads = DecodeHeads { h, k_h: kshape[2], v_h: vshape[2], d, dv: d };
    let out = decode_attention(&seqs, heads, mask_info.as_ref(), scale, max_bias, logit_softcap);
    Tensor::from_vec(out, (b, h, 1, d), &Device::Cpu)
}

/// aiaas patch: the query row of one decoding sequence (`b_i` of tensors shaped
/// `(B, S, H, D)`, candle's strides), and its keys and values, `kv_len` positions.
struct DecodeSeq<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    qstride: &'a [usize],
    kstride: &'a [usize],
    vstride: &'a [usize],
    b_i: usize,
    kv_len: usize,
}

/// aiaas patch: whether `decode_attention` scores eight positions per horizontal sum
/// (`lanes::dots8`); `AIAAS_DECODE_DOTS8=off` scores one at a time (for side-by-side runs).
fn decode_dots8() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::layers::switch_on(&ON, "AIAAS_DECODE_DOTS8")
}

/// aiaas patch: whether a decoding task requests its chunk's K and V rows from memory before
/// it reads them (item 18); `AIAAS_DECODE_PREFETCH=off` leaves them to the hardware (for
/// side-by-side runs).
fn decode_prefetch() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::layers::switch_on(&ON, "AIAAS_DECODE_PREFETCH")
}

/// aiaas patch: query heads, key and value heads, and their widths.
#[derive(Clone, Copy)]
struct DecodeHeads {
    h: usize,
    k_h: usize,
    v_h: usize,
    d: usize,
    dv: usize,
}

/// aiaas patch: the `len` values of sequence `b_i`'s row at `pos` of `head` in a tensor laid out
/// by `stride` (`[sequence, position, head]`): a K or V cache, or a prompt's Q, K or V.
fn cache_row<'s, T>(data: &'s [T], stride: &[usize], b_i: usize, pos: usize, head: usize, len: usize) -> &'s [T] {
    let base = b_i * stride[0] + pos * stride[1] + head * stride[2];
    &data[base..base + len]
}

/// aiaas patch: key positions per task of `decode_attention`.
const DECODE_CHUNK: usize = 64;

/// aiaas patch: a decoding task's working memory: its query heads in `f32`, its chunk's K and V
/// rows widened to `f32` (the widening kernel only), its heads' scores, and its K and V row
/// addresses, and a whole-pair task's chunk states (item 20). Rayon runs `for_each_init`'s
/// `init` for every piece it splits the tasks into, often one task, so the buffers are kept
/// per thread (`DECODE_SCRATCH`) rather than allocated and zeroed there: `take` lends them to
/// a piece and its guard gives them back.
struct DecodeScratch {
    qf: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    scores: Box<[[f32; DECODE_CHUNK]; wide::HEADS]>,
    rows: Vec<*const f16>,
    /// A whole-pair task's chunk states (item 20).
    parts: Vec<f32>,
}

thread_local! {
    static DECODE_SCRATCH: std::cell::Cell<Option<DecodeScratch>> = const { std::cell::Cell::new(None) };
}

/// aiaas patch: a piece's loan of its thread's `DecodeScratch`, given back when it drops.
struct ScratchLoan(Option<DecodeScratch>);

impl DecodeScratch {
    /// This thread's buffers (new ones where none are kept here, e.g. lent to another piece),
    /// each grown to hold at least `q`, `k` and `v` values.
    fn take(q: usize, k: usize, v: usize, parts: usize) -> ScratchLoan {
        let mut s = DECODE_SCRATCH.take().unwrap_or_else(|| DecodeScratch {
            qf: Vec::new(),
            kbuf: Vec::new(),
            vbuf: Vec::new(),
            scores: Box::new([[0f32; DECODE_CHUNK]; wide::HEADS]),
            rows: vec![std::ptr::null(); 2 * DECODE_CHUNK],
            parts: Vec::new(),
        });
        for (buf, len) in [(&mut s.qf, q), (&mut s.kbuf, k), (&mut s.vbuf, v), (&mut s.parts, parts)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        ScratchLoan(Some(s))
    }
}

impl ScratchLoan {
    fn parts(&mut self) -> &mut DecodeScratch {
        self.0.as_mut().expect("a loan holds its buffers until it drops")
    }
}

impl Drop for ScratchLoan {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            // Dropped with the thread's storage where that is already gone.
            let _ = DECODE_SCRATCH.try_with(|cell| cell.set(Some(s)));
        }
    }
}

/// aiaas patch: one decoding step's attention for every sequence of `seqs` (one query row
/// each). The work is split into chunks of `DECODE_CHUNK` key positions (counted from position
/// 0) per sequence and group of query heads sharing a key and value head (grouped-query
/// attention); each chunk gives its heads a partial softmax state (`decode_chunk`), and a
/// head's chunks are then merged in order (`merge_head`). Where `whole_pairs` says so (item
/// 20: a batch, or contexts short enough), a task takes a whole (sequence, group) pair, its
/// chunks one after the other and then their merge, and writes the pair's outputs; otherwise
/// (one or two long sequences) a task takes one chunk, and a second parallel loop merges.
/// Either way every chunk and every merge computes the same values in the same order, and
/// every output depends only on its own sequence's data (and mask), never on the other
/// sequences nor on how many there are, so a sequence gets the same bits alone and batched.
/// Returns `[seq][head][dv]`.
fn decode_attention<T>(
    seqs: &[DecodeSeq<'_, T>],
    heads: DecodeHeads,
    mask: Option<&MaskInfo<'_>>,
    scale: f32,
    max_bias: f32,
    logit_softcap: f32,
) -> Vec<T>
where
    T: WithDType + Copy + DowncastF32 + WidenF32,
{
    let DecodeHeads { h, k_h, v_h, d, dv } = heads;
    let rk2 = h / k_h;
    let rv2 = h / v_h;
    // Query heads per task: a key head's group where the value heads are grouped alike.
    let group = if rk2 == rv2 { rk2 } else { 1 };
    let groups = h / group;
    let n2 = 2_usize.pow((h as f32).log2().ceil() as u32);
    let dots8 = decode_dots8();
    let step = DecodeStep {
        heads,
        group,
        mask,
        scale,
        logit_softcap,
        max_bias,
        n2,
        dots8,
        direct: Direct::choose(T::IS_F16, d, dv, dots8),
        prefetch: decode_prefetch(),
    };
    let scratch = |parts: usize| {
        let (k, v) = match step.direct {
            Some(_) => (0, 0),
            None => (DECODE_CHUNK * d, DECODE_CHUNK * dv),
        };
        DecodeScratch::take(group.max(wide::HEADS) * d, k, v, parts)
    };
    let mut out = vec![T::cast(0.0); seqs.len() * h * dv];

    in_attention_pool(|| {
        let chunks = || seqs.iter().map(|s| s.kv_len.div_ceil(DECODE_CHUNK));
        let most = chunks().max().unwrap_or(0);
        let whole = match decode_tasks() {
            DecodeTasks::Auto => whole_pairs(
                seqs.len() * groups,
                most,
                chunks().sum::<usize>() * groups,
                rayon::current_num_threads(),
            ),
            DecodeTasks::Whole => true,
            DecodeTasks::Chunks => false,
        };
        if whole {
            // Item 20: a task per (sequence, group), writing its heads' outputs, which are
            // contiguous in `out`.
            out.par_chunks_mut(group * dv).enumerate().for_each_init(
                || scratch(most * group * (dv + 2) + dv),
                |loan, (pair, out)| {
                    let (s, g) = (pair / groups, pair % groups);
                    let chunks = seqs[s].kv_len.div_ceil(DECODE_CHUNK);
                    let sc = loan.parts();
                    let mut parts = std::mem::take(&mut sc.parts);
                    let (acc, rest) = parts.split_at_mut(chunks * group * dv);
                    let (sums, rest) = rest.split_at_mut(chunks * group);
                    let (maxes, rest) = rest.split_at_mut(chunks * group);
                    let vkq = &mut rest[..dv];
                    for c in 0..chunks {
                        step.decode_chunk(
                            sc,
                            &seqs[s],
                            g,
                            c,
                            &mut acc[c * group * dv..][..group * dv],
                            &mut sums[c * group..][..group],
                            &mut maxes[c * group..][..group],
                        );
                    }
                    for (hg, out) in out.chunks_exact_mut(dv).enumerate() {
                        merge_head(acc, sums, maxes, chunks, group, hg, vkq, out);
                    }
                    sc.parts = parts;
                },
            );
            return;
        }

        // Tasks: (sequence, group, chunk); `first[s]` is sequence `s`'s first task.
        let mut first = Vec::with_capacity(seqs.len() + 1);
        let mut tasks = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            first.push(tasks.len());
            for g in 0..groups {
                for c in 0..seq.kv_len.div_ceil(DECODE_CHUNK) {
                    tasks.push((s, g, c));
                }
            }
        }
        first.push(tasks.len());
        let mut part_acc = vec![0f32; tasks.len() * group * dv];
        let mut part_s = vec![0f32; tasks.len() * group];
        let mut part_m = vec![f32::NEG_INFINITY; tasks.len() * group];
        part_acc
            .par_chunks_mut(group * dv)
            .zip(part_s.par_chunks_mut(group))
            .zip(part_m.par_chunks_mut(group))
            .zip(tasks.par_iter())
            .for_each_init(
                || scratch(0),
                |loan, (((acc, sums), maxes), &(s, g, c))| {
                    step.decode_chunk(loan.parts(), &seqs[s], g, c, acc, sums, maxes);
                },
            );

        // Merge each head's chunks, in order.
        out.par_chunks_mut(dv).enumerate().for_each_init(
            || vec![0f32; dv],
            |vkq, (slot, out)| {
                let (s, h_i) = (slot / h, slot % h);
                let (g, hg) = (h_i / group, h_i % group);
                let chunks = seqs[s].kv_len.div_ceil(DECODE_CHUNK);
                let t0 = first[s] + g * chunks;
                let (acc, sums, maxes) = (
                    &part_acc[t0 * group * dv..][..chunks * group * dv],
                    &part_s[t0 * group..][..chunks * group],
                    &part_m[t0 * group..][..chunks * group],
                );
                merge_head(acc, sums, maxes, chunks, group, hg, vkq, out);
            },
        );
    });
    out
}

/// aiaas patch (item 20): the fewest (sequence, group) pairs per thread for which
/// `decode_attention` makes a task of each pair rather than of each chunk, whatever their
/// lengths (stealing evens out pairs of different lengths).
const WHOLE_GROUP_TASKS: usize = 4;

/// aiaas patch (item 21): about how many chunk tasks' time chunk tasks lose to their second
/// parallel loop (the merge, with its fork, join and wake-ups), as measured with
/// `aiaas-attention` on a Zen 5 host: one sequence of 64 to 300 positions took about 10-30%
/// less time in whole-pair tasks (three tasks on two threads), 400 as long, 512 a little more.
const MERGE_LOOP_CHUNKS: usize = 3;

/// aiaas patch (items 20 and 21): whether a decoding step of `pairs` (sequence, group) pairs,
/// of at most `most` chunks each and `chunks` in all, takes a task per pair on `threads`
/// threads: with at least `WHOLE_GROUP_TASKS` pairs per thread, or where the pairs' worst
/// split over the threads (`pairs / threads` of the longest, rounded up) costs no more than an
/// even split of the chunks plus the merge loop that chunk tasks need. One sequence of the demo
/// model's three groups on two threads takes whole pairs up to 448 positions.
fn whole_pairs(pairs: usize, most: usize, chunks: usize, threads: usize) -> bool {
    let threads = threads.max(1);
    pairs >= WHOLE_GROUP_TASKS * threads
        || pairs.div_ceil(threads) * most <= chunks.div_ceil(threads) + MERGE_LOOP_CHUNKS
}

/// aiaas patch: what every chunk of one decoding step's attention shares.
struct DecodeStep<'m> {
    heads: DecodeHeads,
    group: usize,
    mask: Option<&'m MaskInfo<'m>>,
    scale: f32,
    logit_softcap: f32,
    /// ALiBi's maximum bias (0: none) and the power of two at or above the head count.
    max_bias: f32,
    n2: usize,
    dots8: bool,
    /// The kernel that reads `f16` rows where they lie, if any (items 18 and 23); `None`: the
    /// widening one.
    direct: Option<Direct>,
    prefetch: bool,
}

/// aiaas patch (items 18 and 23): the decoding kernels that read a chunk's `f16` keys and
/// values where they lie in the cache, without widened copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direct {
    /// 512-bit vectors (`wide`, item 18), where the CPU has AVX-512 F.
    Wide,
    /// 256-bit vectors (`narrow`, item 23): the widening kernel's bits.
    Narrow,
}

impl Direct {
    /// The kernel for caches of `f16` (`is_f16`) with key and value heads of `d` and `dv`:
    /// `Wide` where the CPU has AVX-512 F and both are multiples of 16, else `Narrow` where
    /// both are multiples of 8 and scores are summed eight positions at a time (`dots8`, whose
    /// bits it gives); each unless switched off.
    fn choose(is_f16: bool, d: usize, dv: usize, dots8: bool) -> Option<Self> {
        if !is_f16 {
            None
        } else if decode_avx512() && d % 16 == 0 && dv % 16 == 0 {
            Some(Self::Wide)
        } else if decode_direct() && dots8 && d % 8 == 0 && dv % 8 == 0 {
            Some(Self::Narrow)
        } else {
            None
        }
    }

    /// `wide::scores` or `narrow::scores` for `hs` heads (1 to `wide::HEADS`).
    ///
    /// # Safety
    /// As theirs; `Wide` only where the CPU has AVX-512 F.
    unsafe fn scores(
        self,
        hs: usize,
        q: &[f32],
        d: usize,
        rows: &[*const f16],
        out: &mut [[f32; DECODE_CHUNK]; wide::HEADS],
        ahead: Ahead<'_>,
    ) {
        match (self, hs) {
            (Self::Wide, 1) => wide::scores::<1>(q, d, rows, out, ahead),
            (Self::Wide, 2) => wide::scores::<2>(q, d, rows, out, ahead),
            (Self::Wide, _) => wide::scores::<3>(q, d, rows, out, ahead),
            (Self::Narrow, 1) => narrow::scores::<1>(q, d, rows, out, ahead),
            (Self::Narrow, 2) => narrow::scores::<2>(q, d, rows, out, ahead),
            (Self::Narrow, _) => narrow::scores::<3>(q, d, rows, out, ahead),
        }
    }

    /// `wide::weighted` or `narrow::weighted` for `hs` heads (1 to `wide::HEADS`).
    ///
    /// # Safety
    /// As theirs; `Wide` only where the CPU has AVX-512 F.
    unsafe fn weighted(
        self,
        hs: usize,
        p: &[[f32; DECODE_CHUNK]; wide::HEADS],
        rows: &[*const f16],
        dv: usize,
        acc: &mut [f32],
        ahead: Ahead<'_>,
    ) {
        match (self, hs) {
            (Self::Wide, 1) => wide::weighted::<1>(p, rows, dv, acc, ahead),
            (Self::Wide, 2) => wide::weighted::<2>(p, rows, dv, acc, ahead),
            (Self::Wide, _) => wide::weighted::<3>(p, rows, dv, acc, ahead),
            (Self::Narrow, 1) => narrow::weighted::<1>(p, rows, dv, acc, ahead),
            (Self::Narrow, 2) => narrow::weighted::<2>(p, rows, dv, acc, ahead),
            (Self::Narrow, _) => narrow::weighted::<3>(p, rows, dv, acc, ahead),
        }
    }
}

impl DecodeStep<'_> {
    /// Query head `h_i`'s ALiBi slope (1 without), computed where a mask needs it rather than
    /// collected per layer.
    fn slope(&self, h_i: usize) -> f32 {
        if self.max_bias > 0.0 {
            2.0f32.powf(-self.max_bias * ((h_i + 1) as f32) / self.n2 as f32)
        } else {
            1.0
        }
    }

    /// Chunk `c` of sequence `seq` for the query heads of group `g`: each head's partial
    /// softmax state over the chunk's positions, its maximum logit in `maxes`, the sum of its
    /// weights in `sums` and the weighted sum of the value rows in `acc` (`dv` per head; all
    /// zero, maximum `-inf`, where every position is masked).
    #[allow(clippy::too_many_arguments)]
    fn decode_chunk<T>(
        &self,
        scratch: &mut DecodeScratch,
        seq: &DecodeSeq<'_, T>,
        g: usize,
        c: usize,
        acc: &mut [f32],
        sums: &mut [f32],
        maxes: &mut [f32],
    ) where
        T: WithDType + Copy + DowncastF32 + WidenF32,
    {
        let DecodeHeads { h, k_h, v_h, d, dv } = self.heads;
        let group = self.group;
        let DecodeScratch { qf, kbuf, vbuf, scores, rows, .. } = scratch;
        let start = c * DECODE_CHUNK;
        let n = DECODE_CHUNK.min(seq.kv_len - start);
        // The task's query heads share one key head and one value head (a group of several
        // heads is formed only where they do).
        let (k_head, v_head) = (g * group / (h / k_h), g * group / (h / v_h));
        let k_row = |j| cache_row(seq.k, seq.kstride, seq.b_i, start + j, k_head, d);
        let v_row = |j| cache_row(seq.v, seq.vstride, seq.b_i, start + j, v_head, dv);
        // The chunk's row addresses, bounds-checked once (its first and last rows; the rows
        // between lie between them).
        let (krows, vrows) = rows.split_at_mut(DECODE_CHUNK);
        let (k0, kn) = (k_row(0).as_ptr(), k_row(n - 1).as_ptr());
        let (v0, vn) = (v_row(0).as_ptr(), v_row(n - 1).as_ptr());
        for j in 0..n {
            // SAFETY: row `j` of the chunk lies within `seq.k` / `seq.v`, from `k0` (`v0`)
            // to `kn` (`vn`), both bounds-checked; rows are `stride[1]` elements apart.
            unsafe {
                krows[j] = k0.add(j * seq.kstride[1]).cast();
                vrows[j] = v0.add(j * seq.vstride[1]).cast();
            }
        }
        debug_assert!(n == 0 || (krows[n - 1] == kn.cast() && vrows[n - 1] == vn.cast()));
        // All the chunk's rows are requested at once, keys first, so that many are in flight
        // before the first is read (the hardware prefetcher ramps up too slowly on streams this
        // short). The direct kernels request their values while they score the keys instead
        // (items 23 and 25, below).
        let size = std::mem::size_of::<T>();
        if self.prefetch {
            prefetch(krows[..n].iter().map(|&r| r.cast()), size * d);
            if self.direct.is_none() {
                prefetch(vrows[..n].iter().map(|&r| r.cast()), size * dv);
            }
        }
        // A head's raw scores become its softmax weights: mask, scale and soft-cap per
        // position, then `exp(x - max)` (zero past `n`). Returns the chunk's maximum and the
        // weights' sum; all weights zero where every position is masked (maximum `-inf`).
        let softmax = |scores: &mut [f32; DECODE_CHUNK], h_i: usize| {
            match self.mask {
                // Without a mask or soft-cap, the same `x * scale + 0.0` in a loop that
                // vectorizes.
                None if self.logit_softcap == 0.0 => {
                    for x in scores[..n].iter_mut() {
                        *x = *x * self.scale + 0.0;
                    }
                }
                _ => {
                    let slope = self.slope(h_i);
                    for (j, x) in scores[..n].iter_mut().enumerate() {
                        let delta = self
                            .mask
                            .map(|mask| slope * mask.value(seq.b_i, h_i, 0, start + j))
                            .unwrap_or(0.0);
                        *x = if delta == f32::NEG_INFINITY {
                            f32::NEG_INFINITY
                        } else {
                            softcap(*x * self.scale, self.logit_softcap) + delta
                        };
                    }
                }
            }
            scores[n..].fill(f32::NEG_INFINITY);
            let m = crate::simd::max(scores);
            if m == f32::NEG_INFINITY {
                scores.fill(0.0);
                return (m, 0.0);
            }
            (m, crate::simd::exp_sub_sum(scores, m))
        };
        if let Some(direct) = self.direct {
            // Items 23 and 25: the direct kernels request the chunk's value rows a few at a time
            // while they score the keys, and the next chunk's key rows while they weight the
            // values, so that they arrive while they compute (requested all at once, the
            // requests stall the core until most have arrived, and nothing overlaps them).
            let rolling = self.prefetch;
            for hg0 in (0..group).step_by(wide::HEADS) {
                let hs = (group - hg0).min(wide::HEADS);
                let h0 = g * group + hg0;
                for (hh, qf) in qf.chunks_exact_mut(d).take(hs).enumerate() {
                    let q_base = seq.b_i * seq.qstride[0] + (h0 + hh) * seq.qstride[2];
                    T::widen(&seq.q[q_base..q_base + d], qf);
                }
                let v_ahead = if rolling && hg0 == 0 {
                    Ahead { rows: &vrows[..n], bytes: size * dv }
                } else {
                    Ahead::NONE
                };
                // SAFETY: `direct` is `Wide` only where the CPU has AVX-512 F, and either only
                // for `f16` rows whose widths suit it (`Direct::choose`); every row pointer
                // holds `d` (keys) or `dv` (values) halves (see above); `qf` holds
                // `HEADS·d` values and `acc` `group·dv`, `hg0 + hs <= group`.
                unsafe { direct.scores(hs, qf, d, &krows[..n], scores, v_ahead) };
                for hh in 0..hs {
                    let (m, sum) = softmax(&mut scores[hh], h0 + hh);
                    maxes[hg0 + hh] = m;
                    sums[hg0 + hh] = sum;
                }
                let acc = &mut acc[hg0 * dv..(hg0 + hs) * dv];
                acc.fill(0.0);
                // The next chunk's key rows (where the group took one pass, so that this
                // chunk's key row addresses are no longer needed).
                let next = (seq.kv_len - start).saturating_sub(DECODE_CHUNK).min(DECODE_CHUNK);
                let k_ahead = if rolling && hs == group && next > 0 {
                    // Bounds-checked once, as this chunk's rows are (above).
                    let k0 = k_row(DECODE_CHUNK).as_ptr();
                    let kn = k_row(DECODE_CHUNK + next - 1).as_ptr();
                    for (j, row) in krows[..next].iter_mut().enumerate() {
                        // SAFETY: the next chunk's row `j` lies within `seq.k`, from `k0` to
                        // `kn`, both bounds-checked; rows are `stride[1]` elements apart.
                        *row = unsafe { k0.add(j * seq.kstride[1]) }.cast();
                    }
                    debug_assert!(krows[next - 1] == kn.cast());
                    Ahead { rows: &krows[..next], bytes: size * d }
                } else {
                    Ahead::NONE
                };
                // SAFETY: as above.
                unsafe { direct.weighted(hs, scores, &vrows[..n], dv, acc, k_ahead) };
            }
            return;
        }
        let qf = &mut qf[..d];
        let scores = &mut scores[0];
        // The chunk's K and V rows, widened once for the task's heads.
        for (j, dst) in kbuf[..n * d].chunks_exact_mut(d).enumerate() {
            T::widen(k_row(j), dst);
        }
        for (j, dst) in vbuf[..n * dv].chunks_exact_mut(dv).enumerate() {
            T::widen(v_row(j), dst);
        }
        for hg in 0..group {
            let h_i = g * group + hg;
            let q_base = seq.b_i * seq.qstride[0] + h_i * seq.qstride[2];
            T::widen(&seq.q[q_base..q_base + d], qf);
            if self.dots8 && d % 8 == 0 {
                // Eight positions per horizontal sum; the rows past `n` in the last block are
                // scored too (`kbuf` holds `DECODE_CHUNK` rows) and dropped, so a position's
                // score does not depend on `kv_len`.
                for blk in (0..n).step_by(8) {
                    let raw = lanes::dots8(qf, &kbuf[blk * d..], d);
                    let end = n.min(blk + 8);
                    scores[blk..end].copy_from_slice(&raw[..end - blk]);
                }
            } else {
                for (x, k_row) in scores.iter_mut().zip(kbuf[..n * d].chunks_exact(d)) {
                    *x = lanes::dot(qf, k_row);
                }
            }
            let (m, sum) = softmax(scores, h_i);
            maxes[hg] = m;
            sums[hg] = sum;
            let acc = &mut acc[hg * dv..][..dv];
            acc.fill(0.0);
            if m != f32::NEG_INFINITY {
                lanes::weighted_sum(&scores[..n], &vbuf[..n * dv], dv, acc);
            }
        }
    }
}

/// aiaas patch: head `hg` of a group's output from its `chunks` partial states (`acc`, `sums`
/// and `maxes` laid out `[chunk][head of the group]`, `dv` values per head in `acc`), merged in
/// chunk order; `vkq` is `dv` values of working memory.
#[allow(clippy::too_many_arguments)]
fn merge_head<T: DowncastF32>(
    acc: &[f32],
    sums: &[f32],
    maxes: &[f32],
    chunks: usize,
    group: usize,
    hg: usize,
    vkq: &mut [f32],
    out: &mut [T],
) {
    let dv = out.len();
    vkq.fill(0.0);
    let mut sum = 0f32;
    let mut m = f32::NEG_INFINITY;
    for c in 0..chunks {
        let idx = c * group + hg;
        let m_b = maxes[idx];
        if m_b == f32::NEG_INFINITY {
            continue;
        }
        let s_b = sums[idx];
        let vkq_b = &acc[idx * dv..][..dv];
        if m_b <= m {
            let factor = (m_b - m).exp();
            lanes::axpy(vkq, factor, vkq_b);
            sum += s_b * factor;
        } else {
            let factor = (m - m_b).exp();
            scale_in_place(vkq, factor);
            lanes::axpy(vkq, 1.0, vkq_b);
            sum = sum * factor + s_b;
            m = m_b;
        }
    }
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for (o, v) in out.iter_mut().zip(vkq.iter()) {
        *o = T::cast(*v * inv);
    }
}

/// aiaas patch: the storages of `ts`, held for reading, with their layouts.
fn storages(ts: &[Tensor]) -> Vec<(std::sync::RwLockReadGuard<'_, Storage>, &candle_core::Layout)> {
    ts.iter().map(|t| t.storage_and_layout()).collect()
}

/// aiaas patch: a tensor's elements from its first, out of its held CPU storage (also used by
/// the CPU rope, `layers::rope_i_lanes`).
pub(crate) fn cpu_slice<'a, T: WithDType>(
    (guard, layout): &'a (std::sync::RwLockReadGuard<'_, Storage>, &candle_core::Layout),
) -> Result<&'a [T]> {
    match &**guard {
        Storage::Cpu(cpu) => Ok(&cpu.as_slice::<T>()?[layout.start_offset()..]),
        _ => candle_core::bail!("expected a tensor in CPU storage"),
    }
}

/// aiaas patch: one decoding step of a ragged batch: sequence `i` has its query `qs[i]`
/// (`(1, 1, H, D)`) and its own keys and values `ks[i]`, `vs[i]` (`(1, L_i, H_kv, D)`, any
/// lengths), all attended in one parallel loop (`decode_attention`) rather than one call per
/// sequence. Returns `(n, H, 1, D)`, row `i` what `run_flash_attn_cpu` gives sequence `i`
/// alone, to the bit.
pub fn run_flash_attn_cpu_ragged<T>(
    qs: &[Tensor],
    ks: &[Tensor],
    vs: &[Tensor],
    sdpa_params: &SdpaParams,
) -> Result<Tensor>
where
    T: WithDType + Copy + DowncastF32 + WidenF32,
{
    let (q_guards, k_guards, v_guards) = (storages(qs), storages(ks), storages(vs));
    let (_, _, h, d) = qs.first().context("ragged decode attention: no sequence")?.dims4()?;
    let (_, _, k_h, _) = ks[0].dims4()?;
    let (_, _, v_h, dv) = vs[0].dims4()?;
    let seqs = (0..qs.len())
        .map(|i| {
            Ok(DecodeSeq {
                q: cpu_slice::<T>(&q_guards[i])?,
                k: cpu_slice::<T>(&k_guards[i])?,
                v: cpu_slice::<T>(&v_guards[i])?,
                qstride: qs[i].stride(),
                kstride: ks[i].stride(),
                vstride: vs[i].stride(),
                b_i: 0,
                kv_len: ks[i].dims()[1],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let heads = DecodeHeads { h, k_h, v_h, d, dv };
    let out = decode_attention(
        &seqs,
        heads,
        None,
        sdpa_params.softmax_scale,
        0.0,
        sdpa_params.softcap.unwrap_or(0.0),
    );
    Tensor::from_vec(out, (qs.len(), h, 1, dv), &Device::Cpu)
}

/// aiaas patch: K or V of every batch entry and head in `f32`, rows contiguous per head:
/// `[batch][head][position][dim]`, so the prompt kernel widens each value once, not once per
/// query row.
fn widen_heads<T: WidenF32 + Send + Sync>(
    data: &[T],
    b: usize,
    len: usize,
    heads: usize,
    dim: usize,
    stride: &[usize],
) -> Vec<f32> {
    let mut wide = vec![0f32; b * heads * len * dim];
    wide.par_chunks_mut(len * dim)
        .enumerate()
        .for_each(|(bh, head_rows)| {
            let (b_i, head) = (bh / heads, bh % heads);
            for (pos, row) in head_rows.chunks_exact_mut(dim).enumerate() {
                T::widen(cache_row(data, stride, b_i, pos, head, dim), row);
            }
        });
    wide
}

/// aiaas patch: like `widen_heads`, for keys, transposed and padded: `[batch][head][dim][pad]`
/// (component `c` of position `pos` at `c·pad + pos`, zeros from `len` to `pad`), as
/// `lanes::scores_block` reads them.
fn widen_heads_transposed<T: WidenF32 + Send + Sync>(
    data: &[T],
    b: usize,
    len: usize,
    heads: usize,
    dim: usize,
    stride: &[usize],
    pad: usize,
) -> Vec<f32> {
    let mut wide = vec![0f32; b * heads * dim * pad];
    wide.par_chunks_mut(dim * pad).enumerate().for_each_init(
        || vec![0f32; dim],
        |row, (bh, head_t)| {
            let (b_i, head) = (bh / heads, bh % heads);
            for pos in 0..len {
                T::widen(cache_row(data, stride, b_i, pos, head, dim), row);
                for (c, &x) in row.iter().enumerate() {
                    head_t[c * pad + pos] = x;
                }
            }
        },
    );
    wide
}

/// aiaas patch: whether prompts take the tiled kernel (`PromptHead::tile`); on unless
/// `AIAAS_PROMPT_TILES=off` is set, or `set_prompt_tiles(false)` was called. Off, they take
/// the kernel of one query row at a time (mistral.rs item 6).
static PROMPT_TILES: AtomicU8 = AtomicU8::new(SWITCH_UNREAD);
const SWITCH_UNREAD: u8 = 2;

fn prompt_tiles() -> bool {
    settable_switch(&PROMPT_TILES, "AIAAS_PROMPT_TILES")
}

/// aiaas patch: a switch that a setter may have set (1 on, 0 off); unread, it is on unless
/// `var` is `off` in the environment, and keeps that.
fn settable_switch(cell: &AtomicU8, var: &str) -> bool {
    match cell.load(Ordering::Relaxed) {
        SWITCH_UNREAD => {
            let on = !std::env::var(var).is_ok_and(|v| v == "off");
            cell.store(u8::from(on), Ordering::Relaxed);
            on
        }
        on => on == 1,
    }
}

// aiaas patch (item 18): the switch of `decode_avx512`.
static DECODE_AVX512: AtomicU8 = AtomicU8::new(SWITCH_UNREAD);

/// aiaas patch (item 18): whether decoding steps take the 512-bit kernels (`wide`) for `f16`
/// caches: where the CPU has AVX-512 F, unless `AIAAS_DECODE_AVX512=off` is set or
/// `set_decode_avx512(false)` was called.
pub fn decode_avx512() -> bool {
    settable_switch(&DECODE_AVX512, "AIAAS_DECODE_AVX512") && wide::supported()
}

/// aiaas patch (item 18): turns the 512-bit decoding kernels on or off for the whole process
/// (for tests and side-by-side measurements); they run only where the CPU has AVX-512 F.
pub fn set_decode_avx512(on: bool) {
    DECODE_AVX512.store(u8::from(on), Ordering::Relaxed);
}

// aiaas patch (item 23): the switch of `decode_direct`.
static DECODE_DIRECT: AtomicU8 = AtomicU8::new(SWITCH_UNREAD);

/// aiaas patch (item 23): whether decoding steps that do not take the 512-bit kernels take the
/// 256-bit ones that read `f16` caches where they lie (`narrow`, the widening kernel's bits):
/// in AVX2 builds, unless `AIAAS_DECODE_DIRECT=off` is set or `set_decode_direct(false)` was
/// called.
pub fn decode_direct() -> bool {
    settable_switch(&DECODE_DIRECT, "AIAAS_DECODE_DIRECT") && narrow::supported()
}

/// aiaas patch (item 23): turns the 256-bit direct decoding kernels on or off for the whole
/// process (for tests and side-by-side measurements).
pub fn set_decode_direct(on: bool) {
    DECODE_DIRECT.store(u8::from(on), Ordering::Relaxed);
}

/// aiaas patch (item 21): how `decode_attention` cuts a decoding step into parallel tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeTasks {
    /// A task per (sequence, head group) pair where `whole_pairs` expects it to be faster,
    /// otherwise a task per chunk of a pair's positions (the default).
    Auto,
    /// A task per (sequence, head group) pair, however few there are
    /// (`AIAAS_DECODE_WHOLE=always`).
    Whole,
    /// A task per chunk, however many pairs there are (`AIAAS_DECODE_WHOLE=off`).
    Chunks,
}

// aiaas patch (item 21): the switch of `decode_tasks`: a `DecodeTasks as u8`, or `TASKS_UNREAD`.
static DECODE_TASKS: AtomicU8 = AtomicU8::new(TASKS_UNREAD);
const TASKS_UNREAD: u8 = u8::MAX;

/// aiaas patch (item 21): how decoding steps are cut into tasks: the last `set_decode_tasks`,
/// or else `AIAAS_DECODE_WHOLE=off` (`Chunks`) or `always` (`Whole`) as read at the first
/// step; `DecodeTasks::Auto` otherwise.
pub fn decode_tasks() -> DecodeTasks {
    let read = |n: u8| {
        [DecodeTasks::Auto, DecodeTasks::Whole, DecodeTasks::Chunks]
            .into_iter()
            .find(|t| *t as u8 == n)
    };
    if let Some(tasks) = read(DECODE_TASKS.load(Ordering::Relaxed)) {
        return tasks;
    }
    let tasks = match std::env::var("AIAAS_DECODE_WHOLE").as_deref() {
        Ok("off") => DecodeTasks::Chunks,
        Ok("always") => DecodeTasks::Whole,
        _ => DecodeTasks::Auto,
    };
    // A `set_decode_tasks` that came in between wins.
    let unread = TASKS_UNREAD;
    match DECODE_TASKS.compare_exchange(unread, tasks as u8, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => tasks,
        Err(set) => read(set).unwrap_or(tasks),
    }
}

/// aiaas patch (item 21): sets how decoding steps are cut into tasks, for the whole process
/// (for tests, which must cover both ways on any number of threads, and side-by-side
/// measurements). Every way computes the same bits.
pub fn set_decode_tasks(tasks: DecodeTasks) {
    DECODE_TASKS.store(tasks as u8, Ordering::Relaxed);
}

/// aiaas patch: turns the tiled prompt kernel on or off for the whole process (for tests and
/// side-by-side measurements; `AIAAS_PROMPT_TILES=off` does the same at start).
pub fn set_prompt_tiles(on: bool) {
    PROMPT_TILES.store(u8::from(on), Ordering::Relaxed);
}

/// aiaas patch: one query head of one prompt for the tiled kernel: its keys (transposed, as
/// `widen_heads_transposed` lays them out) and values (`[pos][dv]`) widened to `f32`, and how
/// its logits are formed.
struct PromptHead<'a> {
    b_i: usize,
    h_i: usize,
    kt: &'a [f32],
    kv_pad: usize,
    v: &'a [f32],
    kv_len: usize,
    d: usize,
    dv: usize,
    slope: f32,
    scale: f32,
    logit_softcap: f32,
    mask: Option<&'a MaskInfo<'a>>,
}

impl PromptHead<'_> {
    /// Attention of `rows` (at most `PROMPT_ROWS`) consecutive query rows from position `q0`,
    /// widened in `q` (row `i` at `q[i·d..]`, the rest zero): leaves row `i`'s weighted sum of
    /// values in `acc[i·dv..][..dv]` and returns the factors (1 / the sum of its weights, 0 for
    /// a row that sees no position) that normalise them.
    ///
    /// Key positions go by chunks of `CHUNK_KV`, and within a chunk by blocks of 16: a block
    /// masked for every row is skipped, the others are scored for all the rows at once
    /// (`lanes::scores_block`); then each row's running maximum is updated once per chunk, its
    /// weights exponentiated eight at a time (`simd::exp_sub_sum`), and the chunk's weighted
    /// value rows added to all the rows' sums at once (`lanes::weighted_rows`). The same online
    /// softmax as the kernel of one row; the sums come in another order.
    fn tile(&self, q0: usize, rows: usize, q: &[f32], acc: &mut [f32]) -> [f32; PROMPT_ROWS] {
        const BLOCK: usize = 16;
        let (d, dv) = (self.d, self.dv);
        acc.fill(0.0);
        let mut m = [f32::NEG_INFINITY; PROMPT_ROWS];
        let mut s = [0f32; PROMPT_ROWS];
        let mask_rows: [Option<&[f32]>; PROMPT_ROWS] = std::array::from_fn(|i| {
            (i < rows)
                .then(|| self.mask.and_then(|mask| mask.row(self.b_i, self.h_i, q0 + i, self.kv_len)))
                .flatten()
        });
        let mut bias = [[f32::NEG_INFINITY; CHUNK_KV]; PROMPT_ROWS];
        let mut p = [[0f32; CHUNK_KV]; PROMPT_ROWS];
        let mut raw = [[0f32; BLOCK]; PROMPT_ROWS];
        for start in (0..self.kv_len).step_by(CHUNK_KV) {
            let n = CHUNK_KV.min(self.kv_len - start);
            for (i, bias) in bias.iter_mut().enumerate().take(rows) {
                for (j, bias) in bias[..n].iter_mut().enumerate() {
                    *bias = match (mask_rows[i], self.mask) {
                        (Some(row), _) => self.slope * row[start + j],
                        (None, Some(mask)) => {
                            self.slope * mask.value(self.b_i, self.h_i, q0 + i, start + j)
                        }
                        (None, None) => 0.0,
                    };
                }
                bias[n..].fill(f32::NEG_INFINITY);
            }
            let mut any_live = false;
            for blk in (0..CHUNK_KV).step_by(BLOCK) {
                let cols = blk..blk + BLOCK;
                let live = blk < n
                    && bias[..rows]
                        .iter()
                        .any(|row| row[cols.clone()].iter().any(|&x| x != f32::NEG_INFINITY));
                if !live {
                    for p in p.iter_mut() {
                        p[cols.clone()].fill(f32::NEG_INFINITY);
                    }
                    continue;
                }
                any_live = true;
                lanes::scores_block(q, d, &self.kt[start + blk..], self.kv_pad, &mut raw);
                for ((p, bias), raw) in p.iter_mut().zip(&bias).zip(&raw) {
                    for ((p, &bias), &x) in p[cols.clone()].iter_mut().zip(&bias[cols.clone()]).zip(raw) {
                        *p = if bias == f32::NEG_INFINITY {
                            f32::NEG_INFINITY
                        } else {
                            softcap(x * self.scale, self.logit_softcap) + bias
                        };
                    }
                }
            }
            if !any_live {
                continue;
            }
            for (i, p) in p.iter_mut().enumerate() {
                let chunk_max = p[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if i >= rows || chunk_max == f32::NEG_INFINITY {
                    p.fill(0.0);
                    continue;
                }
                if chunk_max > m[i] {
                    if m[i] != f32::NEG_INFINITY {
                        let factor = (m[i] - chunk_max).exp();
                        scale_in_place(&mut acc[i * dv..(i + 1) * dv], factor);
                        s[i] *= factor;
                    }
                    m[i] = chunk_max;
                }
                s[i] += crate::simd::exp_sub_sum(p, m[i]);
            }
            lanes::weighted_rows(&p, n, &self.v[start * dv..(start + n) * dv], dv, acc);
        }
        s.map(|s| if s > 0.0 { 1.0 / s } else { 0.0 })
    }
}

/// Main forward flash-attention CPU routine.
/// Shapes follow Candle convention: (B, S, H, D)
///
/// aiaas patch: by default (`prompt_tiles()`), tiles of `PROMPT_ROWS` query rows of one head
/// (`PromptHead::tile`, keys widened transposed by `widen_heads_transposed`). Otherwise K and V
/// are widened to `f32` once per call (`widen_heads`), each query row is scored against chunks
/// of `CHUNK_KV` positions with a SIMD dot product (masked positions are skipped before their
/// dot product), and the chunk's weighted V rows are added with SIMD multiply-adds after one
/// running-maximum update per chunk.
#[allow(clippy::too_many_arguments)]
fn flash_attn_cpu<T>(
    q_data: &[T],
    k_data: &[T],
    v_data: &[T],
    mask_vec: Option<&[f32]>,
    mask_dims: Option<&[usize]>,
    qshape: &[usize],
    kshape: &[usize],
    vshape: &[usize],
    qstride: &[usize],
    kstride: &[usize],
    vstride: &[usize],
    scale: f32,
    max_bias: f32,
    logit_softcap: f32,
) -> Result<Tensor>
where
    T: WithDType + Copy + UpcastF32 + DowncastF32 + WidenF32,
{
    let (b, q_len, h, d) = (qshape[0], qshape[1], qshape[2], qshape[3]);
    let kv_len = kshape[1];
    let k_h = kshape[2];
    let v_h = vshape[2];
    let rk2 = h / k_h;
    let rv2 = h / v_h;
    let dv = d;

    let n2 = 2_usize.pow((h as f32).log2().ceil() as u32);

    let mut out = vec![T::cast(0.0); b * q_len * h * dv];

    assert_eq!(qstride[3], 1, "q must have contiguous rows");
    assert_eq!(kstride[3], 1, "k must have contiguous rows");
    assert_eq!(vstride[3], 1, "v must have contiguous rows");

    let mask_info = match (mask_vec, mask_dims) {
        (Some(data), Some(dims)) => Some(MaskInfo { data, dims, b, h }),
        _ => None,
    };

    if prompt_tiles() {
        in_attention_pool(|| {
            let kv_pad = kv_len.div_ceil(16) * 16;
            let kt = widen_heads_transposed(k_data, b, kv_len, k_h, d, kstride, kv_pad);
            let vf = widen_heads(v_data, b, kv_len, v_h, dv, vstride);
            out.par_chunks_mut(q_len * dv).enumerate().for_each(|(bh, head_out)| {
                let (b_i, h_i) = (bh / h, bh % h);
                let head = PromptHead {
                    b_i,
                    h_i,
                    kt: &kt[(b_i * k_h + h_i / rk2) * d * kv_pad..][..d * kv_pad],
                    kv_pad,
                    v: &vf[(b_i * v_h + h_i / rv2) * kv_len * dv..][..kv_len * dv],
                    kv_len,
                    d,
                    dv,
                    slope: if max_bias > 0.0 {
                        2.0f32.powf(-max_bias * ((h_i + 1) as f32) / n2 as f32)
                    } else {
                        1.0
                    },
                    scale,
                    logit_softcap,
                    mask: mask_info.as_ref(),
                };
                head_out.par_chunks_mut(PROMPT_ROWS * dv).enumerate().for_each_init(
                    || (vec![0f32; PROMPT_ROWS * d], vec![0f32; PROMPT_ROWS * dv]),
                    |(q_rows, acc), (tile, out_rows)| {
                        let q0 = tile * PROMPT_ROWS;
                        let rows = out_rows.len() / dv;
                        q_rows.fill(0.0);
                        for (i, q_row) in q_rows.chunks_exact_mut(d).take(rows).enumerate() {
                            let q_base = b_i * qstride[0] + (q0 + i) * qstride[1] + h_i * qstride[2];
                            T::widen(&q_data[q_base..q_base + d], q_row);
                        }
                        let inv_s = head.tile(q0, rows, q_rows, acc);
                        for (i, out_row) in out_rows.chunks_exact_mut(dv).enumerate() {
                            for (o, v) in out_row.iter_mut().zip(&acc[i * dv..(i + 1) * dv]) {
                                *o = T::cast(*v * inv_s[i]);
                            }
                        }
                    },
                );
            });
        });
        return Tensor::from_vec(out, (b, h, q_len, dv), &Device::Cpu);
    }

    in_attention_pool(|| {
        let kf = widen_heads(k_data, b, kv_len, k_h, d, kstride);
        let vf = widen_heads(v_data, b, kv_len, v_h, dv, vstride);
        out.par_chunks_mut(dv)
            .with_min_len(64)
            .enumerate()
            .for_each_init(
                || (vec![0f32; d], vec![0f32; dv], [0f32; CHUNK_KV]),
                |(q_row, vkq, scores), (row_idx, out_chunk)| {
                    // Decode flat index back to (batch, head, q_pos)
                    let rows_per_batch = h * q_len;
                    let b_i = row_idx / rows_per_batch;
                    let rem = row_idx % rows_per_batch;
                    let h_i = rem / q_len;
                    let q_pos = rem % q_len;

                    let slope = if max_bias > 0.0 {
                        2.0f32.powf(-max_bias * ((h_i + 1) as f32) / n2 as f32)
                    } else {
                        1.0
                    };

                    let k_head = h_i / rk2;
                    let v_head = h_i / rv2;
                    let k_rows = &kf[(b_i * k_h + k_head) * kv_len * d..][..kv_len * d];
                    let v_rows = &vf[(b_i * v_h + v_head) * kv_len * dv..][..kv_len * dv];

                    let q_base = b_i * qstride[0] + q_pos * qstride[1] + h_i * qstride[2];
                    T::widen(&q_data[q_base..q_base + d], q_row);
                    vkq.fill(0.0);
                    let mut s = 0.0f32;
                    let mut m = f32::NEG_INFINITY;

                    // aiaas patch: the row's mask values read in place where they lie in a row.
                    let mask_row = mask_info
                        .as_ref()
                        .and_then(|mask| mask.row(b_i, h_i, q_pos, kv_len));
                    for start in (0..kv_len).step_by(CHUNK_KV) {
                        let n = CHUNK_KV.min(kv_len - start);
                        for (j, score) in scores[..n].iter_mut().enumerate() {
                            let kv_pos = start + j;
                            let mv = match (mask_row, mask_info.as_ref()) {
                                (Some(row), _) => slope * row[kv_pos],
                                (None, Some(mask)) => slope * mask.value(b_i, h_i, q_pos, kv_pos),
                                (None, None) => 0.0,
                            };
                            *score = if mv == f32::NEG_INFINITY {
                                f32::NEG_INFINITY
                            } else {
                                let k_row = &k_rows[kv_pos * d..][..d];
                                logit(q_row, k_row, scale, logit_softcap) + mv
                            };
                        }
                        softmax_accumulate(
                            &scores[..n],
                            &v_rows[start * dv..(start + n) * dv],
                            dv,
                            vkq,
                            &mut s,
                            &mut m,
                        );
                    }

                    // final normalisation + downcast
                    let inv_s = if s > 0.0 { 1.0 / s } else { 0.0 };
                    for (o, v) in out_chunk.iter_mut().zip(vkq.iter()) {
                        *o = T::cast(*v * inv_s);
                    }
                },
            );
    });

    let out_shape = (b, h, q_len, dv);
    Tensor::from_vec(out, out_shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::SdpaParams;
    use candle_core::{Device, Tensor, D};
    use candle_nn::ops::softmax;

    use candle_core::Result as CandleResult;

    const EPS: f32 = 1e-4;

    #[test]
    fn test_flash_attn_cpu_single_q() -> CandleResult<()> {
        // Test for q_len == 1 (single Q)
        let b = 1;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, 1, h, d) filled with ones
        let q_vec = vec![1.0f32; b * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, 1, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, no softcap
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: None,
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, 1, d)
        assert_eq!(out.shape().dims(), &[b, h, 1, d]);

        // Naive attention
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, 1, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;
        let weights = softmax(&logits, D::Minus1)?;

        let attn_out = weights.matmul(&v_resh)?;

        let naive_out = attn_out.reshape(&[b, h, 1, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }

        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_full_q() -> CandleResult<()> {
        // Test for q_len > 1 (full Q)
        let b = 1;
        let q_len = 2;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, q_len, h, d) filled with ones
        let q_vec = vec![1.0f32; b * q_len * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, q_len, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, no softcap
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: None,
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, q_len, d)
        assert_eq!(out.shape().dims(), &[b, h, q_len, d]);

        // Naive attention
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, q_len, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;
        let weights = softmax(&logits, D::Minus1)?;

        let attn_out = weights.matmul(&v_resh)?;

        let naive_out = attn_out.reshape(&[b, h, q_len, d])?;

        // 7) Compare element‐by‐element
        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }

        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_single_q_softcap() -> CandleResult<()> {
        // Test for q_len == 1 (single Q) with softcap
        let b = 1;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, 1, h, d) filled with ones
        let q_vec = vec![1.0f32; b * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, 1, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, softcap = Some(0.5)
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: Some(0.5),
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;
        let sc = sdpa.softcap.unwrap();

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, 1, d)
        assert_eq!(out.shape().dims(), &[b, h, 1, d]);

        // Naive attention with softcap
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, 1, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;

        let logits = (logits / sc as f64)?;
        let logits = logits.tanh()?;
        let logits = (logits * sc as f64)?;

        let weights = softmax(&logits, D::Minus1)?;
        let attn_out = weights.matmul(&v_resh)?;
        let naive_out = attn_out.reshape(&[b, h, 1, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }
        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_full_q_softcap() -> CandleResult<()> {
        // Test for q_len > 1 (full Q) with softcap
        let b = 1;
        let q_len = 2;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, q_len, h, d) filled with ones
        let q_vec = vec![1.0f32; b * q_len * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, q_len, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, softcap = Some(0.5)
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: Some(0.5),
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;
        let sc = sdpa.softcap.unwrap();

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, q_len, d)
        assert_eq!(out.shape().dims(), &[b, h, q_len, d]);

        // Naive attention with softcap
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, q_len, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;

        let logits = (logits / sc as f64)?;
        let logits = logits.tanh()?;
        let logits = (logits * sc as f64)?;

        let weights = softmax(&logits, D::Minus1)?;
        let attn_out = weights.matmul(&v_resh)?;
        let naive_out = attn_out.reshape(&[b, h, q_len, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }
        Ok(())
    }
}
