use std::sync::Arc;

use attrib_core::{Attribution, AttributionMap, Error, MapLayout, Model, Result, Scalar, Target};
use ndarray::{s, Array2, Array3, Array4, ArrayView4};

/// Occlusion sensitivity (Zeiler & Fergus 2014): slide a `window` filled with
/// `baseline` over the image with `stride` (across all channels); each pixel gets the
/// mean drop `L(I) - L(I_occluded)` over the windows that cover it. `(N, H, W)`.
///
/// Windows start at `0, stride, 2*stride, ...` while they fit, as Captum's
/// `Occlusion(sliding_window_shapes=(C, h, w), strides=(C, s, s))`, whose per-pixel
/// value this equals (Captum repeats it over channels). Pixels no window covers (when
/// the stride does not tile the image) are 0. Occluded copies are evaluated in
/// forward batches of at most `max_batch` images, which bounds memory.
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

    /// The number of forward passes (of up to `max_batch` images) an input of `h x w`
    /// needs per item, for progress reporting.
    pub fn windows(&self, h: usize, w: usize) -> usize {
        let count = |len: usize, k: usize, s: usize| {
            if k == 0 || s == 0 || k > len {
                0
            } else {
                (len - k) / s + 1
            }
        };
        count(h, self.window[0], self.stride[0]) * count(w, self.window[1], self.stride[1])
    }

    fn check(&self, h: usize, w: usize) -> Result<()> {
        if self.window.contains(&0) || self.stride.contains(&0) || self.max_batch == 0 {
            return Err(Error::param(
                "occlusion",
                format!(
                    "window {:?}, stride {:?} and max batch {} must be positive",
                    self.window, self.stride, self.max_batch
                ),
            ));
        }
        if self.window[0] > h || self.window[1] > w {
            return Err(Error::param(
                "occlusion window",
                format!("{:?} is larger than the {h}x{w} input", self.window),
            ));
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
        let scores = model.forward(input)?;
        self.check(h, w)?;
        let resolved = target.resolve(scores.view())?;
        let [wh, ww] = self.window;
        let ys: Vec<usize> = (0..=h - wh).step_by(self.stride[0]).collect();
        let xs: Vec<usize> = (0..=w - ww).step_by(self.stride[1]).collect();
        let mut count = Array2::<F>::zeros((h, w));
        for &y in &ys {
            for &x in &xs {
                count
                    .slice_mut(s![y..y + wh, x..x + ww])
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
                img.slice_mut(s![.., y..y + wh, x..x + ww]).fill(baseline);
            }
            let occluded = model.forward(batch.view())?;
            for (j, &(b, y, x)) in chunk.iter().enumerate() {
                let drop = resolved.values[b] - resolved.value_at(b, occluded.row(j));
                total
                    .slice_mut(s![b, y..y + wh, x..x + ww])
                    .mapv_inplace(|v| v + drop);
            }
            done += chunk.len();
            if let Some(p) = &self.progress {
                p(done, jobs.len());
            }
        }
        for mut plane in total.outer_iter_mut() {
            plane.zip_mut_with(&count, |v, &k| {
                *v = if k > F::zero() { *v / k } else { F::zero() }
            });
        }
        Ok(AttributionMap {
            values: total.into_dyn(),
            layout: MapLayout::Pixel,
            classes: resolved.classes,
            scores,
        })
    }
}
