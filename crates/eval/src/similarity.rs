//! How alike two maps are, for the sanity checks of Adebayo et al. ("Sanity Checks
//! for Saliency Maps", NeurIPS 2018), which compare a method's map on a model with
//! its map after randomising layers: Spearman's rank correlation (with and without
//! absolute values, [`crate::rank`]) and the structural similarity index (SSIM, Wang
//! et al. 2004) exactly as scikit-image's `structural_similarity` computes it with
//! its defaults: a 7x7 uniform window (SciPy's `uniform_filter`, reflected borders),
//! sample covariances, `K1 = 0.01`, `K2 = 0.03`, the mean over the map less a
//! 3-pixel border.

use attrib_core::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// scikit-image's default window side.
pub const SSIM_WINDOW: usize = 7;

/// The mean SSIM of `a` and `b` (same shape, at least 7x7) for values spanning
/// `data_range` (the maps' `max - min` as the caller normalises them; positive).
pub fn ssim(a: ArrayView2<f64>, b: ArrayView2<f64>, data_range: f64) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::shape(
            "maps compared",
            format!("{:?}", a.dim()),
            format!("{:?}", b.dim()),
        ));
    }
    let (h, w) = a.dim();
    if h < SSIM_WINDOW || w < SSIM_WINDOW {
        return Err(Error::param(
            "ssim",
            format!("maps of {h}x{w} are smaller than its {SSIM_WINDOW}x{SSIM_WINDOW} window"),
        ));
    }
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(Error::param(
            "ssim",
            format!("the data range {data_range} is not positive"),
        ));
    }
    if let Some(v) = a.iter().chain(b.iter()).find(|v| !v.is_finite()) {
        return Err(Error::param("ssim", format!("value {v} is not finite")));
    }
    let f = |x: &Array2<f64>| uniform_filter(x.view(), SSIM_WINDOW);
    let (a, b) = (a.to_owned(), b.to_owned());
    let ux = f(&a);
    let uy = f(&b);
    let uxx = f(&(&a * &a));
    let uyy = f(&(&b * &b));
    let uxy = f(&(&a * &b));
    let np = (SSIM_WINDOW * SSIM_WINDOW) as f64;
    let cov = np / (np - 1.0);
    let (c1, c2) = ((0.01 * data_range).powi(2), (0.03 * data_range).powi(2));
    let pad = (SSIM_WINDOW - 1) / 2;
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in pad..h - pad {
        for x in pad..w - pad {
            let (mx, my) = (ux[[y, x]], uy[[y, x]]);
            let vx = cov * (uxx[[y, x]] - mx * mx);
            let vy = cov * (uyy[[y, x]] - my * my);
            let vxy = cov * (uxy[[y, x]] - mx * my);
            let s = ((2.0 * mx * my + c1) * (2.0 * vxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            sum += s;
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

/// SciPy's `uniform_filter(x, size)` (mode `reflect`: `d c b a | a b c d | d c b a`),
/// separably, rows then columns, for an odd `size`.
fn uniform_filter(x: ArrayView2<f64>, size: usize) -> Array2<f64> {
    let (h, w) = x.dim();
    let r = (size / 2) as i64;
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        let p = i.rem_euclid(2 * n);
        (if p < n { p } else { 2 * n - 1 - p }) as usize
    };
    let mut rows = Array2::zeros((h, w));
    for y in 0..h {
        for xx in 0..w {
            let s: f64 = (-r..=r).map(|d| x[[y, reflect(xx as i64 + d, w)]]).sum();
            rows[[y, xx]] = s / size as f64;
        }
    }
    let mut out = Array2::zeros((h, w));
    for y in 0..h {
        for xx in 0..w {
            let s: f64 = (-r..=r).map(|d| rows[[reflect(y as i64 + d, h), xx]]).sum();
            out[[y, xx]] = s / size as f64;
        }
    }
    out
}
