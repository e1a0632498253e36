//! Host kernels on plain slices, NCHW and row-major. The tape ops in [`crate::ops`]
//! call these for the forward and the backward pass; keeping them free of dfdx types
//! keeps them testable on their own and shared by every device path.

use attrib_core::{Error, Rectifier, RectifierKind, Result};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::device::with_scratch;
use crate::Elem;

/// Below this many multiply-adds a gemm runs on the calling thread: spawning costs more.
const PARALLEL_GEMM_FLOPS: usize = 1 << 17;

/// Values of an im2col matrix block in the blocked forward pass: 512 KB of f32,
/// a quarter of a core's L2 here.
const IM2COL_BLOCK_VALUES: usize = 1 << 17;

/// Outputs a block covers at least, so its product stays wide for gemm.
const IM2COL_MIN_PIXELS: usize = 256;

/// Elements per task of elementwise kernels: large enough that a task costs more
/// than handing it to another thread.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `f(start, chunk)` over `xs` in chunks of [`ELEMENTWISE_CHUNK`] starting at
/// `start`, in parallel when there is more than one; callers index their other
/// operands from `start`.
fn par_chunks_from<T: Send>(xs: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if xs.len() <= ELEMENTWISE_CHUNK {
        f(0, xs);
    } else {
        xs.par_chunks_mut(ELEMENTWISE_CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * ELEMENTWISE_CHUNK, c));
    }
}

/// A new vector of `f(a[i], b[i])`, written once in parallel chunks for long
/// slices (copying `a` and updating it would write every value twice, the copy
/// serially).
pub(crate) fn par_zip_new<E: Elem>(a: &[E], b: &[E], f: impl Fn(E, E) -> E + Sync) -> Vec<E> {
    let n = a.len().min(b.len());
    let mut v = Vec::with_capacity(n);
    par_chunks_from(&mut v.spare_capacity_mut()[..n], |at, chunk| {
        for ((d, &x), &y) in chunk.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            d.write(f(x, y));
        }
    });
    // SAFETY: the chunks cover 0..n and each wrote all its values.
    unsafe { v.set_len(n) };
    v
}

/// `f(dst[i], &src[i])` for every `i`, in parallel chunks for long slices.
pub(crate) fn par_map<E: Elem>(dst: &mut [E], src: &[E], f: impl Fn(&mut E, &E) + Sync) {
    par_chunks_from(dst, |at, d| {
        d.iter_mut().zip(&src[at..]).for_each(|(d, s)| f(d, s))
    });
}

/// Binds `$keep` to the predicate `keep(y, g)` of `rule` for a rectifier of `kind`
/// (`y` its output, `g` the incoming gradient) and evaluates `$body` with it: one
/// monomorphic, branch-free closure per case, so that each loop is one select.
macro_rules! with_keep {
    ($kind:expr, $rule:expr, |$keep:ident| $body:expr) => {{
        let (zero, six) = (E::zero(), E::of(6.0));
        match ($rule, $kind) {
            (Rectifier::Deconvnet, _) => {
                let $keep = move |_: E, g: E| g > zero;
                $body
            }
            (Rectifier::Gradient, RectifierKind::Relu) => {
                let $keep = move |v: E, _: E| v > zero;
                $body
            }
            (Rectifier::Gradient, RectifierKind::Relu6) => {
                let $keep = move |v: E, _: E| (v > zero) & (v < six);
                $body
            }
            (Rectifier::Guided, RectifierKind::Relu) => {
                let $keep = move |v: E, g: E| (v > zero) & (g > zero);
                $body
            }
            (Rectifier::Guided, RectifierKind::Relu6) => {
                let $keep = move |v: E, g: E| (v > zero) & (v < six) & (g > zero);
                $body
            }
        }
    }};
}

/// `dy = rule(dy)` in place: the gradient through a rectifier of `kind`, whose
/// forward output `y` tells where it is active (`None` for deconvnet, which does not
/// look).
pub fn rectifier_mask<E: Elem>(
    kind: RectifierKind,
    rule: Rectifier,
    y: Option<&[E]>,
    dy: &mut [E],
) {
    if let Some(y) = y {
        assert!(y.len() == dy.len(), "rectifier gradient lengths");
    }
    with_keep!(kind, rule, |keep| par_chunks_from(dy, |at, g| match y {
        Some(y) => g.iter_mut().zip(&y[at..]).for_each(|(g, &v)| {
            *g = if keep(v, *g) { *g } else { E::zero() };
        }),
        None => g.iter_mut().for_each(|g| {
            *g = if keep(*g, *g) { *g } else { E::zero() };
        }),
    }))
}

/// `f(x)` for every element, in place, in parallel chunks for long slices.
pub(crate) fn par_update<E: Elem>(xs: &mut [E], f: impl Fn(&mut E) + Sync) {
    par_chunks_from(xs, |_, c| c.iter_mut().for_each(&f));
}

/// A row-major (or transposed, through its strides) matrix operand.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, E> {
    pub data: &'a [E],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, E> MatRef<'a, E> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [E], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [E], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)` through gemm 0.19,
/// on all threads when the product is large.
pub(crate) fn matmul<E: Elem>(
    dst: &mut [E],
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, E>,
    rhs: MatRef<'_, E>,
    accumulate: bool,
) {
    matmul_on(dst, m, n, k, lhs, rhs, accumulate, true)
}

/// [`matmul`], single-threaded unless `parallel`: callers that already run one
/// product per thread (one per image of a batch) pass `false`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_on<E: Elem>(
    dst: &mut [E],
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, E>,
    rhs: MatRef<'_, E>,
    accumulate: bool,
    parallel: bool,
) {
    // The bound below is what makes the raw-pointer call sound.
    assert!(dst.len() >= m * n, "gemm destination too small");
    // SAFETY: dst holds m rows of n values at pitch n; it does not alias lhs or rhs
    // (&mut).
    unsafe { matmul_raw(dst.as_mut_ptr(), n, m, n, k, lhs, rhs, accumulate, parallel) }
}

/// [`matmul_on`] into `m` rows of `n` values at pitch `dst_stride` from `dst`.
///
/// # Safety
/// That region is valid for writes, nothing else accesses it meanwhile, and it does
/// not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_raw<E: Elem>(
    dst: *mut E,
    dst_stride: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, E>,
    rhs: MatRef<'_, E>,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of the caller's region.
                unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_stride), n) }
                    .fill(E::zero());
            }
        }
        return;
    }
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "gemm operand too small");
    let parallelism =
        if parallel && m * n * k >= PARALLEL_GEMM_FLOPS && rayon::current_num_threads() > 1 {
            Parallelism::Rayon(rayon::current_num_threads())
        } else {
            Parallelism::None
        };
    // SAFETY: every index gemm reads, (i*rs + j*cs) for i < rows and j < cols, was
    // checked to lie inside its slice above; the destination is the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            E::one(),
            E::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// An output slice written concurrently by tasks that own disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<E>(pub(crate) *mut E);

// SAFETY: the pointer is only used through `row`, whose callers guarantee disjoint,
// in-bounds rows.
unsafe impl<E: Send> Send for SharedOut<E> {}
unsafe impl<E: Send> Sync for SharedOut<E> {}

impl<E> SharedOut<E> {
    /// The `len` elements from `at`.
    ///
    /// # Safety
    /// They lie inside the slice and no other thread accesses them meanwhile.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn row(&self, at: usize, len: usize) -> &mut [E] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }

    /// A pointer to element `at`, for writes the caller owns.
    ///
    /// # Safety
    /// `at` lies inside the slice.
    #[inline]
    pub(crate) unsafe fn at(&self, at: usize) -> *mut E {
        self.0.add(at)
    }
}

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

    fn cg(&self) -> usize {
        self.c_in / self.groups
    }

    fn og(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the im2col matrix: `c_in/groups * kh * kw`.
    fn kk(&self) -> usize {
        self.cg() * self.kernel[0] * self.kernel[1]
    }

    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// Whether the im2col matrix of a group is the input itself (1x1, stride 1, no pad).
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0, 0, 0]
    }

    /// Whether each output channel reads exactly one input channel (depthwise).
    fn is_depthwise(&self) -> bool {
        self.cg() == 1
    }

    /// Number of output elements.
    pub fn out_len(&self) -> usize {
        self.n * self.c_out * self.pixels()
    }

    /// For output row `o` (or column), the input coordinate of kernel tap `i`, if inside.
    #[inline]
    fn src(
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
    fn valid_cols(&self, j: usize) -> (usize, usize, isize) {
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
    fn im2col<E: Elem>(&self, x_img: &[E], group: usize, col: &mut [E]) {
        let (kk, p) = (self.kernel[0] * self.kernel[1], self.pixels());
        col[..self.cg() * kk * p]
            .par_chunks_mut(kk * p)
            .enumerate()
            .for_each(|(ci, rows)| self.im2col_channel(x_img, group, ci, 0..self.ho, rows));
    }

    /// The im2col rows of input channel `ci` of `group` for output rows `oys` only:
    /// `(kh * kw, oys.len() * wo)`.
    fn im2col_channel<E: Elem>(
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
    fn blocked(&self) -> bool {
        let depthwise = self.is_depthwise() && self.groups > 1;
        !self.is_pointwise() && !depthwise && self.block_rows() < self.ho
    }

    /// Output rows per block when the forward pass builds im2col a block of rows at
    /// a time: the block's matrix stays within [`IM2COL_BLOCK_VALUES`], but covers
    /// at least [`IM2COL_MIN_PIXELS`] outputs so the products stay wide.
    fn block_rows(&self) -> usize {
        (IM2COL_BLOCK_VALUES / (self.kk() * self.wo).max(1))
            .max(IM2COL_MIN_PIXELS.div_ceil(self.wo.max(1)))
            .clamp(1, self.ho.max(1))
    }

    /// Adds the im2col-shaped `col` back into one group of one image's gradient, one
    /// input channel per task (each writes only its own plane).
    fn col2im<E: Elem>(&self, col: &[E], group: usize, dx_img: &mut [E]) {
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

/// Runs `f(scratch, dst_image, src_image, split_products)` for each of `n` images,
/// `scratch` holding `scratch_len` values of unspecified content. A batch runs one
/// image per thread with single-threaded products (better than splitting each
/// product); a single image, or one thread, goes in order and lets its products
/// split across threads.
fn for_each_image<E: Elem>(
    n: usize,
    dst: &mut [E],
    dst_len: usize,
    src: &[E],
    src_len: usize,
    scratch_len: usize,
    f: impl Fn(&mut [E], &mut [E], &[E], bool) + Send + Sync,
) {
    if n > 1 && rayon::current_num_threads() > 1 {
        dst[..n * dst_len]
            .par_chunks_mut(dst_len)
            .zip(src.par_chunks(src_len))
            .for_each(|(d, s)| with_scratch(scratch_len, |col| f(col, d, s, false)));
    } else {
        with_scratch(scratch_len, |col| {
            for (d, s) in dst.chunks_mut(dst_len).zip(src.chunks(src_len)).take(n) {
                f(col, d, s, true);
            }
        });
    }
}

/// `y = conv(x, weight) + bias`, writing all of `y` `(n, c_out, ho, wo)`.
pub fn conv2d_forward<E: Elem>(
    g: &ConvGeom,
    x: &[E],
    weight: &[E],
    bias: Option<&[E]>,
    y: &mut [E],
) {
    // The bias is written first and the products added onto it, which saves a pass
    // over the output.
    if let Some(bias) = bias {
        y[..g.out_len()]
            .par_chunks_mut(g.pixels().max(1))
            .enumerate()
            .for_each(|(i, plane)| plane.fill(bias[i % g.c_out]));
    }
    conv2d_forward_on(g, x, weight, bias.is_some(), y);
}

/// `y += conv(x, weight)`: for callers that write the bias (or anything else) into
/// a new output as they allocate it, instead of zero-filling it first.
pub fn conv2d_forward_add<E: Elem>(g: &ConvGeom, x: &[E], weight: &[E], y: &mut [E]) {
    conv2d_forward_on(g, x, weight, true, y);
}

/// `y = [y +] conv(x, weight)`.
fn conv2d_forward_on<E: Elem>(g: &ConvGeom, x: &[E], weight: &[E], accumulate: bool, y: &mut [E]) {
    let (og, kk, p) = (g.og(), g.kk(), g.pixels());
    let img_in = g.c_in * g.h * g.w;
    let img_out = g.c_out * p;
    if g.is_depthwise() && g.groups > 1 {
        if !accumulate {
            y[..g.out_len()].fill(E::zero());
        }
        if g.stride == [1, 1] {
            depthwise_unit_stride_forward(g, x, weight, y);
        } else {
            depthwise_forward(g, x, weight, y);
        }
    } else if g.blocked() {
        assert!(y.len() >= g.out_len());
        // SAFETY: `y` is a live slice of the whole output, borrowed mutably here.
        unsafe {
            im2col_blocks_forward(
                g,
                x,
                weight,
                SharedOut(y.as_mut_ptr()),
                BlockOutput::Initialised { accumulate },
            )
        };
    } else {
        let col_len = if g.is_pointwise() { 0 } else { kk * p };
        for_each_image(
            g.n,
            y,
            img_out,
            x,
            img_in,
            col_len,
            |col, y_img, x_img, split| {
                for grp in 0..g.groups {
                    let rhs = if g.is_pointwise() {
                        &x_img[grp * kk * p..][..kk * p]
                    } else {
                        g.im2col(x_img, grp, col);
                        &col[..]
                    };
                    matmul_on(
                        &mut y_img[grp * og * p..][..og * p],
                        og,
                        p,
                        kk,
                        MatRef::rows(&weight[grp * og * kk..][..og * kk], kk),
                        MatRef::rows(rhs, p),
                        accumulate,
                        split,
                    );
                }
            },
        );
    }
}

/// How [`im2col_blocks_forward`] treats the output.
enum BlockOutput<'a, E> {
    /// It holds values the products are added onto (`accumulate`) or overwrite.
    Initialised { accumulate: bool },
    /// It is new, uninitialised memory: each block writes the bias (or zeros), adds
    /// the products and runs `epilogue` on its rows while they are in cache.
    Fresh {
        bias: Option<&'a [E]>,
        epilogue: &'a (dyn Fn(&mut [E]) + Sync),
    },
}

/// The forward pass of a convolution whose im2col matrix would not stay in cache
/// (a stem such as ResNet's 7x7 over 224x224: 7.4 MB per image): each task builds
/// the matrix of a block of output rows of one image and multiplies it into those
/// rows, so the matrix is read back from cache, and blocks of all images run in
/// parallel.
///
/// # Safety
/// `out` points to `g.out_len()` values, initialised unless `mode` is `Fresh`, that
/// nothing else accesses meanwhile.
unsafe fn im2col_blocks_forward<E: Elem>(
    g: &ConvGeom,
    x: &[E],
    weight: &[E],
    out: SharedOut<E>,
    mode: BlockOutput<'_, E>,
) {
    let (og, kk, p) = (g.og(), g.kk(), g.pixels());
    let rows = g.block_rows();
    let blocks = g.ho.div_ceil(rows);
    assert!(x.len() >= g.n * g.c_in * g.h * g.w);
    (0..g.n * blocks).into_par_iter().for_each(|task| {
        let (b, oy0) = (task / blocks, task % blocks * rows);
        let oys = oy0..(oy0 + rows).min(g.ho);
        let np = oys.len() * g.wo;
        let x_img = &x[b * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
        with_scratch(kk * np, |col| {
            for grp in 0..g.groups {
                let taps = g.kernel[0] * g.kernel[1];
                for ci in 0..g.cg() {
                    g.im2col_channel(x_img, grp, ci, oys.clone(), &mut col[ci * taps * np..]);
                }
                // This task alone owns columns `oys` of its image's output rows:
                // `og` rows of `np` values at pitch `p` from `at`, inside the output.
                let at = (b * g.c_out + grp * og) * p + oy0 * g.wo;
                let row = |o: usize| at + o * p;
                let accumulate = match mode {
                    BlockOutput::Initialised { accumulate } => accumulate,
                    BlockOutput::Fresh { bias, .. } => {
                        for o in 0..og {
                            let v = bias.map_or(E::zero(), |bs| bs[grp * og + o]);
                            // SAFETY: the row segment is this task's (above); it is
                            // written as possibly uninitialised memory.
                            let seg = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.at(row(o)).cast::<std::mem::MaybeUninit<E>>(),
                                    np,
                                )
                            };
                            seg.fill(std::mem::MaybeUninit::new(v));
                        }
                        true
                    }
                };
                // SAFETY: the region is this task's (above) and initialised now.
                unsafe {
                    matmul_raw(
                        out.at(at),
                        p,
                        og,
                        np,
                        kk,
                        MatRef::rows(&weight[grp * og * kk..][..og * kk], kk),
                        MatRef::rows(&col[..kk * np], np),
                        accumulate,
                        false,
                    )
                };
                if let BlockOutput::Fresh { epilogue, .. } = mode {
                    for o in 0..og {
                        // SAFETY: this task's row segment, initialised above.
                        epilogue(unsafe { out.row(row(o), np) });
                    }
                }
            }
        });
    });
}

/// `conv(x, weight) + bias` in a new vector, with `epilogue` run over all of it (a
/// fused rectifier). Convolutions built a block of rows at a time write each block
/// once, bias, products and epilogue together, into memory never zero-filled.
pub(crate) fn conv2d_forward_new<E: Elem>(
    g: &ConvGeom,
    x: &[E],
    weight: &[E],
    bias: Option<&[E]>,
    epilogue: &(dyn Fn(&mut [E]) + Sync),
) -> Vec<E> {
    if g.blocked() {
        let n = g.out_len();
        let mut y = Vec::with_capacity(n);
        // SAFETY: `y` has room for the whole output and nothing else uses it.
        unsafe {
            im2col_blocks_forward(
                g,
                x,
                weight,
                SharedOut(y.as_mut_ptr()),
                BlockOutput::Fresh { bias, epilogue },
            )
        };
        // SAFETY: the blocks cover every image, output channel, row and column, and
        // each wrote its values.
        unsafe { y.set_len(n) };
        y
    } else {
        let mut y = biased_output(g, bias);
        conv2d_forward_add(g, x, weight, &mut y);
        epilogue(&mut y);
        y
    }
}

/// Depthwise convolution computed directly, added onto `y`: im2col would build `groups` tiny
/// matrices. Each output plane is a task; each kernel tap adds a shifted, scaled copy
/// of the input rows over the run of columns where it lands inside the image.
fn depthwise_forward<E: Elem>(g: &ConvGeom, x: &[E], weight: &[E], y: &mut [E]) {
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
fn depthwise_unit_stride_forward<E: Elem>(g: &ConvGeom, x: &[E], weight: &[E], y: &mut [E]) {
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
fn depthwise_unit_stride_backward<E: Elem>(g: &ConvGeom, dy: &[E], weight: &[E], dx: &mut [E]) {
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

/// `planes * plane` values, plane `i` all `value(i)`, written once in parallel into
/// new memory (a zero-filled vector would be written twice, the zeros serially).
pub(crate) fn planes_filled<E: Copy + Send + Sync>(
    planes: usize,
    plane: usize,
    value: impl Fn(usize) -> E + Sync,
) -> Vec<E> {
    let n = planes * plane;
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, chunk)| {
            let x = value(i);
            chunk.iter_mut().for_each(|e| {
                e.write(x);
            });
        });
    // SAFETY: the loop above initialised all n values (the chunks cover 0..n).
    unsafe { v.set_len(n) };
    v
}

/// A new output for convolution `g` holding its bias (or zeros), for the products to
/// be added onto.
pub(crate) fn biased_output<E: Elem>(g: &ConvGeom, bias: Option<&[E]>) -> Vec<E> {
    planes_filled(g.n * g.c_out, g.pixels(), |i| {
        bias.map_or(E::zero(), |b| b[i % g.c_out])
    })
}

/// A plane of `h x w` with its columns split by phase modulo the horizontal stride
/// `s`: column `c` of row `y` goes to phase `c % s`, position `c / s`, so that a
/// strided kernel tap covers a contiguous run. With `s = 1` the plane itself.
struct Phases {
    h: usize,
    w: usize,
    s: usize,
    /// Values per phase row: `ceil(w / s)`.
    row: usize,
}

impl Phases {
    fn new(h: usize, w: usize, s: usize) -> Self {
        Phases {
            h,
            w,
            s,
            row: w.div_ceil(s),
        }
    }

    /// Scratch length for one split plane.
    fn len(&self) -> usize {
        if self.s == 1 {
            0
        } else {
            self.s * self.h * self.row
        }
    }

    /// Where column `c` of row `y` lies (in the split plane, or the plane for `s = 1`).
    #[inline]
    fn at(&self, y: usize, c: usize) -> usize {
        if self.s == 1 {
            y * self.w + c
        } else {
            ((c % self.s) * self.h + y) * self.row + c / self.s
        }
    }

    /// Writes `plane` split into `out`.
    fn split<E: Elem>(&self, plane: &[E], out: &mut [E]) {
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
    fn merge_add<E: Elem>(&self, acc: &[E], plane: &mut [E]) {
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

/// `dx += conv_transpose(dy, weight)`: the input gradient.
pub fn conv2d_backward_input<E: Elem>(g: &ConvGeom, dy: &[E], weight: &[E], dx: &mut [E]) {
    let (og, kk, p) = (g.og(), g.kk(), g.pixels());
    let img_in = g.c_in * g.h * g.w;
    let img_out = g.c_out * p;
    if g.is_depthwise() && g.groups > 1 && g.stride == [1, 1] {
        depthwise_unit_stride_backward(g, dy, weight, dx);
        return;
    }
    if g.is_depthwise() && g.groups > 1 {
        let (mult, [kh, kw], sw) = (og, g.kernel, g.stride[1]);
        let cols: Vec<(usize, usize, isize)> = (0..kw).map(|j| g.valid_cols(j)).collect();
        let phases = Phases::new(g.h, g.w, sw);
        dx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(i, plane)| {
                let (b, c) = (i / g.c_in, i % g.c_in);
                with_scratch(phases.len(), |split| {
                    // Strided taps scatter to every sw-th column: accumulate into the
                    // column phases, where they are contiguous, and merge once.
                    split.fill(E::zero());
                    let acc: &mut [E] = if sw == 1 { &mut *plane } else { &mut *split };
                    for o in c * mult..(c + 1) * mult {
                        let go = &dy[(b * g.c_out + o) * p..][..p];
                        let wk = &weight[o * kh * kw..][..kh * kw];
                        for oy in 0..g.ho {
                            let src = &go[oy * g.wo..][..g.wo];
                            for ki in 0..kh {
                                let Some(sy) = ConvGeom::src(
                                    oy,
                                    ki,
                                    g.stride[0],
                                    g.dilation[0],
                                    g.pad[0],
                                    g.h,
                                ) else {
                                    continue;
                                };
                                for (kj, &(lo, hi, x0)) in cols.iter().enumerate() {
                                    if lo >= hi {
                                        continue;
                                    }
                                    let wv = wk[ki * kw + kj];
                                    let at = phases.at(sy, (x0 + (lo * sw) as isize) as usize);
                                    acc[at..at + (hi - lo)]
                                        .iter_mut()
                                        .zip(&src[lo..hi])
                                        .for_each(|(d, &v)| *d += wv * v);
                                }
                            }
                        }
                    }
                    if sw > 1 {
                        phases.merge_add(split, plane);
                    }
                });
            });
        return;
    }
    for_each_image(
        g.n,
        dx,
        img_in,
        dy,
        img_out,
        if g.is_pointwise() { 0 } else { kk * p },
        |col, dx_img, dy_img, split| {
            for grp in 0..g.groups {
                let w_t = MatRef::transposed(&weight[grp * og * kk..][..og * kk], kk);
                let dy_g = MatRef::rows(&dy_img[grp * og * p..][..og * p], p);
                if g.is_pointwise() {
                    matmul_on(
                        &mut dx_img[grp * kk * p..][..kk * p],
                        kk,
                        p,
                        og,
                        w_t,
                        dy_g,
                        true,
                        split,
                    );
                } else {
                    matmul_on(col, kk, p, og, w_t, dy_g, false, split);
                    g.col2im(col, grp, dx_img);
                }
            }
        },
    );
}

/// `dweight += dy * im2col(x)^T` and `dbias += sum(dy)`: the parameter gradients,
/// only computed when a caller traces the weights.
pub fn conv2d_backward_weight<E: Elem>(
    g: &ConvGeom,
    x: &[E],
    dy: &[E],
    dweight: &mut [E],
    dbias: Option<&mut [E]>,
) {
    let (og, kk, p) = (g.og(), g.kk(), g.pixels());
    let img_in = g.c_in * g.h * g.w;
    let img_out = g.c_out * p;
    let mut col = vec![E::zero(); kk * p];
    for b in 0..g.n {
        let x_img = &x[b * img_in..][..img_in];
        for grp in 0..g.groups {
            g.im2col(x_img, grp, &mut col);
            matmul(
                &mut dweight[grp * og * kk..][..og * kk],
                og,
                kk,
                p,
                MatRef::rows(&dy[b * img_out + grp * og * p..][..og * p], p),
                MatRef::transposed(&col, p),
                true,
            );
        }
    }
    if let Some(db) = dbias {
        for (i, plane) in dy.chunks(p).enumerate() {
            let s = plane.iter().fold(E::zero(), |a, &v| a + v);
            db[i % g.c_out] += s;
        }
    }
}

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

/// `y (n, k) = x (n, f) * weight^T (f, k) + bias`.
pub fn linear_forward<E: Elem>(
    n: usize,
    f: usize,
    k: usize,
    x: &[E],
    weight: &[E],
    bias: Option<&[E]>,
    y: &mut [E],
) {
    matmul(
        y,
        n,
        k,
        f,
        MatRef::rows(x, f),
        MatRef::transposed(weight, f),
        false,
    );
    if let Some(b) = bias {
        for row in y.chunks_mut(k) {
            row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
        }
    }
}

/// `dx (n, f) += dy (n, k) * weight (k, f)`.
pub fn linear_backward_input<E: Elem>(
    n: usize,
    f: usize,
    k: usize,
    dy: &[E],
    weight: &[E],
    dx: &mut [E],
) {
    matmul(
        dx,
        n,
        f,
        k,
        MatRef::rows(dy, k),
        MatRef::rows(weight, f),
        true,
    );
}

/// `dweight (k, f) += dy^T (k, n) * x (n, f)`, `dbias += sum_n dy`.
pub fn linear_backward_weight<E: Elem>(
    n: usize,
    f: usize,
    k: usize,
    x: &[E],
    dy: &[E],
    dweight: &mut [E],
    dbias: Option<&mut [E]>,
) {
    matmul(
        dweight,
        k,
        f,
        n,
        MatRef::transposed(dy, k),
        MatRef::rows(x, f),
        true,
    );
    if let Some(db) = dbias {
        for row in dy.chunks(k) {
            db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` values in [-0.5, 0.5) from an xorshift stream seeded by `seed`.
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn matmul_transposes() {
        // [[1,2],[3,4]] * [[5,6],[7,8]]^T = [[17,23],[39,53]]
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let b = [5.0f64, 6.0, 7.0, 8.0];
        let mut c = [0.0f64; 4];
        matmul(
            &mut c,
            2,
            2,
            2,
            MatRef::rows(&a, 2),
            MatRef::transposed(&b, 2),
            false,
        );
        assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);
        matmul(
            &mut c,
            2,
            2,
            2,
            MatRef::transposed(&a, 2),
            MatRef::rows(&b, 2),
            true,
        );
        // a^T b = [[26,30],[38,44]] added on top.
        assert_eq!(c, [43.0, 53.0, 77.0, 97.0]);
    }

    #[test]
    fn conv_by_hand() {
        // 1x1x3x3 input, 2x2 kernel of ones, stride 1: sums of 2x2 windows.
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = vec![1.0; 4];
        let g = ConvGeom::new([1, 1, 3, 3], 1, 1, [2, 2], [1, 1], [1, 1], [0; 4], 1).unwrap();
        let mut y = vec![0.0; g.out_len()];
        conv2d_forward(&g, &x, &w, Some(&[0.5]), &mut y);
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
        // Asymmetric "same" padding (bottom/right only), stride 2: windows at 0 and 2.
        let g = ConvGeom::new([1, 1, 3, 3], 1, 1, [2, 2], [2, 2], [1, 1], [0, 1, 0, 1], 1).unwrap();
        let mut y = vec![0.0; g.out_len()];
        conv2d_forward(&g, &x, &w, None, &mut y);
        assert_eq!(y, vec![12.0, 9.0, 15.0, 9.0]);
    }

    /// The blocked im2col forward (stems with large im2col matrices) against the
    /// convolution sum written out, with groups, stride, dilation, asymmetric padding,
    /// a batch, bias or none; blocks split the output rows unevenly.
    #[test]
    fn blocked_forward_is_the_convolution_sum() {
        let g = ConvGeom::new(
            [2, 16, 83, 81],
            6,
            8,
            [5, 4],
            [1, 2],
            [2, 1],
            [3, 1, 2, 0],
            2,
        )
        .unwrap();
        assert!(g.blocked() && !g.ho.is_multiple_of(g.block_rows()));
        let x = values(2 * 16 * 83 * 81, 1);
        let w = values(6 * 8 * 5 * 4, 2);
        let bias = values(6, 3);
        let mut want = vec![0.0; g.out_len()];
        for b in 0..2 {
            for o in 0..6 {
                let grp = o / 3;
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut sum = bias[o];
                        for ci in 0..8 {
                            let c = grp * 8 + ci;
                            for i in 0..5 {
                                for j in 0..4 {
                                    let yy = (oy + 2 * i) as isize - 3;
                                    let xx = (ox * 2 + j) as isize - 2;
                                    if (0..83).contains(&yy) && (0..81).contains(&xx) {
                                        let xv =
                                            x[((b * 16 + c) * 83 + yy as usize) * 81 + xx as usize];
                                        sum += xv * w[((o * 8 + ci) * 5 + i) * 4 + j];
                                    }
                                }
                            }
                        }
                        want[((b * 6 + o) * g.ho + oy) * g.wo + ox] = sum;
                    }
                }
            }
        }
        let mut y = vec![7.0; g.out_len()];
        conv2d_forward(&g, &x, &w, Some(&bias), &mut y);
        let err = y
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "with bias: {err}");
        let mut y = vec![7.0; g.out_len()];
        conv2d_forward(&g, &x, &w, None, &mut y);
        let err = y
            .iter()
            .zip(&want)
            .enumerate()
            .fold(0.0f64, |m, (k, (a, b))| {
                m.max((a - (b - bias[k / g.pixels() % 6])).abs())
            });
        assert!(err < 1e-12, "without bias: {err}");
        // Into new memory, block by block, with a rectifier as the epilogue.
        let relu = |s: &mut [f64]| s.iter_mut().for_each(|v| *v = v.max(0.0));
        let y = conv2d_forward_new(&g, &x, &w, Some(&bias), &relu);
        let err = y
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b.max(0.0)).abs()));
        assert!(err < 1e-12, "new, rectified: {err}");
    }

    #[test]
    fn pools_by_hand() {
        let x = [1.0f32, 5.0, 2.0, 5.0, 3.0, 0.0, 4.0, 1.0, 6.0];
        let g = PoolGeom::new(1, 3, 3, [2, 2], [1, 1], [0, 0], false).unwrap();
        let (mut y, mut a) = (vec![0.0; 4], vec![0u32; 4]);
        max_pool_forward(&g, &x, &mut y, &mut a);
        assert_eq!(y, vec![5.0, 5.0, 5.0, 6.0]);
        assert_eq!(a, vec![1, 1, 3, 8]); // first maximum wins the tie at 1 vs 3
        let mut avg = vec![0.0; 4];
        avg_pool_forward(&g, true, &x, &mut avg);
        assert_eq!(avg, vec![14.0 / 4.0, 10.0 / 4.0, 13.0 / 4.0, 10.0 / 4.0]);
        // ceil_mode: 3 with k=2,s=2 -> 2 windows, the second clipped.
        let g = PoolGeom::new(1, 3, 3, [2, 2], [2, 2], [0, 0], true).unwrap();
        assert_eq!((g.ho, g.wo), (2, 2));
        assert_eq!(adaptive_bins(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
    }
}
