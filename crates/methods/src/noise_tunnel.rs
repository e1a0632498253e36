use attrib_core::{Attribution, AttributionMap, Error, Model, Result, Scalar, Target};
use ndarray::{Array4, ArrayD, ArrayView4, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::rows::ItemRows;

/// How a [`NoiseTunnel`] combines the attributions of its noisy samples (Captum's
/// `nt_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    /// SmoothGrad (Smilkov et al. 2017): their mean.
    SmoothGrad,
    /// SmoothGrad-squared: the mean of their squares.
    SmoothGradSq,
    /// VarGrad (Adebayo et al. 2018): their variance, `E[a^2] - E[a]^2`.
    VarGrad,
}

impl NoiseKind {
    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::SmoothGrad => "smoothgrad",
            NoiseKind::SmoothGradSq => "smoothgrad-sq",
            NoiseKind::VarGrad => "vargrad",
        }
    }
}

impl std::str::FromStr for NoiseKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [
            NoiseKind::SmoothGrad,
            NoiseKind::SmoothGradSq,
            NoiseKind::VarGrad,
        ]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            Error::param(
                "noise tunnel",
                format!("unknown `{s}`; valid: smoothgrad, smoothgrad-sq, vargrad"),
            )
        })
    }
}

/// A noise tunnel (Captum's `NoiseTunnel`) over any method `A`: `samples` copies of
/// every item with Gaussian noise of standard deviation `std` (absolute, in the
/// model's input space) added, explained by `A`, combined by [`NoiseKind`]. The
/// result has `A`'s layout. Copies are stacked as Captum stacks them (each item's
/// samples together) and explained by `A` in calls of at most
/// [`NoiseTunnel::max_batch`] rows (`A`'s map of a row must depend on that row
/// alone, as every input-space method's does), the target repeated (a top-predicted
/// target pinned to the classes at the clean input). Noisy copies of an item
/// conditioned on a query (a caption, a question) keep its query.
///
/// The noise is drawn from a ChaCha12 generator seeded by `seed` (the same maps for
/// the same seed, whatever the thread count), or given with
/// [`NoiseTunnel::with_noise`] (to reproduce another tool's draws).
#[derive(Debug, Clone)]
pub struct NoiseTunnel<A> {
    inner: A,
    kind: NoiseKind,
    samples: usize,
    std: f64,
    seed: u64,
    max_batch: usize,
    noise: Option<Array4<f64>>,
}

impl<A> NoiseTunnel<A> {
    /// `inner` under `kind`, 10 samples of standard deviation 1 (set them), seed 0.
    pub fn new(inner: A, kind: NoiseKind) -> Self {
        NoiseTunnel {
            inner,
            kind,
            samples: 10,
            std: 1.0,
            seed: 0,
            max_batch: 32,
            noise: None,
        }
    }

    /// Noisy copies per item.
    pub fn samples(mut self, n: usize) -> Self {
        self.samples = n;
        self
    }

    /// The noise's standard deviation.
    pub fn std(mut self, s: f64) -> Self {
        self.std = s;
        self
    }

    /// At most `n` noisy copies per call of the inner method (default 32; Captum's
    /// `nt_samples_batch_size`). The maps do not depend on it.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// The generator's seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    /// Uses `noise` `(N * samples, C, H, W)` (item `b`'s samples in rows
    /// `b * samples ..`) instead of drawing it.
    pub fn with_noise(mut self, noise: Array4<f64>) -> Self {
        self.noise = Some(noise);
        self
    }

    fn draw(&self, shape: (usize, usize, usize, usize)) -> Array4<f64> {
        let mut rng = ChaCha12Rng::seed_from_u64(self.seed);
        // Box-Muller: two uniforms, one normal (the second is dropped, which keeps the
        // stream's use simple).
        Array4::from_shape_simple_fn(shape, || {
            let u1: f64 = 1.0 - rng.gen::<f64>();
            let u2: f64 = rng.gen::<f64>();
            self.std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
    }
}

impl<F, M, A> Attribution<F, M> for NoiseTunnel<A>
where
    F: Scalar,
    M: Model<F> + ?Sized,
    A: for<'x> Attribution<F, ItemRows<'x, M>>,
{
    fn name(&self) -> &'static str {
        match self.kind {
            NoiseKind::SmoothGrad => "smoothgrad",
            NoiseKind::SmoothGradSq => "smoothgrad-sq",
            NoiseKind::VarGrad => "vargrad",
        }
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.samples == 0 {
            return Err(Error::param("noise samples", "must be positive"));
        }
        if self.max_batch == 0 {
            return Err(Error::param("noise tunnel max batch", "must be positive"));
        }
        if !(self.std.is_finite() && self.std >= 0.0) {
            return Err(Error::param(
                "noise std",
                format!("{} is not a finite, non-negative number", self.std),
            ));
        }
        let (n, c, h, w) = input.dim();
        let s = self.samples;
        let scores = model.forward(input)?;
        let target = target.pinned(scores.view())?;
        let resolved = target.resolve(scores.view())?;
        let noise = match &self.noise {
            Some(z) => {
                if z.dim() != (n * s, c, h, w) {
                    return Err(Error::shape(
                        "given noise",
                        format!("({}, {c}, {h}, {w})", n * s),
                        format!("{:?}", z.dim()),
                    ));
                }
                z.clone()
            }
            None => self.draw((n * s, c, h, w)),
        };
        let items: Vec<usize> = (0..n).flat_map(|b| std::iter::repeat_n(b, s)).collect();
        let mut noisy = Array4::<F>::zeros((n * s, c, h, w));
        for (r, &b) in items.iter().enumerate() {
            ndarray::Zip::from(noisy.index_axis_mut(Axis(0), r))
                .and(input.index_axis(Axis(0), b))
                .and(noise.index_axis(Axis(0), r))
                .for_each(|d, &x, &z| *d = x + F::of(z));
        }
        // The noisy copies are explained `max_batch` rows at a time (each row's map
        // depends on that row alone), which bounds the memory of a large tunnel.
        let mut parts: Vec<ArrayD<F>> = Vec::new();
        let mut layout = None;
        for start in (0..n * s).step_by(self.max_batch) {
            let end = (start + self.max_batch).min(n * s);
            let chunk = &items[start..end];
            let rows = ItemRows::new(model, chunk.to_vec());
            let part = self.inner.attribute(
                &rows,
                noisy.slice(ndarray::s![start..end, .., .., ..]),
                &target.for_items(chunk, n)?,
            )?;
            layout = Some(part.layout);
            parts.push(part.values);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let values =
            ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Backend(e.to_string()))?;
        let layout = layout.ok_or_else(|| Error::Backend("no noisy rows".into()))?;
        let shape = values.shape().to_vec();
        let per: usize = shape[1..].iter().product();
        let flat = values
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((n, s, per))
            .map_err(|e| Error::Backend(e.to_string()))?;
        let inv = F::one() / F::of(s as f64);
        let mean = flat.sum_axis(Axis(1)).mapv(|v| v * inv);
        let mean_sq = flat.mapv(|v| v * v).sum_axis(Axis(1)).mapv(|v| v * inv);
        let out = match self.kind {
            NoiseKind::SmoothGrad => mean,
            NoiseKind::SmoothGradSq => mean_sq,
            NoiseKind::VarGrad => &mean_sq - &mean.mapv(|v| v * v),
        };
        let mut dims = shape;
        dims[0] = n;
        let values = ArrayD::from_shape_vec(IxDyn(&dims), out.into_iter().collect())
            .map_err(|e| Error::Backend(e.to_string()))?;
        Ok(AttributionMap {
            values,
            layout,
            classes: resolved.classes,
            scores,
        })
    }
}
