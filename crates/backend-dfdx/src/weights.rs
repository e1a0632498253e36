//! Handing named weights to architecture builders: strictly from a [`WeightMap`] (a
//! missing, extra or mis-shaped tensor is an error naming the key and both shapes),
//! synthesised, or recorded for saving.

use attrib_core::{Error, Result};
pub use attrib_io::{DType, RawTensor, WeightMap};

use crate::Elem;

/// What a parameter is, for sources that synthesise values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A conv or linear weight.
    Weight,
    /// A conv or linear bias.
    Bias,
    /// Batch norm's `weight` (gamma).
    BnWeight,
    /// Batch norm's `bias` (beta).
    BnBias,
    /// Batch norm's `running_mean`.
    BnMean,
    /// Batch norm's `running_var`.
    BnVar,
}

/// Where architecture builders get their parameters from.
pub trait ParamSource<E: Elem> {
    /// The tensor `key` of shape `shape`, flat, row-major.
    fn take(&mut self, key: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<E>>;

    /// The number of classes, read from the classifier weight `key` (its first
    /// dimension) where the source has one.
    fn num_classes(&self, key: &str) -> Result<usize>;

    /// Called once the architecture is built: unused tensors are an error.
    fn finish(&mut self) -> Result<()>;
}

/// A [`WeightMap`] consumed strictly: every tensor taken exactly once, shapes checked.
#[derive(Debug)]
pub struct StrictWeights {
    map: WeightMap,
}

impl StrictWeights {
    /// Wraps a map.
    pub fn new(map: WeightMap) -> Self {
        StrictWeights { map }
    }
}

impl<E: Elem> ParamSource<E> for StrictWeights {
    fn take(&mut self, key: &str, shape: &[usize], _kind: ParamKind) -> Result<Vec<E>> {
        let t = self.map.remove(key).ok_or_else(|| {
            Error::Weights(format!("missing tensor `{key}` (expected shape {shape:?})"))
        })?;
        if t.shape != shape {
            return Err(Error::Weights(format!(
                "tensor `{key}` has shape {:?}, the architecture expects {shape:?}",
                t.shape
            )));
        }
        let expected = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |a, &d| a.checked_mul(d));
        if expected != Some(t.bytes.len()) {
            return Err(Error::Weights(format!("tensor `{key}` is truncated")));
        }
        t.to_vec().map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("tensor `{key}`: {m}")),
            o => o,
        })
    }

    fn num_classes(&self, key: &str) -> Result<usize> {
        match self.map.get(key).map(|t| t.shape.as_slice()) {
            Some([k, ..]) if *k > 0 => Ok(*k),
            Some(s) => Err(Error::Weights(format!(
                "classifier `{key}` has shape {s:?}"
            ))),
            None => Err(Error::Weights(format!(
                "missing tensor `{key}` (the classifier weight)"
            ))),
        }
    }

    fn finish(&mut self) -> Result<()> {
        let extra: Vec<String> = self
            .map
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .cloned()
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            let shapes: Vec<String> = extra
                .iter()
                .map(|k| {
                    format!(
                        "`{k}` {:?}",
                        self.map.get(k).map_or(&[][..], |t| &t.shape[..])
                    )
                })
                .collect();
            Err(Error::Weights(format!(
                "unexpected tensors not used by the architecture: {}",
                shapes.join(", ")
            )))
        }
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Deterministic pseudo-random weights from the key and element index, reproducible
/// bit for bit in numpy (see `tools/reference/synthetic.py`): parity fixtures of
/// full-size architectures without committing their weights, and random-weight
/// networks for benchmarks.
///
/// `u = (splitmix64((fnv1a64(key) ^ seed) + i * 0x9E3779B97F4A7C15) >> 40) / 2^23 - 1`
/// lies in `[-1, 1)`; conv and linear weights are `u * sqrt(6 / fan_in)`, biases
/// `0.1 u`, batch-norm `weight = 1 + 0.25 u`, `bias = 0.1 u`, `running_mean = 0.1 u`,
/// `running_var = 1 + 0.5 u` (all computed in f64, rounded once).
#[derive(Debug, Clone)]
pub struct Synthetic {
    seed: u64,
    num_classes: usize,
}

impl Synthetic {
    /// Synthetic weights with `seed`, and `num_classes` outputs.
    pub fn new(seed: u64, num_classes: usize) -> Self {
        Synthetic { seed, num_classes }
    }

    /// The values for `key` of `shape`, in f64.
    pub fn values(&self, key: &str, shape: &[usize], kind: ParamKind) -> Vec<f64> {
        let base = fnv1a(key) ^ self.seed;
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        (0..n)
            .map(|i| {
                let z = splitmix(base.wrapping_add((i as u64).wrapping_mul(0x9E3779B97F4A7C15)));
                let u = (z >> 40) as f64 / (1u64 << 23) as f64 - 1.0;
                match kind {
                    ParamKind::Weight => u * (6.0 / fan_in as f64).sqrt(),
                    ParamKind::Bias | ParamKind::BnBias | ParamKind::BnMean => 0.1 * u,
                    ParamKind::BnWeight => 1.0 + 0.25 * u,
                    ParamKind::BnVar => 1.0 + 0.5 * u,
                }
            })
            .collect()
    }
}

impl<E: Elem> ParamSource<E> for Synthetic {
    fn take(&mut self, key: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<E>> {
        // Rounded to f32 first, so f32 and f64 networks share the exact same weights
        // (and match the float32 PyTorch reference).
        Ok(self
            .values(key, shape, kind)
            .into_iter()
            .map(|v| E::of(v as f32 as f64))
            .collect())
    }

    fn num_classes(&self, _key: &str) -> Result<usize> {
        Ok(self.num_classes)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Wraps a source and keeps a copy of every tensor taken, so a network built from
/// it can be saved as a state dict (e.g. synthetic weights for tests and benches).
#[derive(Debug)]
pub struct Recording<S> {
    inner: S,
    map: WeightMap,
}

impl<S> Recording<S> {
    /// Records what `inner` hands out.
    pub fn new(inner: S) -> Self {
        Recording {
            inner,
            map: WeightMap::new(),
        }
    }

    /// The tensors taken so far, as float32.
    pub fn into_weights(self) -> WeightMap {
        self.map
    }
}

impl<E: Elem, S: ParamSource<E>> ParamSource<E> for Recording<S> {
    fn take(&mut self, key: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<E>> {
        let v = self.inner.take(key, shape, kind)?;
        let f: Vec<f32> = v.iter().map(|x| x.as_f64() as f32).collect();
        self.map
            .insert(key, RawTensor::from_f32(shape.to_vec(), &f));
        Ok(v)
    }

    fn num_classes(&self, key: &str) -> Result<usize> {
        self.inner.num_classes(key)
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }
}

/// A copy of `map` whose learned parameters under each of `modules` (module paths
/// such as `fc`, `layer4` or `features.28`: the tensors named the path or under it)
/// are re-drawn as [`Synthetic`] draws them with `seed`: Adebayo et al.'s model
/// randomisation ("Sanity Checks for Saliency Maps"). Conv, linear, LSTM and
/// embedding weights and biases and batch norm's `weight` and `bias` are re-drawn;
/// batch norm's running statistics are kept (they are not learned by gradient).
/// A module that names no tensor is an error.
pub fn randomised(map: &WeightMap, modules: &[String], seed: u64) -> Result<WeightMap> {
    let synth = Synthetic::new(seed, 0);
    let under = |key: &str, m: &str| key == m || key.starts_with(&format!("{m}."));
    for m in modules {
        if !map.iter().any(|(k, _)| under(k, m)) {
            return Err(Error::UnknownLayer {
                name: m.clone(),
                valid: map.names(),
            });
        }
    }
    let mut out = WeightMap::new();
    for (key, t) in map.iter() {
        let redraw = modules.iter().any(|m| under(key, m));
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let module = key.strip_suffix(leaf).unwrap_or("");
        let batch_norm = map.get(&format!("{module}running_mean")).is_some();
        let kind = match (leaf, t.shape.len()) {
            ("weight", 1) if batch_norm => Some(ParamKind::BnWeight),
            ("bias", _) if batch_norm => Some(ParamKind::BnBias),
            (l, _) if l.starts_with("bias") => Some(ParamKind::Bias),
            (l, n) if l.starts_with("weight") && n >= 2 => Some(ParamKind::Weight),
            _ => None,
        };
        match kind.filter(|_| redraw) {
            Some(kind) => {
                let v: Vec<f32> = synth
                    .values(key, &t.shape, kind)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect();
                out.insert(key.clone(), RawTensor::from_f32(t.shape.clone(), &v));
            }
            None => out.insert(key.clone(), t.clone()),
        }
    }
    Ok(out)
}
