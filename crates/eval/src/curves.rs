//! Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018), as RISE's
//! `CausalMetric` computes them: pixels are moved, `step` at a time in order of
//! decreasing attribution, from the start image to the finish image (deletion: the
//! image to the substrate; insertion: the substrate to the image), and the class's
//! softmax probability is read before the first move and after each; the score is
//! the area under that curve with the trapezoid rule over `[0, 1]`. RISE deletes to
//! zeros and inserts from a blur (an 11x11 Gaussian of sigma 5, built as SciPy's
//! `gaussian_filter` of a unit impulse); the mean colour of the image is offered too.
//!
//! All `n + 1` images of a curve are forward passes of one model, run in batches of
//! [`CausalMetric::batch`] rows.

use attrib_core::{Error, Model, Result};
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, Axis};

/// Which way pixels move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Game {
    /// From the image to the substrate: a faithful map makes the probability fall
    /// fast (low area is good).
    Deletion,
    /// From the substrate to the image: the probability should rise fast (high area
    /// is good).
    Insertion,
}

/// What removed pixels become.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Substrate {
    /// Zeros (RISE's deletion).
    Zero,
    /// RISE's blur (its insertion): a Gaussian of `sigma` over a `size x size`
    /// window, zero padding.
    Blur {
        /// Window side (odd).
        size: usize,
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// Each channel's mean over the image.
    Mean,
}

impl Substrate {
    /// RISE's blur: 11x11, sigma 5.
    pub const RISE_BLUR: Substrate = Substrate::Blur {
        size: 11,
        sigma: 5.0,
    };

    /// The substrate image of `image` `(C, H, W)`.
    pub fn of(&self, image: ArrayView3<f32>) -> Result<Array3<f32>> {
        Ok(match *self {
            Substrate::Zero => Array3::zeros(image.dim()),
            Substrate::Mean => {
                let mut out = Array3::zeros(image.dim());
                for (c, plane) in image.outer_iter().enumerate() {
                    let m =
                        plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len().max(1) as f64;
                    out.index_axis_mut(Axis(0), c).fill(m as f32);
                }
                out
            }
            Substrate::Blur { size, sigma } => {
                let k = gaussian_kernel(size, sigma)?;
                blur(image, k.view())
            }
        })
    }
}

/// `scipy.ndimage.gaussian_filter` (reflect mode, truncate 4) of a `size x size`
/// unit impulse at the centre: RISE's `gkern`. Separable: the outer product of the
/// 1-D filter of the 1-D impulse, whose Gaussian taps beyond the window fold back by
/// reflection (`d c b a | a b c d | d c b a`).
pub fn gaussian_kernel(size: usize, sigma: f64) -> Result<Array2<f64>> {
    if size.is_multiple_of(2) || !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::param(
            "blur",
            format!(
                "a {size}x{size} window of sigma {sigma}: the side must be odd and sigma positive"
            ),
        ));
    }
    let r = (4.0 * sigma + 0.5) as i64;
    let taps: Vec<f64> = (-r..=r)
        .map(|t| (-0.5 * (t * t) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    let n = size as i64;
    // SciPy's "reflect": the edge value repeats (period 2n).
    let reflect = |i: i64| -> usize {
        let p = i.rem_euclid(2 * n);
        (if p < n { p } else { 2 * n - 1 - p }) as usize
    };
    let centre = size / 2;
    let mut k1 = vec![0.0; size];
    for (i, out) in k1.iter_mut().enumerate() {
        for (t, &w) in (-r..=r).zip(&taps) {
            if reflect(i as i64 - t) == centre {
                *out += w / total;
            }
        }
    }
    Ok(Array2::from_shape_fn((size, size), |(y, x)| k1[y] * k1[x]))
}

/// Each channel of `image` convolved with `k` (odd side), zero padding: RISE's
/// `conv2d(x, kern, padding=klen // 2)` with a per-channel kernel.
pub fn blur(image: ArrayView3<f32>, k: ArrayView2<f64>) -> Array3<f32> {
    let (c, h, w) = image.dim();
    let (kh, kw) = k.dim();
    let (ph, pw) = (kh / 2, kw / 2);
    let mut out = Array3::zeros((c, h, w));
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0f64;
                for dy in 0..kh {
                    let yy = y as i64 + dy as i64 - ph as i64;
                    if yy < 0 || yy >= h as i64 {
                        continue;
                    }
                    for dx in 0..kw {
                        let xx = x as i64 + dx as i64 - pw as i64;
                        if xx < 0 || xx >= w as i64 {
                            continue;
                        }
                        acc += k[[dy, dx]] * image[[ch, yy as usize, xx as usize]] as f64;
                    }
                }
                out[[ch, y, x]] = acc as f32;
            }
        }
    }
    out
}

/// RISE's area under a curve of `n + 1` points over `[0, 1]`: the trapezoid rule.
pub fn auc(scores: &[f64]) -> Result<f64> {
    if scores.len() < 2 {
        return Err(Error::param("curve", "needs at least two points"));
    }
    let n = scores.len();
    Ok((scores.iter().sum::<f64>() - scores[0] / 2.0 - scores[n - 1] / 2.0) / (n - 1) as f64)
}

/// The pixel order: decreasing attribution, equal values in decreasing index order
/// (RISE's `np.flip(np.argsort(...))` with a stable sort). A NaN is an error.
pub fn salient_order(map: ArrayView2<f32>) -> Result<Vec<usize>> {
    if let Some(((y, x), v)) = map.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::param(
            "attribution",
            format!("value {v} at row {y}, column {x} is not finite"),
        ));
    }
    let flat: Vec<f32> = map.iter().copied().collect();
    let mut order: Vec<usize> = (0..flat.len()).collect();
    order.sort_by(|&a, &b| flat[a].total_cmp(&flat[b]));
    order.reverse();
    Ok(order)
}

/// A deletion or insertion curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The class probability after `0, step, 2 step, ...` pixels moved (the last
    /// point: every pixel).
    pub scores: Vec<f64>,
    /// The area under it ([`auc`]).
    pub auc: f64,
}

/// RISE's causal metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CausalMetric {
    /// Deletion or insertion.
    pub game: Game,
    /// What moved pixels become (deletion) or start as (insertion).
    pub substrate: Substrate,
    /// Pixels moved per step (RISE: 224 * 8 at 224 x 224, 28 steps).
    pub step: usize,
    /// Images per forward pass.
    pub batch: usize,
}

impl CausalMetric {
    /// RISE's deletion: to zeros, `step` pixels at a time.
    pub fn deletion(step: usize) -> Self {
        CausalMetric {
            game: Game::Deletion,
            substrate: Substrate::Zero,
            step,
            batch: 16,
        }
    }

    /// RISE's insertion: from its blur, `step` pixels at a time.
    pub fn insertion(step: usize) -> Self {
        CausalMetric {
            game: Game::Insertion,
            substrate: Substrate::RISE_BLUR,
            step,
            batch: 16,
        }
    }

    /// The curve of `class`'s softmax probability under `model` for `image`
    /// `(C, H, W)` (as the model takes it) and its attribution `map` `(H, W)` (at the
    /// image's size).
    pub fn run<M: Model<f32> + ?Sized>(
        &self,
        model: &M,
        image: ArrayView3<f32>,
        map: ArrayView2<f32>,
        class: usize,
    ) -> Result<Curve> {
        let (c, h, w) = image.dim();
        if map.dim() != (h, w) {
            return Err(Error::shape(
                "attribution map",
                format!("({h}, {w}), the image's size"),
                format!("{:?}", map.dim()),
            ));
        }
        if self.step == 0 || self.batch == 0 {
            return Err(Error::param(
                "deletion/insertion",
                "the step and the batch must be positive",
            ));
        }
        if class >= model.num_outputs() {
            return Err(Error::ClassOutOfRange {
                class,
                item: 0,
                num_classes: model.num_outputs(),
            });
        }
        let order = salient_order(map)?;
        let hw = h * w;
        let n = hw.div_ceil(self.step);
        let substrate = self.substrate.of(image)?;
        let (mut current, finish) = match self.game {
            Game::Deletion => (image.to_owned(), substrate),
            Game::Insertion => (substrate, image.to_owned()),
        };
        let mut scores = Vec::with_capacity(n + 1);
        let mut rows: Vec<Array3<f32>> = Vec::with_capacity(self.batch);
        let flush = |rows: &mut Vec<Array3<f32>>, scores: &mut Vec<f64>| -> Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let views: Vec<_> = rows.iter().map(|r| r.view().insert_axis(Axis(0))).collect();
            let x: Array4<f32> =
                ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Backend(e.to_string()))?;
            let out = model.forward(x.view())?;
            for row in out.outer_iter() {
                scores.push(softmax_at(&row.to_vec(), class));
            }
            rows.clear();
            Ok(())
        };
        for i in 0..=n {
            rows.push(current.clone());
            if rows.len() == self.batch {
                flush(&mut rows, &mut scores)?;
            }
            if i < n {
                for &p in &order[self.step * i..(self.step * (i + 1)).min(hw)] {
                    let (y, x) = (p / w, p % w);
                    for ch in 0..c {
                        current[[ch, y, x]] = finish[[ch, y, x]];
                    }
                }
            }
        }
        flush(&mut rows, &mut scores)?;
        let auc = auc(&scores)?;
        Ok(Curve { scores, auc })
    }
}

/// The softmax probability of `class` among `logits`, computed stably in f64.
fn softmax_at(logits: &[f32], class: usize) -> f64 {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
    let z: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    (logits[class] as f64 - m).exp() / z
}
