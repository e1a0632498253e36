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
        include_str!("../../data/imagenet_classes.txt")
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

/// An 8-bit RGB image resized to `size x size` as `(3, size, size)` floats in
/// `[0, 1]`, read straight from the decoded pixels: the same values as
/// [`image_to_chw`] followed by a bilinear resize, without a full-size float copy
/// of a large photo.
#[cfg(feature = "images")]
pub fn resize_rgb(img: &image::RgbImage, size: usize) -> Array3<f32> {
    let (w, h) = img.dimensions();
    attrib_core::resample::resize_bilinear_from(3, h as usize, w as usize, size, size, |c, y, x| {
        img.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    })
}

/// Normalises `(3, H, W)` values in `[0, 1]` with [`MEAN`] and [`STD`] into
/// `(1, 3, H, W)`.
pub fn normalize(chw: &Array3<f32>) -> Array4<f32> {
    let mut x = chw.clone();
    for (c, mut plane) in x.axis_iter_mut(Axis(0)).enumerate() {
        plane.mapv_inplace(|v| (v - MEAN[c]) / STD[c]);
    }
    x.insert_axis(Axis(0))
}

/// Resizes `(3, H, W)` to `size x size` with bilinear interpolation (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False, antialias=False)`), then
/// normalises with [`MEAN`] and [`STD`]. The result is `(1, 3, size, size)`.
pub fn preprocess(chw: &Array3<f32>, size: usize) -> Array4<f32> {
    normalize(&resize_bilinear(chw.view(), size, size))
}

/// Reads a PNG or JPEG (within `attrib_io`'s default limits) and preprocesses it to
/// `(1, 3, size, size)`.
#[cfg(feature = "images")]
pub fn load_image(path: &std::path::Path, size: usize) -> attrib_core::Result<Array4<f32>> {
    let img = attrib_io::image::read_rgb8(path)?;
    Ok(normalize(&resize_rgb(&img, size)))
}

/// Reverses [`preprocess`]'s normalisation: `(3, H, W)` back to `[0, 1]` RGB.
pub fn denormalize(chw: ndarray::ArrayView3<f32>) -> Array3<f32> {
    let mut x = chw.to_owned();
    for (c, mut plane) in x.axis_iter_mut(Axis(0)).enumerate() {
        plane.mapv_inplace(|v| (v * STD[c] + MEAN[c]).clamp(0.0, 1.0));
    }
    x
}

#[cfg(all(test, feature = "images"))]
mod tests {
    use super::*;

    #[test]
    fn resizing_from_the_decoded_pixels_equals_resizing_the_float_copy() {
        let img = image::RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 11) as u8, ((x * y) % 256) as u8])
        });
        let copy = image_to_chw(&image::DynamicImage::ImageRgb8(img.clone()));
        for size in [1, 16, 64] {
            assert_eq!(
                resize_rgb(&img, size),
                resize_bilinear(copy.view(), size, size),
                "{size}"
            );
        }
    }
}
