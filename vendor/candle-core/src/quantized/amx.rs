//! aiaas patch (item 12): Q4_1 products through Intel AMX, for interleaved weights (item 11) and
//! several input rows (prompts, batches of decoding sequences).
//!
//! A tile multiply (`tdpbsud`) takes 16 input rows' Q8_1 values of one block (the A tile, 16
//! rows of 32 signed bytes, read where the blocks lie) and 16 weight rows' values of the same
//! block (the B tile: eight rows of 64 bytes, row `g` holding values `4g..4g + 4` of each weight
//! row, unpacked from two interleaved panels of eight), and gives the 16 x 16 exact integer sums
//! of the block's 32 products. Each output then takes the panel kernels' arithmetic, in the
//! same order: `acc = fma(sum, d_w * d_y, acc)`, then `acc = fma(m_w, s_y, acc)`, block after
//! block, sixteen outputs per AVX-512 vector. So every output is the same to the bit as the
//! panel kernels give (tests), whichever kernel ran and whatever rows shared a tile.
//!
//! The tile instructions are written as inline assembly: Rust's AMX intrinsics are not stable.
//! Linux hands out the AMX register state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! which `supported()` makes once per process, before a one-tile self-check.

use super::avx::INTERLEAVED_Q4_1_BYTES;
use super::k_quants::{switch_on, BlockQ4_1, BlockQ8_1, GgmlType, QK4_1};
use core::arch::x86_64::*;
use rayon::prelude::*;
use std::arch::asm;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;

/// Bytes of one block column of a prepared panel of 16 weight rows: the B tile (eight rows of
/// 64 bytes), then the rows' `d` and their `m` as f32 (16 each). The 512-bit kernels (item 13)
/// use the same layout: a row of the tile is one vector of 16 lanes.
pub(crate) const PREPARED_BYTES: usize = 640;

/// Input rows per tile.
const TILE_ROWS: usize = 16;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The tile configuration (palette 1): tile 0 the 16 x 16 i32 sums, tile 1 the 16 input rows of
/// 32 bytes, tile 2 the eight rows of 64 bytes of weights.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

static CONFIG: TileConfig = {
    let mut colsb = [0u16; 16];
    let mut rows = [0u8; 16];
    colsb[0] = 64;
    rows[0] = TILE_ROWS as u8;
    colsb[1] = QK4_1 as u16;
    rows[1] = TILE_ROWS as u8;
    colsb[2] = 64;
    rows[2] = (QK4_1 / 4) as u8;
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb,
        rows,
    }
};

/// Loads `CONFIG` into this thread's tile configuration.
///
/// # Safety
/// `supported()` returned true.
#[inline(always)]
unsafe fn configure() {
    asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
}

/// Gives this thread's tile state back (so that it is not saved and restored with the thread).
///
/// # Safety
/// `supported()` returned true.
#[inline(always)]
unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// Whether this process may use AMX-INT8 with AVX-512: the CPU has AMX-TILE, AMX-INT8, AVX-512 F,
/// BW and VL, Linux granted the tile data state, and one tile product came out right. Checked
/// once.
pub(crate) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("fma");
        // CPUID leaf 7, EDX bit 24: AMX-TILE, bit 25: AMX-INT8.
        let edx = __cpuid_count(7, 0).edx;
        let amx = edx & (1 << 24) != 0 && edx & (1 << 25) != 0;
        // SAFETY: the CPU has AMX and AVX-512 and the OS granted the state just before.
        avx512 && amx && request_tile_data() && unsafe { self_check() }
    })
}

/// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`), which it grants once per process.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with integer arguments; it clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// One tile product of known bytes against the scalar sums.
///
/// # Safety
/// The CPU has AMX-INT8 and the OS granted its state.
unsafe fn self_check() -> bool {
    let mut a = [Line([0; 64]); TILE_ROWS];
    let mut b = [Line([0; 64]); 8];
    for (i, row) in a.iter_mut().enumerate() {
        for (k, v) in row.0[..QK4_1].iter_mut().enumerate() {
            *v = ((i * 37 + k * 11) % 256) as u8;
        }
    }
    for (g, row) in b.iter_mut().enumerate() {
        for (j, v) in row.0.iter_mut().enumerate() {
            *v = ((g * 13 + j * 5) % 16) as u8;
        }
    }
    let mut c = [Line([0; 64]); TILE_ROWS];
    configure();
    asm!(
        "tilezero tmm0",
        "tileloadd tmm1, [{a} + {sa}*1]",
        "tileloadd tmm2, [{b} + {sb}*1]",
        "tdpbsud tmm0, tmm1, tmm2",
        "tilestored [{c} + {sc}*1], tmm0",
        a = in(reg) a.as_ptr(),
        sa = in(reg) 64usize,
        b = in(reg) b.as_ptr(),
        sb = in(reg) 64usize,
        c = in(reg) c.as_mut_ptr(),
        sc = in(reg) 64usize,
        options(nostack),
    );
    release();
    (0..TILE_ROWS).all(|i| {
        (0..16).all(|j| {
            let expected: i32 = (0..QK4_1)
                .map(|k| i32::from(a[i].0[k] as i8) * i32::from(b[k / 4].0[4 * j + k % 4]))
                .sum();
            let got = i32::from_le_bytes(c[i].0[4 * j..4 * j + 4].try_into().unwrap());
            got == expected
        })
    })
}

/// Whether Q4_1 products may use AMX where `supported()` (0 not read yet, 1 on, 2 off). On
/// unless `AIAAS_AMX=off` is in the environment.
static AMX: AtomicU8 = AtomicU8::new(0);

/// Lets Q4_1 products use AMX where the CPU has it (`true`, the default) or not (for
/// side-by-side measurements and tests), whatever the environment says.
pub(crate) fn set_amx(on: bool) {
    AMX.store(if on { 1 } else { 2 }, Relaxed);
}

/// Whether Q4_1 products with enough input rows run on AMX: `supported()` and `set_amx` /
/// `AIAAS_AMX` allow it.
pub(crate) fn amx() -> bool {
    switch_on(&AMX, "AIAAS_AMX") && supported()
}

/// Products run on AMX so far (`products`).
static PRODUCTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many products `matmul_q4_1x8` has computed in this process.
pub(crate) fn products() -> usize {
    PRODUCTS.load(Relaxed)
}

struct Dst(*mut f32);
// SAFETY: the tasks write disjoint columns of the destination (see `matmul_q4_1x8`).
unsafe impl Sync for Dst {}

/// The `m` x `n` product of the Q8_1 input rows `ys` (`k / 32` blocks each) with the `n`
/// interleaved Q4_1 weight rows `xs` (`Interleaved<BlockQ4_1>`'s slots: `n` a multiple of eight) into
/// `dst` (`m` rows of `n`): a task per panel of 16 weight rows (the last one may have eight),
/// which unpacks its weights into B tiles once and meets the input rows 16 at a time.
///
/// # Panics
/// If `supported()` is false, or the slices are shorter than the shapes say.
pub(crate) fn matmul_q4_1x8(
    (m, k, n): (usize, usize, usize),
    xs: &[BlockQ4_1],
    ys: &[BlockQ8_1],
    dst: &mut [f32],
) {
    assert!(supported(), "AMX Q4_1 matmul without AMX");
    let blocks = k / QK4_1;
    assert!(k == blocks * QK4_1 && n.is_multiple_of(8));
    assert!(xs.len() >= n * blocks && ys.len() >= m * blocks && dst.len() >= m * n);
    PRODUCTS.fetch_add(1, Relaxed);
    // The tiles read 16 input rows at a time: the last group is padded with zero blocks.
    let padded_rows = m.next_multiple_of(TILE_ROWS);
    let padded: Vec<BlockQ8_1>;
    let ys = if padded_rows == m {
        &ys[..m * blocks]
    } else {
        let mut rows = Vec::with_capacity(padded_rows * blocks);
        rows.extend_from_slice(&ys[..m * blocks]);
        rows.resize(padded_rows * blocks, BlockQ8_1::zeros());
        padded = rows;
        &padded
    };
    let ys_d: Vec<f32> = ys.iter().map(|y| y.d.to_f32()).collect();
    let ys_s: Vec<f32> = ys.iter().map(|y| y.s.to_f32()).collect();
    let out = Dst(dst.as_mut_ptr());
    let panel_bytes = blocks * INTERLEAVED_Q4_1_BYTES;
    (0..n.div_ceil(16)).into_par_iter().for_each_init(
        || {
            (
                vec![Line([0; 64]); blocks * PREPARED_BYTES / 64],
                [Line([0; 64]); TILE_ROWS],
            )
        },
        |(prepared, sums), panel| {
            let first = panel * 16;
            let width = 16.min(n - first);
            let out = &out;
            // SAFETY: `supported()` (asserted above); the panels read lie within the `n * blocks`
            // blocks of `xs` (`first + width <= n`); every input read lies within the padded
            // rows; every write goes to rows below `m` and columns `first..first + width` of
            // `dst`, which only this task writes.
            unsafe {
                let low = (xs.as_ptr() as *const u8).add(panel * 2 * panel_bytes);
                let high = (width == 16).then(|| low.add(panel_bytes));
                prepare(blocks, low, high, prepared.as_mut_ptr() as *mut u8);
                configure();
                for row in (0..m).step_by(TILE_ROWS) {
                    let at = row * blocks;
                    let (ys, ys_d, ys_s) = (ys[at..].as_ptr(), ys_d[at..].as_ptr(), ys_s[at..].as_ptr());
                    let sums = sums.as_mut_ptr() as *mut u8;
                    let prepared = prepared.as_ptr() as *const u8;
                    let dst = out.0.add(row * n + first);
                    let columns = if width == 16 { 0xFFFF } else { 0x00FF };
                    macro_rules! rows {
                        ($($r:literal)*) => {
                            match m - row {
                                $($r => tile_rows::<$r>(blocks, prepared, ys, ys_d, ys_s, sums, dst, n, columns),)*
                                _ => tile_rows::<TILE_ROWS>(blocks, prepared, ys, ys_d, ys_s, sums, dst, n, columns),
                            }
                        };
                    }
                    rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
                }
                release();
            }
        },
    );
}

/// Unpacks the block columns of one or two interleaved panels of eight weight rows (`low`, and
/// `high` or zeros) into B tiles and f32 scales (`PREPARED_BYTES` per block); also for the
/// 512-bit kernels' prompts (item 13).
///
/// # Safety
/// AVX-512 F and BW; `low` and `high` point to `blocks` block columns each, `out` has room for
/// `blocks * PREPARED_BYTES` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
pub(crate) unsafe fn prepare(blocks: usize, low: *const u8, high: Option<*const u8>, out: *mut u8) {
    let nibble = _mm512_set1_epi8(0xF);
    for b in 0..blocks {
        let l = low.add(b * INTERLEAVED_Q4_1_BYTES);
        let h = high.map(|h| h.add(b * INTERLEAVED_Q4_1_BYTES));
        let out = out.add(b * PREPARED_BYTES);
        for g in 0..4 {
            let at = 32 + 32 * g;
            let upper = match h {
                Some(h) => _mm256_loadu_si256(h.add(at) as *const __m256i),
                None => _mm256_setzero_si256(),
            };
            let lower = _mm256_loadu_si256(l.add(at) as *const __m256i);
            let word = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lower), upper);
            let values_low = _mm512_and_si512(word, nibble);
            let values_high = _mm512_and_si512(_mm512_srli_epi16::<4>(word), nibble);
            _mm512_storeu_si512(out.add(64 * g) as *mut _, values_low);
            _mm512_storeu_si512(out.add(64 * (4 + g)) as *mut _, values_high);
        }
        for (at, to) in [(0, 512), (16, 576)] {
            let upper = match h {
                Some(h) => _mm_loadu_si128(h.add(at) as *const __m128i),
                None => _mm_setzero_si128(),
            };
            let lower = _mm_loadu_si128(l.add(at) as *const __m128i);
            let scales = _mm512_cvtph_ps(_mm256_set_m128i(upper, lower));
            _mm512_storeu_ps(out.add(to) as *mut f32, scales);
        }
    }
}

/// 16 input rows (`ys`, their scales `ys_d` and sums `ys_s`, `blocks` blocks per row) times a
/// prepared panel of 16 weight rows: writes the first `R` rows' outputs, the lanes of `columns`,
/// to `dst` (row stride `stride`). `sums` is room for one tile (1 KB). The tile takes all 16
/// rows (beyond `R`, padding); only the first `R` are scaled and summed.
///
/// # Safety
/// AVX-512 F, BW and VL; this thread's tiles configured (`configure`); `ys`, `ys_d` and `ys_s`
/// valid for 16 rows of `blocks` blocks, `prepared` for `blocks * PREPARED_BYTES` bytes, `dst`
/// for `R` rows of the lanes of `columns`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn tile_rows<const R: usize>(
    blocks: usize,
    prepared: *const u8,
    ys: *const BlockQ8_1,
    ys_d: *const f32,
    ys_s: *const f32,
    sums: *mut u8,
    dst: *mut f32,
    stride: usize,
    columns: u16,
) {
    let row_bytes = blocks * std::mem::size_of::<BlockQ8_1>();
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let w = prepared.add(b * PREPARED_BYTES);
        asm!(
            "tilezero tmm0",
            "tileloadd tmm1, [{y} + {ys}*1]",
            "tileloadd tmm2, [{w} + {ws}*1]",
            "tdpbsud tmm0, tmm1, tmm2",
            "tilestored [{c} + {cs}*1], tmm0",
            y = in(reg) (*ys.add(b)).qs.as_ptr(),
            ys = in(reg) row_bytes,
            w = in(reg) w,
            ws = in(reg) 64usize,
            c = in(reg) sums,
            cs = in(reg) 64usize,
            options(nostack),
        );
        let wd = _mm512_loadu_ps(w.add(512) as *const f32);
        let wm = _mm512_loadu_ps(w.add(576) as *const f32);
        for (i, acc) in acc.iter_mut().enumerate() {
            let q = _mm512_cvtepi32_ps(_mm512_load_si512(sums.add(64 * i) as *const _));
            let d = _mm512_mul_ps(wd, _mm512_set1_ps(*ys_d.add(i * blocks + b)));
            *acc = _mm512_fmadd_ps(q, d, *acc);
            *acc = _mm512_fmadd_ps(wm, _mm512_set1_ps(*ys_s.add(i * blocks + b)), *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(i * stride), columns, *acc);
    }
}
