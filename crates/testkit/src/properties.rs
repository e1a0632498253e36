//! The properties, one function each: a method and a case in, an [`Outcome`] out.
//! Each names the paper that states it; checks compare with a relative tolerance,
//! measures return a number.

use attrib_core::resample::resize_bilinear;
use attrib_core::{Attribution, AttributionMap, MapLayout, Model, Result, Target};
use attrib_dfdx::Network;
use attrib_methods::invariants::compare;
use ndarray::{Array2, Array3, Array4, ArrayD, Axis, Ix3, Ix4};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::nets::{Variant, SHIFT};
use crate::strategies::Case;

/// Relative tolerance of the exact properties (f64 networks).
pub const RTOL: f64 = 1e-8;
/// Relative tolerance of completeness: Sundararajan et al. suggest checking the sum
/// within 5% of the score difference (the quadrature's error on piecewise-linear
/// networks).
pub const COMPLETENESS_RTOL: f64 = 0.05;
/// Model randomisation passes when the maps' mean Spearman rank correlation with the
/// original's falls below this.
pub const RANDOMISATION_MAX_RHO: f64 = 0.5;

/// The properties of the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// A batch's maps equal each item's map computed alone.
    BatchEqualsItems,
    /// A one-hot seed on class `c` explains what the class target `c` explains.
    OneHotSeedIsClass,
    /// Linearity in the seed: `A(a s1 + b s2) = a A(s1) + b A(s2)`.
    LinearInSeed,
    /// The same call gives the same map, bit for bit.
    Deterministic,
    /// Completeness (Sundararajan et al. 2017) / summation-to-delta (Shrikumar et
    /// al. 2017), measured: the largest relative gap between the map's sum per item
    /// and `S(x) - S(0)`; passes within [`COMPLETENESS_RTOL`].
    Completeness,
    /// Implementation invariance (Sundararajan et al. 2017): functionally equal
    /// networks (batch norm folded, a convolution split in two, an identity
    /// convolution inserted) give equal maps.
    ImplementationInvariance,
    /// Input invariance (Kindermans et al. 2019): a constant input shift absorbed by
    /// the first layer's bias leaves the map unchanged.
    InputInvariance,
    /// Sensitivity-n (Ancona et al. 2018), measured: the mean Pearson correlation
    /// between the sum of the map over random sets of `n` pixels (n = 1, 4, 16) and
    /// the score drop when those pixels are zeroed.
    SensitivityN,
    /// Model randomisation (Adebayo et al. 2018), measured: the mean Spearman rank
    /// correlation between the map and the map after the top layers are re-drawn;
    /// passes below [`RANDOMISATION_MAX_RHO`].
    ModelRandomisation,
}

impl Property {
    /// Every property, in the order reports list them.
    pub const ALL: [Property; 9] = [
        Property::BatchEqualsItems,
        Property::OneHotSeedIsClass,
        Property::LinearInSeed,
        Property::Deterministic,
        Property::Completeness,
        Property::ImplementationInvariance,
        Property::InputInvariance,
        Property::SensitivityN,
        Property::ModelRandomisation,
    ];

    /// A short column name.
    pub fn short(self) -> &'static str {
        match self {
            Property::BatchEqualsItems => "batch = items",
            Property::OneHotSeedIsClass => "one-hot seed = class",
            Property::LinearInSeed => "linear in seed",
            Property::Deterministic => "deterministic",
            Property::Completeness => "completeness gap",
            Property::ImplementationInvariance => "implementation inv.",
            Property::InputInvariance => "input inv.",
            Property::SensitivityN => "sensitivity-n",
            Property::ModelRandomisation => "randomisation rho",
        }
    }
}

/// The outcome of a property on one case (or, aggregated, on all of them).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The identity held; the largest relative difference.
    Holds {
        /// `max |lhs - rhs| / max |rhs|`.
        worst: f64,
    },
    /// It did not; the largest relative difference and where.
    Fails {
        /// `max |lhs - rhs| / max |rhs|`.
        worst: f64,
        /// The case it failed on.
        case: String,
    },
    /// A measured number (and whether it passes, where the property has a bar).
    Measured {
        /// The value.
        value: f64,
        /// Against the property's bar, if any.
        passes: Option<bool>,
    },
    /// The property does not apply to this method's maps.
    NotApplicable(&'static str),
    /// The method returned an error.
    Errored(String),
}

type Net = Network<f64>;

fn run<A: Attribution<f64, Net> + ?Sized>(
    m: &A,
    net: &Net,
    x: &Array4<f64>,
    t: &Target<f64>,
) -> Result<ArrayD<f64>> {
    Ok(m.attribute(net, x.view(), t)?.values)
}

fn check(worst: f64, tol: f64, case: &Case) -> Outcome {
    if worst <= tol {
        Outcome::Holds { worst }
    } else {
        Outcome::Fails {
            worst,
            case: describe(case),
        }
    }
}

fn relative(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<f64> {
    let c = compare("", a, b)?;
    // All-zero maps on both sides are equal.
    Ok(if c.max_abs_diff <= 1e-14 {
        0.0
    } else {
        c.relative()
    })
}

/// One line naming a case, to reproduce it.
pub fn describe(case: &Case) -> String {
    format!(
        "{:?}, batch {}, target {}",
        case.spec,
        case.input.dim().0,
        match &case.target {
            Target::Class(c) => format!("class {c}"),
            Target::PerSample(v) => format!("per item {v:?}"),
            Target::TopPredicted => "top".into(),
            Target::Seed(_) => "seed".into(),
            _ => "other".into(),
        }
    )
}

/// Evaluates `p` for `method` on `case`.
pub fn evaluate<A: Attribution<f64, Net> + ?Sized>(
    p: Property,
    method: &A,
    case: &Case,
) -> Outcome {
    match evaluate_inner(p, method, case) {
        Ok(o) => o,
        Err(e) => Outcome::Errored(format!("{e} ({})", describe(case))),
    }
}

fn seed_rows(n: usize, k: usize, salt: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(salt);
    Array2::from_shape_simple_fn((n, k), || rng.gen_range(-1.0..1.0))
}

fn evaluate_inner<A: Attribution<f64, Net> + ?Sized>(
    p: Property,
    m: &A,
    case: &Case,
) -> Result<Outcome> {
    let net: Net = case.spec.build()?;
    let (x, t) = (&case.input, &case.target);
    let n = x.dim().0;
    let k = case.spec.classes;
    Ok(match p {
        Property::BatchEqualsItems => {
            let c = attrib_methods::invariants::batch_equals_items(m, &net, x.view(), t)?;
            check(
                if c.max_abs_diff <= 1e-14 {
                    0.0
                } else {
                    c.relative()
                },
                RTOL,
                case,
            )
        }
        Property::OneHotSeedIsClass => {
            let c = attrib_methods::invariants::one_hot_seed_is_class(m, &net, x.view(), 0, k)?;
            check(
                if c.max_abs_diff <= 1e-14 {
                    0.0
                } else {
                    c.relative()
                },
                RTOL,
                case,
            )
        }
        Property::LinearInSeed => {
            let (s1, s2) = (seed_rows(n, k, 1), seed_rows(n, k, 2));
            let both = run(m, &net, x, &Target::Seed(&s1 * 2.0 - &s2 * 0.5))?;
            let a = run(m, &net, x, &Target::Seed(s1))?;
            let b = run(m, &net, x, &Target::Seed(s2))?;
            check(relative(&both, &(a * 2.0 - b * 0.5))?, RTOL, case)
        }
        Property::Deterministic => {
            let a = run(m, &net, x, t)?;
            let b = run(m, &net, x, t)?;
            check(
                if a == b {
                    0.0
                } else {
                    relative(&a, &b)?.max(f64::MIN_POSITIVE)
                },
                0.0,
                case,
            )
        }
        Property::Completeness => {
            let map = m.attribute(&net, x.view(), t)?;
            if matches!(
                map.layout,
                MapLayout::Layer { .. } | MapLayout::LayerChannels { .. }
            ) {
                return Ok(Outcome::NotApplicable("a layer map"));
            }
            let sums = map
                .values
                .to_shape((n, map.values.len() / n))
                .map_err(|e| attrib_core::Error::Backend(e.to_string()))?
                .sum_axis(Axis(1));
            let scores = net.forward(x.view())?;
            let pinned = t.pinned(scores.view())?;
            let zero = Array4::<f64>::zeros(x.dim());
            let at_zero = net.forward(zero.view())?;
            let delta =
                &pinned.resolve(scores.view())?.values - &pinned.resolve(at_zero.view())?.values;
            let scale = delta.iter().fold(0.0f64, |s, v| s.max(v.abs())).max(1e-12);
            let worst = sums
                .iter()
                .zip(&delta)
                .fold(0.0f64, |w, (s, d)| w.max((s - d).abs()))
                / scale;
            Outcome::Measured {
                value: worst,
                passes: Some(worst <= COMPLETENESS_RTOL),
            }
        }
        Property::ImplementationInvariance => {
            let a = run(m, &net, x, t)?;
            let mut worst = 0.0f64;
            for v in [
                Variant::FoldedBatchNorm,
                Variant::SplitConv,
                Variant::InsertedIdentity,
            ] {
                let twin: Net = case.spec.build_variant(v)?;
                worst = worst.max(relative(&run(m, &twin, x, t)?, &a)?);
            }
            check(worst, 1e-7, case)
        }
        Property::InputInvariance => {
            let a = run(m, &net, x, t)?;
            let twin: Net = case.spec.build_variant(Variant::ShiftAbsorbed(SHIFT))?;
            let shifted = x.mapv(|v| v + f64::from(SHIFT) / 100.0);
            check(relative(&run(m, &twin, &shifted, t)?, &a)?, 1e-7, case)
        }
        Property::SensitivityN => Outcome::Measured {
            value: sensitivity_n(m, &net, case)?,
            passes: None,
        },
        Property::ModelRandomisation => {
            let a = run(m, &net, x, t)?;
            let twin: Net = case.spec.build_variant(Variant::RandomizedTop)?;
            let b = run(m, &twin, x, t)?;
            let rho = mean_spearman(&a, &b);
            Outcome::Measured {
                value: rho,
                passes: Some(rho < RANDOMISATION_MAX_RHO),
            }
        }
    })
}

/// A map as one value per input pixel `(N, H, W)`: input-space maps summed over
/// channels, layer maps (channels summed) resized bilinearly.
pub fn per_pixel(map: &AttributionMap<f64>, h: usize, w: usize) -> Result<Array3<f64>> {
    let v = &map.values;
    let bad = |e: ndarray::ShapeError| attrib_core::Error::Backend(e.to_string());
    Ok(match &map.layout {
        MapLayout::Input => v
            .view()
            .into_dimensionality::<Ix4>()
            .map_err(bad)?
            .sum_axis(Axis(1)),
        MapLayout::Pixel => v
            .view()
            .into_dimensionality::<Ix3>()
            .map_err(bad)?
            .to_owned(),
        MapLayout::Layer { .. } => {
            resize_bilinear(v.view().into_dimensionality::<Ix3>().map_err(bad)?, h, w)
        }
        MapLayout::LayerChannels { .. } => {
            let s = v
                .view()
                .into_dimensionality::<Ix4>()
                .map_err(bad)?
                .sum_axis(Axis(1));
            resize_bilinear(s.view(), h, w)
        }
    })
}

fn sensitivity_n<A: Attribution<f64, Net> + ?Sized>(m: &A, net: &Net, case: &Case) -> Result<f64> {
    let (x, t) = (&case.input, &case.target);
    let (n, c, h, w) = x.dim();
    let map = m.attribute(net, x.view(), t)?;
    let a = per_pixel(&map, h, w)?;
    let scores = net.forward(x.view())?;
    let pinned = t.pinned(scores.view())?;
    let base = pinned.resolve(scores.view())?.values;
    let mut rng = ChaCha8Rng::seed_from_u64(case.spec.seed);
    let pixels: Vec<usize> = (0..h * w).collect();
    let mut corrs = Vec::new();
    const SUBSETS: usize = 24;
    for size in [1usize, 4, 16].into_iter().filter(|&s| s < h * w) {
        let subsets: Vec<Vec<usize>> = (0..SUBSETS)
            .map(|_| pixels.choose_multiple(&mut rng, size).copied().collect())
            .collect();
        // Every (item, subset) as one batch.
        let mut batch = Array4::<f64>::zeros((n * SUBSETS, c, h, w));
        for b in 0..n {
            for (s, set) in subsets.iter().enumerate() {
                let mut xi = batch.index_axis_mut(Axis(0), b * SUBSETS + s);
                xi.assign(&x.index_axis(Axis(0), b));
                for &p in set {
                    for ch in 0..c {
                        xi[[ch, p / w, p % w]] = 0.0;
                    }
                }
            }
        }
        let out = net.forward(batch.view())?;
        let rows: Vec<usize> = (0..n)
            .flat_map(|b| std::iter::repeat_n(b, SUBSETS))
            .collect();
        let value = pinned.for_items(&rows, n)?.resolve(out.view())?.values;
        for b in 0..n {
            let drops: Vec<f64> = (0..SUBSETS)
                .map(|s| base[b] - value[b * SUBSETS + s])
                .collect();
            let sums: Vec<f64> = subsets
                .iter()
                .map(|set| set.iter().map(|&p| a[[b, p / w, p % w]]).sum())
                .collect();
            if let Some(r) = pearson(&sums, &drops) {
                corrs.push(r);
            }
        }
    }
    Ok(if corrs.is_empty() {
        0.0
    } else {
        corrs.iter().sum::<f64>() / corrs.len() as f64
    })
}

/// Pearson's correlation, `None` when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    let scale = (va * vb).sqrt();
    (scale > 1e-24 * (1.0 + va + vb)).then(|| cov / scale)
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (ties averaged), `None` when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&ranks(a), &ranks(b))
}

/// The mean over items of the maps' Spearman correlation; a constant map against a
/// varying one counts as 0, two constant maps as 1.
fn mean_spearman(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    let rhos: Vec<f64> = a
        .outer_iter()
        .zip(b.outer_iter())
        .map(|(x, y)| {
            let (x, y): (Vec<f64>, Vec<f64>) =
                (x.iter().copied().collect(), y.iter().copied().collect());
            spearman(&x, &y).unwrap_or(if x == y { 1.0 } else { 0.0 })
        })
        .collect();
    rhos.iter().sum::<f64>() / rhos.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        // Monotone but not linear: Spearman 1.
        assert!(
            (spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]).unwrap() - 1.0).abs() < 1e-12
        );
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    }
}
