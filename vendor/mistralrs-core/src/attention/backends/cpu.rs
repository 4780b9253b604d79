#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use candle_core::{Context, Device, Result, Storage, Tensor, WithDType};

use half::bf16;
use half::f16;
use rayon::prelude::*;
use rayon::ThreadPool;

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

/// Size (in KV positions) processed by each inner‑tile job.
const TILE_KV: usize = 16;

/// aiaas patch: key positions scored together in the prompt kernel before their softmax weights
/// are applied (one running-max update per chunk instead of one per position).
const CHUNK_KV: usize = 64;

/// aiaas patch: rows of Q, K and V are widened to `f32` once, in bulk, instead of element by
/// element inside every dot product and weighted sum (upstream called the scalar half-to-float
/// conversion twice per multiply-add). With F16C (x86-64-v3 builds) eight halves convert in one
/// instruction.
pub(crate) trait WidenF32: Copy {
    fn widen(src: &[Self], dst: &mut [f32]);
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
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
mod lanes {
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
    let x = lanes::dot(q, k) * scale;
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
/// aiaas patch: each tile job widens its K and V rows to `f32` once per batch entry and KV head
/// (shared by the query heads of a group), scores the tile's positions with a SIMD dot product
/// and adds the weighted V rows with SIMD multiply-adds. Upstream kept one scratch slot per tile
/// and head for all batch entries, so with several sequences decoding together every sequence
/// received the attention output of the last one in the batch; the slots are now per batch entry.
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
    let kv_len = kshape[1];
    let dv = d;
    let kv_tiles = kv_len.div_ceil(TILE_KV);

    // --- head tiling factors and softmax helper -----------------------
    let k_h = kshape[2];
    let v_h = vshape[2];
    let rk2 = h / k_h;
    let rv2 = h / v_h;
    let n2 = 2_usize.pow((h as f32).log2().ceil() as u32);

    // Every query row in f32, once.
    let slots = b * h;
    let mut qf = vec![0f32; slots * d];
    for b_i in 0..b {
        for h_i in 0..h {
            let q_base = b_i * qstride[0] + h_i * qstride[2];
            T::widen(
                &q_data[q_base..q_base + d],
                &mut qf[(b_i * h + h_i) * d..][..d],
            );
        }
    }

    // scratch per tile and (batch entry, head): weighted V sum, softmax sum and maximum
    let mut scratch = vec![0f32; kv_tiles * slots * dv];
    let mut scratch_s = vec![0f32; kv_tiles * slots];
    let mut scratch_m = vec![f32::NEG_INFINITY; kv_tiles * slots];

    let mask_info = match (mask_vec, mask_dims) {
        (Some(data), Some(dims)) => Some(MaskInfo { data, dims, b, h }),
        _ => None,
    };

    in_attention_pool(|| {
        scratch
            .par_chunks_mut(slots * dv)
            .zip(scratch_s.par_chunks_mut(slots))
            .zip(scratch_m.par_chunks_mut(slots))
            .enumerate()
            .for_each(|(tile_idx, ((tile_acc, tile_s), tile_m))| {
                let start = tile_idx * TILE_KV;
                let end = (start + TILE_KV).min(kv_len);
                let n = end - start;
                let mut kbuf = vec![0f32; n * d];
                let mut vbuf = vec![0f32; n * dv];
                let mut scores = [0f32; TILE_KV];

                for b_i in 0..b {
                    let mut k_loaded = usize::MAX;
                    let mut v_loaded = usize::MAX;
                    for h_i in 0..h {
                        // Per‑head slope for ALiBi / NTK bias.
                        let slope = if max_bias > 0.0 {
                            2.0f32.powf(-max_bias * ((h_i + 1) as f32) / n2 as f32)
                        } else {
                            1.0
                        };
                        let k_head = h_i / rk2;
                        let v_head = h_i / rv2;
                        if k_head != k_loaded {
                            for (j, row) in kbuf.chunks_exact_mut(d).enumerate() {
                                let base =
                                    b_i * kstride[0] + (start + j) * kstride[1] + k_head * kstride[2];
                                T::widen(&k_data[base..base + d], row);
                            }
                            k_loaded = k_head;
                        }
                        if v_head != v_loaded {
                            for (j, row) in vbuf.chunks_exact_mut(dv).enumerate() {
                                let base =
                                    b_i * vstride[0] + (start + j) * vstride[1] + v_head * vstride[2];
                                T::widen(&v_data[base..base + dv], row);
                            }
                            v_loaded = v_head;
                        }

                        let slot = b_i * h + h_i;
                        let q_row = &qf[slot * d..][..d];
                        for (j, k_row) in kbuf.chunks_exact(d).enumerate() {
                            let mask_delta = mask_info
                                .as_ref()
                                .map(|mask| slope * mask.value(b_i, h_i, 0, start + j))
                                .unwrap_or(0.0);
                            scores[j] = if mask_delta == f32::NEG_INFINITY {
                                f32::NEG_INFINITY
                            } else {
                                logit(q_row, k_row, scale, logit_softcap) + mask_delta
                            };
                        }
                        softmax_accumulate(
                            &scores[..n],
                            &vbuf,
                            dv,
                            &mut tile_acc[slot * dv..][..dv],
                            &mut tile_s[slot],
                            &mut tile_m[slot],
                        );
                    }
                }
            });
    });

    // -------- serial reduction over tiles (per batch entry and head) --------
    let mut out = vec![T::cast(0.0); slots * dv];
    let mut vkq = vec![0f32; dv];
    for slot in 0..slots {
        vkq.fill(0.0);
        let mut s = 0f32;
        let mut m = f32::NEG_INFINITY;
        for tile_idx in 0..kv_tiles {
            let idx = tile_idx * slots + slot;
            let m_b = scratch_m[idx];
            if m_b == f32::NEG_INFINITY {
                continue;
            }
            let s_b = scratch_s[idx];
            let vkq_b = &scratch[idx * dv..][..dv];
            if m_b <= m {
                let factor = (m_b - m).exp();
                lanes::axpy(&mut vkq, factor, vkq_b);
                s += s_b * factor;
            } else {
                let factor = (m - m_b).exp();
                scale_in_place(&mut vkq, factor);
                lanes::axpy(&mut vkq, 1.0, vkq_b);
                s = s * factor + s_b;
                m = m_b;
            }
        }
        let inv_s = if s > 0.0 { 1.0 / s } else { 0.0 };
        for (o, v) in out[slot * dv..][..dv].iter_mut().zip(vkq.iter()) {
            *o = T::cast(*v * inv_s);
        }
    }

    Tensor::from_vec(out, (b, h, 1, dv), &Device::Cpu)
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
                let base = b_i * stride[0] + pos * stride[1] + head * stride[2];
                T::widen(&data[base..base + dim], row);
            }
        });
    wide
}

/// Main forward flash-attention CPU routine.
/// Shapes follow Candle convention: (B, S, H, D)
///
/// aiaas patch: K and V are widened to `f32` once per call (`widen_heads`), each query row is
/// scored against chunks of `CHUNK_KV` positions with a SIMD dot product (masked positions are
/// skipped before their dot product), and the chunk's weighted V rows are added with SIMD
/// multiply-adds after one running-maximum update per chunk.
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

                    for start in (0..kv_len).step_by(CHUNK_KV) {
                        let n = CHUNK_KV.min(kv_len - start);
                        for (j, score) in scores[..n].iter_mut().enumerate() {
                            let kv_pos = start + j;
                            let mv = mask_info
                                .as_ref()
                                .map(|mask| slope * mask.value(b_i, h_i, q_pos, kv_pos))
                                .unwrap_or(0.0);
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
