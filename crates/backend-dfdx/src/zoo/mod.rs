//! The paper's model families with PyTorch `state_dict` names: torchvision's
//! `resnet18/34/50`, `vgg16`, `vgg16_bn`, `alexnet`, and EfficientNet-Lite0 as the
//! `efficientnet-lite-pytorch` package defines it. Tap names are the PyTorch module
//! paths. Where PyTorch reuses one ReLU module several times in a block, the uses
//! before the last get a numbered name (`layer1.0.relu1`); the last keeps the
//! module's name and the block's (`layer1.0.relu`, `layer1.0`).
//!
//! Beyond classifiers, the CNN+LSTM family: [`show_and_tell`] (captioning, the
//! PyTorch tutorial's encoder and decoder) and [`vqa`] ("deeper LSTM Q + norm I"),
//! each a network for the image ([`trunks`]) and a head for the rest, conditioned
//! on the captions or questions ([`text`]) to make an image-in, scores-out model.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use attrib_core::{Error, Result};

mod alexnet;
pub mod densecap;
mod efficientnet;
pub mod imagenet;
mod mobilenet;
mod params;
mod resnet;
pub mod show_and_tell;
pub mod text;
pub mod trunks;
mod vgg;
pub mod vqa;

use alexnet::alexnet;
use efficientnet::efficientnet_lite0;
use mobilenet::mobilenet_v2;
use params::Params;
use resnet::resnet;
use vgg::vgg16;

use crate::weights::{ParamSource, Recording, StrictWeights, Synthetic, WeightMap};
use crate::{Cpu, Elem, KernelDevice, Network, NetworkBuilder};

/// A supported architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// torchvision `resnet18`.
    Resnet18,
    /// torchvision `resnet34`.
    Resnet34,
    /// torchvision `resnet50`.
    Resnet50,
    /// torchvision `vgg16`.
    Vgg16,
    /// torchvision `vgg16_bn`.
    Vgg16Bn,
    /// torchvision `alexnet`.
    Alexnet,
    /// EfficientNet-Lite0 (`efficientnet-lite-pytorch`'s module names).
    EfficientnetLite0,
    /// torchvision `mobilenet_v2`.
    MobilenetV2,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 8] = [
        Arch::Resnet18,
        Arch::Resnet34,
        Arch::Resnet50,
        Arch::Vgg16,
        Arch::Vgg16Bn,
        Arch::Alexnet,
        Arch::EfficientnetLite0,
        Arch::MobilenetV2,
    ];

    /// The name the CLI uses.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::Vgg16 => "vgg16",
            Arch::Vgg16Bn => "vgg16_bn",
            Arch::Alexnet => "alexnet",
            Arch::EfficientnetLite0 => "efficientnet-lite0",
            Arch::MobilenetV2 => "mobilenet_v2",
        }
    }

    /// The classifier weight whose first dimension is the number of classes.
    fn classifier_key(self) -> &'static str {
        match self {
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => "fc.weight",
            Arch::Vgg16 | Arch::Vgg16Bn | Arch::Alexnet => "classifier.6.weight",
            Arch::EfficientnetLite0 => "_fc.weight",
            Arch::MobilenetV2 => "classifier.1.weight",
        }
    }

    /// Builds the network at its nominal 224x224 input, taking parameters from `src`.
    pub fn build<E: Elem>(self, src: &mut dyn ParamSource<E>) -> Result<Network<E>> {
        self.build_on(src, Cpu::default())
    }

    /// [`Arch::build`] on another device (the `cuda` feature's `Cuda`).
    pub fn build_on<E: Elem, D: KernelDevice<E>>(
        self,
        src: &mut dyn ParamSource<E>,
        device: D,
    ) -> Result<Network<E, D>> {
        let classes = src.num_classes(self.classifier_key())?;
        let mut b = NetworkBuilder::new([3, 224, 224]);
        let mut p = Params { src, b: &mut b };
        match self {
            Arch::Resnet18 => resnet(&mut p, [2, 2, 2, 2], false, classes)?,
            Arch::Resnet34 => resnet(&mut p, [3, 4, 6, 3], false, classes)?,
            Arch::Resnet50 => resnet(&mut p, [3, 4, 6, 3], true, classes)?,
            Arch::Vgg16 => vgg16(&mut p, false, classes)?,
            Arch::Vgg16Bn => vgg16(&mut p, true, classes)?,
            Arch::Alexnet => alexnet(&mut p, classes)?,
            Arch::EfficientnetLite0 => efficientnet_lite0(&mut p, classes)?,
            Arch::MobilenetV2 => mobilenet_v2(&mut p, classes)?,
        }
        b.build_on(device)
    }

    /// Builds from a state dict, strictly: every tensor used, shapes checked.
    pub fn from_weights<E: Elem>(self, map: WeightMap) -> Result<Network<E>> {
        let mut src = StrictWeights::new(map);
        let net = self.build(&mut src)?;
        ParamSource::<E>::finish(&mut src)?;
        Ok(net)
    }

    /// Loads safetensors or a PyTorch checkpoint and builds.
    pub fn load<E: Elem>(self, path: &Path) -> Result<Network<E>> {
        self.from_file_weights(WeightMap::load(path)?, path)
    }

    /// [`Arch::from_weights`] of `map`, read from `path`: a misfit names the file.
    pub fn from_file_weights<E: Elem>(self, map: WeightMap, path: &Path) -> Result<Network<E>> {
        self.from_weights(map).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!(
                "{} does not fit {}: {m}",
                path.display(),
                self.name()
            )),
            o => o,
        })
    }

    /// The state dict of [`Arch::synthetic`], with PyTorch's key names.
    pub fn synthetic_weights(self, seed: u64, num_classes: usize) -> Result<WeightMap> {
        let mut rec = Recording::new(Synthetic::new(seed, num_classes));
        self.build::<f32>(&mut rec)?;
        Ok(rec.into_weights())
    }

    /// A network with deterministic pseudo-random weights (see [`Synthetic`]).
    pub fn synthetic<E: Elem>(self, seed: u64, num_classes: usize) -> Result<Network<E>> {
        self.build(&mut Synthetic::new(seed, num_classes))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Arch::ALL
            .into_iter()
            .find(|a| a.name().replace('_', "-") == norm)
            .ok_or_else(|| {
                Error::param(
                    "architecture",
                    format!(
                        "unknown `{s}`; valid: {}",
                        Arch::ALL.map(|a| a.name()).join(", ")
                    ),
                )
            })
    }
}
