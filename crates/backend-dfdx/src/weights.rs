//! Named weights: loading safetensors and PyTorch checkpoints, converting between
//! them, and handing tensors to architecture builders with strict checking (a
//! missing, extra or mis-shaped tensor is an error naming the key and both shapes).

use std::collections::BTreeMap;
use std::path::Path;

use attrib_core::{Error, Result};

use crate::Elem;

/// Element types found in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            DType::F32 => S::F32,
            DType::F64 => S::F64,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I64 => S::I64,
            DType::I32 => S::I32,
            DType::I16 => S::I16,
            DType::I8 => S::I8,
            DType::U8 => S::U8,
            DType::Bool => S::BOOL,
        }
    }

    fn from_safetensors(d: safetensors::Dtype) -> Result<Self> {
        use safetensors::Dtype as S;
        Ok(match d {
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I64 => DType::I64,
            S::I32 => DType::I32,
            S::I16 => DType::I16,
            S::I8 => DType::I8,
            S::U8 => DType::U8,
            S::BOOL => DType::Bool,
            other => {
                return Err(Error::Weights(format!(
                    "unsupported safetensors dtype {other:?}"
                )))
            }
        })
    }
}

/// A tensor's little-endian bytes, dtype and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Contiguous little-endian data.
    pub bytes: Vec<u8>,
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

impl RawTensor {
    /// The values as `E`, converting floating types; integer tensors are refused.
    pub fn to_vec<E: Elem>(&self) -> Result<Vec<E>> {
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| E::of(f32::from_le_bytes(c.try_into().expect("4")) as f64))
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| E::of(f64::from_le_bytes(c.try_into().expect("8"))))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| E::of(f16_to_f64(u16::from_le_bytes([c[0], c[1]]))))
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| {
                    E::of(f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                })
                .collect(),
            other => {
                return Err(Error::Weights(format!(
                    "expected a floating-point tensor, found {other:?}"
                )))
            }
        })
    }

    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        RawTensor {
            dtype: DType::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Weights by name, as a PyTorch `state_dict` names them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightMap {
    tensors: BTreeMap<String, RawTensor>,
}

impl WeightMap {
    /// An empty map.
    pub fn new() -> Self {
        WeightMap::default()
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: RawTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Reads safetensors, a zip `.pth`/`.pt` or a legacy `.pth`, by content.
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&data).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses safetensors or PyTorch checkpoint bytes.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        if data.starts_with(b"PK\x03\x04") || data.first() == Some(&0x80) {
            let mut map = WeightMap::new();
            for (k, t) in crate::pth::read_state_dict(data)? {
                map.insert(k, t);
            }
            return Ok(map);
        }
        let st = safetensors::SafeTensors::deserialize(data).map_err(|e| {
            Error::Weights(format!("not a safetensors file or PyTorch checkpoint: {e}"))
        })?;
        let mut map = WeightMap::new();
        for (name, view) in st.tensors() {
            map.insert(
                name,
                RawTensor {
                    dtype: DType::from_safetensors(view.dtype())?,
                    shape: view.shape().to_vec(),
                    bytes: view.data().to_vec(),
                },
            );
        }
        Ok(map)
    }

    /// Serialises as safetensors.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                safetensors::tensor::TensorView::new(
                    t.dtype.to_safetensors(),
                    t.shape.clone(),
                    &t.bytes,
                )
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Weights(format!("`{k}`: {e}")))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize(views, None).map_err(|e| Error::Weights(e.to_string()))
    }

    /// Writes safetensors atomically (temporary file, then rename).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors()?;
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::write(&tmp, bytes).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

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
        let t = self.map.tensors.remove(key).ok_or_else(|| {
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
        match self.map.tensors.get(key).map(|t| t.shape.as_slice()) {
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
            .tensors
            .keys()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .cloned()
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            let shapes: Vec<String> = extra
                .iter()
                .map(|k| format!("`{k}` {:?}", self.map.tensors[k].shape))
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
