//! Files: PNG images and `.npy` arrays, encoded into any writer, or written atomically
//! (to a temporary file in the same folder, then renamed) so that a failed run never
//! leaves a half-written file. Reading untrusted `.npy` files is `attrib-io`'s job.

use std::io::Write;
use std::path::Path;

use attrib_core::Result;
use attrib_io::fs::write_atomic;
use image::RgbImage;
use ndarray::{ArrayD, ArrayView3, Axis};
use ndarray_npy::WriteNpyExt;

use crate::Colormap;

/// Encodes `array` as a little-endian `.npy` file numpy reads.
pub fn encode_npy(array: &ArrayD<f32>, out: impl Write) -> std::io::Result<()> {
    array
        .write_npy(std::io::BufWriter::new(out))
        .map_err(std::io::Error::other)
}

/// Encodes an RGB image as PNG.
pub fn encode_png(img: &RgbImage, out: impl Write) -> std::io::Result<()> {
    use image::ImageEncoder;
    let mut w = std::io::BufWriter::new(out);
    image::codecs::png::PngEncoder::new(&mut w)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
    w.flush()
}

/// Writes `array` as a `.npy` file, atomically.
pub fn write_npy(path: &Path, array: &ArrayD<f32>) -> Result<()> {
    write_atomic(path, |f| encode_npy(array, f))
}

/// Writes an RGB image as PNG, atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomic(path, |f| encode_png(img, f))
}

/// Renders a `(3, H, W)` array of `[0, 1]` values (channel-first) as an image.
pub fn rgb_image(chw: ArrayView3<f32>) -> RgbImage {
    let (c, h, w) = chw.dim();
    if c == 0 {
        return RgbImage::new(w as u32, h as u32);
    }
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c: usize| {
            (chw[[c.min(chw.len_of(Axis(0)) - 1), y as usize, x as usize]].clamp(0.0, 1.0) * 255.0)
                .round() as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Renders a normalised `(H, W)` map through a colormap.
pub fn colormap_image(map: ndarray::ArrayView2<f32>, cmap: Colormap) -> RgbImage {
    let (h, w) = map.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb(cmap.rgb(map[[y as usize, x as usize]]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use attrib_core::Error;
    use std::fs;

    #[test]
    fn npy_round_trip_and_no_partial_files() {
        let dir = std::env::temp_dir().join(format!("attrib-viz-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let a = ndarray::Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32)
            .into_dyn();
        let p = dir.join("a.npy");
        write_npy(&p, &a).unwrap();
        assert_eq!(attrib_io::npy::read_f32(&p).unwrap(), a);
        let bytes = fs::read(&p).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        // A write into a missing folder fails cleanly and leaves nothing behind.
        let bad = dir.join("missing").join("b.npy");
        assert!(matches!(write_npy(&bad, &a), Err(Error::Io { .. })));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.npy")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
