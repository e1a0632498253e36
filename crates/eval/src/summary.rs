//! Summaries of per-image scores for a paper's table: the mean with a 95%
//! confidence interval by the percentile bootstrap (Efron & Tibshirani): resample
//! the images with replacement, take each resample's mean, report the 2.5th and
//! 97.5th percentiles of those means. Deterministic for a seed (a 64-bit
//! SplitMix generator), so that a rerun, or the merge of shards, gives the same
//! table.

use attrib_core::{Error, Result};

/// A mean and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The mean over the images.
    pub mean: f64,
    /// 2.5th percentile of the resampled means.
    pub low: f64,
    /// 97.5th percentile of the resampled means.
    pub high: f64,
    /// Images.
    pub n: usize,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The percentile `q` in `[0, 1]` of sorted `v`, linearly interpolated between
/// order statistics (NumPy's default).
fn percentile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < v.len() {
        v[i] + f * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

/// The mean of `values` and its 95% percentile-bootstrap interval from `resamples`
/// resamples drawn with `seed`. No value, no resample, or a non-finite value are
/// errors.
pub fn bootstrap(values: &[f64], resamples: usize, seed: u64) -> Result<Interval> {
    if values.is_empty() || resamples == 0 {
        return Err(Error::param(
            "bootstrap",
            "needs at least one value and one resample",
        ));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::param(
            "bootstrap",
            format!("value {v} is not finite"),
        ));
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut state = seed;
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..n)
                .map(|_| values[(splitmix(&mut state) % n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Ok(Interval {
        mean,
        low: percentile(&means, 0.025),
        high: percentile(&means, 0.975),
        n,
    })
}
