//! Depthwise convolutions computed directly: one task per plane, each kernel tap a
//! shifted, scaled copy of the input rows.

use rayon::prelude::*;

use crate::device::with_scratch;
use crate::Elem;

use super::geom::{ConvGeom, Phases};

/// Depthwise convolution computed directly, added onto `y`: im2col would build `groups` tiny
/// matrices. Each output plane is a task; each kernel tap adds a shifted, scaled copy
/// of the input rows over the run of columns where it lands inside the image.
pub(crate) fn depthwise_forward<E: Elem>(g: &ConvGeom, x: &[E], weight: &[E], y: &mut [E]) {
    let (p, mult, [kh, kw], sw) = (g.pixels(), g.og(), g.kernel, g.stride[1]);
    let cols: Vec<(usize, usize, isize)> = (0..kw).map(|j| g.valid_cols(j)).collect();
    let phases = Phases::new(g.h, g.w, sw);
    y.par_chunks_mut(p).enumerate().for_each(|(i, out)| {
        let (b, o) = (i / g.c_out, i % g.c_out);
        let plane = &x[(b * g.c_in + o / mult) * g.h * g.w..][..g.h * g.w];
        let wk = &weight[o * kh * kw..][..kh * kw];
        with_scratch(phases.len(), |split| {
            // Strided taps read every sw-th column: from the plane split into its
            // column phases they read a contiguous run instead.
            let src: &[E] = if sw == 1 {
                plane
            } else {
                phases.split(plane, split);
                split
            };
            for oy in 0..g.ho {
                let dst = &mut out[oy * g.wo..][..g.wo];
                for ki in 0..kh {
                    let Some(sy) = ConvGeom::src(oy, ki, g.stride[0], g.dilation[0], g.pad[0], g.h)
                    else {
                        continue;
                    };
                    for (kj, &(lo, hi, x0)) in cols.iter().enumerate() {
                        if lo >= hi {
                            continue;
                        }
                        let wv = wk[ki * kw + kj];
                        let run =
                            &src[phases.at(sy, (x0 + (lo * sw) as isize) as usize)..][..hi - lo];
                        dst[lo..hi]
                            .iter_mut()
                            .zip(run)
                            .for_each(|(d, &v)| *d += wv * v);
                    }
                }
            }
        });
    });
}

/// The layout in which a stride-1 depthwise kernel tap is one long loop: the input
/// plane zero-padded to `hp x wp`, and outputs on the same row pitch `wp`, so tap
/// `(i, j)` reads at a fixed offset `i * d * wp + j * d` from every output position
/// (the few positions past each output row's end are computed and discarded).
struct Padded {
    hp: usize,
    wp: usize,
    /// Top and left padding.
    top: usize,
    left: usize,
    /// Output positions on the padded pitch: `(ho - 1) * wp + wo`.
    span: usize,
}

impl Padded {
    fn new(g: &ConvGeom) -> Self {
        let wp = g.w + g.pad[2] + g.pad[3];
        Padded {
            hp: g.h + g.pad[0] + g.pad[1],
            wp,
            top: g.pad[0],
            left: g.pad[2],
            span: (g.ho.max(1) - 1) * wp + g.wo,
        }
    }

    /// Scratch for one plane: the padded plane, then the outputs on its pitch.
    fn scratch_len(&self) -> usize {
        self.hp * self.wp + self.span
    }

    fn offset(&self, g: &ConvGeom, i: usize, j: usize) -> usize {
        i * g.dilation[0] * self.wp + j * g.dilation[1]
    }
}

/// Stride-1 depthwise convolution through [`Padded`], added onto `y`: each of the
/// `kh * kw` taps is one vectorised multiply-add over the whole plane, where the
/// direct kernel runs one short loop per output row and tap (7x7 and 14x14 planes
/// made those loops a few elements long).
pub(crate) fn depthwise_unit_stride_forward<E: Elem>(
    g: &ConvGeom,
    x: &[E],
    weight: &[E],
    y: &mut [E],
) {
    let (p, mult, [kh, kw]) = (g.pixels(), g.og(), g.kernel);
    let pd = Padded::new(g);
    y.par_chunks_mut(p).enumerate().for_each(|(i, out)| {
        let (b, o) = (i / g.c_out, i % g.c_out);
        let plane = &x[(b * g.c_in + o / mult) * g.h * g.w..][..g.h * g.w];
        let wk = &weight[o * kh * kw..][..kh * kw];
        with_scratch(pd.scratch_len(), |buf: &mut [E]| {
            let (padded, acc) = buf.split_at_mut(pd.hp * pd.wp);
            padded.fill(E::zero());
            for (r, row) in plane.chunks(g.w).enumerate() {
                padded[(r + pd.top) * pd.wp + pd.left..][..g.w].copy_from_slice(row);
            }
            acc.fill(E::zero());
            for ki in 0..kh {
                for kj in 0..kw {
                    let wv = wk[ki * kw + kj];
                    let src = &padded[pd.offset(g, ki, kj)..][..pd.span];
                    acc.iter_mut().zip(src).for_each(|(a, &v)| *a += wv * v);
                }
            }
            for (oy, dst) in out.chunks_mut(g.wo).enumerate() {
                let row = &acc[oy * pd.wp..][..g.wo];
                dst.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
            }
        });
    });
}

/// The input gradient of [`depthwise_unit_stride_forward`], added onto `dx`: each
/// output gradient plane, put on the padded pitch, is scattered back tap by tap with
/// one long loop each, then the padding is dropped.
pub(crate) fn depthwise_unit_stride_backward<E: Elem>(
    g: &ConvGeom,
    dy: &[E],
    weight: &[E],
    dx: &mut [E],
) {
    let (p, mult, [kh, kw]) = (g.pixels(), g.og(), g.kernel);
    let pd = Padded::new(g);
    dx.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(i, plane)| {
            let (b, c) = (i / g.c_in, i % g.c_in);
            with_scratch(pd.scratch_len(), |buf: &mut [E]| {
                let (padded, grad) = buf.split_at_mut(pd.hp * pd.wp);
                padded.fill(E::zero());
                for o in c * mult..(c + 1) * mult {
                    let go = &dy[(b * g.c_out + o) * p..][..p];
                    let wk = &weight[o * kh * kw..][..kh * kw];
                    // The gap between rows stays zero, so nothing flows from it.
                    grad.fill(E::zero());
                    for (oy, row) in go.chunks(g.wo).enumerate() {
                        grad[oy * pd.wp..][..g.wo].copy_from_slice(row);
                    }
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let wv = wk[ki * kw + kj];
                            let dst = &mut padded[pd.offset(g, ki, kj)..][..pd.span];
                            dst.iter_mut()
                                .zip(&grad[..])
                                .for_each(|(d, &v)| *d += wv * v);
                        }
                    }
                }
                for (r, row) in plane.chunks_mut(g.w).enumerate() {
                    let src = &padded[(r + pd.top) * pd.wp + pd.left..][..g.w];
                    row.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                }
            });
        });
}
