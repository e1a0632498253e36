//! Dense (and grouped) convolutions by im2col + gemm, whole or by blocks of output
//! rows, forward and input/weight gradients.

use rayon::prelude::*;

use crate::device::with_scratch;
use crate::Elem;

use super::depthwise::{
    depthwise_forward, depthwise_unit_stride_backward, depthwise_unit_stride_forward,
};
use super::gemm::{matmul, matmul_on, matmul_raw, MatRef};
use super::geom::{ConvGeom, Phases};
use super::parallel::SharedOut;

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
