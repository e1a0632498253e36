//! `attrib-dfdx` runs convolutional networks on dfdx 0.13 tensors and its tape and
//! implements attrib's [`Model`](attrib_core::Model) and
//! [`LayerTap`](attrib_core::LayerTap) for them.
//!
//! dfdx's own convolution and pooling exist only behind its `nightly` feature, which
//! no longer builds, so this crate defines them ([`ops`]): host kernels (im2col +
//! gemm 0.19 for convolutions, Winograd F(2x2, 3x3) for 3x3 stride-1 ones
//! ([`winograd`]), direct kernels for depthwise ones) registered on the tape with
//! `Tape::add_backward_op`. Rectifiers take the [`Rectifier`] rule of the
//! pass, so guided backprop and deconvnet reach every ReLU and ReLU6, including
//! reused and residual ones. A pass that only needs a tapped layer starts recording
//! at that layer, so nothing below it is run backwards, and no pass computes weight
//! gradients.
//!
//! [`NetworkBuilder`] assembles networks from named layers (the names are the tap
//! names); [`Arch`] builds the model zoo (ResNet, VGG, AlexNet, EfficientNet-Lite0)
//! from PyTorch state dicts, read from safetensors or directly from `.pth` files
//! by `attrib-io` ([`WeightMap`]). The CPU is the default device. [`gpu`] runs the same
//! networks with CUDA kernels ([`gpu::GpuNetwork`]); the `cuda` feature adds the
//! CUDA driver behind it (`gpu::CudaApi`, cudarc with dynamic loading: no CUDA is
//! needed to build).
//!
//! [`Rectifier`]: attrib_core::Rectifier

mod device;
pub mod gpu;
mod graph;
pub mod kernels;
pub mod ops;
pub mod weights;
pub mod zoo;

pub use kernels::winograd;
pub use zoo::imagenet;

pub use device::{Elem, KernelDevice};
pub use dfdx::tensor::Cpu;
pub use graph::{
    BatchNorm2d, Conv2d, Executor, Head, Identity, Layer, Linear, Network, NetworkBuilder, ValueId,
    WithHead,
};
pub use ops::{Conv2dConfig, Padding, Pool2dConfig};
pub use weights::{ParamKind, ParamSource, Recording, StrictWeights, Synthetic, WeightMap};
pub use zoo::Arch;
