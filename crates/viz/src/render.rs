//! Pictures like the paper's: heat-map overlays on the photo, the guided-backprop
//! image normalisation of its figures, and labelled panels.

use attrib_core::resample::resize_bilinear;
use image::{Rgb, RgbImage};
use ndarray::{Array3, ArrayView2, ArrayView3, Axis};

use crate::{normalize, Colormap, Normalization};

/// Alpha-blends a colormapped heat map (`(h, w)`, values in `[0, 1]`, any size:
/// bilinearly resized to the photo) over a photo (`(3, H, W)` in `[0, 1]`).
pub fn overlay(
    photo: ArrayView3<f32>,
    heat: ArrayView2<f32>,
    cmap: Colormap,
    alpha: f32,
) -> RgbImage {
    let (_, h, w) = photo.dim();
    let heat = resize_bilinear(heat.insert_axis(Axis(0)), h, w);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let c = cmap.rgb(heat[[0, y, x]]);
        Rgb(std::array::from_fn(|k| {
            let p = photo[[k, y, x]].clamp(0.0, 1.0) * 255.0;
            (p * (1.0 - alpha) + c[k] as f32 * alpha).round() as u8
        }))
    })
}

/// The normalisation the Grad-CAM paper's guided-backprop figures use (its code's
/// `deprocess_image`): centre, scale to standard deviation 0.1 around 0.5, clip to
/// `[0, 1]`. Input `(3, H, W)` raw values; a constant map gives flat grey. The
/// paper's code divides by `std + 1e-5`; here the 1e-5 is relative to the map's
/// largest magnitude, so that the picture does not depend on the map's scale: the
/// gradients of a confident captioner's log-probabilities (~1e-5) would otherwise
/// all come out flat grey. For the gradients of ImageNet logits the two agree to a
/// part in 10^5.
pub fn guided_image(values: ArrayView3<f32>) -> Array3<f32> {
    let n = values.len().max(1) as f32;
    let mean = values
        .iter()
        .map(|v| if v.is_finite() { *v } else { 0.0 })
        .sum::<f32>()
        / n;
    let var = values
        .iter()
        .map(|v| {
            if v.is_finite() {
                (v - mean).powi(2)
            } else {
                0.0
            }
        })
        .sum::<f32>()
        / n;
    let std = var.sqrt();
    let scale = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let denom = std + 1e-5 * scale;
    values.mapv(|v| {
        let v = if v.is_finite() { v } else { mean };
        if denom > 0.0 {
            (((v - mean) / denom) * 0.1 + 0.5).clamp(0.0, 1.0)
        } else {
            0.5
        }
    })
}

/// A `(3, H, W)` array in `[0, 1]` as an image.
pub fn to_image(chw: ArrayView3<f32>) -> RgbImage {
    crate::io::rgb_image(chw)
}

/// A signed `(H, W)` map (gradient magnitude, occlusion, raw CAM) through the
/// diverging colormap with 0 at white.
pub fn signed_map(map: ArrayView2<f32>) -> RgbImage {
    crate::io::colormap_image(
        normalize(map, Normalization::Symmetric).view(),
        Colormap::Diverging,
    )
}

/// Draws the outline of the box `[x1, y1, x2, y2]` (pixels; clipped to the image),
/// `thickness` pixels wide inwards, in `color`. A box wholly outside draws nothing.
pub fn draw_box(img: &mut RgbImage, b: [f64; 4], thickness: u32, color: [u8; 3]) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    if !b.iter().all(|v| v.is_finite()) || b[2] < 0.0 || b[3] < 0.0 || b[0] >= w || b[1] >= h {
        return;
    }
    let x0 = b[0].clamp(0.0, w - 1.0).round() as u32;
    let y0 = b[1].clamp(0.0, h - 1.0).round() as u32;
    let x1 = b[2].clamp(0.0, w - 1.0).round() as u32;
    let y1 = b[3].clamp(0.0, h - 1.0).round() as u32;
    for t in 0..thickness {
        let (l, r) = (x0 + t, x1.saturating_sub(t));
        let (top, bot) = (y0 + t, y1.saturating_sub(t));
        if l > r || top > bot {
            break;
        }
        for x in l..=r {
            img.put_pixel(x, top, Rgb(color));
            img.put_pixel(x, bot, Rgb(color));
        }
        for y in top..=bot {
            img.put_pixel(l, y, Rgb(color));
            img.put_pixel(r, y, Rgb(color));
        }
    }
}

/// Draws `text` like [`draw_text`] on a filled strip of `background` (for a label
/// over a photo).
pub fn draw_label(
    img: &mut RgbImage,
    text: &str,
    x: u32,
    y: u32,
    scale: u32,
    color: [u8; 3],
    background: [u8; 3],
) {
    let (tw, th) = (text.chars().count() as u32 * 8 * scale + 2, 8 * scale + 2);
    for py in y..(y + th).min(img.height()) {
        for px in x..(x + tw).min(img.width()) {
            img.put_pixel(px, py, Rgb(background));
        }
    }
    draw_text(img, text, x + 1, y + 1, scale, color);
}

/// Draws `text` (ASCII; others print as `?`) at `(x, y)` with an 8x8 font scaled by `scale`.
pub fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, color: [u8; 3]) {
    use font8x8::UnicodeFonts;
    let mut cx = x;
    for ch in text.chars() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (cx + col * scale + dx, y + row as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Rgb(color));
                        }
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

/// A grid of equally sized tiles with a title strip per row and column headers, like
/// the paper's Figure 1.
#[derive(Debug, Clone)]
pub struct Panel {
    tile: (u32, u32),
    headers: Vec<String>,
    rows: Vec<(String, Vec<RgbImage>)>,
}

const PAD: u32 = 6;
const TEXT: u32 = 2;

impl Panel {
    /// A panel of `tile`-sized images (others are resized) with column `headers`.
    pub fn new(tile: (u32, u32), headers: Vec<String>) -> Self {
        Panel {
            tile,
            headers,
            rows: Vec::new(),
        }
    }

    /// Adds a row titled `title`.
    pub fn row(&mut self, title: impl Into<String>, tiles: Vec<RgbImage>) -> &mut Self {
        self.rows.push((title.into(), tiles));
        self
    }

    /// Renders the panel on white. Every label is in one type size: a header too long
    /// for its tile wraps onto more lines (after a `-` or a space where it can) rather
    /// than shrinking or being cut.
    pub fn render(&self) -> RgbImage {
        let cols = self
            .headers
            .len()
            .max(self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0)) as u32;
        let glyph = 8 * TEXT;
        let line = glyph + PAD;
        let (tw, th) = self.tile;
        let per_line = (tw / glyph).max(1) as usize;
        let headers: Vec<Vec<String>> = self.headers.iter().map(|h| wrap(h, per_line)).collect();
        let header_lines = headers.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
        let head = header_lines * (glyph + 2) + PAD;
        let width = PAD + cols * (tw + PAD);
        let height = head + self.rows.len() as u32 * (line + th + PAD) + PAD;
        let mut img = RgbImage::from_pixel(width.max(1), height.max(1), Rgb([255, 255, 255]));
        let fit = |s: &str, px: u32| -> String { s.chars().take((px / glyph) as usize).collect() };
        for (i, lines) in headers.iter().enumerate() {
            for (k, text) in lines.iter().enumerate() {
                draw_text(
                    &mut img,
                    text,
                    PAD + i as u32 * (tw + PAD),
                    PAD / 2 + k as u32 * (glyph + 2),
                    TEXT,
                    [0, 0, 0],
                );
            }
        }
        for (r, (title, tiles)) in self.rows.iter().enumerate() {
            let top = head + r as u32 * (line + th + PAD);
            draw_text(
                &mut img,
                &fit(title, width - PAD),
                PAD,
                top + PAD / 2,
                TEXT,
                [40, 40, 160],
            );
            for (c, t) in tiles.iter().enumerate() {
                let t = if t.dimensions() == self.tile {
                    t.clone()
                } else {
                    image::imageops::resize(t, tw, th, image::imageops::FilterType::Triangle)
                };
                image::imageops::overlay(
                    &mut img,
                    &t,
                    (PAD + c as u32 * (tw + PAD)) as i64,
                    (top + line) as i64,
                );
            }
        }
        img
    }
}

/// `text` in lines of at most `width` characters, broken after a `-` or at a space
/// where possible, mid-word where a word is longer than a line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch == ' ' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push(ch);
        if ch == '-' {
            words.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for w in words {
        let sep = if line.is_empty() || line.ends_with('-') {
            ""
        } else {
            " "
        };
        if line.chars().count() + sep.len() + w.chars().count() <= width {
            line.push_str(sep);
            line.push_str(&w);
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        let chars: Vec<char> = w.chars().collect();
        let mut chunks = chars.chunks(width).peekable();
        while let Some(c) = chunks.next() {
            let s: String = c.iter().collect();
            if chunks.peek().is_some() {
                lines.push(s);
            } else {
                line = s;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn long_headers_wrap_in_the_one_type_size() {
        assert_eq!(wrap("grad-cam", 14), ["grad-cam"]);
        assert_eq!(wrap("guided-grad-cam", 14), ["guided-grad-", "cam"]);
        assert_eq!(wrap("guided-backprop", 10), ["guided-", "backprop"]);
        assert_eq!(
            wrap("counterfactual-grad-cam", 10),
            ["counterfac", "tual-grad-", "cam"]
        );
        assert_eq!(wrap("top 2 class", 5), ["top 2", "class"]);
        assert_eq!(wrap("", 5), [""]);
        // Every line of every header is drawn at the panel's one scale: a two-line
        // header makes the header strip two lines tall.
        let tile = RgbImage::from_pixel(160, 160, Rgb([0, 0, 0]));
        let mut one = Panel::new((160, 160), vec!["grad-cam".into()]);
        one.row("a", vec![tile.clone()]);
        let mut two = Panel::new((160, 160), vec!["guided-grad-cam".into()]);
        two.row("a", vec![tile]);
        let (a, b) = (one.render(), two.render());
        assert_eq!(b.height() - a.height(), 8 * TEXT + 2);
    }

    #[test]
    fn overlay_blends() {
        let photo = Array3::<f32>::ones((3, 2, 2));
        let heat = array![[0.0f32, 1.0], [0.0, 1.0]];
        let img = overlay(photo.view(), heat.view(), Colormap::Jet, 0.5);
        // jet(0) = (0, 0, 128): blended with white (255) -> (128, 128, 192) (rounded).
        assert_eq!(img.get_pixel(0, 0).0, [128, 128, 192]);
        assert_eq!(img.get_pixel(1, 0).0, [192, 128, 128]);
    }

    #[test]
    fn guided_image_normalisation() {
        let g = Array3::from_shape_vec((1, 1, 4), vec![-1.0f32, 1.0, -1.0, 1.0]).unwrap();
        let out = guided_image(g.view());
        // mean 0, std 1: 0.5 -/+ 0.1.
        for (o, e) in out.iter().zip([0.4f32, 0.6, 0.4, 0.6]) {
            assert!((o - e).abs() < 1e-5);
        }
        assert_eq!(
            guided_image(Array3::<f32>::zeros((3, 2, 2)).view()),
            Array3::from_elem((3, 2, 2), 0.5)
        );
        // Scale-free: a map of tiny gradients looks as the same map at unit scale.
        let tiny = g.mapv(|v| v * 1e-9);
        assert_eq!(guided_image(tiny.view()), out);
    }

    #[test]
    fn panel_geometry_and_text() {
        let mut p = Panel::new((10, 10), vec!["a".into(), "b".into()]);
        p.row("cat", vec![RgbImage::new(10, 10), RgbImage::new(20, 20)]);
        let img = p.render();
        // Header strip: one 16-pixel line of text, 2 of leading, 6 of padding.
        assert_eq!(img.dimensions(), (6 + 2 * 16, 24 + 22 + 10 + 6 + 6));
        // Some header text pixels are black.
        assert!(img.pixels().any(|p| p.0 == [0, 0, 0]));
    }
}
