//! Files: PNG images and `.npy` arrays, written atomically (to a temporary file in the
//! same folder, then renamed) so that a failed run never leaves a half-written file.

use std::fs;
use std::path::{Path, PathBuf};

use attrib_core::{Error, Result};
use image::RgbImage;
use ndarray::{ArrayD, ArrayView3, Axis};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::Colormap;

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes via a sibling temporary file and a rename.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::result::Result<(), String>,
) -> Result<()> {
    let tmp: PathBuf = {
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".partial-{}", std::process::id()));
        path.with_file_name(name)
    };
    let result = fs::File::create(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|mut f| write(&mut f).and_then(|_| f.sync_all().map_err(|e| e.to_string())))
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Writes `array` as a little-endian `.npy` file numpy reads.
pub fn write_npy(path: &Path, array: &ArrayD<f32>) -> Result<()> {
    write_atomic(path, |f| {
        array
            .write_npy(std::io::BufWriter::new(f))
            .map_err(|e| e.to_string())
    })
}

/// Reads a float32 `.npy` file of any shape.
pub fn read_npy(path: &Path) -> Result<ArrayD<f32>> {
    let f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    ArrayD::<f32>::read_npy(f).map_err(|e| io_err(path, format!("not a float32 .npy array: {e}")))
}

/// Writes an RGB image as PNG.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomic(path, |f| {
        img.write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
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

    #[test]
    fn npy_round_trip_and_no_partial_files() {
        let dir = std::env::temp_dir().join(format!("attrib-viz-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let a = ndarray::Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32)
            .into_dyn();
        let p = dir.join("a.npy");
        write_npy(&p, &a).unwrap();
        assert_eq!(read_npy(&p).unwrap(), a);
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
