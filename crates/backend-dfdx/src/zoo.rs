//! The paper's model families with PyTorch `state_dict` names: torchvision's
//! `resnet18/34/50`, `vgg16`, `vgg16_bn`, `alexnet`, and EfficientNet-Lite0 as the
//! `efficientnet-lite-pytorch` package defines it. Tap names are the PyTorch module
//! paths. Where PyTorch reuses one ReLU module several times in a block, the uses
//! before the last get a numbered name (`layer1.0.relu1`); the last keeps the
//! module's name and the block's (`layer1.0.relu`, `layer1.0`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use attrib_core::{Error, Result};

use crate::weights::{ParamKind, ParamSource, Recording, StrictWeights, Synthetic, WeightMap};
use crate::{
    BatchNorm2d, Conv2d, Conv2dConfig, Cpu, Elem, KernelDevice, Linear, Network, NetworkBuilder,
    Padding, Pool2dConfig,
};

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
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 7] = [
        Arch::Resnet18,
        Arch::Resnet34,
        Arch::Resnet50,
        Arch::Vgg16,
        Arch::Vgg16Bn,
        Arch::Alexnet,
        Arch::EfficientnetLite0,
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
        }
    }

    /// The classifier weight whose first dimension is the number of classes.
    fn classifier_key(self) -> &'static str {
        match self {
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => "fc.weight",
            Arch::Vgg16 | Arch::Vgg16Bn | Arch::Alexnet => "classifier.6.weight",
            Arch::EfficientnetLite0 => "_fc.weight",
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
        self.from_weights(WeightMap::load(path)?)
            .map_err(|e| match e {
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

/// A builder plus the parameter source, with helpers that read each layer's tensors
/// under its full module path.
struct Params<'a, E: Elem> {
    src: &'a mut dyn ParamSource<E>,
    b: &'a mut NetworkBuilder<E>,
}

impl<E: Elem> Params<'_, E> {
    fn take(&mut self, name: &str, leaf: &str, shape: &[usize], kind: ParamKind) -> Result<Vec<E>> {
        self.src
            .take(&format!("{}.{leaf}", self.b.path(name)), shape, kind)
    }

    fn conv(&mut self, name: &str, shape: [usize; 4], bias: bool, cfg: Conv2dConfig) -> Result<()> {
        let w = self.take(name, "weight", &shape, ParamKind::Weight)?;
        let b = if bias {
            Some(self.take(name, "bias", &[shape[0]], ParamKind::Bias)?)
        } else {
            None
        };
        self.b.conv2d(name, Conv2d::from_vec(w, shape, b, cfg)?)?;
        Ok(())
    }

    fn bn(&mut self, name: &str, c: usize, eps: f64) -> Result<()> {
        let g = self.take(name, "weight", &[c], ParamKind::BnWeight)?;
        let be = self.take(name, "bias", &[c], ParamKind::BnBias)?;
        let m = self.take(name, "running_mean", &[c], ParamKind::BnMean)?;
        let v = self.take(name, "running_var", &[c], ParamKind::BnVar)?;
        self.b
            .batch_norm(name, BatchNorm2d::new(&g, &be, &m, &v, eps)?)?;
        Ok(())
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<()> {
        let w = self.take(name, "weight", &[out, inp], ParamKind::Weight)?;
        let b = self.take(name, "bias", &[out], ParamKind::Bias)?;
        self.b
            .linear(name, Linear::from_vec(w, [out, inp], Some(b))?)?;
        Ok(())
    }

    /// Runs `f` inside the builder scope `name`.
    fn scope(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Params<'_, E>) -> Result<()>,
    ) -> Result<()> {
        let src = &mut *self.src;
        self.b.scope(name, |b| f(&mut Params { src, b }))?;
        Ok(())
    }
}

fn conv_cfg(stride: usize, pad: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride: [stride, stride],
        padding: Padding::symmetric(pad),
        ..Conv2dConfig::default()
    }
}

const TORCH_BN_EPS: f64 = 1e-5;

fn resnet<E: Elem>(
    p: &mut Params<'_, E>,
    blocks: [usize; 4],
    bottleneck: bool,
    classes: usize,
) -> Result<()> {
    p.conv("conv1", [64, 3, 7, 7], false, conv_cfg(2, 3))?;
    p.bn("bn1", 64, TORCH_BN_EPS)?;
    p.b.relu("relu")?;
    p.b.max_pool("maxpool", Pool2dConfig::new(3, 2, 1))?;
    let expansion = if bottleneck { 4 } else { 1 };
    let mut inplanes = 64;
    for (li, (&n, planes)) in blocks.iter().zip([64usize, 128, 256, 512]).enumerate() {
        let stride = if li == 0 { 1 } else { 2 };
        p.scope(&format!("layer{}", li + 1), |p| {
            for bi in 0..n {
                let s = if bi == 0 { stride } else { 1 };
                let inp = inplanes;
                p.scope(&bi.to_string(), |p| {
                    let skip = p.b.current();
                    if bottleneck {
                        p.conv("conv1", [planes, inp, 1, 1], false, conv_cfg(1, 0))?;
                        p.bn("bn1", planes, TORCH_BN_EPS)?;
                        p.b.relu("relu1")?;
                        p.conv("conv2", [planes, planes, 3, 3], false, conv_cfg(s, 1))?;
                        p.bn("bn2", planes, TORCH_BN_EPS)?;
                        p.b.relu("relu2")?;
                        p.conv("conv3", [planes * 4, planes, 1, 1], false, conv_cfg(1, 0))?;
                        p.bn("bn3", planes * 4, TORCH_BN_EPS)?;
                    } else {
                        p.conv("conv1", [planes, inp, 3, 3], false, conv_cfg(s, 1))?;
                        p.bn("bn1", planes, TORCH_BN_EPS)?;
                        p.b.relu("relu1")?;
                        p.conv("conv2", [planes, planes, 3, 3], false, conv_cfg(1, 1))?;
                        p.bn("bn2", planes, TORCH_BN_EPS)?;
                    }
                    let main = p.b.current();
                    let out = planes * expansion;
                    let short = if s != 1 || inp != out {
                        p.b.set_current(skip);
                        p.conv("downsample.0", [out, inp, 1, 1], false, conv_cfg(s, 0))?;
                        p.bn("downsample.1", out, TORCH_BN_EPS)?;
                        p.b.current()
                    } else {
                        skip
                    };
                    p.b.set_current(main);
                    p.b.add("add", short)?;
                    p.b.relu("relu")?;
                    Ok(())
                })?;
                inplanes = planes * expansion;
            }
            Ok(())
        })?;
    }
    p.b.global_avg_pool("avgpool")?;
    p.b.flatten("flatten")?;
    p.linear("fc", classes, 512 * expansion)
}

fn vgg16<E: Elem>(p: &mut Params<'_, E>, batch_norm: bool, classes: usize) -> Result<()> {
    const CFG: [usize; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut i = 0;
    let mut c_in = 3;
    p.scope("features", |p| {
        for &c in &CFG {
            if c == 0 {
                p.b.max_pool(&i.to_string(), Pool2dConfig::new(2, 2, 0))?;
                i += 1;
                continue;
            }
            p.conv(&i.to_string(), [c, c_in, 3, 3], true, conv_cfg(1, 1))?;
            i += 1;
            if batch_norm {
                p.bn(&i.to_string(), c, TORCH_BN_EPS)?;
                i += 1;
            }
            p.b.relu(&i.to_string())?;
            i += 1;
            c_in = c;
        }
        Ok(())
    })?;
    p.b.adaptive_avg_pool("avgpool", [7, 7])?;
    p.b.flatten("flatten")?;
    p.scope("classifier", |p| {
        p.linear("0", 4096, 512 * 7 * 7)?;
        p.b.relu("1")?.dropout("2")?;
        p.linear("3", 4096, 4096)?;
        p.b.relu("4")?.dropout("5")?;
        p.linear("6", classes, 4096)
    })
}

fn alexnet<E: Elem>(p: &mut Params<'_, E>, classes: usize) -> Result<()> {
    p.scope("features", |p| {
        p.conv("0", [64, 3, 11, 11], true, conv_cfg(4, 2))?;
        p.b.relu("1")?.max_pool("2", Pool2dConfig::new(3, 2, 0))?;
        p.conv("3", [192, 64, 5, 5], true, conv_cfg(1, 2))?;
        p.b.relu("4")?.max_pool("5", Pool2dConfig::new(3, 2, 0))?;
        p.conv("6", [384, 192, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("7")?;
        p.conv("8", [256, 384, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("9")?;
        p.conv("10", [256, 256, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("11")?.max_pool("12", Pool2dConfig::new(3, 2, 0))?;
        Ok(())
    })?;
    p.b.adaptive_avg_pool("avgpool", [6, 6])?;
    p.b.flatten("flatten")?;
    p.scope("classifier", |p| {
        p.b.dropout("0")?;
        p.linear("1", 4096, 256 * 6 * 6)?;
        p.b.relu("2")?.dropout("3")?;
        p.linear("4", 4096, 4096)?;
        p.b.relu("5")?;
        p.linear("6", classes, 4096)
    })
}

/// TensorFlow "same" padding fixed for the layer's nominal input size, as the
/// package's `Conv2dStaticSamePadding` computes it for 224x224 images.
fn static_same(size: usize, k: usize, s: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride: [s, s],
        padding: Padding::Explicit(Padding::Same.resolve(size, size, [k, k], [s, s], [1, 1])),
        ..Conv2dConfig::default()
    }
}

fn efficientnet_lite0<E: Elem>(p: &mut Params<'_, E>, classes: usize) -> Result<()> {
    const EPS: f64 = 1e-3;
    // (repeats, kernel, stride, expand, in, out): efficientnet_lite_builder's lite0.
    const BLOCKS: [(usize, usize, usize, usize, usize, usize); 7] = [
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    ];
    let mut size = 224;
    p.conv("_conv_stem", [32, 3, 3, 3], false, static_same(size, 3, 2))?;
    size = size.div_ceil(2);
    p.bn("_bn0", 32, EPS)?;
    p.b.relu6("_swish0")?;
    let mut idx = 0;
    for (repeats, k, stride, expand, c_in, c_out) in BLOCKS {
        for r in 0..repeats {
            let (inp, s) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
            let oup = inp * expand;
            let block_size = size;
            p.scope(&format!("_blocks.{idx}"), |p| {
                let skip = p.b.current();
                if expand != 1 {
                    p.conv(
                        "_expand_conv",
                        [oup, inp, 1, 1],
                        false,
                        static_same(block_size, 1, 1),
                    )?;
                    p.bn("_bn0", oup, EPS)?;
                    p.b.relu6("_swish0")?;
                }
                let dw = Conv2dConfig {
                    groups: oup,
                    ..static_same(block_size, k, s)
                };
                p.conv("_depthwise_conv", [oup, 1, k, k], false, dw)?;
                p.bn("_bn1", oup, EPS)?;
                p.b.relu6("_swish1")?;
                p.conv(
                    "_project_conv",
                    [c_out, oup, 1, 1],
                    false,
                    static_same(block_size.div_ceil(s), 1, 1),
                )?;
                p.bn("_bn2", c_out, EPS)?;
                if s == 1 && inp == c_out {
                    p.b.add("add", skip)?;
                }
                Ok(())
            })?;
            size = size.div_ceil(s);
            idx += 1;
        }
    }
    p.conv(
        "_conv_head",
        [1280, 320, 1, 1],
        false,
        static_same(size, 1, 1),
    )?;
    p.bn("_bn1", 1280, EPS)?;
    p.b.relu6("_swish1")?;
    p.b.global_avg_pool("_avg_pooling")?;
    p.b.flatten("flatten")?;
    p.b.dropout("_dropout")?;
    p.linear("_fc", classes, 1280)
}
