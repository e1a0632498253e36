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

    /// One draw of the noise: Box-Muller from two uniforms (the second normal is
    /// dropped, which keeps the stream's use simple).
    fn normal(&self, rng: &mut ChaCha12Rng) -> f64 {
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        self.std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
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
        if let Some(z) = &self.noise {
            if z.dim() != (n * s, c, h, w) {
                return Err(Error::shape(
                    "given noise",
                    format!("({}, {c}, {h}, {w})", n * s),
                    format!("{:?}", z.dim()),
                ));
            }
        }
        let items: Vec<usize> = (0..n).flat_map(|b| std::iter::repeat_n(b, s)).collect();
        // The noisy copies are made and explained `max_batch` rows at a time (each
        // row's map depends on that row alone), and their maps summed as they come, so
        // memory stays at one chunk whatever the number of samples. The noise is one
        // stream, drawn row after row: the same for the same seed, however chunked.
        let mut rng = ChaCha12Rng::seed_from_u64(self.seed);
        let mut sums: Option<(ArrayD<f64>, ArrayD<f64>)> = None;
        let mut layout = None;
        crate::parts::check_batch_size(self.max_batch.min(n * s), c * h * w, "noise tunnel batch")?;
        for start in (0..n * s).step_by(self.max_batch) {
            let end = (start + self.max_batch).min(n * s);
            let chunk = &items[start..end];
            let mut noisy = Array4::<F>::zeros((chunk.len(), c, h, w));
            for (j, &b) in chunk.iter().enumerate() {
                let mut dst = noisy.index_axis_mut(Axis(0), j);
                let src = input.index_axis(Axis(0), b);
                match &self.noise {
                    Some(z) => {
                        let z = z.index_axis(Axis(0), start + j);
                        for ((d, &x), &z) in dst.iter_mut().zip(src.iter()).zip(z.iter()) {
                            *d = x + F::of(z);
                        }
                    }
                    None => {
                        for (d, &x) in dst.iter_mut().zip(src.iter()) {
                            *d = x + F::of(self.normal(&mut rng));
                        }
                    }
                }
            }
            let rows = ItemRows::new(model, chunk.to_vec());
            let part = self
                .inner
                .attribute(&rows, noisy.view(), &target.for_items(chunk, n)?)?;
            if part.values.shape().first() != Some(&chunk.len()) {
                return Err(Error::shape(
                    "the inner method's maps",
                    format!("{} rows", chunk.len()),
                    format!("{:?}", part.values.shape()),
                ));
            }
            let (sum, sum_sq) = sums.get_or_insert_with(|| {
                let mut shape = part.values.shape().to_vec();
                shape[0] = n;
                (ArrayD::zeros(IxDyn(&shape)), ArrayD::zeros(IxDyn(&shape)))
            });
            if sum.shape()[1..] != part.values.shape()[1..] {
                return Err(Error::shape(
                    "the inner method's maps",
                    format!("{:?}", &sum.shape()[1..]),
                    format!("{:?}", &part.values.shape()[1..]),
                ));
            }
            for (j, &b) in chunk.iter().enumerate() {
                let row = part.values.index_axis(Axis(0), j);
                ndarray::Zip::from(sum.index_axis_mut(Axis(0), b))
                    .and(sum_sq.index_axis_mut(Axis(0), b))
                    .and(&row)
                    .for_each(|a, q, &v| {
                        let v = v.as_f64();
                        *a += v;
                        *q += v * v;
                    });
            }
            layout = Some(part.layout);
        }
        let ((sum, sum_sq), layout) = sums
            .zip(layout)
            .ok_or_else(|| Error::Backend("no noisy rows".into()))?;
        let inv = 1.0 / s as f64;
        let values = match self.kind {
            NoiseKind::SmoothGrad => sum.mapv(|v| F::of(v * inv)),
            NoiseKind::SmoothGradSq => sum_sq.mapv(|v| F::of(v * inv)),
            NoiseKind::VarGrad => ndarray::Zip::from(&sum)
                .and(&sum_sq)
                .map_collect(|&a, &q| F::of(q * inv - (a * inv) * (a * inv))),
        };
        Ok(AttributionMap {
            values,
            layout,
            classes: resolved.classes,
            scores,
        })
    }
}
