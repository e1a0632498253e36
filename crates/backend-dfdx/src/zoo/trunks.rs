//! Image trunks of the models with heads (captioning, VQA): a CNN ending in a global
//! average pool, under a module prefix, recognised from a state dict's names.

use attrib_core::{Error, Result};

use super::params::{conv_cfg, Params};
use super::resnet::{resnet_trunk, SEQUENTIAL};
use crate::weights::WeightMap;
use crate::{Elem, Pool2dConfig};

/// One convolution of a [`Trunk::Convs`] stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvLayer {
    /// Its index in the `nn.Sequential`.
    pub index: usize,
    /// Output channels.
    pub out: usize,
    /// Input channels.
    pub inp: usize,
    /// Square kernel side (odd; padded by `kernel / 2`, stride 1).
    pub kernel: usize,
    /// Whether a bias is stored.
    pub bias: bool,
    /// Whether a 2x2 max pool follows its ReLU.
    pub pool: bool,
}

/// A CNN trunk: everything from the image to its pooled features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trunk {
    /// torchvision's ResNet without `fc`, as the captioning tutorial stores it:
    /// `nn.Sequential(*list(resnet.children())[:-1])` (`0` conv1 ... `7` layer4, `8`
    /// avgpool). Blocks per stage and the block kind come from the weights.
    Resnet {
        /// Blocks in layer1..layer4.
        blocks: [usize; 4],
        /// Bottleneck blocks (ResNet-50 and deeper).
        bottleneck: bool,
    },
    /// An `nn.Sequential` of 3x3-style convolutions, each followed by a ReLU and
    /// optionally a 2x2 max pool, then global average pooling in the model's
    /// `forward`. The layout is read from the indices: a convolution at `i` and the
    /// next at `i + 2` have a ReLU between them; at `i + 3`, a ReLU and a max pool;
    /// the last convolution is followed by its ReLU.
    Convs(Vec<ConvLayer>),
}

impl Trunk {
    /// The trunk whose tensors `map` holds under `prefix.` (`resnet`, `cnn`).
    pub fn recognise(map: &WeightMap, prefix: &str) -> Result<Trunk> {
        let has = |k: &str| map.get(&format!("{prefix}.{k}")).is_some();
        if has("0.weight") && has("4.0.conv1.weight") {
            let count = |stage: usize| {
                (0..)
                    .take_while(|i| has(&format!("{stage}.{i}.conv1.weight")))
                    .count()
            };
            return Ok(Trunk::Resnet {
                blocks: [count(4), count(5), count(6), count(7)],
                bottleneck: has("4.0.conv3.weight"),
            });
        }
        let mut convs: Vec<(usize, Vec<usize>)> = map
            .iter()
            .filter_map(|(k, t)| {
                let idx = k
                    .strip_prefix(&format!("{prefix}."))?
                    .strip_suffix(".weight")?;
                let i: usize = idx.parse().ok()?;
                (t.shape.len() == 4).then(|| (i, t.shape.clone()))
            })
            .collect();
        convs.sort();
        if convs.is_empty() {
            return Err(Error::Weights(format!(
                "no image trunk under `{prefix}.`: expected a ResNet (`{prefix}.0.weight`, `{prefix}.4.0.conv1.weight`, ...) or convolutions (`{prefix}.0.weight`, ...)"
            )));
        }
        let mut layers = Vec::with_capacity(convs.len());
        for (k, (i, shape)) in convs.iter().enumerate() {
            let pool = match convs.get(k + 1).map(|(j, _)| j - i) {
                None | Some(2) => false,
                Some(3) => true,
                Some(gap) => {
                    return Err(Error::Weights(format!(
                        "`{prefix}.{i}` and the next convolution are {gap} modules apart: only ReLU (2) or ReLU + max pool (3) are understood"
                    )))
                }
            };
            if shape[2] != shape[3] || shape[2] % 2 == 0 {
                return Err(Error::Weights(format!(
                    "`{prefix}.{i}.weight` has shape {shape:?}: the trunk takes square, odd kernels"
                )));
            }
            layers.push(ConvLayer {
                index: *i,
                out: shape[0],
                inp: shape[1],
                kernel: shape[2],
                bias: has(&format!("{i}.bias")),
                pool,
            });
        }
        Ok(Trunk::Convs(layers))
    }

    /// A short name: `resnet18` ... `resnet152` for the standard depths, else a
    /// description.
    pub fn name(&self) -> String {
        match self {
            Trunk::Resnet { blocks, bottleneck } => {
                let depth = match (blocks, bottleneck) {
                    ([2, 2, 2, 2], false) => Some(18),
                    ([3, 4, 6, 3], false) => Some(34),
                    ([3, 4, 6, 3], true) => Some(50),
                    ([3, 4, 23, 3], true) => Some(101),
                    ([3, 8, 36, 3], true) => Some(152),
                    _ => None,
                };
                depth.map_or_else(
                    || format!("resnet with blocks {blocks:?}"),
                    |d| format!("resnet{d}"),
                )
            }
            Trunk::Convs(l) => format!("{} convolutions", l.len()),
        }
    }

    /// The number of features the trunk's pooled output has.
    pub fn features(&self) -> usize {
        match self {
            Trunk::Resnet { bottleneck, .. } => 512 * if *bottleneck { 4 } else { 1 },
            Trunk::Convs(l) => l.last().map_or(0, |c| c.out),
        }
    }

    /// The trunk's output stride before any pooling: input pixels per feature-map
    /// cell (a ResNet's is 32; a convolution stack's, 2 per max pool).
    pub fn stride(&self) -> usize {
        match self {
            Trunk::Resnet { .. } => 32,
            Trunk::Convs(l) => 1 << l.iter().filter(|c| c.pool).count(),
        }
    }

    /// Adds the trunk under the scope `prefix`; returns the number of features.
    pub(super) fn build<E: Elem>(&self, p: &mut Params<'_, E>, prefix: &str) -> Result<usize> {
        self.build_with(p, prefix, true)
    }

    /// Adds the trunk under the scope `prefix`, ending in its feature map (no global
    /// pool: what a detector's regions are sampled from); returns its channels.
    pub(super) fn build_map<E: Elem>(&self, p: &mut Params<'_, E>, prefix: &str) -> Result<usize> {
        self.build_with(p, prefix, false)
    }

    fn build_with<E: Elem>(
        &self,
        p: &mut Params<'_, E>,
        prefix: &str,
        pooled: bool,
    ) -> Result<usize> {
        let mut features = 0;
        match self {
            Trunk::Resnet { blocks, bottleneck } => {
                p.scope(prefix, |p| {
                    features = resnet_trunk(p, *blocks, *bottleneck, &SEQUENTIAL, pooled)?;
                    Ok(())
                })?;
            }
            Trunk::Convs(layers) => {
                p.scope(prefix, |p| {
                    for c in layers {
                        p.conv(
                            &c.index.to_string(),
                            [c.out, c.inp, c.kernel, c.kernel],
                            c.bias,
                            conv_cfg(1, c.kernel / 2),
                        )?;
                        p.b.relu(&(c.index + 1).to_string())?;
                        if c.pool {
                            p.b.max_pool(&(c.index + 2).to_string(), Pool2dConfig::new(2, 2, 0))?;
                        }
                    }
                    Ok(())
                })?;
                if pooled {
                    p.b.global_avg_pool("pool")?;
                }
                features = self.features();
            }
        }
        Ok(features)
    }
}
