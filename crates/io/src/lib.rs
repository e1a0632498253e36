//! `attrib-io` reads and writes the files attrib meets, without depending on any
//! backend: PyTorch checkpoints (`torch.save` of a state dict, zip and legacy formats,
//! read without Python and without executing the pickle) and safetensors into a
//! [`WeightMap`] of [`RawTensor`]s that any backend turns into its own parameters;
//! `.npy` arrays; images. The CLI and every backend share these readers.
//!
//! Every reader is written for files from strangers: the format is recognised by its
//! full signature, every size and offset is checked arithmetic, nothing is allocated
//! on a file's say-so before the file is known to hold it, and what a file may cost
//! is bounded by [`Limits`]. Any input gives a correct result or an [`Error`] naming
//! the problem, never a panic or an abort; third-party decoders run behind a guard
//! that turns their panics into errors.
//!
//! [`Error`]: attrib_core::Error

pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
#[cfg(feature = "images")]
pub mod image;
mod limits;
mod map;
pub mod npy;
mod pth;
mod pth_write;
mod tensors;

pub use limits::Limits;
pub use map::{Format, WeightMap};
pub use tensors::{DType, RawTensor};
