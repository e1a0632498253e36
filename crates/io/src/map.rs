//! [`WeightMap`]: a state dict's tensors by name, read from safetensors or PyTorch
//! checkpoints (recognised by content) and written as safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use attrib_core::{Error, Result};

use crate::tensors::{DType, RawTensor};

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
