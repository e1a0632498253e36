//! The model-randomisation sanity checks of Adebayo et al. ("Sanity Checks for
//! Saliency Maps", NeurIPS 2018): a method's map on a trained model against its maps
//! after re-drawing layers at random, from the top down, either cumulatively
//! (cascading: the top layer, then the top two, ...) or one at a time (independent).
//! A method whose maps stay alike does not depend on what the model learned. Each
//! step's similarity to the original map: Spearman's rank correlation of the values
//! and of their absolute values, and SSIM and HOG similarity (Pearson's correlation
//! of the histograms of oriented gradients, scikit-image's defaults: 9 bins, 8-pixel
//! cells, 3x3 blocks) of the maps each scaled to `[0, 1]`, as in the paper's figures.
//!
//! The check is independent of the backend: `build` returns the model with the named
//! layers randomised (`attrib_dfdx::weights::randomised` re-draws a state dict's
//! modules), `explain` its map.

use attrib_core::{Error, Result};
use ndarray::{Array2, ArrayView2};

use crate::rank::{pearson, spearman_defined};
use crate::similarity::{hog, ssim};

/// Which layers each step randomises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Randomisation {
    /// Step `k`: the first `k + 1` layers of the list (top down), cumulatively.
    Cascading,
    /// Step `k`: layer `k` alone.
    Independent,
}

impl Randomisation {
    /// The layers each step randomises, for `layers` listed top down.
    pub fn steps(self, layers: &[String]) -> Vec<Vec<String>> {
        (0..layers.len())
            .map(|k| match self {
                Randomisation::Cascading => layers[..=k].to_vec(),
                Randomisation::Independent => vec![layers[k].clone()],
            })
            .collect()
    }
}

/// One step's similarities to the original map.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The layers randomised at this step.
    pub randomised: Vec<String>,
    /// Spearman's rank correlation of the maps (`None` where a map is constant and
    /// it is undefined).
    pub spearman: Option<f64>,
    /// Spearman's rank correlation of their absolute values.
    pub spearman_abs: Option<f64>,
    /// SSIM of the maps, each scaled to `[0, 1]` (`None` for maps under 7x7, or a
    /// constant map, where it is undefined).
    pub ssim: Option<f64>,
    /// Pearson's correlation of their HOG features (`None` for maps under 24x24, a
    /// constant map, or constant features).
    pub hog: Option<f64>,
}

/// `map` scaled to `[0, 1]` by its minimum and maximum; `None` when it is constant.
fn unit(map: ArrayView2<f64>) -> Option<Array2<f64>> {
    let (lo, hi) = map
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    (hi > lo).then(|| map.mapv(|v| (v - lo) / (hi - lo)))
}

/// How alike two maps are; each `None` where it is undefined (see [`Step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Spearman's rank correlation.
    pub spearman: Option<f64>,
    /// Spearman's rank correlation of the absolute values.
    pub spearman_abs: Option<f64>,
    /// SSIM of the maps scaled to `[0, 1]`.
    pub ssim: Option<f64>,
    /// Pearson's correlation of their HOG features.
    pub hog: Option<f64>,
}

/// The similarities of `other` to `original`: Spearman, Spearman of the absolute
/// values, SSIM, HOG similarity.
pub fn compare(original: ArrayView2<f64>, other: ArrayView2<f64>) -> Result<Similarity> {
    if original.dim() != other.dim() {
        return Err(Error::shape(
            "maps compared",
            format!("{:?}", original.dim()),
            format!("{:?}", other.dim()),
        ));
    }
    let a: Vec<f64> = original.iter().copied().collect();
    let b: Vec<f64> = other.iter().copied().collect();
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let rho = spearman_defined(&a, &b)?;
    let rho_abs = spearman_defined(&abs(&a), &abs(&b))?;
    let (h, w) = original.dim();
    let (ux, uy) = (unit(original), unit(other));
    let s = match (&ux, &uy) {
        (Some(x), Some(y)) if h >= 7 && w >= 7 => Some(ssim(x.view(), y.view(), 1.0)?),
        _ => None,
    };
    let g = match (&ux, &uy) {
        (Some(x), Some(y)) if h >= 24 && w >= 24 => {
            pearson(&hog(x.view(), 9, 8, 3)?, &hog(y.view(), 9, 8, 3)?).ok()
        }
        _ => None,
    };
    Ok(Similarity {
        spearman: rho,
        spearman_abs: rho_abs,
        ssim: s,
        hog: g,
    })
}

/// Runs the check over `layers` (top down): `build(&[])` is the trained model,
/// `build(names)` the model with `names` randomised; `explain` gives a model's map.
pub fn sanity_check<M, B, X>(
    layers: &[String],
    how: Randomisation,
    build: B,
    explain: X,
) -> Result<Vec<Step>>
where
    B: Fn(&[String]) -> Result<M>,
    X: Fn(&M) -> Result<Array2<f64>>,
{
    if layers.is_empty() {
        return Err(Error::param("sanity check", "no layer to randomise"));
    }
    let original = explain(&build(&[])?)?;
    let mut steps = Vec::with_capacity(layers.len());
    for randomised in how.steps(layers) {
        let map = explain(&build(&randomised)?)?;
        let Similarity {
            spearman,
            spearman_abs,
            ssim,
            hog,
        } = compare(original.view(), map.view())?;
        steps.push(Step {
            randomised,
            spearman,
            spearman_abs,
            ssim,
            hog,
        });
    }
    Ok(steps)
}
