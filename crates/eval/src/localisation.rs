//! Weakly-supervised localisation as the Grad-CAM paper evaluates it (Selvaraju et
//! al., Sec. 4.1, after CAM's protocol, Zhou et al. 2016): the class's map, upsampled
//! to the image, is thresholded at a fraction of its maximum (15% in the Grad-CAM
//! paper, 20% in CAM's), and the box around the largest connected segment of the
//! pixels above it is the predicted box; an image's top-k localisation error (ILSVRC)
//! counts it wrong unless one of its first k predictions names the ground-truth class
//! with a box overlapping one of that class's boxes at IoU >= 0.5.
//!
//! Segments are 8-connected (as the contours CAM's code takes with OpenCV); the
//! largest is the one with the most pixels (CAM's code compares contour polygon
//! areas, which can differ by a pixel's fraction on jagged segments), the first in
//! raster order among equals.

use attrib_core::{Error, Result};
use ndarray::ArrayView2;

use crate::PixelBox;

/// The Grad-CAM paper's threshold: 15% of the map's maximum.
pub const GRAD_CAM_THRESHOLD: f64 = 0.15;

/// The IoU at which a box counts as found (ILSVRC).
pub const IOU_FOUND: f64 = 0.5;

/// The box of the largest 8-connected segment of the pixels of `map` whose value
/// exceeds `fraction` times its maximum; `None` when the maximum is not positive (no
/// pixel is above a threshold of a map with nothing in it). A NaN or infinite value
/// and a fraction outside `[0, 1]` are errors.
pub fn segment_box(map: ArrayView2<f32>, fraction: f64) -> Result<Option<PixelBox>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::param(
            "threshold",
            format!("{fraction} is not a fraction of the maximum in [0, 1]"),
        ));
    }
    if let Some(((y, x), v)) = map.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::param(
            "map",
            format!("value {v} at row {y}, column {x} is not finite"),
        ));
    }
    let (h, w) = map.dim();
    let max = map.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if h == 0 || w == 0 || max <= 0.0 {
        return Ok(None);
    }
    let t = fraction * max as f64;
    let above = |y: usize, x: usize| map[[y, x]] as f64 > t;
    let mut label = vec![false; h * w];
    let mut best: Option<(usize, PixelBox)> = None;
    let mut stack = Vec::new();
    for y0 in 0..h {
        for x0 in 0..w {
            if label[y0 * w + x0] || !above(y0, x0) {
                continue;
            }
            label[y0 * w + x0] = true;
            stack.push((y0, x0));
            let (mut n, mut b) = (
                0usize,
                PixelBox {
                    x0,
                    y0,
                    x1: x0,
                    y1: y0,
                },
            );
            while let Some((y, x)) = stack.pop() {
                n += 1;
                b.x0 = b.x0.min(x);
                b.x1 = b.x1.max(x);
                b.y0 = b.y0.min(y);
                b.y1 = b.y1.max(y);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        if !label[ny * w + nx] && above(ny, nx) {
                            label[ny * w + nx] = true;
                            stack.push((ny, nx));
                        }
                    }
                }
            }
            if best.is_none_or(|(m, _)| n > m) {
                best = Some((n, b));
            }
        }
    }
    Ok(best.map(|(_, b)| b))
}

/// One of an image's ranked predictions: a class and the box its map gave (`None`:
/// the map had no segment, which never counts as found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prediction {
    /// The predicted class.
    pub class: usize,
    /// The box from its map.
    pub bbox: Option<PixelBox>,
}

/// ILSVRC's top-`k` localisation error of one image: `true` (an error) unless one
/// of the first `k` predictions names `class` with a box at IoU >= 0.5 with one of
/// `boxes` (the class's ground truth). Fewer than `k` predictions, `k = 0` and no
/// ground-truth box are errors of the call.
pub fn localisation_error(
    predictions: &[Prediction],
    k: usize,
    class: usize,
    boxes: &[PixelBox],
) -> Result<bool> {
    if k == 0 || predictions.len() < k {
        return Err(Error::param(
            "top-k",
            format!(
                "top-{k} needs at least {k} predictions, got {}",
                predictions.len()
            ),
        ));
    }
    if boxes.is_empty() {
        return Err(Error::param(
            "ground truth",
            format!("class {class} has no box in this image"),
        ));
    }
    let found = predictions[..k].iter().any(|p| {
        p.class == class
            && p.bbox
                .is_some_and(|b| boxes.iter().any(|g| b.iou(g) >= IOU_FOUND))
    });
    Ok(!found)
}
