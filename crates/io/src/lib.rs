//! `attrib-io` reads and writes the files attrib meets, without depending on any
//! backend: PyTorch checkpoints (`torch.save` of a state dict, zip and legacy formats,
//! read without Python and without executing the pickle) and safetensors, into a
//! [`WeightMap`] of [`RawTensor`]s that any backend turns into its own parameters.
//! The CLI and every backend share these readers.

mod map;
mod pth;
mod tensors;

pub use map::WeightMap;
pub use tensors::{DType, RawTensor};
