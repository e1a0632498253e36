use attrib_core::{Attribution, AttributionMap, LayerTap, MapLayout, Result, Scalar, Target};
use ndarray::{Array3, ArrayView4};

use crate::parts::layer_or_default;

/// Eigen-CAM (Muhammad & Yeasin 2020): the projection of the layer's activations on
/// their first principal component, `(N, h, w)`: for each item, the `hw x C` matrix
/// of positions by channels is centred (each channel's mean over positions
/// subtracted), and each position projected on the first right singular vector. No
/// gradient: the target only labels the result. pytorch-grad-cam's `EigenCAM`.
///
/// A singular vector's sign is arbitrary (pytorch-grad-cam keeps whatever its SVD
/// returns). Here it is fixed so that the projection's largest magnitude is
/// positive (flip when `|min| > |max|`, Seg-Eigen-CAM's Eq. 13), then `ReLU` is
/// applied as pytorch-grad-cam does: the map equals its raw map up to that sign.
#[derive(Debug, Clone, Default)]
pub struct EigenCam {
    layer: Option<String>,
}

crate::layer_builder!(EigenCam);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for EigenCam {
    fn name(&self) -> &'static str {
        "eigen-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let layer = layer_or_default(model, self.layer.as_deref())?;
        let (scores, a) = crate::parts::layer_activation(model, input, &layer)?;
        let resolved = target.resolve(scores.view())?;
        let (n, c, h, w) = a.dim();
        let mut cam = Array3::<F>::zeros((n, h, w));
        for b in 0..n {
            let hw = h * w;
            // Positions by channels, centred per channel; NaN read as 0 (as
            // pytorch-grad-cam does).
            let mut m = vec![0.0f64; hw * c];
            for k in 0..c {
                let ch = a.slice(ndarray::s![b, k, .., ..]);
                let vals: Vec<f64> = ch
                    .iter()
                    .map(|v| {
                        let v = v.as_f64();
                        if v.is_nan() {
                            0.0
                        } else {
                            v
                        }
                    })
                    .collect();
                let mean = vals.iter().sum::<f64>() / hw as f64;
                for (p, v) in vals.iter().enumerate() {
                    m[p * c + k] = v - mean;
                }
            }
            let mut proj = first_component(&m, hw, c);
            let (lo, hi) = proj
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), &v| {
                    (l.min(v), u.max(v))
                });
            if lo.abs() > hi.abs() {
                proj.iter_mut().for_each(|v| *v = -*v);
            }
            for (o, v) in cam.slice_mut(ndarray::s![b, .., ..]).iter_mut().zip(proj) {
                *o = F::of(v.max(0.0));
            }
        }
        Ok(AttributionMap {
            values: cam.into_dyn(),
            layout: MapLayout::Layer { name: layer },
            classes: resolved.classes,
            scores,
        })
    }
}

/// The projection `M v_1` of the rows of `m` (`rows x cols`, row-major) on its first
/// right singular vector, from the eigen-decomposition of the smaller Gram matrix.
fn first_component(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    if rows == 0 || cols == 0 {
        return vec![0.0; rows];
    }
    if rows <= cols {
        // G = M M^T: its top eigenvector u (eigenvalue s^2) gives M v = s u.
        let mut g = vec![0.0; rows * rows];
        for i in 0..rows {
            for j in 0..=i {
                let d: f64 = (0..cols).map(|k| m[i * cols + k] * m[j * cols + k]).sum();
                g[i * rows + j] = d;
                g[j * rows + i] = d;
            }
        }
        let (lambda, u) = top_eigen(g, rows);
        let s = lambda.max(0.0).sqrt();
        u.into_iter().map(|x| s * x).collect()
    } else {
        let mut g = vec![0.0; cols * cols];
        for i in 0..cols {
            for j in 0..=i {
                let d: f64 = (0..rows).map(|p| m[p * cols + i] * m[p * cols + j]).sum();
                g[i * cols + j] = d;
                g[j * cols + i] = d;
            }
        }
        let (_, v) = top_eigen(g, cols);
        (0..rows)
            .map(|p| (0..cols).map(|k| m[p * cols + k] * v[k]).sum())
            .collect()
    }
}

/// The largest eigenvalue of a symmetric `n x n` matrix and a unit eigenvector, by
/// cyclic Jacobi rotations (exact to rounding, whatever the gaps between
/// eigenvalues, unlike power iteration).
fn top_eigen(mut a: Vec<f64>, n: usize) -> (f64, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * cs;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = cs * akp - sn * akq;
                    a[k * n + q] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = cs * apk - sn * aqk;
                    a[q * n + k] = sn * apk + cs * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = cs * vkp - sn * vkq;
                    v[k * n + q] = sn * vkp + cs * vkq;
                }
            }
        }
    }
    let top = (0..n)
        .max_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]))
        .unwrap_or(0);
    (a[top * n + top], (0..n).map(|k| v[k * n + top]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_top_eigenpair() {
        // [[2, 1], [1, 2]]: eigenvalues 3 (1, 1)/sqrt2 and 1.
        let (l, v) = top_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        assert!((l - 3.0).abs() < 1e-12);
        assert!((v[0].abs() - 0.5f64.sqrt()).abs() < 1e-12 && (v[0] - v[1]).abs() < 1e-12);
        // Both routes through the Gram matrices give the same projection (up to sign).
        let m = [
            1.0, 2.0, 0.5, -1.0, 0.0, 3.0, 2.0, -2.0, 1.0, 0.5, 1.5, -0.5,
        ];
        let p1 = first_component(&m, 4, 3);
        let mt: Vec<f64> = (0..3)
            .flat_map(|k| (0..4).map(move |p| m[p * 3 + k]))
            .collect();
        // M^T's first component is U S's first column's counterpart: project the
        // columns instead; compare the singular value through the norms.
        let p2 = first_component(&mt, 3, 4);
        let n1: f64 = p1.iter().map(|x| x * x).sum::<f64>().sqrt();
        let n2: f64 = p2.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n1 - n2).abs() < 1e-10, "{n1} {n2}");
    }
}
