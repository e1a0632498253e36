//! The pointing game (Zhang et al., "Top-down Neural Attention by Excitation
//! Backprop", ECCV 2016), as TorchRay's `PointingGame` plays it: the map's maximum,
//! taken on the map upsampled to the image, is a hit when some pixel of the class's
//! boxes lies strictly within `tolerance` pixels of it (15 by default); the score is
//! the mean over classes of each class's hits / (hits + misses), a class never
//! evaluated counting as 0, exactly as TorchRay averages. The overall hit rate is
//! given too. The "difficult" subset (Zhang et al.): images where the class's boxes
//! cover less than a quarter of the image and another class is present.

use attrib_core::resample::resize_bilinear;
use attrib_core::{Error, Result};
use ndarray::{ArrayView2, Axis};

use crate::PixelBox;

/// TorchRay's default tolerance, in image pixels.
pub const TORCHRAY_TOLERANCE: f64 = 15.0;

/// The point `(x, y)` the map points at: the maximum of the map upsampled
/// (bilinearly, `align_corners=False`) to `height x width`, the first in raster
/// order among equal maxima. A NaN or infinite value is an error.
pub fn map_point(map: ArrayView2<f32>, height: usize, width: usize) -> Result<(usize, usize)> {
    if let Some(((y, x), v)) = map.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::param(
            "map",
            format!("value {v} at row {y}, column {x} is not finite"),
        ));
    }
    if map.is_empty() || height == 0 || width == 0 {
        return Err(Error::param("map", "is empty"));
    }
    let up = if map.dim() == (height, width) {
        map.to_owned()
    } else {
        resize_bilinear(map.insert_axis(Axis(0)), height, width).index_axis_move(Axis(0), 0)
    };
    let (mut best, mut at) = (f32::NEG_INFINITY, (0, 0));
    for ((y, x), &v) in up.indexed_iter() {
        if v > best {
            best = v;
            at = (x, y);
        }
    }
    Ok(at)
}

/// Whether `point` `(x, y)` hits the `boxes` of an image of `height x width`: some
/// pixel of a box (clipped to the image) lies at a distance strictly less than
/// `tolerance` (TorchRay's `(u - x)^2 + (v - y)^2 < tolerance^2`).
pub fn hits(
    point: (usize, usize),
    boxes: &[PixelBox],
    height: usize,
    width: usize,
    tolerance: f64,
) -> bool {
    let (px, py) = (point.0 as f64, point.1 as f64);
    boxes.iter().any(|b| {
        if b.x0 >= width || b.y0 >= height {
            return false;
        }
        // The box's pixel nearest the point.
        let nx = (point.0.clamp(b.x0, b.x1.min(width - 1))) as f64;
        let ny = (point.1.clamp(b.y0, b.y1.min(height - 1))) as f64;
        (nx - px).powi(2) + (ny - py).powi(2) < tolerance * tolerance
    })
}

/// Whether an image is in the "difficult" subset for a class: its boxes (their
/// union) cover less than a quarter of the `height x width` image, and another class
/// is present.
pub fn is_difficult(
    boxes: &[PixelBox],
    height: usize,
    width: usize,
    other_classes_present: bool,
) -> bool {
    if !other_classes_present {
        return false;
    }
    let mut covered = vec![false; height * width];
    for b in boxes {
        for y in b.y0..=b.y1.min(height.saturating_sub(1)) {
            for x in b.x0..=b.x1.min(width.saturating_sub(1)) {
                covered[y * width + x] = true;
            }
        }
    }
    let area = covered.iter().filter(|&&c| c).count();
    4 * area < height * width
}

/// Hits and misses per class.
#[derive(Debug, Clone, PartialEq)]
pub struct PointingGame {
    /// Pixels of tolerance around the boxes.
    pub tolerance: f64,
    hits: Vec<u64>,
    misses: Vec<u64>,
}

impl PointingGame {
    /// A game over `classes` classes with `tolerance` pixels (non-negative).
    pub fn new(classes: usize, tolerance: f64) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(Error::param(
                "tolerance",
                format!("{tolerance} is not a non-negative number of pixels"),
            ));
        }
        Ok(PointingGame {
            tolerance,
            hits: vec![0; classes],
            misses: vec![0; classes],
        })
    }

    /// Plays one image and class: the map's point against the class's boxes. An
    /// image without a box of the class is skipped (`None`), as TorchRay skips it.
    pub fn play(
        &mut self,
        class: usize,
        map: ArrayView2<f32>,
        boxes: &[PixelBox],
        height: usize,
        width: usize,
    ) -> Result<Option<bool>> {
        self.check_class(class)?;
        if boxes.is_empty() {
            return Ok(None);
        }
        let hit = hits(
            map_point(map, height, width)?,
            boxes,
            height,
            width,
            self.tolerance,
        );
        self.record(class, hit)?;
        Ok(Some(hit))
    }

    /// Counts one outcome for `class`.
    pub fn record(&mut self, class: usize, hit: bool) -> Result<()> {
        self.check_class(class)?;
        let slot = if hit {
            &mut self.hits
        } else {
            &mut self.misses
        };
        slot[class] += 1;
        Ok(())
    }

    fn check_class(&self, class: usize) -> Result<()> {
        if class >= self.hits.len() {
            return Err(Error::param(
                "class",
                format!(
                    "{class} is not one of the game's {} classes",
                    self.hits.len()
                ),
            ));
        }
        Ok(())
    }

    /// Each class's hits / (hits + misses); 0 for a class never played (TorchRay's
    /// `clamp(min=1)`).
    pub fn class_accuracies(&self) -> Vec<f64> {
        self.hits
            .iter()
            .zip(&self.misses)
            .map(|(&h, &m)| h as f64 / (h + m).max(1) as f64)
            .collect()
    }

    /// TorchRay's score: the mean of [`class_accuracies`](Self::class_accuracies)
    /// over every class.
    pub fn accuracy(&self) -> f64 {
        let a = self.class_accuracies();
        a.iter().sum::<f64>() / a.len().max(1) as f64
    }

    /// All hits over all plays.
    pub fn hit_rate(&self) -> f64 {
        let h: u64 = self.hits.iter().sum();
        let m: u64 = self.misses.iter().sum();
        h as f64 / (h + m).max(1) as f64
    }
}
