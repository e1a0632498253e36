//! ImageNet conventions for the zoo's pretrained models: class names and input
//! preprocessing.

use std::sync::OnceLock;

use attrib_core::resample::resize_bilinear;
use ndarray::{Array3, Array4, Axis};

/// Per-channel mean of ImageNet training images (RGB, in `[0, 1]`).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

static CLASSES: OnceLock<Vec<&'static str>> = OnceLock::new();

/// The 1000 ImageNet-1k class names, by index (torchvision's list).
pub fn classes() -> &'static [&'static str] {
    CLASSES.get_or_init(|| {
        include_str!("../data/imagenet_classes.txt")
            .lines()
            .collect()
    })
}

/// The name of class `i`, or `class i` beyond the list.
pub fn class_name(i: usize) -> String {
    classes()
        .get(i)
        .map_or_else(|| format!("class {i}"), |s| s.to_string())
}

/// An RGB image as `(3, H, W)` floats in `[0, 1]`.
#[cfg(feature = "images")]
pub fn image_to_chw(img: &image::DynamicImage) -> Array3<f32> {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Array3::from_shape_fn((3, h as usize, w as usize), |(c, y, x)| {
        rgb.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    })
}

/// Resizes `(3, H, W)` to `size x size` with bilinear interpolation (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False, antialias=False)`), then
/// normalises with [`MEAN`] and [`STD`]. The result is `(1, 3, size, size)`.
pub fn preprocess(chw: &Array3<f32>, size: usize) -> Array4<f32> {
    let mut x = resize_bilinear(chw.view(), size, size);
    for (c, mut plane) in x.axis_iter_mut(Axis(0)).enumerate() {
        plane.mapv_inplace(|v| (v - MEAN[c]) / STD[c]);
    }
    x.insert_axis(Axis(0))
}

/// Reads a PNG or JPEG and preprocesses it to `(1, 3, size, size)`.
#[cfg(feature = "images")]
pub fn load_image(path: &std::path::Path, size: usize) -> attrib_core::Result<Array4<f32>> {
    let img = image::open(path).map_err(|e| attrib_core::Error::Io {
        path: path.display().to_string(),
        reason: format!("cannot read the image: {e}"),
    })?;
    Ok(preprocess(&image_to_chw(&img), size))
}

/// Reverses [`preprocess`]'s normalisation: `(3, H, W)` back to `[0, 1]` RGB.
pub fn denormalize(chw: ndarray::ArrayView3<f32>) -> Array3<f32> {
    let mut x = chw.to_owned();
    for (c, mut plane) in x.axis_iter_mut(Axis(0)).enumerate() {
        plane.mapv_inplace(|v| (v * STD[c] + MEAN[c]).clamp(0.0, 1.0));
    }
    x
}
