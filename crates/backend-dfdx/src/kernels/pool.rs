//! Max, average and adaptive average pooling, forward and backward; max pooling
//! records its switches (argmax) for the backward pass and deconvnet.

use attrib_core::{Error, Result};
use rayon::prelude::*;

use crate::device::with_scratch;
use crate::Elem;

/// The geometry of a 2-d pooling window (PyTorch semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    /// Batch times channels: pooling is per plane.
    pub planes: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Symmetric padding (vertical, horizontal).
    pub pad: [usize; 2],
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

fn pool_out(len: usize, pad: usize, k: usize, s: usize, ceil: bool) -> Option<usize> {
    if len + 2 * pad < k {
        return None;
    }
    let span = len + 2 * pad - k;
    let mut out = if ceil {
        span.div_ceil(s) + 1
    } else {
        span / s + 1
    };
    // PyTorch: with ceil_mode the last window must start inside the input or left pad.
    if ceil && (out - 1) * s >= len + pad {
        out -= 1;
    }
    Some(out)
}

impl PoolGeom {
    /// Validates a pooling window on `(planes, h, w)`.
    pub fn new(
        planes: usize,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        ceil_mode: bool,
    ) -> Result<Self> {
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(Error::param(
                "pool2d",
                format!("kernel {kernel:?} and stride {stride:?} must be positive"),
            ));
        }
        if pad[0] * 2 > kernel[0] || pad[1] * 2 > kernel[1] {
            return Err(Error::param(
                "pool2d",
                format!("padding {pad:?} must be at most half the kernel {kernel:?}"),
            ));
        }
        match (
            pool_out(h, pad[0], kernel[0], stride[0], ceil_mode),
            pool_out(w, pad[1], kernel[1], stride[1], ceil_mode),
        ) {
            (Some(ho), Some(wo)) => Ok(PoolGeom {
                planes,
                h,
                w,
                kernel,
                stride,
                pad,
                ho,
                wo,
            }),
            _ => Err(Error::shape(
                "pool2d input size",
                format!("at least the window {kernel:?} after padding {pad:?}"),
                format!("{h}x{w}"),
            )),
        }
    }

    /// Window bounds `[start, end)` along one axis, clipped to the input, plus the
    /// unclipped size within the padded input (PyTorch's average-pool divisor).
    fn bounds(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> (usize, usize, usize) {
        let start = (o * stride) as isize - pad as isize;
        let end = (start + k as isize).min((len + pad) as isize);
        let padded = (end - start) as usize;
        (
            start.max(0) as usize,
            end.min(len as isize).max(0) as usize,
            padded,
        )
    }
}

/// Max pool: writes `y` and each output's argmax (index within its plane), the
/// switch PyTorch would record: the first maximum in row-major order over the window,
/// or, when the window holds NaN, the first NaN of the last row that has one.
///
/// Per output row, each column's maximum over the window's rows (and its row) comes
/// first, in one pass per input row; each output then combines its window's columns,
/// preferring the larger value, then the earlier row (the later one for NaN), then the
/// earlier column, which is the row-major rule. Both stages are branch-free loops over
/// contiguous runs (columns split by phase modulo the stride), run with AVX2 where the
/// CPU has it: 64 planes of 112x112, 3x3/2, 1.0 -> 0.46 ms.
pub fn max_pool_forward<E: Elem>(g: &PoolGeom, x: &[E], y: &mut [E], argmax: &mut [u32]) {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    let (w, wo, sw, pw) = (g.w, g.wo, g.stride[1], g.pad[1]);
    // The column maxima are split by column phase modulo the stride, so that each
    // kernel column reaches its outputs through one contiguous run: output ox takes
    // column ox * sw + kx - pw, entry (ox - lo + shift) of phase `ph`.
    let pitch = w.div_ceil(sw);
    let taps: Vec<(usize, usize, usize, usize)> = (0..g.kernel[1])
        .map(|kx| {
            let lo = pw.saturating_sub(kx).div_ceil(sw).min(wo);
            let hi = (w + pw).saturating_sub(kx).div_ceil(sw).clamp(lo, wo);
            let first = (lo * sw + kx).saturating_sub(pw);
            (lo, hi, first % sw, first / sw)
        })
        .collect();
    let first_col: Vec<u32> = (0..wo)
        .map(|ox| PoolGeom::bounds(ox, sw, pw, g.kernel[1], w).0 as u32)
        .collect();
    y[..g.planes * p]
        .par_chunks_mut(p)
        .zip(argmax[..g.planes * p].par_chunks_mut(p))
        .enumerate()
        .for_each(|(plane_i, (out, arg))| {
            let plane = &x[plane_i * hw..][..hw];
            let mut rows = vec![0u32; w + sw * pitch + wo];
            with_scratch(w + sw * pitch, |buf: &mut [E]| {
                let pool = PoolPlane {
                    g,
                    taps: &taps,
                    first_col: &first_col,
                };
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked above).
                    return unsafe { pool.run_avx2(plane, out, arg, buf, &mut rows) };
                }
                pool.run(plane, out, arg, buf, &mut rows)
            });
        });
}

/// One plane of [`max_pool_forward`], with the geometry's column taps worked out.
struct PoolPlane<'a> {
    g: &'a PoolGeom,
    taps: &'a [(usize, usize, usize, usize)],
    first_col: &'a [u32],
}

impl PoolPlane<'_> {
    /// [`PoolPlane::run`] compiled for AVX2: the loops are all selects, and twice
    /// the lanes of the baseline's SSE2 halve the pool's time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2<E: Elem>(
        &self,
        plane: &[E],
        out: &mut [E],
        arg: &mut [u32],
        buf: &mut [E],
        rows: &mut [u32],
    ) {
        self.run(plane, out, arg, buf, rows)
    }

    #[inline(always)]
    fn run<E: Elem>(
        &self,
        plane: &[E],
        out: &mut [E],
        arg: &mut [u32],
        buf: &mut [E],
        rows: &mut [u32],
    ) {
        let g = self.g;
        let (w, wo, sw) = (g.w, g.wo, g.stride[1]);
        let pitch = w.div_ceil(sw);
        let (col_row, rest) = rows.split_at_mut(w);
        let (phase_row, best_row) = rest.split_at_mut(sw * pitch);
        let (col_max, phase_max) = buf.split_at_mut(w);
        for oy in 0..g.ho {
            let (y0, y1, _) = PoolGeom::bounds(oy, g.stride[0], g.pad[0], g.kernel[0], g.h);
            col_max.fill(E::neg_infinity());
            col_row.fill(y0 as u32);
            for yy in y0..y1 {
                let row = &plane[yy * w..][..w];
                let yy = yy as u32;
                for ((m, r), &v) in col_max.iter_mut().zip(col_row.iter_mut()).zip(row) {
                    // A later NaN row wins.
                    let take = (v > *m) | v.is_nan();
                    *m = E::pick(take, v, *m);
                    *r = pick_u32(take, yy, *r);
                }
            }
            for ph in 0..sw {
                let (pm, pr) = (&mut phase_max[ph * pitch..], &mut phase_row[ph * pitch..]);
                for (i, c) in (ph..w).step_by(sw).enumerate() {
                    pm[i] = col_max[c];
                    pr[i] = col_row[c];
                }
            }
            let best = &mut out[oy * wo..][..wo];
            let best_col = &mut arg[oy * wo..][..wo];
            best.fill(E::neg_infinity());
            best_row[..wo].fill(y0 as u32);
            best_col.copy_from_slice(self.first_col);
            for &(lo, hi, ph, shift) in self.taps {
                let n = hi - lo;
                let at = ph * pitch + shift;
                let (vs, rs) = (&phase_max[at..][..n], &phase_row[at..][..n]);
                let (b, br, bc) = (
                    &mut best[lo..hi],
                    &mut best_row[lo..hi],
                    &mut best_col[lo..hi],
                );
                let col0 = (shift * sw + ph) as u32;
                for t in 0..n {
                    let (v, r, bv, brv) = (vs[t], rs[t], b[t], br[t]);
                    let (v_nan, b_nan) = (v.is_nan(), bv.is_nan());
                    let take = (v_nan & (!b_nan | (r > brv)))
                        | (!v_nan & !b_nan & ((v > bv) | ((v == bv) & (r < brv))));
                    b[t] = E::pick(take, v, bv);
                    br[t] = pick_u32(take, r, brv);
                    bc[t] = pick_u32(take, col0 + (t * sw) as u32, bc[t]);
                }
            }
            for (a, &r) in best_col.iter_mut().zip(&best_row[..wo]) {
                *a += r * w as u32;
            }
        }
    }
}

/// `if take { a } else { b }` as a bit mask, which vectorises (see `Elem::pick`).
#[inline(always)]
fn pick_u32(take: bool, a: u32, b: u32) -> u32 {
    let mask = (take as u32).wrapping_neg();
    (a & mask) | (b & !mask)
}

/// Max pool backward: each output's gradient goes to its argmax switch.
pub fn max_pool_backward<E: Elem>(g: &PoolGeom, dy: &[E], argmax: &[u32], dx: &mut [E]) {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
        for (&d, &a) in dy[i * p..][..p].iter().zip(&argmax[i * p..][..p]) {
            plane[a as usize] += d;
        }
    });
}

/// Average pool (PyTorch semantics for `count_include_pad`).
pub fn avg_pool_forward<E: Elem>(g: &PoolGeom, count_include_pad: bool, x: &[E], y: &mut [E]) {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    y.par_chunks_mut(p).enumerate().for_each(|(i, out)| {
        let plane = &x[i * hw..][..hw];
        for oy in 0..g.ho {
            let (y0, y1, ph) = PoolGeom::bounds(oy, g.stride[0], g.pad[0], g.kernel[0], g.h);
            for ox in 0..g.wo {
                let (x0, x1, pw) = PoolGeom::bounds(ox, g.stride[1], g.pad[1], g.kernel[1], g.w);
                let n = if count_include_pad {
                    ph * pw
                } else {
                    (y1 - y0) * (x1 - x0)
                };
                let mut s = E::zero();
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        s += plane[yy * g.w + xx];
                    }
                }
                out[oy * g.wo + ox] = s / E::of(n.max(1) as f64);
            }
        }
    });
}

/// Average pool backward.
pub fn avg_pool_backward<E: Elem>(g: &PoolGeom, count_include_pad: bool, dy: &[E], dx: &mut [E]) {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
        let go = &dy[i * p..][..p];
        for oy in 0..g.ho {
            let (y0, y1, ph) = PoolGeom::bounds(oy, g.stride[0], g.pad[0], g.kernel[0], g.h);
            for ox in 0..g.wo {
                let (x0, x1, pw) = PoolGeom::bounds(ox, g.stride[1], g.pad[1], g.kernel[1], g.w);
                let n = if count_include_pad {
                    ph * pw
                } else {
                    (y1 - y0) * (x1 - x0)
                };
                let share = go[oy * g.wo + ox] / E::of(n.max(1) as f64);
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        plane[yy * g.w + xx] += share;
                    }
                }
            }
        }
    });
}

/// Adaptive average pooling bins along one axis, PyTorch's:
/// `[floor(i*len/out), ceil((i+1)*len/out))`.
pub(crate) fn adaptive_bins(len: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out)
        .map(|i| (i * len / out, ((i + 1) * len).div_ceil(out)))
        .collect()
}

/// Adaptive average pool of `planes` planes `(h, w)` to `(ho, wo)`.
pub fn adaptive_avg_forward<E: Elem>(
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    x: &[E],
    y: &mut [E],
) {
    let (rows, cols) = (adaptive_bins(h, ho), adaptive_bins(w, wo));
    y.par_chunks_mut(ho * wo)
        .enumerate()
        .take(planes)
        .for_each(|(i, out)| {
            let plane = &x[i * h * w..][..h * w];
            for (oy, &(y0, y1)) in rows.iter().enumerate() {
                for (ox, &(x0, x1)) in cols.iter().enumerate() {
                    let mut s = E::zero();
                    for yy in y0..y1 {
                        for xx in x0..x1 {
                            s += plane[yy * w + xx];
                        }
                    }
                    out[oy * wo + ox] = s / E::of(((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        });
}

/// Adaptive average pool backward.
pub fn adaptive_avg_backward<E: Elem>(
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    dy: &[E],
    dx: &mut [E],
) {
    let (rows, cols) = (adaptive_bins(h, ho), adaptive_bins(w, wo));
    dx.par_chunks_mut(h * w)
        .enumerate()
        .take(planes)
        .for_each(|(i, plane)| {
            let go = &dy[i * ho * wo..][..ho * wo];
            for (oy, &(y0, y1)) in rows.iter().enumerate() {
                for (ox, &(x0, x1)) in cols.iter().enumerate() {
                    let share = go[oy * wo + ox] / E::of(((y1 - y0) * (x1 - x0)) as f64);
                    for yy in y0..y1 {
                        for xx in x0..x1 {
                            plane[yy * w + xx] += share;
                        }
                    }
                }
            }
        });
}
