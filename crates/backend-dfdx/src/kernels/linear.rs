//! Fully connected layers: `y = x W^T + b` over rows, and its gradients.

use crate::Elem;

use super::gemm::{matmul, MatRef};

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
