//! torchvision's ResNets (basic and bottleneck blocks), as classifiers and as trunks
//! under other module names (the captioning tutorial's `nn.Sequential` of the
//! children: `resnet.0` = conv1 ... `resnet.7` = layer4, `resnet.8` = avgpool).

use attrib_core::Result;

use super::params::{conv_cfg, Params, TORCH_BN_EPS};
use crate::{Elem, Pool2dConfig};

/// The names a ResNet's top-level modules have: torchvision's attributes, or the
/// indices of an `nn.Sequential` of its children.
pub(super) struct ResnetNames {
    pub(super) stem: [&'static str; 4],
    pub(super) layers: [&'static str; 4],
    pub(super) avgpool: &'static str,
}

/// `conv1, bn1, relu, maxpool, layer1..4, avgpool`.
pub(super) const TORCHVISION: ResnetNames = ResnetNames {
    stem: ["conv1", "bn1", "relu", "maxpool"],
    layers: ["layer1", "layer2", "layer3", "layer4"],
    avgpool: "avgpool",
};

/// `nn.Sequential(*list(resnet.children())[:-1])`: `0` ... `8`.
pub(super) const SEQUENTIAL: ResnetNames = ResnetNames {
    stem: ["0", "1", "2", "3"],
    layers: ["4", "5", "6", "7"],
    avgpool: "8",
};

/// The classifier: the trunk, then `flatten` and `fc`.
pub(super) fn resnet<E: Elem>(
    p: &mut Params<'_, E>,
    blocks: [usize; 4],
    bottleneck: bool,
    classes: usize,
) -> Result<()> {
    let features = resnet_trunk(p, blocks, bottleneck, &TORCHVISION, true)?;
    p.b.flatten("flatten")?;
    p.linear("fc", classes, features)
}

/// Everything up to layer4 and, with `pool`, the global average pool; returns the
/// number of channels it leaves.
pub(super) fn resnet_trunk<E: Elem>(
    p: &mut Params<'_, E>,
    blocks: [usize; 4],
    bottleneck: bool,
    names: &ResnetNames,
    pool: bool,
) -> Result<usize> {
    let [conv1, bn1, relu, maxpool] = names.stem;
    p.conv(conv1, [64, 3, 7, 7], false, conv_cfg(2, 3))?;
    p.bn(bn1, 64, TORCH_BN_EPS)?;
    p.b.relu(relu)?;
    p.b.max_pool(maxpool, Pool2dConfig::new(3, 2, 1))?;
    let expansion = if bottleneck { 4 } else { 1 };
    let mut inplanes = 64;
    for (li, (&n, planes)) in blocks.iter().zip([64usize, 128, 256, 512]).enumerate() {
        let stride = if li == 0 { 1 } else { 2 };
        p.scope(names.layers[li], |p| {
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
    if pool {
        p.b.global_avg_pool(names.avgpool)?;
    }
    Ok(512 * expansion)
}
