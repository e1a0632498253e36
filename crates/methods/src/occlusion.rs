use std::sync::Arc;

use attrib_core::{Attribution, AttributionMap, Error, MapLayout, Model, Result, Scalar, Target};
use ndarray::{s, Array2, Array3, Array4, ArrayView4};

/// Occlusion sensitivity (Zeiler & Fergus 2014): slide a `window` filled with
/// `baseline` over the image with `stride` (across all channels); each pixel gets the
/// mean drop `L(I) - L(I_occluded)` over the windows that cover it. `(N, H, W)`.
///
/// Windows follow Captum's `Occlusion(sliding_window_shapes=(C, h, w),
/// strides=(C, sy, sx))`, whose per-pixel value this equals (Captum repeats it over
/// channels): along an axis of length `D` a window of `k` starts at `0, s, 2s, ...`,
/// `ceil((D - k) / s) + 1` times, and the last one is cropped at the border when
/// `(D - k)` is not a multiple of `s`, so every pixel is covered. A stride larger than
/// the window would skip pixels and is refused, as Captum refuses it, unless the
/// window spans the whole axis. Occluded copies are evaluated in forward batches of
/// at most `max_batch` images, which bounds memory.
#[derive(Clone)]
pub struct Occlusion {
    window: [usize; 2],
    stride: [usize; 2],
    baseline: f64,
    max_batch: usize,
    progress: Option<Arc<Progress>>,
}

/// Called with `(occluded images evaluated, total)` after each forward batch.
pub type Progress = dyn Fn(usize, usize) + Send + Sync;

impl std::fmt::Debug for Occlusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Occlusion")
            .field("window", &self.window)
            .field("stride", &self.stride)
            .field("baseline", &self.baseline)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl Default for Occlusion {
    fn default() -> Self {
        Occlusion::new(16, 8)
    }
}

impl Occlusion {
    /// A square `window` moved by `stride`, baseline 0, forward batches of 32.
    pub fn new(window: usize, stride: usize) -> Self {
        Occlusion {
            window: [window, window],
            stride: [stride, stride],
            baseline: 0.0,
            max_batch: 32,
            progress: None,
        }
    }

    /// Reports progress after each forward batch (the CLI's progress bar).
    pub fn on_progress(mut self, f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// A rectangular window `(h, w)`.
    pub fn window(mut self, h: usize, w: usize) -> Self {
        self.window = [h, w];
        self
    }

    /// A stride `(vertical, horizontal)`.
    pub fn stride(mut self, sy: usize, sx: usize) -> Self {
        self.stride = [sy, sx];
        self
    }

    /// The value occluded pixels take (in the model's input space, i.e. after
    /// normalisation).
    pub fn baseline(mut self, v: f64) -> Self {
        self.baseline = v;
        self
    }

    /// At most this many occluded images per forward pass.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// The number of occluded images an input of `h x w` needs per item (the
    /// forward passes are batches of up to `max_batch` of them), for progress
    /// reporting; 0 when the settings are invalid for that size.
    pub fn windows(&self, h: usize, w: usize) -> usize {
        match self.grid(h, w) {
            Ok((ys, xs)) => ys.len() * xs.len(),
            Err(_) => 0,
        }
    }

    /// Where windows start on an `h x w` input: rows, columns.
    fn grid(&self, h: usize, w: usize) -> Result<(Vec<usize>, Vec<usize>)> {
        let [wh, ww] = self.window;
        if wh > h || ww > w {
            return Err(Error::param(
                "occlusion window",
                format!("{wh}x{ww} is larger than the {h}x{w} input"),
            ));
        }
        Ok((self.starts(0, h)?, self.starts(1, w)?))
    }

    /// Where windows start along `axis` (0: rows, 1: columns) of length `len`, with
    /// Captum's count `ceil((len - k) / s) + 1`.
    fn starts(&self, axis: usize, len: usize) -> Result<Vec<usize>> {
        let (k, s) = (self.window[axis], self.stride[axis]);
        let name = ["rows", "columns"][axis];
        if k == 0 || s == 0 {
            return Err(Error::param(
                "occlusion",
                format!(
                    "window {:?} and stride {:?} must be positive",
                    self.window, self.stride
                ),
            ));
        }
        if k > len {
            return Err(Error::param(
                "occlusion window",
                format!("{k} {name} is larger than the input's {len}"),
            ));
        }
        if k < len && s > k {
            return Err(Error::param(
                "occlusion stride",
                format!(
                    "{s} {name} is larger than the window's {k}: pixels between windows would never be occluded (Captum refuses this too)"
                ),
            ));
        }
        let n = (len - k).div_ceil(s) + 1;
        Ok((0..n).map(|i| i * s).collect())
    }

    fn check(&self) -> Result<()> {
        if self.max_batch == 0 {
            return Err(Error::param("occlusion max batch", "must be positive"));
        }
        if !self.baseline.is_finite() {
            return Err(Error::param(
                "occlusion baseline",
                format!("{} is not finite", self.baseline),
            ));
        }
        Ok(())
    }
}

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for Occlusion {
    fn name(&self) -> &'static str {
        "occlusion"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (n, c, h, w) = input.dim();
        self.check()?;
        let scores = model.forward(input)?;
        let (ys, xs) = self.grid(h, w)?;
        let resolved = target.resolve(scores.view())?;
        let [wh, ww] = self.window;
        // A window's extent, cropped at the border as Captum crops its last one.
        let rows = |y: usize| y..(y + wh).min(h);
        let cols = |x: usize| x..(x + ww).min(w);
        let mut count = Array2::<F>::zeros((h, w));
        for &y in &ys {
            for &x in &xs {
                count
                    .slice_mut(s![rows(y), cols(x)])
                    .mapv_inplace(|v| v + F::one());
            }
        }
        let mut jobs = Vec::with_capacity(n * ys.len() * xs.len());
        for b in 0..n {
            for &y in &ys {
                jobs.extend(xs.iter().map(|&x| (b, y, x)));
            }
        }
        let baseline = F::of(self.baseline);
        let mut total = Array3::<F>::zeros((n, h, w));
        let mut done = 0;
        for chunk in jobs.chunks(self.max_batch) {
            let mut batch = Array4::<F>::zeros((chunk.len(), c, h, w));
            for (j, &(b, y, x)) in chunk.iter().enumerate() {
                let mut img = batch.index_axis_mut(ndarray::Axis(0), j);
                img.assign(&input.index_axis(ndarray::Axis(0), b));
                img.slice_mut(s![.., rows(y), cols(x)]).fill(baseline);
            }
            let items: Vec<usize> = chunk.iter().map(|&(b, _, _)| b).collect();
            let occluded = model.forward_items(batch.view(), &items)?;
            for (j, &(b, y, x)) in chunk.iter().enumerate() {
                let drop = resolved.values[b] - resolved.value_at(b, occluded.row(j));
                total
                    .slice_mut(s![b, rows(y), cols(x)])
                    .mapv_inplace(|v| v + drop);
            }
            done += chunk.len();
            if let Some(p) = &self.progress {
                p(done, jobs.len());
            }
        }
        // Every pixel is covered by at least one window (see `starts`).
        for mut plane in total.outer_iter_mut() {
            plane.zip_mut_with(&count, |v, &k| *v = *v / k);
        }
        Ok(AttributionMap {
            values: total.into_dyn(),
            layout: MapLayout::Pixel,
            classes: resolved.classes,
            scores,
        })
    }
}
