//! [`WeightMap`]: a state dict's tensors by name, read from safetensors or PyTorch
//! checkpoints (recognised by content) and written as safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use attrib_core::{Error, Result};

use crate::guard::guarded;
use crate::limits::Limits;
use crate::tensors::{DType, RawTensor};

/// The weight formats, as recognised from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors.
    Safetensors,
    /// PyTorch's zip checkpoint (`torch.save` since 1.6).
    Zip,
    /// PyTorch's legacy checkpoint (`_use_new_zipfile_serialization=False`).
    Legacy,
}

impl Format {
    /// The format whose full signature `data` starts with, if any.
    pub fn detect(data: &[u8]) -> Option<Format> {
        if crate::pth::is_zip(data) {
            return Some(Format::Zip);
        }
        if crate::pth::legacy_magic_end(data).is_some() {
            return Some(Format::Legacy);
        }
        let n = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        let fits = n >= 2 && n <= (data.len() - 8) as u64;
        (fits && data[8] == b'{').then_some(Format::Safetensors)
    }
}

fn read_safetensors(data: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    let st = safetensors::SafeTensors::deserialize(data)
        .map_err(|e| Error::Weights(format!("not a valid safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            Ok((
                name,
                RawTensor {
                    dtype: DType::from_safetensors(view.dtype())?,
                    shape: view.shape().to_vec(),
                    bytes: view.data().to_vec(),
                },
            ))
        })
        .collect()
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

    /// Reads safetensors, a zip `.pth`/`.pt` or a legacy `.pth`, recognised by
    /// content, within the default [`Limits`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &Limits::default())
    }

    /// [`WeightMap::load`] within `limits`.
    pub fn load_with(path: &Path, limits: &Limits) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes_with(&data, limits).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses safetensors or PyTorch checkpoint bytes within the default [`Limits`].
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        Self::from_bytes_with(data, &Limits::default())
    }

    /// Parses safetensors or PyTorch checkpoint bytes within `limits`. The format is
    /// recognised by its full signature, never by one byte: a zip starts with
    /// `PK\x03\x04`; safetensors with its header length (little-endian u64) that fits
    /// the file, followed by `{`; the legacy format with the pickled magic number.
    pub fn from_bytes_with(data: &[u8], limits: &Limits) -> Result<Self> {
        let tensors = match Format::detect(data) {
            Some(Format::Zip) | Some(Format::Legacy) => crate::pth::read_state_dict(data, limits)?,
            Some(Format::Safetensors) => guarded("the safetensors reader", Error::Weights, || {
                read_safetensors(data)
            })?,
            None => {
                let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
                return Err(Error::Weights(format!(
                    "unrecognised format: not safetensors, nor a PyTorch checkpoint (zip or legacy); the file starts with [{}]",
                    head.join(" ")
                )));
            }
        };
        let mut map = WeightMap::new();
        for (k, t) in tensors {
            map.insert(k, t);
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

    /// Writes safetensors atomically: a temporary file in the same folder, synced,
    /// renamed over `path`, the folder synced. A failure leaves `path` as it was.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors()?;
        crate::fs::write_atomic(path, |f| {
            use std::io::Write;
            f.write_all(&bytes)
        })
    }

    /// Serialises as a PyTorch checkpoint in the zip format (`torch.save`'s default),
    /// which `torch.load(path, weights_only=True)` reads as an `OrderedDict`.
    pub fn to_pth(&self) -> Result<Vec<u8>> {
        crate::pth_write::write_zip(&self.entries())
    }

    /// Serialises as a PyTorch checkpoint in the legacy non-zip format
    /// (`torch.save(..., _use_new_zipfile_serialization=False)`).
    pub fn to_pth_legacy(&self) -> Result<Vec<u8>> {
        crate::pth_write::write_legacy(&self.entries())
    }

    fn entries(&self) -> Vec<(&String, &RawTensor)> {
        self.tensors.iter().collect()
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// Takes a tensor out of the map.
    pub fn remove(&mut self, name: &str) -> Option<RawTensor> {
        self.tensors.remove(name)
    }

    /// The tensors by name, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &RawTensor)> {
        self.tensors.iter()
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
