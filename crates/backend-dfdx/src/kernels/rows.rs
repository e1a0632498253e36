//! Row-wise kernels on `(rows, k)` matrices: log-softmax, L2 normalisation, picking
//! one entry per row, and their gradients.

use crate::Elem;

/// `y = x - logsumexp(x)` per row, computed stably (the row maximum subtracted
/// first), as `torch.log_softmax`.
pub fn log_softmax_forward<E: Elem>(k: usize, x: &[E], y: &mut [E]) {
    for (xr, yr) in x.chunks(k).zip(y.chunks_mut(k)) {
        let m = xr.iter().copied().fold(E::neg_infinity(), E::max);
        let s = xr.iter().fold(E::zero(), |a, &v| a + (v - m).exp());
        let lse = m + s.ln();
        yr.iter_mut().zip(xr).for_each(|(o, &v)| *o = v - lse);
    }
}

/// `dx += dy - softmax(x) * sum(dy)` per row, with `softmax(x) = exp(y)`.
pub fn log_softmax_backward<E: Elem>(k: usize, y: &[E], dy: &[E], dx: &mut [E]) {
    for ((yr, gr), dr) in y.chunks(k).zip(dy.chunks(k)).zip(dx.chunks_mut(k)) {
        let s = gr.iter().fold(E::zero(), |a, &v| a + v);
        for ((d, &g), &v) in dr.iter_mut().zip(gr).zip(yr) {
            *d += g - v.exp() * s;
        }
    }
}

/// `y = x / max(||x||, eps)` per row, as `torch.nn.functional.normalize(x, dim=1)`;
/// returns each row's divisor.
pub fn l2_normalize_forward<E: Elem>(k: usize, eps: E, x: &[E], y: &mut [E]) -> Vec<E> {
    x.chunks(k)
        .zip(y.chunks_mut(k))
        .map(|(xr, yr)| {
            let norm = xr.iter().fold(E::zero(), |a, &v| a + v * v).sqrt().max(eps);
            yr.iter_mut().zip(xr).for_each(|(o, &v)| *o = v / norm);
            norm
        })
        .collect()
}

/// `dx += (dy - y (y . dy)) / norm` per row where the norm exceeded `eps`, and
/// `dx += dy / eps` where it was clamped (the divisor is then a constant).
pub fn l2_normalize_backward<E: Elem>(
    k: usize,
    eps: E,
    y: &[E],
    norms: &[E],
    dy: &[E],
    dx: &mut [E],
) {
    for (((yr, gr), dr), &norm) in y
        .chunks(k)
        .zip(dy.chunks(k))
        .zip(dx.chunks_mut(k))
        .zip(norms)
    {
        let dot = if norm > eps {
            yr.iter().zip(gr).fold(E::zero(), |a, (&u, &g)| a + u * g)
        } else {
            E::zero()
        };
        for ((d, &g), &u) in dr.iter_mut().zip(gr).zip(yr) {
            *d += (g - u * dot) / norm;
        }
    }
}
