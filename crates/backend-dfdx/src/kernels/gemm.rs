//! Matrix products through the gemm crate: row-major views with strides and the
//! serial-or-parallel choice by size.

use gemm::Parallelism;

use crate::Elem;

/// Below this many multiply-adds a gemm runs on the calling thread: spawning costs more.
pub(crate) const PARALLEL_GEMM_FLOPS: usize = 1 << 17;

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
