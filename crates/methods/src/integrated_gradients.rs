use attrib_core::{
    Attribution, AttributionMap, BackwardRequest, Error, MapLayout, Model, Rectifier, Result,
    Scalar, Target,
};
use ndarray::{s, Array4, ArrayView4, Axis};

/// The most path points [`Integration::nodes`] computes (Gauss-Legendre's nodes cost
/// `O(n^2)`; far beyond the quadrature's useful range).
pub const MAX_STEPS: usize = 10_000;

/// How [`IntegratedGradients`] approximates the path integral: Captum's methods, with
/// the same nodes and weights for `n` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Integration {
    /// Gauss-Legendre quadrature on `[0, 1]` (Captum's default).
    #[default]
    GaussLegendre,
    /// Left Riemann sum: `alpha = 0 .. 1 - 1/n`, weights `1/n`.
    RiemannLeft,
    /// Right Riemann sum: `alpha = 1/n .. 1`, weights `1/n`.
    RiemannRight,
    /// Midpoint Riemann sum: `alpha = 1/(2n) .. 1 - 1/(2n)`, weights `1/n`.
    RiemannMiddle,
    /// Captum's trapezoid rule: `alpha = 0 .. 1` evenly, weights `1/n` halved at both
    /// ends (so they sum to `1 - 1/n`, as in Captum).
    RiemannTrapezoid,
}

impl Integration {
    /// Captum's name.
    pub fn name(self) -> &'static str {
        match self {
            Integration::GaussLegendre => "gausslegendre",
            Integration::RiemannLeft => "riemann_left",
            Integration::RiemannRight => "riemann_right",
            Integration::RiemannMiddle => "riemann_middle",
            Integration::RiemannTrapezoid => "riemann_trapezoid",
        }
    }

    /// Every method, for parsing and listing.
    pub const ALL: [Integration; 5] = [
        Integration::GaussLegendre,
        Integration::RiemannLeft,
        Integration::RiemannRight,
        Integration::RiemannMiddle,
        Integration::RiemannTrapezoid,
    ];

    /// The path points `alpha` and their weights for `n` steps.
    pub fn nodes(self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let min = if self == Integration::GaussLegendre {
            1
        } else {
            2
        };
        if n > MAX_STEPS {
            return Err(Error::param(
                "integration steps",
                format!("{n} is more than the {MAX_STEPS} supported"),
            ));
        }
        if n < min {
            return Err(Error::param(
                "integration steps",
                format!(
                    "{} needs at least {min} step{}, got {n}",
                    self.name(),
                    if min == 1 { "" } else { "s" }
                ),
            ));
        }
        let nf = n as f64;
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            (0..n)
                .map(|i| a + (b - a) * i as f64 / (nf - 1.0))
                .collect()
        };
        Ok(match self {
            Integration::GaussLegendre => {
                let (x, w) = gauss_legendre(n);
                (
                    x.iter().map(|v| 0.5 * (1.0 + v)).collect(),
                    w.iter().map(|v| 0.5 * v).collect(),
                )
            }
            Integration::RiemannLeft => (linspace(0.0, 1.0 - 1.0 / nf), vec![1.0 / nf; n]),
            Integration::RiemannRight => (linspace(1.0 / nf, 1.0), vec![1.0 / nf; n]),
            Integration::RiemannMiddle => (
                linspace(1.0 / (2.0 * nf), 1.0 - 1.0 / (2.0 * nf)),
                vec![1.0 / nf; n],
            ),
            Integration::RiemannTrapezoid => {
                let mut w = vec![1.0 / nf; n];
                w[0] /= 2.0;
                w[n - 1] /= 2.0;
                (linspace(0.0, 1.0), w)
            }
        })
    }
}

impl std::str::FromStr for Integration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Integration::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::param(
                    "integration method",
                    format!(
                        "unknown `{s}`; valid: {}",
                        Integration::ALL.map(|m| m.name()).join(", ")
                    ),
                )
            })
    }
}

/// Gauss-Legendre nodes and weights on `[-1, 1]`, ascending (numpy's `leggauss`):
/// Newton's method on the Legendre polynomial from Chebyshev-like starting points.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            // P_n(z) and P_n'(z) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let kf = k as f64;
                let p2 = ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 1 { z } else { p1 };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pn1) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                break;
            }
        }
        let wi = 2.0 / ((1.0 - z * z) * dp * dp);
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = wi;
        w[n - 1 - i] = wi;
    }
    (x, w)
}

/// Integrated Gradients (Sundararajan et al. 2017): `(x - b) * integral_0^1
/// dS/dI(b + a (x - b)) da`, `(N, C, H, W)`, the integral approximated by `steps`
/// points of an [`Integration`] rule. Captum's `IntegratedGradients` with the same
/// baseline, steps and method. Completeness: the attributions sum to
/// `S(x) - S(b)` up to the quadrature's error.
///
/// The path points of all items run as one stacked batch, `max_batch` rows per
/// backward pass (default 64); a top-predicted target is pinned to the classes at
/// the input, so every point explains the same class.
#[derive(Debug, Clone)]
pub struct IntegratedGradients {
    steps: usize,
    method: Integration,
    baseline: f64,
    max_batch: usize,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        IntegratedGradients {
            steps: 50,
            method: Integration::GaussLegendre,
            baseline: 0.0,
            max_batch: 64,
        }
    }
}

impl IntegratedGradients {
    /// 50 Gauss-Legendre steps from a zero baseline (Captum's defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Path points.
    pub fn steps(mut self, n: usize) -> Self {
        self.steps = n;
        self
    }

    /// The quadrature rule.
    pub fn method(mut self, m: Integration) -> Self {
        self.method = m;
        self
    }

    /// A constant baseline (in the model's input space).
    pub fn baseline(mut self, v: f64) -> Self {
        self.baseline = v;
        self
    }

    /// The constant baseline the path starts from.
    pub fn baseline_value(&self) -> f64 {
        self.baseline
    }

    /// At most `n` path points per backward pass.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
}

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for IntegratedGradients {
    fn name(&self) -> &'static str {
        "integrated-gradients"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.max_batch == 0 {
            return Err(Error::param(
                "integrated gradients max batch",
                "must be positive",
            ));
        }
        if !self.baseline.is_finite() {
            return Err(Error::param(
                "baseline",
                format!("{} is not finite", self.baseline),
            ));
        }
        let (alphas, weights) = self.method.nodes(self.steps)?;
        let scores = model.forward(input)?;
        let target = target.pinned(scores.view())?;
        let resolved = target.resolve(scores.view())?;
        let (n, c, h, w) = input.dim();
        let base = F::of(self.baseline);
        let rows: Vec<(usize, usize)> = (0..alphas.len())
            .flat_map(|i| (0..n).map(move |b| (i, b)))
            .collect();
        // Accumulated in f64: 50 weighted f32 gradients summed in f32 drift by ~1e-4
        // of the map's range, the size of the parity tolerance.
        let mut total = Array4::<f64>::zeros((n, c, h, w));
        crate::parts::check_batch_size(
            self.max_batch.min(rows.len()),
            c * h * w,
            "integrated gradients batch",
        )?;
        for chunk in rows.chunks(self.max_batch) {
            let mut batch = Array4::<F>::zeros((chunk.len(), c, h, w));
            for (j, &(i, b)) in chunk.iter().enumerate() {
                let a = F::of(alphas[i]);
                batch
                    .index_axis_mut(Axis(0), j)
                    .zip_mut_with(&input.index_axis(Axis(0), b), |d, &x| {
                        *d = base + a * (x - base)
                    });
            }
            let items: Vec<usize> = chunk.iter().map(|&(_, b)| b).collect();
            let t = target.for_items(&items, n)?;
            let req = BackwardRequest::input_gradient(batch.view(), &t, Rectifier::Gradient);
            let out = model.backward_items(&req, &items)?;
            let g = out.input_gradient()?;
            for (j, &(i, b)) in chunk.iter().enumerate() {
                let wi = weights[i];
                total
                    .index_axis_mut(Axis(0), b)
                    .zip_mut_with(&g.index_axis(Axis(0), j), |t, &v| *t += wi * v.as_f64());
            }
        }
        let mut values = Array4::<F>::zeros((n, c, h, w));
        for b in 0..n {
            ndarray::Zip::from(values.slice_mut(s![b, .., .., ..]))
                .and(total.slice(s![b, .., .., ..]))
                .and(input.index_axis(Axis(0), b))
                .for_each(|v, &t, &x| *v = F::of(t * (x - base).as_f64()));
        }
        Ok(AttributionMap {
            values: values.into_dyn(),
            layout: MapLayout::Input,
            classes: resolved.classes,
            scores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_numpy() {
        // numpy.polynomial.legendre.leggauss(3): +-sqrt(3/5), 0; weights 5/9, 8/9.
        let (x, w) = gauss_legendre(3);
        let r = (0.6f64).sqrt();
        for (a, b) in x.iter().zip([-r, 0.0, r]) {
            assert!((a - b).abs() < 1e-15);
        }
        for (a, b) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((a - b).abs() < 1e-15);
        }
        // 50 nodes integrate x^99 exactly: integral over [-1, 1] of x^98 is 2/99.
        let (x, w) = gauss_legendre(50);
        let s: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(98)).sum();
        assert!((s - 2.0 / 99.0).abs() < 1e-14, "{s}");
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-13);
        let (x1, w1) = gauss_legendre(1);
        assert_eq!((x1, w1), (vec![0.0], vec![2.0]));
    }

    #[test]
    fn riemann_rules_match_captum() {
        let (a, w) = Integration::RiemannTrapezoid.nodes(4).unwrap();
        assert_eq!(a, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(w, vec![0.125, 0.25, 0.25, 0.125]);
        let (a, _) = Integration::RiemannMiddle.nodes(4).unwrap();
        assert_eq!(a, vec![0.125, 0.375, 0.625, 0.875]);
        assert!(Integration::RiemannLeft.nodes(1).is_err());
        assert_eq!(
            "simpson".parse::<Integration>().unwrap_err().to_string(),
            "invalid integration method: unknown `simpson`; valid: gausslegendre, riemann_left, riemann_right, riemann_middle, riemann_trapezoid"
        );
    }
}
