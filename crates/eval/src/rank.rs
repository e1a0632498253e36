//! Spearman's rank correlation: the Grad-CAM paper's faithfulness measure (Sec. 5.3:
//! a method's map against occlusion's, per image), and Adebayo et al.'s similarity of
//! maps before and after randomising a model. Ties get their average rank, as
//! `scipy.stats.spearmanr` gives them.

use attrib_core::{Error, Result};

/// The ranks of `v` (1-based), ties averaged.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share the mean of ranks i + 1 ..= j + 1.
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = mean;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation of `a` and `b`. Undefined (an error, not a number made up)
/// when either is constant, the lengths differ, fewer than two values are given, or
/// a value is not finite.
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::shape("correlated values", a.len(), b.len()));
    }
    if a.len() < 2 {
        return Err(Error::param("correlation", "needs at least two values"));
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::param(
            "correlation",
            format!("value {v} is not finite"),
        ));
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(Error::param(
            "correlation",
            "one of the two is constant: the correlation is undefined",
        ));
    }
    Ok((sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation of `a` and `b` (Pearson's of their ranks, ties
/// averaged); undefined cases are errors, as for [`pearson`].
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::shape("correlated values", a.len(), b.len()));
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::param(
            "correlation",
            format!("value {v} is not finite"),
        ));
    }
    pearson(&ranks(a), &ranks(b))
}

/// [`spearman`], with `None` where it is undefined because `a` or `b` is constant (a
/// map with nothing in it, such as Grad-CAM's all-zero map of a randomised model):
/// a result to record, where a length mismatch or a non-finite value stays an error.
pub fn spearman_defined(a: &[f64], b: &[f64]) -> Result<Option<f64>> {
    let constant = |v: &[f64]| v.iter().all(|&x| x == v[0]);
    if a.len() == b.len() && a.len() >= 2 && (constant(a) || constant(b)) {
        if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
            return Err(Error::param(
                "correlation",
                format!("value {v} is not finite"),
            ));
        }
        return Ok(None);
    }
    spearman(a, b).map(Some)
}
