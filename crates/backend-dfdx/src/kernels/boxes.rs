//! Box geometry for region proposals, as torchvision computes it: Faster R-CNN's box
//! decoding, clipping to the image, intersection over union and non-maximum
//! suppression. Boxes are `[x1, y1, x2, y2]` in image pixels.

use attrib_core::{Error, Result};

/// A box, `[x1, y1, x2, y2]`.
pub type Box4 = [f64; 4];

/// torchvision's `BoxCoder.decode_single` with weights `(1, 1, 1, 1)`: anchor and
/// offsets `(dx, dy, dw, dh)` to a box; `dw`, `dh` are clamped at
/// `log(1000 / 16)`, as torchvision's detection models do.
pub fn decode(anchor: &Box4, d: &[f64; 4]) -> Box4 {
    let clip = (1000.0f64 / 16.0).ln();
    let (w, h) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (cx, cy) = (anchor[0] + 0.5 * w, anchor[1] + 0.5 * h);
    let (dw, dh) = (d[2].min(clip), d[3].min(clip));
    let (pcx, pcy) = (d[0] * w + cx, d[1] * h + cy);
    let (pw, ph) = (dw.exp() * w, dh.exp() * h);
    [
        pcx - 0.5 * pw,
        pcy - 0.5 * ph,
        pcx + 0.5 * pw,
        pcy + 0.5 * ph,
    ]
}

/// The box clipped to an image of `height x width` (`torchvision.ops.clip_boxes_to_image`).
pub fn clip(b: &Box4, height: f64, width: f64) -> Box4 {
    [
        b[0].clamp(0.0, width),
        b[1].clamp(0.0, height),
        b[2].clamp(0.0, width),
        b[3].clamp(0.0, height),
    ]
}

/// `(x2 - x1) (y2 - y1)`.
pub fn area(b: &Box4) -> f64 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection over union.
pub fn iou(a: &Box4, b: &Box4) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// `torchvision.ops.nms`: the indices of the boxes kept, by decreasing score; a box
/// is dropped when its IoU with a kept, higher-scoring box exceeds `threshold`. Equal
/// scores keep their input order. A NaN score is an error.
pub fn nms(boxes: &[Box4], scores: &[f64], threshold: f64) -> Result<Vec<usize>> {
    if boxes.len() != scores.len() {
        return Err(Error::shape("nms scores", boxes.len(), scores.len()));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::param("nms", format!("score {i} is NaN")));
    }
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[n + 1..] {
            if !suppressed[j] && iou(&boxes[i], &boxes[j]) > threshold {
                suppressed[j] = true;
            }
        }
    }
    Ok(keep)
}
