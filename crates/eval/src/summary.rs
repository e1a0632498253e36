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
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::param(
            "bootstrap",
            format!("value {v} is not finite"),
        ));
    }
    bootstrap_statistic(values, resamples, seed, |sample| {
        sample.iter().map(|&&v| v).sum::<f64>() / sample.len() as f64
    })
}

/// A statistic of `items` (TorchRay's class-averaged pointing accuracy, say) and
/// its 95% percentile-bootstrap interval: `statistic` of every resample of the items
/// drawn with replacement. Same seed, same draws as [`bootstrap`]. A non-finite
/// statistic is an error.
pub fn bootstrap_statistic<T, S>(
    items: &[T],
    resamples: usize,
    seed: u64,
    statistic: S,
) -> Result<Interval>
where
    S: Fn(&[&T]) -> f64,
{
    if items.is_empty() || resamples == 0 {
        return Err(Error::param(
            "bootstrap",
            "needs at least one value and one resample",
        ));
    }
    let n = items.len();
    let all: Vec<&T> = items.iter().collect();
    let mean = statistic(&all);
    let mut state = seed;
    let mut sample: Vec<&T> = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..n).map(|_| &items[(splitmix(&mut state) % n as u64) as usize]));
        stats.push(statistic(&sample));
    }
    if let Some(v) = std::iter::once(&mean)
        .chain(&stats)
        .find(|v| !v.is_finite())
    {
        return Err(Error::param(
            "bootstrap",
            format!("the statistic came out {v}"),
        ));
    }
    stats.sort_by(f64::total_cmp);
    Ok(Interval {
        mean,
        low: percentile(&stats, 0.025),
        high: percentile(&stats, 0.975),
        n,
    })
}
