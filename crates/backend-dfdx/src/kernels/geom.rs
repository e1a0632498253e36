//! The geometry of a convolution (shared by the dense and depthwise kernels, so
//! neither imports the other): output sizes, im2col/col2im, and planes split into
//! column phases for strided taps.

use attrib_core::{Error, Result};
use rayon::prelude::*;

use crate::device::with_scratch;
use crate::Elem;

/// Values of an im2col matrix block in the blocked forward pass: 512 KB of f32,
/// a quarter of a core's L2 here.
pub(crate) const IM2COL_BLOCK_VALUES: usize = 1 << 17;

/// Outputs a block covers at least, so its product stays wide for gemm.
pub(crate) const IM2COL_MIN_PIXELS: usize = 256;

/// The geometry of one 2-d convolution, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (vertical, horizontal).
    pub stride: [usize; 2],
    /// Dilation (vertical, horizontal).
    pub dilation: [usize; 2],
    /// Zero padding: top, bottom, left, right.
    pub pad: [usize; 4],
    /// Channel groups (`c_in` for depthwise).
    pub groups: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

/// Output length of a sliding window, or `None` if the window does not fit.
pub(crate) fn window_out(
    len: usize,
    pad: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (len + pad >= span).then(|| (len + pad - span) / stride + 1)
}

impl ConvGeom {
    /// Validates the geometry of `x (n, c_in, h, w) * weight (c_out, c_in/groups, kh, kw)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: [usize; 4],
        c_out: usize,
        weight_in: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pad: [usize; 4],
        groups: usize,
    ) -> Result<Self> {
        let [n, c_in, h, w] = input;
        if groups == 0 || stride.contains(&0) || dilation.contains(&0) || kernel.contains(&0) {
            return Err(Error::param(
                "conv2d",
                format!("groups {groups}, stride {stride:?}, dilation {dilation:?} and kernel {kernel:?} must be positive"),
            ));
        }
        if c_in % groups != 0 || !c_out.is_multiple_of(groups) || weight_in * groups != c_in {
            return Err(Error::shape(
                "conv2d input channels",
                format!(
                    "{} channels ({} groups of {weight_in})",
                    weight_in * groups,
                    groups
                ),
                format!("{c_in} channels"),
            ));
        }
        let ho = window_out(h, pad[0] + pad[1], kernel[0], stride[0], dilation[0]);
        let wo = window_out(w, pad[2] + pad[3], kernel[1], stride[1], dilation[1]);
        match (ho, wo) {
            (Some(ho), Some(wo)) => Ok(ConvGeom {
                n,
                c_in,
                h,
                w,
                c_out,
                kernel,
                stride,
                dilation,
                pad,
                groups,
                ho,
                wo,
            }),
            _ => Err(Error::shape(
                "conv2d input size",
                format!(
                    "at least the dilated kernel {:?} after padding {pad:?}",
                    kernel
                ),
                format!("{h}x{w}"),
            )),
        }
    }

    pub(crate) fn cg(&self) -> usize {
        self.c_in / self.groups
    }

    pub(crate) fn og(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the im2col matrix: `c_in/groups * kh * kw`.
    pub(crate) fn kk(&self) -> usize {
        self.cg() * self.kernel[0] * self.kernel[1]
    }

    pub(crate) fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// Whether the im2col matrix of a group is the input itself (1x1, stride 1, no pad).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0, 0, 0]
    }

    /// Whether each output channel reads exactly one input channel (depthwise).
    pub(crate) fn is_depthwise(&self) -> bool {
        self.cg() == 1
    }

    /// Number of output elements.
    pub fn out_len(&self) -> usize {
        self.n * self.c_out * self.pixels()
    }

    /// For output row `o` (or column), the input coordinate of kernel tap `i`, if inside.
    #[inline]
    pub(crate) fn src(
        o: usize,
        i: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        len: usize,
    ) -> Option<usize> {
        let y = (o * stride + i * dilation).checked_sub(pad)?;
        (y < len).then_some(y)
    }

    /// The output columns `[lo, hi)` whose kernel tap `j` reads inside the row, and
    /// the input column of output column 0 (possibly negative): valid taps form one
    /// contiguous run, so rows are copied rather than tested pixel by pixel.
    #[inline]
    pub(crate) fn valid_cols(&self, j: usize) -> (usize, usize, isize) {
        let (sw, w) = (self.stride[1] as isize, self.w as isize);
        let x0 = (j * self.dilation[1]) as isize - self.pad[2] as isize;
        let lo = if x0 >= 0 {
            0
        } else {
            ((-x0 + sw - 1) / sw) as usize
        };
        let hi = if x0 > w - 1 {
            0
        } else {
            (((w - 1 - x0) / sw) + 1).min(self.wo as isize) as usize
        };
        (lo.min(hi), hi, x0)
    }

    /// Writes the im2col matrix `(kk, ho*wo)` of one group of one image, one input
    /// channel per task.
    pub(crate) fn im2col<E: Elem>(&self, x_img: &[E], group: usize, col: &mut [E]) {
        let (kk, p) = (self.kernel[0] * self.kernel[1], self.pixels());
        col[..self.cg() * kk * p]
            .par_chunks_mut(kk * p)
            .enumerate()
            .for_each(|(ci, rows)| self.im2col_channel(x_img, group, ci, 0..self.ho, rows));
    }

    /// The im2col rows of input channel `ci` of `group` for output rows `oys` only:
    /// `(kh * kw, oys.len() * wo)`.
    pub(crate) fn im2col_channel<E: Elem>(
        &self,
        x_img: &[E],
        group: usize,
        ci: usize,
        oys: std::ops::Range<usize>,
        rows: &mut [E],
    ) {
        let ([kh, kw], sw) = (self.kernel, self.stride[1]);
        let p = oys.len() * self.wo;
        if p == 0 {
            return;
        }
        let plane = &x_img[(group * self.cg() + ci) * self.h * self.w..][..self.h * self.w];
        // The input rows these outputs read, split by column phase when the stride is
        // above 1, so that every kernel tap copies a contiguous run.
        let (sh, dh, top) = (self.stride[0], self.dilation[0], self.pad[0]);
        let y_lo = (oys.start * sh).saturating_sub(top).min(self.h);
        let y_hi = ((oys.end - 1) * sh + (kh - 1) * dh + 1)
            .saturating_sub(top)
            .clamp(y_lo, self.h);
        let rows_in = &plane[y_lo * self.w..y_hi * self.w];
        let phases = Phases::new(y_hi - y_lo, self.w, sw);
        with_scratch(phases.len(), |split: &mut [E]| {
            let src = if sw == 1 {
                rows_in
            } else {
                phases.split(rows_in, split);
                &split[..]
            };
            for i in 0..kh {
                for j in 0..kw {
                    let row = &mut rows[(i * kw + j) * p..][..p];
                    let (lo, hi, x0) = self.valid_cols(j);
                    for (r, oy) in oys.clone().enumerate() {
                        let dst = &mut row[r * self.wo..][..self.wo];
                        match Self::src(oy, i, sh, dh, top, self.h) {
                            Some(y) if lo < hi => {
                                dst[..lo].fill(E::zero());
                                dst[hi..].fill(E::zero());
                                let start = (x0 + (lo * sw) as isize) as usize;
                                let at = phases.at(y - y_lo, start);
                                dst[lo..hi].copy_from_slice(&src[at..at + (hi - lo)]);
                            }
                            _ => dst.fill(E::zero()),
                        }
                    }
                }
            }
        });
    }

    /// Whether the forward pass builds im2col a block of output rows at a time.
    pub(crate) fn blocked(&self) -> bool {
        let depthwise = self.is_depthwise() && self.groups > 1;
        !self.is_pointwise() && !depthwise && self.block_rows() < self.ho
    }

    /// Output rows per block when the forward pass builds im2col a block of rows at
    /// a time: the block's matrix stays within [`IM2COL_BLOCK_VALUES`], but covers
    /// at least [`IM2COL_MIN_PIXELS`] outputs so the products stay wide.
    pub(crate) fn block_rows(&self) -> usize {
        (IM2COL_BLOCK_VALUES / (self.kk() * self.wo).max(1))
            .max(IM2COL_MIN_PIXELS.div_ceil(self.wo.max(1)))
            .clamp(1, self.ho.max(1))
    }

    /// Adds the im2col-shaped `col` back into one group of one image's gradient, one
    /// input channel per task (each writes only its own plane).
    pub(crate) fn col2im<E: Elem>(&self, col: &[E], group: usize, dx_img: &mut [E]) {
        let (cg, [kh, kw], p) = (self.cg(), self.kernel, self.pixels());
        let (hw, sw) = (self.h * self.w, self.stride[1]);
        dx_img[group * cg * hw..][..cg * hw]
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(ci, plane)| {
                for i in 0..kh {
                    for j in 0..kw {
                        let row = &col[((ci * kh + i) * kw + j) * p..][..p];
                        let (lo, hi, x0) = self.valid_cols(j);
                        if lo >= hi {
                            continue;
                        }
                        let start = (x0 + (lo * sw) as isize) as usize;
                        for oy in 0..self.ho {
                            let Some(y) = Self::src(
                                oy,
                                i,
                                self.stride[0],
                                self.dilation[0],
                                self.pad[0],
                                self.h,
                            ) else {
                                continue;
                            };
                            let dst_row = &mut plane[y * self.w..][..self.w];
                            let src = &row[oy * self.wo + lo..oy * self.wo + hi];
                            if sw == 1 {
                                dst_row[start..start + src.len()]
                                    .iter_mut()
                                    .zip(src)
                                    .for_each(|(d, &v)| *d += v);
                            } else {
                                for (k, &v) in src.iter().enumerate() {
                                    dst_row[start + k * sw] += v;
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// A plane of `h x w` with its columns split by phase modulo the horizontal stride
/// `s`: column `c` of row `y` goes to phase `c % s`, position `c / s`, so that a
/// strided kernel tap covers a contiguous run. With `s = 1` the plane itself.
pub(crate) struct Phases {
    h: usize,
    w: usize,
    s: usize,
    /// Values per phase row: `ceil(w / s)`.
    row: usize,
}

impl Phases {
    pub(crate) fn new(h: usize, w: usize, s: usize) -> Self {
        Phases {
            h,
            w,
            s,
            row: w.div_ceil(s),
        }
    }

    /// Scratch length for one split plane.
    pub(crate) fn len(&self) -> usize {
        if self.s == 1 {
            0
        } else {
            self.s * self.h * self.row
        }
    }

    /// Where column `c` of row `y` lies (in the split plane, or the plane for `s = 1`).
    #[inline]
    pub(crate) fn at(&self, y: usize, c: usize) -> usize {
        if self.s == 1 {
            y * self.w + c
        } else {
            ((c % self.s) * self.h + y) * self.row + c / self.s
        }
    }

    /// Writes `plane` split into `out`.
    pub(crate) fn split<E: Elem>(&self, plane: &[E], out: &mut [E]) {
        for ph in 0..self.s {
            for y in 0..self.h {
                let row = &plane[y * self.w..][..self.w];
                let dst = &mut out[(ph * self.h + y) * self.row..][..self.row];
                for (d, &v) in dst
                    .iter_mut()
                    .zip(row[ph.min(self.w)..].iter().step_by(self.s))
                {
                    *d = v;
                }
            }
        }
    }

    /// Adds the split `acc` back into `plane`.
    pub(crate) fn merge_add<E: Elem>(&self, acc: &[E], plane: &mut [E]) {
        for ph in 0..self.s {
            for y in 0..self.h {
                let row = &mut plane[y * self.w..][..self.w];
                let src = &acc[(ph * self.h + y) * self.row..][..self.row];
                let start = ph.min(self.w);
                for (d, &v) in row[start..].iter_mut().step_by(self.s).zip(src) {
                    *d += v;
                }
            }
        }
    }
}
