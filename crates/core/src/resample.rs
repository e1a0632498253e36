//! Resampling shared by the methods (Guided Grad-CAM upsamples Grad-CAM) and the
//! renderer (overlays), so both use the one geometry the reference tools use.

use ndarray::{Array3, ArrayView3};

use crate::Scalar;

/// One output coordinate's two source indices and the weight of the second,
/// PyTorch's `align_corners=False` geometry: `src = (dst + 0.5) * in / out - 0.5`,
/// clamped at 0.
fn source(dst: usize, input: usize, output: usize) -> (usize, usize, f64) {
    let scale = input as f64 / output as f64;
    let src = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(input - 1);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    (i0, i1, src - i0 as f64)
}

/// Bilinear resize of `(N, h, w)` maps to `(N, out_h, out_w)` exactly as
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`.
/// Empty input dimensions give an all-zero output.
pub fn resize_bilinear<F: Scalar>(maps: ArrayView3<F>, out_h: usize, out_w: usize) -> Array3<F> {
    let (n, h, w) = maps.dim();
    resize_bilinear_from(n, h, w, out_h, out_w, |b, y, x| maps[[b, y, x]])
}

/// [`resize_bilinear`] of `n` planes of `h x w` values read through `at(plane, y, x)`:
/// resizes a source that is not an array of `F` (an 8-bit image, say) without first
/// copying it whole into one.
pub fn resize_bilinear_from<F: Scalar>(
    n: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    at: impl Fn(usize, usize, usize) -> F,
) -> Array3<F> {
    let mut out = Array3::zeros((n, out_h, out_w));
    if h == 0 || w == 0 {
        return out;
    }
    let rows: Vec<_> = (0..out_h).map(|y| source(y, h, out_h)).collect();
    let cols: Vec<_> = (0..out_w).map(|x| source(x, w, out_w)).collect();
    for b in 0..n {
        for (y, &(y0, y1, ly)) in rows.iter().enumerate() {
            let ly = F::of(ly);
            for (x, &(x0, x1, lx)) in cols.iter().enumerate() {
                let lx = F::of(lx);
                let top = at(b, y0, x0) * (F::one() - lx) + at(b, y0, x1) * lx;
                let bottom = at(b, y1, x0) * (F::one() - lx) + at(b, y1, x1) * lx;
                out[[b, y, x]] = top * (F::one() - ly) + bottom * ly;
            }
        }
    }
    out
}

/// Bilinear resize of `(N, h, w)` maps with PyTorch's `align_corners=True` geometry
/// (`torch.nn.UpsamplingBilinear2d`): corners map to corners,
/// `src = dst * (in - 1) / (out - 1)`. What Score-CAM's masks use.
pub fn resize_bilinear_aligned<F: Scalar>(
    maps: ArrayView3<F>,
    out_h: usize,
    out_w: usize,
) -> Array3<F> {
    let (n, h, w) = maps.dim();
    let mut out = Array3::zeros((n, out_h, out_w));
    if h == 0 || w == 0 {
        return out;
    }
    let src = |dst: usize, input: usize, output: usize| -> (usize, usize, f64) {
        let s = if output > 1 {
            dst as f64 * (input - 1) as f64 / (output - 1) as f64
        } else {
            0.0
        };
        let i0 = (s.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        (i0, i1, s - i0 as f64)
    };
    let rows: Vec<_> = (0..out_h).map(|y| src(y, h, out_h)).collect();
    let cols: Vec<_> = (0..out_w).map(|x| src(x, w, out_w)).collect();
    for b in 0..n {
        for (y, &(y0, y1, ly)) in rows.iter().enumerate() {
            let ly = F::of(ly);
            for (x, &(x0, x1, lx)) in cols.iter().enumerate() {
                let lx = F::of(lx);
                let top = maps[[b, y0, x0]] * (F::one() - lx) + maps[[b, y0, x1]] * lx;
                let bottom = maps[[b, y1, x0]] * (F::one() - lx) + maps[[b, y1, x1]] * lx;
                out[[b, y, x]] = top * (F::one() - ly) + bottom * ly;
            }
        }
    }
    out
}

/// Nearest-neighbour resize of `(N, h, w)` maps as PyTorch's
/// `interpolate(mode="nearest")`: `src = floor(dst * in / out)`. Captum's
/// `GuidedGradCam` default.
pub fn resize_nearest<F: Scalar>(maps: ArrayView3<F>, out_h: usize, out_w: usize) -> Array3<F> {
    let (n, h, w) = maps.dim();
    let mut out = Array3::zeros((n, out_h, out_w));
    if h == 0 || w == 0 {
        return out;
    }
    let src = |dst: usize, input: usize, output: usize| {
        (((dst as f64) * (input as f64 / output as f64)).floor() as usize).min(input - 1)
    };
    for b in 0..n {
        for y in 0..out_h {
            let sy = src(y, h, out_h);
            for x in 0..out_w {
                out[[b, y, x]] = maps[[b, sy, src(x, w, out_w)]];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn two_to_four_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.],[2.,3.]]]]), size=4,
        //   mode="bilinear", align_corners=False)
        let m = array![[[0.0f64, 1.0], [2.0, 3.0]]];
        let up = resize_bilinear(m.view(), 4, 4);
        let expected = array![[
            [0.0, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],
            [1.5, 1.75, 2.25, 2.5],
            [2.0, 2.25, 2.75, 3.0]
        ]];
        assert_eq!(up, expected);
    }

    #[test]
    fn aligned_and_nearest_match_pytorch() {
        // UpsamplingBilinear2d(size=4) of [[0, 1], [2, 3]]: corners kept, thirds between.
        let m = array![[[0.0f64, 1.0], [2.0, 3.0]]];
        let up = resize_bilinear_aligned(m.view(), 4, 4);
        let third = 1.0 / 3.0;
        assert!((up[[0, 0, 1]] - third).abs() < 1e-12);
        assert_eq!(up[[0, 3, 3]], 3.0);
        assert!((up[[0, 1, 0]] - 2.0 * third).abs() < 1e-12);
        // interpolate(size=(3, 5), mode="nearest") of a 2x2: rows 0,0,1; cols 0,0,0,1,1.
        let nn = resize_nearest(m.view(), 3, 5);
        assert_eq!(
            nn,
            array![[
                [0.0, 0.0, 0.0, 1.0, 1.0],
                [0.0, 0.0, 0.0, 1.0, 1.0],
                [2.0, 2.0, 2.0, 3.0, 3.0]
            ]]
        );
    }

    #[test]
    fn identity_and_downsample() {
        let m = array![[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]];
        assert_eq!(resize_bilinear(m.view(), 2, 3), m);
        // 1x3 -> 1x1: src = 0.5*3-0.5 = 1 -> the middle value.
        let r = array![[[1.0f32, 2.0, 3.0]]];
        assert_eq!(resize_bilinear(r.view(), 1, 1), array![[[2.0f32]]]);
    }
}
