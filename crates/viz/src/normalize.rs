//! Mapping raw values to `[0, 1]` for display.

use attrib_core::Scalar;
use ndarray::{Array, ArrayView, Dimension};

/// How to map a map's values to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// `(v - min) / (max - min)`.
    MinMax,
    /// Clip at the `p`-th percentile of `|v|` (Captum's `outlier_perc` is `100 - p`),
    /// then min-max over `[0, clip]` of the absolute value.
    Percentile(f64),
    /// Signed maps: `0.5 + v / (2 max|v|)`, so 0 sits at the middle of a diverging map.
    Symmetric,
}

/// Normalises `values` to `[0, 1]`. Constant or all-zero maps give all zeros
/// (`Symmetric`: all 0.5), never NaN; non-finite values count as 0.
pub fn normalize<F: Scalar, D: Dimension>(
    values: ArrayView<F, D>,
    how: Normalization,
) -> Array<f32, D> {
    let v = values.mapv(|x| {
        let x = x.as_f64();
        if x.is_finite() {
            x
        } else {
            0.0
        }
    });
    match how {
        Normalization::MinMax => {
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let range = hi - lo;
            v.mapv(|x| {
                if range > 0.0 {
                    ((x - lo) / range) as f32
                } else {
                    0.0
                }
            })
        }
        Normalization::Percentile(p) => {
            let mut abs: Vec<f64> = v.iter().map(|x| x.abs()).collect();
            abs.sort_by(|a, b| a.total_cmp(b));
            let clip = if abs.is_empty() {
                0.0
            } else {
                let rank =
                    ((p.clamp(0.0, 100.0) / 100.0) * (abs.len() - 1) as f64).round() as usize;
                abs[rank]
            };
            v.mapv(|x| {
                if clip > 0.0 {
                    (x.abs().min(clip) / clip) as f32
                } else {
                    0.0
                }
            })
        }
        Normalization::Symmetric => {
            let m = v.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
            v.mapv(|x| {
                if m > 0.0 {
                    (0.5 + x / (2.0 * m)) as f32
                } else {
                    0.5
                }
            })
        }
    }
}

/// Upsamples `(N, h, w)` maps to `(N, out_h, out_w)` for display the way
/// pytorch-grad-cam does: each map min-max normalised, resized bilinearly
/// (`align_corners=False` geometry), normalised again. Constant maps give zeros.
pub fn upsample_normalized<F: Scalar>(
    maps: ndarray::ArrayView3<F>,
    out_h: usize,
    out_w: usize,
) -> ndarray::Array3<f32> {
    let (n, h, w) = maps.dim();
    let mut small = ndarray::Array3::<f32>::zeros((n, h, w));
    for (mut dst, src) in small.outer_iter_mut().zip(maps.outer_iter()) {
        dst.assign(&normalize(src, Normalization::MinMax));
    }
    let mut up = attrib_core::resample::resize_bilinear(small.view(), out_h, out_w);
    for mut plane in up.outer_iter_mut() {
        let normed = normalize(plane.view(), Normalization::MinMax);
        plane.assign(&normed);
    }
    up
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn constant_and_zero_maps_are_safe() {
        let z = array![[0.0f64, 0.0], [0.0, 0.0]];
        assert_eq!(
            normalize(z.view(), Normalization::MinMax),
            array![[0.0f32, 0.0], [0.0, 0.0]]
        );
        assert_eq!(
            normalize(z.view(), Normalization::Percentile(99.0)),
            array![[0.0f32, 0.0], [0.0, 0.0]]
        );
        assert_eq!(
            normalize(z.view(), Normalization::Symmetric),
            array![[0.5f32, 0.5], [0.5, 0.5]]
        );
        let c = array![3.0f32, 3.0, 3.0];
        assert_eq!(
            normalize(c.view(), Normalization::MinMax),
            array![0.0f32, 0.0, 0.0]
        );
        let nan = array![f64::NAN, 1.0, 2.0];
        assert_eq!(
            normalize(nan.view(), Normalization::MinMax),
            array![0.0f32, 0.5, 1.0]
        );
    }

    #[test]
    fn known_values() {
        let m = array![-2.0f64, 0.0, 1.0, 4.0];
        assert_eq!(
            normalize(m.view(), Normalization::MinMax),
            array![0.0f32, 1.0 / 3.0, 0.5, 1.0]
        );
        assert_eq!(
            normalize(m.view(), Normalization::Symmetric),
            array![0.25f32, 0.5, 0.625, 1.0]
        );
        // |m| sorted = [0,1,2,4]; the 50th percentile (rank round(1.5) = 2) is 2.
        assert_eq!(
            normalize(m.view(), Normalization::Percentile(50.0)),
            array![1.0f32, 0.0, 0.5, 1.0]
        );
    }
}
