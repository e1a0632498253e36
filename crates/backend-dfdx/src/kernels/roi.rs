//! RoI Align: bilinear sampling of each box of a feature map into a fixed grid, with
//! exactly `torchvision.ops.roi_align`'s semantics (what the FCLN's localisation layer
//! feeds its recognition network), and its backward to the features. The boxes are
//! constants: no gradient flows to them.
//!
//! For box `(b, x1, y1, x2, y2)` in image pixels, its corners are scaled by
//! `spatial_scale` (and shifted by half a pixel when `aligned`); the box is split into
//! `out_h x out_w` bins, each averaging a `gh x gw` grid of bilinear samples
//! (`sampling_ratio`, or `ceil(bin size)` when it is `<= 0`). A sample farther than
//! one pixel outside the map contributes 0; one within a pixel of the border reads the
//! border. Without `aligned`, boxes are at least one pixel wide and high.

use attrib_core::{Error, Result, Scalar};

/// One box: the batch item it is on, and `x1, y1, x2, y2` in image pixels.
pub type Roi = [f64; 5];

/// RoI Align's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlign {
    /// Output bins per box, vertically.
    pub out_h: usize,
    /// Output bins per box, horizontally.
    pub out_w: usize,
    /// Feature-map pixels per image pixel (1/16 for a stride-16 trunk).
    pub spatial_scale: f64,
    /// Samples per bin side; `<= 0`: `ceil` of the bin's size (torchvision's adaptive
    /// choice).
    pub sampling_ratio: i32,
    /// Pixel centres at half-integers (`aligned=True`).
    pub aligned: bool,
}

/// The samples of one box: per sample, its bin, the four feature positions and
/// their bilinear weights (a sample outside the map has none).
struct Samples {
    taps: Vec<(usize, [usize; 4], [f64; 4])>,
    count: f64,
}

/// torchvision's `bilinear_interpolate` weights at `(y, x)` on an `h x w` map.
fn bilinear(y: f64, x: f64, h: usize, w: usize) -> Option<([usize; 4], [f64; 4])> {
    if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
        return None;
    }
    let (y, x) = (y.max(0.0), x.max(0.0));
    let (y_low, y_high, y) = if y as usize >= h - 1 {
        (h - 1, h - 1, (h - 1) as f64)
    } else {
        (y as usize, y as usize + 1, y)
    };
    let (x_low, x_high, x) = if x as usize >= w - 1 {
        (w - 1, w - 1, (w - 1) as f64)
    } else {
        (x as usize, x as usize + 1, x)
    };
    let (ly, lx) = (y - y_low as f64, x - x_low as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some((
        [
            y_low * w + x_low,
            y_low * w + x_high,
            y_high * w + x_low,
            y_high * w + x_high,
        ],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    ))
}

impl RoiAlign {
    /// Checks the settings: positive output size, a positive finite scale.
    pub fn new(
        out_h: usize,
        out_w: usize,
        spatial_scale: f64,
        sampling_ratio: i32,
        aligned: bool,
    ) -> Result<Self> {
        if out_h == 0 || out_w == 0 {
            return Err(Error::param("roi align output size", "must be positive"));
        }
        if !(spatial_scale.is_finite() && spatial_scale > 0.0) {
            return Err(Error::param(
                "roi align spatial scale",
                format!("{spatial_scale} is not a positive number"),
            ));
        }
        Ok(RoiAlign {
            out_h,
            out_w,
            spatial_scale,
            sampling_ratio,
            aligned,
        })
    }

    /// Values per box and channel: `out_h * out_w`.
    pub fn bins(&self) -> usize {
        self.out_h * self.out_w
    }

    fn check(&self, dims: [usize; 4], feats: usize, rois: &[Roi], out: usize) -> Result<()> {
        let [n, c, h, w] = dims;
        if feats != n * c * h * w {
            return Err(Error::shape("roi align features", n * c * h * w, feats));
        }
        if h == 0 || w == 0 {
            return Err(Error::shape(
                "roi align feature map",
                "a non-empty map",
                format!("{h}x{w}"),
            ));
        }
        if out != rois.len() * c * self.bins() {
            return Err(Error::shape(
                "roi align output",
                rois.len() * c * self.bins(),
                out,
            ));
        }
        for (k, r) in rois.iter().enumerate() {
            if r.iter().any(|v| !v.is_finite()) {
                return Err(Error::param(
                    "roi",
                    format!("box {k} has a non-finite coordinate"),
                ));
            }
            if r[0] < 0.0 || r[0].fract() != 0.0 || r[0] as usize >= n {
                return Err(Error::param(
                    "roi",
                    format!("box {k} is on batch item {}, not one of 0..{n}", r[0]),
                ));
            }
        }
        Ok(())
    }

    fn samples(&self, r: &Roi, h: usize, w: usize) -> Samples {
        let offset = if self.aligned { 0.5 } else { 0.0 };
        let s = self.spatial_scale;
        let (x0, y0) = (r[1] * s - offset, r[2] * s - offset);
        let (mut rw, mut rh) = (r[3] * s - offset - x0, r[4] * s - offset - y0);
        if !self.aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / self.out_h as f64, rw / self.out_w as f64);
        let grid = |size: f64| -> i64 {
            if self.sampling_ratio > 0 {
                i64::from(self.sampling_ratio)
            } else {
                size.ceil() as i64
            }
        };
        let (gh, gw) = (grid(bh), grid(bw));
        let count = (gh * gw).max(1) as f64;
        let mut taps = Vec::new();
        for ph in 0..self.out_h {
            for pw in 0..self.out_w {
                let bin = ph * self.out_w + pw;
                for iy in 0..gh.max(0) {
                    let y = y0 + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                    for ix in 0..gw.max(0) {
                        let x = x0 + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                        if let Some((idx, wt)) = bilinear(y, x, h, w) {
                            taps.push((bin, idx, wt));
                        }
                    }
                }
            }
        }
        Samples { taps, count }
    }

    /// `out[k, c, :, :]`: box `k` of `rois` sampled from `feats` `(N, C, H, W)`;
    /// `out` is `(K, C, out_h, out_w)`.
    pub fn forward<E: Scalar>(
        &self,
        dims: [usize; 4],
        feats: &[E],
        rois: &[Roi],
        out: &mut [E],
    ) -> Result<()> {
        self.check(dims, feats.len(), rois, out.len())?;
        let [_, c, h, w] = dims;
        let bins = self.bins();
        for (k, r) in rois.iter().enumerate() {
            let s = self.samples(r, h, w);
            let item = r[0] as usize;
            for ch in 0..c {
                let plane = &feats[(item * c + ch) * h * w..][..h * w];
                let dst = &mut out[(k * c + ch) * bins..][..bins];
                let mut acc = vec![0.0f64; bins];
                for (bin, idx, wt) in &s.taps {
                    acc[*bin] += (0..4).map(|t| wt[t] * plane[idx[t]].as_f64()).sum::<f64>();
                }
                for (d, a) in dst.iter_mut().zip(acc) {
                    *d = E::of(a / s.count);
                }
            }
        }
        Ok(())
    }

    /// Adds the gradient of `sum(out * grad_out)` with respect to the features into
    /// `grad_feats` `(N, C, H, W)`.
    pub fn backward<E: Scalar>(
        &self,
        dims: [usize; 4],
        rois: &[Roi],
        grad_out: &[E],
        grad_feats: &mut [E],
    ) -> Result<()> {
        self.check(dims, grad_feats.len(), rois, grad_out.len())?;
        self.accumulate_backward(dims, rois, grad_out, grad_feats);
        Ok(())
    }

    /// [`RoiAlign::backward`] for arguments already checked (by the forward pass the
    /// tape op recorded).
    pub(crate) fn accumulate_backward<E: Scalar>(
        &self,
        dims: [usize; 4],
        rois: &[Roi],
        grad_out: &[E],
        grad_feats: &mut [E],
    ) {
        let [_, c, h, w] = dims;
        let bins = self.bins();
        for (k, r) in rois.iter().enumerate() {
            let s = self.samples(r, h, w);
            let item = r[0] as usize;
            for ch in 0..c {
                let g = &grad_out[(k * c + ch) * bins..][..bins];
                let plane = &mut grad_feats[(item * c + ch) * h * w..][..h * w];
                for (bin, idx, wt) in &s.taps {
                    let gb = g[*bin].as_f64() / s.count;
                    for t in 0..4 {
                        plane[idx[t]] = plane[idx[t]] + E::of(wt[t] * gb);
                    }
                }
            }
        }
    }
}
