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

/// Histograms of oriented gradients of a 2-D map, as scikit-image's
/// `skimage.feature.hog(map, orientations, pixels_per_cell=(cell, cell),
/// cells_per_block=(block, block), block_norm="L2-Hys")` computes them: central
/// differences (zero on the border rows and columns), unsigned orientations in
/// `orientations` bins over 180 degrees, each cell's magnitudes summed per bin (in
/// single precision, as its Cython kernel does) and divided by the cell's pixels,
/// blocks of `block x block` cells normalised (L2, clipped at 0.2, L2 again), all
/// blocks' values in (block row, block column, cell row, cell column, bin) order.
pub fn hog(
    map: ArrayView2<f64>,
    orientations: usize,
    cell: usize,
    block: usize,
) -> Result<Vec<f64>> {
    let (h, w) = map.dim();
    if orientations == 0 || cell == 0 || block == 0 {
        return Err(Error::param(
            "hog",
            "orientations, cell and block sizes must be positive",
        ));
    }
    let (ncr, ncc) = (h / cell, w / cell);
    if ncr < block || ncc < block {
        return Err(Error::param(
            "hog",
            format!(
                "a {h}x{w} map is smaller than one block of {block}x{block} cells of {cell} pixels"
            ),
        ));
    }
    if let Some(v) = map.iter().find(|v| !v.is_finite()) {
        return Err(Error::param("hog", format!("value {v} is not finite")));
    }
    let mut mag = Array2::<f64>::zeros((h, w));
    let mut ori = Array2::<f64>::zeros((h, w));
    for y in 0..h {
        for x in 0..w {
            let gr = if y == 0 || y + 1 == h {
                0.0
            } else {
                map[[y + 1, x]] - map[[y - 1, x]]
            };
            let gc = if x == 0 || x + 1 == w {
                0.0
            } else {
                map[[y, x + 1]] - map[[y, x - 1]]
            };
            mag[[y, x]] = gc.hypot(gr);
            ori[[y, x]] = gr.atan2(gc).to_degrees().rem_euclid(180.0);
        }
    }
    // scikit-image's kernel: each cell centred at (r, c), rows r + [-(cell/2),
    // (cell+1)/2), columns likewise; a bin takes the orientations in
    // [180 i / n, 180 (i + 1) / n), thresholds in single precision.
    let half = (cell / 2) as i64;
    let stop = cell.div_ceil(2) as i64;
    let per = 180.0f32 / orientations as f32;
    let mut hist = vec![0.0f64; ncr * ncc * orientations];
    for i in 0..orientations {
        let (lo, hi) = ((per * i as f32) as f64, (per * (i + 1) as f32) as f64);
        for ri in 0..ncr {
            let r = (half as usize + ri * cell) as i64;
            for ci in 0..ncc {
                let c = (half as usize + ci * cell) as i64;
                let mut total = 0.0f32;
                for dr in -half..stop {
                    let y = r + dr;
                    if y < 0 || y >= h as i64 {
                        continue;
                    }
                    for dc in -half..stop {
                        let x = c + dc;
                        if x < 0 || x >= w as i64 {
                            continue;
                        }
                        let o = ori[[y as usize, x as usize]];
                        if o >= hi || o < lo {
                            continue;
                        }
                        total = (total as f64 + mag[[y as usize, x as usize]]) as f32;
                    }
                }
                hist[(ri * ncc + ci) * orientations + i] = (total / (cell * cell) as f32) as f64;
            }
        }
    }
    let (nbr, nbc) = (ncr - block + 1, ncc - block + 1);
    let eps = 1e-5f64;
    let mut out = Vec::with_capacity(nbr * nbc * block * block * orientations);
    for br in 0..nbr {
        for bc in 0..nbc {
            let mut v = Vec::with_capacity(block * block * orientations);
            for r in br..br + block {
                for c in bc..bc + block {
                    v.extend_from_slice(
                        &hist[(r * ncc + c) * orientations..(r * ncc + c + 1) * orientations],
                    );
                }
            }
            let n = (v.iter().map(|x| x * x).sum::<f64>() + eps * eps).sqrt();
            v.iter_mut().for_each(|x| *x = (*x / n).min(0.2));
            let n = (v.iter().map(|x| x * x).sum::<f64>() + eps * eps).sqrt();
            out.extend(v.iter().map(|x| x / n));
        }
    }
    Ok(out)
}
