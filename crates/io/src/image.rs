//! Images (PNG, JPEG) from untrusted files: dimensions are checked against a pixel
//! limit before decoding, the decoder's allocations are capped, and a decoder that
//! panics on malformed data gives an error instead.

use std::io::{BufRead, Seek};
use std::path::Path;

use attrib_core::{Error, Result};
use image::{DynamicImage, ImageReader, RgbImage};

use crate::guard::guarded;
use crate::limits::Limits;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: format!("cannot read the image: {}", reason.into()),
    }
}

/// Decodes an image file to 8-bit RGB within the default [`Limits`].
pub fn read_rgb8(path: &Path) -> Result<RgbImage> {
    read_rgb8_with(path, &Limits::default())
}

/// Decodes an image file to 8-bit RGB within `limits`: at most
/// [`Limits::max_image_pixels`] pixels and [`Limits::max_image_alloc`] bytes of decoder
/// memory. Other bit depths and colour types are converted as `image`'s `to_rgb8`
/// does.
pub fn read_rgb8_with(path: &Path, limits: &Limits) -> Result<RgbImage> {
    decode(path, limits, || {
        ImageReader::open(path).map_err(|e| bad(path, e.to_string()))
    })
}

/// Decodes image bytes to 8-bit RGB within `limits`; `name` names them in errors.
pub fn decode_rgb8(bytes: &[u8], name: &str, limits: &Limits) -> Result<RgbImage> {
    decode(Path::new(name), limits, || {
        Ok(ImageReader::new(std::io::Cursor::new(bytes)))
    })
}

/// Reads the dimensions with one reader, checks them, then decodes with a second.
fn decode<R: BufRead + Seek>(
    path: &Path,
    limits: &Limits,
    open: impl Fn() -> Result<ImageReader<R>>,
) -> Result<RgbImage> {
    let err = |m: String| bad(path, m);
    let open = || {
        open()?
            .with_guessed_format()
            .map_err(|e| bad(path, e.to_string()))
    };
    let (w, h) = guarded("the image decoder", err, || {
        open()?
            .into_dimensions()
            .map_err(|e| bad(path, e.to_string()))
    })?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_image_pixels {
        return Err(bad(
            path,
            format!(
                "{w}x{h} is {pixels} pixels, more than the {} allowed (attrib_io::Limits)",
                limits.max_image_pixels
            ),
        ));
    }
    if pixels == 0 {
        return Err(bad(path, format!("the image is {w}x{h}")));
    }
    let img = guarded("the image decoder", err, || {
        let mut reader = open()?;
        let mut l = image::Limits::default();
        l.max_image_width = Some(w);
        l.max_image_height = Some(h);
        l.max_alloc = Some(limits.max_image_alloc);
        reader.limits(l);
        reader.decode().map_err(|e| bad(path, e.to_string()))
    })?;
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}
