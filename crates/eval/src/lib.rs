//! Evaluating attribution maps as the papers do: each metric a module, a function of
//! maps, boxes and scores (no model inside unless the metric needs one), cited to the
//! paper that defines it and tested against the reference implementation where one
//! exists. The `attrib eval` command runs them over datasets; a researcher can call
//! them on their own maps.
//!
//! - [`annotations`]: ground-truth boxes from Pascal VOC, ILSVRC and COCO files, and
//!   the map from their labels to a model's classes.
//! - [`localisation`]: the Grad-CAM paper's weakly-supervised localisation (the map
//!   thresholded at a fraction of its maximum, the box of its largest connected
//!   segment, ILSVRC's top-1 / top-5 localisation error).
//! - [`pointing`]: the pointing game of Zhang et al. (Excitation Backprop), as TorchRay
//!   plays it.
//! - [`curves`]: deletion and insertion (Petsiuk et al., RISE), with zero, blur and
//!   mean substrates.
//! - [`rank`]: Spearman's rank correlation (the Grad-CAM paper's faithfulness: a map
//!   against occlusion's).
//! - [`similarity`]: SSIM as scikit-image computes it, for the sanity checks of
//!   Adebayo et al.
//! - [`sanity`]: those checks, cascading and independent randomisation of layers.
//! - [`summary`]: means with 95% percentile-bootstrap intervals, for the table.
//!
//! Boxes are [`PixelBox`]es: inclusive pixel indices, as ILSVRC and Pascal VOC
//! annotations mean them (VOC's 1-based corners minus one).

pub mod annotations;
pub mod curves;
pub mod localisation;
pub mod pointing;
pub mod rank;
pub mod sanity;
pub mod similarity;
pub mod summary;

use attrib_core::{Error, Result};

/// A box of pixels `x0..=x1`, `y0..=y1` (column, row indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelBox {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// Last column (inclusive).
    pub x1: usize,
    /// Last row (inclusive).
    pub y1: usize,
}

impl PixelBox {
    /// A box from its corners; `x0 <= x1` and `y0 <= y1`.
    pub fn new(x0: usize, y0: usize, x1: usize, y1: usize) -> Result<Self> {
        if x1 < x0 || y1 < y0 {
            return Err(Error::param(
                "box",
                format!("({x0}, {y0}, {x1}, {y1}) has its corners the wrong way round"),
            ));
        }
        Ok(PixelBox { x0, y0, x1, y1 })
    }

    /// Pixels covered.
    pub fn area(&self) -> usize {
        (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)
    }

    /// Whether pixel `(x, y)` is in the box.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }

    /// Intersection over union in pixels, as ILSVRC's evaluation counts them (a box
    /// of one pixel has area 1).
    pub fn iou(&self, other: &PixelBox) -> f64 {
        let w = (self.x1.min(other.x1) + 1).saturating_sub(self.x0.max(other.x0));
        let h = (self.y1.min(other.y1) + 1).saturating_sub(self.y0.max(other.y0));
        let inter = (w * h) as f64;
        inter / ((self.area() + other.area()) as f64 - inter)
    }
}
